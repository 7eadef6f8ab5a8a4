package filter

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenbroker/tokenbroker/cache"
)

// TestRecentDenialsBound: a flood of denials keeps RecentDenials entries,
// newest first, each field clipped and stripped of query and controls.
func TestRecentDenialsBound(t *testing.T) {
	m := NewMetrics(nil)
	long := strings.Repeat("h", 10*maxDenialField)
	for i := range RecentDenials + 10 {
		m.deny(&Request{Transport: TransportHTTP, Host: fmt.Sprintf("h%d.example.com", i), Path: "/v1/x?token=query-secret", Method: "GET"}, nil, NoRoute, ReasonNoRoute, "")
	}
	m.deny(&Request{Transport: TransportGRPC, Host: long, Path: "/a\x00b/c", Method: "GET", Principal: "p\nq"}, nil, NoRoute, ReasonNoRoute, "")
	got := m.Recent()
	if len(got) != RecentDenials {
		t.Fatalf("%d denials kept, want %d", len(got), RecentDenials)
	}
	if len(got[0].Host) != maxDenialField || got[0].Segment != "/a?b" || got[0].Principal != "p?q" {
		t.Errorf("newest denial not clipped: host %d bytes, segment %q, principal %q", len(got[0].Host), got[0].Segment, got[0].Principal)
	}
	if got[1].Host != "h59.example.com" || got[RecentDenials-1].Host != "h11.example.com" {
		t.Errorf("order: %s … %s", got[1].Host, got[RecentDenials-1].Host)
	}
	for _, d := range got {
		if strings.Contains(d.Segment, "query-secret") || d.Segment != "/v1" && d != got[0] {
			t.Fatalf("segment %q", d.Segment)
		}
	}
}

// TestCheckCountsLabelBound: credentials past cache.CredentialSeriesLimit
// share one label, so their count is bounded too.
func TestCheckCountsLabelBound(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	for i := range cache.CredentialSeriesLimit + 50 {
		m.counts(fmt.Sprintf("cred-%d", i)).add(Allowed)
	}
	if n := len(m.Checks()); n != cache.CredentialSeriesLimit+2 { // + _other + no credential
		t.Fatalf("%d count rows, want %d", n, cache.CredentialSeriesLimit+2)
	}
	if got := m.counts("cred-2000").label; got != cache.OtherCredentials {
		t.Errorf("credential past the limit labelled %q", got)
	}
	if n, err := testutil.GatherAndCount(reg, "tokenbroker_credential_checks_total"); err != nil || n != cache.CredentialSeriesLimit+1 {
		t.Errorf("%d per-credential series (%v), want %d", n, err, cache.CredentialSeriesLimit+1)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tokenbroker_checks_total" {
			continue
		}
		for _, mt := range mf.Metric {
			if mt.Label[0].GetValue() == "ok" && mt.Counter.GetValue() != float64(cache.CredentialSeriesLimit+50) {
				t.Errorf("tokenbroker_checks_total{result=ok} = %v", mt.Counter.GetValue())
			}
		}
		if len(mf.Metric) != int(NumOutcomes)-1 { // every result, zeros too; budget shares "unavailable"
			t.Errorf("tokenbroker_checks_total has %d series, want %d", len(mf.Metric), NumOutcomes-1)
		}
	}
}
