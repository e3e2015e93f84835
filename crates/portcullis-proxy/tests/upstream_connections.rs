//! The proxy's kept upstream connections, against a hand-written HTTP/1.1
//! upstream that counts its connections and can close them the way real
//! servers do: silently, once idle, without `Connection: close`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use bytes::Bytes;
use common::*;
use portcullis_proxy::Server;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// An upstream answering `200 ok` to every request; with `close_idle_after`,
/// it closes each connection that long after its last answer.
struct CountingUpstream {
    url: String,
    accepted: Arc<AtomicUsize>,
}

impl CountingUpstream {
    async fn start(close_idle_after: Option<Duration>) -> CountingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(tcp, close_idle_after));
            }
        });
        CountingUpstream { url, accepted }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// One connection: heads and `Content-Length` bodies read, `ok` answered;
/// with `close_idle_after`, closed silently once idle that long.
async fn serve(mut tcp: TcpStream, close_idle_after: Option<Duration>) {
    let mut buf = Vec::new();
    while read_request(&mut tcp, &mut buf, close_idle_after)
        .await
        .is_some()
    {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if tcp.write_all(answer).await.is_err() {
            return;
        }
    }
}

async fn proxy_to(upstream: &CountingUpstream) -> Server {
    let yaml = format!(
        "{SERVER_PREAMBLE}routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: {}\n    auth: none\n",
        upstream.url
    );
    Server::start(config(&yaml), None).await.unwrap()
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let up = CountingUpstream::start(None).await;
    let server = proxy_to(&up).await;
    let base = format!("http://{}", server.local_addr());
    for i in 0..20 {
        let (status, body) = get(&format!("{base}/r/{i}")).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
    }
    assert_eq!(up.connections(), 1, "the kept connection was not reused");
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    let up = CountingUpstream::start(Some(Duration::from_millis(50))).await;
    let server = proxy_to(&up).await;
    let base = format!("http://{}", server.local_addr());
    let c = client();
    for i in 0..4 {
        // POST cannot be retried once sent: it succeeds only if the closed
        // connection is never handed the request.
        let (status, _, body) =
            send_body(&c, "POST", &format!("{base}/p/{i}"), &[], Bytes::from("x")).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "request {i}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(up.connections(), 4, "each request needed a new connection");
}

#[tokio::test]
async fn concurrent_requests_open_connections_then_reuse_them() {
    let up = CountingUpstream::start(None).await;
    let server = proxy_to(&up).await;
    let base = format!("http://{}", server.local_addr());
    for _round in 0..5 {
        let all = (0..8).map(|i| {
            let url = format!("{base}/c/{i}");
            tokio::spawn(async move { get(&url).await })
        });
        for r in futures_util::future::join_all(all).await {
            assert_eq!(r.unwrap(), (200, "ok".to_string()));
        }
    }
    // At most one connection per request in flight, kept for the next rounds.
    let n = up.connections();
    assert!(
        (1..=8).contains(&n),
        "{n} upstream connections for 8 at a time"
    );
}

#[tokio::test]
async fn a_request_that_named_no_host_reaches_the_upstream_with_its_own() {
    let h = Harness::start(
        "  - name: all\n    match: { path_prefix: / }\n    upstream: UPSTREAM\n    auth: none\n",
    )
    .await;
    // HTTP/1.0 may leave `Host` out; the upstream still needs one (RFC 9112 §3.2).
    let answer = raw(
        h.server.local_addr(),
        b"GET /h HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    let seen = h.echo.seen();
    let upstream_authority = h.echo.url().trim_start_matches("http://").to_string();
    assert_eq!(seen[0].headers["host"], upstream_authority.as_str());
    assert_eq!(seen[0].headers.get_all("host").iter().count(), 1);
    // HTTP/1.1 may not (a 400): judged by the host-less routes, it would
    // reach the upstream under a name it never gave, perhaps a protected one.
    let answer = raw(
        h.server.local_addr(),
        b"GET /h HTTP/1.1\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("names no host"), "{answer}");
    let answer = raw(
        h.server.local_addr(),
        b"GET /h HTTP/1.1\r\nHost:\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "an empty Host: {answer}"
    );
    assert_eq!(h.echo.seen().len(), 1);
}
