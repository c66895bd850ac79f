//! gRPC service implementations: validate the request, convert proto ↔ domain, call the
//! pipeline, map errors, and trace and count each RPC. No business rules live here.
//!
//! Authorisation happens here too: with an [`auth::Identity`] in the request extensions
//! (put there by [`auth::AuthLayer`]) each RPC needs its role, and acts only for the
//! identity's tenant; a request naming another tenant is `PERMISSION_DENIED`.

pub mod auth;
pub mod codec;
pub mod convert;
pub mod error;
pub mod in_flight;
pub mod jwt;
pub mod rate_limit;
pub mod subscribe;
pub mod trace;
pub mod validate;

use crate::classify::Classification;
use crate::events::EventError;
use crate::pipeline::{Pipeline, PipelineError};
use crate::policy::Decision;
use crate::proto as pb;
use crate::proto::call_outcome_service_server::CallOutcomeService;
use crate::store::StoreError;
use crate::telemetry::Metrics;
use auth::{Identity, Role};
use error::ApiError;
use rate_limit::{LimitedRpc, RateLimits};
use std::sync::Arc;
use std::time::SystemTime;
use subscribe::{SubscriptionConfig, SubscriptionPermits};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use trace::Rpc;
use tracing::Instrument;
use validate::{FieldViolation, Purpose, RequestLimits};

/// The `calloutcome.v1.CallOutcomeService` implementation.
#[derive(Debug, Clone)]
pub struct CallOutcomeApi {
    pipeline: Pipeline,
    limits: RequestLimits,
    default_tenant: String,
    subscriptions: SubscriptionConfig,
    permits: Arc<SubscriptionPermits>,
    metrics: Arc<Metrics>,
    /// Cancelled at shutdown: every stream then ends with its last resume token.
    shutdown: CancellationToken,
    /// Auth is on: a request without an identity is refused.
    auth_required: bool,
    /// Per-tenant rate limits; `None` when `[rate_limits]` is off.
    rate_limits: Option<Arc<RateLimits>>,
}

/// What the api needs besides the pipeline.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub limits: RequestLimits,
    pub default_tenant: String,
    pub subscriptions: SubscriptionConfig,
    /// Auth is on: every request must carry an [`Identity`].
    pub auth_required: bool,
}

impl CallOutcomeApi {
    pub fn new(
        pipeline: Pipeline,
        settings: ApiSettings,
        permits: Arc<SubscriptionPermits>,
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
        }
    }

    /// Enforces per-tenant rate limits.
    pub fn with_rate_limits(mut self, limits: Arc<RateLimits>) -> Self {
        self.rate_limits = Some(limits);
        self
    }

    /// Takes one call of `rpc` from `tenant`'s rate limit (a validated tenant name).
    fn admit(&self, rpc: LimitedRpc, tenant: &String) -> Result<(), ApiError> {
        match &self.rate_limits {
            Some(limits) => limits.check(rpc, tenant).map_err(ApiError::RateLimited),
            None => Ok(()),
        }
    }

    /// Authorises a request for `role` and returns the tenant it may name: without auth,
    /// the requested one unchanged; with an identity, the identity's own (the request
    /// may name it or leave it empty).
    fn scope(
        &self,
        identity: Option<&Identity>,
        role: Role,
        requested: &str,
    ) -> Result<String, Status> {
        let Some(identity) = identity else {
            if self.auth_required {
                return Err(Status::unauthenticated("missing credentials"));
            }
            return Ok(requested.to_owned());
        };
        if !identity.allows(role) {
            return Err(Status::permission_denied(format!(
                "`{}` lacks the `{}` role",
                identity.name,
                role.as_str()
            )));
        }
        if !requested.is_empty() && requested != identity.tenant {
            return Err(Status::permission_denied(format!(
                "`{}` may act only for tenant `{}`",
                identity.name, identity.tenant
            )));
        }
        Ok(identity.tenant.clone())
    }

    /// The tenant a request acts for: the one it names, or the default.
    fn tenant(&self, requested: &str, violations: &mut Vec<FieldViolation>) -> String {
        if requested.is_empty() {
            return self.default_tenant.clone();
        }
        validate::tenant(requested, "tenant", &self.limits, violations);
        requested.to_owned()
    }

    fn outcome(
        &self,
        tenant: &str,
        outcome: Option<&pb::CallOutcome>,
        purpose: Purpose,
    ) -> Result<(String, crate::outcome::Outcome), ApiError> {
        let mut violations = Vec::new();
        let tenant = self.tenant(tenant, &mut violations);
        // Charged before the outcome is validated, so that invalid requests count too;
        // only a valid tenant name gets a bucket.
        if violations.is_empty() {
            let rpc = match purpose {
                Purpose::Report => LimitedRpc::Report,
                Purpose::Classify => LimitedRpc::Classify,
            };
            self.admit(rpc, &tenant)?;
        }
        match validate::outcome(outcome, purpose, &self.limits, SystemTime::now()) {
            Ok(outcome) if violations.is_empty() => Ok((tenant, outcome)),
            Ok(_) => Err(ApiError::InvalidArgument(violations)),
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
        identity: Option<Identity>,
        request: pb::ReportOutcomeRequest,
    ) -> Result<pb::ReportOutcomeResponse, Status> {
        let tenant = self.scope(identity.as_ref(), Role::Report, &request.tenant)?;
        let (tenant, outcome) = self.outcome(&tenant, request.outcome.as_ref(), Purpose::Report)?;
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
        identity: Option<Identity>,
        request: pb::ClassifyRequest,
    ) -> Result<pb::ClassifyResponse, Status> {
        let tenant = self.scope(identity.as_ref(), Role::Report, &request.tenant)?;
        let (tenant, outcome) =
            self.outcome(&tenant, request.outcome.as_ref(), Purpose::Classify)?;
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
        identity: Option<Identity>,
        request: pb::SubscribeOutcomesRequest,
    ) -> Result<subscribe::ResponseStream, Status> {
        let tenant = self.scope(identity.as_ref(), Role::Subscribe, &request.tenant)?;
        let mut violations = Vec::new();
        let tenant = self.tenant(&tenant, &mut violations);
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations).into());
        }
        self.admit(LimitedRpc::Subscribe, &tenant)?;
        let subscription =
            subscribe::request(tenant, &request, &self.limits, &self.subscriptions, |d| {
                self.pipeline.destination(d)
            })?;
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
        let identity = request.extensions().get::<Identity>().cloned();
        let result = self
            .report(identity, request.into_inner())
            .instrument(rpc.span.clone())
            .await;
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
        let identity = request.extensions().get::<Identity>().cloned();
        let result = self
            .classify_outcome(identity, request.into_inner())
            .instrument(rpc.span.clone())
            .await;
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
        let identity = request.extensions().get::<Identity>().cloned();
        let result = self
            .subscribe(identity, request.into_inner())
            .instrument(rpc.span.clone())
            .await;
        rpc.finish(&self.metrics, &result);
        result.map(Response::new)
    }
}
