//! Policy from traffic (SPEC §11) end to end, with the real binary: routes in
//! `mode: audit` see several kinds of caller, `policy suggest` turns the audit file
//! into rules, the rules are merged into the config, `check` accepts it, and after
//! switching to `mode: enforce` everything seen is still allowed while an unseen
//! method, an unseen path subtree and unseen callers are refused. `policy report`
//! is checked on the same audit file.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis_testkit::EchoUpstream;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const ISSUER: &str = "https://idp.invalid/realms/shop";
const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const INTRUDER_WORKLOAD: &str = "spiffe://cluster.local/ns/shop/sa/intruder";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Out {
    let out = Command::new(BIN).args(args).output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A token minted by `portcullis token mint`.
fn mint(key: &Path, sub: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "token",
        "mint",
        "--key",
        s(key),
        "--iss",
        ISSUER,
        "--sub",
        sub,
        "--aud",
        "shop",
    ];
    args.extend_from_slice(extra);
    let r = run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout.trim().to_string()
}

struct Proxy {
    child: Child,
    port: u16,
}

impl Proxy {
    fn start(config: &Path, port: u16, admin: u16) -> Proxy {
        let child = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(config)
            .env("PORTCULLIS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let proxy = Proxy { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", admin)).is_err() {
            assert!(Instant::now() < deadline, "proxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        proxy
    }

    /// SIGTERM, then wait: every audit line is flushed before the exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status:?}");
                return;
            }
            assert!(Instant::now() < deadline, "proxy did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Who makes a request.
#[derive(Clone, Copy)]
enum As<'a> {
    Token(&'a str),
    Workload(&'a str),
    Nobody,
}

/// One request: (caller, method, path).
type Call<'a> = (As<'a>, &'static str, &'static str);

async fn send(c: &Client<HttpConnector, Full<Bytes>>, port: u16, call: Call<'_>) -> u16 {
    let (who, method, path) = call;
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"));
    match who {
        As::Token(t) => req = req.header("authorization", format!("Bearer {t}")),
        As::Workload(id) => req = req.header("x-forwarded-client-cert", format!("URI={id}")),
        As::Nobody => {}
    }
    let resp = c
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

/// The config; `orders_policy` and `docs_policy` are the routes' `policy:` blocks.
#[allow(clippy::too_many_arguments)]
fn write_config(
    path: &Path,
    ports: (u16, u16),
    jwks: &Path,
    audit: &Path,
    upstream: &str,
    mode: &str,
    orders_policy: &str,
    docs_policy: &str,
) {
    let (port, admin) = ports;
    let text = format!(
        r#"server:
  listen: 127.0.0.1:{port}
  trusted_proxies: [127.0.0.1/32]
admin:
  listen: 127.0.0.1:{admin}
audit:
  sink: file:{audit}
workload_identity:
  trust_domain: cluster.local
  accept: [xfcc]
providers:
  - name: shop-idp
    issuer: {ISSUER}
    audiences: [shop]
    discovery: false
    jwks_file: {jwks}
routes:
  - name: orders
    match: {{ path_prefix: /api/orders }}
    upstream: {upstream}
    mode: {mode}
{orders_policy}
  - name: docs
    match: {{ path_prefix: /docs }}
    upstream: {upstream}
    mode: {mode}
{docs_policy}
"#,
        audit = s(audit),
        jwks = s(jwks),
    );
    std::fs::write(path, text).unwrap();
}

/// The rollout's first guess: only admins, and no interns. Nobody in the traffic
/// below is an admin, so in audit mode every request is a shadow deny.
const GUESS: &str = "    policy:
      deny:
        - name: no-interns
          groups: [interns]
      allow:
        - name: admins-only
          groups: [admins]";

/// The `allow:` block `suggest` printed for `route` (its lines after `policy:`).
fn suggested_allow(yaml: &str, route: &str) -> String {
    let head = format!("  - name: \"{route}\"\n");
    let start = yaml
        .find(&head)
        .unwrap_or_else(|| panic!("no {route} in\n{yaml}"))
        + head.len();
    let rest = &yaml[start..];
    let block: Vec<&str> = rest
        .lines()
        .take_while(|l| l.starts_with("    "))
        .skip_while(|l| !l.starts_with("      allow:"))
        .collect();
    assert!(!block.is_empty(), "no allow list for {route} in\n{yaml}");
    block.join("\n")
}

/// A merge as a person does it: the suggested `allow` replaces the old one, the
/// `deny` rules stay.
fn merged_policy(yaml: &str, route: &str) -> String {
    format!(
        "    policy:\n      deny:\n        - name: no-interns\n          groups: [interns]\n{}",
        suggested_allow(yaml, route)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggested_rules_allow_what_was_seen_and_nothing_else() {
    let echo = EchoUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let r = run(&["keys", "generate", "--alg", "ES256", "--out", s(&keys)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (key, jwks) = (keys.join("private.pem"), keys.join("jwks.json"));

    let billing = mint(&key, "billing", &["--claim", "client_id=billing"]);
    let reports = mint(&key, "reports", &["--claim", "client_id=reports"]);
    let intruder = mint(&key, "intruder", &["--claim", "client_id=intruder"]);
    let alice = mint(
        &key,
        "alice",
        &["--groups", "eng,staff", "--claim", "email=alice@shop.test"],
    );
    let bob = mint(
        &key,
        "bob",
        &["--groups", "eng", "--claim", "email=bob@shop.test"],
    );
    let dave = mint(
        &key,
        "dave",
        &["--groups", "eng,oncall", "--claim", "email=dave@shop.test"],
    );
    let carol = mint(
        &key,
        "carol",
        &[
            "--groups",
            "sales,staff",
            "--claim",
            "email=carol@shop.test",
        ],
    );
    let secrets = [&billing, &reports, &intruder, &alice, &bob, &dave, &carol];

    let (b, r_, a, bo) = (
        As::Token(&billing),
        As::Token(&reports),
        As::Token(&alice),
        As::Token(&bob),
    );
    let cart = As::Workload(CART);
    let seen: Vec<Call<'_>> = vec![
        (b, "GET", "/api/orders/1001"),
        (b, "GET", "/api/orders/1002"),
        (b, "GET", "/api/orders/1003"),
        (b, "GET", "/api/orders/1001/items"),
        (b, "POST", "/api/orders"),
        (r_, "GET", "/api/orders/summary"),
        (r_, "GET", "/api/orders/summary"),
        (cart, "GET", "/api/orders/77"),
        (a, "GET", "/docs/guide/intro"),
        (a, "GET", "/docs/guide/setup"),
        (a, "GET", "/docs/guide/faq"),
        (a, "GET", "/docs/guide/faq"),
        (bo, "GET", "/docs/guide/intro"),
        (bo, "GET", "/docs/guide/setup"),
    ];

    // Phase 1: audit mode. Everything passes (shadow denies), and is logged.
    let audit = dir.path().join("audit.log");
    let cfg = dir.path().join("portcullis.yaml");
    let ports = (free_port(), free_port());
    write_config(
        &cfg,
        ports,
        &jwks,
        &audit,
        &echo.url(),
        "audit",
        GUESS,
        GUESS,
    );
    let proxy = Proxy::start(&cfg, ports.0, ports.1);
    let c = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for &call in &seen {
        assert_eq!(
            send(&c, proxy.port, call).await,
            200,
            "audit mode lets {} {} through",
            call.1,
            call.2
        );
    }
    // An anonymous request is refused at authentication (never a policy matter).
    assert_eq!(
        send(&c, proxy.port, (As::Nobody, "GET", "/docs/guide/intro")).await,
        401
    );
    proxy.stop();
    // A torn line (as a crash mid-write leaves) is skipped and counted.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&audit)
        .unwrap()
        .write_all(b"{\"method\":\"GET\",\"pa\n")
        .unwrap();

    // Phase 2: suggest.
    let sug = run(&["policy", "suggest", "-c", s(&cfg), "--audit", s(&audit)]);
    assert_eq!(sug.code, 0, "{}", sug.stderr);
    assert!(
        sug.stderr.contains("skipped 1 malformed line"),
        "{}",
        sug.stderr
    );
    let yaml = sug.stdout;
    for needle in [
        "routes:\n  - name: \"orders\"",
        r#"clients: ["billing"]"#,
        r#"paths: ["/api/orders/*", "/api/orders/*/items"]"#,
        r#"clients: ["reports"]"#,
        r#"paths: ["/api/orders/summary"]"#,
        r#"workloads: ["spiffe://cluster.local/ns/shop/sa/cart"]"#,
        // alice and bob both read intro and setup, and both are in eng.
        r#"groups: ["eng"]"#,
        r#"paths: ["/docs/guide/intro", "/docs/guide/setup"]"#,
        // Only alice read the FAQ: named by subject, not by a group.
        r#"subjects: ["alice"]"#,
        // Every token came from one provider, so every rule but the workload's says so.
        "clients: [\"billing\"]\n          providers: [\"shop-idp\"]\n",
        "groups: [\"eng\"]\n          providers: [\"shop-idp\"]\n",
        "# 4 requests; clients billing",
        "# 4 requests; group eng (2 people seen: alice, bob)",
    ] {
        assert!(yaml.contains(needle), "missing {needle:?} in\n{yaml}");
    }
    assert_eq!(
        yaml.matches("providers: [\"shop-idp\"]").count(),
        5,
        "{yaml}"
    );
    for t in secrets {
        assert!(!yaml.contains(t.as_str()) && !sug.stderr.contains(t.as_str()));
    }

    // The same file gzipped gives the same rules.
    let gz_path = dir.path().join("audit.log.1.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&std::fs::read(&audit).unwrap()).unwrap();
    std::fs::write(&gz_path, gz.finish().unwrap()).unwrap();
    let from_gz = run(&["policy", "suggest", "-c", s(&cfg), "--audit", s(&gz_path)]);
    assert_eq!(from_gz.code, 0, "{}", from_gz.stderr);
    let body = |y: &str| y.split_once("routes:").unwrap().1.to_string();
    assert_eq!(body(&from_gz.stdout), body(&yaml));

    // One route only.
    let one = run(&[
        "policy",
        "suggest",
        "-c",
        s(&cfg),
        "--audit",
        s(&audit),
        "--route",
        "docs",
    ]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert!(one.stdout.contains("name: \"docs\"") && !one.stdout.contains("name: \"orders\""));

    // Report on the audit-mode traffic.
    let rep = run(&["policy", "report", "-c", s(&cfg), "--audit", s(&audit)]);
    assert_eq!(rep.code, 0, "{}", rep.stderr);
    let text = rep.stdout;
    for needle in [
        "route orders (mode audit): 8 requests, 0 allowed, 8 denied",
        "enforcement would refuse 8 of 8 requests (100.0%)",
        // The anonymous request was refused at authentication, enforced.
        "route docs (mode audit): 7 requests, 0 allowed, 7 denied",
        "enforcement would refuse 6 of 7 requests",
        "anonymous: missing_token 1",
        "rules that never decided anything: no-interns, admins-only",
        "callers denied most often:",
        "client billing: forbidden 5",
        "user alice: forbidden 4",
        "workload spiffe://cluster.local/ns/shop/sa/cart: forbidden 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    for t in secrets {
        assert!(!text.contains(t.as_str()));
    }

    // Phase 3: merge, check, enforce.
    let enforced_audit = dir.path().join("enforced.log");
    let ports = (free_port(), free_port());
    write_config(
        &cfg,
        ports,
        &jwks,
        &enforced_audit,
        &echo.url(),
        "enforce",
        &merged_policy(&yaml, "orders"),
        &merged_policy(&yaml, "docs"),
    );
    let check = run(&["check", "-c", s(&cfg)]);
    assert_eq!(
        (check.code, check.stdout.trim()),
        (0, "ok"),
        "{}\n{}",
        check.stderr,
        std::fs::read_to_string(&cfg).unwrap()
    );
    let proxy = Proxy::start(&cfg, ports.0, ports.1);

    // Replay: everything seen is allowed.
    for &call in &seen {
        assert_eq!(
            send(&c, proxy.port, call).await,
            200,
            "replay of {} {}",
            call.1,
            call.2
        );
    }
    // A person of the group the rule names, not seen before, gets what the group got.
    assert_eq!(
        send(
            &c,
            proxy.port,
            (As::Token(&dave), "GET", "/docs/guide/intro")
        )
        .await,
        200
    );

    let refused: Vec<(Call<'_>, u16)> = vec![
        // Unseen methods.
        ((b, "DELETE", "/api/orders/1001"), 403),
        ((b, "PUT", "/api/orders/1001"), 403),
        ((r_, "POST", "/api/orders"), 403),
        // Unseen path subtrees.
        ((b, "GET", "/api/orders/1001/payments"), 403),
        ((a, "GET", "/docs/internal/runbook"), 403),
        ((cart, "GET", "/api/orders/77/items"), 403),
        // A seen path, but another caller's.
        ((r_, "GET", "/api/orders/1001"), 403),
        ((bo, "GET", "/docs/guide/faq"), 403),
        // Unseen callers.
        ((As::Token(&intruder), "GET", "/api/orders/1001"), 403),
        ((As::Token(&carol), "GET", "/docs/guide/intro"), 403),
        (
            (As::Workload(INTRUDER_WORKLOAD), "GET", "/api/orders/77"),
            403,
        ),
        ((As::Nobody, "GET", "/api/orders/1001"), 401),
    ];
    for (call, status) in refused {
        assert_eq!(
            send(&c, proxy.port, call).await,
            status,
            "{} {}",
            call.1,
            call.2
        );
    }
    proxy.stop();

    // The report on enforced traffic: the suggested rules decided, nothing shadowed.
    let rep = run(&[
        "policy",
        "report",
        "-c",
        s(&cfg),
        "--audit",
        s(&enforced_audit),
    ]);
    assert_eq!(rep.code, 0, "{}", rep.stderr);
    assert!(
        rep.stdout.contains("route orders (mode enforce)"),
        "{}",
        rep.stdout
    );
    assert!(
        !rep.stdout.contains("enforcement would refuse"),
        "{}",
        rep.stdout
    );
    assert!(
        rep.stdout
            .contains("rules that never decided anything: no-interns\n"),
        "{}",
        rep.stdout
    );
    assert!(
        rep.stdout.contains("client intruder: forbidden 1"),
        "{}",
        rep.stdout
    );
}

#[test]
fn usage_and_file_errors_are_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("portcullis.yaml");
    std::fs::write(
        &cfg,
        "routes:\n  - name: open\n    match: { path_prefix: / }\n    upstream: http://127.0.0.1:9\n    auth: none\n",
    )
    .unwrap();
    let audit = dir.path().join("audit.log");
    std::fs::write(&audit, "").unwrap();
    let missing = dir.path().join("missing.log");
    let bad_cfg = dir.path().join("bad.yaml");
    std::fs::write(&bad_cfg, "routes: [\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["policy", "suggest", "-c", s(&cfg), "--audit", s(&missing)],
            "cannot read audit file",
        ),
        (
            vec!["policy", "report", "-c", s(&cfg), "--audit", s(&missing)],
            "cannot read audit file",
        ),
        (
            vec![
                "policy",
                "suggest",
                "-c",
                s(&cfg),
                "--audit",
                s(&audit),
                "--route",
                "nope",
            ],
            "no route named nope",
        ),
        (
            vec!["policy", "suggest", "-c", s(&bad_cfg), "--audit", s(&audit)],
            "config:",
        ),
        (vec!["policy", "suggest", "-c", s(&cfg)], "--audit"),
    ];
    for (args, needle) in cases {
        let r = run(&args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
    }
    // An MCP route gets no rules: without `tools` they would allow every tool.
    let mcp_cfg = dir.path().join("mcp.yaml");
    std::fs::write(
        &mcp_cfg,
        "providers:\n  - name: idp\n    issuer: https://idp.example\n    audiences: [api]\n\
         routes:\n  - name: agents\n    match: { path_prefix: /mcp }\n    upstream: http://127.0.0.1:9\n    mcp: {}\n\
         \x20   policy:\n      allow:\n        - tools: [get_*]\n",
    )
    .unwrap();
    let mcp_audit = dir.path().join("mcp.log");
    std::fs::write(
        &mcp_audit,
        r#"{"method":"POST","path":"/mcp","route":"agents","decision":"allow","reason":"allowed","identity":{"type":"user","sub":"alice","issuer":"https://idp.example"},"mcp":{"method":"tools/call","tool":"get_weather"}}
"#,
    )
    .unwrap();
    let r = run(&[
        "policy",
        "suggest",
        "-c",
        s(&mcp_cfg),
        "--audit",
        s(&mcp_audit),
    ]);
    suggests_nothing(&r, "# route agents: an MCP route");
    // An empty audit file is not an error: nothing to suggest.
    let r = run(&["policy", "suggest", "-c", s(&cfg), "--audit", s(&audit)]);
    suggests_nothing(&r, "# route open: public (`auth: none`)");
}

/// `policy suggest` succeeded with no rules, and said why in `note`.
fn suggests_nothing(r: &Out, note: &str) {
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("routes: []"), "{}", r.stdout);
    assert!(r.stdout.contains(note), "{}", r.stdout);
}
