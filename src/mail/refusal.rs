//! Whose fault a refusal is. A server's "no" can be about one recipient (that person's address:
//! a bounce, recorded against them), about the sender (the account may not send as this address,
//! its quota is used up, the login failed, the message itself is refused: every recipient would
//! get the same answer, so nobody is to blame and the run must stop), or a request to slow down
//! (throttling: wait, send less, and do not count it as a failed attempt). Pure: it reads the
//! step of the transaction, the reply code and the reply text, nothing else.
//!
//! The rules, in order:
//! 1. Exchange Online's `SubmissionQuotaExceeded` is about the sender whatever its code
//!    (`554 5.2.0` is nominally a mailbox status); so is any other 5xx `STOREDRV` answer.
//! 2. Throttling (any 4xx or dropped connection that says so: `4.3.2`, `4.4.2`, "thread limit",
//!    "concurrent connections", "too many connections", "rate limit", "server busy") slows down.
//! 3. A 5xx at the greeting, EHLO, STARTTLS, AUTH or `MAIL FROM` is about the sender (also when
//!    the transport reports a refused login as a failed connection).
//! 4. A 5xx at `RCPT TO` is about that recipient, unless its enhanced status is one that only
//!    ever speaks of the sender (`5.7.30` basic auth off, `5.7.57` not authenticated, `5.7.60`
//!    and `5.2.252` send-as denied, `5.7.64` tenant relay denied, `5.7.70x`/`5.7.75x` tenant or
//!    account blocked, `5.7.50x` banned sender, `5.5.x` protocol).
//! 5. A 5xx at `DATA` or after the final dot is about the recipient only when its enhanced status
//!    names a recipient-side reason (`5.1.x` address, `5.2.1` disabled, `5.2.2` mailbox full) for
//!    a single-recipient message, as all of notify's are; anything else (`5.4.x` routing,
//!    `5.7.x` policy, `5.6.x` content, no enhanced status) would refuse everyone alike.

use super::transport::{SendError, Stage};
use crate::config::Config;

/// The same refusal (same step, enhanced status and words, the recipient's address taken out)
/// for this many recipients in a row is taken as a refusal of the sender: every recipient would
/// get it.
pub const STREAK: usize = 3;

/// Who a refusal is about, and so what the run does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// This recipient's address: mark the send failed, record a bounce, go on.
    Recipient,
    /// The sending account, its quota or the message: stop the run, mark nobody.
    Sender,
    /// The server asks for fewer connections or messages: wait and slow down.
    Throttle,
    /// Something passing (a 4xx, a lost connection): retry with backoff.
    Transient,
}

/// What kind of sender-side refusal, for the advice printed with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderTrouble {
    /// The daily or submission quota is used up.
    Quota,
    /// The account may not send as the envelope or From address.
    SendAs,
    /// The login or the account's right to submit mail.
    Login,
    /// The message or the sending setup, as a whole.
    Other,
}

/// An enhanced status code (RFC 3463) as its three numbers.
pub type Enhanced = (u16, u16, u16);

/// The first enhanced status code in `text`, e.g. `5.7.1` in `550 5.7.1 <x@y>: Relay denied`,
/// found as the bounce parser finds them.
pub fn enhanced_status(text: &str) -> Option<Enhanced> {
    crate::bounce::first_enhanced_status(text)
}

fn has(text: &str, needles: &[&str]) -> bool {
    let lower = text.to_ascii_lowercase();
    needles.iter().any(|n| lower.contains(n))
}

/// Exchange Online's quota answers.
fn is_quota(text: &str) -> bool {
    has(
        text,
        &[
            "submissionquotaexceeded",
            "quota exceeded for sender",
            "sending quota",
            "daily sending quota",
            "message rate limit exceeded",
            "recipient rate limit exceeded",
        ],
    )
}

fn is_throttle(text: &str, status: Option<Enhanced>) -> bool {
    matches!(
        status,
        Some((4, 3, 2)) | Some((4, 4, 2)) | Some((4, 7, 500))
    ) || has(
        text,
        &[
            "thread limit",
            "concurrent connection",
            "too many connections",
            "too many concurrent",
            "rate limit",
            "ratelimit",
            "throttl",
            "server busy",
            "try again later, closing connection",
        ],
    )
}

/// Enhanced statuses that speak only of the sender or the client, whatever the step.
fn is_sender_status(s: Enhanced) -> bool {
    matches!(
        s,
        (5, 7, 30)
            | (5, 7, 57)
            | (5, 7, 60)
            | (5, 7, 64)
            | (5, 7, 3)
            | (5, 7, 8)
            | (5, 7, 14)
            | (5, 7, 139)
            | (5, 2, 252)
            | (5, 7, 501..=503)
            | (5, 7, 700..=759)
            | (5, 5, _)
    )
}

/// Who `e` is about.
pub fn blame(e: &SendError) -> Blame {
    let text = e.message.as_str();
    let status = enhanced_status(text);
    if is_quota(text) {
        return Blame::Sender;
    }
    // A login refused for good when a connection is reopened in the middle of a run.
    if e.stage == Some(Stage::Session) && e.code.is_some_and(|c| (500..600).contains(&c)) {
        return Blame::Sender;
    }
    if !e.is_permanent() {
        if (e.is_transient() || e.is_connection()) && is_throttle(text, status) {
            return Blame::Throttle;
        }
        return Blame::Transient;
    }
    if has(text, &["storedrv", "sendasdenied"]) {
        return Blame::Sender;
    }
    if status.is_some_and(is_sender_status) {
        return Blame::Sender;
    }
    match e.stage {
        Some(Stage::Session) | Some(Stage::MailFrom) => Blame::Sender,
        Some(Stage::RcptTo) => Blame::Recipient,
        // DATA, the final dot, or a step not known: only a recipient-side status is a bounce.
        _ => match status {
            Some((5, 1, _)) | Some((5, 2, 1)) | Some((5, 2, 2)) => Blame::Recipient,
            _ => Blame::Sender,
        },
    }
}

/// The kind of sender-side trouble `e` reports, for advice.
pub fn sender_trouble(e: &SendError) -> SenderTrouble {
    let text = e.message.as_str();
    let status = enhanced_status(text);
    if is_quota(text) || (has(text, &["storedrv"]) && status == Some((5, 2, 0))) {
        SenderTrouble::Quota
    } else if has(text, &["sendas", "send as", "permission to send"])
        || matches!(status, Some((5, 7, 60)) | Some((5, 2, 252)))
        || e.stage == Some(Stage::MailFrom)
    {
        SenderTrouble::SendAs
    } else if matches!(
        status,
        Some((5, 7, 30)) | Some((5, 7, 57)) | Some((5, 7, 3)) | Some((5, 7, 8)) | Some((5, 7, 139))
    ) || e.stage == Some(Stage::Session)
    {
        SenderTrouble::Login
    } else {
        SenderTrouble::Other
    }
}

/// What a recipient refusal looks like once the recipient's own address is taken out of it:
/// the same key for several recipients in a row means the server says the same thing to
/// everyone. `None` for refusals that are about an address by their very status (`5.1.x`) or
/// that notify made itself (no reply code): those never make a streak.
pub fn streak_key(e: &SendError, recipient: &str) -> Option<String> {
    e.code?;
    if matches!(enhanced_status(&e.message), Some((5, 1, _))) {
        return None;
    }
    let lower = e.message.to_lowercase();
    let without = lower.replace(&recipient.to_lowercase(), "");
    let words: Vec<&str> = without.split_whitespace().collect();
    Some(format!("{:?} {}", e.stage, words.join(" ")))
}

/// A throttling answer about connections (Exchange's `4.3.2` concurrent connection or sender
/// thread limit): one connection fewer helps.
pub fn is_connection_limit(e: &SendError) -> bool {
    let lower = e.message.to_ascii_lowercase();
    lower.contains("concurrent")
        || lower.contains("thread limit")
        || lower.contains("too many connections")
        || enhanced_status(&e.message) == Some((4, 3, 2))
}

/// What to tell the admin when the server at `target` refused the sender, not a recipient
/// (`streak`: seen as the same refusal for [`STREAK`] recipients in a row): what it said and
/// what to check.
pub fn advice(e: &SendError, streak: bool, cfg: &Config, target: &str) -> String {
    let said = crate::inert::line(&e.message).into_owned();
    let what = if streak {
        format!(
            "the SMTP server at {target} gave the same refusal for {STREAK} recipients in a row, so it is about the sending setup, not those people: {said}"
        )
    } else {
        format!("the SMTP server at {target} refused the sender, not a recipient: {said}")
    };
    let todo = match sender_trouble(e) {
        SenderTrouble::Quota => format!(
            "The sending mailbox has used up its sending quota{}. Run the same command again once the quota has recovered (Exchange Online counts recipients over the last 24 hours).",
            match cfg.provider {
                Some(p) => format!(" ({}: {} recipients in 24 hours)", p.name, p.daily_recipients),
                None => String::new(),
            }
        ),
        SenderTrouble::SendAs if cfg.verp => format!(
            "Check that the account notify signs in with may send as the envelope sender ({}, with a +token per message) and as the From address ({}). \
             Exchange Online accepts a MAIL FROM only for addresses the mailbox may send as and may refuse the +token (VERP) address: \
             set `verp = false` in notify.toml (or NOTIFY_VERP=false) to send with {} itself as the envelope sender. \
             What that costs: bounces are then tied to their send only by the Message-ID they return, so a bounce that does not return the original headers is kept as unverified and flags nobody. \
             Then run the same command again.",
            cfg.bounce_address, cfg.from, cfg.bounce_address
        ),
        SenderTrouble::SendAs => format!(
            "Check that the account notify signs in with may send as the envelope sender ({}, verp = false) and as the From address ({}), then run the same command again.",
            cfg.bounce_address, cfg.from
        ),
        SenderTrouble::Login => "Check the SMTP credentials and that SMTP AUTH (client submission) is allowed for the mailbox, then run the same command again.".to_string(),
        SenderTrouble::Other => "Check the sending account, the relay and the message with the server's administrator, then run the same command again.".to_string(),
    };
    format!("{what}\nNobody was marked failed. {todo}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(stage: Stage, reply: &str) -> SendError {
        SendError::refused(stage, reply)
    }

    #[test]
    fn enhanced_statuses_are_found_and_lookalikes_are_not() {
        assert_eq!(enhanced_status("550 5.1.1 <a@b>: unknown"), Some((5, 1, 1)));
        assert_eq!(
            enhanced_status(
                "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed"
            ),
            Some((5, 2, 0))
        );
        assert_eq!(
            enhanced_status("432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"),
            Some((4, 3, 2))
        );
        assert_eq!(
            enhanced_status("550 (5.7.708) Access denied"),
            Some((5, 7, 708))
        );
        assert_eq!(enhanced_status("550 version 3.12.0 no"), None);
        assert_eq!(enhanced_status("550 user unknown"), None);
        assert_eq!(
            enhanced_status("250 2.0.0 Ok: queued as 1.2.3.4"),
            Some((2, 0, 0))
        );
    }

    #[test]
    fn refusals_about_the_sender_are_not_bounces() {
        let cases = [
            (Stage::MailFrom, "550 5.7.1 Client does not have permissions to send as this sender"),
            (Stage::MailFrom, "553 sorry, that domain isn't allowed"),
            (Stage::Message, "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception"),
            (Stage::RcptTo, "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"),
            (Stage::Data, "550 5.7.60 SMTP; Client does not have permissions to send as this sender"),
            (Stage::Message, "554 5.2.252 SendAsDenied; moped@austintexas.gov not allowed to send as moped-bounces+1-ab@austintexas.gov"),
            (Stage::Session, "535 5.7.3 Authentication unsuccessful"),
            (Stage::RcptTo, "530 5.7.57 Client not authenticated to send mail"),
            (Stage::Message, "550 5.7.30 Basic authentication is not supported for Client Submission"),
            (Stage::Message, "554 5.4.6 Hop count exceeded - possible mail loop"),
            (Stage::Message, "550 5.7.1 Message rejected as spam by Content Filtering"),
            (Stage::Message, "552 Transaction failed"),
            (Stage::Data, "554 5.6.0 Corrupt message content"),
            (Stage::RcptTo, "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP"),
        ];
        for (stage, reply) in cases {
            assert_eq!(
                blame(&err(stage, reply)),
                Blame::Sender,
                "{stage:?} {reply}"
            );
        }
    }

    #[test]
    fn refusals_about_one_recipient_are_bounces() {
        let cases = [
            (Stage::RcptTo, "550 5.1.1 <gone@austintexas.gov>: Recipient address rejected: User unknown"),
            (Stage::RcptTo, "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"),
            (Stage::RcptTo, "550 5.4.1 Recipient address rejected: Access denied"),
            (Stage::RcptTo, "552 5.2.2 Mailbox full"),
            (Stage::RcptTo, "550 no such user here"),
            (Stage::Message, "550 5.1.1 User unknown"),
            (Stage::Message, "552 5.2.2 Quota exceeded (mailbox for user is full)"),
            (Stage::Data, "550 5.2.1 Mailbox disabled"),
        ];
        for (stage, reply) in cases {
            assert_eq!(
                blame(&err(stage, reply)),
                Blame::Recipient,
                "{stage:?} {reply}"
            );
        }
    }

    #[test]
    fn throttling_slows_down_and_other_4xx_retry() {
        for (stage, reply) in [
            (Stage::Message, "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"),
            (Stage::Session, "421 4.3.2 The maximum number of concurrent server connections has exceeded a limit, closing transmission channel"),
            (Stage::MailFrom, "451 4.4.2 Timeout waiting for client input"),
            (Stage::RcptTo, "450 4.7.0 Too many connections from your host"),
            (Stage::Message, "451 4.7.500 Server busy. Please try again later"),
        ] {
            assert_eq!(blame(&err(stage, reply)), Blame::Throttle, "{reply}");
        }
        assert_eq!(
            blame(&err(Stage::RcptTo, "450 4.2.1 greylisted, come back later")),
            Blame::Transient
        );
        // A quota answer stops the run even as a 4xx: waiting minutes will not help.
        assert_eq!(
            blame(&err(Stage::Message, "452 4.5.3 SubmissionQuotaExceeded")),
            Blame::Sender
        );
    }

    #[test]
    fn advice_follows_the_kind_of_trouble() {
        let e = err(
            Stage::Message,
            "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
        );
        assert_eq!(sender_trouble(&e), SenderTrouble::Quota);
        let e = err(Stage::MailFrom, "550 5.7.1 not allowed");
        assert_eq!(sender_trouble(&e), SenderTrouble::SendAs);
        let e = err(Stage::Session, "535 5.7.3 Authentication unsuccessful");
        assert_eq!(sender_trouble(&e), SenderTrouble::Login);
        let e = err(Stage::Message, "554 5.7.1 spam");
        assert_eq!(sender_trouble(&e), SenderTrouble::Other);
    }

    #[test]
    fn advice_says_what_the_server_said_and_what_to_check() {
        let env = [(
            "NOTIFY_SMTP_URL".to_string(),
            "smtp://smtp.office365.com:587".to_string(),
        )]
        .into();
        let cfg = Config::load(
            std::path::Path::new("/nonexistent/notify.toml"),
            false,
            &env,
            &crate::config::Overrides::default(),
        )
        .unwrap();
        let quota = err(
            Stage::Message,
            "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException\x1b[2J",
        );
        let text = advice(&quota, false, &cfg, "smtp://smtp.office365.com:587");
        assert!(
            text.contains("refused the sender, not a recipient"),
            "{text}"
        );
        assert!(
            text.contains("office365: 10000 recipients in 24 hours"),
            "{text}"
        );
        assert!(text.contains("Nobody was marked failed"), "{text}");
        assert!(
            !text.contains('\x1b'),
            "the server's words are made inert: {text}"
        );
        let send_as = err(
            Stage::MailFrom,
            "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
        );
        // The office365 profile has VERP off: no `verp = false` to suggest.
        assert!(!cfg.verp);
        let text = advice(&send_as, false, &cfg, "x");
        assert!(
            text.contains("envelope sender (moped-bounces@austintexas.gov, verp = false)"),
            "{text}"
        );
        assert!(!text.contains("set `verp = false`"), "{text}");
        // With VERP on, a refused sender is a +token address: the advice says to turn it off,
        // and what that costs.
        let verp_on = Config {
            verp: true,
            ..cfg.clone()
        };
        for e in [
            &send_as,
            &err(Stage::Data, "550 5.7.60 SMTP; Client does not have permissions to send as this sender"),
            &err(Stage::Message, "554 5.2.252 SendAsDenied; moped@austintexas.gov not allowed to send as moped-bounces+1-ab@austintexas.gov"),
        ] {
            let text = advice(e, false, &verp_on, "x");
            assert!(
                text.contains("moped-bounces@austintexas.gov, with a +token"),
                "{text}"
            );
            assert!(text.contains("set `verp = false`"), "{text}");
            assert!(text.contains("tied to their send only by the Message-ID"), "{text}");
        }
        // Other sender-side trouble says nothing about VERP.
        assert!(!advice(&quota, false, &verp_on, "x").contains("verp"));
        let relay = err(Stage::RcptTo, "554 5.7.1 Relay access denied");
        let text = advice(&relay, true, &cfg, "x");
        assert!(
            text.contains("same refusal for 3 recipients in a row"),
            "{text}"
        );
    }

    #[test]
    fn a_streak_is_the_same_words_without_the_address() {
        let a = err(Stage::RcptTo, "554 5.7.1 <ann@x.org>: Relay access denied");
        let b = err(Stage::RcptTo, "554 5.7.1 <Bob@x.org>: Relay  access denied");
        assert_eq!(streak_key(&a, "ann@x.org"), streak_key(&b, "bob@x.org"));
        assert!(streak_key(&a, "ann@x.org").is_some());
        let c = err(
            Stage::RcptTo,
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; not found",
        );
        assert_eq!(streak_key(&c, "c@x.org"), None);
        let d = err(Stage::Data, "554 5.7.1 <ann@x.org>: Relay access denied");
        assert_ne!(streak_key(&a, "ann@x.org"), streak_key(&d, "ann@x.org"));
    }
}
