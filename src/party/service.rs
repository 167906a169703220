//! The party service proper: which release a maintenance notice is for (given, or the upcoming
//! one), what `maintenance-scheduled` means given the window recorded so far (a first warning, a
//! rerun, a move, a cancel), the window a start notice ends at, the start an end notice measures
//! from, and the facts of a release for the checklist and the timeline. Reads and writes through
//! the store; renders nothing and prints nothing: notes for the person come back as text.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::facts::{FlaggedAccount, ReleaseFacts, WindowChange, WindowVersion};
use crate::bounce::Reason;
use crate::config::Config;
use crate::errors::UsageError;
use crate::notice::{format_time, Notice, ReleaseRef, WindowEvent};
use crate::release::{self, Release, Version};
use crate::store::Store;

/// The release a maintenance notice is for, and how it was chosen.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub release: ReleaseRef,
    /// The notes, when the release has a notes file.
    pub notes: Option<Release>,
    /// Said in the summary: "given", "the upcoming release: ...".
    pub why: String,
}

pub use crate::notice::notes_url;

fn reference(cfg: &Config, version: Version, notes: Option<&Release>) -> ReleaseRef {
    let version = version.to_string();
    ReleaseRef {
        name: notes.map(|n| n.name.clone()).unwrap_or_default(),
        notes_url: notes_url(cfg, &version),
        version,
    }
}

/// The notes file of `v`, if there is one (a bad one is an error: it names file and line).
fn notes_of(cfg: &Config, v: Version) -> anyhow::Result<Option<Release>> {
    match release::known_versions(&cfg.releases)
        .into_iter()
        .find(|(k, _)| *k == v)
    {
        Some((_, path)) => Ok(Some(release::load(&path, Some(v))?)),
        None => Ok(None),
    }
}

/// The release `given` (as the team writes it: `v3.12`, `3.12.0`, `v3.12.0`), or without one the
/// upcoming release: the newest notes file whose notes have not reached anybody yet, else the
/// next minor version after the newest one known.
pub async fn resolve_release(
    store: Option<&Store>,
    cfg: &Config,
    given: Option<&str>,
) -> anyhow::Result<Resolved> {
    if let Some(g) = given {
        let v = Version::parse(g).ok_or_else(|| {
            UsageError(format!(
                "--release `{}` is not a version (expected something like v3.12.0, 3.12.0 or v3.12)",
                crate::inert::line(g)
            ))
        })?;
        let notes = notes_of(cfg, v)?;
        return Ok(Resolved {
            release: reference(cfg, v, notes.as_ref()),
            notes,
            why: "as given".into(),
        });
    }
    let known = release::known_versions(&cfg.releases);
    let delivered: Vec<Version> = match store {
        Some(store) => store
            .releases_with_notes_delivered()
            .await?
            .iter()
            .filter_map(|v| Version::parse(v))
            .collect(),
        None => Vec::new(),
    };
    if let Some((v, path)) = known.iter().rev().find(|(v, _)| !delivered.contains(v)) {
        let notes = release::load(path, Some(*v))?;
        return Ok(Resolved {
            release: reference(cfg, *v, Some(&notes)),
            notes: Some(notes),
            why: "the upcoming release: the newest release notes not sent yet".into(),
        });
    }
    let newest = known.iter().map(|(v, _)| *v).chain(delivered).max();
    match newest {
        Some(n) => {
            let v = Version(n.0, n.1 + 1, 0);
            Ok(Resolved {
                release: reference(cfg, v, None),
                notes: None,
                why: format!("the upcoming release: the next minor version after {n} (every notes file was sent)"),
            })
        }
        None => Err(UsageError(format!(
            "no release notes in {} and none sent yet: say which release with --release VERSION",
            cfg.releases.display()
        ))
        .into()),
    }
}

/// What `maintenance-scheduled` is asked for.
#[derive(Debug, Clone, Copy)]
pub enum WindowRequest {
    /// The window is (now) these times.
    At {
        start: DateTime<Tz>,
        end: DateTime<Tz>,
    },
    /// Call the window off.
    Cancel,
}

/// The notice a `maintenance-scheduled` run sends, and the window version to record first
/// (`None`: a rerun of the version as it stands, which finishes its sending).
#[derive(Debug, Clone)]
pub struct WindowPlan {
    pub notice: Notice,
    pub record: Option<WindowVersion>,
    /// One line for the person: what this run is.
    pub note: String,
}

/// The stable UID of a release's window.
fn window_uid(cfg: &Config, version: &str) -> String {
    crate::calendar::window_uid(version, cfg.from.mailbox().email.as_ref())
}

/// Work out what `maintenance-scheduled` means for `release` given the window recorded so far
/// (`versions`, oldest first). Pure.
pub fn plan_window(
    versions: &[WindowVersion],
    cfg: &Config,
    release: &ReleaseRef,
    request: WindowRequest,
    now: DateTime<Utc>,
) -> Result<WindowPlan, UsageError> {
    let tz = cfg.timezone;
    let local = |t: DateTime<Utc>| t.with_timezone(&tz);
    let uid = window_uid(cfg, &release.version);
    let notice =
        |v: &WindowVersion, previous: Option<&WindowVersion>, recipients_of: Vec<String>| {
            Notice::MaintenanceScheduled {
                release: release.clone(),
                start: local(v.start),
                end: local(v.end),
                change: v.change,
                event: WindowEvent {
                    uid: uid.clone(),
                    sequence: v.sequence,
                    stamp: v.recorded_at,
                },
                previous: previous.map(|p| (local(p.start), local(p.end))),
                recipients_of,
            }
        };
    // Who was told of the window before version `n`: everyone with a send in an earlier version.
    let told_before =
        |n: usize| -> Vec<String> { versions[..n].iter().map(|v| v.campaign.clone()).collect() };
    let last = versions.last();
    let next_sequence = last.map_or(0, |l| l.sequence + 1);
    let key = |change: WindowChange, sequence: u32| {
        let probe = Notice::MaintenanceScheduled {
            release: release.clone(),
            start: local(now),
            end: local(now),
            change,
            event: WindowEvent {
                uid: uid.clone(),
                sequence,
                stamp: now,
            },
            previous: None,
            recipients_of: Vec::new(),
        };
        probe.campaign_key()
    };
    match (request, last) {
        (WindowRequest::Cancel, None) => Err(UsageError(format!(
            "no maintenance window is scheduled for {}: nothing to cancel",
            release.version
        ))),
        (WindowRequest::Cancel, Some(l)) if l.change == WindowChange::Cancelled => {
            let n = versions.len() - 1;
            Ok(WindowPlan {
                notice: notice(l, versions.get(n.wrapping_sub(1)), told_before(n)),
                record: None,
                note: format!(
                    "the window for {} was cancelled {}: finishing that cancel",
                    release.title(),
                    format_time(&local(l.recorded_at))
                ),
            })
        }
        (WindowRequest::Cancel, Some(l)) => {
            let v = WindowVersion {
                sequence: next_sequence,
                change: WindowChange::Cancelled,
                start: l.start,
                end: l.end,
                recorded_at: now,
                campaign: key(WindowChange::Cancelled, next_sequence),
            };
            Ok(WindowPlan {
                notice: notice(&v, Some(l), told_before(versions.len())),
                note: format!(
                    "cancelling the window for {} ({}): everyone told of it gets the cancel (SEQUENCE {})",
                    release.title(),
                    format_time(&local(l.start)),
                    v.sequence
                ),
                record: Some(v),
            })
        }
        (WindowRequest::At { start, end }, last) => {
            let (s, e) = (start.with_timezone(&Utc), end.with_timezone(&Utc));
            match last {
                Some(l) if l.change != WindowChange::Cancelled && l.start == s && l.end == e => {
                    let n = versions.len() - 1;
                    let previous = n.checked_sub(1).and_then(|p| versions.get(p));
                    let recipients = if l.change == WindowChange::Moved {
                        told_before(n)
                    } else {
                        Vec::new()
                    };
                    Ok(WindowPlan {
                        notice: notice(l, previous, recipients),
                        record: None,
                        note: format!(
                            "the window for {} is already {} to {}: finishing that notice",
                            release.title(),
                            format_time(&start),
                            format_time(&end)
                        ),
                    })
                }
                Some(l) if l.change != WindowChange::Cancelled => {
                    let v = WindowVersion {
                        sequence: next_sequence,
                        change: WindowChange::Moved,
                        start: s,
                        end: e,
                        recorded_at: now,
                        campaign: key(WindowChange::Moved, next_sequence),
                    };
                    Ok(WindowPlan {
                        notice: notice(&v, Some(l), told_before(versions.len())),
                        note: format!(
                            "the window for {} moves from {} to {}: everyone told of it gets the update (SEQUENCE {})",
                            release.title(),
                            format_time(&local(l.start)),
                            format_time(&start),
                            v.sequence
                        ),
                        record: Some(v),
                    })
                }
                // The first window, or a new one after a cancel: a warning to the whole audience.
                _ => {
                    let v = WindowVersion {
                        sequence: next_sequence,
                        change: WindowChange::Scheduled,
                        start: s,
                        end: e,
                        recorded_at: now,
                        campaign: if next_sequence == 0 {
                            key(WindowChange::Scheduled, 0)
                        } else {
                            format!("{}/{next_sequence}", key(WindowChange::Scheduled, 0))
                        },
                    };
                    Ok(WindowPlan {
                        notice: notice(&v, None, Vec::new()),
                        note: format!(
                            "scheduling the window for {}: {} to {} (SEQUENCE {})",
                            release.title(),
                            format_time(&start),
                            format_time(&end),
                            v.sequence
                        ),
                        record: Some(v),
                    })
                }
            }
        }
    }
}

/// Record the planned window version. Another run that recorded a change first wins; this one
/// stops and says to run again (nothing was sent).
pub async fn record_window(store: &Store, release: &str, v: &WindowVersion) -> anyhow::Result<()> {
    if store.record_window(release, v).await? {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "another run changed the maintenance window of {release} at the same moment; nothing was sent: run the command again"
        ))
    }
}

/// Every recorded version of `release`'s window (none without a database).
pub async fn window_versions(
    store: Option<&Store>,
    release: &str,
) -> anyhow::Result<Vec<WindowVersion>> {
    Ok(match store {
        Some(store) => store.window_versions(release).await?,
        None => Vec::new(),
    })
}

/// The window as it stands for `release`, unless it was cancelled.
pub async fn current_window(
    store: Option<&Store>,
    release: &str,
) -> anyhow::Result<Option<WindowVersion>> {
    Ok(window_versions(store, release)
        .await?
        .pop()
        .filter(|v| v.change != WindowChange::Cancelled))
}

/// When maintenance for `release` started, from its start notice.
pub async fn maintenance_started(
    store: &Store,
    release: &str,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    Ok(store
        .release_notices(release)
        .await?
        .into_iter()
        .filter(|(n, _, _)| n.notice == "maintenance-start")
        .filter_map(|(_, starts, _)| starts)
        .next_back())
}

/// Everything the checklist and the timeline show for `version`.
pub async fn facts(store: &Store, cfg: &Config, version: Version) -> anyhow::Result<ReleaseFacts> {
    let v = version.to_string();
    let notes = notes_of(cfg, version)?;
    let known = release::known_versions(&cfg.releases);
    let previous = known.iter().map(|(k, _)| *k).filter(|k| *k < version).max();
    let window = store.window_versions(&v).await?;
    let mut notices = Vec::new();
    let (mut started, mut ended) = (None, None);
    for (n, starts, ends) in store.release_notices(&v).await? {
        match n.notice.as_str() {
            "maintenance-start" if n.delivered() > 0 => started = starts.or(started),
            "maintenance-end" if n.delivered() > 0 => ended = ends.or(ended),
            _ => {}
        }
        notices.push(n);
    }
    let since = match previous {
        Some(p) => store.notes_first_delivered(&p.to_string()).await?,
        None => None,
    };
    let flagged = store
        .flags_since(since)
        .await?
        .into_iter()
        .map(|f| {
            // The reason as today's name (a row from before migration 0010 has it already), and
            // its action: one of the four the review suggests.
            let reason = f.reason.as_deref().and_then(Reason::from_name);
            let action = match reason {
                Some(r) => crate::policy::suggested_action(r).text().to_string(),
                None => "check the account in Moped".to_string(),
            };
            FlaggedAccount {
                name: format!("{} {}", f.first_name, f.last_name)
                    .trim()
                    .to_string(),
                email: f.email,
                user_id: f.user_id,
                reason: reason
                    .map(|r| r.as_str().to_string())
                    .or(f.reason)
                    .unwrap_or_default(),
                action,
                last_bounce_at: f.last_bounce_at.unwrap_or_default(),
                open: f.open,
            }
        })
        .collect();
    Ok(ReleaseFacts {
        version: v,
        name: notes
            .as_ref()
            .map(|n| n.name.clone())
            .filter(|n| !n.is_empty()),
        notes_file: notes.as_ref().map(|n| n.path.display().to_string()),
        previous: previous.map(|p| p.to_string()),
        next_version: format!("{}.{}.0", version.0, version.1 + 1),
        window,
        notices,
        maintenance_started: started,
        maintenance_ended: ended,
        flagged,
    })
}
