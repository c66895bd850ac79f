//! Provider call-status callbacks (the bodies of their webhooks) read into an outcome.
//!
//! Owns the envelopes and field names of Telnyx (Call Control v2 JSON and TeXML forms),
//! Twilio and SignalWire (form, or flat JSON), Vonage (JSON) and Plivo (form), which of
//! their events end a call, and each callback's idempotency key (reference
//! `webhooks.md` §1–§3 and §5.4). The bytes it reads have been verified by the edge:
//! this module must not check signatures, know HTTP, or do I/O.
//!
//! Only a terminal event carries an [`Outcome`]; every other verified event is still
//! read (to be counted) but records nothing. The outcome's `call_id` is the provider's
//! call id unless Telnyx's `client_state` carries the caller's own `{"call_id",
//! "attempt"}`; the edge may then override both from the callback URL.

use crate::domain::Outcome;
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// The providers that post call-status webhooks, and the route segment naming each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WebhookProvider {
    Telnyx,
    Twilio,
    SignalWire,
    Vonage,
    Plivo,
}

impl WebhookProvider {
    pub const ALL: [WebhookProvider; 5] = [
        WebhookProvider::Telnyx,
        WebhookProvider::Twilio,
        WebhookProvider::SignalWire,
        WebhookProvider::Vonage,
        WebhookProvider::Plivo,
    ];

    /// The lower-case name: the route segment, the `provider` label and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookProvider::Telnyx => "telnyx",
            WebhookProvider::Twilio => "twilio",
            WebhookProvider::SignalWire => "signalwire",
            WebhookProvider::Vonage => "vonage",
            WebhookProvider::Plivo => "plivo",
        }
    }

    /// The provider named exactly `name` (route segments are lower case).
    pub fn from_route(name: &str) -> Option<WebhookProvider> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// How the body is encoded (from its `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Form,
}

/// A verified callback, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// The event or status as the provider names it (`call.hangup`, `busy`, ...).
    pub event: String,
    /// The provider's idempotency key of this callback, prefixed with the provider's
    /// name: a redelivery has the same key, a later status of the same call another.
    pub delivery: String,
    /// The outcome of a terminal event; `None` for every other event.
    pub outcome: Option<Outcome>,
}

impl Callback {
    /// A verified event that ends nothing: counted, not recorded.
    fn ignored(event: String, delivery: String) -> Callback {
        Callback {
            event,
            delivery,
            outcome: None,
        }
    }

    /// A terminal event: its outcome carries the delivery id as its idempotency key.
    fn terminal(event: String, delivery: String, mut outcome: Outcome) -> Callback {
        outcome.delivery = Some(delivery.clone());
        Callback {
            event,
            delivery,
            outcome: Some(outcome),
        }
    }
}

/// Why a verified body cannot be read. The message names the field, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("the body is not the JSON this provider sends: {0}")]
    Json(String),
    #[error("`{0}` is missing or empty")]
    Missing(&'static str),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("the body is {0}, which this provider does not send to this route")]
    Format(&'static str),
}

/// Reads a verified callback of `provider` encoded as `format`.
pub fn read(
    provider: WebhookProvider,
    format: BodyFormat,
    body: &[u8],
) -> Result<Callback, CallbackError> {
    match (provider, format) {
        (WebhookProvider::Telnyx, BodyFormat::Json) => telnyx_json(body),
        // TeXML status callbacks: Twilio-shaped forms with Telnyx's hangup fields.
        (WebhookProvider::Telnyx, BodyFormat::Form) => {
            twilio_shaped(WebhookProvider::Telnyx, &Params::from_form(body))
        }
        (WebhookProvider::Twilio | WebhookProvider::SignalWire, BodyFormat::Form) => {
            twilio_shaped(provider, &Params::from_form(body))
        }
        // Studio, Functions and SWML send the same names as a flat JSON object.
        (WebhookProvider::Twilio | WebhookProvider::SignalWire, BodyFormat::Json) => {
            twilio_shaped(provider, &Params::from_flat_json(body)?)
        }
        (WebhookProvider::Vonage, BodyFormat::Json) => vonage(body),
        (WebhookProvider::Vonage, BodyFormat::Form) => Err(CallbackError::Format("a form")),
        (WebhookProvider::Plivo, BodyFormat::Form) => plivo(&Params::from_form(body)),
        (WebhookProvider::Plivo, BodyFormat::Json) => Err(CallbackError::Format("JSON")),
    }
}

/// Form or flat-JSON parameters, in the order sent, repeats kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// `application/x-www-form-urlencoded` pairs, decoded (`+` is a space).
    pub fn from_form(body: &[u8]) -> Params {
        Params(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// A JSON object of scalars (strings, numbers, booleans; `null` is absent).
    fn from_flat_json(body: &[u8]) -> Result<Params, CallbackError> {
        let map: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(body).map_err(|e| json_error(&e))?;
        Ok(Params(
            map.into_iter()
                .filter_map(|(k, v)| match v {
                    serde_json::Value::String(s) => Some((k, s)),
                    serde_json::Value::Number(n) => Some((k, n.to_string())),
                    serde_json::Value::Bool(b) => Some((k, b.to_string())),
                    _ => None,
                })
                .collect(),
        ))
    }

    /// The first non-empty value of `name`, trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .find(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<&str, CallbackError> {
        self.get(name).ok_or(CallbackError::Missing(name))
    }
}

/// Twilio's terminal `CallStatus` values (Twilio, SignalWire and TeXML).
const TWILIO_TERMINAL: &[&str] = &["completed", "busy", "no-answer", "canceled", "failed"];

/// A SIP final response code in a provider field (`"603"`); `None` for anything else,
/// including Telnyx's `"unspecified"` (no SIP response, e.g. inbound).
fn sip_code(text: Option<&str>) -> Option<i64> {
    let code: i64 = text?.trim().parse().ok()?;
    (100..=699).contains(&code).then_some(code)
}

/// A number as Vonage and Plivo send it (E.164 digits without `+`) made E.164; SIP
/// URIs and anything else are kept as sent.
fn e164(number: &str) -> String {
    let number = number.trim();
    if number.len() >= 8 && number.bytes().all(|b| b.is_ascii_digit()) {
        format!("+{number}")
    } else {
        number.to_owned()
    }
}

fn rfc3339(text: Option<&str>) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text?.trim().trim_end_matches('Z')).ok()
}

/// Labels every webhook outcome carries: the provider, and its own ids.
fn labels<'a>(
    provider: WebhookProvider,
    pairs: impl IntoIterator<Item = (&'static str, Option<&'a str>)>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([("provider".to_owned(), provider.as_str().to_owned())]);
    for (name, value) in pairs {
        if let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) {
            labels.insert(name.to_owned(), value.to_owned());
        }
    }
    labels
}

/// The caller's own correlation carried by Telnyx's `client_state`: base64 of
/// `{"call_id": "...", "attempt": N}`. Any other client state is the caller's business
/// and is ignored.
pub fn client_state(text: &str) -> Option<(String, Option<u32>)> {
    #[derive(Deserialize)]
    struct State {
        call_id: String,
        attempt: Option<u32>,
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    let state: State = serde_json::from_slice(&bytes).ok()?;
    let call_id = state.call_id.trim();
    (!call_id.is_empty()).then(|| (call_id.to_owned(), state.attempt.filter(|a| *a > 0)))
}

/// Telnyx Call Control / Voice API v2 (`{"data": {...}, "meta": {...}}`).
fn telnyx_json(body: &[u8]) -> Result<Callback, CallbackError> {
    #[derive(Deserialize)]
    struct Envelope {
        data: Option<Data>,
        // v1 is flat: its `event_type` sits at the top.
        event_type: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Data {
        event_type: Option<String>,
        id: Option<String>,
        #[serde(default)]
        payload: Payload,
    }
    #[derive(Deserialize, Default)]
    struct Payload {
        call_control_id: Option<String>,
        call_leg_id: Option<String>,
        call_session_id: Option<String>,
        connection_id: Option<String>,
        client_state: Option<String>,
        from: Option<String>,
        to: Option<String>,
        start_time: Option<String>,
        end_time: Option<String>,
        hangup_cause: Option<String>,
        hangup_source: Option<String>,
        sip_hangup_cause: Option<String>,
    }
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
    let Some(data) = envelope.data else {
        if envelope.event_type.is_some() {
            return Err(CallbackError::Unsupported(
                "Telnyx webhook_api_version 1 is not supported: set the application's \
                 webhook API version to 2",
            ));
        }
        return Err(CallbackError::Missing("data"));
    };
    let event = non_empty(data.event_type).ok_or(CallbackError::Missing("data.event_type"))?;
    let id = non_empty(data.id).ok_or(CallbackError::Missing("data.id"))?;
    let delivery = format!("telnyx:{id}");
    if event != "call.hangup" {
        return Ok(Callback::ignored(event, delivery));
    }
    let p = data.payload;
    let provider_call_id = non_empty(p.call_control_id.clone())
        .or_else(|| non_empty(p.call_leg_id.clone()))
        .ok_or(CallbackError::Missing("data.payload.call_control_id"))?;
    let (call_id, attempt) = p
        .client_state
        .as_deref()
        .and_then(client_state)
        .unwrap_or((provider_call_id.clone(), None));
    let outcome = Outcome {
        call_id,
        attempt,
        from: p.from.unwrap_or_default().trim().to_owned(),
        to: p.to.unwrap_or_default().trim().to_owned(),
        sip_code: sip_code(p.sip_hangup_cause.as_deref()),
        provider: non_empty(p.hangup_cause).map(|c| ("telnyx".to_owned(), c)),
        started_at: rfc3339(p.start_time.as_deref()),
        ended_at: rfc3339(p.end_time.as_deref()),
        labels: labels(
            WebhookProvider::Telnyx,
            [
                ("provider_call_id", Some(provider_call_id.as_str())),
                ("call_session_id", p.call_session_id.as_deref()),
                ("connection_id", p.connection_id.as_deref()),
                ("hangup_source", p.hangup_source.as_deref()),
            ],
        ),
        ..Outcome::default()
    };
    Ok(Callback::terminal(event, delivery, outcome))
}

/// A JSON error without the body's text (serde's messages quote values): its kind and
/// place only.
fn json_error(e: &serde_json::Error) -> CallbackError {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "a field of the wrong type",
        serde_json::error::Category::Eof => "cut short",
    };
    CallbackError::Json(format!("{kind} at line {} column {}", e.line(), e.column()))
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// Twilio, SignalWire and Telnyx TeXML status callbacks (`CallSid`, `CallStatus`,
/// `SipResponseCode` / `SipHangupCause`, `SequenceNumber`). A `<Dial>` action callback
/// (`DialCallStatus`, `DialCallSid`) is read the same way.
fn twilio_shaped(provider: WebhookProvider, params: &Params) -> Result<Callback, CallbackError> {
    let (status, call_sid) = match params.get("CallStatus") {
        Some(status) => (status, params.required("CallSid")?),
        None => match params.get("DialCallStatus") {
            Some(status) => (
                status,
                params
                    .get("DialCallSid")
                    .map_or_else(|| params.required("CallSid"), Ok)?,
            ),
            None => return Err(CallbackError::Missing("CallStatus")),
        },
    };
    let status = status.to_ascii_lowercase();
    // (CallSid, SequenceNumber) orders a call's callbacks; without it the status is the
    // best key (never the call id alone: a later status would be dropped).
    let sequence = params.get("SequenceNumber").unwrap_or(&status);
    let name = provider.as_str();
    let delivery = format!("{name}:{call_sid}:{sequence}");
    if !TWILIO_TERMINAL.contains(&status.as_str()) {
        return Ok(Callback::ignored(status, delivery));
    }
    // TeXML names Telnyx's hangup cause; Twilio and SignalWire have only the status.
    let cause = match provider {
        WebhookProvider::Telnyx => params.get("HangupCause").unwrap_or(&status),
        _ => &status,
    };
    let cause_provider = match provider {
        WebhookProvider::SignalWire => "signalwire",
        WebhookProvider::Telnyx => "telnyx",
        _ => "twilio",
    };
    let outcome = Outcome {
        call_id: call_sid.to_owned(),
        from: params.get("From").unwrap_or_default().to_owned(),
        to: params.get("To").unwrap_or_default().to_owned(),
        sip_code: sip_code(
            params
                .get("SipResponseCode")
                .or_else(|| params.get("SipHangupCause")),
        ),
        provider: Some((cause_provider.to_owned(), cause.to_owned())),
        labels: labels(
            provider,
            [
                ("provider_call_id", Some(call_sid)),
                ("account_sid", params.get("AccountSid")),
                ("connection_id", params.get("ConnectionId")),
                ("direction", params.get("Direction")),
                ("hangup_source", params.get("HangupSource")),
            ],
        ),
        ..Outcome::default()
    };
    Ok(Callback::terminal(status, delivery, outcome))
}

/// Vonage Voice API event webhooks (JSON).
fn vonage(body: &[u8]) -> Result<Callback, CallbackError> {
    #[derive(Deserialize)]
    struct Event {
        status: Option<String>,
        detail: Option<String>,
        uuid: Option<String>,
        conversation_uuid: Option<String>,
        from: Option<serde_json::Value>,
        to: Option<serde_json::Value>,
        timestamp: Option<String>,
        start_time: Option<String>,
        end_time: Option<String>,
        direction: Option<String>,
        network: Option<String>,
    }
    let event: Event = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
    let status = non_empty(event.status)
        .ok_or(CallbackError::Missing("status"))?
        .to_ascii_lowercase();
    let uuid = non_empty(event.uuid).ok_or(CallbackError::Missing("uuid"))?;
    let timestamp = non_empty(event.timestamp).unwrap_or_default();
    let delivery = format!("vonage:{uuid}:{status}:{timestamp}");
    if !super::vonage::TERMINAL.contains(&status.as_str()) {
        return Ok(Callback::ignored(status, delivery));
    }
    let cause = non_empty(event.detail)
        .filter(|d| super::vonage::lookup(d).is_some())
        .unwrap_or_else(|| status.clone());
    let outcome = Outcome {
        call_id: uuid.clone(),
        from: vonage_number(event.from.as_ref()),
        to: vonage_number(event.to.as_ref()),
        provider: Some(("vonage".to_owned(), cause)),
        started_at: rfc3339(event.start_time.as_deref()),
        ended_at: rfc3339(event.end_time.as_deref()),
        labels: labels(
            WebhookProvider::Vonage,
            [
                ("provider_call_id", Some(uuid.as_str())),
                ("conversation_uuid", event.conversation_uuid.as_deref()),
                ("direction", event.direction.as_deref()),
                ("network", event.network.as_deref()),
            ],
        ),
        ..Outcome::default()
    };
    Ok(Callback::terminal(status, delivery, outcome))
}

/// Vonage's `from`/`to`: a number string, or an endpoint object (`{"type": "phone",
/// "number": "..."}`, `{"type": "sip", "uri": "..."}`).
fn vonage_number(value: Option<&serde_json::Value>) -> String {
    match value {
        Some(serde_json::Value::String(s)) => e164(s),
        Some(serde_json::Value::Object(o)) => o
            .get("number")
            .and_then(serde_json::Value::as_str)
            .map(e164)
            .or_else(|| {
                o.get("uri")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Plivo hangup callbacks (`hangup_url`, Dial `callbackUrl`): forms.
fn plivo(params: &Params) -> Result<Callback, CallbackError> {
    let call_uuid = params
        .get("CallUUID")
        .or_else(|| params.get("DialBLegUUID"))
        .ok_or(CallbackError::Missing("CallUUID"))?;
    let status = params
        .get("CallStatus")
        .or_else(|| params.get("DialBLegStatus"))
        .ok_or(CallbackError::Missing("CallStatus"))?
        .to_ascii_lowercase();
    let event = params.get("Event").unwrap_or("hangup");
    let delivery = format!("plivo:{call_uuid}:{event}:{status}");
    if !super::plivo::TERMINAL.contains(&status.as_str()) {
        return Ok(Callback::ignored(status, delivery));
    }
    let cause = params
        .get("HangupCauseCode")
        .filter(|code| super::plivo::lookup(code).is_some())
        .unwrap_or(&status);
    let outcome = Outcome {
        call_id: call_uuid.to_owned(),
        from: params.get("From").map(e164).unwrap_or_default(),
        to: params.get("To").map(e164).unwrap_or_default(),
        sip_code: sip_code(params.get("SipResponseCode")),
        provider: Some(("plivo".to_owned(), cause.to_owned())),
        labels: labels(
            WebhookProvider::Plivo,
            [
                ("provider_call_id", Some(call_uuid)),
                ("hangup_cause", params.get("HangupCauseName")),
                ("hangup_source", params.get("HangupSource")),
                ("direction", params.get("Direction")),
            ],
        ),
        ..Outcome::default()
    };
    Ok(Callback::terminal(status, delivery, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TELNYX_HANGUP: &str = r#"{
      "data": {
        "record_type": "event",
        "event_type": "call.hangup",
        "id": "08464bf3-4e98-41f5-b526-09e9b04a66c7",
        "occurred_at": "2026-05-19T23:30:23.738431Z",
        "payload": {
          "call_control_id": "v3:CM8u1zCcmtZ3Jzb6vuXBSzCLS5p7ww8ypCUpyBJVrubAVjjLAAECYg",
          "call_leg_id": "b0457f28-53da-11f1-9961-02420aef271f",
          "call_session_id": "b04574f6-53da-11f1-8e4b-02420aef271f",
          "connection_id": "2963572552552678752",
          "client_state": "eyJhdHRlbXB0X2lkIjoiYTEyMyJ9",
          "from": "+15129342627",
          "to": "+15122548727",
          "start_time": "2026-05-19T23:30:15.038431Z",
          "end_time": "2026-05-19T23:30:23.738431Z",
          "state": "hangup",
          "hangup_cause": "call_rejected",
          "hangup_source": "callee",
          "sip_hangup_cause": "603",
          "telnyx_error": null
        }
      },
      "meta": { "attempt": 1, "delivered_to": "https://outcome.example.com/v1/webhooks/telnyx/acme" }
    }"#;

    #[test]
    fn telnyx_hangup_reads_the_reference_example() {
        let cb = read(
            WebhookProvider::Telnyx,
            BodyFormat::Json,
            TELNYX_HANGUP.as_bytes(),
        )
        .unwrap();
        assert_eq!(cb.event, "call.hangup");
        assert_eq!(cb.delivery, "telnyx:08464bf3-4e98-41f5-b526-09e9b04a66c7");
        let o = cb.outcome.unwrap();
        // The client state is someone else's ({"attempt_id": ...}): the call id is Telnyx's.
        assert_eq!(
            o.call_id,
            "v3:CM8u1zCcmtZ3Jzb6vuXBSzCLS5p7ww8ypCUpyBJVrubAVjjLAAECYg"
        );
        assert_eq!(o.attempt, None);
        assert_eq!(o.sip_code, Some(603));
        assert_eq!(o.provider, Some(("telnyx".into(), "call_rejected".into())));
        assert_eq!(o.to, "+15122548727");
        assert!(o.started_at.is_some() && o.ended_at > o.started_at);
        assert_eq!(o.labels["provider"], "telnyx");
        assert_eq!(o.labels["connection_id"], "2963572552552678752");
        assert_eq!(o.delivery.as_deref(), Some(cb.delivery.as_str()));
    }

    #[test]
    fn telnyx_client_state_carries_the_callers_ids() {
        let state = base64::engine::general_purpose::STANDARD
            .encode(r#"{"call_id":"order-77","attempt":2}"#);
        let body = TELNYX_HANGUP.replace("eyJhdHRlbXB0X2lkIjoiYTEyMyJ9", &state);
        let o = read(WebhookProvider::Telnyx, BodyFormat::Json, body.as_bytes())
            .unwrap()
            .outcome
            .unwrap();
        assert_eq!((o.call_id.as_str(), o.attempt), ("order-77", Some(2)));
        assert_eq!(
            o.labels["provider_call_id"],
            "v3:CM8u1zCcmtZ3Jzb6vuXBSzCLS5p7ww8ypCUpyBJVrubAVjjLAAECYg"
        );
    }

    #[test]
    fn telnyx_other_events_and_versions() {
        let body = TELNYX_HANGUP.replace("call.hangup", "call.answered");
        let cb = read(WebhookProvider::Telnyx, BodyFormat::Json, body.as_bytes()).unwrap();
        assert_eq!(cb.outcome, None);
        let v1 = r#"{"record_type":"event","event_type":"call_hangup","id":"x","payload":{}}"#;
        assert!(matches!(
            read(WebhookProvider::Telnyx, BodyFormat::Json, v1.as_bytes()),
            Err(CallbackError::Unsupported(_))
        ));
        let unspecified = TELNYX_HANGUP.replace("\"603\"", "\"unspecified\"");
        let o = read(
            WebhookProvider::Telnyx,
            BodyFormat::Json,
            unspecified.as_bytes(),
        )
        .unwrap()
        .outcome
        .unwrap();
        assert_eq!(o.sip_code, None);
    }

    #[test]
    fn twilio_form_callbacks() {
        let body = "ApiVersion=2010-04-01&Called=%2B15550104477&CallStatus=no-answer&Duration=0\
            &From=%2B12013800532&Direction=outbound-api&CallDuration=0\
            &Timestamp=Tue%2C+01+Nov+2016+01%3A59%3A13+%2B0000&AccountSid=AC123\
            &CallbackSource=call-progress-events&SipResponseCode=487&Caller=%2B12013800532\
            &SequenceNumber=3&CallSid=CA42&To=%2B15550104477";
        let cb = read(WebhookProvider::Twilio, BodyFormat::Form, body.as_bytes()).unwrap();
        assert_eq!(cb.delivery, "twilio:CA42:3");
        let o = cb.outcome.unwrap();
        assert_eq!(o.call_id, "CA42");
        assert_eq!(o.sip_code, Some(487));
        assert_eq!(o.provider, Some(("twilio".into(), "no-answer".into())));
        assert_eq!(o.from, "+12013800532");
        assert_eq!(o.labels["account_sid"], "AC123");
        let ringing = body.replace("no-answer", "ringing");
        let cb = read(
            WebhookProvider::Twilio,
            BodyFormat::Form,
            ringing.as_bytes(),
        )
        .unwrap();
        assert_eq!(cb.outcome, None);
        let sw = read(
            WebhookProvider::SignalWire,
            BodyFormat::Form,
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(sw.delivery, "signalwire:CA42:3");
        assert_eq!(sw.outcome.unwrap().labels["provider"], "signalwire");
    }

    #[test]
    fn twilio_json_and_texml() {
        let json =
            r#"{"CallSid":"CA9","CallStatus":"busy","SequenceNumber":2,"To":"+15550104477"}"#;
        let cb = read(WebhookProvider::Twilio, BodyFormat::Json, json.as_bytes()).unwrap();
        assert_eq!(cb.delivery, "twilio:CA9:2");
        assert_eq!(
            cb.outcome.unwrap().provider,
            Some(("twilio".into(), "busy".into()))
        );
        let texml = "CallSid=v3%3Aabc&CallStatus=completed&SequenceNumber=4&HangupCause=user_busy\
            &SipHangupCause=486&To=%2B15550104477";
        let cb = read(WebhookProvider::Telnyx, BodyFormat::Form, texml.as_bytes()).unwrap();
        assert_eq!(cb.delivery, "telnyx:v3:abc:4");
        let o = cb.outcome.unwrap();
        assert_eq!(o.sip_code, Some(486));
        assert_eq!(o.provider, Some(("telnyx".into(), "user_busy".into())));
    }

    #[test]
    fn vonage_and_plivo() {
        let vonage_body = r#"{"status":"failed","detail":"declined","uuid":"63f6","conversation_uuid":"CON-1",
            "from":"447700900000","to":"447700900001","timestamp":"2026-05-19T23:30:23.738Z"}"#;
        let cb = read(
            WebhookProvider::Vonage,
            BodyFormat::Json,
            vonage_body.as_bytes(),
        )
        .unwrap();
        assert_eq!(cb.delivery, "vonage:63f6:failed:2026-05-19T23:30:23.738Z");
        let o = cb.outcome.unwrap();
        assert_eq!(o.provider, Some(("vonage".into(), "declined".into())));
        assert_eq!(o.to, "+447700900001");
        let started = vonage_body.replace("failed", "started");
        assert_eq!(
            read(
                WebhookProvider::Vonage,
                BodyFormat::Json,
                started.as_bytes()
            )
            .unwrap()
            .outcome,
            None
        );
        let plivo_body = "CallUUID=abc-1&CallStatus=busy&HangupCauseCode=3010&HangupCauseName=Busy+Line\
            &From=14155550100&To=14155550111&Event=Hangup";
        let cb = read(
            WebhookProvider::Plivo,
            BodyFormat::Form,
            plivo_body.as_bytes(),
        )
        .unwrap();
        assert_eq!(cb.delivery, "plivo:abc-1:Hangup:busy");
        let o = cb.outcome.unwrap();
        // 3010 is not in the documented table: the status is the cause.
        assert_eq!(o.provider, Some(("plivo".into(), "busy".into())));
        assert_eq!(o.to, "+14155550111");
        let invalid = plivo_body.replace("busy", "failed").replace("3010", "2000");
        let o = read(WebhookProvider::Plivo, BodyFormat::Form, invalid.as_bytes())
            .unwrap()
            .outcome
            .unwrap();
        assert_eq!(o.provider, Some(("plivo".into(), "2000".into())));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for provider in WebhookProvider::ALL {
            for format in [BodyFormat::Json, BodyFormat::Form] {
                for body in [&b""[..], b"\xff\xfe", b"{", b"[]", b"a=b&&&=", b"null"] {
                    let _ = read(provider, format, body);
                }
            }
        }
        assert_eq!(
            read(WebhookProvider::Twilio, BodyFormat::Form, b"CallSid=CA1"),
            Err(CallbackError::Missing("CallStatus"))
        );
    }

    proptest::proptest! {
        /// Any bytes, in any provider's reader, are a callback or an error, never a panic;
        /// a terminal callback always carries its own delivery id.
        #[test]
        fn any_body_reads_without_panicking(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            form in "(CallSid|CallStatus|SequenceNumber|SipResponseCode|CallUUID|HangupCauseCode|To)=[a-z0-9%+-]{0,12}(&(CallSid|CallStatus|SipResponseCode|To)=[a-z0-9%+-]{0,12}){0,6}",
        ) {
            for provider in WebhookProvider::ALL {
                for format in [BodyFormat::Json, BodyFormat::Form] {
                    for input in [&body[..], form.as_bytes()] {
                        if let Ok(cb) = read(provider, format, input)
                            && let Some(outcome) = cb.outcome
                        {
                            proptest::prop_assert_eq!(outcome.delivery, Some(cb.delivery));
                        }
                    }
                }
            }
        }
    }
}
