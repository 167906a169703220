//! The review of staff accounts to update: one row per flagged contact, built from its counted
//! bounces, plus the unverified bounces (tied to a contact by address only, never counted) under
//! their own heading, and the four ways to show it (a table that fits a terminal, JSON, CSV, and
//! one standalone HTML file a person can send round), and the lines of `bounces show`. Pure: rows
//! in, text out. Text taken from
//! mail or exports is made inert here: escaped for terminals (`inert::line`), neutralised for
//! spreadsheets (`inert::csv_cell`), escaped for HTML by the page template's autoescape (`templates/review.html`), and JSON with what a
//! terminal would act on written as `\uXXXX` (`json_text`).

use std::borrow::Cow;

use serde::Serialize;

use crate::bounce::{Action, BounceKind, Reason};
use crate::inert;
use crate::policy::suggested_action;
use crate::store::{AccountEvent, BounceRow, StoredContact};

/// One account that needs an admin's attention.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewRow {
    pub email: String,
    pub name: String,
    pub user_id: i64,
    pub workgroup: String,
    /// Reason of the bounce that decides the row (`userunknown`, `mailboxfull`, ...): the latest
    /// hard one, else the latest failure (a delay warning only when there is nothing else).
    pub reason: Reason,
    /// hard or soft (of that bounce).
    pub kind: BounceKind,
    /// The remote gave up for good (5xx) on that bounce.
    pub permanent: bool,
    pub status: Option<String>,
    /// Bounces counted since the account was last resolved.
    pub bounces: usize,
    pub first_seen: String,
    pub last_seen: String,
    /// Campaign keys of the notices that bounced.
    pub notices: Vec<String>,
    pub last_diagnostic: Option<String>,
    /// What to do, from the reason ([`suggested_action`]): "deactivate in Moped", "fix the
    /// address in Moped", "ask IT to let our mail through" or "wait".
    pub action: String,
    /// Still in the latest contacts export.
    pub in_export: bool,
}

/// Build the row for `contact` from its counted bounces (oldest first); `None` when there are
/// none.
pub fn row(contact: &StoredContact, bounces: &[BounceRow]) -> Option<ReviewRow> {
    let first = bounces.first()?;
    let last = bounces.last()?;
    let mut notices: Vec<String> = bounces.iter().filter_map(|b| b.campaign.clone()).collect();
    notices.sort();
    notices.dedup();
    // The worst bounce decides the action: a hard one, if any, else the latest failure (a delay
    // warning is no failure and counts toward nothing), else the latest.
    let decisive = bounces
        .iter()
        .rev()
        .find(|b| b.kind == BounceKind::Hard)
        .or_else(|| bounces.iter().rev().find(|b| !b.delayed))
        .unwrap_or(last);
    Some(ReviewRow {
        email: contact.contact.email.clone(),
        name: contact.contact.full_name(),
        user_id: contact.contact.user_id,
        workgroup: contact.contact.workgroup.clone(),
        reason: decisive.reason,
        kind: decisive.kind,
        permanent: decisive.permanent,
        status: decisive.status.clone(),
        bounces: bounces.len(),
        first_seen: first.occurred_at.clone(),
        last_seen: last.occurred_at.clone(),
        notices,
        last_diagnostic: bounces.iter().rev().find_map(|b| b.diagnostic.clone()),
        action: suggested_action(decisive.reason).text().to_string(),
        in_export: contact.in_export,
    })
}

/// One unverified bounce of a contact: shown, with why, never counted toward a flag.
#[derive(Debug, Clone, Serialize)]
pub struct UnverifiedRow {
    /// The contact it was tied to by address.
    pub email: String,
    pub name: String,
    pub user_id: i64,
    pub workgroup: String,
    /// The address the bounce names.
    pub address: String,
    pub kind: BounceKind,
    /// The remote gave up for good (5xx).
    pub permanent: bool,
    pub reason: Reason,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    pub occurred_at: String,
    /// Where it came from (file, `file:N`, `imap:FOLDER/UID`).
    pub origin: String,
    /// Why it is not verified ("VERP token failed its check", ...).
    pub why: String,
}

/// The review line of one unverified bounce of `contact`.
pub fn unverified_row(contact: &StoredContact, b: &BounceRow) -> UnverifiedRow {
    UnverifiedRow {
        email: contact.contact.email.clone(),
        name: contact.contact.full_name(),
        user_id: contact.contact.user_id,
        workgroup: contact.contact.workgroup.clone(),
        address: b.address.clone(),
        kind: b.kind,
        permanent: b.permanent,
        reason: b.reason,
        status: b.status.clone(),
        diagnostic: b.diagnostic.clone(),
        occurred_at: b.occurred_at.clone(),
        origin: b.origin.clone(),
        why: b
            .unverified_reason
            .clone()
            .unwrap_or_else(|| "not verified".to_string()),
    }
}

/// The heading of the unverified section, in every format.
pub const UNVERIFIED_HEADING: &str =
    "Unverified bounces (not counted: nobody is flagged or skipped by them)";

/// What each of the four suggested actions means, in the order the review explains them.
pub const ACTION_NOTES: [(Action, &str); 4] = [
    (
        Action::Deactivate,
        "the mailbox is gone (userunknown): the person has most likely left the City",
    ),
    (
        Action::FixAddress,
        "the address is wrong (hostunknown, hasmoved, notaccept): correct it in Moped; a new \
         address in the contacts export lifts the flag",
    ),
    (
        Action::AskIt,
        "the account is fine, but the recipient's side refused our mail (filtered, rejected, \
         blocked, spamdetected, policyviolation, authfailure...): ask the City's IT to let \
         notices through, then resolve the flag",
    ),
    (
        Action::Wait,
        "the account is fine and the trouble passes (mailboxfull, expired, networkerror, \
         systemerror...): nothing to change in Moped; resolve the flag and the next notice goes \
         to it",
    ),
];

/// [`ACTION_NOTES`] for a page: `{"action", "means"}` each.
fn action_notes() -> Vec<serde_json::Value> {
    ACTION_NOTES
        .iter()
        .map(|(a, means)| serde_json::json!({"action": a.text(), "means": means}))
        .collect()
}

fn day(ts: &str) -> &str {
    ts.get(..10).unwrap_or(ts)
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Columns laid out for a terminal of `width` columns: every cell made inert (one line, control
/// characters escaped), free-text columns in `shrink` (column, minimum width) cut in that order
/// until the table fits.
fn layout<const N: usize>(
    header: [&str; N],
    cells: &[[String; N]],
    width: usize,
    shrink: &[(usize, usize)],
) -> String {
    let cells: Vec<[String; N]> = cells
        .iter()
        .map(|c| c.clone().map(|v| inert::line(&v).into_owned()))
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for c in &cells {
        for (i, v) in c.iter().enumerate() {
            widths[i] = widths[i].max(v.chars().count());
        }
    }
    let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * (w.len() - 1);
    for &(col, min) in shrink {
        let over = total(&widths).saturating_sub(width);
        if over > 0 {
            widths[col] = widths[col].saturating_sub(over).max(min);
        }
    }
    let line = |vals: &[String]| {
        vals.iter()
            .enumerate()
            .map(|(i, v)| format!("{:<w$}", clip(v, widths[i]), w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&header.map(str::to_string));
    out.push('\n');
    for c in &cells {
        out.push_str(&line(c));
        out.push('\n');
    }
    out
}

/// A table for a terminal of `width` columns (at least 80 are assumed): the flagged accounts,
/// then the unverified bounces under their own heading.
pub fn table(
    rows: &[ReviewRow],
    unmatched: usize,
    unverified: &[UnverifiedRow],
    width: usize,
) -> String {
    let width = width.max(80);
    let header = [
        "EMAIL",
        "NAME",
        "ID",
        "REASON",
        "KIND",
        "N",
        "LAST SEEN",
        "ACTION",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.email.clone(),
                r.name.clone(),
                r.user_id.to_string(),
                r.reason.as_str().to_string(),
                r.kind.as_str().to_string(),
                r.bounces.to_string(),
                day(&r.last_seen).to_string(),
                r.action.clone(),
            ]
        })
        .collect();
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("No accounts need an update.\n");
    } else {
        // Shrink the free-text columns (action, then name) until the table fits; the address
        // is what the admin acts on, so it is never cut.
        out.push_str(&layout(header, &cells, width, &[(7, 20), (1, 10)]));
        out.push_str(&format!(
            "{} account{} to update in Moped.\nDetails: notify bounces show EMAIL. When done: notify bounces resolve EMAIL --note TEXT.\n",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        ));
    }
    if unmatched > 0 {
        out.push_str(&format!(
            "{unmatched} bounce(s) matched no contact; see `notify bounces show ADDRESS`.\n"
        ));
    }
    if !unverified.is_empty() {
        out.push('\n');
        out.push_str(&unverified_table(unverified, width));
    }
    out
}

/// The unverified bounces for a terminal of `width` columns, under their heading.
pub fn unverified_table(unverified: &[UnverifiedRow], width: usize) -> String {
    if unverified.is_empty() {
        return "No unverified bounces.\n".to_string();
    }
    let width = width.max(80);
    let header = [
        "EMAIL",
        "NAME",
        "REASON",
        "KIND",
        "SEEN",
        "WHY UNVERIFIED",
        "FROM",
    ];
    let cells: Vec<[String; 7]> = unverified
        .iter()
        .map(|u| {
            [
                u.email.clone(),
                u.name.clone(),
                u.reason.as_str().to_string(),
                u.kind.as_str().to_string(),
                day(&u.occurred_at).to_string(),
                u.why.clone(),
                u.origin.clone(),
            ]
        })
        .collect();
    format!(
        "{UNVERIFIED_HEADING}:\n{}{} unverified bounce{}, matched only by address: not counted.\nDetails: notify bounces show EMAIL.\n",
        layout(header, &cells, width, &[(6, 12), (5, 24), (1, 10)]),
        unverified.len(),
        if unverified.len() == 1 { "" } else { "s" }
    )
}

/// One CSV record of untrusted text: each cell on one line (control characters escaped) and
/// neutralised against formula injection, padded with empty cells to `width`.
fn csv_record(vals: Vec<String>, width: usize) -> Vec<String> {
    let mut out: Vec<String> = vals
        .iter()
        .map(|v| inert::csv_cell(&inert::line(v)).into_owned())
        .collect();
    out.resize(out.len().max(width), String::new());
    out
}

const REVIEW_COLUMNS: [&str; 15] = [
    "email",
    "name",
    "user_id",
    "workgroup",
    "reason",
    "kind",
    "status",
    "bounces",
    "first_seen",
    "last_seen",
    "notices",
    "last_diagnostic",
    "action",
    "in_export",
    "permanent",
];

const UNVERIFIED_COLUMNS: [&str; 13] = [
    "email",
    "name",
    "user_id",
    "workgroup",
    "address",
    "kind",
    "reason",
    "status",
    "occurred_at",
    "origin",
    "diagnostic",
    "why_unverified",
    "permanent",
];

fn unverified_record(u: &UnverifiedRow, width: usize) -> Vec<String> {
    csv_record(
        vec![
            u.email.clone(),
            u.name.clone(),
            u.user_id.to_string(),
            u.workgroup.clone(),
            u.address.clone(),
            u.kind.as_str().to_string(),
            u.reason.as_str().to_string(),
            u.status.clone().unwrap_or_default(),
            u.occurred_at.clone(),
            u.origin.clone(),
            u.diagnostic.clone().unwrap_or_default(),
            u.why.clone(),
            u.permanent.to_string(),
        ],
        width,
    )
}

/// CSV with every column; notices joined with `; `. When there are unverified bounces they
/// follow under their own heading: an empty record, a record with the heading, their own header
/// record and one record each (every record has the same number of cells, so a spreadsheet
/// opens it as one sheet).
pub fn csv(rows: &[ReviewRow], unverified: &[UnverifiedRow]) -> Result<String, csv::Error> {
    let width = REVIEW_COLUMNS.len();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(REVIEW_COLUMNS)?;
    for r in rows {
        w.write_record(csv_record(
            vec![
                r.email.clone(),
                r.name.clone(),
                r.user_id.to_string(),
                r.workgroup.clone(),
                r.reason.as_str().to_string(),
                r.kind.as_str().to_string(),
                r.status.clone().unwrap_or_default(),
                r.bounces.to_string(),
                r.first_seen.clone(),
                r.last_seen.clone(),
                r.notices.join("; "),
                r.last_diagnostic.clone().unwrap_or_default(),
                r.action.clone(),
                r.in_export.to_string(),
                r.permanent.to_string(),
            ],
            width,
        ))?;
    }
    if !unverified.is_empty() {
        w.write_record(csv_record(Vec::new(), width))?;
        w.write_record(csv_record(vec![UNVERIFIED_HEADING.to_string()], width))?;
        w.write_record(csv_record(
            UNVERIFIED_COLUMNS.iter().map(|c| c.to_string()).collect(),
            width,
        ))?;
        for u in unverified {
            w.write_record(unverified_record(u, width))?;
        }
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The unverified bounces alone as CSV (`bounces report --unverified --format csv`).
pub fn unverified_csv(unverified: &[UnverifiedRow]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(UNVERIFIED_COLUMNS)?;
    for u in unverified {
        w.write_record(unverified_record(u, UNVERIFIED_COLUMNS.len()))?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The review page template (`templates/review.html`), built into the binary.
const PAGE_TEMPLATE: &str = include_str!("../templates/review.html");

/// One flagged account as the page shows it: text from mail or exports made inert for the
/// screen first; the template's autoescape then escapes it for HTML.
#[derive(Serialize)]
struct PageRow<'a> {
    kind: &'static str,
    permanent: bool,
    email: Cow<'a, str>,
    name: Cow<'a, str>,
    user_id: i64,
    workgroup: Cow<'a, str>,
    reason: &'static str,
    status: Option<Cow<'a, str>>,
    bounces: usize,
    first_seen: Cow<'a, str>,
    last_seen: Cow<'a, str>,
    notices: Vec<Cow<'a, str>>,
    diagnostic: Cow<'a, str>,
    action: Cow<'a, str>,
    in_export: bool,
}

/// One unverified bounce as the page shows it.
#[derive(Serialize)]
struct PageUnverified<'a> {
    email: Cow<'a, str>,
    name: Cow<'a, str>,
    user_id: i64,
    address: Cow<'a, str>,
    reason: &'static str,
    kind: &'static str,
    permanent: bool,
    status: Option<Cow<'a, str>>,
    seen: Cow<'a, str>,
    why: Cow<'a, str>,
    diagnostic: Cow<'a, str>,
    origin: Cow<'a, str>,
}

fn page_row(r: &ReviewRow) -> PageRow<'_> {
    PageRow {
        kind: r.kind.as_str(),
        permanent: r.permanent,
        email: inert::line(&r.email),
        name: inert::line(&r.name),
        user_id: r.user_id,
        workgroup: inert::line(&r.workgroup),
        reason: r.reason.as_str(),
        status: r.status.as_deref().map(inert::line),
        bounces: r.bounces,
        first_seen: inert::line(day(&r.first_seen)),
        last_seen: inert::line(day(&r.last_seen)),
        notices: r.notices.iter().map(|n| inert::line(n)).collect(),
        diagnostic: inert::line(r.last_diagnostic.as_deref().unwrap_or("")),
        action: inert::line(&r.action),
        in_export: r.in_export,
    }
}

fn page_unverified(u: &UnverifiedRow) -> PageUnverified<'_> {
    PageUnverified {
        email: inert::line(&u.email),
        name: inert::line(&u.name),
        user_id: u.user_id,
        address: inert::line(&u.address),
        reason: u.reason.as_str(),
        kind: u.kind.as_str(),
        permanent: u.permanent,
        status: u.status.as_deref().map(inert::line),
        seen: inert::line(day(&u.occurred_at)),
        why: inert::line(&u.why),
        diagnostic: inert::line(u.diagnostic.as_deref().unwrap_or("")),
        origin: inert::line(&u.origin),
    }
}

/// The page's escaping of every value: the five characters that matter in element content and
/// quoted attributes (Tera's default also rewrites `/`, which HTML does not need).
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Render the page template with autoescape (the template's name ends in `.html`).
fn page(
    title: &str,
    rows: &[ReviewRow],
    unmatched: usize,
    unverified: &[UnverifiedRow],
    generated: &str,
    only_unverified: bool,
) -> Result<String, tera::Error> {
    let mut tera = tera::Tera::default();
    tera.add_raw_template("review.html", PAGE_TEMPLATE)?;
    tera.set_escape_fn(escape_html);
    let mut context = tera::Context::new();
    context.insert("title", title);
    context.insert("generated", &inert::line(generated));
    context.insert("rows", &rows.iter().map(page_row).collect::<Vec<_>>());
    context.insert("unmatched", &unmatched);
    context.insert(
        "unverified",
        &unverified.iter().map(page_unverified).collect::<Vec<_>>(),
    );
    context.insert("unverified_heading", UNVERIFIED_HEADING);
    context.insert("only_unverified", &only_unverified);
    context.insert("actions", &action_notes());
    tera.render("review.html", &context)
}

/// The unverified bounces alone as a standalone HTML page (`bounces report --unverified`).
pub fn unverified_html(
    unverified: &[UnverifiedRow],
    generated: &str,
) -> Result<String, tera::Error> {
    page("Unverified bounces", &[], 0, unverified, generated, true)
}

/// One standalone HTML page (styles inline in a `<style>` block, no scripts, no external
/// resources) that can be mailed or opened from disk: the flagged accounts, then the unverified
/// bounces under their own heading.
pub fn html(
    rows: &[ReviewRow],
    unmatched: usize,
    unverified: &[UnverifiedRow],
    generated: &str,
) -> Result<String, tera::Error> {
    page(
        "Moped accounts to update after bounced mail",
        rows,
        unmatched,
        unverified,
        generated,
        false,
    )
}

/// `bounces show`: the first line, about the contact with `address` (or that there is none);
/// for a flagged contact, its review `row` adds what to do and why (`NEEDS UPDATE: deactivate in
/// Moped (userunknown, hard, 5.1.1)`).
pub fn show_contact(
    contact: Option<&StoredContact>,
    row: Option<&ReviewRow>,
    address: &str,
) -> String {
    let l = |s: &str| inert::line(s).into_owned();
    match contact {
        Some(c) => format!(
            "{} <{}>  user_id {}  {}  {}",
            l(&c.contact.full_name()),
            l(&c.contact.email),
            c.contact.user_id,
            l(&c.contact.workgroup),
            match row {
                _ if !c.needs_update && !c.in_export => "not in the contacts export".to_string(),
                _ if !c.needs_update => "ok".to_string(),
                None => "NEEDS UPDATE".to_string(),
                Some(r) => format!(
                    "NEEDS UPDATE: {} ({}, {}{})",
                    r.action,
                    r.reason.as_str(),
                    r.kind.as_str(),
                    r.status
                        .as_deref()
                        .map(|s| format!(", {}", l(s)))
                        .unwrap_or_default()
                ),
            }
        ),
        None => format!("{}: not a contact (bounces kept as unmatched)", l(address)),
    }
}

/// `bounces show`: one line of a contact's flag history.
pub fn show_event(e: &AccountEvent) -> String {
    let l = |s: &str| inert::line(s).into_owned();
    format!(
        "  {}  {}{}",
        l(&e.at),
        l(&e.event),
        if e.note.is_empty() {
            String::new()
        } else {
            format!(": {}", l(&e.note))
        }
    )
}

/// `bounces show`: the lines of one bounce (no final newline).
pub fn show_bounce(b: &BounceRow) -> String {
    let l = |s: &str| inert::line(s).into_owned();
    let mut out = format!(
        "  {}  {} {}{} {}  {}  notice {}  matched by {}  from {}{}",
        l(&b.occurred_at),
        b.kind.as_str(),
        b.reason.as_str(),
        if b.delayed { " (delayed)" } else { "" },
        l(b.status.as_deref().unwrap_or("-")),
        l(&b.address),
        l(b.campaign.as_deref().unwrap_or("-")),
        b.matched_by.as_str(),
        l(&b.origin),
        if b.verified { "" } else { "  UNVERIFIED" }
    );
    if let Some(why) = &b.unverified_reason {
        out.push_str(&format!("\n      unverified (not counted): {}", l(why)));
    }
    if let Some(d) = &b.diagnostic {
        out.push_str(&format!("\n      diagnostic: {}", l(d)));
    }
    if let Some(m) = &b.remote_mta {
        out.push_str(&format!("\n      remote MTA: {}", l(m)));
    }
    out
}

/// `bounces show --raw`: a raw source, indented between markers, each line kept but made inert
/// (no final newline).
pub fn show_raw(bytes: &[u8]) -> String {
    let mut out = String::from("      ---- raw source ----\n");
    for line in String::from_utf8_lossy(bytes).lines() {
        out.push_str(&format!("      {}\n", inert::text(line)));
    }
    out.push_str("      ---- end ----");
    out
}

/// Pretty JSON with a final newline, and with the characters JSON does not escape by itself but
/// a terminal may act on (DEL, C1 controls, bidi overrides) written as `\uXXXX`: the same JSON
/// value, inert on a terminal.
pub fn json_text<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    let mut s = inert_json(serde_json::to_string_pretty(value)?);
    s.push('\n');
    Ok(s)
}

/// Serialized JSON with DEL, C1 controls and bidi overrides escaped. JSON escapes C0 controls
/// itself, so those below U+0020 outside strings are only its own whitespace; the others can only
/// occur inside strings, where `\uXXXX` means the same character.
pub fn inert_json(json: String) -> String {
    // JSON escapes C0 controls itself; the rest a terminal would act on is escaped here.
    let risky = |c: char| (c as u32) >= 0x20 && inert::is_unsafe(c);
    // Printable ASCII is never risky (and the C0 controls are JSON's to escape): most lines are
    // told safe by a scan of their bytes, without decoding a character.
    if json.bytes().all(|b| b < 0x7f) || !json.chars().any(risky) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if risky(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_output_escapes_what_a_terminal_would_act_on_and_means_the_same() {
        let value =
            serde_json::json!({"d": "a\u{1b}[2J b\u{9b}c \u{202e}txt\u{7f}", "n": "plain é"});
        let pretty = json_text(&value).unwrap();
        assert!(pretty.ends_with('\n'));
        assert!(
            !pretty
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{pretty:?}"
        );
        assert!(pretty.contains("\\u202e") && pretty.contains("\\u009b") && pretty.contains("é"));
        let back: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(back, value);
        let plain = serde_json::to_string(&serde_json::json!({"a": "b"})).unwrap();
        assert_eq!(inert_json(plain.clone()), plain);
    }
    fn bounce(id: i64, kind: BounceKind, reason: Reason, status: &str) -> BounceRow {
        BounceRow {
            id,
            address: "ana@austintexas.gov".into(),
            kind,
            permanent: status.starts_with('5'),
            delayed: false,
            status: Some(status.into()),
            reason,
            diagnostic: Some(format!("diagnostic {id}")),
            remote_mta: None,
            contact_id: Some(1),
            campaign: Some(format!("notice-{id}")),
            matched_by: crate::store::MatchedBy::Verp,
            origin: "file.eml".into(),
            occurred_at: format!("2026-11-0{id}T10:00:00Z"),
            verified: true,
            unverified_reason: None,
        }
    }

    fn ana() -> StoredContact {
        StoredContact {
            id: 1,
            contact: crate::contacts::Contact {
                user_id: 7,
                first_name: "Ana".into(),
                last_name: "Ruiz".into(),
                email: "ana@austintexas.gov".into(),
                title: String::new(),
                workgroup: "Transportation".into(),
                roles: Vec::new(),
                is_coa_staff: true,
                is_deleted: false,
                is_user_group_member: true,
                note: String::new(),
                date_added: String::new(),
                last_seen_date: String::new(),
            },
            in_export: true,
            needs_update: true,
        }
    }

    #[test]
    fn a_hard_bounce_decides_the_row_over_a_later_soft_one() {
        let bounces = [
            bounce(1, BounceKind::Hard, Reason::UserUnknown, "5.1.1"),
            bounce(2, BounceKind::Soft, Reason::MailboxFull, "4.2.2"),
        ];
        let r = row(&ana(), &bounces).unwrap();
        assert_eq!((r.kind, r.reason), (BounceKind::Hard, Reason::UserUnknown));
        assert_eq!(r.action, "deactivate in Moped");
        assert!(r.permanent);
        assert_eq!(r.bounces, 2);
        assert_eq!(r.last_diagnostic.as_deref(), Some("diagnostic 2"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["kind"], "hard");
        assert_eq!(json["reason"], "userunknown");
        assert_eq!(json["action"], "deactivate in Moped");
        assert_eq!(json["permanent"], true);
        let soft = row(&ana(), &bounces[1..]).unwrap();
        assert_eq!(soft.kind, BounceKind::Soft);
        assert_eq!(soft.action, "wait");
        assert!(!soft.permanent);
        assert!(row(&ana(), &[]).is_none());
    }

    #[test]
    fn each_reason_shows_its_own_action_and_a_delay_warning_never_decides() {
        for (reason, status, action) in [
            (Reason::HasMoved, "5.1.6", "fix the address in Moped"),
            (Reason::HostUnknown, "5.1.2", "fix the address in Moped"),
            (Reason::Filtered, "5.2.0", "ask IT to let our mail through"),
            (Reason::Rejected, "5.7.1", "ask IT to let our mail through"),
            (
                Reason::RequirePtr,
                "5.7.25",
                "ask IT to let our mail through",
            ),
            (Reason::Expired, "4.4.7", "wait"),
        ] {
            let kind = BounceKind::of(reason, status.starts_with('5'));
            let r = row(&ana(), &[bounce(1, kind, reason, status)]).unwrap();
            assert_eq!(
                (r.reason, r.action.as_str()),
                (reason, action),
                "{reason:?}"
            );
        }
        // Soft failures then a delay warning: the failure decides, the warning is still listed.
        let bounces = [
            bounce(1, BounceKind::Soft, Reason::Blocked, "5.7.1"),
            BounceRow {
                delayed: true,
                ..bounce(2, BounceKind::Soft, Reason::NetworkError, "4.4.1")
            },
        ];
        let r = row(&ana(), &bounces).unwrap();
        assert_eq!(r.reason, Reason::Blocked);
        assert_eq!(r.action, "ask IT to let our mail through");
        assert_eq!(r.bounces, 2);
        assert_eq!(r.last_seen, bounces[1].occurred_at);
    }

    #[test]
    fn the_html_page_escapes_every_value_and_keeps_its_shape() {
        let mut evil = ana();
        evil.contact.first_name = "<script>alert(1)</script>".into();
        evil.contact.workgroup = "Signals & \"Markings\" \u{1b}[31m".into();
        let mut b = bounce(1, BounceKind::Hard, Reason::UserUnknown, "5.1.1");
        b.diagnostic = Some("550 <img src=x onerror=alert(2)> 'x'".into());
        let mut r = row(&evil, &[b.clone()]).unwrap();
        r.in_export = false;
        let mut u = unverified_row(&evil, &b);
        u.why = "no token </td>".into();
        let page = html(&[r], 2, &[u], "2026-11-30 09:00").unwrap();
        assert!(
            page.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"),
            "{page}"
        );
        assert!(page.ends_with("</body>\n</html>\n"), "{page}");
        for escaped in [
            "&lt;script&gt;alert(1)&lt;/script&gt;",
            "Signals &amp; &quot;Markings&quot; \\x1b[31m",
            "550 &lt;img src=x onerror=alert(2)&gt; &#39;x&#39;",
            "no token &lt;/td&gt;",
        ] {
            assert!(page.contains(escaped), "{escaped} in {page}");
        }
        assert!(!page.contains("<script") && !page.contains("<img") && !page.contains('\u{1b}'));
        assert!(page.contains("<p>Generated 2026-11-30 09:00. 1 account to update in Moped."));
        assert!(page.contains("<p>2 bounce(s) matched no contact.</p>"));
        assert!(page.contains("<tr class=\"hard\"><td><a href=\"mailto:ana@austintexas.gov\">"));
        assert!(page.contains("<br><em>no longer in the contacts export</em>"));
        assert!(page.contains(&format!("<h2>{UNVERIFIED_HEADING}</h2>")));
        assert!(page.contains("<p>1 bounce matched only by address"));
        assert_eq!(page.matches("<tr>").count(), 3, "{page}");

        let none = html(&[], 0, &[], "today").unwrap();
        assert!(none.contains("No accounts need an update.") && !none.contains("<h2>"));
        assert!(!none.contains("matched no contact"));
        let alone = unverified_html(&[], "today").unwrap();
        assert!(alone.contains("<h1>Unverified bounces</h1>"));
        assert!(alone.contains("<p>No unverified bounces.</p>") && !alone.contains("<table"));
    }

    #[test]
    fn show_lines_name_kind_and_reason_and_escape_what_came_from_mail() {
        let mut b = bounce(3, BounceKind::Soft, Reason::PolicyViolation, "5.7.1");
        b.verified = false;
        b.unverified_reason = Some("no token".into());
        b.diagnostic = Some("550 \u{1b}[2J blocked".into());
        let text = show_bounce(&b);
        assert!(
            text.starts_with(
                "  2026-11-03T10:00:00Z  soft policyviolation 5.7.1  ana@austintexas.gov"
            ),
            "{text}"
        );
        assert!(text.contains("  UNVERIFIED\n      unverified (not counted): no token"));
        assert!(!text.contains('\u{1b}'), "{text:?}");
        let raw = show_raw(b"Subject: x\r\n\tfolded \x1b]0;t\x07\r\n");
        assert!(raw.starts_with("      ---- raw source ----\n      Subject: x\n      \tfolded "));
        assert!(raw.ends_with("\n      ---- end ----"));
        assert!(!raw.contains('\u{1b}') && !raw.contains('\u{7}'), "{raw:?}");
        assert_eq!(
            show_contact(Some(&ana()), None, "ana@austintexas.gov"),
            "Ana Ruiz <ana@austintexas.gov>  user_id 7  Transportation  NEEDS UPDATE"
        );
        let hard = row(
            &ana(),
            &[bounce(1, BounceKind::Hard, Reason::UserUnknown, "5.1.1")],
        );
        assert_eq!(
            show_contact(Some(&ana()), hard.as_ref(), "ana@austintexas.gov"),
            "Ana Ruiz <ana@austintexas.gov>  user_id 7  Transportation  NEEDS UPDATE: \
             deactivate in Moped (userunknown, hard, 5.1.1)"
        );
        let mut fine = ana();
        fine.needs_update = false;
        assert!(show_contact(Some(&fine), None, "ana@austintexas.gov").ends_with("  ok"));
        let none = show_contact(None, None, "x\u{1b}@example.com");
        assert!(!none.contains('\u{1b}'), "{none:?}");
        assert!(none.ends_with("@example.com: not a contact (bounces kept as unmatched)"));
    }
}
