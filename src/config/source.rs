//! Secret sources, our extension for secret fields (`tls.password`, the Azure
//! `client_secret`, `cache.persist.seal`): `credential:NAME` reads
//! `$CREDENTIALS_DIRECTORY/NAME` (systemd decrypts it there from `LoadCredential=` or
//! `LoadCredentialEncrypted=`), `file:PATH` reads a file only its owner can read. So the
//! config file itself can hold no secret. Upstream's `${VAR}` form is handled before this.
//!
//! DECISION: a secret field whose literal text starts with `credential:` or `file:` is
//! read as a source. No Azure client secret contains `:`; a TLS key password that does
//! can be given through `${VAR}`.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Largest secret file read. Secrets are a few dozen bytes; anything near this is the
/// wrong file, and reading it whole would pull it into memory for nothing.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// The variable systemd sets to the directory of the unit's credentials.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// Whether `text` names a secret source rather than being the secret.
pub fn is_source(text: &str) -> bool {
    text.starts_with("credential:") || text.starts_with("file:")
}

/// The secret `text` refers to, or `None` when it is not a source (a literal secret).
/// Messages name the field and the file, never the secret.
pub fn resolve(
    field: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Zeroizing<String>>, String> {
    if let Some(name) = text.strip_prefix("credential:") {
        let name = name.trim();
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(format!(
                "{field}: credential:{name}: a credential name is a plain file name, e.g. credential:kes-seal"
            ));
        }
        let Some(dir) = env(CREDENTIALS_DIRECTORY).filter(|d| !d.is_empty()) else {
            return Err(format!(
                "{field}: credential:{name}: ${CREDENTIALS_DIRECTORY} is not set; credentials \
                 are handed in by systemd (LoadCredential= or LoadCredentialEncrypted={name}:... \
                 in the unit); outside systemd use file:PATH"
            ));
        };
        let path = PathBuf::from(dir).join(name);
        return read(field, &format!("credential:{name}"), &path, false).map(Some);
    }
    if let Some(path) = text.strip_prefix("file:") {
        let path = path.trim();
        if path.is_empty() {
            return Err(format!("{field}: file: needs a path, e.g. file:/etc/kes/secret"));
        }
        return read(field, &format!("file:{path}"), Path::new(path), true).map(Some);
    }
    Ok(None)
}

/// Reads a secret file: bounded, one trailing line end dropped, never empty. With
/// `private`, refuses a file that its group or others may read (a credential lives in
/// systemd's private per-unit directory; its mode is systemd's business).
fn read(field: &str, shown: &str, path: &Path, private: bool) -> Result<Zeroizing<String>, String> {
    let fail =
        |e: std::io::Error| format!("{field}: {shown}: cannot read '{}': {e}", path.display());
    let file = File::open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(format!("{field}: {shown}: '{}' is not a regular file", path.display()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if private && mode & 0o077 != 0 {
        return Err(format!(
            "{field}: {shown}: '{}' is readable by group or others (mode {mode:04o}); a secret \
             file must be readable by the service user alone: run chmod 600 '{}' (or use \
             credential:NAME under systemd)",
            path.display(),
            path.display()
        ));
    }
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "{field}: {shown}: '{}' is larger than {MAX_SECRET_FILE_BYTES} bytes: not a secret",
            path.display()
        ));
    }
    // Sized up front so the secret is never reallocated and left behind un-wiped.
    let cap = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
    let mut text = Zeroizing::new(String::with_capacity(cap));
    file.take(MAX_SECRET_FILE_BYTES).read_to_string(&mut text).map_err(fail)?;
    let len = text.strip_suffix('\n').map_or(text.len(), str::len);
    let len = text[..len].strip_suffix('\r').map_or(len, str::len);
    text.truncate(len);
    if text.is_empty() {
        return Err(format!("{field}: {shown}: '{}' is empty", path.display()));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestDir(PathBuf);

    impl TestDir {
        fn new() -> TestDir {
            let mut r = [0u8; 6];
            getrandom::getrandom(&mut r).unwrap();
            let hex = crate::hex::encode(&r);
            let p = std::env::temp_dir().join(format!("kes-source-{hex}"));
            std::fs::create_dir_all(&p).unwrap();
            TestDir(p)
        }

        fn file(&self, name: &str, body: &str, mode: u32) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn literals_are_not_sources() {
        assert_eq!(resolve("f", "s3cr3t", &no_env).unwrap(), None);
        assert_eq!(resolve("f", "files:x", &no_env).unwrap(), None);
        assert!(!is_source("${X}"));
    }

    #[test]
    fn file_sources_read_one_line_and_refuse_open_modes() {
        let d = TestDir::new();
        let p = d.file("secret", "hunter2\n", 0o600);
        let got = resolve("tls.password", &format!("file:{}", p.display()), &no_env).unwrap();
        assert_eq!(got.unwrap().as_str(), "hunter2");
        let crlf = d.file("crlf", "pw\r\n", 0o400);
        assert_eq!(
            resolve("f", &format!("file:{}", crlf.display()), &no_env).unwrap().unwrap().as_str(),
            "pw"
        );
        let open = d.file("open", "hunter2\n", 0o644);
        let err =
            resolve("tls.password", &format!("file:{}", open.display()), &no_env).unwrap_err();
        assert_eq!(
            err,
            format!(
                "tls.password: file:{0}: '{0}' is readable by group or others (mode 0644); a \
                 secret file must be readable by the service user alone: run chmod 600 '{0}' \
                 (or use credential:NAME under systemd)",
                open.display()
            )
        );
        assert!(!err.contains("hunter2"));
        let empty = d.file("empty", "\n", 0o600);
        assert!(
            resolve("f", &format!("file:{}", empty.display()), &no_env)
                .unwrap_err()
                .ends_with("is empty")
        );
        let missing = resolve("f", "file:/nonexistent/kes", &no_env).unwrap_err();
        assert!(missing.starts_with("f: file:/nonexistent/kes: cannot read '/nonexistent/kes': "));
        assert!(resolve("f", "file:", &no_env).unwrap_err().contains("needs a path"));
        let dir = resolve("f", &format!("file:{}", d.0.display()), &no_env).unwrap_err();
        assert!(dir.ends_with("is not a regular file"), "{dir}");
    }

    #[test]
    fn credential_sources_need_systemds_directory() {
        let d = TestDir::new();
        d.file("kes-seal", "c2VhbA==\n", 0o444);
        let dir = d.0.display().to_string();
        let env = move |n: &str| (n == CREDENTIALS_DIRECTORY).then(|| dir.clone());
        let got = resolve("cache.persist.seal", "credential:kes-seal", &env).unwrap().unwrap();
        assert_eq!(got.as_str(), "c2VhbA==");
        let err = resolve("cache.persist.seal", "credential:kes-seal", &no_env).unwrap_err();
        assert!(
            err.starts_with(
                "cache.persist.seal: credential:kes-seal: $CREDENTIALS_DIRECTORY is not set"
            ) && err.ends_with("outside systemd use file:PATH"),
            "{err}"
        );
        let missing = resolve("f", "credential:other", &env).unwrap_err();
        assert!(missing.starts_with("f: credential:other: cannot read '"), "{missing}");
        for bad in ["credential:", "credential:../x", "credential:a/b", "credential:.."] {
            assert!(resolve("f", bad, &env).unwrap_err().contains("plain file name"), "{bad}");
        }
    }
}
