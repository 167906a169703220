//! Finding e-mail addresses in the text of a bounce: a small scanner that looks around each `@`
//! for an addr-spec, whatever wraps it (`<bob@x.org>`, `rfc822;bob@x.org`, `"bob@x.org"`,
//! `RCPT TO:<bob@x.org>`), and a rough validity check. It owns the address shape only; which
//! addresses count as bounced recipients is decided by `dsn` and `text`.
//!
//! Every scan is linear in its input: each `@` looks at most [`MAX_LOCAL`] characters to its left
//! and [`MAX_DOMAIN`] to its right, and the search resumes after the address it found.

/// The longest local part accepted (RFC 5321 allows 64 octets).
pub(crate) const MAX_LOCAL: usize = 64;
/// The longest domain accepted (RFC 5321 allows 255 octets).
pub(crate) const MAX_DOMAIN: usize = 255;

/// Local parts that name a mail system rather than a person: never reported from prose.
const ROLE_LOCAL_PARTS: &[&str] = &[
    "postmaster",
    "mailer-daemon",
    "mailer_daemon",
    "mailerdaemon",
    "mail-daemon",
    "maildaemon",
    "abuse",
];

/// An address found in a text: its byte range in that text and the lower-cased address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub start: usize,
    pub end: usize,
    pub address: String,
}

fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '!' | '#'
                | '$'
                | '%'
                | '&'
                | '*'
                | '+'
                | '/'
                | '='
                | '?'
                | '^'
                | '_'
                | '{'
                | '|'
                | '}'
                | '~'
                | '.'
                | '-'
                | '\''
                | '`'
        )
        || (!c.is_ascii() && c.is_alphanumeric())
}

fn is_domain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '.' || (!c.is_ascii() && c.is_alphanumeric())
}

/// Every plausible address in `text`, in order of appearance (duplicates included).
pub(crate) fn find_all(text: &str) -> Vec<Found> {
    let mut out = Vec::new();
    let mut from = 0;
    // `@` is one byte that no other character's UTF-8 contains: memchr finds it.
    while let Some(rel) = text
        .as_bytes()
        .get(from..)
        .and_then(|rest| memchr::memchr(b'@', rest))
    {
        let at = from + rel;
        from = at + 1;

        // A quoted local part (`"neko..nyaan"@example.org`) is taken whole, quotes included.
        let quoted = quoted_local(&text[..at]);
        // Walk left over local-part characters, at most MAX_LOCAL + 1 of them.
        // An address next to an undecodable character (U+FFFD) is garbled: skip it.
        let mut start = at;
        let mut garbled = false;
        let left = if quoted.is_some() { "" } else { &text[..at] };
        for (count, (i, c)) in left.char_indices().rev().enumerate() {
            if count > MAX_LOCAL || c == char::REPLACEMENT_CHARACTER {
                garbled = true;
                break;
            }
            if !is_local_char(c) {
                break;
            }
            start = i;
        }
        if garbled {
            continue;
        }
        // Walk right over domain characters.
        let mut end = at + 1;
        for (count, (i, c)) in text[at + 1..].char_indices().enumerate() {
            if c == char::REPLACEMENT_CHARACTER {
                garbled = true;
            }
            if count > MAX_DOMAIN || !is_domain_char(c) {
                break;
            }
            end = at + 1 + i + c.len_utf8();
        }
        if garbled {
            continue;
        }
        // Quotes, dots and slashes that open or close the match wrap it; they are not in it.
        let local = quoted.unwrap_or_else(|| {
            text[start..at].trim_start_matches(|c: char| !(c.is_alphanumeric() || c == '_'))
        });
        let domain = text[at + 1..end].trim_end_matches(['.', '-']);
        let start = at - local.len();
        let end = at + 1 + domain.len();
        let valid = if quoted.is_some() {
            validate_domain(domain).then(|| join_lower(local, domain))
        } else {
            validate(local, domain)
        };
        if let Some(address) = valid {
            out.push(Found {
                start,
                end,
                address,
            });
            from = end.max(from);
        }
    }
    out
}

/// The quoted local part that `before` (the text up to an `@`) ends with, quotes included:
/// printable characters other than `"` and `\` between two quotes, at most [`MAX_LOCAL`] of them.
fn quoted_local(before: &str) -> Option<&str> {
    let inner = before.strip_suffix('"')?;
    let mut open = None;
    for (count, (i, c)) in inner.char_indices().rev().enumerate() {
        if c == '"' {
            open = Some(i);
            break;
        }
        if count >= MAX_LOCAL || c == '\\' || c.is_control() || c == char::REPLACEMENT_CHARACTER {
            return None;
        }
    }
    let open = open?;
    let content = &inner[open + 1..];
    (!content.trim().is_empty()).then(|| &before[open..])
}

/// The first plausible address in `text`.
pub(crate) fn first(text: &str) -> Option<String> {
    find_all(text).into_iter().next().map(|f| f.address)
}

/// `local@domain` lower-cased when it looks like a deliverable address: a local part without
/// leading, trailing or doubled dots, a domain of at least two labels whose last is not numeric.
fn validate(local: &str, domain: &str) -> Option<String> {
    if local.is_empty()
        || local.chars().count() > MAX_LOCAL
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || local.ends_with(['\'', '`'])
    {
        return None;
    }
    validate_domain(domain).then(|| join_lower(local, domain))
}

/// `local@domain` in lower case, built with one allocation when it is ASCII.
fn join_lower(local: &str, domain: &str) -> String {
    let mut s = String::with_capacity(local.len() + 1 + domain.len());
    s.push_str(local);
    s.push('@');
    s.push_str(domain);
    if s.is_ascii() {
        s.make_ascii_lowercase();
        s
    } else {
        s.to_lowercase()
    }
}

/// A domain of at least two labels, none empty or starting or ending with `-`, the last not
/// numeric and at least two characters long.
fn validate_domain(domain: &str) -> bool {
    if domain.is_empty() || domain.len() > MAX_DOMAIN || !domain.contains('.') {
        return false;
    }
    let mut labels = domain.split('.').peekable();
    while let Some(label) = labels.next() {
        if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
            return false;
        }
        if labels.peek().is_none()
            && (label.chars().count() < 2 || label.chars().all(|c| c.is_ascii_digit()))
        {
            return false;
        }
    }
    true
}

/// True for the addresses mail software sends from (MAILER-DAEMON and its spellings), which
/// no message is ever delivered to.
pub(crate) fn is_daemon(address: &str) -> bool {
    let local = address.split('@').next().unwrap_or_default();
    ROLE_LOCAL_PARTS
        .iter()
        .filter(|role| role.contains("daemon"))
        .any(|role| local.eq_ignore_ascii_case(role))
}

/// True for addresses of mail systems (postmaster, MAILER-DAEMON, abuse) rather than people.
pub(crate) fn is_role(address: &str) -> bool {
    let local = address.split('@').next().unwrap_or_default();
    ROLE_LOCAL_PARTS
        .iter()
        .any(|role| local.eq_ignore_ascii_case(role))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<String> {
        find_all(text).into_iter().map(|f| f.address).collect()
    }

    #[test]
    fn finds_addresses_in_their_usual_wrappings() {
        assert_eq!(all("rfc822; Bob@Example.COM"), ["bob@example.com"]);
        assert_eq!(all("RCPT TO:<bob@example.com>:"), ["bob@example.com"]);
        assert_eq!(
            all("'bob@example.com' and \"c.d@x.org\"."),
            ["bob@example.com", "c.d@x.org"]
        );
        assert_eq!(
            all("mailto:jane+tag@city.gov, (x_y@a-b.co.uk)"),
            ["jane+tag@city.gov", "x_y@a-b.co.uk"]
        );
        assert_eq!(
            all("<bob@example.com>... User unknown"),
            ["bob@example.com"]
        );
    }

    #[test]
    fn quoted_local_parts_are_kept_whole() {
        assert_eq!(
            all("<\"Neko..Nyaan.\"@Example.org>: host said"),
            ["\"neko..nyaan.\"@example.org"]
        );
        assert_eq!(all("rfc822; \"a b\"@x.org"), ["\"a b\"@x.org"]);
        // Not quoted local parts: an empty one, a quote that never opens, one across lines.
        assert!(all("\"\"@x.org").is_empty());
        assert_eq!(
            all("To: \"bob@x.org\" <bob@x.org>"),
            ["bob@x.org", "bob@x.org"]
        );
        assert!(all("x\"\n\"@x.org").is_empty());
        assert!(all(&format!("\"{}\"@x.org", "a".repeat(80))).is_empty());
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        assert!(all("a @ b, user@localhost, x@1.2.3.4, @@@, a@b.c").is_empty());
        assert!(all("..a@example.com.").len() == 1);
        let long = format!("{}@example.com", "a".repeat(80));
        assert!(all(&long).is_empty());
        assert!(all("ren\u{FFFD}e@example.fr and x@exa\u{FFFD}.fr").is_empty());
    }

    #[test]
    fn linear_on_hostile_input() {
        let junk = "a".repeat(100) + &"@".repeat(100_000) + &"b.".repeat(50_000);
        let t = std::time::Instant::now();
        let _ = all(&junk);
        assert!(t.elapsed().as_millis() < 500);
    }

    #[test]
    fn role_addresses() {
        assert!(is_role("MAILER-DAEMON@mx.example.com"));
        assert!(is_role("postmaster@example.com"));
        assert!(!is_role("bob@example.com"));
        assert!(is_daemon("Mailer_Daemon@mx.example.com"));
        assert!(!is_daemon("postmaster@example.com"));
    }
}
