//! Pacing and retry policy for delivery: a rate limiter that holds `rate` messages per second over
//! the whole run whatever the concurrency, and the backoff schedule for transient failures
//! (exponential with jitter, honouring a server's "try again in N seconds").

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Hands out send slots `1/rate` seconds apart, shared by every worker.
pub struct RateLimiter {
    interval: Option<Duration>,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `rate` messages per second; 0 means no limit.
    pub fn new(rate: f64) -> RateLimiter {
        let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
        RateLimiter {
            interval,
            next: Mutex::new(None),
        }
    }

    /// Wait for the next slot. Slots are spaced evenly from the first one, so the run's average
    /// rate is exact and a burst after a pause cannot exceed it.
    pub async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = match *next {
                Some(n) if n > now => n,
                _ => now,
            };
            *next = Some(slot + interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// Records deliveries in groups: every worker hands over the send it just delivered and waits
/// until it is committed before it sends again, so at most one delivered-but-unrecorded message
/// per worker can exist (the crash-safety bound), while concurrent workers share one database
/// write. The store call is given as a function so that this module stays free of SQL.
pub struct GroupCommit {
    tx: tokio::sync::mpsc::Sender<(i64, tokio::sync::oneshot::Sender<Result<(), String>>)>,
}

impl GroupCommit {
    /// Start the committer; `commit` records a group of send ids.
    pub fn start<F, Fut>(commit: F) -> GroupCommit
    where
        F: Fn(Vec<i64>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send,
    {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(
            i64,
            tokio::sync::oneshot::Sender<Result<(), String>>,
        )>(1024);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut group = vec![first];
                while let Ok(more) = rx.try_recv() {
                    group.push(more);
                    if group.len() >= 512 {
                        break;
                    }
                }
                let ids = group.iter().map(|(id, _)| *id).collect();
                let result = commit(ids).await;
                for (_, reply) in group {
                    let _ = reply.send(result.clone());
                }
            }
        });
        GroupCommit { tx }
    }

    /// Record `send_id` and wait until it is committed.
    pub async fn record(&self, send_id: i64) -> Result<(), String> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.tx
            .send((send_id, reply))
            .await
            .map_err(|_| "the delivery recorder stopped".to_string())?;
        done.await
            .map_err(|_| "the delivery recorder stopped".to_string())?
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
    async fn rate_limiter_spaces_slots() {
        let rl = RateLimiter::new(50.0);
        let start = Instant::now();
        for _ in 0..51 {
            rl.wait().await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1000) && took < Duration::from_millis(1010),
            "{took:?}"
        );
    }
}
