//! `notify bounces parse|import|report|resolve|show`: reads the arguments, opens the inputs
//! (files, an mbox as a stream, an IMAP mailbox with its credentials), calls the bounce ledger
//! ([`crate::ledger`]) to record, review and resolve, and prints what it returns, formatted by
//! [`crate::review`]. Output text taken from mail goes through `inert`.

use std::io::Write as _;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::UsageError;
use crate::bounce::Bounce;
use crate::cli::{BouncesCommand, ParseFormat, ReportFormat, SummaryFormat};
use crate::config::Config;
use crate::inert;
use crate::intake::{self, IntakeError, Parsed};
use crate::ledger::{self, ImportSummary};
use crate::policy::Policy;
use crate::review;
use crate::store::Store;

pub async fn run(cfg: &Config, cmd: BouncesCommand) -> anyhow::Result<()> {
    match cmd {
        BouncesCommand::Parse { inputs, format } => parse(&inputs, format),
        BouncesCommand::Import {
            paths,
            imap,
            move_to,
            format,
        } => import(cfg, &paths, imap.as_deref(), &move_to, format).await,
        BouncesCommand::Report {
            format,
            since,
            unverified,
        } => report(cfg, format, since.as_deref(), unverified).await,
        BouncesCommand::Resolve { email, note } => resolve(cfg, &email, note.as_deref()).await,
        BouncesCommand::Show { email, raw } => show(cfg, &email, raw).await,
    }
}

#[derive(Serialize)]
struct ParsedLine<'a> {
    source: &'a str,
    bounces: &'a [Bounce],
}

/// What one input prints: its lines for standard output, and a line for standard error when it
/// was skipped or could not be read.
struct Printed {
    /// The input (its place among the arguments) it came from.
    input: usize,
    stdout: Vec<u8>,
    stderr: Option<String>,
    /// It could not be read: the input is named at the end, and the exit status is 2.
    failed: bool,
}

/// Print what one input says, in `format`: a JSON line, or one table line per bounce. Text
/// taken from mail is made inert (escaped control characters and bidi overrides). Called on the
/// intake's worker threads: the lines are made here, [`parse`] writes them in input order.
fn print_parsed(input: usize, item: Result<Parsed, IntakeError>, format: ParseFormat) -> Printed {
    let failed = |why: String| Printed {
        input,
        stdout: Vec::new(),
        stderr: Some(format!("error: {}", inert::line(&why))),
        failed: true,
    };
    let item = match item {
        Ok(item) => item,
        Err(e) => return failed(e.to_string()),
    };
    let (bounces, stderr): (&[Bounce], _) = match &item.found {
        Ok(bounces) => (bounces, None),
        Err(why) => (
            &[],
            Some(format!(
                "skipped {}: {}",
                inert::line(&item.origin),
                inert::line(why)
            )),
        ),
    };
    let mut out = Vec::new();
    match format {
        ParseFormat::Json => {
            let json = match serde_json::to_string(&ParsedLine {
                source: &item.origin,
                bounces,
            }) {
                Ok(json) => json,
                Err(e) => return failed(format!("{}: {e}", item.origin)),
            };
            out = review::inert_json(json).into_bytes();
            out.push(b'\n');
        }
        ParseFormat::Table => {
            let origin = inert::line(&item.origin);
            if bounces.is_empty() {
                let _ = writeln!(out, "{origin}: not a bounce");
            }
            for b in bounces {
                let _ = write!(
                    out,
                    "{origin}: {} {} {} {}",
                    inert::line(&b.address),
                    b.kind.as_str(),
                    inert::line(b.status.as_deref().unwrap_or("-")),
                    b.reason.as_str(),
                );
                if let Some(d) = &b.diagnostic {
                    let _ = write!(out, "  ({})", inert::line(d));
                }
                out.push(b'\n');
            }
        }
    }
    Printed {
        input,
        stdout: out,
        stderr,
        failed: false,
    }
}

/// `bounces parse`: the inputs are read as one stream (an mbox one message at a time, a folder
/// one file at a time), parsed on one thread per core and printed in input order through one
/// buffered writer, so memory stays bounded whatever the size of the input. An input that
/// cannot be read is reported in its place and named at the end (exit status 2); the others are
/// still printed.
fn parse(inputs: &[String], format: ParseFormat) -> anyhow::Result<()> {
    let paths: Vec<PathBuf> = inputs.iter().map(PathBuf::from).collect();
    // The parser's automata are built on a thread of their own while the first worker lists
    // the folder (the other waits for it then); no thread, no harm: they are built on first use.
    let _ = std::thread::Builder::new()
        .name("prepare".into())
        .spawn(crate::bounce::prepare);
    let printed = intake::parse_each(&paths, move |input, item| print_parsed(input, item, format));
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut failed: Vec<usize> = Vec::new();
    let mut written = Ok(());
    for p in printed {
        if let Some(line) = &p.stderr {
            // Standard output so far comes first, as when every line was written at once.
            written = out.flush();
            eprintln!("{line}");
        }
        if p.failed && failed.last() != Some(&p.input) {
            failed.push(p.input);
        }
        if written.is_ok() {
            written = out.write_all(&p.stdout);
        }
        if written.is_err() {
            break;
        }
    }
    let written = written.and_then(|()| out.flush());
    match written {
        // The reader went away (`| head`): nothing more to print.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(anyhow::anyhow!("cannot write the output: {e}")),
        Ok(()) => {}
    }
    if failed.is_empty() {
        Ok(())
    } else {
        let names: Vec<&str> = failed.iter().map(|&i| inputs[i].as_str()).collect();
        Err(UsageError(format!(
            "could not read: {}",
            inert::line(&names.join(", "))
        ))
        .into())
    }
}

async fn import(
    cfg: &Config,
    paths: &[std::path::PathBuf],
    imap: Option<&str>,
    move_to: &str,
    format: SummaryFormat,
) -> anyhow::Result<()> {
    if paths.is_empty() && imap.is_none() {
        return Err(UsageError("give PATH... to import, or --imap URL".into()).into());
    }
    // Open everything first: an unreadable path or a bad CSV changes nothing. An mbox is then
    // read one message at a time and recorded in batches, so its size does not matter.
    let mut sources = Vec::new();
    for p in paths {
        sources.extend(intake::open(p)?);
    }
    let store = Store::open(&cfg.database_url).await?;
    let policy = Policy::of(cfg);
    let mut summary = ImportSummary::default();
    ledger::record_sources(&store, &policy, sources, &mut summary).await?;
    if let Some(url) = imap {
        import_imap(&store, cfg, &policy, url, move_to, &mut summary).await?;
    }
    store.close().await;
    match format {
        SummaryFormat::Json => say!("{}", serde_json::to_string(&summary)?),
        SummaryFormat::Text => say!("{}", summary.text(move_to)),
    }
    Ok(())
}

async fn import_imap(
    store: &Store,
    cfg: &Config,
    policy: &Policy,
    url: &str,
    move_to: &str,
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    use intake::imap::{ImapMailbox, ImapUrl};
    let parsed = ImapUrl::parse(url).map_err(|e| UsageError(format!("--imap: {e}")))?;
    // NOTIFY_IMAP_PASSWORD means LOGIN with it; without it, the OAuth client credentials (the
    // same app and tokens as smtp_auth = "xoauth2") sign in with XOAUTH2 as the URL's user.
    let trusted = cfg.smtp_ca.as_deref();
    let mut mailbox = match (std::env::var("NOTIFY_IMAP_PASSWORD"), &cfg.oauth) {
        (Ok(password), _) => ImapMailbox::open_trusting(&parsed, &password, trusted).await?,
        (Err(_), Some(settings)) => {
            let token = crate::oauth::TokenSource::new(settings)?.token().await?;
            ImapMailbox::open_xoauth2(&parsed, token.secret(), trusted).await?
        }
        (Err(_), None) => {
            return Err(UsageError(
                "--imap needs the password in NOTIFY_IMAP_PASSWORD, or the OAuth client \
                 credentials for XOAUTH2 (oauth_tenant and oauth_client_id in notify.toml, \
                 the secret in NOTIFY_OAUTH_CLIENT_SECRET)"
                    .into(),
            )
            .into())
        }
    };
    ledger::record_mailbox(
        store,
        policy,
        &mut mailbox,
        &parsed.mailbox,
        move_to,
        summary,
    )
    .await?;
    mailbox.logout().await?;
    Ok(())
}

fn parse_since(s: &str) -> Result<DateTime<Utc>, UsageError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| UsageError(format!("--since `{s}` is not a date like 2026-12-01")))
}

async fn report(
    cfg: &Config,
    format: ReportFormat,
    since: Option<&str>,
    only_unverified: bool,
) -> anyhow::Result<()> {
    let since = since.map(parse_since).transpose()?;
    let store = Store::open(&cfg.database_url).await?;
    let ledger::Review {
        rows,
        unverified,
        unmatched,
    } = ledger::review(&store, since, only_unverified).await?;
    store.close().await;
    let generated = || {
        Utc::now()
            .with_timezone(&cfg.timezone)
            .format("%A, %B %-d, %Y at %-I:%M %p %Z")
            .to_string()
    };
    // Fit the terminal; when piped, do not cut anything.
    let width = || {
        let term = console::Term::stdout();
        std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .or_else(|| term.is_term().then(|| term.size().1 as usize))
            .unwrap_or(usize::MAX / 4)
    };
    let out = match (format, only_unverified) {
        (ReportFormat::Json, false) => review::json_text(&rows)?,
        (ReportFormat::Json, true) => review::json_text(&unverified)?,
        (ReportFormat::Csv, false) => review::csv(&rows, &unverified)?,
        (ReportFormat::Csv, true) => review::unverified_csv(&unverified)?,
        (ReportFormat::Html, false) => review::html(&rows, unmatched, &unverified, &generated())?,
        (ReportFormat::Html, true) => review::unverified_html(&unverified, &generated())?,
        (ReportFormat::Table, false) => review::table(&rows, unmatched, &unverified, width()),
        (ReportFormat::Table, true) => review::unverified_table(&unverified, width()),
    };
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(())
}

async fn resolve(cfg: &Config, email: &str, note: Option<&str>) -> anyhow::Result<()> {
    let store = Store::open(&cfg.database_url).await?;
    let resolved = ledger::resolve(&store, email, note).await?;
    store.close().await;
    let Some(r) = resolved else {
        return Err(UsageError(format!("no contact has the address {email}")).into());
    };
    let email = inert::line(&r.email);
    if r.was_flagged {
        say!(
            "{email}: flag lifted; {} earlier bounce(s) no longer count. The next notice will be sent to this address.",
            r.counted
        );
    } else {
        say!("{email}: was not flagged; note recorded and earlier bounces no longer count.");
    }
    Ok(())
}

/// `bounces show`: a contact's flag history and every bounce of it or its address, with the
/// raw sources on `--raw`. Everything printed that came from mail or an export goes through
/// `inert` (one-line fields escaped whole; raw sources keep their lines and tabs), so no escape
/// sequence taken from a bounce reaches a terminal, a pipe or a file.
async fn show(cfg: &Config, email: &str, raw: bool) -> anyhow::Result<()> {
    let store = Store::open(&cfg.database_url).await?;
    let ledger::History {
        contact,
        events,
        bounces: history,
        row,
    } = ledger::history(&store, email).await?;
    if contact.is_none() && history.is_empty() {
        store.close().await;
        return Err(UsageError(format!(
            "no contact and no bounce for {}",
            inert::line(&email.trim().to_lowercase())
        ))
        .into());
    }
    let address = email.trim().to_lowercase();
    say!(
        "{}",
        review::show_contact(contact.as_ref(), row.as_ref(), &address)
    );
    if !events.is_empty() {
        say!("\nhistory:");
        for e in &events {
            say!("{}", review::show_event(e));
        }
    }
    say!("\nbounces ({}):", history.len());
    for b in &history {
        say!("{}", review::show_bounce(b));
        if raw {
            let bytes = ledger::raw_source(&store, b.id).await?;
            say!("{}", review::show_raw(&bytes));
        }
    }
    store.close().await;
    Ok(())
}
