//! Asterisk hangup causes: Q.850 numbers and `AST_CAUSE_*` names from `causes.h`, plus
//! `DIALSTATUS` values from `app_dial.c` (reference §6, §10).
//!
//! Owns the Asterisk table only; must not apply rule ordering or do I/O.
//!
//! How DIALSTATUS is read (the reference lists it only "for reference"):
//! * `ANSWER`, `NOANSWER` and `CANCEL` carry Dial()'s own answer-timer or cancel
//!   semantics, like Telnyx `normal_clearing`/`timeout`/`originator_cancel`, so they
//!   override the SIP code (R2): a 487 after Dial()'s timeout is a no-answer.
//! * `BUSY` and `CONGESTION` defer to the SIP code (busy; network_error).
//! * `CHANUNAVAIL` lumps every other cause together, including declines (21) and
//!   unallocated numbers (1), so alone it is `other` / no / unknown: too little
//!   information, and retrying could redial a decline.
//! * `DONTCALL`/`TORTURE` (privacy manager: the callee chose to reject) → declined;
//!   `INVALIDARGS` (our dial string) → config_error. Both defer.
//!
//! Bare `BUSY`, `CONGESTION` and `NOANSWER` are DIALSTATUS values; the `causes.h`
//! aliases of the same spelling need their `AST_CAUSE_` prefix.

use super::v::*;
use super::{ProviderCause, cause_number, find};
use crate::sip::q850;

/// `DIALSTATUS` values.
pub static DIALSTATUS: &[ProviderCause] = &[
    ProviderCause::new("ANSWER", ANSWERED, true, None),
    ProviderCause::new("NOANSWER", NO_ANSWER, true, None),
    ProviderCause::new("CANCEL", CANCELED, true, None),
    ProviderCause::new("BUSY", BUSY, false, None),
    ProviderCause::new("CONGESTION", NET, false, None),
    ProviderCause::new("CHANUNAVAIL", OTHER, false, None),
    ProviderCause::new("DONTCALL", DECLINED, false, None),
    ProviderCause::new("TORTURE", DECLINED, false, None),
    ProviderCause::new("INVALIDARGS", CONFIG, false, None),
];

/// `causes.h` names (without the `AST_CAUSE_` prefix) and their numbers. Primary names
/// come before the aliases so that a number finds its primary name.
pub static CAUSE_NAMES: &[(&str, u8)] = &[
    ("UNALLOCATED", 1),
    ("NO_ROUTE_TRANSIT_NET", 2),
    ("NO_ROUTE_DESTINATION", 3),
    ("MISDIALLED_TRUNK_PREFIX", 5),
    ("CHANNEL_UNACCEPTABLE", 6),
    ("CALL_AWARDED_DELIVERED", 7),
    ("PRE_EMPTED", 8),
    ("NUMBER_PORTED_NOT_HERE", 14),
    ("NORMAL_CLEARING", 16),
    ("USER_BUSY", 17),
    ("NO_USER_RESPONSE", 18),
    ("NO_ANSWER", 19),
    ("SUBSCRIBER_ABSENT", 20),
    ("CALL_REJECTED", 21),
    ("NUMBER_CHANGED", 22),
    ("REDIRECTED_TO_NEW_DESTINATION", 23),
    ("ANSWERED_ELSEWHERE", 26),
    ("DESTINATION_OUT_OF_ORDER", 27),
    ("INVALID_NUMBER_FORMAT", 28),
    ("FACILITY_REJECTED", 29),
    ("RESPONSE_TO_STATUS_ENQUIRY", 30),
    ("NORMAL_UNSPECIFIED", 31),
    ("NORMAL_CIRCUIT_CONGESTION", 34),
    ("NETWORK_OUT_OF_ORDER", 38),
    ("NORMAL_TEMPORARY_FAILURE", 41),
    ("SWITCH_CONGESTION", 42),
    ("ACCESS_INFO_DISCARDED", 43),
    ("REQUESTED_CHAN_UNAVAIL", 44),
    ("FACILITY_NOT_SUBSCRIBED", 50),
    ("OUTGOING_CALL_BARRED", 52),
    ("INCOMING_CALL_BARRED", 54),
    ("BEARERCAPABILITY_NOTAUTH", 57),
    ("BEARERCAPABILITY_NOTAVAIL", 58),
    ("BEARERCAPABILITY_NOTIMPL", 65),
    ("CHAN_NOT_IMPLEMENTED", 66),
    ("FACILITY_NOT_IMPLEMENTED", 69),
    ("INVALID_CALL_REFERENCE", 81),
    ("INCOMPATIBLE_DESTINATION", 88),
    ("INVALID_MSG_UNSPECIFIED", 95),
    ("MANDATORY_IE_MISSING", 96),
    ("MESSAGE_TYPE_NONEXIST", 97),
    ("WRONG_MESSAGE", 98),
    ("IE_NONEXIST", 99),
    ("INVALID_IE_CONTENTS", 100),
    ("WRONG_CALL_STATE", 101),
    ("RECOVERY_ON_TIMER_EXPIRE", 102),
    ("MANDATORY_IE_LENGTH_ERROR", 103),
    ("PROTOCOL_ERROR", 111),
    ("INTERWORKING", 127),
    // Aliases.
    ("BUSY", 17),
    ("FAILURE", 38),
    ("NORMAL", 16),
    ("NOANSWER", 19),
    ("CONGESTION", 34),
    ("UNREGISTERED", 20),
    ("NOSUCHDRIVER", 66),
];

/// Asterisk's number for "answered elsewhere" (Q.850 26 is "non-selected user
/// clearing", but Asterisk uses it for a call picked up on another branch).
const ANSWERED_ELSEWHERE: u8 = 26;

/// The Asterisk cause `cause`: a DIALSTATUS value, an `AST_CAUSE_*` name (prefix
/// optional unless it collides with a DIALSTATUS value), or a cause number.
pub fn lookup(cause: &str) -> Option<ProviderCause> {
    if let Some(n) = cause_number(cause) {
        let q = u8::try_from(n).ok().filter(|q| (1..=127).contains(q))?;
        return Some(numbered(q));
    }
    if let Some(d) = find(DIALSTATUS, cause) {
        return Some(d);
    }
    let bare = match cause.get(..10) {
        Some(p) if p.eq_ignore_ascii_case("AST_CAUSE_") => cause.get(10..).unwrap_or(""),
        _ => cause,
    };
    CAUSE_NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(bare))
        .map(|&(_, q)| numbered(q))
}

/// A cause number as Asterisk uses it: the §6 "alone" verdict, deferring to a SIP code.
fn numbered(q: u8) -> ProviderCause {
    let verdict = if q == ANSWERED_ELSEWHERE {
        ProviderCause::new("", ANSWERED, false, None).verdict
    } else {
        q850::alone(q)
    };
    ProviderCause {
        name: CAUSE_NAMES
            .iter()
            .find(|&&(_, n)| n == q)
            .map_or("", |(name, _)| name),
        verdict,
        overrides_sip_code: false,
        q850_cause: Some(q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Category;

    #[test]
    fn numbers_names_and_dialstatus() {
        let busy = lookup("17").unwrap();
        assert_eq!(
            (busy.name, busy.verdict.category),
            ("USER_BUSY", Category::Busy)
        );
        assert_eq!(lookup("AST_CAUSE_USER_BUSY"), Some(busy));
        assert_eq!(lookup("ast_cause_busy"), Some(busy));
        assert_eq!(lookup("USER_BUSY"), Some(busy));
        // Bare BUSY is the DIALSTATUS value (same verdict, no Q.850 cause).
        assert_eq!(lookup("BUSY").map(|c| c.q850_cause), Some(None));
        assert_eq!(
            lookup("AST_CAUSE_NOANSWER").map(|c| (c.overrides_sip_code, c.q850_cause)),
            Some((false, Some(19)))
        );
        assert_eq!(lookup("NOANSWER").map(|c| c.overrides_sip_code), Some(true));
        assert_eq!(
            lookup("26").map(|c| c.verdict.category),
            Some(Category::Answered)
        );
        assert_eq!(lookup("0"), None);
        assert_eq!(lookup("128"), None);
        assert_eq!(lookup("AST_CAUSE_NOTHING"), None);
        for (name, q) in CAUSE_NAMES {
            assert_eq!(
                lookup(&format!("AST_CAUSE_{name}")).and_then(|c| c.q850_cause),
                Some(*q)
            );
        }
    }
}
