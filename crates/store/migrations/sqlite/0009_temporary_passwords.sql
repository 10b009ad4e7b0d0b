-- healthgate schema, version 9: a password an operator set for someone (a
-- reset) is temporary: when it was set, until the person chooses their own.
ALTER TABLE users ADD COLUMN password_reset_at BIGINT;
