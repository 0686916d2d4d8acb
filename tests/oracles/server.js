// Test oracle: a real OpenID Connect / OAuth 2.0 server (npm oidc-provider, pinned in
// package-lock.json) with a small fault-injecting front, for linkctl's integration tests.
//
// Started by tests/support/oracle.py (fixture `oidc_server` in tests/integration/conftest.py); usable by hand too:
//
//   node tests/oracles/server.js [--port N] [--host 127.0.0.1] [--clients FILE]
//
// Environment (argv wins where both exist):
//   ORACLE_PORT                  port to listen on; 0 (default) picks a free one
//   ORACLE_HOST                  default 127.0.0.1 (tests only talk to loopback)
//   ORACLE_CLIENTS               JSON array of client metadata (RFC 7591 names), or
//   ORACLE_CLIENTS_FILE          a file holding that array
//   ORACLE_ACCESS_TOKEN_TTL      seconds, default 60 (short so refresh tests are fast)
//   ORACLE_REFRESH_TOKEN_TTL     seconds, default 14 days
//   ORACLE_DEVICE_CODE_TTL       seconds, default 600
//   ORACLE_CLOCK_TOLERANCE       seconds, default 0 (expiry is tested strictly)
//   ORACLE_STORAGE_SIZE          entries the in-memory adapter keeps (clients, grants, tokens,
//                                consumed ones too); default 1000 as oidc-provider's, whose LRU
//                                then forgets the oldest (runs with hundreds of links need more)
//
// On start it prints one JSON line on stdout: {"issuer": ..., "port": ..., "control": ...}.
//
// Control endpoints (JSON, loopback only, not part of any OAuth spec):
//   POST /__oracle/fault   {"kind": K, "target": "token", "times": 1, "retryAfter": "7",
//                           "delayMs": 3000}  arms a one-shot fault (queue; first armed, first fired)
//        kinds: unavailable (503 + Retry-After), rate_limited (429 + Retry-After),
//               server_error_html (500, text/html), drop (close the connection without
//               processing), drop_after (process, then close without answering),
//               delay_after (process, then hold the answer for delayMs)
//        targets: token, revocation, introspection, device_authorization, discovery, registration
//   DELETE /__oracle/fault  disarms every fault
//   GET  /__oracle/requests the token-endpoint requests seen (grant_type, auth method, client_id,
//                           status) - never token values
//   GET  /__oracle/events   grant errors with oidc-provider's real reason (its invalid_grant
//                           descriptions are all generic)
//   POST /__oracle/reset    clears the request and event logs and the fault queue
//
// The wrong-auth-method check: oidc-provider accepts a client secret by either method whatever
// the client registered, so this front rejects a request whose method differs from the client's
// token_endpoint_auth_method with 401 invalid_client (as a strict provider would).

import * as http from 'node:http';
import * as fs from 'node:fs';
import * as querystring from 'node:querystring';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';
import { setStorage } from 'oidc-provider/lib/adapters/memory_adapter.js';
import QuickLRU from 'quick-lru';

const { values: argv } = parseArgs({
  options: {
    port: { type: 'string' },
    host: { type: 'string' },
    clients: { type: 'string' },
  },
});

const env = process.env;
const host = argv.host || env.ORACLE_HOST || '127.0.0.1';
const wantedPort = Number(argv.port ?? env.ORACLE_PORT ?? 0);
const seconds = (name, fallback) => (env[name] ? Number(env[name]) : fallback);

function loadClients() {
  const file = argv.clients || env.ORACLE_CLIENTS_FILE;
  const text = file ? fs.readFileSync(file, 'utf8') : env.ORACLE_CLIENTS;
  return text ? JSON.parse(text) : [];
}

const TARGETS = {
  token: '/token',
  revocation: '/token/revocation',
  introspection: '/token/introspection',
  device_authorization: '/device/auth',
  discovery: '/.well-known/openid-configuration',
  registration: '/reg',
};
// Endpoints where clients authenticate, so the auth-method check applies.
const AUTHENTICATED = new Set(['/token', '/token/revocation', '/token/introspection', '/device/auth']);

const faults = []; // {kind, path, remaining, retryAfter, delayMs}
let requests = [];
let events = [];

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function takeFault(path) {
  const index = faults.findIndex((f) => f.path === path);
  if (index === -1) return undefined;
  const fault = faults[index];
  fault.remaining -= 1;
  if (fault.remaining <= 0) faults.splice(index, 1);
  return fault;
}

// Which client authentication a request used, and for which client_id.
function authUsed(ctx, form) {
  const header = ctx.get('authorization');
  if (header && header.toLowerCase().startsWith('basic ')) {
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const id = colon === -1 ? decoded : decoded.slice(0, colon);
    return { method: 'client_secret_basic', clientId: querystring.unescape(id) };
  }
  if (form.client_assertion) return { method: 'jwt', clientId: form.client_id };
  if (form.client_secret !== undefined) return { method: 'client_secret_post', clientId: form.client_id };
  return { method: 'none', clientId: form.client_id };
}

function jsonReply(ctx, status, body, headers = {}) {
  ctx.status = status;
  ctx.set('cache-control', 'no-store');
  for (const [k, v] of Object.entries(headers)) ctx.set(k, v);
  ctx.body = body;
}

async function control(ctx) {
  const body = ['POST', 'PUT'].includes(ctx.method) ? await readBody(ctx.req) : '';
  const data = body ? JSON.parse(body) : {};
  if (ctx.path === '/__oracle/fault' && ctx.method === 'POST') {
    const target = data.target || 'token';
    if (!TARGETS[target]) return jsonReply(ctx, 400, { error: `unknown target ${target}` });
    const kinds = ['unavailable', 'rate_limited', 'server_error_html', 'drop', 'drop_after', 'delay_after'];
    if (!kinds.includes(data.kind)) return jsonReply(ctx, 400, { error: `unknown kind ${data.kind}` });
    faults.push({
      kind: data.kind,
      path: TARGETS[target],
      remaining: data.times || 1,
      retryAfter: data.retryAfter === undefined ? undefined : String(data.retryAfter),
      delayMs: data.delayMs || 0,
    });
    return jsonReply(ctx, 200, { armed: faults.length });
  }
  if (ctx.path === '/__oracle/fault' && ctx.method === 'DELETE') {
    faults.length = 0;
    return jsonReply(ctx, 200, { armed: 0 });
  }
  if (ctx.path === '/__oracle/requests') return jsonReply(ctx, 200, requests);
  if (ctx.path === '/__oracle/events') return jsonReply(ctx, 200, events);
  if (ctx.path === '/__oracle/reset' && ctx.method === 'POST') {
    faults.length = 0;
    requests = [];
    events = [];
    return jsonReply(ctx, 200, {});
  }
  return jsonReply(ctx, 404, { error: 'no such control endpoint' });
}

function makeFront(provider) {
  return async function front(ctx, next) {
    if (ctx.path.startsWith('/__oracle/')) return control(ctx);

    const isTokenish = ctx.method === 'POST' && AUTHENTICATED.has(ctx.path);
    let form = {};
    if (isTokenish) {
      // Read the body here so the check can see it; oidc-provider falls back to req.body.
      const raw = await readBody(ctx.req);
      ctx.req.body = raw;
      form = querystring.parse(raw);
    }

    const fault = takeFault(ctx.path);
    const record = isTokenish && ctx.path === '/token'
      ? { grant_type: form.grant_type, client_id: undefined, auth_method: undefined, status: undefined, fault: fault?.kind }
      : undefined;
    if (record) requests.push(record);

    if (fault) {
      switch (fault.kind) {
        case 'unavailable':
          return jsonReply(ctx, 503, { error: 'temporarily_unavailable' },
            fault.retryAfter ? { 'retry-after': fault.retryAfter } : {});
        case 'rate_limited':
          return jsonReply(ctx, 429, { error: 'slow_down', error_description: 'too many requests' },
            fault.retryAfter ? { 'retry-after': fault.retryAfter } : {});
        case 'server_error_html':
          ctx.status = 500;
          ctx.type = 'html';
          ctx.body = '<html><body><h1>500 Internal Server Error</h1><p>upstream exploded</p></body></html>';
          return undefined;
        case 'drop':
          ctx.respond = false;
          ctx.req.socket.destroy();
          return undefined;
        default:
          break; // *_after faults act once the provider has processed the request
      }
    }

    if (isTokenish) {
      const { method, clientId } = authUsed(ctx, form);
      if (record) Object.assign(record, { client_id: clientId, auth_method: method });
      const client = clientId ? await provider.Client.find(String(clientId)) : undefined;
      const registered = client?.clientAuthMethod;
      if (registered && method !== 'jwt' && registered !== method) {
        if (record) record.status = 401;
        return jsonReply(ctx, 401, {
          error: 'invalid_client',
          error_description: `client authentication method ${method} used, but the client is registered for ${registered}`,
        }, { 'www-authenticate': 'Basic realm="oracle"' });
      }
    }

    await next();
    if (record) record.status = ctx.status;

    if (fault?.kind === 'drop_after') {
      ctx.respond = false;
      ctx.req.socket.destroy();
    } else if (fault?.kind === 'delay_after') {
      await sleep(fault.delayMs);
    }
    return undefined;
  };
}

if (process.env.ORACLE_STORAGE_SIZE) {
  setStorage(new QuickLRU({ maxSize: Number(process.env.ORACLE_STORAGE_SIZE) }));
}

const server = http.createServer();
server.listen(wantedPort, host, () => {
  const { port } = server.address();
  const issuer = `http://${host}:${port}`;
  const provider = new Provider(issuer, {
    clients: loadClients(),
    clientBasedCORS: () => false,
    cookies: { keys: ['linkctl-oracle-test-only-key'] },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      registration: { enabled: true },
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'api:read', 'api:write'],
    rotateRefreshToken: true,
    clockTolerance: seconds('ORACLE_CLOCK_TOLERANCE', 0),
    ttl: {
      AccessToken: seconds('ORACLE_ACCESS_TOKEN_TTL', 60),
      ClientCredentials: seconds('ORACLE_ACCESS_TOKEN_TTL', 60),
      RefreshToken: seconds('ORACLE_REFRESH_TOKEN_TTL', 14 * 24 * 3600),
      DeviceCode: seconds('ORACLE_DEVICE_CODE_TTL', 600),
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 3600,
      Session: 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
  });
  for (const name of ['grant.error', 'server_error', 'revocation.error', 'introspection.error']) {
    provider.on(name, (ctx, err) => {
      events.push({
        event: name,
        error: err?.error,
        detail: err?.error_detail || err?.error_description || err?.message,
        at: Date.now() / 1000,
      });
    });
  }
  provider.use(makeFront(provider));
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer, port, control: `${issuer}/__oracle` })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
