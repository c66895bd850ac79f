//! Vonage Voice API event `status` and failure `detail` values.
//!
//! Sources: the Voice API webhook reference (developer.vonage.com/voice/voice-api/
//! webhook-reference) for the statuses, and vonage-dotnet-sdk
//! `Vonage/Voice/EventWebhooks/DetailedStatus.cs` @9266a31 for the details. A terminal
//! event's cause is its `detail` when it has one this table knows (the more specific),
//! else its `status`. Owns the table only; must not apply rule ordering or do I/O.

use super::v::*;
use super::{ProviderCause, find};

pub static CAUSES: &[ProviderCause] = &[
    // Terminal statuses. Vonage's own timers (ringing_timer, cancel) override the SIP code.
    ProviderCause::new("completed", ANSWERED, true, None),
    ProviderCause::new("unanswered", NO_ANSWER, true, None),
    ProviderCause::new("timeout", NO_ANSWER, true, None),
    ProviderCause::new("cancelled", CANCELED, true, None),
    ProviderCause::new("busy", BUSY, false, None),
    // "The call was rejected": by Vonage or the far end; the detail or SIP code says which.
    ProviderCause::new("rejected", OTHER, false, None),
    ProviderCause::new("failed", OTHER, false, None),
    // Details of failed/rejected calls.
    ProviderCause::new("invalid_number", BAD_NUMBER, false, Some(28)),
    ProviderCause::new("number_out_of_service", BAD_NUMBER, false, Some(1)),
    ProviderCause::new("restricted", CONFIG, false, None),
    ProviderCause::new("declined", DECLINED, false, Some(21)),
    ProviderCause::new("cannot_route", NET, false, Some(3)),
    ProviderCause::new("carrier_timeout", NET, false, Some(102)),
    ProviderCause::new("internal_error", NET, false, None),
    ProviderCause::new("unavailable", UNAVAILABLE, false, Some(20)),
];

/// The Vonage status or detail `cause` (any case).
pub fn lookup(cause: &str) -> Option<ProviderCause> {
    if cause.eq_ignore_ascii_case("canceled") {
        return find(CAUSES, "cancelled");
    }
    find(CAUSES, cause)
}

/// Vonage statuses that end a call leg: only these become outcomes. `started`,
/// `ringing`, `answered`, `human`/`machine` (answering-machine detection) and
/// `disconnected` (a websocket or leg detaches; `completed` follows) do not.
pub const TERMINAL: &[&str] = &[
    "completed",
    "busy",
    "cancelled",
    "unanswered",
    "rejected",
    "failed",
    "timeout",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Category;

    #[test]
    fn statuses_and_details() {
        assert_eq!(
            lookup("Unanswered").map(|c| c.verdict.category),
            Some(Category::NoAnswer)
        );
        assert_eq!(lookup("canceled").map(|c| c.name), Some("cancelled"));
        assert_eq!(
            lookup("declined").map(|c| c.verdict.category),
            Some(Category::Declined)
        );
        assert_eq!(lookup("ringing"), None);
        for status in TERMINAL {
            assert!(lookup(status).is_some(), "{status}");
        }
    }
}
