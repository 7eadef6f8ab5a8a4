#!/usr/bin/env bash
# Starts devidp and the broker, has a "customer" fetch a token 20 times the
# way clients that never cache do, and shows that the IdP minted ONE token.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${BIN:-bin}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

"$bin/devidp" --listen 127.0.0.1:9000 --client "cust-acme:acme-secret" --lifetime 1h 2>"$tmp/devidp.log" &
pids+=($!)
"$bin/tokenbroker" serve --config examples/broker/tokenbroker.yaml --log-format console 2>"$tmp/tokenbroker.log" &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:9193/readyz >/dev/null 2>&1 && curl -fsS http://127.0.0.1:9000/healthz >/dev/null 2>&1 && break
  sleep 0.1
done

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
