-- Bounce verification: a bounce counts toward flagging a contact only when it is proven to be
-- about one of our messages (its VERP token verifies, or its returned Message-ID is one of ours),
-- or it came from a trusted channel (a refusal seen at send time, an admin's CSV). Anything else
-- tied to a contact only by its address is kept as unverified, with why, and never flags anybody.
ALTER TABLE bounces ADD COLUMN verified INTEGER NOT NULL DEFAULT 1;
ALTER TABLE bounces ADD COLUMN unverified_reason TEXT;

-- Rows recorded before this migration: those tied by VERP token or Message-ID, and those from a
-- CSV or an SMTP refusal, stay verified; the rest (matched only by address, or by nothing) become
-- unverified. Flags already set are left as they are: an admin lifts them with `bounces resolve`.
UPDATE bounces SET verified = 0,
       unverified_reason = 'recorded before bounces were verified; matched only by address'
 WHERE matched_by NOT IN ('verp', 'message-id')
   AND source_id NOT IN (SELECT id FROM bounce_sources
                          WHERE source_key LIKE 'csv:%' OR source_key LIKE 'smtp:%');
