//! Only gRPC over HTTP/2 is served on the public port: a request whose `content-type`
//! is not `application/grpc` (or `application/grpc+proto`, with parameters) is answered
//! HTTP 415 Unsupported Media Type, as PROTOCOL-HTTP2.md asks of gRPC servers, before
//! any service sees it. tonic alone would decode a JSON body as protobuf.
//!
//! Owns that check and nothing else; it wraps every service of the public port.

use std::future::{Ready, ready};
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::http::header::CONTENT_TYPE;

/// Whether `value` names gRPC with the protobuf codec.
pub fn is_grpc(value: &[u8]) -> bool {
    let media = value
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    media.eq_ignore_ascii_case(b"application/grpc")
        || media.eq_ignore_ascii_case(b"application/grpc+proto")
}

/// See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcOnlyLayer;

impl<S> tower::Layer<S> for GrpcOnlyLayer {
    type Service = GrpcOnlyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcOnlyService { inner }
    }
}

/// See [`GrpcOnlyLayer`].
#[derive(Debug, Clone)]
pub struct GrpcOnlyService<S> {
    inner: S,
}

pin_project_lite::pin_project! {
    /// The inner response, or the 415.
    #[project = GrpcOnlyProj]
    pub enum GrpcOnlyFuture<F> {
        Inner { #[pin] inner: F },
        Refused { response: Ready<http::Response<Body>> },
    }
}

impl<F, E> std::future::Future for GrpcOnlyFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GrpcOnlyProj::Inner { inner } => inner.poll(cx),
            GrpcOnlyProj::Refused { response } => std::pin::Pin::new(response).poll(cx).map(Ok),
        }
    }
}

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for GrpcOnlyService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = GrpcOnlyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if request
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| is_grpc(v.as_bytes()))
        {
            return GrpcOnlyFuture::Inner {
                inner: self.inner.call(request),
            };
        }
        let mut response = http::Response::new(Body::new(http_body_util::Full::new(
            bytes::Bytes::from_static(
                b"unsupported media type: this port speaks gRPC (content-type application/grpc)\n",
            ),
        )));
        *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        response.headers_mut().insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        GrpcOnlyFuture::Refused {
            response: ready(response),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_grpc_with_protobuf_is_grpc() {
        for ok in [
            &b"application/grpc"[..],
            b"application/grpc+proto",
            b"Application/GRPC; charset=utf-8",
        ] {
            assert!(is_grpc(ok), "{ok:?}");
        }
        for refused in [
            &b"application/json"[..],
            b"application/grpc+json",
            b"application/grpc-web",
            b"application/grpcx",
            b"",
        ] {
            assert!(!is_grpc(refused), "{refused:?}");
        }
    }
}
