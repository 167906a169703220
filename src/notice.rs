//! The notices of the release checklist: what each one is called, which template renders it, its
//! campaign key, its default audience, and the variables its template sees. Also reading the times
//! a person types (`2026-12-03 17:00`) in the configured time zone. Pure.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::Config;
use crate::contacts::{Audience, Contact};
use crate::release::Release;

/// One notice to send.
#[derive(Debug, Clone)]
pub enum Notice {
    /// Advance warning of a maintenance window.
    MaintenanceScheduled {
        start: DateTime<Tz>,
        end: DateTime<Tz>,
    },
    /// Maintenance is starting now; expected back by `until`.
    MaintenanceStart {
        start: DateTime<Tz>,
        until: DateTime<Tz>,
    },
    /// Maintenance is over (with the reminder to refresh the page).
    MaintenanceEnd { at: DateTime<Tz> },
    /// The release notes to the MUG (with the reminder to refresh the page).
    ReleaseNotes { release: Release },
}

impl Notice {
    /// The template file stem in `templates/`, also the first part of the campaign key.
    pub fn template(&self) -> &'static str {
        match self {
            Notice::MaintenanceScheduled { .. } => "maintenance-scheduled",
            Notice::MaintenanceStart { .. } => "maintenance-start",
            Notice::MaintenanceEnd { .. } => "maintenance-end",
            Notice::ReleaseNotes { .. } => "release-notes",
        }
    }

    /// The stable key that makes a rerun of the same notice a continuation, not a new send:
    /// `release-notes/v3.12.0`, `maintenance-start/2026-12-03`,
    /// `maintenance-scheduled/2026-12-03-1700`.
    pub fn campaign_key(&self) -> String {
        let suffix = match self {
            Notice::MaintenanceScheduled { start, .. } => start.format("%Y-%m-%d-%H%M").to_string(),
            Notice::MaintenanceStart { start, .. } => start.format("%Y-%m-%d").to_string(),
            Notice::MaintenanceEnd { at } => at.format("%Y-%m-%d").to_string(),
            Notice::ReleaseNotes { release } => release.version.clone(),
        };
        format!("{}/{}", self.template(), suffix)
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
        match self {
            Notice::MaintenanceScheduled { start, end } => {
                c.insert("window_start", &format_time(start));
                c.insert("window_end", &format_time(end));
                c.insert("window_date", &format_date(&start.date_naive()));
                c.insert("window_start_time", &format_clock(start));
                c.insert("window_end_time", &format_clock(end));
            }
            Notice::MaintenanceStart { start, until } => {
                c.insert("window_start", &format_time(start));
                c.insert("window_end", &format_time(until));
                c.insert("window_start_time", &format_clock(start));
                c.insert("window_end_time", &format_clock(until));
            }
            Notice::MaintenanceEnd { at } => {
                c.insert("window_end", &format_time(at));
                c.insert("window_end_time", &format_clock(at));
                c.insert("refresh_reminder", &cfg.refresh_reminder);
            }
            Notice::ReleaseNotes { release } => {
                c.insert("version", &release.version);
                c.insert("release_name", &release.name);
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
    fn nonsense_and_dst_gaps_are_errors() {
        assert!(parse_time("soon", Chicago, now(), false)
            .unwrap_err()
            .contains("soon"));
        let e = parse_time("2026-03-08 02:30", Chicago, now(), false).unwrap_err();
        assert!(e.contains("daylight"), "{e}");
    }
}
