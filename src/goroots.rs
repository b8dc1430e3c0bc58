//! Which certificates a Go program on Linux trusts as its system roots, and how
//! `SSL_CERT_FILE` and `SSL_CERT_DIR` change that. The CLI (talking to a KES server) and the
//! Azure client (talking to Key Vault, perhaps through a TLS-inspecting proxy) both follow
//! this one rule, because deployments set these variables for upstream's Go binaries.
//!
//! Go's rule (`crypto/x509`, `root_unix.go`):
//! * bundle files: the first *readable* one of Go's list ([`CERT_FILES`]); `SSL_CERT_FILE`
//!   **replaces** that list with its one file;
//! * directories: every file of each of Go's directories ([`CERT_DIRS`]), except symbolic
//!   links that point into the same directory (the OpenSSL hash links); `SSL_CERT_DIR` (a
//!   `:`-separated list) **replaces** the directories;
//! * an empty variable counts as unset; unreadable files and files without certificates
//!   are skipped.
//!
//! So `SSL_CERT_FILE=ca.pem` alone still trusts the system's directory (on Debian and
//! RHEL `/etc/ssl/certs` and `/etc/pki/tls/certs` hold the public CAs), while a bundle that
//! only exists as a file (e.g. `/etc/ssl/cert.pem`) is no longer read.
//!
//! What a caller does with an unreadable file or directory it was told to use is its
//! choice: [`Roots::problems`] lists them (the server refuses to start, the CLI ignores them
//! as Go does). A leaf module: no imports from the crate.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Go's bundle files on Linux, in its order: Debian/Ubuntu/Gentoo/Alpine, Fedora/RHEL 6,
/// openSUSE, OpenELEC, CentOS/RHEL 7+, and others.
pub const CERT_FILES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Go's certificate directories on Linux.
pub const CERT_DIRS: [&str; 2] = ["/etc/ssl/certs", "/etc/pki/tls/certs"];

/// Where the roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSources {
    /// Bundle candidates: the first readable one is used.
    pub files: Vec<PathBuf>,
    /// Directories whose files are all read.
    pub dirs: Vec<PathBuf>,
    /// `files` was named (by `SSL_CERT_FILE` or by the caller), not Go's default list.
    pub files_named: bool,
    /// `dirs` was named (by `SSL_CERT_DIR` or by the caller), not Go's default list.
    pub dirs_named: bool,
}

impl RootSources {
    /// Go's defaults, without looking at the environment.
    pub fn system() -> RootSources {
        RootSources {
            files: CERT_FILES.iter().map(PathBuf::from).collect(),
            dirs: CERT_DIRS.iter().map(PathBuf::from).collect(),
            files_named: false,
            dirs_named: false,
        }
    }

    /// Go's defaults as `SSL_CERT_FILE` and `SSL_CERT_DIR` (read through `get`) change them.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> RootSources {
        let mut s = RootSources::system();
        if let Some(f) = get("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
            s.files = vec![PathBuf::from(f)];
            s.files_named = true;
        }
        if let Some(d) = get("SSL_CERT_DIR").filter(|d| !d.is_empty()) {
            s.dirs = d.split(':').filter(|d| !d.is_empty()).map(PathBuf::from).collect();
            s.dirs_named = true;
        }
        s
    }

    /// Only this bundle file, no directories (hermetic setups and tests).
    pub fn only_file(file: impl Into<PathBuf>) -> RootSources {
        RootSources {
            files: vec![file.into()],
            dirs: Vec::new(),
            files_named: true,
            dirs_named: true,
        }
    }

    /// Reads the certificates, each distinct certificate once, in the order found.
    pub fn load(&self) -> Roots {
        let mut roots = Roots::default();
        let mut seen = HashSet::new();
        let mut file_error = None;
        for f in &self.files {
            match std::fs::read(f) {
                Ok(pem) => {
                    if roots.add_pem(&pem, &mut seen) == 0 && self.files_named {
                        roots.problems.push(format!("{} contains no PEM certificate", f.display()));
                    }
                    file_error = None;
                    break;
                }
                Err(e) => {
                    file_error.get_or_insert(format!("cannot read {}: {e}", f.display()));
                }
            }
        }
        if self.files_named {
            roots.problems.extend(file_error);
        }
        for d in &self.dirs {
            let entries = match std::fs::read_dir(d) {
                Ok(entries) => entries,
                Err(e) => {
                    if self.dirs_named {
                        roots.problems.push(format!("cannot read {}: {e}", d.display()));
                    }
                    continue;
                }
            };
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                if is_link_into(&p, d) {
                    continue;
                }
                if let Ok(pem) = std::fs::read(&p) {
                    roots.add_pem(&pem, &mut seen);
                }
            }
        }
        roots
    }
}

/// Certificates read by [`RootSources::load`], and what could not be read.
#[derive(Debug, Default)]
pub struct Roots {
    /// DER certificates.
    pub certs: Vec<CertificateDer<'static>>,
    /// A named file or directory that could not be read, or a named file without a
    /// certificate. Go's default locations never produce a problem: most are absent.
    pub problems: Vec<String>,
}

impl Roots {
    fn add_pem(&mut self, pem: &[u8], seen: &mut HashSet<Vec<u8>>) -> usize {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem).filter_map(Result::ok) {
            added += 1;
            if seen.insert(cert.as_ref().to_vec()) {
                self.certs.push(cert);
            }
        }
        added
    }
}

/// A symbolic link in `dir` whose target lies in `dir` too (Go reads each such file once,
/// under its own name).
fn is_link_into(p: &Path, dir: &Path) -> bool {
    match std::fs::read_link(p) {
        Ok(target) => match target.parent() {
            None => true,
            Some(parent) => parent.as_os_str().is_empty() || parent == dir,
        },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_replace_gos_lists() {
        let s = RootSources::from_lookup(|_| None);
        assert_eq!(s, RootSources::system());
        assert_eq!(s.files.len(), 6);
        let s = RootSources::from_lookup(|k| match k {
            "SSL_CERT_FILE" => Some("/x/ca.pem".into()),
            "SSL_CERT_DIR" => Some("/a::/b".into()),
            _ => None,
        });
        assert_eq!(s.files, vec![PathBuf::from("/x/ca.pem")]);
        assert_eq!(s.dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert!(s.files_named && s.dirs_named);
        let s = RootSources::from_lookup(|k| (k == "SSL_CERT_FILE").then(String::new));
        assert_eq!(s, RootSources::system(), "empty is unset");
        let s = RootSources::from_lookup(|k| (k == "SSL_CERT_FILE").then(|| "/x".to_string()));
        assert_eq!(s.dirs, RootSources::system().dirs, "the file leaves the directories");
    }

    #[test]
    fn named_sources_that_cannot_be_read_are_problems() {
        let r = RootSources::only_file("/nonexistent/ca.pem").load();
        assert!(r.certs.is_empty());
        assert_eq!(r.problems.len(), 1);
        assert!(r.problems[0].starts_with("cannot read /nonexistent/ca.pem: "), "{:?}", r.problems);
        let mut s = RootSources::system();
        s.files = vec![PathBuf::from("/nonexistent/a"), PathBuf::from("/nonexistent/b")];
        s.dirs = vec![PathBuf::from("/nonexistent/d")];
        assert!(s.load().problems.is_empty(), "Go's default places may be absent");
    }
}
