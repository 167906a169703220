//! A small SMTP client (RFC 5321) over plain TCP or TLS (implicit, or STARTTLS, RFC 3207) that
//! sends a message in two steps so a caller can decide, at the last moment, whether the message
//! is sent at all:
//!
//! 1. [`Connection::begin`]: `MAIL FROM`, `RCPT TO` and `DATA`, written together when the
//!    server offers PIPELINING (RFC 2920), then the whole message, dot-stuffed, but *not* the
//!    final `.` line. Until that line arrives the server has accepted nothing.
//! 2. [`Connection::finish`]: the final `.` and the server's verdict.
//!
//! The sender records the previous delivery between the two steps, so the only message that can
//! have been accepted without being recorded is the one whose final dot is on the wire. With
//! PIPELINING, [`Connection::finish_and_begin`] sends a message's final dot and the next
//! message's envelope in one write, so a message costs one round trip; Nagle's algorithm is off.
//!
//! The session is opened in steps the transport orders: [`Connection::greet`] (greeting and
//! EHLO), [`Connection::starttls`] (the upgrade, then EHLO again and the extensions read anew),
//! [`Connection::login`] (AUTH PLAIN or LOGIN with a password, or XOAUTH2 with an OAuth 2.0
//! bearer token, RFC 4954's initial response on the AUTH line). Whether a credential may go over
//! a connection is the transport's decision ([`Connection::is_tls`] tells it), not this client's. An address
//! that is not ASCII is sent only when the server offers SMTPUTF8 (RFC 6531), with `MAIL FROM`'s
//! `SMTPUTF8` parameter; otherwise the message is refused here ([`Failure::Unsupported`]) and
//! the connection stays usable.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

pub use crate::net::Stream;

/// A server's reply: its code and its lines (without the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// `550 5.1.1 <x@y>: Recipient address rejected` (several lines joined by a space).
    pub fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" "))
            .trim_end()
            .to_string()
    }
}

/// How to log in.
#[derive(Clone, Copy)]
pub enum Login<'a> {
    /// AUTH PLAIN, or LOGIN.
    Password { user: &'a str, password: &'a str },
    /// AUTH XOAUTH2 with this initial response (base64 of the user and the bearer token).
    Xoauth2 { response: &'a str },
}

impl std::fmt::Debug for Login<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Login::Password { .. } => "Login::Password(<redacted>)",
            Login::Xoauth2 { .. } => "Login::Xoauth2(<redacted>)",
        })
    }
}

/// What went wrong, in the client's own terms; the transport maps it to a `SendError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered `what` with an error reply.
    Refused { what: &'static str, reply: Reply },
    /// The connection failed or the server broke the protocol; the connection is unusable.
    Broken(String),
    /// This client would not send `what` on this connection, for `reason` (an address that is
    /// not ASCII to a server without SMTPUTF8). Nothing was sent; the connection stays usable.
    Unsupported { what: &'static str, reason: String },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused { what, reply } => write!(f, "{what}: {}", reply.text()),
            Failure::Broken(m) => f.write_str(m),
            Failure::Unsupported { reason, .. } => f.write_str(reason),
        }
    }
}

/// The longest reply line accepted; RFC 5321 allows 512 bytes.
const MAX_LINE: usize = 4096;
/// The most lines in one reply.
const MAX_LINES: usize = 100;

/// One open SMTP session.
pub struct Connection {
    stream: BufReader<Stream>,
    client_name: String,
    /// The EHLO reply's extension lines, upper-cased (empty after HELO).
    extensions: Vec<String>,
    pipelining: bool,
    smtputf8: bool,
    timeout: Duration,
    /// A message is written up to its final dot.
    open_data: bool,
    broken: bool,
    out: Vec<u8>,
}

impl Connection {
    /// Read the greeting and say EHLO (HELO to a server that does not know EHLO) as
    /// `client_name`, over `stream` (plain, or TLS from the first byte).
    pub async fn greet(
        stream: Stream,
        client_name: &str,
        timeout: Duration,
    ) -> Result<Connection, Failure> {
        let _ = stream.tcp().set_nodelay(true);
        let mut c = Connection {
            stream: BufReader::with_capacity(8192, stream),
            client_name: client_name.to_string(),
            extensions: Vec::new(),
            pipelining: false,
            smtputf8: false,
            timeout,
            open_data: false,
            broken: false,
            out: Vec::with_capacity(16 * 1024),
        };
        let greeting = c.read_reply().await?;
        c.expect("the greeting", &greeting, 220)?;
        c.hello().await?;
        Ok(c)
    }

    /// EHLO, or HELO for an old server; the extensions offered are read anew.
    async fn hello(&mut self) -> Result<(), Failure> {
        self.write(format!("EHLO {}\r\n", self.client_name).as_bytes())
            .await?;
        let ehlo = self.read_reply().await?;
        self.extensions = if ehlo.code == 250 {
            ehlo.lines
                .iter()
                .skip(1)
                .map(|l| l.trim().to_ascii_uppercase())
                .collect()
        } else {
            // An old server: HELO, no extensions.
            self.write(format!("HELO {}\r\n", self.client_name).as_bytes())
                .await?;
            let helo = self.read_reply().await?;
            self.expect("HELO", &helo, 250)?;
            Vec::new()
        };
        self.pipelining = self.offers("PIPELINING");
        self.smtputf8 = self.offers("SMTPUTF8");
        Ok(())
    }

    /// The extensions the server offered in its last EHLO reply, upper-cased, as it wrote them
    /// (`AUTH PLAIN LOGIN`, `SIZE 52428800`).
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// True when the server's last EHLO reply offered `keyword` (`STARTTLS`, `SMTPUTF8`).
    pub fn offers(&self, keyword: &str) -> bool {
        self.extensions.iter().any(|e| {
            e.split([' ', '='])
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
        })
    }

    /// True when the session runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.stream.get_ref().is_tls()
    }

    /// STARTTLS (RFC 3207): the upgrade, the certificate checked by `connector` against
    /// `server_name`, then EHLO again, whose extensions replace the ones offered in clear.
    pub async fn starttls(
        mut self,
        connector: &TlsConnector,
        server_name: ServerName<'static>,
    ) -> Result<Connection, Failure> {
        if self.is_tls() {
            return Err(self.fail("STARTTLS on a connection that is already TLS".into()));
        }
        self.write(b"STARTTLS\r\n").await?;
        let r = self.read_reply().await?;
        self.expect("STARTTLS", &r, 220)?;
        // Anything the server sent after its answer would be read as if it came over TLS:
        // the known STARTTLS injection. A server that does this is not talked to.
        if !self.stream.buffer().is_empty() {
            return Err(self.fail(
                "the server sent more than its answer to STARTTLS before the TLS handshake".into(),
            ));
        }
        let Stream::Plain(tcp) = self.stream.into_inner() else {
            return Err(Failure::Broken(
                "STARTTLS on a connection that is already TLS".into(),
            ));
        };
        let tls =
            match tokio::time::timeout(self.timeout, connector.connect(server_name, tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return Err(Failure::Broken(format!("TLS after STARTTLS: {e}"))),
                Err(_) => {
                    return Err(Failure::Broken(format!(
                        "TLS after STARTTLS: no handshake within {} s",
                        self.timeout.as_secs()
                    )))
                }
            };
        self.stream = BufReader::with_capacity(8192, Stream::Tls(Box::new(tls)));
        self.hello().await?;
        Ok(self)
    }

    /// Log in: with a password by AUTH PLAIN (or LOGIN when the server offers only that), or
    /// by AUTH XOAUTH2.
    pub async fn login(&mut self, login: Login<'_>) -> Result<(), Failure> {
        match login {
            Login::Password { user, password } => self.login_password(user, password).await,
            Login::Xoauth2 { response } => self.login_xoauth2(response).await,
        }
    }

    /// AUTH XOAUTH2 with `response` (base64, see `oauth::xoauth2`) on the AUTH line. A server
    /// that answers `334` with nothing gets the response on the next line; one that answers
    /// `334` with an error (base64 JSON: status, schemes, scope) gets an empty line, as the
    /// mechanism asks, and then says its final word, whose text carries that error.
    async fn login_xoauth2(&mut self, response: &str) -> Result<(), Failure> {
        if !self.auth_mechanisms().iter().any(|m| m == "XOAUTH2") {
            let offered = self
                .extensions
                .iter()
                .find(|e| e.starts_with("AUTH"))
                .map(|e| crate::inert::line(e).into_owned())
                .unwrap_or_else(|| "no AUTH at all".into());
            return Err(Failure::Unsupported {
                what: "AUTH",
                reason: format!("the server does not offer AUTH XOAUTH2 (it offered: {offered})"),
            });
        }
        self.write(format!("AUTH XOAUTH2 {response}\r\n").as_bytes())
            .await?;
        let mut r = self.read_reply().await?;
        if r.code == 334 && r.lines.concat().trim().is_empty() {
            self.write(format!("{response}\r\n").as_bytes()).await?;
            r = self.read_reply().await?;
        }
        if r.code == 334 {
            use base64::Engine as _;
            let said = base64::engine::general_purpose::STANDARD
                .decode(r.lines.concat().trim())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| r.lines.concat());
            self.write(b"\r\n").await?;
            let mut last = self.read_reply().await?;
            if last.code != 235 {
                last.lines
                    .push(format!("({})", crate::inert::line(said.trim())));
            }
            r = last;
        }
        self.expect("AUTH", &r, 235)
    }

    /// The SASL mechanisms of the EHLO reply's AUTH line(s), upper-cased.
    fn auth_mechanisms(&self) -> Vec<String> {
        self.extensions
            .iter()
            .filter_map(|e| e.strip_prefix("AUTH"))
            .flat_map(|m| {
                m.split([' ', '='])
                    .filter(|w| !w.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    async fn login_password(&mut self, user: &str, password: &str) -> Result<(), Failure> {
        let mechanisms = self.auth_mechanisms();
        use base64::Engine as _;
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let has = |m: &str| mechanisms.iter().any(|x| x == m);
        if has("PLAIN") || !has("LOGIN") {
            let token = b64(format!("\0{user}\0{password}").as_bytes());
            self.write(format!("AUTH PLAIN {token}\r\n").as_bytes())
                .await?;
            let r = self.read_reply().await?;
            return self.expect("AUTH", &r, 235);
        }
        self.write(b"AUTH LOGIN\r\n").await?;
        let r = self.read_reply().await?;
        self.expect("AUTH", &r, 334)?;
        self.write(format!("{}\r\n", b64(user.as_bytes())).as_bytes())
            .await?;
        let r = self.read_reply().await?;
        self.expect("AUTH", &r, 334)?;
        self.write(format!("{}\r\n", b64(password.as_bytes())).as_bytes())
            .await?;
        let r = self.read_reply().await?;
        self.expect("AUTH", &r, 235)
    }

    /// Whether an envelope with these addresses needs SMTPUTF8 (an address that is not
    /// ASCII), or the reason it cannot be sent here: the server does not offer it.
    fn needs_smtputf8(&self, from: &str, to: &str) -> Result<bool, Failure> {
        let (what, address) = if !from.is_ascii() {
            ("MAIL FROM", from)
        } else if !to.is_ascii() {
            ("RCPT TO", to)
        } else {
            return Ok(false);
        };
        if self.smtputf8 {
            return Ok(true);
        }
        Err(Failure::Unsupported {
            what,
            reason: format!(
                "the server does not offer SMTPUTF8, needed for the address {address} (not ASCII)"
            ),
        })
    }

    /// True once the connection cannot be used again.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Start a message: envelope, `DATA`, and the message up to (not including) its final dot.
    /// `message` has CRLF line endings. On a refusal the transaction is reset and the
    /// connection stays usable.
    pub async fn begin(&mut self, from: &str, to: &str, message: &[u8]) -> Result<(), Failure> {
        if self.open_data || self.broken {
            return Err(self.fail("a message is already open on this connection".into()));
        }
        let utf8 = self.needs_smtputf8(from, to)?;
        let replies = if self.pipelining {
            self.out.clear();
            push_envelope(&mut self.out, from, to, utf8);
            self.write_out().await?;
            self.read_envelope_replies().await?
        } else {
            let param = if utf8 { " SMTPUTF8" } else { "" };
            let mail = format!("MAIL FROM:<{from}>{param}\r\n");
            let rcpt = format!("RCPT TO:<{to}>\r\n");
            let mut replies = Vec::with_capacity(3);
            for cmd in [mail.as_bytes(), rcpt.as_bytes(), b"DATA\r\n".as_slice()] {
                self.write(cmd).await?;
                let r = self.read_reply().await?;
                let ok = r.is_positive();
                replies.push(r);
                if !ok {
                    break;
                }
            }
            replies
        };
        self.write_message(replies, message).await
    }

    /// The replies to a pipelined `MAIL FROM`, `RCPT TO` and `DATA`.
    async fn read_envelope_replies(&mut self) -> Result<Vec<Reply>, Failure> {
        let mut replies = Vec::with_capacity(3);
        for _ in 0..3 {
            match self.read_reply().await {
                Ok(r) => replies.push(r),
                // A server may close after refusing: its refusal is the news.
                Err(e) => match first_refusal(&replies) {
                    Some(refused) => return Err(refused),
                    None => return Err(e),
                },
            }
        }
        Ok(replies)
    }

    /// After the envelope's replies: the message without its final dot when all were positive,
    /// otherwise the refusal (the transaction reset).
    async fn write_message(
        &mut self,
        mut replies: Vec<Reply>,
        message: &[u8],
    ) -> Result<(), Failure> {
        let data_ok = replies.get(2).is_some_and(|r| r.code == 354);
        // After a refusal the refusal is the news: if the connection fails while the
        // transaction is being reset, it is only marked broken (and opened anew next time).
        if let Some(refused) = first_refusal(&replies) {
            if data_ok {
                // A server that let DATA through after a refusal: end the empty message.
                if self.write(b".\r\n").await.is_ok() {
                    let _ = self.read_reply().await;
                }
            }
            self.reset().await;
            return Err(refused);
        }
        if !data_ok {
            let Some(reply) = replies.pop() else {
                return Err(self.fail("the server did not answer DATA".into()));
            };
            self.reset().await;
            return Err(Failure::Refused {
                what: "DATA",
                reply,
            });
        }
        self.out.clear();
        dot_stuff(message, &mut self.out);
        self.write_out().await?;
        self.open_data = true;
        Ok(())
    }

    /// Send the final dot of the message `begin` wrote and read the server's verdict.
    pub async fn finish(&mut self) -> Result<Reply, Failure> {
        if !self.open_data {
            return Err(self.fail("no message is open on this connection".into()));
        }
        self.open_data = false;
        self.write(b".\r\n").await?;
        self.read_verdict().await
    }

    /// [`Connection::finish`] and then [`Connection::begin`] of the next message, in one round
    /// trip when the server offers PIPELINING: the final dot and the next envelope go in one
    /// write (RFC 2920 lets message content open a command group), and the verdict is read
    /// before the envelope's replies. Returns the verdict and the outcome of the begin; when the
    /// verdict is a lost connection, so is the begin (nothing of the next message was sent).
    pub async fn finish_and_begin(
        &mut self,
        from: &str,
        to: &str,
        message: &[u8],
    ) -> (Result<Reply, Failure>, Result<(), Failure>) {
        if !self.pipelining {
            let verdict = self.finish().await;
            let begun = if self.broken {
                Err(Failure::Broken("the connection was lost".into()))
            } else {
                self.begin(from, to, message).await
            };
            return (verdict, begun);
        }
        if !self.open_data {
            let f = self.fail("no message is open on this connection".into());
            return (Err(f.clone()), Err(f));
        }
        let utf8 = match self.needs_smtputf8(from, to) {
            Ok(utf8) => utf8,
            // The next message cannot go on this connection: end this one on its own.
            Err(unsupported) => return (self.finish().await, Err(unsupported)),
        };
        self.open_data = false;
        self.out.clear();
        self.out.extend_from_slice(b".\r\n");
        push_envelope(&mut self.out, from, to, utf8);
        if let Err(e) = self.write_out().await {
            return (Err(e.clone()), Err(e));
        }
        let verdict = self.read_verdict().await;
        if self.broken {
            let lost = Failure::Broken("the connection was lost before the next message".into());
            return (verdict, Err(lost));
        }
        let begun = match self.read_envelope_replies().await {
            Ok(replies) => self.write_message(replies, message).await,
            Err(e) => Err(e),
        };
        (verdict, begun)
    }

    /// The reply to a final dot.
    async fn read_verdict(&mut self) -> Result<Reply, Failure> {
        let r = self.read_reply().await?;
        if r.code == 250 {
            Ok(r)
        } else {
            if r.code == 421 {
                self.broken = true;
            }
            Err(Failure::Refused {
                what: "the message",
                reply: r,
            })
        }
    }

    /// Say QUIT (best effort).
    pub async fn quit(mut self) {
        // A message without its final dot is not ended: closing makes the server drop it.
        if !self.broken && !self.open_data && self.write(b"QUIT\r\n").await.is_ok() {
            let _ = self.read_reply().await;
        }
        let _ = self.stream.get_mut().shutdown().await;
    }

    /// RSET; a connection that does not answer it with 250 is not used again.
    async fn reset(&mut self) {
        if self.broken || self.write(b"RSET\r\n").await.is_err() {
            return;
        }
        match self.read_reply().await {
            Ok(r) if r.code == 250 => {}
            _ => self.broken = true,
        }
    }

    fn expect(&mut self, what: &'static str, r: &Reply, code: u16) -> Result<(), Failure> {
        if r.code == code {
            Ok(())
        } else {
            self.broken = true;
            Err(Failure::Refused {
                what,
                reply: r.clone(),
            })
        }
    }

    fn fail(&mut self, message: String) -> Failure {
        self.broken = true;
        Failure::Broken(message)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let stream = self.stream.get_mut();
        // TLS keeps what it encrypted until flushed; for TCP the flush does nothing.
        let written = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        let result = tokio::time::timeout(self.timeout, written).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.fail(format!("connection lost while writing: {e}"))),
            Err(_) => Err(self.fail(format!(
                "the server took more than {} s to take the data",
                self.timeout.as_secs()
            ))),
        }
    }

    /// Write what was gathered in the output buffer, keeping the buffer for the next message.
    async fn write_out(&mut self) -> Result<(), Failure> {
        let out = std::mem::take(&mut self.out);
        let written = self.write(&out).await;
        self.out = out;
        written
    }

    /// Read one reply, which may have several lines (`250-…` then `250 …`).
    async fn read_reply(&mut self) -> Result<Reply, Failure> {
        match tokio::time::timeout(self.timeout, read_reply(&mut self.stream)).await {
            Ok(Ok(r)) => {
                if r.code == 421 {
                    self.broken = true;
                }
                Ok(r)
            }
            Ok(Err(m)) => Err(self.fail(m)),
            Err(_) => Err(self.fail(format!("no answer within {} s", self.timeout.as_secs()))),
        }
    }
}

fn push_envelope(out: &mut Vec<u8>, from: &str, to: &str, smtputf8: bool) {
    let param = if smtputf8 { " SMTPUTF8" } else { "" };
    for part in [
        "MAIL FROM:<",
        from,
        ">",
        param,
        "\r\nRCPT TO:<",
        to,
        ">\r\nDATA\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
}

fn first_refusal(replies: &[Reply]) -> Option<Failure> {
    const WHAT: [&str; 3] = ["MAIL FROM", "RCPT TO", "DATA"];
    replies
        .iter()
        .enumerate()
        .take(2)
        .find(|(_, r)| !r.is_positive())
        .map(|(i, r)| Failure::Refused {
            what: WHAT[i],
            reply: r.clone(),
        })
}

async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<Reply, String> {
    let mut lines = Vec::new();
    let mut code = 0u16;
    let mut raw = Vec::with_capacity(128);
    loop {
        raw.clear();
        let n = (&mut *r)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut raw)
            .await
            .map_err(|e| format!("connection lost while reading: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        if !raw.ends_with(b"\n") {
            return Err("the server sent a reply line that is too long".into());
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        let bytes = line.as_bytes();
        let this_code = line
            .get(..3)
            .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (200..600).contains(c))
            .ok_or_else(|| format!("the server sent a malformed reply: {line:?}"))?;
        if code != 0 && this_code != code {
            return Err(format!(
                "the server changed the reply code within one reply: {line:?}"
            ));
        }
        code = this_code;
        lines.push(line.get(4..).unwrap_or("").to_string());
        if lines.len() > MAX_LINES {
            return Err("the server sent a reply with too many lines".into());
        }
        if bytes.get(3) != Some(&b'-') {
            return Ok(Reply { code, lines });
        }
    }
}

/// Append `message` with every line that starts with `.` given another `.` (RFC 5321 4.5.2), a
/// line ending added when the message lacks one at its end.
pub fn dot_stuff(message: &[u8], out: &mut Vec<u8>) {
    out.reserve(message.len() + 16);
    if message.first() == Some(&b'.') {
        out.push(b'.');
    }
    let mut rest = message;
    while let Some(i) = memchr::memmem::find(rest, b"\n.") {
        out.extend_from_slice(&rest[..=i]);
        out.push(b'.');
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    if !message.is_empty() && !message.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio::net::TcpStream;

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_ends_the_last_line() {
        let mut out = Vec::new();
        dot_stuff(b".hidden\r\nok\r\n..two\r\nlast", &mut out);
        assert_eq!(out, b"..hidden\r\nok\r\n...two\r\nlast\r\n");
        let mut out = Vec::new();
        dot_stuff(b"a\r\n.\r\n", &mut out);
        assert_eq!(out, b"a\r\n..\r\n");
    }

    #[tokio::test]
    async fn multi_line_replies_are_read_whole_and_bad_ones_refused() {
        let mut input: &[u8] = b"250-first\r\n250-PIPELINING\r\n250 last\r\n550 5.1.1 no\r\n";
        let r = read_reply(&mut input).await.unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, ["first", "PIPELINING", "last"]);
        let r = read_reply(&mut input).await.unwrap();
        assert_eq!(r.text(), "550 5.1.1 no");
        let mut bad: &[u8] = b"hello\r\n";
        assert!(read_reply(&mut bad)
            .await
            .unwrap_err()
            .contains("malformed"));
        let mut mixed: &[u8] = b"250-a\r\n550 b\r\n";
        assert!(read_reply(&mut mixed).await.is_err());
        let mut cut: &[u8] = b"250-a\r\n";
        assert!(read_reply(&mut cut).await.unwrap_err().contains("closed"));
    }

    /// A scripted server: for each `(expect, reply)`, read lines until one starts with
    /// `expect` (all lines read are returned), then write `reply` (if not empty).
    async fn scripted(
        script: Vec<(&'static str, &'static str)>,
    ) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut sock = BufReader::new(sock);
            sock.get_mut()
                .write_all(b"220 fake ESMTP\r\n")
                .await
                .unwrap();
            let mut seen = Vec::new();
            for (expect, reply) in script {
                loop {
                    let mut line = String::new();
                    if sock.read_line(&mut line).await.unwrap() == 0 {
                        return seen;
                    }
                    let line = line.trim_end_matches(['\r', '\n']).to_string();
                    let done = line.starts_with(expect);
                    seen.push(line);
                    if done {
                        break;
                    }
                }
                if !reply.is_empty() {
                    sock.get_mut().write_all(reply.as_bytes()).await.unwrap();
                }
            }
            seen
        });
        (port, task)
    }

    trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

    /// [`scripted`] that also speaks STARTTLS: after writing the reply to a `STARTTLS` step
    /// it does the TLS handshake under a certificate for 127.0.0.1, whose PEM is returned.
    /// Lines read after the upgrade are returned prefixed with `tls: `.
    async fn scripted_starttls(
        script: Vec<(&'static str, &'static str)>,
    ) -> (u16, String, tokio::task::JoinHandle<Vec<String>>) {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let cert_pem = cert.cert.pem();
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(cert.key_pair.serialize_pem().as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut sock: BufReader<Box<dyn Io>> = BufReader::new(Box::new(sock));
            sock.get_mut()
                .write_all(b"220 fake ESMTP\r\n")
                .await
                .unwrap();
            let mut seen = Vec::new();
            let mut tls = false;
            for (expect, reply) in script {
                loop {
                    let mut line = String::new();
                    if sock.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return seen;
                    }
                    let line = line.trim_end_matches(['\r', '\n']).to_string();
                    let done = line.starts_with(expect);
                    seen.push(if tls { format!("tls: {line}") } else { line });
                    if done {
                        break;
                    }
                }
                if !reply.is_empty() {
                    sock.get_mut().write_all(reply.as_bytes()).await.unwrap();
                }
                if expect == "STARTTLS" && reply.starts_with("220") && !tls {
                    let plain = sock.into_inner();
                    let Ok(upgraded) = acceptor.accept(plain).await else {
                        return seen;
                    };
                    sock = BufReader::new(Box::new(upgraded));
                    tls = true;
                }
            }
            seen
        });
        (port, cert_pem, task)
    }

    fn connector_trusting(pem: &str) -> TlsConnector {
        let config = crate::net::client_config(Some(pem.as_bytes())).unwrap();
        TlsConnector::from(std::sync::Arc::new(config))
    }

    fn loopback() -> ServerName<'static> {
        ServerName::try_from("127.0.0.1".to_string()).unwrap()
    }

    #[tokio::test]
    async fn starttls_reads_the_extensions_again_and_pipelines_over_tls() {
        // In clear the server offers only STARTTLS; over TLS, PIPELINING and AUTH. Over TLS it
        // answers only once it has read the next `DATA`: one round trip per message there too.
        let (port, cert, server) = scripted_starttls(vec![
            ("EHLO", "250-fake\r\n250 STARTTLS\r\n"),
            ("STARTTLS", "220 2.0.0 go ahead\r\n"),
            (
                "EHLO",
                "250-fake\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n",
            ),
            ("AUTH PLAIN", "235 2.7.0 ok\r\n"),
            ("DATA", "250 ok\r\n250 ok\r\n354 go on\r\n"),
            (
                "DATA",
                "250 2.0.0 queued as A\r\n250 ok\r\n250 ok\r\n354 go on\r\n",
            ),
            (".", "250 2.0.0 queued as B\r\n"),
            ("QUIT", "221 bye\r\n"),
        ])
        .await;
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let c = Connection::greet(Stream::Plain(tcp), "client.example", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(!c.is_tls() && c.offers("STARTTLS") && !c.offers("AUTH"));
        assert!(!c.pipelining);
        let mut c = c
            .starttls(&connector_trusting(&cert), loopback())
            .await
            .unwrap();
        assert!(c.is_tls() && !c.offers("STARTTLS") && c.offers("AUTH"));
        assert!(c.pipelining);
        c.login(Login::Password {
            user: "moped",
            password: "s3cret",
        })
        .await
        .unwrap();
        c.begin("b@example.org", "ann@example.org", b"hi")
            .await
            .unwrap();
        let (verdict, begun) = c
            .finish_and_begin("b@example.org", "bo@example.org", b"yo")
            .await;
        assert_eq!(verdict.unwrap().text(), "250 2.0.0 queued as A");
        begun.unwrap();
        assert_eq!(c.finish().await.unwrap().text(), "250 2.0.0 queued as B");
        c.quit().await;
        let seen = server.await.unwrap();
        assert_eq!(seen[..2], ["EHLO client.example", "STARTTLS"]);
        assert_eq!(seen[2], "tls: EHLO client.example");
        assert!(seen[3].starts_with("tls: AUTH PLAIN "), "{seen:?}");
        let at = seen.iter().position(|l| l == "tls: hi").unwrap();
        assert_eq!(
            seen[at + 1..at + 5],
            [
                "tls: .",
                "tls: MAIL FROM:<b@example.org>",
                "tls: RCPT TO:<bo@example.org>",
                "tls: DATA"
            ]
        );
    }

    #[tokio::test]
    async fn starttls_refuses_a_server_that_answers_more_than_it_was_asked() {
        // Bytes after the 220 would be read as if they had come over TLS (command injection).
        let (port, cert, server) = scripted_starttls(vec![
            ("EHLO", "250-fake\r\n250 STARTTLS\r\n"),
            (
                "STARTTLS",
                "220 2.0.0 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n",
            ),
        ])
        .await;
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let c = Connection::greet(Stream::Plain(tcp), "client.example", Duration::from_secs(5))
            .await
            .unwrap();
        // Let both lines arrive, so they are read into the buffer with the 220.
        tokio::time::sleep(Duration::from_millis(50)).await;
        match c.starttls(&connector_trusting(&cert), loopback()).await {
            Err(Failure::Broken(m)) => assert!(m.contains("more than its answer"), "{m}"),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("upgraded a connection with injected bytes"),
        }
        server.abort();
    }

    #[tokio::test]
    async fn an_address_that_is_not_ascii_goes_only_with_smtputf8() {
        // Without SMTPUTF8: refused here, nothing sent, the connection usable; the message
        // before it is ended on its own.
        let (port, server) = scripted(vec![
            ("EHLO", "250-fake\r\n250 PIPELINING\r\n"),
            ("DATA", "250 ok\r\n250 ok\r\n354 go on\r\n"),
            (".", "250 2.0.0 queued\r\n"),
            ("QUIT", "221 bye\r\n"),
        ])
        .await;
        let mut c = connect(port, None).await;
        let e = c
            .begin("b@example.org", "josé@example.org", b"x")
            .await
            .unwrap_err();
        assert!(
            matches!(e, Failure::Unsupported { what: "RCPT TO", ref reason }
                if reason.contains("SMTPUTF8") && reason.contains("josé@example.org")),
            "{e:?}"
        );
        assert!(!c.is_broken());
        c.begin("b@example.org", "ann@example.org", b"hi")
            .await
            .unwrap();
        let (verdict, begun) = c
            .finish_and_begin("b@example.org", "zoë@example.org", b"yo")
            .await;
        assert_eq!(verdict.unwrap().code, 250);
        assert!(
            matches!(begun, Err(Failure::Unsupported { .. })),
            "{begun:?}"
        );
        c.quit().await;
        let seen = server.await.unwrap();
        assert!(!seen.iter().any(|l| !l.is_ascii()), "{seen:?}");
        assert_eq!(seen.iter().filter(|l| l.starts_with("MAIL")).count(), 1);

        // With SMTPUTF8: `MAIL FROM:<…> SMTPUTF8`, for that message only.
        let (port, server) = scripted(vec![
            ("EHLO", "250-fake\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n"),
            ("DATA", "250 ok\r\n250 ok\r\n354 go on\r\n"),
            (
                "DATA",
                "250 2.0.0 queued\r\n250 ok\r\n250 ok\r\n354 go on\r\n",
            ),
            (".", "250 2.0.0 queued\r\n"),
            ("QUIT", "221 bye\r\n"),
        ])
        .await;
        let mut c = connect(port, None).await;
        c.begin("b@example.org", "josé@example.org", b"x")
            .await
            .unwrap();
        let (verdict, begun) = c
            .finish_and_begin("b@example.org", "ann@example.org", b"y")
            .await;
        verdict.unwrap();
        begun.unwrap();
        c.finish().await.unwrap();
        c.quit().await;
        let mails: Vec<String> = server
            .await
            .unwrap()
            .into_iter()
            .filter(|l| l.starts_with("MAIL"))
            .collect();
        assert_eq!(
            mails,
            [
                "MAIL FROM:<b@example.org> SMTPUTF8",
                "MAIL FROM:<b@example.org>"
            ]
        );
    }

    async fn connect(port: u16, login: Option<(&str, &str)>) -> Connection {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut c = Connection::greet(Stream::Plain(tcp), "client.example", Duration::from_secs(5))
            .await
            .unwrap();
        if let Some((user, password)) = login {
            c.login(Login::Password { user, password }).await.unwrap();
        }
        c
    }

    #[tokio::test]
    async fn xoauth2_sends_the_response_on_the_auth_line_or_after_an_empty_challenge() {
        let xoauth2 = Login::Xoauth2 {
            response: "dXNlcj1t",
        };
        // On the AUTH line.
        let (port, server) = scripted(vec![
            ("EHLO", "250-fake\r\n250 AUTH LOGIN XOAUTH2\r\n"),
            ("AUTH XOAUTH2", "235 2.7.0 Authentication successful\r\n"),
            ("QUIT", "221 bye\r\n"),
        ])
        .await;
        let mut c = connect(port, None).await;
        c.login(xoauth2).await.unwrap();
        c.quit().await;
        assert_eq!(server.await.unwrap()[1], "AUTH XOAUTH2 dXNlcj1t");
        // A server that asks again with an empty 334 gets it on the next line.
        let (port, server) = scripted(vec![
            ("EHLO", "250-fake\r\n250 AUTH XOAUTH2\r\n"),
            ("AUTH XOAUTH2", "334 \r\n"),
            ("dXNl", "235 2.7.0 ok\r\n"),
            ("QUIT", "221 bye\r\n"),
        ])
        .await;
        let mut c = connect(port, None).await;
        c.login(xoauth2).await.unwrap();
        c.quit().await;
        assert_eq!(server.await.unwrap()[2], "dXNlcj1t");
    }

    #[tokio::test]
    async fn a_refused_xoauth2_token_is_answered_with_an_empty_line_and_reported() {
        // Exchange's way: 334 and a base64 JSON error, then 535 after the client's empty line.
        let (port, server) = scripted(vec![
            ("EHLO", "250-fake\r\n250 AUTH XOAUTH2\r\n"),
            (
                "AUTH XOAUTH2",
                "334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n",
            ),
            ("", "535 5.7.3 Authentication unsuccessful\r\n"),
        ])
        .await;
        let mut c = connect(port, None).await;
        match c.login(Login::Xoauth2 { response: "dXNl" }).await {
            Err(Failure::Refused { what, reply }) => {
                assert_eq!((what, reply.code), ("AUTH", 535));
                let text = reply.text();
                assert!(text.contains("5.7.3") && text.contains("\"401\""), "{text}");
            }
            other => panic!("{other:?}"),
        }
        drop(c);
        assert_eq!(server.await.unwrap()[2], "");

        // A server without XOAUTH2: refused here, nothing sent.
        let (port, server) = scripted(vec![
            ("EHLO", "250-fake\r\n250 AUTH PLAIN LOGIN\r\n"),
            ("QUIT", "221 bye\r\n"),
        ])
        .await;
        let mut c = connect(port, None).await;
        let e = c
            .login(Login::Xoauth2 { response: "dXNl" })
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Failure::Unsupported { what: "AUTH", reason } if reason.contains("AUTH PLAIN LOGIN")),
            "{e:?}"
        );
        c.quit().await;
        let seen = server.await.unwrap();
        assert!(!seen.iter().any(|l| l.starts_with("AUTH")), "{seen:?}");
    }

    #[tokio::test]
    async fn the_final_dot_and_the_next_envelope_go_in_one_round_trip() {
        // The server answers only once it has read the next `DATA`: a client that waited for
        // the dot's reply before sending the next envelope would hang here.
        let (port, server) = scripted(vec![
            ("EHLO", "250-fake\r\n250 PIPELINING\r\n"),
            ("DATA", "250 ok\r\n250 ok\r\n354 go on\r\n"),
            (
                "DATA",
                "250 2.0.0 queued as A\r\n250 ok\r\n250 ok\r\n354 go on\r\n",
            ),
            (".", "550 5.7.1 not this one\r\n"),
            ("QUIT", "221 bye\r\n"),
        ])
        .await;
        let mut c = connect(port, None).await;
        c.begin(
            "b@example.org",
            "ann@example.org",
            b"Subject: one\r\n\r\nhi",
        )
        .await
        .unwrap();
        let (verdict, begun) = c
            .finish_and_begin("b@example.org", "bo@example.org", b"Subject: two\r\n\r\nyo")
            .await;
        assert_eq!(verdict.unwrap().text(), "250 2.0.0 queued as A");
        begun.unwrap();
        match c.finish().await {
            Err(Failure::Refused { what, reply }) => {
                assert_eq!((what, reply.code), ("the message", 550));
            }
            other => panic!("{other:?}"),
        }
        assert!(!c.is_broken());
        c.quit().await;
        let seen = server.await.unwrap();
        let at = seen.iter().position(|l| l == "hi").unwrap();
        assert_eq!(
            seen[at + 1..at + 5],
            [
                ".",
                "MAIL FROM:<b@example.org>",
                "RCPT TO:<bo@example.org>",
                "DATA"
            ]
        );
        assert_eq!(seen[at + 5..at + 9], ["Subject: two", "", "yo", "."]);
    }

    #[tokio::test]
    async fn a_refused_message_and_a_refused_next_recipient_are_told_apart() {
        let (port, server) = scripted(vec![
            ("EHLO", "250-fake\r\n250 PIPELINING\r\n"),
            ("DATA", "250 ok\r\n250 ok\r\n354 go on\r\n"),
            (
                "DATA",
                "451 4.3.0 try later\r\n250 ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no valid recipients\r\n",
            ),
            ("RSET", "250 ok\r\n"),
            ("QUIT", "221 bye\r\n"),
        ])
        .await;
        let mut c = connect(port, None).await;
        c.begin("b@example.org", "ann@example.org", b"hi")
            .await
            .unwrap();
        let (verdict, begun) = c
            .finish_and_begin("b@example.org", "gone@example.org", b"yo")
            .await;
        match (verdict, begun) {
            (
                Err(Failure::Refused {
                    what: w1,
                    reply: r1,
                }),
                Err(Failure::Refused {
                    what: w2,
                    reply: r2,
                }),
            ) => {
                assert_eq!((w1, r1.code), ("the message", 451));
                assert_eq!((w2, r2.code), ("RCPT TO", 550));
            }
            other => panic!("{other:?}"),
        }
        // Reset, and usable for the next message.
        assert!(!c.is_broken());
        c.quit().await;
        let seen = server.await.unwrap();
        assert!(seen.iter().any(|l| l == "RSET"), "{seen:?}");
    }

    #[tokio::test]
    async fn a_connection_lost_at_the_verdict_loses_the_next_message_too() {
        // The server reads the dot and the next envelope, then closes without a word.
        let (port, server) = scripted(vec![
            ("EHLO", "250-fake\r\n250 PIPELINING\r\n"),
            ("DATA", "250 ok\r\n250 ok\r\n354 go on\r\n"),
            ("DATA", ""),
        ])
        .await;
        let mut c = connect(port, None).await;
        c.begin("b@example.org", "ann@example.org", b"hi")
            .await
            .unwrap();
        let (verdict, begun) = c
            .finish_and_begin("b@example.org", "bo@example.org", b"yo")
            .await;
        server.await.unwrap();
        assert!(matches!(verdict, Err(Failure::Broken(_))), "{verdict:?}");
        assert!(matches!(begun, Err(Failure::Broken(_))), "{begun:?}");
        assert!(c.is_broken());
    }

    #[tokio::test]
    async fn logs_in_pipelines_the_envelope_and_holds_the_dot_until_finish() {
        let (port, server) = scripted(vec![
            (
                "EHLO",
                "250-fake\r\n250-PIPELINING\r\n250 AUTH LOGIN PLAIN\r\n",
            ),
            ("AUTH PLAIN", "235 2.7.0 ok\r\n"),
            ("DATA", "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go on\r\n"),
            (".", "250 2.0.0 queued\r\n"),
            ("QUIT", "221 bye\r\n"),
        ])
        .await;
        let mut c = connect(port, Some(("moped", "s3cret"))).await;
        assert!(c.pipelining);
        c.begin(
            "bounces+t@example.org",
            "ann@example.org",
            b"Subject: x\r\n\r\n.dot\r\nend",
        )
        .await
        .unwrap();
        let reply = c.finish().await.unwrap();
        assert_eq!(reply.code, 250);
        c.quit().await;
        let seen = server.await.unwrap();
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode("\0moped\0s3cret");
        assert_eq!(seen[1], format!("AUTH PLAIN {token}"));
        assert_eq!(
            seen[2..5],
            [
                "MAIL FROM:<bounces+t@example.org>",
                "RCPT TO:<ann@example.org>",
                "DATA"
            ]
        );
        // The message, dot-stuffed, then one final dot (written by `finish`), then QUIT.
        assert_eq!(seen[5..], ["Subject: x", "", "..dot", "end", ".", "QUIT"]);
    }

    #[tokio::test]
    async fn a_refused_recipient_in_a_pipelined_group_leaves_the_connection_usable() {
        let (port, server) = scripted(vec![
            ("EHLO", "250-fake\r\n250 PIPELINING\r\n"),
            (
                "DATA",
                "250 ok\r\n550 5.1.1 <gone@example.org>: User unknown\r\n554 5.5.1 no valid recipients\r\n",
            ),
            ("RSET", "250 ok\r\n"),
            ("DATA", "250 ok\r\n250 ok\r\n354 go on\r\n"),
            (".", "451 4.3.0 try again in 5 seconds\r\n"),
        ])
        .await;
        let mut c = connect(port, None).await;
        let e = c
            .begin("b@example.org", "gone@example.org", b"x")
            .await
            .unwrap_err();
        assert_eq!(
            e,
            Failure::Refused {
                what: "RCPT TO",
                reply: Reply {
                    code: 550,
                    lines: vec!["5.1.1 <gone@example.org>: User unknown".into()]
                }
            }
        );
        assert!(!c.is_broken());
        c.begin("b@example.org", "ann@example.org", b"x")
            .await
            .unwrap();
        let e = c.finish().await.unwrap_err();
        assert!(e.to_string().contains("451 4.3.0 try again"), "{e}");
        assert!(!c.is_broken());
        drop(c);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_server_that_closes_after_a_refusal_reports_the_refusal() {
        let (port, server) = scripted(vec![
            ("EHLO", "250-fake\r\n250 PIPELINING\r\n"),
            ("MAIL", "421 4.7.0 too many connections, closing\r\n"),
        ])
        .await;
        let mut c = connect(port, None).await;
        let e = c
            .begin("b@example.org", "ann@example.org", b"x")
            .await
            .unwrap_err();
        assert!(
            matches!(e, Failure::Refused { what: "MAIL FROM", ref reply } if reply.code == 421),
            "{e}"
        );
        assert!(c.is_broken());
        server.await.unwrap();
    }
}
