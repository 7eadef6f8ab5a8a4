package broker

import (
	"fmt"
	"net/http"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tokenbroker/tokenbroker/config"
)

// TestOutageLogsStateChanges: an IdP outage under load is one warning when
// it starts and one line when the IdP answers again, with the count of
// requests that got no token — not one line per request.
func TestOutageLogsStateChanges(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	secrets := map[string]string{"fresh": "f"}
	for i := range 10 {
		secrets[fmt.Sprintf("c%d", i)] = "s"
	}
	e := setup(t, config.BrokerUpstream{}, secrets, func(o *Options) { o.Logger = zap.New(core) })
	// Half the clients are known (cached tokens, then invalidated), half new.
	for i := range 5 {
		if a := e.post(t, fmt.Sprintf("c%d", i), "s", true, nil); a.status != 200 {
			t.Fatalf("c%d: %d", i, a.status)
		}
	}
	for _, st := range e.tokens.Snapshot() {
		e.tokens.Invalidate(st.Key)
	}
	e.idp.SetDown(503, `{"error":"temporarily_unavailable"}`, "")
	const requests = 200
	for i := range requests {
		if a := e.post(t, fmt.Sprintf("c%d", i%10), "s", i%2 == 0, nil); a.status != http.StatusServiceUnavailable {
			t.Fatalf("request %d during the outage: %d %v", i, a.status, a.body)
		}
	}
	e.idp.SetDown(0, "", "")
	if a := e.post(t, "fresh", "f", true, nil); a.status != 200 {
		t.Fatalf("after the outage: %d %v", a.status, a.body)
	}
	if n := logs.Len(); n != 2 {
		for _, l := range logs.All() {
			t.Log(l.Message)
		}
		t.Fatalf("%d requests in an outage logged %d lines, want 2 (down, up)", requests, n)
	}
	down, up := logs.All()[0], logs.All()[1]
	if down.Level != zapcore.WarnLevel || down.ContextMap()["upstream"] != "auth0" {
		t.Errorf("first line %v %q %v, want a warning naming the upstream", down.Level, down.Message, down.ContextMap())
	}
	if got := up.ContextMap()["failed_requests"]; got != int64(requests) {
		t.Errorf("recovery line %q says failed_requests=%v, want %d", up.Message, got, requests)
	}
}
