//! Conversions between the wire format (`proto`) and the domain types.
//!
//! Mechanical mapping only: no validation (see `validate`) and no business rules.

use crate::domain::{Action, Alternative, Decision, RetryPlan};
use crate::domain::{
    AppliedRetryAfter, Basis, Category, Classification, Fault, Q850Source, RetryAfterScope,
    Retryable,
};
use crate::proto as pb;
use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Declares a two-way mapping between a domain enum and its proto enum. The proto's
/// `UNSPECIFIED` maps to `None`.
macro_rules! enum_map {
    ($domain:ident <=> $proto:ident { $($d:ident <=> $p:ident),+ $(,)? }) => {
        impl From<$domain> for pb::$proto {
            fn from(value: $domain) -> Self {
                match value { $($domain::$d => pb::$proto::$p),+ }
            }
        }

        impl From<$domain> for i32 {
            fn from(value: $domain) -> Self {
                pb::$proto::from(value) as i32
            }
        }

        impl TryFrom<pb::$proto> for $domain {
            type Error = ();
            fn try_from(value: pb::$proto) -> Result<Self, ()> {
                match value {
                    $(pb::$proto::$p => Ok($domain::$d),)+
                    #[allow(unreachable_patterns)]
                    _ => Err(()),
                }
            }
        }
    };
}

enum_map!(Category <=> Category {
    Answered <=> Answered, Busy <=> Busy, NoAnswer <=> NoAnswer, Unavailable <=> Unavailable,
    Declined <=> Declined, RejectedUnwanted <=> RejectedUnwanted, InvalidNumber <=> InvalidNumber,
    Redirect <=> Redirect, Canceled <=> Canceled, ConfigError <=> ConfigError,
    NetworkError <=> NetworkError, Other <=> Other,
});
enum_map!(Fault <=> Fault {
    None <=> None, CalleeChoice <=> CalleeChoice, CalleeDevice <=> CalleeDevice,
    Network <=> Network, CallerConfig <=> CallerConfig, CallerData <=> CallerData,
    CallerAction <=> CallerAction, Unknown <=> Unknown,
});
enum_map!(Retryable <=> Retryable {
    No <=> No, Later <=> Later, NowAlternateRoute <=> NowAlternateRoute,
});
enum_map!(RetryAfterScope <=> RetryAfterScope { Callee <=> Callee, Route <=> Route });
enum_map!(Basis <=> ClassificationBasis {
    SipCode <=> SipCode, Q850Reason <=> Q850Reason, AnalyticsBlock <=> AnalyticsBlock,
    ProviderOverride <=> ProviderOverride, ProviderCause <=> ProviderCause,
    Override <=> Override,
});
enum_map!(Q850Source <=> Q850CauseSource {
    ReasonHeader <=> ReasonHeader, Provider <=> Provider, SipMapping <=> SipMapping,
});
enum_map!(Action <=> Action {
    None <=> None, RetryLater <=> RetryLater, RetryNowAlternateRoute <=> RetryNowAlternateRoute,
    Stop <=> Stop, FixNumber <=> FixNumber, FixConfiguration <=> FixConfiguration,
});
enum_map!(Alternative <=> Alternative {
    Sms <=> Sms, Callback <=> Callback, Email <=> Email, Voicemail <=> Voicemail,
    ContactTarget <=> ContactTarget,
});

/// A proto enum value (i32) as a domain enum; unknown and UNSPECIFIED values give `None`.
pub fn enum_from_i32<P, D>(value: i32) -> Option<D>
where
    P: TryFrom<i32>,
    D: TryFrom<P>,
{
    P::try_from(value).ok().and_then(|p| D::try_from(p).ok())
}

pub fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

/// A proto timestamp as `SystemTime`; `None` when it is outside what `SystemTime` holds.
pub fn system_time(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    let nanos = Duration::new(0, u32::try_from(ts.nanos).ok()?);
    if ts.seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(ts.seconds.unsigned_abs()) + nanos)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(ts.seconds.unsigned_abs()))?
            .checked_add(nanos)
    }
}

/// The wire form of a classification the caller no longer needs: its strings move.
impl From<Classification> for pb::Classification {
    fn from(c: Classification) -> Self {
        pb::Classification {
            sip_phrase: c.sip_phrase.into_owned(),
            q850_location: c.q850_location.unwrap_or_default(),
            reason_text: c.reason_text.unwrap_or_default(),
            summary: c.summary.into_owned(),
            ..pb::Classification::from(&Classification {
                sip_phrase: Cow::Borrowed(""),
                q850_location: None,
                reason_text: None,
                summary: Cow::Borrowed(""),
                ..c
            })
        }
    }
}

impl From<&Classification> for pb::Classification {
    fn from(c: &Classification) -> Self {
        pb::Classification {
            category: c.category.into(),
            fault: c.fault.into(),
            retryable: c.retryable.into(),
            sip_code: c.sip_code.map(i32::from),
            reported_sip_code: c.reported_sip_code.map(i32::from),
            sip_phrase: c.sip_phrase.to_string(),
            q850_cause: c.q850_cause.map(i32::from),
            q850_cause_source: c.q850_source.map(i32::from).unwrap_or_default(),
            q850_location: c.q850_location.clone().unwrap_or_default(),
            reason_text: c.reason_text.clone().unwrap_or_default(),
            retry_after_seconds: c.retry_after.map(|r| r.seconds),
            retry_after_scope: c.retry_after.map(|r| r.scope.into()).unwrap_or_default(),
            summary: c.summary.to_string(),
            basis: c.basis.into(),
            override_name: c.override_name.as_deref().unwrap_or_default().to_owned(),
        }
    }
}

/// A classification read back from the wire (the CLI's client side). Values the server
/// did not set fall back to the vocabulary's "unknown" members.
impl From<&pb::Classification> for Classification {
    fn from(c: &pb::Classification) -> Self {
        let retry_after = match (
            c.retry_after_seconds,
            enum_from_i32::<pb::RetryAfterScope, RetryAfterScope>(c.retry_after_scope),
        ) {
            (Some(seconds), Some(scope)) => Some(AppliedRetryAfter { seconds, scope }),
            _ => None,
        };
        Classification {
            category: enum_from_i32::<pb::Category, _>(c.category).unwrap_or(Category::Other),
            fault: enum_from_i32::<pb::Fault, _>(c.fault).unwrap_or(Fault::Unknown),
            retryable: enum_from_i32::<pb::Retryable, _>(c.retryable).unwrap_or(Retryable::No),
            sip_code: c.sip_code.and_then(|v| u16::try_from(v).ok()),
            reported_sip_code: c.reported_sip_code.and_then(|v| u16::try_from(v).ok()),
            sip_phrase: Cow::Owned(c.sip_phrase.clone()),
            q850_cause: c.q850_cause.and_then(|v| u8::try_from(v).ok()),
            q850_source: enum_from_i32::<pb::Q850CauseSource, _>(c.q850_cause_source),
            q850_location: non_empty(&c.q850_location),
            reason_text: non_empty(&c.reason_text),
            retry_after,
            summary: Cow::Owned(c.summary.clone()),
            basis: enum_from_i32::<pb::ClassificationBasis, _>(c.basis).unwrap_or(Basis::SipCode),
            override_name: (!c.override_name.is_empty()).then(|| c.override_name.as_str().into()),
        }
    }
}

/// The wire form of a decision the caller no longer needs: its strings move.
impl From<Decision> for pb::Decision {
    fn from(d: Decision) -> Self {
        pb::Decision {
            user_message: d.user_message,
            rule: d.rule,
            explanation: d.explanation,
            ..pb::Decision::from(&Decision {
                user_message: String::new(),
                rule: String::new(),
                explanation: String::new(),
                ..d
            })
        }
    }
}

impl From<&Decision> for pb::Decision {
    fn from(d: &Decision) -> Self {
        pb::Decision {
            action: d.action.into(),
            notify_user: d.notify_user,
            user_message: d.user_message.clone(),
            alternatives: d.alternatives.iter().map(|a| i32::from(*a)).collect(),
            retry: d.retry.as_ref().map(|r| pb::RetryPlan {
                not_before: Some(timestamp(r.not_before)),
                delay_seconds: r.delay_seconds,
                next_attempt: r.next_attempt,
                max_attempts: r.max_attempts,
                honours_retry_after: r.honours_retry_after,
            }),
            avoid_route_seconds: d.avoid_route_seconds,
            alert_operator: d.alert_operator,
            suppressed: d.suppressed,
            rule: d.rule.clone(),
            explanation: d.explanation.clone(),
            attempt: d.attempt,
            policy_version: d.policy_version.to_string(),
        }
    }
}

impl From<&pb::Decision> for Decision {
    fn from(d: &pb::Decision) -> Self {
        Decision {
            action: enum_from_i32::<pb::Action, _>(d.action).unwrap_or(Action::Stop),
            notify_user: d.notify_user,
            user_message: d.user_message.clone(),
            alternatives: d
                .alternatives
                .iter()
                .filter_map(|a| enum_from_i32::<pb::Alternative, _>(*a))
                .collect(),
            retry: d.retry.as_ref().map(|r| RetryPlan {
                not_before: r
                    .not_before
                    .as_ref()
                    .and_then(system_time)
                    .unwrap_or(UNIX_EPOCH),
                delay_seconds: r.delay_seconds,
                next_attempt: r.next_attempt,
                max_attempts: r.max_attempts,
                honours_retry_after: r.honours_retry_after,
            }),
            avoid_route_seconds: d.avoid_route_seconds,
            alert_operator: d.alert_operator,
            suppressed: d.suppressed,
            rule: d.rule.clone(),
            explanation: d.explanation.clone(),
            attempt: d.attempt,
            policy_version: d.policy_version.as_str().into(),
        }
    }
}

/// The wire form of a domain outcome (events, the CLI's report).
impl From<&crate::domain::Outcome> for pb::CallOutcome {
    fn from(o: &crate::domain::Outcome) -> Self {
        let has_sip = o.sip_code.is_some()
            || !o.reason_phrase.is_empty()
            || !o.reason_header.is_empty()
            || !o.retry_after_header.is_empty();
        pb::CallOutcome {
            call_id: o.call_id.clone(),
            attempt: o.attempt.unwrap_or(0),
            from: o.from.clone(),
            to: o.to.clone(),
            sip: has_sip.then(|| pb::SipResponse {
                code: o.sip_code.and_then(|c| i32::try_from(c).ok()),
                reason_phrase: o.reason_phrase.clone(),
                reason_header: o.reason_header.clone(),
                retry_after_header: o.retry_after_header.clone(),
            }),
            raw_sip_response: o.raw_sip_response.clone().unwrap_or_default(),
            provider: o.provider.as_ref().map(|(name, cause)| pb::ProviderCause {
                name: name.clone(),
                cause: cause.clone(),
            }),
            started_at: o.started_at.map(timestamp),
            ended_at: o.ended_at.map(timestamp),
            labels: o
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_value_round_trips_through_its_proto_enum() {
        for c in Category::ALL {
            assert_eq!(
                enum_from_i32::<pb::Category, Category>(i32::from(*c)),
                Some(*c)
            );
        }
        for f in Fault::ALL {
            assert_eq!(enum_from_i32::<pb::Fault, Fault>(i32::from(*f)), Some(*f));
        }
        for r in Retryable::ALL {
            assert_eq!(
                enum_from_i32::<pb::Retryable, Retryable>(i32::from(*r)),
                Some(*r)
            );
        }
        for a in Action::ALL {
            assert_eq!(enum_from_i32::<pb::Action, Action>(i32::from(*a)), Some(*a));
        }
        for a in Alternative::ALL {
            assert_eq!(
                enum_from_i32::<pb::Alternative, Alternative>(i32::from(*a)),
                Some(*a)
            );
        }
        assert_eq!(enum_from_i32::<pb::Category, Category>(0), None);
        assert_eq!(enum_from_i32::<pb::Category, Category>(999), None);
    }

    #[test]
    fn timestamps_convert_both_ways_and_reject_bad_nanos() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        assert_eq!(system_time(&timestamp(t)), Some(t));
        let bad = prost_types::Timestamp {
            seconds: 1,
            nanos: -1,
        };
        assert_eq!(system_time(&bad), None);
        let before_epoch = prost_types::Timestamp {
            seconds: -10,
            nanos: 5,
        };
        assert_eq!(
            system_time(&before_epoch),
            UNIX_EPOCH
                .checked_sub(Duration::from_secs(10))
                .map(|t| t + Duration::from_nanos(5))
        );
    }
}
