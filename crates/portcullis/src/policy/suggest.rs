//! `policy suggest`: the narrowest allow rules that would have let through what the
//! policy let through.
//!
//! Reading keeps, per route, one entry per (path pattern, method, caller) with a
//! request count — patterns, not concrete paths (ids are already `*`), so the
//! aggregate stays small however long the file. Building collects, per principal
//! ([`grouping`]) and method, the patterns used, generalizes them
//! ([`generalize`]), and lets methods that come to the same paths share a rule
//! (see [`rules_for`] for how machines and people differ).
//! A rule therefore never allows a method on a path where its callers were not
//! seen using that method (up to the globs).

use super::audit_read::{AuditLine, Decision, Kind};
use super::generalize::{covers, drop_covered, generalize, pattern_of};
use super::grouping::{group_holders, principals, Caller, CallerKind, Principal};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What one route's permitted traffic came to.
#[derive(Debug, Default)]
pub struct RouteTraffic {
    /// Permitted requests (allowed, or denied only in audit mode).
    pub permitted: u64,
    /// Of those, denied in audit mode: the policy in force would refuse them.
    pub shadow_denied: u64,
    /// Permitted requests with no identity, which no rule can name.
    pub anonymous: u64,
    callers: Vec<Caller>,
    /// Same id from two issuers: two callers.
    caller_index: HashMap<(CallerKind, Option<u16>, String), u32>,
    /// The token issuers seen (few: one per configured provider).
    issuers: Vec<String>,
    patterns: Vec<PatternTraffic>,
    pattern_index: HashMap<String, usize>,
}

#[derive(Debug)]
struct PatternTraffic {
    pattern: String,
    /// Method (upper case) → caller → requests.
    methods: Vec<(String, HashMap<u32, u64>)>,
}

/// Reads audit lines into per-route traffic.
#[derive(Debug, Default)]
pub struct Suggester {
    only_route: Option<String>,
    routes: Vec<(String, RouteTraffic)>,
    route_index: HashMap<String, usize>,
    /// Scratch buffer for the current line's pattern.
    pattern: String,
}

impl Suggester {
    /// A reader for every route, or only for `only_route`.
    pub fn new(only_route: Option<String>) -> Self {
        Suggester {
            only_route,
            ..Default::default()
        }
    }

    /// Takes in one audit line.
    pub fn observe(&mut self, line: &AuditLine<'_>) {
        if !line.was_permitted() {
            return;
        }
        let Some(route) = line.route.as_deref() else {
            return;
        };
        if self.only_route.as_deref().is_some_and(|r| r != route) {
            return;
        }
        let ri = match self.route_index.get(route) {
            Some(&i) => i,
            None => {
                self.routes
                    .push((route.to_string(), RouteTraffic::default()));
                self.route_index
                    .insert(route.to_string(), self.routes.len() - 1);
                self.routes.len() - 1
            }
        };
        let Some((_, traffic)) = self.routes.get_mut(ri) else {
            return;
        };
        traffic.permitted += 1;
        if line.decision == Decision::Deny {
            traffic.shadow_denied += 1;
        }
        let Some(caller) = traffic.caller(line) else {
            traffic.anonymous += 1;
            return;
        };
        pattern_of(&line.path, &mut self.pattern);
        traffic.count(&self.pattern, &line.method, caller);
    }

    /// The traffic seen, per route, in the order routes first appeared.
    pub fn into_routes(self) -> Vec<(String, RouteTraffic)> {
        self.routes
    }
}

impl RouteTraffic {
    /// The index of the line's caller (added on first sight), or `None` when the
    /// line names nobody a rule could.
    fn caller(&mut self, line: &AuditLine<'_>) -> Option<u32> {
        let id = line.identity.as_ref()?;
        let nonempty = |v: &Option<std::borrow::Cow<'_, str>>| {
            v.as_deref().filter(|s| !s.is_empty()).map(str::to_string)
        };
        let (kind, name) = match id.kind {
            Kind::Anonymous => return None,
            Kind::Service => match nonempty(&id.client_id) {
                Some(c) => (CallerKind::Client, c),
                None => (CallerKind::Subject, nonempty(&id.sub)?),
            },
            Kind::Workload => (CallerKind::Workload, nonempty(&id.workload)?),
            Kind::User => (CallerKind::User, nonempty(&id.sub)?),
        };
        let issuer = match (kind, id.issuer.as_deref()) {
            (CallerKind::Workload, _) | (_, None) => None,
            (_, Some(iss)) => self.issuer_index(iss),
        };
        let line_groups = id.groups.as_deref().unwrap_or(&[]);
        let key = (kind, issuer, name);
        if let Some(&i) = self.caller_index.get(&key) {
            if let Some(c) = self.callers.get_mut(i as usize) {
                if !c.groups.is_empty() {
                    c.observe_groups(|g| line_groups.iter().any(|l| l == g));
                }
            }
            return Some(i);
        }
        let i = u32::try_from(self.callers.len()).ok()?;
        let mut groups: Vec<String> = if kind == CallerKind::User {
            line_groups.iter().map(|g| g.to_string()).collect()
        } else {
            Vec::new()
        };
        groups.sort();
        groups.dedup();
        self.callers.push(Caller {
            kind,
            id: key.2.clone(),
            issuer,
            groups,
        });
        self.caller_index.insert(key, i);
        Some(i)
    }

    fn issuer_index(&mut self, issuer: &str) -> Option<u16> {
        if let Some(i) = self.issuers.iter().position(|s| s == issuer) {
            return u16::try_from(i).ok();
        }
        let i = u16::try_from(self.issuers.len()).ok()?;
        self.issuers.push(issuer.to_string());
        Some(i)
    }

    /// The token issuers, indexed by [`Caller::issuer`].
    pub fn issuers(&self) -> &[String] {
        &self.issuers
    }

    fn count(&mut self, pattern: &str, method: &str, caller: u32) {
        let pi = match self.pattern_index.get(pattern) {
            Some(&i) => i,
            None => {
                self.patterns.push(PatternTraffic {
                    pattern: pattern.to_string(),
                    methods: Vec::new(),
                });
                self.pattern_index
                    .insert(pattern.to_string(), self.patterns.len() - 1);
                self.patterns.len() - 1
            }
        };
        let Some(p) = self.patterns.get_mut(pi) else {
            return;
        };
        let per_caller = match p
            .methods
            .iter()
            .position(|(m, _)| m.eq_ignore_ascii_case(method))
        {
            Some(i) => &mut p.methods[i].1,
            None => {
                p.methods
                    .push((method.to_ascii_uppercase(), HashMap::new()));
                let last = p.methods.len() - 1;
                &mut p.methods[last].1
            }
        };
        *per_caller.entry(caller).or_insert(0) += 1;
    }

    /// The callers seen (for naming them in comments).
    pub fn callers(&self) -> &[Caller] {
        &self.callers
    }
}

/// One suggested allow rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuggestedRule {
    pub principal: Principal,
    pub methods: Vec<String>,
    pub paths: Vec<String>,
    /// Requests it covers.
    pub requests: u64,
    /// The observed callers it stands for (indexes into the route's callers).
    pub callers: Vec<u32>,
}

/// Method → (the patterns used with it, requests).
type MethodPatterns<'a> = BTreeMap<&'a str, (Vec<&'a str>, u64)>;

/// Machine → method → (pattern, requests).
type MachineUsage<'a> = BTreeMap<u32, BTreeMap<&'a str, Vec<(&'a str, u64)>>>;

/// Method → (globs, requests).
type MethodGlobs<'a> = BTreeMap<&'a str, (Vec<String>, u64)>;

/// The rules for one route's traffic: machines first, then groups, then people,
/// the busiest first within each.
///
/// Machines are named one by one, so each one's own usage is generalized first;
/// then every (method, glob) names the machines that have it, and machines with
/// the same (method, glob) share a rule. People are grouped per (pattern, method)
/// before anything is generalized, so that a group can emerge from people whose
/// usage overlaps only in part.
pub fn rules_for(traffic: &RouteTraffic) -> Vec<SuggestedRule> {
    let holders = group_holders(&traffic.callers);
    let kind_of = |c: u32| traffic.callers.get(c as usize).map(|c| c.kind);
    let mut machines = MachineUsage::new();
    let mut people: BTreeMap<Principal, (MethodPatterns<'_>, BTreeSet<u32>)> = BTreeMap::new();
    for p in &traffic.patterns {
        for (method, per_caller) in &p.methods {
            let mut users = Vec::new();
            for (&c, &n) in per_caller {
                if kind_of(c) == Some(CallerKind::User) {
                    users.push(c);
                } else {
                    let used = machines.entry(c).or_default().entry(method).or_default();
                    used.push((&p.pattern, n));
                }
            }
            users.sort_unstable();
            for (principal, members) in principals(&users, &traffic.callers, &holders) {
                let requests: u64 = members.iter().filter_map(|m| per_caller.get(m)).sum();
                let (methods, all) = people.entry(principal).or_default();
                let entry = methods.entry(method).or_default();
                entry.0.push(&p.pattern);
                entry.1 += requests;
                all.extend(members);
            }
        }
    }
    let mut rules = machine_rules(traffic, machines);
    for (principal, (methods, members)) in people {
        let per_method = methods
            .into_iter()
            .map(|(m, (patterns, n))| (m, generalize(patterns), n));
        let members: Vec<u32> = members.into_iter().collect();
        push_rules(&mut rules, &principal, &members, per_method);
    }
    rules.sort_by_key(|r| (rank(&r.principal), std::cmp::Reverse(r.requests)));
    rules
}

fn machine_rules(traffic: &RouteTraffic, machines: MachineUsage<'_>) -> Vec<SuggestedRule> {
    // (kind, method, glob) → (machines, requests); machines ascending.
    let mut atoms: BTreeMap<(CallerKind, &str, String), (Vec<u32>, u64)> = BTreeMap::new();
    for (caller, methods) in machines {
        let Some(kind) = traffic.callers.get(caller as usize).map(|c| c.kind) else {
            continue;
        };
        for (method, used) in methods {
            let globs = generalize(used.iter().map(|(p, _)| *p));
            let segs: Vec<Vec<&str>> = globs.iter().map(|g| g.split('/').collect()).collect();
            let mut counts = vec![0u64; globs.len()];
            for (pattern, n) in &used {
                let p: Vec<&str> = pattern.split('/').collect();
                if let Some(i) = segs.iter().position(|g| covers(g, &p)) {
                    counts[i] += n;
                }
            }
            for (glob, n) in globs.into_iter().zip(counts) {
                let entry = atoms.entry((kind, method, glob)).or_default();
                entry.0.push(caller);
                entry.1 += n;
            }
        }
    }
    // (kind, machines) → method → (globs, requests).
    let mut by_set: BTreeMap<(CallerKind, Vec<u32>), MethodGlobs<'_>> = BTreeMap::new();
    for ((kind, method, glob), (callers, n)) in atoms {
        let entry = by_set
            .entry((kind, callers))
            .or_default()
            .entry(method)
            .or_default();
        entry.0.push(glob);
        entry.1 += n;
    }
    let mut rules = Vec::new();
    for ((kind, callers), methods) in by_set {
        let mut ids: Vec<String> = callers
            .iter()
            .filter_map(|&c| traffic.callers.get(c as usize))
            .map(|c| c.id.clone())
            .collect();
        ids.sort();
        // The same id from two issuers is two callers but one value.
        ids.dedup();
        let principal = match kind {
            CallerKind::Client => Principal::Clients(ids),
            CallerKind::Workload => Principal::Workloads(ids),
            CallerKind::User | CallerKind::Subject => Principal::Subjects(ids),
        };
        let per_method = methods
            .into_iter()
            .map(|(m, (globs, n))| (m, drop_covered(globs), n));
        push_rules(&mut rules, &principal, &callers, per_method);
    }
    rules
}

/// One rule for `principal` per distinct path list of `per_method` (method,
/// paths, requests): methods that come to the same paths share it.
fn push_rules<'a>(
    rules: &mut Vec<SuggestedRule>,
    principal: &Principal,
    callers: &[u32],
    per_method: impl Iterator<Item = (&'a str, Vec<String>, u64)>,
) {
    let mut by_paths: BTreeMap<Vec<String>, (Vec<String>, u64)> = BTreeMap::new();
    for (method, paths, requests) in per_method {
        let entry = by_paths.entry(paths).or_default();
        entry.0.push(method.to_string());
        entry.1 += requests;
    }
    for (paths, (methods, requests)) in by_paths {
        rules.push(SuggestedRule {
            principal: principal.clone(),
            methods,
            paths,
            requests,
            callers: callers.to_vec(),
        });
    }
}

fn rank(p: &Principal) -> u8 {
    match p {
        Principal::Clients(_) => 0,
        Principal::Workloads(_) => 1,
        Principal::Group(_) => 2,
        Principal::Subjects(_) => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn line<'a>(
        method: &'a str,
        path: &'a str,
        kind: Kind,
        who: &'a str,
        groups: &[&'a str],
        decision: Decision,
        enforced: bool,
    ) -> AuditLine<'a> {
        let id = super::super::audit_read::AuditIdentity {
            kind,
            sub: Some(Cow::Borrowed(who)),
            issuer: Some(Cow::Borrowed("https://idp")),
            client_id: (kind == Kind::Service).then_some(Cow::Borrowed(who)),
            groups: Some(groups.iter().map(|g| Cow::Borrowed(*g)).collect()),
            workload: (kind == Kind::Workload).then_some(Cow::Borrowed(who)),
        };
        AuditLine {
            method: Cow::Borrowed(method),
            path: Cow::Borrowed(path),
            route: Some(Cow::Borrowed("api")),
            decision,
            reason: Cow::Borrowed("allowed"),
            rule: None,
            enforced,
            identity: Some(id),
        }
    }

    fn suggest(lines: &[AuditLine<'_>]) -> Vec<SuggestedRule> {
        let mut s = Suggester::new(None);
        for l in lines {
            s.observe(l);
        }
        let routes = s.into_routes();
        rules_for(&routes[0].1)
    }

    #[test]
    fn only_permitted_traffic_counts_and_methods_stay_per_path() {
        use Decision::*;
        let rules = suggest(&[
            line(
                "GET",
                "/api/orders/1",
                Kind::Service,
                "billing",
                &[],
                Allow,
                true,
            ),
            line(
                "get",
                "/api/orders/2",
                Kind::Service,
                "billing",
                &[],
                Allow,
                true,
            ),
            line(
                "POST",
                "/api/orders",
                Kind::Service,
                "billing",
                &[],
                Deny,
                false,
            ),
            // Refused under enforcement: never suggested.
            line(
                "DELETE",
                "/api/orders/3",
                Kind::Service,
                "billing",
                &[],
                Deny,
                true,
            ),
        ]);
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert_eq!(rules[0].methods, ["GET"]);
        assert_eq!(rules[0].paths, ["/api/orders/*"]);
        assert_eq!(rules[0].requests, 2);
        assert_eq!(rules[1].methods, ["POST"]);
        assert_eq!(rules[1].paths, ["/api/orders"]);
        assert_eq!(
            rules[1].principal,
            Principal::Clients(vec!["billing".into()])
        );
    }

    #[test]
    fn callers_doing_the_same_thing_share_a_rule() {
        use Decision::Allow;
        let rules = suggest(&[
            line(
                "GET",
                "/api/a",
                Kind::User,
                "alice",
                &["eng", "all"],
                Allow,
                true,
            ),
            line(
                "GET",
                "/api/a",
                Kind::User,
                "bob",
                &["eng", "all"],
                Allow,
                true,
            ),
            line("GET", "/api/b", Kind::User, "carol", &["all"], Allow, true),
            line(
                "GET",
                "/api/a",
                Kind::Workload,
                "spiffe://td/ns/a/sa/b",
                &[],
                Allow,
                true,
            ),
        ]);
        let got: Vec<(&Principal, &[String])> = rules
            .iter()
            .map(|r| (&r.principal, r.paths.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    &Principal::Workloads(vec!["spiffe://td/ns/a/sa/b".into()]),
                    &["/api/a".to_string()][..]
                ),
                (&Principal::Group("eng".into()), &["/api/a".to_string()][..]),
                (
                    &Principal::Subjects(vec!["carol".into()]),
                    &["/api/b".to_string()][..]
                ),
            ]
        );
    }

    #[test]
    fn machines_with_the_same_generalized_grant_share_a_rule() {
        use Decision::Allow;
        let svc = |m, p, who| line(m, p, Kind::Service, who, &[], Allow, true);
        let rules = suggest(&[
            svc("GET", "/s/docs/a", "billing"),
            svc("GET", "/s/docs/b", "billing"),
            svc("GET", "/s/docs/c", "billing"),
            svc("HEAD", "/s/docs/a", "billing"),
            svc("GET", "/s/docs/d", "reports"),
            svc("GET", "/s/docs/e", "reports"),
            svc("GET", "/s/docs/f", "reports"),
            svc("HEAD", "/s/docs/a", "reports"),
            svc("GET", "/s/other", "reports"),
        ]);
        type Row<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>, u64);
        let got: Vec<Row<'_>> = rules
            .iter()
            .map(|r| {
                let m = r.methods.iter().map(String::as_str).collect();
                let p = r.paths.iter().map(String::as_str).collect();
                (r.principal.values(), m, p, r.requests)
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    vec!["billing", "reports"],
                    vec!["GET"],
                    vec!["/s/docs/*"],
                    6
                ),
                (
                    vec!["billing", "reports"],
                    vec!["HEAD"],
                    vec!["/s/docs/a"],
                    2
                ),
                (vec!["reports"], vec!["GET"], vec!["/s/other"], 1),
            ]
        );
    }

    #[test]
    fn anonymous_and_unrouted_lines_name_no_caller() {
        let mut anon = line("GET", "/x", Kind::Anonymous, "", &[], Decision::Allow, true);
        anon.identity = None;
        let mut unrouted = line("GET", "/x", Kind::User, "a", &[], Decision::Allow, true);
        unrouted.route = None;
        let mut s = Suggester::new(None);
        s.observe(&anon);
        s.observe(&unrouted);
        let routes = s.into_routes();
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].1.anonymous, 1);
        assert!(rules_for(&routes[0].1).is_empty());
    }
}
