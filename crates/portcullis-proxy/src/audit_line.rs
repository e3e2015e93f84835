//! The audit line's JSON, written by hand. serde's derived serializer with
//! serde_json cost about 9,000 instructions per line (an eighth of plain
//! proxying), most of it escaping strings one byte at a time. Here strings are
//! scanned eight bytes at a time and copied whole when nothing needs escaping, which
//! is nearly always. The output is exactly what serde_json wrote before: same key
//! order, same escapes, `null` for absent values.

use crate::audit::{AuditIdentity, AuditRecord};

/// Appends `rec` as one JSON object (no newline) to `out`.
pub fn write_record(rec: &AuditRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    out.extend_from_slice(&rec.timestamp.rfc3339());
    out.extend_from_slice(b"\",\"request_id\":");
    string(out, &rec.request_id);
    out.extend_from_slice(b",\"trace_id\":");
    string(out, &rec.trace_id);
    out.extend_from_slice(b",\"client_ip\":");
    string(out, &rec.client_ip);
    out.extend_from_slice(b",\"method\":");
    string(out, &rec.method);
    out.extend_from_slice(b",\"host\":");
    string(out, &rec.host);
    out.extend_from_slice(b",\"path\":");
    string(out, &rec.path);
    out.extend_from_slice(b",\"route\":");
    opt_string(out, rec.route.as_deref());
    out.extend_from_slice(b",\"decision\":");
    string(out, rec.decision);
    out.extend_from_slice(b",\"reason\":");
    string(out, rec.reason);
    out.extend_from_slice(b",\"rule\":");
    opt_string(out, rec.rule.as_deref());
    out.extend_from_slice(if rec.enforced {
        b",\"enforced\":true,\"identity\":"
    } else {
        b",\"enforced\":false,\"identity\":"
    });
    write_identity(&rec.identity, out);
    // Integers by itoa: `write!` costs about 300 instructions each, through
    // `fmt::write`.
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(rec.status).as_bytes());
    out.extend_from_slice(b",\"duration_ms\":");
    float(out, rec.duration_ms);
    out.extend_from_slice(b",\"upstream_ms\":");
    match rec.upstream_ms {
        Some(ms) => float(out, ms),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"bytes_out\":");
    out.extend_from_slice(itoa::Buffer::new().format(rec.bytes_out).as_bytes());
    out.extend_from_slice(b",\"credential\":");
    opt_string(out, rec.credential.as_deref());
    out.extend_from_slice(b",\"frontend\":");
    string(out, rec.frontend);
    out.extend_from_slice(b",\"mcp\":");
    match &rec.mcp {
        None => out.extend_from_slice(b"null"),
        Some(m) => {
            out.extend_from_slice(b"{\"method\":");
            opt_string(out, m.method.as_deref());
            out.extend_from_slice(b",\"tool\":");
            opt_string(out, m.tool.as_deref());
            out.extend_from_slice(b",\"id\":");
            // Already JSON (checked by the MCP parser): copied as the client sent it.
            out.extend_from_slice(m.id.as_deref().unwrap_or("null").as_bytes());
            out.push(b'}');
        }
    }
    out.push(b'}');
}

/// Appends the `identity` object.
pub fn write_identity(id: &AuditIdentity, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":");
    string(out, id.kind.as_str());
    out.extend_from_slice(b",\"sub\":");
    opt_string(out, id.sub.as_deref());
    out.extend_from_slice(b",\"email\":");
    opt_string(out, id.email.as_deref());
    out.extend_from_slice(b",\"issuer\":");
    opt_string(out, id.issuer.as_deref());
    out.extend_from_slice(b",\"client_id\":");
    opt_string(out, id.client_id.as_deref());
    out.extend_from_slice(b",\"groups\":[");
    for (i, g) in id.groups.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, g);
    }
    out.extend_from_slice(b"],\"workload\":");
    opt_string(out, id.workload.as_deref());
    out.push(b'}');
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A finite float as serde_json writes it (shortest round-trip form); JSON has no
/// NaN or infinity, so those become `null` as they did with serde_json.
fn float(out: &mut Vec<u8>, v: f64) {
    if serde_json::to_writer(&mut *out, &v).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// A JSON string: `"`, `\` and control characters escaped as serde_json does
/// (`\n`-style short forms where JSON has them, else `\u00XX`); everything else,
/// including non-ASCII UTF-8, copied as is.
pub fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Skip eight clean bytes at a time.
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if !word_needs_escape(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        if needs_escape(b) {
            out.extend_from_slice(&bytes[copied..i]);
            escape(out, b);
            copied = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any of the eight bytes needs escaping. Exact (no false negatives):
/// the classic "has a byte less than n" and "has a zero byte" word tricks.
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    below_space | has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\')))
        != 0
}

fn escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0x0f)],
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json(s: &str) -> String {
        let mut out = Vec::new();
        string(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_escape_anywhere_in_a_word_or_the_tail_is_found() {
        // Every position across several 8-byte words and the byte tail, so no
        // word test can skip a byte that needs escaping.
        for len in 1..48 {
            for at in 0..len {
                for c in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
                    let mut s: Vec<char> = "x".repeat(len).chars().collect();
                    s[at] = c;
                    let s: String = s.into_iter().collect();
                    assert_eq!(json(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn every_byte_escapes_as_serde_json_does() {
        for c in (0u32..0x800).filter_map(char::from_u32) {
            for s in [
                c.to_string(),
                format!("abcdefgh{c}ijklmnop"),
                format!("{c}{c}"),
            ] {
                assert_eq!(json(&s), serde_json::to_string(&s).unwrap(), "{c:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn strings_match_serde_json(s in any::<String>()) {
            prop_assert_eq!(json(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn word_check_is_exact(word in any::<[u8; 8]>()) {
            prop_assert_eq!(
                word_needs_escape(u64::from_le_bytes(word)),
                word.iter().any(|&b| needs_escape(b))
            );
        }
    }
}
