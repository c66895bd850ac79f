//! ITU-T Q.850 cause values as this service reads them (reference §6): the verdict for a
//! cause reported alone, and whether the cause is specific enough to refine a 4xx/5xx
//! SIP code (rule R4). Names follow FreeSWITCH `switch_types.h`.
//!
//! Owns the static table only. It must not apply rule ordering (which codes R4 covers,
//! R3/R5 exceptions) — that is `crate::classify`.

use super::reason::Location;
use crate::domain::{Category, Fault, Retryable, Verdict};

/// How a cause in a Reason header relates to the SIP code (R4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refinement {
    /// The cause decides the verdict.
    Specific,
    /// Generic cause (16, 31, 127, unlisted): the SIP code decides.
    Generic,
    /// Cause 21: decided by the RFC 8606 location (user → declined, network →
    /// config_error); without a user/network location the SIP code decides.
    ByLocation,
}

/// One row of reference §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Q850Row {
    pub cause: u8,
    /// FreeSWITCH/Q.850 name; empty when FreeSWITCH's enum has none (26, 47, 55, 70, 87).
    pub name: &'static str,
    /// Verdict when the cause is reported alone (provider cause, no SIP code).
    pub alone: Verdict,
    pub refinement: Refinement,
}

use Category as C;
use Fault as F;
use Refinement::{ByLocation, Generic, Specific};
use Retryable as R;

const fn row(
    cause: u8,
    name: &'static str,
    v: (Category, Fault, Retryable),
    refinement: Refinement,
) -> Q850Row {
    Q850Row {
        cause,
        name,
        alone: Verdict::new(v.0, v.1, v.2),
        refinement,
    }
}

const NET: (C, F, R) = (C::NetworkError, F::Network, R::NowAlternateRoute);
const CONFIG: (C, F, R) = (C::ConfigError, F::CallerConfig, R::No);
const BAD_NUMBER: (C, F, R) = (C::InvalidNumber, F::CallerData, R::No);
const OTHER: (C, F, R) = (C::Other, F::Unknown, R::No);
const NO_ANSWER: (C, F, R) = (C::NoAnswer, F::CalleeDevice, R::Later);
const UNAVAILABLE: (C, F, R) = (C::Unavailable, F::CalleeDevice, R::Later);
const DECLINED: (C, F, R) = (C::Declined, F::CalleeChoice, R::No);

/// Verdict for a cause without a row ("other": alone → other / no / unknown).
pub const OTHER_VERDICT: Verdict = Verdict::new(C::Other, F::Unknown, R::No);

/// Reference §6, sorted by cause.
pub static TABLE: &[Q850Row] = &[
    row(1, "UNALLOCATED_NUMBER", BAD_NUMBER, Specific),
    row(2, "NO_ROUTE_TRANSIT_NET", NET, Specific),
    row(3, "NO_ROUTE_DESTINATION", NET, Specific),
    row(6, "CHANNEL_UNACCEPTABLE", NET, Specific),
    // 7/30/43 have their own rows (other / no / unknown) in §6 rather than "defers",
    // and R4 names only 16/31/127/21-without-location as non-specific; followed as written.
    row(7, "CALL_AWARDED_DELIVERED", OTHER, Specific),
    // FreeSWITCH maps 200 to 16, so alone it means answered.
    row(
        16,
        "NORMAL_CLEARING",
        (C::Answered, F::None, R::No),
        Generic,
    ),
    row(
        17,
        "USER_BUSY",
        (C::Busy, F::CalleeDevice, R::Later),
        Specific,
    ),
    row(18, "NO_USER_RESPONSE", NO_ANSWER, Specific),
    row(19, "NO_ANSWER", NO_ANSWER, Specific),
    row(20, "SUBSCRIBER_ABSENT", UNAVAILABLE, Specific),
    row(21, "CALL_REJECTED", DECLINED, ByLocation),
    row(22, "NUMBER_CHANGED", BAD_NUMBER, Specific),
    // Asterisk sends 302 for 23; RFC 3398/4497 and FreeSWITCH (410) chosen.
    row(23, "REDIRECTION_TO_NEW_DESTINATION", BAD_NUMBER, Specific),
    row(25, "EXCHANGE_ROUTING_ERROR", NET, Specific),
    // Non-selected user clearing / ANSI misrouted ported number: an LNP routing fault.
    row(26, "", NET, Specific),
    row(27, "DESTINATION_OUT_OF_ORDER", UNAVAILABLE, Specific),
    row(28, "INVALID_NUMBER_FORMAT", BAD_NUMBER, Specific),
    row(29, "FACILITY_REJECTED", CONFIG, Specific),
    row(30, "RESPONSE_TO_STATUS_ENQUIRY", OTHER, Specific),
    row(31, "NORMAL_UNSPECIFIED", UNAVAILABLE, Generic),
    row(34, "NORMAL_CIRCUIT_CONGESTION", NET, Specific),
    row(38, "NETWORK_OUT_OF_ORDER", NET, Specific),
    row(41, "NORMAL_TEMPORARY_FAILURE", NET, Specific),
    row(42, "SWITCH_CONGESTION", NET, Specific),
    row(43, "ACCESS_INFO_DISCARDED", OTHER, Specific),
    row(44, "REQUESTED_CHAN_UNAVAIL", NET, Specific),
    row(47, "", NET, Specific),
    row(50, "FACILITY_NOT_SUBSCRIBED", CONFIG, Specific),
    row(52, "OUTGOING_CALL_BARRED", CONFIG, Specific),
    // Barring on the callee's side is the callee's choice.
    row(54, "INCOMING_CALL_BARRED", DECLINED, Specific),
    row(55, "", CONFIG, Specific),
    row(57, "BEARERCAPABILITY_NOTAUTH", CONFIG, Specific),
    row(58, "BEARERCAPABILITY_NOTAVAIL", NET, Specific),
    row(63, "SERVICE_UNAVAILABLE", CONFIG, Specific),
    row(65, "BEARERCAPABILITY_NOTIMPL", CONFIG, Specific),
    row(66, "CHAN_NOT_IMPLEMENTED", CONFIG, Specific),
    row(69, "FACILITY_NOT_IMPLEMENTED", CONFIG, Specific),
    row(70, "", CONFIG, Specific),
    row(79, "SERVICE_NOT_IMPLEMENTED", CONFIG, Specific),
    row(81, "INVALID_CALL_REFERENCE", NET, Specific),
    row(87, "", CONFIG, Specific),
    // RFCs map 88 to 503; FreeSWITCH (488) and Telnyx (codec/SRTP mismatch) chosen.
    row(88, "INCOMPATIBLE_DESTINATION", CONFIG, Specific),
    row(95, "INVALID_MSG_UNSPECIFIED", NET, Specific),
    row(96, "MANDATORY_IE_MISSING", NET, Specific),
    row(97, "MESSAGE_TYPE_NONEXIST", NET, Specific),
    row(98, "WRONG_MESSAGE", NET, Specific),
    row(99, "IE_NONEXIST", NET, Specific),
    row(100, "INVALID_IE_CONTENTS", NET, Specific),
    row(101, "WRONG_CALL_STATE", NET, Specific),
    row(102, "RECOVERY_ON_TIMER_EXPIRE", NET, Specific),
    row(103, "MANDATORY_IE_LENGTH_ERROR", NET, Specific),
    row(111, "PROTOCOL_ERROR", NET, Specific),
    row(127, "INTERWORKING", NET, Generic),
];

/// The §6 row of `cause`, if it has one.
pub fn lookup(cause: u8) -> Option<&'static Q850Row> {
    TABLE
        .binary_search_by_key(&cause, |r| r.cause)
        .ok()
        .and_then(|i| TABLE.get(i))
}

/// The verdict for `cause` reported alone (no SIP code).
pub fn alone(cause: u8) -> Verdict {
    lookup(cause).map_or(OTHER_VERDICT, |r| r.alone)
}

/// R4: the verdict when `cause` (with its RFC 8606 location) refines a 4xx/5xx code;
/// `None` when the cause is not specific and the SIP code decides.
pub fn refine(cause: u8, location: Option<Location>) -> Option<Verdict> {
    let row = lookup(cause)?;
    match row.refinement {
        Specific => Some(row.alone),
        Generic => None,
        ByLocation => match location {
            // RFC 3398 §7.2.4.1 note (+), RFC 4497 Table 1: 603 if user, else 403.
            Some(l) if l.is_user() => Some(Verdict::new(C::Declined, F::CalleeChoice, R::No)),
            Some(l) if l.is_network() => Some(Verdict::new(C::ConfigError, F::CallerConfig, R::No)),
            _ => None,
        },
    }
}

/// The cause with FreeSWITCH/Q.850 name `name` (case-insensitive).
pub fn cause_by_name(name: &str) -> Option<u8> {
    TABLE
        .iter()
        .find(|r| !r.name.is_empty() && r.name.eq_ignore_ascii_case(name))
        .map(|r| r.cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sorted_and_names_unique() {
        assert!(TABLE.windows(2).all(|w| w[0].cause < w[1].cause));
        for r in TABLE.iter().filter(|r| !r.name.is_empty()) {
            assert_eq!(cause_by_name(r.name), Some(r.cause));
            assert_eq!(cause_by_name(&r.name.to_ascii_lowercase()), Some(r.cause));
        }
        assert_eq!(TABLE.len(), 53);
    }

    #[test]
    fn generic_causes_defer() {
        for c in [16, 31, 127, 4, 45, 0, 128, 200] {
            assert_eq!(refine(c, None), None, "{c}");
            assert_eq!(refine(c, Some(Location::U)), None, "{c}");
        }
        assert_eq!(alone(16).category, C::Answered);
        assert_eq!(alone(31).category, C::Unavailable);
        assert_eq!(alone(127).category, C::NetworkError);
        assert_eq!(alone(45), OTHER_VERDICT);
        assert_eq!(alone(0), OTHER_VERDICT);
    }

    #[test]
    fn cause_21_by_location() {
        assert_eq!(refine(21, None), None);
        assert_eq!(
            refine(21, Some(Location::U)).map(|v| v.category),
            Some(C::Declined)
        );
        for l in ["LPN", "LN", "TN", "RLN", "RPN", "INTL", "BI"] {
            let v = refine(21, Location::parse(l)).unwrap();
            assert_eq!(
                (v.category, v.fault),
                (C::ConfigError, F::CallerConfig),
                "{l}"
            );
        }
        for l in ["LOC-6", "LOC-8", "LOC-9", "LOC-11", "LOC-15"] {
            assert_eq!(refine(21, Location::parse(l)), None, "{l}");
        }
        assert_eq!(alone(21).category, C::Declined);
    }
}
