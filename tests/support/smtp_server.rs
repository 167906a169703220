//! In-process SMTP server for integration tests.
//!
//! Speaks SMTP (RFC 5321) on `127.0.0.1:<random port>`, plain or, started with
//! [`SmtpServer::start_tls`], over TLS from the first byte (`smtps://`), so that lettre — or
//! the `notify` binary run as a child process — can deliver to it. Extensions only when a rule
//! asks: PIPELINING ([`Rule::Pipelining`]), STARTTLS ([`Rule::StartTls`], RFC 3207: after the
//! upgrade the session starts anew), AUTH PLAIN and LOGIN ([`Rule::Auth`]: one user, checked,
//! and required before MAIL), SMTPUTF8 ([`Rule::SmtpUtf8`]: RFC 6531; without it, or without
//! the `SMTPUTF8` parameter on MAIL, an address that is not ASCII is refused with 553 5.6.7),
//! AUTH XOAUTH2 as Exchange Online speaks it ([`Rule::Xoauth2`]: offered only over TLS, only
//! with a bearer token the test OAuth server issued and that has not expired; otherwise `334`
//! and a base64 JSON error, then `535 5.7.3 Authentication unsuccessful` after the client's
//! empty line; a session whose token has expired is not let start another message).
//! Every command line the server reads, on every connection, is logged in order with whether
//! the connection was TLS at that point ([`SmtpServer::log`]). Every message that is answered with
//! `250` after the final dot is recorded and can be inspected with
//! [`SmtpServer::received`]; the message is recorded *before* the `250` is
//! written, so once the client has seen the reply the message is visible.
//!
//! Rules ([`Rule`]) make it misbehave in controlled ways: reject or
//! temporarily fail recipients, answer a whole command (`MAIL`, `RCPT`,
//! `DATA`, or the final dot) with a temporary failure or by closing the
//! connection, delay the answer to the final dot, or die after some messages.
//! Rule budgets (`times`) are counted across all connections of one server.
//! It serves any number of concurrent connections (tested with 64).
//!
//! Two ways to start it:
//!
//! * [`SmtpServer::start`] (async) spawns the accept loop on the runtime of the
//!   calling test. The test does not need to poll anything. When the test
//!   blocks a thread (e.g. `std::process::Command::output()` to run the
//!   `notify` binary) use `#[tokio::test(flavor = "multi_thread")]` so that
//!   another worker thread keeps serving.
//! * [`SmtpServer::start_blocking`] (sync) runs the server on a private
//!   one-worker runtime, so it keeps serving whatever the calling thread does;
//!   usable from plain `#[test]` functions and from any tokio test flavour.
//!
//! Stop it with [`SmtpServer::stop`] (async) or [`SmtpServer::stop_blocking`];
//! afterwards connecting to the port is refused. Dropping the server without
//! stopping it also shuts it down, but without waiting for the listener to be
//! closed.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf,
    WriteHalf,
};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// Host name the server announces in its greeting and EHLO reply.
pub const SERVER_NAME: &str = "test.local";

const GREETING: &str = "220 test.local ESMTP";

/// One message accepted by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Reverse path from `MAIL FROM:<...>`, without the angle brackets
    /// (empty for the null sender `<>`).
    pub mail_from: String,
    /// Accepted recipients from `RCPT TO:<...>`, in order, without brackets.
    /// Recipients answered by a reject/temp-fail rule are not included.
    pub rcpt_to: Vec<String>,
    /// Message bytes after dot-unstuffing, without the terminating `.` line,
    /// with the line endings the client sent (CRLF for lettre).
    pub data: Vec<u8>,
    /// `MAIL FROM` carried the `SMTPUTF8` parameter.
    pub smtputf8: bool,
}

/// One command line the server read (message content is not logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Which connection, counting from 1 in the order they were accepted.
    pub connection: usize,
    /// The connection was TLS (implicit, or after STARTTLS) when the line was read.
    pub tls: bool,
    /// The line without its line ending (AUTH lines and their answers included).
    pub line: String,
}

impl Received {
    /// The message as (lossy) UTF-8 text.
    pub fn data_str(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The message parsed with `mail-parser`; `None` if it cannot be parsed.
    pub fn parsed(&self) -> Option<mail_parser::Message<'_>> {
        mail_parser::MessageParser::default().parse(&self.data)
    }
}

/// Behaviour overrides for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Answer RCPT TO for this address (case-insensitive) with this full reply
    /// line, e.g. "550 5.1.1 <x@y> User unknown". Permanent.
    RejectRcpt { address: String, reply: String },
    /// Answer RCPT TO for this address with this reply for the first `times`
    /// attempts (across connections), then accept.
    TempFailRcpt {
        address: String,
        reply: String,
        times: usize,
    },
    /// After accepting `after` messages in total, drop every new connection
    /// immediately, and close the connection instead of answering DATA's
    /// final dot (simulates a server that dies). Messages whose connection
    /// was dropped are NOT recorded as received.
    DieAfter { after: usize },
    /// Answer the first `times` occurrences (across connections) of
    /// `command` with this full reply line instead of the normal answer, e.g.
    /// "451 4.3.0 Try again later". If the reply code is 421 the connection
    /// is closed right after the reply, as real servers do.
    ///
    /// `command` (case-insensitive) is one of:
    /// * `"MAIL"` — no transaction is started;
    /// * `"RCPT"` — the recipient is not added (checked before
    ///   [`Rule::RejectRcpt`] / [`Rule::TempFailRcpt`], whose budgets are
    ///   then not used);
    /// * `"DATA"` — instead of `354`; no message is read and the transaction
    ///   is reset (the client starts again with MAIL);
    /// * `"DOT"` — the reply after the final dot (after any [`Rule::Delay`]);
    ///   the message is read in full but NOT recorded.
    ///
    /// Only commands that would otherwise succeed are counted: protocol
    /// errors (501 syntax, 503 bad sequence, 554 DATA without recipients) are
    /// answered as usual and do not use up the budget.
    TempFailCommand {
        command: String,
        reply: String,
        times: usize,
    },
    /// Close the TCP connection without answering the first `times`
    /// occurrences (across connections) of `command` (same names and
    /// counting as [`Rule::TempFailCommand`]). For `"DOT"` the whole message
    /// is read first (and any [`Rule::Delay`] waited), then the connection is
    /// closed and the message is NOT recorded.
    ///
    /// When several `TempFailCommand` / `DropAfterCommand` rules name the same
    /// command, they are consulted in list order and the first one with
    /// budget left handles the occurrence (so `[TempFail{times: 1},
    /// DropAfter{times: 1}]` fails the first, drops the second, accepts the
    /// rest).
    DropAfterCommand { command: String, times: usize },
    /// Wait this long after the final dot before answering it (every
    /// message; several `Delay` rules add up). The server does not read from
    /// the connection meanwhile, so a client that gives up and disconnects
    /// during the delay does not stop the message from being recorded —
    /// like a real slow server, which may deliver a message the client
    /// believes failed.
    Delay { millis: u64 },
    /// Offer PIPELINING (RFC 2920) in the EHLO reply. Commands are read and answered one line
    /// at a time either way, so a client's grouped `MAIL`/`RCPT`/`DATA` are answered in order,
    /// and the other rules apply to each command as usual.
    Pipelining,
    /// Offer STARTTLS on a plain connection and upgrade with this certificate chain and key
    /// (PEM) when asked.
    StartTls { cert_pem: String, key_pem: String },
    /// Offer AUTH PLAIN LOGIN, accept only this user and password (`535 5.7.8` otherwise), and
    /// answer MAIL with `530 5.7.0` until the client has logged in.
    Auth { user: String, password: String },
    /// Offer SMTPUTF8 (RFC 6531) and accept the `SMTPUTF8` parameter on MAIL.
    SmtpUtf8,
    /// Exchange Online's client submission: over TLS offer `AUTH LOGIN XOAUTH2`, accept only
    /// XOAUTH2 (LOGIN and PLAIN: `535 5.7.139` basic authentication is disabled) for `user`
    /// with a token `tokens` says is good, answer MAIL with `530 5.7.57` until then, and
    /// answer MAIL with `421 4.7.0` (and close) once the session's token has expired.
    Xoauth2 { user: String, tokens: Tokens },
}

/// Which bearer tokens are good: when a token expires, or `None` for one that is not good (not
/// issued, or expired). Compared by identity.
#[derive(Clone)]
pub struct Tokens(Arc<TokenCheck>);

/// When a token expires, if it is good.
type TokenCheck = dyn Fn(&str) -> Option<Instant> + Send + Sync;

impl Tokens {
    pub fn new(check: impl Fn(&str) -> Option<Instant> + Send + Sync + 'static) -> Tokens {
        Tokens(Arc::new(check))
    }

    /// When `token` expires, if it is good now.
    pub fn expiry(&self, token: &str) -> Option<Instant> {
        (self.0)(token)
    }
}

impl PartialEq for Tokens {
    fn eq(&self, other: &Tokens) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Tokens {}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

/// What a [`Rule::TempFailCommand`] / [`Rule::DropAfterCommand`] dictates.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CommandOverride {
    /// Send this reply instead of the normal one; close afterwards if `close`.
    Reply { reply: String, close: bool },
    /// Close the connection without answering.
    Drop,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    connections: usize,
    log: Vec<Seen>,
    /// Rule index -> how often the rule has fired (temp failures handed out,
    /// connections dropped) for rules with a `times` budget.
    fired: HashMap<usize, usize>,
    /// XOAUTH2 logins refused, and sessions that tried MAIL after their token expired.
    refused_tokens: usize,
    expired_sessions: usize,
}

struct Shared {
    rules: Vec<Rule>,
    die_after: Option<usize>,
    /// Sum of all [`Rule::Delay`]s: wait before answering the final dot.
    dot_delay: Duration,
    pipelining: bool,
    starttls: Option<TlsAcceptor>,
    auth: Option<(String, String)>,
    xoauth2: Option<(String, Tokens)>,
    smtputf8: bool,
    state: Mutex<State>,
}

impl Shared {
    fn new(rules: Vec<Rule>) -> Self {
        let die_after = rules
            .iter()
            .filter_map(|r| match r {
                Rule::DieAfter { after } => Some(*after),
                _ => None,
            })
            .min();
        let dot_delay = rules
            .iter()
            .filter_map(|r| match r {
                Rule::Delay { millis } => Some(Duration::from_millis(*millis)),
                _ => None,
            })
            .sum();
        let pipelining = rules.contains(&Rule::Pipelining);
        let starttls = rules.iter().find_map(|r| match r {
            Rule::StartTls { cert_pem, key_pem } => Some(acceptor(cert_pem, key_pem)),
            _ => None,
        });
        let auth = rules.iter().find_map(|r| match r {
            Rule::Auth { user, password } => Some((user.clone(), password.clone())),
            _ => None,
        });
        let smtputf8 = rules.contains(&Rule::SmtpUtf8);
        let xoauth2 = rules.iter().find_map(|r| match r {
            Rule::Xoauth2 { user, tokens } => Some((user.clone(), tokens.clone())),
            _ => None,
        });
        Shared {
            rules,
            die_after,
            dot_delay,
            pipelining,
            starttls,
            auth,
            xoauth2,
            smtputf8,
            state: Mutex::new(State::default()),
        }
    }

    /// The EHLO reply: what this server offers, on a connection that is TLS or not.
    fn ehlo(&self, tls: bool) -> String {
        let mut lines = vec![SERVER_NAME.to_string()];
        if self.pipelining {
            lines.push("PIPELINING".into());
        }
        lines.push("8BITMIME".into());
        if self.starttls.is_some() && !tls {
            lines.push("STARTTLS".into());
        }
        if self.auth.is_some() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        if self.xoauth2.is_some() && tls {
            lines.push("AUTH LOGIN XOAUTH2".into());
        }
        if self.smtputf8 {
            lines.push("SMTPUTF8".into());
        }
        lines.push("SIZE 52428800".into());
        let last = lines.len() - 1;
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    fn seen(&self, connection: usize, tls: bool, line: &str) {
        self.lock().log.push(Seen {
            connection,
            tls,
            line: line.to_string(),
        });
    }

    /// Lock the state; a panic elsewhere must not make the server unusable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_dead(&self, state: &State) -> bool {
        self.die_after
            .is_some_and(|after| state.received.len() >= after)
    }

    /// The reply a rule dictates for this recipient, or `None` to accept it.
    fn rcpt_override(&self, address: &str) -> Option<String> {
        let wanted = normalize_address(address);
        let mut state = self.lock();
        for (index, rule) in self.rules.iter().enumerate() {
            match rule {
                Rule::RejectRcpt { address, reply } if normalize_address(address) == wanted => {
                    return Some(reply.clone());
                }
                Rule::TempFailRcpt {
                    address,
                    reply,
                    times,
                } if normalize_address(address) == wanted => {
                    let given = state.fired.entry(index).or_insert(0);
                    if *given < *times {
                        *given += 1;
                        return Some(reply.clone());
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Consume one occurrence of `command` ("MAIL", "RCPT", "DATA", "DOT"):
    /// the override the first command rule with budget left dictates, or
    /// `None` to answer normally.
    fn command_override(&self, command: &str) -> Option<CommandOverride> {
        let mut state = self.lock();
        self.command_override_locked(&mut state, command)
    }

    fn command_override_locked(&self, state: &mut State, command: &str) -> Option<CommandOverride> {
        for (index, rule) in self.rules.iter().enumerate() {
            let (action, times) = match rule {
                Rule::TempFailCommand {
                    command: name,
                    reply,
                    times,
                } if name.trim().eq_ignore_ascii_case(command) => (
                    CommandOverride::Reply {
                        reply: reply.clone(),
                        close: reply.trim_start().starts_with("421"),
                    },
                    *times,
                ),
                Rule::DropAfterCommand {
                    command: name,
                    times,
                } if name.trim().eq_ignore_ascii_case(command) => (CommandOverride::Drop, *times),
                _ => continue,
            };
            let fired = state.fired.entry(index).or_insert(0);
            if *fired < times {
                *fired += 1;
                return Some(action);
            }
        }
        None
    }
}

/// An SMTP server listening on 127.0.0.1 for the duration of a test.
pub struct SmtpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: Option<JoinHandle<()>>,
    /// Private runtime, only when started with [`SmtpServer::start_blocking`].
    runtime: Option<tokio::runtime::Runtime>,
}

impl SmtpServer {
    /// Bind 127.0.0.1:0 and serve on the current tokio runtime (the accept loop
    /// is a spawned task). The port accepts connections as soon as this returns.
    pub async fn start(rules: Vec<Rule>) -> SmtpServer {
        Self::start_with(rules, None)
    }

    /// Like [`SmtpServer::start`], with TLS from the first byte (`smtps://`) under the
    /// certificate chain and private key given in PEM.
    pub async fn start_tls(rules: Vec<Rule>, cert_pem: &str, key_pem: &str) -> SmtpServer {
        Self::start_with(rules, Some(acceptor(cert_pem, key_pem)))
    }

    fn start_with(rules: Vec<Rule>, tls: Option<TlsAcceptor>) -> SmtpServer {
        let (listener, addr) = bind();
        let shared = Arc::new(Shared::new(rules));
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), tls));
        SmtpServer {
            addr,
            shared,
            accept_task: Some(task),
            runtime: None,
        }
    }

    /// Like [`SmtpServer::start`], but synchronous: the server runs on its own
    /// one-worker runtime, independent of the caller (plain `#[test]`, or a
    /// current-thread tokio test that blocks on a child process).
    pub fn start_blocking(rules: Vec<Rule>) -> SmtpServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-smtp-server")
            .enable_all()
            .build()
            .expect("test SMTP server: build runtime");
        let (listener, addr) = bind();
        let shared = Arc::new(Shared::new(rules));
        let task = runtime.spawn(accept_loop(listener, Arc::clone(&shared), None));
        SmtpServer {
            addr,
            shared,
            accept_task: Some(task),
            runtime: Some(runtime),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `smtp://127.0.0.1:PORT` (plain SMTP, usable with lettre's `from_url`).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port())
    }

    /// Messages accepted with 250 after the final dot, in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    /// Number of messages accepted so far; `received().len()` without
    /// cloning the messages.
    pub fn accepted_count(&self) -> usize {
        self.shared.lock().received.len()
    }

    /// Every command line read so far, on every connection, in order.
    pub fn log(&self) -> Vec<Seen> {
        self.shared.lock().log.clone()
    }

    /// AUTH XOAUTH2 attempts refused so far ([`Rule::Xoauth2`]).
    pub fn refused_tokens(&self) -> usize {
        self.shared.lock().refused_tokens
    }

    /// Sessions that tried to start a message after their token had expired
    /// ([`Rule::Xoauth2`]; each was answered 421 and closed).
    pub fn expired_sessions(&self) -> usize {
        self.shared.lock().expired_sessions
    }

    /// TCP connections accepted so far (including ones dropped by `DieAfter`).
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Stop listening and abort every connection. When this returns the
    /// listener is closed, so new connections are refused.
    pub async fn stop(mut self) {
        if let Some(task) = self.accept_task.take() {
            task.abort();
            // Resolves once the task's future (listener and connection set
            // included) has been dropped.
            let _ = task.await;
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Synchronous [`SmtpServer::stop`]. Waits (up to 5 s) for the listener to
    /// be closed; with a server from [`SmtpServer::start`] this needs another
    /// thread to drive the runtime (multi-thread flavour), so prefer `stop`
    /// there.
    pub fn stop_blocking(mut self) {
        if let Some(task) = self.accept_task.take() {
            task.abort();
            let deadline = Instant::now() + Duration::from_secs(5);
            while !task.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(task) = self.accept_task.take() {
            task.abort();
        }
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime inside an async context panics; this does not.
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer")
            .field("addr", &self.addr)
            .field("rules", &self.shared.rules)
            .finish_non_exhaustive()
    }
}

/// A TLS acceptor for the certificate chain and private key given in PEM.
fn acceptor(cert_pem: &str, key_pem: &str) -> TlsAcceptor {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{crypto::ring, ServerConfig};
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("test SMTP server: certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("test SMTP server: key PEM");
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("test SMTP server: TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("test SMTP server: certificate and key");
    TlsAcceptor::from(Arc::new(config))
}

/// Bind synchronously so the port is listening before `start*` returns; the
/// socket is handed to tokio inside the accept task (on the serving runtime).
fn bind() -> (std::net::TcpListener, SocketAddr) {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("test SMTP server: bind 127.0.0.1:0");
    listener
        .set_nonblocking(true)
        .expect("test SMTP server: set_nonblocking");
    let addr = listener.local_addr().expect("test SMTP server: local_addr");
    (listener, addr)
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
) {
    let listener = TcpListener::from_std(listener).expect("test SMTP server: register listener");
    // Owned by this task: aborting the task drops the set, which aborts every
    // connection task.
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(_) => {
                // E.g. too many open files: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let (dead, id) = {
            let mut state = shared.lock();
            state.connections += 1;
            (shared.is_dead(&state), state.connections)
        };
        if dead {
            drop(stream);
            continue;
        }
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            // I/O errors (client went away, a failed handshake) just end the session.
            match tls {
                None => {
                    let _ = serve_connection(Box::new(stream), false, id, &shared).await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = serve_connection(Box::new(stream), true, id, &shared).await;
                    }
                }
            }
        });
    }
}

/// Inside [`serve_connection`]: end the session when
/// [`apply_override`] closed the connection.
macro_rules! return_if_closed {
    ($keep_open:expr) => {
        if !$keep_open {
            return Ok(());
        }
    };
}

/// Carry out a command rule's override. `Ok(false)` when the connection has
/// been closed (drop, or after a 421 reply) and the session must end.
async fn apply_override<W: AsyncWrite + Unpin>(
    writer: &mut W,
    action: CommandOverride,
) -> io::Result<bool> {
    match action {
        CommandOverride::Reply { reply: text, close } => {
            reply(writer, &text).await?;
            if close {
                let _ = writer.shutdown().await;
            }
            Ok(!close)
        }
        // Returning drops the stream, which closes the connection.
        CommandOverride::Drop => Ok(false),
    }
}

#[derive(Default)]
struct Transaction {
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
    smtputf8: bool,
}

/// The connection under a session: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Reader = BufReader<ReadHalf<Box<dyn Io>>>;
type Writer = WriteHalf<Box<dyn Io>>;

/// Read one line (CRLF or LF) and log it; `None` when the client closed the connection.
async fn read_command(
    reader: &mut Reader,
    shared: &Shared,
    id: usize,
    tls: bool,
) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line).await? == 0 {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(strip_eol(&line)).into_owned();
    shared.seen(id, tls, &text);
    Ok(Some(text))
}

/// AUTH PLAIN / LOGIN (RFC 4616, the LOGIN draft): `Ok(Some(true))` when the credentials are
/// the configured ones, `Ok(None)` when the client closed the connection.
async fn authenticate(
    arg: &str,
    reader: &mut Reader,
    writer: &mut Writer,
    shared: &Shared,
    id: usize,
    tls: bool,
) -> io::Result<Option<bool>> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |s: &str| {
        b64.decode(s.trim())
            .ok()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let Some((user, password)) = shared.auth.clone() else {
        return Ok(Some(false));
    };
    let (mechanism, initial) = arg.split_once(' ').unwrap_or((arg, ""));
    let given = match mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" => {
            let token = if initial.is_empty() {
                reply(writer, "334 ").await?;
                match read_command(reader, shared, id, tls).await? {
                    Some(t) => t,
                    None => return Ok(None),
                }
            } else {
                initial.to_string()
            };
            decode(&token).and_then(|t| {
                let mut parts = t.split('\0');
                let _authzid = parts.next()?;
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })
        }
        "LOGIN" => {
            reply(writer, "334 VXNlcm5hbWU6").await?;
            let Some(u) = read_command(reader, shared, id, tls).await? else {
                return Ok(None);
            };
            reply(writer, "334 UGFzc3dvcmQ6").await?;
            let Some(p) = read_command(reader, shared, id, tls).await? else {
                return Ok(None);
            };
            decode(&u).zip(decode(&p))
        }
        _ => None,
    };
    Ok(Some(given == Some((user, password))))
}

/// AUTH XOAUTH2 as Exchange Online answers it: `Ok(Some(Some(expiry)))` for a good token of
/// the configured user, `Ok(Some(None))` when refused (the refusal already written),
/// `Ok(None)` when the client closed the connection. Other mechanisms are refused as basic
/// authentication.
async fn authenticate_xoauth2(
    arg: &str,
    reader: &mut Reader,
    writer: &mut Writer,
    shared: &Shared,
    id: usize,
    tls: bool,
) -> io::Result<Option<Option<Instant>>> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some((user, tokens)) = shared.xoauth2.clone() else {
        return Ok(Some(None));
    };
    let (mechanism, initial) = arg.split_once(' ').unwrap_or((arg, ""));
    if !mechanism.eq_ignore_ascii_case("XOAUTH2") {
        reply(
            writer,
            "535 5.7.139 Authentication unsuccessful, basic authentication is disabled.",
        )
        .await?;
        return Ok(Some(None));
    }
    let response = if initial.trim().is_empty() {
        reply(writer, "334 ").await?;
        match read_command(reader, shared, id, tls).await? {
            Some(r) => r,
            None => return Ok(None),
        }
    } else {
        initial.to_string()
    };
    // user=<user>\x01auth=Bearer <token>\x01\x01
    let decoded = b64
        .decode(response.trim())
        .ok()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    let mut given_user = None;
    let mut given_token = None;
    for part in decoded.split('\x01') {
        if let Some(u) = part.strip_prefix("user=") {
            given_user = Some(u.to_string());
        } else if let Some(t) = part.strip_prefix("auth=Bearer ") {
            given_token = Some(t.to_string());
        }
    }
    let good = decoded.ends_with("\x01\x01")
        && given_user.is_some_and(|u| u.eq_ignore_ascii_case(&user))
        && given_token.is_some();
    if let Some(expires) = given_token.filter(|_| good).and_then(|t| tokens.expiry(&t)) {
        return Ok(Some(Some(expires)));
    }
    shared.lock().refused_tokens += 1;
    let error = b64.encode(
        r#"{"status":"401","schemes":"bearer","scope":"https://outlook.office365.com/.default"}"#,
    );
    reply(writer, &format!("334 {error}")).await?;
    // The client answers the error challenge with an empty line.
    if read_command(reader, shared, id, tls).await?.is_none() {
        return Ok(None);
    }
    reply(writer, "535 5.7.3 Authentication unsuccessful").await?;
    Ok(Some(None))
}

async fn serve_connection(
    stream: Box<dyn Io>,
    mut tls: bool,
    id: usize,
    shared: &Shared,
) -> io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(reader);
    reply(&mut writer, GREETING).await?;

    let mut tx = Transaction::default();
    let mut logged_in = false;
    // With XOAUTH2: when the token the session logged in with expires.
    let mut token_expires: Option<Instant> = None;
    loop {
        let Some(text) = read_command(&mut reader, shared, id, tls).await? else {
            return Ok(()); // client closed the connection
        };
        let (verb, arg) = split_command(&text);
        match verb.as_str() {
            "EHLO" => {
                tx = Transaction::default();
                reply(&mut writer, &shared.ehlo(tls)).await?;
            }
            "HELO" => {
                tx = Transaction::default();
                reply(&mut writer, "250 test.local").await?;
            }
            "STARTTLS" if shared.starttls.is_some() && !tls => {
                if !arg.is_empty() {
                    reply(&mut writer, "501 5.5.4 Syntax: STARTTLS").await?;
                    continue;
                }
                reply(&mut writer, "220 2.0.0 Ready to start TLS").await?;
                if !reader.buffer().is_empty() {
                    // A client that pipelined after STARTTLS: refuse, as Postfix does.
                    return Ok(());
                }
                let Some(acceptor) = shared.starttls.clone() else {
                    return Ok(());
                };
                let stream = reader.into_inner().unsplit(writer);
                let Ok(upgraded) = acceptor.accept(stream).await else {
                    return Ok(());
                };
                let (r, w) = tokio::io::split(Box::new(upgraded) as Box<dyn Io>);
                reader = BufReader::new(r);
                writer = w;
                tls = true;
                // RFC 3207: everything known before the upgrade is forgotten.
                tx = Transaction::default();
                logged_in = false;
                token_expires = None;
            }
            "AUTH" if shared.xoauth2.is_some() && tls => {
                if logged_in {
                    reply(&mut writer, "503 5.5.1 Error: already authenticated").await?;
                    continue;
                }
                match authenticate_xoauth2(arg, &mut reader, &mut writer, shared, id, tls).await? {
                    None => return Ok(()),
                    Some(Some(expires)) => {
                        logged_in = true;
                        token_expires = Some(expires);
                        reply(&mut writer, "235 2.7.0 Authentication successful").await?;
                    }
                    Some(None) => {}
                }
            }
            "AUTH" if shared.xoauth2.is_some() => {
                reply(&mut writer, "504 5.7.4 Unrecognized authentication type").await?;
            }
            "AUTH" if shared.auth.is_some() => {
                if logged_in {
                    reply(&mut writer, "503 5.5.1 Error: already authenticated").await?;
                    continue;
                }
                match authenticate(arg, &mut reader, &mut writer, shared, id, tls).await? {
                    None => return Ok(()),
                    Some(true) => {
                        logged_in = true;
                        reply(&mut writer, "235 2.7.0 Authentication successful").await?;
                    }
                    Some(false) => {
                        reply(&mut writer, "535 5.7.8 Error: authentication failed").await?;
                    }
                }
            }
            "MAIL" => {
                let params = arg
                    .split_once('>')
                    .map(|(_, p)| p.split_whitespace().collect::<Vec<_>>())
                    .unwrap_or_default();
                let smtputf8 = params.iter().any(|p| p.eq_ignore_ascii_case("SMTPUTF8"));
                if tx.mail_from.is_some() {
                    reply(&mut writer, "503 5.5.1 Error: nested MAIL command").await?;
                } else if shared.auth.is_some() && !logged_in {
                    reply(&mut writer, "530 5.7.0 Authentication required").await?;
                } else if shared.xoauth2.is_some() && !logged_in {
                    reply(
                        &mut writer,
                        "530 5.7.57 Client not authenticated to send mail",
                    )
                    .await?;
                } else if token_expires.is_some_and(|t| Instant::now() >= t) {
                    shared.lock().expired_sessions += 1;
                    reply(&mut writer, "421 4.7.0 Session token expired, closing").await?;
                    let _ = writer.shutdown().await;
                    return Ok(());
                } else if smtputf8 && !shared.smtputf8 {
                    reply(&mut writer, "555 5.5.4 Unsupported option: SMTPUTF8").await?;
                } else if let Some(address) = parse_path(arg, "FROM:") {
                    if !address.is_ascii() && !smtputf8 {
                        reply(&mut writer, NEEDS_SMTPUTF8).await?;
                    } else if let Some(action) = shared.command_override("MAIL") {
                        return_if_closed!(apply_override(&mut writer, action).await?);
                    } else {
                        tx.mail_from = Some(address);
                        tx.smtputf8 = smtputf8;
                        reply(&mut writer, "250 2.1.0 Ok").await?;
                    }
                } else {
                    reply(&mut writer, "501 5.5.4 Syntax: MAIL FROM:<address>").await?;
                }
            }
            "RCPT" => {
                if tx.mail_from.is_none() {
                    reply(&mut writer, "503 5.5.1 Error: need MAIL command").await?;
                } else if let Some(address) = parse_path(arg, "TO:") {
                    if !address.is_ascii() && !tx.smtputf8 {
                        reply(&mut writer, NEEDS_SMTPUTF8).await?;
                        continue;
                    }
                    if let Some(action) = shared.command_override("RCPT") {
                        return_if_closed!(apply_override(&mut writer, action).await?);
                        continue;
                    }
                    match shared.rcpt_override(&address) {
                        Some(custom) => reply(&mut writer, &custom).await?,
                        None => {
                            tx.rcpt_to.push(address);
                            reply(&mut writer, "250 2.1.5 Ok").await?;
                        }
                    }
                } else {
                    reply(&mut writer, "501 5.5.4 Syntax: RCPT TO:<address>").await?;
                }
            }
            "DATA" => {
                if !arg.is_empty() {
                    reply(&mut writer, "501 5.5.4 Syntax: DATA").await?;
                } else if tx.mail_from.is_none() {
                    reply(&mut writer, "503 5.5.1 Error: need MAIL command").await?;
                } else if tx.rcpt_to.is_empty() {
                    reply(&mut writer, "554 5.5.1 Error: no valid recipients").await?;
                } else if let Some(action) = shared.command_override("DATA") {
                    tx = Transaction::default();
                    return_if_closed!(apply_override(&mut writer, action).await?);
                } else {
                    reply(&mut writer, "354 End data with <CR><LF>.<CR><LF>").await?;
                    let Some(data) = read_data(&mut reader).await? else {
                        return Ok(()); // closed in the middle of the message
                    };
                    let message = Received {
                        mail_from: tx.mail_from.take().unwrap_or_default(),
                        rcpt_to: std::mem::take(&mut tx.rcpt_to),
                        data,
                        smtputf8: std::mem::take(&mut tx.smtputf8),
                    };
                    if !shared.dot_delay.is_zero() {
                        tokio::time::sleep(shared.dot_delay).await;
                    }
                    let action = {
                        let mut state = shared.lock();
                        if shared.is_dead(&state) {
                            // Die without answering; the message is lost.
                            return Ok(());
                        }
                        let action = shared.command_override_locked(&mut state, "DOT");
                        if action.is_none() {
                            state.received.push(message);
                        }
                        action
                    };
                    match action {
                        // Not recorded: the client was not told it was accepted.
                        Some(action) => {
                            return_if_closed!(apply_override(&mut writer, action).await?)
                        }
                        None => reply(&mut writer, "250 2.0.0 Ok: queued").await?,
                    }
                }
            }
            "RSET" => {
                tx = Transaction::default();
                reply(&mut writer, "250 2.0.0 Ok").await?;
            }
            "NOOP" => reply(&mut writer, "250 2.0.0 Ok").await?,
            "QUIT" => {
                reply(&mut writer, "221 2.0.0 Bye").await?;
                let _ = writer.shutdown().await;
                return Ok(());
            }
            "AUTH" | "STARTTLS" => {
                reply(&mut writer, "502 5.5.1 Error: command not implemented").await?;
            }
            "" => reply(&mut writer, "500 5.5.2 Error: bad syntax").await?,
            _ => reply(&mut writer, "500 5.5.2 Error: command not recognized").await?,
        }
    }
}

/// The answer to an address that is not ASCII without SMTPUTF8 (Postfix's words).
const NEEDS_SMTPUTF8: &str = "553 5.6.7 Must declare SMTPUTF8 to send an address that is not ASCII";

/// Read the message after `354` up to the line that is exactly ".", undoing
/// dot-stuffing. `None` if the connection ends first.
async fn read_data<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 || !line.ends_with(b"\n") {
            return Ok(None);
        }
        if strip_eol(&line) == b"." {
            return Ok(Some(data));
        }
        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(unstuffed);
    }
}

/// Write a (possibly multi-line) reply, normalising line ends to CRLF.
async fn reply<W: AsyncWrite + Unpin>(writer: &mut W, text: &str) -> io::Result<()> {
    let mut out = text.trim_end_matches(['\r', '\n']).replace("\r\n", "\n");
    out = out.replace('\n', "\r\n");
    out.push_str("\r\n");
    writer.write_all(out.as_bytes()).await?;
    writer.flush().await
}

/// Strip a trailing CRLF or bare LF.
fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Split "mail FROM:<a@b>" into ("MAIL", "FROM:<a@b>").
fn split_command(line: &str) -> (String, &str) {
    let line = line.trim();
    let (verb, arg) = line.split_once([' ', '\t']).unwrap_or((line, ""));
    (verb.to_ascii_uppercase(), arg.trim())
}

/// Parse the path of `FROM:<addr> [params]` / `TO:<addr> [params]`
/// (keyword case-insensitive, optional space after the colon).
fn parse_path(arg: &str, keyword: &str) -> Option<String> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        Some(inner[..end].to_string())
    } else {
        let address = rest.split_whitespace().next()?;
        Some(address.to_string())
    }
}

/// Compare addresses case-insensitively, with or without angle brackets.
fn normalize_address(address: &str) -> String {
    let address = address.trim();
    let address = address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address);
    address.to_lowercase()
}
