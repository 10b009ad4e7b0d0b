// DPoP proofs (RFC 9449) for bench/compare, made beforehand with node's own
// crypto (no packages): each proof is good for one request, so a pool of
// them is walked by bench/pool.lua, one a request, as codes are.
//
//   node dpop.mjs key FILE
//     writes a new P-256 private key (JWK) to FILE
//   node dpop.mjs proofs FILE METHOD URL COUNT [ACCESS_TOKEN]
//     prints COUNT proofs for METHOD at URL signed with FILE's key, one a
//     line, each with its own jti and iat now (and ath for ACCESS_TOKEN)
import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";

const b64u = (bytes) => Buffer.from(bytes).toString("base64url");
const [command, file, method, url, count, token] = process.argv.slice(2);

if (command === "key") {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  writeFileSync(file, JSON.stringify(privateKey.export({ format: "jwk" })));
} else if (command === "proofs") {
  const jwk = JSON.parse(readFileSync(file, "utf8"));
  const key = createPrivateKey({ key: jwk, format: "jwk" });
  const header = b64u(JSON.stringify({
    typ: "dpop+jwt", alg: "ES256", jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y },
  }));
  const ath = token ? { ath: b64u(createHash("sha256").update(token).digest()) } : {};
  const iat = Math.floor(Date.now() / 1000);
  const lines = [];
  for (let i = 0; i < Number(count); i++) {
    const claims = { jti: b64u(randomBytes(12)), htm: method, htu: url, iat, ...ath };
    const input = `${header}.${b64u(JSON.stringify(claims))}`;
    const signature = sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
    lines.push(`${input}.${b64u(signature)}`);
  }
  process.stdout.write(lines.join("\n") + "\n");
} else {
  process.stderr.write("usage: dpop.mjs key FILE | proofs FILE METHOD URL COUNT [ACCESS_TOKEN]\n");
  process.exit(2);
}
