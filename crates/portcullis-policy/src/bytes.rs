//! Tiny byte-level string helpers for the per-request path.
//!
//! `str::split_once(char)` and friends go through the generic pattern machinery,
//! whose setup costs more than the scan itself on the short strings policies look
//! at (segments, emails, hosts). An ASCII byte never occurs inside a multi-byte
//! UTF-8 sequence, so splitting at one is always on a character boundary.

/// Like `s.split_once(sep)` for an ASCII `sep`.
#[inline]
pub(crate) fn split_once(s: &str, sep: u8) -> Option<(&str, &str)> {
    let pos = s.bytes().position(|b| b == sep)?;
    Some((s.get(..pos)?, s.get(pos + 1..)?))
}

/// Like `s.rsplit_once(sep)` for an ASCII `sep`.
#[inline]
pub(crate) fn rsplit_once(s: &str, sep: u8) -> Option<(&str, &str)> {
    let pos = s.bytes().rposition(|b| b == sep)?;
    Some((s.get(..pos)?, s.get(pos + 1..)?))
}

/// Like `s.contains(b)` for an ASCII `b`.
#[inline]
pub(crate) fn has(s: &str, b: u8) -> bool {
    s.bytes().any(|x| x == b)
}

/// A fast, unkeyed hasher (the FxHash function) for the route index maps.
///
/// Why not SipHash: it is a third of a lookup's cost. Why this is safe: the maps'
/// keys come from the config, and a request only looks keys up; a lookup of any
/// string probes only as far as the config's own keys collide, so a caller cannot
/// make it slower.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            if let Some(dst) = w.get_mut(..rest.len()) {
                dst.copy_from_slice(rest);
            }
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// `HashMap` with [`FxHasher`].
pub(crate) type FxMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits() {
        assert_eq!(split_once("a/b/c", b'/'), Some(("a", "b/c")));
        assert_eq!(rsplit_once("a:b:c", b':'), Some(("a:b", "c")));
        assert_eq!(split_once("é/x", b'/'), Some(("é", "x")));
        assert_eq!(split_once("abc", b'/'), None);
        assert!(has("a@b", b'@'));
    }

    #[test]
    fn fx_map_works() {
        let mut m: FxMap<String, u32> = FxMap::default();
        for i in 0..1000u32 {
            m.insert(format!("svc{i}"), i);
        }
        assert_eq!(m.get("svc999"), Some(&999));
        assert_eq!(m.get("svc1000"), None);
    }
}
