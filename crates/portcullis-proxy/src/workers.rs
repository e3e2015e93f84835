//! The data plane's threads: one single-threaded tokio runtime per core, each
//! accepting from the shared listening socket and serving its connections to the
//! end.
//!
//! Why not tokio's multi-threaded runtime: a proxy's requests are short and
//! independent, so work stealing buys little, while its cross-thread queues and
//! wake-ups cost on every request (a bare hyper proxy did 43k req/s on one core
//! with it and 54k without). A connection never moves between threads here, so
//! its request, its upstream exchange and its timers stay on one core.
//!
//! The control plane (admin listener, key refresh, reloads, signals) stays on the
//! caller's runtime.

use std::future::Future;
use std::io;
use std::thread;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Running worker threads. Dropping this stops them: each runtime is shut down,
/// cancelling whatever it still runs (drain first with graceful shutdown).
pub struct Workers {
    handles: Vec<Handle>,
    /// Dropping a sender ends its worker's `block_on`.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts one worker per core this process may run on.
    pub fn start() -> io::Result<Workers> {
        let n = thread::available_parallelism().map_or(1, |n| n.get());
        Self::start_n(n)
    }

    /// Starts `n` workers (at least one).
    pub fn start_n(n: usize) -> io::Result<Workers> {
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            thread::Builder::new()
                .name(format!("portcullis-w{i}"))
                .spawn(move || {
                    // Returns when the sender is dropped; dropping the runtime then
                    // cancels this worker's remaining tasks.
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(Workers {
            handles,
            _stop: stops,
        })
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Runs `make(i)` on every worker `i`, returning the tasks' handles.
    pub fn spawn_each<F, Fut>(&self, mut make: F) -> Vec<tokio::task::JoinHandle<()>>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handles
            .iter()
            .enumerate()
            .map(|(i, h)| h.spawn(make(i)))
            .collect()
    }
}
