//! A strict gate in front of hyper's HTTP/1 parser: request smuggling defence.
//!
//! hyper is lenient where a proxy must not be: it accepts bare-LF line endings,
//! and when a request carries both `Content-Length` and `Transfer-Encoding` it
//! silently drops the length. A proxy that forwards such a request may frame it
//! differently from the next hop, which is how requests get smuggled. So every
//! byte a client sends passes through [`GuardedIo`] first:
//!
//! - a request head is buffered whole (up to `max_header_bytes`) and checked
//!   before hyper sees any of it: CRLF line endings only, no NUL or control
//!   characters, no obs-fold, valid header names, at most one distinct
//!   `Content-Length`, `Transfer-Encoding` exactly `chunked` and never beside a
//!   `Content-Length`;
//! - the body that follows is framed by the same rules (length or chunked), so
//!   the next head starts exactly where hyper will expect it;
//! - HTTP/2 (prior knowledge or ALPN) and upgraded connections pass untouched:
//!   their framing leaves nothing to disagree about.
//!
//! A refused head never reaches hyper. Instead the guard records why in the
//! connection's [`Verdict`] and hands hyper a synthetic `GET` for
//! [`REJECTED_PATH`] with `Connection: close`, then end-of-stream. The service
//! sees the verdict and answers 400 (or 431) through the one error responder,
//! so the refusal gets the SPEC §6 body and an audit line like any other, and the
//! connection closes. Nothing of the refused request is forwarded.

use bytes::{Buf, BytesMut};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The path of the synthetic request that stands in for a refused one.
pub const REJECTED_PATH: &str = "/.portcullis/_rejected";

const SYNTHETIC_REQUEST: &[u8] =
    b"GET /.portcullis/_rejected HTTP/1.1\r\nhost: portcullis.invalid\r\nconnection: close\r\n\r\n";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A chunk-size line or trailer line longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;
/// How much is read from the socket at once while looking for a head's end.
const READ_CHUNK: usize = 8192;
/// How much is reserved while an idle connection waits for its next request.
const IDLE_READ: usize = 1024;

/// Why a request was refused before reaching hyper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A malformed or ambiguous head (smuggling shapes and garbage): 400.
    BadRequest(&'static str),
    /// A head larger than `max_header_bytes`: 431.
    HeadersTooLarge,
}

/// The per-connection mailbox between the guard and the service.
#[derive(Debug, Default)]
pub struct Verdict(Mutex<Option<Refusal>>);

impl Verdict {
    /// Takes the refusal that stands behind the current synthetic request, if any.
    /// Only a request for [`REJECTED_PATH`] may take it: a client that asks for that
    /// path itself finds nothing here and is treated like any other request.
    pub fn take(&self) -> Option<Refusal> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }

    fn set(&self, refusal: Refusal) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(refusal);
        }
    }
}

/// Limits the guard enforces.
#[derive(Debug, Clone, Copy)]
pub struct GuardLimits {
    /// Largest request head (request line + headers) accepted.
    pub max_head_bytes: usize,
    /// Time allowed to receive a whole head once it has started (and, for the first
    /// request of a connection, from the moment the connection opens): slowloris defence.
    pub header_read_timeout: Duration,
}

#[derive(Debug)]
enum State {
    /// Waiting for, or accumulating, a request head.
    Head { first: bool },
    /// Passing a body of known length.
    Length(u64),
    /// Passing a chunked body.
    Chunked(Chunk),
    /// HTTP/2 or an upgraded connection: no more inspection.
    Passthrough,
    /// A refusal was handed to hyper; the connection ends after it.
    Closed,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading a chunk-size line (size and optional extensions) up to CRLF.
    SizeLine,
    /// Inside chunk data with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines after the last chunk, until an empty line.
    Trailer,
}

/// An I/O stream that only lets well-formed HTTP/1 requests through. See the module docs.
pub struct GuardedIo<IO> {
    inner: IO,
    state: State,
    /// Bytes read from the socket and not yet judged.
    input: BytesMut,
    /// Bytes judged good and waiting for hyper to read them.
    output: BytesMut,
    limits: GuardLimits,
    deadline: Option<Pin<Box<Sleep>>>,
    verdict: Arc<Verdict>,
    inner_eof: bool,
}

impl<IO> GuardedIo<IO> {
    /// Wraps a fresh connection. The header timeout starts now: a connection that sends
    /// nothing is closed as surely as one that sends its head too slowly.
    pub fn new(inner: IO, limits: GuardLimits, verdict: Arc<Verdict>) -> Self {
        GuardedIo {
            inner,
            state: State::Head { first: true },
            input: BytesMut::new(),
            output: BytesMut::new(),
            limits,
            deadline: Some(Box::pin(tokio::time::sleep(limits.header_read_timeout))),
            verdict,
            inner_eof: false,
        }
    }

    /// The wrapped stream (for TLS details such as the peer certificate).
    pub fn inner(&self) -> &IO {
        &self.inner
    }

    fn refuse(&mut self, refusal: Refusal) {
        tracing::debug!(?refusal, "refusing request before it reaches the parser");
        self.verdict.set(refusal);
        self.input.clear();
        self.output.extend_from_slice(SYNTHETIC_REQUEST);
        self.state = State::Closed;
        self.deadline = None;
    }

    /// Judges as much of `input` as possible, moving approved bytes to `output`.
    /// Returns an error only for a broken body framing, where no clean answer can be
    /// given any more (hyper is mid-body): the connection is then cut.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.state {
                State::Passthrough => {
                    let all = self.input.split();
                    self.output.unsplit(all);
                    return Ok(());
                }
                State::Closed => {
                    self.input.clear();
                    return Ok(());
                }
                State::Length(remaining) => {
                    if self.input.is_empty() {
                        return Ok(());
                    }
                    let n = (remaining.min(self.input.len() as u64)) as usize;
                    let body = self.input.split_to(n);
                    self.output.unsplit(body);
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        self.next_head_state()
                    } else {
                        State::Length(left)
                    };
                }
                State::Chunked(chunk) => {
                    if self.input.is_empty() {
                        return Ok(());
                    }
                    if !self.process_chunked(chunk)? {
                        return Ok(());
                    }
                }
                State::Head { first } => {
                    if !self.process_head(first) {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn next_head_state(&mut self) -> State {
        // The next head's timer starts with its first byte (see `poll_read`), so an
        // idle keep-alive connection is not cut while its owner thinks.
        self.deadline = None;
        State::Head { first: false }
    }

    /// Returns true when progress was made and processing should continue.
    fn process_head(&mut self, first: bool) -> bool {
        // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request.
        while self.input.starts_with(b"\r\n") {
            self.input.advance(2);
        }
        if self.input.is_empty() {
            return false;
        }
        if first && H2_PREFACE.starts_with(&self.input[..self.input.len().min(H2_PREFACE.len())]) {
            if self.input.len() < H2_PREFACE.len() {
                return false; // could still be the preface: wait for more
            }
            self.state = State::Passthrough;
            self.deadline = None;
            return true;
        }
        if self.deadline.is_none() {
            self.deadline = Some(Box::pin(tokio::time::sleep(
                self.limits.header_read_timeout,
            )));
        }
        let Some(end) = find_head_end(&self.input) else {
            if self.input.len() > self.limits.max_head_bytes {
                self.refuse(Refusal::HeadersTooLarge);
                return true;
            }
            // A bare LF can end a head for a lenient parser; refuse it as soon as seen
            // rather than waiting for a CRLFCRLF that may never come.
            if let Err(why) = check_line_endings(&self.input) {
                self.refuse(Refusal::BadRequest(why));
                return true;
            }
            return false;
        };
        if end > self.limits.max_head_bytes {
            self.refuse(Refusal::HeadersTooLarge);
            return true;
        }
        match judge_head(&self.input[..end]) {
            Ok(framing) => {
                let head = self.input.split_to(end);
                self.output.unsplit(head);
                self.deadline = None;
                self.state = match framing {
                    Framing::None => State::Head { first: false },
                    Framing::Length(n) => State::Length(n),
                    Framing::Chunked => State::Chunked(Chunk::SizeLine),
                    Framing::Upgrade => State::Passthrough,
                };
                if matches!(self.state, State::Length(0)) {
                    self.state = State::Head { first: false };
                }
            }
            Err(why) => self.refuse(Refusal::BadRequest(why)),
        }
        true
    }

    /// Advances the chunked-body state machine. Returns true when it consumed input and
    /// the outer loop should continue.
    fn process_chunked(&mut self, chunk: Chunk) -> io::Result<bool> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
        match chunk {
            Chunk::SizeLine => {
                let Some(lf) = self.input.iter().position(|&b| b == b'\n') else {
                    if self.input.len() > MAX_CHUNK_LINE {
                        return Err(bad("chunk size line too long"));
                    }
                    return Ok(false);
                };
                let line = &self.input[..lf];
                let Some(line) = line.strip_suffix(b"\r") else {
                    return Err(bad("bare LF in chunk size line"));
                };
                let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
                let size = parse_hex(size_text).ok_or_else(|| bad("invalid chunk size"))?;
                if line.iter().any(|&b| b == 0 || b == b'\r') {
                    return Err(bad("control character in chunk line"));
                }
                let taken = self.input.split_to(lf + 1);
                self.output.unsplit(taken);
                self.state = State::Chunked(if size == 0 {
                    Chunk::Trailer
                } else {
                    Chunk::Data(size)
                });
            }
            Chunk::Data(remaining) => {
                let n = (remaining.min(self.input.len() as u64)) as usize;
                let data = self.input.split_to(n);
                self.output.unsplit(data);
                let left = remaining - n as u64;
                self.state = State::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
            }
            Chunk::DataEnd => {
                if self.input.len() < 2 {
                    return Ok(false);
                }
                if &self.input[..2] != b"\r\n" {
                    return Err(bad("chunk data not followed by CRLF"));
                }
                let crlf = self.input.split_to(2);
                self.output.unsplit(crlf);
                self.state = State::Chunked(Chunk::SizeLine);
            }
            Chunk::Trailer => {
                let Some(lf) = self.input.iter().position(|&b| b == b'\n') else {
                    if self.input.len() > MAX_CHUNK_LINE {
                        return Err(bad("trailer line too long"));
                    }
                    return Ok(false);
                };
                let line = &self.input[..lf];
                let Some(line) = line.strip_suffix(b"\r") else {
                    return Err(bad("bare LF in trailer"));
                };
                if line.iter().any(|&b| b == 0 || b == b'\r') {
                    return Err(bad("control character in trailer"));
                }
                let last = line.is_empty();
                let taken = self.input.split_to(lf + 1);
                self.output.unsplit(taken);
                if last {
                    self.state = self.next_head_state();
                }
            }
        }
        Ok(true)
    }
}

/// How the body after an accepted head is framed.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Upgrade,
}

/// Position just past the `\r\n\r\n` that ends a head.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Every LF must follow a CR and every CR must precede an LF.
fn check_line_endings(buf: &[u8]) -> Result<(), &'static str> {
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'\n' if i == 0 || buf[i - 1] != b'\r' => return Err("bare LF in request head"),
            b'\r' if i + 1 < buf.len() && buf[i + 1] != b'\n' => {
                return Err("bare CR in request head")
            }
            0 => return Err("NUL byte in request head"),
            _ => {}
        }
    }
    Ok(())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_hex(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in text {
        let d = (b as char).to_digit(16)?;
        n = n.checked_mul(16)?.checked_add(u64::from(d))?;
    }
    Some(n)
}

/// Checks a complete head (ending in CRLFCRLF) and says how its body is framed.
fn judge_head(head: &[u8]) -> Result<Framing, &'static str> {
    check_line_endings(head)?;
    // Drop the final empty line; every remaining line ends in CRLF.
    let body = &head[..head.len() - 4];
    let mut lines = body
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().ok_or("empty request")?;
    let http10 = judge_request_line(request_line)?;

    let mut content_length: Option<u64> = None;
    let mut te_seen = false;
    let mut upgrade = false;
    for line in lines {
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err("obsolete line folding in header");
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or("header line without colon")?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err("invalid header name");
        }
        let value = trim_ows(&line[colon + 1..]);
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err("control character in header value");
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            // A list (`5, 5`) or repeated header must agree on one value.
            for part in value.split(|&b| b == b',') {
                let part = trim_ows(part);
                if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                    return Err("invalid Content-Length");
                }
                let n: u64 = std::str::from_utf8(part)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or("invalid Content-Length")?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err("conflicting Content-Length headers");
                }
                content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only a single, plain `chunked` is accepted: every other coding, list,
            // repetition or spelling is an ambiguity some hop will resolve differently.
            if te_seen || !value.eq_ignore_ascii_case(b"chunked") {
                return Err("unsupported or obfuscated Transfer-Encoding");
            }
            te_seen = true;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        }
    }
    if te_seen && content_length.is_some() {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if te_seen && http10 {
        return Err("Transfer-Encoding in an HTTP/1.0 request");
    }
    Ok(if upgrade && !http10 {
        Framing::Upgrade
    } else if te_seen {
        Framing::Chunked
    } else {
        match content_length {
            Some(n) => Framing::Length(n),
            None => Framing::None,
        }
    })
}

/// `METHOD SP request-target SP HTTP/1.x`. Returns true for HTTP/1.0.
fn judge_request_line(line: &[u8]) -> Result<bool, &'static str> {
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().ok_or("invalid request line")?;
    let target = parts.next().ok_or("invalid request line")?;
    let version = parts.next().ok_or("invalid request line")?;
    if parts.next().is_some() {
        return Err("invalid request line");
    }
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err("invalid method");
    }
    if target.is_empty() || target.iter().any(|&b| b <= 0x20 || b == 0x7f) {
        return Err("invalid request target");
    }
    match version {
        b"HTTP/1.1" => Ok(false),
        b"HTTP/1.0" => Ok(true),
        _ => Err("unsupported HTTP version"),
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

impl<IO: AsyncRead + Unpin> AsyncRead for GuardedIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                if this.output.is_empty() {
                    // Give the buffer back: an idle keep-alive connection should cost
                    // as little memory as possible (10k of them is a normal day).
                    this.output = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            match this.state {
                // Not end-of-stream: hyper would take that for the client hanging up and
                // drop the answer. The synthetic request says `connection: close`, so
                // hyper closes the connection itself once the 400 is written.
                State::Closed => return Poll::Pending,
                // Fast paths: nothing to judge, so read straight into hyper's buffer.
                State::Passthrough if this.input.is_empty() => {
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                State::Length(remaining) if this.input.is_empty() => {
                    let limit = (remaining.min(buf.remaining() as u64)) as usize;
                    let mut limited = ReadBuf::new(buf.initialize_unfilled_to(limit));
                    match Pin::new(&mut this.inner).poll_read(cx, &mut limited) {
                        Poll::Ready(Ok(())) => {
                            let n = limited.filled().len();
                            buf.advance(n);
                            if n > 0 {
                                let left = remaining - n as u64;
                                this.state = if left == 0 {
                                    this.next_head_state()
                                } else {
                                    State::Length(left)
                                };
                            }
                            return Poll::Ready(Ok(()));
                        }
                        other => return other,
                    }
                }
                _ => {}
            }
            this.process()?;
            if !this.output.is_empty() {
                continue;
            }
            if this.inner_eof {
                return Poll::Ready(Ok(()));
            }
            if let Some(deadline) = this.deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request head not received in time",
                    )));
                }
            }
            // Read into spare capacity: zeroing a fresh buffer for every read showed up
            // as a top symbol in the benchmark profile.
            // A connection waiting for its next head is usually idle: keep its buffer
            // small until bytes arrive. Bodies and partial heads read in full chunks.
            let waiting_idle = this.input.is_empty() && matches!(this.state, State::Head { .. });
            if waiting_idle && this.input.capacity() > IDLE_READ {
                this.input = BytesMut::new();
            }
            this.input
                .reserve(if waiting_idle { IDLE_READ } else { READ_CHUNK });
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.input) {
                Poll::Ready(Ok(0)) => this.inner_eof = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for GuardedIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> GuardLimits {
        GuardLimits {
            max_head_bytes: 1024,
            header_read_timeout: Duration::from_secs(5),
        }
    }

    /// Feeds `input` through a guard and returns what hyper would read, plus the verdict.
    async fn pass(input: &[u8]) -> (Vec<u8>, Option<Refusal>) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let verdict = Arc::new(Verdict::default());
        let mut guard = GuardedIo::new(server, limits(), verdict.clone());
        let mut out = Vec::new();
        // After a refusal the guard never signals end-of-stream (hyper must write the
        // 400 first), so stop reading once nothing more comes.
        let _ = tokio::time::timeout(Duration::from_millis(200), guard.read_to_end(&mut out)).await;
        (out, verdict.take())
    }

    #[test]
    fn heads_are_judged() {
        let ok = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(judge_head(ok), Ok(Framing::None));
        let cl = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n";
        assert_eq!(judge_head(cl), Ok(Framing::Length(5)));
        let te = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n";
        assert_eq!(judge_head(te), Ok(Framing::Chunked));
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding:\x0bchunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: b\0c\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: b\rc\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                judge_head(bad).is_err(),
                "{:?} should be refused",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn good_requests_pass_unchanged_with_bodies() {
        let input = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
        let (out, verdict) = pass(input).await;
        assert_eq!(verdict, None);
        assert_eq!(out, input.to_vec());
    }

    #[tokio::test]
    async fn smuggled_second_request_is_judged_as_a_head() {
        // The body of the first request is exactly its Content-Length; what follows is a
        // head in its own right, and this one is malformed.
        let input = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let (out, verdict) = pass(input).await;
        assert!(matches!(verdict, Some(Refusal::BadRequest(_))));
        let expected = [
            &b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nok"[..],
            SYNTHETIC_REQUEST,
        ]
        .concat();
        assert_eq!(out, expected);
    }

    #[tokio::test]
    async fn refused_head_becomes_the_synthetic_request_and_nothing_else() {
        let (out, verdict) = pass(b"GET / HTTP/1.1\nHost: a\n\nGET /x HTTP/1.1\r\n\r\n").await;
        assert_eq!(
            verdict,
            Some(Refusal::BadRequest("bare LF in request head"))
        );
        assert_eq!(out, SYNTHETIC_REQUEST.to_vec());
    }

    #[tokio::test]
    async fn oversized_head_is_431() {
        let mut input = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', 2000));
        input.extend_from_slice(b"\r\n\r\n");
        let (out, verdict) = pass(&input).await;
        assert_eq!(verdict, Some(Refusal::HeadersTooLarge));
        assert_eq!(out, SYNTHETIC_REQUEST.to_vec());
    }

    #[tokio::test]
    async fn h2_preface_passes_through() {
        let mut input = H2_PREFACE.to_vec();
        input.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00 binary \n\n");
        let (out, verdict) = pass(&input).await;
        assert_eq!(verdict, None);
        assert_eq!(out, input);
    }

    #[tokio::test]
    async fn broken_chunk_framing_cuts_the_connection() {
        let (mut client, server) = tokio::io::duplex(4096);
        client
            .write_all(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let mut guard = GuardedIo::new(server, limits(), Arc::new(Verdict::default()));
        let mut out = Vec::new();
        assert!(guard.read_to_end(&mut out).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_head_times_out() {
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(b"GET / HTTP/1.1\r\nX-A: ").await.unwrap();
        let mut guard = GuardedIo::new(server, limits(), Arc::new(Verdict::default()));
        let mut out = [0u8; 64];
        let err = guard.read(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }
}
