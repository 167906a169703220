//! Delivery under load and faults: a 4xx or a dropped connection at any stage, kill -9 in the
//! middle of a large send, two runs sharing a notice on PostgreSQL, one run per notice on
//! SQLite, and the rate limit.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::both;
use crate::harness::{generated_contacts, Backend, Env};
use crate::support::smtp_server::{Rule, SmtpServer};

fn counts(lists: impl IntoIterator<Item = Vec<String>>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lists {
        for r in l {
            *m.entry(r).or_insert(0) += 1;
        }
    }
    m
}

async fn transient_faults_at_every_stage_are_retried(b: Backend) {
    faults_at_every_stage(b, true).await;
}
both!(transient_faults_at_every_stage_are_retried);

async fn transient_faults_at_every_stage_are_retried_without_pipelining(b: Backend) {
    faults_at_every_stage(b, false).await;
}
both!(transient_faults_at_every_stage_are_retried_without_pipelining);

/// 4xx replies and dropped connections at every step, against a server that offers PIPELINING
/// (notify writes MAIL, RCPT and DATA together) or one that does not (one at a time).
async fn faults_at_every_stage(b: Backend, pipelining: bool) {
    let mut env = Env::with_contacts(b, &generated_contacts(40)).await;
    // 10 faults in all: even if one message met every one of them, 12 attempts in the run are
    // enough, so the run must finish with everyone delivered once.
    env.env("NOTIFY_MAX_ATTEMPTS", "12");
    env.env("NOTIFY_RETRY_BASE_MS", "1");
    let rule = |command: &str, reply: &str| Rule::TempFailCommand {
        command: command.into(),
        reply: reply.into(),
        times: 2,
    };
    let mut rules = vec![
        rule("MAIL", "451 4.3.0 Temporary lookup failure"),
        rule("DATA", "452 4.3.1 Insufficient system storage"),
        rule(
            "DOT",
            "451 4.3.0 Queue file write error, try again in 1 seconds",
        ),
        rule("RCPT", "421 4.7.0 Too many connections, closing"),
        Rule::DropAfterCommand {
            command: "DOT".into(),
            times: 1,
        },
        Rule::DropAfterCommand {
            command: "MAIL".into(),
            times: 1,
        },
    ];
    if pipelining {
        rules.push(Rule::Pipelining);
    }
    let server = SmtpServer::start(rules).await;
    let run = env
        .send_json(&["release-notes", "v3.12.0"], &server.url())
        .await;
    run.ok();
    assert_eq!(run.summary()["sent"], 40);
    let got = counts(server.received().into_iter().map(|r| r.rcpt_to));
    assert_eq!(got.len(), 40);
    assert!(
        got.values().all(|&n| n == 1),
        "every recipient exactly once: {got:?}"
    );
    server.stop().await;
    env.cleanup().await;
}

async fn two_kills_then_a_rerun_deliver_everyone(b: Backend) {
    const N: usize = 5000;
    const CONCURRENCY: usize = 4;
    let env = Env::with_contacts(b, &generated_contacts(N)).await;
    let server = SmtpServer::start(vec![Rule::Pipelining]).await;
    let url = server.url();
    let args = [
        "release-notes",
        "v3.12.0",
        "--smtp-url",
        &url,
        "--concurrency",
        "4",
    ];
    for kill_at in [1200, 2900] {
        let mut child = env.spawn(&args);
        let deadline = Instant::now() + Duration::from_secs(300);
        while server.accepted_count() < kill_at {
            assert!(Instant::now() < deadline, "the send did not progress");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("notify ended before the kill: {status}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.start_kill().expect("kill -9");
        child.wait().await.unwrap();
    }
    let run = env.run(&args).await;
    run.ok();
    let got = counts(server.received().into_iter().map(|r| r.rcpt_to));
    assert_eq!(got.len(), N, "all {N} delivered");
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= 2 * CONCURRENCY,
        "at most the in-flight messages of the two kills repeat: {duplicates}"
    );
    let status = env
        .run(&["status", "release-notes/v3.12.0", "--format", "json"])
        .await;
    status.ok();
    let s: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(s["states"]["sent"], N);
    assert_eq!(s["total"], N);
    assert_eq!(s["workers"], serde_json::json!([]));
    server.stop().await;
    env.cleanup().await;
}
both!(two_kills_then_a_rerun_deliver_everyone);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_postgres_share_the_recipients() {
    const N: usize = 3000;
    let env = Env::with_contacts(Backend::Postgres, &generated_contacts(N)).await;
    // Import first so that the two runs do not race to create the same contacts.
    env.run(&[
        "contacts",
        "import",
        env.path().join("contacts.csv").to_str().unwrap(),
    ])
    .await
    .ok();
    let server = SmtpServer::start(vec![Rule::Delay { millis: 1 }, Rule::Pipelining]).await;
    let url = server.url();
    let args = [
        "release-notes",
        "v3.12.0",
        "--smtp-url",
        &url,
        "--format",
        "json",
    ];
    let (a, b) = (env.spawn(&args), env.spawn(&args));
    let (a, b) = (
        a.wait_with_output().await.unwrap(),
        b.wait_with_output().await.unwrap(),
    );
    for o in [&a, &b] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let sent = |o: &std::process::Output| {
        let line = String::from_utf8_lossy(&o.stdout)
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap()
            .to_string();
        serde_json::from_str::<serde_json::Value>(&line).unwrap()["sent"]
            .as_u64()
            .unwrap()
    };
    let (sa, sb) = (sent(&a), sent(&b));
    let got = counts(server.received().into_iter().map(|r| r.rcpt_to));
    let dups: Vec<_> = got.iter().filter(|(_, &n)| n > 1).collect();
    if !dups.is_empty() {
        let store = env.store().await;
        let c = store
            .find_campaign("release-notes/v3.12.0")
            .await
            .unwrap()
            .unwrap();
        let rows: Vec<_> = store
            .sends(&c)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| dups.iter().any(|(e, _)| **e == r.email))
            .collect();
        panic!(
            "delivered twice: {dups:?}; journal: {rows:?}\nA: {}\nB: {}",
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&b.stderr)
        );
    }
    assert_eq!(sa + sb, N as u64);
    assert!(
        sa > 0 && sb > 0,
        "both runs did part of the work: {sa} + {sb}"
    );
    let got = counts(server.received().into_iter().map(|r| r.rcpt_to));
    assert_eq!(got.len(), N);
    assert!(got.values().all(|&n| n == 1), "each recipient exactly once");
    server.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_sqlite_is_refused_while_the_first_sends() {
    let env = Env::with_contacts(Backend::Sqlite, &generated_contacts(300)).await;
    let server = SmtpServer::start(vec![Rule::Delay { millis: 20 }, Rule::Pipelining]).await;
    let url = server.url();
    let args = [
        "release-notes",
        "v3.12.0",
        "--smtp-url",
        &url,
        "--concurrency",
        "2",
    ];
    let first = env.spawn(&args);
    while server.accepted_count() < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = env.run(&args).await;
    second.code(1);
    assert!(
        second
            .stderr
            .contains("another notify run is already sending release-notes/v3.12.0"),
        "{}",
        second.stderr
    );
    let out = first.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = counts(server.received().into_iter().map(|r| r.rcpt_to));
    assert_eq!(got.len(), 300);
    assert!(got.values().all(|&n| n == 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_dot_is_not_held_back_for_a_rate_limited_next_message() {
    // At one message every 2 s on one connection, the first message is accepted at once: its
    // final dot does not wait for the next message's turn to travel with its envelope.
    let env = Env::with_contacts(Backend::Sqlite, &generated_contacts(2)).await;
    let server = SmtpServer::start(vec![Rule::Pipelining]).await;
    let url = server.url();
    let mut child = env.spawn(&[
        "release-notes",
        "v3.12.0",
        "--smtp-url",
        &url,
        "--rate",
        "0.5",
        "--concurrency",
        "1",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    // The run's first connection is its check of the server; the worker's is the second.
    while server.connections() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connected = Instant::now();
    while server.accepted_count() < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = connected.elapsed();
    let status = child.wait().await.expect("notify ran");
    assert!(status.success());
    assert_eq!(server.accepted_count(), 2);
    assert!(
        first < Duration::from_millis(1500),
        "the first message was accepted {first:?} after the connection opened"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_never_exceeded() {
    // 101 messages at 50/s need at least 100 intervals of 20 ms, whatever the concurrency.
    let env = Env::with_contacts(Backend::Sqlite, &generated_contacts(101)).await;
    let server = SmtpServer::start(vec![Rule::Pipelining]).await;
    let started = Instant::now();
    env.run(&[
        "release-notes",
        "v3.12.0",
        "--smtp-url",
        &server.url(),
        "--rate",
        "50",
        "--concurrency",
        "8",
    ])
    .await
    .ok();
    let took = started.elapsed();
    assert_eq!(server.accepted_count(), 101);
    assert!(
        took >= Duration::from_millis(2000),
        "101 messages at 50/s took only {took:?}"
    );
    server.stop().await;
}
