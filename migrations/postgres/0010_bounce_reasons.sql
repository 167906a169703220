-- Bounce reasons in sisimai's vocabulary (issue 14). PostgreSQL; migrations/sqlite/0010 does
-- the same. Four steps, in this order:
--
-- 1. The names earlier versions stored become today's (src/bounce/reason.rs, OLD_NAMES); a
--    `user-unknown` whose status is 5.1.6 ("mailbox has moved") becomes `hasmoved`, which is
--    what it was. `delayed` and `expired` keep their names.
UPDATE bounces SET reason = CASE reason
        WHEN 'user-unknown' THEN CASE WHEN status = '5.1.6' THEN 'hasmoved' ELSE 'userunknown' END
        WHEN 'mailbox-full' THEN 'mailboxfull'
        WHEN 'host-unknown' THEN 'hostunknown'
        WHEN 'policy' THEN 'policyviolation'
        WHEN 'message-too-large' THEN 'mesgtoobig'
        ELSE 'undefined'
    END
 WHERE reason IN ('user-unknown', 'mailbox-full', 'host-unknown', 'policy', 'message-too-large', 'other');

-- 2. `permanent`: the remote gave up for good (5xx). Old rows: from the stored status (class 5),
--    else from the reply code the diagnostic opens with, else (no code at all: an admin's CSV
--    row, an SES notification) from the old kind, which was hard exactly when the source said
--    permanent.
ALTER TABLE bounces ADD COLUMN permanent BIGINT NOT NULL DEFAULT 0;
UPDATE bounces SET permanent = CASE
        WHEN status LIKE '5.%' THEN 1
        WHEN status LIKE '_.%' THEN 0
        WHEN diagnostic ~ '^5[0-9]{2}([^0-9]|$)' THEN 1
        WHEN diagnostic ~ '^[1-4][0-9]{2}([^0-9]|$)' THEN 0
        WHEN kind = 'hard' AND reason <> 'delayed' THEN 1
        ELSE 0
    END;

-- 3. `kind` by today's rule: hard exactly when the address itself is gone or wrong (an unknown
--    user, an unknown domain, a moved mailbox, a host that permanently takes no mail). Old hard
--    bounces of any other reason (expired, undefined, a policy refusal...) become soft. No soft
--    bounce becomes hard: an admin's CSV may have said soft on purpose.
UPDATE bounces SET kind = 'soft'
 WHERE kind = 'hard'
   AND reason NOT IN ('userunknown', 'hostunknown', 'hasmoved')
   AND NOT (reason = 'notaccept' AND permanent = 1);

-- 4. Flags that no counted bounce supports any more are lifted, with an `unflagged` entry in the
--    account's history, as the ledger would never have set them: a flag set at once by a hard
--    bounce when no counted (verified, since the last resolution) bounce of the contact is hard
--    now, and a flag set by the repeated-soft rule when every counted bounce was a delay warning
--    (which no longer counts). counted_since is left as it is: the contact's soft bounces keep
--    counting toward the repeated-soft rule, which the ledger applies again when the next
--    bounce of the contact comes in.
CREATE TEMPORARY TABLE lifted_on_upgrade AS
SELECT c.id AS contact_id,
       CASE WHEN e.note LIKE 'hard bounce%'
            THEN 'flag lifted on upgrade: its bounces are no longer hard (only an unknown user or domain, a moved mailbox or a host that takes no mail is hard now); its soft bounces still count toward the repeated-soft rule'
            ELSE 'flag lifted on upgrade: delay warnings no longer count toward the repeated-soft rule'
       END AS note
  FROM contacts c
  JOIN account_events e ON e.id = (SELECT e2.id FROM account_events e2
                                     WHERE e2.contact_id = c.id AND e2.event = 'flagged'
                                     ORDER BY e2.created_at DESC, e2.id DESC LIMIT 1)
 WHERE c.needs_update = 1
   AND ((e.note LIKE 'hard bounce%'
         AND NOT EXISTS (SELECT 1 FROM bounces b
                          WHERE b.contact_id = c.id AND b.verified = 1 AND b.kind = 'hard'
                            AND b.occurred_at > c.counted_since))
     OR (e.note LIKE 'soft bounces%'
         AND NOT EXISTS (SELECT 1 FROM bounces b
                          WHERE b.contact_id = c.id AND b.verified = 1 AND b.reason <> 'delayed'
                            AND b.occurred_at > c.counted_since)));
INSERT INTO account_events (contact_id, event, note, created_at)
SELECT contact_id, 'unflagged', note, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') FROM lifted_on_upgrade;
UPDATE contacts SET needs_update = 0, flagged_at = NULL
 WHERE id IN (SELECT contact_id FROM lifted_on_upgrade);
DROP TABLE lifted_on_upgrade;
