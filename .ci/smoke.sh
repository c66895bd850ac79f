#!/usr/bin/env bash
# Smoke test of the real binary with real clients: starts `call-outcome serve` on a free
# loopback port, then checks reflection, health and the RPCs with grpcurl, the CLI's
# classify/report/check-config, and a clean exit on SIGTERM; the README's signed webhook
# example against examples/webhooks.toml; then a server with
# mutual TLS, called by grpcurl (Go's TLS stack) with a client certificate.
# Usage: .ci/smoke.sh path/to/call-outcome   (grpcurl and openssl must be on PATH)
set -euo pipefail
BIN=$(realpath "$1")
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
LOG="$WORK/server.log"
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

fail() { echo "SMOKE FAIL: $*" >&2; echo "--- server log" >&2; cat "$LOG" >&2 || true; exit 1; }
# Synchronise on the server's own "serving" log line (bounded wait).
wait_serving() { # wait_serving <which server>
  for _ in $(seq 1 200); do
    grep -q "serving calloutcome" "$LOG" 2>/dev/null && return 0
    kill -0 "$PID" 2>/dev/null || fail "$1 exited early"
    sleep 0.05
  done
}
expect() { # expect <description> <haystack> <needle>
  grep -qF -- "$3" <<<"$2" || fail "$1: expected '$3' in: $2"
  echo "ok - $1"
}

"$BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$LOG" 2>&1 &
PID=$!
wait_serving "server"
ADDR=$(grep -o 'listen=[0-9.:]*' "$LOG" | head -n1 | cut -d= -f2 || true)
[ -n "$ADDR" ] || fail "no listen address in log"
ADMIN=$(grep -o 'admin=[0-9.:]*' "$LOG" | head -n1 | cut -d= -f2 || true)
[ -n "$ADMIN" ] || fail "no admin address in log"
echo "server at $ADDR, admin at $ADMIN"
http_get() { python3 -c 'import sys,urllib.request
try:
    r=urllib.request.urlopen(sys.argv[1], timeout=10); print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code)' "$1"; }

out=$(grpcurl -plaintext "$ADDR" list)
expect "reflection lists the service" "$out" "calloutcome.v1.CallOutcomeService"
expect "reflection lists health" "$out" "grpc.health.v1.Health"
out=$(grpcurl -plaintext "$ADDR" describe calloutcome.v1.CallOutcomeService)
expect "describe shows ReportOutcome" "$out" "rpc ReportOutcome"
out=$(grpcurl -plaintext -d '{"service":"calloutcome.v1.CallOutcomeService"}' "$ADDR" grpc.health.v1.Health/Check)
expect "health is SERVING" "$out" '"SERVING"'

out=$(grpcurl -plaintext -d '{"outcome":{"sip":{"code":603}}}' "$ADDR" calloutcome.v1.CallOutcomeService/Classify)
expect "Classify 603 is declined" "$out" '"CATEGORY_DECLINED"'
expect "Classify 603 is the callee's choice" "$out" '"FAULT_CALLEE_CHOICE"'
out=$(grpcurl -plaintext -d '{"outcome":{"sip":{"code":503,"retryAfterHeader":"120"}}}' "$ADDR" calloutcome.v1.CallOutcomeService/Classify)
expect "503 + Retry-After is route-scoped" "$out" '"RETRY_AFTER_SCOPE_ROUTE"'

req='{"outcome":{"callId":"smoke-1","attempt":1,"to":"+1 (555) 010-4477","sip":{"code":486}}}'
out=$(grpcurl -plaintext -d "$req" "$ADDR" calloutcome.v1.CallOutcomeService/ReportOutcome)
expect "ReportOutcome 486 is busy" "$out" '"CATEGORY_BUSY"'
expect "destination is normalised" "$out" '"+15550104477"'
out=$(grpcurl -plaintext -d "$req" "$ADDR" calloutcome.v1.CallOutcomeService/ReportOutcome)
expect "a repeated report is a duplicate" "$out" '"duplicate": true'

if out=$(grpcurl -plaintext -d '{"outcome":{"callId":"x","to":"+15550104477","sip":{"code":180}}}' "$ADDR" calloutcome.v1.CallOutcomeService/ReportOutcome 2>&1); then
  fail "a 180 report was accepted: $out"
fi
expect "1xx is INVALID_ARGUMENT" "$out" "InvalidArgument"
expect "the violation names the field" "$out" "outcome.sip.code"

out=$(http_get "http://$ADMIN/healthz")
expect "admin /healthz" "$out" "200"
out=$(http_get "http://$ADMIN/readyz")
expect "admin /readyz" "$out" "ready"
out=$(http_get "http://$ADMIN/metrics")
expect "admin /metrics counts the busy report" "$out" 'calloutcome_outcomes_total{action="retry_later",category="busy",sip_class="4xx"} 1'
expect "admin /metrics counts the duplicate" "$out" 'calloutcome_duplicates_total 1'
out=$(grpcurl -plaintext -d '{"service":""}' "$ADMIN" grpc.health.v1.Health/Check)
expect "gRPC health on the admin port" "$out" '"SERVING"'

out=$("$BIN" classify --sip-code 603)
expect "CLI classify explains 603" "$out" "declined"
out=$("$BIN" classify --sip-code 603 --json)
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["category"]=="declined" and d["fault"]=="callee_choice" and d["retryable"]=="no", d' "$out" \
  || fail "classify --json: $out"
echo "ok - CLI classify --json uses the reference vocabulary"
if "$BIN" classify --sip-code 180 >/dev/null 2>&1; then fail "classify accepted 180"; fi
echo "ok - CLI classify rejects 180"

out=$("$BIN" report --server "http://$ADDR" --call-id smoke-cli --attempt 1 --to 15550104477 --sip-code 603 --label campaign=spring --json)
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["category"]=="declined" and d["duplicate"] is False and d["destination"]=="+15550104477", d' "$out" \
  || fail "report --json: $out"
echo "ok - CLI report"

printf 'version = 1\n\n[[rules]]\nname = "x"\naction = "teleport"\nexplanation = "x"\n' >"$WORK/bad.toml"
if out=$("$BIN" check-config "$WORK/bad.toml" 2>&1); then fail "bad policy accepted"; fi
expect "check-config points at the line" "$out" "bad.toml:5:"
out=$("$BIN" check-config examples/policy.toml)
expect "the example policy is valid" "$out" "valid policy"

kill -TERM "$PID"
for _ in $(seq 1 200); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$PID" 2>/dev/null; then fail "server still running after SIGTERM"; fi
wait "$PID" && rc=0 || rc=$?
PID=
[ "$rc" -eq 0 ] || fail "server exit code $rc after SIGTERM"
echo "ok - SIGTERM drains and exits 0"

# --- the README's webhook example: its signed Twilio callback, run as written --------
command -v curl >/dev/null || fail "curl not found on PATH (apt-get install curl)"
LOG="$WORK/webhooks-server.log"
"$BIN" serve --config examples/webhooks.toml --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --webhooks-listen 127.0.0.1:0 >"$LOG" 2>&1 &
PID=$!
wait_serving "webhook server"
ADDR=$(grep -o 'listen=[0-9.:]*' "$LOG" | head -n1 | cut -d= -f2 || true)
HOOKS=$(grep -o 'webhooks=[0-9.:]*' "$LOG" | head -n1 | cut -d= -f2 || true)
[ -n "$HOOKS" ] || fail "no webhook listener address in the log"
# The curl command exactly as README.md shows it, on the listener's real port (the
# signature covers public_base_url, which examples/webhooks.toml fixes).
CURL=$(python3 - <<'PY'
import re
text = open("README.md").read()
m = re.search(r"^curl -sS 'http://127\.0\.0\.1:8080/v1/webhooks/twilio/demo.*?[^\\]\n", text, re.M | re.S)
print(m.group(0).strip() if m else "")
PY
)
[ -n "$CURL" ] || fail "no signed curl example in README.md"
"$BIN" subscribe --server "http://$ADDR" --from-oldest --max-events 1 >"$WORK/sub.out" 2>&1 &
SUB=$!
out=$(bash -c "${CURL//127.0.0.1:8080/$HOOKS}") || fail "the README's curl failed: $out"
expect "the README's signed Twilio callback is accepted" "$out" '"result":"accepted"'
expect "and classified as a decline" "$out" '"category":"declined"'
wait "$SUB" || fail "subscribe exited non-zero: $(cat "$WORK/sub.out")"
out=$(cat "$WORK/sub.out")
expect "the subscriber gets the decline under the caller's call id" "$out" '"call_id":"order-1001"'
expect "with the provider label" "$out" '"provider":"twilio"'
out=$(bash -c "${CURL//127.0.0.1:8080/$HOOKS}")
expect "a redelivery is a duplicate" "$out" '"result":"duplicate"'
TAMPERED=${CURL//127.0.0.1:8080/$HOOKS}
out=$(bash -c "${TAMPERED//CallStatus=failed/CallStatus=busy} -o /dev/null -w '%{http_code}'")
expect "a changed field fails the signature: 401" "$out" "401"
kill -TERM "$PID"
wait "$PID" && rc=0 || rc=$?
PID=
[ "$rc" -eq 0 ] || fail "webhook server exit code $rc after SIGTERM"
echo "ok - webhook server drains and exits 0"

# --- mutual TLS with another TLS implementation: grpcurl (Go) against rustls -------------
command -v openssl >/dev/null || fail "openssl not found on PATH (apt-get install openssl)"
PKI="$WORK/pki"; mkdir -p "$PKI"
cert() { # cert <name> <subject> <extensions>: a leaf signed by the test CA
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" \
    -keyout "$PKI/$1.key" -out "$PKI/$1.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 1 -extfile <(printf '%b' "$3") -out "$PKI/$1.crt" 2>/dev/null
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=smoke-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
  -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null || fail "openssl: CA"
cert tls /CN=localhost 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth' || fail "openssl: server"
cert dialer /CN=dialer 'subjectAltName=URI:spiffe://acme/dialer\nextendedKeyUsage=clientAuth' || fail "openssl: client"
cat >"$WORK/tls.toml" <<TOML
listen = "127.0.0.1:0"
admin_listen = ""
[tls]
cert_file = "pki/tls.crt"
key_file = "pki/tls.key"
client_ca_file = "pki/ca.crt"
[auth]
enabled = true
[[auth.client_certs]]
name = "dialer"
san_uri = "spiffe://acme/dialer"
tenant = "acme"
roles = ["report"]
TOML
LOG="$WORK/tls-server.log"
"$BIN" serve --config "$WORK/tls.toml" >"$LOG" 2>&1 &
PID=$!
wait_serving "TLS server"
ADDR=$(grep -o 'listen=[0-9.:]*' "$LOG" | head -n1 | cut -d= -f2 || true)
[ -n "$ADDR" ] || fail "no listen address in the TLS server's log"
TLSFLAGS=(-cacert "$PKI/ca.crt" -servername localhost)
out=$(grpcurl "${TLSFLAGS[@]}" -cert "$PKI/dialer.crt" -key "$PKI/dialer.key" \
  -d '{"outcome":{"callId":"tls-1","to":"+15550104477","sip":{"code":603}}}' \
  "$ADDR" calloutcome.v1.CallOutcomeService/ReportOutcome 2>&1) || fail "grpcurl over mTLS: $out"
expect "grpcurl reports over mutual TLS (certificate → tenant acme)" "$out" '"CATEGORY_DECLINED"'
if out=$(grpcurl "${TLSFLAGS[@]}" -connect-timeout 3 "$ADDR" list 2>&1); then
  fail "served a client without a certificate: $out"
fi
echo "ok - no client certificate, no connection"
if out=$(grpcurl -plaintext -connect-timeout 3 "$ADDR" list 2>&1); then
  fail "served plaintext on the TLS port: $out"
fi
echo "ok - plaintext is refused on the TLS port"
kill -TERM "$PID"
wait "$PID" && rc=0 || rc=$?
PID=
[ "$rc" -eq 0 ] || fail "TLS server exit code $rc after SIGTERM"
echo "smoke: all passed"
