-- Only claimed sends are looked up by the run holding them (heartbeat, giving claims back), so
-- only they are indexed by it; a delivered send keeps the run that sent it without being
-- indexed, and recording a delivery no longer rewrites this index.
DROP INDEX IF EXISTS sends_lease_owner;
CREATE INDEX sends_lease_owner ON sends (lease_owner) WHERE state = 'sending';
