//! The IMAP bounce-mailbox client (`src/intake/imap.rs`) against a real Dovecot started by the
//! test (`tests/support/dovecot.rs`; needs `apt-get install -y dovecot-imapd`).
//!
//! Proves: messages come back byte for byte (modulo CRLF) without being marked `\Seen`;
//! oversized messages are skipped and reported; `move_to` creates the folder and moves exactly
//! the given messages; a wrong password, a missing mailbox, TLS against a plain port, STARTTLS
//! on a server without it, and a closed port each give the matching error, never with the
//! password in it; bad URLs are refused clearly. The password goes only over TLS: `imap://`
//! upgrades with STARTTLS before LOGIN (a Dovecot that refuses logins in clear lets it in, and
//! logs the login as made over TLS), and a Dovecot without STARTTLS is refused with no login
//! attempted (its log says so) unless the URL says `?tls=none`. XOAUTH2 (Exchange Online's only
//! way in) against Dovecot's `oauth2` passdb and the test OAuth server (`tests/support/
//! oauth_server.rs`): a token from notify's `TokenSource` signs in over STARTTLS with and without
//! SASL-IR; a token the server's endpoint never issued, or an expired one, is refused with what to
//! check; a server without XOAUTH2 or without STARTTLS gets no token.

mod support;

use std::time::Duration;

use notify::config::OAuthSettings;
use notify::intake::imap::{ImapError, ImapMailbox, ImapTls, ImapUrl};
use notify::oauth::TokenSource;
use support::dovecot::Dovecot;
use support::oauth_server::OAuthServer;

const USER: &str = "bounces";
const PASSWORD: &str = "s3cret-Bounce-Pa55";

/// CRLF and LF line endings compare equal (Dovecot serves CRLF whatever is on disk).
fn normalise(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

fn fixture() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bounces/postfix_user_unknown.eml"
    );
    std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn ordinary() -> Vec<u8> {
    b"From: Alice <alice@example.org>\r\n\
      To: bounces@example.org\r\n\
      Subject: Not a bounce\r\n\
      Message-ID: <ordinary-1@example.org>\r\n\
      Date: Mon, 4 Mar 2024 10:00:00 -0600\r\n\
      \r\n\
      Just a reply from a person.\r\n"
        .to_vec()
}

fn big() -> Vec<u8> {
    let mut m = b"From: bulk@example.org\nTo: bounces@example.org\nSubject: Big\n\n".to_vec();
    for i in 0..4000 {
        m.extend_from_slice(
            format!("line {i:05} of a large message ........................\n").as_bytes(),
        );
    }
    m
}

fn url(server: &Dovecot, mailbox: &str) -> ImapUrl {
    ImapUrl::parse(&server.url(mailbox)).expect("the test URL parses")
}

/// `(uid, normalised body)` sorted by body, for order-independent comparison.
fn by_body(messages: &[(u32, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = messages.iter().map(|(_, m)| normalise(m)).collect();
    v.sort();
    v
}

fn uid_of(messages: &[(u32, Vec<u8>)], wanted: &[u8]) -> u32 {
    messages
        .iter()
        .find(|(_, m)| normalise(m) == normalise(wanted))
        .map(|(uid, _)| *uid)
        .expect("the message is in the mailbox")
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_and_moves_messages_in_a_real_dovecot() {
    let (bounce, plain, large) = (fixture(), ordinary(), big());
    let server = Dovecot::start(
        USER,
        PASSWORD,
        &[
            ("1709564407.M1P1.test", &bounce),
            ("1709564408.M2P1.test", &plain),
            ("1709564409.M3P1.test", &large),
        ],
    );
    let logs = || server.logs();

    let mut mailbox = ImapMailbox::open(&url(&server, "INBOX"), PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("open: {e}\n{}", logs()));

    // A limit below the large message: it is skipped and reported, the others come back whole.
    let limit = 100_000;
    assert!(large.len() > limit && bounce.len() < limit);
    let first = mailbox
        .fetch_all(limit)
        .await
        .unwrap_or_else(|e| panic!("fetch_all: {e}\n{}", logs()));
    let mut expected = vec![normalise(&bounce), normalise(&plain)];
    expected.sort();
    assert_eq!(by_body(&first), expected);
    let oversized = mailbox.oversized().to_vec();
    assert_eq!(oversized.len(), 1, "{oversized:?}");
    assert!(oversized[0].1 >= large.len() as u64);
    assert!(!first.iter().any(|(uid, _)| *uid == oversized[0].0));

    // With room for everything, all three, in UID order.
    let all = mailbox
        .fetch_all(10 * 1024 * 1024)
        .await
        .expect("fetch_all");
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(mailbox.oversized().is_empty());
    assert_eq!(uid_of(&all, &large), oversized[0].0);

    // Reading did not set \Seen: Maildir keeps flags after ":2," in file names under cur/.
    for (name, _) in server.messages_on_disk(None) {
        let flags = name.split_once(":2,").map(|(_, f)| f).unwrap_or("");
        assert!(!flags.contains('S'), "{name} was marked \\Seen by reading");
    }

    // Move the bounce: "Processed" does not exist yet and is created.
    let bounce_uid = uid_of(&all, &bounce);
    mailbox
        .move_to(&[bounce_uid], "Processed")
        .await
        .unwrap_or_else(|e| panic!("move_to: {e}\n{}", logs()));
    let rest = mailbox
        .fetch_all(10 * 1024 * 1024)
        .await
        .expect("fetch_all");
    let mut expected = vec![normalise(&plain), normalise(&large)];
    expected.sort();
    assert_eq!(by_body(&rest), expected);
    let processed = server.messages_on_disk(Some("Processed"));
    assert_eq!(processed.len(), 1, "{processed:?}");
    assert_eq!(normalise(&processed[0].1), normalise(&bounce));

    // Into the now existing folder; an empty list is a no-op; a vanished UID is no error.
    mailbox.move_to(&[], "Processed").await.expect("empty move");
    let plain_uid = uid_of(&rest, &plain);
    mailbox
        .move_to(&[plain_uid, bounce_uid], "Processed")
        .await
        .expect("move into an existing folder");
    let rest = mailbox
        .fetch_all(10 * 1024 * 1024)
        .await
        .expect("fetch_all");
    assert_eq!(by_body(&rest), vec![normalise(&large)]);
    assert_eq!(server.messages_on_disk(Some("Processed")).len(), 2);

    // Moving into the mailbox being read is refused.
    let err = mailbox
        .move_to(&[rest[0].0], "INBOX")
        .await
        .expect_err("moving into INBOX itself");
    assert!(matches!(err, ImapError::Move { .. }), "{err:?}");

    mailbox.logout().await.expect("logout");

    // The moved messages can be read from the folder through IMAP too.
    let mut processed = ImapMailbox::open(&url(&server, "Processed"), PASSWORD)
        .await
        .expect("open Processed");
    let moved = processed
        .fetch_all(1024 * 1024)
        .await
        .expect("fetch Processed");
    let mut expected = vec![normalise(&bounce), normalise(&plain)];
    expected.sort();
    assert_eq!(by_body(&moved), expected);
    processed.logout().await.expect("logout");
}

/// Servers without MOVE: UID COPY + UID STORE \Deleted + UID EXPUNGE (with UIDPLUS) or EXPUNGE.
#[tokio::test(flavor = "multi_thread")]
async fn moves_without_the_move_capability() {
    // Dovecot still understands MOVE; hiding it from CAPABILITY is what makes the client fall back.
    const BASE: &str =
        "IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE IDLE NAMESPACE UNSELECT";
    for extra in ["UIDPLUS", ""] {
        let (bounce, plain) = (fixture(), ordinary());
        let server = Dovecot::start_with(
            USER,
            PASSWORD,
            &[("1.M1P1.test", &bounce), ("2.M2P1.test", &plain)],
            &format!("imap_capability = {BASE} {extra}"),
        );
        let mut mailbox = ImapMailbox::open(&url(&server, "INBOX"), PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("open: {e}\n{}", server.logs()));
        let debug = format!("{mailbox:?}");
        assert!(debug.contains("has_move: false"), "{debug}");
        assert!(
            debug.contains(&format!("has_uidplus: {}", !extra.is_empty())),
            "{debug}"
        );
        let all = mailbox.fetch_all(1024 * 1024).await.expect("fetch_all");
        assert_eq!(all.len(), 2);
        mailbox
            .move_to(&[uid_of(&all, &bounce)], "Handled")
            .await
            .unwrap_or_else(|e| panic!("move_to without MOVE ({extra:?}): {e}\n{}", server.logs()));
        let rest = mailbox.fetch_all(1024 * 1024).await.expect("fetch_all");
        assert_eq!(
            by_body(&rest),
            vec![normalise(&plain)],
            "capabilities {extra:?}"
        );
        let moved = server.messages_on_disk(Some("Handled"));
        assert_eq!(moved.len(), 1, "capabilities {extra:?}");
        assert_eq!(normalise(&moved[0].1), normalise(&bounce));
        // Nothing left behind flagged \Deleted in INBOX.
        assert_eq!(server.messages_on_disk(None).len(), 1);
        mailbox.logout().await.expect("logout");
    }
}

/// CREATE, UID MOVE and UID COPY go through async-imap's typed calls: Dovecot's refusals come
/// back as errors with its text, and the message stays where it was. Dovecot refuses to create
/// `a..b` (adjacent hierarchy separators: this Dovecot's separator is `.`); `trail.` it creates
/// as the parent `trail` (RFC 3501, 6.3.3), then refuses as a MOVE or COPY destination.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_of_create_move_and_copy_are_errors() {
    const WITHOUT_MOVE: &str =
        "imap_capability = IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE IDLE UIDPLUS";
    for config in ["", WITHOUT_MOVE] {
        let plain = ordinary();
        let server = Dovecot::start_with(USER, PASSWORD, &[("1.M1P1.test", &plain)], config);
        let mut mailbox = ImapMailbox::open(&url(&server, "INBOX"), PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("open: {e}\n{}", server.logs()));
        let uid = uid_of(
            &mailbox.fetch_all(1024 * 1024).await.expect("fetch_all"),
            &plain,
        );

        let err = mailbox
            .move_to(&[uid], "a..b")
            .await
            .expect_err("a name Dovecot will not create");
        assert!(matches!(err, ImapError::CreateFolder { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("server answered NO: [CANNOT] Invalid mailbox name"),
            "{err}"
        );

        let step = if config.is_empty() {
            "UID MOVE"
        } else {
            "UID COPY"
        };
        let err = mailbox
            .move_to(&[uid], "trail.")
            .await
            .expect_err("a destination Dovecot refuses");
        let text = err.to_string();
        assert!(matches!(err, ImapError::Move { count: 1, .. }), "{err:?}");
        assert!(
            text.contains(&format!(
                "`{step} {uid} \"trail.\"` failed: server answered NO"
            )),
            "{text}"
        );
        assert!(text.contains("hierarchy separator"), "{text}");

        // Still there, and (without MOVE) not flagged \Deleted: the STORE was never sent.
        let left = mailbox.fetch_all(1024 * 1024).await.expect("fetch_all");
        assert_eq!(by_body(&left), vec![normalise(&plain)], "{config:?}");
        for (name, _) in server.messages_on_disk(None) {
            let flags = name.split_once(":2,").map(|(_, f)| f).unwrap_or("");
            assert!(!flags.contains('T'), "{name} was flagged \\Deleted");
        }
        mailbox.logout().await.expect("logout");
    }
}

/// A server that fails a FETCH must give an error, not an empty (or short) mailbox.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_fetch_is_an_error_not_an_empty_mailbox() {
    // A Maildir file name's ",S=" size that does not match the file makes Dovecot fail the
    // FETCH with "BYE Internal error" and drop the connection.
    let server = Dovecot::start(USER, PASSWORD, &[("1.M1P1.test,S=1", &ordinary())]);
    let mut mailbox = ImapMailbox::open(&url(&server, "INBOX"), PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("open: {e}\n{}", server.logs()));
    let err = mailbox
        .fetch_all(1024 * 1024)
        .await
        .expect_err("a FETCH the server failed");
    assert!(matches!(err, ImapError::Fetch { .. }), "{err:?}");
    assert!(err.to_string().contains("INBOX"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_say_what_failed_and_never_show_the_password() {
    let server = Dovecot::start(USER, PASSWORD, &[]);

    // Empty mailbox: nothing, and no error.
    let mut empty = ImapMailbox::open(&url(&server, "INBOX"), PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("open: {e}\n{}", server.logs()));
    assert!(empty.fetch_all(1024).await.expect("fetch_all").is_empty());
    empty.logout().await.expect("logout");

    let wrong = "Wr0ng-Passw0rd-xyzzy";
    let err = ImapMailbox::open(&url(&server, "INBOX"), wrong)
        .await
        .expect_err("a wrong password");
    let text = format!("{err} {err:?}");
    assert!(matches!(err, ImapError::Login { .. }), "{text}");
    assert!(!text.contains(wrong), "the password leaked: {text}");
    assert!(text.contains("bounces"), "{text}");
    assert!(
        text.to_lowercase().contains("authentication failed"),
        "{text}"
    );

    let err = ImapMailbox::open(&url(&server, "NoSuchFolder"), PASSWORD)
        .await
        .expect_err("a missing mailbox");
    assert!(matches!(err, ImapError::Select { .. }), "{err:?}");
    assert!(err.to_string().contains("NoSuchFolder"), "{err}");
    assert!(!err.to_string().contains("Outcome {"), "{err}");

    // TLS spoken to a plain-text port fails in the TLS step.
    let mut tls = url(&server, "INBOX");
    tls.tls = ImapTls::Implicit;
    let err = ImapMailbox::open(&tls, PASSWORD)
        .await
        .expect_err("TLS to a plain port");
    assert!(matches!(err, ImapError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("imap://"), "{err}");

    // STARTTLS on a server without it is refused, not silently skipped.
    let starttls =
        ImapUrl::parse(&format!("{}?tls=starttls", server.bare_url("INBOX"))).expect("url");
    let err = ImapMailbox::open(&starttls, PASSWORD)
        .await
        .expect_err("STARTTLS on a server without TLS");
    assert!(matches!(err, ImapError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("STARTTLS"), "{err}");
    assert!(!format!("{err:?}").contains(PASSWORD));

    // Nothing listening.
    let closed = {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let err = ImapMailbox::open(
        &ImapUrl::parse(&format!("imap://{USER}@127.0.0.1:{closed}/INBOX")).expect("url"),
        PASSWORD,
    )
    .await
    .expect_err("a closed port");
    assert!(matches!(err, ImapError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{closed}")),
        "{err}"
    );
}

/// `(certificate PEM, key PEM)` for 127.0.0.2 (where the STARTTLS Dovecot listens), signed by no public CA.
fn certificate() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.2".to_string()]).expect("rcgen");
    (cert.cert.pem(), cert.key_pair.serialize_pem())
}

/// Dovecot's log once `wanted` is in it (it is written by another process), or after 5 s.
fn log_with(server: &Dovecot, wanted: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let logs = server.logs();
        if logs.contains(wanted) || std::time::Instant::now() > deadline {
            return logs;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `imap://` to a Dovecot that offers STARTTLS and refuses any login in clear: the client
/// upgrades first, so the login is accepted, and Dovecot logs it as made over TLS. The
/// certificate must be trusted; `?tls=none` to the same server is refused by Dovecot itself,
/// which shows it would have refused a login sent in clear.
#[tokio::test(flavor = "multi_thread")]
async fn imap_url_upgrades_with_starttls_before_login() {
    let (cert, key) = certificate();
    let bounce = fixture();
    let server = Dovecot::start_starttls(USER, PASSWORD, &[("1.M1P1.test", &bounce)], &cert, &key);
    let url = ImapUrl::parse(&server.url("INBOX")).expect("url");
    assert_eq!(url.tls, ImapTls::Auto);

    let err = ImapMailbox::open(&url, PASSWORD)
        .await
        .expect_err("a certificate no public CA signed");
    assert!(matches!(err, ImapError::Tls { .. }), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    let mut mailbox = ImapMailbox::open_trusting(&url, PASSWORD, Some(cert.as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("open over STARTTLS: {e}\n{}", server.logs()));
    let all = mailbox.fetch_all(1024 * 1024).await.expect("fetch_all");
    assert_eq!(by_body(&all), vec![normalise(&bounce)]);
    mailbox.logout().await.expect("logout");
    let logs = log_with(&server, "Login: user=<bounces>");
    let logins: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("Login: user=<bounces>"))
        .collect();
    assert_eq!(logins.len(), 1, "{logs}");
    assert!(logins[0].contains(", TLS"), "{logs}");

    // This Dovecot refuses a login in clear: `?tls=none` (no upgrade) is turned away by it.
    let plain = ImapUrl::parse(&format!("{}?tls=none", server.bare_url("INBOX"))).expect("url");
    let err = ImapMailbox::open_trusting(&plain, PASSWORD, Some(cert.as_bytes()))
        .await
        .expect_err("a login in clear to a server that requires TLS");
    assert!(matches!(err, ImapError::Login { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(PASSWORD));
}

/// `imap://` to a Dovecot without STARTTLS: refused before LOGIN (Dovecot logs a connection
/// with no authentication attempt), with what to do; `?tls=none` logs in, in clear.
#[tokio::test(flavor = "multi_thread")]
async fn imap_url_without_starttls_is_refused_before_login() {
    let server = Dovecot::start(USER, PASSWORD, &[]);
    let url = ImapUrl::parse(&server.bare_url("INBOX")).expect("url");
    let err = ImapMailbox::open(&url, PASSWORD)
        .await
        .expect_err("no STARTTLS, a password to send");
    let text = format!("{err} {err:?}");
    assert!(matches!(err, ImapError::NoStartTls { .. }), "{text}");
    for says in [
        "does not offer STARTTLS",
        "imaps://",
        "?tls=none",
        "IMAP4REV1",
    ] {
        assert!(text.contains(says), "{says}: {text}");
    }
    assert!(!text.contains(PASSWORD), "{text}");
    let logs = log_with(&server, "no auth attempts");
    assert!(logs.contains("no auth attempts"), "{logs}");
    assert!(!logs.contains("Login: user="), "{logs}");

    let plain = ImapUrl::parse(&server.url("INBOX")).expect("url");
    assert_eq!(plain.tls, ImapTls::None);
    let mailbox = ImapMailbox::open(&plain, PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("?tls=none: {e}\n{}", server.logs()));
    mailbox.logout().await.expect("logout");
    let logs = log_with(&server, "Login: user=<bounces>");
    assert!(logs.contains("Login: user=<bounces>"), "{logs}");
}

#[test]
fn bad_urls_are_refused_clearly() {
    let cases = [
        ("bounces@mail.example.org", "not an IMAP URL"),
        (
            "https://bounces@mail.example.org/INBOX",
            "unsupported scheme",
        ),
        ("imaps://mail.example.org/INBOX", "no user name"),
        ("imaps://bounces@/INBOX", "no host"),
        (
            "imaps://bounces@mail.example.org:imap/INBOX",
            "not a port number",
        ),
        (
            "imaps://bounces@mail.example.org/INBOX?tls=starttls",
            "imap://",
        ),
        (
            "imap://bounces@mail.example.org/INBOX?tls=yes",
            "unknown IMAP URL parameter",
        ),
    ];
    for (input, says) in cases {
        let err = ImapUrl::parse(input).expect_err(input);
        assert!(err.contains(says), "{input}: {err}");
    }
    let err = ImapUrl::parse("imaps://bounces:TopSecret99@mail.example.org/INBOX")
        .expect_err("a password in the URL");
    assert!(err.contains("NOTIFY_IMAP_PASSWORD"), "{err}");
    assert!(!err.contains("TopSecret99"), "{err}");

    let ok = ImapUrl::parse("imaps://bounces@mail.example.org").expect("valid");
    assert_eq!(ok.to_string(), "imaps://bounces@mail.example.org:993/INBOX");
}

/// A token from the test OAuth server through notify's own [`TokenSource`], as the command gets one.
async fn token_from(oauth: &OAuthServer) -> notify::oauth::Token {
    let settings = OAuthSettings {
        token_url: oauth.token_url(),
        client_id: OAUTH_CLIENT.to_string(),
        client_secret: OAUTH_SECRET.to_string(),
        scope: "https://outlook.office365.com/.default".to_string(),
    };
    TokenSource::new(&settings)
        .expect("token source")
        .token()
        .await
        .expect("a token from the test endpoint")
}

const OAUTH_CLIENT: &str = "notify-test-app";
const OAUTH_SECRET: &str = "Client-Secret-For-Tests-7";

/// The login lines Dovecot logged for `USER`, once there are `n` of them (or after 5 s).
fn logins(server: &Dovecot, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let found: Vec<String> = server
            .logs()
            .lines()
            .filter(|l| l.contains("Login: user=<bounces>"))
            .map(str::to_string)
            .collect();
        if found.len() >= n || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `AUTHENTICATE XOAUTH2` against Dovecot's `oauth2` passdb, which asks the test OAuth server's
/// introspection endpoint about each token: an issued token opens the mailbox over STARTTLS, on
/// the command line (SASL-IR) and, from a server without SASL-IR, after the continuation; Dovecot
/// logs each login as XOAUTH2 over TLS.
#[tokio::test(flavor = "multi_thread")]
async fn xoauth2_signs_in_to_dovecot_with_an_issued_token() {
    let oauth = OAuthServer::start(OAUTH_CLIENT, OAUTH_SECRET, USER, Duration::from_secs(3600));
    let (cert, key) = certificate();
    let bounce = fixture();
    // Dovecot's default capabilities less SASL-IR.
    const NO_SASL_IR: &str = "imap_capability = IMAP4rev1 LITERAL+ LOGIN-REFERRALS ID ENABLE IDLE";
    for (extra, sasl_ir) in [("", true), (NO_SASL_IR, false)] {
        let server = Dovecot::start_oauth2(
            USER,
            &[("1.M1P1.test", &bounce)],
            &cert,
            &key,
            &oauth.introspect_url(),
            extra,
        );
        let url = ImapUrl::parse(&server.url("INBOX")).expect("url");
        assert_eq!(url.tls, ImapTls::Auto);
        let before = oauth.introspections();
        let token = token_from(&oauth).await;
        let mut mailbox = ImapMailbox::open_xoauth2(&url, token.secret(), Some(cert.as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("XOAUTH2 (SASL-IR {sasl_ir}): {e}\n{}", server.logs()));
        let all = mailbox.fetch_all(1024 * 1024).await.expect("fetch_all");
        assert_eq!(by_body(&all), vec![normalise(&bounce)]);
        mailbox
            .move_to(&[all[0].0], "Processed")
            .await
            .expect("move");
        mailbox.logout().await.expect("logout");
        assert_eq!(server.messages_on_disk(Some("Processed")).len(), 1);
        assert!(
            oauth.introspections() > before,
            "Dovecot asked the endpoint"
        );
        let lines = logins(&server, 1);
        assert_eq!(lines.len(), 1, "{}", server.logs());
        assert!(
            lines[0].contains("method=XOAUTH2") && lines[0].contains(", TLS"),
            "{}",
            lines[0]
        );
        assert!(!server.logs().contains(token.secret()));
    }
}

/// Tokens the IMAP server does not accept (never issued by its endpoint, or expired) are refused
/// with what to check in Exchange, and the token is in no error; a server that does not offer
/// XOAUTH2, and one without STARTTLS, are refused before the token is sent.
#[tokio::test(flavor = "multi_thread")]
async fn xoauth2_refusals_say_what_to_check_and_never_show_the_token() {
    let oauth = OAuthServer::start(OAUTH_CLIENT, OAUTH_SECRET, USER, Duration::from_secs(1));
    let (cert, key) = certificate();
    let server = Dovecot::start_oauth2(USER, &[], &cert, &key, &oauth.introspect_url(), "");
    let url = ImapUrl::parse(&server.url("INBOX")).expect("url");

    // Issued by another endpoint: this server's endpoint calls it inactive.
    let other = OAuthServer::start(OAUTH_CLIENT, OAUTH_SECRET, USER, Duration::from_secs(3600));
    let stranger = token_from(&other).await;
    // Issued by this server's endpoint, then left to expire.
    let expired = token_from(&oauth).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(!oauth.valid(expired.secret()));
    for token in [stranger.secret(), expired.secret()] {
        let err = ImapMailbox::open_xoauth2(&url, token, Some(cert.as_bytes()))
            .await
            .expect_err("a token the server's endpoint does not call active");
        let text = format!("{err} {err:?}");
        assert!(matches!(err, ImapError::TokenRefused { .. }), "{text}");
        for says in [
            "refused the OAuth token",
            "AUTHENTICATIONFAILED",
            "IMAP.AccessAsApp",
            "Add-MailboxPermission -Identity bounces",
            "https://outlook.office365.com/.default",
        ] {
            assert!(text.contains(says), "{says}: {text}");
        }
        assert!(!text.contains(token), "the token leaked: {text}");
        assert!(!text.contains("Bearer"), "{text}");
    }
    assert!(logins(&server, 0).is_empty(), "{}", server.logs());

    // A server that signs in only with passwords: the token is not sent.
    let password_only = Dovecot::start_starttls(USER, PASSWORD, &[], &cert, &key);
    let url = ImapUrl::parse(&password_only.url("INBOX")).expect("url");
    let err = ImapMailbox::open_xoauth2(&url, stranger.secret(), Some(cert.as_bytes()))
        .await
        .expect_err("no AUTH=XOAUTH2");
    let text = format!("{err} {err:?}");
    assert!(matches!(err, ImapError::NoXOAuth2 { .. }), "{text}");
    assert!(text.contains("AUTH=PLAIN"), "{text}");
    assert!(!text.contains(stranger.secret()), "{text}");
    let logs = log_with(&password_only, "no auth attempts");
    assert!(logs.contains("no auth attempts"), "{logs}");

    // imap:// to a server without STARTTLS: refused before the token would go in clear.
    let plain = Dovecot::start(USER, PASSWORD, &[]);
    let url = ImapUrl::parse(&plain.bare_url("INBOX")).expect("url");
    let err = ImapMailbox::open_xoauth2(&url, stranger.secret(), None)
        .await
        .expect_err("no STARTTLS");
    assert!(matches!(err, ImapError::NoStartTls { .. }), "{err:?}");
    let logs = log_with(&plain, "no auth attempts");
    assert!(logs.contains("no auth attempts"), "{logs}");
}
