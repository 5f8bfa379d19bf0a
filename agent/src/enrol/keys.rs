//! Keys, requests and certificate files on the device.
//!
//! Switching files: the new key and certificate are written beside the live ones as
//! `<key>.next` and `<cert>.next` (key first, each fsynced; the key created 0600), then
//! renamed over them, key first, and the folder fsynced. A `<cert>.next` at start means the
//! switch was cut short after both were complete: [`recover`] finishes it. A lone
//! `<key>.next` is an unfinished write and is removed.

use super::EnrolError;
use rcgen::{CertificateParams, DnType, KeyPair};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EnrolError + '_ {
    move |source| EnrolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn next(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".next");
    PathBuf::from(s)
}

/// A new P-256 key and a request for `name` signed with it (DER).
pub(super) fn new_request(name: &str) -> Result<(KeyPair, Vec<u8>), EnrolError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| EnrolError::Key(e.to_string()))?;
    let mut p =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| EnrolError::Key(e.to_string()))?;
    p.distinguished_name.push(DnType::CommonName, name);
    let csr = p
        .serialize_request(&key)
        .map_err(|e| EnrolError::Key(e.to_string()))?;
    Ok((key, csr.der().to_vec()))
}

/// Checks that `cert` (DER) certifies `key` and names `name`; returns its PEM.
pub(super) fn check_issued(cert: &[u8], key: &KeyPair, name: &str) -> Result<String, EnrolError> {
    let (_, x) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| EnrolError::Protocol(format!("the certificate does not parse: {e}")))?;
    if x.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(EnrolError::Protocol(
            "the certificate is not for the key this device generated".into(),
        ));
    }
    let cn = x
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok());
    if cn != Some(name) {
        return Err(EnrolError::Protocol(format!(
            "the certificate names {cn:?}, not `{name}`"
        )));
    }
    Ok(pem("CERTIFICATE", cert))
}

fn pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

/// Writes `text` to a new file at `path` (replacing a leftover), created with `mode` (no
/// moment with wider permissions), fsynced.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), EnrolError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, mode);
    let mut f = o.open(path).map_err(io(path))?;
    f.write_all(text.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(path: &Path) -> Result<(), EnrolError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Installs a key and certificate over `key_path` and `cert_path` (see the module header).
pub(super) fn install(
    key_path: &Path,
    cert_path: &Path,
    key: &KeyPair,
    cert_pem: &str,
) -> Result<(), EnrolError> {
    for p in [key_path, cert_path] {
        if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
    }
    write_new(&next(key_path), &key.serialize_pem(), 0o600)?;
    write_new(&next(cert_path), cert_pem, 0o644)?;
    finish(key_path, cert_path)
}

fn finish(key_path: &Path, cert_path: &Path) -> Result<(), EnrolError> {
    let key_next = next(key_path);
    if key_next.exists() {
        std::fs::rename(&key_next, key_path).map_err(io(&key_next))?;
    }
    let cert_next = next(cert_path);
    std::fs::rename(&cert_next, cert_path).map_err(io(&cert_next))?;
    sync_dir(key_path)?;
    sync_dir(cert_path)
}

/// Finishes a switch cut short (see the module header); `true` when there was one.
pub fn recover(key_path: &Path, cert_path: &Path) -> Result<bool, EnrolError> {
    if next(cert_path).exists() {
        finish(key_path, cert_path)?;
        tracing::warn!(cert = %cert_path.display(), "finished a certificate switch cut short");
        return Ok(true);
    }
    let key_next = next(key_path);
    if key_next.exists() {
        std::fs::remove_file(&key_next).map_err(io(&key_next))?;
    }
    Ok(false)
}

/// A certificate's validity and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    /// Subject CN.
    pub name: String,
    /// Valid from.
    pub not_before: SystemTime,
    /// Valid until.
    pub not_after: SystemTime,
}

impl Validity {
    /// When to renew: two-thirds of the way from `not_before` to `not_after`.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life * 2 / 3
    }
}

/// Reads the validity and name of the certificate (PEM) at `path`.
pub fn validity(path: &Path) -> Result<Validity, EnrolError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bad = |message: String| EnrolError::Cert {
        path: path.to_path_buf(),
        message,
    };
    let der = CertificateDer::from_pem_file(path).map_err(|e| bad(e.to_string()))?;
    let (_, x) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    let at = |ts: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(ts).unwrap_or(0));
    let name = x
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .ok_or_else(|| bad("no CN in the subject".into()))?
        .to_string();
    Ok(Validity {
        name,
        not_before: at(x.validity().not_before.timestamp()),
        not_after: at(x.validity().not_after.timestamp()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_creates_the_key_0600_and_recover_finishes_a_cut_switch() {
        let dir = tempfile::tempdir().expect("tmp");
        let (k, c) = (
            dir.path().join("d/device.key"),
            dir.path().join("d/device.pem"),
        );
        let (key, _) = new_request("cam").expect("key");
        install(&k, &c, &key, "CERT-1").expect("install");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&k).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_to_string(&c).expect("cert"), "CERT-1");
        // Cut short after both .next files were written and the key renamed.
        let (key2, _) = new_request("cam").expect("key");
        std::fs::write(next(&c), "CERT-2").expect("write");
        std::fs::write(&k, key2.serialize_pem()).expect("write");
        assert!(recover(&k, &c).expect("recover"));
        assert_eq!(std::fs::read_to_string(&c).expect("cert"), "CERT-2");
        // A lone key.next is an unfinished write: removed, the pair untouched.
        std::fs::write(next(&k), "half").expect("write");
        assert!(!recover(&k, &c).expect("recover"));
        assert!(!next(&k).exists());
        assert_eq!(
            std::fs::read_to_string(&k).expect("key"),
            key2.serialize_pem()
        );
    }

    #[test]
    fn pem_matches_the_standard_encoding() {
        let der: Vec<u8> = (0u8..=100).collect();
        let p = pem("CERTIFICATE", &der);
        let back = rustls_pki_types::CertificateDer::from_pem_slice(p.as_bytes()).expect("parses");
        assert_eq!(back.as_ref(), &der[..]);
    }

    use rustls_pki_types::pem::PemObject;
}
