//! The handling decision returned for every outcome.

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

vocabulary! {
    /// The primary thing the dialer should do next.
    Action {
        /// Nothing to do (answered).
        None => "none",
        /// Redial the same destination no earlier than `retry.not_before`.
        RetryLater => "retry_later",
        /// Retry at once through another route; if none, `retry.not_before` applies.
        RetryNowAlternateRoute => "retry_now_alternate_route",
        /// Do not redial automatically.
        Stop => "stop",
        /// The number is wrong or obsolete.
        FixNumber => "fix_number",
        /// The calling side's configuration must be fixed.
        FixConfiguration => "fix_configuration",
    }
}

vocabulary! {
    /// Another way to reach the callee.
    Alternative {
        Sms => "sms",
        Callback => "callback",
        Email => "email",
        Voicemail => "voicemail",
        /// The Contact target of a redirect.
        ContactTarget => "contact_target",
    }
}

/// When and how to retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPlan {
    pub not_before: SystemTime,
    pub delay_seconds: u32,
    pub next_attempt: u32,
    pub max_attempts: u32,
    /// True when `not_before` comes from the Retry-After header rather than backoff.
    pub honours_retry_after: bool,
}

/// The handling decision for one outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    pub notify_user: bool,
    /// Rendered user message ("" when `notify_user` is false).
    pub user_message: String,
    pub alternatives: Vec<Alternative>,
    pub retry: Option<RetryPlan>,
    /// Route-scope Retry-After: avoid the answering route this long (clamped by policy).
    pub avoid_route_seconds: u32,
    pub alert_operator: bool,
    /// The destination is suppressed by its recent history.
    pub suppressed: bool,
    /// Name of the rule that decided, e.g. "declined" or "tenant:acme/vip-busy".
    pub rule: String,
    /// One line explaining the decision.
    pub explanation: String,
    /// Attempt number of the reported outcome (sent or derived).
    pub attempt: u32,
    /// The version of the policy that decided: the first 12 hex digits of the SHA-256
    /// of its text. A duplicate report keeps the version of its first decision.
    #[serde(default)]
    pub policy_version: std::sync::Arc<str>,
}
