//! The hub's server certificate: the DNS names and IP addresses it is valid for (always
//! `localhost` and `127.0.0.1`, for the hub's own MQTT client and tools on the hub's host, plus
//! those given to `tandem-hub init --name/--ip` or `tandem-hub pki reissue-hub`), signed by the
//! PKI's CA; re-issuing keeps the CA, so devices keep trusting the hub.

use super::{Pki, PkiError, write};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType, SerialNumber};
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};

/// Validity of a hub certificate, in days.
pub const HUB_CERT_DAYS: i64 = 825;

/// The names a hub certificate is valid for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubNames {
    /// DNS names (`hub.example.com`), besides `localhost`.
    pub dns: Vec<String>,
    /// IP addresses, besides `127.0.0.1`.
    pub ips: Vec<IpAddr>,
}

/// Whether `name` is a DNS name a certificate can carry: dot-separated labels of letters,
/// digits and `-` (not at either end of a label), at most 253 characters.
pub fn valid_dns_name(name: &str) -> bool {
    name.len() <= 253
        && !name.is_empty()
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && name.parse::<IpAddr>().is_err()
}

impl HubNames {
    /// Every subject alternative name: `localhost`, the DNS names, `127.0.0.1`, the IPs
    /// (duplicates removed, in that order). A bad DNS name is refused.
    pub fn sans(&self) -> Result<Vec<SanType>, PkiError> {
        let mut dns = vec!["localhost".to_string()];
        for n in &self.dns {
            let n = n.to_ascii_lowercase();
            if !valid_dns_name(&n) {
                return Err(PkiError::BadHubName(n));
            }
            if !dns.contains(&n) {
                dns.push(n);
            }
        }
        let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
        for ip in &self.ips {
            if !ips.contains(ip) {
                ips.push(*ip);
            }
        }
        let mut sans = Vec::new();
        for n in dns {
            sans.push(SanType::DnsName(n.try_into()?));
        }
        sans.extend(ips.into_iter().map(SanType::IpAddress));
        Ok(sans)
    }
}

impl Pki {
    /// Writes a new hub key and certificate (`hub.key`, `hub.pem`) for `names`, signed by the
    /// CA. Serial 1 is the first hub certificate; later ones take the ledger's next serial.
    pub(super) fn write_hub_cert(&self, names: &HubNames, serial: u64) -> Result<(), PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::default();
        p.subject_alt_names = names.sans()?;
        p.distinguished_name
            .push(DnType::CommonName, crate::broker::HUB_IDENTITY);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.serial_number = Some(SerialNumber::from(serial));
        p.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        p.not_after = OffsetDateTime::now_utc() + Duration::days(HUB_CERT_DAYS);
        let cert = p.signed_by(&key, &self.issuer()?)?;
        // Key first, then the certificate over it: a reader that sees the new certificate
        // finds its key.
        write(&self.dir.join("hub.key"), &key.serialize_pem(), true)?;
        write(&self.dir.join("hub.pem"), &cert.pem(), false)
    }

    /// Re-issues the hub certificate for `names` with a new key, keeping the CA (devices keep
    /// trusting the hub). Returns the new serial. The running hub reads `hub.pem` at start:
    /// restart it to serve the new certificate.
    pub fn reissue_hub(&self, names: &HubNames) -> Result<u64, PkiError> {
        let _lock = self.lock()?;
        let mut ledger = self.ledger()?;
        let serial = ledger.next_serial;
        self.write_hub_cert(names, serial)?;
        ledger.next_serial += 1;
        self.save(&ledger)?;
        Ok(serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_checked() {
        for ok in ["hub", "hub.tandem.test", "a-1.example.com", "HUB.example"] {
            assert!(valid_dns_name(&ok.to_ascii_lowercase()), "{ok}");
        }
        for bad in [
            "",
            "-hub",
            "hub-",
            "a..b",
            "hub_1",
            "*.example",
            "10.0.0.1",
            "a b",
        ] {
            assert!(!valid_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn always_localhost_and_loopback() {
        let sans = HubNames {
            dns: vec!["hub.example".into(), "localhost".into()],
            ips: vec!["10.0.0.1".parse().expect("ip")],
        }
        .sans()
        .expect("sans");
        assert_eq!(sans.len(), 4, "{sans:?}");
        assert!(matches!(&sans[1], SanType::DnsName(n) if n.as_str() == "hub.example"));
        assert!(
            HubNames {
                dns: vec!["bad_name".into()],
                ips: vec![]
            }
            .sans()
            .is_err()
        );
    }

    /// The DNS and IP names in a PEM certificate's SAN.
    fn names_in(pem: &std::path::Path) -> (Vec<u8>, String) {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_file(pem).expect("pem");
        let cert = webpki::EndEntityCert::try_from(&der).expect("cert");
        let names: Vec<String> = cert.valid_dns_names().map(str::to_string).collect();
        (cert.serial().to_vec(), names.join(","))
    }

    #[test]
    fn reissue_keeps_the_ca_and_changes_the_names() {
        let dir = tempfile::tempdir().expect("tmp");
        let names = HubNames {
            dns: vec!["hub.one.test".into()],
            ips: vec!["10.1.1.1".parse().expect("ip")],
        };
        let pki = Pki::init_for(dir.path(), &names).expect("init");
        let ca = std::fs::read(dir.path().join("ca.pem")).expect("ca");
        assert_eq!(
            names_in(&dir.path().join("hub.pem")).1,
            "localhost,hub.one.test"
        );
        let serial = pki
            .reissue_hub(&HubNames {
                dns: vec!["hub.two.test".into()],
                ips: vec![],
            })
            .expect("reissue");
        assert_eq!(serial, 2);
        let (der_serial, dns) = names_in(&dir.path().join("hub.pem"));
        assert_eq!(
            (der_serial, dns.as_str()),
            (vec![2u8], "localhost,hub.two.test")
        );
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).expect("ca"), ca);
        // The next device takes the serial after the hub's.
        assert_eq!(pki.add_device("cam-01", 1).expect("device").serial, 3);
    }
}
