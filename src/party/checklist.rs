//! The release checklist (`notify checklist VERSION`): every step of Moped's release process as
//! GitHub task items (`- [ ] ...`, `- [x] ...`, one per line), ready to paste into the release
//! issue, rendered from a Tera template (`templates/checklist.md`, or the built-in
//! [`DEFAULT_TEMPLATE`]) with autoescape off, since the output is Markdown. Pure: no I/O, no clock.
//!
//! This module decides what is ticked, strictly from the [`ReleaseFacts`]: a step is ticked only
//! when notify did it for that release, and a step that happened stays ticked.
//! * `steps.downtime`: a `maintenance-scheduled` notice reached someone (sent or written to the
//!   outbox); the note says when the first warning went and its counts, that the window moved and
//!   where it is now, and after a cancel `(window cancelled <when>; N told)`, still ticked.
//! * `steps.maintenance_start`, `steps.maintenance_end`, `steps.release_notes`: a notice of that
//!   kind reached someone; the note says when the first went and the counts (`sent 212, failed
//!   1`), and for the end how long the maintenance took when its start and end are known.
//! * `steps.bounced_accounts`: the flagged accounts are listed (`flagged`, resolved ones ticked);
//!   the step is ticked only once the release notes went and no listed account is still open.
//!
//! Everything else in the process is something notify cannot know, and the template writes it
//! `- [ ]`. Every text value from the facts (names, subjects, emails, versions) is passed through
//! [`inert::line`] before the template sees it, so it cannot add a line (and with it a forged task
//! item) or reach the terminal as an escape. The wording of times, windows and durations is
//! shared with the timeline ([`super::timeline`]).

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use super::facts::{NoticeFacts, ReleaseFacts};
use super::timeline::{is_cancel, maintenance_minutes, took, when, window_range};
use crate::inert;

/// The built-in checklist template (`templates/checklist.md`), used when the user has none.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../templates/checklist.md");

/// The template's name inside Tera (no autoescape is on for any name).
const TEMPLATE_NAME: &str = "checklist.md";

/// What the checklist needs besides the facts.
#[derive(Debug, Clone, PartialEq)]
pub struct ChecklistOptions {
    /// Times are printed in it, e.g. `Thu Dec 3, 5:12 PM CST`.
    pub timezone: Tz,
    /// graphql-engine version for the local docker compose and the staging task definition,
    /// e.g. `2.50.0` (from `notify.toml` or a flag).
    pub graphql_engine_staging: Option<String>,
    /// graphql-engine version for the production task definition, e.g. `2.49.5` (production
    /// runs one minor behind staging).
    pub graphql_engine_production: Option<String>,
}

/// The checklist as GitHub task items, one per line, from the Tera template text `template` (the
/// user's `templates/checklist.md` or [`DEFAULT_TEMPLATE`]). Trailing spaces are dropped, runs
/// of blank lines become one, and the text ends with one newline. A template Tera refuses (at
/// parse or at render) comes back as `Err` with Tera's message and its causes.
pub fn render(
    template: &str,
    facts: &ReleaseFacts,
    opts: &ChecklistOptions,
) -> Result<String, String> {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![]);
    tera.add_raw_template(TEMPLATE_NAME, template)
        .map_err(|e| error_chain(&e))?;
    let context = tera::Context::from_value(context(facts, opts)).map_err(|e| error_chain(&e))?;
    let out = tera
        .render(TEMPLATE_NAME, &context)
        .map_err(|e| error_chain(&e))?;
    Ok(tidy(&out))
}

/// The values the template sees (documented at the top of `templates/checklist.md`).
fn context(facts: &ReleaseFacts, opts: &ChecklistOptions) -> Value {
    let tz = opts.timezone;
    let release_notes = sent_step(facts, "release-notes", tz, None);
    let bounced = bounced_accounts(facts, release_notes.done);
    let end_took = maintenance_minutes(facts).map(|m| format!("maintenance took {}", took(m)));
    let live = facts.window.iter().rev().find(|v| !is_cancel(v));
    json!({
        "title": inert::line(&facts.title()),
        "version": inert::line(&facts.version),
        "name": facts.name.as_deref().map(inert::line),
        "previous": facts.previous.as_deref().map(inert::line),
        "next_version": inert::line(&facts.next_version),
        "package_version": inert::line(facts.next_version.trim_start_matches(['v', 'V'])),
        "notes_file": facts.notes_file.as_deref().map(inert::line),
        "window": live.map(|v| window_range(v.start, v.end, tz)),
        "window_status": facts.current_window().map(|v| v.change.as_str()),
        "graphql_engine": {
            "staging": opts.graphql_engine_staging.as_deref().map(inert::line),
            "production": opts.graphql_engine_production.as_deref().map(inert::line),
        },
        "steps": {
            "downtime": downtime(facts, tz).value(),
            "maintenance_start": sent_step(facts, "maintenance-start", tz, None).value(),
            "maintenance_end": sent_step(facts, "maintenance-end", tz, end_took).value(),
            "release_notes": release_notes.value(),
            "bounced_accounts": bounced.step.value(),
        },
        "flagged": bounced.accounts,
    })
}

/// One step notify can speak for: done or not, and what to say after its text.
struct Step {
    done: bool,
    note: String,
}

impl Step {
    fn value(&self) -> Value {
        json!({
            "check": if self.done { "x" } else { " " },
            "done": self.done,
            "note": self.note,
        })
    }
}

/// The counts of one or more notices added up.
#[derive(Default)]
struct Tally {
    sent: i64,
    written: i64,
    failed: i64,
    deferred: i64,
    pending: i64,
    bounces: i64,
}

impl Tally {
    fn of<'a>(notices: impl IntoIterator<Item = &'a NoticeFacts>) -> Tally {
        let mut t = Tally::default();
        for n in notices {
            t.sent += n.sent;
            t.written += n.written;
            t.failed += n.failed;
            t.deferred += n.deferred;
            t.pending += n.pending;
            t.bounces += n.bounces;
        }
        t
    }

    /// `sent 212, failed 1`: the counts that are not zero (`sent 0` when nothing went).
    fn words(&self) -> String {
        let mut parts = Vec::new();
        if self.sent > 0 || self.written == 0 {
            parts.push(format!("sent {}", self.sent));
        }
        for (count, word) in [
            (self.written, "written to the outbox"),
            (self.failed, "failed"),
            (self.deferred, "deferred"),
            (self.pending, "pending"),
        ] {
            if count > 0 {
                parts.push(format!("{word} {count}"));
            }
        }
        if self.bounces > 0 {
            parts.push(format!("{} bounced", self.bounces));
        }
        parts.join(", ")
    }
}

/// When the first message of a notice went (its creation, if the journal has no time for it).
fn went_at(n: &NoticeFacts) -> DateTime<Utc> {
    n.first_at.unwrap_or(n.created_at)
}

/// A step done by sending notices of template `kind`: ticked once one reached someone.
fn sent_step(facts: &ReleaseFacts, kind: &str, tz: Tz, extra: Option<String>) -> Step {
    let notices: Vec<&NoticeFacts> = facts.notices_of(kind).collect();
    if notices.is_empty() {
        return Step {
            done: false,
            note: String::new(),
        };
    }
    let tally = Tally::of(notices.iter().copied());
    let first = notices
        .iter()
        .filter(|n| n.delivered() > 0)
        .map(|n| went_at(n))
        .min();
    match first {
        Some(at) => {
            let mut note = format!("{} ({})", when(at, tz), tally.words());
            if let Some(extra) = extra {
                note.push_str("; ");
                note.push_str(&extra);
            }
            Step { done: true, note }
        }
        None => Step {
            done: false,
            note: format!("nothing delivered yet ({})", tally.words()),
        },
    }
}

/// Advise users of downtime: ticked once a warning reached someone, and it stays ticked when the
/// window moves or is called off (the note says so).
fn downtime(facts: &ReleaseFacts, tz: Tz) -> Step {
    let notices: Vec<&NoticeFacts> = facts.notices_of("maintenance-scheduled").collect();
    // A move and a cancel are notices of their own (`maintenance-moved`, `maintenance-cancelled`).
    let window_notices: Vec<&NoticeFacts> = facts
        .notices
        .iter()
        .filter(|n| {
            matches!(
                n.notice.as_str(),
                "maintenance-scheduled" | "maintenance-moved" | "maintenance-cancelled"
            )
        })
        .collect();
    let of_campaign = |campaign: &str| -> Vec<&NoticeFacts> {
        window_notices
            .iter()
            .copied()
            .filter(|n| n.campaign == campaign)
            .collect()
    };
    let Some(first) = notices.iter().find(|n| n.delivered() > 0) else {
        let note = if notices.is_empty() {
            String::new()
        } else {
            format!(
                "nothing delivered yet ({})",
                Tally::of(notices.iter().copied()).words()
            )
        };
        return Step { done: false, note };
    };

    let mut note = format!(
        "warned {} ({})",
        when(went_at(first), tz),
        Tally::of([*first]).words()
    );
    // The window people were last told of, before any cancel.
    let live = facts.window.iter().rev().find(|v| !is_cancel(v));
    if let Some(live) = live {
        let moves = facts
            .window
            .iter()
            .filter(|v| v.change == super::facts::WindowChange::Moved)
            .count();
        if moves == 0 || live.campaign == first.campaign {
            note.push_str(&format!(" for {}", window_range(live.start, live.end, tz)));
        } else {
            let times = if moves == 1 {
                String::new()
            } else {
                format!(" {moves} times, last")
            };
            note.push_str(&format!(
                "; moved{times} {}, now {}",
                when(live.recorded_at, tz),
                window_range(live.start, live.end, tz)
            ));
            let update = of_campaign(&live.campaign);
            if !update.is_empty() {
                note.push_str(&format!(" ({})", Tally::of(update).words()));
            }
        }
    }
    if let Some(cancel) = facts.current_window().filter(|v| is_cancel(v)) {
        let told: i64 = of_campaign(&cancel.campaign)
            .into_iter()
            .map(NoticeFacts::delivered)
            .sum();
        note.push_str(&format!(
            " (window cancelled {}; {told} told)",
            when(cancel.recorded_at, tz)
        ));
    }
    Step { done: true, note }
}

/// The bounced-accounts step and its sub-items.
struct Bounced {
    step: Step,
    accounts: Vec<Value>,
}

/// Update staff accounts that bounced: every flagged account listed (resolved ones ticked); the
/// step is ticked once the release notes went and none is still open.
fn bounced_accounts(facts: &ReleaseFacts, notes_sent: bool) -> Bounced {
    let accounts: Vec<Value> = facts
        .flagged
        .iter()
        .map(|a| {
            let mut line = inert::line(&a.email).into_owned();
            if !a.name.trim().is_empty() {
                line.push_str(&format!(" ({})", inert::line(&a.name)));
            }
            line.push_str(&format!(": {}", inert::line(&a.reason)));
            if !a.action.trim().is_empty() {
                line.push_str(&format!(", {}", inert::line(&a.action)));
            }
            json!({
                "check": if a.open { " " } else { "x" },
                "line": line,
                "email": inert::line(&a.email),
                "name": inert::line(&a.name),
                "reason": inert::line(&a.reason),
                "action": inert::line(&a.action),
                "open": a.open,
            })
        })
        .collect();
    let open = facts.flagged.iter().filter(|a| a.open).count();
    let since: Cow<'_, str> = match &facts.previous {
        Some(p) => Cow::Owned(format!("since {}", inert::line(p))),
        None => Cow::Borrowed("since the previous release"),
    };
    let note = match (facts.flagged.len(), open) {
        (0, _) if notes_sent => format!("none flagged {since}"),
        (0, _) => String::new(),
        (n, 0) => format!("{n} flagged {since}, all resolved"),
        (n, open) => format!("{n} flagged {since}, {open} still open"),
    };
    Bounced {
        step: Step {
            done: notes_sent && open == 0,
            note,
        },
        accounts,
    }
}

/// Tera's message with its causes (`Failed to render ...: Variable ... not found`).
fn error_chain(err: &tera::Error) -> String {
    let mut chain = vec![err.to_string()];
    let mut cur = std::error::Error::source(err);
    while let Some(e) = cur {
        chain.push(e.to_string());
        cur = e.source();
    }
    chain.join(": ")
}

/// Lines without trailing spaces, no run of blank lines, none at either end, one final newline.
fn tidy(out: &str) -> String {
    let mut tidy = String::with_capacity(out.len());
    let mut blank = false;
    for line in out.lines().map(str::trim_end) {
        if line.is_empty() {
            blank = !tidy.is_empty();
            continue;
        }
        if blank {
            tidy.push('\n');
            blank = false;
        }
        tidy.push_str(line);
        tidy.push('\n');
    }
    tidy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::party::facts::{WindowChange, WindowVersion};
    use crate::party::timeline::tests::{empty, notice, utc, whole_party};
    use chrono_tz::America::Chicago;

    fn opts() -> ChecklistOptions {
        ChecklistOptions {
            timezone: Chicago,
            graphql_engine_staging: Some("2.50.0".into()),
            graphql_engine_production: Some("2.49.5".into()),
        }
    }

    /// A task item as the regex `^\s*- \[( |x)\] ` sees it (the crate has no regex dependency):
    /// `Some(ticked)` for an item, `None` for any other line.
    fn item(line: &str) -> Option<bool> {
        let rest = line.trim_start().strip_prefix("- [")?;
        match rest.get(..3) {
            Some(" ] ") => Some(false),
            Some("x] ") => Some(true),
            _ => None,
        }
    }

    fn items(out: &str) -> Vec<(bool, &str)> {
        out.lines()
            .filter_map(|l| item(l).map(|ticked| (ticked, l)))
            .collect()
    }

    fn ticked(out: &str) -> Vec<&str> {
        items(out)
            .into_iter()
            .filter(|(t, _)| *t)
            .map(|(_, l)| l)
            .collect()
    }

    fn line_of<'a>(out: &'a str, text: &str) -> &'a str {
        out.lines()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no line with {text:?} in\n{out}"))
    }

    #[test]
    fn the_item_matcher_reads_like_the_regex() {
        assert_eq!(item("- [ ] a"), Some(false));
        assert_eq!(item("  - [x] a"), Some(true));
        assert_eq!(item("\t- [x] a"), Some(true));
        for not in [
            "- [X] a",
            "-  [ ] a",
            "- [ ]a",
            "* [ ] a",
            "x - [ ] a",
            "- [x]",
        ] {
            assert_eq!(item(not), None, "{not:?}");
        }
    }

    #[test]
    fn a_version_with_nothing_done_gives_every_step_unticked_in_order() {
        let opts = ChecklistOptions {
            graphql_engine_staging: None,
            graphql_engine_production: None,
            ..opts()
        };
        let out = render(DEFAULT_TEMPLATE, &empty(), &opts).unwrap();
        assert_eq!(out.lines().next(), Some("## Release v3.12.0"));
        let all = items(&out);
        assert!(all.len() >= 18, "{} items:\n{out}", all.len());
        assert_eq!(ticked(&out), Vec::<&str>::new());
        // Every line but the heading and one blank line after it is a task item.
        assert_eq!(out.lines().count(), all.len() + 2, "{out}");
        let steps = [
            "Schedule the release party",
            "Advise users of downtime",
            "Merge the open PRs",
            "Propose and vote on release names",
            "Cut the release candidate branch",
            "QA testing sheet",
            "Polish the release notes",
            "maintenance is starting",
            "Snapshot the database in RDS",
            "graphql-engine version bumps",
            "Local docker compose to the newest graphql-engine release",
            "Staging task definition to the newest graphql-engine release",
            "Production task definition to the previous staging version",
            "Deploy the staging task definition",
            "Deploy the production task definition",
            "Merge the release candidate into production",
            "Bump the editor's package.json to 3.13.0",
            "maintenance is over",
            "Create the issue for the next release (v3.13.0)",
            "Update the user guide",
            "Send the release notes to the MUG, with the reminder to refresh the page",
            "Update staff accounts that bounced",
            "PowerBI dataflow",
            "Update this checklist",
        ];
        let mut at = 0;
        for step in steps {
            let pos = all[at..]
                .iter()
                .position(|(_, l)| l.contains(step))
                .unwrap_or_else(|| panic!("{step:?} missing or out of order in\n{out}"));
            at += pos + 1;
        }
        // Nothing to say about steps that did not happen.
        assert!(line_of(&out, "Advise users of downtime").ends_with("ahead of time"));
        assert!(line_of(&out, "bounced").ends_with("that bounced"));
    }

    #[test]
    fn the_whole_party_ticks_exactly_the_notice_steps_and_lists_flagged_accounts() {
        let out = render(DEFAULT_TEMPLATE, &whole_party(), &opts()).unwrap();
        assert_eq!(out.lines().next(), Some("## Release v3.12.0 Goliad"));
        assert_eq!(
            ticked(&out),
            [
                "- [x] Advise users of downtime ahead of time: warned Thu Nov 26, 9:01 AM CST \
                 (sent 212, failed 1); moved Mon Nov 30, 10:00 AM CST, now Thu Dec 3, \
                 6:00 PM–8:00 PM CST (sent 211)",
                "- [x] Let users know maintenance is starting: Thu Dec 3, 6:03 PM CST (sent 212)",
                "- [x] Let users know maintenance is over: Thu Dec 3, 7:50 PM CST (sent 212); \
                 maintenance took 1 h 47 min",
                "- [x] Send the release notes to the MUG, with the reminder to refresh the page: \
                 Fri Dec 4, 9:01 AM CST (sent 180, failed 2, 2 bounced)",
                "  - [x] sam.o'brien@austintexas.gov (Sam O'Brien): mailboxfull, wait",
            ]
        );
        // One account still open: the step stays unticked and lists both, right below it.
        let lines: Vec<&str> = out.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains("Update staff accounts that bounced"))
            .unwrap();
        assert_eq!(
            lines[at],
            "- [ ] Update staff accounts that bounced: 2 flagged since v3.11.0, 1 still open"
        );
        assert_eq!(
            lines[at + 1],
            "  - [ ] jane.doe@austintexas.gov (Jane Doe): userunknown, deactivate in Moped"
        );
        assert!(lines[at + 2].starts_with("  - [x] sam.o'brien@"));
        assert!(lines[at + 3].starts_with("- [ ] Check the database views"));
        assert!(out.contains("- [ ] Polish the release notes (releases/v3.12.0.md)\n"));
        assert!(out.contains("  - [ ] Local docker compose to 2.50.0\n"));
        assert!(out.contains("  - [ ] Staging task definition to 2.50.0\n"));
        assert!(out.contains("  - [ ] Production task definition to 2.49.5\n"));
        assert_eq!(items(&out).len(), 27);
    }

    #[test]
    fn the_accounts_step_is_ticked_once_the_notes_went_and_none_is_open() {
        let mut f = whole_party();
        f.flagged[0].open = false;
        let out = render(DEFAULT_TEMPLATE, &f, &opts()).unwrap();
        assert!(out.contains(
            "- [x] Update staff accounts that bounced: 2 flagged since v3.11.0, all resolved\n"
        ));
        // Nobody flagged, notes sent: done, and it says none were.
        f.flagged.clear();
        let out = render(DEFAULT_TEMPLATE, &f, &opts()).unwrap();
        assert!(
            out.contains("- [x] Update staff accounts that bounced: none flagged since v3.11.0\n")
        );
        // Notes not sent yet: not done, even with every account resolved.
        let mut f = whole_party();
        f.notices.retain(|n| n.notice != "release-notes");
        f.flagged[0].open = false;
        let out = render(DEFAULT_TEMPLATE, &f, &opts()).unwrap();
        assert!(out.contains(
            "- [ ] Update staff accounts that bounced: 2 flagged since v3.11.0, all resolved\n"
        ));
        assert!(out.contains(
            "- [ ] Send the release notes to the MUG, with the reminder to refresh the page\n"
        ));
    }

    #[test]
    fn a_cancel_keeps_the_warning_ticked_with_the_cancel_noted() {
        let mut f = whole_party();
        f.window.truncate(1);
        f.notices.retain(|n| n.notice == "maintenance-scheduled");
        f.notices.truncate(1);
        f.window.push(WindowVersion {
            sequence: 1,
            change: WindowChange::Cancelled,
            recorded_at: utc(2026, 12, 1, 14, 0),
            campaign: "maintenance-cancelled/v3.12.0/1".into(),
            ..f.window[0].clone()
        });
        f.notices.push(notice(
            "maintenance-cancelled/v3.12.0/1",
            "maintenance-cancelled",
            utc(2026, 12, 1, 14, 0),
            210,
            2,
        ));
        f.maintenance_started = None;
        f.maintenance_ended = None;
        f.flagged.clear();
        let out = render(DEFAULT_TEMPLATE, &f, &opts()).unwrap();
        assert_eq!(
            ticked(&out),
            [
                "- [x] Advise users of downtime ahead of time: warned Thu Nov 26, 9:01 AM CST \
              (sent 212, failed 1) for Thu Dec 3, 5:00 PM–7:00 PM CST (window cancelled \
              Tue Dec 1, 8:00 AM CST; 210 told)"
            ]
        );
    }

    #[test]
    fn a_step_under_way_is_not_ticked_and_says_what_is_pending() {
        let mut f = empty();
        f.notices.push(NoticeFacts {
            pending: 200,
            deferred: 3,
            ..notice(
                "maintenance-start/x",
                "maintenance-start",
                utc(2026, 12, 4, 0, 2),
                0,
                0,
            )
        });
        f.notices.push(NoticeFacts {
            written: 40,
            ..notice(
                "release-notes/v3.12.0",
                "release-notes",
                utc(2026, 12, 4, 15, 0),
                0,
                0,
            )
        });
        f.notices[1].first_at = Some(utc(2026, 12, 4, 15, 5));
        let out = render(DEFAULT_TEMPLATE, &f, &opts()).unwrap();
        assert!(out.contains(
            "- [ ] Let users know maintenance is starting: nothing delivered yet (sent 0, deferred 3, pending 200)\n"
        ));
        // Written to the outbox counts as delivered.
        assert!(out.contains(
            "- [x] Send the release notes to the MUG, with the reminder to refresh the page: Fri Dec 4, 9:05 AM CST (written to the outbox 40)\n"
        ));
        assert_eq!(ticked(&out).len(), 2, "{out}");
        assert!(out.contains(
            "- [x] Update staff accounts that bounced: none flagged since the previous release\n"
        ));
    }

    #[test]
    fn hostile_text_cannot_forge_an_item_or_an_escape() {
        let clean = render(DEFAULT_TEMPLATE, &whole_party(), &opts()).unwrap();
        let mut f = whole_party();
        f.name = Some("Goliad\n- [x] forged title".into());
        f.flagged[0].name = "Jane\n- [x] forged\r\n  - [x] forged too\x1b[2J".into();
        f.flagged[0].email = "jane@x\n- [x] e".into();
        f.flagged[0].action = "\u{202e}evil\n- [x] a".into();
        f.notes_file = Some("r.md\n- [x] n".into());
        let opts = ChecklistOptions {
            graphql_engine_staging: Some("2.50.0\n- [x] g".into()),
            ..opts()
        };
        let out = render(DEFAULT_TEMPLATE, &f, &opts).unwrap();
        assert_eq!(items(&out).len(), items(&clean).len());
        assert_eq!(ticked(&out).len(), ticked(&clean).len());
        assert!(!out
            .lines()
            .any(|l| l.trim_start().starts_with("- [x] forged")));
        assert!(!out.contains('\x1b') && !out.contains('\r') && !out.contains('\u{202e}'));
        assert_eq!(
            out.lines().next(),
            Some("## Release v3.12.0 Goliad\\x0a- [x] forged title")
        );
        assert!(out.contains("(Jane\\x0a- [x] forged\\x0d\\x0a  - [x] forged too\\x1b[2J)"));
    }

    #[test]
    fn a_user_template_gets_the_same_values_and_its_errors_come_back() {
        let t = "# {{ title }} next {{ next_version }}\n\n\n\
                 - [{{ steps.release_notes.check }}] notes   \n\
                 {% for a in flagged %}  - [{{ a.check }}] {{ a.email }} {{ a.open }}\n{% endfor %}";
        let out = render(t, &whole_party(), &opts()).unwrap();
        assert_eq!(
            out,
            "# v3.12.0 Goliad next v3.13.0\n\n\
             - [x] notes\n  \
             - [ ] jane.doe@austintexas.gov true\n  \
             - [x] sam.o'brien@austintexas.gov false\n"
        );
        let err = render("- [ ] {{ nope }}", &empty(), &opts()).unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let err = render("- [ ] {% if %}", &empty(), &opts()).unwrap_err();
        assert!(!err.is_empty());
    }
}
