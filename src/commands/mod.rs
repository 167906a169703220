//! Orchestration: each command loads what it needs, calls the capability modules and prints. Errors
//! print their cause chain and map to the exit code: 2 for bad input (config, contacts, release
//! notes, templates, arguments, a database that is not notify's), 1 for a run that could not
//! finish (server unreachable, sends left deferred, database down), 0 otherwise.

/// Print a line on standard output. A closed pipe (`notify … | head -1`) is not an error worth
/// a panic: the reader has what it wanted.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod bounces;
pub mod contacts;
pub mod send;
pub mod status;

use std::process::ExitCode;

use anyhow::Context as _;
use chrono::Utc;

use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError, Overrides};
use crate::notice::{check_not_past, parse_time, Notice};

pub use crate::errors::{Incomplete, UsageError};

/// Entry point for the binary.
pub fn main(cli: Cli) -> ExitCode {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("NOTIFY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // async-imap traces every command line it sends, the IMAP password (LOGIN) and the OAuth
    // token (AUTHENTICATE XOAUTH2) included: never shown, whatever NOTIFY_LOG asks.
    if let Ok(quiet) = "async_imap::imap_stream=off".parse() {
        filter = filter.add_directive(quiet);
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(exit_code(&err))
        }
    }
}

/// 2 for bad input, 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let input = err.chain().any(|e| {
        e.is::<ConfigError>()
            || e.is::<crate::contacts::ContactsError>()
            || e.is::<crate::release::ReleaseError>()
            || e.is::<crate::render::TemplateError>()
            || e.is::<UsageError>()
            || e.is::<crate::intake::IntakeError>()
            || e.downcast_ref::<crate::store::StoreError>()
                .is_some_and(crate::store::StoreError::is_bad_input)
    });
    if input {
        2
    } else {
        1
    }
}

fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let g = &cli.global;
    let overrides = Overrides {
        database_url: g.database_url.clone(),
        smtp_url: g.smtp_url.clone(),
        outbox: g.outbox.clone(),
        contacts: g.contacts.clone(),
        from: g.from.clone(),
        concurrency: g.concurrency,
        rate: g.rate,
        timezone: g.timezone.clone(),
    };
    // The default file may be absent (every key has a default); a named one must exist.
    let required = g.config != std::path::Path::new("notify.toml");
    Config::load(
        &g.config,
        required,
        &crate::config::process_env(),
        &overrides,
    )
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = load_config(&cli)?;
    let now = Utc::now();
    let tz = cfg.timezone;
    let time = |flag: &str, v: &str, next: bool| {
        parse_time(v, tz, now, next).map_err(|e| UsageError(format!("--{flag}: {e}")))
    };
    match cli.command {
        Command::Contacts(cmd) => contacts::run(&cfg, cmd).await,
        Command::Bounces(cmd) => bounces::run(&cfg, cmd).await,
        Command::Status { campaign, format } => {
            status::run(&cfg, campaign.as_deref(), format).await
        }
        Command::MaintenanceScheduled {
            start: start_typed,
            end: end_typed,
            allow_past,
            send,
        } => {
            let start = time("start", &start_typed, false)?;
            let end = time("end", &end_typed, false)?;
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
            send::run(&cfg, Notice::MaintenanceScheduled { start, end }, send).await
        }
        Command::MaintenanceStart {
            until: until_typed,
            start: start_typed,
            allow_past,
            send,
        } => {
            let start = match &start_typed {
                Some(s) => time("start", s, false)?,
                None => now.with_timezone(&tz),
            };
            let until = match &until_typed {
                Some(u) => time("until", u, true)?,
                None => start + chrono::Duration::minutes(cfg.maintenance_minutes as i64),
            };
            // A start in the past is ordinary (the work began before the notice); an expected
            // end in the past is not.
            if !allow_past {
                match (&until_typed, &start_typed) {
                    (Some(u), _) => check_not_past(&format!("--until `{u}`"), &until, now),
                    (None, Some(s)) => check_not_past(
                        &format!(
                            "the expected end (--start `{s}` + maintenance_minutes = {})",
                            cfg.maintenance_minutes
                        ),
                        &until,
                        now,
                    ),
                    (None, None) => Ok(()),
                }
                .map_err(UsageError)?;
            }
            if until <= start {
                return Err(UsageError("--until must be after the start".into()).into());
            }
            send::run(&cfg, Notice::MaintenanceStart { start, until }, send).await
        }
        Command::MaintenanceEnd { at, send } => {
            let at = match at {
                Some(a) => time("at", &a, false)?,
                None => now.with_timezone(&tz),
            };
            send::run(&cfg, Notice::MaintenanceEnd { at }, send).await
        }
        Command::ReleaseNotes {
            version,
            notes,
            send,
        } => {
            let release = match notes {
                Some(path) => {
                    let v = crate::release::Version::parse(&version)
                        .ok_or_else(|| crate::release::ReleaseError::BadVersion(version.clone()))?;
                    crate::release::load(&path, Some(v))?
                }
                None => crate::release::find(&cfg.releases, &version)
                    .with_context(|| "cannot send the release notes".to_string())?,
            };
            send::run(&cfg, Notice::ReleaseNotes { release }, send).await
        }
    }
}
