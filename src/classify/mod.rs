//! Outcome classification: the pure, synchronous rules R0–R7 of the reference
//! (`rules::classify`), then the policy's data-driven [`Overrides`] for carriers that
//! misreport, reading a [`ClassifyInput`] and producing a
//! [`crate::domain::Classification`] in the vocabulary of [`crate::domain`].
//!
//! Owns turning a [`ClassifyInput`] into a [`Classification`]. It must not do I/O, decide
//! handling policy (that is `crate::policy`), or touch tonic/prost types.

mod input;
pub use input::{ClassifyError, ClassifyInput, ProviderInput};

mod overrides;
pub use overrides::{
    LabelMatch, MAX_PATTERN_LEN, Override, OverrideConditions, OverrideEffect, Overrides,
    PatternError, ReasonPattern,
};

mod rules;
mod summary;
pub use rules::{classify, classify_with};

/// Classifies a reported outcome by the rules alone (what [`classify`] makes of its
/// [`ClassifyInput`]), without overrides.
pub fn classify_outcome(
    outcome: &crate::domain::Outcome,
) -> Result<crate::domain::Classification, ClassifyError> {
    classify(&ClassifyInput::from(outcome))
}

/// Classifies an outcome reported by `tenant`: the rules, then `overrides`.
pub fn classify_for(
    tenant: &str,
    outcome: &crate::domain::Outcome,
    overrides: &Overrides,
) -> Result<crate::domain::Classification, ClassifyError> {
    let mut input = ClassifyInput::from(outcome);
    input.tenant = tenant;
    classify_with(&input, overrides)
}

#[cfg(test)]
mod tests;
