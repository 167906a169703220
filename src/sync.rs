//! The contacts sync every notice run does first: which file the contacts come from (the
//! configured one, or the one last imported by hand while the configuration is unchanged),
//! streaming it into the store's staging table and checking every row there (a bad row, or a
//! file that changed since it was first read, and nothing is written), the check against mass
//! removals, the export recognised unchanged by its digest, the dry run that writes nothing, and
//! the line that says what a sync changed and from which file.
//! It prints nothing: the caller shows the line where its output format wants it.

use std::path::Path;

use crate::config::Config;
use crate::contacts::{
    self, Contact, ContactRows, ContactsError, FileDigest, ImportedSource, Problems, Source,
    IMPORTED_SOURCE_SETTING,
};
use crate::inert;
use crate::store::{Store, StoredContact, SyncReport};

/// One sync from a contacts file: checked row by row as it streams into the database, then
/// written (or, for a dry run, only worked out), unless a row is wrong or it would remove too
/// many contacts. Memory does not grow with the file.
pub struct SyncRequest<'a> {
    pub path: &'a Path,
    /// The file as read before the sync, when it was ([`NoticeContacts::read`]): a file that
    /// changed since is refused, and one with the same bytes as the last one synced is not
    /// read again when there are no settings to change.
    pub digest: Option<&'a FileDigest>,
    pub dry_run: bool,
    pub allow_removals: bool,
    pub max_percent: u8,
    /// A dry run also returns the contacts as the sync would leave them.
    pub keep_contacts: bool,
    /// Settings to set (`Some`) or clear (`None`) with the sync: the hand import to record or
    /// to forget.
    pub settings: Vec<(&'static str, Option<String>)>,
}

/// The setting that holds the SHA-256 of the contacts file the last sync wrote and its number of
/// contacts (`HEX ROWS`), set in the same transaction as its changes: a notice run whose file has
/// the same bytes has nothing to sync.
pub const EXPORT_DIGEST_SETTING: &str = "contacts_export_sha256";

/// The number of contacts of the file last synced, when `digest` is that file's.
fn rows_if_unchanged(stored: Option<&str>, digest: &FileDigest) -> Option<usize> {
    let (sha, rows) = stored?.split_once(' ')?;
    (sha == digest.sha256).then(|| rows.parse().ok())?
}

impl SyncRequest<'_> {
    /// What changed (or would change), and for a dry run the contacts as they would be stored.
    /// A sync that has no settings to change, from a file with the same bytes as the last one
    /// synced, reads no contact and writes nothing: every row is unchanged.
    pub async fn run(
        mut self,
        store: &Store,
    ) -> anyhow::Result<(SyncReport, Option<Vec<StoredContact>>)> {
        if let (Some(digest), false, true) = (self.digest, self.dry_run, self.settings.is_empty()) {
            let last = store.setting(EXPORT_DIGEST_SETTING).await?;
            if let Some(rows) = rows_if_unchanged(last.as_deref(), digest) {
                let report = SyncReport {
                    unchanged: rows,
                    active_before: rows,
                    ..SyncReport::default()
                };
                return Ok((report, None));
            }
        }
        let path = self.path;
        let file = std::fs::File::open(path).map_err(|source| ContactsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut rows = ContactRows::new(std::io::BufReader::with_capacity(256 * 1024, file))
            .map_err(|e| ContactsError::Invalid {
                path: path.to_path_buf(),
                errors: vec![e],
                more: 0,
            })?;
        let mut sync = store.begin_contacts_sync(!self.dry_run).await?;
        let mut problems = Problems::default();
        let valid = rows.by_ref().filter_map(|row| match row {
            Ok(c) => Some(c),
            Err(errors) => {
                errors.into_iter().for_each(|e| problems.push(e));
                None
            }
        });
        let staged = sync.stage(valid).await?;
        let (duplicates, more) = sync.duplicates().await?;
        problems.merge(duplicates, more);
        let refusal: Option<anyhow::Error> = if let Some(e) = problems.into_error(path) {
            Some(e.into())
        } else if self.digest.is_some_and(|d| *d != rows.digest()) {
            Some(anyhow::anyhow!(
                "{} changed while notify was reading it, so nothing was imported; run the command again",
                inert::line(&path.to_string_lossy())
            ))
        } else {
            None
        };
        if let Some(e) = refusal {
            sync.abandon().await?;
            return Err(e);
        }
        let report = sync.plan().await?;
        if let Err(e) = contacts::check_removals(
            path,
            staged,
            report.removed,
            report.active_before,
            self.max_percent,
            self.allow_removals,
        ) {
            sync.abandon().await?;
            return Err(e.into());
        }
        if self.dry_run {
            let after = if self.keep_contacts {
                Some(sync.contacts_after().await?)
            } else {
                None
            };
            sync.abandon().await?;
            return Ok((report, after));
        }
        let digest = rows.digest();
        self.settings.push((
            EXPORT_DIGEST_SETTING,
            Some(format!("{} {staged}", digest.sha256)),
        ));
        sync.apply(&self.settings).await?;
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

/// The contacts a notice run is about to use: their source found, its file read through once
/// (its digest) and its first contact; nothing written yet. Every row is checked by the sync.
pub struct NoticeContacts {
    source: Source,
    /// A hand import is recorded in the store (whether or not it still applies).
    recorded: bool,
    digest: FileDigest,
    first: Option<Contact>,
}

impl NoticeContacts {
    /// Find the source ([`contacts::choose_source`]), read it through and take its first contact.
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
        let read = contacts::digest_file(&path)
            .and_then(|digest| Ok((digest, contacts::first_contact(&path)?)));
        let (digest, first) = match read {
            Ok(r) => r,
            Err(e) => return Err(in_context(e.into(), &source, cfg)),
        };
        Ok(NoticeContacts {
            source,
            recorded,
            digest,
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
            digest: Some(&self.digest),
            dry_run,
            allow_removals,
            max_percent: cfg.max_removal_percent,
            keep_contacts: true,
            settings,
        };
        let (report, after) = match request.run(store).await {
            Ok(done) => done,
            Err(e) => return Err(in_context(e, &self.source, cfg)),
        };
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

/// A problem with a hand-imported file says that it is the source, and how to change that.
fn in_context(e: anyhow::Error, source: &Source, cfg: &Config) -> anyhow::Error {
    match source {
        Source::Imported(i)
            if matches!(
                e.downcast_ref::<ContactsError>(),
                Some(ContactsError::Read { .. } | ContactsError::Invalid { .. })
            ) =>
        {
            e.context(format!(
            "the contacts come from {}, imported by hand at {}, until the configured {} changes; import a file again with `notify contacts import FILE`",
            inert::line(&i.file.to_string_lossy()),
            i.imported_at,
            inert::line(&cfg.contacts.to_string_lossy())
        ))
        }
        _ => e,
    }
}
