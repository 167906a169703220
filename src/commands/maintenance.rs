//! `notify maintenance-scheduled|maintenance-start|maintenance-end`: reads the times and the
//! release, asks the party service what the notice is (a first warning, a move, a cancel; the
//! window's end; the start to measure from), records a window change, says which release and
//! what this run is, and hands the notice back to be delivered.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::cli::SendArgs;
use crate::config::Config;
use crate::errors::UsageError;
use crate::notice::{check_not_past, format_time, parse_time, Notice};
use crate::party::{self, WindowRequest};
use crate::store::Store;

/// A note for the person (which release, what this run is), on standard error like every other
/// note: standard output keeps its first line for the contacts sync and its last for the
/// summary (whose `release` names the release too).
fn note(line: &str) {
    eprintln!("{line}");
}

fn time(
    cfg: &Config,
    now: DateTime<Utc>,
    flag: &str,
    v: &str,
    next: bool,
) -> anyhow::Result<DateTime<Tz>> {
    Ok(parse_time(v, cfg.timezone, now, next).map_err(|e| UsageError(format!("--{flag}: {e}")))?)
}

/// The templates a notice will use are checked before the database is opened: a bad template
/// changes nothing, not even by creating a database.
fn check_templates(cfg: &Config, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        crate::render::Templates::load(&cfg.templates, name)?;
    }
    Ok(())
}

async fn release(
    store: Option<&Store>,
    cfg: &Config,
    given: Option<&str>,
) -> anyhow::Result<party::Resolved> {
    let r = party::resolve_release(store, cfg, given).await?;
    note(&format!(
        "release {} ({})",
        crate::inert::line(&r.release.title()),
        r.why
    ));
    Ok(r)
}

/// `maintenance-scheduled`: the window notice to send.
pub async fn scheduled(
    cfg: &Config,
    given: Option<&str>,
    times: Option<(&str, &str)>,
    allow_past: bool,
    args: &SendArgs,
) -> anyhow::Result<Notice> {
    let now = Utc::now();
    let request = match times {
        None => WindowRequest::Cancel,
        Some((start_typed, end_typed)) => {
            let start = time(cfg, now, "start", start_typed, false)?;
            let end = time(cfg, now, "end", end_typed, false)?;
            // An advance warning for a window that has begun (or is over) is a typo in the date
            // or the zone far more often than a wish.
            if !allow_past {
                check_not_past(&format!("--end `{end_typed}`"), &end, now)
                    .and_then(|()| check_not_past(&format!("--start `{start_typed}`"), &start, now))
                    .map_err(UsageError)?;
            }
            if end <= start {
                return Err(UsageError("--end must be after --start".into()).into());
            }
            WindowRequest::At { start, end }
        }
    };
    match request {
        WindowRequest::Cancel => check_templates(cfg, &["maintenance-cancelled"])?,
        WindowRequest::At { .. } => {
            check_templates(cfg, &["maintenance-scheduled", "maintenance-moved"])?
        }
    }
    // Read what is recorded without creating anything: a refused run changes nothing.
    let existing = Store::open_existing(&cfg.database_url).await?;
    let result = async {
        let r = release(existing.as_ref(), cfg, given).await?;
        let versions = party::window_versions(existing.as_ref(), &r.release.version).await?;
        let plan = party::plan_window(&versions, cfg, &r.release, request, now)?;
        note(&plan.note);
        // Only a delivery records the change; a dry run or a single copy only shows it. Under
        // `--campaign KEY` the window version names that key, so that a later move or cancel
        // reaches who it reached.
        let record = plan.record.clone().map(|mut v| {
            if let Some(key) = &args.campaign {
                v.campaign = key.clone();
            }
            v
        });
        if let (Some(v), None, false) = (&record, &args.to, args.dry_run) {
            match &existing {
                Some(store) => party::record_window(store, &r.release.version, v).await?,
                None => {
                    let store = Store::open(&cfg.database_url).await?;
                    let recorded = party::record_window(&store, &r.release.version, v).await;
                    store.close().await;
                    recorded?
                }
            }
        }
        Ok(plan.notice)
    }
    .await;
    if let Some(store) = existing {
        store.close().await;
    }
    result
}

/// `maintenance-start`: now (or `--start`) until `--until`, else the scheduled window's end,
/// else now + `maintenance_minutes`.
pub async fn start(
    cfg: &Config,
    given: Option<&str>,
    start_typed: Option<&str>,
    until_typed: Option<&str>,
    allow_past: bool,
) -> anyhow::Result<Notice> {
    let now = Utc::now();
    let tz = cfg.timezone;
    let start = match start_typed {
        Some(s) => time(cfg, now, "start", s, false)?,
        None => now.with_timezone(&tz),
    };
    let until = match until_typed {
        Some(u) => Some(time(cfg, now, "until", u, true)?),
        None => None,
    };
    if let (Some(u), Some(typed), false) = (&until, until_typed, allow_past) {
        check_not_past(&format!("--until `{typed}`"), u, now).map_err(UsageError)?;
    }
    check_templates(cfg, &["maintenance-start"])?;
    let existing = Store::open_existing(&cfg.database_url).await?;
    let result = async {
        let r = release(existing.as_ref(), cfg, given).await?;
        let window = party::current_window(existing.as_ref(), &r.release.version).await?;
        if window.is_none() {
            eprintln!(
                "warning: no maintenance window is scheduled for {} (notify maintenance-scheduled): the notice goes out without one",
                r.release.version
            );
        }
        let fallback = start + chrono::Duration::minutes(cfg.maintenance_minutes as i64);
        let until = match (until, &window) {
            (Some(u), _) => u,
            (None, Some(w)) if w.end > start.with_timezone(&Utc) => w.end.with_timezone(&tz),
            (None, Some(w)) => {
                eprintln!(
                    "warning: the scheduled window ended {}; expecting maintenance to end {} (now + maintenance_minutes)",
                    format_time(&w.end.with_timezone(&tz)),
                    format_time(&fallback)
                );
                fallback
            }
            (None, None) => fallback,
        };
        // A start in the past is ordinary (the work began before the notice); an expected end
        // in the past is not.
        if let (false, None, Some(s)) = (allow_past, until_typed, start_typed) {
            let from = if window.is_some() {
                "the scheduled window's end"
            } else {
                "--start + maintenance_minutes"
            };
            check_not_past(
                &format!("the expected end ({from}; --start `{s}`)"),
                &until,
                now,
            )
            .map_err(UsageError)?;
        }
        if until <= start {
            return Err(UsageError("--until must be after the start".into()).into());
        }
        Ok(Notice::MaintenanceStart {
            release: r.release,
            start,
            until,
        })
    }
    .await;
    if let Some(store) = existing {
        store.close().await;
    }
    result
}

/// `maintenance-end`: now (or `--at`), measured from the release's start notice when there was one.
pub async fn end(cfg: &Config, given: Option<&str>, at: Option<&str>) -> anyhow::Result<Notice> {
    let now = Utc::now();
    let tz = cfg.timezone;
    let at = match at {
        Some(a) => time(cfg, now, "at", a, false)?,
        None => now.with_timezone(&tz),
    };
    check_templates(cfg, &["maintenance-end"])?;
    let existing = Store::open_existing(&cfg.database_url).await?;
    let result = async {
        let r = release(existing.as_ref(), cfg, given).await?;
        let started = match &existing {
            Some(store) => party::maintenance_started(store, &r.release.version).await?,
            None => None,
        };
        if started.is_none() {
            eprintln!(
                "warning: no maintenance-start notice was sent for {}: the notice cannot say how long maintenance took",
                r.release.version
            );
        }
        Ok(Notice::MaintenanceEnd {
            release: r.release,
            at,
            started: started.map(|s| s.with_timezone(&tz)),
        })
    }
    .await;
    if let Some(store) = existing {
        store.close().await;
    }
    result
}
