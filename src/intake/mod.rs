//! Bounce intake: turn what a mail admin hands over into bounce findings ready to attribute and
//! store. Message files, Maildir folders, mbox files, Amazon SES notifications (SNS or bare JSON)
//! and CSV files of bounces are recognised by their content. Reads files and standard input with
//! bounded memory: an mbox is read as a stream, one message at a time ([`Source::Mbox`]);
//! anything else is read up to a size limit and skipped (or refused, for a CSV) beyond it.
//! Parsing itself is `bounce`'s job; attribution and storage are `commands`' and `store`'s.

mod csv_file;
pub mod imap;
mod mailbox;
mod ses;
pub mod sns;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

use crate::bounce::{self, Bounce};

pub use csv_file::parse_csv;
pub use mailbox::{MboxItem, MboxReader};
pub use ses::parse_ses;

/// The most read of any input that is not an mbox (a message, an SES notification, a CSV of
/// bounces): the size limit for bounce parsing. An mbox has no limit; each of its messages has.
pub const MAX_INPUT_BYTES: usize = bounce::MAX_MESSAGE_BYTES;

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

impl Incoming {
    /// Did this come through a channel we trust, so that its bounces count even when they are
    /// tied to a contact only by address? True for a row of an admin's CSV (keys `csv:...`, made
    /// only by [`parse_csv`]) and for a refusal seen at send time (keys `smtp:...`, made only by
    /// the send). Mail and SES notifications (`msg:`, `ses:`) must prove themselves.
    pub fn vouched_for(&self) -> bool {
        self.source_key.starts_with("csv:") || self.source_key.starts_with("smtp:")
    }
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
    #[error("{path}: a CSV of bounces larger than {limit} bytes; split it into smaller files", path = path.display())]
    CsvTooLarge { path: PathBuf, limit: usize },
}

/// A stable key for raw bytes.
pub fn digest(prefix: &str, raw: &[u8]) -> String {
    format!("{prefix}:{}", hex::encode(Sha256::digest(raw)))
}

/// What one input holds: inputs read whole, or an mbox to be read one message at a time.
pub enum Source {
    /// Messages, notifications or CSV rows, read whole (each within the size limit).
    Items(Vec<Incoming>),
    /// An mbox: iterate it for its messages.
    Mbox(Mbox),
}

/// An mbox read as a stream: yields one [`Incoming`] per message (origin `path:N`); a message
/// over the size limit yields a skipped input without being held in memory.
pub struct Mbox {
    origin: String,
    path: PathBuf,
    /// `None` until the first message is asked for: a file is opened again then, so that a
    /// folder of many mboxes holds no file open before its turn.
    reader: Option<MboxReader<Box<dyn BufRead + Send>>>,
    /// Standard input, already being read (it cannot be opened twice).
    stdin: Option<Box<dyn BufRead + Send>>,
    count: usize,
}

impl Iterator for Mbox {
    type Item = Result<Incoming, IntakeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.reader.is_none() {
            let r: Box<dyn BufRead + Send> = match self.stdin.take() {
                Some(r) => r,
                None => match File::open(&self.path) {
                    Ok(f) => Box::new(BufReader::with_capacity(READ_BUFFER, f)),
                    Err(source) => {
                        self.reader = Some(MboxReader::new(Box::new(io::empty()), 0));
                        return Some(Err(IntakeError::Read {
                            path: self.path.clone(),
                            source,
                        }));
                    }
                },
            };
            self.reader = Some(MboxReader::new(r, bounce::MAX_MESSAGE_BYTES));
        }
        let item = self.reader.as_mut()?.next()?;
        self.count += 1;
        let origin = format!("{}:{}", self.origin, self.count);
        Some(match item {
            Ok(MboxItem::Message(raw)) => Ok(message(&origin, raw)),
            Ok(MboxItem::Oversized { size }) => Ok(oversized(&origin, Some(size))),
            Err(source) => Err(IntakeError::Read {
                path: self.path.clone(),
                source,
            }),
        })
    }
}

/// Buffer of a file or standard input being read.
const READ_BUFFER: usize = 64 * 1024;

/// Open one command-line input: a path (a file or a folder) or `-` for standard input. A CSV is
/// parsed whole here, so that a bad row is reported before anything is recorded.
pub fn open(path: &Path) -> Result<Vec<Source>, IntakeError> {
    let read_err = |source| IntakeError::Read {
        path: path.to_path_buf(),
        source,
    };
    if path == Path::new("-") {
        let stdin: Box<dyn BufRead + Send> =
            Box::new(BufReader::with_capacity(READ_BUFFER, io::stdin()));
        return Ok(vec![open_reader(path, "-", stdin, None)?]);
    }
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.is_dir() {
        return mailbox::read_folder(path);
    }
    Ok(vec![open_file(path)?])
}

/// Open one file (not a folder) by what it holds.
fn open_file(path: &Path) -> Result<Source, IntakeError> {
    let read_err = |source| IntakeError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let size = file
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let reader: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(READ_BUFFER, file));
    open_reader(path, &path.display().to_string(), reader, size)
}

/// Recognise what `reader` holds from its first bytes: an mbox is left to be streamed; anything
/// else is read up to [`MAX_INPUT_BYTES`] and recognised whole. `size`, when known, is the
/// input's length (for the line that says a message was skipped).
fn open_reader(
    path: &Path,
    origin: &str,
    mut reader: Box<dyn BufRead + Send>,
    size: Option<u64>,
) -> Result<Source, IntakeError> {
    let read_err = |source| IntakeError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut head = Vec::with_capacity(5);
    (&mut reader)
        .take(5)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    let whole: Box<dyn BufRead + Send> = Box::new(io::Cursor::new(head.clone()).chain(reader));
    if head == b"From " {
        let is_stdin = path == Path::new("-");
        return Ok(Source::Mbox(Mbox {
            origin: origin.to_string(),
            path: path.to_path_buf(),
            reader: None,
            stdin: is_stdin.then_some(whole),
            count: 0,
        }));
    }
    let mut raw = Vec::new();
    whole
        .take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(read_err)?;
    if raw.len() > MAX_INPUT_BYTES {
        if csv_file::looks_like_csv(path, &raw) {
            return Err(IntakeError::CsvTooLarge {
                path: path.to_path_buf(),
                limit: MAX_INPUT_BYTES,
            });
        }
        return Ok(Source::Items(vec![oversized(origin, size)]));
    }
    Ok(Source::Items(read_bytes(path, origin, raw)?))
}

/// An input over the size limit, skipped unread (`size` when its length is known).
pub fn oversized(origin: &str, size: Option<u64>) -> Incoming {
    let why = match size {
        Some(size) => format!(
            "message of {size} bytes is over the {MAX_INPUT_BYTES}-byte limit for bounce parsing; skipped"
        ),
        None => format!(
            "message of more than {MAX_INPUT_BYTES} bytes is over the {MAX_INPUT_BYTES}-byte limit for bounce parsing; skipped"
        ),
    };
    Incoming {
        origin: origin.to_string(),
        source_key: digest("oversized", origin.as_bytes()),
        raw: Vec::new(),
        found: Err(why),
    }
}

/// Recognise and read bytes that came from `origin` (`path` is used for CSV errors). An mbox
/// given as bytes is split with the same reader as a streamed one.
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
        let mut out = Vec::new();
        for (i, item) in MboxReader::new(&raw[..], bounce::MAX_MESSAGE_BYTES).enumerate() {
            let origin = format!("{origin}:{}", i + 1);
            out.push(match item {
                Ok(MboxItem::Message(m)) => message(&origin, m),
                Ok(MboxItem::Oversized { size }) => oversized(&origin, Some(size)),
                Err(source) => {
                    return Err(IntakeError::Read {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            });
        }
        return Ok(out);
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
