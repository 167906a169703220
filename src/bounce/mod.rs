//! Bounce parsing: from the bytes of one message to the recipients it reports as failed, each
//! classified hard or soft with a reason, plus what later attribution needs (the VERP address the
//! bounce was delivered to, the Message-ID of the returned original).
//!
//! Pure functions over bytes: no I/O, no database, no clock. Intake (files, Maildir, IMAP, SES)
//! and storage call [`parse`]; the policy that turns bounces into "needs update" flags lives
//! elsewhere. Machine-readable evidence comes first: RFC 3464 delivery-status fields (`dsn`),
//! classified from the enhanced status code, the reply code, then keywords (`classify`). Only when
//! a message carries no such fields are its prose phrasings read (`text`). Addresses come from a
//! small scanner (`address`), codes from `status`.
//!
//! Hostile input is expected: the message is parsed with `mail-parser` (which never panics and
//! returns `None` for what it cannot read; that input is then read as plain text), input over
//! [`MAX_MESSAGE_BYTES`] is refused before any parsing, at most [`MAX_PARTS`] MIME parts and one
//! level of attached message are looked at, and prose is read up to a fixed size.

mod address;
mod classify;
mod dsn;
mod reason;
mod status;
mod text;

use std::borrow::Cow;
use std::collections::HashSet;

use mail_parser::{Encoding, Message, MessageParser, MessagePart, MimeHeaders, PartType};
use serde::Serialize;

pub use reason::{Action, BounceKind, Reason, OLD_NAMES};

/// Messages larger than this are not parsed: [`parse`] returns [`TooLarge`].
pub const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
/// At most this many MIME parts of a message are examined.
pub const MAX_PARTS: usize = 500;
/// At most this many recipients are reported from one message (the rest are ignored).
pub const MAX_BOUNCES: usize = 1000;
/// Diagnostics are cut to this many characters.
const MAX_DIAGNOSTIC_CHARS: usize = 1000;

/// One failed (or delayed) recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bounce {
    /// The recipient, lower-cased: DSN `Final-Recipient` (else `Original-Recipient`), or the
    /// address a prose notice names.
    pub address: String,
    /// Hard or soft ([`BounceKind::of`] the reason and `permanent`).
    pub kind: BounceKind,
    /// True when the remote gave up for good: a 5xx status or reply. False for a temporary
    /// (4xx) failure, an expiry of one, or a delay warning.
    pub permanent: bool,
    /// True for a delay warning (DSN `Action: delayed`, or a notice that says it is still
    /// trying): not a failure yet, always soft, counted by no policy. Its reason says why.
    pub delayed: bool,
    /// Enhanced status code (`"5.1.1"`): the DSN `Status` field, made more specific from the
    /// diagnostic when the field is only `X.0.0`; for prose bounces the code found near the
    /// address. `None` when there is none.
    pub status: Option<String>,
    /// Why, in the taxonomy.
    pub reason: Reason,
    /// What the remote server said (`550 5.1.1 <bob@example.com>: ... User unknown`), whitespace
    /// collapsed, the DSN type prefix (`smtp;`) removed, at most 1000 characters.
    pub diagnostic: Option<String>,
    /// The remote host that refused (`Remote-MTA` without its `dns;` type, or the host a prose
    /// notice names).
    pub remote_mta: Option<String>,
}

/// Everything parsed from one message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Failed or delayed recipients, one per address, in the order the message gives them. Empty
    /// when the message is not a bounce: an auto-reply, ordinary mail, a read receipt, or a
    /// delivery report of success only.
    pub bounces: Vec<Bounce>,
    /// The Message-ID of the returned original, without angle brackets: from an attached
    /// `message/rfc822` or `text/rfc822-headers` part, else from a `Message-ID:` line in the body.
    pub original_message_id: Option<String>,
    /// The address this bounce was delivered to, lower-cased: the first address of the first of
    /// `X-Original-To`, `Delivered-To`, `To`. With VERP this carries the token
    /// (`moped-bounces+1f-3a9c04be21@austintexas.gov`).
    pub verp_recipient: Option<String>,
}

/// The message was over the size limit and was not parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("message of {size} bytes is over the {limit}-byte limit for bounce parsing; skipped")]
pub struct TooLarge {
    /// Size of the message in bytes.
    pub size: usize,
    /// The limit it exceeded.
    pub limit: usize,
}

/// The first RFC 3463 enhanced status code in `text` (`5.7.1` in `550 5.7.1 <x@y>: Relay
/// denied`) as its class, subject and detail; also what the sender uses to judge an SMTP reply.
pub fn first_enhanced_status(text: &str) -> Option<(u16, u16, u16)> {
    status::find_enhanced(text).map(|(s, _)| (u16::from(s.class), s.subject, s.detail))
}

/// Parses one message (RFC 5322 bytes, or anything else: unreadable input is read as plain text)
/// with the [`MAX_MESSAGE_BYTES`] limit. Never panics.
///
/// # Errors
/// [`TooLarge`] when the message is over the limit; nothing of it is read.
pub fn parse(raw: &[u8]) -> Result<Report, TooLarge> {
    parse_with_limit(raw, MAX_MESSAGE_BYTES)
}

/// Builds now what parsing otherwise builds on first use (the phrase automata, the MIME
/// parser's settings), so that a caller with a core to spare has it ready before its first
/// message: otherwise the first message that needs one builds it while every other thread
/// that needs it waits. Parses nothing; calling it again does nothing.
pub fn prepare() {
    std::sync::LazyLock::force(&PARSER);
    text::prepare();
    classify::command_in("");
    classify::reason_from_text("");
}

/// [`parse`] with another size limit.
///
/// # Errors
/// [`TooLarge`] when `raw` is longer than `max_bytes`.
pub fn parse_with_limit(raw: &[u8], max_bytes: usize) -> Result<Report, TooLarge> {
    if raw.len() > max_bytes {
        return Err(TooLarge {
            size: raw.len(),
            limit: max_bytes,
        });
    }
    let unix;
    let raw = if ends_lines_with_bare_cr(raw) {
        unix = bare_cr_to_lf(raw);
        &unix[..]
    } else {
        raw
    };
    Ok(match parse_mime(raw) {
        Some(message) if !message.parts.is_empty() => from_message(&message, false),
        _ => from_plain_text(&decode_undeclared(raw)),
    })
}

/// Does the message end its lines with a bare CR (classic Mac OS files), as its first line
/// break shows?
fn ends_lines_with_bare_cr(raw: &[u8]) -> bool {
    memchr::memchr2(b'\r', b'\n', raw)
        .is_some_and(|at| raw[at] == b'\r' && raw.get(at + 1) != Some(&b'\n'))
}

/// `raw` with every CR that is not part of a CRLF made an LF.
fn bare_cr_to_lf(raw: &[u8]) -> Vec<u8> {
    raw.iter()
        .enumerate()
        .map(|(i, &b)| {
            if b == b'\r' && raw.get(i + 1) != Some(&b'\n') {
                b'\n'
            } else {
                b
            }
        })
        .collect()
}

/// The MIME structure of `raw`, or `None` when mail-parser finds none or gives up.
///
/// mail-parser 0.11 is written not to panic, but its recovery paths for corrupt nesting contain
/// `debug_assert!(false, ..)`, which fires in debug and test builds (the mutation test finds
/// such inputs within seconds). A panic there must not take the caller down with one bad
/// message, so it is caught here and the message is read as plain text instead. Nothing is
/// shared with the parser but the input slice, so no state can be left half-updated.
static PARSER: std::sync::LazyLock<MessageParser> = std::sync::LazyLock::new(|| {
    MessageParser::new()
        .with_mime_headers()
        .header_text(mail_parser::HeaderName::Subject)
        .header_id(mail_parser::HeaderName::MessageId)
        // Every other field is read from its raw bytes (`raw_headers`): not parsed at all.
        .default_header_ignore()
});

fn parse_mime(raw: &[u8]) -> Option<Message<'_>> {
    std::panic::catch_unwind(|| PARSER.parse(raw))
        .ok()
        .flatten()
}

/// The first plausible mail address in `text`, lower-cased (`"Bob" <Bob@Example.org>` gives
/// `bob@example.org`).
pub fn address_in(text: &str) -> Option<String> {
    address::first(text)
}

/// Classify a failure known only from a line of text: the SMTP reply that refused a message at
/// send time, an SES `diagnosticCode`, or the reason column of a CSV a mail admin handed over.
/// `gave_up` is false for a delay warning. Returns the kind, the reason, the enhanced status
/// code found in the text, and whether the failure is permanent (5xx).
pub fn classify_text(text: &str, gave_up: bool) -> (BounceKind, Reason, Option<String>, bool) {
    classify_line(text, gave_up, None)
}

/// [`classify_text`] for a server's final refusal of one recipient at send time; `at_rcpt` when
/// it answered that recipient's `RCPT TO` (a "user unknown" there is the address, not a filter).
pub fn classify_refusal(text: &str, at_rcpt: bool) -> (BounceKind, Reason, Option<String>, bool) {
    classify_line(text, true, at_rcpt.then_some(classify::Command::RcptTo))
}

fn classify_line(
    text: &str,
    gave_up: bool,
    command: Option<classify::Command>,
) -> (BounceKind, Reason, Option<String>, bool) {
    let status = status::find_enhanced(text).map(|(s, _)| s);
    let reply = text
        .lines()
        .find_map(status::find_reply_code)
        .map(|(c, _)| c);
    let outcome = if gave_up {
        classify::Outcome::Failed
    } else {
        classify::Outcome::Delayed
    };
    let lower = text.to_lowercase();
    let v = classify::classify(&classify::Evidence {
        outcome,
        status,
        reply,
        diagnostic: &lower,
        context: "",
        command: command.or_else(|| classify::command_in(&lower)),
        recipient: "",
    });
    (v.kind, v.reason, Some(v.status), v.permanent)
}

/// [`classify_text`] for a failure given as a final one (`gave_up`), but only when the text
/// says something: an enhanced status code, an SMTP reply code or a recognised phrasing.
/// `None` for blank or unrecognised text, whose kind would be a guess: a CSV row whose only clue
/// is such a reason is refused rather than counted hard.
pub fn classify_known_text(text: &str) -> Option<(BounceKind, Reason, Option<String>, bool)> {
    let known = status::find_enhanced(text).is_some()
        || text.lines().any(|l| status::find_reply_code(l).is_some())
        || classify::names_a_reason(&text.to_lowercase());
    known.then(|| classify_text(text, true))
}

/// Collapses whitespace, drops the repeated reply-code prefixes of multi-line replies
/// (`550-5.1.1 ...`), Exchange's `#...##` wrapping and a dangling closing parenthesis, and cuts
/// the result to [`MAX_DIAGNOSTIC_CHARS`]. `None` when nothing is left.
pub(crate) fn tidy_diagnostic(raw: &str) -> Option<String> {
    let words: Vec<&str> = raw.split_whitespace().collect();
    let first = words.first()?.trim_start_matches('#');
    // The reply code and enhanced code the reply opens with, e.g. ("550", "5.1.1").
    let (code, enhanced) = match first.split_once('-') {
        Some((c, e)) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()) => (c, e),
        _ if first.len() == 3 && first.bytes().all(|b| b.is_ascii_digit()) => {
            (first, words.get(1).copied().unwrap_or_default())
        }
        _ => ("", ""),
    };
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < words.len() {
        let mut w = words[i];
        if i == 0 {
            w = first;
            if let Some((c, e)) = w.split_once('-').filter(|(c, _)| *c == code) {
                out.push_str(c);
                out.push(' ');
                out.push_str(e);
                i += 1;
                continue;
            }
        } else if !code.is_empty() {
            if w.split_once('-') == Some((code, enhanced)) {
                i += 1;
                continue;
            }
            if w == code && i > 1 && words.get(i + 1) == Some(&enhanced) && !enhanced.is_empty() {
                i += 2;
                continue;
            }
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
        i += 1;
    }
    let mut s = out.trim_end_matches('#').trim().to_string();
    if s.ends_with(')') && s.matches('(').count() < s.matches(')').count() {
        s.pop();
    }
    if let Some((cut, _)) = s.char_indices().nth(MAX_DIAGNOSTIC_CHARS) {
        s.truncate(cut);
    }
    let s = s.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// `bytes` as text, undecodable sequences made U+FFFD: [`String::from_utf8_lossy`], which
/// checks ASCII a byte at a time, after a check of valid UTF-8 that goes a word at a time (header
/// values and delivery-status parts are nearly always ASCII).
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Bytes of a part's body, whatever mail-parser made of it.
fn body_bytes<'a>(part: &'a MessagePart<'_>) -> Option<&'a [u8]> {
    match &part.body {
        PartType::Text(t) | PartType::Html(t) => Some(t.as_bytes()),
        PartType::Binary(b) | PartType::InlineBinary(b) => Some(b),
        PartType::Message(m) => Some(&m.raw_message),
        PartType::Multipart(_) => None,
    }
}

/// Raw values of the named header fields (case-insensitive) of `message`'s top level.
fn raw_headers<'a>(message: &'a Message<'_>, name: &'a str) -> impl Iterator<Item = Cow<'a, str>> {
    message
        .parts
        .first()
        .into_iter()
        .flat_map(|p| p.headers.iter())
        .filter(move |h| h.name().eq_ignore_ascii_case(name))
        .filter_map(move |h| {
            message
                .raw_message
                .get(h.offset_start as usize..h.offset_end as usize)
                .map(lossy)
        })
}

/// Header fields that name the sender of the returned original.
const SENDER_HEADERS: &[&str] = &["from", "sender", "reply-to", "return-path"];

/// What the returned original tells us.
#[derive(Default)]
struct Original {
    message_id: Option<String>,
    senders: Vec<String>,
    /// Its addressees (`To`, `Cc`).
    recipients: Vec<String>,
}

impl Original {
    fn from_message(m: &Message<'_>) -> Original {
        let mut senders = Vec::new();
        let mut recipients = Vec::new();
        // One pass over the header fields, in their order.
        for h in m.parts.first().into_iter().flat_map(|p| p.headers.iter()) {
            let name = h.name();
            let list = if SENDER_HEADERS.iter().any(|n| name.eq_ignore_ascii_case(n)) {
                &mut senders
            } else if name.eq_ignore_ascii_case("to") || name.eq_ignore_ascii_case("cc") {
                &mut recipients
            } else {
                continue;
            };
            if let Some(raw) = m
                .raw_message
                .get(h.offset_start as usize..h.offset_end as usize)
            {
                let value = lossy(raw);
                list.extend(address::find_all(&value).into_iter().map(|f| f.address));
            }
        }
        Original {
            message_id: m
                .message_id()
                .map(clean_message_id)
                .filter(|s| !s.is_empty()),
            senders,
            recipients,
        }
    }

    fn from_header_bytes(bytes: &[u8]) -> Original {
        let start = bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(bytes.len());
        match PARSER.parse_headers(&bytes[start..]) {
            Some(m) if !m.parts.is_empty() => Original::from_message(&m),
            _ => Original::default(),
        }
    }
}

fn clean_message_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_string()
}

/// The id of the first `Message-ID:` line in `text`.
fn message_id_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let t = line.trim_start();
        let name = t.get(..11)?;
        if !(name.eq_ignore_ascii_case("message-id:") || name.eq_ignore_ascii_case("message id:")) {
            return None;
        }
        let value = t[11..].trim();
        let id = match (value.find('<'), value.find('>')) {
            (Some(a), Some(b)) if a < b => &value[a + 1..b],
            _ => value.split_whitespace().next()?,
        };
        let id = clean_message_id(id);
        (!id.is_empty() && !id.contains(char::is_whitespace)).then_some(id)
    })
}

/// Subject words of bounce notices; lower case.
const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "undelivered",
    "returned mail",
    "delivery status notification",
    "delivery failure",
    "delivery failed",
    "delivery has failed",
    "failure notice",
    "mail delivery failed",
    "delivery notification",
    "non-delivery",
    "nondeliverable",
    "could not send message",
    "delivery problem",
    "not delivered",
    "mail system error",
    "returned to sender",
    "delayed mail",
    "delivery delayed",
    "message status - undeliverable",
    "delivery report",
];

/// Subject beginnings of auto-replies; lower case.
const AUTO_REPLY_SUBJECTS: &[&str] = &[
    "automatic reply",
    "auto:",
    "autoreply",
    "auto-reply",
    "auto reply",
    "auto response",
    "autoresponse",
    "auto-response",
    "out of office",
    "out of the office",
    "vacation",
    "away:",
    "abwesenheitsnotiz",
    "réponse automatique",
];

/// Display names of mail systems; lower case.
const SYSTEM_SENDER_NAMES: &[&str] = &[
    "mailer-daemon",
    "mail delivery",
    "postmaster",
    "mail administrator",
    "mail system",
    "microsoft outlook",
];

/// Header evidence about the message as a whole.
struct Headers {
    subject: String,
    bounce_like: bool,
    auto_reply: bool,
    verp_recipient: Option<String>,
    /// The bounce's own addressees and sender: never failed recipients.
    own_addresses: Vec<String>,
    failed_hint: Vec<String>,
}

fn read_headers(message: &Message<'_>) -> Headers {
    let subject = message.subject().unwrap_or_default().trim().to_lowercase();
    // One pass over the header fields. The VERP address: the first address of the first of
    // X-Original-To, Delivered-To, To that has one.
    let mut verp: [Option<String>; 3] = [None, None, None];
    let mut from_raw = String::new();
    let mut null_sender = false;
    let mut failed_hint: Vec<String> = Vec::new();
    let mut auto_submitted = false;
    let mut auto_header = false;
    for h in message
        .parts
        .first()
        .into_iter()
        .flat_map(|p| p.headers.iter())
    {
        let name = h.name();
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        let verp_slot = ["x-original-to", "delivered-to", "to"]
            .iter()
            .position(|n| is(n));
        let wanted = verp_slot.is_some()
            || is("from")
            || is("return-path")
            || is("x-failed-recipients")
            || is("auto-submitted")
            || is("precedence");
        if is("x-autoreply") || is("x-autorespond") {
            auto_header = true;
        }
        if !wanted {
            continue;
        }
        let Some(raw) = message
            .raw_message
            .get(h.offset_start as usize..h.offset_end as usize)
        else {
            continue;
        };
        let value = lossy(raw);
        if let Some(i) = verp_slot {
            if verp[i].is_none() {
                verp[i] = address::first(&value);
            }
        } else if is("from") {
            if !from_raw.is_empty() {
                from_raw.push(' ');
            }
            from_raw.push_str(&value);
        } else if is("return-path") {
            null_sender |= value.trim() == "<>";
        } else if is("x-failed-recipients") {
            failed_hint.extend(address::find_all(&value).into_iter().map(|f| f.address));
        } else if is("auto-submitted") {
            auto_submitted |= value
                .trim()
                .get(..12)
                .is_some_and(|v| v.eq_ignore_ascii_case("auto-replied"));
        } else {
            auto_header |= value.trim().eq_ignore_ascii_case("auto_reply");
        }
    }
    let [original_to, delivered_to, to] = verp;
    let verp_recipient = original_to.or(delivered_to).or(to);

    let own_addresses = Vec::new();
    let from_lower = from_raw.to_lowercase();
    let from_system = address::find_all(&from_raw)
        .iter()
        .any(|f| address::is_role(&f.address))
        || SYSTEM_SENDER_NAMES.iter().any(|n| from_lower.contains(n));
    let report = message.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    });
    let bounce_like = from_system
        || null_sender
        || report
        || !failed_hint.is_empty()
        || BOUNCE_SUBJECTS.iter().any(|s| subject.contains(s));
    let auto_reply = AUTO_REPLY_SUBJECTS.iter().any(|s| subject.starts_with(s))
        || auto_header
        || (auto_submitted && !bounce_like);

    Headers {
        subject,
        bounce_like,
        auto_reply,
        verp_recipient,
        own_addresses,
        failed_hint,
    }
}

fn own_addresses(message: &Message<'_>) -> Vec<String> {
    let mut own_addresses = Vec::new();
    for name in [
        "to",
        "cc",
        "delivered-to",
        "x-original-to",
        "from",
        "sender",
        "reply-to",
    ] {
        for value in raw_headers(message, name) {
            own_addresses.extend(address::find_all(&value).into_iter().map(|f| f.address));
        }
    }
    own_addresses
}

/// The report of `message`; `nested` when it is a bounce attached to another message (which is
/// read, but whose own attachments are not).
fn from_message(message: &Message<'_>, nested: bool) -> Report {
    let mut headers = read_headers(message);
    let mut is_mdn = message.content_type().is_some_and(|ct| {
        ct.attribute("report-type")
            .is_some_and(|t| t.eq_ignore_ascii_case("disposition-notification"))
    });
    let mut dsn_texts: Vec<Cow<'_, str>> = Vec::new();
    let mut original = Original::default();
    let mut have_original = false;
    // The first attached message: a bounce forwarded as an attachment, or the returned original.
    let mut attached: Option<&Message<'_>> = None;

    for part in message.parts.iter().take(MAX_PARTS) {
        let (ctype, subtype) = part
            .content_type()
            .map_or((String::new(), String::new()), |ct| {
                (
                    ct.ctype().to_ascii_lowercase(),
                    ct.subtype().unwrap_or_default().to_ascii_lowercase(),
                )
            });
        match (ctype.as_str(), subtype.as_str()) {
            ("message", "delivery-status" | "global-delivery-status") => {
                if let Some(bytes) = body_bytes(part) {
                    dsn_texts.push(lossy(bytes));
                }
            }
            ("message", "disposition-notification" | "global-disposition-notification") => {
                is_mdn = true;
            }
            ("text", "rfc822-headers") | ("message", "global-headers") if !have_original => {
                if let Some(bytes) = body_bytes(part) {
                    original = Original::from_header_bytes(bytes);
                    have_original = true;
                }
            }
            _ => match &part.body {
                PartType::Message(m) if !have_original && !m.parts.is_empty() => {
                    original = Original::from_message(m);
                    have_original = true;
                    attached = Some(m);
                }
                PartType::Binary(b)
                    if !have_original
                        && ctype == "message"
                        && matches!(subtype.as_str(), "rfc822" | "global") =>
                {
                    original = Original::from_header_bytes(b);
                    have_original = true;
                }
                _ => {}
            },
        }
    }

    let mut bounces = Vec::new();
    let context = Context::new(|| human_text(message));
    // A delivery-status part that names somebody settles it; otherwise the prose is read.
    let mut named_somebody = false;
    for text in &dsn_texts {
        if bounces.len() >= MAX_BOUNCES {
            break;
        }
        let records = dsn::parse_recipients(text);
        named_somebody |= records.iter().any(|r| record_address(r).is_some());
        bounces.extend(
            records
                .iter()
                .filter_map(|r| bounce_from_record(r, &context)),
        );
    }
    let read_prose = !is_mdn && !named_somebody && !headers.auto_reply;
    // The human text (HTML made text) is only built when something needs it, and once: the
    // records' context may have built it already (cut to `text::MAX_TEXT`, as every reader of
    // it below cuts it).
    let human = if read_prose || original.message_id.is_none() {
        context.into_text()
    } else {
        String::new()
    };
    // The copy of the original quoted in the text, read once for both uses.
    let (returned, quoted) = if read_prose || original.message_id.is_none() {
        quoted_original(&human)
    } else {
        (None, None)
    };
    // An attached message that is itself a bounce (a relay passing on the report it got, a
    // bounce forwarded as a file): its addressee is not who failed, its report says who did.
    let attached_bounce = attached.filter(|m| read_prose && !nested && read_headers(m).bounce_like);
    if attached_bounce.is_some() {
        original.recipients.clear();
    }
    if read_prose {
        headers.own_addresses = own_addresses(message);
        bounces = bounces_from_prose(&human, &headers, &original, quoted.as_ref(), returned);
    }
    // A notice that names nobody but carries a bounce: the attached bounce's recipients.
    if let Some(inner) = attached_bounce.filter(|_| bounces.is_empty()) {
        let report = from_message(inner, true);
        if !report.bounces.is_empty() {
            bounces = report.bounces;
            original.message_id = report.original_message_id;
        }
    }
    // Only "user unknown" is read differently from a filtering gateway: its marks are looked
    // for only when some bounce says so.
    let via_filter = bounces.iter().any(|b| b.reason == Reason::UserUnknown)
        && (classify::FILTERING_GATEWAY_HEADERS
            .iter()
            .any(|(name, part)| {
                raw_headers(message, name).any(|v| v.to_ascii_lowercase().contains(part))
            })
            || classify::written_by_filtering_gateway(
                &raw_headers(message, "from").next().unwrap_or_default(),
                &human,
            ));
    if via_filter {
        bounces
            .iter_mut()
            .for_each(classify::through_filtering_gateway);
    }
    Report {
        bounces: if is_mdn { Vec::new() } else { dedupe(bounces) },
        original_message_id: original
            .message_id
            .or_else(|| message_id_from_text(&human, quoted.as_ref())),
        verp_recipient: headers.verp_recipient,
    }
}

fn from_plain_text(text: &str) -> Report {
    let headers = Headers {
        subject: String::new(),
        bounce_like: false,
        auto_reply: false,
        verp_recipient: None,
        own_addresses: Vec::new(),
        failed_hint: Vec::new(),
    };
    let (returned, quoted) = quoted_original(text);
    Report {
        bounces: dedupe(bounces_from_prose(
            text,
            &headers,
            &Original::default(),
            quoted.as_ref(),
            returned,
        )),
        original_message_id: message_id_from_text(text, quoted.as_ref()),
        verp_recipient: None,
    }
}

/// Bounces from the human-readable text: quoted DSN fields if it has some, else its phrasing.
/// `quoted` is the original as quoted in the text, if it is, and `returned` where it begins
/// ([`quoted_original`]).
fn bounces_from_prose(
    human: &str,
    headers: &Headers,
    original: &Original,
    quoted: Option<&Original>,
    returned: Option<(usize, usize)>,
) -> Vec<Bounce> {
    let human = text::capped(human, text::MAX_TEXT);
    // An Amazon SES notification mailed as JSON says it all, even when it reports no bounce.
    if let Some(records) = dsn::ses_records(human) {
        let context = Context::new(|| human.to_string());
        return records
            .iter()
            .filter_map(|r| bounce_from_record(r, &context))
            .collect();
    }
    if quotes_final_recipient(human) {
        let records = dsn::parse_recipients(human);
        if records
            .iter()
            .any(|r| r.action.is_some() || r.status.is_some())
        {
            let context = Context::new(|| human.to_string());
            let found: Vec<Bounce> = records
                .iter()
                .filter_map(|r| bounce_from_record(r, &context))
                .collect();
            if !found.is_empty() {
                return found;
            }
        }
    }
    let mut excluded: HashSet<String> = headers.own_addresses.iter().cloned().collect();
    excluded.extend(original.senders.iter().cloned());
    let mut returned_to = original.recipients.clone();
    if let Some(quoted) = quoted {
        excluded.extend(quoted.senders.iter().cloned());
        if returned_to.is_empty() {
            returned_to.clone_from(&quoted.recipients);
        }
    }
    // The headers' list of failed recipients is taken as it is, even when it names one of the
    // bounce's own addresses (a message sent to oneself).
    let ctx = text::Context {
        subject: &headers.subject,
        bounce_like: headers.bounce_like,
        excluded: &excluded,
        failed_hint: &headers.failed_hint,
        returned_to: &returned_to,
        returned,
    };
    text::find_bounces(human, &ctx)
}

/// Does the text quote a DSN recipient field (`Final-Recipient:` in any case)?
fn quotes_final_recipient(text: &str) -> bool {
    // At each colon (rare in prose, found by memchr), the name before it.
    const NAME: &[u8] = b"final-recipient";
    let bytes = text.as_bytes();
    memchr::memchr_iter(b':', bytes).any(|colon| {
        colon
            .checked_sub(NAME.len())
            .is_some_and(|start| bytes[start..colon].eq_ignore_ascii_case(NAME))
    })
}

/// The Message-ID of the returned original quoted in prose: in the returned copy if it is marked,
/// else the first `Message-ID:` line anywhere.
fn message_id_from_text(human: &str, quoted: Option<&Original>) -> Option<String> {
    quoted
        .and_then(|q| q.message_id.clone())
        .or_else(|| message_id_line(text::capped(human, text::MAX_TEXT)))
}

/// The header fields of the original quoted in `human` after a marker line, if there is one,
/// and where it begins in `human` cut to [`text::MAX_TEXT`] ([`text::returned_at`]).
fn quoted_original(human: &str) -> (Option<(usize, usize)>, Option<Original>) {
    let human = text::capped(human, text::MAX_TEXT);
    let returned = text::returned_at(human);
    let quoted = returned
        .and_then(|(_, at)| human.get(at..))
        .map(|rest| Original::from_header_bytes(rest.as_bytes()));
    (returned, quoted)
}

/// The text a person would read: the message's text bodies (HTML made text), without the
/// attached original. Parts mail-parser did not file as bodies are used when there are none.
fn human_text(message: &Message<'_>) -> String {
    let mut out = String::new();
    for id in message.text_body.iter().take(MAX_PARTS) {
        if let Some(part) = message.parts.get(*id as usize) {
            add_human_part(&mut out, &message.raw_message, part);
        }
    }
    if out.is_empty() {
        for part in message.parts.iter().take(MAX_PARTS) {
            add_human_part(&mut out, &message.raw_message, part);
        }
    }
    out
}

/// Text of bytes that are not UTF-8: read as Latin-1, the usual charset of undeclared 8-bit mail
/// (every byte is a character, so addresses keep their letters instead of becoming U+FFFD).
fn decode_undeclared(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

fn add_human_part(out: &mut String, raw: &[u8], part: &MessagePart<'_>) {
    let is_headers = part.content_type().is_some_and(|ct| {
        ct.subtype().is_some_and(|s| {
            s.eq_ignore_ascii_case("rfc822-headers") || s.eq_ignore_ascii_case("global-headers")
        })
    });
    if is_headers || out.len() > text::MAX_TEXT {
        return;
    }
    match &part.body {
        // mail-parser replaced undecodable bytes with U+FFFD; an unencoded part can be re-read.
        PartType::Text(t)
            if t.contains(char::REPLACEMENT_CHARACTER) && part.encoding == Encoding::None =>
        {
            match raw.get(part.offset_body as usize..part.offset_end as usize) {
                Some(bytes) => out.push_str(&decode_undeclared(bytes)),
                None => out.push_str(t),
            }
        }
        PartType::Text(t) => out.push_str(t),
        PartType::Html(h) => out.push_str(&mail_parser::decoders::html::html_to_text(h)),
        // A multipart whose boundary could not be read (a `boundary=` parameter on a line of
        // its own) is left as bytes: its nested parts, headers and all, are still the text.
        PartType::Binary(b)
            if part
                .content_type()
                .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("multipart")) =>
        {
            out.push_str(&decode_undeclared(b));
        }
        _ => return,
    }
    out.push_str("\n\n");
}

/// The recipient a DSN record names: `Final-Recipient`, else `Original-Recipient` (when the
/// final one is not an Internet address, e.g. `X-Local; bob`).
fn record_address(record: &dsn::Recipient) -> Option<String> {
    let field = |value: &Option<String>| {
        value
            .as_deref()
            .and_then(|v| address::first(dsn::strip_type(v)))
    };
    field(&record.final_recipient).or_else(|| field(&record.original_recipient))
}

/// The notice's human text in lower case, built the first time a record's classification needs
/// it ([`classify::needs_context`]) and then shared by the message's other records.
struct Context<F> {
    build: F,
    text: std::cell::OnceCell<String>,
    lower: std::cell::OnceCell<String>,
}

impl<F: Fn() -> String> Context<F> {
    fn new(build: F) -> Self {
        Context {
            build,
            text: std::cell::OnceCell::new(),
            lower: std::cell::OnceCell::new(),
        }
    }

    /// The notice's text as written, at most [`text::MAX_TEXT`] bytes.
    fn text(&self) -> &str {
        self.text.get_or_init(|| {
            let mut t = (self.build)();
            if t.len() > text::MAX_TEXT {
                let cut = text::capped(&t, text::MAX_TEXT).len();
                t.truncate(cut);
            }
            t
        })
    }

    /// The notice's text as [`Context::text`] gives it, built now if it was not yet.
    fn into_text(self) -> String {
        self.text();
        self.text.into_inner().unwrap_or_default()
    }

    /// The notice's text in lower case.
    fn get(&self) -> &str {
        self.lower.get_or_init(|| self.text().to_lowercase())
    }

    /// What the notice says about `address` on its own line, when that is a server's reply:
    /// OpenSMTPD, for one, lists `bob@example.org: 550 5.1.1 ... User unknown` in its text and
    /// gives its delivery-status records no Diagnostic-Code.
    fn reply_about(&self, address: &str) -> Option<String> {
        self.text().lines().find_map(|line| {
            let at = line.to_ascii_lowercase().find(address)?;
            let rest = line[at + address.len()..]
                .trim_start_matches(|c: char| matches!(c, '>' | ':' | ',') || c.is_whitespace());
            status::find_reply_code(rest).filter(|(_, i)| *i == 0)?;
            tidy_diagnostic(rest)
        })
    }
}

/// A bounce from one DSN recipient record; `None` for success actions and unreadable records.
/// `context` is the notice's text, read when the record's own fields say too little.
fn bounce_from_record<F: Fn() -> String>(
    record: &dsn::Recipient,
    context: &Context<F>,
) -> Option<Bounce> {
    let address = record_address(record)?;
    let (diagnostic_type, diagnostic) = match record.diagnostic_code.as_deref().map(dsn::split_type)
    {
        Some((kind, d)) => (kind, tidy_diagnostic(d)),
        None => (None, context.reply_about(&address)),
    };
    let diag = diagnostic.as_deref().unwrap_or_default();
    let reply = status::find_reply_code(diag).map(|(c, _)| c);
    // The remote's own code beats the reporting MTA's summary of it (a `Status: 4.4.7` over
    // `450 4.7.1 Client host rejected`), as long as both agree on the class.
    let from_diag = status::find_last_enhanced(diag);
    let mut status = record
        .status
        .as_deref()
        .and_then(status::parse_status_field);
    match (status, from_diag) {
        (None, Some(d)) => status = Some(d),
        (Some(s), Some(d)) if d.class == s.class && !d.is_generic() => status = Some(d),
        _ => {}
    }
    let action = record
        .action
        .as_deref()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let action = action.split([' ', '(', ';']).next().unwrap_or_default();
    let outcome = match action {
        "failed" => classify::Outcome::Failed,
        "delayed" => classify::Outcome::Delayed,
        "delivered" | "relayed" | "expanded" => return None,
        _ => match status.map(|s| s.class).or(reply.map(|r| (r / 100) as u8)) {
            Some(2) => return None,
            Some(4) => classify::Outcome::Delayed,
            _ => classify::Outcome::Failed,
        },
    };
    let diag_lower = diag.to_ascii_lowercase();
    let mut evidence = classify::Evidence {
        outcome,
        status,
        reply,
        diagnostic: classify::remote_words(&diag_lower),
        context: "",
        command: classify::command_in(&diag_lower),
        recipient: &address,
    };
    if classify::needs_context(&evidence) {
        evidence.context = context.get();
        evidence.command = evidence
            .command
            .or_else(|| classify::command_in(evidence.context));
    }
    let mut verdict = classify::classify(&evidence);
    // A local delivery program's own words (`Diagnostic-Code: X-Unix; ...`).
    if diagnostic_type.is_some_and(|kind| kind.eq_ignore_ascii_case("x-unix")) {
        classify::from_local_mailer(&mut verdict, &diag_lower);
    }
    // `dns; gmail-smtp-in.l.google.com. (2607:f8b0::1a, the server for ...)`: the host only.
    let remote_mta = record
        .remote_mta
        .as_deref()
        .and_then(|v| dsn::strip_type(v).split([' ', '\t', '(']).next())
        .map(|host| host.trim_end_matches('.').to_string())
        .filter(|host| !host.is_empty());
    Some(Bounce {
        address,
        kind: verdict.kind,
        permanent: verdict.permanent,
        delayed: verdict.delayed,
        status: Some(verdict.status),
        reason: verdict.reason,
        diagnostic,
        remote_mta,
    })
}

/// One bounce per address, the first kept (a failure replaces an earlier delay of the same
/// address), at most [`MAX_BOUNCES`].
fn dedupe(bounces: Vec<Bounce>) -> Vec<Bounce> {
    let mut out: Vec<Bounce> = Vec::with_capacity(bounces.len().min(MAX_BOUNCES));
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for b in bounces {
        match index.get(&b.address) {
            Some(&i) if out[i].delayed && !b.delayed => {
                out[i] = b;
            }
            Some(_) => {}
            None if out.len() < MAX_BOUNCES => {
                index.insert(b.address.clone(), out.len());
                out.push(b);
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_drops_repeated_reply_prefixes() {
        assert_eq!(
            tidy_diagnostic("550-5.1.1 The email account that you tried to reach does\n not exist. Please try\n 550-5.1.1 double-checking.  Learn more at\n 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser x - gsmtp").as_deref(),
            Some("550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking. Learn more at https://support.google.com/mail/?p=NoSuchUser x - gsmtp")
        );
        assert_eq!(
            tidy_diagnostic("#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##").as_deref(),
            Some("550 5.1.1 RESOLVER.ADR.RecipNotFound; not found")
        );
        assert_eq!(tidy_diagnostic("  \n "), None);
    }

    #[test]
    fn too_large_is_refused() {
        let err = parse_with_limit(b"0123456789", 5).unwrap_err();
        assert_eq!(err, TooLarge { size: 10, limit: 5 });
        assert!(err.to_string().contains("over the 5-byte limit"));
    }

    #[test]
    fn serde_names() {
        let b = Bounce {
            address: "a@b.org".into(),
            kind: BounceKind::Hard,
            permanent: true,
            delayed: false,
            status: None,
            reason: Reason::MesgTooBig,
            diagnostic: None,
            remote_mta: None,
        };
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["kind"], "hard");
        assert_eq!(v["permanent"], true);
        assert_eq!(v["reason"], "mesgtoobig");
        assert_eq!(
            {
                let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
                keys.sort();
                keys
            },
            [
                "address",
                "delayed",
                "diagnostic",
                "kind",
                "permanent",
                "reason",
                "remote_mta",
                "status"
            ]
        );
    }

    fn addresses(raw: &str) -> Vec<String> {
        parse(raw.as_bytes())
            .unwrap()
            .bounces
            .into_iter()
            .map(|b| b.address)
            .collect()
    }

    #[test]
    fn a_bounce_attached_to_a_notice_that_names_nobody_is_read() {
        let raw = "From: Mail Delivery Subsystem <MAILER-DAEMON@relay.example.org>\r\n\
To: me@example.org\r\nSubject: Returned mail: User unknown\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n--outer\r\n\
Content-Type: text/plain\r\n\r\n\
----- The following addresses had permanent delivery errors -----\r\n\r\n--outer\r\n\
Content-Type: message/rfc822\r\n\r\n\
From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>\r\nTo: me@example.org\r\n\
Subject: Returned mail: User unknown\r\nMessage-ID: <inner@mx.example.net>\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"inner\"\r\n\r\n\
--inner\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n--inner\r\n\
Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n\
Final-Recipient: rfc822; ann@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n\
--inner--\r\n\r\n--outer--\r\n";
        assert_eq!(addresses(raw), ["ann@example.net"]);
        // The attached bounce's own addressee is not taken for the recipient either.
        let raw_to = raw.replace(
            "To: me@example.org\r\nSubject: Returned mail: User unknown\r\nMessage-ID",
            "To: other@example.org\r\nSubject: Returned mail: User unknown\r\nMessage-ID",
        );
        assert_ne!(raw_to, raw);
        assert_eq!(addresses(&raw_to), ["ann@example.net"]);
        // An attached message that is not a bounce is only the returned original, even when
        // it quotes delivery-status fields.
        let raw = raw
            .replace("Mail Delivery Subsystem <MAILER-DAEMON@mx", "Ann <ann@mx")
            .replace(
                "Subject: Returned mail: User unknown\r\nMessage-ID",
                "Subject: Hello\r\nMessage-ID",
            )
            .replace(
                "multipart/report; report-type=delivery-status",
                "multipart/mixed",
            )
            .replace("message/delivery-status", "text/plain");
        assert!(addresses(&raw).is_empty());
    }

    #[test]
    fn a_multipart_without_a_readable_boundary_is_read_as_text() {
        // The boundary parameter on a line of its own, as some gateways write it.
        let raw = "From: post_master@sms.example.com\r\nTo: me@example.org\r\n\
Subject: Re: Notice\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
Content-Type: multipart/alternative;\r\nboundary=\"b2\"\r\n\r\n--b2\r\n\
Content-Type: text/plain\r\n\r\nError: Invalid user address\r\n\r\n\
550 - Requested action not taken: no such user here\r\n\r\n\
  MAIL FROM: me@example.org\r\n  RCPT TO: 5551234@sms.example.com\r\n\r\n--b2--\r\n\r\n--b1--\r\n";
        assert_eq!(addresses(raw), ["5551234@sms.example.com"]);
    }

    #[test]
    fn an_ses_notification_by_mail_is_read_as_records() {
        let message = r#"{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":\"Permanent\",\"bouncedRecipients\":[{\"emailAddress\":\"bob@example.com\",\"status\":\"5.1.1\",\"diagnosticCode\":\"smtp; 550 5.1.1 user unknown\"}]}}"#;
        let raw = format!(
            "From: AWS Notifications <no-reply@sns.amazonaws.com>\r\nTo: me@example.org\r\n\
Subject: AWS Notification Message\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n\
{{\r\n  \"Type\" : \"Notification\",\r\n  \"Message\" : \"{message}\"\r\n}}\r\n"
        );
        let report = parse(raw.as_bytes()).unwrap();
        assert_eq!(report.bounces.len(), 1);
        assert_eq!(report.bounces[0].address, "bob@example.com");
        assert_eq!(report.bounces[0].status.as_deref(), Some("5.1.1"));
        let delivery = raw.replace("Bounce", "Delivery");
        assert!(addresses(&delivery).is_empty());
    }

    #[test]
    fn a_notice_naming_nobody_falls_back_to_the_returned_originals_only_addressee() {
        let raw = "From: Mail Delivery Subsystem <MAILER-DAEMON@example.com>\r\n\
Subject: Returned mail: Cannot send message for 5 days\r\nTo: me@example.org\r\n\r\n\
   ----- Transcript of session follows -----\r\n\
421 example.com (smtp)... Deferred: Connection timed out\r\n\r\n\
   ----- Unsent message follows -----\r\nFrom: me@example.org\r\n\
To: ann@example.com\r\nSubject: Hello\r\n\r\nHi\r\n";
        assert_eq!(addresses(raw), ["ann@example.com"]);
        // Two addressees: which one failed is not known.
        let two = raw.replace(
            "To: ann@example.com",
            "To: ann@example.com, bob@example.com",
        );
        assert!(addresses(&two).is_empty());
        // No failure wording: no bounce.
        let plain = raw
            .replace("Cannot send message for 5 days", "Hello")
            .replace("MAILER-DAEMON", "ann");
        assert!(addresses(&plain).is_empty());
    }

    #[test]
    fn classic_mac_line_endings_are_read() {
        let unix = "From: MAILER-DAEMON@mx.example.org\nTo: me@example.org\n\
Subject: failure notice\n\nHi. This is the qmail-send program at mx.example.org.\n\
I'm afraid I wasn't able to deliver your message to the following addresses.\n\
This is a permanent error; I've given up. Sorry it didn't work out.\n\n\
<ann@example.net>:\nSorry, no mailbox here by that name. (#5.1.1)\n";
        assert_eq!(addresses(unix), ["ann@example.net"]);
        assert_eq!(addresses(&unix.replace('\n', "\r")), ["ann@example.net"]);
        assert_eq!(addresses(&unix.replace('\n', "\r\n")), ["ann@example.net"]);
        assert_eq!(bare_cr_to_lf(b"a\rb\r\nc\r"), b"a\nb\r\nc\n");
    }

    #[test]
    fn a_record_without_a_diagnostic_takes_the_notice_s_line_about_its_address() {
        let raw = "From: Mailer Daemon <MAILER-DAEMON@df.example>\r\nTo: ana@df.example\r\n\
Subject: Delivery status notification: failed\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
Content-Type: text/plain\r\n\r\n    An error has occurred while attempting to deliver a message for\r\n\
    the following list of recipients:\r\n\r\n\
Bob@example.org: 550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown\r\n\
cy@example.org: delivery in progress, see below\r\n\r\n--b1\r\n\
Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; df.example\r\n\r\n\
Final-Recipient: rfc822; bob@example.org\r\nAction: failed\r\nStatus: 5.0.0\r\n\r\n\
Final-Recipient: rfc822; cy@example.org\r\nAction: failed\r\nStatus: 5.0.0\r\n\r\n--b1--\r\n";
        let r = parse(raw.as_bytes()).unwrap();
        assert_eq!(r.bounces.len(), 2);
        let bob = &r.bounces[0];
        assert_eq!(
            (bob.status.as_deref(), bob.reason, bob.kind),
            (Some("5.1.1"), Reason::UserUnknown, BounceKind::Hard)
        );
        assert!(bob.diagnostic.as_deref().unwrap().starts_with("550 5.1.1"));
        // A line that is no server reply is not taken for one.
        assert_eq!(r.bounces[1].diagnostic, None);
        assert_eq!(r.bounces[1].status.as_deref(), Some("5.0.0"));
    }

    #[test]
    fn final_recipient_fields_are_found_in_any_case() {
        assert!(quotes_final_recipient(
            "x\nFINAL-Recipient: rfc822; a@b.org"
        ));
        assert!(quotes_final_recipient("final-recipient:"));
        assert!(!quotes_final_recipient("final-recipient ; a@b.org: x"));
        assert!(!quotes_final_recipient("inal-recipient: é:"));
        assert!(!quotes_final_recipient(""));
    }

    #[test]
    fn message_id_lines() {
        assert_eq!(
            message_id_line("x\n  Message-ID: <abc@x.org>\n").as_deref(),
            Some("abc@x.org")
        );
        assert_eq!(
            message_id_line("Message-Id:abc@x.org").as_deref(),
            Some("abc@x.org")
        );
        assert_eq!(message_id_line("Message-ID:"), None);
    }
}

#[cfg(test)]
mod classify_text_tests {
    use super::*;

    #[test]
    fn smtp_replies_classify() {
        assert_eq!(
            classify_text(
                "550 5.1.1 <a@b.example>: Recipient address rejected: User unknown",
                true
            ),
            (
                BounceKind::Hard,
                Reason::UserUnknown,
                Some("5.1.1".into()),
                true
            )
        );
        assert_eq!(
            classify_text("552 5.2.2 Mailbox full", true),
            (
                BounceKind::Soft,
                Reason::MailboxFull,
                Some("5.2.2".into()),
                true
            )
        );
        // At send time notify knows the step: "user unknown" with X.2.1 at RCPT TO is the
        // address; after the message was sent, the recipient's filter.
        let disabled = "550 5.2.1 <a@b.example>... User Unknown";
        assert_eq!(classify_refusal(disabled, true).1, Reason::UserUnknown);
        assert_eq!(classify_refusal(disabled, false).1, Reason::Filtered);
        // A refusal about the sender is soft: the address is fine.
        let (kind, reason, _, permanent) = classify_text(
            "553 5.1.8 Domain of sender address x@y.example does not exist",
            true,
        );
        assert_eq!(
            (kind, reason, permanent),
            (BounceKind::Soft, Reason::Rejected, true)
        );
        assert_eq!(
            classify_text("mailbox is over quota", true).1,
            Reason::MailboxFull
        );
        assert_eq!(classify_text("still trying", false).1, Reason::Expired);
        assert_eq!(classify_known_text(""), None);
        assert_eq!(classify_known_text("it went wrong somehow"), None);
        assert_eq!(
            classify_known_text("550 5.1.1 user unknown").map(|k| k.0),
            Some(BounceKind::Hard)
        );
        assert_eq!(
            classify_known_text("mailbox is over quota").map(|k| k.0),
            Some(BounceKind::Soft)
        );
    }
}
