//! Subscriber certificates: read-only MQTT identities for dashboards (Grafana via Telegraf,
//! Home Assistant, Node-RED, `mosquitto_sub`). Issued by the hub's CA with the subscriber role
//! ([`super::role`]: no DNS name, so never a device; CN `subscriber:NAME`, the broker's
//! username; the subscriber key purpose), kept in the ledger next to devices and operators (one
//! serial sequence, one CRL: the ledger is what every CRL is signed from, by the CLI and by the
//! running hub), revoked through the CRL; and `tandem-hub subscriber add|revoke|list`.
//!
//! What a subscriber may do on the broker is the ACL's business (`broker::mosquitto`): read
//! `tandem/+/status`, `tandem/+/telemetry`, `tandem/+/events` and the discovery topics, write
//! nothing. The hub's mosquitto picks up a new or revoked subscriber while it runs
//! (`broker::supervisor`).

use super::operator::print_records;
use super::role::{SUBSCRIBER_CN_PREFIX, subscriber_eku_extension};
use super::{DeviceRecord, Pki, PkiError};
use clap::Subcommand;
use rcgen::{CertificateParams, DnType};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// `tandem-hub subscriber ...`.
#[derive(Debug, Subcommand)]
pub enum SubscriberCmd {
    /// Issue a read-only MQTT identity (name: lowercase letters, digits and `-`): it may read
    /// every device's status, telemetry and events, and publish nothing.
    Add {
        /// Subscriber name (its MQTT username becomes `subscriber:NAME`).
        name: String,
        /// PKI folder.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Folder to write NAME.pem and NAME.key to (default: DIR/subscribers).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Validity in days (1 to 3650).
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Revoke a subscriber's certificate (through the CRL: the broker drops its connection).
    Revoke {
        /// Subscriber name.
        name: String,
        /// PKI folder.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
    },
    /// List issued subscriber certificates.
    List {
        /// PKI folder.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
    },
}

/// Runs a `subscriber` subcommand, printing what it did.
pub fn command(cmd: SubscriberCmd) -> Result<(), PkiError> {
    match cmd {
        SubscriberCmd::Add {
            name,
            dir,
            out,
            days,
        } => {
            let pki = Pki::open(&dir)?;
            let out = out.unwrap_or_else(|| dir.join("subscribers"));
            let rec = pki.add_subscriber(&name, days, &out)?;
            let (cert, key) = subscriber_files(&out, &name);
            println!(
                "subscriber {name} (MQTT username {SUBSCRIBER_CN_PREFIX}{name}): serial {}, valid until {}\n  {}\n  {}\n  CA: {}",
                rec.serial,
                rec.not_after,
                cert.display(),
                key.display(),
                dir.join("ca.pem").display()
            );
        }
        SubscriberCmd::Revoke { name, dir } => {
            let serials = Pki::open(&dir)?.revoke_subscriber(&name)?;
            println!("subscriber {name}: revoked serial(s) {serials:?}; crl.pem rewritten");
        }
        SubscriberCmd::List { dir } => {
            print_records(&Pki::open(&dir)?.ledger()?.subscribers);
        }
    }
    Ok(())
}

/// Paths of a subscriber's certificate and key in `dir`.
pub fn subscriber_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

impl Pki {
    /// Issues a subscriber certificate valid from now for `days` days; its certificate and key
    /// (created 0600) go to `out`.
    pub fn add_subscriber(
        &self,
        name: &str,
        days: i64,
        out: &Path,
    ) -> Result<DeviceRecord, PkiError> {
        // No subject name: a DNS name is a device's identity (and would make it none).
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name
            .push(DnType::CommonName, format!("{SUBSCRIBER_CN_PREFIX}{name}"));
        p.custom_extensions = vec![subscriber_eku_extension()];
        let not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
        let files = subscriber_files(out, name);
        self.issue(name, p, not_before, days, files, |l| &mut l.subscribers)
    }

    /// Revokes every valid certificate of a subscriber and rewrites the CRL.
    pub fn revoke_subscriber(&self, name: &str) -> Result<Vec<u64>, PkiError> {
        self.revoke_in(name, |l| &mut l.subscribers, PkiError::UnknownSubscriber)
    }

    /// The MQTT usernames of the subscribers with a valid (unrevoked, unexpired) certificate,
    /// sorted: what the broker's ACL grants reading to.
    pub fn subscriber_usernames(&self) -> Result<Vec<String>, PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut names: Vec<String> = self
            .ledger()?
            .subscribers
            .into_iter()
            .filter(|s| s.revoked_at.is_none())
            .filter(|s| {
                OffsetDateTime::parse(&s.not_after, &time::format_description::well_known::Rfc3339)
                    .is_ok_and(|t| t > now)
            })
            .filter(|s| super::valid_device_name(&s.name))
            .map(|s| format!("{SUBSCRIBER_CN_PREFIX}{}", s.name))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::role::{CertRole, cert_role};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn a_subscriber_is_neither_device_nor_operator_and_is_revocable() {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = Pki::init(&dir.path().join("pki")).expect("pki");
        let out = dir.path().join("elsewhere");
        pki.add_subscriber("grafana", 30, &out).expect("add");
        let (cert, key) = subscriber_files(&out, "grafana");
        assert!(key.is_file());
        let der = CertificateDer::from_pem_file(&cert).expect("pem");
        assert_eq!(
            cert_role(&[der]),
            Some(CertRole::Subscriber("grafana".into()))
        );
        // The device of the same name is another identity.
        pki.add_device("grafana", 30).expect("device");
        let dev = CertificateDer::from_pem_file(pki.device_files("grafana").0).expect("pem");
        assert_eq!(cert_role(&[dev]), Some(CertRole::Device("grafana".into())));
        assert!(matches!(
            pki.add_subscriber("grafana", 30, &out),
            Err(PkiError::Duplicate(_))
        ));
        assert!(matches!(
            pki.add_subscriber("Bad/Name", 30, &out),
            Err(PkiError::BadName(_))
        ));
        assert_eq!(
            pki.subscriber_usernames().expect("names"),
            vec!["subscriber:grafana"]
        );
        let serials = pki.revoke_subscriber("grafana").expect("revoke");
        assert!(pki.revoked_serials().expect("crl").contains(&serials[0]));
        assert!(pki.subscriber_usernames().expect("names").is_empty());
        assert!(matches!(
            pki.revoke_subscriber("grafana"),
            Err(PkiError::UnknownSubscriber(_))
        ));
    }
}
