#!/usr/bin/env bash
# Where a ReportOutcome on the NATS backend spends its CPU: the service and one
# nats-server, both pinned to core 0, loaded at 64 reports in flight in all by loadgen
# (on core 1); the CPU of each process (all its threads, from /proc/<pid>/task/*/stat)
# over the measured run, divided by the reports acknowledged.
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
# Where the bound is: NATS_CORE=1 puts nats-server on core 1 with the load generator,
# so that the service has core 0 to itself; REPLICAS=2 starts two service replicas on
# core 0 and splits the 64 in flight between them (a load generator each). Together
# they show whether a replica or nats-server bounds the throughput.
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
nats_core=${NATS_CORE:-0}
replicas=${REPLICAS:-1}
in_flight=$((64 / replicas))
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }
nats_port=$(free_port)
store=$(mktemp -d)
out=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$store" "$out"' EXIT

taskset -c "$nats_core" "$nats_bin" -js -a 127.0.0.1 -p "$nats_port" -sd "$store" >/dev/null 2>&1 &
nats_pid=$!; pids+=("$nats_pid")
wait_port "$nats_port"
svc_ports=() svc_pids=()
for _ in $(seq "$replicas"); do
  port=$(free_port)
  env "$@" taskset -c 0 "$service_bin" serve --backend nats --nats-url "nats://127.0.0.1:$nats_port" \
    --listen "127.0.0.1:$port" --admin-listen "" >/dev/null 2>&1 &
  svc_pids+=($!); pids+=($!); svc_ports+=("$port")
done
for port in "${svc_ports[@]}"; do wait_port "$port"; done

# Clock ticks (user + system) of every thread of some processes.
ticks() { for pid in "$@"; do cat /proc/"$pid"/task/*/stat; done | awk '{sub(/^.*\) /, ""); s += $12 + $13} END {print s}'; }
hz=$(getconf CLK_TCK)
load() { # load SECONDS WARMUP: every replica at once; one output file each
  local lg=()
  for i in "${!svc_ports[@]}"; do
    taskset -c 1 "$loadgen" unary --target "127.0.0.1:${svc_ports[$i]}" --rpcs report --duration "$1" \
      --warmup "$2" --rounds 1 --no-pin --in-flight "$in_flight" >"$out/$i" &
    lg+=($!)
  done
  wait "${lg[@]}"
}

# Warm-up: buckets and the tenant's stream exist.
load "${WARMUP:-2}" 1
n0=$(ticks "$nats_pid") s0=$(ticks "${svc_pids[@]}")
load "$secs" 0
n1=$(ticks "$nats_pid") s1=$(ticks "${svc_pids[@]}")
ok=0
for i in "${!svc_ports[@]}"; do
  line=$(grep '^service' "$out/$i")
  echo "$line"
  ok=$((ok + $(sed -E 's/.* ok ([0-9]+) .*/\1/' <<<"$line")))
done
awk -v s=$((s1 - s0)) -v n=$((n1 - n0)) -v hz="$hz" -v ok="$ok" -v secs="$secs" -v r="$replicas" 'BEGIN {
  printf "over %d s: %d reports/s in all; service (%d replica(s)) %.2f s CPU, nats-server %.2f s CPU; per report: service %.0f us, nats-server %.0f us\n",
    secs, ok / secs, r, s / hz, n / hz, s / hz / ok * 1e6, n / hz / ok * 1e6 }'
