//! The development PKI, checked with the TLS verifier the hub uses (rustls + webpki): a device
//! certificate from the CA verifies; an expired, a revoked or a foreign-CA one does not.

use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use std::path::Path;
use std::sync::Arc;
use tandem_hub::pki::{Pki, PkiError};

/// A fresh folder `tandem-pki-{name}-XXXXXX` (not created: `Pki::init` makes it) and the guard
/// that removes it when the test ends, passed or panicked.
fn tmp(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let guard = tempfile::Builder::new()
        .prefix(&format!("tandem-pki-{name}-"))
        .tempdir()
        .expect("tmp");
    let d = guard.path().join("pki");
    (guard, d)
}

fn verifier(dir: &Path) -> Arc<dyn ClientCertVerifier> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.pem")).expect("ca"))
        .expect("add root");
    let crl = CertificateRevocationListDer::from_pem_file(dir.join("crl.pem")).expect("crl");
    WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .with_crls([crl])
    .build()
    .expect("verifier")
}

fn verify(dir: &Path, cert: &Path) -> Result<(), rustls::Error> {
    let c = CertificateDer::from_pem_file(cert).expect("cert");
    verifier(dir)
        .verify_client_cert(&c, &[], UnixTime::now())
        .map(|_| ())
}

#[test]
fn devices_verify_until_revoked_and_expired_or_foreign_ones_never() {
    let (_main, dir) = tmp("main");
    let pki = Pki::init(&dir).expect("init");
    for f in [
        "ca.pem",
        "ca.key",
        "hub.pem",
        "hub.key",
        "signing.key",
        "signing.pub",
        "crl.pem",
        "pki.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(matches!(Pki::init(&dir), Err(PkiError::Exists(_))));

    pki.add_device("cam-01", 365).expect("add");
    pki.add_device("cam-02", 365).expect("add");
    let (cam1, _) = pki.device_files("cam-01");
    let (cam2, _) = pki.device_files("cam-02");
    verify(&dir, &cam1).expect("a fresh device certificate verifies");
    assert!(matches!(
        pki.add_device("cam-01", 365),
        Err(PkiError::Duplicate(_))
    ));
    for bad in ["Cam-01", "cam_01", "-cam", "", "cam/01"] {
        assert!(
            matches!(pki.add_device(bad, 365), Err(PkiError::BadName(_))),
            "{bad}"
        );
    }

    let revoked = pki.revoke_device("cam-01").expect("revoke");
    assert_eq!(revoked.len(), 1);
    let err = verify(&dir, &cam1).expect_err("revoked");
    assert!(format!("{err:?}").contains("Revoked"), "{err:?}");
    verify(&dir, &cam2).expect("others still verify");
    assert!(matches!(
        pki.revoke_device("nobody"),
        Err(PkiError::UnknownDevice(_))
    ));

    let past = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    pki.add_device_at("old-cam", past, 1).expect("add expired");
    let err = verify(&dir, &pki.device_files("old-cam").0).expect_err("expired");
    assert!(format!("{err:?}").contains("Expired"), "{err:?}");

    let (_other, other) = tmp("other");
    let foreign = Pki::init(&other).expect("other CA");
    foreign.add_device("cam-01", 365).expect("add");
    let err = verify(&dir, &foreign.device_files("cam-01").0).expect_err("foreign CA");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");

    let ledger = pki.ledger().expect("ledger");
    assert_eq!(ledger.devices.len(), 3);
    assert!(
        ledger
            .devices
            .iter()
            .any(|d| d.name == "cam-01" && d.revoked_at.is_some())
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "hub.key", "signing.key", "devices/cam-02.key"] {
            let mode = std::fs::metadata(dir.join(key))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
    }
}

#[test]
fn keys_are_private_from_their_creation_and_validity_is_bounded() {
    use std::os::unix::fs::PermissionsExt;
    let (_modes, dir) = tmp("modes");
    let pki = Pki::init(&dir).expect("init");
    pki.add_device("cam-01", 1).expect("a day");
    // A leftover key readable by all is replaced, not reused with its mode.
    let (_, key) = pki.device_files("cam-02");
    std::fs::write(&key, "old").expect("leftover");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    pki.add_device("cam-02", 3650).expect("ten years");
    for f in [
        "ca.key",
        "hub.key",
        "signing.key",
        "devices/cam-01.key",
        "devices/cam-02.key",
    ] {
        let mode = std::fs::metadata(dir.join(f))
            .expect(f)
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}: {mode:o}");
    }
    for days in [0, -1, 3651] {
        let err = pki.add_device("cam-03", days).expect_err("out of range");
        assert!(matches!(err, PkiError::BadDays(d) if d == days), "{err}");
        assert!(err.to_string().contains("1 to 3650 days"), "{err}");
    }
    assert!(!pki.device_files("cam-03").0.exists());
}
