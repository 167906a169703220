//! What notify knows about one release's party, as plain values: the maintenance window and its
//! changes, the notices sent for the release, the maintenance's actual start and end, and the
//! staff accounts flagged since the previous release. Gathered by the party service
//! ([`crate::party`]) from the store; read by the pure renderers (`checklist`, `timeline`).
//! Plain types with no behaviour beyond a few accessors: a foundation, so that the store (which
//! reads and writes window versions) and `notice` (which names a window's change) can use them
//! without importing the service. `crate::party::facts` is the same module.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How one version of the maintenance window came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowChange {
    /// The first warning (SEQUENCE 0).
    Scheduled,
    /// The window moved: an update to everyone warned (same UID, higher SEQUENCE).
    Moved,
    /// Called off: METHOD:CANCEL to everyone warned.
    Cancelled,
}

impl WindowChange {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowChange::Scheduled => "scheduled",
            WindowChange::Moved => "moved",
            WindowChange::Cancelled => "cancelled",
        }
    }
}

/// One version of a release's maintenance window, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowVersion {
    /// The calendar SEQUENCE: 0 for the first warning, then 1, 2, ...
    pub sequence: u32,
    pub change: WindowChange,
    /// The window's times (for a cancel: the times of the window called off).
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// When this version was recorded (the event's DTSTAMP).
    pub recorded_at: DateTime<Utc>,
    /// The campaign key of the notice that carries it.
    pub campaign: String,
}

/// One notice sent (or being sent) for the release, with its journal counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoticeFacts {
    /// Campaign key, e.g. `maintenance-start/v3.12.0/2026-12-03`.
    pub campaign: String,
    /// Template name: `maintenance-scheduled`, `maintenance-start`, `maintenance-end`,
    /// `release-notes`.
    pub notice: String,
    pub subject: String,
    /// When the campaign was created (the first run of the command).
    pub created_at: DateTime<Utc>,
    /// First and last message accepted by the server or written to the outbox.
    pub first_at: Option<DateTime<Utc>>,
    pub last_at: Option<DateTime<Utc>>,
    pub sent: i64,
    pub written: i64,
    pub failed: i64,
    pub deferred: i64,
    /// Not yet tried, or claimed by a run at work.
    pub pending: i64,
    /// Bounces tied to this notice (verified ones: counted toward a flag).
    pub bounces: i64,
}

impl NoticeFacts {
    /// Messages that reached the server or the outbox.
    pub fn delivered(&self) -> i64 {
        self.sent + self.written
    }
}

/// A staff account flagged by a bounce since the previous release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlaggedAccount {
    pub email: String,
    pub name: String,
    pub user_id: i64,
    /// Reason of the bounce that decided the flag (`userunknown`, `mailboxfull`, ...).
    pub reason: String,
    /// What the admin should do: one of the four actions of the review (`deactivate in Moped`,
    /// `fix the address in Moped`, `ask IT to let our mail through`, `wait`).
    pub action: String,
    /// When the latest counted bounce was seen.
    pub last_bounce_at: String,
    /// Still flagged (`false`: an admin resolved it).
    pub open: bool,
}

/// Everything the checklist and the timeline say about one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseFacts {
    /// Canonical version, `v3.12.0`.
    pub version: String,
    /// The voted name from the notes' front matter, when there are notes and they name it.
    pub name: Option<String>,
    /// The notes file, when there is one.
    pub notes_file: Option<String>,
    /// The release before it (from the notes files), for "since the previous release".
    pub previous: Option<String>,
    /// The version the editor's package.json is bumped to after this release (next minor).
    pub next_version: String,
    /// Every version of the maintenance window, oldest first.
    pub window: Vec<WindowVersion>,
    /// The notices of this release, in the order they were first run.
    pub notices: Vec<NoticeFacts>,
    /// When maintenance actually started and ended (from the start and end notices).
    pub maintenance_started: Option<DateTime<Utc>>,
    pub maintenance_ended: Option<DateTime<Utc>>,
    /// Staff accounts flagged by bounces since the previous release's notes went out.
    pub flagged: Vec<FlaggedAccount>,
}

impl ReleaseFacts {
    /// `v3.12.0 Goliad`, or `v3.12.0` without a name.
    pub fn title(&self) -> String {
        match &self.name {
            Some(n) if !n.is_empty() => format!("{} {n}", self.version),
            _ => self.version.clone(),
        }
    }

    /// The window as it stands (the latest version), if one was ever scheduled.
    pub fn current_window(&self) -> Option<&WindowVersion> {
        self.window.last()
    }

    /// The notices made from template `notice`, oldest first.
    pub fn notices_of<'a>(&'a self, notice: &'a str) -> impl Iterator<Item = &'a NoticeFacts> {
        self.notices.iter().filter(move |n| n.notice == notice)
    }
}
