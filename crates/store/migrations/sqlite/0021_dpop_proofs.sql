-- DPoP (RFC 9449 §11.1): the jti of every accepted proof is kept, with the
-- thumbprint of the key that signed it, until the proof is too old to be
-- accepted anyway, so that no node accepts a proof twice.
CREATE TABLE dpop_proofs (
    jkt         TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (jkt, jti)
);
CREATE INDEX dpop_proofs_expiry ON dpop_proofs(expires_at);

-- Bindings to a DPoP key, by its RFC 7638 thumbprint: a code issued for a
-- request's dpop_jkt (RFC 9449 §10), a public client's token family whose
-- refresh tokens need that key (§5), and each access token (cnf.jkt, §6).
ALTER TABLE authorization_codes ADD COLUMN dpop_jkt TEXT;
ALTER TABLE token_families ADD COLUMN dpop_jkt TEXT;
ALTER TABLE access_tokens ADD COLUMN dpop_jkt TEXT;

-- A client registered to require DPoP: its token requests without a proof
-- are refused (RFC 9449 §5.2, the dpop_bound_access_tokens metadata).
ALTER TABLE clients ADD COLUMN require_dpop BIGINT NOT NULL DEFAULT 0;
