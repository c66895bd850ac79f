//! call-outcome: classifies SIP call outcomes exactly as the RFCs and real stacks mean
//! them, decides how to handle each one, and streams decline events to subscribers.
//!
//! The layers, the one-way report flow and which module owns each step are described
//! once, in `ARCHITECTURE.md` at the repository's root; `tests/layers.rs` enforces the
//! import order it states.

// The library never unwraps what a caller or an operator sent (tests may).
#![deny(clippy::unwrap_used, clippy::expect_used)]

// The public surface: the vocabulary, the pure cores, the report flow and its backend
// traits (to embed or extend the service), the configuration, the server and the CLI.
pub mod auth;
pub mod classify;
pub mod cli;
pub mod config;
pub mod domain;
pub mod events;
pub mod pipeline;
pub mod policy;
pub mod server;
pub mod step;
pub mod store;

// Inside the crate only; what callers need of them is re-exported below.
mod admission;
mod api;
mod compact;
mod nats;
mod providers;
mod quota;
mod sip;
mod telemetry;
mod tls;
pub mod webhooks;

#[doc(hidden)]
pub mod fuzzing;

pub use api::convert::timestamp;
pub use api::subscribe::{RESUME_TOKEN_METADATA, SubscriptionConfig};
pub use nats::{NatsCondition, NatsConfig, NatsConnection};
pub use providers::callback::{Params as CallbackParams, WebhookProvider};
pub use telemetry::{LogFormat, OtlpSettings, init as init_telemetry};
pub use tls::serve::ReloadStatus;
pub use tls::{ClientAuth, TlsConfig};

/// The generated `calloutcome.v1` messages, client and server.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("calloutcome.v1");
    // The client, generated apart so that it keeps tonic's codec (see build.rs).
    include!(concat!(env!("OUT_DIR"), "/client/calloutcome.v1.rs"));

    /// Encoded file descriptor set of the contract, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("calloutcome_v1_descriptor");
}
