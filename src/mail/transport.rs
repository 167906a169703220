//! Transports: a real SMTP server (pooled connections, TLS as the URL asks) or the outbox folder
//! (one `.eml` file per message, written atomically). `SendError` says whether the failure is
//! permanent (a 5xx: the recipient is refused), transient (a 4xx or a lost connection: try again
//! later) and carries the server's words.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

use super::{smtp, Outgoing};

/// How to talk TLS to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain SMTP (`smtp://`, the default, and `?tls=none`).
    None,
    /// STARTTLS when offered (`?tls=opportunistic`).
    Opportunistic,
    /// STARTTLS or fail (`?tls=required`).
    Required,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// A parsed `smtp_url`.
#[derive(Clone)]
pub struct SmtpTarget {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    user: Option<String>,
    password: Option<String>,
    /// Certificates (PEM) trusted besides the public roots: a relay with a private CA.
    extra_roots: Option<Vec<u8>>,
}

impl std::fmt::Debug for SmtpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self)
    }
}

impl std::fmt::Display for SmtpTarget {
    /// The URL without credentials, safe to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls == TlsMode::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        write!(f, "{scheme}://{}:{}", self.host, self.port)?;
        match self.tls {
            TlsMode::Required => write!(f, "?tls=required"),
            TlsMode::Opportunistic => write!(f, "?tls=opportunistic"),
            _ => Ok(()),
        }
    }
}

impl SmtpTarget {
    /// Parse `smtp://[user[:pass]@]host[:port][?tls=required|opportunistic|none]` or `smtps://…`.
    /// Credentials in `user`/`password` (from the environment) win over the URL's.
    pub fn parse(
        raw: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<SmtpTarget, String> {
        let u = url::Url::parse(raw)
            .map_err(|e| format!("`{}` is not a URL ({e})", crate::config::redact_url(raw)))?;
        let implicit = match u.scheme() {
            "smtp" => false,
            "smtps" => true,
            other => {
                return Err(format!(
                    "scheme `{other}` is not supported; use smtp:// or smtps://"
                ))
            }
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?
            .trim_matches(['[', ']'])
            .to_string();
        let mut tls = if implicit {
            TlsMode::Implicit
        } else {
            TlsMode::None
        };
        for (k, v) in u.query_pairs() {
            match (k.as_ref(), v.as_ref()) {
                ("tls", "required" | "starttls") if !implicit => tls = TlsMode::Required,
                ("tls", "opportunistic") if !implicit => tls = TlsMode::Opportunistic,
                ("tls", "none" | "off") if !implicit => tls = TlsMode::None,
                ("tls", other) => {
                    return Err(format!(
                        "tls={other} is not supported here; use tls=required, tls=opportunistic or tls=none with smtp://"
                    ))
                }
                (other, _) => return Err(format!("unknown URL parameter `{other}`")),
            }
        }
        let port = u.port().unwrap_or(if implicit { 465 } else { 25 });
        let url_user = (!u.username().is_empty()).then(|| percent_decode(u.username()));
        let url_pass = u.password().map(percent_decode);
        Ok(SmtpTarget {
            host,
            port,
            tls,
            user: user.map(str::to_string).or(url_user),
            password: password.map(str::to_string).or(url_pass),
            extra_roots: None,
        })
    }

    /// Trust these certificates (PEM, as [`read_ca_file`] checked them) too, for a relay whose
    /// certificate a private CA signed (`smtp_ca_file`).
    pub fn trust(mut self, pem: Vec<u8>) -> SmtpTarget {
        self.extra_roots = Some(pem);
        self
    }

    /// Open one SMTP session: TCP with Nagle's algorithm off, the greeting and EHLO, TLS as the
    /// URL asks, and AUTH when there are credentials. Plain connections use notify's own
    /// pipelining client ([`smtp`]); TLS ones lettre's.
    async fn open(&self) -> Result<Conn, SendError> {
        if self.tls == TlsMode::None {
            return self.open_plain().await.map(Conn::Plain);
        }
        self.connect_tls().await.map(|c| Conn::Tls(Box::new(c)))
    }

    async fn open_plain(&self) -> Result<smtp::Connection, SendError> {
        let unreachable = |message: String| SendError {
            kind: SendErrorKind::Connection,
            code: None,
            stage: None,
            message: format!("cannot reach the SMTP server at {self}: {message}"),
        };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| unreachable("connection timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let name = ClientId::default().to_string();
        let credentials = self
            .user
            .as_deref()
            .map(|u| (u, self.password.as_deref().unwrap_or("")));
        smtp::Connection::start(tcp, &name, credentials, COMMAND_TIMEOUT)
            .await
            .map_err(|e| match e {
                smtp::Failure::Refused {
                    what: "AUTH",
                    reply,
                } => SendError {
                    kind: SendErrorKind::Connection,
                    code: Some(reply.code),
                    stage: Some(Stage::Session),
                    message: format!(
                        "the SMTP server at {self} refused the login: {}",
                        reply.text()
                    ),
                },
                other => unreachable(other.to_string()),
            })
    }

    /// lettre's connection, for TLS.
    async fn connect_tls(&self) -> Result<AsyncSmtpConnection, SendError> {
        let hello = ClientId::default();
        let fail = |e: lettre::transport::smtp::Error| {
            let mut err = SendError::from_lettre(&e);
            err.kind = SendErrorKind::Connection;
            err.message = format!("cannot reach the SMTP server at {self}: {}", err.message);
            err
        };
        let params = || {
            let mut builder = TlsParameters::builder(self.host.clone());
            if let Some(pem) = &self.extra_roots {
                let cert = lettre::transport::smtp::client::Certificate::from_pem(pem);
                builder = builder.add_root_certificate(cert.map_err(|e| SendError {
                    kind: SendErrorKind::Connection,
                    code: None,
                    stage: None,
                    message: format!("TLS setup for {}: smtp_ca_file: {e}", self.host),
                })?);
            }
            builder.build().map_err(|e| SendError {
                kind: SendErrorKind::Connection,
                code: None,
                stage: None,
                message: format!("TLS setup for {}: {e}", self.host),
            })
        };
        let mut conn = if self.tls == TlsMode::Implicit {
            // TLS from the first byte: lettre's own connector does the handshake.
            AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(CONNECT_TIMEOUT),
                &hello,
                Some(params()?),
                None,
            )
            .await
            .map_err(fail)?
        } else {
            let tcp = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
            )
            .await
            .map_err(|_| SendError {
                kind: SendErrorKind::Connection,
                code: None,
                stage: None,
                message: format!("cannot reach the SMTP server at {self}: connection timed out"),
            })?
            .map_err(|e| SendError {
                kind: SendErrorKind::Connection,
                code: None,
                stage: None,
                message: format!("cannot reach the SMTP server at {self}: {e}"),
            })?;
            let _ = tcp.set_nodelay(true);
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello),
            )
            .await
            .map_err(|_| SendError {
                kind: SendErrorKind::Connection,
                code: None,
                stage: None,
                message: format!("the SMTP server at {self} sent no greeting"),
            })?
            .map_err(fail)?
        };
        match self.tls {
            TlsMode::Required => conn.starttls(params()?, &hello).await.map_err(fail)?,
            TlsMode::Opportunistic if conn.can_starttls() => {
                conn.starttls(params()?, &hello).await.map_err(fail)?
            }
            _ => {}
        }
        if let Some(user) = &self.user {
            let creds = Credentials::new(user.clone(), self.password.clone().unwrap_or_default());
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds)
                .await
                .map_err(|e| {
                    let mut err = SendError::from_lettre(&e);
                    err.message = format!(
                        "the SMTP server at {self} refused the login: {}",
                        err.message
                    );
                    err.kind = SendErrorKind::Connection;
                    err
                })?;
        }
        Ok(conn)
    }
}

/// The PEM certificates in `path`, checked: readable, and at least one certificate in it.
pub fn read_ca_file(path: &Path) -> Result<Vec<u8>, String> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| format!("{}: not a PEM certificate file ({e})", path.display()))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "{}: no certificate in it (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(pem)
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait for any one reply, including the one after the message's final dot.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

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
        }
    }

    fn from_lettre(e: &lettre::transport::smtp::Error) -> SendError {
        let code = e.status().map(|c| {
            let s = c.to_string();
            s.parse::<u16>().unwrap_or(0)
        });
        let kind = if e.is_permanent() {
            SendErrorKind::Permanent
        } else if e.is_transient() {
            SendErrorKind::Transient
        } else {
            SendErrorKind::Connection
        };
        let mut message = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            let m = s.to_string();
            if !message.contains(&m) {
                message.push_str(": ");
                message.push_str(&m);
            }
            src = s.source();
        }
        SendError {
            kind,
            code,
            stage: None,
            message,
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
pub struct Session(Option<Conn>);

enum Conn {
    /// Plain SMTP: notify's own client, pipelined, in two steps.
    Plain(smtp::Connection),
    /// TLS (implicit or STARTTLS): lettre's client, one step.
    Tls(Box<AsyncSmtpConnection>),
}

impl Session {
    /// Drop the connection at once, without QUIT: a message begun on it is never completed.
    pub fn abandon(&mut self) {
        self.0 = None;
    }

    /// Say QUIT, politely, if a session is open. A message left without its final dot is
    /// abandoned by closing the connection, so the server discards it.
    pub async fn close(&mut self) {
        match self.0.take() {
            Some(Conn::Plain(c)) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), c.quit()).await;
            }
            Some(Conn::Tls(mut c)) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), c.quit()).await;
            }
            None => {}
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

    /// Check that the server answers (SMTP: connect, EHLO, QUIT) or the folder can be written.
    pub async fn check(&self) -> Result<(), SendError> {
        match self {
            Delivery::Smtp { target } => {
                let mut session = Session(Some(target.open().await?));
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

    /// Step one of a delivery: on a plain SMTP connection the envelope, `DATA` and the message
    /// without its final dot, so nothing is accepted yet; a session that went stale while idle
    /// is reopened once without counting as a failed attempt. Elsewhere, only the connection.
    pub async fn begin(&self, session: &mut Session, msg: &Outgoing) -> Result<(), SendError> {
        let Delivery::Smtp { target } = self else {
            return Ok(());
        };
        let mut second_try = false;
        loop {
            let reused = matches!(session.0, Some(Conn::Plain(ref c)) if !c.is_broken())
                || matches!(session.0, Some(Conn::Tls(ref c)) if !c.has_broken());
            if !reused {
                session.close().await;
                session.0 = Some(target.open().await?);
            }
            let Some(Conn::Plain(conn)) = &mut session.0 else {
                return Ok(());
            };
            let (from, to) = envelope_addresses(msg);
            match conn.begin(&from, &to, &msg.bytes).await {
                Ok(()) => return Ok(()),
                Err(smtp::Failure::Broken(_)) if reused && !second_try => second_try = true,
                Err(e) => {
                    if conn.is_broken() {
                        session.0 = None;
                    }
                    return Err(SendError::from_failure(target, e));
                }
            }
        }
    }

    /// Step two: the final dot and the server's verdict (or, for TLS, the whole transaction;
    /// for the outbox, the file named by `file_stem`).
    pub async fn finish(
        &self,
        session: &mut Session,
        msg: &Outgoing,
        file_stem: &str,
    ) -> Result<(), SendError> {
        let target = match self {
            Delivery::Outbox { dir } => return write_eml(dir, file_stem, msg).map(|_| ()),
            Delivery::Smtp { target } => target,
        };
        match session.0.take() {
            Some(Conn::Plain(mut conn)) => match conn.finish().await {
                Ok(_) => {
                    session.0 = Some(Conn::Plain(conn));
                    Ok(())
                }
                Err(e) => {
                    if !conn.is_broken() {
                        session.0 = Some(Conn::Plain(conn));
                    }
                    Err(SendError::from_failure(target, e))
                }
            },
            Some(Conn::Tls(mut conn)) => {
                let sent =
                    tokio::time::timeout(COMMAND_TIMEOUT, conn.send(&msg.envelope, &msg.bytes))
                        .await;
                match sent {
                    Ok(Ok(_)) => {
                        session.0 = Some(Conn::Tls(conn));
                        Ok(())
                    }
                    Ok(Err(e)) => Err(SendError::from_lettre(&e)),
                    Err(_) => Err(SendError {
                        kind: SendErrorKind::Connection,
                        code: None,
                        stage: None,
                        message: format!(
                            "the SMTP server at {target} did not answer within {} s",
                            COMMAND_TIMEOUT.as_secs()
                        ),
                    }),
                }
            }
            None => Err(SendError {
                kind: SendErrorKind::Connection,
                code: None,
                stage: None,
                message: format!("no open connection to {target} to finish the message on"),
            }),
        }
    }

    /// [`Delivery::finish`] of `msg` and then [`Delivery::begin`] of `next`: on a plain SMTP
    /// connection in one round trip (see [`smtp::Connection::finish_and_begin`]). Returns the
    /// verdict on `msg` and the outcome of beginning `next`. When the connection was lost
    /// before `next` was begun, it is begun again on a new connection: nothing of it had been
    /// sent, so that is not a failed attempt.
    pub async fn finish_and_begin(
        &self,
        session: &mut Session,
        msg: &Outgoing,
        file_stem: &str,
        next: &Outgoing,
    ) -> (Result<(), SendError>, Result<(), SendError>) {
        let plain = match (self, session.0.take()) {
            (Delivery::Smtp { target }, Some(Conn::Plain(conn))) => Some((target, conn)),
            (_, other) => {
                session.0 = other;
                None
            }
        };
        let Some((target, mut conn)) = plain else {
            // The outbox, or TLS: one step after the other.
            let verdict = self.finish(session, msg, file_stem).await;
            return (verdict, self.begin(session, next).await);
        };
        let (from, to) = envelope_addresses(next);
        let (verdict, begun) = conn.finish_and_begin(&from, &to, &next.bytes).await;
        let lost = conn.is_broken();
        if !lost {
            session.0 = Some(Conn::Plain(conn));
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
}
