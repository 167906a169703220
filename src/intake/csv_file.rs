//! A CSV of bounces as mail admins hand them over: `email`, `type` (hard/soft, or SES's
//! Permanent/Transient), `reason` (free text) and `date`. Header names are matched loosely
//! (`address`, `bounce_type`, `diagnostic`, `timestamp` also work). A row must say whether the
//! bounce is hard or soft: by its type, or by a reason the classifier recognises (a status or
//! reply code, a known phrasing); a row with neither (a blank or unrecognised reason and no type)
//! is refused, never counted hard by default. Every bad row is reported with its line; then
//! nothing is imported. Rows of an admin's CSV are trusted: they count without a VERP token.

use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};

use super::{digest, Found, Incoming, IntakeError};
use crate::bounce::{classify_known_text, Bounce, BounceKind, Reason};
use crate::contacts::{check_address, RowError};
use crate::inert;

const EMAIL: &[&str] = &["email", "address", "email_address", "recipient"];
const TYPE: &[&str] = &["type", "bounce_type", "kind", "bouncetype"];
const REASON: &[&str] = &[
    "reason",
    "diagnostic",
    "diagnostic_code",
    "message",
    "error",
];
const DATE: &[&str] = &["date", "timestamp", "time", "bounced_at"];

/// Is this a CSV of bounces? A `.csv` name, or a first line naming an email column and a type or
/// reason column.
pub fn looks_like_csv(path: &Path, raw: &[u8]) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        return true;
    }
    let first = raw.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let first = String::from_utf8_lossy(first).to_lowercase();
    let cols: Vec<&str> = first
        .split(',')
        .map(|c| c.trim().trim_matches('"'))
        .collect();
    cols.iter().any(|c| EMAIL.contains(c))
        && cols.iter().any(|c| TYPE.contains(c) || REASON.contains(c))
        && !first.contains(':')
}

/// Parse a CSV of bounces: one input per row.
pub fn parse_csv(path: &Path, raw: &[u8]) -> Result<Vec<Incoming>, IntakeError> {
    let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(raw);
    let fail = |errors| IntakeError::Csv {
        path: path.to_path_buf(),
        errors,
    };
    let headers: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(|c| c.trim().to_lowercase()).collect(),
        Err(e) => {
            return Err(fail(vec![RowError {
                line: 1,
                message: format!("cannot read the header row: {e}"),
            }]))
        }
    };
    let col = |names: &[&str]| headers.iter().position(|h| names.contains(&h.as_str()));
    let Some(email_col) = col(EMAIL) else {
        return Err(fail(vec![RowError {
            line: 1,
            message: format!("no email column (expected one of: {})", EMAIL.join(", ")),
        }]));
    };
    let (type_col, reason_col, date_col) = (col(TYPE), col(REASON), col(DATE));
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for rec in rdr.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                errors.push(RowError {
                    line: e.position().map(|p| p.line()).unwrap_or(0),
                    message: e.to_string(),
                });
                break;
            }
        };
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let get = |c: Option<usize>| c.and_then(|i| rec.get(i)).unwrap_or("").trim();
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let mut problems = Vec::new();
        let address = check_address(get(Some(email_col))).unwrap_or_else(|e| {
            problems.push(inert::line(&e).into_owned());
            String::new()
        });
        let reason_text = get(reason_col);
        let known = classify_known_text(reason_text);
        let (text_reason, status) = known
            .as_ref()
            .map(|(_, r, s, _)| (*r, s.clone()))
            .unwrap_or((Reason::Undefined, None));
        let given = get(type_col).to_lowercase();
        let kind = match (given.as_str(), &known) {
            ("hard" | "permanent", _) => BounceKind::Hard,
            ("soft" | "transient" | "undetermined", _) => BounceKind::Soft,
            ("", Some((k, _, _, _))) => *k,
            ("", None) => {
                // Never guessed: a row that does not say hard or soft is refused, not counted
                // hard.
                problems.push(if reason_text.is_empty() {
                    "no type and no reason: give a type (hard or soft) or the server's answer as the reason".to_string()
                } else {
                    format!(
                        "reason `{}` does not say whether the bounce is hard or soft: give a type (hard or soft)",
                        inert::line(reason_text)
                    )
                });
                BounceKind::Soft
            }
            (other, _) => {
                problems.push(format!(
                    "type `{}` is not hard, soft, permanent or transient",
                    inert::line(other)
                ));
                BounceKind::Soft
            }
        };
        let reason = text_reason;
        let permanent = match given.as_str() {
            "hard" | "permanent" => true,
            "" => known.as_ref().is_some_and(|k| k.3),
            _ => false,
        };
        let reason = match (kind, reason) {
            (BounceKind::Hard, Reason::Delayed) => Reason::Undefined,
            (_, r) => r,
        };
        let date = get(date_col);
        let occurred_at = if date.is_empty() {
            None
        } else {
            match parse_date(date) {
                Some(d) => Some(d),
                None => {
                    problems.push(format!(
                        "date `{}` is not a date like 2026-12-03",
                        inert::line(date)
                    ));
                    None
                }
            }
        };
        if !problems.is_empty() {
            errors.extend(
                problems
                    .into_iter()
                    .map(|message| RowError { line, message }),
            );
            continue;
        }
        let row_bytes = rec.iter().collect::<Vec<_>>().join(",").into_bytes();
        out.push(Incoming {
            origin: format!("{}:{line}", path.display()),
            source_key: digest("csv", &row_bytes),
            raw: row_bytes,
            found: Ok(Found {
                bounces: vec![Bounce {
                    address,
                    kind,
                    permanent,
                    status,
                    reason,
                    diagnostic: (!reason_text.is_empty()).then(|| reason_text.to_string()),
                    remote_mta: None,
                }],
                verp_recipient: None,
                original_message_id: None,
                occurred_at,
            }),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(fail(errors))
    }
}

fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    ["%Y-%m-%d", "%m/%d/%Y"]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(s, f).ok())
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_bounces_and_bad_rows_are_named() {
        let p = Path::new("bounces.csv");
        let ok = parse_csv(
            p,
            b"Email,Type,Reason,Date\nJane.Doe@austintexas.gov,Permanent,550 5.1.1 user unknown,2026-12-03\nbob@austintexas.gov,soft,mailbox full,\n",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        let b = &ok[0].found.as_ref().unwrap().bounces[0];
        assert_eq!(
            (b.address.as_str(), b.kind, b.reason),
            (
                "jane.doe@austintexas.gov",
                BounceKind::Hard,
                Reason::UserUnknown
            )
        );
        let b = &ok[1].found.as_ref().unwrap().bounces[0];
        assert_eq!((b.kind, b.reason), (BounceKind::Soft, Reason::MailboxFull));

        let err = parse_csv(
            p,
            b"email,type,reason,date\nnope,hard,x,\nok@austintexas.gov,maybe,x,soon\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("bounces.csv:2:") && err.contains("nope"),
            "{err}"
        );
        assert!(
            err.contains("bounces.csv:3:") && err.contains("maybe") && err.contains("soon"),
            "{err}"
        );
    }

    #[test]
    fn a_row_that_does_not_say_hard_or_soft_is_refused_never_hard() {
        let p = Path::new("b.csv");
        let err = parse_csv(
            p,
            b"email,type,reason\na@austintexas.gov,,\nb@austintexas.gov,,it went wrong\nc@austintexas.gov,,550 5.1.1 user unknown\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("b.csv:2:") && err.contains("no type and no reason"),
            "{err}"
        );
        assert!(
            err.contains("b.csv:3:") && err.contains("`it went wrong` does not say"),
            "{err}"
        );
        assert!(!err.contains("b.csv:4:"), "{err}");
        // Without a type column, the reason alone decides when it can.
        let err = parse_csv(p, b"email,reason\nd@austintexas.gov,\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.csv:2:"), "{err}");
        let ok = parse_csv(
            p,
            b"email,reason\nd@austintexas.gov,552 5.2.2 mailbox full\n",
        );
        let ok = ok.unwrap();
        assert_eq!(
            ok[0].found.as_ref().unwrap().bounces[0].kind,
            BounceKind::Soft
        );
        // An explicit type is the admin's word, whatever the reason says.
        let ok = parse_csv(p, b"email,type,reason\ne@austintexas.gov,hard,\n").unwrap();
        assert_eq!(
            ok[0].found.as_ref().unwrap().bounces[0].kind,
            BounceKind::Hard
        );
        assert!(ok[0].vouched_for());
    }
}
