package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestValidateRejectsWhatWouldKillServe: settings that used to pass
// `validate` and then kill or cripple `serve` are refused by both, with
// FILE:LINE: field: problem and without echoing the value.
func TestValidateRejectsWhatWouldKillServe(t *testing.T) {
	huge := strings.Repeat("k", 10<<20)
	both := []string{"validate", "serve"}
	for _, tc := range []struct {
		name, yaml, want string
		env              []string
		commands         []string
	}{
		{"max_tokens 1e12", "cache:\n  max_tokens: 1000000000000\n", ":3: cache.max_tokens: must be between 1 and 1000000", nil, both},
		// Parsing 10 MB of YAML takes seconds under -race: validate only
		// here; serve meets the same 10 MB through the environment below.
		{"a 10 MB inline value", "credentials:\n  k:\n    type: static\n    value: " + huge + "\n", ":5: credentials.k.value: longer than 64 KiB", nil, []string{"validate"}},
		{"a 10 MB value from the environment", "credentials:\n  k:\n    type: static\n    value: ${TB_HUGE}\n", ":5: credentials.k.value: longer than 64 KiB", []string{"TB_HUGE", huge}, both},
		{"a 9 KiB inline value", "credentials:\n  k:\n    type: static\n    value: " + huge[:9<<10] + "\n", ":5: credentials.k.value: the header it makes is 9223 bytes, more than 8 KiB", nil, both},
		{"a 1ns timeout", "credentials:\n  a: {token_url: https://i/t, client_id: a, client_secret: b, timeout: 1ns}\n", ":3: credentials.a.timeout: must be between 100ms and 5m", nil, both},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != nil {
				t.Setenv(tc.env[0], tc.env[1])
			}
			path := write(t, "tb.yaml", "listen: {grpc: 127.0.0.1:0, admin: ''}\n"+tc.yaml)
			want := path + tc.want
			for _, cmd := range tc.commands {
				var out, errb bytes.Buffer
				code := run([]string{cmd, "--config", path}, &out, &errb)
				if code != 1 || !strings.HasPrefix(errb.String(), want) {
					t.Fatalf("%s: exit %d, stderr %.300q\nwant exit 1 and %s", cmd, code, errb.String(), want)
				}
				if strings.Contains(errb.String(), "kkkk") {
					t.Fatalf("%s echoed the value", cmd)
				}
			}
		})
	}
}
