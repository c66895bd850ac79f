//! Telemetry: logs, traces and metrics.
//!
//! Owns the global `tracing` subscriber (text or JSON logs, `RUST_LOG` or the configured
//! level), the W3C trace-context propagator, OTLP trace export configured by the standard
//! `OTEL_*` environment variables, and the service's metrics (OpenTelemetry instruments
//! read by a Prometheus registry for `/metrics` and, when configured, by an OTLP reader).
//! It decides nothing about calls and parses no requests.
//!
//! Exporting never blocks a request: spans go through the SDK's batch processor (a
//! bounded queue, dropped when full, exported from its own thread) and metrics are read
//! by a periodic reader. With no OTLP endpoint in the environment nothing is exported and
//! the OpenTelemetry tracing layer is not installed at all, so the hot path only pays for
//! the RPC span that carries the trace id of every log line.

use crate::domain::{Action, Decision};
use crate::domain::{Category, Classification, RetryAfterScope};
use crate::events::EventLog;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    Counter, Histogram, MeterProvider, ObservableCounter, ObservableGauge,
};
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For terminals.
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// Instrumentation scope and default `service.name`.
pub const OTEL_SERVICE: &str = "call-outcome";

/// Whether spans are exported (the OpenTelemetry layer is installed). Without export the
/// RPC span only has to carry the trace id of log lines, so it stays minimal.
static EXPORTING_SPANS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// See [`EXPORTING_SPANS`].
pub fn exporting_spans() -> bool {
    EXPORTING_SPANS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Errors while setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error("metrics: {0}")]
    Metrics(String),
}

/// Where OTLP data goes, read from the standard environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtlpSettings {
    /// Export spans (an endpoint is set and `OTEL_TRACES_EXPORTER` is not `none`).
    pub traces: bool,
    /// Export metrics (an endpoint is set and `OTEL_METRICS_EXPORTER` is not `none`).
    pub metrics: bool,
    /// An explicit trace collector endpoint (tests, embedding); `None` lets the exporter
    /// read `OTEL_EXPORTER_OTLP_*` itself.
    pub traces_endpoint: Option<String>,
}

impl OtlpSettings {
    /// Reads `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`
    /// and `OTEL_{TRACES,METRICS}_EXPORTER`. The exporters read the rest themselves
    /// (headers, timeouts, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, ...).
    pub fn from_env() -> Self {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        let not_none = |name: &str| std::env::var(name).map_or(true, |v| v.trim() != "none");
        let any_endpoint = set("OTEL_EXPORTER_OTLP_ENDPOINT");
        OtlpSettings {
            traces: (any_endpoint || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
                && not_none("OTEL_TRACES_EXPORTER"),
            metrics: (any_endpoint || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
                && not_none("OTEL_METRICS_EXPORTER"),
            traces_endpoint: None,
        }
    }
}

fn resource() -> opentelemetry_sdk::Resource {
    let builder = opentelemetry_sdk::Resource::builder();
    // The builder reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; only name the
    // service ourselves when the environment does not.
    if std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty()) {
        builder.build()
    } else {
        builder.with_service_name(OTEL_SERVICE).build()
    }
}

/// Keeps the trace exporter alive; flushes it (bounded) when dropped or shut down.
#[derive(Debug, Default)]
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
}

impl TracingGuard {
    /// Exports pending spans now. Blocks the calling thread (use `spawn_blocking` from
    /// async code); a no-op without an exporter.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }

    /// Flushes pending spans, waiting at most a few seconds.
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Shutdown blocks on the exporter thread; never let a dead collector hold the
            // process: give it its own thread and a deadline.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = provider.shutdown();
                let _ = tx.send(());
            });
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Installs the global subscriber: logs (text for terminals, JSON lines otherwise) and,
/// when `otlp.traces`, the OpenTelemetry layer exporting spans over OTLP/gRPC. Sets the
/// W3C trace-context propagator (the default one ignores `traceparent`). Must run inside
/// a Tokio runtime (the tonic exporter needs one). A second call keeps the first
/// subscriber.
pub fn init(
    format: LogFormat,
    level: &str,
    otlp: &OtlpSettings,
) -> Result<TracingGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    // Colour only for people: escape codes in files and log collectors are noise.
    let ansi = std::io::stderr().is_terminal();
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed(),
    };
    let mut guard = TracingGuard::default();
    let traces = if otlp.traces {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(endpoint) = &otlp.traces_endpoint {
            use opentelemetry_otlp::WithExportConfig;
            exporter = exporter.with_endpoint(endpoint.clone());
        }
        let exporter = exporter
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build();
        let tracer = provider.tracer(OTEL_SERVICE);
        guard.provider = Some(provider);
        // The span layer has its own filter: the child spans (classify, store, publish)
        // are DEBUG so that, without export, they cost nothing; with export they are on.
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(EnvFilter::new("call_outcome=debug,warn")),
        )
    } else {
        None
    };
    let exporting = traces.is_some();
    if tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok()
    {
        EXPORTING_SPANS.store(exporting, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(guard)
}

/// Histogram boundaries for RPC latency, in seconds (50 µs to 10 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// The service's metrics. One per server, so that servers started side by side (tests,
/// benchmarks) count separately. Names follow the Prometheus style with the
/// `calloutcome_` prefix; counters get `_total` and the latency histogram `_seconds`
/// from the Prometheus exporter.
pub struct Metrics {
    provider: SdkMeterProvider,
    /// Collected through callbacks; kept so the registrations live as long as the metrics.
    _observed: ([ObservableCounter<u64>; 9], ObservableGauge<u64>),
    registry: prometheus::Registry,
    /// The per-report counters live in atomics read by observable instruments at
    /// collection: an SDK counter `add` hashes its attribute set and takes a lock on
    /// every call, several times per report.
    hot: Arc<HotCounters>,
    invalid: Counter<u64>,
    backend_errors: Counter<u64>,
    rpc_duration: Histogram<f64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The `(component, kind)` pairs of `calloutcome_backend_errors_total`, exported at 0
/// from the start (see `api::pipeline_error` for where each is counted).
const BACKEND_ERROR_KINDS: &[(&str, &str)] = &[
    ("store", "unavailable"),
    ("store", "in_progress"),
    ("store", "backend"),
    ("events", "unavailable"),
    ("events", "backend"),
];

/// `[metrics]`: per-carrier visibility. The outcome label `carrier_label` (e.g.
/// `carrier`) becomes a label of `calloutcome_outcomes_total` with the same name; its
/// values in `carrier_values` are kept and any other (or a missing label) is `other`, so
/// the series stay bounded whatever callers send.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The outcome label to break outcomes down by; "" (the default) keeps it off.
    pub carrier_label: String,
    /// Its values with series of their own (at most 256); others are `other`.
    pub carrier_values: Vec<String>,
}

impl MetricsConfig {
    /// A Prometheus label name that is not one of the counter's own, and a bounded,
    /// duplicate-free value list.
    pub fn validate(&self) -> Result<(), String> {
        if self.carrier_label.is_empty() {
            return if self.carrier_values.is_empty() {
                Ok(())
            } else {
                Err("metrics.carrier_values needs metrics.carrier_label".into())
            };
        }
        let key = &self.carrier_label;
        let valid = key
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit()));
        if !valid || key.starts_with("__") {
            return Err(format!(
                "metrics.carrier_label `{key}`: a metric label name is lower-case letters, \
                 digits and `_`, not starting with a digit or `__`"
            ));
        }
        if ["category", "sip_class", "action"].contains(&key.as_str()) {
            return Err(format!(
                "metrics.carrier_label `{key}` is already a label of calloutcome_outcomes_total"
            ));
        }
        if self.carrier_values.is_empty() || self.carrier_values.len() > MAX_CARRIERS {
            return Err(format!(
                "metrics.carrier_values: list 1 to {MAX_CARRIERS} values (others count as `other`)"
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for value in &self.carrier_values {
            if value.is_empty() || value == OTHER_CARRIER || !seen.insert(value) {
                return Err(format!(
                    "metrics.carrier_values: `{value}` is empty, `other` or listed twice"
                ));
            }
        }
        Ok(())
    }
}

/// Most carrier values with series of their own.
const MAX_CARRIERS: usize = 256;
/// The carrier of outcomes without a listed value.
const OTHER_CARRIER: &str = "other";

impl Metrics {
    /// Builds the instruments. `events` and `active_subscribers` are read when metrics
    /// are collected, never on the request path.
    pub fn new(
        otlp: &OtlpSettings,
        events: Arc<dyn EventLog>,
        active_subscribers: Arc<dyn Fn() -> u64 + Send + Sync>,
        carriers: &MetricsConfig,
    ) -> Result<Metrics, TelemetryError> {
        let registry = prometheus::Registry::new();
        let prometheus_reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            // Scope labels on every series are noise for a single-scope service.
            .scope_info_enabled(false)
            .build()
            .map_err(|e| TelemetryError::Metrics(e.to_string()))?;
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource())
            .with_reader(prometheus_reader);
        if otlp.metrics {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            builder = builder.with_periodic_exporter(exporter);
        }
        let provider = builder.build();
        let meter = provider.meter(OTEL_SERVICE);

        let counters = Arc::clone(&events);
        let events_published = meter
            .u64_observable_counter("calloutcome_events_published")
            .with_description("Events appended to the event log.")
            .with_callback(move |o| {
                o.observe(
                    counters
                        .counters()
                        .published
                        .load(std::sync::atomic::Ordering::Relaxed),
                    &[],
                )
            })
            .build();
        let counters = Arc::clone(&events);
        let events_delivered = meter
            .u64_observable_counter("calloutcome_events_delivered")
            .with_description("Events delivered to subscribers (one per subscriber).")
            .with_callback(move |o| {
                o.observe(
                    counters
                        .counters()
                        .delivered
                        .load(std::sync::atomic::Ordering::Relaxed),
                    &[],
                )
            })
            .build();
        let counters = Arc::clone(&events);
        let events_dropped = meter
            .u64_observable_counter("calloutcome_events_dropped")
            .with_description(
                "Events a subscriber did not get because they left retention (summed over gaps).",
            )
            .with_callback(move |o| {
                o.observe(
                    counters
                        .counters()
                        .skipped
                        .load(std::sync::atomic::Ordering::Relaxed),
                    &[],
                )
            })
            .build();
        let counters = Arc::clone(&events);
        let gaps = meter
            .u64_observable_counter("calloutcome_event_gaps")
            .with_description("Gap notices sent to subscribers.")
            .with_callback(move |o| {
                o.observe(
                    counters
                        .counters()
                        .gaps
                        .load(std::sync::atomic::Ordering::Relaxed),
                    &[],
                )
            })
            .build();
        let active = meter
            .u64_observable_gauge("calloutcome_active_subscribers")
            .with_description("Event subscriptions open now.")
            .with_callback(move |o| o.observe(active_subscribers(), &[]))
            .build();

        let hot = Arc::new(HotCounters::new(carriers));
        let counters = Arc::clone(&hot);
        let outcomes = meter
            .u64_observable_counter("calloutcome_outcomes")
            .with_description("Recorded outcomes by category, SIP class and decided action.")
            .with_callback(move |o| counters.observe_outcomes(o))
            .build();
        let counters = Arc::clone(&hot);
        let decisions = meter
            .u64_observable_counter("calloutcome_decisions")
            .with_description(
                "Decisions by action and the policy rule that made them (reports and classifications).",
            )
            .with_callback(move |o| counters.observe_decisions(o))
            .build();
        let counters = Arc::clone(&hot);
        let duplicates = meter
            .u64_observable_counter("calloutcome_duplicates")
            .with_description("Reports that repeated an earlier one and were not recorded again.")
            .with_callback(move |o| o.observe(counters.duplicates.load(Ordering::Relaxed), &[]))
            .build();
        let counters = Arc::clone(&hot);
        let retry_after = meter
            .u64_observable_counter("calloutcome_retry_after")
            .with_description(
                "Recorded outcomes whose valid Retry-After applied, by scope: callee (the callee asks for time) or route (a server or route is unavailable: many at once is a storm).",
            )
            .with_callback(move |o| {
                for (scope, count) in [
                    ("callee", &counters.retry_after_callee),
                    ("route", &counters.retry_after_route),
                ] {
                    o.observe(count.load(Ordering::Relaxed), &[KeyValue::new("scope", scope)]);
                }
            })
            .build();
        let counters = Arc::clone(&hot);
        let suppressions = meter
            .u64_observable_counter("calloutcome_suppressions")
            .with_description("Reports whose destination the policy suppressed.")
            .with_callback(move |o| o.observe(counters.suppressions.load(Ordering::Relaxed), &[]))
            .build();

        let backend_errors = meter
            .u64_counter("calloutcome_backend_errors")
            .with_description("Store or event-log failures, by backend component and kind.")
            .build();
        // Every series an alert watches exists from the start, at 0, so that a rate over
        // it is 0 rather than absent (Prometheus' "avoid missing metrics").
        for (component, kind) in BACKEND_ERROR_KINDS {
            backend_errors.add(
                0,
                &[
                    KeyValue::new("component", *component),
                    KeyValue::new("kind", *kind),
                ],
            );
        }

        Ok(Metrics {
            hot,
            invalid: meter
                .u64_counter("calloutcome_invalid_requests")
                .with_description("Requests rejected with INVALID_ARGUMENT, by RPC method.")
                .build(),
            backend_errors,
            rpc_duration: meter
                .f64_histogram("calloutcome_rpc_duration")
                .with_unit("s")
                .with_description(
                    "RPC latency (unary: until the response; streams: until the stream opens).",
                )
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            provider,
            registry,
            _observed: (
                [
                    events_published,
                    events_delivered,
                    events_dropped,
                    gaps,
                    outcomes,
                    decisions,
                    duplicates,
                    suppressions,
                    retry_after,
                ],
                active,
            ),
        })
    }

    /// The carrier slot of an outcome with these labels (0: `other`, or the feature is
    /// off); taken before the outcome moves into the pipeline.
    pub fn carrier(&self, labels: &std::collections::BTreeMap<String, String>) -> usize {
        let Some((key, values)) = &self.hot.carriers else {
            return 0;
        };
        labels
            .get(key)
            .and_then(|value| values.iter().position(|v| v == value))
            .map_or(0, |i| i + 1)
    }

    /// A recorded (or duplicate) report of the carrier slot `carrier`.
    pub fn report(
        &self,
        classification: &Classification,
        decision: &Decision,
        duplicate: bool,
        carrier: usize,
    ) {
        let hot = &self.hot;
        if duplicate {
            hot.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let slot = carrier * OUTCOME_SLOTS + outcome_slot(classification, decision);
        if let Some(counter) = hot.outcomes.get(slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        match classification.retry_after.map(|ra| ra.scope) {
            Some(RetryAfterScope::Callee) => {
                hot.retry_after_callee.fetch_add(1, Ordering::Relaxed);
            }
            Some(RetryAfterScope::Route) => {
                hot.retry_after_route.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
        self.decision(decision);
        if decision.suppressed {
            hot.suppressions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A decision made (report or classification).
    pub fn decision(&self, decision: &Decision) {
        self.hot.decision(decision);
    }

    /// A request rejected as invalid.
    pub fn invalid(&self, method: &'static str) {
        self.invalid.add(1, &[KeyValue::new("rpc_method", method)]);
    }

    /// A backend failure (`component`: store or events; `kind`: unavailable, backend, ...).
    pub fn backend_error(&self, component: &'static str, kind: &'static str) {
        self.backend_errors.add(
            1,
            &[
                KeyValue::new("component", component),
                KeyValue::new("kind", kind),
            ],
        );
    }

    /// One RPC's latency and gRPC status code name.
    pub fn rpc(&self, method: &'static str, code: &'static str, elapsed: Duration) {
        self.rpc_duration.record(
            elapsed.as_secs_f64(),
            &[
                KeyValue::new("rpc_method", method),
                KeyValue::new("grpc_code", code),
            ],
        );
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, TelemetryError> {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .map_err(|e| TelemetryError::Metrics(e.to_string()))
    }

    /// The service's meter, for instruments owned by other modules (limits).
    pub fn meter(&self) -> opentelemetry::metrics::Meter {
        self.provider.meter(OTEL_SERVICE)
    }

    /// Flushes the OTLP reader, if any (bounded by the SDK's own timeouts).
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// SIP classes, in the order of [`sip_class_index`].
const SIP_CLASSES: [&str; 6] = ["2xx", "3xx", "4xx", "5xx", "6xx", "none"];

fn sip_class_index(code: Option<u16>) -> usize {
    match code {
        Some(200..=299) => 0,
        Some(300..=399) => 1,
        Some(400..=499) => 2,
        Some(500..=599) => 3,
        Some(600..=699) => 4,
        _ => 5,
    }
}

fn category_index(category: Category) -> usize {
    Category::ALL
        .iter()
        .position(|c| *c == category)
        .unwrap_or_default()
}

fn action_index(action: Action) -> usize {
    Action::ALL
        .iter()
        .position(|a| *a == action)
        .unwrap_or_default()
}

/// Index of (category, SIP class, action) in [`HotCounters::outcomes`].
fn outcome_slot(classification: &Classification, decision: &Decision) -> usize {
    (category_index(classification.category) * SIP_CLASSES.len()
        + sip_class_index(classification.sip_code))
        * Action::ALL.len()
        + action_index(decision.action)
}

/// Slots of one carrier's outcomes: (category, SIP class, action).
const OUTCOME_SLOTS: usize = Category::ALL.len() * SIP_CLASSES.len() * Action::ALL.len();

/// Counters bumped on every report, read only when metrics are collected.
struct HotCounters {
    /// One per (carrier, category, SIP class, action); see [`outcome_slot`]. Carrier 0
    /// is `other` (and the only one when `[metrics]` names no carrier label).
    outcomes: Box<[AtomicU64]>,
    /// The outcome label and its values with series of their own.
    carriers: Option<(String, Vec<String>)>,
    /// Per policy rule (a bounded set: the policy's rule names), one per action.
    decisions: parking_lot::RwLock<HashMap<String, Box<[AtomicU64]>, foldhash::fast::RandomState>>,
    duplicates: AtomicU64,
    suppressions: AtomicU64,
    retry_after_callee: AtomicU64,
    retry_after_route: AtomicU64,
}

impl HotCounters {
    fn new(config: &MetricsConfig) -> Self {
        let carriers = (!config.carrier_label.is_empty())
            .then(|| (config.carrier_label.clone(), config.carrier_values.clone()));
        let groups = 1 + carriers.as_ref().map_or(0, |(_, values)| values.len());
        HotCounters {
            outcomes: (0..groups * OUTCOME_SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            carriers,
            decisions: parking_lot::RwLock::default(),
            duplicates: AtomicU64::new(0),
            suppressions: AtomicU64::new(0),
            retry_after_callee: AtomicU64::new(0),
            retry_after_route: AtomicU64::new(0),
        }
    }
}

impl HotCounters {
    fn decision(&self, decision: &Decision) {
        let action = action_index(decision.action);
        if let Some(row) = self.decisions.read().get(decision.rule.as_str()) {
            row[action].fetch_add(1, Ordering::Relaxed);
            return;
        }
        // First decision by this rule: add its row (rule names come from the policy,
        // so the map stays as small as the policy).
        self.decisions
            .write()
            .entry(decision.rule.clone())
            .or_insert_with(|| Action::ALL.iter().map(|_| AtomicU64::new(0)).collect())[action]
            .fetch_add(1, Ordering::Relaxed);
    }

    fn observe_outcomes(&self, observer: &dyn opentelemetry::metrics::AsyncInstrument<u64>) {
        let groups = self.outcomes.len() / OUTCOME_SLOTS;
        for group in 0..groups {
            let carrier = self.carriers.as_ref().map(|(key, values)| {
                let value = match group {
                    0 => OTHER_CARRIER.to_owned(),
                    g => values.get(g - 1).cloned().unwrap_or_default(),
                };
                KeyValue::new(key.clone(), value)
            });
            for (c, category) in Category::ALL.iter().enumerate() {
                for (s, class) in SIP_CLASSES.iter().enumerate() {
                    for (a, action) in Action::ALL.iter().enumerate() {
                        let slot = group * OUTCOME_SLOTS
                            + (c * SIP_CLASSES.len() + s) * Action::ALL.len()
                            + a;
                        let count = self.outcomes[slot].load(Ordering::Relaxed);
                        // Series appear once they have counted something, as SDK counters do.
                        if count > 0 {
                            let mut attributes = vec![
                                KeyValue::new("category", category.as_str()),
                                KeyValue::new("sip_class", *class),
                                KeyValue::new("action", action.as_str()),
                            ];
                            attributes.extend(carrier.clone());
                            observer.observe(count, &attributes);
                        }
                    }
                }
            }
        }
    }

    fn observe_decisions(&self, observer: &dyn opentelemetry::metrics::AsyncInstrument<u64>) {
        for (rule, row) in self.decisions.read().iter() {
            for (a, action) in Action::ALL.iter().enumerate() {
                let count = row[a].load(Ordering::Relaxed);
                if count > 0 {
                    observer.observe(
                        count,
                        &[
                            KeyValue::new("action", action.as_str()),
                            KeyValue::new("rule", rule.clone()),
                        ],
                    );
                }
            }
        }
    }
}

#[cfg(test)]
fn sip_class(code: Option<u16>) -> &'static str {
    SIP_CLASSES[sip_class_index(code)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_classes() {
        assert_eq!(sip_class(Some(603)), "6xx");
        assert_eq!(sip_class(Some(200)), "2xx");
        assert_eq!(sip_class(None), "none");
    }

    #[test]
    // figment's Jail API fixes the closure's error type.
    #[allow(clippy::result_large_err)]
    fn otlp_settings_follow_the_standard_variables() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            assert_eq!(OtlpSettings::from_env(), OtlpSettings::default());
            jail.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
            assert_eq!(
                OtlpSettings::from_env(),
                OtlpSettings {
                    traces: true,
                    metrics: true,
                    traces_endpoint: None,
                }
            );
            jail.set_env("OTEL_METRICS_EXPORTER", "none");
            assert!(!OtlpSettings::from_env().metrics);
            Ok(())
        });
    }
}
