//! OAuth 2.0 tokens for XOAUTH2 (Exchange Online): the client credentials grant (RFC 6749
//! 4.4, the secret in the form body, `client_secret_post`) against the configured token
//! endpoint, tokens cached in memory and renewed before they expire, and the SASL XOAUTH2
//! initial response built from one. SMTP (`mail::transport`) and IMAP share a [`TokenSource`].
//!
//! The client secret and the tokens are never printed, logged or stored: [`Token`] has no
//! `Display` and a redacting `Debug`, and every [`OAuthError`] is made of the endpoint's URL and
//! the endpoint's own words (with the secret cut out, control characters made inert). No SQL and
//! no printing here.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{check_token_url, OAuthSettings};

/// Renew a token when less than this remains…
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// …or, for a token that lives less than ten times that, a tenth of its lifetime.
const RENEW_SHARE: u32 = 10;
/// The lifetime assumed when the endpoint does not say (`expires_in` is only recommended).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of the endpoint's words quoted in an error.
const QUOTE_MAX: usize = 300;

/// An access token. Its value is reachable only through [`Token::secret`]; `Debug` hides it.
#[derive(Clone)]
pub struct Token {
    value: Arc<str>,
    expires_at: Instant,
    lifetime: Duration,
}

impl Token {
    /// A token worth `value` that expires `lifetime` after `now`.
    pub fn new(value: &str, now: Instant, lifetime: Duration) -> Token {
        Token {
            value: Arc::from(value),
            expires_at: now + lifetime,
            lifetime,
        }
    }

    /// The token itself, for the XOAUTH2 response only.
    pub fn secret(&self) -> &str {
        &self.value
    }

    /// When the endpoint said it stops working.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// From when on this token is renewed rather than used: five minutes before it expires,
    /// or a tenth of its lifetime before for a short one.
    pub fn renew_at(&self) -> Instant {
        let margin = RENEW_BEFORE.min(self.lifetime / RENEW_SHARE);
        self.expires_at
            .checked_sub(margin)
            .unwrap_or(self.expires_at)
    }

    /// True when the token should be renewed at `now` rather than used.
    pub fn needs_renewal(&self, now: Instant) -> bool {
        now >= self.renew_at()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let left = self.expires_at.saturating_duration_since(Instant::now());
        write!(f, "Token(<redacted>, expires in {} s)", left.as_secs())
    }
}

/// The SASL XOAUTH2 initial response: base64 of `user=<user>\x01auth=Bearer <token>\x01\x01`.
pub fn xoauth2(user: &str, token: &Token) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!(
        "user={user}\x01auth=Bearer {}\x01\x01",
        token.secret()
    ))
}

/// Why no token was had, and what to check. Never holds the secret or a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    /// The token URL or the HTTP client cannot be used.
    #[error("OAuth token endpoint {url}: {message}")]
    Setup { url: String, message: String },
    /// No HTTP answer: refused, timed out, TLS failed, name not found.
    #[error(
        "cannot reach the OAuth token endpoint {url}: {reason}. Check oauth_tenant / \
         oauth_token_url and that this machine can reach it (proxy, firewall)"
    )]
    Unreachable { url: String, reason: String },
    /// The endpoint answered with an OAuth error (`invalid_client` for a wrong secret).
    #[error(
        "the OAuth token endpoint {url} refused notify's client credentials (HTTP {status}): \
         {error}{description}. {advice}"
    )]
    Refused {
        url: String,
        status: u16,
        error: String,
        description: String,
        advice: &'static str,
    },
    /// The endpoint answered, but not with a token or an OAuth error in JSON.
    #[error(
        "the OAuth token endpoint {url} answered HTTP {status} with {what}; check \
         oauth_token_url (for Microsoft it ends in /oauth2/v2.0/token)"
    )]
    NotAToken {
        url: String,
        status: u16,
        what: String,
    },
}

/// Where tokens come from: the client credentials grant against one endpoint, with a cache
/// shared by every clone (one token for every connection of a run, SMTP and IMAP alike).
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    settings: OAuthSettings,
    url: url::Url,
    client: reqwest::Client,
    /// The current token; the lock is held while a new one is fetched, so callers wait for
    /// that one instead of each asking for their own.
    cache: tokio::sync::Mutex<Option<Token>>,
    fetched: AtomicUsize,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.inner.settings.token_url)
            .field("client_id", &self.inner.settings.client_id)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A source for these credentials; nothing is fetched until a token is asked for.
    pub fn new(settings: &OAuthSettings) -> Result<TokenSource, OAuthError> {
        let setup = |message: String| OAuthError::Setup {
            url: settings.token_url.clone(),
            message,
        };
        let url = check_token_url(&settings.token_url).map_err(setup)?;
        let tls = crate::net::client_config(None).map_err(setup)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect could carry the secret elsewhere: the endpoint is the one configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("notify/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| setup(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        Ok(TokenSource {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                url,
                client,
                cache: tokio::sync::Mutex::new(None),
                fetched: AtomicUsize::new(0),
            }),
        })
    }

    /// A token with time left: the cached one, or a new one when it is near its end.
    pub async fn token(&self) -> Result<Token, OAuthError> {
        let mut cache = self.inner.cache.lock().await;
        if let Some(t) = cache.as_ref().filter(|t| !t.needs_renewal(Instant::now())) {
            return Ok(t.clone());
        }
        let t = self.fetch().await?;
        *cache = Some(t.clone());
        Ok(t)
    }

    /// A new token whatever the cache holds (a server refused the current one).
    pub async fn renew(&self) -> Result<Token, OAuthError> {
        let mut cache = self.inner.cache.lock().await;
        let t = self.fetch().await?;
        *cache = Some(t.clone());
        Ok(t)
    }

    /// A token other than `refused`: the cached one if another connection already renewed it,
    /// else a new one. Many connections refused at once cost one request.
    pub async fn replace(&self, refused: &Token) -> Result<Token, OAuthError> {
        let mut cache = self.inner.cache.lock().await;
        if let Some(t) = cache
            .as_ref()
            .filter(|t| t.secret() != refused.secret() && !t.needs_renewal(Instant::now()))
        {
            return Ok(t.clone());
        }
        let t = self.fetch().await?;
        *cache = Some(t.clone());
        Ok(t)
    }

    /// How many tokens this source has asked the endpoint for.
    pub fn fetched(&self) -> usize {
        self.inner.fetched.load(Ordering::Relaxed)
    }

    /// One client credentials grant.
    async fn fetch(&self) -> Result<Token, OAuthError> {
        let s = &self.inner.settings;
        let url = s.token_url.clone();
        self.inner.fetched.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let answer = self
            .inner
            .client
            .post(self.inner.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", s.client_id.as_str()),
                ("client_secret", s.client_secret.as_str()),
                ("scope", s.scope.as_str()),
            ])
            .send()
            .await
            .map_err(|e| OAuthError::Unreachable {
                url: url.clone(),
                reason: self.quote(&chain(&e)),
            })?;
        let status = answer.status().as_u16();
        let body = answer.bytes().await.map_err(|e| OAuthError::Unreachable {
            url: url.clone(),
            reason: self.quote(&format!("the answer was cut off: {}", chain(&e))),
        })?;
        let parsed = parse_answer(status, &body, sent);
        parsed.map_err(|problem| match problem {
            Problem::Refused { error, description } => OAuthError::Refused {
                advice: advice(&error),
                url,
                status,
                error: self.quote(&error),
                description: description
                    .map(|d| format!(": {}", self.quote(d.trim().trim_end_matches('.'))))
                    .unwrap_or_default(),
            },
            Problem::NotAToken(what) => OAuthError::NotAToken {
                url,
                status,
                what: self.quote(&what),
            },
        })
    }

    /// The endpoint's words, safe to show: the secret cut out, control characters made inert,
    /// and not too long.
    fn quote(&self, text: &str) -> String {
        let secret = &self.inner.settings.client_secret;
        let mut text = text.to_string();
        if !secret.is_empty() {
            // As sent in the form too, should an endpoint echo the request.
            let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            text = text
                .replace(secret.as_str(), "<secret>")
                .replace(&encoded, "<secret>");
        }
        let text = crate::inert::line(&text);
        match text.char_indices().nth(QUOTE_MAX) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text.into_owned(),
        }
    }
}

/// What was wrong with an answer, before it is quoted.
#[derive(Debug, PartialEq, Eq)]
enum Problem {
    Refused {
        error: String,
        description: Option<String>,
    },
    NotAToken(String),
}

/// The token in the endpoint's answer (`status`, `body`), its lifetime counted from `sent`
/// (so it never looks longer-lived than the endpoint meant).
fn parse_answer(status: u16, body: &[u8], sent: Instant) -> Result<Token, Problem> {
    #[derive(serde::Deserialize)]
    struct Answer {
        access_token: Option<String>,
        expires_in: Option<serde_json::Value>,
        error: Option<String>,
        error_description: Option<String>,
    }
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(_) => {
            let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(Problem::NotAToken(if shown.trim().is_empty() {
                "an empty body".into()
            } else {
                format!("something that is not JSON: {}", shown.trim())
            }));
        }
    };
    if let Some(error) = answer.error.filter(|e| !e.is_empty()) {
        return Err(Problem::Refused {
            error,
            description: answer.error_description,
        });
    }
    match answer.access_token.filter(|t| !t.is_empty()) {
        Some(token) if (200..300).contains(&status) => {
            let lifetime = match &answer.expires_in {
                Some(serde_json::Value::Number(n)) => n.as_f64(),
                // Some endpoints (Azure AD v1) send the number as a string.
                Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(86_400.0 * 365.0)))
            .unwrap_or(DEFAULT_LIFETIME);
            Ok(Token::new(&token, sent, lifetime))
        }
        _ => Err(Problem::NotAToken("JSON without an access_token".into())),
    }
}

/// What to check for an OAuth `error` code (RFC 6749 5.2).
fn advice(error: &str) -> &'static str {
    match error {
        "invalid_client" | "unauthorized_client" => {
            "Check oauth_client_id and oauth_tenant, and that NOTIFY_OAUTH_CLIENT_SECRET holds \
             the client secret's value (not its ID) and that the secret has not expired"
        }
        "invalid_scope" => {
            "Check oauth_scope (for Exchange Online: https://outlook.office365.com/.default)"
        }
        "invalid_request" => {
            "Check oauth_tenant (the directory id) and oauth_client_id (the application id)"
        }
        _ => "Check oauth_tenant, oauth_client_id, oauth_scope and NOTIFY_OAUTH_CLIENT_SECRET",
    }
}

/// An error and its causes on one line (reqwest's own message is only the outermost).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_xoauth2_response_is_the_documented_string_in_base64() {
        use base64::Engine as _;
        let t = Token::new("EwBAA.tok", Instant::now(), Duration::from_secs(60));
        let r = xoauth2("moped-notices@austintexas.gov", &t);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&r)
            .unwrap();
        assert_eq!(
            raw,
            b"user=moped-notices@austintexas.gov\x01auth=Bearer EwBAA.tok\x01\x01"
        );
        // Microsoft's documented example.
        let t = Token::new(
            "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA",
            Instant::now(),
            Duration::from_secs(60),
        );
        assert_eq!(
            xoauth2("test@contoso.onmicrosoft.com", &t),
            "dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ=="
        );
    }

    #[test]
    fn tokens_are_renewed_five_minutes_or_a_tenth_of_their_life_before_they_expire() {
        let now = Instant::now();
        let hour = Token::new("a", now, Duration::from_secs(3600));
        assert!(!hour.needs_renewal(now + Duration::from_secs(3600 - 301)));
        assert!(hour.needs_renewal(now + Duration::from_secs(3600 - 299)));
        let short = Token::new("b", now, Duration::from_secs(2));
        assert!(!short.needs_renewal(now + Duration::from_millis(1700)));
        assert!(short.needs_renewal(now + Duration::from_millis(1810)));
        assert!(short.needs_renewal(now + Duration::from_secs(3)));
    }

    #[test]
    fn a_token_never_shows_in_debug() {
        let t = Token::new("EwBAA-very-secret", Instant::now(), Duration::from_secs(60));
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("EwBAA") && shown.contains("redacted"),
            "{shown}"
        );
        let s = OAuthSettings {
            token_url: "https://login.microsoftonline.com/x/oauth2/v2.0/token".into(),
            client_id: "id".into(),
            client_secret: "Sup3r~secret".into(),
            scope: "s".into(),
        };
        assert!(!format!("{s:?}").contains("Sup3r"));
        let source = TokenSource::new(&s).unwrap();
        assert!(!format!("{source:?}").contains("Sup3r"));
    }

    #[test]
    fn token_urls_must_be_https_except_on_loopback() {
        for ok in [
            "https://login.microsoftonline.com/contoso/oauth2/v2.0/token",
            "http://127.0.0.1:8080/t/oauth2/v2.0/token",
            "http://127.9.9.9/t",
            "http://[::1]:99/t",
            "http://localhost:3000/t",
        ] {
            assert!(check_token_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://login.microsoftonline.com/t",
            "http://10.0.0.1/t",
            "http://localhost.evil.example/t",
            "ftp://127.0.0.1/t",
            "https://user:pw@login.microsoftonline.com/t",
            "not a url",
        ] {
            assert!(check_token_url(bad).is_err(), "{bad}");
        }
        let e = check_token_url("http://login.example/t").unwrap_err();
        assert!(e.contains("https"), "{e}");
    }

    #[test]
    fn answers_are_read_as_rfc_6749_says() {
        let sent = Instant::now();
        let t = parse_answer(
            200,
            br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0"}"#,
            sent,
        )
        .unwrap();
        assert_eq!(
            (t.secret(), t.expires_at()),
            ("eyJ0", sent + Duration::from_secs(3599))
        );
        let t = parse_answer(200, br#"{"expires_in":"2","access_token":"x"}"#, sent).unwrap();
        assert_eq!(t.expires_at(), sent + Duration::from_secs(2));
        let t = parse_answer(200, br#"{"access_token":"x"}"#, sent).unwrap();
        assert_eq!(t.expires_at(), sent + DEFAULT_LIFETIME);
        assert_eq!(
            parse_answer(
                401,
                br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#,
                sent
            )
            .unwrap_err(),
            Problem::Refused {
                error: "invalid_client".into(),
                description: Some("AADSTS7000215: Invalid client secret provided.".into())
            }
        );
        assert!(matches!(
            parse_answer(200, b"<html>sign in</html>", sent),
            Err(Problem::NotAToken(w)) if w.contains("not JSON")
        ));
        assert!(matches!(
            parse_answer(200, br#"{"token_type":"Bearer"}"#, sent),
            Err(Problem::NotAToken(_))
        ));
        // A token in an error status is not taken.
        assert!(parse_answer(500, br#"{"access_token":"x"}"#, sent).is_err());
    }
}
