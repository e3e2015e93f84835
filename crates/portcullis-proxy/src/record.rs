//! Recording one judged request: the facts gathered as a front end handles it
//! ([`Exchange`]), filled from the core's judgment, and [`finish`], which
//! attaches the audit line and metrics to the response so they are written
//! once, when its body is done (or dropped by a vanishing client). Every front
//! end records through here, so every audit line has the same shape.

use crate::audit::{millis, AuditIdentity, AuditRecord, AuditTime};
use crate::body::{Counted, ProxyBody};
use crate::forward::headers::names;
use crate::judge::{Frontend, Judgment};
use crate::metrics::{RequestLabels, RouteLabel};
use crate::propagate::Propagated;
use crate::request_meta::TraceContext;
use crate::respond::Refusal;
use crate::runtime::Runtime;
use crate::state::Shared;
use crate::telemetry::RequestSpan;
use http::{HeaderName, HeaderValue, Response};
use portcullis_core::{Identity, Reason};
use portcullis_policy::{Decision, NormalizedPath};
use std::sync::Arc;
use std::time::Instant;

/// The facts about one request, gathered as it moves through the pipeline and
/// written to the audit line at the end.
pub struct Exchange {
    pub started: Instant,
    /// When the request arrived: the audit line's `timestamp`.
    pub arrived: AuditTime,
    pub request_id: String,
    pub trace: TraceContext,
    /// The client's address (after `trusted_proxies`), as text.
    pub client_ip: String,
    pub method: String,
    pub host: String,
    /// Normalized when normalization succeeded, else the raw path (never the query).
    pub path: String,
    pub route: Option<String>,
    /// The route's index in the config, once routed.
    pub route_index: Option<usize>,
    pub decision: Option<Decision>,
    pub identity: Arc<Identity>,
    pub upstream_ms: Option<f64>,
    pub html: bool,
    /// Set when the request ended in an error response: its SPEC §6 code.
    pub refused: Option<Reason>,
    /// Which front end judged it.
    pub frontend: Frontend,
    /// The request's trace spans, when traces are exported and it is sampled.
    pub span: Option<RequestSpan>,
    /// On an MCP route, the JSON-RPC message (the audit line's `mcp`).
    pub mcp: Option<crate::audit::AuditMcp>,
}

impl Exchange {
    /// Takes in the core's judgment: the facts for the audit line, and either what
    /// to tell the service (the path as judged, the headers to set and to remove)
    /// or the refusal to answer with. A reserved path comes back with no route.
    pub fn absorb(
        &mut self,
        j: Judgment,
    ) -> Result<(NormalizedPath, Propagated, Vec<HeaderName>), Refusal> {
        if let Some(path) = &j.path {
            self.path = path.as_str().to_string();
        }
        self.route = j.route_name;
        self.route_index = j.route;
        self.identity = j.identity;
        self.decision = j.decision;
        if let (Some(span), Some(timing)) = (&mut self.span, &j.auth_timing) {
            span.authenticated(timing);
        }
        if let Some(refusal) = j.refusal {
            return Err(refusal);
        }
        let path = j.path.ok_or_else(|| Refusal::new(Reason::BadRequest))?;
        let set = j.set.unwrap_or_else(|| Arc::from(Vec::new()));
        Ok((path, set, j.remove))
    }

    /// `X-Request-Id` and `traceparent` as the service receives them (SPEC §3):
    /// what a front end that does not forward the request itself (forward-auth,
    /// ext_authz) hands to the proxy that does.
    pub fn correlation_headers(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
        [
            (names::X_REQUEST_ID, HeaderValue::from_str(&self.request_id)),
            (
                names::TRACEPARENT,
                HeaderValue::from_str(&self.trace.header()),
            ),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.ok()?)))
    }
}

/// Attaches the audit line and metrics to the response, to be written when its body
/// is finished or dropped (ext_authz drops a bodiless one to record its check).
pub fn finish(
    ex: Exchange,
    response: Response<ProxyBody>,
    shared: &Shared,
    rt: &Runtime,
) -> Response<Counted> {
    let status = response.status().as_u16();
    // `decision` is the policy's word when it spoke (an allowed call can still fail
    // upstream); `reason` is how the request actually ended.
    let (decision_word, reason, rule, enforced) = match (&ex.decision, ex.refused) {
        (Some(d), refused) => {
            let word = if d.is_allowed() { "allow" } else { "deny" };
            let rule = d.rule.as_ref().map(|r| r.label().into_owned());
            (word, refused.unwrap_or(d.reason), rule, d.enforced)
        }
        (None, Some(r)) => ("deny", r, None, true),
        (None, None) => ("allow", Reason::Allowed, None, true),
    };
    let elapsed = ex.started.elapsed().as_secs_f64();
    if ex.refused == Some(Reason::RateLimited) {
        if let Some(route) = &ex.route {
            shared
                .metrics
                .rate_limited
                .get_or_create(&RouteLabel {
                    route: route.clone(),
                })
                .inc();
        }
    }
    let route_metrics = ex.route_index.and_then(|i| rt.route_metrics.get(i));
    match route_metrics {
        Some(m) if status == 200 && decision_word == "allow" && ex.frontend == Frontend::Proxy => {
            m.allowed_ok.inc();
        }
        _ => {
            shared
                .metrics
                .requests
                .get_or_create(&RequestLabels {
                    frontend: ex.frontend.as_str(),
                    route: ex.route.clone().unwrap_or_else(|| "none".to_string()),
                    decision: decision_word,
                    code: status.to_string(),
                })
                .inc();
        }
    };
    match route_metrics {
        Some(m) => m.request_duration.observe(elapsed),
        None => shared
            .metrics
            .request_duration
            .get_or_create(&RouteLabel {
                route: "none".to_string(),
            })
            .observe(elapsed),
    }

    let audit = shared.audit.clone();
    let record = AuditRecord {
        timestamp: ex.arrived,
        request_id: ex.request_id,
        trace_id: ex.trace.trace_id,
        client_ip: ex.client_ip,
        method: ex.method,
        host: ex.host,
        path: ex.path,
        route: ex.route,
        decision: decision_word,
        reason: reason.as_str(),
        rule,
        enforced,
        identity: AuditIdentity::from(ex.identity),
        status,
        duration_ms: 0.0,
        upstream_ms: ex.upstream_ms,
        bytes_out: 0,
        credential: crate::upstream_auth::credential_name(
            ex.route_index.and_then(|i| rt.config.routes.get(i)),
        )
        .filter(|_| ex.frontend == Frontend::Proxy),
        frontend: ex.frontend.as_str(),
        mcp: ex.mcp,
    };
    let started = ex.started;
    let span = ex.span;
    let (parts, body) = response.into_parts();
    let body = Counted::new(
        body,
        Box::new(move |bytes_out| {
            let mut record = record;
            record.bytes_out = bytes_out;
            record.duration_ms = millis(started.elapsed());
            // The span ends with the audit line, and says what it says.
            if let Some(span) = span {
                span.end(&record);
            }
            audit.record(record);
        }),
    );
    Response::from_parts(parts, body)
}
