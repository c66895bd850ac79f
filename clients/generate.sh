#!/usr/bin/env bash
# Regenerates the clients from the proto with `buf generate` and the local plugins.
#   clients/generate.sh           writes clients/python/src and clients/typescript/src/gen
#   clients/generate.sh --check   regenerates into a temporary copy and fails on any
#                                 difference (what the test command runs)
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=$(.ci/tools.sh buf grpcio client_gen)
export PATH="$TOOLS/bin:$PATH"
generate() { # generate <root>: run both templates with outputs under <root>
  local root=$1
  (cd "$root" && buf generate --template buf.gen.yaml && buf generate --template clients/typescript/buf.gen.yaml)
}
if [ "${1:-}" = --check ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/repo"
  cp -r buf.gen.yaml buf.yaml proto "$work/repo/"
  mkdir -p "$work/repo/clients/typescript"
  cp clients/protoc-gen-grpc_python "$work/repo/clients/"
  cp -r clients/typescript/buf.gen.yaml clients/typescript/proto "$work/repo/clients/typescript/"
  ln -s "$PWD/.tools" "$work/repo/.tools"
  generate "$work/repo"
  status=0
  for dir in clients/python/src/calloutcome clients/typescript/src/gen; do
    diff -r --exclude=__init__.py --exclude=__pycache__ "$dir" "$work/repo/$dir" || status=1
  done
  [ "$status" = 0 ] || { echo "clients/ differ from the proto: run clients/generate.sh" >&2; exit 1; }
  echo "ok - clients/python and clients/typescript are what buf generate makes of the proto"
else
  rm -rf clients/typescript/src/gen
  find clients/python/src/calloutcome -name '*_pb2*' -delete
  generate .
fi
