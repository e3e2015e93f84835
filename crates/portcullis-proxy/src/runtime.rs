//! Everything compiled from one config load: routes and policies, upstream pools,
//! trusted networks, the authenticator and rate limiters. A reload builds a whole
//! new [`Runtime`] and swaps it in atomically; a request keeps the snapshot it
//! started with, so it never sees half of an old config and half of a new one.

use crate::forward::client::{shared_plain, UpstreamClient};
use crate::forward::upstreams::{Endpoint, UpstreamPool};
use crate::metrics::{Metrics, RouteMetrics};
use crate::propagate::AssertionCache;
use crate::ratelimit::RouteLimiter;
use ipnet::IpNet;
use portcullis_config::Config;
use portcullis_identity::assertion::AssertionSigner;
use portcullis_identity::{Authenticator, Fetch, IdentityMetrics};
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
    pub trusted: Vec<IpNet>,
    pub auth: Arc<Authenticator>,
    /// The authenticator's background key refresher; stopped with this runtime.
    refresher: Option<tokio::task::JoinHandle<()>>,
    pub signer: Arc<AssertionSigner>,
    /// `assertion.header`, parsed once per config load rather than per request.
    pub assertion_header: http::HeaderName,
    /// Recently signed assertions, reused per caller and audience.
    pub assertions: AssertionCache,
    /// `server.public_url`, or `http(s)://LISTEN` when unset: the assertions' `iss`.
    pub public_url: String,
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
        let routes = RouteTable::compile(&config).map_err(|errs| errs.join("; "))?;
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
                        .map_err(|e| format!("route {name}: {e}"))?;
                    let client = match &route.upstream_tls {
                        Some(tls) => UpstreamClient::from_config(tls)
                            .map_err(|e| format!("route {name}: {e}"))?,
                        None => shared_plain(),
                    };
                    Some(Arc::new(UpstreamPool::new(endpoints, client)))
                }
            };
            pools.push(pool);
            limiters.push(route.rate_limit.as_ref().map(RouteLimiter::new));
        }
        let trusted = config
            .server
            .trusted_proxies
            .iter()
            .map(|s| parse_cidr(s))
            .collect::<Result<Vec<_>, _>>()?;
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
        let auth = Arc::new(auth.map_err(|e| e.to_string())?);
        // Keep the signer (and its rotation history) when its config did not change, so
        // assertions issued before a reload stay verifiable.
        let signer = match carried.previous {
            Some(prev) if prev.config.assertion == config.assertion => prev.signer.clone(),
            Some(prev) => Arc::new(
                AssertionSigner::new_from_previous(&prev.signer, &config.assertion)
                    .map_err(|e| e.to_string())?,
            ),
            None => Arc::new(AssertionSigner::new(&config.assertion).map_err(|e| e.to_string())?),
        };
        let assertion_header = http::HeaderName::from_bytes(config.assertion.header.as_bytes())
            .map_err(|e| format!("assertion.header: invalid header name: {e}"))?;
        let public_url = config.server.public_url.clone().unwrap_or_else(|| {
            let scheme = if config.server.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", config.server.listen)
        });
        Ok(Runtime {
            config: Arc::new(config),
            routes,
            pools,
            route_metrics,
            limiters,
            trusted,
            auth,
            refresher: None,
            signer,
            assertion_header,
            assertions: AssertionCache::default(),
            public_url: public_url.trim_end_matches('/').to_string(),
        })
    }

    /// Loads providers' keys in the background and keeps them fresh. Until the first
    /// load completes `/readyz` says which provider is missing.
    pub fn start_background(&mut self) {
        let auth = self.auth.clone();
        tokio::spawn(async move { auth.start().await });
        self.refresher = Some(self.auth.spawn_refresher());
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
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are IPv4 for trust decisions.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Parses a CIDR, or a bare address as a single-host network.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("trusted_proxies: `{s}` is not a CIDR or IP address"))
}
