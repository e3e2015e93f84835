//! Compiled policy rules (SPEC §2 `routes.policy`).
//!
//! Semantics:
//! - deny rules are checked first, then allow rules; the first matching rule decides;
//!   no allow rule matched → deny (an empty allow list therefore denies everyone);
//! - every condition of a rule must hold; a list inside a condition is any-of, except
//!   `scopes`, where every listed scope is required;
//! - an empty any-of list (`groups: []`) matches nothing; an empty `scopes: []` or
//!   `claims: {}` requires nothing (but see [`CompiledPolicy::warnings`]);
//! - conditions about the caller (everything but `methods`, `paths` and
//!   `authenticated`) fail for an anonymous caller;
//! - `emails` and `email_domains` compare case-insensitively and ignore an email
//!   whose `email_verified` claim is `false`; `email_domains` takes the part after the
//!   only `@` (an address with several `@` matches nothing) and compares it exactly
//!   (no subdomains; a leading `@` in the config is ignored);
//! - `subjects`, `groups`, `roles`, `scopes`, `clients`, `providers` compare exactly;
//! - `paths` and `workloads` are segment globs (see [`Glob`]);
//! - `claims` maps a dotted path to accepted values: a string claim must equal one, an
//!   array claim must contain one, numbers and booleans compare by their JSON text,
//!   an absent claim, an object or `null` fails;
//! - `authenticated: true` needs a verified caller, `authenticated: false` needs an
//!   anonymous one;
//! - `tools` (MCP, SPEC §10) are globs over the tool a `tools/call` names. Any
//!   other request has no tool, and the condition is set aside: it holds in an
//!   allow rule (a caller allowed some tools can initialize and list) and fails
//!   in a deny rule (a deny rule about tools never denies anything but calls).

use crate::claim_path::{display_values, lookup, value_matches};
use crate::decision::{Combine, ConditionTrace, RequestFacts, RuleList, RuleRef, RuleTrace};
use crate::glob::Glob;
use crate::path::{normalize_with, PathOptions};
use portcullis_config::{parse_claim_path, PolicyConfig, RuleConfig};
use portcullis_core::Identity;
use std::sync::Arc;

/// What one condition checks, compiled.
#[derive(Debug, Clone)]
enum Test {
    Methods(Vec<String>),
    Paths(Vec<Glob>),
    Subjects(Vec<String>),
    /// Lowercased.
    Emails(Vec<String>),
    /// Lowercased, without a leading `@`.
    EmailDomains(Vec<String>),
    Groups(Vec<String>),
    Roles(Vec<String>),
    Scopes(Vec<String>),
    Clients(Vec<String>),
    Workloads(Vec<Glob>),
    Providers(Vec<String>),
    Claim {
        path: String,
        keys: Vec<String>,
        accepted: Vec<String>,
    },
    Authenticated(bool),
    /// `in_deny`: the rule is a deny rule, where a request without a tool fails
    /// the condition instead of passing it.
    Tools {
        globs: Vec<Glob>,
        in_deny: bool,
    },
}

/// A verified email, unless the token says outright that it is not verified.
fn usable_email(id: &Identity) -> Option<&str> {
    let email = id.email.as_deref()?;
    match id.claims.get("email_verified") {
        Some(serde_json::Value::Bool(false)) => None,
        Some(serde_json::Value::String(s)) if s.eq_ignore_ascii_case("false") => None,
        _ => Some(email),
    }
}

/// The domain of an address with exactly one `@`.
fn email_domain(email: &str) -> Option<&str> {
    let (local, domain) = crate::bytes::split_once(email, b'@')?;
    if local.is_empty() || domain.is_empty() || crate::bytes::has(domain, b'@') {
        return None;
    }
    Some(domain)
}

fn contains(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == v)
}

fn opt_vec(v: Option<&str>) -> Vec<String> {
    v.map(|s| vec![s.to_string()]).unwrap_or_default()
}

impl Test {
    /// The condition's name as written in the config (`claims.PATH` for claims).
    fn name(&self) -> String {
        match self {
            Test::Methods(_) => "methods".into(),
            Test::Paths(_) => "paths".into(),
            Test::Subjects(_) => "subjects".into(),
            Test::Emails(_) => "emails".into(),
            Test::EmailDomains(_) => "email_domains".into(),
            Test::Groups(_) => "groups".into(),
            Test::Roles(_) => "roles".into(),
            Test::Scopes(_) => "scopes".into(),
            Test::Clients(_) => "clients".into(),
            Test::Workloads(_) => "workloads".into(),
            Test::Providers(_) => "providers".into(),
            Test::Claim { path, .. } => format!("claims.{path}"),
            Test::Authenticated(_) => "authenticated".into(),
            Test::Tools { .. } => "tools".into(),
        }
    }

    /// True when the condition is about the caller rather than the request.
    fn is_about_caller(&self) -> bool {
        !matches!(
            self,
            Test::Methods(_) | Test::Paths(_) | Test::Authenticated(_) | Test::Tools { .. }
        )
    }

    /// A rough rank of how much checking the condition costs.
    fn cost(&self) -> u8 {
        match self {
            Test::Authenticated(_) => 0,
            Test::Methods(_) | Test::Providers(_) | Test::Clients(_) => 1,
            Test::Subjects(_) | Test::Groups(_) | Test::Roles(_) => 2,
            Test::Scopes(_) => 2,
            Test::Emails(_) | Test::EmailDomains(_) => 3,
            Test::Claim { .. } => 4,
            Test::Paths(_) | Test::Workloads(_) | Test::Tools { .. } => 5,
        }
    }

    /// True when the condition can never hold (an empty any-of list).
    fn is_unsatisfiable(&self) -> bool {
        match self {
            Test::Methods(v)
            | Test::Subjects(v)
            | Test::Emails(v)
            | Test::EmailDomains(v)
            | Test::Groups(v)
            | Test::Roles(v)
            | Test::Clients(v)
            | Test::Providers(v) => v.is_empty(),
            Test::Paths(v) | Test::Workloads(v) | Test::Tools { globs: v, .. } => v.is_empty(),
            Test::Claim { accepted, .. } => accepted.is_empty(),
            Test::Scopes(_) | Test::Authenticated(_) => false,
        }
    }

    /// The fast check: no allocation except for numeric claims.
    fn holds(&self, id: &Identity, facts: &RequestFacts<'_>) -> bool {
        if self.is_about_caller() && !id.is_authenticated() {
            return false;
        }
        match self {
            // Config methods are uppercase and so are nearly all requests: try the
            // plain comparison first.
            Test::Methods(v) => v
                .iter()
                .any(|m| m == facts.method || m.eq_ignore_ascii_case(facts.method)),
            Test::Paths(globs) => globs.iter().any(|g| {
                g.matches(facts.path.matching())
                    || facts.path.matching_slashed().is_some_and(|s| g.matches(s))
            }),
            Test::Subjects(v) => contains(v, &id.subject),
            Test::Emails(v) => {
                usable_email(id).is_some_and(|e| v.iter().any(|x| x.eq_ignore_ascii_case(e)))
            }
            Test::EmailDomains(v) => usable_email(id)
                .and_then(email_domain)
                .is_some_and(|d| v.iter().any(|x| x.eq_ignore_ascii_case(d))),
            Test::Groups(v) => id.groups.iter().any(|g| contains(v, g)),
            Test::Roles(v) => id.roles.iter().any(|r| contains(v, r)),
            Test::Scopes(v) => v.iter().all(|s| contains(&id.scopes, s)),
            Test::Clients(v) => id.client_id.as_deref().is_some_and(|c| contains(v, c)),
            Test::Workloads(globs) => id
                .workload
                .as_deref()
                .is_some_and(|w| globs.iter().any(|g| g.matches(w))),
            Test::Providers(v) => id.provider.as_deref().is_some_and(|p| contains(v, p)),
            Test::Claim { keys, accepted, .. } => {
                lookup(&id.claims, keys).is_some_and(|val| value_matches(val, accepted))
            }
            Test::Authenticated(want) => id.is_authenticated() == *want,
            Test::Tools { globs, in_deny } => match facts.tool {
                Some(tool) => globs.iter().any(|g| g.matches(tool)),
                None => !in_deny,
            },
        }
    }

    /// The values the rule asks for, as written (globs as their patterns).
    fn required(&self) -> Vec<String> {
        match self {
            Test::Methods(v)
            | Test::Subjects(v)
            | Test::Emails(v)
            | Test::EmailDomains(v)
            | Test::Groups(v)
            | Test::Roles(v)
            | Test::Scopes(v)
            | Test::Clients(v)
            | Test::Providers(v) => v.clone(),
            Test::Paths(g) | Test::Workloads(g) | Test::Tools { globs: g, .. } => {
                g.iter().map(|g| g.as_str().to_string()).collect()
            }
            Test::Claim { accepted, .. } => accepted.clone(),
            Test::Authenticated(want) => vec![want.to_string()],
        }
    }

    fn combine(&self) -> Combine {
        match self {
            Test::Scopes(_) => Combine::AllOf,
            Test::Authenticated(_) => Combine::Equals,
            _ => Combine::AnyOf,
        }
    }

    /// What the request or caller has that this condition looks at.
    fn actual(&self, id: &Identity, facts: &RequestFacts<'_>) -> Vec<String> {
        match self {
            Test::Methods(_) => vec![facts.method.to_string()],
            Test::Paths(_) => vec![facts.path.matching().to_string()],
            Test::Subjects(_) => opt_vec(Some(id.subject.as_str()).filter(|s| !s.is_empty())),
            Test::Emails(_) => opt_vec(usable_email(id)),
            Test::EmailDomains(_) => opt_vec(usable_email(id).and_then(email_domain)),
            Test::Groups(_) => id.groups.clone(),
            Test::Roles(_) => id.roles.clone(),
            Test::Scopes(_) => id.scopes.clone(),
            Test::Clients(_) => opt_vec(id.client_id.as_deref()),
            Test::Workloads(_) => opt_vec(id.workload.as_deref()),
            Test::Providers(_) => opt_vec(id.provider.as_deref()),
            Test::Claim { keys, .. } => display_values(lookup(&id.claims, keys)),
            Test::Authenticated(_) => vec![id.is_authenticated().to_string()],
            // Nothing to show for a request that calls no tool: the condition was
            // set aside (see the module docs).
            Test::Tools { .. } => opt_vec(facts.tool),
        }
    }
}

/// One condition of a rule: its test, plus its name and required values prepared
/// once, so that an explanation shares them instead of copying them per request.
#[derive(Debug, Clone)]
struct Condition {
    test: Test,
    name: Arc<str>,
    required: Arc<[String]>,
}

impl Condition {
    fn new(test: Test) -> Condition {
        Condition {
            name: Arc::from(test.name()),
            required: Arc::from(test.required()),
            test,
        }
    }

    fn holds(&self, id: &Identity, facts: &RequestFacts<'_>) -> bool {
        self.test.holds(id, facts)
    }

    /// The detailed check, for explanations.
    fn trace(&self, id: &Identity, facts: &RequestFacts<'_>) -> ConditionTrace {
        let passed = self.holds(id, facts);
        let missing = match &self.test {
            Test::Scopes(v) if !passed => v
                .iter()
                .filter(|s| !contains(&id.scopes, s))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        ConditionTrace {
            condition: Arc::clone(&self.name),
            combine: self.test.combine(),
            required: Arc::clone(&self.required),
            actual: self.test.actual(id, facts),
            passed,
            missing,
        }
    }
}

/// One compiled rule: a name and conditions that must all hold.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    rule_ref: RuleRef,
    /// In config order, which is the order explanations list them in.
    conditions: Vec<Condition>,
    /// The same conditions, cheapest first, for the boolean pass: a rule usually
    /// fails, and it is cheaper to learn that from a method or a group than from a
    /// glob or a claim lookup. (All must hold, so the order cannot change the answer.)
    fast: Vec<Condition>,
}

impl CompiledRule {
    /// The rule's name or position, as decisions refer to it.
    pub fn rule_ref(&self) -> RuleRef {
        self.rule_ref.clone()
    }

    /// The rule's `name`, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.rule_ref.name.as_deref()
    }

    /// True when the rule has no condition that could fail (it matches every request).
    pub fn is_unconditional(&self) -> bool {
        self.conditions.is_empty()
    }

    /// True when the rule has `scopes: []`, which asks for no scope at all (only for
    /// an authenticated caller, as every caller condition does).
    fn has_empty_scopes(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| matches!(&c.test, Test::Scopes(v) if v.is_empty()))
    }

    /// True when some condition can never hold, so the rule never matches.
    pub fn is_unsatisfiable(&self) -> bool {
        self.conditions.iter().any(|c| c.test.is_unsatisfiable())
    }

    /// True when every condition holds for this caller and request.
    pub fn holds(&self, identity: &Identity, facts: &RequestFacts<'_>) -> bool {
        self.fast.iter().all(|c| c.holds(identity, facts))
    }

    /// Evaluates every condition (no short-circuit), for an explanation.
    pub fn trace(&self, identity: &Identity, facts: &RequestFacts<'_>) -> RuleTrace {
        let conditions: Vec<ConditionTrace> = self
            .conditions
            .iter()
            .map(|c| c.trace(identity, facts))
            .collect();
        RuleTrace {
            position: self.rule_ref.position(),
            rule: self.rule_ref.clone(),
            matched: conditions.iter().all(|c| c.passed),
            conditions,
        }
    }
}

/// A route's compiled `policy`.
#[derive(Debug, Clone, Default)]
pub struct CompiledPolicy {
    deny: Vec<CompiledRule>,
    allow: Vec<CompiledRule>,
}

impl CompiledPolicy {
    /// Compiles `policy` for case-insensitive path matching (the default).
    pub fn compile(policy: &PolicyConfig) -> Result<CompiledPolicy, Vec<String>> {
        Self::compile_with(policy, false)
    }

    /// Compiles `policy`; errors name the rule (`deny[0]`) and the condition.
    /// `case_sensitive_paths` must be the route table's, so that `paths` globs are
    /// spelled like the matching form of request paths.
    pub fn compile_with(
        policy: &PolicyConfig,
        case_sensitive_paths: bool,
    ) -> Result<CompiledPolicy, Vec<String>> {
        let mut errors = Vec::new();
        let mut compile_list = |list: RuleList, rules: &[RuleConfig]| -> Vec<CompiledRule> {
            let mut out = Vec::with_capacity(rules.len());
            for (index, rule) in rules.iter().enumerate() {
                let rule_ref = RuleRef {
                    list,
                    index,
                    name: rule.name.as_deref().map(Arc::from),
                };
                match compile_conditions(rule, list, case_sensitive_paths) {
                    Ok(conditions) => {
                        let mut fast = conditions.clone();
                        fast.sort_by_key(|c| c.test.cost());
                        out.push(CompiledRule {
                            rule_ref,
                            conditions,
                            fast,
                        });
                    }
                    Err(errs) => errors.extend(
                        errs.into_iter()
                            .map(|e| format!("policy.{}: {e}", rule_ref.position())),
                    ),
                }
            }
            out
        };
        let deny = compile_list(RuleList::Deny, &policy.deny);
        let allow = compile_list(RuleList::Allow, &policy.allow);
        if errors.is_empty() {
            Ok(CompiledPolicy { deny, allow })
        } else {
            Err(errors)
        }
    }

    /// Deny rules, in order.
    pub fn deny(&self) -> &[CompiledRule] {
        &self.deny
    }

    /// Allow rules, in order.
    pub fn allow(&self) -> &[CompiledRule] {
        &self.allow
    }

    /// Rules that can never matter: rules after an unconditional rule of the same
    /// list, allow rules after an unconditional deny, and rules with an empty any-of
    /// condition.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let describe = |r: &CompiledRule| match r.name() {
            Some(n) => format!("{} ({n})", r.rule_ref.position()),
            None => r.rule_ref.position(),
        };
        let deny_all = self.deny.iter().find(|r| r.is_unconditional());
        for list in [&self.deny, &self.allow] {
            let mut earlier_unconditional: Option<&CompiledRule> = None;
            for rule in list.iter() {
                if let Some(first) = earlier_unconditional {
                    out.push(format!(
                        "rule {} can never decide: {} before it matches every request",
                        describe(rule),
                        describe(first)
                    ));
                } else if rule.is_unsatisfiable() {
                    out.push(format!(
                        "rule {} can never match: it has an empty condition list",
                        describe(rule)
                    ));
                } else if rule.has_empty_scopes() {
                    out.push(format!(
                        "rule {}: `scopes: []` requires no scope; remove it or list the scopes",
                        describe(rule)
                    ));
                }
                if earlier_unconditional.is_none() && rule.is_unconditional() {
                    earlier_unconditional = Some(rule);
                }
            }
        }
        if let Some(d) = deny_all {
            if !self.allow.is_empty() {
                out.push(format!(
                    "every allow rule is unreachable: deny rule {} matches every request",
                    describe(d)
                ));
            }
        }
        out
    }
}

fn compile_list<T>(
    name: &str,
    values: &Option<Vec<String>>,
    errors: &mut Vec<String>,
    f: impl Fn(&str) -> Result<T, String>,
) -> Option<Vec<T>> {
    let values = values.as_ref()?;
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        match f(v) {
            Ok(t) => out.push(t),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Some(out)
}

fn non_empty(v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err("empty value".to_string())
    } else {
        Ok(v.to_string())
    }
}

/// Adds `HEAD` to upper-case method names that hold `GET` but not `HEAD`:
/// a server runs its GET handler for HEAD (routes and deny rules use this).
pub(crate) fn head_with_get(methods: &mut Vec<String>) {
    if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
        methods.push("HEAD".to_string());
    }
}

fn compile_conditions(
    rule: &RuleConfig,
    list: RuleList,
    case_sensitive_paths: bool,
) -> Result<Vec<Condition>, Vec<String>> {
    let mut errors = Vec::new();
    let mut conds = Vec::new();
    let e = &mut errors;
    if let Some(v) = compile_list("methods", &rule.methods, e, |m| {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
            Err(format!("`{m}` is not an HTTP method"))
        } else {
            Ok(m.to_ascii_uppercase())
        }
    }) {
        // A server answers HEAD with its GET handler (Starlette, Go, Express),
        // status, headers and side effects all but the body: a deny of GET
        // that let HEAD through would show what it hides. An allow of GET
        // stays exact: HEAD must be named to be allowed.
        let mut v = v;
        if list == RuleList::Deny {
            head_with_get(&mut v);
        }
        conds.push(Test::Methods(v));
    }
    if let Some(v) = compile_list("paths", &rule.paths, e, |p| {
        compile_path_glob(p, case_sensitive_paths)
    }) {
        conds.push(Test::Paths(v));
    }
    if let Some(v) = compile_list("subjects", &rule.subjects, e, non_empty) {
        conds.push(Test::Subjects(v));
    }
    if let Some(v) = compile_list("emails", &rule.emails, e, |m| {
        if email_domain(m).is_none() {
            Err(format!("`{m}` is not an email address"))
        } else {
            Ok(m.to_lowercase())
        }
    }) {
        conds.push(Test::Emails(v));
    }
    if let Some(v) = compile_list("email_domains", &rule.email_domains, e, |d| {
        let d = d.strip_prefix('@').unwrap_or(d);
        if d.is_empty() || d.contains('@') {
            Err(format!("`{d}` is not a domain"))
        } else {
            Ok(d.to_lowercase())
        }
    }) {
        conds.push(Test::EmailDomains(v));
    }
    if let Some(v) = compile_list("groups", &rule.groups, e, non_empty) {
        conds.push(Test::Groups(v));
    }
    if let Some(v) = compile_list("roles", &rule.roles, e, non_empty) {
        conds.push(Test::Roles(v));
    }
    if let Some(v) = compile_list("scopes", &rule.scopes, e, |s| {
        if s.is_empty() || s.contains(' ') {
            Err(format!("`{s}` is not one scope"))
        } else {
            Ok(s.to_string())
        }
    }) {
        conds.push(Test::Scopes(v));
    }
    if let Some(v) = compile_list("clients", &rule.clients, e, non_empty) {
        conds.push(Test::Clients(v));
    }
    if let Some(v) = compile_list("workloads", &rule.workloads, e, |w| {
        if !w.starts_with("spiffe://") {
            return Err(format!("`{w}` is not a SPIFFE ID pattern (spiffe://…)"));
        }
        Glob::new(w)
    }) {
        conds.push(Test::Workloads(v));
    }
    if let Some(v) = compile_list("providers", &rule.providers, e, non_empty) {
        conds.push(Test::Providers(v));
    }
    if let Some(claims) = &rule.claims {
        for (path, accepted) in claims {
            match parse_claim_path(path) {
                Ok(keys) => conds.push(Test::Claim {
                    path: path.clone(),
                    keys,
                    accepted: accepted.values().to_vec(),
                }),
                Err(err) => e.push(format!("claims: {err}")),
            }
        }
    }
    if let Some(want) = rule.authenticated {
        conds.push(Test::Authenticated(want));
    }
    if let Some(globs) = compile_list("tools", &rule.tools, e, |t| {
        if t.is_empty() {
            Err("empty tool name".to_string())
        } else {
            Ok(Glob::name(t))
        }
    }) {
        conds.push(Test::Tools {
            globs,
            in_deny: list == RuleList::Deny,
        });
    }
    if errors.is_empty() {
        Ok(conds.into_iter().map(Condition::new).collect())
    } else {
        Err(errors)
    }
}

/// A `paths` glob is normalized like a request path (so `/a//b` and `/caf%c3%a9`
/// mean what a request with that path would), `*` being an ordinary path character.
fn compile_path_glob(pattern: &str, case_sensitive: bool) -> Result<Glob, String> {
    if !pattern.starts_with('/') {
        return Err(format!("`{pattern}` must start with `/`"));
    }
    let options = PathOptions {
        allow_encoded_slashes: true,
        case_sensitive,
    };
    let normalized =
        normalize_with(pattern, options).map_err(|err| format!("`{pattern}`: {err}"))?;
    Glob::new(normalized.matching())
}

#[cfg(test)]
mod tests;
