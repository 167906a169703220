//! The release timeline (`notify release status VERSION [--format json]`): what happened in one
//! release's party, read from its [`ReleaseFacts`]. Pure: no I/O, no clock; times are printed in
//! the time zone the caller passes. It also owns the small time and count wordings the checklist
//! ([`super::checklist`]) shares with it, so both say a time, a window and a duration alike.
//!
//! [`text()`] is for a person: the release title; the maintenance window as it stands and each of
//! its versions (scheduled, moved, cancelled) with when it was recorded and its campaign; each
//! notice in order with when it started and ended (or when it was created, when nothing went
//! yet), its counts and the bounces it drew; the maintenance's actual start, end and duration; how
//! many accounts are flagged. Every text value from the facts goes through [`inert::line`], so a
//! subject or a campaign key cannot add a line or reach the terminal as an escape.
//!
//! [`json()`] is for a script; its shape is stable (keys are always present, `null` where unknown):
//!
//! ```text
//! {
//!   "version": "v3.12.0",
//!   "name": "Goliad" | null,
//!   "window": {
//!     "current": { "start", "end", "status", "sequence" } | null,
//!     "history": [ { "sequence", "change", "start", "end", "recorded_at", "campaign" } ]
//!   },
//!   "notices": [ { "campaign", "notice", "subject", "created_at", "first_at", "last_at",
//!                  "sent", "written", "failed", "deferred", "pending", "bounces" } ],
//!   "maintenance": { "started", "ended", "minutes" },
//!   "flagged": [ { "email", "name", "user_id", "reason", "action", "last_bounce_at", "open" } ]
//! }
//! ```
//!
//! * Times are RFC 3339 in UTC to the second (`2026-12-03T23:00:00Z`); `first_at`, `last_at`,
//!   `started` and `ended` are `null` until they happened. `last_bounce_at` is passed through as
//!   the store wrote it.
//! * `status` and `change` are `scheduled`, `moved` or `cancelled`; `status` is the change of the
//!   latest version (a cancelled window stays in `current`, with its times, as `cancelled`).
//!   `history` is oldest first; `notices` in the order they were first run.
//! * Counts are integers. `minutes` is whole minutes from `started` to `ended`, `null` unless both
//!   are known and the end is not before the start.
//! * Strings hold the recorded text unchanged (a script gets the real data); print the value with
//!   [`crate::review::json_text`], which escapes what a terminal would act on.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use super::facts::{NoticeFacts, ReleaseFacts, WindowChange, WindowVersion};
use crate::inert;

/// The timeline as lines of text for a terminal, times in `tz`, ending with a newline.
pub fn text(facts: &ReleaseFacts, tz: Tz) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Release {}", inert::line(&facts.title()));

    match facts.current_window() {
        None => out.push_str("Window: none scheduled\n"),
        Some(w) => {
            let _ = writeln!(
                out,
                "Window: {}, {} (sequence {})",
                window_range(w.start, w.end, tz),
                w.change.as_str(),
                w.sequence
            );
            for v in &facts.window {
                let _ = writeln!(
                    out,
                    "  {:<9}  {}  recorded {}  sequence {}  {}",
                    v.change.as_str(),
                    window_range(v.start, v.end, tz),
                    when(v.recorded_at, tz),
                    v.sequence,
                    inert::line(&v.campaign)
                );
            }
        }
    }

    if facts.notices.is_empty() {
        out.push_str("Notices: none yet\n");
    } else {
        out.push_str("Notices:\n");
        for n in &facts.notices {
            let _ = writeln!(
                out,
                "  {}  {}  \"{}\"",
                inert::line(&n.campaign),
                inert::line(&n.notice),
                inert::line(&n.subject)
            );
            let span = match (n.first_at, n.last_at) {
                (Some(first), Some(last)) => {
                    format!("started {}, last {}", when(first, tz), when(last, tz))
                }
                (Some(first), None) => format!("started {}", when(first, tz)),
                // Nothing accepted or written yet: when the campaign was made is all there is.
                _ => format!("created {}, nothing sent yet", when(n.created_at, tz)),
            };
            let _ = writeln!(out, "    {span}");
            let _ = writeln!(
                out,
                "    sent {}, written {}, failed {}, deferred {}, pending {}, bounces {}",
                n.sent, n.written, n.failed, n.deferred, n.pending, n.bounces
            );
        }
    }

    let started = facts
        .maintenance_started
        .map_or_else(|| "not yet".to_string(), |t| when(t, tz));
    let ended = facts
        .maintenance_ended
        .map_or_else(|| "not yet".to_string(), |t| when(t, tz));
    let _ = write!(out, "Maintenance: started {started}, ended {ended}");
    if let Some(m) = maintenance_minutes(facts) {
        let _ = write!(out, ", took {}", took(m));
    }
    out.push('\n');

    let open = facts.flagged.iter().filter(|a| a.open).count();
    let _ = writeln!(
        out,
        "Flagged accounts: {} ({} open)",
        facts.flagged.len(),
        open
    );
    out
}

/// The timeline as a JSON value of the stable shape the module comment documents.
pub fn json(facts: &ReleaseFacts) -> Value {
    let current = facts.current_window().map(|w| {
        json!({
            "start": rfc3339(w.start),
            "end": rfc3339(w.end),
            "status": w.change.as_str(),
            "sequence": w.sequence,
        })
    });
    let history: Vec<Value> = facts.window.iter().map(window_version).collect();
    let notices: Vec<Value> = facts.notices.iter().map(notice).collect();
    let flagged: Vec<Value> = facts
        .flagged
        .iter()
        .map(|a| {
            json!({
                "email": a.email,
                "name": a.name,
                "user_id": a.user_id,
                "reason": a.reason,
                "action": a.action,
                "last_bounce_at": a.last_bounce_at,
                "open": a.open,
            })
        })
        .collect();
    json!({
        "version": facts.version,
        "name": facts.name,
        "window": { "current": current, "history": history },
        "notices": notices,
        "maintenance": {
            "started": facts.maintenance_started.map(rfc3339),
            "ended": facts.maintenance_ended.map(rfc3339),
            "minutes": maintenance_minutes(facts),
        },
        "flagged": flagged,
    })
}

fn window_version(v: &WindowVersion) -> Value {
    json!({
        "sequence": v.sequence,
        "change": v.change.as_str(),
        "start": rfc3339(v.start),
        "end": rfc3339(v.end),
        "recorded_at": rfc3339(v.recorded_at),
        "campaign": v.campaign,
    })
}

fn notice(n: &NoticeFacts) -> Value {
    json!({
        "campaign": n.campaign,
        "notice": n.notice,
        "subject": n.subject,
        "created_at": rfc3339(n.created_at),
        "first_at": n.first_at.map(rfc3339),
        "last_at": n.last_at.map(rfc3339),
        "sent": n.sent,
        "written": n.written,
        "failed": n.failed,
        "deferred": n.deferred,
        "pending": n.pending,
        "bounces": n.bounces,
    })
}

/// `2026-12-03T23:00:00Z`
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A moment in `tz` as the checklist and the timeline print it: `Thu Dec 3, 5:12 PM CST`.
pub(crate) fn when(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%a %b %-d, %-I:%M %p %Z")
        .to_string()
}

/// A window in `tz`: `Thu Dec 3, 5:00 PM–7:00 PM CST` within one day there, else both ends in
/// full (`Thu Dec 3, 11:00 PM CST – Fri Dec 4, 1:00 AM CST`).
pub(crate) fn window_range(start: DateTime<Utc>, end: DateTime<Utc>, tz: Tz) -> String {
    let (s, e) = (start.with_timezone(&tz), end.with_timezone(&tz));
    let same_zone_name = s.format("%Z").to_string() == e.format("%Z").to_string();
    if s.date_naive() == e.date_naive() && same_zone_name {
        format!(
            "{}–{}",
            s.format("%a %b %-d, %-I:%M %p"),
            e.format("%-I:%M %p %Z")
        )
    } else {
        format!("{} – {}", when(start, tz), when(end, tz))
    }
}

/// Whole minutes the maintenance took, when its start and end are known and in order.
pub(crate) fn maintenance_minutes(facts: &ReleaseFacts) -> Option<i64> {
    let (start, end) = (facts.maintenance_started?, facts.maintenance_ended?);
    let minutes = (end - start).num_minutes();
    (minutes >= 0).then_some(minutes)
}

/// `47 min`, `2 h`, `1 h 47 min`.
pub(crate) fn took(minutes: i64) -> String {
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// Whether a window version called the window off.
pub(crate) fn is_cancel(v: &WindowVersion) -> bool {
    v.change == WindowChange::Cancelled
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::party::facts::FlaggedAccount;
    use chrono::TimeZone;
    use chrono_tz::America::Chicago;

    pub(crate) fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    /// A release with a version and nothing else.
    pub(crate) fn empty() -> ReleaseFacts {
        ReleaseFacts {
            version: "v3.12.0".into(),
            name: None,
            notes_file: None,
            previous: None,
            next_version: "v3.13.0".into(),
            window: vec![],
            notices: vec![],
            maintenance_started: None,
            maintenance_ended: None,
            flagged: vec![],
        }
    }

    pub(crate) fn notice(
        campaign: &str,
        kind: &str,
        created: DateTime<Utc>,
        sent: i64,
        failed: i64,
    ) -> NoticeFacts {
        NoticeFacts {
            campaign: campaign.into(),
            notice: kind.into(),
            subject: format!("Subject of {campaign}"),
            created_at: created,
            first_at: (sent > 0).then_some(created + chrono::Duration::minutes(1)),
            last_at: (sent > 0).then_some(created + chrono::Duration::minutes(9)),
            sent,
            written: 0,
            failed,
            deferred: 0,
            pending: 0,
            bounces: 0,
        }
    }

    /// A release that went through the whole party: warned, moved, started, ended, notes sent,
    /// one account flagged and still open, one resolved.
    pub(crate) fn whole_party() -> ReleaseFacts {
        let mut notes = notice(
            "release-notes/v3.12.0",
            "release-notes",
            utc(2026, 12, 4, 15, 0),
            180,
            2,
        );
        notes.bounces = 2;
        ReleaseFacts {
            name: Some("Goliad".into()),
            notes_file: Some("releases/v3.12.0.md".into()),
            previous: Some("v3.11.0".into()),
            window: vec![
                WindowVersion {
                    sequence: 0,
                    change: WindowChange::Scheduled,
                    start: utc(2026, 12, 3, 23, 0),
                    end: utc(2026, 12, 4, 1, 0),
                    recorded_at: utc(2026, 11, 26, 15, 0),
                    campaign: "maintenance-scheduled/v3.12.0".into(),
                },
                WindowVersion {
                    sequence: 1,
                    change: WindowChange::Moved,
                    start: utc(2026, 12, 4, 0, 0),
                    end: utc(2026, 12, 4, 2, 0),
                    recorded_at: utc(2026, 11, 30, 16, 0),
                    campaign: "maintenance-moved/v3.12.0/1".into(),
                },
            ],
            notices: vec![
                notice(
                    "maintenance-scheduled/v3.12.0",
                    "maintenance-scheduled",
                    utc(2026, 11, 26, 15, 0),
                    212,
                    1,
                ),
                notice(
                    "maintenance-moved/v3.12.0/1",
                    "maintenance-moved",
                    utc(2026, 11, 30, 16, 0),
                    211,
                    0,
                ),
                notice(
                    "maintenance-start/v3.12.0/2026-12-04",
                    "maintenance-start",
                    utc(2026, 12, 4, 0, 2),
                    212,
                    0,
                ),
                notice(
                    "maintenance-end/v3.12.0/2026-12-04",
                    "maintenance-end",
                    utc(2026, 12, 4, 1, 49),
                    212,
                    0,
                ),
                notes,
            ],
            maintenance_started: Some(utc(2026, 12, 4, 0, 3)),
            maintenance_ended: Some(utc(2026, 12, 4, 1, 50)),
            flagged: vec![
                FlaggedAccount {
                    email: "jane.doe@austintexas.gov".into(),
                    name: "Jane Doe".into(),
                    user_id: 41,
                    reason: "userunknown".into(),
                    action: "deactivate in Moped".into(),
                    last_bounce_at: "2026-12-04T15:20:00Z".into(),
                    open: true,
                },
                FlaggedAccount {
                    email: "sam.o'brien@austintexas.gov".into(),
                    name: "Sam O'Brien".into(),
                    user_id: 77,
                    reason: "mailboxfull".into(),
                    action: "wait".into(),
                    last_bounce_at: "2026-12-04T15:25:00Z".into(),
                    open: false,
                },
            ],
            ..empty()
        }
    }

    #[test]
    fn times_windows_and_durations_read_as_a_person_says_them() {
        assert_eq!(
            when(utc(2026, 12, 3, 23, 12), Chicago),
            "Thu Dec 3, 5:12 PM CST"
        );
        assert_eq!(
            window_range(utc(2026, 12, 3, 23, 0), utc(2026, 12, 4, 1, 0), Chicago),
            "Thu Dec 3, 5:00 PM–7:00 PM CST"
        );
        assert_eq!(
            window_range(utc(2026, 12, 4, 5, 0), utc(2026, 12, 4, 7, 0), Chicago),
            "Thu Dec 3, 11:00 PM CST – Fri Dec 4, 1:00 AM CST"
        );
        // Across the change back from daylight time: both ends carry their own zone name.
        assert_eq!(
            window_range(utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7, 30), Chicago),
            "Sun Nov 1, 1:30 AM CDT – Sun Nov 1, 1:30 AM CST"
        );
        assert_eq!(took(47), "47 min");
        assert_eq!(took(120), "2 h");
        assert_eq!(took(107), "1 h 47 min");
    }

    #[test]
    fn text_shows_the_window_its_versions_each_notice_and_the_maintenance() {
        let t = text(&whole_party(), Chicago);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Release v3.12.0 Goliad");
        assert_eq!(
            lines[1],
            "Window: Thu Dec 3, 6:00 PM–8:00 PM CST, moved (sequence 1)"
        );
        assert!(lines[2].starts_with("  scheduled  Thu Dec 3, 5:00 PM–7:00 PM CST  recorded Thu Nov 26, 9:00 AM CST  sequence 0  maintenance-scheduled/v3.12.0"), "{}", lines[2]);
        assert!(lines[3].starts_with("  moved      Thu Dec 3, 6:00 PM–8:00 PM CST  recorded Mon Nov 30, 10:00 AM CST  sequence 1"), "{}", lines[3]);
        assert_eq!(lines[4], "Notices:");
        assert_eq!(
            lines[5],
            "  maintenance-scheduled/v3.12.0  maintenance-scheduled  \"Subject of maintenance-scheduled/v3.12.0\""
        );
        assert_eq!(
            lines[6],
            "    started Thu Nov 26, 9:01 AM CST, last Thu Nov 26, 9:09 AM CST"
        );
        assert_eq!(
            lines[7],
            "    sent 212, written 0, failed 1, deferred 0, pending 0, bounces 0"
        );
        // Notices in the order they were run, the release notes last with the bounces drawn.
        let order: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with("  ") && !l.starts_with("    ") && l.contains('"'))
            .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
            .collect();
        assert_eq!(
            order,
            [
                "maintenance-scheduled",
                "maintenance-moved",
                "maintenance-start",
                "maintenance-end",
                "release-notes"
            ]
        );
        assert!(t.contains("    sent 180, written 0, failed 2, deferred 0, pending 0, bounces 2\n"));
        assert!(t.contains(
            "Maintenance: started Thu Dec 3, 6:03 PM CST, ended Thu Dec 3, 7:50 PM CST, took 1 h 47 min\n"
        ));
        assert!(t.ends_with("Flagged accounts: 2 (1 open)\n"));
    }

    #[test]
    fn text_for_a_release_with_nothing_yet_says_so() {
        let mut f = empty();
        f.notices.push(NoticeFacts {
            pending: 200,
            ..notice(
                "maintenance-start/v3.12.0/2026-12-04",
                "maintenance-start",
                utc(2026, 12, 4, 0, 2),
                0,
                0,
            )
        });
        assert_eq!(
            text(&f, Chicago),
            "Release v3.12.0\n\
             Window: none scheduled\n\
             Notices:\n  \
             maintenance-start/v3.12.0/2026-12-04  maintenance-start  \"Subject of maintenance-start/v3.12.0/2026-12-04\"\n    \
             created Thu Dec 3, 6:02 PM CST, nothing sent yet\n    \
             sent 0, written 0, failed 0, deferred 0, pending 200, bounces 0\n\
             Maintenance: started not yet, ended not yet\n\
             Flagged accounts: 0 (0 open)\n"
        );
        assert!(text(&empty(), Chicago).contains("Notices: none yet\n"));
    }

    #[test]
    fn text_values_cannot_add_lines_or_escapes() {
        let mut f = whole_party();
        f.name = Some("Goliad\nWindow: forged\x1b[2J".into());
        f.notices[0].subject = "ok\r\nsent 9999\u{202e}".into();
        f.window[0].campaign = "c\nNotices:".into();
        let t = text(&f, Chicago);
        assert!(!t.contains('\x1b') && !t.contains('\r') && !t.contains('\u{202e}'));
        assert_eq!(t.lines().filter(|l| l.starts_with("Window:")).count(), 1);
        assert_eq!(t.lines().filter(|l| *l == "Notices:").count(), 1);
        assert!(t.starts_with("Release v3.12.0 Goliad\\x0aWindow: forged\\x1b[2J\n"));
        assert!(t.contains("\"ok\\x0d\\x0asent 9999\\u{202e}\""));
    }

    #[test]
    fn a_cancelled_window_stays_current_as_cancelled() {
        let mut f = whole_party();
        f.window.push(WindowVersion {
            sequence: 2,
            change: WindowChange::Cancelled,
            recorded_at: utc(2026, 12, 1, 14, 0),
            campaign: "maintenance-cancelled/v3.12.0/2".into(),
            ..f.window[1].clone()
        });
        assert!(is_cancel(&f.window[2]));
        assert!(text(&f, Chicago)
            .contains("Window: Thu Dec 3, 6:00 PM–8:00 PM CST, cancelled (sequence 2)\n"));
        let j = json(&f);
        assert_eq!(j["window"]["current"]["status"], "cancelled");
        assert_eq!(j["window"]["current"]["sequence"], 2);
        assert_eq!(j["window"]["history"][2]["change"], "cancelled");
    }

    #[test]
    fn json_has_the_documented_shape_with_utc_times() {
        let j = json(&whole_party());
        assert_eq!(j["version"], "v3.12.0");
        assert_eq!(j["name"], "Goliad");
        assert_eq!(
            j["window"]["current"],
            json!({"start": "2026-12-04T00:00:00Z", "end": "2026-12-04T02:00:00Z",
                   "status": "moved", "sequence": 1})
        );
        assert_eq!(
            j["window"]["history"][0],
            json!({"sequence": 0, "change": "scheduled", "start": "2026-12-03T23:00:00Z",
                   "end": "2026-12-04T01:00:00Z", "recorded_at": "2026-11-26T15:00:00Z",
                   "campaign": "maintenance-scheduled/v3.12.0"})
        );
        assert_eq!(j["notices"].as_array().map(Vec::len), Some(5));
        assert_eq!(
            j["notices"][4],
            json!({"campaign": "release-notes/v3.12.0", "notice": "release-notes",
                   "subject": "Subject of release-notes/v3.12.0",
                   "created_at": "2026-12-04T15:00:00Z", "first_at": "2026-12-04T15:01:00Z",
                   "last_at": "2026-12-04T15:09:00Z", "sent": 180, "written": 0, "failed": 2,
                   "deferred": 0, "pending": 0, "bounces": 2})
        );
        assert_eq!(
            j["maintenance"],
            json!({"started": "2026-12-04T00:03:00Z", "ended": "2026-12-04T01:50:00Z",
                   "minutes": 107})
        );
        assert_eq!(j["flagged"][1]["email"], "sam.o'brien@austintexas.gov");
        assert_eq!(j["flagged"][1]["open"], false);
        assert_eq!(j["flagged"][0]["user_id"], 41);
        // Keys only at the documented places.
        let keys = |v: &Value| {
            let mut k: Vec<String> = v
                .as_object()
                .map_or(vec![], |o| o.keys().cloned().collect());
            k.sort();
            k
        };
        assert_eq!(
            keys(&j),
            [
                "flagged",
                "maintenance",
                "name",
                "notices",
                "version",
                "window"
            ]
        );
        assert_eq!(keys(&j["window"]), ["current", "history"]);
        assert_eq!(
            keys(&j["flagged"][0]),
            [
                "action",
                "email",
                "last_bounce_at",
                "name",
                "open",
                "reason",
                "user_id"
            ]
        );
    }

    #[test]
    fn json_for_nothing_yet_has_the_same_keys_with_nulls() {
        let mut f = empty();
        f.notices.push(notice(
            "maintenance-start/x",
            "maintenance-start",
            utc(2026, 12, 4, 0, 2),
            0,
            0,
        ));
        f.maintenance_started = Some(utc(2026, 12, 4, 0, 3));
        let j = json(&f);
        assert_eq!(j["name"], Value::Null);
        assert_eq!(j["window"], json!({"current": null, "history": []}));
        assert_eq!(j["notices"][0]["first_at"], Value::Null);
        assert_eq!(j["notices"][0]["last_at"], Value::Null);
        assert_eq!(j["notices"][0]["created_at"], "2026-12-04T00:02:00Z");
        assert_eq!(
            j["maintenance"],
            json!({"started": "2026-12-04T00:03:00Z", "ended": null, "minutes": null})
        );
        assert_eq!(j["flagged"], json!([]));
        // An end recorded before the start gives no duration rather than a negative one.
        f.maintenance_ended = Some(utc(2026, 12, 4, 0, 0));
        assert_eq!(json(&f)["maintenance"]["minutes"], Value::Null);
        assert!(!text(&f, Chicago).contains("took"));
    }

    #[test]
    fn json_keeps_the_recorded_text_for_scripts() {
        let mut f = whole_party();
        f.notices[0].subject = "a\nb \u{202e}".into();
        let j = json(&f);
        assert_eq!(j["notices"][0]["subject"], "a\nb \u{202e}");
        let printed = crate::review::json_text(&j).unwrap();
        assert!(!printed.contains('\u{202e}'));
        let back: Value = serde_json::from_str(&printed).unwrap();
        assert_eq!(back, j);
    }
}
