//! Bounce intake: turn what a mail admin hands over into bounce findings ready to attribute and
//! store. Message files, Maildir folders, mbox files, Amazon SES notifications (SNS or bare JSON)
//! and CSV files of bounces are recognised by their content. Reads files and standard input with
//! bounded memory: an mbox and a folder are read as a [`Stream`], one message or file at a time,
//! parsed on one worker thread per core and yielded in input order ([`Source::Mbox`],
//! [`parse_each`]); anything else is read up to a size limit and skipped (or refused, for a
//! CSV) beyond it. Parsing itself is `bounce`'s job; attribution and storage are `commands`' and
//! `store`'s.

mod csv_file;
pub mod imap;
mod mailbox;
mod ses;
pub mod sns;
mod stream;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

use crate::bounce::{self, Bounce};

pub use csv_file::parse_csv;
pub use mailbox::{MboxItem, MboxReader};
pub use ses::parse_ses;
pub use stream::Stream;

use stream::{Entry, Producer, Unit, UnitKind};

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
    #[error("{}", crate::contacts::format_row_errors(path, errors, 0))]
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

/// What one input holds: inputs read whole, or a stream to be read one message at a time.
pub enum Source {
    /// Messages, notifications or CSV rows, read whole (each within the size limit).
    Items(Vec<Incoming>),
    /// An mbox, or the files of a folder (a Maildir or any other): iterate it for its inputs,
    /// read and parsed as it goes. A read error ends an mbox.
    Mbox(Stream<Result<Incoming, IntakeError>>),
}

/// Buffer of a file or standard input being read.
const READ_BUFFER: usize = 64 * 1024;

/// Open one command-line input: a path (a file or a folder) or `-` for standard input. A CSV is
/// parsed whole here, so that a bad row is reported before anything is recorded; so is each CSV
/// of a folder, and every file of a folder must open, but the folder's messages are only read
/// when the returned stream is.
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
        return open_folder(path);
    }
    Ok(vec![open_file(path)?])
}

/// A folder, checked file by file before anything is returned (see [`check_file`]), then read
/// as a stream.
fn open_folder(dir: &Path) -> Result<Vec<Source>, IntakeError> {
    let listing = mailbox::list_folder(dir)?;
    for (path, _) in &listing.files {
        if listing.maildir {
            File::open(path).map_err(|source| IntakeError::Read {
                path: path.clone(),
                source,
            })?;
        } else {
            check_file(path)?;
        }
    }
    if listing.files.is_empty() {
        return Ok(Vec::new());
    }
    let entries = stream::folder_entries(0, dir)?;
    Ok(vec![Source::Mbox(incoming_stream(entries))])
}

/// Refuse a folder's file now if it would be refused when its turn comes: it cannot be read, or
/// it is a CSV of bounces with a bad row or over the size limit. Nothing is kept.
fn check_file(path: &Path) -> Result<(), IntakeError> {
    let read_err = |source| IntakeError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut raw = Vec::new();
    (&mut file)
        .take(5)
        .read_to_end(&mut raw)
        .map_err(read_err)?;
    if raw == b"From " {
        return Ok(());
    }
    file.take(MAX_INPUT_BYTES as u64 + 1 - raw.len() as u64)
        .read_to_end(&mut raw)
        .map_err(read_err)?;
    if raw.len() > MAX_INPUT_BYTES {
        if csv_file::looks_like_csv(path, &raw) {
            return Err(IntakeError::CsvTooLarge {
                path: path.to_path_buf(),
                limit: MAX_INPUT_BYTES,
            });
        }
        return Ok(());
    }
    if recognise(path, &raw) == Kind::Csv {
        parse_csv(path, &raw)?;
    }
    Ok(())
}

/// The inputs of `entries` as a stream of [`Incoming`]s (for import).
fn incoming_stream(entries: Vec<Entry>) -> Stream<Result<Incoming, IntakeError>> {
    Stream::new(Producer::new(entries), Arc::new(read_unit::<Incoming>))
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
    if head == b"From " {
        let entry = if path == Path::new("-") {
            Entry::Reader {
                input: 0,
                path: path.to_path_buf(),
                origin: origin.to_string(),
                reader: Box::new(io::Cursor::new(head).chain(reader)),
            }
        } else {
            // Opened again when its turn comes, so that many mboxes hold no file open before.
            Entry::Mbox {
                input: 0,
                path: path.to_path_buf(),
                origin: origin.to_string(),
            }
        };
        return Ok(Source::Mbox(incoming_stream(vec![entry])));
    }
    Ok(Source::Items(read_whole(
        path,
        origin,
        head,
        Some(reader),
        size,
    )?))
}

/// Read the rest of an input whose first bytes (`head`, not `From `) were read: up to the size
/// limit, then recognise it. Over the limit it is skipped, or refused if it is a CSV. `rest` is
/// `None` when `head` is all there is.
fn read_whole<M: Make>(
    path: &Path,
    origin: &str,
    head: Vec<u8>,
    rest: Option<impl Read>,
    size: Option<u64>,
) -> Result<Vec<M>, IntakeError> {
    let limit = MAX_INPUT_BYTES + 1;
    let mut raw = head;
    if let Some(rest) = rest.filter(|_| raw.len() < limit) {
        let expected = size.map_or(0, |s| usize::try_from(s).unwrap_or(limit).min(limit));
        raw.reserve(expected.saturating_sub(raw.len()));
        rest.take((limit - raw.len()) as u64)
            .read_to_end(&mut raw)
            .map_err(|source| IntakeError::Read {
                path: path.to_path_buf(),
                source,
            })?;
    }
    if raw.len() > MAX_INPUT_BYTES {
        if csv_file::looks_like_csv(path, &raw) {
            return Err(IntakeError::CsvTooLarge {
                path: path.to_path_buf(),
                limit: MAX_INPUT_BYTES,
            });
        }
        return Ok(vec![M::other(oversized(origin, size))]);
    }
    read_recognised(path, origin, raw)
}

/// What a worker makes of each input it reads: an [`Incoming`] (to record) or a [`Parsed`] (to
/// print).
trait Make: Sized {
    /// One mail message.
    fn message(origin: &str, raw: Vec<u8>) -> Self;
    /// Anything else: an SES notification, a CSV row, a skipped input.
    fn other(item: Incoming) -> Self;
}

impl Make for Incoming {
    fn message(origin: &str, raw: Vec<u8>) -> Self {
        message(origin, raw)
    }
    fn other(item: Incoming) -> Self {
        item
    }
}

/// What `bounces parse` shows of one input: where it came from, and its bounces or why it was
/// skipped. Unlike an [`Incoming`] it has no key, date or raw bytes: nothing is recorded.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub origin: String,
    pub found: Result<Vec<Bounce>, String>,
}

impl Make for Parsed {
    fn message(origin: &str, raw: Vec<u8>) -> Self {
        Parsed {
            origin: origin.to_string(),
            found: bounce::parse(&raw)
                .map(|report| report.bounces)
                .map_err(|too_large| too_large.to_string()),
        }
    }
    fn other(item: Incoming) -> Self {
        Parsed {
            origin: item.origin,
            found: item.found.map(|f| f.bounces),
        }
    }
}

/// Read and parse one unit of a stream (on a worker thread): its inputs in order, or why it
/// could not be read.
fn read_unit<M: Make>(unit: Unit) -> Vec<Result<M, IntakeError>> {
    match unit.kind {
        UnitKind::Message { origin, raw } => vec![Ok(M::message(&origin, raw))],
        UnitKind::Oversized { origin, size } => vec![Ok(M::other(oversized(&origin, size)))],
        UnitKind::MaildirFile { path } => vec![read_maildir_file(&path)],
        UnitKind::Whole {
            path,
            origin,
            head,
            rest,
            size,
        } => match read_whole(&path, &origin, head, rest, size) {
            Ok(items) => items.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        },
        UnitKind::Failed(e) => vec![Err(e)],
    }
}

/// One file of a Maildir: a message whatever it holds; over the size limit it is skipped
/// without being read.
fn read_maildir_file<M: Make>(path: &Path) -> Result<M, IntakeError> {
    let read_err = |source| IntakeError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let origin = path.display().to_string();
    if size > MAX_INPUT_BYTES as u64 {
        return Ok(M::other(oversized(&origin, Some(size))));
    }
    let mut raw = Vec::with_capacity(size as usize);
    file.take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(read_err)?;
    Ok(M::message(&origin, raw))
}

/// Every input of `inputs` (files, folders, mbox files, `-` for standard input) read in order as
/// one [`Stream`], for `bounces parse`: each message is parsed for its bounces only (no key, no
/// date: nothing is recorded), and `f` is given each [`Parsed`] with the index of its input in
/// `inputs`, on the worker threads. An input or a file that cannot be read, or a CSV with a bad
/// row, comes as an error in its place, and what follows is still read.
pub fn parse_each<T, F>(inputs: &[PathBuf], f: F) -> Stream<T>
where
    T: Send + 'static,
    F: Fn(usize, Result<Parsed, IntakeError>) -> T + Send + Sync + 'static,
{
    let entries = inputs
        .iter()
        .enumerate()
        .map(|(input, path)| Entry::Path {
            input,
            path: path.clone(),
        })
        .collect();
    let work = move |unit: Unit| {
        let input = unit.input;
        read_unit::<Parsed>(unit)
            .into_iter()
            .map(|item| f(input, item))
            .collect()
    };
    Stream::new(Producer::new(entries), Arc::new(work))
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

/// What an input is, from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ses,
    Mbox,
    Csv,
    Message,
}

/// Recognise bytes that came from `path`: SES JSON, an mbox, a CSV of bounces, else a message.
fn recognise(path: &Path, raw: &[u8]) -> Kind {
    let start = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &raw[i..])
        .unwrap_or(&[]);
    if start.starts_with(b"{") {
        Kind::Ses
    } else if raw.starts_with(b"From ") {
        Kind::Mbox
    } else if csv_file::looks_like_csv(path, raw) {
        Kind::Csv
    } else {
        Kind::Message
    }
}

/// Recognise and read bytes that came from `origin` (`path` is used for CSV errors). An mbox
/// given as bytes is split with the same reader as a streamed one.
pub fn read_bytes(path: &Path, origin: &str, raw: Vec<u8>) -> Result<Vec<Incoming>, IntakeError> {
    read_recognised(path, origin, raw)
}

fn read_recognised<M: Make>(
    path: &Path,
    origin: &str,
    raw: Vec<u8>,
) -> Result<Vec<M>, IntakeError> {
    match recognise(path, &raw) {
        Kind::Ses => Ok(vec![M::other(ses::incoming(origin, raw))]),
        Kind::Mbox => {
            let mut out = Vec::new();
            for (i, item) in MboxReader::new(&raw[..], bounce::MAX_MESSAGE_BYTES).enumerate() {
                let origin = format!("{origin}:{}", i + 1);
                out.push(match item {
                    Ok(MboxItem::Message(m)) => M::message(&origin, m),
                    Ok(MboxItem::Oversized { size }) => M::other(oversized(&origin, Some(size))),
                    Err(source) => {
                        return Err(IntakeError::Read {
                            path: path.to_path_buf(),
                            source,
                        })
                    }
                });
            }
            Ok(out)
        }
        Kind::Csv => Ok(parse_csv(path, &raw)?.into_iter().map(M::other).collect()),
        Kind::Message => Ok(vec![M::message(origin, raw)]),
    }
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

/// The `Date:` of the message's own header block, read by a parser that skips every other
/// field.
fn message_date(raw: &[u8]) -> Option<DateTime<Utc>> {
    static PARSER: std::sync::LazyLock<mail_parser::MessageParser> =
        std::sync::LazyLock::new(|| {
            mail_parser::MessageParser::new()
                .header_date(mail_parser::HeaderName::Date)
                .default_header_ignore()
        });
    let head_end = memchr::memmem::find(raw, b"\r\n\r\n")
        .or_else(|| memchr::memmem::find(raw, b"\n\n"))
        .unwrap_or(raw.len().min(64 * 1024));
    let msg = PARSER.parse_headers(&raw[..head_end.min(raw.len())])?;
    let ts = msg.date()?.to_timestamp();
    Utc.timestamp_opt(ts, 0).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounce fixtures, by name.
    fn fixtures() -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bounces");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        paths.sort();
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    /// What one input printed: its origin and its bounces' addresses, or why it was skipped.
    fn shown(item: Result<Parsed, IntakeError>) -> String {
        match item {
            Ok(Parsed {
                origin,
                found: Ok(bounces),
            }) => {
                let addresses: Vec<&str> = bounces.iter().map(|b| b.address.as_str()).collect();
                format!("{origin} {}", addresses.join(","))
            }
            Ok(Parsed {
                origin,
                found: Err(why),
            }) => format!("{origin} skipped: {why}"),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn parse_each_reads_folders_files_and_mboxes_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mail");
        std::fs::create_dir(&dir).unwrap();
        let fixtures = fixtures();
        let mut expected = Vec::new();
        // 300 files (more than the window), an mbox of three, a CSV and SES JSON among them.
        for i in 0..300 {
            let raw = &fixtures[i % fixtures.len()];
            let path = dir.join(format!("{i:03}.eml"));
            std::fs::write(&path, raw).unwrap();
            let bounces = bounce::parse(raw).unwrap().bounces;
            let addresses: Vec<&str> = bounces.iter().map(|b| b.address.as_str()).collect();
            expected.push(format!("{} {}", path.display(), addresses.join(",")));
            if i == 100 {
                let mbox = dir.join("100a.mbox");
                let mut m = Vec::new();
                for f in &fixtures[..3] {
                    m.extend_from_slice(b"From MAILER-DAEMON Mon Nov 30 06:00:00 2026\n");
                    m.extend_from_slice(f);
                    m.extend_from_slice(b"\n\n");
                }
                std::fs::write(&mbox, m).unwrap();
                for (n, f) in fixtures[..3].iter().enumerate() {
                    let mut raw = f.clone();
                    raw.push(b'\n');
                    let bounces = bounce::parse(&raw).unwrap().bounces;
                    let addresses: Vec<&str> = bounces.iter().map(|b| b.address.as_str()).collect();
                    expected.push(format!(
                        "{}:{} {}",
                        mbox.display(),
                        n + 1,
                        addresses.join(",")
                    ));
                }
                let csv = dir.join("100b.csv");
                std::fs::write(&csv, "email,type\nana@example.org,hard\n").unwrap();
                expected.push(format!("{}:2 ana@example.org", csv.display()));
            }
        }
        // A hidden file is left out; a missing input is an error in its place.
        std::fs::write(dir.join(".hidden"), "x").unwrap();
        let missing = tmp.path().join("missing.eml");
        let single = dir.join("000.eml");
        let mut want = expected.clone();
        want.insert(
            0,
            format!(
                "error: cannot read {}: No such file or directory (os error 2)",
                missing.display()
            ),
        );
        want.push(expected[0].clone());
        let got: Vec<String> = parse_each(&[missing, dir, single], |_, item| shown(item)).collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w);
        }
        // Each item knows its input.
        let inputs: Vec<usize> = parse_each(
            &[tmp.path().join("nope"), tmp.path().join("mail")],
            |input, _| input,
        )
        .collect();
        assert_eq!(inputs[0], 0);
        assert!(inputs[1..].iter().all(|&i| i == 1));
    }

    #[test]
    fn the_date_is_read_as_by_a_parser_of_every_field() {
        let mut dated = 0;
        for raw in fixtures() {
            let head_end = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .or_else(|| raw.windows(2).position(|w| w == b"\n\n"))
                .unwrap_or(raw.len().min(64 * 1024));
            let full = mail_parser::MessageParser::new()
                .parse_headers(&raw[..head_end])
                .and_then(|m| m.date().map(|d| d.to_timestamp()))
                .and_then(|ts| Utc.timestamp_opt(ts, 0).single());
            assert_eq!(message_date(&raw), full);
            dated += usize::from(full.is_some());
        }
        assert!(dated > 10, "{dated} fixtures with a date");
    }

    #[test]
    fn a_bad_csv_in_a_folder_is_refused_before_anything_is_read_for_import() {
        let tmp = tempfile::tempdir().unwrap();
        let fixtures = fixtures();
        std::fs::write(tmp.path().join("a.eml"), &fixtures[0]).unwrap();
        std::fs::write(
            tmp.path().join("b.csv"),
            "email,type\nana@example.org,hard\nnot an address,hard\n",
        )
        .unwrap();
        std::fs::write(tmp.path().join("c.eml"), &fixtures[1]).unwrap();
        let Err(IntakeError::Csv { path, errors }) = open(tmp.path()) else {
            panic!("a folder with a bad CSV must be refused");
        };
        assert_eq!((path, errors[0].line), (tmp.path().join("b.csv"), 3));
        // When parsing only, it is reported in its place and the rest is read.
        let got: Vec<String> =
            parse_each(&[tmp.path().to_path_buf()], |_, item| shown(item)).collect();
        assert_eq!(got.len(), 3);
        assert!(
            got[1].starts_with("error: ") && got[1].contains("b.csv:3"),
            "{}",
            got[1]
        );
        // Without it, the folder is a stream of what import records, in order.
        std::fs::remove_file(tmp.path().join("b.csv")).unwrap();
        let mut sources = open(tmp.path()).unwrap();
        assert_eq!(sources.len(), 1);
        let Some(Source::Mbox(stream)) = sources.pop() else {
            panic!("a folder is a stream");
        };
        let items: Vec<Incoming> = stream.collect::<Result<_, _>>().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].origin,
            tmp.path().join("a.eml").display().to_string()
        );
        assert_eq!(items[0].source_key, digest("msg", &fixtures[0]));
        assert_eq!(items[1].raw, fixtures[1]);
        // A Maildir: new/ then cur/, every file a message.
        let md = tmp.path().join("Maildir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(md.join(sub)).unwrap();
        }
        std::fs::write(md.join("cur/1"), &fixtures[2]).unwrap();
        std::fs::write(md.join("new/2"), "email,type\nnot a csv here,hard\n").unwrap();
        let Some(Source::Mbox(stream)) = open(&md).unwrap().into_iter().next() else {
            panic!("a Maildir is a stream");
        };
        let items: Vec<Incoming> = stream.collect::<Result<_, _>>().unwrap();
        let origins: Vec<&str> = items.iter().map(|i| i.origin.as_str()).collect();
        assert_eq!(
            origins,
            [
                md.join("new/2").display().to_string(),
                md.join("cur/1").display().to_string()
            ]
        );
        assert_eq!(
            items[0].source_key,
            digest("msg", b"email,type\nnot a csv here,hard\n")
        );
    }
}
