//! The release party's records: which release a notice is for and the times it announced
//! (`campaigns.release`, `starts_at`, `ends_at`), every version of a release's maintenance window
//! (`maintenance_windows`), and the per-release views the checklist and timeline read.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{now_text, q, ts, Campaign, Result, Store, StoreError};
use crate::party_facts::{NoticeFacts, WindowChange, WindowVersion};

/// A campaign to create (or find, when its key exists: the first run's values stay).
#[derive(Debug, Clone, Default)]
pub struct NewCampaign<'a> {
    pub key: &'a str,
    /// Template name.
    pub notice: &'a str,
    pub subject: &'a str,
    /// The release it is for (`v3.12.0`).
    pub release: Option<&'a str>,
    /// The times it announces (maintenance start: start and expected end; end: the end).
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
}

/// A flag raised on a contact since some time, with the verified bounce that decides its reason
/// (the latest hard one, else the latest that is not a delay warning, else the latest) and when
/// the latest was seen.
#[derive(Debug, Clone)]
pub struct FlagSince {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub user_id: i64,
    pub open: bool,
    pub kind: Option<String>,
    pub reason: Option<String>,
    pub status: Option<String>,
    pub last_bounce_at: Option<String>,
}

fn parse_ts(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

impl Store {
    /// The campaign `c.key`, created with these values if new.
    pub async fn campaign_with(&self, c: &NewCampaign<'_>) -> Result<Campaign> {
        sqlx::query(
            "INSERT INTO campaigns (key, notice, subject, created_at, release, starts_at, ends_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key) DO NOTHING",
        )
        .bind(c.key)
        .bind(c.notice)
        .bind(c.subject)
        .bind(now_text())
        .bind(c.release)
        .bind(c.starts_at.map(ts))
        .bind(c.ends_at.map(ts))
        .execute(&self.pool)
        .await
        .map_err(q("creating the campaign"))?;
        self.find_campaign(c.key)
            .await?
            .ok_or_else(|| StoreError::Query {
                doing: "creating the campaign",
                source: sqlx::Error::RowNotFound,
            })
    }

    /// Every recorded version of `release`'s maintenance window, oldest first.
    pub async fn window_versions(&self, release: &str) -> Result<Vec<WindowVersion>> {
        let rows = sqlx::query(
            "SELECT sequence, change, start_at, end_at, recorded_at, campaign FROM maintenance_windows \
             WHERE release = $1 ORDER BY sequence",
        )
        .bind(release)
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading the maintenance window"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let bad = |what: &str| StoreError::Query {
                doing: "reading the maintenance window",
                source: sqlx::Error::Decode(format!("bad {what} in maintenance_windows").into()),
            };
            let sequence: i64 = r.try_get(0).map_err(q("reading the maintenance window"))?;
            let change: String = r.try_get(1).map_err(q("reading the maintenance window"))?;
            let change = match change.as_str() {
                "scheduled" => WindowChange::Scheduled,
                "moved" => WindowChange::Moved,
                "cancelled" => WindowChange::Cancelled,
                _ => return Err(bad("change")),
            };
            let time = |i: usize| -> Result<DateTime<Utc>> {
                let t: String = r.try_get(i).map_err(q("reading the maintenance window"))?;
                parse_ts(Some(t)).ok_or_else(|| bad("time"))
            };
            out.push(WindowVersion {
                sequence: u32::try_from(sequence).map_err(|_| bad("sequence"))?,
                change,
                start: time(2)?,
                end: time(3)?,
                recorded_at: time(4)?,
                campaign: r.try_get(5).map_err(q("reading the maintenance window"))?,
            });
        }
        Ok(out)
    }

    /// Record version `v` of `release`'s window. Returns `false` when that sequence number was
    /// taken meanwhile (another run recorded a change first): read the window again.
    pub async fn record_window(&self, release: &str, v: &WindowVersion) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO maintenance_windows (release, sequence, change, start_at, end_at, recorded_at, campaign) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (release, sequence) DO NOTHING",
        )
        .bind(release)
        .bind(i64::from(v.sequence))
        .bind(v.change.as_str())
        .bind(ts(v.start))
        .bind(ts(v.end))
        .bind(ts(v.recorded_at))
        .bind(&v.campaign)
        .execute(&self.pool)
        .await
        .map_err(q("recording the maintenance window"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Releases whose release notes reached anybody (sent, or written to the outbox).
    pub async fn releases_with_notes_delivered(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT k.release FROM campaigns k JOIN sends s ON s.campaign_id = k.id \
             WHERE k.notice = 'release-notes' AND k.release IS NOT NULL AND s.state IN ('sent', 'written')",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading the releases sent"))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<_, _>>()
            .map_err(q("reading the releases sent"))
    }

    /// When `release`'s notes first reached anybody.
    pub async fn notes_first_delivered(&self, release: &str) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(
            "SELECT MIN(COALESCE(s.sent_at, s.written_at)) FROM campaigns k JOIN sends s ON s.campaign_id = k.id \
             WHERE k.notice = 'release-notes' AND k.release = $1 AND s.state IN ('sent', 'written')",
        )
        .bind(release)
        .fetch_one(&self.pool)
        .await
        .map_err(q("reading when the notes went out"))?;
        Ok(parse_ts(
            row.try_get(0)
                .map_err(q("reading when the notes went out"))?,
        ))
    }

    /// The contacts with a send in any of the campaigns `keys` that was not refused: who was
    /// told (or is being told) of a window, for its update or cancel.
    pub async fn contacts_sent_in(&self, keys: &[String]) -> Result<Vec<i64>> {
        let mut out = Vec::new();
        for key in keys {
            let rows = sqlx::query(
                "SELECT s.contact_id FROM sends s JOIN campaigns k ON k.id = s.campaign_id \
                 WHERE k.key = $1 AND s.state <> 'failed'",
            )
            .bind(key)
            .fetch_all(&self.pool)
            .await
            .map_err(q("reading who was warned"))?;
            for r in rows {
                out.push(
                    r.try_get::<i64, _>(0)
                        .map_err(q("reading who was warned"))?,
                );
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Add a pending send to `campaign` for each contact of `audience` that had a send (not
    /// refused) in one of the campaigns `keys`.
    pub async fn add_recipients_of(
        &self,
        campaign: &Campaign,
        audience: crate::contacts::Audience,
        keys: &[String],
    ) -> Result<u64> {
        let mut added = 0;
        for key in keys {
            let sql = format!(
                "INSERT INTO sends (campaign_id, contact_id, email, state, created_at, updated_at) \
                 SELECT $1, c.id, c.email, 'pending', $2, $2 FROM contacts c WHERE {} \
                 AND c.id IN (SELECT s.contact_id FROM sends s JOIN campaigns k ON k.id = s.campaign_id \
                              WHERE k.key = $3 AND s.state <> 'failed') \
                 ON CONFLICT (campaign_id, contact_id) DO NOTHING",
                super::audience_sql(audience)
            );
            let done = sqlx::query(&sql)
                .bind(campaign.id)
                .bind(now_text())
                .bind(key)
                .execute(&self.pool)
                .await
                .map_err(q("adding recipients"))?;
            added += done.rows_affected();
        }
        Ok(added)
    }

    /// The notices recorded for `release`, in the order they were first run, with their counts
    /// and the verified bounces they drew; also the times each announced.
    pub async fn release_notices(
        &self,
        release: &str,
    ) -> Result<Vec<(NoticeFacts, Option<DateTime<Utc>>, Option<DateTime<Utc>>)>> {
        let doing = "reading the release's notices";
        let heads = sqlx::query(
            "SELECT id, key, notice, subject, created_at, starts_at, ends_at FROM campaigns \
             WHERE release = $1 ORDER BY created_at, id",
        )
        .bind(release)
        .fetch_all(&self.pool)
        .await
        .map_err(q(doing))?;
        let mut out = Vec::with_capacity(heads.len());
        for h in heads {
            let id: i64 = h.try_get(0).map_err(q(doing))?;
            let created: String = h.try_get(4).map_err(q(doing))?;
            let mut n = NoticeFacts {
                campaign: h.try_get(1).map_err(q(doing))?,
                notice: h.try_get(2).map_err(q(doing))?,
                subject: h.try_get(3).map_err(q(doing))?,
                created_at: parse_ts(Some(created)).unwrap_or_default(),
                first_at: None,
                last_at: None,
                sent: 0,
                written: 0,
                failed: 0,
                deferred: 0,
                pending: 0,
                bounces: 0,
            };
            let starts = parse_ts(h.try_get(5).map_err(q(doing))?);
            let ends = parse_ts(h.try_get(6).map_err(q(doing))?);
            let rows = sqlx::query(
                "SELECT state, COUNT(*), MIN(COALESCE(sent_at, written_at)), MAX(COALESCE(sent_at, written_at)) \
                 FROM sends WHERE campaign_id = $1 GROUP BY state",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(q(doing))?;
            for r in rows {
                let state = super::send_state(r.try_get(0).map_err(q(doing))?)?;
                let count: i64 = r.try_get(1).map_err(q(doing))?;
                use super::SendState as S;
                match state {
                    S::Sent => n.sent += count,
                    S::Written => n.written += count,
                    S::Failed => n.failed += count,
                    S::Deferred => n.deferred += count,
                    S::Pending | S::Sending => n.pending += count,
                }
                if matches!(state, S::Sent | S::Written) {
                    let lo = parse_ts(r.try_get(2).map_err(q(doing))?);
                    let hi = parse_ts(r.try_get(3).map_err(q(doing))?);
                    n.first_at = match (n.first_at, lo) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    n.last_at = match (n.last_at, hi) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
            let b =
                sqlx::query("SELECT COUNT(*) FROM bounces WHERE campaign_id = $1 AND verified = 1")
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(q(doing))?;
            n.bounces = b.try_get(0).map_err(q(doing))?;
            out.push((n, starts, ends));
        }
        Ok(out)
    }

    /// Contacts flagged at or after `since` (all flags when `None`), with the verified bounce
    /// that decides the reason of each (as the review picks it) and when the latest was seen.
    pub async fn flags_since(&self, since: Option<DateTime<Utc>>) -> Result<Vec<FlagSince>> {
        let doing = "reading the accounts flagged";
        let rows = sqlx::query(
            "SELECT c.id, c.email, c.first_name, c.last_name, c.user_id, c.needs_update, MIN(e.created_at) AS first_flag \
             FROM account_events e JOIN contacts c ON c.id = e.contact_id \
             WHERE e.event = 'flagged' AND e.created_at >= $1 \
             GROUP BY c.id, c.email, c.first_name, c.last_name, c.user_id, c.needs_update \
             ORDER BY first_flag, c.id",
        )
        .bind(since.map(ts).unwrap_or_default())
        .fetch_all(&self.pool)
        .await
        .map_err(q(doing))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.try_get(0).map_err(q(doing))?;
            let needs: i64 = r.try_get(5).map_err(q(doing))?;
            let last = sqlx::query(
                "SELECT kind, reason, status, \
                 (SELECT MAX(l.occurred_at) FROM bounces l WHERE l.contact_id = $1 AND l.verified = 1) \
                 FROM bounces WHERE contact_id = $1 AND verified = 1 \
                 ORDER BY CASE WHEN kind = 'hard' THEN 0 WHEN delayed = 0 THEN 1 ELSE 2 END, \
                 occurred_at DESC, id DESC LIMIT 1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q(doing))?;
            let (kind, reason, status, at) = match last {
                Some(b) => (
                    b.try_get(0).map_err(q(doing))?,
                    b.try_get(1).map_err(q(doing))?,
                    b.try_get(2).map_err(q(doing))?,
                    b.try_get(3).map_err(q(doing))?,
                ),
                None => (None, None, None, None),
            };
            out.push(FlagSince {
                email: r.try_get(1).map_err(q(doing))?,
                first_name: r.try_get(2).map_err(q(doing))?,
                last_name: r.try_get(3).map_err(q(doing))?,
                user_id: r.try_get(4).map_err(q(doing))?,
                open: needs != 0,
                kind,
                reason,
                status,
                last_bounce_at: at,
            });
        }
        Ok(out)
    }
}
