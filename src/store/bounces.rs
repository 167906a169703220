//! Bounce storage: raw sources (deduplicated by key), bounce rows tied to a contact / send /
//! campaign when they can be (each marked verified or not, with why), account flag history, and
//! the queries the policy and the review need: only verified bounces are ever counted toward a
//! flag. Part of `store`: SQL only, no decisions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use crate::bounce::{BounceKind, Reason};

use super::{account_event, now_text, q, ts, Result, Store, StoredContact, CONTACT_COLUMNS};

/// How a bounce was tied to a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchedBy {
    /// The VERP token in the address the bounce was sent to.
    Verp,
    /// The Message-ID of the returned original.
    MessageId,
    /// The bounced address is a contact's address.
    Address,
    /// Not tied to anybody (kept for review).
    Unmatched,
}

impl MatchedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchedBy::Verp => "verp",
            MatchedBy::MessageId => "message-id",
            MatchedBy::Address => "address",
            MatchedBy::Unmatched => "unmatched",
        }
    }

    /// The value [`as_str`](Self::as_str) names; `None` for any other text.
    pub fn from_name(name: &str) -> Option<MatchedBy> {
        [
            MatchedBy::Verp,
            MatchedBy::MessageId,
            MatchedBy::Address,
            MatchedBy::Unmatched,
        ]
        .into_iter()
        .find(|m| m.as_str() == name)
    }
}

/// A bounce to record.
#[derive(Debug, Clone)]
pub struct NewBounce {
    pub address: String,
    pub kind: BounceKind,
    /// The remote gave up for good (a 5xx), as [`crate::bounce::Bounce::permanent`].
    pub permanent: bool,
    /// A delay warning, as [`crate::bounce::Bounce::delayed`].
    pub delayed: bool,
    pub status: Option<String>,
    pub reason: Reason,
    pub diagnostic: Option<String>,
    pub remote_mta: Option<String>,
    pub contact_id: Option<i64>,
    pub send_id: Option<i64>,
    pub campaign_id: Option<i64>,
    pub matched_by: MatchedBy,
    pub occurred_at: DateTime<Utc>,
    /// Proven to be about one of our messages (or from a trusted channel): only these count.
    pub verified: bool,
    /// Why an unverified bounce could not be verified.
    pub unverified_reason: Option<String>,
}

/// A recorded bounce with what the review shows of it.
#[derive(Debug, Clone, Serialize)]
pub struct BounceRow {
    pub id: i64,
    pub address: String,
    pub kind: BounceKind,
    /// The remote gave up for good (a 5xx); rows from before migration 0010 have it from their
    /// status.
    pub permanent: bool,
    /// A delay warning, not a failure: it counts toward nothing (rows from before migration
    /// 0011 stored it as the reason `delayed`).
    pub delayed: bool,
    pub status: Option<String>,
    pub reason: Reason,
    pub diagnostic: Option<String>,
    pub remote_mta: Option<String>,
    pub contact_id: Option<i64>,
    pub campaign: Option<String>,
    pub matched_by: MatchedBy,
    pub origin: String,
    pub occurred_at: String,
    /// Counted toward flags only when true.
    pub verified: bool,
    /// Why it is unverified (`None` for verified bounces).
    pub unverified_reason: Option<String>,
}

/// One entry of an account's flag history.
#[derive(Debug, Clone, Serialize)]
pub struct AccountEvent {
    pub event: String,
    pub note: String,
    pub at: String,
}

/// The send a VERP token or a Message-ID points at.
#[derive(Debug, Clone, Copy)]
pub struct SendRef {
    pub send_id: i64,
    pub contact_id: i64,
    pub campaign_id: i64,
}

/// A recorded SES complaint (somebody reported a notice as spam): shown in the review, never
/// counted toward a flag.
#[derive(Debug, Clone, Serialize)]
pub struct ComplaintRow {
    pub id: i64,
    pub address: String,
    /// `complaintFeedbackType` (`abuse`, `not-spam`, ...), when the provider gave one.
    pub feedback_type: Option<String>,
    pub contact_id: Option<i64>,
    /// The notice's campaign key, when the complaint is tied to a send.
    pub campaign: Option<String>,
    pub matched_by: MatchedBy,
    pub origin: String,
    pub occurred_at: String,
}

const BOUNCE_COLUMNS: &str = "b.id, b.address, b.kind, b.status, b.reason, b.diagnostic, b.remote_mta, b.contact_id, cp.key, b.matched_by, src.origin, b.occurred_at, b.verified, b.unverified_reason, b.permanent, b.delayed";

fn decode_error(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

/// A bounce row; its kind, reason and how it was matched are read from their stored names (a
/// reason no version of notify wrote is a decode error naming it).
fn bounce_from_row(r: &sqlx::any::AnyRow) -> std::result::Result<BounceRow, sqlx::Error> {
    Ok(BounceRow {
        id: r.try_get(0)?,
        address: r.try_get(1)?,
        kind: {
            let name: String = r.try_get(2)?;
            BounceKind::from_name(&name)
                .ok_or_else(|| decode_error(format!("unknown bounce kind `{name}`")))?
        },
        status: r.try_get(3)?,
        reason: {
            let name: String = r.try_get(4)?;
            Reason::from_name(&name)
                .ok_or_else(|| decode_error(format!("unknown bounce reason `{name}`")))?
        },
        diagnostic: r.try_get(5)?,
        remote_mta: r.try_get(6)?,
        contact_id: r.try_get(7)?,
        campaign: r.try_get(8)?,
        matched_by: {
            let name: String = r.try_get(9)?;
            MatchedBy::from_name(&name)
                .ok_or_else(|| decode_error(format!("unknown way a bounce was matched `{name}`")))?
        },
        origin: r.try_get(10)?,
        occurred_at: r.try_get(11)?,
        verified: r.try_get::<i64, _>(12)? != 0,
        unverified_reason: r.try_get(13)?,
        permanent: r.try_get::<i64, _>(14)? != 0,
        delayed: r.try_get::<i64, _>(15)? != 0,
    })
}

impl Store {
    /// Record a raw source unless one with `key` exists. `Some(id)` when it is new.
    pub async fn add_bounce_source(
        &self,
        key: &str,
        origin: &str,
        raw: &[u8],
    ) -> Result<Option<i64>> {
        let row = sqlx::query(
            "INSERT INTO bounce_sources (source_key, origin, raw, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (source_key) DO NOTHING RETURNING id",
        )
        .bind(key)
        .bind(origin)
        .bind(raw.to_vec())
        .bind(now_text())
        .fetch_optional(&self.pool)
        .await
        .map_err(q("recording a bounce source"))?;
        row.map(|r| r.try_get::<i64, _>(0))
            .transpose()
            .map_err(q("recording a bounce source"))
    }

    /// Record one bounced address of a source (once per source and address).
    pub async fn add_bounce(&self, source_id: i64, b: &NewBounce) -> Result<()> {
        sqlx::query(
            "INSERT INTO bounces (source_id, address, kind, status, reason, diagnostic, remote_mta, contact_id, send_id, campaign_id, matched_by, occurred_at, created_at, verified, unverified_reason, permanent, delayed) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17) ON CONFLICT (source_id, address) DO NOTHING",
        )
        .bind(source_id)
        .bind(&b.address)
        .bind(b.kind.as_str())
        .bind(&b.status)
        .bind(b.reason.as_str())
        .bind(&b.diagnostic)
        .bind(&b.remote_mta)
        .bind(b.contact_id)
        .bind(b.send_id)
        .bind(b.campaign_id)
        .bind(b.matched_by.as_str())
        .bind(ts(b.occurred_at))
        .bind(now_text())
        .bind(i64::from(b.verified))
        .bind(&b.unverified_reason)
        .bind(i64::from(b.permanent))
        .bind(i64::from(b.delayed))
        .execute(&self.pool)
        .await
        .map_err(q("recording a bounce"))?;
        Ok(())
    }

    /// The send with this journal id.
    pub async fn send_by_id(&self, send_id: i64) -> Result<Option<SendRef>> {
        self.send_ref(
            "SELECT id, contact_id, campaign_id FROM sends WHERE id = $1",
            |qy| qy.bind(send_id),
        )
        .await
    }

    /// The send whose message had this Message-ID (with or without angle brackets).
    pub async fn send_by_message_id(&self, message_id: &str) -> Result<Option<SendRef>> {
        let bare = message_id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        let bracketed = format!("<{bare}>");
        self.send_ref(
            "SELECT id, contact_id, campaign_id FROM sends WHERE message_id = $1 ORDER BY id DESC LIMIT 1",
            |qy| qy.bind(bracketed),
        )
        .await
    }

    async fn send_ref<'q>(
        &self,
        sql: &'q str,
        bind: impl FnOnce(
            sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<Option<SendRef>> {
        let row = bind(sqlx::query(sql))
            .fetch_optional(&self.pool)
            .await
            .map_err(q("finding a send"))?;
        row.map(|r| {
            Ok(SendRef {
                send_id: r.try_get(0)?,
                contact_id: r.try_get(1)?,
                campaign_id: r.try_get(2)?,
            })
        })
        .transpose()
        .map_err(q("finding a send"))
    }

    /// The contact with this address: one in the latest export first, the newest otherwise.
    pub async fn contact_by_email(&self, email: &str) -> Result<Option<StoredContact>> {
        self.one_contact(
            "c.email = $1 ORDER BY c.in_export DESC, c.id DESC LIMIT 1",
            |qy| qy.bind(email.trim().to_lowercase()),
        )
        .await
    }

    /// The contact with this id.
    pub async fn contact_by_id(&self, id: i64) -> Result<Option<StoredContact>> {
        self.one_contact("c.id = $1", |qy| qy.bind(id)).await
    }

    async fn one_contact(
        &self,
        condition: &str,
        bind: impl for<'q> FnOnce(
            sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        )
            -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<Option<StoredContact>> {
        let sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts c WHERE {condition}");
        let row = bind(sqlx::query(&sql))
            .fetch_optional(&self.pool)
            .await
            .map_err(q("finding a contact"))?;
        row.map(|r| super::contact_from_row(&r))
            .transpose()
            .map_err(q("finding a contact"))
    }

    /// Bounces of a contact that still count: verified ones that happened after its last
    /// resolution (or address change), oldest first.
    pub async fn counted_bounces(&self, contact_id: i64) -> Result<Vec<BounceRow>> {
        self.bounce_rows(
            "JOIN contacts c ON c.id = b.contact_id \
             WHERE b.contact_id = $1 AND b.verified = 1 AND b.occurred_at > c.counted_since",
            |qy| qy.bind(contact_id),
        )
        .await
    }

    /// Unverified bounces tied to a contact (by address) since its last resolution, oldest
    /// first: shown in the review, never counted.
    pub async fn unverified_bounces(&self) -> Result<Vec<BounceRow>> {
        self.bounce_rows(
            "JOIN contacts c ON c.id = b.contact_id \
             WHERE b.verified = 0 AND b.occurred_at > c.counted_since",
            |qy| qy,
        )
        .await
    }

    /// Every bounce of a contact or address, oldest first (for `bounces show`).
    pub async fn bounce_history(
        &self,
        contact_id: Option<i64>,
        address: &str,
    ) -> Result<Vec<BounceRow>> {
        let address = address.trim().to_lowercase();
        self.bounce_rows("WHERE b.contact_id = $1 OR b.address = $2", |qy| {
            qy.bind(contact_id.unwrap_or(-1)).bind(address)
        })
        .await
    }

    /// Bounces matching `filter` (joins and a WHERE clause over `bounces b`), oldest first.
    async fn bounce_rows(
        &self,
        filter: &str,
        bind: impl for<'q> FnOnce(
            sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        )
            -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<Vec<BounceRow>> {
        let sql = format!(
            "SELECT {BOUNCE_COLUMNS} FROM bounces b JOIN bounce_sources src ON src.id = b.source_id \
             LEFT JOIN campaigns cp ON cp.id = b.campaign_id {filter} ORDER BY b.occurred_at, b.id"
        );
        let rows = bind(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await
            .map_err(q("reading bounces"))?;
        rows.iter()
            .map(|r| bounce_from_row(r).map_err(q("reading bounces")))
            .collect()
    }

    /// Every verified bounce tied to a notice, oldest first: the review's chart of bounces per
    /// notice over time counts them.
    pub async fn campaign_bounces(&self) -> Result<Vec<BounceRow>> {
        self.bounce_rows("WHERE b.campaign_id IS NOT NULL AND b.verified = 1", |qy| {
            qy
        })
        .await
    }

    /// The raw source of a bounce.
    pub async fn bounce_raw(&self, bounce_id: i64) -> Result<Vec<u8>> {
        let row = sqlx::query(
            "SELECT src.raw FROM bounces b JOIN bounce_sources src ON src.id = b.source_id WHERE b.id = $1",
        )
        .bind(bounce_id)
        .fetch_one(&self.pool)
        .await
        .map_err(q("reading a bounce source"))?;
        row.try_get::<Vec<u8>, _>(0)
            .map_err(q("reading a bounce source"))
    }

    /// How many bounces are tied to nobody.
    pub async fn unmatched_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM bounces WHERE contact_id IS NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(q("counting unmatched bounces"))?;
        row.try_get::<i64, _>(0)
            .map_err(q("counting unmatched bounces"))
    }

    /// Flag a contact as needing an account update (no-op if already flagged). True if newly
    /// flagged.
    pub async fn flag_contact(&self, contact_id: i64, why: &str) -> Result<bool> {
        let now = now_text();
        let done = sqlx::query(
            "UPDATE contacts SET needs_update = 1, flagged_at = $1, updated_at = $1 WHERE id = $2 AND needs_update = 0",
        )
        .bind(&now)
        .bind(contact_id)
        .execute(&self.pool)
        .await
        .map_err(q("flagging a contact"))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        self.add_account_event(contact_id, "flagged", why).await?;
        Ok(true)
    }

    /// Lift a contact's flag and start counting bounces afresh; kept in the history.
    pub async fn resolve_contact(&self, contact_id: i64, event: &str, note: &str) -> Result<()> {
        let now = now_text();
        sqlx::query(
            "UPDATE contacts SET needs_update = 0, flagged_at = NULL, counted_since = $1, updated_at = $1 WHERE id = $2",
        )
        .bind(&now)
        .bind(contact_id)
        .execute(&self.pool)
        .await
        .map_err(q("resolving a contact"))?;
        self.add_account_event(contact_id, event, note).await
    }

    async fn add_account_event(&self, contact_id: i64, event: &str, note: &str) -> Result<()> {
        account_event(contact_id, event, note.to_string(), now_text())
            .execute(&self.pool)
            .await
            .map_err(q("recording an account event"))?;
        Ok(())
    }

    /// A contact's flag history, oldest first.
    pub async fn account_events(&self, contact_id: i64) -> Result<Vec<AccountEvent>> {
        let rows = sqlx::query(
            "SELECT event, note, created_at FROM account_events WHERE contact_id = $1 ORDER BY created_at, id",
        )
        .bind(contact_id)
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading account history"))?;
        rows.iter()
            .map(|r| {
                Ok(AccountEvent {
                    event: r.try_get(0)?,
                    note: r.try_get(1)?,
                    at: r.try_get(2)?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(q("reading account history"))
    }

    /// Contacts flagged as needing an update.
    pub async fn flagged_contacts(&self) -> Result<Vec<StoredContact>> {
        let rows = sqlx::query(&format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts c WHERE c.needs_update = 1 ORDER BY c.flagged_at, c.id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(q("listing flagged contacts"))?;
        rows.iter()
            .map(|r| super::contact_from_row(r).map_err(q("listing flagged contacts")))
            .collect()
    }

    /// Record one complained-about address of a source (once per source and address), tied to
    /// `send` (found by the original's Message-ID), else to `contact_id` (found by address).
    /// False when it was recorded before.
    pub async fn add_complaint(
        &self,
        source_id: i64,
        address: &str,
        feedback_type: Option<&str>,
        send: Option<SendRef>,
        contact_id: Option<i64>,
        occurred_at: DateTime<Utc>,
    ) -> Result<bool> {
        let (contact_id, matched_by) = match (send, contact_id) {
            (Some(s), _) => (Some(s.contact_id), MatchedBy::MessageId),
            (None, Some(c)) => (Some(c), MatchedBy::Address),
            (None, None) => (None, MatchedBy::Unmatched),
        };
        let done = sqlx::query(
            "INSERT INTO complaints (source_id, address, feedback_type, contact_id, send_id, campaign_id, matched_by, occurred_at, created_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT (source_id, address) DO NOTHING",
        )
        .bind(source_id)
        .bind(address.trim().to_lowercase())
        .bind(feedback_type)
        .bind(contact_id)
        .bind(send.map(|s| s.send_id))
        .bind(send.map(|s| s.campaign_id))
        .bind(matched_by.as_str())
        .bind(ts(occurred_at))
        .bind(now_text())
        .execute(&self.pool)
        .await
        .map_err(q("recording a complaint"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Every recorded complaint, optionally only those since a time, oldest first.
    pub async fn complaints(&self, since: Option<DateTime<Utc>>) -> Result<Vec<ComplaintRow>> {
        let rows = sqlx::query(
            "SELECT k.id, k.address, k.feedback_type, k.contact_id, cp.key, k.matched_by, src.origin, k.occurred_at \
             FROM complaints k JOIN bounce_sources src ON src.id = k.source_id \
             LEFT JOIN campaigns cp ON cp.id = k.campaign_id \
             WHERE k.occurred_at >= $1 ORDER BY k.occurred_at, k.id",
        )
        .bind(since.map(ts).unwrap_or_default())
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading complaints"))?;
        rows.iter()
            .map(|r| {
                Ok(ComplaintRow {
                    id: r.try_get(0)?,
                    address: r.try_get(1)?,
                    feedback_type: r.try_get(2)?,
                    contact_id: r.try_get(3)?,
                    campaign: r.try_get(4)?,
                    matched_by: {
                        let name: String = r.try_get(5)?;
                        MatchedBy::from_name(&name).ok_or_else(|| {
                            decode_error(format!("unknown way a complaint was matched `{name}`"))
                        })?
                    },
                    origin: r.try_get(6)?,
                    occurred_at: r.try_get(7)?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(q("reading complaints"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matched_by_names_are_the_serde_names_and_read_back() {
        for m in [
            MatchedBy::Verp,
            MatchedBy::MessageId,
            MatchedBy::Address,
            MatchedBy::Unmatched,
        ] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
            assert_eq!(MatchedBy::from_name(m.as_str()), Some(m));
        }
        assert_eq!(MatchedBy::from_name("VERP"), None);
    }
}
