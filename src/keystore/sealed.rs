//! The sealed persistent key cache (`cache.persist`, our extension): every stored value the
//! server reads from the vault is also written, sealed, to a local directory, so that a
//! restart during a vault outage can keep serving the keys it already knew.
//!
//! One file per key, `<name>.sealed`, mode 0600 in a 0700 directory, written crash-safe
//! (temporary file, fsync, rename over the old copy, fsync of the directory). Layout:
//!
//! ```text
//! "KESSEAL" | format 0x01 | key id (8) | store id (8) | sealed_at (u64 BE, Unix s) | nonce (12)
//! | AES-256-GCM(stored value) with its 16-byte tag
//! ```
//!
//! The associated data is the whole 44-byte header, then the key name, a NUL and the key
//! version (empty until keys have versions). So a file renamed to another key, a header
//! edited to look younger, or any flipped bit fails authentication. The key id (derived
//! from the sealing key) and the store id (SHA-256 of the store's description, e.g. the
//! vault URL) are in clear so a refusal can say *why*: another sealing key, another store.
//!
//! The sealing key never encrypts directly: an AEAD key, the key id and a fingerprint key
//! (to tell whether a value changed without decrypting the old copy) are each derived
//! from it with HMAC-SHA-256 under their own label.
//!
//! Owns: the file format and every filesystem call on the cache directory. Must not: parse
//! stored values (the key cache does), serve a copy older than `max_age`, or put key bytes
//! into a log line or an error.

use std::collections::{HashMap, HashSet};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::{digest, hmac};
use zeroize::Zeroizing;

use super::StoredValue;
use super::fs::{MAX_VALUE_LEN, OPEN_FLAGS, TempFile, read_bounded, safe_file_name};
use log::Level;

/// Length of a sealing key: 32 random bytes (one line of standard base64 on disk).
pub const SEAL_KEY_LEN: usize = 32;

/// First bytes of every sealed file.
const MAGIC: &[u8; 7] = b"KESSEAL";

/// The layout above. A file with another version byte is refused, never guessed at.
pub const FORMAT_VERSION: u8 = 1;

/// Length of the key id and of the store id in the header.
const ID_LEN: usize = 8;

/// Magic, version, key id, store id, sealed_at, nonce.
const HEADER_LEN: usize = MAGIC.len() + 1 + ID_LEN + ID_LEN + 8 + NONCE_LEN;

/// AES-256-GCM's tag.
const TAG_LEN: usize = 16;

/// Largest sealed file read: the largest stored value any store accepts, sealed. A bigger
/// file is not ours, and reading it unbounded would let a stray file exhaust memory.
pub const MAX_SEALED_FILE: usize = MAX_VALUE_LEN + HEADER_LEN + TAG_LEN;

/// Name suffix of sealed files. Temporary files start with `.` and never carry it whole.
const SUFFIX: &str = ".sealed";

/// The directory is the service user's alone: file names are key names. Files get the fs
/// store's 0600 from its temporary-file helper.
const DIR_MODE: u32 = 0o700;

/// The key version bound into the associated data. Keys have one version today; the label
/// is kept so a later multi-version format cannot be confused with this one.
const LATEST: &str = "";

/// Removals are counted in this many stripes (a key name picks one by its hash), so that a
/// save ordered against removals ([`SealedCache::save_unless_removed`]) waits only for the
/// removals and saves of names in its stripe, not for every fsync in the directory.
const ORDER_STRIPES: usize = 64;

/// Where log lines go (the server hands in its error log, mapping the `log` crate's levels
/// onto slog's with `obs::Level::from`). The key cache and this module are L1 and must not
/// import `obs`.
pub type LogSink = Box<dyn Fn(Level, &str) + Send + Sync>;

/// Why a sealed copy is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No sealed copy of that name.
    Missing,
    /// Authentic, but sealed longer than `max_age` ago.
    Stale,
    /// Not a valid copy for this name, sealing key and store: the reason, for the log.
    Invalid(String),
}

/// A sealed copy that authenticated and is fresh enough.
pub struct Unsealed {
    pub value: StoredValue,
    pub sealed_at: SystemTime,
}

/// What `/v1/status` and the banner say about the cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedInfo {
    pub path: PathBuf,
    pub max_age: Duration,
}

/// The sealed cache directory. `Send + Sync`; shared by the key cache and its threads.
pub struct SealedCache {
    dir: PathBuf,
    aead: LessSafeKey,
    fingerprint: hmac::Key,
    key_id: [u8; ID_LEN],
    store_id: [u8; ID_LEN],
    max_age: Duration,
    /// Fingerprint and seal time of the copy on disk, by name, as far as this process
    /// knows; spares a write when a re-read key has not changed and was sealed recently.
    index: Mutex<HashMap<String, (hmac::Tag, u64)>>,
    /// Names whose refusal was already logged (cleared when the copy is rewritten), so a
    /// hot key with a tampered file logs once, not once per request.
    reported: Mutex<HashSet<String>>,
    /// Removals so far, per stripe of names; held across a removal and across an ordered
    /// save, so a copy read from the store before a delete can never be written after it.
    removals: [Mutex<u64>; ORDER_STRIPES],
    log: LogSink,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// 32 bytes of HMAC-SHA-256(sealing key, label): one independent subkey per purpose.
fn derive(seal: &[u8; SEAL_KEY_LEN], label: &str) -> Zeroizing<[u8; 32]> {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, seal), label.as_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(tag.as_ref());
    out
}

/// The first [`ID_LEN`] bytes of `bytes`.
fn id_of(bytes: &[u8]) -> [u8; ID_LEN] {
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&bytes[..ID_LEN]);
    id
}

/// Parses a sealing key: one line of standard base64 holding exactly 32 bytes.
pub fn parse_seal_key(text: &str) -> Result<Zeroizing<[u8; SEAL_KEY_LEN]>, String> {
    use base64::Engine as _;
    let what = "the sealing key must be 32 random bytes written as one line of standard \
                base64 (create one with: head -c 32 /dev/urandom | base64)";
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.trim().as_bytes())
            .map_err(|_| format!("not base64: {what}"))?,
    );
    if decoded.len() != SEAL_KEY_LEN {
        return Err(format!("{} bytes, not {SEAL_KEY_LEN}: {what}", decoded.len()));
    }
    let mut key = Zeroizing::new([0u8; SEAL_KEY_LEN]);
    key.copy_from_slice(&decoded);
    Ok(key)
}

impl SealedCache {
    /// Uses `dir` (created with mode 0700 if missing) for copies sealed with `seal` for the
    /// store `store` (its description). Refuses a directory others can enter or read.
    pub fn open(
        dir: &Path,
        seal: &[u8; SEAL_KEY_LEN],
        store: &str,
        max_age: Duration,
        log: LogSink,
    ) -> Result<SealedCache, String> {
        let shown = dir.display();
        if dir.as_os_str().is_empty() {
            return Err("cache.persist.path: the directory path is empty".into());
        }
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| format!("cache.persist.path: cannot create '{shown}': {e}"))?;
        let meta = fs::symlink_metadata(dir)
            .map_err(|e| format!("cache.persist.path: cannot stat '{shown}': {e}"))?;
        if !meta.is_dir() {
            return Err(format!("cache.persist.path: '{shown}' is not a directory"));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "cache.persist.path: '{shown}' is accessible by group or others (mode {mode:04o}); \
                 it must belong to the service user alone: run chmod 700 '{shown}'"
            ));
        }
        let aead_key = derive(seal, "kes sealed cache v1: aead key");
        let aead = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, aead_key.as_ref())
                .map_err(|_| "cache.persist.seal: cannot use the sealing key".to_string())?,
        );
        let fingerprint = hmac::Key::new(
            hmac::HMAC_SHA256,
            derive(seal, "kes sealed cache v1: fingerprint key").as_ref(),
        );
        Ok(SealedCache {
            dir: dir.to_path_buf(),
            aead,
            fingerprint,
            key_id: id_of(derive(seal, "kes sealed cache v1: key id").as_ref()),
            store_id: id_of(digest::digest(&digest::SHA256, store.as_bytes()).as_ref()),
            max_age,
            index: Mutex::new(HashMap::new()),
            reported: Mutex::new(HashSet::new()),
            removals: std::array::from_fn(|_| Mutex::new(0)),
            log,
        })
    }

    /// Writes one line to the server's error log.
    pub fn log_line(&self, level: Level, msg: &str) {
        (self.log)(level, msg);
    }

    pub fn info(&self) -> SealedInfo {
        SealedInfo { path: self.dir.clone(), max_age: self.max_age }
    }

    /// A copy sealed longer ago than this is rewritten when its key is read again, so a key
    /// in use always has a copy well inside `max_age`.
    fn reseal_after(&self) -> Duration {
        self.max_age / 4
    }

    fn path_of(&self, name: &str) -> Option<PathBuf> {
        safe_file_name(name).then(|| self.dir.join(format!("{name}{SUFFIX}")))
    }

    fn associated_data(header: &[u8], name: &str) -> Vec<u8> {
        let mut ad = Vec::with_capacity(header.len() + name.len() + 1 + LATEST.len());
        ad.extend_from_slice(header);
        ad.extend_from_slice(name.as_bytes());
        ad.push(0);
        ad.extend_from_slice(LATEST.as_bytes());
        ad
    }

    /// Seals `value` for `name` as of `now`: the complete file contents.
    fn seal(&self, name: &str, value: &[u8], now: SystemTime) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| format!("no randomness for a nonce: {e}"))?;
        let mut out = Vec::with_capacity(HEADER_LEN + value.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&self.store_id);
        out.extend_from_slice(&unix_secs(now).to_be_bytes());
        out.extend_from_slice(&nonce);
        let ad = Self::associated_data(&out, name);
        out.extend_from_slice(value);
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&ad),
                &mut out[HEADER_LEN..],
            )
            .map_err(|_| "sealing failed".to_string())?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens the file contents `bytes` as the copy of `name`: the stored value and when it
    /// was sealed, or why not.
    fn unseal(&self, name: &str, bytes: &[u8]) -> Result<(StoredValue, u64), String> {
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(format!(
                "truncated ({} bytes, a sealed file has at least 60)",
                bytes.len()
            ));
        }
        let (header, sealed) = bytes.split_at(HEADER_LEN);
        if &header[..MAGIC.len()] != MAGIC {
            return Err("not a sealed key file (bad magic)".into());
        }
        let mut at = MAGIC.len();
        let version = header[at];
        if version != FORMAT_VERSION {
            return Err(format!(
                "unknown format version {version} (this kes reads {FORMAT_VERSION}; written by a newer release?)"
            ));
        }
        at += 1;
        if header[at..at + ID_LEN] != self.key_id {
            return Err("sealed with another sealing key".into());
        }
        at += ID_LEN;
        if header[at..at + ID_LEN] != self.store_id {
            return Err("sealed for another key store".into());
        }
        at += ID_LEN;
        let mut secs = [0u8; 8];
        secs.copy_from_slice(&header[at..at + 8]);
        at += 8;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&header[at..at + NONCE_LEN]);
        let ad = Self::associated_data(header, name);
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self
            .aead
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&ad), &mut buf)
            .map_err(|_| {
                "does not authenticate: tampered with, truncated, or another key's file renamed"
                    .to_string()
            })?;
        let value = Zeroizing::new(plain.to_vec());
        Ok((value, u64::from_be_bytes(secs)))
    }

    /// Reads the raw file of `name`: `Ok(None)` when there is none.
    fn read_file(&self, path: &Path) -> Result<Option<StoredValue>, String> {
        let mut file = match OpenOptions::new().read(true).custom_flags(OPEN_FLAGS).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err("is a symbolic link".into());
            }
            Err(e) => return Err(format!("cannot open: {e}")),
        };
        let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
        if !meta.is_file() {
            return Err("is not a regular file".into());
        }
        let hint = usize::try_from(meta.len()).unwrap_or(MAX_SEALED_FILE).min(MAX_SEALED_FILE);
        read_bounded(&mut file, hint, MAX_SEALED_FILE)
            .map_err(|e| format!("cannot read: {e}"))?
            .map(Some)
            .ok_or_else(|| format!("larger than {MAX_SEALED_FILE} bytes"))
    }

    fn report(&self, level: Level, name: &str, msg: &str) {
        if lock(&self.reported).insert(name.to_string()) {
            (self.log)(level, msg);
        }
    }

    /// The sealed copy of `name` if it authenticates and is younger than `max_age`. A
    /// refused file is logged (once until it is rewritten) and left in place for forensics.
    pub fn load(&self, name: &str) -> Result<Unsealed, Refused> {
        self.load_at(name, SystemTime::now())
    }

    fn load_at(&self, name: &str, now: SystemTime) -> Result<Unsealed, Refused> {
        let Some(path) = self.path_of(name) else { return Err(Refused::Missing) };
        let refuse = |why: String| {
            // What the index remembers no longer describes the file: the next save writes.
            lock(&self.index).remove(name);
            self.report(
                Level::Error,
                name,
                &format!("sealed cache: refusing '{}': {why}; not served", path.display()),
            );
            Refused::Invalid(why)
        };
        let bytes = match self.read_file(&path) {
            Ok(Some(b)) => b,
            Ok(None) => {
                lock(&self.index).remove(name);
                return Err(Refused::Missing);
            }
            Err(why) => return Err(refuse(why)),
        };
        let (value, sealed_secs) = self.unseal(name, &bytes).map_err(refuse)?;
        let sealed_at = UNIX_EPOCH + Duration::from_secs(sealed_secs);
        let age = now.duration_since(sealed_at).unwrap_or(Duration::ZERO);
        if age > self.max_age {
            lock(&self.index).remove(name);
            self.report(
                Level::Warn,
                name,
                &format!(
                    "sealed cache: not serving '{name}': sealed {}s ago, longer than max_age {}s",
                    age.as_secs(),
                    self.max_age.as_secs()
                ),
            );
            return Err(Refused::Stale);
        }
        lock(&self.index)
            .entry(name.to_string())
            .or_insert_with(|| (hmac::sign(&self.fingerprint, &value), sealed_secs));
        Ok(Unsealed { value, sealed_at })
    }

    /// Seals `value` as the copy of `name`, unless the copy on disk already holds it and is
    /// recent. Failures are logged, never returned: the key was read and is served anyway.
    pub fn save(&self, name: &str, value: &[u8]) {
        let now = SystemTime::now();
        let fresh_since = unix_secs(now).saturating_sub(self.reseal_after().as_secs());
        let known = lock(&self.index).get(name).cloned();
        let known = match known {
            Some(k) => Some(k),
            // First sight in this process: look at the disk, so a restart does not rewrite
            // (and fsync) every file once.
            None => self.load_at(name, now).ok().and_then(|_| lock(&self.index).get(name).cloned()),
        };
        if let Some((tag, sealed_secs)) = known
            && sealed_secs >= fresh_since
            && hmac::verify(&self.fingerprint, value, tag.as_ref()).is_ok()
        {
            return;
        }
        match self.write(name, value, now) {
            Ok(()) => {
                lock(&self.index).insert(
                    name.to_string(),
                    (hmac::sign(&self.fingerprint, value), unix_secs(now)),
                );
                lock(&self.reported).remove(name);
            }
            Err(e) => (self.log)(
                Level::Warn,
                &format!("sealed cache: cannot write the sealed copy of '{name}': {e}"),
            ),
        }
    }

    fn write(&self, name: &str, value: &[u8], now: SystemTime) -> Result<(), String> {
        let path = self.path_of(name).ok_or("key name cannot be a file name")?;
        let sealed = self.seal(name, value, now)?;
        let mut tmp = TempFile::create(&self.dir, name).map_err(|e| e.to_string())?;
        tmp.file
            .write_all(&sealed)
            .and_then(|()| tmp.file.sync_all())
            .map_err(|e| format!("cannot write: {e}"))?;
        // rename(2) replaces the old copy atomically: a crash leaves the old or the new one.
        fs::rename(&tmp.path, &path).map_err(|e| format!("cannot rename into place: {e}"))?;
        drop(tmp);
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), String> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot sync the directory: {e}"))
    }

    /// The removal counter of `name`'s stripe (FNV-1a of the name picks it).
    fn removals_of(&self, name: &str) -> &Mutex<u64> {
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        &self.removals[(hash % ORDER_STRIPES as u64) as usize]
    }

    /// What [`SealedCache::save_unless_removed`] compares: take it before reading the store.
    pub fn generation(&self, name: &str) -> u64 {
        *lock(self.removals_of(name))
    }

    /// [`SealedCache::save`], unless a removal of `name` (or of a name in its stripe) ran
    /// since `generation` was taken: the value was read before a delete that has returned,
    /// and sealing it now would bring the deleted key back at the next offline restart.
    /// Returns whether the value was current (saved, or already on disk).
    pub fn save_unless_removed(&self, name: &str, value: &[u8], generation: u64) -> bool {
        let removals = lock(self.removals_of(name));
        if *removals != generation {
            return false;
        }
        self.save(name, value);
        drop(removals);
        true
    }

    /// Removes the copy of `name` (deleted through this server, or found deleted in the
    /// store). Idempotent. Ordered against [`SealedCache::save_unless_removed`].
    pub fn remove(&self, name: &str) {
        let mut removals = lock(self.removals_of(name));
        *removals = removals.wrapping_add(1);
        lock(&self.index).remove(name);
        lock(&self.reported).remove(name);
        let Some(path) = self.path_of(name) else { return };
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Err(e) = self.sync_dir() {
                    (self.log)(Level::Warn, &format!("sealed cache: removing '{name}': {e}"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => (self.log)(
                Level::Error,
                &format!("sealed cache: cannot remove the sealed copy of '{name}': {e}"),
            ),
        }
    }

    /// The key names with a sealed file, sorted. Other entries (temporary files, strays)
    /// are skipped.
    pub fn names(&self) -> Vec<String> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                (self.log)(Level::Error, &format!("sealed cache: cannot list the directory: {e}"));
                return Vec::new();
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|f| f.strip_suffix(SUFFIX).map(str::to_string))
            .filter(|n| safe_file_name(n))
            .collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct TestDir(PathBuf);

    impl TestDir {
        fn new(tag: &str) -> TestDir {
            let mut r = [0u8; 6];
            getrandom::getrandom(&mut r).unwrap();
            let hex = crate::hex::encode(&r);
            let p = std::env::temp_dir().join(format!("kes-sealed-{tag}-{hex}"));
            TestDir(p)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    type Lines = Arc<Mutex<Vec<String>>>;

    fn open_with(dir: &Path, seal: u8, store: &str) -> (SealedCache, Lines) {
        let lines: Lines = Arc::default();
        let sink = Arc::clone(&lines);
        let log: LogSink = Box::new(move |l, m| sink.lock().unwrap().push(format!("{l:?} {m}")));
        let cache =
            SealedCache::open(dir, &[seal; 32], store, Duration::from_secs(3600), log).unwrap();
        (cache, lines)
    }

    const VALUE: &[u8] = b"CiAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= a stored value";

    #[test]
    fn round_trip_with_modes_and_no_plaintext_on_disk() {
        let d = TestDir::new("rt");
        let (c, lines) = open_with(&d.0, 1, "store-a");
        c.save("my-key", VALUE);
        let got = c.load("my-key").ok().unwrap();
        assert_eq!(&got.value[..], VALUE);
        assert_eq!(c.names(), vec!["my-key"]);
        let dir_mode = fs::metadata(&d.0).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let file = d.0.join("my-key.sealed");
        let bytes = fs::read(&file).unwrap();
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(bytes.len(), HEADER_LEN + VALUE.len() + TAG_LEN);
        assert_eq!(&bytes[..8], b"KESSEAL\x01");
        assert!(!bytes.windows(16).any(|w| VALUE.windows(16).any(|v| v == w)));
        assert!(lines.lock().unwrap().is_empty());
    }

    #[test]
    fn unchanged_values_are_not_rewritten_and_changed_ones_are() {
        let d = TestDir::new("rw");
        let (c, _) = open_with(&d.0, 1, "s");
        c.save("k", VALUE);
        let first = fs::read(d.0.join("k.sealed")).unwrap();
        c.save("k", VALUE);
        assert_eq!(fs::read(d.0.join("k.sealed")).unwrap(), first, "rewritten needlessly");
        // A fresh process (empty index) also leaves an unchanged copy alone.
        let (c2, _) = open_with(&d.0, 1, "s");
        c2.save("k", VALUE);
        assert_eq!(fs::read(d.0.join("k.sealed")).unwrap(), first);
        c2.save("k", b"another value");
        assert_eq!(&c2.load("k").ok().unwrap().value[..], b"another value");
        c2.remove("k");
        assert_eq!(c2.load("k").err(), Some(Refused::Missing));
        assert!(c2.names().is_empty());
        c2.remove("k"); // idempotent
    }

    fn refusal(c: &SealedCache, name: &str) -> String {
        match c.load(name) {
            Err(Refused::Invalid(why)) => why,
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("served"),
        }
    }

    #[test]
    fn tampered_renamed_truncated_and_foreign_files_are_refused_and_logged_once() {
        let d = TestDir::new("bad");
        let (c, lines) = open_with(&d.0, 1, "s");
        c.save("a", VALUE);
        c.save("b", VALUE);
        let path = d.0.join("a.sealed");
        let good = fs::read(&path).unwrap();

        // Every single-bit flip anywhere in the file is refused.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            fs::write(&path, &bad).unwrap();
            assert!(c.load("a").is_err(), "bit flip at byte {i} was served");
        }
        // A header edited to look younger does not authenticate.
        let mut younger = good.clone();
        younger[24] ^= 0x10;
        fs::write(&path, &younger).unwrap();
        assert!(refusal(&c, "a").starts_with("does not authenticate"));

        // Renamed: b's file under a's name.
        fs::copy(d.0.join("b.sealed"), &path).unwrap();
        assert!(refusal(&c, "a").contains("another key's file renamed"));

        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(refusal(&c, "a").starts_with("does not authenticate"));
        fs::write(&path, &good[..30]).unwrap();
        assert_eq!(refusal(&c, "a"), "truncated (30 bytes, a sealed file has at least 60)");

        let (other_key, _) = open_with(&d.0, 2, "s");
        other_key.save("x", VALUE);
        assert_eq!(refusal(&c, "x"), "sealed with another sealing key");
        let (other_store, _) = open_with(&d.0, 1, "t");
        other_store.save("y", VALUE);
        assert_eq!(refusal(&c, "y"), "sealed for another key store");

        let mut newer = good.clone();
        newer[7] = 2;
        fs::write(&path, &newer).unwrap();
        assert!(refusal(&c, "a").starts_with("unknown format version 2"));

        let lines = lines.lock().unwrap();
        // "a" is logged once until rewritten; "x" and "y" once each.
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].contains("sealed cache: refusing '") && lines[0].contains("a.sealed"));
        assert!(lines.iter().all(|l| !l.contains("stored value")));
        // Rewriting the copy makes it good again and re-arms the report.
        drop(lines);
        c.save("a", VALUE);
        assert_eq!(&c.load("a").ok().unwrap().value[..], VALUE);
    }

    #[test]
    fn copies_older_than_max_age_are_not_served() {
        let d = TestDir::new("age");
        let (c, lines) = open_with(&d.0, 1, "s");
        c.save("k", VALUE);
        let later = SystemTime::now() + Duration::from_secs(3601);
        assert_eq!(c.load_at("k", later).err(), Some(Refused::Stale));
        assert!(c.load_at("k", SystemTime::now()).is_ok());
        assert!(lines.lock().unwrap()[0].contains("longer than max_age 3600s"));
    }

    #[test]
    fn odd_entries_are_neither_listed_nor_served() {
        let d = TestDir::new("odd");
        let (c, _) = open_with(&d.0, 1, "s");
        fs::write(d.0.join(".tmp-k-00"), b"x").unwrap();
        fs::write(d.0.join("notes.txt"), b"x").unwrap();
        fs::write(d.0.join("..sealed"), b"x").unwrap();
        fs::create_dir(d.0.join("dir.sealed")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.0.join("link.sealed")).unwrap();
        assert_eq!(c.names(), vec!["dir", "link"]);
        assert_eq!(refusal(&c, "dir"), "is not a regular file");
        assert_eq!(refusal(&c, "link"), "is a symbolic link");
        assert_eq!(c.load("../etc").err(), Some(Refused::Missing));
        c.save("../x", VALUE); // refused by name, nothing written outside
        assert_eq!(c.names(), vec!["dir", "link"]);
    }

    #[test]
    fn a_fifo_or_an_oversized_file_under_a_key_name_is_refused_without_blocking() {
        let d = TestDir::new("fifo");
        let (c, _) = open_with(&d.0, 1, "s");
        let fifo = d.0.join("pipe.sealed");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        // Opened non-blocking and checked for its type: no writer needed, no hang.
        assert_eq!(refusal(&c, "pipe"), "is not a regular file");
        fs::write(d.0.join("big.sealed"), vec![0u8; MAX_SEALED_FILE + 1]).unwrap();
        assert_eq!(refusal(&c, "big"), format!("larger than {MAX_SEALED_FILE} bytes"));
    }

    #[test]
    fn an_open_directory_is_refused_with_what_to_do() {
        let d = TestDir::new("perm");
        fs::create_dir_all(&d.0).unwrap();
        fs::set_permissions(&d.0, fs::Permissions::from_mode(0o755)).unwrap();
        let err =
            SealedCache::open(&d.0, &[1; 32], "s", Duration::from_secs(1), Box::new(|_, _| {}))
                .err()
                .unwrap();
        assert!(
            err.contains("(mode 0755)")
                && err.ends_with(&format!("run chmod 700 '{}'", d.0.display())),
            "{err}"
        );
    }

    #[test]
    fn seal_keys_are_one_line_of_base64_for_32_bytes() {
        let k = parse_seal_key("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
        assert_eq!(k[31], 31);
        let short = parse_seal_key("AAEC").err().unwrap();
        assert!(short.starts_with("3 bytes, not 32: the sealing key must be"), "{short}");
        assert!(parse_seal_key("not base64!").err().unwrap().starts_with("not base64"));
    }
}
