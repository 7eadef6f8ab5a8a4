#!/bin/sh
# The application: plain, unauthenticated curl calls through Envoy.
set -u
proxy=http://envoy:10000
n=0
until curl -fsS -o /dev/null -H 'Host: orders.example.com' "$proxy/v1/ping" 2>/dev/null; do
  n=$((n + 1)); [ "$n" -ge 60 ] && { echo "Envoy did not come up"; exit 1; }
  sleep 1
done

echo "== billing.example.com, with a forged token (Envoy route names the credential) =="
curl -sS -H 'Host: billing.example.com' -H 'Authorization: Bearer forged' "$proxy/v1/invoices"
echo
echo "== orders.example.com/v1, three times (tokenbroker host route) =="
for i in 1 2 3; do curl -sS -H 'Host: orders.example.com' "$proxy/v1/orders/$i"; done
echo
echo "== evil.example.net: no route, 403 from tokenbroker, never reaches the upstream =="
curl -sS -o /dev/null -D - -H 'Host: evil.example.net' "$proxy/" | grep -iE '^(HTTP|x-tokenbroker-reason)'
echo
echo "== the HTTP forward-auth endpoint, asked as nginx would =="
curl -sS -o /dev/null -D - -H 'Host: orders.example.com' -H 'X-Original-URI: /v1/x' -H 'X-Original-Method: GET' \
  http://tokenbroker:9192/nginx | sed -E 's/(Bearer .{12}).*/\1.../' | grep -iE '^(HTTP|authorization)'
echo
echo "== push mode: the same calls through envoy-sds (tokens over SDS, no call to tokenbroker per request) =="
n=0
until curl -fsS -o /dev/null -H 'Host: orders.example.com' http://envoy-sds:10001/v1/ping 2>/dev/null; do
  n=$((n + 1)); [ "$n" -ge 60 ] && { echo "envoy-sds did not come up"; exit 1; }
  sleep 1
done
curl -sS -H 'Host: billing.example.com' -H 'Authorization: Bearer forged' http://envoy-sds:10001/v1/invoices
for i in 1 2 3; do curl -sS -H 'Host: orders.example.com' "http://envoy-sds:10001/v1/orders/$i"; done
curl -sS -o /dev/null -D - -H 'Host: evil.example.net' http://envoy-sds:10001/ | grep -E '^HTTP'
echo
echo "== what the IdP minted (one token per credential, however many calls, through both Envoys) =="
curl -sS http://devidp:9000/stats; echo
