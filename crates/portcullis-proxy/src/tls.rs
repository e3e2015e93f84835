//! TLS material: the aws-lc-rs crypto provider, PEM loading, and the listener's
//! server configuration, rebuilt when its files change on disk (cert-manager rotates
//! them in place) without a restart or a dropped connection.

use arc_swap::ArcSwap;
use portcullis_config::{ClientAuth, ServerTlsConfig};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The one crypto provider of the process (no ring, no openssl).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Loads every certificate of a PEM file.
pub fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{path}: cannot read certificates: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path}: invalid PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no certificate found"));
    }
    Ok(certs)
}

/// Loads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_private_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{path}: cannot load private key: {e}"))
}

/// Builds the listener's rustls configuration: ALPN h2 + http/1.1, client
/// certificates per `client_auth`.
pub fn server_config(cfg: &ServerTlsConfig) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match (cfg.client_auth, &cfg.client_ca_file) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{ca}: unusable client CA certificate: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if mode == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("{ca}: cannot build client verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        (_, None) => {
            return Err("server.tls.client_auth needs server.tls.client_ca_file".to_string())
        }
    };
    let mut config = builder
        .with_single_cert(
            load_certs(&cfg.cert_file)?,
            load_private_key(&cfg.key_file)?,
        )
        .map_err(|e| format!("{}: certificate and key do not match: {e}", cfg.cert_file))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The listener's current TLS configuration, swapped when its files change.
pub struct ReloadingTls {
    pub current: ArcSwap<ServerConfig>,
    cfg: ArcSwap<ServerTlsConfig>,
}

impl ReloadingTls {
    pub fn new(cfg: &ServerTlsConfig) -> Result<Arc<Self>, String> {
        Ok(Arc::new(ReloadingTls {
            current: ArcSwap::new(server_config(cfg)?),
            cfg: ArcSwap::from_pointee(cfg.clone()),
        }))
    }

    /// Takes a reloaded `server.tls` for the next handshakes: its files,
    /// client CA and `client_auth`. Kept from start, a CA an operator removed
    /// would go on vouching for workloads, and `required` would not be.
    pub fn reconfigure(&self, cfg: &ServerTlsConfig) -> Result<(), String> {
        let config = server_config(cfg)?;
        self.cfg.store(Arc::new(cfg.clone()));
        self.current.store(config);
        Ok(())
    }

    fn stamp(&self) -> Vec<Option<SystemTime>> {
        let cfg = self.cfg.load();
        let mut files = vec![cfg.cert_file.as_str(), cfg.key_file.as_str()];
        if let Some(ca) = &cfg.client_ca_file {
            files.push(ca);
        }
        files
            .iter()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Polls the files every `every` and swaps in a new configuration when one changed.
    /// A broken new file set is logged and ignored: the old certificate keeps serving.
    pub fn watch(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut seen = self.stamp();
            loop {
                tokio::time::sleep(every).await;
                let now = self.stamp();
                if now == seen {
                    continue;
                }
                let cfg = self.cfg.load_full();
                match server_config(&cfg) {
                    Ok(config) => {
                        self.current.store(config);
                        seen = now;
                        tracing::info!(cert = %cfg.cert_file, "TLS certificate reloaded from disk");
                    }
                    // Files are often written one after the other; try again next tick.
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but cannot be loaded yet")
                    }
                }
            }
        })
    }
}
