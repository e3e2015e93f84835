//! Handing the verified identity to the upstream (SPEC §3): clean `X-Auth-Request-*`
//! headers and a short-lived assertion signed by the proxy. Runs after the spoofable
//! copies were stripped, so whatever the upstream reads here, the proxy vouches for.

use crate::forward::headers::names;
use crate::runtime::Runtime;
use http::header::{HeaderName, HeaderValue};
use portcullis_core::Identity;
use portcullis_identity::KeyedHash;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// What one caller's requests carry upstream: the identity headers and the
/// assertion, built once per caller and audience and reused with the assertion.
pub type Propagated = Arc<[(HeaderName, HeaderValue)]>;

/// The identity headers and the assertion for an authenticated caller, with
/// `audience` as the assertion's `aud`; nothing for an anonymous one. Built once
/// per caller and audience and reused while the assertion is fresh.
pub fn identity_set(
    identity: &Identity,
    rt: &Runtime,
    audience: &str,
) -> Result<Propagated, String> {
    if !identity.is_authenticated() {
        return Ok(Arc::from(Vec::new()));
    }
    rt.assertions.get_or_sign(identity, audience, || {
        let signed = rt
            .signer
            .sign(identity, &rt.public_url, audience)
            .map_err(|e| e.to_string())?;
        let assertion = HeaderValue::from_str(&signed.token).map_err(|e| e.to_string())?;
        let mut set = identity_values(identity);
        set.push((rt.assertion_header.clone(), assertion));
        Ok((set.into(), signed.expires_at))
    })
}

/// The `X-Auth-Request-*` headers (SPEC §3) for `identity`.
fn identity_values(identity: &Identity) -> Vec<(HeaderName, HeaderValue)> {
    let mut set = Vec::with_capacity(6);
    let mut add = |name: HeaderName, value: &str| {
        // A claim with a control character cannot become a header; it is left out
        // rather than sanitized into something the IdP never said.
        if let Ok(v) = HeaderValue::from_str(value) {
            set.push((name, v));
        }
    };
    if !identity.subject.is_empty() {
        add(names::X_AUTH_REQUEST_USER, &identity.subject);
    }
    if let Some(email) = &identity.email {
        add(names::X_AUTH_REQUEST_EMAIL, email);
    }
    // A group whose name holds a comma would read as two groups (`users,admins`
    // as `users` and `admins`), so it is left out here; the assertion carries the
    // exact array and is authoritative (SPEC §5).
    let groups: Vec<&str> = identity
        .groups
        .iter()
        .map(String::as_str)
        .filter(|g| !g.contains(','))
        .collect();
    if !groups.is_empty() {
        add(names::X_AUTH_REQUEST_GROUPS, &groups.join(","));
    }
    if let Some(client) = &identity.client_id {
        add(names::X_AUTH_REQUEST_CLIENT_ID, client);
    }
    if let Some(workload) = &identity.workload {
        add(names::X_PORTCULLIS_WORKLOAD, workload);
    }
    set
}

/// Entries kept before the cache is emptied: bounds memory under many callers.
const MAX_ENTRIES: usize = 10_000;

/// Assertions (with the identity headers built beside them) reused for the same
/// caller and audience while at least half of their lifetime remains. Signing (an
/// ECDSA signature per request) dominated the full-path benchmark profile; a caller
/// repeating calls gets one assertion per half `ttl` instead. Every reused
/// assertion still has at least `ttl / 2` to live. One cache per config load, so a
/// changed `assertion.header` or key never serves stale entries.
#[derive(Default)]
pub struct AssertionCache {
    entries: Mutex<HashMap<u128, Cached>>,
}

struct Cached {
    value: Propagated,
    reuse_until: u64,
}

impl AssertionCache {
    /// The cached headers for `identity` and `audience`, or new ones from `sign`
    /// (which also returns the assertion's `exp`).
    pub fn get_or_sign(
        &self,
        identity: &Identity,
        audience: &str,
        sign: impl FnOnce() -> Result<(Propagated, u64), String>,
    ) -> Result<Propagated, String> {
        let key = cache_key(identity, audience);
        let now = now_unix();
        if let Ok(entries) = self.entries.lock() {
            if let Some(hit) = entries.get(&key).filter(|c| now < c.reuse_until) {
                return Ok(hit.value.clone());
            }
        }
        let (value, exp) = sign()?;
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

/// Everything the assertion says about the caller, under the identity crate's
/// keyed 128-bit hash: parts are length-prefixed, so no two different identities
/// share a key, and nobody without the process secret can make them collide.
fn cache_key(identity: &Identity, audience: &str) -> u128 {
    let mut key = KeyedHash::new();
    key.part(audience.as_bytes());
    key.part(identity.subject.as_bytes());
    for part in [
        &identity.issuer,
        &identity.email,
        &identity.client_id,
        &identity.workload,
    ] {
        match part {
            Some(p) => key.part(p.as_bytes()),
            // Absent differs from empty.
            None => key.number(u64::MAX),
        }
    }
    for list in [&identity.groups, &identity.roles, &identity.scopes] {
        key.number(list.len() as u64);
        for item in list {
            key.part(item.as_bytes());
        }
    }
    key.number(identity.expires_at.unwrap_or(0));
    key.finish()
}

/// The `exp` of a JWT the proxy itself just signed.
fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_with_exp(exp: u64) -> (Propagated, u64) {
        let value = HeaderValue::from_str(&format!("header.{exp}.sig")).unwrap();
        (vec![(names::X_AUTH_REQUEST_USER, value)].into(), exp)
    }

    #[test]
    fn a_group_with_a_comma_cannot_split_into_two() {
        let mut id = Identity::anonymous();
        id.subject = "alice".to_string();
        id.groups = vec!["users,admins".to_string(), "devs".to_string()];
        let set = identity_values(&id);
        let groups = set
            .iter()
            .find(|(n, _)| *n == names::X_AUTH_REQUEST_GROUPS)
            .map(|(_, v)| v.to_str().unwrap().to_string());
        assert_eq!(groups.as_deref(), Some("devs"));
        id.groups = vec!["a,b".to_string()];
        assert!(identity_values(&id)
            .iter()
            .all(|(n, _)| *n != names::X_AUTH_REQUEST_GROUPS));
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
