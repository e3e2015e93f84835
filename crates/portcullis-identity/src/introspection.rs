//! RFC 7662 token introspection for opaque (non-JWT) bearer tokens.
//!
//! The proxy authenticates to the endpoint with `client_secret_basic` (RFC 6749
//! §2.3.1: id and secret form-encoded, then Basic). Results are cached by a keyed
//! digest of endpoint and token ([`crate::util::cache_key`]): an active token
//! until the sooner of `cache_ttl` and its `exp`; an inactive or rejected one
//! only briefly (negative caching bounds the load a flood of garbage tokens puts
//! on the IdP, while a token that just became valid is not refused for long).
//! Concurrent lookups of one token share one call. Transport failures are not
//! cached and map to `upstream_unavailable`: the caller's token may be fine, the
//! IdP is not.
//!
//! A flood of made-up tokens misses every cache, and each would be a call on
//! the proxy's own client credentials, spending the IdP quota that real
//! callers need: at most [`MAX_IN_FLIGHT`] calls are open at once per
//! provider, and a lookup that cannot start one within [`QUEUE_WAIT`] is
//! `upstream_unavailable` rather than one more call.

use crate::claims::{ClaimMapping, Source};
use crate::error::AuthError;
use crate::fetch::{basic_authorization, form_encode, Fetch};
use crate::jose::json::parse_object;
use crate::token_cache::{CacheCounters, DigestCache, Lifetime, MAX_ENTRIES};
use crate::util::{cache_key, now_unix, token_label};
use crate::validation::{check_audience, Rules};
use portcullis_config::IntrospectionConfig;
use portcullis_core::{Identity, Reason};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Most introspection calls one provider has open at once.
pub(crate) const MAX_IN_FLIGHT: usize = 32;
/// Longest a lookup waits for one of them.
pub(crate) const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Longest time an inactive or rejected result is remembered.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(10);
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

pub(crate) enum Introspected {
    Active {
        identity: Box<Identity>,
        valid_until: u64,
        ttl: Duration,
    },
    Rejected {
        error: AuthError,
        ttl: Duration,
    },
}

impl Lifetime for Introspected {
    fn ttl(&self) -> Duration {
        match self {
            Introspected::Active { ttl, .. } | Introspected::Rejected { ttl, .. } => *ttl,
        }
    }
}

pub(crate) struct Introspector {
    endpoint: String,
    /// `Basic …` with the client secret inside: never logged, not in Debug.
    authorization: String,
    ttl: Duration,
    cache: DigestCache<Introspected>,
    /// `token_prefix`: the opaque tokens this provider issues.
    token_prefix: Option<String>,
    in_flight: tokio::sync::Semaphore,
}

/// What the provider contributes to judging an introspection response.
pub(crate) struct Judge<'a> {
    pub provider: &'a str,
    pub rules: &'a Rules,
    pub mapping: &'a ClaimMapping,
    pub cache_counters: &'a CacheCounters,
}

impl Introspector {
    pub(crate) fn new(cfg: &IntrospectionConfig) -> Result<Self, String> {
        if !(cfg.endpoint.starts_with("https://") || cfg.endpoint.starts_with("http://")) {
            return Err("introspection `endpoint` must be an http(s) URL".into());
        }
        Ok(Self {
            endpoint: cfg.endpoint.clone(),
            authorization: basic_authorization(&cfg.client_id, &cfg.client_secret),
            ttl: cfg.cache_ttl.get(),
            cache: DigestCache::new(MAX_ENTRIES),
            token_prefix: cfg.token_prefix.clone(),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        })
    }

    /// `Some(true)`: the token has this provider's `token_prefix`;
    /// `Some(false)`: it has not; `None`: the provider names no prefix.
    pub(crate) fn has_prefix_of(&self, token: &str) -> Option<bool> {
        self.token_prefix.as_deref().map(|p| token.starts_with(p))
    }

    pub(crate) async fn introspect(
        &self,
        fetch: &dyn Fetch,
        token: &str,
        judge: &Judge<'_>,
    ) -> Result<Identity, AuthError> {
        let key = cache_key(&[b"introspect", self.endpoint.as_bytes(), token.as_bytes()]);
        let entry = match self.cache.get(&key).await {
            Some(hit) => {
                judge.cache_counters.count(true);
                hit
            }
            None => {
                judge.cache_counters.count(false);
                self.cache
                    .get_or_try_insert(key, async {
                        self.call(fetch, token, judge).await.map(Arc::new)
                    })
                    .await
                    .map_err(|e| (*e).clone())?
            }
        };
        match &*entry {
            Introspected::Active {
                identity,
                valid_until,
                ..
            } => {
                if now_unix() > *valid_until {
                    self.cache.remove(&key).await;
                    return Err(AuthError::new(Reason::TokenExpired, "token has expired"));
                }
                Ok((**identity).clone())
            }
            Introspected::Rejected { error, .. } => Err(error.clone()),
        }
    }

    async fn call(
        &self,
        fetch: &dyn Fetch,
        token: &str,
        judge: &Judge<'_>,
    ) -> Result<Introspected, AuthError> {
        let unavailable = |why: &str| {
            tracing::warn!(provider = judge.provider, endpoint = %self.endpoint, token = %token_label(token), "introspection failed: {why}");
            AuthError::new(
                Reason::UpstreamUnavailable,
                "token introspection is unavailable",
            )
        };
        let _call = match tokio::time::timeout(QUEUE_WAIT, self.in_flight.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                return Err(unavailable(&format!(
                    "{MAX_IN_FLIGHT} calls already open for {}s",
                    QUEUE_WAIT.as_secs()
                )))
            }
        };
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let response = fetch
            .post_form(
                &self.endpoint,
                Some(&self.authorization),
                body,
                MAX_RESPONSE_BYTES,
            )
            .await
            .map_err(|e| unavailable(&e.to_string()))?;
        if response.status != 200 {
            return Err(unavailable(&format!("HTTP {}", response.status)));
        }
        let doc =
            parse_object(&response.body).map_err(|e| unavailable(&format!("response is {e}")))?;
        let rejected = |error: AuthError| Introspected::Rejected {
            error,
            ttl: self.ttl.min(NEGATIVE_TTL),
        };
        match doc.get("active") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => {
                return Ok(rejected(AuthError::invalid("token is not active")))
            }
            _ => return Err(unavailable("response has no boolean `active`")),
        }
        match self.judge_active(doc, judge) {
            Ok((identity, valid_until)) => {
                let left = Duration::from_secs(valid_until.saturating_sub(now_unix()));
                Ok(Introspected::Active {
                    identity: Box::new(identity),
                    valid_until,
                    ttl: self.ttl.min(left),
                })
            }
            Err(e) => Ok(rejected(e)),
        }
    }

    fn judge_active(
        &self,
        doc: serde_json::Map<String, Value>,
        judge: &Judge<'_>,
    ) -> Result<(Identity, u64), AuthError> {
        let rules = judge.rules;
        let now = now_unix();
        match doc.get("iss") {
            None => {}
            Some(Value::String(iss)) if *iss == rules.issuer => {}
            Some(Value::String(_)) => {
                return Err(AuthError::new(
                    Reason::WrongIssuer,
                    "token issuer is not accepted",
                ))
            }
            Some(_) => return Err(AuthError::invalid("claim `iss` is not a string")),
        }
        let date = |name: &str| -> Result<Option<u64>, AuthError> {
            match doc.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .or_else(|| {
                        v.as_f64()
                            .filter(|f| f.is_finite() && *f >= 0.0)
                            .map(|f| f as u64)
                    })
                    .map(Some)
                    .ok_or_else(|| AuthError::invalid(format!("claim `{name}` is not a number"))),
            }
        };
        let exp = date("exp")?;
        if exp.is_some_and(|exp| now > exp.saturating_add(rules.skew)) {
            return Err(AuthError::new(Reason::TokenExpired, "token has expired"));
        }
        if date("nbf")?.is_some_and(|nbf| nbf > now.saturating_add(rules.skew)) {
            return Err(AuthError::new(
                Reason::TokenNotYetValid,
                "token is not valid yet (nbf)",
            ));
        }
        // RFC 7662's `token_type` is optional, but where the server names the
        // token a refresh token (Okta reports them active when introspected),
        // it is a credential for the token endpoint, long-lived and never
        // meant to be presented to a resource server.
        match doc.get("token_type") {
            None => {}
            Some(Value::String(t)) if !t.eq_ignore_ascii_case("refresh_token") => {}
            Some(Value::String(_)) => {
                return Err(AuthError::invalid("a refresh token is not an access token"))
            }
            Some(_) => return Err(AuthError::invalid("`token_type` is not a string")),
        }
        check_audience(doc.get("aud"), rules)?;
        let valid_until = exp.map_or(u64::MAX, |e| e.saturating_add(rules.skew));
        let identity = judge.mapping.identity(
            Arc::new(Value::Object(doc)),
            Source {
                provider: judge.provider,
                issuer: &rules.issuer,
                expires_at: exp,
                subject_may_be_client: true,
            },
        )?;
        Ok((identity, valid_until))
    }
}
