#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian machine with only Rust installed:
# installs the external tools it needs into .tools/, then formatting, lints, unit and
# integration tests, the proto lint, smoke tests of the real binary with grpcurl, and the
# Helm chart's tests (helm lint/template, kubernetes-validate, render assertions).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }

step "tools"
TOOLS=$(.ci/tools.sh buf grpcurl nats_server helm kubernetes_validate)
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

step "cargo test (unit, integration, CLI, doc)"
cargo test --all-targets --locked
cargo test --doc --locked

step "buf lint (STANDARD)"
buf lint

step "smoke test: the binary with grpcurl"
.ci/smoke.sh target/debug/call-outcome

step "helm chart: lint, render, kubernetes-validate, assertions"
.ci/helm-test.sh target/debug/call-outcome

step "benchmark harness smoke test (release build; checks results, times nothing)"
cargo build --release --locked
cargo bench --locked --bench micro -- --test
cargo bench --locked --bench loadgen -- smoke

step "all tests passed"
