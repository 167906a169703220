//! The contacts sync every notice run does first: which file the contacts come from (the
//! configured one, or the one last imported by hand while the configuration is unchanged),
//! reading and checking it before anything is written, the check against mass removals, the
//! dry run that writes nothing, and the line that says what a sync changed and from which file.
//! It prints nothing: the caller shows the line where its output format wants it.

use std::path::Path;

use crate::config::Config;
use crate::contacts::{self, Contact, ImportedSource, Source, IMPORTED_SOURCE_SETTING};
use crate::inert;
use crate::store::{Store, StoredContact, SyncReport};

/// One sync from a checked contacts file: written (or, for a dry run, only worked out), unless
/// it would remove too many contacts.
pub struct SyncRequest<'a> {
    pub path: &'a Path,
    pub bytes: &'a [u8],
    /// Contacts in the file.
    pub rows: usize,
    pub dry_run: bool,
    pub allow_removals: bool,
    pub max_percent: u8,
    /// A dry run also returns the contacts as the sync would leave them.
    pub keep_contacts: bool,
    /// Settings to set (`Some`) or clear (`None`) with the sync: the hand import to record or
    /// to forget. Empty when there is nothing to change: then a file with the same bytes as
    /// the last one synced is not read against the stored contacts at all.
    pub settings: Vec<(&'static str, Option<String>)>,
}

/// The setting that holds the SHA-256 of the contacts file the last sync wrote, in the same
/// transaction as its changes: a notice run whose file has the same bytes has nothing to sync.
pub const EXPORT_DIGEST_SETTING: &str = "contacts_export_sha256";

impl SyncRequest<'_> {
    /// What changed (or would change), and for a dry run the contacts as they would be stored.
    /// A sync that has no settings to change, from a file with the same bytes as the last one
    /// synced, reads no contact and writes nothing: every row is unchanged.
    pub async fn run(
        mut self,
        store: &Store,
    ) -> anyhow::Result<(SyncReport, Option<Vec<StoredContact>>)> {
        use sha2::Digest as _;
        let digest = hex::encode(sha2::Sha256::digest(self.bytes));
        if !self.dry_run && self.settings.is_empty() {
            let last = store.setting(EXPORT_DIGEST_SETTING).await?;
            if last.as_deref() == Some(digest.as_str()) {
                let report = SyncReport {
                    unchanged: self.rows,
                    active_before: self.rows,
                    ..SyncReport::default()
                };
                return Ok((report, None));
            }
        }
        self.settings.push((EXPORT_DIGEST_SETTING, Some(digest)));
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

/// What a notice run's sync did (or, for a dry run, would do).
pub struct Synced {
    /// One line: what changed and which file the contacts came from.
    pub line: String,
    /// For a dry run, the contacts as the sync would leave them.
    pub contacts: Option<Vec<StoredContact>>,
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
    /// without writing; the line says so and which file the contacts came from. A dry run
    /// returns the contacts as the sync would leave them.
    pub async fn sync(
        self,
        cfg: &Config,
        store: &Store,
        dry_run: bool,
        allow_removals: bool,
    ) -> anyhow::Result<Synced> {
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
        Ok(Synced {
            line,
            contacts: after,
        })
    }
}
