//! Faults at send time, against real SMTP on loopback: the server is down, refuses one recipient
//! (5xx), asks to try later (4xx), or dies in the middle of the run.

use std::collections::BTreeMap;
use std::path::Path;

use notify::contacts::Audience;

use crate::both;
use crate::harness::{audience_of, free_port, Backend, Env, SmtpSink, REPO};
use crate::support::smtp_server::{Rule, SmtpServer};

fn users() -> Vec<String> {
    let csv = std::fs::read_to_string(Path::new(REPO).join("contacts/moped_users.csv")).unwrap();
    audience_of(&csv, Audience::Users)
}

fn count_by_rcpt(lists: &[Vec<String>]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lists {
        for r in l {
            *m.entry(r.to_lowercase()).or_insert(0) += 1;
        }
    }
    m
}

async fn smtp_down_exits_1_marks_nothing_and_a_later_run_delivers_once(b: Backend) {
    let env = Env::new(b).await;
    let port = free_port();
    let url = format!("smtp://127.0.0.1:{port}");
    let run = env
        .run(&["release-notes", "v3.12.0", "--smtp-url", &url])
        .await;
    run.code(1);
    assert!(
        run.stderr
            .contains("cannot reach the SMTP server at smtp://127.0.0.1:"),
        "{}",
        run.stderr
    );
    let states = env.states("release-notes/v3.12.0").await;
    assert!(states.values().all(|s| s != "sent"), "{states:?}");

    let sink = SmtpSink::start_on(port);
    let run = env.send_json(&["release-notes", "v3.12.0"], &url).await;
    run.ok();
    let csv = std::fs::read_to_string(Path::new(REPO).join("contacts/moped_users.csv")).unwrap();
    let mug = audience_of(&csv, Audience::Mug);
    let counts = count_by_rcpt(
        &sink
            .messages()
            .into_iter()
            .map(|m| m.rcpt_to)
            .collect::<Vec<_>>(),
    );
    assert_eq!(counts.keys().cloned().collect::<Vec<_>>(), mug);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    env.cleanup().await;
}
both!(smtp_down_exits_1_marks_nothing_and_a_later_run_delivers_once);

async fn a_5xx_fails_one_recipient_and_not_the_others(b: Backend) {
    let env = Env::new(b).await;
    let all = users();
    let gone = "ben.kowalski@austintexas.gov";
    assert!(all.contains(&gone.to_string()));
    // Offering PIPELINING: the refusal arrives in the middle of a group of replies.
    let server = SmtpServer::start(vec![
        Rule::RejectRcpt {
            address: gone.into(),
            reply: format!("550 5.1.1 <{gone}>: Recipient address rejected: User unknown"),
        },
        Rule::Pipelining,
    ])
    .await;
    let run = env.send_json(&["maintenance-end"], &server.url()).await;
    run.ok();
    let s = run.summary();
    assert_eq!(s["failed"], 1);
    assert_eq!(s["sent"], all.len() - 1);
    assert_eq!(s["pending"], 0);
    let got = count_by_rcpt(
        &server
            .received()
            .into_iter()
            .map(|r| r.rcpt_to)
            .collect::<Vec<_>>(),
    );
    assert_eq!(got.len(), all.len() - 1);
    assert!(!got.contains_key(gone));
    let key = s["campaign"].as_str().unwrap().to_string();
    let states = env.states(&key).await;
    assert_eq!(states[gone], "failed");

    // A rerun does not try the refused address again.
    let run = env.send_json(&["maintenance-end"], &server.url()).await;
    run.ok();
    assert_eq!(run.summary()["sent"], 0);
    assert_eq!(server.received().len(), all.len() - 1);
    server.stop().await;
    env.cleanup().await;
}
both!(a_5xx_fails_one_recipient_and_not_the_others);

async fn a_4xx_is_retried_in_the_run_and_deferred_ones_by_the_next(b: Backend) {
    let env = Env::new(b).await;
    let all = users();
    let busy = "aisha.mohammed@austintexas.gov";
    let stuck = "wen.zhao@austintexas.gov";
    let server = SmtpServer::start(vec![
        Rule::TempFailRcpt {
            address: busy.into(),
            reply: "451 4.7.1 Greylisted, please try again in 1 seconds".into(),
            times: 2,
        },
        Rule::TempFailRcpt {
            address: stuck.into(),
            reply: "452 4.2.2 Mailbox full".into(),
            times: 1000,
        },
    ])
    .await;
    let run = env.send_json(&["maintenance-end"], &server.url()).await;
    run.code(1);
    assert!(run.stderr.contains("deferred"), "{}", run.stderr);
    let s = run.summary();
    assert_eq!(s["sent"], all.len() - 1);
    assert_eq!(s["pending"], 1);
    let key = s["campaign"].as_str().unwrap().to_string();
    let states = env.states(&key).await;
    assert_eq!(states[busy], "sent");
    assert_eq!(states[stuck], "deferred");
    let got = count_by_rcpt(
        &server
            .received()
            .into_iter()
            .map(|r| r.rcpt_to)
            .collect::<Vec<_>>(),
    );
    assert_eq!(got[busy], 1);
    server.stop().await;

    // The next run, against a server that accepts, finishes the deferred one only.
    let sink = SmtpSink::start();
    let run = env.send_json(&["maintenance-end"], &sink.url()).await;
    run.ok();
    assert_eq!(run.summary()["sent"], 1);
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpt_to, vec![stuck]);
    env.cleanup().await;
}
both!(a_4xx_is_retried_in_the_run_and_deferred_ones_by_the_next);

async fn a_server_that_dies_mid_run_loses_nothing(b: Backend) {
    let env = Env::new(b).await;
    let all = users();
    let server = SmtpServer::start(vec![Rule::DieAfter { after: 7 }, Rule::Pipelining]).await;
    let run = env
        .run(&[
            "maintenance-end",
            "--smtp-url",
            &server.url(),
            "--concurrency",
            "2",
            "--format",
            "json",
        ])
        .await;
    run.code(1);
    assert!(
        run.stderr.contains("stopped answering") || run.stderr.contains("deferred"),
        "{}",
        run.stderr
    );
    let first: Vec<Vec<String>> = server.received().into_iter().map(|r| r.rcpt_to).collect();
    assert_eq!(first.len(), 7);
    server.stop().await;
    let store = env.store().await;
    let key = store_key(&env).await;
    let states = env.states(&key).await;
    let sent: Vec<&String> = states
        .iter()
        .filter(|(_, s)| *s == "sent")
        .map(|(e, _)| e)
        .collect();
    assert_eq!(
        sent.len(),
        7,
        "exactly the accepted messages are marked sent: {states:?}"
    );
    store.close().await;

    let sink = SmtpSink::start();
    env.run(&["maintenance-end", "--smtp-url", &sink.url()])
        .await
        .ok();
    let mut lists = first.clone();
    lists.extend(sink.messages().into_iter().map(|m| m.rcpt_to));
    let counts = count_by_rcpt(&lists);
    assert_eq!(counts.keys().cloned().collect::<Vec<_>>(), all);
    assert!(
        counts.values().all(|&n| n == 1),
        "every recipient exactly once: {counts:?}"
    );
    env.cleanup().await;
}
both!(a_server_that_dies_mid_run_loses_nothing);

async fn store_key(env: &Env) -> String {
    let run = env
        .run(&["maintenance-end", "--dry-run", "--format", "json"])
        .await;
    run.summary()["campaign"].as_str().unwrap().to_string()
}

/// `smtps://` to a relay whose certificate no public CA signed: the run stops before anything is
/// claimed (exit 1, nothing marked); a `smtp_ca_file` that is not a certificate file is bad input
/// (exit 2, named); with the relay's CA trusted, every recipient gets the notice once over TLS.
async fn smtps_to_a_private_ca_relay_needs_its_ca_trusted(b: Backend) {
    let mut env = Env::new(b).await;
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_pem = cert.cert.pem();
    let server = SmtpServer::start_tls(vec![], &cert_pem, &cert.key_pair.serialize_pem()).await;
    let url = format!("smtps://127.0.0.1:{}", server.port());

    let untrusted = env.send_json(&["maintenance-end"], &url).await;
    untrusted.code(1);
    assert!(
        untrusted
            .stderr
            .contains("cannot reach the SMTP server at smtps://127.0.0.1:")
            && untrusted.stderr.to_lowercase().contains("certificate"),
        "{}",
        untrusted.stderr
    );
    assert_eq!(server.accepted_count(), 0);
    let today = chrono::Utc::now().with_timezone(&chrono_tz::America::Chicago);
    let key = format!("maintenance-end/v3.12.0/{}", today.format("%Y-%m-%d"));
    let states = env.states(&key).await;
    assert!(states.values().all(|s| s != "sent"), "{states:?}");

    let bad = env.path().join("not-a-ca.pem");
    std::fs::write(&bad, "relay certificate: ask IT\n").unwrap();
    env.env("NOTIFY_SMTP_CA_FILE", bad.to_str().unwrap());
    let refused = env.send_json(&["maintenance-end"], &url).await;
    refused.code(2);
    assert!(
        refused.stderr.contains("smtp_ca_file") && refused.stderr.contains("not-a-ca.pem"),
        "{}",
        refused.stderr
    );

    let ca = env.path().join("relay-ca.pem");
    std::fs::write(&ca, &cert_pem).unwrap();
    env.env("NOTIFY_SMTP_CA_FILE", ca.to_str().unwrap());
    let run = env.send_json(&["maintenance-end"], &url).await;
    run.ok();
    let all = users();
    assert_eq!(run.summary()["sent"], all.len());
    let counts = count_by_rcpt(
        &server
            .received()
            .into_iter()
            .map(|m| m.rcpt_to)
            .collect::<Vec<_>>(),
    );
    assert_eq!(counts.keys().cloned().collect::<Vec<_>>(), all);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
}
both!(smtps_to_a_private_ca_relay_needs_its_ca_trusted);
