//! One message for one recipient: `To:` that person only, multipart/alternative text + HTML
//! (and a `text/calendar` event last when the notice carries one), a Message-ID, a Date, the
//! headers that keep auto-replies away, and the VERP envelope. Values are set through lettre's
//! typed headers, which encode them; names are collapsed to one line first, so no contact data
//! can add or change a header. Every header built from data is folded (RFC 5322 §2.2.3) to
//! lines of at most 78 characters: lettre folds at spaces and encodes non-ASCII as RFC 2047
//! encoded words; a word too long to fold (a 10,000-character name without a space)
//! is written as encoded words instead, which can be cut anywhere. No header line passes 998.

use std::time::SystemTime;

use lettre::address::Envelope;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::Address;

use crate::render::{one_line, Rendered};

/// A built message ready for a transport.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub envelope: Envelope,
    /// Recipient address.
    pub to: String,
    /// With angle brackets, as in the header.
    pub message_id: String,
    /// The whole message, CRLF line endings.
    pub bytes: Vec<u8>,
}

macro_rules! text_header {
    ($ty:ident, $name:literal) => {
        #[derive(Debug, Clone)]
        struct $ty(String);
        impl Header for $ty {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($name)
            }
            fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok(Self(s.to_string()))
            }
            fn display(&self) -> HeaderValue {
                HeaderValue::new(Self::name(), self.0.clone())
            }
        }
    };
}

text_header!(AutoSubmitted, "Auto-Submitted");
text_header!(AutoResponseSuppress, "X-Auto-Response-Suppress");
text_header!(Precedence, "Precedence");
text_header!(NoticeKey, "X-Moped-Notice");
const NOTICE_KEY: &str = "X-Moped-Notice";

/// Longest header line aimed for (RFC 5322 §2.1.1: SHOULD be no more than 78 characters)...
const MAX_HEADER_LINE: usize = 78;
/// ...and the longest allowed (MUST be no more than 998).
const MAX_HEADER_LINE_HARD: usize = 998;
/// Longest RFC 2047 encoded word (§2).
const MAX_ENCODED_WORD: usize = 75;

/// `header` as lettre folds it when every line fits in 78 characters, else `fallback()`.
fn folded<H: Header>(header: H, fallback: impl FnOnce() -> HeaderValue) -> HeaderValue {
    folded_within(MAX_HEADER_LINE, header, fallback)
}

/// `header` as lettre folds it when every line fits in `limit` characters, else `fallback()`.
fn folded_within<H: Header>(
    limit: usize,
    header: H,
    fallback: impl FnOnce() -> HeaderValue,
) -> HeaderValue {
    let value = header.display();
    let mut one = lettre::message::header::Headers::new();
    one.insert_raw(value.clone());
    if one
        .to_string()
        .split("\r\n")
        .all(|line| line.len() <= limit)
    {
        value
    } else {
        fallback()
    }
}

/// An unstructured header (`Subject`) as encoded words, one per folded line.
fn text_words(name: &'static str, value: &str) -> HeaderValue {
    let mut encoded = String::new();
    encoded_words(name.len() + 2, value, &mut encoded);
    HeaderValue::dangerous_new_pre_encoded(
        HeaderName::new_from_ascii_str(name),
        value.to_string(),
        encoded,
    )
}

/// A one-mailbox address header with the display name as encoded words, then `<address>`
/// (on a line of its own when it does not fit after the name).
fn mailbox_words(name: &'static str, mailbox: &Mailbox) -> HeaderValue {
    let mut encoded = String::new();
    if let Some(display) = mailbox.name.as_deref().filter(|n| !n.is_empty()) {
        let col = encoded_words(name.len() + 2, display, &mut encoded);
        let addr_len = AsRef::<str>::as_ref(&mailbox.email).len() + 2;
        encoded.push_str(if col + 1 + addr_len <= MAX_HEADER_LINE {
            " "
        } else {
            "\r\n "
        });
    }
    encoded.push('<');
    encoded.push_str(AsRef::<str>::as_ref(&mailbox.email));
    encoded.push('>');
    HeaderValue::dangerous_new_pre_encoded(
        HeaderName::new_from_ascii_str(name),
        mailbox.to_string(),
        encoded,
    )
}

/// Write `text` as RFC 2047 `=?utf-8?b?…?=` words (B encoding carries any character, so a
/// quote, a comma or an `=?` in a name stays text), each cut at a character boundary, short
/// enough for its line, and on a folded line of its own after the first. `col`: the column the
/// first word starts at. Returns the column after the last word.
fn encoded_words(mut col: usize, text: &str, out: &mut String) -> usize {
    use base64::Engine as _;
    const WRAP: usize = "=?utf-8?b?".len() + "?=".len();
    let mut rest = text;
    let mut first = true;
    while !rest.is_empty() {
        let mut room = MAX_HEADER_LINE
            .saturating_sub(col)
            .min(MAX_ENCODED_WORD)
            .saturating_sub(WRAP);
        if !first || room < 8 {
            out.push_str("\r\n ");
            col = 1;
            room = (MAX_HEADER_LINE - col).min(MAX_ENCODED_WORD) - WRAP;
        }
        first = false;
        let max_bytes = room / 4 * 3;
        let mut end = 0;
        for (i, c) in rest.char_indices() {
            if i + c.len_utf8() > max_bytes {
                break;
            }
            end = i + c.len_utf8();
        }
        let (chunk, tail) = rest.split_at(end.max(rest.chars().next().map_or(0, char::len_utf8)));
        let word = format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(chunk)
        );
        out.push_str(&word);
        col += word.len();
        rest = tail;
    }
    col
}

/// What the message says and who it is from; the same for every recipient of a notice.
pub struct Letterhead<'a> {
    pub from: &'a Mailbox,
    pub reply_to: Option<&'a Mailbox>,
    /// Campaign key, sent as `X-Moped-Notice` so a returned copy names its notice.
    pub campaign: &'a str,
}

/// A calendar event sent with a notice (iMIP, RFC 6047): the `VCALENDAR` text from
/// [`crate::calendar::ics`] and its METHOD, which the MIME part's `method=` must match.
#[derive(Debug, Clone)]
pub struct CalendarPart {
    pub method: crate::calendar::Method,
    pub text: String,
}

/// Build the message for one recipient. The headers go through lettre's typed headers (which
/// encode non-ASCII names and subjects and cannot be split by a line break in a value); the two
/// parts are encoded here in one pass each: 7bit when the text is short-lined ASCII, otherwise
/// quoted-printable. The boundary contains `=_`, which quoted-printable output never does.
pub fn build(
    head: &Letterhead<'_>,
    to_name: &str,
    to_addr: &str,
    envelope_from: &str,
    message_id: &str,
    date: SystemTime,
    rendered: &Rendered,
) -> Result<Outgoing, String> {
    build_with(
        head,
        to_name,
        to_addr,
        envelope_from,
        message_id,
        date,
        rendered,
        None,
    )
}

/// [`build`], with a calendar event as a third alternative after the text and the HTML when
/// `calendar` is given: `text/calendar; charset=utf-8; method=…`, 7bit when the text is
/// short-lined ASCII (as [`crate::calendar::ics`] writes it), otherwise base64 in lines of 76.
/// This is how Outlook itself sends an invitation: clients show the HTML and the event, and the
/// calendar text is never shown as the body. Without a calendar the message is what `build`
/// has always written.
#[allow(clippy::too_many_arguments)] // `build`'s arguments and the one optional part.
pub fn build_with(
    head: &Letterhead<'_>,
    to_name: &str,
    to_addr: &str,
    envelope_from: &str,
    message_id: &str,
    date: SystemTime,
    rendered: &Rendered,
    calendar: Option<&CalendarPart>,
) -> Result<Outgoing, String> {
    use lettre::message::header::{self, Headers};
    use lettre::message::Mailboxes;

    let to: Address = to_addr
        .parse()
        .map_err(|e| format!("recipient `{to_addr}` is not an address: {e}"))?;
    let env_from: Address = envelope_from
        .parse()
        .map_err(|e| format!("envelope sender `{envelope_from}` is not an address: {e}"))?;
    let name = one_line(to_name);
    let to_box = Mailbox::new((!name.is_empty()).then_some(name), to.clone());
    let mut h = Headers::new();
    h.insert_raw(folded(
        header::From::from(Mailboxes::from(head.from.clone())),
        || mailbox_words("From", head.from),
    ));
    h.insert_raw(folded(
        header::To::from(Mailboxes::from(to_box.clone())),
        || mailbox_words("To", &to_box),
    ));
    let subject = one_line(&rendered.subject);
    h.insert_raw(folded(header::Subject::from(subject.clone()), || {
        text_words("Subject", &subject)
    }));
    h.set(header::Date::new(date));
    h.set(header::MessageId::from(message_id.to_string()));
    h.set(AutoSubmitted("auto-generated".into()));
    h.set(AutoResponseSuppress("OOF, AutoReply".into()));
    h.set(Precedence("bulk".into()));
    let campaign = one_line(head.campaign);
    // A key read by programs (a returned copy names its notice): kept as plain ASCII, folded
    // only at spaces, so a long key without one may pass 78 characters; encoded words only past
    // 998.
    h.insert_raw(folded_within(
        MAX_HEADER_LINE_HARD,
        NoticeKey(campaign.clone()),
        || text_words(NOTICE_KEY, &campaign),
    ));
    if let Some(rt) = head.reply_to {
        h.insert_raw(folded(
            header::ReplyTo::from(Mailboxes::from(rt.clone())),
            || mailbox_words("Reply-To", rt),
        ));
    }
    h.set(header::MIME_VERSION_1_0);
    let head_text = h.to_string();
    if let Some(line) = head_text
        .split("\r\n")
        .find(|l| l.len() > MAX_HEADER_LINE_HARD)
    {
        // Only an address can still do this (a name or a subject is cut into encoded words).
        let name = line.split(':').next().unwrap_or_default();
        return Err(format!(
            "the {name} header would have a line of {} characters (the limit is 998)",
            line.len()
        ));
    }
    let envelope = Envelope::new(Some(env_from), vec![to]).map_err(|e| e.to_string())?;

    let boundary = format!("=_notify_{:016x}", rand::random::<u64>());
    let calendar_len = calendar.map_or(0, |c| c.text.len() * 4 / 3 + 256);
    let mut bytes = Vec::with_capacity(
        1024 + (rendered.text.len() + rendered.html.len()) * 11 / 10 + calendar_len,
    );
    bytes.extend_from_slice(head_text.as_bytes());
    bytes.extend_from_slice(
        format!("Content-Type: multipart/alternative;\r\n boundary=\"{boundary}\"\r\n\r\n")
            .as_bytes(),
    );
    for (kind, content) in [("plain", &rendered.text), ("html", &rendered.html)] {
        bytes.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        bytes.extend_from_slice(format!("Content-Type: text/{kind}; charset=utf-8\r\n").as_bytes());
        if is_7bit(content) {
            bytes.extend_from_slice(b"Content-Transfer-Encoding: 7bit\r\n\r\n");
            crlf_lines(content, &mut bytes);
        } else {
            bytes.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n");
            quoted_printable(content, &mut bytes);
        }
        bytes.extend_from_slice(b"\r\n");
    }
    if let Some(cal) = calendar {
        bytes.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        bytes.extend_from_slice(
            format!(
                "Content-Type: text/calendar; charset=utf-8; method={}\r\n",
                cal.method.as_str()
            )
            .as_bytes(),
        );
        if is_7bit(&cal.text) {
            bytes.extend_from_slice(b"Content-Transfer-Encoding: 7bit\r\n\r\n");
            crlf_lines(&cal.text, &mut bytes);
        } else {
            bytes.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
            base64_lines(&cal.text, &mut bytes);
        }
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok(Outgoing {
        envelope,
        to: to_addr.to_string(),
        message_id: message_id.to_string(),
        bytes,
    })
}

/// Longest line sent as is (RFC 5322 recommends 78).
const MAX_7BIT_LINE: usize = 78;

/// ASCII without NUL or bare CR, no line longer than 78: can go as it is.
fn is_7bit(s: &str) -> bool {
    s.is_ascii()
        && s.split('\n').all(|line| {
            let line = line.strip_suffix('\r').unwrap_or(line);
            line.len() <= MAX_7BIT_LINE && !line.bytes().any(|b| b == 0 || b == b'\r')
        })
}

/// `s` with every line ending made CRLF.
fn crlf_lines(s: &str, out: &mut Vec<u8>) {
    let mut lines = s.split('\n').peekable();
    while let Some(line) = lines.next() {
        out.extend_from_slice(line.strip_suffix('\r').unwrap_or(line).as_bytes());
        if lines.peek().is_some() {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Base64 (RFC 2045 6.8) of `s` with its line breaks made CRLF (a text type's canonical form),
/// in lines of 76 characters joined by CRLF, with no CRLF after the last.
fn base64_lines(s: &str, out: &mut Vec<u8>) {
    use base64::Engine as _;
    let mut canonical = Vec::with_capacity(s.len() + s.len() / 32);
    crlf_lines(s, &mut canonical);
    let encoded = base64::engine::general_purpose::STANDARD.encode(&canonical);
    for (i, line) in encoded.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(line);
    }
}

/// Quoted-printable (RFC 2045 6.7): line breaks become CRLF, `=`, controls, non-ASCII bytes and
/// whitespace at the end of a line are encoded, and lines are broken with a soft `=` so that
/// none is longer than 76 characters.
pub fn quoted_printable(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut lines = s.split('\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix('\r').unwrap_or(line).as_bytes();
        let mut col = 0;
        let plain = |b: u8| (33..=126).contains(&b) && b != b'=';
        let mut i = 0;
        while i < line.len() {
            // A run of characters that go as they are, up to the room left before a soft break;
            // spaces and tabs too, except at the end of the line.
            if col < 75 {
                let mut run = line[i..]
                    .iter()
                    .take(75 - col)
                    .take_while(|&&b| plain(b) || b == b' ' || b == b'\t')
                    .count();
                if i + run == line.len() {
                    while run > 0 && matches!(line[i + run - 1], b' ' | b'\t') {
                        run -= 1;
                    }
                }
                if run > 0 {
                    out.extend_from_slice(&line[i..i + run]);
                    col += run;
                    i += run;
                    continue;
                }
            }
            let b = line[i];
            let last = i + 1 == line.len();
            let literal = match b {
                b' ' | b'\t' => !last,
                b'=' => false,
                33..=126 => true,
                _ => false,
            };
            let width = if literal { 1 } else { 3 };
            // Room for the soft break's `=` unless this is the line's last character.
            let limit = if last { 76 } else { 75 };
            if col + width > limit {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
            col += width;
            i += 1;
        }
        if lines.peek().is_some() {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// A new Message-ID under the sender's domain.
pub fn new_message_id(from: &Mailbox) -> String {
    use rand::Rng;
    let r: u128 = rand::thread_rng().gen();
    format!("<{:032x}.notify@{}>", r, from.email.domain())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_qp(encoded: &[u8]) -> String {
        let text = String::from_utf8(encoded.to_vec()).unwrap();
        let joined = text.replace("=\r\n", "");
        let mut out = Vec::new();
        let b = joined.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'=' {
                out.push(u8::from_str_radix(&joined[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap().replace("\r\n", "\n")
    }

    #[test]
    fn quoted_printable_round_trips_and_keeps_lines_short() {
        let long = "x".repeat(200);
        let cases = [
            "Hi Zoë,\nMoped v3.12.0 “Goliad” is live. a=b\n".to_string(),
            format!("{long}\n{}é{}", "y".repeat(74), "z".repeat(80)),
            "trailing space \nand tab\t\n\nend ".to_string(),
            "=".repeat(100),
            "windows\r\nlines\r\n".to_string(),
        ];
        for case in cases {
            let mut out = Vec::new();
            quoted_printable(&case, &mut out);
            let text = String::from_utf8(out.clone()).unwrap();
            for line in text.split("\r\n") {
                assert!(line.len() <= 76, "{line:?} in {text:?}");
                assert!(!line.ends_with(' ') && !line.ends_with('\t'), "{line:?}");
                assert!(line.is_ascii());
            }
            assert!(!text.contains("=_"), "{text}");
            assert_eq!(decode_qp(&out), case.replace("\r\n", "\n"));
        }
    }

    #[test]
    fn quoted_printable_round_trips_generated_text() {
        let alphabet: Vec<char> = "ab =\t.\n\r-é“”Zx0~!".chars().collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..300 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 33) as usize % 400;
            let text: String = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    alphabet[(seed >> 33) as usize % alphabet.len()]
                })
                .collect();
            let mut out = Vec::new();
            quoted_printable(&text, &mut out);
            let encoded = String::from_utf8(out.clone()).unwrap();
            for line in encoded.split("\r\n") {
                assert!(line.len() <= 76, "{line:?}");
                assert!(!line.ends_with(' ') && !line.ends_with('\t'), "{line:?}");
            }
            // Line breaks come back as LF; a CR that ends no line is kept as =0D.
            let expected: String = text
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .collect::<Vec<_>>()
                .join("\n");
            assert_eq!(decode_qp(&out), expected, "{text:?}");
        }
    }

    #[test]
    fn short_ascii_goes_as_it_is_and_the_rest_is_encoded() {
        assert!(is_7bit("Hi Ann,\nshort lines only\n"));
        assert!(!is_7bit("Hi Zoë"));
        assert!(!is_7bit(&"x".repeat(79)));
        assert!(!is_7bit("bare\rcarriage return"));
        let mut out = Vec::new();
        crlf_lines("a\nb\r\nc", &mut out);
        assert_eq!(out, b"a\r\nb\r\nc");
    }

    #[test]
    fn a_message_parses_back_to_its_parts() {
        let from: Mailbox = "Moped Team <moped@austintexas.gov>".parse().unwrap();
        let head = Letterhead {
            from: &from,
            reply_to: Some(&from),
            campaign: "release-notes/v3.12.0",
        };
        let rendered = Rendered {
            subject: "Moped v3.12.0 “Goliad”: release notes".into(),
            text: "Hi Zoë,\n\n.a line that starts with a dot\n".into(),
            html: format!("<p style=\"color: red;\">Hi Zoë</p>{}", "<br>".repeat(40)),
        };
        let out = build(
            &head,
            "Zoë Ng\r\nBcc: x@evil.example",
            "zoe.ng@austintexas.gov",
            "moped-bounces+t@austintexas.gov",
            "<id.notify@austintexas.gov>",
            SystemTime::now(),
            &rendered,
        )
        .unwrap();
        let msg = mail_parser::MessageParser::default()
            .parse(&out.bytes)
            .unwrap();
        assert_eq!(msg.subject(), Some("Moped v3.12.0 “Goliad”: release notes"));
        assert_eq!(msg.message_id(), Some("id.notify@austintexas.gov"));
        let to = msg.to().unwrap().first().unwrap();
        assert_eq!(to.address(), Some("zoe.ng@austintexas.gov"));
        assert_eq!(to.name(), Some("Zoë Ng Bcc: x@evil.example"));
        assert!(msg.bcc().is_none());
        assert_eq!(
            msg.body_text(0).unwrap(),
            rendered.text.replace('\n', "\r\n")
        );
        assert_eq!(msg.body_html(0).unwrap(), rendered.html);
        let raw = |name: &'static str| msg.header_raw(name).map(str::trim);
        assert_eq!(raw("Auto-Submitted"), Some("auto-generated"));
        assert_eq!(raw("X-Moped-Notice"), Some("release-notes/v3.12.0"));
        assert_eq!(raw("MIME-Version"), Some("1.0"));
    }

    fn header_block(bytes: &[u8]) -> String {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        text[..text.find("\r\n\r\n").unwrap()].to_string()
    }

    #[test]
    fn long_headers_are_folded_and_read_back_the_same() {
        let from: Mailbox = "Moped Team <moped@austintexas.gov>".parse().unwrap();
        let long_campaign = format!("release-notes/{}", "v".repeat(200));
        let head = Letterhead {
            from: &from,
            reply_to: Some(&from),
            campaign: &long_campaign,
        };
        let names = [
            "x".repeat(10_000),
            "Ann ".repeat(2_500),
            "é".repeat(5_000),
            "Ann \"Q\" O'Brien, Jr. =?utf-8?q?x?= <b@c> (d); ".repeat(250),
            format!("{}中{}", "a".repeat(77), "😀".repeat(30)),
        ];
        let subjects = [
            "s".repeat(300),
            "Moped v3.12.0 Goliad: release notes ".repeat(9),
            "ü".repeat(300),
            format!("{} é", "x".repeat(100)),
            format!("Moped v3.12.0 “{}”: release notes", "Goliad".repeat(50)),
        ];
        for (name, subject) in names.iter().zip(&subjects) {
            let rendered = Rendered {
                subject: subject.clone(),
                text: "x\n".into(),
                html: "<p>x</p>".into(),
            };
            let out = build(
                &head,
                name,
                "ann.obrien@austintexas.gov",
                "moped-bounces+t@austintexas.gov",
                "<id.notify@austintexas.gov>",
                SystemTime::now(),
                &rendered,
            )
            .unwrap();
            let headers = header_block(&out.bytes);
            for line in headers.split("\r\n") {
                let limit = if line.starts_with("X-Moped-Notice:") {
                    998
                } else {
                    78
                };
                assert!(line.len() <= limit, "{} chars: {line}", line.len());
                assert!(line.is_ascii(), "{line}");
            }
            assert!(out.bytes.split(|&b| b == b'\n').all(|l| l.len() <= 998));
            let msg = mail_parser::MessageParser::default()
                .parse(&out.bytes)
                .unwrap();
            assert_eq!(msg.subject(), Some(one_line(subject).as_str()));
            let to = msg.to().unwrap().first().unwrap();
            assert_eq!(to.address(), Some("ann.obrien@austintexas.gov"));
            assert_eq!(to.name(), Some(one_line(name).as_str()));
            assert_eq!(msg.to().unwrap().iter().count(), 1);
            assert!(msg.bcc().is_none() && msg.cc().is_none());
            let notice = msg.header_raw("X-Moped-Notice").map(str::trim);
            assert_eq!(notice, Some(long_campaign.as_str()));
            assert_eq!(msg.body_text(0).unwrap(), "x\r\n");
        }
    }

    #[test]
    fn ordinary_headers_are_what_lettre_writes() {
        let from: Mailbox = "Moped Team <moped@austintexas.gov>".parse().unwrap();
        let head = Letterhead {
            from: &from,
            reply_to: None,
            campaign: "release-notes/v3.12.0",
        };
        let rendered = Rendered {
            subject: "Moped v3.12.0 Goliad: release notes".into(),
            text: "x\n".into(),
            html: "<p>x</p>".into(),
        };
        let out = build(
            &head,
            "Zoë O'Neil",
            "zoe@austintexas.gov",
            "b@austintexas.gov",
            "<i@austintexas.gov>",
            SystemTime::now(),
            &rendered,
        )
        .unwrap();
        let headers = header_block(&out.bytes);
        assert!(
            headers.contains("\r\nTo: =?utf-8?b?Wm/DqyBPJ05laWw=?= <zoe@austintexas.gov>\r\n"),
            "{headers}"
        );
        assert!(
            headers.contains("\r\nSubject: Moped v3.12.0 Goliad: release notes\r\n"),
            "{headers}"
        );
        assert!(
            headers.starts_with("From: \"Moped Team\" <moped@austintexas.gov>\r\n"),
            "{headers}"
        );
    }

    /// The message with its random boundary replaced by a fixed one.
    fn without_boundary(bytes: &[u8]) -> String {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let start = text.find("boundary=\"").unwrap() + "boundary=\"".len();
        let boundary = &text[start..start + text[start..].find('"').unwrap()];
        assert!(boundary.starts_with("=_notify_"), "{boundary}");
        text.replace(boundary, "BOUNDARY")
    }

    fn calendar_message(calendar: Option<&CalendarPart>, name: &str) -> Outgoing {
        let from: Mailbox = "Moped Team <moped@austintexas.gov>".parse().unwrap();
        let head = Letterhead {
            from: &from,
            reply_to: Some(&from),
            campaign: "maintenance-scheduled/v3.12.0",
        };
        let rendered = Rendered {
            subject: "Moped maintenance on Dec 3, 5–7 pm".into(),
            text: "Hi Zoë,\n\nMoped will be down.\n".into(),
            html: "<p>Hi Zoë,</p><p>Moped will be down.</p>".into(),
        };
        build_with(
            &head,
            name,
            "zoe.ng@austintexas.gov",
            "moped-bounces+t@austintexas.gov",
            "<id.notify@austintexas.gov>",
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_000_000),
            &rendered,
            calendar,
        )
        .unwrap()
    }

    fn window(method: crate::calendar::Method, attendee_name: &str) -> CalendarPart {
        use chrono::TimeZone;
        let at = |h| chrono::Utc.with_ymd_and_hms(2026, 12, 3, h, 0, 0).unwrap();
        let text = crate::calendar::ics(&crate::calendar::Invitation {
            method,
            uid: "moped-maintenance-v3-12-0@austintexas.gov",
            sequence: 1,
            stamp: at(12),
            start: at(23),
            end: at(23) + chrono::Duration::hours(2),
            summary: "Moped maintenance",
            description: "Moped will be down.",
            url: "https://moped.austinmobility.io",
            organizer_name: "Moped Team",
            organizer_email: "moped@austintexas.gov",
            attendee_name,
            attendee_email: "zoe.ng@austintexas.gov",
        });
        CalendarPart { method, text }
    }

    #[test]
    fn a_calendar_goes_last_among_the_alternatives() {
        use crate::calendar::Method;
        use mail_parser::MimeHeaders;
        // An ASCII calendar goes as 7bit; a name with `ë` makes it base64.
        for (method, name, encoding) in [
            (Method::Request, "Zoe Ng", "7bit"),
            (Method::Cancel, "Zoë Ng", "base64"),
        ] {
            let cal = window(method, name);
            let out = calendar_message(Some(&cal), name);
            let text = String::from_utf8(out.bytes.clone()).unwrap();
            assert!(
                text.split("\r\n")
                    .all(|l| l.len() <= 78 && !l.contains('\n')),
                "{text}"
            );
            assert!(
                text.contains(&format!(
                    "\r\nContent-Type: text/calendar; charset=utf-8; method={}\r\n\
                     Content-Transfer-Encoding: {encoding}\r\n\r\n",
                    method.as_str()
                )),
                "{text}"
            );
            let msg = mail_parser::MessageParser::default()
                .parse(&out.bytes)
                .unwrap();
            let root = msg.root_part();
            let ct = root.content_type().unwrap();
            assert_eq!(
                (ct.ctype(), ct.subtype()),
                ("multipart", Some("alternative"))
            );
            let children = root.sub_parts().unwrap();
            assert_eq!(children.len(), 3);
            let types: Vec<(String, Option<String>)> = children
                .iter()
                .map(|&i| {
                    let ct = msg.parts[i as usize].content_type().unwrap();
                    (ct.ctype().to_string(), ct.subtype().map(str::to_string))
                })
                .collect();
            assert_eq!(
                types,
                [
                    ("text".to_string(), Some("plain".to_string())),
                    ("text".to_string(), Some("html".to_string())),
                    ("text".to_string(), Some("calendar".to_string())),
                ]
            );
            let part = &msg.parts[children[2] as usize];
            let ct = part.content_type().unwrap();
            assert_eq!(ct.attribute("method"), Some(method.as_str()));
            assert_eq!(ct.attribute("charset"), Some("utf-8"));
            assert_eq!(part.text_contents(), Some(cal.text.as_str()));
            assert!(cal
                .text
                .contains(&format!("\r\nMETHOD:{}\r\n", method.as_str())));
            // The text and HTML are what a client shows, as before.
            assert_eq!(
                msg.body_text(0).unwrap(),
                "Hi Zoë,\r\n\r\nMoped will be down.\r\n"
            );
            assert_eq!(
                msg.body_html(0).unwrap(),
                "<p>Hi Zoë,</p><p>Moped will be down.</p>"
            );
        }
    }

    #[test]
    fn base64_lines_are_76_and_decode_to_crlf_text() {
        use base64::Engine as _;
        let text = format!("é{}\nline two\r\nend\r\n", "x".repeat(300));
        let mut out = Vec::new();
        base64_lines(&text, &mut out);
        let encoded = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = encoded.split("\r\n").collect();
        assert!(lines.iter().all(|l| l.len() <= 76 && !l.is_empty()));
        assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 76));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(lines.concat())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            text.replace("\r\n", "\n").replace('\n', "\r\n")
        );
    }

    #[test]
    fn without_a_calendar_the_message_is_what_build_writes() {
        let from: Mailbox = "Moped Team <moped@austintexas.gov>".parse().unwrap();
        let head = Letterhead {
            from: &from,
            reply_to: Some(&from),
            campaign: "release-notes/v3.12.0",
        };
        let rendered = Rendered {
            subject: "Moped v3.12.0 “Goliad”: release notes".into(),
            text: format!("Hi Zoë,\n{}\n", "long ".repeat(40)),
            html: "<p>Hi Zoë</p>".into(),
        };
        let date = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_000_000);
        let args = (
            "Zoë Ng",
            "zoe.ng@austintexas.gov",
            "moped-bounces+t@austintexas.gov",
            "<id.notify@austintexas.gov>",
        );
        let old = build(&head, args.0, args.1, args.2, args.3, date, &rendered).unwrap();
        let new = build_with(&head, args.0, args.1, args.2, args.3, date, &rendered, None).unwrap();
        assert_eq!(without_boundary(&old.bytes), without_boundary(&new.bytes));
        assert_eq!(old.bytes.len(), new.bytes.len());
        assert_eq!(old.envelope, new.envelope);
        assert_eq!((old.to, old.message_id), (new.to, new.message_id));
        assert!(!without_boundary(&new.bytes).contains("text/calendar"));
        // With a calendar, everything before the third part is the same too.
        let cal = window(crate::calendar::Method::Request, "Zoe Ng");
        let plain = without_boundary(&calendar_message(None, "Zoe Ng").bytes);
        let with = without_boundary(&calendar_message(Some(&cal), "Zoe Ng").bytes);
        let closing = "--BOUNDARY--\r\n";
        assert!(plain.ends_with(closing));
        assert!(with.starts_with(&plain[..plain.len() - closing.len()]));
    }

    #[test]
    fn a_key_too_long_for_any_line_is_encoded() {
        let from: Mailbox = "Moped Team <moped@austintexas.gov>".parse().unwrap();
        let campaign = "k".repeat(2_000);
        let head = Letterhead {
            from: &from,
            reply_to: None,
            campaign: &campaign,
        };
        let rendered = Rendered {
            subject: "s".into(),
            text: "x\n".into(),
            html: "<p>x</p>".into(),
        };
        let out = build(
            &head,
            "",
            "a@b.example",
            "b@b.example",
            "<i@b>",
            SystemTime::now(),
            &rendered,
        )
        .unwrap();
        let headers = header_block(&out.bytes);
        assert!(headers.split("\r\n").all(|l| l.len() <= 78), "{headers}");
        assert!(headers.contains("\r\nTo: a@b.example\r\n"), "{headers}");
    }
}
