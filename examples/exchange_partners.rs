//! Local stand-ins for Exchange Online that speak its protocols, to follow the README's "Sending
//! through Exchange Online" on this machine: the OAuth 2.0 token endpoint (client credentials,
//! `client_secret_post`), an SMTP server that offers STARTTLS and then takes only `AUTH XOAUTH2`
//! with a token that endpoint issued, and a real Dovecot whose `oauth2` passdb asks the endpoint
//! about each token (XOAUTH2 over STARTTLS). They are the partners the tests use
//! (`tests/support/`), started by hand:
//!
//! ```sh
//! cargo run --example exchange_partners     # prints the settings to use; Enter stops it
//! ```
//!
//! Dovecot must be installed (`apt-get install dovecot-imapd`). Everything listens on loopback.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::BufRead as _;
use std::time::Duration;

use support::dovecot::Dovecot;
use support::oauth_server::{OAuthServer, TENANT};
use support::smtp_server::{Rule, SmtpServer};

const SENDER: &str = "moped@austintexas.gov";
const BOUNCES: &str = "moped-bounces";
const CLIENT_ID: &str = "6b1f0c2e-notify-local-partner";
const SECRET: &str = "local-partner-secret";

fn main() {
    let dir = tempfile::tempdir().expect("a scratch folder");
    let smtp_cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("a certificate for the SMTP server");
    let imap_cert = rcgen::generate_simple_self_signed(vec!["127.0.0.2".to_string()])
        .expect("a certificate for Dovecot");
    let ca = dir.path().join("partners-ca.pem");
    std::fs::write(
        &ca,
        format!("{}{}", smtp_cert.cert.pem(), imap_cert.cert.pem()),
    )
    .expect("write the CA file");

    // Tokens live an hour, as Microsoft's do; the SMTP server and Dovecot accept only those.
    let sending = OAuthServer::start(CLIENT_ID, SECRET, SENDER, Duration::from_secs(3600));
    let smtp = SmtpServer::start_blocking(vec![
        Rule::Pipelining,
        Rule::StartTls {
            cert_pem: smtp_cert.cert.pem(),
            key_pem: smtp_cert.key_pair.serialize_pem(),
        },
        Rule::Xoauth2 {
            user: SENDER.into(),
            tokens: sending.tokens(),
        },
    ]);
    let reading = OAuthServer::start(CLIENT_ID, SECRET, BOUNCES, Duration::from_secs(3600));
    let bounce = format!(
        "From: Mail Delivery System <MAILER-DAEMON@austintexas.gov>\r\nTo: {BOUNCES}@austintexas.gov\r\n\
         Subject: Undeliverable: Moped v3.12.0 release notes\r\nDate: Thu, 03 Dec 2026 17:20:00 -0600\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nDelivery has failed to these recipients.\r\n\r\n\
         --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; austintexas.gov\r\n\r\n\
         Final-Recipient: rfc822; former.employee@austintexas.gov\r\nAction: failed\r\nStatus: 5.1.10\r\n\
         Diagnostic-Code: smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found\r\n\r\n--b--\r\n"
    );
    let imap = Dovecot::start_oauth2(
        BOUNCES,
        &[("1.ndr", bounce.as_bytes())],
        &imap_cert.cert.pem(),
        &imap_cert.key_pair.serialize_pem(),
        &reading.introspect_url(),
        "",
    );

    println!("Exchange Online's partners are listening on loopback. In another shell, from the repository:");
    println!();
    println!(
        "export NOTIFY_SMTP_URL='smtp://127.0.0.1:{}?tls=required'",
        smtp.port()
    );
    println!("export NOTIFY_SMTP_AUTH=xoauth2");
    println!("export NOTIFY_OAUTH_TENANT={TENANT}");
    println!("export NOTIFY_OAUTH_CLIENT_ID={CLIENT_ID}");
    println!(
        "export NOTIFY_OAUTH_TOKEN_URL='{}'   # Microsoft's by default; a loopback one may be http",
        sending.token_url_template()
    );
    println!("export NOTIFY_OAUTH_CLIENT_SECRET={SECRET}");
    println!("export NOTIFY_SMTP_USER={SENDER}");
    println!(
        "export NOTIFY_SMTP_CA_FILE={}   # these partners' certificates",
        ca.display()
    );
    println!("notify release-notes v3.12.0 --to you@austintexas.gov");
    println!("notify release-notes v3.12.0");
    println!(
        "NOTIFY_OAUTH_TOKEN_URL='{}' notify bounces import --imap {}",
        reading.token_url_template(),
        imap.bare_url("INBOX")
    );
    println!();
    println!("Press Enter to stop.");
    let _ = std::io::stdin().lock().lines().next();

    let log = smtp.log();
    let auths = log
        .iter()
        .filter(|s| s.line.starts_with("AUTH "))
        .collect::<Vec<_>>();
    println!(
        "SMTP: {} message(s) accepted; {} AUTH line(s), {} over TLS, all XOAUTH2: {}",
        smtp.received().len(),
        auths.len(),
        auths.iter().filter(|s| s.tls).count(),
        auths.iter().all(|s| s.line.starts_with("AUTH XOAUTH2 "))
    );
    println!(
        "token endpoints: {} token(s) issued for sending, {} for the bounce mailbox",
        sending.issued(),
        reading.issued()
    );
    println!(
        "bounce mailbox: {} message(s) left in INBOX",
        imap.messages_on_disk(None).len()
    );
    smtp.stop_blocking();
    sending.stop();
    reading.stop();
    drop(imap);
}
