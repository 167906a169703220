//! Bounce intake: turn what a mail admin hands over into bounce findings ready to attribute and
//! store. Message files, Maildir folders, mbox files, Amazon SES notifications (SNS or bare JSON)
//! and CSV files of bounces are recognised by their content. Reads files; parsing itself is
//! `bounce`'s job; attribution and storage are `commands`' and `store`'s.

mod csv_file;
pub mod imap;
mod mailbox;
mod ses;

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

use crate::bounce::{self, Bounce};

pub use csv_file::parse_csv;
pub use ses::parse_ses;

/// One input unit: a message, an SES notification, or a CSV row.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Where it came from: a path, `path:N` for the Nth message of an mbox, `path:line N`.
    pub origin: String,
    /// Identifies the input so that importing it again changes nothing.
    pub source_key: String,
    /// The raw bytes, kept for review.
    pub raw: Vec<u8>,
    /// What it says, or why it was skipped.
    pub found: Result<Found, String>,
}

/// The bounces in one input and what attribution needs.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub bounces: Vec<Bounce>,
    /// The address the bounce was sent to (a VERP address carries the send's token).
    pub verp_recipient: Option<String>,
    /// Message-ID of the returned original.
    pub original_message_id: Option<String>,
    /// When the bounce happened, if it says.
    pub occurred_at: Option<DateTime<Utc>>,
}

/// A path that cannot be read, or a CSV with bad rows (nothing is imported then).
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", crate::contacts::format_row_errors(path, errors))]
    Csv {
        path: PathBuf,
        errors: Vec<crate::contacts::RowError>,
    },
}

/// A stable key for raw bytes.
pub fn digest(prefix: &str, raw: &[u8]) -> String {
    format!("{prefix}:{}", hex::encode(Sha256::digest(raw)))
}

/// Read everything at `path`: a Maildir (folder with `cur`/`new`), a folder of message files,
/// an mbox file, an SES JSON notification, a CSV of bounces, or one message.
pub fn read_path(path: &Path) -> Result<Vec<Incoming>, IntakeError> {
    let read_err = |source| IntakeError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.is_dir() {
        return mailbox::read_folder(path);
    }
    let raw = std::fs::read(path).map_err(read_err)?;
    read_bytes(path, &path.display().to_string(), raw)
}

/// Recognise and read bytes that came from `origin` (`path` is used for CSV errors).
pub fn read_bytes(path: &Path, origin: &str, raw: Vec<u8>) -> Result<Vec<Incoming>, IntakeError> {
    let start = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &raw[i..])
        .unwrap_or(&[]);
    if start.starts_with(b"{") {
        return Ok(vec![ses::incoming(origin, raw)]);
    }
    if raw.starts_with(b"From ") {
        return Ok(mailbox::split_mbox(&raw)
            .into_iter()
            .enumerate()
            .map(|(i, m)| message(&format!("{origin}:{}", i + 1), m))
            .collect());
    }
    if csv_file::looks_like_csv(path, &raw) {
        return parse_csv(path, &raw);
    }
    Ok(vec![message(origin, raw)])
}

/// One mail message.
pub fn message(origin: &str, raw: Vec<u8>) -> Incoming {
    let found = match bounce::parse(&raw) {
        Ok(report) => Ok(Found {
            bounces: report.bounces,
            verp_recipient: report.verp_recipient,
            original_message_id: report.original_message_id,
            occurred_at: message_date(&raw),
        }),
        Err(too_large) => Err(too_large.to_string()),
    };
    Incoming {
        origin: origin.to_string(),
        source_key: digest("msg", &raw),
        raw,
        found,
    }
}

fn message_date(raw: &[u8]) -> Option<DateTime<Utc>> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(raw.len().min(64 * 1024));
    let msg = mail_parser::MessageParser::new().parse_headers(&raw[..head_end.min(raw.len())])?;
    let ts = msg.date()?.to_timestamp();
    Utc.timestamp_opt(ts, 0).single()
}
