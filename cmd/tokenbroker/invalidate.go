package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// cmdInvalidate asks a running tokenbroker to drop a credential's cached
// tokens so the next request mints: POST /admin/credentials/NAME/invalidate.
func cmdInvalidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("invalidate", stderr)
	addr := fs.String("admin", "127.0.0.1:9193", "admin listener address")
	tokenFile := fs.String("token-file", "", "file holding the admin bearer token (admin.token_file)")
	local := fs.Bool("local", false, "drop only this replica's copy; keep the fleet's in the shared tier (Redis)")
	// Accept the name before or after the flags.
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if name == "" && fs.NArg() == 1 {
		name = fs.Arg(0)
	}
	if name == "" || fs.NArg() > 1 || (name != "" && fs.NArg() == 1 && fs.Arg(0) != name) {
		fmt.Fprintln(stderr, "usage: tokenbroker invalidate NAME [--admin ADDR] [--token-file FILE] [--local]")
		return 2
	}
	u := "http://" + *addr + "/admin/credentials/" + url.PathEscape(name) + "/invalidate"
	if *local {
		u += "?local=true"
	}
	req, err := http.NewRequest(http.MethodPost, u, nil)
	if err != nil {
		fmt.Fprintf(stderr, "tokenbroker invalidate: %v\n", err)
		return 2
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "tokenbroker invalidate: token file: %v\n", err)
			return 2
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(b)))
	}
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "tokenbroker invalidate: %v\n", err)
		return 1
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "tokenbroker invalidate: %s: %s", res.Status, body)
		return 1
	}
	fmt.Fprintf(stdout, "%s", body)
	return 0
}
