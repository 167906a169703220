//! Snapshot tests of every notice as a recipient sees it (text part and HTML part), rendered with
//! the shipped templates, config and release notes for a fixed contact and fixed times.
//! Review changes to tests/testsuite/snapshots/ like code.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::TimeZone;
use notify::config::{Config, Overrides};
use notify::contacts::Contact;
use notify::notice::{contact_context, Notice};
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
fn release_notes() {
    let cfg = config();
    let release = notify::release::find(&cfg.releases, "v3.12.0").unwrap();
    snap("release-notes", Notice::ReleaseNotes { release });
}

#[test]
fn maintenance_scheduled() {
    snap(
        "maintenance-scheduled",
        Notice::MaintenanceScheduled {
            start: at("2026-12-03 17:00"),
            end: at("2026-12-03 19:00"),
        },
    );
}

#[test]
fn maintenance_start() {
    snap(
        "maintenance-start",
        Notice::MaintenanceStart {
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
            at: at("2026-12-03 17:48"),
        },
    );
}
