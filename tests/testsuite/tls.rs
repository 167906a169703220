//! Credentials and addresses at the session level, against the scripted SMTP server over real
//! TLS and a real Dovecot: a password goes only over TLS (STARTTLS before AUTH, or no AUTH at all
//! unless `tls=none` is written; the same for IMAP's LOGIN), and an address that is not ASCII
//! goes only to a server that offers SMTPUTF8.

use std::collections::BTreeMap;

use notify::contacts::Audience;

use crate::both;
use crate::harness::{audience_of, generated_contacts, Backend, Env};
use crate::support::smtp_server::{Rule, Seen, SmtpServer};

const USER: &str = "moped-notices";
const PASSWORD: &str = "Relay-Pa55-word";

/// A certificate for 127.0.0.1 that no public CA signed: `(certificate PEM, key PEM)`.
fn certificate() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    (cert.cert.pem(), cert.key_pair.serialize_pem())
}

fn today_key() -> String {
    let today = chrono::Utc::now().with_timezone(&chrono_tz::America::Chicago);
    format!("maintenance-end/v3.12.0/{}", today.format("%Y-%m-%d"))
}

/// The AUTH lines the server read (the first line of each AUTH exchange).
fn auth_lines(log: &[Seen]) -> Vec<&Seen> {
    log.iter()
        .filter(|s| s.line.to_ascii_uppercase().starts_with("AUTH"))
        .collect()
}

fn received_by_rcpt(server: &SmtpServer) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in server.received() {
        for to in r.rcpt_to {
            *m.entry(to).or_insert(0) += 1;
        }
    }
    m
}

/// Credentials in the environment, an `smtp://` URL without `tls=`: a server that offers
/// STARTTLS is upgraded before AUTH on every connection. Until the relay's CA is trusted the
/// upgrade fails and nothing (no AUTH, no message) is sent; then everyone gets the notice once.
async fn a_server_that_offers_starttls_never_sees_auth_before_it(b: Backend) {
    let mut env = Env::with_contacts(b, &generated_contacts(12)).await;
    let all = audience_of(&generated_contacts(12), Audience::Users);
    env.env("NOTIFY_SMTP_USER", USER);
    env.env("NOTIFY_SMTP_PASSWORD", PASSWORD);
    let (cert, key) = certificate();
    let server = SmtpServer::start(vec![
        Rule::Pipelining,
        Rule::StartTls {
            cert_pem: cert.clone(),
            key_pem: key,
        },
        Rule::Auth {
            user: USER.into(),
            password: PASSWORD.into(),
        },
    ])
    .await;
    let url = server.url();

    let untrusted = env.send_json(&["maintenance-end"], &url).await;
    untrusted.code(1);
    assert!(
        untrusted.stderr.to_lowercase().contains("certificate"),
        "{}",
        untrusted.stderr
    );
    assert!(auth_lines(&server.log()).is_empty(), "{:?}", server.log());
    assert_eq!(server.accepted_count(), 0);
    let before = env.sends(&today_key()).await;
    assert!(before.values().all(|(s, _)| s != "sent"), "{before:?}");

    let ca = env.path().join("relay-ca.pem");
    std::fs::write(&ca, &cert).unwrap();
    env.env("NOTIFY_SMTP_CA_FILE", ca.to_str().unwrap());
    let run = env.send_json(&["maintenance-end"], &url).await;
    run.ok();
    assert_eq!(run.summary()["sent"], all.len());
    let got = received_by_rcpt(&server);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), all);
    assert!(got.values().all(|&n| n == 1), "{got:?}");

    // Every AUTH came over TLS, after a STARTTLS on the same connection, never in clear.
    let log = server.log();
    let auths = auth_lines(&log);
    assert!(!auths.is_empty(), "the client logged in: {log:?}");
    for auth in &auths {
        assert!(auth.tls, "AUTH in clear: {log:?}");
        let starttls = log
            .iter()
            .position(|s| s.connection == auth.connection && s.line == "STARTTLS");
        let at = log
            .iter()
            .position(|s| std::ptr::eq(s, *auth))
            .expect("in the log");
        assert!(starttls.is_some_and(|i| i < at), "{log:?}");
    }
    assert!(
        !log.iter().any(|s| !s.tls && s.line.contains(PASSWORD)),
        "{log:?}"
    );
    // Messages went over TLS connections only.
    assert!(log
        .iter()
        .filter(|s| s.line.starts_with("MAIL FROM"))
        .all(|s| s.tls));
    server.stop().await;
    env.cleanup().await;
}
both!(a_server_that_offers_starttls_never_sees_auth_before_it);

/// Credentials and a server that does not offer STARTTLS: the run stops before anything is
/// claimed (exit 1, the message says what the server offered and how to go on), no AUTH is
/// sent, nothing is marked sent; with `?tls=opportunistic` too.
async fn credentials_to_a_server_without_starttls_are_refused_before_auth(b: Backend) {
    let mut env = Env::with_contacts(b, &generated_contacts(5)).await;
    env.env("NOTIFY_SMTP_USER", USER);
    env.env("NOTIFY_SMTP_PASSWORD", PASSWORD);
    let server = SmtpServer::start(vec![
        Rule::Pipelining,
        Rule::Auth {
            user: USER.into(),
            password: PASSWORD.into(),
        },
    ])
    .await;
    for url in [server.url(), format!("{}?tls=opportunistic", server.url())] {
        let run = env.send_json(&["maintenance-end"], &url).await;
        run.code(1);
        for says in [
            "does not offer STARTTLS",
            "AUTH PLAIN LOGIN",
            "smtps://",
            "?tls=none",
        ] {
            assert!(run.stderr.contains(says), "{says}: {}", run.stderr);
        }
        assert!(!run.stderr.contains(PASSWORD), "{}", run.stderr);
    }
    let log = server.log();
    assert!(auth_lines(&log).is_empty(), "{log:?}");
    assert!(!log.iter().any(|s| s.line.starts_with("MAIL")), "{log:?}");
    assert_eq!(server.accepted_count(), 0);
    let after = env.sends(&today_key()).await;
    assert!(after.values().all(|(s, _)| s != "sent"), "{after:?}");
    server.stop().await;
    env.cleanup().await;
}
both!(credentials_to_a_server_without_starttls_are_refused_before_auth);

/// `?tls=none` written in the URL: AUTH goes in clear, with a warning on stderr, and the notice
/// is delivered. The same URL to a server that offers STARTTLS stays in clear too: the admin
/// said so.
async fn explicit_tls_none_logs_in_in_clear_with_a_warning(b: Backend) {
    let mut env = Env::with_contacts(b, &generated_contacts(5)).await;
    let all = audience_of(&generated_contacts(5), Audience::Users);
    env.env("NOTIFY_SMTP_USER", USER);
    env.env("NOTIFY_SMTP_PASSWORD", PASSWORD);
    let server = SmtpServer::start(vec![
        Rule::Pipelining,
        Rule::Auth {
            user: USER.into(),
            password: PASSWORD.into(),
        },
    ])
    .await;
    let run = env
        .send_json(&["maintenance-end"], &format!("{}?tls=none", server.url()))
        .await;
    run.ok();
    assert_eq!(run.summary()["sent"], all.len());
    assert!(
        run.stderr.contains("without TLS") && run.stderr.contains("password goes in clear"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("password goes in clear").count(),
        1,
        "warned once: {}",
        run.stderr
    );
    let log = server.log();
    let auths = auth_lines(&log);
    assert!(!auths.is_empty() && auths.iter().all(|s| !s.tls), "{log:?}");
    assert_eq!(server.accepted_count(), all.len());
    server.stop().await;
    env.cleanup().await;
}
both!(explicit_tls_none_logs_in_in_clear_with_a_warning);

/// The generated contacts plus one whose address is not ASCII.
fn contacts_with_a_non_ascii_address() -> (String, String) {
    let address = "josé.núñez@example.org";
    let mut csv = generated_contacts(4);
    csv.push_str(&format!(
        "900,José,Núñez,{address},Planner,Signs & Markings,\"[\"\"moped-editor\"\"]\",false,false,true,,,\n"
    ));
    (csv, address.to_string())
}

/// An address that is not ASCII: written to the outbox with a To: header that carries it as
/// UTF-8 (RFC 6532); to a server without SMTPUTF8 that recipient alone fails, with a reason
/// that says so, and nothing is sent to it; the others are delivered without the parameter.
async fn a_non_ascii_address_fails_alone_without_smtputf8(b: Backend) {
    let (csv, address) = contacts_with_a_non_ascii_address();
    let env = Env::with_contacts(b, &csv).await;
    let all = audience_of(&csv, Audience::Users);
    assert!(all.contains(&address), "{all:?}");

    let outbox = env.run(&["maintenance-end", "--format", "json"]).await;
    outbox.ok();
    assert_eq!(outbox.summary()["written"], all.len());
    let eml = walk(&env.outbox())
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .find(|raw| String::from_utf8_lossy(raw).contains(&format!("<{address}>")))
        .expect("the outbox has the message for the address that is not ASCII");
    let parsed = mail_parser::MessageParser::default()
        .parse(&eml)
        .expect("parses");
    let to = parsed
        .to()
        .and_then(|t| t.first())
        .and_then(|a| a.address())
        .expect("a To: address");
    assert_eq!(to, address);

    let server = SmtpServer::start(vec![Rule::Pipelining]).await;
    let run = env.send_json(&["maintenance-end"], &server.url()).await;
    run.ok();
    let s = run.summary();
    assert_eq!(s["failed"], 1, "{s}");
    assert_eq!(s["sent"], all.len() - 1, "{s}");
    let got = received_by_rcpt(&server);
    assert_eq!(got.len(), all.len() - 1);
    assert!(!got.contains_key(&address));
    assert!(server.received().iter().all(|r| !r.smtputf8));
    assert!(
        !server.log().iter().any(|l| l.line.contains(&address)),
        "nothing was sent for it"
    );
    let st = env.sends(s["campaign"].as_str().unwrap()).await;
    let (state, reason) = &st[&address];
    assert_eq!(state, "failed");
    let reason = reason.clone().unwrap_or_default();
    assert!(
        reason.contains("SMTPUTF8") && reason.contains(&address),
        "{reason}"
    );
    // No server refused the address: it is no bounce, and nobody is flagged for it.
    let review = env.run(&["bounces", "report", "--format", "json"]).await;
    review.ok();
    let flagged: serde_json::Value = serde_json::from_str(review.stdout.trim()).unwrap();
    assert_eq!(flagged, serde_json::json!([]), "{}", review.stdout);
    server.stop().await;
    env.cleanup().await;
}
both!(a_non_ascii_address_fails_alone_without_smtputf8);

/// A server that offers SMTPUTF8: the address that is not ASCII is delivered, with
/// `MAIL FROM:<…> SMTPUTF8`, its To: header intact; the other messages go without it.
async fn a_non_ascii_address_goes_to_a_server_with_smtputf8(b: Backend) {
    let (csv, address) = contacts_with_a_non_ascii_address();
    let env = Env::with_contacts(b, &csv).await;
    let all = audience_of(&csv, Audience::Users);
    let server = SmtpServer::start(vec![Rule::Pipelining, Rule::SmtpUtf8]).await;
    let run = env.send_json(&["maintenance-end"], &server.url()).await;
    run.ok();
    assert_eq!(run.summary()["sent"], all.len());
    assert_eq!(run.summary()["failed"], 0);
    let got = received_by_rcpt(&server);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), all);
    for r in server.received() {
        let utf8 = r.rcpt_to == [address.clone()];
        assert_eq!(r.smtputf8, utf8, "{:?}", r.rcpt_to);
        if utf8 {
            let parsed = r.parsed().expect("parses");
            let to = parsed
                .to()
                .and_then(|t| t.first())
                .and_then(|a| a.address())
                .map(str::to_string);
            assert_eq!(to.as_deref(), Some(address.as_str()));
        }
    }
    assert!(server
        .log()
        .iter()
        .any(|l| l.line.starts_with("MAIL FROM:<") && l.line.ends_with("> SMTPUTF8")));
    server.stop().await;
    env.cleanup().await;
}
both!(a_non_ascii_address_goes_to_a_server_with_smtputf8);

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "eml") {
            out.push(p);
        }
    }
    out
}

/// `bounces import --imap imap://…` with the password in NOTIFY_IMAP_PASSWORD, to a Dovecot
/// without STARTTLS: refused before LOGIN (exit 1, what to do, no password shown, no login
/// attempt in Dovecot's log, the message left in place); `?tls=none` imports, with a warning.
async fn imap_import_without_starttls_is_refused_before_login(b: Backend) {
    use crate::support::dovecot::Dovecot;
    let mut env = Env::with_contacts(b, &generated_contacts(3)).await;
    let ooo = "From: A <person00001@example.org>\r\nTo: moped@austintexas.gov\r\nSubject: Automatic reply\r\nAuto-Submitted: auto-replied\r\n\r\nOut of office.\r\n";
    let server = Dovecot::start("moped-bounces", "imap-s3cret", &[("1.ooo", ooo.as_bytes())]);
    env.env("NOTIFY_IMAP_PASSWORD", "imap-s3cret");
    let run = env
        .run(&["bounces", "import", "--imap", &server.bare_url("INBOX")])
        .await;
    run.code(1);
    for says in ["does not offer STARTTLS", "imaps://", "?tls=none"] {
        assert!(run.stderr.contains(says), "{says}: {}", run.stderr);
    }
    assert!(!run.stderr.contains("imap-s3cret"), "{}", run.stderr);
    let logs = server.logs();
    assert!(!logs.contains("Login: user="), "{logs}");
    assert_eq!(server.messages_on_disk(None).len(), 1);

    let run = env.import_bounces(&["--imap", &server.url("INBOX")]).await;
    run.ok();
    assert_eq!(run.summary()["not_bounces"], 1, "{}", run.stdout);
    assert!(
        run.stderr.contains("password goes in clear"),
        "{}",
        run.stderr
    );
    env.cleanup().await;
}
both!(imap_import_without_starttls_is_refused_before_login);
