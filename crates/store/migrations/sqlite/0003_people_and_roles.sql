-- healthgate schema, version 3: who may authorize what (roles and
-- organization-level grants), and partner-provisioned accounts.

ALTER TABLE clients ADD COLUMN authorization_level TEXT NOT NULL DEFAULT 'user';
-- Scopes of the tokens returned when the partner provisions a user; NULL
-- means the client's allowed scopes.
ALTER TABLE clients ADD COLUMN provisioning_scopes TEXT;

-- The partner that created the account (HealthTap's "you manage users'
-- identity"); NULL for the platform's own accounts.
ALTER TABLE users ADD COLUMN provisioned_by TEXT REFERENCES clients(id) ON DELETE CASCADE;
CREATE INDEX users_provisioned ON users(provisioned_by);

-- What a grant stands for: the organization it was made in (if any) and the
-- resource owner its tokens speak for; `granted_by` is the admin who made an
-- organization-level grant (kept when they leave, not a foreign key).
ALTER TABLE authorization_codes ADD COLUMN organization_id TEXT;
ALTER TABLE authorization_codes ADD COLUMN owner_type TEXT;
ALTER TABLE authorization_codes ADD COLUMN owner_id TEXT;
ALTER TABLE token_families ADD COLUMN organization_id TEXT;
ALTER TABLE token_families ADD COLUMN owner_type TEXT;
ALTER TABLE token_families ADD COLUMN owner_id TEXT;
ALTER TABLE token_families ADD COLUMN granted_by TEXT;
ALTER TABLE token_families ADD COLUMN scope TEXT;
CREATE INDEX token_families_organization ON token_families(organization_id);
ALTER TABLE consents ADD COLUMN organization_id TEXT;
