package broker

import (
	"context"
	"errors"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
)

// mintSource asks the upstream for a token with one request's credentials,
// the way the client sent them, and records the outcome for the key.
type mintSource struct {
	b    *Broker
	req  *request
	bind string
	ks   *keyState
}

func (b *Broker) source(req *request, bind string, ks *keyState) credential.Source {
	return &mintSource{b: b, req: req, bind: bind, ks: ks}
}

func (s *mintSource) Token(ctx context.Context) (credential.Token, error) {
	req, up := s.req, s.req.up
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
		return credential.Token{}, err
	}
	cc.Now = s.b.tokens.Now
	start := time.Now()
	tok, err := cc.Token(ctx)
	latency := time.Since(start)
	now := s.b.tokens.Now()
	c := s.ks.client

	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	var idp *credential.IdPError
	switch {
	case err == nil:
		tok.Binding = s.bind
		s.ks.failed, s.ks.reject = "", nil
		c.mints.Add(1)
		c.lastMint, c.lastLatency = now, latency
		return tok, nil
	case errors.As(err, &idp) && !idp.Temporary():
		// The IdP refused this secret (or these parameters): answer the same
		// to the same request for a short while rather than asking again.
		rj := rejectionFrom(idp, s.b.cfg.NegativeTTL.D(), now)
		s.ks.failed, s.ks.reject = s.bind, rj
		s.b.rememberLocked(s.ks.key, s.bind, rj, now)
	default:
		// The IdP is unwell, not this secret: nobody forwards around it.
		s.ks.failed, s.ks.reject = "", nil
	}
	return credential.Token{}, err
}

// rejectionFrom keeps an IdP's refusal: its status and RFC 6749 §5.2 error.
func rejectionFrom(idp *credential.IdPError, ttl time.Duration, now time.Time) *rejection {
	rj := &rejection{status: idp.Status, code: idp.Code, desc: idp.Description,
		retryAfter: idp.RetryAfter, until: now.Add(ttl)}
	if rj.code == "" {
		rj.code = "invalid_request"
	}
	return rj
}
