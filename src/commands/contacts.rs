//! `notify contacts import|list`: read the arguments, check the file, run the sync
//! ([`crate::sync`] owns it, the same one every notice run does first), print the summary or
//! the list (JSON, CSV with formula-inert cells, or a table).

use std::io::Write;

use crate::cli::{ContactsCommand, ListFormat, SummaryFormat};
use crate::config::Config;
use crate::contacts::{self, Contact, ImportedSource, IMPORTED_SOURCE_SETTING};
use crate::inert;
use crate::store::{self, Store, StoredContact};
use crate::sync::SyncRequest;

pub async fn run(cfg: &Config, cmd: ContactsCommand) -> anyhow::Result<()> {
    match cmd {
        ContactsCommand::Import {
            file,
            format,
            dry_run,
            allow_removals,
        } => {
            // Each row is checked before the database is opened (a bad file creates not even
            // an empty one), and again with the duplicates as the file streams into it.
            contacts::check_rows(&file)?;
            let store = Store::open(&cfg.database_url).await?;
            // The imported file stays the source of notice runs until the configured file
            // changes; importing the configured file itself makes it the source again.
            let imported = contacts::absolute(&file);
            let explicit = imported != contacts::absolute(&cfg.contacts);
            let record = if explicit {
                let source = ImportedSource {
                    file: imported,
                    config: contacts::config_fingerprint(&cfg.contacts),
                    imported_at: store::now_text(),
                };
                Some(serde_json::to_string(&source)?)
            } else {
                None
            };
            let request = SyncRequest {
                path: &file,
                digest: None,
                dry_run,
                allow_removals,
                max_percent: cfg.max_removal_percent,
                keep_contacts: false,
                settings: vec![(IMPORTED_SOURCE_SETTING, record)],
            };
            let outcome = request.run(&store).await;
            store.close().await;
            let (report, _) = outcome?;
            let count = report.added + report.updated + report.reactivated + report.unchanged;
            match format {
                SummaryFormat::Json => {
                    let mut v = serde_json::to_value(&report)?;
                    if dry_run {
                        v["dry_run"] = serde_json::Value::Bool(true);
                    }
                    say!("{}", serde_json::to_string(&v)?)
                }
                SummaryFormat::Text => {
                    say!(
                        "{}{}: {} contacts; {} added, {} updated, {} reactivated, {} unchanged, {} marked inactive (missing from the file)",
                        if dry_run { "dry run, nothing changed: " } else { "" },
                        inert::line(&file.to_string_lossy()),
                        count,
                        report.added,
                        report.updated,
                        report.reactivated,
                        report.unchanged,
                        report.removed
                    );
                    if explicit && !dry_run {
                        say!(
                            "notice runs now take their contacts from this file until the configured {} changes",
                            inert::line(&cfg.contacts.to_string_lossy())
                        );
                    }
                }
            }
            Ok(())
        }
        ContactsCommand::List {
            format,
            audience,
            include_removed,
        } => {
            let store = Store::open(&cfg.database_url).await?;
            let mut list = store.contacts(include_removed).await?;
            store.close().await;
            if let Some(a) = audience {
                list.retain(|c| c.in_export && a.includes(&c.contact));
            }
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match format {
                ListFormat::Json => {
                    serde_json::to_writer_pretty(&mut out, &list)?;
                    writeln!(out)?;
                }
                ListFormat::Csv => write_csv(&mut out, &list)?,
                ListFormat::Table => {
                    if list.is_empty() {
                        eprintln!(
                            "no contacts in the database; import some with `notify contacts import {}`",
                            inert::line(&cfg.contacts.to_string_lossy())
                        );
                    }
                    write_table(&mut out, &list)?
                }
            }
            Ok(())
        }
    }
}

fn status(c: &StoredContact) -> &'static str {
    if !c.in_export {
        "removed"
    } else if c.needs_update {
        "needs update"
    } else if c.contact.is_deleted {
        "inactive"
    } else {
        "active"
    }
}

fn write_csv(out: &mut impl Write, list: &[StoredContact]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "user_id",
        "first_name",
        "last_name",
        "email",
        "title",
        "workgroup",
        "roles",
        "is_coa_staff",
        "is_deleted",
        "is_user_group_member",
        "note",
        "date_added",
        "last_seen_date",
        "status",
    ])?;
    for sc in list {
        let c: &Contact = &sc.contact;
        let roles = serde_json::to_string(&c.roles)?;
        // Every cell taken from the export is neutralised: a spreadsheet opening this file
        // shows `=HYPERLINK(...)` as text instead of evaluating it.
        w.write_record([
            c.user_id.to_string().as_str(),
            &inert::csv_cell(&c.first_name),
            &inert::csv_cell(&c.last_name),
            &inert::csv_cell(&c.email),
            &inert::csv_cell(&c.title),
            &inert::csv_cell(&c.workgroup),
            &inert::csv_cell(&roles),
            &c.is_coa_staff.to_string(),
            &c.is_deleted.to_string(),
            &c.is_user_group_member.to_string(),
            &inert::csv_cell(&c.note),
            &inert::csv_cell(&c.date_added),
            &inert::csv_cell(&c.last_seen_date),
            status(sc),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// Shorten to `max` characters with an ellipsis.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn write_table(out: &mut impl Write, list: &[StoredContact]) -> anyhow::Result<()> {
    let rows: Vec<[String; 6]> = list
        .iter()
        .map(|sc| {
            let c = &sc.contact;
            // Names and the rest come from the export: control characters and bidi overrides
            // are shown as escapes, never sent to the terminal.
            [
                c.user_id.to_string(),
                clip(&inert::line(&c.full_name()), 24),
                clip(&inert::line(&c.email), 36),
                clip(&inert::line(&c.workgroup), 28),
                if c.is_user_group_member { "yes" } else { "" }.to_string(),
                status(sc).to_string(),
            ]
        })
        .collect();
    let header = ["USER_ID", "NAME", "EMAIL", "WORKGROUP", "MUG", "STATUS"];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(&header))?;
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    writeln!(out, "{} contacts", rows.len())?;
    Ok(())
}
