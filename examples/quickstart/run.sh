#!/usr/bin/env bash
# Starts the development IdP and tokenbroker on the quickstart config, sends a
# few Checks exactly as Envoy would, shows that the IdP minted ONE token for
# all of them, and stops both. KEEP=1 leaves them running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${BIN:-bin}
export DEMO_CLIENT_SECRET=demo-secret
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

"$bin/devidp" --listen 127.0.0.1:9000 --client "demo:$DEMO_CLIENT_SECRET" --lifetime 1h 2>"$tmp/devidp.log" &
pids+=($!)
"$bin/tokenbroker" serve --config examples/quickstart/tokenbroker.yaml --log-format console 2>"$tmp/tokenbroker.log" &
pids+=($!)

for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:9193/readyz >/dev/null 2>&1 && curl -fsS http://127.0.0.1:9000/healthz >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS http://127.0.0.1:9193/readyz >/dev/null || { echo "tokenbroker did not become ready:"; cat "$tmp"/*.log; exit 1; }

echo "== 3 Checks for orders.example.com (Envoy would call exactly this) =="
for i in 1 2 3; do "$bin/tokenbroker" check --grpc 127.0.0.1:9191 --host orders.example.com --path "/v1/orders/$i" --method GET; done
echo
echo "== a destination with no route =="
"$bin/tokenbroker" check --grpc 127.0.0.1:9191 --host evil.example.net --path / || true
echo
echo "== what the IdP saw =="
curl -fsS http://127.0.0.1:9000/stats; echo
echo
echo "== tokenbroker metrics =="
curl -fsS http://127.0.0.1:9193/metrics | grep -E '^tokenbroker_(checks|mints|cache_lookups)_total' || true
echo
echo "== tokenbroker log =="
cat "$tmp/tokenbroker.log"
if [ "${KEEP:-0}" = 1 ]; then
  echo; echo "tokenbroker on 127.0.0.1:9191 (gRPC) and 127.0.0.1:9193 (admin); Ctrl-C stops."
  wait
fi
