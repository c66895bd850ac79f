#!/usr/bin/env bash
# `call-outcome policy diff` on a large file: its time and its peak memory (RSS), which
# must stay bounded however long the file is (#18: "millions of lines in bounded memory").
# A benchmark, not a test: it prints figures and judges nothing.
#
#   benches/policy_diff.sh [BINARY] [LINES] [DESTINATIONS]
#   e.g. benches/policy_diff.sh target/release/call-outcome 1000000 100000
#
# The file holds LINES subscribe-style events, one minute apart, over DESTINATIONS
# numbers, with the codes of a dialer's day (486, 480, 603 from carrier x, 408, 200,
# Telnyx 486 D5); the old policy is the built-in one without its overrides, the new one
# the built-in one. Runs at LINES/10 first, so the two peaks show whether memory grows
# with the file.
set -euo pipefail
bin=${1:-target/release/call-outcome} lines=${2:-1000000} dests=${3:-100000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" "$lines" "$dests" <<'PY'
import json, sys, datetime
work, lines, dests = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
codes = [(486, "Busy Here", "y"), (480, "Temporarily Unavailable", "y"), (603, "Decline", "x"),
         (408, "Request Timeout", "y"), (200, "OK", "y"), (486, "Busy Here D5", "y")]
start = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
def write(path, n):
    with open(path, "w") as f:
        for i in range(n):
            code, phrase, carrier = codes[(i * 7) % len(codes)]
            t = (start + datetime.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            f.write(json.dumps({"tenant": "acme", "recorded_at": t, "outcome": {
                "call_id": f"c-{i}", "attempt": 0, "to": f"+1555{(i * 7919) % dests:07d}",
                "sip_code": code, "reason_phrase": phrase, "labels": {"carrier": carrier}}}) + "\n")
write(f"{work}/small.jsonl", max(lines // 10, 1))
write(f"{work}/large.jsonl", lines)
PY
"$bin" policy diff --help >/dev/null
# The old policy: the built-in one without its [[overrides]] (tables up to the first rule).
awk '/^\[\[overrides\]\]/{skip=1} /^\[\[rules\]\]/{skip=0} !skip' src/policy/default.toml >"$work/old.toml"
cp src/policy/default.toml "$work/new.toml"
for size in small large; do
  n=$(wc -l <"$work/$size.jsonl")
  /usr/bin/time -f "%e %M" -o "$work/time" "$bin" policy diff --from "$work/old.toml" \
    --to "$work/new.toml" --json "$work/$size.jsonl" >"$work/out.json"
  read -r secs kb <"$work/time"
  changed=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['changed'])" "$work/out.json")
  printf '%9d lines: %6.1f s, %8.0f lines/s, peak RSS %6.1f MB, %d decisions changed\n' \
    "$n" "$secs" "$(echo "$n / $secs" | bc -l)" "$(echo "$kb / 1024" | bc -l)" "$changed"
done
