//! The notices of the release checklist: what each one is called, which template renders it, its
//! campaign key (and the rules every key follows, and the outbox folder named after it), its
//! default audience, and the variables its template sees. Also reading the times a person types
//! (`2026-12-03 17:00`) in the configured time zone, and refusing windows already in the past.
//! Pure.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::Config;
use crate::contacts::{Audience, Contact};
use crate::party_facts::WindowChange;
use crate::release::Release;

/// The release a maintenance notice is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRef {
    /// Canonical version, `v3.12.0`.
    pub version: String,
    /// The voted name from the notes' front matter; empty when there are no notes yet.
    pub name: String,
    /// The notes' page in the archive, when `archive_url` is set.
    pub notes_url: Option<String>,
}

impl ReleaseRef {
    /// `v3.12.0 Goliad`, or `v3.12.0`.
    pub fn title(&self) -> String {
        if self.name.is_empty() {
            self.version.clone()
        } else {
            format!("{} {}", self.version, self.name)
        }
    }
}

/// The calendar event a window notice carries (iMIP, RFC 6047).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowEvent {
    /// Stable for the release's window: every update and the cancel carry it.
    pub uid: String,
    /// 0 for the first warning, then one more for each move or cancel.
    pub sequence: u32,
    /// When this version of the window was recorded (DTSTAMP).
    pub stamp: DateTime<Utc>,
}

/// One notice to send.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A maintenance window, as a calendar event: the advance warning, a move, or a cancel.
    MaintenanceScheduled {
        release: ReleaseRef,
        start: DateTime<Tz>,
        end: DateTime<Tz>,
        change: WindowChange,
        event: WindowEvent,
        /// The window before a move.
        previous: Option<(DateTime<Tz>, DateTime<Tz>)>,
        /// A move or cancel goes only to who had a send (not refused) in these campaigns:
        /// everyone told of the window before. Empty: the whole audience.
        recipients_of: Vec<String>,
    },
    /// Maintenance is starting now; expected back by `until`.
    MaintenanceStart {
        release: ReleaseRef,
        start: DateTime<Tz>,
        until: DateTime<Tz>,
    },
    /// Maintenance is over (with the reminder to refresh the page); `started` when the start
    /// notice recorded it, to say how long it took.
    MaintenanceEnd {
        release: ReleaseRef,
        at: DateTime<Tz>,
        started: Option<DateTime<Tz>>,
    },
    /// The release notes to the MUG (with the reminder to refresh the page).
    ReleaseNotes { release: Release },
}

impl Notice {
    /// The template file stem in `templates/`, also the first part of the campaign key.
    pub fn template(&self) -> &'static str {
        match self {
            Notice::MaintenanceScheduled { change, .. } => match change {
                WindowChange::Scheduled => "maintenance-scheduled",
                WindowChange::Moved => "maintenance-moved",
                WindowChange::Cancelled => "maintenance-cancelled",
            },
            Notice::MaintenanceStart { .. } => "maintenance-start",
            Notice::MaintenanceEnd { .. } => "maintenance-end",
            Notice::ReleaseNotes { .. } => "release-notes",
        }
    }

    /// The stable key that makes a rerun of the same notice a continuation, not a new send:
    /// `release-notes/v3.12.0`, `maintenance-start/v3.12.0/2026-12-03`,
    /// `maintenance-end/v3.12.0/2026-12-03`,
    /// and for a window `maintenance-scheduled/v3.12.0` (its first warning), then
    /// `maintenance-moved/v3.12.0/1`, `maintenance-cancelled/v3.12.0/2` (by SEQUENCE).
    pub fn campaign_key(&self) -> String {
        let suffix = match self {
            Notice::MaintenanceScheduled { release, event, .. } if event.sequence == 0 => {
                release.version.clone()
            }
            Notice::MaintenanceScheduled { release, event, .. } => {
                format!("{}/{}", release.version, event.sequence)
            }
            Notice::MaintenanceStart { release, start, .. } => {
                format!("{}/{}", release.version, start.format("%Y-%m-%d"))
            }
            Notice::MaintenanceEnd { release, at, .. } => {
                format!("{}/{}", release.version, at.format("%Y-%m-%d"))
            }
            Notice::ReleaseNotes { release } => release.version.clone(),
        };
        format!("{}/{}", self.template(), suffix)
    }

    /// The release the notice is for.
    pub fn release(&self) -> &str {
        match self {
            Notice::MaintenanceScheduled { release, .. }
            | Notice::MaintenanceStart { release, .. }
            | Notice::MaintenanceEnd { release, .. } => &release.version,
            Notice::ReleaseNotes { release } => &release.version,
        }
    }

    /// The times the notice announces, as recorded with its campaign: a window's start and
    /// end, a start notice's start and expected end, an end notice's start (when known) and end.
    pub fn announced(&self) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        let utc = |t: &DateTime<Tz>| t.with_timezone(&Utc);
        match self {
            Notice::MaintenanceScheduled { start, end, .. } => (Some(utc(start)), Some(utc(end))),
            Notice::MaintenanceStart { start, until, .. } => (Some(utc(start)), Some(utc(until))),
            Notice::MaintenanceEnd { at, started, .. } => {
                (started.as_ref().map(utc), Some(utc(at)))
            }
            Notice::ReleaseNotes { .. } => (None, None),
        }
    }

    /// Only who had a send in these campaigns gets this notice (a window's move or cancel).
    pub fn recipients_of(&self) -> &[String] {
        match self {
            Notice::MaintenanceScheduled { recipients_of, .. } => recipients_of,
            _ => &[],
        }
    }

    /// Who gets it unless `--audience` says otherwise.
    pub fn default_audience(&self, cfg: &Config) -> Audience {
        match self {
            Notice::ReleaseNotes { .. } => cfg.release_notes_audience,
            _ => cfg.maintenance_audience,
        }
    }

    /// Variables shared by every recipient of this notice.
    pub fn context(&self, cfg: &Config) -> tera::Context {
        let mut c = tera::Context::new();
        c.insert("app_url", &cfg.app_url);
        c.insert("team_name", &cfg.team_name);
        c.insert("timezone", cfg.timezone.name());
        let mut release_ref = |r: &ReleaseRef| {
            c.insert("version", &r.version);
            c.insert("release_name", &r.name);
            c.insert("release_title", &r.title());
            c.insert("notes_url", &r.notes_url.clone().unwrap_or_default());
        };
        match self {
            Notice::MaintenanceScheduled {
                release,
                start,
                end,
                previous,
                ..
            } => {
                release_ref(release);
                c.insert("window_start", &format_time(start));
                c.insert("window_end", &format_time(end));
                c.insert("window_date", &format_date(&start.date_naive()));
                c.insert("window_start_time", &format_clock(start));
                c.insert("window_end_time", &format_clock(end));
                if let Some((ps, pe)) = previous {
                    c.insert("previous_start", &format_time(ps));
                    c.insert("previous_end", &format_time(pe));
                }
            }
            Notice::MaintenanceStart {
                release,
                start,
                until,
            } => {
                release_ref(release);
                c.insert("window_start", &format_time(start));
                c.insert("window_end", &format_time(until));
                c.insert("window_start_time", &format_clock(start));
                c.insert("window_end_time", &format_clock(until));
            }
            Notice::MaintenanceEnd {
                release,
                at,
                started,
            } => {
                release_ref(release);
                c.insert("window_end", &format_time(at));
                c.insert("window_end_time", &format_clock(at));
                c.insert(
                    "duration",
                    &started
                        .map(|s| format_duration(*at - s))
                        .unwrap_or_default(),
                );
                c.insert("refresh_reminder", &cfg.refresh_reminder);
            }
            Notice::ReleaseNotes { release } => {
                c.insert("version", &release.version);
                c.insert("release_name", &release.name);
                c.insert(
                    "notes_url",
                    &notes_url(cfg, &release.version).unwrap_or_default(),
                );
                c.insert(
                    "release_date",
                    &release.date.map(|d| format_date(&d)).unwrap_or_default(),
                );
                c.insert("notes", &release.notes);
                c.insert("refresh_reminder", &cfg.refresh_reminder);
            }
        }
        c
    }
}

/// A release's page in the archive, `<archive_url>/<version>`, when `archive_url` is set.
pub fn notes_url(cfg: &Config, version: &str) -> Option<String> {
    (!cfg.archive_url.is_empty()).then(|| format!("{}/{version}", cfg.archive_url))
}

/// "1 hour 40 minutes", "45 minutes", "2 hours"; a negative span reads as 0 minutes.
pub fn format_duration(d: Duration) -> String {
    let minutes = d.num_minutes().max(0);
    let (h, m) = (minutes / 60, minutes % 60);
    let unit = |n: i64, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    match (h, m) {
        (0, m) => unit(m, "minute"),
        (h, 0) => unit(h, "hour"),
        (h, m) => format!("{} {}", unit(h, "hour"), unit(m, "minute")),
    }
}

/// Add one contact's fields to the shared variables.
pub fn contact_context(shared: &tera::Context, contact: &Contact) -> tera::Context {
    let mut c = shared.clone();
    c.insert("first_name", &contact.first_name);
    c.insert("last_name", &contact.last_name);
    c.insert("full_name", &contact.full_name());
    c.insert("email", &contact.email);
    c.insert("title", &contact.title);
    c.insert("workgroup", &contact.workgroup);
    c.insert("user_id", &contact.user_id);
    c
}

/// The names [`contact_context`] adds, for a mail merge (`render::merge`).
pub const CONTACT_FIELDS: [&str; 7] = [
    "first_name",
    "last_name",
    "full_name",
    "email",
    "title",
    "workgroup",
    "user_id",
];

/// The values [`contact_context`] adds, in the order of [`CONTACT_FIELDS`], as a template
/// prints them.
pub fn contact_values(contact: &Contact) -> [String; 7] {
    [
        contact.first_name.clone(),
        contact.last_name.clone(),
        contact.full_name(),
        contact.email.clone(),
        contact.title.clone(),
        contact.workgroup.clone(),
        contact.user_id.to_string(),
    ]
}

/// The longest campaign key accepted, in bytes: the outbox folder is named after the key, and a
/// file name has at most 255 bytes.
pub const MAX_CAMPAIGN_KEY: usize = 200;

/// Whether `key` can name a campaign. Keys are `/`-separated segments such as
/// `release-notes/v3.12.0`; since the outbox folder and people's eyes read them, a key may not be
/// empty or longer than [`MAX_CAMPAIGN_KEY`], begin or end with a space, begin with `/`, have an
/// empty, `.` or `..` segment, or hold a backslash, a control character or a bidi control.
/// The error says what is wrong, to follow the key in a message.
pub fn check_campaign_key(key: &str) -> Result<(), String> {
    if key.trim().is_empty() {
        return Err("is empty".into());
    }
    if key.len() > MAX_CAMPAIGN_KEY {
        return Err(format!(
            "is {} bytes long; the most is {MAX_CAMPAIGN_KEY}",
            key.len()
        ));
    }
    // What `inert` would escape in output (control characters, bidi controls) has no place in
    // a key: one holding them can pass for another key on screen.
    let is_unsafe = |c: char| {
        let mut buf = [0u8; 4];
        matches!(
            crate::inert::line(c.encode_utf8(&mut buf)),
            std::borrow::Cow::Owned(_)
        )
    };
    if let Some(c) = key.chars().find(|c| is_unsafe(*c)) {
        return Err(format!(
            "holds the control character U+{:04X}; keys are one line of visible text",
            c as u32
        ));
    }
    if key.contains('\\') {
        return Err("holds a backslash; segments are separated by `/`".into());
    }
    if key.starts_with(char::is_whitespace) || key.ends_with(char::is_whitespace) {
        return Err("begins or ends with a space".into());
    }
    if key.starts_with('/') {
        return Err("begins with `/`; keys look like release-notes/v3.12.0".into());
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err("has an empty segment (`//` or a `/` at the end)".into()),
            "." | ".." => {
                return Err(format!(
                    "has a `{segment}` segment; keys look like release-notes/v3.12.0"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The name of the outbox folder for a campaign key: `release-notes/v3.12.0` ->
/// `release-notes_v3.12.0`. Letters, digits and `.-_+@` are kept, anything else becomes `_`, and
/// a leading `.` becomes `_`: the name is never empty, `.`, `..` or hidden, and holds no
/// separator, so the folder is always a child of the outbox whatever the key.
pub fn outbox_folder(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_+@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        name.replace_range(..name.len().min(1), "_");
    }
    name
}

/// Refuse a moment already past for a notice about the future: `what` says where it came from
/// (``--end `2026-12-03 13:00` ``). The message gives the time as read in its zone, so a wrong
/// zone or date shows.
pub fn check_not_past(what: &str, t: &DateTime<Tz>, now: DateTime<Utc>) -> Result<(), String> {
    if *t < now {
        return Err(format!(
            "{what} is {} ({}), which has already passed; add --allow-past to send the notice anyway",
            format_time(t),
            t.timezone().name()
        ));
    }
    Ok(())
}

/// "Thursday, December 3, 2026 at 5:00 PM CST"
pub fn format_time(t: &DateTime<Tz>) -> String {
    t.format("%A, %B %-d, %Y at %-I:%M %p %Z").to_string()
}

/// "5:00 PM CST"
pub fn format_clock(t: &DateTime<Tz>) -> String {
    t.format("%-I:%M %p %Z").to_string()
}

/// "Thursday, August 6, 2026"
pub fn format_date(d: &NaiveDate) -> String {
    d.format("%A, %B %-d, %Y").to_string()
}

/// Read a time as a person types it, in `tz`: `2026-12-03 17:00`, `2026-12-03T17:00`, an RFC 3339
/// time with an offset, or `17:00` (today; tomorrow when `next` and that time has passed).
pub fn parse_time(s: &str, tz: Tz, now: DateTime<Utc>, next: bool) -> Result<DateTime<Tz>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&tz));
    }
    let local = [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok());
    let local = match local {
        Some(l) => l,
        None => {
            // "9am" and "9 pm" have no minutes, which NaiveTime needs: add them.
            let upper = s.to_ascii_uppercase().replace(' ', "");
            let with_minutes = match upper.find(['A', 'P']) {
                Some(i) if !upper[..i].contains(':') => {
                    format!("{}:00{}", &upper[..i], &upper[i..])
                }
                _ => upper,
            };
            let clock = ["%H:%M", "%I:%M%p"]
                .iter()
                .find_map(|f| NaiveTime::parse_from_str(&with_minutes, f).ok())
                .ok_or_else(|| {
                    format!("`{s}` is not a time; use 2026-12-03 17:00, 17:00 or an RFC 3339 time")
                })?;
            let today = now.with_timezone(&tz).date_naive();
            let mut l = today.and_time(clock);
            if next
                && tz
                    .from_local_datetime(&l)
                    .earliest()
                    .is_some_and(|t| t < now)
            {
                l += Duration::days(1);
            }
            l
        }
    };
    tz.from_local_datetime(&local).single().ok_or_else(|| {
        format!(
            "`{s}` does not name one moment in {} (a daylight-saving change); add an offset, e.g. 2026-11-01T01:30-05:00",
            tz.name()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::Chicago;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 20, 0, 0).unwrap() // 2:00 PM CST
    }

    #[test]
    fn merge_fields_are_exactly_what_the_context_adds() {
        let contact = Contact {
            user_id: 417,
            first_name: "Zoë".into(),
            last_name: "O'Neil".into(),
            email: "zoe.oneil@austintexas.gov".into(),
            title: "Planner".into(),
            workgroup: "Signs & Markings".into(),
            roles: vec!["moped-editor".into()],
            is_coa_staff: true,
            is_deleted: false,
            is_user_group_member: true,
            note: String::new(),
            date_added: String::new(),
            last_seen_date: String::new(),
        };
        let shared = tera::Context::new();
        let ctx = contact_context(&shared, &contact).into_json();
        let added = ctx.as_object().unwrap();
        assert_eq!(added.len(), CONTACT_FIELDS.len());
        for (name, value) in CONTACT_FIELDS.iter().zip(contact_values(&contact)) {
            let printed = match &added[*name] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(printed, value, "{name}");
        }
    }

    #[test]
    fn local_times_are_read_in_the_configured_zone() {
        let t = parse_time("2026-12-03 17:00", Chicago, now(), false).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-03T17:00:00-06:00");
        assert_eq!(format_time(&t), "Thursday, December 3, 2026 at 5:00 PM CST");
        let t = parse_time("2026-07-02T17:00:00Z", Chicago, now(), false).unwrap();
        assert_eq!(format_clock(&t), "12:00 PM CDT");
    }

    #[test]
    fn clock_times_mean_today_or_the_next_one() {
        let t = parse_time("16:30", Chicago, now(), true).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-03T16:30:00-06:00");
        let t = parse_time("9am", Chicago, now(), true).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-04T09:00:00-06:00");
    }

    #[test]
    fn campaign_keys_are_path_safe_segments() {
        for ok in [
            "release-notes/v3.12.0",
            "maintenance-scheduled/2026-12-03-1700",
            "release-notes/v3.12.0-corrected",
            "a/...b",
            "Zoë's notice",
        ] {
            assert_eq!(check_campaign_key(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("   ", "empty"),
            ("..", "`..` segment"),
            (".", "`.` segment"),
            ("a/../..", "`..` segment"),
            ("release-notes/../../etc", "`..` segment"),
            ("/etc/passwd", "begins with `/`"),
            ("a\\b", "backslash"),
            ("..\\..\\x", "backslash"),
            ("a//b", "empty segment"),
            ("a/", "empty segment"),
            ("a\nb", "U+000A"),
            ("a\u{1b}[31mb", "U+001B"),
            ("a\u{202E}b", "U+202E"),
            (" a", "space"),
        ] {
            let e = check_campaign_key(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(check_campaign_key(&"x".repeat(MAX_CAMPAIGN_KEY)).is_ok());
        assert!(check_campaign_key(&"x".repeat(MAX_CAMPAIGN_KEY + 1))
            .unwrap_err()
            .contains("bytes long"));
    }

    #[test]
    fn every_notice_makes_a_valid_key() {
        let t = parse_time("2026-12-03 17:00", Chicago, now(), false).unwrap();
        for n in [
            window(t, WindowChange::Scheduled, 0),
            window(t, WindowChange::Moved, 1),
            window(t, WindowChange::Cancelled, 2),
            Notice::MaintenanceStart {
                release: v3_12(),
                start: t,
                until: t,
            },
            Notice::MaintenanceEnd {
                release: v3_12(),
                at: t,
                started: None,
            },
        ] {
            assert_eq!(check_campaign_key(&n.campaign_key()), Ok(()));
        }
        let keys: Vec<String> = [
            window(t, WindowChange::Scheduled, 0),
            window(t, WindowChange::Moved, 1),
            window(t, WindowChange::Cancelled, 2),
        ]
        .iter()
        .map(Notice::campaign_key)
        .collect();
        assert_eq!(
            keys,
            [
                "maintenance-scheduled/v3.12.0",
                "maintenance-moved/v3.12.0/1",
                "maintenance-cancelled/v3.12.0/2"
            ]
        );
    }

    pub(crate) fn v3_12() -> ReleaseRef {
        ReleaseRef {
            version: "v3.12.0".into(),
            name: "Goliad".into(),
            notes_url: None,
        }
    }

    fn window(t: DateTime<Tz>, change: WindowChange, sequence: u32) -> Notice {
        Notice::MaintenanceScheduled {
            release: v3_12(),
            start: t,
            end: t + Duration::hours(2),
            change,
            event: WindowEvent {
                uid: "moped-maintenance-v3-12-0@austintexas.gov".into(),
                sequence,
                stamp: now(),
            },
            previous: None,
            recipients_of: Vec::new(),
        }
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(format_duration(Duration::minutes(100)), "1 hour 40 minutes");
        assert_eq!(format_duration(Duration::minutes(45)), "45 minutes");
        assert_eq!(format_duration(Duration::minutes(120)), "2 hours");
        assert_eq!(format_duration(Duration::minutes(61)), "1 hour 1 minute");
        assert_eq!(format_duration(Duration::minutes(-5)), "0 minutes");
    }

    #[test]
    fn outbox_folders_are_plain_children() {
        assert_eq!(
            outbox_folder("release-notes/v3.12.0"),
            "release-notes_v3.12.0"
        );
        for key in [
            ".", "..", "a/../..", "../x", "/", "", "...", "a\\..\\b", ".hidden",
        ] {
            let f = outbox_folder(key);
            assert!(!f.is_empty() && !f.starts_with('.'), "{key:?} -> {f:?}");
            assert!(!f.contains('/') && !f.contains('\\'), "{key:?} -> {f:?}");
            let p = std::path::Path::new("/outbox").join(&f);
            assert_eq!(p.parent(), Some(std::path::Path::new("/outbox")), "{key:?}");
        }
    }

    #[test]
    fn past_moments_name_the_flag_and_the_time_as_read() {
        let past = parse_time("2026-12-03 13:00", Chicago, now(), false).unwrap();
        let e = check_not_past("--end `2026-12-03 13:00`", &past, now()).unwrap_err();
        assert!(
            e.contains("--end")
                && e.contains("Thursday, December 3, 2026 at 1:00 PM CST")
                && e.contains("America/Chicago")
                && e.contains("--allow-past"),
            "{e}"
        );
        let later = parse_time("2026-12-03 14:01", Chicago, now(), false).unwrap();
        assert_eq!(check_not_past("--end `14:01`", &later, now()), Ok(()));
    }

    #[test]
    fn nonsense_and_dst_gaps_are_errors() {
        assert!(parse_time("soon", Chicago, now(), false)
            .unwrap_err()
            .contains("soon"));
        let e = parse_time("2026-03-08 02:30", Chicago, now(), false).unwrap_err();
        assert!(e.contains("daylight"), "{e}");
    }
}
