package broker

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
)

// counts reads the sizes of the broker's tables and the cache's slots.
func (e *env) counts() (clients, keys, negative, slots int) {
	b := e.broker
	b.mu.Lock()
	clients, keys, negative = b.mem.clients.len(), b.mem.keys.len(), b.mem.negative.Len()
	b.mu.Unlock()
	return clients, keys, negative, len(e.tokens.Snapshot())
}

// flood sends n requests from made-up client ids with wrong secrets, from a
// few workers, and checks each is the IdP's refusal.
func (e *env) flood(t *testing.T, n int, extra func(i int) url.Values) {
	t.Helper()
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				var x url.Values
				if extra != nil {
					x = extra(i)
				}
				if a := e.post(t, fmt.Sprintf("made-up-%d", i), "wrong", i%2 == 0, x); a.status != http.StatusUnauthorized {
					t.Errorf("made-up client %d: %d %v, want 401", i, a.status, a.body)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestMadeUpClientsCannotLockOut: a flood of made-up client ids with wrong
// secrets, through the real listener, is remembered only in the bounded
// negative table; a new legitimate client afterwards gets its token.
func TestMadeUpClientsCannotLockOut(t *testing.T) {
	e := setup(t, config.BrokerUpstream{}, map[string]string{"real": "s"})
	// Past the negative table's bound: the flood must have hit it.
	e.flood(t, maxNegative+2000, nil)
	clients, keys, negative, slots := e.counts()
	if clients != 0 || keys != 0 || slots != 0 {
		t.Errorf("after the flood: %d clients, %d keys, %d cache slots remembered, want none", clients, keys, slots)
	}
	if negative != maxNegative {
		t.Errorf("negative table holds %d refusals, want its bound %d", negative, maxNegative)
	}
	a := e.post(t, "real", "s", true, nil)
	if a.status != 200 || a.body["access_token"] == nil {
		t.Fatalf("a new legitimate client after the flood: %d %v", a.status, a.body)
	}
	if clients, keys, _, _ := e.counts(); clients != 1 || keys != 1 {
		t.Errorf("after the legitimate client: %d clients, %d keys, want 1 and 1", clients, keys)
	}
	if got := len(e.broker.Clients()); got != 1 {
		t.Errorf("status lists %d clients, want only the one holding a token", got)
	}
}

// TestRememberedClientsEvict: past the bound of remembered clients and keys,
// the least recently used are forgotten (with their tokens) instead of a
// newcomer being refused.
func TestRememberedClientsEvict(t *testing.T) {
	secrets := map[string]string{}
	for i := range 6 {
		secrets[fmt.Sprintf("c%d", i)] = fmt.Sprintf("s%d", i)
	}
	e := setup(t, config.BrokerUpstream{}, secrets)
	e.broker.mu.Lock()
	e.broker.mem.clients.resize(3)
	e.broker.mem.keys.resize(4)
	e.broker.mu.Unlock()
	for i := range 6 {
		id := fmt.Sprintf("c%d", i)
		if a := e.post(t, id, secrets[id], true, nil); a.status != 200 {
			t.Fatalf("%s: %d %v", id, a.status, a.body)
		}
	}
	e.tokens.Settle()
	clients, keys, _, slots := e.counts()
	if clients != 3 || keys != 3 || slots != 3 {
		t.Errorf("6 clients through a table of 3: %d clients, %d keys, %d cache slots, want 3 each", clients, keys, slots)
	}
	if a := e.post(t, "c3", "s3", true, nil); a.status != 200 {
		t.Fatalf("c3 again: %d", a.status)
	}
	// One client, many scopes: the key table's bound.
	for _, scope := range []string{"a", "b", "c", "d", "e"} {
		if a := e.post(t, "c5", "s5", true, url.Values{"scope": {scope}}); a.status != 200 {
			t.Fatalf("scope %s: %d %v", scope, a.status, a.body)
		}
	}
	if _, keys, _, slots := e.counts(); keys != 4 || slots != 4 {
		t.Errorf("key table of 4: %d keys, %d cache slots", keys, slots)
	}
	// The first client was forgotten, not locked out: it is served again.
	before := e.idp.Mints()
	if a := e.post(t, "c0", "s0", true, nil); a.status != 200 {
		t.Fatalf("evicted client: %d %v", a.status, a.body)
	}
	if e.idp.Mints() != before+1 {
		t.Errorf("evicted client: %d mints, want 1", e.idp.Mints()-before)
	}
	// c3 is forgotten now; its answer from cache still counts in the totals.
	if tot := e.broker.Totals(); len(tot) != 1 || tot[0].Cached != 1 {
		t.Errorf("totals %+v, want 1 answer from cache", tot)
	}
}

// TestStatusListsBoundedClientsWithTokens: the status page's client list
// holds only clients with a valid token, and at most maxStatusClients.
func TestStatusListsBoundedClientsWithTokens(t *testing.T) {
	secrets := map[string]string{}
	for i := range maxStatusClients + 10 {
		secrets[fmt.Sprintf("c%d", i)] = "s"
	}
	e := setup(t, config.BrokerUpstream{}, secrets)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(secrets); i += 8 {
				if a := e.post(t, fmt.Sprintf("c%d", i), "s", false, nil); a.status != 200 {
					t.Errorf("c%d: %d", i, a.status)
					return
				}
			}
		})
	}
	wg.Wait()
	list := e.broker.Clients()
	if len(list) != maxStatusClients {
		t.Errorf("status lists %d clients, want the bound %d", len(list), maxStatusClients)
	}
	// A client whose token is gone is not listed.
	for _, k := range list[0].Keys {
		e.tokens.Invalidate(k)
	}
	for _, c := range e.broker.Clients() {
		if c.ClientID == list[0].ClientID {
			t.Errorf("client %s listed without a valid token", c.ClientID)
		}
	}
}

// TestParameterBounds: every pass-through parameter and the client id are
// bounded; past the bound the request is refused before the IdP or any
// state sees it.
func TestParameterBounds(t *testing.T) {
	e := setup(t, config.BrokerUpstream{}, map[string]string{"c": "s"})
	for _, p := range []string{"scope", "audience", "resource"} {
		t.Run(p, func(t *testing.T) {
			at := strings.Repeat("x", maxParamBytes)
			if a := e.post(t, "c", "s", true, url.Values{p: {at}}); a.status != 200 {
				t.Errorf("%s of %d bytes: %d %v, want 200", p, len(at), a.status, a.body)
			}
			before := e.idp.Requests()
			a := e.post(t, "c", "s", true, url.Values{p: {at + "x"}})
			if a.status != 400 || a.body["error"] != "invalid_request" || !strings.Contains(fmt.Sprint(a.body["error_description"]), p) {
				t.Errorf("%s of %d bytes: %d %v, want 400 invalid_request naming it", p, len(at)+1, a.status, a.body)
			}
			if e.idp.Requests() != before {
				t.Error("an oversized parameter reached the IdP")
			}
		})
	}
	t.Run("client_id", func(t *testing.T) {
		id := strings.Repeat("i", maxClientIDBytes+1)
		if a := e.post(t, id, "s", true, nil); a.status != 400 || a.body["error"] != "invalid_request" {
			t.Errorf("client_id of %d bytes: %d %v, want 400", len(id), a.status, a.body)
		}
		if a := e.post(t, id[1:], "s", true, nil); a.status != http.StatusUnauthorized {
			t.Errorf("client_id of %d bytes: %d %v, want the IdP's 401", len(id)-1, a.status, a.body)
		}
	})
}

// TestRejectedRequestsKeepLittle: rejected requests with distinct large
// parameters leave only fixed-size entries in the negative table.
func TestRejectedRequestsKeepLittle(t *testing.T) {
	e := setup(t, config.BrokerUpstream{}, map[string]string{"c": "s"})
	const n = 500
	e.flood(t, n, func(i int) url.Values {
		return url.Values{"scope": {fmt.Sprintf("%d-%s", i, strings.Repeat("s", maxParamBytes-10))}}
	})
	clients, keys, negative, slots := e.counts()
	if clients != 0 || keys != 0 || slots != 0 || negative != n {
		t.Errorf("%d rejected: %d clients, %d keys, %d slots, %d refusals; want only %d refusals", n, clients, keys, slots, negative, n)
	}
	e.broker.mu.Lock()
	for _, nk := range e.broker.mem.negative.Keys() {
		if len(nk) != 64+1+64 {
			t.Errorf("negative key of %d bytes: it must be hashes only", len(nk))
			break
		}
	}
	e.broker.mu.Unlock()
}

func TestRejectionTextBounded(t *testing.T) {
	long := strings.Repeat("d", 5*maxRejectionText)
	rj := rejectionFrom(&credential.IdPError{Status: 400, Code: long, Description: long}, 0, time.Time{})
	if len(rj.code) != maxRejectionText || len(rj.desc) != maxRejectionText {
		t.Errorf("kept %d and %d bytes of code and description, want %d", len(rj.code), len(rj.desc), maxRejectionText)
	}
}

// TestRefusalsGoWithTheirKeys: the IdP's refusal of a known key, and the
// client's count of refusals, are kept beside the tables (not in every
// keyState and client) and leave with their key and client.
func TestRefusalsGoWithTheirKeys(t *testing.T) {
	e := setup(t, config.BrokerUpstream{}, map[string]string{"c": "s"})
	if a := e.post(t, "c", "s", true, nil); a.status != 200 {
		t.Fatalf("first: %d %v", a.status, a.body)
	}
	refused := func() int {
		e.broker.mu.Lock()
		defer e.broker.mu.Unlock()
		return len(e.broker.mem.refused) + len(e.broker.mem.seeding)
	}
	if n := refused(); n != 0 {
		t.Fatalf("after a token: %d refusals and seedings kept, want 0", n)
	}
	keys := e.broker.Clients()[0].Keys
	// The secret is revoked: the next mint, through the cache, is refused.
	e.idp.SetDown(401, `{"error":"invalid_client"}`, "")
	e.tokens.Invalidate(keys[0])
	if a := e.post(t, "c", "s", true, nil); a.status != 401 {
		t.Fatalf("revoked: %d %v, want 401", a.status, a.body)
	}
	if n := refused(); n != 1 {
		t.Fatalf("after the refusal: %d kept, want 1", n)
	}
	e.broker.mu.Lock()
	var counted []refusals
	for _, r := range e.broker.mem.refusals {
		counted = append(counted, *r)
	}
	e.broker.mu.Unlock()
	if len(counted) != 1 || counted[0] != (refusals{rejected: 1}) {
		t.Errorf("client refusals %+v, want one client with 1 rejected", counted)
	}
	e.idp.SetDown(0, "", "")
	e.broker.mu.Lock()
	e.broker.mem.keys.resize(0) // the key is evicted
	e.broker.mem.keys.resize(maxKeys)
	e.broker.mu.Unlock()
	if n := refused(); n != 0 {
		t.Errorf("after the key's eviction: %d refusals kept, want 0", n)
	}
	e.broker.mu.Lock()
	e.broker.mem.clients.resize(0) // and the client
	e.broker.mem.clients.resize(maxClients)
	n := len(e.broker.mem.refusals)
	e.broker.mu.Unlock()
	if n != 0 {
		t.Errorf("after the client's eviction: %d clients' refusals kept, want 0", n)
	}
}

// TestMintedTokenSharesTheBinding: a token minted for a known key (here
// after an invalidation; a refresh alike) carries the binding string the
// key remembers, not a second 64-byte copy made from the request.
func TestMintedTokenSharesTheBinding(t *testing.T) {
	e := setup(t, config.BrokerUpstream{}, map[string]string{"c": "s"})
	if a := e.post(t, "c", "s", true, nil); a.status != 200 {
		t.Fatalf("first: %d %v", a.status, a.body)
	}
	key := e.broker.Clients()[0].Keys[0]
	e.tokens.Invalidate(key)
	if a := e.post(t, "c", "s", true, nil); a.status != 200 {
		t.Fatalf("after the invalidation: %d %v", a.status, a.body)
	}
	if n := e.idp.Mints(); n != 2 {
		t.Fatalf("IdP minted %d, want 2", n)
	}
	tok, ok := e.tokens.Peek(key)
	e.broker.mu.Lock()
	ks, _ := e.broker.mem.keys.peek(key.ID)
	good := ks.good
	e.broker.mu.Unlock()
	if !ok || tok.Binding != good {
		t.Fatalf("cached %v with binding %.8s…, key remembers %.8s…", ok, tok.Binding, good)
	}
	if unsafe.StringData(tok.Binding) != unsafe.StringData(good) {
		t.Error("the new token holds its own copy of the binding")
	}
}
