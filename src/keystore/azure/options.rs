//! What the store is told: the config file's `keystore.azure` section ([`AzureConfig`]) and
//! everything else the environment says about connecting and authenticating
//! ([`AzureOptions`]), read the way upstream's Go binary reads it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

use super::client;

/// The config file's `keystore.azure.keyvault` section, validated by `config`.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// `keystore.azure.keyvault.endpoint`, e.g. `https://my-vault.vault.azure.net`.
    pub endpoint: String,
    pub credentials: AzureCredentials,
}

#[derive(Clone)]
pub enum AzureCredentials {
    /// `credentials.{tenant_id,client_id,client_secret}`: Entra ID client credentials.
    ClientSecret { tenant_id: String, client_id: String, client_secret: Zeroizing<String> },
    /// `managed_identity.client_id`: a user-assigned managed identity.
    ManagedIdentity { client_id: String },
    /// Neither section: environment (client secret, workload identity), then managed identity.
    Default,
}

impl fmt::Debug for AzureCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AzureCredentials::ClientSecret { tenant_id, client_id, .. } => f
                .debug_struct("ClientSecret")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .finish(),
            AzureCredentials::ManagedIdentity { client_id } => {
                f.debug_struct("ManagedIdentity").field("client_id", client_id).finish()
            }
            AzureCredentials::Default => f.write_str("Default"),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_credentials_are_hidden() {
        assert_eq!(strip_userinfo("http://u:p@proxy:3128"), "http://proxy:3128");
        assert_eq!(strip_userinfo("u:p@proxy:3128"), "proxy:3128");
        assert_eq!(strip_userinfo("http://proxy:3128"), "http://proxy:3128");
    }
}
