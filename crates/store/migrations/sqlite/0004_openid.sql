-- healthgate schema, version 4: OpenID Connect — signing keys shared by every
-- node, and what an ID token needs to know about the authorization.

CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY,
    alg             TEXT NOT NULL,
    private_key     TEXT NOT NULL,      -- PKCS#8, sealed with AES-256-GCM
    public_jwk      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    active_from     BIGINT NOT NULL,    -- signs from this instant
    retired_at      BIGINT              -- stops signing at this instant
);

ALTER TABLE authorization_codes ADD COLUMN nonce TEXT;
ALTER TABLE authorization_codes ADD COLUMN auth_time BIGINT;
