//! `routes[].upstream_auth` (SPEC §9): the upstream receives the proxy's own
//! client-credentials token for the route's credential, never the caller's.
//!
//! Runs after policy and rate limits (a caller the policy refuses never causes a
//! token fetch) and before forwarding. The caller's `Authorization` is removed
//! first — every copy of it, whatever `forward_token` says — so it can never
//! reach the partner, not even when no token can be had: then the request ends
//! with 502 `credential_unavailable` and nothing is forwarded.

use crate::respond::Refusal;
use crate::runtime::Runtime;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use portcullis_config::RouteConfig;
use portcullis_core::Reason;

/// Replaces the request's `Authorization` with the route's outbound token. A
/// route without `upstream_auth` is left alone.
pub async fn attach(
    headers: &mut HeaderMap,
    route: &RouteConfig,
    rt: &Runtime,
) -> Result<(), Refusal> {
    let Some(auth) = &route.upstream_auth else {
        return Ok(());
    };
    headers.remove(AUTHORIZATION);
    let credential = rt.credentials.get(&auth.credential).ok_or_else(|| {
        // Config validation and Runtime::build both refuse an unknown name.
        Refusal::with_message(Reason::CredentialUnavailable, "unknown credential")
    })?;
    match credential.authorization().await {
        Ok(value) => {
            headers.insert(AUTHORIZATION, value);
            Ok(())
        }
        // The cause (endpoint, HTTP status, OAuth error code) was logged where it
        // happened; the caller learns only that the upstream's credential is missing.
        Err(_) => Err(Refusal::new(Reason::CredentialUnavailable)),
    }
}

/// The credential named by `route`, for the audit line (its name, never a token).
pub fn credential_name(route: Option<&RouteConfig>) -> Option<String> {
    route?.upstream_auth.as_ref().map(|a| a.credential.clone())
}
