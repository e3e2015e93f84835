//! The main listener: TCP accept, optional TLS, then HTTP/1.1 and HTTP/2 (h2 by
//! ALPN over TLS, h2c by prior knowledge) on one port, every byte passing the
//! HTTP/1 guard first.

pub mod connections;
pub mod h1_guard;
mod hibernate;
pub mod stall;
mod write_timeout;

use crate::body::Holding;
use crate::metrics::TlsFailureLabels;
use crate::pipeline::{self, ConnInfo};
use crate::server::Shared;
use crate::tls::ReloadingTls;
use bytes::BytesMut;
use connections::{Activity, Connections};
use h1_guard::{GuardLimits, GuardedIo, Verdict};
use hibernate::{Lease, Parking, HIBERNATE_AFTER};
use http_body_util::Either;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use write_timeout::WriteTimeout;

/// Accepts connections until `stop` turns true, counting each in `connections` so
/// shutdown can drain them. Each connection winds down gracefully (hyper's
/// graceful shutdown: h2 GOAWAY, h1 close after the response in flight) when
/// `stop` turns true.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    shared: Arc<Shared>,
    connections: Arc<Connections>,
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
        let max = shared.runtime.load().config.server.max_connections;
        // Past the limit the connection is closed before anything is read from it:
        // a flood costs one accept and one close each, not buffers and tasks.
        let Some(activity) = connections.admit(usize::try_from(max).unwrap_or(usize::MAX)) else {
            tracing::debug!(%peer, max, "max_connections reached; connection closed");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let stop = stop.clone();
        // A task per kind: one task type holding both would give every plain
        // connection room for a TLS stream and its handshake (memory per idle
        // connection is the task's size).
        let Some(tls) = tls.clone() else {
            tokio::spawn(serve(tcp, peer, None, shared, activity, stop));
            continue;
        };
        tokio::spawn(async move {
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
                    serve(stream, peer, Some(peer_cert), shared, activity, stop).await
                }
                Ok(Err(e)) => tls_failure(&shared, classify_tls_error(&e), &e),
                Err(_) => tls_failure(&shared, "timeout", &"handshake timed out"),
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
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Only the values this connection uses: the task holds them as long as the
    // connection lives.
    let (limits, write_timeout, idle_timeout) = {
        let runtime = shared.runtime.load();
        let server = &runtime.config.server;
        let limits = GuardLimits {
            max_head_bytes: usize::try_from(server.max_header_bytes.0).unwrap_or(usize::MAX),
            header_read_timeout: server.header_read_timeout.get(),
        };
        (
            limits,
            server.write_timeout.get(),
            server.idle_timeout.get(),
        )
    };
    let verdict = Arc::new(Verdict::default());
    let peer_ip = http::HeaderValue::from_str(&peer.ip().to_string())
        .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
    let conn = Arc::new(ConnInfo {
        peer,
        peer_ip,
        tls: peer_cert.is_some(),
        peer_identity: peer_cert
            .flatten()
            .as_deref()
            .and_then(ConnInfo::mtls_identity),
        verdict: verdict.clone(),
    });
    let io = WriteTimeout::new(io, write_timeout);
    let mut io = GuardedIo::new(io, limits, verdict);
    let requests = activity.clone();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let in_flight = requests.start();
        // An h2 stream can stall without any write waiting (see `stall`).
        let stalls = (req.version() == http::Version::HTTP_2).then(|| shared.stalls.clone());
        let handling = pipeline::handle(req, conn.clone(), shared.clone());
        async move {
            let response = handling.await?;
            let response = match stalls {
                Some(stalls) if !http_body::Body::is_end_stream(response.body()) => {
                    response.map(|body| {
                        Either::Right(stalls.watch(crate::body::boxed(body), write_timeout))
                    })
                }
                _ => response.map(Either::Left),
            };
            Ok::<_, Infallible>(response.map(|body| Holding::new(body, in_flight)))
        }
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .half_close(false)
        // hyper's own header timer (30s unless set) would also run between
        // keep-alive requests and cut idle connections before `idle_timeout`; the
        // guard times heads and the idle watchdog below times the waits.
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(h2_header_list_limit(limits.max_head_bytes))
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(64))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let parking: Parking<WriteTimeout<IO>> = Arc::new(Mutex::new(None));
    let mut replay = BytesMut::new();
    // One hyper connection per stretch of activity: a connection that hibernated
    // (see `hibernate`) gets a new one when its client speaks again.
    loop {
        let lease = Lease::new(io, replay, activity.clone(), parking.clone());
        // Boxed, so a hibernating connection does not even reserve hyper's state
        // inside this task.
        let mut conn =
            Box::pin(builder.serve_connection_with_upgrades(TokioIo::new(lease), service.clone()));
        // Once winding down (idle, or the server stopping) the connection only has
        // to finish: hyper closes it after what is in flight.
        let mut closing = *stop.borrow_and_update();
        if closing {
            conn.as_mut().graceful_shutdown();
        }
        let mut hibernated_for = None;
        let result = loop {
            tokio::select! {
                biased;
                result = conn.as_mut() => break result,
                // Wakes hyper, whose next read gives the socket back if the
                // connection is HTTP/1 and between requests.
                since = activity.idle_period_for(HIBERNATE_AFTER, hibernated_for),
                    if !closing && HIBERNATE_AFTER < idle_timeout => {
                    hibernated_for = Some(since);
                    activity.request_hibernation();
                }
                () = activity.idle_for(idle_timeout), if !closing => {
                    tracing::debug!(%peer, "idle_timeout passed with no request in flight; closing");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                // A dropped sender means the server is gone: wind down as well.
                _ = stop.changed(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        }
        // Dropping hyper's connection returns a parked stream; closed or upgraded
        // connections leave nothing to continue with.
        drop(conn);
        let parked = parking.lock().ok().and_then(|mut slot| slot.take());
        let Some(mut parked) = parked else {
            return;
        };
        if closing || *stop.borrow_and_update() {
            return;
        }
        let woke = tokio::select! {
            bytes = hibernate::next_bytes(&mut parked) => bytes,
            () = activity.idle_for(idle_timeout) => None,
            _ = stop.changed() => None,
        };
        let Some(bytes) = woke else {
            return;
        };
        io = parked;
        replay = bytes;
    }
}

/// What h2 is told to accept: twice `max_header_bytes`. The pipeline refuses a
/// head over the limit itself (431 with the JSON body and an audit line); h2's own
/// refusal, a bare 431 and no audit line, stays as the hard bound on memory for
/// heads too large even to be read whole.
fn h2_header_list_limit(max_head_bytes: usize) -> u32 {
    u32::try_from(max_head_bytes.saturating_mul(2)).unwrap_or(u32::MAX)
}
