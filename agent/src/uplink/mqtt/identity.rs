//! The device name: the Common Name of the device certificate's subject, which the broker
//! takes as the device's identity (`use_identity_as_username`). A small DER walk over the
//! certificate, enough for `Certificate → tbsCertificate → subject → CN`.

/// The DER element at the start of `b`: (tag, content, rest).
fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let (digits, rest) = b.split_at(n);
        b = rest;
        digits
            .iter()
            .fold(0usize, |acc, d| (acc << 8) | usize::from(*d))
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// 2.5.4.3 (commonName).
const CN_OID: [u8; 3] = [0x55, 0x04, 0x03];

/// The subject CN of a DER certificate, when it has one (UTF8String, PrintableString or
/// IA5String).
pub fn common_name(der: &[u8]) -> Option<String> {
    let (SEQUENCE, cert, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version (optional), serial, signature, issuer, validity, then subject.
    let (tag, _, r) = element(rest)?;
    rest = r;
    let skip = if tag == 0xa0 { 4 } else { 3 };
    for _ in 0..skip {
        rest = element(rest)?.2;
    }
    let (SEQUENCE, mut subject, _) = element(rest)? else {
        return None;
    };
    while !subject.is_empty() {
        let (tag, set, r) = element(subject)?;
        subject = r;
        if tag != SET {
            return None;
        }
        let mut atvs = set;
        while !atvs.is_empty() {
            let (_, atv, r) = element(atvs)?;
            atvs = r;
            let (tag, oid, value) = element(atv)?;
            if tag == OID && oid == CN_OID {
                let (vtag, v, _) = element(value)?;
                return matches!(vtag, 0x0c | 0x13 | 0x16)
                    .then(|| String::from_utf8(v.to_vec()).ok())
                    .flatten();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn reads_the_device_name_from_a_pki_certificate() {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = tandem_hub::pki::Pki::init(&dir.path().join("pki")).expect("pki");
        pki.add_device("cam-07", 1).expect("device");
        let (cert, _) = pki.device_files("cam-07");
        let der = CertificateDer::from_pem_file(cert).expect("pem");
        assert_eq!(common_name(&der).as_deref(), Some("cam-07"));
        let hub = CertificateDer::from_pem_file(pki.dir().join("hub.pem")).expect("pem");
        assert_eq!(common_name(&hub).as_deref(), Some("tandem-hub"));
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for b in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x03, 0x30, 0x01, 0x02],
        ] {
            assert_eq!(common_name(b), None);
        }
    }
}
