//! Enrolment by claim and certificate renewal (docs/enrolment.md).
//!
//! # Layout
//! - `claims`: claims, tokens (only their digest is kept) and the [`ClaimStore`] trait.
//! - `store`: [`SledClaims`], the sled claim store (the only module with sled types).
//! - `service`: [`Enroller`], claim + request → certificate; renewal.
//! - `endpoint`: the QUIC enrolment endpoint (server authentication only) and the answer to
//!   `Renew` on the device ingress.
//! - `http`: `/v1/claims` on the hub's API; `cli`: `tandem-hub claim create|list|revoke`.
//! - `config`: `[enrol]`.

pub mod claims;
pub mod cli;
mod config;
pub mod endpoint;
pub mod http;
mod service;
mod store;

pub use claims::{Claim, ClaimError, ClaimStore, IssueRecord, IssuedBy};
pub use config::EnrolConfig;
pub use endpoint::EnrolEndpoint;
pub use service::{EnrolError, EnrolStats, Enroller, Issued, SupersedePolicy};
pub use store::SledClaims;

use crate::ingress::quic::QuicIngress;
use std::sync::Arc;

/// What `start` hands the app: the ingress (answering `Renew`), the enrolment endpoint when
/// `enrol.listen` is set, and the service for the API (claims routes, metrics).
pub type Started = (QuicIngress, Option<EnrolEndpoint>, Option<Arc<Enroller>>);

/// Opens the claim store and binds the enrolment endpoint (`[enrol]`). A PKI or claim store
/// that cannot be opened turns enrolment and renewal off with a WARN (the hub serves on);
/// an endpoint that cannot bind is an error.
pub fn start(
    cfg: &crate::config::Config,
    ingress: QuicIngress,
) -> Result<Started, crate::app::AppError> {
    let opened = crate::pki::Pki::open(&cfg.pki_dir())
        .map_err(|e| e.to_string())
        .and_then(|pki| {
            let store = SledClaims::open(&cfg.claims_dir()).map_err(|e| e.to_string())?;
            Ok((pki, store))
        });
    let (pki, store) = match opened {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "enrolment and renewal are off: the PKI or the claim store (enrol.dir) cannot be opened");
            return Ok((ingress, None, None));
        }
    };
    let claims: Arc<dyn ClaimStore> = Arc::new(store);
    let lifetime = std::time::Duration::from_secs(cfg.enrol.cert_lifetime_s);
    let enroller = Arc::new(
        Enroller::new(pki, claims, lifetime).with_supersede(SupersedePolicy {
            grace: std::time::Duration::from_millis(cfg.enrol.superseded_grace_ms),
            crl_validity_s: cfg.pki.crl_validity_s,
        }),
    );
    let endpoint = if cfg.enrol.listen.is_empty() {
        None
    } else {
        let addr = cfg.enrol.listen.parse().map_err(|_| {
            crate::app::AppError::Enrol(format!("enrol.listen `{}`", cfg.enrol.listen))
        })?;
        let e = EnrolEndpoint::bind(
            addr,
            &cfg.pki_dir(),
            enroller.clone(),
            cfg.enrol.max_connections,
        )?;
        tracing::info!(enrol = %e.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()), "enrolment endpoint listening");
        Some(e)
    };
    Ok((
        ingress.with_enroller(enroller.clone()),
        endpoint,
        Some(enroller),
    ))
}
