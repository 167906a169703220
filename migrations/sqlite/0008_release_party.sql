-- The release party: each notice belongs to a release, and a release's maintenance window is
-- recorded with every change (the calendar event's SEQUENCE), so that a reschedule or a cancel
-- reaches everyone who was warned, and the checklist and timeline can say what happened.

-- The release a notice is for (v3.12.0), and the times it announced: a maintenance-start notice's
-- start and expected end, a maintenance-end notice's end. NULL for notices recorded before.
ALTER TABLE campaigns ADD COLUMN release TEXT;
ALTER TABLE campaigns ADD COLUMN starts_at TEXT;
ALTER TABLE campaigns ADD COLUMN ends_at TEXT;
UPDATE campaigns SET release = substr(key, 15) WHERE notice = 'release-notes' AND key LIKE 'release-notes/v%';
CREATE INDEX campaigns_release ON campaigns (release, created_at);

-- Every version of a release's maintenance window: sequence 0 is the first warning, each move or
-- cancel adds the next. The latest version is the window as it stands.
CREATE TABLE maintenance_windows (
    release     TEXT NOT NULL,
    sequence    BIGINT NOT NULL,
    change      TEXT NOT NULL,
    start_at    TEXT NOT NULL,
    end_at      TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    campaign    TEXT NOT NULL,
    PRIMARY KEY (release, sequence)
);
