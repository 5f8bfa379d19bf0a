//! The gate in front of every route of the hub's HTTP API, in this order: the `Host` the
//! client was sent to (421 unless allowed: DNS rebinding), a foreign `Origin` (403: a web
//! page), the caller's principal (a bearer token, else the client certificate's role; 401 for
//! a wrong token), its rights ([`super::rights`]: 401 without credentials, 403 for a device),
//! and JSON bodies on JSON routes (415: a browser's cross-site "simple request"). The
//! principal goes on with the request (an extension) for the handlers that need it (the
//! console's).

use super::auth::{Tokens, bearer};
use super::rights::{Principal, RouteClass, allows};
use crate::pki::role::{CertRole, cert_role};
use axum::Json;
use axum::body::HttpBody;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The header every state-changing request made with the console's session cookie carries
/// (any value): a cross-site page cannot set it without a CORS preflight, which the hub never
/// grants; with `SameSite=Strict` and the `Origin` check it keeps the cookie from being used
/// by another site.
pub const CSRF_HEADER: &str = "x-tandem-console";

/// What a connection proved at its TLS handshake: the role of its client certificate. The
/// HTTPS handshake ([`super::https`]) hands it to every request of the connection as connect
/// info; plain HTTP has none.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    role: Option<CertRole>,
}

impl Peer {
    /// The peer of a verified certificate chain (the leaf's role, [`cert_role`]).
    pub fn of(chain: Option<&[rustls_pki_types::CertificateDer<'_>]>) -> Self {
        Self {
            role: chain.and_then(cert_role),
        }
    }

    /// The role its certificate names, if any.
    pub fn role(&self) -> Option<&CertRole> {
        self.role.as_ref()
    }
}

/// The `Host` names a request may carry: the configured names (`http.allowed_hosts`), the
/// names in the hub's certificate (`tandem-hub init --name`), `localhost` and loopback
/// addresses, the listen address, and any IP address when the hub listens on all of
/// them. An IP address cannot be rebound; a name can.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    names: Vec<String>,
    ips: Vec<IpAddr>,
    any_ip: bool,
}

impl HostPolicy {
    /// The policy of a listener on `listen` with the configured names.
    pub fn new(allowed: &[String], listen: SocketAddr) -> Self {
        let mut ips = Vec::new();
        let mut names = vec!["localhost".to_string()];
        for a in allowed {
            let a = a.trim().trim_end_matches('.').to_ascii_lowercase();
            match host_of(&a).parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => names.push(a),
            }
        }
        ips.push(listen.ip());
        Self {
            names,
            ips,
            any_ip: listen.ip().is_unspecified(),
        }
    }

    /// Whether a `Host` header value (a host with an optional port) is allowed.
    pub fn allows(&self, authority: &str) -> bool {
        let host = host_of(authority)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        match host.parse::<IpAddr>() {
            Ok(ip) => self.any_ip || ip.is_loopback() || self.ips.contains(&ip),
            Err(_) => self.names.contains(&host),
        }
    }
}

/// The DNS names of the hub's certificate (`hub.pem` in the PKI folder; none when it is
/// missing or unreadable: the configured names still apply).
pub fn hub_cert_names(pki: &std::path::Path) -> Vec<String> {
    use rustls_pki_types::pem::PemObject;
    let Ok(der) = rustls_pki_types::CertificateDer::from_pem_file(pki.join("hub.pem")) else {
        return Vec::new();
    };
    webpki::EndEntityCert::try_from(&der)
        .map(|c| c.valid_dns_names().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The host part of an authority: `[::1]:80` → `::1`, `name:80` → `name`.
fn host_of(authority: &str) -> &str {
    let a = authority.trim();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match a.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => a,
    }
}

/// The gate's settings.
#[derive(Debug)]
pub struct Gate {
    /// Operator bearer tokens.
    pub tokens: Option<Tokens>,
    /// Whether the API is open (plain HTTP, no `http.bearer_token_file`: loopback).
    pub open: bool,
    /// The allowed `Host` values.
    pub hosts: HostPolicy,
    /// The console's sessions (their cookie is an operator's credential).
    pub sessions: Arc<crate::console::Sessions>,
    /// Whether the API is HTTPS (the session cookie is then `Secure`).
    pub tls: bool,
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn unauthorized(message: &str, challenge: &'static str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// Middleware: the checks of this module, in order; the request goes on only past all of them.
pub async fn check(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let headers = req.headers();
    let host = headers.get(header::HOST).map(|h| h.to_str().unwrap_or(""));
    if let Some(h) = host.filter(|h| !gate.hosts.allows(h)) {
        tracing::info!(host = h, path, "HTTP request for a foreign Host refused");
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host `{h}` is not this hub's: add it to http.allowed_hosts if clients reach the hub by that name"
            ),
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .is_some_and(|(_, authority)| host.is_some_and(|h| h.eq_ignore_ascii_case(authority)));
        if !same {
            tracing::info!(origin = ?origin, path, "cross-origin HTTP request refused");
            return refuse(
                StatusCode::FORBIDDEN,
                "cross-origin requests are refused (Origin is not this hub)".into(),
            );
        }
    }
    let Some((who, by_cookie)) =
        principal(&gate, headers, req.extensions().get::<ConnectInfo<Peer>>())
    else {
        tracing::debug!(path, "invalid bearer token");
        return unauthorized(
            "invalid bearer token",
            "Bearer realm=\"tandem-hub\", error=\"invalid_token\"",
        );
    };
    let reads = req.method() == Method::GET || req.method() == Method::HEAD;
    if by_cookie && !reads && !headers.contains_key(CSRF_HEADER) {
        tracing::info!(
            path,
            "state-changing request with the console cookie and no CSRF header refused"
        );
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "a request that changes state with the console's session cookie needs the `{CSRF_HEADER}` header (cross-site request forgery protection)"
            ),
        );
    }
    let class = RouteClass::of(req.method(), &path);
    if !allows(&who, class, gate.open) {
        return match who {
            Principal::Device(device) => {
                tracing::warn!(device, path, method = %req.method(), "a device called an operator route: refused");
                refuse(
                    StatusCode::FORBIDDEN,
                    format!("device `{device}` may not call this route: it needs an operator"),
                )
            }
            _ => unauthorized(
                "this route needs operator credentials: a bearer token (`Authorization: Bearer TOKEN`, from the hub's pki/operator.token or http.bearer_token_file) or an operator certificate (`tandem-hub operator add`)",
                "Bearer realm=\"tandem-hub\"",
            ),
        };
    }
    if let Some(r) = refuse_body(class, req.method(), headers, req.body().size_hint().exact()) {
        return r;
    }
    let mut req = req;
    req.extensions_mut().insert(who);
    next.run(req).await
}

/// The caller, and whether the session cookie made it: an operator by bearer token, else by a
/// live console session, else the certificate's role, else anonymous; `None` for a token
/// that is not one of ours. (An expired or unknown session cookie is no credential: the
/// certificate's role, or anonymous.)
fn principal(
    gate: &Gate,
    headers: &HeaderMap,
    peer: Option<&ConnectInfo<Peer>>,
) -> Option<(Principal, bool)> {
    if let Some(t) = bearer(headers) {
        let ours = gate.tokens.as_ref().is_some_and(|tokens| tokens.accepts(t));
        return ours.then(|| (Principal::Operator("token".into()), false));
    }
    if let Some(name) =
        crate::console::session::cookie_of(headers).and_then(|id| gate.sessions.operator(id))
    {
        return Some((Principal::Operator(name), true));
    }
    Some((
        match peer.and_then(|p| p.0.role.clone()) {
            Some(CertRole::Operator(name)) => Principal::Operator(name),
            Some(CertRole::Device(name)) => Principal::Device(name),
            // A subscriber reads the broker's topics; the API sees no credentials in its
            // certificate.
            Some(CertRole::Subscriber(_)) | None => Principal::Anonymous,
        },
        false,
    ))
}

/// 415 for a body a route does not take: anything but JSON on JSON routes (a body without a
/// type too), and the types of a browser's cross-site "simple request" on inference.
fn refuse_body(
    class: RouteClass,
    method: &Method,
    headers: &HeaderMap,
    body_len: Option<u64>,
) -> Option<Response> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let ct = headers.get(header::CONTENT_TYPE).map(|v| {
        v.to_str()
            .unwrap_or("?")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let json = |t: &str| t == "application/json" || t.ends_with("+json");
    let ok = if class.wants_json() {
        match &ct {
            Some(t) => json(t),
            None => body_len == Some(0),
        }
    } else {
        !ct.as_deref().is_some_and(|t| {
            matches!(
                t,
                "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
            )
        })
    };
    (!ok).then(|| {
        refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "this route takes {} (Content-Type: {})",
                if class.wants_json() {
                    "a JSON body"
                } else {
                    "JSON or the binary tensor extension"
                },
                ct.as_deref().unwrap_or("none, with a body")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_configured_loopback_or_the_listen_address() {
        let p = HostPolicy::new(
            &["hub.example".into(), "10.1.2.3".into()],
            "192.168.1.5:8480".parse().expect("addr"),
        );
        for ok in [
            "hub.example",
            "HUB.example.:8480",
            "localhost",
            "127.0.0.1:8480",
            "[::1]:8480",
            "10.1.2.3",
            "192.168.1.5:8480",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "hub.example.evil",
            "10.9.9.9",
            "",
            "[::2]:1",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
        let local = HostPolicy::new(&[], "0.0.0.0:1".parse().expect("addr"));
        assert!(local.allows("localhost:8480"));
        assert!(local.allows("10.9.9.9"), "the hub listens on every address");
        assert!(!local.allows("rebind.evil.example"));
    }

    #[test]
    fn json_routes_take_json_and_inference_no_simple_request() {
        let mut h = HeaderMap::new();
        let op = RouteClass::Operate;
        assert!(
            refuse_body(op, &Method::POST, &h, Some(0)).is_none(),
            "no body"
        );
        assert!(
            refuse_body(op, &Method::POST, &h, Some(3)).is_some(),
            "untyped body"
        );
        h.insert(header::CONTENT_TYPE, "text/plain".parse().expect("v"));
        assert!(refuse_body(op, &Method::POST, &h, Some(3)).is_some());
        assert!(refuse_body(RouteClass::Inference, &Method::POST, &h, Some(3)).is_some());
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().expect("v"),
        );
        assert!(refuse_body(op, &Method::POST, &h, Some(3)).is_none());
        h.insert(
            header::CONTENT_TYPE,
            "application/octet-stream".parse().expect("v"),
        );
        assert!(refuse_body(RouteClass::Inference, &Method::POST, &h, None).is_none());
    }
}
