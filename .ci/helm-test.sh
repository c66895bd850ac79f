#!/usr/bin/env bash
# Tests of the Helm chart helm/call-outcome, offline:
#   helm lint --strict (defaults, every ci/*-values.yaml, values-ha.yaml); helm template of
#   each; every rendered manifest validated against the Kubernetes schemas
#   (kubernetes-validate, strict, oldest and newest supported Kubernetes); assertions on
#   the rendered output (.ci/helm_assert.py); the values schema rejecting typos and wrong
#   types; pods rolling when the config changes (and the policy only with policyRollOnChange);
#   the shipped policy passing check-config.
# Usage: .ci/helm-test.sh path/to/call-outcome
# Needs helm, kubernetes-validate and tools-python on PATH (.ci/tools.sh helm
# kubernetes_validate) and openssl; a missing tool is a failure, never a skip.
set -euo pipefail
BIN=$(realpath "$1")
cd "$(dirname "$0")/.."
CHART=helm/call-outcome
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas shipped.
KUBE_VERSIONS=(1.30.0 1.37.0)

fail() { echo "HELM FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

for tool in helm kubernetes-validate tools-python; do
  command -v "$tool" >/dev/null || fail "$tool not found on PATH (run .ci/tools.sh helm kubernetes_validate)"
done
# Makes the throwaway certificate for checking the TLS render (Debian package openssl).
command -v openssl >/dev/null || fail "openssl not found on PATH (apt-get install openssl)"
[ -x "$BIN" ] || fail "binary $BIN not found"
helm version --short | grep -q '^v4\.' || fail "helm v4 expected, got $(helm version --short)"
assert() { tools-python .ci/helm_assert.py "$@"; }

# --- the policy shipped in the chart is the service's built-in one, and valid ----------
cmp -s "$CHART/files/policy.toml" src/policy/default.toml \
  || fail "$CHART/files/policy.toml differs from src/policy/default.toml (copy it over)"
ok "chart policy is identical to src/policy/default.toml"
"$BIN" check-config "$CHART/files/policy.toml" >/dev/null || fail "check-config rejects the chart's policy"
ok "call-outcome check-config accepts the chart's policy"

# --- the validator is not a no-op: a broken Deployment must fail --------------------------
cat >"$WORK/broken.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: x
          readinessProbe: {grpc: {port: "admin"}}
          unknownField: 1
YAML
if kubernetes-validate --strict --quiet -k "${KUBE_VERSIONS[0]}" "$WORK/broken.yaml" >/dev/null 2>&1; then
  fail "kubernetes-validate accepted a broken Deployment"
fi
ok "kubernetes-validate rejects a broken Deployment"

# --- lint, render, validate, assert each values set ----------------------------------------
declare -A CASES=(
  [default]="-f $CHART/ci/default-values.yaml"
  [tls-auth]="-f $CHART/ci/tls-auth-values.yaml"
  [ha-nats]="-f $CHART/ci/ha-nats-values.yaml"
  [metrics]="-f $CHART/ci/metrics-values.yaml"
  [webhooks]="-f $CHART/ci/webhooks-values.yaml"
  [values-ha]="-f $CHART/values-ha.yaml"
)
for f in "$CHART"/ci/*-values.yaml; do
  name=$(basename "$f" -values.yaml)
  [ -n "${CASES[$name]:-}" ] || fail "$f has no assertions: add a case to .ci/helm-test.sh and .ci/helm_assert.py"
done

helm lint --strict "$CHART" >"$WORK/lint.log" 2>&1 || { cat "$WORK/lint.log" >&2; fail "helm lint --strict (defaults)"; }
ok "helm lint --strict (defaults)"
helm template t "$CHART" >/dev/null || fail "helm template (no values file)"
ok "helm template renders with no values file"

for name in default tls-auth ha-nats metrics webhooks values-ha; do
  # shellcheck disable=SC2086  # the case's flags are split on purpose
  set -- ${CASES[$name]}
  helm lint --strict "$CHART" "$@" >"$WORK/lint.log" 2>&1 || { cat "$WORK/lint.log" >&2; fail "helm lint --strict $*"; }
  ok "helm lint --strict ($name)"
  out="$WORK/render-$name"
  helm template call-outcome "$CHART" --namespace telephony "$@" --output-dir "$out" >/dev/null \
    || fail "helm template ($name)"
  mapfile -t files < <(find "$out" -name '*.yaml' | sort)
  for kv in "${KUBE_VERSIONS[@]}"; do
    if ! kubernetes-validate --strict -k "$kv" "${files[@]}" >"$WORK/kv.log" 2>&1; then
      cat "$WORK/kv.log" >&2; fail "kubernetes-validate ($name, Kubernetes $kv)"
    fi
    # Only the Prometheus Operator's ServiceMonitor and PrometheusRule (CRDs: no schema
    # offline) may lack a schema; their shape is asserted by helm_assert.py instead (and
    # the rules by promtool, .ci/prometheus-test.sh).
    crds="Couldn't find schema for kind (ServiceMonitor|PrometheusRule)"
    if grep -v 'passed for resource' "$WORK/kv.log" | grep -Ev "$crds" | grep -q .; then
      cat "$WORK/kv.log" >&2; fail "kubernetes-validate ($name, Kubernetes $kv): unexpected output"
    fi
    passed=$(grep -c 'passed for resource' "$WORK/kv.log" || true)
    monitors=$(grep -Ec "$crds" "$WORK/kv.log" || true)
    [ "$((passed + monitors))" -eq "${#files[@]}" ] || fail "kubernetes-validate ($name): $passed of ${#files[@]} files passed"
    note=""
    [ "$monitors" -eq 0 ] || note=" (+ $monitors ServiceMonitor/PrometheusRule: CRDs, no schema offline; asserted by helm_assert.py)"
    ok "kubernetes-validate --strict ($name, Kubernetes $kv): $passed manifests valid$note"
  done
  assert render "$name" "$out" | sed "s/^ok - /ok - [$name] /" || fail "assertions ($name)"
done

# --- pods roll when the config changes, the policy reloads in place; deterministic renders ---
render_checksum() { # render_checksum <dir> <annotation> [helm flags]
  local dir="$WORK/sum-$1" name="$2"; shift 2
  helm template t "$CHART" "$@" --output-dir "$dir" >/dev/null || fail "helm template $*"
  assert checksum "$dir" "$name"
}
base=$(render_checksum a config)
again=$(render_checksum b config)
[ "$base" = "$again" ] || fail "checksum/config differs between two identical renders"
ok "checksum/config is stable across identical renders"
sed 's/^initial = "2m"$/initial = "3m"/' "$CHART/files/policy.toml" >"$WORK/policy-changed.toml"
! cmp -s "$CHART/files/policy.toml" "$WORK/policy-changed.toml" || fail "test policy edit did not change the policy"
"$BIN" check-config "$WORK/policy-changed.toml" >/dev/null || fail "the edited test policy is invalid"
changed=$(render_checksum c config --set-file policy="$WORK/policy-changed.toml")
[ "$base" = "$changed" ] || fail "checksum/config changed with the policy: pods would roll instead of reloading it"
[ "$(render_checksum c policy --set-file policy="$WORK/policy-changed.toml")" = none ] \
  || fail "checksum/policy is set without policyRollOnChange"
ok "a policy change leaves the pods alone (the service reloads it in place)"
roll_a=$(render_checksum e policy --set policyRollOnChange=true)
roll_b=$(render_checksum f policy --set policyRollOnChange=true --set-file policy="$WORK/policy-changed.toml")
[ "$roll_a" != none ] && [ "$roll_a" != "$roll_b" ] || fail "policyRollOnChange: checksum/policy does not follow the policy"
ok "policyRollOnChange=true rolls the pods on a policy change (checksum/policy)"
level=$(render_checksum d config --set config.log.level=debug)
[ "$base" != "$level" ] || fail "checksum/config did not change when the config changed"
ok "checksum/config changes when the config changes"
assert extract "$WORK/sum-c" "$WORK/policy-c"
cmp -s "$WORK/policy-c/policy/policy.toml" "$WORK/policy-changed.toml" || fail "policy value not rendered verbatim"
ok "the policy value is rendered verbatim into its ConfigMap"

# existingPolicyConfigMap: the chart renders no policy, the pod mounts the user's.
helm template t "$CHART" --set existingPolicyConfigMap=my-policy --output-dir "$WORK/existing" >/dev/null \
  || fail "helm template existingPolicyConfigMap"
[ ! -e "$WORK/existing/call-outcome/templates/configmap-policy.yaml" ] \
  || fail "existingPolicyConfigMap: the chart still renders a policy"
grep -q 'name: my-policy' "$WORK/existing/call-outcome/templates/deployment.yaml" \
  || fail "existingPolicyConfigMap: the pod does not mount my-policy"
ok "existingPolicyConfigMap replaces the chart's policy"

# --- NOTES tell how to call the service ---------------------------------------------------
helm install call-outcome "$CHART" --dry-run=client -n telephony -f "$CHART/ci/tls-auth-values.yaml" >"$WORK/notes.txt" 2>&1 \
  || { cat "$WORK/notes.txt" >&2; fail "helm install --dry-run=client (NOTES)"; }
for want in "call-outcome.telephony.svc:50051" "port-forward svc/call-outcome" \
  "grpc.health.v1.Health/Check" "calloutcome.v1.CallOutcomeService/Classify" "-cert client.crt -key client.key" \
  "helm test call-outcome -n telephony"; do
  sed -n '/^NOTES:/,$p' "$WORK/notes.txt" | grep -qF -- "$want" || fail "NOTES lack '$want'"
done
ok "NOTES show the address, port-forward, health, a Classify call with the TLS flags, helm test"

# --- the rendered service config --------------------------------------------------------------
assert extract "$WORK/render-default" "$WORK/cfg"
cmp -s "$WORK/cfg/policy/policy.toml" src/policy/default.toml || fail "rendered policy.toml differs from the built-in policy"
ok "rendered policy.toml is the built-in policy"
# The service itself validates what the chart renders (config and the policy it names).
for name in default ha-nats metrics values-ha; do
  assert extract "$WORK/render-$name" "$WORK/cfg-$name"
  "$BIN" check-config "$WORK/cfg-$name/config.toml" >"$WORK/cc.log" 2>&1 \
    || { cat "$WORK/cc.log" >&2; fail "call-outcome check-config rejects the rendered config.toml ($name)"; }
  ok "call-outcome check-config accepts the rendered config.toml ($name)"
done
# tls-auth names files the pod gets from Secrets (/etc/call-outcome/tls, .../secrets), and
# check-config reads and verifies them. So the test plays the Secrets: a throwaway
# certificate, key and CA, and an auth.toml as a user would put in the auth Secret, under
# $WORK/etc/call-outcome; only that path prefix of the rendered config is rewritten.
assert extract "$WORK/render-tls-auth" "$WORK/cfg-tls-auth"
MOUNTS="$WORK/etc/call-outcome"
mkdir -p "$MOUNTS/tls" "$MOUNTS/secrets"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=call-outcome -addext subjectAltName=DNS:call-outcome.telephony.svc \
  -keyout "$MOUNTS/tls/tls.key" -out "$MOUNTS/tls/tls.crt" >"$WORK/openssl.log" 2>&1 \
  || { cat "$WORK/openssl.log" >&2; fail "openssl could not make a test certificate"; }
cp "$MOUNTS/tls/tls.crt" "$MOUNTS/tls/ca.crt"
cat >"$MOUNTS/secrets/auth.toml" <<TOML
[auth]
enabled = true
[[auth.api_keys]]
name = "helm-test"
sha256 = "$("$BIN" hash-key helm-test-key)"
tenant = "default"
roles = ["report"]
[[auth.client_certs]]
name = "dialer"
san_dns = "dialer.telephony.svc"
tenant = "default"
roles = ["report", "subscribe"]
TOML
grep -q '^\[tls\]' "$WORK/cfg-tls-auth/config.toml" || fail "tls-auth renders no [tls] table"
sed "s#\"/etc/call-outcome/#\"$WORK/etc/call-outcome/#g" "$WORK/cfg-tls-auth/config.toml" >"$WORK/cfg-tls-auth/local.toml"
"$BIN" check-config "$WORK/cfg-tls-auth/local.toml" >"$WORK/cc.log" 2>&1 \
  || { cat "$WORK/cc.log" >&2; fail "call-outcome check-config rejects the rendered config.toml (tls-auth)"; }
ok "call-outcome check-config accepts the rendered config.toml (tls-auth: [tls] with client CA, auth_file)"
# ...and it does read them: a broken certificate is refused, naming the file.
cp "$MOUNTS/tls/tls.crt" "$WORK/tls.crt.good"
echo "not a certificate" >"$MOUNTS/tls/tls.crt"
if "$BIN" check-config "$WORK/cfg-tls-auth/local.toml" >"$WORK/cc.log" 2>&1; then
  fail "check-config accepted a broken tls.crt"
fi
grep -qF "$MOUNTS/tls/tls.crt" "$WORK/cc.log" || { cat "$WORK/cc.log" >&2; fail "check-config did not name the broken tls.crt"; }
cp "$WORK/tls.crt.good" "$MOUNTS/tls/tls.crt"
ok "call-outcome check-config refuses the tls-auth config with a broken certificate, naming the file"
# webhooks names one secret file per tenant and provider: the test plays those Secrets
# too (a Telnyx public key, a Twilio and a Plivo token), and check-config reads them.
assert extract "$WORK/render-webhooks" "$WORK/cfg-webhooks"
mkdir -p "$MOUNTS/webhooks/acme/twilio" "$MOUNTS/webhooks/acme/telnyx" "$MOUNTS/webhooks/globex.eu/plivo"
printf 'token-one\ntoken-two\n' >"$MOUNTS/webhooks/acme/twilio/secret"
echo "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=" >"$MOUNTS/webhooks/acme/telnyx/secret"
echo "plivo-token" >"$MOUNTS/webhooks/globex.eu/plivo/secret"
sed "s#\"/etc/call-outcome/#\"$WORK/etc/call-outcome/#g" "$WORK/cfg-webhooks/config.toml" >"$WORK/cfg-webhooks/local.toml"
"$BIN" check-config "$WORK/cfg-webhooks/local.toml" >"$WORK/cc.log" 2>&1 \
  || { cat "$WORK/cc.log" >&2; fail "call-outcome check-config rejects the rendered config.toml (webhooks)"; }
grep -qF "webhooks 3 routes on 0.0.0.0:8080" "$WORK/cc.log" || { cat "$WORK/cc.log" >&2; fail "webhooks: not 3 routes"; }
ok "call-outcome check-config accepts the rendered config.toml (webhooks: 3 routes, secrets from the mounted files)"
echo "not a key" >"$MOUNTS/webhooks/acme/telnyx/secret"
if "$BIN" check-config "$WORK/cfg-webhooks/local.toml" >"$WORK/cc.log" 2>&1; then
  fail "check-config accepted a broken Telnyx key file"
fi
grep -qF "$MOUNTS/webhooks/acme/telnyx/secret" "$WORK/cc.log" || { cat "$WORK/cc.log" >&2; fail "check-config did not name the broken key file"; }
ok "call-outcome check-config refuses a broken Telnyx key file, naming it"

# --- the values schema rejects typos, wrong types and inlined secrets ----------------------
reject() { # reject <description> <expected error text> <helm flags...>
  local what=$1 why=$2; shift 2
  if helm template t "$CHART" "$@" >"$WORK/reject.log" 2>&1; then
    fail "helm template accepted $what ($*)"
  fi
  grep -qF -- "$why" "$WORK/reject.log" || { cat "$WORK/reject.log" >&2; fail "$what: rejected, but not with '$why'"; }
  ok "rejected: $what ($why)"
}
reject "a misspelled top-level key" "additional properties 'replicaCoutn' not allowed" --set replicaCoutn=2
reject "a misspelled nested key" "additional properties 'formatt' not allowed" --set config.log.formatt=json
reject "a misspelled key in a values file" "additional properties 'enabeld' not allowed" \
  -f <(printf 'networkPolicy:\n  enabeld: false\n')
reject "a wrong type (string for replicaCount)" "got string, want integer" --set replicaCount=two
reject "a wrong type (string for tls.enabled)" "got string, want boolean" --set-string tls.enabled=yes
reject "a zero rate limit" "minimum: got 0, want 1" --set config.rateLimits.reportPerSecond=0
reject "a rate-limit override for an invalid tenant name" "does not match pattern" \
  --set 'config.rateLimits.tenants.a\.b/c.reportBurst=5'
reject "an unknown rate-limit override key" "additional properties 'reportsPerSecond' not allowed" \
  --set config.rateLimits.tenants.acme.reportsPerSecond=5
reject "an unknown backend" "value must be one of 'memory', 'nats'" --set backend=redis
reject "an inlined API key" "additional properties 'apiKey' not allowed" --set auth.apiKey=sk-test-123
reject "inlined TLS key material" "additional properties 'key' not allowed" --set tls.key=-----BEGIN
reject "several replicas on the in-process backend" 'set backend=nats' --set replicaCount=3
reject "autoscaling on the in-process backend" 'set backend=nats' --set autoscaling.enabled=true
reject "backend nats without a URL" 'backend "nats" needs nats.url' --set backend=nats
reject "TLS without a Secret" 'tls.enabled needs tls.existingSecret' --set tls.enabled=true
reject "a termination grace shorter than the drain" 'must be greater than' --set terminationGracePeriodSeconds=20
reject "webhooks without secrets" 'webhooks.enabled needs webhooks.secrets' --set webhooks.enabled=true
reject "an inlined webhook secret" "additional properties 'authToken' not allowed" \
  --set webhooks.enabled=true --set webhooks.secrets.acme.twilio.authToken=abc
reject "an unknown webhook provider" "additional properties 'bandwidth' not allowed" \
  --set webhooks.enabled=true --set webhooks.secrets.acme.bandwidth.secretName=x
reject "a webhook Ingress without a host" 'webhooks.ingress.enabled needs webhooks.ingress.host' \
  --set webhooks.enabled=true --set webhooks.secrets.acme.twilio.secretName=x --set webhooks.ingress.enabled=true

echo "helm chart: all checks passed"
