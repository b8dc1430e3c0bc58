//! Azure Key Vault store: each KES key is one Key Vault **secret** whose value is the stored
//! key, spoken to over the REST API with a blocking client (no Azure SDK, no async runtime).
//!
//! Layout: `mod.rs` owns the store and upstream's algorithms (create-if-absent with the
//! soft-delete purge dance, oldest-version reads, idempotent delete, paged listing, the
//! status probe); `options.rs` what the config file and the environment say; `select.rs`
//! which credential a deployment uses; `vault.rs` one authenticated vault call (challenge,
//! token, purge with retry, version listing); `client.rs` the HTTP transport and retries, `proxy.rs` Go's proxy rules and `dns.rs` the
//! resolver cache;
//! `credentials.rs` token sources and the token cache; `certificate.rs` the client
//! certificate and its signed assertions; `error.rs` and `wire.rs` the pure
//! parsers of error bodies, challenges, `Retry-After`, secret bundles and list pages.
//!
//! One read, end to end: `get` lists the versions and reads the latest version at the same
//! time (two pooled connections); when the oldest version is the latest — every key KES
//! created itself — that answer is final, so a cold key costs one round trip. Each call
//! takes a token from the cache (one refresh at a time, ahead of expiry), sends it, and on
//! a 401 drops that token and retries once; 408/429/5xx and connection failures are
//! retried with jittered backoff or `Retry-After`, never past the caller's deadline.
//!
//! Facts: `kes-azure-keystore.md` §2–§5 (upstream's semantics, which this follows),
//! `azure-rest.md` (the REST surface), and the "Observed on upstream's running binary" list
//! of `spec/README.md` (items 6–9: Retry-After, 404 on the version listing, purge 403,
//! proxy and CA environment variables).
//!
//! Must not: rewrite or rename stored values or names; put a token, client secret or stored
//! value into an error or log line; sleep past the deadline a caller passes in.

pub mod certificate;
pub mod client;
pub mod credentials;
mod dns;
pub mod error;
pub mod options;
pub mod proxy;
pub mod select;
mod vault;
pub mod wire;

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

use ureq::http::Method;
use zeroize::Zeroizing;

use self::client::{Http, HttpSettings, ProxySettings, Request, Response, RetryPolicy, Url};
use self::credentials::{TokenCache, authority_for_vault_host, resource_for_vault_host};
use self::error::{Class, ProbeError, ProbeFailure, ProbeTarget, api_error, classify, redact};
pub use self::options::{AzureConfig, AzureCredentials, AzureOptions};
pub use self::select::select_source;
use self::vault::{CallError, Purge, Vault, bad, fail_http, map_get_status};
use self::wire::{
    Bundle, ROTATION_TAG, SEQUENCE_TAG, VersionItem, check_attributes, key_versions,
    oldest_version, parse_bundle, parse_page,
};
use super::{KeyStore, Listing, StoreError, StoredValue, StoredVersion, list_page};

/// The data-plane API version upstream's SDK uses since 2024-06 (`kes-azure-keystore.md` §2).
pub const API_VERSION: &str = "7.5";
/// Purge attempts when a soft-deleted secret blocks a create (§3.2).
pub const CREATE_PURGE_ATTEMPTS: u32 = 25;
/// Set attempts after that purge, repeated while the answer is `ObjectIsBeingDeleted` (§3.2).
pub const CREATE_SET_ATTEMPTS: u32 = 7;
/// Purge attempts after a soft delete (§3.4).
pub const DELETE_PURGE_ATTEMPTS: u32 = 10;
/// Version-listing pages read for one key. Upstream reads only the first page (25
/// versions); following up to this many is a bounded superset (§9 open point 3).
pub const MAX_VERSION_PAGES: usize = 40;
/// Secret-listing pages read for one listing: 25 secrets per page, so 250 000 secrets.
/// The caller's deadline bounds the time.
pub const MAX_LIST_PAGES: usize = 10_000;
/// A rotation waits until this many seconds after the first version's `created` second, so
/// that the first version stays the oldest for upstream's read (see `add_version_inner`).
pub const FIRST_VERSION_GAP_SECS: i64 = 1;
/// Stack of the helper thread that reads the latest version while the versions are listed.
pub const GET_THREAD_STACK: usize = 256 << 10;

/// The Azure Key Vault key store.
pub struct AzureStore {
    endpoint: String,
    vault: Vault,
}

impl fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureStore").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl AzureStore {
    /// Builds the store without contacting the vault (`kes-azure-keystore.md` §8: starting
    /// does not connect). Fails on a malformed endpoint, unusable CA files or proxy, or
    /// incomplete credentials.
    pub fn new(cfg: &AzureConfig, opts: AzureOptions) -> Result<AzureStore, String> {
        let endpoint = cfg.endpoint.trim().trim_end_matches('/').to_string();
        let url = Url::parse(&endpoint)
            .map_err(|e| format!("azure: invalid endpoint '{endpoint}': {e}"))?;
        if url.scheme != "https" {
            return Err(format!(
                "azure: endpoint '{endpoint}' must use https (tokens are never sent in clear text)"
            ));
        }
        if !url.rest.is_empty() && url.rest != "/" {
            return Err(format!("azure: endpoint '{endpoint}' must not have a path or query"));
        }
        let proxy = match opts.proxy.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
            Some(p) => Some(ProxySettings::parse(p, opts.no_proxy.as_deref().unwrap_or(""))?),
            None => None,
        };
        let http = Http::new(&HttpSettings {
            roots: opts.roots.clone(),
            proxy,
            connect_timeout: opts.connect_timeout,
            read_timeout: opts.read_timeout,
            retry: RetryPolicy {
                max_retries: opts.max_retries,
                base_delay: opts.retry_base_delay,
                max_delay: opts.retry_max_delay,
                max_retry_after: opts.max_retry_after,
            },
        })
        .map_err(|e| format!("azure: {e}"))?;
        let host = url.host.to_ascii_lowercase();
        let authority = match opts.authority_host_override.as_deref().map(str::trim) {
            Some(a) if a.contains("://") => a.trim_end_matches('/').to_string(),
            Some(a) if !a.is_empty() => format!("https://{}", a.trim_end_matches('/')),
            _ => authority_for_vault_host(&host).to_string(),
        };
        let source = select_source(&cfg.credentials, &opts, &authority)?;
        log::debug!("azure: {} authenticates with {}", endpoint, source.describe());
        let ip_like = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok();
        Ok(AzureStore {
            vault: Vault {
                base: url.origin(),
                known_resource: resource_for_vault_host(&host).map(String::from),
                status_timeout: opts.status_timeout,
                origin: url,
                host,
                ip_like,
                http,
                source,
                tokens: TokenCache::new(),
                resource: Mutex::new(None),
                skip_resource_check: opts.danger_skip_challenge_resource_check,
                warned: AtomicBool::new(false),
                conflict_delay: opts.conflict_delay,
                conflict_jitter: opts.conflict_jitter,
            },
            endpoint,
        })
    }

    /// Which credential the store uses, for the startup banner.
    pub fn credential(&self) -> String {
        self.vault.source.describe()
    }

    /// The HTTPS proxy in use, without credentials.
    pub fn proxy(&self) -> Option<String> {
        self.vault.http.proxy().map(|p| p.shown().to_string())
    }

    fn create_inner(&self, name: &str, value: &[u8], deadline: Instant) -> Result<(), StoreError> {
        let v = &self.vault;
        let fail = |what: &str, r: &Response| fail_http("create", name, what, r);
        let r = v
            .call(Method::GET, &v.secret_url(name, ""), None, deadline)
            .map_err(|e| e.store("create", name, "failed to check whether it exists"))?;
        match classify(r.status, &api_error(r.status, &r.body)) {
            Class::Success => {
                let b = parse_bundle(&r.body).map_err(|e| bad("create", name, e))?;
                check_attributes(&b.attributes, SystemTime::now()).map_err(|m| {
                    StoreError::Failed(format!("azure: failed to create '{name}': {m}"))
                })?;
                return Err(StoreError::Exists);
            }
            Class::NotFound => {}
            Class::ForbiddenByPolicy => {
                return Err(fail("insufficient permissions to check whether it exists", &r));
            }
            _ => return Err(fail("failed to check whether it exists", &r)),
        }

        let text = std::str::from_utf8(value).map_err(|_| {
            StoreError::Failed(format!(
                "azure: failed to create '{name}': the value is not valid UTF-8 text"
            ))
        })?;
        let body = Zeroizing::new(serde_json::json!({ "value": text }).to_string().into_bytes());
        let hide = |e: StoreError| match e {
            StoreError::Failed(m) => StoreError::Failed(redact(&m, &[text])),
            StoreError::Unreachable(m) => StoreError::Unreachable(redact(&m, &[text])),
            other => other,
        };
        let set = || {
            v.call(Method::PUT, &v.secret_url(name, ""), Some(&body), deadline)
                .map_err(|e| hide(e.store("create", name, "failed to set secret")))
        };
        let mut r = set()?;
        let class = classify(r.status, &api_error(r.status, &r.body));
        if matches!(class, Class::DeletedButRecoverable | Class::BeingDeleted) {
            // A soft-deleted secret holds the name (often left by pre-2024 releases): purge
            // it, then set again while Key Vault is still finishing the deletion (§3.2).
            match v
                .purge(name, CREATE_PURGE_ATTEMPTS, deadline)
                .map_err(|e| e.store("create", name, "failed to purge deleted secret"))?
            {
                Purge::Done => {}
                Purge::Stopped(p) => {
                    return Err(hide(fail_http(
                        "create",
                        name,
                        "failed to purge deleted secret",
                        &p,
                    )));
                }
            }
            for attempt in 1..=CREATE_SET_ATTEMPTS {
                r = set()?;
                if classify(r.status, &api_error(r.status, &r.body)) != Class::BeingDeleted
                    || attempt == CREATE_SET_ATTEMPTS
                {
                    break;
                }
                if !v.conflict_pause(deadline) {
                    break;
                }
            }
        }
        match classify(r.status, &api_error(r.status, &r.body)) {
            Class::Success => Ok(()),
            Class::DeletedButRecoverable => Err(hide(fail(
                &format!(
                    "key already exists but is currently marked as deleted. Either restore or purge '{name}'"
                ),
                &r,
            ))),
            Class::ForbiddenByPolicy => Err(hide(fail("insufficient permissions", &r))),
            _ => Err(hide(fail("failed to set secret", &r))),
        }
    }

    fn get_inner(&self, name: &str, deadline: Instant) -> Result<StoredValue, StoreError> {
        let v = &self.vault;
        let latest_url = v.secret_url(name, "");
        // A cold key costs one round trip: the version listing and the latest version are
        // read together; most keys have exactly one version, which is then the oldest.
        let read_latest = || v.call(Method::GET, &latest_url, None, deadline);
        let (versions, latest) = parallel(|| v.list_versions(name, deadline), &read_latest);
        self.read_oldest(name, &versions?, latest, deadline)
    }

    /// Upstream's read (§3.3): the value of the oldest of `versions`, taken from `latest`
    /// (the answer to reading the latest version) when that is the oldest.
    fn read_oldest(
        &self,
        name: &str,
        versions: &[VersionItem],
        latest: Result<Response, CallError>,
        deadline: Instant,
    ) -> Result<StoredValue, StoreError> {
        let v = &self.vault;
        let entries: Vec<_> = versions.iter().map(VersionItem::entry).collect();
        let want = oldest_version(&entries);
        let bundle = match latest {
            Ok(r) if r.status == 200 => {
                let b = parse_bundle(&r.body).map_err(|e| bad("get", name, e))?;
                if want.is_empty() || b.version() == want { Some(b) } else { None }
            }
            // The latest is the only version (or the one to read): its answer is final.
            Ok(r) if want.is_empty() || versions.len() == 1 => {
                return Err(map_get_status(name, "failed to get secret", &r));
            }
            Err(e) if want.is_empty() || versions.len() == 1 => {
                return Err(e.store("get", name, "failed to get secret"));
            }
            _ => None,
        };
        let bundle = match bundle {
            Some(b) => b,
            None => {
                let r = v
                    .call(Method::GET, &v.secret_url(name, &want), None, deadline)
                    .map_err(|e| e.store("get", name, "failed to get secret version"))?;
                if r.status != 200 {
                    return Err(map_get_status(name, "failed to get secret version", &r));
                }
                parse_bundle(&r.body).map_err(|e| bad("get", name, e))?
            }
        };
        check_attributes(&bundle.attributes, SystemTime::now())
            .map_err(|m| StoreError::Failed(format!("azure: failed to get '{name}': {m}")))?;
        Ok(bundle.value)
    }

    /// The key's first version and its rotation versions (see [`wire::key_versions`]); a
    /// key without rotation versions is read exactly as [`Self::get_inner`] reads it, so
    /// its errors (a disabled or expired secret, say) stay what they always were.
    fn versions_inner(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        let v = &self.vault;
        let latest_url = v.secret_url(name, "");
        // As in `get`: the listing and the latest version together; the latest is the
        // newest rotation version, or the first version of a key never rotated.
        let read_latest = || v.call(Method::GET, &latest_url, None, deadline);
        let (items, latest) = parallel(|| v.list_versions(name, deadline), &read_latest);
        let items = items?;
        let (first, rotations) = match key_versions(&items) {
            Some((first, rotations)) if !rotations.is_empty() => (first, rotations),
            // Never rotated: exactly `get`'s read, still one round trip for a cold key.
            found => {
                let entries: Vec<_> = items.iter().map(VersionItem::entry).collect();
                let id = found
                    .and_then(|(f, _)| f.version.clone())
                    .unwrap_or_else(|| oldest_version(&entries));
                let value = self.read_oldest(name, &items, latest, deadline)?;
                return Ok(vec![StoredVersion { id, enabled: true, value: Some(value) }]);
            }
        };
        let latest = match latest {
            Ok(r) if r.status == 200 => parse_bundle(&r.body).ok(),
            _ => None,
        };
        let mut out = Vec::with_capacity(rotations.len() + 1);
        for item in std::iter::once(first).chain(rotations) {
            let id = item.version.clone().unwrap_or_default();
            let value = if item.enabled {
                let bundle = match &latest {
                    Some(b) if b.version() == id => None,
                    _ => Some(self.read_version(name, &id, deadline)?),
                };
                let bundle = bundle.as_ref().or(latest.as_ref()).ok_or_else(|| {
                    StoreError::Failed(format!("azure: failed to get '{name}': version vanished"))
                })?;
                check_attributes(&bundle.attributes, SystemTime::now()).map_err(|m| {
                    StoreError::Failed(format!("azure: failed to get '{name}' version '{id}': {m}"))
                })?;
                Some(StoredValue::new(bundle.value.to_vec()))
            } else {
                // Key Vault refuses to return a disabled version's value (403 SecretDisabled).
                None
            };
            out.push(StoredVersion { id, enabled: item.enabled, value });
        }
        Ok(out)
    }

    /// `GET /secrets/{name}/{id}` → the bundle; 404 → `NotFound`.
    fn read_version(&self, name: &str, id: &str, deadline: Instant) -> Result<Bundle, StoreError> {
        let v = &self.vault;
        let r = v
            .call(Method::GET, &v.secret_url(name, id), None, deadline)
            .map_err(|e| e.store("get", name, "failed to get secret version"))?;
        if r.status != 200 {
            return Err(map_get_status(name, "failed to get secret version", &r));
        }
        parse_bundle(&r.body).map_err(|e| bad("get", name, e))
    }

    /// Sets a new version of the secret, tagged as a rotation of the first version.
    fn add_version_inner(
        &self,
        name: &str,
        value: &[u8],
        deadline: Instant,
    ) -> Result<String, StoreError> {
        let v = &self.vault;
        let items = v.list_versions(name, deadline)?;
        let (first, rotations) = key_versions(&items).ok_or_else(|| {
            StoreError::Failed(format!(
                "azure: '{name}' has no version with an id and a creation time"
            ))
        })?;
        let first_id = first.version.clone().unwrap_or_default();
        // Key Vault's `created` has a resolution of one second, and upstream reads the
        // oldest version with ties going to list order (by id): a rotation version created
        // in the same second as the first version could be what upstream takes for the key.
        // Wait until this host's clock is past that second (plus one for clock skew).
        if let Some(created) = first.created {
            loop {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                if now > created.saturating_add(FIRST_VERSION_GAP_SECS) {
                    break;
                }
                let wait = Duration::from_millis(200);
                if Instant::now() + wait >= deadline {
                    return Err(StoreError::Failed(format!(
                        "azure: failed to rotate '{name}': the key was created too recently; retry in a few seconds"
                    )));
                }
                std::thread::sleep(wait);
            }
        }
        let sequence = rotations.iter().map(|r| r.sequence).max().unwrap_or(0) + 1;
        let text = std::str::from_utf8(value).map_err(|_| {
            StoreError::Failed(format!(
                "azure: failed to rotate '{name}': the value is not valid UTF-8 text"
            ))
        })?;
        let body = Zeroizing::new(
            serde_json::json!({
                "value": text,
                "tags": { ROTATION_TAG: first_id, SEQUENCE_TAG: sequence.to_string() }
            })
            .to_string()
            .into_bytes(),
        );
        let hide = |m: String| redact(&m, &[text]);
        let r = v.call(Method::PUT, &v.secret_url(name, ""), Some(&body), deadline).map_err(
            |e| match e.store("rotate", name, "failed to set secret") {
                StoreError::Unreachable(m) => StoreError::Unreachable(hide(m)),
                StoreError::Failed(m) => StoreError::Failed(hide(m)),
                other => other,
            },
        )?;
        match classify(r.status, &api_error(r.status, &r.body)) {
            Class::Success => {}
            Class::NotFound | Class::DeletedButRecoverable | Class::BeingDeleted => {
                return Err(StoreError::NotFound);
            }
            _ => {
                let StoreError::Failed(m) = fail_http("rotate", name, "failed to set secret", &r)
                else {
                    unreachable!("fail_http builds Failed")
                };
                return Err(StoreError::Failed(hide(m)));
            }
        }
        let bundle = parse_bundle(&r.body).map_err(|e| bad("rotate", name, e))?;
        Ok(bundle.version())
    }

    /// `PATCH /secrets/{name}/{id}` with `attributes.enabled`, for the first version or a
    /// rotation version only (never a create duplicate).
    fn set_enabled_inner(
        &self,
        name: &str,
        id: &str,
        enabled: bool,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let v = &self.vault;
        let items = v.list_versions(name, deadline)?;
        let (first, rotations) = key_versions(&items).ok_or(StoreError::NotFound)?;
        let known =
            std::iter::once(first).chain(rotations).any(|i| i.version.as_deref() == Some(id));
        if !known {
            return Err(StoreError::NotFound);
        }
        let body = serde_json::json!({ "attributes": { "enabled": enabled } }).to_string();
        let r = v
            .call(Method::PATCH, &v.secret_url(name, id), Some(body.as_bytes()), deadline)
            .map_err(|e| e.store("update", name, "failed to update secret version"))?;
        match r.status {
            200 => Ok(()),
            404 => Err(StoreError::NotFound),
            _ => Err(fail_http("update", name, "failed to update secret version", &r)),
        }
    }

    fn delete_inner(&self, name: &str, deadline: Instant) -> Result<(), StoreError> {
        let v = &self.vault;
        let r = v
            .call(Method::DELETE, &v.secret_url(name, ""), None, deadline)
            .map_err(|e| e.store("delete", name, "failed to delete secret"))?;
        match classify(r.status, &api_error(r.status, &r.body)) {
            Class::Success | Class::NotFound => {}
            _ => return Err(fail_http("delete", name, "failed to delete secret", &r)),
        }
        match v
            .purge(name, DELETE_PURGE_ATTEMPTS, deadline)
            .map_err(|e| e.store("delete", name, "failed to purge secret"))?
        {
            Purge::Done => Ok(()),
            // Key Vault finishes the deletion by itself; a later create purges again (§3.4).
            Purge::Stopped(r)
                if classify(r.status, &api_error(r.status, &r.body)) == Class::BeingDeleted =>
            {
                log::info!(
                    "azure: '{name}' is still being deleted; leaving the purge to Key Vault"
                );
                Ok(())
            }
            Purge::Stopped(r) => Err(fail_http("delete", name, "failed to purge secret", &r)),
        }
    }

    /// One listing call, as `kes server --check --keystore` probes the vault (a token and
    /// the first page of secrets): the number of names on the page and whether more follow,
    /// or why there is no listing, classified by type ([`ProbeFailure`]).
    pub fn probe(&self, deadline: Instant) -> Result<(usize, bool), ProbeError> {
        let v = &self.vault;
        let url = format!("{}/secrets?api-version={API_VERSION}", v.base);
        let failed = |failure, e: StoreError| ProbeError {
            failure,
            target: ProbeTarget::Vault,
            message: e.to_string(),
        };
        let r = v.call(Method::GET, &url, None, deadline).map_err(|e| {
            let (failure, target) = match &e {
                CallError::Transport(t) => (ProbeFailure::of_transport(t.kind), ProbeTarget::Vault),
                CallError::Auth(_) => (ProbeFailure::Authentication, ProbeTarget::Vault),
                CallError::Token(t) => {
                    (ProbeFailure::of_token(t.failure), ProbeTarget::TokenEndpoint)
                }
            };
            ProbeError { target, ..failed(failure, e.store("list", "", "failed to list secrets")) }
        })?;
        if r.status != 200 {
            let failure = ProbeFailure::of_answer(r.status, &api_error(r.status, &r.body));
            return Err(failed(failure, fail_http("list", "", "failed to list secrets", &r)));
        }
        let page =
            parse_page(&r.body).map_err(|e| failed(ProbeFailure::Refused, bad("list", "", e)))?;
        Ok((page.names().len(), page.next().is_some()))
    }

    fn list_inner(&self, prefix: &str, deadline: Instant) -> Result<Listing, StoreError> {
        let v = &self.vault;
        let mut url = format!("{}/secrets?api-version={API_VERSION}", v.base);
        let mut names = Vec::new();
        for _ in 0..MAX_LIST_PAGES {
            let r = v
                .call(Method::GET, &url, None, deadline)
                .map_err(|e| e.store("list", prefix, "failed to list secrets"))?;
            if r.status != 200 {
                return Err(fail_http("list", prefix, "failed to list secrets", &r));
            }
            let page = parse_page(&r.body).map_err(|e| bad("list", prefix, e))?;
            names.extend(page.names());
            match page.next() {
                Some(next) => {
                    url = v.next_url(next).map_err(|m| {
                        StoreError::Failed(format!("azure: failed to list '{prefix}': {m}"))
                    })?
                }
                None => return Ok(list_page(names, prefix)),
            }
        }
        Err(StoreError::Failed(format!(
            "azure: failed to list '{prefix}': more than {MAX_LIST_PAGES} pages"
        )))
    }
}

impl KeyStore for AzureStore {
    fn describe(&self) -> String {
        format!("Azure KeyVault: {}", self.endpoint)
    }

    /// `GET {endpoint}` without credentials or retries; any HTTP answer means reachable
    /// (§3.1).
    fn status(&self, deadline: Instant) -> Result<Duration, StoreError> {
        let v = &self.vault;
        let start = Instant::now();
        let d = deadline.min(start + v.status_timeout.min(STATUS_TIMEOUT_MAX));
        let req = Request::new(Method::GET, &self.endpoint);
        match v.http.send_once(&req, d) {
            Ok(_) => Ok(start.elapsed()),
            Err(e) => Err(StoreError::Unreachable(format!("azure: {e}"))),
        }
    }

    fn create(&self, name: &str, value: &[u8], deadline: Instant) -> Result<(), StoreError> {
        self.create_inner(name, value, deadline)
    }

    fn get(&self, name: &str, deadline: Instant) -> Result<StoredValue, StoreError> {
        self.get_inner(name, deadline)
    }

    fn delete(&self, name: &str, deadline: Instant) -> Result<(), StoreError> {
        self.delete_inner(name, deadline)
    }

    fn versions(&self, name: &str, deadline: Instant) -> Result<Vec<StoredVersion>, StoreError> {
        self.versions_inner(name, deadline)
    }

    fn add_version(
        &self,
        name: &str,
        value: &[u8],
        deadline: Instant,
    ) -> Result<String, StoreError> {
        self.add_version_inner(name, value, deadline)
    }

    fn set_version_enabled(
        &self,
        name: &str,
        id: &str,
        enabled: bool,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.set_enabled_inner(name, id, enabled, deadline)
    }

    fn list(&self, prefix: &str, deadline: Instant) -> Result<Listing, StoreError> {
        self.list_inner(prefix, deadline)
    }

    fn stats(&self) -> crate::keystore::StoreStats {
        use std::sync::atomic::Ordering::Relaxed;
        let http = &self.vault.http;
        crate::keystore::StoreStats {
            requests: http.requests.load(Relaxed),
            throttled: http.throttled.load(Relaxed),
            retries: http.retries.load(Relaxed),
        }
    }
}

/// Upper bound of the status probe whatever the options say (spec §3.1 recommends 10 s
/// for the background probe; a probe longer than a minute is useless).
pub const STATUS_TIMEOUT_MAX: Duration = Duration::from_secs(60);

/// Runs `a` here and `b` on a helper thread, both to completion. Falls back to running
/// them one after the other when no thread can be started.
fn parallel<A, B: Send>(a: impl FnOnce() -> A, b: &(dyn Fn() -> B + Sync)) -> (A, B) {
    std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("azure-get".into())
            .stack_size(GET_THREAD_STACK)
            .spawn_scoped(s, b);
        match spawned {
            Ok(h) => {
                let ra = a();
                match h.join() {
                    Ok(rb) => (ra, rb),
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
            Err(_) => (a(), b()),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn endpoints_are_validated() {
        let cfg = |e: &str| AzureConfig {
            endpoint: e.into(),
            credentials: AzureCredentials::ManagedIdentity { client_id: String::new() },
        };
        let mut o = AzureOptions::new();
        // Trust something so that the test does not depend on the machine's bundle.
        o.roots.files.clear();
        o.roots.dirs = vec![PathBuf::from("/nonexistent")];
        let err = AzureStore::new(&cfg("http://v.vault.azure.net"), o.clone()).unwrap_err();
        assert!(err.contains("must use https"), "{err}");
        let err = AzureStore::new(&cfg("https://v.vault.azure.net/x"), o.clone()).unwrap_err();
        assert!(err.contains("path"), "{err}");
        let err = AzureStore::new(&cfg("v.vault.azure.net"), o.clone()).unwrap_err();
        assert!(err.contains("invalid endpoint"), "{err}");
        let err = AzureStore::new(&cfg("https://v.vault.azure.net/"), o).unwrap_err();
        assert!(err.contains("no trusted CA"), "{err}");
    }
}
