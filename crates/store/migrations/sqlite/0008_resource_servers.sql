-- healthgate schema, version 8: a client registered as a resource server may
-- introspect any token (RFC 7662 §2.1, §4); every other client only its own.
ALTER TABLE clients ADD COLUMN resource_server BIGINT NOT NULL DEFAULT 0;
