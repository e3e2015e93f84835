//! Handing the verified identity to the upstream (SPEC §3): clean `X-Auth-Request-*`
//! headers and a short-lived assertion signed by the proxy. Runs after the spoofable
//! copies were stripped, so whatever the upstream reads here, the proxy vouches for.

use crate::forward::headers::names;
use crate::runtime::Runtime;
use http::header::{HeaderName, HeaderValue};
use portcullis_core::Identity;
use portcullis_identity::{KeyedHash, PrfKeyHasher};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

/// What one caller's requests carry upstream: the identity headers and the
/// assertion, built once per caller and audience and reused with the assertion.
pub type Propagated = Arc<[(HeaderName, HeaderValue)]>;

/// The identity headers and the assertion for an authenticated caller, with
/// `audience` as the assertion's `aud`; nothing for an anonymous one. Built once
/// per caller and audience and reused while the assertion is fresh.
pub fn identity_set(
    identity: &Arc<Identity>,
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
        // A claim with a control character cannot become a header, and one
        // with a space or tab at either end would be read without it by every
        // header parser (` alice` as `alice`, a name the policy never judged):
        // it is left out rather than sanitized into something the IdP never said.
        if has_outer_whitespace(value) {
            return;
        }
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
    // as `users` and `admins`), and one with whitespace at an end as the name
    // without it (` admins` as `admins`, after splitting on commas); such a
    // group is left out here. The assertion carries the exact array and is
    // authoritative (SPEC §5).
    let groups: Vec<&str> = identity
        .groups
        .iter()
        .map(String::as_str)
        .filter(|g| !g.is_empty() && !g.contains(',') && !has_outer_whitespace(g))
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

/// Whether `value` starts or ends with a space or tab (HTTP's optional whitespace).
fn has_outer_whitespace(value: &str) -> bool {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    value.as_bytes().first().is_some_and(ows) || value.as_bytes().last().is_some_and(ows)
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
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// By [`cache_key`]: everything the assertion says.
    by_key: HashMap<u128, Cached, BuildHasherDefault<PrfKeyHasher>>,
    /// The keys already computed for shared identities, by the identity's address.
    known: HashMap<usize, KnownCaller>,
}

struct Cached {
    value: Propagated,
    reuse_until: u64,
}

/// The [`cache_key`]s of one shared `Arc<Identity>`. The token cache hands the
/// same `Arc` to every request with the same token, so hashing everything the
/// identity says (the largest cost of propagating, ~1,400 instructions) is done
/// once per token and audience, not once per request.
///
/// Why an address can stand for the identity: the `Weak` keeps the allocation,
/// so no other identity can be given this address while the entry lives, and an
/// `Arc` with a `Weak` to it is never changed in place (`Arc::make_mut` moves the
/// value to a new allocation, `Arc::get_mut` refuses).
struct KnownCaller {
    identity: Weak<Identity>,
    keys: Vec<(Box<str>, u128)>,
}

impl KnownCaller {
    fn key_for(&self, audience: &str) -> Option<u128> {
        self.keys
            .iter()
            .find(|(aud, _)| **aud == *audience)
            .map(|(_, key)| *key)
    }
}

/// Audiences remembered per caller: a caller reaches a handful of services.
const MAX_AUDIENCES: usize = 8;

impl AssertionCache {
    /// The cached headers for `identity` and `audience`, or new ones from `sign`
    /// (which also returns the assertion's `exp`).
    pub fn get_or_sign(
        &self,
        identity: &Arc<Identity>,
        audience: &str,
        sign: impl FnOnce() -> Result<(Propagated, u64), String>,
    ) -> Result<Propagated, String> {
        let now = now_unix();
        // The common case, a shared identity seen before, takes the lock once.
        let mut known = None;
        if let Ok(entries) = self.entries.lock() {
            known = entries.known_key(identity, audience);
            if let Some(hit) = known.and_then(|key| entries.fresh(key, now)) {
                return Ok(hit);
            }
        }
        let key = match known {
            Some(key) => key,
            None => {
                let key = cache_key(identity, audience);
                if let Ok(mut entries) = self.entries.lock() {
                    entries.remember(identity, audience, key);
                    if let Some(hit) = entries.fresh(key, now) {
                        return Ok(hit);
                    }
                }
                key
            }
        };
        let (value, exp) = sign()?;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.by_key.len() >= MAX_ENTRIES {
                entries.by_key.clear();
            }
            entries.by_key.insert(
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

impl Entries {
    /// The value under `key` while it may still be reused.
    fn fresh(&self, key: u128, now: u64) -> Option<Propagated> {
        let hit = self.by_key.get(&key).filter(|c| now < c.reuse_until)?;
        Some(hit.value.clone())
    }

    /// The key [`Self::remember`]ed for this identity and audience.
    fn known_key(&self, identity: &Arc<Identity>, audience: &str) -> Option<u128> {
        let caller = self.known.get(&address(identity))?;
        if !std::ptr::eq(caller.identity.as_ptr(), Arc::as_ptr(identity)) {
            return None;
        }
        caller.key_for(audience)
    }

    /// Keeps `key` for a shared identity and `audience`.
    fn remember(&mut self, identity: &Arc<Identity>, audience: &str, key: u128) {
        // An identity nobody else holds is this request's alone (a client
        // certificate's, a session's copy): it will not be seen again.
        if Arc::strong_count(identity) < 2 {
            return;
        }
        if self.known.len() >= MAX_ENTRIES {
            self.known.clear();
        }
        let caller = self
            .known
            .entry(address(identity))
            .or_insert_with(|| KnownCaller {
                identity: Arc::downgrade(identity),
                keys: Vec::new(),
            });
        // Two requests may have missed at once; the key is the same for both.
        if caller.key_for(audience).is_none() && caller.keys.len() < MAX_AUDIENCES {
            caller.keys.push((audience.into(), key));
        }
    }
}

fn address(identity: &Arc<Identity>) -> usize {
    Arc::as_ptr(identity) as usize
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

    /// Every header parser drops the whitespace at a value's ends, and after
    /// splitting on commas at each group's: ` admins` would arrive as `admins`.
    #[test]
    fn whitespace_at_either_end_cannot_make_another_name() {
        let header = |id: &Identity, name: &HeaderName| {
            identity_values(id)
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        let mut id = Identity::anonymous();
        id.subject = " alice".to_string();
        id.email = Some("alice@example.com\t".to_string());
        id.groups = vec![
            " admins".to_string(),
            "admins\t".to_string(),
            String::new(),
            "devs".to_string(),
        ];
        assert_eq!(header(&id, &names::X_AUTH_REQUEST_USER), None);
        assert_eq!(header(&id, &names::X_AUTH_REQUEST_EMAIL), None);
        assert_eq!(
            header(&id, &names::X_AUTH_REQUEST_GROUPS).as_deref(),
            Some("devs")
        );
        // Whitespace inside a name is the name: kept.
        id.subject = "alice smith".to_string();
        id.groups = vec!["team admins".to_string()];
        assert_eq!(
            header(&id, &names::X_AUTH_REQUEST_USER).as_deref(),
            Some("alice smith")
        );
        assert_eq!(
            header(&id, &names::X_AUTH_REQUEST_GROUPS).as_deref(),
            Some("team admins")
        );
    }

    #[test]
    fn reuses_for_the_same_caller_only() {
        let cache = AssertionCache::default();
        let alice = Arc::new(Identity {
            subject: "alice".into(),
            groups: vec!["admins".into()],
            ..Identity::default()
        });
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
        let more = Arc::new(Identity {
            groups: vec!["admins".into(), "dev".into()],
            ..(*alice).clone()
        });
        let _ = cache.get_or_sign(&more, "aud", &mut sign).unwrap();
        let shifted = Arc::new(Identity {
            subject: "aliceadmins".into(),
            groups: vec![],
            ..Identity::default()
        });
        let _ = cache.get_or_sign(&shifted, "aud", &mut sign).unwrap();
        assert_eq!(signed, 4);
    }

    #[test]
    fn an_assertion_past_half_its_life_is_not_reused() {
        let cache = AssertionCache::default();
        let who = Arc::new(Identity {
            subject: "bob".into(),
            ..Identity::default()
        });
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

    #[test]
    fn the_same_content_in_another_allocation_is_the_same_caller() {
        let cache = AssertionCache::default();
        let alice = || {
            Arc::new(Identity {
                subject: "alice".into(),
                ..Identity::default()
            })
        };
        let (first, held) = (alice(), alice());
        let again = Arc::clone(&held);
        let mut signed = 0;
        let mut sign = || {
            signed += 1;
            Ok(token_with_exp(now_unix() + 60))
        };
        // Unshared (a client certificate's identity), shared (the token cache's),
        // and that one again: one signature, whichever way the key was found.
        let a = cache.get_or_sign(&first, "aud", &mut sign).unwrap();
        let b = cache.get_or_sign(&held, "aud", &mut sign).unwrap();
        let c = cache.get_or_sign(&again, "aud", &mut sign).unwrap();
        assert_eq!((a.clone(), b), (a, c));
        assert_eq!(signed, 1);
    }

    /// The address of a shared identity stands for it only while the cache keeps
    /// its allocation: once the identity is gone, another may be given the same
    /// address, and must get its own assertion, never the one before it.
    #[test]
    fn a_reused_address_is_not_the_caller_before_it() {
        let cache = AssertionCache::default();
        let user_of = |set: &Propagated| set[0].1.to_str().unwrap().to_string();
        let sign_for = |who: &Arc<Identity>| {
            let value = HeaderValue::from_str(&who.subject).unwrap();
            let set: Propagated = vec![(names::X_AUTH_REQUEST_USER, value)].into();
            Ok((set, now_unix() + 60))
        };
        for round in 0..200 {
            let subject = format!("caller-{round}");
            let who = Arc::new(Identity {
                subject: subject.clone(),
                ..Identity::default()
            });
            // Held twice, as the token cache and a request hold it.
            let _cached = Arc::clone(&who);
            let set = cache.get_or_sign(&who, "aud", || sign_for(&who)).unwrap();
            assert_eq!(user_of(&set), subject);
        }
    }
}
