//! Certificates a renewal superseded: once a device uses its renewed certificate, the older
//! ones of its name that are still valid are revoked (reason `superseded` in the CRL), so a
//! renewal leaves one usable certificate per device, not two until the old one expires.
//!
//! The ledger alone says what is pending: a name with more than one valid certificate
//! ([`Pki::superseding`]), so nothing is lost when the hub restarts between a renewal and the
//! device's first connection with the new certificate.

use super::sign::is_valid;
use super::{Pki, PkiError, rfc3339};
use std::collections::BTreeMap;
use time::OffsetDateTime;

impl Pki {
    /// Every device name holding more than one valid certificate, with its newest serial:
    /// renewals whose older certificate is still to be superseded.
    pub fn superseding(&self) -> Result<BTreeMap<String, u64>, PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut valid: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
        let ledger = self.ledger()?;
        for d in ledger.devices.iter().filter(|d| is_valid(d, now)) {
            let e = valid.entry(&d.name).or_insert((0, 0));
            *e = (e.0 + 1, e.1.max(d.serial));
        }
        Ok(valid
            .into_iter()
            .filter(|(_, (n, _))| *n > 1)
            .map(|(name, (_, newest))| (name.to_string(), newest))
            .collect())
    }

    /// Revokes, as superseded by `current`, every valid certificate of `name` with a lower
    /// serial, and rewrites the CRL (valid for `crl_validity_s`) when there was one. Returns
    /// the serials revoked (empty: nothing to do, no file touched).
    pub fn supersede(
        &self,
        name: &str,
        current: u64,
        crl_validity_s: u64,
    ) -> Result<Vec<u64>, PkiError> {
        let _lock = self.lock()?;
        let mut ledger = self.ledger()?;
        let now = OffsetDateTime::now_utc();
        let at = rfc3339(now);
        let mut serials = Vec::new();
        for d in ledger
            .devices
            .iter_mut()
            .filter(|d| d.name == name && d.serial < current && is_valid(d, now))
        {
            d.revoked_at = Some(at.clone());
            d.superseded_by = Some(current);
            serials.push(d.serial);
        }
        if serials.is_empty() {
            return Ok(serials);
        }
        // The ledger first: whoever sees the new crl.pem (the broker's supervisor) finds the
        // revocation in it.
        self.save(&ledger)?;
        self.write_crl(&mut ledger, crl_validity_s)?;
        self.save(&ledger)?;
        Ok(serials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn csr() -> Vec<u8> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = CertificateParams::new(vec!["x".to_string()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, "x");
        p.serialize_request(&key).expect("csr").der().to_vec()
    }

    #[test]
    fn a_renewal_supersedes_the_older_certificates_once_used() {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = Pki::init(&dir.path().join("pki")).expect("pki");
        let life = std::time::Duration::from_secs(600);
        let renew = super::super::Purpose::Renew;
        let first = pki.add_device("cam-1", 1).expect("device");
        pki.add_device("cam-2", 1).expect("other device");
        assert!(pki.superseding().expect("ledger").is_empty());
        let second = pki
            .sign_request("cam-1", &csr(), life, renew)
            .expect("renewed");
        let third = pki
            .sign_request("cam-1", &csr(), life, renew)
            .expect("renewed again");
        assert_eq!(
            pki.superseding().expect("ledger"),
            BTreeMap::from([("cam-1".to_string(), third.record.serial)])
        );
        // The device connects with its second certificate (the third never installed, say):
        // only the first is superseded.
        let gone = pki
            .supersede("cam-1", second.record.serial, 60)
            .expect("supersede");
        assert_eq!(gone, vec![first.serial]);
        let revoked = pki.revoked_serials().expect("serials");
        assert!(revoked.contains(&first.serial) && !revoked.contains(&second.record.serial));
        assert!(
            pki.revoked_for_cause().expect("serials").is_empty(),
            "superseded is not revoked for cause"
        );
        // Then with the third.
        assert_eq!(
            pki.supersede("cam-1", third.record.serial, 60)
                .expect("supersede"),
            vec![second.record.serial]
        );
        assert!(pki.superseding().expect("ledger").is_empty());
        let crl_before = std::fs::read(dir.path().join("pki/crl.pem")).expect("crl");
        assert!(
            pki.supersede("cam-1", third.record.serial, 60)
                .expect("again")
                .is_empty()
        );
        assert_eq!(
            std::fs::read(dir.path().join("pki/crl.pem")).expect("crl"),
            crl_before,
            "nothing to supersede: the CRL is left alone"
        );
        // The CRL says why.
        let pem = std::fs::read(dir.path().join("pki/crl.pem")).expect("crl");
        let (_, der) = x509_parser::pem::parse_x509_pem(&pem).expect("pem");
        let (_, crl) = x509_parser::parse_x509_crl(&der.contents).expect("crl");
        let reasons: Vec<_> = crl
            .iter_revoked_certificates()
            .map(|r| (r.raw_serial().to_vec(), r.reason_code().map(|(_, c)| c)))
            .collect();
        assert_eq!(reasons.len(), 2);
        assert!(
            reasons
                .iter()
                .all(|(_, c)| *c == Some(x509_parser::x509::ReasonCode::Superseded)),
            "{reasons:?}"
        );
        // An operator's revocation is for cause.
        pki.revoke_device("cam-2").expect("revoke");
        assert_eq!(pki.revoked_for_cause().expect("serials").len(), 1);
    }
}
