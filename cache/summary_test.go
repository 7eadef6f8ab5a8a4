package cache

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
)

// TestSoonestExpiriesWalkOnlyAfterChange: the expiry gauge's per-label
// soonest expiry is computed again only after a token was stored,
// invalidated or forgotten; an idle scrape reuses it.
func TestSoonestExpiriesWalkOnlyAfterChange(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tokens, err := New(Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	label := func(n string) string { return n }
	src := func(exp time.Duration) credential.Source { return expiringIn{now, exp} }
	a, b := Key{ID: "a", Name: "a"}, Key{ID: "b", Name: "b"}
	if _, err := tokens.Get(context.Background(), a, src(time.Hour)); err != nil {
		t.Fatal(err)
	}
	first := tokens.soonestExpiries(label)
	if got := first["a"]; !got.Equal(now.Add(time.Hour)) {
		t.Fatalf("a expires %v, want %v", got, now.Add(time.Hour))
	}
	same := func(x, y map[string]time.Time) bool {
		return reflect.ValueOf(x).UnsafePointer() == reflect.ValueOf(y).UnsafePointer()
	}
	if !same(first, tokens.soonestExpiries(label)) {
		t.Fatal("nothing changed, yet the keys were walked again")
	}
	if _, err := tokens.Get(context.Background(), b, src(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	second := tokens.soonestExpiries(label)
	if same(first, second) || !second["b"].Equal(now.Add(2*time.Hour)) {
		t.Fatalf("after a mint: %v, want b too", second)
	}
	tokens.Invalidate(a)
	if third := tokens.soonestExpiries(label); same(second, third) || !third["a"].IsZero() {
		t.Fatalf("after invalidating a: %v, want no a", third)
	}
	tokens.Forget(b)
	if fourth := tokens.soonestExpiries(label); len(fourth) != 0 {
		t.Fatalf("after forgetting b: %v, want nothing", fourth)
	}
}

type expiringIn struct {
	now time.Time
	d   time.Duration
}

func (e expiringIn) Token(context.Context) (credential.Token, error) {
	return credential.Token{Value: "v", Issued: e.now, Expiry: e.now.Add(e.d)}, nil
}
