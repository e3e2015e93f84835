//! Forward-auth (`/.portcullis/authz`) and `/.portcullis/whoami` against the real
//! server and a real issuer: the described request gets the same answer as the
//! same request sent through the reverse proxy, only trusted peers are answered,
//! and the described path is normalized and routed exactly as a proxied one.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::idp_stack::IdpStack;
use common::*;
use serde_json::{json, Value};

const ROUTES: &str = r#"
  - name: public
    match: { path_prefix: /public }
    upstream: UPSTREAM
    auth: none
  - name: orders
    match: { hosts: [orders.example], path_prefix: /orders }
    upstream: UPSTREAM
    policy:
      allow:
        - name: readers
          scopes: [orders:read]
          methods: [GET]
  - name: admin
    match: { path_prefix: /admin }
    policy:
      allow:
        - groups: [admins]
  - name: tools
    match: { path_prefix: /mcp }
    upstream: UPSTREAM
    mcp: {}
    policy:
      deny:
        - name: never-delete
          groups: [agents]
          tools: [delete_*]
      allow:
        - groups: [agents]
          tools: [get_*]
"#;

/// The shared issuer stack, trusting `trusted` as front proxies.
struct Stack(IdpStack);

impl std::ops::Deref for Stack {
    type Target = IdpStack;
    fn deref(&self) -> &IdpStack {
        &self.0
    }
}

async fn start(trusted: &str) -> Stack {
    let server_keys = format!("  trusted_proxies: [{trusted}]\n");
    Stack(IdpStack::start(&server_keys, "", ROUTES).await)
}

impl Stack {
    async fn authz(&self, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, String) {
        send(&client(), "GET", &self.url("/.portcullis/authz"), headers).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_described_request_gets_the_proxys_answer() {
    let s = start("127.0.0.1/32").await;
    let reader = format!(
        "Bearer {}",
        s.token("alice", json!({"scope": "orders:read", "groups": ["dev"]}))
    );
    let describe = |method: &'static str, uri: &'static str| {
        vec![
            ("x-forwarded-method", method),
            ("x-forwarded-host", "orders.example"),
            ("x-forwarded-uri", uri),
            ("x-forwarded-proto", "https"),
        ]
    };

    // Allowed: 200 with the identity headers for the front proxy to copy.
    let mut h = describe("GET", "/orders/42?x=1");
    h.push(("authorization", &reader));
    h.push(("x-auth-request-user", "mallory"));
    h.push(("x-request-id", "nginx-req-7"));
    h.push((
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ));
    let (status, headers, body) = s.authz(&h).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-auth-request-user"], "alice");
    // The front proxy is trusted: its request id is kept and its trace continued
    // (with a span of ours), for it to pass on as the reverse proxy would (§3).
    assert_eq!(headers["x-request-id"], "nginx-req-7");
    let trace = headers["traceparent"].to_str().unwrap();
    assert!(
        trace.starts_with("00-0af7651916cd43dd8448eb211c80319c-")
            && !trace.contains("b7ad6b7169203331"),
        "{trace}"
    );
    assert_eq!(headers["x-auth-request-groups"], "dev");
    assert!(headers.contains_key("x-portcullis-assertion"));
    // The same request through the reverse proxy is allowed too.
    let (status, _, _) = send(
        &client(),
        "GET",
        &s.url("/orders/42"),
        &[("host", "orders.example"), ("authorization", &reader)],
    )
    .await;
    assert_eq!(status, 200);

    // Denied by policy: the same 403 and code as the proxy's.
    let mut h = describe("POST", "/orders/42");
    h.push(("authorization", &reader));
    let (status, headers, body) = s.authz(&h).await;
    let (proxy_status, _, proxy_body) = send(
        &client(),
        "POST",
        &s.url("/orders/42"),
        &[("host", "orders.example"), ("authorization", &reader)],
    )
    .await;
    assert_eq!((status, proxy_status), (403, 403), "{body}");
    let code = |b: &str| serde_json::from_str::<Value>(b).unwrap()["error"].clone();
    assert_eq!(code(&body), code(&proxy_body));
    assert!(headers.contains_key("x-request-id"));

    // No credential: 401 with the challenge.
    let (status, headers, _) = s.authz(&describe("GET", "/orders/42")).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="portcullis""#);

    // The described path is matched as a proxied one would be: case and `;`
    // parameters do not dodge the route, `%2F` is refused.
    for sneaky in ["/ORDERS/42", "/orders%3Bx/42", "/orders/42/"] {
        let mut h = describe("GET", sneaky);
        h.retain(|(k, _)| *k != "x-forwarded-method");
        let (status, _, body) = s.authz(&h).await;
        assert_eq!(status, 401, "{sneaky}: {body}");
    }
    // A path the proxy would rewrite before forwarding is refused: the front
    // proxy forwards it as written, and a service that does not resolve `..`
    // would serve `/orders/%2e%2e/public/x` from its `/orders` handler.
    for unresolved in [
        "/public/../orders/42",
        "/orders/%2e%2e/public/x",
        "/orders/../public/x",
        "/orders/.%2E/public/x",
        "/orders//42",
        "/%6Frders/42",
        // nginx's `$request_uri` keeps a fragment a raw client sent, and
        // uvicorn reads `/public#/../orders/42` as `/orders/42`.
        "/public#/../orders/42",
        "/public?x=1#y",
    ] {
        let (status, _, body) = s.authz(&describe("GET", unresolved)).await;
        assert_eq!(status, 400, "{unresolved}: {body}");
    }
    // Escapes' hex case is no difference.
    let (status, _, body) = s.authz(&describe("GET", "/public/caf%c3%a9")).await;
    assert_ne!(status, 400, "{body}");
    let (status, _, _) = s.authz(&describe("GET", "/orders/a%2Fb")).await;
    assert_eq!(status, 400);
    // A route without upstream is judged by forward-auth (the proxy answers it 404).
    let admin = format!("Bearer {}", s.token("root", json!({"groups": ["admins"]})));
    let (status, _, body) = s
        .authz(&[
            ("x-original-uri", "/admin/x"),
            ("host", "any.example"),
            ("authorization", &admin),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = send(
        &client(),
        "GET",
        &s.url("/admin/x"),
        &[("authorization", &admin)],
    )
    .await;
    assert_eq!(status, 404);

    // Every Check leaves an audit line naming the front end and the judged request.
    // (Lines are written as each answer is done: wait for the last ones.)
    let mut lines = s.audit_lines();
    for _ in 0..100 {
        if lines
            .iter()
            .filter(|l| l["frontend"] == "forward_auth")
            .count()
            >= 7
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        lines = s.audit_lines();
    }
    let fa: Vec<&Value> = lines
        .iter()
        .filter(|l| l["frontend"] == "forward_auth")
        .collect();
    assert!(fa.len() >= 7, "{lines:?}");
    let first = fa[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["host"], "orders.example");
    assert_eq!(first["path"], "/orders/42");
    assert_eq!(first["route"], "orders");
    assert_eq!(first["decision"], "allow");
    assert!(lines.iter().any(|l| l["frontend"] == "proxy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_trusted_peers_are_answered() {
    // Loopback is not trusted here: the test client is an outsider.
    let s = start("10.9.9.9/32").await;
    let admin = format!("Bearer {}", s.token("root", json!({"groups": ["admins"]})));
    let (status, headers, _) = s
        .authz(&[("x-original-uri", "/admin/x"), ("authorization", &admin)])
        .await;
    assert_eq!(status, 403);
    assert!(!headers.contains_key("x-portcullis-assertion"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_says_who_the_caller_is() {
    let s = start("127.0.0.1/32").await;
    let token = s.token(
        "alice",
        json!({"email": "alice@example.com", "groups": ["dev"], "scope": "orders:read", "client_id": "web"}),
    );
    let (status, _, body) = send(
        &client(),
        "GET",
        &s.url("/.portcullis/whoami"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let me: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(me["type"], "user");
    assert_eq!(me["sub"], "alice");
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["groups"], json!(["dev"]));
    assert_eq!(me["scopes"], json!(["orders:read"]));
    assert_eq!(me["client_id"], "web");
    assert_eq!(me["issuer"], s.idp.issuer());
    assert!(me["expires_at"].as_u64().is_some());
    assert!(!body.contains(&token));
    let (status, headers, _) = send(&client(), "GET", &s.url("/.portcullis/whoami"), &[]).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="portcullis""#);
    let (status, _, _) = send(
        &client(),
        "GET",
        &s.url("/.portcullis/whoami"),
        &[("authorization", "Bearer not.a.token")],
    )
    .await;
    assert_eq!(status, 401);
}

/// An MCP route's tool rules are judged on the JSON-RPC body, which
/// forward-auth never sees: judged without it, a `tools/call` of `delete_all`
/// would pass the rule that allows the agent `get_*` tools. Refused instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_route_is_not_judged_without_its_body() {
    let s = start("127.0.0.1/32").await;
    let agent = format!("Bearer {}", s.token("bot", json!({"groups": ["agents"]})));
    let (status, _, body) = s
        .authz(&[
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/mcp"),
            ("authorization", agent.as_str()),
        ])
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("only by the reverse proxy"), "{body}");
}

/// The edge proxy is trusted, but it copies the client's own headers into the
/// authz request (nginx `auth_request`, Caddy): an `l5d-client-id` there may be
/// the client's, so forward-auth does not read it. The reverse proxy, whose
/// trusted peer is the sidecar itself, does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_does_not_take_a_sidecar_header_the_client_may_have_sent() {
    let routes = r#"
  - name: billing
    match: { path_prefix: /billing }
    upstream: UPSTREAM
    policy:
      allow:
        - workloads: [spiffe://cluster.local/ns/billing/**]
"#;
    let s = IdpStack::start(
        "  trusted_proxies: [127.0.0.1/32]\n",
        "workload_identity:\n  trust_domain: cluster.local\n  accept: [linkerd]\n",
        routes,
    )
    .await;
    let sidecar = (
        "l5d-client-id",
        "billing.billing.serviceaccount.identity.linkerd.cluster.local",
    );
    let (status, _, body) = send(&client(), "GET", &s.url("/billing/x"), &[sidecar]).await;
    assert_eq!(status, 200, "the proxy believes its sidecar: {body}");
    let (status, _, body) = send(
        &client(),
        "GET",
        &s.url("/.portcullis/authz"),
        &[("x-forwarded-uri", "/billing/x"), sidecar],
    )
    .await;
    assert_eq!(status, 401, "{body}");
}

/// The front proxy forwards the client's `Cookie` unless told otherwise, and
/// cannot be told to drop one cookie: the answer carries the whole `Cookie`
/// the service should get (the nginx recipe sets it), without the session
/// cookie, which the service could replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_carries_the_cookie_without_the_session() {
    let idp = portcullis_testkit::DevIssuer::start().await.unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  trusted_proxies: [127.0.0.1/32]\n\
         admin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\n\
         providers:\n  - name: dev\n    issuer: {}\n    audiences: [portal]\n\
         \x20   client_id: portal\n    client_secret: not-used-here\n\
         login:\n  provider: dev\n  cookie:\n    secret: a-cookie-secret-of-at-least-32-bytes!!\n\
         routes:\n  - name: app\n    match: {{ path_prefix: / }}\n    auth: none\n",
        idp.issuer()
    );
    let server = portcullis_proxy::Server::start(config(&yaml), None)
        .await
        .unwrap();
    wait_ready(server.admin_addr()).await;
    let url = format!("http://{}/.portcullis/authz", server.local_addr());
    let ask = |cookies: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut headers = vec![
                ("x-forwarded-uri", "/x"),
                ("x-forwarded-host", "app.example"),
            ];
            headers.extend(cookies.iter().map(|c| ("cookie", *c)));
            let (status, headers, body) = send(&client(), "GET", &url, &headers).await;
            assert_eq!(status, 200, "{body}");
            headers
                .get("x-portcullis-cookie")
                .map(|v| v.to_str().unwrap().to_string())
        }
    };
    assert_eq!(
        ask(&["a=1; _portcullis=some-session; b=2"])
            .await
            .as_deref(),
        Some("a=1; b=2")
    );
    assert_eq!(
        ask(&["_portcullis=some-session"]).await.as_deref(),
        Some("")
    );
    // Unchanged, but still sent: the recipe's `Cookie` comes from it.
    assert_eq!(ask(&["a=1"]).await.as_deref(), Some("a=1"));
    assert_eq!(ask(&["a=1", "b=2"]).await.as_deref(), Some("a=1; b=2"));
    assert_eq!(ask(&[]).await.as_deref(), Some(""));
}
