//! [`Authenticator`]: the one entry point the proxy uses to turn a bearer token
//! into an [`Identity`].

use crate::claims::ClaimMapping;
use crate::error::{AuthError, AuthenticatorError};
use crate::fetch::Fetch;
use crate::introspection::Judge;
use crate::jose::compact::{self, looks_like_jwt, MAX_TOKEN_LEN};
use crate::jwks::cache::{JwksCache, Trigger};
use crate::metrics::IdentityMetrics;
use crate::provider::Provider;
use crate::token_cache::{CacheCounters, DigestCache, Lifetime, MAX_ENTRIES};
use crate::util::{cache_key, now_unix, quote, token_label};
use portcullis_config::{ClaimsMapping, ProviderConfig};
use portcullis_core::{Identity, Reason};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Whether one provider can verify tokens yet, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderReadiness {
    pub name: String,
    /// Keys loaded at least once and not older than `jwks_stale_max`.
    pub ready: bool,
    /// What is loaded, or why not.
    pub detail: String,
}

/// Verifies bearer tokens against the configured providers.
///
/// Cheap to clone (shared inside). Build one per config; call [`start`] once (it
/// loads every provider's keys) and keep the [`spawn_refresher`] handle, aborting
/// it when the authenticator is replaced. On reload, [`new_from_previous`] keeps
/// the warm key caches of providers whose key settings did not change.
///
/// [`start`]: Authenticator::start
/// [`spawn_refresher`]: Authenticator::spawn_refresher
/// [`new_from_previous`]: Authenticator::new_from_previous
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    providers: Vec<Provider>,
    by_issuer: HashMap<String, usize>,
    fetch: Arc<dyn Fetch>,
    metrics: IdentityMetrics,
    /// `metrics`' token-cache series, looked up once.
    cache_counters: CacheCounters,
    verified: DigestCache<Verified>,
}

/// A verified JWT in the cache.
struct Verified {
    /// Shared with every request that presents the token: a hit costs no copy.
    identity: Arc<Identity>,
    provider: usize,
    /// The provider's key-cache epoch at verification: if keys were removed since,
    /// the entry is ignored.
    epoch: u64,
    valid_until: u64,
    ttl: Duration,
}

impl Lifetime for Verified {
    fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// `fetch`, also trusting the CA bundle at `ca_file` (`providers[].ca_file`).
pub(crate) fn provider_client(
    fetch: &Arc<dyn Fetch>,
    provider: &str,
    ca_file: &str,
) -> Result<Arc<dyn Fetch>, AuthenticatorError> {
    let pem = crate::https::read_ca_file(ca_file)
        .map_err(|e| AuthenticatorError::provider(provider, e.0))?;
    let trusting = fetch
        .trusting(&pem)
        .map_err(|e| AuthenticatorError::provider(provider, format!("ca_file: {e}")))?;
    Ok(trusting.unwrap_or_else(|| fetch.clone()))
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field(
                "providers",
                &self
                    .inner
                    .providers
                    .iter()
                    .map(|p| &p.name)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Compiles the providers. Fails on a configuration it cannot honour (unknown
    /// algorithm, HMAC without a secret, bad claim path, two providers with one
    /// issuer — a token must route to exactly one provider).
    pub fn new(
        providers: &[ProviderConfig],
        fetch: Arc<dyn Fetch>,
        metrics: IdentityMetrics,
    ) -> Result<Authenticator, AuthenticatorError> {
        Self::build(providers, fetch, metrics, &[])
    }

    /// Like [`new`](Self::new), but reuses `previous`'s key caches (keys, refresh
    /// schedule, discovery result) for providers whose name, key source and
    /// refresh timing are unchanged. Verified-token caches are not carried over:
    /// a changed claims mapping or audience must apply at once. (Their keys come
    /// from one per-process secret, [`cache_key`], so carrying one over would not
    /// need anything more.)
    pub fn new_from_previous(
        previous: &Authenticator,
        providers: &[ProviderConfig],
        fetch: Arc<dyn Fetch>,
        metrics: IdentityMetrics,
    ) -> Result<Authenticator, AuthenticatorError> {
        let warm: Vec<Arc<JwksCache>> = previous
            .inner
            .providers
            .iter()
            .filter_map(|p| p.jwks.clone())
            .collect();
        let next = Self::build(providers, fetch, metrics, &warm)?;
        // A provider that is gone should not keep reporting its last key count.
        for old in &previous.inner.providers {
            if !providers.iter().any(|p| p.name == old.name) {
                next.inner.metrics.forget_provider(&old.name);
            }
        }
        Ok(next)
    }

    fn build(
        configs: &[ProviderConfig],
        fetch: Arc<dyn Fetch>,
        metrics: IdentityMetrics,
        warm: &[Arc<JwksCache>],
    ) -> Result<Authenticator, AuthenticatorError> {
        let mut providers = Vec::with_capacity(configs.len());
        let mut by_issuer = HashMap::new();
        for (i, cfg) in configs.iter().enumerate() {
            if configs[..i].iter().any(|c| c.name == cfg.name) {
                return Err(AuthenticatorError::provider(
                    &cfg.name,
                    "duplicate provider name",
                ));
            }
            if by_issuer.insert(cfg.issuer.clone(), i).is_some() {
                return Err(AuthenticatorError::provider(
                    &cfg.name,
                    "another provider has the same issuer; a token must route to exactly one provider",
                ));
            }
            // A provider behind a private CA gets its own client; its warm key cache
            // is not reused, since the cache holds the client it was built with.
            let (provider_fetch, warm) = match &cfg.ca_file {
                None => (fetch.clone(), warm),
                Some(path) => (provider_client(&fetch, &cfg.name, path)?, &[][..]),
            };
            providers.push(Provider::compile(cfg, &provider_fetch, &metrics, warm)?);
        }
        Ok(Authenticator {
            inner: Arc::new(Inner {
                providers,
                by_issuer,
                fetch,
                cache_counters: CacheCounters::new(&metrics),
                metrics,
                verified: DigestCache::new(MAX_ENTRIES),
            }),
        })
    }

    fn caches(&self) -> impl Iterator<Item = &Arc<JwksCache>> {
        self.inner.providers.iter().filter_map(|p| p.jwks.as_ref())
    }

    /// Loads every provider's keys that are due (all of them, the first time),
    /// concurrently, and returns when each attempt has finished (bounded by the
    /// fetcher's timeout). Failures are reported by [`readiness`](Self::readiness).
    pub async fn start(&self) {
        futures_util::future::join_all(self.caches().map(|c| c.refresh(c.start_trigger()))).await;
    }

    /// Spawns the periodic JWKS refresher. It holds only weak references and ends
    /// once the authenticator and its caches are dropped; abort the handle when
    /// replacing the authenticator (a cache shared with a successor through
    /// [`new_from_previous`](Self::new_from_previous) would otherwise have two
    /// refreshers, which is harmless — refreshes happen only when due — but wasteful).
    pub fn spawn_refresher(&self) -> tokio::task::JoinHandle<()> {
        let caches: Vec<Weak<JwksCache>> = self.caches().map(Arc::downgrade).collect();
        tokio::spawn(async move {
            let loops = caches.into_iter().map(|cache| async move {
                loop {
                    let due = match cache.upgrade() {
                        Some(c) => c.next_due(),
                        None => return,
                    };
                    tokio::time::sleep_until(due).await;
                    match cache.upgrade() {
                        Some(c) => c.refresh(Trigger::Due).await,
                        None => return,
                    }
                }
            });
            futures_util::future::join_all(loops).await;
        })
    }

    /// Per provider: can it verify tokens, and if not, why.
    pub fn readiness(&self) -> Vec<ProviderReadiness> {
        self.inner
            .providers
            .iter()
            .map(|p| {
                let (ready, detail) = match &p.jwks {
                    Some(cache) => cache.readiness(),
                    None => (
                        true,
                        "no public keys to load (shared secret or introspection only)".to_string(),
                    ),
                };
                ProviderReadiness {
                    name: p.name.clone(),
                    ready,
                    detail,
                }
            })
            .collect()
    }

    /// The compiled provider named `name` (browser login verifies its ID and
    /// logout tokens with it).
    pub(crate) fn provider_named(&self, name: &str) -> Option<&Provider> {
        self.inner.providers.iter().find(|p| p.name == name)
    }

    /// Verifies a bearer token (the part after `Bearer `) and returns the caller's
    /// identity. JWTs are verified locally against the provider named by their
    /// `iss`; another token goes to the one provider whose introspection it
    /// belongs to (see `introspect`). Every failure is counted in
    /// `portcullis_auth_failures_total`.
    pub async fn verify_bearer(&self, token: &str) -> Result<Arc<Identity>, AuthError> {
        let result = self.verify_inner(token).await;
        if let Err(e) = &result {
            self.inner
                .metrics
                .auth_failure(e.provider.as_deref(), e.reason);
            tracing::debug!(
                token = %token_label(token),
                provider = e.provider.as_deref().unwrap_or("unknown"),
                reason = %e.reason,
                description = %e.description,
                "bearer token rejected"
            );
        }
        result
    }

    /// The identity a verified token with these `claims` would give, for claims
    /// taken as already verified (`portcullis explain --claims`): the provider
    /// whose `issuer` is their `iss` maps them with its claims mapping. With no
    /// such provider the default mapping is used and the identity names none.
    /// Nothing is checked but the mapping (no signature, lifetime or audience),
    /// and nothing is cached or counted: no request carries claims.
    pub fn identity_from_claims(&self, claims: Value) -> Result<Identity, AuthError> {
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .map(str::to_string);
        let provider = iss
            .as_deref()
            .and_then(|iss| self.inner.by_issuer.get(iss))
            .and_then(|&i| self.inner.providers.get(i));
        if let Some(p) = provider {
            return crate::claims::identity_from_claims(&p.mapping, claims, &p.name, &p.issuer)
                .map_err(|e| e.with_provider(&p.name));
        }
        let mapping =
            ClaimMapping::compile(&ClaimsMapping::default()).map_err(AuthError::invalid)?;
        let mut identity = crate::claims::identity_from_claims(
            &mapping,
            claims,
            "",
            iss.as_deref().unwrap_or(""),
        )?;
        identity.provider = None;
        Ok(identity)
    }

    async fn verify_inner(&self, token: &str) -> Result<Arc<Identity>, AuthError> {
        if token.is_empty() {
            return Err(AuthError::new(Reason::MissingToken, "no bearer token"));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::invalid(format!(
                "token is longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let inner = &*self.inner;
        // Only JWTs are cached here (opaque tokens by their introspector).
        let key = looks_like_jwt(token).then(|| cache_key(&[b"jwt", token.as_bytes()]));
        let now = now_unix();
        // Looked up before the character check: the cache holds only tokens that
        // passed it and everything after, keyed by a keyed hash of every byte, so
        // a hit is a token checked before, and the check (a scan of the whole
        // token) is left to the misses.
        if let Some(key) = &key {
            if let Some(hit) = inner.verified.get(key).await {
                let provider = inner.providers.get(hit.provider);
                let epoch_ok = provider
                    .and_then(|p| p.jwks.as_ref())
                    .is_none_or(|c| c.epoch() == hit.epoch);
                if now <= hit.valid_until && epoch_ok {
                    inner.cache_counters.count(true);
                    return Ok(Arc::clone(&hit.identity));
                }
                inner.verified.remove(key).await;
            }
        }
        if !is_b64token(token) {
            return Err(AuthError::invalid(
                "token contains characters not allowed in a bearer token",
            ));
        }
        let Some(key) = key else {
            // Boxed: the introspection future (an HTTP call) is most of this
            // one's size, and every caller up to the request's own future would
            // carry and copy its room on every request, JWT or not.
            return Box::pin(self.introspect(token)).await.map(Arc::new);
        };
        inner.cache_counters.count(false);

        let parsed = compact::parse(token)?;
        // The unverified `iss` only chooses whose keys to try; it is checked again
        // (with everything else) after the signature verified.
        let (index, provider) = match parsed.claims.get("iss") {
            Some(Value::String(iss)) => match inner.by_issuer.get(iss) {
                Some(&i) => (i, &inner.providers[i]),
                None => {
                    return Err(AuthError::new(
                        Reason::WrongIssuer,
                        format!("issuer {} is not accepted", quote(iss)),
                    ))
                }
            },
            Some(_) => return Err(AuthError::invalid("claim `iss` is not a string")),
            None => return Err(AuthError::invalid("token has no `iss` claim")),
        };
        let epoch = provider.jwks.as_ref().map_or(0, |c| c.epoch());
        let (identity, checked) = provider
            .verify(parsed, now)
            .await
            .map_err(|e| e.with_provider(&provider.name))?;
        let ttl = Duration::from_secs(checked.valid_until.saturating_sub(now));
        let identity = Arc::new(identity);
        inner
            .verified
            .insert(
                key,
                Arc::new(Verified {
                    identity: Arc::clone(&identity),
                    provider: index,
                    epoch,
                    valid_until: checked.valid_until,
                    ttl,
                }),
            )
            .await;
        Ok(identity)
    }

    /// Introspects an opaque token at its one provider: the one whose
    /// `token_prefix` it starts with, else the one without a prefix (`check`
    /// allows one). Never at each in turn: every provider would see the
    /// others' tokens, and whoever runs one could replay them here.
    async fn introspect(&self, token: &str) -> Result<Identity, AuthError> {
        let inner = &*self.inner;
        let introspecting = || {
            inner
                .providers
                .iter()
                .filter_map(|p| p.introspection.as_ref().map(|i| (p, i)))
        };
        let owner = introspecting()
            .find(|(_, i)| i.has_prefix_of(token) == Some(true))
            .or_else(|| introspecting().find(|(_, i)| i.has_prefix_of(token).is_none()));
        let Some((p, introspector)) = owner else {
            return Err(AuthError::invalid(if introspecting().next().is_some() {
                "token is not a JWT and has no introspecting provider's token_prefix"
            } else {
                "token is not a JWT and no provider introspects opaque tokens"
            }));
        };
        let judge = Judge {
            provider: &p.name,
            rules: &p.rules,
            mapping: &p.mapping,
            cache_counters: &inner.cache_counters,
        };
        introspector
            .introspect(&*inner.fetch, token, &judge)
            .await
            .map_err(|e| e.with_provider(&p.name))
    }
}

/// A byte of a `b64token`'s body: ALPHA / DIGIT / `-._~+/`. Written as compares
/// and bitwise ORs, not a table lookup, so that the 16-byte blocks of
/// [`is_b64token`] compile to SSE2 compares (callgrind, an RS256 token of about
/// 700 bytes: 2.0k instructions with a 256-entry table, 1.75k like this).
#[inline(always)]
fn b64token_body_byte(b: u8) -> bool {
    // `| 0x20` folds A-Z onto a-z and moves nothing else into a-z.
    ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

/// RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
///
/// One pass (it runs on every request, over the whole token): the body is the
/// longest prefix of allowed bytes, which must be non-empty, and whatever
/// follows it may only be `=`. The prefix is found 16 bytes at a time, the
/// per-byte checks OR-ed into one "bad" byte, one branch per block
/// rather than per byte; the block holding the first other byte (padding or
/// garbage) and the tail are then scanned byte by byte.
fn is_b64token(token: &str) -> bool {
    const BLOCK: usize = 16;
    let bytes = token.as_bytes();
    let mut body = 0;
    let (blocks, _) = bytes.as_chunks::<BLOCK>();
    for block in blocks {
        // A fixed-size block OR-reduced as bytes: this is the shape LLVM vectorizes.
        let bad = block
            .iter()
            .fold(0u8, |bad, &b| bad | u8::from(!b64token_body_byte(b)));
        if bad != 0 {
            break;
        }
        body += BLOCK;
    }
    let rest = &bytes[body..];
    let body = body + rest.iter().take_while(|&&b| b64token_body_byte(b)).count();
    body > 0 && bytes[body..].iter().all(|&b| b == b'=')
}

#[cfg(test)]
#[path = "authenticator_tests.rs"]
mod tests;

#[cfg(test)]
mod b64token_tests {
    use super::is_b64token;
    use proptest::prelude::*;

    /// The previous implementation, as the reference.
    fn reference(token: &str) -> bool {
        let body = token.trim_end_matches('=');
        !body.is_empty()
            && body.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
            })
    }

    fn same(s: &str) {
        assert_eq!(is_b64token(s), reference(s), "{s:?}");
    }

    #[test]
    fn every_char_alone_and_around_padding() {
        let chars = (0u32..0x800)
            .chain([0xFFFF, 0x1F600])
            .filter_map(char::from_u32);
        for c in chars {
            for s in [
                format!("{c}"),
                format!("{c}="),
                format!("{c}=="),
                format!("a{c}"),
                format!("{c}a"),
                format!("a={c}"),
                format!("a{c}="),
                format!("={c}"),
            ] {
                same(&s);
            }
        }
    }

    #[test]
    fn every_string_of_up_to_four_over_a_mixed_alphabet() {
        const ALPHABET: [char; 12] = ['a', 'Z', '7', '-', '.', '_', '~', '+', '/', '=', ' ', 'é'];
        let mut level = vec![String::new()];
        let mut strings = level.clone();
        for _ in 0..4 {
            level = level
                .iter()
                .flat_map(|s| ALPHABET.iter().map(move |c| format!("{s}{c}")))
                .collect();
            strings.extend(level.iter().cloned());
        }
        assert_eq!(strings.len(), 1 + 12 + 144 + 1728 + 20736);
        for s in &strings {
            same(s);
        }
        assert!(is_b64token("eyJ.a-b_c~d+e/f=="));
        assert!(!is_b64token(""));
        assert!(!is_b64token("=="));
        assert!(!is_b64token("a=b"));
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference_on_token_like_strings(s in "[A-Za-z0-9._~+/= \\-é\\x00]{0,40}") {
            prop_assert_eq!(is_b64token(&s), reference(&s));
        }

        #[test]
        fn agrees_with_the_reference_on_any_string(s in any::<String>()) {
            prop_assert_eq!(is_b64token(&s), reference(&s));
        }
    }
}
