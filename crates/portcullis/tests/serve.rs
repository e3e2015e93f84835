//! The real binary under signals: SIGTERM drains in-flight requests and flushes
//! every audit line, SIGHUP reloads and reopens the audit file, `check` points at
//! errors by line and column, and `demo` prints curl lines that work.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis_testkit::{DevIssuer, EchoUpstream};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
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
            .stderr(Stdio::piped())
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

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn wait(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
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

fn config(
    dir: &Path,
    port: u16,
    admin: u16,
    upstream: &str,
    audit: &Path,
    extra_routes: &str,
) -> std::path::PathBuf {
    let path = dir.join("portcullis.yaml");
    std::fs::write(
        &path,
        format!(
            "server:\n  listen: 127.0.0.1:{port}\n  shutdown_grace: 10s\nadmin:\n  listen: 127.0.0.1:{admin}\naudit:\n  sink: file:{}\nroutes:\n{extra_routes}  - name: open\n    match: {{ path_prefix: / }}\n    upstream: {upstream}\n    auth: none\n",
            audit.display()
        ),
    )
    .unwrap();
    path
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

async fn status_of(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
) -> u16 {
    let resp = client
        .request(
            http::Request::get(url)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let echo = EchoUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let (port, admin) = (free_port(), free_port());
    let cfg = config(dir.path(), port, admin, &echo.url(), &audit, "");
    let proxy = Proxy::start(&cfg, port, admin);

    // A slow request is in flight when SIGTERM arrives: it still completes.
    let url = proxy.url("/sleep/1500");
    let in_flight = tokio::spawn(async move {
        let c = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        status_of(&c, &url).await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    signal(&proxy.child, "-TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused while draining.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert_eq!(in_flight.await.unwrap(), 200);
    let status = proxy.wait();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(count_lines(&audit), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_equal_requests_and_survive_sigterm() {
    let echo = EchoUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let (port, admin) = (free_port(), free_port());
    let denied =
        "  - name: closed\n    match: { path_prefix: /closed }\n    upstream: http://127.0.0.1:9\n";
    let cfg = config(dir.path(), port, admin, &echo.url(), &audit, denied);
    let proxy = Proxy::start(&cfg, port, admin);

    // 100k mixed requests: allowed, 401 (no token), 400 (bad path), from 32 workers.
    const TOTAL: usize = 100_000;
    const WORKERS: usize = 32;
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let base = proxy.url("");
        tasks.push(tokio::spawn(async move {
            let c = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            let mut done = 0;
            for i in (w..TOTAL).step_by(WORKERS) {
                let path = match i % 3 {
                    0 => "/ok",
                    1 => "/closed",
                    _ => "/bad%2Fpath",
                };
                let s = status_of(&c, &format!("{base}{path}")).await;
                assert!(matches!(s, 200 | 401 | 400), "{path}: {s}");
                done += 1;
            }
            done
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.unwrap();
    }
    assert_eq!(sent, TOTAL);
    // Stop at once: whatever is still queued must be flushed before exit.
    signal(&proxy.child, "-TERM");
    assert!(proxy.wait().success());
    assert_eq!(count_lines(&audit), TOTAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_reopens_the_audit_file() {
    let echo = EchoUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let (port, admin) = (free_port(), free_port());
    let cfg = config(dir.path(), port, admin, &echo.url(), &audit, "");
    let proxy = Proxy::start(&cfg, port, admin);
    let c = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for _ in 0..5 {
        assert_eq!(status_of(&c, &proxy.url("/a")).await, 200);
    }
    // Rotate like logrotate: rename, then SIGHUP.
    let rotated = dir.path().join("audit.log.1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::rename(&audit, &rotated).unwrap();
    // The reload also brings a new route.
    let with_new_route = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("routes:\n", "routes:\n  - name: added\n    match: { path: /added }\n    upstream: http://127.0.0.1:9\n    auth: none\n");
    std::fs::write(&cfg, with_new_route).unwrap();
    signal(&proxy.child, "-HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        assert_eq!(status_of(&c, &proxy.url("/a")).await, 200);
    }
    assert_eq!(
        status_of(&c, &proxy.url("/added")).await,
        502,
        "reloaded route not active"
    );
    // An invalid config is refused; the old one keeps serving.
    std::fs::write(&cfg, "routes: [ {match: {path_regex: '('}} ]\n").unwrap();
    signal(&proxy.child, "-HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_of(&c, &proxy.url("/added")).await, 502);
    signal(&proxy.child, "-TERM");
    let mut proxy = proxy;
    let stderr = proxy.child.stderr.take().unwrap();
    assert!(proxy.wait().success());
    assert_eq!(count_lines(&rotated), 5);
    assert_eq!(count_lines(&audit), 5);
    let log: Vec<String> = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(log.iter().any(|l| l.contains("reload refused")), "{log:?}");
}

#[test]
fn check_reports_errors_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "server:\n  listen: 127.0.0.1:8080\n  bogus: 1\nroutes:\n  - match: { path_regex: \"(\" }\n    upstream: http://127.0.0.1:8000\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    assert!(stderr.contains(&format!("{file}:3:3: ")), "{stderr}");
    assert!(stderr.contains(&format!("{file}:5:")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "routes:\n  - match: { path_prefix: / }\n    upstream: http://127.0.0.1:8000\n    auth: none\n").unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    // A route hidden behind a broader earlier one is reported, but is not an error.
    let shadowed = dir.path().join("shadowed.yaml");
    std::fs::write(
        &shadowed,
        "routes:\n  - name: all\n    match: { path_prefix: /api }\n    upstream: http://127.0.0.1:8000\n    auth: none\n  - name: hidden\n    match: { path: /api/orders }\n    upstream: http://127.0.0.1:8000\n    auth: none\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&shadowed)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning:") && stderr.contains("hidden") && stderr.contains("never match"),
        "{stderr}"
    );
}

#[test]
fn demo_prints_curl_lines_that_work() {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("PORTCULLIS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut curls = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("curl ") {
            curls.push(line.clone());
        }
        if line.starts_with("Audit lines") {
            break;
        }
    }
    assert_eq!(curls.len(), 4, "{curls:?}");
    let mut statuses = Vec::new();
    for curl in &curls {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{curl} -s -o /dev/null -w '%{{http_code}}'"))
            .output()
            .expect("curl must be installed (scripts/test installs it)");
        statuses.push(String::from_utf8_lossy(&out.stdout).to_string());
    }
    assert_eq!(statuses, ["200", "403", "401", "401"]);
    // The four calls produced four audit lines on the demo's screen.
    let audit: Vec<String> = lines.by_ref().take(4).map(|l| l.unwrap()).collect();
    assert!(
        audit
            .iter()
            .all(|l| l.starts_with('{') && l.contains("\"request_id\"")),
        "{audit:?}"
    );
    signal(&child, "-INT");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The dev issuer is what the demo uses; make sure it is reachable from tests too.
#[tokio::test]
async fn dev_issuer_serves_discovery() {
    let idp = DevIssuer::start().await.unwrap();
    let c = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    assert_eq!(
        status_of(
            &c,
            &format!("{}/.well-known/openid-configuration", idp.issuer())
        )
        .await,
        200
    );
}
