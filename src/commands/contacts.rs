//! `notify contacts import|list`, and the contacts sync every notice command runs first: which
//! file the contacts come from (the configured one, or the one last imported by hand while the
//! configuration is unchanged), the check against mass removals, the dry run that writes
//! nothing, and the line that says what a sync changed and from which file.

use std::io::Write;
use std::path::Path;

use crate::cli::{ContactsCommand, ListFormat, SummaryFormat};
use crate::config::Config;
use crate::contacts::{self, Contact, ImportedSource, Source, IMPORTED_SOURCE_SETTING};
use crate::inert;
use crate::store::{self, Store, StoredContact, SyncReport};

pub async fn run(cfg: &Config, cmd: ContactsCommand) -> anyhow::Result<()> {
    match cmd {
        ContactsCommand::Import {
            file,
            format,
            dry_run,
            allow_removals,
        } => {
            // Validate the whole file before touching the database.
            let bytes = contacts::read_bytes(&file)?;
            let (count, _) = contacts::validate(&file, &bytes)?;
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
                bytes: &bytes,
                rows: count,
                dry_run,
                allow_removals,
                max_percent: cfg.max_removal_percent,
                keep_contacts: false,
                settings: vec![(IMPORTED_SOURCE_SETTING, record)],
            };
            let outcome = request.run(&store).await;
            store.close().await;
            let (report, _) = outcome?;
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

/// One sync from a checked contacts file: written (or, for a dry run, only worked out), unless
/// it would remove too many contacts.
struct SyncRequest<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    /// Contacts in the file.
    rows: usize,
    dry_run: bool,
    allow_removals: bool,
    max_percent: u8,
    /// A dry run also returns the contacts as the sync would leave them.
    keep_contacts: bool,
    /// Settings to set (`Some`) or clear (`None`) with the sync: the hand import to record or
    /// to forget. Empty when there is nothing to change, so that a sync that changes nothing
    /// writes nothing.
    settings: Vec<(&'static str, Option<String>)>,
}

impl SyncRequest<'_> {
    /// What changed (or would change), and for a dry run the contacts as they would be stored.
    async fn run(self, store: &Store) -> anyhow::Result<(SyncReport, Option<Vec<StoredContact>>)> {
        let check = |r: &SyncReport| {
            contacts::check_removals(
                self.path,
                self.rows,
                r.removed,
                r.active_before,
                self.max_percent,
                self.allow_removals,
            )
        };
        if self.dry_run {
            let plan = store
                .plan_contacts_sync(contacts::valid_rows(self.bytes), self.keep_contacts)
                .await?;
            check(&plan.report)?;
            return Ok((plan.report, Some(plan.contacts)));
        }
        let report = store
            .sync_contacts(|| contacts::valid_rows(self.bytes), &self.settings, check)
            .await??;
        Ok((report, None))
    }
}

/// The contacts a notice run is about to use: their source found, read and checked; nothing
/// written yet.
pub struct NoticeContacts {
    source: Source,
    /// A hand import is recorded in the store (whether or not it still applies).
    recorded: bool,
    bytes: Vec<u8>,
    rows: usize,
    first: Option<Contact>,
}

impl NoticeContacts {
    /// Find the source ([`contacts::choose_source`]), read it and check every row.
    pub async fn read(cfg: &Config, store: &Store) -> anyhow::Result<NoticeContacts> {
        let setting = store.setting(IMPORTED_SOURCE_SETTING).await?;
        let recorded = setting.is_some();
        // A value that does not parse is no source; the next sync clears it.
        let source = contacts::choose_source(
            &cfg.contacts,
            &contacts::config_fingerprint(&cfg.contacts),
            setting.and_then(|v| serde_json::from_str::<ImportedSource>(&v).ok()),
        );
        let path = source.path().to_path_buf();
        let read = contacts::read_bytes(&path).and_then(|bytes| {
            let (rows, first) = contacts::validate(&path, &bytes)?;
            Ok((bytes, rows, first))
        });
        let (bytes, rows, first) = match (read, &source) {
            (Ok(r), _) => r,
            (Err(e), Source::Imported(i)) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the contacts come from {}, imported by hand at {}, until the configured {} changes; import a file again with `notify contacts import FILE`",
                    inert::line(&i.file.to_string_lossy()),
                    i.imported_at,
                    inert::line(&cfg.contacts.to_string_lossy())
                )))
            }
            (Err(e), _) => return Err(e.into()),
        };
        Ok(NoticeContacts {
            source,
            recorded,
            bytes,
            rows,
            first,
        })
    }

    /// The first contact of the file, if any (to check the templates with real values).
    pub fn first(&self) -> Option<&Contact> {
        self.first.as_ref()
    }

    /// Sync the store from the source, or for a dry run work out what the sync would change
    /// without writing, and print one line saying so and which file the contacts came from
    /// (on standard error with `--format json`, so that standard output stays one JSON
    /// object). A dry run returns the contacts as the sync would leave them.
    pub async fn sync(
        self,
        cfg: &Config,
        store: &Store,
        dry_run: bool,
        allow_removals: bool,
        format: SummaryFormat,
    ) -> anyhow::Result<Option<Vec<StoredContact>>> {
        // The configured file is the source again: forget the hand import.
        let settings = match &self.source {
            Source::Configured { .. } if self.recorded => vec![(IMPORTED_SOURCE_SETTING, None)],
            _ => Vec::new(),
        };
        let request = SyncRequest {
            path: self.source.path(),
            bytes: &self.bytes,
            rows: self.rows,
            dry_run,
            allow_removals,
            max_percent: cfg.max_removal_percent,
            keep_contacts: true,
            settings,
        };
        let (report, after) = request.run(store).await?;
        let from = match &self.source {
            Source::Configured {
                path,
                superseded: None,
            } => format!("from {}", inert::line(&path.to_string_lossy())),
            Source::Configured {
                path,
                superseded: Some(i),
            } => format!(
                "from {}: it changed after {} was imported by hand, so it is the source again",
                inert::line(&path.to_string_lossy()),
                inert::line(&i.file.to_string_lossy())
            ),
            Source::Imported(i) => format!(
                "from {}, imported by hand at {}; the configured {} has not changed since",
                inert::line(&i.file.to_string_lossy()),
                i.imported_at,
                inert::line(&cfg.contacts.to_string_lossy())
            ),
        };
        let line = format!(
            "contacts{}: {} added, {} updated, {} reactivated, {} marked inactive, {} unchanged ({from})",
            if dry_run {
                " (dry run, nothing written)"
            } else {
                ""
            },
            report.added,
            report.updated,
            report.reactivated,
            report.removed,
            report.unchanged,
        );
        match format {
            SummaryFormat::Text => say!("{line}"),
            SummaryFormat::Json => eprintln!("{line}"),
        }
        Ok(after)
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
