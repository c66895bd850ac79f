//! The classification rules R0–R7 of the reference (§2), applied in order; the first
//! rule that decides wins.
//!
//! Owns rule ordering and the assembly of a [`Classification`]. It must not hold protocol
//! tables (those are `crate::sip` and `crate::providers`), do I/O, or know about the wire
//! format. Pure and synchronous; the code-only path allocates nothing.
//!
//! Choices where the reference leaves room:
//! * Unknown provider *name* with a cause and no SIP code: `other` / no / unknown with
//!   basis `provider_cause` (R2: "an unknown provider cause with no SIP code gives
//!   other"; the caller did report something, so it is not `NothingToClassify`).
//! * R6 after R4: Retry-After is attached to a Q.850-refined verdict only when it agrees
//!   with the code's Retry-After scope: callee scope with a `later` verdict (480 + 19,
//!   480 + 20, 486 + 17), route scope with a `now_alternate_route` verdict (503 + 34).
//!   Otherwise the more specific Q.850 cause wins and Retry-After is ignored: 404 + 3 is
//!   a routing failure, not a callee that "anticipates being available again" (RFC 3261
//!   §20.33), and 480 + 1 is an unallocated number. R2 overrides, R3 (603+) and
//!   provider-only verdicts never take Retry-After (reference R6).
//! * The explicit `reason_phrase` is not consulted by R0–R7: R3 uses the Reason text
//!   alone. Only overrides read it (a carrier's own codes live there, e.g. Telnyx D5).
//! * An empty `raw_sip_response` counts as absent, like the empty strings.

use std::borrow::Cow;

use super::overrides::{Override, Overrides, Subject};
use super::summary::summary;
use super::{ClassifyError, ClassifyInput};
use crate::domain::{
    AppliedRetryAfter, Basis, Category, Classification, Fault, Q850Source, RetryAfterScope,
    Retryable, Verdict,
};
use crate::providers::{Provider, ProviderCause};
use crate::sip::reason::{Location, ReasonValue, reason_values};
use crate::sip::{parse_response, parse_retry_after, q850, status};

const OTHER: Verdict = Verdict::new(Category::Other, Fault::Unknown, Retryable::No);
const ANALYTICS_BLOCK: Verdict =
    Verdict::new(Category::RejectedUnwanted, Fault::Network, Retryable::No);
/// ATIS-1000099 603+ Reason text prefix (FreeSWITCH `sofia.c` checks the same).
const ANALYTICS_PREFIX: &str = "v=analytics1;";

/// Classifies one reported outcome (reference rules R0–R7), without overrides.
pub fn classify(input: &ClassifyInput<'_>) -> Result<Classification, ClassifyError> {
    classify_with(input, Overrides::none())
}

/// Classifies one reported outcome: R0 and R1, then the first matching override of the
/// input's tenant, else R2–R7 (see `overrides.rs` for the constraints that still hold).
pub fn classify_with(
    input: &ClassifyInput<'_>,
    overrides: &Overrides,
) -> Result<Classification, ClassifyError> {
    // R0: the explicit code, then the raw response's status code.
    let explicit = input.sip_code.map(validate_code).transpose()?;
    let raw = match input.raw_sip_response {
        Some(bytes) if !bytes.is_empty() => {
            Some(parse_response(bytes).map_err(|e| ClassifyError::RawSipResponse(e.to_string()))?)
        }
        _ => None,
    };
    let code = match (explicit, &raw) {
        (Some(c), Some(r)) if c != r.status_code() => {
            return Err(ClassifyError::ConflictingCode {
                explicit: i64::from(c),
                raw: r.status_code(),
            });
        }
        (Some(c), _) => Some(c),
        (None, Some(r)) => Some(validate_code(i64::from(r.status_code()))?),
        (None, None) => None,
    };
    // A provider with an empty cause counts as absent.
    let provider = input.provider.filter(|p| !p.cause.trim().is_empty());
    if code.is_none() && provider.is_none() {
        return Err(ClassifyError::NothingToClassify);
    }
    // Unknown provider names are ignored (R2); unknown causes give `None` here.
    let cause: Option<ProviderCause> =
        provider.and_then(|p| Provider::from_name(p.name).and_then(|pr| pr.lookup(p.cause)));

    // Explicit headers win over the raw response's (found in one pass when needed).
    let explicit_reason = non_empty(input.reason_header);
    let explicit_ra = non_empty(input.retry_after_header);
    let (raw_reason, raw_ra) = match &raw {
        Some(r) if explicit_reason.is_none() || explicit_ra.is_none() => r.reason_and_retry_after(),
        _ => (None, None),
    };
    let reason_header = explicit_reason.map(Cow::Borrowed).or(raw_reason);
    let reason = scan_reason(reason_header.as_deref().unwrap_or(""));

    // Overrides read the reason phrase: the explicit one, else the raw response's.
    let phrase: Cow<'_, str> = match (non_empty(input.reason_phrase), &raw) {
        (Some(p), _) => Cow::Borrowed(p),
        (None, Some(r)) if !overrides.is_empty() => r.reason_phrase(),
        _ => Cow::Borrowed(""),
    };
    let subject = |sip_code: Option<u16>, reported_sip_code, q850_cause| Subject {
        tenant: input.tenant,
        provider: provider.map(|p| (p.name, p.cause)),
        labels: input.labels,
        reason_phrase: &phrase,
        sip_code,
        reported_sip_code,
        q850_cause,
    };

    let Some(reported) = code else {
        let q850 = reported_q850(&reason, cause);
        let matched = if overrides.is_empty() {
            None
        } else {
            overrides.first_match(&subject(None, None, q850.map(|(c, _, _)| c)))
        };
        return Ok(provider_only(cause, &reason, q850, matched));
    };
    // R1. `validate_code` guarantees 200..=699, whose x00 codes are all registered.
    let Some(entry) = status::effective(reported) else {
        return Err(ClassifyError::CodeOutOfRange(i64::from(reported)));
    };
    let Some(code_verdict) = entry.verdict else {
        return Err(ClassifyError::ProvisionalCode(i64::from(reported)));
    };
    let eff = entry.code;

    let (q850_cause, q850_source, q850_location) = reported_q850(&reason, cause)
        .or_else(|| {
            entry
                .rfc3398_cause()
                .map(|c| (c, Q850Source::SipMapping, None))
        })
        .map_or((None, None, None), |(c, s, l)| (Some(c), Some(s), l));

    let (rules_verdict, rules_basis) = if let Some(pc) = cause.filter(|c| c.overrides_sip_code) {
        // R2: platform timer / cancel semantics override the code.
        (pc.verdict, Basis::ProviderOverride)
    } else if eff == 603 && reason.analytics.is_some() {
        // R3: 603+ analytics block.
        (ANALYTICS_BLOCK, Basis::AnalyticsBlock)
    } else if let Some(v) = r4_refinement(eff, reason.q850.as_ref()) {
        // R4: a specific Q.850 cause on a 4xx/5xx other than 487.
        (v, Basis::Q850Reason)
    } else {
        // R5 (6xx is global) and R7: the code table.
        (code_verdict, Basis::SipCode)
    };
    // The policy's overrides come before R2–R7; the rules' verdict fills what an
    // override leaves out. A 603+ (R3) is the network's explicit, regulated notice of
    // an analytics block: an override written for "603" must not turn it into a
    // redialable outcome.
    let matched = if overrides.is_empty() || rules_basis == Basis::AnalyticsBlock {
        None
    } else {
        overrides.first_match(&subject(Some(eff), Some(reported), q850_cause))
    };
    let (mut verdict, basis) = match matched {
        Some(o) => (o.then.apply(rules_verdict, Some(eff)), Basis::Override),
        None => (rules_verdict, rules_basis),
    };

    // R6: Retry-After, only for the codes that define it and only when the code (or an
    // agreeing Q.850 refinement or override, see the module doc) decided.
    let mut retry_after = None;
    if let (Some(scope), Basis::SipCode | Basis::Q850Reason | Basis::Override) =
        (entry.retry_after, basis)
    {
        let header = explicit_ra.or(raw_ra.as_deref());
        if let Some(ra) = header.and_then(parse_retry_after) {
            let applies = match (scope, basis) {
                (_, Basis::SipCode) => true,
                (RetryAfterScope::Callee, _) => verdict.retryable == Retryable::Later,
                (RetryAfterScope::Route, _) => verdict.retryable == Retryable::NowAlternateRoute,
            };
            if applies {
                if scope == RetryAfterScope::Callee {
                    // "This holds even for 603 (declined) and 404" (R6).
                    verdict.retryable = Retryable::Later;
                }
                // Route scope: stays now_alternate_route; the raw value is reported.
                retry_after = Some(AppliedRetryAfter {
                    seconds: ra.seconds,
                    scope,
                });
            }
        }
    }

    let reason_text = match basis {
        Basis::AnalyticsBlock => reason.analytics.and_then(|v| v.text),
        _ => reason.q850.and_then(|v| v.text),
    };

    let summary_code = matches!(basis, Basis::SipCode | Basis::Override).then_some(eff);
    let summary_cause = if basis == Basis::Q850Reason {
        q850_cause
    } else {
        None
    };
    Ok(Classification {
        category: verdict.category,
        fault: verdict.fault,
        retryable: verdict.retryable,
        sip_code: Some(eff),
        reported_sip_code: Some(reported),
        sip_phrase: Cow::Borrowed(entry.phrase),
        q850_cause,
        q850_source,
        q850_location: q850_location.map(|l| l.as_str().to_owned()),
        reason_text: reason_text.map(Cow::into_owned),
        retry_after,
        summary: override_summary(matched).unwrap_or(Cow::Borrowed(summary(
            verdict.category,
            basis,
            summary_code,
            summary_cause,
        ))),
        basis,
        override_name: matched.map(|o| std::sync::Arc::clone(&o.name)),
    })
}

/// An override's own summary, when it has one.
fn override_summary(matched: Option<&Override>) -> Option<Cow<'static, str>> {
    matched
        .and_then(|o| o.then.summary.as_deref())
        .map(|s| Cow::Owned(s.to_owned()))
}

/// R0: a final code is 200..=699; 1xx is provisional; anything else is out of range.
fn validate_code(code: i64) -> Result<u16, ClassifyError> {
    match code {
        100..=199 => Err(ClassifyError::ProvisionalCode(code)),
        200..=699 => u16::try_from(code).map_err(|_| ClassifyError::CodeOutOfRange(code)),
        _ => Err(ClassifyError::CodeOutOfRange(code)),
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.trim().is_empty()).then_some(s)
}

/// The Reason values that matter to the rules.
#[derive(Default)]
struct ReasonScan<'a> {
    /// The first Q.850 value with a cause in 1..=127.
    q850: Option<ReasonValue<'a>>,
    /// The first value (SIP or Q.850 variant) whose text starts with `v=analytics1;`.
    analytics: Option<ReasonValue<'a>>,
}

fn scan_reason(header: &str) -> ReasonScan<'_> {
    let mut scan = ReasonScan::default();
    for v in reason_values(header) {
        if scan.analytics.is_none()
            && v.text.as_deref().is_some_and(|t| {
                t.get(..ANALYTICS_PREFIX.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(ANALYTICS_PREFIX))
            })
        {
            scan.analytics = Some(v.clone());
        }
        if scan.q850.is_none() && v.q850_cause().is_some() {
            scan.q850 = Some(v);
        }
        if scan.q850.is_some() && scan.analytics.is_some() {
            break;
        }
    }
    scan
}

/// R4: 4xx/5xx except 487, with a specific Q.850 cause (6xx stays global, R5).
fn r4_refinement(eff: u16, q: Option<&ReasonValue<'_>>) -> Option<Verdict> {
    if !(400..=599).contains(&eff) || eff == 487 {
        return None;
    }
    let q = q?;
    q850::refine(q.q850_cause()?, q.location)
}

/// The Q.850 cause to report: the Reason header's, else the provider's.
fn reported_q850(
    reason: &ReasonScan<'_>,
    cause: Option<ProviderCause>,
) -> Option<(u8, Q850Source, Option<Location>)> {
    if let Some(v) = &reason.q850
        && let Some(c) = v.q850_cause()
    {
        return Some((c, Q850Source::ReasonHeader, v.location));
    }
    cause
        .and_then(|c| c.q850_cause)
        .map(|c| (c, Q850Source::Provider, None))
}

/// R2 without a SIP code: the provider table decides; unknown provider or cause → other.
/// A matching override comes first.
fn provider_only(
    cause: Option<ProviderCause>,
    reason: &ReasonScan<'_>,
    q850: Option<(u8, Q850Source, Option<Location>)>,
    matched: Option<&Override>,
) -> Classification {
    let rules_verdict = cause.map_or(OTHER, |c| c.verdict);
    let (verdict, basis) = match matched {
        Some(o) => (o.then.apply(rules_verdict, None), Basis::Override),
        None => (rules_verdict, Basis::ProviderCause),
    };
    let (q850_cause, q850_source, q850_location) =
        q850.map_or((None, None, None), |(c, s, l)| (Some(c), Some(s), l));
    Classification {
        category: verdict.category,
        fault: verdict.fault,
        retryable: verdict.retryable,
        sip_code: None,
        reported_sip_code: None,
        sip_phrase: Cow::Borrowed(""),
        q850_cause,
        q850_source,
        q850_location: q850_location.map(|l| l.as_str().to_owned()),
        reason_text: reason
            .q850
            .as_ref()
            .and_then(|v| v.text.as_deref())
            .map(str::to_owned),
        retry_after: None,
        summary: override_summary(matched).unwrap_or(Cow::Borrowed(summary(
            verdict.category,
            basis,
            None,
            cause.and_then(|c| c.q850_cause),
        ))),
        basis,
        override_name: matched.map(|o| std::sync::Arc::clone(&o.name)),
    }
}
