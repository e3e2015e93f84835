//! OpenTelemetry traces (SPEC §2 `telemetry`): one server span per request,
//! whichever front end took it (reverse proxy, forward-auth, ext_authz), with
//! children for authentication and the upstream call, exported over OTLP/gRPC.
//!
//! The span's trace id is the one the upstream's `traceparent` and the audit
//! line's `trace_id` carry: when traces are exported, [`begin`] takes the
//! request's [`TraceContext`] from the span (the SDK sampled it, continued the
//! trusted peer's trace or started one) instead of making its own.
//!
//! Without `telemetry` (or in a build without the `otel` feature) nothing of
//! this runs: [`begin`] is [`TraceContext::continue_or_start`] and every
//! request's span is `None`, so no span is ever built.
//!
//! A change of `telemetry` takes effect at the next restart: the exporter is
//! started once with the server (see `Server::apply`).

#[cfg(feature = "otel")]
mod export;
#[cfg(not(feature = "otel"))]
mod off;
#[cfg(feature = "otel")]
mod span;

#[cfg(feature = "otel")]
pub use export::Telemetry;
#[cfg(not(feature = "otel"))]
pub use off::{RequestSpan, Telemetry};
#[cfg(feature = "otel")]
pub use span::RequestSpan;

use crate::request_meta::TraceContext;

/// The trace a request joins (`traceparent` as a trusted peer sent it, if any)
/// and, when traces are exported and this one is sampled, its server span.
pub fn begin(
    telemetry: Option<&Telemetry>,
    traceparent: Option<&str>,
) -> (TraceContext, Option<RequestSpan>) {
    match telemetry {
        Some(t) => t.begin(traceparent),
        None => (TraceContext::continue_or_start(traceparent), None),
    }
}
