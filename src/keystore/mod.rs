//! Where keys live: the `KeyStore` trait, its error kinds, the shared listing rule, and the
//! stores (`mem` for `--dev` and tests, `fs` for a directory, `azure` for Key Vault), plus
//! the key cache every lookup goes through (`cache`) and its optional sealed copy on disk
//! (`sealed`, for vault outages across restarts).
//!
//! A store keeps opaque stored values (`kes-crypto.md` §2); it never parses them and never
//! rewrites them. Must not: know about HTTP statuses or JSON of the KES API.

pub mod azure;
pub mod cache;
pub mod fs;
pub mod mem;
pub mod sealed;

use std::fmt;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// At most this many names in one listing page (`kes-azure-keystore.md` §3.6).
pub const LIST_PAGE_SIZE: usize = 1024;

/// A stored key value (base64 protobuf or legacy JSON). Secret: zeroized on drop.
pub type StoredValue = Zeroizing<Vec<u8>>;

/// What went wrong in a store. `Display` never contains a stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The name does not exist (`404 key does not exist`).
    NotFound,
    /// Create found the name taken (`400 key already exists`).
    Exists,
    /// The store cannot be reached at all (transport failure, offline).
    Unreachable(String),
    /// Any other failure: authentication, permissions, throttling, bad answers.
    Failed(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("key does not exist"),
            StoreError::Exists => f.write_str("key already exists"),
            StoreError::Unreachable(m) => write!(f, "key store is not reachable: {m}"),
            StoreError::Failed(m) => f.write_str(m),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Sorted ascending by bytes.
    pub names: Vec<String>,
    /// The first name not returned, or empty when the listing is complete.
    pub continue_at: String,
}

/// Counters a store keeps about its backend (zero where not applicable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Requests sent to the backend (every attempt, retries included).
    pub requests: u64,
    /// Answers that asked us to slow down (HTTP 429).
    pub throttled: u64,
    /// Attempts repeated after a transient failure.
    pub retries: u64,
}

/// A persistent home for stored key values. Every call is blocking and must return by
/// `deadline` (the request's route timeout); stores without network I/O may ignore it.
pub trait KeyStore: Send + Sync + 'static {
    /// For the banner, e.g. `Azure KeyVault: https://v.vault.azure.net`.
    fn describe(&self) -> String;

    /// Probes the store; `Ok` carries the round-trip latency.
    fn status(&self, deadline: Instant) -> Result<Duration, StoreError>;

    /// Creates `name` with `value` if and only if it does not exist yet.
    fn create(&self, name: &str, value: &[u8], deadline: Instant) -> Result<(), StoreError>;

    /// Reads the stored value of `name`.
    fn get(&self, name: &str, deadline: Instant) -> Result<StoredValue, StoreError>;

    /// Deletes `name`.
    fn delete(&self, name: &str, deadline: Instant) -> Result<(), StoreError>;

    /// Lists names starting with `prefix` as `list_page` pages them.
    fn list(&self, prefix: &str, deadline: Instant) -> Result<Listing, StoreError>;

    /// Backend counters for `/v1/metrics`.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

/// Upstream's generic listing rule (`kes-azure-keystore.md` §3.6), shared by every store:
/// sort, keep the run of names with `prefix`, and cut at [`LIST_PAGE_SIZE`] with the quirk
/// that exactly one name more than a page is returned in full.
pub fn list_page(mut names: Vec<String>, prefix: &str) -> Listing {
    names.sort_unstable();
    names.dedup();
    let start = if prefix.is_empty() {
        0
    } else {
        match names.iter().position(|n| n.starts_with(prefix)) {
            Some(i) => i,
            None => return Listing::default(),
        }
    };
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate().skip(start) {
        if !name.starts_with(prefix) {
            return Listing { names: out, continue_at: String::new() };
        }
        if out.len() == LIST_PAGE_SIZE {
            if i == names.len() - 1 {
                out.push(name.clone());
                return Listing { names: out, continue_at: String::new() };
            }
            return Listing { names: out, continue_at: name.clone() };
        }
        out.push(name.clone());
    }
    Listing { names: out, continue_at: String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize, prefix: &str) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:05}")).collect()
    }

    #[test]
    fn listing_sorts_and_filters_by_prefix() {
        let l = list_page(vec!["b".into(), "a-2".into(), "a-1".into(), "c".into()], "a-");
        assert_eq!(l.names, vec!["a-1", "a-2"]);
        assert_eq!(l.continue_at, "");
        assert_eq!(list_page(vec!["x".into()], "a"), Listing::default());
        let all = list_page(vec!["b".into(), "a".into()], "");
        assert_eq!(all.names, vec!["a", "b"]);
    }

    #[test]
    fn listing_pages_at_1024_with_upstreams_quirk() {
        let l = list_page(names(1024, "k"), "");
        assert_eq!(l.names.len(), 1024);
        assert_eq!(l.continue_at, "");
        // Exactly one more than a page: returned in full.
        let l = list_page(names(1025, "k"), "");
        assert_eq!(l.names.len(), 1025);
        assert_eq!(l.continue_at, "");
        let l = list_page(names(1026, "k"), "");
        assert_eq!(l.names.len(), 1024);
        assert_eq!(l.continue_at, "k01024");
        let mut mixed = names(2000, "k");
        mixed.push("z".into());
        let l = list_page(mixed, "k");
        assert_eq!(l.names.len(), 1024);
        assert_eq!(l.continue_at, "k01024");
    }
}
