//! `POST /webhooks/ses` (being built; see the module list in `serve`).

use axum::Router;

use super::AppState;
use crate::config::Config;

/// SNS verification state shared by the handlers.
pub struct SesState {}

impl SesState {
    pub fn new(_cfg: &Config) -> anyhow::Result<SesState> {
        Ok(SesState {})
    }
}

/// This part's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
}
