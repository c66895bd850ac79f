//! The one mapping from the service's errors to gRPC statuses: every [`Status`] the
//! service sends is built here, from an [`ApiError`]. Elsewhere, building a status is
//! refused by clippy (`disallowed-methods` in `clippy.toml`); handlers, layers and the
//! stream return an `ApiError` and the edge converts it at the last moment.
//!
//! Codes follow gRPC's and Google's AIP-193 meaning, so clients retry what is worth
//! retrying: `INVALID_ARGUMENT` (with `BadRequest` field violations) changed nothing;
//! `UNAVAILABLE` (overload, a backend outage, a stream cut at shutdown) is retried with
//! backoff, a stream with its resume token; `RESOURCE_EXHAUSTED` (quota, subscription
//! caps) is the caller's own limit; `ABORTED` a duplicate racing its original.

use crate::admission::Shed;
use crate::api::validate::FieldViolation;
use crate::auth::AuthError;
use crate::events::EventError;
use crate::pipeline::PipelineError;
use crate::quota::RateLimited;
use crate::store::StoreError;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Most field violations sent with one `INVALID_ARGUMENT`; the message counts the rest.
/// With the caps below, the status stays a few KB: under the 8 KB of metadata that
/// common clients (grpcio, grpc-js) accept by default, whatever the request held.
pub const MAX_VIOLATIONS_SENT: usize = 8;
/// Longest field path sent (label keys are echoed in field paths).
const MAX_FIELD_BYTES: usize = 64;
/// Longest description sent.
const MAX_DESCRIPTION_BYTES: usize = 120;

/// Response metadata key of the resume token on a stream that ends with an error.
pub const RESUME_TOKEN_METADATA: &str = "x-resume-token";

/// Everything an RPC can fail with, before it becomes a [`Status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; nothing was recorded. The status lists the first
    /// [`MAX_VIOLATIONS_SENT`], each cut to a bounded length, and counts the rest.
    #[error("invalid request: {}", summary(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The caller presented no usable credentials, or credentials that disagree.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Auth is on and the request reached a handler without an identity.
    #[error("missing credentials")]
    MissingCredentials,
    /// The caller is known but may not do this (a role, another tenant's data).
    #[error("{0}")]
    PermissionDenied(String),
    /// The tenant's rate limit for this RPC is used up; nothing was recorded.
    #[error("{0}")]
    RateLimited(RateLimited),
    /// A subscription cap (`[subscriptions]`) is reached.
    #[error("{0}")]
    SubscriptionCap(String),
    /// A `server.max_in_flight` limit (in all, the tenant's share or the connection's)
    /// is reached; this request was not processed.
    #[error("{0}")]
    Overloaded(Shed),
    /// The request's deadline (the client's `grpc-timeout` or `server.request_timeout`,
    /// whichever is shorter) passed before it was answered.
    #[error("deadline exceeded after {0:?}")]
    DeadlineExceeded(std::time::Duration),
    /// The request message did not arrive within `server.body_read_timeout`.
    #[error("the request message did not arrive within {0:?} (server.body_read_timeout)")]
    BodyTimeout(std::time::Duration),
    /// The request message is larger than `server.max_message_bytes`.
    #[error("request message of {size} bytes is larger than server.max_message_bytes ({limit})")]
    MessageTooLarge { size: usize, limit: usize },
    /// A unary request without exactly one message (gRPC's request cardinality).
    #[error("{0}")]
    Cardinality(&'static str),
    /// The event log failed while opening or serving a subscription.
    #[error(transparent)]
    Events(EventError),
    /// A subscription ends (shutdown, event log closed or failed): resume from the token.
    #[error("{reason}; resume with the last resume token")]
    StreamEnded {
        reason: StreamEnd,
        resume_token: String,
    },
}

/// Why a running subscription ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamEnd {
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("the event log closed")]
    LogClosed,
    #[error("{0}")]
    LogFailed(EventError),
}

fn summary(violations: &[FieldViolation]) -> String {
    let mut text = violations
        .iter()
        .take(MAX_VIOLATIONS_SENT)
        .map(|v| {
            format!(
                "{}: {}",
                cut(&v.field, MAX_FIELD_BYTES),
                cut(&v.description, MAX_DESCRIPTION_BYTES)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    if violations.len() > MAX_VIOLATIONS_SENT {
        text.push_str(&format!(
            "; and {} more violations",
            violations.len() - MAX_VIOLATIONS_SENT
        ));
    }
    text
}

/// `text`, at most `max` bytes, cut at a character boundary with `…` when cut.
fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

impl ApiError {
    /// The status sent for this error.
    pub fn into_status(self) -> Status {
        Status::from(self)
    }
}

impl From<ApiError> for Status {
    // The one place statuses are built.
    #[allow(clippy::disallowed_methods)]
    fn from(error: ApiError) -> Self {
        let message = error.to_string();
        match error {
            ApiError::InvalidArgument(violations) => bad_request(message, violations),
            ApiError::Auth(AuthError::TenantMismatch { .. }) | ApiError::PermissionDenied(_) => {
                Status::new(Code::PermissionDenied, message)
            }
            ApiError::Auth(AuthError::Unauthenticated(_) | AuthError::InvalidConfig(_))
            | ApiError::MissingCredentials => Status::new(Code::Unauthenticated, message),
            // A quota, per AIP-193: RESOURCE_EXHAUSTED with when to retry and which quota.
            ApiError::RateLimited(limited) => {
                let mut details = ErrorDetails::with_retry_info(Some(limited.retry_after));
                details.add_quota_failure_violation(
                    format!("tenant:{}", limited.tenant),
                    format!("{}: {}", limited.rpc.method(), limited.rate),
                );
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ApiError::SubscriptionCap(_) => Status::new(Code::ResourceExhausted, message),
            // The whole replica is busy, not the caller's quota: UNAVAILABLE is what gRPC
            // clients and proxies retry (on another replica) with backoff.
            ApiError::Overloaded(_) => Status::new(Code::Unavailable, message),
            // grpc doc/statuscodes.md: a deadline that expired is DEADLINE_EXCEEDED
            // (also when the server's own ceiling set it), never CANCELLED.
            ApiError::DeadlineExceeded(_) | ApiError::BodyTimeout(_) => {
                Status::new(Code::DeadlineExceeded, message)
            }
            // statuscodes.md: a message over the receive limit, compressed or not.
            ApiError::MessageTooLarge { .. } => Status::new(Code::ResourceExhausted, message),
            // statuscodes.md: a request-cardinality violation is UNIMPLEMENTED.
            ApiError::Cardinality(_) => Status::new(Code::Unimplemented, message),
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
            // A token ahead of the log is the caller's input: nothing to retry as is.
            ApiError::Events(e @ EventError::TokenFromTheFuture { .. }) => bad_request(
                format!("invalid request: resume_token: {e}"),
                vec![FieldViolation::new("resume_token", e.to_string())],
            ),
            ApiError::Events(EventError::Unavailable(_) | EventError::Backend(_)) => {
                Status::new(Code::Unavailable, message)
            }
            ApiError::StreamEnded { resume_token, .. } => {
                let mut status = Status::new(Code::Unavailable, message);
                if let Ok(value) = MetadataValue::try_from(resume_token.as_str()) {
                    status.metadata_mut().insert(RESUME_TOKEN_METADATA, value);
                }
                status
            }
        }
    }
}

#[allow(clippy::disallowed_methods)]
fn bad_request(message: String, violations: Vec<FieldViolation>) -> Status {
    let details = ErrorDetails::with_bad_request(
        violations
            .iter()
            .take(MAX_VIOLATIONS_SENT)
            .map(|v| {
                tonic_types::FieldViolation::new(
                    cut(&v.field, MAX_FIELD_BYTES),
                    cut(&v.description, MAX_DESCRIPTION_BYTES),
                )
            })
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
    fn a_flood_of_violations_gives_a_bounded_status() {
        // 3,000 bad labels with long keys: the request's own size, not the status's.
        let violations: Vec<_> = (0..3000)
            .map(|i| {
                FieldViolation::new(
                    format!("labels[\"{}{i}\"]", "k".repeat(500)),
                    "é".repeat(300),
                )
            })
            .collect();
        let status = Status::from(ApiError::InvalidArgument(violations));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status
            .get_details_bad_request()
            .expect("bad request details");
        assert_eq!(bad.field_violations.len(), MAX_VIOLATIONS_SENT);
        assert!(
            bad.field_violations
                .iter()
                .all(|v| v.field.len() <= MAX_FIELD_BYTES
                    && v.description.len() <= MAX_DESCRIPTION_BYTES
                    && v.field.starts_with("labels[\"kkk"))
        );
        assert!(
            status.message().ends_with("; and 2992 more violations"),
            "{}",
            status.message()
        );
        // What goes on the wire: grpc-message (percent-encoded) and the details.
        let http = status.into_http::<()>();
        let bytes: usize = http
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        assert!(bytes < 8 * 1024, "{bytes} bytes of trailers");
    }

    #[test]
    fn auth_errors_are_unauthenticated_or_denied() {
        let status = Status::from(ApiError::Auth(AuthError::Unauthenticated("x".into())));
        assert_eq!(status.code(), Code::Unauthenticated);
        let status = Status::from(ApiError::Auth(AuthError::TenantMismatch {
            cert_name: "c".into(),
            cert_tenant: "t".into(),
        }));
        assert_eq!(status.code(), Code::PermissionDenied);
    }

    #[test]
    fn an_ended_stream_carries_its_resume_token() {
        let status = Status::from(ApiError::StreamEnded {
            reason: StreamEnd::ShuttingDown,
            resume_token: "abc".into(),
        });
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status
                .metadata()
                .get(RESUME_TOKEN_METADATA)
                .map(|v| v.to_str().ok()),
            Some(Some("abc"))
        );
        assert_eq!(
            status.message(),
            "server is shutting down; resume with the last resume token"
        );
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
