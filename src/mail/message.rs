//! One message for one recipient: `To:` that person only, multipart/alternative text + HTML, a
//! Message-ID, a Date, the headers that keep auto-replies away, and the VERP envelope. Values are
//! set through lettre's typed headers, which encode them; names are collapsed to one line first,
//! so no contact data can add or change a header.

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

/// What the message says and who it is from; the same for every recipient of a notice.
pub struct Letterhead<'a> {
    pub from: &'a Mailbox,
    pub reply_to: Option<&'a Mailbox>,
    /// Campaign key, sent as `X-Moped-Notice` so a returned copy names its notice.
    pub campaign: &'a str,
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
    h.set(header::From::from(Mailboxes::from(head.from.clone())));
    h.set(header::To::from(Mailboxes::from(to_box)));
    h.set(header::Subject::from(one_line(&rendered.subject)));
    h.set(header::Date::new(date));
    h.set(header::MessageId::from(message_id.to_string()));
    h.set(AutoSubmitted("auto-generated".into()));
    h.set(AutoResponseSuppress("OOF, AutoReply".into()));
    h.set(Precedence("bulk".into()));
    h.set(NoticeKey(one_line(head.campaign)));
    if let Some(rt) = head.reply_to {
        h.set(header::ReplyTo::from(Mailboxes::from(rt.clone())));
    }
    h.set(header::MIME_VERSION_1_0);
    let envelope = Envelope::new(Some(env_from), vec![to]).map_err(|e| e.to_string())?;

    let boundary = format!("=_notify_{:016x}", rand::random::<u64>());
    let mut bytes =
        Vec::with_capacity(1024 + (rendered.text.len() + rendered.html.len()) * 11 / 10);
    bytes.extend_from_slice(h.to_string().as_bytes());
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
}
