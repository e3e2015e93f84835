//! End-to-end: a real development issuer (discovery + JWKS over HTTP), the real proxy
//! and a real echo upstream. Tokens are verified, policy decides, the identity
//! reaches the upstream in clean headers and a signed assertion, and every request
//! leaves one audit line.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use portcullis_proxy::Server;
use portcullis_testkit::{DevIssuer, EchoUpstream};
use serde_json::{json, Value};
use std::time::Duration;

struct Stack {
    server: Server,
    echo: EchoUpstream,
    idp: DevIssuer,
    audit: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

const ROUTES: &str = r#"
  - name: public
    match: { path_prefix: /public }
    upstream: UPSTREAM
    auth: none
  - name: orders
    match: { path_prefix: /orders }
    upstream: UPSTREAM
    policy:
      deny:
        - name: no-interns
          groups: [interns]
      allow:
        - name: admins
          groups: [admins]
        - name: readers
          scopes: [orders:read]
          methods: [GET, HEAD]
        - name: writers
          scopes: [orders:read, orders:write]
          methods: [POST]
  - name: shadow
    match: { path_prefix: /shadow }
    upstream: UPSTREAM
    mode: audit
    policy:
      allow:
        - groups: [admins]
  - name: forwarding
    match: { path_prefix: /forward }
    upstream: UPSTREAM
    forward_token: true
    policy:
      allow:
        - authenticated: true
  - name: forwarding-optional
    match: { path_prefix: /optforward }
    upstream: UPSTREAM
    auth: optional
    forward_token: true
  - name: nopolicy
    match: { path_prefix: /nopolicy }
    upstream: UPSTREAM
"#;

impl Stack {
    async fn start() -> Stack {
        let idp = DevIssuer::start().await.unwrap();
        let echo = EchoUpstream::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        let yaml = format!(
            "server:\n  listen: 127.0.0.1:0\n  public_url: https://proxy.example.com\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: file:{}\nproviders:\n  - name: dev\n    issuer: {}\n    audiences: [orders-api]\n    jwks_min_refresh: 1s\nroutes:\n{}",
            audit.display(),
            idp.issuer(),
            ROUTES.replace("UPSTREAM", &echo.url())
        );
        let server = Server::start(config(&yaml), None).await.unwrap();
        let stack = Stack {
            server,
            echo,
            idp,
            audit,
            _dir: dir,
        };
        stack.wait_ready().await;
        stack
    }

    async fn wait_ready(&self) {
        for _ in 0..100 {
            if get(&format!("http://{}/readyz", self.server.admin_addr()))
                .await
                .0
                == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("proxy never became ready");
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.local_addr())
    }

    fn token(&self, sub: &str, extra: Value) -> String {
        self.idp.token(sub, "orders-api", 300, extra).unwrap()
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, http::HeaderMap, String) {
        send(&client(), method, &self.url(path), headers).await
    }

    fn audit_lines(&self) -> Vec<Value> {
        read_audit(&self.audit)
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_identity_reaches_the_upstream() {
    let s = Stack::start().await;
    let token = s.token(
        "alice",
        json!({"email": "alice@example.com", "groups": ["admins", "dev"], "client_id": "web", "scope": "orders:read"}),
    );
    let auth = bearer(&token);
    let (status, headers, body) = s
        .call(
            "GET",
            "/orders/1",
            &[
                ("authorization", &auth),
                ("x-auth-request-user", "mallory"),
                ("X_Auth_Request_Groups", "admins"),
                ("x-portcullis-workload", "spiffe://evil/ns/x/sa/y"),
                ("connection", "x-auth-request-email"),
                ("x-auth-request-email", "mallory@evil.com"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.get("x-request-id").is_some());
    let seen = &s.echo.seen()[0].headers;
    assert_eq!(seen["x-auth-request-user"], "alice");
    assert_eq!(seen["x-auth-request-email"], "alice@example.com");
    assert_eq!(seen["x-auth-request-groups"], "admins,dev");
    assert_eq!(seen["x-auth-request-client-id"], "web");
    assert_eq!(seen.get_all("x-auth-request-user").iter().count(), 1);
    assert!(seen.get("x_auth_request_groups").is_none());
    assert!(seen.get("x-portcullis-workload").is_none());
    assert!(
        seen.get("authorization").is_none(),
        "token must not be forwarded by default"
    );

    // The assertion verifies against the proxy's published JWKS.
    let assertion = seen["x-portcullis-assertion"].to_str().unwrap().to_string();
    let (_, jwks) = get(&s.url("/.well-known/portcullis/jwks.json")).await;
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();
    let verifier_cfg = config(&format!(
        "providers:\n  - name: proxy\n    issuer: https://proxy.example.com\n    jwks_file: {}\n    audiences: [\"{}\"]\n    algorithms: [ES256]\n",
        jwks_file.display(),
        s.echo.url()
    ));
    let verifier = portcullis_identity::Authenticator::new(
        &verifier_cfg.providers,
        std::sync::Arc::new(portcullis_identity::HttpFetch::new(Duration::from_secs(2)).unwrap()),
        portcullis_identity::IdentityMetrics::default(),
    )
    .unwrap();
    verifier.start().await;
    let who = verifier.verify_bearer(&assertion).await.unwrap();
    assert_eq!(who.subject, "alice");
    assert_eq!(who.email.as_deref(), Some("alice@example.com"));

    // A route with forward_token passes the caller's Authorization through.
    let (status, _, _) = s.call("GET", "/forward", &[("authorization", &auth)]).await;
    assert_eq!(status, 200);
    assert_eq!(s.echo.seen()[1].headers["authorization"], auth.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_token_passes_on_only_the_token_the_proxy_verified() {
    let s = Stack::start().await;
    let token = s.idp.token("alice", "orders-api", 300, json!({})).unwrap();
    let forged = format!("{}.Zm9yZ2Vk", token.rsplit_once('.').unwrap().0);
    // Read as no bearer token, the caller is anonymous, and what they sent
    // must not reach a service that takes a forwarded token as checked.
    for value in [
        format!("Basic {forged}"),
        forged.clone(),
        format!("Token {forged}"),
    ] {
        s.echo.clear();
        let (status, _, body) = s
            .call("GET", "/optforward", &[("authorization", &value)])
            .await;
        assert_eq!(status, 200, "{value}: {body}");
        assert!(
            !s.echo.seen()[0].headers.contains_key("authorization"),
            "{value}"
        );
    }
    // A bearer token written wrong is a bearer token: refused, not ignored.
    for value in [
        format!("Bearer\t{forged}"),
        format!("bearer:{forged}"),
        format!("Bearer,{forged}"),
        "Bearer".to_string(),
    ] {
        let (status, _, body) = s
            .call("GET", "/optforward", &[("authorization", &value)])
            .await;
        assert_eq!(status, 401, "{value}: {body}");
        assert!(body.contains("invalid_token"), "{value}: {body}");
    }
    let (status, _, _) = s
        .call(
            "GET",
            "/optforward",
            &[("authorization", &format!("Bearer {forged}"))],
        )
        .await;
    assert_eq!(status, 401);
    s.echo.clear();
    let auth = format!("Bearer {token}");
    let (status, _, _) = s
        .call("GET", "/optforward", &[("authorization", &auth)])
        .await;
    assert_eq!(status, 200);
    assert_eq!(s.echo.seen()[0].headers["authorization"], auth.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_failures_are_401_with_spec_codes() {
    let s = Stack::start().await;
    let (status, headers, body) = s.call("GET", "/orders/1", &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="portcullis""#);
    assert!(body.contains(r#""error":"missing_token""#));

    let expired = s.idp.token("bob", "orders-api", -120, json!({})).unwrap();
    let (status, headers, body) = s
        .call("GET", "/orders/1", &[("authorization", &bearer(&expired))])
        .await;
    assert_eq!(status, 401);
    assert!(body.contains(r#""error":"token_expired""#), "{body}");
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with(
            r#"Bearer realm="portcullis", error="invalid_token", error_description=""#
        ),
        "{challenge}"
    );
    assert!(!challenge.contains(&expired));

    let wrong_aud = s.idp.token("bob", "other-api", 300, json!({})).unwrap();
    let (status, _, body) = s
        .call(
            "GET",
            "/orders/1",
            &[("authorization", &bearer(&wrong_aud))],
        )
        .await;
    assert_eq!(status, 401);
    assert!(body.contains(r#""error":"wrong_audience""#), "{body}");

    let good = s.token("bob", json!({"scope": "orders:read"}));
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[2] = parts[2].chars().rev().collect();
    let forged = parts.join(".");
    let (status, _, body) = s
        .call("GET", "/orders/1", &[("authorization", &bearer(&forged))])
        .await;
    assert_eq!(status, 401);
    assert!(
        body.contains("bad_signature") || body.contains("invalid_token"),
        "{body}"
    );

    // Two credentials: refused, never resolved by guessing.
    let (status, _, body) = send(
        &client(),
        "GET",
        &s.url("/orders/1"),
        &[
            ("authorization", &bearer(&good)),
            ("authorization", &bearer(&expired)),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(s.echo.seen().is_empty());

    let metrics = get(&format!("http://{}/metrics", s.server.admin_addr()))
        .await
        .1;
    assert!(
        metrics
            .contains(r#"portcullis_auth_failures_total{provider="dev",reason="token_expired"}"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_decides_and_explains() {
    let s = Stack::start().await;
    let reader = s.token(
        "rita",
        json!({"scope": "orders:read", "groups": ["users", "dev"]}),
    );
    let intern = s.token("ian", json!({"groups": ["admins", "interns"]}));

    let (status, _, body) = s
        .call("GET", "/orders/1", &[("authorization", &bearer(&reader))])
        .await;
    assert_eq!(status, 200, "{body}");

    // POST needs orders:write as well: insufficient_scope names it.
    let (status, headers, body) = s
        .call("POST", "/orders", &[("authorization", &bearer(&reader))])
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(r#""error":"insufficient_scope""#), "{body}");
    assert_eq!(
        headers["www-authenticate"],
        r#"Bearer error="insufficient_scope", scope="orders:write""#
    );

    // Deny beats allow.
    let (status, _, body) = s
        .call("GET", "/orders/1", &[("authorization", &bearer(&intern))])
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(r#""error":"forbidden""#), "{body}");

    // A browser gets an HTML page naming the caller and the request id.
    let (status, headers, body) = s
        .call(
            "DELETE",
            "/orders/1",
            &[("authorization", &bearer(&reader)), ("accept", "text/html")],
        )
        .await;
    assert_eq!(status, 403);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(body.contains("rita"), "{body}");
    assert!(
        body.contains(headers["x-request-id"].to_str().unwrap()),
        "{body}"
    );

    // auth: required with no policy denies everyone (default deny).
    let (status, _, _) = s
        .call("GET", "/nopolicy", &[("authorization", &bearer(&reader))])
        .await;
    assert_eq!(status, 403);

    // mode: audit lets the request through and records that it would have been denied.
    let (status, _, _) = s
        .call("GET", "/shadow", &[("authorization", &bearer(&reader))])
        .await;
    assert_eq!(status, 200);
    s.server.shared.audit.flush();
    let lines = s.audit_lines();
    let shadow = lines.iter().find(|l| l["route"] == "shadow").unwrap();
    assert_eq!(shadow["decision"], "deny");
    assert_eq!(shadow["enforced"], false);
    assert_eq!(shadow["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_route_sends_no_identity_headers() {
    let s = Stack::start().await;
    let (status, _, _) = s
        .call(
            "GET",
            "/public/x",
            &[
                ("x-auth-request-user", "mallory"),
                ("x-forwarded-email", "m@evil.com"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let seen = &s.echo.seen()[0].headers;
    for (name, _) in seen.iter() {
        let n = name.as_str();
        assert!(
            !n.starts_with("x-auth-request")
                && !n.starts_with("x-portcullis")
                && n != "x-forwarded-email",
            "{n} reached the upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_outage_and_cache() {
    let s = Stack::start().await;
    let first = s.token("carol", json!({"groups": ["admins"]}));
    for _ in 0..3 {
        let (status, _, body) = s
            .call("GET", "/orders/1", &[("authorization", &bearer(&first))])
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let metrics = get(&format!("http://{}/metrics", s.server.admin_addr()))
        .await
        .1;
    assert!(
        metrics.contains(r#"portcullis_token_cache_total{result="hit"}"#),
        "{metrics}"
    );

    // A new key at the IdP is picked up on first use.
    s.idp.rotate().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // past jwks_min_refresh
    let rotated = s.token("carol", json!({"groups": ["admins"]}));
    let (status, _, body) = s
        .call("GET", "/orders/1", &[("authorization", &bearer(&rotated))])
        .await;
    assert_eq!(status, 200, "{body}");

    // The IdP goes away: known keys keep working, readiness holds.
    s.idp.stop();
    let fresh = s.token("dave", json!({"groups": ["admins"]}));
    let (status, _, body) = s
        .call("GET", "/orders/1", &[("authorization", &bearer(&fresh))])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        get(&format!("http://{}/readyz", s.server.admin_addr()))
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_provider_keys() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\nproviders:\n  - name: gone\n    issuer: http://{dead}\n    audiences: [x]\nroutes:\n  - match: {{ path_prefix: / }}\n    upstream: http://{dead}\n"
    );
    let server = Server::start(config(&yaml), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = get(&format!("http://{}/readyz", server.admin_addr())).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("gone"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_leaves_one_audit_line_without_secrets() {
    let s = Stack::start().await;
    let token = s.token(
        "erin",
        json!({"groups": ["admins"], "email": "erin@example.com"}),
    );
    let expired = s.idp.token("erin", "orders-api", -60, json!({})).unwrap();
    let c = client();
    let mut sent = 0;
    for i in 0..50 {
        let (method, path, auth) = match i % 5 {
            0 => (
                "GET",
                "/orders/1?access_token=SECRET-IN-QUERY".to_string(),
                Some(&token),
            ),
            1 => ("GET", "/orders/2".to_string(), Some(&expired)),
            2 => ("GET", "/nowhere".to_string(), None),
            3 => ("GET", "/public/%2F".to_string(), None),
            _ => ("POST", "/orders".to_string(), None),
        };
        let auth_value = auth.map(|t| bearer(t));
        let mut headers = vec![];
        if let Some(a) = &auth_value {
            headers.push(("authorization", a.as_str()));
        }
        let _ = send(&c, method, &s.url(&path), &headers).await;
        sent += 1;
    }
    s.server.shared.audit.flush();
    let lines = s.audit_lines();
    assert_eq!(lines.len(), sent);
    let text = std::fs::read_to_string(&s.audit).unwrap();
    assert!(
        !text.contains(&token) && !text.contains(&expired),
        "a token reached the audit log"
    );
    assert!(
        !text.contains("SECRET-IN-QUERY"),
        "a query string reached the audit log"
    );
    let allowed = lines.iter().find(|l| l["decision"] == "allow").unwrap();
    assert_eq!(allowed["identity"]["sub"], "erin");
    assert_eq!(allowed["identity"]["type"], "user");
    assert_eq!(allowed["reason"], "allowed");
    assert_eq!(allowed["rule"], "admins");
    for key in [
        "timestamp",
        "request_id",
        "trace_id",
        "client_ip",
        "method",
        "host",
        "path",
        "route",
        "status",
        "duration_ms",
        "upstream_ms",
        "bytes_out",
    ] {
        assert!(allowed.get(key).is_some(), "missing {key}");
    }
    let reasons: Vec<&str> = lines
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    for code in [
        "allowed",
        "token_expired",
        "no_route",
        "bad_request",
        "missing_token",
    ] {
        assert!(reasons.contains(&code), "no {code} line in {reasons:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_from_trusted_sidecars_and_optional_auth() {
    let echo = EchoUpstream::start().await.unwrap();
    let yaml = format!(
        r#"server:
  listen: 127.0.0.1:0
  trusted_proxies: [127.0.0.1/32]
admin:
  listen: 127.0.0.1:0
audit:
  sink: none
workload_identity:
  trust_domain: cluster.local
  accept: [linkerd, xfcc]
routes:
  - name: billing
    match: {{ path_prefix: /billing }}
    upstream: {up}
    policy:
      allow:
        - workloads: ["spiffe://cluster.local/ns/shop/sa/*"]
  - name: optional
    match: {{ path_prefix: /optional }}
    upstream: {up}
    auth: optional
    policy:
      allow:
        - groups: [admins]
"#,
        up = echo.url()
    );
    let server = Server::start(config(&yaml), None).await.unwrap();
    let url = |p: &str| format!("http://{}{p}", server.local_addr());
    let c = client();

    let (status, _, body) = send(
        &c,
        "GET",
        &url("/billing"),
        &[(
            "l5d-client-id",
            "web.shop.serviceaccount.identity.linkerd.cluster.local",
        )],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        echo.seen()[0].headers["x-portcullis-workload"],
        "spiffe://cluster.local/ns/shop/sa/web"
    );

    let xfcc = r#"By=spiffe://cluster.local/ns/billing/sa/api;Hash=abc;URI=spiffe://cluster.local/ns/shop/sa/cart"#;
    let (status, _, body) = send(
        &c,
        "GET",
        &url("/billing"),
        &[("x-forwarded-client-cert", xfcc)],
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Another trust domain proves nothing here.
    let foreign = "URI=spiffe://cluster.local.evil/ns/shop/sa/cart";
    let (status, _, _) = send(
        &c,
        "GET",
        &url("/billing"),
        &[("x-forwarded-client-cert", foreign)],
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = send(
        &c,
        "GET",
        &url("/billing"),
        &[(
            "l5d-client-id",
            "web.other.serviceaccount.identity.linkerd.cluster.local",
        )],
    )
    .await;
    assert_eq!(
        status, 403,
        "a workload outside the shop namespace is authenticated but not allowed"
    );

    // auth: optional, no credential, policy needs a group: ask for a credential (401).
    let (status, headers, body) = send(&c, "GET", &url("/optional"), &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="portcullis""#);
}

/// The verified-token cache shares one identity with every request of a token:
/// a workload that vouches for one request must not stick to the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_never_sticks_to_a_cached_token() {
    let idp = DevIssuer::start().await.unwrap();
    let echo = EchoUpstream::start().await.unwrap();
    let yaml = format!(
        r#"server:
  listen: 127.0.0.1:0
  trusted_proxies: [127.0.0.1/32]
admin:
  listen: 127.0.0.1:0
audit:
  sink: none
providers:
  - name: dev
    issuer: {iss}
    audiences: [orders-api]
workload_identity:
  trust_domain: cluster.local
  accept: [linkerd]
routes:
  - name: any
    match: {{ path_prefix: / }}
    upstream: {up}
    policy:
      allow:
        - authenticated: true
"#,
        iss = idp.issuer(),
        up = echo.url()
    );
    let server = Server::start(config(&yaml), None).await.unwrap();
    let url = format!("http://{}/x", server.local_addr());
    let token = idp.token("ann", "orders-api", 300, json!({})).unwrap();
    let bearer = format!("Bearer {token}");
    let c = client();
    let linkerd = |sa: &'static str| ("l5d-client-id", sa);
    let sent = [
        Some(linkerd(
            "web.shop.serviceaccount.identity.linkerd.cluster.local",
        )),
        None,
        Some(linkerd(
            "cart.shop.serviceaccount.identity.linkerd.cluster.local",
        )),
        None,
    ];
    for (i, workload) in sent.iter().enumerate() {
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend(workload.iter().copied());
        let (status, _, body) = send(&c, "GET", &url, &headers).await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    let seen: Vec<Option<String>> = echo
        .seen()
        .iter()
        .map(|r| {
            r.headers
                .get("x-portcullis-workload")
                .map(|v| v.to_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        seen,
        [
            Some("spiffe://cluster.local/ns/shop/sa/web".to_string()),
            None,
            Some("spiffe://cluster.local/ns/shop/sa/cart".to_string()),
            None,
        ]
    );
    for r in echo.seen() {
        assert_eq!(r.headers["x-auth-request-user"], "ann");
    }
}

/// A `sub` (or `client_id`) at one provider is not the same caller as that
/// name at another: one must not spend the other's rate-limit budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_subject_at_another_provider_has_its_own_rate_limit() {
    let (a, b) = (
        portcullis_testkit::DevIssuer::start().await.unwrap(),
        portcullis_testkit::DevIssuer::start().await.unwrap(),
    );
    let echo = portcullis_testkit::EchoUpstream::start().await.unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\n\
         providers:\n  - name: a\n    issuer: {}\n    audiences: [api]\n\
         \x20 - name: b\n    issuer: {}\n    audiences: [api]\n\
         routes:\n  - name: rl\n    match: {{ path_prefix: / }}\n    upstream: {}\n\
         \x20   auth: required\n\
         \x20   policy:\n      allow:\n        - authenticated: true\n\
         \x20   rate_limit: {{ requests_per_second: 0.01, burst: 2, key: identity }}\n",
        a.issuer(),
        b.issuer(),
        echo.url()
    );
    let server = portcullis_proxy::Server::start(config(&yaml), None)
        .await
        .unwrap();
    let url = format!("http://{}/x", server.local_addr());
    let bearer = |idp: &portcullis_testkit::DevIssuer| {
        format!(
            "Bearer {}",
            idp.token("victim", "api", 300, serde_json::json!({}))
                .unwrap()
        )
    };
    let (from_b, from_a) = (bearer(&b), bearer(&a));
    let c = client();
    for want in [200, 200, 429] {
        let (status, _, _) = send(&c, "GET", &url, &[("authorization", from_b.as_str())]).await;
        assert_eq!(status, want, "provider b's victim");
    }
    let (status, _, body) = send(&c, "GET", &url, &[("authorization", from_a.as_str())]).await;
    assert_eq!(
        status, 200,
        "provider a's victim has a budget of its own: {body}"
    );
}
