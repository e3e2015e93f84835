//! Memory per idle keep-alive connection, measured on the real binary: 5,000
//! connections (HTTP/1.1, then HTTP/2 prior knowledge) each make one request
//! through the full path and stay open; the proxy's resident memory is read before
//! and after. The figure is printed, not judged here (a timing- and
//! allocator-dependent bound would be a flaky test; BENCHMARKS.md judges it from
//! the release build). What is asserted: every connection is served, stays open,
//! and is counted idle.
//!
//! `IDLE_CONNS` sets the count; `PORTCULLIS_BIN` measures another binary (the
//! release build: `PORTCULLIS_BIN=target/release/portcullis cargo test -p
//! portcullis --test idle_memory -- --nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use portcullis_testkit::EchoUpstream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

struct Proxy {
    child: Child,
    port: u16,
    admin: u16,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let (port, admin) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("portcullis.yaml");
        std::fs::write(
            &config,
            format!(
                "server:\n  listen: 127.0.0.1:{port}\nadmin:\n  listen: 127.0.0.1:{admin}\n\
                 audit:\n  sink: none\nroutes:\n  - match: {{ path_prefix: / }}\n    \
                 upstream: {upstream}\n    auth: none\n"
            ),
        )
        .unwrap();
        let bin = std::env::var("PORTCULLIS_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_portcullis").to_string());
        let child = Command::new(bin)
            .args(["serve", "-c"])
            .arg(&config)
            .env("PORTCULLIS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let proxy = Proxy { child, port, admin };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", admin)).await.is_err() {
            assert!(Instant::now() < deadline, "proxy did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The config file is read at start; the directory may go.
        drop(dir);
        proxy
    }

    /// A series' value; `None` when the binary does not export it.
    async fn metric(&self, series: &str) -> Option<f64> {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.admin)).await.unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        tcp.read_to_string(&mut text).await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count() -> usize {
    std::env::var("IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

/// One HTTP/1.1 request on a fresh keep-alive connection; the connection is
/// returned open once the whole response has been read.
async fn h1_connection(port: u16) -> TcpStream {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(b"GET /idle HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed mid-response");
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("content-length");
        if got.len() >= end + 4 + length {
            return tcp;
        }
    }
}

type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// One HTTP/2 (prior knowledge) request on a fresh connection, kept open.
async fn h2_connection(port: u16) -> H2Sender {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://127.0.0.1:{port}/idle"))
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    sender
}

/// Opens `n` connections with `open`, one after another, and reports the
/// proxy's RSS growth.
async fn measure<T, F, Fut>(label: &str, proxy: &Proxy, n: usize, open: F) -> Vec<T>
where
    F: Fn(u16) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    // A few connections first, so pools, caches and allocator arenas exist.
    let mut warm = Vec::new();
    for _ in 0..64 {
        warm.push(open(proxy.port).await);
    }
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(proxy.child.id());
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(open(proxy.port).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(proxy.child.id());
    let idle = proxy.metric("portcullis_connections{state=\"idle\"}").await;
    // An older binary given by PORTCULLIS_BIN (a before/after comparison) may not
    // count connections; this checkout's must.
    let idle = match idle {
        Some(idle) => idle,
        None if std::env::var_os("PORTCULLIS_BIN").is_some() => n as f64,
        None => panic!("{label}: no portcullis_connections{{state=\"idle\"}} series"),
    };
    let per = after.saturating_sub(before) as f64 / n as f64;
    println!(
        "{label}: {n} idle connections: RSS {before} KiB -> {after} KiB, {per:.1} KiB per connection"
    );
    assert_eq!(
        idle as usize, n,
        "{label}: not every connection is open and idle"
    );
    conns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_memory() {
    let echo = EchoUpstream::start().await.unwrap();
    let n = count();

    let proxy = Proxy::start(&echo.url()).await;
    let h1 = measure("HTTP/1.1", &proxy, n, h1_connection).await;
    drop(h1);
    drop(proxy);

    let proxy = Proxy::start(&echo.url()).await;
    let h2 = measure("HTTP/2", &proxy, n, h2_connection).await;
    drop(h2);
}
