//! Provider webhook signatures, verified on the exact bytes received (reference
//! `webhooks.md` §1.4, §2.4, §3):
//! - Telnyx: Ed25519 over `timestamp|body`, the timestamp within ±300 s (checked first,
//!   as every current Telnyx SDK does);
//! - Twilio: base64 HMAC-SHA1 over the URL plus the form's names and values (sorted,
//!   values de-duplicated), or over the URL alone for a JSON body whose SHA-256 is the
//!   URL's `bodySHA256`; the URL with and without its port, as the SDKs try;
//! - SignalWire: Twilio's scheme keyed with the Signing Key, and for JSON bodies hex
//!   HMAC-SHA1 over the URL and the body;
//! - Vonage: an HS256 JWT whose `payload_hash` is the body's SHA-256, `iat` within the
//!   window, `jti` not seen before;
//! - Plivo: V3, base64 HMAC-SHA256 over the canonical URL and parameters, `.` and the
//!   nonce; the nonce not seen before.
//!
//! Every comparison is constant time (`subtle`; Ed25519 by ring). Owns the secrets'
//! types (never printed) and the replay memory; it must not parse bodies beyond the
//! form pairs a signature covers, and knows no HTTP types.

use crate::providers::callback::Params;
use base64::Engine;
use parking_lot::Mutex;
use ring::hmac;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// A shared secret (auth token, signing key, signature secret). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A Telnyx account public key (Ed25519, 32 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct Ed25519Key([u8; 32]);

impl Ed25519Key {
    /// The key from its base64 text, as Mission Control shows it.
    pub fn from_base64(text: &str) -> Result<Ed25519Key, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "is not base64".to_owned())?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "decodes to {} bytes, not the 32 bytes of an Ed25519 public key",
                b.len()
            )
        })?;
        Ok(Ed25519Key(key))
    }
}

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ed25519Key(..)")
    }
}

/// Why a callback's signature is refused. The edge answers 401 without the detail; the
/// detail goes to the log (never a secret, never the body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("the {0} is malformed")]
    Malformed(&'static str),
    #[error("the signature does not verify with any configured secret")]
    Mismatch,
    #[error("the body's SHA-256 is not the signed one")]
    BodyHash,
    #[error("the timestamp is {0} s away from now, beyond the replay window")]
    Stale(i64),
    #[error("the {0} was seen before (a replay)")]
    Replayed(&'static str),
}

impl SignatureError {
    /// The `result` label of `calloutcome_webhooks_total`.
    pub fn result(&self) -> &'static str {
        match self {
            SignatureError::Stale(_) | SignatureError::Replayed(_) => "stale",
            _ => "bad_signature",
        }
    }
}

/// The verdict of a check that tried every secret.
fn matched(verified: bool) -> Result<(), SignatureError> {
    if verified {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Seconds between `timestamp` and `now` (positive: in the past).
fn age(timestamp: u64, now: SystemTime) -> i64 {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    now.saturating_sub(i64::try_from(timestamp).unwrap_or(i64::MAX))
}

/// Telnyx: `telnyx-timestamp` (decimal seconds) within `window` of `now` either way,
/// then `telnyx-signature-ed25519` (base64 of 64 bytes) over `timestamp|body` with any
/// of `keys`.
pub fn verify_telnyx(
    keys: &[Ed25519Key],
    timestamp: Option<&[u8]>,
    signature: Option<&[u8]>,
    body: &[u8],
    now: SystemTime,
    window: Duration,
) -> Result<(), SignatureError> {
    let timestamp = timestamp.ok_or(SignatureError::Missing("telnyx-timestamp"))?;
    let signature = signature.ok_or(SignatureError::Missing("telnyx-signature-ed25519"))?;
    if timestamp.is_empty() || timestamp.len() > 12 || !timestamp.iter().all(u8::is_ascii_digit) {
        return Err(SignatureError::Malformed("telnyx-timestamp header"));
    }
    let seconds: u64 = std::str::from_utf8(timestamp)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(SignatureError::Malformed("telnyx-timestamp header"))?;
    let age = age(seconds, now);
    if age.unsigned_abs() > window.as_secs() {
        return Err(SignatureError::Stale(age));
    }
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .ok()
        .filter(|s| s.len() == 64)
        .ok_or(SignatureError::Malformed("telnyx-signature-ed25519 header"))?;
    let mut message = Vec::with_capacity(timestamp.len() + 1 + body.len());
    message.extend_from_slice(timestamp);
    message.push(b'|');
    message.extend_from_slice(body);
    let mut verified = false;
    for key in keys {
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key.0);
        // Every key is tried, without early exit (rotation keeps two).
        verified |= key.verify(&message, &signature).is_ok();
    }
    matched(verified)
}

/// The URLs a provider may have signed for `url` (`scheme://host[:port]/path?query`):
/// as given, with the scheme's default port added when it has none, and with its port
/// removed — the variants twilio-python and twilio-node both accept, because "signature
/// generation on the back end is inconsistent".
pub fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // A port follows the last ':' outside an IPv6 literal.
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    let (host, port) = match authority[host_end..].rfind(':') {
        Some(i) => authority.split_at(host_end + i),
        None => (authority, ""),
    };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return variants,
    };
    let with_port = if port.is_empty() {
        format!("{scheme}://{host}{default}{tail}")
    } else {
        url.to_owned()
    };
    let without_port = format!("{scheme}://{host}{tail}");
    for v in [with_port, without_port] {
        if !variants.contains(&v) {
            variants.push(v);
        }
    }
    variants
}

/// Twilio's string to sign: the URL, then each parameter name (sorted, once) followed by
/// each of its values (sorted, de-duplicated), with no separators.
fn twilio_data(url: &str, params: &Params) -> Vec<u8> {
    let mut names: Vec<&str> = params.0.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut data = url.as_bytes().to_vec();
    for name in names {
        let mut values: Vec<&str> = params
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        values.sort_unstable();
        values.dedup();
        for value in values {
            data.extend_from_slice(name.as_bytes());
            data.extend_from_slice(value.as_bytes());
        }
    }
    data
}

/// True when one of `signatures` is the HMAC (`algorithm`) of `data(url)` for one of
/// `urls` under one of `secrets`. Each HMAC is computed once and compared with every
/// candidate in constant time; every combination is tried, without early exit.
fn any_url_hmac(
    algorithm: hmac::Algorithm,
    secrets: &[Secret],
    urls: &[String],
    data: impl Fn(&str) -> Vec<u8>,
    signatures: &[&[u8]],
) -> bool {
    let mut verified = false;
    for url in urls {
        let data = data(url);
        for secret in secrets {
            let tag = hmac::sign(&hmac::Key::new(algorithm, secret.bytes()), &data);
            for signature in signatures {
                verified |= bool::from(tag.as_ref().ct_eq(signature));
            }
        }
    }
    verified
}

/// Twilio (and SignalWire's cXML): `X-Twilio-Signature` for a form POST to one of
/// `urls` (see [`url_variants`]) carrying `params`. For a JSON body pass no params and
/// check [`body_sha256_matches`] too.
pub fn verify_twilio(
    secrets: &[Secret],
    urls: &[String],
    params: &Params,
    signature: Option<&[u8]>,
    header: &'static str,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing(header))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature.trim_ascii())
        .map_err(|_| SignatureError::Malformed("signature header"))?;
    matched(any_url_hmac(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        secrets,
        urls,
        |url| twilio_data(url, params),
        &[&signature],
    ))
}

/// Twilio's JSON variant: the URL's `bodySHA256` (lower-case hex) is the body's SHA-256.
pub fn body_sha256_matches(expected_hex: &str, body: &[u8]) -> Result<(), SignatureError> {
    let actual = hex(&Sha256::digest(body));
    if bool::from(actual.as_bytes().ct_eq(expected_hex.trim().as_bytes())) {
        Ok(())
    } else {
        Err(SignatureError::BodyHash)
    }
}

/// SignalWire's JSON (SWML/RELAY) callbacks: hex HMAC-SHA1 of the URL followed by the
/// raw body.
pub fn verify_signalwire_json(
    secrets: &[Secret],
    urls: &[String],
    body: &[u8],
    signature: Option<&[u8]>,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing("X-SignalWire-Signature"))?;
    let signature =
        unhex(signature.trim_ascii()).ok_or(SignatureError::Malformed("signature header"))?;
    matched(any_url_hmac(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        secrets,
        urls,
        |url| [url.as_bytes(), body].concat(),
        &[&signature],
    ))
}

/// Plivo V3's string to sign for a POST to `url` with form `params` (plivo-python
/// `signature_v3.py`): `scheme://host/path`, then `?` and the URL's query parameters
/// sorted as `k=v&...` (values sorted), a `.` when both query and form parameters
/// exist, then the form's `k` + `v` for each name and value, sorted.
pub fn plivo_base(url: &str, params: &Params) -> Vec<u8> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = base.split_once('#').map_or(base, |(b, _)| b);
    let mut query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut out = base.as_bytes().to_vec();
    let form_empty = params.0.is_empty();
    if !query.is_empty() || !form_empty {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    if !query.is_empty() && !form_empty {
        out.push(b'.');
    }
    let mut pairs: Vec<&(String, String)> = params.0.iter().collect();
    pairs.sort();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// Plivo V3: `X-Plivo-Signature-V3` (a comma-separated list) holds the base64
/// HMAC-SHA256 of [`plivo_base`] `.` nonce for one of `urls`.
pub fn verify_plivo(
    secrets: &[Secret],
    urls: &[String],
    params: &Params,
    nonce: Option<&[u8]>,
    signatures: Option<&[u8]>,
) -> Result<(), SignatureError> {
    let nonce = nonce.ok_or(SignatureError::Missing("X-Plivo-Signature-V3-Nonce"))?;
    let signatures = signatures.ok_or(SignatureError::Missing("X-Plivo-Signature-V3"))?;
    let candidates: Vec<Vec<u8>> = signatures
        .split(|b| *b == b',')
        .filter_map(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim_ascii())
                .ok()
        })
        .collect();
    if candidates.is_empty() {
        return Err(SignatureError::Malformed("X-Plivo-Signature-V3 header"));
    }
    let candidates: Vec<&[u8]> = candidates.iter().map(Vec::as_slice).collect();
    matched(any_url_hmac(
        hmac::HMAC_SHA256,
        secrets,
        urls,
        |url| [plivo_base(url, params).as_slice(), b".", nonce].concat(),
        &candidates,
    ))
}

/// The claims of a Vonage signed callback that are checked.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct VonageClaims {
    pub iat: Option<i64>,
    pub jti: Option<String>,
    pub payload_hash: Option<String>,
    pub application_id: Option<String>,
    pub api_key: Option<String>,
}

/// Vonage: `Authorization: Bearer <JWT>`, HS256 under one of `secrets`, `payload_hash`
/// the body's SHA-256 (hex), `iat` within `window` of `now`. Returns the claims (the
/// caller remembers `jti`).
pub fn verify_vonage(
    secrets: &[Secret],
    authorization: Option<&[u8]>,
    body: &[u8],
    now: SystemTime,
    window: Duration,
) -> Result<VonageClaims, SignatureError> {
    let authorization = authorization.ok_or(SignatureError::Missing("Authorization"))?;
    let token = std::str::from_utf8(authorization)
        .ok()
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or(SignatureError::Malformed("Authorization header"))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims::<&str>(&[]);
    let mut claims = None;
    for secret in secrets {
        let key = jsonwebtoken::DecodingKey::from_secret(secret.bytes());
        if let Ok(data) = jsonwebtoken::decode::<VonageClaims>(token, &key, &validation) {
            claims = Some(data.claims);
        }
    }
    let claims = claims.ok_or(SignatureError::Mismatch)?;
    let hash = claims
        .payload_hash
        .as_deref()
        .ok_or(SignatureError::Malformed("JWT (no payload_hash)"))?;
    body_sha256_matches(hash, body)?;
    let iat = claims
        .iat
        .and_then(|i| u64::try_from(i).ok())
        .ok_or(SignatureError::Malformed("JWT (no iat)"))?;
    let age = age(iat, now);
    if age.unsigned_abs() > window.as_secs() {
        return Err(SignatureError::Stale(age));
    }
    Ok(claims)
}

/// Nonces and JWT ids seen recently, to refuse a replay: bounded in count and age. It
/// is per replica; the report's idempotency key (shared by every replica) still makes
/// a replay that reaches another replica a duplicate, never a second outcome.
#[derive(Debug)]
pub struct ReplayCache {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    at: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl ReplayCache {
    pub fn new(ttl: Duration, capacity: usize) -> ReplayCache {
        ReplayCache {
            ttl,
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// Remembers `id`; false when it was seen within the TTL.
    pub fn first_use(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut seen = self.inner.lock();
        while let Some((at, _)) = seen.order.front() {
            if now.duration_since(*at) < self.ttl && seen.order.len() < self.capacity {
                break;
            }
            if let Some((at, old)) = seen.order.pop_front()
                && seen.at.get(&old) == Some(&at)
            {
                seen.at.remove(&old);
            }
        }
        if let Some(at) = seen.at.get(id)
            && now.duration_since(*at) < self.ttl
        {
            return false;
        }
        seen.at.insert(id.to_owned(), now);
        seen.order.push_back((now, id.to_owned()));
        true
    }

    /// Forgets `id`: its request was not recorded (the backend was down), so the
    /// provider's retry with the same nonce must be let through.
    pub fn forget(&self, id: &str) {
        self.inner.lock().at.remove(id);
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()
        })
        .collect()
}

/// Signatures as the providers compute them, for tests, examples and load generators
/// (the other side of each check above).
pub mod sign {
    use super::*;

    /// Twilio's `X-Twilio-Signature` (also SignalWire's cXML).
    pub fn twilio(token: &str, url: &str, params: &Params) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token.as_bytes());
        base64::engine::general_purpose::STANDARD
            .encode(hmac::sign(&key, &twilio_data(url, params)).as_ref())
    }

    /// SignalWire's JSON signature (hex).
    pub fn signalwire_json(key: &str, url: &str, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes());
        let mut data = url.as_bytes().to_vec();
        data.extend_from_slice(body);
        hex(hmac::sign(&key, &data).as_ref())
    }

    /// Plivo's `X-Plivo-Signature-V3` for one nonce.
    pub fn plivo(token: &str, url: &str, params: &Params, nonce: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
        let mut data = plivo_base(url, params);
        data.push(b'.');
        data.extend_from_slice(nonce.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, &data).as_ref())
    }

    /// A Vonage signed-callback JWT for `body`.
    pub fn vonage(secret: &str, body: &[u8], iat: i64, jti: &str) -> String {
        let claims = serde_json::json!({
            "iat": iat,
            "jti": jti,
            "iss": "Vonage",
            "payload_hash": hex(&Sha256::digest(body)),
            "api_key": "demo",
            "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap_or_default()
    }

    /// SHA-256 of `body`, lower-case hex (Twilio's `bodySHA256`).
    pub fn body_sha256(body: &[u8]) -> String {
        hex(&Sha256::digest(body))
    }

    /// A Telnyx signing key pair from a 32-byte seed: (public key base64, signer).
    pub fn telnyx_keys(seed: [u8; 32]) -> Result<(String, TelnyxSigner), String> {
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| e.to_string())?;
        use ring::signature::KeyPair;
        let public = base64::engine::general_purpose::STANDARD.encode(pair.public_key().as_ref());
        Ok((public, TelnyxSigner(pair)))
    }

    /// Signs as Telnyx does.
    pub struct TelnyxSigner(ring::signature::Ed25519KeyPair);

    impl TelnyxSigner {
        /// `telnyx-signature-ed25519` for `timestamp|body`.
        pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
            let mut message = timestamp.as_bytes().to_vec();
            message.push(b'|');
            message.extend_from_slice(body);
            base64::engine::general_purpose::STANDARD.encode(self.0.sign(&message).as_ref())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// twilio-python `tests/unit/test_request_validator.py` @306691e (reference §2.4).
    const TWILIO_PARAMS: &[(&str, &str)] = &[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ];
    const TWILIO_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    #[test]
    fn twilio_sdk_vectors() {
        let token = "12345";
        let p = params(TWILIO_PARAMS);
        assert_eq!(
            sign::twilio(token, TWILIO_URL, &p),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert_eq!(
            sign::twilio(token, "https://mycompany.com:443/myapp.php?foo=1&bar=2", &p),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        assert_eq!(
            sign::twilio(token, "http://mycompany.com:80/myapp.php?foo=1&bar=2", &p),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        );
        let repeated = params(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            sign::twilio(token, TWILIO_URL, &repeated),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
        // The JSON variant: the body's hash in the URL, no parameters.
        let body = br#"{"property": "value", "boolean": true}"#;
        assert_eq!(
            sign::body_sha256(body),
            "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
        );
        let url = format!("{TWILIO_URL}&bodySHA256={}", sign::body_sha256(body));
        assert_eq!(
            sign::twilio(token, &url, &Params::default()),
            "a9nBmqA0ju/hNViExpshrM61xv4="
        );
    }

    #[test]
    fn twilio_verification_tries_the_port_variants() {
        let secrets = [Secret::new("wrong"), Secret::new("12345")];
        let p = params(TWILIO_PARAMS);
        // Signed with :443; we know the URL without the port.
        let signed = sign::twilio(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &p,
        );
        let urls = url_variants(TWILIO_URL);
        assert_eq!(urls.len(), 2);
        verify_twilio(
            &secrets,
            &urls,
            &p,
            Some(signed.as_bytes()),
            "X-Twilio-Signature",
        )
        .unwrap();
        // And the other way round.
        let signed = sign::twilio("12345", TWILIO_URL, &p);
        let urls = url_variants("https://mycompany.com:443/myapp.php?foo=1&bar=2");
        verify_twilio(
            &secrets,
            &urls,
            &p,
            Some(signed.as_bytes()),
            "X-Twilio-Signature",
        )
        .unwrap();
        // A changed value, a re-encoded query, a wrong token: refused.
        let mut changed = p.clone();
        changed.0[2].1 = "1235".into();
        assert_eq!(
            verify_twilio(&secrets, &urls, &changed, Some(signed.as_bytes()), "X"),
            Err(SignatureError::Mismatch)
        );
        let reencoded = url_variants("https://mycompany.com/myapp.php?bar=2&foo=1");
        assert_eq!(
            verify_twilio(&secrets, &reencoded, &p, Some(signed.as_bytes()), "X"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_twilio(
                &[Secret::new("nope")],
                &urls,
                &p,
                Some(signed.as_bytes()),
                "X"
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_twilio(&secrets, &urls, &p, None, "X-Twilio-Signature"),
            Err(SignatureError::Missing("X-Twilio-Signature"))
        );
    }

    #[test]
    fn url_variants_cover_ports_and_ipv6() {
        assert_eq!(
            url_variants("http://[::1]:8080/a?b=c"),
            ["http://[::1]:8080/a?b=c", "http://[::1]/a?b=c"]
        );
        assert_eq!(
            url_variants("https://h/x"),
            ["https://h/x", "https://h:443/x"]
        );
        assert_eq!(url_variants("no-scheme"), ["no-scheme"]);
    }

    /// telnyx-go `lib/webhook_verification_test.go` checks the same order: timestamp
    /// window first (both directions), then sizes, then the signature.
    #[test]
    fn telnyx_ed25519() {
        let (public, signer) = sign::telnyx_keys([7; 32]).unwrap();
        let keys = [Ed25519Key::from_base64(&public).unwrap()];
        let now = UNIX_EPOCH + Duration::from_secs(1_779_233_415);
        let window = Duration::from_secs(300);
        let body = br#"{"data":{"event_type":"call.hangup"}}"#;
        let sig = signer.sign("1779233415", body);
        let check = |ts: &str, sig: &str, body: &[u8]| {
            verify_telnyx(
                &keys,
                Some(ts.as_bytes()),
                Some(sig.as_bytes()),
                body,
                now,
                window,
            )
        };
        check("1779233415", &sig, body).unwrap();
        let mut flipped = body.to_vec();
        flipped[3] ^= 1;
        assert_eq!(
            check("1779233415", &sig, &flipped),
            Err(SignatureError::Mismatch)
        );
        let old = signer.sign("1779233000", body);
        assert_eq!(
            check("1779233000", &old, body),
            Err(SignatureError::Stale(415))
        );
        let future = signer.sign("1779233800", body);
        assert_eq!(
            check("1779233800", &future, body),
            Err(SignatureError::Stale(-385))
        );
        assert!(matches!(
            check("-1", &sig, body),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            check("1779233415", "AAAA", body),
            Err(SignatureError::Malformed(_))
        ));
        assert!(Ed25519Key::from_base64("AAAA").is_err());
    }

    /// plivo-python's algorithm: query sorted, `.` between query and form, form pairs
    /// concatenated; a list header accepts any listed signature.
    #[test]
    fn plivo_v3() {
        let p = params(&[
            ("To", "14155550111"),
            ("CallUUID", "abc"),
            ("CallStatus", "busy"),
        ]);
        assert_eq!(
            String::from_utf8(plivo_base("https://h.example/cb?z=1&a=2", &p)).unwrap(),
            "https://h.example/cb?a=2&z=1.CallStatusbusyCallUUIDabcTo14155550111"
        );
        assert_eq!(
            String::from_utf8(plivo_base("https://h.example/cb", &p)).unwrap(),
            "https://h.example/cb?CallStatusbusyCallUUIDabcTo14155550111"
        );
        let sig = sign::plivo("token", "https://h.example/cb", &p, "n-1");
        let urls = vec!["https://h.example/cb".to_owned()];
        let secrets = [Secret::new("token")];
        let header = format!("bm90LWl0,{sig}");
        verify_plivo(&secrets, &urls, &p, Some(b"n-1"), Some(header.as_bytes())).unwrap();
        assert_eq!(
            verify_plivo(&secrets, &urls, &p, Some(b"n-2"), Some(sig.as_bytes())),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn vonage_jwt() {
        let body = br#"{"status":"busy","uuid":"u1"}"#;
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let window = Duration::from_secs(300);
        let token = sign::vonage("sig-secret", body, 1_800_000_000, "j1");
        let auth = format!("Bearer {token}");
        let secrets = [Secret::new("old"), Secret::new("sig-secret")];
        let claims = verify_vonage(&secrets, Some(auth.as_bytes()), body, now, window).unwrap();
        assert_eq!(claims.jti.as_deref(), Some("j1"));
        assert_eq!(
            verify_vonage(&secrets, Some(auth.as_bytes()), b"{}", now, window).unwrap_err(),
            SignatureError::BodyHash
        );
        assert_eq!(
            verify_vonage(
                &[Secret::new("x")],
                Some(auth.as_bytes()),
                body,
                now,
                window
            )
            .unwrap_err(),
            SignatureError::Mismatch
        );
        let later = now + Duration::from_secs(301);
        assert_eq!(
            verify_vonage(&secrets, Some(auth.as_bytes()), body, later, window).unwrap_err(),
            SignatureError::Stale(301)
        );
    }

    #[test]
    fn signalwire_json_and_replays() {
        let sig = sign::signalwire_json("PSK_1", "https://h/x", b"{}");
        let urls = vec!["https://h/x".to_owned()];
        verify_signalwire_json(&[Secret::new("PSK_1")], &urls, b"{}", Some(sig.as_bytes()))
            .unwrap();
        assert_eq!(
            verify_signalwire_json(&[Secret::new("PSK_1")], &urls, b"{ }", Some(sig.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        let cache = ReplayCache::new(Duration::from_secs(60), 2);
        assert!(cache.first_use("a"));
        assert!(!cache.first_use("a"));
        cache.forget("a");
        assert!(cache.first_use("a"));
        assert!(cache.first_use("b"));
        assert!(cache.first_use("c")); // capacity 2: "a" is dropped
        assert!(cache.first_use("a"));
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
