//! `notify serve`: the HTTP face of the same library the CLI uses, on the same database. It owns
//! the server (bind, graceful shutdown on SIGTERM/SIGINT, request body limit, timeouts, one log
//! line per request), `GET /healthz`, and the composition of the routes of its parts:
//! - [`archive`]: the release-notes archive and its Atom feed (`/releases...`);
//! - [`review`]: the bounce review for the admin (`/bounces...`, `/login`), behind the admin token;
//! - [`ses`]: Amazon SES notifications over SNS (`POST /webhooks/ses`).
//!
//! Handlers call the services (`ledger`, `party`, the archive) and never a command.

pub mod archive;
pub mod auth;
pub mod review;
pub mod ses;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::config::Config;
use crate::store::Store;

/// Largest request body accepted (an SNS message is at most 256 KB; forms are small).
pub const BODY_LIMIT: usize = 512 * 1024;
/// How long one request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub cfg: Arc<Config>,
    pub store: Store,
    /// `NOTIFY_ADMIN_TOKEN`: the review needs it; without one the review is closed to everyone.
    pub admin_token: Option<Arc<str>>,
    /// SNS verification state (certificate cache, topics).
    pub ses: Arc<ses::SesState>,
}

impl AppState {
    /// The state for `cfg` on an open `store`, with the admin token as given.
    pub fn new(cfg: Config, store: Store, admin_token: Option<String>) -> anyhow::Result<AppState> {
        let ses = Arc::new(ses::SesState::new(&cfg)?);
        Ok(AppState {
            cfg: Arc::new(cfg),
            store,
            admin_token: admin_token.filter(|t| !t.is_empty()).map(Arc::from),
            ses,
        })
    }
}

/// Every route, with the limits and the request log around them.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .merge(archive::routes())
        .merge(review::routes())
        .merge(ses::routes())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %crate::inert::line(req.uri().path()),
                    )
                })
                .on_response(
                    |res: &axum::http::Response<_>, latency: Duration, _span: &tracing::Span| {
                        tracing::info!(
                            status = res.status().as_u16(),
                            ms = latency.as_millis() as u64,
                            "served"
                        );
                    },
                ),
        )
        .with_state(state)
}

/// 200 when the database answers, 503 when it does not.
async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n"),
        Err(e) => {
            tracing::warn!(error = %e, "health check: the database does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
    }
}

/// Serve on `bind` until SIGTERM or SIGINT; requests under way are finished first. `ready` is
/// told the address actually bound (port 0 picks a free one).
pub async fn run(
    state: AppState,
    bind: SocketAddr,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    ready(listener.local_addr()?);
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing the requests under way");
}
