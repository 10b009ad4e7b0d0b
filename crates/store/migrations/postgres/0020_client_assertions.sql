-- private_key_jwt (RFC 7523, SMART Backend Services): a client may
-- authenticate with assertions signed by its private keys, whose public
-- keys it registered inline (a JWK Set, JSON) or at a URL. Every accepted
-- assertion's jti is kept until the assertion expires, so that no node
-- accepts it twice.
ALTER TABLE clients ADD COLUMN jwks_uri TEXT;
ALTER TABLE clients ADD COLUMN jwks TEXT;

CREATE TABLE client_assertions (
    client_id   TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    jti         TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_assertions_expiry ON client_assertions(expires_at);
