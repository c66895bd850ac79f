//! Per-RPC tracing and metrics: a span that continues the caller's W3C trace
//! (`traceparent`/`tracestate` metadata), carries the trace id into every log line, and
//! records the outcome attributes, status and latency.

use crate::api::SERVICE_NAME;
use crate::telemetry::Metrics;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{TraceContextExt, TraceId};
use std::time::Instant;
use tonic::Status;
use tonic::metadata::{KeyRef, MetadataMap};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Reads W3C trace context from gRPC metadata.
struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                KeyRef::Ascii(k) => Some(k.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// An RPC in progress: its span and start time.
#[derive(Debug)]
pub struct Rpc {
    pub span: Span,
    method: &'static str,
    started: Instant,
}

impl Rpc {
    /// Starts the span of `method` (e.g. "ReportOutcome") as a child of the caller's
    /// trace when the metadata carries one.
    pub fn start(method: &'static str, full_name: &'static str, metadata: &MetadataMap) -> Rpc {
        // Most callers send no trace context: skip the propagator (a global lock and a
        // key scan) unless the W3C header is there.
        let parent = if metadata.contains_key("traceparent") {
            opentelemetry::global::get_text_map_propagator(|p| {
                p.extract(&MetadataExtractor(metadata))
            })
        } else {
            opentelemetry::Context::new()
        };
        let span = if crate::telemetry::exporting_spans() {
            tracing::info_span!(
                "rpc",
                otel.name = full_name,
                otel.kind = "server",
                otel.status_code = Empty,
                rpc.system = "grpc",
                rpc.service = SERVICE_NAME,
                rpc.method = method,
                rpc.grpc.status_code = Empty,
                trace_id = Empty,
                outcome.category = Empty,
                outcome.sip_code = Empty,
                decision.action = Empty,
                decision.rule = Empty,
                decision.policy_version = Empty,
            )
        } else {
            // Nothing is exported: the span only gives log lines their method and trace
            // id, and nothing is logged above DEBUG while a request is served. So it is a
            // DEBUG span: at the default level it is never built (building it and
            // formatting its fields was the largest cost the service added to a request).
            // Every field the log layer keeps is formatted on each `record`, so the
            // outcome fields are left out (recording an absent field is a no-op).
            tracing::debug_span!("rpc", rpc.method = method, trace_id = Empty)
        };
        if span.is_disabled() {
            return Rpc {
                span,
                method,
                started: Instant::now(),
            };
        }
        let remote = parent.span().span_context().clone();
        // Fails only when no OpenTelemetry layer is installed (no export): then the
        // caller's trace id is still logged below.
        let _ = span.set_parent(parent);
        let local = span.context().span().span_context().clone();
        let trace_id = if local.is_valid() {
            local.trace_id()
        } else if remote.is_valid() {
            remote.trace_id()
        } else {
            // No exporter and no caller trace: a fresh id still ties this request's
            // log lines together. A counter under a per-process random prefix is unique
            // without a system call per request (a UUID asked the kernel for randomness).
            fresh_trace_id()
        };
        span.record("trace_id", tracing::field::display(trace_id));
        Rpc {
            span,
            method,
            started: Instant::now(),
        }
    }

    /// Records the status and latency of a finished RPC.
    pub fn finish<T>(&self, metrics: &Metrics, result: &Result<T, Status>) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        self.span.record("rpc.grpc.status_code", code as i32);
        if let Err(status) = result {
            self.span.record("otel.status_code", "ERROR");
            if code == tonic::Code::InvalidArgument {
                metrics.invalid(self.method);
            }
            tracing::debug!(parent: &self.span, code = ?code, message = status.message(), "rpc failed");
        }
        metrics.rpc(self.method, code_name(code), self.started.elapsed());
    }
}

/// A trace id no other request of this process has had: a random 64-bit prefix chosen
/// at start, then a counter. Never all zeros (an invalid trace id).
fn fresh_trace_id() -> TraceId {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(|| {
        // The low 64 bits of a UUIDv7 are random (62 of them): asked once per process.
        uuid::Uuid::now_v7().as_u128() as u64
    });
    let sequence = NEXT.fetch_add(1, Ordering::Relaxed);
    TraceId::from_bytes(((u128::from(prefix) << 64) | u128::from(sequence)).to_be_bytes())
}

/// The canonical upper-case name of a gRPC code (as in the gRPC spec).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
