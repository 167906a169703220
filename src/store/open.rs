//! Opening the database: refuse what is not notify's (a file that is not SQLite, a damaged one,
//! another application's database), apply the migrations under a lock so that runs started at
//! the same moment on a new database do not race, then hand out the pool. The checks are pure
//! functions over what was read; the I/O around them is kept here and nowhere else.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::AnyConnection;
use sqlx::{Connection, Executor, Row};

use super::{Backend, Result, Store, StoreError};

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Key of the PostgreSQL advisory lock held while notify checks and migrates a database.
/// Any constant works as long as every notify uses the same one ("notify" in ASCII).
const MIGRATION_LOCK: i64 = 0x6e6f_7469_6679;

/// Key of the PostgreSQL advisory lock a read-then-write transaction holds (`begin_write`).
pub(super) const WRITE_LOCK: i64 = MIGRATION_LOCK + 1;

/// How long to wait for PostgreSQL to accept a connection before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect, check the database is notify's (or new), migrate it under a lock, and open the pool.
pub(super) async fn open(url: &str) -> Result<Store> {
    sqlx::any::install_default_drivers();
    let shown = crate::config::redact_url(url);
    let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Backend::Postgres
    } else if url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        return Err(StoreError::Open {
            url: shown,
            source: sqlx::Error::Configuration(
                "database_url must start with sqlite:// or postgres://".into(),
            ),
        });
    };
    match backend {
        Backend::Sqlite => prepare_sqlite(url, &shown).await?,
        Backend::Postgres => prepare_postgres(url, &shown).await?,
    }
    let mut opts = AnyPoolOptions::new()
        .max_connections(if backend == Backend::Sqlite { 1 } else { 8 })
        .acquire_timeout(Duration::from_secs(30))
        // A SQLite connection is a local file that cannot go stale; checking it costs a
        // round trip to its thread before every statement.
        .test_before_acquire(backend == Backend::Postgres);
    if backend == Backend::Sqlite {
        opts = opts.after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA busy_timeout = 30000").await?;
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        });
    }
    let pool = opts
        .connect(url)
        .await
        .map_err(|source| StoreError::Open { url: shown, source })?;
    Ok(Store {
        pool,
        backend,
        url: url.to_string(),
    })
}

/// The database at `url` when it exists and notify has used it (SQLite: the file is there;
/// PostgreSQL: it holds notify's migrations table); `None` otherwise, creating nothing.
pub(super) async fn open_existing(url: &str) -> Result<Option<Store>> {
    sqlx::any::install_default_drivers();
    let shown = crate::config::redact_url(url);
    if url.starts_with("sqlite:") {
        let path = SqliteConnectOptions::from_str(url)
            .map(|o| o.get_filename().to_path_buf())
            .map_err(|source| StoreError::Open {
                url: shown.clone(),
                source,
            })?;
        if !path.exists() {
            return Ok(None);
        }
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut conn =
            match tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect(url)).await {
                Ok(Ok(c)) => c,
                Ok(Err(source)) => return Err(postgres_connect_error(source, &shown)),
                Err(_) => {
                    return Err(StoreError::Unreachable {
                        url: shown,
                        message: format!("no answer within {} seconds", CONNECT_TIMEOUT.as_secs()),
                    })
                }
            };
        let found = sqlx::query(&format!(
            "SELECT COUNT(*) FROM pg_class WHERE relname = '{MIGRATIONS_TABLE}'"
        ))
        .fetch_one(&mut conn)
        .await
        .and_then(|r| r.try_get::<i64, _>(0));
        let _ = conn.close().await;
        match found {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(source) => return Err(StoreError::Open { url: shown, source }),
        }
    }
    open(url).await.map(Some)
}

fn migrator(backend: Backend) -> Migrator {
    match backend {
        Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("migrations/postgres"),
    }
}

/// SQLite: look at the file before SQLite touches it, then check and migrate on one connection.
///
/// The order matters. The header is read with plain file I/O, so a file that is not a database
/// is never opened by SQLite (which would otherwise fail every connection the pool tries, for
/// the pool's whole acquire timeout). The tables are read before anything is written (switching
/// to WAL rewrites the header), so another application's database is left byte for byte as it
/// was. The migrations run inside `BEGIN IMMEDIATE`, which takes SQLite's write lock first: a
/// second run started at the same moment waits on the busy timeout, then finds them applied.
async fn prepare_sqlite(url: &str, shown: &str) -> Result<()> {
    let path = sqlite_path(url, shown)?;
    check_sqlite_file(&path)?;
    let open_err = |source| StoreError::Open {
        url: shown.to_string(),
        source,
    };
    let mut conn = AnyConnection::connect(url).await.map_err(open_err)?;
    let result = async {
        conn.execute("PRAGMA busy_timeout = 30000")
            .await
            .map_err(open_err)?;
        let tables: Vec<String> = sqlx::query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(|e| damaged_or(e, &path, shown))?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(open_err)?;
        let migrator = migrator(Backend::Sqlite);
        let ours = tables.iter().any(|t| t == MIGRATIONS_TABLE)
            && records_our_first_migration(&mut conn, &migrator).await?;
        if let Some(foreign) = foreign_tables(&tables, ours) {
            return Err(StoreError::Unusable {
                message: format!(
                    "{} belongs to another application: it has tables notify does not know ({}) and no record of notify's migrations. notify adds nothing to it; point database_url at a new file or at notify's own database",
                    path.display(),
                    list(&foreign)
                ),
            });
        }
        conn.execute("PRAGMA journal_mode = WAL")
            .await
            .map_err(|e| damaged_or(e, &path, shown))?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(open_err)?;
        migrator
            .run_direct(&mut *tx)
            .await
            .map_err(|source| migrate_error(source, shown))?;
        tx.commit().await.map_err(open_err)?;
        Ok(())
    }
    .await;
    let _ = conn.close().await;
    result
}

/// PostgreSQL: connect once (fast, with a clear word when the database does not exist or the
/// server does not answer), then check and migrate under an advisory lock so that concurrent
/// first runs take turns.
/// The file a `sqlite:` URL names.
fn sqlite_path(url: &str, shown: &str) -> Result<PathBuf> {
    SqliteConnectOptions::from_str(url)
        .map(|o| o.get_filename().to_path_buf())
        .map_err(|source| StoreError::Open {
            url: shown.to_string(),
            source,
        })
}

/// One connection to PostgreSQL, or why not (unreachable within the timeout, refused).
async fn connect_postgres(url: &str, shown: &str) -> Result<AnyConnection> {
    match tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect(url)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(source)) => Err(postgres_connect_error(source, shown)),
        Err(_) => Err(StoreError::Unreachable {
            url: shown.to_string(),
            message: format!("no answer within {} seconds", CONNECT_TIMEOUT.as_secs()),
        }),
    }
}

async fn prepare_postgres(url: &str, shown: &str) -> Result<()> {
    let mut conn = connect_postgres(url, shown).await?;
    let open_err = |source| StoreError::Open {
        url: shown.to_string(),
        source,
    };
    let result = async {
        conn.execute(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})").as_str())
            .await
            .map_err(open_err)?;
        let tables: Vec<String> = sqlx::query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_%'",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(open_err)?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(open_err)?;
        let migrator = migrator(Backend::Postgres);
        let ours = tables.iter().any(|t| t == MIGRATIONS_TABLE)
            && records_our_first_migration(&mut conn, &migrator).await?;
        if let Some(foreign) = foreign_tables(&tables, ours) {
            return Err(StoreError::Unusable {
                message: format!(
                    "the PostgreSQL database {shown} belongs to another application: it has tables notify does not know ({}) and no record of notify's migrations. notify adds nothing to it; give notify a database of its own (createdb notify)",
                    list(&foreign)
                ),
            });
        }
        migrator
            .run_direct(&mut conn)
            .await
            .map_err(|source| migrate_error(source, shown))?;
        Ok(())
    }
    .await;
    // Closing the session releases the advisory lock whatever happened above.
    let _ = conn.close().await;
    result
}

/// sqlx's bookkeeping table, which records the migrations applied.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Whether the migrations table records notify's first migration (same version, same checksum):
/// the mark of a database notify made. Another sqlx application's table does not have it.
async fn records_our_first_migration(
    conn: &mut AnyConnection,
    migrator: &Migrator,
) -> Result<bool> {
    let Some(first) = migrator
        .iter()
        .find(|m| !m.migration_type.is_down_migration())
    else {
        return Ok(true);
    };
    let row = sqlx::query("SELECT checksum FROM _sqlx_migrations WHERE version = $1")
        .bind(first.version)
        .fetch_optional(&mut *conn)
        .await
        .map_err(super::q("reading the migrations applied"))?;
    Ok(match row {
        Some(r) => r
            .try_get::<Vec<u8>, _>(0)
            .map(|sum| sum.as_slice() == &*first.checksum)
            .unwrap_or(false),
        None => false,
    })
}

fn migrate_error(source: sqlx::migrate::MigrateError, shown: &str) -> StoreError {
    StoreError::Migrate {
        url: shown.to_string(),
        source,
    }
}

/// A SQLite error that says the file is damaged or not a database becomes a refusal naming the
/// file; anything else stays an open error.
fn damaged_or(e: sqlx::Error, path: &Path, shown: &str) -> StoreError {
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned());
    match code.as_deref() {
        // SQLITE_CORRUPT (11) and SQLITE_NOTADB (26), with or without extended bits.
        Some(c)
            if c.parse::<i64>()
                .is_ok_and(|n| n & 0xff == 11 || n & 0xff == 26) =>
        {
            StoreError::Unusable {
                message: format!(
                    "{} is not a usable SQLite database ({}); notify left it unchanged",
                    path.display(),
                    e.as_database_error()
                        .map(|d| d.message().to_string())
                        .unwrap_or_default()
                ),
            }
        }
        _ => StoreError::Open {
            url: shown.to_string(),
            source: e,
        },
    }
}

fn postgres_connect_error(source: sqlx::Error, shown: &str) -> StoreError {
    if let Some(d) = source.as_database_error() {
        // invalid_catalog_name: the database named in the URL does not exist.
        if d.code().as_deref() == Some("3D000") {
            return StoreError::Unusable {
                message: format!(
                    "cannot open the database {shown}: {}; create it (createdb NAME) or fix database_url",
                    d.message()
                ),
            };
        }
        return StoreError::Open {
            url: shown.to_string(),
            source,
        };
    }
    match source {
        sqlx::Error::Io(e) => StoreError::Unreachable {
            url: shown.to_string(),
            message: e.to_string(),
        },
        other => StoreError::Open {
            url: shown.to_string(),
            source: other,
        },
    }
}

fn list(names: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(|n| crate::inert::line(n))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// Read the start of a SQLite file (and the size of its `-wal` or `-journal`) and judge it with
/// [`judge_sqlite_header`]. A file that does not exist yet, or is empty, is a new database.
fn check_sqlite_file(path: &Path) -> Result<()> {
    use std::io::Read as _;
    let unusable = |why: String| {
        StoreError::Unusable {
        message: format!(
            "{} {why}; notify left it unchanged. Point database_url at notify's database or at a new file",
            path.display()
        ),
    }
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(unusable(format!("cannot be read: {e}"))),
    };
    if meta.is_dir() {
        return Err(unusable("is a folder, not a database file".into()));
    }
    if meta.len() == 0 {
        return Ok(());
    }
    let mut head = Vec::with_capacity(100);
    std::fs::File::open(path)
        .and_then(|f| f.take(100).read_to_end(&mut head))
        .map_err(|e| unusable(format!("cannot be read: {e}")))?;
    // A write-ahead log, or the rollback journal of a transaction cut short, holds pages the
    // main file may not have yet.
    let log_len: u64 = ["-wal", "-journal"]
        .iter()
        .map(|suffix| {
            std::fs::metadata(beside(path, suffix))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    judge_sqlite_header(&head, meta.len(), log_len).map_err(unusable)
}

/// `path` with `suffix` added to its file name (`notify.db` -> `notify.db-wal`).
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Whether a non-empty file whose first (up to) 100 bytes are `head` and whose length is
/// `file_len` can be a SQLite database; `wal_len` is the size of its `-wal` (or `-journal`)
/// file, 0 if none.
/// The error says why not, as the end of a sentence that begins with the file's name.
pub(crate) fn judge_sqlite_header(
    head: &[u8],
    file_len: u64,
    wal_len: u64,
) -> std::result::Result<(), String> {
    if !head.starts_with(SQLITE_MAGIC) {
        return Err("is not a SQLite database (it does not begin with the SQLite header)".into());
    }
    if head.len() < 100 {
        return Err(format!(
            "is a damaged SQLite database: only {file_len} bytes, shorter than the 100-byte header"
        ));
    }
    let be32 = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let page_size = match u16::from_be_bytes([head[16], head[17]]) {
        1 => 65_536u64,
        n if n >= 512 && n.is_power_of_two() => u64::from(n),
        n => {
            return Err(format!(
                "is a damaged SQLite database: its header gives a page size of {n}"
            ))
        }
    };
    // The page count in the header is to be trusted only when it was written by a SQLite that
    // keeps it (the change counter matches "version-valid-for") and when no write-ahead log
    // holds pages that the main file does not have yet.
    let pages = u64::from(be32(28));
    let counted = pages > 0 && be32(24) == be32(92);
    if counted && wal_len == 0 && file_len < pages * page_size {
        return Err(format!(
            "is a truncated SQLite database: its header counts {pages} pages of {page_size} bytes ({} bytes) but the file has {file_len}",
            pages * page_size
        ));
    }
    Ok(())
}

/// The tables that make a database foreign: those other than sqlx's bookkeeping, when the
/// database does not record notify's migrations. `None`: new, or notify's own.
pub(crate) fn foreign_tables(tables: &[String], records_ours: bool) -> Option<Vec<String>> {
    if records_ours {
        return None;
    }
    let mut others: Vec<String> = tables
        .iter()
        .filter(|t| t.as_str() != MIGRATIONS_TABLE)
        .cloned()
        .collect();
    others.sort();
    others.dedup();
    (!others.is_empty()).then_some(others)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(page_size: u16, pages: u32, counter: u32, valid_for: u32) -> Vec<u8> {
        let mut h = vec![0u8; 100];
        h[..16].copy_from_slice(SQLITE_MAGIC);
        h[16..18].copy_from_slice(&page_size.to_be_bytes());
        h[24..28].copy_from_slice(&counter.to_be_bytes());
        h[28..32].copy_from_slice(&pages.to_be_bytes());
        h[92..96].copy_from_slice(&valid_for.to_be_bytes());
        h
    }

    #[test]
    fn text_and_random_bytes_are_not_databases() {
        let e = judge_sqlite_header(b"# notify\n\nMoped release notices", 30, 0).unwrap_err();
        assert!(e.contains("not a SQLite database"), "{e}");
        let e = judge_sqlite_header(&[0x89, b'P', b'N', b'G', 0, 1, 2], 7, 0).unwrap_err();
        assert!(e.contains("not a SQLite database"), "{e}");
    }

    #[test]
    fn a_header_cut_short_is_damaged() {
        let e = judge_sqlite_header(&header(4096, 3, 1, 1)[..40], 40, 0).unwrap_err();
        assert!(e.contains("40 bytes"), "{e}");
    }

    #[test]
    fn a_file_shorter_than_its_page_count_is_truncated() {
        let h = header(4096, 12, 7, 7);
        assert!(judge_sqlite_header(&h, 12 * 4096, 0).is_ok());
        let e = judge_sqlite_header(&h, 5 * 4096 + 17, 0).unwrap_err();
        assert!(
            e.contains("truncated") && e.contains("12 pages of 4096"),
            "{e}"
        );
        // With a write-ahead log beside it the main file may lag behind: not judged by size.
        assert!(judge_sqlite_header(&h, 5 * 4096, 32_000).is_ok());
        // A stale page count (written by an old SQLite) is not trusted.
        assert!(judge_sqlite_header(&header(4096, 12, 8, 7), 4096, 0).is_ok());
    }

    #[test]
    fn page_sizes_follow_the_file_format() {
        assert!(judge_sqlite_header(&header(1, 1, 1, 1), 65_536, 0).is_ok());
        let e = judge_sqlite_header(&header(1000, 1, 1, 1), 1000, 0).unwrap_err();
        assert!(e.contains("page size of 1000"), "{e}");
    }

    #[test]
    fn foreign_means_unknown_tables_without_our_migrations() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(foreign_tables(&t(&[]), false), None);
        assert_eq!(foreign_tables(&t(&["_sqlx_migrations"]), false), None);
        assert_eq!(
            foreign_tables(&t(&["orders", "_sqlx_migrations", "customers"]), false),
            Some(t(&["customers", "orders"]))
        );
        assert_eq!(foreign_tables(&t(&["contacts", "orders"]), true), None);
    }
}
