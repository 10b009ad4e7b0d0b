-- healthgate schema, version 15: a version stamp on every client record
-- (issue 14, item 3).
--
-- Each node keeps the client records it has read in memory and checks,
-- within the request that used one, that the stamp it read is still the
-- stamp in the database (in the same transaction as a grant's write, or in
-- the query that reads the token an introspection asks about). The stamp is
-- a random number given on insert and on every update, by the trigger
-- below, whatever statement made the change: a client deleted and
-- registered again under the same id gets a new one too.
ALTER TABLE clients ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION clients_new_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := floor(random() * 9007199254740991)::bigint;
    RETURN NEW;
END
$$;

UPDATE clients SET version = floor(random() * 9007199254740991)::bigint;

CREATE TRIGGER clients_version BEFORE INSERT OR UPDATE ON clients
FOR EACH ROW EXECUTE FUNCTION clients_new_version();
