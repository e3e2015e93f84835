//! Handing the verified identity to the upstream (SPEC §3): clean `X-Auth-Request-*`
//! headers and a short-lived assertion signed by the proxy. Runs after the spoofable
//! copies were stripped, so whatever the upstream reads here, the proxy vouches for.

use crate::forward::headers::names;
use crate::forward::upstreams::UpstreamPool;
use crate::runtime::Runtime;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use portcullis_config::RouteConfig;
use portcullis_core::Identity;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

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
    let mut set = |name: HeaderName, value: &str| {
        // A claim with a control character cannot become a header; it is left out
        // rather than sanitized into something the IdP never said.
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    if !identity.subject.is_empty() {
        set(names::X_AUTH_REQUEST_USER, &identity.subject);
    }
    if let Some(email) = &identity.email {
        set(names::X_AUTH_REQUEST_EMAIL, email);
    }
    if !identity.groups.is_empty() {
        set(names::X_AUTH_REQUEST_GROUPS, &identity.groups.join(","));
    }
    if let Some(client) = &identity.client_id {
        set(names::X_AUTH_REQUEST_CLIENT_ID, client);
    }
    if let Some(workload) = &identity.workload {
        set(names::X_PORTCULLIS_WORKLOAD, workload);
    }
    let audience = match &route.audience {
        Some(aud) => aud.as_str(),
        None => pool.endpoints.first().map_or("", |e| e.origin.as_str()),
    };
    let assertion = rt.assertions.get_or_sign(identity, audience, || {
        rt.signer
            .sign(identity, &rt.public_url, audience)
            .map_err(|e| e.to_string())
    })?;
    headers.insert(rt.assertion_header.clone(), assertion);
    Ok(())
}

/// Entries kept before the cache is emptied: bounds memory under many callers.
const MAX_ENTRIES: usize = 10_000;

/// Assertions reused for the same caller and audience while at least half of their
/// lifetime remains. Signing (an ECDSA signature per request) dominated the
/// full-path benchmark profile; a caller repeating calls gets one assertion per half
/// `ttl` instead. Every reused assertion still has at least `ttl / 2` to live.
#[derive(Default)]
pub struct AssertionCache {
    entries: Mutex<HashMap<String, Cached>>,
}

struct Cached {
    value: HeaderValue,
    reuse_until: u64,
}

impl AssertionCache {
    /// The cached assertion for `identity` and `audience`, or a new one from `sign`.
    pub fn get_or_sign(
        &self,
        identity: &Identity,
        audience: &str,
        sign: impl FnOnce() -> Result<String, String>,
    ) -> Result<HeaderValue, String> {
        let key = cache_key(identity, audience);
        let now = now_unix();
        if let Ok(entries) = self.entries.lock() {
            if let Some(hit) = entries.get(&key).filter(|c| now < c.reuse_until) {
                return Ok(hit.value.clone());
            }
        }
        let token = sign()?;
        let exp = jwt_exp(&token).unwrap_or(now);
        let value = HeaderValue::from_str(&token).map_err(|e| e.to_string())?;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(
                key,
                Cached {
                    value: value.clone(),
                    reuse_until: now + exp.saturating_sub(now) / 2,
                },
            );
        }
        Ok(value)
    }
}

/// Everything the assertion says about the caller, length-prefixed so that no two
/// different identities can produce the same key.
fn cache_key(identity: &Identity, audience: &str) -> String {
    use std::fmt::Write as _;
    // Writing into a String cannot fail.
    fn add(key: &mut String, part: &str) {
        let _ = write!(key, "{}:{part}", part.len());
    }
    let mut key = String::with_capacity(256);
    add(&mut key, audience);
    add(&mut key, &identity.subject);
    for part in [
        &identity.issuer,
        &identity.email,
        &identity.client_id,
        &identity.workload,
    ] {
        add(&mut key, part.as_deref().unwrap_or("\u{0}"));
    }
    for list in [&identity.groups, &identity.roles, &identity.scopes] {
        let _ = write!(key, "#{}", list.len());
        for item in list {
            add(&mut key, item);
        }
    }
    let _ = write!(key, "@{}", identity.expires_at.unwrap_or(0));
    key
}

/// The `exp` of a JWT the proxy itself just signed.
fn jwt_exp(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_with_exp(exp: u64) -> String {
        use base64::Engine as _;
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.sig",
            b64(serde_json::json!({"alg": "ES256"})),
            b64(serde_json::json!({"exp": exp}))
        )
    }

    #[test]
    fn reuses_for_the_same_caller_only() {
        let cache = AssertionCache::default();
        let alice = Identity {
            subject: "alice".into(),
            groups: vec!["admins".into()],
            ..Identity::default()
        };
        let mut signed = 0;
        let mut sign = || {
            signed += 1;
            Ok(token_with_exp(now_unix() + 60))
        };
        let a = cache.get_or_sign(&alice, "aud", &mut sign).unwrap();
        let b = cache.get_or_sign(&alice, "aud", &mut sign).unwrap();
        assert_eq!(a, b);
        // Another audience, another group set, or a group moved into the subject:
        // each is a different caller for the assertion.
        let _ = cache.get_or_sign(&alice, "other", &mut sign).unwrap();
        let more = Identity {
            groups: vec!["admins".into(), "dev".into()],
            ..alice.clone()
        };
        let _ = cache.get_or_sign(&more, "aud", &mut sign).unwrap();
        let shifted = Identity {
            subject: "aliceadmins".into(),
            groups: vec![],
            ..Identity::default()
        };
        let _ = cache.get_or_sign(&shifted, "aud", &mut sign).unwrap();
        assert_eq!(signed, 4);
    }

    #[test]
    fn an_assertion_past_half_its_life_is_not_reused() {
        let cache = AssertionCache::default();
        let who = Identity {
            subject: "bob".into(),
            ..Identity::default()
        };
        let mut signed = 0;
        let mut sign = || {
            signed += 1;
            // Expires in 1 s: half its life is already "now".
            Ok(token_with_exp(now_unix() + 1))
        };
        let _ = cache.get_or_sign(&who, "aud", &mut sign).unwrap();
        let _ = cache.get_or_sign(&who, "aud", &mut sign).unwrap();
        assert_eq!(signed, 2);
    }
}
