// A SMART Backend Services client's key handling and assertion signing,
// done with panva's jose (npm), a stock JOSE library that .ci/run unpacks
// into .ci/node. The Rust tests run it with node:
//
//   node jose.mjs generate ALG KID
//     prints {"private": JWK, "public": JWK} for a new key pair (the public
//     JWK carries kid and alg)
//   node jose.mjs sign '{"private": JWK, "alg": "...", "header": {...}, "claims": {...}}'
//     prints the compact JWS of claims, with alg, kid and header's fields
import * as jose from "../../../../../.ci/node/node_modules/jose/dist/webapi/index.js";

const [command, ...args] = process.argv.slice(2);

if (command === "generate") {
  const [alg, kid] = args;
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  const pub = { ...(await jose.exportJWK(publicKey)), kid, alg, use: "sig" };
  const priv = { ...(await jose.exportJWK(privateKey)), kid, alg };
  process.stdout.write(JSON.stringify({ private: priv, public: pub }));
} else if (command === "sign") {
  const { private: jwk, alg, header = {}, claims } = JSON.parse(args[0]);
  const key = await jose.importJWK(jwk, alg);
  const jwt = await new jose.SignJWT(claims)
    .setProtectedHeader({ alg, kid: jwk.kid, typ: "JWT", ...header })
    .sign(key);
  process.stdout.write(jwt);
} else {
  process.stderr.write("usage: jose.mjs generate ALG KID | sign JSON\n");
  process.exit(2);
}
