//! The pooled upstream HTTP client: keep-alive connections, HTTP/1.1 and h2 (by ALPN
//! over TLS), optional CA and client certificate per route (`upstream_tls`).

use crate::body::ProxyBody;
use crate::tls::{load_certs, load_private_key};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use portcullis_config::UpstreamTlsConfig;
use std::time::Duration;

/// A cheap-to-clone pooled client.
#[derive(Clone)]
pub struct UpstreamClient {
    pub inner: Client<HttpsConnector<HttpConnector>, ProxyBody>,
}

impl UpstreamClient {
    /// A client trusting the public web PKI for `https://` upstreams.
    pub fn plain() -> Self {
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map(|b| b.with_webpki_roots().with_no_client_auth());
        // aws-lc-rs supports the default protocol versions, so the fallback (rustls'
        // process default) is only there to avoid a panic path.
        let tls = tls.unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_webpki_roots()
                .with_no_client_auth()
        });
        Self::with_tls(tls, None)
    }

    /// A client for a route's `upstream_tls`: its own CA, client certificate and SNI.
    pub fn from_config(cfg: &UpstreamTlsConfig) -> Result<Self, String> {
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &cfg.ca_file {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in load_certs(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{ca}: unusable CA certificate: {e}"))?;
                }
                builder.with_root_certificates(roots)
            }
            None => builder.with_webpki_roots(),
        };
        let tls = match (&cfg.cert_file, &cfg.key_file) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_private_key(key)?)
                .map_err(|e| format!("{cert}: client certificate and key do not match: {e}"))?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("upstream_tls needs both cert_file and key_file".to_string()),
        };
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
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let builder = match server_name {
            Some(name) => {
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let connector = builder.enable_all_versions().wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        UpstreamClient { inner }
    }
}

/// Builds the shared plain client once per process.
pub fn shared_plain() -> UpstreamClient {
    static PLAIN: std::sync::OnceLock<UpstreamClient> = std::sync::OnceLock::new();
    PLAIN.get_or_init(UpstreamClient::plain).clone()
}
