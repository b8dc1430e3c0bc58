//! In-memory store for `kes server --dev` and tests. Values are zeroized when dropped.
//! (Placeholder until the full store lands.)

use super::{KeyStore, Listing, StoreError, StoredValue, list_page};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct MemStore {
    keys: Mutex<BTreeMap<String, StoredValue>>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }
}

impl KeyStore for MemStore {
    fn describe(&self) -> String {
        "In Memory".to_string()
    }
    fn status(&self, _: Instant) -> Result<Duration, StoreError> {
        Ok(Duration::from_micros(1))
    }
    fn create(&self, name: &str, value: &[u8], _: Instant) -> Result<(), StoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.contains_key(name) {
            return Err(StoreError::Exists);
        }
        keys.insert(name.to_string(), zeroize::Zeroizing::new(value.to_vec()));
        Ok(())
    }
    fn get(&self, name: &str, _: Instant) -> Result<StoredValue, StoreError> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.get(name).cloned().ok_or(StoreError::NotFound)
    }
    fn delete(&self, name: &str, _: Instant) -> Result<(), StoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.remove(name).map(|_| ()).ok_or(StoreError::NotFound)
    }
    fn list(&self, prefix: &str, _: Instant) -> Result<Listing, StoreError> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        Ok(list_page(keys.keys().cloned().collect(), prefix))
    }
}
