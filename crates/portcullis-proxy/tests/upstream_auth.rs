//! `routes[].upstream_auth` end to end (SPEC §9): a real server, the testkit IdP
//! as both the callers' issuer and the outbound token endpoint, and an echo
//! upstream that shows exactly which `Authorization` it received.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, send};
use portcullis_identity::jose::compact::decode_unverified;
use portcullis_proxy::Server;
use portcullis_testkit::{DevIssuer, EchoUpstream};
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &str = "outbound-secret-never-logged";

struct Stack {
    server: Server,
    echo: EchoUpstream,
    idp: DevIssuer,
    audit: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Stack {
        let idp = DevIssuer::start().await.unwrap();
        idp.token_endpoint().add_secret_client("billing", SECRET);
        let echo = EchoUpstream::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        let yaml = format!(
            r#"server:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
audit:
  sink: file:{audit}
providers:
  - name: dev
    issuer: {issuer}
    audiences: [orders-api]
credentials:
  - name: partner-api
    provider: dev
    client_id: billing
    client_secret: {SECRET}
    scopes: [partner:read]
    audience: https://partner.example.com
routes:
  - name: partner
    match: {{ path_prefix: /partner }}
    upstream: {upstream}
    upstream_auth: {{ credential: partner-api }}
    policy:
      allow:
        - clients: [orders-agent]
  - name: partner-mcp
    match: {{ path_prefix: /mcp }}
    upstream: {upstream}
    mcp: {{}}
    upstream_auth: {{ credential: partner-api }}
    policy:
      allow:
        - clients: [orders-agent]
          tools: [get_*]
  - name: partner-forwarding
    match: {{ path_prefix: /forwarding }}
    upstream: {upstream}
    forward_token: true
    upstream_auth: {{ credential: partner-api }}
    policy:
      allow:
        - clients: [orders-agent]
"#,
            audit = audit.display(),
            issuer = idp.issuer(),
            upstream = echo.url(),
        );
        let config = portcullis_config::load_str(&yaml, "test.yaml", &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
            .config;
        let server = Server::start(config, None).await.unwrap();
        Stack {
            server,
            echo,
            idp,
            audit,
            _dir: dir,
        }
    }

    fn caller(&self, client_id: &str) -> String {
        self.idp
            .token(
                "alice",
                "orders-api",
                300,
                json!({ "client_id": client_id }),
            )
            .unwrap()
    }

    async fn get(&self, path: &str, token: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.server.local_addr());
        let bearer = format!("Bearer {token}");
        let (status, _, body) = send(&client(), "GET", &url, &[("authorization", &bearer)]).await;
        (status, body)
    }

    async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.server.admin_addr());
        common::get(&url).await.1
    }

    async fn audit_lines(&self) -> Vec<Value> {
        // The writer batches; give it a moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
        common::read_audit(&self.audit)
    }
}

#[tokio::test]
async fn the_upstream_gets_the_proxy_token_instead_of_the_callers() {
    let stack = Stack::start().await;
    let caller = stack.caller("orders-agent");
    for path in ["/partner/orders", "/forwarding/orders", "/partner/again"] {
        let (status, body) = stack.get(path, &caller).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let seen = stack.echo.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        let values: Vec<_> = s.headers.get_all("authorization").iter().collect();
        assert_eq!(values.len(), 1, "exactly one Authorization");
        let token = values[0].to_str().unwrap().strip_prefix("Bearer ").unwrap();
        assert_ne!(
            token, caller,
            "the caller's token never reaches the upstream"
        );
        let (_, claims) = decode_unverified(token).unwrap();
        assert_eq!(claims["sub"], "billing");
        assert_eq!(claims["aud"], "https://partner.example.com");
        assert_eq!(claims["scope"], "partner:read");
    }
    // One token, fetched once, for all three requests (forward_token changes nothing).
    assert_eq!(stack.idp.token_endpoint().requests(), 1);
    let metrics = stack.metrics().await;
    assert!(
        metrics.contains(
            r#"portcullis_outbound_token_fetch_total{credential="partner-api",result="success"} 1"#
        ),
        "{metrics}"
    );
    let lines = stack.audit_lines().await;
    assert_eq!(lines.len(), 3);
    let outbound = stack.echo.seen()[0].headers["authorization"]
        .to_str()
        .unwrap()
        .to_string();
    for line in &lines {
        assert_eq!(line["credential"], "partner-api");
        let text = line.to_string();
        assert!(!text.contains(&caller) && !text.contains(&outbound[7..]));
        assert!(!text.contains(SECRET));
    }
}

#[tokio::test]
async fn a_caller_the_policy_refuses_causes_no_token_fetch() {
    let stack = Stack::start().await;
    let (status, _) = stack
        .get("/partner/orders", &stack.caller("someone-else"))
        .await;
    assert_eq!(status, 403);
    assert!(stack.echo.seen().is_empty());
    assert_eq!(stack.idp.token_endpoint().requests(), 0);
}

#[tokio::test]
async fn a_denied_mcp_call_causes_no_token_fetch() {
    let stack = Stack::start().await;
    let url = format!("http://{}/mcp", stack.server.local_addr());
    let bearer = format!("Bearer {}", stack.caller("orders-agent"));
    let call = |tool: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool}})
            .to_string()
    };
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let (status, _, body) =
        common::send_body(&client(), "POST", &url, &headers, call("rm_rf").into()).await;
    assert_eq!(status, 200);
    assert!(body.contains("-32003"), "{body}");
    assert_eq!(stack.idp.token_endpoint().requests(), 0);
    assert!(stack.echo.seen().is_empty());
    let (status, _, _) =
        common::send_body(&client(), "POST", &url, &headers, call("get_a").into()).await;
    assert_eq!(status, 200);
    assert_eq!(stack.idp.token_endpoint().requests(), 1);
}

#[tokio::test]
async fn no_token_means_502_and_nothing_forwarded() {
    let stack = Stack::start().await;
    stack.idp.token_endpoint().set_down(true);
    let caller = stack.caller("orders-agent");
    let (status, body) = stack.get("/partner/orders", &caller).await;
    assert_eq!(status, 502, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "credential_unavailable");
    assert!(!body.to_string().contains(SECRET));
    // Within the backoff, the next request fails at once without a new fetch.
    let (status, _) = stack.get("/partner/orders", &caller).await;
    assert_eq!(status, 502);
    assert!(stack.echo.seen().is_empty(), "nothing forwarded");
    assert_eq!(stack.idp.token_endpoint().requests(), 1);
    let metrics = stack.metrics().await;
    assert!(
        metrics.contains(
            r#"portcullis_outbound_token_fetch_total{credential="partner-api",result="error"} 1"#
        ),
        "{metrics}"
    );
    let lines = stack.audit_lines().await;
    assert_eq!(lines[0]["reason"], "credential_unavailable");
    assert_eq!(lines[0]["status"], 502);
}
