//! Small helpers shared by the modules: hashing, time, and making attacker-chosen
//! strings safe to quote in an error description.

use aws_lc_rs::digest;
use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Key of the verified-credential caches (see [`cache_key`]).
pub(crate) type CacheKey = u128;

/// The key of every verified-credential cache entry: a keyed 128-bit
/// SipHash-1-3 of `parts` (each prefixed by its length, so that ("ab","c") and
/// ("a","bc") never collide) under a random key drawn once per process.
///
/// Why not SHA-256: it runs on every request (a cache hit is the common case) over
/// a whole token, often ~1 KB, and without SHA extensions it costs ~28
/// instructions per byte — 12% of the proxy's instructions. What the cache needs
/// is that nobody can make two different credentials share a key, since a
/// collision would hand one caller another caller's identity. A PRF with a
/// 128-bit output under a secret key gives that against an attacker who does not
/// know the key (and the key never leaves the process): each forged token lands
/// on another caller's entry with probability ~2^-128 per try, and the attacker
/// cannot compute keys offline to search for one, so for this use it is as safe
/// as SHA-256 at a fraction of the cost (a few instructions per byte). Like the
/// digest, it also keeps the token itself out of the cache.
///
/// The key is per process, not per [`crate::Authenticator`], so entries stay valid
/// for any successor built by `new_from_previous` and for every introspector.
/// Callers domain-separate with a first part (`jwt`, `introspect`).
pub(crate) fn cache_key(parts: &[&[u8]]) -> CacheKey {
    let mut h = KeyedHash::new();
    for part in parts {
        h.part(part);
    }
    h.finish()
}

/// The keyed 128-bit hash behind [`cache_key`], fed one part at a time: for
/// caches outside this crate whose keys must not collide either (the proxy's
/// assertion cache, keyed by everything an assertion says about its caller).
///
/// Short parts are gathered in a buffer and hashed in one write: SipHash's
/// per-write overhead made the assertion key (about fifteen short parts and
/// their lengths) cost more than hashing its bytes. The hashed byte stream is
/// the same either way.
pub struct KeyedHash {
    sip: SipHasher13,
    buf: [u8; KEYED_HASH_BUF],
    len: usize,
}

const KEYED_HASH_BUF: usize = 256;

impl KeyedHash {
    /// A hasher under the per-process secret.
    pub fn new() -> Self {
        let (k0, k1) = cache_key_secret();
        KeyedHash {
            sip: SipHasher13::new_with_keys(k0, k1),
            buf: [0; KEYED_HASH_BUF],
            len: 0,
        }
    }

    /// Adds one part, prefixed by its length so parts cannot run into each other.
    pub fn part(&mut self, part: &[u8]) {
        self.bytes(&(part.len() as u64).to_le_bytes());
        self.bytes(part);
    }

    /// Adds a number.
    pub fn number(&mut self, n: u64) {
        self.bytes(&n.to_le_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => {
                self.flush();
                self.sip.write(bytes);
            }
        }
    }

    fn flush(&mut self) {
        self.sip.write(&self.buf[..self.len]);
        self.len = 0;
    }

    /// The 128-bit key.
    pub fn finish(&mut self) -> u128 {
        self.flush();
        self.sip.finish128().as_u128()
    }
}

impl Default for KeyedHash {
    fn default() -> Self {
        Self::new()
    }
}

/// The per-process secret of [`cache_key`], from the OS RNG on first use.
fn cache_key_secret() -> (u64, u64) {
    static SECRET: OnceLock<(u64, u64)> = OnceLock::new();
    *SECRET.get_or_init(|| {
        let (mut k0, mut k1) = ([0u8; 8], [0u8; 8]);
        if aws_lc_rs::rand::fill(&mut k0).is_ok() && aws_lc_rs::rand::fill(&mut k1).is_ok() {
            (u64::from_ne_bytes(k0), u64::from_ne_bytes(k1))
        } else {
            // Not expected to happen; should the RNG ever report an error, std's
            // RandomState is seeded with 128 bits from the OS as well.
            let s = std::collections::hash_map::RandomState::new();
            (s.hash_one(0u8), s.hash_one(1u8))
        }
    })
}

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
        assert_ne!(cache_key(&[b"ab", b"c"]), cache_key(&[b"a", b"bc"]));
        assert_ne!(cache_key(&[b"jwt", b"t"]), cache_key(&[b"jwt", b"t", b""]));
    }

    #[test]
    fn buffered_parts_hash_the_same_stream_as_direct_writes() {
        // Parts that fit the buffer, fill it exactly, straddle it and exceed it:
        // each byte goes into the hash once, in order.
        let (k0, k1) = cache_key_secret();
        for sizes in [
            &[0usize, 1, 7][..],
            &[248],
            &[247, 1],
            &[100, 200, 5],
            &[300],
            &[10, 1000, 10, 240],
        ] {
            let parts: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
                .collect();
            let mut direct = SipHasher13::new_with_keys(k0, k1);
            let mut ours = KeyedHash::new();
            for part in &parts {
                direct.write(&(part.len() as u64).to_le_bytes());
                direct.write(part);
                ours.part(part);
            }
            direct.write(&7u64.to_le_bytes());
            ours.number(7);
            assert_eq!(ours.finish(), direct.finish128().as_u128(), "{sizes:?}");
        }
    }

    #[test]
    fn cache_key_is_stable_within_the_process_and_keyed() {
        assert_eq!(cache_key(&[b"jwt", b"abc"]), cache_key(&[b"jwt", b"abc"]));
        assert_ne!(cache_key(&[b"jwt", b"abc"]), cache_key(&[b"jwt", b"abd"]));
        // Not the unkeyed SipHash: the secret is in use.
        let mut unkeyed = SipHasher13::new();
        for part in [&b"jwt"[..], b"abc"] {
            unkeyed.write(&(part.len() as u64).to_le_bytes());
            unkeyed.write(part);
        }
        assert_ne!(cache_key(&[b"jwt", b"abc"]), unkeyed.finish128().as_u128());
        assert_ne!(cache_key_secret(), (0, 0));
    }
}
