//! The classification vocabulary: closed sets from the reference's section 1, and the
//! [`Classification`] that the classifier produces from them.
//!
//! Every enum serialises (serde, `Display`, `FromStr`) as the lower-case snake_case name
//! the reference uses (`declined`, `callee_choice`, `now_alternate_route`), which is also
//! the vocabulary of policy files and of the CLI's JSON output.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A name that is not part of a vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{name}`; expected one of: {}", expected.join(", "))]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
    pub expected: &'static [&'static str],
}

vocabulary! {
    /// What happened to the call.
    Category {
        /// Answered (2xx or a provider status saying it connected; includes voicemail).
        Answered => "answered",
        /// The callee's line or terminal is busy.
        Busy => "busy",
        /// The callee was reached or alerted but did not answer before a timer ran out.
        NoAnswer => "no_answer",
        /// The callee is temporarily unreachable.
        Unavailable => "unavailable",
        /// The callee explicitly refused this call.
        Declined => "declined",
        /// The callee (607) or an intermediary's analytics (608, 603+) marked the call unwanted.
        RejectedUnwanted => "rejected_unwanted",
        /// The destination does not exist, is incomplete, ambiguous or has changed.
        InvalidNumber => "invalid_number",
        /// A 3xx final response reported instead of being followed.
        Redirect => "redirect",
        /// Terminated by a caller-side CANCEL or BYE.
        Canceled => "canceled",
        /// A problem the calling side must fix.
        ConfigError => "config_error",
        /// A transient failure of a route, gateway or server.
        NetworkError => "network_error",
        /// Too little information to classify.
        Other => "other",
    }
}

vocabulary! {
    /// Who is at fault.
    Fault {
        None => "none",
        CalleeChoice => "callee_choice",
        CalleeDevice => "callee_device",
        Network => "network",
        CallerConfig => "caller_config",
        CallerData => "caller_data",
        CallerAction => "caller_action",
        Unknown => "unknown",
    }
}

vocabulary! {
    /// Whether and how to retry.
    Retryable {
        /// Do not redial automatically.
        No => "no",
        /// Redial the same destination after a delay.
        Later => "later",
        /// Retry at once through another trunk, gateway or route (never for 6xx).
        NowAlternateRoute => "now_alternate_route",
    }
}

vocabulary! {
    /// What a valid Retry-After refers to (RFC 3261 §20.33).
    RetryAfterScope {
        /// When the called party anticipates being available again.
        Callee => "callee",
        /// How long the server is unavailable to us.
        Route => "route",
    }
}

vocabulary! {
    /// Which input decided the classification (the reference's rules).
    Basis {
        /// The SIP status code (R1, R5, R7).
        SipCode => "sip_code",
        /// A specific Q.850 cause in the Reason header (R4).
        Q850Reason => "q850_reason",
        /// A 603+ analytics block (R3).
        AnalyticsBlock => "analytics_block",
        /// A provider cause with timer/cancel semantics overriding the SIP code (R2).
        ProviderOverride => "provider_override",
        /// A provider cause used because no SIP code was reported (R2).
        ProviderCause => "provider_cause",
        /// An override of the policy file (`Classification::override_name` names it).
        Override => "override",
    }
}

vocabulary! {
    /// Where the reported Q.850 cause came from.
    Q850Source {
        ReasonHeader => "reason_header",
        Provider => "provider",
        SipMapping => "sip_mapping",
    }
}

impl Category {
    /// Decline events: what the event stream delivers by default.
    pub fn is_decline(self) -> bool {
        matches!(self, Category::Declined | Category::RejectedUnwanted)
    }
}

/// The three-part outcome of a classification table row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Verdict {
    pub category: Category,
    pub fault: Fault,
    pub retryable: Retryable,
}

impl Verdict {
    pub const fn new(category: Category, fault: Fault, retryable: Retryable) -> Self {
        Verdict {
            category,
            fault,
            retryable,
        }
    }
}

/// A valid Retry-After that applies to the effective code (R6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRetryAfter {
    pub seconds: u32,
    pub scope: RetryAfterScope,
}

/// The classification of one outcome. Pure data; no tonic types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    pub category: Category,
    pub fault: Fault,
    pub retryable: Retryable,
    /// Effective SIP code: the reported one, or the x00 of its class when unregistered (R1).
    pub sip_code: Option<u16>,
    /// The code as reported (equal to `sip_code` for registered codes).
    pub reported_sip_code: Option<u16>,
    /// Registered reason phrase of the effective code ("" when there is none).
    pub sip_phrase: Cow<'static, str>,
    /// Q.850 cause (1–127) when known.
    pub q850_cause: Option<u8>,
    pub q850_source: Option<Q850Source>,
    /// RFC 8606 location of the Q.850 Reason value, when sent (e.g. "U", "LN").
    pub q850_location: Option<String>,
    /// Text of the Reason value that refined the outcome (audit, 603+ redress).
    pub reason_text: Option<String>,
    pub retry_after: Option<AppliedRetryAfter>,
    /// One-line human summary, e.g. "The call was declined by the recipient."
    pub summary: Cow<'static, str>,
    pub basis: Basis,
    /// The override that decided, when `basis` is `override` (`telnyx-486-channel-limit`,
    /// `tenant:acme/carrier-603-no-answer`). `default`: events written before it existed.
    #[serde(default)]
    pub override_name: Option<std::sync::Arc<str>>,
}

impl Classification {
    pub fn verdict(&self) -> Verdict {
        Verdict::new(self.category, self.fault, self.retryable)
    }
}
