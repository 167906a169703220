-- notify schema, SQLite. Times are RFC 3339 UTC text (sortable); booleans are 0/1.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The users group as last imported from Moped's moped_users export. Rows are never deleted:
-- a row missing from the latest export has in_export = 0.
CREATE TABLE contacts (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id              BIGINT NOT NULL UNIQUE,
    email                TEXT NOT NULL,
    first_name           TEXT NOT NULL DEFAULT '',
    last_name            TEXT NOT NULL DEFAULT '',
    title                TEXT NOT NULL DEFAULT '',
    workgroup            TEXT NOT NULL DEFAULT '',
    roles                TEXT NOT NULL DEFAULT '[]',
    is_coa_staff         BIGINT NOT NULL DEFAULT 0,
    is_deleted           BIGINT NOT NULL DEFAULT 0,
    is_user_group_member BIGINT NOT NULL DEFAULT 0,
    note                 TEXT NOT NULL DEFAULT '',
    date_added           TEXT NOT NULL DEFAULT '',
    last_seen_date       TEXT NOT NULL DEFAULT '',
    in_export            BIGINT NOT NULL DEFAULT 1,
    needs_update         BIGINT NOT NULL DEFAULT 0,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE INDEX contacts_email ON contacts (email);

-- One row per notice (release-notes/v3.12.0, maintenance-start/2026-12-03, ...).
CREATE TABLE campaigns (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    key        TEXT NOT NULL UNIQUE,
    notice     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- The journal: one row per (campaign, contact). state is one of
-- pending, sending (claimed by a worker until lease_until), written (in the outbox),
-- sent (accepted by the SMTP server), failed (refused with 5xx), deferred (4xx / no connection).
CREATE TABLE sends (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id),
    contact_id  BIGINT NOT NULL REFERENCES contacts (id),
    email       TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',
    message_id  TEXT,
    attempts    BIGINT NOT NULL DEFAULT 0,
    last_error  TEXT,
    lease_owner TEXT,
    lease_until TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    written_at  TEXT,
    sent_at     TEXT,
    UNIQUE (campaign_id, contact_id)
);
CREATE INDEX sends_campaign_state ON sends (campaign_id, state);
CREATE INDEX sends_message_id ON sends (message_id);
