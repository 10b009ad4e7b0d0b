// The peer bench/compare loads beside healthgate: panva's node-oidc-provider
// (bench/peer/package.json pins the version), one confidential client
// (client_secret_basic) with the authorization code, refresh token and
// client credentials grants, introspection, and one account that signs in
// through this file's own login and consent form (not devInteractions).
//
// bench/compare copies this file next to the installed node_modules
// (bench/.peer/) and runs it there. Environment:
//   PEER_PORT                      port on 127.0.0.1
//   PEER_CLIENT_ID, PEER_CLIENT_SECRET
//   PEER_USERNAME, PEER_PASSWORD   the one account
//   PEER_ADAPTER                   "default" (the provider's in-memory adapter,
//                                  a 1,000-entry LRU) or "map" (every entry
//                                  kept until it expires; see below)
import { generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.env.PEER_PORT || 3000);
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.PEER_CLIENT_ID || 'peer-client';
const clientSecret = process.env.PEER_CLIENT_SECRET || 'peer-secret';
const username = process.env.PEER_USERNAME || 'member';
const password = process.env.PEER_PASSWORD || 'member-password';
const accountId = 'acct-member-1';

// The provider's default in-memory adapter keeps at most about a thousand
// entries (codes, tokens, grants, sessions) and silently drops older ones,
// so a pool of codes or refresh tokens minted before a run is gone by the
// time it is used. "map" is an adapter that keeps everything until it
// expires, for the rows that need such a pool.
class MapAdapter {
  static entries = new Map();

  static grants = new Map();

  static uids = new Map();

  static userCodes = new Map();

  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    MapAdapter.entries.set(key, { payload, expiresAt });
    if (payload.grantId) {
      let members = MapAdapter.grants.get(payload.grantId);
      if (!members) {
        members = new Set();
        MapAdapter.grants.set(payload.grantId, members);
      }
      members.add(key);
    }
    if (payload.uid) MapAdapter.uids.set(payload.uid, id);
    if (payload.userCode) MapAdapter.userCodes.set(payload.userCode, id);
  }

  async find(id) {
    const key = this.key(id);
    const entry = MapAdapter.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      MapAdapter.entries.delete(key);
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) {
    const id = MapAdapter.uids.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = MapAdapter.userCodes.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = MapAdapter.entries.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    MapAdapter.entries.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of MapAdapter.grants.get(grantId) ?? []) {
      MapAdapter.entries.delete(key);
    }
    MapAdapter.grants.delete(grantId);
  }
}

const account = {
  accountId,
  async claims() {
    return {
      sub: accountId,
      name: 'Morgan Member',
      preferred_username: username,
      email: `${username}@example.org`,
    };
  },
};

// ES256 signing key, made at start (healthgate signs with ES256 too).
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'ES256' };

const configuration = {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    redirect_uris: [`${issuer}/callback`],
    scope: 'openid offline_access profile_read',
    id_token_signed_response_alg: 'ES256',
  }],
  scopes: ['openid', 'offline_access', 'profile_read'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email'],
  },
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    // healthgate's bearer tokens are opaque and looked up; so are these.
    resourceIndicators: { enabled: false },
  },
  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  async findAccount(_ctx, id) {
    return id === accountId ? account : undefined;
  },
  // Like healthgate: every code exchange issues a refresh token, and every
  // refresh spends it and issues a new one.
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  rotateRefreshToken: true,
  ttl: {
    AccessToken: 7200,
    AuthorizationCode: 600,
    ClientCredentials: 7200,
    IdToken: 3600,
    RefreshToken: 30 * 24 * 3600,
    Grant: 30 * 24 * 3600,
    Interaction: 3600,
    Session: 12 * 3600,
  },
};
if (process.env.PEER_ADAPTER === 'map') {
  configuration.adapter = MapAdapter;
}

const provider = new Provider(issuer, configuration);

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

function same(a, b) {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && timingSafeEqual(x, y);
}

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><meta charset="utf-8"><title>peer</title>${html}`);
}

// The login page, then the consent page, for one interaction.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  if (req.method === 'GET') {
    if (prompt.name === 'login') {
      return page(res, 200, `<form method="post" action="/interaction/${escape(uid)}">
<input name="username"><input name="password" type="password"><button>Sign in</button></form>`);
    }
    return page(res, 200, `<p>${escape(params.client_id)} asks for ${escape(params.scope)}</p>
<form method="post" action="/interaction/${escape(uid)}">
<input type="hidden" name="decision" value="allow"><button>Allow</button></form>`);
  }
  const form = await readForm(req);
  let result;
  if (prompt.name === 'login') {
    if (!same(form.get('username'), username) || !same(form.get('password'), password)) {
      return page(res, 401, '<p>Wrong username or password.</p>');
    }
    result = { login: { accountId } };
  } else if (prompt.name === 'consent') {
    if (form.get('decision') !== 'allow') {
      result = { error: 'access_denied' };
    } else {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
      if (details.prompt.details.missingOIDCScope) {
        grant.addOIDCScope(details.prompt.details.missingOIDCScope.join(' '));
      }
      if (details.prompt.details.missingOIDCClaims) {
        grant.addOIDCClaims(details.prompt.details.missingOIDCClaims);
      }
      result = { consent: { grantId: await grant.save() } };
    }
  } else {
    return page(res, 400, `<p>Unexpected prompt ${escape(prompt.name)}.</p>`);
  }
  return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

const handle = provider.callback();
http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok');
    return;
  }
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      if (!res.headersSent) page(res, 400, `<p>${escape(err.message)}</p>`);
      else res.end();
    });
    return;
  }
  handle(req, res);
}).listen(port, '127.0.0.1', () => {
  console.log(JSON.stringify({ issuer, client_id: clientId }));
});
