package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// TestFleetProcessesRedisTLSAndACL: three processes share a TLS-only Redis
// (certificate from a CA the test makes, trusted through tls.ca_file) as an
// ACL user with a password: 3,000 cold Checks, one mint. A replica with a
// wrong password is refused by Redis and still serves, minting locally.
func TestFleetProcessesRedisTLSAndACL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	rdb := testpeer.StartRedis(t, testpeer.WithTLS(), testpeer.WithACL("tokenbroker", "acl-pass-4417"))
	idp := devidp.New(devidp.Options{Clients: map[string]string{fleetClient: fleetSecret}, Lifetime: time.Hour})
	idpSrv := httptest.NewServer(idp)
	defer idpSrv.Close()
	block := func(password string) string {
		return "  expiry_margin: 1s\n" + fleetRedisBlock(t, rdb.Addr) +
			"    username: " + rdb.Username + "\n    password: " + password + "\n" +
			"    tls: {enabled: true, ca_file: " + rdb.CAFile + ", server_name: 127.0.0.1}\n"
	}
	rs := startFleet(t, 3, idpSrv.URL, block(rdb.Password))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if failed, _ := rs.checks(ctx, 3000); failed != 0 || idp.Mints() != 1 {
		t.Fatalf("TLS + ACL: %d of 3000 Checks failed, %d mints; want 0 and 1", failed, idp.Mints())
	}
	if hits := l2Lookups(t, rs, "hit"); hits < 2 {
		t.Fatalf("%v L2 hits: the replicas did not share through Redis", hits)
	}
	wrong := startFleet(t, 1, idpSrv.URL, block("not-the-password"))
	if failed, _ := wrong.checks(ctx, 10); failed != 0 || idp.Mints() != 2 {
		t.Fatalf("wrong password: %d failed, %d mints; want 0 and a local mint", failed, idp.Mints())
	}
	if errs := l2Lookups(t, wrong, "error"); errs < 1 {
		t.Fatal("the refused login was not counted as an L2 error")
	}
	if strings.Contains(wrong.procs[0].logText(), "not-the-password") {
		t.Fatal("the Redis password is in the log")
	}
}
