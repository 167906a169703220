//! The bounce ledger: records bounces (with their raw source, once per source), ties each to a
//! contact and a notice (VERP token, then the returned Message-ID, then the address), decides
//! whether it is verified (only verified bounces count toward a flag), and applies the flag
//! [`Policy`]. Also owns the VERP secret. Used by `bounces import` and by a send that meets a
//! refusal; the commands only read arguments and print.

use std::collections::BTreeSet;

use chrono::Utc;
use serde::Serialize;

use crate::bounce::{Bounce, BounceKind};
use crate::inert;
use crate::intake::{Found, Incoming};
use crate::mail::verp;
use crate::policy::Policy;
use crate::store::{MatchedBy, NewBounce, SendRef, Store};

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

/// Record every bounce in `items`, tie it to contacts and notices, and apply the policy. Only
/// verified bounces (see [`attribute`]) can flag a contact; the others are kept as unverified.
pub async fn record(
    store: &Store,
    policy: &Policy,
    items: &[Incoming],
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
            let nb = attribute(store, &secret, item.vouched_for(), found, b).await?;
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
}
