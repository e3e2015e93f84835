//! [`Decision`]: the one value that says whether a request may pass and why. It
//! flows to the response, the audit line, the metrics and `portcullis explain`
//! without being derived twice.
//!
//! Evaluation ([`CompiledRoute::evaluate`]) runs a short-circuiting boolean pass
//! first; the per-condition explanation (which allocates) is built only for a
//! denial or when asked for ([`CompiledRoute::evaluate_explained`]), so the common
//! allow path costs a few comparisons and two reference-count increments.

use crate::path::NormalizedPath;
use crate::routes::CompiledRoute;
use crate::rules::{CompiledPolicy, CompiledRule};
use portcullis_config::{AuthMode, ExplainToCaller, PolicyMode};
use portcullis_core::{Identity, Reason};
use serde::{Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// The facts about a request that routing and policy look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The request method as sent (compared case-insensitively).
    pub method: &'a str,
    /// The `Host` (or `:authority`), with or without port.
    pub host: &'a str,
    /// The path after [`normalize`](crate::normalize).
    pub path: &'a NormalizedPath,
    /// The tool named by an MCP `tools/call` (SPEC §10); `None` for every other
    /// request, for which `tools` conditions are set aside.
    pub tool: Option<&'a str>,
}

/// Allow or deny, as evaluated (see [`Decision::permits`] for audit mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    Deny,
}

impl Outcome {
    /// `allow` or `deny`, as in the audit line.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
        }
    }
}

/// What the outcome rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// A deny rule matched.
    DenyRule,
    /// An allow rule matched (and no deny rule did).
    AllowRule,
    /// The route has a policy and no allow rule matched (or it has none).
    NoAllowMatched,
    /// `auth: required` and no policy: default deny.
    NoPolicyDefaultDeny,
    /// `auth: none` or `auth: optional` and no policy: everyone passes.
    NoPolicyOpen,
    /// No route matched the request.
    NoRoute,
}

/// Which list of a policy a rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleList {
    Deny,
    Allow,
}

impl RuleList {
    /// `deny` or `allow`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleList::Deny => "deny",
            RuleList::Allow => "allow",
        }
    }
}

/// A reference to one rule of a route's policy. Serializes as its [`label`](Self::label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub list: RuleList,
    /// Position within its list.
    pub index: usize,
    /// The rule's `name`, when it has one.
    pub name: Option<Arc<str>>,
}

impl RuleRef {
    /// `deny[0]`, `allow[2]`: the rule's position, whether or not it is named.
    pub fn position(&self) -> String {
        format!("{}[{}]", self.list.as_str(), self.index)
    }

    /// The rule's name, else its position. This is what logs and audit lines show.
    pub fn label(&self) -> Cow<'_, str> {
        match &self.name {
            Some(n) => Cow::Borrowed(n),
            None => Cow::Owned(self.position()),
        }
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => f.write_str(n),
            None => write!(f, "{}[{}]", self.list.as_str(), self.index),
        }
    }
}

impl Serialize for RuleRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.label())
    }
}

/// How a condition's listed values combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// Any one listed value suffices.
    AnyOf,
    /// Every listed value is needed (`scopes`).
    AllOf,
    /// The actual value must equal the single required one (`authenticated`).
    Equals,
}

/// One condition of one rule, evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConditionTrace {
    /// `groups`, `scopes`, `claims.realm_access.roles`, …
    #[serde(serialize_with = "serialize_str")]
    pub condition: Arc<str>,
    pub combine: Combine,
    /// The values the rule asks for (shared with the compiled rule).
    #[serde(serialize_with = "serialize_strings")]
    pub required: Arc<[String]>,
    /// What the request or caller has (empty: nothing).
    pub actual: Vec<String>,
    pub passed: bool,
    /// For `scopes`: the required scopes the caller lacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// One rule, evaluated condition by condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleTrace {
    /// The rule's name or position.
    pub rule: RuleRef,
    /// `deny[0]`, `allow[2]`.
    pub position: String,
    /// True when every condition held.
    pub matched: bool,
    pub conditions: Vec<ConditionTrace>,
}

/// The result of judging one request.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// `allow` or `deny`, as evaluated (also under `mode: audit`).
    #[serde(rename = "decision")]
    pub outcome: Outcome,
    /// `allowed`, `forbidden`, `insufficient_scope` or `no_route`.
    pub reason: Reason,
    pub basis: Basis,
    /// The matched route's name.
    #[serde(serialize_with = "serialize_opt_str")]
    pub route: Option<Arc<str>>,
    /// The matched route's position in `routes`.
    pub route_index: Option<usize>,
    /// The deciding rule: the matching deny or allow rule. `None` when no rule
    /// decided (no policy, no allow rule matched, no route).
    pub rule: Option<RuleRef>,
    /// False under `mode: audit`: the outcome is logged but not enforced.
    pub enforced: bool,
    /// For `insufficient_scope`: the scopes that would have let the request pass.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_scopes: Vec<String>,
    /// The evaluated rules in evaluation order, when the explanation was built
    /// (always for a denial). Evaluation stops at the deciding rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RuleTrace>>,
    /// How much of this decision a 403 body may reveal (the route's setting).
    #[serde(skip)]
    pub explain_to_caller: ExplainToCaller,
}

fn serialize_str<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

fn serialize_strings<S: Serializer>(v: &Arc<[String]>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter())
}

fn serialize_opt_str<S: Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(&**v),
        None => s.serialize_none(),
    }
}

impl Decision {
    /// The decision for a request that no route matches: deny, `no_route` (404).
    pub fn no_route() -> Decision {
        Decision {
            outcome: Outcome::Deny,
            reason: Reason::NoRoute,
            basis: Basis::NoRoute,
            route: None,
            route_index: None,
            rule: None,
            enforced: true,
            missing_scopes: Vec::new(),
            rules: Some(Vec::new()),
            explain_to_caller: ExplainToCaller::default(),
        }
    }

    /// True when the request may proceed: it was allowed, or it was denied under
    /// `mode: audit` (not enforced).
    pub fn permits(&self) -> bool {
        self.outcome == Outcome::Allow || !self.enforced
    }

    /// True when the evaluated outcome is allow.
    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    /// The `WWW-Authenticate` value for an `insufficient_scope` denial:
    /// `Bearer error="insufficient_scope", scope="a b"`. `None` otherwise.
    pub fn www_authenticate(&self) -> Option<String> {
        if self.reason != Reason::InsufficientScope {
            return None;
        }
        let mut scope = String::new();
        for (i, s) in self.missing_scopes.iter().enumerate() {
            if i > 0 {
                scope.push(' ');
            }
            // A quoted-string cannot hold a raw `"` or `\`; escape them.
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    scope.push('\\');
                }
                if !c.is_control() {
                    scope.push(c);
                }
            }
        }
        Some(format!(
            "Bearer error=\"insufficient_scope\", scope=\"{scope}\""
        ))
    }
}

fn base(route: &CompiledRoute, outcome: Outcome, reason: Reason, basis: Basis) -> Decision {
    Decision {
        outcome,
        reason,
        basis,
        route: Some(route.name_arc()),
        route_index: Some(route.index()),
        rule: None,
        enforced: route.mode() == PolicyMode::Enforce,
        missing_scopes: Vec::new(),
        rules: None,
        explain_to_caller: route.explain_to_caller(),
    }
}

impl CompiledRoute {
    /// Judges a request that this route matched. The explanation is built only for
    /// a denial; use [`evaluate_explained`](Self::evaluate_explained) to always get it.
    pub fn evaluate(&self, identity: &Identity, facts: &RequestFacts<'_>) -> Decision {
        self.evaluate_with(identity, facts, false)
    }

    /// Like [`evaluate`](Self::evaluate), always with the per-condition explanation
    /// (for `portcullis explain`).
    pub fn evaluate_explained(&self, identity: &Identity, facts: &RequestFacts<'_>) -> Decision {
        self.evaluate_with(identity, facts, true)
    }

    /// Judges a request; `explain` forces the per-condition explanation.
    pub fn evaluate_with(
        &self,
        identity: &Identity,
        facts: &RequestFacts<'_>,
        explain: bool,
    ) -> Decision {
        let Some(policy) = self.policy() else {
            return match self.auth() {
                AuthMode::Required => {
                    let mut d = base(
                        self,
                        Outcome::Deny,
                        Reason::Forbidden,
                        Basis::NoPolicyDefaultDeny,
                    );
                    d.rules = Some(Vec::new());
                    d
                }
                AuthMode::Optional | AuthMode::None => {
                    let mut d = base(self, Outcome::Allow, Reason::Allowed, Basis::NoPolicyOpen);
                    if explain {
                        d.rules = Some(Vec::new());
                    }
                    d
                }
            };
        };
        evaluate_policy(self, policy, identity, facts, explain)
    }
}

impl CompiledRoute {
    /// Whether this route lets the request through — allowed, or denied under
    /// `mode: audit` — by the boolean pass alone: no [`Decision`] and no
    /// explanation are built. For judging many requests that differ in one fact
    /// at once, such as every tool of an MCP `tools/list` answer (SPEC §10).
    pub fn permits(&self, identity: &Identity, facts: &RequestFacts<'_>) -> bool {
        if self.mode() != PolicyMode::Enforce {
            return true;
        }
        match self.policy() {
            None => self.auth() != AuthMode::Required,
            Some(policy) => matches!(
                deciding_rule(policy, identity, facts),
                Some((RuleList::Allow, _))
            ),
        }
    }
}

/// The fast pass: booleans only, stopping at the first deciding rule (deny rules
/// first). `None`: no rule matched.
fn deciding_rule(
    policy: &CompiledPolicy,
    identity: &Identity,
    facts: &RequestFacts<'_>,
) -> Option<(RuleList, usize)> {
    if let Some(i) = policy.deny().iter().position(|r| r.holds(identity, facts)) {
        return Some((RuleList::Deny, i));
    }
    policy
        .allow()
        .iter()
        .position(|r| r.holds(identity, facts))
        .map(|i| (RuleList::Allow, i))
}

fn evaluate_policy(
    route: &CompiledRoute,
    policy: &CompiledPolicy,
    identity: &Identity,
    facts: &RequestFacts<'_>,
    explain: bool,
) -> Decision {
    let deciding = deciding_rule(policy, identity, facts);
    if let Some((RuleList::Deny, i)) = deciding {
        let mut d = base(route, Outcome::Deny, Reason::Forbidden, Basis::DenyRule);
        d.rule = policy.deny().get(i).map(CompiledRule::rule_ref);
        d.rules = Some(trace_rules(
            policy.deny().iter().take(i + 1),
            identity,
            facts,
        ));
        return d;
    }
    if let Some((RuleList::Allow, i)) = deciding {
        let mut d = base(route, Outcome::Allow, Reason::Allowed, Basis::AllowRule);
        d.rule = policy.allow().get(i).map(CompiledRule::rule_ref);
        if explain {
            let rules = policy
                .deny()
                .iter()
                .chain(policy.allow().iter().take(i + 1));
            d.rules = Some(trace_rules(rules, identity, facts));
        }
        return d;
    }
    // Denied for want of an allow rule: explain every rule, and say whether scopes
    // alone stood in the way.
    let mut d = base(
        route,
        Outcome::Deny,
        Reason::Forbidden,
        Basis::NoAllowMatched,
    );
    let traces = trace_rules(
        policy.deny().iter().chain(policy.allow().iter()),
        identity,
        facts,
    );
    if identity.is_authenticated() {
        if let Some(missing) = traces.iter().find_map(only_scopes_missing) {
            d.reason = Reason::InsufficientScope;
            d.missing_scopes = missing;
        }
    }
    d.rules = Some(traces);
    d
}

fn trace_rules<'r>(
    rules: impl Iterator<Item = &'r CompiledRule>,
    identity: &Identity,
    facts: &RequestFacts<'_>,
) -> Vec<RuleTrace> {
    rules.map(|r| r.trace(identity, facts)).collect()
}

/// For an allow rule that failed only because of its `scopes` condition, the
/// missing scopes.
fn only_scopes_missing(trace: &RuleTrace) -> Option<Vec<String>> {
    if trace.rule.list != RuleList::Allow || trace.matched {
        return None;
    }
    let mut missing = None;
    for c in trace.conditions.iter().filter(|c| !c.passed) {
        if &*c.condition != "scopes" || c.missing.is_empty() {
            return None;
        }
        missing = Some(c.missing.clone());
    }
    missing
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tools_tests;
