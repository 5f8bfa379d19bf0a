//! The enrolment service: turns a claim token and a certificate request into a device
//! certificate, and a renewal request from an authenticated device into a new one; records
//! both (claim store, PKI ledger, an INFO event). Blocking: call it from `spawn_blocking`.
//!
//! A renewed device's older certificates are revoked as superseded once it connects with the
//! new one ([`Enroller::connected`], called by the QUIC ingress), after
//! `enrol.superseded_grace_ms`: one usable certificate per device. Pending ones (a name with
//! several valid certificates in the ledger) are read back at start.

use super::claims::{ClaimError, ClaimStore, IssueRecord, IssuedBy, digest};
use crate::pki::{Pki, PkiError, Purpose, SignError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_shared::wire::ErrorCode;

/// Why no certificate was issued.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// The claim token is unknown, used, expired or revoked.
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// The request, the name or the ledger.
    #[error(transparent)]
    Sign(#[from] SignError),
}

impl EnrolError {
    /// The wire error code the device gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Claim(ClaimError::Store(_)) => ErrorCode::Internal,
            Self::Claim(_) | Self::Sign(SignError::NotValid(_)) => ErrorCode::Forbidden,
            Self::Sign(SignError::Request(_) | SignError::Taken(_))
            | Self::Sign(SignError::Pki(PkiError::BadName(_) | PkiError::Reserved(_))) => {
                ErrorCode::BadRequest
            }
            Self::Sign(SignError::Pki(_)) => ErrorCode::Internal,
        }
    }
}

/// A certificate issued to a device.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Device name.
    pub name: String,
    /// The certificate, DER.
    pub cert: Vec<u8>,
    /// Serial number.
    pub serial: u64,
}

/// What the service did, for `/metrics`.
#[derive(Debug, Default)]
pub struct EnrolStats {
    /// Devices enrolled with a claim.
    pub enrolled: AtomicU64,
    /// Enrolments refused (token, request or name).
    pub enrol_refused: AtomicU64,
    /// Certificates renewed.
    pub renewed: AtomicU64,
    /// Renewals refused.
    pub renew_refused: AtomicU64,
    /// Certificates revoked because a renewal superseded them.
    pub superseded: AtomicU64,
}

/// When superseded certificates are revoked.
#[derive(Debug, Clone, Copy)]
pub struct SupersedePolicy {
    /// After the device's first connection with its renewed certificate.
    pub grace: Duration,
    /// Validity of the CRL signed then, in seconds (`pki.crl_validity_s`).
    pub crl_validity_s: u64,
}

/// Signs device certificates for claims and renewals. One at a time (one ledger writer).
#[derive(Debug)]
pub struct Enroller {
    pki: Pki,
    claims: Arc<dyn ClaimStore>,
    lifetime: Duration,
    lock: Mutex<()>,
    stats: EnrolStats,
    /// Renewed devices whose older certificates are still valid: name → newest serial.
    superseding: Mutex<BTreeMap<String, u64>>,
    supersede: Option<SupersedePolicy>,
}

impl Enroller {
    /// The service over a PKI and a claim store; certificates valid for `lifetime`.
    pub fn new(pki: Pki, claims: Arc<dyn ClaimStore>, lifetime: Duration) -> Self {
        Self {
            pki,
            claims,
            lifetime,
            lock: Mutex::new(()),
            stats: EnrolStats::default(),
            superseding: Mutex::new(BTreeMap::new()),
            supersede: None,
        }
    }

    /// Revokes superseded certificates as `policy` says, starting with the renewals the
    /// ledger shows pending (an unreadable ledger: a WARN, and only later renewals).
    pub fn with_supersede(mut self, policy: SupersedePolicy) -> Self {
        match self.pki.superseding() {
            Ok(pending) => self.superseding = Mutex::new(pending),
            Err(e) => {
                tracing::warn!(error = %e, "renewals pending before this start are not superseded (ledger unreadable)")
            }
        }
        self.supersede = Some(policy);
        self
    }

    /// A device connected with the certificate `serial`: when that is its renewed one, its
    /// older certificates are revoked as superseded after the grace (on a task; the CRL is
    /// re-signed, and the hub's revocation task applies it).
    pub fn connected(self: &Arc<Self>, device: &str, serial: u64) {
        let Some(policy) = self.supersede else {
            return;
        };
        {
            let mut pending = self.superseding.lock().unwrap_or_else(|p| p.into_inner());
            match pending.get(device) {
                Some(newest) if serial >= *newest => pending.remove(device),
                _ => return,
            };
        }
        let (this, device) = (self.clone(), device.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(policy.grace).await;
            let name = device.clone();
            let done = tokio::task::spawn_blocking(move || {
                this.pki
                    .supersede(&name, serial, policy.crl_validity_s)
                    .inspect(|s| {
                        this.stats.superseded.fetch_add(s.len() as u64, Relaxed);
                    })
            })
            .await;
            match done {
                Ok(Ok(s)) if s.is_empty() => {}
                Ok(Ok(s)) => {
                    tracing::info!(device = %device, serial, superseded = ?s, "older certificates of a renewed device revoked as superseded");
                }
                Ok(Err(e)) => {
                    tracing::error!(device = %device, error = %e, "superseded certificates not revoked (they stay valid until they expire)");
                }
                Err(e) => tracing::error!(device = %device, error = %e, "superseding task failed"),
            }
        });
    }

    /// Prometheus text: enrolments and renewals, done and refused.
    pub fn render(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        for (name, help, v) in [
            (
                "tandem_hub_enrolments_total",
                "Devices enrolled with a claim token.",
                &s.enrolled,
            ),
            (
                "tandem_hub_enrolments_refused_total",
                "Enrolments refused (claim token unknown, used, expired or revoked; bad request; name taken).",
                &s.enrol_refused,
            ),
            (
                "tandem_hub_renewals_total",
                "Device certificates renewed over the device connection.",
                &s.renewed,
            ),
            (
                "tandem_hub_renewals_refused_total",
                "Renewals refused (bad request, no valid certificate of that name).",
                &s.renew_refused,
            ),
            (
                "tandem_hub_certificates_superseded_total",
                "Device certificates revoked as superseded once the device used its renewed one.",
                &s.superseded,
            ),
        ] {
            tandem_engine::metrics::write_one(
                &mut out,
                name,
                "counter",
                help,
                v.load(Relaxed) as f64,
            );
        }
        out
    }

    /// The claim store.
    pub fn claims(&self) -> &Arc<dyn ClaimStore> {
        &self.claims
    }

    /// Enrols a device: the claim of `token` must be usable; the name is the claim's prefix
    /// followed by `proposed`, and must be free. The claim is consumed only when the
    /// certificate is issued.
    pub fn enrol(
        &self,
        token: &str,
        proposed: &str,
        csr: &[u8],
        now_ms: u64,
    ) -> Result<Issued, EnrolError> {
        let outcome = self.enrol_inner(token, proposed, csr, now_ms);
        count(&outcome, &self.stats.enrolled, &self.stats.enrol_refused);
        outcome
    }

    fn enrol_inner(
        &self,
        token: &str,
        proposed: &str,
        csr: &[u8],
        now_ms: u64,
    ) -> Result<Issued, EnrolError> {
        let d = digest(token);
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let claim = self.claims.peek(&d, now_ms)?;
        let name = format!("{}{proposed}", claim.name_prefix);
        self.claims.consume(&d, &name, now_ms)?;
        let signed = match self
            .pki
            .sign_request(&name, csr, self.lifetime, Purpose::Enrol)
        {
            Ok(s) => s,
            Err(e) => {
                if let Err(r) = self.claims.release(&d) {
                    tracing::error!(claim = %claim.id, error = %r, "claim used but no certificate issued: the claim could not be released");
                }
                return Err(e.into());
            }
        };
        let record = IssueRecord {
            device: name.clone(),
            serial: signed.record.serial,
            not_after: signed.record.not_after.clone(),
            at_ms: now_ms,
            by: IssuedBy::Claim {
                claim: claim.id.clone(),
            },
            labels: claim.labels.clone(),
        };
        if let Err(e) = self.claims.record(&record) {
            tracing::warn!(device = %name, error = %e, "enrolment not recorded in the claim store (the PKI ledger has it)");
        }
        tracing::info!(device = %name, claim = %claim.id, serial = signed.record.serial, not_after = %signed.record.not_after, "device enrolled");
        Ok(Issued {
            name,
            cert: signed.der,
            serial: signed.record.serial,
        })
    }

    /// Renews the certificate of `device` (the identity of its verified connection) for the
    /// key of `csr`.
    pub fn renew(&self, device: &str, csr: &[u8], now_ms: u64) -> Result<Issued, EnrolError> {
        let outcome = self.renew_inner(device, csr, now_ms);
        count(&outcome, &self.stats.renewed, &self.stats.renew_refused);
        outcome
    }

    fn renew_inner(&self, device: &str, csr: &[u8], now_ms: u64) -> Result<Issued, EnrolError> {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let signed = self
            .pki
            .sign_request(device, csr, self.lifetime, Purpose::Renew)?;
        let record = IssueRecord {
            device: device.to_string(),
            serial: signed.record.serial,
            not_after: signed.record.not_after.clone(),
            at_ms: now_ms,
            by: IssuedBy::Renewal,
            labels: Default::default(),
        };
        if let Err(e) = self.claims.record(&record) {
            tracing::warn!(device = %device, error = %e, "renewal not recorded in the claim store (the PKI ledger has it)");
        }
        tracing::info!(device = %device, serial = signed.record.serial, not_after = %signed.record.not_after, "device renewed its certificate");
        self.superseding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device.to_string(), signed.record.serial);
        Ok(Issued {
            name: device.to_string(),
            cert: signed.der,
            serial: signed.record.serial,
        })
    }
}

/// Counts an outcome: `done` when it issued a certificate, else `refused`.
fn count<T, E>(outcome: &Result<T, E>, done: &AtomicU64, refused: &AtomicU64) {
    let counter = if outcome.is_ok() { done } else { refused };
    counter.fetch_add(1, Relaxed);
}
