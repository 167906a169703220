-- Bounce verification: a bounce counts toward flagging a contact only when it is proven to be
-- about one of our messages (its VERP token verifies, or its returned Message-ID is one of ours),
-- or it came from a trusted channel (a refusal seen at send time, an admin's CSV). Anything else
-- tied to a contact only by its address is kept as unverified, with why, and never flags anybody.
ALTER TABLE bounces ADD COLUMN verified INTEGER NOT NULL DEFAULT 1;
ALTER TABLE bounces ADD COLUMN unverified_reason TEXT;

-- Rows recorded before this migration: those tied by VERP token or Message-ID, and those from a
-- CSV or an SMTP refusal, stay verified; the rest (matched only by address, or by nothing) become
-- unverified.
UPDATE bounces SET verified = 0,
       unverified_reason = 'recorded before bounces were verified; matched only by address'
 WHERE matched_by NOT IN ('verp', 'message-id')
   AND source_id NOT IN (SELECT id FROM bounce_sources
                          WHERE source_key LIKE 'csv:%' OR source_key LIKE 'smtp:%');

-- A flag that no verified bounce supports any more (it was set by bounces matched only by
-- address, which anybody could have sent) is lifted, with an entry in the account's history; the
-- bounces stay, listed as unverified in the review. A genuine problem comes back as a verified
-- bounce on the next notice.
INSERT INTO account_events (contact_id, event, note, created_at)
SELECT c.id, 'unflagged',
       'flag lifted on upgrade: none of its bounces is verified (no valid VERP token, no Message-ID of ours)',
       strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
  FROM contacts c
 WHERE c.needs_update = 1
   AND NOT EXISTS (SELECT 1 FROM bounces b
                    WHERE b.contact_id = c.id AND b.verified = 1 AND b.occurred_at > c.counted_since);
UPDATE contacts SET needs_update = 0, flagged_at = NULL
 WHERE needs_update = 1
   AND NOT EXISTS (SELECT 1 FROM bounces b
                    WHERE b.contact_id = contacts.id AND b.verified = 1
                      AND b.occurred_at > contacts.counted_since);
