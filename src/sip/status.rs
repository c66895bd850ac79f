//! The 75 IANA-registered SIP response codes (reference §3) with their phrase, defining
//! RFC, default verdict (§3.2), Retry-After scope (R6) and RFC 3398 §8.2.6.1 Q.850 mapping.
//!
//! Owns the static table and the R1 fallback (`effective_code`). It must not apply any
//! other classification rule (Reason, providers, Retry-After values live elsewhere).

use crate::domain::{Category, Fault, RetryAfterScope, Retryable, Verdict};

/// What RFC 3398 §8.2.6.1 maps a SIP code to (the "3398" column of reference §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rfc3398 {
    /// An explicit Q.850 cause.
    Cause(u8),
    /// No explicit row ("–"): RFC 3398 would use its default 31, which carries no
    /// information, so the classifier does not report it.
    Default,
    /// 487: RFC 3398 gives no mapping at all.
    NoMapping,
    /// 488/606: chosen from the Warning header (31 or 65).
    ByWarning,
}

/// One registered SIP response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCode {
    pub code: u16,
    /// The registered reason phrase.
    pub phrase: &'static str,
    /// The RFC that defines (or currently registers) the code.
    pub rfc: u16,
    /// Default verdict (§3.1/§3.2); `None` for provisional 1xx codes, which are never an
    /// outcome (R0).
    pub verdict: Option<Verdict>,
    /// Whether Retry-After is defined for the code, and with which scope (R6).
    pub retry_after: Option<RetryAfterScope>,
    pub rfc3398: Rfc3398,
}

impl StatusCode {
    /// The RFC 3398 Q.850 cause when the mapping is a number.
    pub fn rfc3398_cause(&self) -> Option<u8> {
        match self.rfc3398 {
            Rfc3398::Cause(c) => Some(c),
            Rfc3398::Default | Rfc3398::NoMapping | Rfc3398::ByWarning => None,
        }
    }
}

use Category as C;
use Fault as F;
use Retryable as R;
use Rfc3398::{ByWarning, Cause, Default as Dflt, NoMapping};

const CALLEE: Option<RetryAfterScope> = Some(RetryAfterScope::Callee);
const ROUTE: Option<RetryAfterScope> = Some(RetryAfterScope::Route);

/// A final code row.
const fn fin(
    code: u16,
    phrase: &'static str,
    rfc: u16,
    verdict: (Category, Fault, Retryable),
    retry_after: Option<RetryAfterScope>,
    rfc3398: Rfc3398,
) -> StatusCode {
    StatusCode {
        code,
        phrase,
        rfc,
        verdict: Some(Verdict::new(verdict.0, verdict.1, verdict.2)),
        retry_after,
        rfc3398,
    }
}

/// A provisional (1xx) row: no verdict, never an outcome.
const fn prov(code: u16, phrase: &'static str, rfc: u16) -> StatusCode {
    StatusCode {
        code,
        phrase,
        rfc,
        verdict: None,
        retry_after: None,
        rfc3398: Dflt,
    }
}

const ANSWERED: (C, F, R) = (C::Answered, F::None, R::No);
const REDIRECT: (C, F, R) = (C::Redirect, F::None, R::NowAlternateRoute);
const CONFIG: (C, F, R) = (C::ConfigError, F::CallerConfig, R::No);
const BAD_NUMBER: (C, F, R) = (C::InvalidNumber, F::CallerData, R::No);
const NET_ALT: (C, F, R) = (C::NetworkError, F::Network, R::NowAlternateRoute);

/// Every IANA-registered code, sorted by code (binary-searched by [`lookup`]).
pub static REGISTERED: &[StatusCode] = &[
    // §3.1 1xx: provisional, rejected as outcomes (R0).
    prov(100, "Trying", 3261),
    prov(180, "Ringing", 3261),
    prov(181, "Call Is Being Forwarded", 3261),
    prov(182, "Queued", 3261),
    prov(183, "Session Progress", 3261),
    prov(199, "Early Dialog Terminated", 6228),
    // §3.1 2xx.
    fin(200, "OK", 3261, ANSWERED, None, Dflt),
    fin(202, "Accepted (Deprecated)", 6665, ANSWERED, None, Dflt),
    fin(204, "No Notification", 5839, ANSWERED, None, Dflt),
    // §3.2 3xx.
    fin(300, "Multiple Choices", 3261, REDIRECT, None, Dflt),
    fin(301, "Moved Permanently", 3261, REDIRECT, None, Dflt),
    fin(302, "Moved Temporarily", 3261, REDIRECT, None, Dflt),
    fin(305, "Use Proxy", 3261, REDIRECT, None, Dflt),
    // 380 describes alternatives in the body: no automatic retry.
    fin(
        380,
        "Alternative Service",
        3261,
        (C::Redirect, F::None, R::No),
        None,
        Dflt,
    ),
    // §3.2 4xx.
    fin(400, "Bad Request", 3261, CONFIG, None, Cause(41)),
    fin(401, "Unauthorized", 3261, CONFIG, None, Cause(21)),
    fin(402, "Payment Required", 3261, CONFIG, None, Cause(21)),
    fin(403, "Forbidden", 3261, CONFIG, None, Cause(21)),
    fin(404, "Not Found", 3261, BAD_NUMBER, CALLEE, Cause(1)),
    fin(405, "Method Not Allowed", 3261, CONFIG, None, Cause(63)),
    fin(406, "Not Acceptable", 3261, CONFIG, None, Cause(79)),
    fin(
        407,
        "Proxy Authentication Required",
        3261,
        CONFIG,
        None,
        Cause(21),
    ),
    fin(408, "Request Timeout", 3261, NET_ALT, None, Cause(102)),
    fin(410, "Gone", 3261, BAD_NUMBER, None, Cause(22)),
    fin(412, "Conditional Request Failed", 3903, CONFIG, None, Dflt),
    fin(
        413,
        "Request Entity Too Large",
        3261,
        CONFIG,
        CALLEE,
        Cause(127),
    ),
    fin(414, "Request-URI Too Long", 3261, CONFIG, None, Cause(127)),
    fin(415, "Unsupported Media Type", 3261, CONFIG, None, Cause(79)),
    fin(
        416,
        "Unsupported URI Scheme",
        3261,
        CONFIG,
        None,
        Cause(127),
    ),
    fin(417, "Unknown Resource-Priority", 4412, CONFIG, None, Dflt),
    fin(420, "Bad Extension", 3261, CONFIG, None, Cause(127)),
    fin(421, "Extension Required", 3261, CONFIG, None, Cause(127)),
    fin(422, "Session Interval Too Small", 4028, CONFIG, None, Dflt),
    fin(423, "Interval Too Brief", 3261, CONFIG, None, Cause(127)),
    fin(424, "Bad Location Information", 6442, CONFIG, None, Dflt),
    fin(425, "Bad Alert Message", 8876, CONFIG, None, Dflt),
    fin(428, "Use Identity Header", 8224, CONFIG, None, Dflt),
    fin(429, "Provide Referrer Identity", 3892, CONFIG, None, Dflt),
    fin(
        430,
        "Flow Failed",
        5626,
        (C::Unavailable, F::CalleeDevice, R::Later),
        None,
        Dflt,
    ),
    fin(433, "Anonymity Disallowed", 5079, CONFIG, None, Dflt),
    fin(436, "Bad Identity Info", 8224, CONFIG, None, Dflt),
    fin(437, "Unsupported Credential", 8224, CONFIG, None, Dflt),
    fin(438, "Invalid Identity Header", 8224, CONFIG, None, Dflt),
    fin(
        439,
        "First Hop Lacks Outbound Support",
        5626,
        CONFIG,
        None,
        Dflt,
    ),
    // A forking-breadth limit hit by a proxy: the network's fault, still config.
    fin(
        440,
        "Max-Breadth Exceeded",
        5393,
        (C::ConfigError, F::Network, R::No),
        None,
        Dflt,
    ),
    fin(469, "Bad Info Package", 6086, CONFIG, None, Dflt),
    fin(470, "Consent Needed", 5360, CONFIG, None, Dflt),
    fin(
        480,
        "Temporarily Unavailable",
        3261,
        (C::Unavailable, F::CalleeDevice, R::Later),
        CALLEE,
        Cause(18),
    ),
    fin(
        481,
        "Call/Transaction Does Not Exist",
        3261,
        NET_ALT,
        None,
        Cause(41),
    ),
    fin(482, "Loop Detected", 3261, NET_ALT, None, Cause(25)),
    fin(483, "Too Many Hops", 3261, NET_ALT, None, Cause(25)),
    fin(484, "Address Incomplete", 3261, BAD_NUMBER, None, Cause(28)),
    fin(485, "Ambiguous", 3261, BAD_NUMBER, None, Cause(1)),
    fin(
        486,
        "Busy Here",
        3261,
        (C::Busy, F::CalleeDevice, R::Later),
        CALLEE,
        Cause(17),
    ),
    fin(
        487,
        "Request Terminated",
        3261,
        (C::Canceled, F::CallerAction, R::No),
        None,
        NoMapping,
    ),
    fin(488, "Not Acceptable Here", 3261, CONFIG, None, ByWarning),
    fin(489, "Bad Event", 6665, CONFIG, None, Dflt),
    // Glare: retry after a short random delay (RFC 3261 §14.1).
    fin(
        491,
        "Request Pending",
        3261,
        (C::NetworkError, F::Network, R::Later),
        None,
        Dflt,
    ),
    fin(493, "Undecipherable", 3261, CONFIG, None, Dflt),
    fin(494, "Security Agreement Required", 3329, CONFIG, None, Dflt),
    // §3.2 5xx.
    fin(
        500,
        "Server Internal Error",
        3261,
        NET_ALT,
        ROUTE,
        Cause(41),
    ),
    fin(501, "Not Implemented", 3261, CONFIG, None, Cause(79)),
    fin(502, "Bad Gateway", 3261, NET_ALT, None, Cause(38)),
    fin(503, "Service Unavailable", 3261, NET_ALT, ROUTE, Cause(41)),
    fin(504, "Server Time-out", 3261, NET_ALT, None, Cause(102)),
    fin(505, "Version Not Supported", 3261, CONFIG, None, Cause(127)),
    fin(513, "Message Too Large", 3261, CONFIG, None, Cause(127)),
    fin(
        555,
        "Push Notification Service Not Supported",
        8599,
        CONFIG,
        None,
        Dflt,
    ),
    fin(580, "Precondition Failure", 3312, CONFIG, None, Dflt),
    // §3.2 6xx: global (R5), never now_alternate_route.
    fin(
        600,
        "Busy Everywhere",
        3261,
        (C::Busy, F::CalleeDevice, R::Later),
        CALLEE,
        Cause(17),
    ),
    fin(
        603,
        "Decline",
        3261,
        (C::Declined, F::CalleeChoice, R::No),
        CALLEE,
        Cause(21),
    ),
    fin(
        604,
        "Does Not Exist Anywhere",
        3261,
        BAD_NUMBER,
        None,
        Cause(1),
    ),
    fin(606, "Not Acceptable", 3261, CONFIG, None, ByWarning),
    fin(
        607,
        "Unwanted",
        8197,
        (C::RejectedUnwanted, F::CalleeChoice, R::No),
        None,
        Dflt,
    ),
    fin(
        608,
        "Rejected",
        8688,
        (C::RejectedUnwanted, F::Network, R::No),
        None,
        Dflt,
    ),
];

/// The registered entry for `code`, if any.
pub fn lookup(code: u16) -> Option<&'static StatusCode> {
    REGISTERED
        .binary_search_by_key(&code, |s| s.code)
        .ok()
        .and_then(|i| REGISTERED.get(i))
}

/// R1: an unregistered code in 100..=699 is treated as the x00 code of its class
/// (RFC 3261 §8.1.3.2). Registered codes and codes outside 100..=699 (which R0 rejects
/// before this is used) are returned unchanged.
pub fn effective_code(code: u16) -> u16 {
    if !(100..=699).contains(&code) || lookup(code).is_some() {
        code
    } else {
        code - code % 100
    }
}

/// The registered entry that stands for `code` after R1.
pub fn effective(code: u16) -> Option<&'static StatusCode> {
    lookup(effective_code(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_exactly_75_sorted_unique_codes() {
        assert_eq!(REGISTERED.len(), 75);
        assert!(REGISTERED.windows(2).all(|w| w[0].code < w[1].code));
        assert_eq!(REGISTERED.iter().filter(|s| s.rfc == 3261).count(), 50);
        assert_eq!(REGISTERED.iter().filter(|s| s.code < 200).count(), 6);
    }

    #[test]
    fn every_registered_code_is_found() {
        for s in REGISTERED {
            assert_eq!(lookup(s.code), Some(s));
            assert_eq!(effective_code(s.code), s.code);
            assert_eq!(s.verdict.is_none(), s.code < 200, "{}", s.code);
        }
    }

    #[test]
    fn names_cross_checked_against_iana() {
        assert_eq!(
            lookup(437).map(|s| s.phrase),
            Some("Unsupported Credential")
        );
        assert_eq!(lookup(202).map(|s| s.phrase), Some("Accepted (Deprecated)"));
        assert_eq!(
            lookup(429).map(|s| s.phrase),
            Some("Provide Referrer Identity")
        );
        assert!(lookup(409).is_none());
        assert!(lookup(411).is_none());
        assert!(lookup(478).is_none());
    }

    #[test]
    fn unknown_codes_fall_back_to_x00() {
        for (code, eff) in [
            (409, 400),
            (411, 400),
            (478, 400),
            (431, 400),
            (499, 400),
            (512, 500),
            (599, 500),
            (609, 600),
            (699, 600),
            (399, 300),
            (299, 200),
            (150, 100),
        ] {
            assert_eq!(effective_code(code), eff, "{code}");
        }
        assert_eq!(effective_code(0), 0);
        assert_eq!(effective_code(750), 750);
    }

    #[test]
    fn retry_after_scopes_match_rfc_3261_20_33() {
        let callee: Vec<u16> = REGISTERED
            .iter()
            .filter(|s| s.retry_after == CALLEE)
            .map(|s| s.code)
            .collect();
        let route: Vec<u16> = REGISTERED
            .iter()
            .filter(|s| s.retry_after == ROUTE)
            .map(|s| s.code)
            .collect();
        assert_eq!(callee, [404, 413, 480, 486, 600, 603]);
        assert_eq!(route, [500, 503]);
    }

    #[test]
    fn no_6xx_is_now_alternate_route() {
        for s in REGISTERED.iter().filter(|s| s.code >= 600) {
            assert_ne!(s.verdict.map(|v| v.retryable), Some(R::NowAlternateRoute));
        }
    }

    #[test]
    fn rfc3398_column() {
        let expect: &[(u16, Option<u8>)] = &[
            (300, None),
            (400, Some(41)),
            (401, Some(21)),
            (402, Some(21)),
            (403, Some(21)),
            (404, Some(1)),
            (405, Some(63)),
            (406, Some(79)),
            (407, Some(21)),
            (408, Some(102)),
            (410, Some(22)),
            (413, Some(127)),
            (414, Some(127)),
            (415, Some(79)),
            (416, Some(127)),
            (420, Some(127)),
            (421, Some(127)),
            (423, Some(127)),
            (480, Some(18)),
            (481, Some(41)),
            (482, Some(25)),
            (483, Some(25)),
            (484, Some(28)),
            (485, Some(1)),
            (486, Some(17)),
            (487, None),
            (488, None),
            (500, Some(41)),
            (501, Some(79)),
            (502, Some(38)),
            (503, Some(41)),
            (504, Some(102)),
            (505, Some(127)),
            (513, Some(127)),
            (600, Some(17)),
            (603, Some(21)),
            (604, Some(1)),
            (606, None),
            (607, None),
            (608, None),
        ];
        for &(code, cause) in expect {
            assert_eq!(
                lookup(code).and_then(|s| s.rfc3398_cause()),
                cause,
                "{code}"
            );
        }
        assert_eq!(lookup(487).map(|s| s.rfc3398), Some(NoMapping));
        assert_eq!(lookup(606).map(|s| s.rfc3398), Some(ByWarning));
    }
}
