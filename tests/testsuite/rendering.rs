//! Snapshot tests of every notice as a recipient sees it (text part and HTML part), rendered with
//! the shipped templates, config and release notes for a fixed contact and fixed times.
//! Review changes to tests/testsuite/snapshots/ like code.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::TimeZone;
use notify::config::{Config, Overrides};
use notify::contacts::Contact;
use notify::notice::{contact_context, Notice, ReleaseRef, WindowEvent};
use notify::party::facts::WindowChange;
use notify::render::Templates;

use crate::harness::REPO;

fn config() -> Config {
    Config::load(
        &Path::new(REPO).join("notify.toml"),
        true,
        &BTreeMap::new(),
        &Overrides::default(),
    )
    .unwrap()
}

fn contact() -> Contact {
    notify::contacts::parse(
        std::fs::read(Path::new(REPO).join("contacts/moped_users.csv"))
            .unwrap()
            .as_slice(),
    )
    .unwrap()
    .into_iter()
    .find(|c| c.last_name == "O'Brien")
    .unwrap()
}

fn render(notice: Notice) -> notify::render::Rendered {
    let cfg = config();
    let t = Templates::load(&cfg.templates, notice.template()).unwrap();
    t.render(&contact_context(&notice.context(&cfg), &contact()))
        .unwrap()
}

fn snap(name: &str, notice: Notice) {
    let r = render(notice);
    insta::assert_snapshot!(
        format!("{name}-text"),
        format!("Subject: {}\n\n{}", r.subject, r.text)
    );
    insta::assert_snapshot!(format!("{name}-html"), r.html);
}

fn at(s: &str) -> chrono::DateTime<chrono_tz::Tz> {
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    chrono_tz::America::Chicago
        .from_local_datetime(&naive)
        .single()
        .unwrap()
}

#[test]
fn release_notes_link_to_their_archive_page_when_there_is_one() {
    let mut env = BTreeMap::new();
    env.insert(
        "NOTIFY_ARCHIVE_URL".to_string(),
        "https://moped.austinmobility.io/releases/".to_string(),
    );
    let cfg = Config::load(
        &Path::new(REPO).join("notify.toml"),
        true,
        &env,
        &Overrides::default(),
    )
    .unwrap();
    let release = notify::release::find(&cfg.releases, "v3.12.0").unwrap();
    let notice = Notice::ReleaseNotes { release };
    let t = Templates::load(&cfg.templates, notice.template()).unwrap();
    let r = t
        .render(&contact_context(&notice.context(&cfg), &contact()))
        .unwrap();
    let url = "https://moped.austinmobility.io/releases/v3.12.0";
    assert!(r.html.contains(&format!("href=\"{url}\"")), "{}", r.html);
    assert!(r.text.contains(url), "{}", r.text);
    // Without an archive the notes link nowhere (the snapshot below has no such line).
    assert!(!render(Notice::ReleaseNotes {
        release: notify::release::find(&config().releases, "v3.12.0").unwrap()
    })
    .text
    .contains("/releases/"));
}

#[test]
fn release_notes() {
    let cfg = config();
    let release = notify::release::find(&cfg.releases, "v3.12.0").unwrap();
    snap("release-notes", Notice::ReleaseNotes { release });
}

fn goliad() -> ReleaseRef {
    ReleaseRef {
        version: "v3.12.0".into(),
        name: "Goliad".into(),
        notes_url: Some("https://moped.austinmobility.io/releases/v3.12.0".into()),
    }
}

fn window(change: WindowChange, sequence: u32, start: &str, end: &str) -> Notice {
    Notice::MaintenanceScheduled {
        release: goliad(),
        start: at(start),
        end: at(end),
        change,
        event: WindowEvent {
            uid: "moped-maintenance-v3-12-0@austintexas.gov".into(),
            sequence,
            stamp: at("2026-11-30 09:00").with_timezone(&chrono::Utc),
        },
        previous: (sequence > 0).then(|| (at("2026-12-03 17:00"), at("2026-12-03 19:00"))),
        recipients_of: Vec::new(),
    }
}

#[test]
fn maintenance_scheduled() {
    snap(
        "maintenance-scheduled",
        window(
            WindowChange::Scheduled,
            0,
            "2026-12-03 17:00",
            "2026-12-03 19:00",
        ),
    );
}

#[test]
fn maintenance_moved() {
    snap(
        "maintenance-moved",
        window(
            WindowChange::Moved,
            1,
            "2026-12-04 17:00",
            "2026-12-04 19:30",
        ),
    );
}

#[test]
fn maintenance_cancelled() {
    snap(
        "maintenance-cancelled",
        window(
            WindowChange::Cancelled,
            2,
            "2026-12-04 17:00",
            "2026-12-04 19:30",
        ),
    );
}

#[test]
fn maintenance_start() {
    snap(
        "maintenance-start",
        Notice::MaintenanceStart {
            release: goliad(),
            start: at("2026-12-03 17:02"),
            until: at("2026-12-03 18:00"),
        },
    );
}

#[test]
fn maintenance_end() {
    snap(
        "maintenance-end",
        Notice::MaintenanceEnd {
            release: goliad(),
            at: at("2026-12-03 17:48"),
            started: Some(at("2026-12-03 17:02")),
        },
    );
}
