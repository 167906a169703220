//! `POST /webhooks/ses`: Amazon SES notifications delivered by Amazon SNS over HTTP. SNS posts
//! its JSON as `text/plain`, so the body is read as bytes and parsed by [`crate::intake::sns`].
//!
//! Every message is checked before anything is stored, cheapest check first: it parses and is
//! signed; its `TopicArn` is one of `sns_topic_arns`; its `Timestamp` is within an hour of now;
//! its `SigningCertURL` is `https://sns.<region>.amazonaws.com[.cn]/SimpleNotificationService-<hex>.pem`;
//! the certificate there (fetched once and cached here, or read from `sns_certificate_dir` when
//! that is set, for tests and closed networks) is valid now; and the signature verifies against
//! its key. Anything else is answered 400 (malformed, unsigned) or 403 (foreign topic, stale, bad
//! certificate URL or certificate, forged), logged with the reason, and changes nothing. A
//! certificate that cannot be fetched for a reason on the way (network, AWS answering 5xx) is
//! answered 502, so SNS tries again later.
//!
//! Then: a SubscriptionConfirmation is confirmed by fetching its SubscribeURL (same host rule);
//! an UnsubscribeConfirmation is noted in the log; a Notification's SES event is recorded: a
//! Bounce through [`ledger::record_signed_notification`] (a verified source), a Complaint through
//! [`ledger::record_complaint`] (never a flag), anything else (Delivery, Send...) ignored. Both are
//! stored under the source key `sns:<MessageId>`, so the same message delivered twice (SNS
//! retries) is stored once.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};

use super::AppState;
use crate::config::Config;
use crate::inert;
use crate::intake::sns::{self, MessageType, SesEvent, SnsError, SnsMessage};
use crate::intake::Incoming;
use crate::ledger::{self, ImportSummary};
use crate::policy::Policy;

/// The path SNS posts to.
pub const PATH: &str = "/webhooks/ses";
/// Certificates kept in memory at most (SNS uses one or two at a time).
const CACHED_CERTIFICATES: usize = 32;
/// The largest certificate read (an SNS certificate is about 2 KB).
const CERTIFICATE_LIMIT: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// SNS verification state shared by the handlers: the topics accepted, where certificates come
/// from, the certificates' keys read so far, and the HTTP client that fetches them.
pub struct SesState {
    topics: HashSet<String>,
    certificate_dir: Option<PathBuf>,
    client: reqwest::Client,
    /// RSA keys of certificates read so far, by certificate URL.
    keys: RwLock<HashMap<String, Arc<[u8]>>>,
}

impl SesState {
    /// The state for `cfg`: its `sns_topic_arns` and `sns_certificate_dir`.
    pub fn new(cfg: &Config) -> anyhow::Result<SesState> {
        let tls = crate::net::client_config(None).map_err(anyhow::Error::msg)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            // The URL checked is the URL fetched: a redirect could lead anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("notify/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client for SNS: {e}"))?;
        Ok(SesState::with_client(cfg, client))
    }

    /// The state for `cfg` fetching through `client` (the tests' client reaches a local
    /// stand-in for the SNS endpoint; every check is the same).
    fn with_client(cfg: &Config, client: reqwest::Client) -> SesState {
        SesState {
            topics: cfg.sns_topic_arns.iter().cloned().collect(),
            certificate_dir: cfg.sns_certificate_dir.clone(),
            client,
            keys: RwLock::new(HashMap::new()),
        }
    }

    /// The RSA key of the certificate at `url` (already checked by [`sns::check_cert_url`];
    /// `name` is its file name): from the cache, else read or fetched, checked and cached.
    async fn key(
        &self,
        url: &url::Url,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Arc<[u8]>, Refusal> {
        if let Some(key) = self
            .keys
            .read()
            .ok()
            .and_then(|k| k.get(url.as_str()).cloned())
        {
            return Ok(key);
        }
        let pem = match &self.certificate_dir {
            Some(dir) => match tokio::fs::read(dir.join(name)).await {
                Ok(pem) => pem,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Refusal::forbidden(format!(
                        "no certificate {name} in sns_certificate_dir"
                    )))
                }
                Err(e) => {
                    return Err(Refusal::internal(format!(
                        "cannot read {name} from sns_certificate_dir: {e}"
                    )))
                }
            },
            None => self.fetch_certificate(url).await?,
        };
        let key: Arc<[u8]> = sns::certificate_key(&pem, now)
            .map_err(Refusal::from)?
            .into();
        if let Ok(mut keys) = self.keys.write() {
            if keys.len() >= CACHED_CERTIFICATES {
                keys.clear();
            }
            keys.insert(url.to_string(), key.clone());
        }
        Ok(key)
    }

    async fn fetch_certificate(&self, url: &url::Url) -> Result<Vec<u8>, Refusal> {
        let shown = inert::line(url.as_str()).into_owned();
        let mut res = self.client.get(url.as_str()).send().await.map_err(|e| {
            Refusal::bad_gateway(format!("cannot fetch the certificate {shown}: {e}"))
        })?;
        let status = res.status();
        if status.is_server_error() {
            return Err(Refusal::bad_gateway(format!(
                "the certificate {shown} answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(Refusal::forbidden(format!(
                "no certificate at {shown} (answered {status})"
            )));
        }
        let mut pem = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| {
            Refusal::bad_gateway(format!("cannot read the certificate {shown}: {e}"))
        })? {
            pem.extend_from_slice(&chunk);
            if pem.len() > CERTIFICATE_LIMIT {
                return Err(Refusal::forbidden(format!(
                    "the certificate {shown} is larger than {CERTIFICATE_LIMIT} bytes"
                )));
            }
        }
        Ok(pem)
    }

    /// Confirm a subscription by fetching its SubscribeURL (already checked).
    async fn confirm(&self, url: &url::Url) -> Result<(), Refusal> {
        let shown = inert::line(url.host_str().unwrap_or_default()).into_owned();
        let res = self.client.get(url.as_str()).send().await.map_err(|e| {
            Refusal::bad_gateway(format!("cannot confirm the subscription at {shown}: {e}"))
        })?;
        if !res.status().is_success() {
            return Err(Refusal::bad_gateway(format!(
                "confirming the subscription at {shown} answered {}",
                res.status()
            )));
        }
        Ok(())
    }
}

/// This part's routes.
pub fn routes() -> Router<AppState> {
    Router::new().route(PATH, post(webhook))
}

/// Why a message was not taken, with the status that says so.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    reason: String,
}

impl Refusal {
    fn forbidden(reason: String) -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
            reason,
        }
    }
    fn bad_request(reason: String) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            reason,
        }
    }
    fn bad_gateway(reason: String) -> Refusal {
        Refusal {
            status: StatusCode::BAD_GATEWAY,
            reason,
        }
    }
    fn internal(reason: String) -> Refusal {
        Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            reason,
        }
    }
}

impl From<SnsError> for Refusal {
    fn from(e: SnsError) -> Refusal {
        let status = match e {
            SnsError::Malformed(_) | SnsError::Unsigned(_) => StatusCode::BAD_REQUEST,
            SnsError::BadCertUrl(_)
            | SnsError::BadSubscribeUrl(_)
            | SnsError::BadCertificate(_)
            | SnsError::Forged
            | SnsError::Stale { .. } => StatusCode::FORBIDDEN,
        };
        Refusal {
            status,
            reason: e.to_string(),
        }
    }
}

async fn webhook(State(state): State<AppState>, body: Bytes) -> (StatusCode, String) {
    match take(&state, &body, Utc::now()).await {
        Ok(said) => {
            tracing::info!(outcome = %inert::line(&said), "SNS message taken");
            (StatusCode::OK, format!("{said}\n"))
        }
        Err(r) => {
            let reason = inert::line(&r.reason);
            if r.status.is_server_error() {
                tracing::error!(status = r.status.as_u16(), %reason, "SNS message not taken");
            } else {
                tracing::warn!(status = r.status.as_u16(), %reason, "SNS message refused");
            }
            (r.status, format!("refused: {reason}\n"))
        }
    }
}

/// Check one posted message and act on it; what was done, or why not.
async fn take(state: &AppState, body: &[u8], now: DateTime<Utc>) -> Result<String, Refusal> {
    let m = sns::parse(body)?;
    if !state.ses.topics.contains(&m.topic_arn) {
        return Err(Refusal::forbidden(format!(
            "topic {} is not one of sns_topic_arns",
            inert::line(&m.topic_arn)
        )));
    }
    sns::check_fresh(&m, now)?;
    let (cert_url, name) = sns::check_cert_url(&m.signing_cert_url)?;
    let key = state.ses.key(&cert_url, &name, now).await?;
    sns::verify(&m, &key)?;
    let id = inert::line(&m.message_id).into_owned();
    match m.kind {
        MessageType::SubscriptionConfirmation => {
            let url =
                sns::check_subscribe_url(m.subscribe_url.as_deref().unwrap_or(""), &m.topic_arn)?;
            state.ses.confirm(&url).await?;
            Ok(format!(
                "subscription to {} confirmed",
                inert::line(&m.topic_arn)
            ))
        }
        MessageType::UnsubscribeConfirmation => Ok(format!(
            "unsubscribe confirmation {id} for {} noted; nothing done",
            inert::line(&m.topic_arn)
        )),
        MessageType::Notification => notification(state, &m, body).await,
    }
}

/// Record the SES event of a verified Notification.
async fn notification(state: &AppState, m: &SnsMessage, body: &[u8]) -> Result<String, Refusal> {
    let id = inert::line(&m.message_id).into_owned();
    let key = format!("sns:{}", m.message_id);
    let event = sns::ses_event(&m.message).map_err(Refusal::bad_request)?;
    let internal = |e: anyhow::Error| Refusal::internal(format!("recording {id}: {e:#}"));
    match event {
        SesEvent::Bounce(found) => {
            if found.bounces.is_empty() {
                return Ok(format!("bounce {id} names no recipient; nothing recorded"));
            }
            let item = Incoming {
                origin: key.clone(),
                source_key: key,
                raw: body.to_vec(),
                found: Ok(found),
            };
            let mut summary = ImportSummary::default();
            ledger::record_signed_notification(
                &state.store,
                &Policy::of(&state.cfg),
                &item,
                &mut summary,
            )
            .await
            .map_err(internal)?;
            if summary.already_imported > 0 {
                return Ok(format!(
                    "bounce {id} recorded before; nothing recorded again"
                ));
            }
            let mut said = format!(
                "bounce {id}: {} recipient(s) recorded ({} hard, {} soft, {} unmatched)",
                summary.bounces, summary.hard, summary.soft, summary.unmatched
            );
            if !summary.flagged.is_empty() {
                said.push_str(&format!(
                    "; flagged for review: {}",
                    inert::line(&summary.flagged.join(", "))
                ));
            }
            Ok(said)
        }
        SesEvent::Complaint(c) => {
            let done = ledger::record_complaint(&state.store, &key, &key, body, &c)
                .await
                .map_err(internal)?;
            if done.already_recorded {
                return Ok(format!(
                    "complaint {id} recorded before; nothing recorded again"
                ));
            }
            Ok(format!(
                "complaint {id}: {} recipient(s) recorded ({} matched); nobody flagged",
                done.recorded, done.matched
            ))
        }
        SesEvent::Other(kind) => Ok(format!("{} event {id} ignored", inert::line(&kind))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::sns::SignatureVersion;
    use axum::body::Body;
    use axum::http::Request;
    use base64::Engine;
    use tower::ServiceExt;

    const KEY: &str = include_str!("../../tests/fixtures/sns/test-signing-key.pem");
    const CERT_URL: &str =
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem";
    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:notify-ses";

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sns")
    }

    fn sign(text: &str, version: SignatureVersion) -> String {
        use rsa::pkcs8::DecodePrivateKey;
        use sha2::Digest;
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(KEY).unwrap();
        let sig = match version {
            SignatureVersion::Sha1 => key.sign(
                rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
                &sha1::Sha1::digest(text.as_bytes()),
            ),
            SignatureVersion::Sha256 => key.sign(
                rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                &sha2::Sha256::digest(text.as_bytes()),
            ),
        };
        base64::engine::general_purpose::STANDARD.encode(sig.unwrap())
    }

    /// A signed SNS notification carrying `message`, sent at `sent`.
    fn signed(
        id: &str,
        topic: &str,
        message: &str,
        sent: DateTime<Utc>,
        version: SignatureVersion,
    ) -> serde_json::Value {
        let timestamp = sent.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let m = SnsMessage {
            kind: MessageType::Notification,
            message_id: id.into(),
            topic_arn: topic.into(),
            subject: None,
            message: message.into(),
            timestamp: timestamp.clone(),
            signature_version: version,
            signature: Vec::new(),
            signing_cert_url: CERT_URL.into(),
            subscribe_url: None,
            token: None,
        };
        serde_json::json!({
            "Type": "Notification", "MessageId": id, "TopicArn": topic, "Message": message,
            "Timestamp": timestamp,
            "SignatureVersion": if version == SignatureVersion::Sha1 { "1" } else { "2" },
            "Signature": sign(&sns::string_to_sign(&m), version),
            "SigningCertURL": CERT_URL,
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
        })
    }

    fn bounce(recipients: &[&str], message_id: &str, kind: &str) -> String {
        let rcpts: Vec<serde_json::Value> = recipients
            .iter()
            .map(|a| {
                serde_json::json!({"emailAddress": a, "action": "failed", "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown"})
            })
            .collect();
        serde_json::json!({
            "notificationType": "Bounce",
            "bounce": {"bounceType": kind, "bounceSubType": "General", "bouncedRecipients": rcpts,
                       "timestamp": Utc::now().to_rfc3339(), "feedbackId": "fb-1"},
            "mail": {"source": "moped-bounces@austintexas.gov",
                     "commonHeaders": {"messageId": message_id}}
        })
        .to_string()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        state: AppState,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::load(
            &dir.path().join("absent.toml"),
            false,
            &Default::default(),
            &Default::default(),
        )
        .unwrap();
        cfg.sns_topic_arns = vec![TOPIC.to_string()];
        cfg.sns_certificate_dir = Some(fixtures());
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("notify.db").display()
        );
        let store = crate::store::Store::open(&url).await.unwrap();
        let csv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contacts/moped_users.csv");
        crate::sync::SyncRequest {
            path: &csv,
            digest: None,
            dry_run: false,
            allow_removals: false,
            max_percent: 100,
            keep_contacts: false,
            settings: Vec::new(),
        }
        .run(&store)
        .await
        .unwrap();
        let state = AppState::new(cfg, store, None).unwrap();
        Fixture { _dir: dir, state }
    }

    async fn post(state: &AppState, body: &serde_json::Value) -> (StatusCode, String) {
        let req = Request::post(PATH)
            .header("content-type", "text/plain; charset=UTF-8")
            .header("x-amz-sns-message-type", "Notification")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        let res = crate::serve::router(state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn counts(state: &AppState) -> (usize, usize, usize) {
        let store = &state.store;
        let mut bounces = 0;
        for c in store.contacts(true).await.unwrap() {
            bounces += store
                .bounce_history(Some(c.id), &c.contact.email)
                .await
                .unwrap()
                .len();
        }
        bounces += store.unmatched_count().await.unwrap() as usize;
        let complaints = store.complaints(None).await.unwrap().len();
        let flagged = store.flagged_contacts().await.unwrap().len();
        (bounces, complaints, flagged)
    }

    const MARIA: &str = "maria.gonzalez@austintexas.gov";

    #[tokio::test]
    async fn a_signed_bounce_is_recorded_once_as_verified_for_both_versions() {
        let f = fixture().await;
        for (n, version) in [SignatureVersion::Sha1, SignatureVersion::Sha256]
            .into_iter()
            .enumerate()
        {
            let id = format!("msg-{n}");
            let msg = signed(
                &id,
                TOPIC,
                &bounce(&[MARIA], "<x@nowhere>", "Permanent"),
                Utc::now(),
                version,
            );
            let (status, text) = post(&f.state, &msg).await;
            assert_eq!(status, StatusCode::OK, "{text}");
            assert!(text.contains("1 recipient(s) recorded (1 hard"), "{text}");
            let (status, text) = post(&f.state, &msg).await;
            assert_eq!(status, StatusCode::OK, "{text}");
            assert!(text.contains("recorded before"), "{text}");
        }
        let history = ledger::history(&f.state.store, MARIA).await.unwrap();
        assert_eq!(
            history.bounces.len(),
            2,
            "one per message, however often posted"
        );
        for b in &history.bounces {
            assert!(b.verified, "a signed notification is a verified source");
            assert_eq!(
                (b.kind, b.reason, b.permanent),
                (
                    crate::bounce::BounceKind::Hard,
                    crate::bounce::Reason::UserUnknown,
                    true
                )
            );
            assert_eq!(b.status.as_deref(), Some("5.1.1"));
            assert!(b.diagnostic.as_deref().unwrap().contains("user unknown"));
            assert!(b.origin.starts_with("sns:msg-"));
        }
        let flagged = f.state.store.flagged_contacts().await.unwrap();
        assert_eq!(flagged.len(), 1);
        assert_eq!(flagged[0].contact.email, MARIA);
    }

    #[tokio::test]
    async fn a_permanent_refusal_of_the_content_is_soft_and_flags_nobody() {
        let f = fixture().await;
        let body = serde_json::json!({
            "notificationType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bounceSubType": "ContentRejected",
                "bouncedRecipients": [{"emailAddress": MARIA, "action": "failed", "status": "5.7.1",
                    "diagnosticCode": "smtp; 550 5.7.1 Message rejected by the recipient's policy"}],
                "timestamp": Utc::now().to_rfc3339(), "feedbackId": "fb-content"},
            "mail": {"source": "moped-bounces@austintexas.gov",
                     "commonHeaders": {"messageId": "<y@nowhere>"}}
        })
        .to_string();
        let msg = signed(
            "m-content",
            TOPIC,
            &body,
            Utc::now(),
            SignatureVersion::Sha256,
        );
        let (status, text) = post(&f.state, &msg).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains("(0 hard, 1 soft"), "{text}");
        let history = ledger::history(&f.state.store, MARIA).await.unwrap();
        let b = &history.bounces[0];
        assert_eq!(b.kind, crate::bounce::BounceKind::Soft);
        assert!(b.permanent, "SES said Permanent");
        assert_eq!(
            b.reason.action(),
            crate::bounce::Action::AskIt,
            "{:?}",
            b.reason
        );
        assert!(
            f.state.store.flagged_contacts().await.unwrap().is_empty(),
            "a soft bounce does not flag at once"
        );
    }

    #[tokio::test]
    async fn a_bounce_is_tied_to_its_send_by_message_id() {
        let f = fixture().await;
        let store = &f.state.store;
        let campaign = store
            .campaign("release-notes/v9.9.9", "release-notes", "s")
            .await
            .unwrap();
        store
            .add_recipients(&campaign, crate::contacts::Audience::All)
            .await
            .unwrap();
        let claims = store
            .claim_batch(
                &campaign,
                crate::contacts::Audience::All,
                "w",
                Utc::now() + chrono::Duration::minutes(5),
                false,
                Utc::now(),
                "notify.test",
                500,
            )
            .await
            .unwrap();
        let claim = claims
            .iter()
            .find(|c| c.contact.contact.email != MARIA)
            .unwrap();
        // The bounce names another address: the Message-ID wins.
        let msg = signed(
            "m-mid",
            TOPIC,
            &bounce(
                &["someone.else@example.org"],
                &claim.message_id,
                "Transient",
            ),
            Utc::now(),
            SignatureVersion::Sha256,
        );
        let (status, text) = post(&f.state, &msg).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let rows = store.counted_bounces(claim.contact.id).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].matched_by, crate::store::MatchedBy::MessageId);
        assert_eq!(rows[0].campaign.as_deref(), Some("release-notes/v9.9.9"));
        assert_eq!(rows[0].kind, crate::bounce::BounceKind::Soft);
    }

    #[tokio::test]
    async fn unsigned_forged_foreign_stale_and_bad_certificate_urls_are_refused_and_store_nothing()
    {
        let f = fixture().await;
        let good = signed(
            "m-1",
            TOPIC,
            &bounce(&[MARIA], "<x@nowhere>", "Permanent"),
            Utc::now(),
            SignatureVersion::Sha256,
        );
        let mut cases: Vec<(&str, serde_json::Value, StatusCode)> = Vec::new();
        let mut unsigned = good.clone();
        unsigned.as_object_mut().unwrap().remove("Signature");
        cases.push(("unsigned", unsigned, StatusCode::BAD_REQUEST));
        let mut forged = good.clone();
        forged["Message"] = bounce(
            &["james.obrien@austintexas.gov"],
            "<x@nowhere>",
            "Permanent",
        )
        .into();
        cases.push(("forged message", forged, StatusCode::FORBIDDEN));
        let mut forged = good.clone();
        let sig = good["Signature"].as_str().unwrap();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        forged["Signature"] = format!("{flipped}{}", &sig[1..]).into();
        cases.push(("forged signature", forged, StatusCode::FORBIDDEN));
        let foreign = signed(
            "m-2",
            "arn:aws:sns:us-east-1:999999999999:other",
            &bounce(&[MARIA], "<x@nowhere>", "Permanent"),
            Utc::now(),
            SignatureVersion::Sha256,
        );
        cases.push(("foreign topic", foreign, StatusCode::FORBIDDEN));
        let mut renamed = good.clone();
        renamed["TopicArn"] = "arn:aws:sns:us-east-1:999999999999:other".into();
        cases.push((
            "topic changed after signing",
            renamed,
            StatusCode::FORBIDDEN,
        ));
        let stale = signed(
            "m-3",
            TOPIC,
            &bounce(&[MARIA], "<x@nowhere>", "Permanent"),
            Utc::now() - chrono::Duration::minutes(61),
            SignatureVersion::Sha1,
        );
        cases.push(("stale", stale, StatusCode::FORBIDDEN));
        for url in [
            "https://s3.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-0123456789abcdef.pem",
            "https://sns.us-east-1.amazonaws.com/../SimpleNotificationService-0123456789abcdef.pem",
        ] {
            let mut bad = good.clone();
            bad["SigningCertURL"] = url.into();
            cases.push(("bad certificate URL", bad, StatusCode::FORBIDDEN));
        }
        let mut unknown = good.clone();
        unknown["SigningCertURL"] =
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-fff.pem".into();
        cases.push(("unknown certificate", unknown, StatusCode::FORBIDDEN));
        cases.push((
            "not JSON",
            serde_json::json!("Type=Notification"),
            StatusCode::BAD_REQUEST,
        ));
        for (what, body, want) in cases {
            let (status, text) = post(&f.state, &body).await;
            assert_eq!(status, want, "{what}: {text}");
            assert!(text.starts_with("refused: "), "{what}: {text}");
        }
        assert_eq!(counts(&f.state).await, (0, 0, 0), "nothing stored");
        // The good one still goes through afterwards.
        assert_eq!(post(&f.state, &good).await.0, StatusCode::OK);
        assert_eq!(counts(&f.state).await, (1, 0, 1));
    }

    #[tokio::test]
    async fn complaints_are_recorded_and_flag_nobody_deliveries_are_ignored() {
        let f = fixture().await;
        let complaint = serde_json::json!({
            "notificationType": "Complaint",
            "complaint": {"complaintFeedbackType": "abuse", "timestamp": Utc::now().to_rfc3339(),
                          "complainedRecipients": [{"emailAddress": MARIA}]},
            "mail": {"commonHeaders": {"messageId": "<x@nowhere>"}}
        })
        .to_string();
        let msg = signed(
            "c-1",
            TOPIC,
            &complaint,
            Utc::now(),
            SignatureVersion::Sha256,
        );
        let (status, text) = post(&f.state, &msg).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains("nobody flagged"), "{text}");
        assert_eq!(post(&f.state, &msg).await.0, StatusCode::OK);
        let complaints = f.state.store.complaints(None).await.unwrap();
        assert_eq!(complaints.len(), 1, "{complaints:?}");
        assert_eq!(complaints[0].address, MARIA);
        assert_eq!(complaints[0].feedback_type.as_deref(), Some("abuse"));
        assert!(complaints[0].contact_id.is_some());
        assert_eq!(complaints[0].matched_by, crate::store::MatchedBy::Address);

        let delivery = serde_json::json!({"notificationType": "Delivery", "mail": {}, "delivery": {"recipients": [MARIA]}}).to_string();
        let msg = signed("d-1", TOPIC, &delivery, Utc::now(), SignatureVersion::Sha1);
        let (status, text) = post(&f.state, &msg).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains("Delivery event d-1 ignored"), "{text}");
        assert_eq!(
            counts(&f.state).await,
            (0, 1, 0),
            "one complaint, no bounce, nobody flagged"
        );
    }

    /// A local stand-in for `https://sns.us-east-1.amazonaws.com`: serves the test certificate and
    /// answers 200 to anything else; every request line is kept.
    async fn sns_endpoint() -> (reqwest::Client, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let host = "sns.us-east-1.amazonaws.com";
        let tls = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(tls.cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(tls.key_pair.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let pem = std::fs::read(fixtures().join("SimpleNotificationService-0123456789abcdef.pem"))
            .unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, log, pem) = (acceptor.clone(), log.clone(), pem.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&req)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let body = if line.contains(".pem ") {
                        pem
                    } else {
                        b"<ConfirmSubscriptionResponse/>".to_vec()
                    };
                    log.lock().unwrap().push(line);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(
                crate::net::client_config(Some(tls.cert.pem().as_bytes())).unwrap(),
            )
            .resolve(host, addr)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        (client, seen)
    }

    #[tokio::test]
    async fn certificates_are_fetched_once_and_subscriptions_confirmed() {
        let mut f = fixture().await;
        let (client, seen) = sns_endpoint().await;
        let mut cfg = (*f.state.cfg).clone();
        cfg.sns_certificate_dir = None;
        f.state.ses = Arc::new(SesState::with_client(&cfg, client));
        for n in 0..3 {
            let delivery = serde_json::json!({"eventType": "Delivery", "mail": {}}).to_string();
            let msg = signed(
                &format!("d-{n}"),
                TOPIC,
                &delivery,
                Utc::now(),
                SignatureVersion::Sha256,
            );
            let (status, text) = post(&f.state, &msg).await;
            assert_eq!(status, StatusCode::OK, "{text}");
        }
        assert_eq!(
            *seen.lock().unwrap(),
            ["GET /SimpleNotificationService-0123456789abcdef.pem HTTP/1.1"],
            "fetched once, then cached"
        );
        let subscribe = format!("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=tok-1");
        let body = confirmation(MessageType::SubscriptionConfirmation, &subscribe);
        let (status, text) = post(&f.state, &body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains("confirmed"), "{text}");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(
            seen[1],
            format!("GET /?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=tok-1 HTTP/1.1")
        );
        assert_eq!(counts(&f.state).await, (0, 0, 0));
    }

    /// A signed confirmation of `kind` for `TOPIC` with this SubscribeURL.
    fn confirmation(kind: MessageType, subscribe: &str) -> serde_json::Value {
        let timestamp = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let m = SnsMessage {
            kind,
            message_id: "s-1".into(),
            topic_arn: TOPIC.into(),
            subject: None,
            message: "You have chosen to subscribe".into(),
            timestamp: timestamp.clone(),
            signature_version: SignatureVersion::Sha256,
            signature: Vec::new(),
            signing_cert_url: CERT_URL.into(),
            subscribe_url: Some(subscribe.into()),
            token: Some("tok".into()),
        };
        let name = match kind {
            MessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
            MessageType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
            MessageType::Notification => "Notification",
        };
        serde_json::json!({
            "Type": name, "MessageId": "s-1", "Token": "tok", "TopicArn": TOPIC,
            "Message": m.message, "SubscribeURL": subscribe, "Timestamp": timestamp,
            "SignatureVersion": "2", "Signature": sign(&sns::string_to_sign(&m), SignatureVersion::Sha256),
            "SigningCertURL": CERT_URL,
        })
    }

    #[tokio::test]
    async fn confirmations_with_a_foreign_subscribe_url_are_refused() {
        let f = fixture().await;
        for subscribe in [
            format!("https://evil.example/?Action=ConfirmSubscription&TopicArn={TOPIC}"),
            format!("https://s3.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}"),
            format!("http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}"),
            "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:1:other".to_string(),
        ] {
            let body = confirmation(MessageType::SubscriptionConfirmation, &subscribe);
            let (status, text) = post(&f.state, &body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{subscribe}: {text}");
            assert!(text.contains("SubscribeURL"), "{text}");
        }
        // An unsubscribe confirmation is only noted (its URL is never fetched).
        let body = confirmation(
            MessageType::UnsubscribeConfirmation,
            "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
        );
        let (status, text) = post(&f.state, &body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains("noted"), "{text}");
    }
}
