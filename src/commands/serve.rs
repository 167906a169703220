//! `notify serve` and `notify archive build DIR`: read the arguments, open the database, start
//! the server (or write the archive), print where.

use std::path::Path;

use crate::config::Config;
use crate::serve::{self, AppState};
use crate::store::Store;

/// Serve until SIGTERM or SIGINT.
pub async fn serve(cfg: &Config, bind: std::net::SocketAddr) -> anyhow::Result<()> {
    let store = Store::open(&cfg.database_url).await?;
    let token = std::env::var("NOTIFY_ADMIN_TOKEN").ok();
    if token.as_deref().is_none_or(str::is_empty) {
        eprintln!(
            "warning: NOTIFY_ADMIN_TOKEN is not set: the bounce review is closed to everyone"
        );
    }
    let state = AppState::new(cfg.clone(), store.clone(), token)?;
    let result = serve::run(state, bind, |addr| {
        eprintln!("notify serve: listening on http://{addr}");
    })
    .await;
    store.close().await;
    result
}

/// Write the archive into `dir`.
pub async fn archive_build(cfg: &Config, dir: &Path) -> anyhow::Result<()> {
    let written = serve::archive::build(cfg, dir)?;
    say!(
        "wrote {written} file(s) of the release-notes archive to {}",
        dir.display()
    );
    Ok(())
}
