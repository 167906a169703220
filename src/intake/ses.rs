//! Amazon SES bounce notifications: the SNS envelope (`"Type": "Notification"` with the SES JSON
//! as a string in `Message`) or the bare SES JSON (`notificationType` from SNS topics,
//! `eventType` from event publishing). Every bounced recipient counts, never just the first;
//! Delivery, Send and Complaint events are not bounces. A notification is verified like a bounce
//! message: by the original's Message-ID in its `mail` object (`commonHeaders.messageId`, else
//! the `Message-ID` header) being one of ours, or by a valid VERP token in `mail.source` (the
//! envelope sender); this module only reads them out.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{digest, Found, Incoming};
use crate::bounce::{classify_text, Bounce, BounceKind, Reason};

/// One SES/SNS JSON document as an input.
pub fn incoming(origin: &str, raw: Vec<u8>) -> Incoming {
    let parsed = serde_json::from_slice::<Value>(&raw)
        .map_err(|e| format!("not valid JSON ({e})"))
        .and_then(|v| parse_ses(&v));
    let (key, found) = match parsed {
        Ok((Some(id), found)) => (format!("ses:{id}"), Ok(found)),
        Ok((None, found)) => (digest("ses", &raw), Ok(found)),
        Err(e) => (digest("ses", &raw), Err(e)),
    };
    Incoming {
        origin: origin.to_string(),
        source_key: key,
        raw,
        found,
    }
}

/// Read an SES notification. Returns its feedback id (the key that makes a second import a
/// no-op) and the bounces it reports.
pub fn parse_ses(v: &Value) -> Result<(Option<String>, Found), String> {
    match v.get("Type").and_then(Value::as_str) {
        Some("Notification") => {
            let inner = v
                .get("Message")
                .and_then(Value::as_str)
                .ok_or("an SNS Notification without a Message string")?;
            let inner: Value = serde_json::from_str(inner)
                .map_err(|e| format!("the SNS Message is not SES JSON ({e})"))?;
            let (id, found) = parse_ses(&inner)?;
            let id = id.or_else(|| {
                v.get("MessageId")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
            return Ok((id, found));
        }
        Some(_) => return Ok((None, Found::default())), // subscription confirmations and the like
        None => {}
    }
    let kind = v
        .get("notificationType")
        .or_else(|| v.get("eventType"))
        .and_then(Value::as_str)
        .ok_or("JSON that is neither an SNS message nor an SES notification")?;
    if kind != "Bounce" {
        return Ok((None, Found::default()));
    }
    let bounce = v
        .get("bounce")
        .ok_or("an SES Bounce without a `bounce` object")?;
    let mail = v.get("mail");
    let bounce_type = bounce
        .get("bounceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let sub_type = bounce
        .get("bounceSubType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let remote = bounce
        .get("remoteMtaIp")
        .or_else(|| bounce.get("reportingMTA"))
        .and_then(Value::as_str)
        .map(|s| s.trim_start_matches("dns;").trim().to_string());
    let recipients = bounce
        .get("bouncedRecipients")
        .and_then(Value::as_array)
        .ok_or("an SES Bounce without bouncedRecipients")?;
    let mut bounces = Vec::new();
    for r in recipients {
        let Some(address) = r.get("emailAddress").and_then(Value::as_str) else {
            continue;
        };
        let address =
            crate::bounce::address_in(address).unwrap_or_else(|| address.trim().to_lowercase());
        let diagnostic = r
            .get("diagnosticCode")
            .and_then(Value::as_str)
            .map(str::to_string);
        let status_field = r.get("status").and_then(Value::as_str).map(str::to_string);
        let text = format!(
            "{} {}",
            status_field.as_deref().unwrap_or(""),
            diagnostic.as_deref().unwrap_or("")
        );
        let (_, text_reason, text_status, _) = classify_text(&text, true);
        // Without a bounce type, only a 5.x.x status in the text says SES's remote gave up.
        let text_permanent = crate::bounce::first_enhanced_status(&text).is_some_and(|s| s.0 == 5);
        let (kind, reason, permanent) =
            ses_verdict(bounce_type, sub_type, text_reason, text_permanent);
        bounces.push(Bounce {
            address,
            kind,
            permanent,
            delayed: false,
            status: status_field.or(text_status),
            reason,
            diagnostic,
            remote_mta: remote.clone(),
        });
    }
    let occurred_at = bounce
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let original_message_id = mail
        .and_then(|m| m.pointer("/commonHeaders/messageId"))
        .and_then(Value::as_str)
        .map(|s| s.trim().trim_matches(['<', '>']).to_string())
        .or_else(|| {
            mail.and_then(|m| m.get("headers"))
                .and_then(Value::as_array)
                .and_then(|hs| {
                    hs.iter().find(|h| {
                        h.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.eq_ignore_ascii_case("Message-ID"))
                    })
                })
                .and_then(|h| h.get("value"))
                .and_then(Value::as_str)
                .map(|s| s.trim().trim_matches(['<', '>']).to_string())
        });
    // SES reports the envelope sender (our VERP address) as mail.source.
    let verp_recipient = mail
        .and_then(|m| m.get("source"))
        .and_then(Value::as_str)
        .and_then(crate::bounce::address_in);
    let id = bounce
        .get("feedbackId")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((
        id,
        Found {
            bounces,
            verp_recipient,
            original_message_id,
            occurred_at,
        },
    ))
}

/// The kind, reason and permanence of one bounced recipient, from SES's `bounceType` and
/// `bounceSubType` and what the recipient's diagnostic and status say (`text_*`, from the
/// classifier):
///
/// - `Permanent` is permanent, `Transient` is not (and never hard: SES will try again or the
///   address may be fine); `Undetermined` (or none) is permanent when the text carries a 5.x.x
///   status.
/// - `NoEmail`: the address does not exist, `userunknown`. `Suppressed` and
///   `OnAccountSuppressionList`: SES refused to send because the address hard-bounced before;
///   still `userunknown`, and hard when permanent.
/// - `MailboxFull`: `mailboxfull`; `MessageTooLarge`: `mesgtoobig`.
/// - `ContentRejected`: the recipient's side refused what the message says, `policyviolation`,
///   unless the text names the finer cause (spam, a virus, unreadable content, a broken
///   message); `AttachmentRejected`: `policyviolation`, or `virusdetected` when the text says so.
/// - `General` (and anything else): the text decides the reason.
///
/// Then `kind` is [`BounceKind::of`] the reason (hard exactly for an unknown user or domain, a
/// moved mailbox, a permanent not-accept), except that a transient bounce is always soft.
fn ses_verdict(
    bounce_type: &str,
    sub_type: &str,
    text_reason: Reason,
    text_permanent: bool,
) -> (BounceKind, Reason, bool) {
    let permanent = match bounce_type {
        "Permanent" => true,
        "Transient" => false,
        _ => text_permanent,
    };
    let from_text = text_reason;
    let reason = match sub_type {
        "NoEmail" | "Suppressed" | "OnAccountSuppressionList" => Reason::UserUnknown,
        "MailboxFull" => Reason::MailboxFull,
        "MessageTooLarge" => Reason::MesgTooBig,
        "ContentRejected" => match from_text {
            r @ (Reason::SpamDetected
            | Reason::VirusDetected
            | Reason::ContentError
            | Reason::NotCompliantRfc
            | Reason::PolicyViolation) => r,
            _ => Reason::PolicyViolation,
        },
        "AttachmentRejected" => match from_text {
            Reason::VirusDetected => Reason::VirusDetected,
            _ => Reason::PolicyViolation,
        },
        _ => from_text,
    };
    let kind = match bounce_type {
        "Transient" => BounceKind::Soft,
        _ => BounceKind::of(reason, permanent),
    };
    (kind, reason, permanent)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &str = r#"{
      "notificationType": "Bounce",
      "bounce": {
        "feedbackId": "0100017c-fb-1",
        "bounceType": "Permanent", "bounceSubType": "General",
        "bouncedRecipients": [
          {"emailAddress": "Jane.Doe@austintexas.gov", "action": "failed", "status": "5.1.1",
           "diagnosticCode": "smtp; 550 5.1.1 user unknown"},
          {"emailAddress": "\"Bob\" <bob@austintexas.gov>", "action": "failed", "status": "5.1.10",
           "diagnosticCode": "smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound"}
        ],
        "timestamp": "2026-12-03T23:10:00.000Z", "reportingMTA": "dns; a8-1.smtp-out.amazonses.com"
      },
      "mail": {"source": "moped-bounces+2a-0123456789@austintexas.gov",
               "destination": ["jane.doe@austintexas.gov", "bob@austintexas.gov"],
               "commonHeaders": {"messageId": "<abc.notify@austintexas.gov>"}}
    }"#;

    #[test]
    fn every_recipient_of_a_bare_notification() {
        let v: Value = serde_json::from_str(BARE).unwrap();
        let (id, f) = parse_ses(&v).unwrap();
        assert_eq!(id.as_deref(), Some("0100017c-fb-1"));
        let addrs: Vec<&str> = f.bounces.iter().map(|b| b.address.as_str()).collect();
        assert_eq!(addrs, ["jane.doe@austintexas.gov", "bob@austintexas.gov"]);
        assert!(f.bounces.iter().all(|b| b.kind == BounceKind::Hard));
        assert_eq!(f.bounces[0].reason, Reason::UserUnknown);
        assert_eq!(
            f.original_message_id.as_deref(),
            Some("abc.notify@austintexas.gov")
        );
        assert_eq!(
            f.verp_recipient.as_deref(),
            Some("moped-bounces+2a-0123456789@austintexas.gov")
        );
        assert!(f.occurred_at.is_some());
    }

    #[test]
    fn sns_envelope_and_non_bounces() {
        let sns = serde_json::json!({"Type": "Notification", "MessageId": "m-1", "Message": BARE});
        let (_, f) = parse_ses(&sns).unwrap();
        assert_eq!(f.bounces.len(), 2);
        let delivery =
            serde_json::json!({"notificationType": "Delivery", "mail": {}, "delivery": {}});
        assert!(parse_ses(&delivery).unwrap().1.bounces.is_empty());
        let transient = serde_json::json!({"eventType": "Bounce", "bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull",
            "bouncedRecipients": [{"emailAddress": "a@austintexas.gov"}]}, "mail": {}});
        let (_, f) = parse_ses(&transient).unwrap();
        assert_eq!(
            (f.bounces[0].kind, f.bounces[0].reason),
            (BounceKind::Soft, Reason::MailboxFull)
        );
        assert!(parse_ses(&serde_json::json!({"hello": 1})).is_err());
    }

    /// One recipient of a bare notification of this type and subtype, with this diagnostic.
    fn verdict(bounce_type: &str, sub_type: &str, diagnostic: &str) -> Bounce {
        let v = serde_json::json!({"notificationType": "Bounce", "bounce": {
            "bounceType": bounce_type, "bounceSubType": sub_type,
            "bouncedRecipients": [{"emailAddress": "a@austintexas.gov", "diagnosticCode": diagnostic}]},
            "mail": {}});
        parse_ses(&v).unwrap().1.bounces.remove(0)
    }

    #[test]
    fn types_and_subtypes_map_onto_the_vocabulary() {
        use Reason::*;
        // (type, subtype) -> (kind, reason, permanent), with no diagnostic to read.
        let soft = BounceKind::Soft;
        let hard = BounceKind::Hard;
        for (t, sub, kind, reason, permanent) in [
            ("Permanent", "NoEmail", hard, UserUnknown, true),
            ("Permanent", "Suppressed", hard, UserUnknown, true),
            (
                "Permanent",
                "OnAccountSuppressionList",
                hard,
                UserUnknown,
                true,
            ),
            ("Permanent", "MailboxFull", soft, MailboxFull, true),
            ("Transient", "MailboxFull", soft, MailboxFull, false),
            ("Permanent", "MessageTooLarge", soft, MesgTooBig, true),
            ("Transient", "MessageTooLarge", soft, MesgTooBig, false),
            ("Permanent", "ContentRejected", soft, PolicyViolation, true),
            ("Transient", "ContentRejected", soft, PolicyViolation, false),
            (
                "Permanent",
                "AttachmentRejected",
                soft,
                PolicyViolation,
                true,
            ),
            // A general bounce that says nothing: undefined, soft, however permanent.
            ("Permanent", "General", soft, Undefined, true),
            ("Transient", "General", soft, Undefined, false),
            ("Undetermined", "Undetermined", soft, Undefined, false),
        ] {
            let b = verdict(t, sub, "");
            assert_eq!(
                (b.kind, b.reason, b.permanent),
                (kind, reason, permanent),
                "{t} {sub}"
            );
        }
    }

    #[test]
    fn a_general_bounce_is_read_from_its_diagnostic_and_transient_is_never_hard() {
        let gone = "smtp; 550 5.1.1 <a@austintexas.gov>: Recipient address rejected: User unknown";
        let b = verdict("Permanent", "General", gone);
        assert_eq!((b.kind, b.reason), (BounceKind::Hard, Reason::UserUnknown));
        assert!(b.permanent);
        assert_eq!(b.status.as_deref(), Some("5.1.1"));
        // The same words in a transient bounce: the reason stays, the kind is soft.
        let b = verdict("Transient", "General", gone);
        assert_eq!((b.kind, b.reason), (BounceKind::Soft, Reason::UserUnknown));
        assert!(!b.permanent);
        // Whatever the text reads as, a permanent general bounce is hard only for a reason
        // that is hard (BounceKind::of).
        let b = verdict(
            "Permanent",
            "General",
            "smtp; 554 5.7.1 Message rejected due to local policy",
        );
        assert_eq!(b.kind, BounceKind::of(b.reason, true), "{:?}", b.reason);
        // A subtype that names the cause wins over a text that reads otherwise.
        let b = verdict("Permanent", "NoEmail", "smtp; 552 5.2.2 mailbox full");
        assert_eq!((b.kind, b.reason), (BounceKind::Hard, Reason::UserUnknown));
    }
}
