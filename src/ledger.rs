//! The bounce ledger: records bounces (with their raw source, once per source), ties each to a
//! contact and a notice (VERP token, then the returned Message-ID, then the address), decides
//! whether it is verified (only verified bounces count toward a flag), and applies the flag
//! [`Policy`]; builds the review rows and the history of an address, and resolves a contact.
//! Also owns the VERP secret. Used by `bounces` (import, report, resolve, show) and by the
//! delivery of a notice that meets a refusal; callers only read arguments and print. Calls the
//! store, the policy and the review's row builders; prints nothing but the inputs it skips.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::bounce::{Bounce, BounceKind, MAX_MESSAGE_BYTES};
use crate::inert;
use crate::intake::imap::ImapMailbox;
use crate::intake::{self, Found, Incoming};
use crate::mail::verp;
use crate::policy::Policy;
use crate::review;
use crate::store::{AccountEvent, BounceRow, MatchedBy, NewBounce, SendRef, Store, StoredContact};

/// Secret for VERP tokens, made once per database.
pub async fn verp_secret(store: &Store) -> anyhow::Result<Vec<u8>> {
    let s = store
        .setting_or_init("verp_secret", || {
            use rand::Rng;
            let bytes: [u8; 32] = rand::thread_rng().gen();
            hex::encode(bytes)
        })
        .await?;
    Ok(s.into_bytes())
}

/// What an import did.
#[derive(Debug, Default, Serialize)]
pub struct ImportSummary {
    /// Inputs read (messages, notifications, CSV rows).
    pub read: usize,
    /// Bounced addresses recorded.
    pub bounces: usize,
    pub hard: usize,
    pub soft: usize,
    /// Inputs seen before: nothing recorded again.
    pub already_imported: usize,
    /// Out-of-office replies, ordinary mail, read receipts, deliveries.
    pub not_bounces: usize,
    /// Inputs over the size limit or unreadable.
    pub skipped: usize,
    /// Bounces tied to no contact (kept for review).
    pub unmatched: usize,
    /// Bounces recorded as unverified (no valid VERP token, no Message-ID of ours): kept for
    /// review, never counted toward a flag.
    pub unverified: usize,
    /// Contacts newly flagged as needing an update.
    pub flagged: Vec<String>,
    /// IMAP messages moved to the processed folder.
    pub moved: usize,
}

impl ImportSummary {
    /// What `bounces import` prints (lines, no final newline); `move_to` names the IMAP folder
    /// moved to.
    pub fn text(&self, move_to: &str) -> String {
        let mut lines = vec![format!(
            "read {}: {} bounce(s) recorded ({} hard, {} soft), {} already imported, {} not bounces, {} skipped, {} unmatched",
            self.read,
            self.bounces,
            self.hard,
            self.soft,
            self.already_imported,
            self.not_bounces,
            self.skipped,
            self.unmatched
        )];
        if self.moved > 0 {
            lines.push(format!("moved {} message(s) to {move_to}", self.moved));
        }
        if self.unverified > 0 {
            lines.push(format!(
                "{} bounce(s) unverified (no valid VERP token, no Message-ID of ours): kept, never counted toward a flag; those of contacts are listed by `notify bounces report --unverified`",
                self.unverified
            ));
        }
        if !self.flagged.is_empty() {
            lines.push(format!(
                "flagged for review: {} (see `notify bounces report`)",
                inert::line(&self.flagged.join(", "))
            ));
        }
        lines.join("\n")
    }
}

/// Record every bounce in `items`, tie it to contacts and notices, and apply the policy. Only
/// verified bounces (see [`attribute`]) can flag a contact; the others are kept as unverified.
pub async fn record(
    store: &Store,
    policy: &Policy,
    items: &[Incoming],
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    record_items(store, policy, items, false, summary).await
}

/// Record the bounces of an Amazon SES notification whose SNS signature verified (the webhook
/// of `notify serve`): a verified source, like an admin's CSV. Its bounces are tied to the send
/// by the original's Message-ID (or a VERP token), else to a contact by address, and count
/// toward a flag either way. `item.source_key` (`sns:<MessageId>`) makes a second delivery of
/// the same message change nothing (`summary.already_imported`).
pub async fn record_signed_notification(
    store: &Store,
    policy: &Policy,
    item: &Incoming,
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    record_items(store, policy, std::slice::from_ref(item), true, summary).await
}

/// What recording a complaint did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ComplaintSummary {
    /// Addresses recorded.
    pub recorded: usize,
    /// Of those, tied to a send or a contact.
    pub matched: usize,
    /// The source was recorded before: nothing recorded again.
    pub already_recorded: bool,
}

/// Record an SES complaint that came through a verified channel (a signed SNS message): kept,
/// with its raw source under `source_key`, for the review; tied to the send by the original's
/// Message-ID, else to a contact by address. A complaint never flags anybody.
pub async fn record_complaint(
    store: &Store,
    source_key: &str,
    origin: &str,
    raw: &[u8],
    complaint: &intake::sns::Complaint,
) -> anyhow::Result<ComplaintSummary> {
    let mut summary = ComplaintSummary::default();
    let Some(source_id) = store.add_bounce_source(source_key, origin, raw).await? else {
        summary.already_recorded = true;
        return Ok(summary);
    };
    let send = match &complaint.original_message_id {
        Some(mid) => store.send_by_message_id(mid).await?,
        None => None,
    };
    let occurred_at = complaint.occurred_at.unwrap_or_else(Utc::now);
    for address in &complaint.recipients {
        let contact_id = match send {
            Some(_) => None,
            None => store.contact_by_email(address).await?.map(|c| c.id),
        };
        let added = store
            .add_complaint(
                source_id,
                address,
                complaint.feedback_type.as_deref(),
                send,
                contact_id,
                occurred_at,
            )
            .await?;
        if added {
            summary.recorded += 1;
            if send.is_some() || contact_id.is_some() {
                summary.matched += 1;
            }
        }
    }
    Ok(summary)
}

/// [`record`], with every item taken as vouched for when `trusted` (a verified channel).
async fn record_items(
    store: &Store,
    policy: &Policy,
    items: &[Incoming],
    trusted: bool,
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    let secret = verp_secret(store).await?;
    let mut touched: BTreeSet<i64> = BTreeSet::new();
    for item in items {
        summary.read += 1;
        let found = match &item.found {
            Ok(f) => f,
            Err(why) => {
                eprintln!(
                    "skipped {}: {}",
                    inert::line(&item.origin),
                    inert::line(why)
                );
                summary.skipped += 1;
                continue;
            }
        };
        if found.bounces.is_empty() {
            summary.not_bounces += 1;
            continue;
        }
        let Some(source_id) = store
            .add_bounce_source(&item.source_key, &item.origin, &item.raw)
            .await?
        else {
            summary.already_imported += 1;
            continue;
        };
        for b in &found.bounces {
            let nb = attribute(store, &secret, trusted || item.vouched_for(), found, b).await?;
            match nb.contact_id {
                Some(c) if nb.verified => {
                    touched.insert(c);
                }
                Some(_) => {}
                None => summary.unmatched += 1,
            }
            if !nb.verified {
                summary.unverified += 1;
            }
            match b.kind {
                BounceKind::Hard => summary.hard += 1,
                BounceKind::Soft => summary.soft += 1,
            }
            summary.bounces += 1;
            store.add_bounce(source_id, &nb).await?;
        }
    }
    for contact_id in touched {
        let counted = store.counted_bounces(contact_id).await?;
        if let Some(why) = policy.verdict(&counted, Utc::now()) {
            if store.flag_contact(contact_id, &why).await? {
                if let Some(c) = store.contact_by_id(contact_id).await? {
                    summary.flagged.push(c.contact.email);
                }
            }
        }
    }
    Ok(())
}

/// Messages of an mbox recorded at a time by `bounces import`.
const MBOX_BATCH: usize = 64;

/// Record every input of `sources`: a list at once, an mbox read one message at a time and
/// recorded in batches, so its size does not matter.
pub async fn record_sources(
    store: &Store,
    policy: &Policy,
    sources: Vec<intake::Source>,
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    for source in sources {
        match source {
            intake::Source::Items(items) => record(store, policy, &items, summary).await?,
            intake::Source::Mbox(mbox) => {
                let mut batch = Vec::with_capacity(MBOX_BATCH);
                for item in mbox {
                    batch.push(item?);
                    if batch.len() == MBOX_BATCH {
                        record(store, policy, &batch, summary).await?;
                        batch.clear();
                    }
                }
                record(store, policy, &batch, summary).await?;
            }
        }
    }
    Ok(())
}

/// Record every message of an open IMAP mailbox (named `folder` in the origins), then move the
/// bounces among them to `move_to`: only after they are safely recorded. Messages over the size
/// limit are left in the mailbox and counted as skipped.
pub async fn record_mailbox(
    store: &Store,
    policy: &Policy,
    mailbox: &mut ImapMailbox,
    folder: &str,
    move_to: &str,
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    let messages = mailbox.fetch_all(MAX_MESSAGE_BYTES).await?;
    for (uid, size) in mailbox.oversized() {
        eprintln!(
            "skipped imap:{folder}/{uid}: message of {size} bytes is over the {MAX_MESSAGE_BYTES}-byte limit for bounce parsing; left in the mailbox",
        );
        summary.skipped += 1;
    }
    let mut recognised = Vec::new();
    let mut items = Vec::new();
    for (uid, raw) in messages {
        let item = intake::message(&format!("imap:{folder}/{uid}"), raw);
        if item.found.as_ref().is_ok_and(|f| !f.bounces.is_empty()) {
            recognised.push(uid);
        }
        items.push(item);
    }
    record(store, policy, &items, summary).await?;
    if !recognised.is_empty() {
        mailbox.move_to(&recognised, move_to).await?;
        summary.moved = recognised.len();
    }
    Ok(())
}

/// Tie one bounce to a send and decide whether it is verified.
///
/// Verified: its VERP token passes the HMAC check and names a send in the journal, or its
/// returned Message-ID is one of ours; the bounce is then tied to that send's contact. Also
/// verified: what came through a channel we trust (`vouched`: an admin's CSV, a refusal seen at
/// send time), tied by address. Anything else is tied to a contact by address only and recorded
/// as unverified with why: anybody can mail the bounce address, so such a bounce never flags or
/// skips anybody by itself.
async fn attribute(
    store: &Store,
    secret: &[u8],
    vouched: bool,
    found: &Found,
    b: &Bounce,
) -> anyhow::Result<NewBounce> {
    let mut nb = NewBounce {
        address: b.address.clone(),
        kind: b.kind,
        permanent: b.permanent,
        delayed: b.delayed,
        status: b.status.clone(),
        reason: b.reason,
        diagnostic: b.diagnostic.clone(),
        remote_mta: b.remote_mta.clone(),
        contact_id: None,
        send_id: None,
        campaign_id: None,
        matched_by: MatchedBy::Unmatched,
        occurred_at: found.occurred_at.unwrap_or_else(Utc::now),
        verified: false,
        unverified_reason: None,
    };
    let token = match found.verp_recipient.as_deref().and_then(verp::token_in) {
        None => Token::Absent,
        Some(t) => match verp::verify(secret, t) {
            None => Token::Failed,
            Some(send_id) => match store.send_by_id(send_id).await? {
                Some(s) => Token::Valid(s),
                None => Token::NoSend,
            },
        },
    };
    let (send, how) = match token {
        Token::Valid(s) => (Some(s), MatchedBy::Verp),
        _ => match &found.original_message_id {
            Some(mid) => (store.send_by_message_id(mid).await?, MatchedBy::MessageId),
            None => (None, MatchedBy::Unmatched),
        },
    };
    if let Some(s) = send {
        nb.contact_id = Some(s.contact_id);
        nb.send_id = Some(s.send_id);
        nb.campaign_id = Some(s.campaign_id);
        nb.matched_by = how;
        nb.verified = true;
        return Ok(nb);
    }
    if let Some(c) = store.contact_by_email(&b.address).await? {
        nb.contact_id = Some(c.id);
        nb.matched_by = MatchedBy::Address;
    }
    nb.verified = vouched;
    if !vouched {
        nb.unverified_reason = Some(unverified_reason(
            &token,
            found.original_message_id.is_some(),
        ));
    }
    Ok(nb)
}

/// What became of a bounce's VERP token.
enum Token {
    /// The address it came back to carries none.
    Absent,
    /// It does not pass the HMAC check (forged, mangled, or made with another secret).
    Failed,
    /// It passes, but names no send in the journal.
    NoSend,
    /// It passes and names this send.
    Valid(SendRef),
}

/// Why a bounce could not be verified, for the review.
fn unverified_reason(token: &Token, had_message_id: bool) -> String {
    let mid = if had_message_id {
        "the returned Message-ID is not one of ours"
    } else {
        "no Message-ID of ours"
    };
    match (token, had_message_id) {
        (Token::Absent, false) => "no token and no Message-ID of ours".to_string(),
        (Token::Absent, true) => format!("no token, and {mid}"),
        (Token::Failed, false) => "VERP token failed its check".to_string(),
        (Token::Failed, true) => format!("VERP token failed its check, and {mid}"),
        (Token::NoSend | Token::Valid(_), _) => {
            format!("VERP token names no send in the journal, and {mid}")
        }
    }
}

/// The review rows, optionally only with bounces since a date.
pub async fn review_rows(
    store: &Store,
    since: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<review::ReviewRow>> {
    let mut rows = Vec::new();
    for c in store.flagged_contacts().await? {
        let mut bounces = store.counted_bounces(c.id).await?;
        if let Some(since) = since {
            let since = crate::store::ts(since);
            bounces.retain(|b| b.occurred_at >= since);
        }
        if let Some(r) = review::row(&c, &bounces) {
            rows.push(r);
        }
    }
    Ok(rows)
}

/// The unverified bounces tied to contacts (since their last resolution), optionally only those
/// since a date.
pub async fn unverified_rows(
    store: &Store,
    since: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<review::UnverifiedRow>> {
    let since = since.map(crate::store::ts);
    let mut rows = Vec::new();
    let mut contacts = std::collections::HashMap::new();
    for b in store.unverified_bounces().await? {
        if since.as_ref().is_some_and(|s| &b.occurred_at < s) {
            continue;
        }
        let Some(id) = b.contact_id else { continue };
        let contact = match contacts.get(&id) {
            Some(c) => c,
            None => {
                let c = store.contact_by_id(id).await?;
                contacts.entry(id).or_insert(c)
            }
        };
        if let Some(c) = contact {
            rows.push(review::unverified_row(c, &b));
        }
    }
    Ok(rows)
}

/// What `bounces report` shows.
pub struct Review {
    /// Flagged accounts (empty when only the unverified bounces were asked for).
    pub rows: Vec<review::ReviewRow>,
    /// Unverified bounces tied to contacts.
    pub unverified: Vec<review::UnverifiedRow>,
    /// Bounces tied to nobody.
    pub unmatched: usize,
}

/// The review, optionally only with bounces since a date, optionally only the unverified part.
pub async fn review(
    store: &Store,
    since: Option<DateTime<Utc>>,
    only_unverified: bool,
) -> anyhow::Result<Review> {
    let rows = if only_unverified {
        Vec::new()
    } else {
        review_rows(store, since).await?
    };
    let unverified = unverified_rows(store, since).await?;
    let unmatched = store.unmatched_count().await? as usize;
    Ok(Review {
        rows,
        unverified,
        unmatched,
    })
}

/// What resolving a contact did.
pub struct Resolved {
    /// The contact's address as stored.
    pub email: String,
    /// It was flagged before.
    pub was_flagged: bool,
    /// Bounces that counted before and no longer do.
    pub counted: usize,
}

/// Lift a contact's flag (if any) with a note: its earlier bounces stop counting. `None` when no
/// contact has the address.
pub async fn resolve(
    store: &Store,
    email: &str,
    note: Option<&str>,
) -> anyhow::Result<Option<Resolved>> {
    let Some(c) = store.contact_by_email(email).await? else {
        return Ok(None);
    };
    let counted = store.counted_bounces(c.id).await?.len();
    store
        .resolve_contact(c.id, "resolved", note.unwrap_or(""))
        .await?;
    Ok(Some(Resolved {
        email: c.contact.email,
        was_flagged: c.needs_update,
        counted,
    }))
}

/// A contact's flag history and every bounce of it or its address (`bounces show`).
pub struct History {
    /// The contact with the address, if any.
    pub contact: Option<StoredContact>,
    /// Its flag history (empty without a contact).
    pub events: Vec<AccountEvent>,
    /// Every bounce of the contact or the address, oldest first.
    pub bounces: Vec<BounceRow>,
    /// The contact's review row (reason, kind, action) when it is flagged.
    pub row: Option<review::ReviewRow>,
}

/// The history of an address (trimmed and lower-cased here).
pub async fn history(store: &Store, address: &str) -> anyhow::Result<History> {
    let address = address.trim().to_lowercase();
    let contact = store.contact_by_email(&address).await?;
    let bounces = store
        .bounce_history(contact.as_ref().map(|c| c.id), &address)
        .await?;
    let events = match &contact {
        Some(c) => store.account_events(c.id).await?,
        None => Vec::new(),
    };
    let row = match &contact {
        Some(c) if c.needs_update => review::row(c, &store.counted_bounces(c.id).await?),
        _ => None,
    };
    Ok(History {
        contact,
        events,
        bounces,
        row,
    })
}

/// The raw source a recorded bounce came from.
pub async fn raw_source(store: &Store, bounce_id: i64) -> anyhow::Result<Vec<u8>> {
    Ok(store.bounce_raw(bounce_id).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unverified_reasons_say_what_was_missing() {
        assert_eq!(
            unverified_reason(&Token::Absent, false),
            "no token and no Message-ID of ours"
        );
        assert_eq!(
            unverified_reason(&Token::Failed, false),
            "VERP token failed its check"
        );
        assert!(unverified_reason(&Token::Failed, true).contains("Message-ID is not one of ours"));
        assert!(unverified_reason(&Token::NoSend, false).contains("names no send"));
    }
    #[test]
    fn the_import_summary_says_only_what_happened() {
        let mut s = ImportSummary {
            read: 3,
            bounces: 2,
            hard: 1,
            soft: 1,
            not_bounces: 1,
            ..ImportSummary::default()
        };
        assert_eq!(
            s.text("Processed"),
            "read 3: 2 bounce(s) recorded (1 hard, 1 soft), 0 already imported, 1 not bounces, 0 skipped, 0 unmatched"
        );
        s.moved = 2;
        s.unverified = 1;
        s.flagged = vec![
            "a@austintexas.gov".into(),
            "b\u{202e}@austintexas.gov".into(),
        ];
        let text = s.text("Processed");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[1], "moved 2 message(s) to Processed");
        assert!(lines[2].starts_with("1 bounce(s) unverified"));
        assert!(lines[3].starts_with("flagged for review: a@austintexas.gov, b"));
        assert!(!text.contains('\u{202e}'), "{text:?}");
    }
}
