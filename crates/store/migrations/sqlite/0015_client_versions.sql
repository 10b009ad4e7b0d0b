-- healthgate schema, version 15: a version stamp on every client record
-- (issue 14, item 3).
--
-- Each node keeps the client records it has read in memory and checks,
-- within the request that used one, that the stamp it read is still the
-- stamp in the database (in the same transaction as a grant's write, or in
-- the query that reads the token an introspection asks about). The stamp is
-- a random number given on insert and on every update, by the triggers
-- below, whatever statement made the change: a client deleted and
-- registered again under the same id gets a new one too.
ALTER TABLE clients ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
UPDATE clients SET version = random();

CREATE TRIGGER clients_version_on_insert AFTER INSERT ON clients FOR EACH ROW
BEGIN
    UPDATE clients SET version = random() WHERE id = NEW.id;
END;

-- The WHEN clause keeps the trigger's own update from firing it again.
CREATE TRIGGER clients_version_on_update AFTER UPDATE ON clients FOR EACH ROW
WHEN NEW.version = OLD.version
BEGIN
    UPDATE clients SET version = random() WHERE id = NEW.id;
END;
