//! Runs at work on a campaign (`workers`), and the campaign status report. Part of `store`: SQL
//! only. The rules (who may run, when a run is dead) are in `delivery::registry`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{now_text, q, ts, Campaign, Result, SendState, Store};

/// A registered run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub started_at: String,
    pub heartbeat_at: String,
}

/// Where a campaign stands.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignStatus {
    pub campaign: String,
    pub notice: String,
    pub subject: String,
    pub created_at: String,
    /// Sends by state (pending, sending, written, sent, failed, deferred).
    pub states: std::collections::BTreeMap<SendState, i64>,
    pub total: i64,
    pub first_sent_at: Option<String>,
    pub last_sent_at: Option<String>,
    /// Why sends are deferred (or failed), most common first, with counts.
    pub deferred_reasons: Vec<(String, i64)>,
    pub failed_reasons: Vec<(String, i64)>,
    pub workers: Vec<WorkerRow>,
}

impl Store {
    /// Register run `id` on `campaign`. With `exclusive` (SQLite) it succeeds only when no other
    /// run with a heartbeat after `alive_after` is registered for the campaign, in one statement
    /// so that two runs starting together cannot both win. Returns false when another run holds
    /// the campaign.
    pub async fn register_worker(
        &self,
        id: &str,
        campaign: &Campaign,
        host: &str,
        pid: i64,
        exclusive: bool,
        alive_after: DateTime<Utc>,
    ) -> Result<bool> {
        let now = now_text();
        let sql = if exclusive {
            "INSERT INTO workers (id, campaign_id, host, pid, started_at, heartbeat_at) \
             SELECT $1, $2, $3, $4, $5, $5 WHERE NOT EXISTS \
             (SELECT 1 FROM workers WHERE campaign_id = $2 AND heartbeat_at > $6)"
        } else {
            "INSERT INTO workers (id, campaign_id, host, pid, started_at, heartbeat_at) \
             SELECT $1, $2, $3, $4, $5, $5 WHERE $6 = $6"
        };
        let done = sqlx::query(sql)
            .bind(id)
            .bind(campaign.id)
            .bind(host)
            .bind(pid)
            .bind(&now)
            .bind(ts(alive_after))
            .execute(&self.pool)
            .await
            .map_err(q("registering the run"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Runs registered for a campaign.
    pub async fn workers(&self, campaign: &Campaign) -> Result<Vec<WorkerRow>> {
        let rows = sqlx::query(
            "SELECT id, host, pid, started_at, heartbeat_at FROM workers WHERE campaign_id = $1 ORDER BY started_at",
        )
        .bind(campaign.id)
        .fetch_all(&self.pool)
        .await
        .map_err(q("listing runs"))?;
        rows.iter()
            .map(|r| {
                Ok(WorkerRow {
                    id: r.try_get(0)?,
                    host: r.try_get(1)?,
                    pid: r.try_get(2)?,
                    started_at: r.try_get(3)?,
                    heartbeat_at: r.try_get(4)?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(q("listing runs"))
    }

    /// Forget a run (it ended, or it is known dead); its `sending` rows become claimable.
    pub async fn remove_worker(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("removing a run"))?;
        Ok(())
    }

    /// Forget runs whose heartbeat is older than `alive_after`.
    pub async fn remove_stale_workers(&self, alive_after: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM workers WHERE heartbeat_at <= $1")
            .bind(ts(alive_after))
            .execute(&self.pool)
            .await
            .map_err(q("removing stale runs"))?;
        Ok(done.rows_affected())
    }

    /// Beat run `id`'s heart and extend the leases of the sends it holds.
    pub async fn heartbeat(&self, id: &str, lease_until: DateTime<Utc>) -> Result<()> {
        let now = now_text();
        sqlx::query("UPDATE workers SET heartbeat_at = $1 WHERE id = $2")
            .bind(&now)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("recording a heartbeat"))?;
        // On PostgreSQL the rows are locked first, skipping those locked already: a send being
        // recorded as delivered at this moment (its lease ends with it) would otherwise be
        // locked in the opposite order by the two statements, a deadlock that fails the run.
        let sql = match self.backend {
            super::Backend::Postgres => {
                "UPDATE sends SET lease_until = $1 WHERE id IN (SELECT id FROM sends                  WHERE lease_owner = $2 AND state = 'sending' FOR UPDATE SKIP LOCKED)                  AND lease_owner = $2 AND state = 'sending'"
            }
            super::Backend::Sqlite => {
                "UPDATE sends SET lease_until = $1 WHERE lease_owner = $2 AND state = 'sending'"
            }
        };
        sqlx::query(sql)
            .bind(ts(lease_until))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("extending leases"))?;
        Ok(())
    }

    /// In one consistent read: how many of the campaign's sends to `audience` are still to do
    /// (pending, deferred, `written` when `deliver_written`, or held by no live run), and how
    /// many other live runs hold right now. Flagged contacts are in neither.
    pub async fn remaining(
        &self,
        campaign: &Campaign,
        audience: crate::contacts::Audience,
        me: &str,
        deliver_written: bool,
    ) -> Result<(i64, i64)> {
        let sql = format!(
            "SELECT \
               COALESCE(SUM(CASE WHEN s.state = 'sending' AND s.lease_owner <> $2 \
                   AND EXISTS (SELECT 1 FROM workers w WHERE w.id = s.lease_owner) THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN s.state IN ('pending', 'deferred', $3) OR (s.state = 'sending' AND (s.lease_owner = $2 \
                   OR NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = s.lease_owner))) THEN 1 ELSE 0 END), 0) \
             FROM sends s JOIN contacts c ON c.id = s.contact_id \
             WHERE s.campaign_id = $1 AND c.needs_update = 0 AND {}",
            super::audience_sql(audience)
        );
        let row = sqlx::query(&sql)
            .bind(campaign.id)
            .bind(me)
            .bind(
                if deliver_written {
                    SendState::Written
                } else {
                    SendState::Pending
                }
                .as_str(),
            )
            .fetch_one(&self.pool)
            .await
            .map_err(q("counting what is left"))?;
        let held: i64 = row.try_get(0).map_err(q("counting what is left"))?;
        let left: i64 = row.try_get(1).map_err(q("counting what is left"))?;
        Ok((left, held))
    }

    /// Every campaign key, newest first.
    pub async fn campaign_keys(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT key FROM campaigns ORDER BY created_at DESC, id DESC")
            .fetch_all(&self.pool)
            .await
            .map_err(q("listing campaigns"))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<_, _>>()
            .map_err(q("listing campaigns"))
    }

    /// Where a campaign stands.
    pub async fn campaign_status(&self, campaign: &Campaign) -> Result<CampaignStatus> {
        let head = sqlx::query("SELECT notice, subject, created_at FROM campaigns WHERE id = $1")
            .bind(campaign.id)
            .fetch_one(&self.pool)
            .await
            .map_err(q("reading the campaign"))?;
        let states_rows = sqlx::query(
            "SELECT state, COUNT(*), MIN(sent_at), MAX(sent_at) FROM sends WHERE campaign_id = $1 GROUP BY state",
        )
        .bind(campaign.id)
        .fetch_all(&self.pool)
        .await
        .map_err(q("counting sends"))?;
        let mut states = std::collections::BTreeMap::new();
        let (mut first, mut last): (Option<String>, Option<String>) = (None, None);
        for r in &states_rows {
            let st = super::send_state(r.try_get(0).map_err(q("counting sends"))?)?;
            let n: i64 = r.try_get(1).map_err(q("counting sends"))?;
            let lo: Option<String> = r.try_get(2).map_err(q("counting sends"))?;
            let hi: Option<String> = r.try_get(3).map_err(q("counting sends"))?;
            if let Some(lo) = lo {
                first = Some(first.map_or(lo.clone(), |f| f.min(lo)));
            }
            if let Some(hi) = hi {
                last = Some(last.map_or(hi.clone(), |l| l.max(hi)));
            }
            states.insert(st, n);
        }
        let reasons = |state: SendState| async move {
            let rows = sqlx::query(
                "SELECT COALESCE(last_error, ''), COUNT(*) FROM sends WHERE campaign_id = $1 AND state = $2 \
                 GROUP BY COALESCE(last_error, '') ORDER BY COUNT(*) DESC",
            )
            .bind(campaign.id)
            .bind(state.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(q("reading reasons"))?;
            rows.iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(q("reading reasons"))
        };
        let deferred_reasons = reasons(SendState::Deferred).await?;
        let failed_reasons = reasons(SendState::Failed).await?;
        Ok(CampaignStatus {
            campaign: campaign.key.clone(),
            notice: head.try_get(0).map_err(q("reading the campaign"))?,
            subject: head.try_get(1).map_err(q("reading the campaign"))?,
            created_at: head.try_get(2).map_err(q("reading the campaign"))?,
            total: states.values().sum(),
            states,
            first_sent_at: first,
            last_sent_at: last,
            deferred_reasons,
            failed_reasons,
            workers: self.workers(campaign).await?,
        })
    }
}
