//! What the classifier reads ([`ClassifyInput`], a borrowed view of an [`Outcome`]) and
//! why it may refuse an outcome ([`ClassifyError`], rule R0).

use crate::domain::Outcome;
use std::collections::BTreeMap;

/// A provider's hangup cause as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderInput<'a> {
    /// telnyx, twilio, freeswitch, asterisk (case-insensitive); unknown names are ignored.
    pub name: &'a str,
    pub cause: &'a str,
}

/// What the classifier reads from a reported outcome. Empty strings mean "not sent".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassifyInput<'a> {
    /// The SIP status code as reported (validated by R0 inside the classifier).
    pub sip_code: Option<i64>,
    pub reason_phrase: &'a str,
    /// Reason header value(s); several values may be comma-separated.
    pub reason_header: &'a str,
    pub retry_after_header: &'a str,
    /// A raw SIP response to parse; explicit fields above override its headers.
    pub raw_sip_response: Option<&'a [u8]>,
    pub provider: Option<ProviderInput<'a>>,
    /// What only overrides read: the tenant reporting and the outcome's labels.
    pub tenant: &'a str,
    pub labels: Option<&'a BTreeMap<String, String>>,
}

/// Why an outcome cannot be classified (R0). Each names the input field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    #[error("SIP code {0} is provisional (1xx), not a final outcome")]
    ProvisionalCode(i64),
    #[error("SIP code {0} is out of range: a final response code is 200 to 699")]
    CodeOutOfRange(i64),
    #[error("the outcome has neither a SIP code nor a provider cause")]
    NothingToClassify,
    #[error("raw SIP response: {0}")]
    RawSipResponse(String),
    #[error("SIP code {explicit} conflicts with the raw response's status code {raw}")]
    ConflictingCode { explicit: i64, raw: u16 },
}

impl ClassifyError {
    /// The input field at fault, as a path relative to the outcome (`sip.code`).
    pub fn field(&self) -> &'static str {
        match self {
            ClassifyError::ProvisionalCode(_)
            | ClassifyError::CodeOutOfRange(_)
            | ClassifyError::ConflictingCode { .. } => "sip.code",
            ClassifyError::NothingToClassify => "sip.code",
            ClassifyError::RawSipResponse(_) => "raw_sip_response",
        }
    }
}

impl<'a> From<&'a Outcome> for ClassifyInput<'a> {
    /// The part of the outcome the classifier reads.
    fn from(outcome: &'a Outcome) -> Self {
        ClassifyInput {
            sip_code: outcome.sip_code,
            reason_phrase: &outcome.reason_phrase,
            reason_header: &outcome.reason_header,
            retry_after_header: &outcome.retry_after_header,
            raw_sip_response: outcome.raw_sip_response.as_deref(),
            provider: outcome
                .provider
                .as_ref()
                .map(|(name, cause)| ProviderInput {
                    name: name.as_str(),
                    cause: cause.as_str(),
                }),
            tenant: "",
            labels: Some(&outcome.labels),
        }
    }
}
