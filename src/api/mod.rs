//! gRPC service implementations: validate the request, convert proto ↔ domain, call the
//! pipeline, map errors, and trace and count each RPC. No business rules live here.

pub mod convert;
pub mod error;
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
use error::ApiError;
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
}

/// What the api needs besides the pipeline.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub limits: RequestLimits,
    pub default_tenant: String,
    pub subscriptions: SubscriptionConfig,
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
        }
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
        request: pb::ReportOutcomeRequest,
    ) -> Result<pb::ReportOutcomeResponse, Status> {
        let (tenant, outcome) =
            self.outcome(&request.tenant, request.outcome.as_ref(), Purpose::Report)?;
        let result = self
            .pipeline
            .report(tenant, outcome)
            .await
            .map_err(|e| self.pipeline_error(e))?;
        let report = result.report;
        record_outcome(&report.classification, &report.decision);
        self.metrics
            .report(&report.classification, &report.decision, result.duplicate);
        Ok(pb::ReportOutcomeResponse {
            classification: Some((&report.classification).into()),
            decision: Some((&report.decision).into()),
            event_id: report.event_id,
            duplicate: result.duplicate,
            destination: report.destination,
        })
    }

    async fn classify_outcome(
        &self,
        request: pb::ClassifyRequest,
    ) -> Result<pb::ClassifyResponse, Status> {
        let (tenant, outcome) =
            self.outcome(&request.tenant, request.outcome.as_ref(), Purpose::Classify)?;
        let result = self
            .pipeline
            .classify(&tenant, &outcome)
            .await
            .map_err(|e| self.pipeline_error(e))?;
        record_outcome(&result.classification, &result.decision);
        self.metrics.decision(&result.decision);
        Ok(pb::ClassifyResponse {
            classification: Some((&result.classification).into()),
            decision: Some((&result.decision).into()),
        })
    }

    async fn subscribe(
        &self,
        request: pb::SubscribeOutcomesRequest,
    ) -> Result<subscribe::ResponseStream, Status> {
        let mut violations = Vec::new();
        let tenant = self.tenant(&request.tenant, &mut violations);
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations).into());
        }
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
        let result = self
            .report(request.into_inner())
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
        let result = self
            .classify_outcome(request.into_inner())
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
        let result = self
            .subscribe(request.into_inner())
            .instrument(rpc.span.clone())
            .await;
        rpc.finish(&self.metrics, &result);
        result.map(Response::new)
    }
}
