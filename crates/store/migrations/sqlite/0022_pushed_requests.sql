-- Pushed authorization requests (RFC 9126), and requests that arrived as a
-- signed request object (RFC 9101): the parameters, form-encoded, kept by
-- the SHA-256 digest of the request_uri handed to the client, so that any
-- node can read them. used_at is set when the request_uri first arrives at
-- the authorization endpoint (once only); the sign-in and consent pages
-- then bring the request back for a while by its resume token.
CREATE TABLE pushed_requests (
    digest      TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    params      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX pushed_requests_expiry ON pushed_requests(expires_at);
CREATE INDEX pushed_requests_client ON pushed_requests(client_id);

-- A client whose authorization requests must be pushed first
-- (require_pushed_authorization_requests, RFC 9126 §6).
ALTER TABLE clients ADD COLUMN require_par BIGINT NOT NULL DEFAULT 0;
