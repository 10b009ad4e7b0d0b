-- healthgate schema, version 5: a client may ask for its access tokens as
-- signed JWTs (RFC 9068) instead of opaque strings.
ALTER TABLE clients ADD COLUMN access_token_format TEXT NOT NULL DEFAULT 'opaque';
