//! The writer thread's side of the audit log: it takes records off the
//! queue, serializes them into a batch and writes the batch to the sink,
//! retrying a failing sink with backoff (see the module above on errors).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sink::{file_id, open_append, path_rotated, Sink};
use super::AuditRecord;
use super::{Msg, Shared};
use super::{BATCH_BYTES, BATCH_PAUSE, INITIAL_BACKOFF, MAX_BACKOFF, MAX_PENDING_BYTES};
use super::{MAX_SLEEP, ROTATION_CHECK, SHUTDOWN_RETRY};

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
pub(super) struct Writer {
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
    pub(super) fn new(sink: Sink, shared: Arc<Shared>) -> Self {
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
    pub(super) fn run(mut self, rx: Receiver<Msg>) -> Writer {
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

    pub(super) fn handle(&mut self, msg: Msg) {
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
    pub(super) fn push(&mut self, rec: &AuditRecord) {
        crate::audit_line::write_record(rec, &mut self.pending);
        self.pending.push(b'\n');
        self.pending_lines += 1;
    }

    /// The synchronous path used after shutdown: append and write at once.
    pub(super) fn write_now(&mut self, rec: &AuditRecord) {
        self.maybe_check_rotation();
        self.push(rec);
        if !self.flush_now() && self.pending.len() >= MAX_PENDING_BYTES {
            self.give_up();
        }
    }

    /// When the next wake-up is due even if nothing is queued.
    pub(super) fn next_wakeup(&self) -> Duration {
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
    pub(super) fn wait_for_sink(&mut self) {
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
    pub(super) fn try_flush(&mut self) {
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
    pub(super) fn flush_now(&mut self) -> bool {
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
    pub(super) fn give_up(&mut self) {
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
    pub(super) fn finish(&mut self) {
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
    pub(super) fn reopen(&mut self) {
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
    pub(super) fn maybe_check_rotation(&mut self) {
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
