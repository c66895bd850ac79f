//! Twilio terminal call statuses (`CallStatus` / `DialCallStatus`, reference §9).
//!
//! Owns the Twilio table only. Must not apply rule ordering or do I/O. Non-terminal
//! statuses (queued, ringing, in-progress) are not outcomes and are unknown here.

use super::v::*;
use super::{ProviderCause, find};

/// Reference §9. `completed`/`no-answer`/`canceled` override the SIP code (R2).
pub static CAUSES: &[ProviderCause] = &[
    // Includes calls answered by voicemail.
    ProviderCause::new("completed", ANSWERED, true, None),
    // Also what <Reject> without reason="busy" produces.
    ProviderCause::new("no-answer", NO_ANSWER, true, None),
    ProviderCause::new("canceled", CANCELED, true, None),
    ProviderCause::new("busy", BUSY, false, None),
    ProviderCause::new("failed", OTHER, false, None),
];

/// The Twilio status `cause` (any case; `_` accepted for `-`, and the British
/// `cancelled`, since both spellings appear in hand-written integrations).
pub fn lookup(cause: &str) -> Option<ProviderCause> {
    if cause.eq_ignore_ascii_case("no_answer") {
        return find(CAUSES, "no-answer");
    }
    if cause.eq_ignore_ascii_case("cancelled") {
        return find(CAUSES, "canceled");
    }
    find(CAUSES, cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(CAUSES.len(), 5);
        assert_eq!(lookup("No-Answer").map(|c| c.name), Some("no-answer"));
        assert_eq!(lookup("no_answer").map(|c| c.name), Some("no-answer"));
        assert_eq!(lookup("cancelled").map(|c| c.name), Some("canceled"));
        assert_eq!(lookup("ringing"), None);
        assert_eq!(lookup("in-progress"), None);
    }
}
