//! Classification of one failed recipient into a [`Reason`] and a [`BounceKind`], from the
//! enhanced status code first, then the SMTP reply code, then keywords in the diagnostic. The
//! tables here are the whole policy; the parsers only gather the evidence.
//!
//! Hard means the address itself is bad and will stay bad (unknown user, no such domain, address
//! moved, a message given up on after days of trying). Soft means the address is fine but this
//! delivery did not happen (mailbox full, message too large, delayed, greylisted, blocked): a
//! soft bounce says nothing certain about the account, so policy only counts repeats of it.

use super::status::Status;
use super::{BounceKind, Reason};

/// What the report says happened to the message for this recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The MTA gave up: DSN `Action: failed`, or a failure notice in prose.
    Failed,
    /// The MTA is still trying: DSN `Action: delayed`, or a warning in prose.
    Delayed,
    /// The MTA gave up because the retry period ran out ("retry timeout exceeded").
    Expired,
}

/// Reasons that an enhanced status code states without doubt, by (subject, detail).
/// `None` in the detail column matches any detail of that subject.
const STATUS_REASONS: &[(u16, Option<u16>, Reason)] = &[
    (1, Some(1), Reason::UserUnknown), // bad destination mailbox address
    (1, Some(10), Reason::UserUnknown), // Exchange: recipient not found by SMTP address lookup
    (1, Some(2), Reason::HostUnknown), // bad destination system address
    (1, Some(3), Reason::UserUnknown), // bad destination mailbox address syntax
    (1, Some(6), Reason::UserUnknown), // mailbox has moved, no forwarding address
    (2, Some(1), Reason::UserUnknown), // mailbox disabled, not accepting messages
    (2, Some(2), Reason::MailboxFull), // mailbox full
    (2, Some(3), Reason::MesgTooBig),  // message length exceeds administrative limit
    (3, Some(4), Reason::MesgTooBig),  // message too big for system
    (4, Some(4), Reason::HostUnknown), // unable to route (no MX, no A)
    (4, Some(7), Reason::Expired),     // delivery time expired
    (7, None, Reason::PolicyViolation), // security or policy status
];

/// Keywords in a diagnostic, checked in this order, first match wins; all lower case. More
/// specific phrasings come before the general ones they contain ("domain does not exist" before
/// "does not exist", "mailbox size limit" before "size limit").
const KEYWORD_REASONS: &[(&str, Reason)] = &[
    // mailbox full
    ("mailbox full", Reason::MailboxFull),
    ("mailbox is full", Reason::MailboxFull),
    ("mailbox size limit", Reason::MailboxFull),
    ("mailbox has exceeded", Reason::MailboxFull),
    ("inbox is full", Reason::MailboxFull),
    ("full mailbox", Reason::MailboxFull),
    ("over quota", Reason::MailboxFull),
    ("overquota", Reason::MailboxFull),
    ("quota exceeded", Reason::MailboxFull),
    ("exceeded storage", Reason::MailboxFull),
    ("exceeded its storage", Reason::MailboxFull),
    ("out of storage", Reason::MailboxFull),
    ("quota", Reason::MailboxFull),
    ("insufficient storage", Reason::MailboxFull),
    // message too large
    ("message too large", Reason::MesgTooBig),
    ("message too big", Reason::MesgTooBig),
    ("message is too large", Reason::MesgTooBig),
    ("message is too big", Reason::MesgTooBig),
    ("message size exceeds", Reason::MesgTooBig),
    ("message length exceeds", Reason::MesgTooBig),
    ("maximum message size", Reason::MesgTooBig),
    ("exceeds size limit", Reason::MesgTooBig),
    ("size limit", Reason::MesgTooBig),
    ("too large", Reason::MesgTooBig),
    // given up after retrying
    ("retry timeout exceeded", Reason::Expired),
    ("retry time not reached", Reason::Expired),
    ("delivery time expired", Reason::Expired),
    ("message expired", Reason::Expired),
    ("too long in queue", Reason::Expired),
    ("in the queue too long", Reason::Expired),
    ("too long in the queue", Reason::Expired),
    ("message timed out", Reason::Expired),
    // host or domain unknown
    ("host not found", Reason::HostUnknown),
    ("host unknown", Reason::HostUnknown),
    ("unknown host", Reason::HostUnknown),
    ("domain not found", Reason::HostUnknown),
    ("domain name not found", Reason::HostUnknown),
    ("no such domain", Reason::HostUnknown),
    ("unknown domain", Reason::HostUnknown),
    ("domain does not exist", Reason::HostUnknown),
    ("domain doesn't exist", Reason::HostUnknown),
    ("name or service not known", Reason::HostUnknown),
    ("nxdomain", Reason::HostUnknown),
    ("no mx record", Reason::HostUnknown),
    ("unrouteable", Reason::HostUnknown),
    ("unroutable", Reason::HostUnknown),
    ("does not accept mail", Reason::HostUnknown),
    // user unknown
    ("user unknown", Reason::UserUnknown),
    ("unknown user", Reason::UserUnknown),
    ("no such user", Reason::UserUnknown),
    ("no such recipient", Reason::UserUnknown),
    ("no such mailbox", Reason::UserUnknown),
    ("no such person", Reason::UserUnknown),
    ("unknown recipient", Reason::UserUnknown),
    ("recipient unknown", Reason::UserUnknown),
    ("recipient not found", Reason::UserUnknown),
    ("recipnotfound", Reason::UserUnknown),
    ("recipientnotfound", Reason::UserUnknown),
    ("user not found", Reason::UserUnknown),
    ("address not found", Reason::UserUnknown),
    ("mailbox not found", Reason::UserUnknown),
    ("mailbox unavailable", Reason::UserUnknown),
    ("mailbox not available", Reason::UserUnknown),
    ("no mailbox here", Reason::UserUnknown),
    ("invalid recipient", Reason::UserUnknown),
    ("invalid mailbox", Reason::UserUnknown),
    ("invalid address", Reason::UserUnknown),
    ("address unknown", Reason::UserUnknown),
    ("unknown address", Reason::UserUnknown),
    ("unknown local part", Reason::UserUnknown),
    ("unknown or illegal alias", Reason::UserUnknown),
    ("not a valid mailbox", Reason::UserUnknown),
    ("not a known user", Reason::UserUnknown),
    ("not listed in", Reason::UserUnknown),
    ("does not exist", Reason::UserUnknown),
    ("doesn't exist", Reason::UserUnknown),
    ("doesn't have a", Reason::UserUnknown),
    ("does not have an account", Reason::UserUnknown),
    ("couldn't be found", Reason::UserUnknown),
    ("could not be found", Reason::UserUnknown),
    ("wasn't found at", Reason::UserUnknown),
    ("account has been disabled", Reason::UserUnknown),
    ("account is disabled", Reason::UserUnknown),
    ("account disabled", Reason::UserUnknown),
    ("mailbox disabled", Reason::UserUnknown),
    ("mailbox is disabled", Reason::UserUnknown),
    ("account is inactive", Reason::UserUnknown),
    ("account has been deactivated", Reason::UserUnknown),
    ("no longer valid", Reason::UserUnknown),
    ("no longer active", Reason::UserUnknown),
    ("has moved", Reason::UserUnknown),
    ("bad destination mailbox", Reason::UserUnknown),
    // Exchange Online directory-based edge blocking: the recipient is not in the directory.
    (
        "recipient address rejected: access denied",
        Reason::UserUnknown,
    ),
    // policy
    ("greylist", Reason::PolicyViolation),
    ("graylist", Reason::PolicyViolation),
    ("spam", Reason::PolicyViolation),
    ("blacklist", Reason::PolicyViolation),
    ("blocklist", Reason::PolicyViolation),
    ("block list", Reason::PolicyViolation),
    ("blocked", Reason::PolicyViolation),
    ("spamhaus", Reason::PolicyViolation),
    ("reputation", Reason::PolicyViolation),
    ("policy", Reason::PolicyViolation),
    ("dmarc", Reason::PolicyViolation),
    ("spf", Reason::PolicyViolation),
    ("dkim", Reason::PolicyViolation),
    ("not authorized", Reason::PolicyViolation),
    ("unauthorized", Reason::PolicyViolation),
    ("relay access denied", Reason::PolicyViolation),
    ("relaying denied", Reason::PolicyViolation),
    ("access denied", Reason::PolicyViolation),
    ("denied", Reason::PolicyViolation),
    ("refused", Reason::PolicyViolation),
    ("banned", Reason::PolicyViolation),
    ("prohibited", Reason::PolicyViolation),
    ("not permitted", Reason::PolicyViolation),
    ("virus", Reason::PolicyViolation),
    ("malware", Reason::PolicyViolation),
    ("content rejected", Reason::PolicyViolation),
];

/// The reason an enhanced status code states by itself, if it states one.
pub(crate) fn reason_from_status(status: Status) -> Option<Reason> {
    STATUS_REASONS
        .iter()
        .find(|(subject, detail, _)| {
            *subject == status.subject && detail.is_none_or(|d| d == status.detail)
        })
        .map(|(_, _, reason)| *reason)
}

/// The reason keywords in `lower` (lower-cased diagnostic text) point to, if any.
pub(crate) fn reason_from_text(lower: &str) -> Option<Reason> {
    KEYWORD_REASONS
        .iter()
        .find(|(keyword, _)| lower.contains(keyword))
        .map(|(_, reason)| *reason)
}

/// The reason a status code's subject implies when neither the exact code nor the keywords said
/// more: addressing problems are about the recipient, the rest are unspecific.
fn reason_from_subject(status: Status) -> Reason {
    match status.subject {
        1 => Reason::UserUnknown,
        7 => Reason::PolicyViolation,
        _ => Reason::Undefined,
    }
}

/// Kind and reason for one recipient.
///
/// `status` is the enhanced status code, `reply` the SMTP reply code found in the diagnostic,
/// `lower` the lower-cased diagnostic (and, for prose bounces, the text around the address).
pub(crate) fn classify(
    outcome: Outcome,
    status: Option<Status>,
    reply: Option<u16>,
    lower: &str,
) -> (BounceKind, Reason, bool) {
    if outcome == Outcome::Delayed {
        return (BounceKind::Soft, Reason::Delayed, false);
    }
    let class = status.map(|s| s.class).or(reply.map(|r| (r / 100) as u8));
    let reason = status
        .and_then(reason_from_status)
        .or_else(|| reason_from_text(lower))
        .or_else(|| status.map(reason_from_subject))
        .unwrap_or(Reason::Undefined);
    // A report that the MTA gave up on a temporary failure means the retry period ran out.
    let gave_up = outcome == Outcome::Expired || class == Some(4);
    let reason = match reason {
        Reason::Undefined | Reason::PolicyViolation | Reason::Delayed if gave_up => Reason::Expired,
        reason => reason,
    };
    let permanent = class == Some(5);
    (BounceKind::of(reason, permanent), reason, permanent)
}

#[cfg(test)]
mod tests {
    use super::super::status::parse_status_field;
    use super::*;
    use BounceKind::{Hard, Soft};

    fn st(code: &str) -> Option<Status> {
        parse_status_field(code)
    }

    #[test]
    fn status_table() {
        let cases = [
            ("5.1.1", Hard, Reason::UserUnknown),
            ("5.1.10", Hard, Reason::UserUnknown),
            ("5.1.2", Hard, Reason::HostUnknown),
            ("5.1.6", Hard, Reason::UserUnknown),
            ("5.2.1", Hard, Reason::UserUnknown),
            ("5.2.2", Soft, Reason::MailboxFull),
            ("4.2.2", Soft, Reason::MailboxFull),
            ("5.2.3", Soft, Reason::MesgTooBig),
            ("5.3.4", Soft, Reason::MesgTooBig),
            ("5.4.4", Hard, Reason::HostUnknown),
            ("4.4.7", Hard, Reason::Expired),
            ("5.7.1", Soft, Reason::PolicyViolation),
            ("5.7.133", Soft, Reason::PolicyViolation),
            ("5.1.0", Hard, Reason::UserUnknown),
            ("5.0.0", Hard, Reason::Undefined),
            ("4.4.1", Hard, Reason::Expired),
        ];
        for (code, kind, reason) in cases {
            assert_eq!(
                classify(Outcome::Failed, st(code), None, ""),
                (kind, reason),
                "{code}"
            );
        }
    }

    #[test]
    fn delayed_is_soft_whatever_the_code() {
        for code in ["4.4.1", "4.2.2", "4.7.1", "5.1.1"] {
            assert_eq!(
                classify(Outcome::Delayed, st(code), Some(450), "greylisted"),
                (Soft, Reason::Delayed)
            );
        }
    }

    #[test]
    fn keywords_when_the_code_is_generic() {
        let cases = [
            (
                "550 requested action not taken: mailbox unavailable",
                Hard,
                Reason::UserUnknown,
            ),
            (
                "554 delivery error: dd this user doesn't have a yahoo.com account",
                Hard,
                Reason::UserUnknown,
            ),
            ("552 mailbox size limit exceeded", Soft, Reason::MailboxFull),
            (
                "552 message size exceeds fixed limit",
                Soft,
                Reason::MesgTooBig,
            ),
            ("user is over quota", Soft, Reason::MailboxFull),
            (
                "host or domain name not found. name service error",
                Hard,
                Reason::HostUnknown,
            ),
            ("domain does not exist", Hard, Reason::HostUnknown),
            (
                "the email account that you tried to reach does not exist",
                Hard,
                Reason::UserUnknown,
            ),
            (
                "user bob@x.org not listed in domino directory",
                Hard,
                Reason::UserUnknown,
            ),
            (
                "554 rejected: client host blocked using zen.spamhaus.org",
                Soft,
                Reason::PolicyViolation,
            ),
            ("retry timeout exceeded", Hard, Reason::Expired),
            (
                "sorry, no mailbox here by that name",
                Hard,
                Reason::UserUnknown,
            ),
            ("something odd happened", Hard, Reason::Undefined),
        ];
        for (text, kind, reason) in cases {
            assert_eq!(
                classify(Outcome::Failed, st("5.0.0"), Some(550), text),
                (kind, reason),
                "{text}"
            );
        }
    }

    #[test]
    fn giving_up_on_a_transient_failure_is_expired() {
        assert_eq!(
            classify(Outcome::Failed, st("4.4.1"), None, "connection timed out"),
            (Hard, Reason::Expired)
        );
        assert_eq!(
            classify(
                Outcome::Failed,
                None,
                Some(451),
                "greylisted, try again later"
            ),
            (Hard, Reason::Expired)
        );
        assert_eq!(
            classify(Outcome::Expired, None, None, "unknown reason"),
            (Hard, Reason::Expired)
        );
        // ...unless the code says what the transient problem was.
        assert_eq!(
            classify(Outcome::Failed, st("4.2.2"), None, ""),
            (Soft, Reason::MailboxFull)
        );
    }

    #[test]
    fn without_any_code_keywords_decide() {
        assert_eq!(
            classify(Outcome::Failed, None, None, "(user not found)"),
            (Hard, Reason::UserUnknown)
        );
        assert_eq!(
            classify(Outcome::Failed, None, None, ""),
            (Hard, Reason::Undefined)
        );
    }
}
