//! Table-driven tests of the classifier against every table of the reference.

use super::*;
use crate::domain::*;
use crate::sip::status::REGISTERED;
use Category as C;
use Fault as F;
use Retryable as R;
use proptest::prelude::*;

fn code(c: i64) -> ClassifyInput<'static> {
    ClassifyInput {
        sip_code: Some(c),
        ..ClassifyInput::default()
    }
}

fn with_reason(c: i64, reason: &'static str) -> ClassifyInput<'static> {
    ClassifyInput {
        sip_code: Some(c),
        reason_header: reason,
        ..ClassifyInput::default()
    }
}

fn with_ra(c: i64, ra: &'static str) -> ClassifyInput<'static> {
    ClassifyInput {
        sip_code: Some(c),
        retry_after_header: ra,
        ..ClassifyInput::default()
    }
}

fn provider(name: &'static str, cause: &'static str, c: Option<i64>) -> ClassifyInput<'static> {
    ClassifyInput {
        sip_code: c,
        provider: Some(ProviderInput { name, cause }),
        ..ClassifyInput::default()
    }
}

fn ok(input: &ClassifyInput<'_>) -> Classification {
    classify(input).unwrap_or_else(|e| panic!("{input:?}: {e}"))
}

/// A verdict as a tuple, for compact tables.
type V3 = (Category, Fault, Retryable);

fn v(c: &Classification) -> V3 {
    (c.category, c.fault, c.retryable)
}

const ANS: (C, F, R) = (C::Answered, F::None, R::No);
const RED: (C, F, R) = (C::Redirect, F::None, R::NowAlternateRoute);
const CFG: (C, F, R) = (C::ConfigError, F::CallerConfig, R::No);
const BADN: (C, F, R) = (C::InvalidNumber, F::CallerData, R::No);
const NET: (C, F, R) = (C::NetworkError, F::Network, R::NowAlternateRoute);
const UNAV: (C, F, R) = (C::Unavailable, F::CalleeDevice, R::Later);
const BUSY: (C, F, R) = (C::Busy, F::CalleeDevice, R::Later);
const NOANS: (C, F, R) = (C::NoAnswer, F::CalleeDevice, R::Later);
const DECL: (C, F, R) = (C::Declined, F::CalleeChoice, R::No);
const CANC: (C, F, R) = (C::Canceled, F::CallerAction, R::No);
const OTH: (C, F, R) = (C::Other, F::Unknown, R::No);
const UNW: (C, F, R) = (C::RejectedUnwanted, F::CalleeChoice, R::No);
const BLOCK: (C, F, R) = (C::RejectedUnwanted, F::Network, R::No);

/// §3.1 / §3.2, written out independently of `sip::status`.
const CODE_TABLE: &[(u16, (C, F, R))] = &[
    (200, ANS),
    (202, ANS),
    (204, ANS),
    (300, RED),
    (301, RED),
    (302, RED),
    (305, RED),
    (380, (C::Redirect, F::None, R::No)),
    (400, CFG),
    (401, CFG),
    (402, CFG),
    (403, CFG),
    (404, BADN),
    (405, CFG),
    (406, CFG),
    (407, CFG),
    (408, NET),
    (410, BADN),
    (412, CFG),
    (413, CFG),
    (414, CFG),
    (415, CFG),
    (416, CFG),
    (417, CFG),
    (420, CFG),
    (421, CFG),
    (422, CFG),
    (423, CFG),
    (424, CFG),
    (425, CFG),
    (428, CFG),
    (429, CFG),
    (430, UNAV),
    (433, CFG),
    (436, CFG),
    (437, CFG),
    (438, CFG),
    (439, CFG),
    (440, (C::ConfigError, F::Network, R::No)),
    (469, CFG),
    (470, CFG),
    (480, UNAV),
    (481, NET),
    (482, NET),
    (483, NET),
    (484, BADN),
    (485, BADN),
    (486, BUSY),
    (487, CANC),
    (488, CFG),
    (489, CFG),
    (491, (C::NetworkError, F::Network, R::Later)),
    (493, CFG),
    (494, CFG),
    (500, NET),
    (501, CFG),
    (502, NET),
    (503, NET),
    (504, NET),
    (505, CFG),
    (513, CFG),
    (555, CFG),
    (580, CFG),
    (600, BUSY),
    (603, DECL),
    (604, BADN),
    (606, CFG),
    (607, UNW),
    (608, (C::RejectedUnwanted, F::Network, R::No)),
];

#[test]
fn every_registered_final_code() {
    assert_eq!(CODE_TABLE.len() + 6, REGISTERED.len());
    for &(c, expected) in CODE_TABLE {
        let out = ok(&code(i64::from(c)));
        assert_eq!(v(&out), expected, "{c}");
        assert_eq!(out.sip_code, Some(c));
        assert_eq!(out.reported_sip_code, Some(c));
        assert_eq!(out.basis, Basis::SipCode);
        assert_eq!(
            out.sip_phrase,
            crate::sip::status::lookup(c).map(|s| s.phrase).unwrap()
        );
        assert!(!out.summary.is_empty());
        assert_eq!(out.retry_after, None);
        assert_eq!(out.reason_text, None);
        assert_eq!(out.q850_location, None);
        let mapped = crate::sip::status::lookup(c).and_then(|s| s.rfc3398_cause());
        assert_eq!(out.q850_cause, mapped, "{c}");
        assert_eq!(out.q850_source, mapped.map(|_| Q850Source::SipMapping));
    }
}

#[test]
fn code_only_path_borrows() {
    let out = ok(&code(603));
    assert!(matches!(
        out.sip_phrase,
        std::borrow::Cow::Borrowed("Decline")
    ));
    assert!(matches!(out.summary, std::borrow::Cow::Borrowed(_)));
    assert_eq!(out.summary, "The call was declined by the recipient.");
}

#[test]
fn provisional_and_invalid_codes() {
    for c in [100, 180, 181, 182, 183, 199, 150] {
        assert_eq!(classify(&code(c)), Err(ClassifyError::ProvisionalCode(c)));
    }
    for c in [0, -1, 99, 1, 700, 1000, i64::MIN, i64::MAX, 65_536 + 200] {
        assert_eq!(classify(&code(c)), Err(ClassifyError::CodeOutOfRange(c)));
    }
    assert_eq!(
        classify(&ClassifyInput::default()),
        Err(ClassifyError::NothingToClassify)
    );
    assert_eq!(
        classify(&provider("telnyx", "  ", None)),
        Err(ClassifyError::NothingToClassify)
    );
    // Headers alone are not an outcome.
    let only_headers = ClassifyInput {
        reason_header: "Q.850;cause=17",
        retry_after_header: "60",
        ..ClassifyInput::default()
    };
    assert_eq!(
        classify(&only_headers),
        Err(ClassifyError::NothingToClassify)
    );
}

#[test]
fn unknown_codes_use_x00() {
    for (c, eff) in [
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
    ] {
        let out = ok(&code(c));
        assert_eq!(out.sip_code, Some(eff), "{c}");
        assert_eq!(out.reported_sip_code, Some(c as u16));
        let expected = CODE_TABLE.iter().find(|r| r.0 == eff).map(|r| r.1).unwrap();
        assert_eq!(v(&out), expected, "{c}");
        assert_eq!(
            out.sip_phrase,
            crate::sip::status::lookup(eff).unwrap().phrase
        );
    }
    // 699 keeps 6xx semantics: never an alternate route, Retry-After applies as for 600.
    let out = ok(&with_ra(699, "300"));
    assert_eq!(v(&out), BUSY);
    assert_eq!(
        out.retry_after,
        Some(AppliedRetryAfter {
            seconds: 300,
            scope: RetryAfterScope::Callee
        })
    );
}

/// Reference §6: (cause, verdict alone, specific for R4).
const Q850_TABLE: &[(u8, (C, F, R), bool)] = &[
    (1, BADN, true),
    (2, NET, true),
    (3, NET, true),
    (6, NET, true),
    (7, OTH, true),
    (16, ANS, false),
    (17, BUSY, true),
    (18, NOANS, true),
    (19, NOANS, true),
    (20, UNAV, true),
    (21, DECL, false),
    (22, BADN, true),
    (23, BADN, true),
    (25, NET, true),
    (26, NET, true),
    (27, UNAV, true),
    (28, BADN, true),
    (29, CFG, true),
    (30, OTH, true),
    (31, UNAV, false),
    (34, NET, true),
    (38, NET, true),
    (41, NET, true),
    (42, NET, true),
    (43, OTH, true),
    (44, NET, true),
    (47, NET, true),
    (50, CFG, true),
    (52, CFG, true),
    (54, DECL, true),
    (55, CFG, true),
    (57, CFG, true),
    (58, NET, true),
    (63, CFG, true),
    (65, CFG, true),
    (66, CFG, true),
    (69, CFG, true),
    (70, CFG, true),
    (79, CFG, true),
    (81, NET, true),
    (87, CFG, true),
    (88, CFG, true),
    (95, NET, true),
    (96, NET, true),
    (97, NET, true),
    (98, NET, true),
    (99, NET, true),
    (100, NET, true),
    (101, NET, true),
    (102, NET, true),
    (103, NET, true),
    (111, NET, true),
    (127, NET, false),
    // "other" row: unlisted causes.
    (4, OTH, false),
    (45, OTH, false),
    (126, OTH, false),
];

#[test]
fn every_q850_row_as_reason_refinement() {
    assert_eq!(crate::sip::q850::TABLE.len() + 3, Q850_TABLE.len());
    for &(cause, alone, specific) in Q850_TABLE {
        let header: &'static str =
            Box::leak(format!("Q.850;cause={cause};text=\"cause {cause}\"").into_boxed_str());
        for c in [480, 403, 503, 404, 408] {
            let out = ok(&with_reason(c, header));
            let code_verdict = CODE_TABLE.iter().find(|r| r.0 == c as u16).unwrap().1;
            if specific {
                assert_eq!(v(&out), alone, "{c} + {cause}");
                assert_eq!(out.basis, Basis::Q850Reason);
            } else {
                assert_eq!(v(&out), code_verdict, "{c} + {cause}");
                assert_eq!(out.basis, Basis::SipCode);
            }
            // The reported cause is the header's whether or not it decided.
            assert_eq!(out.q850_cause, Some(cause));
            assert_eq!(out.q850_source, Some(Q850Source::ReasonHeader));
            assert_eq!(out.reason_text, Some(format!("cause {cause}")));
        }
    }
}

#[test]
fn every_q850_row_alone_via_providers() {
    for &(cause, alone, _) in Q850_TABLE {
        let n: &'static str = Box::leak(cause.to_string().into_boxed_str());
        let fs = ok(&provider("freeswitch", n, None));
        assert_eq!(v(&fs), alone, "freeswitch {cause}");
        assert_eq!(fs.basis, Basis::ProviderCause);
        assert_eq!(
            (fs.q850_cause, fs.q850_source),
            (Some(cause), Some(Q850Source::Provider))
        );
        assert_eq!(fs.sip_code, None);
        let ast = ok(&provider("asterisk", n, None));
        // Asterisk uses 26 for "answered elsewhere".
        let expected = if cause == 26 { ANS } else { alone };
        assert_eq!(v(&ast), expected, "asterisk {cause}");
        assert_eq!(ast.q850_cause, Some(cause));
    }
    // FreeSWITCH names of the same rows.
    for row in crate::sip::q850::TABLE
        .iter()
        .filter(|r| !r.name.is_empty())
    {
        let name: &'static str = Box::leak(row.name.to_owned().into_boxed_str());
        let out = ok(&provider("FreeSWITCH", name, None));
        assert_eq!(out.verdict(), row.alone, "{}", row.name);
        assert_eq!(out.q850_cause, Some(row.cause));
    }
}

#[test]
fn q850_out_of_range_and_malformed_are_ignored() {
    for h in [
        "Q.850;cause=0",
        "Q.850;cause=128",
        "Q.850;cause=145",
        "Q.850;cause=4294967296",
        "Q.850;cause=abc",
        "Q.850;cause=17x",
        "SIP;cause=486",
        "Q.850;text=\"no cause\"",
        "garbage \"unterminated",
    ] {
        let out = ok(&with_reason(480, h));
        assert_eq!(v(&out), UNAV, "{h}");
        assert_eq!(out.basis, Basis::SipCode);
        // Falls back to the RFC 3398 mapping of 480.
        assert_eq!(
            (out.q850_cause, out.q850_source),
            (Some(18), Some(Q850Source::SipMapping)),
            "{h}"
        );
    }
    // A malformed first value does not hide a good second one.
    let out = ok(&with_reason(
        480,
        "Q.850;cause=x, Q.850;cause=145, q.850;cause=19",
    ));
    assert_eq!(v(&out), NOANS);
}

#[test]
fn cause_21_by_location() {
    let cases: &[(&str, (C, F, R))] = &[
        ("U", DECL),
        ("u", DECL),
        ("LPN", CFG),
        ("LN", CFG),
        ("TN", CFG),
        ("RLN", CFG),
        ("RPN", CFG),
        ("INTL", CFG),
        ("BI", CFG),
    ];
    for &(loc, expected) in cases {
        let h: &'static str = Box::leak(format!("Q.850;cause=21;location={loc}").into_boxed_str());
        for c in [403, 480, 500] {
            let out = ok(&with_reason(c, h));
            assert_eq!(v(&out), expected, "{c} {loc}");
            assert_eq!(out.basis, Basis::Q850Reason);
            assert_eq!(
                out.q850_location.as_deref(),
                Some(loc.to_ascii_uppercase().as_str())
            );
        }
        // 6xx keeps its meaning (R5).
        assert_eq!(v(&ok(&with_reason(603, h))), DECL);
        assert_eq!(v(&ok(&with_reason(604, h))), BADN);
    }
    // No, reserved or unknown location: the code decides.
    for h in [
        "Q.850;cause=21",
        "Q.850;cause=21;location=LOC-6",
        "Q.850;cause=21;location=LOC-15",
        "Q.850;cause=21;location=XYZ",
    ] {
        assert_eq!(v(&ok(&with_reason(403, h))), CFG, "{h}");
        assert_eq!(v(&ok(&with_reason(480, h))), UNAV, "{h}");
        assert_eq!(ok(&with_reason(480, h)).basis, Basis::SipCode);
    }
    // Asterisk-style callee reject: 403 + Q.850 21 user.
    let out = ok(&with_reason(
        403,
        "Q.850;cause=21;text=\"Call Rejected\";location=U",
    ));
    assert_eq!(v(&out), DECL);
    assert_eq!(out.summary, "The call was declined by the recipient.");
    assert_eq!(out.reason_text.as_deref(), Some("Call Rejected"));
}

#[test]
fn analytics_block_603_plus() {
    for h in [
        "SIP;cause=603;text=\"v=analytics1;url=https://redress.example.com/x\"",
        "Q.850;cause=21;text=\"v=analytics1;url=https://redress.example.com/x\"",
        "Q.850;cause=21;location=U;text=\"v=analytics1;url=https://redress.example.com/x\"",
        "SIP;cause=200;text=\"x\", SIP;cause=603;text=\"v=analytics1;url=https://redress.example.com/x\"",
    ] {
        let input = ClassifyInput {
            sip_code: Some(603),
            reason_header: h,
            retry_after_header: "3600",
            ..ClassifyInput::default()
        };
        let out = ok(&input);
        assert_eq!(v(&out), BLOCK, "{h}");
        assert_eq!(out.basis, Basis::AnalyticsBlock);
        assert_eq!(out.retry_after, None, "Retry-After ignored on 603+");
        assert_eq!(
            out.reason_text.as_deref(),
            Some("v=analytics1;url=https://redress.example.com/x")
        );
        assert!(out.summary.contains("603+"));
    }
    // The same text on other codes is not 603+ (R3 is about 603 only).
    let out = ok(&with_reason(608, "SIP;cause=608;text=\"v=analytics1;x\""));
    assert_eq!(out.basis, Basis::SipCode);
    let out = ok(&with_reason(403, "SIP;cause=403;text=\"v=analytics1;x\""));
    assert_eq!(v(&out), CFG);
    // Not the prefix: plain decline.
    let out = ok(&with_reason(603, "SIP;cause=603;text=\"v=analytics2;x\""));
    assert_eq!(v(&out), DECL);
    let out = ok(&with_reason(603, "SIP;cause=603;text=\"Network Blocked\""));
    assert_eq!(v(&out), DECL);
}

#[test]
fn six_xx_is_global() {
    for c in [600, 603, 604, 606, 607, 608, 699] {
        let base = v(&ok(&code(c)));
        for h in [
            "Q.850;cause=17",
            "Q.850;cause=34",
            "Q.850;cause=1",
            "Q.850;cause=3",
            "Q.850;cause=21;location=LN",
        ] {
            let out = ok(&with_reason(c, h));
            assert_eq!(v(&out), base, "{c} {h}");
            assert_eq!(out.basis, Basis::SipCode);
            assert_ne!(out.retryable, R::NowAlternateRoute);
        }
    }
}

#[test]
fn request_terminated_keeps_caller_side() {
    for h in [
        "Q.850;cause=19",
        "Q.850;cause=17",
        "Q.850;cause=34",
        "Q.850;cause=21;location=U",
    ] {
        let out = ok(&with_reason(487, h));
        assert_eq!(v(&out), CANC, "{h}");
        assert_eq!(out.basis, Basis::SipCode);
    }
}

#[test]
fn retry_after_scope_per_code() {
    let callee = RetryAfterScope::Callee;
    let route = RetryAfterScope::Route;
    let cases: &[(i64, V3, Option<RetryAfterScope>)] = &[
        (
            404,
            (C::InvalidNumber, F::CallerData, R::Later),
            Some(callee),
        ),
        (
            413,
            (C::ConfigError, F::CallerConfig, R::Later),
            Some(callee),
        ),
        (480, UNAV, Some(callee)),
        (486, BUSY, Some(callee)),
        (600, BUSY, Some(callee)),
        (603, (C::Declined, F::CalleeChoice, R::Later), Some(callee)),
        (500, NET, Some(route)),
        (503, NET, Some(route)),
        (408, NET, None),
        (487, CANC, None),
        (607, UNW, None),
        (608, (C::RejectedUnwanted, F::Network, R::No), None),
        (200, ANS, None),
        (302, RED, None),
        (403, CFG, None),
        (502, NET, None),
        (604, BADN, None),
    ];
    for &(c, expected, scope) in cases {
        let out = ok(&with_ra(c, "120 (I'm in a meeting)"));
        assert_eq!(v(&out), expected, "{c}");
        assert_eq!(
            out.retry_after,
            scope.map(|scope| AppliedRetryAfter {
                seconds: 120,
                scope
            }),
            "{c}"
        );
    }
    let out = ok(&with_ra(503, "18000;duration=3600"));
    assert_eq!(out.retry_after.map(|r| r.seconds), Some(18000));
    assert_eq!(out.retryable, R::NowAlternateRoute);
}

#[test]
fn malformed_retry_after_is_ignored() {
    for ra in [
        "",
        "soon",
        "-5",
        "12.5",
        "Fri, 01 Jan 2027 10:00:00 GMT",
        "120 (open",
        "1 2",
    ] {
        let out = ok(&with_ra(603, ra));
        assert_eq!(v(&out), DECL, "{ra:?}");
        assert_eq!(out.retry_after, None);
    }
    let out = ok(&with_ra(486, "99999999999"));
    assert_eq!(out.retry_after.map(|r| r.seconds), Some(u32::MAX));
}

#[test]
fn retry_after_with_q850_refinement() {
    let input = |c: i64, reason: &'static str| ClassifyInput {
        sip_code: Some(c),
        reason_header: reason,
        retry_after_header: "600",
        ..ClassifyInput::default()
    };
    let callee = Some(AppliedRetryAfter {
        seconds: 600,
        scope: RetryAfterScope::Callee,
    });
    let route = Some(AppliedRetryAfter {
        seconds: 600,
        scope: RetryAfterScope::Route,
    });
    // Agreeing: a callee-side temporary cause keeps the callee Retry-After.
    let out = ok(&input(480, "Q.850;cause=19"));
    assert_eq!((v(&out), out.retry_after), (NOANS, callee));
    let out = ok(&input(480, "Q.850;cause=20"));
    assert_eq!((v(&out), out.retry_after), (UNAV, callee));
    let out = ok(&input(486, "Q.850;cause=17"));
    assert_eq!((v(&out), out.retry_after), (BUSY, callee));
    let out = ok(&input(503, "Q.850;cause=34"));
    assert_eq!((v(&out), out.retry_after), (NET, route));
    // Contradicting: the specific cause wins and Retry-After is ignored.
    let out = ok(&input(404, "Q.850;cause=3"));
    assert_eq!((v(&out), out.retry_after), (NET, None));
    let out = ok(&input(480, "Q.850;cause=1"));
    assert_eq!((v(&out), out.retry_after), (BADN, None));
    let out = ok(&input(503, "Q.850;cause=17"));
    assert_eq!((v(&out), out.retry_after), (BUSY, None));
    // Generic cause: the code decides, so R6 applies as usual.
    let out = ok(&input(404, "Q.850;cause=16"));
    assert_eq!(
        (v(&out), out.retry_after),
        ((C::InvalidNumber, F::CallerData, R::Later), callee)
    );
}

/// Reference §7.
const FS_ONLY: &[(&str, u16, (C, F, R))] = &[
    ("ORIGINATOR_CANCEL", 487, CANC),
    ("BUSY_EVERYWHERE", 815, BUSY),
    ("DECLINE", 816, DECL),
    ("REJECT_ALL", 825, DECL),
    ("DOES_NOT_EXIST_ANYWHERE", 817, BADN),
    ("NOT_ACCEPTABLE", 818, CFG),
    ("UNWANTED", 819, UNW),
    ("NO_IDENTITY", 820, CFG),
    ("BAD_IDENTITY_INFO", 821, CFG),
    ("UNSUPPORTED_CERTIFICATE", 822, CFG),
    ("INVALID_IDENTITY", 823, CFG),
    ("STALE_DATE", 824, CFG),
    ("GATEWAY_DOWN", 809, NET),
    ("INVALID_GATEWAY", 808, CFG),
    ("INVALID_URL", 810, CFG),
    ("INVALID_PROFILE", 811, CFG),
    ("USER_NOT_REGISTERED", 806, UNAV),
    ("ALLOTTED_TIMEOUT", 602, NOANS),
    ("PROGRESS_TIMEOUT", 807, NET),
];

#[test]
fn every_freeswitch_only_cause() {
    for &(name, number, expected) in FS_ONLY {
        let n: &'static str = Box::leak(number.to_string().into_boxed_str());
        let lower: &'static str = Box::leak(name.to_ascii_lowercase().into_boxed_str());
        for cause in [name, lower, n] {
            let out = ok(&provider("freeswitch", cause, None));
            assert_eq!(v(&out), expected, "{cause}");
            assert_eq!(out.basis, Basis::ProviderCause);
            // Not Q.850 numbers.
            assert_eq!(out.q850_cause, None);
        }
        // With a SIP code the code decides (R2: FreeSWITCH causes defer).
        let out = ok(&provider("freeswitch", name, Some(503)));
        assert_eq!((v(&out), out.basis), (NET, Basis::SipCode), "{name}");
    }
    // A FreeSWITCH Q.850 cause with a SIP code defers too, but is reported.
    let out = ok(&provider("freeswitch", "USER_BUSY", Some(480)));
    assert_eq!(v(&out), UNAV);
    assert_eq!(
        (out.q850_cause, out.q850_source),
        (Some(17), Some(Q850Source::Provider))
    );
    // A Reason header's cause is preferred over the provider's.
    let input = ClassifyInput {
        reason_header: "Q.850;cause=19",
        ..provider("freeswitch", "USER_BUSY", Some(480))
    };
    let out = ok(&input);
    assert_eq!(
        (out.q850_cause, out.q850_source),
        (Some(19), Some(Q850Source::ReasonHeader))
    );
}

#[test]
fn every_telnyx_cause() {
    let rows: &[(&str, (C, F, R), bool)] = &[
        ("normal_clearing", ANS, true),
        ("time_limit", ANS, true),
        ("timeout", NOANS, true),
        ("no_answer", NOANS, true),
        ("originator_cancel", CANC, true),
        ("user_busy", BUSY, false),
        ("not_found", BADN, false),
        ("call_rejected", DECL, false),
        ("unspecified", OTH, false),
    ];
    for &(cause, expected, overrides) in rows {
        let out = ok(&provider("telnyx", cause, None));
        assert_eq!(
            (v(&out), out.basis),
            (expected, Basis::ProviderCause),
            "{cause}"
        );
        let upper: &'static str = Box::leak(cause.to_ascii_uppercase().into_boxed_str());
        assert_eq!(v(&ok(&provider("Telnyx", upper, None))), expected);
        for c in [487, 603, 403, 486] {
            let out = ok(&provider("telnyx", cause, Some(c)));
            if overrides {
                assert_eq!(
                    (v(&out), out.basis),
                    (expected, Basis::ProviderOverride),
                    "{cause} {c}"
                );
            } else {
                let code_verdict = CODE_TABLE.iter().find(|r| r.0 == c as u16).unwrap().1;
                assert_eq!(
                    (v(&out), out.basis),
                    (code_verdict, Basis::SipCode),
                    "{cause} {c}"
                );
            }
            assert_eq!(out.sip_code, Some(c as u16));
        }
    }
    // call_rejected: 603 → declined; 403 → config_error.
    assert_eq!(
        v(&ok(&provider("telnyx", "call_rejected", Some(603)))),
        DECL
    );
    assert_eq!(v(&ok(&provider("telnyx", "call_rejected", Some(403)))), CFG);
    // Unknown Telnyx cause: the code decides, or `other` without one.
    assert_eq!(v(&ok(&provider("telnyx", "bogus", Some(486)))), BUSY);
    assert_eq!(v(&ok(&provider("telnyx", "bogus", None))), OTH);
}

#[test]
fn every_twilio_status() {
    let rows: &[(&str, (C, F, R), bool)] = &[
        ("completed", ANS, true),
        ("no-answer", NOANS, true),
        ("canceled", CANC, true),
        ("busy", BUSY, false),
        ("failed", OTH, false),
    ];
    for &(cause, expected, overrides) in rows {
        let out = ok(&provider("twilio", cause, None));
        assert_eq!(
            (v(&out), out.basis),
            (expected, Basis::ProviderCause),
            "{cause}"
        );
        for c in [487, 486, 600, 404] {
            let out = ok(&provider("TWILIO", cause, Some(c)));
            if overrides {
                assert_eq!(v(&out), expected, "{cause} {c}");
                assert_eq!(out.basis, Basis::ProviderOverride);
            } else {
                let code_verdict = CODE_TABLE.iter().find(|r| r.0 == c as u16).unwrap().1;
                assert_eq!(v(&out), code_verdict, "{cause} {c}");
            }
        }
    }
    // Timer cancel: 487 + no-answer is a no-answer, not a cancel.
    let out = ok(&provider("twilio", "no-answer", Some(487)));
    assert_eq!(v(&out), NOANS);
    assert_eq!(
        out.summary,
        "The recipient did not answer before the ring timer ran out."
    );
}

#[test]
fn asterisk_causes_and_dialstatus() {
    let rows: &[(&str, (C, F, R), bool)] = &[
        ("ANSWER", ANS, true),
        ("NOANSWER", NOANS, true),
        ("CANCEL", CANC, true),
        ("BUSY", BUSY, false),
        ("CONGESTION", NET, false),
        ("CHANUNAVAIL", OTH, false),
        ("DONTCALL", DECL, false),
        ("TORTURE", DECL, false),
        ("INVALIDARGS", CFG, false),
        ("AST_CAUSE_USER_BUSY", BUSY, false),
        ("AST_CAUSE_NOANSWER", NOANS, false),
        ("AST_CAUSE_CALL_REJECTED", DECL, false),
        ("AST_CAUSE_UNALLOCATED", BADN, false),
        ("AST_CAUSE_ANSWERED_ELSEWHERE", ANS, false),
        ("ast_cause_congestion", NET, false),
        ("21", DECL, false),
    ];
    for &(cause, expected, overrides) in rows {
        assert_eq!(
            v(&ok(&provider("asterisk", cause, None))),
            expected,
            "{cause}"
        );
        let out = ok(&provider("Asterisk", cause, Some(487)));
        if overrides {
            assert_eq!(
                (v(&out), out.basis),
                (expected, Basis::ProviderOverride),
                "{cause}"
            );
        } else {
            assert_eq!((v(&out), out.basis), (CANC, Basis::SipCode), "{cause}");
        }
    }
}

#[test]
fn unknown_provider_names_are_ignored() {
    let out = ok(&provider("bandwidth", "busy", None));
    assert_eq!((v(&out), out.basis), (OTH, Basis::ProviderCause));
    let out = ok(&provider("bandwidth", "completed", Some(486)));
    assert_eq!((v(&out), out.basis), (BUSY, Basis::SipCode));
    let out = ok(&provider("", "busy", Some(603)));
    assert_eq!(v(&out), DECL);
}

#[test]
fn provider_override_beats_603_plus_and_ignores_retry_after() {
    let input = ClassifyInput {
        sip_code: Some(480),
        retry_after_header: "300",
        reason_header: "Q.850;cause=1",
        provider: Some(ProviderInput {
            name: "telnyx",
            cause: "timeout",
        }),
        ..ClassifyInput::default()
    };
    let out = ok(&input);
    assert_eq!(
        (v(&out), out.basis, out.retry_after),
        (NOANS, Basis::ProviderOverride, None)
    );
    assert_eq!(out.q850_cause, Some(1));
}

#[test]
fn summaries_are_distinct_where_it_matters() {
    let s = |i: &ClassifyInput<'_>| ok(i).summary.into_owned();
    let texts = [
        s(&code(607)),
        s(&code(608)),
        s(&with_reason(603, "SIP;cause=603;text=\"v=analytics1;x\"")),
        s(&code(603)),
        s(&code(486)),
        s(&code(600)),
        s(&provider("twilio", "no-answer", None)),
        s(&code(480)),
        s(&code(404)),
        s(&code(484)),
        s(&code(487)),
        s(&code(503)),
        s(&code(401)),
        s(&code(200)),
        s(&code(302)),
        s(&provider("telnyx", "unspecified", None)),
    ];
    for (i, a) in texts.iter().enumerate() {
        for b in texts.iter().skip(i + 1) {
            assert_ne!(a, b);
        }
    }
}

const FS_RAW_603: &str = "SIP/2.0 603 Decline\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5080;branch=z9hG4bK5a8e3f1c;rport=5080;received=198.51.100.7\r\n\
From: \"Outbound Dialer\" <sip:+15550001111@198.51.100.7>;tag=a73kszlfl\r\n\
To: <sip:+15552223333@203.0.113.40>;tag=Q7ScmHa0p8H1B\r\n\
Call-ID: 3848276298220188511@198.51.100.7\r\n\
CSeq: 1 INVITE\r\n\
User-Agent: FreeSWITCH-mod_sofia/1.10.12-release+git~20240802T210227Z~a88d069d6f~64bit\r\n\
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REGISTER, REFER, NOTIFY\r\n\
Supported: timer, path, replaces\r\n\
Allow-Events: talk, hold, conference, refer\r\n\
Reason: Q.850;cause=21;text=\"CALL_REJECTED\"\r\n\
Retry-After: 3600 (call back after lunch)\r\n\
Content-Length: 0\r\n\
\r\n";

const CARRIER_603_PLUS: &str = "SIP/2.0 603 Network Blocked\r\n\
Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK776asdhds;received=192.0.2.10\r\n\
Via: SIP/2.0/TLS 10.1.1.5:5061;branch=z9hG4bK88a1c2\r\n\
From: <sip:+12025550123@carrier-a.example;user=phone>;tag=1928301774\r\n\
To: <sip:+13125550199@carrier-b.example;user=phone>;tag=99sa0xk\r\n\
Call-ID: a84b4c76e66710@pc33.carrier-a.example\r\n\
CSeq: 314159 INVITE\r\n\
Reason: SIP;cause=603;text=\"v=analytics1;url=https://redress.carrier-b.example/dispute?id=ab12\"\r\n\
Retry-After: 86400\r\n\
Server: Carrier-B SBC 9.4\r\n\
Content-Length: 0\r\n\
\r\n";

const KAMAILIO_503_COMPACT_LF: &str = "SIP/2.0 503 Service Unavailable\n\
v: SIP/2.0/UDP 10.20.30.40:5060;branch=z9hG4bK-d8754z-1f2e;rport=5060\n\
f: \"Campaign 7\" <sip:7001@pbx.example.net>;tag=f3a9c1\n\
t: <sip:+447700900123@sbc.example.org>;tag=kam-2a91\n\
i: 9f8e7d6c5b4a@10.20.30.40\n\
CSeq: 20 INVITE\n\
server: kamailio (5.7.4 (x86_64/linux))\n\
reason: Q.850 ; cause=34 ;\n text=\"No circuit/channel available\"\n\
retry-after: 30\n\
l: 0\n\
\n";

const ASTERISK_403_MULTI_REASON: &str = "SIP/2.0 403 Forbidden\r\n\
Via: SIP/2.0/UDP 172.16.0.9:5060;rport=5060;received=172.16.0.9;branch=z9hG4bKPj2b7c\r\n\
Call-ID: 0d1c6b5e-2f43-4a7e-9d1f-8b6a5c4d3e2f\r\n\
From: <sip:dialer@172.16.0.9>;tag=9c7b2a1d\r\n\
To: <sip:1002@172.16.0.1>;tag=5e4d3c2b-1a09\r\n\
CSeq: 4711 INVITE\r\n\
Server: Asterisk PBX 20.9.3\r\n\
Reason: SIP;cause=403;text=\"Forbidden\"\r\n\
Reason: Q.850;cause=21;text=\"Call Rejected\";location=U\r\n\
Content-Length:  0\r\n\
\r\n";

const CARRIER_480_NO_ANSWER_FOLDED: &[u8] = b"SIP/2.0 480 Temporarily Unavailable\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK3c1d\r\n\
From: <sip:+15550100@203.0.113.5>;tag=77\r\n\
To: <sip:+15550199@198.51.100.1>;tag=88\r\n\
Call-ID: x1y2z3@203.0.113.5\r\n\
CSeq: 2 INVITE\r\n\
Reason: Q.850;cause=19;\r\n\
\ttext=\"No answer from user (user alerted)\"\r\n\
Retry-After: 900\r\n\
Warning: 399 sbc.example \"ring timer \xff expired\"\r\n\
Content-Length: 0\r\n\
\r\n";

fn raw(bytes: &'static [u8]) -> ClassifyInput<'static> {
    ClassifyInput {
        raw_sip_response: Some(bytes),
        ..ClassifyInput::default()
    }
}

#[test]
fn raw_freeswitch_603_with_retry_after() {
    assert!(FS_RAW_603.len() > 500);
    let out = ok(&raw(FS_RAW_603.as_bytes()));
    // 6xx: the Q.850 21 (no location) does not change a 603; callee Retry-After applies.
    assert_eq!(v(&out), (C::Declined, F::CalleeChoice, R::Later));
    assert_eq!(out.retry_after.map(|r| r.seconds), Some(3600));
    assert_eq!(
        (out.q850_cause, out.q850_source),
        (Some(21), Some(Q850Source::ReasonHeader))
    );
    assert_eq!(out.reason_text.as_deref(), Some("CALL_REJECTED"));
    assert_eq!(out.sip_phrase, "Decline");
}

#[test]
fn raw_carrier_603_plus() {
    let out = ok(&raw(CARRIER_603_PLUS.as_bytes()));
    assert_eq!((v(&out), out.basis), (BLOCK, Basis::AnalyticsBlock));
    assert_eq!(out.retry_after, None);
    assert_eq!(out.sip_phrase, "Decline");
    assert!(
        out.reason_text
            .unwrap()
            .contains("redress.carrier-b.example")
    );
}

#[test]
fn raw_kamailio_503_compact_lf_folded() {
    let out = ok(&raw(KAMAILIO_503_COMPACT_LF.as_bytes()));
    assert_eq!((v(&out), out.basis), (NET, Basis::Q850Reason));
    assert_eq!(
        out.retry_after,
        Some(AppliedRetryAfter {
            seconds: 30,
            scope: RetryAfterScope::Route
        })
    );
    assert_eq!(
        out.reason_text.as_deref(),
        Some("No circuit/channel available")
    );
}

#[test]
fn raw_asterisk_403_two_reason_lines() {
    let out = ok(&raw(ASTERISK_403_MULTI_REASON.as_bytes()));
    assert_eq!((v(&out), out.basis), (DECL, Basis::Q850Reason));
    assert_eq!(out.q850_location.as_deref(), Some("U"));
}

#[test]
fn raw_480_folded_no_answer_with_bad_byte_elsewhere() {
    let out = ok(&raw(CARRIER_480_NO_ANSWER_FOLDED));
    assert_eq!((v(&out), out.basis), (NOANS, Basis::Q850Reason));
    assert_eq!(out.retry_after.map(|r| r.seconds), Some(900));
    assert_eq!(
        out.reason_text.as_deref(),
        Some("No answer from user (user alerted)")
    );
}

#[test]
fn explicit_fields_win_over_raw_headers() {
    let input = ClassifyInput {
        sip_code: Some(480),
        reason_header: "Q.850;cause=20",
        retry_after_header: "60",
        raw_sip_response: Some(CARRIER_480_NO_ANSWER_FOLDED),
        ..ClassifyInput::default()
    };
    let out = ok(&input);
    assert_eq!(v(&out), UNAV);
    assert_eq!(out.retry_after.map(|r| r.seconds), Some(60));
    // Only one explicit header: the other still comes from the raw message.
    let input = ClassifyInput {
        reason_header: "Q.850;cause=17",
        raw_sip_response: Some(CARRIER_480_NO_ANSWER_FOLDED),
        ..ClassifyInput::default()
    };
    let out = ok(&input);
    assert_eq!(v(&out), BUSY);
    assert_eq!(out.retry_after.map(|r| r.seconds), Some(900));
}

#[test]
fn raw_errors() {
    let input = ClassifyInput {
        sip_code: Some(486),
        raw_sip_response: Some(FS_RAW_603.as_bytes()),
        ..ClassifyInput::default()
    };
    assert_eq!(
        classify(&input),
        Err(ClassifyError::ConflictingCode {
            explicit: 486,
            raw: 603
        })
    );
    // Equal codes are fine.
    let input = ClassifyInput {
        sip_code: Some(603),
        raw_sip_response: Some(FS_RAW_603.as_bytes()),
        ..ClassifyInput::default()
    };
    assert_eq!(v(&ok(&input)).0, C::Declined);
    for bad in [
        &b"INVITE sip:bob@example.com SIP/2.0\r\n\r\n"[..],
        b"hello",
        b"\r\n",
        b"SIP/2.0 6O3 Decline\r\n",
    ] {
        let err = classify(&raw(bad)).unwrap_err();
        assert!(matches!(err, ClassifyError::RawSipResponse(_)), "{err:?}");
        assert_eq!(err.field(), "raw_sip_response");
    }
    assert_eq!(
        classify(&raw(b"SIP/2.0 180 Ringing\r\n\r\n")),
        Err(ClassifyError::ProvisionalCode(180))
    );
    assert_eq!(
        classify(&raw(b"SIP/2.0 099 Odd\r\n\r\n")),
        Err(ClassifyError::CodeOutOfRange(99))
    );
    assert_eq!(
        classify(&raw(b"SIP/2.0 799 Odd\r\n\r\n")),
        Err(ClassifyError::CodeOutOfRange(799))
    );
    // An explicit bad code is reported before the raw message is looked at.
    let input = ClassifyInput {
        sip_code: Some(1000),
        raw_sip_response: Some(b"junk"),
        ..ClassifyInput::default()
    };
    assert_eq!(classify(&input), Err(ClassifyError::CodeOutOfRange(1000)));
    // Empty raw bytes count as absent.
    assert_eq!(classify(&raw(b"")), Err(ClassifyError::NothingToClassify));
    // Unknown raw codes fall back like explicit ones.
    let out = ok(&raw(b"SIP/2.0 499 Whatever\r\n\r\n"));
    assert_eq!(
        (out.sip_code, out.reported_sip_code),
        (Some(400), Some(499))
    );
}

fn sip_ish() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 .;,=\"\\\\():\r\n\t/+-]{0,120}"
}

proptest! {
    #[test]
    fn classify_never_panics(
        code in proptest::option::of(any::<i64>()),
        small_code in proptest::option::of(-5i64..800),
        reason in sip_ish(),
        ra in sip_ish(),
        raw_bytes in proptest::option::of(any::<Vec<u8>>()),
        name in "(telnyx|twilio|freeswitch|asterisk|TELNYX|other|)",
        cause in "[A-Za-z0-9_-]{0,20}",
        anything in any::<String>(),
    ) {
        for sip_code in [code, small_code] {
            let input = ClassifyInput {
                sip_code,
                reason_phrase: &anything,
                reason_header: &reason,
                retry_after_header: &ra,
                raw_sip_response: raw_bytes.as_deref(),
                provider: Some(ProviderInput { name: &name, cause: &cause }),
                ..ClassifyInput::default()
            };
            if let Ok(out) = classify(&input) {
                prop_assert!(out.retryable != R::NowAlternateRoute || out.sip_code.is_none_or(|c| c < 600));
            }
            let input = ClassifyInput { reason_header: &anything, retry_after_header: &anything, provider: None, raw_sip_response: None, ..input };
            let _ = classify(&input);
        }
    }

    #[test]
    fn classify_raw_sip_ish(
        code in 0u16..1000,
        headers in proptest::collection::vec(("[A-Za-z-]{1,12}", sip_ish()), 0..10),
    ) {
        let mut msg = format!("SIP/2.0 {code:03} Phrase\r\n");
        for (n, v) in &headers {
            msg.push_str(&format!("{n}: {v}\r\n"));
        }
        msg.push_str("\r\n");
        let _ = classify(&ClassifyInput { raw_sip_response: Some(msg.as_bytes()), ..ClassifyInput::default() });
    }
}
