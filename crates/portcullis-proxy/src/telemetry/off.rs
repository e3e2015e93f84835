//! A build without the `otel` feature: the types exist so the front ends read the
//! same either way, but none can ever be made, so every call compiles away.

use crate::audit::AuditRecord;
use crate::judge::AuthTiming;
use crate::request_meta::TraceContext;
use portcullis_config::TelemetryConfig;
use portcullis_core::Reason;
use std::time::Duration;

/// Never constructed in this build.
pub enum Telemetry {}

/// Never constructed in this build.
pub enum RequestSpan {}

impl Telemetry {
    /// Says that `telemetry` is ignored, rather than leaving a team waiting for spans.
    pub fn start(cfg: Option<&TelemetryConfig>) -> Result<Option<Telemetry>, String> {
        if cfg.is_some() {
            tracing::warn!(
                "this build has no OpenTelemetry support (cargo feature `otel`): \
                 `telemetry` is ignored and no spans are sent (traceparent is still propagated)"
            );
        }
        Ok(None)
    }

    pub fn begin(&self, _traceparent: Option<&str>) -> (TraceContext, Option<RequestSpan>) {
        match *self {}
    }

    pub async fn shutdown(&self, _within: Duration) {
        match *self {}
    }
}

impl RequestSpan {
    pub fn authenticated(&mut self, _timing: &AuthTiming) {
        match *self {}
    }

    pub fn upstream_started(&mut self, _trace: &mut TraceContext) {
        match *self {}
    }

    pub fn upstream_done(&mut self, _outcome: Result<u16, Reason>) {
        match *self {}
    }

    pub fn end(self, _record: &AuditRecord) {
        match self {}
    }
}
