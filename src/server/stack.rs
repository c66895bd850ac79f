//! The tower layers in front of the public service, stacked in one place so that their
//! order is visible: the request meets them top to bottom.
//!
//! 1. `InFlightLayer` (`server.max_in_flight`): a shed request costs neither
//!    authentication nor decoding;
//! 2. `AuthLayer` (`[auth]`): puts the caller's identity in the request;
//! 3. the service itself, whose codec answers an undecodable message with
//!    `INVALID_ARGUMENT` (`api::layers::codec`) and whose handlers trace each RPC
//!    (`api::layers::trace`).
//!
//! Health and reflection are served beside it, outside these layers: probes are never
//! shed nor asked for credentials.

use crate::api::CallOutcomeApi;
use crate::api::layers::auth::AuthLayer;
use crate::api::layers::in_flight::InFlightLayer;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::proto::call_outcome_service_server::CallOutcomeServiceServer;
use opentelemetry::metrics::Meter;
use std::sync::Arc;
use tonic::codec::CompressionEncoding;
use tower::ServiceBuilder;

/// The public service behind its layers.
pub fn public_service(
    config: &Config,
    api: CallOutcomeApi,
    auth: Option<Arc<Authenticator>>,
    meter: &Meter,
) -> crate::api::layers::in_flight::InFlightService<
    crate::api::layers::auth::AuthService<CallOutcomeServiceServer<CallOutcomeApi>>,
> {
    let service = CallOutcomeServiceServer::new(api)
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(config.server.max_message_bytes.max(4 * 1024 * 1024))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    ServiceBuilder::new()
        .layer(InFlightLayer::new(config.server.max_in_flight, Some(meter)))
        .layer(AuthLayer::new(auth))
        .service(service)
}
