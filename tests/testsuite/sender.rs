//! Refusals that are about the sender, not a recipient (a refused MAIL FROM, Exchange Online's
//! submission quota, the same refusal for everyone), throttling, the daily recipient limit and
//! `--retry-failed`, against the scripted SMTP server on loopback, on both databases.

use std::collections::BTreeMap;
use std::path::Path;

use notify::contacts::Audience;

use crate::both;
use crate::harness::{audience_of, Backend, Env, REPO};
use crate::support::smtp_server::{Rule, SmtpServer};

fn users() -> Vec<String> {
    let csv = std::fs::read_to_string(Path::new(REPO).join("contacts/moped_users.csv")).unwrap();
    audience_of(&csv, Audience::Users)
}

/// How many messages each recipient got over these servers.
fn received_by(servers: &[&SmtpServer]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in servers {
        for r in s.received() {
            for to in r.rcpt_to {
                *m.entry(to.to_lowercase()).or_insert(0) += 1;
            }
        }
    }
    m
}

/// Every recipient exactly once, nobody else.
#[track_caller]
fn everyone_once(got: &BTreeMap<String, usize>, want: &[String]) {
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), want, "{got:?}");
    assert!(got.values().all(|&n| n == 1), "{got:?}");
}

/// A server refuses the sender; the run stops with exit 1 and the server's words, nobody is
/// marked failed or flagged, and the same command delivers to everyone once the sender is
/// accepted.
async fn stops_and_marks_nobody(b: Backend, command: &str, reply: &str, expect: &[&str]) {
    let env = Env::new(b).await;
    let all = users();
    let refusing = SmtpServer::start(vec![
        Rule::Pipelining,
        Rule::TempFailCommand {
            command: command.into(),
            reply: reply.into(),
            times: 10_000,
        },
    ])
    .await;
    let run = env.send_json(&["maintenance-end"], &refusing.url()).await;
    run.code(1);
    for words in expect {
        assert!(run.stderr.contains(words), "{words:?} in:\n{}", run.stderr);
    }
    assert!(
        run.stderr.contains("Nobody was marked failed"),
        "{}",
        run.stderr
    );
    assert!(refusing.received().is_empty());
    let key = run.summary()["campaign"].as_str().unwrap().to_string();
    env.assert_all_pending_and_nobody_flagged(&key, all.len())
        .await;
    refusing.stop().await;

    let accepting = SmtpServer::start(vec![Rule::Pipelining]).await;
    let run = env.send_json(&["maintenance-end"], &accepting.url()).await;
    run.ok();
    assert_eq!(run.summary()["sent"], all.len());
    assert_eq!(run.summary()["failed"], 0);
    everyone_once(&received_by(&[&accepting]), &all);
    accepting.stop().await;
    env.cleanup().await;
}

async fn a_refused_mail_from_stops_the_run_and_marks_nobody(b: Backend) {
    stops_and_marks_nobody(
        b,
        "MAIL",
        "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
        &[
            "refused the sender, not a recipient",
            "5.7.60",
            "may send as",
        ],
    )
    .await;
}
both!(a_refused_mail_from_stops_the_run_and_marks_nobody);

async fn the_exchange_quota_at_data_stops_the_run_and_marks_nobody(b: Backend) {
    stops_and_marks_nobody(
        b,
        "DOT",
        "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message [BeginDiagnosticData]",
        &["SubmissionQuotaExceeded", "quota"],
    )
    .await;
}
both!(the_exchange_quota_at_data_stops_the_run_and_marks_nobody);

async fn the_same_refusal_for_three_recipients_in_a_row_is_the_senders(b: Backend) {
    stops_and_marks_nobody(
        b,
        "RCPT",
        "554 5.7.1 Relay access denied",
        &[
            "same refusal for 3 recipients in a row",
            "Relay access denied",
        ],
    )
    .await;
}
both!(the_same_refusal_for_three_recipients_in_a_row_is_the_senders);

async fn refusals_with_deliveries_between_them_are_each_recipients(b: Backend) {
    // Two recipients refused with words that differ only by the address, and deliveries around
    // them: both are recipients' bounces, recorded as failed; the run finishes.
    let env = Env::new(b).await;
    let all = users();
    let (one, two) = (&all[1], &all[5]);
    let rule = |a: &str| Rule::RejectRcpt {
        address: a.into(),
        reply: format!("550 5.7.1 <{a}>: Recipient address rejected: Access denied"),
    };
    let server = SmtpServer::start(vec![Rule::Pipelining, rule(one), rule(two)]).await;
    let mut e = env;
    e.env("NOTIFY_CONCURRENCY", "1");
    let run = e.send_json(&["maintenance-end"], &server.url()).await;
    run.ok();
    assert_eq!(run.summary()["failed"], 2);
    assert_eq!(run.summary()["sent"], all.len() - 2);
    let key = run.summary()["campaign"].as_str().unwrap().to_string();
    let st = e.states(&key).await;
    assert_eq!((st[one].as_str(), st[two].as_str()), ("failed", "failed"));
    server.stop().await;
    e.cleanup().await;
}
both!(refusals_with_deliveries_between_them_are_each_recipients);

async fn throttling_slows_down_without_using_up_attempts(b: Backend) {
    // Exchange's thread limit at the final dot, more times than there are attempts: the run
    // waits and slows down, and every message still goes out once.
    let mut env = Env::new(b).await;
    env.env("NOTIFY_MAX_ATTEMPTS", "1");
    env.env("NOTIFY_RATE", "200");
    let all = users();
    let server = SmtpServer::start(vec![
        Rule::Pipelining,
        Rule::TempFailCommand {
            command: "DOT".into(),
            reply: "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded".into(),
            times: 4,
        },
    ])
    .await;
    let run = env.send_json(&["maintenance-end"], &server.url()).await;
    run.ok();
    assert_eq!(run.summary()["sent"], all.len());
    assert_eq!(run.summary()["pending"], 0);
    everyone_once(&received_by(&[&server]), &all);
    server.stop().await;

    // The same answers count as failed attempts for a plain 4xx: with one attempt they are
    // left deferred (a control for the case above).
    let env2 = {
        let mut e = Env::new(b).await;
        e.env("NOTIFY_MAX_ATTEMPTS", "1");
        e
    };
    let server = SmtpServer::start(vec![
        Rule::Pipelining,
        Rule::TempFailCommand {
            command: "DOT".into(),
            reply: "451 4.3.0 Temporary local problem".into(),
            times: 4,
        },
    ])
    .await;
    let run = env2.send_json(&["maintenance-end"], &server.url()).await;
    run.code(1);
    assert_eq!(run.summary()["pending"], 4);
    server.stop().await;
    env.cleanup().await;
    env2.cleanup().await;
}
both!(throttling_slows_down_without_using_up_attempts);

async fn the_daily_recipient_limit_sends_what_fits_and_a_later_run_the_rest(b: Backend) {
    let mut env = Env::new(b).await;
    env.env("NOTIFY_DAILY_RECIPIENT_LIMIT", "5");
    let all = users();
    let server = SmtpServer::start(vec![Rule::Pipelining]).await;
    let run = env.send_json(&["maintenance-end"], &server.url()).await;
    run.code(1);
    assert!(
        run.stderr
            .contains("daily recipient limit (5 in 24 hours) has 5 left"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("left for a later run"),
        "{}",
        run.stderr
    );
    assert_eq!(run.summary()["sent"], 5);
    assert_eq!(run.summary()["pending"], all.len() - 5);
    assert_eq!(server.received().len(), 5);

    // Within the same 24 hours the limit is used up: nothing more goes out.
    let run = env.send_json(&["maintenance-end"], &server.url()).await;
    run.code(1);
    assert_eq!(run.summary()["sent"], 0);
    assert_eq!(server.received().len(), 5);

    // Once the limit allows it (here: raised), the same command finishes the job.
    env.env("NOTIFY_DAILY_RECIPIENT_LIMIT", "1000");
    let run = env.send_json(&["maintenance-end"], &server.url()).await;
    run.ok();
    assert_eq!(run.summary()["sent"], all.len() - 5);
    everyone_once(&received_by(&[&server]), &all);
    server.stop().await;
    env.cleanup().await;
}
both!(the_daily_recipient_limit_sends_what_fits_and_a_later_run_the_rest);

async fn retry_failed_sends_again_to_the_refused_and_nobody_else(b: Backend) {
    let env = Env::new(b).await;
    let all = users();
    // A soft refusal: the contact is not flagged by one notice, so the retry reaches it.
    let full = &all[2];
    let server = SmtpServer::start(vec![
        Rule::Pipelining,
        Rule::RejectRcpt {
            address: full.clone(),
            reply: "552 5.2.2 Mailbox full".into(),
        },
    ])
    .await;
    let run = env.send_json(&["maintenance-end"], &server.url()).await;
    run.ok();
    assert_eq!(run.summary()["failed"], 1);
    server.stop().await;

    let server = SmtpServer::start(vec![Rule::Pipelining]).await;
    // A plain rerun leaves the refused recipient alone.
    let run = env.send_json(&["maintenance-end"], &server.url()).await;
    run.ok();
    assert_eq!(run.summary()["sent"], 0);
    let run = env
        .send_json(&["maintenance-end", "--retry-failed"], &server.url())
        .await;
    run.ok();
    assert_eq!(run.summary()["sent"], 1);
    assert_eq!(run.summary()["failed"], 0);
    let got = received_by(&[&server]);
    assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![(full.clone(), 1)]);
    server.stop().await;
    env.cleanup().await;
}
both!(retry_failed_sends_again_to_the_refused_and_nobody_else);

/// Logs: by default only notify's warnings reach the terminal, so a refusal's info line does
/// not; `--verbose` shows info lines; `NOTIFY_LOG`, when set, decides instead of either.
async fn logs_are_quiet_unless_asked_for(b: Backend) {
    let mut env = Env::new(b).await;
    let all = users();
    let refused = &all[0];
    let server = SmtpServer::start(vec![Rule::RejectRcpt {
        address: refused.clone(),
        reply: "552 5.2.2 Mailbox full".into(),
    }])
    .await;
    let quiet = env.send_json(&["maintenance-end"], &server.url()).await;
    quiet.ok();
    assert_eq!(quiet.summary()["failed"], 1);
    assert!(
        !quiet.stderr.contains("INFO") && !quiet.stderr.contains("refused"),
        "{}",
        quiet.stderr
    );

    let verbose = env
        .send_json(
            &["maintenance-end", "--retry-failed", "--verbose"],
            &server.url(),
        )
        .await;
    verbose.ok();
    assert_eq!(verbose.summary()["failed"], 1);
    assert!(
        verbose.stderr.contains("INFO") && verbose.stderr.contains("refused"),
        "{}",
        verbose.stderr
    );

    env.env("NOTIFY_LOG", "off");
    let off = env
        .send_json(&["maintenance-end", "--retry-failed", "-v"], &server.url())
        .await;
    off.ok();
    assert_eq!(off.summary()["failed"], 1);
    assert!(!off.stderr.contains("INFO"), "{}", off.stderr);
    server.stop().await;
    env.cleanup().await;
}
both!(logs_are_quiet_unless_asked_for);
