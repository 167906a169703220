//! The parser scored on real-world bounce mail: 482 messages from sisimai's `set-of-emails`
//! (`tests/fixtures/sisimai/`, BSD 2-clause, LICENSE beside them), labelled with what sisimai
//! reports for each. Prints recall, precision and the agreement on hard/soft, status and reason,
//! and fails below the floors set here (see the constants: recall and precision at issue 14's
//! targets; the three agreements at what the parser reaches so far, below the targets).
//!
//! Labels name no addresses, so recipients are matched by count, message by message: a message
//! with 3 labelled recipients where the parser finds 2 scores 2 found-and-right, 1 missed. The
//! agreements compare, over the matched recipients of each message, the multiset of the
//! parser's values with the labelled ones (order within a message does not count).
//!
//! `SISIMAI_VERBOSE=1 cargo test --test sisimai_corpus` lists every message that
//! disagrees, with both sides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use notify::bounce::{self, BounceKind};
use serde::Deserialize;

#[derive(Deserialize)]
struct Label {
    recipients: Vec<Expected>,
    #[serde(default)]
    not_bounce: Vec<String>,
}

#[derive(Deserialize)]
struct Expected {
    status: String,
    reason: String,
    hard: bool,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sisimai")
}

/// How many values of `ours` match values of `theirs`, each used once.
fn multiset_agreement<T: Ord + Clone>(ours: &[T], theirs: &[T]) -> usize {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for t in theirs {
        *counts.entry(t.clone()).or_default() += 1;
    }
    ours.iter()
        .filter(|o| match counts.get_mut(*o) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        })
        .count()
}

#[derive(Default, Debug)]
struct Score {
    messages: usize,
    expected: usize,
    found: usize,
    matched: usize,
    hard_agree: usize,
    status_agree: usize,
    reason_agree: usize,
    not_bounce_reported: Vec<String>,
}

impl Score {
    fn ratio(a: usize, b: usize) -> f64 {
        a as f64 / b.max(1) as f64
    }
    fn recall(&self) -> f64 {
        Self::ratio(self.matched, self.expected)
    }
    fn precision(&self) -> f64 {
        Self::ratio(self.matched, self.found)
    }
    fn hard(&self) -> f64 {
        Self::ratio(self.hard_agree, self.matched)
    }
    fn status(&self) -> f64 {
        Self::ratio(self.status_agree, self.matched)
    }
    fn reason(&self) -> f64 {
        Self::ratio(self.reason_agree, self.matched)
    }
}

fn score() -> Score {
    let dir = corpus_dir();
    let labels: BTreeMap<String, Label> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("labels.json")).expect("labels.json"),
    )
    .expect("labels.json is JSON");
    let verbose = std::env::var_os("SISIMAI_VERBOSE").is_some();
    let mut s = Score::default();
    let mut by_family: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (name, label) in &labels {
        let raw = std::fs::read(dir.join("mail").join(name)).expect("corpus message");
        let report = bounce::parse(&raw).expect("under the size limit");
        let ours = &report.bounces;
        let theirs = &label.recipients;
        let matched = ours.len().min(theirs.len());
        s.messages += 1;
        s.expected += theirs.len();
        s.found += ours.len();
        s.matched += matched;
        if theirs.is_empty() && !ours.is_empty() && !label.not_bounce.is_empty() {
            s.not_bounce_reported.push(name.clone());
        }
        let (ours, theirs) = (&ours[..matched], &theirs[..matched]);
        let agree = |o: Vec<String>, t: Vec<String>| multiset_agreement(&o, &t);
        let hard = agree(
            ours.iter()
                .map(|b| (b.kind == BounceKind::Hard).to_string())
                .collect(),
            theirs.iter().map(|e| e.hard.to_string()).collect(),
        );
        let status = agree(
            ours.iter()
                .map(|b| b.status.clone().unwrap_or_default())
                .collect(),
            theirs.iter().map(|e| e.status.clone()).collect(),
        );
        let reason = agree(
            ours.iter().map(|b| b.reason.as_str().to_string()).collect(),
            theirs.iter().map(|e| e.reason.clone()).collect(),
        );
        s.hard_agree += hard;
        s.status_agree += status;
        s.reason_agree += reason;
        let family = name.rsplit_once('-').map_or(name.as_str(), |(f, _)| f);
        let entry = by_family.entry(family.to_string()).or_default();
        let perfect = report.bounces.len() == label.recipients.len()
            && hard == matched
            && status == matched
            && reason == matched;
        entry.0 += 1;
        entry.1 += usize::from(perfect);
        if verbose && !perfect {
            let ours: Vec<String> = report
                .bounces
                .iter()
                .map(|b| {
                    format!(
                        "{} {} {} {} | {}",
                        b.address,
                        b.kind.as_str(),
                        b.status.as_deref().unwrap_or("-"),
                        b.reason.as_str(),
                        b.diagnostic.as_deref().unwrap_or("")
                    )
                })
                .collect();
            let theirs: Vec<String> = label
                .recipients
                .iter()
                .map(|e| {
                    format!(
                        "{} {} {}",
                        if e.hard { "hard" } else { "soft" },
                        e.status,
                        e.reason
                    )
                })
                .collect();
            println!(
                "== {name} {:?}\n  sisimai: {theirs:?}\n  notify:  {ours:#?}",
                label.not_bounce
            );
        }
    }
    if verbose {
        for (family, (n, ok)) in &by_family {
            if ok < n {
                println!("family {family}: {ok}/{n} exactly right");
            }
        }
    }
    s
}

// Floors: issue 14's targets (recall 0.98, precision 0.99, hard/soft 0.97, status 0.95, reason
// 0.90), all reached; a change that drops a score below its floor fails the test.
const RECALL: f64 = 0.98;
const PRECISION: f64 = 0.99;
const HARD: f64 = 0.97;
const STATUS: f64 = 0.95;
const REASON: f64 = 0.90;

/// A plain `main` (`harness = false` in Cargo.toml), so that `cargo test` always shows the
/// scores, not only when they fail.
fn main() {
    the_scorer_counts_each_value_once();
    the_parser_holds_on_real_world_bounces();
}

fn the_parser_holds_on_real_world_bounces() {
    let s = score();
    println!(
        "sisimai corpus: {} messages, {} bounced recipients labelled, {} reported, {} matched\n  \
         recall {:.3}  precision {:.3}  hard/soft {:.3}  status {:.3}  reason {:.3}\n  \
         non-bounces reported as bounces: {:?}",
        s.messages,
        s.expected,
        s.found,
        s.matched,
        s.recall(),
        s.precision(),
        s.hard(),
        s.status(),
        s.reason(),
        s.not_bounce_reported
    );
    assert_eq!(s.messages, 482, "the vendored corpus is incomplete");
    let mut failed = Vec::new();
    for (what, value, floor) in [
        ("recall", s.recall(), RECALL),
        ("precision", s.precision(), PRECISION),
        ("hard/soft agreement", s.hard(), HARD),
        ("status agreement", s.status(), STATUS),
        ("reason agreement", s.reason(), REASON),
    ] {
        if value < floor {
            failed.push(format!(
                "{what} {value:.3} fell below {floor}, issue 14's target"
            ));
        }
    }
    if !s.not_bounce_reported.is_empty() {
        failed.push(format!(
            "auto-replies, delivery reports or complaints reported as bounces: {:?}",
            s.not_bounce_reported
        ));
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

fn the_scorer_counts_each_value_once() {
    assert_eq!(multiset_agreement(&[1, 1, 2], &[1, 2, 2]), 2);
    assert_eq!(multiset_agreement(&[3], &[1]), 0);
    assert_eq!(multiset_agreement::<u8>(&[], &[1]), 0);
}
