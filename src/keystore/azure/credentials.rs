//! Where access tokens come from and how they are kept: Entra ID client credentials
//! (secret, certificate-signed assertion or federated workload-identity assertion), managed
//! identity through IMDS or the
//! App Service endpoint, and a cache that refreshes ahead of expiry with exactly one
//! refresh in flight.
//!
//! Must not: log or format a token, a client secret or an assertion; every such value lives
//! in a `Zeroizing` buffer and types holding one have a redacting `Debug`.
//!
//! Facts: `azure-rest.md` §1 (clouds and scopes), §9 (v2 client credentials), §10 (IMDS,
//! App Service, workload identity), §11 (refresh windows); `kes-azure-keystore.md` §1
//! (which credential the config selects).

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use ureq::http::Method;
use zeroize::Zeroizing;

use super::certificate::ClientCertificate;
use super::client::{Http, Request, TransportError, TransportKind, form_body, jitter};
use super::error::describe_token_error;
use crate::percent::{UNRESERVED, percent_encode};

/// Public-cloud Entra ID authority (`azure-rest.md` §1).
pub const PUBLIC_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The IMDS base on Azure VMs, VMSS and AKS nodes (`azure-rest.md` §10.1).
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// Refresh a token this long before it expires (azure-core's window, §11)…
pub const REFRESH_WINDOW: Duration = Duration::from_secs(300);
/// …or after half its lifetime when that comes first, so short-lived tokens are reused.
pub const REFRESH_FRACTION: u32 = 2;
/// While another thread refreshes, the old token is still used if it has at least this
/// long (or a tenth of its lifetime, if shorter) to live.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// A federated token file (a Kubernetes service-account JWT) is far smaller than this.
pub const MAX_ASSERTION_BYTES: u64 = 64 << 10;
/// Extra attempts for IMDS answers 404/410 (IMDS updating or restarting, §10.1); 429 and
/// 5xx are already retried by the HTTP layer.
pub const IMDS_EXTRA_RETRIES: u32 = 3;

/// The Key Vault token resource for a vault host (`azure-rest.md` §1), or `None` for a host
/// outside the known clouds (then the 401 challenge names it).
pub fn resource_for_vault_host(host: &str) -> Option<&'static str> {
    const KNOWN: &[(&str, &str)] = &[
        (".vault.azure.net", "https://vault.azure.net"),
        (".vault.azure.cn", "https://vault.azure.cn"),
        (".vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net"),
        (".vault.microsoftazure.de", "https://vault.microsoftazure.de"),
        (".managedhsm.azure.net", "https://managedhsm.azure.net"),
        (".managedhsm.azure.cn", "https://managedhsm.azure.cn"),
        (".managedhsm.usgovcloudapi.net", "https://managedhsm.usgovcloudapi.net"),
        (".managedhsm.microsoftazure.de", "https://managedhsm.microsoftazure.de"),
    ];
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    KNOWN.iter().find(|(suffix, _)| h.ends_with(suffix)).map(|(_, r)| *r)
}

/// The Entra ID authority of the cloud a vault host belongs to (`azure-rest.md` §1).
pub fn authority_for_vault_host(host: &str) -> &'static str {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    if h.ends_with(".azure.cn") {
        "https://login.chinacloudapi.cn"
    } else if h.ends_with(".usgovcloudapi.net") {
        "https://login.microsoftonline.us"
    } else if h.ends_with(".microsoftazure.de") {
        "https://login.microsoftonline.de"
    } else {
        PUBLIC_AUTHORITY
    }
}

/// The v2 scope for a resource: `<resource>/.default`.
pub fn scope_for_resource(resource: &str) -> String {
    format!("{}/.default", resource.trim_end_matches('/'))
}

/// Why no token came back, typed so that `kes server --check --keystore` and the store's
/// errors tell an unreachable token endpoint (an outage) from a refused credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub failure: TokenFailure,
    /// Names the endpoint and what went wrong; never a secret, a token or a body.
    pub message: String,
}

/// The classes of [`TokenError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFailure {
    /// No HTTP answer from the token endpoint (DNS, proxy, connect, TLS, timeout), after
    /// the transport's retries: the same kinds as a vault call's.
    Transport(TransportKind),
    /// The endpoint refused the credential (400, 401, 403: wrong tenant, client ID or
    /// secret, unknown identity), or the credential cannot be used at all (an unreadable
    /// federated token file, a certificate assertion that cannot be signed).
    Rejected,
    /// Any other answer: throttled or failing after retries (429, 5xx), or a 200 that is
    /// not a usable token.
    BadAnswer,
}

impl TokenError {
    fn new(failure: TokenFailure, message: impl Into<String>) -> TokenError {
        TokenError { failure, message: message.into() }
    }

    /// No answer from `endpoint` (what the message calls it).
    fn transport(endpoint: &str, e: TransportError) -> TokenError {
        TokenError::new(TokenFailure::Transport(e.kind), format!("{endpoint}: {e}"))
    }

    /// A credential that cannot be used before any request is sent.
    fn rejected(message: impl Into<String>) -> TokenError {
        TokenError::new(TokenFailure::Rejected, message)
    }

    /// Whether the token endpoint could not be reached.
    pub fn is_transport(&self) -> bool {
        matches!(self.failure, TokenFailure::Transport(_))
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The token in an answer of `endpoint`, or why there is none, classed by status.
fn token_answer(endpoint: &str, status: u16, body: &[u8]) -> Result<Fetched, TokenError> {
    parse_token_response(status, body).map_err(|e| {
        let failure = match status {
            400 | 401 | 403 => TokenFailure::Rejected,
            _ => TokenFailure::BadAnswer,
        };
        TokenError::new(failure, format!("{endpoint}: {e}"))
    })
}

/// One way of obtaining tokens.
pub enum Source {
    /// Entra ID client credentials with a secret (`credentials` in the config, or the
    /// `AZURE_TENANT_ID`/`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET` environment).
    ClientSecret { authority: String, tenant: String, client_id: String, secret: Zeroizing<String> },
    /// Entra ID client credentials with a certificate (`AZURE_CLIENT_CERTIFICATE_PATH`): a
    /// JWT assertion signed with its key, made anew for every token request.
    ClientCertificate {
        authority: String,
        tenant: String,
        client_id: String,
        cert: Arc<ClientCertificate>,
    },
    /// Workload identity: the federated token file is the client assertion (§10.3).
    Workload { authority: String, tenant: String, client_id: String, token_file: PathBuf },
    /// Managed identity through IMDS; `client_id` selects a user-assigned identity.
    Imds { endpoint: String, client_id: Option<String> },
    /// Managed identity through the App Service / Functions / Container Apps endpoint.
    AppService { endpoint: String, header: Zeroizing<String>, client_id: Option<String> },
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Source {
    /// For the startup banner and error messages; never includes a secret.
    pub fn describe(&self) -> String {
        match self {
            Source::ClientSecret { tenant, client_id, .. } => {
                format!("client secret (tenant {tenant}, client {client_id})")
            }
            Source::ClientCertificate { tenant, client_id, cert, .. } => format!(
                "client certificate (env) {} (tenant {tenant}, client {client_id}, {} key, thumbprint {})",
                cert.path().display(),
                cert.kind().alg(),
                cert.thumbprint()
            ),
            Source::Workload { tenant, client_id, token_file, .. } => format!(
                "workload identity (tenant {tenant}, client {client_id}, token file {})",
                token_file.display()
            ),
            Source::Imds { client_id, .. } => match client_id {
                Some(c) => format!("managed identity via IMDS (client {c})"),
                None => "managed identity via IMDS (system-assigned)".into(),
            },
            Source::AppService { client_id, .. } => match client_id {
                Some(c) => format!("managed identity via App Service endpoint (client {c})"),
                None => "managed identity via App Service endpoint (system-assigned)".into(),
            },
        }
    }

    /// The tenant the credential authenticates in, when it has one.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Source::ClientSecret { tenant, .. }
            | Source::ClientCertificate { tenant, .. }
            | Source::Workload { tenant, .. } => Some(tenant),
            _ => None,
        }
    }

    /// Fetches a new token for `resource` (e.g. `https://vault.azure.net`).
    pub fn fetch(
        &self,
        http: &Http,
        resource: &str,
        deadline: Instant,
    ) -> Result<Fetched, TokenError> {
        match self {
            Source::ClientSecret { authority, tenant, client_id, secret } => {
                let scope = scope_for_resource(resource);
                let body = form_body(&[
                    ("client_id", client_id),
                    ("scope", &scope),
                    ("client_secret", secret),
                    ("grant_type", "client_credentials"),
                ]);
                entra_token(http, authority, tenant, &body, deadline)
            }
            Source::ClientCertificate { authority, tenant, client_id, cert } => {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                let assertion = cert
                    .assertion(client_id, &token_url(authority, tenant), now)
                    .map_err(TokenError::rejected)?;
                let scope = scope_for_resource(resource);
                let body = form_body(&[
                    ("client_id", client_id),
                    ("scope", &scope),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                    ("grant_type", "client_credentials"),
                ]);
                entra_token(http, authority, tenant, &body, deadline)
            }
            Source::Workload { authority, tenant, client_id, token_file } => {
                let assertion = read_assertion(token_file).map_err(TokenError::rejected)?;
                let scope = scope_for_resource(resource);
                let body = form_body(&[
                    ("client_id", client_id),
                    ("scope", &scope),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                    ("grant_type", "client_credentials"),
                ]);
                entra_token(http, authority, tenant, &body, deadline)
            }
            Source::Imds { endpoint, client_id } => {
                let mut url = format!(
                    "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
                    endpoint.trim_end_matches('/'),
                    percent_encode(resource, UNRESERVED)
                );
                if let Some(c) = client_id {
                    url.push_str(&format!("&client_id={}", percent_encode(c, UNRESERVED)));
                }
                let mut req = Request::new(Method::GET, &url);
                req.headers.push(("metadata", "true".into()));
                req.direct = true;
                let mut extra = 0;
                loop {
                    let r =
                        http.send(&req, deadline).map_err(|e| TokenError::transport("IMDS", e))?;
                    if matches!(r.status, 404 | 410) && extra < IMDS_EXTRA_RETRIES {
                        let wait = http.retry_policy().backoff(extra + 1);
                        if Instant::now() + wait < deadline {
                            std::thread::sleep(wait);
                            extra += 1;
                            continue;
                        }
                    }
                    return token_answer("IMDS", r.status, &r.body);
                }
            }
            Source::AppService { endpoint, header, client_id } => {
                let sep = if endpoint.contains('?') { '&' } else { '?' };
                let mut url = format!(
                    "{endpoint}{sep}api-version=2019-08-01&resource={}",
                    percent_encode(resource, UNRESERVED)
                );
                if let Some(c) = client_id {
                    url.push_str(&format!("&client_id={}", percent_encode(c, UNRESERVED)));
                }
                let mut req = Request::new(Method::GET, &url);
                req.headers.push(("x-identity-header", header.to_string()));
                req.direct = true;
                const ENDPOINT: &str = "App Service identity endpoint";
                let r =
                    http.send(&req, deadline).map_err(|e| TokenError::transport(ENDPOINT, e))?;
                token_answer(ENDPOINT, r.status, &r.body)
            }
        }
    }
}

fn entra_token(
    http: &Http,
    authority: &str,
    tenant: &str,
    body: &[u8],
    deadline: Instant,
) -> Result<Fetched, TokenError> {
    let url = token_url(authority, tenant);
    let mut req = Request::new(Method::POST, &url);
    req.body = Some(("application/x-www-form-urlencoded", body));
    // A failure to reach it names the authority (the host an operator must check).
    let r = http
        .send(&req, deadline)
        .map_err(|e| TokenError::transport(&format!("Entra ID token request to {authority}"), e))?;
    token_answer("Entra ID token request", r.status, &r.body)
}

/// The v2 token endpoint of `tenant`; also the `aud` of a certificate assertion.
pub fn token_url(authority: &str, tenant: &str) -> String {
    format!(
        "{}/{}/oauth2/v2.0/token",
        authority.trim_end_matches('/'),
        percent_encode(tenant, UNRESERVED)
    )
}

fn read_assertion(path: &PathBuf) -> Result<Zeroizing<String>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| format!("cannot read federated token file {}: {e}", path.display()))?;
    let mut s = Zeroizing::new(String::new());
    f.take(MAX_ASSERTION_BYTES)
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read federated token file {}: {e}", path.display()))?;
    let t = Zeroizing::new(s.trim().to_string());
    if t.is_empty() {
        return Err(format!("federated token file {} is empty", path.display()));
    }
    Ok(t)
}

/// A token as the endpoint returned it: value plus lifetime in seconds.
pub struct Fetched {
    pub value: Zeroizing<String>,
    pub lifetime: Duration,
    /// `refresh_in`, when the endpoint suggests refreshing earlier.
    pub refresh_in: Option<Duration>,
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    N(i64),
    S(String),
}

impl NumOrStr {
    fn get(&self) -> Option<i64> {
        match self {
            NumOrStr::N(n) => Some(*n),
            NumOrStr::S(s) => s.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<NumOrStr>,
    expires_on: Option<NumOrStr>,
    refresh_in: Option<NumOrStr>,
}

/// Parses the token answers of Entra ID (`expires_in` a number), IMDS (numbers as
/// strings) and App Service (`expires_on` epoch seconds). Errors never contain the body.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<Fetched, String> {
    if status != 200 {
        return Err(describe_token_error(status, body));
    }
    let mut t: TokenResponse =
        serde_json::from_slice(body).map_err(|_| "token response is not valid JSON".to_string())?;
    let value = Zeroizing::new(t.access_token.take().unwrap_or_default());
    if value.is_empty() {
        return Err("token response has no access_token".into());
    }
    let now_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let secs = t
        .expires_in
        .as_ref()
        .and_then(NumOrStr::get)
        .or_else(|| {
            t.expires_on.as_ref().and_then(NumOrStr::get).map(|on| on.saturating_sub(now_unix))
        })
        .ok_or("token response has no expires_in/expires_on")?;
    if secs <= 0 {
        return Err("token response carries an already expired token".into());
    }
    let lifetime = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    let refresh_in = t
        .refresh_in
        .as_ref()
        .and_then(NumOrStr::get)
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
    Ok(Fetched { value, lifetime, refresh_in })
}

/// A cached token. Only [`AccessToken::secret`] exposes the value; `Debug` never does.
pub struct AccessToken {
    value: Zeroizing<String>,
    pub expires_at: Instant,
    pub refresh_at: Instant,
    /// Distinguishes tokens, so that a 401 invalidates only the token that was rejected.
    pub generation: u64,
    margin: Duration,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken").field("generation", &self.generation).finish_non_exhaustive()
    }
}

impl AccessToken {
    pub fn secret(&self) -> &str {
        &self.value
    }

    fn new(f: Fetched, generation: u64, now: Instant) -> AccessToken {
        let window = REFRESH_WINDOW.min(f.lifetime / REFRESH_FRACTION);
        let mut refresh_at = now + (f.lifetime - window);
        if let Some(r) = f.refresh_in {
            refresh_at = refresh_at.min(now + r);
        }
        // Refreshes of many servers started together spread over up to a tenth of the window.
        refresh_at = refresh_at.checked_sub(jitter(window / 10)).unwrap_or(refresh_at);
        AccessToken {
            value: f.value,
            expires_at: now + f.lifetime,
            refresh_at,
            generation,
            margin: EXPIRY_MARGIN.min(f.lifetime / 10),
        }
    }

    fn fresh(&self, now: Instant) -> bool {
        now < self.refresh_at
    }

    fn usable(&self, now: Instant) -> bool {
        now + self.margin < self.expires_at
    }
}

/// Token cache for one resource. Refreshes are single-flight: one caller fetches, the
/// others keep using the old token while it is still usable, or wait (bounded by their
/// deadline) for the fetch and share its outcome, success or failure.
pub struct TokenCache {
    state: Mutex<CacheState>,
    cond: Condvar,
    fetches: AtomicU64,
}

#[derive(Default)]
struct CacheState {
    resource: String,
    token: Option<Arc<AccessToken>>,
    refreshing: bool,
    /// Incremented when a refresh finishes.
    epoch: u64,
    last_error: Option<TokenError>,
    generation: u64,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache").field("fetches", &self.fetches()).finish_non_exhaustive()
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Resets the `refreshing` flag even when the fetch panics, so waiters never hang.
struct RefreshGuard<'a> {
    cache: &'a TokenCache,
    done: bool,
}

impl Drop for RefreshGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut st = self.cache.lock();
            st.refreshing = false;
            st.epoch += 1;
            st.last_error =
                Some(TokenError::new(TokenFailure::BadAnswer, "token refresh panicked"));
            self.cache.cond.notify_all();
        }
    }
}

impl TokenCache {
    pub fn new() -> TokenCache {
        TokenCache {
            state: Mutex::new(CacheState::default()),
            cond: Condvar::new(),
            fetches: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many fetches were started (for tests and metrics).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// A token for `resource`, fetching with `fetch` when none is fresh.
    pub fn get(
        &self,
        resource: &str,
        deadline: Instant,
        fetch: &dyn Fn(&str, Instant) -> Result<Fetched, TokenError>,
    ) -> Result<Arc<AccessToken>, TokenError> {
        let mut st = self.lock();
        if st.resource != resource {
            // A different resource (a challenge named another one): start over.
            st.resource = resource.to_string();
            st.token = None;
        }
        loop {
            let now = Instant::now();
            if let Some(t) = &st.token
                && (t.fresh(now) || (st.refreshing && t.usable(now)))
            {
                return Ok(Arc::clone(t));
            }
            if st.refreshing {
                let epoch = st.epoch;
                let Some(wait) = deadline.checked_duration_since(now).filter(|d| !d.is_zero())
                else {
                    return Err(TokenError::new(
                        TokenFailure::Transport(TransportKind::Deadline),
                        "timed out waiting for an access token",
                    ));
                };
                st = self.cond.wait_timeout(st, wait).unwrap_or_else(|p| p.into_inner()).0;
                if st.epoch != epoch && !st.refreshing {
                    // The refresh we waited for finished: share its outcome.
                    if let Some(t) = st.token.as_ref().filter(|t| t.usable(Instant::now())) {
                        return Ok(Arc::clone(t));
                    }
                    if let Some(e) = &st.last_error {
                        return Err(e.clone());
                    }
                }
                continue;
            }
            st.refreshing = true;
            drop(st);
            let mut guard = RefreshGuard { cache: self, done: false };
            self.fetches.fetch_add(1, Ordering::Relaxed);
            let result = fetch(resource, deadline);
            let mut st = self.lock();
            guard.done = true;
            st.refreshing = false;
            st.epoch += 1;
            self.cond.notify_all();
            return match result {
                Ok(f) => {
                    st.generation += 1;
                    let t = Arc::new(AccessToken::new(f, st.generation, Instant::now()));
                    if st.resource == resource {
                        st.token = Some(Arc::clone(&t));
                    }
                    st.last_error = None;
                    Ok(t)
                }
                Err(e) => {
                    st.last_error = Some(e.clone());
                    // Keep serving a token that is still valid through an Entra ID outage.
                    match st.token.as_ref().filter(|t| t.usable(Instant::now())) {
                        Some(t) => {
                            log::warn!("azure: token refresh failed, using the current token: {e}");
                            Ok(Arc::clone(t))
                        }
                        None => Err(e),
                    }
                }
            };
        }
    }

    /// Drops the cached token if it is the one with `generation` (the vault rejected it).
    pub fn invalidate(&self, generation: u64) {
        let mut st = self.lock();
        if st.token.as_ref().is_some_and(|t| t.generation == generation) {
            st.token = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn fetched(secs: u64) -> Fetched {
        Fetched {
            value: Zeroizing::new("tok".into()),
            lifetime: Duration::from_secs(secs),
            refresh_in: None,
        }
    }

    #[test]
    fn sovereign_cloud_resources_follow_the_vault_host() {
        let cases = [
            ("kes.vault.azure.net", Some("https://vault.azure.net")),
            ("KES.VAULT.AZURE.NET.", Some("https://vault.azure.net")),
            ("kes.vault.azure.cn", Some("https://vault.azure.cn")),
            ("kes.vault.usgovcloudapi.net", Some("https://vault.usgovcloudapi.net")),
            ("kes.vault.microsoftazure.de", Some("https://vault.microsoftazure.de")),
            ("hsm.managedhsm.azure.net", Some("https://managedhsm.azure.net")),
            ("hsm.managedhsm.azure.cn", Some("https://managedhsm.azure.cn")),
            ("hsm.managedhsm.usgovcloudapi.net", Some("https://managedhsm.usgovcloudapi.net")),
            ("vault.azure.net", None),
            ("kes.vault.azure.net.evil.com", None),
            ("127.0.0.1", None),
        ];
        for (host, want) in cases {
            assert_eq!(resource_for_vault_host(host), want, "{host}");
        }
        assert_eq!(
            scope_for_resource("https://vault.azure.cn/"),
            "https://vault.azure.cn/.default"
        );
        assert_eq!(authority_for_vault_host("k.vault.azure.cn"), "https://login.chinacloudapi.cn");
        assert_eq!(
            authority_for_vault_host("k.vault.usgovcloudapi.net"),
            "https://login.microsoftonline.us"
        );
        assert_eq!(authority_for_vault_host("k.vault.azure.net"), PUBLIC_AUTHORITY);
    }

    #[test]
    fn token_responses_of_every_endpoint_kind() {
        // Entra ID v2: numbers.
        let f = parse_token_response(200, br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0"}"#).unwrap();
        assert_eq!((f.value.as_str(), f.lifetime), ("eyJ0", Duration::from_secs(3599)));
        // IMDS: strings.
        let f = parse_token_response(200, br#"{"access_token":"a","refresh_token":"","expires_in":"86399","expires_on":"1","not_before":"1","resource":"https://vault.azure.net","token_type":"Bearer"}"#).unwrap();
        assert_eq!(f.lifetime, Duration::from_secs(86399));
        // App Service: expires_on only.
        let on = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 600;
        let body = format!(
            r#"{{"access_token":"b","expires_on":"{on}","resource":"r","token_type":"Bearer"}}"#
        );
        let f = parse_token_response(200, body.as_bytes()).unwrap();
        assert!(f.lifetime <= Duration::from_secs(600) && f.lifetime >= Duration::from_secs(598));
        // refresh_in.
        let f = parse_token_response(
            200,
            br#"{"access_token":"c","expires_in":7200,"refresh_in":3600}"#,
        )
        .unwrap();
        assert_eq!(f.refresh_in, Some(Duration::from_secs(3600)));
        // Failures never echo the body.
        let e = parse_token_response(200, br#"{"access_token":"secret-token"}"#).unwrap_err();
        assert!(!e.contains("secret-token"), "{e}");
        assert!(parse_token_response(200, br#"{"access_token":"","expires_in":1}"#).is_err());
        assert!(parse_token_response(200, br#"{"access_token":"x","expires_in":0}"#).is_err());
        assert!(parse_token_response(200, b"not json").is_err());
        let e = parse_token_response(400, br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#).unwrap_err();
        assert_eq!(e, "HTTP 400: invalid_client: AADSTS7000215: Invalid client secret provided.");
    }

    #[test]
    fn refresh_window_is_five_minutes_or_half_life() {
        let now = Instant::now();
        let t = AccessToken::new(fetched(3600), 1, now);
        let early = t.expires_at - t.refresh_at;
        assert!(
            early >= REFRESH_WINDOW && early <= REFRESH_WINDOW + REFRESH_WINDOW / 10,
            "{early:?}"
        );
        let t = AccessToken::new(fetched(120), 1, now);
        let early = t.expires_at - t.refresh_at;
        assert!(early >= Duration::from_secs(60) && early <= Duration::from_secs(66), "{early:?}");
        assert!(t.fresh(now) && t.usable(now + Duration::from_secs(100)));
        assert!(!t.usable(now + Duration::from_secs(109)));
        assert!(!format!("{t:?}").contains("tok"));
    }

    #[test]
    fn one_refresh_at_a_time_and_waiters_share_it() {
        let cache = Arc::new(TokenCache::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + Duration::from_secs(5);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (cache, calls) = (Arc::clone(&cache), Arc::clone(&calls));
                std::thread::spawn(move || {
                    let f = |_: &str, _: Instant| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(100));
                        Ok(fetched(3600))
                    };
                    cache.get("https://vault.azure.net", deadline, &f).unwrap().generation
                })
            })
            .collect();
        let gens: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(gens.iter().all(|g| *g == 1), "{gens:?}");
    }

    #[test]
    fn failures_are_shared_and_invalidation_is_targeted() {
        let cache = TokenCache::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let refused = TokenError::new(TokenFailure::Rejected, "HTTP 401: invalid_client");
        let fail = |_: &str, _: Instant| Err::<Fetched, _>(refused.clone());
        assert_eq!(cache.get("r", deadline, &fail).unwrap_err(), refused);
        let ok = |_: &str, _: Instant| Ok(fetched(3600));
        let t1 = cache.get("r", deadline, &ok).unwrap();
        assert_eq!(cache.get("r", deadline, &ok).unwrap().generation, t1.generation);
        cache.invalidate(t1.generation + 7);
        assert_eq!(cache.get("r", deadline, &ok).unwrap().generation, t1.generation);
        cache.invalidate(t1.generation);
        let t2 = cache.get("r", deadline, &ok).unwrap();
        assert_ne!(t2.generation, t1.generation);
        // A new resource starts over.
        let t3 = cache.get("other", deadline, &ok).unwrap();
        assert_ne!(t3.generation, t2.generation);
        assert_eq!(cache.fetches(), 4);
    }

    #[test]
    fn a_failed_refresh_keeps_a_still_valid_token() {
        let cache = TokenCache::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        // refresh_in 0 is ignored; a 1 s refresh_in makes the token stale quickly.
        let short = |_: &str, _: Instant| {
            Ok(Fetched {
                value: Zeroizing::new("t".into()),
                lifetime: Duration::from_secs(3600),
                refresh_in: Some(Duration::from_millis(1000)),
            })
        };
        let t1 = cache.get("r", deadline, &short).unwrap();
        std::thread::sleep(Duration::from_millis(1050));
        let outage = TokenError::new(TokenFailure::Transport(TransportKind::Dns), "outage");
        let fail = |_: &str, _: Instant| Err::<Fetched, _>(outage.clone());
        assert_eq!(cache.get("r", deadline, &fail).unwrap().generation, t1.generation);
    }

    #[test]
    fn describe_never_shows_secrets() {
        let s = Source::ClientSecret {
            authority: PUBLIC_AUTHORITY.into(),
            tenant: "t".into(),
            client_id: "c".into(),
            secret: Zeroizing::new("s3cr3t-value".into()),
        };
        assert_eq!(format!("{s:?}"), "client secret (tenant t, client c)");
        let a = Source::AppService {
            endpoint: "http://x".into(),
            header: Zeroizing::new("hdr-secret".into()),
            client_id: None,
        };
        assert!(!format!("{a:?}").contains("hdr-secret"));
    }
}
