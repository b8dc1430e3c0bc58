//! Standalone fake Azure Key Vault for local runs and for clients in other processes (the
//! official Python SDK certification in `tests/azure_sdk/`, `kes server` by hand).
//!
//! Prints `KEY=value` lines on stdout, then serves until killed:
//! `VAULT_URL`, `AUTHORITY`, `CA_FILE`, `TENANT_ID`, `CLIENT_ID`, `CLIENT_SECRET`,
//! `IMDS_ENDPOINT`, `IDENTITY_ENDPOINT`, `IDENTITY_HEADER`, `MANAGED_IDENTITY_CLIENT_ID`,
//! `FEDERATED_TOKEN_FILE`, then `READY`.
//!
//! Settings from the environment: `FAKE_VAULT_PORT`, `FAKE_VAULT_HTTP_PORT`,
//! `FAKE_VAULT_LATENCY_MS`, `FAKE_VAULT_TOKEN_LIFETIME_SECS`, `FAKE_VAULT_DELETE_DELAY_MS`,
//! `FAKE_VAULT_RECOVER_DELAY_MS`, `FAKE_VAULT_CLIENT_CERT` (a PEM file whose certificates
//! are registered on the app for the client-certificate credential). Faults at run time: `POST <VAULT_URL>/_fake/fault`
//! (see the `control` function in `tests/support/fake_vault.rs`).

#[path = "../tests/support/fake_vault.rs"]
mod fake_vault;

use std::io::Write;
use std::time::Duration;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn main() {
    let mut cfg = fake_vault::Config::default();
    if let Some(p) = env_u64("FAKE_VAULT_PORT") {
        cfg.port = u16::try_from(p).expect("FAKE_VAULT_PORT");
    }
    if let Some(p) = env_u64("FAKE_VAULT_HTTP_PORT") {
        cfg.http_port = u16::try_from(p).expect("FAKE_VAULT_HTTP_PORT");
    }
    if let Some(ms) = env_u64("FAKE_VAULT_LATENCY_MS") {
        cfg.latency = Duration::from_millis(ms);
    }
    if let Some(s) = env_u64("FAKE_VAULT_TOKEN_LIFETIME_SECS") {
        cfg.token_lifetime = Duration::from_secs(s.max(1));
    }
    if let Some(ms) = env_u64("FAKE_VAULT_DELETE_DELAY_MS") {
        cfg.delete_delay = Duration::from_millis(ms);
    }
    if let Some(ms) = env_u64("FAKE_VAULT_RECOVER_DELAY_MS") {
        cfg.recover_delay = Duration::from_millis(ms);
    }
    if let Some(path) = std::env::var_os("FAKE_VAULT_CLIENT_CERT") {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<_> = CertificateDer::pem_file_iter(&path)
            .expect("FAKE_VAULT_CLIENT_CERT")
            .map(|c| c.expect("FAKE_VAULT_CLIENT_CERT: certificate").to_vec())
            .collect();
        assert!(!certs.is_empty(), "FAKE_VAULT_CLIENT_CERT: no certificate");
        cfg.client_certificates.extend(certs);
    }
    let vault = fake_vault::FakeVault::start_with(cfg.clone());
    let lines = [
        ("VAULT_URL", vault.url()),
        ("AUTHORITY", vault.authority()),
        ("CA_FILE", vault.ca_file().display().to_string()),
        ("TENANT_ID", cfg.tenant_id.clone()),
        ("CLIENT_ID", cfg.client_id.clone()),
        ("CLIENT_SECRET", cfg.client_secret.clone()),
        ("IMDS_ENDPOINT", vault.imds_endpoint()),
        ("IDENTITY_ENDPOINT", vault.app_service_endpoint()),
        ("IDENTITY_HEADER", cfg.identity_header.clone()),
        ("MANAGED_IDENTITY_CLIENT_ID", cfg.managed_identity_client_id.clone()),
        ("FEDERATED_TOKEN_FILE", vault.federated_token_file().display().to_string()),
    ];
    let mut out = std::io::stdout().lock();
    for (k, v) in lines {
        let _ = writeln!(out, "{k}={v}");
    }
    let _ = writeln!(out, "READY");
    let _ = out.flush();
    drop(out);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
