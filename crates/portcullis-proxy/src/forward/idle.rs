//! The idle keep-alive connections to one upstream endpoint.
//!
//! HTTP/1.1 connections wait in a stack (the most recently used goes out
//! first: its socket is the least likely to have been closed by the upstream);
//! an h2 connection is shared by requests until it closes, up to
//! [`STREAMS_PER_H2`] at once: past that a request goes over another one, as
//! hyper would otherwise queue it until a stream ends, and a long-lived stream
//! (server-sent events, MCP, gRPC streaming) may not end before the queued
//! request's `request_timeout`. While a new h2 connection is being dialled the
//! other requests wait for it rather than each dialling its own. An HTTP/1.1
//! connection is only kept while hyper says it can take a request
//! (`is_ready`), so one whose response is still streaming comes back when it
//! is done. Entries idle longer than [`IDLE_FOR`] are closed as the
//! next request passes, and by a reaper task (one per endpoint with kept
//! connections, ending with the endpoint) when none does; at most
//! [`MAX_IDLE`] are kept.

use crate::body::ProxyBody;
use crate::sync::lock;
use hyper::client::conn::{http1, http2};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
// tokio's clock, so that tests can move it; the same as std's otherwise.
use tokio::time::Instant;

/// How long an unused connection is kept (upstreams commonly close theirs
/// after 60–120 s; reusing one the upstream is closing costs a retry).
pub const IDLE_FOR: Duration = Duration::from_secs(90);
/// The most idle HTTP/1.1 connections kept per endpoint.
pub const MAX_IDLE: usize = 1024;
/// How often the reaper looks for connections idle too long or closed.
const REAP_EVERY: Duration = Duration::from_secs(30);
/// Streams open at once on one h2 connection before the next request takes
/// another. hyper does not say what the upstream allows
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`); RFC 9113 §6.5.2 recommends it be no
/// fewer than 100, and nginx (128), Go (250), hyper (200) and Envoy allow more.
pub const STREAMS_PER_H2: usize = 100;

/// A connection that can take a request now.
pub enum Ready {
    Http1(http1::SendRequest<ProxyBody>),
    Http2(http2::SendRequest<ProxyBody>, StreamSlot),
}

/// A stream's place on a shared h2 connection, given back when dropped: the
/// response body holds it, so a stream counts until its body has ended.
pub struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn take(open: &Arc<AtomicUsize>) -> StreamSlot {
        open.fetch_add(1, Ordering::Relaxed);
        StreamSlot(Arc::clone(open))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An h2 connection shared by requests, and how many of its streams are open.
struct SharedH2 {
    tx: http2::SendRequest<ProxyBody>,
    open: Arc<AtomicUsize>,
}

impl SharedH2 {
    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// What to do instead of, or while, dialling.
pub enum BeforeDial<'a> {
    /// Dial, holding this guard (none for an HTTP/1.1 endpoint: no waiting).
    Dial(Option<tokio::sync::MutexGuard<'a, ()>>),
    /// Another request's dial succeeded: share its h2 connection.
    Shared(http2::SendRequest<ProxyBody>, StreamSlot),
}

#[derive(Default)]
pub struct IdleConnections {
    http1: Mutex<VecDeque<(http1::SendRequest<ProxyBody>, Instant)>>,
    /// Oldest first; requests take the first with room.
    http2: Mutex<Vec<SharedH2>>,
    /// The endpoint negotiated h2 before: its dials take [`Self::h2_dial`].
    speaks_h2: AtomicBool,
    /// Held while an h2 connection is being dialled.
    h2_dial: tokio::sync::Mutex<()>,
    reaper_started: AtomicBool,
}

impl IdleConnections {
    /// A connection that can take a request now, if one is kept.
    pub fn checkout(&self) -> Option<Ready> {
        self.checkout_at(Instant::now())
    }

    fn checkout_at(&self, now: Instant) -> Option<Ready> {
        if let Some((tx, slot)) = self.shared_h2() {
            return Some(Ready::Http2(tx, slot));
        }
        let mut idle = lock(&self.http1);
        close_stale(&mut idle, now);
        while let Some((tx, _)) = idle.pop_back() {
            if tx.is_ready() {
                return Some(Ready::Http1(tx));
            }
        }
        None
    }

    /// The first shared h2 connection that is open and has room for a stream.
    fn shared_h2(&self) -> Option<(http2::SendRequest<ProxyBody>, StreamSlot)> {
        let mut h2 = lock(&self.http2);
        h2.retain(|c| c.tx.is_ready());
        let at = h2.iter().position(|c| c.open() < STREAMS_PER_H2)?;
        // A burst is over when the connection taken is less than half full:
        // the later ones with no stream open are closed (their last sender
        // dropped), so a burst does not leave its connections open for good.
        if h2[at].open() < STREAMS_PER_H2 / 2 {
            let later = h2.split_off(at + 1);
            h2.extend(later.into_iter().filter(|c| c.open() > 0));
        }
        let chosen = &h2[at];
        Some((chosen.tx.clone(), StreamSlot::take(&chosen.open)))
    }

    /// Before dialling: for an endpoint that speaks h2, waits for any dial in
    /// progress and takes its connection if it succeeded.
    pub async fn before_dial(&self) -> BeforeDial<'_> {
        if !self.speaks_h2.load(Ordering::Relaxed) {
            return BeforeDial::Dial(None);
        }
        let guard = self.h2_dial.lock().await;
        match self.shared_h2() {
            Some((tx, slot)) => BeforeDial::Shared(tx, slot),
            None => BeforeDial::Dial(Some(guard)),
        }
    }

    /// Keeps a new h2 connection for the requests to come; the slot is the
    /// stream of the request that dialled it.
    pub fn share(&self, tx: http2::SendRequest<ProxyBody>) -> StreamSlot {
        self.speaks_h2.store(true, Ordering::Relaxed);
        let open = Arc::new(AtomicUsize::new(0));
        let slot = StreamSlot::take(&open);
        lock(&self.http2).push(SharedH2 { tx, open });
        slot
    }

    /// Takes back an HTTP/1.1 connection whose response head has arrived: now
    /// if it can take another request, else once its response has been read
    /// (a dropped or failed response closes it, and it is not kept).
    pub fn checkin(self: &Arc<Self>, mut tx: http1::SendRequest<ProxyBody>) {
        if tx.is_ready() {
            self.keep(tx, Instant::now());
            return;
        }
        let home = Arc::clone(self);
        tokio::spawn(async move {
            if tx.ready().await.is_ok() {
                home.keep(tx, Instant::now());
            }
        });
    }

    fn keep(self: &Arc<Self>, tx: http1::SendRequest<ProxyBody>, now: Instant) {
        {
            let mut idle = lock(&self.http1);
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push_back((tx, now));
        }
        if !self.reaper_started.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }

    /// Closes what is idle too long or already closed.
    fn reap_at(&self, now: Instant) {
        let mut idle = lock(&self.http1);
        close_stale(&mut idle, now);
        idle.retain(|(tx, _)| !tx.is_closed());
        drop(idle);
        lock(&self.http2).retain(|c| !c.tx.is_closed());
    }

    /// Forgets the shared h2 connections, as a GOAWAY would (for tests).
    #[cfg(test)]
    pub fn forget_h2(&self) {
        lock(&self.http2).clear();
    }

    /// How many HTTP/1.1 connections are kept.
    fn len(&self) -> usize {
        lock(&self.http1).len()
    }
}

/// The oldest are at the front: closes those idle too long.
fn close_stale(idle: &mut VecDeque<(http1::SendRequest<ProxyBody>, Instant)>, now: Instant) {
    while idle
        .front()
        .is_some_and(|(_, since)| now.saturating_duration_since(*since) > IDLE_FOR)
    {
        idle.pop_front();
    }
}

/// The reaper: runs while the endpoint lives (its config load is in use).
async fn reap(idle: Weak<IdleConnections>) {
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        let Some(idle) = idle.upgrade() else { return };
        idle.reap_at(Instant::now());
    }
}

impl std::fmt::Debug for IdleConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleConnections")
            .field("http1", &self.len())
            .field("http2", &lock(&self.http2).len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::empty;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    /// A real HTTP/1.1 connection over an in-memory pipe to a hyper server that
    /// answers every request with an empty 200 naming the connection (`x-conn`).
    async fn connection_named(name: &'static str) -> http1::SendRequest<ProxyBody> {
        let (client, server) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let svc = service_fn(move |_req| async move {
                let mut resp = http::Response::new(empty());
                resp.headers_mut()
                    .insert("x-conn", http::HeaderValue::from_static(name));
                Ok::<_, std::convert::Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), svc)
                .await;
        });
        let (mut tx, conn) = http1::handshake(TokioIo::new(client)).await.unwrap();
        tokio::spawn(conn);
        // Ready once its connection task has run.
        tx.ready().await.unwrap();
        tx
    }

    async fn connection() -> http1::SendRequest<ProxyBody> {
        connection_named("-").await
    }

    async fn name_of(tx: &mut http1::SendRequest<ProxyBody>) -> String {
        let resp = tx.send_request(request()).await.unwrap();
        resp.headers()["x-conn"].to_str().unwrap().to_string()
    }

    fn request() -> http::Request<ProxyBody> {
        http::Request::builder().uri("/").body(empty()).unwrap()
    }

    /// A real h2 connection over an in-memory pipe to a hyper server.
    async fn h2_connection() -> http2::SendRequest<ProxyBody> {
        let (client, server) = tokio::io::duplex(65536);
        let exec = hyper_util::rt::TokioExecutor::new();
        tokio::spawn(async move {
            let svc = service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(empty()))
            });
            let _ = hyper::server::conn::http2::Builder::new(exec)
                .serve_connection(TokioIo::new(server), svc)
                .await;
        });
        let (tx, conn) =
            http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(client))
                .await
                .unwrap();
        tokio::spawn(conn);
        tx
    }

    fn slots(idle: &IdleConnections) -> Vec<usize> {
        lock(&idle.http2).iter().map(SharedH2::open).collect()
    }

    #[tokio::test]
    async fn a_full_h2_connection_is_passed_over_and_extras_close_after_the_burst() {
        let idle = IdleConnections::default();
        let mut held = vec![idle.share(h2_connection().await)];
        while let Some((_, slot)) = idle.shared_h2() {
            held.push(slot);
        }
        assert_eq!(slots(&idle), [STREAMS_PER_H2], "the one connection is full");
        held.push(idle.share(h2_connection().await));
        held.push(idle.share(h2_connection().await));
        assert_eq!(slots(&idle), [STREAMS_PER_H2, 1, 1]);
        // The first has room again, but not half of it: the others stay.
        held.drain(..STREAMS_PER_H2 / 2 - 1);
        let (_, slot) = idle.shared_h2().unwrap();
        assert_eq!(slots(&idle), [STREAMS_PER_H2 / 2 + 2, 1, 1]);
        drop(slot);
        // Under half full: the later connections with no stream open close,
        // the one still streaming stays.
        drop(held.pop()); // the third connection's only stream ends
        held.drain(..10);
        let (_, slot) = idle.shared_h2().unwrap();
        assert_eq!(slots(&idle), [STREAMS_PER_H2 / 2 - 8, 1]);
        drop(slot);
    }

    #[tokio::test]
    async fn the_connection_used_last_goes_out_first() {
        let idle = Arc::new(IdleConnections::default());
        let t = Instant::now();
        idle.keep(connection_named("a").await, t);
        idle.keep(connection_named("b").await, t);
        let mut order = Vec::new();
        while let Some(Ready::Http1(mut tx)) = idle.checkout_at(t) {
            order.push(name_of(&mut tx).await);
        }
        assert_eq!(order, ["b", "a"]);
    }

    #[tokio::test]
    async fn an_idle_connection_is_dropped_after_the_idle_time() {
        let idle = Arc::new(IdleConnections::default());
        let t = Instant::now();
        idle.keep(connection().await, t);
        assert!(idle
            .checkout_at(t + IDLE_FOR + Duration::from_secs(1))
            .is_none());
        assert_eq!(idle.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_reaper_closes_idle_connections_when_no_request_passes() {
        let idle = Arc::new(IdleConnections::default());
        idle.keep(connection().await, Instant::now());
        assert_eq!(idle.len(), 1);
        tokio::time::sleep(IDLE_FOR + REAP_EVERY + Duration::from_secs(1)).await;
        assert_eq!(idle.len(), 0);
    }

    #[tokio::test]
    async fn a_closed_connection_is_never_handed_out() {
        let idle = Arc::new(IdleConnections::default());
        let (client, server) = tokio::io::duplex(4096);
        let (tx, conn) = http1::handshake::<_, ProxyBody>(TokioIo::new(client))
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        idle.keep(tx, Instant::now());
        // The upstream goes away: the connection task ends, the sender closes.
        drop(server);
        let _ = task.await;
        assert!(idle.checkout().is_none());
    }

    #[tokio::test]
    async fn a_connection_comes_back_after_its_response() {
        let idle = Arc::new(IdleConnections::default());
        let mut tx = connection().await;
        let resp = tx.send_request(request()).await.unwrap();
        idle.checkin(tx);
        drop(resp);
        // Ready at once, or soon after through the spawned wait.
        for _ in 0..100 {
            if idle.len() == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the connection was not kept");
    }

    #[tokio::test]
    async fn no_more_than_the_bound_are_kept() {
        let idle = Arc::new(IdleConnections::default());
        let t = Instant::now();
        let tx = connection().await;
        for _ in 0..MAX_IDLE {
            let tx = connection().await;
            idle.http1.lock().unwrap().push_back((tx, t));
        }
        idle.keep(tx, t);
        assert_eq!(idle.len(), MAX_IDLE);
    }
}
