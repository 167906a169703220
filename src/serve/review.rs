//! Routes of `notify serve` (being built; see the module list in `serve`).

use axum::Router;

use super::AppState;

/// This part's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
}
