//! Opening a hub store's sled database and keeping JSON values in its trees: the set-up and
//! the get/list/put code that the calibration, eval, claim, fleet, feedback and rollout stores
//! each wrote out. Only store modules call it (`pub(crate)`), and each maps [`SledError`] into
//! its own error, so no sled type goes further than a store's module.

use crate::sled_release::Released;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::Arc;

/// Why opening, reading or writing a store's database failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SledError {
    /// Another handle (another hub, or one not yet closed) holds the database's lock.
    #[error("{0}")]
    Locked(String),
    /// The file system refused.
    #[error("{0}")]
    Io(String),
    /// sled failed otherwise (on open: the database is corrupt).
    #[error("{0}")]
    Db(String),
    /// A stored value is not the JSON its store keeps, or a value cannot be written as JSON.
    #[error("a stored value: {0}")]
    Json(String),
}

impl From<sled::Error> for SledError {
    fn from(e: sled::Error) -> Self {
        match &e {
            sled::Error::Io(io)
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                Self::Locked(e.to_string())
            }
            sled::Error::Io(_) => Self::Io(e.to_string()),
            _ => Self::Db(e.to_string()),
        }
    }
}

/// Opens (or creates) the sled database in folder `path` with a page cache of at most
/// `cache_bytes`, with the guard that waits, when its last clone is dropped, until sled has
/// unlocked the folder (`crate::sled_release`): keep it as the store's last field, after every
/// handle and tree.
pub(crate) fn open(path: &Path, cache_bytes: u64) -> Result<(sled::Db, Arc<Released>), SledError> {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .open()?;
    Ok((db, Arc::new(Released::new(path))))
}

/// The JSON value under `key` in `tree`.
pub(crate) fn get_json<T: DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, SledError> {
    tree.get(key)?
        .map(|v| serde_json::from_slice(&v).map_err(|e| SledError::Json(e.to_string())))
        .transpose()
}

/// What `pick` makes of each JSON value in `tree`, in key order (`None`: left out).
pub(crate) fn list_json<T: DeserializeOwned, U>(
    tree: &sled::Tree,
    mut pick: impl FnMut(T) -> Option<U>,
) -> Result<Vec<U>, SledError> {
    let mut out = Vec::new();
    for kv in tree.iter() {
        let (_, v) = kv?;
        let value: T = serde_json::from_slice(&v).map_err(|e| SledError::Json(e.to_string()))?;
        out.extend(pick(value));
    }
    Ok(out)
}

/// Stores `value` as JSON under `key` in `tree`, durable on return (the database flushed).
pub(crate) fn put_json(
    tree: &sled::Tree,
    key: &[u8],
    value: &impl Serialize,
) -> Result<(), SledError> {
    let value = serde_json::to_vec(value).map_err(|e| SledError::Json(e.to_string()))?;
    tree.insert(key, value)?;
    tree.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_a_second_open_is_locked_until_the_first_is_released() {
        let tmp = tempfile::Builder::new()
            .prefix("tandem-sled-store-")
            .tempdir()
            .expect("tmp");
        let dir = tmp.path();
        let (db, released) = open(dir, 1 << 20).expect("a fresh folder opens");
        let tree = db.open_tree("t").expect("a tree opens");
        put_json(&tree, b"a", &1u32).expect("stored");
        put_json(&tree, b"b", &2u32).expect("stored");
        put_json(&tree, b"c", &3u32).expect("stored");
        assert_eq!(get_json::<u32>(&tree, b"b").expect("read"), Some(2));
        assert_eq!(get_json::<u32>(&tree, b"z").expect("read"), None);
        assert_eq!(
            list_json(&tree, |v: u32| (v != 2).then_some(v * 10)).expect("listed"),
            vec![10, 30]
        );
        tree.insert(b"d", b"not json".to_vec()).expect("stored");
        assert!(matches!(
            list_json(&tree, Some::<u32>),
            Err(SledError::Json(_))
        ));
        assert!(matches!(open(dir, 1 << 20), Err(SledError::Locked(_))));
        drop((tree, db, released));
        let (db, _released) = open(dir, 1 << 20).expect("reopens once released");
        let tree = db.open_tree("t").expect("a tree opens");
        assert_eq!(get_json::<u32>(&tree, b"c").expect("read"), Some(3));
        drop((tree, db, _released));
        tmp.close().expect("scratch removed");
    }
}
