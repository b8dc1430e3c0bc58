//! In-memory store for `kes server --dev` and tests. Values are zeroized when dropped.
//!
//! Owns: a sorted map of names to their versions (the first is the key's value) behind one
//! mutex, a read counter and a fault switch for tests. Must not: persist anything or parse the values it keeps.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{
    FIRST_VERSION_ID, KeyStore, Listing, StoreError, StoredValue, StoredVersion, list_page,
    new_version_id,
};

/// What a call returns while [`MemStore::set_unreachable`] is on.
const UNREACHABLE: &str = "in-memory store switched to unreachable";

/// One version in memory.
struct MemVersion {
    id: String,
    enabled: bool,
    value: StoredValue,
}

/// A volatile key store. `Default` is the same as [`MemStore::new`].
#[derive(Default)]
pub struct MemStore {
    /// Each key's versions in the order they were added; never empty.
    keys: Mutex<BTreeMap<String, Vec<MemVersion>>>,
    reads: AtomicU64,
    unreachable: AtomicBool,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// How many times `get` or `versions` was called, including calls that failed. Lets tests prove
    /// that a cache did (or did not) reach the backend.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// Fault injection: while `true`, every call fails with `StoreError::Unreachable`, as
    /// a store behind a broken network would.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.unreachable.store(unreachable, Ordering::SeqCst);
    }

    fn check_reachable(&self) -> Result<(), StoreError> {
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(StoreError::Unreachable(UNREACHABLE.to_string()));
        }
        Ok(())
    }

    /// The map is never left half-updated (every mutation is one `BTreeMap` call), so a
    /// panic in another thread holding the lock leaves it consistent: ignore poisoning.
    fn keys(&self) -> MutexGuard<'_, BTreeMap<String, Vec<MemVersion>>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeyStore for MemStore {
    fn describe(&self) -> String {
        "In Memory".to_string()
    }

    fn status(&self, _deadline: Instant) -> Result<Duration, StoreError> {
        let start = Instant::now();
        self.check_reachable()?;
        drop(self.keys());
        Ok(start.elapsed())
    }

    fn create(&self, name: &str, value: &[u8], _deadline: Instant) -> Result<(), StoreError> {
        self.check_reachable()?;
        let mut keys = self.keys();
        if keys.contains_key(name) {
            return Err(StoreError::Exists);
        }
        let first = MemVersion {
            id: FIRST_VERSION_ID.to_string(),
            enabled: true,
            value: StoredValue::new(value.to_vec()),
        };
        keys.insert(name.to_string(), vec![first]);
        Ok(())
    }

    fn get(&self, name: &str, _deadline: Instant) -> Result<StoredValue, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.check_reachable()?;
        match self.keys().get(name).and_then(|v| v.first()) {
            Some(first) => Ok(StoredValue::new(first.value.to_vec())),
            None => Err(StoreError::NotFound),
        }
    }

    fn versions(&self, name: &str, _deadline: Instant) -> Result<Vec<StoredVersion>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.check_reachable()?;
        let keys = self.keys();
        let versions = keys.get(name).ok_or(StoreError::NotFound)?;
        Ok(versions
            .iter()
            .map(|v| StoredVersion {
                id: v.id.clone(),
                enabled: v.enabled,
                value: Some(StoredValue::new(v.value.to_vec())),
            })
            .collect())
    }

    fn add_version(
        &self,
        name: &str,
        value: &[u8],
        _deadline: Instant,
    ) -> Result<String, StoreError> {
        self.check_reachable()?;
        let id = new_version_id()?;
        let mut keys = self.keys();
        let versions = keys.get_mut(name).ok_or(StoreError::NotFound)?;
        versions.push(MemVersion {
            id: id.clone(),
            enabled: true,
            value: StoredValue::new(value.to_vec()),
        });
        Ok(id)
    }

    fn set_version_enabled(
        &self,
        name: &str,
        id: &str,
        enabled: bool,
        _deadline: Instant,
    ) -> Result<(), StoreError> {
        self.check_reachable()?;
        let mut keys = self.keys();
        let versions = keys.get_mut(name).ok_or(StoreError::NotFound)?;
        let version = versions.iter_mut().find(|v| v.id == id).ok_or(StoreError::NotFound)?;
        version.enabled = enabled;
        Ok(())
    }

    fn delete(&self, name: &str, _deadline: Instant) -> Result<(), StoreError> {
        self.check_reachable()?;
        // The removed values are `Zeroizing` and are wiped as they drop here.
        match self.keys().remove(name) {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound),
        }
    }

    fn list(&self, prefix: &str, _deadline: Instant) -> Result<Listing, StoreError> {
        self.check_reachable()?;
        let names = self.keys().keys().filter(|n| n.starts_with(prefix)).cloned().collect();
        Ok(list_page(names, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn create_get_delete_roundtrip() {
        let s = MemStore::new();
        assert_eq!(s.describe(), "In Memory");
        s.create("k1", b"value-1", later()).unwrap();
        assert_eq!(s.get("k1", later()).unwrap().as_slice(), b"value-1");
        assert_eq!(s.create("k1", b"other", later()), Err(StoreError::Exists));
        // A refused create must not replace the value.
        assert_eq!(s.get("k1", later()).unwrap().as_slice(), b"value-1");
        s.delete("k1", later()).unwrap();
        assert_eq!(s.get("k1", later()), Err(StoreError::NotFound));
        assert_eq!(s.delete("k1", later()), Err(StoreError::NotFound));
        assert_eq!(s.reads(), 3);
    }

    #[test]
    fn versions_are_added_retired_and_listed_in_order() {
        let s = MemStore::new();
        assert_eq!(s.add_version("k", b"v2", later()), Err(StoreError::NotFound));
        s.create("k", b"v1", later()).unwrap();
        let id2 = s.add_version("k", b"v2", later()).unwrap();
        let id3 = s.add_version("k", b"v3", later()).unwrap();
        s.set_version_enabled("k", &id2, false, later()).unwrap();
        assert_eq!(s.set_version_enabled("k", "nope", false, later()), Err(StoreError::NotFound));
        let v = s.versions("k", later()).unwrap();
        let got: Vec<_> = v
            .iter()
            .map(|v| (v.id.as_str(), v.enabled, v.value.as_ref().unwrap().as_slice()))
            .collect();
        assert_eq!(got, [("0", true, &b"v1"[..]), (&id2, false, b"v2"), (&id3, true, b"v3")]);
        // `get` still reads the first version, as a store without versions would.
        assert_eq!(s.get("k", later()).unwrap().as_slice(), b"v1");
        s.delete("k", later()).unwrap();
        assert_eq!(s.versions("k", later()).unwrap_err(), StoreError::NotFound);
    }

    #[test]
    fn list_uses_the_shared_rule() {
        let s = MemStore::new();
        for n in ["b-2", "a-1", "b-1", "c"] {
            s.create(n, b"v", later()).unwrap();
        }
        let l = s.list("b-", later()).unwrap();
        assert_eq!(l.names, vec!["b-1", "b-2"]);
        assert_eq!(l.continue_at, "");
        assert_eq!(s.list("", later()).unwrap().names, vec!["a-1", "b-1", "b-2", "c"]);
        assert_eq!(s.list("zz", later()).unwrap(), Listing::default());
    }

    #[test]
    fn unreachable_switch_fails_every_call_and_counts_reads() {
        let s = MemStore::new();
        s.create("k", b"v", later()).unwrap();
        s.set_unreachable(true);
        let down = StoreError::Unreachable(UNREACHABLE.to_string());
        assert_eq!(s.status(later()), Err(down.clone()));
        assert_eq!(s.get("k", later()), Err(down.clone()));
        assert_eq!(s.create("x", b"v", later()), Err(down.clone()));
        assert_eq!(s.delete("k", later()), Err(down.clone()));
        assert_eq!(s.list("", later()), Err(down));
        assert_eq!(s.reads(), 1);
        s.set_unreachable(false);
        assert!(s.status(later()).unwrap() < Duration::from_secs(1));
        assert_eq!(s.get("k", later()).unwrap().as_slice(), b"v");
        assert_eq!(s.reads(), 2);
    }
}
