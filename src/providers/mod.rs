//! Provider hangup causes (Telnyx, Twilio, SignalWire, Vonage, Plivo, FreeSWITCH,
//! Asterisk) expressed in this
//! service's terms: a verdict, an optional Q.850 cause, and whether the cause overrides
//! a reported SIP code (rule R2: platform timer or cancel semantics) or defers to it.
//!
//! Owns the per-provider static tables (reference §7–§10). It must not apply rule
//! ordering or read SIP headers (that is `crate::classify`), and does no I/O.
//! Provider names and causes are matched case-insensitively after trimming.

pub mod asterisk;
pub mod callback;
pub mod freeswitch;
pub mod plivo;
pub mod telnyx;
pub mod twilio;
pub mod vonage;

use crate::domain::{Category, Fault, Retryable, Verdict};

/// A provider whose causes the classifier understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Telnyx,
    Twilio,
    /// SignalWire's cXML (LaML) callbacks use Twilio's statuses.
    SignalWire,
    Vonage,
    Plivo,
    FreeSwitch,
    Asterisk,
}

impl Provider {
    pub const ALL: [Provider; 7] = [
        Provider::Telnyx,
        Provider::Twilio,
        Provider::SignalWire,
        Provider::Vonage,
        Provider::Plivo,
        Provider::FreeSwitch,
        Provider::Asterisk,
    ];

    /// The provider called `name` (case-insensitive); `None` for unknown names, which
    /// the classifier ignores (R2).
    pub fn from_name(name: &str) -> Option<Provider> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
    }

    /// The lower-case name used in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Telnyx => "telnyx",
            Provider::Twilio => "twilio",
            Provider::SignalWire => "signalwire",
            Provider::Vonage => "vonage",
            Provider::Plivo => "plivo",
            Provider::FreeSwitch => "freeswitch",
            Provider::Asterisk => "asterisk",
        }
    }

    /// What this provider's `cause` means; `None` for causes it does not define.
    pub fn lookup(self, cause: &str) -> Option<ProviderCause> {
        let cause = cause.trim();
        match self {
            Provider::Telnyx => telnyx::lookup(cause),
            Provider::Twilio | Provider::SignalWire => twilio::lookup(cause),
            Provider::Vonage => vonage::lookup(cause),
            Provider::Plivo => plivo::lookup(cause),
            Provider::FreeSwitch => freeswitch::lookup(cause),
            Provider::Asterisk => asterisk::lookup(cause),
        }
    }
}

/// The meaning of one provider cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderCause {
    /// Canonical spelling of the cause (e.g. `no-answer`, `USER_BUSY`, `AST_CAUSE_BUSY`).
    pub name: &'static str,
    /// The verdict (used always when `overrides_sip_code`, else only without a SIP code).
    pub verdict: Verdict,
    /// R2: timer/cancel semantics that override any SIP code (the platform's own timer
    /// sent the CANCEL, so the SIP code is a misleading 487).
    pub overrides_sip_code: bool,
    /// The Q.850 cause (1–127) the provider reported, when the cause is one.
    pub q850_cause: Option<u8>,
}

impl ProviderCause {
    pub(crate) const fn new(
        name: &'static str,
        v: (Category, Fault, Retryable),
        overrides_sip_code: bool,
        q850_cause: Option<u8>,
    ) -> ProviderCause {
        ProviderCause {
            name,
            verdict: Verdict::new(v.0, v.1, v.2),
            overrides_sip_code,
            q850_cause,
        }
    }
}

/// Verdict shorthands shared by the provider tables.
pub(crate) mod v {
    use crate::domain::{Category as C, Fault as F, Retryable as R};

    pub const ANSWERED: (C, F, R) = (C::Answered, F::None, R::No);
    pub const NO_ANSWER: (C, F, R) = (C::NoAnswer, F::CalleeDevice, R::Later);
    pub const CANCELED: (C, F, R) = (C::Canceled, F::CallerAction, R::No);
    pub const BUSY: (C, F, R) = (C::Busy, F::CalleeDevice, R::Later);
    pub const DECLINED: (C, F, R) = (C::Declined, F::CalleeChoice, R::No);
    pub const BAD_NUMBER: (C, F, R) = (C::InvalidNumber, F::CallerData, R::No);
    pub const OTHER: (C, F, R) = (C::Other, F::Unknown, R::No);
    pub const CONFIG: (C, F, R) = (C::ConfigError, F::CallerConfig, R::No);
    pub const NET: (C, F, R) = (C::NetworkError, F::Network, R::NowAlternateRoute);
    pub const UNAVAILABLE: (C, F, R) = (C::Unavailable, F::CalleeDevice, R::Later);
    pub const UNWANTED: (C, F, R) = (C::RejectedUnwanted, F::CalleeChoice, R::No);
}

/// Finds `cause` (case-insensitive) in a provider table.
pub(crate) fn find(table: &'static [ProviderCause], cause: &str) -> Option<ProviderCause> {
    table
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(cause))
        .copied()
}

/// Parses an all-digit cause number (no sign, at most 5 digits).
pub(crate) fn cause_number(cause: &str) -> Option<u16> {
    if cause.is_empty() || cause.len() > 5 || !cause.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    cause.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(Provider::from_name("Telnyx"), Some(Provider::Telnyx));
        assert_eq!(Provider::from_name(" TWILIO "), Some(Provider::Twilio));
        assert_eq!(
            Provider::from_name("FreeSWITCH"),
            Some(Provider::FreeSwitch)
        );
        assert_eq!(Provider::from_name("asterisk"), Some(Provider::Asterisk));
        assert_eq!(Provider::from_name("Vonage"), Some(Provider::Vonage));
        assert_eq!(Provider::from_name("bandwidth"), None);
        assert_eq!(Provider::from_name(""), None);
        for p in Provider::ALL {
            assert_eq!(Provider::from_name(p.as_str()), Some(p));
        }
    }

    #[test]
    fn cause_numbers() {
        assert_eq!(cause_number("17"), Some(17));
        assert_eq!(cause_number("0017"), Some(17));
        assert_eq!(cause_number("-1"), None);
        assert_eq!(cause_number("1e3"), None);
        assert_eq!(cause_number("999999"), None);
        assert_eq!(cause_number(""), None);
    }
}
