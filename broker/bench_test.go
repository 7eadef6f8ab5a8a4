package broker

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/cache"
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

// BenchmarkBrokerClientsMemory fills the broker with distinct clients (one
// cached token each) in process and reports the live heap per client; run
// with -memprofile to see where it goes. bench/brokerrss measures the same
// as the RSS of a real process.
func BenchmarkBrokerClientsMemory(b *testing.B) {
	const n = 20000
	var minted atomic.Int64
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strconv.FormatInt(minted.Add(1), 36)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"tok-%020s","token_type":"Bearer","expires_in":3600}`, id)
	}))
	defer idp.Close()
	if os.Getenv("BROKER_HEAP_PROFILE") != "" {
		// The default rate (one sample per 512 KiB) is too coarse to say where
		// a few hundred bytes per client go.
		runtime.MemProfileRate = 4096
	}
	for b.Loop() {
		var br *Broker
		tokens, err := cache.New(cache.Options{MaxTokens: n, MayMint: func(k cache.Key) error { return br.MayMint(k) }})
		if err != nil {
			b.Fatal(err)
		}
		up := config.BrokerUpstream{Name: "idp", TokenURL: idp.URL, PassParams: []string{"audience", "scope", "resource"},
			Timeout: config.Duration(10 * time.Second), DefaultLifetime: config.Duration(5 * time.Minute)}
		br, err = New(Options{Config: config.Broker{Path: "/oauth/token", Upstreams: []config.BrokerUpstream{up}},
			Tokens: tokens, Meter: budget.NewMeter(nil, nil, nil, nil)})
		if err != nil {
			b.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range n {
			id := fmt.Sprintf("cust-%07d", i)
			body := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {"secret-" + id}}.Encode()
			req := httptest.NewRequest(http.MethodPost, "/oauth/token", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			rec := httptest.NewRecorder()
			br.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatalf("%s: %d %s", id, rec.Code, rec.Body)
			}
		}
		tokens.Settle()
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-bytes/client")
		if path := os.Getenv("BROKER_HEAP_PROFILE"); path != "" {
			// -memprofile is written after the broker is gone; this is while it is full.
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			_ = pprof.WriteHeapProfile(f)
			_ = f.Close()
		}
		runtime.KeepAlive(br)
		tokens.Close()
	}
}
