//! `notify <notice> [--dry-run|--to ADDR|--resend|--retry-failed|…]`: reads the arguments, asks
//! the delivery service ([`crate::delivery`]) to deliver the notice, and prints what it reports:
//! the contacts sync line, notes, a progress bar on standard error, and the summary.

use std::sync::{Arc, Mutex};

use crate::cli::{SendArgs, SummaryFormat};
use crate::config::Config;
use crate::delivery::{self, CopyOutcome, Event, Mode, Outcome, Request, Summary, SummaryMode};
use crate::notice::Notice;

/// Send `notice` as `args` says.
pub async fn run(cfg: &Config, notice: Notice, args: SendArgs) -> anyhow::Result<()> {
    let format = args.format;
    let mode = match (args.to, args.dry_run) {
        (Some(to), dry_run) => Mode::OneCopy { to, dry_run },
        (None, true) => Mode::DryRun,
        (None, false) => Mode::Deliver,
    };
    let request = Request {
        audience: args.audience,
        campaign: args.campaign,
        mode,
        resend: args.resend,
        retry_failed: args.retry_failed,
        allow_removals: args.allow_removals,
        preview: args.preview,
    };
    let bar: Arc<Mutex<Option<indicatif::ProgressBar>>> = Arc::default();
    let report: delivery::Reporter = {
        let bar = bar.clone();
        Arc::new(move |event| show(event, format, &bar))
    };
    let outcome = delivery::run(cfg, notice, request, report).await;
    // A run that failed midway leaves its bar as it was.
    drop(bar);
    match outcome? {
        Outcome::OneCopy { to, copy } => {
            match copy {
                CopyOutcome::Rendered => {
                    say!("dry run: rendered one copy for {to}; nothing sent")
                }
                CopyOutcome::Written(target) => say!("wrote one copy for {to} to {target}"),
                CopyOutcome::Sent(target) => {
                    say!("sent one copy to {to} via {target} (not recorded)")
                }
            }
            Ok(())
        }
        Outcome::Run {
            summary,
            unfinished,
        } => {
            let verb = match summary.mode {
                SummaryMode::DryRun => "would send",
                SummaryMode::Outbox => "written",
                SummaryMode::Smtp => "sent",
            };
            print_summary(&summary, format, verb)?;
            if summary.mode == SummaryMode::Outbox && format == SummaryFormat::Text {
                say!(
                    "messages were written to {} and not sent: no smtp_url is configured. To deliver them, set smtp_url in notify.toml or NOTIFY_SMTP_URL=smtp://host:port and run the same command again.",
                    summary.target
                );
            }
            match unfinished {
                Some(left) => Err(left.into()),
                None => Ok(()),
            }
        }
    }
}

/// Show one report of the service: the contacts line on standard output (standard error with
/// `--format json`, so that standard output stays one JSON object), notes on standard error,
/// the progress bar on standard error.
fn show(event: Event, format: SummaryFormat, bar: &Mutex<Option<indicatif::ProgressBar>>) {
    match event {
        Event::Contacts(line) => match format {
            SummaryFormat::Text => say!("{line}"),
            SummaryFormat::Json => eprintln!("{line}"),
        },
        Event::Requeued(n) => {
            eprintln!("--retry-failed: {n} recipient(s) the server had refused are queued again")
        }
        Event::BudgetShort(note) => eprintln!("note: {note}"),
        Event::Started(len) => {
            if let Ok(mut b) = bar.lock() {
                *b = Some(progress_bar(len));
            }
        }
        Event::Done => {
            if let Ok(b) = bar.lock() {
                if let Some(b) = b.as_ref() {
                    b.inc(1);
                }
            }
        }
        Event::Finished => {
            if let Ok(b) = bar.lock() {
                if let Some(b) = b.as_ref() {
                    b.finish_and_clear();
                }
            }
        }
    }
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {pos}/{len} {wide_bar} {per_sec} eta {eta}",
    ) {
        pb.set_style(style);
    }
    pb
}

fn print_summary(s: &Summary, format: SummaryFormat, verb: &str) -> anyhow::Result<()> {
    match format {
        SummaryFormat::Json => say!("{}", serde_json::to_string(s)?),
        SummaryFormat::Text => {
            let done = match s.mode {
                SummaryMode::Outbox => s.written,
                SummaryMode::Smtp => s.sent,
                SummaryMode::DryRun => s.pending,
            };
            let target = if s.target.is_empty() {
                String::new()
            } else {
                format!(" via {}", s.target)
            };
            let pending = if s.mode == SummaryMode::DryRun {
                0
            } else {
                s.pending
            };
            let already = if s.mode == SummaryMode::Outbox {
                "already written"
            } else {
                "already sent"
            };
            say!(
                "{} to {}{}: {} {}, {} {}, {} skipped, {} failed, {} pending",
                s.campaign,
                s.audience,
                target,
                done,
                verb,
                s.already_sent,
                already,
                s.skipped,
                s.failed,
                pending
            );
            if s.in_progress_elsewhere > 0 {
                say!(
                    "{} more are being sent right now by another run",
                    s.in_progress_elsewhere
                );
            }
        }
    }
    Ok(())
}
