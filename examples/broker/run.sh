#!/usr/bin/env bash
# Starts devidp and the broker, has a "customer" fetch a token 20 times the
# way clients that never cache do, and shows that the IdP minted ONE token.
# Needs bash and curl, and bin/ from `make build`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${BIN:-bin}
tmp=$(mktemp -d)
pids=()
source examples/ready.sh
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "$keep_logs" = 1 ] || rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
command -v curl >/dev/null || { echo "this example needs curl" >&2; exit 1; }

start devidp "$tmp/devidp.log" "$bin/devidp" --listen 127.0.0.1:9000 --client "cust-acme:acme-secret" --lifetime 1h
start tokenbroker "$tmp/tokenbroker.log" "$bin/tokenbroker" serve --config examples/broker/tokenbroker.yaml --log-format console
wait_ready devidp http://127.0.0.1:9000/healthz
wait_ready tokenbroker http://127.0.0.1:9193/readyz

echo "== 20 token requests from cust-acme =="
for i in $(seq 1 20); do
  curl -fsS -u cust-acme:acme-secret -d grant_type=client_credentials -d audience=https://api.example.com \
    http://127.0.0.1:9194/oauth/token | sed -E 's/"access_token":"[^"]{8}[^"]*"/"access_token":"…"/'
done
echo
echo "== what the IdP saw =="
curl -fsS http://127.0.0.1:9000/stats; echo
echo "== status: http://127.0.0.1:9193/status =="
curl -fsS http://127.0.0.1:9193/status.json | head -40
if [ "${KEEP:-0}" = 1 ]; then echo "Ctrl-C stops."; wait; fi
