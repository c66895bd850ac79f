//! The tower layers and per-RPC helpers of the gRPC edge, one per file, each with its
//! own error (turned into a status only by `api::error`). They are stacked in one place,
//! `server::stack`, where their order is visible.
//!
//! - [`in_flight`]: the global in-flight limit, shedding with `UNAVAILABLE`;
//! - [`auth`]: the caller's identity from a bearer token or a client certificate;
//! - [`codec`]: the request codec, `INVALID_ARGUMENT` for an undecodable message;
//! - [`trace`]: the span, trace-context propagation and metrics of each RPC.

pub mod auth;
pub mod codec;
pub mod in_flight;
pub mod trace;
