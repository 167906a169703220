//! Routes of `notify serve` (being built; see the module list in `serve`).

use axum::Router;

use super::AppState;

/// This part's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
}

/// Write the archive's pages and feed into `dir`; how many files.
pub fn build(_cfg: &crate::config::Config, _dir: &std::path::Path) -> anyhow::Result<usize> {
    anyhow::bail!("the archive is not built yet")
}
