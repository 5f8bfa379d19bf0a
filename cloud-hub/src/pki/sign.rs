//! Device certificates the hub signs for a key it never sees: enrolment by claim and renewal.
//!
//! The device sends a PKCS#10 request; its signature proves the device holds the private key.
//! Only the request's public key is used: the subject (CN and DNS name = the device name),
//! the validity, the serial and every extension (client authentication only) are the hub's.
//! Nothing else in the request (its subject, SANs, key usages, basic constraints, roles) is
//! copied.

use super::{DeviceRecord, Pki, PkiError, rfc3339, valid_device_name};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose,
    SerialNumber,
};
use rustls_pki_types::CertificateSigningRequestDer;
use time::{Duration, OffsetDateTime};

/// Largest certificate request accepted, in bytes (a P-256 request is about 250).
pub const MAX_CSR_BYTES: usize = 8 * 1024;

/// Why a request was not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The PKI folder or ledger.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The request does not parse, its signature does not verify, or it is too large.
    #[error("certificate request refused: {0}")]
    Request(String),
    /// Another device holds a valid certificate with this name.
    #[error(
        "device name `{0}` is taken: a valid certificate carries it (revoke it, or choose another name)"
    )]
    Taken(String),
    /// A renewal for a name with no valid certificate in the ledger (revoked or expired).
    #[error("device `{0}` has no valid certificate to renew: enrol again with a new claim")]
    NotValid(String),
}

/// A signed certificate and its ledger entry.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The ledger entry (serial, expiry).
    pub record: DeviceRecord,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

/// Whether a ledger entry is a valid certificate at `now` (not revoked, not expired).
pub(super) fn is_valid(d: &DeviceRecord, now: OffsetDateTime) -> bool {
    d.revoked_at.is_none()
        && OffsetDateTime::parse(&d.not_after, &time::format_description::well_known::Rfc3339)
            .is_ok_and(|t| t > now)
}

/// What the request is signed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A new device: the name must not be held by a valid certificate.
    Enrol,
    /// A device with a valid certificate of this name asks for a new one (new key).
    Renew,
}

impl Pki {
    /// Signs a certificate for the public key of `csr_der`, named `name`, valid for `lifetime`
    /// from now (backdated for clock skew by 5 minutes, or a quarter of a shorter lifetime),
    /// and records it in the ledger. The caller serialises calls (one ledger writer).
    pub fn sign_request(
        &self,
        name: &str,
        csr_der: &[u8],
        lifetime: std::time::Duration,
        purpose: Purpose,
    ) -> Result<Signed, SignError> {
        if !valid_device_name(name) {
            return Err(PkiError::BadName(name.to_string()).into());
        }
        if name == crate::broker::HUB_IDENTITY {
            return Err(PkiError::Reserved(name.to_string()).into());
        }
        if csr_der.len() > MAX_CSR_BYTES {
            return Err(SignError::Request(format!(
                "{} bytes, over the limit of {MAX_CSR_BYTES}",
                csr_der.len()
            )));
        }
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| SignError::Request(e.to_string()))?;
        let now = OffsetDateTime::now_utc();
        // Under the ledger lock: the running hub re-signs the CRL (and advances the ledger)
        // while devices enrol and renew.
        let _lock = self.lock()?;
        let mut ledger = self.ledger()?;
        let held = ledger
            .devices
            .iter()
            .any(|d| d.name == name && is_valid(d, now));
        match purpose {
            Purpose::Enrol if held => return Err(SignError::Taken(name.to_string())),
            Purpose::Renew if !held => return Err(SignError::NotValid(name.to_string())),
            _ => {}
        }
        let lifetime: Duration = Duration::try_from(lifetime)
            .map_err(|e| SignError::Request(format!("lifetime: {e}")))?;
        let skew = (lifetime / 4i32).min(Duration::minutes(5));
        let mut p = CertificateParams::new(vec![name.to_string()]).map_err(PkiError::Rcgen)?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let serial = ledger.next_serial;
        p.serial_number = Some(SerialNumber::from(serial));
        p.not_before = now - skew;
        p.not_after = now + lifetime;
        let cert = p
            .signed_by(&csr.public_key, &self.issuer()?)
            .map_err(PkiError::Rcgen)?;
        let record = DeviceRecord {
            name: name.to_string(),
            serial,
            not_after: rfc3339(p.not_after),
            revoked_at: None,
            superseded_by: None,
        };
        ledger.next_serial += 1;
        ledger.devices.push(record.clone());
        self.save(&ledger)?;
        Ok(Signed {
            record,
            der: cert.der().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{KeyPair, KeyUsagePurpose};

    fn csr(cn: &str, tamper: impl FnOnce(&mut CertificateParams)) -> (KeyPair, Vec<u8>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = CertificateParams::new(vec![cn.to_string()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        tamper(&mut p);
        let der = p.serialize_request(&key).expect("csr").der().to_vec();
        (key, der)
    }

    #[test]
    fn only_the_public_key_is_taken_from_the_request() {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = Pki::init(&dir.path().join("pki")).expect("pki");
        let (key, der) = csr("tandem-hub", |p| {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        });
        let life = std::time::Duration::from_secs(600);
        let s = pki
            .sign_request("cam-1", &der, life, Purpose::Enrol)
            .expect("signed");
        let (_, cert) = x509_parser::parse_x509_certificate(&s.der).expect("parses");
        let cn = cert.subject().iter_common_name().next().expect("cn");
        assert_eq!(cn.as_str().expect("utf8"), "cam-1");
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().expect("ext").expect("eku").value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(cert.key_usage().expect("ext").is_none());
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        let left =
            cert.validity().not_after.timestamp() - OffsetDateTime::now_utc().unix_timestamp();
        assert!((590..=600).contains(&left), "{left}");
        // The name is now taken for enrolment, and renewable.
        let (_, again) = csr("x", |_| {});
        assert!(matches!(
            pki.sign_request("cam-1", &again, life, Purpose::Enrol),
            Err(SignError::Taken(_))
        ));
        pki.sign_request("cam-1", &again, life, Purpose::Renew)
            .expect("renewed");
        assert!(matches!(
            pki.sign_request("cam-2", &again, life, Purpose::Renew),
            Err(SignError::NotValid(_))
        ));
        assert_eq!(pki.ledger().expect("ledger").devices.len(), 2);
    }

    #[test]
    fn a_forged_or_garbage_request_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = Pki::init(&dir.path().join("pki")).expect("pki");
        let (_, mut der) = csr("cam", |_| {});
        let n = der.len();
        der[n - 5] ^= 0xff; // inside the signature
        let life = std::time::Duration::from_secs(60);
        for bad in [der, vec![0x30, 0x00], vec![0; MAX_CSR_BYTES + 1]] {
            assert!(matches!(
                pki.sign_request("cam", &bad, life, Purpose::Enrol),
                Err(SignError::Request(_))
            ));
        }
        let (_, ok) = csr("cam", |_| {});
        assert!(matches!(
            pki.sign_request("tandem-hub", &ok, life, Purpose::Enrol),
            Err(SignError::Pki(PkiError::Reserved(_)))
        ));
        assert!(matches!(
            pki.sign_request("Bad_Name", &ok, life, Purpose::Enrol),
            Err(SignError::Pki(PkiError::BadName(_)))
        ));
    }
}
