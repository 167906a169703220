//! `notify bounces parse|import|report|resolve|show`: read bounces (an mbox as a stream, one
//! message at a time), tie each to a contact and a notice (VERP token, then the returned
//! Message-ID, then the address), decide whether it is verified (only verified bounces count
//! toward a flag), record them with their raw source, apply the flag policy, and show the admin
//! which accounts to fix and which bounces could not be verified. Output text taken from mail
//! goes through `inert`.

use std::borrow::Cow;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::UsageError;
use crate::bounce::Bounce;
use crate::cli::{BouncesCommand, ParseFormat, ReportFormat, SummaryFormat};
use crate::config::Config;
use crate::inert;
use crate::intake::{self, Incoming};
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

/// Print what one input says, in `format`: a JSON line, or one table line per bounce. Text
/// taken from mail is made inert (escaped control characters and bidi overrides).
fn print_parsed(item: &Incoming, format: ParseFormat) -> anyhow::Result<()> {
    let bounces: &[Bounce] = match &item.found {
        Ok(f) => &f.bounces,
        Err(why) => {
            eprintln!(
                "skipped {}: {}",
                inert::line(&item.origin),
                inert::line(why)
            );
            &[]
        }
    };
    match format {
        ParseFormat::Json => {
            let line = inert_json(serde_json::to_string(&ParsedLine {
                source: &item.origin,
                bounces,
            })?);
            say!("{line}");
        }
        ParseFormat::Table => {
            let origin = inert::line(&item.origin);
            if bounces.is_empty() {
                say!("{origin}: not a bounce");
            }
            for b in bounces {
                say!(
                    "{origin}: {} {} {} {}{}",
                    inert::line(&b.address),
                    b.kind.as_str(),
                    inert::line(b.status.as_deref().unwrap_or("-")),
                    b.reason.as_str(),
                    b.diagnostic
                        .as_deref()
                        .map(|d| format!("  ({})", inert::line(d)))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// `bounces parse`: each input is read and printed as it comes (an mbox one message at a
/// time), so memory stays bounded whatever the size of the input.
fn parse(inputs: &[String], format: ParseFormat) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for input in inputs {
        let sources = match intake::open(Path::new(input)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {}", inert::line(&e.to_string()));
                failed.push(input.clone());
                continue;
            }
        };
        for source in sources {
            match source {
                intake::Source::Items(items) => {
                    for item in &items {
                        print_parsed(item, format)?;
                    }
                }
                intake::Source::Mbox(mbox) => {
                    for item in mbox {
                        match item {
                            Ok(item) => print_parsed(&item, format)?,
                            Err(e) => {
                                eprintln!("error: {}", inert::line(&e.to_string()));
                                failed.push(input.clone());
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(UsageError(format!(
            "could not read: {}",
            inert::line(&failed.join(", "))
        ))
        .into())
    }
}

/// Messages of an mbox recorded at a time by `bounces import`.
const MBOX_BATCH: usize = 64;

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
    for source in sources {
        match source {
            intake::Source::Items(items) => {
                ledger::record(&store, &policy, &items, &mut summary).await?
            }
            intake::Source::Mbox(mbox) => {
                let mut batch = Vec::with_capacity(MBOX_BATCH);
                for item in mbox {
                    batch.push(item?);
                    if batch.len() == MBOX_BATCH {
                        ledger::record(&store, &policy, &batch, &mut summary).await?;
                        batch.clear();
                    }
                }
                ledger::record(&store, &policy, &batch, &mut summary).await?;
            }
        }
    }
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
            if summary.unverified > 0 {
                say!(
                    "{} bounce(s) unverified (no valid VERP token, no Message-ID of ours): kept, never counted toward a flag; those of contacts are listed by `notify bounces report --unverified`",
                    summary.unverified
                );
            }
            if !summary.flagged.is_empty() {
                say!(
                    "flagged for review: {} (see `notify bounces report`)",
                    inert::line(&summary.flagged.join(", "))
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
    ledger::record(store, &Policy::of(cfg), &items, summary).await?;
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

/// The unverified bounces tied to contacts (since their last resolution), optionally only those
/// since a date.
pub async fn unverified_rows(
    store: &Store,
    since: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<review::UnverifiedRow>> {
    let since = since.map(crate::store::ts);
    let mut rows = Vec::new();
    let mut contacts = std::collections::HashMap::new();
    for b in store.unverified_bounces().await? {
        if since.as_ref().is_some_and(|s| &b.occurred_at < s) {
            continue;
        }
        let Some(id) = b.contact_id else { continue };
        let contact = match contacts.get(&id) {
            Some(c) => c,
            None => {
                let c = store.contact_by_id(id).await?;
                contacts.entry(id).or_insert(c)
            }
        };
        if let Some(c) = contact {
            rows.push(review::unverified_row(c, &b));
        }
    }
    Ok(rows)
}

async fn report(
    cfg: &Config,
    format: ReportFormat,
    since: Option<&str>,
    only_unverified: bool,
) -> anyhow::Result<()> {
    let since = since.map(parse_since).transpose()?;
    let store = Store::open(&cfg.database_url).await?;
    let rows = if only_unverified {
        Vec::new()
    } else {
        review_rows(&store, since).await?
    };
    let unverified = unverified_rows(&store, since).await?;
    let unmatched = store.unmatched_count().await? as usize;
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
        (ReportFormat::Json, false) => json_text(&rows)?,
        (ReportFormat::Json, true) => json_text(&unverified)?,
        (ReportFormat::Csv, false) => review::csv(&rows, &unverified)?,
        (ReportFormat::Csv, true) => review::unverified_csv(&unverified)?,
        (ReportFormat::Html, false) => review::html(&rows, unmatched, &unverified, &generated()),
        (ReportFormat::Html, true) => review::unverified_html(&unverified, &generated()),
        (ReportFormat::Table, false) => review::table(&rows, unmatched, &unverified, width()),
        (ReportFormat::Table, true) => review::unverified_table(&unverified, width()),
    };
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(())
}

/// Pretty JSON with a final newline, and with the characters JSON does not escape by itself but
/// a terminal may act on (DEL, C1 controls, bidi overrides) written as `\uXXXX`: the same JSON
/// value, inert on a terminal.
fn json_text<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    let mut s = inert_json(serde_json::to_string_pretty(value)?);
    s.push('\n');
    Ok(s)
}

/// Serialized JSON with DEL, C1 controls and bidi overrides escaped. JSON escapes C0 controls
/// itself, so those below U+0020 outside strings are only its own whitespace; the others can only
/// occur inside strings, where `\uXXXX` means the same character.
fn inert_json(json: String) -> String {
    let risky = |c: char| {
        let mut buf = [0; 4];
        (c as u32) >= 0x20 && matches!(inert::line(c.encode_utf8(&mut buf)), Cow::Owned(_))
    };
    if !json.chars().any(risky) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if risky(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
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
    let email = inert::line(&c.contact.email);
    if was_flagged {
        say!(
            "{email}: flag lifted; {counted} earlier bounce(s) no longer count. The next notice will be sent to this address."
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
        return Err(UsageError(format!(
            "no contact and no bounce for {}",
            inert::line(&address)
        ))
        .into());
    }
    let l = |s: &str| inert::line(s).into_owned();
    match &contact {
        Some(c) => say!(
            "{} <{}>  user_id {}  {}  {}",
            l(&c.contact.full_name()),
            l(&c.contact.email),
            c.contact.user_id,
            l(&c.contact.workgroup),
            if c.needs_update {
                "NEEDS UPDATE"
            } else if !c.in_export {
                "not in the contacts export"
            } else {
                "ok"
            }
        ),
        None => say!("{}: not a contact (bounces kept as unmatched)", l(&address)),
    }
    if !events.is_empty() {
        say!("\nhistory:");
        for e in &events {
            say!(
                "  {}  {}{}",
                l(&e.at),
                l(&e.event),
                if e.note.is_empty() {
                    String::new()
                } else {
                    format!(": {}", l(&e.note))
                }
            );
        }
    }
    say!("\nbounces ({}):", history.len());
    for b in &history {
        say!(
            "  {}  {} {} {}  {}  notice {}  matched by {}  from {}{}",
            l(&b.occurred_at),
            b.kind.as_str(),
            b.reason.as_str(),
            l(b.status.as_deref().unwrap_or("-")),
            l(&b.address),
            l(b.campaign.as_deref().unwrap_or("-")),
            l(&b.matched_by),
            l(&b.origin),
            if b.verified { "" } else { "  UNVERIFIED" }
        );
        if let Some(why) = &b.unverified_reason {
            say!("      unverified (not counted): {}", l(why));
        }
        if let Some(d) = &b.diagnostic {
            say!("      diagnostic: {}", l(d));
        }
        if let Some(m) = &b.remote_mta {
            say!("      remote MTA: {}", l(m));
        }
        if raw {
            let bytes = store.bounce_raw(b.id).await?;
            say!("      ---- raw source ----");
            for line in String::from_utf8_lossy(&bytes).lines() {
                say!("      {}", inert::text(line));
            }
            say!("      ---- end ----");
        }
    }
    store.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_output_escapes_what_a_terminal_would_act_on_and_means_the_same() {
        let value =
            serde_json::json!({"d": "a\u{1b}[2J b\u{9b}c \u{202e}txt\u{7f}", "n": "plain é"});
        let pretty = json_text(&value).unwrap();
        assert!(pretty.ends_with('\n'));
        assert!(
            !pretty
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{pretty:?}"
        );
        assert!(pretty.contains("\\u202e") && pretty.contains("\\u009b") && pretty.contains("é"));
        let back: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(back, value);
        let plain = serde_json::to_string(&serde_json::json!({"a": "b"})).unwrap();
        assert_eq!(inert_json(plain.clone()), plain);
    }
}
