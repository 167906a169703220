//! The contacts sync in the database, in memory that does not grow with the export: the rows
//! are loaded into a temporary staging table (batched INSERTs on SQLite, COPY on PostgreSQL),
//! duplicates are found there with their lines, and the difference with the stored contacts is
//! counted and applied in set-based statements (new rows, changed rows with their
//! address-change events, rows gone from the export), all in one transaction that a refusal or
//! a crash leaves unapplied.
//!
//! PostgreSQL's COPY is not reachable through sqlx's `Any` driver, so on PostgreSQL the sync
//! runs on a connection of its own (holding the same advisory write lock as every other write).

use sqlx::Row as _;

use super::{contact_from_row, now_text, q, Backend, Result, Store, StoredContact, SyncReport};
use crate::contacts::{self, Contact, RowError};

/// The staging table's columns, in the order they are loaded.
const STAGED_COLUMNS: &str = "line, user_id, email, first_name, last_name, title, workgroup, roles, is_coa_staff, is_deleted, is_user_group_member, note, date_added, last_seen_date";

/// Rows per INSERT on SQLite: 14 values each, far below its 32,766 bound values.
const SQLITE_BATCH: usize = 500;

/// Bytes of COPY data sent to PostgreSQL at a time.
const COPY_CHUNK: usize = 1 << 20;

/// The fields of the export besides user_id: a stored contact whose fields all equal the staged
/// row's is unchanged.
const FIELDS: [&str; 12] = [
    "email",
    "first_name",
    "last_name",
    "title",
    "workgroup",
    "roles",
    "is_coa_staff",
    "is_deleted",
    "is_user_group_member",
    "note",
    "date_added",
    "last_seen_date",
];

/// The condition "the stored row (`stored`) has the staged row's (`s`) fields".
fn same(stored: &str) -> String {
    FIELDS
        .iter()
        .map(|f| format!("{stored}.{f} = s.{f}"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

enum Tx {
    Any(sqlx::Transaction<'static, sqlx::Any>),
    Postgres {
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
        pool: sqlx::PgPool,
    },
}

/// A sync in progress: its transaction and the staging table in it. Dropped without
/// [`ContactsSync::apply`], nothing is written.
pub struct ContactsSync {
    tx: Tx,
    staged: usize,
}

/// Evaluate `$body` with `$c` the connection that holds the sync (SQLite's through `Any`, or the
/// sync's own PostgreSQL connection).
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx {
            Tx::Any(t) => {
                let $c = &mut **t;
                $body
            }
            Tx::Postgres { tx: t, .. } => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

impl Store {
    /// Start a contacts sync: a transaction with an empty staging table. A `write` sync holds
    /// the write lock from the start (SQLite `BEGIN IMMEDIATE`, PostgreSQL's advisory lock); a
    /// dry run writes only its temporary table and takes no lock.
    pub async fn begin_contacts_sync(&self, write: bool) -> Result<ContactsSync> {
        const DOING: &str = "starting the contacts sync";
        let mut tx = match self.backend {
            Backend::Sqlite => Tx::Any(if write {
                self.begin_write(DOING).await?
            } else {
                self.pool.begin().await.map_err(q(DOING))?
            }),
            Backend::Postgres => {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(std::time::Duration::from_secs(30))
                    .connect(&self.url)
                    .await
                    .map_err(q(DOING))?;
                let mut tx = pool.begin().await.map_err(q(DOING))?;
                if write {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(super::open::WRITE_LOCK)
                        .execute(&mut *tx)
                        .await
                        .map_err(q(DOING))?;
                }
                Tx::Postgres { tx, pool }
            }
        };
        let create = match tx {
            Tx::Any(_) => vec![
                "DROP TABLE IF EXISTS temp.contacts_staging".to_string(),
                "CREATE TEMP TABLE contacts_staging (line INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, email TEXT NOT NULL, first_name TEXT NOT NULL, last_name TEXT NOT NULL, title TEXT NOT NULL, workgroup TEXT NOT NULL, roles TEXT NOT NULL, is_coa_staff INTEGER NOT NULL, is_deleted INTEGER NOT NULL, is_user_group_member INTEGER NOT NULL, note TEXT NOT NULL, date_added TEXT NOT NULL, last_seen_date TEXT NOT NULL)".to_string(),
            ],
            Tx::Postgres { .. } => vec![
                "CREATE TEMP TABLE contacts_staging (line BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, email TEXT NOT NULL, first_name TEXT NOT NULL, last_name TEXT NOT NULL, title TEXT NOT NULL, workgroup TEXT NOT NULL, roles TEXT NOT NULL, is_coa_staff BIGINT NOT NULL, is_deleted BIGINT NOT NULL, is_user_group_member BIGINT NOT NULL, note TEXT NOT NULL, date_added TEXT NOT NULL, last_seen_date TEXT NOT NULL) ON COMMIT DROP".to_string(),
            ],
        };
        for sql in create {
            on_tx!(&mut tx, |c| sqlx::query(&sql).execute(c).await.map(drop))
                .map_err(q("creating the contacts staging table"))?;
        }
        Ok(ContactsSync { tx, staged: 0 })
    }
}

impl ContactsSync {
    /// Load `rows` (each with its line in the file) into the staging table. Returns how many
    /// were loaded in all.
    pub async fn stage(&mut self, rows: impl Iterator<Item = (u64, Contact)>) -> Result<usize> {
        const DOING: &str = "loading the contacts export";
        match &mut self.tx {
            Tx::Any(tx) => {
                let mut batch: Vec<(u64, Contact, String)> = Vec::with_capacity(SQLITE_BATCH);
                for (line, c) in rows {
                    let roles = roles_json(&c);
                    batch.push((line, c, roles));
                    if batch.len() == SQLITE_BATCH {
                        insert_staged(tx, &batch).await?;
                        self.staged += batch.len();
                        batch.clear();
                    }
                }
                insert_staged(tx, &batch).await?;
                self.staged += batch.len();
            }
            Tx::Postgres { tx, .. } => {
                let mut copy = tx
                    .copy_in_raw(&format!(
                        "COPY contacts_staging ({STAGED_COLUMNS}) FROM STDIN (FORMAT csv)"
                    ))
                    .await
                    .map_err(q(DOING))?;
                let mut csv = copy_writer();
                let mut sent = Ok(());
                for (line, c) in rows {
                    let record = [
                        line.to_string(),
                        c.user_id.to_string(),
                        c.email,
                        c.first_name,
                        c.last_name,
                        c.title,
                        c.workgroup,
                        serde_json::to_string(&c.roles).unwrap_or_else(|_| "[]".into()),
                        (c.is_coa_staff as i64).to_string(),
                        (c.is_deleted as i64).to_string(),
                        (c.is_user_group_member as i64).to_string(),
                        c.note,
                        c.date_added,
                        c.last_seen_date,
                    ];
                    if let Err(e) = csv.write_record(&record) {
                        sent = Err(sqlx::Error::Io(e.into()));
                        break;
                    }
                    self.staged += 1;
                    if csv.get_ref().len() >= COPY_CHUNK {
                        let chunk = match flush(&mut csv) {
                            Ok(chunk) => chunk,
                            Err(e) => {
                                sent = Err(e);
                                break;
                            }
                        };
                        if let Err(e) = copy.send(chunk).await {
                            sent = Err(e);
                            break;
                        }
                    }
                }
                if sent.is_ok() {
                    sent = match flush(&mut csv) {
                        Ok(chunk) if chunk.is_empty() => Ok(()),
                        Ok(chunk) => copy.send(chunk).await.map(drop),
                        Err(e) => Err(e),
                    };
                }
                match sent {
                    Ok(()) => {
                        copy.finish().await.map_err(q(DOING))?;
                    }
                    Err(e) => {
                        let _ = copy.abort("notify could not send the export").await;
                        return Err(q(DOING)(e));
                    }
                }
            }
        }
        Ok(self.staged)
    }

    /// Rows whose address or user_id an earlier row of the file has: the first
    /// [`contacts::MAX_LISTED_PROBLEMS`] by line, and how many more there are. A row that
    /// repeats an address is reported for that alone; user_ids are compared among the others.
    pub async fn duplicates(&mut self) -> Result<(Vec<RowError>, usize)> {
        const DOING: &str = "looking for duplicates in the contacts export";
        let indexes = match self.tx {
            Tx::Any(_) => [
                "CREATE INDEX temp.contacts_staging_email ON contacts_staging (email, line)",
                "CREATE INDEX temp.contacts_staging_user ON contacts_staging (user_id, line)",
                "SELECT 1",
            ],
            Tx::Postgres { .. } => [
                "CREATE INDEX ON contacts_staging (email, line)",
                "CREATE INDEX ON contacts_staging (user_id, line)",
                // A temporary table is never analysed on its own: without it the planner
                // guesses its size.
                "ANALYZE contacts_staging",
            ],
        };
        for sql in indexes {
            on_tx!(&mut self.tx, |c| sqlx::query(sql)
                .execute(c)
                .await
                .map(drop))
            .map_err(q(DOING))?;
        }
        let counts =
            "SELECT COUNT(*), COUNT(DISTINCT email), COUNT(DISTINCT user_id) FROM contacts_staging";
        let (rows, emails, ids) = on_tx!(&mut self.tx, |c| sqlx::query(counts)
            .fetch_one(c)
            .await
            .and_then(|r| Ok((
                r.try_get::<i64, _>(0)?,
                r.try_get::<i64, _>(1)?,
                r.try_get::<i64, _>(2)?
            ))))
        .map_err(q(DOING))?;
        if rows == emails && rows == ids {
            return Ok((Vec::new(), 0));
        }
        let limit = contacts::MAX_LISTED_PROBLEMS;
        let firsts = "SELECT s.line, s.user_id FROM contacts_staging s WHERE NOT EXISTS (SELECT 1 FROM contacts_staging e WHERE e.email = s.email AND e.line < s.line)";
        let by_address = format!(
            "SELECT s.line, s.email, f.first FROM contacts_staging s JOIN (SELECT email, MIN(line) AS first FROM contacts_staging GROUP BY email HAVING COUNT(*) > 1) f ON f.email = s.email WHERE s.line > f.first ORDER BY s.line LIMIT {limit}"
        );
        let by_id = format!(
            "WITH firsts AS ({firsts}) SELECT s.line, s.user_id, f.first FROM firsts s JOIN (SELECT user_id, MIN(line) AS first FROM firsts GROUP BY user_id HAVING COUNT(*) > 1) f ON f.user_id = s.user_id WHERE s.line > f.first ORDER BY s.line LIMIT {limit}"
        );
        let id_dups = format!(
            "WITH firsts AS ({firsts}) SELECT COUNT(*) - COUNT(DISTINCT user_id) FROM firsts"
        );
        let mut listed = Vec::new();
        let address_rows = on_tx!(&mut self.tx, |c| sqlx::query(&by_address)
            .fetch_all(c)
            .await
            .and_then(|rows| rows
                .iter()
                .map(|r| Ok((
                    r.try_get::<i64, _>(0)?,
                    r.try_get::<String, _>(1)?,
                    r.try_get::<i64, _>(2)?
                )))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()))
        .map_err(q(DOING))?;
        for (line, email, first) in address_rows {
            listed.push(RowError {
                line: line as u64,
                message: contacts::duplicate_address(&email, first as u64),
            });
        }
        let id_rows = on_tx!(&mut self.tx, |c| sqlx::query(&by_id)
            .fetch_all(c)
            .await
            .and_then(|rows| rows
                .iter()
                .map(|r| Ok((
                    r.try_get::<i64, _>(0)?,
                    r.try_get::<i64, _>(1)?,
                    r.try_get::<i64, _>(2)?
                )))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()))
        .map_err(q(DOING))?;
        for (line, user_id, first) in id_rows {
            listed.push(RowError {
                line: line as u64,
                message: contacts::duplicate_user_id(user_id, first as u64),
            });
        }
        let id_total = on_tx!(&mut self.tx, |c| sqlx::query(&id_dups)
            .fetch_one(c)
            .await
            .and_then(|r| r.try_get::<i64, _>(0)))
        .map_err(q(DOING))?;
        let total = (rows - emails) as usize + id_total as usize;
        let more = total.saturating_sub(listed.len());
        Ok((listed, more))
    }

    /// What applying the staged export would change.
    pub async fn plan(&mut self) -> Result<SyncReport> {
        const DOING: &str = "comparing the contacts export with the stored contacts";
        let same = same("c");
        let changes = format!(
            "SELECT COUNT(CASE WHEN c.id IS NULL THEN 1 END), \
                    COUNT(CASE WHEN c.in_export = 1 AND {same} THEN 1 END), \
                    COUNT(CASE WHEN c.in_export = 0 THEN 1 END), \
                    COUNT(CASE WHEN c.in_export = 1 AND NOT ({same}) THEN 1 END) \
             FROM contacts_staging s LEFT JOIN contacts c ON c.user_id = s.user_id"
        );
        let (added, unchanged, reactivated, updated) =
            on_tx!(&mut self.tx, |c| sqlx::query(&changes)
                .fetch_one(c)
                .await
                .and_then(|r| Ok((
                    r.try_get::<i64, _>(0)?,
                    r.try_get::<i64, _>(1)?,
                    r.try_get::<i64, _>(2)?,
                    r.try_get::<i64, _>(3)?
                ))))
            .map_err(q(DOING))?;
        let before = "SELECT COUNT(*), COUNT(CASE WHEN NOT EXISTS (SELECT 1 FROM contacts_staging s WHERE s.user_id = c.user_id) THEN 1 END) FROM contacts c WHERE c.in_export = 1";
        let (active_before, removed) = on_tx!(&mut self.tx, |c| sqlx::query(before)
            .fetch_one(c)
            .await
            .and_then(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?))))
        .map_err(q(DOING))?;
        Ok(SyncReport {
            added: added as usize,
            updated: updated as usize,
            unchanged: unchanged as usize,
            removed: removed as usize,
            reactivated: reactivated as usize,
            active_before: active_before as usize,
        })
    }

    /// The contacts of the export as the sync would store them, by user_id: the stored id (0
    /// for a new one) and the bounce flag kept unless the address changes. For a dry run,
    /// which renders them; it holds them all.
    pub async fn contacts_after(&mut self) -> Result<Vec<StoredContact>> {
        // The columns of CONTACT_COLUMNS, from the staged row where the export decides.
        let staged: Vec<String> = FIELDS.iter().map(|f| format!("s.{f}")).collect();
        let sql = format!(
            "SELECT COALESCE(c.id, 0), s.user_id, {}, CAST(1 AS BIGINT), \
             CASE WHEN c.id IS NULL OR c.email <> s.email THEN 0 ELSE c.needs_update END \
             FROM contacts_staging s LEFT JOIN contacts c ON c.user_id = s.user_id ORDER BY s.user_id",
            staged.join(", ")
        );
        on_tx!(&mut self.tx, |c| sqlx::query(&sql)
            .fetch_all(c)
            .await
            .and_then(|rows| rows.iter().map(contact_from_row).collect()))
        .map_err(q("reading the contacts as the sync would leave them"))
    }

    /// Make the stored contacts match the staged export and set (`Some`) or clear (`None`) the
    /// given settings with them; commit. New contacts are added in the file's order; changed
    /// ones are rewritten (a new address lifts a bounce flag and is recorded as an account
    /// event); contacts missing from the export are marked inactive.
    pub async fn apply(mut self, settings: &[(&str, Option<String>)]) -> Result<()> {
        let now = now_text();
        let steps: [(&str, String); 4] = [
            (
                "recording the address changes",
                "INSERT INTO account_events (contact_id, event, note, created_at) \
                 SELECT c.id, 'address-changed', c.email || ' -> ' || s.email || ' in the contacts export', $1 \
                 FROM contacts_staging s JOIN contacts c ON c.user_id = s.user_id \
                 WHERE c.email <> s.email ORDER BY s.line"
                    .to_string(),
            ),
            (
                "updating the changed contacts",
                format!(
                    "UPDATE contacts SET email = s.email, first_name = s.first_name, last_name = s.last_name, \
                     title = s.title, workgroup = s.workgroup, roles = s.roles, is_coa_staff = s.is_coa_staff, \
                     is_deleted = s.is_deleted, is_user_group_member = s.is_user_group_member, note = s.note, \
                     date_added = s.date_added, last_seen_date = s.last_seen_date, in_export = 1, \
                     needs_update = CASE WHEN contacts.email <> s.email THEN 0 ELSE contacts.needs_update END, \
                     flagged_at = CASE WHEN contacts.email <> s.email THEN NULL ELSE contacts.flagged_at END, \
                     counted_since = CASE WHEN contacts.email <> s.email THEN $1 ELSE contacts.counted_since END, \
                     updated_at = $1 \
                     FROM contacts_staging s WHERE contacts.user_id = s.user_id \
                     AND NOT (contacts.in_export = 1 AND {})",
                    same("contacts")
                ),
            ),
            (
                "adding contacts",
                "INSERT INTO contacts (user_id, email, first_name, last_name, title, workgroup, roles, \
                 is_coa_staff, is_deleted, is_user_group_member, note, date_added, last_seen_date, \
                 in_export, needs_update, created_at, updated_at) \
                 SELECT s.user_id, s.email, s.first_name, s.last_name, s.title, s.workgroup, s.roles, \
                 s.is_coa_staff, s.is_deleted, s.is_user_group_member, s.note, s.date_added, s.last_seen_date, \
                 1, 0, $1, $1 FROM contacts_staging s \
                 WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.user_id = s.user_id) ORDER BY s.line"
                    .to_string(),
            ),
            (
                "marking contacts inactive",
                "UPDATE contacts SET in_export = 0, updated_at = $1 WHERE in_export = 1 \
                 AND NOT EXISTS (SELECT 1 FROM contacts_staging s WHERE s.user_id = contacts.user_id)"
                    .to_string(),
            ),
        ];
        for (doing, sql) in &steps {
            let doing: &'static str = doing;
            on_tx!(&mut self.tx, |c| sqlx::query(sql)
                .bind(&now)
                .execute(c)
                .await
                .map(drop))
            .map_err(q(doing))?;
        }
        for (key, value) in settings {
            let key: &str = key;
            let set = match value {
                Some(v) => on_tx!(&mut self.tx, |c| {
                    sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                )
                .bind(key)
                .bind(v.as_str())
                .execute(c)
                .await
                .map(drop)
                }),
                None => on_tx!(&mut self.tx, |c| sqlx::query(
                    "DELETE FROM settings WHERE key = $1"
                )
                .bind(key)
                .execute(c)
                .await
                .map(drop)),
            };
            set.map_err(q("recording where the contacts came from"))?;
        }
        match self.tx {
            Tx::Any(mut tx) => {
                sqlx::query("DROP TABLE temp.contacts_staging")
                    .execute(&mut *tx)
                    .await
                    .map_err(q("dropping the contacts staging table"))?;
                tx.commit()
                    .await
                    .map_err(q("committing the contacts sync"))?;
            }
            Tx::Postgres { tx, pool } => {
                tx.commit()
                    .await
                    .map_err(q("committing the contacts sync"))?;
                pool.close().await;
            }
        }
        Ok(())
    }

    /// Give the sync up: nothing is written.
    pub async fn abandon(self) -> Result<()> {
        match self.tx {
            Tx::Any(tx) => tx
                .rollback()
                .await
                .map_err(q("abandoning the contacts sync")),
            Tx::Postgres { tx, pool } => {
                let done = tx
                    .rollback()
                    .await
                    .map_err(q("abandoning the contacts sync"));
                pool.close().await;
                done
            }
        }
    }
}

fn roles_json(c: &Contact) -> String {
    serde_json::to_string(&c.roles).unwrap_or_else(|_| "[]".into())
}

/// A writer of COPY data: CSV with every value quoted (in COPY's CSV an unquoted empty value
/// is NULL).
fn copy_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(Vec::with_capacity(COPY_CHUNK + 64 * 1024))
}

/// The COPY data written so far, taken out of the writer (which starts again empty).
fn flush(csv: &mut csv::Writer<Vec<u8>>) -> std::result::Result<Vec<u8>, sqlx::Error> {
    std::mem::replace(csv, copy_writer())
        .into_inner()
        .map_err(|e| sqlx::Error::Io(e.into_error()))
}

/// Load one batch of staged rows (SQLite).
async fn insert_staged(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    batch: &[(u64, Contact, String)],
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let row = format!("({})", ["?"; 14].join(","));
    let sql = format!(
        "INSERT INTO contacts_staging ({STAGED_COLUMNS}) VALUES {}",
        vec![row.as_str(); batch.len()].join(",")
    );
    let mut query = sqlx::query(&sql);
    for (line, c, roles) in batch {
        query = query
            .bind(*line as i64)
            .bind(c.user_id)
            .bind(&c.email)
            .bind(&c.first_name)
            .bind(&c.last_name)
            .bind(&c.title)
            .bind(&c.workgroup)
            .bind(roles)
            .bind(c.is_coa_staff as i64)
            .bind(c.is_deleted as i64)
            .bind(c.is_user_group_member as i64)
            .bind(&c.note)
            .bind(&c.date_added)
            .bind(&c.last_seen_date);
    }
    query
        .execute(&mut **tx)
        .await
        .map_err(q("loading the contacts export"))?;
    Ok(())
}
