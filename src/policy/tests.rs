//! Unit and property tests of the policy engine: the default policy row by row
//! (reference §1.4), retry timing, history predicates, tenants, matching, templates and
//! every validation error with its exact location.

use super::*;
use crate::domain::{AppliedRetryAfter, Basis, Category, Classification, Fault, Retryable};
use crate::domain::{HistoryEntry, HistorySnapshot, Outcome};
use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const HOUR: u64 = 3600;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

fn ago(secs: u64) -> SystemTime {
    now() - Duration::from_secs(secs)
}

fn class(category: Category, fault: Fault, code: Option<u16>) -> Classification {
    let retryable = match category {
        Category::Busy | Category::NoAnswer | Category::Unavailable => Retryable::Later,
        Category::NetworkError | Category::Redirect => Retryable::NowAlternateRoute,
        _ => Retryable::No,
    };
    let phrase = match code {
        Some(603) => "Decline",
        Some(486) => "Busy Here",
        Some(503) => "Service Unavailable",
        _ => "",
    };
    Classification {
        category,
        fault,
        retryable,
        sip_code: code,
        reported_sip_code: code,
        sip_phrase: Cow::Borrowed(phrase),
        q850_cause: None,
        q850_source: None,
        q850_location: None,
        reason_text: None,
        retry_after: None,
        summary: Cow::Borrowed("Summary."),
        basis: Basis::SipCode,
        override_name: None,
    }
}

fn with_ra(mut c: Classification, seconds: u32, scope: RetryAfterScope) -> Classification {
    c.retry_after = Some(AppliedRetryAfter { seconds, scope });
    c
}

fn outcome(attempt: Option<u32>) -> Outcome {
    Outcome {
        call_id: "call-1".into(),
        attempt,
        from: "+15550000001".into(),
        to: "+15550000002".into(),
        ..Outcome::default()
    }
}

fn entry(at: SystemTime, category: Category) -> HistoryEntry {
    HistoryEntry {
        at,
        attempt: 1,
        category,
        sip_code: None,
    }
}

fn history(entries: Vec<HistoryEntry>) -> HistorySnapshot {
    HistorySnapshot {
        destination: "+15550000002".into(),
        entries,
    }
}

/// A decision with everything but the classification fixed.
struct Case {
    tenant: &'static str,
    outcome: Outcome,
    history: HistorySnapshot,
    includes_current: bool,
    seed: u64,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            tenant: "",
            outcome: outcome(Some(1)),
            history: history(Vec::new()),
            includes_current: false,
            seed: 7,
        }
    }
}

impl Case {
    fn decide(&self, policy: &Policy, c: &Classification) -> Decision {
        policy.decide(&PolicyInput {
            tenant: self.tenant,
            outcome: &self.outcome,
            classification: c,
            history: &self.history,
            includes_current: self.includes_current,
            now: now(),
            jitter_seed: self.seed,
        })
    }
}

fn builtin_decide(c: &Classification) -> Decision {
    Case::default().decide(&Policy::builtin(), c)
}

fn parse_err(text: &str) -> PolicyError {
    match Policy::parse(text, "p.toml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

fn parse_ok(text: &str) -> Policy {
    match Policy::parse(text, "p.toml") {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

const CATCH_ALL: &str = "[[rules]]\nname = \"any\"\naction = \"stop\"\nexplanation = \"x\"\n";

fn not_before_secs(d: &Decision) -> u64 {
    let retry = d.retry.as_ref().expect("a retry plan");
    retry
        .not_before
        .duration_since(now())
        .expect("in the future")
        .as_secs()
}

// ---------------------------------------------------------------------------------
// The built-in policy
// ---------------------------------------------------------------------------------

#[test]
fn builtin_parses_and_ends_with_a_catch_all() {
    let policy = Policy::parse(DEFAULT_POLICY, "default.toml").expect("default.toml parses");
    let rules: Vec<RuleSummary> = policy.rules().collect();
    assert_eq!(rules.len(), policy.rule_count());
    assert_eq!(rules.first().map(|r| r.name.as_str()), Some("answered"));
    let last = rules.last().expect("rules");
    assert_eq!(
        (last.name.as_str(), last.conditions.as_str()),
        ("other", "(any outcome)")
    );
    assert!(rules.iter().all(|r| !r.description.is_empty()));
}

#[test]
fn policy_is_shareable() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    check::<Policy>();
    check::<PolicyError>();
}

#[test]
fn builtin_tenant_example_parses_when_uncommented() {
    let marker = "# [tenants.acme]";
    let start = DEFAULT_POLICY.find(marker).expect("example");
    let example: String = DEFAULT_POLICY[start..]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let text = format!("{}\n{example}\n", &DEFAULT_POLICY[..start]);
    let policy = parse_ok(&text);
    let names: Vec<String> = policy.rules_for("acme").map(|r| r.name).collect();
    assert_eq!(names[0], "tenant:acme/daily-cap");
    assert!(names.contains(&"tenant:acme/declined".to_owned()));
    assert!(!names.contains(&"declined".to_owned()));
    assert!(!names.contains(&"no-answer-repeated".to_owned()));
}

#[test]
fn answered_does_nothing() {
    let d = builtin_decide(&class(Category::Answered, Fault::None, Some(200)));
    assert_eq!((d.action, d.rule.as_str()), (Action::None, "answered"));
    assert!(!d.notify_user && d.retry.is_none() && !d.alert_operator && !d.suppressed);
    assert_eq!(d.explanation, "Answered (200): nothing to do.");
}

#[test]
fn busy_retries_later_no_sooner_than_two_minutes_and_notifies() {
    let d = builtin_decide(&class(Category::Busy, Fault::CalleeDevice, Some(486)));
    assert_eq!((d.action, d.rule.as_str()), (Action::RetryLater, "busy"));
    assert!(d.notify_user);
    let retry = d.retry.as_ref().expect("retry");
    assert!((120..=144).contains(&retry.delay_seconds), "{retry:?}");
    assert_eq!(not_before_secs(&d), u64::from(retry.delay_seconds));
    assert_eq!((retry.next_attempt, retry.max_attempts), (2, 5));
    assert!(!retry.honours_retry_after);
    assert!(
        d.user_message
            .starts_with("The line was busy; we will try again in about 2m")
    );
    assert!(
        d.explanation
            .starts_with("Busy (486 Busy Here): redial no earlier than 2025-")
    );
    assert!(
        d.explanation.ends_with("(attempt 2 of 5)."),
        "{}",
        d.explanation
    );
}

#[test]
fn no_answer_retries_and_suggests_alternatives_from_the_third_attempt() {
    let c = class(Category::NoAnswer, Fault::CalleeDevice, None);
    let first = builtin_decide(&c);
    assert_eq!(
        (first.action, first.rule.as_str()),
        (Action::RetryLater, "no-answer")
    );
    assert!(first.alternatives.is_empty() && !first.notify_user);

    let case = Case {
        outcome: outcome(Some(3)),
        ..Case::default()
    };
    let third = case.decide(&Policy::builtin(), &c);
    assert_eq!(third.rule, "no-answer-repeated");
    assert_eq!(third.action, Action::RetryLater);
    assert_eq!(
        third.alternatives,
        vec![Alternative::Sms, Alternative::Callback]
    );
    assert!(third.user_message.contains("after 3 attempts"));
}

#[test]
fn unavailable_honours_callee_retry_after_and_suggests_alternatives() {
    let c = with_ra(
        class(Category::Unavailable, Fault::CalleeDevice, Some(480)),
        2 * HOUR as u32,
        RetryAfterScope::Callee,
    );
    let d = builtin_decide(&c);
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::RetryLater, "unavailable")
    );
    assert_eq!(
        d.alternatives,
        vec![Alternative::Sms, Alternative::Callback]
    );
    assert_eq!(not_before_secs(&d), 2 * HOUR);
    assert!(d.retry.as_ref().is_some_and(|r| r.honours_retry_after));
}

#[test]
fn declined_stops_notifies_and_suggests_sms_or_callback() {
    let d = builtin_decide(&class(Category::Declined, Fault::CalleeChoice, Some(603)));
    assert_eq!((d.action, d.rule.as_str()), (Action::Stop, "declined"));
    assert!(d.notify_user && !d.suppressed && d.retry.is_none());
    assert_eq!(d.user_message, "The recipient declined the call.");
    assert_eq!(
        d.alternatives,
        vec![Alternative::Sms, Alternative::Callback]
    );
    assert_eq!(
        d.explanation,
        "Declined by the recipient (603 Decline): not redialled automatically; user notified, \
         SMS or callback suggested."
    );
}

#[test]
fn declined_with_callee_retry_after_retries_no_earlier_than_it() {
    let c = with_ra(
        class(Category::Declined, Fault::CalleeChoice, Some(603)),
        HOUR as u32,
        RetryAfterScope::Callee,
    );
    let d = builtin_decide(&c);
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::RetryLater, "declined-retry-after")
    );
    assert!(not_before_secs(&d) >= HOUR);
    assert!(d.retry.as_ref().is_some_and(|r| r.honours_retry_after));
    assert!(d.user_message.contains("after 1h"), "{}", d.user_message);
}

#[test]
fn rejected_unwanted_607_stops_and_suggests_another_channel() {
    let d = builtin_decide(&class(
        Category::RejectedUnwanted,
        Fault::CalleeChoice,
        Some(607),
    ));
    assert_eq!((d.action, d.rule.as_str()), (Action::Stop, "unwanted-607"));
    assert!(d.notify_user && !d.alert_operator);
    assert_eq!(d.alternatives, vec![Alternative::Sms, Alternative::Email]);
}

#[test]
fn network_blocks_608_and_603_plus_alert_the_operator() {
    for code in [608, 603] {
        let d = builtin_decide(&class(
            Category::RejectedUnwanted,
            Fault::Network,
            Some(code),
        ));
        assert_eq!(
            (d.action, d.rule.as_str()),
            (Action::Stop, "blocked-by-network")
        );
        assert!(d.notify_user && d.alert_operator && d.alternatives.is_empty());
        assert!(d.explanation.contains("STIR/SHAKEN attestation"));
        assert!(d.explanation.contains("dispute"));
    }
    // Without a SIP code (a provider cause), the generic rule still stops and notifies.
    let d = builtin_decide(&class(Category::RejectedUnwanted, Fault::Unknown, None));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Stop, "rejected-unwanted")
    );
    assert!(d.notify_user);
}

#[test]
fn invalid_number_asks_for_a_fix_and_notifies() {
    let d = builtin_decide(&class(
        Category::InvalidNumber,
        Fault::CallerData,
        Some(404),
    ));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::FixNumber, "invalid-number")
    );
    assert!(d.notify_user && d.retry.is_none());
    assert!(d.user_message.contains("+15550000002"));
}

#[test]
fn redirect_calls_the_contact_target_and_380_suggests_another_service() {
    let d = builtin_decide(&class(Category::Redirect, Fault::None, Some(302)));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::RetryNowAlternateRoute, "redirect")
    );
    assert_eq!(d.alternatives, vec![Alternative::ContactTarget]);
    assert!(d.retry.is_some());

    let d = builtin_decide(&class(Category::Redirect, Fault::None, Some(380)));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Stop, "alternative-service")
    );
    assert_eq!(
        d.alternatives,
        vec![Alternative::ContactTarget, Alternative::Sms]
    );
}

#[test]
fn canceled_stops_silently() {
    let d = builtin_decide(&class(Category::Canceled, Fault::CallerAction, Some(487)));
    assert_eq!((d.action, d.rule.as_str()), (Action::Stop, "canceled"));
    assert!(!d.notify_user && !d.alert_operator && d.user_message.is_empty());
}

#[test]
fn config_error_needs_a_fix_and_alerts() {
    let d = builtin_decide(&class(
        Category::ConfigError,
        Fault::CallerConfig,
        Some(403),
    ));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::FixConfiguration, "config-error")
    );
    assert!(d.alert_operator && d.retry.is_none());
}

#[test]
fn network_error_tries_another_route_with_a_same_route_fallback() {
    let d = builtin_decide(&class(Category::NetworkError, Fault::Network, Some(502)));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::RetryNowAlternateRoute, "network-error")
    );
    let retry = d.retry.as_ref().expect("fallback");
    assert!((30..=36).contains(&retry.delay_seconds), "{retry:?}");
    assert_eq!(d.avoid_route_seconds, 0);
}

#[test]
fn other_stops_and_alerts() {
    let d = builtin_decide(&class(Category::Other, Fault::Unknown, None));
    assert_eq!((d.action, d.rule.as_str()), (Action::Stop, "other"));
    assert!(d.alert_operator && !d.notify_user && d.retry.is_none());
    assert!(
        d.explanation
            .starts_with("Outcome `other` (no cause reported)")
    );
}

#[test]
fn every_category_gets_a_decision_naming_a_rule() {
    for &category in Category::ALL {
        for &fault in Fault::ALL {
            let d = builtin_decide(&class(category, fault, None));
            assert!(!d.rule.is_empty() && !d.explanation.is_empty());
            assert_ne!(d.rule, "builtin:unmatched");
        }
    }
}

// ---------------------------------------------------------------------------------
// Retry timing
// ---------------------------------------------------------------------------------

#[test]
fn callee_retry_after_wins_only_when_later_than_the_backoff() {
    let late = with_ra(
        class(Category::Busy, Fault::CalleeDevice, Some(486)),
        7200,
        RetryAfterScope::Callee,
    );
    let d = builtin_decide(&late);
    assert_eq!(not_before_secs(&d), 7200);
    assert!(d.retry.as_ref().is_some_and(|r| r.honours_retry_after));
    assert!(d.explanation.contains("486 Busy Here, Retry-After 2h"));

    let early = with_ra(
        class(Category::Busy, Fault::CalleeDevice, Some(486)),
        10,
        RetryAfterScope::Callee,
    );
    let d = builtin_decide(&early);
    let retry = d.retry.as_ref().expect("retry");
    assert!(retry.delay_seconds >= 120 && !retry.honours_retry_after);
}

#[test]
fn route_retry_after_sets_a_clamped_avoid_route_and_delays_the_fallback() {
    let c = with_ra(
        class(Category::NetworkError, Fault::Network, Some(503)),
        600,
        RetryAfterScope::Route,
    );
    let d = builtin_decide(&c);
    assert_eq!(d.avoid_route_seconds, 600);
    assert_eq!(not_before_secs(&d), 600);
    assert!(d.retry.as_ref().is_some_and(|r| r.honours_retry_after));

    // A day-long Retry-After is clamped to max_avoid_route (Kamailio's 3600 s).
    let c = with_ra(c, 86_400, RetryAfterScope::Route);
    let d = builtin_decide(&c);
    assert_eq!(d.avoid_route_seconds, 3600);
    assert_eq!(not_before_secs(&d), 3600);

    let custom = parse_ok(&format!(
        "[defaults]\nmax_avoid_route = \"10m\"\n{CATCH_ALL}"
    ));
    let d = Case::default().decide(&custom, &c);
    assert_eq!((d.action, d.avoid_route_seconds), (Action::Stop, 600));
}

#[test]
fn a_callee_retry_after_beyond_max_retry_after_is_capped_and_says_so() {
    let policy = parse_ok(RETRY_ALL);
    // 480 with Retry-After: 4294967295 (136 years).
    let c = with_ra(
        class(Category::Unavailable, Fault::CalleeDevice, Some(480)),
        u32::MAX,
        RetryAfterScope::Callee,
    );
    let d = Case::default().decide(&policy, &c);
    let retry = d.retry.as_ref().expect("a retry");
    assert_eq!(retry.delay_seconds, 7 * 24 * 3600, "the built-in 7 days");
    assert!(retry.honours_retry_after);
    assert!(
        d.explanation
            .contains("Retry-After (136years 1month 5days 19h 54m 39s) was capped at 7days"),
        "{}",
        d.explanation
    );
    // Under the cap, the callee's wait is kept as is and nothing is added.
    let c = with_ra(c, 86_400, RetryAfterScope::Callee);
    let d = Case::default().decide(&policy, &c);
    assert_eq!(d.retry.as_ref().map(|r| r.delay_seconds), Some(86_400));
    assert!(!d.explanation.contains("capped"), "{}", d.explanation);
    // The cap is the policy's.
    let custom = parse_ok(&RETRY_ALL.replace(
        "max_attempts = 100",
        "max_attempts = 100\nmax_retry_after = \"1d\"",
    ));
    let c = with_ra(c, 10 * 86_400, RetryAfterScope::Callee);
    let d = Case::default().decide(&custom, &c);
    assert_eq!(d.retry.as_ref().map(|r| r.delay_seconds), Some(86_400));
}

const RETRY_ALL: &str = "[defaults]\ninitial = \"2m\"\nmultiplier = 2\nmax = \"1h\"\njitter = 0\nmax_attempts = 100\n\n[[rules]]\nname = \"any\"\naction = \"retry_later\"\nexplanation = \"x\"\n";

#[test]
fn backoff_grows_exponentially_up_to_the_cap() {
    let policy = parse_ok(RETRY_ALL);
    let c = class(Category::Busy, Fault::CalleeDevice, Some(486));
    let delays: Vec<u32> = (1..=7)
        .map(|attempt| {
            let case = Case {
                outcome: outcome(Some(attempt)),
                ..Case::default()
            };
            case.decide(&policy, &c).retry.expect("retry").delay_seconds
        })
        .collect();
    assert_eq!(delays, vec![120, 240, 480, 960, 1920, 3600, 3600]);
}

#[test]
fn jitter_is_bounded_and_deterministic_per_seed() {
    let policy = parse_ok(&RETRY_ALL.replace("jitter = 0", "jitter = 0.5"));
    let c = class(Category::Busy, Fault::CalleeDevice, Some(486));
    let delay = |attempt, seed| {
        let case = Case {
            outcome: outcome(Some(attempt)),
            seed,
            ..Case::default()
        };
        case.decide(&policy, &c).retry.expect("retry").delay_seconds
    };
    let mut distinct = std::collections::BTreeSet::new();
    for seed in 0..500u64 {
        let seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let d = delay(2, seed);
        assert!((240..=360).contains(&d), "seed {seed}: {d}");
        assert_eq!(d, delay(2, seed), "same seed, same delay");
        distinct.insert(d);
    }
    assert!(
        distinct.len() > 50,
        "jitter spreads delays: {}",
        distinct.len()
    );
}

#[test]
fn max_attempts_turns_a_retry_into_stop() {
    let c = class(Category::Busy, Fault::CalleeDevice, Some(486));
    let fourth = Case {
        outcome: outcome(Some(4)),
        ..Case::default()
    };
    assert_eq!(
        fourth.decide(&Policy::builtin(), &c).action,
        Action::RetryLater
    );

    let fifth = Case {
        outcome: outcome(Some(5)),
        ..Case::default()
    };
    let d = fifth.decide(&Policy::builtin(), &c);
    assert_eq!((d.action, d.rule.as_str()), (Action::Stop, "busy"));
    assert!(d.retry.is_none());
    assert_eq!(
        d.explanation,
        "Summary. Attempt 5 of 5 reached: stopped, not redialled automatically."
    );
    assert!(d.notify_user);
    assert_eq!(
        d.user_message,
        "The line was busy on 5 attempts; we will not call again automatically."
    );
    assert_eq!(
        d.alternatives,
        vec![Alternative::Sms, Alternative::Callback]
    );

    // A route Retry-After is still reported when the limit stops the retry.
    let c = with_ra(
        class(Category::NetworkError, Fault::Network, Some(503)),
        60,
        RetryAfterScope::Route,
    );
    let d = fifth.decide(&Policy::builtin(), &c);
    assert_eq!((d.action, d.avoid_route_seconds), (Action::Stop, 60));
}

#[test]
fn attempt_is_derived_from_history_when_not_sent() {
    let c = class(Category::Busy, Fault::CalleeDevice, Some(486));
    let past = vec![
        entry(ago(3 * HOUR), Category::Answered),
        entry(ago(2 * HOUR), Category::Busy),
        entry(ago(HOUR), Category::NoAnswer),
    ];
    let classify = Case {
        outcome: outcome(None),
        history: history(past.clone()),
        ..Case::default()
    };
    let d = classify.decide(&Policy::builtin(), &c);
    assert_eq!(d.attempt, 3);
    assert_eq!(d.retry.as_ref().map(|r| r.next_attempt), Some(4));

    let mut with_current = past;
    with_current.push(entry(now(), Category::Busy));
    let report = Case {
        outcome: outcome(None),
        history: history(with_current),
        includes_current: true,
        ..Case::default()
    };
    assert_eq!(report.decide(&Policy::builtin(), &c).attempt, 3);

    let fresh = Case {
        outcome: outcome(Some(0)),
        ..Case::default()
    };
    assert_eq!(fresh.decide(&Policy::builtin(), &c).attempt, 1);
}

// ---------------------------------------------------------------------------------
// History: repeated declines
// ---------------------------------------------------------------------------------

fn declined() -> Classification {
    class(Category::Declined, Fault::CalleeChoice, Some(603))
}

#[test]
fn three_declines_in_24h_suppress_counting_the_current_one() {
    // Report: the snapshot already holds the current outcome.
    let report = Case {
        history: history(vec![
            entry(ago(20 * HOUR), Category::Declined),
            entry(ago(HOUR), Category::RejectedUnwanted),
            entry(now(), Category::Declined),
        ]),
        includes_current: true,
        ..Case::default()
    };
    let d = report.decide(&Policy::builtin(), &declined());
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Stop, "declined-suppression")
    );
    assert!(d.suppressed && d.notify_user);
    assert!(d.explanation.starts_with("Declined 3 times within 24 h"));

    // Classify: the snapshot lacks it; the policy counts it in.
    let classify = Case {
        history: history(vec![
            entry(ago(20 * HOUR), Category::Declined),
            entry(ago(HOUR), Category::Declined),
        ]),
        ..Case::default()
    };
    assert!(classify.decide(&Policy::builtin(), &declined()).suppressed);

    // A third network block also suppresses, and still alerts.
    let c = class(Category::RejectedUnwanted, Fault::Network, Some(608));
    let d = classify.decide(&Policy::builtin(), &c);
    assert_eq!(d.rule, "blocked-suppression");
    assert!(d.suppressed && d.alert_operator);
}

#[test]
fn two_declines_or_old_ones_do_not_suppress() {
    let two = Case {
        history: history(vec![
            entry(ago(HOUR), Category::Declined),
            entry(now(), Category::Declined),
        ]),
        includes_current: true,
        ..Case::default()
    };
    let d = two.decide(&Policy::builtin(), &declined());
    assert_eq!(d.rule, "declined");
    assert!(!d.suppressed);

    let old = Case {
        history: history(vec![
            entry(ago(30 * HOUR), Category::Declined),
            entry(ago(25 * HOUR), Category::Declined),
            entry(ago(HOUR), Category::Declined),
        ]),
        ..Case::default()
    };
    assert_eq!(old.decide(&Policy::builtin(), &declined()).rule, "declined");

    // Other categories in the window do not count as declines.
    let busy = Case {
        history: history(vec![
            entry(ago(2 * HOUR), Category::Busy),
            entry(ago(HOUR), Category::Busy),
        ]),
        ..Case::default()
    };
    assert_eq!(
        busy.decide(&Policy::builtin(), &declined()).rule,
        "declined"
    );
}

// ---------------------------------------------------------------------------------
// Tenants
// ---------------------------------------------------------------------------------

const TENANTS: &str = r#"
[[tenants.acme.rules]]
name = "vip-busy"
category = ["busy"]
labels = { vip = "*" }
action = "retry_later"
retry = { initial = "30s", jitter = 0 }
explanation = "VIP busy: {rule} for {tenant}, in {delay}."

[[tenants.acme.rules]]
name = "polite-decline"
replaces = "declined"
category = ["declined"]
action = "stop"
explanation = "acme: declined."

[tenants.acme]
disable = ["declined-suppression"]

[tenants.acme.defaults]
max_attempts = 3
"#;

fn with_tenants() -> Policy {
    parse_ok(&format!("{DEFAULT_POLICY}\n{TENANTS}"))
}

#[test]
fn tenant_rules_come_first_and_are_named_after_the_tenant() {
    let policy = with_tenants();
    let mut case = Case {
        tenant: "acme",
        ..Case::default()
    };
    case.outcome.labels.insert("vip".into(), "gold".into());
    let d = case.decide(
        &policy,
        &class(Category::Busy, Fault::CalleeDevice, Some(486)),
    );
    assert_eq!(d.rule, "tenant:acme/vip-busy");
    assert_eq!(
        d.explanation,
        "VIP busy: tenant:acme/vip-busy for acme, in 30s."
    );

    // Other tenants get the global rules.
    case.tenant = "globex";
    let d = case.decide(
        &policy,
        &class(Category::Busy, Fault::CalleeDevice, Some(486)),
    );
    assert_eq!(d.rule, "busy");
}

#[test]
fn tenants_can_disable_replace_and_override_defaults() {
    let policy = with_tenants();
    let three_declines = |tenant| Case {
        tenant,
        history: history(vec![
            entry(ago(2 * HOUR), Category::Declined),
            entry(ago(HOUR), Category::Declined),
        ]),
        ..Case::default()
    };
    let d = three_declines("acme").decide(&policy, &declined());
    assert_eq!(d.rule, "tenant:acme/polite-decline");
    assert!(!d.suppressed);
    let d = three_declines("other").decide(&policy, &declined());
    assert_eq!(d.rule, "declined-suppression");

    // The replacement keeps the replaced rule's place: a temporary decline still
    // reaches declined-retry-after, which comes first.
    let c = with_ra(declined(), 600, RetryAfterScope::Callee);
    assert_eq!(
        three_declines("acme").decide(&policy, &c).rule,
        "declined-retry-after"
    );

    // acme's max_attempts is 3.
    let third = Case {
        tenant: "acme",
        outcome: outcome(Some(3)),
        ..Case::default()
    };
    let busy = class(Category::Busy, Fault::CalleeDevice, Some(486));
    let d = third.decide(&policy, &busy);
    assert_eq!(d.action, Action::Stop);
    assert!(d.explanation.contains("Attempt 3 of 3"));
    let names: Vec<String> = policy.rules_for("acme").map(|r| r.name).collect();
    assert_eq!(names[..2], ["tenant:acme/vip-busy", "answered"]);
    assert_eq!(policy.tenants().collect::<Vec<_>>(), vec!["acme"]);
}

// ---------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------

const MATCHING: &str = r#"
[[rules]]
name = "labels"
labels = { campaign = "renewals", vip = "*" }
action = "none"
explanation = "labels"

[[rules]]
name = "provider"
provider = ["Telnyx"]
action = "none"
explanation = "provider"

[[rules]]
name = "q850"
q850_cause = [17, 21]
action = "none"
explanation = "q850"

[[rules]]
name = "class-4"
sip_code = ["48x", 499]
action = "none"
explanation = "class-4"

[[rules]]
name = "server"
sip_code = ["5xx"]
retry_after = "none"
action = "none"
explanation = "server"

[[rules]]
name = "server-ra"
sip_code = ["5XX"]
retry_after = "route"
fault = ["network"]
action = "none"
explanation = "server-ra"

[[rules]]
name = "tenant"
tenant = ["acme"]
action = "none"
explanation = "tenant"

[[rules]]
name = "fallback"
action = "stop"
explanation = "fallback"
"#;

#[test]
fn conditions_match_labels_providers_codes_q850_and_tenants() {
    let policy = parse_ok(MATCHING);
    let rule = |case: &Case, c: &Classification| case.decide(&policy, c).rule;
    let other = class(Category::Other, Fault::Unknown, None);

    let mut case = Case::default();
    assert_eq!(rule(&case, &other), "fallback");
    case.outcome
        .labels
        .insert("campaign".into(), "renewals".into());
    assert_eq!(
        rule(&case, &other),
        "fallback",
        "all labels must be present"
    );
    case.outcome.labels.insert("vip".into(), "anything".into());
    assert_eq!(rule(&case, &other), "labels");
    case.outcome
        .labels
        .insert("campaign".into(), "winback".into());
    assert_eq!(
        rule(&case, &other),
        "fallback",
        "label values must be equal"
    );

    let mut case = Case::default();
    case.outcome.provider = Some(("telnyx".into(), "timeout".into()));
    assert_eq!(rule(&case, &other), "provider", "case-insensitive");
    case.outcome.provider = Some(("twilio".into(), "busy".into()));
    assert_eq!(rule(&case, &other), "fallback");

    let case = Case::default();
    let mut q = class(Category::Busy, Fault::CalleeDevice, Some(486));
    q.q850_cause = Some(17);
    assert_eq!(rule(&case, &q), "q850");
    q.q850_cause = Some(18);
    assert_eq!(rule(&case, &q), "class-4", "486 matches 48x");

    assert_eq!(
        rule(
            &case,
            &class(Category::Unavailable, Fault::CalleeDevice, Some(480))
        ),
        "class-4"
    );
    assert_eq!(
        rule(
            &case,
            &class(Category::ConfigError, Fault::CallerConfig, Some(403))
        ),
        "fallback"
    );
    // R1: a reported 499 has effective code 400; either matches.
    let mut unknown = class(Category::ConfigError, Fault::CallerConfig, Some(400));
    unknown.reported_sip_code = Some(499);
    assert_eq!(rule(&case, &unknown), "class-4");

    let server = class(Category::NetworkError, Fault::Network, Some(503));
    assert_eq!(rule(&case, &server), "server");
    let with_route = with_ra(server.clone(), 30, RetryAfterScope::Route);
    assert_eq!(rule(&case, &with_route), "server-ra");
    let mut wrong_fault = with_route;
    wrong_fault.fault = Fault::Unknown;
    assert_eq!(rule(&case, &wrong_fault), "fallback");

    let acme = Case {
        tenant: "acme",
        ..Case::default()
    };
    assert_eq!(rule(&acme, &other), "tenant");
}

// ---------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------

#[test]
fn templates_render_placeholders_labels_and_escapes() {
    let text = r#"
[[rules]]
name = "t"
action = "stop"
notify = true
message = "{{literal}} to={to} from={from} dest={destination} {label.name}/{label.missing}/"
explanation = "{rule}|{category}|{fault}|{sip_code}|{sip_phrase}|{q850_cause}|{provider}:{provider_cause}|{retry_after}|{retry_at}|{attempt}|{max_attempts}|{call_id}|{summary}|}}"
"#;
    let policy = parse_ok(text);
    let mut case = Case::default();
    case.outcome.labels.insert("name".into(), "Ada".into());
    case.outcome.provider = Some(("telnyx".into(), "user_busy".into()));
    let mut c = with_ra(
        class(Category::Busy, Fault::CalleeDevice, Some(486)),
        90,
        RetryAfterScope::Callee,
    );
    c.q850_cause = Some(17);
    let d = case.decide(&policy, &c);
    assert_eq!(
        d.user_message,
        "{literal} to=+15550000002 from=+15550000001 dest=+15550000002 Ada//"
    );
    assert_eq!(
        d.explanation,
        "t|busy|callee_device|486|Busy Here|17|telnyx:user_busy|1m 30s||1|5|call-1|Summary.|}"
    );
}

#[test]
fn retry_at_renders_rfc3339() {
    let policy = parse_ok(
        "[defaults]\njitter = 0\n[[rules]]\nname = \"r\"\naction = \"retry_later\"\nexplanation = \"{retry_at} {delay}\"\n",
    );
    let d = Case::default().decide(&policy, &class(Category::Busy, Fault::CalleeDevice, None));
    assert_eq!(d.explanation, "2025-06-15T15:08:40Z 2m");
}

#[test]
fn template_syntax_errors() {
    use template::Template;
    assert!(Template::parse("a {{b}} c").is_ok());
    assert_eq!(Template::parse("ab {nope} c").map_err(|e| e.offset), Err(3));
    assert_eq!(Template::parse("ab } c").map_err(|e| e.offset), Err(3));
    assert_eq!(Template::parse("ab {to").map_err(|e| e.offset), Err(3));
    assert_eq!(
        Template::parse("ab {to {from}").map_err(|e| e.offset),
        Err(3)
    );
    assert_eq!(Template::parse("{label.}").map_err(|e| e.offset), Err(0));
    assert_eq!(Template::parse("{}").map_err(|e| e.offset), Err(0));
}

// ---------------------------------------------------------------------------------
// Validation errors, each at its exact line and column
// ---------------------------------------------------------------------------------

fn assert_error(text: &str, line: usize, column: usize, needle: &str) {
    let e = parse_err(text);
    assert_eq!(
        (e.line, e.column),
        (line, column),
        "wrong location for {e}\n---\n{text}"
    );
    assert!(e.message.contains(needle), "`{needle}` not in: {e}");
    assert!(
        e.to_string()
            .starts_with(&format!("p.toml:{line}:{column}: "))
    );
}

fn rule_with(line: &str) -> String {
    format!("[[rules]]\nname = \"r\"\n{line}\naction = \"stop\"\nexplanation = \"x\"\n{CATCH_ALL}")
}

#[test]
fn syntax_errors_are_located() {
    assert_error("version = 1\n\nrules = [\n", 3, 10, "unclosed array");
    assert_error("[defaults]\ninitial = \"2m\nmax = \"1h\"\n", 2, 14, "");
}

#[test]
fn unknown_keys_and_wrong_types_are_located() {
    assert_error(
        &rule_with("colour = \"red\""),
        3,
        1,
        "unknown field `colour`",
    );
    assert_error(&rule_with("notify = \"yes\""), 3, 10, "invalid type");
    assert_error(
        &format!("[defaults]\nmax_attempts = \"5\"\n{CATCH_ALL}"),
        2,
        16,
        "invalid type",
    );
    assert_error(
        &format!("[defaults]\nretries = 5\n{CATCH_ALL}"),
        2,
        1,
        "unknown field `retries`",
    );
    assert_error(
        &format!("{CATCH_ALL}[tenants.acme]\nrule = []\n"),
        6,
        1,
        "unknown field `rule`",
    );
}

#[test]
fn unknown_names_are_located() {
    assert_error(
        &rule_with("category = [\"busy\", \"bussy\"]"),
        3,
        21,
        "unknown category `bussy`",
    );
    assert_error(
        &rule_with("fault = [\"mine\"]"),
        3,
        10,
        "unknown fault `mine`",
    );
    assert_error(
        &rule_with("alternatives = [\"fax\"]"),
        3,
        17,
        "unknown alternative `fax`",
    );
    assert_error(
        &rule_with("retry_after = \"sometimes\""),
        3,
        15,
        "unknown retry_after",
    );
    assert_error(
        "[[rules]]\nname = \"r\"\naction = \"redial\"\nexplanation = \"x\"\n",
        3,
        10,
        "unknown action `redial`",
    );
    assert_error(
        &rule_with("recent = { category = [\"decline\"], at_least = 3, within = \"1d\" }"),
        3,
        24,
        "unknown category `decline`",
    );
}

#[test]
fn bad_values_are_located() {
    assert_error(
        &format!("[defaults]\ninitial = \"2 minutes please\"\n{CATCH_ALL}"),
        2,
        11,
        "invalid duration",
    );
    assert_error(
        &format!("[defaults]\nmultiplier = 0.5\n{CATCH_ALL}"),
        2,
        14,
        "`multiplier`",
    );
    assert_error(
        &format!("[defaults]\njitter = 1.5\n{CATCH_ALL}"),
        2,
        10,
        "`jitter`",
    );
    assert_error(
        &format!("[defaults]\njitter = -0.1\n{CATCH_ALL}"),
        2,
        10,
        "`jitter`",
    );
    assert_error(
        &format!("[defaults]\nmax_attempts = 0\n{CATCH_ALL}"),
        2,
        16,
        "`max_attempts`",
    );
    assert_error(
        &rule_with("sip_code = [\"7xx\"]"),
        3,
        13,
        "invalid SIP code `7xx`",
    );
    assert_error(
        &rule_with("sip_code = [486, 150]"),
        3,
        18,
        "invalid SIP code `150`",
    );
    assert_error(
        &rule_with("sip_code = [\"5x\"]"),
        3,
        13,
        "invalid SIP code `5x`",
    );
    assert_error(&rule_with("sip_code = [4.5]"), 3, 13, "invalid SIP code");
    assert_error(&rule_with("q850_cause = [16, 200]"), 3, 19, "`q850_cause`");
    assert_error(&rule_with("category = []"), 3, 12, "`category` is empty");
    assert_error(
        &rule_with("attempt_at_least = 0"),
        3,
        20,
        "`attempt_at_least`",
    );
    assert_error(
        &rule_with("recent = { at_least = 3, within = \"soon\" }"),
        3,
        35,
        "invalid duration",
    );
    assert_error(&format!("version = 2\n{CATCH_ALL}"), 1, 11, "version");
    assert_error(
        "[[rules]]\nname = \"Bad Name\"\naction = \"stop\"\nexplanation = \"x\"\n",
        2,
        8,
        "invalid rule name",
    );
}

#[test]
fn templates_errors_point_at_the_placeholder() {
    assert_error(
        "[[rules]]\nname = \"r\"\naction = \"stop\"\nexplanation = \"Hi {nope}\"\n",
        4,
        19,
        "unknown placeholder `{nope}`",
    );
    assert_error(
        &rule_with("notify = true\nmessage = 'a } b'"),
        4,
        14,
        "unmatched `}`",
    );
    // With escapes in the TOML string the error points at the string itself.
    assert_error(
        &rule_with("message = \"\\t{oops}\""),
        3,
        11,
        "unknown placeholder",
    );
    assert_error(
        &format!("[defaults.at_limit]\nexplanation = \"{{attempts}}\"\n{CATCH_ALL}"),
        2,
        16,
        "unknown placeholder `{attempts}`",
    );
}

#[test]
fn structural_errors_are_located() {
    assert_error(
        &format!(
            "{}{CATCH_ALL}",
            "[[rules]]\nname = \"any\"\ncategory = [\"busy\"]\naction = \"stop\"\nexplanation = \"x\"\n"
        ),
        7,
        8,
        "duplicate rule name `any` (first defined on line 2)",
    );
    assert_error(
        &format!("{CATCH_ALL}[[rules]]\nname = \"late\"\naction = \"stop\"\nexplanation = \"x\"\n"),
        6,
        8,
        "can never match",
    );
    assert_error(
        "[[rules]]\nname = \"only\"\ncategory = [\"busy\"]\naction = \"stop\"\nexplanation = \"x\"\n",
        2,
        8,
        "must have none (a catch-all)",
    );
    assert_error("[defaults]\nmax_attempts = 3\n", 1, 1, "no [[rules]]");
    assert_error(
        &rule_with("retry = { initial = \"1m\" }"),
        3,
        9,
        "never retries",
    );
    assert_error(
        &rule_with("at_limit = { notify = true }"),
        3,
        12,
        "never retries",
    );
    assert_error(
        &rule_with("replaces = \"any\""),
        3,
        12,
        "only allowed in tenant rules",
    );
    assert_error(
        "[[rules]]\nname = \"r\"\naction = \"stop\"\n",
        1,
        1,
        "missing field `explanation`",
    );
}

#[test]
fn tenant_errors_are_located() {
    assert_error(
        &format!("{CATCH_ALL}[tenants.acme]\ndisable = [\"nope\"]\n"),
        6,
        12,
        "no global rule",
    );
    assert_error(
        &format!("{CATCH_ALL}[tenants.acme]\ndisable = [\"any\"]\n"),
        6,
        12,
        "leaves no catch-all",
    );
    assert_error(
        &format!(
            "{CATCH_ALL}[[tenants.acme.rules]]\nname = \"x\"\nreplaces = \"any\"\ncategory = [\"busy\"]\naction = \"stop\"\nexplanation = \"x\"\n"
        ),
        7,
        12,
        "leaves no catch-all",
    );
    assert_error(
        &format!(
            "{CATCH_ALL}[[tenants.acme.rules]]\nname = \"x\"\nreplaces = \"ghost\"\naction = \"stop\"\nexplanation = \"x\"\n"
        ),
        7,
        12,
        "no global rule",
    );
    assert_error(
        &format!(
            "{CATCH_ALL}[[tenants.acme.rules]]\nname = \"x\"\naction = \"stop\"\nexplanation = \"x\"\n[[tenants.acme.rules]]\nname = \"x\"\naction = \"stop\"\nexplanation = \"x\"\n"
        ),
        10,
        8,
        "duplicate rule name `x` in tenant `acme`",
    );
    // A tenant may replace the catch-all with another catch-all.
    parse_ok(&format!(
        "{CATCH_ALL}[[tenants.acme.rules]]\nname = \"mine\"\nreplaces = \"any\"\naction = \"none\"\nexplanation = \"x\"\n"
    ));
}

#[test]
fn an_error_on_line_17_is_reported_on_line_17() {
    let text = r#"# A policy with a typo far down.
version = 1

[defaults]
initial = "2m"
max_attempts = 5

[[rules]]
name = "answered"
category = ["answered"]
action = "none"
explanation = "Answered."

[[rules]]
name = "busy"
category = ["busy"]
action = "retry_latr"
explanation = "Busy."

[[rules]]
name = "other"
action = "stop"
explanation = "Other."
"#;
    let e = parse_err(text);
    assert_eq!((e.line, e.column), (17, 10), "{e}");
    assert_eq!(
        e.to_string(),
        "p.toml:17:10: unknown action `retry_latr`; expected one of: none, retry_later, \
         retry_now_alternate_route, stop, fix_number, fix_configuration"
    );
}

#[test]
fn line_column_counts_characters() {
    assert_eq!(parse::line_column("ab\ncé\nx", 0), (1, 1));
    assert_eq!(parse::line_column("ab\ncé\nx", 3), (2, 1));
    assert_eq!(parse::line_column("ab\ncé\nx", 7), (3, 1));
    assert_eq!(parse::line_column("ab\ncé\nx", 6), (2, 3));
    assert_eq!(parse::line_column("ab", 99), (1, 3));
}

// ---------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn category() -> impl Strategy<Value = Category> {
        proptest::sample::select(Category::ALL)
    }

    fn time() -> impl Strategy<Value = SystemTime> {
        prop_oneof![
            (0u64..4_000_000_000).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            (0u64..1_000_000).prop_map(|s| UNIX_EPOCH - Duration::from_secs(s)),
            Just(UNIX_EPOCH + Duration::from_secs(400_000_000_000)),
        ]
    }

    fn classification() -> impl Strategy<Value = Classification> {
        (
            category(),
            proptest::sample::select(Fault::ALL),
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u8>()),
            proptest::option::of((any::<u32>(), any::<bool>())),
        )
            .prop_map(|(cat, fault, code, reported, q850, ra)| {
                let mut c = class(cat, fault, code);
                c.reported_sip_code = reported;
                c.q850_cause = q850;
                c.retry_after = ra.map(|(seconds, callee)| AppliedRetryAfter {
                    seconds,
                    scope: if callee {
                        RetryAfterScope::Callee
                    } else {
                        RetryAfterScope::Route
                    },
                });
                c
            })
    }

    const EXTREME: &str = "[defaults]\ninitial = \"1s\"\nmultiplier = 1000\nmax = \"136years\"\njitter = 1\nmax_attempts = 1000\nmax_avoid_route = \"136years\"\n[[rules]]\nname = \"r\"\nrecent = { at_least = 1, within = \"136years\" }\naction = \"retry_now_alternate_route\"\nnotify = true\nexplanation = \"{retry_at} {delay} {avoid_route} {retry_after} {next_attempt} {cause}\"\n[[rules]]\nname = \"z\"\naction = \"retry_later\"\nexplanation = \"{retry_at}\"\n";

    proptest! {
        #[test]
        fn parse_never_panics(text in ".*") {
            let _ = Policy::parse(&text, "fuzz.toml");
        }

        #[test]
        fn parse_never_panics_on_policy_like_text(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("[[rules]]".to_owned()),
                    Just("[defaults]".to_owned()),
                    Just("[tenants.a]".to_owned()),
                    Just("[[tenants.a.rules]]".to_owned()),
                    "name = \"[a-z{}]{0,3}\"",
                    "action = \"(stop|none|retry_later|x)\"",
                    "explanation = \"[a-z{}. ]{0,12}\"",
                    "(category|fault|sip_code|alternatives|disable) = \\[\"[a-z0-9_x]{0,6}\"\\]",
                    "(initial|max|within|max_avoid_route) = \"[0-9]{0,3}[smhd ]{0,2}\"",
                    "(multiplier|jitter|max_attempts|attempt_at_least) = -?[0-9]{1,4}(\\.[0-9])?",
                    "replaces = \"[a-z]{0,3}\"",
                ],
                0..12,
            )
        ) {
            let _ = Policy::parse(&lines.join("\n"), "fuzz.toml");
        }

        #[test]
        fn decide_never_panics(
            c in classification(),
            attempt in proptest::option::of(any::<u32>()),
            entries in proptest::collection::vec((time(), category()), 0..8),
            now in time(),
            includes_current in any::<bool>(),
            seed in any::<u64>(),
            extreme in any::<bool>(),
        ) {
            let policy = if extreme {
                Policy::parse(EXTREME, "extreme.toml").expect("extreme policy")
            } else {
                Policy::builtin()
            };
            let history = history(entries.into_iter().map(|(at, cat)| entry(at, cat)).collect());
            let d = policy.decide(&PolicyInput {
                tenant: "t",
                outcome: &outcome(attempt),
                classification: &c,
                history: &history,
                includes_current,
                now,
                jitter_seed: seed,
            });
            prop_assert!(!d.rule.is_empty());
            prop_assert!(d.attempt >= 1);
            if let Some(retry) = &d.retry {
                prop_assert!(retry.not_before >= now);
                prop_assert!(retry.next_attempt >= d.attempt);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// One retry budget per destination; no-failover codes (#18 items 2 and 3)
// ---------------------------------------------------------------------------------

/// The whispey case (webhooks.md §4 F.16): one rule per SIP code, each allowing a single
/// retry (`max_attempts = 2`), and a dialer that starts every call at attempt 1. The
/// three codes share the destination's one budget, so only the first outcome retries.
#[test]
fn per_code_rules_share_one_retry_budget_per_destination() {
    let policy = parse_ok(
        "[defaults]\njitter = 0\n\
         [[rules]]\nname = \"busy\"\nsip_code = [486]\naction = \"retry_later\"\nretry = { max_attempts = 2 }\nexplanation = \"b\"\n\
         [[rules]]\nname = \"unavailable\"\nsip_code = [480]\naction = \"retry_later\"\nretry = { max_attempts = 2 }\nexplanation = \"u\"\n\
         [[rules]]\nname = \"timeout\"\nsip_code = [408]\naction = \"retry_later\"\nretry = { max_attempts = 2 }\nexplanation = \"t\"\n\
         [[rules]]\nname = \"any\"\naction = \"stop\"\nexplanation = \"x\"\n",
    );
    let mut entries = Vec::new();
    let mut retries = 0;
    for (i, (code, category)) in [
        (486, Category::Busy),
        (480, Category::Unavailable),
        (408, Category::NoAnswer),
    ]
    .into_iter()
    .enumerate()
    {
        // Each outcome joins the history before its decision, as a report's does.
        entries.push(HistoryEntry {
            sip_code: Some(code),
            ..entry(ago(600 - 100 * i as u64), category)
        });
        let case = Case {
            outcome: Outcome {
                call_id: format!("call-{i}"),
                ..outcome(Some(1))
            },
            history: history(entries.clone()),
            includes_current: true,
            ..Case::default()
        };
        let d = case.decide(&policy, &class(category, Fault::CalleeDevice, Some(code)));
        assert_eq!(d.attempt, i as u32 + 1, "{code}");
        if d.action == Action::RetryLater {
            retries += 1;
        }
    }
    assert_eq!(
        retries, 1,
        "one budget for the destination, not one per code"
    );
}

/// An answered call starts a new budget; a higher sent attempt still counts.
#[test]
fn the_budget_restarts_after_an_answer_and_respects_a_higher_sent_attempt() {
    let c = class(Category::Busy, Fault::CalleeDevice, Some(486));
    let after_answer = Case {
        history: history(vec![
            entry(ago(900), Category::Busy),
            entry(ago(800), Category::Answered),
            entry(ago(60), Category::Busy),
        ]),
        includes_current: true,
        ..Case::default()
    };
    assert_eq!(after_answer.decide(&Policy::builtin(), &c).attempt, 1);
    let sent_four = Case {
        outcome: outcome(Some(4)),
        ..Case::default()
    };
    assert_eq!(sent_four.decide(&Policy::builtin(), &c).attempt, 4);
}

const FAILOVER_ON_BUSY: &str = "[defaults]\njitter = 0\n\
    [[rules]]\nname = \"failover\"\nsip_code = [\"4xx\", \"5xx\"]\naction = \"retry_now_alternate_route\"\nexplanation = \"Another route.\"\n\
    [[rules]]\nname = \"any\"\naction = \"stop\"\nexplanation = \"x\"\n\
    [tenants.acme]\nno_failover_codes = [486, 603, 480]\n";

#[test]
fn no_failover_codes_keep_a_reached_callee_on_the_same_route() {
    let policy = parse_ok(FAILOVER_ON_BUSY);
    let busy = class(Category::Busy, Fault::CalleeDevice, Some(486));
    let acme = Case {
        tenant: "acme",
        ..Case::default()
    };
    let d = acme.decide(&policy, &busy);
    assert_eq!(d.action, Action::RetryLater);
    assert_eq!(d.rule, "failover");
    assert!(d.retry.is_some(), "the same-route plan is kept");
    assert!(
        d.explanation
            .ends_with("No failover on 486 for tenant `acme` (no_failover_codes): retrying on the same route instead of another one."),
        "{}",
        d.explanation
    );
    // A code not on the list, and another tenant: failover as the rule says.
    let unavailable = class(Category::NetworkError, Fault::Network, Some(503));
    assert_eq!(
        acme.decide(&policy, &unavailable).action,
        Action::RetryNowAlternateRoute
    );
    let globex = Case {
        tenant: "globex",
        ..Case::default()
    };
    assert_eq!(
        globex.decide(&policy, &busy).action,
        Action::RetryNowAlternateRoute
    );
    // The reported code counts too (an override or mapping may change the effective one).
    let mut remapped = class(Category::Unavailable, Fault::CalleeDevice, Some(503));
    remapped.reported_sip_code = Some(480);
    let reported = Case {
        tenant: "acme",
        outcome: Outcome {
            sip_code: Some(480),
            ..outcome(Some(1))
        },
        ..Case::default()
    };
    assert_eq!(
        reported.decide(&policy, &remapped).action,
        Action::RetryLater
    );
}

#[test]
fn no_failover_codes_are_checked_at_load() {
    let base = "[defaults]\n[[rules]]\nname = \"any\"\naction = \"stop\"\nexplanation = \"x\"\n[tenants.acme]\n";
    assert_error(
        &format!("{base}no_failover_codes = [486, 200]\n"),
        7,
        27,
        "not a final SIP failure code",
    );
    assert_error(
        &format!("{base}no_failover_codes = [486, 486]\n"),
        7,
        27,
        "lists 486 twice",
    );
}

/// Every decision names the policy that made it: a content hash of the file's text.
#[test]
fn decisions_carry_the_policys_content_version() {
    let builtin = Policy::builtin();
    let version = builtin.version().to_owned();
    assert_eq!(version.len(), 12);
    assert!(version.bytes().all(|b| b.is_ascii_hexdigit()));
    let d = builtin_decide(&class(Category::Declined, Fault::CalleeChoice, Some(603)));
    assert_eq!(&*d.policy_version, version);
    // The same text is the same version; another text another.
    assert_eq!(parse_ok(DEFAULT_POLICY).version(), version);
    let edited = DEFAULT_POLICY.replace("initial = \"2m\"", "initial = \"3m\"");
    assert_ne!(edited, DEFAULT_POLICY);
    assert_ne!(parse_ok(&edited).version(), version);
}
