//! Command-line arguments: the clap definitions and nothing else. `commands` does the work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::contacts::Audience;

/// Moped release and maintenance notices: render from Markdown, deliver one message per person,
/// record every send.
#[derive(Debug, Parser)]
#[command(name = "notify", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes; each overrides `notify.toml` and `NOTIFY_<KEY>`.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "NOTIFY_CONFIG",
        default_value = "notify.toml"
    )]
    pub config: PathBuf,
    /// sqlite://FILE or postgres://… (NOTIFY_DATABASE_URL).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// smtp://host:port, smtps://…, ?tls=required (NOTIFY_SMTP_URL). Without it messages go to
    /// the outbox.
    #[arg(long, global = true)]
    pub smtp_url: Option<String>,
    /// Folder for messages when no SMTP server is configured (NOTIFY_OUTBOX).
    #[arg(long, global = true)]
    pub outbox: Option<String>,
    /// The contacts CSV (NOTIFY_CONTACTS).
    #[arg(long, global = true)]
    pub contacts: Option<String>,
    /// The From: address (NOTIFY_FROM).
    #[arg(long, global = true)]
    pub from: Option<String>,
    /// SMTP connections at once (NOTIFY_CONCURRENCY).
    #[arg(long, global = true)]
    pub concurrency: Option<u64>,
    /// Messages per second over the run, 0 = unlimited (NOTIFY_RATE).
    #[arg(long, global = true)]
    pub rate: Option<f64>,
    /// IANA time zone for times you type and times in notices (NOTIFY_TIMEZONE).
    #[arg(long, global = true)]
    pub timezone: Option<String>,
    /// Show the libraries' logs too (the database driver's slow statements and the like), at
    /// info level; NOTIFY_LOG, when set, decides instead.
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Warn users of a release's maintenance window ahead of time, with a calendar event. Again
    /// with other times: everyone warned gets the update. With --cancel: everyone warned gets
    /// the cancel.
    MaintenanceScheduled {
        /// The release (v3.12, 3.12.0 or v3.12.0). Default: the upcoming release.
        #[arg(long)]
        release: Option<String>,
        /// When it starts, e.g. "2026-12-03 17:00" (in the configured time zone).
        #[arg(long, required_unless_present = "cancel", conflicts_with = "cancel")]
        start: Option<String>,
        /// When it is expected to end.
        #[arg(long, required_unless_present = "cancel", conflicts_with = "cancel")]
        end: Option<String>,
        /// Call the window off: METHOD:CANCEL to everyone who was warned.
        #[arg(long)]
        cancel: bool,
        /// Send even though the window starts or ends in the past.
        #[arg(long)]
        allow_past: bool,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Tell users maintenance is starting now.
    MaintenanceStart {
        /// The release (v3.12, 3.12.0 or v3.12.0). Default: the upcoming release.
        #[arg(long)]
        release: Option<String>,
        /// Expected end (default: the scheduled window's end, else now + maintenance_minutes).
        #[arg(long)]
        until: Option<String>,
        /// Start time if not now.
        #[arg(long)]
        start: Option<String>,
        /// Send even though the expected end is in the past.
        #[arg(long)]
        allow_past: bool,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Tell users maintenance is over (with the reminder to refresh the page).
    MaintenanceEnd {
        /// The release (v3.12, 3.12.0 or v3.12.0). Default: the upcoming release.
        #[arg(long)]
        release: Option<String>,
        /// When it ended, if not now.
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Send the release notes of VERSION (v3.12.0, 3.12.0 or v3.12) to the MUG.
    ReleaseNotes {
        version: String,
        /// Read the notes from this file instead of releases/<version>.md.
        #[arg(long)]
        notes: Option<PathBuf>,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Import and list the users group.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Where a notice stands: sends by state, first and last send, deferred reasons, runs at
    /// work. Without CAMPAIGN, every notice.
    Status {
        /// A campaign key such as release-notes/v3.12.0.
        campaign: Option<String>,
        #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
        format: SummaryFormat,
    },
    /// Read bounced mail, tie it to contacts and notices, and review the accounts to fix.
    #[command(subcommand)]
    Bounces(BouncesCommand),
    /// Print the release checklist of VERSION as GitHub task items, ticking what notify did.
    Checklist {
        version: String,
        /// graphql-engine version for staging (default: graphql_engine_staging in notify.toml).
        #[arg(long)]
        graphql_engine_staging: Option<String>,
        /// graphql-engine version for production (default: graphql_engine_production).
        #[arg(long)]
        graphql_engine_production: Option<String>,
    },
    /// A release's party: its maintenance window and notices.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Serve the release-notes archive and feed, the bounce review (needs NOTIFY_ADMIN_TOKEN)
    /// and SES bounce webhooks, on the same database.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8025")]
        bind: std::net::SocketAddr,
    },
    /// The release-notes archive as files.
    #[command(subcommand)]
    Archive(ArchiveCommand),
}

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Write the archive pages and the Atom feed into DIR (the index is DIR/index.html).
    Build { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// The timeline of VERSION: the window and its changes, each notice with its counts and the
    /// bounces it drew, how long maintenance took.
    Status {
        version: String,
        #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
        format: SummaryFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum BouncesCommand {
    /// Parse messages and print the bounces they report (needs no database).
    Parse {
        /// Message files, Maildir folders, mbox files, SES JSON, bounce CSVs, or `-` for standard
        /// input.
        #[arg(required = true, value_name = "FILE")]
        inputs: Vec<String>,
        #[arg(long, value_enum, default_value_t = ParseFormat::Table)]
        format: ParseFormat,
    },
    /// Import bounces: message files, Maildir folders, mbox files, SES notifications (SNS or
    /// bare JSON), CSVs of bounces, or an IMAP mailbox. The same message twice counts once.
    Import {
        #[arg(value_name = "PATH")]
        paths: Vec<std::path::PathBuf>,
        /// imaps://user@host/INBOX (password from NOTIFY_IMAP_PASSWORD).
        #[arg(long, value_name = "URL")]
        imap: Option<String>,
        /// IMAP folder that recognised bounces are moved to.
        #[arg(long, value_name = "FOLDER", default_value = "notify-processed")]
        move_to: String,
        #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
        format: SummaryFormat,
    },
    /// The accounts to update in Moped, one row per flagged contact, then the unverified
    /// bounces (matched only by address; never counted) under their own heading.
    Report {
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
        /// Only bounces on or after this date (2026-12-01).
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Only the unverified bounces, with why (JSON: an array of them).
        #[arg(long)]
        unverified: bool,
    },
    /// Record what was done about an account and lift its flag.
    Resolve {
        email: String,
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
    /// An account's bounce history with the raw diagnostics.
    Show {
        email: String,
        /// Also print the raw source of each bounce.
        #[arg(long)]
        raw: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ParseFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
    Html,
}

#[derive(Debug, Subcommand)]
pub enum ContactsCommand {
    /// Sync the database from a moped_users CSV export: add new rows, update changed ones, mark
    /// missing ones inactive. Nothing is imported if any row is invalid.
    Import {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
        format: SummaryFormat,
        /// Say what the import would change and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Mark inactive however many contacts are missing from the file (without it, more
        /// than `max_removal_percent` of the active contacts, or an export with no rows, is
        /// refused).
        #[arg(long)]
        allow_removals: bool,
    },
    /// List the contacts in the database.
    List {
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Only this audience (mug, users, all).
        #[arg(long)]
        audience: Option<Audience>,
        /// Include contacts missing from the latest import.
        #[arg(long)]
        include_removed: bool,
    },
}

/// Options of every notice command.
#[derive(Debug, Args, Clone)]
pub struct SendArgs {
    /// mug, users or all (default: mug for release notes, users for maintenance).
    #[arg(long)]
    pub audience: Option<Audience>,
    /// Render every message and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also write each message as .eml and .html files into DIR.
    #[arg(long, value_name = "DIR")]
    pub preview: Option<PathBuf>,
    /// Send one copy to ADDR only (not recorded against the notice).
    #[arg(long, value_name = "ADDR")]
    pub to: Option<String>,
    /// Send again to everybody, including those already sent to.
    #[arg(long)]
    pub resend: bool,
    /// Send again to the recipients the server refused (marked failed), and to nobody already
    /// sent to.
    #[arg(long, conflicts_with = "resend")]
    pub retry_failed: bool,
    /// Campaign key, if not the notice's own (e.g. to send a corrected notice).
    #[arg(long)]
    pub campaign: Option<String>,
    /// Summary format.
    #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
    pub format: SummaryFormat,
    /// Let the contacts sync before the notice mark inactive however many contacts are missing
    /// from the export (see `contacts import --allow-removals`).
    #[arg(long)]
    pub allow_removals: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
    Csv,
}
