use super::*;
use crate::testutil::path;
use portcullis_core::IdentityKind;
use serde_json::json;

fn alice() -> Identity {
    Identity {
        kind: IdentityKind::User,
        subject: "alice".into(),
        provider: Some("idp".into()),
        issuer: Some("https://idp.example.com".into()),
        email: Some("Alice@Example.COM".into()),
        name: Some("alice".into()),
        groups: vec!["users".into(), "dev".into()],
        roles: vec!["reader".into()],
        scopes: vec!["orders:read".into(), "profile".into()],
        client_id: Some("web".into()),
        workload: Some("spiffe://prod.example/ns/pay/sa/api".into()),
        claims: Arc::new(json!({
            "sub": "alice",
            "email_verified": true,
            "tier": "gold",
            "level": 3,
            "admin": false,
            "realm_access": {"roles": ["offline", "uma"]},
            "https://example.com/roles": ["editor"],
            "obj": {"k": "v"}
        })),
        expires_at: None,
    }
}

fn compile_rule(rule: serde_json::Value) -> Result<CompiledRule, Vec<String>> {
    let policy: PolicyConfig = serde_json::from_value(json!({ "allow": [rule] })).unwrap();
    CompiledPolicy::compile(&policy).map(|p| p.allow()[0].clone())
}

/// Checks both the fast and the explaining evaluation.
fn holds(rule: &serde_json::Value, id: &Identity, method: &str, p: &str) -> bool {
    let rule = compile_rule(rule.clone()).unwrap();
    let np = path(p);
    let facts = RequestFacts {
        method,
        host: "h",
        path: &np,
        tool: None,
    };
    let fast = rule.holds(id, &facts);
    let traced = rule.trace(id, &facts);
    assert_eq!(
        fast, traced.matched,
        "fast and traced disagree for {rule:?}"
    );
    fast
}

#[test]
fn a_deny_of_get_holds_for_head_and_an_allow_does_not() {
    let policy: PolicyConfig = serde_json::from_value(json!({
        "deny": [{"methods": ["GET"], "paths": ["/reports/**"]}],
        "allow": [{"methods": ["GET"]}]
    }))
    .unwrap();
    let p = CompiledPolicy::compile(&policy).unwrap();
    let np = path("/reports/q1");
    let facts = |method| RequestFacts {
        method,
        host: "h",
        path: &np,
        tool: None,
    };
    let a = alice();
    assert!(p.deny()[0].holds(&a, &facts("HEAD")));
    assert!(p.deny()[0].trace(&a, &facts("HEAD")).matched);
    assert!(p.deny()[0].holds(&a, &facts("GET")));
    assert!(!p.allow()[0].holds(&a, &facts("HEAD")));
}

#[test]
fn every_condition_table() {
    let a = alice();
    let anon = Identity::anonymous();
    let cases: Vec<(serde_json::Value, &Identity, &str, &str, bool)> = vec![
        // methods: any-of, case-insensitive
        (json!({"methods": ["GET", "HEAD"]}), &a, "GET", "/", true),
        (json!({"methods": ["get"]}), &a, "GET", "/", true),
        (json!({"methods": ["GET"]}), &a, "get", "/", true),
        (json!({"methods": ["GET"]}), &a, "POST", "/", false),
        (json!({"methods": ["GET"]}), &anon, "GET", "/", true),
        // paths: globs
        (json!({"paths": ["/admin/**"]}), &a, "GET", "/admin", true),
        (
            json!({"paths": ["/admin/**"]}),
            &a,
            "GET",
            "/admin/x/y",
            true,
        ),
        (
            json!({"paths": ["/admin/**"]}),
            &a,
            "GET",
            "/administrator",
            false,
        ),
        (
            json!({"paths": ["/api/*/items"]}),
            &a,
            "GET",
            "/api/v1/items",
            true,
        ),
        (
            json!({"paths": ["/api/*/items"]}),
            &a,
            "GET",
            "/api/v1/x/items",
            false,
        ),
        (json!({"paths": ["/x", "/y/**"]}), &a, "GET", "/y/z", true),
        // The upstream receives `/internal/`, whose last segment is empty:
        // `*` matches it, though the matching form leaves the `/` out.
        (
            json!({"paths": ["/internal/*"]}),
            &a,
            "GET",
            "/internal/",
            true,
        ),
        (
            json!({"paths": ["/internal/*"]}),
            &a,
            "GET",
            "/internal//",
            true,
        ),
        (
            json!({"paths": ["/internal/*"]}),
            &a,
            "GET",
            "/internal/;x",
            true,
        ),
        (
            json!({"paths": ["/internal/*"]}),
            &a,
            "GET",
            "/internal",
            false,
        ),
        // A segment of parameters alone is no segment (Tomcat merges `//`).
        (
            json!({"paths": ["/api/admin/**"]}),
            &a,
            "GET",
            "/api/;/admin/x",
            true,
        ),
        // Case is ignored unless `case_sensitive_paths` (see compile_with).
        (json!({"paths": ["/Admin/**"]}), &a, "GET", "/admin", true),
        (json!({"paths": ["/admin/**"]}), &a, "GET", "/ADMIN/x", true),
        (
            json!({"paths": ["/admin/**"]}),
            &a,
            "GET",
            "/admin%3Bx/y",
            true,
        ),
        (
            json!({"paths": ["/admin//**"]}),
            &a,
            "GET",
            "/admin/x",
            true,
        ),
        (json!({"paths": ["/**"]}), &anon, "GET", "/x", true),
        // A trailing `/` is ignored (Express, Koa, ASP.NET Core serve `/a/` as
        // `/a`): a deny rule for `/api/users/delete` holds for `.../delete/` too.
        (
            json!({"paths": ["/api/users/delete"]}),
            &a,
            "DELETE",
            "/api/users/delete/",
            true,
        ),
        (json!({"paths": ["/api/*"]}), &a, "GET", "/api/x/", true),
        (
            json!({"paths": ["/api/*/items"]}),
            &a,
            "GET",
            "/api/v1/items/",
            true,
        ),
        (json!({"paths": ["/dir/"]}), &a, "GET", "/dir", true),
        (
            json!({"paths": ["/api/users/delete"]}),
            &a,
            "GET",
            "/api/users/delete/x",
            false,
        ),
        // subjects
        (json!({"subjects": ["alice"]}), &a, "GET", "/", true),
        (json!({"subjects": ["bob", "alice"]}), &a, "GET", "/", true),
        (json!({"subjects": ["Alice"]}), &a, "GET", "/", false),
        (json!({"subjects": ["alice"]}), &anon, "GET", "/", false),
        // emails: case-insensitive
        (
            json!({"emails": ["alice@example.com"]}),
            &a,
            "GET",
            "/",
            true,
        ),
        (
            json!({"emails": ["bob@example.com"]}),
            &a,
            "GET",
            "/",
            false,
        ),
        // email_domains: exact domain, case-insensitive
        (
            json!({"email_domains": ["example.com"]}),
            &a,
            "GET",
            "/",
            true,
        ),
        (
            json!({"email_domains": ["@EXAMPLE.com"]}),
            &a,
            "GET",
            "/",
            true,
        ),
        (
            json!({"email_domains": ["other.com", "example.com"]}),
            &a,
            "GET",
            "/",
            true,
        ),
        (
            json!({"email_domains": ["ample.com"]}),
            &a,
            "GET",
            "/",
            false,
        ),
        (json!({"email_domains": ["com"]}), &a, "GET", "/", false),
        (
            json!({"email_domains": ["example.com"]}),
            &anon,
            "GET",
            "/",
            false,
        ),
        // groups / roles: any-of
        (json!({"groups": ["admins", "dev"]}), &a, "GET", "/", true),
        (json!({"groups": ["admins"]}), &a, "GET", "/", false),
        (json!({"groups": ["Dev"]}), &a, "GET", "/", false),
        (json!({"groups": ["users"]}), &anon, "GET", "/", false),
        (json!({"roles": ["reader"]}), &a, "GET", "/", true),
        (json!({"roles": ["writer"]}), &a, "GET", "/", false),
        // scopes: all required
        (json!({"scopes": ["orders:read"]}), &a, "GET", "/", true),
        (
            json!({"scopes": ["orders:read", "profile"]}),
            &a,
            "GET",
            "/",
            true,
        ),
        (
            json!({"scopes": ["orders:read", "orders:write"]}),
            &a,
            "GET",
            "/",
            false,
        ),
        (json!({"scopes": ["orders:read"]}), &anon, "GET", "/", false),
        // clients
        (json!({"clients": ["web", "cli"]}), &a, "GET", "/", true),
        (json!({"clients": ["cli"]}), &a, "GET", "/", false),
        // workloads: SPIFFE globs
        (
            json!({"workloads": ["spiffe://prod.example/ns/pay/sa/api"]}),
            &a,
            "GET",
            "/",
            true,
        ),
        (
            json!({"workloads": ["spiffe://prod.example/ns/*/sa/api"]}),
            &a,
            "GET",
            "/",
            true,
        ),
        (
            json!({"workloads": ["spiffe://prod.example/**"]}),
            &a,
            "GET",
            "/",
            true,
        ),
        (
            json!({"workloads": ["spiffe://prod.example/ns/*"]}),
            &a,
            "GET",
            "/",
            false,
        ),
        (
            json!({"workloads": ["spiffe://dev.example/**"]}),
            &a,
            "GET",
            "/",
            false,
        ),
        // providers
        (json!({"providers": ["idp"]}), &a, "GET", "/", true),
        (json!({"providers": ["other"]}), &a, "GET", "/", false),
        // claims
        (json!({"claims": {"tier": "gold"}}), &a, "GET", "/", true),
        (
            json!({"claims": {"tier": ["silver", "gold"]}}),
            &a,
            "GET",
            "/",
            true,
        ),
        (json!({"claims": {"tier": "silver"}}), &a, "GET", "/", false),
        (json!({"claims": {"level": "3"}}), &a, "GET", "/", true),
        (json!({"claims": {"admin": "false"}}), &a, "GET", "/", true),
        (json!({"claims": {"admin": "true"}}), &a, "GET", "/", false),
        (
            json!({"claims": {"realm_access.roles": "uma"}}),
            &a,
            "GET",
            "/",
            true,
        ),
        (
            json!({"claims": {"realm_access.roles": "admin"}}),
            &a,
            "GET",
            "/",
            false,
        ),
        (
            json!({"claims": {"[\"https://example.com/roles\"]": "editor"}}),
            &a,
            "GET",
            "/",
            true,
        ),
        (json!({"claims": {"missing": "x"}}), &a, "GET", "/", false),
        (json!({"claims": {"obj": "v"}}), &a, "GET", "/", false),
        (
            json!({"claims": {"tier": "gold", "level": "4"}}),
            &a,
            "GET",
            "/",
            false,
        ),
        (
            json!({"claims": {"tier": "gold"}}),
            &anon,
            "GET",
            "/",
            false,
        ),
        // authenticated
        (json!({"authenticated": true}), &a, "GET", "/", true),
        (json!({"authenticated": true}), &anon, "GET", "/", false),
        (json!({"authenticated": false}), &anon, "GET", "/", true),
        (json!({"authenticated": false}), &a, "GET", "/", false),
        // empty lists: any-of over nothing never matches; scopes [] requires nothing
        (json!({"groups": []}), &a, "GET", "/", false),
        (json!({"methods": []}), &a, "GET", "/", false),
        (json!({"scopes": []}), &a, "GET", "/", true),
        (json!({"claims": {}}), &a, "GET", "/", true),
        (json!({"claims": {"tier": []}}), &a, "GET", "/", false),
        // no condition: matches everything
        (json!({}), &a, "GET", "/", true),
        (json!({}), &anon, "DELETE", "/x", true),
        // combinations: every condition must hold
        (
            json!({"groups": ["dev"], "methods": ["GET"]}),
            &a,
            "GET",
            "/",
            true,
        ),
        (
            json!({"groups": ["dev"], "methods": ["GET"]}),
            &a,
            "POST",
            "/",
            false,
        ),
        (
            json!({"groups": ["admins"], "methods": ["GET"]}),
            &a,
            "GET",
            "/",
            false,
        ),
        (
            json!({"groups": ["dev"], "scopes": ["orders:read"], "paths": ["/orders/**"], "email_domains": ["example.com"], "claims": {"tier": "gold"}}),
            &a,
            "GET",
            "/orders/1",
            true,
        ),
        (
            json!({"groups": ["dev"], "scopes": ["orders:read"], "paths": ["/orders/**"], "email_domains": ["example.com"], "claims": {"tier": "gold"}}),
            &a,
            "GET",
            "/invoices/1",
            false,
        ),
        (
            json!({"paths": ["/public/**"], "authenticated": false}),
            &anon,
            "GET",
            "/public/a",
            true,
        ),
        (
            json!({"paths": ["/public/**"], "groups": ["users"]}),
            &anon,
            "GET",
            "/public/a",
            false,
        ),
    ];
    for (i, (rule, id, method, p, want)) in cases.iter().enumerate() {
        assert_eq!(
            holds(rule, id, method, p),
            *want,
            "case {i}: {rule} {method} {p}"
        );
    }
}

#[test]
fn email_with_two_ats_matches_nothing() {
    let mut id = alice();
    id.email = Some("mallory@evil.com@example.com".into());
    assert!(!holds(
        &json!({"email_domains": ["example.com"]}),
        &id,
        "GET",
        "/"
    ));
    assert!(!holds(&json!({"email_domains": ["com"]}), &id, "GET", "/"));
    // Nor can a config ask for such an address or domain.
    assert!(compile_rule(json!({"emails": ["mallory@evil.com@example.com"]})).is_err());
    assert!(compile_rule(json!({"email_domains": ["evil.com@example.com"]})).is_err());
    id.email = Some("@example.com".into());
    assert!(!holds(
        &json!({"email_domains": ["example.com"]}),
        &id,
        "GET",
        "/"
    ));
}

#[test]
fn unverified_email_is_ignored() {
    let mut id = alice();
    id.claims = Arc::new(json!({"email_verified": false}));
    assert!(!holds(
        &json!({"emails": ["alice@example.com"]}),
        &id,
        "GET",
        "/"
    ));
    assert!(!holds(
        &json!({"email_domains": ["example.com"]}),
        &id,
        "GET",
        "/"
    ));
    id.claims = Arc::new(json!({}));
    assert!(holds(
        &json!({"email_domains": ["example.com"]}),
        &id,
        "GET",
        "/"
    ));
}

#[test]
fn caller_conditions_fail_for_anonymous_and_empty_values_are_refused() {
    let anon = Identity::anonymous();
    assert!(!holds(&json!({"scopes": []}), &anon, "GET", "/"));
    // The anonymous subject is "", so an empty subject must not be expressible.
    assert!(compile_rule(json!({"subjects": [""]})).is_err());
    assert!(compile_rule(json!({"groups": [""]})).is_err());
}

#[test]
fn compile_errors_name_rule_and_condition() {
    let policy: PolicyConfig = serde_json::from_value(json!({
        "deny": [{"paths": ["admin"]}],
        "allow": [
            {"name": "ok", "groups": ["a"]},
            {"workloads": ["prod/ns/x"], "claims": {"a..b": "x"}, "methods": ["GE T"], "paths": ["/a**"]},
            {"email_domains": ["a@b"], "emails": ["nobody"], "scopes": ["a b"]}
        ]
    }))
    .unwrap();
    let errs = CompiledPolicy::compile(&policy).unwrap_err();
    let want = [
        "policy.deny[0]: paths: `admin` must start with `/`",
        "policy.allow[1]: methods: `GE T` is not an HTTP method",
        "policy.allow[1]: paths: glob `/a**`: `**` must be a whole segment (write `/**/` or `*`)",
        "policy.allow[1]: workloads: `prod/ns/x` is not a SPIFFE ID pattern (spiffe://…)",
        "policy.allow[1]: claims: invalid claim path `a..b`: empty key between dots",
        "policy.allow[2]: emails: `nobody` is not an email address",
        "policy.allow[2]: email_domains: `a@b` is not a domain",
        "policy.allow[2]: scopes: `a b` is not one scope",
    ];
    assert_eq!(errs, want);
}

#[test]
fn scope_trace_lists_missing_scopes() {
    let rule = compile_rule(json!({"scopes": ["orders:read", "orders:write", "x"]})).unwrap();
    let np = path("/");
    let facts = RequestFacts {
        method: "GET",
        host: "h",
        path: &np,
        tool: None,
    };
    let t = rule.trace(&alice(), &facts);
    assert!(!t.matched);
    assert_eq!(t.conditions[0].missing, vec!["orders:write", "x"]);
    assert_eq!(t.position, "allow[0]");
}

#[test]
fn rule_warnings() {
    let policy: PolicyConfig = serde_json::from_value(json!({
        "deny": [{"groups": []}],
        "allow": [
            {"name": "everyone"},
            {"groups": ["admins"]},
            {"scopes": []}
        ]
    }))
    .unwrap();
    let w = CompiledPolicy::compile(&policy).unwrap().warnings();
    assert_eq!(
        w,
        vec![
            "rule deny[0] can never match: it has an empty condition list",
            "rule allow[1] can never decide: allow[0] (everyone) before it matches every request",
            "rule allow[2] can never decide: allow[0] (everyone) before it matches every request",
        ]
    );
    let policy: PolicyConfig = serde_json::from_value(json!({
        "deny": [{}],
        "allow": [{"scopes": []}]
    }))
    .unwrap();
    assert_eq!(
        CompiledPolicy::compile(&policy).unwrap().warnings(),
        vec![
            "rule allow[0]: `scopes: []` requires no scope; remove it or list the scopes",
            "every allow rule is unreachable: deny rule deny[0] matches every request",
        ]
    );
}

#[test]
fn case_sensitive_paths_keep_case_in_globs() {
    let policy: PolicyConfig =
        serde_json::from_value(json!({ "allow": [{"paths": ["/Admin/**"]}] })).unwrap();
    let strict = CompiledPolicy::compile_with(&policy, true).unwrap();
    let glob_matches = |p: &str| {
        let opts = crate::path::PathOptions {
            allow_encoded_slashes: false,
            case_sensitive: true,
        };
        let n = crate::path::normalize_with(p, opts).unwrap();
        match &strict.allow()[0].conditions[0].test {
            Test::Paths(globs) => globs.iter().any(|g| {
                g.matches(n.matching()) || n.matching_slashed().is_some_and(|s| g.matches(s))
            }),
            _ => unreachable!(),
        }
    };
    assert!(glob_matches("/Admin/x"));
    assert!(!glob_matches("/admin/x"));
}
