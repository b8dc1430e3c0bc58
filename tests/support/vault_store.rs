//! An Azure key store pointed at the project's fake vault, with retry and conflict pauses
//! shortened for tests. Include next to `fake_vault.rs`:
//! `#[path = "support/vault_store.rs"] mod vault_store;`

use crate::fake_vault::FakeVault;
use kes::keystore::azure::{AzureConfig, AzureCredentials};
use kes::keystore::azure::{AzureOptions, AzureStore};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Options trusting the fake vault's CA and its token authority, with fast retries.
pub fn opts(v: &FakeVault) -> AzureOptions {
    let mut o = AzureOptions::new();
    o.roots = kes::goroots::RootSources::only_file(v.ca_file());
    o.authority_host_override = Some(v.authority());
    o.retry_base_delay = Duration::from_millis(10);
    o.retry_max_delay = Duration::from_millis(40);
    o.conflict_delay = Duration::from_millis(5);
    o.conflict_jitter = Duration::from_millis(10);
    o
}

/// The fake vault's endpoint with its client-secret credentials.
pub fn secret_config(v: &FakeVault) -> AzureConfig {
    AzureConfig {
        endpoint: v.url(),
        credentials: AzureCredentials::ClientSecret {
            tenant_id: v.tenant_id(),
            client_id: v.client_id(),
            client_secret: Zeroizing::new(v.client_secret()),
        },
    }
}

/// A store using the fake vault's client-secret credentials.
pub fn azure_store(v: &FakeVault) -> Arc<AzureStore> {
    Arc::new(AzureStore::new(&secret_config(v), opts(v)).unwrap())
}
