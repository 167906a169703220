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
pub mod maintenance;
pub mod party;
pub mod send;
pub mod serve;
pub mod status;

use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::{ArchiveCommand, Cli, Command, ReleaseCommand};
use crate::config::{Config, ConfigError, Overrides};
use crate::notice::Notice;

pub use crate::errors::{Incomplete, UsageError};

/// Entry point for the binary.
pub fn main(cli: Cli) -> ExitCode {
    // The server logs one line per request by default; the CLI only notify's own warnings.
    // Libraries (sqlx's slow-statement warnings, say) stay quiet below errors unless asked for
    // with --verbose or NOTIFY_LOG.
    let default = match (cli.global.verbose, &cli.command) {
        (true, _) => "info",
        (false, Command::Serve { .. }) => "error,notify=info",
        (false, _) => "error,notify=warn",
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("NOTIFY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
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
    match cli.command {
        Command::Contacts(cmd) => contacts::run(&cfg, cmd).await,
        Command::Bounces(cmd) => bounces::run(&cfg, cmd).await,
        Command::Status { campaign, format } => {
            status::run(&cfg, campaign.as_deref(), format).await
        }
        Command::MaintenanceScheduled {
            release,
            start,
            end,
            cancel: _,
            allow_past,
            send,
        } => {
            let times = start.as_deref().zip(end.as_deref());
            let notice =
                maintenance::scheduled(&cfg, release.as_deref(), times, allow_past, &send).await?;
            send::run(&cfg, notice, send).await
        }
        Command::MaintenanceStart {
            release,
            until,
            start,
            allow_past,
            send,
        } => {
            let notice = maintenance::start(
                &cfg,
                release.as_deref(),
                start.as_deref(),
                until.as_deref(),
                allow_past,
            )
            .await?;
            send::run(&cfg, notice, send).await
        }
        Command::MaintenanceEnd { release, at, send } => {
            let notice = maintenance::end(&cfg, release.as_deref(), at.as_deref()).await?;
            send::run(&cfg, notice, send).await
        }
        Command::Checklist {
            version,
            graphql_engine_staging,
            graphql_engine_production,
        } => {
            party::checklist(
                &cfg,
                &version,
                graphql_engine_staging,
                graphql_engine_production,
            )
            .await
        }
        Command::Release(ReleaseCommand::Status { version, format }) => {
            party::status(&cfg, &version, format).await
        }
        Command::Serve { bind } => serve::serve(&cfg, bind).await,
        Command::Archive(ArchiveCommand::Build { dir }) => serve::archive_build(&cfg, &dir).await,
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
