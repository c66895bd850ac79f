#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian machine with only Rust installed:
# installs the external tools it needs into .tools/, then formatting, lints, the build,
# unit and integration tests (while the README's `serve` runs on its default ports, as a
# newcomer would have it), the proto lint and breaking-change check, smoke tests of the
# real binary with grpcurl, every command of README.md and docs/, the Helm chart's tests
# and the benchmark harness's smoke test. Everything builds in the dev profile: one
# compilation serves every step (a cold run takes about 12 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# A run from scratch gains nothing from incremental state, which is 2 GB of disk.
export CARGO_INCREMENTAL=0

step() { printf '\n==> %s\n' "$*"; }

step "tools"
TOOLS=$(.ci/tools.sh buf grpcurl nats_server helm kubernetes_validate grpcio grpc_js webhook_sdks openssl curl prometheus client_gen clients)
# The NATS backend tests start their own nats-server from here.
export NATS_SERVER_BIN="$TOOLS/bin/nats-server"
export PATH="$TOOLS/bin:$PATH"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "fuzz targets: fmt + clippy (fuzz/ is its own workspace; the corpus replays in cargo test)"
# Compiles on stable (only `cargo fuzz run` needs nightly flags); sharing target/ reuses the
# dependencies checked above, so this costs about 35 s (mostly libFuzzer's C++ build).
# fuzz/Cargo.lock starts from the main lock: after a dependency change, refresh it with
#   cp Cargo.lock fuzz/Cargo.lock && cargo metadata --manifest-path fuzz/Cargo.toml >/dev/null
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --locked --manifest-path fuzz/Cargo.toml --target-dir target -- -D warnings

step "cargo build (the binary the smoke, docs and Helm tests run)"
cargo build --locked

step "cargo test (unit, integration, CLI, layers, backend contract, doc), beside a running service"
# The README's run command, on its default ports (127.0.0.1:50051, admin :9090): the
# tests bind port 0 only, so they must pass while it serves. When something else holds
# those ports already, the tests run without it (and still bind port 0 only).
SERVE_LOG=$(mktemp)
target/debug/call-outcome serve >"$SERVE_LOG" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 200); do
  grep -q "serving calloutcome" "$SERVE_LOG" && break
  kill -0 "$SERVE_PID" 2>/dev/null || break
  sleep 0.05
done
if kill -0 "$SERVE_PID" 2>/dev/null; then
  echo "call-outcome serve is running on the default ports while the tests run"
else
  echo "note: the default ports are taken; the tests run without the service beside them:"
  cat "$SERVE_LOG"
  SERVE_PID=
fi
stop_serve() { [ -n "${SERVE_PID:-}" ] && kill -TERM "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID"; }
trap 'stop_serve || true' EXIT
cargo test --all-targets --locked
cargo test --doc --locked
if [ -n "$SERVE_PID" ]; then
  stop_serve || { echo "the README's serve did not exit 0 on SIGTERM" >&2; exit 1; }
  SERVE_PID=
fi

step "buf lint (STANDARD), the API reference in docs/api.md, buf breaking, the generated clients"
buf lint
PROTO_IMAGE=$(mktemp --suffix=.json)
buf build -o "$PROTO_IMAGE"
.ci/proto_doc.py "$PROTO_IMAGE" check docs/api.md && rm -f "$PROTO_IMAGE"
# Against the last release (a v* tag) when there is one, else the previous commit.
if release=$(git describe --tags --abbrev=0 --match 'v*' 2>/dev/null); then
  echo "buf breaking against release $release"
  buf breaking --against ".git#tag=$release"
elif git rev-parse --verify -q HEAD~1 >/dev/null; then
  echo "no release tag in this clone: buf breaking against the previous commit"
  buf breaking --against '.git#ref=HEAD~1'
else
  echo "no previous commit in this clone: nothing to compare the contract with"
fi
clients/generate.sh --check

step "smoke test: the binary with grpcurl"
.ci/smoke.sh target/debug/call-outcome

step "every command in README.md, ARCHITECTURE.md and docs/"
.ci/doc_commands.py target/debug/call-outcome

step "helm chart: lint, render, kubernetes-validate, assertions"
.ci/helm-test.sh target/debug/call-outcome

step "benchmark harness smoke test (dev profile; checks results, times nothing)"
cargo test --locked --bench micro -- --test
cargo test --locked --bench loadgen -- smoke --server-bin target/debug/call-outcome

step "alerts and dashboard: promtool, then a real Prometheus scraping the real binary"
.ci/prometheus-test.sh target/debug/call-outcome

step "all tests passed"
