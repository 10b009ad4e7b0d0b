// The code flow as a partner's server runs it with panva's openid-client
// (npm, unpacked by .ci/run into .ci/node): discovery, a pushed
// authorization request (PAR) with a DPoP key, the code exchange, a
// protected resource and UserInfo with DPoP, and a refresh. With
// private_key_jwt, the client authenticates with its key and the pushed
// request is a signed request object (JAR).
//
//   node flow.mjs ISSUER CLIENT_ID REDIRECT_URI client_secret_basic SECRET
//   node flow.mjs ISSUER CLIENT_ID REDIRECT_URI private_key_jwt PKCS8_PEM
//
// It prints {"authorize": URL} (the browser's part is the Rust test's),
// reads the redirect the browser came back with from stdin, then prints
// {"result": {...}}: what each step gave.
import * as client from "../../../../../.ci/node/node_modules/openid-client/build/index.js";
import * as jose from "../../../../../.ci/node/node_modules/jose/dist/webapi/index.js";
import { createInterface } from "node:readline";

const [issuer, clientId, redirectUri, method, credential] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");

let auth;
let signingKey;
if (method === "private_key_jwt") {
  signingKey = { key: await jose.importPKCS8(credential, "ES384"), kid: "k1" };
  auth = client.PrivateKeyJwt(signingKey);
} else {
  auth = client.ClientSecretBasic(credential);
}
const config = await client.discovery(new URL(issuer), clientId, undefined, auth, {
  execute: [client.allowInsecureRequests],
});
const DPoP = client.getDPoPHandle(config, await client.randomDPoPKeyPair("ES256"));

const verifier = client.randomPKCECodeVerifier();
const state = client.randomState();
let parameters = {
  redirect_uri: redirectUri,
  scope: "openid profile_read",
  code_challenge: await client.calculatePKCECodeChallenge(verifier),
  code_challenge_method: "S256",
  state,
};
if (signingKey) {
  const jar = await client.buildAuthorizationUrlWithJAR(config, parameters, signingKey);
  parameters = jar.searchParams;
}
const authorize = await client.buildAuthorizationUrlWithPAR(config, parameters, { DPoP });
say({ authorize: authorize.href });

const callback = (await lines.next()).value;
const tokens = await client.authorizationCodeGrant(
  config,
  new URL(callback),
  { pkceCodeVerifier: verifier, expectedState: state },
  undefined,
  { DPoP },
);
const sub = tokens.claims().sub;
const me = await client.fetchProtectedResource(
  config,
  tokens.access_token,
  new URL(`${issuer}/api/v1/me`),
  "GET",
  undefined,
  undefined,
  { DPoP },
);
const userinfo = await client.fetchUserInfo(config, tokens.access_token, sub, { DPoP });
const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP });
say({
  result: {
    token_type: tokens.token_type,
    scope: tokens.scope,
    sub,
    me_status: me.status,
    me: await me.json(),
    userinfo,
    refreshed_token_type: refreshed.token_type,
    refreshed_access_token: refreshed.access_token,
  },
});
process.exit(0);
