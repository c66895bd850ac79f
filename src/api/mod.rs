//! gRPC service implementations: validate the request, convert proto ↔ domain, call the
//! pipeline, map errors. No business rules live here.

pub mod convert;
pub mod error;
pub mod subscribe;
pub mod validate;

use crate::pipeline::Pipeline;
use crate::proto as pb;
use crate::proto::call_outcome_service_server::CallOutcomeService;
use error::ApiError;
use std::sync::Arc;
use std::time::SystemTime;
use subscribe::{SubscriptionConfig, SubscriptionPermits};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use validate::{FieldViolation, Purpose, RequestLimits};

/// The `calloutcome.v1.CallOutcomeService` implementation.
#[derive(Debug, Clone)]
pub struct CallOutcomeApi {
    pipeline: Pipeline,
    limits: RequestLimits,
    default_tenant: String,
    subscriptions: SubscriptionConfig,
    permits: Arc<SubscriptionPermits>,
    /// Cancelled at shutdown: every stream then ends with its last resume token.
    shutdown: CancellationToken,
}

impl CallOutcomeApi {
    pub fn new(
        pipeline: Pipeline,
        limits: RequestLimits,
        default_tenant: String,
        subscriptions: SubscriptionConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let permits = Arc::new(SubscriptionPermits::new(
            subscriptions.max_total,
            subscriptions.max_per_tenant,
        ));
        CallOutcomeApi {
            pipeline,
            limits,
            default_tenant,
            subscriptions,
            permits,
            shutdown,
        }
    }

    /// Subscriptions running now.
    pub fn active_subscriptions(&self) -> usize {
        self.permits.active()
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
}

#[tonic::async_trait]
impl CallOutcomeService for CallOutcomeApi {
    async fn report_outcome(
        &self,
        request: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        let request = request.into_inner();
        let (tenant, outcome) =
            self.outcome(&request.tenant, request.outcome.as_ref(), Purpose::Report)?;
        let result = self
            .pipeline
            .report(tenant, outcome)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ReportOutcomeResponse {
            classification: Some((&result.report.classification).into()),
            decision: Some((&result.report.decision).into()),
            event_id: result.report.event_id,
            duplicate: result.duplicate,
            destination: result.report.destination,
        }))
    }

    async fn classify(
        &self,
        request: Request<pb::ClassifyRequest>,
    ) -> Result<Response<pb::ClassifyResponse>, Status> {
        let request = request.into_inner();
        let (tenant, outcome) =
            self.outcome(&request.tenant, request.outcome.as_ref(), Purpose::Classify)?;
        let result = self
            .pipeline
            .classify(&tenant, &outcome)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ClassifyResponse {
            classification: Some((&result.classification).into()),
            decision: Some((&result.decision).into()),
        }))
    }

    type SubscribeOutcomesStream = subscribe::ResponseStream;

    async fn subscribe_outcomes(
        &self,
        request: Request<pb::SubscribeOutcomesRequest>,
    ) -> Result<Response<Self::SubscribeOutcomesStream>, Status> {
        let request = request.into_inner();
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
        let stream = subscribe::open(
            Arc::clone(self.pipeline.events()),
            subscription,
            permit,
            self.shutdown.clone(),
        )
        .await?;
        Ok(Response::new(stream))
    }
}
