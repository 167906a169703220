//! Pacing and retry policy for delivery: a rate limiter that holds `rate` messages per second over
//! the whole run whatever the concurrency, and the backoff schedule for transient failures
//! (exponential with jitter, honouring a server's "try again in N seconds").

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Hands out send slots `1/rate` seconds apart, shared by every worker.
pub struct RateLimiter {
    /// The spacing between slots (`None`: no limit) and the next free slot.
    state: Mutex<(Option<Duration>, Option<Instant>)>,
}

/// The slowest a throttled run goes: one message a minute.
const SLOWEST: Duration = Duration::from_secs(60);

impl RateLimiter {
    /// `rate` messages per second; 0 means no limit.
    pub fn new(rate: f64) -> RateLimiter {
        let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
        RateLimiter {
            state: Mutex::new((interval, None)),
        }
    }

    /// Take the next slot, without waiting for it: when it starts, or `None` without a limit.
    /// Slots are spaced evenly from the first one, so the run's average rate is exact and a
    /// burst after a pause cannot exceed it.
    pub async fn reserve(&self) -> Option<Instant> {
        let mut state = self.state.lock().await;
        let interval = state.0?;
        let now = Instant::now();
        let slot = match state.1 {
            Some(n) if n > now => n,
            _ => now,
        };
        state.1 = Some(slot + interval);
        Some(slot)
    }

    /// The server asked to slow down: half the rate from now on (one message a second when
    /// there was no limit, never slower than one a minute), and no slot before `pause` has
    /// passed. Returns the new rate in messages per second.
    pub async fn slow_down(&self, pause: Duration) -> f64 {
        let mut state = self.state.lock().await;
        let interval = match state.0 {
            None => Duration::from_secs(1),
            Some(i) => (i * 2).min(SLOWEST),
        };
        state.0 = Some(interval);
        let resume = Instant::now() + pause;
        if state.1.is_none_or(|n| n < resume) {
            state.1 = Some(resume);
        }
        1.0 / interval.as_secs_f64()
    }
}

/// Records deliveries in groups. A worker hands over the send it has just delivered
/// ([`GroupCommit::add`]) and goes on with its next message; before that message's final dot it
/// waits for the ticket ([`Ticket::wait`]), so at most one delivered-but-unrecorded message per
/// worker can exist (the crash-safety bound). A group is committed when some worker needs its
/// ticket, and holds every delivery handed over by then: concurrent workers share one database
/// write, and the write overlaps with their next messages. The store call is given as a function
/// so that this module stays free of SQL.
pub struct GroupCommit {
    tx: tokio::sync::mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

enum Cmd {
    Add(i64, tokio::sync::oneshot::Sender<Result<(), String>>),
    Flush,
}

/// A delivery handed to the committer; [`Ticket::wait`] returns once it is committed.
pub struct Ticket {
    done: tokio::sync::oneshot::Receiver<Result<(), String>>,
    tx: tokio::sync::mpsc::UnboundedSender<Cmd>,
}

const STOPPED: &str = "the delivery recorder stopped";

impl GroupCommit {
    /// Start the committer; `commit` records a group of send ids.
    pub fn start<F, Fut>(commit: F) -> GroupCommit
    where
        F: Fn(Vec<i64>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send,
    {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Cmd>();
        let task = tokio::spawn(async move {
            let mut group: Vec<(i64, tokio::sync::oneshot::Sender<Result<(), String>>)> =
                Vec::new();
            let mut last = Ok(());
            loop {
                let cmd = rx.recv().await;
                let flush = match cmd {
                    Some(Cmd::Add(id, reply)) => {
                        group.push((id, reply));
                        false
                    }
                    Some(Cmd::Flush) => true,
                    None => true,
                };
                if flush {
                    // Everything handed over up to now joins this group.
                    while let Ok(more) = rx.try_recv() {
                        if let Cmd::Add(id, reply) = more {
                            group.push((id, reply));
                        }
                    }
                    if !group.is_empty() {
                        let ids = group.iter().map(|(id, _)| *id).collect();
                        let result = commit(ids).await;
                        if let Err(e) = &result {
                            last = Err(e.clone());
                        }
                        for (_, reply) in group.drain(..) {
                            let _ = reply.send(result.clone());
                        }
                    }
                }
                if cmd_closed(&rx) && group.is_empty() {
                    return last;
                }
            }
        });
        GroupCommit { tx, task }
    }

    /// Hand over a delivered send; it is committed with the next group.
    pub fn add(&self, send_id: i64) -> Ticket {
        let (reply, done) = tokio::sync::oneshot::channel();
        // If the committer is gone, `done` reports it.
        let _ = self.tx.send(Cmd::Add(send_id, reply));
        Ticket {
            done,
            tx: self.tx.clone(),
        }
    }

    /// Commit what is still handed over and stop; the error of any group that failed.
    pub async fn finish(self) -> Result<(), String> {
        let GroupCommit { tx, task } = self;
        drop(tx);
        task.await.map_err(|_| STOPPED.to_string())?
    }
}

/// True once no sender is left and nothing is queued.
fn cmd_closed(rx: &tokio::sync::mpsc::UnboundedReceiver<Cmd>) -> bool {
    rx.is_closed() && rx.is_empty()
}

impl Ticket {
    /// Wait until the delivery is committed, asking for a commit if it is not yet.
    pub async fn wait(mut self) -> Result<(), String> {
        match self.done.try_recv() {
            Ok(result) => return result,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                return Err(STOPPED.to_string())
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
        }
        let _ = self.tx.send(Cmd::Flush);
        drop(self.tx);
        self.done.await.map_err(|_| STOPPED.to_string())?
    }
}

/// How long to wait before attempt `attempt` (1-based count of attempts already made):
/// `base * 2^(attempt-1)`, with up to 25% jitter, at least what the server asked for, capped at
/// five minutes.
pub fn backoff(base: Duration, attempt: u32, server_asked: Option<Duration>) -> Duration {
    use rand::Rng;
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let jitter = exp.mul_f64(rand::thread_rng().gen_range(0.0..0.25));
    let wait = (exp + jitter).max(server_asked.unwrap_or_default());
    wait.min(Duration::from_secs(300))
}

/// Find "try again in N seconds" (or minutes) in a server reply.
pub fn retry_after(reply: &str) -> Option<Duration> {
    let lower = reply.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    for (i, w) in words.iter().enumerate() {
        let Ok(n) = w.parse::<u64>() else { continue };
        let unit = words.get(i + 1).copied().unwrap_or("");
        let secs = if unit.starts_with("sec") || unit == "s" {
            n
        } else if unit.starts_with("min") {
            n * 60
        } else {
            continue;
        };
        let context = words[i.saturating_sub(4)..i].join(" ");
        if context.contains("again")
            || context.contains("retry")
            || context.contains("wait")
            || context.contains("after")
            || context.contains("in")
        {
            return Some(Duration::from_secs(secs.min(3600)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_try_again_hints() {
        assert_eq!(
            retry_after("451 4.7.1 Greylisted, please try again in 30 seconds"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("421 Too many connections; retry after 2 minutes"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(retry_after("450 mailbox busy"), None);
    }

    #[test]
    fn backoff_grows_and_respects_the_server() {
        let b = Duration::from_millis(100);
        assert!(backoff(b, 1, None) >= b && backoff(b, 1, None) < b * 2);
        assert!(backoff(b, 3, None) >= b * 4);
        assert_eq!(
            backoff(b, 1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slowing_down_halves_the_rate_and_pauses() {
        let rl = RateLimiter::new(0.0);
        assert!(rl.reserve().await.is_none());
        let start = Instant::now();
        assert_eq!(rl.slow_down(Duration::from_secs(5)).await, 1.0);
        assert_eq!(rl.reserve().await, Some(start + Duration::from_secs(5)));
        assert_eq!(rl.reserve().await, Some(start + Duration::from_secs(6)));
        assert_eq!(rl.slow_down(Duration::ZERO).await, 0.5);
        for _ in 0..10 {
            rl.slow_down(Duration::ZERO).await;
        }
        assert_eq!(rl.slow_down(Duration::ZERO).await, 1.0 / 60.0);
        let rl = RateLimiter::new(0.5);
        assert_eq!(rl.slow_down(Duration::ZERO).await, 0.25);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_spaces_slots() {
        let rl = RateLimiter::new(50.0);
        let start = Instant::now();
        for _ in 0..51 {
            if let Some(slot) = rl.reserve().await {
                tokio::time::sleep_until(slot).await;
            }
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1000) && took < Duration::from_millis(1010),
            "{took:?}"
        );
    }
}
