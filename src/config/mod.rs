//! Upstream's YAML config file (`kes-config-cli.md` §1) turned into a validated, typed
//! [`Config`]. Owns `${VAR}` expansion (only on the fields upstream allows), Go durations,
//! and validation in upstream's order. Where a section configures a lower layer, the YAML
//! is mapped onto that layer's own type (`obs::Level`, `keystore::cache::CacheConfig`,
//! `keystore::azure::AzureConfig`, `api::routes::ApiOverride`; names are checked with
//! `names::valid_name`), so no lower layer imports this module. Must not: open sockets,
//! read TLS files (the server does that), or print.

mod expand;
mod raw;
pub mod source;

use crate::api::routes::ApiOverride;
use crate::auth::attr::AttrIdentity;
use crate::keystore::azure::{AzureConfig, AzureCredentials};
use crate::keystore::cache::CacheConfig;
use crate::names::valid_name;
use crate::obs::Level;
use expand::{Expander, GoDuration};
use raw::{RawFile, RawKeyStore};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
    /// `cache.persist` (our extension): the sealed persistent cache, when configured.
    pub persist: Option<PersistConfig>,
    /// `api.<path>` overrides, keyed by the exact route path.
    pub api: BTreeMap<String, ApiOverride>,
    pub log: LogConfig,
    /// `keys[].name`: created at startup when absent.
    pub keys: Vec<String>,
    pub keystore: KeyStoreConfig,
    /// `log.audit_file` and `log.audit_fail_closed` (our extension).
    pub audit_file: Option<AuditFileConfig>,
    /// Policy patterns whose meaning changed with upstream's HEAD matcher (a `*` that is not
    /// trailing, `?` or `[`: glob syntax of releases up to 2023-10), one human-readable line
    /// each, for the server to print at startup (`kes-config-cli.md` §2 DECISION).
    pub warnings: Vec<String>,
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
    /// `tls.client_validity: enforce` (our extension): refuse client certificates with a
    /// [`crate::auth::x509::Flaw`] at the handshake; by default they are only logged and
    /// counted, as upstream accepts them.
    pub enforce_client_validity: bool,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("key", &self.key)
            .field("cert", &self.cert)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("verify_client_chain", &self.verify_client_chain)
            .field("ca", &self.ca)
            .field("enforce_client_validity", &self.enforce_client_validity)
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub identities: Vec<String>,
}

/// `cache.persist.max_age` when unset: a week of outage, then sealed copies stop serving.
pub const DEFAULT_PERSIST_MAX_AGE: Duration = Duration::from_secs(168 * 3600);

/// `cache.persist`: where sealed copies live, the sealing key, and how stale they may be.
#[derive(Clone)]
pub struct PersistConfig {
    pub path: PathBuf,
    /// 32 bytes, from `credential:NAME` or `file:PATH` (or `${VAR}`).
    pub seal: Zeroizing<[u8; crate::keystore::sealed::SEAL_KEY_LEN]>,
    pub max_age: Duration,
}

impl fmt::Debug for PersistConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistConfig")
            .field("path", &self.path)
            .field("seal", &"<redacted>")
            .field("max_age", &self.max_age)
            .finish()
    }
}

/// The tamper-evident audit file (`obs::audit_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFileConfig {
    /// `log.audit_file`: appended to, hash-chained, reopened on SIGHUP.
    pub path: PathBuf,
    /// `log.audit_fail_closed`: refuse (503) a request whose audit line cannot be written.
    pub fail_closed: bool,
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

/// A KES config is a few KiB; 1 MiB leaves room for thousands of policies and still bounds
/// what a wrong `--config` path (a log file, a disk image) can make us read and parse.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// A real config nests at most 6 levels deep (`keystore.azure.keyvault.credentials.x`).
const MAX_YAML_DEPTH: usize = 32;
/// Nodes (scalars, sequences, mappings) of the file as written.
const MAX_YAML_NODES: usize = 100_000;
/// Parser events of the file as written (about two per node).
const MAX_YAML_EVENTS: usize = 200_000;
/// Anchors and aliases each: real configs use none or a handful.
const MAX_YAML_ANCHORS: usize = 1_000;
/// Events replayed through aliases in total: the bound that stops alias bombs
/// ("billion laughs"), whose file is tiny but whose expansion is not.
const MAX_ALIAS_REPLAY_EVENTS: usize = 100_000;

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_YAML_DEPTH,
            max_nodes: MAX_YAML_NODES,
            max_events: MAX_YAML_EVENTS,
            max_anchors: MAX_YAML_ANCHORS,
            max_aliases: MAX_YAML_ANCHORS,
            max_total_scalar_bytes: MAX_CONFIG_BYTES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_REPLAY_EVENTS,
        },
        // YAML forbids them and upstream's decoder rejects them; last-wins would let a
        // second `admin:` silently replace the first.
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        // A snippet would quote config lines (secrets included) into the error message.
        with_snippet: false,
    }
}

/// Reads, expands and validates the config file at `path` using the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let err = |e: std::io::Error| ConfigError {
        file: file.clone(),
        message: format!("cannot read config file: {e}"),
    };
    let f = File::open(path).map_err(err)?;
    // Sized up front so the text (which may hold secrets) is never reallocated and left
    // behind un-wiped; one byte more than the limit lets `parse` see an oversized file.
    let limit = MAX_CONFIG_BYTES.saturating_add(1);
    let mut text = Zeroizing::new(String::with_capacity(limit));
    f.take(u64::try_from(limit).unwrap_or(u64::MAX)).read_to_string(&mut text).map_err(err)?;
    parse(&text, &file, &|name| std::env::var(name).ok())
}

/// Parses config `text`; `file` is only used in messages; `env` resolves `${VAR}`.
///
/// Errors come in upstream's order (`kes-config-cli.md` §1.3): YAML syntax and shape, then
/// `version`, then `${VAR}` expansion and field types in file order, then validation steps
/// 2–11. The first failure wins.
pub fn parse(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    parse_text(text, env).map_err(|message| ConfigError { file: file.to_string(), message })
}

fn parse_text(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(format!("config file is larger than {MAX_CONFIG_BYTES} bytes"));
    }
    // `None`: no document, or a document that is only comments or an explicit null.
    let raw: Option<RawFile> = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| format!("invalid YAML: {e}"))?;
    let Some(raw) = raw else { return Err("config file is empty".into()) };
    // Step 1: `version` is not expandable and is checked before anything else.
    if let Some(v) = &raw.version
        && v.value != "v1"
    {
        return Err(format!("version: invalid version '{}': only 'v1' is supported", v.value));
    }
    validate(decode(&raw, &Expander { env })?)
}

/// The file after `${VAR}` expansion and typing, before validation.
struct Decoded {
    address: String,
    admin_identity: String,
    tls: DecodedTls,
    policies: BTreeMap<String, PolicyConfig>,
    cache_any: Option<GoDuration>,
    cache_unused: Option<GoDuration>,
    cache_offline: Option<GoDuration>,
    persist: Option<DecodedPersist>,
    api: BTreeMap<String, DecodedApi>,
    log_error: String,
    log_audit: String,
    log_audit_file: String,
    log_audit_fail_closed: Option<bool>,
    keys: Vec<String>,
    keystore: DecodedKeyStore,
}

struct DecodedTls {
    key: String,
    cert: String,
    password: Zeroizing<String>,
    auth: String,
    ca: String,
    proxy_identities: Vec<String>,
    client_validity: String,
}

struct DecodedPersist {
    path: String,
    seal: Zeroizing<String>,
    max_age: Option<GoDuration>,
}

struct DecodedApi {
    skip_auth: Option<bool>,
    timeout: Option<GoDuration>,
}

#[derive(Default)]
struct DecodedKeyStore {
    azure: Option<DecodedAzure>,
    fs: Option<String>,
    unsupported: Vec<String>,
    unknown: Vec<String>,
}

struct DecodedAzure {
    endpoint: String,
    credentials: Option<DecodedAzureCredentials>,
    /// `managed_identity.client_id`, when the section is present.
    managed_identity: Option<String>,
}

struct DecodedAzureCredentials {
    tenant_id: String,
    client_id: String,
    client_secret: Zeroizing<String>,
}

/// Expands and types every field, in the order the file's schema lists them.
fn decode(raw: &RawFile, x: &Expander<'_>) -> Result<Decoded, String> {
    let address = x.text("address", raw.address.as_ref())?;
    let admin_identity =
        x.text("admin.identity", raw.admin.as_ref().and_then(|a| a.identity.as_ref()))?;

    let tls = raw.tls.as_ref();
    let proxy = tls.and_then(|t| t.proxy.as_ref());
    let tls = DecodedTls {
        key: x.text("tls.key", tls.and_then(|t| t.key.as_ref()))?,
        cert: x.text("tls.cert", tls.and_then(|t| t.cert.as_ref()))?,
        password: x.secret("tls.password", tls.and_then(|t| t.password.as_ref()))?,
        auth: x.text("tls.auth", tls.and_then(|t| t.auth.as_ref()))?,
        ca: x.text("tls.ca", tls.and_then(|t| t.ca.as_ref()))?,
        client_validity: x
            .text("tls.client_validity", tls.and_then(|t| t.client_validity.as_ref()))?,
        proxy_identities: x
            .texts("tls.proxy.identities", proxy.and_then(|p| p.identities.as_ref()))?
            .into_iter()
            .filter(|id| !id.is_empty())
            .collect(),
    };
    // Parsed for its `${VAR}` errors only; TLS-proxy support is gone upstream (§1.1).
    x.text(
        "tls.proxy.header.cert",
        proxy.and_then(|p| p.header.as_ref()).and_then(|h| h.cert.as_ref()),
    )?;

    let mut policies = BTreeMap::new();
    for (name, p) in raw.policy.iter().flatten() {
        let p = p.as_ref();
        // Patterns are not `E` fields: `${X}` in a pattern is the literal text.
        let verbatim = |v: Option<&Vec<raw::Scalar>>| -> Vec<String> {
            v.map_or(&[][..], Vec::as_slice).iter().map(|s| s.value.clone()).collect()
        };
        let policy = PolicyConfig {
            allow: verbatim(p.and_then(|p| p.allow.as_ref())),
            deny: verbatim(p.and_then(|p| p.deny.as_ref())),
            identities: x.texts(
                &format!("policy.{name}.identities"),
                p.and_then(|p| p.identities.as_ref()),
            )?,
        };
        policies.insert(name.clone(), policy);
    }

    let expiry = raw.cache.as_ref().and_then(|c| c.expiry.as_ref());
    let cache_any = x.duration("cache.expiry.any", expiry.and_then(|e| e.any.as_ref()))?;
    let cache_unused = x.duration("cache.expiry.unused", expiry.and_then(|e| e.unused.as_ref()))?;
    let cache_offline =
        x.duration("cache.expiry.offline", expiry.and_then(|e| e.offline.as_ref()))?;
    let persist = match raw.cache.as_ref().and_then(|c| c.persist.as_ref()) {
        None => None,
        Some(p) => {
            if let Some(seal) = &p.seal
                && !source::is_source(&seal.value.0)
                && expand::env_reference(&seal.value.0).is_none()
            {
                return Err("cache.persist.seal: must be credential:NAME or file:PATH \
                            (the sealing key is never written into the config file)"
                    .into());
            }
            Some(DecodedPersist {
                path: x.text("cache.persist.path", p.path.as_ref())?,
                seal: x.secret("cache.persist.seal", p.seal.as_ref())?,
                max_age: x.duration("cache.persist.max_age", p.max_age.as_ref())?,
            })
        }
    };

    let mut api = BTreeMap::new();
    for (path, a) in raw.api.iter().flatten() {
        let a = a.as_ref();
        let entry = DecodedApi {
            skip_auth: x
                .boolean(&format!("api.{path}.skip_auth"), a.and_then(|a| a.skip_auth.as_ref()))?,
            timeout: x
                .duration(&format!("api.{path}.timeout"), a.and_then(|a| a.timeout.as_ref()))?,
        };
        api.insert(path.clone(), entry);
    }

    let log = raw.log.as_ref();
    let log_error = x.text("log.error", log.and_then(|l| l.error.as_ref()))?;
    let log_audit = x.text("log.audit", log.and_then(|l| l.audit.as_ref()))?;
    let log_audit_file = x.text("log.audit_file", log.and_then(|l| l.audit_file.as_ref()))?;
    let log_audit_fail_closed =
        x.boolean("log.audit_fail_closed", log.and_then(|l| l.audit_fail_closed.as_ref()))?;

    let mut keys = Vec::new();
    for k in raw.keys.iter().flatten() {
        keys.push(x.text("keys[].name", k.name.as_ref())?);
    }

    let keystore = match &raw.keystore {
        None => DecodedKeyStore::default(),
        Some(ks) => decode_keystore(ks, x)?,
    };

    Ok(Decoded {
        address,
        admin_identity,
        tls,
        policies,
        cache_any,
        cache_unused,
        cache_offline,
        persist,
        api,
        log_error,
        log_audit,
        log_audit_file,
        log_audit_fail_closed,
        keys,
        keystore,
    })
}

fn decode_keystore(ks: &RawKeyStore, x: &Expander<'_>) -> Result<DecodedKeyStore, String> {
    let fs = match &ks.fs {
        None => None,
        Some(fs) => Some(x.text("keystore.fs.path", fs.path.as_ref())?),
    };
    let azure = match &ks.azure {
        None => None,
        Some(az) => {
            const KV: &str = "keystore.azure.keyvault";
            let kv = az.keyvault.as_ref();
            let endpoint =
                x.text(&format!("{KV}.endpoint"), kv.and_then(|k| k.endpoint.as_ref()))?;
            let credentials = match kv.and_then(|k| k.credentials.as_ref()) {
                None => None,
                Some(c) => Some(DecodedAzureCredentials {
                    tenant_id: x
                        .text(&format!("{KV}.credentials.tenant_id"), c.tenant_id.as_ref())?,
                    client_id: x
                        .text(&format!("{KV}.credentials.client_id"), c.client_id.as_ref())?,
                    client_secret: x.secret(
                        &format!("{KV}.credentials.client_secret"),
                        c.client_secret.as_ref(),
                    )?,
                }),
            };
            let managed_identity = match kv.and_then(|k| k.managed_identity.as_ref()) {
                None => None,
                Some(m) => {
                    Some(x.text(&format!("{KV}.managed_identity.client_id"), m.client_id.as_ref())?)
                }
            };
            Some(DecodedAzure { endpoint, credentials, managed_identity })
        }
    };
    Ok(DecodedKeyStore {
        azure,
        fs,
        unsupported: ks.unsupported.clone(),
        unknown: ks.unknown.clone(),
    })
}

/// Validation steps 2–11 of `kes-config-cli.md` §1.3, in that order.
fn validate(d: Decoded) -> Result<Config, String> {
    // 2.
    if d.admin_identity.is_empty() {
        return Err("admin.identity: no admin identity".into());
    }
    let admin = d.admin_identity;
    if AttrIdentity::is_attribute(&admin) {
        return Err(format!(
            "admin.identity: '{admin}' is an attribute identity; the admin identity must be a \
             public-key hash (kes identity of <certificate>)"
        ));
    }

    // 3.
    if d.tls.key.is_empty() {
        return Err("tls.key: no private key".into());
    }
    if d.tls.cert.is_empty() {
        return Err("tls.cert: no certificate".into());
    }

    // 4.
    let verify_client_chain = match d.tls.auth.trim().to_ascii_lowercase().as_str() {
        "" | "off" => false,
        "on" => true,
        _ => {
            return Err(format!(
                "tls.auth: invalid auth mode '{}': must be 'on' or 'off'",
                d.tls.auth
            ));
        }
    };

    let enforce_client_validity = match d.tls.client_validity.trim().to_ascii_lowercase().as_str() {
        "" | "log" => false,
        "enforce" => true,
        _ => {
            return Err(format!(
                "tls.client_validity: invalid mode '{}': must be 'log' or 'enforce'",
                d.tls.client_validity
            ));
        }
    };

    // 5.
    if let Some(id) = d.tls.proxy_identities.iter().find(|id| **id == admin) {
        return Err(format!("tls.proxy.identities: identity '{id}' is already admin"));
    }
    for (name, p) in &d.policies {
        for id in &p.identities {
            if *id == admin {
                return Err(format!("policy.{name}.identities: identity '{id}' is already admin"));
            }
            if d.tls.proxy_identities.contains(id) {
                return Err(format!(
                    "policy.{name}.identities: identity '{id}' is already a TLS proxy"
                ));
            }
        }
    }

    // 6. Zero or unset means "our default" (spec §3.3 DECISION), not "never expire".
    let defaults = CacheConfig::default();
    let cache = CacheConfig {
        any: non_negative("cache.expiry.any", d.cache_any)?
            .filter(|t| !t.is_zero())
            .unwrap_or(defaults.any),
        unused: non_negative("cache.expiry.unused", d.cache_unused)?
            .filter(|t| !t.is_zero())
            .unwrap_or(defaults.unused),
        offline: non_negative("cache.expiry.offline", d.cache_offline)?.unwrap_or(defaults.offline),
    };

    // Our extension, checked with the other cache fields.
    let persist = match d.persist {
        None => None,
        Some(p) => Some(validate_persist(p)?),
    };

    // 7.
    let level = |field: &str, text: &str| {
        Level::parse(text).ok_or_else(|| format!("{field}: invalid log level '{text}'"))
    };
    let log = LogConfig {
        error: level("log.error", &d.log_error)?,
        audit: level("log.audit", &d.log_audit)?,
    };
    let fail_closed = d.log_audit_fail_closed.unwrap_or(false);
    let audit_file = match (d.log_audit_file.trim(), fail_closed) {
        ("", true) => {
            return Err(
                "log.audit_fail_closed: needs log.audit_file (the file that must be written)"
                    .into(),
            );
        }
        ("", false) => None,
        (path, _) => Some(AuditFileConfig { path: PathBuf::from(path), fail_closed }),
    };

    // 8.
    let mut api = BTreeMap::new();
    for (path, a) in d.api {
        let timeout =
            non_negative(&format!("api.{path}.timeout"), a.timeout)?.filter(|t| !t.is_zero());
        api.insert(path, ApiOverride { skip_auth: a.skip_auth.unwrap_or(false), timeout });
    }

    // 9. Names are deliberately not validated otherwise (§3.5).
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = d.keys.iter().find(|k| !seen.insert(k.as_str())) {
        return Err(format!("keys: key '{dup}' is defined multiple times"));
    }

    // 10.
    let keystore = validate_keystore(d.keystore)?;

    // 11. Upstream checks these when the server starts; for us parsing is that moment.
    let mut owner: BTreeMap<String, &str> = BTreeMap::new();
    let mut attributes = 0usize;
    for (name, p) in &d.policies {
        if !valid_name(name) {
            return Err(format!(
                "policy: policy name '{name}' is empty, too long or contains invalid characters"
            ));
        }
        for id in &p.identities {
            // Attribute identities (our extension) are compared in canonical form, so
            // `dns:A.example` and `dns:a.example` are the same entry.
            let key = if AttrIdentity::is_attribute(id) {
                let attr = AttrIdentity::parse(id).map_err(|e| {
                    format!("policy.{name}.identities: invalid attribute identity '{id}': {e}")
                })?;
                attributes += 1;
                attr.to_string()
            } else if valid_name(id) {
                id.clone()
            } else {
                return Err(format!(
                    "policy.{name}.identities: identity '{id}' is empty, too long or contains invalid characters"
                ));
            };
            if owner.insert(key, name).is_some() {
                return Err(format!(
                    "policy.{name}.identities: cannot assign policy '{name}' to '{id}': identity already has a policy"
                ));
            }
        }
    }

    let mut warnings = glob_warnings(&d.policies);
    if attributes > 0 && (!verify_client_chain || d.tls.ca.is_empty()) {
        warnings.push(format!(
            "policy: {attributes} attribute identit{} (ca:…) will never match: they need \
             client chains verified against tls.ca (tls.auth: on and tls.ca set)",
            if attributes == 1 { "y" } else { "ies" }
        ));
    }
    Ok(Config {
        address: Some(d.address).filter(|a| !a.is_empty()),
        admin_identity: admin,
        tls: TlsConfig {
            key: PathBuf::from(d.tls.key),
            cert: PathBuf::from(d.tls.cert),
            password: Some(d.tls.password).filter(|p| !p.is_empty()),
            verify_client_chain,
            enforce_client_validity,
            ca: Some(d.tls.ca).filter(|c| !c.is_empty()).map(PathBuf::from),
            proxy_identities: d.tls.proxy_identities,
        },
        policies: d.policies,
        cache,
        persist,
        api,
        log,
        keys: d.keys,
        keystore,
        audit_file,
        warnings,
    })
}

fn validate_persist(p: DecodedPersist) -> Result<PersistConfig, String> {
    if p.path.is_empty() {
        return Err("cache.persist.path: no path specified".into());
    }
    if p.seal.is_empty() {
        return Err("cache.persist.seal: no sealing key: use credential:NAME (systemd \
                    LoadCredentialEncrypted=) or file:PATH"
            .into());
    }
    let seal = crate::keystore::sealed::parse_seal_key(&p.seal)
        .map_err(|e| format!("cache.persist.seal: {e}"))?;
    let max_age = non_negative("cache.persist.max_age", p.max_age)?
        .filter(|t| !t.is_zero())
        .unwrap_or(DEFAULT_PERSIST_MAX_AGE);
    Ok(PersistConfig { path: PathBuf::from(p.path), seal, max_age })
}

fn non_negative(field: &str, d: Option<GoDuration>) -> Result<Option<Duration>, String> {
    match d {
        None => Ok(None),
        Some(GoDuration::NonNegative(d)) => Ok(Some(d)),
        Some(GoDuration::Negative) => Err(format!("{field}: negative duration")),
    }
}

fn validate_keystore(ks: DecodedKeyStore) -> Result<KeyStoreConfig, String> {
    let selected =
        usize::from(ks.azure.is_some()) + usize::from(ks.fs.is_some()) + ks.unsupported.len();
    if selected > 1 {
        return Err("keystore: more than one keystore specified".into());
    }
    if let Some(name) = ks.unsupported.first() {
        return Err(unsupported_keystore(name));
    }
    if let Some(path) = ks.fs {
        if path.is_empty() {
            return Err("keystore.fs.path: no path specified".into());
        }
        return Ok(KeyStoreConfig::Fs { path: PathBuf::from(path) });
    }
    if let Some(az) = ks.azure {
        return validate_azure(az).map(KeyStoreConfig::Azure);
    }
    // A section nobody knows is ignored like any unknown key, unless it is all there is:
    // then naming it says more than "no keystore".
    if let Some(name) = ks.unknown.first() {
        return Err(unsupported_keystore(name));
    }
    Err("keystore: no keystore specified".into())
}

fn unsupported_keystore(name: &str) -> String {
    format!(
        "keystore: unsupported keystore '{name}': this server supports 'azure' (Azure Key Vault) and 'fs'"
    )
}

fn validate_azure(az: DecodedAzure) -> Result<AzureConfig, String> {
    const KV: &str = "keystore.azure.keyvault";
    if az.endpoint.is_empty() {
        return Err(format!("{KV}.endpoint: no endpoint specified"));
    }
    let credentials = match (az.credentials, az.managed_identity) {
        (Some(_), Some(_)) => return Err(format!("{KV}: more than one authentication method")),
        (Some(c), None) => {
            if c.tenant_id.is_empty() {
                return Err(format!("{KV}.credentials.tenant_id: no tenant ID specified"));
            }
            if c.client_id.is_empty() {
                return Err(format!("{KV}.credentials.client_id: no client ID specified"));
            }
            if c.client_secret.is_empty() {
                return Err(format!("{KV}.credentials.client_secret: no client secret specified"));
            }
            AzureCredentials::ClientSecret {
                tenant_id: c.tenant_id,
                client_id: c.client_id,
                client_secret: c.client_secret,
            }
        }
        (None, Some(client_id)) => {
            if client_id.is_empty() {
                return Err(format!("{KV}.managed_identity.client_id: no client ID specified"));
            }
            AzureCredentials::ManagedIdentity { client_id }
        }
        (None, None) => AzureCredentials::Default,
    };
    Ok(AzureConfig { endpoint: az.endpoint, credentials })
}

/// Patterns that older releases read as shell globs and HEAD reads literally (§2).
fn glob_warnings(policies: &BTreeMap<String, PolicyConfig>) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, p) in policies {
        for (list, patterns) in [("allow", &p.allow), ("deny", &p.deny)] {
            for pattern in patterns {
                let body = pattern.strip_suffix('*').unwrap_or(pattern);
                if body.contains(['*', '?', '[']) {
                    warnings.push(format!(
                        "policy.{name}.{list}: pattern '{pattern}': only a trailing '*' is a wildcard; \
                         other '*', '?' and '[' are literal characters (KES releases before \
                         2023-11 read this pattern as a glob)"
                    ));
                }
            }
        }
    }
    warnings
}

/// Parses a listen address as upstream accepts it (§3.1): `[ip]:port`, where the host is
/// empty (all IPv4 interfaces) or a literal IPv4/IPv6 address (IPv6 in brackets), never a
/// host name; the port is required.
pub fn parse_listen_address(s: &str) -> Result<SocketAddr, String> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (host, after) =
                rest.split_once(']').ok_or_else(|| format!("missing ']' in address '{s}'"))?;
            let port =
                after.strip_prefix(':').ok_or_else(|| format!("missing port in address '{s}'"))?;
            (host, port)
        }
        None => {
            let (host, port) =
                s.rsplit_once(':').ok_or_else(|| format!("missing port in address '{s}'"))?;
            if host.contains(':') {
                return Err(format!("too many colons in address '{s}'"));
            }
            (host, port)
        }
    };
    if port.is_empty() {
        return Err(format!("missing port in address '{s}'"));
    }
    let port = port
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| port.parse::<u16>().ok())
        .flatten()
        .ok_or_else(|| format!("invalid port '{port}' in address '{s}'"))?;
    let ip = if host.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        host.parse::<IpAddr>().map_err(|_| format!("'{host}' is not a valid IP address"))?
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KES_ADMIN" => {
                Some("3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22".into())
            }
            "AZ_SECRET" => Some("az-secret-value".into()),
            "EMPTY" => Some(String::new()),
            "CLIENT" => Some("client-identity".into()),
            "SKIP" => Some("on".into()),
            "TTL" => Some("90s".into()),
            "NEG" => Some("-1s".into()),
            "STORE" => Some("/srv/kes".into()),
            "PASS" => Some("tls-pass".into()),
            _ => None,
        }
    }

    fn ok(text: &str) -> Config {
        match parse(text, "config.yml", &env) {
            Ok(c) => c,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    /// The message of the error `text` must produce (the file name is checked once, below).
    fn err(text: &str) -> String {
        match parse(text, "config.yml", &env) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => {
                assert_eq!(e.file, "config.yml");
                e.message
            }
        }
    }

    const ADMIN: &str = "admin:\n  identity: disabled\n";
    const TLS: &str = "tls:\n  key: ./server.key\n  cert: ./server.cert\n";
    const FS: &str = "keystore:\n  fs:\n    path: /var/lib/kes\n";

    /// A minimal valid config plus `extra` (which must not repeat `admin`, `tls`, `keystore`).
    fn with(extra: &str) -> String {
        format!("{ADMIN}{TLS}{FS}{extra}")
    }

    const SPEC_EXAMPLE: &str = r#"version: v1
address: 0.0.0.0:7373
admin:
  identity: ${KES_ADMIN}            # or a 64-hex identity, or "disabled"
tls:
  key: ./server.key
  cert: ./server.cert
policy:
  minio:
    allow:
    - /v1/key/create/minio-*
    - /v1/key/generate/minio-*
    - /v1/key/decrypt/minio-*
    - /v1/key/describe/minio-*
    identities:
    - 3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd21
cache:
  expiry: {any: 5m, unused: 30s, offline: 0s}
api:
  /v1/ready: {skip_auth: true, timeout: 15s}
log: {error: on, audit: off}
keys:
- name: minio-default-key
keystore:
  azure:
    keyvault:
      endpoint: https://my-vault.vault.azure.net
      credentials: {tenant_id: "…", client_id: "…", client_secret: "${AZ_SECRET}"}
"#;

    #[test]
    fn spec_example_parses_to_the_expected_config() {
        let c = ok(SPEC_EXAMPLE);
        assert_eq!(c.address.as_deref(), Some("0.0.0.0:7373"));
        assert_eq!(
            c.admin_identity,
            "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22"
        );
        assert_eq!(c.tls.key, PathBuf::from("./server.key"));
        assert_eq!(c.tls.cert, PathBuf::from("./server.cert"));
        assert!(c.tls.password.is_none());
        assert!(!c.tls.verify_client_chain);
        assert_eq!(c.tls.ca, None);
        assert!(c.tls.proxy_identities.is_empty());
        assert_eq!(c.policies.len(), 1);
        assert_eq!(
            c.policies["minio"],
            PolicyConfig {
                allow: vec![
                    "/v1/key/create/minio-*".into(),
                    "/v1/key/generate/minio-*".into(),
                    "/v1/key/decrypt/minio-*".into(),
                    "/v1/key/describe/minio-*".into(),
                ],
                deny: vec![],
                identities: vec![
                    "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd21".into()
                ],
            }
        );
        assert_eq!(
            c.cache,
            CacheConfig {
                any: Duration::from_secs(300),
                unused: Duration::from_secs(30),
                offline: Duration::ZERO
            }
        );
        assert_eq!(c.api.len(), 1);
        assert_eq!(
            c.api["/v1/ready"],
            ApiOverride { skip_auth: true, timeout: Some(Duration::from_secs(15)) }
        );
        assert_eq!(c.log, LogConfig { error: Level::INFO, audit: Level::OFF });
        assert_eq!(c.keys, vec!["minio-default-key".to_string()]);
        let KeyStoreConfig::Azure(az) = &c.keystore else { panic!("{:?}", c.keystore) };
        assert_eq!(az.endpoint, "https://my-vault.vault.azure.net");
        let AzureCredentials::ClientSecret { tenant_id, client_id, client_secret } =
            &az.credentials
        else {
            panic!("{:?}", az.credentials)
        };
        assert_eq!(tenant_id, "…");
        assert_eq!(client_id, "…");
        assert_eq!(client_secret.as_str(), "az-secret-value");
        assert!(c.warnings.is_empty());
    }

    /// The seed tutorial's `config.yml` with the nesting its rendering lost (spec §6),
    /// including its empty `address:` and its comments.
    const TUTORIAL: &str = r#"address: # Listen on all network interfaces on port 7373
admin:
  identity: disabled  # We disable the admin identity since we don't need it in this guide 
tls:
  key: private.key    # The KES server TLS private key
  cert: public.crt    # The KES server TLS certificate
policy:
  my-app:
    allow:
    - /v1/key/create/my-key*
    - /v1/key/generate/my-key*
    - /v1/key/decrypt/my-key*
    identities:
    - 02ef5321ca409dbc7b10e7e8ee44d1c3b91e4bf6e2198befdebee6312745267b # Use the identity of your client.crt
keystore:
  azure:
    keyvault:
      endpoint: "https://kes-tutorial.vault.azure.net"    # Use your KeyVault instance endpoint.
      credentials:
        tenant_id: "41a37d4e-b3c4-49f4-b330-1114fb0271c8"      # The ID of the tenant the client belongs to
        client_id: "c3b7badf-cd2b-4297-bece-4de5f2e575f6"      # The ID of the client
        client_secret: "-.j4XP6Sa7E39.KWn-SL~Dgbz~H-H-TPxT"  # The value of the client secret
"#;

    #[test]
    fn seed_tutorial_config_parses() {
        let c = ok(TUTORIAL);
        assert_eq!(c.address, None);
        assert_eq!(c.admin_identity, "disabled");
        assert_eq!(c.tls.key, PathBuf::from("private.key"));
        assert_eq!(c.tls.cert, PathBuf::from("public.crt"));
        assert_eq!(
            c.policies["my-app"],
            PolicyConfig {
                allow: vec![
                    "/v1/key/create/my-key*".into(),
                    "/v1/key/generate/my-key*".into(),
                    "/v1/key/decrypt/my-key*".into(),
                ],
                deny: vec![],
                identities: vec![
                    "02ef5321ca409dbc7b10e7e8ee44d1c3b91e4bf6e2198befdebee6312745267b".into()
                ],
            }
        );
        assert_eq!(c.cache, CacheConfig::default());
        assert_eq!(c.log, LogConfig::default());
        assert!(c.api.is_empty() && c.keys.is_empty() && c.warnings.is_empty());
        let KeyStoreConfig::Azure(az) = &c.keystore else { panic!("{:?}", c.keystore) };
        assert_eq!(az.endpoint, "https://kes-tutorial.vault.azure.net");
        let AzureCredentials::ClientSecret { tenant_id, client_id, client_secret } =
            &az.credentials
        else {
            panic!("{:?}", az.credentials)
        };
        assert_eq!(tenant_id, "41a37d4e-b3c4-49f4-b330-1114fb0271c8");
        assert_eq!(client_id, "c3b7badf-cd2b-4297-bece-4de5f2e575f6");
        assert_eq!(client_secret.as_str(), "-.j4XP6Sa7E39.KWn-SL~Dgbz~H-H-TPxT");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = ok(&TUTORIAL.replace("tls:\n", "tls:\n  password: tls-pass-literal\n"));
        assert_eq!(c.tls.password.as_ref().map(|p| p.as_str()), Some("tls-pass-literal"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("-.j4XP6Sa7E39"), "{dbg}");
        assert!(!dbg.contains("tls-pass-literal"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
    }

    #[test]
    fn env_references_expand_on_e_fields() {
        let c = ok(r#"address: ${EMPTY}
admin:
  identity: ${KES_ADMIN}
tls:
  key: "  ${ STORE }  "
  cert: ./c-${STORE}.pem
  password: ${PASS}
  ca: ${EMPTY}
  auth: ${SKIP}
policy:
  p:
    allow: ["${STORE}"]
    deny:
    - ${CLIENT}
    identities:
    - ${CLIENT}
cache:
  expiry:
    any: ${TTL}
api:
  /v1/status:
    skip_auth: ${SKIP}
    timeout: ${TTL}
log:
  error: ${EMPTY}
keys:
- name: ${CLIENT}
keystore:
  fs:
    path: ${STORE}
"#);
        // Set-but-empty is fine and means "unset" for optional fields.
        assert_eq!(c.address, None);
        assert_eq!(c.tls.ca, None);
        assert_eq!(c.log.error, Level::INFO);
        assert_eq!(c.admin_identity.len(), 64);
        // The whole trimmed scalar is the reference, the name is trimmed too.
        assert_eq!(c.tls.key, PathBuf::from("/srv/kes"));
        // Partial references are literal text.
        assert_eq!(c.tls.cert, PathBuf::from("./c-${STORE}.pem"));
        assert_eq!(c.tls.password.as_ref().map(|p| p.as_str()), Some("tls-pass"));
        assert!(c.tls.verify_client_chain);
        // Policy patterns are never expanded; identities are.
        assert_eq!(c.policies["p"].allow, vec!["${STORE}".to_string()]);
        assert_eq!(c.policies["p"].deny, vec!["${CLIENT}".to_string()]);
        assert_eq!(c.policies["p"].identities, vec!["client-identity".to_string()]);
        assert_eq!(c.cache.any, Duration::from_secs(90));
        assert_eq!(
            c.api["/v1/status"],
            ApiOverride { skip_auth: true, timeout: Some(Duration::from_secs(90)) }
        );
        assert_eq!(c.keys, vec!["client-identity".to_string()]);
        assert!(
            matches!(&c.keystore, KeyStoreConfig::Fs { path } if path == Path::new("/srv/kes"))
        );
    }

    #[test]
    fn unset_variables_name_the_variable_the_line_and_the_field() {
        assert_eq!(
            err("version: v1\nadmin:\n  identity: ${NOT_SET}\n"),
            "admin.identity: referenced env. variable 'NOT_SET' in line '3' not found"
        );
        assert_eq!(
            err(&format!(
                "{ADMIN}{TLS}keystore:\n  azure:\n    keyvault:\n      endpoint: e\n      credentials:\n        client_secret: \"${{GONE}}\"\n"
            )),
            "keystore.azure.keyvault.credentials.client_secret: referenced env. variable 'GONE' in line '11' not found"
        );
        // `version` is not expandable: the reference is compared as written.
        assert_eq!(
            err(&with("version: ${V}\n")),
            "version: invalid version '${V}': only 'v1' is supported"
        );
        // Not expanded, so an unset variable in a pattern is no error.
        assert_eq!(
            ok(&with("policy:\n  p:\n    allow: [\"${NOT_SET}\"]\n")).policies["p"].allow,
            ["${NOT_SET}"]
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let c = ok(&format!(
            "{ADMIN}{TLS}\
             unknown: 1\n\
             cache:\n  expiry:\n    any: 1m\n    sometimes: 3m\n\
             log:\n  error: warn\n  format: json\n\
             keystore:\n  azure:\n    keyvault:\n      endpoint: https://v.vault.azure.net\n      retry: 3\n\
             \x20 vault: ~\n  generic:\n  fancy-future-store: null\n"
        ));
        assert_eq!(c.cache.any, Duration::from_secs(60));
        assert_eq!(c.log.error, Level::WARN);
        let KeyStoreConfig::Azure(az) = &c.keystore else { panic!("{:?}", c.keystore) };
        assert!(matches!(az.credentials, AzureCredentials::Default));
        // Proxy settings are parsed (their `${VAR}` must resolve) but only identities kept.
        let c = ok(&format!(
            "{ADMIN}{FS}tls:\n  key: k\n  cert: c\n  proxy:\n    identities: [a, \"\", b]\n    header:\n      cert: X-Tls-Client-Cert\n"
        ));
        assert_eq!(c.tls.proxy_identities, ["a", "b"]);
        assert_eq!(
            err(&format!(
                "{ADMIN}{FS}tls:\n  key: k\n  cert: c\n  proxy:\n    header:\n      cert: ${{NOPE}}\n"
            )),
            "tls.proxy.header.cert: referenced env. variable 'NOPE' in line '11' not found"
        );
    }

    #[test]
    fn yaml_shape_errors() {
        assert_eq!(err(""), "config file is empty");
        assert_eq!(err("\n  \n"), "config file is empty");
        assert_eq!(err("# just a comment\n"), "config file is empty");
        assert_eq!(err("---\n...\n"), "config file is empty");
        assert_eq!(err("- a\n- b\n"), "invalid YAML: expected mapping start at line 1, column 1");
        assert_eq!(err("just text"), "invalid YAML: expected mapping start at line 1, column 1");
        assert_eq!(
            err(&format!("{}---\n{}", with(""), with(""))),
            "invalid YAML: multiple YAML documents detected; use from_str_multiple or \
             from_str_multiple_with_options at line 10, column 1"
        );
        assert_eq!(
            err(&with("version: [v1]\n")),
            "invalid YAML: expected string scalar at line 9, column 10"
        );
        assert_eq!(
            err(&with("policy:\n  p:\n    identities: [~]\n")),
            "invalid YAML: cannot deserialize null into string; use Option<String> at line 11, column 18"
        );
        let big = format!("{}#{}\n", with(""), "x".repeat(MAX_CONFIG_BYTES));
        assert_eq!(err(&big), format!("config file is larger than {MAX_CONFIG_BYTES} bytes"));
        let e = parse("", "/etc/kes/config.yml", &env).unwrap_err();
        assert_eq!(e.to_string(), "/etc/kes/config.yml: config file is empty");
    }

    #[test]
    fn duplicate_yaml_keys_are_rejected() {
        assert_eq!(
            err(&format!("{ADMIN}{TLS}{FS}admin:\n  identity: other\n")),
            "invalid YAML: duplicate mapping key: admin, set DuplicateKeyPolicy in Options if \
             acceptable at line 9, column 1"
        );
        assert!(
            err(&with("policy:\n  p: {allow: [a]}\n  p: {allow: [b]}\n"))
                .starts_with("invalid YAML: duplicate mapping key: p,")
        );
        assert!(
            err(&with("api:\n  /v1/ready: {timeout: 1s, timeout: 2s}\n"))
                .starts_with("invalid YAML: duplicate mapping key: timeout,")
        );
    }

    #[test]
    fn alias_bombs_are_rejected_quickly() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            let refs = vec![format!("*{prev}"); 10].join(", ");
            bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        let start = std::time::Instant::now();
        let e = err(&bomb);
        assert!(e.starts_with("invalid YAML: alias replay limit exceeded"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(60), "took {:?}", start.elapsed());
        // Deep nesting is bounded too (no stack overflow).
        let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        assert!(err(&deep).starts_with("invalid YAML: "));
        let deep_block: String = (0..200).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert!(err(&deep_block).starts_with("invalid YAML: "));
    }

    #[test]
    fn step_1_version() {
        assert_eq!(ok(&with("version: v1\n")).admin_identity, "disabled");
        assert_eq!(
            err(&with("version: v2\n")),
            "version: invalid version 'v2': only 'v1' is supported"
        );
        // Checked before any expansion or validation.
        assert_eq!(
            err("version: 1\nadmin:\n  identity: ${NOPE}\n"),
            "version: invalid version '1': only 'v1' is supported"
        );
    }

    #[test]
    fn step_2_admin_identity() {
        assert_eq!(err(&format!("{TLS}{FS}")), "admin.identity: no admin identity");
        assert_eq!(
            err(&format!("admin:\n  identity: \"\"\n{TLS}{FS}")),
            "admin.identity: no admin identity"
        );
        assert_eq!(
            err(&format!("admin:\n  identity: ${{EMPTY}}\n{TLS}{FS}")),
            "admin.identity: no admin identity"
        );
        // Expansion errors come before validation: first failure wins.
        assert_eq!(
            err(&format!("{TLS}{FS}address: ${{NOPE}}\n")),
            "address: referenced env. variable 'NOPE' in line '7' not found"
        );
    }

    #[test]
    fn step_3_tls_key_and_cert() {
        assert_eq!(err(&format!("{ADMIN}{FS}")), "tls.key: no private key");
        assert_eq!(err(&format!("{ADMIN}{FS}tls:\n  cert: c\n")), "tls.key: no private key");
        assert_eq!(err(&format!("{ADMIN}{FS}tls:\n  key: k\n")), "tls.cert: no certificate");
        // Step 2 wins over step 3.
        assert_eq!(err(FS), "admin.identity: no admin identity");
    }

    #[test]
    fn step_4_tls_auth() {
        let auth = |v: &str| {
            parse(&format!("{ADMIN}{FS}tls:\n  key: k\n  cert: c\n  auth: {v}\n"), "f", &env)
                .map(|c| c.tls.verify_client_chain)
                .map_err(|e| e.message)
        };
        assert_eq!(auth("\"\""), Ok(false));
        assert_eq!(auth("off"), Ok(false));
        assert_eq!(auth("Off"), Ok(false));
        assert_eq!(auth("on"), Ok(true));
        assert_eq!(auth("ON"), Ok(true));
        assert_eq!(
            auth("verify"),
            Err("tls.auth: invalid auth mode 'verify': must be 'on' or 'off'".into())
        );
        assert_eq!(
            auth("true"),
            Err("tls.auth: invalid auth mode 'true': must be 'on' or 'off'".into())
        );
        let c = ok(&format!("{ADMIN}{FS}tls:\n  key: k\n  cert: c\n  ca: /etc/kes/ca.pem\n"));
        assert_eq!(c.tls.ca, Some(PathBuf::from("/etc/kes/ca.pem")));
    }

    #[test]
    fn tls_client_validity_is_log_or_enforce() {
        let mode = |v: &str| {
            let tls = format!("tls:\n  key: k\n  cert: c\n{v}");
            parse(&format!("{ADMIN}{FS}{tls}"), "f", &env)
                .map(|c| c.tls.enforce_client_validity)
                .map_err(|e| e.message)
        };
        assert_eq!(mode(""), Ok(false));
        assert_eq!(mode("  client_validity: log\n"), Ok(false));
        assert_eq!(mode("  client_validity: enforce\n"), Ok(true));
        assert_eq!(mode("  client_validity: ENFORCE\n"), Ok(true));
        assert_eq!(
            mode("  client_validity: strict\n"),
            Err("tls.client_validity: invalid mode 'strict': must be 'log' or 'enforce'".into())
        );
    }

    #[test]
    fn step_5_identities_against_admin_and_proxies() {
        let admin = "admin:\n  identity: adm\n";
        let tls = "tls:\n  key: k\n  cert: c\n  proxy:\n    identities: [prx]\n";
        assert_eq!(
            err(&format!(
                "{admin}{FS}tls:\n  key: k\n  cert: c\n  proxy:\n    identities: [adm]\n"
            )),
            "tls.proxy.identities: identity 'adm' is already admin"
        );
        assert_eq!(
            err(&format!("{admin}{tls}{FS}policy:\n  p:\n    identities: [x, adm]\n")),
            "policy.p.identities: identity 'adm' is already admin"
        );
        assert_eq!(
            err(&format!("{admin}{tls}{FS}policy:\n  p:\n    identities: [prx]\n")),
            "policy.p.identities: identity 'prx' is already a TLS proxy"
        );
    }

    #[test]
    fn step_6_cache_durations() {
        let cache = |e: &str| {
            parse(&with(&format!("cache:\n  expiry:\n{e}")), "f", &env)
                .map(|c| c.cache)
                .map_err(|e| e.message)
        };
        let secs = Duration::from_secs;
        assert_eq!(
            cache("    any: 1h30m\n    unused: 1.5s\n    offline: 2h\n"),
            Ok(CacheConfig {
                any: secs(5400),
                unused: Duration::from_millis(1500),
                offline: secs(7200)
            })
        );
        // Zero and unset mean our documented defaults (spec §3.3 DECISION).
        assert_eq!(
            cache("    any: 0s\n    unused: 0\n    offline: 0s\n"),
            Ok(CacheConfig::default())
        );
        assert_eq!(
            cache("    unused: 10m\n"),
            Ok(CacheConfig { unused: secs(600), ..CacheConfig::default() })
        );
        assert_eq!(cache("    any: 5\n"), Err("cache.expiry.any: invalid duration '5'".into()));
        assert_eq!(
            cache("    unused: 3 days\n"),
            Err("cache.expiry.unused: invalid duration '3 days'".into())
        );
        assert_eq!(cache("    any: -1m\n"), Err("cache.expiry.any: negative duration".into()));
        assert_eq!(
            cache("    unused: -1s\n"),
            Err("cache.expiry.unused: negative duration".into())
        );
        assert_eq!(
            cache("    offline: ${NEG}\n"),
            Err("cache.expiry.offline: negative duration".into())
        );
        // A syntax error is a decode error, so it beats an earlier validation step.
        assert_eq!(
            err(&format!("{TLS}{FS}cache:\n  expiry:\n    any: soon\n")),
            "cache.expiry.any: invalid duration 'soon'"
        );
        // A negative duration is a validation error (step 6), so step 2 wins over it.
        assert_eq!(
            err(&format!("{TLS}{FS}cache:\n  expiry:\n    any: -5m\n")),
            "admin.identity: no admin identity"
        );
    }

    #[test]
    fn step_7_log_levels() {
        let log = |l: &str| {
            parse(&with(&format!("log:\n{l}")), "f", &env).map(|c| c.log).map_err(|e| e.message)
        };
        assert_eq!(
            log("  error: debug\n  audit: error+1\n"),
            Ok(LogConfig { error: Level::DEBUG, audit: Level::OFF })
        );
        assert_eq!(
            log("  error: \"-4\"\n"),
            Ok(LogConfig { error: Level::DEBUG, audit: Level::INFO })
        );
        assert_eq!(log("  error: loud\n"), Err("log.error: invalid log level 'loud'".into()));
        assert_eq!(log("  audit: error-1\n"), Err("log.audit: invalid log level 'error-1'".into()));
    }

    #[test]
    fn step_8_api_overrides() {
        let c = ok(&with(
            "api:\n  /v1/ready:\n    skip_auth: yes\n  /v1/status:\n    timeout: 1m\n    skip_auth: false\n  /v1/metrics: {timeout: 0s}\n  /v1/api: ~\n",
        ));
        assert_eq!(c.api.len(), 4);
        assert_eq!(c.api["/v1/ready"], ApiOverride { skip_auth: true, timeout: None });
        assert_eq!(
            c.api["/v1/status"],
            ApiOverride { skip_auth: false, timeout: Some(Duration::from_secs(60)) }
        );
        assert_eq!(c.api["/v1/metrics"], ApiOverride::default());
        assert_eq!(c.api["/v1/api"], ApiOverride::default());
        assert_eq!(
            err(&with("api:\n  /v1/ready:\n    timeout: -1s\n")),
            "api./v1/ready.timeout: negative duration"
        );
        assert_eq!(
            err(&with("api:\n  /v1/ready:\n    skip_auth: maybe\n")),
            "api./v1/ready.skip_auth: invalid boolean 'maybe'"
        );
        assert_eq!(
            err(&with("api:\n  /v1/ready:\n    timeout: 15\n")),
            "api./v1/ready.timeout: invalid duration '15'"
        );
    }

    #[test]
    fn step_9_declarative_keys() {
        assert_eq!(ok(&with("keys:\n- name: a\n- name: b\n")).keys, ["a", "b"]);
        assert_eq!(
            err(&with("keys:\n- name: a\n- name: b\n- name: a\n")),
            "keys: key 'a' is defined multiple times"
        );
        // Step 8 wins over step 9.
        assert_eq!(
            err(&with("keys:\n- name: a\n- name: a\napi:\n  /v1/ready: {timeout: -1s}\n")),
            "api./v1/ready.timeout: negative duration"
        );
    }

    fn keystore(ks: &str) -> Result<KeyStoreConfig, String> {
        parse(&format!("{ADMIN}{TLS}keystore:\n{ks}"), "f", &env)
            .map(|c| c.keystore)
            .map_err(|e| e.message)
    }

    #[test]
    fn step_10_keystore_selection() {
        assert_eq!(err(&format!("{ADMIN}{TLS}")), "keystore: no keystore specified");
        assert_eq!(keystore("  vault: ~\n").unwrap_err(), "keystore: no keystore specified");
        assert_eq!(
            keystore("  fs:\n    path: /a\n  azure:\n    keyvault:\n      endpoint: e\n")
                .unwrap_err(),
            "keystore: more than one keystore specified"
        );
        assert_eq!(
            keystore("  fs:\n    path: /a\n  vault:\n    endpoint: https://vault:8200\n")
                .unwrap_err(),
            "keystore: more than one keystore specified"
        );
        for name in ["vault", "fortanix", "gemalto", "gcp", "aws", "entrust", "generic"] {
            assert_eq!(
                keystore(&format!("  {name}:\n    endpoint: x\n")).unwrap_err(),
                format!(
                    "keystore: unsupported keystore '{name}': this server supports 'azure' (Azure Key Vault) and 'fs'"
                )
            );
        }
        assert_eq!(
            keystore("  barbican:\n    endpoint: x\n").unwrap_err(),
            "keystore: unsupported keystore 'barbican': this server supports 'azure' (Azure Key Vault) and 'fs'"
        );
        // Next to a supported one, an unknown section is ignored like any unknown key.
        assert!(matches!(
            keystore("  barbican: {x: 1}\n  fs: {path: /a}\n"),
            Ok(KeyStoreConfig::Fs { .. })
        ));
    }

    #[test]
    fn step_10_fs_keystore() {
        assert!(matches!(
            keystore("  fs:\n    path: ./keys\n"),
            Ok(KeyStoreConfig::Fs { path }) if path == Path::new("./keys")
        ));
        assert!(matches!(
            keystore("  fs:\n    path: ${STORE}\n"),
            Ok(KeyStoreConfig::Fs { path }) if path == Path::new("/srv/kes")
        ));
        assert_eq!(keystore("  fs: {}\n").unwrap_err(), "keystore.fs.path: no path specified");
        assert_eq!(
            keystore("  fs:\n    path: ${EMPTY}\n").unwrap_err(),
            "keystore.fs.path: no path specified"
        );
    }

    #[test]
    fn step_10_azure_keystore() {
        let kv = "  azure:\n    keyvault:\n      endpoint: https://v.vault.azure.net\n";
        let azure = |extra: &str| keystore(&format!("{kv}{extra}"));
        let Ok(KeyStoreConfig::Azure(az)) =
            azure("      managed_identity:\n        client_id: mi-1\n")
        else {
            panic!()
        };
        assert_eq!(az.endpoint, "https://v.vault.azure.net");
        assert!(
            matches!(&az.credentials, AzureCredentials::ManagedIdentity { client_id } if client_id == "mi-1")
        );
        let Ok(KeyStoreConfig::Azure(az)) = azure("") else { panic!() };
        assert!(matches!(az.credentials, AzureCredentials::Default));
        // A null section is an absent one.
        let Ok(KeyStoreConfig::Azure(az)) =
            azure("      credentials:\n      managed_identity: ~\n")
        else {
            panic!()
        };
        assert!(matches!(az.credentials, AzureCredentials::Default));

        assert_eq!(
            keystore("  azure:\n    keyvault:\n      credentials: {tenant_id: t}\n").unwrap_err(),
            "keystore.azure.keyvault.endpoint: no endpoint specified"
        );
        assert_eq!(
            keystore("  azure: {}\n").unwrap_err(),
            "keystore.azure.keyvault.endpoint: no endpoint specified"
        );
        assert_eq!(
            azure("      credentials: {tenant_id: t, client_id: c, client_secret: s}\n      managed_identity: {client_id: m}\n")
                .unwrap_err(),
            "keystore.azure.keyvault: more than one authentication method"
        );
        assert_eq!(
            azure("      credentials: {client_id: c, client_secret: s}\n").unwrap_err(),
            "keystore.azure.keyvault.credentials.tenant_id: no tenant ID specified"
        );
        assert_eq!(
            azure("      credentials: {tenant_id: t, client_secret: s}\n").unwrap_err(),
            "keystore.azure.keyvault.credentials.client_id: no client ID specified"
        );
        assert_eq!(
            azure("      credentials: {tenant_id: t, client_id: c, client_secret: \"${EMPTY}\"}\n")
                .unwrap_err(),
            "keystore.azure.keyvault.credentials.client_secret: no client secret specified"
        );
        assert_eq!(
            azure("      managed_identity: {}\n").unwrap_err(),
            "keystore.azure.keyvault.managed_identity.client_id: no client ID specified"
        );
        // Step 9 wins over step 10.
        assert_eq!(
            err(&format!("{ADMIN}{TLS}keys: [{{name: a}}, {{name: a}}]\n")),
            "keys: key 'a' is defined multiple times"
        );
    }

    #[test]
    fn step_11_policy_names_and_identities() {
        assert_eq!(
            err(&with("policy:\n  my policy:\n    allow: [/v1/status]\n")),
            "policy: policy name 'my policy' is empty, too long or contains invalid characters"
        );
        assert_eq!(
            err(&with("policy:\n  p:\n    identities: [\"bad/id\"]\n")),
            "policy.p.identities: identity 'bad/id' is empty, too long or contains invalid characters"
        );
        assert_eq!(
            err(&with("policy:\n  p:\n    identities: [\"${EMPTY}\"]\n")),
            "policy.p.identities: identity '' is empty, too long or contains invalid characters"
        );
        assert_eq!(
            err(&with("policy:\n  a:\n    identities: [c1]\n  b:\n    identities: [c2, c1]\n")),
            "policy.b.identities: cannot assign policy 'b' to 'c1': identity already has a policy"
        );
        assert_eq!(
            err(&with("policy:\n  a:\n    identities: [c1, c1]\n")),
            "policy.a.identities: cannot assign policy 'a' to 'c1': identity already has a policy"
        );
        // Step 10 wins over step 11.
        assert_eq!(
            err(&format!("{ADMIN}{TLS}policy:\n  bad name: {{}}\n")),
            "keystore: no keystore specified"
        );
        // A policy without anything is a valid, empty policy.
        assert_eq!(ok(&with("policy:\n  empty:\n")).policies["empty"], PolicyConfig::default());
    }

    #[test]
    fn glob_patterns_produce_warnings() {
        let c = ok(&with(
            "policy:\n  p:\n    allow:\n    - /v1/key/*/my-app*\n    - /v1/key/create/app?\n    - /v1/key/create/ok*\n    deny:\n    - /v1/key/[ab]\n    - /v1/status\n",
        ));
        assert_eq!(
            c.warnings,
            [
                "policy.p.allow: pattern '/v1/key/*/my-app*': only a trailing '*' is a wildcard; other '*', '?' and '[' are literal characters (KES releases before 2023-11 read this pattern as a glob)",
                "policy.p.allow: pattern '/v1/key/create/app?': only a trailing '*' is a wildcard; other '*', '?' and '[' are literal characters (KES releases before 2023-11 read this pattern as a glob)",
                "policy.p.deny: pattern '/v1/key/[ab]': only a trailing '*' is a wildcard; other '*', '?' and '[' are literal characters (KES releases before 2023-11 read this pattern as a glob)",
            ]
        );
    }

    #[test]
    fn load_reads_the_file_and_names_it() {
        let dir = std::env::temp_dir().join(format!("kes-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yml");
        std::fs::write(&path, with("log:\n  audit: off\n")).unwrap();
        let c = load(&path).unwrap();
        assert_eq!(c.log.audit, Level::OFF);

        std::fs::write(&path, format!("{}#{}\n", with(""), "x".repeat(MAX_CONFIG_BYTES))).unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!(e.file, path.display().to_string());
        assert_eq!(e.message, format!("config file is larger than {MAX_CONFIG_BYTES} bytes"));

        let missing = dir.join("missing.yml");
        let e = load(&missing).unwrap_err();
        assert_eq!(e.file, missing.display().to_string());
        assert!(e.message.starts_with("cannot read config file: "), "{}", e.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn listen_addresses() {
        let a = |s: &str| parse_listen_address(s);
        assert_eq!(a("0.0.0.0:7373"), Ok("0.0.0.0:7373".parse().unwrap()));
        assert_eq!(a(":7373"), Ok("0.0.0.0:7373".parse().unwrap()));
        assert_eq!(a("127.0.0.1:0"), Ok("127.0.0.1:0".parse().unwrap()));
        assert_eq!(a("[::1]:7373"), Ok("[::1]:7373".parse().unwrap()));
        assert_eq!(a("[::]:443"), Ok("[::]:443".parse().unwrap()));
        assert_eq!(a("[10.0.0.1]:80"), Ok("10.0.0.1:80".parse().unwrap()));
        assert_eq!(a("localhost:7373"), Err("'localhost' is not a valid IP address".into()));
        assert_eq!(
            a("kes.example.com:7373"),
            Err("'kes.example.com' is not a valid IP address".into())
        );
        assert_eq!(
            a("[fe80::1%eth0]:7373"),
            Err("'fe80::1%eth0' is not a valid IP address".into())
        );
        assert_eq!(a("127.0.0.1"), Err("missing port in address '127.0.0.1'".into()));
        assert_eq!(a("127.0.0.1:"), Err("missing port in address '127.0.0.1:'".into()));
        assert_eq!(a("[::1]"), Err("missing port in address '[::1]'".into()));
        assert_eq!(a(""), Err("missing port in address ''".into()));
        assert_eq!(a("::1:7373"), Err("too many colons in address '::1:7373'".into()));
        assert_eq!(a("[::1:7373"), Err("missing ']' in address '[::1:7373'".into()));
        assert_eq!(
            a("1.2.3.4:65536"),
            Err("invalid port '65536' in address '1.2.3.4:65536'".into())
        );
        assert_eq!(a("1.2.3.4:+80"), Err("invalid port '+80' in address '1.2.3.4:+80'".into()));
        assert_eq!(
            a("1.2.3.4:https"),
            Err("invalid port 'https' in address '1.2.3.4:https'".into())
        );
        assert_eq!(a(DEFAULT_ADDRESS), Ok("0.0.0.0:7373".parse().unwrap()));
    }
    #[test]
    fn cache_persist_reads_the_sealing_key_from_a_source_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("kes-config-seal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("seal.key");
        std::fs::write(&key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let persist = |body: &str| with(&format!("cache:\n  persist:\n{body}"));

        let c = ok(&persist(&format!(
            "    path: /var/lib/kes/cache\n    seal: file:{}\n",
            key.display()
        )));
        let p = c.persist.unwrap();
        assert_eq!(p.path, PathBuf::from("/var/lib/kes/cache"));
        assert_eq!(p.seal[31], 31);
        assert_eq!(p.max_age, DEFAULT_PERSIST_MAX_AGE);
        assert!(!format!("{p:?}").contains("AAEC"));
        assert!(format!("{p:?}").contains("<redacted>"));
        let c = ok(&persist(&format!(
            "    path: /c\n    seal: file:{}\n    max_age: 1h\n",
            key.display()
        )));
        assert_eq!(c.persist.unwrap().max_age, Duration::from_secs(3600));
        assert!(ok(&with("")).persist.is_none());

        assert_eq!(
            err(&persist("    path: /c\n    seal: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n")),
            "cache.persist.seal: must be credential:NAME or file:PATH (the sealing key is never \
             written into the config file)"
        );
        assert_eq!(
            err(&persist("    path: /c\n")),
            "cache.persist.seal: no sealing key: use credential:NAME (systemd \
             LoadCredentialEncrypted=) or file:PATH"
        );
        assert_eq!(
            err(&persist(&format!("    seal: file:{}\n", key.display()))),
            "cache.persist.path: no path specified"
        );
        assert!(
            err(&persist(&format!(
                "    path: /c\n    seal: file:{}\n    max_age: -1h\n",
                key.display()
            ))) == "cache.persist.max_age: negative duration"
        );
        let missing = err(&persist("    path: /c\n    seal: credential:kes-seal\n"));
        assert!(missing.contains("$CREDENTIALS_DIRECTORY is not set"), "{missing}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = err(&persist(&format!("    path: /c\n    seal: file:{}\n", key.display())));
        assert!(open.contains("(mode 0644)") && open.contains("run chmod 600"), "{open}");
        std::fs::write(&key, "c2hvcnQ=\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let short = err(&persist(&format!("    path: /c\n    seal: file:{}\n", key.display())));
        assert!(short.starts_with("cache.persist.seal: 5 bytes, not 32"), "{short}");

        // The same sources work for the TLS password and the Azure client secret.
        std::fs::write(&key, "tls-from-file\n").unwrap();
        let text =
            format!("{ADMIN}tls:\n  key: k\n  cert: c\n  password: file:{}\n{FS}", key.display());
        assert_eq!(ok(&text).tls.password.unwrap().as_str(), "tls-from-file");
        let azure = format!(
            "{ADMIN}{TLS}keystore:\n  azure:\n    keyvault:\n      endpoint: https://v\n      \
             credentials:\n        tenant_id: t\n        client_id: c\n        client_secret: file:{}\n",
            key.display()
        );
        match ok(&azure).keystore {
            KeyStoreConfig::Azure(AzureConfig {
                credentials: AzureCredentials::ClientSecret { client_secret, .. },
                ..
            }) => assert_eq!(client_secret.as_str(), "tls-from-file"),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
