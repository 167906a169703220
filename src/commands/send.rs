//! Sending a notice: check the templates and contacts, record the campaign and one journal row per
//! recipient, then deliver with `concurrency` workers at `rate`, marking each row `sent` right
//! after the server accepts it. Reruns continue where the last run stopped; nobody gets a notice
//! twice unless `--resend` says so. A refusal about one recipient marks that send failed; a
//! refusal about the sender stops the run and marks nobody; throttling slows the run down; the
//! daily recipient limit is kept over every notice.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use chrono::Utc;
use lettre::message::Mailbox;
use serde::Serialize;

use super::{Incomplete, UsageError};
use crate::bounce::Bounce;
use crate::cli::{SendArgs, SummaryFormat};
use crate::config::Config;
use crate::contacts::{self, Audience, Contact};
use crate::intake::{Found, Incoming};
use crate::mail::message::{new_message_id, Letterhead};
use crate::mail::refusal::{self, Blame};
use crate::mail::sender::{backoff, retry_after, GroupCommit, RateLimiter, Ticket};
use crate::mail::transport::{safe_file_name, write_eml, Session};
use crate::mail::{self, verp, Delivery, Outgoing, SendError};
use crate::notice::{contact_context, contact_values, Notice, CONTACT_FIELDS};
use crate::render::merge::Merge;
use crate::render::{Rendered, Templates};
use crate::store::{state, Campaign, Claim, Store};

/// The most sends a run's feeder claims at a time. Fewer when the notice is small (a quarter of
/// an even split over the connections), so that runs sharing a notice on PostgreSQL each get
/// a share and a run never holds much more than it can soon send.
const CLAIM_BATCH: usize = 256;

fn claim_batch(to_do: i64, concurrency: usize) -> usize {
    let share = usize::try_from(to_do).unwrap_or(0) / (concurrency.max(1) * 4);
    share.clamp(1, CLAIM_BATCH)
}

/// The end-of-run summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub campaign: String,
    pub audience: String,
    /// `smtp`, `outbox` or `dry-run`.
    pub mode: String,
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

pub use crate::ledger::verp_secret;

struct Job {
    cfg: Config,
    templates: Templates,
    shared: tera::Context,
    /// The notice rendered once, each recipient's values spliced in; `None` when the
    /// templates use a contact's values in ways a splice cannot reproduce.
    merge: Option<Merge>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    campaign_key: String,
    preview: Option<PathBuf>,
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

    fn build(
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
        let out = mail::build(
            &head,
            &c.full_name(),
            &c.email,
            envelope_from,
            message_id,
            SystemTime::now(),
            &rendered,
        )
        .map_err(UsageError)?;
        Ok((rendered, out))
    }

    fn write_preview(&self, stem: &str, rendered: &Rendered, out: &Outgoing) -> anyhow::Result<()> {
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

/// Send `notice` as `args` says.
pub async fn run(cfg: &Config, notice: Notice, args: SendArgs) -> anyhow::Result<()> {
    // 1. Everything that can be wrong with the input is checked before anything is written (the
    // database is opened early only to learn where the contacts come from).
    let campaign_key = args
        .campaign
        .clone()
        .unwrap_or_else(|| notice.campaign_key());
    if let Err(why) = crate::notice::check_campaign_key(&campaign_key) {
        let given = if args.campaign.is_some() {
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
    let to_addr = match &args.to {
        Some(a) => Some(contacts::check_address(a).map_err(|e| UsageError(format!("--to: {e}")))?),
        None => None,
    };
    let audience = args
        .audience
        .unwrap_or_else(|| notice.default_audience(cfg));
    // The contacts' source is the configured file, or the file last imported by hand while the
    // configuration is unchanged (the store records it): read and checked, nothing written.
    let store = Store::open(&cfg.database_url).await?;
    let contacts_source = super::contacts::NoticeContacts::read(cfg, &store).await?;
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
        preview: args.preview.clone(),
    });

    // 2. The database: contacts mirror their source (refused when too many would go); a dry run
    // only works out what the sync would change, and sees the contacts as it would leave them.
    let planned = contacts_source
        .sync(cfg, &store, args.dry_run, args.allow_removals, args.format)
        .await?;

    let delivery = if args.dry_run {
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

    let result = if let Some(addr) = to_addr {
        send_one_copy(&store, &job, delivery, &addr).await
    } else if args.dry_run {
        dry_run(&store, &job, audience, &args, planned.unwrap_or_default()).await
    } else {
        let delivery = delivery.expect("not a dry run");
        deliver(
            &store,
            job,
            &notice,
            audience,
            delivery,
            &probe_render.subject,
            &args,
        )
        .await
    };
    store.close().await;
    result
}

/// `--to ADDR`: one copy, not recorded. Rendered with that person's data when they are a contact.
async fn send_one_copy(
    store: &Store,
    job: &Job,
    delivery: Option<Delivery>,
    addr: &str,
) -> anyhow::Result<()> {
    let known = store.contacts(true).await?;
    let contact = known
        .into_iter()
        .map(|s| s.contact)
        .find(|c| c.email == addr)
        .unwrap_or_else(|| Contact {
            email: addr.to_string(),
            first_name: addr.split('@').next().unwrap_or("").to_string(),
            last_name: String::new(),
            ..probe_contact()
        });
    let message_id = new_message_id(&job.from);
    let (rendered, out) = job.build(&contact, &job.cfg.bounce_address, &message_id)?;
    job.write_preview(&format!("copy-{addr}"), &rendered, &out)?;
    match delivery {
        None => say!("dry run: rendered one copy for {addr}; nothing sent"),
        Some(d) => {
            let mut session = Session::default();
            d.send(&mut session, &out, &format!("copy-{addr}")).await?;
            session.close().await;
            if d.is_outbox() {
                say!("wrote one copy for {addr} to {}", d.describe());
            } else {
                say!(
                    "sent one copy to {addr} via {} (not recorded)",
                    d.describe()
                );
            }
        }
    }
    Ok(())
}

/// `--dry-run`: render every message the run would send to `contacts` (the export's contacts
/// as the sync would store them); change nothing in the database.
async fn dry_run(
    store: &Store,
    job: &Job,
    audience: Audience,
    args: &SendArgs,
    contacts: Vec<crate::store::StoredContact>,
) -> anyhow::Result<()> {
    let members: Vec<_> = contacts
        .into_iter()
        .filter(|c| audience.includes(&c.contact))
        .collect();
    let done: std::collections::HashSet<String> = match store
        .find_campaign(&job.campaign_key)
        .await?
    {
        Some(c) => store
            .sends(&c)
            .await?
            .into_iter()
            .filter(|s| s.state == state::SENT || (s.state == state::FAILED && !args.retry_failed))
            .map(|s| s.email)
            .collect(),
        None => Default::default(),
    };
    let mut summary = Summary {
        campaign: job.campaign_key.clone(),
        audience: audience.to_string(),
        mode: "dry-run".into(),
        target: String::new(),
        recipients: members.len() as i64,
        ..Default::default()
    };
    for (i, m) in members.iter().enumerate() {
        if m.needs_update {
            summary.skipped += 1;
            continue;
        }
        if done.contains(&m.contact.email) && !args.resend {
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
    print_summary(&summary, args.format, "would send")?;
    Ok(())
}

/// The real run.
async fn deliver(
    store: &Store,
    job: Arc<Job>,
    notice: &Notice,
    audience: Audience,
    delivery: Delivery,
    subject: &str,
    args: &SendArgs,
) -> anyhow::Result<()> {
    let cfg = &job.cfg;
    let campaign = store
        .campaign(&job.campaign_key, notice.template(), subject)
        .await?;
    if args.resend {
        store.reset_for_resend(&campaign).await?;
    }
    if args.retry_failed {
        let n = store.reset_failed(&campaign).await?;
        eprintln!("--retry-failed: {n} recipient(s) the server had refused are queued again");
    }
    store.add_recipients(&campaign, audience).await?;
    let outbox = delivery.is_outbox();
    let before = store.counts(&campaign, audience).await?;
    let already = before.get(state::SENT)
        + if outbox {
            before.get(state::WRITTEN)
        } else {
            0
        };
    let to_do = before.get(state::PENDING)
        + before.get(state::DEFERRED)
        + before.get(state::SENDING)
        + if outbox {
            0
        } else {
            before.get(state::WRITTEN)
        };

    let mut summary = Summary {
        campaign: campaign.key.clone(),
        audience: audience.to_string(),
        mode: if outbox { "outbox" } else { "smtp" }.into(),
        target: delivery.describe(),
        ..Default::default()
    };

    let mut unreachable: Option<String> = None;
    let mut stopped: Option<(SendError, bool)> = None;
    let mut budget_spent = false;
    let mut budget_again: Option<chrono::DateTime<Utc>> = None;
    // Deliveries by this run (other runs may be sharing the notice on PostgreSQL).
    let mut delivered: i64 = 0;
    let mut worker: Option<String> = None;
    if to_do > 0 {
        // Nothing is claimed until the server (or folder) answers.
        delivery.check().await?;
        let budget = if outbox || cfg.daily_recipient_limit == 0 {
            None
        } else {
            let day = chrono::Duration::hours(24);
            let (used, first) = store.sent_since(Utc::now() - day).await?;
            let left = (i64::try_from(cfg.daily_recipient_limit).unwrap_or(i64::MAX) - used).max(0);
            budget_again = first.map(|t| t + day);
            if left < to_do {
                eprintln!(
                    "note: the daily recipient limit ({} in 24 hours{}) has {left} left after {used} sent: sending to {left} of {to_do} now, the rest on a later run",
                    cfg.daily_recipient_limit,
                    cfg.provider.map(|p| format!(", {}", p.name)).unwrap_or_default(),
                );
            }
            Some(Arc::new(std::sync::atomic::AtomicI64::new(left)))
        };
        let secret = verp_secret(store).await?;
        let progress = progress_bar(to_do as u64);
        let stats = Arc::new(RunStats::default());
        let delivery = Arc::new(delivery);
        let rate = Arc::new(RateLimiter::new(cfg.rate));
        let worker_id = format!(
            "{}-{}-{:08x}",
            hostname(),
            std::process::id(),
            rand::random::<u32>()
        );
        join_run(store, &campaign, &worker_id, cfg.lease_seconds).await?;
        let heart = {
            let (store, id) = (store.clone(), worker_id.clone());
            let lease = chrono::Duration::seconds(cfg.lease_seconds as i64);
            let every = Duration::from_secs((cfg.lease_seconds / 3).max(1));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = store.heartbeat(&id, Utc::now() + lease).await {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                }
            })
        };
        let run_started = Utc::now();
        let recorder = {
            let (store, written) = (store.clone(), delivery.is_outbox());
            Arc::new(GroupCommit::start(move |ids| {
                let store = store.clone();
                async move {
                    store
                        .mark_done(&ids, written)
                        .await
                        .map_err(|e| e.to_string())
                }
            }))
        };
        let mut tasks = tokio::task::JoinSet::new();
        let (feed, queue) = tokio::sync::mpsc::channel(cfg.concurrency * 2);
        let feeder = Feeder {
            store: store.clone(),
            job: job.clone(),
            campaign: campaign.clone(),
            audience,
            outbox: delivery.is_outbox(),
            stats: stats.clone(),
            secret: secret.clone(),
            worker_id: worker_id.clone(),
            run_started,
            claim_batch: claim_batch(to_do, cfg.concurrency),
            budget,
        };
        tasks.spawn(async move { feeder.run(feed).await });
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..cfg.concurrency {
            let w = Worker {
                store: store.clone(),
                job: job.clone(),
                queue: queue.clone(),
                delivery: delivery.clone(),
                rate: rate.clone(),
                stats: stats.clone(),
                recorder: recorder.clone(),
                progress: progress.clone(),
                leaving: AtomicBool::new(false),
            };
            stats.active.fetch_add(1, Ordering::SeqCst);
            tasks.spawn(async move { w.run().await });
        }
        drop(queue);
        let mut first_error: Option<anyhow::Error> = None;
        while let Some(res) = tasks.join_next().await {
            let res = res.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = res {
                stats.abort.store(true, Ordering::SeqCst);
                first_error.get_or_insert(e);
            }
        }
        progress.finish_and_clear();
        // Every worker has waited for its last delivery; this commits anything a failed one
        // left behind before the claims are given back.
        if let Ok(recorder) = Arc::try_unwrap(recorder) {
            if let Err(e) = recorder.finish().await {
                first_error.get_or_insert(anyhow::anyhow!("recording deliveries: {e}"));
            }
        }
        heart.abort();
        store.release_claims(&worker_id).await?;
        store.remove_worker(&worker_id).await?;
        if let Some(e) = first_error {
            return Err(e);
        }
        unreachable = stats.unreachable.lock().ok().and_then(|g| g.clone());
        stopped = stats.stopped.lock().ok().and_then(|mut g| g.take());
        budget_spent = stats.budget_spent.load(Ordering::SeqCst);
        // Refusals still held as a possible streak were about their recipients, unless the
        // run stopped for the sender: then they are given back with the other claims.
        if stopped.is_none() {
            let held = stats
                .streak
                .lock()
                .map(|mut g| std::mem::take(&mut g.held))
                .unwrap_or_default();
            for (m, e) in held {
                record_failed(store, cfg, &delivery, &m, &e).await?;
            }
        }
        delivered = stats.delivered.load(Ordering::SeqCst) as i64;
        worker = Some(worker_id);
    }
    let after = store.counts(&campaign, audience).await?;
    if outbox {
        summary.written = delivered;
    } else {
        summary.sent = delivered;
    }
    summary.already_sent = already;
    summary.skipped = after.flagged;
    summary.failed = after.get(state::FAILED);
    summary.pending = after.get(state::PENDING)
        + after.get(state::DEFERRED)
        + after.get(state::SENDING)
        + if outbox { 0 } else { after.get(state::WRITTEN) };
    summary.recipients = after.by_state.values().sum::<i64>() + after.flagged;
    if let Some(me) = &worker {
        // Sharing the notice with other runs: what they hold is not left undone.
        let (left, held) = store.remaining(&campaign, audience, me, !outbox).await?;
        summary.pending = left;
        summary.in_progress_elsewhere = held;
    }
    print_summary(
        &summary,
        args.format,
        if outbox { "written" } else { "sent" },
    )?;
    if outbox && args.format == SummaryFormat::Text {
        say!(
            "messages were written to {} and not sent: no smtp_url is configured. To deliver them, set smtp_url in notify.toml or NOTIFY_SMTP_URL=smtp://host:port and run the same command again.",
            summary.target
        );
    }
    if let Some((e, streak)) = stopped {
        return Err(Incomplete(format!(
            "{}\n{} recipient(s) left to send.",
            refusal::advice(&e, streak, cfg, &summary.target),
            summary.pending
        ))
        .into());
    }
    if budget_spent && summary.pending > 0 {
        return Err(Incomplete(format!(
            "the daily recipient limit ({} in 24 hours{}) is used up; {} recipient(s) are left for a later run: run the same command again{}",
            cfg.daily_recipient_limit,
            cfg.provider.map(|p| format!(", {}", p.name)).unwrap_or_default(),
            summary.pending,
            budget_again
                .map(|t| format!(" after {}", t.with_timezone(&cfg.timezone).format("%Y-%m-%d %H:%M %Z")))
                .unwrap_or_default()
        ))
        .into());
    }
    if let Some(reason) = unreachable {
        return Err(Incomplete(format!(
            "{reason}\n{} recipient(s) left to send; run the same command again when the server is back",
            summary.pending
        ))
        .into());
    }
    if summary.pending > 0 {
        return Err(Incomplete(format!(
            "{} recipient(s) are deferred or not yet sent; run the same command again to retry them",
            summary.pending
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn claim_batches_leave_every_connection_a_share() {
        assert_eq!(super::claim_batch(40, 4), 2);
        assert_eq!(super::claim_batch(3, 10), 1);
        assert_eq!(super::claim_batch(0, 0), 1);
        assert_eq!(super::claim_batch(10_000, 10), 250);
        assert_eq!(super::claim_batch(100_000, 10), super::CLAIM_BATCH);
    }
}

#[derive(Default)]
struct RunStats {
    delivered: AtomicU64,
    abort: AtomicBool,
    unreachable: std::sync::Mutex<Option<String>>,
    /// The refusal about the sender that stopped the run, and whether it was seen as the same
    /// refusal for several recipients in a row.
    stopped: std::sync::Mutex<Option<(SendError, bool)>>,
    /// Recipient refusals not yet recorded: they may turn out to be one refusal of the sender's.
    streak: std::sync::Mutex<Streak>,
    /// Connections at work; one asked to go by the server leaves while others remain.
    active: std::sync::atomic::AtomicUsize,
    /// The daily recipient limit stopped the feeder.
    budget_spent: AtomicBool,
}

/// Throttling answers ("slow down") a message may get in one run before it is left deferred.
/// They do not count as attempts.
const MAX_THROTTLES: u32 = 8;

/// Recipient refusals held back while they may still be one refusal of the sender's. A
/// delivery or a different refusal in between shows they were not: they are recorded then.
#[derive(Default)]
struct Streak {
    key: Option<String>,
    held: Vec<(Prepared, SendError)>,
}

/// A claimed send with its message built, ready for a connection.
struct Prepared {
    claim: Claim,
    envelope_from: String,
    /// File name stem in the outbox and the preview folder.
    stem: String,
    out: Outgoing,
}

/// Claims sends in batches and builds their messages ahead of the connections, so that
/// rendering is off their critical path; a bounded queue keeps only a few built messages in
/// memory. Claimed sends not yet delivered when the run ends are given back.
struct Feeder {
    store: Store,
    job: Arc<Job>,
    campaign: Campaign,
    audience: Audience,
    outbox: bool,
    stats: Arc<RunStats>,
    secret: Vec<u8>,
    worker_id: String,
    run_started: chrono::DateTime<Utc>,
    claim_batch: usize,
    /// Recipients the daily recipient limit still allows in this run, if there is a limit.
    budget: Option<Arc<std::sync::atomic::AtomicI64>>,
}

impl Feeder {
    async fn run(self, queue: tokio::sync::mpsc::Sender<Prepared>) -> anyhow::Result<()> {
        let cfg = &self.job.cfg;
        let domain = self.job.from.email.domain().to_string();
        loop {
            if self.stats.abort.load(Ordering::SeqCst) {
                return Ok(());
            }
            // Many at a time: a claimed send that was not attempted is never a duplicate, so
            // batching claims costs nothing in crash safety and saves database work per message.
            let mut limit = self.claim_batch;
            if let Some(budget) = &self.budget {
                let left = budget.load(Ordering::SeqCst);
                if left <= 0 {
                    self.stats.budget_spent.store(true, Ordering::SeqCst);
                    return Ok(());
                }
                limit = limit.min(usize::try_from(left).unwrap_or(usize::MAX));
            }
            let lease = Utc::now() + chrono::Duration::seconds(cfg.lease_seconds as i64);
            let claims = self
                .store
                .claim_batch(
                    &self.campaign,
                    self.audience,
                    &self.worker_id,
                    lease,
                    !self.outbox,
                    self.run_started,
                    &domain,
                    limit,
                )
                .await?;
            if let Some(budget) = &self.budget {
                budget.fetch_sub(claims.len() as i64, Ordering::SeqCst);
            }
            if claims.is_empty() {
                return Ok(());
            }
            for claim in claims {
                if self.stats.abort.load(Ordering::SeqCst) {
                    return Ok(());
                }
                let prepared = self.prepare(claim).await?;
                if queue.send(prepared).await.is_err() {
                    // Every connection has stopped.
                    return Ok(());
                }
            }
        }
    }

    async fn prepare(&self, claim: Claim) -> anyhow::Result<Prepared> {
        let cfg = &self.job.cfg;
        let envelope_from =
            verp::envelope_sender(&cfg.bounce_address, &self.secret, claim.send_id, cfg.verp);
        let c = &claim.contact.contact;
        let (rendered, out) = match self.job.build(c, &envelope_from, &claim.message_id) {
            Ok(b) => b,
            Err(e) => {
                // Put the row back so a fixed template can send it later.
                self.store
                    .mark_undelivered(claim.send_id, state::DEFERRED, &format!("{e:#}"))
                    .await?;
                return Err(e.context(format!("rendering the message for {}", c.email)));
            }
        };
        let stem = format!("{:06}-{}", claim.send_id, c.email);
        self.job.write_preview(&stem, &rendered, &out)?;
        Ok(Prepared {
            claim,
            envelope_from,
            stem,
            out,
        })
    }
}

/// One connection: takes built messages from the queue and delivers them.
struct Worker {
    store: Store,
    job: Arc<Job>,
    queue: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Prepared>>>,
    delivery: Arc<Delivery>,
    rate: Arc<RateLimiter>,
    stats: Arc<RunStats>,
    recorder: Arc<GroupCommit>,
    progress: indicatif::ProgressBar,
    /// The server asked for fewer connections and this one is going.
    leaving: AtomicBool,
}

impl Worker {
    async fn run(self) -> anyhow::Result<()> {
        let mut session = Session::default();
        let mut last: Option<Ticket> = None;
        let mut result = self.work(&mut session, &mut last).await;
        if !self.leaving.load(Ordering::SeqCst) {
            self.stats.active.fetch_sub(1, Ordering::SeqCst);
        }
        session.close().await;
        if let Some(ticket) = last {
            let recorded = ticket
                .wait()
                .await
                .map_err(|e| anyhow::anyhow!("recording a delivery: {e}"));
            result = result.and(recorded);
        }
        result
    }

    /// `last` is the ticket of this worker's latest delivery; it is committed before the next
    /// message's final dot (see `GroupCommit`). A message is begun (sent up to its final dot)
    /// as soon as it is taken from the queue; its final dot then goes out together with the
    /// next message's envelope, so a message costs one round trip. The dot is never held back
    /// to wait for a next message: when none is ready to go at once (the queue is empty, or the
    /// rate limit puts the next one later), the open message is ended on its own. Anything
    /// that needs another attempt is retried on its own, after the open message is ended.
    async fn work(&self, session: &mut Session, last: &mut Option<Ticket>) -> anyhow::Result<()> {
        let mut open: Option<Prepared> = None;
        loop {
            let mut again = Vec::new();
            let next = if self.stats.abort.load(Ordering::SeqCst) {
                None
            } else if open.is_some() {
                // Another worker holding the queue is waiting for the feeder: nothing is ready.
                match self.queue.try_lock() {
                    Ok(mut queue) => queue.try_recv().ok(),
                    Err(_) => None,
                }
            } else {
                self.queue.lock().await.recv().await
            };
            if next.is_some() {
                if let Some(slot) = self.rate.reserve().await {
                    if slot > tokio::time::Instant::now() {
                        if let Some(cur) = open.take() {
                            self.end(cur, session, last, &mut again).await?;
                        }
                        tokio::time::sleep_until(slot).await;
                    }
                }
            }
            match (open.take(), next) {
                // Nothing was open, so nothing was ended above: `again` is empty.
                (None, None) => return Ok(()),
                (None, Some(m)) => match self.delivery.begin(session, &m.out).await {
                    Ok(()) => open = Some(m),
                    Err(e) => again.push((m, e)),
                },
                (Some(cur), None) => self.end(cur, session, last, &mut again).await?,
                (Some(cur), Some(m)) => {
                    self.recorded(last, session).await?;
                    let (verdict, begun) = self
                        .delivery
                        .finish_and_begin(session, &cur.out, &cur.stem, &m.out)
                        .await;
                    match verdict {
                        Ok(()) => self.delivered(&cur, last).await?,
                        Err(e) => again.push((cur, e)),
                    }
                    match begun {
                        Ok(()) => open = Some(m),
                        Err(e) => again.push((m, e)),
                    }
                }
            }
            if again.is_empty() {
                continue;
            }
            // One transaction at a time on a connection: end the open message first. Unless
            // the server has just refused the sender (a send-as refusal after the final dot):
            // the open message would get the same answer, so it is not ended at all; the
            // connection is dropped, the server discards it, and it stays to do.
            if let Some(cur) = open.take() {
                if again
                    .iter()
                    .any(|(_, e)| refusal::blame(e) == Blame::Sender)
                {
                    session.abandon();
                    drop(cur);
                } else {
                    self.end(cur, session, last, &mut again).await?;
                }
            }
            for (message, failure) in again {
                self.one(message, session, last, failure).await?;
            }
            if self.leaving.load(Ordering::SeqCst) {
                tracing::info!("closing a connection the server asked to give up");
                return Ok(());
            }
        }
    }

    /// Send the final dot of the open message `cur` once the previous delivery is committed;
    /// a failure joins `again`.
    async fn end(
        &self,
        cur: Prepared,
        session: &mut Session,
        last: &mut Option<Ticket>,
        again: &mut Vec<(Prepared, SendError)>,
    ) -> anyhow::Result<()> {
        self.recorded(last, session).await?;
        match self.delivery.finish(session, &cur.out, &cur.stem).await {
            Ok(()) => self.delivered(&cur, last).await?,
            Err(e) => again.push((cur, e)),
        }
        Ok(())
    }

    /// Wait until this worker's latest delivery is committed. If it cannot be, the message
    /// begun on the connection is left without its final dot: the server drops it.
    async fn recorded(
        &self,
        last: &mut Option<Ticket>,
        session: &mut Session,
    ) -> anyhow::Result<()> {
        if let Some(ticket) = last.take() {
            if let Err(e) = ticket.wait().await {
                session.abandon();
                return Err(anyhow::anyhow!("recording a delivery: {e}"));
            }
        }
        Ok(())
    }

    /// The server accepted `message`: it is recorded with the next group commit. Refusals
    /// held as a possible streak were about their recipients after all: recorded now.
    async fn delivered(&self, message: &Prepared, last: &mut Option<Ticket>) -> anyhow::Result<()> {
        *last = Some(self.recorder.add(message.claim.send_id));
        self.stats.delivered.fetch_add(1, Ordering::SeqCst);
        self.progress.inc(1);
        let held = {
            let mut streak = self.stats.streak.lock().map_err(|_| poisoned())?;
            if streak.held.is_empty() {
                return Ok(());
            }
            streak.key = None;
            std::mem::take(&mut streak.held)
        };
        for (m, e) in held {
            record_failed(&self.store, &self.job.cfg, &self.delivery, &m, &e).await?;
        }
        Ok(())
    }

    /// Deliver `message` on its own after attempt `failure`: another attempt after a backoff
    /// while the failure is worth one and attempts are left, otherwise the failure recorded. A
    /// refusal about the sender stops the run and marks nobody; throttling slows the whole run
    /// down without counting as an attempt.
    async fn one(
        &self,
        message: Prepared,
        session: &mut Session,
        last: &mut Option<Ticket>,
        failure: SendError,
    ) -> anyhow::Result<()> {
        let cfg = &self.job.cfg;
        let c = &message.claim.contact.contact;
        let base = Duration::from_millis(cfg.retry_base_ms);
        let mut attempt = 1u32;
        let mut throttled = 0u32;
        let mut failure = failure;
        loop {
            let e = failure;
            let aborting = self.stats.abort.load(Ordering::SeqCst);
            let wait = match refusal::blame(&e) {
                Blame::Recipient => {
                    tracing::info!(to = %c.email, error = %e, "refused");
                    self.progress.inc(1);
                    return self.refused(message, e).await;
                }
                Blame::Sender => {
                    // The claim is given back when the run ends: the send stays to do.
                    tracing::warn!(to = %c.email, error = %e, "refused: about the sender");
                    self.stop(e, false);
                    return Ok(());
                }
                Blame::Throttle if throttled < MAX_THROTTLES && !aborting => {
                    throttled += 1;
                    let wait = backoff(base, throttled, retry_after(&e.message));
                    let rate = self.rate.slow_down(wait).await;
                    tracing::warn!(error = %e, ?wait, rate, "the server asks to slow down");
                    if refusal::is_connection_limit(&e) {
                        self.leave_if_others_remain();
                    }
                    wait
                }
                _ if e.is_retryable() && attempt < cfg.max_attempts && !aborting => {
                    attempt += 1;
                    backoff(base, attempt - 1, retry_after(&e.message))
                }
                _ => {
                    self.progress.inc(1);
                    return self.give_up(&message, e).await;
                }
            };
            tracing::info!(to = %c.email, error = %e, ?wait, "will retry");
            tokio::time::sleep(wait).await;
            let sent = match self.delivery.begin(session, &message.out).await {
                Ok(()) => {
                    self.recorded(last, session).await?;
                    self.delivery
                        .finish(session, &message.out, &message.stem)
                        .await
                }
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => {
                    self.delivered(&message, last).await?;
                    return Ok(());
                }
                Err(e) => failure = e,
            }
        }
    }

    /// A refusal about the sender, the account or the message as a whole: stop claiming and
    /// sending; nobody is marked, everything not delivered stays to do.
    fn stop(&self, e: SendError, streak: bool) {
        if let Ok(mut g) = self.stats.stopped.lock() {
            g.get_or_insert((e, streak));
        }
        self.stats.abort.store(true, Ordering::SeqCst);
    }

    /// The server limits connections: this one goes once its message is dealt with, unless
    /// it is the last one.
    fn leave_if_others_remain(&self) {
        let left = self
            .stats
            .active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n > 1).then(|| n - 1)
            });
        if left.is_ok() {
            self.leaving.store(true, Ordering::SeqCst);
        }
    }

    /// A refusal about this recipient. It is recorded at once, unless it reads like the
    /// previous ones with only the address changed: then it is held until a delivery or a
    /// different refusal shows it was about the recipient, and a third in a row stops the run
    /// as a refusal of the sender (the held ones go back to the queue, unmarked).
    async fn refused(&self, message: Prepared, e: SendError) -> anyhow::Result<()> {
        let key = refusal::streak_key(&e, &message.claim.contact.contact.email);
        let (to_record, stop) = {
            let mut streak = self.stats.streak.lock().map_err(|_| poisoned())?;
            let mut to_record = Vec::new();
            if key.is_none() || streak.key != key {
                to_record = std::mem::take(&mut streak.held);
                streak.key = key.clone();
            }
            let mut stop = None;
            if key.is_some() {
                streak.held.push((message, e.clone()));
                if streak.held.len() >= refusal::STREAK {
                    stop = Some(e);
                }
            } else {
                to_record.push((message, e));
            }
            (to_record, stop)
        };
        for (m, e) in to_record {
            record_failed(&self.store, &self.job.cfg, &self.delivery, &m, &e).await?;
        }
        if let Some(e) = stop {
            self.stop(e, true);
        }
        Ok(())
    }

    /// No more attempts in this run: `deferred` with the reason. A lost server stops the run.
    async fn give_up(&self, message: &Prepared, e: SendError) -> anyhow::Result<()> {
        self.store
            .mark_undelivered(message.claim.send_id, state::DEFERRED, &e.message)
            .await?;
        if e.is_connection() {
            // Lost the server for good in this run: stop claiming more.
            if self.delivery.check().await.is_err() {
                if let Ok(mut g) = self.stats.unreachable.lock() {
                    g.get_or_insert_with(|| {
                        format!(
                            "the SMTP server at {} stopped answering: {}",
                            self.delivery.describe(),
                            e.message
                        )
                    });
                }
                self.stats.abort.store(true, Ordering::SeqCst);
            }
        } else if !e.is_retryable() {
            let c = &message.claim.contact.contact;
            return Err(
                anyhow::Error::new(e).context(format!("delivering the message for {}", c.email))
            );
        }
        Ok(())
    }
}

/// A refusal about one recipient at send time is a bounce: the send is marked failed and the
/// refusal recorded against it, like an imported bounce, so the policy and the review see it.
/// A message notify itself would not send to this server only fails.
async fn record_failed(
    store: &Store,
    cfg: &Config,
    delivery: &Delivery,
    message: &Prepared,
    e: &SendError,
) -> anyhow::Result<()> {
    let reply = e.message.as_str();
    store
        .mark_undelivered(message.claim.send_id, state::FAILED, reply)
        .await?;
    if e.is_unsupported() {
        // notify would not send it to this server (no SMTPUTF8): the send failed, but the
        // address was never refused by anyone, so it is no bounce and flags nobody.
        return Ok(());
    }
    let (claim, envelope_from, message_id) = (
        &message.claim,
        &message.envelope_from,
        &message.claim.message_id,
    );
    let (kind, reason, status) = crate::bounce::classify_text(reply, true);
    let item = Incoming {
        origin: format!("smtp:{}", delivery.describe()),
        source_key: format!("smtp:{}:{}", claim.send_id, message_id),
        raw: reply.as_bytes().to_vec(),
        found: Ok(Found {
            bounces: vec![Bounce {
                address: claim.contact.contact.email.clone(),
                kind,
                status,
                reason,
                diagnostic: Some(crate::render::one_line(reply)),
                remote_mta: Some(delivery.describe()),
            }],
            verp_recipient: Some(envelope_from.to_string()),
            original_message_id: Some(message_id.to_string()),
            occurred_at: Some(Utc::now()),
        }),
    };
    let mut summary = crate::ledger::ImportSummary::default();
    let policy = crate::policy::Policy::of(cfg);
    crate::ledger::record(store, &policy, &[item], &mut summary).await
}

fn poisoned() -> anyhow::Error {
    anyhow::anyhow!("a delivery worker stopped in the middle of recording a refusal")
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {pos}/{len} {wide_bar} {per_sec} eta {eta}",
    ) {
        pb.set_style(style);
    }
    pb
}

/// Register this run on the campaign. Runs on this host whose process is gone (killed) and runs
/// whose heartbeat stopped are forgotten first, so their in-flight sends are retaken at once. On
/// SQLite only one run may send a campaign at a time; on PostgreSQL runs share the work.
async fn join_run(
    store: &Store,
    campaign: &Campaign,
    worker_id: &str,
    lease_seconds: u64,
) -> anyhow::Result<()> {
    let host = hostname();
    for w in store.workers(campaign).await? {
        if w.host == host && !process_alive(w.pid) {
            tracing::info!(run = %w.id, "forgetting a run whose process is gone");
            store.remove_worker(&w.id).await?;
        }
    }
    let alive_after = Utc::now() - chrono::Duration::seconds(lease_seconds as i64);
    store.remove_stale_workers(alive_after).await?;
    let exclusive = store.backend() == crate::store::Backend::Sqlite;
    let pid = i64::from(std::process::id());
    if store
        .register_worker(worker_id, campaign, &host, pid, exclusive, alive_after)
        .await?
    {
        return Ok(());
    }
    let others = store.workers(campaign).await?;
    let who = others
        .iter()
        .map(|w| format!("pid {} on {} (started {})", w.pid, w.host, w.started_at))
        .collect::<Vec<_>>()
        .join(", ");
    Err(Incomplete(format!(
        "another notify run is already sending {}: {who}. Wait for it to finish, or stop it and run the command again; nothing was sent by this run",
        campaign.key
    ))
    .into())
}

/// Is process `pid` on this machine still running? Where that cannot be told, assume it is
/// (the heartbeat then decides).
fn process_alive(pid: i64) -> bool {
    let proc_root = std::path::Path::new("/proc");
    if !proc_root.join("self").exists() {
        return true;
    }
    proc_root.join(pid.to_string()).exists()
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn print_summary(s: &Summary, format: SummaryFormat, verb: &str) -> anyhow::Result<()> {
    match format {
        SummaryFormat::Json => say!("{}", serde_json::to_string(s)?),
        SummaryFormat::Text => {
            let done = if s.mode == "outbox" {
                s.written
            } else if s.mode == "smtp" {
                s.sent
            } else {
                s.pending
            };
            let target = if s.target.is_empty() {
                String::new()
            } else {
                format!(" via {}", s.target)
            };
            let pending = if s.mode == "dry-run" { 0 } else { s.pending };
            let already = if s.mode == "outbox" {
                "already written"
            } else {
                "already sent"
            };
            say!(
                "{} to {}{}: {} {}, {} {}, {} skipped, {} failed, {} pending",
                s.campaign,
                s.audience,
                target,
                done,
                verb,
                s.already_sent,
                already,
                s.skipped,
                s.failed,
                pending
            );
            if s.in_progress_elsewhere > 0 {
                say!(
                    "{} more are being sent right now by another run",
                    s.in_progress_elsewhere
                );
            }
        }
    }
    Ok(())
}
