-- healthgate schema, version 13: second factors (issue 13).
-- mfa_factors: a person's authenticator apps (kind 'totp': `secret` is the
-- TOTP secret sealed with a key derived from the instance key; `last_step`
-- is the last TOTP step accepted, so no code is accepted twice) and
-- passkeys (kind 'passkey': `secret` is the WebAuthn credential as JSON,
-- `credential_id` its id, base64url). A factor is pending until confirmed
-- (`confirmed_at`): only confirmed ones sign anybody in.
CREATE TABLE mfa_factors (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    secret TEXT NOT NULL,
    credential_id TEXT,
    created_at BIGINT NOT NULL,
    confirmed_at BIGINT,
    last_used_at BIGINT,
    last_step BIGINT
);
CREATE INDEX mfa_factors_user ON mfa_factors(user_id);
CREATE UNIQUE INDEX mfa_factors_credential ON mfa_factors(credential_id);
-- Recovery codes: SHA-256 digests only; a used code keeps its row (used_at)
-- so the account page can say how many are left.
CREATE TABLE recovery_codes (
    digest TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX recovery_codes_user ON recovery_codes(user_id);
-- A session between the password and the second factor names the person in
-- pending_user_id (user_id stays NULL: nobody is signed in yet; auth_time is
-- when the password was given). amr is what
-- the sign-in used (RFC 8176 words, space-separated), mfa_at when a second
-- factor was last given; ceremony holds one WebAuthn challenge in flight.
ALTER TABLE sessions ADD COLUMN pending_user_id TEXT;
ALTER TABLE sessions ADD COLUMN amr TEXT;
ALTER TABLE sessions ADD COLUMN mfa_at BIGINT;
ALTER TABLE sessions ADD COLUMN ceremony TEXT;
-- The methods carry on to what a sign-in authorizes: ID tokens and
-- introspection say them (amr, acr).
ALTER TABLE authorization_codes ADD COLUMN amr TEXT;
ALTER TABLE token_families ADD COLUMN amr TEXT;
-- An app that requires a second factor (a clinician app): no code is issued
-- to it for a sign-in that did not give one.
ALTER TABLE clients ADD COLUMN require_mfa BIGINT NOT NULL DEFAULT 0;
