//! The Retry-After header: `delta-seconds [comment] *(SEMI retry-param)` (RFC 3261
//! §20.33, §25.1), with `duration` the only defined parameter.
//!
//! Owns the grammar only. It must not decide whether a value applies to a response code
//! (that is rule R6 in `crate::classify`). Anything outside the grammar (words,
//! negative or decimal numbers, RFC 2543-style absolute dates, empty values,
//! unbalanced comments) gives `None`; the parser never panics and is linear.

use super::reason::{is_token, is_token_byte, saturating_digits};

/// A well-formed Retry-After value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter<'a> {
    /// delta-seconds. `1*DIGIT` has no upper bound in the grammar; values beyond
    /// `u32::MAX` (about 136 years) saturate rather than being rejected, because the
    /// sender's meaning ("not for a very long time") is clear and any clamp is policy.
    pub seconds: u32,
    /// The comment's contents without the outer parentheses (escapes left as sent).
    pub comment: Option<&'a str>,
    /// The `duration` parameter (same saturation as `seconds`).
    pub duration: Option<u32>,
}

/// Parses a Retry-After header value; `None` when it is malformed.
pub fn parse_retry_after(value: &str) -> Option<RetryAfter<'_>> {
    let s = value.trim_matches(is_lws);
    let digits_end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    if digits_end == 0 {
        return None;
    }
    let seconds = saturating_digits(s.get(..digits_end)?);
    let mut rest = s.get(digits_end..)?;

    // After the digits only LWS, a comment or a parameter may follow: "120.5",
    // "120abc" and "1 2" are malformed.
    let after_ws = rest.trim_start_matches(is_lws);
    if !after_ws.is_empty() && after_ws.len() == rest.len() && !after_ws.starts_with(['(', ';']) {
        return None;
    }
    rest = after_ws;

    let mut comment = None;
    if rest.starts_with('(') {
        let end = comment_end(rest)?;
        comment = rest.get(1..end);
        rest = rest.get(end + 1..)?.trim_start_matches(is_lws);
    }

    let mut duration = None;
    while !rest.is_empty() {
        rest = rest.strip_prefix(';')?;
        let (param, tail) = split_param(rest)?;
        rest = tail;
        let param = param.trim_matches(is_lws);
        if param.is_empty() {
            // Tolerate a trailing or doubled `;`: the meaning is unambiguous.
            continue;
        }
        let (name, val) = match param.split_once('=') {
            Some((n, v)) => (n.trim_matches(is_lws), Some(v.trim_matches(is_lws))),
            None => (param, None),
        };
        if !is_token(name) {
            return None;
        }
        if name.eq_ignore_ascii_case("duration") {
            let v = val?;
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            duration.get_or_insert(saturating_digits(v));
        } else if let Some(v) = val {
            // generic-param value: token / host / quoted-string.
            let quoted_ok = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
            if v.is_empty() || !(quoted_ok || v.bytes().all(is_param_char)) {
                return None;
            }
        }
    }
    Some(RetryAfter {
        seconds,
        comment,
        duration,
    })
}

fn is_lws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Token characters plus what a `host` value may contain (`:` and `[]` for IPv6).
fn is_param_char(b: u8) -> bool {
    is_token_byte(b) || matches!(b, b':' | b'[' | b']')
}

/// Index of the `)` that closes the comment starting at `s[0] == '('`. Comments nest
/// and a backslash escapes the next byte (RFC 3261 §25.1 `comment`/`quoted-pair`).
fn comment_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' => escaped = true,
            b'(' => depth += 1,
            b')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits one parameter off at the next `;` outside a quoted string.
fn split_param(s: &str) -> Option<(&str, &str)> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = false;
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == b';' {
            return Some((s.get(..i)?, s.get(i..)?));
        }
    }
    if in_quotes { None } else { Some((s, "")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: &str) -> Option<u32> {
        parse_retry_after(s).map(|r| r.seconds)
    }

    #[test]
    fn reference_examples() {
        let r = parse_retry_after("120 (I'm in a meeting)").unwrap();
        assert_eq!(r.seconds, 120);
        assert_eq!(r.comment, Some("I'm in a meeting"));
        let r = parse_retry_after("18000;duration=3600").unwrap();
        assert_eq!((r.seconds, r.duration), (18000, Some(3600)));
    }

    #[test]
    fn valid_forms() {
        for (s, n) in [
            ("0", 0),
            ("30", 30),
            ("  1800  ", 1800),
            ("3600 ; duration = 60", 3600),
            ("120 (nested (comment) here) ;duration=10", 120),
            (r"120 (escaped \) paren)", 120),
            ("120(no space)", 120),
            ("300;foo=bar;flag", 300),
            ("300;x=\"quoted;value\"", 300),
            ("60;", 60),
            ("007", 7),
        ] {
            assert_eq!(secs(s), Some(n), "{s:?}");
        }
    }

    #[test]
    fn large_values_saturate() {
        assert_eq!(secs("4294967295"), Some(u32::MAX));
        assert_eq!(secs("4294967296"), Some(u32::MAX));
        assert_eq!(secs("99999999999999999999999999"), Some(u32::MAX));
    }

    #[test]
    fn malformed_values_are_rejected() {
        for s in [
            "",
            "   ",
            "soon",
            "-5",
            "+5",
            "12.5",
            "120abc",
            "1 2",
            "Fri, 01 Jan 2027 10:00:00 GMT",
            "Mon, 21 Jul 1997 05:25:00 GMT (Dinner time)",
            "120 (unbalanced",
            "120 (a))",
            "120 junk",
            "120;duration=",
            "120;duration=abc",
            "120;duration=-1",
            "120;bad name=1",
            "120;x=\"unterminated",
            "(comment) 120",
        ] {
            assert_eq!(parse_retry_after(s), None, "{s:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = parse_retry_after(&s);
        }

        #[test]
        fn never_panics_sip_ish(s in "[0-9 ();=\"\\\\durationx\t]{0,40}") {
            let _ = parse_retry_after(&s);
        }

        #[test]
        fn plain_numbers_round_trip(n in any::<u32>()) {
            prop_assert_eq!(secs(&n.to_string()), Some(n));
        }
    }
}
