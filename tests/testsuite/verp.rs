//! The envelope sender Exchange Online accepts (`verp`), on both databases, against the scripted
//! SMTP server on loopback: a refused VERP (plus-addressed) sender stops the run at the first
//! messages with the `verp = false` advice and marks nobody; with `verp = false` the envelope
//! sender is the bounce address itself, and an Exchange-style NDR returned to it is tied to its
//! send by the returned Message-ID (verified, flags the right contact) while a forged one without
//! our Message-ID flags nobody.

use std::path::Path;

use notify::contacts::Audience;

use crate::both;
use crate::harness::{audience_of, Backend, Env, REPO};
use crate::support::smtp_server::{Rule, SmtpServer};

const BOUNCE_ADDRESS: &str = "moped-bounces@austintexas.gov";

fn users() -> Vec<String> {
    let csv = std::fs::read_to_string(Path::new(REPO).join("contacts/moped_users.csv")).unwrap();
    audience_of(&csv, Audience::Users)
}

/// How many command lines of `server`'s log start with `verb` (case-insensitive).
fn commands(server: &SmtpServer, verb: &str) -> usize {
    server
        .log()
        .iter()
        .filter(|s| {
            s.line
                .get(..verb.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(verb))
        })
        .count()
}

/// The envelope senders `server` was offered in `MAIL FROM:<...>`.
fn mail_from_lines(server: &SmtpServer) -> Vec<String> {
    server
        .log()
        .iter()
        .filter_map(|s| {
            let rest = s.line.get("MAIL FROM:<".len()..)?;
            s.line[.."MAIL FROM:<".len()]
                .eq_ignore_ascii_case("MAIL FROM:<")
                .then(|| rest.split('>').next().unwrap_or_default().to_string())
        })
        .collect()
}

/// Messages whose final dot reached `server`: a `DATA` after which the server read another
/// command line on the same connection (it reads none while it reads a message, so a message
/// left without its final dot is followed by nothing). A `DATA` refused at once counts too,
/// which only ever makes the number larger.
fn ended_messages(server: &SmtpServer) -> usize {
    let log = server.log();
    log.iter()
        .enumerate()
        .filter(|(i, s)| {
            s.line.eq_ignore_ascii_case("DATA")
                && log[i + 1..].iter().any(|l| l.connection == s.connection)
        })
        .count()
}

/// Exchange Online refuses the plus-addressed envelope sender (`reply` at `command`) with VERP
/// on: the run stops with exit 1 at the first messages (nothing delivered, at most one message
/// ended on each connection), says to set `verp = false` and what that costs, marks nobody
/// failed or flagged; with `NOTIFY_VERP=false` the same command then delivers to everyone once,
/// with the bounce address itself as the envelope sender.
async fn refused_verp_sender(b: Backend, command: &str, reply: &str) {
    let mut env = Env::new(b).await;
    let concurrency = 3;
    env.env("NOTIFY_CONCURRENCY", &concurrency.to_string());
    let all = users();
    assert!(all.len() > 2 * concurrency, "enough recipients to tell");
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
    for words in [
        "refused the sender, not a recipient",
        "Nobody was marked failed",
        "with a +token per message",
        "set `verp = false`",
        "NOTIFY_VERP=false",
        "tied to their send only by the Message-ID",
    ] {
        assert!(run.stderr.contains(words), "{words:?} in:\n{}", run.stderr);
    }
    // The sender it refused was a VERP address.
    let offered = mail_from_lines(&refusing);
    assert!(!offered.is_empty());
    assert!(
        offered
            .iter()
            .all(|a| a.starts_with("moped-bounces+") && a.ends_with("@austintexas.gov")),
        "{offered:?}"
    );
    // Stopped at the first messages: nothing delivered, at most one message ended (sent with
    // its final dot) on each of the connections open at once. After a final dot the client
    // may already have sent the next message's envelope and content (PIPELINING: one round
    // trip a message); that one is never ended, so the server discards it.
    assert!(refusing.received().is_empty());
    let mails = commands(&refusing, "MAIL FROM");
    let ended = ended_messages(&refusing);
    let log = refusing.log();
    assert!(
        (1..=concurrency).contains(&ended),
        "{ended} messages ended with concurrency {concurrency}: {log:?}"
    );
    let pipelined = if command == "DOT" { 2 } else { 1 };
    assert!(
        (1..=pipelined * concurrency).contains(&mails),
        "{mails} MAIL commands with concurrency {concurrency}: {log:?}"
    );
    assert_eq!(run.summary()["sent"], 0);
    assert_eq!(run.summary()["failed"], 0);
    assert_eq!(run.summary()["pending"], all.len());
    let key = run.summary()["campaign"].as_str().unwrap().to_string();
    env.assert_all_pending_and_nobody_flagged(&key, all.len())
        .await;
    refusing.stop().await;

    // Following the advice: VERP off, the envelope sender is the bounce address itself.
    env.env("NOTIFY_VERP", "false");
    let accepting = SmtpServer::start(vec![Rule::Pipelining]).await;
    let run = env.send_json(&["maintenance-end"], &accepting.url()).await;
    run.ok();
    assert_eq!(run.summary()["sent"], all.len());
    let got = accepting.received();
    let mut to: Vec<String> = got.iter().flat_map(|r| r.rcpt_to.clone()).collect();
    to.sort();
    assert_eq!(to, all, "everyone exactly once");
    assert!(
        got.iter().all(|r| r.mail_from == BOUNCE_ADDRESS),
        "{:?}",
        got.iter().map(|r| &r.mail_from).collect::<Vec<_>>()
    );
    accepting.stop().await;
    env.cleanup().await;
}

async fn a_refused_verp_sender_at_mail_from_stops_with_the_verp_advice(b: Backend) {
    refused_verp_sender(
        b,
        "MAIL",
        "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
    )
    .await;
}
both!(a_refused_verp_sender_at_mail_from_stops_with_the_verp_advice);

async fn a_refused_verp_sender_after_data_stops_with_the_verp_advice(b: Backend) {
    refused_verp_sender(
        b,
        "DOT",
        "554 5.2.252 SendAsDenied; moped@austintexas.gov not allowed to send as moped-bounces+1-ab@austintexas.gov; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
    )
    .await;
}
both!(a_refused_verp_sender_after_data_stops_with_the_verp_advice);

/// The Office 365 NDR fixture, returned to `to`, reporting `rcpt` undeliverable and carrying
/// `message_id` (without angle brackets) as the original message's.
fn exchange_ndr(to: &str, rcpt: &str, message_id: &str) -> String {
    let fixture =
        std::fs::read_to_string(Path::new(REPO).join("tests/fixtures/bounces/office365_ndr.eml"))
            .unwrap();
    const FIXTURE_VERP: &str = "moped-bounces+1f-3a9c04be21@austintexas.gov";
    const FIXTURE_ID: &str = "3a9c04be21aa4f0e9d8c7b6a5f4e3d2c.notify@austintexas.gov";
    const FIXTURE_RCPT: &str = "jane.doe@austintexas.gov";
    for s in [FIXTURE_VERP, FIXTURE_ID, FIXTURE_RCPT] {
        assert!(fixture.contains(s), "the fixture still has {s}");
    }
    fixture
        .replace(FIXTURE_VERP, to)
        .replace(FIXTURE_ID, message_id)
        .replace(FIXTURE_RCPT, rcpt)
}

async fn without_verp_a_returned_message_id_flags_the_right_contact(b: Backend) {
    let mut env = Env::new(b).await;
    env.env("NOTIFY_VERP", "false");
    let all = users();
    let (gone, forged_victim) = (&all[1], &all[4]);
    let server = SmtpServer::start(vec![Rule::Pipelining]).await;
    let run = env.send_json(&["maintenance-end"], &server.url()).await;
    run.ok();
    let key = run.summary()["campaign"].as_str().unwrap().to_string();
    let got = server.received();
    assert_eq!(got.len(), all.len());
    assert!(got.iter().all(|r| r.mail_from == BOUNCE_ADDRESS));
    let message_id = |rcpt: &str| -> String {
        let r = got
            .iter()
            .find(|r| r.rcpt_to == [rcpt.to_string()])
            .unwrap_or_else(|| panic!("a message to {rcpt}"));
        let parsed = r.parsed().expect("a parseable message");
        let mid = parsed.message_id().expect("a Message-ID").to_string();
        // The returned headers carry no VERP token: the message itself names no +token sender.
        assert!(!r.data_str().contains("moped-bounces+"), "{}", r.data_str());
        mid
    };
    let gone_id = message_id(gone);
    let victim_id = message_id(forged_victim);
    server.stop().await;

    // A forged NDR naming another contact: our Message-ID shape, but not one we sent.
    let not_ours = format!("{:032x}.notify@austintexas.gov", rand::random::<u128>());
    assert_ne!(not_ours, victim_id);
    let dir = env.path().join("ndrs");
    std::fs::create_dir_all(&dir).unwrap();
    let forged = dir.join("forged.eml");
    std::fs::write(
        &forged,
        exchange_ndr(BOUNCE_ADDRESS, forged_victim, &not_ours),
    )
    .unwrap();
    let run = env.import_bounces(&[forged.to_str().unwrap()]).await;
    run.ok();
    let s = run.summary();
    assert_eq!(
        (s["bounces"].as_u64(), s["hard"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    assert_eq!(s["unverified"], 1, "{s}");
    assert_eq!(s["flagged"], serde_json::json!([]), "{s}");
    let unverified = env
        .run(&["bounces", "report", "--unverified", "--format", "json"])
        .await;
    unverified.ok();
    let rows: serde_json::Value = serde_json::from_str(unverified.stdout.trim()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["email"], forged_victim.as_str());
    assert!(
        rows[0]["why"]
            .as_str()
            .unwrap()
            .contains("Message-ID is not one of ours"),
        "{rows:?}"
    );

    // The real NDR returned to the plain bounce address: tied by its Message-ID, verified,
    // flags that contact and nobody else.
    let real = dir.join("real.eml");
    std::fs::write(&real, exchange_ndr(BOUNCE_ADDRESS, gone, &gone_id)).unwrap();
    let run = env.import_bounces(&[real.to_str().unwrap()]).await;
    run.ok();
    let s = run.summary();
    assert_eq!(s["bounces"], 1, "{s}");
    assert_eq!(s["unverified"], 0, "{s}");
    assert_eq!(s["unmatched"], 0, "{s}");
    assert_eq!(s["flagged"], serde_json::json!([gone]), "{s}");
    let report = env.run(&["bounces", "report", "--format", "json"]).await;
    report.ok();
    let rows: serde_json::Value = serde_json::from_str(report.stdout.trim()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["email"], gone.as_str());
    assert_eq!(rows[0]["reason"], "userunknown");
    assert_eq!(rows[0]["notices"], serde_json::json!([key]));

    env.cleanup().await;
}
both!(without_verp_a_returned_message_id_flags_the_right_contact);
