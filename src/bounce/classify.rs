//! Classification of one failed recipient into a [`Reason`] (sisimai's vocabulary), whether the
//! failure is permanent, and so its [`BounceKind`]; plus the status code reported for it.
//!
//! Evidence is weighed in this order:
//! 1. The words of the remote's answer (the diagnostic), matched against phrase lists per reason
//!    in one pass (Aho-Corasick). When several reasons' phrases occur, the one earlier in
//!    [`PRIORITY`] wins: specific verdicts about the sender's side (its IP, its domain's
//!    authentication, its envelope sender) come before verdicts about the recipient, which come
//!    before the general ones ("policy", "system error").
//! 2. The enhanced status code ([`reason_from_status`]), when the words say nothing.
//! 3. The words of the notice around the recipient (`context`), when neither says anything.
//! 4. What happened: a temporary failure given up on, or a delay warning that says no more, is
//!    `expired`. A delay warning is marked [`Verdict::delayed`] and is always soft: it is not a
//!    failure yet, whatever its reason.
//!
//! Rules then refine: "user unknown" is a missing mailbox only where the notice places it at
//! RCPT TO ([`command_in`] reads the step from each agent's wording) or says X.1.x; answered at
//! DATA, with X.2.1, bare, or by a filtering gateway it is the recipient's filter (`filtered`).
//! A refusal at the greeting is `blocked`; a local delivery program's failure (`X-Unix`) is
//! `mailererror`; a host that could not be found only temporarily is a network error. When the bounce carries no enhanced status code,
//! the reported status is the sisimai convention `C.0.9NN` ([`internal_status`]): class 4 or 5
//! and a number per reason, so every bounce has a code to sort and count by.
//!
//! Hard means the address itself is gone or wrong ([`BounceKind::of`]); everything else is soft.
//! Pure: no I/O.

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;

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

/// The SMTP command the remote answered, when the notice says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// Before or at the greeting, HELO/EHLO, or STARTTLS.
    Connect,
    /// `MAIL FROM`.
    MailFrom,
    /// `RCPT TO`.
    RcptTo,
    /// `DATA` or the end of the message data.
    Data,
}

/// Everything known about one failed recipient.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Evidence<'a> {
    pub outcome: Outcome,
    pub status: Option<Status>,
    pub reply: Option<u16>,
    /// The remote's answer, lower case.
    pub diagnostic: &'a str,
    /// The notice's words about this recipient (or the whole notice), lower case; may be empty.
    pub context: &'a str,
    pub command: Option<Command>,
    /// The failed recipient's address (lower case), or empty when unknown.
    pub recipient: &'a str,
}

/// The verdict on one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub kind: BounceKind,
    pub reason: Reason,
    pub permanent: bool,
    /// A delay warning: not a failure yet, so always soft.
    pub delayed: bool,
    /// The enhanced status code, or the `C.0.9NN` code of the reason when the bounce has none.
    pub status: String,
}

/// Reasons in the order they win when phrases of several occur in one text.
const PRIORITY: &[Reason] = &[
    Reason::FailedStartTls,
    Reason::NoRelaying,
    Reason::RequirePtr,
    Reason::AuthFailure,
    Reason::MailboxFull,
    Reason::ExceedLimit,
    Reason::MesgTooBig,
    Reason::Suspend,
    Reason::HasMoved,
    Reason::NotAccept,
    Reason::Expired,
    Reason::NotCompliantRfc,
    Reason::TooManyConn,
    Reason::BadReputation,
    Reason::Blocked,
    Reason::VirusDetected,
    Reason::SpamDetected,
    Reason::ContentError,
    Reason::HostUnknown,
    Reason::UserUnknown,
    Reason::Rejected,
    Reason::Filtered,
    Reason::RateLimited,
    Reason::Speeding,
    Reason::SecurityError,
    Reason::NetworkError,
    Reason::MailerError,
    Reason::SystemFull,
    Reason::SystemError,
    Reason::SyntaxError,
    Reason::OnHold,
    Reason::PolicyViolation,
];

fn rank(reason: Reason) -> usize {
    PRIORITY
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(PRIORITY.len())
}

/// Phrases of each reason, lower case, whitespace single spaces. A phrase names its reason
/// wherever it occurs in the answer, so each must be specific enough to do so on its own.
const PHRASES: &[(Reason, &[&str])] = &[
    (
        Reason::Expired,
        &[
            "retry timeout exceeded",
            "retry time not reached for any host after a long failure period",
            "message expired",
            "delivery time expired",
            "too long in the queue",
            "in the queue too long",
            "in queue too long",
            "too long in queue",
            "message timed out",
            "could not be delivered within",
            "was not delivered within",
            "delivery expired",
            "has been delayed for",
            "queue lifetime",
            "unable to deliver in",
            "delivery attempts have failed",
            "all hosts have been failing for a long time",
            "after multiple retries",
            "giving up",
            "envelope expired",
            "connection timed out",
            "timed out",
            "did not accept our requests to connect",
        ],
    ),
    (
        Reason::NoRelaying,
        &[
            "relay access denied",
            "relaying denied",
            "relay denied",
            "relay not permitted",
            "relaying not permitted",
            "relaying not allowed",
            "relay not allowed",
            "not allowed to relay",
            "not permitted to relay",
            "unable to relay",
            "we do not relay",
            "insecure mail relay",
            "no relaying",
            "relaying mail to",
            "not a gateway",
            "relay prohibited",
            "address is not verified",
        ],
    ),
    (
        Reason::Rejected,
        &[
            "sender address rejected",
            "domain of sender address",
            "sender rejected",
            "sender verify failed",
            "sender verification failed",
            "unroutable sender",
            "sender domain",
            "invalid sender",
            "bad sender",
            "sender is not allowed",
            "sender not allowed",
            "sender denied",
            "sender blocked",
            "sender address is blocked",
            "from address rejected",
            "mail from rejected",
            "address that has been blacklisted",
            "your envelope sender",
            "envelope sender",
            "return path",
            "returnpath",
            "is not a registered gateway user",
            "has been rejected by the recipient",
            "rejected by the recipient",
            "access denied",
            "customfromdenied",
            "permission to post",
            "groups.google.com/support",
            "投稿する権限がない",
            "not accepting messages from",
            "does not accept messages from",
            "doesn't accept messages from",
            "blocked by the recipient",
        ],
    ),
    (
        Reason::AuthFailure,
        &[
            "dmarc",
            "authentication checks failed",
            "spf record",
            "spf check",
            "spf fail",
            "spf: ",
            "bad spf",
            "sender policy framework",
            "dkim",
            "authentication information",
            "unauthenticated email",
            "unauthenticated mail",
            "does not pass",
            "fails to pass",
        ],
    ),
    (
        Reason::RequirePtr,
        &[
            "reverse dns",
            "reverse-dns",
            "reverse lookup",
            "reverse hostname",
            "ptr record",
            "no ptr",
            "rdns",
            "ip name lookup failed",
            "cannot find your hostname",
            "cannot find your reverse",
            "mismatches client ip",
            "unverifyable sending ip",
            "unverifiable sending ip",
            "no reverse",
            "hostname does not match",
            "not have a ptr",
            "without a valid sender domain",
        ],
    ),
    (
        Reason::MailboxFull,
        &[
            "mailbox full",
            "mailbox is full",
            "mailbox size limit",
            "mailbox has exceeded",
            "mailbox exceeded",
            "mailbox quota",
            "inbox is full",
            "full mailbox",
            "over quota",
            "overquota",
            "over the quota",
            "quota exceeded",
            "exceeded storage",
            "exceeded its storage",
            "out of storage",
            "storage quota",
            "exceeds quota",
            "disk quota",
            "user's disk quota",
            "insufficient storage",
            "not enough storage",
            "mailbox would exceed",
            "exceeds allowed size",
            "has exceeded the maximum",
            "is over its quota",
            "quota",
        ],
    ),
    (
        Reason::ExceedLimit,
        &[
            "message length exceeds administrative limit",
            "message size exceeds the limit for this recipient",
            "exceeds the size limit of the recipient",
        ],
    ),
    (
        Reason::MesgTooBig,
        &[
            "message too large",
            "message too big",
            "message is too large",
            "message is too big",
            "message size exceeds",
            "message length exceeds",
            "maximum message size",
            "exceeds size limit",
            "exceeds the maximum size",
            "exceeded the maximum size",
            "size limit",
            "too large",
            "mail is too big",
            "line limit exceeded",
            "email is too big",
        ],
    ),
    (
        Reason::Suspend,
        &[
            "account disabled",
            "is disabled",
            "has been disabled",
            "mailbox disabled",
            "disabled recipient",
            "disabled or discontinued",
            "discontinued",
            "account suspended",
            "mailbox suspended",
            "user suspended",
            "is suspended",
            "has been suspended",
            "account suspension",
            "temporarily locked",
            "temporary locked",
            "account is locked",
            "account is blocked",
            "account has been blocked",
            "recipient account is blocked",
            "mailbox is frozen",
            "is frozen",
            "is inactive",
            "account inactive",
            "not active",
            "has been deactivated",
            "deactivated",
            "account expired",
            "mailbox is inactive",
            "est bloque",
        ],
    ),
    (
        Reason::HasMoved,
        &[
            "has moved",
            "address has changed",
            "no longer at",
            "mailbox moved",
        ],
    ),
    (
        Reason::NotAccept,
        &[
            "does not accept mail",
            "doesn't accept mail",
            "accepts no mail",
            "null mx",
            "not accepting mail",
            "no smtp service",
            "no mx record",
            "no mx found",
            "couldn't find a mail exchanger",
        ],
    ),
    (
        Reason::BadReputation,
        &[
            "reputation",
            "unexpected volume or user complaints",
            "sender score",
        ],
    ),
    (
        Reason::Blocked,
        &[
            "blocked using",
            "blocked by",
            "blacklisted by",
            "blacklisted",
            "blocklisted",
            "blacklist",
            "blocklist",
            "block list",
            "black list",
            " ip=",
            "dnsbl",
            "rbl",
            "spamhaus",
            "spamcop",
            "sorbs",
            "abuseat",
            "banned sending ip",
            "client host rejected",
            "client host blocked",
            "not accepting connections",
            "refused to talk to me",
            "invalid ip for sending",
            "ip address",
            "your ip",
            "messages from",
            "connection refused by",
            "connection rejected",
            "use the smtp server of your isp",
            "your network",
            "service refuse",
            "bloquee",
            "blocked for abuse",
            "open relay",
            "no access from mail server",
            "poor reputation",
            "access denied, banned",
            "dynamic ip",
            "dial-up",
            "dialup",
        ],
    ),
    (
        Reason::VirusDetected,
        &["virus", "malware", "infected", "trojan"],
    ),
    (
        Reason::SpamDetected,
        &[
            "spam",
            "bulk mail",
            "junk mail",
            "message content rejected",
            "content rejected",
            "blacklisted url",
            "suspicious",
            "mail rejete",
            "mail rejected",
            "classified as",
            "scored as",
        ],
    ),
    (
        Reason::NotCompliantRfc,
        &[
            "rfc 5322",
            "rfc5322",
            "rfc 2822",
            "rfc2822",
            "rfc 7103",
            "not rfc compliant",
            "rfc compliant",
            "rfc-compliant",
            "duplicate header",
            "multiple from",
            "multiple addresses in from",
            "missing date",
            "missing message-id",
            "missing from",
            "malformed header",
            "invalid header",
            "header syntax",
        ],
    ),
    (
        Reason::ContentError,
        &[
            "message header rejected",
            "content error",
            "improper use of 8-bit data",
            "8-bit characters",
            "mime type",
            "mime part",
            "invalid mime",
            "attachment",
        ],
    ),
    (
        Reason::UserUnknown,
        &[
            "user unknown",
            "unknown user",
            "no such user",
            "no such recipient",
            "no such mailbox",
            "no such person",
            "no such account",
            "unknown recipient",
            "recipient unknown",
            "recipient not found",
            "recipnotfound",
            "recipientnotfound",
            "user not found",
            "address not found",
            "mailbox not found",
            "mailbox unavailable",
            "mailbox not available",
            "mailbox does not exist",
            "no mailbox here",
            "invalid recipient",
            "invalid mailbox",
            "invalid address",
            "address unknown",
            "unknown address",
            "unknown local part",
            "unknown or illegal alias",
            "not a valid mailbox",
            "not a known user",
            "not listed in",
            "user not exist",
            "user does not exist",
            "user doesn't exist",
            "does not exist",
            "doesn't exist",
            "doesn't have a",
            "does not have an account",
            "couldn't be found",
            "could not be found",
            "wasn't found at",
            "no longer valid",
            "bad destination mailbox",
            "recipient address rejected: access denied",
            "recipient address rejected: undeliverable address",
            "recipient rejected",
            "no valid recipients",
            "not our customer",
            "is not a valid",
            "mailbox unknown",
            "unknown mailbox",
            "not found in",
            "user invalid",
            "invalid final delivery userid",
            "account does not exist",
            "no account by that name",
            "not a recipient",
        ],
    ),
    (
        Reason::HostUnknown,
        &[
            "host or domain name not found",
            "bad destination system address",
            "domain is not reachable",
            "dns lookup failure",
            "unrouteable address",
            "host not found",
            "host unknown",
            "unknown host",
            "domain not found",
            "domain name not found",
            "no such domain",
            "unknown domain",
            "domain does not exist",
            "domain doesn't exist",
            "name or service not known",
            "nxdomain",
            "unrouteable mail domain",
            "unroutable",
            "unable to route",
            "invalid domain",
            "no valid host",
            "domain must exist",
        ],
    ),
    (
        Reason::Filtered,
        &[
            "filtered",
            "filter",
            "rejected by user",
            "rejected by the user",
            "refused by the recipient",
            "because the recipient is only accepting mail from",
            "only accepting mail from specific",
            "recipient preferences",
            "email preferences of the person",
        ],
    ),
    (
        Reason::TooManyConn,
        &[
            "too many connections",
            "too many concurrent",
            "too many simultaneous",
            "too many smtp sessions",
            "too many sessions",
            "connection limit",
            "connections from your host",
            "frequency limited",
            "too many open connections",
            "too many recipients",
            "connection rate limit",
        ],
    ),
    (
        Reason::RateLimited,
        &[
            "rate limit",
            "ratelimit",
            "rate-limit",
            "too many messages",
            "throttl",
            "temporarily deferred",
            "exceeded the rate",
        ],
    ),
    (
        Reason::Speeding,
        &["sending too fast", "too fast", "speeding"],
    ),
    (
        Reason::FailedStartTls,
        &[
            "starttls failed",
            "does not support tls",
            "does not support starttls",
            "tls handshake",
            "could not start tls",
            "tls negotiation",
            "failed to establish tls",
            "ssl handshake",
        ],
    ),
    (
        Reason::SecurityError,
        &[
            "delivery not authorized",
            "authentication required",
            "authentication failed",
            "auth required",
            "must issue a starttls",
            "starttls",
            "tls required",
            "encryption required",
            "secure connection",
            "insecure",
            "not authorized",
            "unauthorized",
            "unauthenticated",
            "authentication",
        ],
    ),
    (
        Reason::NetworkError,
        &[
            "hop count exceeded",
            "too many hops",
            "routing loop",
            "mail loop",
            "loops back to myself",
            "loop detected",
            "no route to host",
            "network is unreachable",
            "connection refused",
            "lost connection",
            "connection reset",
            "connection closed",
            "dns error",
            "name service error",
            "name server",
            "malformed or unexpected",
            "temporary lookup failure",
            "could not connect",
            "unable to connect",
            "connect to",
            "host unreachable",
        ],
    ),
    (
        Reason::MailerError,
        &[
            "command died with status",
            "command output",
            "mail.local",
            "procmail",
            "x-unix",
            "pipe to",
            "exit status",
            "local delivery failed",
            "mailer error",
            "unknown mailer error",
        ],
    ),
    (
        Reason::SystemFull,
        &[
            "insufficient system storage",
            "insufficient disk space",
            "system storage",
            "disk full",
            "file system full",
            "out of disk",
        ],
    ),
    (
        Reason::SystemError,
        &[
            "internal system error",
            "system error",
            "internal error",
            "server error",
            "local error",
            "transaction failed",
            "service currently unavailable",
            "service unavailable",
            "service not available",
            "temporarily unavailable",
            "resources temporarily",
            "configuration error",
            "could not load",
            "try again later",
            "please try later",
            "system problem",
            "mail system problem",
            "server busy",
        ],
    ),
    (
        Reason::SyntaxError,
        &[
            "syntax error",
            "command unrecognized",
            "unrecognized command",
            "bad sequence of commands",
            "improper sequence of commands",
            "not implemented",
            "command not recognized",
            "invalid command",
            "line too long",
            "malformed address",
        ],
    ),
    (Reason::OnHold, &["on hold"]),
    (
        Reason::PolicyViolation,
        &[
            "policy",
            "prohibited",
            "not permitted",
            "violat",
            "refused",
            "denied",
            "not allowed",
            "banned",
            "forbidden",
        ],
    ),
];

/// Every phrase of [`PHRASES`], searched at once; pattern `i` belongs to `PHRASE_REASON[i]`.
/// Phrases that name their reason outright, whatever other phrases the text holds: a notice
/// that says why in so many words ("rejected due to spam classification") often goes on to give
/// advice that names other reasons' words (SPF, DKIM, blocklists).
const DECISIVE: &[(&str, Reason)] = &[
    ("rejected due to spam classification", Reason::SpamDetected),
    ("blacklisted url", Reason::SpamDetected),
    ("uribl", Reason::SpamDetected),
    (
        "sending to/from an address that has been blacklisted",
        Reason::Rejected,
    ),
    ("receiving mail at a rate", Reason::Speeding),
    ("sender address rejected", Reason::Rejected),
    ("domain of sender address", Reason::Rejected),
    ("unroutable sender", Reason::Rejected),
    // cPanel's Exim: "The account or domain may not exist, they may be blacklisted, or missing
    // the proper dns entries."
    ("account or domain may not exist", Reason::HostUnknown),
    ("sender verify failed", Reason::Rejected),
];

/// Every phrase of [`DECISIVE`] and [`PHRASES`], searched at once; pattern `i` belongs to
/// reason `.1[i]` with rank `.2[i]` (decisive phrases rank before all others).
#[allow(clippy::type_complexity)]
static MATCHER: LazyLock<(AhoCorasick, Vec<Reason>, Vec<usize>)> = LazyLock::new(|| {
    let mut patterns = Vec::new();
    let mut reasons = Vec::new();
    let mut ranks = Vec::new();
    for (p, reason) in DECISIVE {
        patterns.push(*p);
        reasons.push(*reason);
        ranks.push(0);
    }
    for (reason, phrases) in PHRASES {
        for p in *phrases {
            patterns.push(*p);
            reasons.push(*reason);
            ranks.push(1 + rank(*reason));
        }
    }
    // A DFA: built once, the fastest to search (the texts are searched for every bounce).
    let ac = aho_corasick::AhoCorasickBuilder::new()
        .kind(Some(aho_corasick::AhoCorasickKind::DFA))
        .build(&patterns)
        .expect("the phrase table builds");
    (ac, reasons, ranks)
});

/// The reason the words of `lower` (lower case) point to: a [`DECISIVE`] phrase's, else of all
/// the phrases found, the one whose reason comes first in [`PRIORITY`].
pub(crate) fn reason_from_text(lower: &str) -> Option<Reason> {
    let (ac, reasons, ranks) = &*MATCHER;
    // The first phrase found of the lowest rank; a decisive one (rank 0) cannot be outranked,
    // so the search stops at the first.
    let mut best: Option<(usize, usize)> = None;
    for m in ac.find_overlapping_iter(lower) {
        let i = m.pattern().as_usize();
        let rank = ranks.get(i).copied().unwrap_or(usize::MAX);
        if best.is_none_or(|(r, _)| rank < r) {
            best = Some((rank, i));
            if rank == 0 {
                break;
            }
        }
    }
    best.and_then(|(_, i)| reasons.get(i).copied())
}

/// Whether `lower` (lower case) words any reason at all: [`reason_from_text`] is `Some`
/// exactly when this is true, but this stops at the first phrase found.
pub(crate) fn names_a_reason(lower: &str) -> bool {
    MATCHER.0.is_match(lower)
}

/// The reason an enhanced status code states by itself, if it states one.
pub(crate) fn reason_from_status(status: Status) -> Option<Reason> {
    let r = match (status.subject, status.detail) {
        (1, 1 | 3 | 10) => Reason::UserUnknown,
        (1, 2) => Reason::HostUnknown,
        (1, 6) => Reason::HasMoved,
        (1, 7 | 8) => Reason::Rejected,
        (2, 0) => Reason::Filtered,
        (2, 1) => Reason::Suspend,
        (2, 2) => Reason::MailboxFull,
        (2, 3) => Reason::ExceedLimit,
        (3, 1) => Reason::SystemFull,
        (3, 2) => Reason::NotAccept,
        (3, 4) => Reason::MesgTooBig,
        (3, 0 | 3 | 5) => Reason::SystemError,
        (4, 4) => Reason::HostUnknown,
        (4, 1..=3 | 6) => Reason::NetworkError,
        (4, 5) => Reason::SystemFull,
        (4, 7) => Reason::Expired,
        (5, 1..) => Reason::SyntaxError,
        (6, _) => Reason::ContentError,
        (7, 1) => Reason::Blocked,
        (7, 13) => Reason::Suspend,
        (7, 25) => Reason::RequirePtr,
        (7, 23 | 26 | 27 | 509) => Reason::AuthFailure,
        (7, 606..=649) => Reason::Blocked,
        (7, 6..=8 | 10 | 11) => Reason::SecurityError,
        (7, _) => Reason::PolicyViolation,
        _ => return None,
    };
    Some(r)
}

/// The sisimai-style code of a reason for a bounce that carries no enhanced status code:
/// `C.0.9NN`, class 4 for a temporary failure and 5 for a permanent one.
pub(crate) fn internal_status(reason: Reason, permanent: bool) -> String {
    let n = match reason {
        Reason::Undefined => 900,
        Reason::OnHold => 901,
        Reason::SyntaxError => 902,
        Reason::NoRelaying => 909,
        Reason::Filtered => 910,
        Reason::UserUnknown => 911,
        Reason::HostUnknown => 912,
        Reason::HasMoved => 916,
        Reason::Rejected => 918,
        Reason::Suspend => 921,
        Reason::MailboxFull => 922,
        Reason::ExceedLimit => 923,
        Reason::SystemError => 930,
        Reason::SystemFull => 931,
        Reason::NotAccept => 932,
        Reason::MesgTooBig => 934,
        Reason::MailerError => 939,
        Reason::NetworkError => 944,
        Reason::TooManyConn => 945,
        Reason::Expired => 947,
        Reason::ContentError => 960,
        Reason::SecurityError => 970,
        Reason::Blocked => 971,
        Reason::PolicyViolation => 972,
        Reason::RequirePtr => 973,
        Reason::BadReputation => 974,
        Reason::AuthFailure => 975,
        Reason::FailedStartTls => 976,
        Reason::NotCompliantRfc => 977,
        Reason::RateLimited | Reason::Speeding => 978,
        Reason::SpamDetected => 980,
        Reason::VirusDetected => 981,
    };
    format!("{}.0.{n}", if permanent { 5 } else { 4 })
}

/// The SMTP command a notice says the remote refused. In a Sendmail-style transcript
/// (`>>> RCPT To:<x>` then `<<< 550 ...`) it is the last command sent before the first refusal;
/// otherwise the first of the phrases MTAs write: Postfix's "(in reply to end of DATA
/// command)", Exim's "after end of data", DragonFly's "did not like our final DATA". `None`
/// when the notice does not say.
pub(crate) fn command_in(lower: &str) -> Option<Command> {
    const PHRASES: &[(&str, Command)] = &[
        ("in reply to end of data command", Command::Data),
        ("in reply to data command", Command::Data),
        ("after end of data", Command::Data),
        ("final data", Command::Data),
        ("after data", Command::Data),
        ("in reply to rcpt to command", Command::RcptTo),
        ("after rcpt to", Command::RcptTo),
        ("after rcpt command", Command::RcptTo),
        // qmail-remote and Yahoo's qmail.
        ("does not like recipient", Command::RcptTo),
        ("[rcpt_to]", Command::RcptTo),
        // Postfix's smtpd says this only at RCPT TO.
        ("recipient address rejected", Command::RcptTo),
        ("in reply to mail from command", Command::MailFrom),
        ("after mail from", Command::MailFrom),
        ("in reply to ehlo command", Command::Connect),
        ("in reply to helo command", Command::Connect),
        ("after initial connection", Command::Connect),
        (">>> ", Command::Connect),
    ];
    static FIND: LazyLock<AhoCorasick> = LazyLock::new(|| {
        AhoCorasick::new(PHRASES.iter().map(|(p, _)| *p)).expect("command phrases build")
    });
    let Some(first) = FIND.find_iter(lower).next() else {
        // Postfix wraps its words anywhere ("(in reply to end of DATA\n    command)"): look
        // again after each "in reply to" (itself wrapped too: "in reply\n to"), with the
        // whitespace of the next few words made single spaces.
        return memchr::memmem::find_iter(lower.as_bytes(), b"in reply")
            .find_map(|at| {
                let mut end = (at + 64).min(lower.len());
                while !lower.is_char_boundary(end) {
                    end -= 1;
                }
                let window = super::text::collapse_whitespace(&lower[at..end]);
                FIND.find_iter(&window)
                    .map(|m| PHRASES[m.pattern().as_usize()])
                    .find(|(p, _)| *p != ">>> ")
            })
            .map(|(_, c)| c);
    };
    if PHRASES[first.pattern().as_usize()].0 != ">>> " {
        return Some(PHRASES[first.pattern().as_usize()].1);
    }
    // A transcript: follow it line by line from its first command.
    let mut sent = None;
    let mut lines = lower[first.start()..].lines();
    while let Some(line) = lines.next() {
        let line = line.trim_start();
        if let Some(cmd) = line.strip_prefix(">>> ") {
            sent = Some(if cmd.starts_with("data") || cmd.starts_with('.') {
                Command::Data
            } else if cmd.starts_with("rcpt") {
                Command::RcptTo
            } else if cmd.starts_with("mail") {
                Command::MailFrom
            } else {
                Command::Connect
            });
        } else if let Some(reply) = line.strip_prefix("<<< ") {
            if reply.starts_with('4') || reply.starts_with('5') {
                // Pipelined: the refusal that arrives after DATA was sent answered a RCPT TO when
                // the DATA itself is then answered "no valid recipients".
                if sent == Some(Command::Data)
                    && lines.any(|l| {
                        l.trim_start().starts_with("<<< ") && l.contains("no valid recipients")
                    })
                {
                    return Some(Command::RcptTo);
                }
                return sent;
            }
        }
    }
    None
}

/// The remote's own words within a diagnostic (lower case) that wraps them in the reporting
/// MTA's summary. Amazon SES writes `5.1.0 - Unknown address error 550-'5.7.1 <...>... Access
/// denied' (delivery attempts: 0)`: its summary is its guess from the reply code, the quoted
/// reply is what the remote said. Other diagnostics are returned whole.
pub(crate) fn remote_words(diagnostic: &str) -> &str {
    // The summary's status code comes first: most diagnostics are ruled out by their first byte.
    if !diagnostic
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_digit)
    {
        return diagnostic;
    }
    let Some((summary, rest)) = diagnostic.split_once(' ') else {
        return diagnostic;
    };
    let Some(rest) = rest.strip_prefix("- ") else {
        return diagnostic;
    };
    let summary_is_a_status = summary.len() <= 9
        && summary.split('.').count() == 3
        && summary
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !summary_is_a_status {
        return diagnostic;
    }
    // `550-'` or `550 '`: a reply code opening the quoted reply.
    let Some(open) = rest.find("-'").or_else(|| rest.find(" '")) else {
        return diagnostic;
    };
    let code = rest.get(open.saturating_sub(3)..open).unwrap_or_default();
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return diagnostic;
    }
    let quoted = &rest[open + 2..];
    match quoted.rfind('\'') {
        Some(close) if close > 0 => &quoted[..close],
        _ => quoted,
    }
}

/// The verdict on a failure reported by a local delivery program (a DSN `Diagnostic-Code` of
/// type `X-Unix`: procmail, a pipe, `mail.local`) whose words (`diagnostic`, lower case) say
/// something: the program failed (`mailererror`), whatever it says about the user, unless it
/// names a full mailbox, a size or content it refused. A bare exit code says too little and
/// is left to the status code.
pub(crate) fn from_local_mailer(verdict: &mut Verdict, diagnostic: &str) {
    let says_something = diagnostic.chars().any(|c| c.is_alphabetic());
    let kept = matches!(
        verdict.reason,
        Reason::MailboxFull
            | Reason::ExceedLimit
            | Reason::MesgTooBig
            | Reason::SystemFull
            | Reason::VirusDetected
            | Reason::SpamDetected
    );
    if !says_something || kept || verdict.delayed {
        return;
    }
    if verdict.status.get(1..) == Some(&internal_status(verdict.reason, verdict.permanent)[1..]) {
        verdict.status = internal_status(Reason::MailerError, verdict.permanent);
    }
    verdict.reason = Reason::MailerError;
    verdict.kind = BounceKind::of(Reason::MailerError, verdict.permanent);
}

/// Top-level header fields (name, and a lower-case part of the value; empty for any value) that
/// mark a bounce written by a filtering gateway (McAfee, m-FILTER, SurfControl, ActiveHunter):
/// such a gateway answers "user unknown" for mail its rules refuse, so from it that is `filtered`.
pub(crate) const FILTERING_GATEWAY_HEADERS: &[(&str, &str)] = &[
    ("x-nai-header", ""),
    ("x-mailer", "m-filter"),
    ("x-mailer", "e-mail filter"),
    ("x-sef-processed", ""),
    ("x-ahmailid", ""),
];

/// Words of a notice's own text (lower case) that mark it as written by a mail agent whose
/// "user unknown" is its filter's verdict rather than a missing mailbox, as sisimai reads them:
/// the MailFoundry appliance, and the agents sisimai calls X1 and X2, none of which says at
/// which step the address was refused.
const FILTERING_GATEWAY_TEXT: &[&str] = &[
    // MailFoundry.
    "delivery failed for the following reason:",
    // X2.
    "unable to deliver message to the following address(es).",
];

/// How much of the start of a notice's text is searched for [`FILTERING_GATEWAY_TEXT`].
const GATEWAY_TEXT_HEAD: usize = 2048;

/// Whether the top-level `from` header (raw) or the notice's `text` mark a filtering gateway
/// (see [`FILTERING_GATEWAY_HEADERS`] for the header fields).
pub(crate) fn written_by_filtering_gateway(from: &str, text: &str) -> bool {
    // X1 signs its notices "Mail Deliver System".
    if from.trim_start().starts_with("\"Mail Deliver System\"") {
        return true;
    }
    static FIND: LazyLock<AhoCorasick> = LazyLock::new(|| {
        aho_corasick::AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            // Without the prefilter: its start bytes (`d`, `u` in either case) are on every
            // line of prose, and stopping at each costs more than the DFA's plain scan.
            .prefilter(false)
            .build(FILTERING_GATEWAY_TEXT)
            .expect("gateway phrases build")
    });
    // Their words open the notice: the first few lines are enough.
    FIND.is_match(super::text::capped(text, GATEWAY_TEXT_HEAD))
}

/// The verdict of `bounce` when it came through a filtering gateway
/// ([`FILTERING_GATEWAY_HEADERS`]): "user unknown" becomes `filtered`, with its kind and, when
/// the bounce had no code of its own, its code.
pub(crate) fn through_filtering_gateway(bounce: &mut super::Bounce) {
    // A status code that itself says "no such mailbox" (X.1.x) is taken at its word.
    let addressing = bounce
        .status
        .as_deref()
        .is_some_and(|s| s.get(1..4) == Some(".1."));
    if bounce.reason != Reason::UserUnknown || addressing {
        return;
    }
    bounce.reason = Reason::Filtered;
    bounce.kind = BounceKind::of(Reason::Filtered, bounce.permanent);
    if bounce
        .status
        .as_deref()
        .is_some_and(|s| s.ends_with(".0.911"))
    {
        bounce.status = Some(internal_status(Reason::Filtered, bounce.permanent));
    }
}

/// Whether the notice's wider text could change the verdict on `ev`: the answer's words and
/// code say nothing specific, or they say "user unknown" and the notice may say it came after
/// DATA. Callers build the (costly) context only then.
pub(crate) fn needs_context(ev: &Evidence<'_>) -> bool {
    match reason_from_text(ev.diagnostic) {
        Some(Reason::UserUnknown) => ev.command.is_none(),
        Some(_) => false,
        None => match ev
            .status
            .filter(|s| !s.is_generic())
            .and_then(reason_from_status)
        {
            Some(Reason::UserUnknown) => ev.command.is_none(),
            Some(_) => false,
            None => true,
        },
    }
}

/// Whether `lower` says that a host (a dotted name with no `@`) does not exist.
fn names_a_missing_host(lower: &str) -> bool {
    lower.match_indices(" does not exist").any(|(at, _)| {
        lower[..at]
            .rsplit(|c: char| c.is_whitespace() || c == '<' || c == '(')
            .next()
            .is_some_and(|word| {
                let word = word.trim_end_matches(['>', ':', '.']);
                word.contains('.')
                    && !word.contains('@')
                    && word.split('.').all(|label| {
                        !label.is_empty()
                            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    })
                    && word
                        .rsplit('.')
                        .next()
                        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_alphabetic()))
            })
    })
}

/// Kind, reason, permanence and status for one recipient (see the module comment).
pub(crate) fn classify(ev: &Evidence<'_>) -> Verdict {
    let class = ev
        .status
        .map(|s| s.class)
        .or(ev.reply.map(|r| (r / 100) as u8));
    let specific_status = ev.status.filter(|s| !s.is_generic());
    let from_words = reason_from_text(ev.diagnostic);
    let sender_status =
        specific_status.is_some_and(|s| s.subject == 1 && matches!(s.detail, 7 | 8));
    let mut reason = (if sender_status {
        Some(Reason::Rejected)
    } else {
        from_words
    })
    .or_else(|| specific_status.and_then(reason_from_status))
    .or_else(|| reason_from_text(ev.context));
    if ev.outcome == Outcome::Expired && reason.is_none_or(|r| rank(r) > rank(Reason::Blocked)) {
        reason = Some(Reason::Expired);
    }
    let temporary = class == Some(4) || ev.outcome != Outcome::Failed;
    let mut reason = match reason {
        Some(r) => r,
        None if temporary => Reason::Expired,
        None => Reason::Undefined,
    };
    // "neko.example.com does not exist": a host name, not a mailbox, is what is missing.
    if reason == Reason::UserUnknown && names_a_missing_host(ev.diagnostic) {
        reason = Reason::HostUnknown;
    }
    // A size refused by the mailbox's limit (X.2.3) rather than the system's.
    if reason == Reason::MesgTooBig
        && specific_status.is_some_and(|s| (s.subject, s.detail) == (2, 3))
    {
        reason = Reason::ExceedLimit;
    }
    // "User unknown" after the message was sent is the recipient's filter speaking, unless
    // the status code itself says the mailbox does not exist, or the remote is one known to
    // refuse unknown users only at DATA (Yahoo's "delivery error: dd This user doesn't have a
    // yahoo.com account").
    let unknown_at_data =
        reason == Reason::UserUnknown && ev.diagnostic.contains("delivery error: dd ");
    if reason == Reason::UserUnknown
        && ev.command == Some(Command::Data)
        && specific_status.is_none_or(|s| s.subject != 1)
        && !unknown_at_data
    {
        reason = Reason::Filtered;
    }
    // "User unknown" with X.2.1 (mailbox disabled) that the notice does not place at RCPT TO.
    if reason == Reason::UserUnknown
        && specific_status.is_some_and(|s| (s.subject, s.detail) == (2, 1))
        && ev.command != Some(Command::RcptTo)
    {
        reason = Reason::Filtered;
    }
    // A bare "550 user unknown" that neither names the recipient nor carries an addressing
    // code is how filters answer after the message was sent; a refusal of the recipient
    // itself at RCPT echoes the address, says X.1.x or speaks of the recipient.
    if reason == Reason::UserUnknown
        && ev.reply.is_some()
        && specific_status.is_none_or(|s| s.subject != 1)
        && !ev.recipient.is_empty()
        && !ev.diagnostic.contains(ev.recipient)
        && !ev.diagnostic.contains("recipient")
        && ev.command != Some(Command::RcptTo)
        && !unknown_at_data
    {
        reason = Reason::Filtered;
    }
    // Refused before any recipient was named (at the greeting or EHLO): whatever the words,
    // it is our server that is refused, not a mailbox.
    if ev.command == Some(Command::Connect)
        && matches!(
            reason,
            Reason::UserUnknown
                | Reason::Filtered
                | Reason::Rejected
                | Reason::MailboxFull
                | Reason::ExceedLimit
                | Reason::Suspend
                | Reason::HasMoved
                | Reason::Undefined
        )
    {
        reason = Reason::Blocked;
    }
    // A host that could not be found for now is trouble on the way, not a wrong address.
    if reason == Reason::HostUnknown && temporary {
        reason = Reason::NetworkError;
    }
    // A final failure on a temporary error with no more telling cause: the sender gave up.
    if ev.outcome != Outcome::Delayed
        && temporary
        && matches!(
            reason,
            Reason::SystemError | Reason::SyntaxError | Reason::Undefined
        )
    {
        reason = Reason::Expired;
    }
    let permanent = !temporary && class != Some(2);
    // Without a code of its own, a final failure reads as class 5 even when the sender gave up
    // on temporary trouble: only a 4xx answer or a delay warning is class 4.
    // A refusal of the envelope sender with no code: sisimai's "on hold" code (X.0.901), as the
    // refusal was not about any recipient.
    let status = match ev.status {
        Some(s) => s.to_string(),
        None if ev.command == Some(Command::MailFrom) => internal_status(
            Reason::OnHold,
            class != Some(4) && ev.outcome != Outcome::Delayed,
        ),
        None => internal_status(reason, class != Some(4) && ev.outcome != Outcome::Delayed),
    };
    let delayed = ev.outcome == Outcome::Delayed;
    Verdict {
        kind: if delayed {
            BounceKind::Soft
        } else {
            BounceKind::of(reason, permanent)
        },
        delayed,
        reason,
        permanent,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::super::status::parse_status_field;
    use super::*;
    use BounceKind::{Hard, Soft};

    fn failed<'a>(status: &str, reply: Option<u16>, diagnostic: &'a str) -> Evidence<'a> {
        Evidence {
            outcome: Outcome::Failed,
            status: parse_status_field(status),
            reply,
            diagnostic,
            context: "",
            command: None,
            recipient: "",
        }
    }

    fn verdict(ev: Evidence<'_>) -> (BounceKind, Reason, bool, String) {
        let v = classify(&ev);
        (v.kind, v.reason, v.permanent, v.status)
    }

    #[test]
    fn every_phrase_names_its_own_reason_unless_a_higher_one_contains_it() {
        for (reason, phrases) in PHRASES {
            for p in *phrases {
                assert_eq!(p.to_lowercase(), *p, "{p} is not lower case");
                let found = reason_from_text(p).unwrap();
                assert!(
                    rank(found) <= rank(*reason),
                    "{p}: {found:?} ranks below {reason:?}"
                );
            }
        }
        assert_eq!(
            PRIORITY.len(),
            PHRASES.len(),
            "every reason with phrases has a rank"
        );
    }

    #[test]
    fn a_missing_host_is_not_a_missing_mailbox() {
        assert!(names_a_missing_host("553 neko.example.com does not exist"));
        assert!(!names_a_missing_host("550 bob@example.com does not exist"));
        assert!(!names_a_missing_host("550 the mailbox does not exist"));
        assert!(!names_a_missing_host("550 5.1.1 does not exist"));
        assert_eq!(
            verdict(failed(
                "5.0.0",
                Some(553),
                "553 neko.example.com does not exist"
            ))
            .1,
            Reason::HostUnknown
        );
    }

    #[test]
    fn a_decisive_phrase_beats_the_advice_around_it() {
        assert_eq!(
            reason_from_text(
                "your email to group x was rejected due to spam classification. \
                 make sure your domain passes dmarc, spf and dkim"
            ),
            Some(Reason::SpamDetected)
        );
        assert_eq!(
            reason_from_text("550 rejected - blacklisted url in message, see lookup.uribl.com"),
            Some(Reason::SpamDetected)
        );
    }

    #[test]
    fn status_codes_when_the_words_say_nothing() {
        let cases = [
            ("5.1.1", Hard, Reason::UserUnknown),
            ("5.1.10", Hard, Reason::UserUnknown),
            ("5.1.2", Hard, Reason::HostUnknown),
            ("5.1.6", Hard, Reason::HasMoved),
            ("5.1.8", Soft, Reason::Rejected),
            ("5.2.1", Soft, Reason::Suspend),
            ("5.2.2", Soft, Reason::MailboxFull),
            ("5.2.3", Soft, Reason::ExceedLimit),
            ("5.3.4", Soft, Reason::MesgTooBig),
            ("5.4.4", Hard, Reason::HostUnknown),
            ("5.4.6", Soft, Reason::NetworkError),
            ("5.7.1", Soft, Reason::Blocked),
            ("5.7.26", Soft, Reason::AuthFailure),
            ("5.7.25", Soft, Reason::RequirePtr),
            ("5.7.133", Soft, Reason::PolicyViolation),
            ("5.0.0", Soft, Reason::Undefined),
        ];
        for (code, kind, reason) in cases {
            let v = verdict(failed(code, None, ""));
            assert_eq!((v.0, v.1, v.2), (kind, reason, true), "{code}");
            assert_eq!(v.3, code);
        }
    }

    #[test]
    fn words_come_before_the_code() {
        let cases = [
            (
                "5.7.1",
                "550 5.7.1 ip address blacklisted by recipient",
                Reason::Blocked,
            ),
            ("5.1.1", "552 5.1.1 mailbox full", Reason::MailboxFull),
            (
                "5.1.8",
                "501 5.1.8 sender address rejected",
                Reason::Rejected,
            ),
            ("5.7.1", "554 5.7.1 relay access denied", Reason::NoRelaying),
            (
                "5.7.1",
                "550 5.7.1 email rejected per dmarc policy for example.org",
                Reason::AuthFailure,
            ),
            ("5.7.1", "554 5.7.1 reverse dns failed.", Reason::RequirePtr),
            (
                "5.2.1",
                "550 5.2.1 the email account that you tried to reach is disabled.",
                Reason::Suspend,
            ),
            (
                "5.0.0",
                "554 5.6.0 this message has been scored as spam",
                Reason::SpamDetected,
            ),
            (
                "5.0.0",
                "554 5.4.6 hop count exceeded - possible mail loop",
                Reason::NetworkError,
            ),
            (
                "5.0.0",
                "550 5.3.5 internal system error",
                Reason::SystemError,
            ),
            (
                "5.0.0",
                "550 5.7.1 <a@b.example>: recipient address rejected: user unknown",
                Reason::UserUnknown,
            ),
        ];
        for (code, text, reason) in cases {
            assert_eq!(verdict(failed(code, Some(550), text)).1, reason, "{text}");
        }
    }

    #[test]
    fn only_a_gone_or_wrong_address_is_hard() {
        assert_eq!(verdict(failed("5.0.0", Some(550), "user unknown")).0, Hard);
        assert_eq!(verdict(failed("5.0.0", Some(550), "host unknown")).0, Hard);
        assert_eq!(verdict(failed("5.1.6", None, "")).0, Hard);
        for text in [
            "filtered",
            "sender address rejected",
            "blocked using zen.spamhaus.org",
            "no ptr record",
            "retry timeout exceeded",
            "mailbox full",
            "",
        ] {
            assert_eq!(verdict(failed("5.0.0", Some(550), text)).0, Soft, "{text}");
        }
        // A null MX is hard when the host says it for good, soft when it may change its mind.
        assert_eq!(
            verdict(failed("5.0.0", Some(556), "domain does not accept mail")).0,
            Hard
        );
        assert_eq!(
            verdict(failed("4.0.0", Some(450), "domain does not accept mail")).0,
            Soft
        );
    }

    #[test]
    fn user_unknown_after_data_is_the_filter() {
        let mut ev = failed("5.0.0", Some(550), "550 unknown user kijitora@example.jp");
        assert_eq!(verdict(ev).1, Reason::UserUnknown);
        ev.command = command_in(">>> data\n<<< 550 unknown user kijitora@example.jp");
        assert_eq!(ev.command, Some(Command::Data));
        // In a transcript, the command before the first refusal counts, not a later DATA.
        assert_eq!(
            command_in(">>> mail from:<a@b>\n<<< 250 ok\n>>> rcpt to:<c@d>\n<<< 550 5.1.1 user unknown\n>>> data\n<<< 503 need rcpt"),
            Some(Command::RcptTo)
        );
        assert_eq!(verdict(ev).1, Reason::Filtered);
        let ev = Evidence {
            status: parse_status_field("5.1.1"),
            ..ev
        };
        assert_eq!(verdict(ev).1, Reason::UserUnknown);
        assert_eq!(
            command_in("host x said: 550 5.1.1 user unknown (in reply to rcpt to command)"),
            Some(Command::RcptTo)
        );
        assert_eq!(command_in("nothing here"), None);
    }

    #[test]
    fn the_refused_command_as_mtas_write_it() {
        for (text, command) in [
            // Postfix wraps its words anywhere.
            (
                "host x said: 550 unknown user a@x.jp (in reply to end of data\n    command)",
                Command::Data,
            ),
            (
                "550 5.7.1 <a@x.fr>: recipient address rejected: user unknown",
                Command::RcptTo,
            ),
            (
                "192.0.2.1 does not like recipient.\nremote host said: 550 no",
                Command::RcptTo,
            ),
            (
                "550 5.2.1 <a@x.jp>... user unknown\n[rcpt_to]",
                Command::RcptTo,
            ),
            (
                "smtp error from remote server after rcpt command:",
                Command::RcptTo,
            ),
            // Sendmail with pipelining: the RCPT's refusal arrives after DATA was sent.
            (
                ">>> data\n<<< 550 5.5.0 invalid recipient\n550 5.1.1 <a@x.fr>... user unknown\n\
<<< 554 5.5.1 error: no valid recipients\n>>> rset",
                Command::RcptTo,
            ),
        ] {
            assert_eq!(command_in(text), Some(command), "{text}");
        }
        // A DATA refused for its own sake stays DATA.
        assert_eq!(
            command_in(">>> data\n<<< 554 5.7.1 spam\n>>> quit"),
            Some(Command::Data)
        );
    }

    #[test]
    fn the_step_and_the_remote_refine_user_unknown() {
        let unknown = failed("5.2.1", Some(550), "550 5.2.1 <a@x.jp>... user unknown");
        // X.2.1 (mailbox disabled) is a filter's answer unless the notice places it at RCPT.
        assert_eq!(verdict(unknown).1, Reason::Filtered);
        let at_rcpt = Evidence {
            command: Some(Command::RcptTo),
            ..unknown
        };
        assert_eq!(verdict(at_rcpt).0, Hard);
        // Yahoo refuses unknown users only after DATA.
        let yahoo = Evidence {
            command: Some(Command::Data),
            recipient: "gone@yahoo.com",
            ..failed(
                "5.0.0",
                Some(554),
                "554 delivery error: dd this user doesn't have a yahoo.com account (gone@yahoo.com) [0]",
            )
        };
        assert_eq!(verdict(yahoo).1, Reason::UserUnknown);
        // Words about the recipient are a refusal of the recipient, even without its address.
        let invalid = Evidence {
            recipient: "a@laposte.net",
            ..failed(
                "5.5.0",
                Some(550),
                "550 5.5.0 adresse destinataire invalide. invalid recipient.",
            )
        };
        assert_eq!(verdict(invalid).0, Hard);
    }

    #[test]
    fn refusals_before_any_recipient() {
        // At the greeting, only our server can be refused, whatever the words.
        let at_connect = Evidence {
            command: Some(Command::Connect),
            ..failed(
                "",
                Some(554),
                "554 host: you've reached your daily relay quota",
            )
        };
        assert_eq!(verdict(at_connect).1, Reason::Blocked);
        assert_eq!(verdict(at_connect).3, "5.0.971");
        // The envelope sender refused, no code: the reason stands, the code is "on hold".
        let at_mail = Evidence {
            command: Some(Command::MailFrom),
            ..failed(
                "",
                Some(551),
                "551 forbidden by invalid rdns record of your mail server",
            )
        };
        assert_eq!(verdict(at_mail).1, Reason::RequirePtr);
        assert_eq!(verdict(at_mail).3, "5.0.901");
        // "ip=" names an address only as a word of its own, not in a link's query.
        assert_eq!(
            reason_from_text("554 ip=192.0.2.254 - a problem occurred. (bl)"),
            Some(Reason::Blocked)
        );
        assert_eq!(
            reason_from_text("550 5.1.1 rcp-p1 https://x.example/codes?ip=192.0.2.1 recipient address does not exist"),
            Some(Reason::UserUnknown)
        );
        assert_eq!(
            reason_from_text("the account or domain may not exist, they may be blacklisted"),
            Some(Reason::HostUnknown)
        );
        assert_eq!(
            reason_from_text("<a@x.net>: malformed address: <a@x.net> may not follow b@x.com"),
            Some(Reason::SyntaxError)
        );
    }

    #[test]
    fn the_remote_s_words_within_a_summary() {
        assert_eq!(
            remote_words("5.1.0 - unknown address error 550-'5.7.1 <b@bounces.example>... access denied' (delivery attempts: 0)"),
            "5.7.1 <b@bounces.example>... access denied"
        );
        for whole in [
            "5.1.0 - éé-'no' and ü 'x'",
            "550 5.1.1 user unknown",
            "5.1.0 - unknown address error",
            "host x - said 'no'",
        ] {
            assert_eq!(remote_words(whole), whole);
        }
    }

    #[test]
    fn a_local_program_that_failed_is_a_mailer_error() {
        let mut v = classify(&failed(
            "5.1.1",
            None,
            "procmail: couldn't create \"/var/spool/mail/neko\": no such user",
        ));
        assert_eq!(v.reason, Reason::UserUnknown);
        from_local_mailer(
            &mut v,
            "procmail: couldn't create \"/var/spool/mail/neko\": no such user",
        );
        assert_eq!(
            (v.kind, v.reason, v.status.as_str()),
            (Soft, Reason::MailerError, "5.1.1")
        );
        // Its own code turns into the mailer error's.
        let mut v = classify(&failed("", None, "temporary failure"));
        v.permanent = true;
        v.status = internal_status(v.reason, true);
        from_local_mailer(&mut v, "temporary failure");
        assert_eq!(v.status, "5.0.939");
        // A full mailbox stays one; a bare exit code is left to the status code.
        let mut v = classify(&failed(
            "4.3.0",
            None,
            "quota exceeded message delivery failed",
        ));
        from_local_mailer(&mut v, "quota exceeded message delivery failed");
        assert_eq!(v.reason, Reason::MailboxFull);
        let mut v = classify(&failed("5.3.0", None, "77"));
        let before = v.reason;
        from_local_mailer(&mut v, "77");
        assert_eq!(v.reason, before);
    }

    #[test]
    fn gateways_known_by_their_words() {
        assert!(written_by_filtering_gateway(
            "\"Mail Deliver System\" <MAILER-DAEMON@x.jp>",
            ""
        ));
        assert!(written_by_filtering_gateway(
            "MAILER-DAEMON@x.org",
            "Unable to deliver message to: <a@x.org>\nDelivery failed for the following reason:\n"
        ));
        assert!(written_by_filtering_gateway(
            "MAILER-DAEMON@x.co.jp",
            "Message from x.co.jp.\nUnable to deliver message to the following address(es).\n"
        ));
        assert!(!written_by_filtering_gateway(
            "Mail Delivery System <MAILER-DAEMON@x.org>",
            "This is the mail system at host x.org.\n"
        ));
    }

    #[test]
    fn a_bare_user_unknown_reply_is_a_filter() {
        let bare = Evidence {
            recipient: "bob@example.org",
            ..failed("5.0.0", Some(550), "550 : user unknown")
        };
        assert_eq!(verdict(bare).1, Reason::Filtered);
        let named = Evidence {
            recipient: "bob@example.org",
            ..failed("5.0.0", Some(550), "550 <bob@example.org>... user unknown")
        };
        assert_eq!(verdict(named).1, Reason::UserUnknown);
        let coded = Evidence {
            recipient: "bob@example.org",
            ..failed("5.1.1", Some(550), "550 5.1.1 user unknown")
        };
        assert_eq!(verdict(coded).1, Reason::UserUnknown);
        let at_rcpt = Evidence {
            recipient: "bob@example.org",
            command: Some(Command::RcptTo),
            ..failed("5.0.0", Some(550), "550 user unknown")
        };
        assert_eq!(verdict(at_rcpt).1, Reason::UserUnknown);
    }

    #[test]
    fn temporary_failures_and_delays() {
        // Given up on a temporary failure with nothing more said: expired, soft, not permanent.
        assert_eq!(
            verdict(failed("", Some(451), "")),
            (Soft, Reason::Expired, false, "4.0.947".into())
        );
        // A host not found for now is a network error.
        assert_eq!(
            verdict(failed("4.0.0", None, "dns error: domain name not found")).1,
            Reason::NetworkError
        );
        let delayed = Evidence {
            outcome: Outcome::Delayed,
            ..failed("4.4.7", None, "")
        };
        assert_eq!(
            verdict(delayed),
            (Soft, Reason::Expired, false, "4.4.7".into())
        );
        assert!(classify(&delayed).delayed);
        // A delay is soft whatever its reason, even one that would be hard as a failure.
        let delayed_unknown = Evidence {
            outcome: Outcome::Delayed,
            ..failed("4.1.1", None, "user unknown")
        };
        let v = classify(&delayed_unknown);
        assert_eq!(
            (v.kind, v.reason, v.delayed),
            (Soft, Reason::UserUnknown, true)
        );
        let delayed = Evidence {
            outcome: Outcome::Delayed,
            ..failed(
                "",
                None,
                "connect to x.example[192.0.2.1]:25: no route to host",
            )
        };
        assert_eq!(verdict(delayed).1, Reason::NetworkError);
        assert!(!classify(&failed("5.1.1", None, "")).delayed);
        let expired = Evidence {
            outcome: Outcome::Expired,
            ..failed("", None, "connection timed out")
        };
        assert_eq!(verdict(expired).1, Reason::Expired);
    }

    #[test]
    fn no_code_in_the_bounce_gives_the_reason_s_code() {
        assert_eq!(verdict(failed("", None, "no such user here")).3, "5.0.911");
        assert_eq!(verdict(failed("", Some(550), "filtered")).3, "5.0.910");
        assert_eq!(verdict(failed("", None, "")).3, "5.0.900");
        assert_eq!(internal_status(Reason::MailboxFull, false), "4.0.922");
    }

    #[test]
    fn the_context_is_read_last() {
        let ev = Evidence {
            context: "your message to group x was rejected due to spam classification",
            ..failed("5.0.0", None, "")
        };
        assert_eq!(verdict(ev).1, Reason::SpamDetected);
        let ev = Evidence {
            context: "spam",
            ..failed("5.1.1", None, "")
        };
        assert_eq!(verdict(ev).1, Reason::UserUnknown);
    }
}
