//! The development PKI: a CA, the hub's server certificate, a model-signing key, device
//! certificates and a certificate revocation list, all under one folder.
//!
//! Layout of the folder (keys are written 0600):
//! - `ca.pem`, `ca.key`: the CA (ECDSA P-256) that signs the hub and every device.
//! - `hub.pem`, `hub.key`: the hub's certificate: SAN `localhost`, `127.0.0.1` and the names
//!   and addresses given to `init --name/--ip` or `pki reissue-hub` (`hub_cert`).
//! - `signing.key`, `signing.pub`: the ed25519 model-signing key (bundles, issue 5).
//! - `devices/<name>.pem`, `devices/<name>.key`: a device certificate, CN = the device name,
//!   client authentication only. The name in the certificate is the device's identity.
//! - `operators/<name>.pem`, `operators/<name>.key`: an operator certificate ([`operator`]).
//! - `subscribers/<name>.pem`, `subscribers/<name>.key` (or where `subscriber add --out`
//!   says): a read-only MQTT subscriber's certificate ([`subscriber`]).
//! - `crl.pem`: the revocation list the hub loads into its TLS verifiers and its broker
//!   (`crl`; the running hub re-signs it before it lapses and after every revocation).
//! - `pki.lock`: taken around every change of the ledger (the CLI and the running hub).
//! - `pki.json`: the ledger (next serial, devices and operators with serial, expiry,
//!   revocation; a certificate replaced by a renewal is revoked as superseded, `supersede`).
//!
//! Private keys are created with mode 0600 (never written wider and narrowed afterwards).

mod config;
mod crl;
mod hub_cert;
pub mod operator;
pub mod role;
mod sign;
pub mod subscriber;
mod supersede;

pub use config::PkiConfig;
pub use crl::{CLI_CRL_VALIDITY_S, CrlInfo};
pub use hub_cert::{HUB_CERT_DAYS, HubNames, valid_dns_name};
pub use operator::print_records;
pub use sign::{MAX_CSR_BYTES, Purpose, SignError, Signed};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// `init` over an existing PKI.
    #[error("{0} already holds a PKI (ca.key exists); refusing to overwrite it")]
    Exists(PathBuf),
    /// No PKI in the folder.
    #[error("{0} holds no PKI: run `tandem-hub init --dir {0}` first")]
    Missing(PathBuf),
    /// Device names are lowercase letters, digits and `-`.
    #[error(
        "device name `{0}` is invalid: use 1-63 lowercase letters, digits and `-`, not starting or ending with `-`"
    )]
    BadName(String),
    /// The name is the hub's own identity (`tandem-hub`): a device with it would get the hub's
    /// rights on the MQTT broker.
    #[error("device name `{0}` is reserved for the hub")]
    Reserved(String),
    /// A hub DNS name that no certificate can carry.
    #[error(
        "hub name `{0}` is invalid: use dot-separated labels of letters, digits and `-` (an IP address goes to --ip)"
    )]
    BadHubName(String),
    /// The device already has a valid certificate.
    #[error("device `{0}` already has a certificate; revoke it first")]
    Duplicate(String),
    /// No such device.
    #[error("device `{0}` is not known to this PKI")]
    UnknownDevice(String),
    /// No such operator.
    #[error("operator `{0}` is not known to this PKI")]
    UnknownOperator(String),
    /// No such subscriber.
    #[error("subscriber `{0}` is not known to this PKI (`tandem-hub subscriber list`)")]
    UnknownSubscriber(String),
    /// A validity out of range (an expired or nearly eternal certificate).
    #[error("--days {0}: a certificate is valid for 1 to {MAX_DAYS} days")]
    BadDays(i64),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The ledger is corrupt.
    #[error("{path} is corrupt: {message}")]
    Ledger {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One issued device certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Device name (the certificate CN).
    pub name: String,
    /// Certificate serial number.
    pub serial: u64,
    /// Expiry, RFC 3339.
    pub not_after: String,
    /// Revocation time, RFC 3339, when revoked.
    pub revoked_at: Option<String>,
    /// The serial of the renewed certificate that replaced this one, when it was revoked for
    /// that (CRL reason `superseded`) rather than by an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<u64>,
}

/// The ledger kept in `pki.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Next serial number to issue.
    pub next_serial: u64,
    /// Next CRL number.
    pub crl_number: u64,
    /// Every device certificate ever issued.
    pub devices: Vec<DeviceRecord>,
    /// Every operator certificate ever issued (absent in ledgers from before operators).
    #[serde(default)]
    pub operators: Vec<DeviceRecord>,
    /// Every subscriber certificate ever issued (absent in older ledgers).
    #[serde(default)]
    pub subscribers: Vec<DeviceRecord>,
}

/// Longest validity of a certificate the PKI issues, in days (the CA's own).
pub const MAX_DAYS: i64 = 3650;

/// Checks a validity in days: 1 to [`MAX_DAYS`].
pub fn check_days(days: i64) -> Result<(), PkiError> {
    if (1..=MAX_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(PkiError::BadDays(days))
    }
}

/// Checks a device name.
pub fn valid_device_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file; a secret one (a key) is created 0600 from the start: an older file is
/// removed first, so the mode applies and no other user ever holds it open.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    if !secret {
        return std::fs::write(path, text).map_err(io(path));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(path)(e)),
        _ => {}
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let mut file = open.open(path).map_err(io(path))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(io(path))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The CA's parameters; rebuilt identically from the stored key to sign. The name carries a
/// fingerprint of the key, so two CAs never share a subject.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let id: String = key
        .public_key_raw()
        .iter()
        .skip(1)
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    dn.push(DnType::CommonName, format!("Tandem development CA {id}"));
    dn.push(DnType::OrganizationName, "Tandem");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.key_identifier_method = KeyIdMethod::Sha256;
    p.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
    p.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
    p
}

/// A PKI folder.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Opens an existing PKI folder.
    pub fn open(dir: &Path) -> Result<Self, PkiError> {
        if !dir.join("ca.key").is_file() {
            return Err(PkiError::Missing(dir.to_path_buf()));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a new PKI: CA, hub certificate (for `localhost` and `127.0.0.1`), model-signing
    /// key, empty CRL.
    pub fn init(dir: &Path) -> Result<Self, PkiError> {
        Self::init_for(dir, &HubNames::default())
    }

    /// [`Pki::init`] with a hub certificate valid for `names` too.
    pub fn init_for(dir: &Path, names: &HubNames) -> Result<Self, PkiError> {
        if dir.join("ca.key").exists() {
            return Err(PkiError::Exists(dir.to_path_buf()));
        }
        // Refuse a bad name before anything is written.
        names.sans()?;
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let ca = ca_params(&ca_key).self_signed(&ca_key)?;
        write(&dir.join("ca.key"), &ca_key.serialize_pem(), true)?;
        write(&dir.join("ca.pem"), &ca.pem(), false)?;
        let pki = Self {
            dir: dir.to_path_buf(),
        };
        let mut ledger = Ledger {
            next_serial: 2,
            crl_number: 1,
            ..Ledger::default()
        };
        pki.write_hub_cert(names, 1)?;
        let signing = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        write(&dir.join("signing.key"), &signing.serialize_pem(), true)?;
        write(&dir.join("signing.pub"), &signing.public_key_pem(), false)?;
        pki.write_crl(&mut ledger, CLI_CRL_VALIDITY_S)?;
        pki.save(&ledger)?;
        Ok(pki)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&read(&self.dir.join("ca.key"))?)?;
        Ok(Issuer::new(ca_params(&key), key))
    }

    /// Reads the ledger.
    pub fn ledger(&self) -> Result<Ledger, PkiError> {
        let path = self.dir.join("pki.json");
        serde_json::from_str(&read(&path)?).map_err(|e| PkiError::Ledger {
            path,
            message: e.to_string(),
        })
    }

    fn save(&self, ledger: &Ledger) -> Result<(), PkiError> {
        let text = serde_json::to_string_pretty(ledger).map_err(|e| PkiError::Ledger {
            path: self.dir.join("pki.json"),
            message: e.to_string(),
        })?;
        let tmp = self.dir.join("pki.json.tmp");
        write(&tmp, &text, false)?;
        std::fs::rename(&tmp, self.dir.join("pki.json")).map_err(io(&tmp))
    }

    /// Issues a device certificate valid from `not_before` for `days` days.
    pub fn add_device_at(
        &self,
        name: &str,
        not_before: OffsetDateTime,
        days: i64,
    ) -> Result<DeviceRecord, PkiError> {
        if name == crate::broker::HUB_IDENTITY {
            return Err(PkiError::Reserved(name.to_string()));
        }
        let mut p = CertificateParams::new(vec![name.to_string()])?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let dir = self.dir.join("devices");
        let files = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        self.issue(name, p, not_before, days, files, |l| &mut l.devices)
    }

    /// Signs `p` (subject and extensions set by the caller) for `name` with a new key, valid
    /// from `not_before` for `days` days; writes `files` (certificate, key) and records it in
    /// the ledger list `list` picks, under the ledger lock. A name that list holds unrevoked
    /// is refused.
    fn issue(
        &self,
        name: &str,
        mut p: CertificateParams,
        not_before: OffsetDateTime,
        days: i64,
        (cert_path, key_path): (PathBuf, PathBuf),
        list: fn(&mut Ledger) -> &mut Vec<DeviceRecord>,
    ) -> Result<DeviceRecord, PkiError> {
        check_days(days)?;
        if !valid_device_name(name) {
            return Err(PkiError::BadName(name.to_string()));
        }
        let _lock = self.lock()?;
        let mut ledger = self.ledger()?;
        if list(&mut ledger)
            .iter()
            .any(|d| d.name == name && d.revoked_at.is_none())
        {
            return Err(PkiError::Duplicate(name.to_string()));
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let serial = ledger.next_serial;
        p.serial_number = Some(SerialNumber::from(serial));
        p.not_before = not_before;
        p.not_after = not_before + Duration::days(days);
        let cert = p.signed_by(&key, &self.issuer()?)?;
        write(&key_path, &key.serialize_pem(), true)?;
        write(&cert_path, &cert.pem(), false)?;
        let rec = DeviceRecord {
            name: name.to_string(),
            serial,
            not_after: rfc3339(p.not_after),
            revoked_at: None,
            superseded_by: None,
        };
        ledger.next_serial += 1;
        list(&mut ledger).push(rec.clone());
        self.save(&ledger)?;
        Ok(rec)
    }

    /// Issues a device certificate valid from now for `days` days.
    pub fn add_device(&self, name: &str, days: i64) -> Result<DeviceRecord, PkiError> {
        self.add_device_at(name, OffsetDateTime::now_utc() - Duration::minutes(5), days)
    }

    /// Revokes every valid certificate of a device and rewrites the CRL.
    pub fn revoke_device(&self, name: &str) -> Result<Vec<u64>, PkiError> {
        self.revoke_in(name, |l| &mut l.devices, PkiError::UnknownDevice)
    }

    /// Paths of a device's certificate and key.
    pub fn device_files(&self, name: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.join("devices");
        (d.join(format!("{name}.pem")), d.join(format!("{name}.key")))
    }
}
