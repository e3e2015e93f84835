//! The per-provider JWKS cache.
//!
//! * Keys are served lock-free from an `ArcSwap`; verification never waits for the
//!   network unless a token names a `kid` we do not have.
//! * Periodic refresh every `jwks_refresh`, sooner when the response's
//!   `Cache-Control: max-age` says so, but never more often than `jwks_min_refresh`
//!   (a hostile `max-age=0` must not make us hammer the IdP).
//! * An unknown `kid` triggers a refetch at most once per `jwks_min_refresh`; all
//!   requests waiting meanwhile share that one fetch (single-flight through an
//!   async mutex plus an attempt counter: whoever waited while someone else
//!   fetched just looks again).
//! * A failed or refused fetch never replaces keys that work; they keep serving
//!   until `jwks_stale_max` after the last success, then stop (and readiness
//!   says why).
//! * When a refresh drops a key, or gives its `kid` other key material, the
//!   cache's `epoch` moves on, so verified-token cache entries made with the
//!   old keys stop being served.

use super::{KeySet, Lookup, MAX_JWKS_BYTES};
use crate::discovery::discover_jwks_uri;
use crate::error::AuthError;
use crate::fetch::{max_age, Fetch};
use crate::jose::jwk::VerifyingKey;
use crate::jose::Alg;
use crate::metrics::IdentityMetrics;
use crate::util::quote;
use arc_swap::ArcSwapOption;
use portcullis_core::Reason;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// Where a provider's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    Discovery { issuer: String },
    Uri(String),
    File(PathBuf),
}

/// The refresh settings of one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub refresh: Duration,
    pub min_refresh: Duration,
    pub stale_max: Duration,
}

struct Loaded {
    keys: Arc<KeySet>,
    at: Instant,
}

struct Status {
    /// Completed fetch attempts; single-flight waiters compare it.
    attempts: u64,
    last_attempt: Option<Instant>,
    next_due: Instant,
    failures: u32,
    last_error: Option<String>,
    /// `jwks_uri` found by discovery; cleared when fetching it fails.
    discovered: Option<String>,
    epoch: u64,
}

/// Why a fetch or refresh was started.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trigger {
    /// The refresher (or `start`): fetch when due.
    Due,
    /// `start` of a reloaded config, for a `jwks_file`: read it now. A
    /// reload is how an operator drops a key from the file at once.
    Now,
    /// A token named a key we lack: fetch unless someone fetched since
    /// `seen_attempts`, or the last attempt is younger than `jwks_min_refresh`.
    UnknownKey { seen_attempts: u64 },
}

pub(crate) struct JwksCache {
    provider: String,
    source: KeySource,
    timing: Timing,
    fetch: Arc<dyn Fetch>,
    metrics: IdentityMetrics,
    loaded: ArcSwapOption<Loaded>,
    status: Mutex<Status>,
    fetch_lock: tokio::sync::Mutex<()>,
}

impl JwksCache {
    pub(crate) fn new(
        provider: &str,
        source: KeySource,
        timing: Timing,
        fetch: Arc<dyn Fetch>,
        metrics: IdentityMetrics,
    ) -> Self {
        Self {
            provider: provider.to_string(),
            source,
            timing,
            fetch,
            metrics,
            loaded: ArcSwapOption::empty(),
            status: Mutex::new(Status {
                attempts: 0,
                last_attempt: None,
                next_due: Instant::now(),
                failures: 0,
                last_error: None,
                discovered: None,
                epoch: 0,
            }),
            fetch_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// True when this cache was built for the same provider, source and timing,
    /// so a reloaded config can keep using it warm.
    /// How `start` refreshes this cache: a file is read at once, even when the
    /// cache is warm from the config before a reload; a URL waits its turn.
    pub(crate) fn start_trigger(&self) -> Trigger {
        match self.source {
            KeySource::File(_) => Trigger::Now,
            _ => Trigger::Due,
        }
    }

    pub(crate) fn same_config(&self, provider: &str, source: &KeySource, timing: &Timing) -> bool {
        self.provider == provider && &self.source == source && &self.timing == timing
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        // A panic while holding this lock cannot leave it inconsistent (plain field
        // writes), so poisoning is ignored rather than spread.
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.status().epoch
    }

    pub(crate) fn next_due(&self) -> Instant {
        self.status().next_due
    }

    /// The keys, unless none were ever loaded or the last success is older than
    /// `jwks_stale_max`.
    fn fresh_keys(&self) -> Option<Arc<KeySet>> {
        let loaded = self.loaded.load_full()?;
        (loaded.at.elapsed() <= self.timing.stale_max).then(|| loaded.keys.clone())
    }

    fn lookup(&self, kid: Option<&str>, alg: Alg) -> Result<Option<Arc<VerifyingKey>>, AuthError> {
        let Some(keys) = self.fresh_keys() else {
            return Ok(None);
        };
        match keys.lookup(kid, alg) {
            Lookup::Found(k) => Ok(Some(k)),
            Lookup::NotFound => Ok(None),
            Lookup::WrongAlgorithm => Err(AuthError::new(
                Reason::AlgorithmNotAllowed,
                format!(
                    "key {} cannot be used with {alg}",
                    quote(kid.unwrap_or_default())
                ),
            )),
            Lookup::Ambiguous => Err(AuthError::new(
                Reason::UnknownKey,
                "token has no `kid` and several keys could match",
            )),
        }
    }

    /// The key for a token's `kid` and `alg`, refetching once (rate-limited,
    /// shared) when it is unknown.
    pub(crate) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Alg,
    ) -> Result<Arc<VerifyingKey>, AuthError> {
        let seen_attempts = self.status().attempts;
        if let Some(key) = self.lookup(kid, alg)? {
            return Ok(key);
        }
        self.refresh(Trigger::UnknownKey { seen_attempts }).await;
        if let Some(key) = self.lookup(kid, alg)? {
            return Ok(key);
        }
        Err(self.unknown_key(kid))
    }

    fn unknown_key(&self, kid: Option<&str>) -> AuthError {
        let Some(keys) = self.fresh_keys() else {
            // Details (URLs, network errors) go to readiness and logs, not to callers.
            return AuthError::new(
                Reason::UnknownKey,
                "the provider's signing keys are not available",
            );
        };
        let description = match kid {
            None => "token has no `kid` and no key matches its algorithm".to_string(),
            Some(kid) => match keys.skip_reason(kid) {
                Some(why) => format!("key {} is not usable: {why}", quote(kid)),
                None => format!("no key with kid {}", quote(kid)),
            },
        };
        AuthError::new(Reason::UnknownKey, description)
    }

    /// Fetches and installs keys if `trigger` says so. Never fails: the outcome is
    /// recorded in the status (readiness), the metrics and the log.
    pub(crate) async fn refresh(&self, trigger: Trigger) {
        let _flight = self.fetch_lock.lock().await;
        {
            let status = self.status();
            let now = Instant::now();
            match trigger {
                Trigger::Due if now < status.next_due => return,
                Trigger::Due | Trigger::Now => {}
                Trigger::UnknownKey { seen_attempts } => {
                    if status.attempts != seen_attempts {
                        return; // someone fetched while we waited: just look again
                    }
                    if status
                        .last_attempt
                        .is_some_and(|t| now.duration_since(t) < self.timing.min_refresh)
                    {
                        return;
                    }
                }
            }
        }
        let result = self.load().await;
        let now = Instant::now();
        let mut status = self.status();
        status.attempts += 1;
        status.last_attempt = Some(now);
        match result {
            Ok((keys, age)) => {
                let previous = self.loaded.load_full();
                if let Some(prev) = &previous {
                    if !keys.keeps_every_key_of(&prev.keys) {
                        status.epoch += 1;
                    }
                }
                let n = keys.len();
                self.loaded.store(Some(Arc::new(Loaded {
                    keys: Arc::new(keys),
                    at: now,
                })));
                status.failures = 0;
                status.last_error = None;
                let wait = age
                    .map_or(self.timing.refresh, |a| a.min(self.timing.refresh))
                    .max(self.timing.min_refresh);
                status.next_due = now + wait;
                self.metrics.jwks_refresh(&self.provider, "success");
                self.metrics.set_jwks_keys(&self.provider, n);
                tracing::debug!(provider = %self.provider, keys = n, "JWKS refreshed");
            }
            Err((message, result)) => {
                status.failures = status.failures.saturating_add(1);
                // Back off: min_refresh, doubling, capped at the refresh period.
                let shift = status.failures.saturating_sub(1).min(16);
                let wait = self
                    .timing
                    .min_refresh
                    .max(Duration::from_secs(1))
                    .saturating_mul(1 << shift)
                    .min(self.timing.refresh.max(Duration::from_secs(1)));
                status.next_due = now + wait;
                tracing::warn!(provider = %self.provider, error = %message, "JWKS refresh failed; keeping previous keys");
                status.last_error = Some(message);
                self.metrics.jwks_refresh(&self.provider, result);
                if self.fresh_keys().is_none() {
                    self.metrics.set_jwks_keys(&self.provider, 0);
                }
            }
        }
    }

    /// Fetches and parses the keys. Err carries (message, metric result).
    async fn load(&self) -> Result<(KeySet, Option<Duration>), (String, &'static str)> {
        let uri = match &self.source {
            KeySource::File(path) => return load_file(path).await,
            KeySource::Uri(uri) => uri.clone(),
            KeySource::Discovery { issuer } => {
                let known = self.status().discovered.clone();
                match known {
                    Some(uri) => uri,
                    None => {
                        let uri = discover_jwks_uri(&*self.fetch, issuer).await.map_err(|e| {
                            (e.message, if e.invalid { "invalid" } else { "error" })
                        })?;
                        self.status().discovered = Some(uri.clone());
                        uri
                    }
                }
            }
        };
        let response = self.fetch.get(&uri, MAX_JWKS_BYTES).await;
        let response = match response {
            Ok(r) if r.status == 200 => r,
            other => {
                // The keys may have moved: rediscover next time.
                self.status().discovered = None;
                return Err(match other {
                    Ok(r) => (format!("GET {uri}: HTTP {}", r.status), "error"),
                    Err(e) => (format!("GET {uri}: {e}"), "error"),
                });
            }
        };
        let keys = KeySet::parse(&response.body).map_err(|e| (format!("{uri}: {e}"), "invalid"))?;
        let age = response.cache_control.as_deref().and_then(max_age);
        Ok((keys, age))
    }

    /// (ready, detail) for the readiness endpoint.
    pub(crate) fn readiness(&self) -> (bool, String) {
        let status = self.status();
        let loaded = self.loaded.load_full();
        match (&loaded, self.fresh_keys()) {
            (Some(l), Some(keys)) => {
                let mut detail = format!(
                    "{} keys, refreshed {}s ago",
                    keys.len(),
                    l.at.elapsed().as_secs()
                );
                if let Some(e) = &status.last_error {
                    detail.push_str(&format!("; last refresh failed: {e}"));
                }
                (true, detail)
            }
            (Some(l), None) => (
                false,
                format!(
                    "keys are stale: last successful refresh {}s ago (jwks_stale_max {}s); last error: {}",
                    l.at.elapsed().as_secs(),
                    self.timing.stale_max.as_secs(),
                    status.last_error.as_deref().unwrap_or("none")
                ),
            ),
            (None, _) => (
                false,
                match &status.last_error {
                    Some(e) => format!("keys not loaded: {e}"),
                    None => "keys not loaded yet".to_string(),
                },
            ),
        }
    }
}

async fn load_file(path: &PathBuf) -> Result<(KeySet, Option<Duration>), (String, &'static str)> {
    let shown = path.display();
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| (format!("{shown}: {e}"), "error"))?;
    if meta.len() > MAX_JWKS_BYTES as u64 {
        return Err((
            format!("{shown}: larger than {MAX_JWKS_BYTES} bytes"),
            "invalid",
        ));
    }
    let body = tokio::fs::read(path)
        .await
        .map_err(|e| (format!("{shown}: {e}"), "error"))?;
    let keys = KeySet::parse(&body).map_err(|e| (format!("{shown}: {e}"), "invalid"))?;
    Ok((keys, None))
}
