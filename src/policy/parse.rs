//! Policy file loading: TOML text → validated, compiled [`Policy`].
//!
//! Owns the file format's serde shape (every table denies unknown keys), all semantic
//! validation and the byte-offset → line/column conversion behind [`PolicyError`].
//! Every error points at the offending value, so keep `Spanned` on anything that can be
//! wrong. This module must not read files (the caller passes the text) or decide
//! anything: evaluation lives in `mod.rs`.

use super::template::Template;
use super::{
    AtLimit, Conditions, Defaults, Plan, PlanEntry, Policy, Recent, RetryAfterCond, RetryOverrides,
    RetrySettings, Rule,
};
use crate::classify::{
    LabelMatch, Override, OverrideConditions, OverrideEffect, Overrides, ReasonPattern,
};
use crate::domain::{Action, Alternative};
use crate::domain::{Category, Retryable, UnknownName};
use crate::sip::CodePattern;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// A policy file that cannot be used, located at the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct PolicyError {
    /// The file name given to [`Policy::parse`].
    pub origin: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    pub message: String,
}

// ---------------------------------------------------------------------------------
// The file's serde shape. Values that can be semantically wrong keep their span.
// ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Option<Spanned<i64>>,
    defaults: Option<RawDefaults>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    overrides: Vec<RawOverride>,
    #[serde(default)]
    tenants: BTreeMap<String, RawTenant>,
}

/// `[[overrides]]`: conditions named as a rule's, plus `provider_cause` and
/// `reason_phrase`; effects `category`, `fault`, `retryable`, `summary`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    name: Spanned<String>,
    description: Option<String>,
    tenant: Option<Spanned<Vec<Spanned<String>>>>,
    provider: Option<Spanned<Vec<Spanned<String>>>>,
    labels: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    sip_code: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    q850_cause: Option<Spanned<Vec<Spanned<i64>>>>,
    provider_cause: Option<Spanned<Vec<Spanned<String>>>>,
    reason_phrase: Option<Spanned<String>>,
    category: Option<Spanned<String>>,
    fault: Option<Spanned<String>>,
    retryable: Option<Spanned<String>>,
    summary: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    initial: Option<Spanned<String>>,
    multiplier: Option<Spanned<f64>>,
    max: Option<Spanned<String>>,
    jitter: Option<Spanned<f64>>,
    max_attempts: Option<Spanned<i64>>,
    max_avoid_route: Option<Spanned<String>>,
    max_retry_after: Option<Spanned<String>>,
    at_limit: Option<RawAtLimit>,
}

/// A rule's `retry = { .. }`: the retry fields of `[defaults]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial: Option<Spanned<String>>,
    multiplier: Option<Spanned<f64>>,
    max: Option<Spanned<String>>,
    jitter: Option<Spanned<f64>>,
    max_attempts: Option<Spanned<i64>>,
    max_avoid_route: Option<Spanned<String>>,
    max_retry_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAtLimit {
    explanation: Option<Spanned<String>>,
    notify: Option<bool>,
    message: Option<Spanned<String>>,
    alternatives: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecent {
    category: Option<Spanned<Vec<Spanned<String>>>>,
    at_least: Spanned<i64>,
    within: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    description: Option<String>,
    replaces: Option<Spanned<String>>,
    // Conditions.
    category: Option<Spanned<Vec<Spanned<String>>>>,
    sip_code: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    q850_cause: Option<Spanned<Vec<Spanned<i64>>>>,
    provider: Option<Spanned<Vec<Spanned<String>>>>,
    labels: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    tenant: Option<Spanned<Vec<Spanned<String>>>>,
    retry_after: Option<Spanned<String>>,
    fault: Option<Spanned<Vec<Spanned<String>>>>,
    retryable: Option<Spanned<Vec<Spanned<String>>>>,
    recent: Option<RawRecent>,
    attempt_at_least: Option<Spanned<i64>>,
    // Outcome of the rule.
    action: Spanned<String>,
    notify: Option<bool>,
    message: Option<Spanned<String>>,
    alternatives: Option<Spanned<Vec<Spanned<String>>>>,
    alert_operator: Option<bool>,
    suppress: Option<bool>,
    retry: Option<Spanned<RawRetry>>,
    at_limit: Option<Spanned<RawAtLimit>>,
    explanation: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    defaults: Option<RawDefaults>,
    #[serde(default)]
    disable: Vec<Spanned<String>>,
    /// SIP codes that never yield `retry_now_alternate_route` for this tenant.
    #[serde(default)]
    no_failover_codes: Vec<Spanned<i64>>,
    #[serde(default)]
    rules: Vec<RawRule>,
    /// Evaluated before the global overrides; reported as `tenant:<name>/<override>`.
    #[serde(default)]
    overrides: Vec<RawOverride>,
}

// ---------------------------------------------------------------------------------
// Compilation.
// ---------------------------------------------------------------------------------

/// Built-in values under `[defaults]`; documented in the module doc and default.toml.
pub(super) fn builtin_retry() -> RetrySettings {
    RetrySettings {
        initial: Duration::from_secs(120),
        multiplier: 2.0,
        max: Duration::from_secs(4 * 3600),
        jitter: 0.2,
        max_attempts: 5,
        max_avoid_route: 3600,
        max_retry_after: 7 * 24 * 3600,
    }
}

/// Used when neither the rule nor any `[..defaults.at_limit]` has an explanation.
pub(super) const BUILTIN_AT_LIMIT_EXPLANATION: &str = "{summary} Attempt {attempt} of {max_attempts} reached: not redialled automatically (attempt limit).";

/// Message for `notify = true` without a `message`.
const DEFAULT_MESSAGE: &str = "{summary}";

/// Largest duration accepted anywhere: delays are reported as u32 seconds.
const MAX_DURATION_SECS: u64 = u32::MAX as u64;

struct Compiler<'t> {
    text: &'t str,
    origin: &'t str,
}

type Result<T> = std::result::Result<T, PolicyError>;

impl Compiler<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> PolicyError {
        let (line, column) = line_column(self.text, span.start);
        PolicyError {
            origin: self.origin.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    fn duration(&self, value: &Spanned<String>, key: &str) -> Result<Duration> {
        let d = humantime::parse_duration(value.get_ref().trim()).map_err(|e| {
            self.error(
                value.span(),
                format!(
                    "`{key}`: invalid duration `{}` ({e}); write e.g. \"90s\", \"2m\", \"1h 30m\"",
                    value.get_ref()
                ),
            )
        })?;
        if d.as_secs() > MAX_DURATION_SECS {
            return Err(self.error(
                value.span(),
                format!("`{key}`: duration `{}` is too long", value.get_ref()),
            ));
        }
        Ok(d)
    }

    fn template(&self, value: &Spanned<String>) -> Result<Template> {
        Template::parse(value.get_ref()).map_err(|e| {
            let at = self.offset_in_string(value, e.offset);
            self.error(at..at, e.message)
        })
    }

    /// The byte offset in the file of byte `offset` inside a string value, when the
    /// value is written verbatim (a one-line string without escapes); else the value's
    /// start. This lets template errors point at the placeholder itself.
    fn offset_in_string(&self, value: &Spanned<String>, offset: usize) -> usize {
        let span = value.span();
        let Some(raw) = self.text.get(span.clone()) else {
            return span.start;
        };
        for quote in ['"', '\''] {
            if let Some(inner) = raw.strip_prefix(quote).and_then(|r| r.strip_suffix(quote))
                && inner == value.get_ref().as_str()
            {
                return span.start + 1 + offset;
            }
        }
        span.start
    }

    fn non_empty<'v, T>(
        &self,
        list: &'v Spanned<Vec<T>>,
        key: &str,
        what: &str,
    ) -> Result<&'v [T]> {
        if list.get_ref().is_empty() {
            return Err(self.error(
                list.span(),
                format!("`{key}` is empty and would match nothing; omit it to match any {what}"),
            ));
        }
        Ok(list.get_ref())
    }

    /// A member of one of the domain's vocabularies (`what` names it in the error).
    fn member<T>(&self, name: &Spanned<String>, what: &str) -> Result<T>
    where
        T: FromStr<Err = UnknownName>,
    {
        T::from_str(name.get_ref()).map_err(|e| {
            self.error(
                name.span(),
                format!(
                    "unknown {what} `{}`; expected one of: {}",
                    e.name,
                    e.expected.join(", ")
                ),
            )
        })
    }

    fn categories(&self, list: &Spanned<Vec<Spanned<String>>>, key: &str) -> Result<Vec<Category>> {
        self.non_empty(list, key, "category")?
            .iter()
            .map(|name| self.member(name, "category"))
            .collect()
    }

    fn alternatives(&self, list: &Spanned<Vec<Spanned<String>>>) -> Result<Vec<Alternative>> {
        let mut out = Vec::new();
        for name in list.get_ref() {
            let Some(alt) = Alternative::ALL
                .iter()
                .copied()
                .find(|a| a.as_str() == name.get_ref())
            else {
                return Err(self.error(
                    name.span(),
                    format!(
                        "unknown alternative `{}`; expected one of: {}",
                        name.get_ref(),
                        names(Alternative::ALL.iter().map(|a| a.as_str()))
                    ),
                ));
            };
            if !out.contains(&alt) {
                out.push(alt);
            }
        }
        Ok(out)
    }

    fn count(&self, value: &Spanned<i64>, key: &str, min: i64, max: i64) -> Result<u32> {
        let v = *value.get_ref();
        if v < min || v > max {
            return Err(self.error(
                value.span(),
                format!("`{key}` must be between {min} and {max}, not {v}"),
            ));
        }
        u32::try_from(v).map_err(|_| self.error(value.span(), format!("`{key}` is out of range")))
    }

    fn multiplier(&self, value: &Spanned<f64>) -> Result<f64> {
        let v = *value.get_ref();
        // Below 1 the backoff would shrink; huge values only overflow to the cap.
        if !(1.0..=1000.0).contains(&v) {
            return Err(self.error(
                value.span(),
                format!("`multiplier` must be between 1 and 1000 (a delay never shrinks), not {v}"),
            ));
        }
        Ok(v)
    }

    fn jitter(&self, value: &Spanned<f64>) -> Result<f64> {
        let v = *value.get_ref();
        if !(0.0..=1.0).contains(&v) {
            return Err(self.error(
                value.span(),
                format!("`jitter` is a ratio and must be between 0 and 1, not {v}"),
            ));
        }
        Ok(v)
    }

    #[allow(clippy::too_many_arguments)]
    // The fields of `[defaults]` and of a rule's `retry`, one by one (two raw types).
    #[allow(clippy::too_many_arguments)]
    fn retry_overrides(
        &self,
        initial: &Option<Spanned<String>>,
        multiplier: &Option<Spanned<f64>>,
        max: &Option<Spanned<String>>,
        jitter: &Option<Spanned<f64>>,
        max_attempts: &Option<Spanned<i64>>,
        max_avoid_route: &Option<Spanned<String>>,
        max_retry_after: &Option<Spanned<String>>,
    ) -> Result<RetryOverrides> {
        Ok(RetryOverrides {
            initial: initial
                .as_ref()
                .map(|v| self.duration(v, "initial"))
                .transpose()?,
            multiplier: multiplier
                .as_ref()
                .map(|v| self.multiplier(v))
                .transpose()?,
            max: max.as_ref().map(|v| self.duration(v, "max")).transpose()?,
            jitter: jitter.as_ref().map(|v| self.jitter(v)).transpose()?,
            max_attempts: max_attempts
                .as_ref()
                .map(|v| self.count(v, "max_attempts", 1, 1000))
                .transpose()?,
            max_avoid_route: max_avoid_route
                .as_ref()
                .map(|v| {
                    self.duration(v, "max_avoid_route")
                        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
                })
                .transpose()?,
            max_retry_after: max_retry_after
                .as_ref()
                .map(|v| {
                    self.duration(v, "max_retry_after")
                        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
                })
                .transpose()?,
        })
    }

    fn at_limit(&self, raw: &RawAtLimit) -> Result<AtLimit> {
        Ok(AtLimit {
            explanation: raw
                .explanation
                .as_ref()
                .map(|t| self.template(t))
                .transpose()?,
            notify: raw.notify,
            message: raw.message.as_ref().map(|t| self.template(t)).transpose()?,
            alternatives: raw
                .alternatives
                .as_ref()
                .map(|a| self.alternatives(a))
                .transpose()?,
        })
    }

    fn defaults(&self, raw: &RawDefaults, base: &Defaults) -> Result<Defaults> {
        let overrides = self.retry_overrides(
            &raw.initial,
            &raw.multiplier,
            &raw.max,
            &raw.jitter,
            &raw.max_attempts,
            &raw.max_avoid_route,
            &raw.max_retry_after,
        )?;
        let at_limit = match &raw.at_limit {
            Some(a) => self.at_limit(a)?.or(&base.at_limit),
            None => base.at_limit.clone(),
        };
        Ok(Defaults {
            retry: base.retry.with(&overrides),
            at_limit,
        })
    }

    fn rule(&self, raw: &RawRule, in_tenant: bool) -> Result<Rule> {
        let name = raw.name.get_ref();
        self.name(&raw.name, "rule")?;
        if let (Some(replaces), false) = (&raw.replaces, in_tenant) {
            return Err(self.error(
                replaces.span(),
                "`replaces` is only allowed in tenant rules ([[tenants.<name>.rules]])",
            ));
        }
        let action = Action::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == raw.action.get_ref())
            .ok_or_else(|| {
                self.error(
                    raw.action.span(),
                    format!(
                        "unknown action `{}`; expected one of: {}",
                        raw.action.get_ref(),
                        names(Action::ALL.iter().map(|a| a.as_str()))
                    ),
                )
            })?;
        let retries = matches!(action, Action::RetryLater | Action::RetryNowAlternateRoute);
        if let (Some(retry), false) = (&raw.retry, retries) {
            return Err(self.error(
                retry.span(),
                format!("`retry` settings on a rule whose action `{action}` never retries"),
            ));
        }
        if let (Some(at_limit), false) = (&raw.at_limit, retries) {
            return Err(self.error(
                at_limit.span(),
                format!("`at_limit` on a rule whose action `{action}` never retries"),
            ));
        }
        let retry = match &raw.retry {
            Some(r) => {
                let r = r.get_ref();
                self.retry_overrides(
                    &r.initial,
                    &r.multiplier,
                    &r.max,
                    &r.jitter,
                    &r.max_attempts,
                    &r.max_avoid_route,
                    &r.max_retry_after,
                )?
            }
            None => RetryOverrides::default(),
        };
        let notify = raw.notify.unwrap_or(false);
        let message = match &raw.message {
            Some(t) => Some(self.template(t)?),
            None if notify => Some(Template::parse(DEFAULT_MESSAGE).map_err(|e| {
                self.error(raw.name.span(), format!("built-in message: {}", e.message))
            })?),
            None => None,
        };
        Ok(Rule {
            name: name.clone(),
            description: raw.description.clone().unwrap_or_default(),
            conditions: self.conditions(raw)?,
            action,
            notify,
            message,
            alternatives: raw
                .alternatives
                .as_ref()
                .map(|a| self.alternatives(a))
                .transpose()?
                .unwrap_or_default(),
            alert_operator: raw.alert_operator.unwrap_or(false),
            suppress: raw.suppress.unwrap_or(false),
            retry,
            at_limit: raw
                .at_limit
                .as_ref()
                .map(|a| self.at_limit(a.get_ref()))
                .transpose()?
                .unwrap_or_default(),
            explanation: self.template(&raw.explanation)?,
        })
    }

    fn conditions(&self, raw: &RawRule) -> Result<Conditions> {
        let mut c = Conditions::default();
        if let Some(list) = &raw.category {
            c.categories = self.categories(list, "category")?;
        }
        c.sip_codes = self.sip_codes(raw.sip_code.as_ref())?;
        c.q850_causes = self.q850_causes(raw.q850_cause.as_ref())?;
        c.providers = self.lower_case(raw.provider.as_ref(), "provider", "provider")?;
        c.labels = self.labels(raw.labels.as_ref())?;
        c.tenants = self.strings(raw.tenant.as_ref(), "tenant", "tenant")?;
        if let Some(scope) = &raw.retry_after {
            c.retry_after = Some(match scope.get_ref().as_str() {
                "callee" => RetryAfterCond::Callee,
                "route" => RetryAfterCond::Route,
                "any" => RetryAfterCond::Any,
                "none" => RetryAfterCond::None,
                other => {
                    return Err(self.error(
                        scope.span(),
                        format!(
                            "unknown retry_after `{other}`; expected one of: callee, route, any, none"
                        ),
                    ));
                }
            });
        }
        if let Some(list) = &raw.fault {
            for name in self.non_empty(list, "fault", "fault")? {
                c.faults.push(self.member(name, "fault")?);
            }
        }
        if let Some(list) = &raw.retryable {
            for name in self.non_empty(list, "retryable", "retryability")? {
                c.retryables.push(self.member(name, "retryable")?);
            }
        }
        if let Some(recent) = &raw.recent {
            let within = self.duration(&recent.within, "recent.within")?;
            c.recent = Some(Recent {
                categories: match &recent.category {
                    Some(list) => self.categories(list, "recent.category")?,
                    None => Vec::new(),
                },
                at_least: self.count(&recent.at_least, "recent.at_least", 1, 100_000)?,
                within,
            });
        }
        if let Some(n) = &raw.attempt_at_least {
            c.attempt_at_least = Some(self.count(n, "attempt_at_least", 1, 1_000_000)?);
        }
        Ok(c)
    }

    fn sip_codes(
        &self,
        list: Option<&Spanned<Vec<Spanned<toml::Value>>>>,
    ) -> Result<Vec<CodePattern>> {
        let Some(list) = list else {
            return Ok(Vec::new());
        };
        self.non_empty(list, "sip_code", "SIP code")?
            .iter()
            .map(|value| self.code_pattern(value))
            .collect()
    }

    fn q850_causes(&self, list: Option<&Spanned<Vec<Spanned<i64>>>>) -> Result<Vec<u8>> {
        let Some(list) = list else {
            return Ok(Vec::new());
        };
        self.non_empty(list, "q850_cause", "Q.850 cause")?
            .iter()
            .map(|cause| {
                let v = self.count(cause, "q850_cause", 1, 127)?;
                Ok(u8::try_from(v).unwrap_or(u8::MAX))
            })
            .collect()
    }

    fn strings(
        &self,
        list: Option<&Spanned<Vec<Spanned<String>>>>,
        key: &str,
        what: &str,
    ) -> Result<Vec<String>> {
        let Some(list) = list else {
            return Ok(Vec::new());
        };
        Ok(self
            .non_empty(list, key, what)?
            .iter()
            .map(|v| v.get_ref().clone())
            .collect())
    }

    /// Names compared case-insensitively (providers and their causes).
    fn lower_case(
        &self,
        list: Option<&Spanned<Vec<Spanned<String>>>>,
        key: &str,
        what: &str,
    ) -> Result<Vec<String>> {
        let mut values = self.strings(list, key, what)?;
        for v in &mut values {
            *v = v.trim().to_ascii_lowercase();
        }
        Ok(values)
    }

    fn labels(
        &self,
        map: Option<&Spanned<BTreeMap<String, Spanned<String>>>>,
    ) -> Result<Vec<(String, LabelMatch)>> {
        let Some(map) = map else {
            return Ok(Vec::new());
        };
        if map.get_ref().is_empty() {
            return Err(self.error(map.span(), "`labels` is empty; omit it to match any labels"));
        }
        Ok(map
            .get_ref()
            .iter()
            .map(|(key, value)| (key.clone(), LabelMatch::parse(value.get_ref())))
            .collect())
    }

    fn name(&self, name: &Spanned<String>, what: &str) -> Result<()> {
        let valid = !name.get_ref().is_empty()
            && name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if valid {
            Ok(())
        } else {
            Err(self.error(
                name.span(),
                format!(
                    "invalid {what} name `{}`: use lower-case letters, digits, `-` and `_`",
                    name.get_ref()
                ),
            ))
        }
    }

    /// One `[[overrides]]` entry, reported as `reported_name`.
    fn override_entry(&self, raw: &RawOverride, reported_name: String) -> Result<Override> {
        self.name(&raw.name, "override")?;
        let reason_phrase = match &raw.reason_phrase {
            Some(pattern) => Some(ReasonPattern::new(pattern.get_ref()).map_err(|e| {
                let at = self.offset_in_string(pattern, e.offset);
                self.error(at..at, format!("`reason_phrase`: {}", e.message))
            })?),
            None => None,
        };
        let when = OverrideConditions {
            tenants: self.strings(raw.tenant.as_ref(), "tenant", "tenant")?,
            providers: self.lower_case(raw.provider.as_ref(), "provider", "provider")?,
            labels: self.labels(raw.labels.as_ref())?,
            sip_codes: self.sip_codes(raw.sip_code.as_ref())?,
            q850_causes: self.q850_causes(raw.q850_cause.as_ref())?,
            provider_causes: self.lower_case(
                raw.provider_cause.as_ref(),
                "provider_cause",
                "provider cause",
            )?,
            reason_phrase,
        };
        if when.is_empty() {
            return Err(self.error(
                raw.name.span(),
                format!(
                    "override `{}` has no conditions and would rewrite every outcome; give it                      at least one of tenant, provider, labels, sip_code, q850_cause,                      provider_cause, reason_phrase",
                    raw.name.get_ref()
                ),
            ));
        }
        let then = OverrideEffect {
            category: raw
                .category
                .as_ref()
                .map(|name| self.member(name, "category"))
                .transpose()?,
            fault: raw
                .fault
                .as_ref()
                .map(|name| self.member(name, "fault"))
                .transpose()?,
            retryable: raw
                .retryable
                .as_ref()
                .map(|name| self.member(name, "retryable"))
                .transpose()?,
            summary: match &raw.summary {
                Some(text) if text.get_ref().trim().is_empty() => {
                    return Err(self.error(
                        text.span(),
                        "`summary` is empty; omit it to keep the category's summary",
                    ));
                }
                Some(text) => Some(Arc::from(text.get_ref().trim())),
                None => None,
            },
        };
        if then.is_empty() {
            return Err(self.error(
                raw.name.span(),
                format!(
                    "override `{}` changes nothing; give it at least one of category, fault, \
                     retryable, summary",
                    raw.name.get_ref()
                ),
            ));
        }
        // R5, caught at load where it can be: an override limited to 6xx codes cannot
        // send the call to another route (at run time it would become `later`).
        if let Some(retryable) = &raw.retryable
            && then.retryable == Some(Retryable::NowAlternateRoute)
            && !when.sip_codes.is_empty()
            && when.sip_codes.iter().all(|p| p.class() == 6)
        {
            return Err(self.error(
                retryable.span(),
                "a 6xx is global (RFC 3261 §6: it ends the search for the callee), so an \
                 override on 6xx codes cannot be `now_alternate_route`; use `later` or `no`",
            ));
        }
        Ok(Override {
            name: reported_name.into(),
            description: raw.description.clone().unwrap_or_default(),
            when,
            then,
        })
    }

    fn code_pattern(&self, value: &Spanned<toml::Value>) -> Result<CodePattern> {
        let bad = |what: String| {
            self.error(
                value.span(),
                format!(
                    "{what}: a `sip_code` entry is a final response code 200-699 (e.g. 486) or a \
                     class pattern such as \"5xx\" or \"48x\""
                ),
            )
        };
        let text = match value.get_ref() {
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::String(s) => s.clone(),
            other => return Err(bad(format!("invalid SIP code {other}"))),
        };
        CodePattern::parse(&text).ok_or_else(|| bad(format!("invalid SIP code `{text}`")))
    }
}

/// Parses and validates a policy file.
pub(super) fn parse(text: &str, origin: &str) -> Result<Policy> {
    let cx = Compiler { text, origin };
    let raw: RawPolicy = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        cx.error(span, e.message().trim_end())
    })?;
    if let Some(version) = &raw.version
        && *version.get_ref() != 1
    {
        return Err(cx.error(
            version.span(),
            format!(
                "unsupported policy `version` {}; this service reads version 1",
                version.get_ref()
            ),
        ));
    }

    let builtin = Defaults {
        retry: builtin_retry(),
        at_limit: AtLimit {
            explanation: Some(
                Template::parse(BUILTIN_AT_LIMIT_EXPLANATION)
                    .map_err(|e| cx.error(0..0, format!("built-in template: {}", e.message)))?,
            ),
            ..AtLimit::default()
        },
    };
    let defaults = match &raw.defaults {
        Some(d) => cx.defaults(d, &builtin)?,
        None => builtin,
    };

    let mut rules = Vec::new();
    let mut global: Vec<PlanEntry> = Vec::new();
    let mut global_names: HashMap<String, (usize, usize)> = HashMap::new();
    for raw_rule in &raw.rules {
        let rule = cx.rule(raw_rule, false)?;
        if let Some(&(_, line)) = global_names.get(&rule.name) {
            return Err(cx.error(
                raw_rule.name.span(),
                format!(
                    "duplicate rule name `{}` (first defined on line {line})",
                    rule.name
                ),
            ));
        }
        if let Some(previous) = global.last()
            && rules_catch_all(&rules, previous)
        {
            return Err(cx.error(
                raw_rule.name.span(),
                format!(
                    "rule `{}` can never match: the rule before it has no conditions and matches \
                     everything",
                    rule.name
                ),
            ));
        }
        let line = line_column(text, raw_rule.name.span().start).0;
        global_names.insert(rule.name.clone(), (global.len(), line));
        global.push(PlanEntry {
            rule: rules.len(),
            name: rule.name.clone(),
        });
        rules.push(rule);
    }
    // Every outcome must get a decision, so the global list must end with a catch-all.
    // A documented rule beats a hidden fallback: the user sees what happens to
    // anything unmatched.
    match global.last() {
        Some(last) if rules_catch_all(&rules, last) => {}
        Some(last) => {
            let span = raw.rules.last().map(|r| r.name.span()).unwrap_or(0..0);
            return Err(cx.error(
                span,
                format!(
                    "the last rule `{}` has conditions; the last rule must have none (a \
                     catch-all) so that every outcome gets a decision",
                    last.name
                ),
            ));
        }
        None => {
            return Err(cx.error(
                0..0,
                "the policy has no [[rules]]; it needs at least a final catch-all rule (one \
                 without conditions)",
            ));
        }
    }

    // Overrides share the namespace of `disable` with rules, so their names must differ.
    let mut overrides = Overrides::default();
    let mut override_lines: HashMap<String, usize> = HashMap::new();
    for raw_override in &raw.overrides {
        let name = raw_override.name.get_ref();
        let line = line_column(text, raw_override.name.span().start).0;
        if let Some(first) = override_lines
            .get(name)
            .or_else(|| global_names.get(name).map(|(_, line)| line))
        {
            return Err(cx.error(
                raw_override.name.span(),
                format!(
                    "duplicate name `{name}` (first defined on line {first}); overrides and \
                     rules share one namespace so that `disable` can name either"
                ),
            ));
        }
        override_lines.insert(name.clone(), line);
        overrides.push_global(cx.override_entry(raw_override, name.clone())?);
    }

    let mut tenants = BTreeMap::new();
    for (tenant, raw_tenant) in &raw.tenants {
        let plan = tenant_plan(
            &cx,
            tenant,
            raw_tenant,
            &defaults,
            &mut rules,
            &global,
            &global_names,
            &mut overrides,
        )?;
        tenants.insert(tenant.clone(), plan);
    }

    Ok(Policy {
        // Set by `Policy::parse`, which has the whole text.
        version: std::sync::Arc::from(""),
        overrides,
        rules,
        global: Plan {
            entries: global,
            defaults,
            no_failover_codes: Vec::new(),
        },
        tenants,
    })
}

fn rules_catch_all(rules: &[Rule], entry: &PlanEntry) -> bool {
    rules
        .get(entry.rule)
        .is_some_and(|r| r.conditions.is_catch_all())
}

/// A tenant's evaluation order: its own rules, then the global ones minus those it
/// disables, with its replacements in the replaced rules' places; the same for its
/// overrides (own first, then the global ones it does not disable).
#[allow(clippy::too_many_arguments)]
fn tenant_plan(
    cx: &Compiler<'_>,
    tenant: &str,
    raw: &RawTenant,
    global_defaults: &Defaults,
    rules: &mut Vec<Rule>,
    global: &[PlanEntry],
    global_names: &HashMap<String, (usize, usize)>,
    overrides: &mut Overrides,
) -> Result<Plan> {
    let defaults = match &raw.defaults {
        Some(d) => cx.defaults(d, global_defaults)?,
        None => global_defaults.clone(),
    };
    let mut no_failover_codes = Vec::with_capacity(raw.no_failover_codes.len());
    for code in &raw.no_failover_codes {
        let value = *code.get_ref();
        let Some(value) = u16::try_from(value)
            .ok()
            .filter(|c| (300..=699).contains(c))
        else {
            return Err(cx.error(
                code.span(),
                format!(
                    "tenant `{tenant}`: no_failover_codes holds {value}, not a final SIP \
                     failure code (300-699)"
                ),
            ));
        };
        if no_failover_codes.contains(&value) {
            return Err(cx.error(
                code.span(),
                format!("tenant `{tenant}`: no_failover_codes lists {value} twice"),
            ));
        }
        no_failover_codes.push(value);
    }
    let mut removed: HashMap<usize, Range<usize>> = HashMap::new();
    let mut disabled_overrides: Vec<&str> = Vec::new();
    for name in &raw.disable {
        if overrides.global_names().any(|o| o == name.get_ref()) {
            if disabled_overrides.contains(&name.get_ref().as_str()) {
                return Err(cx.error(
                    name.span(),
                    format!("tenant `{tenant}` disables `{}` twice", name.get_ref()),
                ));
            }
            disabled_overrides.push(name.get_ref());
            continue;
        }
        let Some(&(position, _)) = global_names.get(name.get_ref()) else {
            return Err(cx.error(
                name.span(),
                format!(
                    "tenant `{tenant}` disables `{}`, but there is no global rule or override \
                     of that name",
                    name.get_ref()
                ),
            ));
        };
        if removed.insert(position, name.span()).is_some() {
            return Err(cx.error(
                name.span(),
                format!("tenant `{tenant}` disables `{}` twice", name.get_ref()),
            ));
        }
    }

    let mut own = Vec::new();
    let mut replacements: HashMap<usize, (PlanEntry, Range<usize>)> = HashMap::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for raw_rule in &raw.rules {
        let rule = cx.rule(raw_rule, true)?;
        let line = line_column(cx.text, raw_rule.name.span().start).0;
        if let Some(first) = seen.insert(rule.name.clone(), line) {
            return Err(cx.error(
                raw_rule.name.span(),
                format!(
                    "duplicate rule name `{}` in tenant `{tenant}` (first defined on line {first})",
                    rule.name
                ),
            ));
        }
        let entry = PlanEntry {
            rule: rules.len(),
            name: format!("tenant:{tenant}/{}", rule.name),
        };
        rules.push(rule);
        match &raw_rule.replaces {
            Some(target) => {
                let Some(&(position, _)) = global_names.get(target.get_ref()) else {
                    return Err(cx.error(
                        target.span(),
                        format!(
                            "`replaces = \"{}\"`: there is no global rule of that name",
                            target.get_ref()
                        ),
                    ));
                };
                if removed.contains_key(&position) || replacements.contains_key(&position) {
                    return Err(cx.error(
                        target.span(),
                        format!(
                            "global rule `{}` is already disabled or replaced in tenant `{tenant}`",
                            target.get_ref()
                        ),
                    ));
                }
                replacements.insert(position, (entry, target.span()));
            }
            None => {
                if let Some(previous) = own.last()
                    && rules_catch_all(rules, previous)
                {
                    return Err(cx.error(
                        raw_rule.name.span(),
                        format!(
                            "rule `{}` can never match: the tenant rule before it has no \
                             conditions",
                            raw_rule.name.get_ref()
                        ),
                    ));
                }
                own.push(entry);
            }
        }
    }

    let mut entries = own;
    for (position, entry) in global.iter().enumerate() {
        if removed.contains_key(&position) {
            continue;
        }
        match replacements.remove(&position) {
            Some((replacement, _)) => entries.push(replacement),
            None => entries.push(entry.clone()),
        }
    }
    if !entries.iter().any(|e| rules_catch_all(rules, e)) {
        // Point at whatever removed the global catch-all.
        let catch_all = global.len().saturating_sub(1);
        let span = removed
            .get(&catch_all)
            .cloned()
            .or_else(|| {
                raw.rules
                    .iter()
                    .filter_map(|r| r.replaces.as_ref())
                    .find(|t| global_names.get(t.get_ref()).map(|p| p.0) == Some(catch_all))
                    .map(|t| t.span())
            })
            .unwrap_or(0..0);
        return Err(cx.error(
            span,
            format!(
                "tenant `{tenant}` leaves no catch-all rule: a rule without conditions must \
                 remain so that every outcome gets a decision"
            ),
        ));
    }
    let mut own_overrides = Vec::with_capacity(raw.overrides.len());
    let mut override_lines: HashMap<&str, usize> = HashMap::new();
    for raw_override in &raw.overrides {
        let name = raw_override.name.get_ref();
        let line = line_column(cx.text, raw_override.name.span().start).0;
        if let Some(first) = override_lines.insert(name, line) {
            return Err(cx.error(
                raw_override.name.span(),
                format!(
                    "duplicate override name `{name}` in tenant `{tenant}` (first defined on \
                     line {first})"
                ),
            ));
        }
        own_overrides.push(cx.override_entry(raw_override, format!("tenant:{tenant}/{name}"))?);
    }
    overrides.set_tenant(tenant, own_overrides, &disabled_overrides);
    Ok(Plan {
        entries,
        defaults,
        no_failover_codes,
    })
}

fn names<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    // A span can only start on a char boundary, but be defensive about it.
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
