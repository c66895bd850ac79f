//! Message and explanation templates: `{placeholder}` substitution with `{{`/`}}` escapes.
//!
//! Owns the placeholder vocabulary, parse-time validation (an unknown placeholder is an
//! error with its byte offset, so the policy loader can report line and column) and
//! rendering. Rendering must not panic and must stay cheap: templates are compiled
//! once into literal and placeholder segments, and rendering only appends to a string.
//! This module must not read files, clocks or anything outside its arguments.

use crate::domain::Outcome;
use crate::domain::{Classification, RetryAfterScope};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every placeholder name except `label.<key>`, for error messages and documentation.
pub const PLACEHOLDERS: &[&str] = &[
    "to",
    "from",
    "destination",
    "category",
    "fault",
    "summary",
    "cause",
    "sip_code",
    "sip_phrase",
    "q850_cause",
    "provider",
    "provider_cause",
    "retry_after",
    "retry_at",
    "delay",
    "avoid_route",
    "attempt",
    "next_attempt",
    "max_attempts",
    "rule",
    "tenant",
    "call_id",
    "label.<key>",
];

/// A value a template can refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    To,
    From,
    Destination,
    Category,
    Fault,
    Summary,
    Cause,
    SipCode,
    SipPhrase,
    Q850Cause,
    Provider,
    ProviderCause,
    RetryAfter,
    RetryAt,
    Delay,
    AvoidRoute,
    Attempt,
    NextAttempt,
    MaxAttempts,
    Rule,
    Tenant,
    CallId,
    Label(String),
}

impl Var {
    fn from_name(name: &str) -> Option<Var> {
        if let Some(key) = name.strip_prefix("label.") {
            // An empty key could never be sent, so it is almost certainly a typo.
            return (!key.is_empty()).then(|| Var::Label(key.to_owned()));
        }
        Some(match name {
            "to" => Var::To,
            "from" => Var::From,
            "destination" => Var::Destination,
            "category" => Var::Category,
            "fault" => Var::Fault,
            "summary" => Var::Summary,
            "cause" => Var::Cause,
            "sip_code" => Var::SipCode,
            "sip_phrase" => Var::SipPhrase,
            "q850_cause" => Var::Q850Cause,
            "provider" => Var::Provider,
            "provider_cause" => Var::ProviderCause,
            "retry_after" => Var::RetryAfter,
            "retry_at" => Var::RetryAt,
            "delay" => Var::Delay,
            "avoid_route" => Var::AvoidRoute,
            "attempt" => Var::Attempt,
            "next_attempt" => Var::NextAttempt,
            "max_attempts" => Var::MaxAttempts,
            "rule" => Var::Rule,
            "tenant" => Var::Tenant,
            "call_id" => Var::CallId,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Var(Var),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// A template syntax error: byte offset inside the template text and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

impl Template {
    /// Compiles `text`; placeholders are `{name}`, literal braces are `{{` and `}}`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = text.char_indices().peekable();
        while let Some((at, c)) = rest.next() {
            match c {
                '{' if rest.peek().map(|&(_, n)| n) == Some('{') => {
                    rest.next();
                    literal.push('{');
                }
                '}' if rest.peek().map(|&(_, n)| n) == Some('}') => {
                    rest.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(TemplateError {
                        offset: at,
                        message: "unmatched `}` in template; write `}}` for a literal brace".into(),
                    });
                }
                '{' => {
                    let start = at + 1;
                    let Some(len) = text[start..].find(['}', '{']) else {
                        return Err(TemplateError {
                            offset: at,
                            message: "unclosed `{` in template; write `{{` for a literal brace"
                                .into(),
                        });
                    };
                    let name = &text[start..start + len];
                    if text[start + len..].starts_with('{') {
                        return Err(TemplateError {
                            offset: at,
                            message: "unclosed `{` in template; write `{{` for a literal brace"
                                .into(),
                        });
                    }
                    let Some(var) = Var::from_name(name.trim()) else {
                        return Err(TemplateError {
                            offset: at,
                            message: format!(
                                "unknown placeholder `{{{name}}}` in template; expected one of: {}",
                                PLACEHOLDERS.join(", ")
                            ),
                        });
                    };
                    if !literal.is_empty() {
                        segments.push(Segment::Text(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Var(var));
                    // Skip the name and the closing brace.
                    while let Some(&(i, _)) = rest.peek() {
                        if i > start + len {
                            break;
                        }
                        rest.next();
                    }
                }
                _ => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Text(literal));
        }
        Ok(Template { segments })
    }

    /// Renders with the values of one decision. Absent values render as "".
    pub fn render(&self, cx: &RenderContext<'_>) -> String {
        let mut out = String::with_capacity(96);
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Var(var) => cx.write(var, &mut out),
            }
        }
        out
    }
}

/// The values a template can show.
pub struct RenderContext<'a> {
    pub outcome: &'a Outcome,
    pub classification: &'a Classification,
    pub destination: &'a str,
    pub tenant: &'a str,
    pub rule: &'a str,
    pub attempt: u32,
    pub max_attempts: u32,
    pub retry_at: Option<SystemTime>,
    pub delay_seconds: Option<u32>,
    pub avoid_route_seconds: u32,
}

impl RenderContext<'_> {
    fn write(&self, var: &Var, out: &mut String) {
        let c = self.classification;
        // `write!` into a String cannot fail; the results are ignored on purpose.
        match var {
            Var::To => out.push_str(&self.outcome.to),
            Var::From => out.push_str(&self.outcome.from),
            Var::Destination => out.push_str(self.destination),
            Var::Category => out.push_str(c.category.as_str()),
            Var::Fault => out.push_str(c.fault.as_str()),
            Var::Summary => out.push_str(&c.summary),
            Var::Cause => write_cause(self.outcome, c, out),
            Var::SipCode => {
                if let Some(code) = c.sip_code {
                    let _ = write!(out, "{code}");
                }
            }
            Var::SipPhrase => out.push_str(&c.sip_phrase),
            Var::Q850Cause => {
                if let Some(cause) = c.q850_cause {
                    let _ = write!(out, "{cause}");
                }
            }
            Var::Provider => {
                if let Some((name, _)) = &self.outcome.provider {
                    out.push_str(name);
                }
            }
            Var::ProviderCause => {
                if let Some((_, cause)) = &self.outcome.provider {
                    out.push_str(cause);
                }
            }
            Var::RetryAfter => {
                if let Some(ra) = c.retry_after {
                    write_duration(ra.seconds, out);
                }
            }
            Var::RetryAt => {
                if let Some(at) = self.retry_at {
                    write_rfc3339(at, out);
                }
            }
            Var::Delay => {
                if let Some(delay) = self.delay_seconds {
                    write_duration(delay, out);
                }
            }
            Var::AvoidRoute => {
                if self.avoid_route_seconds > 0 {
                    write_duration(self.avoid_route_seconds, out);
                }
            }
            Var::Attempt => {
                let _ = write!(out, "{}", self.attempt);
            }
            Var::NextAttempt => {
                let _ = write!(out, "{}", self.attempt.saturating_add(1));
            }
            Var::MaxAttempts => {
                let _ = write!(out, "{}", self.max_attempts);
            }
            Var::Rule => out.push_str(self.rule),
            Var::Tenant => out.push_str(self.tenant),
            Var::CallId => out.push_str(&self.outcome.call_id),
            Var::Label(key) => {
                if let Some(value) = self.outcome.labels.get(key) {
                    out.push_str(value);
                }
            }
        }
    }
}

/// `{cause}`: the most specific cause known, so explanations read well whether the
/// outcome came with a SIP code, only a Q.850 cause or only a provider cause.
fn write_cause(outcome: &Outcome, c: &Classification, out: &mut String) {
    if let Some(code) = c.sip_code {
        let _ = write!(out, "{code}");
        if !c.sip_phrase.is_empty() {
            out.push(' ');
            out.push_str(&c.sip_phrase);
        }
        if let Some(ra) = c.retry_after {
            out.push_str(", Retry-After ");
            write_duration(ra.seconds, out);
            if ra.scope == RetryAfterScope::Route {
                out.push_str(" for the route");
            }
        }
    } else if let Some(cause) = c.q850_cause {
        let _ = write!(out, "Q.850 cause {cause}");
    } else if let Some((name, cause)) = &outcome.provider {
        let _ = write!(out, "{name} cause `{cause}`");
    } else {
        out.push_str("no cause reported");
    }
}

pub(super) fn write_duration(seconds: u32, out: &mut String) {
    let _ = write!(
        out,
        "{}",
        humantime::format_duration(Duration::from_secs(u64::from(seconds)))
    );
}

/// Last second humantime can format (end of year 9999); later times would make its
/// `Display` fail, which `write!` into a String turns into a panic.
const MAX_RFC3339_SECONDS: u64 = 253_402_300_799;

fn write_rfc3339(at: SystemTime, out: &mut String) {
    match at.duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() <= MAX_RFC3339_SECONDS => {
            let _ = write!(out, "{}", humantime::format_rfc3339_seconds(at));
        }
        // Times humantime cannot represent (before 1970, after 9999) only arise from
        // nonsensical clocks; render nothing rather than panic.
        _ => {}
    }
}
