//! `notify checklist VERSION` and `notify release status VERSION`: read the arguments, ask the
//! party service for the release's facts, print the checklist (from `templates/checklist.md`
//! when the templates folder has one, else the built-in one) or the timeline.

use crate::cli::SummaryFormat;
use crate::config::Config;
use crate::errors::UsageError;
use crate::party::{self, checklist, timeline};
use crate::release::Version;
use crate::store::Store;

fn version(given: &str) -> anyhow::Result<Version> {
    Ok(Version::parse(given).ok_or_else(|| {
        UsageError(format!(
            "`{}` is not a version (expected something like v3.12.0, 3.12.0 or v3.12)",
            crate::inert::line(given)
        ))
    })?)
}

async fn facts(cfg: &Config, v: Version) -> anyhow::Result<party::facts::ReleaseFacts> {
    let store = Store::open(&cfg.database_url).await?;
    let facts = party::facts(&store, cfg, v).await;
    store.close().await;
    facts
}

/// Print the checklist of `given`.
pub async fn checklist(
    cfg: &Config,
    given: &str,
    staging: Option<String>,
    production: Option<String>,
) -> anyhow::Result<()> {
    let v = version(given)?;
    let path = cfg.templates.join("checklist.md");
    let (template, from) = match std::fs::read_to_string(&path) {
        Ok(t) => (t, path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            checklist::DEFAULT_TEMPLATE.to_string(),
            "the built-in checklist".to_string(),
        ),
        Err(e) => return Err(UsageError(format!("cannot read {}: {e}", path.display())).into()),
    };
    let facts = facts(cfg, v).await?;
    let given_or = |flag: Option<String>, key: &str| {
        flag.or_else(|| (!key.is_empty()).then(|| key.to_string()))
    };
    let options = checklist::ChecklistOptions {
        timezone: cfg.timezone,
        graphql_engine_staging: given_or(staging, &cfg.graphql_engine_staging),
        graphql_engine_production: given_or(production, &cfg.graphql_engine_production),
    };
    let text = checklist::render(&template, &facts, &options)
        .map_err(|e| UsageError(format!("{from}: {e}")))?;
    say!("{}", text.trim_end());
    Ok(())
}

/// Print the timeline of `given`.
pub async fn status(cfg: &Config, given: &str, format: SummaryFormat) -> anyhow::Result<()> {
    let v = version(given)?;
    let facts = facts(cfg, v).await?;
    match format {
        SummaryFormat::Json => say!("{}", crate::review::json_text(&timeline::json(&facts))?),
        SummaryFormat::Text => say!("{}", timeline::text(&facts, cfg.timezone).trim_end()),
    }
    Ok(())
}
