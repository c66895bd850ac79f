//! Pure SIP protocol knowledge: the IANA status-code registry, the Reason header
//! (RFC 3326 / RFC 8606) and its Q.850 causes, Retry-After (RFC 3261 §20.33), and a
//! tolerant parser for raw SIP responses, and the status-code patterns policy files use.
//!
//! This module owns parsing and static tables only. It must not classify outcomes
//! (that is `crate::classify`), know about providers, do I/O, or use tonic/prost types.
//! Every parser here is total: malformed input yields `None`/`Err`, never a panic.

pub mod message;
pub mod pattern;
pub mod q850;
pub mod reason;
pub mod retry_after;
pub mod status;

pub use message::parse_response;
pub use pattern::CodePattern;
pub use reason::{parse_reason_header, reason_values};
pub use retry_after::parse_retry_after;
