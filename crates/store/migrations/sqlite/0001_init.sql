-- healthgate schema, version 1.
-- TEXT ids and BIGINT epoch seconds, so the same statements serve SQLite and PostgreSQL.
-- Secrets are never stored: every *_digest column holds a SHA-256 hex digest.

CREATE TABLE clients (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    photo_url       TEXT,
    redirect_uris   TEXT NOT NULL,          -- newline-separated, validated at registration
    allowed_scopes  TEXT NOT NULL,          -- space-separated
    user_types      TEXT NOT NULL,          -- comma-separated
    kind            TEXT NOT NULL,          -- confidential | public
    secret_digest   TEXT,                   -- NULL for public clients
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    email           TEXT,
    user_type       TEXT NOT NULL,
    password_hash   TEXT,                   -- argon2id PHC string
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    locked_at       BIGINT
);

CREATE TABLE organizations (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,          -- practice | clinic
    created_at      BIGINT NOT NULL
);

CREATE TABLE memberships (
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role            TEXT NOT NULL,          -- admin | practitioner | staff
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id);

CREATE TABLE sessions (
    id_digest       TEXT PRIMARY KEY,
    user_id         TEXT REFERENCES users(id) ON DELETE CASCADE,   -- NULL before login
    csrf_token      TEXT NOT NULL,
    auth_time       BIGINT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expiry ON sessions(expires_at);

CREATE TABLE consents (
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id       TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    scope           TEXT NOT NULL,
    granted_at      BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
CREATE INDEX consents_client ON consents(client_id);

-- One family per authorization (code or client-credentials issue): every
-- access and refresh token descends from it, and revoking it kills them all.
CREATE TABLE token_families (
    id              TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    user_id         TEXT REFERENCES users(id) ON DELETE CASCADE,
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    revoked_reason  TEXT
);
CREATE INDEX token_families_client ON token_families(client_id);
CREATE INDEX token_families_user ON token_families(user_id);

CREATE TABLE authorization_codes (
    digest                  TEXT PRIMARY KEY,
    family_id               TEXT NOT NULL UNIQUE,
    client_id               TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    user_id                 TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    redirect_uri            TEXT NOT NULL,
    redirect_uri_provided   BIGINT NOT NULL,
    scope                   TEXT NOT NULL,
    code_challenge          TEXT,
    created_at              BIGINT NOT NULL,
    expires_at              BIGINT NOT NULL,
    consumed_at             BIGINT
);
CREATE INDEX authorization_codes_client ON authorization_codes(client_id);
CREATE INDEX authorization_codes_user ON authorization_codes(user_id);
CREATE INDEX authorization_codes_expiry ON authorization_codes(expires_at);

CREATE TABLE refresh_tokens (
    digest          TEXT PRIMARY KEY,
    family_id       TEXT NOT NULL REFERENCES token_families(id) ON DELETE CASCADE,
    client_id       TEXT NOT NULL,
    user_id         TEXT,
    scope           TEXT NOT NULL,
    redirect_uri    TEXT,
    parent_digest   TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    consumed_at     BIGINT,
    revoked_at      BIGINT,
    first_used_at   BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);
CREATE INDEX refresh_tokens_parent ON refresh_tokens(parent_digest);

CREATE TABLE access_tokens (
    digest                  TEXT PRIMARY KEY,
    family_id               TEXT NOT NULL REFERENCES token_families(id) ON DELETE CASCADE,
    client_id               TEXT NOT NULL,
    user_id                 TEXT,
    scope                   TEXT NOT NULL,
    refresh_digest          TEXT,           -- the refresh token issued with this one
    parent_refresh_digest   TEXT,           -- on_first_use: the refresh token this issue retires
    created_at              BIGINT NOT NULL,
    expires_at              BIGINT NOT NULL,
    revoked_at              BIGINT,
    first_used_at           BIGINT
);
CREATE INDEX access_tokens_family ON access_tokens(family_id);
CREATE INDEX access_tokens_refresh ON access_tokens(refresh_digest);
CREATE INDEX access_tokens_parent ON access_tokens(parent_refresh_digest);
CREATE INDEX access_tokens_expiry ON access_tokens(expires_at);

-- The audit trail: never a token, code, secret or password.
CREATE TABLE audit_events (
    id              TEXT PRIMARY KEY,
    at              BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    user_id         TEXT,
    client_id       TEXT,
    detail          TEXT
);
CREATE INDEX audit_events_at ON audit_events(at);
