//! One Redis connection per thread that uses it: the data-plane workers are
//! single-threaded runtimes (see [`crate::workers`]), and a connection made on
//! a worker keeps its I/O task there, so a request and its Redis exchange never
//! leave the worker's thread. A connection shared by the process would hand
//! every command to another thread and back: two wake-ups per request, which
//! measured ~0.55x the local limiter's throughput (see BENCHMARKS.md).
//!
//! A thread's connection is dialled in the background on first use; until it
//! answers, the probe's connection serves that thread, so the first request
//! never waits for a TCP/TLS handshake (which could exceed the timeout and
//! mark a healthy Redis down).

use super::{Link, CONNECT_TIMEOUT};
use redis::aio::ConnectionManager;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

const DIALLING: u8 = 0;
const READY: u8 = 1;
const FAILED: u8 = 2;

struct Local {
    /// The [`Link`] it belongs to (a reload to another Redis makes a new one).
    link: u64,
    conn: ConnectionManager,
    state: Arc<AtomicU8>,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// This thread's connection when it is ready, else the probe's.
pub(super) fn connection(link: &Link) -> ConnectionManager {
    LOCAL.with(|slot| {
        let mut slot = slot.borrow_mut();
        if let Some(local) = &*slot {
            if local.link == link.id {
                match local.state.load(Ordering::Relaxed) {
                    READY => return local.conn.clone(),
                    DIALLING => return link.manager.clone(),
                    _ => {} // failed: dial again
                }
            }
        }
        *slot = dial(link);
        link.manager.clone()
    })
}

/// Starts this thread's connection and a ping that says when it is usable.
/// Outside a Tokio runtime there is nothing to run it on: the probe's serves.
fn dial(link: &Link) -> Option<Local> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let conn =
        ConnectionManager::new_lazy_with_config(link.client.clone(), link.config.clone()).ok()?;
    let state = Arc::new(AtomicU8::new(DIALLING));
    let (mut ping_conn, ping_state) = (conn.clone(), state.clone());
    let wait = CONNECT_TIMEOUT + link.timeout;
    runtime.spawn(async move {
        let ping = tokio::time::timeout(wait, async {
            redis::cmd("PING")
                .query_async::<String>(&mut ping_conn)
                .await
        })
        .await;
        let to = if matches!(ping, Ok(Ok(_))) {
            READY
        } else {
            FAILED
        };
        ping_state.store(to, Ordering::Relaxed);
    });
    Some(Local {
        link: link.id,
        conn,
        state,
    })
}

/// Whether this thread's own connection serves `link` (tests).
#[cfg(test)]
pub(super) fn ready(link: &Link) -> bool {
    LOCAL.with(|slot| {
        slot.borrow()
            .as_ref()
            .is_some_and(|l| l.link == link.id && l.state.load(Ordering::Relaxed) == READY)
    })
}
