//! The request deadline: the client's `grpc-timeout`, capped by `server.request_timeout`,
//! answered with `DEADLINE_EXCEEDED` when it passes (grpc's `doc/statuscodes.md`;
//! tonic's own timeout answers `CANCELLED`, which clients do not read as a deadline).
//!
//! Owns the parsing of `grpc-timeout` and the timer. It wraps every service of the
//! public port (health and reflection too). As with any gRPC server, the deadline covers
//! the response headers: a server stream, once open, is not cut by it.

use crate::api::error::ApiError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;

/// See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    ceiling: Duration,
}

impl DeadlineLayer {
    /// `ceiling`: `server.request_timeout`.
    pub fn new(ceiling: Duration) -> Self {
        DeadlineLayer { ceiling }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            ceiling: self.ceiling,
        }
    }
}

/// See [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    ceiling: Duration,
}

/// The `grpc-timeout` header (PROTOCOL-HTTP2.md: at most 8 digits and a unit);
/// `None` when absent or malformed (then the server's ceiling alone applies).
pub fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

pin_project_lite::pin_project! {
    /// The inner response, or `DEADLINE_EXCEEDED` when the timer fires first. The timer
    /// is armed only when the inner future is not done at its first poll: most requests
    /// of the in-process backend are, and never touch the timer wheel.
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        started: tokio::time::Instant,
        after: Duration,
    }
}

impl<F, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.inner.poll(cx) {
            return Poll::Ready(output);
        }
        let (started, after) = (*this.started, *this.after);
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(started + after)));
        std::task::ready!(timer.as_mut().poll(cx));
        let status: Status = ApiError::DeadlineExceeded(*this.after).into();
        Poll::Ready(Ok(status.into_http()))
    }
}

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for DeadlineService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let after = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| grpc_timeout(v.as_bytes()))
            .map_or(self.ceiling, |t| t.min(self.ceiling));
        DeadlineFuture {
            inner: self.inner.call(request),
            timer: None,
            started: tokio::time::Instant::now(),
            after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values_by_the_protocol() {
        assert_eq!(grpc_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [&b""[..], b"m", b"123456789m", b"10x", b"-1S", b"1.5S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
