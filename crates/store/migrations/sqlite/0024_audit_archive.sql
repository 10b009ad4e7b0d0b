-- healthgate schema, version 24: an audit trail that lives for years.
--
-- `healthgate audit archive` writes sealed events up to a chain position to
-- a compressed segment file, then deletes them from `events`; each archive
-- leaves a checkpoint here, so the chain in the database continues from the
-- last one (its first row links to the checkpoint's hash) and `audit verify`
-- can check the segments and the links between them.
CREATE TABLE audit_checkpoints (
    through_pos BIGINT PRIMARY KEY,
    hash        TEXT NOT NULL,
    first_pos   BIGINT NOT NULL,
    prev_hash   TEXT NOT NULL,
    events      BIGINT NOT NULL,
    segment     TEXT NOT NULL,
    at          BIGINT NOT NULL
);

-- The console's audit filters, newest first: one index per filter, each
-- ending in seq so a page is read from the index in order. Partial where the
-- column is often empty, so token issues without a person or organization
-- do not grow them.
CREATE INDEX events_kind ON events(kind, seq);
CREATE INDEX events_actor ON events(actor_user_id, seq) WHERE actor_user_id IS NOT NULL;
CREATE INDEX events_subject ON events(subject, seq) WHERE subject IS NOT NULL;
CREATE INDEX events_organization ON events(organization_id, seq) WHERE organization_id IS NOT NULL;
DROP INDEX events_client;
CREATE INDEX events_client ON events(client_id, seq) WHERE client_id IS NOT NULL;
