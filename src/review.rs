//! The review of staff accounts to update: one row per flagged contact, built from its counted
//! bounces, and the four ways to show it (a table that fits a terminal, JSON, CSV, and one
//! standalone HTML file a person can send round). Pure: rows in, text out.

use serde::Serialize;

use crate::policy::suggested_action;
use crate::store::{BounceRow, StoredContact};

/// One account that needs an admin's attention.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewRow {
    pub email: String,
    pub name: String,
    pub user_id: i64,
    pub workgroup: String,
    /// Reason of the latest bounce (user-unknown, mailbox-full, ...).
    pub reason: String,
    /// hard or soft (of the latest bounce).
    pub kind: String,
    pub status: Option<String>,
    /// Bounces counted since the account was last resolved.
    pub bounces: usize,
    pub first_seen: String,
    pub last_seen: String,
    /// Campaign keys of the notices that bounced.
    pub notices: Vec<String>,
    pub last_diagnostic: Option<String>,
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
    // The worst bounce decides the action: a hard one, if any, else the latest.
    let decisive = bounces
        .iter()
        .rev()
        .find(|b| b.kind == "hard")
        .unwrap_or(last);
    Some(ReviewRow {
        email: contact.contact.email.clone(),
        name: contact.contact.full_name(),
        user_id: contact.contact.user_id,
        workgroup: contact.contact.workgroup.clone(),
        reason: decisive.reason.clone(),
        kind: decisive.kind.clone(),
        status: decisive.status.clone(),
        bounces: bounces.len(),
        first_seen: first.occurred_at.clone(),
        last_seen: last.occurred_at.clone(),
        notices,
        last_diagnostic: bounces.iter().rev().find_map(|b| b.diagnostic.clone()),
        action: suggested_action(&decisive.kind, &decisive.reason, decisive.status.as_deref())
            .to_string(),
        in_export: contact.in_export,
    })
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

/// A table for a terminal of `width` columns (at least 80 are assumed).
pub fn table(rows: &[ReviewRow], unmatched: usize, width: usize) -> String {
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
                r.reason.clone(),
                r.kind.clone(),
                r.bounces.to_string(),
                day(&r.last_seen).to_string(),
                r.action.clone(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for c in &cells {
        for (i, v) in c.iter().enumerate() {
            widths[i] = widths[i].max(v.chars().count());
        }
    }
    // Shrink the free-text columns (action, then name) until the table fits; the address is
    // what the admin acts on, so it is never cut.
    let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * (w.len() - 1);
    for (col, min) in [(7usize, 20usize), (1, 10)] {
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
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("No accounts need an update.\n");
    } else {
        out.push_str(&line(&header.map(str::to_string)));
        out.push('\n');
        for c in &cells {
            out.push_str(&line(c));
            out.push('\n');
        }
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
    out
}

/// CSV with every column; notices joined with `; `.
pub fn csv(rows: &[ReviewRow]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
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
    ])?;
    for r in rows {
        w.write_record([
            r.email.clone(),
            r.name.clone(),
            r.user_id.to_string(),
            r.workgroup.clone(),
            r.reason.clone(),
            r.kind.clone(),
            r.status.clone().unwrap_or_default(),
            r.bounces.to_string(),
            r.first_seen.clone(),
            r.last_seen.clone(),
            r.notices.join("; "),
            r.last_diagnostic.clone().unwrap_or_default(),
            r.action.clone(),
            r.in_export.to_string(),
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Escape text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
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

/// One standalone HTML page (styles inline in a `<style>` block, no scripts, no external
/// resources) that can be mailed or opened from disk.
pub fn html(rows: &[ReviewRow], unmatched: usize, generated: &str) -> String {
    let mut body = String::new();
    for r in rows {
        body.push_str(&format!(
            "<tr class=\"{kind}\"><td><a href=\"mailto:{email}\">{email}</a></td><td>{name}</td><td>{id}</td><td>{wg}</td>\
             <td><span class=\"tag\">{reason}</span> {kind}{status}</td><td class=\"n\">{n}</td><td class=\"d\">{first}</td><td class=\"d\">{last}</td>\
             <td>{notices}</td><td class=\"diag\">{diag}</td><td><strong>{action}</strong>{gone}</td></tr>\n",
            kind = escape_html(&r.kind),
            email = escape_html(&r.email),
            name = escape_html(&r.name),
            id = r.user_id,
            wg = escape_html(&r.workgroup),
            reason = escape_html(&r.reason),
            status = r
                .status
                .as_deref()
                .map(|s| format!(" ({})", escape_html(s)))
                .unwrap_or_default(),
            n = r.bounces,
            first = escape_html(day(&r.first_seen)),
            last = escape_html(day(&r.last_seen)),
            notices = r
                .notices
                .iter()
                .map(|n| escape_html(n))
                .collect::<Vec<_>>()
                .join("<br>"),
            diag = escape_html(r.last_diagnostic.as_deref().unwrap_or("")),
            action = escape_html(&r.action),
            gone = if r.in_export {
                ""
            } else {
                "<br><em>no longer in the contacts export</em>"
            },
        ));
    }
    let summary = if rows.is_empty() {
        "No accounts need an update.".to_string()
    } else {
        format!(
            "{} account{} to update in Moped.",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        )
    };
    let unmatched_line = if unmatched > 0 {
        format!("<p>{unmatched} bounce(s) matched no contact.</p>")
    } else {
        String::new()
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Moped accounts to update after bounced mail</title>
<style>
body {{ font-family: "Segoe UI", Arial, sans-serif; color: #1f2937; margin: 24px; }}
h1 {{ font-size: 22px; margin: 0 0 4px 0; }}
p {{ margin: 4px 0 12px 0; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
th, td {{ border: 1px solid #d1d5db; padding: 4px 6px; text-align: left; vertical-align: top; }}
th {{ background: #f3f4f6; }}
tr.hard td:first-child {{ border-left: 4px solid #b91c1c; }}
tr.soft td:first-child {{ border-left: 4px solid #d97706; }}
.tag {{ font-weight: bold; }}
.n {{ text-align: right; }}
.d {{ white-space: nowrap; }}
.diag {{ font-family: Consolas, monospace; font-size: 12px; color: #4b5563; max-width: 420px; }}
</style>
</head>
<body>
<h1>Moped accounts to update after bounced mail</h1>
<p>Generated {generated}. {summary} Nothing has been changed in Moped: an admin decides for each account.</p>
{unmatched_line}
<table>
<thead><tr><th>Email</th><th>Name</th><th>User ID</th><th>Workgroup</th><th>Reason</th><th>Bounces</th><th>First seen</th><th>Last seen</th><th>Notices</th><th>Last diagnostic</th><th>Suggested action</th></tr></thead>
<tbody>
{body}</tbody>
</table>
</body>
</html>
"#,
        generated = escape_html(generated),
    )
}
