//! Bounce policy: when bounces mean an account needs an admin's attention (only verified bounces
//! count: a hard one at once, soft ones when they repeat; delay warnings never), and what the
//! admin should do about it. Pure: it reads bounce rows and returns decisions; `store` keeps the
//! flag and `ledger` applies it. It never deactivates anybody: Moped's admins do that.

use chrono::{DateTime, Duration, Utc};

use crate::bounce::{Action, BounceKind, Reason};
use crate::store::BounceRow;

/// The two numbers of the policy (`soft_bounce_limit`, `soft_bounce_days` in notify.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Soft bounces on this many different notices flag the account...
    pub soft_limit: u32,
    /// ...when they all fall within this many days; older ones stop counting.
    pub soft_days: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            soft_limit: 3,
            soft_days: 30,
        }
    }
}

impl Policy {
    /// The policy notify.toml sets.
    pub fn of(cfg: &crate::config::Config) -> Policy {
        Policy {
            soft_limit: cfg.soft_bounce_limit,
            soft_days: cfg.soft_bounce_days,
        }
    }

    /// Should an account with these counted bounces be flagged, and why? A hard bounce (the
    /// address is gone or wrong: [`BounceKind::of`]) flags at once; soft bounces flag once they
    /// reach `soft_limit` different notices within `soft_days` of `now`. Bounces not tied to a
    /// notice count as one notice each. A delay warning (`delayed`: the sender is still trying)
    /// is no failure and never counts. Unverified bounces (not proven to be about one of our
    /// messages) never count, not even toward the soft limit.
    pub fn verdict(&self, bounces: &[BounceRow], now: DateTime<Utc>) -> Option<String> {
        let bounces: Vec<&BounceRow> = bounces.iter().filter(|b| b.verified).collect();
        if let Some(hard) = bounces.iter().rev().find(|b| b.kind == BounceKind::Hard) {
            return Some(format!(
                "hard bounce ({}{}){}",
                hard.reason.as_str(),
                hard.status
                    .as_deref()
                    .map(|s| format!(", {s}"))
                    .unwrap_or_default(),
                hard.campaign
                    .as_deref()
                    .map(|c| format!(" on {c}"))
                    .unwrap_or_default()
            ));
        }
        let since = now - Duration::days(i64::from(self.soft_days));
        let mut notices: Vec<String> = bounces
            .iter()
            .filter(|b| b.kind == BounceKind::Soft && !b.delayed)
            .filter(|b| {
                DateTime::parse_from_rfc3339(&b.occurred_at)
                    .map(|t| t.with_timezone(&Utc) >= since)
                    .unwrap_or(false)
            })
            .map(|b| {
                b.campaign
                    .clone()
                    .unwrap_or_else(|| format!("bounce #{}", b.id))
            })
            .collect();
        notices.sort();
        notices.dedup();
        (notices.len() as u32 >= self.soft_limit.max(1)).then(|| {
            format!(
                "soft bounces on {} different notices within {} days ({})",
                notices.len(),
                self.soft_days,
                notices.join(", ")
            )
        })
    }
}

/// What the admin should do about an account whose flag a bounce of `reason` decided: one of
/// the four actions ([`Action::text`]: deactivate in Moped, fix the address in Moped, ask IT to
/// let our mail through, wait), always the reason's own ([`Reason::action`]), so that the
/// review, `bounces show`, the web page and the release checklist say the same.
pub fn suggested_action(reason: Reason) -> Action {
    reason.action()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(
        id: i64,
        kind: BounceKind,
        campaign: Option<&str>,
        days_ago: i64,
        now: DateTime<Utc>,
    ) -> BounceRow {
        BounceRow {
            id,
            address: "a@austintexas.gov".into(),
            kind,
            permanent: kind == BounceKind::Hard,
            delayed: false,
            status: Some(match kind {
                BounceKind::Hard => "5.1.1".into(),
                BounceKind::Soft => "4.2.2".into(),
            }),
            reason: match kind {
                BounceKind::Hard => Reason::UserUnknown,
                BounceKind::Soft => Reason::MailboxFull,
            },
            diagnostic: None,
            remote_mta: None,
            contact_id: Some(1),
            campaign: campaign.map(str::to_string),
            matched_by: crate::store::MatchedBy::Verp,
            origin: "test".into(),
            occurred_at: crate::store::ts(now - Duration::days(days_ago)),
            verified: true,
            unverified_reason: None,
        }
    }

    #[test]
    fn a_hard_bounce_flags_at_once() {
        let now = Utc::now();
        let why = Policy::default()
            .verdict(
                &[b(
                    1,
                    BounceKind::Hard,
                    Some("release-notes/v3.12.0"),
                    0,
                    now,
                )],
                now,
            )
            .unwrap();
        assert!(
            why.contains("hard bounce (userunknown, 5.1.1) on release-notes/v3.12.0"),
            "{why}"
        );
    }

    #[test]
    fn soft_reasons_never_flag_at_once_whatever_the_remote_said() {
        let now = Utc::now();
        let p = Policy::default();
        // A spam filter, a sender refusal, an expired queue: soft, even with a 5xx, so one of
        // them (or two) flags nobody.
        for reason in [Reason::Filtered, Reason::Rejected, Reason::Expired] {
            let mut r = b(1, BounceKind::Soft, Some("a"), 0, now);
            r.reason = reason;
            r.permanent = true;
            r.status = Some("5.7.1".into());
            assert_eq!(p.verdict(&[r.clone()], now), None, "{reason:?}");
            let mut again = r.clone();
            again.id = 2;
            again.campaign = Some("b".into());
            assert_eq!(p.verdict(&[r, again], now), None, "{reason:?}");
        }
    }

    #[test]
    fn delay_warnings_never_count_toward_the_soft_rule() {
        let now = Utc::now();
        let p = Policy::default();
        let delayed = |id, campaign: &str| {
            let mut r = b(id, BounceKind::Soft, Some(campaign), 1, now);
            r.delayed = true;
            r.reason = Reason::Expired;
            r.status = Some("4.4.7".into());
            r
        };
        // Delay warnings on three notices: no flag.
        let warnings = [delayed(1, "a"), delayed(2, "b"), delayed(3, "c")];
        assert_eq!(p.verdict(&warnings, now), None);
        // Two soft failures and a warning on a third notice: still two notices.
        let mixed = [
            b(4, BounceKind::Soft, Some("a"), 1, now),
            b(5, BounceKind::Soft, Some("b"), 1, now),
            delayed(6, "c"),
        ];
        assert_eq!(p.verdict(&mixed, now), None);
        // A third real soft failure flags, and the reason names only the failures.
        let mut three = mixed.to_vec();
        three.push(b(7, BounceKind::Soft, Some("d"), 1, now));
        let why = p.verdict(&three, now).unwrap();
        assert!(
            why.ends_with("3 different notices within 30 days (a, b, d)"),
            "{why}"
        );
    }

    #[test]
    fn soft_bounces_need_three_notices_within_the_window() {
        let now = Utc::now();
        let p = Policy::default();
        let two = [
            b(1, BounceKind::Soft, Some("a"), 1, now),
            b(2, BounceKind::Soft, Some("b"), 2, now),
        ];
        assert_eq!(p.verdict(&two, now), None);
        // The same notice twice is one notice.
        let same = [
            two[0].clone(),
            two[1].clone(),
            b(3, BounceKind::Soft, Some("b"), 3, now),
        ];
        assert_eq!(p.verdict(&same, now), None);
        let three = [
            two[0].clone(),
            two[1].clone(),
            b(3, BounceKind::Soft, Some("c"), 3, now),
        ];
        assert!(p
            .verdict(&three, now)
            .unwrap()
            .contains("3 different notices"));
        // Older soft bounces stop counting.
        let old = [
            two[0].clone(),
            two[1].clone(),
            b(3, BounceKind::Soft, Some("c"), 45, now),
        ];
        assert_eq!(p.verdict(&old, now), None);
    }

    #[test]
    fn unverified_bounces_never_count() {
        let now = Utc::now();
        let p = Policy::default();
        let unverified = |mut r: BounceRow| {
            r.verified = false;
            r.unverified_reason = Some("no token and no Message-ID of ours".into());
            r
        };
        let hard = unverified(b(1, BounceKind::Hard, None, 0, now));
        assert_eq!(p.verdict(std::slice::from_ref(&hard), now), None);
        // Two verified soft bounces and an unverified one on a third notice: not enough.
        let soft = [
            b(2, BounceKind::Soft, Some("a"), 1, now),
            b(3, BounceKind::Soft, Some("b"), 1, now),
            unverified(b(4, BounceKind::Soft, Some("c"), 1, now)),
            hard,
        ];
        assert_eq!(p.verdict(&soft, now), None);
        let mut third = soft[2].clone();
        third.verified = true;
        assert!(p
            .verdict(&[soft[0].clone(), soft[1].clone(), third], now)
            .is_some());
    }

    #[test]
    fn actions_follow_the_reason_and_are_one_of_four() {
        let four = [
            "deactivate in Moped",
            "fix the address in Moped",
            "ask IT to let our mail through",
            "wait",
        ];
        for &r in Reason::ALL {
            assert!(four.contains(&suggested_action(r).text()), "{r:?}");
        }
        assert_eq!(suggested_action(Reason::UserUnknown), Action::Deactivate);
        assert_eq!(suggested_action(Reason::HasMoved), Action::FixAddress);
        assert_eq!(suggested_action(Reason::HostUnknown), Action::FixAddress);
        assert_eq!(suggested_action(Reason::Filtered), Action::AskIt);
        assert_eq!(suggested_action(Reason::Blocked), Action::AskIt);
        assert_eq!(suggested_action(Reason::MailboxFull), Action::Wait);
        assert_eq!(suggested_action(Reason::Expired), Action::Wait);
    }
}
