//! Self-tests for the in-process SMTP server in `tests/support/smtp_server.rs`.

mod support;

use std::io::{BufRead, Write};
use std::time::Duration;

use support::smtp_server::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Minimal raw SMTP client.
struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    /// Connect and return the client with the greeting.
    async fn connect(port: u16) -> (Client, String) {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (reader, writer) = stream.into_split();
        let mut client = Client {
            reader: BufReader::new(reader),
            writer,
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// Read one (possibly multi-line) reply; lines joined with "\n", no CRLF.
    async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(5), self.reader.read_line(&mut line))
                .await
                .expect("reply timed out")
                .expect("read reply");
            assert!(n > 0, "connection closed while waiting for a reply");
            assert!(
                line.ends_with("\r\n"),
                "reply line not CRLF-terminated: {line:?}"
            );
            let line = line.trim_end_matches("\r\n").to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// Send a command line (CRLF appended) and read the reply.
    async fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// True if the server closes the connection (EOF or reset) within 5 s
    /// without sending anything.
    async fn closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(5), self.reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }
}

fn code(reply: &str) -> &str {
    &reply[..3]
}

#[tokio::test]
async fn accepts_and_records_message_with_dot_unstuffing() {
    let server = SmtpServer::start(vec![]).await;
    assert_eq!(server.url(), format!("smtp://127.0.0.1:{}", server.port()));

    let (mut c, greeting) = Client::connect(server.port()).await;
    assert_eq!(greeting, "220 test.local ESMTP");
    let ehlo = c.cmd("EHLO client.example").await;
    assert_eq!(ehlo, "250-test.local\n250-8BITMIME\n250 SIZE 52428800");
    assert!(!ehlo.contains("PIPELINING"));

    assert_eq!(
        code(&c.cmd("MAIL FROM:<sender@example.org> BODY=8BITMIME").await),
        "250"
    );
    assert_eq!(code(&c.cmd("RCPT TO:<one@example.com>").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<two@example.com>").await), "250");
    assert_eq!(code(&c.cmd("DATA").await), "354");
    c.send_raw(b"Subject: hi\r\n\r\n..leading dot\r\n...two dots\r\nplain\r\n.\r\n")
        .await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok: queued");

    // Second message on the same connection: lower-case commands, bare LF,
    // RSET in between, NOOP, unknown command, AUTH.
    assert_eq!(code(&c.cmd("noop").await), "250");
    assert_eq!(
        code(&c.cmd("mail from: <discarded@example.org>").await),
        "250"
    );
    assert_eq!(code(&c.cmd("rset").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<x@example.com>").await), "503");
    assert_eq!(code(&c.cmd("FOO bar").await), "500");
    assert_eq!(code(&c.cmd("AUTH PLAIN AGZvbwBiYXI=").await), "502");
    assert_eq!(code(&c.cmd("STARTTLS").await), "502");
    c.send_raw(b"mail from:<>\n").await;
    assert_eq!(code(&c.reply().await), "250");
    c.send_raw(b"rcpt to:<Three@Example.com>\n").await;
    assert_eq!(code(&c.reply().await), "250");
    c.send_raw(b"data\n").await;
    assert_eq!(code(&c.reply().await), "354");
    c.send_raw(b"line\n.\n").await;
    assert_eq!(code(&c.reply().await), "250");

    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");
    assert!(c.closed_by_server().await);

    let received = server.received();
    assert_eq!(
        received,
        vec![
            Received {
                mail_from: "sender@example.org".into(),
                rcpt_to: vec!["one@example.com".into(), "two@example.com".into()],
                data: b"Subject: hi\r\n\r\n.leading dot\r\n..two dots\r\nplain\r\n".to_vec(),
            },
            Received {
                mail_from: String::new(),
                rcpt_to: vec!["Three@Example.com".into()],
                data: b"line\n".to_vec(),
            },
        ]
    );
    let parsed = received[0].parsed().expect("parse message");
    assert_eq!(parsed.subject(), Some("hi"));
    assert_eq!(server.connections(), 1);
    server.stop().await;
}

#[tokio::test]
async fn reject_rcpt_rule_answers_with_configured_reply() {
    let server = SmtpServer::start(vec![Rule::RejectRcpt {
        address: "Bad@Example.com".into(),
        reply: "550 5.1.1 <bad@example.com> User unknown".into(),
    }])
    .await;
    let (mut c, _) = Client::connect(server.port()).await;
    c.cmd("EHLO me").await;
    c.cmd("MAIL FROM:<s@example.org>").await;
    assert_eq!(
        c.cmd("RCPT TO:<bad@EXAMPLE.com>").await,
        "550 5.1.1 <bad@example.com> User unknown"
    );
    assert_eq!(code(&c.cmd("RCPT TO:<good@example.com>").await), "250");
    // Permanent: a second attempt is rejected again.
    assert_eq!(code(&c.cmd("RCPT TO:<bad@example.com>").await), "550");
    assert_eq!(code(&c.cmd("DATA").await), "354");
    c.send_raw(b"x\r\n.\r\n").await;
    assert_eq!(code(&c.reply().await), "250");
    c.cmd("QUIT").await;

    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].rcpt_to, vec!["good@example.com".to_string()]);
    server.stop().await;
}

#[tokio::test]
async fn temp_fail_rcpt_fails_twice_across_connections_then_accepts() {
    let server = SmtpServer::start(vec![Rule::TempFailRcpt {
        address: "slow@example.com".into(),
        reply: "451 4.3.0 Try again later".into(),
        times: 2,
    }])
    .await;
    let mut replies = Vec::new();
    for _ in 0..3 {
        let (mut c, _) = Client::connect(server.port()).await;
        c.cmd("EHLO me").await;
        c.cmd("MAIL FROM:<s@example.org>").await;
        replies.push(c.cmd("RCPT TO:<Slow@example.com>").await);
        c.cmd("QUIT").await;
    }
    assert_eq!(
        replies,
        vec![
            "451 4.3.0 Try again later".to_string(),
            "451 4.3.0 Try again later".to_string(),
            "250 2.1.5 Ok".to_string(),
        ]
    );
    assert_eq!(server.connections(), 3);
    assert!(server.received().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn die_after_drops_message_and_new_connections() {
    let server = SmtpServer::start(vec![Rule::DieAfter { after: 1 }]).await;
    let (mut c, _) = Client::connect(server.port()).await;
    c.cmd("EHLO me").await;
    for n in 0..2 {
        assert_eq!(code(&c.cmd("MAIL FROM:<s@example.org>").await), "250");
        assert_eq!(code(&c.cmd("RCPT TO:<r@example.com>").await), "250");
        assert_eq!(code(&c.cmd("DATA").await), "354");
        c.send_raw(format!("message {n}\r\n.\r\n").as_bytes()).await;
        if n == 0 {
            assert_eq!(code(&c.reply().await), "250");
        }
    }
    assert!(
        c.closed_by_server().await,
        "no reply expected to the second dot"
    );

    // New connections are dropped without a greeting.
    let stream = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .expect("connect");
    let (reader, writer) = stream.into_split();
    let mut c2 = Client {
        reader: BufReader::new(reader),
        writer,
    };
    assert!(c2.closed_by_server().await);

    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].data, b"message 0\r\n");
    assert_eq!(server.connections(), 2);
    server.stop().await;
}

#[tokio::test]
async fn client_disconnects_mid_session_without_harm() {
    let server = SmtpServer::start(vec![]).await;
    {
        let (mut c, _) = Client::connect(server.port()).await;
        c.cmd("EHLO me").await;
        c.cmd("MAIL FROM:<s@example.org>").await;
        c.cmd("RCPT TO:<r@example.com>").await;
        c.cmd("DATA").await;
        c.send_raw(b"partial line without end").await;
    } // dropped mid-DATA
    let (mut c, greeting) = Client::connect(server.port()).await;
    assert_eq!(code(&greeting), "220");
    assert_eq!(code(&c.cmd("NOOP").await), "250");
    assert!(server.received().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn stop_refuses_new_connections_and_closes_open_ones() {
    let server = SmtpServer::start(vec![]).await;
    let port = server.port();
    let (mut open, _) = Client::connect(port).await;
    assert_eq!(code(&open.cmd("NOOP").await), "250");

    server.stop().await;

    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    assert!(open.closed_by_server().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn lettre_delivers_over_pooled_connection() {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let server = SmtpServer::start(vec![]).await;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&server.url())
        .expect("from_url")
        .build();
    for n in 0..2 {
        let email = Message::builder()
            .from("Moped <notices@example.org>".parse().unwrap())
            .to(format!("user{n}@example.com").parse().unwrap())
            .subject(format!("notice {n}"))
            .body(".starts with a dot\nsecond line".to_string())
            .unwrap();
        let response = transport.send(email).await.expect("send");
        assert_eq!(response.code().to_string(), "250");
        // lettre hands the connection back to its pool in a spawned task;
        // give it time so the second send reuses it (NOOP, then MAIL).
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let received = server.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].mail_from, "notices@example.org");
    assert_eq!(received[1].rcpt_to, vec!["user1@example.com".to_string()]);
    let parsed = received[1].parsed().expect("parse");
    assert_eq!(parsed.subject(), Some("notice 1"));
    assert!(parsed
        .body_text(0)
        .expect("text body")
        .starts_with(".starts with a dot"));
    assert_eq!(
        server.connections(),
        1,
        "pooled connection should be reused"
    );
    drop(transport);
    server.stop().await;
}

#[test]
fn start_blocking_serves_plain_tests() {
    let server = SmtpServer::start_blocking(vec![]);
    let port = server.port();
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "220 test.local ESMTP\r\n");
    writer.write_all(b"QUIT\r\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "221 2.0.0 Bye\r\n");
    assert_eq!(server.connections(), 1);

    server.stop_blocking();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
