//! The sled implementation of [`ClaimStore`] (the hub's default): one database under
//! `enrol.dir`, tree `claims` (token digest → claim JSON) and tree `issued` (big-endian serial
//! → issue record JSON). A claim is consumed by compare-and-swap on its key. No sled type
//! leaves this module. Dropping the last handle waits until sled unlocked the database
//! (`crate::sled_release`).

use super::claims::{Claim, ClaimError, ClaimStore, ClaimUse, IssueRecord, TokenDigest};
use std::path::Path;

/// Claims in sled.
#[derive(Debug, Clone)]
pub struct SledClaims {
    db: sled::Db,
    claims: sled::Tree,
    issued: sled::Tree,
    /// Last: the last clone dropped waits until sled unlocked the database
    /// (`crate::sled_release`).
    _released: std::sync::Arc<crate::sled_release::Released>,
}

fn store_err(e: impl std::fmt::Display) -> ClaimError {
    ClaimError::Store(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(v: &[u8]) -> Result<T, ClaimError> {
    serde_json::from_slice(v).map_err(store_err)
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, ClaimError> {
    serde_json::to_vec(v).map_err(store_err)
}

impl SledClaims {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, ClaimError> {
        let (db, released) = crate::sled_store::open(&dir.join("claims.db"), 4 << 20)
            .map_err(|e| ClaimError::Store(format!("{}: {e}", dir.display())))?;
        let claims = db.open_tree("claims").map_err(store_err)?;
        let issued = db.open_tree("issued").map_err(store_err)?;
        Ok(Self {
            db,
            claims,
            issued,
            _released: released,
        })
    }

    /// Replaces the claim under `digest` with `change(claim)` when the stored bytes are still
    /// the ones read (compare-and-swap), retrying on a concurrent change.
    fn update(
        &self,
        key: &[u8],
        change: impl Fn(Claim) -> Result<Claim, ClaimError>,
    ) -> Result<Claim, ClaimError> {
        loop {
            let old = self.claims.get(key).map_err(store_err)?;
            let Some(old) = old else {
                return Err(ClaimError::Unknown);
            };
            let new = change(decode(&old)?)?;
            let swapped = self
                .claims
                .compare_and_swap(key, Some(&old), Some(encode(&new)?))
                .map_err(store_err)?;
            if swapped.is_ok() {
                self.db.flush().map_err(store_err)?;
                return Ok(new);
            }
        }
    }
}

impl ClaimStore for SledClaims {
    fn insert(&self, digest: &TokenDigest, claim: &Claim) -> Result<(), ClaimError> {
        self.claims
            .insert(digest, encode(claim)?)
            .map_err(store_err)?;
        self.db.flush().map_err(store_err)?;
        Ok(())
    }

    fn list(&self) -> Result<Vec<Claim>, ClaimError> {
        let mut all = self
            .claims
            .iter()
            .values()
            .map(|v| decode::<Claim>(&v.map_err(store_err)?))
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by_key(|c| c.created_ms);
        Ok(all)
    }

    fn peek(&self, digest: &TokenDigest, now_ms: u64) -> Result<Claim, ClaimError> {
        let v = self.claims.get(digest).map_err(store_err)?;
        let claim: Claim = decode(&v.ok_or(ClaimError::Unknown)?)?;
        claim.usable(now_ms)?;
        Ok(claim)
    }

    fn consume(
        &self,
        digest: &TokenDigest,
        device: &str,
        now_ms: u64,
    ) -> Result<Claim, ClaimError> {
        self.update(digest, |mut c| {
            c.usable(now_ms)?;
            c.used = Some(ClaimUse {
                device: device.to_string(),
                at_ms: now_ms,
            });
            Ok(c)
        })
    }

    fn release(&self, digest: &TokenDigest) -> Result<(), ClaimError> {
        self.update(digest, |mut c| {
            c.used = None;
            Ok(c)
        })
        .map(|_| ())
    }

    fn revoke(&self, id: &str, now_ms: u64) -> Result<Claim, ClaimError> {
        let key = self
            .claims
            .iter()
            .filter_map(Result::ok)
            .find(|(_, v)| decode::<Claim>(v).is_ok_and(|c| c.id == id))
            .map(|(k, _)| k)
            .ok_or_else(|| ClaimError::NoSuchId(id.to_string()))?;
        self.update(&key, |mut c| {
            c.revoked_ms.get_or_insert(now_ms);
            Ok(c)
        })
    }

    fn record(&self, issue: &IssueRecord) -> Result<(), ClaimError> {
        self.issued
            .insert(issue.serial.to_be_bytes(), encode(issue)?)
            .map_err(store_err)?;
        self.db.flush().map_err(store_err)?;
        Ok(())
    }

    fn issued(&self) -> Result<Vec<IssueRecord>, ClaimError> {
        self.issued
            .iter()
            .values()
            .map(|v| decode(&v.map_err(store_err)?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrol::claims::new_token;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn claim(id: &str, expires_ms: u64) -> Claim {
        Claim {
            id: id.into(),
            labels: BTreeMap::new(),
            name_prefix: String::new(),
            created_ms: 0,
            expires_ms,
            used: None,
            revoked_ms: None,
        }
    }

    #[test]
    fn of_racing_consumers_exactly_one_wins() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(SledClaims::open(dir.path()).expect("open"));
        let (_, d, id) = new_token().expect("token");
        store.insert(&d, &claim(&id, u64::MAX)).expect("insert");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = store.clone();
                std::thread::spawn(move || s.consume(&d, &format!("dev-{i}"), 1))
            })
            .collect();
        let results: Vec<_> = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .all(|e| matches!(e, ClaimError::Used { .. }))
        );
    }

    #[test]
    fn opens_again_at_once_after_a_drop() {
        // sled's threads may hold the database's lock for a moment after the last handle is
        // dropped; a dropped store waits for it (an in-process hub restart reopens at once).
        let dir = tempfile::tempdir().expect("tmp");
        for n in 1..=20usize {
            let s = SledClaims::open(dir.path()).expect("open again at once");
            let (_, d, id) = new_token().expect("token");
            s.insert(&d, &claim(&id, u64::MAX)).expect("insert");
            assert_eq!(s.list().expect("list").len(), n, "kept across reopens");
        }
    }

    #[test]
    fn survives_reopen_and_refuses_expired_revoked_unknown() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_, d1, id1) = new_token().expect("token");
        let (_, d2, id2) = new_token().expect("token");
        {
            let s = SledClaims::open(dir.path()).expect("open");
            s.insert(&d1, &claim(&id1, 1000)).expect("insert");
            s.insert(&d2, &claim(&id2, u64::MAX)).expect("insert");
        }
        let s = SledClaims::open(dir.path()).expect("reopen");
        assert_eq!(s.list().expect("list").len(), 2);
        assert!(matches!(
            s.consume(&d1, "a", 1000),
            Err(ClaimError::Expired { .. })
        ));
        s.revoke(&id2, 5).expect("revoke");
        assert!(matches!(
            s.consume(&d2, "a", 6),
            Err(ClaimError::Revoked(_))
        ));
        assert!(matches!(
            s.consume(&[0; 32], "a", 6),
            Err(ClaimError::Unknown)
        ));
        assert!(matches!(s.revoke("nope", 6), Err(ClaimError::NoSuchId(_))));
    }
}
