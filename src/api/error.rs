//! The one mapping from the service's errors to gRPC status codes.

use super::rate_limit::RateLimited;
use super::validate::FieldViolation;
use crate::events::EventError;
use crate::pipeline::PipelineError;
use crate::store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Everything an RPC can fail with, before it becomes a [`Status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; nothing was recorded.
    #[error("invalid request: {}", summary(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The tenant's rate limit for this RPC is used up; nothing was recorded.
    #[error("{0}")]
    RateLimited(RateLimited),
    /// `server.max_in_flight` requests are being handled; this one was not looked at.
    #[error(
        "server overloaded: {max_in_flight} requests in flight; nothing was processed, retry with backoff"
    )]
    Overloaded { max_in_flight: usize },
}

fn summary(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        let message = error.to_string();
        match error {
            ApiError::InvalidArgument(violations) => bad_request(message, violations),
            // A quota, per AIP-193: RESOURCE_EXHAUSTED with when to retry and which quota.
            ApiError::RateLimited(limited) => {
                let mut details = ErrorDetails::with_retry_info(Some(limited.retry_after));
                details.add_quota_failure_violation(
                    format!("tenant:{}", limited.tenant),
                    format!("{}: {}", limited.rpc.method(), limited.rate),
                );
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            // The whole replica is busy, not the caller's quota: UNAVAILABLE is what gRPC
            // clients and proxies retry (on another replica) with backoff.
            ApiError::Overloaded { .. } => Status::new(Code::Unavailable, message),
            ApiError::Pipeline(PipelineError::Invalid(e)) => {
                let violation =
                    FieldViolation::new(format!("outcome.{}", e.field()), e.to_string());
                bad_request(
                    format!(
                        "invalid request: {violation_text}",
                        violation_text = summary(std::slice::from_ref(&violation))
                    ),
                    vec![violation],
                )
            }
            ApiError::Pipeline(PipelineError::Store(StoreError::InProgress)) => {
                Status::new(Code::Aborted, message)
            }
            ApiError::Pipeline(
                PipelineError::Store(StoreError::Unavailable(_) | StoreError::Backend(_))
                | PipelineError::Events(EventError::Unavailable(_) | EventError::Backend(_)),
            ) => Status::new(Code::Unavailable, message),
            ApiError::Pipeline(
                PipelineError::Internal(_)
                | PipelineError::Events(EventError::TokenFromTheFuture { .. }),
            ) => Status::new(Code::Internal, message),
        }
    }
}

fn bad_request(message: String, violations: Vec<FieldViolation>) -> Status {
    let details = ErrorDetails::with_bad_request(
        violations
            .into_iter()
            .map(|v| tonic_types::FieldViolation::new(v.field, v.description))
            .collect::<Vec<_>>(),
    );
    Status::with_error_details(Code::InvalidArgument, message, details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::ClassifyError;

    #[test]
    fn invalid_outcomes_carry_field_violations() {
        let status = Status::from(ApiError::Pipeline(PipelineError::Invalid(
            ClassifyError::ProvisionalCode(180),
        )));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status
            .get_details_bad_request()
            .expect("bad request details");
        assert_eq!(bad.field_violations[0].field, "outcome.sip.code");
    }

    #[test]
    fn backend_outages_are_unavailable_and_retryable() {
        let status = Status::from(ApiError::Pipeline(PipelineError::Store(
            StoreError::Unavailable("nats down".into()),
        )));
        assert_eq!(status.code(), Code::Unavailable);
        let status = Status::from(ApiError::Pipeline(PipelineError::Store(
            StoreError::InProgress,
        )));
        assert_eq!(status.code(), Code::Aborted);
    }
}
