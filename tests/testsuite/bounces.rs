//! Bounces end to end: import from a Maildir, mbox, SES JSON and CSV; attribution by VERP token,
//! returned Message-ID and address; the flag policy; the review in four formats; resolve and
//! show; flagged contacts skipped by the next notice; a 5xx at send time as a bounce.

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
            // C: nothing but the address.
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
    let mut flagged: Vec<&str> = s["flagged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    flagged.sort();
    assert_eq!(flagged, [a, c, bb]);

    // The same mailbox again changes nothing.
    let again = env.import_bounces(&[md.to_str().unwrap()]).await;
    again.ok();
    assert_eq!(again.summary()["already_imported"], 4);
    assert_eq!(again.summary()["bounces"], 0);

    // The review, four ways.
    let report = env.run(&["bounces", "report", "--format", "json"]).await;
    report.ok();
    let rows = json_rows(&report.stdout);
    assert_eq!(rows.len(), 3);
    let row = |e: &str| rows.iter().find(|r| r["email"] == e).unwrap().clone();
    assert_eq!(row(a)["bounces"], 1);
    assert_eq!(row(a)["reason"], "user-unknown");
    assert_eq!(row(a)["user_id"], 2);
    assert_eq!(
        row(a)["notices"],
        serde_json::json!(["release-notes/v3.12.0"])
    );
    assert_eq!(
        row(bb)["notices"],
        serde_json::json!(["release-notes/v3.12.0"])
    );
    assert_eq!(row(c)["notices"], serde_json::json!([]));
    assert!(row(bb)["last_diagnostic"]
        .as_str()
        .unwrap()
        .contains("RecipientNotFound"));
    assert!(row(c)["action"]
        .as_str()
        .unwrap()
        .starts_with("deactivate in Moped"));
    let csv_out = env.run(&["bounces", "report", "--format", "csv"]).await;
    csv_out.ok();
    let mut rdr = csv::Reader::from_reader(csv_out.stdout.as_bytes());
    assert!(rdr
        .headers()
        .unwrap()
        .iter()
        .any(|h| h == "last_diagnostic"));
    assert_eq!(rdr.records().count(), 3);
    let html = env.run(&["bounces", "report", "--format", "html"]).await;
    html.ok();
    assert!(html.stdout.starts_with("<!DOCTYPE html>") && html.stdout.contains("<table>"));
    assert!(!html.stdout.contains("<script") && !html.stdout.contains("src=\"http"));
    for e in [a, bb, c] {
        assert!(html.stdout.contains(e));
    }
    let table = env.run(&["bounces", "report"]).await;
    table.ok();
    assert!(
        table.stdout.contains("3 accounts to update"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("1 bounce(s) matched no contact"));
    for line in table.stdout.lines() {
        assert!(line.chars().count() <= 120, "table fits a terminal: {line}");
    }

    // The next notice skips the flagged contacts (all three are users) and counts them.
    let run = env.run(&["maintenance-end", "--format", "json"]).await;
    run.ok();
    assert_eq!(run.summary()["skipped"], 3);
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
    for e in [a, bb, c] {
        assert!(
            !written.iter().any(|f| f.ends_with(&format!("-{e}.eml"))),
            "{e} skipped"
        );
    }

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
    assert_eq!(rows.len(), 2);
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
            .contains("flagged: hard bounce (user-unknown, 5.1.1) on release-notes/v3.12.0"),
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
    assert!(rows[0]["action"]
        .as_str()
        .unwrap()
        .starts_with("wait and retry"));

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
    let rows = json_rows(
        &env.run(&["bounces", "report", "--format", "json"])
            .await
            .stdout,
    );
    assert_eq!(rows.len(), 3);

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
    assert_eq!(rows[0]["reason"], "user-unknown");
    assert_eq!(rows[0]["status"], "5.1.1");
    assert_eq!(
        rows[0]["notices"],
        serde_json::json!(["maintenance-scheduled/2026-12-03-1700"])
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
