//! Forwarding a request to its upstream and streaming the answer back: bodies are
//! never buffered, connections are pooled, failures become 502/504, idempotent
//! requests without a body are retried, and `Upgrade` (WebSocket) is tunnelled.

pub mod client;
pub mod headers;
mod idle;
pub mod upstreams;

use crate::body::{boxed, empty, Holding, ProxyBody};
use crate::respond::Refusal;
use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use portcullis_core::error_chain;
use portcullis_core::Reason;
use portcullis_policy::NormalizedPath;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use upstreams::{Endpoint, UpstreamPool};

/// Sends `req` to one of the pool's endpoints, with the already-normalized `path`.
/// `upgrade` is the protocol the client asked to switch to, already checked against
/// the route's `upgrades` (its hop-by-hop headers were removed by the pipeline).
/// The headers are sent as the pipeline left them (`Host` included); the body
/// comes with its trailers already dropped ([`crate::body::without_trailers`]).
pub async fn forward(
    mut req: Request<ProxyBody>,
    upgrade: Option<HeaderValue>,
    pool: &UpstreamPool,
    path: &NormalizedPath,
    timeout: Duration,
    retries: u32,
) -> Result<Response<ProxyBody>, Refusal> {
    // Upgrade tunnels need the client side's upgrade handle before the request moves.
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    if let Some(proto) = &upgrade {
        req.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        req.headers_mut().insert(UPGRADE, proto.clone());
    }
    let query = req.uri().query().map(str::to_string);
    let (mut parts, body) = req.into_parts();
    if parts.version == Version::HTTP_2 {
        headers::join_cookies(&mut parts.headers);
    }
    parts.version = Version::HTTP_11;
    let replayable = body.is_end_stream() && is_idempotent(&parts.method) && upgrade.is_none();
    // hyper reports a request body that broke off on the way (the client
    // closed early, or sent a malformed chunk) as a failed request: noted
    // here, so that it is never counted against the upstream, or any caller
    // could get healthy endpoints ejected at will.
    let body_broke = Arc::new(AtomicBool::new(false));
    let body = if body.is_end_stream() {
        body
    } else {
        let broke = Arc::clone(&body_broke);
        body.map_err(move |e| {
            broke.store(true, Ordering::Relaxed);
            e
        })
        .boxed_unsync()
    };
    let mut body = Some(body);
    let attempts = if replayable { retries + 1 } else { 1 };

    let mut last_refusal = Refusal::new(Reason::UpstreamUnavailable);
    for attempt in 0..attempts {
        let Some(endpoint) = pool.pick() else { break };
        let uri = upstream_target(endpoint, path, query.as_deref())
            .map_err(|e| Refusal::with_message(Reason::BadRequest, e))?;
        let mut builder = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .version(parts.version);
        if let Some(h) = builder.headers_mut() {
            // Only a request that may be retried keeps a copy of its headers.
            *h = if attempt + 1 < attempts {
                parts.headers.clone()
            } else {
                std::mem::take(&mut parts.headers)
            };
        }
        let body = body.take().unwrap_or_else(empty);
        let upstream_req = builder
            .body(body)
            .map_err(|e| Refusal::with_message(Reason::BadRequest, e.to_string()))?;
        match tokio::time::timeout(timeout, pool.client.send(endpoint, upstream_req)).await {
            Err(_) => {
                // A timed-out upstream may be slow rather than down: no ejection, no retry
                // (the request may have been acted upon).
                return Err(Refusal::new(Reason::UpstreamTimeout));
            }
            Ok(Err(e)) if body_broke.load(Ordering::Relaxed) => {
                tracing::debug!(upstream = %endpoint.origin, error = %error_chain(&e), "request body failed on its way to the upstream");
                return Err(Refusal::with_message(
                    Reason::BadRequest,
                    "the request body ended before it was complete",
                ));
            }
            Ok(Err(e)) => {
                pool.report(endpoint, false);
                tracing::warn!(upstream = %endpoint.origin, error = %error_chain(&e), attempt, "upstream request failed");
                last_refusal = Refusal::new(Reason::UpstreamUnavailable);
            }
            Ok(Ok(resp)) => {
                let status = resp.0.status();
                let unhealthy = matches!(
                    status,
                    StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
                );
                pool.report(endpoint, !unhealthy);
                if unhealthy && attempt + 1 < attempts {
                    continue;
                }
                if status == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_none() {
                    // No upgrade was asked for (or allowed, or possible over
                    // h2, where a 101 is a protocol error): there is no
                    // tunnel to open, and the client must not be told there is.
                    tracing::warn!(upstream = %endpoint.origin, "the upstream switched protocols though no upgrade was asked for");
                    return Err(Refusal::with_message(
                        Reason::UpstreamUnavailable,
                        "the upstream switched protocols unasked",
                    ));
                }
                return Ok(into_client_response(resp, client_upgrade, pool));
            }
        }
    }
    Err(last_refusal)
}

/// `GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`, `TRACE` (RFC 9110 §9.2.2).
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The request target in origin form: the endpoint's base path, the
/// normalized path, the query as the client sent it.
fn upstream_target(
    endpoint: &Endpoint,
    path: &NormalizedPath,
    query: Option<&str>,
) -> Result<Uri, String> {
    let mut pq = String::with_capacity(endpoint.base_path.len() + path.as_str().len() + 1);
    pq.push_str(&endpoint.base_path);
    pq.push_str(path.as_str());
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    PathAndQuery::from_maybe_shared(Bytes::from(pq))
        .map(Uri::from)
        .map_err(|e| format!("cannot build upstream URI: {e}"))
}

/// Prepares the upstream's response for the client: hop-by-hop headers removed,
/// no `Set-Cookie` of the proxy's own login cookies, and for `101 Switching
/// Protocols` a tunnel spliced between the two upgraded streams.
fn into_client_response(
    (mut resp, slot): client::UpstreamResponse,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    pool: &UpstreamPool,
) -> Response<ProxyBody> {
    if let Some(name) = &pool.login_cookie {
        headers::drop_our_set_cookies(resp.headers_mut(), name);
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_side) = client_upgrade {
            let upstream_side = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client_side, upstream_side) {
                    Ok((client, upstream)) => {
                        let mut client = hyper_util::rt::TokioIo::new(client);
                        let mut upstream = hyper_util::rt::TokioIo::new(upstream);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
            let proto = resp.headers().get(UPGRADE).cloned();
            headers::strip_hop_by_hop(resp.headers_mut());
            if let Some(proto) = proto {
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("upgrade"));
                resp.headers_mut().insert(UPGRADE, proto);
            }
            return resp.map(|_| empty());
        }
    }
    // Chunked framing overrides a `Content-Length` beside it (RFC 9112 §6.3),
    // and an intermediary removes the length: passed on, it would frame the
    // re-sent body wrongly for the client.
    if resp.headers().contains_key(TRANSFER_ENCODING) {
        resp.headers_mut().remove(CONTENT_LENGTH);
    }
    headers::strip_hop_by_hop(resp.headers_mut());
    match slot {
        Some(slot) => resp.map(|body| boxed(Holding::new(body, slot))),
        None => resp.map(boxed),
    }
}
