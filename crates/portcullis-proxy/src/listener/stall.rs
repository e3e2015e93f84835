//! `server.write_timeout` for each HTTP/2 stream.
//!
//! [`super::write_timeout`] cuts a connection whose writes stay stuck, which is
//! how a stalled HTTP/1 client shows. An HTTP/2 client can stall one stream
//! at a time instead: it shuts the stream's flow-control window (an initial
//! window of one byte, no `WINDOW_UPDATE`) while still answering pings, so the
//! socket keeps taking bytes and no write ever waits. hyper then stops polling
//! that stream's body, and the upstream connection feeding it would be held
//! for as long as the client likes, up to 256 streams per connection.
//!
//! Because the body is not polled while the window is shut, nothing inside it
//! can notice: each watched body keeps a clock that a [`Registry`] sweeps once
//! a second. A body that handed hyper a frame and has not been asked for the
//! next one within the timeout is dropped, which closes the upstream
//! connection; should hyper poll it again, the stream ends with an error.
//! A body waiting on its upstream (a long poll, an event stream) is being
//! asked for data, so it is never cut for the upstream's silence.

use crate::body::{BodyError, ProxyBody};
use crate::sync::lock;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// `yielded_at` while hyper is asking for the next frame (or has not yet).
const ASKED: u64 = u64::MAX;

/// How often the registry looks at its clocks.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Clock {
    born: Instant,
    timeout_ms: u64,
    /// Milliseconds after `born` when the body last handed hyper a frame that
    /// hyper has not come back after; [`ASKED`] while it is asking.
    yielded_at: AtomicU64,
    /// `None` once the sweep found the stream stalled.
    body: Mutex<Option<ProxyBody>>,
}

impl Clock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn stalled(&self) -> bool {
        let at = self.yielded_at.load(Ordering::Relaxed);
        at != ASKED && self.now_ms().saturating_sub(at) >= self.timeout_ms
    }
}

/// The clocks of every watched body in flight.
#[derive(Default)]
pub struct Registry {
    clocks: Mutex<Vec<Weak<Clock>>>,
}

impl Registry {
    /// `body`, cut once its client takes nothing of it for `timeout`.
    pub fn watch(&self, body: ProxyBody, timeout: Duration) -> Watched {
        let clock = Arc::new(Clock {
            born: Instant::now(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX - 1),
            yielded_at: AtomicU64::new(ASKED),
            body: Mutex::new(Some(body)),
        });
        lock(&self.clocks).push(Arc::downgrade(&clock));
        Watched(clock)
    }

    /// Drops the bodies of stalled streams, and forgets finished ones.
    pub fn sweep(&self) {
        lock(&self.clocks).retain(|weak| {
            let Some(clock) = weak.upgrade() else {
                return false;
            };
            if !clock.stalled() {
                return true;
            }
            tracing::debug!("an HTTP/2 stream took no response bytes within write_timeout; its upstream is released");
            drop(lock(&clock.body).take());
            false
        });
    }

    /// Sweeps once a second, for as long as the server runs.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sweep();
        }
    }

    #[cfg(test)]
    fn watched(&self) -> usize {
        lock(&self.clocks).len()
    }
}

/// A response body on a clock (see the module).
pub struct Watched(Arc<Clock>);

impl Body for Watched {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let clock = &self.0;
        clock.yielded_at.store(ASKED, Ordering::Relaxed);
        let mut slot = lock(&clock.body);
        let Some(body) = slot.as_mut() else {
            return Poll::Ready(Some(Err(
                "the client took no response bytes within write_timeout".into(),
            )));
        };
        let polled = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            clock.yielded_at.store(clock.now_ms(), Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.0.body)
            .as_ref()
            .is_none_or(|body| body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        lock(&self.0.body)
            .as_ref()
            .map_or_else(SizeHint::default, |body| body.size_hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body() -> ProxyBody {
        crate::body::full("0123456789")
    }

    #[tokio::test]
    async fn a_body_not_asked_for_its_next_frame_is_cut_and_one_waiting_is_not() {
        let registry = Registry::default();
        let timeout = Duration::from_millis(50);
        // Handed one frame, never asked again: the client's window is shut.
        let mut stalled = registry.watch(body(), timeout);
        let first = stalled.frame().await;
        assert!(first.is_some_and(|f| f.is_ok()));
        // Asked and waiting (its upstream is silent): never cut.
        let (_tx, silent) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BodyError>>(1);
        let silent = crate::body::boxed(http_body_util::StreamBody::new(tokio_stream_like(silent)));
        let mut waiting = registry.watch(silent, timeout);
        let asked = tokio::time::timeout(Duration::from_millis(5), waiting.frame()).await;
        assert!(asked.is_err(), "the silent upstream has nothing yet");
        tokio::time::sleep(Duration::from_millis(80)).await;
        registry.sweep();
        assert_eq!(registry.watched(), 1, "only the waiting body is left");
        let cut = stalled.frame().await;
        assert!(
            cut.is_some_and(|f| f.is_err()),
            "the stalled body ends in an error"
        );
        drop(waiting);
        registry.sweep();
        assert_eq!(registry.watched(), 0, "finished bodies are forgotten");
    }

    /// A stream of what arrives on `rx`.
    fn tokio_stream_like<T>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
