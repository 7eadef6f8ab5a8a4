// The certified OpenID provider oidc-provider, configured for tokenbroker's
// interop tests: client_credentials with JWT access tokens (resource
// indicators) and clients for four client authentication methods.
//
// Usage: node server.js CONFIG.json
// CONFIG: {"resource": "...", "ttl": 60, "clients": [oidc-provider client metadata...]}
// It listens on 127.0.0.1 on a free port and prints "listening <issuer>" once
// ready. GET /_count?client_id=X answers how many access tokens were issued to
// X; GET /_errors answers the token endpoint's error codes so far.
import http from 'node:http';
import fs from 'node:fs';
import { generateKeyPair, exportJWK } from 'jose';
import Provider from 'oidc-provider';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const issued = {};
const errors = [];

const server = http.createServer();
server.listen(0, '127.0.0.1', async () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: 'interop-signing', alg: 'RS256', use: 'sig' };

  const provider = new Provider(issuer, {
    clients: cfg.clients,
    scopes: ['openid', 'read', 'write'],
    jwks: { keys: [jwk] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => cfg.resource,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource) => {
          if (resource !== cfg.resource) throw new Error('unknown resource');
          return { scope: 'read write', audience: resource, accessTokenTTL: cfg.ttl, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
        },
      },
    },
  });
  // JWT access tokens are not stored, so the provider reports them as
  // "issued"; opaque ones as "saved". Count both.
  const count = (token) => {
    issued[token.clientId] = (issued[token.clientId] || 0) + 1;
  };
  provider.on('client_credentials.issued', count);
  provider.on('client_credentials.saved', count);
  provider.on('grant.error', (_ctx, err) => errors.push(err.error || String(err)));

  const callback = provider.callback();
  server.on('request', (req, res) => {
    const u = new URL(req.url, issuer);
    if (u.pathname === '/_count') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ issued: issued[u.searchParams.get('client_id')] || 0 }));
      return;
    }
    if (u.pathname === '/_errors') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ errors }));
      return;
    }
    callback(req, res);
  });
  process.stdout.write(`listening ${issuer}\n`);
});
