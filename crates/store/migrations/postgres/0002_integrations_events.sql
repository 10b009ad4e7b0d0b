-- healthgate schema, version 2: practice integrations (Hint's InstantOn),
-- practice API keys, the event log with its hash chain, and webhook delivery.

-- The event log replaces the first audit table (no deployment kept data in it).
DROP TABLE audit_events;

CREATE TABLE events (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    at              BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    actor_user_id   TEXT,
    subject         TEXT,
    client_id       TEXT,
    organization_id TEXT,
    ip              TEXT,
    outcome         TEXT NOT NULL,
    data            TEXT,
    -- Filled by the sealer, in order: position in the chain, the previous
    -- row's hash and this row's hash (SHA-256 over the previous hash and the row).
    chain_pos       BIGINT UNIQUE,
    prev_hash       TEXT,
    hash            TEXT
);
CREATE INDEX events_at ON events(at);
CREATE INDEX events_unsealed ON events(seq) WHERE chain_pos IS NULL;
CREATE INDEX events_client ON events(client_id, at);

-- The end of the sealed chain; one row.
CREATE TABLE audit_chain_head (
    id      BIGINT PRIMARY KEY,
    pos     BIGINT NOT NULL,
    hash    TEXT NOT NULL
);
INSERT INTO audit_chain_head (id, pos, hash) VALUES (1, 0, '');

ALTER TABLE clients ADD COLUMN description TEXT;
ALTER TABLE clients ADD COLUMN connect_redirect_url TEXT;
ALTER TABLE clients ADD COLUMN published BIGINT NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN webhook_url TEXT;
ALTER TABLE clients ADD COLUMN webhook_secret_version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE clients ADD COLUMN webhook_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN webhook_muted_at BIGINT;
-- Partners may authenticate with `Authorization: Bearer <client_secret>` (Hint).
CREATE INDEX clients_secret ON clients(secret_digest);

ALTER TABLE users ADD COLUMN name TEXT;

CREATE TABLE integrations (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    client_id       TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    status          TEXT NOT NULL,              -- pending | connected | disconnected
    created_by      TEXT REFERENCES users(id) ON DELETE SET NULL,
    activated_by    TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at      BIGINT NOT NULL,
    activated_at    BIGINT,
    disconnected_at BIGINT
);
-- At most one live integration per practice and partner.
CREATE UNIQUE INDEX integrations_live ON integrations(organization_id, client_id) WHERE status <> 'disconnected';
CREATE INDEX integrations_client ON integrations(client_id);

CREATE TABLE connect_codes (
    digest          TEXT PRIMARY KEY,
    integration_id  TEXT NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    mode            TEXT NOT NULL,              -- redirect | manual
    created_by      TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    consumed_at     BIGINT,
    api_key_digest  TEXT                        -- the key the code produced
);
CREATE INDEX connect_codes_integration ON connect_codes(integration_id);
CREATE INDEX connect_codes_expiry ON connect_codes(expires_at);

CREATE TABLE api_keys (
    digest          TEXT PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,       -- key-…, the public handle
    integration_id  TEXT NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL,
    client_id       TEXT NOT NULL,
    description     TEXT,
    created_at      BIGINT NOT NULL,
    last_used_at    BIGINT,
    revoked_at      BIGINT
);
CREATE INDEX api_keys_integration ON api_keys(integration_id);

CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL,
    client_id       TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    url             TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,              -- pending | delivered | failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    locked_until    BIGINT,
    delivered_at    BIGINT,
    last_status     BIGINT,
    last_error      TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX webhook_deliveries_client ON webhook_deliveries(client_id, created_at);

CREATE TABLE webhook_attempts (
    delivery_id     TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt         BIGINT NOT NULL,
    at              BIGINT NOT NULL,
    status_code     BIGINT,
    error           TEXT,
    duration_ms     BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- Secrets the instance derives others from (webhook signing secrets), when
-- the operator does not configure secret_key. One row.
CREATE TABLE instance_secrets (
    id      BIGINT PRIMARY KEY,
    key     TEXT NOT NULL
);
