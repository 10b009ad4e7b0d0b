-- healthgate schema, version 10: a rotated client secret stays valid for a
-- grace period (client_secret_grace): the digest it replaced and until when
-- (epoch seconds) it is still accepted. Both NULL when there is none.
ALTER TABLE clients ADD COLUMN previous_secret_digest TEXT;
ALTER TABLE clients ADD COLUMN previous_secret_expires_at BIGINT;
CREATE INDEX clients_previous_secret ON clients(previous_secret_digest);
