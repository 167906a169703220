//! Transports: a real SMTP server (one connection per worker, TLS as the URL asks, all through
//! notify's own pipelining client [`smtp`]) or the outbox folder (one `.eml` file per message,
//! written atomically). `SendError` says whether the failure is permanent (a 5xx: the recipient
//! is refused), transient (a 4xx or a lost connection: try again later) and carries the server's
//! words. Credentials go only over TLS: with a user and password, a server that offers STARTTLS
//! is always upgraded before AUTH, and one that does not is refused before AUTH is sent, unless
//! `tls=none` was written in the URL (then the password goes in clear, with a warning).
//! With a [`TokenSource`] (`smtp_auth = "xoauth2"`) the login is AUTH XOAUTH2 under the same
//! rule: a token refused at AUTH is renewed once and tried on a fresh connection, and a session
//! whose token is near its end is closed and opened anew with a renewed one before the next
//! message, so tokens that expire during a run cost nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::{smtp, Outgoing};
use crate::oauth::{self, TokenSource};

pub use crate::config::{SmtpSettings, TlsMode};

/// The SMTP server to deliver to: the settings [`crate::config::Config`] parsed from
/// `smtp_url` at load, the extra trusted certificates, the token source for XOAUTH2, and the
/// TLS client configuration shared by every connection. Derefs to its [`SmtpSettings`].
#[derive(Clone)]
pub struct SmtpTarget {
    server: SmtpSettings,
    /// Certificates (PEM) trusted besides the public roots: a relay with a private CA.
    extra_roots: Option<Vec<u8>>,
    /// Tokens for AUTH XOAUTH2 instead of the password.
    oauth: Option<TokenSource>,
    /// The TLS client configuration, built on first use and shared by every connection (and
    /// so its session cache).
    tls_config: Arc<OnceLock<Result<Arc<rustls::ClientConfig>, String>>>,
}

impl std::ops::Deref for SmtpTarget {
    type Target = SmtpSettings;
    fn deref(&self) -> &SmtpSettings {
        &self.server
    }
}

impl std::fmt::Debug for SmtpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.server)
    }
}

impl std::fmt::Display for SmtpTarget {
    /// The URL without credentials, safe to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.server)
    }
}

#[cfg(test)]
impl SmtpTarget {
    /// For the tests: a target straight from a URL, as the configuration parses it.
    fn parse(raw: &str, user: Option<&str>, password: Option<&str>) -> Result<SmtpTarget, String> {
        SmtpSettings::parse(raw, user, password).map(SmtpTarget::new)
    }
}

impl SmtpTarget {
    /// A target for the server the configuration names (no extra roots, password login).
    pub fn new(server: SmtpSettings) -> SmtpTarget {
        SmtpTarget {
            server,
            extra_roots: None,
            oauth: None,
            tls_config: Arc::default(),
        }
    }

    /// Trust these certificates (PEM, as [`crate::config::read_ca_file`] checked them) too, for a relay whose
    /// certificate a private CA signed (`smtp_ca_file`).
    pub fn trust(mut self, pem: Vec<u8>) -> SmtpTarget {
        self.extra_roots = Some(pem);
        self.tls_config = Arc::default();
        self
    }

    /// Log in with AUTH XOAUTH2 as the user (the mailbox), with tokens from `source`, instead
    /// of the password.
    pub fn with_oauth(mut self, source: TokenSource) -> SmtpTarget {
        self.oauth = Some(source);
        self
    }

    /// True when the session logs in (a user name was given).
    pub fn has_credentials(&self) -> bool {
        self.user.is_some() || self.oauth.is_some()
    }

    /// Open one SMTP session, logged in when there are credentials: [`SmtpTarget::connect`],
    /// then AUTH. With XOAUTH2, a token the server refuses (535, or any 5.7.x) is renewed once
    /// and tried on a fresh connection; refused again, the error names what to check on the
    /// Exchange side. Returns the connection and, with XOAUTH2, when its token is due for renewal.
    async fn open(&self) -> Result<(smtp::Connection, Option<Instant>), SendError> {
        let Some(source) = &self.oauth else {
            let mut conn = self.connect().await?;
            if let Some(user) = &self.user {
                let password = self.password.as_deref().unwrap_or("");
                let login = smtp::Login::Password { user, password };
                if let Err(e) = conn.login(login).await {
                    return Err(self.login_error(e, ""));
                }
            }
            return Ok((conn, None));
        };
        let Some(user) = self.user.as_deref().filter(|u| !u.is_empty()) else {
            return Err(SendError {
                kind: SendErrorKind::Connection,
                code: None,
                stage: Some(Stage::Session),
                message: "smtp_auth = \"xoauth2\" needs the mailbox in NOTIFY_SMTP_USER".into(),
            });
        };
        let token_error = |e: oauth::OAuthError| SendError {
            kind: SendErrorKind::Connection,
            code: None,
            stage: Some(Stage::Session),
            message: e.to_string(),
        };
        let mut token = source.token().await.map_err(token_error)?;
        let mut renewed = false;
        loop {
            let mut conn = self.connect().await?;
            let response = oauth::xoauth2(user, &token);
            match conn
                .login(smtp::Login::Xoauth2 {
                    response: &response,
                })
                .await
            {
                Ok(()) => return Ok((conn, Some(token.renew_at()))),
                Err(smtp::Failure::Refused { reply, .. })
                    if !renewed && refuses_the_token(&reply) =>
                {
                    tracing::debug!("the SMTP server refused the OAuth token; renewing it");
                    conn.quit().await;
                    token = source.replace(&token).await.map_err(token_error)?;
                    renewed = true;
                }
                Err(e) => {
                    conn.quit().await;
                    let advice = if renewed {
                        format!(
                            " (also with a newly issued token). Check, for the mailbox {}: that \
                             the app has the Office 365 Exchange Online application permission \
                             SMTP.SendAsApp with admin consent; that its service principal is \
                             registered in Exchange (New-ServicePrincipal) and has FullAccess to \
                             the mailbox (Add-MailboxPermission); that SMTP AUTH is enabled on \
                             the mailbox (Set-CASMailbox -SmtpClientAuthenticationDisabled \
                             $false); and that NOTIFY_SMTP_USER is that mailbox",
                            crate::inert::line(user)
                        )
                    } else {
                        String::new()
                    };
                    return Err(self.login_error(e, &advice));
                }
            }
        }
    }

    /// A failed login as a send error that stops the run: the server's words, then `advice`.
    fn login_error(&self, e: smtp::Failure, advice: &str) -> SendError {
        match e {
            smtp::Failure::Refused { reply, .. } => SendError {
                kind: SendErrorKind::Connection,
                code: Some(reply.code),
                stage: Some(Stage::Session),
                message: format!(
                    "the SMTP server at {self} refused the login: {}{advice}",
                    crate::inert::line(&reply.text())
                ),
            },
            smtp::Failure::Unsupported { reason, .. } => SendError {
                kind: SendErrorKind::Connection,
                code: None,
                stage: Some(Stage::Session),
                message: format!("cannot log in to the SMTP server at {self}: {reason}"),
            },
            other => SendError {
                kind: SendErrorKind::Connection,
                code: None,
                stage: None,
                message: format!("cannot reach the SMTP server at {self}: {other}"),
            },
        }
    }

    /// Connect, with notify's own client: TCP with Nagle's algorithm off, TLS from the first
    /// byte for `smtps://`, the greeting and EHLO, and STARTTLS as the URL asks (and always
    /// before a login when the server offers it, unless `tls=none` was written). With
    /// credentials, a connection that is not TLS is refused here, before any AUTH, unless
    /// `tls=none` was written.
    async fn connect(&self) -> Result<smtp::Connection, SendError> {
        let unreachable = |message: String| SendError {
            kind: SendErrorKind::Connection,
            code: None,
            stage: None,
            message: format!("cannot reach the SMTP server at {self}: {message}"),
        };
        let session_err = |f: smtp::Failure| match f {
            smtp::Failure::Refused { what, reply } => SendError {
                kind: SendErrorKind::Connection,
                code: Some(reply.code),
                stage: Some(Stage::of(what)),
                message: format!(
                    "cannot reach the SMTP server at {self}: {what} refused: {}",
                    reply.text()
                ),
            },
            other => unreachable(other.to_string()),
        };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| unreachable("connection timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream = if self.tls == TlsMode::Implicit {
            let (connector, name) = self.tls_connector().map_err(&unreachable)?;
            let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| unreachable("no TLS handshake within the time allowed".into()))?
                .map_err(|e| unreachable(format!("TLS: {e}")))?;
            smtp::Stream::Tls(Box::new(tls))
        } else {
            smtp::Stream::Plain(tcp)
        };
        let mut conn = smtp::Connection::greet(stream, &client_name(), COMMAND_TIMEOUT)
            .await
            .map_err(session_err)?;
        let credentials = self.has_credentials() && !self.explicit_plain;
        let upgrade = match self.tls {
            TlsMode::Implicit => false,
            TlsMode::Required => true,
            TlsMode::Opportunistic => conn.offers("STARTTLS"),
            TlsMode::None => credentials && conn.offers("STARTTLS"),
        };
        if upgrade {
            if !conn.offers("STARTTLS") {
                let offered = offered(&conn);
                conn.quit().await;
                return Err(unreachable(format!(
                    "tls=required, but the server does not offer STARTTLS (it offered: {offered})"
                )));
            }
            let (connector, name) = self.tls_connector().map_err(&unreachable)?;
            conn = conn.starttls(&connector, name).await.map_err(session_err)?;
        }
        if self.has_credentials() && !conn.is_tls() {
            if !self.explicit_plain {
                let offered = offered(&conn);
                let secret = if self.oauth.is_some() {
                    "OAuth token"
                } else {
                    "password"
                };
                conn.quit().await;
                return Err(SendError {
                    kind: SendErrorKind::Connection,
                    code: None,
                    stage: Some(Stage::Session),
                    message: format!(
                        "the SMTP server at {self} does not offer STARTTLS (it offered: \
                         {offered}), so the {secret} would go in clear; nothing was sent. \
                         Use smtps:// (TLS from the first byte, usually port 465) if the \
                         server has it, or write ?tls=none in smtp_url to send the {secret} \
                         in clear anyway"
                    ),
                });
            }
            warn_cleartext_login(self);
        }
        Ok(conn)
    }

    /// The TLS connector (public roots and `smtp_ca_file`'s) and the name the certificate must
    /// carry.
    fn tls_connector(&self) -> Result<(TlsConnector, ServerName<'static>), String> {
        let config = self
            .tls_config
            .get_or_init(|| {
                crate::net::client_config(self.extra_roots.as_deref())
                    .map_err(|e| format!("smtp_ca_file: {e}"))
                    .map(Arc::new)
            })
            .clone()
            .map_err(|e| format!("TLS setup for {}: {e}", self.host))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| {
            format!(
                "`{}` cannot be checked against a certificate: {e}",
                self.host
            )
        })?;
        Ok((TlsConnector::from(config), name))
    }
}

/// True for a refusal at AUTH that says the token is not good (535, or a 5.7.x status), so a
/// new token may help.
fn refuses_the_token(reply: &smtp::Reply) -> bool {
    reply.code == 535
        || (reply.code >= 500
            && reply
                .lines
                .first()
                .is_some_and(|l| l.trim_start().starts_with("5.7.")))
}

/// What the server offered in its EHLO reply, for messages (`PIPELINING, AUTH PLAIN LOGIN`).
fn offered(conn: &smtp::Connection) -> String {
    let list = conn
        .extensions()
        .iter()
        .map(|e| crate::inert::line(e))
        .collect::<Vec<_>>()
        .join(", ");
    if list.is_empty() {
        "no extensions".into()
    } else {
        list
    }
}

/// Say once per run, on stderr, that the password goes in clear because `tls=none` says so.
fn warn_cleartext_login(target: &SmtpTarget) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "logging in to the SMTP server at {target} without TLS, as tls=none asks: the \
             password goes in clear"
        )
    });
}

/// The name said in EHLO: this host's name when it is a plain domain name, else `localhost`.
fn client_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .unwrap_or_else(|| "localhost".into())
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait for any one reply, including the one after the message's final dot.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a message was not delivered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    kind: SendErrorKind,
    /// The SMTP reply code, when the server answered.
    pub code: Option<u16>,
    /// The step of the transaction the server refused, when it is known.
    pub stage: Option<Stage>,
    pub message: String,
}

/// The step of an SMTP transaction a refusal answered: whether a refusal can be about one
/// recipient at all depends on it (a refused `MAIL FROM` is about the sender).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The greeting, EHLO, STARTTLS or the login.
    Session,
    MailFrom,
    RcptTo,
    Data,
    /// The reply after the message's final dot.
    Message,
}

impl Stage {
    /// The stage named by the SMTP client's `what`.
    fn of(what: &str) -> Stage {
        match what {
            "MAIL FROM" => Stage::MailFrom,
            "RCPT TO" => Stage::RcptTo,
            "DATA" => Stage::Data,
            "the message" => Stage::Message,
            _ => Stage::Session,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendErrorKind {
    /// 5xx: this recipient or message is refused; retrying will not help.
    Permanent,
    /// 4xx: try again later.
    Transient,
    /// No answer: connection refused or lost, timeout, TLS failure.
    Connection,
    /// Writing to the outbox failed.
    Local,
}

impl SendError {
    /// The server refused for good (5xx): a bounce.
    pub fn is_permanent(&self) -> bool {
        self.kind == SendErrorKind::Permanent
    }
    /// The server asked to try later (4xx).
    pub fn is_transient(&self) -> bool {
        self.kind == SendErrorKind::Transient
    }
    /// The server could not be reached or the connection was lost.
    pub fn is_connection(&self) -> bool {
        self.kind == SendErrorKind::Connection
    }
    /// Worth another try in this run?
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            SendErrorKind::Transient | SendErrorKind::Connection
        )
    }
    /// Permanent on this server, but said by notify, not by the server: this message cannot go
    /// to this server (an address that is not ASCII to a server without SMTPUTF8). The
    /// recipient is failed, but it is no bounce: nothing was learnt about the mailbox.
    pub fn is_unsupported(&self) -> bool {
        self.kind == SendErrorKind::Permanent && self.code.is_none()
    }

    /// A refusal at `stage` with the server's reply line `reply` (`550 5.1.1 …`); 5xx is
    /// permanent, anything else transient.
    pub fn refused(stage: Stage, reply: &str) -> SendError {
        let code = reply.get(..3).and_then(|c| c.parse::<u16>().ok());
        SendError {
            kind: match code {
                Some(500..=599) => SendErrorKind::Permanent,
                _ => SendErrorKind::Transient,
            },
            code,
            stage: Some(stage),
            message: reply.to_string(),
        }
    }

    fn local(message: String) -> SendError {
        SendError {
            kind: SendErrorKind::Local,
            code: None,
            stage: None,
            message,
        }
    }

    fn from_failure(target: &SmtpTarget, f: smtp::Failure) -> SendError {
        match f {
            smtp::Failure::Refused { what, reply } => SendError {
                kind: match reply.code {
                    500..=599 => SendErrorKind::Permanent,
                    _ => SendErrorKind::Transient,
                },
                code: Some(reply.code),
                stage: Some(Stage::of(what)),
                message: format!("{what} refused: {}", reply.text()),
            },
            smtp::Failure::Broken(m) => SendError {
                kind: SendErrorKind::Connection,
                code: None,
                stage: None,
                message: format!("the SMTP server at {target}: {m}"),
            },
            // Not the server's answer but as final for this message on this server.
            smtp::Failure::Unsupported { what, reason } => SendError {
                kind: SendErrorKind::Permanent,
                code: None,
                stage: Some(Stage::of(what)),
                message: reason,
            },
        }
    }
}

/// Where messages go.
pub enum Delivery {
    Smtp { target: SmtpTarget },
    Outbox { dir: PathBuf },
}

/// One worker's open SMTP session, reused from message to message and reopened after any
/// failure that leaves it unusable.
#[derive(Default)]
pub struct Session {
    conn: Option<smtp::Connection>,
    /// When the connection's login token is due for renewal (XOAUTH2 only): from then on the
    /// connection is closed before the next message and opened anew with a renewed token.
    renew_at: Option<Instant>,
}

impl Session {
    /// Drop the connection at once, without QUIT: a message begun on it is never completed.
    pub fn abandon(&mut self) {
        self.conn = None;
    }

    /// True when the connection's token is due for renewal: no new message goes on it.
    fn token_due(&self) -> bool {
        self.renew_at.is_some_and(|t| Instant::now() >= t)
    }

    /// Say QUIT, politely, if a session is open. A message left without its final dot is
    /// abandoned by closing the connection, so the server discards it.
    pub async fn close(&mut self) {
        if let Some(c) = self.conn.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.quit()).await;
        }
    }
}

impl Delivery {
    /// True when messages are only written to files.
    pub fn is_outbox(&self) -> bool {
        matches!(self, Delivery::Outbox { .. })
    }

    /// Where, for messages to the user.
    pub fn describe(&self) -> String {
        match self {
            Delivery::Smtp { target } => target.to_string(),
            Delivery::Outbox { dir } => dir.display().to_string(),
        }
    }

    /// Check that the server answers (SMTP: connect, EHLO, TLS and login as for a delivery,
    /// QUIT) or the folder can be written.
    pub async fn check(&self) -> Result<(), SendError> {
        match self {
            Delivery::Smtp { target } => {
                let (conn, renew_at) = target.open().await?;
                let mut session = Session {
                    conn: Some(conn),
                    renew_at,
                };
                session.close().await;
                Ok(())
            }
            Delivery::Outbox { dir } => std::fs::create_dir_all(dir).map_err(|e| {
                SendError::local(format!("cannot create the outbox {}: {e}", dir.display()))
            }),
        }
    }

    /// Deliver one message over `session` (opened if needed): [`Delivery::begin`] then
    /// [`Delivery::finish`].
    pub async fn send(
        &self,
        session: &mut Session,
        msg: &Outgoing,
        file_stem: &str,
    ) -> Result<(), SendError> {
        self.begin(session, msg).await?;
        self.finish(session, msg, file_stem).await
    }

    /// Step one of a delivery: on SMTP the envelope, `DATA` and the message without its final
    /// dot, so nothing is accepted yet; a session that went stale while idle is reopened once
    /// without counting as a failed attempt. For the outbox, nothing.
    pub async fn begin(&self, session: &mut Session, msg: &Outgoing) -> Result<(), SendError> {
        let Delivery::Smtp { target } = self else {
            return Ok(());
        };
        let mut second_try = false;
        loop {
            let reused =
                session.conn.as_ref().is_some_and(|c| !c.is_broken()) && !session.token_due();
            if !reused {
                session.close().await;
            }
            let mut conn = match session.conn.take() {
                Some(conn) => conn,
                None => {
                    let (conn, renew_at) = target.open().await?;
                    session.renew_at = renew_at;
                    conn
                }
            };
            let (from, to) = envelope_addresses(msg);
            let begun = conn.begin(&from, &to, &msg.bytes).await;
            // A connection that broke is dropped: a message begun on it is never completed.
            if !conn.is_broken() {
                session.conn = Some(conn);
            }
            match begun {
                Ok(()) => return Ok(()),
                Err(smtp::Failure::Broken(_)) if reused && !second_try => second_try = true,
                Err(e) => return Err(SendError::from_failure(target, e)),
            }
        }
    }

    /// Step two: the final dot and the server's verdict (for the outbox, the file named by
    /// `file_stem`).
    pub async fn finish(
        &self,
        session: &mut Session,
        msg: &Outgoing,
        file_stem: &str,
    ) -> Result<(), SendError> {
        let target = match self {
            Delivery::Outbox { dir } => {
                // Off the async workers: a write can block on the disk for milliseconds (a
                // million files are gigabytes), and the connections to the database and the
                // other writes must go on meanwhile.
                let (dir, stem, msg) = (dir.clone(), file_stem.to_string(), msg.clone());
                return tokio::task::spawn_blocking(move || write_eml(&dir, &stem, &msg))
                    .await
                    .map_err(|e| SendError::local(format!("writing to the outbox: {e}")))?
                    .map(|_| ());
            }
            Delivery::Smtp { target } => target,
        };
        let Some(mut conn) = session.conn.take() else {
            return Err(SendError {
                kind: SendErrorKind::Connection,
                code: None,
                stage: None,
                message: format!("no open connection to {target} to finish the message on"),
            });
        };
        let verdict = conn.finish().await;
        if !conn.is_broken() {
            session.conn = Some(conn);
        }
        verdict
            .map(|_| ())
            .map_err(|e| SendError::from_failure(target, e))
    }

    /// [`Delivery::finish`] of `msg` and then [`Delivery::begin`] of `next`: on SMTP in one
    /// round trip (see [`smtp::Connection::finish_and_begin`]). Returns the verdict on `msg`
    /// and the outcome of beginning `next`. When the connection was lost before `next` was
    /// begun, it is begun again on a new connection: nothing of it had been sent, so that is
    /// not a failed attempt.
    pub async fn finish_and_begin(
        &self,
        session: &mut Session,
        msg: &Outgoing,
        file_stem: &str,
        next: &Outgoing,
    ) -> (Result<(), SendError>, Result<(), SendError>) {
        let due = session.token_due();
        let (target, mut conn) = match (self, session.conn.take()) {
            (Delivery::Smtp { target }, Some(conn)) if !due => (target, conn),
            (_, other) => {
                // The outbox, no connection, or one whose token is due for renewal (`begin`
                // opens a new one for `next`): one step after the other.
                session.conn = other;
                let verdict = self.finish(session, msg, file_stem).await;
                return (verdict, self.begin(session, next).await);
            }
        };
        let (from, to) = envelope_addresses(next);
        let (verdict, begun) = conn.finish_and_begin(&from, &to, &next.bytes).await;
        let lost = conn.is_broken();
        if !lost {
            session.conn = Some(conn);
        }
        let verdict = verdict
            .map(|_| ())
            .map_err(|e| SendError::from_failure(target, e));
        let begun = match begun {
            Ok(()) => Ok(()),
            Err(smtp::Failure::Broken(_)) if lost => self.begin(session, next).await,
            Err(e) => Err(SendError::from_failure(target, e)),
        };
        (verdict, begun)
    }
}

fn envelope_addresses(msg: &Outgoing) -> (String, String) {
    let from = msg
        .envelope
        .from()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let to = msg
        .envelope
        .to()
        .first()
        .map(|a| a.to_string())
        .unwrap_or_else(|| msg.to.clone());
    (from, to)
}

/// Write `msg` to `<dir>/<stem>.eml` atomically, with a `Return-Path:` line showing the envelope
/// sender as a receiving server would.
pub fn write_eml(dir: &Path, stem: &str, msg: &Outgoing) -> Result<PathBuf, SendError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SendError::local(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(format!("{}.eml", safe_file_name(stem)));
    let tmp = dir.join(format!(".{}.tmp", safe_file_name(stem)));
    let mut data = Vec::with_capacity(msg.bytes.len() + 80);
    if let Some(from) = msg.envelope.from() {
        data.extend_from_slice(format!("Return-Path: <{from}>\r\n").as_bytes());
    }
    data.extend_from_slice(&msg.bytes);
    std::fs::write(&tmp, &data)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| SendError::local(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

/// A file name made of letters, digits and `.-_+@` only.
pub fn safe_file_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_+@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_never_show_credentials() {
        let t = SmtpTarget::parse(
            "smtp://bob:p%40ss@mail.example:2525?tls=required",
            None,
            None,
        )
        .unwrap();
        assert_eq!(t.port, 2525);
        assert_eq!(t.tls, TlsMode::Required);
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!(t.to_string(), "smtp://mail.example:2525?tls=required");
        assert!(!format!("{t:?}").contains("p@ss"));
        let t = SmtpTarget::parse("smtps://mail.example", Some("env"), Some("pw")).unwrap();
        assert_eq!((t.port, t.tls), (465, TlsMode::Implicit));
        assert_eq!(t.user.as_deref(), Some("env"));
        assert!(SmtpTarget::parse("http://x", None, None).is_err());
        assert!(SmtpTarget::parse("smtp://x?tls=maybe", None, None).is_err());
        let e = SmtpTarget::parse("smtp://u:secret@[bad", None, None).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn a_message_notify_will_not_send_fails_the_recipient_without_a_bounce() {
        let target = SmtpTarget::parse("smtp://mail.example", None, None).unwrap();
        let e = SendError::from_failure(
            &target,
            smtp::Failure::Unsupported {
                what: "RCPT TO",
                reason: "the server does not offer SMTPUTF8, needed for the address zoë@x.org"
                    .into(),
            },
        );
        assert!(e.is_permanent() && e.is_unsupported() && !e.is_retryable());
        assert_eq!((e.stage, e.code), (Some(Stage::RcptTo), None));
        let refused = SendError::from_failure(
            &target,
            smtp::Failure::Refused {
                what: "RCPT TO",
                reply: smtp::Reply {
                    code: 550,
                    lines: vec!["5.1.1 no such user".into()],
                },
            },
        );
        assert!(refused.is_permanent() && !refused.is_unsupported());
    }

    #[test]
    fn only_a_written_tls_none_lets_a_password_go_in_clear() {
        let t = SmtpTarget::parse("smtp://u:p@mail.example", None, None).unwrap();
        assert_eq!((t.tls, t.explicit_plain), (TlsMode::None, false));
        assert_eq!(t.to_string(), "smtp://mail.example:25");
        for raw in [
            "smtp://u:p@mail.example?tls=none",
            "smtp://u:p@mail.example?tls=off",
        ] {
            let t = SmtpTarget::parse(raw, None, None).unwrap();
            assert_eq!((t.tls, t.explicit_plain), (TlsMode::None, true), "{raw}");
            assert_eq!(t.to_string(), "smtp://mail.example:25?tls=none");
        }
        // The last tls= wins; only a final `none` counts as written.
        let t = SmtpTarget::parse("smtp://mail.example?tls=none&tls=required", None, None).unwrap();
        assert_eq!((t.tls, t.explicit_plain), (TlsMode::Required, false));
        assert!(SmtpTarget::parse("smtps://mail.example?tls=none", None, None).is_err());
    }
}
