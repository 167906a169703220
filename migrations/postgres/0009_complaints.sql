-- Complaints: Amazon SES reports (over SNS) that a recipient marked a notice as spam. Kept for the
-- review beside the bounces, never counted toward a flag. The signed SNS message is kept as a
-- bounce source (key `sns:<MessageId>`), so the same message delivered twice is stored once.
-- PostgreSQL; migrations/sqlite/0009 has the same table.
CREATE TABLE complaints (
    id            BIGSERIAL PRIMARY KEY,
    source_id     BIGINT NOT NULL REFERENCES bounce_sources (id),
    address       TEXT NOT NULL,
    feedback_type TEXT,
    contact_id    BIGINT REFERENCES contacts (id),
    send_id       BIGINT REFERENCES sends (id),
    campaign_id   BIGINT REFERENCES campaigns (id),
    matched_by    TEXT NOT NULL,
    occurred_at   TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    UNIQUE (source_id, address)
);
CREATE INDEX complaints_contact ON complaints (contact_id, occurred_at);
CREATE INDEX complaints_occurred ON complaints (occurred_at);
