package cache

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
)

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func mustSealer(t testing.TB, keys ...[]byte) *Sealer {
	t.Helper()
	s, err := NewSealer(keys)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealKeepsEveryTokenField(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 123, time.UTC)
	tok := credential.Token{Value: "tok-value", Type: "Bearer", Expiry: now.Add(time.Hour), Issued: now, Scope: "a b", Binding: "bind"}
	s := mustSealer(t, newKey(t))
	b, err := s.Seal("p:token:x", tok)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("tok-value")) || bytes.Contains(b, []byte("bind")) {
		t.Fatal("plaintext in sealed value")
	}
	got, err := s.Open("p:token:x", b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Value != tok.Value || got.Type != tok.Type || !got.Expiry.Equal(tok.Expiry) || !got.Issued.Equal(tok.Issued) ||
		got.Scope != tok.Scope || got.Binding != tok.Binding {
		t.Fatalf("round trip: got %+v want %+v", got, tok)
	}
	b2, _ := s.Seal("p:token:x", tok)
	if bytes.Equal(b, b2) {
		t.Fatal("two seals are identical: nonce not random")
	}
}

func TestOpenRefuses(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	tok := credential.Token{Value: "v", Expiry: time.Now().Add(time.Hour)}
	sealed, err := mustSealer(t, k1).Seal("name", tok)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	older := bytes.Clone(sealed)
	older[0] = 0
	for _, tc := range []struct {
		desc   string
		sealer *Sealer
		name   string
		value  []byte
	}{
		{"wrong key", mustSealer(t, k2), "name", sealed},
		{"another key name (value copied)", mustSealer(t, k1), "other", sealed},
		{"corrupted", mustSealer(t, k1), "name", flipped},
		{"older format", mustSealer(t, k1), "name", older},
		{"truncated", mustSealer(t, k1), "name", sealed[:10]},
		{"empty", mustSealer(t, k1), "name", nil},
		{"plaintext", mustSealer(t, k1), "name", []byte(`{"v":"x"}`)},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if _, err := tc.sealer.Open(tc.name, tc.value); !errors.Is(err, errUnreadable) {
				t.Fatalf("err = %v, want errUnreadable", err)
			}
		})
	}
}

func TestKeyRotation(t *testing.T) {
	oldKey, newKey := newKey(t), newKey(t)
	tok := credential.Token{Value: "v", Expiry: time.Now().Add(time.Hour)}
	byOld, _ := mustSealer(t, oldKey).Seal("n", tok)
	// Step 1 and 2 of a rotation: the new key first, the old still listed.
	rotated := mustSealer(t, newKey, oldKey)
	if got, err := rotated.Open("n", byOld); err != nil || got.Value != "v" {
		t.Fatalf("old value with new key list: %v %v", got, err)
	}
	byNew, _ := rotated.Seal("n", tok)
	if _, err := mustSealer(t, oldKey).Open("n", byNew); err == nil {
		t.Fatal("new values must be sealed with the first key")
	}
	if _, err := mustSealer(t, newKey).Open("n", byNew); err != nil {
		t.Fatal(err)
	}
}

func TestBreakerOpensProbesAndCloses(t *testing.T) {
	c := newClock()
	var changes []string
	b := &breaker{threshold: 3, cooldown: time.Second, now: c.Now, onChange: func(from, to breakerState, _ error) {
		changes = append(changes, from.String()+">"+to.String())
	}}
	fail := errors.New("down")
	for range 3 {
		if !b.allow() {
			t.Fatal("closed breaker refused")
		}
		b.done(fail)
	}
	if b.allow() {
		t.Fatal("open breaker allowed a call")
	}
	c.Advance(time.Second)
	if !b.allow() {
		t.Fatal("no probe after cool-down")
	}
	if b.allow() {
		t.Fatal("second call during the probe")
	}
	b.done(fail) // probe fails: open again
	if b.allow() {
		t.Fatal("allowed after failed probe")
	}
	c.Advance(time.Second)
	if !b.allow() {
		t.Fatal("no second probe")
	}
	b.done(nil)
	if !b.allow() || b.current() != breakerClosed {
		t.Fatal("not closed after a good probe")
	}
	b.done(nil)
	want := "closed>open open>half_open half_open>open open>half_open half_open>closed"
	if got := strings.Join(changes, " "); got != want {
		t.Fatalf("changes %q, want exactly one per state change: %q", got, want)
	}
}
