//! The vocabulary of bounce verdicts: [`Reason`] (sisimai's reason names, the field's common
//! language for why mail bounced) and
//! [`BounceKind`] (hard exactly when the address itself is gone or wrong). Names only: which
//! evidence gives which reason is `classify`'s business.

use serde::Serialize;

/// Whether a bounce says the address is bad (hard) or only that this delivery failed (soft).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BounceKind {
    /// The address itself is gone or wrong and will stay so: unknown user, unknown host, the
    /// mailbox has moved, or a host that permanently accepts no mail ([`BounceKind::of`]).
    Hard,
    /// Everything else: the address may be fine and this delivery did not happen (mailbox
    /// full, filtered, rejected, blocked, expired, network trouble, a delay warning...).
    Soft,
}

impl BounceKind {
    /// The name stored and shown (`hard`, `soft`), the same as its serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            BounceKind::Hard => "hard",
            BounceKind::Soft => "soft",
        }
    }

    /// The kind [`as_str`](Self::as_str) names; `None` for any other text.
    pub fn from_name(name: &str) -> Option<BounceKind> {
        [BounceKind::Hard, BounceKind::Soft]
            .into_iter()
            .find(|k| k.as_str() == name)
    }

    /// The kind a reason implies: hard exactly for `userunknown`, `hostunknown`, `hasmoved`,
    /// and `notaccept` when the failure is `permanent` (a host that says it takes no mail at
    /// all, with a 5xx); soft for everything else.
    pub fn of(reason: Reason, permanent: bool) -> BounceKind {
        match reason {
            Reason::UserUnknown | Reason::HostUnknown | Reason::HasMoved => BounceKind::Hard,
            Reason::NotAccept if permanent => BounceKind::Hard,
            _ => BounceKind::Soft,
        }
    }
}

/// What the admin should do about an account after a bounce of this reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The person's mailbox is gone: deactivate the user in Moped.
    Deactivate,
    /// The address is wrong (domain, forwarding, syntax): correct it in Moped.
    FixAddress,
    /// The recipient's side refused our mail (filter, block, policy, authentication): ask the
    /// City's IT or the recipient's mail admin to let it through.
    AskIt,
    /// Nothing is wrong with the account: wait; it will get the next notice.
    Wait,
}

impl Action {
    /// The suggestion as the review shows it.
    pub fn text(self) -> &'static str {
        match self {
            Action::Deactivate => "deactivate in Moped",
            Action::FixAddress => "fix the address in Moped",
            Action::AskIt => "ask IT to let our mail through",
            Action::Wait => "wait",
        }
    }
}

macro_rules! reasons {
    ($($variant:ident => $name:literal, $action:ident, $doc:literal;)*) => {
        /// Why a recipient bounced, in sisimai's vocabulary (its reason names, lower case),
        /// A delay warning has a reason too (sisimai's `expired` when it says no more); that it
        /// is only a warning is [`crate::bounce::Bounce::delayed`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum Reason {
            $(
                #[doc = $doc]
                #[serde(rename = $name)]
                $variant,
            )*
        }

        impl Reason {
            /// Every reason, in the vocabulary's order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            /// The name stored and shown (`userunknown`), the same as its serde name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }

            /// The one thing to do about the account.
            pub fn action(self) -> Action {
                match self {
                    $(Reason::$variant => Action::$action,)*
                }
            }
        }
    };
}

reasons! {
    UserUnknown => "userunknown", Deactivate, "No such mailbox at the recipient's host.";
    HostUnknown => "hostunknown", FixAddress, "No such domain, or no host that takes its mail.";
    HasMoved => "hasmoved", FixAddress, "The mailbox has moved and there is no forwarding.";
    NotAccept => "notaccept", FixAddress, "The host accepts no mail at all (null MX).";
    MailboxFull => "mailboxfull", Wait, "The mailbox is full or over its quota.";
    Suspend => "suspend", Wait, "The mailbox is disabled or suspended for now.";
    Filtered => "filtered", AskIt, "The recipient's own filter refused the message.";
    Rejected => "rejected", AskIt, "The remote refused the envelope sender.";
    Blocked => "blocked", AskIt, "The remote refused the sending host (IP, blocklist).";
    SpamDetected => "spamdetected", AskIt, "The remote judged the message spam.";
    VirusDetected => "virusdetected", AskIt, "The remote found a virus in the message.";
    PolicyViolation => "policyviolation", AskIt, "The message broke the remote's policy.";
    SecurityError => "securityerror", AskIt, "A security requirement failed (authentication, TLS).";
    AuthFailure => "authfailure", AskIt, "SPF, DKIM or DMARC failed.";
    BadReputation => "badreputation", AskIt, "The sending host's reputation is too low.";
    RequirePtr => "requireptr", AskIt, "The sending host has no reverse DNS (PTR) record.";
    NotCompliantRfc => "notcompliantrfc", AskIt, "The message is not RFC-compliant.";
    ContentError => "contenterror", AskIt, "The remote could not read the message's content.";
    NoRelaying => "norelaying", AskIt, "The remote refused to relay the message.";
    FailedStartTls => "failedstarttls", AskIt, "The TLS handshake (STARTTLS) failed.";
    MesgTooBig => "mesgtoobig", Wait, "The message exceeds a size limit.";
    ExceedLimit => "exceedlimit", Wait, "The message exceeds the mailbox's size limit.";
    Expired => "expired", Wait, "The sender gave up after its retry period.";
    NetworkError => "networkerror", Wait, "The remote could not be reached (DNS, routing, connection).";
    SystemError => "systemerror", Wait, "An error on the remote system.";
    SystemFull => "systemfull", Wait, "The remote system's disk is full.";
    TooManyConn => "toomanyconn", Wait, "Too many connections to the remote.";
    RateLimited => "ratelimited", Wait, "The remote limits how fast it takes mail.";
    Speeding => "speeding", Wait, "The remote rejected us for sending too fast.";
    SyntaxError => "syntaxerror", Wait, "An SMTP command was malformed.";
    MailerError => "mailererror", Wait, "A local mailer program failed.";
    OnHold => "onhold", Wait, "Failed, but the report does not say enough to judge it.";
    Undefined => "undefined", Wait, "A failure that says nothing more specific.";
}

/// Names earlier versions stored and that bounce CSVs may still carry, with today's reason.
pub const OLD_NAMES: &[(&str, Reason)] = &[
    ("user-unknown", Reason::UserUnknown),
    ("mailbox-full", Reason::MailboxFull),
    ("host-unknown", Reason::HostUnknown),
    ("policy", Reason::PolicyViolation),
    ("message-too-large", Reason::MesgTooBig),
    ("other", Reason::Undefined),
    ("delayed", Reason::Expired),
];

impl Reason {
    /// The reason a name gives: today's names (`userunknown`), case-insensitive, and the names
    /// earlier versions used ([`OLD_NAMES`], e.g. `user-unknown`). `None` for any other text.
    pub fn from_name(name: &str) -> Option<Reason> {
        let name = name.trim();
        Reason::ALL
            .iter()
            .copied()
            .find(|r| r.as_str().eq_ignore_ascii_case(name))
            .or_else(|| {
                OLD_NAMES
                    .iter()
                    .find(|(old, _)| old.eq_ignore_ascii_case(name))
                    .map(|(_, r)| *r)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serde_names_and_read_back() {
        for k in [BounceKind::Hard, BounceKind::Soft] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
            assert_eq!(BounceKind::from_name(k.as_str()), Some(k));
        }
        for &r in Reason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert_eq!(Reason::from_name(r.as_str()), Some(r));
            assert_eq!(Reason::from_name(&r.as_str().to_uppercase()), Some(r));
        }
        assert_eq!(BounceKind::from_name("Hard"), None);
        assert_eq!(Reason::from_name("unknown"), None);
        assert_eq!(Reason::from_name(""), None);
    }

    #[test]
    fn old_names_still_read() {
        assert_eq!(Reason::from_name("user-unknown"), Some(Reason::UserUnknown));
        assert_eq!(Reason::from_name("policy"), Some(Reason::PolicyViolation));
        assert_eq!(
            Reason::from_name("message-too-large"),
            Some(Reason::MesgTooBig)
        );
        assert_eq!(Reason::from_name("other"), Some(Reason::Undefined));
        assert_eq!(Reason::from_name("delayed"), Some(Reason::Expired));
        assert_eq!(Reason::from_name("expired"), Some(Reason::Expired));
    }

    #[test]
    fn hard_exactly_when_the_address_is_gone_or_wrong() {
        for &r in Reason::ALL {
            let hard = matches!(
                r,
                Reason::UserUnknown | Reason::HostUnknown | Reason::HasMoved
            );
            assert_eq!(
                BounceKind::of(r, true) == BounceKind::Hard,
                hard || r == Reason::NotAccept,
                "{r:?}"
            );
            assert_eq!(BounceKind::of(r, false) == BounceKind::Hard, hard, "{r:?}");
        }
    }

    #[test]
    fn every_hard_reason_changes_the_account() {
        for &r in Reason::ALL {
            if BounceKind::of(r, true) == BounceKind::Hard {
                assert!(
                    matches!(r.action(), Action::Deactivate | Action::FixAddress),
                    "{r:?}"
                );
            }
        }
    }
}
