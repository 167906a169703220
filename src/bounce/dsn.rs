//! RFC 3464 delivery-status fields (and RFC 6533's UTF-8 `message/global-delivery-status`):
//! splitting the body of a `message/delivery-status` part into per-recipient records.
//!
//! The body is a per-message block (`Reporting-MTA`, `Arrival-Date`) followed by one block per
//! recipient (`Final-Recipient`, `Action`, `Status`, `Remote-MTA`, `Diagnostic-Code`), blocks
//! separated by blank lines, fields folded like message headers. Real reports bend this: blank
//! lines go missing, fields appear in prose. So a record starts at a recipient field after a blank
//! line or when the current record already has that field, and lines that are not fields are
//! skipped. This module only collects field values; `mod.rs` turns them into bounces.
//!
//! Amazon SES reports bounces as JSON too (an SNS notification mailed to a subscriber); its
//! `bouncedRecipients` are read into the same records ([`ses_records`]).

/// Fields of one recipient block; values are unfolded and trimmed, otherwise as written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Recipient {
    pub final_recipient: Option<String>,
    pub original_recipient: Option<String>,
    pub action: Option<String>,
    pub status: Option<String>,
    pub remote_mta: Option<String>,
    pub diagnostic_code: Option<String>,
}

impl Recipient {
    fn has_recipient(&self) -> bool {
        self.final_recipient.is_some() || self.original_recipient.is_some()
    }
}

/// At most this many recipient records are read from one report.
const MAX_RECIPIENTS: usize = 1000;
/// Unfolded field values are cut to this many bytes.
const MAX_VALUE: usize = 4096;

/// One logical field: `Name: value`, continuation lines joined with a space.
fn push_line(value: &mut String, line: &str) {
    if value.len() < MAX_VALUE {
        if !value.is_empty() {
            value.push(' ');
        }
        value.push_str(line.trim());
    }
}

/// Reads the recipient records in `text` (the decoded body of a delivery-status part, or prose
/// that quotes one). Records without a recipient field are dropped.
pub(crate) fn parse_recipients(text: &str) -> Vec<Recipient> {
    let mut records: Vec<Recipient> = Vec::new();
    let mut current = Recipient::default();
    // The field being built: its lower-cased name and value.
    let mut field: Option<(String, String)> = None;
    let mut blank_before = true;
    // An Action or Status came after the current record's recipient field.
    let mut later_fields = false;

    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            finish_field(&mut field, &mut current);
            blank_before = true;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = field.as_mut() {
                push_line(value, line);
            }
            continue;
        }
        finish_field(&mut field, &mut current);
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name.len() > 40 || name.contains(char::is_whitespace) {
            continue;
        }
        let name = name.to_ascii_lowercase();
        // Recipient fields usually come first in their block: one after the Action or Status of
        // a named recipient, or a second one of the same name, begins the next recipient even
        // without a blank line. Fields before any recipient field of their block (Facebook
        // writes Diagnostic-Code and Status first) belong to the recipient that follows.
        if matches!(name.as_str(), "action" | "status") && current.has_recipient() {
            later_fields = true;
        }
        let starts_record = current.has_recipient()
            && match name.as_str() {
                "final-recipient" => {
                    blank_before || later_fields || current.final_recipient.is_some()
                }
                "original-recipient" => {
                    blank_before || later_fields || current.original_recipient.is_some()
                }
                _ => false,
            };
        if starts_record {
            flush(&mut current, &mut records);
            later_fields = false;
        } else if blank_before && !current.has_recipient() {
            // A new block: what an earlier block without a recipient said is not about this one.
            current = Recipient::default();
        }
        blank_before = false;
        let mut v = String::new();
        push_line(&mut v, value);
        field = Some((name, v));
        if records.len() >= MAX_RECIPIENTS {
            break;
        }
    }
    finish_field(&mut field, &mut current);
    flush(&mut current, &mut records);
    records
}

fn finish_field(field: &mut Option<(String, String)>, current: &mut Recipient) {
    let Some((name, value)) = field.take() else {
        return;
    };
    let slot = match name.as_str() {
        "final-recipient" => &mut current.final_recipient,
        "original-recipient" => &mut current.original_recipient,
        "action" => &mut current.action,
        "status" => &mut current.status,
        "remote-mta" => &mut current.remote_mta,
        "diagnostic-code" => &mut current.diagnostic_code,
        _ => return,
    };
    if slot.is_none() && !value.is_empty() {
        *slot = Some(value);
    }
}

fn flush(current: &mut Recipient, records: &mut Vec<Recipient>) {
    let record = std::mem::take(current);
    if record.has_recipient() {
        records.push(record);
    }
}

/// The value of a typed DSN field (`rfc822;bob@x.org`, `dns; mx.x.org`, `smtp; 550 ...`)
/// without its type, when the part before the first `;` is a type name.
pub(crate) fn strip_type(value: &str) -> &str {
    split_type(value).1
}

/// A typed DSN field's type (`smtp`, `X-Unix`, as written), when the part before the first
/// `;` is a type name, and its value without it.
pub(crate) fn split_type(value: &str) -> (Option<&str>, &str) {
    match value.split_once(';') {
        Some((kind, rest))
            if !kind.trim().is_empty()
                && kind.trim().len() <= 20
                && kind
                    .trim()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            (Some(kind.trim()), rest.trim())
        }
        _ => (None, value.trim()),
    }
}

/// The recipient records of an Amazon SES notification (`{"notificationType": "Bounce",
/// "bounce": {"bouncedRecipients": [...]}}`, bare or as the `Message` string of an SNS
/// notification) in `text`: `None` when the text is not one, no records for other kinds
/// (deliveries, complaints). Lines folded by a relay (a newline and a space inserted into a long
/// line) are unfolded first.
pub(crate) fn ses_records(text: &str) -> Option<Vec<Recipient>> {
    use serde_json::Value;
    let text = text.trim();
    if !text.starts_with('{') || !text.contains("notificationType") && !text.contains("eventType") {
        return None;
    }
    let unfolded = text.replace("\r\n ", "").replace("\n ", "");
    // The JSON value that opens the text; a footer after it (SNS's unsubscribe note) is not.
    let outer: Value = serde_json::Deserializer::from_str(&unfolded)
        .into_iter()
        .next()?
        .ok()?;
    let inner = match outer.get("Message").and_then(Value::as_str) {
        Some(message) => serde_json::from_str(message).ok()?,
        None => outer,
    };
    let kind = inner
        .get("notificationType")
        .or_else(|| inner.get("eventType"))
        .and_then(Value::as_str)?;
    if kind != "Bounce" {
        return Some(Vec::new());
    }
    let bounce = inner.get("bounce")?;
    let field = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    let transient = field(bounce, "bounceType").as_deref() == Some("Transient");
    let reporting = field(bounce, "reportingMTA");
    let records = bounce
        .get("bouncedRecipients")
        .and_then(Value::as_array)?
        .iter()
        .take(MAX_RECIPIENTS)
        .filter_map(|r| {
            Some(Recipient {
                final_recipient: Some(field(r, "emailAddress")?),
                original_recipient: None,
                action: field(r, "action")
                    .or_else(|| Some(if transient { "delayed" } else { "failed" }.into())),
                status: field(r, "status"),
                remote_mta: reporting.clone(),
                diagnostic_code: field(r, "diagnosticCode"),
            })
        })
        .collect();
    Some(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_message_block_then_recipients() {
        let text = "Reporting-MTA: dns; mail.example.org\r\nArrival-Date: Mon, 1 Jan 2024\r\n\r\n\
Final-Recipient: rfc822; bob@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.com>: Recipient address\r\n    rejected: User unknown\r\n\r\n\
Final-Recipient: rfc822; carol@example.com\r\nOriginal-Recipient: rfc822;carol@example.com\r\nAction: delivered\r\nStatus: 2.0.0\r\n";
        let r = parse_recipients(text);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0].final_recipient.as_deref(),
            Some("rfc822; bob@example.com")
        );
        assert_eq!(
            r[0].diagnostic_code.as_deref(),
            Some("smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown")
        );
        assert_eq!(r[1].action.as_deref(), Some("delivered"));
    }

    #[test]
    fn fields_before_the_recipient_belong_to_it() {
        // Facebook: per-message and recipient fields in one block, the recipient named last.
        let text =
            "Reporting-MTA: dns; 10.138.205.200\nDiagnostic-Code: SMTP; 550 5.1.1 RCP-P1\n    \
Recipient address does not exist\nStatus: 5.1.1\nFinal-Recipient: rfc822; kijitora@facebook.com\n\
Action: failed\n\nFinal-Recipient: rfc822; b@x.org\nAction: failed\nStatus: 5.2.2\n";
        let r = parse_recipients(text);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0].diagnostic_code.as_deref(),
            Some("SMTP; 550 5.1.1 RCP-P1 Recipient address does not exist")
        );
        assert_eq!(r[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(r[0].action.as_deref(), Some("failed"));
        assert_eq!(r[1].status.as_deref(), Some("5.2.2"));
        // A block with no recipient says nothing about the next block's recipient.
        let text =
            "Status: 5.0.0\nDiagnostic-Code: smtp; 550 stray\n\nFinal-Recipient: rfc822; a@x.org\n\
Action: failed\n";
        let r = parse_recipients(text);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, None);
        assert_eq!(r[0].diagnostic_code, None);
    }

    #[test]
    fn missing_blank_lines_still_split_recipients() {
        let text = "Reporting-MTA: dns; x\nFinal-Recipient: rfc822;a@x.org\nAction: failed\n\
Original-Recipient: rfc822;b@x.org\nFinal-Recipient: rfc822;b@x.org\nAction: delayed\n";
        let r = parse_recipients(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].original_recipient.as_deref(), Some("rfc822;b@x.org"));
        assert_eq!(r[1].action.as_deref(), Some("delayed"));
    }

    #[test]
    fn ses_notifications_give_records() {
        let inner = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bouncedRecipients":[{"emailAddress":"bob@example.com","action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 user unknown"}],"reportingMTA":"dsn; a1.example.com"},"mail":{"source":"me@example.org"}}"#;
        let sns = serde_json::json!({"Type": "Notification", "Message": inner}).to_string();
        // A relay folded the long line.
        let folded = format!("{}\n {}", &sns[..40], &sns[40..]);
        let footer = format!(
            "{inner}\n\n--\nIf you wish to stop receiving notifications, visit the link.\n"
        );
        for text in [inner.to_string(), sns, folded, footer] {
            let r = ses_records(&text).expect("an SES notification");
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].final_recipient.as_deref(), Some("bob@example.com"));
            assert_eq!(r[0].status.as_deref(), Some("5.1.1"));
            assert_eq!(r[0].remote_mta.as_deref(), Some("dsn; a1.example.com"));
        }
        let delivery = r#"{"notificationType":"Delivery","delivery":{"recipients":["a@x.org"]}}"#;
        assert_eq!(ses_records(delivery), Some(Vec::new()));
        assert_eq!(ses_records("Hello {notificationType}"), None);
        assert_eq!(ses_records("{\"notificationType\": "), None);
    }

    #[test]
    fn types_are_stripped() {
        assert_eq!(strip_type("smtp; 550 no; really"), "550 no; really");
        assert_eq!(split_type("X-Unix; 255"), (Some("X-Unix"), "255"));
        assert_eq!(split_type("no type here"), (None, "no type here"));
        assert_eq!(strip_type("X-Postfix; unknown user"), "unknown user");
        assert_eq!(
            strip_type("550 5.1.1 user unknown; sorry"),
            "550 5.1.1 user unknown; sorry"
        );
    }
}
