//! Configuration: `notify.toml`, overridden by `NOTIFY_<KEY>` environment variables, overridden by
//! command-line flags. Owns defaults and validation of values, and holds them typed, parsed once
//! at load: the SMTP server ([`SmtpSettings`]: host, port, TLS mode, whether `tls=none` was
//! written, credentials), its CA certificates, the From and Reply-To mailboxes
//! ([`ConfiguredMailbox`]). Plain data: `mail::transport` builds its connections from it, and
//! this module imports nothing from `mail`. It does no I/O beyond reading the file and the CA
//! certificate file, and never prints a credential (see the `Debug` impls).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::contacts::Audience;

/// A configuration problem: which key, from where, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a key of the wrong type.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A key has a value that cannot be used.
    #[error("config key `{key}` (from {origin}): {message}")]
    Invalid {
        key: &'static str,
        origin: String,
        message: String,
    },
}

/// The raw file: every key optional so that a partial file works.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    smtp_url: Option<String>,
    smtp_ca_file: Option<String>,
    smtp_auth: Option<String>,
    oauth_tenant: Option<String>,
    oauth_client_id: Option<String>,
    oauth_scope: Option<String>,
    oauth_token_url: Option<String>,
    /// Never read from the file: present only to refuse it with a clear message.
    oauth_client_secret: Option<toml::Value>,
    outbox: Option<String>,
    contacts: Option<String>,
    templates: Option<String>,
    releases: Option<String>,
    from: Option<String>,
    reply_to: Option<String>,
    bounce_address: Option<String>,
    app_url: Option<String>,
    timezone: Option<String>,
    concurrency: Option<u64>,
    rate: Option<f64>,
    max_attempts: Option<u64>,
    retry_base_ms: Option<u64>,
    lease_seconds: Option<u64>,
    maintenance_minutes: Option<u64>,
    release_notes_audience: Option<String>,
    maintenance_audience: Option<String>,
    refresh_reminder: Option<String>,
    team_name: Option<String>,
    archive_url: Option<String>,
    graphql_engine_staging: Option<String>,
    graphql_engine_production: Option<String>,
    soft_bounce_limit: Option<u64>,
    soft_bounce_days: Option<u64>,
    provider: Option<String>,
    daily_recipient_limit: Option<u64>,
    max_removal_percent: Option<u64>,
    verp: Option<bool>,
    sns_topic_arns: Option<Vec<String>>,
    sns_certificate_dir: Option<String>,
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "the default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(name) => write!(f, "flag --{name}"),
        }
    }
}

/// Values given on the command line; `None` leaves the file/env value alone.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub database_url: Option<String>,
    pub smtp_url: Option<String>,
    pub outbox: Option<String>,
    pub contacts: Option<String>,
    pub from: Option<String>,
    pub concurrency: Option<u64>,
    pub rate: Option<f64>,
    pub timezone: Option<String>,
}

/// The resolved configuration used by every command.
#[derive(Clone)]
pub struct Config {
    /// Directory of the config file; relative paths in it are taken from here.
    pub base_dir: PathBuf,
    pub database_url: String,
    /// SMTP server URL as written, `None` to write messages to the outbox instead.
    pub smtp_url: Option<String>,
    /// The SMTP server of `smtp_url`, parsed at load, with the credentials of the URL or of
    /// `NOTIFY_SMTP_USER` / `NOTIFY_SMTP_PASSWORD` (which win).
    pub smtp: Option<SmtpSettings>,
    /// The certificates (PEM) of `smtp_ca_file`, trusted for the SMTP server's TLS besides the
    /// public roots; read and checked when the configuration is loaded.
    pub smtp_ca: Option<Vec<u8>>,
    /// How notify logs in to the SMTP server (`smtp_auth`).
    pub smtp_auth: SmtpAuth,
    /// The OAuth 2.0 client credentials for XOAUTH2: always set with `smtp_auth = "xoauth2"`,
    /// and also with `password` when every key is given (for the bounce mailbox over IMAP).
    pub oauth: Option<OAuthSettings>,
    pub outbox: PathBuf,
    pub contacts: PathBuf,
    pub templates: PathBuf,
    pub releases: PathBuf,
    pub from: ConfiguredMailbox,
    pub reply_to: Option<ConfiguredMailbox>,
    pub bounce_address: String,
    pub app_url: String,
    pub timezone: chrono_tz::Tz,
    pub concurrency: usize,
    /// Messages per second over the whole run; 0 = unlimited.
    pub rate: f64,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub lease_seconds: u64,
    pub maintenance_minutes: u64,
    pub release_notes_audience: Audience,
    pub maintenance_audience: Audience,
    pub refresh_reminder: String,
    pub team_name: String,
    /// Where the release-notes archive is published (its index); a release's page is
    /// `<archive_url>/<version>`. Empty: notices link to no archive.
    pub archive_url: String,
    /// graphql-engine versions for the release checklist (staging runs the newer one).
    pub graphql_engine_staging: String,
    pub graphql_engine_production: String,
    /// Soft bounces on this many different notices within `soft_bounce_days` flag an account.
    pub soft_bounce_limit: u32,
    pub soft_bounce_days: u32,
    /// The mail provider whose documented limits cap `concurrency`, `rate` and
    /// `daily_recipient_limit` (named in `provider`, or recognised from the SMTP host).
    pub provider: Option<Provider>,
    /// Recipients accepted in any 24 hours, over every notice; 0 = no limit.
    pub daily_recipient_limit: u64,
    /// A contacts import that would mark more than this share (percent) of the active contacts
    /// inactive is refused unless `--allow-removals`.
    pub max_removal_percent: u8,
    /// `notify serve`: the Amazon SNS topics whose SES notifications are accepted (exact ARNs).
    pub sns_topic_arns: Vec<String>,
    /// `notify serve`, for tests and closed networks: SNS signing certificates read from this
    /// folder (named as the certificate URL's file) instead of fetched. Every message is still
    /// verified against the certificate and the URL's host rule.
    pub sns_certificate_dir: Option<PathBuf>,
    /// VERP: each message's envelope sender is `bounce_address` with a `+TOKEN` naming its send.
    /// Off: the envelope sender is `bounce_address` itself and bounces are tied to sends by the
    /// returned Message-ID. Default on, off under the office365 profile unless `verp` is given
    /// (Exchange Online may refuse a plus-addressed sender the mailbox may not send as).
    pub verp: bool,
}

/// A mail provider's documented sending limits for one mailbox.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Provider {
    /// The name used in `provider = "…"`.
    pub name: &'static str,
    /// SMTP connections at once.
    pub concurrency: usize,
    /// Messages per second.
    pub rate: f64,
    /// Recipients in 24 hours.
    pub daily_recipients: u64,
}

/// Exchange Online SMTP client submission (smtp.office365.com): 30 messages a minute,
/// 10,000 recipients a day and 3 concurrent connections per mailbox.
pub const OFFICE365: Provider = Provider {
    name: "office365",
    concurrency: 3,
    rate: 0.5,
    daily_recipients: 10_000,
};

impl Provider {
    /// The profile called `name` (`office365`, also `exchange-online`).
    pub fn named(name: &str) -> Option<Provider> {
        match name.trim().to_ascii_lowercase().as_str() {
            "office365" | "office-365" | "exchange-online" | "exchange_online" | "o365" => {
                Some(OFFICE365)
            }
            _ => None,
        }
    }

    /// The profile recognised from an SMTP host name.
    pub fn for_host(host: &str) -> Option<Provider> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        (host == "smtp.office365.com" || host.ends_with(".protection.outlook.com"))
            .then_some(OFFICE365)
    }
}

/// How notify logs in to the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpAuth {
    /// AUTH PLAIN or LOGIN with `NOTIFY_SMTP_USER` and `NOTIFY_SMTP_PASSWORD`.
    Password,
    /// SASL XOAUTH2 with an OAuth 2.0 token from the client credentials grant (Exchange Online).
    Xoauth2,
}

/// The default `oauth_scope`: Exchange Online's SMTP and IMAP as the app's own permissions.
pub const DEFAULT_OAUTH_SCOPE: &str = "https://outlook.office365.com/.default";
/// The default `oauth_token_url`; `{tenant}` is replaced with `oauth_tenant`.
pub const DEFAULT_OAUTH_TOKEN_URL: &str =
    "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token";

/// An app's OAuth 2.0 client credentials and where to exchange them for tokens. The secret comes
/// only from `NOTIFY_OAUTH_CLIENT_SECRET` and `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthSettings {
    /// The token endpoint, checked by [`check_token_url`].
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub scope: String,
}

impl fmt::Debug for OAuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthSettings")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<set>")
            .field("scope", &self.scope)
            .finish()
    }
}

/// A token endpoint URL notify will send a client secret to: https, or plain http only to a
/// loopback address (127.0.0.0/8, ::1, localhost) for tests; no user name or password in it.
pub fn check_token_url(raw: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL ({e})"))?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err("the token URL must not carry a user name or password".into());
    }
    let loopback = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match u.scheme() {
        "https" if u.host().is_some() => Ok(u),
        "http" if loopback => Ok(u),
        "http" => Err(format!(
            "`{raw}` is plain http: the client secret would go in clear; use https (plain http is \
             allowed only to a loopback address, for tests)"
        )),
        other => Err(format!("`{raw}`: scheme `{other}` is not https")),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .field(
                "smtp_user",
                &self
                    .smtp
                    .as_ref()
                    .and_then(|s| s.user.as_ref())
                    .map(|_| "<set>"),
            )
            .field(
                "smtp_password",
                &self
                    .smtp
                    .as_ref()
                    .and_then(|s| s.password.as_ref())
                    .map(|_| "<set>"),
            )
            .field("smtp_auth", &self.smtp_auth)
            .field("oauth", &self.oauth)
            .field("outbox", &self.outbox)
            .field("contacts", &self.contacts)
            .field("from", &self.from)
            .field("timezone", &self.timezone)
            .field("concurrency", &self.concurrency)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// How to talk TLS to the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain SMTP (`smtp://`, the default, and `?tls=none`); with credentials, STARTTLS
    /// whenever offered unless `?tls=none` was written.
    None,
    /// STARTTLS when offered (`?tls=opportunistic`).
    Opportunistic,
    /// STARTTLS or fail (`?tls=required`).
    Required,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// The SMTP server of `smtp_url`, parsed once when the configuration is loaded, with the
/// credentials (`NOTIFY_SMTP_USER` / `NOTIFY_SMTP_PASSWORD` win over the URL's). Plain data:
/// `mail::transport` opens connections from it. `Display` and `Debug` never show a credential.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// `tls=none` (or `tls=off`) was written in the URL: the one way to let a password go in
    /// clear.
    pub explicit_plain: bool,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for SmtpSettings {
    /// The URL without credentials, safe to print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls == TlsMode::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        write!(f, "{scheme}://{}:{}", self.host, self.port)?;
        match self.tls {
            TlsMode::Required => write!(f, "?tls=required"),
            TlsMode::Opportunistic => write!(f, "?tls=opportunistic"),
            TlsMode::None if self.explicit_plain => write!(f, "?tls=none"),
            _ => Ok(()),
        }
    }
}

impl SmtpSettings {
    /// Parse `smtp://[user[:pass]@]host[:port][?tls=required|opportunistic|none]` or `smtps://…`.
    /// Credentials in `user`/`password` (from the environment) win over the URL's.
    pub fn parse(
        raw: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<SmtpSettings, String> {
        let u = url::Url::parse(raw)
            .map_err(|e| format!("`{}` is not a URL ({e})", redact_url(raw)))?;
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
        let mut explicit_plain = false;
        for (k, v) in u.query_pairs() {
            match (k.as_ref(), v.as_ref()) {
                ("tls", "required" | "starttls") if !implicit => tls = TlsMode::Required,
                ("tls", "opportunistic") if !implicit => tls = TlsMode::Opportunistic,
                ("tls", "none" | "off") if !implicit => {
                    tls = TlsMode::None;
                    explicit_plain = true;
                }
                ("tls", other) => {
                    return Err(format!(
                        "tls={other} is not supported here; use tls=required, tls=opportunistic or tls=none with smtp://"
                    ))
                }
                (other, _) => return Err(format!("unknown URL parameter `{other}`")),
            }
        }
        if tls != TlsMode::None {
            explicit_plain = false;
        }
        let port = u.port().unwrap_or(if implicit { 465 } else { 25 });
        let url_user = (!u.username().is_empty()).then(|| percent_decode(u.username()));
        let url_pass = u.password().map(percent_decode);
        Ok(SmtpSettings {
            host,
            port,
            tls,
            explicit_plain,
            user: user.map(str::to_string).or(url_user),
            password: password.map(str::to_string).or(url_pass),
        })
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
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

/// A mailbox from the configuration (`from`, `reply_to`): parsed once at load, and shown as it
/// was written.
#[derive(Clone, Debug)]
pub struct ConfiguredMailbox {
    mailbox: lettre::message::Mailbox,
    written: String,
}

impl ConfiguredMailbox {
    fn parse(key: &'static str, value: &str, origin: &Origin) -> Result<Self, ConfigError> {
        let mailbox =
            value
                .parse::<lettre::message::Mailbox>()
                .map_err(|e| ConfigError::Invalid {
                    key,
                    origin: origin.to_string(),
                    message: format!("`{value}` is not a mail address: {e}"),
                })?;
        Ok(ConfiguredMailbox {
            mailbox,
            written: value.to_string(),
        })
    }

    /// The parsed mailbox, for the message headers.
    pub fn mailbox(&self) -> &lettre::message::Mailbox {
        &self.mailbox
    }
}

impl fmt::Display for ConfiguredMailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// The longest VERP token notify adds to the bounce address's local part (`mail::verp` checks
/// at compile time that its tokens fit).
pub const VERP_TOKEN_MAX_LEN: usize = 27;

/// Check that the configured bounce address can carry a VERP token (`local+TOKEN@domain`).
pub fn check_bounce_address(addr: &str) -> Result<(), String> {
    let parsed: lettre::Address = addr
        .parse()
        .map_err(|e| format!("`{addr}` is not a mail address ({e})"))?;
    if parsed.user().contains('+') {
        return Err(format!(
            "`{addr}` already has a '+' in it; notify adds `+TOKEN` to the local part itself"
        ));
    }
    if parsed.user().len() + 1 + VERP_TOKEN_MAX_LEN > 64 {
        return Err(format!(
            "the local part of `{addr}` is too long to carry a VERP token (64 characters at most)"
        ));
    }
    Ok(())
}

/// A URL with any user name and password removed, safe to print.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("");
                let _ = u.set_password(None);
            }
            u.to_string()
        }
        Err(_) => "<unparseable url>".to_string(),
    }
}

/// The default refresh reminder, included in release notes and maintenance-end notices.
pub const DEFAULT_REFRESH_REMINDER: &str = "Please refresh Moped in your browser (Ctrl+F5 on Windows, Cmd+Shift+R on a Mac) so that you get the newest version.";

impl Config {
    /// Load from `path` (which may be absent when `required` is false), then the environment
    /// (`NOTIFY_<KEY>`), then `overrides`.
    pub fn load(
        path: &Path,
        required: bool,
        env: &BTreeMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let file: FileConfig = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                FileConfig::default()
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        let r = Resolver {
            env,
            file_path: path,
        };

        let (database_url, _) = r.string(
            "database_url",
            file.database_url,
            overrides.database_url.clone(),
            Some("sqlite://notify.db"),
        );
        let database_url = database_url.unwrap_or_default();
        let database_url = resolve_sqlite_url(&database_url, &base_dir);

        let (smtp_url, smtp_origin) =
            r.string("smtp_url", file.smtp_url, overrides.smtp_url.clone(), None);
        let smtp_url = smtp_url.filter(|s| !s.trim().is_empty());
        // Parsed here once, with the URL's own credentials; the environment's win below.
        let mut smtp = match &smtp_url {
            Some(u) => Some(SmtpSettings::parse(u, None, None).map_err(|message| {
                ConfigError::Invalid {
                    key: "smtp_url",
                    origin: smtp_origin.to_string(),
                    message,
                }
            })?),
            None => None,
        };

        let oauth_keys = OAuthKeys {
            smtp_auth: file.smtp_auth,
            tenant: file.oauth_tenant,
            client_id: file.oauth_client_id,
            scope: file.oauth_scope,
            token_url: file.oauth_token_url,
            secret_in_file: file.oauth_client_secret.is_some(),
        };
        let url_user = smtp.as_ref().is_some_and(|s| s.user.is_some());
        let (smtp_auth, oauth) = r.oauth(oauth_keys, env, url_user)?;
        if let Some(s) = &mut smtp {
            if let Some(user) = env.get("NOTIFY_SMTP_USER") {
                s.user = Some(user.clone());
            }
            if let Some(password) = env.get("NOTIFY_SMTP_PASSWORD") {
                s.password = Some(password.clone());
            }
        }

        let (smtp_ca_file, ca_origin) = r.string("smtp_ca_file", file.smtp_ca_file, None, None);
        let smtp_ca =
            match smtp_ca_file.filter(|s| !s.trim().is_empty()) {
                Some(p) => Some(read_ca_file(&base_dir.join(p)).map_err(|message| {
                    ConfigError::Invalid {
                        key: "smtp_ca_file",
                        origin: ca_origin.to_string(),
                        message,
                    }
                })?),
                None => None,
            };

        let path_key = |key: &'static str, v: Option<String>, o: Option<String>, d: &str| {
            let (v, _) = r.string(key, v, o, Some(d));
            base_dir.join(v.unwrap_or_default())
        };
        let outbox = path_key("outbox", file.outbox, overrides.outbox.clone(), "outbox");
        let contacts = path_key(
            "contacts",
            file.contacts,
            overrides.contacts.clone(),
            "contacts/moped_users.csv",
        );
        let templates = path_key("templates", file.templates, None, "templates");
        let releases = path_key("releases", file.releases, None, "releases");
        let sns_certificate_dir = {
            let (v, _) = r.string("sns_certificate_dir", file.sns_certificate_dir, None, None);
            v.filter(|d| !d.is_empty()).map(|d| base_dir.join(d))
        };
        let sns_topic_arns = match r.env.get("NOTIFY_SNS_TOPIC_ARNS") {
            Some(list) => list
                .split(',')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect(),
            None => file.sns_topic_arns.unwrap_or_default(),
        };

        let (from, from_origin) = r.string(
            "from",
            file.from,
            overrides.from.clone(),
            Some("Moped Team <moped@austintexas.gov>"),
        );
        let from = ConfiguredMailbox::parse("from", &from.unwrap_or_default(), &from_origin)?;
        let (reply_to, reply_origin) = r.string("reply_to", file.reply_to, None, None);
        let reply_to = match reply_to.filter(|s| !s.trim().is_empty()) {
            Some(rt) => Some(ConfiguredMailbox::parse("reply_to", &rt, &reply_origin)?),
            None => None,
        };
        let (bounce, bounce_origin) = r.string(
            "bounce_address",
            file.bounce_address,
            None,
            Some("moped-bounces@austintexas.gov"),
        );
        let bounce_address = bounce.unwrap_or_default();
        check_bounce_address(&bounce_address).map_err(|message| ConfigError::Invalid {
            key: "bounce_address",
            origin: bounce_origin.to_string(),
            message,
        })?;

        let (app_url, app_origin) = r.string(
            "app_url",
            file.app_url,
            None,
            Some("https://moped.austinmobility.io"),
        );
        let app_url = app_url.unwrap_or_default();
        check_http_url("app_url", &app_origin, &app_url)?;

        let (tz, tz_origin) = r.string(
            "timezone",
            file.timezone,
            overrides.timezone.clone(),
            Some("America/Chicago"),
        );
        let tz = tz.unwrap_or_default();
        let timezone: chrono_tz::Tz = tz.parse().map_err(|_| ConfigError::Invalid {
            key: "timezone",
            origin: tz_origin.to_string(),
            message: format!("`{tz}` is not an IANA time zone name such as America/Chicago"),
        })?;

        let concurrency = r.whole(
            "concurrency",
            file.concurrency,
            overrides.concurrency,
            4,
            1,
            1000,
        )? as usize;
        let rate = r.rate(file.rate, overrides.rate)?;
        let max_attempts = r.whole("max_attempts", file.max_attempts, None, 4, 1, 100)? as u32;
        let retry_base_ms = r.whole("retry_base_ms", file.retry_base_ms, None, 1000, 0, 600_000)?;
        let lease_seconds = r.whole("lease_seconds", file.lease_seconds, None, 30, 1, 86_400)?;
        let maintenance_minutes = r.whole(
            "maintenance_minutes",
            file.maintenance_minutes,
            None,
            60,
            1,
            10_080,
        )?;
        let soft_bounce_limit = r.whole(
            "soft_bounce_limit",
            file.soft_bounce_limit,
            None,
            3,
            1,
            1000,
        )? as u32;
        let soft_bounce_days =
            r.whole("soft_bounce_days", file.soft_bounce_days, None, 30, 1, 3650)? as u32;
        let max_removal_percent = r.whole(
            "max_removal_percent",
            file.max_removal_percent,
            None,
            20,
            0,
            100,
        )? as u8;

        let (provider_name, provider_origin) = r.string("provider", file.provider, None, None);
        let provider = match provider_name.filter(|s| !s.trim().is_empty()) {
            Some(name) if name.trim().eq_ignore_ascii_case("none") => None,
            Some(name) => Some(Provider::named(&name).ok_or_else(|| ConfigError::Invalid {
                key: "provider",
                origin: provider_origin.to_string(),
                message: format!("unknown provider `{name}`; known: office365 (or \"none\")"),
            })?),
            None => smtp.as_ref().and_then(|s| Provider::for_host(&s.host)),
        };
        let daily_recipient_limit = r.whole(
            "daily_recipient_limit",
            file.daily_recipient_limit,
            None,
            0,
            0,
            100_000_000,
        )?;
        // A provider's limits are ceilings: lower settings stay, higher or unlimited ones are
        // brought down to what the provider allows.
        let (concurrency, rate, daily_recipient_limit) = match provider {
            Some(p) => (
                concurrency.min(p.concurrency),
                if rate <= 0.0 || rate > p.rate {
                    p.rate
                } else {
                    rate
                },
                match daily_recipient_limit {
                    0 => p.daily_recipients,
                    n => n.min(p.daily_recipients),
                },
            ),
            None => (concurrency, rate, daily_recipient_limit),
        };

        let (verp, verp_origin) = r.string("verp", file.verp.map(|v| v.to_string()), None, None);
        let verp = match verp {
            None => provider != Some(OFFICE365),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => true,
                "false" | "no" | "off" | "0" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "verp",
                        origin: verp_origin.to_string(),
                        message: format!("`{v}` is not true or false"),
                    })
                }
            },
        };

        let audience = |key: &'static str, v: Option<String>, d: &str| {
            let (v, origin) = r.string(key, v, None, Some(d));
            let v = v.unwrap_or_default();
            v.parse::<Audience>()
                .map_err(|message| ConfigError::Invalid {
                    key,
                    origin: origin.to_string(),
                    message,
                })
        };
        let release_notes_audience =
            audience("release_notes_audience", file.release_notes_audience, "mug")?;
        let maintenance_audience =
            audience("maintenance_audience", file.maintenance_audience, "users")?;

        let (refresh_reminder, _) = r.string(
            "refresh_reminder",
            file.refresh_reminder,
            None,
            Some(DEFAULT_REFRESH_REMINDER),
        );
        let (team_name, _) = r.string("team_name", file.team_name, None, Some("The Moped team"));
        let (archive_url, archive_origin) = r.string("archive_url", file.archive_url, None, None);
        let archive_url = archive_url.unwrap_or_default();
        if !archive_url.is_empty() {
            check_http_url("archive_url", &archive_origin, &archive_url)?;
        }
        let (gql_staging, _) = r.string(
            "graphql_engine_staging",
            file.graphql_engine_staging,
            None,
            None,
        );
        let (gql_production, _) = r.string(
            "graphql_engine_production",
            file.graphql_engine_production,
            None,
            None,
        );

        Ok(Config {
            base_dir,
            database_url,
            smtp_url,
            smtp,
            smtp_ca,
            smtp_auth,
            oauth,
            outbox,
            contacts,
            templates,
            releases,
            from,
            reply_to,
            bounce_address,
            app_url: app_url.trim_end_matches('/').to_string(),
            timezone,
            concurrency,
            rate,
            max_attempts,
            retry_base_ms,
            lease_seconds,
            maintenance_minutes,
            release_notes_audience,
            maintenance_audience,
            refresh_reminder: refresh_reminder.unwrap_or_default(),
            team_name: team_name.unwrap_or_default(),
            archive_url: archive_url.trim_end_matches('/').to_string(),
            graphql_engine_staging: gql_staging.unwrap_or_default(),
            graphql_engine_production: gql_production.unwrap_or_default(),
            soft_bounce_limit,
            soft_bounce_days,
            provider,
            daily_recipient_limit,
            max_removal_percent,
            sns_topic_arns,
            sns_certificate_dir,
            verp,
        })
    }
}

/// The file's values of `smtp_auth` and the `oauth_*` keys.
struct OAuthKeys {
    smtp_auth: Option<String>,
    tenant: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    token_url: Option<String>,
    secret_in_file: bool,
}

struct Resolver<'a> {
    env: &'a BTreeMap<String, String>,
    file_path: &'a Path,
}

impl Resolver<'_> {
    fn string(
        &self,
        key: &'static str,
        file: Option<String>,
        flag: Option<String>,
        default: Option<&str>,
    ) -> (Option<String>, Origin) {
        if let Some(v) = flag {
            return (Some(v), Origin::Flag(key));
        }
        let var = format!("NOTIFY_{}", key.to_ascii_uppercase());
        if let Some(v) = self.env.get(&var) {
            return (Some(v.clone()), Origin::Env(var));
        }
        if let Some(v) = file {
            return (Some(v), Origin::File(self.file_path.to_path_buf()));
        }
        (default.map(str::to_string), Origin::Default)
    }

    fn number(
        &self,
        key: &'static str,
        file: Option<f64>,
        flag: Option<f64>,
        default: f64,
        min: f64,
        max: f64,
    ) -> Result<f64, ConfigError> {
        self.number_from(key, file, flag, default, min, max)
            .map(|(value, _)| value)
    }

    /// [`Self::number`], and where the value came from.
    fn number_from(
        &self,
        key: &'static str,
        file: Option<f64>,
        flag: Option<f64>,
        default: f64,
        min: f64,
        max: f64,
    ) -> Result<(f64, Origin), ConfigError> {
        let (value, origin) = if let Some(v) = flag {
            (v, Origin::Flag(key))
        } else {
            let var = format!("NOTIFY_{}", key.to_ascii_uppercase());
            if let Some(raw) = self.env.get(&var) {
                let v = raw
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| ConfigError::Invalid {
                        key,
                        origin: Origin::Env(var.clone()).to_string(),
                        message: format!("`{raw}` is not a number"),
                    })?;
                (v, Origin::Env(var))
            } else if let Some(v) = file {
                (v, Origin::File(self.file_path.to_path_buf()))
            } else {
                (default, Origin::Default)
            }
        };
        if !value.is_finite() || value < min || value > max {
            return Err(ConfigError::Invalid {
                key,
                origin: origin.to_string(),
                message: format!("{value} is outside {min}..={max}"),
            });
        }
        Ok((value, origin))
    }

    /// `rate`: messages a second, 0 for unlimited. Below one message an hour a notice to the
    /// users group would take weeks: such a value is a slip (a per-hour figure typed as per
    /// second, or a sign), so it is refused rather than obeyed.
    fn rate(&self, file: Option<f64>, flag: Option<f64>) -> Result<f64, ConfigError> {
        const ONE_AN_HOUR: f64 = 1.0 / 3600.0;
        let (value, origin) = self.number_from("rate", file, flag, 0.0, 0.0, 100_000.0)?;
        if value > 0.0 && value < ONE_AN_HOUR {
            return Err(ConfigError::Invalid {
                key: "rate",
                origin: origin.to_string(),
                message: format!(
                    "{value} messages a second is less than one an hour (the least is 1/3600 = 0.000278); use 0 for no limit"
                ),
            });
        }
        Ok(value)
    }
}

impl Resolver<'_> {
    /// `smtp_auth` and the OAuth 2.0 keys, checked: XOAUTH2 needs the client id, a tenant or a
    /// token URL, the secret (only from `NOTIFY_OAUTH_CLIENT_SECRET`) and the mailbox
    /// (`NOTIFY_SMTP_USER`, or the user in `smtp_url`).
    fn oauth(
        &self,
        file: OAuthKeys,
        env: &BTreeMap<String, String>,
        url_user: bool,
    ) -> Result<(SmtpAuth, Option<OAuthSettings>), ConfigError> {
        if file.secret_in_file {
            return Err(ConfigError::Invalid {
                key: "oauth_client_secret",
                origin: Origin::File(self.file_path.to_path_buf()).to_string(),
                message: "the client secret is read only from the environment variable \
                          NOTIFY_OAUTH_CLIENT_SECRET; remove it from the file"
                    .into(),
            });
        }
        let (auth, auth_origin) = self.string("smtp_auth", file.smtp_auth, None, Some("password"));
        let auth = auth.unwrap_or_default();
        let smtp_auth = match auth.trim().to_ascii_lowercase().as_str() {
            "password" | "" => SmtpAuth::Password,
            "xoauth2" => SmtpAuth::Xoauth2,
            other => {
                return Err(ConfigError::Invalid {
                    key: "smtp_auth",
                    origin: auth_origin.to_string(),
                    message: format!("`{other}` is not one of \"password\", \"xoauth2\""),
                })
            }
        };
        let given = |v: Option<String>| {
            v.filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_string())
        };
        let (tenant, tenant_origin) = self.string("oauth_tenant", file.tenant, None, None);
        let tenant = given(tenant);
        if let Some(t) = &tenant {
            if !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(ConfigError::Invalid {
                    key: "oauth_tenant",
                    origin: tenant_origin.to_string(),
                    message: format!(
                        "`{}` is not a tenant id or domain (letters, digits, '-' and '.')",
                        crate::inert::line(t)
                    ),
                });
            }
        }
        let (client_id, id_origin) = self.string("oauth_client_id", file.client_id, None, None);
        let client_id = given(client_id);
        let (scope, _) = self.string("oauth_scope", file.scope, None, Some(DEFAULT_OAUTH_SCOPE));
        let scope = given(scope).unwrap_or_else(|| DEFAULT_OAUTH_SCOPE.to_string());
        let (url, url_origin) = self.string("oauth_token_url", file.token_url, None, None);
        let url = given(url);
        let secret = env
            .get("NOTIFY_OAUTH_CLIENT_SECRET")
            .filter(|s| !s.is_empty())
            .cloned();
        let xoauth2 = smtp_auth == SmtpAuth::Xoauth2;
        let needed = |key: &'static str, origin: String, message: &str| ConfigError::Invalid {
            key,
            origin,
            message: format!("smtp_auth = \"xoauth2\" needs {message}"),
        };
        if xoauth2 {
            if client_id.is_none() {
                return Err(needed(
                    "oauth_client_id",
                    id_origin.to_string(),
                    "the app's client id (application id) in oauth_client_id",
                ));
            }
            if tenant.is_none() && url.is_none() {
                return Err(needed(
                    "oauth_tenant",
                    tenant_origin.to_string(),
                    "the directory (tenant) id in oauth_tenant, or oauth_token_url",
                ));
            }
            if secret.is_none() {
                return Err(needed(
                    "oauth_client_secret",
                    "the environment".into(),
                    "the app's client secret in the environment variable NOTIFY_OAUTH_CLIENT_SECRET",
                ));
            }
            if !url_user
                && env
                    .get("NOTIFY_SMTP_USER")
                    .is_none_or(|u| u.trim().is_empty())
            {
                return Err(needed(
                    "smtp_user",
                    "the environment".into(),
                    "the mailbox to send as in NOTIFY_SMTP_USER (its address)",
                ));
            }
        }
        let (Some(client_id), Some(client_secret)) = (client_id, secret) else {
            return Ok((smtp_auth, None));
        };
        let token_url = match (url, &tenant) {
            (Some(u), Some(t)) => u.replace("{tenant}", t),
            (Some(u), None) => u,
            (None, Some(t)) => DEFAULT_OAUTH_TOKEN_URL.replace("{tenant}", t),
            (None, None) => return Ok((smtp_auth, None)),
        };
        check_token_url(&token_url).map_err(|message| ConfigError::Invalid {
            key: "oauth_token_url",
            // The URL as written, or the default one the tenant was put into.
            origin: match url_origin {
                Origin::Default => tenant_origin.to_string(),
                written => written.to_string(),
            },
            message,
        })?;
        Ok((
            smtp_auth,
            Some(OAuthSettings {
                token_url,
                client_id,
                client_secret,
                scope,
            }),
        ))
    }

    /// A whole number in `min..=max` (an environment value like `2.5` is refused, not cut).
    fn whole(
        &self,
        key: &'static str,
        file: Option<u64>,
        flag: Option<u64>,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let v = self.number(
            key,
            file.map(|v| v as f64),
            flag.map(|v| v as f64),
            default as f64,
            min as f64,
            max as f64,
        )?;
        if v.fract() != 0.0 {
            let var = format!("NOTIFY_{}", key.to_ascii_uppercase());
            return Err(ConfigError::Invalid {
                key,
                origin: Origin::Env(var).to_string(),
                message: format!("{v} is not a whole number"),
            });
        }
        Ok(v as u64)
    }
}

/// Make a relative SQLite path relative to the config file's directory and ask SQLite to create
/// the file when it does not exist.
fn resolve_sqlite_url(url: &str, base: &Path) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_string();
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path == ":memory:" {
        return url.to_string();
    }
    let full = if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        base.join(path)
    };
    let mut query: Vec<String> = query
        .map(|q| q.split('&').map(str::to_string).collect())
        .unwrap_or_default();
    if !query.iter().any(|q| q.starts_with("mode=")) {
        query.push("mode=rwc".to_string());
    }
    format!("sqlite://{}?{}", full.display(), query.join("&"))
}

/// The process environment as a map (only `NOTIFY_*` keys matter).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("NOTIFY_"))
        .collect()
}

/// `value` (the setting `key`, from `origin`) must be an http(s) URL.
fn check_http_url(key: &'static str, origin: &Origin, value: &str) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Ok(()),
        _ => Err(ConfigError::Invalid {
            key,
            origin: origin.to_string(),
            message: format!("`{value}` is not an http(s) URL"),
        }),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.toml");
        std::fs::write(&path, text).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(&path, true, &env, &Overrides::default())
    }

    #[test]
    fn defaults_work_with_an_empty_file() {
        let c = load("", &[]).unwrap();
        assert!(c.database_url.starts_with("sqlite://"));
        assert!(c.database_url.ends_with("notify.db?mode=rwc"));
        assert!(c.smtp_url.is_none());
        assert_eq!(c.timezone, chrono_tz::America::Chicago);
        assert_eq!(c.release_notes_audience, Audience::Mug);
        assert_eq!(c.maintenance_audience, Audience::Users);
    }

    #[test]
    fn the_office365_profile_caps_the_limits() {
        // Recognised from the host: Exchange Online's documented limits replace the defaults.
        let c = load(
            "smtp_url = \"smtp://smtp.office365.com:587?tls=required\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.provider, Some(OFFICE365));
        assert_eq!(
            (c.concurrency, c.rate, c.daily_recipient_limit),
            (3, 0.5, 10_000)
        );
        // Named; settings below the limits stay, settings above are brought down.
        let c = load(
            "provider = \"office365\"\nconcurrency = 2\nrate = 5\ndaily_recipient_limit = 500\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            (c.concurrency, c.rate, c.daily_recipient_limit),
            (2, 0.5, 500)
        );
        let c = load("provider = \"office365\"\nrate = 0.1\n", &[]).unwrap();
        assert_eq!((c.concurrency, c.rate), (3, 0.1));
        // Turned off by name; no profile for other hosts.
        let c = load(
            "provider = \"none\"\nsmtp_url = \"smtp://smtp.office365.com:587\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            (c.provider, c.concurrency, c.daily_recipient_limit),
            (None, 4, 0)
        );
        let c = load("smtp_url = \"smtp://relay.austintexas.gov:25\"\n", &[]).unwrap();
        assert_eq!(c.provider, None);
        let e = load("provider = \"gmail\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("provider") && e.contains("office365"), "{e}");
    }

    #[test]
    fn verp_is_on_unless_off_or_the_office365_profile_without_the_key() {
        assert!(load("", &[]).unwrap().verp);
        assert!(!load("verp = false\n", &[]).unwrap().verp);
        let o365 = "smtp_url = \"smtp://smtp.office365.com:587?tls=required\"\n";
        assert!(!load(o365, &[]).unwrap().verp, "the profile turns it off");
        assert!(!load("provider = \"office365\"\n", &[]).unwrap().verp);
        // Given explicitly, the key wins over the profile, from the file or the environment.
        assert!(load(&format!("{o365}verp = true\n"), &[]).unwrap().verp);
        assert!(load(o365, &[("NOTIFY_VERP", "true")]).unwrap().verp);
        assert!(!load("verp = true\n", &[("NOTIFY_VERP", "0")]).unwrap().verp);
        let e = load("", &[("NOTIFY_VERP", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("verp") && e.contains("NOTIFY_VERP") && e.contains("maybe"),
            "{e}"
        );
        let e = load("verp = \"yes\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("verp"), "{e}");
    }

    #[test]
    fn environment_beats_file_and_flags_beat_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.toml");
        std::fs::write(&path, "concurrency = 2\nrate = 5.0\n").unwrap();
        let env: BTreeMap<_, _> = [("NOTIFY_CONCURRENCY".to_string(), "7".to_string())].into();
        let c = Config::load(&path, true, &env, &Overrides::default()).unwrap();
        assert_eq!(c.concurrency, 7);
        assert_eq!(c.rate, 5.0);
        let o = Overrides {
            concurrency: Some(9),
            ..Default::default()
        };
        let c = Config::load(&path, true, &env, &o).unwrap();
        assert_eq!(c.concurrency, 9);
    }

    #[test]
    fn bad_values_name_key_and_origin() {
        let e = load("timezone = \"Mars/Olympus\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("timezone") && e.contains("notify.toml"), "{e}");
        let e = load("", &[("NOTIFY_RATE", "fast")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("NOTIFY_RATE") && e.contains("fast"), "{e}");
        let e = load("", &[("NOTIFY_CONCURRENCY", "2.5")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("NOTIFY_CONCURRENCY") && e.contains("whole"),
            "{e}"
        );
        let e = load("bogus_key = 1\n", &[]).unwrap_err().to_string();
        assert!(e.contains("bogus_key"), "{e}");
        let e = load("smtp_url = \"http://x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("smtp_url"), "{e}");
    }

    #[test]
    fn debug_never_shows_credentials() {
        let c = load("smtp_url = \"smtp://alice:s3cret@mail.example:25\"\n", &[]).unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("alice"),
            "{shown}"
        );
        let c = load(
            "smtp_auth = \"xoauth2\"\noauth_tenant = \"contoso\"\noauth_client_id = \"app\"\n",
            &[
                ("NOTIFY_OAUTH_CLIENT_SECRET", "Oauth~S3cret"),
                ("NOTIFY_SMTP_USER", "moped@austintexas.gov"),
            ],
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("Oauth~S3cret") && shown.contains("Xoauth2"),
            "{shown}"
        );
    }

    #[test]
    fn archive_url_and_graphql_engine_versions_are_read_and_checked() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.archive_url, "");
        assert_eq!(c.graphql_engine_staging, "");
        let c = load(
            "archive_url = \"https://moped.austinmobility.io/releases/\"\ngraphql_engine_staging = \"2.50.0\"\n",
            &[("NOTIFY_GRAPHQL_ENGINE_PRODUCTION", "2.49.5")],
        )
        .unwrap();
        assert_eq!(c.archive_url, "https://moped.austinmobility.io/releases");
        assert_eq!(
            (
                c.graphql_engine_staging.as_str(),
                c.graphql_engine_production.as_str()
            ),
            ("2.50.0", "2.49.5")
        );
        let e = load("archive_url = \"ftp://example.org/notes\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("archive_url"), "{e}");
        assert!(e.to_string().contains("not an http(s) URL"), "{e}");
    }

    #[test]
    fn xoauth2_needs_its_keys_and_takes_each_from_the_environment_too() {
        let secret = ("NOTIFY_OAUTH_CLIENT_SECRET", "s3cret");
        let user = ("NOTIFY_SMTP_USER", "moped@austintexas.gov");
        // Password is the default; no OAuth settings without their keys.
        let c = load("", &[]).unwrap();
        assert_eq!((c.smtp_auth, c.oauth.is_none()), (SmtpAuth::Password, true));
        // The tenant goes into the default token URL; the scope has its default.
        let c = load(
            "smtp_auth = \"xoauth2\"\noauth_tenant = \"contoso.onmicrosoft.com\"\noauth_client_id = \"app\"\n",
            &[secret, user],
        )
        .unwrap();
        let o = c.oauth.unwrap();
        assert_eq!(c.smtp_auth, SmtpAuth::Xoauth2);
        assert_eq!(
            o.token_url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(
            (o.client_id.as_str(), o.client_secret.as_str()),
            ("app", "s3cret")
        );
        assert_eq!(o.scope, DEFAULT_OAUTH_SCOPE);
        // Every key from the environment; a token URL on loopback may be plain http.
        let c = load(
            "",
            &[
                ("NOTIFY_SMTP_AUTH", "xoauth2"),
                ("NOTIFY_OAUTH_CLIENT_ID", "env-app"),
                ("NOTIFY_OAUTH_TENANT", "t1"),
                ("NOTIFY_OAUTH_SCOPE", "https://example.org/.default"),
                (
                    "NOTIFY_OAUTH_TOKEN_URL",
                    "http://127.0.0.1:8080/{tenant}/token",
                ),
                secret,
                user,
            ],
        )
        .unwrap();
        let o = c.oauth.unwrap();
        assert_eq!(o.token_url, "http://127.0.0.1:8080/t1/token");
        assert_eq!(
            (o.client_id.as_str(), o.scope.as_str()),
            ("env-app", "https://example.org/.default")
        );
        // What is missing is named.
        let xo = "smtp_auth = \"xoauth2\"\noauth_tenant = \"t\"\noauth_client_id = \"app\"\n";
        let e = load(xo, &[user]).unwrap_err().to_string();
        assert!(e.contains("NOTIFY_OAUTH_CLIENT_SECRET"), "{e}");
        let e = load(xo, &[secret]).unwrap_err().to_string();
        assert!(e.contains("NOTIFY_SMTP_USER"), "{e}");
        let e = load(
            "smtp_auth = \"xoauth2\"\noauth_tenant = \"t\"\n",
            &[secret, user],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("oauth_client_id"), "{e}");
        let e = load(
            "smtp_auth = \"xoauth2\"\noauth_client_id = \"a\"\n",
            &[secret, user],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("oauth_tenant"), "{e}");
        // The mailbox may be the user in smtp_url.
        let c = load(
            &format!("{xo}smtp_url = \"smtp://moped%40austintexas.gov@smtp.office365.com:587\"\n"),
            &[secret],
        );
        assert!(c.is_ok(), "{c:?}");
        // Bad values.
        let e = load("smtp_auth = \"oauth\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("smtp_auth") && e.contains("xoauth2"), "{e}");
        let e = load(
            &format!("{xo}oauth_token_url = \"http://login.example.org/t/token\"\n"),
            &[secret, user],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("oauth_token_url") && e.contains("https"), "{e}");
        let e = load(
            "smtp_auth = \"xoauth2\"\noauth_tenant = \"t/../x\"\noauth_client_id = \"a\"\n",
            &[secret, user],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("oauth_tenant"), "{e}");
        // The secret is never read from the file.
        let e = load("oauth_client_secret = \"in-file\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("NOTIFY_OAUTH_CLIENT_SECRET") && !e.contains("in-file"),
            "{e}"
        );
    }

    #[test]
    fn rates_below_one_an_hour_are_refused_with_their_origin() {
        assert_eq!(load("rate = 0.0\n", &[]).unwrap().rate, 0.0);
        assert_eq!(load("", &[("NOTIFY_RATE", "0.0003")]).unwrap().rate, 0.0003);
        let e = load("rate = 0.0001\n", &[]).unwrap_err().to_string();
        assert!(
            e.contains("`rate`") && e.contains("notify.toml") && e.contains("one an hour"),
            "{e}"
        );
        let e = load("", &[("NOTIFY_RATE", "1e-9")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("NOTIFY_RATE") && e.contains("one an hour"),
            "{e}"
        );
        for bad in ["-1", "NaN", "inf"] {
            let e = load("", &[("NOTIFY_RATE", bad)]).unwrap_err().to_string();
            assert!(e.contains("NOTIFY_RATE"), "{bad}: {e}");
        }
        let e = load("rate = nan\n", &[]).unwrap_err().to_string();
        assert!(e.contains("`rate`"), "{e}");
    }

    #[test]
    fn the_smtp_server_and_mailboxes_are_parsed_once_at_load() {
        let c = load(
            "smtp_url = \"smtp://url-user:url-pw@mail.example:2525?tls=required\"\n\
             from = \"Moped Team <moped@austintexas.gov>\"\nreply_to = \"help@austintexas.gov\"\n",
            &[("NOTIFY_SMTP_PASSWORD", "env-pw")],
        )
        .unwrap();
        let smtp = c.smtp.as_ref().expect("smtp_url is set");
        assert_eq!(
            (smtp.host.as_str(), smtp.port, smtp.tls),
            ("mail.example", 2525, TlsMode::Required)
        );
        // The environment's credentials win over the URL's, each on its own.
        assert_eq!(smtp.user.as_deref(), Some("url-user"));
        assert_eq!(smtp.password.as_deref(), Some("env-pw"));
        assert_eq!(smtp.to_string(), "smtp://mail.example:2525?tls=required");
        // Shown as written; parsed for the headers.
        assert_eq!(c.from.to_string(), "Moped Team <moped@austintexas.gov>");
        assert_eq!(c.from.mailbox().email.to_string(), "moped@austintexas.gov");
        assert_eq!(
            c.reply_to.as_ref().map(|m| m.mailbox().email.to_string()),
            Some("help@austintexas.gov".to_string())
        );
        let c = load("", &[]).unwrap();
        assert!(c.smtp.is_none() && c.reply_to.is_none());
        let e = load("reply_to = \"not an address\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("reply_to") && e.contains("not an address"),
            "{e}"
        );
    }
}
