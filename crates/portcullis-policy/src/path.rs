//! Request path normalization (SPEC §5): one canonical form, computed once per
//! request, that routes and rules are matched against and that the upstream receives.
//!
//! The canonical form is an absolute path in which:
//! - escapes of unreserved characters (`ALPHA / DIGIT / - . _ ~`) are decoded, so
//!   `%41` is `A` and `%2e%2e` is `..`;
//! - every other escape is kept, with uppercase hex (`%3a` → `%3A`), so reserved
//!   characters keep their meaning and nothing is ever decoded twice;
//! - raw bytes that may not appear in a path (space, `"`, `<`, `>`, `^`, `` ` ``,
//!   `{`, `|`, `}`, `[`, `]`, non-ASCII) are percent-encoded, so `/é` and `/%C3%A9`
//!   are the same path;
//! - `.` and `..` segments are resolved (never above the root) and repeated `/` are
//!   collapsed; a trailing `/` is kept, because `/a` and `/a/` can be different
//!   resources upstream;
//! - case is preserved: the upstream receives the path with the letters as sent.
//!
//! Refused: invalid escapes (`%zz`, `%4`), NUL and control characters (raw or
//! escaped), `?` and `#` (the caller splits the query off first, see
//! [`split_query`]), and — unless `allow_encoded_slashes` — `%2F` and `\` (raw or
//! `%5C`), which some upstreams treat as `/` and which would let a request be judged
//! as one path and served as another. When allowed, they are kept encoded (`%2F`,
//! `%5C`) and never act as segment separators here.
//!
//! # The matching form
//!
//! Routes and `paths` rules are matched against [`NormalizedPath::matching`], a
//! second spelling built for judging only, so that no upstream can serve a path
//! that was judged as another:
//!
//! - `;` path parameters are removed from every segment. Servers such as Tomcat
//!   and Spring strip `;…`, so `/admin;x` is served as `/admin`; it is therefore
//!   judged by the `/admin` route, never by a catch-all behind it. `%3B` counts as
//!   `;` here, because some servers decode it before stripping. A segment that
//!   was only parameters leaves none behind (`/;x/admin` is `/admin`: Tomcat
//!   merges the `//` it leaves).
//! - letters are lowercased unless [`PathOptions::case_sensitive`]: Express,
//!   ASP.NET/IIS and Windows or macOS file servers serve `/ADMIN` as `/admin`, so
//!   a case-sensitive `/admin` route would let `/Admin` dodge it.
//! - a trailing `/` is removed (`/` itself stays): Express and Koa's router
//!   (unless strict), ASP.NET Core and Spring before 6 serve `/admin/` as
//!   `/admin`, so an exact `/admin` route or `paths` entry would let `/admin/`
//!   dodge it. Config paths and globs are normalized the same way, so
//!   `path: /admin/` and `path: /admin` mean the same. `paths` globs and
//!   `path_regex` are tried with the `/` as well
//!   ([`NormalizedPath::matching_slashed`]), so `/internal/*` and
//!   `^/admin/.*` still cover `/internal/` and `/admin/`.
//!
//! The upstream still receives the canonical path, parameters and case included.
//! A `.` or `..` segment carrying a parameter (`..;x`, `.;`, also written with
//! `%3B`) is refused outright: `/public/..;/admin` would otherwise be one path here
//! and another upstream.

use std::fmt;

/// A request path in canonical form (see the module docs). Always starts with `/`.
///
/// Built only by [`normalize`], so holding one proves the path was checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NormalizedPath(String, Option<String>);

impl serde::Serialize for NormalizedPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// How request paths (and the path patterns of a config) are normalized.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathOptions {
    /// `server.allow_encoded_slashes`: keep `%2F` and `\` (encoded) instead of
    /// refusing them.
    pub allow_encoded_slashes: bool,
    /// `server.case_sensitive_paths`: match with letter case (default: ignore it).
    pub case_sensitive: bool,
}

impl NormalizedPath {
    fn new(canonical: String, case_sensitive: bool) -> Self {
        // Byte searches: `contains("%3B")` sets up a substring searcher on every
        // request. (Escapes are upper-case in the canonical form.)
        let has_parameters = canonical.as_bytes().contains(&b';')
            || canonical.as_bytes().windows(3).any(|w| w == b"%3B");
        let fold = !case_sensitive && canonical.bytes().any(|b| b.is_ascii_uppercase());
        // A trailing `/` stays in the stored form: `matching` leaves it out,
        // `matching_slashed` keeps it (see there).
        let matching = (has_parameters || fold).then(|| {
            let mut m = if has_parameters {
                strip_parameters(&canonical.replace("%3B", ";"))
            } else {
                canonical.clone()
            };
            if fold {
                m.make_ascii_lowercase();
            }
            m
        });
        NormalizedPath(canonical, matching)
    }

    /// The matching form as stored: with the trailing `/` the request had.
    fn stored_matching(&self) -> &str {
        self.1.as_deref().unwrap_or(&self.0)
    }

    /// The canonical path: what the upstream receives.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path routes and `paths` rules are matched against (see the module docs):
    /// the canonical path without `;` parameters, lowercased unless matching is
    /// case-sensitive (the same string when neither changes it).
    pub fn matching(&self) -> &str {
        let m = self.stored_matching();
        match m.strip_suffix('/') {
            Some(without) if !without.is_empty() => without,
            _ => m,
        }
    }

    /// [`matching`](Self::matching) with the trailing `/` the request had, when
    /// it had one: `paths` globs and `path_regex` are tried with it too. The
    /// upstream receives `/internal/`, which `/internal/*` and `^/admin/.*`
    /// are written to cover, though `/internal` (the form exact paths and
    /// prefixes need, see the module docs) fits neither.
    pub fn matching_slashed(&self) -> Option<&str> {
        let m = self.stored_matching();
        (m.len() > 1 && m.ends_with('/')).then_some(m)
    }

    /// The first segment of [`matching`](Self::matching) without its leading `/`
    /// (`""` for `/`). Route lookup is indexed by it.
    pub fn first_segment(&self) -> &str {
        first_segment(self.matching())
    }

    /// The segments after the leading `/`; a trailing `/` yields a final empty segment.
    pub fn segments(&self) -> std::str::Split<'_, char> {
        self.matching().get(1..).unwrap_or("").split('/')
    }

    /// Consumes the path, returning the canonical string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// `/a;x/b;y=1` → `/a/b`: what Tomcat-style servers make of path parameters.
/// A segment that was only parameters leaves no empty segment behind:
/// Tomcat makes `/;x/admin` `//admin`, then merges the slashes and serves
/// `/admin`. A trailing `/` stays.
fn strip_parameters(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').skip(1) {
        if !out.ends_with('/') {
            out.push('/');
        }
        out.push_str(segment.split(';').next().unwrap_or(""));
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

impl fmt::Display for NormalizedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NormalizedPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The first segment of an absolute path string, without the leading `/`.
pub(crate) fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    match crate::bytes::split_once(rest, b'/') {
        Some((first, _)) => first,
        None => rest,
    }
}

/// Why a path was refused. Every variant is a 400 (`bad_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (e.g. `*` or a relative path).
    #[error("path must start with `/`")]
    NotAbsolute,
    /// `%` not followed by two hex digits.
    #[error("invalid percent-escape at byte {0}")]
    InvalidEscape(usize),
    /// `%2F` while `allow_encoded_slashes` is off.
    #[error("encoded slash (%2F) in path")]
    EncodedSlash,
    /// `\` or `%5C` while `allow_encoded_slashes` is off.
    #[error("backslash in path")]
    Backslash,
    /// NUL or another control character, raw or escaped.
    #[error("control character in path")]
    ControlCharacter,
    /// `?` or `#`: the query or fragment must be split off before normalizing.
    #[error("query or fragment delimiter in path")]
    QueryInPath,
    /// A `.` or `..` segment with a `;` parameter, which some servers resolve as a
    /// dot segment after stripping the parameter.
    #[error("dot segment with a path parameter")]
    DotSegmentParameter,
}

/// Splits a request target (`/a/b?x=1`) into its path and its query (without `?`),
/// dropping a fragment. The query is never normalized: it goes upstream as sent.
pub fn split_query(target: &str) -> (&str, Option<&str>) {
    let target = match target.split_once('#') {
        Some((before, _)) => before,
        None => target,
    };
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// Normalizes a raw request path (without query) into its canonical form, or says
/// why it is refused, matching without letter case (the default). Front ends use
/// [`RouteTable::normalize`](crate::RouteTable::normalize), which applies the
/// config's [`PathOptions`].
pub fn normalize(raw_path: &str, allow_encoded_slashes: bool) -> Result<NormalizedPath, PathError> {
    normalize_with(
        raw_path,
        PathOptions {
            allow_encoded_slashes,
            case_sensitive: false,
        },
    )
}

/// Normalizes a raw request path (without query) into its canonical form, or says
/// why it is refused. See the module docs for the exact rules. An empty path is `/`.
pub fn normalize_with(raw_path: &str, options: PathOptions) -> Result<NormalizedPath, PathError> {
    let allow_encoded_slashes = options.allow_encoded_slashes;
    if raw_path.is_empty() {
        return Ok(NormalizedPath::new("/".to_string(), options.case_sensitive));
    }
    if !raw_path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // One pass, one allocation: each raw segment is decoded onto the end of `out`,
    // then judged (`.`, `..`, empty) once complete. Segment separators are exactly
    // the raw `/` bytes, because `%2F` is never decoded.
    //
    // Invariant between segments: `out` is `/` followed by complete segments, each
    // followed by `/`; `seg_start` is where the next segment begins.
    let bytes = raw_path.as_bytes();
    let mut out = String::with_capacity(raw_path.len() + 8);
    out.push('/');
    // Whether the path ends with a `/` (an empty, `.` or `..` last segment); set
    // for every segment, the last one decides.
    let mut trailing_slash;
    let mut i = 1usize;
    loop {
        let seg_start = out.len();
        while let Some(&b) = bytes.get(i) {
            if b == b'/' {
                break;
            }
            i += canonical_byte(bytes, i, &mut out, allow_encoded_slashes)?;
        }
        let seg = out.get(seg_start..).unwrap_or("");
        match seg {
            "" => trailing_slash = true,
            "." => {
                out.truncate(seg_start);
                trailing_slash = true;
            }
            ".." => {
                out.truncate(seg_start);
                // Drop the previous segment, never the root.
                if seg_start > 1 {
                    let prev_end = seg_start - 1;
                    let prev_start = out
                        .get(..prev_end)
                        .and_then(|head| head.bytes().rposition(|b| b == b'/'))
                        .map_or(1, |p| p + 1);
                    out.truncate(prev_start);
                }
                trailing_slash = true;
            }
            _ => {
                if is_dot_with_parameter(seg) {
                    return Err(PathError::DotSegmentParameter);
                }
                out.push('/');
                trailing_slash = false;
            }
        }
        if bytes.get(i).is_none() {
            break;
        }
        // Skip the `/` that ended this segment.
        i += 1;
    }
    if !trailing_slash && out.len() > 1 {
        out.pop();
    }
    Ok(NormalizedPath::new(out, options.case_sensitive))
}

/// True for the characters RFC 3986 calls unreserved.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// True for bytes that may stand raw in a canonical path besides unreserved ones:
/// sub-delims, `:`, `@` (RFC 3986 `pchar`) and the separator `/`.
fn is_raw_allowed(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn push_escape(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(b & 0x0F)]));
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7F
}

/// Appends the canonical form of the character at `raw[i]` (a byte or a `%XX`
/// escape) to `out`, returning how many raw bytes it used, or refuses it.
fn canonical_byte(
    raw: &[u8],
    i: usize,
    out: &mut String,
    allow_encoded_slashes: bool,
) -> Result<usize, PathError> {
    let Some(&b) = raw.get(i) else {
        return Ok(1);
    };
    match b {
        b'%' => {
            let hi = raw.get(i + 1).copied().and_then(hex_val);
            let lo = raw.get(i + 2).copied().and_then(hex_val);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::InvalidEscape(i));
            };
            let v = (hi << 4) | lo;
            if is_control(v) {
                return Err(PathError::ControlCharacter);
            }
            match v {
                b'/' if !allow_encoded_slashes => return Err(PathError::EncodedSlash),
                b'\\' if !allow_encoded_slashes => return Err(PathError::Backslash),
                _ if is_unreserved(v) => out.push(char::from(v)),
                _ => push_escape(out, v),
            }
            Ok(3)
        }
        b'\\' => {
            if !allow_encoded_slashes {
                return Err(PathError::Backslash);
            }
            // Kept encoded, so that it is one spelling and never a separator here.
            push_escape(out, b);
            Ok(1)
        }
        b'?' | b'#' => Err(PathError::QueryInPath),
        _ if is_control(b) => Err(PathError::ControlCharacter),
        _ if is_raw_allowed(b) => {
            out.push(char::from(b));
            Ok(1)
        }
        _ => {
            // Space, `"`, `<`, non-ASCII UTF-8 bytes, …: one canonical spelling.
            push_escape(out, b);
            Ok(1)
        }
    }
}

/// True when a segment is `.`/`..` followed by a `;` parameter (raw or `%3B`).
fn is_dot_with_parameter(seg: &str) -> bool {
    // Only a segment that starts with `.` can be one; this runs for every
    // segment of every request, and a `str` search is costly to set up.
    if !seg.starts_with('.') {
        return false;
    }
    let name = if let Some(pos) = seg.find(';') {
        seg.get(..pos)
    } else {
        seg.find("%3B").and_then(|pos| seg.get(..pos))
    };
    matches!(name, Some(".") | Some(".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p, false).map(NormalizedPath::into_string)
    }

    #[test]
    fn table() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("", Ok("/")),
            ("/", Ok("/")),
            ("//", Ok("/")),
            ("///a//b", Ok("/a/b")),
            ("/a//", Ok("/a/")),
            ("/./", Ok("/")),
            ("/a/./b", Ok("/a/b")),
            ("/a/.", Ok("/a/")),
            ("/a/../b", Ok("/b")),
            ("/a/b/..", Ok("/a/")),
            ("/..", Ok("/")),
            ("/../../etc/passwd", Ok("/etc/passwd")),
            ("/a/%2e%2e/b", Ok("/b")),
            ("/a/%2E%2E/%2e/b", Ok("/b")),
            ("/a/.%2e/b", Ok("/b")),
            ("/%41%62%7E%2D%5f%2E", Ok("/Ab~-_.")),
            ("/%3a%40%25", Ok("/%3A%40%25")),
            ("/a%20b", Ok("/a%20b")),
            ("/a b", Ok("/a%20b")),
            ("/café", Ok("/caf%C3%A9")),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/Admin", Ok("/Admin")),
            ("/admin;x", Ok("/admin;x")),
            ("/a;b=c/d", Ok("/a;b=c/d")),
            ("/public/..;/admin", Err(PathError::DotSegmentParameter)),
            ("/public/.;x/admin", Err(PathError::DotSegmentParameter)),
            ("/public/..%3B/admin", Err(PathError::DotSegmentParameter)),
            ("/public/%2e%2e;/admin", Err(PathError::DotSegmentParameter)),
            ("/a/%2F/b", Err(PathError::EncodedSlash)),
            ("/a/%2f/b", Err(PathError::EncodedSlash)),
            ("/a\\b", Err(PathError::Backslash)),
            ("/a%5Cb", Err(PathError::Backslash)),
            ("/a%5cb", Err(PathError::Backslash)),
            ("/%zz", Err(PathError::InvalidEscape(1))),
            ("/%4", Err(PathError::InvalidEscape(1))),
            ("/a%", Err(PathError::InvalidEscape(2))),
            ("/%00", Err(PathError::ControlCharacter)),
            ("/a\0b", Err(PathError::ControlCharacter)),
            ("/a\nb", Err(PathError::ControlCharacter)),
            ("/%7f", Err(PathError::ControlCharacter)),
            ("/a\tb", Err(PathError::ControlCharacter)),
            ("a/b", Err(PathError::NotAbsolute)),
            ("*", Err(PathError::NotAbsolute)),
            ("/a?b", Err(PathError::QueryInPath)),
            ("/a#b", Err(PathError::QueryInPath)),
        ];
        for (input, want) in cases {
            let got = n(input);
            let want = want.clone().map(str::to_string);
            assert_eq!(got, want, "normalize({input:?})");
        }
    }

    #[test]
    fn matching_form_ignores_a_trailing_slash() {
        let m = |p: &str| {
            normalize(p, false).map(|n| (n.as_str().to_string(), n.matching().to_string()))
        };
        let both = |a: &str, b: &str| Ok((a.to_string(), b.to_string()));
        assert_eq!(m("/admin/"), both("/admin/", "/admin"));
        assert_eq!(m("/Admin/"), both("/Admin/", "/admin"));
        assert_eq!(m("/admin/;x"), both("/admin/;x", "/admin"));
        assert_eq!(m("/admin//"), both("/admin/", "/admin"));
        assert_eq!(m("/"), both("/", "/"));
        assert_eq!(m("/a/b"), both("/a/b", "/a/b"));
        // Kept for globs and regexes, which may be written to need it.
        let slashed = |p: &str| {
            normalize(p, false)
                .unwrap()
                .matching_slashed()
                .map(str::to_string)
        };
        assert_eq!(slashed("/Internal/").as_deref(), Some("/internal/"));
        assert_eq!(slashed("/internal/;x").as_deref(), Some("/internal/"));
        assert_eq!(slashed("/internal"), None);
        assert_eq!(slashed("/"), None);
    }

    #[test]
    fn a_segment_of_parameters_alone_leaves_no_empty_segment() {
        // Tomcat serves `/;x/admin` as `//admin`, merged into `/admin`.
        let m = |p: &str| normalize(p, false).map(|n| n.matching().to_string());
        for (path, want) in [
            ("/;x/admin", "/admin"),
            ("/;/admin", "/admin"),
            ("/%3Bx/admin", "/admin"),
            ("/;x/admin/", "/admin"),
            ("/api/;/admin/x", "/api/admin/x"),
            ("/;x", "/"),
            ("/a;x/b;y=1", "/a/b"),
        ] {
            assert_eq!(m(path), Ok(want.to_string()), "{path}");
        }
    }

    #[test]
    fn matching_form_ignores_case_and_encoded_parameters() {
        let m = |p: &str, case_sensitive: bool| {
            let opts = PathOptions {
                allow_encoded_slashes: false,
                case_sensitive,
            };
            normalize_with(p, opts).map(|n| (n.as_str().to_string(), n.matching().to_string()))
        };
        let both = |a: &str, b: &str| Ok((a.to_string(), b.to_string()));
        assert_eq!(
            m("/Admin/secret", false),
            both("/Admin/secret", "/admin/secret")
        );
        assert_eq!(
            m("/ADMIN/secret", false),
            both("/ADMIN/secret", "/admin/secret")
        );
        assert_eq!(
            m("/%41dmin/secret", false),
            both("/Admin/secret", "/admin/secret")
        );
        assert_eq!(
            m("/Admin/secret", true),
            both("/Admin/secret", "/Admin/secret")
        );
        // `%3B` is a parameter separator for matching, kept as sent for the upstream.
        assert_eq!(
            m("/admin%3bx/secret", true),
            both("/admin%3Bx/secret", "/admin/secret")
        );
        assert_eq!(m("/Admin%3Bx", false), both("/Admin%3Bx", "/admin"));
        // Other escapes fold the same way on both sides of a comparison.
        assert_eq!(m("/caf%c3%a9", false), both("/caf%C3%A9", "/caf%c3%a9"));
    }

    #[test]
    fn encoded_slashes_when_allowed() {
        let ok = |p: &str| normalize(p, true).map(NormalizedPath::into_string);
        assert_eq!(ok("/a/%2f/b"), Ok("/a/%2F/b".to_string()));
        assert_eq!(ok("/a\\b"), Ok("/a%5Cb".to_string()));
        assert_eq!(ok("/a%5cb"), Ok("/a%5Cb".to_string()));
        // An encoded slash never splits a segment, so `..` next to it is literal text.
        assert_eq!(ok("/a/..%2F..%2Fb"), Ok("/a/..%2F..%2Fb".to_string()));
        assert_eq!(ok("/%00"), Err(PathError::ControlCharacter));
    }

    #[test]
    fn segments_and_first_segment() {
        let p = normalize("/api/v1/", false).unwrap();
        assert_eq!(p.first_segment(), "api");
        // The matching form's: its trailing `/` is gone.
        assert_eq!(p.segments().collect::<Vec<_>>(), vec!["api", "v1"]);
        let root = normalize("/", false).unwrap();
        assert_eq!(root.first_segment(), "");
    }

    #[test]
    fn split_query_keeps_query_untouched() {
        assert_eq!(split_query("/a/b?x=%2F&y"), ("/a/b", Some("x=%2F&y")));
        assert_eq!(split_query("/a#frag"), ("/a", None));
        assert_eq!(split_query("/a"), ("/a", None));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn path_strategy() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("/".to_string()),
                Just("//".to_string()),
                Just(".".to_string()),
                Just("..".to_string()),
                Just("%2e".to_string()),
                Just("%2E%2e".to_string()),
                Just("%41".to_string()),
                Just("%7e".to_string()),
                Just("%3a".to_string()),
                Just("%25".to_string()),
                Just("%2F".to_string()),
                Just("%5c".to_string()),
                Just("\\".to_string()),
                Just(";".to_string()),
                Just("é".to_string()),
                Just(" ".to_string()),
                "[a-zA-Z0-9._~!$&'()*+,;=:@-]{1,4}",
            ];
            proptest::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
        }

        proptest! {
            #[test]
            fn idempotent(raw in path_strategy(), allow in any::<bool>()) {
                if let Ok(once) = normalize(&raw, allow) {
                    let twice = normalize(once.as_str(), allow);
                    prop_assert_eq!(twice.as_ref(), Ok(&once));
                }
            }

            #[test]
            fn idempotent_on_arbitrary_strings(raw in "/\\PC{0,40}", allow in any::<bool>()) {
                if let Ok(once) = normalize(&raw, allow) {
                    let twice = normalize(once.as_str(), allow);
                    prop_assert_eq!(twice.as_ref(), Ok(&once));
                }
            }

            #[test]
            fn never_dot_segments_or_double_slash(raw in path_strategy(), allow in any::<bool>()) {
                if let Ok(p) = normalize(&raw, allow) {
                    let s = p.as_str();
                    prop_assert!(s.starts_with('/'));
                    prop_assert!(!s.contains("//"), "{}", s);
                    for seg in p.segments() {
                        prop_assert!(seg != "." && seg != "..", "{}", s);
                    }
                    prop_assert!(!s.contains('\\'));
                    if !allow {
                        prop_assert!(!s.contains("%2F") && !s.contains("%5C"));
                    }
                }
            }

            #[test]
            fn never_panics(raw in "\\PC{0,64}", allow in any::<bool>()) {
                let _ = normalize(&raw, allow);
            }
        }
    }
}
