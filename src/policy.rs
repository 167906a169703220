//! Bounce policy: when bounces mean an account needs an admin's attention (only verified bounces
//! count), and what the admin should do about it. Pure: it reads bounce rows and returns
//! decisions; `store` keeps the flag and `ledger` applies it. It never deactivates anybody:
//! Moped's admins do that.

use chrono::{DateTime, Duration, Utc};

use crate::bounce::{BounceKind, Reason};
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

    /// Should an account with these counted bounces be flagged, and why? A hard bounce flags at
    /// once; soft bounces flag once they reach `soft_limit` different notices within `soft_days`
    /// of `now`. Bounces not tied to a notice count as one notice each. Unverified bounces (not
    /// proven to be about one of our messages) never count, not even toward the soft limit.
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
            .filter(|b| b.kind == BounceKind::Soft)
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

/// What the admin should do about an account, from its latest bounce.
pub fn suggested_action(kind: BounceKind, reason: Reason, status: Option<&str>) -> &'static str {
    let moved = status.is_some_and(|s| s == "5.1.6");
    match (kind, reason) {
        _ if moved => "fix the address in Moped (mailbox moved)",
        (BounceKind::Hard, Reason::UserUnknown) => "deactivate in Moped, or fix the address",
        (BounceKind::Hard, Reason::HostUnknown) => "fix the address in Moped (no such domain)",
        (BounceKind::Hard, Reason::Expired) => "check the address; deactivate if unused",
        (BounceKind::Hard, _) => "check the address; deactivate if they left",
        (BounceKind::Soft, _) => "wait and retry; contact them if it persists",
    }
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
            why.contains("hard bounce (user-unknown, 5.1.1) on release-notes/v3.12.0"),
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
    fn actions_follow_the_reason() {
        assert!(
            suggested_action(BounceKind::Hard, Reason::UserUnknown, Some("5.1.1"))
                .starts_with("deactivate")
        );
        assert!(
            suggested_action(BounceKind::Hard, Reason::UserUnknown, Some("5.1.6"))
                .starts_with("fix the address")
        );
        assert!(
            suggested_action(BounceKind::Soft, Reason::MailboxFull, None)
                .starts_with("wait and retry")
        );
    }
}
