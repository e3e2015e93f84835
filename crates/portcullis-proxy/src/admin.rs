//! The admin listener: `/healthz`, `/readyz`, `/metrics` (SPEC §2 `admin`),
//! and `POST /sessions/revoke`, which ends login sessions by `sub` or `sid`
//! (cluster-wide when they live in Redis). The listener is for operators
//! (loopback by default): it has no authentication of its own.

use crate::body::{full, ProxyBody};
use crate::state::Shared;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves the admin endpoints until `stop` turns true.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let (tcp, _) = tokio::select! {
            res = listener.accept() => match res {
                Ok(pair) => pair,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, shared.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => readiness(&shared),
        "/sessions/revoke" => revoke(req, &shared).await,
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

/// `POST /sessions/revoke` with `sub` or `sid` (or both: then both must
/// match), as a JSON object or a form: ends every matching session of the
/// login provider. Answers `{"revoked": N}`.
async fn revoke(req: Request<Incoming>, shared: &Shared) -> (StatusCode, &'static str, String) {
    let error = |status: StatusCode, code: &str, message: &str| {
        let body = serde_json::json!({"error": code, "message": message});
        (status, "application/json", body.to_string())
    };
    if req.method() != http::Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "bad_request", "use POST");
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
        .is_some_and(|v| v.starts_with("application/json"));
    let Ok(body) = crate::endpoints::read_form(req.into_body()).await else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body is too large or incomplete",
        );
    };
    let Some((sub, sid)) = revocation(&body, json) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "give `sub` or `sid`, as JSON or a form",
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

/// The `sub` and `sid` a revocation names; `None` unless at least one is a
/// non-empty string.
fn revocation(body: &[u8], json: bool) -> Option<(Option<String>, Option<String>)> {
    let (sub, sid) = if json {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let field = |name: &str| match v.get(name) {
            None | Some(serde_json::Value::Null) => Some(None),
            Some(serde_json::Value::String(s)) => Some(Some(s.clone())),
            Some(_) => None,
        };
        (field("sub")?, field("sid")?)
    } else {
        let form = std::str::from_utf8(body).ok()?;
        let field = |name| crate::login::flow::form_value(form, name);
        (field("sub"), field("sid"))
    };
    let (sub, sid) = (sub.filter(|s| !s.is_empty()), sid.filter(|s| !s.is_empty()));
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

#[cfg(test)]
mod tests {
    use super::revocation;

    fn some(sub: Option<&str>, sid: Option<&str>) -> Option<(Option<String>, Option<String>)> {
        Some((sub.map(str::to_string), sid.map(str::to_string)))
    }

    #[test]
    fn a_revocation_names_a_sub_or_a_sid_as_json_or_a_form() {
        assert_eq!(
            revocation(br#"{"sub":"alice"}"#, true),
            some(Some("alice"), None)
        );
        assert_eq!(
            revocation(br#"{"sub":"alice","sid":"s1"}"#, true),
            some(Some("alice"), Some("s1"))
        );
        assert_eq!(revocation(b"sid=s%201", false), some(None, Some("s 1")));
        // Nothing to match is refused, never "revoke everything".
        for (body, json) in [
            (&b"{}"[..], true),
            (br#"{"sub":""}"#, true),
            (br#"{"sub":null}"#, true),
            (br#"{"sub":42}"#, true),
            (br#"["alice"]"#, true),
            (b"{not json", true),
            (b"", false),
            (b"sub=", false),
            (b"sub=%zz", false),
        ] {
            assert_eq!(
                revocation(body, json),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
