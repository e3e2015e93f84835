//! Small helpers shared by the modules: hashing, time, and making attacker-chosen
//! strings safe to quote in an error description.

use aws_lc_rs::digest;
use std::time::{SystemTime, UNIX_EPOCH};

/// SHA-256 of `parts`, each prefixed by its length so that ("ab","c") and ("a","bc")
/// never collide.
pub(crate) fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A short, non-reversible label for a token, for logs (never the token itself).
pub(crate) fn token_label(token: &str) -> String {
    let h = sha256_parts(&[token.as_bytes()]);
    h[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the Unix epoch, from the wall clock (token times are wall-clock).
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Quotes an untrusted value (a `kid`, an `iss`) for an error description: at most
/// 64 characters, and only characters that cannot break a quoted header value or
/// a log line.
pub(crate) fn quote(value: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::with_capacity(value.len().min(MAX) + 2);
    out.push('\'');
    for (i, c) in value.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_ascii_alphanumeric() || "-._~:/@+=#%".contains(c) {
            out.push(c);
        } else {
            out.push('?');
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_strips_header_breaking_characters_and_truncates() {
        assert_eq!(quote("a\"b\r\nc"), "'a?b??c'");
        let long = "x".repeat(100);
        assert_eq!(quote(&long).chars().count(), 64 + 3);
    }

    #[test]
    fn length_prefix_separates_parts() {
        assert_ne!(sha256_parts(&[b"ab", b"c"]), sha256_parts(&[b"a", b"bc"]));
    }
}
