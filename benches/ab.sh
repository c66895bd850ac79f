#!/usr/bin/env bash
# A/B comparison of two server binaries under the same load, alternately, to judge a
# change smaller than the run-to-run noise (±3 % on a 2-core machine).
#
#   benches/ab.sh RPC BINARY_A BINARY_B [ROUNDS] [ENV=VALUE ...]
#   e.g. benches/ab.sh report /tmp/call-outcome-before target/release/call-outcome 3
#
# RPC is `classify` or `report`. Each round starts each binary afresh (pinned to core 0,
# default config plus the given environment), loads it for 5 s after 1 s of warm-up with
# the load generator (pinned to core 1) and prints its requests/s; the means come last.
# Loopback only; needs `cargo build --release --bench loadgen` first.
set -euo pipefail
rpc=$1 a=$2 b=$3 rounds=${4:-3}
shift $(($# < 4 ? $# : 4))
cd "$(dirname "$0")/.."
loadgen=$(ls -t target/release/deps/loadgen-* | grep -v '\.d$' | head -1)
port=50779
for _ in $(seq "$rounds"); do
  for bin in "$a" "$b"; do
    env "$@" taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --admin-listen "" \
      >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    rps=$(taskset -c 1 "$loadgen" unary --target "127.0.0.1:$port" --duration 5 \
      --warmup 1 --rounds 1 --no-pin --rpcs "$rpc" | awk '/^service/ {print $5}')
    kill -INT "$pid"
    wait "$pid" || true
    echo "$bin $rps"
  done
done | awk '{print; sum[$1] += $2; n[$1]++}
  END {for (k in sum) printf "%s mean %.0f req/s\n", k, sum[k] / n[k]}'
