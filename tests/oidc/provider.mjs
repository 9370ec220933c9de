// A real OpenID Connect provider for the identity-provider tests:
// oidc-provider (npm, pinned, installed by `make oidc-tools` into .tools/)
// on 127.0.0.1 with a random port, issuing RS256 JWT access tokens for
// Bowtie's audience through the client credentials grant (resource
// indicators), one client per role.
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
    })),
    jwks: { keys },
    features: {
      devInteractions: { enabled: false },
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
            accessTokenTTL: clients[client.clientId].ttl,
            accessTokenFormat: "jwt",
            jwt: { sign: { alg: "RS256" } },
          };
        },
      },
    },
    extraTokenClaims: (ctx, token) => ({
      groups: clients[token.clientId]?.groups ?? [],
      email: `${token.clientId}@example.com`,
    }),
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
