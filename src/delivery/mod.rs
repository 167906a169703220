//! The delivery service: everything needed to deliver one notice to an audience. It checks the
//! templates and contacts, syncs the contacts, records the campaign and one journal row per
//! recipient, then delivers with `concurrency` workers at `rate`, marking each row `sent` right
//! after the server accepts it (`engine`: the run, the daily budget and the group commit;
//! `worker`: the feeder, the connections, streaks and throttling; `registry`: the run
//! registry and its heartbeat). Reruns continue where the last run stopped; nobody gets a notice
//! twice unless the request says so.
//!
//! It takes plain typed values ([`Request`]), returns an [`Outcome`] and prints nothing: progress
//! goes to the caller's [`Reporter`]. It calls the capabilities (render, mail, ledger, sync,
//! store) and never a command.

mod engine;
mod registry;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use lettre::message::Mailbox;
use serde::Serialize;

use crate::config::Config;
use crate::contacts::{self, Audience, Contact};
pub use crate::errors::{Incomplete, UsageError};
use crate::mail::message::{new_message_id, Letterhead};
use crate::mail::transport::{safe_file_name, write_eml, Session};
use crate::mail::{self, Delivery, Outgoing};
use crate::notice::{contact_context, contact_values, Notice, CONTACT_FIELDS};
use crate::render::merge::Merge;
use crate::render::{Rendered, Templates};
use crate::store::{SendState, Store};
use crate::sync::NoticeContacts;

/// What a run is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Render every message the run would send; change nothing in the database but what the
    /// contacts sync would (and that only worked out, not written).
    DryRun,
    /// Deliver to the audience (SMTP, or the outbox folder when no server is configured).
    Deliver,
    /// One copy to `to`, not recorded; with `dry_run` only rendered.
    OneCopy { to: String, dry_run: bool },
}

/// One delivery of a notice, in plain values.
#[derive(Debug, Clone)]
pub struct Request {
    /// The audience, if not the notice's default.
    pub audience: Option<Audience>,
    /// The campaign key, if not the notice's own.
    pub campaign: Option<String>,
    pub mode: Mode,
    /// Send again to everybody, including those already sent to.
    pub resend: bool,
    /// Queue again the recipients the server refused.
    pub retry_failed: bool,
    /// Let the contacts sync mark inactive however many contacts are missing.
    pub allow_removals: bool,
    /// Also write each message as .eml and .html files into this folder.
    pub preview: Option<PathBuf>,
}

impl Request {
    fn dry_run(&self) -> bool {
        matches!(
            self.mode,
            Mode::DryRun | Mode::OneCopy { dry_run: true, .. }
        )
    }
}

/// What a run reports while it works, in the order it happens.
#[derive(Debug, Clone)]
pub enum Event {
    /// The contacts sync's line: what changed (or would) and which file they came from.
    Contacts(String),
    /// `retry_failed`: this many refused recipients are queued again.
    Requeued(u64),
    /// The daily recipient limit allows only part of the run (the note says how much).
    BudgetShort(String),
    /// Delivery begins with this many sends to do.
    Started(u64),
    /// One send is dealt with (delivered, refused or left deferred).
    Done,
    /// Delivery is over (successfully or not).
    Finished,
}

/// Where a run's [`Event`]s go. Called from the workers: it must be quick.
pub type Reporter = Arc<dyn Fn(Event) + Send + Sync>;

/// How the run delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SummaryMode {
    /// Through the SMTP server.
    #[default]
    Smtp,
    /// Written to the outbox folder.
    Outbox,
    /// Rendered only.
    DryRun,
}

impl std::fmt::Display for SummaryMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SummaryMode::Smtp => "smtp",
            SummaryMode::Outbox => "outbox",
            SummaryMode::DryRun => "dry-run",
        })
    }
}

/// The end-of-run summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub campaign: String,
    /// The release the notice is for (`v3.12.0`).
    pub release: String,
    pub audience: String,
    /// `smtp`, `outbox` or `dry-run`.
    pub mode: SummaryMode,
    /// Server or folder.
    pub target: String,
    /// Audience size.
    pub recipients: i64,
    /// Accepted by the SMTP server in this run.
    pub sent: i64,
    /// Written to the outbox in this run.
    pub written: i64,
    /// Done before this run (sent, or written when writing to the outbox).
    pub already_sent: i64,
    /// Flagged as needing an account update (bounced): not sent.
    pub skipped: i64,
    /// Refused by the server for good (5xx).
    pub failed: i64,
    /// Still to do: deferred after retries, or not reached.
    pub pending: i64,
    /// Being sent right now by another run sharing the notice (PostgreSQL).
    pub in_progress_elsewhere: i64,
}

/// What happened to a single copy ([`Mode::OneCopy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyOutcome {
    /// Rendered only (dry run).
    Rendered,
    /// Written to this outbox folder.
    Written(String),
    /// Accepted by this server.
    Sent(String),
}

/// How a run ended, when it ended without an error of its own.
#[derive(Debug)]
pub enum Outcome {
    /// One copy, not recorded.
    OneCopy { to: String, copy: CopyOutcome },
    /// A dry run or a delivery: its summary, and what is left when it could not finish (the
    /// caller shows the summary first, then returns the error).
    Run {
        summary: Summary,
        unfinished: Option<Incomplete>,
    },
}

/// The notice prepared for rendering: shared by the feeder and the one-copy and dry-run paths.
pub(crate) struct Job {
    pub(crate) cfg: Config,
    templates: Templates,
    shared: tera::Context,
    /// The notice rendered once, each recipient's values spliced in; `None` when the
    /// templates use a contact's values in ways a splice cannot reproduce.
    merge: Option<Merge>,
    pub(crate) from: Mailbox,
    reply_to: Option<Mailbox>,
    pub(crate) campaign_key: String,
    /// The release the notice is for.
    pub(crate) release: String,
    preview: Option<PathBuf>,
    /// The window's calendar event, when the notice carries one (made per recipient).
    calendar: Option<CalendarEvent>,
}

/// The parts of a window's calendar event that are the same for every recipient.
struct CalendarEvent {
    method: crate::calendar::Method,
    uid: String,
    sequence: u32,
    stamp: chrono::DateTime<chrono::Utc>,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
    summary: String,
    description: String,
}

impl CalendarEvent {
    /// The event of a window notice (`None` for other notices).
    fn of(notice: &Notice, cfg: &Config) -> Option<CalendarEvent> {
        use crate::party_facts::WindowChange;
        let Notice::MaintenanceScheduled {
            release,
            start,
            end,
            change,
            event,
            ..
        } = notice
        else {
            return None;
        };
        let title = release.title();
        let (method, summary, description) = match change {
            WindowChange::Cancelled => (
                crate::calendar::Method::Cancel,
                format!("Cancelled: Moped maintenance for {title}"),
                format!(
                    "The maintenance window for {title} ({} to {}) is cancelled: Moped stays available.\n\n{}",
                    crate::notice::format_time(start),
                    crate::notice::format_clock(end),
                    cfg.team_name
                ),
            ),
            _ => (
                crate::calendar::Method::Request,
                format!("Moped unavailable: maintenance for {title}"),
                format!(
                    "Moped will be down for maintenance while we release {title}, from {} to {}. Please save your work and sign out before it starts. This is a notice, not a meeting: there is nothing to attend.\n\n{}",
                    crate::notice::format_time(start),
                    crate::notice::format_clock(end),
                    cfg.team_name
                ),
            ),
        };
        Some(CalendarEvent {
            method,
            uid: event.uid.clone(),
            sequence: event.sequence,
            stamp: event.stamp,
            start: start.with_timezone(&chrono::Utc),
            end: end.with_timezone(&chrono::Utc),
            summary,
            description,
        })
    }
}

impl Job {
    /// The message for `c`: spliced when the merge can do it exactly, rendered otherwise.
    fn render(&self, c: &Contact) -> anyhow::Result<Rendered> {
        if let Some(merge) = &self.merge {
            let values = contact_values(c);
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            if let Some(rendered) = merge.render(&values) {
                return Ok(rendered);
            }
        }
        Ok(self.templates.render(&contact_context(&self.shared, c))?)
    }

    pub(crate) fn build(
        &self,
        c: &Contact,
        envelope_from: &str,
        message_id: &str,
    ) -> anyhow::Result<(Rendered, Outgoing)> {
        let rendered = self.render(c)?;
        let head = Letterhead {
            from: &self.from,
            reply_to: self.reply_to.as_ref(),
            campaign: &self.campaign_key,
        };
        let calendar = self.calendar.as_ref().map(|e| {
            let organizer = self.from.email.to_string();
            let organizer_name = self.from.name.clone().unwrap_or_default();
            let text = crate::calendar::ics(&crate::calendar::Invitation {
                method: e.method,
                uid: &e.uid,
                sequence: e.sequence,
                stamp: e.stamp,
                start: e.start,
                end: e.end,
                summary: &e.summary,
                description: &e.description,
                url: &self.cfg.app_url,
                organizer_name: &organizer_name,
                organizer_email: &organizer,
                attendee_name: &c.full_name(),
                attendee_email: &c.email,
            });
            mail::message::CalendarPart {
                method: e.method,
                text,
            }
        });
        let out = mail::message::build_with(
            &head,
            &c.full_name(),
            &c.email,
            envelope_from,
            message_id,
            SystemTime::now(),
            &rendered,
            calendar.as_ref(),
        )
        .map_err(UsageError)?;
        Ok((rendered, out))
    }

    pub(crate) fn write_preview(
        &self,
        stem: &str,
        rendered: &Rendered,
        out: &Outgoing,
    ) -> anyhow::Result<()> {
        if let Some(dir) = &self.preview {
            write_eml(dir, stem, out)?;
            let html = dir.join(format!("{}.html", safe_file_name(stem)));
            std::fs::write(&html, &rendered.html)
                .with_context(|| format!("cannot write {}", html.display()))?;
        }
        Ok(())
    }
}

/// A stand-in contact for checking templates before anything is sent.
fn probe_contact() -> Contact {
    Contact {
        user_id: 1,
        first_name: "Template".into(),
        last_name: "Check".into(),
        email: "template.check@example.org".into(),
        title: String::new(),
        workgroup: String::new(),
        roles: vec![],
        is_coa_staff: false,
        is_deleted: false,
        is_user_group_member: true,
        note: String::new(),
        date_added: String::new(),
        last_seen_date: String::new(),
    }
}

/// Deliver `notice` as `request` says, reporting progress to `report`.
pub async fn run(
    cfg: &Config,
    notice: Notice,
    request: Request,
    report: Reporter,
) -> anyhow::Result<Outcome> {
    // 1. Everything that can be wrong with the input is checked before anything is written (the
    // database is opened early only to learn where the contacts come from).
    let campaign_key = request
        .campaign
        .clone()
        .unwrap_or_else(|| notice.campaign_key());
    if let Err(why) = crate::notice::check_campaign_key(&campaign_key) {
        let given = if request.campaign.is_some() {
            "--campaign"
        } else {
            "the campaign key"
        };
        return Err(UsageError(format!(
            "{given} `{}` {why}",
            crate::inert::line(&campaign_key)
        ))
        .into());
    }
    let templates = Templates::load(&cfg.templates, notice.template())?;
    let shared = notice.context(cfg);
    // The templates are rendered once with a stand-in contact before the database is even
    // opened: a bad template changes nothing, not even by creating a database.
    templates.render(&contact_context(&shared, &probe_contact()))?;
    let from: Mailbox = cfg.from.mailbox().clone();
    let reply_to = cfg.reply_to.as_ref().map(|m| m.mailbox().clone());
    let to_addr = match &request.mode {
        Mode::OneCopy { to, .. } => {
            Some(contacts::check_address(to).map_err(|e| UsageError(format!("--to: {e}")))?)
        }
        _ => None,
    };
    let audience = request
        .audience
        .unwrap_or_else(|| notice.default_audience(cfg));
    let dry = request.dry_run();
    // The contacts' source is the configured file, or the file last imported by hand while the
    // configuration is unchanged (the store records it): read and checked, nothing written.
    let store = Store::open(&cfg.database_url).await?;
    let contacts_source = NoticeContacts::read(cfg, &store).await?;
    let probe = contacts_source
        .first()
        .cloned()
        .unwrap_or_else(probe_contact);
    let probe_render = templates.render(&contact_context(&shared, &probe))?;

    let merge = Merge::new(&templates, &shared, &CONTACT_FIELDS);
    tracing::debug!(merge = merge.is_some(), "rendering plan");
    let job = Arc::new(Job {
        cfg: cfg.clone(),
        templates,
        shared,
        merge,
        from,
        reply_to,
        campaign_key: campaign_key.clone(),
        release: notice.release().to_string(),
        preview: request.preview.clone(),
        calendar: CalendarEvent::of(&notice, cfg),
    });

    // 2. The database: contacts mirror their source (refused when too many would go); a dry run
    // only works out what the sync would change, and sees the contacts as it would leave them.
    let synced = contacts_source
        .sync(cfg, &store, dry, request.allow_removals)
        .await?;
    report(Event::Contacts(synced.line));

    let delivery = if dry {
        None
    } else if let Some(server) = &cfg.smtp {
        let target = mail::SmtpTarget::new(server.clone());
        let target = match &cfg.smtp_ca {
            Some(pem) => target.trust(pem.clone()),
            None => target,
        };
        let target = match (&cfg.smtp_auth, &cfg.oauth) {
            (crate::config::SmtpAuth::Xoauth2, Some(settings)) => target.with_oauth(
                crate::oauth::TokenSource::new(settings).map_err(|e| UsageError(e.to_string()))?,
            ),
            _ => target,
        };
        Some(Delivery::Smtp { target })
    } else {
        Some(Delivery::Outbox {
            dir: cfg.outbox.join(crate::notice::outbox_folder(&campaign_key)),
        })
    };

    let result = match (to_addr, delivery) {
        (Some(addr), delivery) => send_one_copy(&store, &job, delivery, &addr).await,
        (None, None) => dry_run(
            &store,
            &job,
            audience,
            &request,
            synced.contacts.unwrap_or_default(),
            notice.recipients_of(),
        )
        .await
        .map(|summary| Outcome::Run {
            summary,
            unfinished: None,
        }),
        (None, Some(delivery)) => {
            engine::deliver(
                &store,
                job,
                &notice,
                audience,
                delivery,
                &probe_render.subject,
                &request,
                &report,
            )
            .await
        }
    };
    store.close().await;
    result
}

/// One copy, not recorded. Rendered with that person's data when they are a contact.
async fn send_one_copy(
    store: &Store,
    job: &Job,
    delivery: Option<Delivery>,
    addr: &str,
) -> anyhow::Result<Outcome> {
    // One row looked up, not the whole table read.
    let known = store.contact_by_email(addr).await?;
    let contact = known.map(|s| s.contact).unwrap_or_else(|| Contact {
        email: addr.to_string(),
        first_name: addr.split('@').next().unwrap_or("").to_string(),
        last_name: String::new(),
        ..probe_contact()
    });
    let message_id = new_message_id(&job.from);
    let (rendered, out) = job.build(&contact, &job.cfg.bounce_address, &message_id)?;
    job.write_preview(&format!("copy-{addr}"), &rendered, &out)?;
    let copy = match delivery {
        None => CopyOutcome::Rendered,
        Some(d) => {
            let mut session = Session::default();
            d.send(&mut session, &out, &format!("copy-{addr}")).await?;
            session.close().await;
            if d.is_outbox() {
                CopyOutcome::Written(d.describe())
            } else {
                CopyOutcome::Sent(d.describe())
            }
        }
    };
    Ok(Outcome::OneCopy {
        to: addr.to_string(),
        copy,
    })
}

/// A dry run: render every message the run would send to `contacts` (the export's contacts
/// as the sync would store them); change nothing in the database.
async fn dry_run(
    store: &Store,
    job: &Job,
    audience: Audience,
    request: &Request,
    contacts: Vec<crate::store::StoredContact>,
    recipients_of: &[String],
) -> anyhow::Result<Summary> {
    // A window's move or cancel goes only to who was told of it before.
    let told: Option<std::collections::HashSet<i64>> = if recipients_of.is_empty() {
        None
    } else {
        Some(
            store
                .contacts_sent_in(recipients_of)
                .await?
                .into_iter()
                .collect(),
        )
    };
    let members: Vec<_> = contacts
        .into_iter()
        .filter(|c| audience.includes(&c.contact))
        .filter(|c| told.as_ref().is_none_or(|t| t.contains(&c.id)))
        .collect();
    let done: std::collections::HashSet<String> =
        match store.find_campaign(&job.campaign_key).await? {
            Some(c) => store
                .sends(&c)
                .await?
                .into_iter()
                .filter(|s| {
                    s.state == SendState::Sent
                        || (s.state == SendState::Failed && !request.retry_failed)
                })
                .map(|s| s.email)
                .collect(),
            None => Default::default(),
        };
    let mut summary = Summary {
        campaign: job.campaign_key.clone(),
        release: job.release.clone(),
        audience: audience.to_string(),
        mode: SummaryMode::DryRun,
        target: String::new(),
        recipients: members.len() as i64,
        ..Default::default()
    };
    for (i, m) in members.iter().enumerate() {
        if m.needs_update {
            summary.skipped += 1;
            continue;
        }
        if done.contains(&m.contact.email) && !request.resend {
            summary.already_sent += 1;
            continue;
        }
        let message_id = new_message_id(&job.from);
        let (rendered, out) = job.build(&m.contact, &job.cfg.bounce_address, &message_id)?;
        job.write_preview(
            &format!("{:05}-{}", i + 1, m.contact.email),
            &rendered,
            &out,
        )?;
        summary.pending += 1;
    }
    Ok(summary)
}
