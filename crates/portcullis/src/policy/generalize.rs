//! From concrete request paths to the few `paths` globs that cover them.
//!
//! Two steps, both conservative, because every widening here is access nobody
//! was seen to need:
//!
//! 1. Per path ([`pattern_of`]): a segment that is an identifier — a number, a
//!    UUID, a long hex or base-62 string, optionally with a file extension —
//!    becomes `*` (or `*.ext`): the caller who read order 123 will read order 124
//!    tomorrow. Any segment that already holds a `*` becomes `*` too, since a glob
//!    has no escape for a literal star (and `**` inside a segment is invalid).
//! 2. Per rule ([`generalize`]): where one prefix (at least one segment deep) has
//!    [`MIN_SIBLINGS`] or more distinct next segments, they merge: into `*` when
//!    every path below them has the same length, else into `**` (the whole
//!    subtree, which the glob also lets match the prefix itself). Two siblings
//!    stay two literal paths; the top level (`/a`, `/b`, `/c`) never merges.
//!
//! Finally a pattern covered by another one of the same rule is dropped.
//!
//! A path deeper than [`MAX_SEGMENTS`] keeps its first segments and ends in
//! `**`: the tree walks below recurse once per segment, and an audit line may
//! hold a path of 20,000 segments (a 64 KiB head allows it), which overflowed
//! the stack.

use std::collections::{BTreeMap, BTreeSet};

/// Distinct siblings under one prefix from which they merge into a glob.
pub const MIN_SIBLINGS: usize = 3;

/// Segments of a pattern, the leading empty one included, past which the rest
/// of a path becomes `**` (see the module docs).
pub const MAX_SEGMENTS: usize = 64;

/// Writes the pattern of `path` into `out` (cleared first): identifier segments
/// become `*`.
pub fn pattern_of(path: &str, out: &mut String) {
    out.clear();
    let too_deep = path.split('/').nth(MAX_SEGMENTS).is_some();
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if too_deep && i == MAX_SEGMENTS - 1 {
            out.push_str("**");
            break;
        }
        match generic_segment(seg) {
            Generic::Keep => out.push_str(seg),
            Generic::Star => out.push('*'),
            Generic::StarExt(ext) => {
                out.push_str("*.");
                out.push_str(ext);
            }
        }
    }
}

enum Generic<'a> {
    Keep,
    Star,
    StarExt(&'a str),
}

fn generic_segment(seg: &str) -> Generic<'_> {
    if seg.contains('*') || is_id(seg) {
        return Generic::Star;
    }
    if let Some((stem, ext)) = seg.rsplit_once('.') {
        let short_ext =
            (1..=5).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric());
        if short_ext && is_id(stem) {
            return Generic::StarExt(ext);
        }
    }
    Generic::Keep
}

/// True for segments that name one object rather than a kind of thing.
pub fn is_id(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if is_uuid(b) {
        return true;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    // Hashes and object ids (24-hex Mongo ids, git shas, 12+ hex request ids).
    if b.len() >= 12 && digits > 0 && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    // ULIDs, base-62 keys: long, letters and digits mixed, no word separators.
    b.len() >= 16
        && digits >= 2
        && b.iter().any(u8::is_ascii_alphabetic)
        && b.iter().all(u8::is_ascii_alphanumeric)
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A path trie: one node per segment.
#[derive(Debug, Default, Clone)]
struct Node {
    /// A pattern ends here.
    terminal: bool,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn insert(&mut self, pattern: &str) {
        let mut node = self;
        for seg in pattern.split('/') {
            node = node.children.entry(seg.to_string()).or_default();
        }
        node.terminal = true;
    }

    fn merge(&mut self, other: Node) {
        self.terminal |= other.terminal;
        for (seg, child) in other.children {
            self.children.entry(seg).or_default().merge(child);
        }
    }

    /// Lengths (in segments below this node) of the patterns ending at or under it.
    fn depths(&self, below: usize, out: &mut BTreeSet<usize>) {
        if self.terminal {
            out.insert(below);
        }
        for child in self.children.values() {
            child.depths(below + 1, out);
        }
    }

    /// Merges siblings bottom-up. `depth` counts segments from the start: the node
    /// of `/` (the empty first segment) has depth 1 and never merges its children.
    fn collapse(&mut self, depth: usize) {
        for child in self.children.values_mut() {
            child.collapse(depth + 1);
        }
        if depth < 2 || self.children.len() < MIN_SIBLINGS {
            return;
        }
        let mut depths = BTreeSet::new();
        for child in self.children.values() {
            child.depths(0, &mut depths);
        }
        let children = std::mem::take(&mut self.children);
        if depths.len() == 1 {
            let mut merged = Node::default();
            for (_, child) in children {
                merged.merge(child);
            }
            merged.collapse(depth + 1);
            self.children.insert("*".to_string(), merged);
        } else {
            let subtree = Node {
                terminal: true,
                children: BTreeMap::new(),
            };
            self.children.insert("**".to_string(), subtree);
        }
    }

    fn emit(&self, prefix: &mut Vec<String>, out: &mut Vec<String>) {
        if self.terminal {
            out.push(prefix.join("/"));
        }
        for (seg, child) in &self.children {
            prefix.push(seg.clone());
            child.emit(prefix, out);
            prefix.pop();
        }
    }
}

/// The globs that cover `patterns` (outputs of [`pattern_of`]), sorted, none
/// covered by another.
pub fn generalize<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut root = Node::default();
    for p in patterns {
        root.insert(p);
    }
    // The root's children are first segments (`""` for `/...` paths): depth 0.
    let mut out = Vec::new();
    for (seg, child) in root.children.iter_mut() {
        child.collapse(1);
        child.emit(&mut vec![seg.clone()], &mut out);
    }
    drop_covered(out)
}

/// `globs` sorted, without those another one of them covers.
pub fn drop_covered(mut globs: Vec<String>) -> Vec<String> {
    // Twins would cover each other and both go.
    globs.sort();
    globs.dedup();
    let segs: Vec<Vec<&str>> = globs.iter().map(|p| p.split('/').collect()).collect();
    // Only a pattern with a star can cover another. Those are indexed by their
    // first segment when it is literal, since they can cover only patterns
    // with that first segment: one caller's 60,000 distinct `/p{i}/x/*` would
    // otherwise be compared each with each (25 s for 180,000 audit lines).
    let first = |i: usize| segs[i].get(1).copied().unwrap_or("");
    let mut wild_under: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut wild_anywhere: Vec<usize> = Vec::new();
    for i in (0..globs.len()).filter(|&i| globs[i].contains('*')) {
        if first(i).contains('*') {
            wild_anywhere.push(i);
        } else {
            wild_under.entry(first(i)).or_default().push(i);
        }
    }
    let covered = |i: usize| {
        let same_first = wild_under.get(first(i)).map_or(&[][..], Vec::as_slice);
        same_first
            .iter()
            .chain(&wild_anywhere)
            .any(|&j| j != i && covers(&segs[j], &segs[i]))
    };
    let keep: Vec<bool> = (0..globs.len()).map(|i| !covered(i)).collect();
    globs
        .into_iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(p))
        .collect()
}

/// True when every path glob `p` matches is matched by glob `q` too (both in the
/// restricted form this module writes: literal segments, `*`, `*.ext`, `**`).
pub fn covers(q: &[&str], p: &[&str]) -> bool {
    match q.split_first() {
        None => p.is_empty(),
        Some((&"**", rest)) => (0..=p.len()).any(|i| covers(rest, &p[i..])),
        Some((qs, rest)) => match p.split_first() {
            Some((ps, p_rest)) if *ps != "**" && segment_covers(qs, ps) => covers(rest, p_rest),
            _ => false,
        },
    }
}

fn segment_covers(q: &str, p: &str) -> bool {
    q == p
        || q == "*"
        || q.strip_prefix('*')
            .is_some_and(|suffix| !suffix.contains('*') && p.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(path: &str) -> String {
        let mut out = String::new();
        pattern_of(path, &mut out);
        out
    }

    fn gen(paths: &[&str]) -> Vec<String> {
        let patterns: Vec<String> = paths.iter().map(|p| pat(p)).collect();
        generalize(patterns.iter().map(String::as_str))
    }

    /// A 20,000-segment path (an audit line may hold one) overflowed the stack
    /// of the tree walks; it is cut to `MAX_SEGMENTS` ending in `**`.
    #[test]
    fn a_very_deep_path_ends_in_a_subtree_glob() {
        let deep = "/a".repeat(20_000);
        let mut p = String::new();
        pattern_of(&deep, &mut p);
        assert_eq!(p, format!("{}/**", "/a".repeat(MAX_SEGMENTS - 2)));
        assert_eq!(generalize([p.as_str()]), [p.clone()]);
        // At the bound, nothing is cut.
        let at_bound = "/a".repeat(MAX_SEGMENTS - 1);
        pattern_of(&at_bound, &mut p);
        assert_eq!(p, at_bound);
    }

    #[test]
    fn identifiers_become_stars() {
        assert_eq!(pat("/api/orders/12345"), "/api/orders/*");
        assert_eq!(
            pat("/api/orders/3f2b8c1e-9a4d-4e1f-8b2a-0c9d8e7f6a5b/items"),
            "/api/orders/*/items"
        );
        assert_eq!(pat("/blobs/5f1d7c3a9b2e4f6a8c0d1e2f"), "/blobs/*");
        assert_eq!(pat("/o/01ARZ3NDEKTSV4RRFFQ69G5FAV"), "/o/*");
        assert_eq!(pat("/reports/2024/q1.pdf"), "/reports/*/q1.pdf");
        assert_eq!(pat("/exports/881.csv"), "/exports/*.csv");
        // Words, versions and short mixed names stay.
        assert_eq!(pat("/v1/users/me/settings"), "/v1/users/me/settings");
        assert_eq!(pat("/api/user-settings-v2"), "/api/user-settings-v2");
        assert_eq!(pat("/accounts/deadline"), "/accounts/deadline");
        assert_eq!(pat("/"), "/");
        assert_eq!(pat("/a/"), "/a/");
    }

    #[test]
    fn stars_in_a_request_path_cannot_widen_past_their_segment() {
        assert_eq!(pat("/files/a**b/c"), "/files/*/c");
        assert_eq!(pat("/files/**"), "/files/*");
        // And the result is a valid glob.
        portcullis_policy::Glob::new(&pat("/x/a**b")).unwrap();
    }

    #[test]
    fn two_siblings_stay_literal() {
        assert_eq!(
            gen(&["/docs/guide/intro", "/docs/guide/setup"]),
            ["/docs/guide/intro", "/docs/guide/setup"]
        );
    }

    #[test]
    fn several_siblings_of_one_depth_become_a_star() {
        assert_eq!(
            gen(&["/docs/guide/intro", "/docs/guide/setup", "/docs/guide/faq"]),
            ["/docs/guide/*"]
        );
        // Merged subtrees merge again below.
        assert_eq!(gen(&["/s/a/x", "/s/b/y", "/s/c/z"]), ["/s/*/*"],);
    }

    #[test]
    fn siblings_of_mixed_depth_become_the_subtree() {
        assert_eq!(
            gen(&[
                "/static/css/a.css",
                "/static/js/app.js",
                "/static/img/x/y.png"
            ]),
            ["/static/**"]
        );
    }

    #[test]
    fn the_top_level_never_merges() {
        assert_eq!(gen(&["/a", "/b", "/c", "/d"]), ["/a", "/b", "/c", "/d"]);
    }

    #[test]
    fn ids_and_subresources_stay_apart() {
        assert_eq!(
            gen(&[
                "/api/orders/1",
                "/api/orders/2",
                "/api/orders/3/items",
                "/api/orders"
            ]),
            ["/api/orders", "/api/orders/*", "/api/orders/*/items"]
        );
    }

    #[test]
    fn twins_and_covered_globs_leave_one() {
        let globs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(drop_covered(globs(&["/a/*", "/a/x", "/a/*"])), ["/a/*"]);
        assert_eq!(
            drop_covered(globs(&["/b/**", "/b/*/c", "/a"])),
            ["/a", "/b/**"]
        );
    }

    #[test]
    fn covered_patterns_are_dropped() {
        // `/orders/*` (from ids) covers the literal `/orders/export`.
        assert_eq!(gen(&["/orders/17", "/orders/export"]), ["/orders/*"]);
        assert!(covers(&["", "a", "**"], &["", "a"]));
        assert!(covers(&["", "a", "**"], &["", "a", "*", "b"]));
        assert!(!covers(&["", "a", "*"], &["", "a", "**"]));
        assert!(covers(&["", "a", "*"], &["", "a", "*.json"]));
        assert!(!covers(&["", "a", "*.json"], &["", "a", "*"]));
    }

    #[test]
    fn every_generalized_glob_matches_its_inputs_and_compiles() {
        let paths = [
            "/static/css/a.css",
            "/static/js/app.js",
            "/static/img/x/y.png",
            "/api/orders/9",
            "/api/orders/9/items",
            "/docs/guide/intro",
            "/docs/guide/setup",
            "/docs/guide/faq",
            "/",
        ];
        let globs: Vec<portcullis_policy::Glob> = gen(&paths)
            .iter()
            .map(|g| portcullis_policy::Glob::new(g).unwrap())
            .collect();
        for p in paths {
            assert!(globs.iter().any(|g| g.matches(p)), "{p} not covered");
        }
        assert!(!globs.iter().any(|g| g.matches("/admin")));
        assert!(!globs.iter().any(|g| g.matches("/docs/internal/x")));
    }
}
