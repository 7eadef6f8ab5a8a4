#!/usr/bin/env bash
# Starts the development IdP and tokenbroker on the quickstart config, sends a
# few Checks exactly as Envoy would, shows that the IdP minted ONE token for
# all of them and what that saved, and stops both. KEEP=1 leaves them running
# until Ctrl-C. Needs bash and curl, and bin/ from `make build`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${BIN:-bin}
cfg=examples/quickstart/tokenbroker.yaml
export DEMO_CLIENT_SECRET=demo-secret
tmp=$(mktemp -d)
pids=()
source examples/ready.sh
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "$keep_logs" = 1 ] || rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
command -v curl >/dev/null || { echo "the quickstart needs curl" >&2; exit 1; }

start devidp "$tmp/devidp.log" "$bin/devidp" --listen 127.0.0.1:9000 --client "demo:$DEMO_CLIENT_SECRET" --lifetime 1h
start tokenbroker "$tmp/tokenbroker.log" "$bin/tokenbroker" serve --config "$cfg" --log-format console
wait_ready devidp http://127.0.0.1:9000/healthz
wait_ready tokenbroker http://127.0.0.1:9193/readyz

echo "== 3 Checks for orders.example.com (Envoy would call exactly this) =="
for i in 1 2 3; do "$bin/tokenbroker" check --config "$cfg" --host orders.example.com --path "/v1/orders/$i" --method GET; done
echo
echo "== the right host, a path outside its route: denied, and check says why =="
"$bin/tokenbroker" check --config "$cfg" --host orders.example.com --path / || true
echo
echo "== a destination with no route =="
"$bin/tokenbroker" check --config "$cfg" --host evil.example.net --path / || true
echo
echo "== what the IdP saw =="
curl -fsS http://127.0.0.1:9000/stats; echo
echo
echo "== tokenbroker metrics: mints, and what the cache saved (cost_per_mint: \$0.001) =="
curl -fsS http://127.0.0.1:9193/metrics | grep -E '^tokenbroker_(checks|mints|cache_lookups|mints_avoided|cost_spent_dollars|cost_avoided_dollars)_total' || true
echo
echo "== tokenbroker log =="
cat "$tmp/tokenbroker.log"
if [ "${KEEP:-0}" = 1 ]; then
  echo; echo "tokenbroker on 127.0.0.1:9191 (gRPC) and 127.0.0.1:9193 (admin, /status); Ctrl-C stops."
  wait
fi
