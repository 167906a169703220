//! `notify serve`'s SES webhook end to end, on both databases: a notice goes out (to the
//! outbox), the real server (`notify serve`, trusting the test certificate through
//! `NOTIFY_SNS_CERTIFICATE_DIR`) takes SNS messages signed with the test key over HTTP, and the
//! review shows what they said. A bounce is tied to its notice by the original's Message-ID and
//! recorded once however often (and however concurrently) it is delivered; a forged one changes
//! nothing; a complaint is recorded and flags nobody.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use chrono::Utc;

use crate::both;
use crate::harness::{outbox_message_id, Backend, Env, REPO};

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:notify-ses";
const CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem";

fn fixtures() -> PathBuf {
    Path::new(REPO).join("tests/fixtures/sns")
}

/// Sign `text` with the test key: SignatureVersion 1 (SHA1withRSA) or 2 (SHA256withRSA).
fn sign(text: &str, version: u8) -> String {
    use rsa::pkcs8::DecodePrivateKey;
    use sha2::Digest;
    let pem = std::fs::read_to_string(fixtures().join("test-signing-key.pem")).unwrap();
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).unwrap();
    let sig = match version {
        1 => key.sign(
            rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
            &sha1::Sha1::digest(text.as_bytes()),
        ),
        _ => key.sign(
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(text.as_bytes()),
        ),
    };
    base64::engine::general_purpose::STANDARD.encode(sig.unwrap())
}

/// An SNS Notification carrying `message`, signed as SNS signs it (written out here, apart from
/// the library's own string to sign, so that a mistake there cannot cancel out).
fn notification(id: &str, message: &str, version: u8) -> String {
    let timestamp = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let to_sign = format!(
        "Message\n{message}\nMessageId\n{id}\nTimestamp\n{timestamp}\nTopicArn\n{TOPIC}\nType\nNotification\n"
    );
    serde_json::json!({
        "Type": "Notification", "MessageId": id, "TopicArn": TOPIC, "Message": message,
        "Timestamp": timestamp, "SignatureVersion": version.to_string(),
        "Signature": sign(&to_sign, version), "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    })
    .to_string()
}

async fn post(http: &reqwest::Client, base: &str, body: &str) -> (u16, String) {
    let res = http
        .post(format!("{base}/webhooks/ses"))
        .header("content-type", "text/plain; charset=UTF-8")
        .header("x-amz-sns-message-type", "Notification")
        .body(body.to_string())
        .send()
        .await
        .expect("POST /webhooks/ses");
    let status = res.status().as_u16();
    (status, res.text().await.unwrap_or_default())
}

async fn signed_bounces_and_complaints_through_the_server(b: Backend) {
    let mut env = Env::new(b).await;
    env.run(&["release-notes", "v3.12.0"]).await.ok();
    let priya = "priya.raman@austintexas.gov";
    let kevin = "kevin.le@austintexas.gov";
    let mid = outbox_message_id(&env.outbox(), priya);
    env.env("NOTIFY_SNS_TOPIC_ARNS", TOPIC);
    env.env(
        "NOTIFY_SNS_CERTIFICATE_DIR",
        fixtures().to_str().expect("UTF-8 path"),
    );
    let served = env.serve().await;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(notify::net::client_config(None).unwrap())
        .build()
        .unwrap();

    // The mailbox provider reports a forwarding address; the Message-ID ties it to Priya's send.
    let bounce = serde_json::json!({
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General", "feedbackId": "fb-1",
                   "timestamp": Utc::now().to_rfc3339(),
                   "bouncedRecipients": [{"emailAddress": "p.raman@exchange.austintexas.gov",
                       "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 RESOLVER.ADR.RecipientNotFound"}]},
        "mail": {"source": "moped-bounces@austintexas.gov", "commonHeaders": {"messageId": mid}}
    })
    .to_string();
    let msg = notification("5b1a1f6e-0000-4000-8000-000000000001", &bounce, 1);

    // A forged copy (another recipient put in after signing) first: refused, nothing stored.
    let forged = msg.replace("p.raman@exchange", "kevin.le@");
    assert_ne!(forged, msg);
    let (status, text) = post(&http, &served.base, &forged).await;
    assert_eq!(status, 403, "{text}");

    // The same message delivered ten times at once: recorded once.
    let posts = (0..10).map(|_| post(&http, &served.base, &msg));
    for (status, text) in futures::future::join_all(posts).await {
        assert_eq!(status, 200, "{text}");
    }

    // A complaint about Kevin's copy (SignatureVersion 2): recorded, flags nobody.
    let complaint = serde_json::json!({
        "notificationType": "Complaint",
        "complaint": {"complaintFeedbackType": "abuse", "timestamp": Utc::now().to_rfc3339(),
                      "complainedRecipients": [{"emailAddress": kevin}]},
        "mail": {"commonHeaders": {"messageId": outbox_message_id(&env.outbox(), kevin)}}
    })
    .to_string();
    let (status, text) = post(
        &http,
        &served.base,
        &notification("5b1a1f6e-0000-4000-8000-000000000002", &complaint, 2),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    drop(served);

    let review = env.run(&["bounces", "report", "--format", "json"]).await;
    review.ok();
    let rows: serde_json::Value = serde_json::from_str(review.stdout.trim()).expect("JSON");
    let flagged: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["email"].as_str())
        .collect();
    assert_eq!(flagged, [priya], "{rows}");

    let store = env.store().await;
    let history = notify::ledger::history(&store, priya).await.unwrap();
    assert_eq!(history.bounces.len(), 1, "stored once");
    let row = &history.bounces[0];
    assert!(row.verified);
    assert_eq!(row.matched_by, notify::store::MatchedBy::MessageId);
    assert_eq!(row.campaign.as_deref(), Some("release-notes/v3.12.0"));
    assert_eq!(row.status.as_deref(), Some("5.1.1"));
    assert!(row.origin.starts_with("sns:"));
    assert!(notify::ledger::history(&store, kevin)
        .await
        .unwrap()
        .bounces
        .is_empty());
    let complaints = store.complaints(None).await.unwrap();
    assert_eq!(complaints.len(), 1);
    assert_eq!(complaints[0].address, kevin);
    assert_eq!(
        complaints[0].matched_by,
        notify::store::MatchedBy::MessageId
    );
    assert_eq!(
        complaints[0].campaign.as_deref(),
        Some("release-notes/v3.12.0")
    );
    store.close().await;
    env.cleanup().await;
}
both!(signed_bounces_and_complaints_through_the_server);
