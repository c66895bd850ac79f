//! Plivo hangup callbacks: `HangupCauseCode` (numeric) and `CallStatus`.
//!
//! Sources: docs.plivo.com/docs/voice/troubleshooting/hangup-causes (the code table:
//! 0 unknown, 1000–1020 canceled, 2000–2070 destination issues, 4000–4030 normal
//! completions) and support.plivo.com "What do the different call statuses mean" (the
//! statuses). Code samples disagree on some codes (3000 as no-answer or normal), so only
//! the documented table is used: a terminal callback's cause is its `HangupCauseCode`
//! when this table knows it, else its `CallStatus`. Owns the table only; must not apply
//! rule ordering or do I/O.

use super::v::*;
use super::{ProviderCause, find};

pub static CAUSES: &[ProviderCause] = &[
    // Hangup cause codes.
    ProviderCause::new("0", OTHER, false, None),
    ProviderCause::new("1000", CANCELED, true, None),
    // Out of credits and the simultaneous-dial limit: the caller's account, not the callee.
    ProviderCause::new("1010", CONFIG, true, None),
    ProviderCause::new("1020", CONFIG, true, None),
    ProviderCause::new("2000", BAD_NUMBER, false, Some(28)),
    ProviderCause::new("2010", BAD_NUMBER, false, Some(1)),
    ProviderCause::new("2020", UNAVAILABLE, false, Some(20)),
    // Country or premium number barred by the account's own permissions.
    ProviderCause::new("2030", CONFIG, false, None),
    ProviderCause::new("2040", CONFIG, false, None),
    ProviderCause::new("2060", CONFIG, false, None),
    ProviderCause::new("4000", ANSWERED, true, None),
    ProviderCause::new("4010", ANSWERED, true, None),
    ProviderCause::new("4020", ANSWERED, true, None),
    ProviderCause::new("4030", ANSWERED, true, None),
    // Call statuses.
    ProviderCause::new("completed", ANSWERED, true, None),
    ProviderCause::new("no-answer", NO_ANSWER, true, None),
    ProviderCause::new("cancel", CANCELED, true, None),
    ProviderCause::new("busy", BUSY, false, None),
    ProviderCause::new("failed", OTHER, false, None),
    // "A timeout while connecting your call": a carrier or Plivo's network, not the callee.
    ProviderCause::new("timeout", NET, false, None),
];

/// The Plivo cause code or status `cause` (any case).
pub fn lookup(cause: &str) -> Option<ProviderCause> {
    match cause {
        c if c.eq_ignore_ascii_case("no_answer") => find(CAUSES, "no-answer"),
        c if c.eq_ignore_ascii_case("canceled") || c.eq_ignore_ascii_case("cancelled") => {
            find(CAUSES, "cancel")
        }
        _ => find(CAUSES, cause),
    }
}

/// Plivo statuses that end a call: `ringing` and `in-progress` do not.
pub const TERMINAL: &[&str] = &[
    "completed",
    "busy",
    "failed",
    "timeout",
    "no-answer",
    "cancel",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Category;

    #[test]
    fn codes_and_statuses() {
        assert_eq!(
            lookup("2000").map(|c| c.verdict.category),
            Some(Category::InvalidNumber)
        );
        assert_eq!(
            lookup("4010").map(|c| c.verdict.category),
            Some(Category::Answered)
        );
        assert_eq!(lookup("No-Answer").map(|c| c.name), Some("no-answer"));
        assert_eq!(lookup("3000"), None);
        for status in TERMINAL {
            assert!(lookup(status).is_some(), "{status}");
        }
    }
}
