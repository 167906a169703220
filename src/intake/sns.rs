//! Amazon SNS HTTP messages, read and verified without I/O: the JSON document SNS posts (as
//! `text/plain`), the string it signs, the rule a `SigningCertURL` and a `SubscribeURL` must
//! pass, the RSA key of a signing certificate, the signature check (SignatureVersion 1 is
//! SHA1withRSA, 2 is SHA256withRSA) and the age check; and what the SES event carried in a
//! Notification's `Message` is (a bounce, read by [`super::parse_ses`], a complaint, or anything
//! else). Fetching certificates, the topic list and storage are `serve::ses`'s and `ledger`'s.
//!
//! Two mistakes seen elsewhere are avoided on purpose: the string to sign ends with `\n` after
//! its last value too, and a certificate is taken only from `https://sns.<region>.amazonaws.com`
//! (or `.amazonaws.com.cn`), never from `s3.amazonaws.com` or any other host, where anybody can
//! put a certificate of their own.

use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use super::Found;

/// Messages older than this (by their `Timestamp`) are refused, and so are messages dated more
/// than this far ahead (a clock that far off is not to be trusted either).
pub const MAX_AGE: TimeDelta = TimeDelta::hours(1);

/// The kind of an SNS HTTP message (`Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

/// How a message is signed (`SignatureVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVersion {
    /// `1`: SHA1withRSA (PKCS#1 v1.5).
    Sha1,
    /// `2`: SHA256withRSA (PKCS#1 v1.5).
    Sha256,
}

/// An SNS HTTP message as posted; values are the JSON strings, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsMessage {
    pub kind: MessageType,
    pub message_id: String,
    pub topic_arn: String,
    /// Notifications only, when the publisher gave one.
    pub subject: Option<String>,
    pub message: String,
    /// As written (the signed text); see [`check_fresh`] for its meaning.
    pub timestamp: String,
    pub signature_version: SignatureVersion,
    /// Decoded from base64.
    pub signature: Vec<u8>,
    pub signing_cert_url: String,
    /// Subscription and unsubscription confirmations only.
    pub subscribe_url: Option<String>,
    /// Subscription and unsubscription confirmations only.
    pub token: Option<String>,
}

/// Why an SNS message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnsError {
    /// Not JSON, not an SNS message, or a field missing or of the wrong type.
    #[error("not an SNS message: {0}")]
    Malformed(String),
    /// No signature, no certificate URL or an unknown signature version.
    #[error("not signed: {0}")]
    Unsigned(String),
    #[error("the SigningCertURL is refused ({0})")]
    BadCertUrl(String),
    #[error("the SubscribeURL is refused ({0})")]
    BadSubscribeUrl(String),
    #[error("the signing certificate cannot be used: {0}")]
    BadCertificate(String),
    /// The signature does not verify against the certificate's key.
    #[error("the signature does not verify")]
    Forged,
    #[error("the Timestamp {timestamp} is more than an hour from now")]
    Stale { timestamp: String },
}

/// Read an SNS HTTP message. Only the fields SNS signs and the signature's own are read; any
/// other field is ignored (and is not signed, so nothing may rely on it).
pub fn parse(raw: &[u8]) -> Result<SnsMessage, SnsError> {
    let v: Value = serde_json::from_slice(raw)
        .map_err(|e| SnsError::Malformed(format!("not valid JSON ({e})")))?;
    let Value::Object(fields) = &v else {
        return Err(SnsError::Malformed("not a JSON object".into()));
    };
    // A field that is absent or null is absent; any value but a string is malformed.
    let field = |name: &str| -> Result<Option<String>, SnsError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(SnsError::Malformed(format!("`{name}` is not a string"))),
        }
    };
    let required = |name: &str| -> Result<String, SnsError> {
        field(name)?.ok_or_else(|| SnsError::Malformed(format!("no `{name}`")))
    };
    let kind = match required("Type")?.as_str() {
        "Notification" => MessageType::Notification,
        "SubscriptionConfirmation" => MessageType::SubscriptionConfirmation,
        "UnsubscribeConfirmation" => MessageType::UnsubscribeConfirmation,
        other => {
            return Err(SnsError::Malformed(format!(
                "unknown Type `{}`",
                crate::inert::line(other)
            )))
        }
    };
    let signature_version = match field("SignatureVersion")?.as_deref() {
        Some("1") => SignatureVersion::Sha1,
        Some("2") => SignatureVersion::Sha256,
        Some(other) => {
            return Err(SnsError::Unsigned(format!(
                "unknown SignatureVersion `{}`",
                crate::inert::line(other)
            )))
        }
        None => return Err(SnsError::Unsigned("no SignatureVersion".into())),
    };
    let signature = field("Signature")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SnsError::Unsigned("no Signature".into()))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|e| SnsError::Unsigned(format!("the Signature is not base64 ({e})")))?;
    let signing_cert_url = field("SigningCertURL")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SnsError::Unsigned("no SigningCertURL".into()))?;
    let confirmation = kind != MessageType::Notification;
    Ok(SnsMessage {
        kind,
        message_id: required("MessageId")?,
        topic_arn: required("TopicArn")?,
        subject: if confirmation {
            None
        } else {
            field("Subject")?
        },
        message: required("Message")?,
        timestamp: required("Timestamp")?,
        signature_version,
        signature,
        signing_cert_url,
        subscribe_url: if confirmation {
            Some(required("SubscribeURL")?)
        } else {
            None
        },
        token: if confirmation {
            Some(required("Token")?)
        } else {
            None
        },
    })
}

/// The text SNS signs: `Name\nValue\n` for each signed field, in byte order of the names
/// (Notification: Message, MessageId, Subject when present, Timestamp, TopicArn, Type;
/// confirmations: Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type).
pub fn string_to_sign(m: &SnsMessage) -> String {
    let kind = match m.kind {
        MessageType::Notification => "Notification",
        MessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
        MessageType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
    };
    let mut fields: Vec<(&str, &str)> = vec![("Message", &m.message), ("MessageId", &m.message_id)];
    match m.kind {
        MessageType::Notification => {
            if let Some(subject) = &m.subject {
                fields.push(("Subject", subject));
            }
            fields.push(("Timestamp", &m.timestamp));
        }
        _ => {
            fields.push(("SubscribeURL", m.subscribe_url.as_deref().unwrap_or("")));
            fields.push(("Timestamp", &m.timestamp));
            fields.push(("Token", m.token.as_deref().unwrap_or("")));
        }
    }
    fields.push(("TopicArn", &m.topic_arn));
    fields.push(("Type", kind));
    let mut out = String::new();
    for (name, value) in fields {
        out.push_str(name);
        out.push('\n');
        out.push_str(value);
        out.push('\n');
    }
    out
}

/// The region of an SNS endpoint host (`sns.<region>.amazonaws.com` or
/// `sns.<region>.amazonaws.com.cn`), or why the host is not one.
fn sns_region(host: &str) -> Result<&str, String> {
    let rest = host
        .strip_prefix("sns.")
        .ok_or_else(|| format!("host `{}` is not sns.<region>.amazonaws.com", inert(host)))?;
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))
        .ok_or_else(|| format!("host `{}` is not sns.<region>.amazonaws.com", inert(host)))?;
    let well_formed = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-');
    if !well_formed {
        return Err(format!("`{}` is not an AWS region", inert(region)));
    }
    Ok(region)
}

fn inert(s: &str) -> String {
    crate::inert::line(s).into_owned()
}

/// The parts of the host rule both URLs share: `https`, no user, no port but 443, an SNS
/// endpoint host, no fragment.
fn sns_endpoint(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!("scheme `{}` is not https", inert(url.scheme())));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a user name or password in the URL".into());
    }
    if url.port().is_some() {
        return Err("a port other than 443".into());
    }
    if url.fragment().is_some() {
        return Err("a fragment in the URL".into());
    }
    match url.host() {
        Some(url::Host::Domain(host)) => {
            sns_region(host)?;
        }
        _ => return Err("the host is not a domain name".into()),
    }
    Ok(url)
}

/// Check a `SigningCertURL`: exactly `https://sns.<region>.amazonaws.com[.cn]/SimpleNotificationService-<hex>.pem`,
/// written in canonical form (no query, port, user, dot segments or escapes that would read
/// as something else). Returns the URL and the certificate's file name.
pub fn check_cert_url(text: &str) -> Result<(url::Url, String), SnsError> {
    let url = sns_endpoint(text).map_err(SnsError::BadCertUrl)?;
    if url.as_str() != text {
        return Err(SnsError::BadCertUrl(
            "not written in canonical form (escapes, dot segments, case or default port)".into(),
        ));
    }
    if url.query().is_some() {
        return Err(SnsError::BadCertUrl("a query in the URL".into()));
    }
    let name = url.path().strip_prefix('/').unwrap_or_default().to_string();
    if !is_cert_file_name(&name) {
        return Err(SnsError::BadCertUrl(format!(
            "path `{}` is not /SimpleNotificationService-<hex>.pem",
            inert(url.path())
        )));
    }
    Ok((url, name))
}

/// `SimpleNotificationService-<hex>.pem`: the only file names a certificate URL may have (and so
/// the only names ever read from `sns_certificate_dir`).
pub fn is_cert_file_name(name: &str) -> bool {
    name.strip_prefix("SimpleNotificationService-")
        .and_then(|rest| rest.strip_suffix(".pem"))
        .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Check a `SubscribeURL` before it is fetched: the same host rule as certificates, the path
/// `/`, `Action=ConfirmSubscription` and the message's own `TopicArn` in its query.
pub fn check_subscribe_url(text: &str, topic_arn: &str) -> Result<url::Url, SnsError> {
    let url = sns_endpoint(text).map_err(SnsError::BadSubscribeUrl)?;
    if url.path() != "/" {
        return Err(SnsError::BadSubscribeUrl(format!(
            "path `{}` is not /",
            inert(url.path())
        )));
    }
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let one = |key: &str| {
        let mut values = query.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
        match (values.next(), values.next()) {
            (Some(v), None) => Some(v.as_str()),
            _ => None,
        }
    };
    if one("Action") != Some("ConfirmSubscription") {
        return Err(SnsError::BadSubscribeUrl(
            "not one Action=ConfirmSubscription".into(),
        ));
    }
    if one("TopicArn") != Some(topic_arn) {
        return Err(SnsError::BadSubscribeUrl(
            "its TopicArn is not the message's".into(),
        ));
    }
    Ok(url)
}

/// The RSA public key (PKCS#1 `RSAPublicKey`, DER) of a PEM signing certificate valid at `now`.
pub fn certificate_key(pem: &[u8], now: DateTime<Utc>) -> Result<Vec<u8>, SnsError> {
    let bad = |why: String| SnsError::BadCertificate(why);
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| bad(format!("not a PEM certificate ({e})")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| bad(format!("not an X.509 certificate ({e})")))?;
    let at = x509_parser::time::ASN1Time::from_timestamp(now.timestamp())
        .map_err(|e| bad(format!("no time to check it at ({e})")))?;
    if !cert.validity().is_valid_at(at) {
        return Err(bad("expired or not yet valid".into()));
    }
    let spki = cert.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err(bad("its key is not RSA".into()));
    }
    Ok(spki.subject_public_key.data.to_vec())
}

/// Check the signature of `m` with `rsa_key` (from [`certificate_key`]); RSA keys of 2048 to
/// 8192 bits only.
pub fn verify(m: &SnsMessage, rsa_key: &[u8]) -> Result<(), SnsError> {
    use ring::signature;
    let alg: &'static dyn signature::VerificationAlgorithm = match m.signature_version {
        SignatureVersion::Sha1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        SignatureVersion::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
    };
    signature::UnparsedPublicKey::new(alg, rsa_key)
        .verify(string_to_sign(m).as_bytes(), &m.signature)
        .map_err(|_| SnsError::Forged)
}

/// When `m` was sent, if that is within [`MAX_AGE`] of `now` either way.
pub fn check_fresh(m: &SnsMessage, now: DateTime<Utc>) -> Result<DateTime<Utc>, SnsError> {
    let stale = || SnsError::Stale {
        timestamp: inert(&m.timestamp),
    };
    let sent = DateTime::parse_from_rfc3339(&m.timestamp)
        .map_err(|_| SnsError::Malformed("the Timestamp is not an RFC 3339 time".into()))?
        .with_timezone(&Utc);
    let age = now.signed_duration_since(sent);
    if age > MAX_AGE || age < -MAX_AGE {
        return Err(stale());
    }
    Ok(sent)
}

/// What the SES event in a Notification's `Message` is.
#[derive(Debug, Clone)]
pub enum SesEvent {
    /// Every bounced recipient, and what ties them to a send.
    Bounce(Found),
    Complaint(Complaint),
    /// Delivery, Send, Reject, Open and the like: nothing to record. The event type is given.
    Other(String),
}

/// An SES complaint: recipients who reported a notice as spam (or the like). Recorded for the
/// review; never a bounce, never a reason to flag an account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Complaint {
    /// Lower-cased addresses.
    pub recipients: Vec<String>,
    /// `complaintFeedbackType` (`abuse`, `not-spam`, ...), when the mailbox provider gave one.
    pub feedback_type: Option<String>,
    /// Message-ID of the original (without angle brackets).
    pub original_message_id: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Read the SES event of a Notification's `Message`.
pub fn ses_event(message: &str) -> Result<SesEvent, String> {
    let v: Value =
        serde_json::from_str(message).map_err(|e| format!("the Message is not SES JSON ({e})"))?;
    let kind = v
        .get("notificationType")
        .or_else(|| v.get("eventType"))
        .and_then(Value::as_str)
        .ok_or("the Message is not an SES notification (no notificationType or eventType)")?;
    match kind {
        "Bounce" => super::parse_ses(&v).map(|(_, found)| SesEvent::Bounce(found)),
        "Complaint" => complaint(&v).map(SesEvent::Complaint),
        other => Ok(SesEvent::Other(other.to_string())),
    }
}

fn complaint(v: &Value) -> Result<Complaint, String> {
    let c = v
        .get("complaint")
        .ok_or("an SES Complaint without a `complaint` object")?;
    let recipients = c
        .get("complainedRecipients")
        .and_then(Value::as_array)
        .ok_or("an SES Complaint without complainedRecipients")?
        .iter()
        .filter_map(|r| r.get("emailAddress").and_then(Value::as_str))
        .map(|a| crate::bounce::address_in(a).unwrap_or_else(|| a.trim().to_lowercase()))
        .collect();
    Ok(Complaint {
        recipients,
        feedback_type: c
            .get("complaintFeedbackType")
            .and_then(Value::as_str)
            .map(str::to_string),
        original_message_id: v.get("mail").and_then(original_message_id),
        occurred_at: c
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
    })
}

/// The original's Message-ID from an SES `mail` object: `commonHeaders.messageId`, else the
/// `Message-ID` header; without angle brackets.
fn original_message_id(mail: &Value) -> Option<String> {
    let bare = |s: &str| s.trim().trim_matches(['<', '>']).to_string();
    if let Some(id) = mail
        .pointer("/commonHeaders/messageId")
        .and_then(Value::as_str)
    {
        return Some(bare(id));
    }
    mail.get("headers")?
        .as_array()?
        .iter()
        .find(|h| {
            h.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case("Message-ID"))
        })?
        .get("value")
        .and_then(Value::as_str)
        .map(bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &[u8] =
        include_bytes!("../../tests/fixtures/sns/SimpleNotificationService-0123456789abcdef.pem");
    const KEY: &str = include_str!("../../tests/fixtures/sns/test-signing-key.pem");
    const CERT_URL: &str =
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem";

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

    fn notification(version: SignatureVersion, subject: Option<&str>) -> serde_json::Value {
        let mut m = SnsMessage {
            kind: MessageType::Notification,
            message_id: "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324".into(),
            topic_arn: "arn:aws:sns:us-east-1:123456789012:ses-bounces".into(),
            subject: subject.map(str::to_string),
            message: "{\"notificationType\":\"Delivery\"}".into(),
            timestamp: "2026-12-03T23:10:00.000Z".into(),
            signature_version: version,
            signature: Vec::new(),
            signing_cert_url: CERT_URL.into(),
            subscribe_url: None,
            token: None,
        };
        let signature = sign(&string_to_sign(&m), version);
        m.signature = Vec::new();
        let mut v = serde_json::json!({
            "Type": "Notification", "MessageId": m.message_id, "TopicArn": m.topic_arn,
            "Message": m.message, "Timestamp": m.timestamp,
            "SignatureVersion": if version == SignatureVersion::Sha1 { "1" } else { "2" },
            "Signature": signature, "SigningCertURL": CERT_URL,
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        });
        if let Some(s) = subject {
            v["Subject"] = s.into();
        }
        v
    }

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_string_to_sign_of_each_type() {
        let raw = serde_json::to_vec(&notification(SignatureVersion::Sha1, None)).unwrap();
        let m = parse(&raw).unwrap();
        assert_eq!(
            string_to_sign(&m),
            "Message\n{\"notificationType\":\"Delivery\"}\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n\
             Timestamp\n2026-12-03T23:10:00.000Z\nTopicArn\narn:aws:sns:us-east-1:123456789012:ses-bounces\n\
             Type\nNotification\n"
        );
        let raw = serde_json::to_vec(&notification(SignatureVersion::Sha1, Some("Hi"))).unwrap();
        let text = string_to_sign(&parse(&raw).unwrap());
        assert!(text
            .contains("MessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\nSubject\nHi\nTimestamp\n"));
        let confirm = serde_json::json!({
            "Type": "SubscriptionConfirmation", "MessageId": "m", "Token": "t", "TopicArn": "arn",
            "Message": "You have chosen", "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
            "Timestamp": "2026-12-03T23:10:00Z", "SignatureVersion": "1", "Signature": "AAAA",
            "SigningCertURL": CERT_URL, "Subject": "ignored: not signed in a confirmation",
        });
        let m = parse(&serde_json::to_vec(&confirm).unwrap()).unwrap();
        assert_eq!(
            string_to_sign(&m),
            "Message\nYou have chosen\nMessageId\nm\nSubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription\n\
             Timestamp\n2026-12-03T23:10:00Z\nToken\nt\nTopicArn\narn\nType\nSubscriptionConfirmation\n"
        );
    }

    #[test]
    fn unsigned_and_malformed_messages() {
        let mut v = notification(SignatureVersion::Sha256, None);
        v.as_object_mut().unwrap().remove("Signature");
        assert!(matches!(
            parse(&serde_json::to_vec(&v).unwrap()),
            Err(SnsError::Unsigned(_))
        ));
        let mut v = notification(SignatureVersion::Sha256, None);
        v["SignatureVersion"] = "3".into();
        assert!(matches!(
            parse(&serde_json::to_vec(&v).unwrap()),
            Err(SnsError::Unsigned(_))
        ));
        let mut v = notification(SignatureVersion::Sha256, None);
        v["MessageId"] = 5.into();
        assert!(matches!(
            parse(&serde_json::to_vec(&v).unwrap()),
            Err(SnsError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"Type=Notification"),
            Err(SnsError::Malformed(_))
        ));
        assert!(matches!(parse(b"[1]"), Err(SnsError::Malformed(_))));
    }

    #[test]
    fn certificate_urls_only_on_sns_hosts() {
        let (_, name) = check_cert_url(CERT_URL).unwrap();
        assert_eq!(name, "SimpleNotificationService-0123456789abcdef.pem");
        check_cert_url(
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-9f1e.pem",
        )
        .unwrap();
        for bad in [
            // other hosts: S3 lets anybody publish a certificate
            "https://s3.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-01.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/SimpleNotificationService-01.pem",
            "https://sns.amazonaws.com/SimpleNotificationService-01.pem",
            "https://sns..amazonaws.com/SimpleNotificationService-01.pem",
            "https://sns.us_east.amazonaws.com/SimpleNotificationService-01.pem",
            "https://xsns.us-east-1.amazonaws.com/SimpleNotificationService-01.pem",
            "https://sns.us-east-1.amazonaws.com./SimpleNotificationService-01.pem",
            "https://93.184.216.34/SimpleNotificationService-01.pem",
            // not https, or not plainly written
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-01.pem",
            "ftp://sns.us-east-1.amazonaws.com/SimpleNotificationService-01.pem",
            "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-01.pem",
            "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-01.pem",
            "https://evil.example\\@sns.us-east-1.amazonaws.com/SimpleNotificationService-01.pem",
            "https://SNS.us-east-1.amazonaws.com/SimpleNotificationService-01.pem",
            // path shapes
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-xyz.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-01.pem?x=1",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-01.pem#x",
            "https://sns.us-east-1.amazonaws.com/a/SimpleNotificationService-01.pem",
            "https://sns.us-east-1.amazonaws.com/a/../SimpleNotificationService-01.pem",
            "https://sns.us-east-1.amazonaws.com/%53impleNotificationService-01.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-01.crt",
            "https://sns.us-east-1.amazonaws.com/",
            "not a url",
            "",
        ] {
            assert!(
                matches!(check_cert_url(bad), Err(SnsError::BadCertUrl(_))),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn subscribe_urls_only_to_confirm_on_sns_hosts() {
        let arn = "arn:aws:sns:us-east-1:123456789012:ses-bounces";
        let good = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:123456789012:ses-bounces&Token=2336412f37";
        check_subscribe_url(good, arn).unwrap();
        for bad in [
            good.replace("https://sns.us-east-1", "http://sns.us-east-1"),
            good.replace("sns.us-east-1.amazonaws.com", "s3.amazonaws.com"),
            good.replace("sns.us-east-1.amazonaws.com", "evil.example"),
            good.replace("ConfirmSubscription", "Unsubscribe"),
            good.replace("ses-bounces", "other-topic"),
            good.replace(".com/?", ".com/x?"),
            format!("{good}&Action=Unsubscribe"),
        ] {
            assert!(
                matches!(
                    check_subscribe_url(&bad, arn),
                    Err(SnsError::BadSubscribeUrl(_))
                ),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn signatures_of_both_versions_verify_and_forgeries_do_not() {
        let key = certificate_key(CERT, at("2026-12-03T23:10:00Z")).unwrap();
        for version in [SignatureVersion::Sha1, SignatureVersion::Sha256] {
            let v = notification(version, Some("Amazon SES Email Event Notification"));
            let m = parse(&serde_json::to_vec(&v).unwrap()).unwrap();
            assert_eq!(m.signature_version, version);
            verify(&m, &key).unwrap();
            // any signed field changed
            let mut forged = m.clone();
            forged.message = forged.message.replace("Delivery", "Bounce");
            assert_eq!(verify(&forged, &key), Err(SnsError::Forged));
            let mut forged = m.clone();
            forged.topic_arn.push('x');
            assert_eq!(verify(&forged, &key), Err(SnsError::Forged));
            let mut forged = m.clone();
            forged.subject = None;
            assert_eq!(verify(&forged, &key), Err(SnsError::Forged));
            // the signature of the other version
            let mut other = m.clone();
            other.signature_version = match version {
                SignatureVersion::Sha1 => SignatureVersion::Sha256,
                SignatureVersion::Sha256 => SignatureVersion::Sha1,
            };
            assert_eq!(verify(&other, &key), Err(SnsError::Forged));
            let mut garbage = m.clone();
            garbage.signature = vec![0; 256];
            assert_eq!(verify(&garbage, &key), Err(SnsError::Forged));
        }
    }

    #[test]
    fn certificates_are_read_and_checked() {
        assert!(certificate_key(CERT, at("2026-12-03T23:10:00Z")).is_ok());
        assert!(matches!(
            certificate_key(CERT, at("2200-01-01T00:00:00Z")),
            Err(SnsError::BadCertificate(_))
        ));
        assert!(matches!(
            certificate_key(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                Utc::now()
            ),
            Err(SnsError::BadCertificate(_))
        ));
        assert!(matches!(
            certificate_key(b"hello", Utc::now()),
            Err(SnsError::BadCertificate(_))
        ));
    }

    #[test]
    fn messages_older_or_newer_than_an_hour_are_stale() {
        let raw = serde_json::to_vec(&notification(SignatureVersion::Sha1, None)).unwrap();
        let m = parse(&raw).unwrap();
        assert!(check_fresh(&m, at("2026-12-03T23:40:00Z")).is_ok());
        assert!(check_fresh(&m, at("2026-12-03T22:40:00Z")).is_ok());
        assert!(matches!(
            check_fresh(&m, at("2026-12-04T00:10:01Z")),
            Err(SnsError::Stale { .. })
        ));
        assert!(matches!(
            check_fresh(&m, at("2026-12-03T22:09:59Z")),
            Err(SnsError::Stale { .. })
        ));
        let mut odd = m.clone();
        odd.timestamp = "yesterday".into();
        assert!(matches!(
            check_fresh(&odd, Utc::now()),
            Err(SnsError::Malformed(_))
        ));
    }

    #[test]
    fn ses_events_bounce_complaint_and_the_rest() {
        let bounce = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Transient","bounceSubType":"General",
            "bouncedRecipients":[{"emailAddress":"a@austintexas.gov","status":"4.2.2","diagnosticCode":"smtp; 452 4.2.2 full"}]},
            "mail":{"commonHeaders":{"messageId":"<x@notify>"}}}"#;
        let SesEvent::Bounce(found) = ses_event(bounce).unwrap() else {
            panic!("a bounce")
        };
        assert_eq!(found.bounces.len(), 1);
        assert_eq!(found.original_message_id.as_deref(), Some("x@notify"));
        let complaint = r#"{"notificationType":"Complaint","complaint":{"complaintFeedbackType":"abuse",
            "complainedRecipients":[{"emailAddress":"\"Jane\" <Jane@AustinTexas.gov>"}],"timestamp":"2026-12-03T23:10:00Z"},
            "mail":{"headers":[{"name":"Message-Id","value":"<y@notify>"}]}}"#;
        let SesEvent::Complaint(c) = ses_event(complaint).unwrap() else {
            panic!("a complaint")
        };
        assert_eq!(c.recipients, ["jane@austintexas.gov"]);
        assert_eq!(c.feedback_type.as_deref(), Some("abuse"));
        assert_eq!(c.original_message_id.as_deref(), Some("y@notify"));
        assert!(c.occurred_at.is_some());
        assert!(matches!(
            ses_event(r#"{"eventType":"Delivery","mail":{}}"#),
            Ok(SesEvent::Other(k)) if k == "Delivery"
        ));
        assert!(ses_event("not json").is_err());
        assert!(ses_event(r#"{"notificationType":"Complaint"}"#).is_err());
    }
}
