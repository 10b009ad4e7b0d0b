-- healthgate schema, version 7: the web experience. Who registered an app in
-- the developer portal, apps an operator suspended, photos uploaded for apps,
-- operators (the admin console), and where a browser session started (the
-- account's sessions page).

ALTER TABLE clients ADD COLUMN owner_id TEXT REFERENCES users(id) ON DELETE SET NULL;
CREATE INDEX clients_owner ON clients(owner_id);
-- Set while an operator has suspended the app: it gets no codes or tokens.
ALTER TABLE clients ADD COLUMN suspended_at BIGINT;

-- A photo uploaded in the portal, served at /apps/{client_id}/photo.
CREATE TABLE client_photos (
    client_id       TEXT PRIMARY KEY REFERENCES clients(id) ON DELETE CASCADE,
    content_type    TEXT NOT NULL,          -- image/png | image/jpeg | image/gif | image/webp
    bytes           BLOB NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- 1 for the platform's operators, who may use the admin console.
ALTER TABLE users ADD COLUMN operator BIGINT NOT NULL DEFAULT 0;

ALTER TABLE sessions ADD COLUMN user_agent TEXT;
ALTER TABLE sessions ADD COLUMN ip TEXT;
