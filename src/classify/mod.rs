//! Outcome classification: the pure, synchronous rules R0–R7 of the reference
//! (`rules::classify`), reading a [`ClassifyInput`] and producing a
//! [`crate::domain::Classification`] in the vocabulary of [`crate::domain`].
//!
//! Owns turning a [`ClassifyInput`] into a [`Classification`]. It must not do I/O, decide
//! handling policy (that is `crate::policy`), or touch tonic/prost types.

mod input;
pub use input::{ClassifyError, ClassifyInput, ProviderInput};

mod rules;
mod summary;
pub use rules::classify;

/// Classifies a reported outcome (what [`classify`] makes of its [`ClassifyInput`]).
pub fn classify_outcome(
    outcome: &crate::domain::Outcome,
) -> Result<crate::domain::Classification, ClassifyError> {
    classify(&ClassifyInput::from(outcome))
}

#[cfg(test)]
mod tests;
