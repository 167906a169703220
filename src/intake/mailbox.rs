//! Mailboxes on disk: Maildir folders (`new/` and `cur/`), plain folders of message files, and
//! mbox files (messages separated by `From ` lines, `>From ` unescaped).

use std::path::Path;

use super::{message, read_bytes, Incoming, IntakeError};

/// Every message in a Maildir (new/ and cur/) or, for any other folder, every file in it.
pub fn read_folder(dir: &Path) -> Result<Vec<Incoming>, IntakeError> {
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
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .map_err(|source| IntakeError::Read {
                path: folder.clone(),
                source,
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        files.sort();
        for f in files {
            let raw = std::fs::read(&f).map_err(|source| IntakeError::Read {
                path: f.clone(),
                source,
            })?;
            if maildir {
                out.push(message(&f.display().to_string(), raw));
            } else {
                out.extend(read_bytes(&f, &f.display().to_string(), raw)?);
            }
        }
    }
    Ok(out)
}

/// Split an mbox into messages. A line starting with `From ` at the start of the file or after
/// a blank line begins a message; lines of the form `>From `, `>>From ` lose one `>`.
pub fn split_mbox(raw: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut prev_blank = true;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if prev_blank && line.starts_with(b"From ") {
            if let Some(m) = current.take() {
                messages.push(without_separator_line(m));
            }
            current = Some(Vec::new());
            prev_blank = false;
            continue;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        prev_blank = body.is_empty();
        let Some(m) = current.as_mut() else { continue };
        let quoted = line.iter().take_while(|&&b| b == b'>').count();
        if quoted > 0 && line[quoted..].starts_with(b"From ") {
            m.extend_from_slice(&line[1..]);
        } else {
            m.extend_from_slice(line);
        }
    }
    if let Some(m) = current {
        messages.push(without_separator_line(m));
    }
    messages
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
    use super::*;

    #[test]
    fn mbox_splits_and_unescapes() {
        let mbox = b"From MAILER-DAEMON Thu Nov 26 09:00:00 2026\nSubject: one\n\n>From here\nbody\n\nFrom MAILER-DAEMON Thu Nov 26 09:01:00 2026\nSubject: two\n\n>>From quoted twice\n";
        let m = split_mbox(mbox);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0], b"Subject: one\n\nFrom here\nbody\n");
        assert_eq!(m[1], b"Subject: two\n\n>From quoted twice\n");
    }
}
