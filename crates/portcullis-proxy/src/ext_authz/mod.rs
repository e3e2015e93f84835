//! The Envoy / Istio front end (SPEC §4): a gRPC server on
//! `ext_authz.grpc_listen` for `envoy.service.auth.v3.Authorization/Check` and
//! `grpc.health.v1.Health/Check`, over plain HTTP/2 or TLS (requiring Envoy's
//! client certificate when `ext_authz.tls.client_ca_file` is set).
//!
//! Envoy describes each request it holds; [`check`] turns that description into
//! the core's request facts and the judgment back into a `CheckResponse`.

mod check;
mod connection;
mod grpc;
pub mod proto;
mod service;

pub use connection::{MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST};
pub use grpc::MAX_MESSAGE;
pub use service::{CHECK_PATH, HEALTH_PATH};

use crate::state::Shared;
use crate::tls::ReloadingTls;
use portcullis_config::{ClientAuth, ExtAuthzConfig, ServerTlsConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TLS handshake that has not finished by then is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound gRPC listener and its tasks (stopped with the server).
pub struct ExtAuthz {
    pub addr: SocketAddr,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Binds `grpc_listen` and starts serving checks until `stop` turns true.
pub async fn start(
    cfg: &ExtAuthzConfig,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> Result<ExtAuthz, String> {
    let tls = match &cfg.tls {
        Some(t) => Some(
            ReloadingTls::new(&ServerTlsConfig {
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
                client_ca_file: t.client_ca_file.clone(),
                client_auth: if cfg.requires_client_certificates() {
                    ClientAuth::Required
                } else {
                    ClientAuth::None
                },
            })
            .map_err(|e| format!("ext_authz.tls: {e}"))?,
        ),
        None => None,
    };
    let listener = TcpListener::bind(&cfg.grpc_listen)
        .await
        .map_err(|e| format!("cannot listen on {} (ext_authz): {e}", cfg.grpc_listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("ext_authz listener: {e}"))?;
    let mut tasks = Vec::new();
    if let Some(tls) = &tls {
        // Rotated certificates are picked up without a restart, as on the main listener.
        tasks.push(tls.clone().watch(Duration::from_secs(2)));
    }
    // What the running listener enforces, not what a reloaded config says:
    // the listener and its TLS are set up once, here.
    let certified = cfg.requires_client_certificates();
    tasks.push(tokio::spawn(accept_loop(
        listener, tls, certified, shared, stop,
    )));
    tracing::info!(listen = %addr, "ext_authz gRPC serving");
    Ok(ExtAuthz { addr, tasks })
}

/// `certified`: every connection's peer presented a certificate from
/// `client_ca_file` (TLS, with client certificates required).
async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    certified: bool,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Ok(_) = stop.wait_for(|stopped| *stopped) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "ext_authz accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (shared, stop, tls) = (shared.clone(), stop.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => connection::serve(stream, peer, false, shared, stop).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current.load_full());
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            connection::serve(stream, peer, certified, shared, stop).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "ext_authz TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "ext_authz TLS handshake timed out"),
                    }
                }
            }
        });
    }
}
