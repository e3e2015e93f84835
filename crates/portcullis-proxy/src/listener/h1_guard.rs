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

use crate::scan::{is_tchar, position};
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
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
/// hyper's limit on header lines (`DEFAULT_MAX_HEADERS`); past it hyper would
/// answer a bare 431, without the JSON error and audit line, so the guard
/// refuses first, the same way.
const MAX_HEADERS: usize = 100;
/// The reason [`judge_head`] gives for more than [`MAX_HEADERS`] lines: a 431.
const TOO_MANY_HEADERS: &str = "too many header lines";
/// A chunk-size line or trailer line longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;
/// How much is read from the socket at once while looking for a head's end.
const READ_CHUNK: usize = 8192;

/// Why a request was refused before reaching hyper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A malformed or ambiguous head (smuggling shapes and garbage): 400.
    BadRequest(&'static str),
    /// A head larger than `max_header_bytes`: 431.
    HeadersTooLarge,
}

/// A refused head: why, and what of it can be told in its audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Why it was refused.
    pub refusal: Refusal,
    /// The method of its request line, when that is a method token.
    pub method: Option<http::Method>,
    /// The host name of its one `Host` header, when it is one (see
    /// [`crate::authority::name_for_audit`]).
    pub host: Option<String>,
}

/// The per-connection mailbox between the guard and the service.
#[derive(Debug, Default)]
pub struct Verdict(Mutex<Option<Refused>>);

impl Verdict {
    /// Takes the refusal that stands behind the current synthetic request, if any.
    /// Only a request for [`REJECTED_PATH`] may take it: a client that asks for that
    /// path itself finds nothing here and is treated like any other request.
    pub fn take(&self) -> Option<Refused> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }

    fn set(&self, refused: Refused) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(refused);
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
    /// How much of `input` an incomplete head has already been searched and checked
    /// for: no head end and no bad line ending in it. A head that arrives in pieces is
    /// then looked at once, not once per piece. Zero whenever `input` loses bytes at
    /// its front.
    head_scanned: usize,
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
            head_scanned: 0,
        }
    }

    /// The wrapped stream (for TLS details such as the peer certificate).
    pub fn inner(&self) -> &IO {
        &self.inner
    }

    /// True between two HTTP/1 requests: at least one request has passed whole,
    /// nothing of the next has arrived, and the connection is neither HTTP/2 nor
    /// upgraded nor refused. Only then can hyper's connection state be dropped
    /// and rebuilt without losing a byte (see `listener::hibernate`).
    pub fn between_requests(&self) -> bool {
        matches!(self.state, State::Head { first: false })
            && self.input.is_empty()
            && self.output.is_empty()
    }

    fn refuse(&mut self, refusal: Refusal) {
        tracing::debug!(?refusal, "refusing request before it reaches the parser");
        let limit = self.input.len().min(self.limits.max_head_bytes);
        let (method, host) = seen_method_and_host(&self.input[..limit]);
        self.verdict.set(Refused {
            refusal,
            method,
            host,
        });
        self.input.clear();
        self.head_scanned = 0;
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
            self.head_scanned = 0;
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
        let scanned = self.head_scanned.min(self.input.len());
        let Some(end) = find_head_end(&self.input, scanned.saturating_sub(3)) else {
            if self.input.len() > self.limits.max_head_bytes {
                self.refuse(Refusal::HeadersTooLarge);
                return true;
            }
            // A bare LF can end a head for a lenient parser; refuse it as soon as seen
            // rather than waiting for a CRLFCRLF that may never come.
            if let Err(why) = check_line_endings(&self.input, scanned.saturating_sub(1)) {
                self.refuse(Refusal::BadRequest(why));
                return true;
            }
            self.head_scanned = self.input.len();
            return false;
        };
        self.head_scanned = 0;
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
            Err(TOO_MANY_HEADERS) => self.refuse(Refusal::HeadersTooLarge),
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

/// Position of the first `needle` in `s`.
fn find_byte(s: &[u8], needle: u8) -> Option<usize> {
    position(s, |b| b == needle)
}

/// Length of the run at the start of `s` of bytes that are at least `floor` and not
/// DEL: the visible characters, obs-text and (with `floor` 0x20) spaces a header value
/// is made of, or (with `floor` 0x21) those of a request target.
fn plain_run(s: &[u8], floor: u8) -> usize {
    position(s, |b| b < floor || b == 0x7f).unwrap_or(s.len())
}

/// Position just past the first `\r\n\r\n` in `buf` that starts at `from` or later.
/// A caller that already searched a shorter `buf` passes where that search could no
/// longer see a whole `\r\n\r\n` (three bytes before its end), so bytes that arrive a
/// few at a time are not searched again and again.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    // Each LF is checked for the three bytes before it: LFs are rare (one per line),
    // so this beats comparing a four-byte window at every position.
    let mut at = from + 3;
    while let Some(lf) = buf.get(at..).and_then(|rest| find_byte(rest, b'\n')) {
        let lf = at + lf;
        if buf[lf - 3..lf] == *b"\r\n\r" {
            return Some(lf + 1);
        }
        at = lf + 1;
    }
    None
}

/// Every LF must follow a CR and every CR must precede an LF (a CR that ends `buf` may
/// still get its LF), and there must be no NUL. Only positions from `from` on are
/// judged, against the whole of `buf`: a caller that found a shorter `buf` clean
/// passes one less than that length, the last byte being a CR whose LF was not there
/// yet.
fn check_line_endings(buf: &[u8], from: usize) -> Result<(), &'static str> {
    let mut at = from;
    // Stops at every byte below 0x0e, not only at NUL, CR and LF: one comparison the
    // compiler vectorizes (a list of three it does not); the rare others (tab) are
    // passed over below.
    while let Some(i) = buf.get(at..).and_then(|rest| position(rest, |b| b < 0x0e)) {
        let i = at + i;
        match buf[i] {
            b'\n' if i == 0 || buf[i - 1] != b'\r' => return Err("bare LF in request head"),
            b'\r' if i + 1 < buf.len() && buf[i + 1] != b'\n' => {
                return Err("bare CR in request head")
            }
            0 => return Err("NUL byte in request head"),
            _ => {}
        }
        at = i + 1;
    }
    Ok(())
}

/// Length of the run of `tchar`s at the start of `s`.
fn tchar_run(s: &[u8]) -> usize {
    s.iter().position(|&b| !is_tchar(b)).unwrap_or(s.len())
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
///
/// The rules are applied in this order, and the first one broken is the answer: line
/// endings and NUL anywhere in the head ([`check_line_endings`]), then the request
/// line, then each header line in turn (folding, colon, name, value, then what the
/// header means), then the headers taken together.
///
/// A well-formed head is checked in a single pass that finds the line ends while it
/// checks the lines (see [`judge_lines`]). That pass stops at the first thing it does
/// not like, which may be a bad line ending further on than the rule of the first line
/// it trips over; so when it refuses, the line endings of the whole head are checked
/// once more to give the reason the rules' order gives.
/// What a refused head's audit line can say of it: the request line's method
/// and the host of its only `Host` header. Lines end at LF (a bare LF is one
/// of the things refused); anything that is not a method token or a host name
/// is left out, so the audit line holds only what the proxy could have judged.
fn seen_method_and_host(head: &[u8]) -> (Option<http::Method>, Option<String>) {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let method = lines
        .next()
        .and_then(|line| line.split(|&b| b == b' ').next())
        .filter(|m| !m.is_empty() && m.len() <= 32)
        .and_then(|m| http::Method::from_bytes(m).ok());
    let mut hosts = lines
        .take_while(|line| !line.is_empty())
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let (name, value) = line.split_at(colon);
            name.eq_ignore_ascii_case(b"host").then(|| &value[1..])
        });
    let host = match (hosts.next(), hosts.next()) {
        (Some(value), None) => std::str::from_utf8(value)
            .ok()
            .and_then(|v| crate::authority::name_for_audit(v.trim_matches([' ', '\t']))),
        _ => None,
    };
    (method, host)
}

fn judge_head(head: &[u8]) -> Result<Framing, &'static str> {
    judge_lines(head).map_err(|why| check_line_endings(head, 0).err().unwrap_or(why))
}

/// [`judge_head`] assuming the head's line endings are sound: where they are not, this
/// refuses with whatever reason it came to first.
fn judge_lines(head: &[u8]) -> Result<Framing, &'static str> {
    // Drop the final empty line; every remaining line ends in CRLF but the last.
    // `find_head_end` delimits every head judged; anything else is no head at all.
    let body = head
        .strip_suffix(b"\r\n\r\n")
        .ok_or("invalid request line")?;
    let (http10, mut next_line) = judge_request_line_fast(body)?;

    let mut content_length: Option<u64> = None;
    let mut te_seen = false;
    let mut upgrade = false;
    let mut lines = 0;
    // `None` once the last line (which has no CRLF of its own) has been judged.
    while let Some(start) = next_line {
        lines += 1;
        if lines > MAX_HEADERS {
            return Err(TOO_MANY_HEADERS);
        }
        let line = &body[start..];
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err("obsolete line folding in header");
        }
        let colon = tchar_run(line);
        if colon == 0 || line.get(colon) != Some(&b':') {
            return Err(bad_header_start(line));
        }
        let name = &line[..colon];
        // The value runs to the line's end, which is found by the same scan that
        // checks the value for control characters: CR is one of them.
        let mut end = colon + 1;
        next_line = loop {
            end += plain_run(&line[end..], 0x20);
            match &line[end..] {
                [] => break None,
                [b'\t', ..] => end += 1,
                [b'\r', b'\n', ..] => break Some(start + end + 2),
                _ => return Err("control character in header value"),
            }
        };
        let value = trim_ows(&line[colon + 1..end]);
        if name.eq_ignore_ascii_case(b"content-length") {
            // A list, even `5, 5`, is refused: hyper would answer it with a bare
            // 400, without the JSON error and audit line. Repeated headers must
            // agree on one value.
            if value.contains(&b',') {
                return Err("Content-Length list");
            }
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

/// Why a header line that does not start with `name:` is refused: it depends on
/// whether there is a colon anywhere in it. `rest` starts with the line.
fn bad_header_start(rest: &[u8]) -> &'static str {
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    if line.contains(&b':') {
        "invalid header name"
    } else {
        "header line without colon"
    }
}

/// Recognises a well-formed request line at the start of `body` in one pass: says
/// whether it is HTTP/1.0 and where the next line starts (`None` if there is none).
/// Anything else is handed to [`judge_request_line`] for the reason.
fn judge_request_line_fast(body: &[u8]) -> Result<(bool, Option<usize>), &'static str> {
    let method = tchar_run(body);
    let target_start = method + 1;
    let target = body
        .get(target_start..)
        .map_or(0, |rest| plain_run(rest, 0x21));
    let version_start = target_start + target + 1;
    let end = version_start + 8;
    if method > 0
        && target > 0
        && body[target_start..target_start + target].is_ascii()
        && body.get(method) == Some(&b' ')
        && body.get(target_start + target) == Some(&b' ')
    {
        let http10 = match body.get(version_start..end) {
            Some(b"HTTP/1.1") => Some(false),
            Some(b"HTTP/1.0") => Some(true),
            _ => None,
        };
        let next_line = match body.get(end..) {
            Some([]) => Some(None),
            Some([b'\r', b'\n', ..]) => Some(Some(end + 2)),
            _ => None,
        };
        if let (Some(http10), Some(next_line)) = (http10, next_line) {
            return Ok((http10, next_line));
        }
    }
    let line = body.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // The line read as a whole can only pass where the one pass above failed on a bad
    // line ending, and `judge_head` reports those.
    Err(judge_request_line(line)
        .err()
        .unwrap_or("invalid request line"))
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
    if target.is_empty() || target.iter().any(|&b| b <= 0x20 || b >= 0x7f) {
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
            // A connection waiting for its next head is usually idle, and 10k idle
            // connections are a normal day: it holds no buffer at all. The next head
            // is read into the stack in one go and only what arrived is kept (a
            // small idle buffer made every head with a bearer token take two reads
            // and a reallocation).
            let waiting_idle = this.input.is_empty() && matches!(this.state, State::Head { .. });
            if waiting_idle {
                this.input = BytesMut::new();
                let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
                let mut chunk = ReadBuf::uninit(&mut stack);
                match Pin::new(&mut this.inner).poll_read(cx, &mut chunk) {
                    Poll::Ready(Ok(())) if chunk.filled().is_empty() => this.inner_eof = true,
                    Poll::Ready(Ok(())) => this.input.extend_from_slice(chunk.filled()),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            // Read into spare capacity: zeroing a fresh buffer for every read showed up
            // as a top symbol in the benchmark profile.
            this.input.reserve(READ_CHUNK);
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
        (out, verdict.take().map(|r| r.refusal))
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

    #[test]
    fn a_refused_head_tells_only_a_method_token_and_one_host_name() {
        let seen = |head: &[u8]| seen_method_and_host(head);
        assert_eq!(
            seen(b"PATCH /x HTTP/1.1\r\nX: y\r\nhOsT:  Api.Example:81 \r\n\r\n"),
            (Some(http::Method::PATCH), Some("api.example".to_string()))
        );
        // Bare LF lines are read too (they are one of the things refused).
        assert_eq!(
            seen(b"GET / HTTP/1.1\nHost: a\n\n"),
            (Some(http::Method::GET), Some("a".to_string()))
        );
        // Cut short (a 431 before the head ended): what arrived is read.
        assert_eq!(
            seen(b"PUT /x HTTP/1.1\r\nHost: a\r\nX-Big: aaa"),
            (Some(http::Method::PUT), Some("a".to_string()))
        );
        for head in [
            &b"G(T / HTTP/1.1\r\nHost: a b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x@a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: \xff\r\n\r\n",
            b"\r\n",
            b"",
        ] {
            let (method, host) = seen(head);
            assert!(
                method.is_none() || method == Some(http::Method::GET),
                "{head:?}"
            );
            assert_eq!(host, None, "{head:?}");
        }
        // Past the blank line is the body, not a header.
        assert_eq!(seen(b"GET / HTTP/1.1\r\n\r\nHost: a\r\n").1, None);
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

    /// The guard's rules as they were written before the single-pass scan, kept
    /// word for word: the plain statement that the fast code must agree with.
    mod reference {
        /// Position just past the `\r\n\r\n` that ends a head.
        pub(super) fn find_head_end(buf: &[u8]) -> Option<usize> {
            buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
        }

        /// Every LF must follow a CR and every CR must precede an LF.
        pub(super) fn check_line_endings(buf: &[u8]) -> Result<(), &'static str> {
            for (i, &b) in buf.iter().enumerate() {
                match b {
                    b'\n' if i == 0 || buf[i - 1] != b'\r' => {
                        return Err("bare LF in request head")
                    }
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

        /// Checks a complete head (ending in CRLFCRLF) and says how its body is framed.
        pub(super) fn judge_head(head: &[u8]) -> Result<super::Framing, &'static str> {
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
            for (n, line) in lines.enumerate() {
                if n >= super::MAX_HEADERS {
                    return Err(super::TOO_MANY_HEADERS);
                }
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
                    if value.contains(&b',') {
                        return Err("Content-Length list");
                    }
                    for part in value.split(|&b| b == b',') {
                        let part = trim_ows(part);
                        if part.is_empty()
                            || part.len() > 19
                            || !part.iter().all(u8::is_ascii_digit)
                        {
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
                super::Framing::Upgrade
            } else if te_seen {
                super::Framing::Chunked
            } else {
                match content_length {
                    Some(n) => super::Framing::Length(n),
                    None => super::Framing::None,
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
            if target.is_empty() || target.iter().any(|&b| b <= 0x20 || b >= 0x7f) {
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
    }

    /// A small deterministic generator (xorshift64*): enough to shake the scans, with
    /// no dependency and a failure that reproduces.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }
    }

    /// Heads (without their final CRLFCRLF) that touch every rule, good and bad.
    const SEED_BODIES: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a",
        b"GET /a/b?c=d HTTP/1.0\r\nHost: a\r\nAccept: */*",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5, 5",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-A:\tb c\t",
        b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked",
        b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked",
        b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade",
        b"GET /chat HTTP/1.0\r\nUpgrade: websocket\r\nContent-Length: 0",
        b"GET / HTTP/1.1\r\nAuthorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ\r\nX-Y: \x80\xff obs-text",
        b"GET / HTTP/1.1\r\nX-Empty:\r\nX-Spaces:   \r\n!#$%&'*+-.^_`|~09az: v",
        b"GET / HTTP/1.1\r\nX-A: b\r\n c",
        b"GET / HTTP/1.1\r\nX-A b\r\n: c",
        b"PUT /\x80 HTTP/1.1\r\nContent-Length: 18446744073709551615",
        b"PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999",
        b"GET / HTTP/1.1\r\nTransfer-Encoding : chunked",
        b"GET http://a/ HTTP/1.1\r\n\r\nHost: a",
    ];

    /// Bytes that matter to some rule: line ends, NUL and other controls, DEL, the
    /// separators, tchar edges, obs-text.
    const INTERESTING: &[u8] = b"\r\n\0\x01\t\x0b\x1f\x7f\x80\xff :,;\"(/09AZaz-!~HTP1.";

    fn head_of(body: &[u8]) -> Vec<u8> {
        [body, b"\r\n\r\n"].concat()
    }

    #[test]
    fn tchar_table_matches_the_definition() {
        for b in 0..=255u8 {
            let defined = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), defined, "byte {b:#04x}");
        }
    }

    #[test]
    fn scans_agree_with_byte_by_byte_scans() {
        // Each byte value at each place in buffers long enough to have two whole
        // blocks and a tail, alone or with a second stop byte, over fillers on either
        // side of the thresholds.
        for filler in [b'a', b' ', 0xff, b'\t'] {
            for len in 0..36 {
                for at in 0..len {
                    for v in 0..=255u8 {
                        for second in [None, Some((len - 1, b'\r')), Some((at / 2, 0x7f))] {
                            let mut s = vec![filler; len];
                            s[at] = v;
                            if let Some((p, b)) = second {
                                s[p] = b;
                            }
                            let plain = |floor: u8| {
                                s.iter()
                                    .position(|&b| b < floor || b == 0x7f)
                                    .unwrap_or(s.len())
                            };
                            assert_eq!(plain_run(&s, 0x20), plain(0x20), "{s:?}");
                            assert_eq!(plain_run(&s, 0x21), plain(0x21), "{s:?}");
                            assert_eq!(
                                find_byte(&s, b'\n'),
                                s.iter().position(|&b| b == b'\n'),
                                "{s:?}"
                            );
                            assert_eq!(
                                check_line_endings(&s, 0),
                                reference::check_line_endings(&s),
                                "{s:?}"
                            );
                            assert_eq!(
                                tchar_run(&s),
                                s.iter().take_while(|&&b| is_tchar(b)).count()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn more_header_lines_than_hyper_takes_are_refused_as_too_large() {
        let head = |lines: usize| {
            let fields: String = (0..lines).map(|i| format!("X-{i}: v\r\n")).collect();
            format!("GET / HTTP/1.1\r\n{fields}\r\n").into_bytes()
        };
        assert!(judge_head(&head(MAX_HEADERS)).is_ok());
        assert_eq!(judge_head(&head(MAX_HEADERS + 1)), Err(TOO_MANY_HEADERS));
        assert_eq!(
            reference::judge_head(&head(MAX_HEADERS)),
            judge_head(&head(MAX_HEADERS))
        );
        assert_eq!(
            reference::judge_head(&head(MAX_HEADERS + 1)),
            Err(TOO_MANY_HEADERS)
        );
    }

    /// Every mutation of every seed that changes, inserts or deletes one byte, then many
    /// that do several at once: the verdict, reason included, must be the reference's.
    #[test]
    fn judge_head_agrees_with_the_reference() {
        let check = |body: &[u8]| {
            let head = head_of(body);
            assert_eq!(
                judge_head(&head),
                reference::judge_head(&head),
                "{:?}",
                String::from_utf8_lossy(&head)
            );
        };
        for seed in SEED_BODIES {
            check(seed);
            for at in 0..=seed.len() {
                if at < seed.len() {
                    for v in 0..=255u8 {
                        let mut body = seed.to_vec();
                        body[at] = v;
                        check(&body);
                    }
                    let mut body = seed.to_vec();
                    body.remove(at);
                    check(&body);
                }
                for &v in INTERESTING {
                    let mut body = seed.to_vec();
                    body.insert(at, v);
                    check(&body);
                }
            }
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200_000 {
            let mut body = SEED_BODIES[rng.below(SEED_BODIES.len())].to_vec();
            for _ in 0..1 + rng.below(4) {
                let byte = if rng.below(4) == 0 {
                    rng.below(256) as u8
                } else {
                    INTERESTING[rng.below(INTERESTING.len())]
                };
                let at = rng.below(body.len() + 1);
                match rng.below(3) {
                    0 if at < body.len() => body[at] = byte,
                    1 if at < body.len() => {
                        body.remove(at);
                    }
                    _ => body.insert(at, byte),
                }
            }
            check(&body);
        }
    }

    /// The guard resumes its search for a head's end and its line-ending check where
    /// the last read left them: resumed, they must find what a search from scratch finds.
    #[test]
    fn resumed_scans_agree_with_whole_scans() {
        let mut rng = Rng(7);
        let mut buffers: Vec<Vec<u8>> = SEED_BODIES
            .iter()
            .map(|b| [head_of(b).as_slice(), b"GET / HTTP/1.1\r\n\r\n"].concat())
            .collect();
        for _ in 0..1000 {
            let mut buf = buffers[rng.below(SEED_BODIES.len())].clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(buf.len());
                buf[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            buffers.push(buf);
        }
        for buf in &buffers {
            // What a search from scratch finds in each prefix, as more bytes arrive.
            let whole: Vec<_> = (0..=buf.len())
                .map(|n| {
                    let prefix = &buf[..n];
                    (
                        reference::find_head_end(prefix),
                        reference::check_line_endings(prefix),
                    )
                })
                .collect();
            assert_eq!(find_head_end(buf, 0), whole[buf.len()].0);
            assert_eq!(check_line_endings(buf, 0), whole[buf.len()].1);
            // The guard resumes only after a prefix with no end and no fault in it; the
            // next read brings a few bytes or all the rest.
            for seen in (0..=buf.len()).take_while(|&n| whole[n] == (None, Ok(()))) {
                for now in (seen..=buf.len()).take(9).chain([buf.len()]) {
                    let now_buf = &buf[..now];
                    assert_eq!(
                        (
                            find_head_end(now_buf, seen.saturating_sub(3)),
                            check_line_endings(now_buf, seen.saturating_sub(1))
                        ),
                        whole[now],
                        "{:?} seen up to {seen}",
                        String::from_utf8_lossy(now_buf)
                    );
                }
            }
        }
    }

    /// Serves `data` at most `chunk` bytes per read, then end-of-stream.
    struct Pieces {
        data: Vec<u8>,
        pos: usize,
        chunk: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = (self.data.len() - self.pos)
                .min(buf.remaining())
                .min(self.chunk);
            let start = self.pos;
            buf.put_slice(&self.data[start..start + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    /// What hyper reads from a guard over `data` served in `chunk`-byte reads, whether
    /// the guard ended in an error, and the verdict.
    fn pass_in_pieces(data: &[u8], chunk: usize) -> (Vec<u8>, bool, Option<Refusal>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let _enter = rt.enter();
        let verdict = Arc::new(Verdict::default());
        let inner = Pieces {
            data: data.to_vec(),
            pos: 0,
            chunk,
        };
        let mut guard = GuardedIo::new(inner, limits(), verdict.clone());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        let mut chunk_out = [0u8; 100];
        loop {
            let mut buf = ReadBuf::new(&mut chunk_out);
            match Pin::new(&mut guard).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    return (out, false, verdict.take().map(|r| r.refusal))
                }
                Poll::Ready(Ok(())) => out.extend_from_slice(buf.filled()),
                Poll::Ready(Err(_)) => return (out, true, verdict.take().map(|r| r.refusal)),
                // Only a refused connection waits: the pieces never run dry.
                Poll::Pending => return (out, false, verdict.take().map(|r| r.refusal)),
            }
        }
    }

    /// (Broken body framing is left out: whether the head before it reaches hyper
    /// before the connection is cut does depend on how the bytes arrive.)
    #[test]
    fn heads_in_pieces_are_judged_as_whole_heads() {
        let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2000));
        big.extend_from_slice(b"\r\n\r\n");
        let inputs: &[&[u8]] = &[
            b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\nHost: a\n\nGET /x HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: b\rc\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: b\r",
            b"GET / HTTP/1.1\r\nX-A: b\0c\r\n\r\n",
            b"\r\n\r\nGET / HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n",
            b"\r\n\rGET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &big,
            &head_of(SEED_BODIES[8]),
        ];
        for input in inputs {
            let whole = pass_in_pieces(input, usize::MAX);
            for chunk in [1, 2, 3, 4, 5, 8, 13, 64] {
                assert_eq!(
                    pass_in_pieces(input, chunk),
                    whole,
                    "{:?} in {chunk}-byte pieces",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    /// A head like the benchmark's: a few ordinary headers and a ~900-byte bearer token.
    fn jwt_head() -> Vec<u8> {
        let mut head = b"GET /api/v1/items?id=42&view=full HTTP/1.1\r\nHost: backend.example.com\r\nUser-Agent: portcullis-bench/1.0\r\nAccept: */*\r\nAuthorization: Bearer ".to_vec();
        for i in 0..900 {
            head.push(match i % 300 {
                299 => b'.',
                n => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[n % 64],
            });
        }
        head.extend_from_slice(b"\r\nX-Request-Id: 5f3c2a\r\n\r\n");
        head
    }

    /// Serves the same bytes forever, at most `chunk` per read, as a socket would.
    struct Endless {
        data: Vec<u8>,
        pos: usize,
        chunk: usize,
    }

    impl AsyncRead for Endless {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = (self.data.len() - self.pos)
                .min(buf.remaining())
                .min(self.chunk);
            let start = self.pos;
            buf.put_slice(&self.data[start..start + n]);
            self.pos = (start + n) % self.data.len();
            Poll::Ready(Ok(()))
        }
    }

    /// Timing harness, not a check: `cargo test --release -p portcullis-proxy --lib
    /// h1_guard::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing() {
        use std::time::Instant;
        const N: u32 = 100_000;
        let head = jwt_head();
        let start = Instant::now();
        for _ in 0..N {
            assert!(std::hint::black_box(judge_head(std::hint::black_box(&head))).is_ok());
        }
        let judge = start.elapsed() / N;
        let start = Instant::now();
        for _ in 0..N {
            std::hint::black_box(find_head_end(std::hint::black_box(&head), 0));
        }
        let find = start.elapsed() / N;
        let start = Instant::now();
        for _ in 0..N {
            assert!(
                std::hint::black_box(reference::judge_head(std::hint::black_box(&head))).is_ok()
            );
        }
        let judge_before = start.elapsed() / N;
        let start = Instant::now();
        for _ in 0..N {
            std::hint::black_box(reference::find_head_end(std::hint::black_box(&head)));
        }
        let find_before = start.elapsed() / N;
        // The whole guard, fed as much as it asks for per read (an idle connection asks
        // for 1 KiB first), then in 100-byte pieces as a slow or far client sends them.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let _enter = rt.enter();
        let mut per_request = Vec::new();
        for chunk in [usize::MAX, 100] {
            let inner = Endless {
                data: head.clone(),
                pos: 0,
                chunk,
            };
            let limits = GuardLimits {
                max_head_bytes: 16 * 1024,
                header_read_timeout: Duration::from_secs(3600),
            };
            let mut guard = GuardedIo::new(inner, limits, Arc::new(Verdict::default()));
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut out = vec![0u8; 16 * 1024];
            let total = head.len() * N as usize;
            let mut seen = 0;
            let start = Instant::now();
            while seen < total {
                let mut buf = ReadBuf::new(&mut out);
                match Pin::new(&mut guard).poll_read(&mut cx, &mut buf) {
                    Poll::Ready(Ok(())) => seen += buf.filled().len(),
                    other => panic!("guard stopped: {other:?}"),
                }
            }
            per_request.push(start.elapsed() / N);
        }
        println!(
            "head {} bytes: judge_head {judge:?} (reference {judge_before:?}), find_head_end {find:?} (reference {find_before:?}), guard per request {:?} (reads as asked), {:?} (100-byte reads)",
            head.len(), per_request[0], per_request[1]
        );
    }
}
