//! The bounce review for the admin, on the web: `GET /bounces` (the same rows as `notify bounces
//! report`, filtered by workgroup, reason and date, each contact's history with its raw
//! diagnostics, a chart of bounces per notice), `GET /bounces/contact/{id}` (one contact with the
//! raw sources of its bounces), `POST /bounces/resolve` (the `notify bounces resolve` of the
//! page), and the sign-in that guards them (`GET`/`POST /login`, `POST /logout`).
//!
//! Access needs the admin token (`NOTIFY_ADMIN_TOKEN`; without one nobody gets in): either
//! `Authorization: Bearer TOKEN` on any request, or a session cookie from the login form. The
//! cookie holds no secret: an expiry, a nonce and an HMAC-SHA256 of both under a key derived from
//! the token, so every replica that knows the token accepts it without shared state, and changing
//! the token signs everybody out. Every POST of a session carries a CSRF token (an HMAC of the
//! session under a second derived key); the login form carries a nonce that must match a cookie
//! set with the form (double submit). Requests with a bearer token need no CSRF token: a browser
//! never adds that header by itself, so a forged cross-site request cannot carry it. Secrets are
//! compared in constant time (`Mac::verify_slice`) and never logged.
//!
//! Handlers read the request and call the ledger and the store; the page models, the chart and
//! the credentials are pure functions below. Text from mail or exports is made inert
//! (`inert::line`, `inert::text` for raw sources) and then escaped by the templates' autoescape
//! (`templates/serve/*.html`).

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub use super::auth::Keys;
use super::auth::*;
use super::AppState;
use crate::bounce::{Reason, OLD_NAMES};
use crate::inert;
use crate::ledger;
use crate::review::{ReviewRow, UnverifiedRow, UNVERIFIED_HEADING};
use crate::store::{AccountEvent, BounceRow, StoredContact};

/// The session cookie set by the login form.
pub const SESSION_COOKIE: &str = "notify_session";
/// The cookie holding the login form's nonce (double-submit CSRF for `POST /login`).
pub const LOGIN_COOKIE: &str = "notify_login";
/// How long a session lasts.
pub const SESSION_SECONDS: i64 = 12 * 3600;
/// How long a login form may be left open.
const LOGIN_FORM_SECONDS: i64 = 30 * 60;
/// The longest resolution note kept (characters).
pub const NOTE_LIMIT: usize = 1000;
/// The most of a raw source the contact page shows (bytes).
pub const RAW_LIMIT: usize = 64 * 1024;
/// The most notices the chart shows (the latest).
pub const CHART_BARS: usize = 24;

/// This part's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/bounces", get(review_page))
        .route("/bounces/contact/{id}", get(contact_page))
        .route("/bounces/resolve", post(resolve))
}

// ---------------------------------------------------------------------------------------------
// Filters and the page model (pure).

/// The query string of `GET /bounces`; empty values mean "any".
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Filters {
    pub workgroup: String,
    pub reason: String,
    /// A day, `YYYY-MM-DD`.
    pub since: String,
}

/// The filters read and checked.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub workgroup: Option<String>,
    pub reason: Option<Reason>,
    pub since: Option<DateTime<Utc>>,
}

impl Filters {
    /// Check the filters; the error says which one is wrong.
    pub fn parse(&self) -> Result<Filter, String> {
        let workgroup = Some(self.workgroup.trim().to_string()).filter(|w| !w.is_empty());
        let reason = match self.reason.trim() {
            "" => None,
            // Today's names, and the names earlier versions used (links kept from then).
            r => Some(Reason::from_name(r).ok_or_else(|| {
                format!(
                    "reason `{}` is not one of {} (or an earlier name: {})",
                    inert::line(r),
                    Reason::ALL
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    OLD_NAMES
                        .iter()
                        .map(|(old, _)| *old)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?),
        };
        let since = match self.since.trim() {
            "" => None,
            s => Some(
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|t| t.and_utc())
                    .ok_or_else(|| {
                        format!("since `{}` is not a date like 2026-12-01", inert::line(s))
                    })?,
            ),
        };
        Ok(Filter {
            workgroup,
            reason,
            since,
        })
    }
}

impl Filter {
    fn is_set(&self) -> bool {
        self.workgroup.is_some() || self.reason.is_some() || self.since.is_some()
    }

    fn keeps(&self, workgroup: &str, reason: Reason) -> bool {
        self.workgroup.as_deref().is_none_or(|w| w == workgroup)
            && self.reason.is_none_or(|r| r == reason)
    }
}

/// One bar of the chart: a notice's hard and soft bounces, stacked.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Bar {
    /// The notice's campaign key, made inert (escaped by the template).
    pub label: String,
    /// The label cut to fit under the bar.
    pub short: String,
    /// The day of its first bounce.
    pub day: String,
    pub hard: usize,
    pub soft: usize,
    pub total: usize,
    pub x: i64,
    pub mid: i64,
    /// The top of the stack.
    pub top: i64,
    pub hard_y: i64,
    pub hard_h: i64,
    pub soft_y: i64,
    pub soft_h: i64,
}

/// A gridline of the chart.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Tick {
    pub y: i64,
    pub value: usize,
}

/// Bounces per notice over time, laid out for an SVG (coordinates in its user units).
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub width: i64,
    pub height: i64,
    pub left: i64,
    pub right: i64,
    /// The y of the axis.
    pub base: i64,
    pub bar_width: i64,
    pub bars: Vec<Bar>,
    pub ticks: Vec<Tick>,
    /// Older notices left out (only the latest [`CHART_BARS`] are drawn).
    pub dropped: usize,
}

const CHART_LEFT: i64 = 40;
const CHART_TOP: i64 = 20;
const CHART_PLOT: i64 = 160;
const CHART_SLOT: i64 = 44;
const CHART_BAR: i64 = 26;
const CHART_BELOW: i64 = 96;
const LABEL_CHARS: usize = 16;
/// How far right of a bar its slanted label reaches.
const CHART_LABEL_RUN: i64 = 90;

/// Lay out the chart of `bounces` (verified bounces of notices, oldest first) that pass `filter`;
/// `workgroups` maps contact ids to their workgroup. One bar per notice, in the order of their
/// first bounce, hard below soft.
pub fn chart(bounces: &[BounceRow], workgroups: &HashMap<i64, String>, filter: &Filter) -> Chart {
    let since = filter.since.map(crate::store::ts);
    let mut order: Vec<String> = Vec::new();
    let mut counts: HashMap<String, (usize, usize, String)> = HashMap::new();
    for b in bounces {
        let Some(campaign) = &b.campaign else {
            continue;
        };
        if since.as_ref().is_some_and(|s| &b.occurred_at < s) {
            continue;
        }
        let wg = b
            .contact_id
            .and_then(|id| workgroups.get(&id))
            .map(String::as_str)
            .unwrap_or("");
        if !filter.keeps(wg, b.reason) {
            continue;
        }
        let entry = counts.entry(campaign.clone()).or_insert_with(|| {
            order.push(campaign.clone());
            (
                0,
                0,
                b.occurred_at
                    .get(..10)
                    .unwrap_or(&b.occurred_at)
                    .to_string(),
            )
        });
        match b.kind {
            crate::bounce::BounceKind::Hard => entry.0 += 1,
            crate::bounce::BounceKind::Soft => entry.1 += 1,
        }
    }
    let dropped = order.len().saturating_sub(CHART_BARS);
    let shown = &order[dropped..];
    let max = shown
        .iter()
        .map(|k| counts[k].0 + counts[k].1)
        .max()
        .unwrap_or(0)
        .max(1);
    let base = CHART_TOP + CHART_PLOT;
    let height_of = |n: usize| (n as i64 * CHART_PLOT) / max as i64;
    let bars = shown
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let (hard, soft, day) = counts[key].clone();
            let x = CHART_LEFT + 10 + i as i64 * CHART_SLOT;
            let hard_h = height_of(hard);
            let total_h = height_of(hard + soft);
            let label = inert::line(key).into_owned();
            let short = if label.chars().count() > LABEL_CHARS {
                let mut s: String = label
                    .chars()
                    .skip(label.chars().count() - (LABEL_CHARS - 1))
                    .collect();
                s.insert(0, '…');
                s
            } else {
                label.clone()
            };
            Bar {
                short,
                label,
                day: inert::line(&day).into_owned(),
                hard,
                soft,
                total: hard + soft,
                x,
                mid: x + CHART_BAR / 2,
                top: base - total_h,
                hard_y: base - hard_h,
                hard_h,
                soft_y: base - total_h,
                soft_h: total_h - hard_h,
            }
        })
        .collect::<Vec<_>>();
    let mut values = vec![0, max];
    if max >= 4 {
        values.insert(1, max / 2);
    }
    let ticks = values
        .into_iter()
        .map(|v| Tick {
            y: base - height_of(v),
            value: v,
        })
        .collect();
    let right = CHART_LEFT + 10 + (bars.len().max(4) as i64) * CHART_SLOT;
    Chart {
        // Room on the right for the last label, which hangs down to the right of its bar.
        width: right + CHART_LABEL_RUN,
        height: base + CHART_BELOW,
        left: CHART_LEFT,
        right,
        base,
        bar_width: CHART_BAR,
        bars,
        ticks,
        dropped,
    }
}

/// One bounce of a contact's history as the page shows it.
#[derive(Debug, Serialize)]
struct PageBounce {
    at: String,
    kind: &'static str,
    permanent: bool,
    /// A delay warning, not a failure.
    delayed: bool,
    reason: &'static str,
    status: Option<String>,
    address: String,
    notice: String,
    matched_by: &'static str,
    origin: String,
    verified: bool,
    why: Option<String>,
    diagnostic: Option<String>,
    remote_mta: Option<String>,
    /// The raw source (contact page only), made inert, at most [`RAW_LIMIT`] bytes.
    raw: Option<String>,
    raw_clipped: bool,
}

#[derive(Debug, Serialize)]
struct PageEvent {
    at: String,
    event: String,
    note: String,
}

#[derive(Debug, Serialize, Default)]
struct PageHistory {
    events: Vec<PageEvent>,
    bounces: Vec<PageBounce>,
}

fn l(s: &str) -> String {
    inert::line(s).into_owned()
}

fn page_history(events: &[AccountEvent], bounces: &[BounceRow]) -> PageHistory {
    PageHistory {
        events: events
            .iter()
            .map(|e| PageEvent {
                at: l(&e.at),
                event: l(&e.event),
                note: l(&e.note),
            })
            .collect(),
        bounces: bounces
            .iter()
            .map(|b| PageBounce {
                at: l(&b.occurred_at),
                kind: b.kind.as_str(),
                permanent: b.permanent,
                delayed: b.delayed,
                reason: b.reason.as_str(),
                status: b.status.as_deref().map(l),
                address: l(&b.address),
                notice: l(b.campaign.as_deref().unwrap_or("-")),
                matched_by: b.matched_by.as_str(),
                origin: l(&b.origin),
                verified: b.verified,
                why: b.unverified_reason.as_deref().map(l),
                diagnostic: b.diagnostic.as_deref().map(l),
                remote_mta: b.remote_mta.as_deref().map(l),
                raw: None,
                raw_clipped: false,
            })
            .collect(),
    }
}

/// A raw source for the page: at most [`RAW_LIMIT`] bytes, lines kept, the rest made inert.
fn page_raw(bytes: &[u8]) -> (String, bool) {
    let clipped = bytes.len() > RAW_LIMIT;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(RAW_LIMIT)]);
    (inert::text(&text).into_owned(), clipped)
}

/// One flagged account as the page shows it.
#[derive(Debug, Serialize)]
struct PageRow {
    contact_id: i64,
    kind: &'static str,
    permanent: bool,
    /// The address as stored, for the resolve form (escaped by the template).
    email_raw: String,
    email: String,
    name: String,
    user_id: i64,
    workgroup: String,
    reason: &'static str,
    status: Option<String>,
    bounces: usize,
    first_seen: String,
    last_seen: String,
    notices: Vec<String>,
    diagnostic: String,
    action: String,
    in_export: bool,
    history: PageHistory,
}

/// One unverified bounce as the page shows it.
#[derive(Debug, Serialize)]
struct PageUnverified {
    contact_id: i64,
    email_raw: String,
    email: String,
    name: String,
    user_id: i64,
    workgroup: String,
    address: String,
    reason: &'static str,
    kind: &'static str,
    permanent: bool,
    status: Option<String>,
    seen: String,
    why: String,
    diagnostic: String,
    origin: String,
}

/// One complaint (a notice reported as spam) as the page shows it: never counted toward a flag.
#[derive(Debug, Serialize)]
struct PageComplaint {
    contact_id: Option<i64>,
    address: String,
    feedback_type: String,
    notice: String,
    matched_by: &'static str,
    seen: String,
    origin: String,
}

fn day(ts: &str) -> String {
    l(ts.get(..10).unwrap_or(ts))
}

fn page_row(r: &ReviewRow, contact_id: i64, history: PageHistory) -> PageRow {
    PageRow {
        contact_id,
        kind: r.kind.as_str(),
        permanent: r.permanent,
        email_raw: r.email.clone(),
        email: l(&r.email),
        name: l(&r.name),
        user_id: r.user_id,
        workgroup: l(&r.workgroup),
        reason: r.reason.as_str(),
        status: r.status.as_deref().map(l),
        bounces: r.bounces,
        first_seen: day(&r.first_seen),
        last_seen: day(&r.last_seen),
        notices: r.notices.iter().map(|n| l(n)).collect(),
        diagnostic: l(r.last_diagnostic.as_deref().unwrap_or("")),
        action: l(&r.action),
        in_export: r.in_export,
        history,
    }
}

fn page_unverified(u: &UnverifiedRow, contact_id: i64) -> PageUnverified {
    PageUnverified {
        contact_id,
        email_raw: u.email.clone(),
        email: l(&u.email),
        name: l(&u.name),
        user_id: u.user_id,
        workgroup: l(&u.workgroup),
        address: l(&u.address),
        reason: u.reason.as_str(),
        kind: u.kind.as_str(),
        permanent: u.permanent,
        status: u.status.as_deref().map(l),
        seen: day(&u.occurred_at),
        why: l(&u.why),
        diagnostic: l(u.diagnostic.as_deref().unwrap_or("")),
        origin: l(&u.origin),
    }
}

/// The reason filter's choices: every reason in the vocabulary's order, with its action.
fn reason_options() -> Vec<serde_json::Value> {
    Reason::ALL
        .iter()
        .map(|r| serde_json::json!({"name": r.as_str(), "action": r.action().text()}))
        .collect()
}

/// The four actions and what each means (the same notes as `notify bounces report`).
fn action_notes() -> Vec<serde_json::Value> {
    crate::review::ACTION_NOTES
        .iter()
        .map(|(a, means)| serde_json::json!({"action": a.text(), "means": means}))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Templates.

const TEMPLATES: [(&str, &str); 5] = [
    (
        "review_layout.html",
        include_str!("../../templates/serve/review_layout.html"),
    ),
    (
        "review_history.html",
        include_str!("../../templates/serve/review_history.html"),
    ),
    (
        "review.html",
        include_str!("../../templates/serve/review.html"),
    ),
    (
        "review_contact.html",
        include_str!("../../templates/serve/review_contact.html"),
    ),
    (
        "login.html",
        include_str!("../../templates/serve/login.html"),
    ),
];

/// The pages' templates, parsed once; autoescape is on for all of them (`.html`).
static TERA: LazyLock<Result<tera::Tera, String>> = LazyLock::new(|| {
    let mut tera = tera::Tera::default();
    tera.add_raw_templates(TEMPLATES)
        .map_err(|e| format!("{e:?}"))?;
    Ok(tera)
});

/// Render page `name` with `context`.
pub fn render(name: &str, context: &tera::Context) -> anyhow::Result<String> {
    let tera = TERA
        .as_ref()
        .map_err(|e| anyhow::anyhow!("the review templates do not parse: {e}"))?;
    tera.render(name, context)
        .map_err(|e| anyhow::anyhow!("rendering {name}: {e:?}"))
}

/// Headers of every page of the review: never cached, never framed, no scripts.
const PAGE_HEADERS: [(header::HeaderName, &str); 5] = [
    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
    (header::CACHE_CONTROL, "no-store"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

fn page(status: StatusCode, html: String) -> Response {
    let mut res = (status, html).into_response();
    for (k, v) in PAGE_HEADERS {
        res.headers_mut().insert(k, HeaderValue::from_static(v));
    }
    res
}

fn internal(e: anyhow::Error) -> Response {
    tracing::error!(error = %inert::line(&format!("{e:#}")), "review: request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CACHE_CONTROL, "no-store")],
        "500 Internal Server Error\n",
    )
        .into_response()
}

fn plain(status: StatusCode, text: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Handlers.

fn login_page(status: StatusCode, message: Option<&str>, secure: bool) -> Response {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let mut context = tera::Context::new();
    context.insert("message", &message);
    context.insert("csrf", &nonce);
    context.insert("hours", &(SESSION_SECONDS / 3600));
    let html = match render("login.html", &context) {
        Ok(h) => h,
        Err(e) => return internal(e),
    };
    let mut res = page(status, html);
    if let Ok(v) = HeaderValue::from_str(&set_cookie(
        LOGIN_COOKIE,
        &nonce,
        "/login",
        LOGIN_FORM_SECONDS,
        secure,
    )) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

async fn login_form(headers: HeaderMap) -> Response {
    login_page(StatusCode::OK, None, over_https(&headers))
}

/// The login form's fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginForm {
    pub token: String,
    pub csrf: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let secure = over_https(&headers);
    let nonce_ok = cookie(&headers, LOGIN_COOKIE)
        .is_some_and(|n| !n.is_empty() && !form.csrf.is_empty() && same(n, &form.csrf));
    if !nonce_ok {
        tracing::warn!(
            "login refused: the form's CSRF nonce is missing or does not match its cookie"
        );
        return login_page(
            StatusCode::FORBIDDEN,
            Some("The form expired or did not come from this site. Please sign in again."),
            secure,
        );
    }
    let Some(keys) = keys(&state) else {
        tracing::warn!("login refused: NOTIFY_ADMIN_TOKEN is not set, so nobody can sign in");
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("The review is closed: the server has no admin token (NOTIFY_ADMIN_TOKEN)."),
            secure,
        );
    };
    if !keys.token_matches(form.token.trim()) {
        tracing::warn!("login refused: wrong admin token");
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token."),
            secure,
        );
    }
    let session = keys.new_session(Utc::now().timestamp(), rand::random());
    tracing::info!("review: signed in with the login form");
    let mut res = (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/bounces"),
            (header::CACHE_CONTROL, "no-store"),
        ],
    )
        .into_response();
    for c in [
        set_cookie(SESSION_COOKIE, &session, "/", SESSION_SECONDS, secure),
        set_cookie(LOGIN_COOKIE, "", "/login", 0, secure),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    res
}

/// The form of a POST after sign-in: only the CSRF token matters to every one of them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResolveForm {
    pub email: String,
    pub note: String,
    pub csrf: String,
}

/// Check credentials and, for a session, the CSRF token of a POST.
fn check_post(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<Access, Box<Response>> {
    let method = Method::POST;
    let who = access(state, &method, path, headers)
        .map_err(|why| Box::new(refuse(&method, headers, why)))?;
    if let Access::Session(session) = &who {
        let ok = keys(state).is_some_and(|k| k.csrf_matches(session, csrf));
        if !ok {
            tracing::warn!(path, "review: POST refused: missing or wrong CSRF token");
            return Err(Box::new(plain(
                StatusCode::FORBIDDEN,
                "403 Forbidden: missing or wrong CSRF token; reload the page and try again\n"
                    .to_string(),
            )));
        }
    }
    Ok(who)
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<ResolveForm>,
) -> Response {
    if let Err(res) = check_post(&state, "/logout", &headers, &form.csrf) {
        return *res;
    }
    let mut res = (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login"),
            (header::CACHE_CONTROL, "no-store"),
        ],
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(
        SESSION_COOKIE,
        "",
        "/",
        0,
        over_https(&headers),
    )) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

async fn resolve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<ResolveForm>,
) -> Response {
    if let Err(res) = check_post(&state, "/bounces/resolve", &headers, &form.csrf) {
        return *res;
    }
    let email = form.email.trim();
    if email.is_empty() {
        return plain(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: no email\n".into(),
        );
    }
    let note: String = form.note.trim().chars().take(NOTE_LIMIT).collect();
    match ledger::resolve(&state.store, email, Some(&note)).await {
        Ok(Some(r)) => {
            tracing::info!(
                email = %inert::line(&r.email),
                was_flagged = r.was_flagged,
                counted = r.counted,
                "review: resolved from the review page"
            );
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/bounces"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
            )
                .into_response()
        }
        Ok(None) => plain(
            StatusCode::NOT_FOUND,
            format!(
                "404 Not Found: no contact has the address {}\n",
                inert::line(email)
            ),
        ),
        Err(e) => internal(e),
    }
}

/// The page's CSRF token and whether a session is signed in (for the sign-out button).
fn csrf_of(state: &AppState, who: &Access) -> (String, bool) {
    match who {
        Access::Session(s) => (keys(state).map(|k| k.csrf(s)).unwrap_or_default(), true),
        Access::Bearer => (String::new(), false),
    }
}

async fn review_page(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Response {
    let who = match access(&state, &method, "/bounces", &headers) {
        Ok(w) => w,
        Err(why) => return refuse(&method, &headers, why),
    };
    let filter = match filters.parse() {
        Ok(f) => f,
        Err(why) => return plain(StatusCode::BAD_REQUEST, format!("400 Bad Request: {why}\n")),
    };
    match review_html(&state, &who, &filters, &filter).await {
        Ok(html) => page(StatusCode::OK, html),
        Err(e) => internal(e),
    }
}

async fn review_html(
    state: &AppState,
    who: &Access,
    filters: &Filters,
    filter: &Filter,
) -> anyhow::Result<String> {
    let store = &state.store;
    let review = ledger::review(store, filter.since, false).await?;
    let total_rows = review.rows.len();
    let mut workgroups: BTreeSet<String> = review
        .rows
        .iter()
        .map(|r| r.workgroup.clone())
        .chain(review.unverified.iter().map(|u| u.workgroup.clone()))
        .filter(|w| !w.is_empty())
        .collect();
    if let Some(w) = &filter.workgroup {
        workgroups.insert(w.clone());
    }
    let mut rows = Vec::new();
    for r in review
        .rows
        .iter()
        .filter(|r| filter.keeps(&r.workgroup, r.reason))
    {
        let h = ledger::history(store, &r.email).await?;
        let id = h.contact.as_ref().map(|c| c.id).unwrap_or(-1);
        rows.push(page_row(r, id, page_history(&h.events, &h.bounces)));
    }
    let mut ids: HashMap<String, i64> = HashMap::new();
    let mut unverified = Vec::new();
    for u in review
        .unverified
        .iter()
        .filter(|u| filter.keeps(&u.workgroup, u.reason))
    {
        let id = match ids.get(&u.email) {
            Some(id) => *id,
            None => {
                let id = store
                    .contact_by_email(&u.email)
                    .await?
                    .map(|c| c.id)
                    .unwrap_or(-1);
                ids.insert(u.email.clone(), id);
                id
            }
        };
        unverified.push(page_unverified(u, id));
    }
    let contacts: HashMap<i64, String> = store
        .contacts(true)
        .await?
        .into_iter()
        .map(|c| (c.id, c.contact.workgroup))
        .collect();
    let chart = chart(&store.campaign_bounces().await?, &contacts, filter);
    // Complaints have no bounce reason: a reason filter leaves them out.
    let complaints: Vec<PageComplaint> = if filter.reason.is_some() {
        Vec::new()
    } else {
        store
            .complaints(filter.since)
            .await?
            .iter()
            .filter(|k| {
                let wg = k.contact_id.and_then(|id| contacts.get(&id));
                filter
                    .workgroup
                    .as_ref()
                    .is_none_or(|w| wg.is_some_and(|g| g == w))
            })
            .map(|k| PageComplaint {
                contact_id: k.contact_id,
                address: l(&k.address),
                feedback_type: l(k.feedback_type.as_deref().unwrap_or("-")),
                notice: l(k.campaign.as_deref().unwrap_or("-")),
                matched_by: k.matched_by.as_str(),
                seen: day(&k.occurred_at),
                origin: l(&k.origin),
            })
            .collect()
    };
    let (csrf, session) = csrf_of(state, who);
    let mut context = tera::Context::new();
    context.insert(
        "generated",
        &l(&Utc::now()
            .with_timezone(&state.cfg.timezone)
            .format("%A, %B %-d, %Y at %-I:%M %p %Z")
            .to_string()),
    );
    context.insert(
        "filters",
        &Filters {
            workgroup: l(filters.workgroup.trim()),
            reason: filter.reason.map(Reason::as_str).unwrap_or("").to_string(),
            since: filter
                .since
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_default(),
        },
    );
    context.insert("filtered", &filter.is_set());
    context.insert(
        "workgroups",
        &workgroups.iter().map(|w| l(w)).collect::<Vec<_>>(),
    );
    context.insert("reasons", &reason_options());
    context.insert("actions", &action_notes());
    context.insert("rows", &rows);
    context.insert("total_rows", &total_rows);
    context.insert("unverified", &unverified);
    context.insert("unverified_heading", UNVERIFIED_HEADING);
    context.insert("unmatched", &review.unmatched);
    context.insert("chart", &chart);
    context.insert("complaints", &complaints);
    context.insert("csrf", &csrf);
    context.insert("session", &session);
    context.insert("note_limit", &NOTE_LIMIT);
    context.insert("raw_limit", &RAW_LIMIT);
    render("review.html", &context)
}

async fn contact_page(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let who = match access(&state, &method, "/bounces/contact", &headers) {
        Ok(w) => w,
        Err(why) => return refuse(&method, &headers, why),
    };
    let contact = match state.store.contact_by_id(id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return plain(
                StatusCode::NOT_FOUND,
                "404 Not Found: no such contact\n".into(),
            )
        }
        Err(e) => return internal(e.into()),
    };
    match contact_html(&state, &who, &contact).await {
        Ok(html) => page(StatusCode::OK, html),
        Err(e) => internal(e),
    }
}

async fn contact_html(
    state: &AppState,
    who: &Access,
    contact: &StoredContact,
) -> anyhow::Result<String> {
    let h = ledger::history(&state.store, &contact.contact.email).await?;
    let mut history = page_history(&h.events, &h.bounces);
    for (page_bounce, b) in history.bounces.iter_mut().zip(&h.bounces) {
        let (raw, clipped) = page_raw(&ledger::raw_source(&state.store, b.id).await?);
        page_bounce.raw = Some(raw);
        page_bounce.raw_clipped = clipped;
    }
    let (csrf, session) = csrf_of(state, who);
    let c = &contact.contact;
    let mut context = tera::Context::new();
    context.insert("email_raw", &c.email);
    context.insert("email", &l(&c.email));
    context.insert("name", &l(&c.full_name()));
    context.insert("user_id", &c.user_id);
    context.insert("workgroup", &l(&c.workgroup));
    context.insert("needs_update", &contact.needs_update);
    context.insert("in_export", &contact.in_export);
    context.insert(
        "decided_by",
        &h.row.as_ref().map(|r| {
            serde_json::json!({
                "action": l(&r.action),
                "reason": r.reason.as_str(),
                "kind": r.kind.as_str(),
                "status": r.status.as_deref().map(l),
            })
        }),
    );
    context.insert("h", &history);
    context.insert("csrf", &csrf);
    context.insert("session", &session);
    context.insert("note_limit", &NOTE_LIMIT);
    context.insert("raw_limit", &RAW_LIMIT);
    render("review_contact.html", &context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounce::BounceKind;
    use crate::store::MatchedBy;

    #[test]
    fn sessions_are_signed_expire_and_belong_to_one_token() {
        let k = Keys::from_token("t0ken");
        let s = k.new_session(1_000, [7; 16]);
        assert!(!s.contains("t0ken"));
        assert_eq!(k.check_session(&s, 1_001), SessionCheck::Valid);
        assert_eq!(
            k.check_session(&s, 1_000 + SESSION_SECONDS),
            SessionCheck::Expired
        );
        // Another replica with the same token agrees; another token does not.
        assert_eq!(
            Keys::from_token("t0ken").check_session(&s, 1_001),
            SessionCheck::Valid
        );
        assert_eq!(
            Keys::from_token("other").check_session(&s, 1_001),
            SessionCheck::Forged
        );
        // A later expiry with the old signature is refused.
        let (_, rest) = s.split_once('.').unwrap();
        let moved = format!("{}.{rest}", 1_000 + 10 * SESSION_SECONDS);
        assert_eq!(k.check_session(&moved, 1_001), SessionCheck::Forged);
        for junk in ["", ".", "a.b.c", "1.2.zz", "t0ken"] {
            assert_eq!(k.check_session(junk, 0), SessionCheck::Forged, "{junk}");
        }
    }

    #[test]
    fn tokens_and_csrf_tokens_compare_exactly() {
        let k = Keys::from_token("t0ken");
        assert!(k.token_matches("t0ken"));
        for wrong in ["", "t0ke", "t0ken ", "T0KEN", "t0ken2"] {
            assert!(!k.token_matches(wrong), "{wrong:?}");
        }
        let s = k.new_session(0, [1; 16]);
        let csrf = k.csrf(&s);
        assert!(k.csrf_matches(&s, &csrf));
        assert!(!k.csrf_matches(&s, ""));
        assert!(!k.csrf_matches(&s, "zz"));
        assert!(!k.csrf_matches(&k.new_session(0, [2; 16]), &csrf));
        assert!(same("abc", "abc") && !same("abc", "abd"));
    }

    #[test]
    fn cookies_and_bearer_tokens_are_read_from_headers() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; notify_session=xyz".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "bearer  t0ken ".parse().unwrap());
        assert_eq!(bearer(&h), Some(Some("t0ken")));
        h.insert(header::AUTHORIZATION, "Basic dDA=".parse().unwrap());
        assert_eq!(bearer(&h), Some(None));
        assert!(!over_https(&h));
        h.insert("x-forwarded-proto", "HTTPS, http".parse().unwrap());
        assert!(over_https(&h));
        let c = set_cookie(SESSION_COOKIE, "v", "/", 60, true);
        assert_eq!(
            c,
            "notify_session=v; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
    }

    #[test]
    fn filters_are_checked() {
        let f = Filters {
            workgroup: " Signals ".into(),
            reason: "mailboxfull".into(),
            since: "2026-12-01".into(),
        }
        .parse()
        .unwrap();
        assert_eq!(f.workgroup.as_deref(), Some("Signals"));
        assert_eq!(f.reason, Some(Reason::MailboxFull));
        // Earlier names (links and bookmarks from before) still filter, as today's reason.
        for (old, new) in [
            ("mailbox-full", Reason::MailboxFull),
            ("user-unknown", Reason::UserUnknown),
            ("policy", Reason::PolicyViolation),
            ("other", Reason::Undefined),
            ("Filtered", Reason::Filtered),
        ] {
            let g = Filters {
                reason: old.into(),
                ..Filters::default()
            }
            .parse()
            .unwrap();
            assert_eq!(g.reason, Some(new), "{old}");
        }
        assert_eq!(f.since.unwrap().to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert!(f.keeps("Signals", Reason::MailboxFull));
        assert!(!f.keeps("Signals", Reason::UserUnknown));
        assert!(!Filters::default().parse().unwrap().is_set());
        let bad = Filters {
            reason: "<b>".into(),
            ..Filters::default()
        };
        let err = bad.parse().unwrap_err();
        assert!(
            err.contains("is not one of userunknown, hostunknown"),
            "{err}"
        );
        assert!(err.contains("or an earlier name: user-unknown"), "{err}");
        let bad = Filters {
            since: "yesterday".into(),
            ..Filters::default()
        };
        assert!(bad.parse().unwrap_err().contains("not a date"));
    }

    fn b(id: i64, campaign: &str, kind: BounceKind, at: &str, contact: i64) -> BounceRow {
        BounceRow {
            id,
            address: format!("c{contact}@example.org"),
            kind,
            permanent: kind == BounceKind::Hard,
            delayed: false,
            status: None,
            reason: if kind == BounceKind::Hard {
                Reason::UserUnknown
            } else {
                Reason::MailboxFull
            },
            diagnostic: None,
            remote_mta: None,
            contact_id: Some(contact),
            campaign: Some(campaign.into()),
            matched_by: MatchedBy::Verp,
            origin: "x".into(),
            occurred_at: at.into(),
            verified: true,
            unverified_reason: None,
        }
    }

    #[test]
    fn the_chart_stacks_bounces_per_notice_in_time_order_and_filters() {
        let rows = [
            b(
                1,
                "release-notes/v3.11.0",
                BounceKind::Hard,
                "2026-10-01T10:00:00Z",
                1,
            ),
            b(
                2,
                "release-notes/v3.11.0",
                BounceKind::Soft,
                "2026-10-01T11:00:00Z",
                2,
            ),
            b(
                3,
                "release-notes/v3.12.0",
                BounceKind::Hard,
                "2026-12-03T10:00:00Z",
                1,
            ),
            b(
                4,
                "release-notes/v3.11.0",
                BounceKind::Hard,
                "2026-12-04T10:00:00Z",
                2,
            ),
            b(
                5,
                "<script>\u{1b}",
                BounceKind::Soft,
                "2026-12-05T10:00:00Z",
                2,
            ),
        ];
        let wg: HashMap<i64, String> =
            [(1, "Signals".to_string()), (2, "Parking".to_string())].into();
        let c = chart(&rows, &wg, &Filter::default());
        assert_eq!(c.bars.len(), 3);
        let first = &c.bars[0];
        assert_eq!(
            (
                first.label.as_str(),
                first.hard,
                first.soft,
                first.day.as_str()
            ),
            ("release-notes/v3.11.0", 2, 1, "2026-10-01")
        );
        // The tallest bar fills the plot; hard sits on the axis, soft on top of it.
        assert_eq!(first.top, CHART_TOP);
        assert_eq!(first.hard_y + first.hard_h, c.base);
        assert_eq!(first.soft_y + first.soft_h, first.hard_y);
        assert!(c.bars[1].x > first.x);
        assert_eq!(
            c.bars[2].label, "<script>\\x1b",
            "inert; the template escapes it"
        );
        assert_eq!(c.ticks.first().unwrap().value, 0);
        assert_eq!(c.ticks.last().unwrap().value, 3);

        let f = Filter {
            workgroup: Some("Signals".into()),
            ..Filter::default()
        };
        let c = chart(&rows, &wg, &f);
        assert_eq!(
            c.bars
                .iter()
                .map(|b| (b.label.as_str(), b.total))
                .collect::<Vec<_>>(),
            [("release-notes/v3.11.0", 1), ("release-notes/v3.12.0", 1)]
        );
        let f = Filters {
            since: "2026-12-04".into(),
            reason: "user-unknown".into(),
            ..Filters::default()
        }
        .parse()
        .unwrap();
        let c = chart(&rows, &wg, &f);
        assert_eq!(c.bars.len(), 1);
        assert_eq!((c.bars[0].hard, c.bars[0].day.as_str()), (1, "2026-12-04"));
        assert!(chart(&[], &wg, &Filter::default()).bars.is_empty());

        let many: Vec<BounceRow> = (0..30)
            .map(|i| {
                b(
                    i,
                    &format!("n{i:02}"),
                    BounceKind::Hard,
                    "2026-12-01T00:00:00Z",
                    1,
                )
            })
            .collect();
        let c = chart(&many, &wg, &Filter::default());
        assert_eq!((c.bars.len(), c.dropped), (CHART_BARS, 30 - CHART_BARS));
        assert_eq!(c.bars[0].label, "n06");
    }

    #[test]
    fn raw_sources_are_clipped_and_made_inert() {
        let (raw, clipped) = page_raw(b"Subject: x\r\nDiag: \x1b[2J<b>\r\n");
        assert_eq!(raw, "Subject: x\nDiag: \\x1b[2J<b>\n");
        assert!(!clipped);
        let big = vec![b'a'; RAW_LIMIT + 5];
        let (raw, clipped) = page_raw(&big);
        assert!(clipped && raw.len() == RAW_LIMIT);
    }

    #[test]
    fn every_template_parses_and_the_login_page_escapes_its_message() {
        let mut c = tera::Context::new();
        c.insert("message", &Some("<script>x</script>"));
        c.insert("csrf", "n\"once");
        c.insert("hours", &12);
        let html = render("login.html", &c).unwrap();
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert!(html.contains("name=\"csrf\" value=\"n&quot;once\""));
        assert!(html.contains("<meta name=\"viewport\""));
    }
}
