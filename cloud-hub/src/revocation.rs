//! Live revocation: the running hub keeps `crl.pem` fresh and applies it without a restart.
//!
//! - Re-signs the CRL at start, at half of `pki.crl_validity_s` after each signing, and as soon
//!   as `crl.pem` changes under it (`tandem-hub device revoke` rewrote it; checked every
//!   `pki.crl_check_ms`): a CRL never lapses while the hub runs.
//! - After each signing, builds new server configurations from the PKI folder and swaps them
//!   in: the QUIC endpoint's (`Endpoint::set_server_config`) and the HTTPS listener's
//!   ([`crate::api::https::TlsReload`]). New handshakes use the new CRL at once.
//! - Ends the open connections of every revoked certificate (`ingress::live`): QUIC ones are
//!   closed with error 0x6 "certificate revoked", HTTPS ones fail their next read.
//! - The broker loads it on its own: its supervisor watches `crl.pem` (`broker::supervisor`).
//!
//! A failed signing or reload is logged at ERROR and tried again at the next check; the
//! listeners keep the configuration they had.

use crate::api::https::TlsReload;
use crate::ingress::live::QuicReload;
use crate::pki::{CrlInfo, Pki, PkiConfig, PkiError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Why a CRL could not be signed or applied.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// Signing or reading the PKI.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Building the QUIC server configuration.
    #[error(transparent)]
    Quic(#[from] crate::ingress::quic::IngressError),
    /// Building the HTTPS server configuration.
    #[error(transparent)]
    Tls(#[from] crate::ingress::tls::TlsError),
    /// The signing task failed.
    #[error("CRL signing task: {0}")]
    Task(String),
}

/// What a new CRL is applied to.
#[derive(Debug, Default)]
pub struct Listeners {
    /// The QUIC endpoint and its open connections.
    pub quic: Option<QuicReload>,
    /// The HTTPS listener, when the API serves HTTPS.
    pub https: Option<Arc<TlsReload>>,
}

/// The task that keeps the CRL fresh and applied.
#[derive(Debug)]
pub struct Revocation {
    pki: Pki,
    cfg: PkiConfig,
    listeners: Listeners,
    /// `crl.pem`'s modification time and size after our last signing.
    seen: Option<(SystemTime, u64)>,
    refresh_at: Instant,
    revoked: Option<std::collections::BTreeSet<u64>>,
}

fn crl_path(dir: &Path) -> PathBuf {
    dir.join("crl.pem")
}

fn modified(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Signs a fresh CRL now (at start, before the listeners and the broker read it).
pub async fn sign_now(pki: &Pki, cfg: &PkiConfig) -> Result<CrlInfo, RevocationError> {
    let (pki, validity) = (pki.clone(), cfg.crl_validity_s);
    tokio::task::spawn_blocking(move || pki.refresh_crl(validity))
        .await
        .map_err(|e| RevocationError::Task(e.to_string()))?
        .map_err(RevocationError::from)
}

impl Revocation {
    /// For a PKI whose CRL was just signed ([`sign_now`]; `None`: it could not be, and the
    /// first check tries again).
    pub fn new(pki: Pki, cfg: PkiConfig, signed: Option<&CrlInfo>, listeners: Listeners) -> Self {
        Self {
            seen: modified(&crl_path(pki.dir())),
            refresh_at: match signed {
                Some(_) => Instant::now() + half(&cfg),
                None => Instant::now(),
            },
            revoked: signed.map(|s| s.revoked.clone()),
            pki,
            cfg,
            listeners,
        }
    }

    /// Checks every `pki.crl_check_ms` until `stop` resolves.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let every = Duration::from_millis(self.cfg.crl_check_ms);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(every) => {}
            }
            let changed = modified(&crl_path(self.pki.dir())) != self.seen;
            if (changed || Instant::now() >= self.refresh_at)
                && let Err(e) = self.refresh(changed).await
            {
                tracing::error!(error = %e, "CRL not re-signed or not applied; trying again at the next check");
            }
        }
    }

    async fn refresh(&mut self, changed: bool) -> Result<(), RevocationError> {
        let info = sign_now(&self.pki, &self.cfg).await?;
        self.seen = modified(&crl_path(self.pki.dir()));
        self.refresh_at = Instant::now() + half(&self.cfg);
        let dir = self.pki.dir().to_path_buf();
        let mut closed = Vec::new();
        if let Some(quic) = &self.listeners.quic {
            closed.extend(quic.apply(&dir, &info.revoked)?);
        }
        if let Some(https) = &self.listeners.https {
            https.set(crate::ingress::tls::https_config(&dir)?);
            closed.extend(https.close_revoked(&info.revoked));
        }
        let new_revocation = self.revoked.as_ref() != Some(&info.revoked);
        if changed || new_revocation || !closed.is_empty() {
            tracing::info!(
                crl_number = info.number,
                revoked = info.revoked.len(),
                closed = ?closed,
                "CRL re-signed after a change and loaded into QUIC and HTTPS"
            );
        } else {
            tracing::debug!(crl_number = info.number, "CRL re-signed before it lapses");
        }
        self.revoked = Some(info.revoked);
        Ok(())
    }
}

fn half(cfg: &PkiConfig) -> Duration {
    Duration::from_millis(cfg.crl_validity_s.saturating_mul(500))
}
