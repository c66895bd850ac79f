//! Destination normalisation: turns the `to` of a report into the key under which the
//! store keeps the destination's history.
//!
//! Owns the one rule that decides when two spellings of a destination are the same
//! destination. It must not store anything, validate numbers against numbering plans
//! (fictional 555-01xx numbers must still normalise) or fail: every input yields a key.
//!
//! The rule, applied to the input trimmed of surrounding whitespace:
//! 1. An input longer than [`MAX_INPUT_BYTES`] is not parsed: its key is its first
//!    [`MAX_KEY_BYTES`] bytes (cut at a character boundary).
//! 2. A name-addr (`"Bob" <sip:...>`, `Bob <tel:...>`) is reduced to the URI inside the
//!    angle brackets, when that URI has a `sip:`, `sips:` or `tel:` scheme.
//! 3. The phone number candidate is: for `tel:` the part before the first `;` (prefixed
//!    with a global `phone-context=+...` when the number is local); for `sip:`/`sips:`
//!    the user part without password or `;`-parameters; otherwise the whole input. A
//!    candidate is phone-like when it holds only digits, one leading `+`, and the visual
//!    separators `-` `.` `(` `)` `/`, space and tab, with 1 to [`MAX_DIGITS`] digits.
//! 4. A phone-like candidate is parsed (with the default region for national numbers)
//!    and, when its national number has a length the country's numbering plan allows,
//!    the key is its E.164 form (`+15550104477`). A candidate without `+` needs at least
//!    [`MIN_NATIONAL_DIGITS`] digits, so that extensions (`1001`) and short codes (`911`)
//!    are never read as national numbers.
//! 5. Otherwise the key is, for `sip:`/`sips:`: `user@host` (or `host` without a user)
//!    lower-cased, without scheme, password, user parameters, port, URI parameters or
//!    headers, so `sip:Alice@Example.com;transport=tcp` and `<sips:alice@example.com:5061>`
//!    are both `alice@example.com`; for `tel:`: `tel:` and the number part with visual
//!    separators removed; for anything else: the trimmed input, unchanged.
//!
//! Keys are at most [`MAX_KEY_BYTES`] bytes long. Percent-encoded SIP user parts are not
//! decoded.

use phonenumber::country::Id;

/// Inputs longer than this (after trimming) are not parsed.
pub const MAX_INPUT_BYTES: usize = 1024;
/// Longest key returned; longer fallback keys are cut at a character boundary.
pub const MAX_KEY_BYTES: usize = 256;
/// Most digits in a phone-like candidate (E.164's 15 plus an international prefix).
pub const MAX_DIGITS: usize = 20;
/// Fewest digits of a number written without `+`.
pub const MIN_NATIONAL_DIGITS: usize = 7;

/// Normalises destinations with a fixed default region. Cheap to copy and to call
/// (a few microseconds per number; no allocation beyond the returned key and the
/// phone-number parser's own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Normalizer {
    default_region: Option<Id>,
}

impl Normalizer {
    /// A normaliser reading national numbers (no `+`) in `default_region`; without a
    /// region, only numbers with `+` (or a `phone-context`) become E.164.
    pub fn new(default_region: Option<Id>) -> Self {
        Normalizer { default_region }
    }

    /// The destination key of `raw`; see the module documentation for the rule.
    pub fn normalize(&self, raw: &str) -> String {
        normalize(raw, self.default_region)
    }
}

/// The destination key of `raw`; see the module documentation for the rule.
pub fn normalize(raw: &str, default_region: Option<Id>) -> String {
    let input = raw.trim();
    if input.len() > MAX_INPUT_BYTES {
        return capped(input);
    }
    let uri = name_addr_uri(input).unwrap_or(input);
    if let Some(rest) = strip_scheme(uri, "tel:") {
        return tel_key(rest, default_region).unwrap_or_else(|| capped(input));
    }
    if let Some(rest) = strip_scheme(uri, "sips:").or_else(|| strip_scheme(uri, "sip:")) {
        return sip_key(rest, default_region).unwrap_or_else(|| capped(input));
    }
    e164(input, default_region).unwrap_or_else(|| capped(input))
}

/// `s` cut to at most [`MAX_KEY_BYTES`] at a character boundary.
fn capped(s: &str) -> String {
    let mut end = s.len().min(MAX_KEY_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Case-insensitive scheme prefix.
fn strip_scheme<'a>(s: &'a str, scheme: &str) -> Option<&'a str> {
    let head = s.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &s[scheme.len()..])
}

/// The URI inside `<...>` of a name-addr, if it has a scheme we understand.
fn name_addr_uri(s: &str) -> Option<&str> {
    // Skip a quoted display name first: it may itself contain `<`.
    let rest = if let Some(quoted) = s.strip_prefix('"') {
        let mut escaped = false;
        let end = quoted.char_indices().find_map(|(i, c)| {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                return Some(i);
            }
            None
        })?;
        &quoted[end + 1..]
    } else {
        s
    };
    let open = rest.find('<')?;
    let inner = &rest[open + 1..];
    let inner = inner
        .find('>')
        .map_or(inner, |close| &inner[..close])
        .trim();
    let has_scheme = ["sip:", "sips:", "tel:"]
        .iter()
        .any(|scheme| strip_scheme(inner, scheme).is_some());
    has_scheme.then_some(inner)
}

/// Key of a `tel:` URI (without the scheme).
fn tel_key(rest: &str, region: Option<Id>) -> Option<String> {
    let mut parts = rest.split(';');
    let number = parts.next().unwrap_or_default().trim();
    let context = parts.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("phone-context")
            .then(|| value.trim())
    });
    // RFC 3966 §5.1.5: a local number is completed by a global-number context.
    let local = !number.starts_with('+');
    if let (true, Some(ctx)) = (local, context.filter(|c| c.starts_with('+'))) {
        if let (Some(ctx_digits), Some(digits)) = (phone_like(ctx), phone_like(number)) {
            let joined = format!("{ctx_digits}{}", digits.trim_start_matches('+'));
            if let Some(key) = e164(&joined, region) {
                return Some(key);
            }
        }
    } else if let Some(key) = e164(number, region) {
        return Some(key);
    }
    if number.is_empty() {
        return None;
    }
    let stripped: String = number
        .chars()
        .filter(|c| !is_visual_separator(*c))
        .collect();
    Some(capped(&format!("tel:{stripped}")))
}

/// Key of a `sip:`/`sips:` URI (without the scheme).
fn sip_key(rest: &str, region: Option<Id>) -> Option<String> {
    let rest = rest.split_once('?').map_or(rest, |(uri, _headers)| uri);
    let (user, hostpart) = match rest.split_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, rest),
    };
    let mut host_params = hostpart.split(';');
    let hostport = host_params.next().unwrap_or_default().trim();
    let user = user.map(|u| {
        let end = u.find([':', ';']).unwrap_or(u.len());
        u[..end].trim()
    });
    if let Some(key) = user.and_then(|u| e164(u, region)) {
        return Some(key);
    }
    let host = strip_port(hostport);
    let key = match user.filter(|u| !u.is_empty()) {
        Some(user) => format!("{user}@{host}"),
        None if !host.is_empty() => host.to_owned(),
        None => return None,
    };
    Some(capped(&key.to_lowercase()))
}

/// `host` without `:port` (IPv6 references keep their brackets).
fn strip_port(hostport: &str) -> &str {
    if hostport.starts_with('[') {
        return hostport
            .find(']')
            .map_or(hostport, |close| &hostport[..=close]);
    }
    hostport.split_once(':').map_or(hostport, |(host, _)| host)
}

fn is_visual_separator(c: char) -> bool {
    matches!(c, '-' | '.' | '(' | ')' | '/' | ' ' | '\t')
}

/// `+digits` or `digits` when `s` is phone-like (see the module documentation).
fn phone_like(s: &str) -> Option<String> {
    let mut out = String::with_capacity(MAX_DIGITS + 1);
    let mut digits = 0usize;
    for c in s.chars() {
        match c {
            '0'..='9' => {
                digits += 1;
                if digits > MAX_DIGITS {
                    return None;
                }
                out.push(c);
            }
            '+' if out.is_empty() => out.push('+'),
            c if is_visual_separator(c) => {}
            _ => return None,
        }
    }
    (digits > 0).then_some(out)
}

/// The E.164 form of `candidate`, when it is a plausible phone number.
fn e164(candidate: &str, region: Option<Id>) -> Option<String> {
    let sanitized = phone_like(candidate)?;
    if nanp_as_written(&sanitized) {
        return Some(sanitized);
    }
    parsed_e164(sanitized, region)
}

/// Whether `sanitized` is `+1` and ten digits with an area code starting 2–9: the form
/// of every dialable North American number, whose key is the input itself.
///
/// The parser would keep such a number exactly as written: the national prefix of every
/// NANP region is `1` (a national number starting 2–9 has none to strip), the regions'
/// prefix-for-parsing patterns only rewrite seven-digit local numbers, and ten digits is
/// a length every NANP region allows. Skipping it saves its search through the 25 NANP
/// regions' number patterns, several microseconds per call (tests check this shortcut
/// against the parser on thousands of numbers).
fn nanp_as_written(sanitized: &str) -> bool {
    let b = sanitized.as_bytes();
    b.len() == 12
        && b.starts_with(b"+1")
        && (b'2'..=b'9').contains(&b[2])
        && b[3..].iter().all(u8::is_ascii_digit)
}

/// The E.164 form of a phone-like `sanitized` candidate, by the phone-number parser.
fn parsed_e164(sanitized: String, region: Option<Id>) -> Option<String> {
    let international = sanitized.starts_with('+');
    if !international && sanitized.len() < MIN_NATIONAL_DIGITS {
        return None;
    }
    // The parser costs microseconds per number (tens of thousands of instructions: region
    // lookup and pattern matches), and the same destinations come back (retries,
    // redials, callbacks): its answers are memoised. A `+` number is read without the
    // default region, so the digits alone are its memo key.
    let national_key;
    let memo_key = if international {
        sanitized.as_str()
    } else {
        national_key = match region {
            Some(r) => format!("{}:{sanitized}", r.as_ref()),
            None => format!(":{sanitized}"),
        };
        national_key.as_str()
    };
    PARSER_MEMO.get_or_insert(memo_key, || parse_e164(&sanitized, region, international))
}

/// Parser answers by input, bounded: [`MEMO_SHARDS`] × [`MEMO_SHARD_CAP`] entries (a
/// full shard is cleared), well under 10 MB.
static PARSER_MEMO: std::sync::LazyLock<ParserMemo> = std::sync::LazyLock::new(ParserMemo::new);
const MEMO_SHARDS: usize = 16;
const MEMO_SHARD_CAP: usize = 4096;

type MemoMap = std::collections::HashMap<Box<str>, Option<Box<str>>, foldhash::fast::RandomState>;

struct ParserMemo {
    shards: Box<[parking_lot::Mutex<MemoMap>]>,
    hasher: foldhash::fast::RandomState,
}

impl ParserMemo {
    fn new() -> Self {
        ParserMemo {
            shards: (0..MEMO_SHARDS)
                .map(|_| parking_lot::Mutex::new(MemoMap::default()))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn get_or_insert(&self, key: &str, compute: impl FnOnce() -> Option<String>) -> Option<String> {
        use std::hash::BuildHasher;
        // Looked up by reference: a key is copied only when a new answer is stored.
        let shard = &self.shards[self.hasher.hash_one(key) as usize % MEMO_SHARDS];
        if let Some(known) = shard.lock().get(key) {
            return known.as_deref().map(str::to_owned);
        }
        // Computed outside the lock: two threads may both parse a new number once.
        let answer = compute();
        let mut map = shard.lock();
        if map.len() >= MEMO_SHARD_CAP {
            map.clear();
        }
        map.insert(Box::from(key), answer.as_deref().map(Box::from));
        answer
    }
}

fn parse_e164(sanitized: &str, region: Option<Id>, international: bool) -> Option<String> {
    // Only `+?[0-9]{1,20}` reaches the parser, which keeps it away from the free-text
    // paths where it has been known to panic.
    // A `+` number carries its country: the default region must not change its reading.
    let region = if international { None } else { region };
    let number = phonenumber::parse(region, sanitized).ok()?;
    if !plausible_length(&number) {
        return None;
    }
    let key = number.format().mode(phonenumber::Mode::E164).to_string();
    if international && key != sanitized {
        // The parser rewrote an international number (e.g. dropped a `(0)` trunk
        // prefix). Keep its answer only when that answer is itself stable, so that a
        // key normalises to itself; otherwise keep the digits as written.
        let again = phonenumber::parse(None, &key).ok();
        let stable =
            again.is_some_and(|n| n.format().mode(phonenumber::Mode::E164).to_string() == key);
        if !stable {
            return Some(sanitized.to_owned());
        }
    }
    Some(key)
}

/// Whether the national number has a length some region of its country code allows.
/// Deliberately weaker than `is_valid`: fictional or unassigned ranges still pass.
fn plausible_length(number: &phonenumber::PhoneNumber) -> bool {
    let national = number.national();
    let digits = national
        .value()
        .checked_ilog10()
        .map_or(1, |d| d as usize + 1);
    let length = digits + usize::from(national.zeros());
    let code = number.code().value();
    let Some(regions) = phonenumber::metadata::DATABASE.by_code(&code) else {
        return false;
    };
    let mut any_known = false;
    for meta in regions {
        let possible = meta.descriptors().general().possible_length();
        any_known |= !possible.is_empty();
        if possible.iter().any(|&p| usize::from(p) == length) {
            return true;
        }
    }
    // No length data for the code: accept what fits in E.164.
    !any_known && (4..=15).contains(&(length + code.to_string().len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use phonenumber::country::Id;
    use proptest::prelude::*;

    const US: Option<Id> = Some(Id::US);

    #[test]
    fn memoised_answers_are_the_parsers() {
        let de = Some(Id::DE);
        let cases = [
            ("+4930123456", None),
            ("+442079460000", None),
            ("+44020794600", None),
            ("+999123456789", None),
            ("030123456", de),
            ("0301234567", de),
            ("0301234567", None),
        ];
        for (sanitized, region) in cases {
            let direct = parse_e164(sanitized, region, sanitized.starts_with('+'));
            // First call fills the memo, the second reads it.
            assert_eq!(parsed_e164(sanitized.into(), region), direct, "{sanitized}");
            assert_eq!(parsed_e164(sanitized.into(), region), direct, "{sanitized}");
        }
    }

    #[test]
    fn the_memo_is_bounded() {
        let memo = ParserMemo::new();
        for i in 0..(MEMO_SHARDS * MEMO_SHARD_CAP * 2) {
            let answer = memo.get_or_insert(&format!("+49{i}"), || Some(i.to_string()));
            assert_eq!(answer, Some(i.to_string()));
        }
        for shard in memo.shards.iter() {
            assert!(shard.lock().len() <= MEMO_SHARD_CAP);
        }
        // A known key is answered from the memo, not recomputed.
        memo.get_or_insert("known", || Some("first".into()));
        assert_eq!(
            memo.get_or_insert("known", || Some("second".into())),
            Some("first".into())
        );
    }

    #[test]
    fn the_three_spellings_of_one_number_agree() {
        for raw in [
            "+1 (555) 010-4477",
            "15550104477",
            "sip:+15550104477@carrier.example;user=phone",
            "+15550104477",
            "(555) 010-4477",
            "555.010.4477",
            "  +1-555-010-4477  ",
            "tel:+1-555-010-4477;phone-context=example.com",
            "tel:555-010-4477;phone-context=+1",
            "<sip:+15550104477@carrier.example>",
            "\"Bob <x>\" <sip:+15550104477@carrier.example;user=phone?X-Foo=bar>",
            "Bob <sips:15550104477@carrier.example:5061;transport=tls>",
            "sip:+1-555-010-4477;isub=12@carrier.example",
            "SIP:+15550104477@carrier.example",
        ] {
            assert_eq!(normalize(raw, US), "+15550104477", "{raw}");
        }
    }

    #[test]
    fn international_numbers() {
        assert_eq!(normalize("+44 20 7946 0958", US), "+442079460958");
        assert_eq!(normalize("011 44 20 7946 0958", US), "+442079460958");
        assert_eq!(normalize("020 7946 0958", Some(Id::GB)), "+442079460958");
        assert_eq!(normalize("+44 20 7946 0958", None), "+442079460958");
        assert_eq!(normalize("+44 (0)20 7946 0958", None), "+442079460958");
    }

    #[test]
    fn national_numbers_need_a_region() {
        assert_eq!(normalize("15550104477", None), "15550104477");
        assert_eq!(normalize("(555) 010-4477", None), "(555) 010-4477");
    }

    #[test]
    fn non_numbers_keep_their_raw_form() {
        assert_eq!(normalize(" 1001 ", US), "1001");
        assert_eq!(normalize("1001", Some(Id::DE)), "1001");
        assert_eq!(normalize("911", US), "911");
        assert_eq!(normalize("garbage!", US), "garbage!");
        assert_eq!(normalize("", US), "");
        assert_eq!(
            normalize("+1 555 0104477 12345678", US),
            "+1 555 0104477 12345678"
        );
    }

    #[test]
    fn sip_uris_without_a_number_key_on_user_at_host() {
        let expected = "alice@example.com";
        for raw in [
            "sip:alice@example.com",
            "sip:Alice@Example.com;transport=tcp",
            "<sip:Alice@example.com>",
            "\"Alice\" <sips:alice:secret@EXAMPLE.com:5061>",
            "sip:alice@example.com?Subject=hi",
        ] {
            assert_eq!(normalize(raw, US), expected, "{raw}");
        }
        assert_eq!(normalize("sip:1001@PBX.example", US), "1001@pbx.example");
        assert_eq!(normalize("sip:example.com", US), "example.com");
        assert_eq!(
            normalize("sip:bob@[2001:db8::1]:5060", US),
            "bob@[2001:db8::1]"
        );
        assert_eq!(normalize("sip:", US), "sip:");
    }

    #[test]
    fn tel_uris_without_a_number() {
        assert_eq!(
            normalize("tel:1001;phone-context=pbx.example", US),
            "tel:1001"
        );
        assert_eq!(normalize("tel:", US), "tel:");
    }

    #[test]
    fn brackets_without_a_uri_are_raw() {
        assert_eq!(normalize("a <b>", US), "a <b>");
    }

    #[test]
    fn long_inputs_are_capped() {
        let long = "x".repeat(MAX_INPUT_BYTES + 10);
        assert_eq!(normalize(&long, US).len(), MAX_KEY_BYTES);
        let multibyte = "é".repeat(600);
        let key = normalize(&multibyte, US);
        assert!(key.len() <= MAX_KEY_BYTES && multibyte.starts_with(&key));
        let sip = format!("sip:{}@example.com", "a".repeat(400));
        assert_eq!(normalize(&sip, US).len(), MAX_KEY_BYTES);
    }

    #[test]
    fn normalizer_matches_the_function() {
        let n = Normalizer::new(US);
        assert_eq!(n.normalize("15550104477"), "+15550104477");
    }

    proptest! {
        // Failures are reported, not persisted: the test runs from a shared tree.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn never_panics_and_stays_bounded(raw in "\\PC{0,300}") {
            let key = normalize(&raw, US);
            prop_assert!(key.len() <= MAX_KEY_BYTES);
            let _ = normalize(&raw, None);
        }

        #[test]
        fn never_panics_on_uri_shapes(
            prefix in prop::sample::select(vec!["sip:", "sips:", "tel:", "<sip:", "\"x\" <tel:", ""]),
            body in "[-+0-9a-zA-Z@;=:?<>\"(). ]{0,60}",
        ) {
            let raw = format!("{prefix}{body}");
            prop_assert!(normalize(&raw, US).len() <= MAX_KEY_BYTES);
            let _ = normalize(&raw, Some(Id::GB));
        }

        #[test]
        fn never_panics_on_digit_strings(
            raw in "\\+?[0-9]{0,22}",
            region in prop::sample::select(vec![None, US, Some(Id::GB), Some(Id::DE), Some(Id::IT), Some(Id::IN)]),
        ) {
            let key = normalize(&raw, region);
            prop_assert!(key == raw || key.starts_with('+'));
        }

        #[test]
        fn idempotent_on_e164(raw in "\\+[1-9][0-9]{6,14}") {
            let key = normalize(&raw, None);
            if key.starts_with('+') {
                prop_assert_eq!(normalize(&key, None), key.clone());
                prop_assert_eq!(normalize(&key, US), key);
            }
        }
    }

    /// Ten-digit North American numbers, the parser's way and the shortcut's way.
    fn nanp_agrees(number: &str) -> Result<(), String> {
        let parsed = parsed_e164(number.to_owned(), None);
        if nanp_as_written(number) && parsed.as_deref() != Some(number) {
            return Err(format!("{number}: parser says {parsed:?}"));
        }
        Ok(())
    }

    #[test]
    fn the_nanp_shortcut_matches_the_parser() {
        // Every area code 200–999 with pseudo-random exchanges and lines (including the
        // fictional 555-01xx range and N11 / 0xx / 1xx exchanges).
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut checked = 0;
        for area in 200..1000 {
            for exchange in [555_0100, 211_0000, 100_0000, 12_3456, 999_9999] {
                nanp_agrees(&format!("+1{area}{exchange:07}")).unwrap();
                checked += 1;
            }
            for _ in 0..6 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                nanp_agrees(&format!("+1{area}{:07}", state % 10_000_000)).unwrap();
                checked += 1;
            }
        }
        assert_eq!(checked, 800 * 11);
        // What the shortcut must not take: the parser decides those.
        for other in [
            "+1155501044",
            "+11555010447",
            "+10555010447",
            "+155501044777",
            "+1555010447",
            "+4420794609",
            "15550104477",
            "+1555010447a",
        ] {
            assert!(!nanp_as_written(other), "{other}");
        }
        assert_eq!(normalize("+1 (555) 010-4477", None), "+15550104477");
    }

    proptest! {
        #[test]
        fn the_nanp_shortcut_matches_the_parser_on_random_numbers(
            number in "\\+1[2-9][0-9]{9}",
        ) {
            prop_assert!(nanp_as_written(&number));
            prop_assert_eq!(nanp_agrees(&number), Ok(()));
        }
    }

    /// Rough cost figure, printed with `--nocapture`.
    #[test]
    fn cost_is_small() {
        let inputs = [
            "+1 (555) 010-4477",
            "sip:+15550104477@carrier.example;user=phone",
            "sip:alice@example.com",
            "1001",
        ];
        let rounds = 2_000;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            for raw in inputs {
                std::hint::black_box(normalize(std::hint::black_box(raw), US));
            }
        }
        let per_call = start.elapsed() / (rounds * inputs.len() as u32);
        println!("normalize: {per_call:?} per call");
    }
}
