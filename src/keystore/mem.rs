//! In-memory store for `kes server --dev` and tests. Values are zeroized when dropped.
//!
//! Owns: a sorted map of names to stored values behind one mutex, a read counter and a
//! fault switch for tests. Must not: persist anything or parse the values it keeps.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{KeyStore, Listing, StoreError, StoredValue, list_page};

/// What a call returns while [`MemStore::set_unreachable`] is on.
const UNREACHABLE: &str = "in-memory store switched to unreachable";

/// A volatile key store. `Default` is the same as [`MemStore::new`].
#[derive(Default)]
pub struct MemStore {
    keys: Mutex<BTreeMap<String, StoredValue>>,
    reads: AtomicU64,
    unreachable: AtomicBool,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// How many times `get` was called, including calls that failed. Lets tests prove
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
    fn keys(&self) -> MutexGuard<'_, BTreeMap<String, StoredValue>> {
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
        keys.insert(name.to_string(), StoredValue::new(value.to_vec()));
        Ok(())
    }

    fn get(&self, name: &str, _deadline: Instant) -> Result<StoredValue, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.check_reachable()?;
        match self.keys().get(name) {
            Some(value) => Ok(StoredValue::new(value.to_vec())),
            None => Err(StoreError::NotFound),
        }
    }

    fn delete(&self, name: &str, _deadline: Instant) -> Result<(), StoreError> {
        self.check_reachable()?;
        // The removed value is a `Zeroizing` and is wiped as it drops here.
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
