//! Tests of `[[overrides]]`: the built-in Telnyx overrides one by one, tenant overrides
//! by carrier label, precedence over R2–R6 of the reference, and every load error with
//! its location.

use super::*;
use crate::domain::{Basis, Category, Fault, Outcome, Retryable};

fn outcome(code: i64, phrase: &str) -> Outcome {
    Outcome {
        call_id: "call-1".into(),
        to: "+15550000002".into(),
        sip_code: Some(code),
        reason_phrase: phrase.into(),
        ..Outcome::default()
    }
}

fn parse_ok(text: &str) -> Policy {
    Policy::parse(text, "p.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(text: &str) -> PolicyError {
    match Policy::parse(text, "p.toml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

const CATCH_ALL: &str = "[[rules]]\nname = \"any\"\naction = \"stop\"\nexplanation = \"x\"\n";

fn classify(policy: &Policy, tenant: &str, o: &Outcome) -> Classification {
    policy.classify(tenant, o).expect("classifies")
}

#[test]
fn every_builtin_telnyx_override() {
    use Category as C;
    use Fault as F;
    use Retryable as R;
    let policy = Policy::builtin();
    // (code, phrase, override, category, fault, retryable, rule)
    let cases: &[(i64, &str, &str, C, F, R, &str)] = &[
        (
            486,
            "Busy Here D5",
            "telnyx-486-channel-limit",
            C::ConfigError,
            F::CallerConfig,
            R::Later,
            "config-limit",
        ),
        (
            486,
            "Busy Here D56",
            "telnyx-486-channel-limit",
            C::ConfigError,
            F::CallerConfig,
            R::Later,
            "config-limit",
        ),
        (
            486,
            "busy here d5 ",
            "telnyx-486-channel-limit",
            C::ConfigError,
            F::CallerConfig,
            R::Later,
            "config-limit",
        ),
        (
            403,
            "Forbidden D1",
            "telnyx-403-limit",
            C::ConfigError,
            F::CallerConfig,
            R::Later,
            "config-limit",
        ),
        (
            403,
            "Outbound profile limit D2",
            "telnyx-403-limit",
            C::ConfigError,
            F::CallerConfig,
            R::Later,
            "config-limit",
        ),
        (
            403,
            "Forbidden D22",
            "telnyx-403-limit",
            C::ConfigError,
            F::CallerConfig,
            R::Later,
            "config-limit",
        ),
        (
            403,
            "Forbidden D24",
            "telnyx-403-limit",
            C::ConfigError,
            F::CallerConfig,
            R::Later,
            "config-limit",
        ),
        (
            403,
            "Forbidden P05",
            "telnyx-403-limit",
            C::ConfigError,
            F::CallerConfig,
            R::Later,
            "config-limit",
        ),
        (
            403,
            "Caller Origination Number is Invalid D35",
            "telnyx-403-policy",
            C::ConfigError,
            F::CallerConfig,
            R::No,
            "config-error",
        ),
        (
            403,
            "Forbidden D10",
            "telnyx-403-policy",
            C::ConfigError,
            F::CallerConfig,
            R::No,
            "config-error",
        ),
        (
            403,
            "Forbidden D17",
            "telnyx-403-policy",
            C::ConfigError,
            F::CallerConfig,
            R::No,
            "config-error",
        ),
        (
            403,
            "Forbidden D41",
            "telnyx-403-policy",
            C::ConfigError,
            F::CallerConfig,
            R::No,
            "config-error",
        ),
        (
            403,
            "Forbidden D65",
            "telnyx-403-policy",
            C::ConfigError,
            F::CallerConfig,
            R::No,
            "config-error",
        ),
        (
            404,
            "Not Found D18",
            "telnyx-404-account",
            C::ConfigError,
            F::CallerConfig,
            R::No,
            "config-error",
        ),
        (
            404,
            "Not Found D19",
            "telnyx-404-account",
            C::ConfigError,
            F::CallerConfig,
            R::No,
            "config-error",
        ),
        (
            404,
            "Not Found D8",
            "telnyx-404-account",
            C::ConfigError,
            F::CallerConfig,
            R::No,
            "config-error",
        ),
        (
            404,
            "Not Found D59",
            "telnyx-404-account",
            C::ConfigError,
            F::CallerConfig,
            R::No,
            "config-error",
        ),
        (
            404,
            "Not Found D40",
            "telnyx-404-no-route",
            C::NetworkError,
            F::Network,
            R::NowAlternateRoute,
            "network-error",
        ),
        (
            480,
            "Temporarily Unavailable D21",
            "telnyx-480-no-destination",
            C::InvalidNumber,
            F::CallerData,
            R::No,
            "invalid-number",
        ),
        (
            480,
            "Temporarily Unavailable RG1",
            "telnyx-480-not-registered",
            C::ConfigError,
            F::CallerConfig,
            R::Later,
            "config-limit",
        ),
        (
            503,
            "Service Unavailable PE1",
            "telnyx-503-no-routes",
            C::NetworkError,
            F::Network,
            R::NowAlternateRoute,
            "network-error",
        ),
        (
            503,
            "Service Unavailable PE6",
            "telnyx-503-no-routes",
            C::NetworkError,
            F::Network,
            R::NowAlternateRoute,
            "network-error",
        ),
        (
            503,
            "Service Unavailable TV1",
            "telnyx-503-downstream",
            C::NetworkError,
            F::Network,
            R::NowAlternateRoute,
            "network-error",
        ),
        (
            488,
            "Not Acceptable Here B3",
            "telnyx-488-srtp",
            C::ConfigError,
            F::CallerConfig,
            R::No,
            "config-error",
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for &(code, phrase, name, category, fault, retryable, rule) in cases {
        let o = outcome(code, phrase);
        let c = classify(&policy, "", &o);
        let what = format!("{code} {phrase:?}");
        assert_eq!(c.basis, Basis::Override, "{what}");
        assert_eq!(c.override_name.as_deref(), Some(name), "{what}");
        assert_eq!(
            (c.category, c.fault, c.retryable),
            (category, fault, retryable),
            "{what}"
        );
        assert!(c.summary.contains("Telnyx"), "{what}: {}", c.summary);
        // The effective code and its registered phrase stay what was reported.
        assert_eq!(c.sip_code, u16::try_from(code).ok(), "{what}");
        let d = policy.decide(&PolicyInput {
            tenant: "",
            outcome: &o,
            classification: &c,
            history: &HistorySnapshot::default(),
            includes_current: false,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000),
            jitter_seed: 1,
        });
        assert_eq!(d.rule, rule, "{what}");
        seen.insert(name);
    }
    let builtin: std::collections::BTreeSet<&str> = policy.overrides().global_names().collect();
    assert_eq!(seen, builtin, "every built-in override has a case");
}

#[test]
fn builtin_overrides_leave_other_phrases_alone() {
    let policy = Policy::builtin();
    for (code, phrase, category) in [
        (486, "Busy Here", Category::Busy),
        (486, "", Category::Busy),
        // Another code, or the code not as the phrase's last word.
        (486, "Busy Here D57", Category::Busy),
        (486, "Busy HereD5", Category::Busy),
        (486, "D5 Busy Here", Category::Busy),
        (603, "Decline D5", Category::Declined),
        (404, "Not Found D40x", Category::InvalidNumber),
        (404, "Not Found D1", Category::InvalidNumber),
        (480, "Temporarily Unavailable", Category::Unavailable),
    ] {
        let c = classify(&policy, "", &outcome(code, phrase));
        assert_eq!(c.category, category, "{code} {phrase:?}");
        assert_ne!(c.basis, Basis::Override, "{code} {phrase:?}");
        assert_eq!(c.override_name, None);
    }
}

#[test]
fn the_raw_responses_phrase_is_read_when_none_is_sent() {
    let policy = Policy::builtin();
    let o = Outcome {
        call_id: "c".into(),
        raw_sip_response: Some(b"SIP/2.0 486 Busy Here D56\r\nVia: x\r\n\r\n".to_vec()),
        ..Outcome::default()
    };
    let c = classify(&policy, "", &o);
    assert_eq!(c.override_name.as_deref(), Some("telnyx-486-channel-limit"));
    // Without a policy (the rules alone) the same response is a busy callee.
    let rules_only = crate::classify::classify_outcome(&o).expect("classifies");
    assert_eq!(rules_only.category, Category::Busy);
    assert_eq!(rules_only.basis, Basis::SipCode);
}

const CARRIER_X: &str = r#"
[[rules]]
name = "no-answer"
category = ["no_answer"]
action = "retry_later"
explanation = "No answer."

[[rules]]
name = "declined"
category = ["declined"]
action = "stop"
explanation = "Declined."

[[rules]]
name = "any"
action = "stop"
explanation = "x"

[tenants.acme]

[[tenants.acme.overrides]]
name = "carrier-x-603-no-answer"
description = "Carrier X sends 603 when the call simply rang out."
labels = { carrier = "carrier-x" }
sip_code = [603]
category = "no_answer"
fault = "callee_device"
retryable = "later"
"#;

#[test]
fn a_tenant_override_by_carrier_label() {
    let policy = parse_ok(CARRIER_X);
    let mut o = outcome(603, "Decline");
    o.labels.insert("carrier".into(), "carrier-x".into());
    let c = classify(&policy, "acme", &o);
    assert_eq!(
        (c.category, c.fault, c.retryable),
        (Category::NoAnswer, Fault::CalleeDevice, Retryable::Later)
    );
    assert_eq!(c.basis, Basis::Override);
    assert_eq!(
        c.override_name.as_deref(),
        Some("tenant:acme/carrier-x-603-no-answer")
    );
    // Without a summary of its own, the new category's summary.
    assert_eq!(
        c.summary,
        "The recipient did not answer before the ring timer ran out."
    );
    // Another carrier, or another tenant: the rules decide.
    let mut other = o.clone();
    other.labels.insert("carrier".into(), "carrier-y".into());
    assert_eq!(
        classify(&policy, "acme", &other).category,
        Category::Declined
    );
    assert_eq!(classify(&policy, "globex", &o).category, Category::Declined);
    assert_eq!(
        classify(&policy, "acme", &outcome(603, "Decline")).category,
        Category::Declined,
        "no carrier label"
    );
}

#[test]
fn overrides_never_make_a_6xx_fail_over() {
    // Written without a sip_code condition, so the load-time check cannot see it.
    let policy = parse_ok(&format!(
        r#"
[[overrides]]
name = "carrier-glitch"
reason_phrase = "glitch"
category = "network_error"
retryable = "now_alternate_route"
{CATCH_ALL}"#
    ));
    let c = classify(&policy, "", &outcome(603, "Decline glitch"));
    assert_eq!(c.category, Category::NetworkError);
    assert_eq!(c.retryable, Retryable::Later, "R5: a 6xx ends the search");
    let c = classify(&policy, "", &outcome(503, "Unavailable glitch"));
    assert_eq!(
        c.retryable,
        Retryable::NowAlternateRoute,
        "a 5xx may fail over"
    );
    // Limited to 6xx codes, the same override is refused at load.
    let e = parse_err(&format!(
        "[[overrides]]\nname = \"x\"\nsip_code = [603, \"6xx\"]\nretryable = \"now_alternate_route\"\n{CATCH_ALL}"
    ));
    assert_eq!((e.line, e.column), (4, 13), "{e}");
    assert!(e.message.contains("6xx is global"), "{e}");
}

#[test]
fn overrides_come_before_r2_to_r4() {
    let policy = parse_ok(&format!(
        r#"
[[overrides]]
name = "timeout-is-unavailable"
provider = ["telnyx"]
provider_cause = ["timeout"]
category = "unavailable"

[[overrides]]
name = "no-q850-decline"
sip_code = [403]
reason_phrase = "^Forbidden X$"
category = "config_error"
{CATCH_ALL}"#
    ));
    // R2 would say no_answer for Telnyx `timeout` with 487.
    let mut o = outcome(487, "Request Terminated");
    o.provider = Some(("Telnyx".into(), "TIMEOUT".into()));
    let c = classify(&policy, "", &o);
    assert_eq!(c.category, Category::Unavailable);
    assert_eq!(c.basis, Basis::Override);
    // What the override leaves out comes from the rule that would have decided (R2).
    assert_eq!(c.retryable, Retryable::Later);
    // R4 would make a 403 with a user-located Q.850 21 a decline.
    let mut o = outcome(403, "Forbidden X");
    o.reason_header = "Q.850;cause=21;location=U".into();
    let c = classify(&policy, "", &o);
    assert_eq!(c.category, Category::ConfigError);
    assert_eq!(
        c.q850_cause,
        Some(21),
        "the Reason's cause is still reported"
    );
    // A provider cause without a SIP code is overridden too.
    let o = Outcome {
        call_id: "c".into(),
        provider: Some(("telnyx".into(), "timeout".into())),
        ..Outcome::default()
    };
    let c = classify(&policy, "", &o);
    assert_eq!(
        (c.category, c.basis),
        (Category::Unavailable, Basis::Override)
    );
}

#[test]
fn a_603_plus_analytics_block_is_never_overridden() {
    let policy = parse_ok(&format!(
        "[[overrides]]\nname = \"x-603\"\nsip_code = [603]\ncategory = \"no_answer\"\nretryable = \"later\"\n{CATCH_ALL}"
    ));
    let mut o = outcome(603, "Network Blocked");
    o.reason_header = "SIP;cause=603;text=\"v=analytics1;reason=spam\"".into();
    let c = classify(&policy, "", &o);
    assert_eq!(c.basis, Basis::AnalyticsBlock);
    assert_eq!(
        (c.category, c.retryable),
        (Category::RejectedUnwanted, Retryable::No)
    );
    assert_eq!(c.override_name, None);
    // A plain 603 is overridden.
    let c = classify(&policy, "", &outcome(603, "Decline"));
    assert_eq!((c.category, c.basis), (Category::NoAnswer, Basis::Override));
}

#[test]
fn retry_after_stays_only_when_it_agrees_with_the_override() {
    let policy = Policy::builtin();
    // 486 D5 with a callee Retry-After: the override says `later`, so it is kept.
    let mut o = outcome(486, "Busy Here D5");
    o.retry_after_header = "300".into();
    let c = classify(&policy, "", &o);
    assert_eq!(c.retry_after.map(|r| r.seconds), Some(300));
    // 503 PE1 with a route Retry-After: the override keeps now_alternate_route.
    let mut o = outcome(503, "Service Unavailable PE1");
    o.retry_after_header = "120".into();
    let c = classify(&policy, "", &o);
    assert_eq!(c.retry_after.map(|r| r.seconds), Some(120));
    // 404 D18 with a callee Retry-After: the override says `no`; no retry is implied.
    let mut o = outcome(404, "Not Found D18");
    o.retry_after_header = "60".into();
    let c = classify(&policy, "", &o);
    assert_eq!(c.retry_after, None);
    assert_eq!(c.retryable, Retryable::No);
}

#[test]
fn a_tenant_disables_a_builtin_override_like_a_rule() {
    let text =
        format!("{DEFAULT_POLICY}\n[tenants.acme]\ndisable = [\"telnyx-486-channel-limit\"]\n");
    let policy = parse_ok(&text);
    let o = outcome(486, "Busy Here D5");
    assert_eq!(classify(&policy, "acme", &o).category, Category::Busy);
    assert_eq!(
        classify(&policy, "other", &o).category,
        Category::ConfigError
    );
}

#[test]
fn load_errors_are_located() {
    let bad = |body: &str| parse_err(&format!("{body}\n{CATCH_ALL}"));
    // A bad pattern points at the character in the pattern.
    let e = bad("[[overrides]]\nname = \"x\"\nreason_phrase = 'D(5|56'\ncategory = \"busy\"");
    assert_eq!((e.line, e.column), (3, 19), "{e}");
    assert!(e.message.contains("reason_phrase"), "{e}");
    let e = bad(
        "[[overrides]]\nname = \"x\"\nreason_phrase = '\\w{1000}\\w{1000}'\ncategory = \"busy\"",
    );
    assert!(e.message.contains("compiles to more than"), "{e}");
    assert_eq!(e.line, 3, "{e}");
    let e = bad("[[overrides]]\nname = \"x\"\ncategory = \"busy\"");
    assert!(e.message.contains("no conditions"), "{e}");
    let e = bad("[[overrides]]\nname = \"x\"\nsip_code = [486]");
    assert!(e.message.contains("changes nothing"), "{e}");
    let e = bad("[[overrides]]\nname = \"x\"\nsip_code = [486]\ncategory = \"bussy\"");
    assert_eq!((e.line, e.column), (4, 12), "{e}");
    let e = bad("[[overrides]]\nname = \"x\"\nsip_code = [486]\nretryable = \"soon\"");
    assert!(e.message.contains("unknown retryable `soon`"), "{e}");
    let e = bad("[[overrides]]\nname = \"x\"\nsip_code = [486]\nsummary = \" \"");
    assert!(e.message.contains("`summary` is empty"), "{e}");
    let e = bad("[[overrides]]\nname = \"X\"\nsip_code = [486]\ncategory = \"busy\"");
    assert!(e.message.contains("invalid override name"), "{e}");
    let e =
        bad("[[overrides]]\nname = \"x\"\nsip_code = [486]\nreason = \"D5\"\ncategory = \"busy\"");
    assert_eq!(e.line, 4, "{e}");
    // Names are shared with rules, so that `disable` means one thing.
    let e = parse_err(&format!(
        "{CATCH_ALL}[[overrides]]\nname = \"any\"\nsip_code = [486]\ncategory = \"busy\"\n"
    ));
    assert!(e.message.contains("duplicate name `any`"), "{e}");
    let e = parse_err(&format!("{CATCH_ALL}[tenants.a]\ndisable = [\"nope\"]\n"));
    assert!(e.message.contains("no global rule or override"), "{e}");
    let e = parse_err(&format!(
        "{CATCH_ALL}[[tenants.a.overrides]]\nname = \"x\"\nsip_code = [486]\ncategory = \"busy\"\n[[tenants.a.overrides]]\nname = \"x\"\nsip_code = [480]\ncategory = \"busy\"\n"
    ));
    assert!(
        e.message
            .contains("duplicate override name `x` in tenant `a`"),
        "{e}"
    );
}

#[test]
fn rules_can_read_retryability() {
    let policy = parse_ok(
        r#"
[[rules]]
name = "limit"
category = ["config_error"]
retryable = ["later"]
action = "retry_later"
explanation = "later"

[[rules]]
name = "any"
action = "stop"
explanation = "x"
"#,
    );
    let rules: Vec<RuleSummary> = policy.rules().collect();
    assert_eq!(
        rules[0].conditions,
        "category = [\"config_error\"]; retryable = [\"later\"]"
    );
    let e = parse_err(
        "[[rules]]\nname = \"x\"\nretryable = [\"sometimes\"]\naction = \"stop\"\nexplanation = \"x\"\n",
    );
    assert_eq!((e.line, e.column), (3, 14), "{e}");
}
