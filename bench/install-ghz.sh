#!/usr/bin/env bash
# Installs the pinned ghz (gRPC load generator) into ./bin for `make bench`.
# Idempotent; not part of `make test`. (A `go install`ed ghz reports its
# version as "dev", so a stamp file records which version bin/ghz is.)
set -euo pipefail
cd "$(dirname "$0")/.."
version=v0.93.0
stamp=bin/.ghz-version
if [ -x bin/ghz ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
mkdir -p bin
GOBIN="$PWD/bin" go install "github.com/bojand/ghz/cmd/ghz@$version"
echo "$version" > "$stamp"
echo "installed ghz $version in bin/"
