#!/usr/bin/env bash
# Runs one cargo-fuzz target for a while, then minimises its corpus in place.
# Usage: .ci/fuzz.sh <target> [seconds]    targets: sip_message reason retry_after policy config
#   webhook_telnyx webhook_twilio webhook_vonage webhook_plivo
# Installs cargo-fuzz into .tools/cargo-fuzz (git-ignored). libFuzzer needs nightly-only
# rustc flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. New inputs land in
# fuzz/corpus/<target>, findings in fuzz/artifacts/<target>. Not run by CI (.ci/test.sh
# replays the corpus instead, via tests/fuzz_corpus.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_FUZZ_VERSION=0.13.2

target=${1:?usage: .ci/fuzz.sh <target> [seconds]}
seconds=${2:-300}
case "$target" in
  sip_message | reason | retry_after) dict=sip ;;
  policy | config) dict=$target ;;
  webhook_telnyx | webhook_twilio | webhook_vonage | webhook_plivo) dict=webhook ;;
  *) echo "unknown target: $target" >&2; exit 2 ;;
esac

if [ ! -x .tools/cargo-fuzz/bin/cargo-fuzz ]; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root .tools/cargo-fuzz
fi
export PATH="$PWD/.tools/cargo-fuzz/bin:$PATH" RUSTC_BOOTSTRAP=1
cd fuzz
# Safe Rust only in the crate under test: AddressSanitizer would find nothing and halve
# the executions; panics, overflow checks and debug assertions stay on.
cargo fuzz run --sanitizer none "$target" "corpus/$target" -- \
  -dict="dict/$dict.dict" -max_total_time="$seconds" -timeout=10 -print_final_stats=1
# Keep one input per coverage edge (-use_counters=0 ignores hit-count variants): the
# committed corpus stays at hundreds of small files with the same edges covered.
cargo fuzz cmin --sanitizer none "$target" "corpus/$target" -- -use_counters=0
echo "corpus/$target: $(find "corpus/$target" -type f | wc -l) files, $(du -sh --apparent-size "corpus/$target" | cut -f1)"
