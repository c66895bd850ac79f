#!/usr/bin/env bash
# The chart's alerts (metrics.prometheusRule) and Grafana dashboard
# (metrics.grafanaDashboard), proven on a real Prometheus:
#   1. promtool check rules on the rendered PrometheusRule;
#   2. promtool test rules: every alert firing and not firing (.ci/prometheus/alerts-test.yml);
#   3. a real Prometheus scraping the real binary under a short bounded load: every alert
#      expression and every dashboard query returns data, and no query names a metric
#      that /metrics lacks (.ci/prometheus/live_check.py).
# Usage: .ci/prometheus-test.sh path/to/call-outcome   (tools from .ci/tools.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "$1")
TOOLS=$(.ci/tools.sh helm kubernetes_validate prometheus)
export PATH="$TOOLS/bin:$PATH"
PY="$TOOLS/venv/bin/python"
CHART=helm/call-outcome
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
ok() { echo "ok - $*"; }

# 1 and 2: the defaults, with outcomes per carrier.
helm template t "$CHART" --set metrics.prometheusRule.enabled=true \
  --set config.metrics.carrierLabel=carrier --output-dir "$WORK/default" >/dev/null
"$PY" .ci/prometheus/extract_rules.py "$WORK/default" "$WORK/rules.yml" >/dev/null
promtool check rules "$WORK/rules.yml" >"$WORK/check.log" 2>&1 || { cat "$WORK/check.log" >&2; exit 1; }
ok "promtool check rules: $(grep -o '[0-9]* rules found' "$WORK/check.log")"
cp .ci/prometheus/alerts-test.yml "$WORK/alerts-test.yml"
(cd "$WORK" && promtool test rules alerts-test.yml) >"$WORK/test.log" 2>&1 || { cat "$WORK/test.log" >&2; exit 1; }
ok "promtool test rules: every alert fires when it should and stays quiet otherwise"

# 3: thresholds low enough for the short load, and the dashboard.
helm template t "$CHART" -f .ci/prometheus/live-values.yaml --output-dir "$WORK/live" >/dev/null
"$PY" .ci/prometheus/extract_rules.py "$WORK/live" "$WORK/live-rules.yml" >/dev/null
"$PY" - "$WORK/live" "$WORK/dashboard.json" <<'PY'
import pathlib, sys, yaml
for path in pathlib.Path(sys.argv[1]).rglob("*.yaml"):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "ConfigMap" and "call-outcome.json" in doc.get("data", {}):
            pathlib.Path(sys.argv[2]).write_text(doc["data"]["call-outcome.json"])
PY
LOADGEN=$(ls -t target/debug/deps/loadgen-* 2>/dev/null | grep -v '\.d$' | head -n1 || true)
if [ -z "$LOADGEN" ]; then
  cargo test --locked --bench loadgen --no-run >/dev/null 2>&1
  LOADGEN=$(ls -t target/debug/deps/loadgen-* | grep -v '\.d$' | head -n1)
fi
python3 .ci/prometheus/live_check.py "$BIN" "$TOOLS/bin/prometheus" "$WORK/live-rules.yml" \
  "$WORK/dashboard.json" "$LOADGEN"
echo "prometheus: all checks passed"
