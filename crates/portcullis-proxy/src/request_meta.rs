//! Correlation ids: `X-Request-Id` and W3C `traceparent`, kept from trusted peers
//! (an API gateway or mesh in front of us) and started here otherwise, so one id
//! follows a call through every log.

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::cell::RefCell;

/// The request id: a trusted peer's, when well-formed, else a new random one.
pub fn request_id(from_trusted_peer: Option<&str>) -> String {
    match from_trusted_peer {
        Some(id) if is_valid_request_id(id) => id.to_string(),
        _ => new_hex::<16>(),
    }
}

/// Ids are echoed into headers and logs: keep them short and printable.
fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// A W3C trace context: the trace this request belongs to and the span the proxy adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: String,
    pub span_id: String,
    pub flags: String,
}

impl TraceContext {
    /// Continues a trusted peer's valid `traceparent`, or starts a new trace.
    pub fn continue_or_start(from_trusted_peer: Option<&str>) -> Self {
        if let Some(parent) = from_trusted_peer.and_then(parse_traceparent) {
            return TraceContext {
                trace_id: parent.trace_id.to_string(),
                span_id: new_hex::<8>(),
                flags: parent.flags.to_string(),
            };
        }
        TraceContext {
            trace_id: new_hex::<16>(),
            span_id: new_hex::<8>(),
            flags: "01".to_string(),
        }
    }

    /// The `traceparent` header value to send upstream.
    pub fn header(&self) -> String {
        // Built by hand: this runs for every forwarded request.
        let mut out = String::with_capacity(55);
        for part in ["00-", &self.trace_id, "-", &self.span_id, "-", &self.flags] {
            out.push_str(part);
        }
        out
    }
}

/// The parts of a valid `traceparent`.
pub struct Traceparent<'a> {
    pub trace_id: &'a str,
    /// The caller's span: the parent of ours.
    pub parent_id: &'a str,
    pub flags: &'a str,
}

/// Parses `00-<32 hex>-<16 hex>-<2 hex>`; all-zero ids are invalid (W3C §3.2.2).
pub fn parse_traceparent(value: &str) -> Option<Traceparent<'_>> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace_id, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    valid.then_some(Traceparent {
        trace_id,
        parent_id: parent,
        flags,
    })
}

thread_local! {
    /// Ids must be unique, not secret: a fast generator seeded from the OS per
    /// thread instead of the cryptographic one (three ids per request).
    static IDS: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// `N` (at most 16) random bytes as lowercase hex. Three ids per request: the
/// digits go into a stack buffer with no per-digit capacity check, and the one
/// copy into the heap is the `String`'s.
fn new_hex<const N: usize>() -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    const { assert!(N <= 16) };
    let mut bytes = [0u8; N];
    IDS.with(|rng| rng.borrow_mut().fill_bytes(&mut bytes));
    let mut hex = [0u8; 32];
    for (pair, b) in hex.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(&hex[..2 * N])
        .map(str::to_owned)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        assert_eq!(request_id(None).len(), 32);
        assert_ne!(request_id(Some("bad id\n")), "bad id\n");
        assert_eq!(request_id(Some(&"a".repeat(200))).len(), 32);
        let (a, b) = (new_hex::<16>(), new_hex::<8>());
        assert!(a.len() == 32 && b.len() == 16 && a != new_hex::<16>());
        assert!(a
            .bytes()
            .chain(b.bytes())
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
    }

    #[test]
    fn traceparent_continued_or_started() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::continue_or_start(Some(incoming));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert!(t
            .header()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let t = TraceContext::continue_or_start(Some(bad));
            assert_ne!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(t.trace_id.len(), 32);
        }
    }
}
