//! The main listener: TCP accept, optional TLS, then HTTP/1.1 and HTTP/2 (h2 by
//! ALPN over TLS, h2c by prior knowledge) on one port, every byte passing the
//! HTTP/1 guard first.

pub mod h1_guard;

use crate::metrics::TlsFailureLabels;
use crate::pipeline::{self, ConnInfo};
use crate::server::Shared;
use crate::tls::ReloadingTls;
use h1_guard::{GuardLimits, GuardedIo, Verdict};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Accepts connections until `stop` turns true, registering each with `graceful` so
/// shutdown can drain them.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            res = listener.accept() => res,
            _ = stop.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        let graceful = graceful.watcher();
        tokio::spawn(async move {
            match tls {
                None => serve(tcp, peer, None, shared, graceful).await,
                Some(tls) => {
                    let timeout = shared
                        .runtime
                        .load()
                        .config
                        .server
                        .header_read_timeout
                        .get();
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current.load_full());
                    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let peer_cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| c.as_ref().to_vec());
                            serve(stream, peer, Some(peer_cert), shared, graceful).await
                        }
                        Ok(Err(e)) => tls_failure(&shared, classify_tls_error(&e), &e),
                        Err(_) => tls_failure(&shared, "timeout", &"handshake timed out"),
                    }
                }
            }
        });
    }
}

fn tls_failure(shared: &Shared, reason: &'static str, err: &dyn std::fmt::Display) {
    tracing::debug!(%err, reason, "TLS handshake failed");
    shared
        .metrics
        .tls_handshake_failures
        .get_or_create(&TlsFailureLabels {
            listener: "main",
            reason,
        })
        .inc();
}

fn classify_tls_error(e: &std::io::Error) -> &'static str {
    let text = e.to_string();
    if text.contains("certificate") || text.contains("Certificate") {
        "certificate"
    } else if text.contains("eof") || text.contains("EOF") || text.contains("reset") {
        "eof"
    } else {
        "protocol"
    }
}

/// Serves HTTP on one connection. `peer_cert` is `Some` for TLS connections (holding
/// the client certificate's DER when one was presented).
async fn serve<IO>(
    io: IO,
    peer: SocketAddr,
    peer_cert: Option<Option<Vec<u8>>>,
    shared: Arc<Shared>,
    graceful: Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let server_cfg = shared.runtime.load().config.server.clone();
    let verdict = Arc::new(Verdict::default());
    let limits = GuardLimits {
        max_head_bytes: usize::try_from(server_cfg.max_header_bytes.0).unwrap_or(usize::MAX),
        header_read_timeout: server_cfg.header_read_timeout.get(),
    };
    let peer_ip = http::HeaderValue::from_str(&peer.ip().to_string())
        .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
    let conn = Arc::new(ConnInfo {
        peer,
        peer_ip,
        tls: peer_cert.is_some(),
        peer_cert: peer_cert.flatten(),
        verdict: verdict.clone(),
    });
    let io = TokioIo::new(GuardedIo::new(io, limits, verdict));
    let service = service_fn(move |req| pipeline::handle(req, conn.clone(), shared.clone()));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .half_close(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(64))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection_with_upgrades(io, service);
    if let Err(e) = graceful.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}
