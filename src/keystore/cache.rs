//! The key cache in front of every store (`kes-azure-keystore.md` §7).
//! (Placeholder until the full cache lands: no expiry, no single-flight.)

use super::{KeyStore, StoreError};
use crate::config::CacheConfig;
use crate::crypto::{FormatError, KeyVersion};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    Store(StoreError),
    Format(FormatError),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub backend_reads: u64,
}

pub struct KeyCache {
    store: Arc<dyn KeyStore>,
    keys: Mutex<HashMap<String, Arc<KeyVersion>>>,
}

impl KeyCache {
    pub fn new(store: Arc<dyn KeyStore>, config: CacheConfig) -> Arc<KeyCache> {
        let _ = config;
        Arc::new(KeyCache { store, keys: Mutex::new(HashMap::new()) })
    }

    pub fn get(&self, name: &str, deadline: Instant) -> Result<Arc<KeyVersion>, CacheError> {
        if let Some(k) = self.keys.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(k.clone());
        }
        let value = self.store.get(name, deadline).map_err(CacheError::Store)?;
        let key = Arc::new(KeyVersion::parse(&value).map_err(CacheError::Format)?);
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), key.clone());
        Ok(key)
    }

    pub fn remove(&self, name: &str) {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
    }

    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    pub fn is_offline(&self) -> bool {
        false
    }

    pub fn status(&self, deadline: Instant) -> Result<Duration, StoreError> {
        self.store.status(deadline)
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats::default()
    }

    pub fn shutdown(&self) {}
}
