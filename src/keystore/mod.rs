//! Where keys live: the `KeyStore` trait, its error kinds, the shared listing rule, and the
//! stores (`mem` for `--dev` and tests, `fs` for a directory, `azure` for Key Vault), plus
//! the key cache every lookup goes through (`cache`) and its optional sealed copy on disk
//! (`sealed`, for vault outages across restarts).
//!
//! A store keeps opaque stored values (`kes-crypto.md` §2); it never parses them and never
//! rewrites them, and neither does the cache: it keeps what the parser the API layer hands
//! it builds (`api::parse_key`). Must not: know about HTTP statuses or JSON of the KES API.
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
pub mod sealed;

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
    Ok(crate::hex::encode(&random))
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

/// First bytes of [`StoredVersion::encode_all`]'s output. No stored value starts with it
/// (they are base64 or JSON text), so a copy holding one bare value is told apart.
const VERSIONS_MAGIC: &[u8; 8] = b"KESVERS\x01";

impl StoredVersion {
    /// All versions of a key in one buffer (for the sealed cache): the magic, then per
    /// version `enabled (u8) | id length (u16 BE) | id | value length (u32 BE) | value`,
    /// where a retired version's value is always left out (length 0): retired material is
    /// never written anywhere.
    pub fn encode_all(versions: &[StoredVersion]) -> StoredValue {
        let mut out = StoredValue::new(Vec::new());
        let size: usize =
            versions.iter().map(|v| 7 + v.id.len() + v.value.as_ref().map_or(0, |x| x.len())).sum();
        out.reserve(VERSIONS_MAGIC.len() + size);
        out.extend_from_slice(VERSIONS_MAGIC);
        for v in versions {
            let value: &[u8] = match &v.value {
                Some(x) if v.enabled => x,
                _ => &[],
            };
            out.push(u8::from(v.enabled));
            out.extend_from_slice(&u16::try_from(v.id.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(v.id.as_bytes());
            out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(value);
        }
        out
    }

    /// The inverse of [`StoredVersion::encode_all`]. A buffer without the magic is one bare
    /// stored value (a copy written before keys had versions): the first version.
    pub fn decode_all(bytes: &[u8]) -> Result<Vec<StoredVersion>, &'static str> {
        const BAD: &str = "malformed list of key versions";
        let Some(mut rest) = bytes.strip_prefix(VERSIONS_MAGIC.as_slice()) else {
            return Ok(vec![StoredVersion {
                id: FIRST_VERSION_ID.to_string(),
                enabled: true,
                value: Some(StoredValue::new(bytes.to_vec())),
            }]);
        };
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
            let (head, tail) = rest.split_at_checked(n).ok_or(BAD)?;
            *rest = tail;
            Ok(head)
        }
        let mut out = Vec::new();
        while !rest.is_empty() {
            if out.len() == MAX_VERSIONS {
                return Err(BAD);
            }
            let enabled = take(&mut rest, 1)?[0] == 1;
            let id_len = u16::from_be_bytes(take(&mut rest, 2)?.try_into().map_err(|_| BAD)?);
            let id = std::str::from_utf8(take(&mut rest, usize::from(id_len))?).map_err(|_| BAD)?;
            if !valid_version_id(id) {
                return Err(BAD);
            }
            let len = u32::from_be_bytes(take(&mut rest, 4)?.try_into().map_err(|_| BAD)?);
            let value = take(&mut rest, usize::try_from(len).map_err(|_| BAD)?)?;
            out.push(StoredVersion {
                id: id.to_string(),
                enabled,
                value: enabled.then(|| StoredValue::new(value.to_vec())),
            });
        }
        if out.is_empty() { Err(BAD) } else { Ok(out) }
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
    fn version_lists_round_trip_without_retired_material() {
        let v = |id: &str, enabled: bool, value: &[u8]| StoredVersion {
            id: id.into(),
            enabled,
            value: Some(StoredValue::new(value.to_vec())),
        };
        let list = vec![v("0", true, b"first"), v("ab-12", false, b"retired"), v("cd", true, b"")];
        let bytes = StoredVersion::encode_all(&list);
        assert!(!bytes.windows(7).any(|w| w == b"retired"), "retired material is not encoded");
        let back = StoredVersion::decode_all(&bytes).unwrap();
        let got: Vec<_> = back
            .iter()
            .map(|v| (v.id.as_str(), v.enabled, v.value.as_ref().map(|x| x.to_vec())))
            .collect();
        assert_eq!(
            got,
            [
                ("0", true, Some(b"first".to_vec())),
                ("ab-12", false, None),
                ("cd", true, Some(vec![]))
            ]
        );
        // A bare value (a copy sealed before versions) is the first version.
        let bare = StoredVersion::decode_all(b"Ci0KIJ").unwrap();
        assert_eq!((bare.len(), bare[0].id.as_str()), (1, FIRST_VERSION_ID));
        // Truncations and bad ids are refused, never read past the end.
        for cut in 9..bytes.len() {
            let r = StoredVersion::decode_all(&bytes[..cut]);
            assert!(r.is_err() || r.unwrap().len() < 3, "cut {cut}");
        }
        let mut bad = bytes.to_vec();
        bad[VERSIONS_MAGIC.len() + 3] = b'/';
        assert!(StoredVersion::decode_all(&bad).is_err());
        assert!(StoredVersion::decode_all(VERSIONS_MAGIC).is_err());
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
