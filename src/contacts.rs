//! Contacts: the users group as exported from Moped's `moped_users` table, read from CSV and
//! checked row by row (including field lengths no real row reaches), the rule that refuses an
//! import removing too many people, and which file is the contacts' source (the configured one,
//! or the one last imported by hand while the configuration is unchanged). Parsing and the
//! rules are pure; the only I/O is reading a contacts file. `store` keeps the contacts and
//! `commands` decides when to sync.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

/// One person, as in a `moped_users` row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Contact {
    pub user_id: i64,
    pub first_name: String,
    pub last_name: String,
    /// Lower-cased; unique within a file.
    pub email: String,
    pub title: String,
    pub workgroup: String,
    /// Moped roles such as `moped-editor` or `non-login-user`.
    pub roles: Vec<String>,
    pub is_coa_staff: bool,
    pub is_deleted: bool,
    pub is_user_group_member: bool,
    pub note: String,
    pub date_added: String,
    pub last_seen_date: String,
}

impl Contact {
    /// "First Last", or the address when both names are blank.
    pub fn full_name(&self) -> String {
        let name = format!("{} {}", self.first_name.trim(), self.last_name.trim());
        let name = name.trim();
        if name.is_empty() {
            self.email.clone()
        } else {
            name.to_string()
        }
    }

    /// Can this person sign in to Moped?
    pub fn can_log_in(&self) -> bool {
        !self.roles.iter().any(|r| r == NON_LOGIN_ROLE)
    }
}

/// The role Moped gives people who are tracked but cannot sign in.
pub const NON_LOGIN_ROLE: &str = "non-login-user";

/// Who receives a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// The Moped User Group: `is_user_group_member && !is_deleted`.
    Mug,
    /// All active users: `!is_deleted`, can log in, no '+' in the address.
    Users,
    /// Every active contact (`!is_deleted`).
    All,
}

impl Audience {
    /// Does this audience include `c`? (Contacts missing from the latest export are never
    /// included; that is checked by the store.)
    pub fn includes(self, c: &Contact) -> bool {
        match self {
            Audience::Mug => c.is_user_group_member && !c.is_deleted,
            Audience::Users => !c.is_deleted && c.can_log_in() && !c.email.contains('+'),
            Audience::All => !c.is_deleted,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Mug => "mug",
            Audience::Users => "users",
            Audience::All => "all",
        }
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Audience {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mug" => Ok(Audience::Mug),
            "users" => Ok(Audience::Users),
            "all" => Ok(Audience::All),
            other => Err(format!(
                "unknown audience `{other}`; expected mug, users or all"
            )),
        }
    }
}

/// One problem in a contacts file, at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

/// The contacts file could not be used; nothing was imported.
#[derive(Debug, thiserror::Error)]
pub enum ContactsError {
    #[error("cannot read contacts file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", format_row_errors(path, errors, *more))]
    Invalid {
        path: PathBuf,
        /// The first [`MAX_LISTED_PROBLEMS`] problems, by line.
        errors: Vec<RowError>,
        /// Problems found beyond those listed.
        more: usize,
    },
    /// The file would mark too many contacts inactive (see [`check_removals`]).
    #[error("{}", removals_message(path, *rows, *removed, *active, *max_percent))]
    TooManyRemovals {
        path: PathBuf,
        /// Contacts in the file.
        rows: usize,
        /// Active contacts the file leaves out.
        removed: usize,
        /// Active contacts before.
        active: usize,
        max_percent: u8,
    },
}

/// Refuse a sync that would mark more than `max_percent` of the `active` contacts inactive,
/// and any sync from a file with no rows at all (an export cut short or made from an empty
/// query), unless `allow` (`--allow-removals`).
pub fn check_removals(
    path: &Path,
    rows: usize,
    removed: usize,
    active: usize,
    max_percent: u8,
    allow: bool,
) -> Result<(), ContactsError> {
    let too_many = removed as u128 * 100 > max_percent as u128 * active as u128;
    if allow || (rows > 0 && !too_many) {
        return Ok(());
    }
    Err(ContactsError::TooManyRemovals {
        path: path.to_path_buf(),
        rows,
        removed,
        active,
        max_percent,
    })
}

fn removals_message(
    path: &Path,
    rows: usize,
    removed: usize,
    active: usize,
    max_percent: u8,
) -> String {
    let file = crate::inert::line(&path.to_string_lossy()).into_owned();
    let go_on = "If these people really left the export, run the same command again with \
                 --allow-removals.";
    if rows == 0 && active == 0 {
        return format!(
            "{file} has no contacts (a header only), so nothing was imported. Check the export; \
             to keep an empty users group all the same, run the same command again with \
             --allow-removals."
        );
    }
    if rows == 0 {
        return format!(
            "{file} has no contacts (a header only); it would mark all {active} active contacts \
             inactive, so nothing was imported. Check the export. {go_on}"
        );
    }
    let percent = if active == 0 {
        0
    } else {
        (removed * 100).div_ceil(active)
    };
    format!(
        "{file} would mark {removed} of the {active} active contacts inactive ({percent}%, more \
         than max_removal_percent = {max_percent}%), so nothing was imported. {go_on}"
    )
}

/// At most this many problems of a contacts file are listed (each with its line); the rest are
/// counted. A file that is wrong throughout (the wrong export, say) would otherwise print and
/// hold a message per row.
pub const MAX_LISTED_PROBLEMS: usize = 1000;

/// "FILE has N problems; nothing was imported:", one `FILE:LINE: message` line per listed
/// problem, and how many more there are.
pub fn format_row_errors(path: &Path, errors: &[RowError], more: usize) -> String {
    let total = errors.len() + more;
    let mut out = format!(
        "{} has {} problem{}; nothing was imported:",
        path.display(),
        total,
        if total == 1 { "" } else { "s" }
    );
    for e in errors {
        out.push_str(&format!("\n  {}:{}: {}", path.display(), e.line, e.message));
    }
    if more > 0 {
        out.push_str(&format!("\n  ... and {more} more, not listed"));
    }
    out
}

/// The problems of a file, listed up to [`MAX_LISTED_PROBLEMS`] and counted beyond.
#[derive(Debug, Default)]
pub struct Problems {
    listed: Vec<RowError>,
    more: usize,
}

impl Problems {
    pub fn push(&mut self, e: RowError) {
        if self.listed.len() < MAX_LISTED_PROBLEMS {
            self.listed.push(e);
        } else {
            self.more += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    /// Add problems found elsewhere (listed ones, and a count of those not listed), keeping
    /// the listed ones in line order.
    pub fn merge(&mut self, listed: Vec<RowError>, unlisted: usize) {
        self.listed.extend(listed);
        self.listed.sort_by_key(|e| e.line);
        let over = self.listed.len().saturating_sub(MAX_LISTED_PROBLEMS);
        self.listed.truncate(MAX_LISTED_PROBLEMS);
        self.more += over + unlisted;
    }

    /// The error for `path`, when there is any problem.
    pub fn into_error(self, path: &Path) -> Option<ContactsError> {
        (!self.listed.is_empty()).then(|| ContactsError::Invalid {
            path: path.to_path_buf(),
            errors: self.listed,
            more: self.more,
        })
    }
}

/// The message for a row whose address an earlier row has.
pub fn duplicate_address(email: &str, first_line: u64) -> String {
    format!("duplicate address {email} (already on line {first_line})")
}

/// The message for a row whose user_id an earlier row has.
pub fn duplicate_user_id(user_id: i64, first_line: u64) -> String {
    format!("duplicate user_id {user_id} (already on line {first_line})")
}

/// The setting that records the file last imported by hand (JSON of [`ImportedSource`]).
pub const IMPORTED_SOURCE_SETTING: &str = "contacts_source";

/// A contacts file imported by hand (`notify contacts import FILE`) that is not the configured
/// one. It stays the source of the contacts until the configured file changes (another path,
/// or new content), so that a notice run does not undo the import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ImportedSource {
    /// The imported file, as an absolute path.
    pub file: PathBuf,
    /// [`config_fingerprint`] of the configured contacts file at the time of the import.
    pub config: String,
    /// When it was imported (RFC 3339 UTC).
    pub imported_at: String,
}

/// Where a run's contacts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The configured `contacts` file. `superseded` is a hand import that applied until now:
    /// the configured file changed since, so it is the source again.
    Configured {
        path: PathBuf,
        superseded: Option<ImportedSource>,
    },
    /// A file imported by hand while the configured file has not changed since.
    Imported(ImportedSource),
}

impl Source {
    /// The file to read.
    pub fn path(&self) -> &Path {
        match self {
            Source::Configured { path, .. } => path,
            Source::Imported(i) => &i.file,
        }
    }
}

/// The source of the contacts given the configured file, its fingerprint now, and the hand
/// import recorded in the store (if any).
pub fn choose_source(
    configured: &Path,
    fingerprint_now: &str,
    recorded: Option<ImportedSource>,
) -> Source {
    match recorded {
        Some(r) if r.config == fingerprint_now => Source::Imported(r),
        superseded => Source::Configured {
            path: configured.to_path_buf(),
            superseded,
        },
    }
}

/// A path made absolute (and resolved, when it exists), to compare and record it.
pub fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// A fingerprint of the configured contacts file: its absolute path and its content (SHA-256,
/// hex). It changes when the configuration points elsewhere or the file is replaced.
pub fn config_fingerprint(configured: &Path) -> String {
    use sha2::{Digest, Sha256};
    let path = absolute(configured);
    let mut h = Sha256::new();
    h.update(path.to_string_lossy().as_bytes());
    h.update([0]);
    // Streamed (the same value as hashing the whole content at once): a large export is never
    // held in memory to be fingerprinted.
    let mut with_content = h.clone();
    with_content.update(b"content\0");
    let read = std::fs::File::open(&path)
        .and_then(|f| std::io::copy(&mut std::io::BufReader::new(f), &mut with_content));
    match read {
        Ok(_) => h = with_content,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => h.update(b"absent"),
        Err(_) => h.update(b"unreadable"),
    }
    hex::encode(h.finalize())
}

/// Columns that must be present (the rest of `moped_users` is optional).
pub const REQUIRED_COLUMNS: &[&str] = &[
    "user_id",
    "first_name",
    "last_name",
    "email",
    "roles",
    "is_deleted",
    "is_user_group_member",
];

/// A contacts file opened for reading, or why it cannot be.
fn open(path: &Path) -> Result<std::fs::File, ContactsError> {
    std::fs::File::open(path).map_err(|source| ContactsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// What reading a whole contacts file found: its SHA-256 (hex) and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub sha256: String,
    pub bytes: u64,
}

/// The SHA-256 of a contacts file, read in pieces: a large export is never held in memory.
pub fn digest_file(path: &Path) -> Result<FileDigest, ContactsError> {
    let mut scan = Scan::new(std::io::BufReader::new(open(path)?));
    std::io::copy(&mut scan, &mut std::io::sink()).map_err(|source| ContactsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(scan.digest())
}

/// The first valid contact of a file (to check the templates with real values), reading no
/// further than it. `None` when the file has no valid row before its first broken one.
pub fn first_contact(path: &Path) -> Result<Option<Contact>, ContactsError> {
    let rows = match ContactRows::new(std::io::BufReader::new(open(path)?)) {
        Ok(rows) => rows,
        Err(_) => return Ok(None),
    };
    Ok(rows.map_while(Result::ok).next().map(|(_, c)| c))
}

/// Check every row of a file on its own, streaming it (duplicates across rows are left to the
/// sync, which finds them in the database): a file with a bad row is refused before a database
/// is even opened.
pub fn check_rows(path: &Path) -> Result<(), ContactsError> {
    let invalid = |errors, more| ContactsError::Invalid {
        path: path.to_path_buf(),
        errors,
        more,
    };
    let rows = ContactRows::new(std::io::BufReader::with_capacity(256 * 1024, open(path)?))
        .map_err(|e| invalid(vec![e], 0))?;
    let mut problems = Problems::default();
    for row in rows {
        if let Err(errors) = row {
            errors.into_iter().for_each(|e| problems.push(e));
        }
    }
    problems.into_error(path).map_or(Ok(()), Err)
}

/// Parse CSV bytes into contacts, or every problem found with its line number (duplicate
/// addresses and user_ids included). For exports small enough to hold; a notice run's sync
/// streams the file with [`ContactRows`] and finds duplicates in the database.
pub fn parse(bytes: &[u8]) -> Result<Vec<Contact>, Vec<RowError>> {
    let rows = ContactRows::new(bytes).map_err(|e| vec![e])?;
    let mut contacts = Vec::new();
    let mut errors = Vec::new();
    let mut seen_email: HashMap<String, u64> = HashMap::new();
    let mut seen_id: HashMap<i64, u64> = HashMap::new();
    for row in rows {
        let (line, c) = match row {
            Ok(c) => c,
            Err(e) => {
                errors.extend(e);
                continue;
            }
        };
        if let Some(&first) = seen_email.get(&c.email) {
            errors.push(RowError {
                line,
                message: duplicate_address(&c.email, first),
            });
        } else if let Some(&first) = seen_id.get(&c.user_id) {
            errors.push(RowError {
                line,
                message: duplicate_user_id(c.user_id, first),
            });
        } else {
            seen_email.insert(c.email.clone(), line);
            seen_id.insert(c.user_id, line);
            contacts.push(c);
        }
    }
    if errors.is_empty() {
        Ok(contacts)
    } else {
        Err(errors)
    }
}

/// A reader that hashes what passes through it (SHA-256), counts it, and notes whether any of
/// it is more than white space (a UTF-8 byte order mark at the start does not count).
pub struct Scan<R> {
    inner: R,
    sha: sha2::Sha256,
    bytes: u64,
    non_blank: bool,
}

impl<R: std::io::Read> Scan<R> {
    pub fn new(inner: R) -> Scan<R> {
        use sha2::Digest as _;
        Scan {
            inner,
            sha: sha2::Sha256::new(),
            bytes: 0,
            non_blank: false,
        }
    }

    /// The digest of everything read so far.
    pub fn digest(&self) -> FileDigest {
        use sha2::Digest as _;
        FileDigest {
            sha256: hex::encode(self.sha.clone().finalize()),
            bytes: self.bytes,
        }
    }
}

impl<R: std::io::Read> std::io::Read for Scan<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        let n = self.inner.read(buf)?;
        let got = buf.get(..n).unwrap_or_default();
        if !self.non_blank {
            self.non_blank = got.iter().enumerate().any(|(i, b)| {
                let at = self.bytes as usize + i;
                let in_mark = at < BOM.len() && BOM.get(at) == Some(b);
                !(b.is_ascii_whitespace() || in_mark)
            });
        }
        self.sha.update(got);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The rows of a contacts CSV one at a time, read from any reader: a contact with its line,
/// or the problems of that row (with its line). Each row is checked on its own; duplicates
/// across rows are for the caller to find ([`parse`] in memory, the sync in the database).
pub struct ContactRows<R: std::io::Read> {
    reader: csv::Reader<Scan<R>>,
    index: HashMap<String, usize>,
    record: csv::StringRecord,
    done: bool,
}

impl<R: std::io::Read> ContactRows<R> {
    /// Read the header row; a missing required column is an error on line 1, and so is a file
    /// that holds nothing but white space.
    pub fn new(input: R) -> Result<ContactRows<R>, RowError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(Scan::new(input));
        let headers = reader
            .headers()
            .map_err(|e| RowError {
                line: 1,
                message: format!("cannot read the header row: {}", csv_message(&e)),
            })?
            .clone();
        if !reader.get_ref().non_blank {
            // Blank so far: read on to tell an empty file from a blank first line.
            let mut record = csv::ByteRecord::new();
            while !reader.get_ref().non_blank
                && matches!(reader.read_byte_record(&mut record), Ok(true))
            {}
            if !reader.get_ref().non_blank {
                return Err(RowError {
                    line: 1,
                    message: format!(
                        "the file is empty: no header row and no contacts (the header must include {})",
                        REQUIRED_COLUMNS.join(", ")
                    ),
                });
            }
        }
        let index: HashMap<String, usize> = headers
            .iter()
            .enumerate()
            .map(|(i, h)| (h.trim().to_ascii_lowercase(), i))
            .collect();
        let missing: Vec<&str> = REQUIRED_COLUMNS
            .iter()
            .copied()
            .filter(|c| !index.contains_key(*c))
            .collect();
        if !missing.is_empty() {
            return Err(RowError {
                line: 1,
                message: format!(
                    "missing column{} {} (the header must include {})",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join(", "),
                    REQUIRED_COLUMNS.join(", ")
                ),
            });
        }
        Ok(ContactRows {
            reader,
            index,
            record: csv::StringRecord::new(),
            done: false,
        })
    }

    /// The digest of what has been read: of the whole file once the rows are all read.
    pub fn digest(&self) -> FileDigest {
        self.reader.get_ref().digest()
    }
}

impl<R: std::io::Read> Iterator for ContactRows<R> {
    type Item = Result<(u64, Contact), Vec<RowError>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            match self.reader.read_record(&mut self.record) {
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Ok(true) => {}
                Err(e) => {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    // After a structural error the reader's position is unreliable: stop.
                    if !matches!(e.kind(), csv::ErrorKind::UnequalLengths { .. }) {
                        self.done = true;
                    }
                    return Some(Err(vec![RowError {
                        line,
                        message: csv_message(&e),
                    }]));
                }
            }
            let line = self.record.position().map(|p| p.line()).unwrap_or(0);
            if self.record.iter().all(|f| f.trim().is_empty()) {
                continue;
            }
            let parsed = parse_row(&Row {
                record: &self.record,
                index: &self.index,
            });
            return Some(match parsed {
                Ok(c) => Ok((line, c)),
                Err(messages) => Err(messages
                    .into_iter()
                    .map(|message| RowError { line, message })
                    .collect()),
            });
        }
    }
}

fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!(
            "expected {expected_len} fields but found {len} (a stray comma, or a quote that is never closed?)"
        ),
        csv::ErrorKind::Utf8 { .. } => "the row is not valid UTF-8 (save the file as UTF-8)".into(),
        _ => e.to_string(),
    }
}

struct Row<'a> {
    record: &'a csv::StringRecord,
    index: &'a HashMap<String, usize>,
}

impl Row<'_> {
    fn get(&self, name: &str) -> &str {
        self.index
            .get(name)
            .and_then(|&i| self.record.get(i))
            .unwrap_or("")
            .trim()
    }
}

/// The longest value each column may hold, in characters. Real exports stay far below; a
/// longer value is a broken or hostile file (a 1 MB name would make a 1 MB header line).
pub const FIELD_LIMITS: &[(&str, usize)] = &[
    ("user_id", 20),
    ("first_name", 200),
    ("last_name", 200),
    ("title", 200),
    ("workgroup", 200),
    ("roles", 1000),
    ("is_coa_staff", 10),
    ("is_deleted", 10),
    ("is_user_group_member", 10),
    ("note", 2000),
    ("date_added", 64),
    ("last_seen_date", 64),
];

/// An address may have at most 254 characters (RFC 5321's 256-octet path less its angle
/// brackets), and its local part at most 64.
pub const MAX_ADDRESS_LEN: usize = 254;
pub const MAX_LOCAL_PART_LEN: usize = 64;

/// A value quoted in a message: clipped, and with control characters escaped.
fn shown(v: &str) -> String {
    const MAX: usize = 60;
    let clipped: String = if v.chars().count() > MAX {
        v.chars().take(MAX).chain(['…']).collect()
    } else {
        v.to_string()
    };
    crate::inert::line(&clipped).into_owned()
}

/// Why an address is too long to be one, if it is.
fn address_too_long(raw: &str) -> Option<String> {
    let len = raw.chars().count();
    if len > MAX_ADDRESS_LEN {
        return Some(format!(
            "email is {len} characters long; an address has at most {MAX_ADDRESS_LEN} (RFC 5321)"
        ));
    }
    let local = raw.rsplit_once('@').map_or(raw, |(l, _)| l).chars().count();
    (local > MAX_LOCAL_PART_LEN).then(|| {
        format!(
            "email `{}` has a local part (before the @) of {local} characters; at most \
             {MAX_LOCAL_PART_LEN} are allowed (RFC 5321)",
            shown(raw)
        )
    })
}

fn parse_row(row: &Row<'_>) -> Result<Contact, Vec<String>> {
    let mut problems = Vec::new();
    // A value over its limit is reported once and then read as blank, so that no other check
    // quotes it back.
    let mut too_long = std::collections::HashSet::new();
    for &(name, max) in FIELD_LIMITS {
        let len = row.get(name).chars().count();
        if len > max {
            problems.push(format!(
                "{name} is {len} characters long; at most {max} are allowed"
            ));
            too_long.insert(name);
        }
    }
    let field = |name: &str| {
        if too_long.contains(name) {
            ""
        } else {
            row.get(name)
        }
    };
    let user_id = match field("user_id").parse::<i64>() {
        Ok(id) if id > 0 => id,
        _ if too_long.contains("user_id") => 0,
        _ => {
            problems.push(format!(
                "user_id `{}` is not a positive whole number",
                shown(field("user_id"))
            ));
            0
        }
    };
    let raw_email = field("email");
    let email = match address_too_long(raw_email).map_or_else(|| check_address(raw_email), Err) {
        Ok(e) => e,
        Err(why) => {
            problems.push(why);
            String::new()
        }
    };
    let mut flag = |name: &str, default: bool| match parse_bool(field(name)) {
        Some(b) => b,
        None if field(name).is_empty() => default,
        None => {
            problems.push(format!(
                "{name} `{}` is not a boolean (true/false, t/f, yes/no, 1/0)",
                shown(field(name))
            ));
            default
        }
    };
    let is_deleted = flag("is_deleted", false);
    let is_user_group_member = flag("is_user_group_member", false);
    let coa_default = email.ends_with("@austintexas.gov");
    let is_coa_staff = flag("is_coa_staff", coa_default);
    let roles = match parse_roles(field("roles")) {
        Ok(r) => r,
        Err(why) => {
            problems.push(why);
            Vec::new()
        }
    };
    // Free text: a line break or control character inside a cell (possible in a hand-edited
    // export) becomes a space, so no value can ever span lines in a header or the text part.
    let text = |name: &str| -> String {
        let v = field(name);
        if name == "note" {
            // A note keeps its line breaks; a NUL byte (which PostgreSQL text cannot hold)
            // becomes a space, as every control character does in the other fields.
            return v.replace('\0', " ");
        }
        let cleaned: String = v
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let first_name = text("first_name");
    let last_name = text("last_name");
    let title = text("title");
    let workgroup = text("workgroup");
    let note = text("note");
    let date_added = text("date_added");
    let last_seen_date = text("last_seen_date");
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Contact {
        user_id,
        first_name,
        last_name,
        email,
        title,
        workgroup,
        roles,
        is_coa_staff,
        is_deleted,
        is_user_group_member,
        note,
        date_added,
        last_seen_date,
    })
}

/// Check one mail address and return it lower-cased.
pub fn check_address(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("email is empty".into());
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "email `{}` contains spaces or control characters",
            raw.escape_debug()
        ));
    }
    let lower = raw.to_lowercase();
    let addr: lettre::Address = lower
        .parse()
        .map_err(|e| format!("email `{raw}` is not a valid address ({e})"))?;
    if !addr.domain().contains('.') {
        return Err(format!("email `{raw}` has no dot in its domain"));
    }
    Ok(lower)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// Roles as Moped exports them: a JSON array (`["moped-editor"]`), a PostgreSQL array literal
/// (`{moped-editor}`), or blank.
fn parse_roles(s: &str) -> Result<Vec<String>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    if s.starts_with('[') {
        return serde_json::from_str::<Vec<String>>(s)
            .map_err(|e| format!("roles `{}` is not a JSON array of strings ({e})", shown(s)));
    }
    if let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        return Ok(inner
            .split(',')
            .map(|r| r.trim().trim_matches('"').to_string())
            .filter(|r| !r.is_empty())
            .collect());
    }
    Err(format!(
        "roles `{}` is not a JSON array such as [\"moped-editor\"]",
        shown(s)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "user_id,first_name,last_name,email,title,workgroup,roles,is_coa_staff,is_deleted,is_user_group_member,note,date_added,last_seen_date\n";

    fn parse_str(body: &str) -> Result<Vec<Contact>, Vec<RowError>> {
        parse(format!("{HEADER}{body}").as_bytes())
    }

    #[test]
    fn awkward_but_valid_rows_parse() {
        let c = parse_str(concat!(
            "1,Mary,O'Connor,Mary.OConnor@AustinTexas.gov,Planner,\"Active Transportation & Street Design\",\"[\"\"moped-editor\"\"]\",true,false,true,,2023-01-05,\n",
            "2,Ana,Núñez,ana+moped@austintexas.gov,,Signs & Markings,{moped-viewer},t,f,t,\"moved, see note\",,\n",
        ))
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].email, "mary.oconnor@austintexas.gov");
        assert_eq!(c[0].roles, vec!["moped-editor"]);
        assert_eq!(c[0].last_name, "O'Connor");
        assert_eq!(c[1].roles, vec!["moped-viewer"]);
        assert!(!Audience::Users.includes(&c[1]), "+ address is not a user");
        assert!(Audience::Mug.includes(&c[1]));
    }

    #[test]
    fn every_bad_row_is_reported_with_its_line() {
        let errs = parse_str(concat!(
            "1,A,B,a@austintexas.gov,,,[],true,false,true,,,\n",
            "2,C,D,not-an-address,,,[],true,false,true,,,\n",
            "3,E,F,e@austintexas.gov,,,[],maybe,false,true,,,\n",
            "4,G,H,A@AUSTINTEXAS.GOV,,,[],true,false,true,,,\n",
            "5,I,J,i@austintexas.gov,,,[moped-editor,true,false,true,,,\n",
            "x,K,L,k@austintexas.gov,,,[],true,false,true,,,\n",
            "7,M,N,m@austintexas.gov,,,[],true,false\n",
        ))
        .unwrap_err();
        let lines: Vec<u64> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8], "{errs:?}");
        assert!(errs[0].message.contains("not-an-address"));
        assert!(errs[1].message.contains("is_coa_staff") && errs[1].message.contains("maybe"));
        assert!(
            errs[2].message.contains("duplicate address") && errs[2].message.contains("line 2")
        );
        assert!(errs[3].message.contains("roles"));
        assert!(errs[4].message.contains("user_id"));
        assert!(errs[5].message.contains("expected 13 fields"));
    }

    #[test]
    fn an_empty_file_is_reported_as_such() {
        for bytes in [&b""[..], b"\xEF\xBB\xBF", b"\n\r\n "] {
            let errs = parse(bytes).unwrap_err();
            assert_eq!(errs.len(), 1);
            assert_eq!(errs[0].line, 1);
            assert!(errs[0].message.starts_with("the file is empty"), "{errs:?}");
        }
    }

    #[test]
    fn missing_column_is_reported_on_line_one() {
        let errs = parse(b"user_id,first_name,email\n1,A,a@b.co\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 1);
        assert!(errs[0].message.contains("last_name"), "{}", errs[0].message);
    }

    #[test]
    fn unclosed_quote_is_an_error() {
        let errs = parse_str(concat!(
            "1,A,B,a@austintexas.gov,,\"Signs & Markings,[],true,false,true,,,\n",
            "2,C,D,c@austintexas.gov,,,[],true,false,true,,,\n",
        ))
        .unwrap_err();
        assert_eq!(errs[0].line, 2, "{errs:?}");
    }

    #[test]
    fn a_nul_in_a_note_becomes_a_space_and_line_breaks_stay() {
        let c = parse_str("1,A,B,a@austintexas.gov,,,[],true,false,true,\"one\0two\nthree\",,\n")
            .unwrap();
        assert_eq!(c[0].note, "one two\nthree");
    }

    #[test]
    fn line_breaks_in_names_become_spaces() {
        let c = parse_str(
            "1,\"Eve\r\nBcc: x@evil.example\",B,e@austintexas.gov,,,[],true,false,true,,,\n",
        )
        .unwrap();
        assert_eq!(c[0].first_name, "Eve Bcc: x@evil.example");
    }

    #[test]
    fn header_injection_in_an_address_is_refused() {
        let errs = parse_str(
            "1,A,B,\"a@austintexas.gov\r\nBcc: x@evil.example\",,,[],true,false,true,,,\n",
        )
        .unwrap_err();
        assert!(errs[0].message.contains("control"), "{errs:?}");
    }

    #[test]
    fn over_long_fields_are_refused_without_quoting_them() {
        let long = "x".repeat(201);
        let errs = parse_str(&format!(
            "1,{long},B,a@austintexas.gov,,,[],true,false,true,,,\n\
             2,A,B,{}@austintexas.gov,,,[],true,false,true,,,\n\
             3,A,B,c@austintexas.gov,,{},[],true,false,true,,,\n",
            "l".repeat(65),
            "w".repeat(200)
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].line, 2);
        assert_eq!(
            errs[0].message,
            "first_name is 201 characters long; at most 200 are allowed"
        );
        assert_eq!(errs[1].line, 3);
        assert!(errs[1].message.contains("local part"), "{errs:?}");
        assert!(errs.iter().all(|e| e.message.len() < 200), "{errs:?}");
        let errs = parse_str(&format!(
            "{},A,B,a@{}.gov,,,[],true,false,true,,,\n",
            "9".repeat(30),
            "d".repeat(260)
        ))
        .unwrap_err();
        let messages: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            vec![
                "user_id is 30 characters long; at most 20 are allowed",
                "email is 266 characters long; an address has at most 254 (RFC 5321)"
            ]
        );
    }

    #[test]
    fn removals_beyond_the_share_and_empty_exports_are_refused() {
        let p = Path::new("export.csv");
        assert!(
            check_removals(p, 8, 2, 10, 20, false).is_ok(),
            "20% is not more than 20%"
        );
        let e = check_removals(p, 7, 3, 10, 20, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("would mark 3 of the 10 active contacts inactive (30%")
                && e.contains("--allow-removals"),
            "{e}"
        );
        assert!(check_removals(p, 7, 3, 10, 20, true).is_ok());
        assert!(check_removals(p, 9, 1, 10, 0, false).is_err());
        assert!(check_removals(p, 0, 5, 5, 100, false).is_err());
        let e = check_removals(p, 0, 0, 0, 100, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has no contacts (a header only), so nothing"),
            "{e}"
        );
        assert!(check_removals(p, 0, 5, 5, 20, true).is_ok());
        assert!(
            check_removals(p, 3, 0, 0, 20, false).is_ok(),
            "a first import"
        );
        let e = check_removals(p, 0, 4, 4, 20, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("export.csv has no contacts"), "{e}");
    }

    #[test]
    fn a_hand_import_is_the_source_until_the_configured_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let configured = dir.path().join("moped_users.csv");
        std::fs::write(&configured, "a").unwrap();
        let before = config_fingerprint(&configured);
        assert_eq!(config_fingerprint(&configured), before);
        let imported = ImportedSource {
            file: dir.path().join("other.csv"),
            config: before.clone(),
            imported_at: "2026-11-30T06:00:00.000000Z".into(),
        };
        assert_eq!(
            choose_source(&configured, &before, Some(imported.clone())),
            Source::Imported(imported.clone())
        );
        std::fs::write(&configured, "b").unwrap();
        let after = config_fingerprint(&configured);
        assert_ne!(after, before, "new content");
        assert_ne!(
            config_fingerprint(&dir.path().join("elsewhere.csv")),
            before,
            "another path"
        );
        let chosen = choose_source(&configured, &after, Some(imported.clone()));
        assert_eq!(chosen.path(), configured.as_path());
        assert_eq!(
            chosen,
            Source::Configured {
                path: configured.clone(),
                superseded: Some(imported)
            }
        );
        assert_eq!(
            choose_source(&configured, &after, None),
            Source::Configured {
                path: configured,
                superseded: None
            }
        );
    }

    #[test]
    fn audiences_follow_moped_rules() {
        let mut c = parse_str(
            "1,A,B,a@austintexas.gov,,,\"[\"\"non-login-user\"\"]\",true,false,true,,,\n",
        )
        .unwrap()
        .remove(0);
        assert!(Audience::Mug.includes(&c));
        assert!(!Audience::Users.includes(&c));
        c.is_deleted = true;
        assert!(!Audience::Mug.includes(&c));
        assert!(!Audience::All.includes(&c));
    }
}
