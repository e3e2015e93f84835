//! The admin listener: `/healthz`, `/readyz`, `/metrics` (SPEC §2 `admin`).

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
        "/metrics" => {
            if let Some(login) = &shared.runtime.load().login {
                let held = i64::try_from(login.store.held()).unwrap_or(i64::MAX);
                shared.metrics.sessions.set(held);
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
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
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
