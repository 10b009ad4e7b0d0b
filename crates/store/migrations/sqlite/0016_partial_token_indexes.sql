-- Indexes on columns that most token rows leave empty hold only the rows
-- that have a value: a client-credentials token (no refresh token, no
-- parent, no person, no organization) adds no entry to them. Lookups are
-- always by a value (`= $1`), which a partial index answers.
DROP INDEX access_tokens_refresh;
CREATE INDEX access_tokens_refresh ON access_tokens(refresh_digest) WHERE refresh_digest IS NOT NULL;
DROP INDEX access_tokens_parent;
CREATE INDEX access_tokens_parent ON access_tokens(parent_refresh_digest) WHERE parent_refresh_digest IS NOT NULL;
DROP INDEX refresh_tokens_parent;
CREATE INDEX refresh_tokens_parent ON refresh_tokens(parent_digest) WHERE parent_digest IS NOT NULL;
DROP INDEX token_families_user;
CREATE INDEX token_families_user ON token_families(user_id) WHERE user_id IS NOT NULL;
DROP INDEX token_families_organization;
CREATE INDEX token_families_organization ON token_families(organization_id) WHERE organization_id IS NOT NULL;
