//! The upstream HTTP client: keep-alive connections, HTTP/1.1 and h2 (by ALPN
//! over TLS), optional CA and client certificate per route (`upstream_tls`). TLS
//! settings and the connector come from `portcullis_identity::https`, the one
//! builder every outbound connection of the proxy uses.
//!
//! Connections are kept per endpoint ([`super::idle`]), not in hyper-util's
//! pooled client: its pool (a shared map under one lock, a checkout future
//! raced against a lazy connect, a guard that re-inserts on drop) cost 8.8k
//! instructions per proxied request under callgrind, a tenth of the full path;
//! the endpoint already knows which connections are its own.

use super::idle::{BeforeDial, Ready, StreamSlot};
use super::upstreams::Endpoint;
use crate::body::ProxyBody;
use crate::tls::{load_certs, load_private_key};
use http::header::{HeaderValue, HOST};
use http::uri::{Authority, Parts, Uri};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use portcullis_config::UpstreamTlsConfig;
use portcullis_identity::https::{self, read_ca_file, Trust};
use tower_service::Service as _;

/// Requests sent on a kept connection that turned out closed before the
/// request left, before a fresh connection is opened for it instead.
const REUSED_TRIES: u32 = 3;

/// The upstream's answer, and over a shared h2 connection the stream's place,
/// for its body to hold until it ends.
pub type UpstreamResponse = (Response<Incoming>, Option<StreamSlot>);

/// A cheap-to-clone client: the connector and its TLS settings.
#[derive(Clone)]
pub struct UpstreamClient {
    connector: HttpsConnector<HttpConnector>,
}

/// Why a request got no answer from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the connection handshake failed")]
    Handshake(#[source] hyper::Error),
    #[error("the request failed")]
    Request(#[source] hyper::Error),
}

impl UpstreamClient {
    /// A client trusting the public web PKI for `https://` upstreams.
    pub fn plain() -> Self {
        // The public roots with no client certificate cannot fail to configure;
        // should the provider ever refuse, the process default is the fallback.
        let tls = https::tls_config(Trust::Public, None).unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
        Self::with_tls(tls, None)
    }

    /// A client for a route's `upstream_tls`: its own CA, client certificate and SNI.
    pub fn from_config(cfg: &UpstreamTlsConfig) -> Result<Self, String> {
        let ca = match &cfg.ca_file {
            Some(ca) => Some(read_ca_file(ca).map_err(|e| e.0)?),
            None => None,
        };
        let trust = match &ca {
            Some(pem) => Trust::Only(pem),
            None => Trust::Public,
        };
        let client_auth = match (&cfg.cert_file, &cfg.key_file) {
            (Some(cert), Some(key)) => Some((load_certs(cert)?, load_private_key(key)?)),
            (None, None) => None,
            _ => return Err("upstream_tls needs both cert_file and key_file".to_string()),
        };
        let tls =
            https::tls_config(trust, client_auth).map_err(|e| format!("upstream_tls: {e}"))?;
        let server_name = match &cfg.server_name {
            Some(name) => Some(
                rustls_pki_types::ServerName::try_from(name.clone()).map_err(|_| {
                    format!("upstream_tls.server_name `{name}` is not a valid name")
                })?,
            ),
            None => None,
        };
        Ok(Self::with_tls(tls, server_name))
    }

    fn with_tls(
        tls: rustls::ClientConfig,
        server_name: Option<rustls_pki_types::ServerName<'static>>,
    ) -> Self {
        UpstreamClient {
            connector: https::connector(tls, server_name),
        }
    }

    /// Sends `req` (its URI in origin form, `/path?query`) to `endpoint` on a
    /// kept connection or a new one. A request refused by a kept connection
    /// before any of it was sent (the upstream had just closed it) is sent
    /// again: nothing of it reached the upstream.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        mut req: Request<ProxyBody>,
    ) -> Result<UpstreamResponse, SendError> {
        let mut reused_tries = 0;
        loop {
            let kept = (reused_tries < REUSED_TRIES)
                .then(|| endpoint.idle.checkout())
                .flatten();
            let reused = kept.is_some();
            let conn = match kept {
                Some(conn) => conn,
                // Boxed: the handshakes' futures are large, and every
                // request's future would otherwise carry room for them.
                None => Box::pin(self.connect(endpoint)).await?,
            };
            let (sent, slot) = match conn {
                Ready::Http1(mut tx) => {
                    http1_form(&mut req, endpoint);
                    let sent = tx.try_send_request(req).await;
                    if sent.is_ok() {
                        endpoint.idle.checkin(tx);
                    }
                    (sent, None)
                }
                Ready::Http2(mut tx, slot) => {
                    http2_form(&mut req, endpoint);
                    (tx.try_send_request(req).await, Some(slot))
                }
            };
            match sent {
                Ok(resp) => return Ok((resp, slot)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        reused_tries += 1;
                        req = unsent;
                    }
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    /// A new connection to `endpoint`, HTTP/1.1 or (by ALPN) h2; an h2
    /// connection is shared with the requests that follow.
    async fn connect(&self, endpoint: &Endpoint) -> Result<Ready, SendError> {
        // An h2 endpoint is dialled by one request at a time; the others wait
        // and share what it got (a GOAWAY under load is then one new
        // handshake, not one per request in flight).
        let _dialing = match endpoint.idle.before_dial().await {
            BeforeDial::Dial(guard) => guard,
            BeforeDial::Shared(tx, slot) => return Ok(Ready::Http2(tx, slot)),
        };
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(endpoint.connect_uri.clone())
            .await
            .map_err(SendError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(SendError::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream h2 connection ended");
                }
            });
            let slot = endpoint.idle.share(tx.clone());
            return Ok(Ready::Http2(tx, slot));
        }
        let (tx, conn) = http1::handshake(io).await.map_err(SendError::Handshake)?;
        tokio::spawn(async move {
            // Upgrades: a `101` answer's connection becomes the tunnel.
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(Ready::Http1(tx))
    }
}

/// Builds the shared plain client once per process.
pub fn shared_plain() -> UpstreamClient {
    static PLAIN: std::sync::OnceLock<UpstreamClient> = std::sync::OnceLock::new();
    PLAIN.get_or_init(UpstreamClient::plain).clone()
}

/// HTTP/1.1 sends the path and query alone (RFC 9112 §3.2.1) and the
/// authority in `Host`: the judged host the pipeline set, else the upstream's
/// own (a request that named none, such as HTTP/1.0 without `Host`).
fn http1_form(req: &mut Request<ProxyBody>, endpoint: &Endpoint) {
    let uri = req.uri_mut();
    if uri.scheme().is_some() || uri.authority().is_some() {
        let authority = uri.authority().cloned();
        let mut parts = Parts::default();
        parts.path_and_query = uri.path_and_query().cloned();
        if let Ok(origin) = Uri::from_parts(parts) {
            *uri = origin;
        }
        // Moved from an h2 attempt: its authority was the judged host.
        if let Some(a) = authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            req.headers_mut().entry(HOST).or_insert(a);
        }
    }
    if !req.headers().contains_key(HOST) {
        req.headers_mut().insert(HOST, endpoint.host.clone());
    }
}

/// h2 sends the scheme and authority as pseudo-headers: the URI carries
/// them, and `:authority` is the judged host (from `Host`, which h2 must not
/// repeat with another value, RFC 9113 §8.3.1), else the upstream's own.
fn http2_form(req: &mut Request<ProxyBody>, endpoint: &Endpoint) {
    if req.uri().scheme().is_some() {
        return;
    }
    let authority = req
        .headers_mut()
        .remove(HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| endpoint.host_authority.clone());
    let mut parts = Parts::default();
    parts.scheme = Some(endpoint.scheme.clone());
    parts.authority = Some(authority);
    parts.path_and_query = req.uri().path_and_query().cloned();
    if let Ok(absolute) = Uri::from_parts(parts) {
        *req.uri_mut() = absolute;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::empty;
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A real upstream over TCP answering `200` to everything.
    async fn upstream() -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(empty()))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Endpoint::parse(&url).unwrap()
    }

    #[tokio::test]
    async fn a_request_refused_unsent_by_a_kept_connection_goes_on_a_new_one() {
        let endpoint = upstream().await;
        // A kept connection whose upstream has just gone: its task has not run
        // since, so it still looks ready when the request takes it.
        let (client_io, server_io) = tokio::io::duplex(4096);
        let (mut tx, conn) = http1::handshake::<_, ProxyBody>(TokioIo::new(client_io))
            .await
            .unwrap();
        tokio::spawn(conn);
        tx.ready().await.unwrap();
        endpoint.idle.checkin(tx);
        drop(server_io);
        let req = Request::builder().uri("/x").body(empty()).unwrap();
        let resp = UpstreamClient::plain().send(&endpoint, req).await;
        assert_eq!(resp.unwrap().0.status(), 200);
    }

    /// An h2-only TLS upstream for `localhost` that counts its connections.
    async fn h2_upstream() -> (Endpoint, UpstreamClient, Arc<AtomicUsize>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut server = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(empty()))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        let pem = cert.pem();
        let tls = https::tls_config(Trust::Only(pem.as_bytes()), None).unwrap();
        let endpoint = Endpoint::parse(&format!("https://localhost:{port}")).unwrap();
        (endpoint, UpstreamClient::with_tls(tls, None), accepted)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_waiting_for_a_new_h2_connection_share_one_dial() {
        let (endpoint, client, accepted) = h2_upstream().await;
        let get = || Request::builder().uri("/").body(empty()).unwrap();
        assert_eq!(client.send(&endpoint, get()).await.unwrap().0.status(), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // The shared connection is gone (a GOAWAY, say) with eight requests
        // arriving at once: one new connection, not eight.
        endpoint.idle.forget_h2();
        let sends = (0..8).map(|_| client.send(&endpoint, get()));
        for resp in futures_util::future::join_all(sends).await {
            assert_eq!(resp.unwrap().0.status(), 200);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    fn request(host: Option<&str>) -> Request<ProxyBody> {
        let mut req = Request::builder().uri("/base/a?b=c");
        if let Some(h) = host {
            req = req.header(HOST, h);
        }
        req.body(empty()).unwrap()
    }

    #[test]
    fn h2_gets_the_judged_host_as_its_authority_and_no_host_header() {
        let endpoint = Endpoint::parse("https://user:pw@svc.internal:8443/base").unwrap();
        let mut req = request(Some("shop.example.com"));
        http2_form(&mut req, &endpoint);
        assert_eq!(req.uri(), "https://shop.example.com/base/a?b=c");
        assert!(req.headers().get(HOST).is_none());
        // Without a judged host: the upstream's own, never its credentials.
        let mut req = request(None);
        http2_form(&mut req, &endpoint);
        assert_eq!(req.uri(), "https://svc.internal:8443/base/a?b=c");
    }

    #[test]
    fn http1_gets_the_origin_form_and_a_host() {
        let endpoint = Endpoint::parse("http://user:pw@svc.internal:8080").unwrap();
        let mut req = request(Some("shop.example.com"));
        http1_form(&mut req, &endpoint);
        assert_eq!(req.uri(), "/base/a?b=c");
        assert_eq!(req.headers()[HOST], "shop.example.com");
        let mut req = request(None);
        http1_form(&mut req, &endpoint);
        assert_eq!(req.headers()[HOST], "svc.internal:8080");
        // Moved over from an h2 attempt, the judged host comes back as `Host`.
        let mut req = request(Some("shop.example.com"));
        http2_form(&mut req, &endpoint);
        http1_form(&mut req, &endpoint);
        assert_eq!(req.uri(), "/base/a?b=c");
        assert_eq!(req.headers()[HOST], "shop.example.com");
        assert_eq!(req.headers().get_all(HOST).iter().count(), 1);
    }
}
