//! The request message of a unary-request RPC, read in full before the handler runs:
//! within `server.body_read_timeout`, at most `server.max_message_bytes`, exactly one.
//!
//! Owns the request-side rules of grpc's `doc/statuscodes.md` that tonic does not apply
//! the book's way: a message over the limit is `RESOURCE_EXHAUSTED` whether it is
//! compressed or not (the length prefix is checked as soon as it arrives, before the
//! rest is read); zero messages or more than one on a unary request is a cardinality
//! violation, `UNIMPLEMENTED`; a stream that sends HEADERS and then stalls ends with
//! `DEADLINE_EXCEEDED` at the body-read timeout instead of holding a task for the whole
//! request deadline. The bytes are passed on as they came (no copy); tonic decodes them.
//!
//! Every RPC of the public service takes one request message, so this layer wraps the
//! whole service. It sits after authentication: an unauthenticated request is answered
//! before a byte of its body is awaited.

use crate::api::error::ApiError;
use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;

/// The gRPC length-prefixed message header: a compression flag and a 32-bit length.
const PREFIX: usize = 5;

/// Reads the request message first; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct UnaryBodyLayer {
    max_message_bytes: usize,
    timeout: Duration,
}

impl UnaryBodyLayer {
    pub fn new(max_message_bytes: usize, timeout: Duration) -> Self {
        UnaryBodyLayer {
            max_message_bytes,
            timeout,
        }
    }
}

impl<S> tower::Layer<S> for UnaryBodyLayer {
    type Service = UnaryBodyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UnaryBodyService {
            inner,
            settings: *self,
        }
    }
}

/// See [`UnaryBodyLayer`].
#[derive(Debug, Clone)]
pub struct UnaryBodyService<S> {
    inner: S,
    settings: UnaryBodyLayer,
}

/// What was read: the frames as they came, or why the request ends here.
async fn read<B>(mut body: B, max_message_bytes: usize) -> Result<Vec<Frame<Bytes>>, ApiError>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    let mut frames = Vec::with_capacity(1);
    let mut prefix = [0u8; PREFIX];
    let mut received = 0usize;
    let mut expected: Option<usize> = None;
    while let Some(frame) = body.frame().await {
        // A body the client reset or that broke: tonic reports it the usual way.
        let Ok(frame) = frame else {
            return Ok(frames);
        };
        if let Some(data) = frame.data_ref() {
            // The first five bytes say how long the message is.
            let mut chunk = data.clone();
            while received < PREFIX && chunk.has_remaining() {
                prefix[received] = chunk.get_u8();
                received += 1;
            }
            received += chunk.remaining();
            if expected.is_none() && received >= PREFIX {
                let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
                if len > max_message_bytes {
                    return Err(ApiError::MessageTooLarge {
                        size: len,
                        limit: max_message_bytes,
                    });
                }
                expected = Some(PREFIX + len);
            }
            if expected.is_some_and(|e| received > e) {
                return Err(ApiError::Cardinality(
                    "a unary request carries exactly one message; more than one was sent",
                ));
            }
        }
        frames.push(frame);
    }
    if received == 0 {
        return Err(ApiError::Cardinality(
            "a unary request carries exactly one message; none was sent",
        ));
    }
    Ok(frames)
}

/// The frames read, played back to tonic.
struct Replay(std::vec::IntoIter<Frame<Bytes>>);

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.next().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.len() == 0
    }
}

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for UnaryBodyService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    ReqBody: HttpBody<Data = Bytes> + Send + Unpin + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // The clone that was made ready is the one called (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let settings = self.settings;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let read =
                tokio::time::timeout(settings.timeout, read(body, settings.max_message_bytes))
                    .await;
            let error = match read {
                Ok(Ok(frames)) => {
                    let body = Body::new(Replay(frames.into_iter()));
                    return inner.call(http::Request::from_parts(parts, body)).await;
                }
                Ok(Err(error)) => error,
                Err(_) => ApiError::BodyTimeout(settings.timeout),
            };
            let status: Status = error.into();
            Ok(status.into_http())
        })
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for UnaryBodyService<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn message(len: usize) -> Bytes {
        let mut b = vec![0u8];
        b.extend_from_slice(&(len as u32).to_be_bytes());
        b.extend(std::iter::repeat_n(7u8, len));
        Bytes::from(b)
    }

    async fn read_chunks(chunks: Vec<Bytes>, max: usize) -> Result<usize, ApiError> {
        let body = StreamBody::new(tokio_stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(c))),
        ));
        read(body, max).await.map(|f| f.len())
    }

    #[tokio::test]
    async fn one_message_in_any_number_of_chunks_passes() {
        let m = message(10);
        assert_eq!(read_chunks(vec![m.clone()], 10).await.ok(), Some(1));
        let split: Vec<Bytes> = (0..m.len()).map(|i| m.slice(i..i + 1)).collect();
        assert_eq!(read_chunks(split, 10).await.ok(), Some(15));
    }

    #[tokio::test]
    async fn the_length_prefix_is_checked_before_the_rest_arrives() {
        let m = message(11);
        // Only the prefix is sent: the size is known and refused already.
        let err = read_chunks(vec![m.slice(0..5)], 10)
            .await
            .expect_err("too large");
        assert!(
            matches!(
                err,
                ApiError::MessageTooLarge {
                    size: 11,
                    limit: 10
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn zero_or_two_messages_break_the_request_cardinality() {
        let err = read(Full::new(Bytes::new()), 10).await.expect_err("none");
        assert!(matches!(err, ApiError::Cardinality(m) if m.contains("none")));
        let err = read_chunks(vec![message(2), message(2)], 10)
            .await
            .expect_err("two");
        assert!(matches!(err, ApiError::Cardinality(m) if m.contains("more than one")));
    }
}
