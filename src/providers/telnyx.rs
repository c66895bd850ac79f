//! Telnyx `call.hangup` webhook `hangup_cause` values (reference §8).
//!
//! Owns the Telnyx table only; `sip_hangup_cause` is mapped to `sip_code` by the
//! caller, not here. Must not apply rule ordering or do I/O.

use super::v::*;
use super::{ProviderCause, find};

/// Reference §8. Timer/cancel causes override the SIP code (R2); the rest defer to it.
pub static CAUSES: &[ProviderCause] = &[
    ProviderCause::new("normal_clearing", ANSWERED, true, None),
    ProviderCause::new("time_limit", ANSWERED, true, None),
    ProviderCause::new("timeout", NO_ANSWER, true, None),
    ProviderCause::new("no_answer", NO_ANSWER, true, None),
    ProviderCause::new("originator_cancel", CANCELED, true, None),
    ProviderCause::new("user_busy", BUSY, false, None),
    ProviderCause::new("not_found", BAD_NUMBER, false, None),
    // Lower confidence without a SIP code: Telnyx also uses it for carrier 403s.
    ProviderCause::new("call_rejected", DECLINED, false, None),
    ProviderCause::new("unspecified", OTHER, false, None),
];

/// The Telnyx hangup cause `cause` (any case), or a TeXML `CallStatus` (TeXML is
/// Telnyx's TwiML-compatible product: its statuses are Twilio's, reference webhooks.md
/// §1.6).
pub fn lookup(cause: &str) -> Option<ProviderCause> {
    find(CAUSES, cause).or_else(|| super::twilio::lookup(cause))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_documented_causes() {
        assert_eq!(CAUSES.len(), 9);
        assert_eq!(lookup("TIMEOUT").map(|c| c.name), Some("timeout"));
        // TeXML statuses are Twilio's.
        assert_eq!(lookup("busy").map(|c| c.name), Some("busy"));
        assert_eq!(lookup("ringing"), None);
        let overriding: Vec<_> = CAUSES
            .iter()
            .filter(|c| c.overrides_sip_code)
            .map(|c| c.name)
            .collect();
        assert_eq!(
            overriding,
            [
                "normal_clearing",
                "time_limit",
                "timeout",
                "no_answer",
                "originator_cancel"
            ]
        );
    }
}
