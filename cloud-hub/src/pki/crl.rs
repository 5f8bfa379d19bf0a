//! The certificate revocation list: signed by the CA over every revoked serial in the ledger,
//! `next_update` = now + a validity (the CLI's [`CLI_CRL_VALIDITY_S`], the running hub's
//! `pki.crl_validity_s`), written atomically (a reader never sees half a file); and the lock
//! that serialises every read-modify-write of the ledger between the CLI and the running hub.

use super::{Ledger, Pki, PkiError, io, write};
use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use std::collections::BTreeSet;
use time::{Duration, OffsetDateTime};

/// Validity of a CRL the CLI writes (`init`, `device revoke`), in seconds: 7 days. The running
/// hub re-signs it with its own `pki.crl_validity_s` as soon as it notices the change.
pub const CLI_CRL_VALIDITY_S: u64 = 7 * 24 * 3600;

/// A CRL just written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// Every revoked serial it lists.
    pub revoked: BTreeSet<u64>,
    /// Its CRL number.
    pub number: u64,
    /// Its `next_update`.
    pub next_update: OffsetDateTime,
}

/// An exclusive lock on the PKI's ledger (`pki.lock`), released on drop.
#[derive(Debug)]
pub(super) struct LedgerLock(#[allow(dead_code)] std::fs::File);

impl Pki {
    /// Takes the ledger lock, waiting for another holder (the CLI, the hub) to finish.
    pub(super) fn lock(&self) -> Result<LedgerLock, PkiError> {
        let path = self.dir.join("pki.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        f.lock().map_err(io(&path))?;
        Ok(LedgerLock(f))
    }

    /// Serials of every revoked certificate, from the ledger.
    pub fn revoked_serials(&self) -> Result<BTreeSet<u64>, PkiError> {
        Ok(revoked(&self.ledger()?))
    }

    /// Serials revoked by an operator (`device revoke`, `operator revoke`), not those a
    /// renewal superseded: what the broker restarts for (a superseded certificate's device has
    /// moved to its new one; reloading the CRL refuses the old one's next handshake).
    pub fn revoked_for_cause(&self) -> Result<BTreeSet<u64>, PkiError> {
        let ledger = self.ledger()?;
        Ok(super::operator::revoked(&ledger)
            .filter(|d| d.superseded_by.is_none())
            .map(|d| d.serial)
            .collect())
    }

    /// Signs and writes a new CRL valid for `validity_s` seconds (the ledger's next CRL
    /// number), under the ledger lock.
    pub fn refresh_crl(&self, validity_s: u64) -> Result<CrlInfo, PkiError> {
        let _lock = self.lock()?;
        let mut ledger = self.ledger()?;
        let info = self.write_crl(&mut ledger, validity_s)?;
        self.save(&ledger)?;
        Ok(info)
    }

    /// Signs a CRL over the ledger's revoked serials and writes `crl.pem` (a temporary file
    /// renamed over it); advances the ledger's CRL number (the caller saves the ledger).
    pub(super) fn write_crl(
        &self,
        ledger: &mut Ledger,
        validity_s: u64,
    ) -> Result<CrlInfo, PkiError> {
        let now = OffsetDateTime::now_utc();
        let validity = Duration::seconds(i64::try_from(validity_s).unwrap_or(i64::MAX / 2));
        let revoked_set = revoked(ledger);
        let revoked_certs = super::operator::revoked(ledger)
            .map(|d| RevokedCertParams {
                serial_number: SerialNumber::from(d.serial),
                revocation_time: now,
                reason_code: Some(match d.superseded_by {
                    Some(_) => RevocationReason::Superseded,
                    None => RevocationReason::CessationOfOperation,
                }),
                invalidity_date: None,
            })
            .collect();
        let next_update = now + validity;
        let number = ledger.crl_number;
        let crl = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer()?)?;
        ledger.crl_number += 1;
        let tmp = self.dir.join("crl.pem.tmp");
        write(&tmp, &crl.pem()?, false)?;
        let path = self.dir.join("crl.pem");
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(CrlInfo {
            revoked: revoked_set,
            number,
            next_update,
        })
    }
}

fn revoked(ledger: &Ledger) -> BTreeSet<u64> {
    super::operator::revoked(ledger).map(|d| d.serial).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_lists_the_revoked_and_advances() {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = Pki::init(dir.path()).expect("init");
        let a = pki.add_device("cam-01", 1).expect("a");
        pki.add_device("cam-02", 1).expect("b");
        pki.revoke_device("cam-01").expect("revoke");
        let first = pki.refresh_crl(60).expect("refresh");
        let second = pki.refresh_crl(60).expect("refresh");
        assert_eq!(first.revoked, BTreeSet::from([a.serial]));
        assert!(second.number > first.number);
        assert!(second.next_update <= OffsetDateTime::now_utc() + Duration::seconds(60));
        assert!(second.next_update > OffsetDateTime::now_utc() + Duration::seconds(50));
        assert_eq!(pki.revoked_serials().expect("serials"), first.revoked);
    }
}
