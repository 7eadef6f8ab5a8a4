package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// TestBrokerFleetSharesBindings runs two real tokenbroker processes with the
// broker on, sharing one Redis and no broker.binding_key_file: the binding
// keys derive from the encryption keys, so a token one replica minted is
// served by the other, and 20 requests spread over both mint once. The
// rotation case has the replicas list the same two keys in opposite order
// (a rotation half rolled out): still one mint.
func TestBrokerFleetSharesBindings(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	rdb := testpeer.StartRedis(t)
	key := func() string {
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		return base64.StdEncoding.EncodeToString(k)
	}
	k1, k2 := key(), key()
	for _, tc := range []struct {
		name string
		keys [2]string // each replica's encryption keys file
	}{
		{"same keys", [2]string{k1 + "\n", k1 + "\n"}},
		{"rotation under way", [2]string{k2 + "\n" + k1 + "\n", k1 + "\n" + k2 + "\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flushRedis(t, rdb.Addr)
			idp := devidp.New(devidp.Options{Clients: map[string]string{"cust-fleet": "fleet-secret"}})
			idpSrv := httptest.NewServer(idp)
			defer idpSrv.Close()
			var addrs []string
			for i, keys := range tc.keys {
				cfg := write(t, fmt.Sprintf("tb-%d.yaml", i), fmt.Sprintf(`
listen:
  grpc: 127.0.0.1:0
  admin: 127.0.0.1:0
  broker: 127.0.0.1:0
broker:
  upstreams:
    - name: auth0
      token_url: %s/oauth/token
cache:
  redis:
    addrs: [%s]
    key_prefix: "broker-fleet:"
    encryption_keys_file: %s
    timeout: 500ms
`, idpSrv.URL, rdb.Addr, write(t, fmt.Sprintf("keys-%d", i), keys)))
				addrs = append(addrs, servingField(t, startBinary(t, cfg), "broker"))
			}
			tokens := map[string]int{}
			for i := range 20 {
				res, err := http.PostForm("http://"+addrs[i%2]+"/oauth/token", url.Values{
					"grant_type": {"client_credentials"}, "client_id": {"cust-fleet"}, "client_secret": {"fleet-secret"},
				})
				if err != nil {
					t.Fatal(err)
				}
				var body map[string]any
				_ = json.NewDecoder(res.Body).Decode(&body)
				res.Body.Close()
				if res.StatusCode != 200 {
					t.Fatalf("request %d to replica %d: %d %v", i, i%2, res.StatusCode, body)
				}
				tokens[fmt.Sprint(body["access_token"])]++
			}
			if n := idp.Mints(); n != 1 || len(tokens) != 1 {
				t.Errorf("20 requests over 2 replicas: %d mints, %d distinct tokens; want 1 and 1", n, len(tokens))
			}
			// A wrong secret is still refused by the replica that did not mint.
			res, err := http.PostForm("http://"+addrs[1]+"/oauth/token", url.Values{
				"grant_type": {"client_credentials"}, "client_id": {"cust-fleet"}, "client_secret": {"guess"},
			})
			if err != nil {
				t.Fatal(err)
			}
			_ = json.NewDecoder(res.Body).Decode(&map[string]any{})
			res.Body.Close()
			if res.StatusCode != http.StatusUnauthorized {
				t.Errorf("wrong secret on the second replica: %d, want 401", res.StatusCode)
			}
		})
	}
}
