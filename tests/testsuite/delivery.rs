//! The main job end to end: outbox by default, then a real SMTP server; every recipient once,
//! VERP envelope senders, reruns that send nothing, --resend, --to, --dry-run, --preview.

use std::collections::BTreeMap;
use std::path::Path;

use notify::contacts::Audience;
use notify::mail::verp;

use crate::both;
use crate::harness::{audience_of, Backend, Env, SmtpSink, REPO};
use crate::mime;

const REFRESH: &str = "Please refresh Moped in your browser";

fn sample_csv() -> String {
    std::fs::read_to_string(Path::new(REPO).join("contacts/moped_users.csv")).unwrap()
}

fn eml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

async fn outbox_by_default_then_smtp_delivers_them(b: Backend) {
    let env = Env::new(b).await;
    let mug = audience_of(&sample_csv(), Audience::Mug);
    assert!(mug.len() >= 20, "sample MUG is realistic: {}", mug.len());

    let run = env
        .run(&["release-notes", "v3.12.0", "--format", "json"])
        .await;
    run.ok();
    let s = run.summary();
    assert_eq!(s["mode"], "outbox");
    assert_eq!(s["written"], mug.len());
    assert_eq!(s["sent"], 0);

    let files = eml_files(&env.outbox());
    assert_eq!(files.len(), mug.len());
    let mut to: Vec<String> = Vec::new();
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        let m = mime::check(&raw);
        assert!(m.subject.contains("v3.12.0"), "{}", m.subject);
        assert!(m.text.contains(REFRESH) && m.html.contains(REFRESH));
        assert!(m
            .text
            .contains("Bump graphql-engine endpoint version to 2.50.0"));
        assert!(m.html.contains("<code style="), "inline code styled");
        to.push(m.to[0].clone());
    }
    to.sort();
    assert_eq!(to, mug);

    // A rerun to the outbox writes nothing new.
    let again = env
        .run(&["release-notes", "3.12.0", "--format", "json"])
        .await;
    again.ok();
    assert_eq!(again.summary()["written"], 0);
    assert_eq!(again.summary()["already_sent"], mug.len());
    assert_eq!(eml_files(&env.outbox()).len(), mug.len());

    // A later run with an SMTP server delivers every one of them, once.
    let sink = SmtpSink::start();
    let run = env
        .send_json(&["release-notes", "v3.12"], &sink.url())
        .await;
    run.ok();
    assert_eq!(run.summary()["sent"], mug.len());
    let mut got: Vec<String> = sink
        .messages()
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    got.sort();
    assert_eq!(got, mug);
    env.cleanup().await;
}
both!(outbox_by_default_then_smtp_delivers_them);

async fn every_recipient_once_with_verp_and_reruns_send_nothing(b: Backend) {
    let env = Env::new(b).await;
    let users = audience_of(&sample_csv(), Audience::Users);
    let sink = SmtpSink::start();
    let url = sink.url();
    let run = env
        .send_json(&["maintenance-start", "--until", "23:59"], &url)
        .await;
    run.ok();
    assert_eq!(run.summary()["sent"], users.len());
    let msgs = sink.messages();
    assert_eq!(msgs.len(), users.len());

    // The journal knows each send; the envelope sender is the VERP address of that send.
    let store = env.store().await;
    let secret = notify::ledger::verp_secret(&store).await.unwrap();
    let key = serde_json::from_str::<serde_json::Value>(
        run.stdout.lines().find(|l| l.starts_with('{')).unwrap(),
    )
    .unwrap()["campaign"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(key.starts_with("maintenance-start/"), "{key}");
    let campaign = store.find_campaign(&key).await.unwrap().unwrap();
    let rows = store.sends(&campaign).await.unwrap();
    let sends: BTreeMap<i64, String> = rows
        .iter()
        .map(|s| {
            assert_eq!(s.state, "sent");
            (s.id, s.email.clone())
        })
        .collect();
    let message_ids: BTreeMap<String, String> = rows
        .iter()
        .map(|s| {
            (
                s.email.clone(),
                s.message_id.clone().expect("recorded Message-ID"),
            )
        })
        .collect();
    // A Message-ID is the send's id (10 hex digits, so ids sort as sends do: the index grows
    // at its end) and 96 random bits (not guessable from the id).
    for s in &rows {
        let id = s.message_id.as_deref().unwrap();
        let (left, domain) = id.trim_matches(['<', '>']).split_once('@').unwrap();
        assert_eq!(domain, "austintexas.gov");
        let parts: Vec<&str> = left.split('.').collect();
        assert_eq!(parts.len(), 3, "{id}");
        assert_eq!(parts[0], format!("{:010x}", s.id), "{id}");
        assert!(
            parts[1].len() == 24 && parts[1].chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        assert_eq!(parts[2], "notify");
    }
    let distinct: std::collections::HashSet<&str> = rows
        .iter()
        .map(|s| s.message_id.as_deref().unwrap().split('.').nth(1).unwrap())
        .collect();
    assert_eq!(distinct.len(), rows.len(), "random parts differ");
    let mut seen = Vec::new();
    for m in &msgs {
        assert_eq!(m.rcpt_to.len(), 1);
        let rcpt = &m.rcpt_to[0];
        assert!(
            m.mail_from.starts_with("moped-bounces+") && m.mail_from.ends_with("@austintexas.gov"),
            "{}",
            m.mail_from
        );
        let id =
            verp::verify(&secret, verp::token_in(&m.mail_from).unwrap()).expect("genuine token");
        assert_eq!(&sends[&id], rcpt, "token names this recipient's send");
        let parsed = mime::check(&m.raw);
        assert_eq!(&parsed.to[0], rcpt);
        assert_eq!(
            format!("<{}>", parsed.message_id),
            message_ids[rcpt],
            "journal keeps the Message-ID"
        );
        assert!(
            !parsed.text.contains(REFRESH),
            "no refresh reminder in maintenance-start"
        );
        seen.push(rcpt.clone());
    }
    seen.sort();
    assert_eq!(seen, users);

    // A rerun sends nothing and says so.
    let again = env
        .run(&["maintenance-start", "--until", "23:59", "--smtp-url", &url])
        .await;
    again.ok();
    assert!(
        again
            .stdout
            .contains(&format!("0 sent, {} already sent", users.len())),
        "{}",
        again.stdout
    );
    assert_eq!(sink.messages().len(), users.len());

    // --resend sends to everybody again.
    let resend = env
        .run(&[
            "maintenance-start",
            "--until",
            "23:59",
            "--smtp-url",
            &url,
            "--resend",
            "--format",
            "json",
        ])
        .await;
    resend.ok();
    assert_eq!(resend.summary()["sent"], users.len());
    assert_eq!(sink.messages().len(), 2 * users.len());
    store.close().await;
    env.cleanup().await;
}
both!(every_recipient_once_with_verp_and_reruns_send_nothing);

async fn hostile_contact_changes_no_header_and_injects_no_html(b: Backend) {
    let csv = concat!(
        "user_id,first_name,last_name,email,title,workgroup,roles,is_coa_staff,is_deleted,is_user_group_member,note,date_added,last_seen_date\n",
        "1,\"Eve\r\nBcc: attacker@evil.example\r\nSubject: pwned\",\"<img src=x onerror=alert(1)> [click](https://evil.example) **bold** {{ app_url }}\",eve@austintexas.gov,,\"<script>alert(1)</script>\",\"[\"\"moped-editor\"\"]\",true,false,true,,,\n",
        "2,Ann,Lee,ann@austintexas.gov,,,\"[\"\"moped-editor\"\"]\",true,false,true,,,\n",
    );
    let env = Env::with_contacts(b, csv).await;
    let sink = SmtpSink::start();
    env.run(&["release-notes", "v3.12.0", "--smtp-url", &sink.url()])
        .await
        .ok();
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 2);
    let rcpts: Vec<&str> = msgs
        .iter()
        .flat_map(|m| m.rcpt_to.iter().map(String::as_str))
        .collect();
    assert!(!rcpts.contains(&"attacker@evil.example"));
    let eve = msgs
        .iter()
        .find(|m| m.rcpt_to[0] == "eve@austintexas.gov")
        .unwrap();
    let p = mime::check(&eve.raw);
    assert_eq!(p.to, vec!["eve@austintexas.gov"]);
    assert!(p.subject.starts_with("Moped v3.12.0"), "{}", p.subject);
    assert!(!p.subject.contains("pwned"));
    let subjects = p
        .header_names
        .iter()
        .filter(|h| h.eq_ignore_ascii_case("Subject"))
        .count();
    assert_eq!(subjects, 1);
    assert!(!p.header_names.iter().any(|h| h.eq_ignore_ascii_case("Bcc")));
    // The markup is shown as text, not run, in the HTML part.
    assert!(
        p.html
            .contains("Hi Eve Bcc: attacker@evil.example Subject: pwned,"),
        "{}",
        p.html
    );
    assert!(!p.html.contains("<img") && !p.html.contains("<script"));
    assert!(!p.html.contains("href=\"https://evil.example\""));
    assert!(!p.html.contains("<strong style=\"color: #111827;\">bold"));
    assert!(
        p.text
            .starts_with("Hi Eve Bcc: attacker@evil.example Subject: pwned,"),
        "{}",
        p.text
    );
    env.cleanup().await;
}
both!(hostile_contact_changes_no_header_and_injects_no_html);

async fn dry_run_preview_and_single_copy(b: Backend) {
    let env = Env::new(b).await;
    let mug = audience_of(&sample_csv(), Audience::Mug);
    let sink = SmtpSink::start();
    let preview = env.path().join("preview");
    let run = env
        .run(&[
            "release-notes",
            "v3.11.0",
            "--smtp-url",
            &sink.url(),
            "--dry-run",
            "--preview",
            preview.to_str().unwrap(),
            "--format",
            "json",
        ])
        .await;
    run.ok();
    assert_eq!(run.summary()["mode"], "dry-run");
    assert_eq!(run.summary()["pending"], mug.len());
    assert_eq!(sink.messages().len(), 0, "dry run sends nothing");
    let files = walk(&preview);
    assert_eq!(
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .count(),
        mug.len()
    );
    assert_eq!(
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "html"))
            .count(),
        mug.len()
    );
    let store = env.store().await;
    assert!(
        store
            .find_campaign("release-notes/v3.11.0")
            .await
            .unwrap()
            .is_none(),
        "dry run records no campaign"
    );

    // --to: one copy, not recorded.
    env.run(&[
        "release-notes",
        "v3.11.0",
        "--smtp-url",
        &sink.url(),
        "--to",
        "Reviewer@Example.org",
    ])
    .await
    .ok();
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpt_to, vec!["reviewer@example.org"]);
    assert_eq!(msgs[0].mail_from, "moped-bounces@austintexas.gov");
    mime::check(&msgs[0].raw);
    assert!(
        store
            .find_campaign("release-notes/v3.11.0")
            .await
            .unwrap()
            .is_none(),
        "--to is not recorded"
    );
    // ...so the real run still sends to everybody.
    let run = env
        .send_json(&["release-notes", "v3.11.0"], &sink.url())
        .await;
    run.ok();
    assert_eq!(run.summary()["sent"], mug.len());
    store.close().await;
    env.cleanup().await;
}
both!(dry_run_preview_and_single_copy);

async fn each_notice_has_its_content(b: Backend) {
    let env = Env::new(b).await;
    let sink = SmtpSink::start();
    let url = sink.url();
    env.run(&[
        "maintenance-scheduled",
        "--start",
        "2026-12-03 17:00",
        "--end",
        "2026-12-03 19:00",
        "--allow-past",
        "--smtp-url",
        &url,
    ])
    .await
    .ok();
    env.run(&["maintenance-end", "--smtp-url", &url]).await.ok();
    let users = audience_of(&sample_csv(), Audience::Users).len();
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 2 * users);
    let parsed: Vec<_> = msgs.iter().map(|m| mime::check(&m.raw)).collect();
    let scheduled: Vec<_> = parsed
        .iter()
        .filter(|p| p.subject.starts_with("Moped maintenance Thursday"))
        .collect();
    let ended: Vec<_> = parsed
        .iter()
        .filter(|p| p.subject == "Moped is back: maintenance is over (v3.12.0 Goliad)")
        .collect();
    assert_eq!(scheduled.len(), users);
    assert_eq!(ended.len(), users);
    for p in scheduled {
        assert!(
            p.text.contains("Thursday, December 3, 2026 at 5:00 PM CST"),
            "{}",
            p.text
        );
        assert!(p.text.contains("Thursday, December 3, 2026 at 7:00 PM CST"));
        assert!(!p.text.contains(REFRESH));
    }
    for p in ended {
        assert!(p.text.contains(REFRESH) && p.html.contains(REFRESH));
    }
    env.cleanup().await;
}
both!(each_notice_has_its_content);
