//! A tolerant, zero-copy parser for raw SIP responses: the status line
//! (`SIP/2.0 <3 digits> <phrase>`) and the header section (RFC 3261 §7.3).
//!
//! Owns message framing only: line endings (CRLF or bare LF), folded lines (§7.3.1),
//! case-insensitive names and compact forms (§7.3.3 and extensions), and combining
//! repeated headers. It must not interpret header values (see `sip::reason`,
//! `sip::retry_after`) nor classify. Only the status line can make a parse fail; a bad
//! header line (no colon, invalid name, non-UTF-8 bytes) is skipped or decoded lossily
//! when asked for. Every accessor is a single linear scan; the body is never read.

use std::borrow::Cow;

use super::reason::is_token_byte;

/// Why bytes are not a SIP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("not a SIP response: the first line does not start with `SIP/`")]
    NotAResponse,
    #[error("unsupported SIP version (expected SIP/2.0)")]
    UnsupportedVersion,
    #[error("invalid status line: expected `SIP/2.0 <3-digit code> <reason phrase>`")]
    BadStatusLine,
}

/// A parsed SIP response borrowing from the input bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipResponse<'a> {
    code: u16,
    phrase: &'a [u8],
    /// Everything after the status line; header iteration stops at the first empty line.
    head: &'a [u8],
}

/// Parses the status line of `bytes` and keeps the rest for lazy header access.
pub fn parse_response(bytes: &[u8]) -> Result<SipResponse<'_>, ParseError> {
    // RFC 3261 §7.5: implementations SHOULD ignore CRLFs preceding the start line.
    let start = bytes
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(ParseError::Empty)?;
    let bytes = bytes.get(start..).ok_or(ParseError::Empty)?;
    let (line, head) = split_line(bytes);

    let version_end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(line.len());
    let version = line.get(..version_end).unwrap_or_default();
    let Some(ver) = strip_prefix_ci(version, b"SIP/") else {
        return Err(ParseError::NotAResponse);
    };
    if ver != b"2.0" {
        return Err(ParseError::UnsupportedVersion);
    }
    let rest = trim_start_ws(line.get(version_end..).unwrap_or_default());
    let (code_bytes, after) = rest.split_at_checked(3).ok_or(ParseError::BadStatusLine)?;
    if !code_bytes.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadStatusLine);
    }
    let code = code_bytes
        .iter()
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    // The code must be followed by SP (then the phrase) or end the line: "2000" is bad.
    let phrase = match after.split_first() {
        None => after,
        Some((b' ' | b'\t', phrase)) => trim_ws(phrase),
        Some(_) => return Err(ParseError::BadStatusLine),
    };
    Ok(SipResponse { code, phrase, head })
}

impl<'a> SipResponse<'a> {
    /// The three-digit status code (any 000–999; range rules are the classifier's).
    pub fn status_code(&self) -> u16 {
        self.code
    }

    /// The reason phrase as sent (invalid UTF-8 replaced).
    pub fn reason_phrase(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.phrase)
    }

    /// All header fields in order (folded lines joined).
    pub fn headers(&self) -> Headers<'a> {
        Headers { rest: self.head }
    }

    /// The first header named `name` (case-insensitive; compact forms match their
    /// full names both ways), unfolded and trimmed.
    pub fn header(&self, name: &str) -> Option<Cow<'a, str>> {
        self.headers().find(|h| h.is(name)).map(|h| h.value())
    }

    /// Every header named `name`, combined as if comma-joined on one line (RFC 3261
    /// §7.3.1). `None` when there is none.
    pub fn header_combined(&self, name: &str) -> Option<Cow<'a, str>> {
        let mut found = self.headers().filter(|h| h.is(name));
        let first = found.next()?.value();
        let Some(second) = found.next() else {
            return Some(first);
        };
        let mut joined = first.into_owned();
        for h in std::iter::once(second).chain(found) {
            joined.push_str(", ");
            joined.push_str(&h.value());
        }
        Some(Cow::Owned(joined))
    }

    /// The Reason header(s), combined, and the first Retry-After, found in one pass over
    /// the headers (what the classifier needs from a raw response).
    pub fn reason_and_retry_after(&self) -> (Option<Cow<'a, str>>, Option<Cow<'a, str>>) {
        let mut reason: Option<Cow<'a, str>> = None;
        let mut retry_after = None;
        for h in self.headers() {
            if h.is("Reason") {
                reason = Some(match reason {
                    None => h.value(),
                    Some(prev) => {
                        let mut joined = prev.into_owned();
                        joined.push_str(", ");
                        joined.push_str(&h.value());
                        Cow::Owned(joined)
                    }
                });
            } else if retry_after.is_none() && h.is("Retry-After") {
                retry_after = Some(h.value());
            }
        }
        (reason, retry_after)
    }

    /// The Reason header(s), combined (RFC 3326 allows several values and lines).
    pub fn reason(&self) -> Option<Cow<'a, str>> {
        self.header_combined("Reason")
    }

    /// The first Retry-After header (it holds a single value).
    pub fn retry_after(&self) -> Option<Cow<'a, str>> {
        self.header("Retry-After")
    }
}

/// One header field: its name as sent and its raw (possibly folded) value bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderField<'a> {
    pub name: &'a str,
    pub raw_value: &'a [u8],
}

impl<'a> HeaderField<'a> {
    /// The full name for a compact form (`v` → `Via`), else the name as sent.
    pub fn full_name(&self) -> &'a str {
        expand_compact(self.name)
    }

    /// True when this field is `name` (case-insensitive, compact forms expanded).
    pub fn is(&self, name: &str) -> bool {
        self.full_name()
            .eq_ignore_ascii_case(expand_compact(name.trim()))
    }

    /// The value with folding replaced by a single space and LWS trimmed. Borrowed
    /// unless the value was folded or contains invalid UTF-8.
    pub fn value(&self) -> Cow<'a, str> {
        let v = trim_ws(self.raw_value);
        if !v.iter().any(|&b| b == b'\r' || b == b'\n') {
            return String::from_utf8_lossy(v);
        }
        let mut out = Vec::with_capacity(v.len());
        let mut iter = v.iter().copied().peekable();
        while let Some(b) = iter.next() {
            if b == b'\r' || b == b'\n' {
                // Fold: drop trailing whitespace before and all LWS after, keep one SP.
                while out.last().is_some_and(|&c| c == b' ' || c == b'\t') {
                    out.pop();
                }
                while iter
                    .next_if(|&c| matches!(c, b'\r' | b'\n' | b' ' | b'\t'))
                    .is_some()
                {}
                out.push(b' ');
            } else {
                out.push(b);
            }
        }
        Cow::Owned(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Iterator over header fields; stops at the empty line that ends the header section.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Headers<'a> {
    type Item = HeaderField<'a>;

    fn next(&mut self) -> Option<HeaderField<'a>> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (line, mut rest) = split_line(self.rest);
            if line.is_empty() {
                // End of headers; the body is never looked at.
                self.rest = &[];
                return None;
            }
            // Extend over continuation lines (start with SP/HTAB, §7.3.1).
            let line_start = self.rest;
            let mut value_end = line.len();
            while rest.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                let (cont, after) = split_line(rest);
                value_end = line_start.len() - rest.len() + cont.len();
                rest = after;
            }
            self.rest = rest;
            if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                // A continuation with nothing to continue: skip it.
                continue;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = trim_ws(line.get(..colon).unwrap_or_default());
            if name.is_empty() || !name.iter().copied().all(is_token_byte) {
                continue;
            }
            // Token bytes are ASCII, so this cannot fail.
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            let raw_value = line_start.get(colon + 1..value_end).unwrap_or_default();
            return Some(HeaderField { name, raw_value });
        }
    }
}

/// Compact header forms: RFC 3261 §7.3.3 and the RFCs that registered the others.
pub const COMPACT_FORMS: &[(char, &str)] = &[
    ('a', "Accept-Contact"),      // RFC 3841
    ('b', "Referred-By"),         // RFC 3892
    ('c', "Content-Type"),        // RFC 3261
    ('d', "Request-Disposition"), // RFC 3841
    ('e', "Content-Encoding"),    // RFC 3261
    ('f', "From"),                // RFC 3261
    ('i', "Call-ID"),             // RFC 3261
    ('j', "Reject-Contact"),      // RFC 3841
    ('k', "Supported"),           // RFC 3261
    ('l', "Content-Length"),      // RFC 3261
    ('m', "Contact"),             // RFC 3261
    ('n', "Identity-Info"),       // RFC 4474 (obsoleted by RFC 8224)
    ('o', "Event"),               // RFC 6665
    ('r', "Refer-To"),            // RFC 3515
    ('s', "Subject"),             // RFC 3261
    ('t', "To"),                  // RFC 3261
    ('u', "Allow-Events"),        // RFC 6665
    ('v', "Via"),                 // RFC 3261
    ('x', "Session-Expires"),     // RFC 4028
    ('y', "Identity"),            // RFC 8224
];

/// The full header name for a one-letter compact form; other names unchanged.
pub fn expand_compact(name: &str) -> &str {
    let mut chars = name.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => COMPACT_FORMS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&c))
            .map_or(name, |(_, full)| full),
        _ => name,
    }
}

/// Position of the first `needle` in `hay`, eight bytes at a time (SWAR), because line
/// scanning dominates the cost of parsing a response and std has no public memchr.
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO.wrapping_mul(u64::from(needle));
    let mut chunks = hay.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        if let Ok(word) = <[u8; 8]>::try_from(chunk) {
            let x = u64::from_le_bytes(word) ^ pattern;
            // Zero-byte test: the lowest set bit marks the first zero byte exactly
            // (false positives can only appear above a true zero).
            let found = x.wrapping_sub(LO) & !x & HI;
            if found != 0 {
                return Some(offset + (found.trailing_zeros() / 8) as usize);
            }
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|p| offset + p)
}

/// Splits off one line (without its CRLF or bare LF).
fn split_line(bytes: &[u8]) -> (&[u8], &[u8]) {
    let (line, rest) = match find_byte(bytes, b'\n') {
        Some(i) => (
            bytes.get(..i).unwrap_or_default(),
            bytes.get(i + 1..).unwrap_or_default(),
        ),
        None => (bytes, &[][..]),
    };
    (line.strip_suffix(b"\r").unwrap_or(line), rest)
}

fn is_ws(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim_start_ws(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !is_ws(c)).unwrap_or(b.len());
    b.get(start..).unwrap_or_default()
}

fn trim_ws(b: &[u8]) -> &[u8] {
    let b = trim_start_ws(b);
    let end = b.iter().rposition(|c| !is_ws(c)).map_or(0, |i| i + 1);
    b.get(..end).unwrap_or_default()
}

fn strip_prefix_ci<'b>(b: &'b [u8], prefix: &[u8]) -> Option<&'b [u8]> {
    let (head, tail) = b.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FREESWITCH_603: &str = "SIP/2.0 603 Decline\r\n\
Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f6a7b8;rport=5060\r\n\
Max-Forwards: 70\r\n\
From: \"Dialer\" <sip:+15551230000@203.0.113.10>;tag=8Kc0mZ1y4vBgF\r\n\
To: <sip:+15557654321@198.51.100.20>;tag=as5f3a7b21\r\n\
Call-ID: 6f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\r\n\
CSeq: 102 INVITE\r\n\
User-Agent: FreeSWITCH-mod_sofia/1.10.11-release~64bit\r\n\
Accept: application/sdp\r\n\
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REFER, NOTIFY\r\n\
Supported: timer, path, replaces\r\n\
Reason: Q.850;cause=21;text=\"CALL_REJECTED\";location=U\r\n\
Retry-After: 1800 (busy until the afternoon)\r\n\
Content-Length: 0\r\n\
\r\n";

    #[test]
    fn freeswitch_style_response() {
        let r = parse_response(FREESWITCH_603.as_bytes()).unwrap();
        assert_eq!(r.status_code(), 603);
        assert_eq!(r.reason_phrase(), "Decline");
        assert_eq!(
            r.reason().as_deref(),
            Some("Q.850;cause=21;text=\"CALL_REJECTED\";location=U")
        );
        assert_eq!(
            r.retry_after().as_deref(),
            Some("1800 (busy until the afternoon)")
        );
        assert_eq!(r.header("cseq").as_deref(), Some("102 INVITE"));
        assert_eq!(
            r.header("i").as_deref(),
            Some("6f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        );
        assert_eq!(r.headers().count(), 13);
        assert!(matches!(r.reason(), Some(Cow::Borrowed(_))));
    }

    #[test]
    fn compact_lf_only_folded_multiple_reason_lines() {
        let msg = "SIP/2.0 480 Temporarily Unavailable\n\
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc\n\
f: <sip:a@example.com>;tag=1\n\
t: <sip:b@example.com>;tag=2\n\
i: abc@10.0.0.1\n\
reason: SIP;cause=480;text=\"Temporarily\n  Unavailable\"\n\
REASON : Q.850 ;cause=19\n\
retry-after:\t 300\n\
l: 0\n\
\n\
body: not a header\n";
        let r = parse_response(msg.as_bytes()).unwrap();
        assert_eq!(r.status_code(), 480);
        assert_eq!(
            r.header("Via").as_deref(),
            Some("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc")
        );
        assert_eq!(
            r.header("From").as_deref(),
            Some("<sip:a@example.com>;tag=1")
        );
        assert_eq!(r.header("Call-ID").as_deref(), Some("abc@10.0.0.1"));
        assert_eq!(r.header("content-length").as_deref(), Some("0"));
        assert_eq!(
            r.reason().as_deref(),
            Some("SIP;cause=480;text=\"Temporarily Unavailable\", Q.850 ;cause=19")
        );
        assert_eq!(r.retry_after().as_deref(), Some("300"));
        assert_eq!(r.header("body"), None);
        // `x` is Session-Expires, not a Reason compact form.
        assert_eq!(r.header("x"), None);
    }

    #[test]
    fn bad_bytes_in_unrelated_headers_are_tolerated() {
        let mut msg = b"SIP/2.0 486 Busy Here\r\nUser-Agent: caf\xe9\xff phone\r\n".to_vec();
        msg.extend_from_slice(b"garbage line without colon\r\n");
        msg.extend_from_slice(b"bad name: x\r\n");
        msg.extend_from_slice(b"   orphan continuation\r\n");
        msg.extend_from_slice(b"Reason: Q.850;cause=17\r\n\r\n\xff\xfe body");
        let r = parse_response(&msg).unwrap();
        assert_eq!(r.status_code(), 486);
        assert_eq!(r.reason().as_deref(), Some("Q.850;cause=17"));
        assert!(r.header("User-Agent").unwrap().contains('\u{fffd}'));
        assert_eq!(r.header("bad name"), None);
    }

    #[test]
    fn status_line_variants() {
        for (msg, code, phrase) in [
            ("SIP/2.0 200 OK\r\n\r\n", 200, "OK"),
            ("sip/2.0 404 Not Found", 404, "Not Found"),
            (
                "\r\n\r\nSIP/2.0 503 Service Unavailable\r\n",
                503,
                "Service Unavailable",
            ),
            ("SIP/2.0 603\r\n", 603, ""),
            ("SIP/2.0  486  Busy Here  \r\n", 486, "Busy Here"),
            ("SIP/2.0 180 Ringing\r\n", 180, "Ringing"),
            ("SIP/2.0 999 Whatever\r\n", 999, "Whatever"),
        ] {
            let r = parse_response(msg.as_bytes()).unwrap();
            assert_eq!(
                (r.status_code(), r.reason_phrase().as_ref()),
                (code, phrase)
            );
        }
    }

    #[test]
    fn non_responses_are_rejected() {
        for (msg, err) in [
            ("", ParseError::Empty),
            ("\r\n\r\n", ParseError::Empty),
            (
                "INVITE sip:bob@example.com SIP/2.0\r\n",
                ParseError::NotAResponse,
            ),
            ("HTTP/1.1 200 OK\r\n", ParseError::NotAResponse),
            ("SIP/3.0 200 OK\r\n", ParseError::UnsupportedVersion),
            ("SIP/2.0 20 OK\r\n", ParseError::BadStatusLine),
            ("SIP/2.0 2000 OK\r\n", ParseError::BadStatusLine),
            ("SIP/2.0 abc OK\r\n", ParseError::BadStatusLine),
            ("SIP/2.0\r\n", ParseError::BadStatusLine),
            ("603 Decline", ParseError::NotAResponse),
        ] {
            assert_eq!(parse_response(msg.as_bytes()), Err(err), "{msg:?}");
        }
    }

    #[test]
    fn find_byte_matches_position() {
        let hay = b"abcdefgh\nijklmnopqrstu\nvwxyz\n";
        for start in 0..hay.len() {
            let h = &hay[start..];
            assert_eq!(find_byte(h, b'\n'), h.iter().position(|&b| b == b'\n'));
        }
        assert_eq!(find_byte(b"", b'\n'), None);
        assert_eq!(find_byte(&[0x8a; 17], b'\n'), None);
        assert_eq!(find_byte(&[0x0b, 0x0a, 0x0a], b'\n'), Some(1));
    }

    #[test]
    fn one_pass_reason_and_retry_after() {
        let msg = b"SIP/2.0 480 X\r\nReason: SIP;cause=480\r\nRetry-After: 5\r\nRetry-After: 9\r\nreason: Q.850;cause=19\r\n\r\n";
        let r = parse_response(msg).unwrap();
        let (reason, ra) = r.reason_and_retry_after();
        assert_eq!(reason, r.reason());
        assert_eq!(reason.as_deref(), Some("SIP;cause=480, Q.850;cause=19"));
        assert_eq!(ra.as_deref(), Some("5"));
        assert_eq!(ra, r.retry_after());
    }

    #[test]
    fn compact_forms() {
        assert_eq!(expand_compact("v"), "Via");
        assert_eq!(expand_compact("I"), "Call-ID");
        assert_eq!(expand_compact("x"), "Session-Expires");
        assert_eq!(expand_compact("Reason"), "Reason");
        assert_eq!(expand_compact("z"), "z");
    }

    #[test]
    fn long_input_is_linear() {
        // 200k header lines: must finish quickly (no quadratic rescans).
        let mut msg = String::from("SIP/2.0 500 Server Internal Error\r\n");
        for i in 0..200_000 {
            msg.push_str(&format!("X-H{i}: v\r\n"));
        }
        msg.push_str("Reason: Q.850;cause=41\r\n\r\n");
        let r = parse_response(msg.as_bytes()).unwrap();
        assert_eq!(r.reason().as_deref(), Some("Q.850;cause=41"));
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(b in any::<Vec<u8>>()) {
            if let Ok(r) = parse_response(&b) {
                prop_assert_eq!(r.reason_and_retry_after(), (r.reason(), r.retry_after()));
                let _ = r.reason_phrase();
                for h in r.headers() { let _ = h.value(); }
            }
        }

        #[test]
        fn never_panics_on_sip_ish(
            s in "SIP/2\\.0 [0-9]{3}( [ a-zA-Z]{0,12})?(\r?\n[ \t]?[a-zA-Z-]{0,8}[ ]?:?[ a-zA-Z0-9;=\"\\.,\t]{0,30}){0,12}(\r?\n\r?\n[a-z]{0,5})?"
        ) {
            let r = parse_response(s.as_bytes());
            prop_assert!(r.is_ok());
            if let Ok(r) = r {
                let _ = r.reason();
                let _ = r.retry_after();
                for h in r.headers() { let _ = h.value(); let _ = h.full_name(); }
            }
        }
    }
}
