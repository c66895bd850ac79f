"""Signs call-status callbacks with the providers' own SDKs (twilio, plivo) and the
libraries their docs name (PyJWT for Vonage, cryptography's Ed25519 as Telnyx signs),
posts them to the webhook listener, and checks the answers: each signed callback is
accepted, a tampered one is refused with 401.

    sdk-python webhook_sdks.py HOST:PORT

Secrets are those of tests/real_clients.rs. Exit status 0 when every check passed.
"""

import base64
import hashlib
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from plivo.utils.signature_v3 import construct_post_url, get_signature_v3
from twilio.request_validator import RequestValidator

ADDR = sys.argv[1]
BASE = f"http://{ADDR}/v1/webhooks"
TWILIO_TOKEN = "sdk-twilio-token"
PLIVO_TOKEN = "sdk-plivo-token"
VONAGE_SECRET = "sdk-vonage-secret"
TELNYX_SEED = bytes([11] * 32)


def post(url, body, headers):
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def expect(what, got, status, result=None):
    code, body = got
    ok = code == status and (result is None or body.get("result") == result)
    print(("ok - " if ok else "FAIL - ") + what + f": {code} {body}")
    if not ok:
        sys.exit(1)


# Twilio: the SDK computes X-Twilio-Signature over the URL (with our call_id/attempt) and
# the form; the validator agrees with itself first.
validator = RequestValidator(TWILIO_TOKEN)
url = f"{BASE}/twilio/acme?call_id=sdk-twilio-1&attempt=2"
params = {
    "CallSid": "CA" + uuid.uuid4().hex,
    "AccountSid": "AC" + uuid.uuid4().hex,
    "CallStatus": "busy",
    "SipResponseCode": "486",
    "SequenceNumber": "3",
    "From": "+12013800532",
    "To": "+15550104477",
    "Timestamp": "Tue, 01 Nov 2016 01:59:13 +0000",
}
signature = validator.compute_signature(url, params)
assert validator.validate(url, params, signature)
form = urllib.parse.urlencode(params).encode()
headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
expect("twilio form signed by twilio-python", post(url, form, headers), 200, "accepted")
tampered = urllib.parse.urlencode({**params, "CallStatus": "completed"}).encode()
expect("twilio form with a changed field", post(url, tampered, headers), 401)

# Twilio's JSON variant: bodySHA256 in the URL, the URL signed without parameters.
body = json.dumps({"CallSid": "CA" + uuid.uuid4().hex, "CallStatus": "failed",
                   "SipResponseCode": "603", "To": "+15550104478"}).encode()
json_url = f"{BASE}/twilio/acme?bodySHA256={validator.compute_hash(body.decode())}"
signature = validator.compute_signature(json_url, {})
assert validator.validate(json_url, body.decode(), signature)
headers = {"Content-Type": "application/json", "X-Twilio-Signature": signature}
expect("twilio JSON with bodySHA256 signed by twilio-python", post(json_url, body, headers), 200, "accepted")
expect("twilio JSON with another body", post(json_url, body.replace(b"603", b"486"), headers), 401)

# Plivo: the SDK's V3 signature over the canonical URL and the form, with a nonce.
url = f"{BASE}/plivo/acme?call_id=sdk-plivo-1"
params = {"CallUUID": str(uuid.uuid4()), "CallStatus": "failed", "HangupCauseCode": "2000",
          "From": "14155550100", "To": "14155550111", "Event": "Hangup"}
nonce = str(uuid.uuid4().int)[:20]
signature = get_signature_v3(PLIVO_TOKEN, construct_post_url(url, dict(params)), nonce).decode()
headers = {"Content-Type": "application/x-www-form-urlencoded",
           "X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": nonce}
form = urllib.parse.urlencode(params).encode()
expect("plivo form signed by plivo-python", post(url, form, headers), 200, "accepted")
expect("plivo replayed nonce", post(url, form, headers), 401)

# Vonage: an HS256 JWT with the body's SHA-256, as Vonage signs callbacks.
body = json.dumps({"status": "failed", "detail": "declined", "uuid": str(uuid.uuid4()),
                   "conversation_uuid": "CON-" + str(uuid.uuid4()), "from": "447700900000",
                   "to": "447700900001", "timestamp": "2026-05-19T23:30:23.738Z"}).encode()
claims = {"iat": int(time.time()), "jti": str(uuid.uuid4()), "iss": "Vonage",
          "payload_hash": hashlib.sha256(body).hexdigest(), "api_key": "abcd1234",
          "application_id": str(uuid.uuid4())}
token = jwt.encode(claims, VONAGE_SECRET, algorithm="HS256")
headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
expect("vonage JSON with a PyJWT-signed token", post(f"{BASE}/vonage/acme", body, headers), 200, "accepted")

# Telnyx: Ed25519 over "timestamp|body", as Telnyx signs.
key = Ed25519PrivateKey.from_private_bytes(TELNYX_SEED)
state = base64.b64encode(json.dumps({"call_id": "sdk-telnyx-1", "attempt": 1}).encode()).decode()
body = json.dumps({"data": {"record_type": "event", "event_type": "call.hangup", "id": str(uuid.uuid4()),
                            "occurred_at": "2026-05-19T23:30:23.738431Z",
                            "payload": {"call_control_id": "v3:" + uuid.uuid4().hex, "client_state": state,
                                        "from": "+15129342627", "to": "+15122548727",
                                        "hangup_cause": "call_rejected", "sip_hangup_cause": "603"}},
                   "meta": {"attempt": 1}}).encode()
ts = str(int(time.time()))
signature = base64.b64encode(key.sign(ts.encode() + b"|" + body)).decode()
headers = {"Content-Type": "application/json", "telnyx-timestamp": ts, "telnyx-signature-ed25519": signature}
expect("telnyx JSON signed with Ed25519", post(f"{BASE}/telnyx/acme", body, headers), 200, "accepted")
print("webhook SDKs: all passed")
