package cache

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
)

// TestLabelSumsWalkOnlyAfterChange: the per-label lookups and soonest
// expiry a scrape reports are computed again only after a lookup, or a token
// stored, invalidated or forgotten; an idle scrape reuses them.
func TestLabelSumsWalkOnlyAfterChange(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tokens, err := New(Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	src := func(exp time.Duration) credential.Source { return expiringIn{now, exp} }
	a, b := Key{ID: "a", Name: "a"}, Key{ID: "b", Name: "b"}
	if _, err := tokens.Get(context.Background(), a, src(time.Hour)); err != nil {
		t.Fatal(err)
	}
	first := tokens.labelSums()
	if got := first["a"]; !got.soonest.Equal(now.Add(time.Hour)) || got.misses != 1 || got.hits != 0 {
		t.Fatalf("a: %+v, want 1 miss, expiry %v", got, now.Add(time.Hour))
	}
	same := func(x, y map[string]labelSum) bool {
		return reflect.ValueOf(x).UnsafePointer() == reflect.ValueOf(y).UnsafePointer()
	}
	if !same(first, tokens.labelSums()) {
		t.Fatal("nothing changed, yet the keys were walked again")
	}
	if _, err := tokens.Get(context.Background(), a, src(time.Hour)); err != nil {
		t.Fatal(err)
	}
	hit := tokens.labelSums()
	if same(first, hit) || hit["a"].hits != 1 {
		t.Fatalf("after a hit: %+v, want 1 hit", hit["a"])
	}
	if !same(hit, tokens.labelSums()) {
		t.Fatal("nothing changed after the hit was counted, yet the keys were walked again")
	}
	if _, err := tokens.Get(context.Background(), b, src(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	second := tokens.labelSums()
	if same(hit, second) || !second["b"].soonest.Equal(now.Add(2*time.Hour)) {
		t.Fatalf("after a mint: %v, want b too", second)
	}
	tokens.Invalidate(a)
	if third := tokens.labelSums(); same(second, third) || !third["a"].soonest.IsZero() {
		t.Fatalf("after invalidating a: %v, want no token for a", third)
	}
	tokens.Forget(b)
	if fourth := tokens.labelSums(); len(fourth) != 1 {
		t.Fatalf("after forgetting b: %v, want a only", fourth)
	}
	if hits := tokens.LabelHits(); hits["a"] != 1 || hits["b"] != 0 {
		t.Fatalf("LabelHits %v, want a:1 (b had none)", hits)
	}
}

type expiringIn struct {
	now time.Time
	d   time.Duration
}

func (e expiringIn) Token(context.Context) (credential.Token, error) {
	return credential.Token{Value: "v", Issued: e.now, Expiry: e.now.Add(e.d)}, nil
}
