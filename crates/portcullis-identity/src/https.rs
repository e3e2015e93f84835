//! The one HTTPS client builder: every outbound connection the proxy makes —
//! discovery, JWKS, introspection, token endpoints and upstreams — gets its TLS
//! settings and its connector here, so they cannot drift apart (protocol
//! versions, crypto provider, which roots are trusted, ALPN, socket options).
//!
//! rustls uses the aws-lc-rs provider explicitly, independent of any
//! process-wide default. Callers build their own pooled `Client` on top, since
//! they differ only in body type and pool size.

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use std::time::Duration;

/// Which certificate authorities a client trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The Mozilla roots.
    Public,
    /// The Mozilla roots and the CA certificates of this PEM bundle (an IdP
    /// behind a private CA: `providers[].ca_file`, `credentials[].ca_file`).
    PublicAnd(&'a [u8]),
    /// Only this PEM bundle (`upstream_tls.ca_file`: a service's own CA).
    Only(&'a [u8]),
}

/// Why a client could not be built. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HttpsError(pub String);

/// The TLS client configuration for `trust`, presenting `client_auth` (a
/// certificate chain and its key) when given.
pub fn tls_config(
    trust: Trust<'_>,
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, HttpsError> {
    let mut roots = rustls::RootCertStore::empty();
    match trust {
        Trust::Public => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Trust::PublicAnd(pem) => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            add_pem(&mut roots, pem)?;
        }
        Trust::Only(pem) => add_pem(&mut roots, pem)?,
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| HttpsError(format!("TLS setup: {e}")))?
    .with_root_certificates(roots);
    match client_auth {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| HttpsError(format!("client certificate and key do not match: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}

fn add_pem(roots: &mut rustls::RootCertStore, pem: &[u8]) -> Result<(), HttpsError> {
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| HttpsError(format!("CA PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| HttpsError(format!("CA certificate: {e}")))?;
        added += 1;
    }
    if added == 0 {
        return Err(HttpsError("CA PEM holds no certificate".into()));
    }
    Ok(())
}

/// Reads a CA bundle file for [`Trust::PublicAnd`] or [`Trust::Only`].
pub fn read_ca_file(path: &str) -> Result<Vec<u8>, HttpsError> {
    std::fs::read(path).map_err(|e| HttpsError(format!("{path}: cannot read CA bundle: {e}")))
}

/// How long an outbound connection's peer may stay silent at the TCP level
/// (no acknowledgement of data or of a keep-alive probe) before the
/// connection is closed.
pub const PEER_SILENT_FOR: Duration = Duration::from_secs(60);

/// A connector for `http://` and `https://` with `tls`, offering HTTP/1.1 and h2
/// by ALPN; `server_name` overrides the name checked in the certificate (and sent
/// as SNI).
pub fn connector(
    tls: rustls::ClientConfig,
    server_name: Option<ServerName<'static>>,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    // A peer that vanished without a word (its host gone, a partition, a
    // NAT that dropped the flow) is found by the kernel within about a
    // minute instead of the defaults' two hours idle or fifteen minutes of
    // retransmits. It matters most for a shared h2 upstream connection: while
    // it looks alive every request is sent into it and waits for
    // `request_timeout`. TCP probes, not h2 PINGs: gRPC servers answer PINGs
    // they find too frequent (under five minutes) with GOAWAY `too_many_pings`.
    http.set_keepalive(Some(PEER_SILENT_FOR / 2));
    http.set_keepalive_interval(Some(PEER_SILENT_FOR / 6));
    http.set_keepalive_retries(Some(3));
    // Unacknowledged data, or a window the peer keeps closed, for as long as
    // a client may stall a download (`server.write_timeout`'s default).
    #[cfg(target_os = "linux")]
    http.set_tcp_user_timeout(Some(PEER_SILENT_FOR));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match server_name {
        Some(name) => {
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    builder.enable_all_versions().wrap_connector(http)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["ca.internal".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn extra_roots_must_hold_a_certificate() {
        assert!(tls_config(Trust::PublicAnd(b"junk"), None).is_err());
        assert!(tls_config(Trust::Only(b""), None).is_err());
        let pem = ca_pem();
        assert!(tls_config(Trust::PublicAnd(pem.as_bytes()), None).is_ok());
        assert!(tls_config(Trust::Only(pem.as_bytes()), None).is_ok());
        assert!(tls_config(Trust::Public, None).is_ok());
    }

    /// A silent peer is found in about a minute: without these options Linux
    /// waits two hours before its first keep-alive probe, and about fifteen
    /// minutes of retransmits for data never acknowledged.
    #[tokio::test]
    async fn outbound_sockets_give_up_on_a_silent_peer() {
        use tower_service::Service as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: http::Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let tls = tls_config(Trust::Public, None).unwrap();
        let stream = connector(tls, None).call(uri).await.unwrap();
        let hyper_rustls::MaybeHttpsStream::Http(tcp) = stream else {
            panic!("an http:// URI is dialled without TLS");
        };
        let sock = socket2::SockRef::from(tcp.inner());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), PEER_SILENT_FOR / 2);
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), PEER_SILENT_FOR / 6);
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 3);
        #[cfg(target_os = "linux")]
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(PEER_SILENT_FOR));
    }
}
