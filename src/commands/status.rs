//! `notify status [CAMPAIGN]`: where each notice stands.

use crate::cli::SummaryFormat;
use crate::config::Config;
use crate::errors::UsageError;
use crate::store::{CampaignStatus, Store};

pub async fn run(
    cfg: &Config,
    campaign: Option<&str>,
    format: SummaryFormat,
) -> anyhow::Result<()> {
    if let Some(key) = campaign {
        crate::notice::check_campaign_key(key).map_err(|why| {
            UsageError(format!("campaign key `{}` {why}", crate::inert::line(key)))
        })?;
    }
    let store = Store::open(&cfg.database_url).await?;
    let keys = match campaign {
        Some(k) => vec![k.to_string()],
        None => store.campaign_keys().await?,
    };
    let mut all = Vec::new();
    for key in &keys {
        let Some(c) = store.find_campaign(key).await? else {
            let known = store.campaign_keys().await?;
            store.close().await;
            return Err(UsageError(format!(
                "no campaign `{key}`; known: {}",
                if known.is_empty() {
                    "none yet".to_string()
                } else {
                    known.join(", ")
                }
            ))
            .into());
        };
        all.push(store.campaign_status(&c).await?);
    }
    store.close().await;
    match (format, campaign) {
        (SummaryFormat::Json, Some(_)) => say!("{}", serde_json::to_string_pretty(&all[0])?),
        (SummaryFormat::Json, None) => say!("{}", serde_json::to_string_pretty(&all)?),
        (SummaryFormat::Text, Some(_)) => print_one(&all[0]),
        (SummaryFormat::Text, None) => {
            if all.is_empty() {
                say!("no notices sent yet");
            }
            for s in &all {
                say!(
                    "{:<40} {}",
                    s.campaign,
                    s.states
                        .iter()
                        .map(|(k, v)| format!("{v} {k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    Ok(())
}

fn print_one(s: &CampaignStatus) {
    say!("{}  ({})", s.campaign, s.subject);
    say!("  created     {}", s.created_at);
    for (state, n) in &s.states {
        say!("  {state:<11} {n}");
    }
    say!("  total       {}", s.total);
    if let Some(f) = &s.first_sent_at {
        say!("  first sent  {f}");
    }
    if let Some(l) = &s.last_sent_at {
        say!("  last sent   {l}");
    }
    for (title, reasons) in [
        ("deferred", &s.deferred_reasons),
        ("failed", &s.failed_reasons),
    ] {
        if !reasons.is_empty() {
            say!("  {title} because:");
            for (why, n) in reasons {
                say!("    {n:>5}  {why}");
            }
        }
    }
    for w in &s.workers {
        say!(
            "  running: pid {} on {} since {} (heartbeat {})",
            w.pid,
            w.host,
            w.started_at,
            w.heartbeat_at
        );
    }
}
