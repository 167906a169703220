-- Bounces: every message (or SES notification, CSV row, SMTP refusal) that said a delivery failed,
-- kept with its raw source, tied to the contact and notice when possible, plus the history of
-- account flags. SQLite; migrations/postgres/0002 has the same tables.

-- One row per distinct input (a message, an SES notification, a CSV row, a 5xx at send time).
-- source_key (a hash of the raw bytes, or the SES feedback id) makes a second import a no-op.
CREATE TABLE bounce_sources (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    source_key TEXT NOT NULL UNIQUE,
    origin     TEXT NOT NULL,
    raw        BLOB NOT NULL,
    created_at TEXT NOT NULL
);

-- One row per bounced address in a source.
CREATE TABLE bounces (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id   BIGINT NOT NULL REFERENCES bounce_sources (id),
    address     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    status      TEXT,
    reason      TEXT NOT NULL,
    diagnostic  TEXT,
    remote_mta  TEXT,
    contact_id  BIGINT REFERENCES contacts (id),
    send_id     BIGINT REFERENCES sends (id),
    campaign_id BIGINT REFERENCES campaigns (id),
    matched_by  TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (source_id, address)
);
CREATE INDEX bounces_contact ON bounces (contact_id, occurred_at);
CREATE INDEX bounces_address ON bounces (address);

-- What happened to an account's flag: flagged (by policy), resolved (by an admin), address-changed
-- (the export gave a new address). The latest resolution is where bounce counting starts again.
CREATE TABLE account_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id BIGINT NOT NULL REFERENCES contacts (id),
    event      TEXT NOT NULL,
    note       TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE INDEX account_events_contact ON account_events (contact_id, created_at);

ALTER TABLE contacts ADD COLUMN flagged_at TEXT;
ALTER TABLE contacts ADD COLUMN counted_since TEXT NOT NULL DEFAULT '';
