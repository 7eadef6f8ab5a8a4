package broker

import (
	"context"
	"errors"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
)

// mintSource is the cache's source for a key whose secret the IdP has
// accepted: it asks with the credentials of the request at hand.
type mintSource struct {
	b     *Broker
	req   *request
	keyID string
	bind  string
	ks    *keyState
}

func (b *Broker) source(req *request, keyID, bind string, ks *keyState) credential.Source {
	return &mintSource{b: b, req: req, keyID: keyID, bind: bind, ks: ks}
}

func (s *mintSource) Token(ctx context.Context) (credential.Token, error) {
	tok, latency, err := s.b.mint(ctx, s.req, s.bind, s.keyID, s.ks)
	if err == nil {
		s.b.accepted(s.ks, latency)
	}
	return tok, err
}

// mint asks the upstream for a token with one request's credentials, the
// way the client sent them. A refusal is remembered for this key and secret
// (and in ks, when the key is known); the token comes back bound to bind.
func (b *Broker) mint(ctx context.Context, req *request, bind, keyID string, ks *keyState) (credential.Token, time.Duration, error) {
	up := req.up
	params := make(map[string]string, len(req.params))
	for k := range req.params {
		params[k] = req.params.Get(k)
	}
	method := "client_secret_post"
	if req.basic {
		method = "client_secret_basic"
	}
	cc, err := credential.NewClientCredentials(&config.Credential{
		Name: NamePrefix + up.Name, Type: "client_credentials", TokenURL: up.TokenURL,
		ClientID: req.clientID, ClientSecret: config.Secret(req.secret), AuthMethod: method,
		Params: params, Timeout: up.Timeout, DefaultLifetime: up.DefaultLifetime,
	}, nil)
	if err != nil {
		return credential.Token{}, 0, err
	}
	cc.Now = b.tokens.Now
	start := time.Now()
	tok, err := cc.Token(ctx)
	latency := time.Since(start)
	now := b.tokens.Now()

	var idp *credential.IdPError
	switch {
	case err == nil:
		b.health.answered(up.Name, now)
		tok.Binding = bind
		if tok.Type == "Bearer" {
			tok.Type = "Bearer" // a constant rather than a string decoded per token
		}
		return tok, latency, nil
	case errors.As(err, &idp) && !idp.Temporary():
		b.health.answered(up.Name, now)
		// The IdP refused this secret (or these parameters): answer the same
		// to the same request for a short while rather than asking again.
		rj := rejectionFrom(idp, b.cfg.NegativeTTL.D(), now)
		b.mu.Lock()
		rj.bind = bind
		if cur, _ := b.mem.keys.peek(keyID); ks != nil && cur == ks {
			b.mem.refused[ks] = rj // only while the key is remembered: its eviction deletes it
		}
		b.rememberLocked(keyID, bind, rj)
		b.mu.Unlock()
	default:
		// The IdP is unwell, not this secret: nobody forwards around it.
		if ks != nil {
			b.mu.Lock()
			delete(b.mem.refused, ks)
			b.mu.Unlock()
		}
	}
	return credential.Token{}, latency, err
}

// accepted records a token the IdP issued for ks's key.
func (b *Broker) accepted(ks *keyState, latency time.Duration) {
	now := b.tokens.Now()
	c := ks.client
	c.mints.Add(1)
	b.mu.Lock()
	delete(b.mem.refused, ks)
	c.lastMint, c.lastLatency = now.UnixNano(), latency
	b.mu.Unlock()
}

// rejectionFrom keeps an IdP's refusal: its status and RFC 6749 §5.2 error,
// cut to maxRejectionText.
func rejectionFrom(idp *credential.IdPError, ttl time.Duration, now time.Time) *rejection {
	rj := &rejection{status: idp.Status, code: clip(idp.Code), desc: clip(idp.Description),
		retryAfter: idp.RetryAfter, until: now.Add(ttl)}
	if rj.code == "" {
		rj.code = "invalid_request"
	}
	return rj
}

func clip(s string) string {
	if len(s) > maxRejectionText {
		return s[:maxRejectionText]
	}
	return s
}
