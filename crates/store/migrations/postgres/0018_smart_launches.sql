-- SMART EHR launches. An app registered with a launch URL is launched by a
-- client registered as a SMART launcher (the platform acting as the EHR):
-- healthgate keeps the launch, and the authorization request that names it
-- receives its context. The launch value is kept only as its SHA-256
-- digest; it is single-use (consumed_at, set with the code it gave) and
-- lives a few minutes.
ALTER TABLE clients ADD COLUMN smart_launcher BIGINT NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN launch_url TEXT;

CREATE TABLE smart_launches (
    digest       TEXT PRIMARY KEY,
    client_id    TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    -- The person it was made for, when the launcher named one.
    user_id      TEXT REFERENCES users(id) ON DELETE CASCADE,
    -- The FHIR server (`iss`) and launch context, as a JSON object.
    context      TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    consumed_at  BIGINT
);
CREATE INDEX smart_launches_expiry ON smart_launches(expires_at);
CREATE INDEX smart_launches_client ON smart_launches(client_id);
CREATE INDEX smart_launches_user ON smart_launches(user_id);
