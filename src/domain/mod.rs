//! The vocabulary every other module speaks: what a call outcome is, how it is
//! classified, what the handling decision says, the destination key and the tenant.
//!
//! A leaf: it imports nothing of the crate, and nothing here does I/O, knows a wire
//! format (tonic, HTTP, JSON envelopes of providers) or holds a rule of classification
//! or policy. Those live above it (`sip`, `providers`, `classify`, `policy`) and import
//! from here, never the other way round.

mod decision;
pub mod destination;
mod outcome;
mod tenant;
mod vocabulary;

pub use decision::*;
pub use outcome::{HistoryEntry, HistorySnapshot, Outcome};
pub use tenant::{DEFAULT_MAX_TENANT_BYTES, Tenant, TenantError};
pub use vocabulary::*;
