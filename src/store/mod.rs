//! Storage: the only place SQL lives. One code path over sqlx's `Any` driver for SQLite (the
//! embedded default) and PostgreSQL (several instances sharing the work); the few statements
//! that differ are chosen by `Backend`. The contacts sync (`staging`) is the one exception: on
//! PostgreSQL it runs on a connection of its own, for `COPY`. Times are RFC 3339 UTC text,
//! booleans 0/1.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::{AnyPool, Row};

use crate::contacts::{Audience, Contact, NON_LOGIN_ROLE};

mod bounces;
mod open;
mod party;
mod staging;
mod state;
mod workers;
pub use bounces::{AccountEvent, BounceRow, ComplaintRow, MatchedBy, NewBounce, SendRef};
pub use party::{FlagSince, NewCampaign};
pub use staging::ContactsSync;
pub use state::SendState;
pub use workers::{CampaignStatus, WorkerRow};

/// A database problem, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("cannot migrate the database {url}: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("database error while {doing}: {source}")]
    Query {
        doing: &'static str,
        source: sqlx::Error,
    },
    /// The database named is not one notify may use: a file that is not SQLite, a damaged one,
    /// another application's database, a PostgreSQL database that does not exist. Nothing was
    /// changed. Bad input (exit 2): running again will not help until the setting is fixed.
    #[error("{message}")]
    Unusable { message: String },
    /// The database server did not answer (down, unreachable): running again may help.
    #[error("cannot reach the database {url}: {message}")]
    Unreachable { url: String, message: String },
}

impl StoreError {
    /// Whether the error is about the configured database itself (exit 2), not a failure of the
    /// run (exit 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, StoreError::Unusable { .. })
    }
}

type Result<T> = std::result::Result<T, StoreError>;

fn q(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { doing, source }
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The state stored as `name`; any other text is a damaged row.
fn send_state(name: String) -> Result<SendState> {
    SendState::parse(&name).ok_or_else(|| StoreError::Query {
        doing: "reading a send's state",
        source: sqlx::Error::Decode(format!("unknown send state `{name}`").into()),
    })
}

/// Now, as stored.
pub fn now_text() -> String {
    ts(Utc::now())
}

/// A time as stored: RFC 3339 UTC with microseconds, so text order is time order.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A contact as stored.
#[derive(Debug, Clone, Serialize)]
pub struct StoredContact {
    pub id: i64,
    #[serde(flatten)]
    pub contact: Contact,
    /// In the latest import.
    pub in_export: bool,
    /// Flagged by a bounce; skipped by sends until resolved.
    pub needs_update: bool,
}

/// What a contacts sync changed (or, for a dry run, would change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub added: usize,
    /// Changed rows that were in the latest import already.
    pub updated: usize,
    pub unchanged: usize,
    /// Present before, missing from this file: marked inactive.
    pub removed: usize,
    /// Missing from an earlier import, back in this one (and updated).
    pub reactivated: usize,
    /// Contacts in the latest import before this sync.
    #[serde(skip)]
    pub active_before: usize,
}

/// A campaign row.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: i64,
    pub key: String,
}

/// A send claimed by a worker: deliver it, then mark it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub send_id: i64,
    pub contact: StoredContact,
    /// With angle brackets.
    pub message_id: String,
    /// Attempts including this one.
    pub attempts: i64,
}

/// Counts of a campaign's sends by state, for the given audience.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StateCounts {
    pub by_state: HashMap<SendState, i64>,
    /// Audience contacts flagged `needs_update` whose send is not done.
    pub flagged: i64,
}

impl StateCounts {
    pub fn get(&self, state: SendState) -> i64 {
        self.by_state.get(&state).copied().unwrap_or(0)
    }
}

/// The database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Where the pool connects: the contacts sync opens its own PostgreSQL connection (COPY).
    url: String,
}

const CONTACT_COLUMNS: &str = "c.id, c.user_id, c.email, c.first_name, c.last_name, c.title, c.workgroup, c.roles, c.is_coa_staff, c.is_deleted, c.is_user_group_member, c.note, c.date_added, c.last_seen_date, c.in_export, c.needs_update";

impl Store {
    /// Connect, create the SQLite file if needed, and apply migrations, refusing a file or
    /// database that is not notify's (see `open`).
    pub async fn open(url: &str) -> Result<Store> {
        open::open(url).await
    }

    /// Whether the database answers (`SELECT 1`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(q("checking the database"))?;
        Ok(())
    }

    /// The database at `url` if it exists and is notify's; `None` (creating nothing) if not.
    pub async fn open_existing(url: &str) -> Result<Option<Store>> {
        open::open_existing(url).await
    }

    /// A transaction that reads, then writes what it read: taken as a writer from the start, so
    /// that two runs at once take turns instead of failing. SQLite: `BEGIN IMMEDIATE` (waits on
    /// the busy timeout; a deferred transaction that read first cannot wait to upgrade). PostgreSQL:
    /// an advisory lock held until the transaction ends (both would insert the same rows).
    async fn begin_write(
        &self,
        doing: &'static str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        match self.backend {
            Backend::Sqlite => self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(q(doing)),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await.map_err(q(doing))?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(open::WRITE_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(q(doing))?;
                Ok(tx)
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Close the pool (flushes SQLite's WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A setting, created with `make()` the first time (the first writer wins).
    pub async fn setting_or_init(
        &self,
        key: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(make())
        .execute(&self.pool)
        .await
        .map_err(q("initialising a setting"))?;
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .map_err(q("reading a setting"))?;
        row.try_get::<String, _>(0).map_err(q("reading a setting"))
    }

    /// A setting, if it has been set.
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading a setting"))?;
        row.map(|r| r.try_get::<String, _>(0))
            .transpose()
            .map_err(q("reading a setting"))
    }

    /// Stored contacts, by user_id; those missing from the latest import only when asked.
    pub async fn contacts(&self, include_removed: bool) -> Result<Vec<StoredContact>> {
        let sql = format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts c {} ORDER BY c.user_id",
            if include_removed {
                ""
            } else {
                "WHERE c.in_export = 1"
            }
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(q("listing contacts"))?;
        rows.iter()
            .map(|r| contact_from_row(r).map_err(q("reading contacts")))
            .collect()
    }

    /// The campaign with `key`, created if new.
    pub async fn campaign(&self, key: &str, notice: &str, subject: &str) -> Result<Campaign> {
        sqlx::query(
            "INSERT INTO campaigns (key, notice, subject, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(notice)
        .bind(subject)
        .bind(now_text())
        .execute(&self.pool)
        .await
        .map_err(q("creating the campaign"))?;
        self.find_campaign(key)
            .await?
            .ok_or_else(|| StoreError::Query {
                doing: "creating the campaign",
                source: sqlx::Error::RowNotFound,
            })
    }

    /// The campaign with `key`, if it exists.
    pub async fn find_campaign(&self, key: &str) -> Result<Option<Campaign>> {
        let row = sqlx::query("SELECT id, key FROM campaigns WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading the campaign"))?;
        row.map(|r| {
            Ok(Campaign {
                id: r.try_get(0)?,
                key: r.try_get(1)?,
            })
        })
        .transpose()
        .map_err(q("reading the campaign"))
    }

    /// Add a pending send for every audience member that has none yet. Returns how many were added.
    pub async fn add_recipients(&self, campaign: &Campaign, audience: Audience) -> Result<u64> {
        let sql = format!(
            "INSERT INTO sends (campaign_id, contact_id, email, state, created_at, updated_at) \
             SELECT $1, c.id, c.email, 'pending', $2, $2 FROM contacts c WHERE {} \
             ON CONFLICT (campaign_id, contact_id) DO NOTHING",
            audience_sql(audience)
        );
        let done = sqlx::query(&sql)
            .bind(campaign.id)
            .bind(now_text())
            .execute(&self.pool)
            .await
            .map_err(q("adding recipients"))?;
        Ok(done.rows_affected())
    }

    /// `--resend`: put every send of the campaign back to pending with a fresh Message-ID.
    pub async fn reset_for_resend(&self, campaign: &Campaign) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE sends SET state = 'pending', message_id = NULL, attempts = 0, last_error = NULL, lease_owner = NULL, lease_until = NULL, updated_at = $2 WHERE campaign_id = $1 AND state <> 'sending'",
        )
        .bind(campaign.id)
        .bind(now_text())
        .execute(&self.pool)
        .await
        .map_err(q("resetting sends for --resend"))?;
        Ok(done.rows_affected())
    }

    /// `--retry-failed`: put the campaign's `failed` sends back to pending (same Message-ID),
    /// so this run sends them again. Returns how many.
    pub async fn reset_failed(&self, campaign: &Campaign) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE sends SET state = 'pending', attempts = 0, last_error = NULL, lease_owner = NULL, lease_until = NULL, updated_at = $2 WHERE campaign_id = $1 AND state = 'failed'",
        )
        .bind(campaign.id)
        .bind(now_text())
        .execute(&self.pool)
        .await
        .map_err(q("resetting failed sends for --retry-failed"))?;
        Ok(done.rows_affected())
    }

    /// How many messages an SMTP server accepted since `since`, over every campaign, and when
    /// the earliest of them was accepted: what a daily recipient limit has used up.
    pub async fn sent_since(&self, since: DateTime<Utc>) -> Result<(i64, Option<DateTime<Utc>>)> {
        let row = sqlx::query(
            "SELECT COUNT(*), MIN(sent_at) FROM sends WHERE state = 'sent' AND sent_at >= $1",
        )
        .bind(ts(since))
        .fetch_one(&self.pool)
        .await
        .map_err(q("counting recent deliveries"))?;
        let n: i64 = row.try_get(0).map_err(q("counting recent deliveries"))?;
        let first: Option<String> = row.try_get(1).map_err(q("counting recent deliveries"))?;
        let first = first
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc));
        Ok((n, first))
    }

    /// Claim up to `limit` sends to deliver for `audience`: pending ones, ones deferred before
    /// this run started (`run_started`: a run does not retake what it deferred itself),
    /// `written` ones when `deliver_written` (an SMTP run after outbox runs), and ones whose
    /// run is gone. They become `sending`, owned by `worker` with a lease until `lease_until`,
    /// and get a Message-ID under `id_domain` unless they have one (kept across retries and
    /// reruns, so a message repeated after a crash carries the same id).
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_batch(
        &self,
        campaign: &Campaign,
        audience: Audience,
        worker: &str,
        lease_until: DateTime<Utc>,
        deliver_written: bool,
        run_started: DateTime<Utc>,
        id_domain: &str,
        limit: usize,
    ) -> Result<Vec<Claim>> {
        let now = now_text();
        // A Message-ID starts with the send's id (10 hex digits), then 96 random bits (the
        // header stays within 78 characters for a domain like austintexas.gov): new
        // ids come in id order, so the message_id index grows at its end. Wholly random ids
        // landed all over an index of every message ever sent, and with a million contacts
        // each claim rewrote pages the cache no longer held (a claim of 256: 6.9 ms against
        // 2.1 ms).
        let (lock, new_id) = match self.backend {
            Backend::Postgres => (
                "FOR UPDATE OF s SKIP LOCKED",
                "lpad(to_hex(id), 10, '0') || '.' || substr(md5(random()::text || clock_timestamp()::text || id::text), 1, 24)",
            ),
            Backend::Sqlite => (
                "",
                "printf('%010x', id) || '.' || lower(hex(randomblob(12)))",
            ),
        };
        // What may be claimed, tried in this order, each as its own statement so that the
        // common case (the next pending rows) is an index seek, not a scan past every row
        // already sent. `$4` is `written` when an SMTP run also delivers what earlier runs
        // wrote to the outbox. A `sending` row is retaken when its lease ran out, or when its
        // run is gone (killed) and it was claimed before this run started; that last condition
        // matters on PostgreSQL, where a statement's snapshot may predate another run's
        // registration and a row that run has just claimed would look orphaned.
        let kinds = [
            |t: &str| format!("{t}.state = 'pending' AND $4 <> '' AND $6 <> ''"),
            |t: &str| format!("{t}.state IN ('deferred', $4) AND {t}.updated_at < $6"),
            |t: &str| {
                format!(
                    "{t}.state = 'sending' AND ({t}.lease_until < $3 OR ({t}.updated_at < $6 \
                     AND NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = {t}.lease_owner)))"
                )
            },
        ];
        let mut rows = Vec::new();
        for eligible in kinds {
            // The rows are picked once, in a CTE: PostgreSQL may run an `IN (SELECT … LIMIT n
            // … SKIP LOCKED)` subquery more than once in an UPDATE, and each run skips the rows
            // the previous one locked, so more than `limit` rows could be claimed.
            let sql = format!(
                "WITH picked AS (SELECT s.id FROM sends s JOIN contacts c ON c.id = s.contact_id \
                             WHERE s.campaign_id = $1 AND c.needs_update = 0 AND {aud} AND {inner} \
                             ORDER BY s.id LIMIT $8 {lock}) \
                 UPDATE sends SET state = 'sending', lease_owner = $2, lease_until = $5, attempts = attempts + 1, updated_at = $3, \
                   email = (SELECT c2.email FROM contacts c2 WHERE c2.id = sends.contact_id), \
                   message_id = COALESCE(message_id, '<' || {new_id} || '.notify@' || $7 || '>') \
                 WHERE id IN (SELECT id FROM picked) \
                   AND {outer} \
                 RETURNING id, contact_id, message_id, attempts",
                aud = audience_sql(audience),
                inner = eligible("s"),
                outer = eligible("sends"),
            );
            rows = sqlx::query(&sql)
                .bind(campaign.id)
                .bind(worker)
                .bind(&now)
                .bind(
                    if deliver_written {
                        SendState::Written
                    } else {
                        SendState::Pending
                    }
                    .as_str(),
                )
                .bind(ts(lease_until))
                .bind(ts(run_started))
                .bind(id_domain)
                .bind(limit.max(1) as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(q("claiming sends"))?;
            if !rows.is_empty() {
                break;
            }
        }
        let mut claims = Vec::with_capacity(rows.len());
        for row in &rows {
            let send_id: i64 = row.try_get(0).map_err(q("claiming sends"))?;
            let contact_id: i64 = row.try_get(1).map_err(q("claiming sends"))?;
            let message_id: String = row.try_get(2).map_err(q("claiming sends"))?;
            let attempts: i64 = row.try_get(3).map_err(q("claiming sends"))?;
            claims.push((send_id, contact_id, message_id, attempts));
        }
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        // The claimed contacts, by id. (Not found again through the claim's lease owner: on
        // PostgreSQL that index keeps an entry for every row the run ever claimed until the
        // table is vacuumed, so each lookup would cost more than the last.) SQLite binds `?`
        // by position; numbered parameters cost it a search per value.
        let placeholders: Vec<String> = (1..=claims.len())
            .map(|i| match self.backend {
                Backend::Sqlite => "?".to_string(),
                Backend::Postgres => format!("${i}"),
            })
            .collect();
        let sql = format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts c WHERE c.id IN ({})",
            placeholders.join(",")
        );
        let mut query = sqlx::query(&sql);
        for claim in &claims {
            query = query.bind(claim.1);
        }
        let contacts: HashMap<i64, StoredContact> = query
            .fetch_all(&self.pool)
            .await
            .map_err(q("reading claimed contacts"))?
            .iter()
            .map(|r| contact_from_row(r).map(|c| (c.id, c)))
            .collect::<std::result::Result<_, _>>()
            .map_err(q("reading claimed contacts"))?;
        claims.sort_by_key(|c| c.0);
        claims
            .into_iter()
            .map(|(send_id, contact_id, message_id, attempts)| {
                let contact = contacts
                    .get(&contact_id)
                    .cloned()
                    .ok_or(StoreError::Query {
                        doing: "reading claimed contacts",
                        source: sqlx::Error::RowNotFound,
                    })?;
                Ok(Claim {
                    send_id,
                    contact,
                    message_id,
                    attempts,
                })
            })
            .collect()
    }

    /// Give back the sends `worker` claimed but did not get to (the run stopped early), so
    /// that the next run takes them at once.
    pub async fn release_claims(&self, worker: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE sends SET state = CASE WHEN written_at IS NOT NULL THEN 'written' ELSE 'pending' END, \
             lease_owner = NULL, lease_until = NULL, updated_at = $2 WHERE lease_owner = $1 AND state = 'sending'",
        )
        .bind(worker)
        .bind(now_text())
        .execute(&self.pool)
        .await
        .map_err(q("releasing claimed sends"))?;
        Ok(done.rows_affected())
    }

    /// The server accepted these messages (or they were written to the outbox when
    /// `written`): one statement for all of them.
    pub async fn mark_done(&self, send_ids: &[i64], written: bool) -> Result<()> {
        if send_ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = (0..send_ids.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = if written {
            format!("UPDATE sends SET state = 'written', written_at = $1, updated_at = $1, last_error = NULL, lease_until = NULL WHERE id IN ({})", ids.join(", "))
        } else {
            format!("UPDATE sends SET state = 'sent', sent_at = $1, updated_at = $1, last_error = NULL, lease_until = NULL WHERE id IN ({})", ids.join(", "))
        };
        let mut query = sqlx::query(&sql).bind(now_text());
        for id in send_ids {
            query = query.bind(*id);
        }
        query
            .execute(&self.pool)
            .await
            .map_err(q("recording deliveries"))?;
        Ok(())
    }

    /// Not delivered: `failed` (refused for good) or `deferred` (try again), with the reason. A
    /// deferred send that had been written to the outbox goes back to `written`.
    pub async fn mark_undelivered(
        &self,
        send_id: i64,
        new_state: SendState,
        error: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE sends SET state = CASE WHEN $1 = 'deferred' AND written_at IS NOT NULL THEN 'written' ELSE $1 END, \
             last_error = $2, updated_at = $3, lease_owner = NULL, lease_until = NULL WHERE id = $4",
        )
        .bind(new_state.as_str())
        .bind(error)
        .bind(now_text())
        .bind(send_id)
        .execute(&self.pool)
        .await
        .map_err(q("recording a failed delivery"))?;
        Ok(())
    }

    /// Counts by state for the campaign's sends to `audience`.
    pub async fn counts(&self, campaign: &Campaign, audience: Audience) -> Result<StateCounts> {
        let sql = format!(
            "SELECT s.state, c.needs_update, COUNT(*) FROM sends s JOIN contacts c ON c.id = s.contact_id \
             WHERE s.campaign_id = $1 AND {} GROUP BY s.state, c.needs_update",
            audience_sql(audience)
        );
        let rows = sqlx::query(&sql)
            .bind(campaign.id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("counting sends"))?;
        let mut counts = StateCounts::default();
        for r in rows {
            let st = send_state(r.try_get(0).map_err(q("counting sends"))?)?;
            let flagged: i64 = r.try_get(1).map_err(q("counting sends"))?;
            let n: i64 = r.try_get(2).map_err(q("counting sends"))?;
            if flagged != 0 && !st.is_final() {
                counts.flagged += n;
            } else {
                *counts.by_state.entry(st).or_default() += n;
            }
        }
        Ok(counts)
    }

    /// Every send of a campaign with its state, for inspection and tests.
    pub async fn sends(&self, campaign: &Campaign) -> Result<Vec<SendRow>> {
        let rows = sqlx::query(
            "SELECT id, email, state, message_id, attempts, last_error FROM sends WHERE campaign_id = $1 ORDER BY id",
        )
        .bind(campaign.id)
        .fetch_all(&self.pool)
        .await
        .map_err(q("listing sends"))?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(2).map_err(q("listing sends"))?;
                Ok(SendRow {
                    id: r.try_get(0).map_err(q("listing sends"))?,
                    email: r.try_get(1).map_err(q("listing sends"))?,
                    state: send_state(state)?,
                    message_id: r.try_get(3).map_err(q("listing sends"))?,
                    attempts: r.try_get(4).map_err(q("listing sends"))?,
                    last_error: r.try_get(5).map_err(q("listing sends"))?,
                })
            })
            .collect()
    }
}

/// One journal row.
#[derive(Debug, Clone, Serialize)]
pub struct SendRow {
    pub id: i64,
    pub email: String,
    pub state: SendState,
    pub message_id: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// The statement that records an account event, for the caller to run on the pool or inside its
/// transaction.
fn account_event(
    contact_id: i64,
    event: &str,
    note: String,
    at: String,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(
        "INSERT INTO account_events (contact_id, event, note, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(contact_id)
    .bind(event)
    .bind(note)
    .bind(at)
}

/// The audience as a condition on `contacts c`; mirrors [`Audience::includes`] and also requires
/// the contact to be in the latest import.
fn audience_sql(a: Audience) -> String {
    let base = "c.in_export = 1 AND c.is_deleted = 0";
    match a {
        Audience::Mug => format!("{base} AND c.is_user_group_member = 1"),
        Audience::Users => format!(
            "{base} AND c.roles NOT LIKE '%\"{NON_LOGIN_ROLE}\"%' AND c.email NOT LIKE '%+%'"
        ),
        Audience::All => base.to_string(),
    }
}

/// A contact from a row of `CONTACT_COLUMNS`, over the pool (`AnyRow`) or the contacts sync's
/// own PostgreSQL connection (`PgRow`).
fn contact_from_row<'r, R: Row>(r: &'r R) -> std::result::Result<StoredContact, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let roles: String = r.try_get(7)?;
    Ok(StoredContact {
        id: r.try_get(0)?,
        contact: Contact {
            user_id: r.try_get(1)?,
            email: r.try_get(2)?,
            first_name: r.try_get(3)?,
            last_name: r.try_get(4)?,
            title: r.try_get(5)?,
            workgroup: r.try_get(6)?,
            roles: serde_json::from_str(&roles).unwrap_or_default(),
            is_coa_staff: r.try_get::<i64, _>(8)? != 0,
            is_deleted: r.try_get::<i64, _>(9)? != 0,
            is_user_group_member: r.try_get::<i64, _>(10)? != 0,
            note: r.try_get(11)?,
            date_added: r.try_get(12)?,
            last_seen_date: r.try_get(13)?,
        },
        in_export: r.try_get::<i64, _>(14)? != 0,
        needs_update: r.try_get::<i64, _>(15)? != 0,
    })
}
