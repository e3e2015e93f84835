//! Everything compiled from one config load: routes and policies, upstream pools,
//! trusted networks, the authenticator and rate limiters. A reload builds a whole
//! new [`Runtime`] and swaps it in atomically; a request keeps the snapshot it
//! started with, so it never sees half of an old config and half of a new one.

use crate::forward::client::{shared_plain, UpstreamClient};
use crate::forward::upstreams::{Endpoint, UpstreamPool};
use crate::metrics::{Metrics, RouteMetrics};
use crate::propagate::AssertionCache;
use crate::ratelimit::RouteLimiter;
use crate::shared_state::{Redis, SharedState};
use ipnet::IpNet;
use portcullis_config::Config;
use portcullis_identity::assertion::AssertionSigner;
use portcullis_identity::{
    Authenticator, AuthenticatorError, CredentialStore, Fetch, IdentityMetrics,
};
use portcullis_policy::RouteTable;
use std::net::IpAddr;
use std::sync::Arc;

/// One compiled configuration.
pub struct Runtime {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    /// Upstream pool per route index (`None` for a route without upstream).
    pub pools: Vec<Option<Arc<UpstreamPool>>>,
    /// Metric handles per route index.
    pub route_metrics: Vec<RouteMetrics>,
    /// Rate limiter per route index.
    pub limiters: Vec<Option<RouteLimiter>>,
    /// `shared_state`: the Redis handle (kept across reloads while its config is
    /// unchanged) and what rate limits do while Redis is down.
    pub shared_state: Option<SharedState>,
    pub trusted: Vec<IpNet>,
    pub auth: Arc<Authenticator>,
    /// The authenticator's background key refresher; stopped with this runtime.
    refresher: Option<tokio::task::JoinHandle<()>>,
    /// `signing_keys_dir` upkeep (creating, loading, pruning keys); stopped with
    /// this runtime, and started again by its successor, which shares the signer.
    key_upkeep: Option<tokio::task::JoinHandle<()>>,
    pub signer: Arc<AssertionSigner>,
    /// `assertion.header`, parsed once per config load rather than per request.
    pub assertion_header: http::HeaderName,
    /// Recently signed assertions, reused per caller and audience.
    pub assertions: AssertionCache,
    /// `server.public_url`, or `http(s)://LISTEN` when unset: the assertions' `iss`.
    pub public_url: String,
    /// Outbound OAuth clients (`credentials`, SPEC §9) with their cached tokens.
    pub credentials: Arc<CredentialStore>,
    /// Browser login (`login`), when configured; its session store outlives reloads.
    pub login: Option<Arc<crate::login::Login>>,
}

/// What survives a reload: state that would be costly or wrong to rebuild.
pub struct Carried<'a> {
    pub previous: Option<&'a Runtime>,
    pub identity_metrics: &'a IdentityMetrics,
    pub metrics: &'a Metrics,
    /// The HTTP client for discovery, JWKS and introspection.
    pub fetch: &'a Arc<dyn Fetch>,
}

impl Runtime {
    /// Compiles a validated config. Fails (and leaves the caller's current runtime in
    /// place) if anything cannot be built: a route table, a TLS file, a key.
    pub fn build(config: Config, carried: Carried<'_>) -> Result<Runtime, String> {
        Self::compile(config, carried, Keys::Write).map_err(|errs| errs.join("; "))
    }

    /// What `portcullis check` runs after the config loader: the same compilation as
    /// `serve` (route table, upstream TLS clients, trusted networks, authenticator,
    /// assertion signer, listener TLS), so that `check` refuses exactly what `serve`
    /// refuses. Nothing is fetched (keys are loaded only by
    /// [`start_background`](Self::start_background)) and nothing is written (an
    /// assertion key `serve` would create is made in memory). Every error, each
    /// prefixed with the config path it is about where known
    /// (`routes[3] (orders): match.path_regex: …`).
    pub fn check(config: Config) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if let Some(tls) = &config.server.tls {
            if let Err(e) = crate::tls::ReloadingTls::new(tls) {
                errors.push(format!("server.tls: {e}"));
            }
        }
        if let Err(more) = Self::offline(config, std::time::Duration::from_secs(10)) {
            errors.extend(more);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The runtime `check` compiles, for judging requests without serving
    /// (`portcullis explain`): nothing is written and nothing fetched until a
    /// token needs its provider's keys (loaded on first use, each fetch bounded
    /// by `fetch_timeout`); no background task runs.
    pub fn offline(
        config: Config,
        fetch_timeout: std::time::Duration,
    ) -> Result<Runtime, Vec<String>> {
        let fetch: Arc<dyn Fetch> = match portcullis_identity::HttpFetch::new(fetch_timeout) {
            Ok(f) => Arc::new(f),
            Err(e) => return Err(vec![e.to_string()]),
        };
        let carried = Carried {
            previous: None,
            identity_metrics: &IdentityMetrics::default(),
            metrics: &Metrics::new(),
            fetch: &fetch,
        };
        Self::compile(config, carried, Keys::ReadOnly)
    }

    fn compile(config: Config, carried: Carried<'_>, keys: Keys) -> Result<Runtime, Vec<String>> {
        // Every stage runs even when an earlier one failed, so that `check` reports
        // all errors at once.
        let mut errors = Vec::new();
        let routes = RouteTable::compile(&config).map_err(|errs| errors.extend(errs));
        let mut pools = Vec::with_capacity(config.routes.len());
        let mut limiters = Vec::with_capacity(config.routes.len());
        let mut route_metrics = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let name = route.display_name(i);
            route_metrics.push(carried.metrics.for_route(&name));
            let pool = match &route.upstream {
                None => None,
                Some(ups) => {
                    let endpoints = ups
                        .urls()
                        .into_iter()
                        .map(Endpoint::parse)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| {
                            errors.push(format!("{}: upstream: {e}", route_ref(i, route)))
                        });
                    let client = match &route.upstream_tls {
                        Some(tls) => UpstreamClient::from_config(tls).map_err(|e| {
                            errors.push(format!("{}: upstream_tls: {e}", route_ref(i, route)))
                        }),
                        None => Ok(shared_plain()),
                    };
                    match (endpoints, client) {
                        (Ok(endpoints), Ok(client)) => Some(Arc::new(
                            UpstreamPool::new(endpoints, client).guarding_login_cookie(
                                config.login.as_ref().map(|l| l.cookie.name.as_str()),
                            ),
                        )),
                        _ => None,
                    }
                }
            };
            pools.push(pool);
            limiters.push(
                route
                    .rate_limit
                    .as_ref()
                    .map(|rl| RouteLimiter::new(&name, rl)),
            );
        }
        let trusted = config
            .server
            .trusted_proxies
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                // The validator's parser: what `check` accepts is what is trusted.
                portcullis_config::parse_cidr(s)
                    .map_err(|e| errors.push(format!("server.trusted_proxies[{i}]: {e}")))
                    .ok()
            })
            .collect();
        let fetch = carried.fetch.clone();
        let metrics = carried.identity_metrics.clone();
        let auth = match carried.previous {
            // Warm key caches carry over, so a reload never makes tokens fail while
            // keys are refetched.
            Some(prev) => {
                Authenticator::new_from_previous(&prev.auth, &config.providers, fetch, metrics)
            }
            None => Authenticator::new(&config.providers, fetch, metrics),
        };
        let auth = auth.map_err(|e| errors.push(provider_error(&config, e)));
        let credentials = credential_store(&config, &carried).map_err(|e| errors.extend(e));
        // Keep the signer (and its rotation history) when its config did not change, so
        // assertions issued before a reload stay verifiable.
        let signer = match (carried.previous, keys) {
            (Some(prev), _) if prev.config.assertion == config.assertion => Ok(prev.signer.clone()),
            (Some(prev), _) => {
                AssertionSigner::new_from_previous(&prev.signer, &config.assertion).map(Arc::new)
            }
            (None, Keys::Write) => AssertionSigner::new(&config.assertion).map(Arc::new),
            (None, Keys::ReadOnly) => {
                AssertionSigner::new_read_only(&config.assertion).map(Arc::new)
            }
        }
        .map_err(|e| errors.push(format!("assertion: {e}")));
        let shared_state = shared_state(&config, &carried, keys).map_err(|e| errors.push(e));
        let assertion_header = http::HeaderName::from_bytes(config.assertion.header.as_bytes())
            .map_err(|e| errors.push(format!("assertion.header: invalid header name: {e}")));
        let (
            Ok(routes),
            Ok(auth),
            Ok(signer),
            Ok(assertion_header),
            Ok(credentials),
            Ok(shared_state),
            true,
        ) = (
            routes,
            auth,
            signer,
            assertion_header,
            credentials,
            shared_state,
            errors.is_empty(),
        )
        else {
            return Err(errors);
        };
        let auth = Arc::new(auth);
        let public_url = config.server.public_url.clone().unwrap_or_else(|| {
            let scheme = if config.server.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", config.server.listen)
        });
        let store = carried
            .previous
            .and_then(|p| p.login.as_ref())
            .map(|l| l.store.clone());
        let redis = shared_state.as_ref().map(|s| &s.redis);
        let login = crate::login::Login::compile(&config, &public_url, carried.fetch, store, redis)
            .map_err(|e| vec![e])?
            .map(Arc::new);
        Ok(Runtime {
            config: Arc::new(config),
            routes,
            pools,
            route_metrics,
            limiters,
            shared_state,
            trusted,
            auth,
            refresher: None,
            key_upkeep: None,
            signer,
            assertion_header,
            assertions: AssertionCache::default(),
            public_url: public_url.trim_end_matches('/').to_string(),
            credentials: Arc::new(credentials),
            login,
        })
    }

    /// Loads providers' keys in the background and keeps them fresh. Until the first
    /// load completes `/readyz` says which provider is missing.
    pub fn start_background(&mut self) {
        let auth = self.auth.clone();
        tokio::spawn(async move { auth.start().await });
        self.refresher = Some(self.auth.spawn_refresher());
        if let Some(every) = self.signer.maintenance_interval() {
            let signer = self.signer.clone();
            self.key_upkeep = Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let signer = signer.clone();
                    // File I/O and key generation: off the async workers.
                    let _ = tokio::task::spawn_blocking(move || signer.maintain()).await;
                }
            }));
        }
    }

    /// True when `ip` is in `server.trusted_proxies`.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.take() {
            task.abort();
        }
        if let Some(task) = self.key_upkeep.take() {
            task.abort();
        }
    }
}

/// Whether building a runtime may write assertion keys (`serve`) or not (`check`).
#[derive(Clone, Copy)]
enum Keys {
    Write,
    ReadOnly,
}

/// `routes[3] (orders)`, the prefix the route table uses too.
fn route_ref(i: usize, route: &portcullis_config::RouteConfig) -> String {
    match &route.name {
        Some(n) => format!("routes[{i}] ({n})"),
        None => format!("routes[{i}]"),
    }
}

/// The outbound credentials; unchanged ones keep their cached tokens across a
/// reload. Every route's `upstream_auth` must name one.
fn credential_store(
    config: &Config,
    carried: &Carried<'_>,
) -> Result<CredentialStore, Vec<String>> {
    let store = CredentialStore::new(
        &config.credentials,
        &config.providers,
        carried.fetch,
        carried.identity_metrics,
        carried.previous.map(|p| &*p.credentials),
    )
    .map_err(|e| vec![format!("credentials: {e}")])?;
    let unknown: Vec<String> = config
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let name = &r.upstream_auth.as_ref()?.credential;
            store.get(name).is_none().then(|| {
                format!(
                    "{}: upstream_auth: unknown credential `{name}`",
                    route_ref(i, r)
                )
            })
        })
        .collect();
    if unknown.is_empty() {
        Ok(store)
    } else {
        Err(unknown)
    }
}

/// `shared_state`: checked offline for `check`; for `serve` the previous
/// runtime's connection when its Redis did not change, else a new one.
fn shared_state(
    config: &Config,
    carried: &Carried<'_>,
    keys: Keys,
) -> Result<Option<SharedState>, String> {
    let Some(cfg) = &config.shared_state else {
        return Ok(None);
    };
    if let Keys::ReadOnly = keys {
        return Redis::check(cfg).map(|()| None);
    }
    let previous = carried.previous.and_then(|p| {
        let before = p.config.shared_state.as_ref()?;
        p.shared_state.as_ref()?.carried_to(before, cfg)
    });
    match previous {
        Some(kept) => Ok(Some(kept)),
        None => SharedState::start(cfg, carried.metrics.shared_state_up()).map(Some),
    }
}

/// An authenticator error placed at its provider (`providers[1] (corp): …`).
fn provider_error(config: &Config, e: AuthenticatorError) -> String {
    let AuthenticatorError::Provider { provider, message } = &e;
    match config.providers.iter().position(|p| &p.name == provider) {
        Some(i) => format!("providers[{i}] ({provider}): {message}"),
        None => format!("providers: {e}"),
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are IPv4 for trust decisions.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
