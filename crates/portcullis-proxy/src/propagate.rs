//! Handing the verified identity to the upstream (SPEC §3): clean `X-Auth-Request-*`
//! headers and a short-lived assertion signed by the proxy. Runs after the spoofable
//! copies were stripped, so whatever the upstream reads here, the proxy vouches for.

use crate::forward::upstreams::UpstreamPool;
use crate::runtime::Runtime;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use portcullis_config::RouteConfig;
use portcullis_core::Identity;

/// Sets the identity headers and the assertion for an authenticated caller; does
/// nothing for an anonymous one.
pub fn identity_headers(
    headers: &mut HeaderMap,
    identity: &Identity,
    rt: &Runtime,
    route: &RouteConfig,
    pool: &UpstreamPool,
) -> Result<(), String> {
    if !identity.is_authenticated() {
        return Ok(());
    }
    let mut set = |name: &'static str, value: &str| {
        // A claim with a control character cannot become a header; it is left out
        // rather than sanitized into something the IdP never said.
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    if !identity.subject.is_empty() {
        set("x-auth-request-user", &identity.subject);
    }
    if let Some(email) = &identity.email {
        set("x-auth-request-email", email);
    }
    if !identity.groups.is_empty() {
        set("x-auth-request-groups", &identity.groups.join(","));
    }
    if let Some(client) = &identity.client_id {
        set("x-auth-request-client-id", client);
    }
    if let Some(workload) = &identity.workload {
        set("x-portcullis-workload", workload);
    }
    let audience = route
        .audience
        .clone()
        .or_else(|| pool.endpoints.first().map(|e| e.origin.clone()))
        .unwrap_or_default();
    let assertion = rt
        .signer
        .sign(identity, &rt.public_url, &audience)
        .map_err(|e| e.to_string())?;
    let name = HeaderName::from_bytes(rt.config.assertion.header.as_bytes())
        .map_err(|e| format!("invalid assertion header name: {e}"))?;
    let value = HeaderValue::from_str(&assertion).map_err(|e| e.to_string())?;
    headers.insert(name, value);
    Ok(())
}
