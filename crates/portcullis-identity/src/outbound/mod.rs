//! Outbound credentials (SPEC §9): the proxy is the OAuth client, so that no
//! long-lived secret sits in a job or a pod. Each `credentials` entry becomes a
//! [`Credential`] that obtains client-credentials tokens and caches them.
//!
//! # Caching
//!
//! A token is used until shortly before it expires (`usable_until`). From
//! `refresh_at` — earlier, by a margin of a quarter of its lifetime, at most a
//! minute — the first request that sees it starts one background refresh while
//! every request keeps using the current token. Only when no usable token is
//! left do requests wait, and then all of them wait for the same single fetch
//! (`flight`). A failed fetch is remembered for a backoff that doubles with each
//! consecutive failure (1s to 30s): meanwhile requests without a token fail at
//! once instead of each hammering a token endpoint that is down.
//!
//! # Secrets
//!
//! The secret, the private key, the client assertion and the token never reach a
//! log, an error or a `Debug` output; the token leaves this module only as a
//! sensitive `HeaderValue`.

pub(crate) mod grant;

use crate::discovery::discover_endpoint;
use crate::fetch::Fetch;
use crate::https::read_ca_file;
use crate::metrics::IdentityMetrics;
use grant::{fetch_token, ClientAuth, Grant, GrantError};
use http::HeaderValue;
use portcullis_config::{CredentialConfig, ProviderConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Longest refresh margin: a token is refreshed at most this long before its end.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Longest safety margin: a token is no longer sent this long before it expires,
/// so that it does not expire on its way to the upstream.
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why no token could be had. The message never holds a secret or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// A credential's configuration cannot be used (key, CA bundle, provider).
    #[error("credential `{name}`: {message}")]
    Config { name: String, message: String },
    /// The token endpoint failed now, or did recently (`backoff`).
    #[error("credential `{name}`: no token: {message}")]
    Unavailable { name: String, message: String },
}

/// Where the token endpoint is.
enum Endpoint {
    Fixed(String),
    /// From the provider's discovery document, looked up on first use and again
    /// after a failed fetch (the provider may have moved it).
    Discovered {
        issuer: String,
        found: Mutex<Option<String>>,
    },
}

struct Cached {
    authorization: HeaderValue,
    refresh_at: Instant,
    usable_until: Instant,
}

#[derive(Default)]
struct State {
    token: Option<Cached>,
    /// Set after a failed fetch: no new fetch before then.
    retry_at: Option<Instant>,
    /// Why the last fetch failed, for requests refused during the backoff.
    last_error: String,
    failures: u32,
    refreshing: bool,
}

/// One outbound OAuth client and its token cache.
pub struct Credential {
    name: String,
    config: CredentialConfig,
    client_id: String,
    auth: ClientAuth,
    endpoint: Endpoint,
    fetch: Arc<dyn Fetch>,
    metrics: IdentityMetrics,
    state: Mutex<State>,
    /// Held by the one fetch in flight; waiters queue on it.
    flight: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("auth_method", &self.auth.method())
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Compiles one `credentials` entry; `providers` resolve `provider:`.
    pub fn new(
        cfg: &CredentialConfig,
        providers: &[ProviderConfig],
        fetch: &Arc<dyn Fetch>,
        metrics: &IdentityMetrics,
    ) -> Result<Credential, OutboundError> {
        let fail = |message: String| OutboundError::Config {
            name: cfg.name.clone(),
            message,
        };
        let endpoint = match (&cfg.token_endpoint, &cfg.provider) {
            (Some(url), None) => Endpoint::Fixed(url.clone()),
            (None, Some(name)) => {
                let provider = providers
                    .iter()
                    .find(|p| &p.name == name)
                    .ok_or_else(|| fail(format!("unknown provider `{name}`")))?;
                Endpoint::Discovered {
                    issuer: provider.issuer.clone(),
                    found: Mutex::new(None),
                }
            }
            _ => {
                return Err(fail(
                    "set exactly one of token_endpoint and provider".into(),
                ))
            }
        };
        let method = cfg
            .auth_method
            .as_deref()
            .unwrap_or(if cfg.private_key_file.is_some() {
                "private_key_jwt"
            } else {
                "client_secret_basic"
            });
        let secret = || {
            cfg.client_secret
                .clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| fail(format!("{method} needs client_secret")))
        };
        let auth = match method {
            "client_secret_basic" => ClientAuth::basic(&cfg.client_id, &secret()?),
            "client_secret_post" => ClientAuth::Post { secret: secret()? },
            "private_key_jwt" => {
                let file = cfg
                    .private_key_file
                    .as_deref()
                    .ok_or_else(|| fail("private_key_jwt needs private_key_file".into()))?;
                let pem = std::fs::read_to_string(file)
                    .map_err(|e| fail(format!("{file}: cannot read the key: {e}")))?;
                ClientAuth::private_key(&pem).map_err(|e| fail(format!("{file}: {e}")))?
            }
            other => return Err(fail(format!("unknown auth_method `{other}`"))),
        };
        let fetch = match &cfg.ca_file {
            None => fetch.clone(),
            Some(file) => {
                let pem = read_ca_file(file).map_err(|e| fail(e.0))?;
                fetch
                    .trusting(&pem)
                    .map_err(|e| fail(format!("ca_file: {e}")))?
                    .unwrap_or_else(|| fetch.clone())
            }
        };
        Ok(Credential {
            name: cfg.name.clone(),
            config: cfg.clone(),
            client_id: cfg.client_id.clone(),
            auth,
            endpoint,
            fetch,
            metrics: metrics.clone(),
            state: Mutex::new(State::default()),
            flight: tokio::sync::Mutex::new(()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `Authorization` value (`Bearer …`, marked sensitive) to send upstream.
    pub async fn authorization(self: &Arc<Self>) -> Result<HeaderValue, OutboundError> {
        if let Some(ready) = self.cached(Instant::now(), true)? {
            return Ok(ready);
        }
        let _flight = self.flight.lock().await;
        // Whoever held the flight before us may have fetched (or failed) already.
        if let Some(ready) = self.cached(Instant::now(), false)? {
            return Ok(ready);
        }
        self.fetch_now().await
    }

    /// A usable cached token, starting a background refresh when one is due
    /// (and `may_refresh`); an error while a recent failure's backoff runs.
    fn cached(
        self: &Arc<Self>,
        now: Instant,
        may_refresh: bool,
    ) -> Result<Option<HeaderValue>, OutboundError> {
        let mut state = self.lock();
        let backing_off = state.retry_at.is_some_and(|at| now < at);
        if let Some(token) = state.token.as_ref().filter(|t| now < t.usable_until) {
            let value = token.authorization.clone();
            if may_refresh && now >= token.refresh_at && !state.refreshing && !backing_off {
                state.refreshing = true;
                let me = self.clone();
                tokio::spawn(async move { me.refresh().await });
            }
            return Ok(Some(value));
        }
        if backing_off {
            return Err(self.unavailable(state.last_error.clone()));
        }
        Ok(None)
    }

    /// The background refresh: one fetch unless someone refreshed meanwhile.
    async fn refresh(self: Arc<Self>) {
        let _flight = self.flight.lock().await;
        let due = self
            .lock()
            .token
            .as_ref()
            .is_none_or(|t| Instant::now() >= t.refresh_at);
        if due {
            // A failure is remembered in the state; the current token keeps serving.
            let _ = self.fetch_now().await;
        }
        self.lock().refreshing = false;
    }

    /// One token request; the caller holds `flight`.
    async fn fetch_now(&self) -> Result<HeaderValue, OutboundError> {
        let started = Instant::now();
        let result = self.request().await;
        let mut state = self.lock();
        match result {
            Ok((authorization, expires_in)) => {
                self.metrics.outbound_token_fetch(&self.name, "success");
                let refresh_margin = (expires_in / 4).min(MAX_REFRESH_MARGIN);
                let expiry_margin = (expires_in / 10).min(MAX_EXPIRY_MARGIN);
                state.token = Some(Cached {
                    authorization: authorization.clone(),
                    refresh_at: started + expires_in - refresh_margin,
                    usable_until: started + expires_in - expiry_margin,
                });
                state.retry_at = None;
                state.failures = 0;
                Ok(authorization)
            }
            Err(e) => {
                let result = if e.invalid { "invalid" } else { "error" };
                self.metrics.outbound_token_fetch(&self.name, result);
                state.failures = state.failures.saturating_add(1);
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << (state.failures - 1).min(5))
                    .min(MAX_BACKOFF);
                state.retry_at = Some(Instant::now() + backoff);
                state.last_error = e.message.clone();
                tracing::warn!(
                    credential = %self.name,
                    error = %e.message,
                    retry_in = ?backoff,
                    "cannot obtain an outbound token"
                );
                Err(self.unavailable(e.message))
            }
        }
    }

    async fn request(&self) -> Result<(HeaderValue, Duration), GrantError> {
        let endpoint = self.token_endpoint().await?;
        let grant = Grant {
            client_id: &self.client_id,
            auth: &self.auth,
            scopes: &self.config.scopes,
            audience: self.config.audience.as_deref(),
        };
        let issued = match fetch_token(&*self.fetch, &endpoint, &grant).await {
            Ok(issued) => issued,
            Err(e) => {
                if let Endpoint::Discovered { found, .. } = &self.endpoint {
                    *found.lock().unwrap_or_else(PoisonError::into_inner) = None;
                }
                return Err(e);
            }
        };
        let mut value =
            HeaderValue::try_from(format!("Bearer {}", issued.access_token)).map_err(|_| {
                GrantError {
                    message: "the access token is not a valid header value".into(),
                    invalid: true,
                }
            })?;
        value.set_sensitive(true);
        Ok((value, issued.expires_in))
    }

    async fn token_endpoint(&self) -> Result<String, GrantError> {
        match &self.endpoint {
            Endpoint::Fixed(url) => Ok(url.clone()),
            Endpoint::Discovered { issuer, found } => {
                if let Some(url) = found.lock().unwrap_or_else(PoisonError::into_inner).clone() {
                    return Ok(url);
                }
                let url = discover_endpoint(&*self.fetch, issuer, "token_endpoint")
                    .await
                    .map_err(|e| GrantError {
                        message: e.message,
                        invalid: e.invalid,
                    })?;
                *found.lock().unwrap_or_else(PoisonError::into_inner) = Some(url.clone());
                Ok(url)
            }
        }
    }

    fn unavailable(&self, message: String) -> OutboundError {
        OutboundError::Unavailable {
            name: self.name.clone(),
            message,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when `other` would behave exactly like this one (same config, and a
    /// provider-sourced endpoint from the same issuer), so its cache may be kept.
    fn same_as(&self, cfg: &CredentialConfig, providers: &[ProviderConfig]) -> bool {
        if &self.config != cfg {
            return false;
        }
        match &self.endpoint {
            Endpoint::Fixed(_) => true,
            Endpoint::Discovered { issuer, .. } => providers
                .iter()
                .any(|p| Some(&p.name) == cfg.provider.as_ref() && &p.issuer == issuer),
        }
    }
}

/// Every configured credential by name, built once per config load.
#[derive(Debug, Default)]
pub struct CredentialStore {
    by_name: HashMap<String, Arc<Credential>>,
}

impl CredentialStore {
    /// Compiles `configs`. Credentials whose configuration did not change since
    /// `previous` are carried over with their cached tokens, so a reload does not
    /// make every credential fetch again.
    pub fn new(
        configs: &[CredentialConfig],
        providers: &[ProviderConfig],
        fetch: &Arc<dyn Fetch>,
        metrics: &IdentityMetrics,
        previous: Option<&CredentialStore>,
    ) -> Result<CredentialStore, OutboundError> {
        let mut by_name = HashMap::with_capacity(configs.len());
        for cfg in configs {
            let kept = previous
                .and_then(|p| p.by_name.get(&cfg.name))
                .filter(|c| c.same_as(cfg, providers))
                .cloned();
            let credential = match kept {
                Some(c) => c,
                None => Arc::new(Credential::new(cfg, providers, fetch, metrics)?),
            };
            if by_name.insert(cfg.name.clone(), credential).is_some() {
                return Err(OutboundError::Config {
                    name: cfg.name.clone(),
                    message: "duplicate credential name".into(),
                });
            }
        }
        Ok(CredentialStore { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Credential>> {
        self.by_name.get(name)
    }
}
