//! The exporter: the SDK's tracer provider with a bounded batch processor in
//! front of the OTLP/gRPC exporter, and the sampler of SPEC §2.
//!
//! Requests never wait for the collector: a finished span is handed to the
//! SDK's batch thread with a non-blocking send into a bounded queue, and
//! dropped when the queue is full (a dead or slow collector costs spans, never
//! latency). The thread exports a batch at a time with a timeout.

use super::span::RequestSpan;
use crate::request_meta::{self, TraceContext};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::Context;
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter,
};
use opentelemetry_sdk::Resource;
use portcullis_config::TelemetryConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::ClientTlsConfig;

/// Finished spans held for the exporter; past this, new ones are dropped.
const QUEUE_SPANS: usize = 2048;
/// Spans per export request.
const BATCH_SPANS: usize = 512;
/// How often a partial batch is sent: traces show up within about a second.
const BATCH_EVERY: Duration = Duration::from_secs(1);
/// One export that has not been answered by then has failed (its spans are lost).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// While exports keep failing, the warning is repeated at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The running exporter, started once with the server.
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Telemetry {
    /// Starts exporting to `cfg.otlp_endpoint`, or nothing when `telemetry` is
    /// absent. Must run inside the control plane's tokio runtime: the gRPC
    /// channel's connection task lives there. Connects lazily, so a collector
    /// that is down at startup delays nothing.
    pub fn start(cfg: Option<&TelemetryConfig>) -> Result<Option<Telemetry>, String> {
        let Some(cfg) = cfg else { return Ok(None) };
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(cfg.otlp_endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT);
        if cfg
            .otlp_endpoint
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            // tonic trusts no root unless told which.
            builder = builder.with_tls_config(ClientTlsConfig::new().with_webpki_roots());
        }
        let exporter = builder
            .build()
            .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
        let exporter = Reported {
            inner: exporter,
            endpoint: cfg.otlp_endpoint.clone(),
            failing: AtomicBool::new(false),
            warned: Mutex::new(None),
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE_SPANS)
            .with_max_export_batch_size(BATCH_SPANS)
            .with_scheduled_delay(BATCH_EVERY)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::new(exporter, batch))
            .with_sampler(sampler(cfg.sample_ratio))
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            )
            .build();
        tracing::info!(
            endpoint = %cfg.otlp_endpoint,
            service_name = %cfg.service_name,
            sample_ratio = cfg.sample_ratio,
            "exporting traces over OTLP/gRPC"
        );
        Ok(Some(Telemetry::with_provider(provider)))
    }

    /// A tracer over `provider` (the tests give theirs an in-memory exporter).
    pub(super) fn with_provider(provider: SdkTracerProvider) -> Telemetry {
        let tracer = provider.tracer("portcullis");
        Telemetry { provider, tracer }
    }

    /// The request's trace context and, when sampled, its server span. The
    /// trace is the trusted peer's (`traceparent`, already filtered by the
    /// caller) when there is one, else a new one.
    pub fn begin(&self, traceparent: Option<&str>) -> (TraceContext, Option<RequestSpan>) {
        let parent = traceparent
            .and_then(remote_parent)
            .map_or_else(Context::new, |sc| {
                Context::new().with_remote_span_context(sc)
            });
        let span = RequestSpan::start(&self.tracer, &parent);
        let sc = span.context();
        if !sc.is_valid() {
            // The provider was already shut down: keep the ids going anyway.
            return (TraceContext::continue_or_start(traceparent), None);
        }
        let trace = TraceContext {
            trace_id: format!("{:032x}", sc.trace_id()),
            span_id: format!("{:016x}", sc.span_id()),
            flags: if sc.is_sampled() { "01" } else { "00" }.to_string(),
        };
        // An unsampled request carries its ids on, and nothing else is built.
        (trace, sc.is_sampled().then_some(span))
    }

    /// Flushes what is queued, waiting at most `within` (a dead collector must
    /// not hold up the exit), and stops the exporter.
    pub async fn shutdown(&self, within: Duration) {
        let provider = self.provider.clone();
        // The SDK's shutdown blocks this thread until the batch thread is done.
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(within));
        match tokio::time::timeout(within + Duration::from_millis(500), flushed).await {
            Ok(Ok(Ok(()))) => tracing::debug!("traces flushed"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "traces not flushed at shutdown"),
            Ok(Err(_)) | Err(_) => tracing::warn!(?within, "traces not flushed at shutdown"),
        }
    }
}

/// SPEC §2: a new trace is sampled with `ratio`; a trusted peer's decision is
/// kept, so a sampled incoming `traceparent` is always recorded (and an
/// unsampled one is not, as every W3C participant would).
fn sampler(ratio: f64) -> Sampler {
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
}

/// The trusted peer's span as the parent of ours.
fn remote_parent(traceparent: &str) -> Option<SpanContext> {
    let p = request_meta::parse_traceparent(traceparent)?;
    let flags = u8::from_str_radix(p.flags, 16).ok()?;
    Some(SpanContext::new(
        TraceId::from_hex(p.trace_id).ok()?,
        SpanId::from_hex(p.parent_id).ok()?,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

/// The OTLP exporter, saying when exports start failing and when they recover
/// (the SDK itself is built without its internal logs).
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    endpoint: String,
    failing: AtomicBool,
    warned: Mutex<Option<Instant>>,
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "trace export works again");
                }
            }
            Err(e) => {
                self.failing.store(true, Ordering::Relaxed);
                let now = Instant::now();
                let due = self.warned.lock().is_ok_and(|mut last| {
                    let due = last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY);
                    if due {
                        *last = Some(now);
                    }
                    due
                });
                if due {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        error = %e,
                        spans,
                        "trace export failed; spans are dropped while the collector does not answer"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
