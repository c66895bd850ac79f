//! The tower layers and per-RPC helpers of the gRPC edge, one per file, each with its
//! own error (turned into a status only by `api::error`). They are stacked in one place,
//! `server::stack`, where their order is visible.
//!
//! - [`content_type`]: only gRPC on the public port (HTTP 415 otherwise);
//! - [`deadline`]: the request deadline, `DEADLINE_EXCEEDED` when it passes;
//! - [`auth`]: the caller's identity from a bearer token or a client certificate;
//! - [`body`]: the request message read first (timeout, size, cardinality);
//! - [`codec`]: the request codec, `INVALID_ARGUMENT` for an undecodable message;
//! - [`trace`]: the span, trace-context propagation and metrics of each RPC.

pub mod auth;
pub mod body;
pub mod codec;
pub mod content_type;
pub mod deadline;
pub mod trace;
