#!/usr/bin/env bash
# Where a ReportOutcome on the NATS backend spends its CPU: the service and one
# nats-server, both pinned to core 0, loaded at 1 connection x 64 in flight by loadgen
# (which pins itself to core 1); the CPU of each process (all its threads, from
# /proc/<pid>/task/*/stat) over the measured run, divided by the reports acknowledged.
#
#   benches/nats_cpu.sh [SECONDS] [VAR=VALUE ...]
#
# The VAR=VALUE pairs go to the service's environment; SERVICE_BIN names another
# binary (default target/release/call-outcome), e.g. one built with
# benches/nats_bounds.patch, which its variables then switch. WARMUP (seconds, default
# 2) is the unmeasured load before: the pool's 10,000 histories grow by one entry per
# 10,000 reports, so a long warm-up measures destinations with long histories (at
# ~9,000 reports/s, 75 s fills them to the default cap of 64).
#
# Needs `cargo build --release --bench loadgen` and nats-server (`.ci/tools.sh
# nats_server`, or NATS_SERVER_BIN). Loopback only; free ports; everything it starts is
# stopped on exit.
set -euo pipefail
secs=${1:-10}
shift $(($# < 1 ? $# : 1))
cd "$(dirname "$0")/.."
service_bin=${SERVICE_BIN:-target/release/call-outcome}
loadgen=$(ls -t target/release/deps/loadgen-* | grep -v '\.d$' | head -1)
nats_bin=${NATS_SERVER_BIN:-.tools/bin/nats-server}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
nats_port=$(free_port) svc_port=$(free_port)
store=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$store"' EXIT

taskset -c 0 "$nats_bin" -js -a 127.0.0.1 -p "$nats_port" -sd "$store" >/dev/null 2>&1 &
nats_pid=$!; pids+=("$nats_pid")
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break; sleep 0.1; done
env "$@" taskset -c 0 "$service_bin" serve --backend nats --nats-url "nats://127.0.0.1:$nats_port" \
  --listen "127.0.0.1:$svc_port" --admin-listen "" >/dev/null 2>&1 &
svc_pid=$!; pids+=("$svc_pid")
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$svc_port") 2>/dev/null && break; sleep 0.1; done

# Clock ticks (user + system) of every thread of a process.
ticks() { cat /proc/"$1"/task/*/stat | awk '{sub(/^.*\) /, ""); s += $12 + $13} END {print s}'; }
hz=$(getconf CLK_TCK)

# Warm-up: buckets and the tenant's stream exist.
"$loadgen" unary --target "127.0.0.1:$svc_port" --rpcs report --duration "${WARMUP:-2}" --warmup 1 --rounds 1 >/dev/null
n0=$(ticks "$nats_pid") s0=$(ticks "$svc_pid")
line=$("$loadgen" unary --target "127.0.0.1:$svc_port" --rpcs report --duration "$secs" --warmup 0 \
  --rounds 1 | grep '^service')
n1=$(ticks "$nats_pid") s1=$(ticks "$svc_pid")
ok=$(sed -E 's/.* ok ([0-9]+) .*/\1/' <<<"$line")
echo "$line"
awk -v s=$((s1 - s0)) -v n=$((n1 - n0)) -v hz="$hz" -v ok="$ok" -v secs="$secs" 'BEGIN {
  printf "over %d s: service %.2f s CPU, nats-server %.2f s CPU; per report: service %.0f us, nats-server %.0f us\n",
    secs, s / hz, n / hz, s / hz / ok * 1e6, n / hz / ok * 1e6 }'
