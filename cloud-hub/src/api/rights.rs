//! Who may call what on the hub's HTTP API: the route classes, the principals, and the one
//! table between them ([`allows`]). The README's security section prints the same table.
//!
//! | route class                                   | anonymous | device | operator |
//! |-----------------------------------------------|-----------|--------|----------|
//! | `Health`: `/v2/health/live`, `/v2/health/ready` | yes     | yes    | yes      |
//! | `Inference`: `/v2`, `/v2/models/...` (metadata, ready, infer) | open API only | yes | yes |
//! | `Metrics`: `/metrics`                         | open API only | no | yes      |
//! | `FleetRead`: `GET /v1/fleet...`, `GET /v1/models`, `GET /v1/rollouts...`, `GET /v1/feedback...`, `GET /v1/eval...`, `GET /v1/calibrations...`, `GET /v1/thresholds` | no | no | yes |
//! | `Console`: `/console...` (pages and their assets; each page answers the login page to anyone but an operator, `console`) | yes | yes | yes |
//! | `Operate`: every other route (`POST /v1/fleet/{d}/cmd/{name}`, `POST /v1/rollouts...`, `POST /v1/feedback/corrections`, `POST /v1/eval`, `POST /v1/calibrations`, `POST /v1/thresholds/pin|unpin`, `/v1/claims...`, `/v1/enrolments`, unknown ones) | no | no | yes |
//!
//! "Open API" is plain HTTP without `http.bearer_token_file` (which the config allows only on a
//! loopback address). A device never reads the fleet, not even its own entry: it knows its own
//! state, and the fleet's routes list every other device.

use axum::http::Method;

/// A class of routes with the same rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// Liveness and readiness probes.
    Health,
    /// OIP v2: server and model metadata, readiness, inference.
    Inference,
    /// The Prometheus metrics (fleet-wide counters).
    Metrics,
    /// Fleet-wide reads: devices, registry, rollouts.
    FleetRead,
    /// The console's pages, assets and login (`crate::console`): open at the gate, each page
    /// serves only an operator (anyone else gets the login page, and no data).
    Console,
    /// Everything that changes state, and any route not named above (refused by default).
    Operate,
}

impl RouteClass {
    /// The class of a request.
    pub fn of(method: &Method, path: &str) -> Self {
        let read = method == Method::GET || method == Method::HEAD;
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        match path {
            "/v2/health/live" | "/v2/health/ready" => Self::Health,
            "/metrics" => Self::Metrics,
            _ if under("/v2") => Self::Inference,
            _ if under("/console") => Self::Console,
            _ if read
                && (under("/v1/fleet")
                    || under("/v1/rollouts")
                    || under("/v1/feedback")
                    || under("/v1/eval")
                    || under("/v1/calibrations")
                    || under("/v1/thresholds")
                    || path == "/v1/models") =>
            {
                Self::FleetRead
            }
            _ => Self::Operate,
        }
    }

    /// Whether a request body of this class must be JSON (else 415): every state-changing
    /// route takes JSON, so a browser's cross-site "simple request" (`text/plain`, a form)
    /// is never one of them.
    pub fn wants_json(self) -> bool {
        matches!(self, Self::Operate | Self::Console)
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials (plain HTTP, no bearer token).
    Anonymous,
    /// A device certificate from the hub's CA.
    Device(String),
    /// An operator: an operator certificate (its name) or a bearer token (`token`).
    Operator(String),
}

/// Whether `who` may call a route of `class`; `open` says the API is open (plain HTTP without
/// a token file, on loopback).
pub fn allows(who: &Principal, class: RouteClass, open: bool) -> bool {
    use RouteClass::{Console, FleetRead, Health, Inference, Metrics, Operate};
    match (who, class) {
        (Principal::Operator(_), _) | (_, Health | Console) => true,
        (Principal::Device(_), Inference) => true,
        (Principal::Device(_), Metrics | FleetRead | Operate) => false,
        (Principal::Anonymous, Inference | Metrics) => open,
        (Principal::Anonymous, FleetRead | Operate) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_in_their_class_and_unknown_ones_are_operate() {
        let get = Method::GET;
        let post = Method::POST;
        for (m, p, c) in [
            (&get, "/v2/health/live", RouteClass::Health),
            (&get, "/v2/health/ready", RouteClass::Health),
            (&get, "/v2", RouteClass::Inference),
            (&post, "/v2/models/m/infer", RouteClass::Inference),
            (&get, "/metrics", RouteClass::Metrics),
            (&get, "/v1/fleet", RouteClass::FleetRead),
            (&get, "/v1/fleet/cam-a", RouteClass::FleetRead),
            (&get, "/v1/models", RouteClass::FleetRead),
            (&get, "/v1/rollouts/r1", RouteClass::FleetRead),
            (&get, "/v1/feedback/records", RouteClass::FleetRead),
            (&get, "/v1/eval/reports", RouteClass::FleetRead),
            (&post, "/v1/feedback/corrections", RouteClass::Operate),
            (&post, "/v1/eval", RouteClass::Operate),
            (&get, "/v1/feedbackx", RouteClass::Operate),
            (
                &post,
                "/v1/fleet/cam-b/cmd/set_threshold",
                RouteClass::Operate,
            ),
            (&post, "/v1/rollouts", RouteClass::Operate),
            (&post, "/v1/rollouts/r1/abort", RouteClass::Operate),
            (&get, "/v1/claims", RouteClass::Operate),
            (&post, "/v1/claims", RouteClass::Operate),
            (&get, "/v1/enrolments", RouteClass::Operate),
            (&get, "/v1/fleetx", RouteClass::Operate),
            (&get, "/v2x", RouteClass::Operate),
            (&get, "/anything", RouteClass::Operate),
            (&get, "/console", RouteClass::Console),
            (&post, "/console/login", RouteClass::Console),
            (&get, "/consolex", RouteClass::Operate),
        ] {
            assert_eq!(RouteClass::of(m, p), c, "{m} {p}");
        }
    }

    #[test]
    fn devices_never_operate_and_anonymous_only_on_an_open_api() {
        let dev = Principal::Device("cam-a".into());
        let op = Principal::Operator("token".into());
        let anon = Principal::Anonymous;
        for c in [
            RouteClass::Metrics,
            RouteClass::FleetRead,
            RouteClass::Operate,
        ] {
            assert!(!allows(&dev, c, true), "{c:?}");
        }
        assert!(allows(&dev, RouteClass::Inference, false));
        for c in [RouteClass::FleetRead, RouteClass::Operate] {
            assert!(!allows(&anon, c, true), "{c:?}");
            assert!(allows(&op, c, false), "{c:?}");
        }
        assert!(allows(&anon, RouteClass::Inference, true));
        assert!(!allows(&anon, RouteClass::Inference, false));
        assert!(allows(&anon, RouteClass::Health, false));
    }
}
