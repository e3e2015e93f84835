//! `portcullis demo`: the whole idea on one laptop, with no outside services. One
//! process runs a development issuer (its own keys, discovery and JWKS on loopback),
//! an echo upstream that shows the identity headers it received, and the proxy with a
//! demo policy; it prints ready-to-paste `curl` lines with freshly minted tokens, and
//! the audit lines those calls produce appear below them.

use anyhow::Context as _;
use portcullis_proxy::Server;
use portcullis_testkit::{DevIssuer, EchoUpstream};
use serde_json::json;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// The demo's audience and route, also named in the printed explanations.
const AUDIENCE: &str = "orders-api";

fn demo_config(listen: &str, issuer: &str, upstream: &str) -> String {
    format!(
        r#"server:
  listen: {listen}
admin:
  listen: 127.0.0.1:0
audit:
  sink: stdout
policy:
  explain_to_caller: full
providers:
  - name: demo-issuer
    issuer: {issuer}
    audiences: [{AUDIENCE}]
    algorithms: [ES256]
routes:
  - name: public
    match: {{ path_prefix: /public }}
    upstream: {upstream}
    auth: none
  - name: orders
    match: {{ path_prefix: /api/orders }}
    upstream: {upstream}
    policy:
      allow:
        - name: admins
          groups: [admins]
        - name: readers
          scopes: [orders:read]
          methods: [GET, HEAD]
"#
    )
}

/// Runs the demo until Ctrl-C (or SIGTERM).
pub fn run(listen: &str) -> anyhow::Result<()> {
    crate::cli::runtime()?.block_on(async move {
        let issuer = DevIssuer::start().await.context("cannot start the demo issuer")?;
        let echo = EchoUpstream::start().await.context("cannot start the echo upstream")?;
        let server = start_proxy(listen, &issuer, &echo).await?;
        wait_ready(&server).await;

        let base = format!("http://{}", server.local_addr());
        let mint = |sub: &str, ttl: i64, extra| {
            issuer
                .token(sub, AUDIENCE, ttl, extra)
                .map_err(|e| anyhow::anyhow!("cannot mint a demo token: {e}"))
        };
        let alice = mint("alice", 3600, json!({"email": "alice@example.com", "groups": ["admins"]}))?;
        let bob = mint("bob", 3600, json!({"email": "bob@example.com", "groups": ["users", "dev"]}))?;
        let expired = mint("carol", -60, json!({"groups": ["admins"]}))?;

        println!("Portcullis demo is running (Ctrl-C stops everything).");
        println!("  proxy     {base}");
        println!("  issuer    {}   (development keys, made at start)", issuer.issuer());
        println!("  upstream  {}   (echoes the headers it receives)", echo.url());
        println!("  admin     http://{}   (/healthz /readyz /metrics)", server.admin_addr());
        println!();
        println!("Policy: /api/orders allows group `admins`, or scope `orders:read` for GET; /public is open.");
        println!();
        println!("# 1. allowed: alice is in group admins; see the identity headers the upstream got");
        println!("curl -i {base}/api/orders -H 'Authorization: Bearer {alice}'");
        println!("# 2. denied by policy (403, with the explanation): bob is in users, dev");
        println!("curl -i {base}/api/orders -H 'Authorization: Bearer {bob}'");
        println!("# 3. no token (401 missing_token)");
        println!("curl -i {base}/api/orders");
        println!("# 4. expired token (401 token_expired)");
        println!("curl -i {base}/api/orders -H 'Authorization: Bearer {expired}'");
        println!();
        println!("Audit lines, one per request:");

        let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        server.shutdown().await;
        issuer.stop();
        echo.stop();
        eprintln!("demo stopped");
        Ok(())
    })
}

/// Starts the proxy on `listen`, or on a free port when that one is taken (a second
/// demo, or something else on 8080) so the demo always starts.
async fn start_proxy(
    listen: &str,
    issuer: &DevIssuer,
    echo: &EchoUpstream,
) -> anyhow::Result<Server> {
    let load = |listen: &str| {
        let yaml = demo_config(listen, &issuer.issuer(), &echo.url());
        portcullis_config::load_str(&yaml, "demo.yaml", &|_| None)
            .map(|l| l.config)
            .map_err(|e| anyhow::anyhow!("demo config invalid: {e}"))
    };
    match Server::start(load(listen)?, None).await {
        Ok(server) => Ok(server),
        Err(e) => {
            eprintln!("note: {e:#}; using a free port instead");
            Server::start(load("127.0.0.1:0")?, None).await
        }
    }
}

/// Waits until the proxy has loaded the issuer's keys, so the printed calls work at once.
async fn wait_ready(server: &Server) {
    for _ in 0..100 {
        if server
            .shared
            .runtime
            .load()
            .auth
            .readiness()
            .iter()
            .all(|p| p.ready)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("warning: the demo issuer's keys are not loaded yet");
}
