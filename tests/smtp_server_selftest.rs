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
                smtputf8: false,
            },
            Received {
                mail_from: String::new(),
                rcpt_to: vec!["Three@Example.com".into()],
                data: b"line\n".to_vec(),
                smtputf8: false,
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
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.port())
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

fn lettre_transport(port: u16) -> lettre::AsyncSmtpTransport<lettre::Tokio1Executor> {
    lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .build()
}

async fn lettre_send(
    transport: &lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    to: &str,
    body: &str,
) -> Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error> {
    use lettre::AsyncTransport;
    let envelope = lettre::address::Envelope::new(
        Some("sender@example.org".parse().unwrap()),
        vec![to.parse().unwrap()],
    )
    .unwrap();
    // lettre terminates the data with "\r\n.\r\n" itself.
    let email = format!("Subject: test\r\n\r\n{body}");
    transport.send_raw(&envelope, email.as_bytes()).await
}

#[tokio::test]
async fn temp_fail_command_answers_mail_rcpt_data_with_configured_replies() {
    let server = SmtpServer::start(vec![
        Rule::TempFailCommand {
            command: "MAIL".into(),
            reply: "451 4.3.0 Mail later".into(),
            times: 1,
        },
        Rule::TempFailCommand {
            command: "rcpt".into(),
            reply: "452 4.3.1 Insufficient system storage".into(),
            times: 1,
        },
        Rule::TempFailCommand {
            command: "DATA".into(),
            reply: "451 4.3.0 Data later".into(),
            times: 1,
        },
        // Would reject the recipient, but the RCPT rule answers first.
        Rule::TempFailRcpt {
            address: "a@example.com".into(),
            reply: "450 4.2.0 Greylisted".into(),
            times: 1,
        },
    ])
    .await;
    let (mut c, _) = Client::connect(server.port()).await;
    c.cmd("EHLO me").await;
    // Protocol errors are answered normally and do not use up the budget.
    assert_eq!(code(&c.cmd("MAIL FROM").await), "501");
    assert_eq!(code(&c.cmd("DATA").await), "503");
    assert_eq!(
        c.cmd("MAIL FROM:<s@example.org>").await,
        "451 4.3.0 Mail later"
    );
    // No transaction was started by the failed MAIL.
    assert_eq!(code(&c.cmd("RCPT TO:<a@example.com>").await), "503");
    assert_eq!(c.cmd("MAIL FROM:<s@example.org>").await, "250 2.1.0 Ok");
    assert_eq!(
        c.cmd("RCPT TO:<a@example.com>").await,
        "452 4.3.1 Insufficient system storage"
    );
    assert_eq!(code(&c.cmd("DATA").await), "554", "recipient was not added");
    assert_eq!(
        c.cmd("RCPT TO:<a@example.com>").await,
        "450 4.2.0 Greylisted"
    );
    assert_eq!(c.cmd("RCPT TO:<a@example.com>").await, "250 2.1.5 Ok");
    assert_eq!(c.cmd("DATA").await, "451 4.3.0 Data later");
    // The failed DATA reset the transaction.
    assert_eq!(code(&c.cmd("DATA").await), "503");
    assert_eq!(code(&c.cmd("MAIL FROM:<s2@example.org>").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<b@example.com>").await), "250");
    assert_eq!(c.cmd("DATA").await, "354 End data with <CR><LF>.<CR><LF>");
    c.send_raw(b"hello\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok: queued");
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");

    assert_eq!(
        server.received(),
        vec![Received {
            mail_from: "s2@example.org".into(),
            rcpt_to: vec!["b@example.com".into()],
            data: b"hello\r\n".to_vec(),
            smtputf8: false,
        }]
    );
    assert_eq!(server.accepted_count(), 1);
    server.stop().await;
}

#[tokio::test]
async fn temp_fail_command_421_closes_connection() {
    let server = SmtpServer::start(vec![
        Rule::TempFailCommand {
            command: "MAIL".into(),
            reply: "421 4.3.2 Try again in 1 seconds".into(),
            times: 1,
        },
        Rule::TempFailCommand {
            command: "DOT".into(),
            reply: "421 4.3.2 Shutting down".into(),
            times: 1,
        },
    ])
    .await;
    let (mut c, _) = Client::connect(server.port()).await;
    c.cmd("EHLO me").await;
    assert_eq!(
        c.cmd("MAIL FROM:<s@example.org>").await,
        "421 4.3.2 Try again in 1 seconds"
    );
    assert!(c.closed_by_server().await, "421 must close the connection");

    let (mut c, _) = Client::connect(server.port()).await;
    c.cmd("EHLO me").await;
    assert_eq!(code(&c.cmd("MAIL FROM:<s@example.org>").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<r@example.com>").await), "250");
    assert_eq!(code(&c.cmd("DATA").await), "354");
    c.send_raw(b"lost\r\n.\r\n").await;
    assert_eq!(c.reply().await, "421 4.3.2 Shutting down");
    assert!(c.closed_by_server().await, "421 must close the connection");
    assert_eq!(server.accepted_count(), 0);

    // Budgets used up: the next message goes through.
    let (mut c, _) = Client::connect(server.port()).await;
    c.cmd("EHLO me").await;
    assert_eq!(code(&c.cmd("MAIL FROM:<s@example.org>").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<r@example.com>").await), "250");
    assert_eq!(code(&c.cmd("DATA").await), "354");
    c.send_raw(b"kept\r\n.\r\n").await;
    assert_eq!(code(&c.reply().await), "250");
    assert_eq!(server.accepted_count(), 1);
    assert_eq!(server.received()[0].data, b"kept\r\n");
    assert_eq!(server.connections(), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn temp_fail_dot_with_lettre_is_transient_and_not_recorded() {
    let server = SmtpServer::start(vec![Rule::TempFailCommand {
        command: "DOT".into(),
        reply: "451 4.3.0 Queue busy".into(),
        times: 2,
    }])
    .await;
    let transport = lettre_transport(server.port());
    for n in 0..2 {
        let err = lettre_send(&transport, "r@example.com", &format!("try {n}"))
            .await
            .expect_err("DOT temp-failed");
        assert!(err.is_transient(), "{err}");
        assert_eq!(err.status().map(|c| c.to_string()), Some("451".into()));
        assert!(err.to_string().contains("4.3.0 Queue busy"), "{err}");
        assert_eq!(server.accepted_count(), 0);
    }
    let response = lettre_send(&transport, "r@example.com", "try 2")
        .await
        .expect("third attempt accepted");
    assert_eq!(response.code().to_string(), "250");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].data_str(), "Subject: test\r\n\r\ntry 2\r\n");
    assert_eq!(server.accepted_count(), 1);
    drop(transport);
    server.stop().await;
}

#[tokio::test]
async fn drop_after_command_closes_without_answer_for_each_command() {
    let server = SmtpServer::start(vec![
        Rule::DropAfterCommand {
            command: "MAIL".into(),
            times: 1,
        },
        Rule::DropAfterCommand {
            command: "RCPT".into(),
            times: 1,
        },
        Rule::DropAfterCommand {
            command: "DATA".into(),
            times: 1,
        },
        Rule::DropAfterCommand {
            command: "DOT".into(),
            times: 1,
        },
    ])
    .await;
    let port = server.port();

    let (mut c, _) = Client::connect(port).await;
    c.cmd("EHLO me").await;
    c.send_raw(b"MAIL FROM:<s@example.org>\r\n").await;
    assert!(c.closed_by_server().await, "MAIL dropped");

    let (mut c, _) = Client::connect(port).await;
    c.cmd("EHLO me").await;
    assert_eq!(code(&c.cmd("MAIL FROM:<s@example.org>").await), "250");
    c.send_raw(b"RCPT TO:<r@example.com>\r\n").await;
    assert!(c.closed_by_server().await, "RCPT dropped");

    let (mut c, _) = Client::connect(port).await;
    c.cmd("EHLO me").await;
    assert_eq!(code(&c.cmd("MAIL FROM:<s@example.org>").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<r@example.com>").await), "250");
    c.send_raw(b"DATA\r\n").await;
    assert!(c.closed_by_server().await, "DATA dropped");

    let (mut c, _) = Client::connect(port).await;
    c.cmd("EHLO me").await;
    assert_eq!(code(&c.cmd("MAIL FROM:<s@example.org>").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<r@example.com>").await), "250");
    assert_eq!(code(&c.cmd("DATA").await), "354");
    c.send_raw(b"dropped\r\n.\r\n").await;
    assert!(c.closed_by_server().await, "final dot dropped");
    assert_eq!(server.accepted_count(), 0);

    let (mut c, _) = Client::connect(port).await;
    c.cmd("EHLO me").await;
    assert_eq!(code(&c.cmd("MAIL FROM:<s@example.org>").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<r@example.com>").await), "250");
    assert_eq!(code(&c.cmd("DATA").await), "354");
    c.send_raw(b"delivered\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok: queued");

    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].data, b"delivered\r\n");
    assert_eq!(server.connections(), 5);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_after_dot_with_lettre_and_rule_order() {
    // Same command in two rules: consulted in order, first with budget wins.
    let server = SmtpServer::start(vec![
        Rule::TempFailCommand {
            command: "DOT".into(),
            reply: "451 4.3.0 Busy".into(),
            times: 1,
        },
        Rule::DropAfterCommand {
            command: "DOT".into(),
            times: 1,
        },
    ])
    .await;
    let transport = lettre_transport(server.port());
    let err = lettre_send(&transport, "r@example.com", "one")
        .await
        .expect_err("first: temp fail");
    assert_eq!(err.status().map(|c| c.to_string()), Some("451".into()));
    let err = lettre_send(&transport, "r@example.com", "two")
        .await
        .expect_err("second: dropped");
    assert!(err.status().is_none(), "no reply expected: {err}");
    assert!(err.is_response(), "{err}");
    assert!(err.to_string().contains("incomplete response"), "{err}");
    assert_eq!(server.accepted_count(), 0);
    lettre_send(&transport, "r@example.com", "three")
        .await
        .expect("third: accepted");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].data_str(), "Subject: test\r\n\r\nthree\r\n");
    drop(transport);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delay_postpones_answer_to_final_dot() {
    let server = SmtpServer::start(vec![Rule::Delay { millis: 400 }]).await;
    let (mut c, _) = Client::connect(server.port()).await;
    c.cmd("EHLO me").await;
    // Other commands are answered at once.
    let start = std::time::Instant::now();
    assert_eq!(code(&c.cmd("MAIL FROM:<s@example.org>").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<r@example.com>").await), "250");
    assert_eq!(code(&c.cmd("DATA").await), "354");
    assert!(start.elapsed() < Duration::from_millis(300));
    let start = std::time::Instant::now();
    c.send_raw(b"slow\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok: queued");
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert_eq!(server.accepted_count(), 1);

    // A client that gives up during the delay: the message is still recorded.
    assert_eq!(code(&c.cmd("MAIL FROM:<s@example.org>").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<r@example.com>").await), "250");
    assert_eq!(code(&c.cmd("DATA").await), "354");
    c.send_raw(b"abandoned\r\n.\r\n").await;
    drop(c);
    assert_eq!(server.accepted_count(), 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(server.accepted_count(), 2);

    // lettre given up on (future dropped) during the delay: the message lands.
    let transport = lettre_transport(server.port());
    let gave_up = tokio::time::timeout(
        Duration::from_millis(150),
        lettre_send(&transport, "r@example.com", "timed out"),
    )
    .await;
    assert!(gave_up.is_err(), "no answer within 150 ms");
    assert_eq!(server.accepted_count(), 2);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let received = server.received();
    assert_eq!(received.len(), 3);
    assert_eq!(received[2].data_str(), "Subject: test\r\n\r\ntimed out\r\n");
    drop(transport);
    server.stop().await;
}

async fn deliver_concurrently(port: u16, clients: usize) {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(clients));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..clients {
        let barrier = std::sync::Arc::clone(&barrier);
        tasks.spawn(async move {
            let (mut c, greeting) = Client::connect(port).await;
            assert_eq!(code(&greeting), "220");
            // All connections are open at the same time past this point.
            barrier.wait().await;
            c.cmd("EHLO me").await;
            assert_eq!(code(&c.cmd("MAIL FROM:<s@example.org>").await), "250");
            assert_eq!(
                code(&c.cmd(&format!("RCPT TO:<r{n}@example.com>")).await),
                "250"
            );
            assert_eq!(code(&c.cmd("DATA").await), "354");
            c.send_raw(format!("message {n}\r\n.\r\n").as_bytes()).await;
            assert_eq!(code(&c.reply().await), "250");
            // Keep the connection open until everyone is done.
            barrier.wait().await;
            assert_eq!(code(&c.cmd("QUIT").await), "221");
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("client task");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_64_concurrent_connections() {
    const CLIENTS: usize = 64;
    let server = SmtpServer::start(vec![Rule::Delay { millis: 50 }]).await;
    tokio::time::timeout(
        Duration::from_secs(30),
        deliver_concurrently(server.port(), CLIENTS),
    )
    .await
    .expect("all clients done");
    assert_eq!(server.accepted_count(), CLIENTS);
    assert_eq!(server.connections(), CLIENTS);
    let mut recipients: Vec<String> = server
        .received()
        .into_iter()
        .flat_map(|m| m.rcpt_to)
        .collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), CLIENTS);
    server.stop().await;

    // The same with the private one-worker runtime.
    let server = SmtpServer::start_blocking(vec![]);
    tokio::time::timeout(
        Duration::from_secs(30),
        deliver_concurrently(server.port(), CLIENTS),
    )
    .await
    .expect("all clients done");
    assert_eq!(server.accepted_count(), CLIENTS);
    server.stop().await;
}

#[tokio::test]
async fn pipelining_rule_offers_it_and_answers_a_group_in_order() {
    let server = SmtpServer::start(vec![Rule::Pipelining]).await;
    let (mut c, greeting) = Client::connect(server.port()).await;
    assert!(greeting.starts_with("220"));
    let ehlo = c.cmd("EHLO me").await;
    assert!(ehlo.lines().any(|l| l == "250-PIPELINING"), "{ehlo:?}");
    c.send_raw(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        .await;
    assert_eq!(code(&c.reply().await), "250");
    assert_eq!(code(&c.reply().await), "250");
    assert_eq!(code(&c.reply().await), "354");
    c.send_raw(b"Subject: x\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(code(&c.reply().await), "250");
    assert_eq!(server.received().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn auth_and_smtputf8_rules_offer_check_and_log() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let server = SmtpServer::start(vec![
        Rule::Auth {
            user: "moped".into(),
            password: "s3cret".into(),
        },
        Rule::SmtpUtf8,
    ])
    .await;
    let (mut c, _) = Client::connect(server.port()).await;
    assert_eq!(
        c.cmd("EHLO me").await,
        "250-test.local\n250-8BITMIME\n250-AUTH PLAIN LOGIN\n250-SMTPUTF8\n250 SIZE 52428800"
    );
    // No MAIL before a login; a wrong password, then AUTH LOGIN with the right one.
    assert_eq!(code(&c.cmd("MAIL FROM:<s@example.org>").await), "530");
    let wrong = b64("\0moped\0nope");
    assert_eq!(code(&c.cmd(&format!("AUTH PLAIN {wrong}")).await), "535");
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd(&b64("moped")).await, "334 UGFzc3dvcmQ6");
    assert_eq!(code(&c.cmd(&b64("s3cret")).await), "235");
    // An address that is not ASCII needs the SMTPUTF8 parameter.
    assert_eq!(code(&c.cmd("MAIL FROM:<sé@example.org>").await), "553");
    assert_eq!(code(&c.cmd("MAIL FROM:<s@example.org>").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<zoë@example.org>").await), "553");
    assert_eq!(code(&c.cmd("RSET").await), "250");
    assert_eq!(
        code(&c.cmd("MAIL FROM:<s@example.org> SMTPUTF8").await),
        "250"
    );
    assert_eq!(code(&c.cmd("RCPT TO:<zoë@example.org>").await), "250");
    assert_eq!(code(&c.cmd("DATA").await), "354");
    c.send_raw("To: <zoë@example.org>\r\n\r\nhi\r\n.\r\n".as_bytes())
        .await;
    assert_eq!(code(&c.reply().await), "250");
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");
    let got = server.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].smtputf8);
    assert_eq!(got[0].rcpt_to, ["zoë@example.org"]);

    // The log: every command line, in order, on connection 1, in clear; not the message.
    let log = server.log();
    assert!(log.iter().all(|s| s.connection == 1 && !s.tls));
    let lines: Vec<&str> = log.iter().map(|s| s.line.as_str()).collect();
    assert_eq!(
        lines[..4],
        [
            "EHLO me",
            "MAIL FROM:<s@example.org>",
            &format!("AUTH PLAIN {wrong}"),
            "AUTH LOGIN"
        ]
    );
    assert_eq!(lines[4], b64("moped"));
    assert!(!lines.contains(&"hi"));
    assert_eq!(lines.last(), Some(&"QUIT"));

    // A server without the rule refuses the parameter and such addresses.
    let plain = SmtpServer::start(vec![]).await;
    let (mut c, _) = Client::connect(plain.port()).await;
    c.cmd("EHLO me").await;
    assert_eq!(
        code(&c.cmd("MAIL FROM:<s@example.org> SMTPUTF8").await),
        "555"
    );
    assert_eq!(code(&c.cmd("MAIL FROM:<s@example.org>").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<zoë@example.org>").await), "553");
}

/// `Rule::StartTls` with notify's own client: STARTTLS is offered in clear only, the session
/// starts anew over TLS (EHLO again), and the log marks what was read over TLS.
#[tokio::test]
async fn starttls_rule_upgrades_and_the_log_tells_tls_from_clear() {
    use notify::mail::smtp::{Connection, Stream};
    use tokio_rustls::rustls::pki_types::ServerName;
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_pem = cert.cert.pem();
    let server = SmtpServer::start(vec![
        Rule::Pipelining,
        Rule::StartTls {
            cert_pem: cert_pem.clone(),
            key_pem: cert.key_pair.serialize_pem(),
        },
        Rule::Auth {
            user: "moped".into(),
            password: "s3cret".into(),
        },
    ])
    .await;
    let config = notify::net::client_config(Some(cert_pem.as_bytes())).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));

    let tcp = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    let c = Connection::greet(Stream::Plain(tcp), "me.example", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(c.offers("STARTTLS") && c.offers("AUTH"));
    let name = ServerName::try_from("127.0.0.1".to_string()).unwrap();
    let mut c = c.starttls(&connector, name).await.unwrap();
    assert!(c.is_tls() && !c.offers("STARTTLS") && c.offers("PIPELINING"));
    c.login(notify::mail::smtp::Login::Password {
        user: "moped",
        password: "s3cret",
    })
    .await
    .unwrap();
    c.begin(
        "s@example.org",
        "r@example.org",
        b"Subject: x\r\n\r\nover TLS\r\n",
    )
    .await
    .unwrap();
    c.finish().await.unwrap();
    c.quit().await;

    let got = server.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, ["r@example.org"]);
    let log: Vec<(bool, String)> = server
        .log()
        .into_iter()
        .map(|s| (s.tls, s.line.split(' ').next().unwrap_or("").to_string()))
        .collect();
    let expect = [
        (false, "EHLO"),
        (false, "STARTTLS"),
        (true, "EHLO"),
        (true, "AUTH"),
        (true, "MAIL"),
        (true, "RCPT"),
        (true, "DATA"),
        (true, "QUIT"),
    ];
    assert_eq!(
        log,
        expect
            .iter()
            .map(|(t, l)| (*t, l.to_string()))
            .collect::<Vec<_>>()
    );
}

/// TLS to the test server with notify's own client, trusting `cert_pem`: greeting, STARTTLS,
/// EHLO again.
async fn connect_starttls(port: u16, cert_pem: &str) -> notify::mail::smtp::Connection {
    use notify::mail::smtp::{Connection, Stream};
    use tokio_rustls::rustls::pki_types::ServerName;
    let config = notify::net::client_config(Some(cert_pem.as_bytes())).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let c = Connection::greet(Stream::Plain(tcp), "me.example", Duration::from_secs(5))
        .await
        .unwrap();
    let name = ServerName::try_from("127.0.0.1".to_string()).unwrap();
    c.starttls(&connector, name).await.unwrap()
}

/// `Rule::Xoauth2` with the test OAuth server and notify's own client and token source:
/// AUTH XOAUTH2 offered only over TLS, a token the endpoint issued accepted, a forged one
/// answered as Exchange does (334 + base64 JSON, then 535 5.7.3), LOGIN refused as basic
/// authentication, and a session whose token expired not let start another message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xoauth2_rule_takes_only_tokens_the_endpoint_issued() {
    use notify::mail::smtp::{Failure, Login};
    use support::oauth_server::OAuthServer;
    let oauth = OAuthServer::start(
        "app-id",
        "app-secret",
        "moped@example.org",
        Duration::from_secs(2),
    );
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_pem = cert.cert.pem();
    let server = SmtpServer::start(vec![
        Rule::Pipelining,
        Rule::StartTls {
            cert_pem: cert_pem.clone(),
            key_pem: cert.key_pair.serialize_pem(),
        },
        Rule::Xoauth2 {
            user: "moped@example.org".into(),
            tokens: oauth.tokens(),
        },
    ])
    .await;
    // In clear: no AUTH offered, MAIL refused.
    let (mut raw, _) = Client::connect(server.port()).await;
    let ehlo = raw.cmd("EHLO me").await;
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(code(&raw.cmd("AUTH XOAUTH2 eA==").await), "504");
    assert_eq!(code(&raw.cmd("MAIL FROM:<s@example.org>").await), "530");

    let source = notify::oauth::TokenSource::new(&notify::config::OAuthSettings {
        token_url: oauth.token_url(),
        client_id: "app-id".into(),
        client_secret: "app-secret".into(),
        scope: "https://outlook.office365.com/.default".into(),
    })
    .unwrap();
    let token = source.token().await.unwrap();
    assert!(oauth.valid(token.secret()));

    // A forged token: refused the Exchange way.
    let mut c = connect_starttls(server.port(), &cert_pem).await;
    assert!(c.offers("AUTH") && c.extensions().iter().any(|e| e.contains("XOAUTH2")));
    let forged =
        notify::oauth::Token::new("forged", std::time::Instant::now(), Duration::from_secs(60));
    let response = notify::oauth::xoauth2("moped@example.org", &forged);
    match c
        .login(Login::Xoauth2 {
            response: &response,
        })
        .await
    {
        Err(Failure::Refused { reply, .. }) => {
            assert_eq!(reply.code, 535);
            assert!(
                reply.text().contains("5.7.3") && reply.text().contains("bearer"),
                "{reply:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    drop(c);
    // The wrong mailbox with a good token: refused too.
    let mut c = connect_starttls(server.port(), &cert_pem).await;
    let response = notify::oauth::xoauth2("someone-else@example.org", &token);
    assert!(c
        .login(Login::Xoauth2 {
            response: &response
        })
        .await
        .is_err());
    drop(c);
    assert_eq!(server.refused_tokens(), 2);

    // A good token: a message goes.
    let mut c = connect_starttls(server.port(), &cert_pem).await;
    let response = notify::oauth::xoauth2("moped@example.org", &token);
    c.login(Login::Xoauth2 {
        response: &response,
    })
    .await
    .unwrap();
    c.begin(
        "s@example.org",
        "r@example.org",
        b"Subject: x\r\n\r\nhi\r\n",
    )
    .await
    .unwrap();
    c.finish().await.unwrap();
    assert_eq!(server.accepted_count(), 1);
    // Once the token has expired, the session may not start another message.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(!oauth.valid(token.secret()));
    let e = c
        .begin(
            "s@example.org",
            "r@example.org",
            b"Subject: y\r\n\r\nhi\r\n",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Failure::Refused { reply, .. } if reply.code == 421),
        "{e:?}"
    );
    assert_eq!(server.expired_sessions(), 1);
    assert_eq!(server.accepted_count(), 1);
    // The endpoint saw the client credentials, form-encoded.
    let seen = oauth.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (
            seen[0].client_id.as_str(),
            seen[0].client_secret.as_str(),
            seen[0].grant_type.as_str()
        ),
        ("app-id", "app-secret", "client_credentials")
    );
    assert!(seen[0]
        .content_type
        .starts_with("application/x-www-form-urlencoded"));
    server.stop().await;
    oauth.stop();
}
