-- A delay warning is a flag, not a reason (issue 14): its reason says why it is delayed, in
-- sisimai's vocabulary (`expired` when it says no more), and `delayed` says that it is only a
-- warning. SQLite; migrations/postgres/0011 does the same. Rows stored as the reason `delayed`
-- become `expired` and delayed; they were soft, and stay soft.
ALTER TABLE bounces ADD COLUMN delayed INTEGER NOT NULL DEFAULT 0;
UPDATE bounces SET delayed = 1, reason = 'expired', kind = 'soft' WHERE reason = 'delayed';
