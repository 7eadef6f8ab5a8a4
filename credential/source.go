package credential

import (
	"fmt"

	"github.com/tokenbroker/tokenbroker/config"
)

// FromConfig builds the Source a credential's `type` asks for. logf, when not
// nil, receives notes about adjustments to IdP answers (never a token or secret).
func FromConfig(c *config.Credential, logf func(format string, args ...any)) (Source, error) {
	switch c.Type {
	case "", "client_credentials", "token_exchange", "jwt_bearer":
		cc, err := NewClientCredentials(c, nil)
		if err != nil {
			return nil, err
		}
		cc.Logf = logf
		return cc, nil
	case "static":
		return NewStatic(c)
	default:
		return nil, fmt.Errorf("credential %q: unsupported type %q", c.Name, c.Type)
	}
}
