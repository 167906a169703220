//! Mailboxes on disk: Maildir folders (`new/` and `cur/`), plain folders of message files, and
//! mbox files (messages separated by `From ` lines, `>From ` unescaped), read one message at a
//! time by [`MboxReader`] with at most one message in memory. A folder is only listed here; its
//! files are read one at a time as a stream (`stream`).

use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use super::IntakeError;

/// The files of a folder, in the order they are read.
pub struct Listing {
    /// A Maildir: every file is a message, whatever it holds.
    pub maildir: bool,
    /// Each file and its size when listed.
    pub files: Vec<(PathBuf, u64)>,
}

/// Every message file of a Maildir (`new/` then `cur/`, each by name) or, for any other folder,
/// every file in it by name (each to be recognised by what it holds, as a file given by itself
/// is). Hidden files (`.name`) and subfolders are left out.
pub fn list_folder(dir: &Path) -> Result<Listing, IntakeError> {
    let maildir = dir.join("cur").is_dir() || dir.join("new").is_dir();
    let folders = if maildir {
        vec![dir.join("new"), dir.join("cur")]
    } else {
        vec![dir.to_path_buf()]
    };
    let mut out = Vec::new();
    for folder in folders {
        if !folder.is_dir() {
            continue;
        }
        // Each file's name beside it: sorting 100,000 paths by the names taken out of them
        // again at each comparison costs more than listing them.
        let mut files: Vec<(std::ffi::OsString, PathBuf, u64)> = std::fs::read_dir(&folder)
            .map_err(|source| IntakeError::Read {
                path: folder.clone(),
                source,
            })?
            .flatten()
            .filter(|e| !e.file_name().to_str().is_some_and(|n| n.starts_with('.')))
            .filter_map(|e| {
                // A symbolic link is followed (by its path); anything else is asked of the
                // folder (no walk of the whole path for each of 100,000 files).
                let meta = match e.file_type() {
                    Ok(kind) if !kind.is_symlink() => e.metadata(),
                    _ => std::fs::metadata(e.path()),
                };
                let size = meta.ok().filter(|m| m.is_file())?.len();
                Some((e.file_name(), e.path(), size))
            })
            .collect();
        // By name (the folder is the same for all: comparing names is comparing paths).
        files.sort_unstable_by(|(a, ..), (b, ..)| a.cmp(b));
        out.extend(files.into_iter().map(|(_, path, size)| (path, size)));
    }
    Ok(Listing {
        maildir,
        files: out,
    })
}

/// One message of an mbox, as [`MboxReader`] yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MboxItem {
    /// The message's bytes (`>From ` unescaped, the separator line and the blank line before the
    /// next `From ` removed).
    Message(Vec<u8>),
    /// A message over the size limit: read through without being kept. `size` counts its bytes
    /// as they are in the mbox.
    Oversized { size: u64 },
}

/// An mbox read one message at a time from any [`BufRead`] (a file, standard input), holding
/// at most one message (up to the size limit, plus one partial line of at most the limit) in
/// memory. A line starting with `From ` at the start of the input or after a blank line begins
/// a message (anything before the first one is ignored); lines `>From `, `>>From ` lose one
/// `>`. A message over the limit is read through and reported as [`MboxItem::Oversized`]: input
/// without any line break (`/dev/zero` after a `From ` line) never grows memory.
pub struct MboxReader<R> {
    reader: R,
    max: usize,
    /// The `From ` line of the next message has been read.
    at_message: bool,
    /// Nothing has been read yet (a `From ` line at the very start opens a message).
    at_start: bool,
    done: bool,
    /// The start of each line while skipping (an oversized message, text before the first
    /// message).
    scratch: Vec<u8>,
}

/// Bytes of a line kept while a message is skipped: enough to see `From ` and blank lines.
const PEEK: usize = 16;

impl<R: BufRead> MboxReader<R> {
    /// Read messages of at most `max` bytes from `reader`.
    pub fn new(reader: R, max: usize) -> Self {
        MboxReader {
            reader,
            max,
            at_message: false,
            at_start: true,
            done: false,
            scratch: Vec::with_capacity(PEEK),
        }
    }

    fn next_message(&mut self) -> io::Result<Option<MboxItem>> {
        if self.done {
            return Ok(None);
        }
        // Find the `From ` line that opens the next message (only the first message can have
        // text before it).
        let mut prev_blank = self.at_start;
        self.at_start = false;
        while !self.at_message {
            self.scratch.clear();
            let n = read_line_bounded(&mut self.reader, &mut self.scratch, PEEK)?;
            if n == 0 {
                self.done = true;
                return Ok(None);
            }
            if prev_blank && self.scratch.starts_with(b"From ") {
                self.at_message = true;
            } else {
                prev_blank = is_blank(&self.scratch, n);
            }
        }
        self.at_message = false;
        // Room for the blank line that separates messages, which is not part of the message.
        let limit = self.max.saturating_add(2);
        let mut msg: Vec<u8> = Vec::new();
        let mut size: u64 = 0;
        let mut oversized = false;
        let mut prev_blank = false;
        loop {
            let line_start = msg.len();
            let n = if oversized {
                self.scratch.clear();
                read_line_bounded(&mut self.reader, &mut self.scratch, PEEK)?
            } else {
                let keep = limit.saturating_sub(line_start).max(PEEK);
                read_line_bounded(&mut self.reader, &mut msg, keep)?
            };
            if n == 0 {
                self.done = true;
                break;
            }
            let line: &[u8] = if oversized {
                &self.scratch
            } else {
                &msg[line_start..]
            };
            if prev_blank && line.starts_with(b"From ") {
                msg.truncate(line_start);
                self.at_message = true;
                break;
            }
            prev_blank = is_blank(line, n);
            let quoted = line.iter().take_while(|&&b| b == b'>').count();
            let unescape = quoted > 0 && line[quoted..].starts_with(b"From ");
            let cut = n > line.len();
            size += n as u64;
            if oversized {
                continue;
            }
            if cut || msg.len() > limit {
                // Over the limit: stop keeping it, read on to its end.
                oversized = true;
                msg = Vec::new();
            } else if unescape {
                msg.remove(line_start);
            }
        }
        if oversized {
            return Ok(Some(MboxItem::Oversized { size }));
        }
        let msg = without_separator_line(msg);
        if msg.len() > self.max {
            return Ok(Some(MboxItem::Oversized { size }));
        }
        Ok(Some(MboxItem::Message(msg)))
    }
}

impl<R: BufRead> Iterator for MboxReader<R> {
    type Item = io::Result<MboxItem>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_message() {
            Ok(item) => item.map(Ok),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Read one line (through its `\n`, or to the end of input) from `r`, appending at most `keep`
/// bytes of it to `buf` and consuming the rest unseen. Returns the line's full length (0 at the
/// end of input).
fn read_line_bounded<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, keep: usize) -> io::Result<usize> {
    let mut total = 0usize;
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(total);
        }
        let (used, ended) = match memchr::memchr(b'\n', available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = keep.saturating_sub(total).min(used);
        buf.extend_from_slice(&available[..room]);
        total = total.saturating_add(used);
        r.consume(used);
        if ended {
            return Ok(total);
        }
    }
}

/// Is this line (of `n` bytes, its start in `kept`) empty but for its line break?
fn is_blank(kept: &[u8], n: usize) -> bool {
    n <= 2 && (kept == b"\n" || kept == b"\r\n")
}

/// The blank line that ends each message in an mbox belongs to the mbox, not the message.
fn without_separator_line(mut m: Vec<u8>) -> Vec<u8> {
    if m.ends_with(b"\r\n\r\n") {
        m.truncate(m.len() - 2);
    } else if m.ends_with(b"\n\n") {
        m.truncate(m.len() - 1);
    }
    m
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::Read as _;
    use std::rc::Rc;

    use super::*;

    fn messages(mbox: &[u8], max: usize) -> Vec<MboxItem> {
        MboxReader::new(mbox, max)
            .collect::<io::Result<Vec<_>>>()
            .unwrap()
    }

    #[test]
    fn mbox_splits_and_unescapes() {
        let mbox = b"preamble ignored\n\nFrom MAILER-DAEMON Thu Nov 26 09:00:00 2026\nSubject: one\n\n>From here\nbody\n\nFrom MAILER-DAEMON Thu Nov 26 09:01:00 2026\nSubject: two\n\n>>From quoted twice\nFrom not after a blank line\n";
        let m = messages(mbox, 1024);
        assert_eq!(
            m,
            [
                MboxItem::Message(b"Subject: one\n\nFrom here\nbody\n".to_vec()),
                MboxItem::Message(
                    b"Subject: two\n\n>From quoted twice\nFrom not after a blank line\n".to_vec()
                ),
            ]
        );
        let crlf = messages(
            b"From a\r\nSubject: x\r\n\r\nbody\r\n\r\nFrom b\r\nSubject: y\r\n",
            1024,
        );
        assert_eq!(
            crlf,
            [
                MboxItem::Message(b"Subject: x\r\n\r\nbody\r\n".to_vec()),
                MboxItem::Message(b"Subject: y\r\n".to_vec()),
            ]
        );
        assert!(messages(b"", 10).is_empty());
        assert!(messages(b"no From line at all\n", 10).is_empty());
    }

    #[test]
    fn a_message_over_the_limit_is_read_through_and_the_next_one_is_kept() {
        let body = "x".repeat(100);
        let exact = format!("Subject: s\n\n{}\n", &body[..100 - 13]);
        assert_eq!(exact.len(), 100);
        let mbox = format!(
            "From a\n{exact}\nFrom b\n{exact}x\n\nFrom c\n{}\n\nFrom d\nSubject: last\n",
            "y".repeat(5000)
        );
        let m = messages(mbox.as_bytes(), 100);
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[0], MboxItem::Message(exact.clone().into_bytes()));
        // Sizes as in the mbox, with the blank line that ends each.
        assert_eq!(m[1], MboxItem::Oversized { size: 103 });
        assert_eq!(m[2], MboxItem::Oversized { size: 5002 });
        assert_eq!(m[3], MboxItem::Message(b"Subject: last\n".to_vec()));
    }

    #[test]
    fn a_line_is_never_kept_beyond_its_bound() {
        // 16 MiB without a line break, as /dev/zero would give.
        let zeros = io::repeat(0).take(16 << 20);
        let mut r = io::BufReader::new(zeros);
        let mut buf = Vec::new();
        let n = read_line_bounded(&mut r, &mut buf, PEEK).unwrap();
        assert_eq!((n, buf.len()), (16 << 20, PEEK));
        assert_eq!(read_line_bounded(&mut r, &mut buf, PEEK).unwrap(), 0);
        // After a `From ` line, the same is one oversized message.
        let input =
            io::Cursor::new(b"From MAILER-DAEMON\n".to_vec()).chain(io::repeat(0).take(16 << 20));
        let m: Vec<_> = MboxReader::new(io::BufReader::new(input), 1 << 20)
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(m, [MboxItem::Oversized { size: 16 << 20 }]);
    }

    const FROM_LINE: &[u8] = b"From MAILER-DAEMON Mon Nov 30 06:00:00 2026\n";

    /// An mbox made on the fly, `count` bounces of about 8 KiB each, that counts what has been
    /// read from it.
    struct Generated {
        next: usize,
        count: usize,
        pending: Vec<u8>,
        read: Rc<Cell<u64>>,
    }

    fn generated_message(i: usize) -> Vec<u8> {
        let mut m = format!(
            "Subject: Undelivered Mail Returned to Sender\nMessage-ID: <{i}@mx.example.org>\n\nFinal-Recipient: rfc822; person{i}@example.org\nStatus: 5.1.1\n"
        );
        for l in 0..100 {
            m.push_str(&format!("{l:03} {}\n", "z".repeat(76)));
        }
        m.push_str(">From a quoted line\n");
        m.into_bytes()
    }

    impl io::Read for Generated {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.pending.is_empty() && self.next < self.count {
                self.pending = FROM_LINE.to_vec();
                self.pending.extend(generated_message(self.next));
                self.pending.push(b'\n');
                self.next += 1;
            }
            let n = out.len().min(self.pending.len());
            out[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            self.read.set(self.read.get() + n as u64);
            Ok(n)
        }
    }

    #[test]
    fn messages_come_one_at_a_time_from_a_stream() {
        // 4,400 messages, over 32 MiB: each is yielded before the input is read much past it.
        let read = Rc::new(Cell::new(0));
        let count = 4400;
        let input = Generated {
            next: 0,
            count,
            pending: Vec::new(),
            read: read.clone(),
        };
        let buffer = 8 * 1024;
        let mut seen = 0usize;
        let mut consumed_by_messages = 0u64;
        for item in MboxReader::new(io::BufReader::with_capacity(buffer, input), 64 * 1024) {
            let MboxItem::Message(m) = item.unwrap() else {
                panic!("no message is over the limit");
            };
            let mut expected = generated_message(seen);
            let quoted = expected.len() - ">From a quoted line\n".len();
            expected.remove(quoted);
            assert_eq!(m, expected);
            consumed_by_messages += (FROM_LINE.len() + generated_message(seen).len() + 1) as u64;
            // What has been read: the messages so far, the next `From ` line, one buffer.
            assert!(
                read.get() <= consumed_by_messages + (FROM_LINE.len() + buffer) as u64,
                "message {seen}: {} bytes read for {consumed_by_messages}",
                read.get()
            );
            seen += 1;
        }
        assert_eq!(seen, count);
        assert!(read.get() > 32 << 20);
    }
}
