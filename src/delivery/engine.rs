//! The real run of a delivery: the campaign and its journal rows, the daily recipient budget,
//! the run registered and kept alive, the feeder and the workers started with the group commit
//! that records their deliveries, the refusals still held recorded, and the summary with what
//! is left when the run could not finish.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::registry::{hostname, join_run};
use super::worker::{claim_batch, record_failed, Feeder, RunStats, Worker};
use super::{Event, Incomplete, Job, Outcome, Reporter, Request, Summary, SummaryMode};
use crate::contacts::Audience;
use crate::ledger::verp_secret;
use crate::mail::refusal;
use crate::mail::sender::{GroupCommit, RateLimiter};
use crate::mail::{Delivery, SendError};
use crate::notice::Notice;
use crate::store::{NewCampaign, SendState, Store};

/// Deliver to the audience; the summary, and what is left when the run could not finish.
#[allow(clippy::too_many_arguments)]
pub(super) async fn deliver(
    store: &Store,
    job: Arc<Job>,
    notice: &Notice,
    audience: Audience,
    delivery: Delivery,
    subject: &str,
    request: &Request,
    report: &Reporter,
) -> anyhow::Result<Outcome> {
    let cfg = &job.cfg;
    let (starts_at, ends_at) = notice.announced();
    let campaign = store
        .campaign_with(&NewCampaign {
            key: &job.campaign_key,
            notice: notice.template(),
            subject,
            release: Some(notice.release()),
            starts_at,
            ends_at,
        })
        .await?;
    if request.resend {
        store.reset_for_resend(&campaign).await?;
    }
    if request.retry_failed {
        let n = store.reset_failed(&campaign).await?;
        report(Event::Requeued(n));
    }
    if notice.recipients_of().is_empty() {
        store.add_recipients(&campaign, audience).await?;
    } else {
        // A window's move or cancel: only who was told of the window before.
        store
            .add_recipients_of(&campaign, audience, notice.recipients_of())
            .await?;
    }
    let outbox = delivery.is_outbox();
    let before = store.counts(&campaign, audience).await?;
    let already = before.get(SendState::Sent)
        + if outbox {
            before.get(SendState::Written)
        } else {
            0
        };
    let to_do = before.get(SendState::Pending)
        + before.get(SendState::Deferred)
        + before.get(SendState::Sending)
        + if outbox {
            0
        } else {
            before.get(SendState::Written)
        };

    let mut summary = Summary {
        campaign: campaign.key.clone(),
        release: job.release.clone(),
        audience: audience.to_string(),
        mode: if outbox {
            SummaryMode::Outbox
        } else {
            SummaryMode::Smtp
        },
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
                report(Event::BudgetShort(format!(
                    "the daily recipient limit ({} in 24 hours{}) has {left} left after {used} sent: sending to {left} of {to_do} now, the rest on a later run",
                    cfg.daily_recipient_limit,
                    cfg.provider.map(|p| format!(", {}", p.name)).unwrap_or_default(),
                )));
            }
            Some(Arc::new(std::sync::atomic::AtomicI64::new(left)))
        };
        let secret = verp_secret(store).await?;
        report(Event::Started(to_do as u64));
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
                report: report.clone(),
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
        report(Event::Finished);
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
    summary.failed = after.get(SendState::Failed);
    summary.pending = after.get(SendState::Pending)
        + after.get(SendState::Deferred)
        + after.get(SendState::Sending)
        + if outbox {
            0
        } else {
            after.get(SendState::Written)
        };
    summary.recipients = after.by_state.values().sum::<i64>() + after.flagged;
    if let Some(me) = &worker {
        // Sharing the notice with other runs: what they hold is not left undone.
        let (left, held) = store.remaining(&campaign, audience, me, !outbox).await?;
        summary.pending = left;
        summary.in_progress_elsewhere = held;
    }
    let unfinished = if let Some((e, streak)) = stopped {
        Some(Incomplete(format!(
            "{}\n{} recipient(s) left to send.",
            refusal::advice(&e, streak, cfg, &summary.target),
            summary.pending
        )))
    } else if budget_spent && summary.pending > 0 {
        Some(Incomplete(format!(
            "the daily recipient limit ({} in 24 hours{}) is used up; {} recipient(s) are left for a later run: run the same command again{}",
            cfg.daily_recipient_limit,
            cfg.provider.map(|p| format!(", {}", p.name)).unwrap_or_default(),
            summary.pending,
            budget_again
                .map(|t| format!(" after {}", t.with_timezone(&cfg.timezone).format("%Y-%m-%d %H:%M %Z")))
                .unwrap_or_default()
        )))
    } else if let Some(reason) = unreachable {
        Some(Incomplete(format!(
            "{reason}\n{} recipient(s) left to send; run the same command again when the server is back",
            summary.pending
        )))
    } else if summary.pending > 0 {
        Some(Incomplete(format!(
            "{} recipient(s) are deferred or not yet sent; run the same command again to retry them",
            summary.pending
        )))
    } else {
        None
    };
    Ok(Outcome::Run {
        summary,
        unfinished,
    })
}
