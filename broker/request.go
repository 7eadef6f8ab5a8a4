package broker

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/tokenbroker/tokenbroker/cache"
)

// Bounds on what a token request may carry. Everything here can be sent by
// anyone, before any secret is checked.
const (
	// maxFormBytes bounds the request body read into memory.
	maxFormBytes = 64 << 10
	// maxClientIDBytes bounds a client id: it is what the broker keeps of a
	// client (status page, budget name), so distinct long ids must not cost
	// more than short ones. Real IdPs issue ids of 20–64 bytes.
	maxClientIDBytes = 256
	// maxParamBytes bounds each pass-through parameter (scope, audience,
	// resource, …): the values become part of the IdP request and of what is
	// remembered for a client, so 60 KB scopes must be refused, not kept.
	maxParamBytes = 2 << 10
)

// request is a parsed token request. secret never leaves this package.
type request struct {
	clientID, secret string
	basic            bool
	params           url.Values // pass_params only, normalized
	up               *upstream
}

// parse reads an RFC 6749 §4.4 request with client_secret_basic or client_secret_post.
func (b *Broker) parse(w http.ResponseWriter, r *http.Request) (*request, int, string, string) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		return nil, 400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return nil, 400, "invalid_request", "malformed form body"
	}
	form := r.PostForm
	for k, v := range form {
		if len(v) > 1 {
			return nil, 400, "invalid_request", "parameter " + printable(k) + " repeated"
		}
	}
	req := &request{}
	if r.Header.Get("Authorization") != "" {
		user, pass, ok := r.BasicAuth()
		if !ok {
			return nil, 401, "invalid_client", "Authorization header is not HTTP Basic"
		}
		if form.Has("client_secret") {
			return nil, 400, "invalid_request", "more than one client authentication method used"
		}
		id, err1 := url.QueryUnescape(user)
		secret, err2 := url.QueryUnescape(pass)
		if err1 != nil || err2 != nil {
			return nil, 401, "invalid_client", "Basic credentials are not form-urlencoded"
		}
		if fid := form.Get("client_id"); fid != "" && fid != id {
			return nil, 400, "invalid_request", "client_id in body differs from Basic credentials"
		}
		req.clientID, req.secret, req.basic = id, secret, true
	} else {
		req.clientID, req.secret = form.Get("client_id"), form.Get("client_secret")
	}
	if req.clientID == "" || req.secret == "" {
		return nil, 401, "invalid_client", "client authentication required"
	}
	if len(req.clientID) > maxClientIDBytes {
		return nil, 400, "invalid_request", "client_id is longer than " + strconv.Itoa(maxClientIDBytes) + " bytes"
	}
	switch form.Get("grant_type") {
	case "client_credentials":
	case "":
		return nil, 400, "invalid_request", "grant_type is required"
	default:
		return nil, 400, "unsupported_grant_type", "only client_credentials is supported"
	}
	for _, u := range b.ups {
		if u.matches(req.clientID) {
			req.up = u
			break
		}
	}
	if req.up == nil {
		return nil, 401, "invalid_client", "no upstream serves this client"
	}
	req.params = url.Values{}
	for _, p := range req.up.PassParams {
		v := form.Get(p)
		if len(v) > maxParamBytes {
			return nil, 400, "invalid_request", "parameter " + printable(p) + " is longer than " + strconv.Itoa(maxParamBytes) + " bytes"
		}
		if v = normalize(p, v); v != "" {
			req.params.Set(p, v)
		}
	}
	return req, 0, "", ""
}

func (u *upstream) matches(id string) bool {
	if len(u.ClientIDs) == 0 {
		return true
	}
	for _, g := range u.ClientIDs {
		if ok, _ := path.Match(g, id); ok {
			return true
		}
	}
	return false
}

// normalize makes equivalent requests share a key: scope is a set (RFC 6749
// §3.3), other values lose surrounding white space.
func normalize(param, v string) string {
	if param != "scope" {
		return strings.TrimSpace(v)
	}
	s := strings.Fields(v)
	slices.Sort(s)
	return strings.Join(slices.Compact(s), " ")
}

// cacheKey is a hash of everything that decides which token the IdP issues.
func (req *request) cacheKey() cache.Key {
	h := sha256.New()
	put := func(s string) { fmt.Fprintf(h, "%d:%s", len(s), s) }
	put("tokenbroker.broker.v1")
	put(req.up.Name)
	put(req.up.TokenURL)
	put(req.clientID)
	put(req.params.Encode()) // Encode sorts by key
	return cache.Key{ID: hex.EncodeToString(h.Sum(nil)), Name: req.up.keyName}
}

func printable(s string) string {
	if len(s) > 40 {
		s = s[:40]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}
