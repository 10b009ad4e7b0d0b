-- healthgate schema, version 12: listing in the integration directory is
-- reviewed. An app asks to be listed ('requested'); one of the platform's
-- operators approves it ('approved', the only state the directory shows) or
-- rejects it with a reason the developer reads ('rejected'); 'none' is
-- neither listed nor asking (never asked, withdrawn by the developer, or
-- taken out by an operator, whose reason is then kept).
--   listing_requested_at  when the request waiting (or approved) was made
--   listing_reviewed_at   when an operator last approved, rejected or unlisted it
--   listing_reviewed_by   that operator's user id (NULL: the command line)
--   listing_reason        why it was rejected or taken out
--   listing_changes       the changed fields (name, scope, connect_url) that
--                         sent an approved app back for review
--
-- Upgrading keeps the directory as it was: an app already published is
-- approved, as of its last change and by nobody in particular (reviewed_by
-- NULL), so no app vanishes from practices' directories. `published` stays, written as "approved" by
-- this version, for nodes of the previous version during a rolling upgrade.
ALTER TABLE clients ADD COLUMN listing TEXT NOT NULL DEFAULT 'none';
ALTER TABLE clients ADD COLUMN listing_requested_at BIGINT;
ALTER TABLE clients ADD COLUMN listing_reviewed_at BIGINT;
ALTER TABLE clients ADD COLUMN listing_reviewed_by TEXT;
ALTER TABLE clients ADD COLUMN listing_reason TEXT;
ALTER TABLE clients ADD COLUMN listing_changes TEXT;
UPDATE clients SET listing = 'approved', listing_requested_at = updated_at, listing_reviewed_at = updated_at
WHERE published = 1;
CREATE INDEX clients_listing ON clients(listing);
