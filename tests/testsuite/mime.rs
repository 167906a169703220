//! Checks on a delivered message, with a real MIME parser.

use mail_parser::{MessageParser, MimeHeaders};

/// What a test learns from one message.
#[derive(Debug)]
pub struct Parsed {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub message_id: String,
    pub header_names: Vec<String>,
}

/// Parse and check the shape every notice must have: one recipient, multipart/alternative with a
/// text and an HTML part, CSS inlined, no template syntax left.
#[track_caller]
pub fn check(raw: &[u8]) -> Parsed {
    let msg = MessageParser::default()
        .parse(raw)
        .expect("message parses as MIME");
    let to: Vec<String> = match msg.to() {
        Some(addr) => addr
            .iter()
            .filter_map(|a| a.address().map(|s| s.to_string()))
            .collect(),
        None => vec![],
    };
    assert_eq!(to.len(), 1, "exactly one To recipient: {to:?}");
    assert!(msg.cc().is_none() && msg.bcc().is_none(), "no Cc/Bcc");
    let ct = msg.content_type().expect("content type");
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("alternative"));
    assert_eq!(msg.text_body.len(), 1, "one text part");
    assert_eq!(msg.html_body.len(), 1, "one html part");
    let text = msg.body_text(0).expect("text part").into_owned();
    let html = msg.body_html(0).expect("html part").into_owned();
    let text_part = msg.part(msg.text_body[0]).unwrap();
    assert_eq!(text_part.content_type().unwrap().subtype(), Some("plain"));
    for body in [&text, &html] {
        assert!(
            !body.contains("{{") && !body.contains("{%") && !body.contains("}}"),
            "template syntax left:\n{body}"
        );
    }
    assert!(
        !html.contains("<style"),
        "CSS must be inlined, not in <style>"
    );
    assert!(html.contains("style=\""), "inlined styles present");
    let header = |name: &str| {
        msg.header_raw(name)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(header("Auto-Submitted"), "auto-generated");
    assert_eq!(header("X-Auto-Response-Suppress"), "OOF, AutoReply");
    assert!(msg.date().is_some(), "Date header");
    let message_id = msg.message_id().expect("Message-ID").to_string();
    let header_names = msg.headers().iter().map(|h| h.name().to_string()).collect();
    Parsed {
        to,
        subject: msg.subject().unwrap_or_default().to_string(),
        text,
        html,
        message_id,
        header_names,
    }
}
