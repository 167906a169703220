//! An OAuth 2.0 token endpoint for integration tests, speaking HTTP/1.1 on `127.0.0.1:<random
//! port>` as Microsoft's identity platform does for the client credentials grant:
//!
//! * `POST /<tenant>/oauth2/v2.0/token` with a form body (`grant_type=client_credentials`,
//!   `client_id`, `client_secret`, `scope`: `client_secret_post`) answers `200` and
//!   `{"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token":"…"}` with a new
//!   random token that lives the configured lifetime, or `400`/`401` with an OAuth error
//!   (`invalid_client` and AADSTS7000215 for a wrong secret, AADSTS700016 for an unknown client,
//!   `unsupported_grant_type`), as JSON.
//! * `POST /introspect` (RFC 7662) with a form body `token=…` answers
//!   `{"active":true,"username":"<mailbox>","client_id":…,"exp":…}` for a token it issued that
//!   has not expired, else `{"active":false}`: what Dovecot's `oauth2` passdb asks.
//!
//! Every token request is recorded with the client id and secret it carried ([`requests`]), so
//! a test can check what the client sent; [`valid`] and [`tokens`] tell whether a token is one it
//! issued and still good (for the SMTP test server's `Rule::Xoauth2`). It runs on its own
//! one-worker runtime, so it serves whatever the calling test does; every answer closes its
//! connection (`Connection: close`).
//!
//! [`requests`]: OAuthServer::requests
//! [`valid`]: OAuthServer::valid
//! [`tokens`]: OAuthServer::tokens

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::smtp_server::Tokens;

/// The tenant in the token URL's path.
pub const TENANT: &str = "test-tenant";

/// One request to the token endpoint, as the server read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub grant_type: String,
    pub client_id: String,
    pub client_secret: String,
    pub scope: String,
    /// The request's `Content-Type` header.
    pub content_type: String,
    /// Whether a token was issued.
    pub issued: bool,
}

struct Issued {
    expires: Instant,
    exp_unix: u64,
}

#[derive(Default)]
struct State {
    requests: Vec<TokenRequest>,
    issued: HashMap<String, Issued>,
    introspections: usize,
}

struct Shared {
    client_id: String,
    secret: String,
    mailbox: String,
    lifetime: Duration,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When `token` expires, if this server issued it and it has not expired yet.
    fn expiry(&self, token: &str) -> Option<Instant> {
        let state = self.lock();
        let issued = state.issued.get(token)?;
        (Instant::now() < issued.expires).then_some(issued.expires)
    }
}

/// The token endpoint; stop it with [`OAuthServer::stop`] (or drop it).
pub struct OAuthServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl OAuthServer {
    /// Serve tokens that live `lifetime` (whole seconds, at least one) to the client `client_id`
    /// with the secret `secret`; introspection names `mailbox` as the token's user.
    pub fn start(client_id: &str, secret: &str, mailbox: &str, lifetime: Duration) -> OAuthServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-oauth-server")
            .enable_all()
            .build()
            .expect("test OAuth server: runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("test OAuth server: bind");
        listener
            .set_nonblocking(true)
            .expect("test OAuth server: set_nonblocking");
        let addr = listener.local_addr().expect("test OAuth server: address");
        let shared = Arc::new(Shared {
            client_id: client_id.to_string(),
            secret: secret.to_string(),
            mailbox: mailbox.to_string(),
            lifetime: Duration::from_secs(lifetime.as_secs().max(1)),
            state: Mutex::new(State::default()),
        });
        let serving = Arc::clone(&shared);
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("test OAuth server: listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let shared = Arc::clone(&serving);
                tokio::spawn(async move {
                    let _ = serve(stream, &shared).await;
                });
            }
        });
        OAuthServer {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT/test-tenant/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!("http://{}/{TENANT}/oauth2/v2.0/token", self.addr)
    }

    /// The token URL with `{tenant}` where the tenant goes, for `oauth_token_url`.
    pub fn token_url_template(&self) -> String {
        format!("http://{}/{{tenant}}/oauth2/v2.0/token", self.addr)
    }

    /// `http://127.0.0.1:PORT/introspect` (RFC 7662), for Dovecot's `oauth2` passdb.
    pub fn introspect_url(&self) -> String {
        format!("http://{}/introspect", self.addr)
    }

    /// Every token request so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.lock().requests.clone()
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.shared.lock().issued.len()
    }

    /// Introspection requests answered so far.
    pub fn introspections(&self) -> usize {
        self.shared.lock().introspections
    }

    /// True when `token` is one this server issued and it has not expired.
    pub fn valid(&self, token: &str) -> bool {
        self.shared.expiry(token).is_some()
    }

    /// The check for the SMTP test server's `Rule::Xoauth2`: when a token expires, if it is
    /// good now.
    pub fn tokens(&self) -> Tokens {
        let shared = Arc::clone(&self.shared);
        Tokens::new(move |token| shared.expiry(token))
    }

    /// Every token issued so far (for checking that none leaked into output or tables).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.lock().issued.keys().cloned().collect()
    }

    /// Stop serving; new connections are refused afterwards.
    pub fn stop(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// One HTTP/1.1 request and its answer; the connection is closed afterwards.
async fn serve(stream: tokio::net::TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await? == 0 {
        return Ok(());
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(1 << 20);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let token_path = format!("/{TENANT}/oauth2/v2.0/token");
    let (status, json) = match (method, path) {
        ("POST", p) if p == token_path => {
            let content_type = headers.get("content-type").cloned().unwrap_or_default();
            token(shared, &form, content_type)
        }
        ("POST", "/introspect") => introspect(shared, &form),
        _ => (
            404,
            serde_json::json!({"error": "not_found", "error_description": "no such endpoint"}),
        ),
    };
    let body = json.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Cache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let stream = reader.get_mut();
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

fn token(
    shared: &Shared,
    form: &HashMap<String, String>,
    content_type: String,
) -> (u16, serde_json::Value) {
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let mut request = TokenRequest {
        grant_type: field("grant_type"),
        client_id: field("client_id"),
        client_secret: field("client_secret"),
        scope: field("scope"),
        content_type,
        issued: false,
    };
    let refuse = |status: u16, error: &str, description: &str| {
        (
            status,
            serde_json::json!({
                "error": error,
                "error_description": description,
                "error_codes": [7000215],
                "timestamp": "2026-11-30 08:00:00Z",
            }),
        )
    };
    let answer = if request.grant_type != "client_credentials" {
        refuse(
            400,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        )
    } else if !request
        .content_type
        .starts_with("application/x-www-form-urlencoded")
    {
        refuse(
            400,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'grant_type'.",
        )
    } else if request.client_id != shared.client_id {
        refuse(
            400,
            "unauthorized_client",
            "AADSTS700016: Application with identifier was not found in the directory.",
        )
    } else if request.client_secret != shared.secret {
        refuse(
            401,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the \
             request is the client secret value, not the client secret ID, for a secret added \
             to app.",
        )
    } else if request.scope.is_empty() {
        refuse(
            400,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid.",
        )
    } else {
        let value: String = {
            use rand::Rng as _;
            let mut rng = rand::thread_rng();
            let bytes: [u8; 24] = rng.gen();
            format!("eyJ0.{}", hex::encode(bytes))
        };
        let secs = shared.lifetime.as_secs();
        let exp_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + secs;
        shared.lock().issued.insert(
            value.clone(),
            Issued {
                expires: Instant::now() + shared.lifetime,
                exp_unix,
            },
        );
        request.issued = true;
        (
            200,
            serde_json::json!({
                "token_type": "Bearer",
                "expires_in": secs,
                "ext_expires_in": secs,
                "access_token": value,
            }),
        )
    };
    shared.lock().requests.push(request);
    answer
}

fn introspect(shared: &Shared, form: &HashMap<String, String>) -> (u16, serde_json::Value) {
    let token = form.get("token").map(String::as_str).unwrap_or("");
    let exp = {
        let mut state = shared.lock();
        state.introspections += 1;
        state
            .issued
            .get(token)
            .filter(|i| Instant::now() < i.expires)
            .map(|i| i.exp_unix)
    };
    match exp {
        Some(exp) => (
            200,
            serde_json::json!({
                "active": true,
                "username": shared.mailbox,
                "client_id": shared.client_id,
                "token_type": "Bearer",
                "exp": exp,
            }),
        ),
        None => (200, serde_json::json!({"active": false})),
    }
}
