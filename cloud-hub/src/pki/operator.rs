//! Operator certificates: issued by the hub's CA with the operator role ([`super::role`]),
//! kept in the ledger next to the devices (one serial sequence), revoked through the same CRL;
//! and `tandem-hub operator add|revoke|list`.
//!
//! Files: `operators/<name>.pem`, `operators/<name>.key` (the key created 0600).

use super::role::{OPERATOR_CN_PREFIX, operator_eku_extension};
use super::{DeviceRecord, Ledger, Pki, PkiError, rfc3339};
use clap::Subcommand;
use rcgen::{CertificateParams, DnType};
use std::path::PathBuf;
use time::{Duration, OffsetDateTime};

/// `tandem-hub operator ...`.
#[derive(Debug, Subcommand)]
pub enum OperatorCmd {
    /// Issue an operator certificate (name: lowercase letters, digits and `-`): it may call
    /// every route of the hub's HTTPS API, devices' certificates only their own.
    Add {
        /// Operator name.
        name: String,
        /// PKI folder.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Validity in days (1 to 3650).
        #[arg(long, default_value_t = 90)]
        days: i64,
    },
    /// Revoke an operator's certificate (through the CRL, as for devices).
    Revoke {
        /// Operator name.
        name: String,
        /// PKI folder.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
    },
    /// List issued operator certificates.
    List {
        /// PKI folder.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
    },
}

/// Runs an `operator` subcommand, printing what it did.
pub fn command(cmd: OperatorCmd) -> Result<(), PkiError> {
    match cmd {
        OperatorCmd::Add { name, dir, days } => {
            let pki = Pki::open(&dir)?;
            let rec = pki.add_operator(&name, days)?;
            let (cert, key) = pki.operator_files(&name);
            println!(
                "operator {name}: serial {}, valid until {}\n  {}\n  {}",
                rec.serial,
                rec.not_after,
                cert.display(),
                key.display()
            );
        }
        OperatorCmd::Revoke { name, dir } => {
            let serials = Pki::open(&dir)?.revoke_operator(&name)?;
            println!("operator {name}: revoked serial(s) {serials:?}; crl.pem rewritten");
        }
        OperatorCmd::List { dir } => {
            print_records(&Pki::open(&dir)?.ledger()?.operators);
        }
    }
    Ok(())
}

impl Pki {
    /// Paths of an operator's certificate and key.
    pub fn operator_files(&self, name: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.join("operators");
        (d.join(format!("{name}.pem")), d.join(format!("{name}.key")))
    }

    /// Issues an operator certificate valid from now for `days` days.
    pub fn add_operator(&self, name: &str, days: i64) -> Result<DeviceRecord, PkiError> {
        // No subject name: a DNS name is a device's identity (and would make it neither).
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name
            .push(DnType::CommonName, format!("{OPERATOR_CN_PREFIX}{name}"));
        p.custom_extensions = vec![operator_eku_extension()];
        let not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
        let files = self.operator_files(name);
        self.issue(name, p, not_before, days, files, |l| &mut l.operators)
    }

    /// The MQTT usernames (`operator:NAME`) of every operator this PKI ever issued a
    /// certificate to, sorted: the broker's ACL denies each of them everything. A revoked or
    /// expired one stays listed (it costs a line, and no CRL lag can open the broker to it).
    pub fn operator_usernames(&self) -> Result<Vec<String>, PkiError> {
        let mut names: Vec<String> = self
            .ledger()?
            .operators
            .into_iter()
            .filter(|o| super::valid_device_name(&o.name))
            .map(|o| format!("{OPERATOR_CN_PREFIX}{}", o.name))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Revokes every valid certificate of an operator and rewrites the CRL.
    pub fn revoke_operator(&self, name: &str) -> Result<Vec<u64>, PkiError> {
        self.revoke_in(name, |l| &mut l.operators, PkiError::UnknownOperator)
    }

    /// Revokes every valid certificate of `name` among the records `role` picks and rewrites the
    /// CRL; `unknown` when it has none. One path for devices, operators and subscribers.
    pub(super) fn revoke_in(
        &self,
        name: &str,
        role: fn(&mut Ledger) -> &mut Vec<DeviceRecord>,
        unknown: fn(String) -> PkiError,
    ) -> Result<Vec<u64>, PkiError> {
        let _lock = self.lock()?;
        let mut ledger = self.ledger()?;
        let serials = revoke(role(&mut ledger), name);
        if serials.is_empty() {
            return Err(unknown(name.to_string()));
        }
        // The ledger first: whoever sees the new crl.pem (the broker's supervisor) finds the
        // revocation in it.
        self.save(&ledger)?;
        self.write_crl(&mut ledger, super::CLI_CRL_VALIDITY_S)?;
        self.save(&ledger)?;
        Ok(serials)
    }
}

/// Prints one line per certificate record (name, serial, expiry, state): `device|operator|
/// subscriber list`.
pub fn print_records(records: &[DeviceRecord]) {
    for d in records {
        let state = d
            .revoked_at
            .as_ref()
            .map_or_else(|| "valid".to_string(), |t| format!("revoked {t}"));
        println!(
            "{:24} serial {:6} until {}  {state}",
            d.name, d.serial, d.not_after
        );
    }
}

/// Marks every valid record of `name` revoked now; their serials.
pub(super) fn revoke(records: &mut [DeviceRecord], name: &str) -> Vec<u64> {
    let now = rfc3339(OffsetDateTime::now_utc());
    records
        .iter_mut()
        .filter(|d| d.name == name && d.revoked_at.is_none())
        .map(|d| {
            d.revoked_at = Some(now.clone());
            d.serial
        })
        .collect()
}

/// Every revoked certificate of the ledger, devices', operators' and subscribers'.
pub(super) fn revoked(ledger: &Ledger) -> impl Iterator<Item = &DeviceRecord> {
    ledger
        .devices
        .iter()
        .chain(&ledger.operators)
        .chain(&ledger.subscribers)
        .filter(|d| d.revoked_at.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_ever_issued_is_an_mqtt_username_and_names_are_topic_safe() {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = Pki::init(&dir.path().join("pki")).expect("pki");
        assert!(pki.operator_usernames().expect("names").is_empty());
        pki.add_operator("bob", 30).expect("bob");
        pki.add_operator("alice", 30).expect("alice");
        pki.revoke_operator("bob").expect("revoke");
        assert_eq!(
            pki.operator_usernames().expect("names"),
            vec!["operator:alice", "operator:bob"],
            "a revoked operator stays denied"
        );
        // A CN with an MQTT wildcard, a level separator or a role prefix is never issued: it
        // would widen the device pattern `tandem/%u/#` or pass for another role.
        for bad in ["a+b", "a#", "a/b", "+", "#", "x:y", "Op", ""] {
            assert!(
                matches!(pki.add_operator(bad, 30), Err(PkiError::BadName(_))),
                "operator {bad:?}"
            );
            assert!(
                matches!(pki.add_device(bad, 30), Err(PkiError::BadName(_))),
                "device {bad:?}"
            );
        }
        assert_eq!(pki.ledger().expect("ledger").devices.len(), 0);
    }
}
