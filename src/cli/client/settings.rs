//! Where the server is, who we are and whom we trust (`kes-config-cli.md` §4.1): the
//! environment variables and flags, the client key pair, and the trusted roots.

use super::super::apikey::ApiKey;
use super::super::{Fail, io_msg};
use super::DEFAULT_SERVER;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Endpoint variables, first *set* one wins (even when empty).
pub const SERVER_VARS: [&str; 3] = ["MINIO_KES_SERVER", "KES_SERVER", "MINIO_KMS_KES_ENDPOINT"];
pub const API_KEY_VARS: [&str; 3] = ["MINIO_KES_API_KEY", "KES_API_KEY", "MINIO_KMS_KES_API_KEY"];
pub const KEY_FILE_VARS: [&str; 3] =
    ["MINIO_KES_KEY_FILE", "KES_CLIENT_KEY", "MINIO_KES_CLIENT_KEY"];
pub const CERT_FILE_VARS: [&str; 3] =
    ["MINIO_KES_CERT_FILE", "KES_CLIENT_CERT", "MINIO_KES_CLIENT_CERT"];

/// Reads an environment variable; a function so that tests can pass their own.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment (values that are not UTF-8 count as unset).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The first variable of `vars` that is set, with its value.
pub(super) fn first_set(env: Env<'_>, vars: &[&'static str]) -> Option<(&'static str, String)> {
    vars.iter().find_map(|v| env(v).map(|value| (*v, value)))
}

/// One server: `https://host:port` plus an optional base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://host:port[/base]`, as shown to the user.
    pub url: String,
    /// Host as written (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (usually empty).
    pub base: String,
}

impl Endpoint {
    /// Upstream's normalisation: trim, strip `http://`, add `https://` when missing.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let t = text.trim();
        let t = t.strip_prefix("http://").unwrap_or(t);
        let rest = t.strip_prefix("https://").unwrap_or(t);
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) =
                v6.split_once(']').ok_or_else(|| format!("invalid endpoint '{t}'"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("invalid endpoint '{t}'")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("invalid endpoint '{t}': no host"));
        }
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid endpoint '{t}': invalid port '{p}'"))?,
        };
        let shown_host = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
        Ok(Endpoint {
            url: format!("https://{shown_host}:{port}{base}"),
            host: host.to_string(),
            port,
            base: base.to_string(),
        })
    }

    /// `host:port` as the `Host` header and `kes status` show it.
    pub fn authority(&self) -> &str {
        self.url.trim_start_matches("https://").split('/').next().unwrap_or_default()
    }
}

/// Who we are to the server.
pub enum Credentials {
    ApiKey(ApiKey),
    Files { cert: PathBuf, key: PathBuf },
}

/// Everything needed to reach a server, resolved from flags and environment.
pub struct Settings {
    pub endpoints: Vec<Endpoint>,
    /// Where the endpoints came from, for error messages (`KES_SERVER`, `--server`, …).
    pub endpoint_source: String,
    pub credentials: Credentials,
    pub insecure: bool,
}

/// The connection flags a command took (`-s` and `-a` exist on `kes ls` only).
#[derive(Debug, Default, Clone)]
pub struct ConnFlags {
    pub server: Option<String>,
    pub api_key: Option<String>,
    pub insecure: bool,
}

impl Settings {
    /// `kes-config-cli.md` §4.1, in upstream's order of checks and with its messages.
    pub fn resolve(flags: &ConnFlags, env: Env<'_>) -> Result<Settings, Fail> {
        let (list, source) = match flags.server.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => (s.to_string(), "--server".to_string()),
            None => match first_set(env, &SERVER_VARS) {
                Some((var, value)) => (value, var.to_string()),
                None => (DEFAULT_SERVER.to_string(), format!("the default {DEFAULT_SERVER}")),
            },
        };
        let mut endpoints = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            endpoints
                .push(Endpoint::parse(item).map_err(|e| Fail::Error(format!("{source}: {e}")))?);
        }
        if endpoints.is_empty() {
            return Err(Fail::Error(format!("'{source}' contains no hosts / IPs")));
        }

        let api_key = match flags.api_key.as_deref().filter(|s| !s.is_empty()) {
            Some(k) => Some(k.to_string()),
            None => first_set(env, &API_KEY_VARS).map(|(_, v)| v).filter(|v| !v.is_empty()),
        };
        let key_file = first_set(env, &KEY_FILE_VARS).map(|(_, v)| v).filter(|v| !v.is_empty());
        let cert_file = first_set(env, &CERT_FILE_VARS).map(|(_, v)| v).filter(|v| !v.is_empty());
        let credentials = match (api_key, key_file, cert_file) {
            (None, None, None) => {
                return Err(Fail::Error(
                    "no API key specified. Consider setting MINIO_KES_API_KEY".into(),
                ));
            }
            (Some(_), Some(_), _) => {
                return Err(Fail::Error(
                    "API key and private key file cannot be used at the same time".into(),
                ));
            }
            (Some(_), None, Some(_)) => {
                return Err(Fail::Error(
                    "API key and certificate file cannot be used at the same time".into(),
                ));
            }
            (None, Some(_), None) => {
                return Err(Fail::Error(
                    "no certificate file specified. Consider setting MINIO_KES_CERT_FILE".into(),
                ));
            }
            (None, None, Some(_)) => {
                return Err(Fail::Error(
                    "no private key file specified. Consider setting MINIO_KES_KEY_FILE".into(),
                ));
            }
            (Some(text), None, None) => Credentials::ApiKey(
                ApiKey::parse(text.trim())
                    .map_err(|e| Fail::Error(format!("parsing API key: {e}")))?,
            ),
            (None, Some(key), Some(cert)) => {
                Credentials::Files { cert: PathBuf::from(cert), key: PathBuf::from(key) }
            }
        };
        Ok(Settings { endpoints, endpoint_source: source, credentials, insecure: flags.insecure })
    }
}

/// Asks for the password of an encrypted private key file (a prompt on the terminal in
/// the CLI, [`super::password::for_client_key`]); passed in so that this module stays
/// silent.
pub type AskPassword<'a> = &'a dyn Fn(&Path) -> Result<Zeroizing<Vec<u8>>, Fail>;

/// Loads a client certificate chain and its private key from PEM files with the same
/// parsers the server uses for its own (`server::tls`): the certificate file holds only
/// certificates, the key file one private key, and the two must belong together. A legacy
/// encrypted key (`Proc-Type: 4,ENCRYPTED`) is decrypted with the password `ask` returns,
/// asked only once the key is known to be one that can be decrypted.
pub fn load_key_pair(
    cert: &Path,
    key: &Path,
    ask: AskPassword<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Fail> {
    use crate::pem::{self, KeyError, PemError};
    use crate::server::tls::parse_certificates;
    let cert_pem = std::fs::read(cert).map_err(|e| {
        Fail::Error(format!("reading certificate file: open {}: {}", cert.display(), io_msg(&e)))
    })?;
    let chain = parse_certificates(&cert_pem)
        .map_err(|e| Fail::Error(format!("reading certificate file: {}: {e}", cert.display())))?;
    let key_pem = Zeroizing::new(std::fs::read(key).map_err(|e| {
        Fail::Error(format!("reading private key file: open {}: {}", key.display(), io_msg(&e)))
    })?);
    let failed = |e: &dyn fmt::Display| Fail::Error(format!("failed to read TLS private key: {e}"));
    // A key that cannot be decrypted is refused before anyone is asked for a password.
    let password = if pem::is_encrypted(&key_pem) {
        pem::parse(&key_pem).map_err(|e| failed(&e))?;
        Some(ask(key)?)
    } else {
        None
    };
    let key_der = pem::load_private_key(&key_pem, password.as_ref().map(|p| p.as_slice()))
        .map_err(|e| match e {
            KeyError::PasswordRequired | KeyError::Encrypted(PemError::IncorrectPassword) => {
                Fail::Error("incorrect password".into())
            }
            KeyError::Encrypted(e) => failed(&e),
            KeyError::Pkcs8Encrypted => failed(&pem::PKCS8_UNSUPPORTED),
            e => failed(&e),
        })?;
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| Fail::Error(format!("failed to read TLS private key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signer);
    if certified.keys_match().is_err() {
        return Err(Fail::Error(format!(
            "tls: private key does not match public key ('{}' does not belong to '{}')",
            key.display(),
            cert.display()
        )));
    }
    Ok((chain, key_der))
}

/// Trusted roots by Go's rule, `SSL_CERT_FILE` and `SSL_CERT_DIR` included
/// ([`crate::goroots`]). Unreadable or non-PEM files are skipped, as Go skips them.
pub fn trusted_roots(env: Env<'_>) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in crate::goroots::RootSources::from_lookup(env).load().certs {
        let _ = roots.add(cert);
    }
    roots
}
