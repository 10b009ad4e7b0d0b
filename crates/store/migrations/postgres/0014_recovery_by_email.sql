-- healthgate schema, version 14: recovery by email (issue 13, item 4).
--
-- users.email_verified_at: when the person followed a verification link
-- sent to the address the account has now; NULL while it is unverified (a
-- new or changed address). Only a verified address is used for recovery and
-- security notices. Addresses are looked up without regard to case.
ALTER TABLE users ADD COLUMN email_verified_at BIGINT;
CREATE INDEX users_email_lower ON users(LOWER(email));

-- Single-use links sent by email: purpose 'verify_email' or
-- 'reset_password'. Only the SHA-256 digest of the link's secret is kept; a
-- link is bound to the address it was sent to, so it dies with a change of
-- address. consumed_at is set by one conditional UPDATE (zero rows: replay).
CREATE TABLE email_links (
    digest          TEXT PRIMARY KEY,
    purpose         TEXT NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    email           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    consumed_at     BIGINT
);
CREATE INDEX email_links_user ON email_links(user_id, purpose);
CREATE INDEX email_links_expiry ON email_links(expires_at);

-- "Forgot password" requests, as typed, waiting for the mail worker: the
-- request itself does the same work whether or not an account has the
-- address, and the worker looks the address up, mints the links and queues
-- the mail. A claimed request is deleted once handled.
CREATE TABLE password_reset_requests (
    id              TEXT PRIMARY KEY,
    email           TEXT NOT NULL,
    ip              TEXT,
    requested_at    BIGINT NOT NULL,
    locked_until    BIGINT
);
CREATE INDEX password_reset_requests_due ON password_reset_requests(requested_at);

-- Mail waiting to be sent, claimed by one node's worker at a time (a lease
-- in locked_until), retried with backoff until give_up_at. The body holds a
-- link's secret: it is blanked (NULL) once the message is sent or given up.
CREATE TABLE mail_outbox (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,              -- verification | reset | notice
    user_id         TEXT REFERENCES users(id) ON DELETE CASCADE,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT,
    status          TEXT NOT NULL,              -- pending | sent | failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    give_up_at      BIGINT NOT NULL,
    locked_until    BIGINT,
    sent_at         BIGINT,
    last_error      TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox(status, next_attempt_at);
CREATE INDEX mail_outbox_created ON mail_outbox(created_at);
