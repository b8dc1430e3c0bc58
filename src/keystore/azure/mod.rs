//! Azure Key Vault store: each KES key is one Key Vault **secret** whose value is the stored
//! key, spoken to over the REST API with a blocking client (no Azure SDK, no async runtime).
//!
//! Layout: `mod.rs` owns the store and upstream's algorithms (create-if-absent with the
//! soft-delete purge dance, oldest-version reads, idempotent delete, paged listing, the
//! status probe); `client.rs` the HTTP transport, proxy choice, DNS cache and retries;
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
pub mod error;
pub mod wire;

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ureq::http::Method;
use zeroize::Zeroizing;

use self::certificate::ClientCertificate;
use self::client::{
    Http, HttpSettings, ProxySettings, Request, Response, RetryPolicy, TransportError, Url, jitter,
    pct_encode,
};
use self::credentials::{
    IMDS_ENDPOINT, Source, TokenCache, authority_for_vault_host, resource_for_vault_host,
};
use self::error::{Class, api_error, classify, parse_challenge, redact, resource_matches_host};
use self::wire::{
    BadBody, Bundle, ROTATION_TAG, SEQUENCE_TAG, VersionItem, check_attributes, key_versions,
    oldest_version, parse_bundle, parse_page,
};
use super::{KeyStore, Listing, StoreError, StoredValue, StoredVersion, list_page};
use crate::config::{AzureConfig, AzureCredentials};

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

/// How the store connects and authenticates, beyond the config file. Build it with
/// [`AzureOptions::from_env`] in the server (honours the environment the way upstream's Go
/// binary does) or [`AzureOptions::new`] for a hermetic setup (tests).
#[derive(Clone)]
pub struct AzureOptions {
    /// Extra trusted CA bundles (PEM), e.g. from `SSL_CERT_FILE`.
    pub extra_ca_files: Vec<PathBuf>,
    /// Directories of trusted CA files, e.g. from `SSL_CERT_DIR`.
    pub extra_ca_dirs: Vec<PathBuf>,
    /// The system bundle, used when present. Default: the first of Go's bundle paths
    /// that exists ([`client::SYSTEM_CA_BUNDLES`]).
    pub system_ca_file: Option<PathBuf>,
    /// HTTPS proxy URL (`HTTPS_PROXY`); `None` = connect directly.
    pub proxy: Option<String>,
    /// Hosts that bypass the proxy (`NO_PROXY`, Go syntax).
    pub no_proxy: Option<String>,
    /// TCP + TLS connect timeout per attempt.
    pub connect_timeout: Duration,
    /// Timeout for the response head and for the body per attempt.
    pub read_timeout: Duration,
    /// Timeout of the status probe (capped further by the caller's deadline).
    pub status_timeout: Duration,
    /// Retries after the first attempt on 408/429/5xx and connection failures.
    pub max_retries: u32,
    /// First backoff; doubles per retry up to `retry_max_delay`.
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    /// Longest `Retry-After` honoured; longer ones fail the request at once.
    pub max_retry_after: Duration,
    /// Wait between purge/set attempts during Key Vault's deletion window: `conflict_delay`
    /// plus a uniform jitter below `conflict_jitter` (upstream: 200 ms + [0, 800) ms).
    pub conflict_delay: Duration,
    pub conflict_jitter: Duration,
    /// Entra ID base URL (`AZURE_AUTHORITY_HOST`); default: the vault's cloud.
    pub authority_host_override: Option<String>,
    /// IMDS base URL (`AZURE_POD_IDENTITY_AUTHORITY_HOST`); default `http://169.254.169.254`.
    pub imds_endpoint_override: Option<String>,
    /// App Service managed identity endpoint and secret header (`IDENTITY_ENDPOINT`,
    /// `IDENTITY_HEADER`); when both are set, managed identity uses them instead of IMDS.
    pub identity_endpoint: Option<String>,
    pub identity_header: Option<Zeroizing<String>>,
    /// Workload identity (`AZURE_FEDERATED_TOKEN_FILE`), used by the default chain.
    pub federated_token_file: Option<PathBuf>,
    /// `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` for the default chain.
    pub env_tenant_id: Option<String>,
    pub env_client_id: Option<String>,
    pub env_client_secret: Option<Zeroizing<String>>,
    /// `AZURE_CLIENT_CERTIFICATE_PATH`: a PEM file with the certificate and its private key,
    /// used by the default chain when no client secret is set. PKCS#12/PFX is not read.
    pub env_client_certificate_path: Option<PathBuf>,
    /// `AZURE_CLIENT_CERTIFICATE_PASSWORD`: decrypts a legacy encrypted PEM key.
    pub env_client_certificate_password: Option<Zeroizing<String>>,
    /// `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN` (`1` or `true`): put the chain into the
    /// assertion's `x5c` header (subject name + issuer authentication).
    pub env_client_send_certificate_chain: bool,
    /// Send tokens even when the 401 challenge names a resource whose domain does not
    /// cover the vault's host name (the Azure SDKs' `verify_challenge_resource=False`).
    /// Endpoints given as an IP address or `localhost` are never checked: they have no
    /// domain to compare.
    pub danger_skip_challenge_resource_check: bool,
}

impl fmt::Debug for AzureOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureOptions")
            .field("extra_ca_files", &self.extra_ca_files)
            .field("extra_ca_dirs", &self.extra_ca_dirs)
            .field("proxy", &self.proxy.as_ref().map(|p| strip_userinfo(p)))
            .field("no_proxy", &self.no_proxy)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("max_retries", &self.max_retries)
            .field("authority_host_override", &self.authority_host_override)
            .field("imds_endpoint_override", &self.imds_endpoint_override)
            .field("identity_endpoint", &self.identity_endpoint)
            .field("federated_token_file", &self.federated_token_file)
            .field("env_tenant_id", &self.env_tenant_id)
            .field("env_client_id", &self.env_client_id)
            .field("env_client_certificate_path", &self.env_client_certificate_path)
            .field("env_client_send_certificate_chain", &self.env_client_send_certificate_chain)
            .finish_non_exhaustive()
    }
}

impl Default for AzureOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl AzureOptions {
    /// Defaults without reading the environment.
    pub fn new() -> AzureOptions {
        AzureOptions {
            extra_ca_files: Vec::new(),
            extra_ca_dirs: Vec::new(),
            system_ca_file: Some(PathBuf::from(client::system_ca_bundle())),
            proxy: None,
            no_proxy: None,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            status_timeout: Duration::from_secs(10),
            max_retries: 6,
            retry_base_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(30),
            conflict_delay: Duration::from_millis(200),
            conflict_jitter: Duration::from_millis(800),
            authority_host_override: None,
            imds_endpoint_override: None,
            identity_endpoint: None,
            identity_header: None,
            federated_token_file: None,
            env_tenant_id: None,
            env_client_id: None,
            env_client_secret: None,
            env_client_certificate_path: None,
            env_client_certificate_password: None,
            env_client_send_certificate_chain: false,
            danger_skip_challenge_resource_check: false,
        }
    }

    /// Defaults plus what the environment says, like upstream's Go binary: `SSL_CERT_FILE`,
    /// `SSL_CERT_DIR`, `HTTPS_PROXY`/`https_proxy`, `NO_PROXY`/`no_proxy`,
    /// `AZURE_AUTHORITY_HOST`, `AZURE_POD_IDENTITY_AUTHORITY_HOST`, `IDENTITY_ENDPOINT`,
    /// `IDENTITY_HEADER`, `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_TENANT_ID`,
    /// `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, `AZURE_CLIENT_CERTIFICATE_PATH`,
    /// `AZURE_CLIENT_CERTIFICATE_PASSWORD`, `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN`.
    pub fn from_env() -> AzureOptions {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`AzureOptions::from_env`] over any variable lookup (testable without touching the
    /// process environment). Empty values count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> AzureOptions {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let mut o = AzureOptions::new();
        if let Some(f) = var("SSL_CERT_FILE") {
            o.extra_ca_files.push(PathBuf::from(f));
        }
        if let Some(d) = var("SSL_CERT_DIR") {
            o.extra_ca_dirs = d.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect();
        }
        o.proxy = var("HTTPS_PROXY").or_else(|| var("https_proxy"));
        o.no_proxy = var("NO_PROXY").or_else(|| var("no_proxy"));
        o.authority_host_override = var("AZURE_AUTHORITY_HOST");
        o.imds_endpoint_override = var("AZURE_POD_IDENTITY_AUTHORITY_HOST");
        if let (Some(e), Some(h)) = (var("IDENTITY_ENDPOINT"), var("IDENTITY_HEADER")) {
            o.identity_endpoint = Some(e);
            o.identity_header = Some(Zeroizing::new(h));
        }
        o.federated_token_file = var("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from);
        o.env_tenant_id = var("AZURE_TENANT_ID");
        o.env_client_id = var("AZURE_CLIENT_ID");
        o.env_client_secret = var("AZURE_CLIENT_SECRET").map(Zeroizing::new);
        o.env_client_certificate_path = var("AZURE_CLIENT_CERTIFICATE_PATH").map(PathBuf::from);
        // The password is taken as is (a password may start or end with a space).
        o.env_client_certificate_password =
            get("AZURE_CLIENT_CERTIFICATE_PASSWORD").filter(|p| !p.is_empty()).map(Zeroizing::new);
        o.env_client_send_certificate_chain = var("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
            .is_some_and(|v| v.trim() == "1" || v.trim().eq_ignore_ascii_case("true"));
        o
    }
}

fn strip_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((s, rest)) => match rest.split_once('@') {
            Some((_, h)) if !h.contains('/') || h.find('/') > rest.find('@') => {
                format!("{s}://{h}")
            }
            _ => url.to_string(),
        },
        None => url.rsplit_once('@').map(|(_, h)| h.to_string()).unwrap_or_else(|| url.to_string()),
    }
}

/// Picks the token source the config and environment call for (`kes-azure-keystore.md` §1):
/// client secret; managed identity (App Service endpoint when its variables are set, else
/// IMDS); or the default chain — environment client secret, then environment client
/// certificate, then workload identity, then managed identity. The choice is made once,
/// here, so a deployment always uses the same credential and says which in its banner. A
/// certificate is read and checked here: a broken one fails start-up instead of silently
/// falling through to the next credential.
pub fn select_source(
    creds: &AzureCredentials,
    o: &AzureOptions,
    authority: &str,
) -> Result<Source, String> {
    let nonempty = |s: &Option<String>| {
        s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(String::from)
    };
    let managed = |client_id: Option<String>| match (&o.identity_endpoint, &o.identity_header) {
        (Some(e), Some(h)) => {
            Source::AppService { endpoint: e.clone(), header: h.clone(), client_id }
        }
        _ => Source::Imds {
            endpoint: o.imds_endpoint_override.clone().unwrap_or_else(|| IMDS_ENDPOINT.to_string()),
            client_id,
        },
    };
    match creds {
        AzureCredentials::ClientSecret { tenant_id, client_id, client_secret } => {
            if tenant_id.trim().is_empty()
                || client_id.trim().is_empty()
                || client_secret.is_empty()
            {
                return Err("azure: credentials need tenant_id, client_id and client_secret".into());
            }
            Ok(Source::ClientSecret {
                authority: authority.to_string(),
                tenant: tenant_id.trim().to_string(),
                client_id: client_id.trim().to_string(),
                secret: client_secret.clone(),
            })
        }
        AzureCredentials::ManagedIdentity { client_id } => {
            Ok(managed(Some(client_id.trim().to_string()).filter(|c| !c.is_empty())))
        }
        AzureCredentials::Default => {
            let tenant = nonempty(&o.env_tenant_id);
            let client = nonempty(&o.env_client_id);
            let secret = o.env_client_secret.clone().filter(|s| !s.is_empty());
            if let (Some(tenant), Some(client_id), Some(secret)) = (&tenant, &client, secret) {
                return Ok(Source::ClientSecret {
                    authority: authority.to_string(),
                    tenant: tenant.clone(),
                    client_id: client_id.clone(),
                    secret,
                });
            }
            if let (Some(path), Some(tenant), Some(client_id)) =
                (&o.env_client_certificate_path, &tenant, &client)
            {
                let cert = ClientCertificate::load(
                    path,
                    o.env_client_certificate_password.as_deref().map(|p| p.as_str()),
                    o.env_client_send_certificate_chain,
                )
                .map_err(|e| format!("azure: AZURE_CLIENT_CERTIFICATE_PATH: {e}"))?;
                return Ok(Source::ClientCertificate {
                    authority: authority.to_string(),
                    tenant: tenant.clone(),
                    client_id: client_id.clone(),
                    cert: std::sync::Arc::new(cert),
                });
            }
            if let (Some(file), Some(tenant), Some(client_id)) =
                (&o.federated_token_file, &tenant, &client)
            {
                return Ok(Source::Workload {
                    authority: authority.to_string(),
                    tenant: tenant.clone(),
                    client_id: client_id.clone(),
                    token_file: file.clone(),
                });
            }
            Ok(managed(client))
        }
    }
}

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
            ca_files: opts.extra_ca_files.clone(),
            ca_dirs: opts.extra_ca_dirs.clone(),
            system_ca_file: opts.system_ca_file.clone(),
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

/// The connection to one vault: HTTP, credential, token cache and the resource learned
/// from (or derived for) the vault.
struct Vault {
    /// `https://host[:port]`.
    base: String,
    origin: Url,
    host: String,
    /// The endpoint is an IP address or `localhost`: no domain to check a challenge against.
    ip_like: bool,
    http: Http,
    source: Source,
    tokens: TokenCache,
    /// The token resource learned from a challenge.
    resource: Mutex<Option<String>>,
    /// The resource derived from a known cloud host name.
    known_resource: Option<String>,
    skip_resource_check: bool,
    warned: AtomicBool,
    conflict_delay: Duration,
    conflict_jitter: Duration,
    status_timeout: Duration,
}

/// Why a vault call produced no HTTP answer.
enum CallError {
    Transport(TransportError),
    Auth(String),
}

impl From<TransportError> for CallError {
    fn from(e: TransportError) -> Self {
        CallError::Transport(e)
    }
}

impl CallError {
    fn store(self, op: &str, name: &str, what: &str) -> StoreError {
        match self {
            CallError::Transport(e) => {
                StoreError::Unreachable(format!("azure: failed to {op} '{name}': {what}: {e}"))
            }
            CallError::Auth(m) => StoreError::Failed(format!(
                "azure: failed to {op} '{name}': {what}: authentication failed: {m}"
            )),
        }
    }
}

enum Purge {
    Done,
    /// The last answer when purging stopped without success.
    Stopped(Response),
}

impl Vault {
    fn secret_url(&self, name: &str, version: &str) -> String {
        if version.is_empty() {
            format!("{}/secrets/{}?api-version={API_VERSION}", self.base, pct_encode(name))
        } else {
            format!(
                "{}/secrets/{}/{}?api-version={API_VERSION}",
                self.base,
                pct_encode(name),
                pct_encode(version)
            )
        }
    }

    fn resource(&self) -> Option<String> {
        let learned = self.resource.lock().unwrap_or_else(|p| p.into_inner()).clone();
        learned.or_else(|| self.known_resource.clone())
    }

    /// Checks a 401 challenge and remembers its resource (`azure-rest.md` §8).
    fn learn(&self, r: &Response) -> Result<String, CallError> {
        let c = r.www_authenticate.as_deref().and_then(parse_challenge).ok_or_else(|| {
            CallError::Auth(format!(
                "vault answered 401 without a usable challenge ({})",
                api_error(r.status, &r.body).describe()
            ))
        })?;
        if !self.ip_like
            && !self.skip_resource_check
            && !resource_matches_host(&c.resource, &self.host)
        {
            return Err(CallError::Auth(format!(
                "the vault's challenge names resource '{}', which does not cover host '{}'; refusing to send a token",
                c.resource, self.host
            )));
        }
        if let Some(t) = self.source.tenant()
            && !c.tenant.is_empty()
            && !c.tenant.eq_ignore_ascii_case(t)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            log::warn!(
                "azure: the vault belongs to tenant {} but the credential is for tenant {t}",
                c.tenant
            );
        }
        *self.resource.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.resource.clone());
        Ok(c.resource)
    }

    /// One authenticated Key Vault request (with the transport's retries). Handles the
    /// challenge: when the resource is not known yet the request first goes out without
    /// credentials and body; a 401 to a request that carried a token drops that token and
    /// retries once with a fresh one. A second 401 is returned to the caller.
    fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Response, CallError> {
        let mut resource = match self.resource() {
            Some(r) => r,
            None => {
                let mut probe = Request::new(method.clone(), url);
                if body.is_some() {
                    probe.body = Some(("application/json", &[]));
                }
                let r = self.http.send(&probe, deadline)?;
                if r.status != 401 {
                    if body.is_none() {
                        return Ok(r);
                    }
                    return Err(CallError::Auth(format!(
                        "vault sent no authentication challenge (HTTP {})",
                        r.status
                    )));
                }
                self.learn(&r)?
            }
        };
        let mut retried = false;
        loop {
            let fetch = |res: &str, d: Instant| self.source.fetch(&self.http, res, d);
            let token = self.tokens.get(&resource, deadline, &fetch).map_err(CallError::Auth)?;
            let mut req = Request::new(method.clone(), url);
            req.bearer = Some(token.secret());
            if let Some(b) = body {
                req.body = Some(("application/json", b));
            }
            let r = self.http.send(&req, deadline)?;
            if r.status != 401 || retried {
                return Ok(r);
            }
            self.tokens.invalidate(token.generation);
            if r.www_authenticate.is_some() {
                resource = self.learn(&r)?;
            }
            retried = true;
        }
    }

    /// Purge with retry (§3.5): success or 404 → done; 409 `ObjectIsBeingDeleted` → wait
    /// and retry up to `attempts` times; anything else stops with that answer.
    fn purge(&self, name: &str, attempts: u32, deadline: Instant) -> Result<Purge, CallError> {
        let url =
            format!("{}/deletedsecrets/{}?api-version={API_VERSION}", self.base, pct_encode(name));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = self.call(Method::DELETE, &url, None, deadline)?;
            match classify(r.status, &api_error(r.status, &r.body)) {
                Class::Success | Class::NotFound => return Ok(Purge::Done),
                Class::BeingDeleted if attempt < attempts && self.conflict_pause(deadline) => {
                    continue;
                }
                _ => return Ok(Purge::Stopped(r)),
            }
        }
    }

    /// Sleeps 200 ms + [0, 800) ms (configurable) unless that would pass `deadline`.
    fn conflict_pause(&self, deadline: Instant) -> bool {
        let wait = self.conflict_delay + jitter(self.conflict_jitter);
        if Instant::now() + wait >= deadline {
            return false;
        }
        std::thread::sleep(wait);
        true
    }

    /// Every version of `name` in list order (all pages, bounded). An empty listing or a
    /// 404 means the key does not exist (README observed item 7).
    fn list_versions(&self, name: &str, deadline: Instant) -> Result<Vec<VersionItem>, StoreError> {
        let mut url = format!(
            "{}/secrets/{}/versions?api-version={API_VERSION}",
            self.base,
            pct_encode(name)
        );
        let mut out = Vec::new();
        for page_no in 0..MAX_VERSION_PAGES {
            let r = self
                .call(Method::GET, &url, None, deadline)
                .map_err(|e| e.store("get", name, "failed to list versions"))?;
            if r.status == 404 && page_no == 0 {
                return Err(StoreError::NotFound);
            }
            if r.status != 200 {
                return Err(fail_http("get", name, "failed to list versions", &r));
            }
            let page = parse_page(&r.body).map_err(|e| bad("get", name, e))?;
            out.extend(page.version_items());
            match page.next() {
                Some(next) => {
                    url = self.next_url(next).map_err(|m| {
                        StoreError::Failed(format!("azure: failed to get '{name}': {m}"))
                    })?
                }
                None => {
                    return if out.is_empty() { Err(StoreError::NotFound) } else { Ok(out) };
                }
            }
        }
        Err(StoreError::Failed(format!(
            "azure: failed to get '{name}': more than {MAX_VERSION_PAGES} pages of versions"
        )))
    }

    /// Checks a `nextLink` before a token is sent to it: same scheme, host and port as the
    /// vault (`azure-rest.md` §5), with the api-version kept.
    fn next_url(&self, next: &str) -> Result<String, String> {
        let u = Url::parse(next).map_err(|e| format!("invalid nextLink: {e}"))?;
        if !u.same_origin(&self.origin) {
            return Err(format!("nextLink points to another host ({})", u.origin()));
        }
        let mut s = format!("{}{}", self.base, u.rest);
        if !u.rest.contains("api-version=") {
            s.push(if u.rest.contains('?') { '&' } else { '?' });
            s.push_str(&format!("api-version={API_VERSION}"));
        }
        Ok(s)
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

/// A 200 answer we could not use.
fn bad(op: &str, name: &str, e: BadBody) -> StoreError {
    StoreError::Failed(format!("azure: failed to {op} '{name}': {e}"))
}

/// `azure: failed to <op> '<name>': <what>: <Azure message> (<inner code>)`.
fn fail_http(op: &str, name: &str, what: &str, r: &Response) -> StoreError {
    let e = api_error(r.status, &r.body);
    if let Some(id) = &r.request_id {
        log::debug!("azure: {op} '{name}': HTTP {} (x-ms-request-id {id})", r.status);
    }
    StoreError::Failed(format!("azure: failed to {op} '{name}': {what}: {}", e.describe()))
}

/// A non-200 answer to reading a version: 404 means the key is gone (deleted between the
/// listing and the read); everything else is a failure.
fn map_get_status(name: &str, what: &str, r: &Response) -> StoreError {
    if r.status == 404 { StoreError::NotFound } else { fail_http("get", name, what, r) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_the_environment() {
        let env = |k: &str| {
            Some(
                match k {
                    "SSL_CERT_FILE" => "/etc/kes/ca.pem",
                    "SSL_CERT_DIR" => "/a:/b",
                    "https_proxy" => "http://proxy:3128",
                    "NO_PROXY" => ".internal",
                    "AZURE_AUTHORITY_HOST" => "https://login.microsoftonline.us/",
                    "IDENTITY_ENDPOINT" => "http://127.0.0.1:41741/msi/token",
                    "IDENTITY_HEADER" => "hdr",
                    "AZURE_FEDERATED_TOKEN_FILE" => {
                        "/var/run/secrets/azure/tokens/azure-identity-token"
                    }
                    "AZURE_CLIENT_ID" => "cid",
                    "AZURE_TENANT_ID" => "tid",
                    "AZURE_CLIENT_SECRET" => "",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let o = AzureOptions::from_lookup(env);
        assert_eq!(o.extra_ca_files, vec![PathBuf::from("/etc/kes/ca.pem")]);
        assert_eq!(o.extra_ca_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(o.proxy.as_deref(), Some("http://proxy:3128"));
        assert_eq!(o.no_proxy.as_deref(), Some(".internal"));
        assert_eq!(o.identity_header.as_deref().map(|s| s.as_str()), Some("hdr"));
        assert!(o.env_client_secret.is_none(), "empty values count as unset");

        // Default chain: no env secret → workload identity.
        let s = select_source(&AzureCredentials::Default, &o, "https://a").unwrap();
        assert!(
            matches!(s, Source::Workload { ref tenant, ref client_id, .. } if tenant == "tid" && client_id == "cid")
        );
        // Managed identity prefers the App Service endpoint when its variables are set.
        let s = select_source(
            &AzureCredentials::ManagedIdentity { client_id: "mi".into() },
            &o,
            "https://a",
        )
        .unwrap();
        assert!(matches!(s, Source::AppService { client_id: Some(ref c), .. } if c == "mi"));
        // Env secret wins over workload identity.
        let mut o2 = o.clone();
        o2.env_client_secret = Some(Zeroizing::new("sec".into()));
        let s = select_source(&AzureCredentials::Default, &o2, "https://a").unwrap();
        assert!(matches!(s, Source::ClientSecret { .. }));
        // Nothing set → IMDS, with AZURE_CLIENT_ID as the user-assigned identity if present.
        let s =
            select_source(&AzureCredentials::Default, &AzureOptions::new(), "https://a").unwrap();
        assert!(
            matches!(s, Source::Imds { client_id: None, ref endpoint } if endpoint == IMDS_ENDPOINT)
        );
        let s = select_source(
            &AzureCredentials::ManagedIdentity { client_id: "".into() },
            &AzureOptions::new(),
            "https://a",
        )
        .unwrap();
        assert!(matches!(s, Source::Imds { client_id: None, .. }));
        let bad = AzureCredentials::ClientSecret {
            tenant_id: "t".into(),
            client_id: "".into(),
            client_secret: Zeroizing::new("s".into()),
        };
        assert!(select_source(&bad, &o, "https://a").is_err());
        assert!(!format!("{o2:?}").contains("sec\""), "{o2:?}");
        assert!(o.env_client_certificate_path.is_none() && !o.env_client_send_certificate_chain);

        let cert_env = |k: &str| {
            Some(
                match k {
                    "AZURE_CLIENT_CERTIFICATE_PATH" => "/etc/kes/azure.pem",
                    "AZURE_CLIENT_CERTIFICATE_PASSWORD" => " pw ",
                    "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN" => "True",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let o = AzureOptions::from_lookup(cert_env);
        assert_eq!(o.env_client_certificate_path, Some(PathBuf::from("/etc/kes/azure.pem")));
        assert_eq!(o.env_client_certificate_password.as_deref().map(|s| s.as_str()), Some(" pw "));
        assert!(o.env_client_send_certificate_chain);
        assert!(!format!("{o:?}").contains(" pw "), "{o:?}");
        // Without tenant and client id the certificate is not a complete credential.
        let s = select_source(&AzureCredentials::Default, &o, "https://a").unwrap();
        assert!(matches!(s, Source::Imds { .. }));
        let o = AzureOptions::from_lookup(|k| {
            (k == "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN").then(|| "yes".to_string())
        });
        assert!(!o.env_client_send_certificate_chain, "only 1 or true");
    }

    #[test]
    fn proxy_credentials_are_hidden() {
        assert_eq!(strip_userinfo("http://u:p@proxy:3128"), "http://proxy:3128");
        assert_eq!(strip_userinfo("u:p@proxy:3128"), "proxy:3128");
        assert_eq!(strip_userinfo("http://proxy:3128"), "http://proxy:3128");
    }

    #[test]
    fn endpoints_are_validated() {
        let cfg = |e: &str| AzureConfig {
            endpoint: e.into(),
            credentials: AzureCredentials::ManagedIdentity { client_id: String::new() },
        };
        let mut o = AzureOptions::new();
        // Trust something so that the test does not depend on the machine's bundle.
        o.system_ca_file = None;
        o.extra_ca_dirs = vec![PathBuf::from("/nonexistent")];
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
