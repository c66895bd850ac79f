//! The tower layers of the public port, stacked in one place so that their order is
//! visible: a request meets them top to bottom.
//!
//! Around every service of the port (health and reflection too):
//! 1. `GrpcOnlyLayer`: a `content-type` other than gRPC's is HTTP 415;
//! 2. `DeadlineLayer`: the client's `grpc-timeout` capped by `server.request_timeout`,
//!    `DEADLINE_EXCEEDED` when it passes.
//!
//! Around the public service only:
//! 3. `AuthLayer` (`[auth]`): puts the caller's identity in the request; a request
//!    without valid credentials is answered before its body is read;
//! 4. `UnaryBodyLayer`: the request message read in full (within
//!    `server.body_read_timeout`, `max_message_bytes`, exactly one);
//! 5. the service itself, whose codec answers an undecodable message with
//!    `INVALID_ARGUMENT` (`api::layers::codec`), and whose handlers take their in-flight
//!    slot (`api::admission`) and trace each RPC (`api::layers::trace`).
//!
//! Health and reflection are never shed nor asked for credentials.

use crate::api::CallOutcomeApi;
use crate::api::layers::auth::{AuthLayer, AuthService};
use crate::api::layers::body::{UnaryBodyLayer, UnaryBodyService};
use crate::api::layers::content_type::{GrpcOnlyLayer, GrpcOnlyService};
use crate::api::layers::deadline::{DeadlineLayer, DeadlineService};
use crate::auth::Authenticator;
use crate::config::{Compression, Config};
use crate::proto::call_outcome_service_server::CallOutcomeServiceServer;
use std::sync::Arc;
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tower::ServiceBuilder;

/// The public service behind its own layers.
pub type PublicService = AuthService<UnaryBodyService<CallOutcomeServiceServer<CallOutcomeApi>>>;

/// Every service of the public port behind the port's layers.
pub type PublicPort = GrpcOnlyService<DeadlineService<Routes>>;

/// The public service behind its layers.
pub fn public_service(
    config: &Config,
    api: CallOutcomeApi,
    auth: Option<Arc<Authenticator>>,
) -> PublicService {
    let mut service = CallOutcomeServiceServer::new(api)
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(config.server.max_message_bytes.max(4 * 1024 * 1024))
        .accept_compressed(CompressionEncoding::Gzip);
    // Only when asked: tonic compresses every response of a client that offers gzip
    // (grpc-python does by default), at several times the cost of the report itself.
    if config.server.compression == Compression::Gzip {
        service = service.send_compressed(CompressionEncoding::Gzip);
    }
    ServiceBuilder::new()
        .layer(AuthLayer::new(auth))
        .layer(UnaryBodyLayer::new(
            config.server.max_message_bytes,
            config.server.body_read_timeout,
        ))
        .service(service)
}

/// The routes of the port behind the port-wide layers.
pub fn public_port(config: &Config, routes: Routes) -> PublicPort {
    ServiceBuilder::new()
        .layer(GrpcOnlyLayer)
        .layer(DeadlineLayer::new(config.server.request_timeout))
        .service(routes.prepare())
}
