//! A CSV of bounces as mail admins hand them over: `email`, `type` (hard/soft, or SES's
//! Permanent/Transient), `reason` and `date`. Header names are matched loosely (`address`,
//! `bounce_type`, `diagnostic`, `timestamp` also work). The reason is a reason's name, today's
//! (`userunknown`) or an earlier one (`user-unknown`, `policy`), in any case; anything else is
//! the server's answer, read by the classifier. A row must say whether the bounce is hard or
//! soft: by its type, by a reason name ([`BounceKind::of`]), or by an answer the classifier
//! recognises (a status or reply code, a known phrasing); a row with none of them (a blank or
//! unrecognised reason and no type) is refused, never counted hard by default. Every bad row is
//! reported with its line; then nothing is imported. Rows of an admin's CSV are trusted: they
//! count without a VERP token.

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
        let given = get(type_col).to_lowercase();
        // The reason column is a reason's name (today's, `userunknown`, or an earlier one,
        // `user-unknown`, any case), or else the server's answer, read as a diagnostic.
        let named = Reason::from_name(reason_text);
        // `delayed` (an earlier version's name) is a delay warning: its reason is `expired`.
        let delayed = reason_text.trim().eq_ignore_ascii_case("delayed");
        let known = match named {
            Some(_) => None,
            None => classify_known_text(reason_text),
        };
        let (reason, status) = match (named, &known) {
            (Some(r), _) => (r, None),
            (None, Some((_, r, s, _))) => (*r, s.clone()),
            (None, None) => (Reason::Undefined, None),
        };
        // Did the remote give up for good? `permanent`/`transient` say so; otherwise the
        // server's answer when it carries a code or a known phrasing; otherwise a hard type,
        // or (no type) a reason that is hard whatever the code (an unknown user or domain, a
        // moved mailbox).
        let permanent = match (given.as_str(), &known) {
            ("permanent", _) => true,
            ("transient", _) => false,
            (_, Some(k)) => k.3,
            ("hard", None) => true,
            ("", None) => named.is_some_and(|r| BounceKind::of(r, false) == BounceKind::Hard),
            _ => false,
        };
        let kind = match (given.as_str(), &known) {
            ("hard" | "permanent", _) => BounceKind::Hard,
            ("soft" | "transient" | "undetermined", _) => BounceKind::Soft,
            ("", _) if delayed => BounceKind::Soft,
            ("", _) if named.is_some() => BounceKind::of(reason, permanent),
            ("", Some((k, _, _, _))) => *k,
            ("", None) => {
                // Never guessed: a row that does not say hard or soft is refused, not counted
                // hard.
                problems.push(if reason_text.is_empty() {
                    "no type and no reason: give a type (hard or soft), a reason name (userunknown, mailboxfull, ...) or the server's answer as the reason".to_string()
                } else {
                    format!(
                        "reason `{}` does not say whether the bounce is hard or soft: give a type (hard or soft), or a reason name (userunknown, mailboxfull, ...)",
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
        // A delay warning named as such is not a failure: hard is a contradiction.
        if delayed && kind == BounceKind::Hard {
            problems.push(format!(
                "reason `{}` is a delay warning (the sender is still trying), not a failure: its type cannot be `{}`",
                inert::line(reason_text),
                inert::line(&given)
            ));
        }
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
                    delayed,
                    status,
                    reason,
                    // A reason's name is not what a server said.
                    diagnostic: (named.is_none() && !reason_text.is_empty())
                        .then(|| reason_text.to_string()),
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

    fn one(raw: &str) -> Bounce {
        let items = parse_csv(Path::new("b.csv"), raw.as_bytes()).unwrap();
        assert_eq!(items.len(), 1);
        items[0].found.as_ref().unwrap().bounces[0].clone()
    }

    #[test]
    fn a_reason_name_new_or_old_in_any_case_is_that_reason() {
        // (type, reason) -> (kind, reason, permanent)
        for (given, name, kind, reason, permanent) in [
            (
                "",
                "userunknown",
                BounceKind::Hard,
                Reason::UserUnknown,
                true,
            ),
            (
                "",
                "UserUnknown",
                BounceKind::Hard,
                Reason::UserUnknown,
                true,
            ),
            (
                "",
                "user-unknown",
                BounceKind::Hard,
                Reason::UserUnknown,
                true,
            ),
            (
                "",
                "host-unknown",
                BounceKind::Hard,
                Reason::HostUnknown,
                true,
            ),
            ("", "hasmoved", BounceKind::Hard, Reason::HasMoved, true),
            (
                "",
                "policy",
                BounceKind::Soft,
                Reason::PolicyViolation,
                false,
            ),
            ("", "Filtered", BounceKind::Soft, Reason::Filtered, false),
            (
                "",
                "message-too-large",
                BounceKind::Soft,
                Reason::MesgTooBig,
                false,
            ),
            ("", "other", BounceKind::Soft, Reason::Undefined, false),
            ("", "expired", BounceKind::Soft, Reason::Expired, false),
            ("", "delayed", BounceKind::Soft, Reason::Expired, false),
            // Never guessed hard: a host that takes no mail is hard only when it said so for
            // good.
            ("", "notaccept", BounceKind::Soft, Reason::NotAccept, false),
            (
                "permanent",
                "notaccept",
                BounceKind::Hard,
                Reason::NotAccept,
                true,
            ),
            // The type is the admin's word, whatever the reason.
            (
                "hard",
                "mailbox-full",
                BounceKind::Hard,
                Reason::MailboxFull,
                true,
            ),
            (
                "soft",
                "userunknown",
                BounceKind::Soft,
                Reason::UserUnknown,
                false,
            ),
            (
                "Transient",
                "blocked",
                BounceKind::Soft,
                Reason::Blocked,
                false,
            ),
        ] {
            let b = one(&format!(
                "email,type,reason\na@austintexas.gov,{given},{name}\n"
            ));
            assert_eq!(
                (b.kind, b.reason, b.permanent),
                (kind, reason, permanent),
                "{given:?} {name:?}"
            );
            assert_eq!(b.delayed, name == "delayed", "{name:?} is a delay warning");
            assert_eq!(
                (b.status, b.diagnostic),
                (None, None),
                "a name is no diagnostic"
            );
        }
        // Without a type column at all.
        let b = one("email,reason\na@austintexas.gov,RequirePTR\n");
        assert_eq!((b.kind, b.reason), (BounceKind::Soft, Reason::RequirePtr));
    }

    #[test]
    fn a_reason_that_is_no_name_is_still_the_servers_answer() {
        let b = one("email,type,reason\na@austintexas.gov,,550 5.1.1 user unknown\n");
        assert_eq!(b.reason, Reason::UserUnknown);
        assert_eq!(b.status.as_deref(), Some("5.1.1"));
        assert!(b.permanent);
        assert_eq!(b.diagnostic.as_deref(), Some("550 5.1.1 user unknown"));
        // An answer with a 4xx code, which the admin calls hard: hard, and not permanent.
        let b = one("email,type,reason\na@austintexas.gov,hard,452 4.2.2 mailbox full\n");
        assert_eq!(b.kind, BounceKind::Hard);
        assert!(!b.permanent);
        // Nearly a name is no name.
        let err = parse_csv(
            Path::new("b.csv"),
            b"email,type,reason\na@austintexas.gov,,user_unknown_x\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("b.csv:2:") && err.contains("a reason name"),
            "{err}"
        );
    }

    #[test]
    fn a_delay_warning_named_hard_is_refused_with_its_line() {
        let err = parse_csv(
            Path::new("b.csv"),
            b"email,type,reason\na@austintexas.gov,soft,mailboxfull\nb@austintexas.gov,hard,Delayed\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("b.csv:3:") && err.contains("`Delayed` is a delay warning"),
            "{err}"
        );
        assert!(!err.contains("b.csv:2:"), "{err}");
    }
}
