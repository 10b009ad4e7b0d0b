-- healthgate schema, version 6: the algorithm a client's ID tokens are signed
-- with (OpenID Connect's id_token_signed_response_alg): ES256 or RS256.
ALTER TABLE clients ADD COLUMN id_token_alg TEXT NOT NULL DEFAULT 'ES256';
