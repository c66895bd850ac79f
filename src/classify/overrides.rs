//! Classification overrides: data that corrects carriers who misreport (a 603 that is
//! really a ring-out, a Telnyx `486 … D5` that is a channel limit, not a busy callee).
//!
//! Owns the compiled override table ([`Overrides`]), what an override may look at
//! ([`OverrideConditions`]), what it may change ([`OverrideEffect`]), and matching. The
//! table is written in the policy file (`[[overrides]]`) and compiled by the policy
//! parser, which locates errors; this module must not parse files or know their syntax
//! beyond a [`ReasonPattern`]'s regular expression. Pure: no I/O, no clock.
//!
//! Where overrides sit among the reference's rules (see `rules.rs`): after R0 and R1
//! (validation and the effective code), before R2–R7, first match wins. Three protocol
//! constraints still hold whatever an override says: a 603+ analytics block (R3) is
//! never overridden (the network's explicit, regulated notice); a 6xx is global (R5),
//! so an override's `now_alternate_route` becomes `later` on a 6xx; and a Retry-After
//! (R6) stays attached only when it agrees with the override's verdict (callee scope
//! with `later`, route scope with `now_alternate_route`), as for a Q.850 refinement.

use crate::domain::{Category, Fault, Retryable, Verdict};
use crate::sip::CodePattern;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest `reason_phrase` pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Ceiling of a compiled pattern's program (the regex crate's `size_limit`), so that a
/// policy cannot make every report match against a huge automaton.
pub const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
/// Ceiling of the lazy DFA's cache per pattern.
const PATTERN_DFA_LIMIT: usize = 1024 * 1024;
/// Deepest nesting of groups and repetitions in a pattern.
const PATTERN_NEST_LIMIT: u32 = 32;

/// A label condition: the label must be present, with any value or with this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelMatch {
    Present,
    Equals(String),
}

impl LabelMatch {
    /// `"*"` means any value.
    pub fn parse(value: &str) -> LabelMatch {
        match value {
            "*" => LabelMatch::Present,
            v => LabelMatch::Equals(v.to_owned()),
        }
    }

    pub fn matches(&self, value: Option<&String>) -> bool {
        match (self, value) {
            (_, None) => false,
            (LabelMatch::Present, Some(_)) => true,
            (LabelMatch::Equals(want), Some(got)) => want == got,
        }
    }
}

/// A case-insensitive regular expression on the SIP reason phrase, compiled once at
/// load with size and nesting limits (the regex crate: linear time in the phrase).
#[derive(Debug, Clone)]
pub struct ReasonPattern {
    regex: regex::Regex,
}

/// Why a pattern was refused; `offset` is the byte in the pattern where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub offset: usize,
    pub message: String,
}

impl ReasonPattern {
    pub fn new(pattern: &str) -> Result<ReasonPattern, PatternError> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(PatternError {
                offset: MAX_PATTERN_LEN,
                message: format!("the pattern is longer than {MAX_PATTERN_LEN} bytes"),
            });
        }
        // regex-syntax first: its errors carry the position, the regex crate's do not.
        let ast = regex_syntax::ast::parse::ParserBuilder::new()
            .nest_limit(PATTERN_NEST_LIMIT)
            .build()
            .parse(pattern)
            .map_err(|e| PatternError {
                offset: e.span().start.offset,
                message: format!("invalid regular expression: {}", e.kind()),
            })?;
        regex_syntax::hir::translate::TranslatorBuilder::new()
            .case_insensitive(true)
            .build()
            .translate(pattern, &ast)
            .map_err(|e| PatternError {
                offset: e.span().start.offset,
                message: format!("invalid regular expression: {}", e.kind()),
            })?;
        let regex = regex::RegexBuilder::new(pattern)
            .case_insensitive(true)
            .nest_limit(PATTERN_NEST_LIMIT)
            .size_limit(PATTERN_SIZE_LIMIT)
            .dfa_size_limit(PATTERN_DFA_LIMIT)
            .build()
            .map_err(|e| PatternError {
                offset: 0,
                message: match e {
                    regex::Error::CompiledTooBig(limit) => format!(
                        "the regular expression compiles to more than {limit} bytes; simplify it"
                    ),
                    other => format!("invalid regular expression: {other}"),
                },
            })?;
        Ok(ReasonPattern { regex })
    }

    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }

    pub fn is_match(&self, phrase: &str) -> bool {
        self.regex.is_match(phrase)
    }
}

/// What an override looks at. All optional and AND-ed; inside a list any entry may
/// match. Named as the policy's rule conditions are.
#[derive(Debug, Clone, Default)]
pub struct OverrideConditions {
    pub tenants: Vec<String>,
    /// Lower-case provider names.
    pub providers: Vec<String>,
    pub labels: Vec<(String, LabelMatch)>,
    /// Matched against the effective and the reported code.
    pub sip_codes: Vec<CodePattern>,
    pub q850_causes: Vec<u8>,
    /// Lower-case provider causes, as reported (`user_busy`, `failed`).
    pub provider_causes: Vec<String>,
    pub reason_phrase: Option<ReasonPattern>,
}

/// What an override changes; the fields left out keep what the rules gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverrideEffect {
    pub category: Option<Category>,
    pub fault: Option<Fault>,
    pub retryable: Option<Retryable>,
    pub summary: Option<Arc<str>>,
}

impl OverrideEffect {
    pub fn is_empty(&self) -> bool {
        self.category.is_none()
            && self.fault.is_none()
            && self.retryable.is_none()
            && self.summary.is_none()
    }

    /// `base` changed by this effect, then held to R5 for `code`.
    pub(crate) fn apply(&self, base: Verdict, code: Option<u16>) -> Verdict {
        let mut v = Verdict::new(
            self.category.unwrap_or(base.category),
            self.fault.unwrap_or(base.fault),
            self.retryable.unwrap_or(base.retryable),
        );
        // R5: "A 2xx or 6xx class final response always terminates a sequential
        // search" (RFC 3261 §6). The closest retry that respects it is a later one on
        // the same route.
        if code.is_some_and(|c| c >= 600) && v.retryable == Retryable::NowAlternateRoute {
            v.retryable = Retryable::Later;
        }
        v
    }
}

/// One compiled override.
#[derive(Debug, Clone)]
pub struct Override {
    /// As reported in `Classification::override_name` (`telnyx-486-channel-limit`,
    /// `tenant:acme/carrier-x-603`).
    pub name: Arc<str>,
    pub description: String,
    pub when: OverrideConditions,
    pub then: OverrideEffect,
}

/// What an override is matched against: the outcome as reported plus what R0/R1 and
/// the Reason header established.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub tenant: &'a str,
    pub provider: Option<(&'a str, &'a str)>,
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub reason_phrase: &'a str,
    pub sip_code: Option<u16>,
    pub reported_sip_code: Option<u16>,
    pub q850_cause: Option<u8>,
}

impl OverrideConditions {
    /// No condition at all: such an override would rewrite every outcome.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
            && self.providers.is_empty()
            && self.labels.is_empty()
            && self.sip_codes.is_empty()
            && self.q850_causes.is_empty()
            && self.provider_causes.is_empty()
            && self.reason_phrase.is_none()
    }

    /// True when every condition holds. The regular expression runs last.
    fn matches(&self, s: &Subject<'_>) -> bool {
        (self.sip_codes.is_empty()
            || self.sip_codes.iter().any(|p| {
                s.sip_code.is_some_and(|c| p.matches(c))
                    || s.reported_sip_code.is_some_and(|c| p.matches(c))
            }))
            && (self.tenants.is_empty() || self.tenants.iter().any(|t| t == s.tenant))
            && (self.providers.is_empty()
                || s.provider.is_some_and(|(name, _)| {
                    self.providers.iter().any(|p| p.eq_ignore_ascii_case(name))
                }))
            && (self.provider_causes.is_empty()
                || s.provider.is_some_and(|(_, cause)| {
                    self.provider_causes
                        .iter()
                        .any(|p| p.eq_ignore_ascii_case(cause.trim()))
                }))
            && (self.q850_causes.is_empty()
                || s.q850_cause.is_some_and(|q| self.q850_causes.contains(&q)))
            && self
                .labels
                .iter()
                .all(|(key, want)| want.matches(s.labels.and_then(|l| l.get(key))))
            && self
                .reason_phrase
                .as_ref()
                .is_none_or(|p| p.is_match(s.reason_phrase))
    }
}

/// The override table of a policy: global overrides in file order, and per tenant its
/// own overrides first, then the global ones it does not disable.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    all: Vec<Override>,
    global: Vec<usize>,
    tenants: BTreeMap<String, Vec<usize>>,
}

/// The table of a classification without a policy.
static NONE: Overrides = Overrides {
    all: Vec::new(),
    global: Vec::new(),
    tenants: BTreeMap::new(),
};

impl Overrides {
    /// An empty table.
    pub fn none() -> &'static Overrides {
        &NONE
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Overrides in the table, global and tenant.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Appends a global override (evaluated in the order added).
    pub fn push_global(&mut self, o: Override) {
        self.global.push(self.all.len());
        self.all.push(o);
    }

    /// Gives `tenant` its own evaluation order: `own` first, then the global overrides
    /// whose names are not in `disabled`.
    pub fn set_tenant(&mut self, tenant: &str, own: Vec<Override>, disabled: &[&str]) {
        let mut order = Vec::with_capacity(own.len() + self.global.len());
        for o in own {
            order.push(self.all.len());
            self.all.push(o);
        }
        order.extend(self.global.iter().copied().filter(|&i| {
            self.all
                .get(i)
                .is_some_and(|o| !disabled.contains(&&*o.name))
        }));
        self.tenants.insert(tenant.to_owned(), order);
    }

    /// The global overrides' names, for the parser's duplicate and `disable` checks.
    pub fn global_names(&self) -> impl Iterator<Item = &str> {
        self.global
            .iter()
            .filter_map(|&i| self.all.get(i).map(|o| &*o.name))
    }

    /// The overrides evaluated for `tenant`, in order.
    pub fn for_tenant<'s>(&'s self, tenant: &str) -> impl Iterator<Item = &'s Override> + 's {
        self.tenants
            .get(tenant)
            .unwrap_or(&self.global)
            .iter()
            .filter_map(|&i| self.all.get(i))
    }

    /// The first override of the subject's tenant whose conditions hold.
    pub(crate) fn first_match(&self, s: &Subject<'_>) -> Option<&Override> {
        self.for_tenant(s.tenant).find(|o| o.when.matches(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_errors_point_into_the_pattern() {
        let e = ReasonPattern::new(r"D(5|56").expect_err("unclosed group");
        assert_eq!(e.offset, 1, "{e:?}");
        let e = ReasonPattern::new(r"D5\").expect_err("trailing escape");
        assert_eq!(e.offset, 2, "{e:?}");
        let e = ReasonPattern::new("a{2,1}").expect_err("bad repetition");
        assert!(e.message.contains("invalid regular expression"), "{e:?}");
    }

    #[test]
    fn huge_patterns_are_refused_at_load() {
        // Small to write, enormous to compile: the size limit refuses it.
        let e = ReasonPattern::new(r"\w{1000}\w{1000}").expect_err("too big");
        assert!(e.message.contains("compiles to more than"), "{e:?}");
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        assert!(ReasonPattern::new(&long).is_err());
        let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        assert!(ReasonPattern::new(&deep).is_err());
    }

    #[test]
    fn patterns_ignore_case() {
        let p = ReasonPattern::new(r"(^|\s)D(5|56)\s*$").expect("valid");
        assert!(p.is_match("Busy Here d5"));
        assert!(p.is_match("Busy Here D56 "));
        assert!(!p.is_match("Busy Here D57"));
        assert!(!p.is_match("Busy HereD5"));
    }

    #[test]
    fn tenants_put_their_own_first_and_skip_disabled_ones() {
        let named = |name: &str| Override {
            name: name.into(),
            description: String::new(),
            when: OverrideConditions::default(),
            then: OverrideEffect::default(),
        };
        let mut table = Overrides::default();
        table.push_global(named("a"));
        table.push_global(named("b"));
        table.set_tenant("acme", vec![named("tenant:acme/own")], &["a"]);
        let names = |t: &str| {
            table
                .for_tenant(t)
                .map(|o| o.name.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("acme"), ["tenant:acme/own", "b"]);
        assert_eq!(names("other"), ["a", "b"]);
    }
}
