//! The Reason header (RFC 3326 §2) as real stacks send it, plus the RFC 8606 `location`
//! parameter of Q.850 values.
//!
//! Owns tokenising a Reason header value into [`ReasonValue`]s. It must not decide what a
//! cause means (see `sip::q850` and `crate::classify`). Parsing is tolerant and total:
//! a malformed value is skipped, never fatal, and never panics. Work is linear in the
//! input length; nothing is allocated unless a quoted text contains escapes.

use std::borrow::Cow;

/// RFC 8606 §4 location values (Q.850 §2.2.9 / ITU-T Q.850 location field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// User.
    U,
    /// Private network serving the local user.
    Lpn,
    /// Public network serving the local user.
    Ln,
    /// Transit network.
    Tn,
    /// Public network serving the remote user.
    Rln,
    /// Private network serving the remote user.
    Rpn,
    Loc6,
    /// International network.
    Intl,
    Loc8,
    Loc9,
    /// Network beyond interworking point.
    Bi,
    Loc11,
    Loc12,
    Loc13,
    Loc14,
    Loc15,
}

impl Location {
    const ALL: [(Location, &'static str); 16] = [
        (Location::U, "U"),
        (Location::Lpn, "LPN"),
        (Location::Ln, "LN"),
        (Location::Tn, "TN"),
        (Location::Rln, "RLN"),
        (Location::Rpn, "RPN"),
        (Location::Loc6, "LOC-6"),
        (Location::Intl, "INTL"),
        (Location::Loc8, "LOC-8"),
        (Location::Loc9, "LOC-9"),
        (Location::Bi, "BI"),
        (Location::Loc11, "LOC-11"),
        (Location::Loc12, "LOC-12"),
        (Location::Loc13, "LOC-13"),
        (Location::Loc14, "LOC-14"),
        (Location::Loc15, "LOC-15"),
    ];

    /// Parses a location value. ABNF literals are case-insensitive (RFC 5234 §2.3), so
    /// any case is accepted. Unknown values give `None` ("Other values MUST be ignored").
    pub fn parse(value: &str) -> Option<Location> {
        let value = value.trim();
        Self::ALL
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(value))
            .map(|&(loc, _)| loc)
    }

    /// The canonical (upper-case) RFC 8606 spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(loc, _)| *loc == self)
            .map_or("", |(_, name)| name)
    }

    /// The user location: cause 21 there is a callee decline (RFC 3398 §7.2.4.1 (+)).
    pub fn is_user(self) -> bool {
        self == Location::U
    }

    /// A network location: cause 21 there is a network policy rejection (reference R4).
    /// The reserved `LOC-n` values are neither user nor network.
    pub fn is_network(self) -> bool {
        matches!(
            self,
            Location::Lpn
                | Location::Ln
                | Location::Tn
                | Location::Rln
                | Location::Rpn
                | Location::Intl
                | Location::Bi
        )
    }
}

/// One well-formed `reason-value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonValue<'a> {
    /// The protocol token as sent (`Q.850`, `SIP`, `FreeSWITCH`, ...).
    pub protocol: &'a str,
    /// The `cause` parameter (all digits; values beyond `u32` saturate so that range
    /// checks reject them instead of wrapping).
    pub cause: Option<u32>,
    /// The `text` parameter, unquoted and unescaped; unquoted text is tolerated as is.
    pub text: Option<Cow<'a, str>>,
    /// The RFC 8606 `location` parameter when it is a known value.
    pub location: Option<Location>,
}

impl<'a> ReasonValue<'a> {
    /// True when the protocol is Q.850 (case-insensitive).
    pub fn is_q850(&self) -> bool {
        self.protocol.eq_ignore_ascii_case("Q.850")
    }

    /// The Q.850 cause when this is a Q.850 value with a cause in 1..=127. Out-of-range
    /// causes are rejected rather than masked with `& 0x7f` as Asterisk does (reference §5).
    pub fn q850_cause(&self) -> Option<u8> {
        if !self.is_q850() {
            return None;
        }
        self.cause
            .filter(|c| (1..=127).contains(c))
            .and_then(|c| u8::try_from(c).ok())
    }
}

/// Every well-formed value of a Reason header, in order. Malformed values are skipped.
pub fn parse_reason_header(value: &str) -> Vec<ReasonValue<'_>> {
    reason_values(value).collect()
}

/// Lazy form of [`parse_reason_header`]: no allocation for the iteration itself.
pub fn reason_values(value: &str) -> ReasonValues<'_> {
    ReasonValues { rest: value }
}

/// Iterator over the well-formed values of a Reason header.
#[derive(Debug, Clone)]
pub struct ReasonValues<'a> {
    rest: &'a str,
}

impl<'a> Iterator for ReasonValues<'a> {
    type Item = ReasonValue<'a>;

    fn next(&mut self) -> Option<ReasonValue<'a>> {
        while !self.rest.is_empty() {
            let (value, consumed) = parse_value(self.rest);
            self.rest = self.rest.get(consumed..).unwrap_or("");
            if value.is_some() {
                return value;
            }
        }
        None
    }
}

/// RFC 3261 §25.1 `token` characters.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// One RFC 3261 §25.1 `token` character.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// Index just past the closing quote of the quoted-string opening at `open` (a `"`),
/// honouring backslash escapes, and whether an escape was seen. `None` when the
/// string is unterminated.
fn quoted_end(b: &[u8], open: usize) -> Option<(usize, bool)> {
    let mut i = open + 1;
    let mut has_escape = false;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => {
                has_escape = true;
                i += 2;
            }
            b'"' => return Some((i + 1, has_escape)),
            _ => i += 1,
        }
    }
    None
}

/// Index of the next top-level `,` at or after `i` (or the end), skipping quoted strings.
fn value_end(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        match c {
            b',' => return i,
            b'"' => match quoted_end(b, i) {
                Some((next, _)) => i = next,
                None => return b.len(),
            },
            _ => i += 1,
        }
    }
    b.len()
}

/// Index of the first byte at or after `i` that is in `stops`, or the end.
fn scan_until(b: &[u8], mut i: usize, stops: &[u8]) -> usize {
    while let Some(c) = b.get(i) {
        if stops.contains(c) {
            return i;
        }
        i += 1;
    }
    b.len()
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
    {
        i += 1;
    }
    i
}

/// Parses one `reason-value` at the start of `s` in a single pass. Returns the value
/// (`None` when malformed) and how many bytes were consumed, including the `,` that
/// ends it. All delimiters are ASCII, so every slice falls on a char boundary.
fn parse_value(s: &str) -> (Option<ReasonValue<'_>>, usize) {
    let b = s.as_bytes();
    let skip_value = |i: usize| {
        let end = value_end(b, i);
        (None, (end + 1).min(b.len()))
    };

    let mut i = scan_until(b, 0, b";,\"");
    if b.get(i) == Some(&b'"') {
        return skip_value(i);
    }
    let protocol = s.get(..i).unwrap_or("").trim();
    if !is_token(protocol) {
        return skip_value(i);
    }
    let mut value = ReasonValue {
        protocol,
        cause: None,
        text: None,
        location: None,
    };
    while b.get(i) == Some(&b';') {
        let name_start = i + 1;
        i = scan_until(b, name_start, b"=;,\"");
        if b.get(i) == Some(&b'"') {
            return skip_value(i);
        }
        let name = s.get(name_start..i).unwrap_or("").trim();
        // The parameter value: quoted (with its escape flag) or bare.
        let mut val: Option<(&str, bool)> = None;
        let mut quoted = false;
        if b.get(i) == Some(&b'=') {
            let v_start = skip_ws(b, i + 1);
            if b.get(v_start) == Some(&b'"') {
                let Some((end, esc)) = quoted_end(b, v_start) else {
                    return skip_value(v_start);
                };
                val = s.get(v_start + 1..end - 1).map(|v| (v, esc));
                quoted = true;
                i = skip_ws(b, end);
                if !matches!(b.get(i), None | Some(b';' | b',')) {
                    return skip_value(i);
                }
            } else {
                i = scan_until(b, v_start, b";,\"");
                if b.get(i) == Some(&b'"') {
                    return skip_value(i);
                }
                val = s.get(v_start..i).map(|v| (v.trim(), false));
            }
        }
        if name.is_empty() && val.is_none() {
            // Tolerate `;;` and a trailing `;`.
            continue;
        }
        if !is_token(name) {
            return skip_value(i);
        }
        if name.eq_ignore_ascii_case("cause") {
            let Some((digits, _)) = val.filter(|_| !quoted) else {
                return skip_value(i);
            };
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return skip_value(i);
            }
            // A repeated cause is ignored: the first wins.
            value.cause.get_or_insert(saturating_digits(digits));
        } else if name.eq_ignore_ascii_case("text") {
            let Some((text, esc)) = val else {
                return skip_value(i);
            };
            if value.text.is_none() {
                value.text = Some(if esc {
                    Cow::Owned(unescape(text))
                } else {
                    Cow::Borrowed(text)
                });
            }
        } else if name.eq_ignore_ascii_case("location") && value.location.is_none() {
            value.location = val.and_then(|(v, _)| Location::parse(v));
        }
        // Other reason-extension parameters are allowed and ignored.
    }
    // Here `i` is at a top-level `,` or the end; anything else cannot happen because
    // every scan above stops only at `;`, `,`, `"` (handled) or the end.
    (Some(value), (i + 1).min(b.len()))
}

/// Removes quoted-pair backslashes.
fn unescape(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses all-digit input, saturating at `u32::MAX`.
pub(crate) fn saturating_digits(digits: &str) -> u32 {
    digits.bytes().fold(0u32, |acc, b| {
        acc.saturating_mul(10)
            .saturating_add(u32::from(b.wrapping_sub(b'0')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(s: &str) -> ReasonValue<'_> {
        let v = parse_reason_header(s);
        assert_eq!(v.len(), 1, "{s:?} -> {v:?}");
        v.into_iter().next().unwrap()
    }

    #[test]
    fn simple_q850() {
        let v = one("Q.850;cause=16;text=\"Normal call clearing\"");
        assert!(v.is_q850());
        assert_eq!(v.cause, Some(16));
        assert_eq!(v.q850_cause(), Some(16));
        assert_eq!(v.text.as_deref(), Some("Normal call clearing"));
        assert_eq!(v.location, None);
    }

    #[test]
    fn rfc_8606_example_with_location() {
        let v = one("Q.850;cause=1;text=\"Unallocated (unassigned) number\";location=LN");
        assert_eq!(v.q850_cause(), Some(1));
        assert_eq!(v.location, Some(Location::Ln));
    }

    #[test]
    fn case_and_whitespace_tolerance() {
        let v = one("  q.850 ; CAUSE = 21 ; Location = u ; TEXT = \"Call Rejected\"  ");
        assert!(v.is_q850());
        assert_eq!(v.cause, Some(21));
        assert_eq!(v.location, Some(Location::U));
        assert_eq!(v.text.as_deref(), Some("Call Rejected"));
    }

    #[test]
    fn several_values_and_quoted_commas() {
        let v = parse_reason_header(
            "SIP;cause=603;text=\"Decline, really; no\", Q.850;cause=21;location=U",
        );
        assert_eq!(v.len(), 2);
        assert!(v[0].protocol.eq_ignore_ascii_case("SIP"));
        assert_eq!(v[0].cause, Some(603));
        assert_eq!(v[0].text.as_deref(), Some("Decline, really; no"));
        assert_eq!(v[1].q850_cause(), Some(21));
        assert_eq!(v[1].location, Some(Location::U));
    }

    #[test]
    fn escapes_are_unescaped() {
        let v = one(r#"SIP;cause=603;text="say \"no\" \\ ok""#);
        assert_eq!(v.text.as_deref(), Some(r#"say "no" \ ok"#));
        assert!(matches!(v.text, Some(Cow::Owned(_))));
    }

    #[test]
    fn unquoted_text_tolerated() {
        let v = one("Q.850;cause=17;text=User Busy");
        assert_eq!(v.text.as_deref(), Some("User Busy"));
    }

    #[test]
    fn analytics_text_keeps_semicolons() {
        let v = one("SIP;cause=603;text=\"v=analytics1;url=https://redress.example/x;c=123\"");
        assert_eq!(
            v.text.as_deref(),
            Some("v=analytics1;url=https://redress.example/x;c=123")
        );
    }

    #[test]
    fn malformed_values_are_skipped() {
        for bad in [
            "Q.850;cause=abc",
            "Q.850;cause=",
            "Q.850;cause",
            "Q.850;cause=1x",
            "Q.850;cause=-1",
            "Q.850;cause=1.5",
            "Q.850;text=\"unterminated",
            "Q.850;text=\"a\"junk",
            "Q 850;cause=16",
            ";cause=16",
            "",
            "\"quoted\";cause=16",
            "Q.850;bad name=1",
        ] {
            assert!(parse_reason_header(bad).is_empty(), "{bad:?}");
        }
        let v = parse_reason_header("Q.850;cause=x, Q.850;cause=34");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].cause, Some(34));
    }

    #[test]
    fn out_of_range_causes_are_kept_but_not_q850() {
        assert_eq!(one("Q.850;cause=0").q850_cause(), None);
        assert_eq!(one("Q.850;cause=128").q850_cause(), None);
        assert_eq!(one("Q.850;cause=145").q850_cause(), None);
        assert_eq!(one("Q.850;cause=99999999999999").cause, Some(u32::MAX));
        assert_eq!(one("SIP;cause=16").q850_cause(), None);
    }

    #[test]
    fn unknown_location_ignored() {
        assert_eq!(one("Q.850;cause=21;location=MOON").location, None);
        assert_eq!(
            one("Q.850;cause=21;location=loc-6").location,
            Some(Location::Loc6)
        );
        assert_eq!(one("Q.850;cause=21;location").location, None);
    }

    #[test]
    fn extension_params_and_trailing_semicolons() {
        let v = one("Q.850;cause=18;foo=bar;flag;;");
        assert_eq!(v.cause, Some(18));
        let v = one("FreeSWITCH;cause=602;text=\"ALLOTTED_TIMEOUT\"");
        assert_eq!(v.protocol, "FreeSWITCH");
        assert_eq!(v.q850_cause(), None);
    }

    #[test]
    fn location_round_trip() {
        for (loc, name) in Location::ALL {
            assert_eq!(Location::parse(name), Some(loc));
            assert_eq!(loc.as_str(), name);
        }
        let network: Vec<_> = Location::ALL
            .iter()
            .filter(|(l, _)| l.is_network())
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(network, ["LPN", "LN", "TN", "RLN", "RPN", "INTL", "BI"]);
    }

    proptest! {
        #[test]
        fn never_panics_on_any_string(s in any::<String>()) {
            let _ = parse_reason_header(&s);
        }

        #[test]
        fn never_panics_on_sip_ish(s in "[QqSIP.850;,=\"\\\\ causetxlonU0-9a-z\t]{0,80}") {
            for v in parse_reason_header(&s) {
                let _ = v.q850_cause();
            }
        }
    }
}
