//! The handling policy: a TOML policy file + a destination's history → [`Decision`].
//!
//! This module owns the policy language (parsing, validation, evaluation), the built-in
//! default policy (`default.toml`, embedded) and the [`Decision`] type. It is **pure**:
//! it must not read files (callers pass the text), read the clock (`now` is an input),
//! draw random numbers (jitter comes from `jitter_seed`) or log. Classification happens
//! before it (`crate::classify`); recording history and publishing events after it.
//!
//! # Policy file format (version 1)
//!
//! ```toml
//! version = 1                       # optional; only 1 is accepted
//!
//! [defaults]                        # all optional; built-in values shown
//! initial = "2m"                    # first retry delay (humantime: "90s", "1h 30m")
//! multiplier = 2.0                  # delay = initial × multiplier^(attempt-1); 1..=1000
//! max = "4h"                        # cap of the exponential part
//! jitter = 0.2                      # adds up to 20 % (0..=1); never shortens a delay
//! max_attempts = 5                  # a retry at attempt ≥ max_attempts becomes `stop`
//! max_avoid_route = "1h"            # clamp of a route-scope Retry-After (Kamailio: 3600 s)
//! max_retry_after = "7d"            # clamp of a callee-scope Retry-After (said in the explanation)
//! [defaults.at_limit]               # what a retry rule says when it hits max_attempts
//! explanation = "{summary} Attempt {attempt} of {max_attempts} reached: …"
//! # notify = true, message = "…", alternatives = ["sms"] (default: the rule's own)
//!
//! [[rules]]                         # evaluated in order; the first match wins
//! name = "declined"                 # [a-z0-9_-]+, unique; reported as `decision.rule`
//! description = "…"                 # optional, for listings
//! # Conditions: all optional and AND-ed; every list is OR-ed.
//! category = ["declined"]           # classification category
//! sip_code = [603, "5xx", "48x"]    # effective or reported code; 200-699 or class pattern
//! q850_cause = [17, 21]
//! provider = ["telnyx"]             # case-insensitive
//! labels = { campaign = "renewals", vip = "*" }   # all must be present; "*" = any value
//! tenant = ["acme"]
//! fault = ["callee_choice"]
//! retryable = ["later"]             # classification retryability
//! retry_after = "callee"            # callee | route | any | none (a valid Retry-After)
//! attempt_at_least = 3              # the attempt number (sent, or derived from history)
//! recent = { category = ["declined"], at_least = 3, within = "24h" }  # history, incl. this outcome
//! # What to decide.
//! action = "stop"                   # none | retry_later | retry_now_alternate_route |
//!                                   # stop | fix_number | fix_configuration
//! notify = true                     # default false
//! message = "The recipient declined the call."     # template; default "{summary}"
//! alternatives = ["sms", "callback"]  # sms | callback | email | voicemail | contact_target
//! alert_operator = false
//! suppress = false                  # sets `decision.suppressed`
//! retry = { initial = "5m", max_attempts = 3 }    # per-rule [defaults] overrides (retry actions only)
//! at_limit = { explanation = "…" }                # per-rule [defaults.at_limit] overrides
//! explanation = "Declined by the recipient ({cause}): not redialled automatically."
//!
//! [tenants.acme]                    # per-tenant overrides
//! disable = ["declined-suppression"]  # global rules to skip for this tenant
//! no_failover_codes = [486, 603]    # never retry_now_alternate_route on these codes
//! [tenants.acme.defaults]           # overrides [defaults] field by field
//! max_attempts = 3
//! [[tenants.acme.rules]]            # evaluated before the global rules...
//! name = "vip-busy"                 # ...reported as `tenant:acme/vip-busy`
//! replaces = "busy"                 # optional: take the place of a global rule instead
//! category = ["busy"]
//! action = "retry_later"
//! retry = { initial = "30s" }
//! explanation = "VIP line busy ({cause}); retrying at {retry_at}."
//! ```
//!
//! **Catch-all.** The last global rule must have no conditions, so that every
//! outcome gets a decision; rules after a condition-less rule are rejected as
//! unreachable, and a tenant may not disable or replace the catch-all without keeping
//! one of its own. There is no hidden fallback.
//!
//! **Retry.** For `retry_later` and `retry_now_alternate_route`:
//! `backoff = min(initial × multiplier^(attempt−1), max) × (1 + jitter × u)` where
//! `u ∈ [0, 1)` is derived from `jitter_seed`. A callee-scope Retry-After raises the
//! delay to at least its value; a route-scope one sets `avoid_route_seconds`
//! (clamped to `max_avoid_route`) for any action, and raises the same-route delay to at
//! least that clamped value. `honours_retry_after` says the Retry-After won. For
//! `retry_now_alternate_route` the alternate route is tried at once; `retry` describes
//! the same-route fallback. When `attempt ≥ max_attempts` a retry action becomes `stop`
//! with the `at_limit` explanation.
//!
//! **Attempt** (what `max_attempts` budgets): one budget per destination. The number
//! of unanswered outcomes to the destination since the last answered one in the history
//! window, counting this one, whatever their codes, call ids or rules; or the outcome's
//! `attempt` when it is sent and higher. Minimum 1.
//!
//! **No failover.** A tenant's `no_failover_codes` turn a `retry_now_alternate_route`
//! decision into `retry_later` (the same-route plan) when the reported or effective code
//! is listed; the explanation says the guard applied.
//!
//! **Templates** (`message`, `explanation`, `at_limit.*`): `{to}`, `{from}`,
//! `{destination}`, `{category}`, `{fault}`, `{summary}`, `{cause}` (e.g. "603 Decline",
//! "Q.850 cause 17", "telnyx cause `timeout`"), `{sip_code}`, `{sip_phrase}`,
//! `{q850_cause}`, `{provider}`, `{provider_cause}`, `{retry_after}` (e.g. "2h"),
//! `{retry_at}` (RFC 3339), `{delay}`, `{avoid_route}`, `{attempt}`, `{next_attempt}`,
//! `{max_attempts}`, `{rule}`, `{tenant}`, `{call_id}`, `{label.<key>}`; absent values
//! render as "". `{{` and `}}` are literal braces. Unknown placeholders are errors.
//!
//! **Errors.** Every problem (TOML syntax, unknown keys, wrong types, unknown names,
//! bad durations, codes or templates, duplicate names, out-of-range numbers, a missing
//! catch-all) is a [`PolicyError`] at the line and column of the offending value.

#[cfg(test)]
mod override_tests;
mod parse;
mod template;
#[cfg(test)]
mod tests;

pub use parse::PolicyError;
pub use template::PLACEHOLDERS;

use crate::classify::{self, ClassifyError, LabelMatch, Overrides};
use crate::domain::{
    Action, Alternative, Category, Classification, Decision, Fault, RetryAfterScope, RetryPlan,
    Retryable,
};
use crate::domain::{HistorySnapshot, Outcome};
use crate::sip::CodePattern;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};
use template::{RenderContext, Template};

/// The built-in policy's text (also what `call-outcome` documents as the default).
pub const DEFAULT_POLICY: &str = include_str!("default.toml");

/// The origin used in messages about the built-in policy.
const BUILTIN_ORIGIN: &str = "<built-in default.toml>";

static BUILTIN: LazyLock<Policy> =
    LazyLock::new(|| match Policy::parse(DEFAULT_POLICY, BUILTIN_ORIGIN) {
        Ok(policy) => policy,
        // default.toml is compiled in and covered by tests, so this is a build defect.
        Err(e) => panic!("the built-in policy is invalid: {e}"),
    });

/// A validated, compiled policy. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The first 12 hex digits of the SHA-256 of the policy's text; every decision
    /// carries it.
    version: std::sync::Arc<str>,
    /// `[[overrides]]`, global and per tenant: applied by the classifier.
    overrides: Overrides,
    /// Every rule, global and tenant; plans refer to them by index.
    rules: Vec<Rule>,
    global: Plan,
    tenants: BTreeMap<String, Plan>,
}

/// Everything one decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    pub tenant: &'a str,
    pub outcome: &'a Outcome,
    pub classification: &'a Classification,
    /// For a report it includes the current outcome as its last entry; for Classify it
    /// does not (see `includes_current`).
    pub history: &'a HistorySnapshot,
    pub includes_current: bool,
    pub now: SystemTime,
    /// Deterministic jitter source (the caller hashes tenant, call id and attempt).
    pub jitter_seed: u64,
}

/// One rule as evaluated for a tenant, for listings (`call-outcome policy`, README).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSummary {
    /// As reported in `decision.rule` (`busy`, `tenant:acme/vip-busy`).
    pub name: String,
    pub description: String,
    /// The conditions in the file's syntax, or "(any outcome)" for a catch-all.
    pub conditions: String,
    pub action: Action,
    pub notify: bool,
    pub alternatives: Vec<Alternative>,
    pub alert_operator: bool,
    pub suppress: bool,
}

impl Policy {
    /// The embedded default policy (`src/policy/default.toml`).
    pub fn builtin() -> Policy {
        BUILTIN.clone()
    }

    /// Parses and validates a policy file; `origin` (the file name) prefixes errors.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let mut policy = parse::parse(text, origin)?;
        policy.version = version_of(text);
        Ok(policy)
    }

    /// What decisions name as `policy_version`: a content hash, so the same text is
    /// the same version on every replica and across restarts.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The override table the classifier applies for this policy.
    pub fn overrides(&self) -> &Overrides {
        &self.overrides
    }

    /// Classifies an outcome of `tenant` under this policy: the rules, then its overrides.
    pub fn classify(
        &self,
        tenant: &str,
        outcome: &Outcome,
    ) -> Result<Classification, ClassifyError> {
        classify::classify_for(tenant, outcome, &self.overrides)
    }

    /// Number of overrides in the file (global and tenant overrides).
    pub fn override_count(&self) -> usize {
        self.overrides.len()
    }

    /// Number of rules in the file (global and tenant rules).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Tenants with their own section.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }

    /// The global rules, in evaluation order.
    pub fn rules(&self) -> impl Iterator<Item = RuleSummary> + '_ {
        self.summaries(&self.global)
    }

    /// The rules evaluated for `tenant`, in order (the global ones when it has no section).
    pub fn rules_for(&self, tenant: &str) -> impl Iterator<Item = RuleSummary> + '_ {
        self.summaries(self.plan(tenant))
    }

    fn summaries<'p>(&'p self, plan: &'p Plan) -> impl Iterator<Item = RuleSummary> + 'p {
        plan.entries.iter().filter_map(|entry| {
            let rule = self.rules.get(entry.rule)?;
            Some(RuleSummary {
                name: entry.name.clone(),
                description: rule.description.clone(),
                conditions: rule.conditions.describe(),
                action: rule.action,
                notify: rule.notify,
                alternatives: rule.alternatives.clone(),
                alert_operator: rule.alert_operator,
                suppress: rule.suppress,
            })
        })
    }

    fn plan(&self, tenant: &str) -> &Plan {
        self.tenants.get(tenant).unwrap_or(&self.global)
    }

    /// Decides how to handle one outcome. Never fails: validation guarantees a
    /// catch-all rule.
    pub fn decide(&self, input: &PolicyInput<'_>) -> Decision {
        let plan = self.plan(input.tenant);
        let attempt = derive_attempt(input);
        for entry in &plan.entries {
            let Some(rule) = self.rules.get(entry.rule) else {
                continue;
            };
            if rule.conditions.matches(input, attempt) {
                return build(plan, entry, rule, input, attempt, &self.version);
            }
        }
        unmatched(input, attempt, &self.version)
    }
}

/// The attempt number that `max_attempts` budgets: one budget per destination. It is the
/// run of unanswered outcomes to the destination in the history window ending with this
/// one, across call ids, codes and rules, or the attempt the caller sent when that is
/// higher. So outcomes that alternate codes (486, 480, 408) share one budget instead of
/// each rule's counting from 1.
fn derive_attempt(input: &PolicyInput<'_>) -> u32 {
    let sent = input.outcome.attempt.unwrap_or(0);
    sent.max(unanswered_run(input))
}

/// Unanswered outcomes since the last answered one in the window, counting this one.
fn unanswered_run(input: &PolicyInput<'_>) -> u32 {
    let entries = &input.history.entries;
    // Leave the current outcome out, then count it back in: an answered call on the
    // third try is attempt 3, not 1.
    let earlier = if input.includes_current {
        entries
            .get(..entries.len().saturating_sub(1))
            .unwrap_or(&[])
    } else {
        entries
    };
    let unanswered = earlier
        .iter()
        .rev()
        .take_while(|e| e.category != Category::Answered)
        .count();
    u32::try_from(unanswered.saturating_add(1)).unwrap_or(u32::MAX)
}

fn build(
    plan: &Plan,
    entry: &PlanEntry,
    rule: &Rule,
    input: &PolicyInput<'_>,
    attempt: u32,
    version: &std::sync::Arc<str>,
) -> Decision {
    let settings = plan.defaults.retry.with(&rule.retry);
    let retry_after = input.classification.retry_after;
    let avoid_route_seconds = match retry_after {
        Some(ra) if ra.scope == RetryAfterScope::Route => ra.seconds.min(settings.max_avoid_route),
        _ => 0,
    };
    let retries = matches!(
        rule.action,
        Action::RetryLater | Action::RetryNowAlternateRoute
    );
    let at_limit = retries && attempt >= settings.max_attempts;

    let retry = (retries && !at_limit).then(|| {
        let backoff = settings.backoff_seconds(attempt, input.jitter_seed);
        // The earliest moment the callee or the route accepts another try.
        let floor = match retry_after {
            Some(ra) if ra.scope == RetryAfterScope::Callee => {
                Some(ra.seconds.min(settings.max_retry_after))
            }
            Some(_) => Some(avoid_route_seconds),
            None => None,
        };
        let (delay, honours_retry_after) = match floor {
            Some(floor) if floor >= backoff => (floor, true),
            _ => (backoff, false),
        };
        RetryPlan {
            not_before: input
                .now
                .checked_add(Duration::from_secs(u64::from(delay)))
                .unwrap_or(input.now),
            delay_seconds: delay,
            next_attempt: attempt.saturating_add(1),
            max_attempts: settings.max_attempts,
            honours_retry_after,
        }
    });

    let limit = &rule.at_limit;
    let defaults = &plan.defaults.at_limit;
    let (action, notify, message, alternatives, explanation) = if at_limit {
        (
            Action::Stop,
            limit.notify.or(defaults.notify).unwrap_or(rule.notify),
            limit
                .message
                .as_ref()
                .or(defaults.message.as_ref())
                .or(rule.message.as_ref()),
            limit
                .alternatives
                .as_ref()
                .or(defaults.alternatives.as_ref())
                .unwrap_or(&rule.alternatives),
            limit.explanation.as_ref().or(defaults.explanation.as_ref()),
        )
    } else {
        (
            rule.action,
            rule.notify,
            rule.message.as_ref(),
            &rule.alternatives,
            Some(&rule.explanation),
        )
    };
    // The tenant's guard: the callee was reached (or the tenant says so for this code),
    // so another route would only ring them again. Whatever rule matched.
    let guarded = (action == Action::RetryNowAlternateRoute)
        .then(|| no_failover_code(plan, input))
        .flatten();
    let action = if guarded.is_some() {
        Action::RetryLater
    } else {
        action
    };

    let cx = RenderContext {
        outcome: input.outcome,
        classification: input.classification,
        destination: &input.history.destination,
        tenant: input.tenant,
        rule: &entry.name,
        attempt,
        max_attempts: settings.max_attempts,
        retry_at: retry.as_ref().map(|r| r.not_before),
        delay_seconds: retry.as_ref().map(|r| r.delay_seconds),
        avoid_route_seconds,
    };
    let user_message = match (notify, message) {
        (false, _) => String::new(),
        (true, Some(template)) => template.render(&cx),
        (true, None) => input.classification.summary.to_string(),
    };
    let mut explanation = match explanation {
        Some(template) => template.render(&cx),
        // Parsing always fills the built-in at-limit explanation; keep a plain one anyway.
        None => format!(
            "Attempt {attempt} of {} reached: not redialled automatically.",
            settings.max_attempts
        ),
    };
    if let Some(code) = guarded {
        let _ = write!(
            explanation,
            " No failover on {code} for tenant `{}` (no_failover_codes): retrying on the same \
             route instead of another one.",
            input.tenant
        );
    }
    // A retry that waits less than the callee asked says so, whatever the template.
    if let (Some(ra), Some(_)) = (retry_after, &retry)
        && ra.scope == RetryAfterScope::Callee
        && ra.seconds > settings.max_retry_after
    {
        explanation.push_str(" The callee's Retry-After (");
        template::write_duration(ra.seconds, &mut explanation);
        explanation.push_str(") was capped at ");
        template::write_duration(settings.max_retry_after, &mut explanation);
        explanation.push_str(" (policy max_retry_after).");
    }
    Decision {
        action,
        notify_user: notify,
        user_message,
        alternatives: alternatives.clone(),
        retry,
        avoid_route_seconds,
        alert_operator: rule.alert_operator,
        suppressed: rule.suppress,
        rule: entry.name.clone(),
        explanation,
        attempt,
        policy_version: std::sync::Arc::clone(version),
    }
}

/// The first 12 hex digits of the SHA-256 of a policy's text: the version
/// [`Policy::parse`] gives it (a reload compares texts by it before parsing).
pub fn version_of(text: &str) -> std::sync::Arc<str> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest
        .iter()
        .take(6)
        .fold(String::with_capacity(12), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
        .into()
}

/// The reported or effective SIP code when the plan forbids failover on it.
fn no_failover_code(plan: &Plan, input: &PolicyInput<'_>) -> Option<u16> {
    let reported = input.outcome.sip_code.and_then(|c| u16::try_from(c).ok());
    [input.classification.sip_code, reported]
        .into_iter()
        .flatten()
        .find(|code| plan.no_failover_codes.contains(code))
}

/// Only reachable if validation let a plan without a catch-all through.
fn unmatched(input: &PolicyInput<'_>, attempt: u32, version: &std::sync::Arc<str>) -> Decision {
    Decision {
        action: Action::Stop,
        notify_user: false,
        user_message: String::new(),
        alternatives: Vec::new(),
        retry: None,
        avoid_route_seconds: 0,
        alert_operator: true,
        suppressed: false,
        rule: "builtin:unmatched".into(),
        explanation: format!(
            "No policy rule matched a {} outcome: not redialled; operator alerted.",
            input.classification.category
        ),
        attempt,
        policy_version: std::sync::Arc::clone(version),
    }
}

// ---------------------------------------------------------------------------------
// Compiled policy (built by `parse`).
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    description: String,
    conditions: Conditions,
    action: Action,
    notify: bool,
    message: Option<Template>,
    alternatives: Vec<Alternative>,
    alert_operator: bool,
    suppress: bool,
    retry: RetryOverrides,
    at_limit: AtLimit,
    explanation: Template,
}

/// The evaluation order for one tenant (or the global one).
#[derive(Debug, Clone)]
struct Plan {
    entries: Vec<PlanEntry>,
    defaults: Defaults,
    /// `[tenants.<t>] no_failover_codes`: a reported or effective code among these turns
    /// `retry_now_alternate_route` into `retry_later` on the same route.
    no_failover_codes: Vec<u16>,
}

#[derive(Debug, Clone)]
struct PlanEntry {
    /// Index into `Policy::rules`.
    rule: usize,
    /// Name as reported in decisions.
    name: String,
}

#[derive(Debug, Clone)]
struct Defaults {
    retry: RetrySettings,
    at_limit: AtLimit,
}

#[derive(Debug, Clone, PartialEq)]
struct RetrySettings {
    initial: Duration,
    multiplier: f64,
    max: Duration,
    jitter: f64,
    max_attempts: u32,
    max_avoid_route: u32,
    max_retry_after: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct RetryOverrides {
    initial: Option<Duration>,
    multiplier: Option<f64>,
    max: Option<Duration>,
    jitter: Option<f64>,
    max_attempts: Option<u32>,
    max_avoid_route: Option<u32>,
    max_retry_after: Option<u32>,
}

impl RetrySettings {
    fn with(&self, o: &RetryOverrides) -> RetrySettings {
        RetrySettings {
            initial: o.initial.unwrap_or(self.initial),
            multiplier: o.multiplier.unwrap_or(self.multiplier),
            max: o.max.unwrap_or(self.max),
            jitter: o.jitter.unwrap_or(self.jitter),
            max_attempts: o.max_attempts.unwrap_or(self.max_attempts),
            max_avoid_route: o.max_avoid_route.unwrap_or(self.max_avoid_route),
            max_retry_after: o.max_retry_after.unwrap_or(self.max_retry_after),
        }
    }

    /// Exponential backoff for the retry after `attempt`, with jitter that only ever
    /// lengthens the delay, so `initial` is a true minimum (VICIdial's 120 s recycle).
    fn backoff_seconds(&self, attempt: u32, seed: u64) -> u32 {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let cap = self.max.as_secs_f64();
        let initial = self.initial.as_secs_f64();
        // 0 × ∞ would be NaN once the power overflows.
        let base = if initial == 0.0 {
            0.0
        } else {
            (initial * self.multiplier.powi(exponent)).min(cap)
        };
        let delay = base * (1.0 + self.jitter * unit_interval(seed));
        // Float-to-int `as` saturates (and maps NaN to 0), which is what we want here.
        delay.round() as u32
    }
}

/// A uniform value in [0, 1) from a seed (SplitMix64 finaliser): deterministic jitter.
fn unit_interval(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// What a retry rule does when it reaches `max_attempts`; unset fields fall back.
#[derive(Debug, Clone, Default)]
struct AtLimit {
    explanation: Option<Template>,
    notify: Option<bool>,
    message: Option<Template>,
    alternatives: Option<Vec<Alternative>>,
}

impl AtLimit {
    /// These values, falling back to `base` field by field.
    fn or(self, base: &AtLimit) -> AtLimit {
        AtLimit {
            explanation: self.explanation.or_else(|| base.explanation.clone()),
            notify: self.notify.or(base.notify),
            message: self.message.or_else(|| base.message.clone()),
            alternatives: self.alternatives.or_else(|| base.alternatives.clone()),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Conditions {
    categories: Vec<Category>,
    sip_codes: Vec<CodePattern>,
    q850_causes: Vec<u8>,
    /// Lower-case.
    providers: Vec<String>,
    labels: Vec<(String, LabelMatch)>,
    tenants: Vec<String>,
    retry_after: Option<RetryAfterCond>,
    faults: Vec<Fault>,
    retryables: Vec<Retryable>,
    recent: Option<Recent>,
    attempt_at_least: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetryAfterCond {
    Callee,
    Route,
    Any,
    None,
}

#[derive(Debug, Clone)]
struct Recent {
    /// Empty: every category.
    categories: Vec<Category>,
    at_least: u32,
    within: Duration,
}

impl Recent {
    fn counts(&self, category: Category) -> bool {
        self.categories.is_empty() || self.categories.contains(&category)
    }

    /// Matching outcomes within the window, the current one included.
    fn count(&self, input: &PolicyInput<'_>) -> usize {
        // A window reaching before the clock's range covers the whole history.
        let since = input.now.checked_sub(self.within);
        let past = input
            .history
            .entries
            .iter()
            .filter(|e| self.counts(e.category) && since.is_none_or(|s| e.at >= s))
            .count();
        // A Classify call's snapshot lacks the outcome being decided; count it here so
        // that Classify and Report agree.
        let current =
            usize::from(!input.includes_current && self.counts(input.classification.category));
        past.saturating_add(current)
    }
}

impl Conditions {
    fn is_catch_all(&self) -> bool {
        self.categories.is_empty()
            && self.sip_codes.is_empty()
            && self.q850_causes.is_empty()
            && self.providers.is_empty()
            && self.labels.is_empty()
            && self.tenants.is_empty()
            && self.retry_after.is_none()
            && self.faults.is_empty()
            && self.retryables.is_empty()
            && self.recent.is_none()
            && self.attempt_at_least.is_none()
    }

    fn matches(&self, input: &PolicyInput<'_>, attempt: u32) -> bool {
        let c = input.classification;
        let outcome = input.outcome;
        (self.categories.is_empty() || self.categories.contains(&c.category))
            && (self.faults.is_empty() || self.faults.contains(&c.fault))
            && (self.retryables.is_empty() || self.retryables.contains(&c.retryable))
            && (self.sip_codes.is_empty()
                || self.sip_codes.iter().any(|p| {
                    c.sip_code.is_some_and(|code| p.matches(code))
                        || c.reported_sip_code.is_some_and(|code| p.matches(code))
                }))
            && (self.q850_causes.is_empty()
                || c.q850_cause.is_some_and(|q| self.q850_causes.contains(&q)))
            && (self.providers.is_empty()
                || outcome.provider.as_ref().is_some_and(|(name, _)| {
                    self.providers.iter().any(|p| p.eq_ignore_ascii_case(name))
                }))
            && self
                .labels
                .iter()
                .all(|(key, want)| want.matches(outcome.labels.get(key)))
            && (self.tenants.is_empty() || self.tenants.iter().any(|t| t == input.tenant))
            && self.retry_after.is_none_or(|want| {
                let scope = c.retry_after.map(|ra| ra.scope);
                match want {
                    RetryAfterCond::Callee => scope == Some(RetryAfterScope::Callee),
                    RetryAfterCond::Route => scope == Some(RetryAfterScope::Route),
                    RetryAfterCond::Any => scope.is_some(),
                    RetryAfterCond::None => scope.is_none(),
                }
            })
            && self.attempt_at_least.is_none_or(|n| attempt >= n)
            // Last: the only condition that walks the history.
            && self
                .recent
                .as_ref()
                .is_none_or(|r| r.count(input) >= r.at_least as usize)
    }

    /// The conditions in the file's syntax, for listings.
    fn describe(&self) -> String {
        fn list<T: std::fmt::Display>(items: &[T], quote: bool) -> String {
            let parts: Vec<String> = items
                .iter()
                .map(|i| {
                    if quote {
                        format!("\"{i}\"")
                    } else {
                        i.to_string()
                    }
                })
                .collect();
            format!("[{}]", parts.join(", "))
        }
        let mut parts = Vec::new();
        if !self.categories.is_empty() {
            parts.push(format!("category = {}", list(&self.categories, true)));
        }
        if !self.sip_codes.is_empty() {
            parts.push(format!("sip_code = {}", list(&self.sip_codes, false)));
        }
        if !self.q850_causes.is_empty() {
            parts.push(format!("q850_cause = {}", list(&self.q850_causes, false)));
        }
        if !self.providers.is_empty() {
            parts.push(format!("provider = {}", list(&self.providers, true)));
        }
        if !self.labels.is_empty() {
            let mut s = String::from("labels = { ");
            for (i, (k, m)) in self.labels.iter().enumerate() {
                let v = match m {
                    LabelMatch::Present => "*",
                    LabelMatch::Equals(v) => v,
                };
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(s, "{sep}{k} = \"{v}\"");
            }
            s.push_str(" }");
            parts.push(s);
        }
        if !self.tenants.is_empty() {
            parts.push(format!("tenant = {}", list(&self.tenants, true)));
        }
        if !self.faults.is_empty() {
            parts.push(format!("fault = {}", list(&self.faults, true)));
        }
        if !self.retryables.is_empty() {
            parts.push(format!("retryable = {}", list(&self.retryables, true)));
        }
        if let Some(ra) = self.retry_after {
            let name = match ra {
                RetryAfterCond::Callee => "callee",
                RetryAfterCond::Route => "route",
                RetryAfterCond::Any => "any",
                RetryAfterCond::None => "none",
            };
            parts.push(format!("retry_after = \"{name}\""));
        }
        if let Some(n) = self.attempt_at_least {
            parts.push(format!("attempt_at_least = {n}"));
        }
        if let Some(r) = &self.recent {
            let cats = if r.categories.is_empty() {
                String::new()
            } else {
                format!("category = {}, ", list(&r.categories, true))
            };
            parts.push(format!(
                "recent = {{ {cats}at_least = {}, within = \"{}\" }}",
                r.at_least,
                humantime::format_duration(r.within)
            ));
        }
        if parts.is_empty() {
            "(any outcome)".into()
        } else {
            parts.join("; ")
        }
    }
}
