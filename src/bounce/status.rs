//! Status codes in bounce text: RFC 3463 enhanced status codes (`5.1.1`) and RFC 5321 reply
//! codes (`550`). It finds and parses codes only; what a code means is `classify`'s business.

use std::fmt;

/// An RFC 3463 enhanced status code `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    /// 2 success, 4 persistent transient failure, 5 permanent failure.
    pub class: u8,
    /// 0 other, 1 addressing, 2 mailbox, 3 mail system, 4 network/routing, 5 protocol,
    /// 6 content, 7 security/policy.
    pub subject: u16,
    pub detail: u16,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl Status {
    /// True when the code says nothing beyond its class (`5.0.0`, `4.0.0`).
    pub fn is_generic(&self) -> bool {
        self.subject == 0 && self.detail == 0
    }
}

/// Reads 1 to 3 ASCII digits at `i`; returns the number and the index after them.
fn digits(b: &[u8], i: usize) -> Option<(u16, usize)> {
    let mut n: u16 = 0;
    let mut j = i;
    while j < b.len() && b[j].is_ascii_digit() && j - i < 3 {
        n = n * 10 + u16::from(b[j] - b'0');
        j += 1;
    }
    if j == i || (j < b.len() && b[j].is_ascii_digit()) {
        None
    } else {
        Some((n, j))
    }
}

/// The enhanced status code starting at byte `i` of `b`, if one does, and the index after it.
fn enhanced_at(b: &[u8], i: usize) -> Option<(Status, usize)> {
    let class = *b.get(i)?;
    if !matches!(class, b'2' | b'4' | b'5') || b.get(i + 1) != Some(&b'.') {
        return None;
    }
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.') {
        return None;
    }
    let (subject, j) = digits(b, i + 2)?;
    if b.get(j) != Some(&b'.') || subject > 7 {
        return None;
    }
    let (detail, k) = digits(b, j + 1)?;
    // `5.1.1.4` is part of an IP address or a version, not a status.
    if b.get(k) == Some(&b'.') && b.get(k + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    if b.get(k).is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    Some((
        Status {
            class: class - b'0',
            subject,
            detail,
        },
        k,
    ))
}

/// The first enhanced status code in `text` and its byte offset.
pub(crate) fn find_enhanced(text: &str) -> Option<(Status, usize)> {
    let b = text.as_bytes();
    (0..b.len()).find_map(|i| enhanced_at(b, i).map(|(s, _)| (s, i)))
}

/// The last RFC 3463 enhanced status code in `text`: in a reply that quotes an earlier one
/// (`554 4.4.7 Message expired ... <421 4.4.2 Connection timed out>`) the innermost, most
/// specific answer.
pub(crate) fn find_last_enhanced(text: &str) -> Option<Status> {
    let b = text.as_bytes();
    (0..b.len())
        .rev()
        .find_map(|i| enhanced_at(b, i).map(|(s, _)| s))
}

/// Parses a DSN `Status:` value such as `5.1.1` or `5.0.0 (permanent failure)`.
pub(crate) fn parse_status_field(value: &str) -> Option<Status> {
    let b = value.trim_start().as_bytes();
    enhanced_at(b, 0).map(|(s, _)| s)
}

/// A failure reply code (4xx or 5xx) in one line of text and its byte offset.
///
/// A bare three-digit number is taken only where a server reply stands: at the start of the line
/// (after `#`, `(` or `<<<`), after a colon (`said: 550`, `reason: 550`), or followed by an
/// enhanced status code (`550 5.1.1`, `550-5.1.1`). That keeps port numbers, sizes and times out.
pub(crate) fn find_reply_code(line: &str) -> Option<(u16, usize)> {
    let b = line.as_bytes();
    let lead = line.len()
        - line
            .trim_start_matches([' ', '\t', '#', '(', '<', '>'])
            .len();
    let mut i = 0;
    while i + 3 <= b.len() {
        if !matches!(b[i], b'4' | b'5')
            || !b[i + 1].is_ascii_digit()
            || !b[i + 2].is_ascii_digit()
            || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.'))
        {
            i += 1;
            continue;
        }
        let next = b.get(i + 3).copied();
        let code = u16::from(b[i] - b'0') * 100
            + u16::from(b[i + 1] - b'0') * 10
            + u16::from(b[i + 2] - b'0');
        let ends_token = matches!(next, None | Some(b' ' | b'-' | b':' | b'\t' | b','));
        if ends_token {
            let at_start = i == lead;
            let after_colon = line[..i].trim_end().ends_with(':');
            let enhanced_follows =
                matches!(next, Some(b' ' | b'-')) && enhanced_at(b, i + 4).is_some();
            if at_start || after_colon || enhanced_follows {
                return Some((code, i));
            }
        }
        i += 3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enh(text: &str) -> Option<String> {
        find_enhanced(text).map(|(s, _)| s.to_string())
    }

    #[test]
    fn enhanced_codes_are_found_where_they_stand() {
        assert_eq!(enh("550 5.1.1 <bob@x.org>: no"), Some("5.1.1".into()));
        assert_eq!(enh("#550 5.1.10 RESOLVER"), Some("5.1.10".into()));
        assert_eq!(
            enh("no mailbox here by that name. (#5.1.1)"),
            Some("5.1.1".into())
        );
        assert_eq!(enh("550-5.7.133 RESOLVER.RST"), Some("5.7.133".into()));
        assert_eq!(enh("452 4.2.2 over quota"), Some("4.2.2".into()));
    }

    #[test]
    fn ip_addresses_and_versions_are_not_codes() {
        assert_eq!(enh("host [192.0.2.1] said"), None);
        assert_eq!(enh("mx 10.5.1.2 and Exim 4.96"), None);
        assert_eq!(enh("v5.1.1 and 5.9.1"), None);
        assert_eq!(enh("2.0.2.1"), None);
    }

    #[test]
    fn status_field() {
        assert_eq!(
            parse_status_field(" 5.0.0 (permanent failure)").map(|s| s.to_string()),
            Some("5.0.0".into())
        );
        assert!(parse_status_field("5.0.0").is_some_and(|s| s.is_generic()));
        assert_eq!(parse_status_field("failed"), None);
    }

    #[test]
    fn reply_codes_only_where_a_reply_stands() {
        assert_eq!(find_reply_code("550 5.1.1 User unknown"), Some((550, 0)));
        assert_eq!(find_reply_code("    #550 5.1.1 RESOLVER"), Some((550, 5)));
        assert_eq!(
            find_reply_code("host x said: 552 mailbox full"),
            Some((552, 13))
        );
        assert_eq!(find_reply_code("554: delivery error: dd"), Some((554, 0)));
        assert_eq!(
            find_reply_code("(reason: 550 5.1.1 <b@x.org>... User unknown)"),
            Some((550, 9))
        );
        assert_eq!(
            find_reply_code("550-5.1.1 The email account"),
            Some((550, 0))
        );
        assert_eq!(
            find_reply_code("connect to port 587 failed after 450 seconds"),
            None
        );
        assert_eq!(find_reply_code("host mx [192.0.2.1]"), None);
        assert_eq!(find_reply_code("250 ok"), None);
    }
}
