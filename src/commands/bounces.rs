//! `notify bounces parse|import|report|resolve|show`: read bounces, tie each to a contact and a
//! notice (VERP token, then the returned Message-ID, then the address), record them with their raw
//! source, apply the flag policy, and show the admin which accounts to fix.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::UsageError;
use crate::bounce::Bounce;
use crate::cli::{BouncesCommand, ParseFormat, ReportFormat, SummaryFormat};
use crate::config::Config;
use crate::intake::{self, Found, Incoming};
use crate::mail::verp;
use crate::policy::Policy;
use crate::review;
use crate::store::{MatchedBy, NewBounce, Store};

pub async fn run(cfg: &Config, cmd: BouncesCommand) -> anyhow::Result<()> {
    match cmd {
        BouncesCommand::Parse { inputs, format } => parse(&inputs, format),
        BouncesCommand::Import {
            paths,
            imap,
            move_to,
            format,
        } => import(cfg, &paths, imap.as_deref(), &move_to, format).await,
        BouncesCommand::Report { format, since } => report(cfg, format, since.as_deref()).await,
        BouncesCommand::Resolve { email, note } => resolve(cfg, &email, note.as_deref()).await,
        BouncesCommand::Show { email, raw } => show(cfg, &email, raw).await,
    }
}

/// Read one command-line input: a path, or `-` for standard input.
fn read_input(input: &str) -> Result<Vec<Incoming>, intake::IntakeError> {
    if input == "-" {
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut raw).map_err(|source| {
            intake::IntakeError::Read {
                path: "-".into(),
                source,
            }
        })?;
        intake::read_bytes(Path::new("-"), "-", raw)
    } else {
        intake::read_path(Path::new(input))
    }
}

#[derive(Serialize)]
struct ParsedLine<'a> {
    source: &'a str,
    bounces: &'a [Bounce],
}

fn parse(inputs: &[String], format: ParseFormat) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for input in inputs {
        let items = match read_input(input) {
            Ok(items) => items,
            Err(e) => {
                eprintln!("error: {e}");
                failed.push(input.clone());
                continue;
            }
        };
        for item in items {
            let bounces: &[Bounce] = match &item.found {
                Ok(f) => &f.bounces,
                Err(why) => {
                    eprintln!("skipped {}: {why}", item.origin);
                    &[]
                }
            };
            match format {
                ParseFormat::Json => say!(
                    "{}",
                    serde_json::to_string(&ParsedLine {
                        source: &item.origin,
                        bounces
                    })?
                ),
                ParseFormat::Table => {
                    if bounces.is_empty() {
                        say!("{}: not a bounce", item.origin);
                    }
                    for b in bounces {
                        say!(
                            "{}: {} {} {} {}{}",
                            item.origin,
                            b.address,
                            serde_json::to_value(b.kind)?.as_str().unwrap_or(""),
                            b.status.as_deref().unwrap_or("-"),
                            serde_json::to_value(b.reason)?.as_str().unwrap_or(""),
                            b.diagnostic
                                .as_deref()
                                .map(|d| format!("  ({d})"))
                                .unwrap_or_default()
                        );
                    }
                }
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(UsageError(format!("could not read: {}", failed.join(", "))).into())
    }
}

/// What an import did.
#[derive(Debug, Default, Serialize)]
pub struct ImportSummary {
    /// Inputs read (messages, notifications, CSV rows).
    pub read: usize,
    /// Bounced addresses recorded.
    pub bounces: usize,
    pub hard: usize,
    pub soft: usize,
    /// Inputs seen before: nothing recorded again.
    pub already_imported: usize,
    /// Out-of-office replies, ordinary mail, read receipts, deliveries.
    pub not_bounces: usize,
    /// Inputs over the size limit or unreadable.
    pub skipped: usize,
    /// Bounces tied to no contact (kept for review).
    pub unmatched: usize,
    /// Contacts newly flagged as needing an update.
    pub flagged: Vec<String>,
    /// IMAP messages moved to the processed folder.
    pub moved: usize,
}

/// Record every bounce in `items`, tie it to contacts and notices, and apply the policy.
pub async fn record(
    store: &Store,
    cfg: &Config,
    items: &[Incoming],
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    let secret = super::send::verp_secret(store).await?;
    let mut touched: BTreeSet<i64> = BTreeSet::new();
    for item in items {
        summary.read += 1;
        let found = match &item.found {
            Ok(f) => f,
            Err(why) => {
                eprintln!("skipped {}: {why}", item.origin);
                summary.skipped += 1;
                continue;
            }
        };
        if found.bounces.is_empty() {
            summary.not_bounces += 1;
            continue;
        }
        let Some(source_id) = store
            .add_bounce_source(&item.source_key, &item.origin, &item.raw)
            .await?
        else {
            summary.already_imported += 1;
            continue;
        };
        for b in &found.bounces {
            let nb = attribute(store, &secret, found, b).await?;
            if let Some(c) = nb.contact_id {
                touched.insert(c);
            } else {
                summary.unmatched += 1;
            }
            match b.kind {
                crate::bounce::BounceKind::Hard => summary.hard += 1,
                crate::bounce::BounceKind::Soft => summary.soft += 1,
            }
            summary.bounces += 1;
            store.add_bounce(source_id, &nb).await?;
        }
    }
    let policy = Policy {
        soft_limit: cfg.soft_bounce_limit,
        soft_days: cfg.soft_bounce_days,
    };
    for contact_id in touched {
        let counted = store.counted_bounces(contact_id).await?;
        if let Some(why) = policy.verdict(&counted, Utc::now()) {
            if store.flag_contact(contact_id, &why).await? {
                if let Some(c) = store.contact_by_id(contact_id).await? {
                    summary.flagged.push(c.contact.email);
                }
            }
        }
    }
    Ok(())
}

/// Tie one bounce to a send (VERP token, then Message-ID) or a contact (address).
async fn attribute(
    store: &Store,
    secret: &[u8],
    found: &Found,
    b: &Bounce,
) -> anyhow::Result<NewBounce> {
    let mut nb = NewBounce {
        address: b.address.clone(),
        kind: enum_text(b.kind),
        status: b.status.clone(),
        reason: enum_text(b.reason),
        diagnostic: b.diagnostic.clone(),
        remote_mta: b.remote_mta.clone(),
        contact_id: None,
        send_id: None,
        campaign_id: None,
        matched_by: MatchedBy::Unmatched,
        occurred_at: found.occurred_at.unwrap_or_else(Utc::now),
    };
    let by_token = match found
        .verp_recipient
        .as_deref()
        .and_then(verp::token_in)
        .and_then(|t| verp::verify(secret, t))
    {
        Some(send_id) => store.send_by_id(send_id).await?,
        None => None,
    };
    let (send, how) = match by_token {
        Some(s) => (Some(s), MatchedBy::Verp),
        None => match &found.original_message_id {
            Some(mid) => (store.send_by_message_id(mid).await?, MatchedBy::MessageId),
            None => (None, MatchedBy::Unmatched),
        },
    };
    if let Some(s) = send {
        nb.contact_id = Some(s.contact_id);
        nb.send_id = Some(s.send_id);
        nb.campaign_id = Some(s.campaign_id);
        nb.matched_by = how;
    } else if let Some(c) = store.contact_by_email(&b.address).await? {
        nb.contact_id = Some(c.id);
        nb.matched_by = MatchedBy::Address;
    }
    Ok(nb)
}

/// The serde name of a bounce enum (`hard`, `user-unknown`).
fn enum_text<T: Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
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
    // Read everything first: an unreadable path or a bad CSV changes nothing.
    let mut items = Vec::new();
    for p in paths {
        items.extend(intake::read_path(p)?);
    }
    let store = Store::open(&cfg.database_url).await?;
    let mut summary = ImportSummary::default();
    record(&store, cfg, &items, &mut summary).await?;
    if let Some(url) = imap {
        import_imap(&store, cfg, url, move_to, &mut summary).await?;
    }
    store.close().await;
    match format {
        SummaryFormat::Json => say!("{}", serde_json::to_string(&summary)?),
        SummaryFormat::Text => {
            say!(
                "read {}: {} bounce(s) recorded ({} hard, {} soft), {} already imported, {} not bounces, {} skipped, {} unmatched",
                summary.read,
                summary.bounces,
                summary.hard,
                summary.soft,
                summary.already_imported,
                summary.not_bounces,
                summary.skipped,
                summary.unmatched
            );
            if summary.moved > 0 {
                say!("moved {} message(s) to {move_to}", summary.moved);
            }
            if !summary.flagged.is_empty() {
                say!(
                    "flagged for review: {} (see `notify bounces report`)",
                    summary.flagged.join(", ")
                );
            }
        }
    }
    Ok(())
}

async fn import_imap(
    store: &Store,
    cfg: &Config,
    url: &str,
    move_to: &str,
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    use intake::imap::{ImapMailbox, ImapUrl};
    let parsed = ImapUrl::parse(url).map_err(|e| UsageError(format!("--imap: {e}")))?;
    let password = std::env::var("NOTIFY_IMAP_PASSWORD")
        .map_err(|_| UsageError("--imap needs the password in NOTIFY_IMAP_PASSWORD".into()))?;
    let mut mailbox = ImapMailbox::open(&parsed, &password).await?;
    let messages = mailbox.fetch_all(crate::bounce::MAX_MESSAGE_BYTES).await?;
    for (uid, size) in mailbox.oversized() {
        eprintln!(
            "skipped imap:{}/{uid}: message of {size} bytes is over the {}-byte limit for bounce parsing; left in the mailbox",
            parsed.mailbox,
            crate::bounce::MAX_MESSAGE_BYTES
        );
        summary.skipped += 1;
    }
    let mut recognised = Vec::new();
    let mut items = Vec::new();
    for (uid, raw) in messages {
        let item = intake::message(&format!("imap:{}/{uid}", parsed.mailbox), raw);
        if item.found.as_ref().is_ok_and(|f| !f.bounces.is_empty()) {
            recognised.push(uid);
        }
        items.push(item);
    }
    record(store, cfg, &items, summary).await?;
    // Only after the bounces are safely recorded are they moved out of the way.
    if !recognised.is_empty() {
        mailbox.move_to(&recognised, move_to).await?;
        summary.moved = recognised.len();
    }
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

/// The review rows, optionally only with bounces since a date.
pub async fn review_rows(
    store: &Store,
    since: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<review::ReviewRow>> {
    let mut rows = Vec::new();
    for c in store.flagged_contacts().await? {
        let mut bounces = store.counted_bounces(c.id).await?;
        if let Some(since) = since {
            let since = crate::store::ts(since);
            bounces.retain(|b| b.occurred_at >= since);
        }
        if let Some(r) = review::row(&c, &bounces) {
            rows.push(r);
        }
    }
    Ok(rows)
}

async fn report(cfg: &Config, format: ReportFormat, since: Option<&str>) -> anyhow::Result<()> {
    let since = since.map(parse_since).transpose()?;
    let store = Store::open(&cfg.database_url).await?;
    let rows = review_rows(&store, since).await?;
    let unmatched = store.unmatched_count().await? as usize;
    store.close().await;
    match format {
        ReportFormat::Json => say!("{}", serde_json::to_string_pretty(&rows)?),
        ReportFormat::Csv => {
            use std::io::Write as _;
            let _ = std::io::stdout()
                .lock()
                .write_all(review::csv(&rows)?.as_bytes());
        }
        ReportFormat::Html => {
            let generated = Utc::now()
                .with_timezone(&cfg.timezone)
                .format("%A, %B %-d, %Y at %-I:%M %p %Z")
                .to_string();
            use std::io::Write as _;
            let _ = std::io::stdout()
                .lock()
                .write_all(review::html(&rows, unmatched, &generated).as_bytes());
        }
        ReportFormat::Table => {
            // Fit the terminal; when piped, do not cut anything.
            let term = console::Term::stdout();
            let width = std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.parse().ok())
                .or_else(|| term.is_term().then(|| term.size().1 as usize))
                .unwrap_or(usize::MAX / 4);
            use std::io::Write as _;
            let _ = std::io::stdout()
                .lock()
                .write_all(review::table(&rows, unmatched, width).as_bytes());
        }
    }
    Ok(())
}

async fn resolve(cfg: &Config, email: &str, note: Option<&str>) -> anyhow::Result<()> {
    let store = Store::open(&cfg.database_url).await?;
    let Some(c) = store.contact_by_email(email).await? else {
        store.close().await;
        return Err(UsageError(format!("no contact has the address {email}")).into());
    };
    let was_flagged = c.needs_update;
    let counted = store.counted_bounces(c.id).await?.len();
    store
        .resolve_contact(c.id, "resolved", note.unwrap_or(""))
        .await?;
    store.close().await;
    if was_flagged {
        say!(
            "{}: flag lifted; {counted} earlier bounce(s) no longer count. The next notice will be sent to this address.",
            c.contact.email
        );
    } else {
        say!(
            "{}: was not flagged; note recorded and earlier bounces no longer count.",
            c.contact.email
        );
    }
    Ok(())
}

async fn show(cfg: &Config, email: &str, raw: bool) -> anyhow::Result<()> {
    let address = email.trim().to_lowercase();
    let store = Store::open(&cfg.database_url).await?;
    let contact = store.contact_by_email(&address).await?;
    let history = store
        .bounce_history(contact.as_ref().map(|c| c.id), &address)
        .await?;
    let events = match &contact {
        Some(c) => store.account_events(c.id).await?,
        None => Vec::new(),
    };
    if contact.is_none() && history.is_empty() {
        store.close().await;
        return Err(UsageError(format!("no contact and no bounce for {address}")).into());
    }
    match &contact {
        Some(c) => say!(
            "{} <{}>  user_id {}  {}  {}",
            c.contact.full_name(),
            c.contact.email,
            c.contact.user_id,
            c.contact.workgroup,
            if c.needs_update {
                "NEEDS UPDATE"
            } else if !c.in_export {
                "not in the contacts export"
            } else {
                "ok"
            }
        ),
        None => say!("{address}: not a contact (bounces kept as unmatched)"),
    }
    if !events.is_empty() {
        say!("\nhistory:");
        for e in &events {
            say!(
                "  {}  {}{}",
                e.at,
                e.event,
                if e.note.is_empty() {
                    String::new()
                } else {
                    format!(": {}", e.note)
                }
            );
        }
    }
    say!("\nbounces ({}):", history.len());
    for b in &history {
        say!(
            "  {}  {} {} {}  {}  notice {}  matched by {}  from {}",
            b.occurred_at,
            b.kind,
            b.reason,
            b.status.as_deref().unwrap_or("-"),
            b.address,
            b.campaign.as_deref().unwrap_or("-"),
            b.matched_by,
            b.origin
        );
        if let Some(d) = &b.diagnostic {
            say!("      diagnostic: {d}");
        }
        if let Some(m) = &b.remote_mta {
            say!("      remote MTA: {m}");
        }
        if raw {
            let bytes = store.bounce_raw(b.id).await?;
            say!("      ---- raw source ----");
            for line in String::from_utf8_lossy(&bytes).lines() {
                say!("      {line}");
            }
            say!("      ---- end ----");
        }
    }
    store.close().await;
    Ok(())
}
