//! Upstream answers the proxy must not pass on as they are, and a client
//! whose request body breaks off on its way to the upstream, against a
//! hand-written HTTP/1.1 upstream that answers by path.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use portcullis_proxy::Server;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Answers `/switch` with a 101 nobody asked for, `/clte` with a chunked
/// body beside a `Content-Length` that does not match it, anything else with
/// `200 ok`; counts the requests it answered (read whole).
struct CannedUpstream {
    url: String,
    answered: Arc<AtomicUsize>,
}

impl CannedUpstream {
    async fn start() -> CannedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let answered = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&answered);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, Arc::clone(&count)));
            }
        });
        CannedUpstream { url, answered }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

async fn serve(mut tcp: TcpStream, answered: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    while let Some(head) = read_request(&mut tcp, &mut buf, None).await {
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        answered.fetch_add(1, Ordering::SeqCst);
        let answer: &[u8] = match path.as_str() {
            "/switch" => b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            "/clte" => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        };
        if tcp.write_all(answer).await.is_err() || path == "/switch" {
            return;
        }
    }
}

async fn proxy_to(upstreams: &[&CannedUpstream]) -> Server {
    let list: Vec<&str> = upstreams.iter().map(|u| u.url.as_str()).collect();
    let yaml = format!(
        "{SERVER_PREAMBLE}routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: [{}]\n    auth: none\n    upgrades: [websocket]\n",
        list.join(", ")
    );
    Server::start(config(&yaml), None).await.unwrap()
}

/// A 101 to a request that asked for no upgrade opens no tunnel; passed on,
/// it would tell the client one is open (over h2, a protocol error).
#[tokio::test]
async fn a_switch_of_protocols_nobody_asked_for_is_a_502() {
    let up = CannedUpstream::start().await;
    let server = proxy_to(&[&up]).await;
    let (status, body) = get(&format!("http://{}/switch", server.local_addr())).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_unavailable"), "{body}");
    assert_eq!(up.answered(), 1);
}

/// `Transfer-Encoding` overrides `Content-Length` (RFC 9112 §6.3); the
/// length passed on beside the re-sent body cut the answer short.
#[tokio::test]
async fn a_content_length_beside_chunked_framing_is_not_passed_on() {
    let up = CannedUpstream::start().await;
    let server = proxy_to(&[&up]).await;
    let answer = raw(
        server.local_addr(),
        b"GET /clte HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("content-length: 5"),
        "{answer}"
    );
    assert!(answer.ends_with("2\r\nok\r\n0\r\n\r\n"), "{answer:?}");
}

/// A request body the client breaks off is the client's failure, not the
/// upstream's: counted against the upstream, five such requests got a
/// healthy endpoint ejected, and any caller could steer a route's traffic.
#[tokio::test]
async fn a_client_whose_body_breaks_off_cannot_eject_an_upstream() {
    let (a, b) = (CannedUpstream::start().await, CannedUpstream::start().await);
    let server = proxy_to(&[&a, &b]).await;
    for _ in 0..5 {
        raw(
            server.local_addr(),
            b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789",
            Duration::from_millis(100),
        )
        .await;
        // The proxy notices the closed connection after `raw` drops it.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((a.answered(), b.answered()), (0, 0));
    for i in 0..4 {
        let (status, _) = get(&format!("http://{}/r/{i}", server.local_addr())).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        (a.answered(), b.answered()),
        (2, 2),
        "an endpoint was ejected"
    );
}
