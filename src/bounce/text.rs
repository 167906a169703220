//! Bounces written in prose: the human-readable notices of MTAs that send no machine-readable
//! delivery-status part (qmail, old Sendmail, Exim without DSN, Yahoo/AOL, GroupWise, Lotus
//! Domino, Exchange text NDRs), and the fallback for reports whose DSN part names nobody.
//!
//! The approach, in order:
//! 1. Cut the text where the returned copy of the original message begins (its headers and body
//!    are not the bounce, and name the sender, not the failed recipient).
//! 2. Decide from recognised phrasings whether this is a failure, a delay warning, or an expiry,
//!    or nothing; weak phrasings count only if the headers already look like a bounce.
//! 3. Collect the addresses in what remains (minus the sender, header lines, role accounts),
//!    and give each the lines from its first mention to the next other address as its region.
//! 4. In each region pick the diagnostic: the server's reply (`550 5.1.1 ...`, with its
//!    continuation lines) if there is one, else the first line whose words explain the failure.
//!
//! It never reads beyond [`MAX_TEXT`] bytes and every step is linear in the text it reads.

use std::collections::HashSet;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::address;
use super::classify::{classify, command_in, names_a_reason, Evidence as Clues, Outcome};
use super::status::{find_enhanced, find_reply_code};
use super::{tidy_diagnostic, Bounce};

/// Prose beyond this many bytes is not read.
pub(crate) const MAX_TEXT: usize = 256 * 1024;
/// At most this many different addresses are reported from one prose bounce.
const MAX_CANDIDATES: usize = 100;
/// A region (the lines about one address) is at most this many lines.
const MAX_REGION_LINES: usize = 40;

/// Lines that introduce the returned copy of the original message; lower case.
const RETURNED_MARKERS: &[&str] = &[
    "below this line is a copy of the message",
    "original message follows",
    "unsent message follows",
    "this is a copy of the message",
    "original message header",
    "original message details",
    "-----original message-----",
    "----- original message -----",
    "message headers follow",
    "headers of the original message",
    "a copy of the original message",
    "content-type: message/rfc822",
    "returned message follows",
    // 1&1, MXLogic, qmail ("--- Enclosed is a copy of the message."), Lotus Notes, fml.
    "header of the original message",
    "copy of the message header",
    "enclosed is a copy of the message",
    "------- returned message",
    "original mail as follows",
];

/// Where a returned original that is not introduced by a marker line begins: a header block
/// opening a paragraph (`\n\nReceived: from ...`); lower case.
const HEADER_BLOCK_STARTS: &[&str] = &[
    "\n\nreceived: ",
    "\n\r\nreceived: ",
    "\n\nreturn-path: <",
    "\n\r\nreturn-path: <",
];

/// What a phrase says about the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Signal {
    /// A failure of some kind.
    Failed,
    /// Still being tried.
    Delayed,
    /// A permanent failure stated outright; wins over delay wording in the same notice.
    Permanent,
    /// Given up because the retry period ran out; wins over everything.
    Expired,
}

/// Recognised phrasings, lower case, whitespace collapsed. `strong` ones identify a bounce by
/// themselves; the others need headers that look like a bounce too.
const PHRASES: &[(&str, Signal, bool)] = &[
    // Expiry.
    ("retry timeout exceeded", Signal::Expired, true),
    (
        "retry time not reached for any host after a long failure period",
        Signal::Expired,
        true,
    ),
    ("in the queue too long", Signal::Expired, true),
    ("too long in the queue", Signal::Expired, true),
    ("delivery time expired", Signal::Expired, true),
    ("could not be delivered within", Signal::Expired, false),
    ("was not delivered within", Signal::Expired, false),
    ("was aborted after", Signal::Expired, false),
    ("cannot send message for", Signal::Expired, true),
    ("message expired", Signal::Expired, false),
    // Permanent failure stated outright.
    ("this is a permanent error", Signal::Permanent, true),
    ("permanent fatal error", Signal::Permanent, true),
    ("failed permanently", Signal::Permanent, true),
    ("permanent failure", Signal::Permanent, false),
    ("i've given up", Signal::Permanent, true),
    ("had permanent fatal errors", Signal::Permanent, true),
    ("had permanent delivery errors", Signal::Permanent, true),
    // Delay warnings.
    ("this is a warning only", Signal::Delayed, true),
    ("warning message only", Signal::Delayed, true),
    ("do not need to resend your message", Signal::Delayed, true),
    ("has not yet been delivered", Signal::Delayed, true),
    ("has not been delivered yet", Signal::Delayed, false),
    ("transient non-fatal error", Signal::Delayed, true),
    ("delivery attempts will continue", Signal::Delayed, true),
    ("will be retried", Signal::Delayed, false),
    ("will retry", Signal::Delayed, false),
    ("will continue trying", Signal::Delayed, false),
    ("will keep trying", Signal::Delayed, false),
    ("still trying", Signal::Delayed, false),
    ("still being retried", Signal::Delayed, false),
    ("could not send message for past", Signal::Delayed, true),
    ("delivery has been delayed", Signal::Delayed, true),
    ("delivery is delayed", Signal::Delayed, false),
    ("delivery delayed", Signal::Delayed, false),
    ("delayed mail", Signal::Delayed, false),
    ("message delayed", Signal::Delayed, false),
    ("(delay)", Signal::Delayed, false),
    ("temporary problem delivering", Signal::Delayed, true),
    ("a message is delayed for more than", Signal::Delayed, true),
    ("only a temporary failure report", Signal::Delayed, true),
    ("no action is required on your part", Signal::Delayed, false),
    // Failure notices of the common MTAs.
    ("i'm afraid i wasn't able to deliver", Signal::Failed, true),
    (
        "there was an error delivering your mail",
        Signal::Failed,
        true,
    ),
    (
        "an error has occurred while attempting to deliver",
        Signal::Failed,
        true,
    ),
    ("had delivery errors", Signal::Failed, true),
    ("had delivery problems", Signal::Failed, true),
    (
        "did not reach the following recipient",
        Signal::Failed,
        true,
    ),
    ("did not receive this message", Signal::Failed, false),
    // Japanese notices (au, m-FILTER, OCN): "could not be sent", "sending failed", "could not
    // be delivered".
    ("送信できませんでした", Signal::Failed, false),
    ("送信に失敗しました", Signal::Failed, false),
    ("配信できませんでした", Signal::Failed, false),
    // Exim, for an address it could not parse.
    (
        "addresses that were incorrectly constructed",
        Signal::Failed,
        true,
    ),
    (
        "i'm sorry to have to inform you that your message could not",
        Signal::Failed,
        true,
    ),
    (
        "could not be delivered to one or more of its recipients",
        Signal::Failed,
        true,
    ),
    ("the following address(es) failed", Signal::Failed, true),
    (
        "delivery has failed to these recipients",
        Signal::Failed,
        true,
    ),
    (
        "unable to deliver your message to the following address",
        Signal::Failed,
        true,
    ),
    (
        "delivery to the following recipient failed",
        Signal::Failed,
        true,
    ),
    (
        "delivery to the following recipients failed",
        Signal::Failed,
        true,
    ),
    ("undeliverable to the following", Signal::Failed, true),
    (
        "could not be delivered to the following",
        Signal::Failed,
        true,
    ),
    ("was not delivered to", Signal::Failed, true),
    ("wasn't delivered to", Signal::Failed, true),
    ("couldn't be delivered", Signal::Failed, true),
    ("could not be delivered to", Signal::Failed, false),
    ("could not be delivered", Signal::Failed, false),
    (
        "following recipient(s) cannot be reached",
        Signal::Failed,
        true,
    ),
    ("message was undeliverable", Signal::Failed, true),
    ("message could not be delivered", Signal::Failed, false),
    ("not be delivered", Signal::Failed, false),
    ("undeliverable", Signal::Failed, false),
    ("undelivered", Signal::Failed, false),
    ("delivery failed", Signal::Failed, false),
    ("delivery failure", Signal::Failed, false),
    ("failed to deliver", Signal::Failed, false),
    ("unable to deliver", Signal::Failed, false),
    ("returned to sender", Signal::Failed, false),
    ("non-delivery", Signal::Failed, false),
    ("nondelivery", Signal::Failed, false),
];

/// Lines whose addresses are not failed recipients: header fields of the returned message and
/// the envelope sender in a transcript. Compared with the start of the trimmed, lower-cased line.
const NON_RECIPIENT_LINES: &[&str] = &[
    "from:",
    "sender:",
    "reply-to:",
    "return-path:",
    "message-id:",
    "message id:",
    "references:",
    "in-reply-to:",
    "received:",
    "sender address:",
    "envelope-from",
    "dkim-signature:",
    "list-",
    "x-",
    ">>> mail from",
    "mail from:",
];

/// What `find_bounces` needs to know from the headers.
pub(crate) struct Context<'a> {
    /// The bounce's Subject.
    pub subject: &'a str,
    /// The headers look like a bounce (null sender, MAILER-DAEMON, a bounce subject).
    pub bounce_like: bool,
    /// Addresses that are not recipients: the bounce's own addressees and the original sender.
    pub excluded: &'a HashSet<String>,
    /// Recipients the headers name as failed (Exim's `X-Failed-Recipients`).
    pub failed_hint: &'a [String],
    /// The addressees of the returned original (its `To` and `Cc`): the failed recipient when
    /// it is the only one and the notice names nobody (Postfix's "Delivery report unavailable",
    /// old Sendmail's transcript of a host that never answered).
    pub returned_to: &'a [String],
    /// Where the returned copy of the original begins in the text ([`returned_at`] of it,
    /// found once by the caller, who reads the copy's header fields too).
    pub returned: Option<(usize, usize)>,
}

/// `text` up to `max` bytes, cut on a character boundary.
pub(crate) fn capped(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Where the returned copy of the original message begins, if it is marked: the byte offset
/// where the bounce's own text ends and the offset where the copy's first line starts (after
/// the marker line, or the header block itself).
/// `text` may be in any case: the markers are matched ignoring ASCII case, in one pass that
/// stops at the first.
fn returned_offset(text: &str) -> Option<(usize, usize)> {
    static MARKERS: LazyLock<AhoCorasick> = LazyLock::new(|| {
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(RETURNED_MARKERS.iter().chain(HEADER_BLOCK_STARTS))
            .expect("the marker table builds")
    });
    let found = MARKERS.find(text)?;
    let at = found.start();
    if found.pattern().as_usize() >= RETURNED_MARKERS.len() {
        // A header block: it starts after the blank line the match begins with.
        let m = &text[at..found.end()];
        let start = at + m.len() - m.trim_start().len();
        return Some((start, start));
    }
    let start = text[..at].rfind('\n').map_or(0, |nl| nl + 1);
    let next = text[at..].find('\n').map_or(text.len(), |nl| at + nl + 1);
    Some((start, next))
}

/// Builds the marker and phrase automata (see [`super::prepare`]).
pub(crate) fn prepare() {
    returned_offset("");
    detect("");
}

/// [`returned_offset`] of `text` cut to [`MAX_TEXT`], as [`find_bounces`] reads it.
pub(crate) fn returned_at(text: &str) -> Option<(usize, usize)> {
    returned_offset(capped(text, MAX_TEXT))
}

/// The text of the returned original (from its first line), if its start is marked.
#[cfg(test)]
pub(crate) fn returned_message(text: &str) -> Option<&str> {
    let text = capped(text, MAX_TEXT);
    let (_, at) = returned_offset(text)?;
    Some(&text[at..])
}

/// Lower-cased text with every run of whitespace made one space, for phrase matching.
pub(crate) fn collapse_whitespace(lower: &str) -> String {
    let mut out = String::with_capacity(lower.len());
    // Each word copied whole, a space after it when whitespace follows.
    let mut words = lower.split(char::is_whitespace).peekable();
    while let Some(word) = words.next() {
        if !word.is_empty() {
            out.push_str(word);
            if words.peek().is_some() {
                out.push(' ');
            }
        }
    }
    out
}

/// The strongest signal among the phrases found, and whether any found phrase is strong.
/// All the phrases are looked for in one pass.
fn detect(normalized: &str) -> (Option<Signal>, bool) {
    static FIND: LazyLock<AhoCorasick> = LazyLock::new(|| {
        AhoCorasick::new(PHRASES.iter().map(|(p, _, _)| *p)).expect("the phrase table builds")
    });
    let mut best: Option<Signal> = None;
    let mut strong = false;
    for m in FIND.find_overlapping_iter(normalized) {
        let (_, signal, is_strong) = PHRASES[m.pattern().as_usize()];
        best = best.max(Some(signal));
        strong |= is_strong;
    }
    (best, strong)
}

/// Leading whitespace width of a line.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

struct Line<'a> {
    text: &'a str,
    lower: &'a str,
}

/// Prose bounces in `text` (the human-readable part of a message, or the whole message when it
/// has no MIME structure).
pub(crate) fn find_bounces(text: &str, ctx: &Context<'_>) -> Vec<Bounce> {
    let text = capped(text, MAX_TEXT);
    let end = ctx
        .returned
        .map_or(text.len(), |(end, _)| end)
        .min(text.len());
    let end = if text.is_char_boundary(end) {
        end
    } else {
        returned_offset(text).map_or(text.len(), |(end, _)| end)
    };
    let section = &text[..end];
    let lower_section = section.to_ascii_lowercase();
    let lower = lower_section.as_str();

    let mut normalized = collapse_whitespace(&ctx.subject.to_ascii_lowercase());
    normalized.push(' ');
    normalized.push_str(&collapse_whitespace(lower));
    let (signal, strong) = detect(&normalized);
    let lines: Vec<Line<'_>> = split_lines(section, lower);
    let occurrences = addresses_by_line(&lines, ctx);
    let stated = occurrences.iter().any(|o| o.named == Named::StatedStrong);
    if !(strong || stated || ctx.bounce_like || !ctx.failed_hint.is_empty()) {
        return Vec::new();
    }
    // Without any recognised phrasing, only an address next to a failure code counts.
    let need_code = signal.is_none() && ctx.failed_hint.is_empty();
    let outcome = match signal {
        Some(Signal::Expired) => Outcome::Expired,
        Some(Signal::Delayed) => Outcome::Delayed,
        _ => Outcome::Failed,
    };

    let candidates: Vec<String> = if ctx.failed_hint.is_empty() && occurrences.is_empty() {
        // A notice that names no address at all: the returned original's only addressee.
        let mut to = ctx
            .returned_to
            .iter()
            .filter(|a| !ctx.excluded.contains(*a) && !address::is_role(a));
        match (signal, to.next(), to.next()) {
            (Some(_), Some(only), None) => vec![only.clone()],
            _ => Vec::new(),
        }
    } else if ctx.failed_hint.is_empty() {
        // Addresses the notice names as failed stand alone; mere mentions count only when it
        // names none.
        let named = occurrences.iter().any(|o| o.named > Named::Mentioned);
        let mut seen = HashSet::new();
        occurrences
            .iter()
            .filter(|o| (o.named > Named::Mentioned) == named)
            .filter(|o| seen.insert(o.address.as_str()))
            .map(|o| o.address.clone())
            .take(MAX_CANDIDATES)
            .collect()
    } else {
        ctx.failed_hint
            .iter()
            .take(MAX_CANDIDATES)
            .cloned()
            .collect()
    };
    let candidate_set: HashSet<&str> = candidates.iter().map(String::as_str).collect();

    let mut bounces = Vec::new();
    // Whether the notice words a failure reason anywhere, looked for once when needed.
    let mut explained: Option<bool> = None;
    let mut whole: Option<Evidence> = None;
    for address in &candidates {
        // The region starts where the notice names the address as failed, if it does.
        let first = occurrences
            .iter()
            .position(|o| o.address == *address && o.named > Named::Mentioned)
            .or_else(|| occurrences.iter().position(|o| o.address == *address))
            .map(|i| (i, occurrences[i].line));
        let region = match first {
            Some((i, line)) => {
                let next_other = occurrences[i + 1..]
                    .iter()
                    .find(|o| {
                        o.line > line
                            && o.address != *address
                            && candidate_set.contains(o.address.as_str())
                    })
                    .map_or(lines.len(), |o| o.line);
                line..next_other.min(line + MAX_REGION_LINES).min(lines.len())
            }
            // Not in the notice (named by the headers or the returned original): all of it,
            // read once for all such addresses.
            None => 0..lines.len(),
        };
        let mut evidence = if first.is_some() {
            let start = region.start;
            let mut e = examine(&lines[region], address);
            // Sendmail's summary of a refusal (`554 <bob@x.org>... Remote protocol error`)
            // follows the remote's own answer in its transcript (`<<< 550 Insecure Mail
            // Relay`): the answer is the diagnostic.
            if e.reply.is_some() {
                if let Some((code, answer)) = transcript_answer(&lines[..start]) {
                    e.reply = Some(code);
                    e.status = find_enhanced(answer).map(|(s, _)| s).or(e.status);
                    e.diagnostic = tidy_diagnostic(answer).or(e.diagnostic);
                }
            }
            e
        } else {
            whole
                .get_or_insert_with(|| examine(&lines[..], address))
                .clone()
        };
        // The only recipient of a notice whose reason is worded away from its address (before
        // it, as in `Error message below: 550 ...` then `RCPT TO: bob@x.org`): the notice's.
        if evidence.diagnostic.is_none() && candidates.len() == 1 && first.is_some() {
            let all = whole.get_or_insert_with(|| examine(&lines[..], address));
            if all.diagnostic.is_some() {
                evidence = all.clone();
            }
        }
        let named = first.is_none_or(|(i, _)| occurrences[i].named > Named::Mentioned);
        // An address the notice names as failed also counts when the notice explains a failure.
        if need_code
            && evidence.reply.is_none()
            && evidence.status.is_none()
            && !(named && *explained.get_or_insert_with(|| names_a_reason(lower)))
        {
            continue;
        }
        let status = evidence.status;
        let diag_lower = evidence
            .diagnostic
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let verdict = classify(&Clues {
            outcome,
            status,
            reply: evidence.reply,
            diagnostic: &diag_lower,
            context: if names_a_reason(&evidence.region_lower) {
                &evidence.region_lower
            } else {
                &normalized
            },
            command: command_in(&evidence.region_lower),
            recipient: address,
        });
        bounces.push(Bounce {
            address: address.clone(),
            kind: verdict.kind,
            permanent: verdict.permanent,
            delayed: verdict.delayed,
            status: Some(verdict.status),
            reason: verdict.reason,
            diagnostic: evidence.diagnostic,
            remote_mta: evidence.remote_mta,
        });
    }
    bounces
}

fn split_lines<'a>(section: &'a str, lower: &'a str) -> Vec<Line<'a>> {
    let mut lines = Vec::new();
    let mut start = 0;
    for piece in section.split_inclusive('\n') {
        let end = start + piece.len();
        let body = piece.trim_end_matches(['\n', '\r']).len();
        lines.push(Line {
            text: &section[start..start + body],
            lower: &lower[start..start + body],
        });
        start = end;
    }
    lines
}

/// How a notice names an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Named {
    /// Somewhere in a line.
    Mentioned,
    /// As a list item: the line begins with it (`<bob@x.org>:`, `  bob@x.org`, `* bob@x.org`).
    Listed,
    /// Right after words that say delivery to it failed, which are not a bounce by themselves
    /// (`RCPT TO:<bob@x.org>`, `Recipient address: bob@x.org`).
    Stated,
    /// Right after words that say delivery to it failed and make a bounce by themselves
    /// (`There was an error delivering your mail to <bob@x.org>`), or after `RCPT TO:` in a
    /// notice that quotes a failure reply.
    StatedStrong,
}

/// Words that name the failed recipient right after them (lower case, the colon and the
/// address's brackets or quotes left out), and whether they make a bounce by themselves.
const LEAD_INS: &[(&str, bool)] = &[
    ("error delivering your mail to", true),
    ("could not be delivered to", true),
    ("couldn't be delivered to", true),
    ("could not deliver to", true),
    ("could not deliver mail to", true),
    ("unable to deliver to", true),
    ("unable to deliver mail to", true),
    ("unable to deliver message to", true),
    ("undeliverable to", true),
    ("was not delivered to", true),
    ("wasn't delivered to", true),
    ("delivery failed to", true),
    ("failed to deliver to", true),
    ("delivery to", false),
    ("rcpt to", false),
    ("rcpt", false),
    ("failed recipient", false),
    ("failed recipients", false),
    ("recipient address", false),
];

/// Words that make every address on their line someone to ask (Japanese: "please contact",
/// "inquiries").
const CONTACT_AFTER: &[&str] = &["ご連絡", "連絡してください", "お問い合わせ", "問い合せ"];

/// One mention of a possible recipient.
struct Occurrence {
    line: usize,
    address: String,
    named: Named,
}

/// How the text before an address on its line names it.
fn named_by(before: &str, failure_reply: &mut impl FnMut() -> bool) -> Named {
    let lead = before.trim_end_matches([' ', '\t', '<', '"', '\'', '(', '[', ':', ';']);
    let bullet = lead.trim_start_matches(['-', '*', '•', '>', '\t', ' ']);
    // Sendmail's transcript: `550 <bob@x.org>... User unknown`, `554 5.1.1 <bob@x.org>...`.
    let reply = bullet.starts_with(['4', '5'])
        && bullet
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b' '));
    if bullet.is_empty() || reply {
        return Named::Listed;
    }
    for (words, strong) in LEAD_INS {
        let Some(head) = lead.strip_suffix(words) else {
            continue;
        };
        if head.chars().next_back().is_some_and(char::is_alphanumeric) {
            continue;
        }
        let rcpt = words.starts_with("rcpt");
        return if *strong || (rcpt && failure_reply()) {
            Named::StatedStrong
        } else {
            Named::Stated
        };
    }
    Named::Mentioned
}

/// Does the line look like a header field (`Name: value`)?
fn is_header_field(line: &str) -> bool {
    match line.split_once(':') {
        Some((name, _)) => {
            !name.is_empty()
                && name.len() <= 40
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }
        None => false,
    }
}

/// Every address that may be a failed recipient, in order, with how the notice names it.
/// Mentions skip the bounce's own addresses, role accounts and header lines of a quoted
/// message; an address the notice names as failed is kept even when it is one of its own
/// (a message sent to oneself, an anonymised sample) or a role account.
fn addresses_by_line(lines: &[Line<'_>], ctx: &Context<'_>) -> Vec<Occurrence> {
    let mut out = Vec::new();
    // A 4xx or 5xx reply anywhere in the notice, looked for once and only when needed.
    let mut reply_seen: Option<bool> = None;
    let mut failure_reply = || {
        *reply_seen.get_or_insert_with(|| {
            lines
                .iter()
                .any(|l| find_reply_code(l.text).is_some_and(|(c, _)| c >= 400))
        })
    };
    // The header field the line continues (a folded `To:` or `References:`), if any.
    let mut field_skipped = false;
    let mut in_field = false;
    for (i, line) in lines.iter().enumerate() {
        // A bounce forwarded inline is quoted (`> From: ...`): its lines are read unquoted.
        let body = match line.text.strip_prefix('>') {
            Some(rest) => {
                let rest = rest.trim_start_matches('>');
                rest.strip_prefix(' ').unwrap_or(rest)
            }
            None => line.text,
        };
        let folded = in_field && body.starts_with([' ', '\t']);
        if !folded {
            in_field = is_header_field(body);
            let trimmed = line.lower[line.text.len() - body.len()..].trim_start();
            field_skipped = NON_RECIPIENT_LINES.iter().any(|p| trimmed.starts_with(p));
        }
        if !line.text.contains('@') || field_skipped || line.lower.contains("mail from:") {
            continue;
        }
        // "contact helpdesk@example.com": a person to ask, not a recipient. Japanese notices
        // put the request after the address ("<support@x.jp>へご連絡ください").
        let contact = if CONTACT_AFTER.iter().any(|w| line.text.contains(w)) {
            0
        } else {
            line.lower.find("contact").map_or(usize::MAX, |at| at + 7)
        };
        for found in address::find_all(line.text) {
            let before = &line.lower[..found.start];
            if contact <= found.start {
                continue;
            }
            let named = if folded || in_field {
                Named::Mentioned
            } else {
                named_by(before, &mut failure_reply)
            };
            // A mail system's own address is never a recipient, however it is named; a
            // postmaster or abuse desk is when the notice names it as failed.
            if address::is_daemon(&found.address)
                || named == Named::Mentioned
                    && (ctx.excluded.contains(&found.address) || address::is_role(&found.address))
            {
                continue;
            }
            out.push(Occurrence {
                line: i,
                address: found.address,
                named,
            });
            if out.len() >= 2000 {
                return out;
            }
        }
    }
    out
}

/// What the lines about one address say.
#[derive(Clone)]
struct Evidence {
    diagnostic: Option<String>,
    status: Option<super::status::Status>,
    reply: Option<u16>,
    remote_mta: Option<String>,
    region_lower: String,
}

/// The remote's refusal on the last of `before` when that line is a transcript's answer
/// (`<<< 550 Insecure Mail Relay`): its reply code and text.
fn transcript_answer<'a>(before: &[Line<'a>]) -> Option<(u16, &'a str)> {
    let answer = before.last()?.text.trim_start().strip_prefix("<<< ")?;
    let (code, at) = find_reply_code(answer)?;
    (at == 0 && code >= 400).then_some((code, answer))
}

fn examine(region: &[Line<'_>], address: &str) -> Evidence {
    let mut diagnostic = None;
    let mut reply = None;
    let mut diag_line = region.len();
    for (i, line) in region.iter().enumerate() {
        if let Some((code, at)) = find_reply_code(line.text) {
            reply = Some(code);
            diag_line = i;
            diagnostic = Some(reply_text(region, i, code, at));
            break;
        }
    }
    if diagnostic.is_none() {
        let explained = region
            .iter()
            .position(|l| names_a_reason(l.lower))
            .or_else(|| region.iter().position(|l| find_enhanced(l.text).is_some()));
        if let Some(i) = explained {
            diag_line = i;
            diagnostic = tidy_diagnostic(&without_address(region[i].text, address));
        } else if let Some(first) = region.first() {
            // `<bob@x.org>... Deferred: Connection timed out`: what follows the address.
            let rest = without_address(first.text, address);
            // Exchange's `bob@x.org on Thu, 29 Apr 2010 ...`: the reason is on the indented
            // line below.
            let dated = rest.strip_prefix("on ").is_some_and(|d| {
                d.starts_with(|c: char| c.is_ascii_digit())
                    || d.get(..3).is_some_and(|day| {
                        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                            .iter()
                            .any(|w| day.eq_ignore_ascii_case(w))
                    })
            });
            let below = region.get(1).filter(|l| {
                dated && indent(l.text) > indent(first.text) && !l.text.trim().is_empty()
            });
            // qmail's `<bob@x.org>:` on a line of its own: the reason is the paragraph below.
            let alone = first
                .text
                .trim()
                .trim_matches(|c: char| "<>:;,\"'()[]*-• \t".contains(c))
                .eq_ignore_ascii_case(address);
            if let Some(below) = below {
                diag_line = 1;
                diagnostic = tidy_diagnostic(below.text);
            } else if alone {
                let paragraph: Vec<&str> = region[1..]
                    .iter()
                    .map(|l| l.text.trim())
                    .take_while(|t| !t.is_empty())
                    .take(5)
                    .collect();
                if !paragraph.is_empty() {
                    diag_line = paragraph.len();
                    diagnostic = tidy_diagnostic(&paragraph.join(" "));
                }
            } else if !dated
                && rest != first.text.trim()
                && rest.chars().filter(|c| c.is_alphabetic()).count() >= 3
            {
                diag_line = 0;
                diagnostic = tidy_diagnostic(&rest);
            }
        }
    }
    let status = diagnostic
        .as_deref()
        .and_then(find_enhanced)
        .or_else(|| region.iter().find_map(|l| find_enhanced(l.text)))
        .map(|(s, _)| s);
    let remote_mta = region
        .iter()
        .take(diag_line + 1)
        .find_map(|l| remote_host(l.text, l.lower));
    let mut region_lower = String::new();
    for line in region {
        if region_lower.len() > 4096 {
            break;
        }
        region_lower.push_str(line.lower);
        region_lower.push('\n');
    }
    Evidence {
        diagnostic,
        status,
        reply,
        remote_mta,
        region_lower,
    }
}

/// The server's reply starting at byte `at` of line `i`, with its continuation lines: further
/// lines of the same multi-line reply (`550-5.1.1 ...`) and lines indented deeper than it.
fn reply_text(region: &[Line<'_>], i: usize, code: u16, at: usize) -> String {
    let line = region[i].text;
    let mut text = line[at..].to_string();
    // A reply quoted as 'NNN ...' or "NNN ...": drop the closing quote.
    if let Some(q) = line[..at]
        .chars()
        .last()
        .filter(|c| *c == '\'' || *c == '"')
    {
        if text.trim_end().ends_with(q) {
            let keep = text.trim_end().len() - 1;
            text.truncate(keep);
        }
    }
    let code_str = code.to_string();
    let base_indent = indent(line);
    // A reply quoted after other words in an indented block (Exim's `    host mx [ip]: 550 ...`)
    // continues on the block's next lines at the same indent.
    let same_indent_continues = at > base_indent && base_indent > 0;
    for next in region.iter().skip(i + 1).take(8) {
        let t = next.text.trim();
        if t.is_empty() || t.starts_with(">>>") || t.starts_with("<<<") {
            break;
        }
        let same_reply =
            t.starts_with(&code_str) && matches!(t.as_bytes().get(3), Some(b'-' | b' '));
        if same_reply {
            // Sendmail's transcript repeats the reply it got (`<<< 550 x` then `550 x`).
            if line[at..].trim() == t {
                break;
            }
            // `550-5.7.26 more words`: the code and a repeated enhanced code are dropped.
            let rest = t[4..].trim_start();
            let rest = match rest.split_once(' ') {
                Some((first, after)) if is_enhanced_token(first) => after,
                None if is_enhanced_token(rest) => "",
                _ => rest,
            };
            text.push(' ');
            text.push_str(rest);
        } else if (indent(next.text) > base_indent
            || same_indent_continues && indent(next.text) == base_indent)
            && find_reply_code(t).is_none_or(|(_, p)| p > 0)
        {
            text.push(' ');
            text.push_str(t);
        } else {
            break;
        }
    }
    tidy_diagnostic(&text).unwrap_or_default()
}

/// An enhanced status code alone (`5.7.26`).
fn is_enhanced_token(word: &str) -> bool {
    let mut parts = word.split('.');
    let ok = |p: Option<&str>, max: usize| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit()))
    };
    matches!(word.as_bytes().first(), Some(b'2' | b'4' | b'5'))
        && ok(parts.next(), 1)
        && ok(parts.next(), 3)
        && ok(parts.next(), 3)
        && parts.next().is_none()
}

/// A line that begins with the address, minus the address and its punctuation; `(reason)`
/// unwrapped. Other lines are returned whole.
fn without_address(line: &str, address: &str) -> String {
    let t = line.trim().trim_start_matches(['<', '-', '*', '•', ' ']);
    let rest = match t.get(..address.len()) {
        Some(head) if head.eq_ignore_ascii_case(address) => &t[address.len()..],
        _ => return line.trim().to_string(),
    };
    let rest = rest
        .trim_start_matches(['>', ':', '.', ',', '-', ' ', '\t'])
        .trim();
    let rest = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(rest)
        .trim();
    if rest.is_empty() {
        line.trim().to_string()
    } else {
        rest.to_string()
    }
}

/// The remote host named in a line such as `host mx.example.com[192.0.2.1] said:`.
fn remote_host(text: &str, lower: &str) -> Option<String> {
    ["host ", "while talking to "]
        .iter()
        .find_map(|lead| host_after(text, lower, lead))
}

/// The host name right after `lead` (lower case) in a line.
fn host_after(text: &str, lower: &str, lead: &str) -> Option<String> {
    let mut from = 0;
    while let Some(rel) = lower.get(from..)?.find(lead) {
        let at = from + rel;
        from = at + lead.len();
        if at > 0 && lower.as_bytes()[at - 1].is_ascii_alphanumeric() {
            continue;
        }
        let rest = &text[at + lead.len()..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
            .unwrap_or(rest.len());
        let host = rest[..len].trim_end_matches('.');
        if host.contains('.')
            && host.chars().any(|c| c.is_ascii_alphabetic())
            && !host.starts_with('.')
            && host.len() <= 253
        {
            return Some(host.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`super::find_bounces`] with the returned original found as its callers find it.
    fn find_bounces(text: &str, ctx: &Context<'_>) -> Vec<Bounce> {
        let ctx = Context {
            returned: returned_at(text),
            ..*ctx
        };
        super::find_bounces(text, &ctx)
    }

    fn ctx<'a>(excluded: &'a HashSet<String>, bounce_like: bool) -> Context<'a> {
        Context {
            subject: "",
            bounce_like,
            excluded,
            failed_hint: &[],
            returned_to: &[],
            returned: None,
        }
    }

    #[test]
    fn whitespace_collapses_to_single_spaces() {
        assert_eq!(collapse_whitespace(""), "");
        assert_eq!(collapse_whitespace(" \t\n"), "");
        assert_eq!(collapse_whitespace("a"), "a");
        assert_eq!(collapse_whitespace("  a \t\r\n b\u{3000}c\u{b}"), "a b c ");
        assert_eq!(collapse_whitespace("é  ü"), "é ü");
    }

    #[test]
    fn phrases_rank_expired_over_permanent_over_delay() {
        assert_eq!(
            detect("this is a warning only. will be retried").0,
            Some(Signal::Delayed)
        );
        assert_eq!(
            detect("has not yet been delivered ... this is a permanent error").0,
            Some(Signal::Permanent)
        );
        assert_eq!(
            detect("retry timeout exceeded; will retry").0,
            Some(Signal::Expired)
        );
        assert_eq!(detect("hello, see you on monday").0, None);
        assert!(!detect("the parcel was undeliverable").1);
    }

    #[test]
    fn the_returned_original_is_cut_off() {
        let text = "I'm afraid I wasn't able to deliver your message to the following addresses.\n\
This is a permanent error; I've given up. Sorry it didn't work out.\n\n<bob@example.com>:\n\
Sorry, no mailbox here by that name. (#5.1.1)\n\n--- Below this line is a copy of the message.\n\n\
From: sender@example.org\nTo: carol@example.net\n";
        let ex = HashSet::new();
        let b = find_bounces(text, &ctx(&ex, false));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].address, "bob@example.com");
        assert_eq!(b[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(
            b[0].diagnostic.as_deref(),
            Some("Sorry, no mailbox here by that name. (#5.1.1)")
        );
        assert!(returned_message(text).is_some_and(|r| r.contains("From: sender@example.org")));
    }

    #[test]
    fn weak_phrases_need_bounce_headers() {
        let text = "The parcel was undeliverable, ask jim@example.com\n";
        let ex = HashSet::new();
        assert!(find_bounces(text, &ctx(&ex, false)).is_empty());
    }

    #[test]
    fn reply_continuations_are_joined() {
        let text = "<bob@example.com>: host mx.example.com[192.0.2.1] said: 550 5.1.1\n    \
<bob@example.com>: Recipient address rejected: User unknown in local\n    recipient table (in reply to RCPT TO command)\n";
        let ex = HashSet::new();
        let b = find_bounces(text, &ctx(&ex, true));
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0].diagnostic.as_deref(),
            Some("550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in local recipient table (in reply to RCPT TO command)")
        );
        assert_eq!(b[0].remote_mta.as_deref(), Some("mx.example.com"));
    }

    #[test]
    fn a_transcript_s_answer_is_the_diagnostic_not_sendmail_s_summary() {
        let text = "   ----- Transcript of session follows -----\n\
While talking to mx.example.edu:\n>>> MAIL From:<ana@example.jp>\n<<< 550 Insecure Mail Relay\n\
554 <kit@example.edu>... Remote protocol error\n";
        let ex = HashSet::new();
        let b = find_bounces(text, &ctx(&ex, true));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].diagnostic.as_deref(), Some("550 Insecure Mail Relay"));
        assert_eq!(b[0].reason, crate::bounce::Reason::NoRelaying);
    }

    #[test]
    fn multi_line_replies_and_exim_blocks_are_joined() {
        let text = "There was an error delivering your mail to <ann@example.net>.\n\n\
mx.example.net [192.0.2.1] did not like our final DATA:\n\
550-5.7.26 Unauthenticated email is not accepted due to the domain's\n\
550-5.7.26 DMARC policy.\n550 5.7.26  https://example.net/dmarc - gsmtp\n";
        let ex = HashSet::new();
        let b = find_bounces(text, &ctx(&ex, false));
        assert_eq!(
            b[0].diagnostic.as_deref(),
            Some("550 5.7.26 Unauthenticated email is not accepted due to the domain's DMARC policy. https://example.net/dmarc - gsmtp")
        );
        let text = "The following address(es) failed:\n\n  ann@example.net\n    \
SMTP error from remote mail server after RCPT TO:<ann@example.net>:\n    \
host 192.0.2.2 [192.0.2.2]: 550 5.1.1 <ann@example.net>:\n    \
Recipient address rejected: User unknown in local recipient table\n\n\
------ This is a copy of the message, including all the headers. ------\n";
        let b = find_bounces(text, &ctx(&ex, false));
        assert_eq!(
            b[0].diagnostic.as_deref(),
            Some("550 5.1.1 <ann@example.net>: Recipient address rejected: User unknown in local recipient table")
        );
    }

    #[test]
    fn an_address_alone_on_its_line_takes_the_paragraph_below() {
        let text = "Your mail message to the following address(es) could not be delivered.\n\n\
<ann@example.com>:\nchild status 100...The e-mail message could not be delivered\n\
because the user's mailfolder is full.\n\nSee you.\n";
        let ex = HashSet::new();
        let b = find_bounces(text, &ctx(&ex, true));
        assert_eq!(
            b[0].diagnostic.as_deref(),
            Some("child status 100...The e-mail message could not be delivered because the user's mailfolder is full.")
        );
    }

    #[test]
    fn sender_and_contacts_are_not_recipients() {
        let text = "Delivery has failed to these recipients or groups:\n\nbob@example.com\n\
#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##\n\nFrom: me@city.gov\n\
If the problem continues, contact help@city.gov.\n";
        let mut ex = HashSet::new();
        ex.insert("sender@city.gov".to_string());
        let b = find_bounces(text, &ctx(&ex, false));
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0].diagnostic.as_deref(),
            Some("550 5.1.1 RESOLVER.ADR.RecipNotFound; not found")
        );
    }
    fn addresses(b: &[Bounce]) -> Vec<&str> {
        b.iter().map(|b| b.address.as_str()).collect()
    }

    fn excluding(addresses: &[&str]) -> HashSet<String> {
        addresses.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn an_address_stated_as_failed_counts_even_when_it_is_our_own() {
        // DragonFly Mail Agent: the failed recipient is also the bounce's X-Original-To.
        let text = "This is the DragonFly Mail Agent at mx.example.org.\n\n\
There was an error delivering your mail to <ann@example.net>.\n\n\
mx.example.net [192.0.2.7] did not like our RCPT TO:\n\
550 5.1.1 <ann@example.net>: Recipient address rejected: User unknown\n";
        let ex = excluding(&["ann@example.net", "me@example.org"]);
        let b = find_bounces(text, &ctx(&ex, false));
        assert_eq!(addresses(&b), ["ann@example.net"]);
        assert_eq!(b[0].status.as_deref(), Some("5.1.1"));
        // A mere mention of one of our own addresses is still not a recipient.
        let text =
            "Delivery failed.\n\nYour message to ann@example.net was returned: 550 5.1.1 gone\n";
        assert!(find_bounces(text, &ctx(&ex, true)).is_empty());
    }

    #[test]
    fn listed_addresses_win_over_mentions() {
        // Exchange 2003: the original's To in a summary, then the recipient that failed.
        let text = "Your message\n\n  To:      team@example.net\n  Subject: Minutes\n\n\
did not reach the following recipient(s):\n\n\
bob@example.net on Thu, 2 May 2024 10:00:00 -0000\n    The recipient name is not recognized\n";
        let ex = HashSet::new();
        let b = find_bounces(text, &ctx(&ex, true));
        assert_eq!(addresses(&b), ["bob@example.net"]);
        assert_eq!(
            b[0].diagnostic.as_deref(),
            Some("The recipient name is not recognized")
        );
        // OpenSMTPD: one recipient per line, then the returned original.
        let text = "    Hi!\n\n    This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n\n\
    An error has occurred while attempting to deliver a message for\n    the following list of recipients:\n\n\
carol@example.net: Domain does not exist\n\n    Below is a copy of the original message:\n\n\
Received: from [127.0.0.1] (localhost [127.0.0.1]);\n\tfor <carol@example.net>;\n\
From: Me <me@example.org>\nTo: Other <dave@example.net>\n";
        assert_eq!(
            addresses(&find_bounces(text, &ctx(&ex, false))),
            ["carol@example.net"]
        );
    }

    #[test]
    fn sendmail_transcript_lines_list_their_recipients() {
        let text = "   ----- Transcript of session follows -----\n\
554 <ann@example.edu>... Remote protocol error: Connection reset by peer\n\
550 example.net (smtp)... 550 Host unknown\n\
554 <bob@example.net>... 550 Host unknown (Authoritative answer from name server)\n\
>>> RCPT To:<carol@example.jp>\n<<< 550 No such user here.\n550 <carol@example.jp>... User unknown\n";
        let ex = HashSet::new();
        assert_eq!(
            addresses(&find_bounces(text, &ctx(&ex, true))),
            ["ann@example.edu", "bob@example.net", "carol@example.jp"]
        );
    }

    #[test]
    fn a_listed_role_account_is_a_recipient_a_mentioned_one_is_not() {
        let text = "   ----- The following addresses had delivery problems -----\n\
postmaster@mx.example.jp\n\n   ----- Non-delivered information -----\n\
The number of messages in recipient's mailbox exceeded the local limit.\n\
For help write to postmaster@example.jp\n";
        let ex = HashSet::new();
        assert_eq!(
            addresses(&find_bounces(text, &ctx(&ex, false))),
            ["postmaster@mx.example.jp"]
        );
    }

    #[test]
    fn quoted_header_blocks_name_nobody() {
        // 1&1: the original's header after its own marker; its Received lines name other
        // addresses of the original's envelope.
        let text = "A message that you sent could not be delivered to one or more of\n\
its recipients. This is a permanent error.\n\nThe following address failed:\n\n\
ann@example.org\n\nFor the following reason:\n\nMail size limit exceeded.\n\n\
--- The header of the original message is following. ---\n\n\
Received: from mx.example.co.jp\n\tfor <ann@example.org>; Thu, 2 May 2024\n\
Received: (from me@localhost)\n    for other@example.net; Thu, 2 May 2024\n";
        let ex = HashSet::new();
        assert_eq!(
            addresses(&find_bounces(text, &ctx(&ex, false))),
            ["ann@example.org"]
        );
        // No marker: a header block that opens a paragraph begins the original.
        let text = "Delivery failed: 550 5.1.1 unknown\n<ann@example.org>\n\n\
Received: from a.example by b.example\n\tfor <other@example.net>;\nTo: other@example.net\n";
        assert_eq!(
            addresses(&find_bounces(text, &ctx(&ex, true))),
            ["ann@example.org"]
        );
        // Folded header lines (`References:`, `To:`) do not list recipients.
        let text = "Delivery failed\n<ann@example.org>\nTo: a@example.org,\n  b@example.org\n\
References: <x1@example.org>\n  <1234.5678@mx.example.org>\n";
        assert_eq!(
            addresses(&find_bounces(text, &ctx(&ex, true))),
            ["ann@example.org"]
        );
    }

    #[test]
    fn a_listed_address_without_failure_words_is_no_bounce() {
        // An auto-reply with a null sender that ends in a signature address.
        let text = "Ich bin ab Montag wieder im Haus.\nkarl@example.de\n";
        let ex = HashSet::new();
        assert!(find_bounces(text, &ctx(&ex, true)).is_empty());
        // The same shape with a failure explained is one (au/ezweb notices).
        let text = "The user(s) account is disabled.\n\n<karl@example.de>\n";
        assert_eq!(
            addresses(&find_bounces(text, &ctx(&ex, true))),
            ["karl@example.de"]
        );
        // A Japanese notice: "sending to the following address failed"; a help desk to
        // contact is not a recipient.
        let text = "以下のメールアドレスへの送信に失敗しました。\n\
何か質問がございましたら、<support@isp.example.jp>へご連絡ください。\n\
Your message to hanako@example.jp was refused.\n";
        assert_eq!(
            addresses(&find_bounces(text, &ctx(&ex, true))),
            ["hanako@example.jp"]
        );
    }

    #[test]
    fn a_bounce_forwarded_inline_is_read_through_its_quotes() {
        let text = "Forward the message.\n\nBegin forwarded message:\n\n\
> From: Mail Delivery Subsystem <MAILER-DAEMON>\n> To: <me@example.jp>\n\
> Subject: Returned mail: see transcript for details\n\
> Message-Id: <200904290210.n3S2A@mx.example.jp>\n> References: <a1@example.jp>\n\
>  <9f3e.77@example.jp>\n>\n\
>    ----- The following addresses had permanent fatal errors -----\n> <bob@example.com>\n\
>     (reason: 550 5.1.1 <bob@example.com>... User unknown)\n\
>>>> RCPT To:<bob@example.com>\n> MAILER-DAEMON@mx.example.jp\n";
        let ex = excluding(&["me@example.jp"]);
        let b = find_bounces(text, &ctx(&ex, false));
        assert_eq!(addresses(&b), ["bob@example.com"]);
        assert_eq!(b[0].status.as_deref(), Some("5.1.1"));
    }

    #[test]
    fn one_long_line_of_addresses_stays_bounded() {
        let mut text = String::from("Delivery failed: 550 5.1.1 unknown\n");
        for i in 0..20_000 {
            text.push_str(&format!("<u{i}@example.com>, "));
        }
        text.push('\n');
        let ex = HashSet::new();
        let t = std::time::Instant::now();
        let b = find_bounces(&text, &ctx(&ex, true));
        assert!(b.len() <= MAX_CANDIDATES);
        assert!(t.elapsed().as_secs() < 5, "took {:?}", t.elapsed());
    }

    #[test]
    fn rcpt_to_with_a_failure_reply_makes_a_bounce() {
        let text = "Error: Invalid user address\n\nError message below:\n\
550 - Requested action not taken: no such user here\n\nMessage details:\n  Subject: Test\n  \
MAIL FROM: me@example.org\n  RCPT TO: 5551234@sms.example.com\n  From: Me <me@example.org>\n";
        let ex = HashSet::new();
        let b = find_bounces(text, &ctx(&ex, false));
        assert_eq!(addresses(&b), ["5551234@sms.example.com"]);
        assert_eq!(
            b[0].diagnostic.as_deref(),
            Some("550 - Requested action not taken: no such user here")
        );
        // Without a failure reply, RCPT TO alone is no bounce.
        let text = "Message details:\n  RCPT TO: 5551234@sms.example.com\n";
        assert!(find_bounces(text, &ctx(&ex, false)).is_empty());
    }
}
