//! The spans of one request, read back from an in-memory exporter.

use super::*;
use crate::audit::{AuditIdentity, AuditTime};
use crate::telemetry::Telemetry;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry::Value;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use portcullis_core::IdentityKind;
use std::sync::{Arc, Mutex};

/// Keeps every exported span.
#[derive(Debug, Clone, Default)]
struct Kept(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Kept {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

fn telemetry() -> (Telemetry, Kept) {
    let kept = Kept::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(kept.clone())
        .build();
    (Telemetry::with_provider(provider), kept)
}

fn record(trace_id: &str) -> AuditRecord {
    AuditRecord {
        timestamp: AuditTime::now(),
        request_id: "req-1".into(),
        trace_id: trace_id.into(),
        client_ip: "10.0.0.7".into(),
        method: "GET".into(),
        host: "orders.example.com".into(),
        path: "/api/orders/7".into(),
        route: Some("orders".into()),
        decision: "allow",
        reason: "allowed",
        rule: Some("readers".into()),
        enforced: true,
        identity: AuditIdentity {
            kind: IdentityKind::User,
            sub: Some("alice".into()),
            email: Some("alice@example.com".into()),
            issuer: Some("https://idp.example.com".into()),
            client_id: Some("orders-web".into()),
            groups: vec!["admins".into()],
            workload: None,
        },
        status: 200,
        duration_ms: 1.0,
        upstream_ms: Some(0.5),
        bytes_out: 10,
        credential: None,
        frontend: "proxy",
        mcp: None,
    }
}

fn text(v: &Value) -> String {
    v.as_str().into_owned()
}

#[test]
fn one_server_span_with_authenticate_and_upstream_children_in_the_callers_trace() {
    let (t, kept) = telemetry();
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (mut trace, span) = t.begin(Some(incoming));
    let mut span = span.expect("a sampled parent is honoured");
    assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(trace.flags, "01");
    let server_id = trace.span_id.clone();
    let now = Instant::now();
    span.authenticated(&AuthTiming {
        started: now,
        ended: now,
        refused: None,
    });
    span.upstream_started(&mut trace);
    let upstream_id = trace.span_id.clone();
    assert_ne!(
        upstream_id, server_id,
        "the upstream's parent is the client span"
    );
    span.upstream_done(Ok(200));
    span.end(&record(&trace.trace_id));

    let spans = kept.0.lock().unwrap().clone();
    assert_eq!(spans.len(), 3);
    let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    assert!(spans.iter().all(|s| s.span_context.trace_id() == trace_id));
    let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
    let server = by_name("GET orders");
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(
        server.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
    assert!(server.parent_span_is_remote);
    assert_eq!(format!("{:016x}", server.span_context.span_id()), server_id);
    let server_span = server.span_context.span_id();
    assert_eq!(by_name("authenticate").parent_span_id, server_span);
    let upstream = by_name("upstream");
    assert_eq!(upstream.parent_span_id, server_span);
    assert_eq!(upstream.span_kind, SpanKind::Client);
    assert_eq!(
        format!("{:016x}", upstream.span_context.span_id()),
        upstream_id
    );
}

#[test]
fn attributes_say_what_the_audit_line_says_and_no_token() {
    let (t, kept) = telemetry();
    let (trace, span) = t.begin(None);
    span.expect("sample_ratio 1 by default")
        .end(&record(&trace.trace_id));
    let spans = kept.0.lock().unwrap().clone();
    let server = &spans[0];
    assert_eq!(
        server.parent_span_id,
        SpanId::INVALID,
        "a new trace has no parent"
    );
    let attrs: Vec<(String, String)> = server
        .attributes
        .iter()
        .map(|kv| (kv.key.to_string(), text(&kv.value)))
        .collect();
    let get = |k: &str| {
        attrs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("portcullis.route"), Some("orders"));
    assert_eq!(get("portcullis.decision"), Some("allow"));
    assert_eq!(get("portcullis.reason"), Some("allowed"));
    assert_eq!(get("portcullis.identity.type"), Some("user"));
    assert_eq!(get("portcullis.identity.subject"), Some("alice"));
    // Exactly these keys: nothing the audit line does not carry (no claims, no
    // headers, no email or groups), so no place for a token to hide. (The e2e
    // test searches every exported byte for the real tokens it sent.)
    let mut keys: Vec<&str> = attrs.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "client.address",
            "http.request.method",
            "http.response.status_code",
            "portcullis.decision",
            "portcullis.frontend",
            "portcullis.identity.client_id",
            "portcullis.identity.subject",
            "portcullis.identity.type",
            "portcullis.reason",
            "portcullis.request_id",
            "portcullis.route",
            "portcullis.rule",
            "server.address",
            "url.path",
        ]
    );
}

#[test]
fn an_unsampled_parent_is_followed_and_nothing_is_built() {
    let (t, kept) = telemetry();
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let (trace, span) = t.begin(Some(incoming));
    assert!(span.is_none());
    assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(trace.flags, "00");
    assert!(kept.0.lock().unwrap().is_empty());
}

#[test]
fn a_refused_authentication_is_an_error_child() {
    let (t, kept) = telemetry();
    let (_, span) = t.begin(None);
    let mut span = span.unwrap();
    let now = Instant::now();
    span.authenticated(&AuthTiming {
        started: now,
        ended: now,
        refused: Some(Reason::InvalidToken),
    });
    let spans = kept.0.lock().unwrap().clone();
    assert_eq!(spans[0].name, "authenticate");
    assert_eq!(spans[0].status, Status::error("invalid_token"));
}
