//! Prometheus metrics of SPEC §8. One registry for the process; every metric here
//! outlives config reloads. Labels are bounded: route names (from config), reason
//! codes and result words, never paths or subjects.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `proxy`, `forward_auth`, `ext_authz` (SPEC §4).
    pub frontend: &'static str,
    pub route: String,
    pub decision: &'static str,
    pub code: String,
}

/// `portcullis_mcp_calls_total` (SPEC §8): one per judged `tools/call`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpCallLabels {
    pub route: String,
    pub tool: String,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsFailureLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

type HistogramFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~65 s: proxy overhead sits at the bottom, slow upstreams at the top.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00025, 2.0, 19,
    ))
}

/// One route's most used series (see [`Metrics::for_route`]). The handles share
/// their values with the registry's families, so they stay right across reloads.
#[derive(Clone)]
pub struct RouteMetrics {
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    /// `portcullis_requests_total{decision="allow",code="200"}`: most requests.
    pub allowed_ok: Counter,
}

/// The proxy's own metrics (identity metrics live in `portcullis_identity`).
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily,
    pub upstream_duration: HistogramFamily,
    pub tls_handshake_failures: Family<TlsFailureLabels, Counter>,
    pub rate_limited: Family<RouteLabel, Counter>,
    pub config_reloads: Family<ResultLabel, Counter>,
    /// Open client connections: `active` (a request in flight) or `idle`.
    pub connections: Family<StateLabel, Gauge>,
    /// Connections closed on accept because `server.max_connections` were open.
    pub connections_refused: Counter,
    /// Browser sessions held (`login`); set when metrics are scraped.
    pub sessions: Gauge,
    /// `portcullis_shared_state_up`: 1 while Redis answers. Registered with the
    /// first `shared_state` (see [`Metrics::shared_state_up`]), so a proxy
    /// without Redis does not report it as down.
    shared_state_up: Gauge,
    shared_state_registered: Arc<std::sync::Once>,
    pub mcp_calls: Family<McpCallLabels, Counter>,
    pub registry: Arc<std::sync::Mutex<Registry>>,
}

impl Metrics {
    /// Creates the metrics and registers them in a new registry.
    pub fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration = HistogramFamily::new_with_constructor(latency_histogram);
        let upstream_duration = HistogramFamily::new_with_constructor(latency_histogram);
        let tls_handshake_failures = Family::<TlsFailureLabels, Counter>::default();
        let rate_limited = Family::<RouteLabel, Counter>::default();
        let config_reloads = Family::<ResultLabel, Counter>::default();
        let connections = Family::<StateLabel, Gauge>::default();
        let connections_refused = Counter::default();
        let sessions = Gauge::default();
        let shared_state_up = Gauge::default();
        let mcp_calls = Family::<McpCallLabels, Counter>::default();

        // Full names, no registry prefix: the identity crate registers its own
        // `portcullis_*` series into the same registry.
        let mut registry = Registry::default();
        registry.register(
            "portcullis_requests",
            "Requests handled, by route, decision and code",
            requests.clone(),
        );
        registry.register(
            "portcullis_request_duration_seconds",
            "Time from request head to response head",
            request_duration.clone(),
        );
        registry.register(
            "portcullis_upstream_duration_seconds",
            "Time the upstream took to answer with a response head",
            upstream_duration.clone(),
        );
        registry.register(
            "portcullis_tls_handshake_failures",
            "TLS handshakes that failed",
            tls_handshake_failures.clone(),
        );
        registry.register(
            "portcullis_rate_limited",
            "Requests refused by a rate limit",
            rate_limited.clone(),
        );
        registry.register(
            "portcullis_config_reloads",
            "Configuration reload attempts",
            config_reloads.clone(),
        );
        registry.register(
            "portcullis_connections",
            "Open client connections, by state (active: a request in flight; idle)",
            connections.clone(),
        );
        registry.register(
            "portcullis_connections_refused",
            "Client connections closed at once because server.max_connections were open",
            connections_refused.clone(),
        );
        registry.register(
            "portcullis_sessions",
            "Browser sessions held by this replica's session store",
            sessions.clone(),
        );
        registry.register(
            "portcullis_mcp_calls",
            "MCP tools/call messages judged, by route, tool and decision",
            mcp_calls.clone(),
        );
        Metrics {
            mcp_calls,
            requests,
            request_duration,
            upstream_duration,
            tls_handshake_failures,
            rate_limited,
            config_reloads,
            connections,
            connections_refused,
            sessions,
            shared_state_up,
            shared_state_registered: Arc::new(std::sync::Once::new()),
            registry: Arc::new(std::sync::Mutex::new(registry)),
        }
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
                out.clear();
            }
        }
        out
    }

    /// Handles to one route's series. Taken once per config load, so a request
    /// updates them without building label strings, hashing them or taking the
    /// family's lock (three of those per request showed in the profile).
    pub fn for_route(&self, route: &str) -> RouteMetrics {
        let label = RouteLabel {
            route: route.to_string(),
        };
        RouteMetrics {
            request_duration: self.request_duration.get_or_create(&label).clone(),
            upstream_duration: self.upstream_duration.get_or_create(&label).clone(),
            allowed_ok: self
                .requests
                .get_or_create(&RequestLabels {
                    frontend: "proxy",
                    route: route.to_string(),
                    decision: "allow",
                    code: "200".to_string(),
                })
                .clone(),
        }
    }

    /// The `portcullis_shared_state_up` gauge, registered on first use.
    pub fn shared_state_up(&self) -> Gauge {
        self.shared_state_registered.call_once(|| {
            if let Ok(mut registry) = self.registry.lock() {
                registry.register(
                    "portcullis_shared_state_up",
                    "1 while the shared state (Redis) answers, 0 while it does not",
                    self.shared_state_up.clone(),
                );
            }
        });
        self.shared_state_up.clone()
    }

    /// Counts a configuration reload attempt.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.config_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
