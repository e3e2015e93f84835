//! The audit log (SPEC §7): one JSON object per line per request, written to
//! `stdout`, to `file:PATH`, or nowhere (`none`).
//!
//! # Design
//!
//! The request path only moves an [`AuditRecord`] into a bounded queue; a
//! dedicated OS thread (`portcullis-audit`) serializes it (`audit_line`),
//! appends it to an in-memory batch and writes the batch with one `write(2)`
//! whenever the queue is momentarily empty. Serializing on the writer thread
//! keeps JSON encoding and every syscall off the request path; batching keeps
//! the syscall count low under load.
//!
//! **No line is lost while the process lives.** [`AuditLog::record`] first
//! tries a non-blocking send; when the queue (65,536 records by default) is
//! full it falls back to a *blocking* send. That backpressure is acceptable
//! because the writer does nothing but buffered appends, so a full queue means
//! the sink itself cannot keep up, and slowing requests down is the only way
//! to neither drop lines nor grow memory without bound. In normal operation the
//! queue is far from full and `record` never waits.
//!
//! **Write errors** (disk full, `EIO`) are reported once per burst with
//! `tracing::warn!` and retried with backoff. Lines written while the sink is
//! failing are kept in memory (up to [`MAX_PENDING_BYTES`]); past that the
//! writer stops taking records off the queue, so the queue fills and requests
//! wait for the disk, which is the "fail closed" choice: an identity-aware
//! proxy should not keep serving requests it cannot audit. Only at shutdown,
//! after [`SHUTDOWN_RETRY`] of failed retries, are unwritable lines given up,
//! with a warning saying how many ([`AuditLog::lines_lost`]).
//!
//! **Rotation.** The `file:` sink is opened with `O_APPEND|O_CREAT`, so
//! `copytruncate` rotation needs nothing. For rename-style rotation
//! (`mv audit.log audit.log.1; kill -HUP`), [`AuditLog::reopen`] queues a
//! reopen: the writer writes everything queued before it to the old file and
//! then opens the path afresh, so no line is lost or split across files. The
//! writer also notices a rename without SIGHUP: about once a second it compares
//! the path's inode with the open file's and reopens when they differ (or the
//! path is gone).
//!
//! **Secrets (SPEC §5).** [`AuditRecord`] has no field that can carry a token,
//! a cookie, a header or a query string: `path` is documented as the
//! normalized path *without* its query (use [`path_without_query`]), and
//! [`AuditIdentity`] copies only the listed identity attributes, never claims.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

mod record;
mod sink;
#[cfg(test)]
mod tests;
mod writer;

pub use record::{
    millis, path_without_query, AuditIdentity, AuditMcp, AuditRecord, AuditTime, DECISION_ALLOW,
    DECISION_DENY,
};
use sink::Sink;
use writer::Writer;

use crate::sync::{lock, read, write};
use portcullis_config::AuditSink;

/// Records the queue holds before [`AuditLog::record`] starts to wait for the
/// writer. At ~1 µs of writer work per line this is tens of milliseconds of
/// burst, while the queue itself costs ~1.5 MiB (records are boxed, so a slot
/// is a pointer, not a whole record).
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;

/// Heap bytes the queued records may hold together before [`AuditLog::record`]
/// waits for the writer, as the record count does: a stalled sink with large
/// records (a 32 KiB path each) would otherwise hold gigabytes before the count
/// bound is reached. One record is always let in, however large.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// How long the writer lets lines accumulate between batches (the most a line
/// waits in memory when the process is busy).
const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// Serialized bytes the writer accumulates before it writes a batch even if
/// more records are queued, so one batch never grows without bound.
const BATCH_BYTES: usize = 64 * 1024;

/// Serialized bytes kept in memory while the sink fails; past this the writer
/// stops draining the queue and `record` callers feel backpressure.
pub const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

/// How often the `file:` sink checks whether its path was renamed away.
const ROTATION_CHECK: Duration = Duration::from_secs(1);

/// First and longest pause between retries of a failing sink.
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How long shutdown keeps retrying a failing sink before giving up on the
/// lines it cannot write (the process is about to exit anyway).
pub const SHUTDOWN_RETRY: Duration = Duration::from_secs(2);

/// Longest single sleep of a writer that is waiting out a failing sink, so it
/// notices a shutdown promptly.
const MAX_SLEEP: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// The log handle
// ---------------------------------------------------------------------------

/// The audit log: a cheap-to-clone handle to one sink and its writer thread.
///
/// Open it once at startup with [`AuditLog::open`], hand clones to the
/// pipeline, call [`AuditLog::reopen`] on SIGHUP and [`AuditLog::shutdown`]
/// after draining on SIGTERM. Dropping the last clone also shuts down
/// (flushing every line), but an explicit `shutdown` says where it happens.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("sink", &self.inner.sink)
            .field("lines_written", &self.lines_written())
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// The configured sink, for `Debug` and for reopening after a writer died.
    sink: AuditSink,
    /// `None` sink: nothing to write, only count.
    discard: bool,
    /// The queue to the writer; `None` once shut down. `record` holds the read
    /// lock while it sends, so `shutdown` (write lock) knows that no send is in
    /// flight when it drops the sender, and therefore that the writer has
    /// received every queued record before it sees the disconnect.
    tx: RwLock<Option<SyncSender<Msg>>>,
    /// The writer thread, or after shutdown the writer itself for synchronous
    /// writes of late records. `shutdown` holds this lock while it joins, so a
    /// concurrent `shutdown` or late `record` waits until the flush is done.
    state: Mutex<State>,
    shared: Arc<Shared>,
    /// [`DEFAULT_QUEUE_BYTES`] unless a test asked for less.
    max_queued_bytes: usize,
}

/// Counters and flags shared with the writer thread (which must not hold an
/// `Arc<Inner>`, or `Inner` could never be dropped).
#[derive(Default)]
struct Shared {
    written: AtomicU64,
    lost: AtomicU64,
    shutting_down: AtomicBool,
    /// Heap bytes of the records sent and not yet taken by the writer.
    queued_bytes: AtomicUsize,
    /// Where `record` waits while `queued_bytes` is over the budget; the writer
    /// notifies it as it takes records off, only when `waiters` says someone is
    /// there (a notification is a syscall).
    drained: (Mutex<()>, Condvar),
    waiters: AtomicUsize,
    /// The writer thread ended (or panicked): nobody will take records off, so
    /// nobody waits for it to.
    writer_gone: AtomicBool,
}

/// Marks the writer gone when its thread ends, however it ends.
struct WriterGone(Arc<Shared>);

impl Drop for WriterGone {
    fn drop(&mut self) {
        self.0.writer_gone.store(true, Ordering::SeqCst);
        let _guard = self
            .0
            .drained
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.0.drained.1.notify_all();
    }
}

impl Shared {
    /// The writer took a record of `bytes` off the queue.
    fn taken(&self, bytes: usize) {
        // SeqCst with `wait_for_room`'s: either the waiter is counted here, or
        // its next look at `queued_bytes` sees this subtraction.
        self.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self
                .drained
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.drained.1.notify_all();
        }
    }
}

enum State {
    Running(JoinHandle<Writer>),
    /// Shut down; the writer (if its thread ended normally) now writes late
    /// records synchronously.
    Stopped(Option<Writer>),
}

/// What the request side asks of the writer thread. Records are boxed so a
/// queue slot is one pointer wide: the channel preallocates every slot.
enum Msg {
    /// A record and its [`AuditRecord::heap_bytes`], counted in the budget.
    Record(Box<AuditRecord>, usize),
    Reopen,
    Flush(SyncSender<()>),
}

impl AuditLog {
    /// Opens the sink and starts the writer thread. For `file:PATH` the file
    /// is opened (append, create, mode 0640) here, so a bad path is an error at
    /// startup rather than a stream of warnings later.
    pub fn open(sink: &AuditSink) -> io::Result<AuditLog> {
        Self::open_with_capacity(sink, DEFAULT_QUEUE_CAPACITY)
    }

    /// [`AuditLog::open`] with a queue that holds at most `max_queued_bytes` of
    /// records (see [`DEFAULT_QUEUE_BYTES`]). Meant for tests.
    pub fn open_with_byte_budget(
        sink: &AuditSink,
        max_queued_bytes: usize,
    ) -> io::Result<AuditLog> {
        let mut log = Self::open_with_capacity(sink, DEFAULT_QUEUE_CAPACITY)?;
        if let Some(inner) = Arc::get_mut(&mut log.inner) {
            inner.max_queued_bytes = max_queued_bytes;
        }
        Ok(log)
    }

    /// [`AuditLog::open`] with a queue of `capacity` records. Meant for tests
    /// (a tiny queue exercises backpressure) and for tuning; `0` makes every
    /// `record` a rendezvous with the writer.
    pub fn open_with_capacity(sink: &AuditSink, capacity: usize) -> io::Result<AuditLog> {
        let target = match sink {
            AuditSink::None => None,
            AuditSink::Stdout => Some(Sink::Stdout(io::stdout())),
            AuditSink::File(path) => Some(Sink::open_file(PathBuf::from(path))?),
        };
        Self::start(sink.clone(), target, capacity)
    }

    fn start(config: AuditSink, target: Option<Sink>, capacity: usize) -> io::Result<AuditLog> {
        let shared = Arc::new(Shared::default());
        let (tx, state) = match target {
            None => (None, State::Stopped(None)),
            Some(sink) => {
                let (tx, rx) = sync_channel(capacity);
                let writer = Writer::new(sink, Arc::clone(&shared));
                let gone = WriterGone(Arc::clone(&shared));
                let handle = std::thread::Builder::new()
                    .name("portcullis-audit".into())
                    .spawn(move || {
                        let _gone = gone;
                        writer.run(rx)
                    })?;
                (Some(tx), State::Running(handle))
            }
        };
        Ok(AuditLog {
            inner: Arc::new(Inner {
                discard: config == AuditSink::None,
                sink: config,
                tx: RwLock::new(tx),
                state: Mutex::new(state),
                shared,
                max_queued_bytes: DEFAULT_QUEUE_BYTES,
            }),
        })
    }

    /// Queues one audit line. Synchronous and cheap (a box and a channel
    /// send), so it can be called from `Drop` impls and from async code alike;
    /// it blocks only while the queue is full (see the module docs). After
    /// [`AuditLog::shutdown`] the line is written synchronously. Never panics.
    pub fn record(&self, rec: AuditRecord) {
        if self.inner.discard {
            self.inner.shared.written.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let bytes = rec.heap_bytes();
        self.wait_for_room(bytes);
        let msg = {
            let guard = read(&self.inner.tx);
            match guard.as_ref() {
                Some(tx) => match tx.try_send(Msg::Record(Box::new(rec), bytes)) {
                    Ok(()) => return,
                    // Backpressure: wait for the writer rather than drop.
                    Err(TrySendError::Full(msg)) => match tx.send(msg) {
                        Ok(()) => return,
                        Err(err) => err.0,
                    },
                    // Only if the writer thread died; write it ourselves.
                    Err(TrySendError::Disconnected(msg)) => msg,
                },
                None => Msg::Record(Box::new(rec), bytes),
            }
        };
        if let Msg::Record(rec, bytes) = msg {
            self.inner.shared.taken(bytes);
            self.inner.write_sync(&rec);
        }
    }

    /// Counts `bytes` as queued, first waiting (backpressure, as for a full
    /// queue) while the records already queued hold more than the budget.
    fn wait_for_room(&self, bytes: usize) {
        let shared = &self.inner.shared;
        let max = self.inner.max_queued_bytes;
        if shared.queued_bytes.load(Ordering::Relaxed) + bytes > max {
            let (lock, cond) = &shared.drained;
            let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            shared.waiters.fetch_add(1, Ordering::SeqCst);
            loop {
                let queued = shared.queued_bytes.load(Ordering::SeqCst);
                if queued == 0 || queued + bytes <= max || shared.writer_gone.load(Ordering::SeqCst)
                {
                    break;
                }
                // Timed as well, in case a notification is ever missed.
                guard = cond
                    .wait_timeout(guard, Duration::from_millis(50))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            shared.waiters.fetch_sub(1, Ordering::SeqCst);
        }
        shared.queued_bytes.fetch_add(bytes, Ordering::SeqCst);
    }

    /// Heap bytes of the records queued for the writer right now.
    pub fn queued_bytes(&self) -> usize {
        self.inner.shared.queued_bytes.load(Ordering::Acquire)
    }

    /// Makes the `file:` sink reopen its path (SIGHUP after a rename-style
    /// log rotation). Takes effect in queue order: every line recorded before
    /// this call goes to the old file, every line recorded after it returns
    /// goes to the new one. Does not wait for the writer (call
    /// [`AuditLog::flush`] afterwards for that). A no-op for other sinks.
    pub fn reopen(&self) {
        if self.inner.discard {
            return;
        }
        {
            let guard = read(&self.inner.tx);
            if let Some(tx) = guard.as_ref() {
                if tx.send(Msg::Reopen).is_ok() {
                    return;
                }
            }
        }
        let mut state = lock(&self.inner.state);
        if let State::Stopped(Some(w)) = &mut *state {
            w.reopen();
        }
    }

    /// Waits until every line recorded before this call has been handed to
    /// the operating system (or the sink has failed trying). Blocking: from
    /// async code call it through `spawn_blocking`.
    pub fn flush(&self) {
        if self.inner.discard {
            return;
        }
        let (ack_tx, ack_rx) = sync_channel(1);
        let sent = {
            let guard = read(&self.inner.tx);
            match guard.as_ref() {
                Some(tx) => tx.send(Msg::Flush(ack_tx)).is_ok(),
                None => false,
            }
        };
        if sent {
            // An error only means the writer is gone, which flushed too.
            let _ = ack_rx.recv();
        }
        // After shutdown every synchronous write is flushed immediately.
    }

    /// Writes every queued line, stops the writer thread and waits for it.
    /// Idempotent and safe to call from several clones at once (later callers
    /// wait for the first to finish). Lines recorded afterwards are written
    /// synchronously by the calling thread. Blocking: call it after the
    /// listener has drained, from `spawn_blocking` or the main thread.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// Lines handed to the operating system so far (for the `none` sink: lines
    /// recorded and discarded). A line counts once its whole batch is written.
    pub fn lines_written(&self) -> u64 {
        self.inner.shared.written.load(Ordering::Relaxed)
    }

    /// Lines given up because the sink kept failing at shutdown (or after it,
    /// beyond [`MAX_PENDING_BYTES`]). Zero unless the disk was full; each loss
    /// is also reported on stderr.
    pub fn lines_lost(&self) -> u64 {
        self.inner.shared.lost.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn shutdown(&self) {
        // Lock order everywhere: `state`, then `tx`. Holding `state` across
        // the join makes concurrent callers wait for the flush to complete.
        let mut state = lock(&self.state);
        let State::Running(_) = &*state else {
            return;
        };
        // Tell a writer stuck retrying a failing sink to stop waiting for it,
        // or the senders it is backpressuring would never release the lock.
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        // Waits for in-flight `record`s; then no sender is left, so the writer
        // drains the queue, sees the disconnect, flushes and ends.
        drop(write(&self.tx).take());
        let old = std::mem::replace(&mut *state, State::Stopped(None));
        if let State::Running(handle) = old {
            match handle.join() {
                Ok(writer) => *state = State::Stopped(Some(writer)),
                Err(_) => {
                    tracing::warn!("audit log writer thread panicked; lines still queued were lost")
                }
            }
        }
    }

    /// The slow path for records that cannot be queued: after shutdown, or if
    /// the writer thread died. Writes and flushes on the calling thread.
    fn write_sync(&self, rec: &AuditRecord) {
        let mut state = lock(&self.state);
        if let State::Running(handle) = &*state {
            if !handle.is_finished() {
                // Unreachable while shutdown holds `state` across dropping
                // the sender; if it ever happens, a second handle appends.
                drop(state);
                if let Some(sink) = self.fresh_sink() {
                    let mut w = Writer::new(sink, Arc::clone(&self.shared));
                    w.write_now(rec);
                }
                return;
            }
            let old = std::mem::replace(&mut *state, State::Stopped(None));
            if let State::Running(handle) = old {
                if let Ok(w) = handle.join() {
                    *state = State::Stopped(Some(w));
                }
            }
        }
        if let State::Stopped(slot) = &mut *state {
            if slot.is_none() {
                *slot = self
                    .fresh_sink()
                    .map(|sink| Writer::new(sink, Arc::clone(&self.shared)));
            }
            match slot {
                Some(w) => w.write_now(rec),
                None => {
                    self.shared.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Opens the configured sink anew (only needed if the writer thread died
    /// and took its sink with it).
    fn fresh_sink(&self) -> Option<Sink> {
        match &self.sink {
            AuditSink::None => None,
            AuditSink::Stdout => Some(Sink::Stdout(io::stdout())),
            AuditSink::File(path) => match Sink::open_file(PathBuf::from(path)) {
                Ok(sink) => Some(sink),
                Err(error) => {
                    tracing::warn!(%error, path = %path, "cannot reopen the audit log; line lost");
                    None
                }
            },
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: flush rather than lose the batch in memory.
        self.shutdown();
        // A late record written after shutdown may still be pending if the
        // sink was failing; retry it (bounded) before it is dropped.
        if let State::Stopped(Some(w)) = &mut *lock(&self.state) {
            w.finish();
        }
    }
}
