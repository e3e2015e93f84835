//! End-to-end: the Envoy ext_authz gRPC front end. A real gRPC client (tonic
//! over HTTP/2, with the same Envoy message definitions) sends `CheckRequest`s
//! to the real server's `ext_authz.grpc_listen`, with a real development issuer
//! behind token verification, and every field of the answers is checked.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use bytes::Bytes;
use common::ext_authz::{check_on, envoy_check, grpc_to, Grpc};
use common::idp_stack::IdpStack;
use common::*;
use http_body_util::Full;
use portcullis_proxy::ext_authz::proto::*;
use portcullis_proxy::ext_authz::HEALTH_PATH;
use serde_json::{json, Value};
use std::time::Duration;
use tonic_prost::ProstCodec;

const ROUTES: &str = r#"
  - name: orders
    match: { path_prefix: /orders }
    upstream: UPSTREAM
    policy:
      allow:
        - name: readers
          scopes: [orders:read]
          methods: [GET]
  - name: billing
    match: { path_prefix: /billing }
    upstream: UPSTREAM
    policy:
      allow:
        - name: shop
          workloads: ["spiffe://cluster.local/ns/shop/sa/*"]
  - name: limited
    match: { path_prefix: /limited }
    upstream: UPSTREAM
    auth: none
    rate_limit: { requests_per_second: 0.01, burst: 1, key: ip }
"#;

/// The shared issuer stack with the ext_authz listener on, and a gRPC client.
struct Stack(IdpStack);

impl std::ops::Deref for Stack {
    type Target = IdpStack;
    fn deref(&self) -> &IdpStack {
        &self.0
    }
}

impl Stack {
    async fn start() -> Stack {
        Stack::start_with("").await
    }

    /// With extra lines in the `server` section (`trusted_proxies`).
    async fn start_with(server_keys: &str) -> Stack {
        let sections = "ext_authz:\n  grpc_listen: 127.0.0.1:0\nworkload_identity:\n  trust_domain: cluster.local\n  accept: [xfcc]\n";
        Stack(IdpStack::start(server_keys, sections, ROUTES).await)
    }

    fn grpc(&self) -> Grpc {
        grpc_to(&self.server)
    }

    async fn check(&self, req: CheckRequest) -> CheckResponse {
        check_on(&self.server, req).await
    }
}

fn ok_response(resp: &CheckResponse) -> &OkHttpResponse {
    assert_eq!(resp.status.as_ref().unwrap().code, 0, "{resp:?}");
    match &resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("expected ok_response, got {other:?}"),
    }
}

fn denied_response(resp: &CheckResponse, grpc_code: i32, http: i32) -> &DeniedHttpResponse {
    assert_eq!(resp.status.as_ref().unwrap().code, grpc_code, "{resp:?}");
    match &resp.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            assert_eq!(d.status.as_ref().unwrap().code, http, "{d:?}");
            d
        }
        other => panic!("expected denied_response, got {other:?}"),
    }
}

fn header<'a>(options: &'a [HeaderValueOption], name: &str) -> Option<&'a HeaderValueOption> {
    options
        .iter()
        .find(|o| o.header.as_ref().is_some_and(|h| h.key == name))
}

fn value<'a>(options: &'a [HeaderValueOption], name: &str) -> &'a str {
    let option = header(options, name).unwrap_or_else(|| panic!("no {name} in {options:?}"));
    // Set, replacing whatever the request carried.
    assert_eq!(option.append_action, OVERWRITE_IF_EXISTS_OR_ADD);
    assert_eq!(option.append, Some(BoolValue { value: false }));
    &option.header.as_ref().unwrap().value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_check_sets_identity_and_removes_spoofed_headers() {
    let s = Stack::start().await;
    let token = s.token(
        "alice",
        json!({"scope": "orders:read", "email": "alice@example.com", "client_id": "web"}),
    );
    let auth = format!("Bearer {token}");
    let resp = s
        .check(envoy_check(
            "GET",
            "/orders/1?expand=items",
            &[
                ("authorization", &auth),
                ("x-auth-request-user", "mallory"),
                ("x-auth-request-groups", "admins"),
                ("x-portcullis-workload", "spiffe://evil/ns/x/sa/y"),
                ("x-original-url", "/admin"),
                ("x-forwarded-host", "admin.internal"),
                ("accept", "application/json"),
            ],
            "",
        ))
        .await;
    let ok = ok_response(&resp);
    assert_eq!(value(&ok.headers, "x-auth-request-user"), "alice");
    // The service hears the judged host, as from the reverse proxy, not the
    // one the client wrote.
    assert_eq!(value(&ok.headers, "x-forwarded-host"), "shop.example.com");
    assert_eq!(
        value(&ok.headers, "x-auth-request-email"),
        "alice@example.com"
    );
    assert_eq!(value(&ok.headers, "x-auth-request-client-id"), "web");
    let assertion = value(&ok.headers, "x-portcullis-assertion");
    assert_eq!(assertion.split('.').count(), 3, "a JWS: {assertion}");
    // Spoofed headers the proxy does not overwrite go; so does the token.
    let removed: Vec<&str> = ok.headers_to_remove.iter().map(String::as_str).collect();
    for name in [
        "authorization",
        "x-auth-request-groups",
        "x-portcullis-workload",
        "x-original-url",
    ] {
        assert!(removed.contains(&name), "{name} not removed: {removed:?}");
    }
    // A header that is overwritten is not also removed (Envoy removes after it
    // sets, which would take the identity with it), and nothing else is.
    assert!(!removed.contains(&"x-auth-request-user"), "{removed:?}");
    assert!(!removed.contains(&"accept"), "{removed:?}");
    for name in &removed {
        assert!(
            header(&ok.headers, name).is_none(),
            "{name} both set and removed"
        );
    }

    let audit = s.audit_when(1).await;
    let line = &audit[0];
    assert_eq!(line["frontend"], "ext_authz");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["reason"], "allowed");
    assert_eq!(line["route"], "orders");
    assert_eq!(line["rule"], "readers");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["host"], "shop.example.com");
    assert_eq!(
        line["path"], "/orders/1",
        "the query is not part of the path"
    );
    assert_eq!(line["status"], 200);
    assert_eq!(line["identity"]["sub"], "alice");
    // Envoy is not a trusted proxy here: its request id and the client address
    // it reports are not taken on its word.
    assert_ne!(line["request_id"], "envoy-request-1");
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert!(
        !audit[0].to_string().contains(&token),
        "no token in the audit line"
    );

    // Counted with the front end's label.
    let (_, metrics) = get(&format!("http://{}/metrics", s.server.admin_addr())).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_requests_total{")
                && l.contains("frontend=\"ext_authz\"")
                && l.contains("route=\"orders\"")
                && l.contains("code=\"200\"")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_spec_status_headers_and_body() {
    let s = Stack::start().await;

    // No credential: UNAUTHENTICATED, HTTP 401 with the challenge.
    let resp = s.check(envoy_check("GET", "/orders/1", &[], "")).await;
    let denied = denied_response(&resp, 16, 401);
    assert_eq!(
        value(&denied.headers, "www-authenticate"),
        r#"Bearer realm="portcullis""#
    );
    assert_eq!(value(&denied.headers, "content-type"), "application/json");
    let request_id = value(&denied.headers, "x-request-id").to_string();
    let body: Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(body["error"], "missing_token");
    assert_eq!(body["request_id"], request_id.as_str());

    // A bad token: 401 invalid_token.
    let resp = s
        .check(envoy_check(
            "GET",
            "/orders/1",
            &[("authorization", "Bearer not.a.jwt")],
            "",
        ))
        .await;
    let denied = denied_response(&resp, 16, 401);
    assert!(value(&denied.headers, "www-authenticate").contains(r#"error="invalid_token""#));

    // Missing scope: PERMISSION_DENIED, HTTP 403 insufficient_scope.
    let token = s.token("bob", json!({"scope": "profile"}));
    let auth = format!("Bearer {token}");
    let resp = s
        .check(envoy_check(
            "GET",
            "/orders/1",
            &[("authorization", &auth)],
            "",
        ))
        .await;
    let denied = denied_response(&resp, 7, 403);
    assert_eq!(
        value(&denied.headers, "www-authenticate"),
        r#"Bearer error="insufficient_scope", scope="orders:read""#
    );
    let body: Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    assert!(!denied.body.contains(&token));

    // Rate limited: PERMISSION_DENIED, HTTP 429 with Retry-After.
    let first = s.check(envoy_check("GET", "/limited", &[], "")).await;
    ok_response(&first);
    let resp = s.check(envoy_check("GET", "/limited", &[], "")).await;
    let denied = denied_response(&resp, 7, 429);
    assert!(
        value(&denied.headers, "retry-after")
            .parse::<u64>()
            .unwrap()
            >= 1
    );

    // Path tricks are judged on the normalized path, and refused like the proxy does.
    let resp = s
        .check(envoy_check("GET", "/orders/..%2f..%2fadmin", &[], ""))
        .await;
    let denied = denied_response(&resp, 3, 400);
    let body: Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(body["error"], "bad_request");
    // A fragment is refused: Envoy passes the target on as written, and a
    // server that reads it whole would serve what follows the `#`.
    for target in ["/public#/../orders/1", "/orders/1?x=1#y", "/public#"] {
        let resp = s.check(envoy_check("GET", target, &[], "")).await;
        denied_response(&resp, 3, 400);
    }
    let resp = s.check(envoy_check("GET", "/nowhere", &[], "")).await;
    denied_response(&resp, 5, 404);
    let resp = s
        .check(envoy_check("GET", "/.portcullis/whoami", &[], ""))
        .await;
    denied_response(&resp, 5, 404);

    let audit = s.audit_when(11).await;
    let reasons: Vec<&str> = audit
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "missing_token",
            "invalid_token",
            "insufficient_scope",
            "allowed",
            "rate_limited",
            "bad_request",
            "bad_request",
            "bad_request",
            "bad_request",
            "no_route",
            "no_route",
        ][..],
        "one audit line per check"
    );
    assert!(audit.iter().all(|l| l["frontend"] == "ext_authz"));
    assert_eq!(audit[0]["status"], 401);
    assert_eq!(audit[4]["status"], 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_and_ext_authz_give_the_same_answer() {
    let s = Stack::start().await;
    let reader = format!(
        "Bearer {}",
        s.token("carol", json!({"scope": "orders:read"}))
    );
    let other = format!("Bearer {}", s.token("dave", json!({"scope": "other"})));
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        ("GET", "/orders/7", vec![("authorization", reader.as_str())]),
        (
            "POST",
            "/orders/7",
            vec![("authorization", reader.as_str())],
        ),
        ("GET", "/orders/7", vec![("authorization", other.as_str())]),
        ("GET", "/orders/7", vec![]),
        // Matched in its matching form by both (a dot segment is not the same
        // answer on purpose: the proxy forwards the resolved path, Envoy the
        // path as written, so ext_authz refuses it).
        (
            "GET",
            "/ORDERS/7;x/",
            vec![("authorization", reader.as_str())],
        ),
        (
            "GET",
            "/orders%2F7",
            vec![("authorization", reader.as_str())],
        ),
        ("GET", "/billing/x", vec![]),
    ];
    let client = client();
    let mut expected = 0;
    for (method, path, headers) in &cases {
        let url = format!("http://shop.example.com{path}");
        let mut with_host = headers.clone();
        with_host.push(("host", "shop.example.com"));
        let http_status = {
            let mut req = http::Request::builder()
                .method(*method)
                .uri(format!("http://{}{path}", s.server.local_addr()));
            for (k, v) in &with_host {
                req = req.header(*k, *v);
            }
            let resp = client
                .request(req.body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap();
            resp.status().as_u16()
        };
        let check = s.check(envoy_check(method, path, headers, "")).await;
        let grpc_http = match &check.http_response {
            Some(HttpResponse::OkResponse(_)) => 200,
            Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().unwrap().code as u16,
            None => panic!("no http_response"),
        };
        expected += 2;
        let audit = s.audit_when(expected).await;
        let (proxy_line, grpc_line) = (&audit[expected - 2], &audit[expected - 1]);
        assert_eq!(proxy_line["frontend"], "proxy");
        assert_eq!(grpc_line["frontend"], "ext_authz");
        assert_eq!(grpc_http, http_status, "{method} {url}");
        for field in ["reason", "decision", "route", "rule", "path"] {
            assert_eq!(
                proxy_line[field], grpc_line[field],
                "{field} for {method} {url}"
            );
        }
    }
    // The table covered both answers.
    let audit = s.audit_lines();
    assert!(audit.iter().any(|l| l["reason"] == "allowed"));
    assert!(audit.iter().any(|l| l["reason"] == "bad_request"));
}

/// `source.principal` is the peer Envoy verified over mTLS: a workload
/// identity, but only when the Envoy asking is one the proxy trusts (on
/// `trusted_proxies`, or authenticated by `ext_authz.tls.client_ca_file`), as
/// for the sidecar headers. Anyone else who reaches `grpc_listen` could name
/// any workload, and be handed an assertion for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_principal_is_the_workload_in_the_trust_domain_only() {
    let cart = "spiffe://cluster.local/ns/shop/sa/cart";
    let invoices = |principal: &str| envoy_check("GET", "/billing/invoices", &[], principal);
    let trusted = Stack::start_with("  trusted_proxies: [127.0.0.1/32]\n").await;
    let resp = trusted.check(invoices(cart)).await;
    let ok = ok_response(&resp);
    assert_eq!(value(&ok.headers, "x-portcullis-workload"), cart);
    // Another trust domain proves nothing about this mesh's workloads.
    let resp = trusted
        .check(invoices("spiffe://evil.example/ns/shop/sa/cart"))
        .await;
    denied_response(&resp, 16, 401);
    let audit = trusted.audit_when(2).await;
    assert_eq!(audit[0]["identity"]["workload"], cart);
    assert_eq!(audit[0]["rule"], "shop");
    assert_eq!(audit[1]["reason"], "missing_token");

    // From an untrusted peer, neither the principal nor an XFCC header in
    // the checked request is a workload identity.
    let s = Stack::start().await;
    denied_response(&s.check(invoices(cart)).await, 16, 401);
    let resp = s
        .check(envoy_check(
            "GET",
            "/billing/invoices",
            &[("x-forwarded-client-cert", "By=spiffe://cluster.local/ns/billing/sa/api;URI=spiffe://cluster.local/ns/shop/sa/cart")],
            "",
        ))
        .await;
    denied_response(&resp, 16, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_is_serving_and_unknown_methods_are_unimplemented() {
    let s = Stack::start().await;
    let mut grpc = s.grpc();
    grpc.ready().await.unwrap();
    let health = grpc
        .unary(
            tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            }),
            HEALTH_PATH.parse().unwrap(),
            ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, SERVING);
    grpc.ready().await.unwrap();
    let unknown = grpc
        .unary(
            tonic::Request::new(HealthCheckRequest {
                service: "no.such.Service".into(),
            }),
            HEALTH_PATH.parse().unwrap(),
            ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    grpc.ready().await.unwrap();
    let nope = grpc
        .unary(
            tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            }),
            "/envoy.service.auth.v2.Authorization/Check"
                .parse()
                .unwrap(),
            ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(nope.code(), tonic::Code::Unimplemented);
    // Health checks are not judgments: no audit line.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.audit_lines().is_empty());
}

/// `00-<trace id>-<span id>-<flags>` split into its parts, checked for shape.
fn traceparent(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len()),
        ("00", 32, 16),
        "{value}"
    );
    (parts[1].to_string(), parts[2].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_gets_the_request_id_and_trace_of_the_audit_line() {
    const ENVOY_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let checked = |s: &Stack| {
        let token = s.token("erin", json!({"scope": "orders:read"}));
        let auth = format!("Bearer {token}");
        let headers = [
            ("authorization", auth),
            ("traceparent", ENVOY_TRACE.to_string()),
            ("x-request-id", "spoofed-id".to_string()),
        ];
        envoy_check(
            "GET",
            "/orders/1",
            &headers
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
            "",
        )
    };

    // An Envoy that is not a trusted proxy: its id and trace are not taken.
    let s = Stack::start().await;
    let resp = s.check(checked(&s)).await;
    let ok = ok_response(&resp);
    let id = value(&ok.headers, "x-request-id").to_string();
    assert!(id != "envoy-request-1" && id != "spoofed-id", "{id}");
    let (trace, _) = traceparent(value(&ok.headers, "traceparent"));
    assert_ne!(trace, "0af7651916cd43dd8448eb211c80319c");
    let removed = &ok.headers_to_remove;
    assert!(!removed
        .iter()
        .any(|h| h == "x-request-id" || h == "traceparent"));
    let audit = s.audit_when(1).await;
    assert_eq!(audit[0]["request_id"], id.as_str());
    assert_eq!(audit[0]["trace_id"], trace.as_str());

    // A trusted Envoy: its request id is kept and its trace continued with a
    // span of ours, on allowed and refused checks alike.
    let s = Stack::start_with("  trusted_proxies: [127.0.0.1/32]\n").await;
    let resp = s.check(checked(&s)).await;
    let ok = ok_response(&resp);
    assert_eq!(value(&ok.headers, "x-request-id"), "envoy-request-1");
    let (trace, span) = traceparent(value(&ok.headers, "traceparent"));
    assert_eq!(trace, "0af7651916cd43dd8448eb211c80319c");
    assert_ne!(span, "b7ad6b7169203331", "a new span");
    let resp = s.check(envoy_check("GET", "/orders/1", &[], "")).await;
    let denied = denied_response(&resp, 16, 401);
    assert_eq!(value(&denied.headers, "x-request-id"), "envoy-request-1");
    let audit = s.audit_when(2).await;
    assert_eq!(audit[0]["request_id"], "envoy-request-1");
    assert_eq!(audit[0]["trace_id"], trace.as_str());
}

/// As from the reverse proxy, the service behind Envoy never gets the
/// session cookie (it could replay it): the `Cookie` header is overwritten
/// without it, or removed when nothing else is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_taken_out_of_what_the_service_gets() {
    let idp = portcullis_testkit::DevIssuer::start().await.unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\n\
         ext_authz:\n  grpc_listen: 127.0.0.1:0\n\
         providers:\n  - name: dev\n    issuer: {}\n    audiences: [portal]\n\
         \x20   client_id: portal\n    client_secret: not-used-here\n\
         login:\n  provider: dev\n  cookie:\n    secret: a-cookie-secret-of-at-least-32-bytes!!\n\
         routes:\n  - name: open\n    match: {{ path_prefix: /open }}\n    auth: optional\n\
         \x20   policy:\n      allow:\n        - methods: [GET]\n\
         \x20 - name: app\n    match: {{ path_prefix: / }}\n    auth: none\n",
        idp.issuer()
    );
    let server = portcullis_proxy::Server::start(config(&yaml), None)
        .await
        .unwrap();
    wait_ready(server.admin_addr()).await;
    let cookie = |value: &str| envoy_check("GET", "/x", &[("cookie", value)], "");

    let resp = check_on(&server, cookie("a=1; _portcullis=some-session; b=2")).await;
    let ok = ok_response(&resp);
    let set: Vec<_> = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .filter(|h| h.key == "cookie")
        .map(|h| h.value.as_str())
        .collect();
    assert_eq!(set, ["a=1; b=2"], "{ok:?}");

    let resp = check_on(&server, cookie("_portcullis=some-session")).await;
    let ok = ok_response(&resp);
    assert!(ok.headers_to_remove.iter().any(|h| h == "cookie"), "{ok:?}");

    // Another cookie alone is left as it is.
    let resp = check_on(&server, cookie("a=1")).await;
    let ok = ok_response(&resp);
    assert!(
        !ok.headers_to_remove.iter().any(|h| h == "cookie"),
        "{ok:?}"
    );
    assert!(
        !ok.headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .any(|h| h.key == "cookie"),
        "{ok:?}"
    );
    assert!(ok.response_headers_to_add.is_empty(), "{ok:?}");

    // A session cookie naming no live session counts as none on an optional
    // route, and the browser is told to drop it: added to the service's
    // answer beside its own cookies, never replacing them.
    let resp = check_on(
        &server,
        envoy_check("GET", "/open/x", &[("cookie", "_portcullis=junk")], ""),
    )
    .await;
    let ok = ok_response(&resp);
    let added: Vec<_> = ok
        .response_headers_to_add
        .iter()
        .map(|o| {
            let h = o.header.as_ref().unwrap();
            (h.key.as_str(), o.append_action, o.append.clone())
        })
        .collect();
    assert_eq!(
        added,
        [("set-cookie", 0, Some(BoolValue { value: true }))],
        "{ok:?}"
    );
    let cleared = &ok.response_headers_to_add[0].header.as_ref().unwrap().value;
    assert!(
        cleared.starts_with("_portcullis=; Path=/; Max-Age=0"),
        "{cleared}"
    );
}
