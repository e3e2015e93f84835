//! Segment-aware globs, used by the `paths` and `workloads` rule conditions, and
//! name globs ([`Glob::name`]) for MCP tool names, which are not paths.
//!
//! A pattern and a subject are both split on `/`. Within one segment `*` matches any
//! run of characters (possibly empty) except `/`; a whole segment `**` matches zero
//! or more segments. So `/admin/**` matches `/admin`, `/admin/` and `/admin/x/y`, and
//! `spiffe://prod/ns/*/sa/web` matches any namespace but not a deeper path.
//! Everything else is literal and case-sensitive.
//!
//! Matching is O(pattern × subject) with no allocation: the classic single-backtrack
//! wildcard algorithm, applied at segment level for `**` and at byte level for `*`,
//! so a long hostile path cannot make it exponential.

/// One `/`-separated piece of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// `**`: zero or more whole segments.
    Any,
    /// A segment with no `*`: compared for equality.
    Literal(String),
    /// A segment with at least one `*`.
    Wild(String),
}

/// Shapes common enough to match with one comparison instead of the general walk.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// No `*`: string equality.
    Exact,
    /// `BASE/**` with a literal base: the base itself or anything under it.
    Subtree(String),
    /// `BASE/*` with a literal base (kept with its `/`): one more segment.
    OneSegment(String),
    /// Anything else, with the literal text before the first `*` (minus a `/`
    /// that only precedes `**`) as a cheap pre-check.
    General(String),
}

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    segs: Vec<Seg>,
    shape: Shape,
    /// Number of `/` a subject must have: exactly this without `**`, at least this
    /// with one. A cheap reject before the segment walk.
    slashes: usize,
    has_any: bool,
    /// A name glob: `*` matches any run of characters, `/` included.
    flat: bool,
}

fn shape_of(pattern: &str) -> Shape {
    let Some(first_star) = pattern.find('*') else {
        return Shape::Exact;
    };
    let head = pattern.get(..first_star).unwrap_or("");
    let tail = pattern.get(first_star..).unwrap_or("");
    if tail == "**" && head.ends_with('/') {
        return Shape::Subtree(head.trim_end_matches('/').to_string());
    }
    if tail == "*" && (head.ends_with('/') || head.is_empty()) {
        return Shape::OneSegment(head.to_string());
    }
    let prefix = if tail.starts_with("**") {
        head.strip_suffix('/').unwrap_or(head)
    } else {
        head
    };
    Shape::General(prefix.to_string())
}

impl Glob {
    /// Compiles a pattern. `**` must be a whole segment.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        let mut segs: Vec<Seg> = Vec::new();
        for piece in pattern.split('/') {
            let seg = if piece == "**" {
                // `**/**` means the same as `**`; keeping one keeps matching linear.
                if segs.last() == Some(&Seg::Any) {
                    continue;
                }
                Seg::Any
            } else if piece.contains("**") {
                return Err(format!(
                    "glob `{pattern}`: `**` must be a whole segment (write `/**/` or `*`)"
                ));
            } else if piece.contains('*') {
                Seg::Wild(piece.to_string())
            } else {
                Seg::Literal(piece.to_string())
            };
            segs.push(seg);
        }
        let has_any = segs.contains(&Seg::Any);
        let fixed = segs.iter().filter(|s| **s != Seg::Any).count();
        Ok(Glob {
            source: pattern.to_string(),
            shape: shape_of(pattern),
            slashes: fixed.saturating_sub(1),
            has_any,
            segs,
            flat: false,
        })
    }

    /// A glob over names rather than paths (MCP tool names): `*` matches any run
    /// of characters, `/` included, so `*` is every tool and `github*` every
    /// tool of a `github/…` namespace. A deny rule meant for all tools must not
    /// miss the namespaced ones.
    pub fn name(pattern: &str) -> Glob {
        Glob {
            source: pattern.to_string(),
            segs: Vec::new(),
            shape: if pattern.contains('*') {
                Shape::General(String::new())
            } else {
                Shape::Exact
            },
            slashes: 0,
            has_any: false,
            flat: true,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the pattern has no `*` at all.
    pub fn is_literal(&self) -> bool {
        if self.flat {
            return self.shape == Shape::Exact;
        }
        self.segs.iter().all(|s| matches!(s, Seg::Literal(_)))
    }

    /// True when `subject` matches the whole pattern.
    pub fn matches(&self, subject: &str) -> bool {
        if self.flat {
            return match self.shape {
                Shape::Exact => subject == self.source,
                _ => wild_match(self.source.as_bytes(), subject.as_bytes()),
            };
        }
        match &self.shape {
            Shape::Exact => subject == self.source,
            Shape::Subtree(base) => subject
                .strip_prefix(base.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            Shape::OneSegment(base) => subject
                .strip_prefix(base.as_str())
                .is_some_and(|rest| !crate::bytes::has(rest, b'/')),
            Shape::General(prefix) => {
                if !subject.starts_with(prefix.as_str()) {
                    return false;
                }
                let slashes = subject.bytes().filter(|&b| b == b'/').count();
                let plausible = if self.has_any {
                    slashes >= self.slashes
                } else {
                    slashes == self.slashes
                };
                plausible && self.walk(subject)
            }
        }
    }

    /// The general segment-by-segment match.
    fn walk(&self, subject: &str) -> bool {
        let pat = &self.segs;
        let mut p = 0usize;
        // The unconsumed rest of the subject: `Some(s)` is one or more segments
        // (`s` may be empty: one empty segment), `None` means nothing is left.
        let mut rest: Option<&str> = Some(subject);
        // Where to resume after the last `**`: pattern index after it, and the
        // subject position it has absorbed up to.
        let mut backtrack: Option<(usize, Option<&str>)> = None;
        loop {
            match pat.get(p) {
                Some(Seg::Any) => {
                    p += 1;
                    backtrack = Some((p, rest));
                    continue;
                }
                Some(seg) => {
                    if let Some(s) = rest {
                        let (head, tail) = split_segment(s);
                        let ok = match seg {
                            Seg::Literal(lit) => lit == head,
                            Seg::Wild(w) => wild_match(w.as_bytes(), head.as_bytes()),
                            Seg::Any => false,
                        };
                        if ok {
                            p += 1;
                            rest = tail;
                            continue;
                        }
                    }
                }
                None => {
                    if rest.is_none() {
                        return true;
                    }
                }
            }
            // Mismatch: let the last `**` swallow one more segment, or fail.
            match backtrack {
                Some((bp, Some(s))) => {
                    let (_, tail) = split_segment(s);
                    backtrack = Some((bp, tail));
                    p = bp;
                    rest = tail;
                }
                _ => return false,
            }
        }
    }
}

fn split_segment(s: &str) -> (&str, Option<&str>) {
    match crate::bytes::split_once(s, b'/') {
        Some((head, tail)) => (head, Some(tail)),
        None => (s, None),
    }
}

/// `*`-only wildcard match within one segment (neither side contains `/`), or
/// over a whole name ([`Glob::name`]).
fn wild_match(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pat.get(p) {
            Some(b'*') => {
                p += 1;
                star = Some((p, t));
            }
            Some(&c) if Some(&c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pat.get(p..).is_some_and(|r| r.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_globs_cross_slashes() {
        let all = Glob::name("*");
        assert!(all.matches("github/create_issue") && all.matches("x") && all.matches(""));
        assert!(Glob::name("github/*").matches("github/repos/list"));
        assert!(Glob::name("get_*").matches("get_a/b"));
        assert!(!Glob::name("get_*").matches("set_a"));
        assert!(Glob::name("a**b").matches("a/x/b"));
        let exact = Glob::name("github/create_issue");
        assert!(exact.is_literal() && exact.matches("github/create_issue"));
        assert!(!exact.matches("github/create_issue2"));
        assert!(!Glob::name("*").is_literal());
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("/admin/**", "/admin", true),
            ("/admin/**", "/admin/", true),
            ("/admin/**", "/admin/x/y", true),
            ("/admin/**", "/administrator", false),
            ("/admin/**", "/", false),
            ("/**", "/", true),
            ("/**", "/anything/at/all", true),
            ("/api/*", "/api/x", true),
            ("/api/*", "/api/", true),
            ("/api/*", "/api/x/y", false),
            ("/api/*", "/api", false),
            ("/api/*.json", "/api/a.json", true),
            ("/api/*.json", "/api/a.xml", false),
            ("/a/**/b", "/a/b", true),
            ("/a/**/b", "/a/x/y/b", true),
            ("/a/**/b", "/a/x/y/c", false),
            ("/a/**/b/**/c", "/a/1/b/2/3/c", true),
            ("/a/**/b/**/c", "/a/1/c/2/3/b", false),
            ("/a/*/c", "/a/b/c", true),
            ("/a/*/c", "/a/b/d/c", false),
            ("/exact", "/exact", true),
            ("/exact", "/Exact", false),
            ("/x*y*z", "/xaybz", true),
            ("/x*y*z", "/xaybzq", false),
            (
                "spiffe://prod/ns/*/sa/web",
                "spiffe://prod/ns/pay/sa/web",
                true,
            ),
            (
                "spiffe://prod/ns/*/sa/web",
                "spiffe://prod/ns/a/b/sa/web",
                false,
            ),
            ("spiffe://prod/**", "spiffe://prod/ns/a/sa/b", true),
            ("spiffe://prod/**", "spiffe://evil/ns/a/sa/b", false),
            ("spiffe://*/ns/a/sa/b", "spiffe://any/ns/a/sa/b", true),
        ];
        for (pat, subject, want) in cases {
            let g = Glob::new(pat).unwrap();
            assert_eq!(g.matches(subject), *want, "{pat} vs {subject}");
        }
    }

    #[test]
    fn shapes_agree_with_the_general_walk() {
        let patterns = [
            "/a",
            "/a/**",
            "/**",
            "/a/*",
            "/*",
            "*",
            "**",
            "/a/**/b",
            "/x*/a/**",
            "/a/*/b/*",
            "/a*b",
            "spiffe://t/**",
            "spiffe://t/ns/*",
            "/**/z",
            "/a/b*",
            "/a/b/**/**",
        ];
        let subjects = [
            "",
            "/",
            "/a",
            "/a/",
            "/a/b",
            "/a/x/b",
            "/ab",
            "/a/b/c",
            "/xy/a",
            "/xy/a/q",
            "/a/q/b/r",
            "/aqb",
            "spiffe://t",
            "spiffe://t/ns/x",
            "spiffe://t/ns/x/y",
            "/z",
            "/q/z",
            "/a/bc",
            "a",
            "/a/b/",
        ];
        for p in patterns {
            let g = Glob::new(p).unwrap();
            for s in subjects {
                assert_eq!(
                    g.matches(s),
                    g.walk(s),
                    "{p} vs {s:?} (shape {:?})",
                    g.shape
                );
            }
        }
    }

    #[test]
    fn double_star_inside_segment_is_an_error() {
        assert!(Glob::new("/a**").is_err());
        assert!(Glob::new("/a/**/**/b").unwrap().matches("/a/b"));
    }

    #[test]
    fn long_hostile_subject_is_fast() {
        let g = Glob::new("/**/a/**/b/**/c/**/zz").unwrap();
        let subject = "/a/b/c".repeat(5000);
        let start = std::time::Instant::now();
        assert!(!g.matches(&subject));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}
