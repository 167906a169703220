//! The bounce fixture corpus (`tests/fixtures/bounces/*.eml`, each with `NAME.expected.json`
//! holding `{"bounces": [...]}`), recall and precision over it, attribution fields, hostile
//! input, and a bounded mutation run (no panic, no slow parse).
//!
//! `BOUNCE_BLESS=1 cargo test --test bounce_corpus` writes the expected files from the parser's
//! output: read every changed file before committing it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::bounce::{self, Report, MAX_MESSAGE_BYTES};
use serde_json::{json, Value};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bounces")
}

fn fixtures() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("fixture folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    paths.sort();
    paths
}

fn parse_file(path: &Path) -> Report {
    let raw = std::fs::read(path).expect("read fixture");
    bounce::parse(&raw).expect("fixture under the size limit")
}

fn addresses(bounces: &Value) -> BTreeSet<String> {
    bounces
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|b| b["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_fixture_parses_as_expected() {
    let bless = std::env::var_os("BOUNCE_BLESS").is_some();
    let paths = fixtures();
    assert!(paths.len() >= 30, "only {} fixtures", paths.len());

    let mut failures = Vec::new();
    let (mut expected_total, mut found_total, mut correct_total) = (0usize, 0usize, 0usize);
    for path in &paths {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let actual = serde_json::to_value(&parse_file(path).bounces).expect("serialize");
        let expected_path = path.with_extension("expected.json");
        if bless {
            let text = serde_json::to_string_pretty(&json!({ "bounces": actual })).unwrap();
            std::fs::write(&expected_path, text + "\n").expect("write expected");
            continue;
        }
        let expected: Value = match std::fs::read_to_string(&expected_path) {
            Ok(text) => serde_json::from_str(&text).expect("expected file is JSON"),
            Err(_) => {
                failures.push(format!("{name}: no {}", expected_path.display()));
                continue;
            }
        };
        let expected = &expected["bounces"];

        let (want, got) = (addresses(expected), addresses(&actual));
        expected_total += want.len();
        found_total += got.len();
        correct_total += want.intersection(&got).count();

        if &actual != expected {
            failures.push(format!(
                "{name}:\n--- expected\n{}\n+++ actual\n{}",
                serde_json::to_string_pretty(expected).unwrap(),
                serde_json::to_string_pretty(&actual).unwrap()
            ));
        }
    }
    if bless {
        return;
    }
    let recall = correct_total as f64 / expected_total.max(1) as f64;
    let precision = correct_total as f64 / found_total.max(1) as f64;
    println!(
        "bounce corpus: {} fixtures, {} expected addresses, {} found, {} correct: recall {:.1}%, precision {:.1}%",
        paths.len(),
        expected_total,
        found_total,
        correct_total,
        recall * 100.0,
        precision * 100.0
    );
    assert!(
        failures.is_empty(),
        "{} fixture(s) differ:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn attribution_fields() {
    let dir = fixture_dir();
    let cases = [
        (
            "office365_ndr.eml",
            Some("moped-bounces+1f-3a9c04be21@austintexas.gov"),
            Some("3a9c04be21aa4f0e9d8c7b6a5f4e3d2c.notify@austintexas.gov"),
        ),
        (
            "postfix_user_unknown.eml",
            Some("moped-bounces+1f-3a9c04be21@austintexas.gov"),
            Some("5f1c0e4e8a9b4f7d9a3c2b1e0d4f6a7b.notify@austintexas.gov"),
        ),
        (
            "postfix_delayed.eml",
            Some("moped-bounces+20-77c1d0a9e3@austintexas.gov"),
            Some("0a1b2c3d4e5f60718293a4b5c6d7e8f9.notify@austintexas.gov"),
        ),
        (
            "exim_text.eml",
            Some("moped-bounces+22-a1b2c3d4e5@austintexas.gov"),
            Some("aa01bb02cc03dd04ee05ff0611223344.notify@austintexas.gov"),
        ),
        (
            "qmail.eml",
            Some("moped-bounces+29-5566778899@austintexas.gov"),
            Some("1234567890abcdef1234567890abcdef.notify@austintexas.gov"),
        ),
        (
            "exchange_text_ndr.eml",
            Some("moped-notices@austintexas.gov"),
            Some("ab12cd34ef56ab12cd34ef56ab12cd34.notify@austintexas.gov"),
        ),
        (
            "dsn_fields_in_text.eml",
            Some("moped-bounces+3f-a0b1c2d3e4@austintexas.gov"),
            Some("5e6f708192a3b4c5d6e7f8091a2b3c4d.notify@austintexas.gov"),
        ),
        (
            "global_dsn.eml",
            Some("moped-bounces+3a-5b6c7d8e9f@austintexas.gov"),
            Some("3c4d5e6f708192a3b4c5d6e7f8091a2b.notify@austintexas.gov"),
        ),
        (
            "sendmail_warning.eml",
            Some("moped-bounces+28-deadbeef99@austintexas.gov"),
            None,
        ),
    ];
    for (file, verp, message_id) in cases {
        let report = parse_file(&dir.join(file));
        assert_eq!(
            report.verp_recipient.as_deref(),
            verp,
            "{file}: verp_recipient"
        );
        assert_eq!(
            report.original_message_id.as_deref(),
            message_id,
            "{file}: original_message_id"
        );
    }
}

/// Parses `raw`, failing if it takes longer than `limit`. The limits catch a parser that
/// stalls (backtracking, work that grows with the square of the input), not speed: they are
/// several times what a debug build needs even on a loaded two-core machine. Speed is measured
/// in `examples/bench_bounce_parse.rs`.
fn parse_quickly(raw: &[u8], limit: Duration, what: &str) -> Report {
    let start = Instant::now();
    let report = bounce::parse(raw).unwrap_or_default();
    let took = start.elapsed();
    assert!(took < limit, "{what}: parse took {took:?}");
    report
}

#[test]
fn deep_multipart_nesting() {
    let mut s = String::from("From: MAILER-DAEMON@x.example\r\nSubject: Undeliverable\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n");
    for i in 1..2000 {
        s.push_str(&format!(
            "--b{}\r\nContent-Type: multipart/mixed; boundary=\"b{}\"\r\n\r\n",
            i - 1,
            i
        ));
    }
    s.push_str(
        "--b1999\r\nContent-Type: text/plain\r\n\r\n<bob@example.com>: 550 5.1.1 User unknown\r\n",
    );
    parse_quickly(
        s.as_bytes(),
        Duration::from_secs(10),
        "2000 nested multiparts",
    );
}

#[test]
fn deep_message_nesting() {
    let mut s = String::from("From: MAILER-DAEMON@x.example\r\n");
    for _ in 0..2000 {
        s.push_str("Content-Type: message/rfc822\r\n\r\nFrom: x@y.example\r\n");
    }
    s.push_str("\r\nbody\r\n");
    parse_quickly(
        s.as_bytes(),
        Duration::from_secs(10),
        "2000 nested messages",
    );
}

#[test]
fn hostile_shapes_do_not_panic_or_hang() {
    let mut junk = Vec::with_capacity(1 << 20);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..(1 << 20) {
        junk.push(rng.next() as u8);
    }
    let long_line = format!("Subject: Undeliverable\r\n\r\n{}", "a@b.".repeat(200_000));
    let many_at = format!(
        "Subject: failure notice\r\n\r\n{}",
        "x".repeat(60) + &"@".repeat(500_000)
    );
    let header_flood = "X-Junk: y\r\n".repeat(100_000) + "\r\nbody";
    let dsn_flood = format!(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n{}--b--\r\n",
        "Final-Recipient: rfc822;a@b.example\r\nAction: failed\r\n\r\n".repeat(20_000)
    );
    let mut many_parts = String::from(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n",
    );
    for part in 0..400 {
        many_parts.push_str("--b\r\nContent-Type: message/delivery-status\r\n\r\n");
        for r in 0..250 {
            many_parts.push_str(&format!(
                "Final-Recipient: rfc822;u{part}x{r}@b.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
            ));
        }
    }
    many_parts.push_str("--b--\r\n");
    let mut many_prose = String::from("From: MAILER-DAEMON@x.example\r\nSubject: Undeliverable\r\n\r\nThis is a permanent error.\r\n");
    for i in 0..2000 {
        many_prose.push_str(&format!("<user{i}@example.com>:\r\n"));
        for _ in 0..40 {
            many_prose.push_str(&"lorem ipsum dolor sit amet ".repeat(4));
            many_prose.push_str("\r\n");
        }
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "100,000 DSN recipients in 400 parts",
            many_parts.into_bytes(),
        ),
        ("2000 addresses in long prose", many_prose.into_bytes()),
        ("empty", Vec::new()),
        ("binary junk", junk),
        ("NULs", vec![0u8; 100_000]),
        ("long line", long_line.into_bytes()),
        ("many @", many_at.into_bytes()),
        ("header flood", header_flood.into_bytes()),
        ("DSN flood", dsn_flood.into_bytes()),
        (
            "bare boundary",
            b"Content-Type: multipart/report; boundary=\r\n\r\n--\r\n--\r\n".to_vec(),
        ),
    ];
    for (what, raw) in cases {
        let start = Instant::now();
        let report = parse_quickly(&raw, Duration::from_secs(10), what);
        println!(
            "{what}: {} bytes, {} bounces, {:?}",
            raw.len(),
            report.bounces.len(),
            start.elapsed()
        );
    }
    let report = bounce::parse(b"From: a@b.example\r\n\r\n\xff\xfe binary").unwrap();
    assert!(report.bounces.is_empty());
}

#[test]
fn oversized_input_is_refused() {
    let big = vec![b'a'; MAX_MESSAGE_BYTES + 1];
    let err = bounce::parse(&big).unwrap_err();
    assert_eq!(err.size, MAX_MESSAGE_BYTES + 1);
    assert_eq!(err.limit, MAX_MESSAGE_BYTES);
    assert!(bounce::parse(&big[..MAX_MESSAGE_BYTES]).is_ok());
}

/// Marsaglia's xorshift64: deterministic, no crate needed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Truncations, byte flips, splices of one fixture into another, and duplicated slices, 20,000
/// times: `parse` must neither panic nor take 50 ms on any of them.
#[test]
fn mutated_fixtures_never_panic_or_stall() {
    // mail-parser's `debug_assert!(false, ..)` in its corrupt-input paths fires in test builds;
    // `bounce::parse` catches it, but the default hook would first print (and with
    // RUST_BACKTRACE, symbolise) a backtrace, which alone takes longer than the time limit.
    // Stay quiet for those, count them, and report everything else as usual.
    static CAUGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .location()
            .is_some_and(|l| l.file().contains("mail-parser"))
        {
            CAUGHT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            default_hook(info);
        }
    }));

    let corpus: Vec<Vec<u8>> = fixtures()
        .iter()
        .map(|p| std::fs::read(p).expect("read fixture"))
        .collect();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut slowest = Duration::ZERO;
    let interesting = b":;<>@-\r\n\t =\"()#.5";
    for round in 0..20_000 {
        let mut bytes = corpus[rng.below(corpus.len())].clone();
        for _ in 0..=rng.below(4) {
            match rng.below(5) {
                0 => bytes.truncate(rng.below(bytes.len() + 1)),
                1 => {
                    for _ in 0..=rng.below(16) {
                        if !bytes.is_empty() {
                            let i = rng.below(bytes.len());
                            bytes[i] = rng.next() as u8;
                        }
                    }
                }
                2 => {
                    let other = &corpus[rng.below(corpus.len())];
                    let from = rng.below(other.len());
                    let to = from + rng.below(other.len() - from + 1);
                    let at = rng.below(bytes.len() + 1);
                    bytes.splice(at..at, other[from..to].iter().copied());
                }
                3 => {
                    if !bytes.is_empty() {
                        let i = rng.below(bytes.len());
                        bytes[i] = interesting[rng.below(interesting.len())];
                    }
                }
                _ => {
                    let from = rng.below(bytes.len() + 1);
                    let to = (from + rng.below(256)).min(bytes.len());
                    let copy: Vec<u8> = bytes[from..to].to_vec();
                    let at = rng.below(bytes.len() + 1);
                    bytes.splice(at..at, copy);
                }
            }
        }
        let start = Instant::now();
        let _ = bounce::parse(&bytes);
        let took = start.elapsed();
        slowest = slowest.max(took);
        assert!(
            took < Duration::from_millis(500),
            "round {round}: parse took {took:?}"
        );
    }
    println!(
        "mutation run: 20000 inputs, slowest parse {slowest:?}, {} mail-parser debug assertions caught",
        CAUGHT.load(std::sync::atomic::Ordering::Relaxed)
    );
}
