//! Global in-flight limit with load shedding (`server.max_in_flight`): a tower layer in
//! front of the public service that counts the requests being handled across every
//! connection and answers the one over the limit at once with `UNAVAILABLE`, before
//! authentication, decoding or any other work.
//!
//! Owns the count and the shedding; it reads nothing of the request but its path (for
//! the metric label). A request holds its slot until its response *headers* are ready:
//! for a unary RPC that is the whole handler, for `SubscribeOutcomes` only the setup —
//! a running stream holds no slot (subscriptions are capped by `[subscriptions]`).
//! Health and reflection are separate services and never pass through here.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter, ObservableGauge};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tonic::Status;
use tonic::codegen::http;

/// Counts requests in flight; shared by every connection's copy of the service.
#[derive(Debug)]
struct Slots {
    max: usize,
    used: AtomicUsize,
}

/// A request's slot; given back when dropped.
#[derive(Debug)]
struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::Release);
    }
}

impl Slots {
    fn try_take(self: &Arc<Self>) -> Option<Slot> {
        // Taken optimistically and given back when over: one atomic on the usual path.
        if self.used.fetch_add(1, Ordering::Acquire) < self.max {
            Some(Slot(Arc::clone(self)))
        } else {
            self.used.fetch_sub(1, Ordering::Release);
            None
        }
    }
}

struct Instruments {
    shed: Counter<u64>,
    _in_flight: ObservableGauge<u64>,
}

/// Tower layer shedding requests beyond `max` in flight. `max = 0` lets every request
/// through (the layer still counts them for the gauge).
#[derive(Clone)]
pub struct InFlightLayer {
    slots: Arc<Slots>,
    instruments: Option<Arc<Instruments>>,
}

impl std::fmt::Debug for InFlightLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlightLayer")
            .field("max", &self.slots.max)
            .field("used", &self.in_flight())
            .finish()
    }
}

impl InFlightLayer {
    /// At most `max` requests in flight (0: no limit). With a meter, it exports
    /// `calloutcome_in_flight_requests` and `calloutcome_shed_requests`.
    pub fn new(max: usize, meter: Option<&Meter>) -> Self {
        let slots = Arc::new(Slots {
            max: if max == 0 { usize::MAX / 2 } else { max },
            used: AtomicUsize::new(0),
        });
        let instruments = meter.map(|m| {
            let observed = Arc::clone(&slots);
            Arc::new(Instruments {
                shed: m
                    .u64_counter("calloutcome_shed_requests")
                    .with_description(
                        "Requests answered UNAVAILABLE unprocessed because server.max_in_flight were in flight, by RPC method.",
                    )
                    .build(),
                _in_flight: m
                    .u64_observable_gauge("calloutcome_in_flight_requests")
                    .with_description(
                        "Public-service requests being handled now (streams only while they open).",
                    )
                    .with_callback(move |o| {
                        o.observe(observed.used.load(Ordering::Relaxed) as u64, &[]);
                    })
                    .build(),
            })
        });
        InFlightLayer { slots, instruments }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.slots.used.load(Ordering::Relaxed)
    }
}

impl<S> tower::Layer<S> for InFlightLayer {
    type Service = InFlightService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlightService {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`InFlightLayer`].
#[derive(Clone, Debug)]
pub struct InFlightService<S> {
    inner: S,
    layer: InFlightLayer,
}

/// The RPC method of a request path, from a fixed set (a bounded metric label).
fn method(path: &str) -> &'static str {
    match path.rsplit('/').next() {
        Some("ReportOutcome") => "ReportOutcome",
        Some("Classify") => "Classify",
        Some("SubscribeOutcomes") => "SubscribeOutcomes",
        _ => "other",
    }
}

pin_project_lite::pin_project! {
    /// The response of [`InFlightService`]: the inner one holding its slot, or the
    /// shedding status.
    #[project = InFlightProj]
    pub enum InFlightFuture<F, B> {
        Admitted { #[pin] inner: F, slot: Option<Slot> },
        Shed { response: Option<http::Response<B>> },
    }
}

impl<F, B, E> Future for InFlightFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            InFlightProj::Admitted { inner, slot } => {
                let output = std::task::ready!(inner.poll(cx));
                // The response headers are out: a stream's body no longer counts.
                slot.take();
                Poll::Ready(output)
            }
            InFlightProj::Shed { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for InFlightService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = InFlightFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        match self.layer.slots.try_take() {
            Some(slot) => InFlightFuture::Admitted {
                inner: self.inner.call(request),
                slot: Some(slot),
            },
            None => {
                let method = method(request.uri().path());
                if let Some(i) = &self.layer.instruments {
                    i.shed.add(1, &[KeyValue::new("rpc_method", method)]);
                }
                tracing::debug!(
                    rpc = method,
                    max_in_flight = self.layer.slots.max,
                    "request shed"
                );
                let status: Status = crate::api::error::ApiError::Overloaded {
                    max_in_flight: self.layer.slots.max,
                }
                .into();
                InFlightFuture::Shed {
                    response: Some(status.into_http::<ResBody>()),
                }
            }
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for InFlightService<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;
    use tower::{Layer, Service, ServiceExt};

    type Body = tonic::body::Body;

    /// A service whose responses wait for the test to release them.
    #[derive(Clone)]
    struct Gate(Arc<parking_lot::Mutex<Vec<oneshot::Sender<()>>>>);

    impl Service<http::Request<Body>> for Gate {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            let (tx, rx) = oneshot::channel();
            self.0.lock().push(tx);
            Box::pin(async move {
                let _ = rx.await;
                Ok(http::Response::new(Body::empty()))
            })
        }
    }

    fn request(path: &str) -> http::Request<Body> {
        http::Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("request")
    }

    fn grpc_status(response: &http::Response<Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn requests_over_the_limit_are_shed_at_once_and_slots_come_back() {
        let gate = Gate(Arc::default());
        let layer = InFlightLayer::new(2, None);
        let mut service = layer.layer(gate.clone());
        let first = service
            .ready()
            .await
            .expect("ready")
            .call(request("/calloutcome.v1.CallOutcomeService/ReportOutcome"));
        let second = service
            .ready()
            .await
            .expect("ready")
            .call(request("/calloutcome.v1.CallOutcomeService/Classify"));
        let first = tokio::spawn(first);
        let second = tokio::spawn(second);
        assert_eq!(layer.in_flight(), 2);
        let shed = service
            .ready()
            .await
            .expect("ready")
            .call(request("/calloutcome.v1.CallOutcomeService/ReportOutcome"))
            .await
            .expect("a response");
        // UNAVAILABLE = 14: retryable, nothing was processed.
        assert_eq!(grpc_status(&shed), Some("14"));
        assert_eq!(layer.in_flight(), 2);
        // Releasing one request frees its slot.
        let tx = gate.0.lock().remove(0);
        let _ = tx.send(());
        let done = first.await.expect("join").expect("response");
        assert_eq!(grpc_status(&done), None);
        assert_eq!(layer.in_flight(), 1);
        let third = tokio::spawn(
            service
                .ready()
                .await
                .expect("ready")
                .call(request("/calloutcome.v1.CallOutcomeService/ReportOutcome")),
        );
        assert_eq!(layer.in_flight(), 2);
        for tx in gate.0.lock().drain(..) {
            let _ = tx.send(());
        }
        second.await.expect("join").expect("response");
        third.await.expect("join").expect("response");
        assert_eq!(layer.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_dropped_request_gives_its_slot_back() {
        let gate = Gate(Arc::default());
        let layer = InFlightLayer::new(1, None);
        let mut service = layer.layer(gate);
        let pending = service
            .ready()
            .await
            .expect("ready")
            .call(request("/x/ReportOutcome"));
        assert_eq!(layer.in_flight(), 1);
        drop(pending);
        assert_eq!(layer.in_flight(), 0);
    }

    #[test]
    fn methods_are_a_fixed_set() {
        assert_eq!(
            method("/calloutcome.v1.CallOutcomeService/Classify"),
            "Classify"
        );
        assert_eq!(method("/anything/else"), "other");
    }
}
