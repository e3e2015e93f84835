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
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{
    sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError,
};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use portcullis_config::AuditSink;
use portcullis_core::{Identity, IdentityKind};
use time::OffsetDateTime;

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
// The record
// ---------------------------------------------------------------------------

/// The moment of an audit line, serialized as RFC 3339 in UTC with
/// exactly six fractional digits (microseconds), e.g.
/// `2026-11-22T16:41:30.123456Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditTime(OffsetDateTime);

impl AuditTime {
    /// The current time.
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc())
    }

    /// The wrapped instant (always UTC).
    pub fn as_offset_date_time(&self) -> OffsetDateTime {
        self.0
    }
}

impl From<OffsetDateTime> for AuditTime {
    fn from(t: OffsetDateTime) -> Self {
        // Normalize once so formatting never has to think about offsets.
        Self(t.to_offset(time::UtcOffset::UTC))
    }
}

impl From<SystemTime> for AuditTime {
    fn from(t: SystemTime) -> Self {
        Self(OffsetDateTime::from(t))
    }
}

impl AuditTime {
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`: RFC 3339 in UTC with a fixed µs fraction.
    ///
    /// Written by hand rather than with `time::format_description::Rfc3339`
    /// because that one trims trailing zeros of the fraction; SPEC §7 wants a
    /// fixed µs precision so lines sort and parse uniformly. It also cannot
    /// fail, unlike `OffsetDateTime::format`, and skips the formatting machinery
    /// (seven padded integers per audit line showed in the profile).
    pub fn rfc3339(&self) -> [u8; 27] {
        let t = self.0;
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut n: u32| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        // Years outside 0..=9999 cannot come from the system clock.
        put(0, 4, t.year().clamp(0, 9999) as u32);
        put(5, 2, u32::from(u8::from(t.month())));
        put(8, 2, u32::from(t.day()));
        put(11, 2, u32::from(t.hour()));
        put(14, 2, u32::from(t.minute()));
        put(17, 2, u32::from(t.second()));
        put(20, 6, t.microsecond());
        out
    }
}

impl fmt::Display for AuditTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only ASCII digits and separators are written.
        f.write_str(std::str::from_utf8(&self.rfc3339()).unwrap_or_default())
    }
}

/// Who made the request, as written in the audit line's `identity` object.
///
/// Only the attributes SPEC §7 lists; the verified claims and any raw
/// credential are deliberately not representable here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditIdentity {
    /// `user`, `service`, `workload` or `anonymous` (the JSON key is `type`).
    pub kind: IdentityKind,
    /// The subject; `null` for a pure workload or an anonymous caller.
    pub sub: Option<String>,
    /// The verified email, when known.
    pub email: Option<String>,
    /// The token's original issuer (`iss`).
    pub issuer: Option<String>,
    /// The OAuth client id, when known.
    pub client_id: Option<String>,
    /// The caller's groups (empty when none).
    pub groups: Vec<String>,
    /// The workload's SPIFFE ID, when known.
    pub workload: Option<String>,
}

impl AuditIdentity {
    /// The caller nobody vouched for: `{"type": "anonymous", ...nulls}`.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Copies the auditable attributes of a verified identity.
    pub fn from_identity(id: &Identity) -> Self {
        Self {
            kind: id.kind,
            sub: (!id.subject.is_empty()).then(|| id.subject.clone()),
            email: id.email.clone(),
            issuer: id.issuer.clone(),
            client_id: id.client_id.clone(),
            groups: id.groups.clone(),
            workload: id.workload.clone(),
        }
    }
}

/// The audit view of the identity a request is done with: moved when the
/// request held the only reference, else the listed attributes copied (the
/// verified-token cache shares its identity with every request of the token).
impl From<Arc<Identity>> for AuditIdentity {
    fn from(id: Arc<Identity>) -> Self {
        Arc::try_unwrap(id).map_or_else(|shared| Self::from_identity(&shared), Self::from)
    }
}

/// The audit view of an identity the request is done with: its strings are
/// moved, not copied (the pipeline's way, once per request).
impl From<Identity> for AuditIdentity {
    fn from(id: Identity) -> Self {
        Self {
            kind: id.kind,
            // An empty subject means "none" (workload-only or anonymous
            // caller); `null` says that more plainly than `""`.
            sub: (!id.subject.is_empty()).then_some(id.subject),
            email: id.email,
            issuer: id.issuer,
            client_id: id.client_id,
            groups: id.groups,
            workload: id.workload,
        }
    }
}

/// One audit line. Field names, order and serialization are exactly SPEC §7
/// (plus `enforced`, SPEC §2 `mode: audit`); every key is always present, with
/// `null` for an absent value, so log pipelines see one stable schema.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// When the request was handled (the pipeline picks the instant and
    /// keeps it consistent; [`AuditTime::now`] at completion is typical).
    pub timestamp: AuditTime,
    /// `X-Request-Id` (kept from a trusted proxy, or generated).
    pub request_id: String,
    /// The W3C trace id of the request's `traceparent`.
    pub trace_id: String,
    /// The client address (after `trusted_proxies` processing).
    pub client_ip: String,
    /// The HTTP method.
    pub method: String,
    /// The requested host.
    pub host: String,
    /// The normalized path **without** its query string: queries may carry
    /// tokens (`/cb?access_token=...`). See [`path_without_query`].
    pub path: String,
    /// The matched route's name; `null` when no route matched.
    pub route: Option<String>,
    /// `"allow"` or `"deny"`.
    pub decision: &'static str,
    /// A SPEC §6 code, or `"allowed"` (`portcullis_core::Reason::as_str`).
    pub reason: &'static str,
    /// Name (or index) of the deciding rule, when one decided.
    pub rule: Option<String>,
    /// `false` when the route's policy is in `mode: audit` and would have
    /// denied: the request went through although `decision` says `deny`.
    pub enforced: bool,
    /// Who made the request.
    pub identity: AuditIdentity,
    /// The HTTP status sent to the client.
    pub status: u16,
    /// Total time from receipt to the end of the response, in milliseconds.
    pub duration_ms: f64,
    /// Time spent waiting for the upstream; `null` when none was contacted.
    pub upstream_ms: Option<f64>,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// The route's `upstream_auth` credential: its name, never the token.
    pub credential: Option<String>,
    /// The front end that judged the request: `proxy`, `forward_auth`,
    /// `ext_authz` (SPEC §4).
    pub frontend: &'static str,
    /// On MCP routes, the JSON-RPC message the request carried (SPEC §7, §10).
    pub mcp: Option<AuditMcp>,
}

impl AuditRecord {
    /// The heap memory the record holds (its strings' capacities), as the
    /// queue's byte budget counts it.
    pub fn heap_bytes(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        let id = &self.identity;
        let mcp = self
            .mcp
            .as_ref()
            .map_or(0, |m| opt(&m.method) + opt(&m.tool) + opt(&m.id));
        self.request_id.capacity()
            + self.trace_id.capacity()
            + self.client_ip.capacity()
            + self.method.capacity()
            + self.host.capacity()
            + self.path.capacity()
            + opt(&self.route)
            + opt(&self.rule)
            + opt(&self.credential)
            + opt(&id.sub)
            + opt(&id.email)
            + opt(&id.issuer)
            + opt(&id.client_id)
            + opt(&id.workload)
            + id.groups.iter().map(String::capacity).sum::<usize>()
            + mcp
    }
}

/// The audit line's `mcp` object.
#[derive(Debug, Clone, Default)]
pub struct AuditMcp {
    /// The JSON-RPC method; `null` for a response the client sent the server.
    pub method: Option<String>,
    /// For `tools/call`: the tool.
    pub tool: Option<String>,
    /// The JSON-RPC id as JSON text (a string or a number, at most 256 bytes:
    /// the parser refused anything else); `null` for a notification.
    pub id: Option<String>,
}

/// `decision` for a request that was (or, in audit mode, would be) allowed.
pub const DECISION_ALLOW: &str = "allow";
/// `decision` for a request that was (or, in audit mode, would be) denied.
pub const DECISION_DENY: &str = "deny";

/// The path part of a request target, without query string or fragment:
/// `/cb?access_token=abc` → `/cb`. Use it whenever a path for the audit line
/// comes from anything that may still carry the query.
pub fn path_without_query(uri_path_and_query: &str) -> &str {
    match uri_path_and_query.find(['?', '#']) {
        Some(i) => &uri_path_and_query[..i],
        None => uri_path_and_query,
    }
}

/// A duration as fractional milliseconds rounded to the microsecond, the unit
/// of `duration_ms` and `upstream_ms` (`12.345` rather than `12.345678912`).
pub fn millis(d: Duration) -> f64 {
    // u128 → f64 loses precision only beyond ~285 years of microseconds.
    d.as_micros() as f64 / 1000.0
}

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

/// Locks ignoring poison: no code panics while holding these locks, and an
/// audit log that stops working after an unrelated panic would lose lines.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// The writer
// ---------------------------------------------------------------------------

/// Where serialized lines go.
enum Sink {
    Stdout(io::Stdout),
    File {
        path: PathBuf,
        file: File,
        /// (device, inode) of `file`, to notice the path being renamed away.
        id: Option<(u64, u64)>,
    },
    #[cfg(test)]
    Test(Arc<Mutex<tests::TestSink>>),
}

impl Sink {
    fn open_file(path: PathBuf) -> io::Result<Sink> {
        let file = open_append(&path)?;
        let id = file_id(&file);
        Ok(Sink::File { path, file, id })
    }

    /// One `write` call: may write less than `buf` (disk full mid-batch).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            // `Stdout` is line-buffered, but a batch ending in '\n' is passed
            // straight through in one call.
            Sink::Stdout(out) => {
                let mut out = out.lock();
                let n = out.write(buf)?;
                // Whatever `write` accepted belongs to `Stdout` now (a failed
                // flush keeps it buffered there and retries it), so report `n`
                // regardless, or the retry would write those bytes twice.
                let _ = out.flush();
                Ok(n)
            }
            Sink::File { file, .. } => file.write(buf),
            #[cfg(test)]
            Sink::Test(t) => lock(t).write(buf),
        }
    }

    fn describe(&self) -> String {
        match self {
            Sink::Stdout(_) => "stdout".to_string(),
            Sink::File { path, .. } => path.display().to_string(),
            #[cfg(test)]
            Sink::Test(_) => "test".to_string(),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    {
        // Audit lines name people (sub, email): not world-readable.
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o640);
    }
    opts.open(path)
}

#[cfg(unix)]
fn file_id(file: &File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_file: &File) -> Option<(u64, u64)> {
    None
}

/// True when `path` no longer names the file we have open (renamed or
/// deleted). Errors other than "not found" (e.g. a permission hiccup) count
/// as "not rotated" so a flaky `stat` cannot make us reopen in a loop.
#[cfg(unix)]
fn path_rotated(path: &Path, open: Option<(u64, u64)>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(open) = open else {
        return false;
    };
    match std::fs::metadata(path) {
        Ok(m) => (m.dev(), m.ino()) != open,
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

#[cfg(not(unix))]
fn path_rotated(_path: &Path, _open: Option<(u64, u64)>) -> bool {
    false
}

/// A burst of consecutive write failures, reported once when it starts and
/// once when it ends.
struct Failure {
    since: Instant,
    attempts: u64,
    backoff: Duration,
    next_retry: Instant,
}

/// The writer: owns the sink and the batch of serialized lines not yet
/// handed to the OS. Runs on the writer thread, and after shutdown under the
/// `state` lock for late records.
struct Writer {
    sink: Sink,
    /// Complete lines (each ending in '\n') not yet written. On a partial
    /// write only the written prefix is removed, so a retry neither loses nor
    /// repeats bytes.
    pending: Vec<u8>,
    pending_lines: u64,
    shared: Arc<Shared>,
    failure: Option<Failure>,
    reopen_failing: bool,
    last_rotation_check: Instant,
}

impl Writer {
    fn new(sink: Sink, shared: Arc<Shared>) -> Self {
        Writer {
            sink,
            pending: Vec::with_capacity(BATCH_BYTES),
            pending_lines: 0,
            shared,
            failure: None,
            reopen_failing: false,
            last_rotation_check: Instant::now(),
        }
    }

    /// The writer thread's loop: block for a message, drain whatever else is
    /// queued (the batch), write the batch, repeat; wake at least once a
    /// second to check for rotation and to retry a failing sink.
    fn run(mut self, rx: Receiver<Msg>) -> Writer {
        loop {
            if self.pending.len() >= MAX_PENDING_BYTES {
                self.wait_for_sink();
                continue;
            }
            match rx.recv_timeout(self.next_wakeup()) {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let mut disconnected = false;
            while self.pending.len() < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(msg) => self.handle(msg),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            self.try_flush();
            self.maybe_check_rotation();
            if disconnected {
                break;
            }
            // Let the next lines pile up instead of being woken for each one: under
            // load a wake-up per request cost more CPU than writing the lines.
            if !self.shared.shutting_down.load(Ordering::Relaxed) {
                std::thread::sleep(BATCH_PAUSE);
            }
        }
        self.finish();
        self
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Record(rec, bytes) => {
                self.shared.taken(bytes);
                self.push(&rec);
            }
            Msg::Reopen => self.reopen(),
            Msg::Flush(ack) => {
                self.flush_now();
                // The waiter may have given up; nothing to do then.
                let _ = ack.try_send(());
            }
        }
    }

    /// Serializes one record onto the batch.
    fn push(&mut self, rec: &AuditRecord) {
        crate::audit_line::write_record(rec, &mut self.pending);
        self.pending.push(b'\n');
        self.pending_lines += 1;
    }

    /// The synchronous path used after shutdown: append and write at once.
    fn write_now(&mut self, rec: &AuditRecord) {
        self.maybe_check_rotation();
        self.push(rec);
        if !self.flush_now() && self.pending.len() >= MAX_PENDING_BYTES {
            self.give_up();
        }
    }

    /// When the next wake-up is due even if nothing is queued.
    fn next_wakeup(&self) -> Duration {
        let mut at = self.last_rotation_check + ROTATION_CHECK;
        if let Some(f) = &self.failure {
            if !self.pending.is_empty() {
                at = at.min(f.next_retry);
            }
        }
        at.saturating_duration_since(Instant::now())
    }

    /// The memory budget is used up and the sink keeps failing: stop taking
    /// records (the queue fills, `record` callers wait) until it recovers, or
    /// drop what cannot be written if the process is shutting down.
    fn wait_for_sink(&mut self) {
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            if !self.flush_now() {
                self.give_up();
            }
            return;
        }
        let wait = self
            .failure
            .as_ref()
            .map_or(Duration::ZERO, |f| {
                f.next_retry.saturating_duration_since(Instant::now())
            })
            .min(MAX_SLEEP);
        std::thread::sleep(wait);
        self.try_flush();
        self.maybe_check_rotation();
    }

    /// Writes the batch unless we are backing off from a failing sink.
    fn try_flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Some(f) = &self.failure {
            if Instant::now() < f.next_retry {
                return;
            }
        }
        self.flush_now();
    }

    /// Writes the batch now. Returns true when nothing is left pending.
    fn flush_now(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let mut done = 0;
        let mut error = None;
        while done < self.pending.len() {
            match self.sink.write(&self.pending[done..]) {
                Ok(0) => {
                    error = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        // Count exactly the lines whose last byte reached the OS, so a
        // partial write followed by a failure is neither lost nor doubled in
        // the counters.
        let completed = if done == self.pending.len() {
            // The usual case, without scanning the batch for newlines.
            self.pending_lines
        } else {
            self.pending[..done].iter().filter(|&&b| b == b'\n').count() as u64
        };
        self.pending.drain(..done);
        self.pending_lines = self.pending_lines.saturating_sub(completed);
        self.shared.written.fetch_add(completed, Ordering::Relaxed);
        match error {
            None => {
                if let Some(f) = self.failure.take() {
                    tracing::warn!(
                        sink = %self.sink.describe(),
                        failed_attempts = f.attempts,
                        failing_for_ms = f.since.elapsed().as_millis() as u64,
                        "audit log writes recovered; no line was lost"
                    );
                }
                // Don't keep a huge buffer around after a failure burst.
                if self.pending.capacity() > 4 * BATCH_BYTES {
                    self.pending.shrink_to(BATCH_BYTES);
                }
                true
            }
            Some(error) => {
                let now = Instant::now();
                match &mut self.failure {
                    Some(f) => {
                        f.attempts += 1;
                        f.backoff = (f.backoff * 2).min(MAX_BACKOFF);
                        f.next_retry = now + f.backoff;
                    }
                    None => {
                        tracing::warn!(
                            %error,
                            sink = %self.sink.describe(),
                            "audit log write failed; keeping lines in memory and retrying"
                        );
                        self.failure = Some(Failure {
                            since: now,
                            attempts: 1,
                            backoff: INITIAL_BACKOFF,
                            next_retry: now + INITIAL_BACKOFF,
                        });
                    }
                }
                false
            }
        }
    }

    /// Drops the unwritable batch, counting and reporting the loss.
    fn give_up(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // A partly written line counts as lost: its tail never arrived.
        let lost = self.pending_lines.max(1);
        self.shared.lost.fetch_add(lost, Ordering::Relaxed);
        tracing::warn!(
            sink = %self.sink.describe(),
            lines = lost,
            "audit log sink keeps failing at shutdown; giving up on these lines"
        );
        self.pending.clear();
        self.pending_lines = 0;
    }

    /// Final flush when the queue is closed: retry a failing sink for a
    /// bounded time, since the process is about to exit.
    fn finish(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_RETRY;
        while !self.flush_now() {
            let now = Instant::now();
            if now >= deadline {
                self.give_up();
                break;
            }
            let retry = self.failure.as_ref().map_or(now, |f| f.next_retry);
            std::thread::sleep(retry.min(deadline).saturating_duration_since(now));
        }
    }

    /// Writes the batch to the current file, then opens the path afresh. The
    /// batch holds only whole lines, so nothing is split across files (unless
    /// the old file failed mid-write; then its remainder goes to the new one).
    fn reopen(&mut self) {
        if !matches!(self.sink, Sink::File { .. }) {
            return;
        }
        self.flush_now();
        self.last_rotation_check = Instant::now();
        let Sink::File { path, file, id } = &mut self.sink else {
            return;
        };
        match open_append(path) {
            Ok(new) => {
                *id = file_id(&new);
                *file = new;
                self.reopen_failing = false;
            }
            Err(error) => {
                // Keep writing to the old file: better the wrong name than
                // lost lines. Retried at the next rotation check.
                if !self.reopen_failing {
                    tracing::warn!(
                        %error,
                        path = %path.display(),
                        "cannot reopen the audit log; still writing to the old file"
                    );
                }
                self.reopen_failing = true;
            }
        }
    }

    /// About once a second: reopen if the path was renamed or deleted (log
    /// rotation without SIGHUP), or if an earlier reopen failed. One `stat`.
    fn maybe_check_rotation(&mut self) {
        let Sink::File { path, id, .. } = &self.sink else {
            return;
        };
        if self.last_rotation_check.elapsed() < ROTATION_CHECK {
            return;
        }
        self.last_rotation_check = Instant::now();
        if self.reopen_failing || path_rotated(path, *id) {
            self.reopen();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// An in-memory sink that can fail and can accept only part of a write,
    /// to exercise the retry path without filling a disk.
    #[derive(Default)]
    pub(super) struct TestSink {
        pub data: Vec<u8>,
        /// Outcome of the next writes: `Err` fails the call, `Ok(n)` accepts
        /// at most n bytes. Empty: accept everything.
        pub script: VecDeque<Result<usize, io::ErrorKind>>,
        pub calls: usize,
    }

    impl TestSink {
        pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            match self.script.pop_front() {
                None => {
                    self.data.extend_from_slice(buf);
                    Ok(buf.len())
                }
                Some(Ok(max)) => {
                    let n = max.min(buf.len());
                    self.data.extend_from_slice(&buf[..n]);
                    Ok(n)
                }
                Some(Err(kind)) => Err(io::Error::from(kind)),
            }
        }
    }

    fn test_log(script: Vec<Result<usize, io::ErrorKind>>) -> (AuditLog, Arc<Mutex<TestSink>>) {
        let sink = Arc::new(Mutex::new(TestSink {
            script: script.into(),
            ..TestSink::default()
        }));
        let log =
            AuditLog::start(AuditSink::Stdout, Some(Sink::Test(Arc::clone(&sink))), 16).unwrap();
        (log, sink)
    }

    fn sample(i: usize) -> AuditRecord {
        AuditRecord {
            timestamp: AuditTime::now(),
            request_id: format!("req-{i}"),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            client_ip: "203.0.113.7".into(),
            method: "GET".into(),
            host: "api.example.com".into(),
            path: "/api/orders/42".into(),
            route: Some("orders".into()),
            decision: DECISION_ALLOW,
            reason: "allowed",
            rule: Some("readers".into()),
            enforced: true,
            identity: AuditIdentity::anonymous(),
            status: 200,
            duration_ms: 1.5,
            upstream_ms: Some(1.25),
            bytes_out: 512,
            credential: None,
            frontend: "proxy",
            mcp: None,
        }
    }

    fn identity_json(id: &AuditIdentity) -> serde_json::Value {
        let mut out = Vec::new();
        crate::audit_line::write_identity(id, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    fn lines(sink: &Arc<Mutex<TestSink>>) -> Vec<serde_json::Value> {
        let data = lock(sink).data.clone();
        let text = String::from_utf8(data).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "partial last line");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn timestamp_is_rfc3339_utc_with_microseconds() {
        let t = time::macros::datetime!(2026-11-22 16:41:30.123456789 UTC);
        assert_eq!(
            AuditTime::from(t).to_string(),
            "2026-11-22T16:41:30.123456Z"
        );
        let t = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        assert_eq!(
            AuditTime::from(t).to_string(),
            "2026-01-02T03:04:05.000000Z"
        );
        // Another offset is converted, not just relabelled.
        let t = time::macros::datetime!(2026-11-22 18:41:30.5 +02:00);
        assert_eq!(
            format!("\"{}\"", AuditTime::from(t)),
            "\"2026-11-22T16:41:30.500000Z\""
        );
        let epoch = AuditTime::from(SystemTime::UNIX_EPOCH);
        assert_eq!(epoch.to_string(), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn path_without_query_strips_query_and_fragment() {
        assert_eq!(path_without_query("/cb?access_token=abc"), "/cb");
        assert_eq!(path_without_query("/a/b"), "/a/b");
        assert_eq!(path_without_query("/a#frag?x"), "/a");
        assert_eq!(path_without_query("?x=1"), "");
        assert_eq!(path_without_query(""), "");
    }

    #[test]
    fn millis_rounds_to_microseconds() {
        assert_eq!(millis(Duration::from_nanos(12_345_678)), 12.345);
        assert_eq!(millis(Duration::ZERO), 0.0);
    }

    #[test]
    fn numbers_are_json_numbers() {
        for (status, bytes_out) in [(200, 512), (101, 0), (599, u64::MAX)] {
            let rec = AuditRecord {
                status,
                bytes_out,
                ..sample(1)
            };
            let mut line = Vec::new();
            crate::audit_line::write_record(&rec, &mut line);
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(v["status"], status);
            assert_eq!(v["bytes_out"], bytes_out);
            assert_eq!(v["duration_ms"], 1.5);
        }
    }

    /// SPEC §5: a bearer token in the query (implicit-flow callbacks, some
    /// websocket clients) must never reach the audit log.
    #[test]
    fn no_secret_reaches_the_line() {
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
        let uri = format!("/.portcullis/callback?access_token={token}&state=xyz");
        let identity = Identity {
            kind: IdentityKind::User,
            subject: "alice".into(),
            issuer: Some("https://idp.example.com".into()),
            email: Some("alice@example.com".into()),
            groups: vec!["admins".into()],
            claims: Arc::new(serde_json::json!({ "sub": "alice", "raw": token })),
            ..Identity::default()
        };
        let rec = AuditRecord {
            path: path_without_query(&uri).to_string(),
            identity: AuditIdentity::from_identity(&identity),
            ..sample(1)
        };
        let mut line = Vec::new();
        crate::audit_line::write_record(&rec, &mut line);
        let line = String::from_utf8(line).unwrap();
        assert!(!line.contains(token), "{line}");
        assert!(!line.contains("access_token"), "{line}");
        assert!(!line.contains('?'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/.portcullis/callback");
        assert_eq!(v["identity"]["sub"], "alice");
    }

    #[test]
    fn identity_mapping() {
        let workload = Identity {
            kind: IdentityKind::Workload,
            workload: Some("spiffe://example.org/ns/a/sa/b".into()),
            ..Identity::default()
        };
        let v = identity_json(&AuditIdentity::from_identity(&workload));
        assert_eq!(
            v,
            serde_json::json!({
                "type": "workload", "sub": null, "email": null, "issuer": null,
                "client_id": null, "groups": [], "workload": "spiffe://example.org/ns/a/sa/b"
            })
        );
        let v = identity_json(&AuditIdentity::from_identity(&Identity::anonymous()));
        assert_eq!(v["type"], "anonymous");
    }

    #[test]
    fn control_characters_cannot_split_a_line() {
        let (log, sink) = test_log(vec![]);
        log.record(AuditRecord {
            path: "/a\nb\r\n{\"forged\":1}".into(),
            host: "h\u{2028}x".into(),
            ..sample(0)
        });
        log.shutdown();
        let got = lines(&sink);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["path"], "/a\nb\r\n{\"forged\":1}");
    }

    /// A failing sink (disk full), then partial writes: every line arrives
    /// exactly once and whole, and nothing panics.
    #[test]
    fn write_errors_are_retried_without_loss_or_duplication() {
        use io::ErrorKind::{Interrupted, StorageFull};
        let (log, sink) = test_log(vec![
            Err(StorageFull),
            Err(StorageFull),
            Ok(7),
            Err(Interrupted),
            Ok(100),
            Err(StorageFull),
            Ok(1),
        ]);
        for i in 0..500 {
            log.record(sample(i));
        }
        log.flush();
        log.shutdown();
        let got = lines(&sink);
        assert_eq!(got.len(), 500);
        for (i, v) in got.iter().enumerate() {
            assert_eq!(v["request_id"], format!("req-{i}"));
        }
        assert_eq!(log.lines_written(), 500);
        assert_eq!(log.lines_lost(), 0);
        assert!(lock(&sink).calls >= 7);
    }

    /// A sink that never recovers does not hang shutdown forever; the loss is
    /// counted.
    #[test]
    fn permanently_failing_sink_gives_up_at_shutdown() {
        let (log, sink) = test_log(vec![Err(io::ErrorKind::StorageFull); 10_000]);
        for i in 0..100 {
            log.record(sample(i));
        }
        let start = Instant::now();
        log.shutdown();
        assert!(start.elapsed() < SHUTDOWN_RETRY + Duration::from_secs(3));
        assert_eq!(log.lines_lost(), 100);
        assert_eq!(log.lines_written(), 0);
        assert!(lock(&sink).data.is_empty());
        // Late records after shutdown: still no panic.
        log.record(sample(100));
    }

    #[test]
    fn record_after_shutdown_is_written_synchronously() {
        let (log, sink) = test_log(vec![]);
        log.record(sample(0));
        log.shutdown();
        log.shutdown();
        log.record(sample(1));
        log.reopen();
        log.flush();
        let got = lines(&sink);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1]["request_id"], "req-1");
        assert_eq!(log.lines_written(), 2);
    }

    #[test]
    fn handle_is_send_sync() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<AuditLog>();
    }
}
