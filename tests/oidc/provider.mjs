// A real OpenID Connect provider for the identity-provider tests:
// oidc-provider (npm, pinned, installed by `make oidc-tools` into .tools/)
// on 127.0.0.1 with a random port, issuing RS256 JWT access tokens for
// Bowtie's audience through the client credentials grant (resource
// indicators), one client per role; and signs people in to the dashboard
// (client bowtie-dashboard, the authorization code flow with PKCE) through
// its development login page: login ada, grace or linus, any password.
//
// Started by tests/src/oidc.rs with, in the environment:
//   BOWTIE_OIDC_PROVIDER_NODE_PATH  the node_modules holding oidc-provider
//   BOWTIE_OIDC_AUDIENCE            the resource (audience) tokens are for
//
// It prints one JSON line {"issuer": "http://127.0.0.1:<port>"} once it
// listens. Beside the provider's own endpoints it serves, for the tests:
//   POST /test/rotate      a new signing key, published first in the JWKS
//                          beside the old ones (which still verify)
//   POST /test/sign        signs the JSON claims of the body with the
//                          current key (RS256): tokens of any claims, signed
//                          as the provider signs
//   GET  /test/public.pem  the current key's public half (SPKI PEM)
//   GET  /test/stats       {"jwks": <JWKS requests>, "discovery": <discovery requests>}

import * as crypto from "node:crypto";
import * as http from "node:http";
import * as path from "node:path";
import { pathToFileURL } from "node:url";

const nodePath = process.env.BOWTIE_OIDC_PROVIDER_NODE_PATH;
const audience = process.env.BOWTIE_OIDC_AUDIENCE;
if (!nodePath || !audience) {
  console.error("BOWTIE_OIDC_PROVIDER_NODE_PATH and BOWTIE_OIDC_AUDIENCE are required");
  process.exit(2);
}
const { default: Provider } = await import(
  pathToFileURL(path.join(nodePath, "oidc-provider", "lib", "index.js")).href
);

// Each client's groups claim (Bowtie reads it with the prefix "bowtie-")
// and access token lifetime in seconds.
const clients = {
  "bowtie-viewer": { groups: ["Everyone", "bowtie-viewer"], ttl: 600 },
  "bowtie-csm": { groups: ["Everyone", "bowtie-csm"], ttl: 600 },
  "bowtie-admin": { groups: ["bowtie-admin"], ttl: 600 },
  "bowtie-nobody": { groups: ["Everyone"], ttl: 600 },
  "bowtie-short": { groups: ["bowtie-viewer"], ttl: 10 },
};

// The dashboard's client (the authorization code flow with PKCE): a
// native application, so a loopback redirect URI matches on any port (RFC
// 8252 section 7.3) and the gateway's random port needs no registration.
const dashboard = {
  client_id: "bowtie-dashboard",
  client_secret: "secret-bowtie-dashboard",
  application_type: "native",
  grant_types: ["authorization_code"],
  response_types: ["code"],
  redirect_uris: ["http://127.0.0.1/auth/callback"],
  post_logout_redirect_uris: ["http://127.0.0.1/"],
  token_endpoint_auth_method: "client_secret_basic",
};

// The people who sign in through the login page (any password): their
// name, e-mail and groups claims.
const people = {
  ada: { name: "Ada Lovelace", email: "ada@example.com", groups: ["Everyone", "bowtie-csm"] },
  grace: { name: "Grace Hopper", email: "grace@example.com", groups: ["bowtie-manager"] },
  linus: { name: "Linus Viewer", email: "linus@example.com", groups: ["bowtie-viewer"] },
};

let generation = 0;
function newKey() {
  generation += 1;
  const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = privateKey.export({ format: "jwk" });
  return { ...jwk, kid: `test-key-${generation}`, alg: "RS256", use: "sig" };
}

let keys = [newKey()];
let provider;
const stats = { jwks: 0, discovery: 0 };

function build(issuer) {
  return new Provider(issuer, {
    clients: Object.keys(clients).map((id) => ({
      client_id: id,
      client_secret: `secret-${id}`,
      grant_types: ["client_credentials"],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: "client_secret_post",
    })).concat([dashboard]),
    jwks: { keys },
    findAccount: (ctx, id) => {
      const person = people[id];
      if (!person) return undefined;
      return {
        accountId: id,
        claims: () => ({ sub: id, name: person.name, email: person.email, groups: person.groups }),
      };
    },
    claims: { openid: ["sub"], profile: ["name"], email: ["email"] },
    // The ID token of the code flow carries the profile and e-mail claims.
    conformIdTokenClaims: false,
    features: {
      // The provider's own login page: any password of a known person.
      devInteractions: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx, form) => {
          ctx.body = `<!DOCTYPE html><html><head><title>Sign out</title></head><body>${form}
            <button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
            </body></html>`;
        },
      },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => {
          if (resource !== audience) {
            throw new Error(`unknown resource ${resource}`);
          }
          return {
            scope: "api",
            audience,
            accessTokenTTL: clients[client.clientId]?.ttl ?? 600,
            accessTokenFormat: "jwt",
            jwt: { sign: { alg: "RS256" } },
          };
        },
      },
    },
    extraTokenClaims: (ctx, token) => {
      const person = token.accountId && people[token.accountId];
      if (person) return { groups: person.groups, email: person.email };
      return {
        groups: clients[token.clientId]?.groups ?? [],
        email: `${token.clientId}@example.com`,
      };
    },
  });
}

function b64url(data) {
  return Buffer.from(data).toString("base64url");
}

function sign(claims) {
  const key = keys[0];
  const header = { alg: "RS256", typ: "JWT", kid: key.kid };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const privateKey = crypto.createPrivateKey({ key, format: "jwk" });
  const signature = crypto.sign("sha256", Buffer.from(input), privateKey);
  return `${input}.${b64url(signature)}`;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

let issuer;
const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    if (url.pathname === "/test/rotate" && req.method === "POST") {
      keys = [newKey(), ...keys];
      provider = build(issuer);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ kid: keys[0].kid }));
      return;
    }
    if (url.pathname === "/test/sign" && req.method === "POST") {
      const claims = JSON.parse(await readBody(req));
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(sign(claims));
      return;
    }
    if (url.pathname === "/test/public.pem") {
      const publicKey = crypto.createPublicKey({ key: keys[0], format: "jwk" });
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(publicKey.export({ type: "spki", format: "pem" }));
      return;
    }
    if (url.pathname === "/test/stats") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(stats));
      return;
    }
    if (url.pathname === "/jwks") stats.jwks += 1;
    if (url.pathname === "/.well-known/openid-configuration") stats.discovery += 1;
    provider.callback()(req, res);
  } catch (e) {
    res.writeHead(500, { "content-type": "text/plain" });
    res.end(String(e));
  }
});

server.listen(0, "127.0.0.1", () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  provider = build(issuer);
  console.log(JSON.stringify({ issuer }));
});

// The test's end closes stdin: stop with it, so no provider outlives its test.
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
