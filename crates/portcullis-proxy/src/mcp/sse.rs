//! A streaming Server-Sent Events filter for MCP answers (SPEC §10): events pass
//! one at a time, as they complete, and an event whose data is a `tools/list`
//! answer is rewritten to the tools the caller may call. At most one event is
//! held in memory, and never more than the route's `max_message_bytes`: a
//! larger one ends the stream (what cannot be read whole cannot be filtered).
//!
//! Lines end with CRLF, LF or CR (the SSE grammar allows all three), and a
//! chunk may end anywhere, even between the CR and LF of one line ending.

use crate::body::{BodyError, ProxyBody};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Decides which tools the caller may see.
pub type Permits = Box<dyn Fn(&str) -> bool + Send>;

/// Splits a byte stream into events and filters each.
pub struct SseFilter {
    /// The bytes of the event being read, as received.
    event: Vec<u8>,
    /// Where the current line starts in `event`.
    line_start: usize,
    /// The last byte seen was a CR: a LF right after it is part of that line end.
    after_cr: bool,
    max: usize,
    permits: Permits,
    /// No event has been completed yet: the stream may start with a BOM.
    first_event: bool,
}

/// UTF-8's byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// An event larger than the limit.
#[derive(Debug)]
pub struct TooLarge(pub usize);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an MCP event is larger than {} bytes", self.0)
    }
}

impl std::error::Error for TooLarge {}

impl SseFilter {
    pub fn new(max: usize, permits: Permits) -> SseFilter {
        SseFilter {
            event: Vec::new(),
            line_start: 0,
            after_cr: false,
            max,
            permits,
            first_event: true,
        }
    }

    /// Takes the next chunk; appends to `out` every event it completed.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), TooLarge> {
        for &b in chunk {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                // The LF of a CRLF whose CR already ended the line.
                self.event.push(b);
                self.line_start = self.event.len();
                if self.event.len() == 1 {
                    // It followed the blank line that ended the previous event.
                    out.push(b);
                    self.event.clear();
                    self.line_start = 0;
                }
                continue;
            }
            self.event.push(b);
            if b == b'\n' || b == b'\r' {
                self.after_cr = b == b'\r';
                let blank = self.event.len() - 1 == self.line_start;
                if blank {
                    self.finish_event(out);
                } else {
                    self.line_start = self.event.len();
                }
            }
            if self.event.len() > self.max {
                return Err(TooLarge(self.max));
            }
        }
        Ok(())
    }

    fn finish_event(&mut self, out: &mut Vec<u8>) {
        match self.filtered() {
            Some(rewritten) => out.extend_from_slice(&rewritten),
            None => out.extend_from_slice(&self.event),
        }
        self.event.clear();
        self.line_start = 0;
        self.first_event = false;
        // One huge event must not pin its buffer for the rest of a long stream.
        if self.event.capacity() > 64 * 1024 {
            self.event.shrink_to(4096);
        }
    }

    /// The event rewritten, when its data is a `tools/list` answer. An answer that
    /// cannot be read is replaced by an event with no data, which clients skip.
    fn filtered(&self) -> Option<Vec<u8>> {
        let mut data: Vec<u8> = Vec::new();
        let mut others: Vec<&[u8]> = Vec::new();
        let mut has_data = false;
        // A byte order mark before the stream's first field is not part of it
        // (the SSE grammar drops it): left in, it would hide a `data` line.
        let event = match self.first_event {
            true => self.event.strip_prefix(BOM).unwrap_or(&self.event),
            false => &self.event,
        };
        for line in lines(event) {
            if let Some(value) = line.strip_prefix(b"data") {
                if value.is_empty() || value[0] == b':' {
                    let value = value.get(1..).unwrap_or_default();
                    let value = value.strip_prefix(b" ").unwrap_or(value);
                    if has_data {
                        data.push(b'\n');
                    }
                    has_data = true;
                    data.extend_from_slice(value);
                    continue;
                }
            }
            others.push(line);
        }
        // Cheap test first: most events (progress, tool results) are not lists.
        // A key written with escapes (`"t\u006fols"`) has a backslash somewhere.
        if !has_data || !(contains(&data, b"\"tools\"") || data.contains(&b'\\')) {
            return None;
        }
        let mut out = Vec::with_capacity(self.event.len());
        for line in others {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        match crate::mcp::jsonrpc::filter_tools(&data, &*self.permits) {
            Ok(None) => return None,
            Ok(Some(json)) => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&json);
                out.push(b'\n');
            }
            Err(e) => {
                tracing::warn!(error = %e, "an MCP event could not be filtered: dropped its data");
            }
        }
        out.push(b'\n');
        Some(out)
    }
}

/// The lines of one complete event, without their line ends (and without the
/// blank line that ends the event).
fn lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = event;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
        let line = &rest[..end];
        let skip = if rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
        if !line.is_empty() {
            return Some(line);
        }
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A response body passed through an [`SseFilter`].
pub struct Filtered {
    inner: ProxyBody,
    filter: SseFilter,
    done: bool,
}

impl Filtered {
    pub fn new(inner: ProxyBody, filter: SseFilter) -> Filtered {
        Filtered {
            inner,
            filter,
            done: false,
        }
    }
}

impl Body for Filtered {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    // An unfinished event at the end is discarded, as clients do.
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers: dropped
                    };
                    let mut out = Vec::new();
                    if let Err(e) = this.filter.feed(&data, &mut out) {
                        this.done = true;
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
#[path = "sse_tests.rs"]
mod tests;
