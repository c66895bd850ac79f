//! The gRPC edge: validate the request, convert proto ↔ domain, call the pipeline, map
//! errors (only through [`error`]), and trace and count each RPC. No business rules
//! live here.
//!
//! Authorisation happens here too: with an [`crate::auth::Identity`] in the request
//! extensions (put there by [`layers::auth`]) each RPC needs its role, and acts only for
//! the identity's tenant; a request naming another tenant is `PERMISSION_DENIED`.
//!
//! - [`validate`], [`convert`]: proto → domain (with field violations) and back.
//! - [`subscribe`]: the `SubscribeOutcomes` stream on top of the event log.
//! - [`layers`]: the tower layers in front of the service, one per file.
//! - [`error`]: [`error::ApiError`] and the one mapping to `tonic::Status`.

pub mod convert;
pub mod error;
pub mod layers;
pub mod subscribe;
pub mod validate;

/// The fully qualified name of the public service.
pub const SERVICE_NAME: &str = "calloutcome.v1.CallOutcomeService";

use crate::admission::{Admission, ConnectionId, Slot};
use crate::auth::{Identity, Role};
use crate::domain::{Classification, Decision, Tenant};
use crate::events::EventError;
use crate::pipeline::{Pipeline, PipelineError};
use crate::proto as pb;
use crate::proto::call_outcome_service_server::CallOutcomeService;
use crate::quota::{LimitedRpc, RateLimits};
use crate::store::StoreError;
use crate::telemetry::Metrics;
use error::ApiError;
use layers::trace::Rpc;
use std::sync::Arc;
use std::time::SystemTime;
use subscribe::{SubscriptionConfig, SubscriptionPermits};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use validate::{FieldViolation, Purpose, RequestLimits};

/// The `calloutcome.v1.CallOutcomeService` implementation.
#[derive(Debug, Clone)]
pub struct CallOutcomeApi {
    pipeline: Pipeline,
    limits: RequestLimits,
    default_tenant: Tenant,
    subscriptions: SubscriptionConfig,
    permits: Arc<SubscriptionPermits>,
    metrics: Arc<Metrics>,
    /// Cancelled at shutdown: every stream then ends with its last resume token.
    shutdown: CancellationToken,
    /// Auth is on: a request without an identity is refused.
    auth_required: bool,
    /// Per-tenant rate limits; `None` when `[rate_limits]` is off.
    rate_limits: Option<Arc<RateLimits>>,
    /// In-flight slots, in all, per tenant and per connection.
    admission: Arc<Admission>,
}

/// Who sent a request: the identity (auth on) and the connection it came on.
#[derive(Debug, Clone)]
struct Caller {
    identity: Option<Identity>,
    connection: Option<ConnectionId>,
}

impl Caller {
    fn of<T>(request: &Request<T>) -> Caller {
        Caller {
            identity: request.extensions().get::<Identity>().cloned(),
            connection: request.extensions().get::<ConnectionId>().copied(),
        }
    }
}

/// What the api needs besides the pipeline.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub limits: RequestLimits,
    pub default_tenant: Tenant,
    pub subscriptions: SubscriptionConfig,
    /// Auth is on: every request must carry an [`Identity`].
    pub auth_required: bool,
}

impl CallOutcomeApi {
    pub fn new(
        pipeline: Pipeline,
        settings: ApiSettings,
        permits: Arc<SubscriptionPermits>,
        admission: Arc<Admission>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        CallOutcomeApi {
            pipeline,
            limits: settings.limits,
            default_tenant: settings.default_tenant,
            subscriptions: settings.subscriptions,
            permits,
            metrics,
            shutdown,
            auth_required: settings.auth_required,
            rate_limits: None,
            admission,
        }
    }

    /// An in-flight slot for a request whose message has arrived (see [`admission`]).
    fn slot(&self, rpc: &'static str, tenant: &Tenant, caller: &Caller) -> Result<Slot, ApiError> {
        self.admission
            .admit(rpc, tenant, caller.connection)
            .map_err(ApiError::Overloaded)
    }

    /// Enforces per-tenant rate limits.
    pub fn with_rate_limits(mut self, limits: Arc<RateLimits>) -> Self {
        self.rate_limits = Some(limits);
        self
    }

    /// Takes one call of `rpc` from `tenant`'s rate limit (a validated tenant name).
    fn admit(&self, rpc: LimitedRpc, tenant: &Tenant) -> Result<(), ApiError> {
        match &self.rate_limits {
            Some(limits) => limits.check(rpc, tenant).map_err(ApiError::RateLimited),
            None => Ok(()),
        }
    }

    /// Authorises a request for `role` and returns the tenant it acts for: without auth,
    /// the one it names (parsed; the default when it names none); with an identity, the
    /// identity's own (the request may name it or leave it empty).
    ///
    /// An invalid tenant name is returned as its field violation, so that it is reported
    /// together with the rest of the request's.
    fn scope(
        &self,
        identity: Option<&Identity>,
        role: Role,
        requested: &str,
    ) -> Result<Result<Tenant, FieldViolation>, ApiError> {
        let Some(identity) = identity else {
            if self.auth_required {
                return Err(ApiError::MissingCredentials);
            }
            if requested.is_empty() {
                return Ok(Ok(self.default_tenant.clone()));
            }
            return Ok(Tenant::parse(requested, self.limits.max_tenant_bytes)
                .map_err(|e| FieldViolation::new("tenant", e.to_string())));
        };
        if !identity.allows(role) {
            return Err(ApiError::PermissionDenied(format!(
                "`{}` lacks the `{}` role",
                identity.name,
                role.as_str()
            )));
        }
        if !requested.is_empty() && *requested != *identity.tenant {
            return Err(ApiError::PermissionDenied(format!(
                "`{}` may act only for tenant `{}`",
                identity.name, identity.tenant
            )));
        }
        Ok(Ok(identity.tenant.clone()))
    }

    fn outcome(
        &self,
        tenant: Result<Tenant, FieldViolation>,
        outcome: Option<&pb::CallOutcome>,
        purpose: Purpose,
    ) -> Result<(Tenant, crate::domain::Outcome), ApiError> {
        let mut violations = Vec::new();
        // Charged before the outcome is validated, so that invalid requests count too;
        // only a valid tenant name gets a bucket.
        let tenant = match tenant {
            Ok(tenant) => {
                let rpc = match purpose {
                    Purpose::Report => LimitedRpc::Report,
                    Purpose::Classify => LimitedRpc::Classify,
                };
                self.admit(rpc, &tenant)?;
                Some(tenant)
            }
            Err(violation) => {
                violations.push(violation);
                None
            }
        };
        match validate::outcome(outcome, purpose, &self.limits, SystemTime::now()) {
            Ok(outcome) => match tenant {
                Some(tenant) => Ok((tenant, outcome)),
                None => Err(ApiError::InvalidArgument(violations)),
            },
            Err(more) => {
                violations.extend(more);
                Err(ApiError::InvalidArgument(violations))
            }
        }
    }

    /// Counts backend failures before they become a status.
    fn pipeline_error(&self, error: PipelineError) -> ApiError {
        match &error {
            PipelineError::Store(e) => self.metrics.backend_error(
                "store",
                match e {
                    StoreError::Unavailable(_) => "unavailable",
                    StoreError::InProgress => "in_progress",
                    StoreError::Backend(_) => "backend",
                },
            ),
            PipelineError::Events(e) => self.metrics.backend_error(
                "events",
                match e {
                    EventError::Unavailable(_) => "unavailable",
                    EventError::Backend(_) | EventError::TokenFromTheFuture { .. } => "backend",
                },
            ),
            PipelineError::Invalid(_) | PipelineError::Internal(_) => {}
        }
        ApiError::from(error)
    }

    async fn report(
        &self,
        caller: Caller,
        request: pb::ReportOutcomeRequest,
    ) -> Result<pb::ReportOutcomeResponse, ApiError> {
        let tenant = self.scope(caller.identity.as_ref(), Role::Report, &request.tenant)?;
        let (tenant, outcome) = self.outcome(tenant, request.outcome.as_ref(), Purpose::Report)?;
        let _slot = self.slot("ReportOutcome", &tenant, &caller)?;
        let carrier = self.metrics.carrier(&outcome.labels);
        let result = self
            .pipeline
            .report(tenant, outcome)
            .await
            .map_err(|e| self.pipeline_error(e))?;
        record_outcome(&result.report.classification, &result.report.decision);
        self.metrics.report(
            &result.report.classification,
            &result.report.decision,
            result.duplicate,
            carrier,
        );
        // The backends keep their own copies: the report is usually ours alone by now,
        // and its strings move into the response instead of being copied.
        let report = Arc::unwrap_or_clone(result.report);
        Ok(pb::ReportOutcomeResponse {
            classification: Some(Arc::unwrap_or_clone(report.classification).into()),
            decision: Some(Arc::unwrap_or_clone(report.decision).into()),
            event_id: report.event_id,
            duplicate: result.duplicate,
            destination: report.destination,
        })
    }

    async fn classify_outcome(
        &self,
        caller: Caller,
        request: pb::ClassifyRequest,
    ) -> Result<pb::ClassifyResponse, ApiError> {
        let tenant = self.scope(caller.identity.as_ref(), Role::Report, &request.tenant)?;
        let (tenant, outcome) =
            self.outcome(tenant, request.outcome.as_ref(), Purpose::Classify)?;
        let _slot = self.slot("Classify", &tenant, &caller)?;
        let result = self
            .pipeline
            .classify(&tenant, &outcome)
            .await
            .map_err(|e| self.pipeline_error(e))?;
        record_outcome(&result.classification, &result.decision);
        self.metrics.decision(&result.decision);
        Ok(pb::ClassifyResponse {
            classification: Some(result.classification.into()),
            decision: Some(result.decision.into()),
        })
    }

    async fn subscribe(
        &self,
        caller: Caller,
        request: pb::SubscribeOutcomesRequest,
    ) -> Result<subscribe::ResponseStream, ApiError> {
        let tenant = self
            .scope(caller.identity.as_ref(), Role::Subscribe, &request.tenant)?
            .map_err(|violation| ApiError::InvalidArgument(vec![violation]))?;
        self.admit(LimitedRpc::Subscribe, &tenant)?;
        // Held while the stream opens only: a running stream is capped by [subscriptions].
        let _slot = self.slot("SubscribeOutcomes", &tenant, &caller)?;
        let subscription = subscribe::request(
            tenant.into_string(),
            &request,
            &self.limits,
            &self.subscriptions,
            |d| self.pipeline.destination(d),
        )?;
        let permit = self.permits.try_acquire(&subscription.tenant)?;
        subscribe::open(
            Arc::clone(self.pipeline.events()),
            subscription,
            permit,
            self.shutdown.clone(),
        )
        .await
    }
}

/// Puts what was decided on the RPC span (and so on the exported trace).
fn record_outcome(classification: &Classification, decision: &Decision) {
    let span = tracing::Span::current();
    span.record("outcome.category", classification.category.as_str());
    if let Some(code) = classification.sip_code {
        span.record("outcome.sip_code", code);
    }
    span.record("decision.action", decision.action.as_str());
    span.record("decision.rule", decision.rule.as_str());
    span.record("decision.policy_version", &*decision.policy_version);
}

#[tonic::async_trait]
impl CallOutcomeService for CallOutcomeApi {
    async fn report_outcome(
        &self,
        request: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        let rpc = Rpc::start(
            "ReportOutcome",
            "calloutcome.v1.CallOutcomeService/ReportOutcome",
            request.metadata(),
        );
        let caller = Caller::of(&request);
        let result = self
            .report(caller, request.into_inner())
            .instrument(rpc.span.clone())
            .await
            .map_err(ApiError::into_status);
        rpc.finish(&self.metrics, &result);
        result.map(Response::new)
    }

    async fn classify(
        &self,
        request: Request<pb::ClassifyRequest>,
    ) -> Result<Response<pb::ClassifyResponse>, Status> {
        let rpc = Rpc::start(
            "Classify",
            "calloutcome.v1.CallOutcomeService/Classify",
            request.metadata(),
        );
        let caller = Caller::of(&request);
        let result = self
            .classify_outcome(caller, request.into_inner())
            .instrument(rpc.span.clone())
            .await
            .map_err(ApiError::into_status);
        rpc.finish(&self.metrics, &result);
        result.map(Response::new)
    }

    type SubscribeOutcomesStream = subscribe::ResponseStream;

    async fn subscribe_outcomes(
        &self,
        request: Request<pb::SubscribeOutcomesRequest>,
    ) -> Result<Response<Self::SubscribeOutcomesStream>, Status> {
        let rpc = Rpc::start(
            "SubscribeOutcomes",
            "calloutcome.v1.CallOutcomeService/SubscribeOutcomes",
            request.metadata(),
        );
        let caller = Caller::of(&request);
        let result = self
            .subscribe(caller, request.into_inner())
            .instrument(rpc.span.clone())
            .await
            .map_err(ApiError::into_status);
        rpc.finish(&self.metrics, &result);
        result.map(Response::new)
    }
}
