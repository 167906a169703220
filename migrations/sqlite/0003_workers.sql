-- Runs that are sending a campaign right now. A run registers itself, beats its heart while it
-- works and removes itself at the end; a `sending` row whose owner is gone (killed: its process
-- is dead or its heartbeat is stale) may be claimed again at once.
CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    campaign_id  BIGINT NOT NULL REFERENCES campaigns (id),
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);
CREATE INDEX workers_campaign ON workers (campaign_id);
CREATE INDEX sends_lease_owner ON sends (lease_owner);
