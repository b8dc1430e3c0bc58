//! `kes server --check`: the config loaded and validated by the same code as `kes server`
//! ([`super::load`]: `${VAR}` expansion, TLS files readable and matching, client CAs,
//! policies, key store settings), without binding a socket or contacting the key store;
//! then, with `--keystore`, one probe of the store that names what failed.
//!
//! Returns facts only; `cli::server` prints them and picks the exit code.

use super::{Loaded, StartError};
use crate::config::{Config, KeyStoreConfig};
use crate::gotime::format_duration;
use crate::keystore::KeyStore;
use crate::keystore::azure::AzureCredentials;
use crate::keystore::azure::error::{ProbeFailure, ProbeTarget};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long `--check --keystore` waits for the store: a token request plus one listing,
/// with the Azure client's own retries of transient failures (6 retries, at most 2 s
/// apart) fitting inside it.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// What `--check` found: the effective settings (secrets masked) and every warning.
#[derive(Debug, Default)]
pub struct Report {
    /// `(label, value)` rows, in the order the config file lists them.
    pub settings: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

impl Report {
    fn row(&mut self, label: &str, value: impl Into<String>) {
        self.settings.push((label.to_string(), value.into()));
    }
}

/// Loads and validates `path` exactly as `kes server` would; fails with the message the
/// server would fail with.
pub fn check(path: &Path, addr: Option<&str>) -> Result<(Report, Loaded), StartError> {
    let loaded = super::load(path, addr)?;
    let mut r = Report::default();
    let cfg = &loaded.cfg;
    r.row("Config", path.display().to_string());
    r.row("Address", loaded.addr.to_string());
    let admin = crate::auth::Identity::new(cfg.admin_identity.clone());
    if admin.is_hex() {
        r.row("Admin", admin.as_str());
    } else {
        r.row("Admin", format!("<disabled> ('{}' is not a hex identity)", admin.as_str()));
    }
    tls_rows(cfg, &mut r);
    policy_rows(cfg, &mut r);
    r.row(
        "Cache",
        format!(
            "any={} unused={} offline={}",
            format_duration(cfg.cache.any),
            format_duration(cfg.cache.unused),
            format_duration(cfg.cache.offline)
        ),
    );
    for (path, o) in &cfg.api {
        let mut what = Vec::new();
        if o.skip_auth {
            what.push("skip_auth".to_string());
            r.warnings.push(format!(
                "api.{path}.skip_auth: the route answers clients without a certificate or policy check"
            ));
        }
        if let Some(t) = o.timeout {
            what.push(format!("timeout={}", format_duration(t)));
        }
        if !crate::api::routes::default_routes().iter().any(|route| route.path == path) {
            r.warnings.push(format!("api.{path}: no such route; the entry is ignored"));
        }
        r.row("API", format!("{path} {}", what.join(" ")).trim_end().to_string());
    }
    if let Some(p) = &cfg.persist {
        r.row(
            "Persist",
            format!(
                "{} (sealed key cache; max_age {}; sealing key: <set>)",
                p.path.display(),
                format_duration(p.max_age)
            ),
        );
    }
    r.row("Logs", format!("error={} audit={}", cfg.log.error.name(), cfg.log.audit.name()));
    if let Some(a) = &cfg.audit_file {
        let mode = if a.fail_closed { " (fail-closed)" } else { "" };
        r.row("Audit file", format!("{}{mode}", a.path.display()));
        let dir = a.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(StartError(format!(
                "log.audit_file: the directory '{}' does not exist",
                dir.display()
            )));
        }
    }
    if !cfg.keys.is_empty() {
        r.row("Keys", format!("{} (created at startup when missing)", cfg.keys.join(", ")));
    }
    keystore_rows(cfg, &mut r)?;
    r.warnings.extend(cfg.warnings.iter().cloned());
    Ok((r, loaded))
}

fn tls_rows(cfg: &Config, r: &mut Report) {
    let t = &cfg.tls;
    r.row("TLS cert", t.cert.display().to_string());
    let password = if t.password.is_some() { " (encrypted; tls.password: <set>)" } else { "" };
    r.row("TLS key", format!("{}{password}", t.key.display()));
    let ca = t.ca.as_ref().map(|c| c.display().to_string());
    let clients = match (t.verify_client_chain, &ca) {
        (true, Some(ca)) => format!(
            "chain verified against {ca} and the system roots (tls.auth: on); attribute \
             identities (ca:…) against {ca} only"
        ),
        (true, None) => "chain verified against the system roots (tls.auth: on)".to_string(),
        (false, _) => {
            "any certificate; identity = SHA-256 of its public key (tls.auth: off)".to_string()
        }
    };
    r.row("Clients", clients);
    if !t.proxy_identities.is_empty() {
        r.warnings.push(
            "tls.proxy.identities: TLS proxies are not supported (as upstream); the list is ignored"
                .into(),
        );
    }
}

fn policy_rows(cfg: &Config, r: &mut Report) {
    for (name, p) in &cfg.policies {
        r.row(
            "Policy",
            format!(
                "{name}: allow {}, deny {}, identities {}",
                p.allow.len(),
                p.deny.len(),
                p.identities.len()
            ),
        );
        if p.identities.is_empty() {
            r.warnings.push(format!("policy.{name}: no identities: the policy applies to nobody"));
        }
        if p.allow.is_empty() {
            r.warnings.push(format!("policy.{name}: no allow patterns: the policy allows nothing"));
        }
        for id in &p.identities {
            if !crate::auth::Identity::new(id.clone()).is_hex()
                && !crate::auth::attr::AttrIdentity::is_attribute(id)
            {
                r.warnings.push(format!(
                    "policy.{name}.identities: '{id}' is not a hex identity and matches no certificate"
                ));
            }
        }
    }
}

fn keystore_rows(cfg: &Config, r: &mut Report) -> Result<(), StartError> {
    match &cfg.keystore {
        KeyStoreConfig::Fs { path } => {
            r.row("KeyStore", format!("fs: {}", path.display()));
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(StartError(format!(
                        "keystore.fs.path: '{}' is not a directory",
                        path.display()
                    )));
                }
                Err(_) => r.warnings.push(format!(
                    "keystore.fs.path: '{}' does not exist yet; the server creates it at startup",
                    path.display()
                )),
            }
        }
        KeyStoreConfig::Azure(az) => {
            // Builds the client as the server does (endpoint, proxy, CA files, credential
            // files) without sending anything.
            let store = super::open_azure(az)?;
            r.row("KeyStore", store.describe());
            r.row("Credential", store.credential());
            if let AzureCredentials::ClientSecret { .. } = az.credentials {
                r.row("", "client_secret: <set>");
            }
            if let Some(p) = store.proxy() {
                r.row("Proxy", p);
            }
        }
    }
    Ok(())
}

/// `--check --keystore`: opens the store as the server does and lists it once (Azure: a
/// token request and one list call). `Ok` says what answered; `Err` names what failed and
/// what to do about it.
pub fn probe(cfg: &KeyStoreConfig) -> Result<String, String> {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let started = Instant::now();
    let (describe, listed) = match cfg {
        KeyStoreConfig::Azure(az) => {
            let store = super::open_azure(az).map_err(|e| e.0)?;
            let listed = store.probe(deadline).map_err(|e| {
                let advice = advice(e.failure, e.target, store.proxy().as_deref());
                format!("{}: {advice}: {}", store.describe(), e.message)
            });
            (store.describe(), listed)
        }
        KeyStoreConfig::Fs { .. } => {
            let store = super::open_store(cfg).map_err(|e| e.0)?;
            let listed = store
                .list("", deadline)
                .map(|l| (l.names.len(), !l.continue_at.is_empty()))
                .map_err(|e| {
                    format!("{}: the key store refused the listing: {e}", store.describe())
                });
            (store.describe(), listed)
        }
    };
    let (names, more) = listed?;
    let more = if more { " (first page)" } else { "" };
    Ok(format!(
        "{describe}: OK, {names} keys listed{more} in {}",
        format_duration(round_ms(started.elapsed()))
    ))
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a probe failure means for the operator and what to do about it; `target` is the
/// endpoint that failed, `proxy` the HTTPS proxy the store goes through.
pub fn advice(failure: ProbeFailure, target: ProbeTarget, proxy: Option<&str>) -> String {
    if target == ProbeTarget::TokenEndpoint {
        return token_advice(failure, proxy);
    }
    match failure {
        ProbeFailure::Permission => "permission: the credential is valid but may not list \
            secrets (grant the 'Key Vault Secrets Officer' role, or the \
            list/get/set/delete/purge secret permissions; or a vault firewall refuses this host)"
            .into(),
        ProbeFailure::Authentication => "authentication: no token for the vault (check the \
            tenant, the client ID and secret, or the managed identity)"
            .into(),
        ProbeFailure::Ca => "CA: the vault's TLS certificate is not trusted (add its CA with \
            SSL_CERT_FILE or SSL_CERT_DIR)"
            .into(),
        ProbeFailure::Proxy => format!(
            "proxy: the vault cannot be reached through the HTTPS proxy {} (check HTTPS_PROXY \
             and NO_PROXY)",
            proxy.unwrap_or("in use")
        ),
        ProbeFailure::Dns => "DNS: the vault's host name does not resolve (check the endpoint \
            and the resolver)"
            .into(),
        ProbeFailure::Network => "network: the vault cannot be reached (check the endpoint, \
            firewall and routes)"
            .into(),
        ProbeFailure::Refused => "the vault refused the listing".into(),
    }
}

/// [`advice`] for the token endpoint (Entra ID, or the managed-identity endpoint): the
/// same classes as the vault's, naming the endpoint operators must check instead.
fn token_advice(failure: ProbeFailure, proxy: Option<&str>) -> String {
    match failure {
        ProbeFailure::Permission | ProbeFailure::Authentication => {
            advice(ProbeFailure::Authentication, ProbeTarget::Vault, proxy)
        }
        ProbeFailure::Ca => "CA: the token endpoint's TLS certificate is not trusted (add its CA \
            with SSL_CERT_FILE or SSL_CERT_DIR)"
            .into(),
        ProbeFailure::Proxy => format!(
            "proxy: the token endpoint cannot be reached through the HTTPS proxy {} (check \
             HTTPS_PROXY and NO_PROXY)",
            proxy.unwrap_or("in use")
        ),
        ProbeFailure::Dns => "DNS: the token endpoint's host name does not resolve (check \
            AZURE_AUTHORITY_HOST and the resolver)"
            .into(),
        ProbeFailure::Network => "network: the token endpoint cannot be reached (check \
            AZURE_AUTHORITY_HOST or the managed identity endpoint, firewall and routes)"
            .into(),
        ProbeFailure::Refused => "the token endpoint answered without a token".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_class_names_its_piece() {
        let first = |f: ProbeFailure, proxy| {
            advice(f, ProbeTarget::Vault, proxy).split(':').next().unwrap().to_string()
        };
        assert_eq!(first(ProbeFailure::Permission, None), "permission");
        assert_eq!(first(ProbeFailure::Authentication, None), "authentication");
        assert_eq!(first(ProbeFailure::Ca, None), "CA");
        assert_eq!(first(ProbeFailure::Dns, None), "DNS");
        assert_eq!(first(ProbeFailure::Network, None), "network");
        assert_eq!(first(ProbeFailure::Refused, None), "the vault refused the listing");
        assert!(
            advice(ProbeFailure::Proxy, ProbeTarget::Vault, Some("http://p:3128")).starts_with(
                "proxy: the vault cannot be reached through the HTTPS proxy http://p:3128 "
            )
        );
        // The token endpoint: the same classes, naming it.
        let token = |f| advice(f, ProbeTarget::TokenEndpoint, Some("http://p:3128"));
        assert!(token(ProbeFailure::Dns).starts_with("DNS: the token endpoint's host name"));
        assert!(token(ProbeFailure::Network).starts_with("network: the token endpoint cannot"));
        assert!(token(ProbeFailure::Ca).starts_with("CA: the token endpoint's TLS certificate"));
        assert!(token(ProbeFailure::Proxy).starts_with(
            "proxy: the token endpoint cannot be reached through the HTTPS proxy http://p:3128 "
        ));
        assert!(token(ProbeFailure::Authentication).starts_with("authentication: no token"));
        assert_eq!(token(ProbeFailure::Refused), "the token endpoint answered without a token");
    }
}
