-- Claiming the next send seeks (campaign, state) in id order.
CREATE INDEX sends_claim ON sends (campaign_id, state, id);
