//! The compiled route table: which route a request belongs to (SPEC §2 `routes`).
//!
//! Matching rules:
//! - routes are tried in config order; the first that fits wins;
//! - `hosts`: exact names, compared case-insensitively, with the request's port and
//!   a trailing `.` ignored; or `*.example.com`, which matches **one or more** labels
//!   before `.example.com` (`a.example.com`, `a.b.example.com`) but not
//!   `example.com` itself. No `hosts` means any host;
//! - at most one of `path` (exact), `path_prefix` (segment-aware: `/api` matches
//!   `/api` and `/api/x`, not `/apix`; `/api/` matches `/api/` and `/api/x`, not
//!   `/api`), `path_regex` (must match the whole normalized path). Config paths are
//!   normalized like request paths. None of them means any path;
//! - `methods`: case-insensitive; none means any method.
//!
//! Lookup is indexed so that 1,000 routes cost about as much as a handful: each route
//! goes into one bucket keyed by (exact host | wildcard suffix | any host) ×
//! (first path segment | any path). A lookup merges the few buckets that can apply,
//! in ascending route order, and tests candidates until the first match — exactly
//! the answer of a linear scan.

use crate::bytes::FxMap;
use crate::decision::{Decision, RequestFacts};
use crate::path::{first_segment, normalize_with, NormalizedPath, PathError, PathOptions};
use crate::rules::CompiledPolicy;
use portcullis_config::{AuthMode, Config, ExplainToCaller, PolicyMode, RouteConfig};
use portcullis_core::Identity;
use regex::Regex;
use std::borrow::Cow;
use std::sync::Arc;

/// A host pattern from `match.hosts`, lowercased, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Wildcard(String),
}

impl HostPattern {
    fn parse(raw: &str) -> Result<HostPattern, String> {
        let h = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        if h.is_empty() {
            return Err("empty host".to_string());
        }
        if let Some(suffix) = h.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') || suffix.starts_with('.') {
                return Err(format!(
                    "host `{raw}`: a wildcard is written `*.example.com`"
                ));
            }
            return Ok(HostPattern::Wildcard(format!(".{suffix}")));
        }
        if h.contains('*') {
            return Err(format!(
                "host `{raw}`: `*` is allowed only as the whole first label (`*.example.com`)"
            ));
        }
        if !h.starts_with('[') && h.contains(':') || h.contains("]:") {
            return Err(format!(
                "host `{raw}`: leave out the port (the request's port is ignored)"
            ));
        }
        if h.contains(['/', ' ', '@']) {
            return Err(format!("host `{raw}` is not a host name"));
        }
        Ok(HostPattern::Exact(h))
    }

    /// `host` is already canonical (see [`canonical_host`]).
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.ends_with('.')),
        }
    }

    /// True when `self` matches every host `other` matches.
    fn covers(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
            (HostPattern::Wildcard(_), HostPattern::Exact(b)) => self.matches(b),
            (HostPattern::Wildcard(a), HostPattern::Wildcard(b)) => b.ends_with(a.as_str()),
            (HostPattern::Exact(_), HostPattern::Wildcard(_)) => false,
        }
    }
}

/// Whether `host` (as a request names it) fits `pattern` as written in
/// `match.hosts` (exact, or `*.example.com` for one or more labels). The one
/// host matcher: routes and `login.allowed_redirect_hosts` both use it.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    HostPattern::parse(pattern).is_ok_and(|p| p.matches(&canonical_host(host)))
}

/// The request host as routes compare it: port and trailing dot removed, lowercase.
/// Allocates only when the host has uppercase letters.
pub fn canonical_host(host: &str) -> Cow<'_, str> {
    // The common case — lowercase, no port, no trailing dot — in one scan.
    if !host.ends_with('.') && host.bytes().all(|b| b != b':' && !b.is_ascii_uppercase()) {
        return Cow::Borrowed(host);
    }
    let without_port = if host.starts_with('[') {
        match host.bytes().position(|b| b == b']') {
            Some(end) => host.get(..=end).unwrap_or(host),
            None => host,
        }
    } else {
        match crate::bytes::rsplit_once(host, b':') {
            Some((h, port))
                if !crate::bytes::has(h, b':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                h
            }
            _ => host,
        }
    };
    let h = without_port.strip_suffix('.').unwrap_or(without_port);
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

/// How a route matches the path.
#[derive(Debug, Clone)]
enum PathMatcher {
    Any,
    Exact(String),
    Prefix(String),
    /// The compiled (anchored) regex and the source as written.
    Regex(Regex, String),
}

/// Segment-aware prefix test on normalized paths.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" || prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl PathMatcher {
    /// `slashed`: the path with the trailing `/` it had (see
    /// `NormalizedPath::matching_slashed`), which a regex is tried with too.
    fn matches(&self, path: &str, slashed: Option<&str>) -> bool {
        match self {
            PathMatcher::Any => true,
            PathMatcher::Exact(p) => p == path,
            PathMatcher::Prefix(p) => prefix_matches(p, path),
            PathMatcher::Regex(r, _) => r.is_match(path) || slashed.is_some_and(|s| r.is_match(s)),
        }
    }

    /// The first-segment index key, or `None` when any first segment can match.
    fn index_key(&self) -> Option<&str> {
        match self {
            PathMatcher::Exact(p) => Some(first_segment(p)),
            PathMatcher::Prefix(p) if p != "/" => Some(first_segment(p)),
            _ => None,
        }
    }

    fn is_everything(&self) -> bool {
        match self {
            PathMatcher::Any => true,
            PathMatcher::Prefix(p) => p == "/",
            _ => false,
        }
    }

    /// True when `self` matches every path `other` matches (conservative: `false`
    /// when unsure, e.g. between different regexes).
    fn covers(&self, other: &PathMatcher) -> bool {
        if self.is_everything() {
            return true;
        }
        match (self, other) {
            (PathMatcher::Prefix(p), PathMatcher::Exact(e)) => prefix_matches(p, e),
            (PathMatcher::Prefix(p), PathMatcher::Prefix(q)) => prefix_matches(p, q),
            (PathMatcher::Exact(a), PathMatcher::Exact(b)) => a == b,
            (PathMatcher::Regex(r, _), PathMatcher::Exact(e)) => r.is_match(e),
            (PathMatcher::Regex(_, a), PathMatcher::Regex(_, b)) => a == b,
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            PathMatcher::Any => "any path".to_string(),
            PathMatcher::Exact(p) => format!("path {p}"),
            PathMatcher::Prefix(p) => format!("path_prefix {p}"),
            PathMatcher::Regex(_, src) => format!("path_regex {src}"),
        }
    }
}

/// One route, compiled: its matcher, its policy and the settings the proxy needs.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    name: Arc<str>,
    index: usize,
    config: RouteConfig,
    explain_to_caller: ExplainToCaller,
    hosts: Vec<HostPattern>,
    path: PathMatcher,
    /// Uppercase.
    methods: Vec<String>,
    policy: Option<CompiledPolicy>,
}

impl CompiledRoute {
    fn compile(
        index: usize,
        config: &RouteConfig,
        global_explain: ExplainToCaller,
        options: PathOptions,
    ) -> Result<CompiledRoute, Vec<String>> {
        let mut errors = Vec::new();
        let m = &config.matcher;
        let mut hosts = Vec::with_capacity(m.hosts.len());
        for h in &m.hosts {
            match HostPattern::parse(h) {
                Ok(p) => hosts.push(p),
                Err(e) => errors.push(format!("match.hosts: {e}")),
            }
        }
        let given = [
            m.path.is_some(),
            m.path_prefix.is_some(),
            m.path_regex.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given > 1 {
            errors
                .push("match: give only one of `path`, `path_prefix` and `path_regex`".to_string());
        }
        let config_path = |key: &str, p: &str, errors: &mut Vec<String>| -> String {
            if !p.starts_with('/') {
                errors.push(format!("match.{key}: `{p}` must start with `/`"));
                return String::new();
            }
            // Compared with request paths in their matching form, so written the same way.
            match normalize_with(p, options) {
                Ok(n) => n.matching().to_string(),
                Err(e) => {
                    errors.push(format!("match.{key}: `{p}`: {e}"));
                    String::new()
                }
            }
        };
        let path = if let Some(p) = &m.path {
            PathMatcher::Exact(config_path("path", p, &mut errors))
        } else if let Some(p) = &m.path_prefix {
            PathMatcher::Prefix(config_path("path_prefix", p, &mut errors))
        } else if let Some(r) = &m.path_regex {
            // Anchored, and matching either case unless the config asks for exact
            // case: compiled by the config validator's own function, so `check` and
            // the route table never disagree about a regex.
            match portcullis_config::compile_path_regex(r, options.case_sensitive) {
                Ok(re) => PathMatcher::Regex(re, r.clone()),
                Err(e) => {
                    errors.push(format!("match.path_regex: {e}"));
                    PathMatcher::Any
                }
            }
        } else {
            PathMatcher::Any
        };
        let mut methods = Vec::with_capacity(m.methods.len());
        for meth in &m.methods {
            if meth.is_empty() || !meth.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
                errors.push(format!("match.methods: `{meth}` is not an HTTP method"));
            } else {
                methods.push(meth.to_ascii_uppercase());
            }
        }
        // HEAD is a GET without its body to the server behind (it runs the GET
        // handler): judged by the GET route, never by a catch-all after it.
        crate::rules::head_with_get(&mut methods);
        let mut explain_to_caller = global_explain;
        let policy = match &config.policy {
            None => None,
            Some(p) => {
                if let Some(level) = p.explain_to_caller {
                    explain_to_caller = level;
                }
                match CompiledPolicy::compile_with(p, options.case_sensitive) {
                    Ok(c) => Some(c),
                    Err(errs) => {
                        errors.extend(errs);
                        None
                    }
                }
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(CompiledRoute {
            name: Arc::from(config.display_name(index)),
            index,
            config: config.clone(),
            explain_to_caller,
            hosts,
            path,
            methods,
            policy,
        })
    }

    /// The route's name (`name`, else `route-INDEX`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route's name, shared (cheap to clone into a [`Decision`]).
    pub fn name_arc(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// The route's position in `routes`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The configuration this route was compiled from (upstream, timeouts, …).
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    /// `auth: required | optional | none`.
    pub fn auth(&self) -> AuthMode {
        self.config.auth
    }

    /// `mode: enforce | audit`.
    pub fn mode(&self) -> PolicyMode {
        self.config.mode
    }

    /// How much a 403 body reveals: the route's `policy.explain_to_caller`, else the
    /// global setting.
    pub fn explain_to_caller(&self) -> ExplainToCaller {
        self.explain_to_caller
    }

    /// The compiled policy; `None` when the route has none (see
    /// [`evaluate`](Self::evaluate) for what that means).
    pub fn policy(&self) -> Option<&CompiledPolicy> {
        self.policy.as_ref()
    }

    /// True when the route's `match` fits. `host` must be canonical.
    fn matches(&self, host: &str, method: &str, path: &str, slashed: Option<&str>) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host)))
            && (self.methods.is_empty()
                || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && self.path.matches(path, slashed)
    }

    /// True when this route matches every request `later` matches.
    fn covers(&self, later: &CompiledRoute) -> bool {
        let hosts = self.hosts.is_empty()
            || (!later.hosts.is_empty()
                && later
                    .hosts
                    .iter()
                    .all(|b| self.hosts.iter().any(|a| a.covers(b))));
        let methods = self.methods.is_empty()
            || (!later.methods.is_empty()
                && later.methods.iter().all(|m| self.methods.contains(m)));
        hosts && methods && self.path.covers(&later.path)
    }

    fn describe(&self) -> String {
        match &self.config.name {
            Some(n) => format!("routes[{}] ({n})", self.index),
            None => format!("routes[{}]", self.index),
        }
    }
}

/// Route indexes by first path segment, plus those that match any first segment.
/// Every list is in ascending route order.
#[derive(Debug, Clone, Default)]
struct SegmentIndex {
    by_segment: FxMap<String, Vec<u32>>,
    any: Vec<u32>,
}

impl SegmentIndex {
    fn insert(&mut self, key: Option<&str>, route: u32) {
        match key {
            Some(k) => self
                .by_segment
                .entry(k.to_string())
                .or_default()
                .push(route),
            None => self.any.push(route),
        }
    }
}

/// The non-standard methods named by any route's `match.methods` or rules.
fn extension_methods(config: &Config) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for route in &config.routes {
        let rules = route
            .policy
            .iter()
            .flat_map(|p| p.deny.iter().chain(&p.allow))
            .filter_map(|r| r.methods.as_ref())
            .flatten();
        for m in route.matcher.methods.iter().chain(rules) {
            let m = m.to_ascii_uppercase();
            let standard = matches!(
                m.as_str(),
                "GET"
                    | "HEAD"
                    | "POST"
                    | "PUT"
                    | "DELETE"
                    | "OPTIONS"
                    | "TRACE"
                    | "PATCH"
                    | "CONNECT"
            );
            if !standard && !out.contains(&m) {
                out.push(m);
            }
        }
    }
    out
}

/// How many index lists a lookup can merge without allocating. Beyond it (more than
/// six distinct wildcard depths) lookups fall back to a linear scan.
const MAX_LISTS: usize = 16;

/// All routes of a config, compiled once per load; immutable and cheap to share.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<CompiledRoute>,
    by_host: FxMap<String, SegmentIndex>,
    /// Keyed by the wildcard's suffix without the leading dot (`example.com`).
    by_wildcard: FxMap<String, SegmentIndex>,
    /// The distinct label counts of wildcard suffixes, so a lookup tries only the
    /// host suffixes that can be keys.
    wildcard_depths: Vec<usize>,
    any_host: SegmentIndex,
    path_options: PathOptions,
    /// Methods outside RFC 9110's standard set that some route names (in `match`
    /// or a rule); any other non-standard method is refused before routing.
    extension_methods: Vec<String>,
}

impl RouteTable {
    /// Compiles every route of `config`. Errors are prefixed with the route
    /// (`routes[3] (orders): match.path_regex: …`).
    pub fn compile(config: &Config) -> Result<RouteTable, Vec<String>> {
        let global = config.policy.explain_to_caller;
        let options = PathOptions {
            allow_encoded_slashes: config.server.allow_encoded_slashes,
            case_sensitive: config.server.case_sensitive_paths,
        };
        let mut errors = Vec::new();
        let mut routes = Vec::with_capacity(config.routes.len());
        if config.routes.len() > u32::MAX as usize {
            return Err(vec!["too many routes".to_string()]);
        }
        for (i, rc) in config.routes.iter().enumerate() {
            match CompiledRoute::compile(i, rc, global, options) {
                Ok(r) => routes.push(r),
                Err(errs) => {
                    let who = match &rc.name {
                        Some(n) => format!("routes[{i}] ({n})"),
                        None => format!("routes[{i}]"),
                    };
                    errors.extend(errs.into_iter().map(|e| format!("{who}: {e}")));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut table = RouteTable {
            routes: Vec::new(),
            by_host: FxMap::default(),
            by_wildcard: FxMap::default(),
            wildcard_depths: Vec::new(),
            any_host: SegmentIndex::default(),
            path_options: options,
            extension_methods: extension_methods(config),
        };
        for (i, r) in routes.iter().enumerate() {
            // Bounded by the check above.
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            let key = r.path.index_key();
            if r.hosts.is_empty() {
                table.any_host.insert(key, idx);
            }
            for h in &r.hosts {
                match h {
                    HostPattern::Exact(name) => {
                        table
                            .by_host
                            .entry(name.clone())
                            .or_default()
                            .insert(key, idx);
                    }
                    HostPattern::Wildcard(suffix) => {
                        let bare = suffix.trim_start_matches('.');
                        let depth = bare.split('.').count();
                        if !table.wildcard_depths.contains(&depth) {
                            table.wildcard_depths.push(depth);
                        }
                        table
                            .by_wildcard
                            .entry(bare.to_string())
                            .or_default()
                            .insert(key, idx);
                    }
                }
            }
        }
        // A route listing the same host twice lands twice in a bucket; keep each
        // list strictly ascending so lookups can rely on it.
        for seg in table
            .by_host
            .values_mut()
            .chain(table.by_wildcard.values_mut())
            .chain(std::iter::once(&mut table.any_host))
        {
            seg.any.dedup();
            for list in seg.by_segment.values_mut() {
                list.dedup();
            }
        }
        table.routes = routes;
        Ok(table)
    }

    /// The compiled routes, in config order.
    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }

    /// The route at `index`.
    pub fn get(&self, index: usize) -> Option<&CompiledRoute> {
        self.routes.get(index)
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// `server.allow_encoded_slashes`.
    pub fn allow_encoded_slashes(&self) -> bool {
        self.path_options.allow_encoded_slashes
    }

    /// Normalizes a request path with this config's [`PathOptions`]: the one way a
    /// front end turns a raw path into what routes and rules are matched against.
    pub fn normalize(&self, raw_path: &str) -> Result<NormalizedPath, PathError> {
        normalize_with(raw_path, self.path_options)
    }

    /// Whether a request with this method may be judged at all. The methods of RFC
    /// 9110 and PATCH are, as sent (uppercase); `CONNECT` never is (this is not a
    /// forward proxy); any other method only when a route names it exactly. A
    /// lower-case `get` is not GET to every upstream, so it is refused rather than
    /// judged as one thing and served as another.
    pub fn method_allowed(&self, method: &str) -> bool {
        match method {
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "OPTIONS" | "TRACE" | "PATCH" => true,
            "CONNECT" => false,
            other => self.extension_methods.iter().any(|m| m == other),
        }
    }

    /// The first route (in config order) whose `match` fits the request.
    /// `host` may carry a port and any case; `method` is compared case-insensitively.
    pub fn find(
        &self,
        host: &str,
        method: &str,
        path: &NormalizedPath,
    ) -> Option<(usize, &CompiledRoute)> {
        let host = canonical_host(host);
        let host = host.as_ref();
        let seg = path.first_segment();
        let mut lists: [&[u32]; MAX_LISTS] = [&[]; MAX_LISTS];
        let mut n = 0usize;
        let mut fits = push_lists(&mut lists, &mut n, self.by_host.get(host), seg);
        for &depth in &self.wildcard_depths {
            if let Some(suffix) = suffix_with_labels(host, depth) {
                fits &= push_lists(&mut lists, &mut n, self.by_wildcard.get(suffix), seg);
            }
        }
        fits &= push_lists(&mut lists, &mut n, Some(&self.any_host), seg);
        if !fits {
            return self.find_linear_canonical(
                host,
                method,
                path.matching(),
                path.matching_slashed(),
            );
        }
        let lists = lists.get_mut(..n).unwrap_or_default();
        // k-way merge in ascending route order; the first candidate that matches is
        // the first route a linear scan would have found.
        let mut last: Option<u32> = None;
        loop {
            let mut best: Option<(usize, u32)> = None;
            for (li, list) in lists.iter().enumerate() {
                if let Some(&head) = list.first() {
                    if best.is_none_or(|(_, b)| head < b) {
                        best = Some((li, head));
                    }
                }
            }
            let (li, idx) = best?;
            if let Some(list) = lists.get_mut(li) {
                *list = list.get(1..).unwrap_or_default();
            }
            if last == Some(idx) {
                continue;
            }
            last = Some(idx);
            let i = idx as usize;
            if let Some(route) = self.routes.get(i) {
                if route.matches(host, method, path.matching(), path.matching_slashed()) {
                    return Some((i, route));
                }
            }
        }
    }

    /// Reference lookup: a plain scan in config order. Used when the index cannot
    /// help and by tests as the definition of the right answer.
    pub(crate) fn find_linear_canonical(
        &self,
        host: &str,
        method: &str,
        path: &str,
        slashed: Option<&str>,
    ) -> Option<(usize, &CompiledRoute)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(host, method, path, slashed))
    }

    /// Routes the request and judges it: the matched route's decision, or
    /// [`Decision::no_route`]. The explanation is built for denials only.
    pub fn decide(&self, identity: &Identity, facts: &RequestFacts<'_>) -> Decision {
        self.decide_with(identity, facts, false)
    }

    /// Like [`decide`](Self::decide); `explain` forces the full explanation.
    pub fn decide_with(
        &self,
        identity: &Identity,
        facts: &RequestFacts<'_>,
        explain: bool,
    ) -> Decision {
        match self.find(facts.host, facts.method, facts.path) {
            Some((_, route)) => route.evaluate_with(identity, facts, explain),
            None => Decision::no_route(),
        }
    }

    /// Configuration smells, one sentence each: routes that can never match because
    /// one earlier route matches everything they would (same or broader hosts,
    /// covering path, superset of methods), and rules that can never matter. A route
    /// hidden only by the union of several earlier routes is not reported.
    pub fn shadowed(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (j, later) in self.routes.iter().enumerate() {
            if let Some(earlier) = self.routes.iter().take(j).find(|e| e.covers(later)) {
                out.push(format!(
                    "{} ({}) can never match: {} ({}) before it matches every request it would",
                    later.describe(),
                    later.path.describe(),
                    earlier.describe(),
                    earlier.path.describe(),
                ));
            }
            if let Some(p) = &later.policy {
                for w in p.warnings() {
                    out.push(format!("{}: {w}", later.describe()));
                }
            }
        }
        out
    }
}

/// Adds the non-empty candidate lists of `index` for first segment `seg`; false
/// when they do not fit in `lists`.
fn push_lists<'a>(
    lists: &mut [&'a [u32]; MAX_LISTS],
    n: &mut usize,
    index: Option<&'a SegmentIndex>,
    seg: &str,
) -> bool {
    let Some(index) = index else { return true };
    let by_seg = index.by_segment.get(seg).map(Vec::as_slice);
    for list in [by_seg, Some(index.any.as_slice())].into_iter().flatten() {
        if list.is_empty() {
            continue;
        }
        match lists.get_mut(*n) {
            Some(slot) => {
                *slot = list;
                *n += 1;
            }
            None => return false,
        }
    }
    true
}

/// The last `labels` labels of `host` (`a.b.example.com`, 2 → `example.com`), when
/// at least one label precedes them.
fn suffix_with_labels(host: &str, labels: usize) -> Option<&str> {
    let mut dots = 0usize;
    for (pos, b) in host.bytes().enumerate().rev() {
        if b == b'.' {
            dots += 1;
            if dots == labels {
                return host.get(pos + 1..);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
