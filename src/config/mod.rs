//! Upstream's YAML config file (`kes-config-cli.md` §1) turned into a validated, typed
//! [`Config`]. Owns `${VAR}` expansion (only on the fields upstream allows), Go durations,
//! log levels and validation in upstream's order. Must not: open sockets, read TLS files
//! (the server does that), or print.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// The listen address when neither `--addr` nor `address` says otherwise.
pub const DEFAULT_ADDRESS: &str = "0.0.0.0:7373";

/// A validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `address`, if set.
    pub address: Option<String>,
    /// `admin.identity` (any string; a non-hex value such as `disabled` disables admin).
    pub admin_identity: String,
    pub tls: TlsConfig,
    /// `policy.<name>`, in name order.
    pub policies: BTreeMap<String, PolicyConfig>,
    pub cache: CacheConfig,
    /// `api.<path>` overrides, keyed by the exact route path.
    pub api: BTreeMap<String, ApiOverride>,
    pub log: LogConfig,
    /// `keys[].name`: created at startup when absent.
    pub keys: Vec<String>,
    pub keystore: KeyStoreConfig,
}

#[derive(Clone)]
pub struct TlsConfig {
    pub key: PathBuf,
    pub cert: PathBuf,
    /// `tls.password`, for legacy encrypted PEM keys.
    pub password: Option<Zeroizing<String>>,
    /// `tls.auth: on`: verify client chains against `ca` (+ system roots).
    pub verify_client_chain: bool,
    pub ca: Option<PathBuf>,
    /// `tls.proxy.identities`: parsed and validated, unused (as upstream HEAD).
    pub proxy_identities: Vec<String>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("key", &self.key)
            .field("cert", &self.cert)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("verify_client_chain", &self.verify_client_chain)
            .field("ca", &self.ca)
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub identities: Vec<String>,
}

/// `cache.expiry.*` with our documented defaults applied (spec DECISION §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    pub any: Duration,
    pub unused: Duration,
    pub offline: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            any: Duration::from_secs(5 * 60),
            unused: Duration::from_secs(30),
            offline: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiOverride {
    pub skip_auth: bool,
    /// `None` or zero keeps the route's default.
    pub timeout: Option<Duration>,
}

/// A Go `slog` level: DEBUG -4, INFO 0, WARN 4, ERROR 8; `off` is 9 (ERROR+1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Level(pub i32);

impl Level {
    pub const DEBUG: Level = Level(-4);
    pub const INFO: Level = Level(0);
    pub const WARN: Level = Level(4);
    pub const ERROR: Level = Level(8);
    pub const OFF: Level = Level(9);

    /// Go's `slog.Level.String()`: `INFO`, `ERROR+1`, `DEBUG-2`.
    pub fn name(self) -> String {
        let (base, name) = match self.0 {
            i32::MIN..=-1 => (-4, "DEBUG"),
            0..=3 => (0, "INFO"),
            4..=7 => (4, "WARN"),
            _ => (8, "ERROR"),
        };
        let delta = self.0 - base;
        if delta == 0 { name.to_string() } else { format!("{name}{delta:+}") }
    }

    /// Parses upstream's level syntax (`kes-config-cli.md` §1.4).
    pub fn parse(s: &str) -> Option<Level> {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "" | "on" => return Some(Level::INFO),
            "off" => return Some(Level::OFF),
            _ => {}
        }
        if let Ok(n) = lower.parse::<i32>() {
            return Some(Level(n));
        }
        let (name, delta) = match lower.find('+') {
            Some(i) => (&lower[..i], lower[i + 1..].parse::<i32>().ok()?),
            None => (lower.as_str(), 0),
        };
        let base = match name {
            "debug" => -4,
            "info" => 0,
            "warn" => 4,
            "error" => 8,
            _ => return None,
        };
        Some(Level(base + delta))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub error: Level,
    pub audit: Level,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { error: Level::INFO, audit: Level::INFO }
    }
}

#[derive(Debug, Clone)]
pub enum KeyStoreConfig {
    Azure(AzureConfig),
    /// `keystore.fs.path`.
    Fs {
        path: PathBuf,
    },
}

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

/// A config file that cannot be used. `Display` names the file and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Reads, expands and validates the config file at `path` using the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        message: format!("cannot read config file: {e}"),
    })?;
    parse(&text, &file, &|name| std::env::var(name).ok())
}

/// Parses config `text`; `file` is only used in messages; `env` resolves `${VAR}`.
pub fn parse(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let _ = (text, env);
    Err(ConfigError { file: file.to_string(), message: "config parsing not implemented".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_print_like_slog() {
        assert_eq!(Level::parse(""), Some(Level::INFO));
        assert_eq!(Level::parse("on"), Some(Level::INFO));
        assert_eq!(Level::parse("OFF"), Some(Level::OFF));
        assert_eq!(Level::parse("error+2"), Some(Level(10)));
        assert_eq!(Level::parse("-4"), Some(Level::DEBUG));
        assert_eq!(Level::parse("Warn"), Some(Level::WARN));
        assert_eq!(Level::parse("error-1"), None);
        assert_eq!(Level::parse("loud"), None);
        assert_eq!(Level::OFF.name(), "ERROR+1");
        assert_eq!(Level::INFO.name(), "INFO");
        assert_eq!(Level(-6).name(), "DEBUG-2");
    }
}
