//! The `tools` condition (SPEC §10): it decides `tools/call` requests only; every
//! other request is judged with it set aside, so an allow rule with `tools` still
//! lets its callers initialize and list, and a deny rule with `tools` never denies
//! anything but a call.

use super::*;
use crate::routes::RouteTable;
use crate::testutil::{path, table, user};
use serde_json::json;

fn mcp_table(mode: &str) -> RouteTable {
    table(json!([{
        "name": "mcp",
        "match": {"path_prefix": "/mcp"},
        "mcp": {},
        "mode": mode,
        "policy": {
            "deny": [
                {"name": "no-deletes", "tools": ["*_delete", "admin.*"], "groups": ["agents"]}
            ],
            "allow": [
                {"name": "agents-read", "groups": ["agents"], "tools": ["get_*", "search"]},
                {"name": "admins", "groups": ["admins"]}
            ]
        }
    }]))
}

fn judge(t: &RouteTable, id: &Identity, tool: Option<&str>) -> (Decision, bool) {
    let np = path("/mcp");
    let facts = RequestFacts {
        method: "POST",
        host: "h",
        path: &np,
        tool,
    };
    let route = &t.routes()[0];
    let d = route.evaluate(id, &facts);
    let explained = route.evaluate_explained(id, &facts);
    // The boolean pass, the decision and its explanation never disagree.
    assert_eq!(d.permits(), route.permits(id, &facts), "{tool:?}");
    assert_eq!(
        (d.outcome, d.rule.clone()),
        (explained.outcome, explained.rule.clone())
    );
    let permits = route.permits(id, &facts);
    (d, permits)
}

#[test]
fn calls_are_judged_by_tool() {
    let t = mcp_table("enforce");
    let agent = user("bot", &["agents"], &[]);
    for (tool, allowed, rule) in [
        (Some("get_weather"), true, "agents-read"),
        (Some("search"), true, "agents-read"),
        (Some("searchx"), false, ""),
        (Some("set_weather"), false, ""),
        (Some("user_delete"), false, "no-deletes"),
        (Some("admin.reset.all"), false, "no-deletes"),
        // Names are compared exactly: no case folding.
        (Some("GET_weather"), false, ""),
        // Tool names are not paths: `*` crosses a `/` of a namespaced tool.
        (Some("github/user_delete"), false, "no-deletes"),
        (Some("get_/x"), true, "agents-read"),
    ] {
        let (d, permits) = judge(&t, &agent, tool);
        assert_eq!(d.is_allowed(), allowed, "{tool:?}");
        assert_eq!(permits, allowed, "{tool:?}");
        assert_eq!(
            d.rule
                .as_ref()
                .map(|r| r.label().into_owned())
                .unwrap_or_default(),
            rule,
            "{tool:?}"
        );
    }
    // A rule without `tools` allows every call.
    let admin = user("root", &["admins"], &[]);
    assert!(judge(&t, &admin, Some("user_delete")).0.is_allowed());
}

#[test]
fn other_methods_set_the_condition_aside() {
    let t = mcp_table("enforce");
    // Allowed some tools: may initialize and list (the allow rule's tools are
    // set aside), and the deny rule about tools does not deny it.
    let agent = user("bot", &["agents"], &[]);
    let (d, permits) = judge(&t, &agent, None);
    assert!(d.is_allowed() && permits);
    assert_eq!(d.rule.unwrap().label(), "agents-read");
    // Allowed nothing: setting `tools` aside grants nothing else.
    let other = user("eve", &["users"], &[]);
    let (d, permits) = judge(&t, &other, None);
    assert!(!d.is_allowed() && !permits);
    assert!(!judge(&t, &other, Some("get_weather")).0.is_allowed());
    // The explanation shows the deny rule's tools condition as not holding.
    let np = path("/mcp");
    let facts = RequestFacts {
        method: "POST",
        host: "h",
        path: &np,
        tool: None,
    };
    let explained = t.routes()[0].evaluate_explained(&agent, &facts);
    let rules = explained.rules.unwrap();
    let deny = &rules[0];
    assert!(!deny.matched);
    let tools = deny
        .conditions
        .iter()
        .find(|c| &*c.condition == "tools")
        .unwrap();
    assert!(!tools.passed && tools.actual.is_empty());
}

#[test]
fn audit_mode_permits_what_it_would_deny() {
    let t = mcp_table("audit");
    let agent = user("bot", &["agents"], &[]);
    let (d, permits) = judge(&t, &agent, Some("user_delete"));
    assert!(!d.is_allowed() && !d.enforced && d.permits() && permits);
}

#[test]
fn without_policy_follows_auth() {
    let t = table(json!([
        {"name": "closed", "match": {"path": "/a"}, "mcp": {}},
        {"name": "open", "match": {"path": "/b"}, "mcp": {}, "auth": "optional"}
    ]));
    let anyone = user("x", &[], &[]);
    for (i, open) in [(0, false), (1, true)] {
        let np = path(if i == 0 { "/a" } else { "/b" });
        let facts = RequestFacts {
            method: "POST",
            host: "h",
            path: &np,
            tool: Some("t"),
        };
        let route = &t.routes()[i];
        assert_eq!(route.permits(&anyone, &facts), open);
        assert_eq!(route.evaluate(&anyone, &facts).permits(), open);
    }
}
