-- notify schema, PostgreSQL. Same tables and columns as migrations/sqlite so one code path
-- serves both: times are RFC 3339 UTC text (sortable), booleans are 0/1 BIGINT.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE contacts (
    id                   BIGSERIAL PRIMARY KEY,
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

CREATE TABLE campaigns (
    id         BIGSERIAL PRIMARY KEY,
    key        TEXT NOT NULL UNIQUE,
    notice     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE sends (
    id          BIGSERIAL PRIMARY KEY,
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
