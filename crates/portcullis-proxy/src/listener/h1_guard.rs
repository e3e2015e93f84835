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
        && target_parses(&body[target_start..target_start + target])
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
    if target.is_empty() || target.iter().any(|&b| b <= 0x20 || b >= 0x7f) || !target_parses(target)
    {
        return Err("invalid request target");
    }
    match version {
        b"HTTP/1.1" => Ok(false),
        b"HTTP/1.0" => Ok(true),
        _ => Err("unsupported HTTP version"),
    }
}

/// Whether hyper will take `target`: one it refuses (an absolute-form target
/// with an invalid authority, `http://a"b/x`) is answered by hyper with a bare
/// 400 that no audit line records, so it is refused here instead. Origin-form
/// targets, nearly every request's, are not parsed a second time.
pub(super) fn target_parses(target: &[u8]) -> bool {
    target.first() == Some(&b'/') || http::Uri::try_from(target).is_ok()
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
mod tests;
