-- healthgate schema, version 11: failure runs that must hold across nodes
-- (healthgate_core::throttle). kind 'sign_in': failed sign-ins for a
-- username as typed, whether or not it has an account; kind 'client':
-- failed client authentications and invalid_grant answers for a client id
-- as presented. A run whose last failure is old enough starts again;
-- blocked_until (epoch seconds) refuses the subject until then.
CREATE TABLE throttles (
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    failures BIGINT NOT NULL,
    first_failure_at BIGINT NOT NULL,
    last_failure_at BIGINT NOT NULL,
    blocked_until BIGINT,
    PRIMARY KEY (kind, subject)
);
CREATE INDEX throttles_blocked ON throttles(kind, blocked_until);
