//! Golden tests: the exact text users and callers see.

use super::*;
use crate::decision::RequestFacts;
use crate::routes::RouteTable;
use crate::testutil::{path, table, user};
use serde_json::json;

fn orders() -> RouteTable {
    table(json!([
        {
            "name": "orders",
            "match": {"path_prefix": "/api/orders"},
            "policy": {
                "deny": [{"name": "no-interns", "groups": ["interns"]}],
                "allow": [
                    {"name": "admins", "groups": ["admins"]},
                    {"scopes": ["orders:read"], "methods": ["GET", "HEAD"]}
                ]
            }
        },
        {"name": "admin", "match": {"path_prefix": "/admin"}, "policy": {"allow": [{"groups": ["admins"]}]}},
        {"name": "required", "match": {"path_prefix": "/closed"}},
        {"name": "shadow", "mode": "audit", "match": {"path_prefix": "/new"}, "policy": {"allow": [{"authenticated": true}]}}
    ]))
}

fn decide(id: &Identity, method: &str, p: &str, explain: bool) -> Decision {
    let np = path(p);
    orders().decide_with(
        id,
        &RequestFacts {
            method,
            host: "shop.example",
            path: &np,
            tool: None,
        },
        explain,
    )
}

fn alice() -> Identity {
    let mut a = user("alice", &["users", "dev"], &["orders:read", "profile"]);
    a.email = Some("alice@example.com".into());
    a
}

#[test]
fn explain_text_allow() {
    let d = decide(&alice(), "GET", "/api/orders/7", true);
    assert_eq!(
        d.explain_text(),
        "route: orders (routes[0])
deny[0] no-interns: no match
  ✗ groups: requires any of [interns]; actual [users, dev]
allow[0] admins: no match
  ✗ groups: requires any of [admins]; actual [users, dev]
allow[1]: match
  ✓ methods: requires any of [GET, HEAD]; actual [GET]
  ✓ scopes: requires all of [orders:read]; actual [orders:read, profile]
decided by rule allow[1]
allow
"
    );
}

#[test]
fn explain_text_no_allow_matched() {
    let bob = user("bob", &["users", "dev"], &["orders:read"]);
    let d = decide(&bob, "POST", "/api/orders", false);
    assert_eq!(
        d.explain_text(),
        "route: orders (routes[0])
deny[0] no-interns: no match
  ✗ groups: requires any of [interns]; actual [users, dev]
allow[0] admins: no match
  ✗ groups: requires any of [admins]; actual [users, dev]
allow[1]: no match
  ✗ methods: requires any of [GET, HEAD]; actual [POST]
  ✓ scopes: requires all of [orders:read]; actual [orders:read]
no allow rule matched
deny: forbidden
"
    );
    assert_eq!(
        d.caller_message(ExplainToCaller::Full),
        "admins: needs group admins; you have: users, dev; or allow[1]: needs method GET or HEAD; you have: POST"
    );
    assert_eq!(
        d.caller_message(ExplainToCaller::Reason),
        "no policy rule allows this request"
    );
    assert_eq!(d.caller_message(ExplainToCaller::None), "forbidden");
}

#[test]
fn explain_text_insufficient_scope() {
    let carol = user("carol", &["users"], &["profile"]);
    let d = decide(&carol, "GET", "/api/orders", false);
    assert_eq!(
        d.explain_text(),
        "route: orders (routes[0])
deny[0] no-interns: no match
  ✗ groups: requires any of [interns]; actual [users]
allow[0] admins: no match
  ✗ groups: requires any of [admins]; actual [users]
allow[1]: no match
  ✓ methods: requires any of [GET, HEAD]; actual [GET]
  ✗ scopes: requires all of [orders:read]; actual [profile]; missing [orders:read]
no allow rule matched
missing scopes: [orders:read]
deny: insufficient_scope
"
    );
    assert_eq!(
        d.caller_message(ExplainToCaller::Full),
        "needs scope orders:read; you have: profile"
    );
    assert_eq!(
        d.caller_message(ExplainToCaller::Reason),
        "missing scope: orders:read"
    );
    assert_eq!(d.caller_message(ExplainToCaller::None), "forbidden");
}

#[test]
fn explain_text_deny_rule() {
    let intern = user("ivan", &["interns", "admins"], &[]);
    let d = decide(&intern, "GET", "/api/orders", false);
    assert_eq!(
        d.explain_text(),
        "route: orders (routes[0])
deny[0] no-interns: match
  ✓ groups: requires any of [interns]; actual [interns, admins]
decided by rule no-interns
deny: forbidden
"
    );
    assert_eq!(
        d.caller_message(ExplainToCaller::Full),
        "denied by rule no-interns: matched groups interns"
    );
    assert_eq!(
        d.caller_message(ExplainToCaller::Reason),
        "denied by rule no-interns"
    );
    assert_eq!(d.caller_message(ExplainToCaller::None), "forbidden");
}

#[test]
fn caller_message_single_rule_full() {
    let d = decide(&alice(), "GET", "/admin/users", false);
    assert_eq!(
        d.caller_message(ExplainToCaller::Full),
        "needs group admins; you have: users, dev"
    );
    assert_eq!(
        d.caller_message(ExplainToCaller::Reason),
        "no policy rule allows this request"
    );
    assert_eq!(d.caller_message(ExplainToCaller::None), "forbidden");
    let anon = decide(&Identity::anonymous(), "GET", "/admin", false);
    assert_eq!(
        anon.caller_message(ExplainToCaller::Full),
        "needs group admins; you have: none"
    );
}

#[test]
fn explain_text_defaults_audit_and_no_route() {
    let d = decide(&alice(), "GET", "/closed", false);
    assert_eq!(
        d.explain_text(),
        "route: required (routes[2])\nno policy: denied by default\ndeny: forbidden\n"
    );
    for level in [ExplainToCaller::Full, ExplainToCaller::Reason] {
        assert_eq!(d.caller_message(level), "no policy: denied by default");
    }
    assert_eq!(d.caller_message(ExplainToCaller::None), "forbidden");

    let d = decide(&Identity::anonymous(), "GET", "/new", false);
    assert_eq!(
        d.explain_text(),
        "route: shadow (routes[3])
mode: audit (the decision is logged, not enforced)
allow[0]: no match
  ✗ authenticated: requires true; actual [false]
no allow rule matched
deny: forbidden
"
    );
    assert_eq!(
        d.caller_message(ExplainToCaller::Full),
        "needs a signed-in caller; you have: none"
    );

    let d = decide(&alice(), "GET", "/elsewhere", false);
    assert_eq!(
        d.explain_text(),
        "route: none matched\nno route matches this request\ndeny: no_route\n"
    );
    assert_eq!(d.caller_message(ExplainToCaller::None), "no_route");
}

#[test]
fn explain_text_escapes_control_characters() {
    let evil = user("eve", &["x\u{1b}[31mred"], &[]);
    let d = decide(&evil, "GET", "/admin", false);
    assert!(d.explain_text().contains("actual [x\\u{1b}[31mred]"));
    assert!(!d.explain_text().contains('\u{1b}'));
}

#[test]
fn html_page_golden() {
    let d = decide(&alice(), "GET", "/admin", false);
    assert_eq!(
        d.html_page(&alice(), "req-1", ExplainToCaller::Reason),
        "<!DOCTYPE html>
<html lang=\"en\">
<head><meta charset=\"utf-8\"><title>403 Access denied</title></head>
<body>
<h1>Access denied</h1>
<p>You are signed in as <strong>alice@example.com</strong>.</p>
<p>You may not use <strong>admin</strong>.</p>
<p>What was missing: no policy rule allows this request</p>
<p>Request ID: <code>req-1</code></p>
</body>
</html>
"
    );
    let page = d.html_page(&Identity::anonymous(), "r", ExplainToCaller::None);
    assert!(page.contains("<p>You are not signed in.</p>"));
    assert!(
        !page.contains("admin"),
        "level none does not name the route"
    );
    assert!(page.contains("<p>What was missing: forbidden</p>"));
}

#[test]
fn html_page_escapes_everything() {
    let mut mallory = user("m", &["<script>alert(1)</script>"], &[]);
    mallory.email = Some("\"><img src=x onerror=alert(1)>@example.com".into());
    let d = decide(&mallory, "GET", "/admin", false);
    let page = d.html_page(&mallory, "<req'id>", ExplainToCaller::Full);
    assert!(!page.contains("<script>"));
    assert!(!page.contains("<img"));
    assert!(!page.contains("<req"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;@example.com"));
    assert!(page.contains("<code>&lt;req&#39;id&gt;</code>"));
}

#[test]
fn html_escape_table() {
    assert_eq!(
        html_escape("a&b<c>d\"e'f"),
        "a&amp;b&lt;c&gt;d&quot;e&#39;f"
    );
    assert_eq!(html_escape("x\u{0}y"), "x\u{FFFD}y");
}
