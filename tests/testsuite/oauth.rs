//! Sending through Exchange Online's OAuth 2.0: `smtp_auth = "xoauth2"` against a real token
//! endpoint on loopback (the test OAuth server: client credentials grant, short-lived random
//! tokens) and the scripted SMTP server speaking XOAUTH2 as Exchange does (STARTTLS, then only
//! AUTH XOAUTH2 with a token the endpoint issued and that has not expired). No password is
//! configured anywhere; the secret and the tokens must show nowhere.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use notify::contacts::Audience;

use crate::both;
use crate::harness::{audience_of, generated_contacts, Backend, Env};
use crate::support::oauth_server::{OAuthServer, TENANT};
use crate::support::smtp_server::{Rule, Seen, SmtpServer, Tokens};

const MAILBOX: &str = "moped-notices@austintexas.gov";
const CLIENT_ID: &str = "3f2b8c1e-5a9d-4e7f-b6c2-0d1e2f3a4b5c";
const SECRET: &str = "Xq8~Q.vTOPSECRET_client_secret-value";
const KEY: &str = "release-notes/v3.12.0";

/// A certificate for 127.0.0.1 that no public CA signed: `(certificate PEM, key PEM)`.
fn certificate() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    (cert.cert.pem(), cert.key_pair.serialize_pem())
}

/// The SMTP server as Exchange Online's client submission: STARTTLS, then XOAUTH2 only.
async fn exchange(tokens: Tokens, cert: &str, key: &str) -> SmtpServer {
    SmtpServer::start(vec![
        Rule::Pipelining,
        Rule::StartTls {
            cert_pem: cert.into(),
            key_pem: key.into(),
        },
        Rule::Xoauth2 {
            user: MAILBOX.into(),
            tokens,
        },
    ])
    .await
}

/// The environment for XOAUTH2 against `oauth`: tenant, client id, the token URL (with
/// `{tenant}` for the tenant to go into), the secret `secret`, the mailbox and the relay's CA.
/// No password.
fn configure(env: &mut Env, oauth: &OAuthServer, secret: &str, cert: &str) {
    let ca = env.path().join("relay-ca.pem");
    std::fs::write(&ca, cert).unwrap();
    env.env("NOTIFY_SMTP_CA_FILE", ca.to_str().unwrap());
    env.env("NOTIFY_SMTP_AUTH", "xoauth2");
    env.env("NOTIFY_OAUTH_TENANT", TENANT);
    env.env("NOTIFY_OAUTH_CLIENT_ID", CLIENT_ID);
    env.env("NOTIFY_OAUTH_TOKEN_URL", &oauth.token_url_template());
    env.env("NOTIFY_OAUTH_CLIENT_SECRET", secret);
    env.env("NOTIFY_SMTP_USER", MAILBOX);
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

/// The bearer token of each AUTH XOAUTH2 line the server read.
fn tokens_used(log: &[Seen]) -> Vec<String> {
    use base64::Engine as _;
    log.iter()
        .filter_map(|s| s.line.strip_prefix("AUTH XOAUTH2 "))
        .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .filter_map(|raw| {
            String::from_utf8_lossy(&raw)
                .split('\x01')
                .find_map(|p| p.strip_prefix("auth=Bearer ").map(str::to_string))
        })
        .collect()
}

/// Everything the database holds, as text: the SQLite files byte for byte (free pages and
/// the write-ahead log included), or every row of every PostgreSQL table as JSON.
async fn dump_database(env: &Env, b: Backend) -> String {
    match b {
        Backend::Sqlite => {
            let mut all = Vec::new();
            for entry in std::fs::read_dir(env.path()).unwrap().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("notify.db") {
                    all.extend(std::fs::read(entry.path()).unwrap());
                }
            }
            assert!(!all.is_empty(), "the SQLite database is there");
            String::from_utf8_lossy(&all).into_owned()
        }
        Backend::Postgres => {
            use sqlx::{Connection, Row};
            let mut conn = sqlx::PgConnection::connect(&env.database_url)
                .await
                .unwrap();
            let tables: Vec<String> = sqlx::query(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect();
            assert!(tables.len() >= 3, "{tables:?}");
            let mut out = String::new();
            for t in tables {
                let rows = sqlx::query(&format!("SELECT row_to_json(x)::text FROM \"{t}\" x"))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                for r in rows {
                    out.push_str(&r.get::<String, _>(0));
                    out.push('\n');
                }
            }
            out
        }
    }
}

/// Every file under `dir` (the outbox, if anything was written there), as text.
fn files_under(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&files_under(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    out
}

/// With `smtp_auth = "xoauth2"` and no password, `release-notes` delivers to every member
/// over STARTTLS + AUTH XOAUTH2 with a token from the endpoint, which saw the client id and
/// secret (form-encoded, client_secret_post). Neither the secret nor any token shows in the
/// output (NOTIFY_LOG=trace), the outbox or any table.
async fn xoauth2_delivers_to_everyone_with_no_password(b: Backend) {
    let sample = std::fs::read_to_string(
        std::path::Path::new(crate::harness::REPO).join("contacts/moped_users.csv"),
    )
    .unwrap();
    let mug = audience_of(&sample, Audience::Mug);
    let mut env = Env::new(b).await;
    let oauth = OAuthServer::start(CLIENT_ID, SECRET, MAILBOX, Duration::from_secs(3600));
    let (cert, key) = certificate();
    let server = exchange(oauth.tokens(), &cert, &key).await;
    configure(&mut env, &oauth, SECRET, &cert);
    env.env("NOTIFY_LOG", "trace");

    let run = env
        .send_json(&["release-notes", "v3.12.0"], &server.url())
        .await;
    run.ok();
    let summary = run.summary();
    assert_eq!(summary["campaign"], KEY);
    assert_eq!(summary["sent"], mug.len());
    let got = received_by_rcpt(&server);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), mug);
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    assert!(env.states(KEY).await.values().all(|s| s == "sent"));

    // The endpoint: one token for the run, asked for with the app's credentials.
    let requests = oauth.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let r = &requests[0];
    assert_eq!(
        (
            r.grant_type.as_str(),
            r.client_id.as_str(),
            r.client_secret.as_str(),
            r.scope.as_str()
        ),
        (
            "client_credentials",
            CLIENT_ID,
            SECRET,
            "https://outlook.office365.com/.default"
        )
    );
    // Every login was AUTH XOAUTH2 over TLS, after STARTTLS, with the issued token.
    let log = server.log();
    let auths: Vec<&Seen> = log
        .iter()
        .filter(|s| s.line.to_ascii_uppercase().starts_with("AUTH"))
        .collect();
    assert!(!auths.is_empty());
    assert!(
        auths
            .iter()
            .all(|s| s.tls && s.line.starts_with("AUTH XOAUTH2 ")),
        "{auths:?}"
    );
    let issued = oauth.issued_tokens();
    assert_eq!(
        tokens_used(&log).into_iter().collect::<BTreeSet<_>>(),
        issued.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(server.refused_tokens(), 0);

    // Nowhere to be seen: not in the output with trace logging, not in a file, not in a table.
    assert!(
        run.stderr.contains("DEBUG"),
        "debug logging was on: {}",
        run.stderr
    );
    let outbox = files_under(&env.outbox());
    let tables = dump_database(&env, b).await;
    assert!(tables.contains(&mug[0]), "the dump holds the sends");
    for (place, text) in [
        ("stdout", run.stdout.as_str()),
        ("stderr", run.stderr.as_str()),
        ("the outbox", outbox.as_str()),
        ("the database", tables.as_str()),
    ] {
        assert!(!text.contains(SECRET), "the client secret is in {place}");
        for t in &issued {
            assert!(!text.contains(t.as_str()), "a token is in {place}");
        }
    }
    // A status report shows nothing of them either.
    let status = env.run(&["status", KEY]).await;
    assert!(!status.stdout.contains(SECRET) && !issued.iter().any(|t| status.stdout.contains(t)));
    server.stop().await;
    oauth.stop();
    env.cleanup().await;
}
both!(xoauth2_delivers_to_everyone_with_no_password);

/// Tokens that live 2 s and a run that takes about 4 s (20 members at 5 a second): sessions
/// whose token is due are closed and opened anew with a renewed token before the next message,
/// so the server never sees a message begun on an expired session, nobody is lost or sent
/// twice, and the endpoint was asked more than once.
async fn a_token_that_expires_midway_is_renewed_and_nobody_is_lost(b: Backend) {
    let csv = generated_contacts(20);
    let all = audience_of(&csv, Audience::Mug);
    assert_eq!(all.len(), 20);
    let mut env = Env::with_contacts(b, &csv).await;
    let oauth = OAuthServer::start(CLIENT_ID, SECRET, MAILBOX, Duration::from_secs(2));
    let (cert, key) = certificate();
    let server = exchange(oauth.tokens(), &cert, &key).await;
    configure(&mut env, &oauth, SECRET, &cert);
    env.env("NOTIFY_RATE", "5");

    let started = std::time::Instant::now();
    let run = env
        .send_json(&["release-notes", "v3.12.0"], &server.url())
        .await;
    let took = started.elapsed();
    run.ok();
    assert_eq!(run.summary()["sent"], all.len());
    assert!(
        took > Duration::from_millis(2500),
        "the run crossed an expiry: {took:?}"
    );
    let got = received_by_rcpt(&server);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), all);
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    assert!(env.states(KEY).await.values().all(|s| s == "sent"));

    let requests = oauth.requests();
    assert!(requests.len() >= 2, "tokens asked for: {}", requests.len());
    assert!(requests.iter().all(|r| r.issued));
    let used: BTreeSet<String> = tokens_used(&server.log()).into_iter().collect();
    assert!(
        used.len() >= 2,
        "logins with {} different tokens",
        used.len()
    );
    // (A login may still meet a token that expired while the connection was being opened on a
    // busy machine: that is refused, renewed and tried again, and costs nothing.)
    assert_eq!(
        server.expired_sessions(),
        0,
        "no message begun on a session whose token had expired"
    );
    server.stop().await;
    oauth.stop();
    env.cleanup().await;
}
both!(a_token_that_expires_midway_is_renewed_and_nobody_is_lost);

/// A wrong client secret: the endpoint's refusal (invalid_client, AADSTS7000215) and what to
/// check, exit 1, no SMTP connection at all, nothing claimed, and the wrong secret not shown.
async fn a_wrong_secret_stops_the_run_before_anything_is_claimed(b: Backend) {
    let mut env = Env::new(b).await;
    let oauth = OAuthServer::start(CLIENT_ID, SECRET, MAILBOX, Duration::from_secs(3600));
    let (cert, key) = certificate();
    let server = exchange(oauth.tokens(), &cert, &key).await;
    let wrong = "Wr0ng~secret-value-typed-by-hand";
    configure(&mut env, &oauth, wrong, &cert);

    let run = env
        .send_json(&["release-notes", "v3.12.0"], &server.url())
        .await;
    run.code(1);
    for said in [
        "invalid_client",
        "AADSTS7000215",
        "NOTIFY_OAUTH_CLIENT_SECRET",
        "oauth_client_id",
    ] {
        assert!(run.stderr.contains(said), "{said}: {}", run.stderr);
    }
    assert!(!run.stderr.contains(wrong) && !run.stdout.contains(wrong));
    assert_eq!(oauth.requests().len(), 1);
    assert_eq!(oauth.requests()[0].client_secret, wrong);
    assert_eq!(
        server.connections(),
        0,
        "no SMTP connection without a token"
    );
    let states = env.states(KEY).await;
    assert!(states.values().all(|s| s == "pending"), "{states:?}");
    server.stop().await;
    oauth.stop();
    env.cleanup().await;
}
both!(a_wrong_secret_stops_the_run_before_anything_is_claimed);

/// A server that refuses every token (the app lacks SMTP.SendAsApp, or Exchange does not know
/// its service principal): the token is renewed once and tried on a fresh connection, then the
/// run stops before anything is claimed (exit 1) naming what to check in Exchange.
async fn a_token_the_server_refuses_stops_the_run_with_what_to_check(b: Backend) {
    let mut env = Env::new(b).await;
    let oauth = OAuthServer::start(CLIENT_ID, SECRET, MAILBOX, Duration::from_secs(3600));
    let (cert, key) = certificate();
    let server = exchange(Tokens::new(|_| None), &cert, &key).await;
    configure(&mut env, &oauth, SECRET, &cert);

    let run = env
        .send_json(&["release-notes", "v3.12.0"], &server.url())
        .await;
    run.code(1);
    for said in [
        "535 5.7.3",
        "SMTP.SendAsApp",
        "New-ServicePrincipal",
        "Add-MailboxPermission",
        "SmtpClientAuthenticationDisabled",
        MAILBOX,
    ] {
        assert!(run.stderr.contains(said), "{said}: {}", run.stderr);
    }
    assert_eq!(oauth.requests().len(), 2, "renewed once");
    assert_eq!(server.refused_tokens(), 2);
    let used = tokens_used(&server.log());
    assert_eq!(used.len(), 2);
    assert_ne!(used[0], used[1], "the second login had a new token");
    assert_eq!(server.accepted_count(), 0);
    for t in oauth.issued_tokens() {
        assert!(!run.stderr.contains(&t));
    }
    let states = env.states(KEY).await;
    assert!(states.values().all(|s| s == "pending"), "{states:?}");
    server.stop().await;
    oauth.stop();
    env.cleanup().await;
}
both!(a_token_the_server_refuses_stops_the_run_with_what_to_check);

/// A token revoked in the middle of a run (the server refuses it from the second login on):
/// each connection refused renews it (one request to the endpoint for all of them, however
/// many are refused at once) and logs in again on a fresh connection; everyone gets the
/// notice once and nobody is marked.
async fn a_token_refused_midway_is_renewed_once_and_the_run_goes_on(b: Backend) {
    let csv = generated_contacts(12);
    let all = audience_of(&csv, Audience::Mug);
    let mut env = Env::with_contacts(b, &csv).await;
    let oauth = OAuthServer::start(CLIENT_ID, SECRET, MAILBOX, Duration::from_secs(3600));
    let (cert, key) = certificate();
    let issued = oauth.tokens();
    let first: std::sync::Arc<std::sync::Mutex<Option<String>>> = Default::default();
    let revoked = {
        let first = first.clone();
        Tokens::new(move |token| {
            let mut first = first.lock().unwrap();
            match first.as_deref() {
                // The first token is good for the first login only (notify's check).
                None => *first = Some(token.to_string()),
                Some(f) if f == token => return None,
                Some(_) => {}
            }
            issued.expiry(token)
        })
    };
    let server = exchange(revoked, &cert, &key).await;
    configure(&mut env, &oauth, SECRET, &cert);

    let run = env
        .send_json(&["release-notes", "v3.12.0"], &server.url())
        .await;
    run.ok();
    assert_eq!(run.summary()["sent"], all.len());
    let got = received_by_rcpt(&server);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), all);
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    assert!(env.states(KEY).await.values().all(|s| s == "sent"));
    assert!(server.refused_tokens() >= 1);
    assert_eq!(
        oauth.requests().len(),
        2,
        "one renewal for every refused connection"
    );
    server.stop().await;
    oauth.stop();
    env.cleanup().await;
}
both!(a_token_refused_midway_is_renewed_once_and_the_run_goes_on);

/// Configuration mistakes are bad input (exit 2) that name the key, before anything is asked
/// of the endpoint: no secret, no mailbox, a token URL in plain http to another host, a secret
/// written in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xoauth2_configuration_mistakes_are_bad_input() {
    let mut env = Env::new(Backend::Sqlite).await;
    let oauth = OAuthServer::start(CLIENT_ID, SECRET, MAILBOX, Duration::from_secs(3600));
    let (cert, _) = certificate();
    configure(&mut env, &oauth, SECRET, &cert);
    let send = [
        "release-notes",
        "v3.12.0",
        "--smtp-url",
        "smtp://127.0.0.1:9",
    ];

    let mut no_secret = Env::new(Backend::Sqlite).await;
    configure(&mut no_secret, &oauth, "", &cert);
    let run = no_secret.run(&send).await;
    run.code(2);
    assert!(
        run.stderr.contains("NOTIFY_OAUTH_CLIENT_SECRET"),
        "{}",
        run.stderr
    );

    let mut plain = Env::new(Backend::Sqlite).await;
    configure(&mut plain, &oauth, SECRET, &cert);
    plain.env(
        "NOTIFY_OAUTH_TOKEN_URL",
        "http://login.example.org/{tenant}/oauth2/v2.0/token",
    );
    let run = plain.run(&send).await;
    run.code(2);
    assert!(
        run.stderr.contains("oauth_token_url") && run.stderr.contains("https"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(SECRET));

    let mut no_mailbox = Env::new(Backend::Sqlite).await;
    configure(&mut no_mailbox, &oauth, SECRET, &cert);
    no_mailbox.env("NOTIFY_SMTP_USER", "");
    let run = no_mailbox.run(&send).await;
    run.code(2);
    assert!(run.stderr.contains("NOTIFY_SMTP_USER"), "{}", run.stderr);

    let file = env.path().join("secret.toml");
    std::fs::write(&file, "oauth_client_secret = \"in-the-file\"\n").unwrap();
    let run = env
        .run(&["--config", file.to_str().unwrap(), "status"])
        .await;
    run.code(2);
    assert!(
        run.stderr.contains("oauth_client_secret")
            && run.stderr.contains("NOTIFY_OAUTH_CLIENT_SECRET"),
        "{}",
        run.stderr
    );
    assert!(
        oauth.requests().is_empty(),
        "nothing was asked of the endpoint"
    );
    oauth.stop();
    env.cleanup().await;
}

/// The token source against the real endpoint: one request while the token is good, a new
/// one once less than a tenth of a short token's life remains, a forced renewal, one request
/// for many connections refused with the same token, and what an unreachable endpoint says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_source_caches_and_renews_before_expiry() {
    use notify::oauth::TokenSource;
    let oauth = OAuthServer::start(CLIENT_ID, SECRET, MAILBOX, Duration::from_secs(2));
    let settings = notify::config::OAuthSettings {
        token_url: oauth.token_url(),
        client_id: CLIENT_ID.into(),
        client_secret: SECRET.into(),
        scope: notify::config::DEFAULT_OAUTH_SCOPE.into(),
    };
    let source = TokenSource::new(&settings).unwrap();
    let first = source.token().await.unwrap();
    let again = source.clone().token().await.unwrap();
    assert_eq!(
        first.secret(),
        again.secret(),
        "cached, and shared by clones"
    );
    assert_eq!(oauth.requests().len(), 1);
    assert!(oauth.valid(first.secret()));
    // 2 s tokens are renewed in their last 0.2 s, before the endpoint stops taking them.
    tokio::time::sleep(Duration::from_millis(1850)).await;
    assert!(oauth.valid(first.secret()), "not expired yet");
    let second = source.token().await.unwrap();
    assert_ne!(second.secret(), first.secret());
    assert_eq!(oauth.requests().len(), 2);
    // Four connections refused with the same token: one new token for all.
    let replaced = futures::future::join_all((0..4).map(|_| source.replace(&second))).await;
    let replaced: BTreeSet<String> = replaced
        .into_iter()
        .map(|t| t.unwrap().secret().to_string())
        .collect();
    assert_eq!(replaced.len(), 1);
    assert!(!replaced.contains(second.secret()));
    assert_eq!(oauth.requests().len(), 3);
    // Forced.
    source.renew().await.unwrap();
    assert_eq!((oauth.requests().len(), source.fetched()), (4, 4));
    oauth.stop();

    // Nobody there: what to check, and not the secret.
    let port = crate::harness::free_port();
    let gone = TokenSource::new(&notify::config::OAuthSettings {
        token_url: format!("http://127.0.0.1:{port}/t/oauth2/v2.0/token"),
        ..settings
    })
    .unwrap();
    let e = gone.token().await.unwrap_err().to_string();
    assert!(
        e.contains("cannot reach the OAuth token endpoint") && e.contains("oauth_token_url"),
        "{e}"
    );
    assert!(!e.contains(SECRET), "{e}");
}
