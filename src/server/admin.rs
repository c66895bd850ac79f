//! The plaintext admin listener: Prometheus metrics, liveness and readiness over HTTP,
//! and the gRPC health service for Kubernetes' native gRPC probes (which cannot speak
//! TLS). HTTP/1.1 and HTTP/2 (prior knowledge) are both accepted.
//!
//! It outlives the drain: liveness stays up and readiness reports the shutdown while
//! in-flight work finishes. It serves no business request.

use crate::pipeline::Pipeline;
use crate::telemetry::Metrics;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// `grpc` holds the gRPC services to serve beside the HTTP routes (health).
pub fn router(
    grpc: tonic::service::Routes,
    metrics: Arc<Metrics>,
    pipeline: Pipeline,
    shutting_down: CancellationToken,
) -> axum::Router {
    grpc.into_axum_router()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    match metrics.render() {
                        Ok(text) => (
                            StatusCode::OK,
                            [(
                                header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            text,
                        )
                            .into_response(),
                        Err(e) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                        }
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let pipeline = pipeline.clone();
                let shutting_down = shutting_down.clone();
                async move {
                    if shutting_down.is_cancelled() {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "shutting down\n".to_owned(),
                        )
                    } else {
                        match pipeline.readiness().await {
                            Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                            Err(reason) => (
                                StatusCode::SERVICE_UNAVAILABLE,
                                format!("backend unavailable: {reason}\n"),
                            ),
                        }
                    }
                }
            }),
        )
        // Unknown paths are 404 for HTTP clients; gRPC clients read a 404 as
        // UNIMPLEMENTED, which is what an unknown method is.
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
}

/// The gRPC services of the admin port: `health`, and reflection describing health
/// only (so that grpcurl can probe it).
pub fn grpc_routes(
    health: tonic::service::Routes,
) -> Result<tonic::service::Routes, super::ServerError> {
    let health_reflection = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
    };
    let reflection_error =
        |e: tonic_reflection::server::Error| super::ServerError::Reflection(e.to_string());
    Ok(health
        .add_service(
            health_reflection(tonic_reflection::server::Builder::configure())
                .build_v1()
                .map_err(reflection_error)?,
        )
        .add_service(
            health_reflection(tonic_reflection::server::Builder::configure())
                .build_v1alpha()
                .map_err(reflection_error)?,
        ))
}
