//! The review's credentials (pure): the keys derived from the admin token, the signed session
//! cookie, CSRF tokens, the login nonce, reading `Authorization: Bearer` and cookies, and what a
//! request without valid credentials gets (303 to the login form, or 401). Split from `review`,
//! which owns the pages; nothing here touches the database.

use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::review::{SESSION_COOKIE, SESSION_SECONDS};
use super::AppState;
use crate::inert;

pub(super) type HmacSha256 = Hmac<Sha256>;
// ---------------------------------------------------------------------------------------------
// Credentials (pure).

pub(super) fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m
}

pub(super) fn digest(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    mac(key, parts).finalize().into_bytes().into()
}

/// The keys derived from the admin token: one signs sessions, one makes CSRF tokens, one
/// compares a presented token with the real one.
pub struct Keys {
    session: [u8; 32],
    csrf: [u8; 32],
    token: [u8; 32],
}

/// What a session cookie turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCheck {
    Valid,
    /// Signed by us, but too old.
    Expired,
    /// Not signed with this token's key: made up, tampered with, or from before a token change.
    Forged,
}

impl Keys {
    /// The keys for this admin token.
    pub fn from_token(token: &str) -> Keys {
        let t = token.as_bytes();
        Keys {
            session: digest(t, &[b"notify serve: review session key v1"]),
            csrf: digest(t, &[b"notify serve: review CSRF key v1"]),
            // Compared as a MAC of the presented token, so the comparison takes the same time
            // whatever the presented token's length or content.
            token: digest(b"notify serve: admin token check v1", &[t]),
        }
    }

    /// Whether `given` is the admin token (constant time).
    pub fn token_matches(&self, given: &str) -> bool {
        mac(b"notify serve: admin token check v1", &[given.as_bytes()])
            .verify_slice(&self.token)
            .is_ok()
    }

    /// A new session cookie value, valid until `now + SESSION_SECONDS`.
    pub fn new_session(&self, now: i64, nonce: [u8; 16]) -> String {
        let body = format!("{}.{}", now + SESSION_SECONDS, hex::encode(nonce));
        let sig = hex::encode(digest(&self.session, &[body.as_bytes()]));
        format!("{body}.{sig}")
    }

    /// Whether `value` is a session cookie of ours that is still valid at `now`.
    pub fn check_session(&self, value: &str, now: i64) -> SessionCheck {
        let Some((body, sig)) = value.rsplit_once('.') else {
            return SessionCheck::Forged;
        };
        let Ok(sig) = hex::decode(sig) else {
            return SessionCheck::Forged;
        };
        if mac(&self.session, &[body.as_bytes()])
            .verify_slice(&sig)
            .is_err()
        {
            return SessionCheck::Forged;
        }
        match body
            .split_once('.')
            .and_then(|(e, _)| e.parse::<i64>().ok())
        {
            Some(expiry) if now < expiry => SessionCheck::Valid,
            Some(_) => SessionCheck::Expired,
            None => SessionCheck::Forged,
        }
    }

    /// The CSRF token of a session.
    pub fn csrf(&self, session: &str) -> String {
        hex::encode(digest(&self.csrf, &[session.as_bytes()]))
    }

    /// Whether `given` is the CSRF token of `session` (constant time).
    pub fn csrf_matches(&self, session: &str, given: &str) -> bool {
        let Ok(given) = hex::decode(given.trim()) else {
            return false;
        };
        mac(&self.csrf, &[session.as_bytes()])
            .verify_slice(&given)
            .is_ok()
    }
}

/// Whether two public values are equal, in constant time (the login nonce).
pub(super) fn same(a: &str, b: &str) -> bool {
    mac(b"notify serve: compare", &[a.as_bytes()])
        .verify_slice(&digest(b"notify serve: compare", &[b.as_bytes()]))
        .is_ok()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The token of an `Authorization: Bearer TOKEN` header: `None` without the header,
/// `Some(None)` for another scheme or a malformed value.
pub(super) fn bearer(headers: &HeaderMap) -> Option<Option<&str>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim())
            .filter(|t| !t.is_empty())
    });
    Some(token)
}

/// Whether the request reached the proxy in front of us over HTTPS.
pub(super) fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Secure over HTTPS.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// How a request proved it may see the review.
pub(super) enum Access {
    /// `Authorization: Bearer` with the admin token.
    Bearer,
    /// A valid session cookie (its value).
    Session(String),
}

/// Why a request may not.
pub(super) enum Refusal {
    /// No credentials (or an expired session).
    Missing,
    /// A session cookie that is not ours: the browser is sent to sign in again.
    BadSession,
    /// A wrong bearer token, or one when no admin token is set.
    WrongToken,
}

pub(super) fn keys(state: &AppState) -> Option<Keys> {
    state.admin_token.as_deref().map(Keys::from_token)
}

pub(super) fn access(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<Access, Refusal> {
    let keys = keys(state);
    if let Some(given) = bearer(headers) {
        return match (&keys, given) {
            (Some(k), Some(t)) if k.token_matches(t) => Ok(Access::Bearer),
            (None, _) => {
                tracing::warn!(%method, path = %inert::line(path), "review refused: a bearer token was given, but NOTIFY_ADMIN_TOKEN is not set");
                Err(Refusal::WrongToken)
            }
            _ => {
                tracing::warn!(%method, path = %inert::line(path), "review refused: wrong or malformed bearer token");
                Err(Refusal::WrongToken)
            }
        };
    }
    let Some(value) = cookie(headers, SESSION_COOKIE) else {
        return Err(Refusal::Missing);
    };
    let Some(keys) = keys else {
        return Err(Refusal::BadSession);
    };
    match keys.check_session(value, Utc::now().timestamp()) {
        SessionCheck::Valid => Ok(Access::Session(value.to_string())),
        SessionCheck::Expired => Err(Refusal::Missing),
        SessionCheck::Forged => {
            tracing::warn!(%method, path = %inert::line(path), "review refused: a session cookie not signed with the admin token's key");
            Err(Refusal::BadSession)
        }
    }
}

/// What a request without valid credentials gets: a browser asking for a page is sent to the
/// login form (303), anything else is answered 401.
pub(super) fn refuse(method: &Method, headers: &HeaderMap, why: Refusal) -> Response {
    let wants_page = (method == Method::GET || method == Method::HEAD)
        && headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    if wants_page && !matches!(why, Refusal::WrongToken) {
        return (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/login"),
                (header::CACHE_CONTROL, "no-store"),
            ],
        )
            .into_response();
    }
    let (error, text) = match why {
        Refusal::WrongToken => (
            "Bearer realm=\"notify\", error=\"invalid_token\"",
            "401 Unauthorized: wrong token\n",
        ),
        _ => (
            "Bearer realm=\"notify\"",
            "401 Unauthorized: the review needs the admin token (Authorization: Bearer, or sign in at /login)\n",
        ),
    };
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, error),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}
