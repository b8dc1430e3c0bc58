//! Where keys live: the `KeyStore` trait, its error kinds, the shared listing rule, and the
//! stores (`mem` for `--dev` and tests, `fs` for a directory, `azure` for Key Vault), plus
//! the key cache every lookup goes through (`cache`).
//!
//! A store keeps opaque stored values (`kes-crypto.md` §2); it never parses them and never
//! rewrites them. Must not: know about HTTP statuses or JSON of the KES API.
//!
//! Versions (key rotation, issue 12): a key is an ordered list of versions, each a stored
//! value of its own. The **first** version is what [`KeyStore::get`] reads and what
//! upstream KES (and older builds of ours) see as the key; later versions are added by
//! [`KeyStore::add_version`] and can be retired and re-enabled with
//! [`KeyStore::set_version_enabled`]. A store that does not know versions keeps working:
//! the default [`KeyStore::versions`] reports the one value `get` reads as the version
//! [`FIRST_VERSION_ID`], and the two writers refuse. Every store orders versions the same
//! way on every server (never by local clocks alone), so concurrent rotations converge.

pub mod azure;
pub mod cache;
pub mod fs;
pub mod mem;

use std::fmt;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// At most this many names in one listing page (`kes-azure-keystore.md` §3.6).
pub const LIST_PAGE_SIZE: usize = 1024;

/// A stored key value (base64 protobuf or legacy JSON). Secret: zeroized on drop.
pub type StoredValue = Zeroizing<Vec<u8>>;

/// The id [`KeyStore::versions`] gives the one version of a store without versions, and the
/// id of the first version (the key file) in the `mem` and `fs` stores.
pub const FIRST_VERSION_ID: &str = "0";

/// Most versions one key may have, retired ones included. Bounds what a cache load reads
/// and what a describe answer lists; a rotation beyond it is refused.
pub const MAX_VERSIONS: usize = 64;

/// Most *enabled* versions one key may have. A decrypt without a `version` hint tries each
/// live version, newest first, until one authenticates: a failed attempt costs about a
/// microsecond, so this bounds a wrong ciphertext to ~16 µs of work. A rotation beyond it is
/// refused until a version is retired.
pub const MAX_LIVE_VERSIONS: usize = 16;

/// Longest version id (Key Vault's are 32 hex digits).
pub const MAX_VERSION_ID_LEN: usize = 64;

/// Whether `id` has the shape of a version id: 1..=64 bytes of `[0-9A-Za-z-]`. Checked
/// before an id reaches a store (a path segment in `fs`, a URL segment in Azure).
pub fn valid_version_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_VERSION_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A fresh random version id (16 hex digits) for stores that assign their own.
pub fn new_version_id() -> Result<String, StoreError> {
    let mut random = [0u8; 8];
    getrandom::getrandom(&mut random)
        .map_err(|e| StoreError::Failed(format!("no randomness for a version id: {e}")))?;
    Ok(random.iter().map(|b| format!("{b:02x}")).collect())
}

/// One version of a key as a store keeps it.
pub struct StoredVersion {
    /// Assigned by the store; stable, and the same on every server sharing the store.
    pub id: String,
    /// False while the version is retired.
    pub enabled: bool,
    /// The stored value; `None` for a retired version a store cannot read (Key Vault
    /// refuses to return a disabled version's value).
    pub value: Option<StoredValue>,
}

impl fmt::Debug for StoredVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredVersion")
            .field("id", &self.id)
            .field("enabled", &self.enabled)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What a store without versions answers to the version writers.
fn versions_unsupported(store: &str) -> StoreError {
    StoreError::Failed(format!("{store}: this key store does not support key versions"))
}

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

    /// Every version of `name`, the first (what [`KeyStore::get`] reads) first, then in the
    /// order they were added; the order is the same on every server sharing the store.
    /// `NotFound` when the key does not exist. Default: the one value `get` reads.
    fn versions(&self, name: &str, deadline: Instant) -> Result<Vec<StoredVersion>, StoreError> {
        let value = self.get(name, deadline)?;
        Ok(vec![StoredVersion {
            id: FIRST_VERSION_ID.to_string(),
            enabled: true,
            value: Some(value),
        }])
    }

    /// Adds `value` as the newest version of the existing key `name` and returns its id.
    /// `NotFound` when the key does not exist. Never replaces a version.
    fn add_version(
        &self,
        name: &str,
        value: &[u8],
        deadline: Instant,
    ) -> Result<String, StoreError> {
        let _ = (name, value, deadline);
        Err(versions_unsupported(&self.describe()))
    }

    /// Retires (`enabled = false`) or re-enables version `id` of `name`. `NotFound` when the
    /// key or the version does not exist.
    fn set_version_enabled(
        &self,
        name: &str,
        id: &str,
        enabled: bool,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let _ = (name, id, enabled, deadline);
        Err(versions_unsupported(&self.describe()))
    }

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
