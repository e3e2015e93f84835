//! The state every front end's requests can reach: the current compiled runtime
//! (swapped whole on reload), the metrics, the fetcher, the audit log and the trace exporter.

use crate::audit::AuditLog;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::telemetry::Telemetry;
use arc_swap::ArcSwap;
use portcullis_identity::{Fetch, IdentityMetrics};
use std::sync::Arc;

/// State every request can reach.
pub struct Shared {
    /// The current compiled config; swapped whole on reload.
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    pub identity_metrics: IdentityMetrics,
    pub fetch: Arc<dyn Fetch>,
    pub audit: AuditLog,
    /// The trace exporter, when `telemetry` was configured at startup.
    pub telemetry: Option<Telemetry>,
    /// MCP session bindings and metric labels (SPEC §10).
    pub mcp: crate::mcp::McpState,
    /// The clocks of HTTP/2 response bodies, for `write_timeout` per stream.
    pub stalls: Arc<crate::listener::stall::Registry>,
}
