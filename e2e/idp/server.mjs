// A real OpenID Provider (npm `oidc-provider`) for the interop suite.
//
//   node idp/server.mjs [PORT]        (PORT 0 or absent: a free port is picked)
//
// Issues OAuth2 client-credentials access tokens as RS256 JWTs (RFC 9068,
// `typ: at+jwt`) for the resource `urn:portcullis:orders-api` (the default;
// audience `orders-api`) or `urn:portcullis:billing-api` (audience `billing-api`). Signing keys are generated at startup; nothing secret is on disk.
//
// Clients (secrets come from the environment, so each test run has its own):
//   orders-agent   client_secret_basic   secret $IDP_SECRET_BASIC
//   reports-agent  client_secret_post    secret $IDP_SECRET_POST
//
// Outbound-credential clients (test_7), registered only when their env is set:
//   partner-basic  client_secret_basic   secret $IDP_SECRET_PARTNER
//   partner-jwt    private_key_jwt       public JWKS $IDP_PARTNER_JWKS (JSON; the
//                                        private key exists only in the test run)
// Both get tokens for `urn:portcullis:partner-api` (audience `partner-api`, scope
// `partner:read`), living $IDP_PARTNER_TTL seconds (default 600).
//
// Browser-login client (test_10), registered only when $IDP_LOGIN_SECRET is set:
//   portal         client_secret_basic   authorization_code + refresh_token, PKCE,
//                                        redirect $IDP_LOGIN_REDIRECT, back-channel
//                                        logout to $IDP_LOGIN_BACKCHANNEL (with sid).
// Its access tokens live $IDP_LOGIN_AT_TTL seconds (default 3600), so a test can
// watch Portcullis refresh them. The dev interactions sign anyone in: account
// `NAME` gets email NAME@example.com and, for alice, the group `admins`.
//
// Test hooks, on the same listener (outside every oidc-provider route):
//   POST /__admin/rotate[?retire=1]  new RSA key first in the JWKS (old keys kept
//                                    published unless retire=1); answers {kid, kids}
//   GET  /__admin/stats              {jwks_fetches, last_jwks_fetch_ms, kids,
//                                     token_requests, token_down}
//   POST /__admin/token_down?on=1|0  while on, POST /token answers 503
//
// oidc-provider's keystore is fixed when a Provider is constructed, so rotation
// builds a new Provider (same issuer, clients and configuration, new key set)
// and swaps it in behind this process's own HTTP server: the port and issuer
// never change, and in-flight requests finish on the instance they started on.
// Prints "READY <port>" on stdout once it listens.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';

// Resource indicator -> the resource server it names. Tokens for the orders
// API are what Portcullis accepts; billing-api tokens (another audience, same
// issuer and keys) are what it must refuse as `wrong_audience`.
const RESOURCE = 'urn:portcullis:orders-api';
const RESOURCE_SERVERS = {
  [RESOURCE]: { audience: 'orders-api', scope: 'orders:read orders:write' },
  'urn:portcullis:billing-api': { audience: 'billing-api', scope: 'billing:read' },
  'urn:portcullis:partner-api': { audience: 'partner-api', scope: 'partner:read' },
};
const PARTNER_TTL = Number(process.env.IDP_PARTNER_TTL || 600);

function newSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `rsa-${crypto.randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };
}

function secretFromEnv(name) {
  return process.env[name] || crypto.randomBytes(24).toString('base64url');
}

const clients = [
  {
    client_id: 'orders-agent',
    client_secret: secretFromEnv('IDP_SECRET_BASIC'),
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  },
  {
    client_id: 'reports-agent',
    client_secret: secretFromEnv('IDP_SECRET_POST'),
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_post',
  },
];
if (process.env.IDP_SECRET_PARTNER) {
  clients.push({
    client_id: 'partner-basic',
    client_secret: process.env.IDP_SECRET_PARTNER,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  });
}
if (process.env.IDP_PARTNER_JWKS) {
  clients.push({
    client_id: 'partner-jwt',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: JSON.parse(process.env.IDP_PARTNER_JWKS),
  });
}

const LOGIN = process.env.IDP_LOGIN_SECRET ? 'portal' : null;
const LOGIN_AT_TTL = Number(process.env.IDP_LOGIN_AT_TTL || 3600);
if (LOGIN) {
  clients.push({
    client_id: LOGIN,
    client_secret: process.env.IDP_LOGIN_SECRET,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [process.env.IDP_LOGIN_REDIRECT],
    token_endpoint_auth_method: 'client_secret_basic',
    backchannel_logout_uri: process.env.IDP_LOGIN_BACKCHANNEL,
    backchannel_logout_session_required: true,
  });
}

function buildProvider(issuer, keys) {
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys },
    // The resource server's lifetime wins (a plain number here would override it).
    ttl: {
      ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 600,
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? LOGIN_AT_TTL,
    },
    findAccount: (ctx, id) => ({
      accountId: id,
      claims: () => ({
        sub: id,
        email: `${id}@example.com`,
        email_verified: true,
        preferred_username: id,
        groups: id === 'alice' ? ['admins'] : ['staff'],
      }),
    }),
    claims: {
      openid: ['sub', 'groups'],
      email: ['email', 'email_verified'],
      profile: ['preferred_username'],
    },
    // Identity claims in the ID token itself (Portcullis reads them there).
    conformIdTokenClaims: false,
    // A refresh token for every code the login client redeems.
    issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
    // Cookies are unused by the client-credentials grant; random keys keep the
    // provider from warning about its development defaults.
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    features: {
      devInteractions: { enabled: Boolean(LOGIN) },
      backchannelLogout: { enabled: Boolean(LOGIN) },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // The login client asks for no API: its access token is for userinfo.
        defaultResource: (ctx, client) => (client?.clientId === LOGIN ? undefined : RESOURCE),
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => {
          const rs = RESOURCE_SERVERS[resourceIndicator];
          if (!rs) throw new errors.InvalidTarget();
          return {
            ...rs,
            accessTokenFormat: 'jwt',
            accessTokenTTL: rs.audience === 'partner-api' ? PARTNER_TTL : 600,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
  });
  provider.on('server_error', (ctx, err) => console.error('idp server_error:', err));
  provider.on('backchannel.success', () => { stats.backchannel_sent += 1; });
  provider.on('backchannel.error', (ctx, err) => console.error('idp backchannel.error:', err));
  return provider;
}

const requested = Number(process.argv[2] ?? process.env.IDP_PORT ?? 0);
let keys = [newSigningKey()];
let handler = null;
const stats = { jwks_fetches: 0, last_jwks_fetch_ms: null, token_requests: 0, token_down: false,
                backchannel_sent: 0 };

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function publicKids() {
  return keys.map((k) => k.kid);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://idp.invalid');
  if (url.pathname === '/__admin/rotate' && req.method === 'POST') {
    const key = newSigningKey();
    keys = url.searchParams.get('retire') === '1' ? [key] : [key, ...keys];
    handler = buildProvider(issuer, keys).callback();
    console.error(`idp: rotated, signing with ${key.kid}; published ${publicKids().join(',')}`);
    return json(res, 200, { kid: key.kid, kids: publicKids() });
  }
  if (url.pathname === '/__admin/stats' && req.method === 'GET') {
    return json(res, 200, { ...stats, kids: publicKids() });
  }
  if (url.pathname === '/__admin/token_down' && req.method === 'POST') {
    stats.token_down = url.searchParams.get('on') === '1';
    return json(res, 200, { token_down: stats.token_down });
  }
  if (url.pathname === '/token' && req.method === 'POST') {
    stats.token_requests += 1;
    if (stats.token_down) return json(res, 503, { error: 'temporarily_unavailable' });
  }
  if (url.pathname === '/jwks') {
    stats.jwks_fetches += 1;
    stats.last_jwks_fetch_ms = Date.now();
  }
  return handler(req, res);
});

let issuer;
server.listen(requested, '127.0.0.1', () => {
  const { port } = server.address();
  issuer = `http://127.0.0.1:${port}`;
  handler = buildProvider(issuer, keys).callback();
  process.stdout.write(`READY ${port}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
