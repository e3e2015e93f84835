//! The admin listener: `/healthz`, `/readyz`, `/metrics` (SPEC §2 `admin`),
//! and `POST /sessions/revoke`, which ends login sessions by `sub` or `sid`
//! (cluster-wide when they live in Redis).
//!
//! The listener has no authentication of its own, and manifests often bind it
//! to every interface for the metrics scraper; so revocation, the one action
//! here, answers only the host itself (`kubectl exec` or `port-forward` reach
//! it from 127.0.0.1 or ::1; the rest of 127/8 is not the host's own: Istio's
//! sidecar hands inbound mesh traffic to the app from 127.0.0.6), only JSON
//! bodies, and never a request that carries an `Origin` (a web page in an
//! operator's browser cannot post there).
//!
//! Reachable from the network, the listener must not become a way to use up
//! the process's file descriptors: it speaks HTTP/1.1 only, holds at most
//! [`MAX_CONNECTIONS`], and cuts a connection whose request head has not
//! arrived within [`HEAD_TIMEOUT`], which also ends idle keep-alive ones.

use crate::body::{full, ProxyBody};
use crate::state::Shared;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Connections the admin listener holds at once; past it new ones are closed
/// at once. Probes and a scraper need a handful.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a connection may take to send a request head, and how long an idle
/// keep-alive connection is kept (hyper's header timer runs between requests).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a whole connection lives, so a client that trickles a body or
/// never reads an answer cannot hold a slot for ever.
const MAX_LIFETIME: Duration = Duration::from_secs(300);

/// Serves the admin endpoints until `stop` turns true.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(pair) => pair,
                Err(_) => {
                    // Out of descriptors, say: do not spin on the error.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| answer(req, peer, shared.clone()));
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(MAX_LIFETIME, conn).await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
    shared: Arc<Shared>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => readiness(&shared),
        "/sessions/revoke" => revoke(req, peer, &shared).await,
        "/metrics" => {
            let login = shared.runtime.load().login.clone();
            if let Some(login) = login {
                // A store that cannot answer leaves the last figure.
                if let Ok(held) = login.store.held().await {
                    shared
                        .metrics
                        .sessions
                        .set(i64::try_from(held).unwrap_or(i64::MAX));
                }
            }
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                shared.metrics.render(),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut resp = Response::new(full(body));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
    }
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

/// `POST /sessions/revoke` with a JSON object naming `sub` or `sid` (or both:
/// then both must match): ends every matching session of the login provider.
/// Answers `{"revoked": N}`.
async fn revoke(
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
    shared: &Shared,
) -> (StatusCode, &'static str, String) {
    let error = |status: StatusCode, code: &str, message: &str| {
        let body = serde_json::json!({"error": code, "message": message});
        (status, "application/json", body.to_string())
    };
    if req.method() != http::Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "bad_request", "use POST");
    }
    if !is_the_host_itself(peer.ip()) || req.headers().contains_key(http::header::ORIGIN) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "sessions are revoked from the host itself (loopback), not from a browser",
        );
    }
    let Some(login) = shared.runtime.load().login.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "no_route",
            "browser login is not configured",
        );
    };
    let json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_request",
            "send a JSON object (Content-Type: application/json)",
        );
    }
    let Ok(body) = crate::endpoints::read_form(req.into_body()).await else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body is too large or incomplete",
        );
    };
    let Some((sub, sid)) = revocation(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "give `sub` or `sid` as strings",
        );
    };
    match login
        .store
        .remove_matching(&login.provider, sid.as_deref(), sub.as_deref())
        .await
    {
        Ok(n) => {
            tracing::info!(
                sub = sub.as_deref(),
                sid = sid.as_deref(),
                sessions = n,
                "sessions revoked"
            );
            (
                StatusCode::OK,
                "application/json",
                serde_json::json!({"revoked": n}).to_string(),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e.0, "cannot revoke sessions");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                "the session store is unavailable",
            )
        }
    }
}

/// The `sub` and `sid` a revocation's JSON names; `None` unless at least one
/// is a non-empty string (and neither is anything but a string or null).
fn revocation(body: &[u8]) -> Option<(Option<String>, Option<String>)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let field = |name: &str| match v.get(name) {
        None | Some(serde_json::Value::Null) => Some(None),
        Some(serde_json::Value::String(s)) => Some(Some(s.clone()).filter(|s| !s.is_empty())),
        Some(_) => None,
    };
    let (sub, sid) = (field("sub")?, field("sid")?);
    (sub.is_some() || sid.is_some()).then_some((sub, sid))
}

/// Ready once every provider's keys have loaded at least once (the config is valid by
/// construction: an invalid one never becomes the runtime).
fn readiness(shared: &Shared) -> (StatusCode, &'static str, String) {
    let rt = shared.runtime.load();
    let missing: Vec<serde_json::Value> = rt
        .auth
        .readiness()
        .into_iter()
        .filter(|p| !p.ready)
        .map(|p| serde_json::json!({"provider": p.name, "detail": p.detail}))
        .collect();
    if missing.is_empty() {
        (
            StatusCode::OK,
            "application/json",
            serde_json::json!({"ready": true}).to_string(),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            serde_json::json!({"ready": false, "missing": missing}).to_string(),
        )
    }
}

/// 127.0.0.1 or ::1 (also as `::ffff:127.0.0.1`): the host itself, not the
/// rest of 127/8, which sidecars use to relay traffic from the network.
fn is_the_host_itself(ip: std::net::IpAddr) -> bool {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
        std::net::IpAddr::V6(v6) => v6 == std::net::Ipv6Addr::LOCALHOST,
    }
}

#[cfg(test)]
mod tests {
    use super::revocation;

    fn some(sub: Option<&str>, sid: Option<&str>) -> Option<(Option<String>, Option<String>)> {
        Some((sub.map(str::to_string), sid.map(str::to_string)))
    }

    #[test]
    fn a_revocation_names_a_sub_or_a_sid() {
        assert_eq!(revocation(br#"{"sub":"alice"}"#), some(Some("alice"), None));
        assert_eq!(
            revocation(br#"{"sub":"alice","sid":"s1"}"#),
            some(Some("alice"), Some("s1"))
        );
        assert_eq!(
            revocation(br#"{"sid":"s1","sub":null}"#),
            some(None, Some("s1"))
        );
        // Nothing to match is refused, never "revoke everything".
        for body in [
            &b"{}"[..],
            br#"{"sub":""}"#,
            br#"{"sub":null}"#,
            br#"{"sub":42}"#,
            br#"{"sub":"alice","sid":7}"#,
            br#"["alice"]"#,
            b"{not json",
            b"sub=alice",
            b"",
        ] {
            assert_eq!(revocation(body), None, "{}", String::from_utf8_lossy(body));
        }
    }
}
