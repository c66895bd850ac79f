//! call-outcome: classifies SIP call outcomes exactly as the RFCs and real stacks mean
//! them, decides how to handle each one, and streams decline events to subscribers.
//!
//! # Layout
//! A report flows one way: [`api`] validates → [`classify`] → [`store`] (idempotency +
//! history snapshot) → [`policy`] decides → [`events`] publish → response.
//!
//! - [`proto`]: the generated `calloutcome.v1` contract.
//! - [`sip`]: pure protocol knowledge — status codes, Reason/Q.850, Retry-After, raw
//!   response parsing.
//! - [`providers`]: Telnyx / Twilio / FreeSWITCH / Asterisk causes in SIP/Q.850 terms.
//! - [`classify`]: outcome → [`classify::Classification`] (pure, synchronous).
//! - [`policy`]: TOML policy + history snapshot → [`policy::Decision`] (pure).
//! - [`outcome`]: the domain form of a report and of a destination's history.
//! - [`store`]: history and idempotency behind a trait (embedded memory backend).
//! - [`events`]: the outcome event log behind a trait (embedded ring).
//! - [`nats`]: the NATS JetStream connection behind the multi-replica store and event
//!   backends (`--backend nats`).
//! - [`pipeline`]: the order of the steps above and their failure handling.
//! - [`api`]: tonic service implementations (validation, conversion, error mapping).
//! - [`server`]: wiring — health, reflection, limits, graceful shutdown.
//! - [`tls`]: TLS on the public port (rustls with ring), mutual TLS, reload from disk.
//! - [`config`], [`telemetry`], [`cli`]: configuration, logging, the command line.
//! - `fuzzing` (hidden): the invariants checked by the `cargo fuzz` targets in `fuzz/`
//!   and by `tests/fuzz_corpus.rs`.

#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod api;
pub mod auth;
pub mod classify;
pub mod cli;
pub mod config;
pub mod domain;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod nats;
pub mod pipeline;
pub mod policy;
pub mod providers;
pub mod quota;
pub mod server;
pub mod sip;
pub mod step;
pub mod store;
pub mod telemetry;
pub mod tls;

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
