//! Outcome classification: the shared vocabulary (`types`) and the pure, synchronous
//! rules R0–R7 of the reference (`rules::classify`).
//!
//! Owns turning a [`ClassifyInput`] into a [`Classification`]. It must not do I/O, decide
//! handling policy (that is `crate::policy`), or touch tonic/prost types.

mod types;
pub use types::*;

mod rules;
mod summary;
pub use rules::classify;

#[cfg(test)]
mod tests;
