//! A throwaway Dovecot IMAP server for integration tests.
//!
//! [`Dovecot::start`] writes a self-contained configuration into a temporary directory (no
//! `/etc/dovecot` involved): IMAP only, plain text on `127.0.0.1:<free port>`, no TLS, one
//! `passwd-file` user whose Maildir lives in the same directory, logs in `dovecot.log` there.
//! [`Dovecot::start_starttls`] is the same server with STARTTLS under a given certificate and
//! TLS required before any login (`ssl = required`, `disable_plaintext_auth = yes`: LOGIN in
//! clear is refused, and the log marks each login made over TLS with `TLS`). It listens on
//! `127.0.0.2`, so that clients (whose loopback source address is 127.0.0.1) are not taken for
//! the server itself, which Dovecot would count as a secure connection and let log in in clear.
//! Messages given to `start` are put in the user's `Maildir/new` before the server starts.
//! Dropping the value stops the server (SIGTERM, then SIGKILL) and removes the directory.
//!
//! [`Dovecot::start_oauth2`] is the STARTTLS server signing in only with SASL XOAUTH2 and
//! OAUTHBEARER through Dovecot's `oauth2` passdb (in `dovecot-core`), which checks each bearer
//! token by POSTing `token=<token>` to an introspection endpoint (the test OAuth server's
//! `introspect_url()`) and accepts it when the answer has `"active": true` and a `username`
//! equal to the user signing in. LOGIN and PLAIN are not offered.
//!
//! Needs Debian's `dovecot-imapd` (`apt-get install -y dovecot-imapd`); without it `start`
//! panics saying so: tests that need a real IMAP server must fail, not skip. Works as root (mail
//! is owned by `nobody`, Dovecot's own processes run as `dovecot`/`dovenull`) and as an ordinary
//! user (everything runs as that user). Written for Dovecot 2.3 (Debian 12); 2.4 renamed
//! settings.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Dovecot binary Debian installs.
pub const DOVECOT: &str = "/usr/sbin/dovecot";
/// What Dovecot's IMAP service needs besides the master binary.
const IMAP_BINARY: &str = "/usr/lib/dovecot/imap";

/// A running Dovecot; stopped when dropped.
pub struct Dovecot {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The address Dovecot listens on (127.0.0.1; 127.0.0.2 with STARTTLS).
    pub host: &'static str,
    /// The IMAP port on `host`.
    pub port: u16,
    /// The one user's login name.
    pub user: String,
    /// The one user's password.
    pub password: String,
    /// STARTTLS is offered (and required before login).
    pub starttls: bool,
}

impl Dovecot {
    /// Start Dovecot with one user and `messages` (file name, raw bytes) in its `Maildir/new`.
    /// Panics with Dovecot's log when it does not come up.
    pub fn start(user: &str, password: &str, messages: &[(&str, &[u8])]) -> Dovecot {
        Dovecot::start_with(user, password, messages, "")
    }

    /// [`Dovecot::start`] offering STARTTLS under this certificate chain and key (PEM), with
    /// TLS required before any login.
    pub fn start_starttls(
        user: &str,
        password: &str,
        messages: &[(&str, &[u8])],
        cert_pem: &str,
        key_pem: &str,
    ) -> Dovecot {
        Dovecot::launch(
            user,
            password,
            messages,
            "",
            Some((cert_pem, key_pem)),
            None,
        )
    }

    /// [`Dovecot::start_starttls`] where the only way in is `AUTHENTICATE XOAUTH2` (or
    /// OAUTHBEARER) with a bearer token that the introspection endpoint at `introspect_url`
    /// (`http://127.0.0.1:PORT/...`, form POST `token=...`) calls active for `user`. `extra`
    /// is appended to the configuration (e.g. an `imap_capability` without `SASL-IR`).
    pub fn start_oauth2(
        user: &str,
        messages: &[(&str, &[u8])],
        cert_pem: &str,
        key_pem: &str,
        introspect_url: &str,
        extra: &str,
    ) -> Dovecot {
        Dovecot::launch(
            user,
            "no-password-login",
            messages,
            extra,
            Some((cert_pem, key_pem)),
            Some(introspect_url),
        )
    }

    /// [`Dovecot::start`] with `extra` appended to the configuration (e.g.
    /// `imap_capability = IMAP4rev1 ...` to hide MOVE).
    pub fn start_with(
        user: &str,
        password: &str,
        messages: &[(&str, &[u8])],
        extra: &str,
    ) -> Dovecot {
        Dovecot::launch(user, password, messages, extra, None, None)
    }

    fn launch(
        user: &str,
        password: &str,
        messages: &[(&str, &[u8])],
        extra: &str,
        tls: Option<(&str, &str)>,
        oauth2: Option<&str>,
    ) -> Dovecot {
        for needed in [DOVECOT, IMAP_BINARY] {
            assert!(
                Path::new(needed).exists(),
                "{needed} is missing: this test needs a real Dovecot IMAP server. Install it with \
                 `apt-get install -y dovecot-imapd` (Debian/Ubuntu; use sudo if not root)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("notify-dovecot-")
            .tempdir()
            .expect("create a temporary directory for Dovecot");
        let ids = Ids::detect();
        let home = dir.path().join(user);
        let maildir = home.join("Maildir");
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(maildir.join(sub)).expect("create the Maildir");
        }
        for (name, raw) in messages {
            fs::write(maildir.join("new").join(name), raw).expect("write a message to Maildir/new");
        }
        fs::write(
            dir.path().join("users"),
            format!(
                "{user}:{{PLAIN}}{password}:{uid}:{gid}::{home}::\n",
                uid = ids.mail_uid,
                gid = ids.mail_gid,
                home = home.display()
            ),
        )
        .expect("write the passwd-file");
        ids.hand_over(dir.path(), &home);
        let host = if tls.is_some() {
            "127.0.0.2"
        } else {
            "127.0.0.1"
        };
        let tls_settings = match tls {
            None => "ssl = no\ndisable_plaintext_auth = no\n".to_string(),
            Some((cert, key)) => {
                let (cert_path, key_path) =
                    (dir.path().join("cert.pem"), dir.path().join("key.pem"));
                fs::write(&cert_path, cert).expect("write the certificate");
                fs::write(&key_path, key).expect("write the key");
                format!(
                    "ssl = required\ndisable_plaintext_auth = yes\nssl_cert = <{}\nssl_key = <{}\n",
                    cert_path.display(),
                    key_path.display()
                )
            }
        };
        let d = dir.path().display();
        let passdb = match oauth2 {
            None => format!(
                "auth_mechanisms = plain login\n\
                 passdb {{\n  driver = passwd-file\n  \
                 args = scheme=PLAIN username_format=%u {d}/users\n}}\n"
            ),
            Some(introspect_url) => {
                let ext = dir.path().join("dovecot-oauth2.conf.ext");
                fs::write(
                    &ext,
                    format!(
                        "introspection_url = {introspect_url}\n\
                         introspection_mode = post\n\
                         force_introspection = yes\n\
                         username_attribute = username\n\
                         active_attribute = active\n\
                         active_value = true\n\
                         timeout_msecs = 10000\n\
                         debug = yes\n"
                    ),
                )
                .expect("write dovecot-oauth2.conf.ext");
                format!(
                    "auth_mechanisms = xoauth2 oauthbearer\n\
                     passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  \
                     args = {}\n}}\n",
                    ext.display()
                )
            }
        };

        let mut last_failure = String::new();
        // A free port can be taken between choosing and binding it: try a few.
        for _ in 0..3 {
            let port = free_port(host);
            let conf = dir.path().join("dovecot.conf");
            fs::write(
                &conf,
                config(dir.path(), host, port, &ids) + &passdb + &tls_settings + extra + "\n",
            )
            .expect("write dovecot.conf");
            let stderr = fs::File::create(dir.path().join("stderr.log")).expect("stderr log");
            let mut child = Command::new(DOVECOT)
                .arg("-F")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {DOVECOT}: {e}"));
            match wait_ready(&mut child, host, port, Duration::from_secs(20)) {
                Ok(()) => {
                    return Dovecot {
                        child: Some(child),
                        dir,
                        host,
                        port,
                        user: user.to_string(),
                        password: password.to_string(),
                        starttls: tls.is_some(),
                    }
                }
                Err(why) => {
                    stop(child);
                    last_failure = format!("{why}\n{}", logs(dir.path()));
                }
            }
        }
        panic!("Dovecot did not start:\n{last_failure}");
    }

    /// The URL notify is given: `imap://user@127.0.0.1:port/mailbox`, which upgrades with
    /// STARTTLS, when the server offers it; otherwise the same with `?tls=none`, since without
    /// TLS that is the only way notify sends the password.
    pub fn url(&self, mailbox: &str) -> String {
        if self.starttls {
            self.bare_url(mailbox)
        } else {
            format!("{}?tls=none", self.bare_url(mailbox))
        }
    }

    /// `imap://user@127.0.0.1:port/mailbox`, without parameters.
    pub fn bare_url(&self, mailbox: &str) -> String {
        format!("imap://{}@{}:{}/{mailbox}", self.user, self.host, self.port)
    }

    /// The user's Maildir.
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join(&self.user).join("Maildir")
    }

    /// File names and contents of the messages in a folder (`None` for INBOX), from `new/` and
    /// `cur/`, sorted by file name.
    pub fn messages_on_disk(&self, folder: Option<&str>) -> Vec<(String, Vec<u8>)> {
        let base = match folder {
            None => self.maildir(),
            Some(f) => self.maildir().join(format!(".{f}")),
        };
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = fs::read_dir(base.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let raw = fs::read(entry.path()).expect("read a Maildir message");
                out.push((format!("{sub}/{name}"), raw));
            }
        }
        out.sort();
        out
    }

    /// Dovecot's log and stderr so far.
    pub fn logs(&self) -> String {
        logs(self.dir.path())
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}

/// Who owns the mail and who Dovecot's unprivileged processes run as.
struct Ids {
    root: bool,
    mail_uid: u32,
    mail_gid: u32,
    internal_user: String,
    internal_group: String,
    login_user: String,
}

impl Ids {
    fn detect() -> Ids {
        let root = id(&["-u"]) == "0";
        if root {
            let user_exists = |name: &str| {
                Command::new("id")
                    .arg(name)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            for name in ["dovecot", "dovenull", "nobody"] {
                assert!(
                    user_exists(name),
                    "user `{name}` is missing; `apt-get install -y dovecot-imapd` creates \
                     dovecot and dovenull"
                );
            }
            Ids {
                root,
                mail_uid: parse_id(&id(&["-u", "nobody"])),
                mail_gid: parse_id(&id(&["-g", "nobody"])),
                internal_user: "dovecot".into(),
                internal_group: "dovecot".into(),
                login_user: "dovenull".into(),
            }
        } else {
            let me = id(&["-un"]);
            Ids {
                root,
                mail_uid: parse_id(&id(&["-u"])),
                mail_gid: parse_id(&id(&["-g"])),
                internal_group: id(&["-gn"]),
                internal_user: me.clone(),
                login_user: me,
            }
        }
    }

    /// As root, let the mail user reach and own the user's home.
    fn hand_over(&self, dir: &Path, home: &Path) {
        if !self.root {
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        chown_tree(home, self.mail_uid, self.mail_gid);
    }
}

fn logs(dir: &Path) -> String {
    let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
    format!(
        "--- dovecot.log ---\n{}--- stderr ---\n{}",
        read("dovecot.log"),
        read("stderr.log")
    )
}

/// Wait until Dovecot greets on `port`, or say why not.
fn wait_ready(child: &mut Child, host: &str, port: u16, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("dovecot exited early with {status}"));
        }
        if let Ok(stream) = TcpStream::connect((host, port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            if BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("* OK") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "dovecot did not greet on {host}:{port} within {within:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM lets the master stop its children; SIGKILL only if it does not exit in time.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("read dir").flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

fn id(args: &[&str]) -> String {
    let out = Command::new("id").args(args).output().expect("run `id`");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn parse_id(s: &str) -> u32 {
    s.parse()
        .unwrap_or_else(|_| panic!("`id` printed `{s}`, not a number"))
}

fn free_port(host: &str) -> u16 {
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// Dovecot 2.3 settings, without the passdb and TLS parts (appended by the caller; 2.4 renamed several: `disable_plaintext_auth` became
/// `auth_allow_cleartext`, `mail_location` became `mail_driver`/`mail_path`).
fn config(dir: &Path, host: &str, port: u16, ids: &Ids) -> String {
    let d = dir.display();
    format!(
        r#"# Written by tests/support/dovecot.rs
protocols = imap
listen = {host}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
auth_verbose = yes
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{d}/%u/Maildir
namespace inbox {{
  inbox = yes
  separator = .
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"#,
        internal_user = ids.internal_user,
        internal_group = ids.internal_group,
        login_user = ids.login_user,
    )
}
