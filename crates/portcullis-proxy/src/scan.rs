//! Finding the first byte that needs attention, sixteen bytes at a time: the
//! HTTP/1 guard reads every head with it, and the core reads the
//! `Authorization` header (mostly a ~1 KB token) with it. And which bytes are
//! `tchar`, for both.

/// Position of the first byte in `s` for which `stop` holds.
///
/// Most of a head is long runs of bytes that need no attention (a bearer token alone
/// can be most of it). Such runs are skipped sixteen bytes at a time: the test of a
/// whole block has no early exit, so the compiler makes it a few vector instructions
/// (SSE2 on x86-64) instead of a compare and branch per byte. Only the block that
/// holds a stop byte, and the short tail, are searched byte by byte.
#[inline(always)]
pub fn position(s: &[u8], stop: impl Fn(u8) -> bool) -> Option<usize> {
    let (blocks, _) = s.as_chunks::<16>();
    let mut skipped = 0;
    for block in blocks {
        if block.iter().fold(false, |any, &b| any | stop(b)) {
            break;
        }
        skipped += 16;
    }
    s[skipped..]
        .iter()
        .position(|&b| stop(b))
        .map(|i| skipped + i)
}

/// Which bytes are `tchar` (RFC 9110 §5.6.2), the alphabet of methods and header
/// names: a table, because names are checked byte by byte for every header.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    table
};

/// Whether `b` is a `tchar`.
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}
