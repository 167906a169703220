//! `notify contacts import|list`.

use std::io::Write;

use crate::cli::{ContactsCommand, ListFormat, SummaryFormat};
use crate::config::Config;
use crate::contacts::{self, Contact};
use crate::store::{Store, StoredContact};

pub async fn run(cfg: &Config, cmd: ContactsCommand) -> anyhow::Result<()> {
    match cmd {
        ContactsCommand::Import { file, format } => {
            // Validate the whole file before touching the database.
            let bytes = contacts::read_bytes(&file)?;
            let (count, _) = contacts::validate(&file, &bytes)?;
            let store = Store::open(&cfg.database_url).await?;
            let report = store.sync_contacts(contacts::valid_rows(&bytes)).await?;
            store.close().await;
            match format {
                SummaryFormat::Json => say!("{}", serde_json::to_string(&report)?),
                SummaryFormat::Text => say!(
                    "{}: {} contacts; {} added, {} updated, {} unchanged, {} marked inactive (missing from the file)",
                    file.display(),
                    count,
                    report.added,
                    report.updated,
                    report.unchanged,
                    report.removed
                ),
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
                            cfg.contacts.display()
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
        w.write_record([
            c.user_id.to_string(),
            c.first_name.clone(),
            c.last_name.clone(),
            c.email.clone(),
            c.title.clone(),
            c.workgroup.clone(),
            serde_json::to_string(&c.roles)?,
            c.is_coa_staff.to_string(),
            c.is_deleted.to_string(),
            c.is_user_group_member.to_string(),
            c.note.clone(),
            c.date_added.clone(),
            c.last_seen_date.clone(),
            status(sc).to_string(),
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
            [
                c.user_id.to_string(),
                clip(&c.full_name(), 24),
                clip(&c.email, 36),
                clip(&c.workgroup, 28),
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
