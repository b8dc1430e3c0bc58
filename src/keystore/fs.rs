//! Directory store, upstream's `keystore.fs` layout (`kes-config-cli.md` §5).
//!
//! One regular file per key, named exactly the key name, holding the stored value bytes
//! verbatim, so an upstream directory loads unchanged. Creation is crash-safe: the value is
//! written and fsynced under a temporary name, then hard-linked into place (a link never
//! replaces an existing name) and the directory is fsynced, so a crash leaves either no key
//! or a complete one, never a truncated file.
//!
//! Versions (key rotation): the key file stays the first version, byte for byte what
//! upstream reads. Later versions live in a sibling directory `<dir>.versions/` (the key
//! directory's name plus `.versions`), because upstream lists *every* entry of the key
//! directory as a key name. Layout, all modes 0700/0600:
//!
//! ```text
//! <dir>/<name>                                  first version (version id "0")
//! <dir>.versions/<name>/<fp>/<nanos>-<id>.key   a later version's stored value
//! <dir>.versions/<name>/<fp>/<id>.retired       marker: version <id> is retired
//! ```
//!
//! `<fp>` is a fingerprint of the key file (SHA-256 of its bytes, 32 hex digits): versions
//! belong to one incarnation of the key, so a key deleted by a server that does not know
//! versions (leaving `<dir>.versions/<name>` behind) and created again never inherits them.
//! `<nanos>` is the creation time in nanoseconds, zero-padded to 20 digits, and `<id>` 16
//! random hex digits: every server sharing the directory sorts the file names the same way.
//! Version files are written like key files (temp file, fsync, link, fsync the directory);
//! a marker is an empty file created or removed, then the directory is fsynced.
//!
//! Owns: the mapping from names to paths and every filesystem call on the key directory.
//! Must not: touch a path built from a name that failed `safe_file_name`, follow a
//! symlink for a key file, or parse the values it keeps.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{
    FIRST_VERSION_ID, KeyStore, Listing, StoreError, StoredValue, StoredVersion, list_page,
    new_version_id, valid_version_id,
};

/// Largest stored value read or written. A stored key is a few hundred bytes (base64
/// protobuf or one JSON object, `kes-crypto.md` §2); anything near this bound is not a key,
/// and reading it unbounded would let a stray file exhaust memory.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// Mode of a key directory this store creates (upstream's, before the umask).
const DIR_MODE: u32 = 0o755;

/// Mode of key files: readable by the server's user only, they hold key material.
const FILE_MODE: u32 = 0o600;

/// Start of temporary file names. The leading `.` makes them fail `safe_file_name`, so
/// they are never listed, read or deleted as keys.
const TEMP_PREFIX: &str = ".tmp-";

/// A listing checks its deadline after every this many directory entries, so a huge
/// directory cannot hold a request thread past its route timeout by much.
const LIST_DEADLINE_EVERY: usize = 1024;

/// Suffix of the sibling directory that holds later versions.
const VERSIONS_SUFFIX: &str = ".versions";

/// Mode of the version directories: only the server's user may list them.
const VERSIONS_DIR_MODE: u32 = 0o700;

/// File name suffixes in a version directory.
const VERSION_FILE_SUFFIX: &str = ".key";
const RETIRED_SUFFIX: &str = ".retired";

/// Most entries read from one key's version directory: the key's versions and markers are
/// at most `2 * MAX_VERSIONS`; a directory holding far more is not ours to trust.
const MAX_VERSION_ENTRIES: usize = 4 * super::MAX_VERSIONS;

/// `open(2)` flags for key files: never follow a symlink out of the directory, and never
/// block on a FIFO someone placed under a key's name (the type is checked after opening).
pub(super) const OPEN_FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK;

/// Whether `name` may become a file name in the key directory: the API's name rule
/// ([`crate::names::valid_name`]: 1..=80 bytes of `[0-9A-Za-z_-]`, no leading or trailing
/// `-`, not `_` alone), so at most 80 bytes long. The rule excludes `/`, `.`, `..`, NUL and
/// non-ASCII, so a name can neither escape the directory nor collide with a temporary or
/// hidden file.
pub(super) fn safe_file_name(name: &str) -> bool {
    crate::names::valid_name(name)
}

/// Keys as files in one directory. `Debug` shows the path only.
#[derive(Debug)]
pub struct FsStore {
    dir: PathBuf,
    /// `<dir>.versions`; `None` when the key directory has no name to derive it from (`/`).
    versions_root: Option<PathBuf>,
}

impl FsStore {
    /// Uses `path` as the key directory, creating it (and its parents, mode 0755) if it is
    /// missing. Fails when `path` exists and is not a directory.
    pub fn open(path: impl AsRef<Path>) -> Result<FsStore, StoreError> {
        let dir = path.as_ref().to_path_buf();
        if dir.as_os_str().is_empty() {
            return Err(StoreError::Failed("fs: the key directory path is empty".into()));
        }
        let fail = |what: &str, err: io::Error| {
            StoreError::Failed(format!("fs: {what} key directory '{}': {err}", dir.display()))
        };
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)
            .map_err(|e| fail("cannot create", e))?;
        let meta = fs::metadata(&dir).map_err(|e| fail("cannot stat", e))?;
        if !meta.is_dir() {
            return Err(StoreError::Failed(format!("fs: '{}' is not a directory", dir.display())));
        }
        let versions_root = match (dir.parent(), dir.file_name()) {
            (Some(parent), Some(base)) => {
                // A relative `keys` has the parent "", which is the working directory.
                let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
                let mut name = base.to_os_string();
                name.push(VERSIONS_SUFFIX);
                Some(parent.join(name))
            }
            _ => None,
        };
        Ok(FsStore { dir, versions_root })
    }

    /// Where later versions of the current incarnation of `name` live (see the module doc).
    fn version_dir(&self, name: &str, first: &[u8]) -> Result<PathBuf, StoreError> {
        let root = self.versions_root.as_ref().ok_or_else(|| {
            StoreError::Failed("fs: the key directory has no name to keep versions beside".into())
        })?;
        let digest = ring::digest::digest(&ring::digest::SHA256, first);
        let fp = crate::hex::encode(&digest.as_ref()[..16]);
        Ok(root.join(name).join(fp))
    }

    /// Version files and markers of one version directory, bounded; empty when missing.
    fn version_entries(dir: &Path) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let fail = |e: io::Error| StoreError::Failed(format!("fs: failed to list versions: {e}"));
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(fail(e)),
        };
        let (mut files, mut retired) = (Vec::new(), Vec::new());
        for (i, entry) in entries.enumerate() {
            if i >= MAX_VERSION_ENTRIES {
                return Err(StoreError::Failed(format!(
                    "fs: version directory holds more than {MAX_VERSION_ENTRIES} entries"
                )));
            }
            let entry = entry.map_err(fail)?;
            let Ok(file) = entry.file_name().into_string() else { continue };
            if !entry.file_type().map_err(fail)?.is_file() {
                continue;
            }
            if let Some(stem) = file.strip_suffix(VERSION_FILE_SUFFIX) {
                if parse_version_stem(stem).is_some() {
                    files.push(file);
                }
            } else if let Some(id) = file.strip_suffix(RETIRED_SUFFIX)
                && valid_version_id(id)
            {
                retired.push(id.to_string());
            }
        }
        files.sort_unstable();
        Ok((files, retired))
    }

    /// Creates `dir` and its missing parents with mode 0700, fsyncing each new parent entry.
    fn make_version_dir(dir: &Path) -> Result<(), StoreError> {
        let fail =
            |e: io::Error| StoreError::Failed(format!("fs: cannot create version directory: {e}"));
        let mut missing = Vec::new();
        let mut at = dir;
        while !at.is_dir() {
            missing.push(at.to_path_buf());
            at = at.parent().ok_or_else(|| fail(io::Error::from(io::ErrorKind::NotFound)))?;
        }
        for d in missing.iter().rev() {
            match DirBuilder::new().mode(VERSIONS_DIR_MODE).create(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(fail(e)),
            }
            if let Some(parent) = d.parent() {
                sync_path(parent)?;
            }
        }
        Ok(())
    }

    /// The key directory as configured.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn key_path(&self, name: &str) -> Result<PathBuf, StoreError> {
        if !safe_file_name(name) {
            // The name is left out: it is client input and may hold anything.
            return Err(StoreError::Failed(
                "fs: key name is empty, too long or contains invalid characters".into(),
            ));
        }
        Ok(self.dir.join(name))
    }

    /// Makes the directory's entries (a new link, a removed name) durable.
    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::Failed(format!("fs: failed to sync key directory: {e}")))
    }
}

/// Makes the entries of directory `dir` durable.
fn sync_path(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Failed(format!("fs: failed to sync a directory: {e}")))
}

/// `<nanos:20>-<id>` → the id, when the stem has that shape.
fn parse_version_stem(stem: &str) -> Option<&str> {
    let (nanos, id) = stem.split_once('-')?;
    (nanos.len() == 20 && nanos.bytes().all(|b| b.is_ascii_digit()) && valid_version_id(id))
        .then_some(id)
}

/// Writes `value` under a temporary name in `dir`, fsyncs it and links it to `target`
/// (never replacing an existing name), then fsyncs `dir`.
fn write_new_file(
    dir: &Path,
    tmp_tag: &str,
    target: &Path,
    value: &[u8],
) -> Result<(), StoreError> {
    let mut tmp = TempFile::create(dir, tmp_tag)?;
    tmp.file
        .write_all(value)
        .and_then(|()| tmp.file.sync_all())
        .map_err(|e| StoreError::Failed(format!("fs: failed to write key: {e}")))?;
    // link(2) fails with EEXIST instead of replacing, which makes this create-if-absent
    // even against concurrent creators in other threads or processes.
    match fs::hard_link(&tmp.path, target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(StoreError::Exists),
        Err(e) => return Err(StoreError::Failed(format!("fs: failed to create key: {e}"))),
    }
    drop(tmp);
    sync_path(dir)
}

/// Reads one regular file (no symlink, no FIFO) of at most [`MAX_VALUE_LEN`] bytes.
fn read_value(path: &Path) -> Result<StoredValue, StoreError> {
    let mut file = match OpenOptions::new().read(true).custom_flags(OPEN_FLAGS).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(not_regular()),
        Err(e) => return Err(StoreError::Failed(format!("fs: failed to read key: {e}"))),
    };
    let read_err = |e: io::Error| StoreError::Failed(format!("fs: failed to read key: {e}"));
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let len = usize::try_from(meta.len()).map_err(|_| too_large())?;
    if len > MAX_VALUE_LEN {
        return Err(too_large());
    }
    read_bounded(&mut file, len, MAX_VALUE_LEN).map_err(read_err)?.ok_or_else(too_large)
}

/// A temporary file in the key directory, removed when dropped (after it was linked into
/// place, or on any failure before that).
pub(super) struct TempFile {
    pub(super) path: PathBuf,
    pub(super) file: File,
}

impl TempFile {
    pub(super) fn create(dir: &Path, name: &str) -> Result<TempFile, StoreError> {
        let mut random = [0u8; 8];
        getrandom::getrandom(&mut random)
            .map_err(|e| StoreError::Failed(format!("fs: no randomness for a temp name: {e}")))?;
        let suffix = crate::hex::encode(&random);
        let path = dir.join(format!("{TEMP_PREFIX}{name}-{suffix}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| StoreError::Failed(format!("fs: failed to create temp file: {e}")))?;
        Ok(TempFile { path, file })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Best effort: a leftover temp file is harmless (never listed or read as a key).
        let _ = fs::remove_file(&self.path);
    }
}

/// Reads at most `limit` bytes from `file` into zeroizing memory; `Ok(None)` when the file
/// holds more. Growth copies into a fresh `Zeroizing` buffer so no reallocation leaves key
/// bytes behind in freed memory.
pub(super) fn read_bounded(
    file: &mut File,
    hint: usize,
    limit: usize,
) -> io::Result<Option<StoredValue>> {
    let mut buf = Zeroizing::new(vec![0u8; hint.min(limit) + 1]);
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if buf.len() > limit {
                return Ok(None);
            }
            let grown = buf.len().saturating_mul(2).min(limit + 1);
            let mut bigger = Zeroizing::new(vec![0u8; grown]);
            bigger[..filled].copy_from_slice(&buf[..filled]);
            buf = bigger;
        }
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    // `Vec`'s zeroize also wipes spare capacity, so truncating loses nothing.
    buf.truncate(filled);
    Ok(Some(buf))
}

fn too_large() -> StoreError {
    StoreError::Failed("fs: stored value exceeds 64 KiB".into())
}

fn not_regular() -> StoreError {
    StoreError::Failed("fs: key entry is not a regular file".into())
}

impl KeyStore for FsStore {
    fn describe(&self) -> String {
        format!("Filesystem: {}", self.dir.display())
    }

    fn status(&self, _deadline: Instant) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let meta = fs::metadata(&self.dir)
            .map_err(|e| StoreError::Unreachable(format!("fs: key directory: {e}")))?;
        if !meta.is_dir() {
            return Err(StoreError::Unreachable("fs: key directory is not a directory".into()));
        }
        Ok(start.elapsed())
    }

    fn create(&self, name: &str, value: &[u8], _deadline: Instant) -> Result<(), StoreError> {
        let path = self.key_path(name)?;
        if value.len() > MAX_VALUE_LEN {
            // Never write what `get` would refuse to read.
            return Err(too_large());
        }
        write_new_file(&self.dir, name, &path, value)
    }

    fn get(&self, name: &str, _deadline: Instant) -> Result<StoredValue, StoreError> {
        read_value(&self.key_path(name)?)
    }

    fn versions(&self, name: &str, deadline: Instant) -> Result<Vec<StoredVersion>, StoreError> {
        let first = self.get(name, deadline)?;
        let dir = match self.version_dir(name, &first) {
            Ok(d) => d,
            // No place for versions: the key has only its first.
            Err(_) => {
                let v = StoredVersion {
                    id: FIRST_VERSION_ID.into(),
                    enabled: true,
                    value: Some(first),
                };
                return Ok(vec![v]);
            }
        };
        let (files, retired) = Self::version_entries(&dir)?;
        let enabled = |id: &str| !retired.iter().any(|r| r == id);
        let mut out = Vec::with_capacity(files.len() + 1);
        out.push(StoredVersion {
            id: FIRST_VERSION_ID.into(),
            enabled: enabled(FIRST_VERSION_ID),
            value: Some(first),
        });
        for file in files {
            let stem = &file[..file.len() - VERSION_FILE_SUFFIX.len()];
            let Some(id) = parse_version_stem(stem) else { continue };
            let value = read_value(&dir.join(&file))?;
            out.push(StoredVersion {
                id: id.to_string(),
                enabled: enabled(id),
                value: Some(value),
            });
        }
        Ok(out)
    }

    fn add_version(
        &self,
        name: &str,
        value: &[u8],
        deadline: Instant,
    ) -> Result<String, StoreError> {
        if value.len() > MAX_VALUE_LEN {
            return Err(too_large());
        }
        let first = self.get(name, deadline)?;
        let dir = self.version_dir(name, &first)?;
        Self::make_version_dir(&dir)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let id = new_version_id()?;
        let target = dir.join(format!("{nanos:020}-{id}{VERSION_FILE_SUFFIX}"));
        write_new_file(&dir, &id, &target, value)?;
        Ok(id)
    }

    fn set_version_enabled(
        &self,
        name: &str,
        id: &str,
        enabled: bool,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        if !valid_version_id(id) {
            return Err(StoreError::NotFound);
        }
        let first = self.get(name, deadline)?;
        let dir = self.version_dir(name, &first)?;
        let (files, _) = Self::version_entries(&dir)?;
        let known = id == FIRST_VERSION_ID
            || files
                .iter()
                .any(|f| parse_version_stem(&f[..f.len() - VERSION_FILE_SUFFIX.len()]) == Some(id));
        if !known {
            return Err(StoreError::NotFound);
        }
        let marker = dir.join(format!("{id}{RETIRED_SUFFIX}"));
        let fail = |e: io::Error| StoreError::Failed(format!("fs: failed to update version: {e}"));
        if enabled {
            match fs::remove_file(&marker) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(fail(e)),
            }
        } else {
            Self::make_version_dir(&dir)?;
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&marker)
            {
                Ok(f) => f.sync_all().map_err(fail)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
                Err(e) => return Err(fail(e)),
            }
        }
        sync_path(&dir)
    }

    fn delete(&self, name: &str, _deadline: Instant) -> Result<(), StoreError> {
        let path = self.key_path(name)?;
        // Versions first: a crash in between leaves the key with its first version only,
        // never versions without a key (and a deleted key's versions are gone for good).
        if let Some(root) = &self.versions_root {
            match fs::remove_dir_all(root.join(name)) {
                Ok(()) => sync_path(root)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Failed(format!("fs: failed to delete versions: {e}")));
                }
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(StoreError::Failed(format!("fs: failed to delete key: {e}"))),
        }
        self.sync_dir()
    }

    fn list(&self, prefix: &str, deadline: Instant) -> Result<Listing, StoreError> {
        let fail = |e: io::Error| StoreError::Failed(format!("fs: failed to list keys: {e}"));
        let mut names = Vec::new();
        for (i, entry) in fs::read_dir(&self.dir).map_err(fail)?.enumerate() {
            if i % LIST_DEADLINE_EVERY == LIST_DEADLINE_EVERY - 1 && Instant::now() > deadline {
                return Err(StoreError::Failed("fs: listing keys exceeded its deadline".into()));
            }
            let entry = entry.map_err(fail)?;
            // Non-UTF-8 names cannot be key names; skip them like temp and hidden files.
            let Ok(name) = entry.file_name().into_string() else { continue };
            // Filtering by prefix before paging is what `list_page` does first anyway; doing
            // it here keeps memory proportional to the matching names only.
            if !name.starts_with(prefix) || !safe_file_name(&name) {
                continue;
            }
            // `file_type` does not follow symlinks: only regular files are keys, as in `get`.
            if entry.file_type().map_err(fail)?.is_file() {
                names.push(name);
            }
        }
        Ok(list_page(names, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Barrier};

    /// A fresh directory under the system temp dir, removed with its contents on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new() -> TestDir {
            let mut r = [0u8; 8];
            getrandom::getrandom(&mut r).unwrap();
            let tag = crate::hex::encode(&r);
            let p = std::env::temp_dir().join(format!("kes-fs-test-{}-{tag}", std::process::id()));
            TestDir(p)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    const INVALID_NAME: &str = "fs: key name is empty, too long or contains invalid characters";

    #[test]
    fn open_creates_missing_dirs_and_rejects_files() {
        let t = TestDir::new();
        let nested = t.0.join("a").join("keys");
        let s = FsStore::open(&nested).unwrap();
        assert!(nested.is_dir());
        let mode = fs::metadata(&nested).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode & !DIR_MODE, 0, "mode {mode:o} must be within 0755 (umask may narrow)");
        assert_eq!(s.describe(), format!("Filesystem: {}", nested.display()));
        assert!(s.status(later()).unwrap() < Duration::from_secs(1));
        // Opening an existing directory again is fine.
        FsStore::open(&nested).unwrap();

        let file = t.0.join("plain");
        fs::write(&file, b"x").unwrap();
        let err = FsStore::open(&file).unwrap_err();
        assert!(matches!(err, StoreError::Failed(_)), "{err:?}");
        assert!(matches!(FsStore::open(""), Err(StoreError::Failed(_))));

        // A vanished directory is an unreachable store, not a crash.
        fs::remove_dir_all(&nested).unwrap();
        assert!(matches!(s.status(later()), Err(StoreError::Unreachable(_))));
        assert!(matches!(s.list("", later()), Err(StoreError::Failed(_))));
        assert_eq!(s.get("k", later()), Err(StoreError::NotFound));
    }

    #[test]
    fn create_get_delete_list() {
        let t = TestDir::new();
        let s = FsStore::open(&t.0).unwrap();
        s.create("key-1", b"stored value 1", later()).unwrap();
        s.create("key-2", b"stored value 2", later()).unwrap();
        s.create("other", b"o", later()).unwrap();
        assert_eq!(s.get("key-1", later()).unwrap().as_slice(), b"stored value 1");
        assert_eq!(fs::read(t.0.join("key-2")).unwrap(), b"stored value 2");
        let mode = fs::metadata(t.0.join("key-1")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, FILE_MODE);

        assert_eq!(s.create("key-1", b"replacement", later()), Err(StoreError::Exists));
        assert_eq!(s.get("key-1", later()).unwrap().as_slice(), b"stored value 1");

        let l = s.list("key-", later()).unwrap();
        assert_eq!(l.names, vec!["key-1", "key-2"]);
        assert_eq!(l.continue_at, "");
        assert_eq!(s.list("", later()).unwrap().names, vec!["key-1", "key-2", "other"]);

        s.delete("key-1", later()).unwrap();
        assert_eq!(s.get("key-1", later()), Err(StoreError::NotFound));
        assert_eq!(s.delete("key-1", later()), Err(StoreError::NotFound));
        assert_eq!(s.get("never", later()), Err(StoreError::NotFound));
        assert_eq!(s.list("key-", later()).unwrap().names, vec!["key-2"]);
        // No temporary file survives a create, a refused create or a delete.
        assert_eq!(entries(&t.0), vec!["key-2", "other"]);
    }

    #[test]
    fn traversal_and_invalid_names_never_touch_the_filesystem() {
        let t = TestDir::new();
        let inner = t.0.join("keys");
        let s = FsStore::open(&inner).unwrap();
        // Bait: a file one level up that `../x` would reach.
        fs::write(t.0.join("x"), b"outside").unwrap();
        let long = "a".repeat(81);
        let bad = [
            "../x",
            "a/b",
            "..",
            ".",
            "",
            "/etc/passwd",
            "Εmacs",
            "k\u{0}x",
            "_",
            "-a",
            "a-",
            ".hidden",
            ".tmp-k-0011",
            "a.b",
            long.as_str(),
        ];
        for name in bad {
            let want = Err(StoreError::Failed(INVALID_NAME.into()));
            assert_eq!(s.create(name, b"v", later()), want, "create {name:?}");
            assert_eq!(s.get(name, later()).err(), want.clone().err(), "get {name:?}");
            assert_eq!(s.delete(name, later()), want, "delete {name:?}");
        }
        assert_eq!(fs::read(t.0.join("x")).unwrap(), b"outside");
        assert!(entries(&inner).is_empty());
        // The longest valid name still works.
        s.create(&"a".repeat(80), b"v", later()).unwrap();
    }

    /// Vector P5 of `kes-crypto.md` §8.2: an F4 (base64 protobuf) value as upstream writes it.
    const UPSTREAM_F4: &[u8] = b"CiQKIMiHG7XrN94FuwblJJor4f7f6rbqAl7DwsLaiIoyz0D2EAESJAognLXl4yqa4cjZTcSbsU6sNnN8kP9ARWkXwa20YQZa9HgQARoMCNithK0GEID67qYDIkAzZWNmY2RmMzhmY2JlMTQxYWUyNmExMDMwZjgxZTk2Yjc1MzM2NWE0Njc2MGFlNmI1Nzg2OThhOTdjNTlmZDIy";

    /// Vector P2 of `kes-crypto.md` §8.2: a JSON-era (F0) value.
    const UPSTREAM_F0: &[u8] = br#"{"bytes":"J8qmOyEV2ce2yoAC+5t0Y7CSP/hTMppL7XHpAnyc+0E="}"#;

    #[test]
    fn upstream_files_load_and_survive_reopen() {
        let t = TestDir::new();
        // An upstream key directory, written before this store ever opened it.
        fs::create_dir_all(&t.0).unwrap();
        fs::write(t.0.join("minio-default"), UPSTREAM_F4).unwrap();
        fs::write(t.0.join("legacy_key"), UPSTREAM_F0).unwrap();
        {
            let s = FsStore::open(&t.0).unwrap();
            assert_eq!(s.get("minio-default", later()).unwrap().as_slice(), UPSTREAM_F4);
            assert_eq!(s.get("legacy_key", later()).unwrap().as_slice(), UPSTREAM_F0);
            s.create("mine", b"written by us", later()).unwrap();
        }
        let s = FsStore::open(&t.0).unwrap();
        assert_eq!(s.get("minio-default", later()).unwrap().as_slice(), UPSTREAM_F4);
        assert_eq!(s.get("mine", later()).unwrap().as_slice(), b"written by us");
        // Our files are upstream's layout too: exactly the value bytes, nothing added.
        assert_eq!(fs::read(t.0.join("mine")).unwrap(), b"written by us");
        assert_eq!(s.list("", later()).unwrap().names, vec!["legacy_key", "mine", "minio-default"]);
    }

    #[test]
    fn listing_skips_temp_hidden_odd_and_non_regular_entries() {
        let t = TestDir::new();
        let s = FsStore::open(&t.0).unwrap();
        s.create("k1", b"v", later()).unwrap();
        fs::write(t.0.join(".tmp-k2-00112233"), b"half").unwrap();
        fs::write(t.0.join(".hidden"), b"h").unwrap();
        fs::write(t.0.join("notes.txt"), b"n").unwrap();
        fs::create_dir(t.0.join("k-dir")).unwrap();
        std::os::unix::fs::symlink(t.0.join("k1"), t.0.join("k-link")).unwrap();
        assert_eq!(s.list("", later()).unwrap().names, vec!["k1"]);
        assert_eq!(s.list("k", later()).unwrap().names, vec!["k1"]);
        // A directory or a symlink under a key's name is not a key, and not followed.
        assert_eq!(s.get("k-dir", later()), Err(not_regular()));
        assert_eq!(s.get("k-link", later()), Err(not_regular()));
        // A create over a non-key entry still refuses to replace it.
        assert_eq!(s.create("k-dir", b"v", later()), Err(StoreError::Exists));
    }

    #[test]
    fn oversized_values_are_refused_both_ways() {
        let t = TestDir::new();
        let s = FsStore::open(&t.0).unwrap();
        let big = vec![b'a'; MAX_VALUE_LEN + 1];
        let err = StoreError::Failed("fs: stored value exceeds 64 KiB".into());
        assert_eq!(s.create("big", &big, later()), Err(err.clone()));
        fs::write(t.0.join("big"), &big).unwrap();
        assert_eq!(s.get("big", later()).err(), Some(err));
        let max = vec![b'b'; MAX_VALUE_LEN];
        s.create("max", &max, later()).unwrap();
        assert_eq!(s.get("max", later()).unwrap().as_slice(), max.as_slice());
        s.create("empty", b"", later()).unwrap();
        assert_eq!(s.get("empty", later()).unwrap().as_slice(), b"");
    }

    #[test]
    fn read_bounded_grows_past_a_wrong_hint() {
        let t = TestDir::new();
        fs::create_dir_all(&t.0).unwrap();
        let p = t.0.join("f");
        fs::write(&p, vec![7u8; 5000]).unwrap();
        // A hint far below the real size (as if the file grew after fstat).
        let got = read_bounded(&mut File::open(&p).unwrap(), 3, 8000).unwrap().unwrap();
        assert_eq!(got.as_slice(), vec![7u8; 5000].as_slice());
        assert!(read_bounded(&mut File::open(&p).unwrap(), 3, 4999).unwrap().is_none());
        let exact = read_bounded(&mut File::open(&p).unwrap(), 0, 5000).unwrap().unwrap();
        assert_eq!(exact.len(), 5000);
    }

    #[test]
    fn versions_live_beside_the_key_directory_and_stay_with_their_key() {
        let t = TestDir::new();
        let dir = t.0.join("keys");
        let s = FsStore::open(&dir).unwrap();
        assert_eq!(s.add_version("k", b"v2", later()), Err(StoreError::NotFound));
        s.create("k", b"v1", later()).unwrap();
        let one = s.versions("k", later()).unwrap();
        assert_eq!((one.len(), one[0].id.as_str(), one[0].enabled), (1, "0", true));
        let id2 = s.add_version("k", b"v2", later()).unwrap();
        let id3 = s.add_version("k", b"v3", later()).unwrap();
        // Upstream lists every entry of the key directory: nothing but the key is there.
        assert_eq!(entries(&dir), ["k"]);
        assert_eq!(s.get("k", later()).unwrap().as_slice(), b"v1");
        s.set_version_enabled("k", &id2, false, later()).unwrap();
        s.set_version_enabled("k", &id2, false, later()).unwrap();
        s.set_version_enabled("k", "0", false, later()).unwrap();
        s.set_version_enabled("k", "0", true, later()).unwrap();
        assert_eq!(s.set_version_enabled("k", "ffff", false, later()), Err(StoreError::NotFound));
        assert_eq!(s.set_version_enabled("k", "../x", false, later()), Err(StoreError::NotFound));
        let v = s.versions("k", later()).unwrap();
        let got: Vec<_> = v
            .iter()
            .map(|v| (v.id.clone(), v.enabled, v.value.as_ref().unwrap().to_vec()))
            .collect();
        assert_eq!(
            got,
            [
                ("0".to_string(), true, b"v1".to_vec()),
                (id2.clone(), false, b"v2".to_vec()),
                (id3.clone(), true, b"v3".to_vec())
            ]
        );
        let vdir = t.0.join("keys.versions").join("k");
        let mode = fs::metadata(&vdir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !VERSIONS_DIR_MODE, 0, "{mode:o}");
        // A second store on the same directory (another server) sees the same order.
        let other = FsStore::open(&dir).unwrap();
        let ids: Vec<_> = other.versions("k", later()).unwrap().into_iter().map(|v| v.id).collect();
        assert_eq!(ids, ["0".to_string(), id2, id3]);
        // Deleting the key deletes its versions.
        s.delete("k", later()).unwrap();
        assert!(!vdir.exists());
        s.create("k", b"new", later()).unwrap();
        assert_eq!(s.versions("k", later()).unwrap().len(), 1);
    }

    #[test]
    fn versions_left_by_a_foreign_delete_are_not_inherited() {
        let t = TestDir::new();
        let dir = t.0.join("keys");
        let s = FsStore::open(&dir).unwrap();
        s.create("k", b"old", later()).unwrap();
        s.add_version("k", b"old-2", later()).unwrap();
        // Upstream deletes only the key file and later creates the name again.
        fs::remove_file(dir.join("k")).unwrap();
        s.create("k", b"new", later()).unwrap();
        let v = s.versions("k", later()).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].value.as_ref().unwrap().as_slice(), b"new");
    }

    #[test]
    fn concurrent_creates_of_one_name_have_exactly_one_winner() {
        const THREADS: usize = 16;
        let t = TestDir::new();
        let s = Arc::new(FsStore::open(&t.0).unwrap());
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let value = format!("value-from-{i}");
                    barrier.wait();
                    (value.clone(), s.create("contended", value.as_bytes(), later()))
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
        assert_eq!(winners.len(), 1);
        let losers = results.iter().filter(|(_, r)| *r == Err(StoreError::Exists)).count();
        assert_eq!(losers, THREADS - 1);
        // The winner's value is the one stored, whole.
        assert_eq!(s.get("contended", later()).unwrap().as_slice(), winners[0].0.as_bytes());
        assert_eq!(entries(&t.0), vec!["contended"]);
    }
}
