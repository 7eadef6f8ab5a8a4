package broker

import (
	"bytes"
	"testing"
)

func TestBindingKeys(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	req := &request{clientID: "c", secret: "s"}
	mk := func(explicit []byte, fleet ...[]byte) bindingKeys {
		ks, err := newBindingKeys(explicit, fleet)
		if err != nil {
			t.Fatal(err)
		}
		return ks
	}
	a, b := mk(nil, k1), mk(nil, k1)
	if a.bind(req) != b.bind(req) {
		t.Error("replicas with the same encryption key disagree on bindings")
	}
	if bytes.Equal(a[0], k1) {
		t.Error("the binding key is the encryption key itself, not derived from it")
	}
	if a.bind(req) == mk(nil, k2).bind(req) {
		t.Error("different encryption keys give the same binding")
	}
	if a.bind(req) == a.bind(&request{clientID: "c", secret: "t"}) || a.bind(req) == a.bind(&request{clientID: "d", secret: "s"}) {
		t.Error("a different secret or client gives the same binding")
	}
	if len(a.bind(req)) != 64 {
		t.Error("binding is not a hex HMAC-SHA256")
	}
	// binding_key_file wins over the fleet's keys.
	if mk([]byte("explicit-key-0123456789"), k1).bind(req) != mk([]byte("explicit-key-0123456789")).bind(req) {
		t.Error("an explicit binding key is not used as is")
	}
	// No key at all: random per process.
	if mk(nil).bind(req) == mk(nil).bind(req) {
		t.Error("two processes without keys share a binding key")
	}
	// Rotation: a binding made under any listed key is accepted; new ones use the first.
	rotated := mk(nil, k2, k1)
	old := a.bind(req)
	if rotated.bind(req) == old {
		t.Error("after rotation new bindings still use the old key")
	}
	if !rotated.matches(old, req, rotated.bind(req)) {
		t.Error("a binding under the second (older) key is not accepted")
	}
	if rotated.matches(old, &request{clientID: "c", secret: "t"}, rotated.bind(&request{clientID: "c", secret: "t"})) {
		t.Error("another secret matched an old-key binding")
	}
	if mk(nil, k2).matches(old, req, mk(nil, k2).bind(req)) {
		t.Error("a binding under a key no longer listed is accepted")
	}
}
