package broker

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/config"
)

// BenchmarkBrokerHit is one cached answer, in process: parse, key, HMAC,
// cache hit, JSON.
func BenchmarkBrokerHit(b *testing.B) {
	e := setup(b, config.BrokerUpstream{}, map[string]string{"c": "s"})
	body := url.Values{"grant_type": {"client_credentials"}, "scope": {"read write"}}.Encode()
	serve := func() int {
		req := httptest.NewRequest(http.MethodPost, "/oauth/token", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("c", "s")
		rec := httptest.NewRecorder()
		e.broker.ServeHTTP(rec, req)
		return rec.Code
	}
	if serve() != 200 {
		b.Fatal("first request failed")
	}
	b.ReportAllocs()
	for b.Loop() {
		if serve() != 200 {
			b.Fatal("request failed")
		}
	}
	b.StopTimer()
	if e.idp.Mints() != 1 {
		b.Fatalf("IdP minted %d", e.idp.Mints())
	}
}
