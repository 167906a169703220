//! Load for `POST /webhooks/ses` (bench/ses.sh runs it): COUNT correctly signed SNS notifications
//! (SignatureVersion 2, the test key in tests/fixtures/sns, which the server trusts through
//! `sns_certificate_dir`), each an SES Permanent bounce of one address read from ADDRESSES (one per
//! line, taken in turn), each with its own MessageId, posted over CONNECTIONS concurrent
//! connections. Everything is signed before the clock starts. Prints one JSON line: requests,
//! statuses, seconds, requests per second, p50/p99/max latency.
//!
//!   cargo run --release --example ses_load -- BASE_URL ADDRESSES COUNT CONNECTIONS [ID_PREFIX]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:notify-ses";
const CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem";

fn sign(key: &rsa::RsaPrivateKey, text: &str) -> String {
    use sha2::Digest;
    let sig = key
        .sign(
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(text.as_bytes()),
        )
        .expect("sign");
    base64::engine::general_purpose::STANDARD.encode(sig)
}

fn notification(key: &rsa::RsaPrivateKey, id: &str, address: &str) -> String {
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let message = serde_json::json!({
        "notificationType": "Bounce",
        "bounce": {
            "feedbackId": format!("feedback-{id}"),
            "bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": address, "action": "failed", "status": "5.1.1",
                                   "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
            "timestamp": timestamp, "reportingMTA": "dns; a8-1.smtp-out.amazonses.com"
        },
        "mail": {"source": "moped-bounces@austintexas.gov", "destination": [address],
                 "commonHeaders": {"messageId": format!("<{id}@load.invalid>")}}
    })
    .to_string();
    let to_sign = format!(
        "Message\n{message}\nMessageId\n{id}\nTimestamp\n{timestamp}\nTopicArn\n{TOPIC}\nType\nNotification\n"
    );
    serde_json::json!({
        "Type": "Notification", "MessageId": id, "TopicArn": TOPIC, "Message": message,
        "Timestamp": timestamp, "SignatureVersion": "2",
        "Signature": sign(key, &to_sign), "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    })
    .to_string()
}

#[tokio::main]
async fn main() {
    use rsa::pkcs8::DecodePrivateKey;
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: ses_load BASE_URL ADDRESSES COUNT CONNECTIONS [ID_PREFIX]");
        std::process::exit(2);
    }
    let base = args[1].trim_end_matches('/').to_string();
    let addresses: Vec<String> = std::fs::read_to_string(&args[2])
        .expect("read ADDRESSES")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let count: usize = args[3].parse().expect("COUNT");
    let connections: usize = args[4].parse().expect("CONNECTIONS");
    let prefix = args.get(5).cloned().unwrap_or_else(|| "load".into());
    let key_pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sns/test-signing-key.pem"
    ))
    .expect("the test signing key");
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&key_pem).expect("PKCS#8 key");
    let bodies: Vec<String> = (0..count)
        .map(|i| {
            notification(
                &key,
                &format!("{prefix}-{i:06}"),
                &addresses[i % addresses.len()],
            )
        })
        .collect();
    let bodies = Arc::new(bodies);
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(notify::net::client_config(None).expect("tls"))
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, bodies, next, url) = (
            client.clone(),
            bodies.clone(),
            next.clone(),
            format!("{base}/webhooks/ses"),
        );
        tasks.push(tokio::spawn(async move {
            let mut seen: Vec<(u16, Duration)> = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= bodies.len() {
                    break;
                }
                let t = Instant::now();
                let status = match client
                    .post(&url)
                    .header("content-type", "text/plain; charset=UTF-8")
                    .header("x-amz-sns-message-type", "Notification")
                    .body(bodies[i].clone())
                    .send()
                    .await
                {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                seen.push((status, t.elapsed()));
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies: Vec<Duration> = all.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let mut statuses = std::collections::BTreeMap::new();
    for (s, _) in &all {
        *statuses.entry(s.to_string()).or_insert(0usize) += 1;
    }
    println!(
        "{}",
        serde_json::json!({
            "requests": all.len(), "statuses": statuses, "connections": connections,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "requests_per_second": (all.len() as f64 / seconds).round(),
            "p50_ms": (pct(0.50) * 10.0).round() / 10.0,
            "p99_ms": (pct(0.99) * 10.0).round() / 10.0,
            "max_ms": (pct(1.0) * 10.0).round() / 10.0,
        })
    );
}
