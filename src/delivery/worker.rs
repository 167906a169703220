//! The feeder and the workers of a delivery run: the feeder claims sends in batches (within the
//! daily budget) and builds their messages ahead of the connections; each worker is one
//! connection that delivers them, pipelining each final dot with the next envelope, retrying
//! with backoff, slowing the whole run down when throttled, telling a refusal of one recipient
//! from a refusal of the sender (streaks), and recording each outcome (deliveries through the
//! group commit, refusals in the bounce ledger).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::{Event, Job, Reporter};
use crate::bounce::Bounce;
use crate::config::Config;
use crate::contacts::Audience;
use crate::intake::{Found, Incoming};
use crate::mail::refusal::{self, Blame};
use crate::mail::sender::{backoff, retry_after, GroupCommit, RateLimiter, Ticket};
use crate::mail::transport::Session;
use crate::mail::{verp, Delivery, Outgoing, SendError};
use crate::store::{Campaign, Claim, SendState, Store};

/// The most sends a run's feeder claims at a time. Fewer when the notice is small (a quarter of
/// an even split over the connections), so that runs sharing a notice on PostgreSQL each get
/// a share and a run never holds much more than it can soon send.
const CLAIM_BATCH: usize = 256;

pub(super) fn claim_batch(to_do: i64, concurrency: usize) -> usize {
    let share = usize::try_from(to_do).unwrap_or(0) / (concurrency.max(1) * 4);
    share.clamp(1, CLAIM_BATCH)
}

#[derive(Default)]
pub(super) struct RunStats {
    pub(super) delivered: AtomicU64,
    pub(super) abort: AtomicBool,
    pub(super) unreachable: std::sync::Mutex<Option<String>>,
    /// The refusal about the sender that stopped the run, and whether it was seen as the same
    /// refusal for several recipients in a row.
    pub(super) stopped: std::sync::Mutex<Option<(SendError, bool)>>,
    /// Recipient refusals not yet recorded: they may turn out to be one refusal of the sender's.
    pub(super) streak: std::sync::Mutex<Streak>,
    /// Connections at work; one asked to go by the server leaves while others remain.
    pub(super) active: std::sync::atomic::AtomicUsize,
    /// The daily recipient limit stopped the feeder.
    pub(super) budget_spent: AtomicBool,
}

/// Throttling answers ("slow down") a message may get in one run before it is left deferred.
/// They do not count as attempts.
const MAX_THROTTLES: u32 = 8;

/// Recipient refusals held back while they may still be one refusal of the sender's. A
/// delivery or a different refusal in between shows they were not: they are recorded then.
#[derive(Default)]
pub(super) struct Streak {
    pub(super) key: Option<String>,
    pub(super) held: Vec<(Prepared, SendError)>,
}

/// A claimed send with its message built, ready for a connection.
pub(super) struct Prepared {
    claim: Claim,
    envelope_from: String,
    /// File name stem in the outbox and the preview folder.
    stem: String,
    out: Outgoing,
}

/// Claims sends in batches and builds their messages ahead of the connections, so that
/// rendering is off their critical path; a bounded queue keeps only a few built messages in
/// memory. Claimed sends not yet delivered when the run ends are given back.
pub(super) struct Feeder {
    pub(super) store: Store,
    pub(super) job: Arc<Job>,
    pub(super) campaign: Campaign,
    pub(super) audience: Audience,
    pub(super) outbox: bool,
    pub(super) stats: Arc<RunStats>,
    pub(super) secret: Vec<u8>,
    pub(super) worker_id: String,
    pub(super) run_started: chrono::DateTime<Utc>,
    pub(super) claim_batch: usize,
    /// Recipients the daily recipient limit still allows in this run, if there is a limit.
    pub(super) budget: Option<Arc<std::sync::atomic::AtomicI64>>,
}

impl Feeder {
    pub(super) async fn run(
        self,
        queue: tokio::sync::mpsc::Sender<Prepared>,
    ) -> anyhow::Result<()> {
        // The next batch is claimed while this one is built and queued: the database's time
        // is off the connections' path too (it grows with the tables; building does not).
        // Claimed sends never attempted are no duplicates: the run gives them back.
        let mut claims = self.claim().await?;
        loop {
            if claims.is_empty() || self.stats.abort.load(Ordering::SeqCst) {
                return Ok(());
            }
            let (next, queued) = tokio::join!(self.claim(), self.queue(claims, &queue));
            if !queued? {
                return Ok(());
            }
            claims = next?;
        }
    }

    /// The next batch of sends for this run: many at a time (a claimed send that was not
    /// attempted is never a duplicate, so batching claims costs nothing in crash safety and
    /// saves database work per message), no more than the daily budget allows. Empty when
    /// there is nothing left or the budget is spent.
    async fn claim(&self) -> anyhow::Result<Vec<Claim>> {
        let cfg = &self.job.cfg;
        let domain = self.job.from.email.domain().to_string();
        let mut limit = self.claim_batch;
        if let Some(budget) = &self.budget {
            let left = budget.load(Ordering::SeqCst);
            if left <= 0 {
                self.stats.budget_spent.store(true, Ordering::SeqCst);
                return Ok(Vec::new());
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
        Ok(claims)
    }

    /// Build the claimed messages and hand them to the connections; `false` when the run is
    /// stopping (aborted, or every connection has stopped).
    async fn queue(
        &self,
        claims: Vec<Claim>,
        queue: &tokio::sync::mpsc::Sender<Prepared>,
    ) -> anyhow::Result<bool> {
        for claim in claims {
            if self.stats.abort.load(Ordering::SeqCst) {
                return Ok(false);
            }
            let prepared = self.prepare(claim).await?;
            if queue.send(prepared).await.is_err() {
                // Every connection has stopped.
                return Ok(false);
            }
        }
        Ok(true)
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
                    .mark_undelivered(claim.send_id, SendState::Deferred, &format!("{e:#}"))
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
pub(super) struct Worker {
    pub(super) store: Store,
    pub(super) job: Arc<Job>,
    pub(super) queue: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Prepared>>>,
    pub(super) delivery: Arc<Delivery>,
    pub(super) rate: Arc<RateLimiter>,
    pub(super) stats: Arc<RunStats>,
    pub(super) recorder: Arc<GroupCommit>,
    pub(super) report: Reporter,
    /// The server asked for fewer connections and this one is going.
    pub(super) leaving: AtomicBool,
}

impl Worker {
    pub(super) async fn run(self) -> anyhow::Result<()> {
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
        (self.report)(Event::Done);
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
                    (self.report)(Event::Done);
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
                    (self.report)(Event::Done);
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
            .mark_undelivered(message.claim.send_id, SendState::Deferred, &e.message)
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
pub(super) async fn record_failed(
    store: &Store,
    cfg: &Config,
    delivery: &Delivery,
    message: &Prepared,
    e: &SendError,
) -> anyhow::Result<()> {
    let reply = e.message.as_str();
    store
        .mark_undelivered(message.claim.send_id, SendState::Failed, reply)
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
    // The reply's words give the reason; the server's reply code says whether it gave up for
    // good (a 5xx: permanent), whatever the words. Hard exactly when the address is gone or
    // wrong (an unknown user at RCPT TO): a refusal of the message itself (spam, policy,
    // size) is soft and counts toward the repeated-soft rule only.
    let at_rcpt = e.stage == Some(crate::mail::Stage::RcptTo);
    let (_, reason, status, said_permanent) = crate::bounce::classify_refusal(reply, at_rcpt);
    let permanent = match e.code {
        Some(_) => e.is_permanent(),
        None => said_permanent,
    };
    let kind = crate::bounce::BounceKind::of(reason, permanent);
    let item = Incoming {
        origin: format!("smtp:{}", delivery.describe()),
        source_key: format!("smtp:{}:{}", claim.send_id, message_id),
        raw: reply.as_bytes().to_vec(),
        found: Ok(Found {
            bounces: vec![Bounce {
                address: claim.contact.contact.email.clone(),
                kind,
                permanent,
                delayed: false,
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
