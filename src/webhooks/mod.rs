//! The HTTP edge for provider call-status callbacks: `POST
//! /v1/webhooks/{provider}/{tenant}`, a second front door into the one report pipeline.
//!
//! A callback flows: route (404) → method (405) → size cap (413, before reading) →
//! raw body → media type (415) → signature on the exact bytes (401; `crate::auth::webhook`)
//! → read (400; `crate::providers::callback`) → non-terminal events answered 200 and
//! counted, nothing recorded → correlation from the URL → the tenant's rate limit (429)
//! and in-flight share (503) → `Pipeline::report` → 200 once recorded as durably as a
//! gRPC report, 503 when the backend could not record it (the provider retries). A
//! refused request records nothing.
//!
//! Owns the HTTP mapping of those steps (one [`WebhookError`] → status), the public URL
//! the providers signed, and `calloutcome_webhooks_total`. It holds no business rule
//! (classification and policy run in the pipeline) and no provider knowledge (the
//! envelopes live in `providers::callback`, the algorithms in `auth::webhook`).

pub mod config;

use crate::admission::{Admission, ConnectionId, Shed};
use crate::auth::webhook::{
    ReplayCache, SignatureError, body_sha256_matches, url_variants, verify_plivo,
    verify_signalwire_json, verify_telnyx, verify_twilio, verify_vonage,
};
use crate::domain::{Outcome, Tenant};
use crate::pipeline::{Pipeline, PipelineError};
use crate::providers::callback::{self, BodyFormat, CallbackError, Params, WebhookProvider};
use crate::quota::{LimitedRpc, RateLimited, RateLimits};
use crate::telemetry::Metrics;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use config::{IpNet, RouteConfig, RouteSecrets};
use http_body_util::BodyExt;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::Instrument;

/// The route every provider posts to.
pub const ROUTE: &str = "/v1/webhooks/{provider}/{tenant}";

/// Bounds on what a callback may put into an outcome (the gRPC request limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeBounds {
    pub max_call_id_bytes: usize,
    pub max_party_bytes: usize,
    pub max_label_value_bytes: usize,
    pub max_attempt: u32,
}

/// What the edge needs besides the pipeline.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub max_body_bytes: usize,
    pub timestamp_tolerance: Duration,
    pub replay_memory: Duration,
    pub trusted_proxies: Vec<IpNet>,
    /// The listener serves TLS (the scheme of a reconstructed URL).
    pub tls: bool,
    /// Time for the body to arrive after the headers (then 408).
    pub body_read_timeout: Duration,
    pub bounds: OutcomeBounds,
}

/// A configured `(tenant, provider)` route.
#[derive(Debug, PartialEq)]
struct Route {
    tenant: Tenant,
    config: RouteConfig,
}

/// The webhook edge: routes, settings and what it shares with the gRPC edge.
pub struct WebhookEdge {
    pipeline: Pipeline,
    /// Swapped whole when a reload reads new secrets; a callback keeps the table it
    /// started with.
    routes: parking_lot::RwLock<Arc<RouteTable>>,
    settings: WebhookSettings,
    admission: Arc<Admission>,
    rate_limits: Option<Arc<RateLimits>>,
    replays: ReplayCache,
    metrics: Arc<Metrics>,
    counter: Counter<u64>,
}

impl std::fmt::Debug for WebhookEdge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEdge")
            .field("routes", &self.routes.read().len())
            .finish_non_exhaustive()
    }
}

/// Why a callback was not accepted. One mapping to an HTTP status and one to the
/// metric's `result` label.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no webhook route for this provider and tenant")]
    NotFound,
    #[error("only POST is accepted (a GET callback's fields are not signed)")]
    Method,
    #[error("the body is over webhooks.max_body_bytes ({0} bytes)")]
    TooLarge(usize),
    #[error("the body did not arrive in time")]
    BodyTimeout,
    #[error("the body could not be read")]
    BodyRead,
    #[error("Content-Type must be application/json or application/x-www-form-urlencoded")]
    MediaType,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    RateLimited(RateLimited),
    #[error("{0}")]
    Overloaded(Shed),
    #[error("the report could not be recorded: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl WebhookError {
    /// The HTTP status: 401 for any signature problem (no detail that helps an
    /// attacker), 503 whenever a retry may succeed, 4xx for what a retry cannot fix.
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookError::NotFound => StatusCode::NOT_FOUND,
            WebhookError::Method => StatusCode::METHOD_NOT_ALLOWED,
            WebhookError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            WebhookError::BodyRead | WebhookError::Malformed(_) => StatusCode::BAD_REQUEST,
            WebhookError::MediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WebhookError::Signature(_) => StatusCode::UNAUTHORIZED,
            WebhookError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            WebhookError::Overloaded(_) | WebhookError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            WebhookError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `result` label of `calloutcome_webhooks_total`.
    pub fn result(&self) -> &'static str {
        match self {
            WebhookError::NotFound => "not_found",
            WebhookError::Method | WebhookError::MediaType | WebhookError::BodyRead => {
                "bad_request"
            }
            WebhookError::TooLarge(_) => "too_large",
            WebhookError::BodyTimeout => "timeout",
            WebhookError::Signature(e) => e.result(),
            WebhookError::Malformed(_) => "malformed",
            WebhookError::RateLimited(_) => "rate_limited",
            WebhookError::Overloaded(_) | WebhookError::Unavailable(_) => "unavailable",
            WebhookError::Internal(_) => "internal",
        }
    }

    /// What the caller is told: everything but the signature's detail and internals.
    fn public_text(&self) -> String {
        match self {
            WebhookError::Signature(_) => "unauthorized".to_owned(),
            WebhookError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }

    fn into_response(self) -> Response {
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.public_text()),
        )
            .into_response();
        let headers = response.headers_mut();
        match &self {
            WebhookError::Method => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            WebhookError::RateLimited(limited) => {
                let seconds = limited.retry_after.as_secs_f64().ceil().max(1.0);
                if let Ok(v) = HeaderValue::from_str(&format!("{seconds:.0}")) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            WebhookError::Overloaded(_) | WebhookError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// What an accepted callback became.
#[derive(Debug)]
enum Accepted {
    /// A verified non-terminal event: counted, nothing recorded.
    Ignored { event: String },
    Recorded {
        event_id: String,
        duplicate: bool,
        category: &'static str,
        action: &'static str,
    },
}

/// By provider, then tenant: a request's route is found from its path segments without
/// building a key.
type RouteTable = HashMap<WebhookProvider, HashMap<String, Route>>;

/// The routes with their tenants parsed once.
fn route_table(
    routes: BTreeMap<(String, WebhookProvider), RouteConfig>,
    max_tenant_bytes: usize,
) -> Result<RouteTable, String> {
    let mut table = RouteTable::new();
    for ((tenant, provider), config) in routes {
        let parsed = Tenant::parse(&tenant, max_tenant_bytes)
            .map_err(|e| format!("webhooks.tenants.{tenant}: {e}"))?;
        table.entry(provider).or_default().insert(
            tenant,
            Route {
                tenant: parsed,
                config,
            },
        );
    }
    Ok(table)
}

impl WebhookEdge {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pipeline: Pipeline,
        routes: BTreeMap<(String, WebhookProvider), RouteConfig>,
        settings: WebhookSettings,
        admission: Arc<Admission>,
        rate_limits: Option<Arc<RateLimits>>,
        metrics: Arc<Metrics>,
        max_tenant_bytes: usize,
    ) -> Result<Arc<WebhookEdge>, String> {
        let table = route_table(routes, max_tenant_bytes)?;
        let counter = metrics
            .meter()
            .u64_counter("calloutcome_webhooks")
            .with_description(
                "Provider callbacks by provider and result: accepted, duplicate, ignored (a verified non-terminal event), bad_signature, stale (timestamp out of the window, or a replayed nonce), malformed, too_large, unavailable (the backend could not record it; the provider retries), rate_limited, not_found, bad_request, timeout, internal.",
            )
            .build();
        Ok(Arc::new(WebhookEdge {
            pipeline,
            routes: parking_lot::RwLock::new(Arc::new(table)),
            replays: ReplayCache::new(settings.replay_memory, 1_000_000),
            settings,
            admission,
            rate_limits,
            metrics,
            counter,
        }))
    }

    /// Re-reads the secrets every `every` (their `*_file`s: a rotated Kubernetes Secret)
    /// until `stop`. A table that reads and differs replaces the old one for the next
    /// callbacks; one that fails to read is logged and the old one kept.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        config: config::WebhooksConfig,
        max_tenant_bytes: usize,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        // Inline secrets change only with the config file, which is not re-read.
        if every.is_zero() || !config.reads_secret_files() {
            return;
        }
        let edge = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate, and the files were just read.
            ticks.tick().await;
            let mut last_error = None;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let config = config.clone();
                let read = tokio::task::spawn_blocking(move || {
                    config
                        .routes(max_tenant_bytes)
                        .and_then(|routes| route_table(routes, max_tenant_bytes))
                })
                .await;
                match read {
                    Ok(Ok(table)) => {
                        last_error = None;
                        if **edge.routes.read() != table {
                            *edge.routes.write() = Arc::new(table);
                            tracing::info!("webhook secrets reloaded");
                        }
                    }
                    Ok(Err(error)) => {
                        // Once per distinct problem: a broken file logs once, not every tick.
                        if last_error.as_ref() != Some(&error) {
                            tracing::warn!(%error, "webhook secrets not reloaded; the previous ones stay in use");
                            last_error = Some(error);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "webhook secret reload failed"),
                }
            }
        });
    }

    /// The router of the webhook listener.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route(ROUTE, axum::routing::any(handle))
            .fallback(|| async { WebhookError::NotFound.into_response() })
            .with_state(Arc::clone(self))
    }

    fn count(&self, provider: &'static str, result: &'static str) {
        self.counter.add(
            1,
            &[
                KeyValue::new("provider", provider),
                KeyValue::new("result", result),
            ],
        );
    }

    async fn accept(
        &self,
        provider: WebhookProvider,
        tenant: &str,
        request: Request,
    ) -> Result<Accepted, WebhookError> {
        let routes = Arc::clone(&self.routes.read());
        let route = routes
            .get(&provider)
            .and_then(|by_tenant| by_tenant.get(tenant))
            .ok_or(WebhookError::NotFound)?;
        if request.method() != Method::POST {
            return Err(WebhookError::Method);
        }
        let (parts, body) = request.into_parts();
        let body = self.read_body(&parts.headers, body).await?;
        let format = body_format(&parts.headers).ok_or(WebhookError::MediaType)?;
        let replay_id = self.verify(provider, route, &parts, format, &body)?;
        let forget = |result: Result<Accepted, WebhookError>| {
            // A nonce whose request recorded nothing may be used by the provider's retry.
            if let (Err(_), Some(id)) = (&result, &replay_id) {
                self.replays.forget(id);
            }
            result
        };
        forget(self.record(provider, route, &parts, format, &body).await)
    }

    /// The exact body bytes, refused over the cap before and while reading.
    async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, WebhookError> {
        let cap = self.settings.max_body_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > cap as u64) {
            return Err(WebhookError::TooLarge(cap));
        }
        let limited = http_body_util::Limited::new(body, cap);
        match tokio::time::timeout(self.settings.body_read_timeout, limited.collect()).await {
            Err(_) => Err(WebhookError::BodyTimeout),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(WebhookError::TooLarge(cap))
            }
            Ok(Err(_)) => Err(WebhookError::BodyRead),
        }
    }

    /// Checks the signature; returns the replay id it consumed (a nonce or JWT id).
    fn verify(
        &self,
        provider: WebhookProvider,
        route: &Route,
        parts: &axum::http::request::Parts,
        format: BodyFormat,
        body: &[u8],
    ) -> Result<Option<String>, WebhookError> {
        let headers = &parts.headers;
        let get = |name: &str| headers.get(name).map(HeaderValue::as_bytes);
        let now = SystemTime::now();
        let tolerance = self.settings.timestamp_tolerance;
        let form = || match format {
            BodyFormat::Form => Params::from_form(body),
            BodyFormat::Json => Params::default(),
        };
        match (&route.config.secrets, provider) {
            (RouteSecrets::Telnyx(keys), _) => {
                verify_telnyx(
                    keys,
                    get("telnyx-timestamp"),
                    get("telnyx-signature-ed25519"),
                    body,
                    now,
                    tolerance,
                )?;
                Ok(None)
            }
            (
                RouteSecrets::Shared(secrets),
                WebhookProvider::Twilio | WebhookProvider::SignalWire,
            ) => {
                let urls = self.signed_urls(route, parts);
                let (signature, name) = match provider {
                    WebhookProvider::SignalWire => match get("x-signalwire-signature") {
                        Some(s) => (Some(s), "X-SignalWire-Signature"),
                        None => (get("x-twilio-signature"), "X-SignalWire-Signature"),
                    },
                    _ => (get("x-twilio-signature"), "X-Twilio-Signature"),
                };
                let body_hash = query_value(parts.uri.query(), "bodySHA256");
                match (format, body_hash) {
                    (BodyFormat::Form, _) => {
                        verify_twilio(secrets, &urls, &form(), signature, name)?
                    }
                    (BodyFormat::Json, Some(hash)) => {
                        verify_twilio(secrets, &urls, &Params::default(), signature, name)?;
                        body_sha256_matches(&hash, body)?;
                    }
                    (BodyFormat::Json, None) if provider == WebhookProvider::SignalWire => {
                        verify_signalwire_json(secrets, &urls, body, signature)?;
                    }
                    // Twilio signs a JSON body only through the URL's bodySHA256.
                    (BodyFormat::Json, None) => {
                        return Err(SignatureError::Missing("bodySHA256 query parameter").into());
                    }
                }
                Ok(None)
            }
            (RouteSecrets::Shared(secrets), WebhookProvider::Vonage) => {
                let claims = verify_vonage(secrets, get("authorization"), body, now, tolerance)?;
                let Some(jti) = claims.jti else {
                    return Ok(None);
                };
                let id = format!("vonage\0{}\0{jti}", route.tenant);
                if !self.replays.first_use(&id) {
                    return Err(SignatureError::Replayed("JWT id (jti)").into());
                }
                Ok(Some(id))
            }
            (RouteSecrets::Shared(secrets), WebhookProvider::Plivo) => {
                let urls = self.signed_urls(route, parts);
                let nonce = get("x-plivo-signature-v3-nonce");
                verify_plivo(secrets, &urls, &form(), nonce, get("x-plivo-signature-v3"))?;
                let nonce = String::from_utf8_lossy(nonce.unwrap_or_default());
                let id = format!("plivo\0{}\0{nonce}", route.tenant);
                if !self.replays.first_use(&id) {
                    return Err(SignatureError::Replayed("nonce").into());
                }
                Ok(Some(id))
            }
            (RouteSecrets::Shared(_), WebhookProvider::Telnyx) => Err(WebhookError::Internal(
                "a Telnyx route without public keys".into(),
            )),
        }
    }

    /// The URLs the provider may have signed: the public base URL (the route's, the
    /// listener's, or the request's own scheme and host) plus the raw path and query
    /// exactly as received, with and without the default port.
    fn signed_urls(&self, route: &Route, parts: &axum::http::request::Parts) -> Vec<String> {
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let base = match &route.config.public_base_url {
            Some(base) => base.clone(),
            None => {
                let trusted = peer_ip(parts)
                    .is_some_and(|ip| self.settings.trusted_proxies.iter().any(|n| n.contains(ip)));
                let forwarded =
                    |name: &str| trusted.then(|| first_value(&parts.headers, name)).flatten();
                let scheme = forwarded("x-forwarded-proto")
                    .unwrap_or(if self.settings.tls { "https" } else { "http" })
                    .to_owned();
                let host = forwarded("x-forwarded-host")
                    .or_else(|| first_value(&parts.headers, "host"))
                    .or_else(|| parts.uri.authority().map(|a| a.as_str()))
                    .unwrap_or_default();
                format!("{scheme}://{host}")
            }
        };
        url_variants(&format!("{base}{path_and_query}"))
    }

    /// Reads a verified callback and, when it is terminal, reports it.
    async fn record(
        &self,
        provider: WebhookProvider,
        route: &Route,
        parts: &axum::http::request::Parts,
        format: BodyFormat,
        body: &[u8],
    ) -> Result<Accepted, WebhookError> {
        let callback = callback::read(provider, format, body).map_err(|e| match e {
            CallbackError::Format(_) => WebhookError::MediaType,
            other => WebhookError::Malformed(other.to_string()),
        })?;
        let span = tracing::Span::current();
        span.record("event", callback.event.as_str());
        let Some(mut outcome) = callback.outcome else {
            return Ok(Accepted::Ignored {
                event: callback.event,
            });
        };
        self.correlate(&mut outcome, parts.uri.query())?;
        self.bound(&mut outcome)?;
        let tenant = route.tenant.clone();
        if let Some(limits) = &self.rate_limits {
            limits
                .check(LimitedRpc::Report, &tenant)
                .map_err(WebhookError::RateLimited)?;
        }
        let connection = parts.extensions.get::<ConnectionId>().copied();
        let _slot = self
            .admission
            .admit("webhook", &tenant, connection)
            .map_err(WebhookError::Overloaded)?;
        let carrier = self.metrics.carrier(&outcome.labels);
        let result = self
            .pipeline
            .report(tenant, outcome)
            .await
            .map_err(|e| self.pipeline_error(e))?;
        let report = &result.report;
        self.metrics.report(
            &report.classification,
            &report.decision,
            result.duplicate,
            carrier,
        );
        span.record("outcome.category", report.classification.category.as_str());
        span.record("decision.action", report.decision.action.as_str());
        span.record("decision.rule", report.decision.rule.as_str());
        span.record("decision.policy_version", &*report.decision.policy_version);
        Ok(Accepted::Recorded {
            event_id: report.event_id.clone(),
            duplicate: result.duplicate,
            category: report.classification.category.as_str(),
            action: report.decision.action.as_str(),
        })
    }

    /// The caller's own call id and attempt from the callback URL (`call_id`,
    /// `attempt`), which win over the body's.
    fn correlate(&self, outcome: &mut Outcome, query: Option<&str>) -> Result<(), WebhookError> {
        if let Some(call_id) = query_value(query, "call_id").filter(|c| !c.trim().is_empty()) {
            outcome.call_id = call_id.trim().to_owned();
        }
        if let Some(attempt) = query_value(query, "attempt") {
            let attempt = attempt
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|a| (1..=self.settings.bounds.max_attempt).contains(a))
                .ok_or_else(|| {
                    WebhookError::Malformed(format!(
                        "the callback URL's attempt must be a number from 1 to {}",
                        self.settings.bounds.max_attempt
                    ))
                })?;
            outcome.attempt = Some(attempt);
        }
        Ok(())
    }

    /// The request limits of the gRPC edge, applied to what the provider sent.
    fn bound(&self, outcome: &mut Outcome) -> Result<(), WebhookError> {
        let b = self.settings.bounds;
        if outcome.call_id.is_empty() || outcome.call_id.len() > b.max_call_id_bytes {
            return Err(WebhookError::Malformed(format!(
                "the call id must be 1 to {} bytes",
                b.max_call_id_bytes
            )));
        }
        if outcome.from.len() > b.max_party_bytes || outcome.to.len() > b.max_party_bytes {
            return Err(WebhookError::Malformed(format!(
                "from and to must be at most {} bytes",
                b.max_party_bytes
            )));
        }
        outcome
            .labels
            .retain(|_, v| v.len() <= b.max_label_value_bytes);
        Ok(())
    }

    fn pipeline_error(&self, error: PipelineError) -> WebhookError {
        match error {
            PipelineError::Invalid(e) => WebhookError::Malformed(e.to_string()),
            PipelineError::Store(e) => WebhookError::Unavailable(e.to_string()),
            PipelineError::Events(e) => WebhookError::Unavailable(e.to_string()),
            PipelineError::Internal(e) => WebhookError::Internal(e),
        }
    }
}

/// The one handler: every outcome is counted, logged when refused, and answered.
async fn handle(
    State(edge): State<Arc<WebhookEdge>>,
    Path((provider_name, tenant)): Path<(String, String)>,
    request: Request,
) -> Response {
    let provider = WebhookProvider::from_route(&provider_name);
    let label = provider.map_or("unknown", WebhookProvider::as_str);
    let span = tracing::info_span!(
        "webhook",
        otel.kind = "server",
        provider = label,
        tenant = %tenant,
        event = tracing::field::Empty,
        result = tracing::field::Empty,
        outcome.category = tracing::field::Empty,
        decision.action = tracing::field::Empty,
        decision.rule = tracing::field::Empty,
        decision.policy_version = tracing::field::Empty,
    );
    let peer = peer_ip_of(&request);
    let result = match provider {
        Some(provider) => {
            edge.accept(provider, &tenant, request)
                .instrument(span.clone())
                .await
        }
        None => Err(WebhookError::NotFound),
    };
    match result {
        Ok(accepted) => {
            let (result, body) = match &accepted {
                Accepted::Ignored { event } => (
                    "ignored",
                    serde_json::json!({ "result": "ignored", "event": event }),
                ),
                Accepted::Recorded {
                    event_id,
                    duplicate,
                    category,
                    action,
                } => (
                    if *duplicate { "duplicate" } else { "accepted" },
                    serde_json::json!({
                        "result": if *duplicate { "duplicate" } else { "accepted" },
                        "event_id": event_id,
                        "duplicate": duplicate,
                        "category": category,
                        "action": action,
                    }),
                ),
            };
            span.record("result", result);
            edge.count(label, result);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                format!("{body}\n"),
            )
                .into_response()
        }
        Err(error) => {
            let result = error.result();
            span.record("result", result);
            edge.count(label, result);
            // The reason, never a secret or the body.
            span.in_scope(|| {
                tracing::warn!(
                    provider = label,
                    tenant = %tenant,
                    peer = ?peer,
                    status = error.status().as_u16(),
                    result,
                    reason = %error,
                    "webhook refused"
                );
            });
            error.into_response()
        }
    }
}

/// The body's encoding, from `Content-Type` (parameters such as `charset` ignored).
fn body_format(headers: &HeaderMap) -> Option<BodyFormat> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next()?.trim().to_ascii_lowercase();
    match media.as_str() {
        "application/x-www-form-urlencoded" => Some(BodyFormat::Form),
        m if m == "application/json" || (m.starts_with("application/") && m.ends_with("+json")) => {
            Some(BodyFormat::Json)
        }
        _ => None,
    }
}

/// The first value of `name` in a query string, decoded.
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The first comma-separated value of a header (a proxy chain lists the client's first).
fn first_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .split(',')
        .next()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn peer_ip(parts: &axum::http::request::Parts) -> Option<IpAddr> {
    peer_of(&parts.extensions)
}

fn peer_ip_of(request: &Request) -> Option<IpAddr> {
    peer_of(request.extensions())
}

/// The connection's peer, as the connection loop recorded it (plain TCP or TLS).
fn peer_of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(tonic::transport::server::TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<crate::tls::serve::TlsPeer>()
                .map(|p| p.remote_addr)
        })
        .map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let mut h = HeaderMap::new();
        assert_eq!(body_format(&h), None);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        assert_eq!(body_format(&h), Some(BodyFormat::Form));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON"),
        );
        assert_eq!(body_format(&h), Some(BodyFormat::Json));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(body_format(&h), None);
    }

    #[test]
    fn every_refusal_has_a_status_and_a_label() {
        let errors = [
            WebhookError::NotFound,
            WebhookError::Method,
            WebhookError::TooLarge(1),
            WebhookError::BodyTimeout,
            WebhookError::MediaType,
            WebhookError::Signature(SignatureError::Mismatch),
            WebhookError::Signature(SignatureError::Stale(400)),
            WebhookError::Malformed("x".into()),
            WebhookError::Unavailable("x".into()),
        ];
        let statuses: Vec<u16> = errors.iter().map(|e| e.status().as_u16()).collect();
        assert_eq!(statuses, [404, 405, 413, 408, 415, 401, 401, 400, 503]);
        assert_eq!(errors[6].result(), "stale");
        assert_eq!(errors[5].public_text(), "unauthorized");
    }

    /// An edge on the memory backends with one route per provider for tenant `acme`.
    fn edge() -> Arc<WebhookEdge> {
        use crate::auth::webhook::{Ed25519Key, Secret, sign};
        use crate::events::memory::{EventRetention, MemoryEventLog};
        use crate::policy::Policy;
        use crate::store::StoreLimits;
        use crate::store::memory::MemoryStore;
        let events = Arc::new(MemoryEventLog::new(EventRetention::default()));
        let pipeline = Pipeline::new(
            Arc::new(MemoryStore::new(StoreLimits::default())),
            events.clone(),
            Arc::new(Policy::builtin()),
            None,
        );
        let metrics = Arc::new(
            Metrics::new(
                &crate::telemetry::OtlpSettings::default(),
                events,
                Arc::new(|| 0),
                &crate::telemetry::MetricsConfig::default(),
            )
            .unwrap(),
        );
        let (public, _) = sign::telnyx_keys([3; 32]).unwrap();
        let mut routes = BTreeMap::new();
        for provider in WebhookProvider::ALL {
            let secrets = match provider {
                WebhookProvider::Telnyx => {
                    RouteSecrets::Telnyx(vec![Ed25519Key::from_base64(&public).unwrap()])
                }
                _ => RouteSecrets::Shared(vec![Secret::new("tok")]),
            };
            routes.insert(
                ("acme".to_owned(), provider),
                RouteConfig {
                    secrets,
                    public_base_url: None,
                },
            );
        }
        let admission = Admission::new(
            crate::admission::AdmissionLimits {
                max_in_flight: 0,
                per_tenant: 0,
                per_connection: 0,
            },
            [],
            None,
        );
        WebhookEdge::new(
            pipeline,
            routes,
            WebhookSettings {
                max_body_bytes: 4096,
                timestamp_tolerance: Duration::from_secs(300),
                replay_memory: Duration::from_secs(60),
                trusted_proxies: vec!["0.0.0.0/0".parse().unwrap()],
                tls: false,
                body_read_timeout: Duration::from_secs(1),
                bounds: OutcomeBounds {
                    max_call_id_bytes: 128,
                    max_party_bytes: 128,
                    max_label_value_bytes: 128,
                    max_attempt: 1000,
                },
            },
            admission,
            None,
            metrics,
            64,
        )
        .unwrap()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// No path, method, header or body makes the handler panic: every request gets
        /// an answer with a status.
        #[test]
        fn no_input_makes_the_handler_panic(
            provider in proptest::sample::select(vec!["telnyx", "twilio", "signalwire", "vonage", "plivo", "x", ""]),
            tenant in "[a-z%./]{0,8}",
            query in "[a-zA-Z0-9_=&%+]{0,40}",
            method in proptest::sample::select(vec!["POST", "GET", "PUT"]),
            content_type in proptest::sample::select(vec![
                "application/json", "application/x-www-form-urlencoded", "text/plain", "", "application/json; charset=\u{0}",
            ]),
            headers in proptest::collection::vec(
                (proptest::sample::select(vec![
                    "telnyx-timestamp", "telnyx-signature-ed25519", "x-twilio-signature",
                    "x-signalwire-signature", "authorization", "x-plivo-signature-v3",
                    "x-plivo-signature-v3-nonce", "x-forwarded-host", "x-forwarded-proto", "host",
                ]), "[ -~]{0,90}"),
                0..5,
            ),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        ) {
            use tower::ServiceExt;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let router = edge().router();
            let mut builder = axum::http::Request::builder()
                .method(method)
                .uri(format!("/v1/webhooks/{provider}/{tenant}?{query}"));
            if !content_type.is_empty() {
                builder = builder.header("content-type", content_type);
            }
            for (name, value) in &headers {
                builder = builder.header(*name, value.as_str());
            }
            if let Ok(request) = builder.body(Body::from(body)) {
                let response = runtime.block_on(router.oneshot(request)).unwrap();
                proptest::prop_assert!(response.status().as_u16() >= 200);
            }
        }
    }
}
