//! One request's spans: the server span (started when the request arrives,
//! ended when its answer is done, with the audit line), an `authenticate` child
//! timed by the decision core, and an `upstream` client child whose span id is
//! the parent the upstream's `traceparent` names.
//!
//! The server span's attributes are taken from the request's [`AuditRecord`],
//! which by construction holds no token, cookie, header or query string (see
//! `crate::audit`), so a span can never say more than the audit line.

use crate::audit::AuditRecord;
use crate::judge::AuthTiming;
use crate::request_meta::TraceContext;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use portcullis_core::Reason;
use std::time::{Instant, SystemTime};

/// The spans of one sampled request. Boxed: every request's `Exchange` holds an
/// `Option` of this, and without traces it should cost that `Exchange` (moved
/// a few times per request) no more than a pointer.
pub struct RequestSpan(Box<Spans>);

struct Spans {
    tracer: SdkTracer,
    /// Holds the server span: the parent of the children.
    cx: Context,
    /// The upstream call while it is in flight.
    upstream: Option<Span>,
}

impl RequestSpan {
    pub(super) fn start(tracer: &SdkTracer, parent: &Context) -> RequestSpan {
        // Named once the route is known (`end`).
        let server = tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, parent);
        RequestSpan(Box::new(Spans {
            tracer: tracer.clone(),
            cx: parent.with_span(server),
            upstream: None,
        }))
    }

    /// The server span's ids and sampling decision.
    pub(super) fn context(&self) -> SpanContext {
        self.0.cx.span().span_context().clone()
    }

    /// The authentication step, as the decision core timed it.
    pub fn authenticated(&mut self, timing: &AuthTiming) {
        let mut span = self
            .0
            .tracer
            .span_builder("authenticate")
            .with_kind(SpanKind::Internal)
            .with_start_time(wall_clock(timing.started))
            .start_with_context(&self.0.tracer, &self.0.cx);
        if let Some(reason) = timing.refused {
            span.set_attribute(KeyValue::new("portcullis.reason", reason.as_str()));
            span.set_status(Status::error(reason.as_str()));
        }
        span.end_with_timestamp(wall_clock(timing.ended));
    }

    /// Starts the upstream call's span and makes it the parent the upstream
    /// is told about (`trace.span_id`, sent in `traceparent`).
    pub fn upstream_started(&mut self, trace: &mut TraceContext) {
        let span = self
            .0
            .tracer
            .span_builder("upstream")
            .with_kind(SpanKind::Client)
            .start_with_context(&self.0.tracer, &self.0.cx);
        trace.span_id = format!("{:016x}", span.span_context().span_id());
        self.0.upstream = Some(span);
    }

    /// Ends the upstream call's span: the status the service answered, or why
    /// there was no answer.
    pub fn upstream_done(&mut self, outcome: Result<u16, Reason>) {
        let Some(mut span) = self.0.upstream.take() else {
            return;
        };
        match outcome {
            Ok(status) => {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 500 {
                    span.set_status(Status::error("upstream answered with a server error"));
                }
            }
            Err(reason) => {
                span.set_attribute(KeyValue::new("portcullis.reason", reason.as_str()));
                span.set_status(Status::error(reason.as_str()));
            }
        }
        span.end();
    }

    /// Ends the server span with what the audit line says about the request.
    pub fn end(mut self, record: &AuditRecord) {
        // An upstream call still open here had no answer to speak of.
        if self.0.upstream.is_some() {
            self.upstream_done(Err(Reason::UpstreamUnavailable));
        }
        let span = self.0.cx.span();
        span.update_name(name(record));
        span.set_attributes(attributes(record));
        // Only server errors mark a server span as failed (OpenTelemetry's HTTP
        // conventions): a 401 or 403 is the proxy doing its job.
        if record.status >= 500 {
            span.set_status(Status::error(record.reason));
        }
        span.end();
    }
}

/// `GET orders`, `forward_auth GET orders`, `ext_authz POST -` (no route).
fn name(r: &AuditRecord) -> String {
    let route = r.route.as_deref().unwrap_or("-");
    match r.frontend {
        "proxy" => format!("{} {route}", r.method),
        frontend => format!("{frontend} {} {route}", r.method),
    }
}

/// The server span's attributes: OpenTelemetry's HTTP names where one fits,
/// `portcullis.*` for the decision. Every value is an audit line field.
fn attributes(r: &AuditRecord) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("http.request.method", r.method.clone()),
        KeyValue::new("url.path", r.path.clone()),
        KeyValue::new("server.address", r.host.clone()),
        KeyValue::new("client.address", r.client_ip.clone()),
        KeyValue::new("http.response.status_code", i64::from(r.status)),
        KeyValue::new("portcullis.frontend", r.frontend),
        KeyValue::new("portcullis.request_id", r.request_id.clone()),
        KeyValue::new("portcullis.decision", r.decision),
        KeyValue::new("portcullis.reason", r.reason),
        KeyValue::new("portcullis.identity.type", r.identity.kind.as_str()),
    ];
    let optional = [
        ("portcullis.route", &r.route),
        ("portcullis.rule", &r.rule),
        ("portcullis.identity.subject", &r.identity.sub),
        ("portcullis.identity.client_id", &r.identity.client_id),
        ("portcullis.identity.workload", &r.identity.workload),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            a.push(KeyValue::new(key, v.clone()));
        }
    }
    if !r.enforced {
        // A report-only rule let this request through.
        a.push(KeyValue::new("portcullis.enforced", false));
    }
    a
}

/// The wall-clock time of `at` (spans carry wall-clock times).
fn wall_clock(at: Instant) -> SystemTime {
    let now = SystemTime::now();
    now.checked_sub(Instant::now().saturating_duration_since(at))
        .unwrap_or(now)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
