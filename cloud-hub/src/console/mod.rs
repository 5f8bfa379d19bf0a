//! The fleet console: web pages served by the hub at `/console`, behind the API's
//! authentication, their assets embedded in the binary. The pages are static shells whose
//! scripts (ES modules, no inline script) read the JSON API (`/v1/...`) with the session
//! cookie and draw with the DOM and inline SVG; every device-supplied string goes in as text.
//!
//! # Layout
//! - [`session`]: server-side sessions and their cookie.
//! - [`assets`]: the embedded files (`assets/`) and the page shell.
//! - this file: the routes and the security headers every console response carries.
//!
//! # Routes
//! - `GET /console/login`: the login page (to anyone; it holds no data).
//! - `POST /console/login` with the operator's bearer token (`Authorization: Bearer TOKEN`; the
//!   gate checks it): a new session, its cookie set (`session::COOKIE`); 401 for anyone else.
//! - `POST /console/logout`: ends the session, clears the cookie.
//! - `GET /console` (fleet), `/console/device/{id}`, `/console/rollouts`, `/console/models`,
//!   `/console/feedback`: the page to an operator (bearer token, session cookie or operator
//!   certificate); anyone else is sent (303) to the login page.
//! - `GET /console/assets/{name}`: scripts and the style sheet (no data in them).

pub mod assets;
pub mod session;

pub use session::Sessions;

use crate::api::rights::Principal;
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;

/// The Content-Security-Policy of every console response: scripts and styles only from the
/// hub's own files (no inline script), data only from the hub, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' blob: data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
frame-ancestors 'none'";

#[derive(Debug, Clone)]
struct Console {
    sessions: Arc<Sessions>,
    secure: bool,
}

/// The console's routes (their own state); `secure` marks the cookie `Secure` (HTTPS).
pub fn routes<S: Clone + Send + Sync + 'static>(
    sessions: Arc<Sessions>,
    secure: bool,
) -> axum::Router<S> {
    axum::Router::new()
        .route("/console", get(|r: Request| page(r, assets::Page::Fleet)))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route(
            "/console/device/{id}",
            get(|r: Request| page(r, assets::Page::Device)),
        )
        .route(
            "/console/rollouts",
            get(|r: Request| page(r, assets::Page::Rollouts)),
        )
        .route(
            "/console/models",
            get(|r: Request| page(r, assets::Page::Models)),
        )
        .route(
            "/console/feedback",
            get(|r: Request| page(r, assets::Page::Feedback)),
        )
        .route("/console/assets/{name}", get(asset))
        .layer(axum::middleware::from_fn(headers))
        .with_state(Console { sessions, secure })
}

/// The operator behind a request (the gate puts the principal in its extensions).
fn operator(req: &Request) -> Option<&str> {
    match req.extensions().get::<Principal>() {
        Some(Principal::Operator(name)) => Some(name),
        _ => None,
    }
}

/// The security headers of every console response.
async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

async fn page(req: Request, page: assets::Page) -> Response {
    if operator(&req).is_some() {
        return html(assets::shell(page));
    }
    let next = req.uri().path();
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            format!("/console/login?next={}", escape_query(next)),
        )],
    )
        .into_response()
}

/// A path as a query value: unreserved characters and `/` kept, everything else
/// percent-encoded.
fn escape_query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn login_page() -> Response {
    html(assets::shell(assets::Page::Login))
}

async fn login(State(c): State<Console>, req: Request) -> Response {
    let Some(name) = operator(&req) else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(
                json!({"error": "log in with the operator token (`Authorization: Bearer TOKEN`)"}),
            ),
        )
            .into_response();
    };
    match c.sessions.create(name) {
        Ok(id) => {
            tracing::info!(operator = name, "console login");
            (
                [(
                    header::SET_COOKIE,
                    session::set_cookie(Some(&id), c.sessions.ttl_s(), c.secure),
                )],
                Json(json!({"operator": name, "expires_in_s": c.sessions.ttl_s()})),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "console session not created");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": e.to_string()})),
            )
                .into_response()
        }
    }
}

async fn logout(State(c): State<Console>, req: Request) -> Response {
    if let Some(id) = session::cookie_of(req.headers()) {
        c.sessions.remove(id);
    }
    (
        [(header::SET_COOKIE, session::set_cookie(None, 0, c.secure))],
        Json(json!({"logged_out": true})),
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match assets::get(&name) {
        Some((content_type, body)) => {
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no console asset `{name}`")})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_path_is_escaped() {
        assert_eq!(
            escape_query("/console/device/cam-01"),
            "/console/device/cam-01"
        );
        assert_eq!(
            escape_query("/console/device/a&b=c d"),
            "/console/device/a%26b%3Dc%20d"
        );
    }
}
