//! OAuth 2.0 Protected Resource Metadata (RFC 9728) for MCP routes (SPEC §10):
//! `GET /.well-known/oauth-protected-resource<route path>` names the resource
//! (`{public_url}<route path>`) and the authorization servers whose tokens the
//! proxy accepts, so that an MCP client that got a 401 knows where to get a
//! token and for which audience (RFC 8707 `resource`).
//!
//! A route's path is its `match.path`, else its `match.path_prefix`; a route
//! matched by `path_regex` has none and gets no document (`check` warns).

use crate::body::{full, ProxyBody};
use crate::respond::Refusal;
use crate::runtime::Runtime;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Response};
use portcullis_config::RouteConfig;
use portcullis_core::Reason;

/// The RFC 9728 well-known prefix.
pub const PREFIX: &str = "/.well-known/oauth-protected-resource";

/// The path an MCP route is the resource of (without a trailing `/`).
fn route_path(route: &RouteConfig) -> Option<&str> {
    route.mcp.as_ref()?;
    let path = route
        .matcher
        .path
        .as_deref()
        .or(route.matcher.path_prefix.as_deref())?;
    Some(path.trim_end_matches('/'))
}

/// The MCP route whose metadata document `matching` (a normalized path in its
/// matching form) names.
pub fn lookup(rt: &Runtime, matching: &str) -> Option<usize> {
    let head = matching.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let rest = &matching[PREFIX.len()..];
    let case_sensitive = rt.config.server.case_sensitive_paths;
    rt.config.routes.iter().position(|r| {
        route_path(r).is_some_and(|p| {
            if case_sensitive {
                p == rest
            } else {
                p.eq_ignore_ascii_case(rest)
            }
        })
    })
}

fn base(rt: &Runtime) -> &str {
    rt.public_url.trim_end_matches('/')
}

/// The metadata URL of route `index`, when it is an MCP route with a path: what
/// its 401 challenges name as `resource_metadata`.
pub fn url_for(rt: &Runtime, index: usize) -> Option<String> {
    let path = route_path(rt.config.routes.get(index)?)?;
    Some(format!("{}{PREFIX}{path}", base(rt)))
}

/// The document for route `index`.
pub fn serve(method: &Method, rt: &Runtime, index: usize) -> Result<Response<ProxyBody>, Refusal> {
    if method != Method::GET && method != Method::HEAD {
        return Err(Refusal::with_message(
            Reason::BadRequest,
            "only GET is supported here",
        ));
    }
    let path = rt
        .config
        .routes
        .get(index)
        .and_then(route_path)
        .ok_or_else(|| Refusal::new(Reason::NoRoute))?;
    let mut issuers: Vec<&str> = Vec::new();
    for p in &rt.config.providers {
        if !issuers.contains(&p.issuer.as_str()) {
            issuers.push(&p.issuer);
        }
    }
    let doc = serde_json::json!({
        "resource": format!("{}{path}", base(rt)),
        "authorization_servers": issuers,
        "bearer_methods_supported": ["header"],
    });
    let mut resp = Response::new(full(doc.to_string()));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(resp)
}
