//! FreeSWITCH hangup causes (`switch_call_cause_t`): Q.850 names and numbers (≤127,
//! reference §6) and FreeSWITCH-only causes (reference §7).
//!
//! Owns the FreeSWITCH table only. Every FreeSWITCH cause defers to a reported SIP code
//! (R2 names only Telnyx/Twilio timer and cancel causes as overriding). Must not apply
//! rule ordering or do I/O.

use super::v::*;
use super::{ProviderCause, cause_number};
use crate::sip::q850;

/// A FreeSWITCH-only cause (number above 127, or 487) with its enum value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsOnly {
    pub number: u16,
    pub cause: ProviderCause,
}

const fn fs(
    number: u16,
    name: &'static str,
    v: (
        crate::domain::Category,
        crate::domain::Fault,
        crate::domain::Retryable,
    ),
) -> FsOnly {
    FsOnly {
        number,
        cause: ProviderCause::new(name, v, false, None),
    }
}

/// Reference §7 (numbers as listed there, from `switch_types.h`).
pub static FS_ONLY: &[FsOnly] = &[
    fs(487, "ORIGINATOR_CANCEL", CANCELED),
    fs(815, "BUSY_EVERYWHERE", BUSY),
    fs(816, "DECLINE", DECLINED),
    fs(825, "REJECT_ALL", DECLINED),
    fs(817, "DOES_NOT_EXIST_ANYWHERE", BAD_NUMBER),
    fs(818, "NOT_ACCEPTABLE", CONFIG),
    fs(819, "UNWANTED", UNWANTED),
    // STIR/SHAKEN: the caller's signing or attestation configuration.
    fs(820, "NO_IDENTITY", CONFIG),
    fs(821, "BAD_IDENTITY_INFO", CONFIG),
    fs(822, "UNSUPPORTED_CERTIFICATE", CONFIG),
    fs(823, "INVALID_IDENTITY", CONFIG),
    fs(824, "STALE_DATE", CONFIG),
    fs(809, "GATEWAY_DOWN", NET),
    // Our gateway or URL is wrong, not the callee's number (FS sends 484 for these).
    fs(808, "INVALID_GATEWAY", CONFIG),
    fs(810, "INVALID_URL", CONFIG),
    fs(811, "INVALID_PROFILE", CONFIG),
    fs(806, "USER_NOT_REGISTERED", UNAVAILABLE),
    // "Destination took too long to answer" (Telnyx), sent as SIP;cause=602.
    fs(602, "ALLOTTED_TIMEOUT", NO_ANSWER),
    // No 180/183 in time: a route problem (Telnyx "No Ringback Timeout").
    fs(807, "PROGRESS_TIMEOUT", NET),
];

/// `switch_call_cause_t` names ≤127 that have no row in reference §6 ("other").
const UNLISTED_Q850_NAMES: &[(&str, u8)] = &[("PRE_EMPTED", 45)];

/// The FreeSWITCH cause `cause`: a name (any case, optional `SWITCH_CAUSE_` prefix) or
/// its number.
pub fn lookup(cause: &str) -> Option<ProviderCause> {
    if let Some(n) = cause_number(cause) {
        if let Ok(q) = u8::try_from(n)
            && (1..=127).contains(&q)
        {
            return Some(q850_cause(q));
        }
        return FS_ONLY.iter().find(|f| f.number == n).map(|f| f.cause);
    }
    let name = strip_prefix_ci(cause, "SWITCH_CAUSE_");
    if let Some(f) = FS_ONLY
        .iter()
        .find(|f| f.cause.name.eq_ignore_ascii_case(name))
    {
        return Some(f.cause);
    }
    if let Some(q) = q850::cause_by_name(name) {
        return Some(q850_cause(q));
    }
    UNLISTED_Q850_NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(n, q)| ProviderCause {
            name: n,
            ..q850_cause(q)
        })
}

/// A Q.850 cause reported by FreeSWITCH: the §6 "alone" verdict, deferring to a code.
fn q850_cause(q: u8) -> ProviderCause {
    ProviderCause {
        name: q850::lookup(q).map_or("", |r| r.name),
        verdict: q850::alone(q),
        overrides_sip_code: false,
        q850_cause: Some(q),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> &'a str {
    match s.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => s.get(prefix.len()..).unwrap_or(s),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Category;

    #[test]
    fn names_numbers_and_prefixes() {
        let busy = lookup("USER_BUSY").unwrap();
        assert_eq!(
            (busy.verdict.category, busy.q850_cause),
            (Category::Busy, Some(17))
        );
        assert_eq!(lookup("user_busy"), Some(busy));
        assert_eq!(lookup("SWITCH_CAUSE_USER_BUSY"), Some(busy));
        assert_eq!(lookup("17"), Some(busy));
        assert_eq!(lookup("816").map(|c| c.name), Some("DECLINE"));
        assert_eq!(lookup("602").map(|c| c.name), Some("ALLOTTED_TIMEOUT"));
        assert_eq!(
            lookup("PRE_EMPTED").map(|c| (c.verdict.category, c.q850_cause)),
            Some((Category::Other, Some(45)))
        );
        assert_eq!(lookup("0"), None);
        assert_eq!(lookup("999"), None);
        assert_eq!(lookup("NOT_A_CAUSE"), None);
        assert!(FS_ONLY.iter().all(|f| !f.cause.overrides_sip_code));
        assert_eq!(FS_ONLY.len(), 19);
    }
}
