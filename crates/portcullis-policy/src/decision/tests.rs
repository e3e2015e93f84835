use super::*;
use crate::routes::RouteTable;
use crate::testutil::{path, table, user};
use proptest::prelude::*;
use serde_json::json;

fn decide(t: &RouteTable, id: &Identity, method: &str, p: &str) -> Decision {
    let np = path(p);
    t.decide(
        id,
        &RequestFacts {
            method,
            host: "h.example",
            path: &np,
            tool: None,
        },
    )
}

#[test]
fn defaults_without_policy() {
    let t = table(json!([
        {"name": "required", "match": {"path": "/req"}},
        {"name": "optional", "match": {"path": "/opt"}, "auth": "optional"},
        {"name": "public", "match": {"path": "/pub"}, "auth": "none"},
        {"name": "empty-allow", "match": {"path": "/empty"}, "policy": {"allow": []}},
        {"name": "empty-policy", "match": {"path": "/empty2"}, "policy": {}}
    ]));
    let alice = user("alice", &["admins"], &[]);
    let anon = Identity::anonymous();

    let d = decide(&t, &alice, "GET", "/req");
    assert_eq!(
        (d.outcome, d.reason, d.basis),
        (Outcome::Deny, Reason::Forbidden, Basis::NoPolicyDefaultDeny)
    );
    assert_eq!(
        d.caller_message(ExplainToCaller::Reason),
        "no policy: denied by default"
    );
    assert!(!d.permits());

    for (p, who) in [
        ("/opt", &anon),
        ("/opt", &alice),
        ("/pub", &anon),
        ("/pub", &alice),
    ] {
        let d = decide(&t, who, "GET", p);
        assert_eq!(
            (d.outcome, d.reason, d.basis),
            (Outcome::Allow, Reason::Allowed, Basis::NoPolicyOpen),
            "{p}"
        );
        assert!(d.rules.is_none(), "no explanation on the allow fast path");
    }
    for p in ["/empty", "/empty2"] {
        let d = decide(&t, &alice, "GET", p);
        assert_eq!(
            (d.outcome, d.reason, d.basis),
            (Outcome::Deny, Reason::Forbidden, Basis::NoAllowMatched),
            "{p}"
        );
    }
    let d = decide(&t, &alice, "GET", "/nowhere");
    assert_eq!(
        (d.outcome, d.reason, d.basis),
        (Outcome::Deny, Reason::NoRoute, Basis::NoRoute)
    );
    assert!(!d.permits());
}

fn orders() -> RouteTable {
    table(json!([{
        "name": "orders",
        "match": {"path_prefix": "/api/orders"},
        "policy": {
            "deny": [{"name": "no-interns", "groups": ["interns"]}],
            "allow": [
                {"name": "admins", "groups": ["admins"]},
                {"scopes": ["orders:read"], "methods": ["GET", "HEAD"]},
                {"scopes": ["orders:write", "orders:read"], "methods": ["POST"]}
            ]
        }
    }]))
}

#[test]
fn deny_first_then_first_allow() {
    let t = orders();
    let d = decide(
        &t,
        &user("a", &["admins", "interns"], &[]),
        "GET",
        "/api/orders",
    );
    assert_eq!((d.outcome, d.basis), (Outcome::Deny, Basis::DenyRule));
    assert_eq!(
        d.rule.as_ref().map(|r| r.label().into_owned()).as_deref(),
        Some("no-interns")
    );
    // Evaluation stops at the deciding deny rule.
    assert_eq!(d.rules.as_ref().map(Vec::len), Some(1));

    let d = decide(&t, &user("a", &["admins"], &[]), "DELETE", "/api/orders/1");
    assert_eq!((d.outcome, d.basis), (Outcome::Allow, Basis::AllowRule));
    assert_eq!(
        d.rule.as_ref().map(|r| r.label().into_owned()).as_deref(),
        Some("admins")
    );

    let d = decide(&t, &user("a", &[], &["orders:read"]), "HEAD", "/api/orders");
    assert_eq!(
        d.rule.as_ref().map(|r| r.label().into_owned()).as_deref(),
        Some("allow[1]")
    );
    assert!(d.is_allowed());
    assert_eq!(d.route.as_deref(), Some("orders"));
    assert_eq!(d.route_index, Some(0));
}

#[test]
fn insufficient_scope_only_when_scopes_alone_fail() {
    let t = orders();
    // GET without the read scope: allow[1] failed only on scopes.
    let d = decide(
        &t,
        &user("a", &["users"], &["profile"]),
        "GET",
        "/api/orders",
    );
    assert_eq!(d.reason, Reason::InsufficientScope);
    assert_eq!(d.missing_scopes, vec!["orders:read"]);
    assert_eq!(
        d.www_authenticate().as_deref(),
        Some("Bearer error=\"insufficient_scope\", scope=\"orders:read\"")
    );
    // POST with read only: allow[2] lacks write.
    let d = decide(&t, &user("a", &[], &["orders:read"]), "POST", "/api/orders");
    assert_eq!(d.reason, Reason::InsufficientScope);
    assert_eq!(d.missing_scopes, vec!["orders:write"]);
    // DELETE: no rule would pass with more scopes → forbidden.
    let d = decide(
        &t,
        &user("a", &[], &["orders:read"]),
        "DELETE",
        "/api/orders",
    );
    assert_eq!(d.reason, Reason::Forbidden);
    assert!(d.missing_scopes.is_empty());
    assert_eq!(d.www_authenticate(), None);
    // Anonymous callers are never told about scopes.
    let d = decide(&t, &Identity::anonymous(), "GET", "/api/orders");
    assert_eq!(d.reason, Reason::Forbidden);
}

#[test]
fn audit_mode_evaluates_but_does_not_enforce() {
    let t = table(json!([{
        "name": "shadow", "mode": "audit",
        "policy": {"allow": [{"groups": ["admins"]}]}
    }]));
    let d = decide(&t, &user("a", &["users"], &[]), "GET", "/x");
    assert_eq!(d.outcome, Outcome::Deny);
    assert!(!d.enforced);
    assert!(d.permits());
    let d = decide(&t, &user("a", &["admins"], &[]), "GET", "/x");
    assert!(d.is_allowed() && d.permits() && !d.enforced);
}

#[test]
fn explanation_built_on_demand() {
    let t = orders();
    let alice = user("a", &["admins"], &[]);
    let np = path("/api/orders");
    let facts = RequestFacts {
        method: "GET",
        host: "h",
        path: &np,
        tool: None,
    };
    let route = &t.routes()[0];
    assert!(route.evaluate(&alice, &facts).rules.is_none());
    let d = route.evaluate_explained(&alice, &facts);
    let rules = d.rules.unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].position, "deny[0]");
    assert!(!rules[0].matched);
    assert!(rules[1].matched);
}

#[test]
fn serializes_to_json() {
    let t = orders();
    let d = decide(
        &t,
        &user("a", &["users"], &["profile"]),
        "GET",
        "/api/orders",
    );
    let v = serde_json::to_value(&d).unwrap();
    let want = json!({
        "decision": "deny",
        "reason": "insufficient_scope",
        "basis": "no_allow_matched",
        "route": "orders",
        "route_index": 0,
        "rule": null,
        "enforced": true,
        "missing_scopes": ["orders:read"],
        "rules": [
            {"rule": "no-interns", "position": "deny[0]", "matched": false, "conditions": [
                {"condition": "groups", "combine": "any_of", "required": ["interns"], "actual": ["users"], "passed": false}
            ]},
            {"rule": "admins", "position": "allow[0]", "matched": false, "conditions": [
                {"condition": "groups", "combine": "any_of", "required": ["admins"], "actual": ["users"], "passed": false}
            ]},
            {"rule": "allow[1]", "position": "allow[1]", "matched": false, "conditions": [
                {"condition": "methods", "combine": "any_of", "required": ["GET", "HEAD"], "actual": ["GET"], "passed": true},
                {"condition": "scopes", "combine": "all_of", "required": ["orders:read"], "actual": ["profile"], "passed": false, "missing": ["orders:read"]}
            ]},
            {"rule": "allow[2]", "position": "allow[2]", "matched": false, "conditions": [
                {"condition": "methods", "combine": "any_of", "required": ["POST"], "actual": ["GET"], "passed": false},
                {"condition": "scopes", "combine": "all_of", "required": ["orders:write", "orders:read"], "actual": ["profile"], "passed": false, "missing": ["orders:write", "orders:read"]}
            ]}
        ]
    });
    assert_eq!(v, want);
    // The allow fast path serializes without `rules`.
    let d = decide(&t, &user("a", &["admins"], &[]), "GET", "/api/orders");
    assert_eq!(
        serde_json::to_value(&d).unwrap(),
        json!({"decision": "allow", "reason": "allowed", "basis": "allow_rule", "route": "orders",
               "route_index": 0, "rule": "admins", "enforced": true})
    );
}

#[test]
fn www_authenticate_escapes_quotes() {
    let mut d = Decision::no_route();
    d.reason = Reason::InsufficientScope;
    d.missing_scopes = vec!["a\"b".into(), "c\\d\n".into()];
    assert_eq!(
        d.www_authenticate().as_deref(),
        Some(r#"Bearer error="insufficient_scope", scope="a\"b c\\d""#)
    );
}

const GROUPS: &[&str] = &["a", "b", "c", "d"];

fn rule_strategy() -> impl Strategy<Value = serde_json::Value> {
    (
        proptest::option::of(proptest::sample::subsequence(GROUPS.to_vec(), 0..3)),
        proptest::option::of(proptest::sample::subsequence(vec!["GET", "POST"], 1..2)),
        proptest::option::of(proptest::sample::subsequence(
            vec!["/x/**", "/y/*", "/**"],
            1..3,
        )),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(groups, methods, paths, authenticated)| {
            let mut m = serde_json::Map::new();
            if let Some(g) = groups {
                m.insert("groups".into(), json!(g));
            }
            if let Some(me) = methods {
                m.insert("methods".into(), json!(me));
            }
            if let Some(p) = paths {
                m.insert("paths".into(), json!(p));
            }
            if let Some(a) = authenticated {
                m.insert("authenticated".into(), json!(a));
            }
            serde_json::Value::Object(m)
        })
}

proptest! {
    /// Whatever the allow rules say, a matching deny rule decides, and the outcome
    /// equals the reference semantics "no deny holds and some allow holds".
    #[test]
    fn deny_always_beats_allow(
        deny in proptest::collection::vec(rule_strategy(), 0..4),
        allow in proptest::collection::vec(rule_strategy(), 0..4),
        groups in proptest::sample::subsequence(GROUPS.to_vec(), 0..4),
        anonymous in any::<bool>(),
        method in proptest::sample::select(vec!["GET", "POST", "PUT"]),
        p in proptest::sample::select(vec!["/x", "/x/1", "/y/2", "/z"]),
    ) {
        let t = table(json!([{"policy": {"deny": deny, "allow": allow}}]));
        let id = if anonymous { Identity::anonymous() } else { user("u", &groups, &[]) };
        let np = path(p);
        let facts = RequestFacts { method, host: "h", path: &np, tool: None };
        let d = t.decide(&id, &facts);
        let route = &t.routes()[0];
        let policy = route.policy().unwrap();
        let any_deny = policy.deny().iter().any(|r| r.holds(&id, &facts));
        let any_allow = policy.allow().iter().any(|r| r.holds(&id, &facts));
        if any_deny {
            prop_assert_eq!(d.outcome, Outcome::Deny);
            prop_assert_eq!(d.basis, Basis::DenyRule);
        }
        prop_assert_eq!(d.is_allowed(), !any_deny && any_allow);
        // The explained evaluation agrees with the fast one.
        let e = route.evaluate_explained(&id, &facts);
        prop_assert_eq!(e.outcome, d.outcome);
        prop_assert_eq!(e.rule, d.rule);
        prop_assert_eq!(e.reason, d.reason);
    }

    /// A request that no route matches is denied and not permitted, whoever asks.
    #[test]
    fn unmatched_request_is_never_allowed(
        host in proptest::sample::select(vec!["a.example", "b.example", "A.EXAMPLE:80", ""]),
        segs in proptest::collection::vec(proptest::sample::select(vec!["api", "x", "admin", ".."]), 0..4),
        method in proptest::sample::select(vec!["GET", "POST"]),
        admin in any::<bool>(),
    ) {
        let t = table(json!([
            {"match": {"hosts": ["a.example"], "path_prefix": "/api"}, "auth": "none"},
            {"match": {"path": "/admin", "methods": ["POST"]}, "auth": "none"},
            {"match": {"hosts": ["*.example"], "path_regex": "/x(/.*)?"}, "policy": {"allow": [{}]}}
        ]));
        let raw: String = segs.iter().map(|s| format!("/{s}")).collect();
        let np = path(&raw);
        let id = if admin { user("root", &["admins"], &[]) } else { Identity::anonymous() };
        let facts = RequestFacts { method, host, path: &np, tool: None };
        let d = t.decide(&id, &facts);
        if t.find(host, method, &np).is_none() {
            prop_assert_eq!(d.reason, Reason::NoRoute);
            prop_assert!(!d.is_allowed());
            prop_assert!(!d.permits());
        } else {
            prop_assert!(d.is_allowed());
        }
    }
}
