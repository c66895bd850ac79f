//! `grpc.health.v1.Health` that ends its watches at shutdown: a watcher first gets
//! `NOT_SERVING`, then its stream closes with `OK`, so that an open watch (a load
//! balancer's, a sidecar's) never holds the process for the drain's grace period.
//!
//! Owns only that wrapping; statuses are set through tonic-health's `HealthReporter`.

use std::pin::Pin;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

/// tonic-health's service, with watches that end at `stop`.
#[derive(Debug)]
pub struct ShutdownAwareHealth {
    inner: HealthService,
    stop: CancellationToken,
}

/// The health service of `reporter` whose watches end when `stop` is cancelled.
pub fn service(
    reporter: HealthReporter,
    stop: CancellationToken,
) -> HealthServer<ShutdownAwareHealth> {
    HealthServer::new(ShutdownAwareHealth {
        inner: HealthService::from_health_reporter(reporter),
        stop,
    })
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for ShutdownAwareHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut statuses = self.inner.watch(request).await?.into_inner();
        let stop = self.stop.clone();
        let not_serving = ServingStatus::NotServing as i32;
        let stream = async_stream::stream! {
            let mut last = None;
            loop {
                tokio::select! {
                    biased;
                    next = statuses.next() => match next {
                        Some(item) => {
                            last = item.as_ref().ok().map(|r| r.status);
                            yield item;
                        }
                        None => return,
                    },
                    () = stop.cancelled() => break,
                }
            }
            // The shutdown's NOT_SERVING, unless the watcher has it already.
            if last != Some(not_serving) {
                yield Ok(HealthCheckResponse { status: not_serving });
            }
        };
        Ok(Response::new(Box::pin(stream) as WatchStream))
    }
}
