//! Shared helpers for the proxy's end-to-end tests: start a real server on
//! 127.0.0.1:0 in front of a real echo upstream, and talk to it over real sockets.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

pub mod certs;
pub mod ext_authz;
pub mod idp_stack;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use portcullis_proxy::Server;
use portcullis_testkit::EchoUpstream;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Loads a YAML config from text; panics with the loader's messages on error.
pub fn config(yaml: &str) -> portcullis_config::Config {
    match portcullis_config::load_str(yaml, "test.yaml", &|_| None) {
        Ok(loaded) => loaded.config,
        Err(errors) => panic!("test config invalid:\n{errors}"),
    }
}

/// A server in front of an echo upstream. `routes` is YAML for the `routes:` list,
/// with `UPSTREAM` standing for the echo upstream's URL.
pub struct Harness {
    pub server: Server,
    pub echo: EchoUpstream,
    pub base: String,
}

pub const SERVER_PREAMBLE: &str =
    "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\n";

impl Harness {
    pub async fn start(routes: &str) -> Harness {
        Self::start_with(SERVER_PREAMBLE, routes).await
    }

    /// `preamble` holds the non-route sections (must set listen addresses).
    pub async fn start_with(preamble: &str, routes: &str) -> Harness {
        let echo = EchoUpstream::start().await.expect("echo upstream");
        let yaml = format!(
            "{preamble}routes:\n{}",
            routes.replace("UPSTREAM", &echo.url())
        );
        let server = Server::start(config(&yaml), None)
            .await
            .expect("server starts");
        let base = format!("http://{}", server.local_addr());
        Harness { server, echo, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request and returns status, headers and the whole body as text.
pub async fn send(
    client: &TestClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    send_body(client, method, url, headers, Bytes::new()).await
}

/// [`send`] with a request body.
pub async fn send_body(
    client: &TestClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (u16, http::HeaderMap, String) {
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(body)).expect("request"))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

pub async fn get(url: &str) -> (u16, String) {
    let (status, _, body) = send(&client(), "GET", url, &[]).await;
    (status, body)
}

/// Writes raw bytes on a fresh connection and reads until the server closes it (or
/// `wait` passes). Returns what the server sent.
pub async fn raw(addr: std::net::SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// For hand-written upstreams: reads one HTTP/1.1 request (its head, and a
/// `Content-Length` body) from `tcp`, and returns the head in lower case;
/// `None` when the connection ends first, or when `idle` passes before the
/// request's first byte. `buf` keeps what was read past the request.
pub async fn read_request(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    idle: Option<Duration>,
) -> Option<String> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let read = match idle {
            Some(idle) if buf.is_empty() => tokio::time::timeout(idle, tcp.read(&mut chunk))
                .await
                .ok()?,
            _ => tcp.read(&mut chunk).await,
        };
        match read {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + body_len {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..head_end + body_len);
    Some(head)
}

/// The JSON body the echo upstream returned.
/// The audit lines of a file the writer may be appending to: a last line
/// without its newline is still being written and is left for the next read.
pub fn read_audit(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn echoed(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not echo JSON ({e}): {body}"))
}

/// Waits until the admin listener at `admin` reports ready.
pub async fn wait_ready(admin: std::net::SocketAddr) {
    for _ in 0..100 {
        if get(&format!("http://{admin}/readyz")).await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("proxy never became ready");
}

/// A stand-in upstream (or provider) on 127.0.0.1 that answers every request
/// with `answer(path and query)`.
pub async fn serve<F>(answer: F) -> std::net::SocketAddr
where
    F: Fn(&str) -> http::Response<Full<Bytes>> + Send + Sync + 'static,
{
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let target = req
                        .uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string();
                    let resp = answer(&target);
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}
