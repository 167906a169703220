//! IMAP access to a bounce mailbox: parse an `imaps://user@host/Mailbox` URL, connect (implicit
//! TLS, STARTTLS, or plain TCP only when the URL says `?tls=none`), log in, read every message
//! without marking it `\Seen`, and move handled messages to another folder.
//!
//! It signs in either with `LOGIN` and a password ([`ImapMailbox::open`]) or with SASL
//! `AUTHENTICATE XOAUTH2` and an OAuth 2.0 access token ([`ImapMailbox::open_xoauth2`]: the
//! initial response `user=<user>\x01auth=Bearer <token>\x01\x01` in base64, on the command line
//! when the server offers `SASL-IR`, else after the server's continuation; sent only to a server
//! that offers `AUTH=XOAUTH2`). Exchange Online accepts only the latter.
//!
//! The password or token goes only over TLS: `imap://` asks the server's capabilities before
//! anything else, upgrades with STARTTLS when offered and refuses (before signing in) when not,
//! unless `?tls=none` was written, in which case it goes in clear with a warning.
//!
//! This module owns the network conversation only. It does not parse or classify the messages it
//! fetches (that is `bounce`'s job), decide which messages are handled (the caller's), or read the
//! password from the environment or obtain a token (the caller passes them in). It must never put
//! the password or token in an error, a log line or a `Display`/`Debug` output.
//!
//! Commands go through async-imap's typed calls where those report a NO, BAD or BYE as an error
//! (`login`, `authenticate`, `select`, `uid_mv`, `uid_copy`, `create`, `subscribe`, `logout`),
//! and through [`ImapMailbox`]'s own `exchange` where the typed call would take a failure for an
//! empty answer (UID SEARCH, UID FETCH, UID STORE, EXPUNGE, LIST; why is written on `exchange`).
//!
//! TLS is rustls with the `ring` provider and the Mozilla roots from `webpki-roots`, the same
//! rustls the SMTP transport uses. After any error the session may be out of step with the
//! server: drop the [`ImapMailbox`] and open a new one.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_imap::imap_proto::{AttributeValue, MailboxDatum, Outcome, Response, Status};
use async_imap::types::UnsolicitedResponse;
use async_imap::{Client, Session};
use base64::Engine as _;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use tokio::net::TcpStream;

use crate::net::Stream;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

/// Default port for IMAP over implicit TLS (`imaps://`).
pub const IMAPS_PORT: u16 = 993;
/// Default port for plain IMAP and STARTTLS (`imap://`).
pub const IMAP_PORT: u16 = 143;

/// How long to wait for the TCP connection, and then for each server response, before giving up.
const TIMEOUT: Duration = Duration::from_secs(60);
/// UID ranges per command, so that command lines stay short for any server.
const RANGES_PER_COMMAND: usize = 200;
/// Bytes of message bodies to ask for in one `UID FETCH` (a single larger message still goes alone).
const BYTES_PER_FETCH: u64 = 16 * 1024 * 1024;

/// Characters escaped in the user part of a displayed URL.
const USER_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b']');
/// Characters escaped in the mailbox part of a displayed URL (`/` stays: it is hierarchy).
const MAILBOX_ESCAPE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'?');

/// How the session is protected, as the URL says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImapTls {
    /// `imaps://`: TLS from the first byte.
    Implicit,
    /// `imap://…?tls=starttls`: STARTTLS, or fail.
    StartTls,
    /// `imap://`: STARTTLS when offered; refused before LOGIN when not.
    Auto,
    /// `imap://…?tls=none`: plain text, the password in clear (with a warning).
    None,
}

/// A parsed IMAP mailbox URL: `imaps://user@host[:port]/Mailbox` (implicit TLS, port 993),
/// `imap://user@host[:port]/Mailbox` (STARTTLS, port 143; `?tls=starttls` says so explicitly),
/// or `imap://user@host[:port]/Mailbox?tls=none` (plain TCP, the password in clear).
///
/// The password is never part of the URL; it is passed to [`ImapMailbox::open`] separately.
/// `Display` gives the URL back (without a password, since there is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapUrl {
    /// Server host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Implicit TLS, STARTTLS (required, or when offered), or plain text.
    pub tls: ImapTls,
    /// Login name, percent-decoded (`bounces%40example.org` becomes `bounces@example.org`).
    pub user: String,
    /// Mailbox to read, percent-decoded; `INBOX` when the URL has no path.
    pub mailbox: String,
}

impl ImapUrl {
    /// Parse an `imaps://` or `imap://` URL. Errors say what is wrong and how to write it; they
    /// never repeat a password, even when one was (wrongly) put in the URL.
    ///
    /// The URL is read by the `url` crate. `imap` and `imaps` are not schemes it knows, so the
    /// host is kept as written (no lower-casing, no IDNA: international names must be written in
    /// their `xn--` form), and an explicit port is kept even when it is the default. Two things
    /// it does that a mailbox name never needs: `.` and `..` path segments are resolved (also when
    /// written `%2E`), and tabs and line breaks are dropped, which is why control characters are
    /// refused before it sees the text.
    pub fn parse(s: &str) -> Result<ImapUrl, String> {
        const SHAPE: &str = "expected imaps://USER@HOST[:PORT]/MAILBOX";
        let s = s.trim();
        if s.chars().any(char::is_control) {
            return Err("IMAP URL contains control characters".to_string());
        }
        // `url` drops an empty `USER@` without a trace, except for this report: it tells
        // `imaps://@host` (an empty user name) from `imaps://host` (none at all).
        let has_at = std::cell::Cell::new(false);
        let note = |v: url::SyntaxViolation| {
            if v == url::SyntaxViolation::EmbeddedCredentials {
                has_at.set(true);
            }
        };
        let url = url::Url::options()
            .syntax_violation_callback(Some(&note))
            .parse(s)
            .map_err(|e| match e {
                url::ParseError::EmptyHost => format!("IMAP URL has no host: {SHAPE}"),
                url::ParseError::InvalidPort => {
                    "IMAP URL port is not a port number (1 to 65535)".to_string()
                }
                url::ParseError::InvalidIpv6Address => {
                    "IMAP URL host is not a valid IPv6 address (write it in brackets: [::1])"
                        .to_string()
                }
                url::ParseError::InvalidDomainCharacter
                | url::ParseError::InvalidIpv4Address
                | url::ParseError::IdnaError => "IMAP URL host is not a valid host name (write \
                                                 international names in their xn-- form)"
                    .to_string(),
                _ => format!("not an IMAP URL: {SHAPE}"),
            })?;
        if !url.has_authority() {
            // `mailto:x`, `imaps:host`, `localhost:993`: no `//HOST` part.
            return Err(format!("not an IMAP URL: {SHAPE}"));
        }
        let implicit_tls = match url.scheme() {
            "imaps" => true,
            "imap" => false,
            other => {
                return Err(format!(
                    "unsupported scheme `{other}://` in IMAP URL: use imaps:// (TLS) or imap:// \
                     (STARTTLS, or plain text with ?tls=none)"
                ))
            }
        };
        if url.fragment().is_some() {
            return Err("an IMAP URL cannot have a #fragment".to_string());
        }
        if url.password().is_some() {
            return Err(
                "IMAP URL contains a password: remove it from the URL and pass it in \
                        NOTIFY_IMAP_PASSWORD instead"
                    .to_string(),
            );
        }
        let user = decode("user name", url.username())?;
        if user.is_empty() {
            return Err(if has_at.get() {
                format!("IMAP URL has an empty user name: {SHAPE}")
            } else {
                format!("IMAP URL has no user name: {SHAPE}")
            });
        }
        if user.chars().any(char::is_control) {
            return Err("IMAP user name contains control characters".to_string());
        }

        let mut tls = if implicit_tls {
            ImapTls::Implicit
        } else {
            ImapTls::Auto
        };
        for pair in url
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let lower = pair.to_ascii_lowercase();
            match lower.as_str() {
                "tls=starttls" | "tls=none" if implicit_tls => {
                    return Err(format!(
                        "?{lower} goes with imap://, not imaps:// (which is already TLS from the \
                         first byte)"
                    ))
                }
                "tls=starttls" => tls = ImapTls::StartTls,
                "tls=none" => tls = ImapTls::None,
                _ => {
                    return Err(format!(
                        "unknown IMAP URL parameter `{pair}`: the only ones are tls=starttls and \
                         tls=none"
                    ))
                }
            }
        }

        let host = match url.host() {
            None => return Err(format!("IMAP URL has no host: {SHAPE}")),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            // `url` keeps the host of a scheme it does not know as written, only percent-encoding
            // what is not ASCII: check that it is a plain host name.
            Some(url::Host::Domain(name)) => {
                if name.is_empty() {
                    return Err(format!("IMAP URL has no host: {SHAPE}"));
                }
                if !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                {
                    let shown = percent_decode_str(name).decode_utf8_lossy();
                    return Err(format!(
                        "IMAP host `{}` is not a valid host name (write international names in \
                         their xn-- form)",
                        crate::inert::line(&shown)
                    ));
                }
                name.to_string()
            }
        };
        let port = match url.port() {
            Some(0) => return Err("IMAP URL port `0` is not a port number (1 to 65535)".into()),
            Some(p) => p,
            None if implicit_tls => IMAPS_PORT,
            None => IMAP_PORT,
        };

        let path = url.path();
        let path = path.strip_prefix('/').unwrap_or(path);
        let mailbox = decode("mailbox", path.trim_end_matches('/'))?;
        let mailbox = if mailbox.is_empty() {
            "INBOX".to_string()
        } else {
            mailbox
        };
        if mailbox.chars().any(char::is_control) {
            return Err("IMAP mailbox name contains control characters".to_string());
        }

        Ok(ImapUrl {
            host,
            port,
            tls,
            user,
            mailbox,
        })
    }

    /// `host:port` for messages (`[v6]:port` for IPv6 addresses).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ImapUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls == ImapTls::Implicit {
            "imaps"
        } else {
            "imap"
        };
        write!(
            f,
            "{scheme}://{}@{}/{}",
            utf8_percent_encode(&self.user, USER_ESCAPE),
            self.address(),
            utf8_percent_encode(&self.mailbox, MAILBOX_ESCAPE)
        )?;
        match self.tls {
            ImapTls::StartTls => f.write_str("?tls=starttls"),
            ImapTls::None => f.write_str("?tls=none"),
            ImapTls::Implicit | ImapTls::Auto => Ok(()),
        }
    }
}

fn decode(what: &str, s: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("IMAP URL {what} is not UTF-8 after percent-decoding"))
}

/// What went wrong talking to the IMAP server, and at which step. The `reason` is the server's
/// answer or the I/O error; it never contains the password.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// The TCP connection (or the server greeting) failed.
    #[error("cannot connect to IMAP server {address}: {reason}")]
    Connect { address: String, reason: String },
    /// The TLS handshake, certificate check or STARTTLS upgrade failed.
    #[error("TLS with IMAP server {address} failed: {reason}")]
    Tls { address: String, reason: String },
    /// `imap://` to a server that does not offer STARTTLS: the password would go in clear, so
    /// nothing was sent.
    #[error(
        "IMAP server {address} does not offer STARTTLS (its capabilities: {offered}), so the \
         password would go in clear; LOGIN was not sent. Use imaps:// (TLS from the first byte, \
         usually port 993) if the server has it, or write ?tls=none in the URL to send the \
         password in clear anyway"
    )]
    NoStartTls { address: String, offered: String },
    /// The server refused the user name and password.
    #[error("IMAP login as `{user}` at {address} failed: {reason}")]
    Login {
        user: String,
        address: String,
        reason: String,
    },
    /// The server does not offer SASL XOAUTH2: the token was not sent.
    #[error(
        "IMAP server {address} does not offer AUTH=XOAUTH2 (its capabilities: {offered}), so \
         it cannot take an OAuth token; the token was not sent. With smtp_auth = \"xoauth2\" \
         the bounce mailbox must be on a server that signs in with OAuth 2.0 (Exchange Online: \
         outlook.office365.com)"
    )]
    NoXOAuth2 { address: String, offered: String },
    /// The server refused the OAuth token (`AUTHENTICATE XOAUTH2` answered NO or BAD).
    #[error(
        "IMAP server {address} refused the OAuth token for `{user}` (AUTHENTICATE XOAUTH2): \
         {reason}. Check that the app registration has the Office 365 Exchange Online \
         application permission IMAP.AccessAsApp with admin consent, that the app's service \
         principal is registered in Exchange (New-ServicePrincipal) and granted this mailbox \
         (Add-MailboxPermission -Identity {user} -User <service principal id> -AccessRights \
         FullAccess), that oauth_scope is https://outlook.office365.com/.default, and that the \
         user in the --imap URL is the mailbox's full address, its @ written %40 \
         (imaps://name%40domain@outlook.office365.com/INBOX)"
    )]
    TokenRefused {
        user: String,
        address: String,
        reason: String,
    },
    /// The mailbox could not be selected (missing, or no permission).
    #[error("cannot open IMAP mailbox `{mailbox}` at {address}: {reason}")]
    Select {
        mailbox: String,
        address: String,
        reason: String,
    },
    /// Listing or fetching messages failed.
    #[error("cannot fetch messages from IMAP mailbox `{mailbox}`: {reason}")]
    Fetch { mailbox: String, reason: String },
    /// The destination folder could not be found or created.
    #[error("cannot create IMAP folder `{folder}`: {reason}")]
    CreateFolder { folder: String, reason: String },
    /// Moving messages (or copying, flagging and expunging them) failed.
    #[error("cannot move {count} message(s) from `{mailbox}` to `{folder}`: {reason}")]
    Move {
        mailbox: String,
        folder: String,
        count: usize,
        reason: String,
    },
    /// LOGOUT failed (the messages were already handled by then).
    #[error("IMAP logout from {address} failed: {reason}")]
    Logout { address: String, reason: String },
}

/// An open, logged-in IMAP session with one mailbox selected.
pub struct ImapMailbox {
    session: Session<Stream>,
    url: ImapUrl,
    /// The selected mailbox's name as sent to the server (modified UTF-7).
    selected: String,
    has_move: bool,
    has_uidplus: bool,
    oversized: Vec<(u32, u64)>,
}

impl fmt::Debug for ImapMailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapMailbox")
            .field("url", &self.url.to_string())
            .field("has_move", &self.has_move)
            .field("has_uidplus", &self.has_uidplus)
            .finish_non_exhaustive()
    }
}

impl ImapMailbox {
    /// Connect to the server in `url` (TLS as the URL says), log in as its user with `password`,
    /// and SELECT its mailbox read-write. TLS certificates are checked against the public roots.
    pub async fn open(url: &ImapUrl, password: &str) -> Result<ImapMailbox, ImapError> {
        ImapMailbox::open_trusting(url, password, None).await
    }

    /// [`ImapMailbox::open`], trusting the certificates in `extra_roots` (PEM) besides the
    /// public roots: a server whose certificate a private CA signed.
    pub async fn open_trusting(
        url: &ImapUrl,
        password: &str,
        extra_roots: Option<&[u8]>,
    ) -> Result<ImapMailbox, ImapError> {
        ImapMailbox::open_with(url, Credentials::Password(password), extra_roots).await
    }

    /// Connect as [`ImapMailbox::open`] does, but sign in with SASL `AUTHENTICATE XOAUTH2` and
    /// this OAuth 2.0 access token for the URL's user (Exchange Online, Gmail; Dovecot's
    /// `oauth2` passdb), trusting the certificates in `extra_roots` (PEM) besides the public
    /// roots. The token goes only over TLS (unless the URL says `?tls=none`), only to a server
    /// that offers `AUTH=XOAUTH2`, and on the command line itself when the server has
    /// `SASL-IR`. A refusal is [`ImapError::TokenRefused`], which says what to check.
    pub async fn open_xoauth2(
        url: &ImapUrl,
        token: &str,
        extra_roots: Option<&[u8]>,
    ) -> Result<ImapMailbox, ImapError> {
        ImapMailbox::open_with(url, Credentials::XOAuth2(token), extra_roots).await
    }

    async fn open_with(
        url: &ImapUrl,
        credentials: Credentials<'_>,
        extra_roots: Option<&[u8]>,
    ) -> Result<ImapMailbox, ImapError> {
        let address = url.address();
        let connect_err = |reason: String| ImapError::Connect {
            address: address.clone(),
            reason,
        };
        let tls_err = |reason: String| ImapError::Tls {
            address: address.clone(),
            reason,
        };

        let tcp = timed(TcpStream::connect((url.host.as_str(), url.port)))
            .await
            .map_err(connect_err)?
            .map_err(|e| connect_err(e.to_string()))?;
        // Responses are small and commands are sent whole: no need to wait for ACKs.
        let _ = tcp.set_nodelay(true);

        let mut client = if url.tls == ImapTls::Implicit {
            let tls = tls_connect(&url.host, tcp, extra_roots)
                .await
                .map_err(tls_err)?;
            let mut client = Client::new(Stream::Tls(Box::new(tls)));
            read_greeting(&mut client).await.map_err(connect_err)?;
            client
        } else {
            let mut client = Client::new(Stream::Plain(tcp));
            read_greeting(&mut client).await.map_err(connect_err)?;
            if url.tls == ImapTls::None {
                warn_cleartext_login(url, credentials.what());
                client
            } else {
                let offered = capabilities_before_login(&mut client)
                    .await
                    .map_err(connect_err)?;
                if !offered.iter().any(|c| c.eq_ignore_ascii_case("STARTTLS")) {
                    let offered = crate::inert::line(&offered.join(" ")).into_owned();
                    return Err(if url.tls == ImapTls::StartTls {
                        tls_err(format!(
                            "?tls=starttls, but the server does not offer STARTTLS (its \
                             capabilities: {offered})"
                        ))
                    } else {
                        ImapError::NoStartTls {
                            address: address.clone(),
                            offered,
                        }
                    });
                }
                timed(client.run_command_and_check_ok("STARTTLS", None))
                    .await
                    .map_err(&tls_err)?
                    .map_err(|e| tls_err(format!("server refused STARTTLS ({})", describe(&e))))?;
                let Stream::Plain(tcp) = client.into_inner() else {
                    return Err(tls_err(
                        "STARTTLS on a connection that is already TLS".into(),
                    ));
                };
                let tls = tls_connect(&url.host, tcp, extra_roots)
                    .await
                    .map_err(tls_err)?;
                // No greeting after STARTTLS (RFC 3501, 6.2.1).
                Client::new(Stream::Tls(Box::new(tls)))
            }
        };

        let mut session = match credentials {
            Credentials::Password(password) => {
                let login_err = |reason: String| ImapError::Login {
                    user: url.user.clone(),
                    address: address.clone(),
                    reason: scrub(&reason, password),
                };
                timed(client.login(&url.user, password))
                    .await
                    .map_err(login_err)?
                    .map_err(|(e, _client)| login_err(describe(&e)))?
            }
            Credentials::XOAuth2(token) => {
                // Capabilities may change with TLS (RFC 3501, 6.2.1): ask again, over TLS.
                let offered = capabilities_before_login(&mut client)
                    .await
                    .map_err(connect_err)?;
                let has = |name: &str| offered.iter().any(|c| c.eq_ignore_ascii_case(name));
                if !has("AUTH=XOAUTH2") {
                    return Err(ImapError::NoXOAuth2 {
                        address: address.clone(),
                        offered: crate::inert::line(&offered.join(" ")).into_owned(),
                    });
                }
                let raw = xoauth2_response(&url.user, token);
                let encoded = base64::engine::general_purpose::STANDARD.encode(&raw);
                let refusal = Arc::new(std::sync::Mutex::new(None));
                let authenticator = XOAuth2 {
                    initial: None,
                    refusal: Arc::clone(&refusal),
                };
                let attempt = if has("SASL-IR") {
                    // The initial response on the command line: one round trip.
                    timed(client.authenticate(format!("XOAUTH2 {encoded}"), authenticator)).await
                } else {
                    let authenticator = XOAuth2 {
                        initial: Some(raw),
                        ..authenticator
                    };
                    timed(client.authenticate("XOAUTH2", authenticator)).await
                };
                let refused = |reason: String| {
                    let said = refusal
                        .lock()
                        .ok()
                        .and_then(|mut r| r.take())
                        .map(|r| format!("; its XOAUTH2 error: {r}"))
                        .unwrap_or_default();
                    let reason = format!("{}{said}", reason.trim_end_matches('.'));
                    ImapError::TokenRefused {
                        user: url.user.clone(),
                        address: address.clone(),
                        reason: scrub(&scrub(&reason, &encoded), token),
                    }
                };
                attempt
                    .map_err(&refused)?
                    .map_err(|(e, _client)| refused(describe(&e)))?
            }
        };

        let after_login = |reason: String| ImapError::Login {
            user: url.user.clone(),
            address: address.clone(),
            reason,
        };
        let capabilities = timed(session.capabilities())
            .await
            .map_err(after_login)?
            .map_err(|e| after_login(format!("CAPABILITY failed: {}", describe(&e))))?;
        let has_move = capabilities.has_str("MOVE");
        let has_uidplus = capabilities.has_str("UIDPLUS");

        let select_err = |reason: String| ImapError::Select {
            mailbox: url.mailbox.clone(),
            address: address.clone(),
            reason,
        };
        let selected = encode_mailbox_name(&url.mailbox);
        timed(session.select(&selected))
            .await
            .map_err(select_err)?
            .map_err(|e| select_err(describe(&e)))?;
        drain_unsolicited(&session);

        Ok(ImapMailbox {
            session,
            url: url.clone(),
            selected,
            has_move,
            has_uidplus,
            oversized: Vec::new(),
        })
    }

    /// Every message in the mailbox as `(UID, raw RFC 822 bytes)`, in UID order, read with
    /// `BODY.PEEK[]` so that reading does not set `\Seen`. Messages larger than `max_bytes` are
    /// not downloaded: they are logged and listed by [`ImapMailbox::oversized`].
    pub async fn fetch_all(&mut self, max_bytes: usize) -> Result<Vec<(u32, Vec<u8>)>, ImapError> {
        self.oversized.clear();
        let max = u64::try_from(max_bytes).unwrap_or(u64::MAX);

        // UID SEARCH rather than `UID FETCH 1:*`: some servers answer BAD to `1:*` on an
        // empty mailbox.
        let mut uids: Vec<u32> = Vec::new();
        self.exchange("UID SEARCH ALL", |r| {
            if let Response::MailboxData(MailboxDatum::Search(found)) = r {
                uids.extend(found);
            }
        })
        .await
        .map_err(|r| self.fetch_err(format!("UID SEARCH failed: {r}")))?;
        uids.sort_unstable();
        uids.dedup();

        let mut sizes: HashMap<u32, u64> = HashMap::new();
        for set in uid_sets(&uids) {
            self.exchange(&format!("UID FETCH {set} (UID RFC822.SIZE)"), |r| {
                let (uid, size, _) = fetched(r);
                if let (Some(uid), Some(size)) = (uid, size) {
                    sizes.insert(uid, u64::from(size));
                }
            })
            .await
            .map_err(|r| self.fetch_err(format!("UID FETCH (sizes) failed: {r}")))?;
        }

        // Vanished between SEARCH and FETCH (another client expunged them): nothing to read.
        let mut wanted = Vec::new();
        for &uid in &uids {
            match sizes.get(&uid) {
                None => {}
                Some(&size) if size > max => self.skip_oversized(uid, size, max),
                Some(&size) => wanted.push((uid, size)),
            }
        }

        let mut out: Vec<(u32, Vec<u8>)> = Vec::with_capacity(wanted.len());
        let mut too_big: Vec<(u32, u64)> = Vec::new();
        for batch in batches_by_size(&wanted, BYTES_PER_FETCH) {
            for set in uid_sets(&batch) {
                self.exchange(&format!("UID FETCH {set} (UID BODY.PEEK[])"), |r| {
                    let (Some(uid), _, Some(body)) = fetched(r) else {
                        return;
                    };
                    if !batch.contains(&uid) {
                        return; // an unsolicited FETCH for some other message
                    }
                    let len = u64::try_from(body.len()).unwrap_or(u64::MAX);
                    if len > max {
                        too_big.push((uid, len));
                    } else {
                        out.push((uid, body.to_vec()));
                    }
                })
                .await
                .map_err(|r| self.fetch_err(format!("UID FETCH failed: {r}")))?;
            }
        }
        for (uid, len) in too_big {
            self.skip_oversized(uid, len, max);
        }
        out.sort_by_key(|(uid, _)| *uid);
        out.dedup_by_key(|(uid, _)| *uid);
        drain_unsolicited(&self.session);
        Ok(out)
    }

    /// `(UID, size in bytes)` of the messages the last [`ImapMailbox::fetch_all`] skipped because
    /// they were larger than its limit. They stay in the mailbox.
    pub fn oversized(&self) -> &[(u32, u64)] {
        &self.oversized
    }

    /// Move the messages with these UIDs to `folder`, creating it if it does not exist. Uses
    /// `UID MOVE` when the server has the MOVE capability; otherwise `UID COPY`, then
    /// `UID STORE +FLAGS (\Deleted)`, then `UID EXPUNGE` (UIDPLUS) or, failing that, `EXPUNGE`
    /// (which also removes any other message already flagged `\Deleted`). UIDs no longer in the
    /// mailbox are ignored by the server. An empty `uids` does nothing.
    pub async fn move_to(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError> {
        let sets = uid_sets(uids);
        if sets.is_empty() {
            return Ok(());
        }
        let count = {
            let mut u: Vec<u32> = uids.iter().copied().filter(|&u| u != 0).collect();
            u.sort_unstable();
            u.dedup();
            u.len()
        };
        let mailbox = self.url.mailbox.clone();
        let move_err = |reason: String| ImapError::Move {
            mailbox: mailbox.clone(),
            folder: folder.to_string(),
            count,
            reason,
        };
        if folder.is_empty() || folder.chars().any(char::is_control) {
            return Err(move_err(
                "the folder name is empty or has control characters".into(),
            ));
        }
        let target = encode_mailbox_name(folder);
        if target == self.selected
            || (target.eq_ignore_ascii_case("INBOX") && self.selected.eq_ignore_ascii_case("INBOX"))
        {
            return Err(move_err(
                "that is the mailbox being read: choose another folder".into(),
            ));
        }
        self.ensure_folder(folder, &target).await?;

        // The typed calls quote the name themselves (as `quote` does); `quoted` is for messages.
        let quoted = quote(&target);
        for set in sets {
            // EXPUNGE responses pile up in async-imap's queue: empty it, so that a BYE read
            // during the next step is still there to be quoted.
            drain_unsolicited(&self.session);
            if self.has_move {
                let done = timed(self.session.uid_mv(&set, &target)).await;
                self.completed(done)
                    .map_err(|r| move_err(format!("`UID MOVE {set} {quoted}` failed: {r}")))?;
                continue;
            }
            let done = timed(self.session.uid_copy(&set, &target)).await;
            self.completed(done)
                .map_err(|r| move_err(format!("`UID COPY {set} {quoted}` failed: {r}")))?;
            // UID STORE and (UID) EXPUNGE stay on `exchange`: their typed calls would end a
            // refused command as if it had succeeded (see `exchange`).
            let expunge = if self.has_uidplus {
                format!("UID EXPUNGE {set}")
            } else {
                "EXPUNGE".to_string()
            };
            for step in [
                format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"),
                expunge,
            ] {
                self.exchange(&step, |_| {})
                    .await
                    .map_err(|r| move_err(format!("`{step}` failed: {r}")))?;
            }
        }
        drain_unsolicited(&self.session);
        Ok(())
    }

    /// Say LOGOUT and close the connection.
    pub async fn logout(mut self) -> Result<(), ImapError> {
        let address = self.url.address();
        let logout_err = |reason: String| ImapError::Logout {
            address: address.clone(),
            reason,
        };
        timed(self.session.logout())
            .await
            .map_err(logout_err)?
            .map_err(|e| logout_err(describe(&e)))
    }

    async fn ensure_folder(&mut self, folder: &str, target: &str) -> Result<(), ImapError> {
        let folder_err = |reason: String| ImapError::CreateFolder {
            folder: folder.to_string(),
            reason,
        };
        let quoted = quote(target);
        let mut exists = false;
        // LIST stays on `exchange`: async-imap's `list` ends a refused LIST as an empty one.
        self.exchange(&format!("LIST \"\" {quoted}"), |r| {
            if let Response::MailboxData(MailboxDatum::List(data)) = r {
                let name = data.name.as_ref();
                exists |= name == target
                    || (name.eq_ignore_ascii_case("INBOX") && target.eq_ignore_ascii_case("INBOX"));
            }
        })
        .await
        .map_err(|r| folder_err(format!("LIST failed: {r}")))?;
        if exists {
            return Ok(());
        }
        let done = timed(self.session.create(target)).await;
        self.completed(done).map_err(folder_err)?;
        // So that mail clients show it; the folder works without.
        let done = timed(self.session.subscribe(target)).await;
        if let Err(e) = self.completed(done) {
            tracing::debug!(folder, error = %e, "IMAP SUBSCRIBE failed");
        }
        Ok(())
    }

    /// The result of a typed async-imap call wrapped in [`timed`], as a reason: the timeout, or
    /// the server's NO/BAD text, or, when the server closed the connection, the BYE it said
    /// first (async-imap queues a BYE with the unsolicited responses and reports only
    /// `ConnectionLost`).
    fn completed<T>(
        &self,
        done: Result<async_imap::error::Result<T>, String>,
    ) -> Result<T, String> {
        match done? {
            Ok(value) => Ok(value),
            Err(async_imap::error::Error::ConnectionLost) => Err(match bye_text(&self.session) {
                Some(said) => format!("the server closed the connection: {said}"),
                None => "the server closed the connection".to_string(),
            }),
            Err(e) => Err(describe(&e)),
        }
    }

    /// Send `command` and read up to its tagged completion, handing every untagged response to
    /// `each`. A NO or BAD completion, a BYE, a closed connection or a silent server is an error.
    ///
    /// This is for the commands whose typed calls in async-imap 0.12 cannot report a failure:
    /// `uid_search` (read by `parse::parse_ids`), `uid_fetch` and `uid_store`
    /// (`parse::parse_fetches`), `uid_expunge` and `expunge` (`parse::parse_expunge`) and `list`
    /// (`parse::parse_names`). Each reads the answer through
    /// `take_while(|r| parse::filter(r, &tag))`, which stops at the response carrying the
    /// command's tag and drops it unread: a NO or BAD completion ends the stream (or the search)
    /// exactly as OK does. A BYE goes to the unsolicited queue (`parse::handle_unilateral`) and
    /// the close after it ends the stream with `None`, again as success does; only an I/O error
    /// comes out as an `Err`. So a refused or aborted UID SEARCH or UID FETCH would read as an
    /// empty mailbox (Dovecot answers a FETCH it cannot serve with BYE), a refused UID STORE or
    /// EXPUNGE as done, a refused LIST as "no such folder". The typed calls that end in
    /// `Connection::check_done_ok_from` (`uid_mv`, `uid_copy`, `create`, `subscribe`, `logout`)
    /// do turn NO/BAD into `Error::No`/`Error::Bad` and a close into `Error::ConnectionLost`
    /// (as `select` does in `parse::parse_mailbox`), and are used. The unit test
    /// `async_imap_typed_reads_hide_a_failed_completion` pins this: when async-imap starts
    /// reporting these failures it fails, and these commands can move to the typed calls.
    async fn exchange(
        &mut self,
        command: &str,
        mut each: impl FnMut(&Response<'_>),
    ) -> Result<(), String> {
        let tag = timed(self.session.run_command(command))
            .await?
            .map_err(|e| describe(&e))?;
        loop {
            let response = timed(self.session.read_response())
                .await?
                .map_err(|e| format!("reading the answer: {e}"))?
                .ok_or_else(|| "the server closed the connection".to_string())?;
            match response.parsed() {
                Response::Done {
                    tag: done,
                    status,
                    outcome,
                } if *done == tag => {
                    return match status {
                        Status::Ok => Ok(()),
                        Status::No => Err(format!("server answered NO: {}", said(outcome))),
                        Status::Bad => Err(format!("server answered BAD: {}", said(outcome))),
                        other => Err(format!("server answered {other:?}: {}", said(outcome))),
                    };
                }
                Response::Data {
                    status: Status::Bye,
                    outcome,
                    ..
                } => {
                    return Err(format!(
                        "the server closed the connection: {}",
                        said(outcome)
                    ))
                }
                other => each(other),
            }
        }
    }

    fn skip_oversized(&mut self, uid: u32, size: u64, max: u64) {
        tracing::warn!(
            mailbox = %self.url.mailbox,
            uid,
            size,
            limit = max,
            "IMAP message larger than the limit: left in the mailbox unread"
        );
        self.oversized.push((uid, size));
    }

    fn fetch_err(&self, reason: String) -> ImapError {
        ImapError::Fetch {
            mailbox: self.url.mailbox.clone(),
            reason,
        }
    }
}

/// UID, RFC822.SIZE and whole-message body of an untagged FETCH response, where present.
fn fetched<'r>(response: &'r Response<'_>) -> (Option<u32>, Option<u32>, Option<&'r [u8]>) {
    let Response::Fetch(_, attributes) = response else {
        return (None, None, None);
    };
    let (mut uid, mut size, mut body) = (None, None, None);
    for attribute in attributes {
        match attribute {
            AttributeValue::Uid(u) => uid = Some(*u),
            AttributeValue::Rfc822Size(s) => size = Some(*s),
            AttributeValue::BodySection {
                section: None,
                data: Some(data),
                ..
            }
            | AttributeValue::Rfc822(Some(data)) => body = Some(data.as_ref()),
            _ => {}
        }
    }
    (uid, size, body)
}

/// A tagged or untagged status text as `[CODE] text`.
fn said(outcome: &Outcome<'_>) -> String {
    let text = outcome.information.as_deref().unwrap_or("(no text)");
    match &outcome.code {
        Some(code) => format!("[{code:?}] {text}"),
        None => text.to_string(),
    }
}

/// Await `f`, or give up after [`TIMEOUT`] with a reason saying so.
async fn timed<F: Future>(f: F) -> Result<F::Output, String> {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))
}

/// Unsolicited responses that async-imap queues (EXISTS, EXPUNGE, flag changes) are not needed;
/// empty the queue so it never fills.
fn drain_unsolicited(session: &Session<Stream>) {
    while session.unsolicited_responses.try_recv().is_ok() {}
}

/// The text of the last BYE in async-imap's unsolicited queue, which is emptied.
fn bye_text(session: &Session<Stream>) -> Option<String> {
    let mut text = None;
    while let Ok(response) = session.unsolicited_responses.try_recv() {
        if let UnsolicitedResponse::Other(data) = response {
            if let Response::Data {
                status: Status::Bye,
                outcome,
            } = data.parsed()
            {
                text = Some(said(outcome));
            }
        }
    }
    text
}

async fn read_greeting(client: &mut Client<Stream>) -> Result<(), String> {
    let greeting = timed(client.read_response())
        .await?
        .map_err(|e| format!("reading the greeting: {e}"))?
        .ok_or_else(|| "the server closed the connection before its greeting".to_string())?;
    match greeting.parsed() {
        Response::Data {
            status: Status::Ok | Status::PreAuth,
            ..
        } => Ok(()),
        Response::Data {
            status: Status::Bye,
            outcome,
            ..
        } => Err(format!(
            "the server refused the connection: {}",
            outcome.information.as_deref().unwrap_or("BYE")
        )),
        _ => Err("the server's greeting is not an IMAP greeting".to_string()),
    }
}

/// The capability names the server announces before login (`CAPABILITY`), upper-cased.
async fn capabilities_before_login(client: &mut Client<Stream>) -> Result<Vec<String>, String> {
    use async_imap::imap_proto::Capability;
    use tokio::io::AsyncWriteExt as _;
    // async-imap has no public way to send a tagged command before login and read its untagged
    // answers, so the command is written on the stream directly, with a tag of its own.
    const TAG: &str = "notify-capability";
    let stream = client.get_mut();
    timed(async {
        stream
            .write_all(format!("{TAG} CAPABILITY\r\n").as_bytes())
            .await?;
        stream.flush().await
    })
    .await?
    .map_err(|e| format!("CAPABILITY: {e}"))?;
    let mut names = Vec::new();
    loop {
        let response = timed(client.read_response())
            .await?
            .map_err(|e| format!("CAPABILITY: {e}"))?
            .ok_or_else(|| "the server closed the connection at CAPABILITY".to_string())?;
        match response.parsed() {
            Response::Capabilities(caps) => {
                for c in caps {
                    names.push(match c {
                        Capability::Imap4rev1 => "IMAP4REV1".to_string(),
                        Capability::Auth(m) => format!("AUTH={}", m.to_ascii_uppercase()),
                        Capability::Atom(a) => a.to_ascii_uppercase(),
                    });
                }
            }
            Response::Done { tag, status, .. } if tag.0 == TAG => {
                return match status {
                    Status::Ok => Ok(names),
                    other => Err(format!("the server answered CAPABILITY with {other:?}")),
                };
            }
            _ => {}
        }
    }
}

/// Say once, on stderr, that LOGIN goes in clear because `?tls=none` says so.
fn warn_cleartext_login(url: &ImapUrl, what: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "logging in to the IMAP server at {} without TLS, as ?tls=none asks: the {what} \
             goes in clear",
            url.address()
        )
    });
}

/// What the client signs in with. `Debug` never shows the secret.
#[derive(Clone, Copy)]
enum Credentials<'a> {
    /// `LOGIN user password`.
    Password(&'a str),
    /// `AUTHENTICATE XOAUTH2` with this OAuth 2.0 access token.
    XOAuth2(&'a str),
}

impl Credentials<'_> {
    fn what(&self) -> &'static str {
        match self {
            Credentials::Password(_) => "password",
            Credentials::XOAuth2(_) => "OAuth token",
        }
    }
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what())
    }
}

/// The SASL XOAUTH2 initial response, before base64:
/// `user=<user>\x01auth=Bearer <token>\x01\x01`.
fn xoauth2_response(user: &str, token: &str) -> Vec<u8> {
    format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes()
}

/// async-imap's side of `AUTHENTICATE XOAUTH2`. Without SASL-IR the first (empty) challenge is
/// answered with the initial response. A challenge after that is the server's error (a JSON
/// object, RFC 7628 / Google's XOAUTH2): it is kept for the error message and answered with
/// the empty response that ends the exchange with NO.
struct XOAuth2 {
    initial: Option<Vec<u8>>,
    refusal: Arc<std::sync::Mutex<Option<String>>>,
}

impl async_imap::Authenticator for XOAuth2 {
    type Response = Vec<u8>;

    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        if let Some(initial) = self.initial.take() {
            return initial;
        }
        if let Ok(mut refusal) = self.refusal.lock() {
            let text = String::from_utf8_lossy(challenge);
            *refusal = Some(crate::inert::line(text.trim()).into_owned());
        }
        Vec::new()
    }
}

async fn tls_connect(
    host: &str,
    tcp: TcpStream,
    extra_roots: Option<&[u8]>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("`{host}` cannot be checked against a certificate: {e}"))?;
    let config = crate::net::client_config(extra_roots)?;
    timed(TlsConnector::from(Arc::new(config)).connect(name, tcp))
        .await?
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("InvalidContentType") {
                format!(
                    "{text} (the server did not answer in TLS: for a plain-text port use \
                     imap:// (STARTTLS), or the imaps port, usually 993)"
                )
            } else {
                text
            }
        })
}

/// An async-imap error as a short sentence: the server's NO/BAD text without the Debug noise.
fn describe(e: &async_imap::error::Error) -> String {
    use async_imap::error::Error;
    match e {
        Error::No(s) => format!("server answered NO: {}", tidy_status(s)),
        Error::Bad(s) => format!("server answered BAD: {}", tidy_status(s)),
        Error::ConnectionLost => "the server closed the connection".to_string(),
        other => other.to_string(),
    }
}

/// async-imap formats NO/BAD as `code: Some(X), info: Some("text")` (or as a Debug `Outcome`
/// after SELECT); make it `[X] text`.
fn tidy_status(s: &str) -> String {
    let info = ["info: Some(\"", "information: Some(\""]
        .iter()
        .find_map(|key| s.split_once(key))
        .and_then(|(_, rest)| rest.rfind("\")").map(|end| &rest[..end]))
        .map(|t| t.replace("\\\"", "\""));
    let code = s
        .split_once("code: Some(")
        .and_then(|(_, rest)| {
            rest.split_once("), info")
                .or_else(|| rest.split_once("), information"))
        })
        .map(|(c, _)| c);
    match (code, info) {
        (Some(c), Some(i)) => format!("[{c}] {i}"),
        (None, Some(i)) => i,
        _ => s.to_string(),
    }
}

/// Belt and braces: servers do not echo the password, but never pass one on if one did.
fn scrub(reason: &str, password: &str) -> String {
    if password.is_empty() {
        reason.to_string()
    } else {
        reason.replace(password, "<password>")
    }
}

/// An IMAP quoted string.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// UIDs as IMAP sequence sets (`1:3,7,9:12`), sorted, without duplicates or the invalid UID 0,
/// at most [`RANGES_PER_COMMAND`] ranges each.
fn uid_sets(uids: &[u32]) -> Vec<String> {
    let mut sorted: Vec<u32> = uids.iter().copied().filter(|&u| u != 0).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for uid in sorted {
        match ranges.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(uid) => *end = uid,
            _ => ranges.push((uid, uid)),
        }
    }
    ranges
        .chunks(RANGES_PER_COMMAND)
        .map(|chunk| {
            chunk
                .iter()
                .map(|&(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}:{b}")
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// Split `(uid, size)` into UID lists of at most `budget` bytes each (a bigger message alone).
fn batches_by_size(items: &[(u32, u64)], budget: u64) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0u64;
    for &(uid, size) in items {
        if !current.is_empty() && bytes.saturating_add(size) > budget {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(uid);
        bytes = bytes.saturating_add(size);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A mailbox name in IMAP's modified UTF-7 (RFC 3501, 5.1.3): printable ASCII stays, `&`
/// becomes `&-`, anything else is UTF-16 in base64 (`,` for `/`) between `&` and `-`.
fn encode_mailbox_name(name: &str) -> String {
    fn flush(pending: &mut Vec<u16>, out: &mut String) {
        if pending.is_empty() {
            return;
        }
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let digits = chunk.len() + 1;
            for i in 0..digits {
                let index = (n >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            }
        }
        out.push('-');
        pending.clear();
    }

    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_xoauth2_response_names_the_full_address_and_the_bearer_token() {
        let url =
            ImapUrl::parse("imaps://moped-bounces%40austintexas.gov@outlook.office365.com/INBOX")
                .expect("valid");
        assert_eq!(url.user, "moped-bounces@austintexas.gov");
        assert_eq!(
            xoauth2_response(&url.user, "eyJ0.abc"),
            b"user=moped-bounces@austintexas.gov\x01auth=Bearer eyJ0.abc\x01\x01".to_vec()
        );
        // The same bytes as the SMTP side's initial response, before base64.
        let token = crate::oauth::Token::new(
            "eyJ0.abc",
            std::time::Instant::now(),
            std::time::Duration::from_secs(60),
        );
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .encode(xoauth2_response(&url.user, "eyJ0.abc")),
            crate::oauth::xoauth2(&url.user, &token)
        );
        let shown = format!(
            "{:?} {:?}",
            Credentials::XOAuth2("eyJ0.abc"),
            Credentials::Password("pw-123")
        );
        assert!(
            !shown.contains("eyJ0") && !shown.contains("pw-123"),
            "{shown}"
        );
    }

    #[test]
    fn a_server_error_after_the_response_is_kept_inert_and_answered_empty() {
        use async_imap::Authenticator as _;
        let refusal = Arc::new(std::sync::Mutex::new(None));
        let mut auth = XOAuth2 {
            initial: Some(b"first".to_vec()),
            refusal: Arc::clone(&refusal),
        };
        assert_eq!(auth.process(b""), b"first".to_vec());
        assert!(auth.process(b"{\"status\":\"401\"}\x1b[2J").is_empty());
        let kept = refusal.lock().expect("lock").clone().expect("kept");
        assert!(kept.starts_with("{\"status\":\"401\"}"), "{kept}");
        assert!(!kept.contains('\x1b'), "{kept}");
    }

    #[test]
    fn parses_urls_with_defaults() {
        let u = ImapUrl::parse("imaps://bounces@mail.example.org/INBOX").expect("valid");
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("mail.example.org", 993, ImapTls::Implicit)
        );
        assert_eq!((u.user.as_str(), u.mailbox.as_str()), ("bounces", "INBOX"));
        assert_eq!(u.to_string(), "imaps://bounces@mail.example.org:993/INBOX");

        let u = ImapUrl::parse("imap://b%40example.org@127.0.0.1:1143").expect("valid");
        assert_eq!((u.port, u.tls), (1143, ImapTls::Auto));
        assert_eq!(
            (u.user.as_str(), u.mailbox.as_str()),
            ("b@example.org", "INBOX")
        );
        assert_eq!(u.to_string(), "imap://b%40example.org@127.0.0.1:1143/INBOX");

        let u = ImapUrl::parse("imap://x@h/Bounces/Old%20ones?tls=starttls").expect("valid");
        assert_eq!((u.port, u.tls), (143, ImapTls::StartTls));
        assert_eq!(u.mailbox, "Bounces/Old ones");
        assert_eq!(
            u.to_string(),
            "imap://x@h:143/Bounces/Old%20ones?tls=starttls"
        );

        let u = ImapUrl::parse("imap://x@h/INBOX?tls=none").expect("valid");
        assert_eq!((u.port, u.tls), (143, ImapTls::None));
        assert_eq!(u.to_string(), "imap://x@h:143/INBOX?tls=none");

        let u = ImapUrl::parse("imaps://x@[::1]:9993/").expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("::1", 9993));
        assert_eq!(u.to_string(), "imaps://x@[::1]:9993/INBOX");
    }

    #[test]
    fn rejects_bad_urls_clearly() {
        let err = |s: &str| ImapUrl::parse(s).expect_err(s);
        assert!(err("mail.example.org").contains("not an IMAP URL"));
        assert!(err("pop3://u@h/INBOX").contains("unsupported scheme"));
        assert!(err("imaps://mail.example.org/INBOX").contains("no user name"));
        assert!(err("imaps://@mail.example.org/INBOX").contains("empty user name"));
        assert!(err("imaps://u@/INBOX").contains("no host"));
        assert!(err("imaps://u@h:99999/INBOX").contains("not a port number"));
        assert!(err("imaps://u@h:0/INBOX").contains("not a port number"));
        assert!(err("imaps://u@h/INBOX?tls=starttls").contains("goes with imap://"));
        assert!(err("imaps://u@h/INBOX?tls=none").contains("goes with imap://"));
        assert!(err("imap://u@h/INBOX?foo=1").contains("unknown IMAP URL parameter"));
        let e = err("imaps://u:hunter2secret@h/INBOX");
        assert!(e.contains("NOTIFY_IMAP_PASSWORD") && !e.contains("hunter2secret"));
    }

    #[test]
    fn url_edges_read_by_the_url_crate() {
        let ok = |s: &str| ImapUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let err = |s: &str| ImapUrl::parse(s).expect_err(s);

        // `imap`/`imaps` are not schemes `url` knows: the host is kept as written.
        let u = ok("imaps://user@HOST/x");
        assert_eq!((u.host.as_str(), u.mailbox.as_str()), ("HOST", "x"));
        assert_eq!(u.to_string(), "imaps://user@HOST:993/x");
        let u = ok("IMAP://user@Mail.Example.org/x?TLS=None");
        assert_eq!(
            (u.host.as_str(), u.tls),
            ("Mail.Example.org", ImapTls::None)
        );

        // IPv6 is stored without brackets, in its short form.
        let u = ok("imap://u@[0:0:0:0:0:0:0:1]/INBOX");
        assert_eq!((u.host.as_str(), u.port), ("::1", 143));
        assert_eq!(u.address(), "[::1]:143");

        // An unencoded `@` in the user name: the last one ends it.
        assert_eq!(ok("imaps://a@b.org@h/INBOX").user, "a@b.org");
        // `/` stays hierarchy and a trailing one goes; no path, or a bare `/`, is INBOX.
        assert_eq!(ok("imaps://u@h/Bounces/2024/").mailbox, "Bounces/2024");
        assert_eq!(ok("imaps://u@h/").mailbox, "INBOX");
        assert_eq!(ok("imaps://u@h").mailbox, "INBOX");
        assert_eq!(ok("imaps://u@h/%E6%97%A5%E6%9C%AC").mailbox, "日本");
        assert_eq!(ok("imaps://u@h/日本 x").mailbox, "日本 x");
        // `url` resolves dot segments, also written `%2E`: harmless for mailbox names.
        assert_eq!(ok("imaps://u@h/a/../b").mailbox, "b");
        assert_eq!(ok("imaps://u@h/a/%2e/b").mailbox, "a/b");
        // An empty password is dropped by `url`: there is no secret to refuse.
        assert_eq!(ok("imaps://u:@h/INBOX").user, "u");
        assert_eq!(ok("imaps://u@h:/INBOX").port, 993);

        assert!(err("imaps://@h/INBOX").contains("empty user name"));
        assert!(err("imaps:///INBOX").contains("no user name"));
        assert!(err("imaps://h/a@b").contains("no user name"));
        assert!(err("imaps:u@h/INBOX").contains("not an IMAP URL"));
        assert!(err("imaps:/u@h/INBOX").contains("not an IMAP URL"));
        assert!(err("localhost:993").contains("not an IMAP URL"));
        assert!(err("mailto:bounces@example.org").contains("not an IMAP URL"));
        assert!(err("imaps://u@h/INBOX#").contains("#fragment"));
        assert!(err("imap://u@h/INBOX?tls=none#x").contains("#fragment"));
        assert!(err("imaps://u@[::1/INBOX").contains("IPv6"));
        assert!(err("imaps://u@h|x/INBOX").contains("not a valid host name"));
        let e = err("imaps://u@bücher.de/INBOX");
        assert!(e.contains("`bücher.de`") && e.contains("xn--"), "{e}");
        assert!(err("imaps://u@h%20x/INBOX").contains("not a valid host name"));
        // `url` would drop a tab or a line break without a word: refused before it reads.
        assert!(err("imaps://u@h/IN\tBOX").contains("control characters"));
        assert!(err("imaps://u@h/IN\nBOX").contains("control characters"));
        assert!(err("imaps://u@h/IN%09BOX").contains("mailbox name contains control"));
        assert!(err("imaps://u%0A@h/INBOX").contains("user name contains control"));
        assert!(err("imaps://u@h/%FF").contains("not UTF-8"));
        for (url, secret) in [
            ("imaps://u:p%40ss@h/INBOX", "p%40ss"),
            ("imaps://:hunter2secret@h/INBOX", "hunter2secret"),
            ("imap://u:hunter2secret@h/INBOX?tls=none", "hunter2secret"),
        ] {
            let e = err(url);
            assert!(
                e.contains("NOTIFY_IMAP_PASSWORD") && !e.contains(secret) && !e.contains("p@ss"),
                "{e}"
            );
        }
    }

    #[test]
    fn display_parses_back_to_the_same_url() {
        for s in [
            "imaps://bounces@mail.example.org/INBOX",
            "imaps://b%40example.org@HOST:9993/Bounces/Old%20ones",
            "imap://x@h/a%3Fb%23c%25d%22e?tls=starttls",
            "imap://we%3Aird%2Fuser%20name@127.0.0.1:1143/INBOX?tls=none",
            "imaps://u@[fe80::1]:993/~peter/mail/日本語",
            "imaps://u@h/%26-%3C%3E%60%7B%7D%5C",
        ] {
            let first = ImapUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            let shown = first.to_string();
            let again = ImapUrl::parse(&shown).unwrap_or_else(|e| panic!("{shown}: {e}"));
            assert_eq!(first, again, "{s} -> {shown}");
        }
    }

    /// Rules for [`scripted`]: the ones given first, then a login, a CAPABILITY with
    /// `capabilities`, a SELECT and a LOGOUT that all succeed.
    fn session_rules(
        capabilities: &'static str,
        first: &[(&'static str, String)],
    ) -> Vec<(&'static str, String)> {
        let mut rules = first.to_vec();
        rules.extend([
            ("LOGIN", "{tag} OK logged in\r\n".to_string()),
            (
                "CAPABILITY",
                format!("* CAPABILITY {capabilities}\r\n{{tag}} OK done\r\n"),
            ),
            (
                "SELECT",
                "* 2 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n{tag} OK [READ-WRITE] done\r\n"
                    .to_string(),
            ),
            (
                "LOGOUT",
                "* BYE bye\r\n{tag} OK done\r\n<close>".to_string(),
            ),
        ]);
        rules
    }

    /// A scripted IMAP server on 127.0.0.1 for one connection: a greeting, then for each
    /// command line the reply of the first rule whose key the command (without its tag)
    /// contains, `{tag}` replaced by the command's tag; `<close>` at the end of a reply closes
    /// the connection after the text before it. Returns its port and the commands it received.
    async fn scripted(
        rules: Vec<(&'static str, String)>,
    ) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let (read, mut write) = socket.into_split();
            let mut lines = tokio::io::BufReader::new(read).lines();
            if write.write_all(b"* OK scripted IMAP\r\n").await.is_err() {
                return;
            }
            while let Ok(Some(line)) = lines.next_line().await {
                let (tag, command) = line.split_once(' ').unwrap_or((&line, ""));
                log.lock().expect("log").push(command.to_string());
                let upper = command.to_ascii_uppercase();
                let reply = rules
                    .iter()
                    .find(|(key, _)| upper.contains(key))
                    .map_or("{tag} BAD not scripted\r\n", |(_, reply)| reply.as_str())
                    .replace("{tag}", tag);
                let (text, close) = match reply.strip_suffix("<close>") {
                    Some(text) => (text, true),
                    None => (reply.as_str(), false),
                };
                if write.write_all(text.as_bytes()).await.is_err() || close {
                    return;
                }
            }
        });
        (port, received)
    }

    async fn open_scripted(
        capabilities: &'static str,
        first: &[(&'static str, String)],
    ) -> (ImapMailbox, Arc<std::sync::Mutex<Vec<String>>>) {
        let (port, received) = scripted(session_rules(capabilities, first)).await;
        let url =
            ImapUrl::parse(&format!("imap://u@127.0.0.1:{port}/INBOX?tls=none")).expect("url");
        let mailbox = ImapMailbox::open(&url, "pw").await.expect("open");
        (mailbox, received)
    }

    /// Why SEARCH, FETCH, STORE, EXPUNGE and LIST go through `exchange`: async-imap 0.12's
    /// typed calls for them end on a NO or BAD completion (or a BYE and a close) exactly as on
    /// OK. If this test fails, async-imap now reports those failures: switch to the typed calls.
    #[tokio::test]
    async fn async_imap_typed_reads_hide_a_failed_completion() {
        use futures::StreamExt as _;
        let refused = "{tag} NO [SERVERBUG] refused\r\n".to_string();
        let (port, _) = scripted(session_rules(
            "IMAP4rev1",
            &[
                ("SEARCH", refused.clone()),
                ("FETCH", refused.clone()),
                ("STORE", refused.clone()),
                ("EXPUNGE", refused.clone()),
                ("LIST", refused.clone()),
                ("MOVE", refused.clone()),
                ("COPY", refused.clone()),
                ("CREATE", refused.clone()),
                ("SUBSCRIBE", refused.clone()),
                ("NOOP", "* BYE going away\r\n<close>".to_string()),
            ],
        ))
        .await;
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut client = Client::new(tcp);
        client.read_response().await.expect("greeting");
        let mut session = client
            .login("u", "pw")
            .await
            .map_err(|e| e.0)
            .expect("login");

        let found = session
            .uid_search("ALL")
            .await
            .expect("a refused search is Ok");
        assert!(found.is_empty());
        let fetched: Vec<_> = session
            .uid_fetch("1:2", "(UID BODY.PEEK[])")
            .await
            .expect("sent")
            .collect()
            .await;
        assert!(fetched.is_empty(), "a refused FETCH is an empty stream");
        let stored: Vec<_> = session
            .uid_store("1", "+FLAGS.SILENT (\\Deleted)")
            .await
            .expect("sent")
            .collect()
            .await;
        assert!(stored.is_empty(), "a refused STORE is an empty stream");
        let expunged: Vec<_> = session
            .uid_expunge("1")
            .await
            .expect("sent")
            .collect()
            .await;
        assert!(expunged.is_empty(), "a refused EXPUNGE is an empty stream");
        let listed: Vec<_> = session
            .list(Some(""), Some("\"Handled\""))
            .await
            .expect("sent")
            .collect()
            .await;
        assert!(listed.is_empty(), "a refused LIST is an empty stream");

        // The calls that end in `check_done_ok_from` do report the refusal.
        for refusal in [
            session.uid_mv("1", "Handled").await,
            session.uid_copy("1", "Handled").await,
            session.create("Handled").await,
            session.subscribe("Handled").await,
        ] {
            assert!(
                matches!(refusal, Err(async_imap::error::Error::No(_))),
                "{refusal:?}"
            );
        }
        // And a BYE with the close after it ends a NOOP quietly too.
        assert!(session.noop().await.is_ok());
    }

    #[tokio::test]
    async fn refused_or_aborted_reads_are_errors_not_an_empty_mailbox() {
        for (rules, says) in [
            (
                vec![("SEARCH", "{tag} NO [SERVERBUG] no search\r\n".to_string())],
                "UID SEARCH failed: server answered NO: [SERVERBUG] no search",
            ),
            (
                vec![
                    ("SEARCH", "* SEARCH 1 2\r\n{tag} OK done\r\n".to_string()),
                    ("RFC822.SIZE", "{tag} BAD no sizes\r\n".to_string()),
                ],
                "UID FETCH (sizes) failed: server answered BAD: no sizes",
            ),
            (
                vec![
                    ("SEARCH", "* SEARCH 1\r\n{tag} OK done\r\n".to_string()),
                    (
                        "RFC822.SIZE",
                        "* 1 FETCH (UID 1 RFC822.SIZE 5)\r\n{tag} OK done\r\n".to_string(),
                    ),
                    ("BODY.PEEK", "* BYE Internal error\r\n<close>".to_string()),
                ],
                "UID FETCH failed: the server closed the connection: Internal error",
            ),
        ] {
            let (mut mailbox, _) = open_scripted("IMAP4rev1", &rules).await;
            let err = mailbox.fetch_all(1024).await.expect_err(says);
            assert!(matches!(err, ImapError::Fetch { .. }), "{err:?}");
            assert!(err.to_string().contains(says), "{err}");
        }

        // And the same server answering OK gives the messages, by UID, without `\Seen`.
        let (mut mailbox, received) = open_scripted(
            "IMAP4rev1",
            &[
                ("SEARCH", "* SEARCH 2 1\r\n{tag} OK done\r\n".to_string()),
                (
                    "RFC822.SIZE",
                    "* 1 FETCH (UID 1 RFC822.SIZE 5)\r\n* 2 FETCH (UID 2 RFC822.SIZE 5)\r\n\
                     {tag} OK done\r\n"
                        .to_string(),
                ),
                (
                    "BODY.PEEK",
                    "* 2 FETCH (UID 2 BODY[] {5}\r\nworld)\r\n\
                     * 1 FETCH (UID 1 BODY[] {5}\r\nhello)\r\n{tag} OK done\r\n"
                        .to_string(),
                ),
            ],
        )
        .await;
        let all = mailbox.fetch_all(1024).await.expect("fetch_all");
        assert_eq!(all, vec![(1, b"hello".to_vec()), (2, b"world".to_vec())]);
        mailbox.logout().await.expect("logout");
        let received = received.lock().expect("log").clone();
        assert!(
            received.contains(&"UID FETCH 1:2 (UID BODY.PEEK[])".to_string()),
            "{received:?}"
        );
    }

    #[tokio::test]
    async fn refused_moves_say_which_step_and_why() {
        let exists = "* LIST () \"/\" \"Handled\"\r\n{tag} OK done\r\n".to_string();
        for (capabilities, rules, says) in [
            (
                "IMAP4rev1 MOVE",
                vec![
                    ("LIST", exists.clone()),
                    ("UID MOVE", "{tag} NO [OVERQUOTA] full\r\n".to_string()),
                ],
                "`UID MOVE 3 \"Handled\"` failed: server answered NO: [OVERQUOTA] full",
            ),
            (
                "IMAP4rev1 MOVE",
                vec![
                    ("LIST", exists.clone()),
                    ("UID MOVE", "* BYE shutting down\r\n<close>".to_string()),
                ],
                "`UID MOVE 3 \"Handled\"` failed: the server closed the connection: \
                 shutting down",
            ),
            (
                "IMAP4rev1 UIDPLUS",
                vec![
                    ("LIST", exists.clone()),
                    ("UID COPY", "{tag} OK copied\r\n".to_string()),
                    ("UID STORE", "{tag} OK stored\r\n".to_string()),
                    ("EXPUNGE", "{tag} NO expunge refused\r\n".to_string()),
                ],
                "`UID EXPUNGE 3` failed: server answered NO: expunge refused",
            ),
            (
                "IMAP4rev1",
                vec![
                    ("LIST", exists.clone()),
                    ("UID COPY", "{tag} OK copied\r\n".to_string()),
                    ("UID STORE", "{tag} NO read-only\r\n".to_string()),
                ],
                "`UID STORE 3 +FLAGS.SILENT (\\Deleted)` failed: server answered NO: read-only",
            ),
            (
                "IMAP4rev1",
                vec![
                    ("LIST", exists.clone()),
                    ("UID COPY", "{tag} NO [TRYCREATE] gone\r\n".to_string()),
                ],
                "`UID COPY 3 \"Handled\"` failed: server answered NO: [TryCreate] gone",
            ),
        ] {
            let (mut mailbox, _) = open_scripted(capabilities, &rules).await;
            let err = mailbox.move_to(&[3], "Handled").await.expect_err(says);
            assert!(matches!(err, ImapError::Move { count: 1, .. }), "{err:?}");
            assert!(err.to_string().contains(says), "{err}");
        }

        // A folder the server will not create.
        let (mut mailbox, _) = open_scripted(
            "IMAP4rev1 MOVE",
            &[
                ("LIST", "{tag} OK nothing\r\n".to_string()),
                ("CREATE", "{tag} NO [CANNOT] bad name\r\n".to_string()),
            ],
        )
        .await;
        let err = mailbox.move_to(&[3], "Entwürfe").await.expect_err("CREATE");
        assert!(matches!(err, ImapError::CreateFolder { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("server answered NO: [CANNOT] bad name"),
            "{err}"
        );

        // Without MOVE or UIDPLUS: COPY, STORE \Deleted, EXPUNGE, in that order, the folder
        // created (modified UTF-7, quoted) and subscribed first.
        let (mut mailbox, received) = open_scripted(
            "IMAP4rev1",
            &[
                ("LIST", "{tag} OK nothing\r\n".to_string()),
                ("CREATE", "{tag} OK created\r\n".to_string()),
                ("SUBSCRIBE", "{tag} NO not today\r\n".to_string()),
                ("UID COPY", "{tag} OK copied\r\n".to_string()),
                ("UID STORE", "{tag} OK stored\r\n".to_string()),
                (
                    "EXPUNGE",
                    "* 1 EXPUNGE\r\n{tag} OK expunged\r\n".to_string(),
                ),
            ],
        )
        .await;
        mailbox
            .move_to(&[4, 3, 9], "Entwürfe \"x\"")
            .await
            .expect("move_to");
        mailbox.logout().await.expect("logout");
        let received = received.lock().expect("log").clone();
        let after_select = &received[3..];
        assert_eq!(
            after_select,
            [
                "LIST \"\" \"Entw&APw-rfe \\\"x\\\"\"",
                "CREATE \"Entw&APw-rfe \\\"x\\\"\"",
                "SUBSCRIBE \"Entw&APw-rfe \\\"x\\\"\"",
                "UID COPY 3:4,9 \"Entw&APw-rfe \\\"x\\\"\"",
                "UID STORE 3:4,9 +FLAGS.SILENT (\\Deleted)",
                "EXPUNGE",
                "LOGOUT",
            ]
        );
    }

    #[test]
    fn uid_sets_compress_ranges() {
        assert_eq!(uid_sets(&[5, 1, 2, 3, 3, 0, 9, 10]), vec!["1:3,5,9:10"]);
        assert!(uid_sets(&[]).is_empty());
        assert_eq!(
            uid_sets(&[u32::MAX, u32::MAX - 1]),
            vec!["4294967294:4294967295"]
        );
        let many: Vec<u32> = (1..=1000).map(|i| i * 2).collect();
        assert_eq!(uid_sets(&many).len(), 5);
    }

    #[test]
    fn batches_respect_the_byte_budget() {
        let items = [(1, 10), (2, 10), (3, 100), (4, 5)];
        assert_eq!(
            batches_by_size(&items, 25),
            vec![vec![1, 2], vec![3], vec![4]]
        );
    }

    #[test]
    fn mailbox_names_use_modified_utf7() {
        assert_eq!(encode_mailbox_name("INBOX"), "INBOX");
        assert_eq!(encode_mailbox_name("A&B"), "A&-B");
        assert_eq!(encode_mailbox_name("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(encode_mailbox_name("台北"), "&U,BTFw-");
        assert_eq!(
            encode_mailbox_name("~peter/mail/日本語"),
            "~peter/mail/&ZeVnLIqe-"
        );
    }

    #[test]
    fn server_status_is_tidied() {
        assert_eq!(
            tidy_status(
                r#"code: Some(AuthenticationFailed), info: Some("Authentication failed.")"#
            ),
            "[AuthenticationFailed] Authentication failed."
        );
        assert_eq!(
            tidy_status(r#"code: None, info: Some("Mailbox doesn't exist: X")"#),
            "Mailbox doesn't exist: X"
        );
        assert_eq!(
            tidy_status(
                r#"outcome: Outcome { code: None, information: Some("Mailbox doesn't exist: X") }"#
            ),
            "Mailbox doesn't exist: X"
        );
        assert_eq!(tidy_status("something else"), "something else");
    }
}
