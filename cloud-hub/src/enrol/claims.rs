//! Claim tokens: what a claim is, how a token is made and recognised, and the storage trait
//! the hub keeps them behind ([`ClaimStore`]; sled by default, `store.rs`).
//!
//! A token is 32 random bytes from the operating system, printed once as `tdc_<64 hex>`;
//! the store keeps only its SHA-256 digest (a stolen store enrols nothing). A claim works once:
//! [`ClaimStore::consume`] marks it used atomically (two devices racing with one token: one
//! wins, the other is told the token was used), and refuses it expired or revoked.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Printed prefix of every claim token.
pub const TOKEN_PREFIX: &str = "tdc_";

/// Why a claim cannot be made, found or used.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// No claim has this token (never made, or mistyped).
    #[error("unknown claim token")]
    Unknown,
    /// The token was used already: it works once.
    #[error(
        "claim {id} was already used (by device `{device}`): a claim token works once; make a new one"
    )]
    Used {
        /// Claim id.
        id: String,
        /// The device that used it.
        device: String,
    },
    /// The claim expired.
    #[error("claim {id} expired {ago_s} s ago: make a new one")]
    Expired {
        /// Claim id.
        id: String,
        /// Seconds since it expired.
        ago_s: u64,
    },
    /// An operator revoked the claim.
    #[error("claim {0} was revoked")]
    Revoked(String),
    /// `revoke` of an id no claim has.
    #[error("no claim with id `{0}`")]
    NoSuchId(String),
    /// A label or prefix the claim cannot carry.
    #[error("invalid claim: {0}")]
    Invalid(String),
    /// The store failed.
    #[error("claim store: {0}")]
    Store(String),
}

/// One use of a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimUse {
    /// The device name the claim gave a certificate to.
    pub device: String,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// A claim (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Short id for listing and revoking: the first 16 hex digits of the token's digest.
    pub id: String,
    /// Labels the enrolled device is recorded with.
    pub labels: BTreeMap<String, String>,
    /// Put before the device's proposed name (`lab-` + `cam1` = `lab-cam1`); may be empty.
    pub name_prefix: String,
    /// Made at, ms since the Unix epoch.
    pub created_ms: u64,
    /// Refused from this instant, ms since the Unix epoch.
    pub expires_ms: u64,
    /// The use, once used.
    pub used: Option<ClaimUse>,
    /// Revoked at, ms since the Unix epoch.
    pub revoked_ms: Option<u64>,
}

impl Claim {
    /// Whether the claim may be used at `now_ms`: not used, not revoked, not expired.
    pub fn usable(&self, now_ms: u64) -> Result<(), ClaimError> {
        if let Some(u) = &self.used {
            return Err(ClaimError::Used {
                id: self.id.clone(),
                device: u.device.clone(),
            });
        }
        if self.revoked_ms.is_some() {
            return Err(ClaimError::Revoked(self.id.clone()));
        }
        if now_ms >= self.expires_ms {
            return Err(ClaimError::Expired {
                id: self.id.clone(),
                ago_s: (now_ms - self.expires_ms) / 1000,
            });
        }
        Ok(())
    }

    /// `unused`, `used by D`, `revoked` or `expired` at `now_ms`.
    pub fn state(&self, now_ms: u64) -> String {
        match self.usable(now_ms) {
            Ok(()) => "unused".into(),
            Err(ClaimError::Used { device, .. }) => format!("used by {device}"),
            Err(ClaimError::Revoked(_)) => "revoked".into(),
            Err(_) => "expired".into(),
        }
    }
}

/// How a certificate came to be issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum IssuedBy {
    /// Enrolment with this claim.
    Claim {
        /// Claim id.
        claim: String,
    },
    /// Renewal over the device's authenticated connection.
    Renewal,
}

/// A certificate the enrolment service issued (the hub's record of enrolments and renewals).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueRecord {
    /// Device name.
    pub device: String,
    /// Certificate serial.
    pub serial: u64,
    /// Expiry, RFC 3339.
    pub not_after: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// Claim or renewal.
    #[serde(flatten)]
    pub by: IssuedBy,
    /// The claim's labels (empty for a renewal).
    pub labels: BTreeMap<String, String>,
}

/// A token's digest: the store's key.
pub type TokenDigest = [u8; 32];

/// SHA-256 of a token as printed.
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// A new token and its claim id.
pub fn new_token() -> Result<(String, TokenDigest, String), ClaimError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| ClaimError::Store(format!("random source: {e}")))?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    let d = digest(&token);
    let id = hex::encode(&d[..8]);
    Ok((token, d, id))
}

/// Where claims and the record of issued certificates are kept. Implementations make
/// [`ClaimStore::consume`] atomic: of two concurrent consumers of one claim, one succeeds.
pub trait ClaimStore: Send + Sync + std::fmt::Debug {
    /// Stores a new claim under its token's digest.
    fn insert(&self, digest: &TokenDigest, claim: &Claim) -> Result<(), ClaimError>;
    /// Every claim, oldest first.
    fn list(&self) -> Result<Vec<Claim>, ClaimError>;
    /// The claim of a token's digest, checked usable at `now_ms`, without using it.
    fn peek(&self, digest: &TokenDigest, now_ms: u64) -> Result<Claim, ClaimError>;
    /// Marks the claim used by `device` if it is usable at `now_ms`; atomic.
    fn consume(&self, digest: &TokenDigest, device: &str, now_ms: u64)
    -> Result<Claim, ClaimError>;
    /// Undoes a [`ClaimStore::consume`] whose certificate could not be issued.
    fn release(&self, digest: &TokenDigest) -> Result<(), ClaimError>;
    /// Revokes the claim with this id (unused claims only matter; a used one stays used).
    fn revoke(&self, id: &str, now_ms: u64) -> Result<Claim, ClaimError>;
    /// Records an issued certificate.
    fn record(&self, issue: &IssueRecord) -> Result<(), ClaimError>;
    /// Every issued certificate recorded, oldest first.
    fn issued(&self) -> Result<Vec<IssueRecord>, ClaimError>;

    /// The hub-assigned labels of each device: those of the claim it last enrolled with
    /// (a renewal keeps them; a new claim after a lapse replaces them).
    fn device_labels(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>, ClaimError> {
        let mut latest: BTreeMap<String, &IssueRecord> = BTreeMap::new();
        let issued = self.issued()?;
        for r in issued
            .iter()
            .filter(|r| matches!(r.by, IssuedBy::Claim { .. }))
        {
            let newer = latest
                .get(&r.device)
                .is_none_or(|k| (r.at_ms, r.serial) >= (k.at_ms, k.serial));
            if newer {
                latest.insert(r.device.clone(), r);
            }
        }
        Ok(latest
            .into_iter()
            .map(|(d, r)| (d, r.labels.clone()))
            .collect())
    }
}

/// The claim store as the fleet's source of hub-assigned labels (`fleet::labels`).
#[derive(Debug, Clone)]
pub struct ClaimLabels(pub std::sync::Arc<dyn ClaimStore>);

impl crate::fleet::AssignedLabels for ClaimLabels {
    fn assigned(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
        self.0.device_labels().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_digest_to_their_id() {
        let (a, da, ida) = new_token().expect("token");
        let (b, _, _) = new_token().expect("token");
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(digest(&format!(" {a}\n")), da);
        assert_eq!(ida, hex::encode(&da[..8]));
    }

    /// A store of issue records only (the default `device_labels` over `issued`).
    #[derive(Debug)]
    struct Records(Vec<IssueRecord>);

    impl ClaimStore for Records {
        fn insert(&self, _: &TokenDigest, _: &Claim) -> Result<(), ClaimError> {
            unimplemented!("not used")
        }
        fn list(&self) -> Result<Vec<Claim>, ClaimError> {
            unimplemented!("not used")
        }
        fn peek(&self, _: &TokenDigest, _: u64) -> Result<Claim, ClaimError> {
            unimplemented!("not used")
        }
        fn consume(&self, _: &TokenDigest, _: &str, _: u64) -> Result<Claim, ClaimError> {
            unimplemented!("not used")
        }
        fn release(&self, _: &TokenDigest) -> Result<(), ClaimError> {
            unimplemented!("not used")
        }
        fn revoke(&self, _: &str, _: u64) -> Result<Claim, ClaimError> {
            unimplemented!("not used")
        }
        fn record(&self, _: &IssueRecord) -> Result<(), ClaimError> {
            unimplemented!("not used")
        }
        fn issued(&self) -> Result<Vec<IssueRecord>, ClaimError> {
            Ok(self.0.clone())
        }
    }

    fn issue(device: &str, serial: u64, at_ms: u64, site: Option<&str>) -> IssueRecord {
        IssueRecord {
            device: device.into(),
            serial,
            not_after: String::new(),
            at_ms,
            by: match site {
                Some(_) => IssuedBy::Claim { claim: "c".into() },
                None => IssuedBy::Renewal,
            },
            labels: site
                .map(|s| BTreeMap::from([("site".to_string(), s.to_string())]))
                .unwrap_or_default(),
        }
    }

    #[test]
    fn a_device_keeps_its_latest_claims_labels_through_renewals() {
        let store = Records(vec![
            issue("a", 1, 10, Some("north")),
            issue("b", 2, 11, Some("south")),
            issue("a", 3, 20, None),
            // `b` lapsed and enrolled again with another claim.
            issue("b", 4, 30, Some("east")),
            issue("b", 5, 40, None),
        ]);
        let labels = store.device_labels().expect("labels");
        assert_eq!(labels["a"]["site"], "north");
        assert_eq!(labels["b"]["site"], "east");
        assert_eq!(labels.len(), 2);
    }

    #[test]
    fn a_claim_is_usable_once_before_expiry_unless_revoked() {
        let mut c = Claim {
            id: "x".into(),
            labels: BTreeMap::new(),
            name_prefix: String::new(),
            created_ms: 0,
            expires_ms: 10_000,
            used: None,
            revoked_ms: None,
        };
        assert!(c.usable(9_999).is_ok());
        assert!(matches!(
            c.usable(12_000),
            Err(ClaimError::Expired { ago_s: 2, .. })
        ));
        c.revoked_ms = Some(5);
        assert!(matches!(c.usable(1), Err(ClaimError::Revoked(_))));
        c.used = Some(ClaimUse {
            device: "d".into(),
            at_ms: 1,
        });
        assert_eq!(c.state(1), "used by d");
    }
}
