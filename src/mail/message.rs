//! One message for one recipient: `To:` that person only, multipart/alternative text + HTML, a
//! Message-ID, a Date, the headers that keep auto-replies away, and the VERP envelope. Values are
//! set through lettre's typed headers, which encode them; names are collapsed to one line first,
//! so no contact data can add or change a header.

use std::time::SystemTime;

use lettre::address::Envelope;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{Address, Message};

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

/// Build the message for one recipient.
pub fn build(
    head: &Letterhead<'_>,
    to_name: &str,
    to_addr: &str,
    envelope_from: &str,
    message_id: &str,
    date: SystemTime,
    rendered: &Rendered,
) -> Result<Outgoing, String> {
    let to: Address = to_addr
        .parse()
        .map_err(|e| format!("recipient `{to_addr}` is not an address: {e}"))?;
    let env_from: Address = envelope_from
        .parse()
        .map_err(|e| format!("envelope sender `{envelope_from}` is not an address: {e}"))?;
    let name = one_line(to_name);
    let to_box = Mailbox::new((!name.is_empty()).then_some(name), to.clone());
    let mut b = Message::builder()
        .from(head.from.clone())
        .to(to_box)
        .subject(one_line(&rendered.subject))
        .date(date)
        .message_id(Some(message_id.to_string()))
        .header(AutoSubmitted("auto-generated".into()))
        .header(AutoResponseSuppress("OOF, AutoReply".into()))
        .header(Precedence("bulk".into()))
        .header(NoticeKey(one_line(head.campaign)));
    if let Some(rt) = head.reply_to {
        b = b.reply_to(rt.clone());
    }
    let envelope = Envelope::new(Some(env_from), vec![to]).map_err(|e| e.to_string())?;
    let msg = b
        .envelope(envelope.clone())
        .multipart(MultiPart::alternative_plain_html(
            rendered.text.clone(),
            rendered.html.clone(),
        ))
        .map_err(|e| format!("cannot build the message for {to_addr}: {e}"))?;
    Ok(Outgoing {
        envelope,
        to: to_addr.to_string(),
        message_id: message_id.to_string(),
        bytes: msg.formatted(),
    })
}

/// A new Message-ID under the sender's domain.
pub fn new_message_id(from: &Mailbox) -> String {
    use rand::Rng;
    let r: u128 = rand::thread_rng().gen();
    format!("<{:032x}.notify@{}>", r, from.email.domain())
}
