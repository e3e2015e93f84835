//! An echo upstream: answers every request with a JSON description of what it
//! received (method, path, query, headers, body size), and records it so a test can
//! assert on exactly what crossed the proxy. Used by tests and by `portcullis demo`.
//!
//! Special paths:
//! - `/download/N`: streams N bytes without holding them in memory;
//! - `/sleep/MS`: answers after MS milliseconds;
//! - `/status/CODE`: answers with that status;
//! - any request with `Upgrade`: answers 101 and echoes the raw bytes back.

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// What the echo upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query exactly as received.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body_bytes: u64,
}

/// A running echo upstream.
#[derive(Clone)]
pub struct EchoUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

type EchoBody = BoxBody<Bytes, Infallible>;

impl EchoUpstream {
    /// Starts on 127.0.0.1 with an OS-chosen port.
    pub async fn start() -> std::io::Result<EchoUpstream> {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts on a given address.
    pub async fn start_on(addr: &str) -> std::io::Result<EchoUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(req, recorder.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(EchoUpstream {
            addr,
            seen,
            task: Arc::new(task),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Forgets what was seen.
    pub fn clear(&self) {
        if let Ok(mut g) = self.seen.lock() {
            g.clear();
        }
    }

    /// Stops accepting new connections (existing ones end with their requests).
    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn answer(
    mut req: Request<Incoming>,
    recorder: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<EchoBody>, Infallible> {
    let path = req.uri().path().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let method = req.method().to_string();
    let headers = req.headers().clone();

    if headers.contains_key(http::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        record(&recorder, &method, &path_and_query, &headers, 0);
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        if let Some(proto) = headers.get(http::header::UPGRADE) {
            resp.headers_mut()
                .insert(http::header::UPGRADE, proto.clone());
        }
        return Ok(resp);
    }

    // Consume the body frame by frame: an upload of any size costs one frame of memory.
    let mut body = req.into_body();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
            Err(_) => break,
        }
    }
    record(&recorder, &method, &path_and_query, &headers, body_bytes);

    if let Some(n) = path
        .strip_prefix("/download/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        return Ok(Response::new(stream_bytes(n)));
    }
    if let Some(ms) = path
        .strip_prefix("/sleep/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);

    let mut header_map = serde_json::Map::new();
    for (name, value) in &headers {
        let entry = header_map
            .entry(name.as_str().to_string())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(list) = entry {
            list.push(serde_json::Value::String(
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
    let json = serde_json::json!({
        "method": method,
        "path": path,
        "path_and_query": path_and_query,
        "headers": header_map,
        "body_bytes": body_bytes,
    });
    let mut resp = Response::new(full(Bytes::from(json.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn record(
    recorder: &Mutex<Vec<Seen>>,
    method: &str,
    pq: &str,
    headers: &HeaderMap,
    body_bytes: u64,
) {
    if let Ok(mut g) = recorder.lock() {
        g.push(Seen {
            method: method.to_string(),
            path_and_query: pq.to_string(),
            headers: headers.clone(),
            body_bytes,
        });
    }
}

fn full(b: Bytes) -> EchoBody {
    Full::new(b).boxed()
}

/// A body of `n` zero bytes produced 64 KiB at a time.
fn stream_bytes(n: u64) -> EchoBody {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![0u8; CHUNK as usize]);
    let stream = futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(CHUNK);
            Some((
                Ok::<_, Infallible>(Frame::data(chunk.slice(..take as usize))),
                left - take,
            ))
        }
    });
    StreamBody::new(stream).boxed()
}
