//! The test harness: a scratch folder with its own contacts file, database (SQLite file or a
//! fresh PostgreSQL database) and outbox, and a way to run the real `notify` binary against them
//! with the repository's notify.toml, templates and releases.

use std::path::{Path, PathBuf};
use std::process::Output;

use sqlx::Connection;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
pub const BIN: &str = env!("CARGO_BIN_EXE_notify");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Run one async test body on both backends: `both!(name);` makes `name::sqlite` and
/// `name::postgres` from `async fn name(b: Backend)`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::harness::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::harness::Backend::Postgres).await
            }
        }
    };
}

/// The PostgreSQL server the tests use: NOTIFY_TEST_POSTGRES_URL, else the local default.
pub fn postgres_admin_url() -> String {
    std::env::var("NOTIFY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pg_name: Option<String>,
    extra_env: Vec<(String, String)>,
}

impl Env {
    /// A scratch environment with the shipped sample contacts.
    pub async fn new(backend: Backend) -> Env {
        let sample = std::fs::read_to_string(Path::new(REPO).join("contacts/moped_users.csv"))
            .expect("sample contacts");
        Env::with_contacts(backend, &sample).await
    }

    pub async fn with_contacts(backend: Backend, csv: &str) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("contacts.csv"), csv).expect("write contacts");
        let (database_url, pg_name) = match backend {
            Backend::Sqlite => (
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("notify.db").display()
                ),
                None,
            ),
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = match sqlx::PgConnection::connect(&admin).await {
                    Ok(c) => c,
                    Err(e) => panic!(
                        "PostgreSQL is required for this test and is not reachable at {admin}: {e}. \
                         Start it (pg_ctlcluster 15 main start) or set NOTIFY_TEST_POSTGRES_URL."
                    ),
                };
                let name = format!(
                    "notify_test_{}_{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                );
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let url = match admin.rfind('/') {
                    Some(i) => format!("{}/{name}", &admin[..i]),
                    None => panic!("NOTIFY_TEST_POSTGRES_URL must end in /DATABASE"),
                };
                (url, Some(name))
            }
        };
        Env {
            dir,
            database_url,
            pg_name,
            extra_env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn outbox(&self) -> PathBuf {
        self.dir.path().join("outbox")
    }

    pub fn set_contacts(&self, csv: &str) {
        std::fs::write(self.dir.path().join("contacts.csv"), csv).expect("write contacts");
    }

    /// Add an environment variable for every later run.
    pub fn env(&mut self, key: &str, value: &str) {
        self.extra_env.push((key.to_string(), value.to_string()));
    }

    /// `notify ARGS` set up against this environment, not started.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NOTIFY_CONFIG", Path::new(REPO).join("notify.toml"))
            .env("NOTIFY_DATABASE_URL", &self.database_url)
            .env("NOTIFY_CONTACTS", self.dir.path().join("contacts.csv"))
            .env("NOTIFY_OUTBOX", self.outbox())
            .env("NOTIFY_RETRY_BASE_MS", "20")
            .kill_on_drop(true);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Run `notify ARGS` and wait for it.
    pub async fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().await.expect("run notify");
        Run::from(out)
    }

    /// `notify ARGS --smtp-url URL --format json`: a notice sent to a test server.
    pub async fn send_json(&self, args: &[&str], smtp_url: &str) -> Run {
        let mut all = args.to_vec();
        all.extend(["--smtp-url", smtp_url, "--format", "json"]);
        self.run(&all).await
    }

    /// `notify bounces import SOURCES --format json` (files, or `--imap URL`).
    pub async fn import_bounces(&self, sources: &[&str]) -> Run {
        let mut args = vec!["bounces", "import"];
        args.extend_from_slice(sources);
        args.extend(["--format", "json"]);
        self.run(&args).await
    }

    /// A direct handle on the database, for checking the journal.
    pub async fn store(&self) -> notify::store::Store {
        notify::store::Store::open(&self.database_url)
            .await
            .expect("open store")
    }

    /// Every send of campaign `key`: address -> (state, last error); empty for no campaign.
    pub async fn sends(
        &self,
        key: &str,
    ) -> std::collections::BTreeMap<String, (String, Option<String>)> {
        let store = self.store().await;
        let out = match store.find_campaign(key).await.expect("read campaign") {
            Some(c) => store
                .sends(&c)
                .await
                .expect("read sends")
                .into_iter()
                .map(|s| (s.email, (s.state.to_string(), s.last_error)))
                .collect(),
            None => Default::default(),
        };
        store.close().await;
        out
    }

    /// The state of every send of campaign `key`, by address.
    pub async fn states(&self, key: &str) -> std::collections::BTreeMap<String, String> {
        self.sends(key)
            .await
            .into_iter()
            .map(|(email, (state, _))| (email, state))
            .collect()
    }

    /// After a run stopped for a refusal about the sender: the `count` sends of campaign `key`
    /// are all pending (nobody failed, nothing left claimed) and the review flags nobody.
    pub async fn assert_all_pending_and_nobody_flagged(&self, key: &str, count: usize) {
        let states = self.states(key).await;
        assert_eq!(states.len(), count, "{states:?}");
        assert!(
            states.values().all(|s| s == "pending"),
            "nobody failed, nobody left claimed: {states:?}"
        );
        let review = self.run(&["bounces", "report", "--format", "json"]).await;
        review.ok();
        let flagged: serde_json::Value =
            serde_json::from_str(review.stdout.trim()).expect("the review is JSON");
        assert_eq!(flagged, serde_json::json!([]), "nobody flagged");
    }

    /// Drop the PostgreSQL database (SQLite files go with the temp dir).
    pub async fn cleanup(self) {
        if let Some(name) = &self.pg_name {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}

/// What one run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// The `--format json` summary.
    pub fn summary(&self) -> serde_json::Value {
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON summary in:\n{}\n{}", self.stdout, self.stderr));
        serde_json::from_str(line).expect("summary is JSON")
    }
}

/// The addresses of a CSV's audience, computed with the library's own parser and rules.
pub fn audience_of(csv: &str, audience: notify::contacts::Audience) -> Vec<String> {
    let mut v: Vec<String> = notify::contacts::parse(csv.as_bytes())
        .expect("valid csv")
        .into_iter()
        .filter(|c| audience.includes(c))
        .map(|c| c.email)
        .collect();
    v.sort();
    v
}

/// Postfix's `smtp-sink` on a free loopback port, dumping each message with its envelope.
pub struct SmtpSink {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: std::process::Child,
}

/// A message as smtp-sink received it.
#[derive(Debug, Clone)]
pub struct Dumped {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub raw: Vec<u8>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> SmtpSink {
        let bin = ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("Postfix's smtp-sink is required (apt-get install postfix)");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut perms = std::fs::metadata(dir.path()).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
        std::fs::set_permissions(dir.path(), perms).unwrap();
        let mut cmd = std::process::Command::new(bin);
        // As root, smtp-sink insists on dropping privileges.
        let is_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if is_root {
            cmd.args(["-u", "nobody"]);
        }
        let template = format!("{}/%H%M%S.", dir.path().display());
        let child = cmd
            .args(["-d", &template, &format!("127.0.0.1:{port}"), "256"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start smtp-sink");
        // Wait until it listens.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        SmtpSink { port, dir, child }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every dumped message (complete files only).
    pub fn messages(&self) -> Vec<Dumped> {
        let mut out = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            let raw = std::fs::read(&p).unwrap();
            let text = String::from_utf8_lossy(&raw);
            let mut mail_from = String::new();
            let mut rcpt_to = Vec::new();
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("X-Mail-Args: ") {
                    mail_from = v
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .trim_matches(['<', '>'])
                        .to_string();
                } else if let Some(v) = line.strip_prefix("X-Rcpt-Args: ") {
                    rcpt_to.push(
                        v.split_whitespace()
                            .next()
                            .unwrap_or("")
                            .trim_matches(['<', '>'])
                            .to_string(),
                    );
                } else if line.is_empty() {
                    break;
                }
            }
            out.push(Dumped {
                mail_from,
                rcpt_to,
                raw,
            });
        }
        out
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A users group of `n` MUG members with generated names and addresses (`person00042@example.org`).
pub fn generated_contacts(n: usize) -> String {
    let mut csv = String::from("user_id,first_name,last_name,email,title,workgroup,roles,is_coa_staff,is_deleted,is_user_group_member,note,date_added,last_seen_date\n");
    for i in 1..=n {
        csv.push_str(&format!(
            "{i},First{i},Last{i},person{i:05}@example.org,Planner,Signs & Markings,\"[\"\"moped-editor\"\"]\",false,false,true,,,\n"
        ));
    }
    csv
}

impl Env {
    /// Start `notify ARGS` without waiting (for tests that kill it).
    pub fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        let mut cmd = self.command(args);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().expect("spawn notify")
    }
}

/// A `notify serve` started by a test, on a free loopback port; stopped (SIGKILL) when dropped.
pub struct Served {
    pub child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Env {
    /// Start `notify serve --bind 127.0.0.1:0` and wait until it says where it listens.
    pub async fn serve(&self) -> Served {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = self.spawn(&["serve", "--bind", "127.0.0.1:0"]);
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let base = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.split("listening on ").nth(1) {
                    return url.trim().to_string();
                }
            }
            panic!("notify serve ended without listening");
        })
        .await
        .expect("notify serve did not start within 60 s");
        // Keep reading its log so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Served { child, base }
    }
}

/// A Postfix-style DSN for `rcpt` returning the headers of the message with `message_id`.
pub fn returned_dsn(rcpt: &str, message_id: &str) -> String {
    format!(
        "Return-Path: <>\r\nFrom: MAILER-DAEMON@mx.austintexas.gov (Mail Delivery System)\r\n\
To: moped-bounces@austintexas.gov\r\nSubject: Undelivered Mail Returned to Sender\r\n\
Date: Thu, 03 Dec 2026 17:20:00 -0600\r\nMessage-ID: <browser.bounce@mx.austintexas.gov>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.austintexas.gov\r\n\r\n\
Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown\r\n\r\n\
--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Moped Team <moped@austintexas.gov>\r\n\
To: {rcpt}\r\nMessage-ID: {message_id}\r\n\r\n--B--\r\n"
    )
}

/// The Message-ID of the outbox message written for `rcpt`.
pub fn outbox_message_id(outbox: &Path, rcpt: &str) -> String {
    for dir in std::fs::read_dir(outbox).unwrap().flatten() {
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            if f.file_name()
                .to_string_lossy()
                .ends_with(&format!("-{rcpt}.eml"))
            {
                let text = std::fs::read_to_string(f.path()).unwrap();
                return text
                    .lines()
                    .find_map(|l| l.strip_prefix("Message-ID: "))
                    .unwrap()
                    .to_string();
            }
        }
    }
    panic!("no outbox message for {rcpt}");
}
