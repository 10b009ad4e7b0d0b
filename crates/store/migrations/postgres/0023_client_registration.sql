-- Dynamic client registration (RFC 7591, 7592). An operator issues initial
-- access tokens, kept as SHA-256 digests: each lets whoever holds it
-- register apps at /oauth/register until it expires or is revoked; the
-- apps are owned by the token's owner when it names one.
CREATE TABLE registration_tokens (
    id          TEXT PRIMARY KEY,
    digest      TEXT NOT NULL UNIQUE,
    label       TEXT,
    owner_id    TEXT REFERENCES users(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);

-- An app registered at the registration endpoint: the initial access token
-- it was registered with ('open' under open registration), and the digest
-- of its registration access token (RFC 7592), replaced on each update.
ALTER TABLE clients ADD COLUMN registered_with TEXT;
ALTER TABLE clients ADD COLUMN registration_access_digest TEXT;
