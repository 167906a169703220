//! Throughput of `notify::bounce::parse` on one core (issue 3, item 7; issue 14, item 4).
//!
//! ```text
//! cargo run --release --example bench_bounce_parse [-- --seconds S | --passes N] [--only typical-dsn|fixtures|sisimai]
//! cargo run --release --example bench_bounce_parse -- --dump N   # print typical DSN N
//! ```
//!
//! Three corpora are built in memory before anything is timed:
//!
//! * **typical DSN**: 1,000 distinct Postfix-style `multipart/report` bounces (a text part, a
//!   `message/delivery-status` part naming one recipient, a `text/rfc822-headers` part), about
//!   3 KB each, generated deterministically (fixed seed) with varied addresses, hosts, status
//!   codes and diagnostics. Every one must parse to exactly one bounce for the right address.
//! * **fixtures**: the repository's `tests/fixtures/bounces/*.eml`, read once from
//!   `CARGO_MANIFEST_DIR`: the mixed real-world shapes (DSNs, NDRs, prose bounces, auto-replies,
//!   ordinary mail).
//! * **sisimai**: the vendored `tests/fixtures/sisimai/mail/*.eml` (482 real bounces from many
//!   mail agents, auto-replies, delivery reports and feedback reports, about 4 KB on average),
//!   read the same way. Target (issue 14): at least 100 MB/s.
//!
//! Each set is warmed up, then parsed whole, pass after pass, on the calling thread until about
//! `--seconds` (default 3) have passed or a fixed pass limit is reached, whichever comes first;
//! with `--passes N`, one warm-up pass and exactly N timed passes, whatever the clock says (the
//! same work every run, e.g. to count instructions under `valgrind --tool=callgrind`).
//! It prints messages/s, MB/s (1 MB = 10^6 bytes of raw message) by the wall clock, MB/s by the
//! time the thread was on a CPU (from `/proc/thread-self/schedstat`: on a busy machine this is
//! the steadier figure to compare two builds by), and a checksum (bounces found, address bytes)
//! that depends on every result, so the parsing cannot be optimised away. Last, outside the
//! timing, a digest of every field of every result of each set, to check that two builds
//! (before and after a speed-up) parse alike.
//! No network, no threads, no files written.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use notify::bounce;

/// The allocator the `notify` binary uses (`src/main.rs`), so that the figures are the CLI's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Distinct typical DSNs generated.
const TYPICAL_COUNT: usize = 1000;
/// Seed of the generator: the corpus is the same on every run.
const SEED: u64 = 0x6d6f_7065_645f_3033;
/// Default measuring time per set.
const DEFAULT_SECONDS: f64 = 3.0;
/// Warm-up time per set (at least one full pass is always made).
const WARMUP: Duration = Duration::from_millis(300);
/// Upper bound on timed passes per set, whatever the clock says.
const MAX_PASSES: u64 = 1_000_000;

fn main() {
    let opts = options_from_args();
    print_machine();

    // Only the sets to measure are built (and the typical DSNs checked).
    let typical = if opts.wants("typical-dsn") {
        let typical = typical_corpus();
        verify_typical(&typical);
        typical
    } else {
        Vec::new()
    };
    let corpus = |set: &str, folder: &str| {
        if opts.wants(set) {
            eml_corpus(folder)
        } else {
            Vec::new()
        }
    };
    let fixtures = corpus("fixtures", "tests/fixtures/bounces");
    let sisimai = corpus("sisimai", "tests/fixtures/sisimai/mail");

    println!();
    println!(
        "{:<12} {:>6} {:>10} {:>9} {:>12} {:>8} {:>9} {:>12} {:>14} {:>12}",
        "set",
        "msgs",
        "avg bytes",
        "passes",
        "parsed",
        "secs",
        "µs/msg",
        "messages/s",
        "MB/s",
        "on-CPU MB/s"
    );
    let t = opts.wants("typical-dsn").then(|| {
        let t = measure("typical-dsn", &typical, opts.budget);
        // One bounce per typical DSN, every time: proves each parse did the work.
        assert_eq!(
            t.bounces, t.parsed,
            "every typical DSN must yield exactly one bounce"
        );
        t
    });
    let f = opts
        .wants("fixtures")
        .then(|| measure("fixtures", &fixtures, opts.budget));
    let s = opts
        .wants("sisimai")
        .then(|| measure("sisimai", &sisimai, opts.budget));
    println!();
    if let Some(t) = &t {
        println!(
            "checksum typical-dsn: {} bounces in {} messages, {} address bytes",
            t.bounces, t.parsed, t.address_bytes
        );
    }
    if let Some(f) = &f {
        println!(
            "checksum fixtures:    {} bounces in {} messages ({} per pass), {} address bytes, {} refused as too large",
            f.bounces,
            f.parsed,
            f.bounces / f.passes.max(1),
            f.address_bytes,
            f.too_large
        );
    }
    if let Some(s) = &s {
        println!(
            "checksum sisimai:     {} bounces in {} messages ({} per pass), {} address bytes, {} refused as too large",
            s.bounces,
            s.parsed,
            s.bounces / s.passes.max(1),
            s.address_bytes,
            s.too_large
        );
    }
    // Every field of every result, once more outside the timing: two builds that print the same
    // digest parsed the set the same way (a speed-up must not change a result).
    for (set, corpus) in [
        ("typical-dsn", &typical),
        ("fixtures", &fixtures),
        ("sisimai", &sisimai),
    ] {
        if opts.wants(set) {
            println!("results {:<12} sha256 {}", set, results_digest(corpus));
        }
    }
    if let Some(t) = &t {
        let target = 50_000.0;
        println!(
            "target >= {:.0} typical DSNs/s: {} ({:.0} messages/s)",
            target,
            if t.per_sec() >= target {
                "MET"
            } else {
                "NOT MET"
            },
            t.per_sec()
        );
    }
    if let Some(s) = &s {
        let target = 100.0;
        println!(
            "target >= {:.0} MB/s on the sisimai corpus: {} ({:.1} MB/s)",
            target,
            if s.mb_per_sec() >= target {
                "MET"
            } else {
                "NOT MET"
            },
            s.mb_per_sec()
        );
    }
}

/// SHA-256 (first 16 hex digits) of every report of `corpus` as JSON, in order.
fn results_digest(corpus: &[Vec<u8>]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for raw in corpus {
        match bounce::parse(raw) {
            Ok(report) => hash.update(serde_json::to_vec(&report).expect("a report serialises")),
            Err(too_large) => hash.update(too_large.to_string()),
        }
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())[..16].to_string()
}

/// How long each set is measured.
#[derive(Clone, Copy)]
enum Budget {
    /// About this many seconds of whole passes.
    Seconds(f64),
    /// Exactly this many passes.
    Passes(u64),
}

/// Command-line options.
struct Options {
    budget: Budget,
    /// Measure only this set (`typical-dsn`, `fixtures` or `sisimai`), e.g. under a profiler.
    only: Option<String>,
}

impl Options {
    fn wants(&self, set: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == set)
    }
}

fn options_from_args() -> Options {
    let mut args = std::env::args().skip(1);
    let mut budget = Budget::Seconds(DEFAULT_SECONDS);
    let mut only = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dump" => {
                let n = args
                    .next()
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|n| *n < TYPICAL_COUNT)
                    .unwrap_or_else(|| usage("--dump needs an index below 1000"));
                let dsn = typical_dsns().swap_remove(n);
                print!("{}", String::from_utf8_lossy(&dsn.raw));
                std::process::exit(0);
            }
            "--passes" => {
                budget = Budget::Passes(
                    args.next()
                        .and_then(|v| v.parse::<u64>().ok())
                        .filter(|n| (1..=MAX_PASSES).contains(n))
                        .unwrap_or_else(|| usage("--passes needs a number from 1 to 1000000")),
                );
            }
            "--seconds" => {
                budget = Budget::Seconds(
                    args.next()
                        .and_then(|v| v.parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 600.0)
                        .unwrap_or_else(|| usage("--seconds needs a number in (0, 600]")),
                );
            }
            "--only" => match args.next().as_deref() {
                Some(set @ ("typical-dsn" | "fixtures" | "sisimai")) => {
                    only = Some(set.to_string())
                }
                _ => usage("--only needs typical-dsn, fixtures or sisimai"),
            },
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    Options { budget, only }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("bench_bounce_parse: {problem}");
    }
    eprintln!(
        "usage: cargo run --release --example bench_bounce_parse [-- --seconds S | --passes N] [--only typical-dsn|fixtures|sisimai] | -- --dump N"
    );
    std::process::exit(if problem.is_empty() { 0 } else { 2 });
}

// ---------------------------------------------------------------------------------------------
// Machine facts

fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    });
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unavailable".into());
    println!("bench_bounce_parse: notify::bounce::parse, single thread");
    println!("cpu:     {cpu}");
    println!("cores:   {cores} available (benchmark uses 1)");
    if let Some(kb) = mem_kb {
        println!("memory:  {:.1} GiB", kb as f64 / 1024.0 / 1024.0);
    }
    println!(
        "os:      {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    println!("rustc:   {rustc}");
    if cfg!(debug_assertions) {
        println!("WARNING: debug build; run with --release for meaningful figures");
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement

struct Outcome {
    passes: u64,
    parsed: u64,
    bytes: u64,
    bounces: u64,
    address_bytes: u64,
    too_large: u64,
    elapsed: Duration,
    /// Time the measuring thread spent on a CPU, when the kernel says (Linux).
    on_cpu: Option<Duration>,
}

impl Outcome {
    fn per_sec(&self) -> f64 {
        self.parsed as f64 / self.elapsed.as_secs_f64()
    }
    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

/// Time this thread has spent running on a CPU (the first field of
/// `/proc/thread-self/schedstat`, in nanoseconds). On a shared machine it leaves out the time
/// the thread waited for a CPU, which the wall clock counts.
fn thread_on_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Parses every message of `corpus` once; returns (bounces, address bytes, refused).
#[inline(never)]
fn pass(corpus: &[Vec<u8>]) -> (u64, u64, u64) {
    let mut bounces = 0u64;
    let mut address_bytes = 0u64;
    let mut too_large = 0u64;
    for raw in corpus {
        match bounce::parse(black_box(raw.as_slice())) {
            Ok(report) => {
                let report = black_box(report);
                bounces += report.bounces.len() as u64;
                address_bytes += report
                    .bounces
                    .iter()
                    .map(|b| b.address.len() as u64)
                    .sum::<u64>();
            }
            Err(_) => too_large += 1,
        }
    }
    (bounces, address_bytes, too_large)
}

fn measure(name: &str, corpus: &[Vec<u8>], budget: Budget) -> Outcome {
    assert!(!corpus.is_empty(), "{name}: empty corpus");
    let pass_bytes: u64 = corpus.iter().map(|m| m.len() as u64).sum();

    let warm = Instant::now();
    loop {
        black_box(pass(corpus));
        if matches!(budget, Budget::Passes(_)) || warm.elapsed() >= WARMUP {
            break;
        }
    }

    let (time_budget, max_passes) = match budget {
        Budget::Seconds(s) => (Duration::from_secs_f64(s), MAX_PASSES),
        Budget::Passes(n) => (Duration::MAX, n),
    };
    let mut out = Outcome {
        passes: 0,
        parsed: 0,
        bytes: 0,
        bounces: 0,
        address_bytes: 0,
        too_large: 0,
        elapsed: Duration::ZERO,
        on_cpu: None,
    };
    let cpu_start = thread_on_cpu();
    let start = Instant::now();
    while out.passes < max_passes {
        let (b, a, t) = pass(corpus);
        out.passes += 1;
        out.bounces += b;
        out.address_bytes += a;
        out.too_large += t;
        if start.elapsed() >= time_budget {
            break;
        }
    }
    out.elapsed = start.elapsed();
    out.on_cpu = cpu_start
        .zip(thread_on_cpu())
        .map(|(a, b)| b.saturating_sub(a));
    out.parsed = out.passes * corpus.len() as u64;
    out.bytes = out.passes * pass_bytes;

    let secs = out.elapsed.as_secs_f64();
    let on_cpu = out
        .on_cpu
        .filter(|d| !d.is_zero())
        .map_or("-".to_string(), |d| {
            format!("{:.2}", out.bytes as f64 / 1e6 / d.as_secs_f64())
        });
    println!(
        "{:<12} {:>6} {:>10} {:>9} {:>12} {:>8.3} {:>9.2} {:>12.0} {:>14.2} {:>12}",
        name,
        corpus.len(),
        pass_bytes / corpus.len() as u64,
        out.passes,
        out.parsed,
        secs,
        secs * 1e6 / out.parsed as f64,
        out.per_sec(),
        out.bytes as f64 / 1e6 / secs,
        on_cpu
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Fixtures and the sisimai corpus

/// Every `*.eml` of `folder` (relative to the repository), in name order.
fn eml_corpus(folder: &str) -> Vec<Vec<u8>> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no .eml files in {}", dir.display());
    paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display())))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Typical DSNs

/// SplitMix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn token(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| char::from(alphabet[self.below(alphabet.len())]))
            .collect()
    }
}

const FIRST: &[&str] = &[
    "alice", "bob", "carmen", "deshawn", "elena", "farid", "grace", "hector", "ines", "jamal",
    "keiko", "luis", "maria", "nguyen", "olga", "pedro", "quinn", "rosa", "samir", "tomas",
];
const LAST: &[&str] = &[
    "smith",
    "garcia",
    "johnson",
    "martinez",
    "lee",
    "brown",
    "hernandez",
    "davis",
    "lopez",
    "wilson",
    "nguyen",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "white",
    "harris",
];
const DOMAINS: &[&str] = &[
    "austintexas.gov",
    "example.com",
    "example.org",
    "example.net",
    "travis-county.example",
    "capmetro.example",
    "utexas.example.edu",
    "mail.example.co.uk",
    "contractor-one.example",
    "cityworks.example.io",
];
const RELAYS: &[&str] = &["mail", "smtp1", "relay-a", "mx-out2", "postfix03"];

/// (status, action, diagnostic template: `{a}` is the address, `{h}` the remote host).
const CASES: &[(&str, &str, &str)] = &[
    ("5.1.1", "failed", "smtp; 550 5.1.1 <{a}>: Recipient address rejected: User unknown in virtual mailbox table"),
    ("5.1.1", "failed", "smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please try\n    550-5.1.1 double-checking the recipient's email address for typos or\n    550 5.1.1 unnecessary spaces. Learn more at https://support.example/mail/?p=NoSuchUser"),
    ("5.2.2", "failed", "smtp; 552 5.2.2 <{a}>: Mailbox full, quota exceeded"),
    ("4.2.2", "delayed", "smtp; 452 4.2.2 <{a}>: Over quota, try again later"),
    ("5.7.1", "failed", "smtp; 554 5.7.1 <{a}>: Recipient address rejected: Access denied by policy"),
    ("4.7.1", "delayed", "smtp; 450 4.7.1 <{a}>: Recipient address rejected: Greylisted, see http://{h}/greylist.html"),
    ("5.3.4", "failed", "smtp; 552 5.3.4 Error: message file too big"),
    ("4.4.1", "delayed", "X-Postfix; connect to {h}[192.0.2.17]:25: Connection timed out"),
    ("5.4.4", "failed", "X-Postfix; Host or domain name not found. Name service error for\n    name={h} type=A: Host not found"),
    ("5.0.0", "failed", "smtp; 550 5.0.0 <{a}>... User unknown"),
];

struct Dsn {
    raw: Vec<u8>,
    address: String,
}

fn typical_corpus() -> Vec<Vec<u8>> {
    typical_dsns().into_iter().map(|d| d.raw).collect()
}

fn typical_dsns() -> Vec<Dsn> {
    let mut rng = Rng(SEED);
    (0..TYPICAL_COUNT)
        .map(|i| typical_dsn(&mut rng, i))
        .collect()
}

/// Checks once, outside the timing, that each typical DSN parses to its one recipient.
fn verify_typical(corpus: &[Vec<u8>]) {
    let dsns = typical_dsns();
    assert_eq!(dsns.len(), corpus.len());
    for (i, d) in dsns.iter().enumerate() {
        let report =
            bounce::parse(&d.raw).unwrap_or_else(|e| panic!("typical DSN {i} refused: {e}"));
        assert_eq!(
            report.bounces.len(),
            1,
            "typical DSN {i} gave {} bounces:\n{}",
            report.bounces.len(),
            String::from_utf8_lossy(&d.raw)
        );
        assert_eq!(report.bounces[0].address, d.address, "typical DSN {i}");
    }
}

fn typical_dsn(rng: &mut Rng, i: usize) -> Dsn {
    const HEX: &[u8] = b"0123456789ABCDEF";
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const ALNUM: &[u8] = b"0123456789bcdfghjklmnpqrstvwxyzBCDFGHJKLMNPQRSTVWXYZ";

    let first = rng.pick(FIRST);
    let last = rng.pick(LAST);
    let domain = rng.pick(DOMAINS);
    let local = match rng.below(3) {
        0 => format!("{first}.{last}"),
        1 => format!("{}{last}{}", &first[..1], i % 97),
        _ => format!("{first}_{last}{i}"),
    };
    // The index keeps every address distinct.
    let address = format!("{local}.{i}@{domain}");
    let remote_host = format!("mx{}.{domain}", 1 + rng.below(3));
    let relay = format!("{}.austintexas.gov", rng.pick(RELAYS));
    let (status, action, diag) = CASES[rng.below(CASES.len())];
    let diag = diag.replace("{a}", &address).replace("{h}", &remote_host);
    let queue_id = rng.token(ALNUM, 14);
    let stamp = 1_709_564_407 + i as u64 * 37;
    let boundary = format!("{queue_id}.{stamp}/{relay}");
    let verp = format!(
        "moped-bounces+{:x}-{}@austintexas.gov",
        i,
        rng.token(HEX, 10).to_lowercase()
    );
    let day = 1 + rng.below(28);
    let (hh, mm, ss) = (rng.below(24), rng.below(60), rng.below(60));
    let date = format!("Mon, {day:2} Mar 2024 {hh:02}:{mm:02}:{ss:02} -0600 (CST)");
    let msg_id = format!(
        "{}.notify@austintexas.gov",
        rng.token(HEX, 32).to_lowercase()
    );
    let dkim_b = rng.token(B64, 86);
    let dkim_bh = rng.token(B64, 43);
    let subject = rng.pick(&[
        "Moped 2.5 release: what changes on Monday",
        "Moped maintenance window Saturday 06:00-09:00",
        "Moped 2.6: new project dashboard",
        "Action needed: confirm your Moped workgroup",
    ]);
    let ip = format!("192.0.2.{}", 1 + rng.below(254));
    let (said, remote_line) = if diag.starts_with("smtp;") {
        let text = diag.trim_start_matches("smtp; ").replace("\n    ", " ");
        (
            format!("host {remote_host}[{ip}] said: {text} (in reply to RCPT TO command)"),
            format!("Remote-MTA: dns; {remote_host}\n"),
        )
    } else {
        (
            diag.trim_start_matches("X-Postfix; ")
                .replace("\n    ", " "),
            String::new(),
        )
    };
    let said = fold(&format!("<{address}>: {said}"), 72, "    ");
    let (intro, notice) = if action == "delayed" {
        (
            "Delayed Mail (still being retried)",
            "####################################################################\n\
             # THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n\
             ####################################################################\n\n\
             Your message could not be delivered for more than 4 hour(s).\n\
             It will be retried until it is 5 day(s) old.",
        )
    } else {
        (
            "Undelivered Mail Returned to Sender",
            "I'm sorry to have to inform you that your message could not\n\
             be delivered to one or more recipients. It's attached below.",
        )
    };

    let raw = format!(
        "Return-Path: <>\n\
X-Original-To: {verp}\n\
Delivered-To: {verp}\n\
Received: by {relay} (Postfix)\n\
\tid {queue_id}; {date}\n\
Date: {date}\n\
From: MAILER-DAEMON@{relay} (Mail Delivery System)\n\
Subject: {intro}\n\
To: {verp}\n\
Auto-Submitted: auto-replied\n\
MIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=delivery-status;\n\
\tboundary=\"{boundary}\"\n\
Content-Transfer-Encoding: 8bit\n\
Message-Id: <{stamp}.{queue_id}@{relay}>\n\
\n\
This is a MIME-encapsulated message.\n\
\n\
--{boundary}\n\
Content-Description: Notification\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: 8bit\n\
\n\
This is the mail system at host {relay}.\n\
\n\
{notice}\n\
\n\
For further assistance, please send mail to postmaster.\n\
\n\
If you do so, please include this problem report. You can\n\
delete your own text from the attached returned message.\n\
\n\
{pad}The mail system\n\
\n\
{said}\n\
\n\
--{boundary}\n\
Content-Description: Delivery report\n\
Content-Type: message/delivery-status\n\
\n\
Reporting-MTA: dns; {relay}\n\
X-Postfix-Queue-ID: {queue_id}\n\
X-Postfix-Sender: rfc822; {verp}\n\
Arrival-Date: {date}\n\
\n\
Final-Recipient: rfc822; {address}\n\
Original-Recipient: rfc822;{address}\n\
Action: {action}\n\
Status: {status}\n\
{remote_line}\
Diagnostic-Code: {diag}\n\
\n\
--{boundary}\n\
Content-Description: Undelivered Message Headers\n\
Content-Type: text/rfc822-headers\n\
Content-Transfer-Encoding: 8bit\n\
\n\
Return-Path: <{verp}>\n\
Received: from notify.austintexas.gov (notify.austintexas.gov [10.20.30.40])\n\
\tby {relay} (Postfix) with ESMTPS id {queue_id}\n\
\tfor <{address}>; {date}\n\
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=austintexas.gov;\n\
\ts=notify2024; t={stamp}; bh={dkim_bh}=;\n\
\tb={dkim_b}\n\
From: Moped Notices <moped-notices@austintexas.gov>\n\
To: {address}\n\
Subject: {subject}\n\
Date: {date}\n\
Message-ID: <{msg_id}>\n\
MIME-Version: 1.0\n\
Content-Type: multipart/alternative; boundary=\"=_notify_{alt}\"\n\
\n\
--{boundary}--\n",
        pad = " ".repeat(19),
        alt = &msg_id[..16],
    );
    Dsn {
        raw: raw.into_bytes(),
        address,
    }
}

/// Wraps `text` at spaces to lines of at most about `width` characters, continuation lines
/// starting with `indent` (as Postfix does in its notification text).
fn fold(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut line_len = 0;
    for word in text.split(' ') {
        if line_len > 0 && line_len + 1 + word.len() > width {
            out.push('\n');
            out.push_str(indent);
            line_len = indent.len();
        } else if line_len > 0 {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += word.len();
    }
    out
}
