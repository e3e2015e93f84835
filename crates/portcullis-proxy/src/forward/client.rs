//! The pooled upstream HTTP client: keep-alive connections, HTTP/1.1 and h2 (by ALPN
//! over TLS), optional CA and client certificate per route (`upstream_tls`). TLS
//! settings and the connector come from `portcullis_identity::https`, the one
//! builder every outbound connection of the proxy uses.

use crate::body::ProxyBody;
use crate::tls::{load_certs, load_private_key};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use portcullis_config::UpstreamTlsConfig;
use portcullis_identity::https::{self, read_ca_file, Trust};
use std::time::Duration;

/// A cheap-to-clone pooled client.
#[derive(Clone)]
pub struct UpstreamClient {
    pub inner: Client<HttpsConnector<HttpConnector>, ProxyBody>,
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
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https::connector(tls, server_name));
        UpstreamClient { inner }
    }
}

/// Builds the shared plain client once per process.
pub fn shared_plain() -> UpstreamClient {
    static PLAIN: std::sync::OnceLock<UpstreamClient> = std::sync::OnceLock::new();
    PLAIN.get_or_init(UpstreamClient::plain).clone()
}
