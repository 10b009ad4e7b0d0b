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
