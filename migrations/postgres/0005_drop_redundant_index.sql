-- sends_claim (campaign_id, state, id) answers every lookup this index did; keeping both made
-- each change of a send's state update two indexes.
DROP INDEX IF EXISTS sends_campaign_state;
