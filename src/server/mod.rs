//! The server: builds an immutable [`api::State`] from the config, hardens the process,
//! binds, and runs a bounded thread-per-connection accept loop. No async runtime: every
//! connection is a named thread with a small explicit stack (one of the threads kept
//! between connections, [`workers`], or one started for it), and everything a client can
//! hold (a thread, a socket, buffered bytes, time) is bounded by a named constant.
//!
//! Startup order: config -> TLS material -> key store -> declarative keys -> bind ->
//! harden -> accept. Reload (SIGHUP) swaps the state and TLS config atomically. [`load`] is
//! the one loader of a config file, shared with `kes server --check` ([`check`]).

pub mod admission;
pub mod check;
pub mod conn;
pub mod tls;
pub mod workers;

use crate::api::{self, BuildInfo, State};
use crate::auth::attr::{Anchors, AttrIdentity};
use crate::auth::{Identity, Policy, PolicySet};
use crate::config::{self, Config, KeyStoreConfig};
use crate::crypto::{Algorithm, KeyVersion};
use crate::keystore::cache::KeyCache;
use crate::keystore::mem::MemStore;
use crate::keystore::{KeyStore, StoreError};
use crate::obs::Level;
use crate::obs::audit_file::AuditFile;
use crate::obs::batch::LineBatch;
use crate::obs::{ConnStats, Obs, ProcReader, SharedWriter};
use crate::sys::{self, MlockPolicy};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Default cap on concurrent connections. Each holds one thread. Measured with the release
/// binary and mlock on, a connection costs about 55 KiB at the height of the slow-client
/// attacks (the 25-30 KiB of its 256 KiB stack that it touches, locked page by page, and
/// its rustls and request buffers), so 1,024 of them stay near 60 MiB, inside the 96 MiB
/// the server may hold under attack; twice as many would not. Since admission control
/// evicts idle and slow connections for newcomers ([`admission`]), reaching the cap no
/// longer shuts anyone out, and MinIO needs a handful of kept-alive connections per node.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// At most one log line about evictions and refusals per this period: an attack must not
/// flood the error log, and the line still says how many there were.
pub const ADMISSION_LOG_PERIOD: Duration = Duration::from_secs(10);

/// Stack of a connection thread. mlockall makes every stack resident, so it is explicit
/// and small. Measured high-water mark of a release build (resident pages of the live
/// thread's stack in /proc/PID/smaps, `--no-mlock`): 56 KiB after an Azure create with a
/// token fetch, a cold-key generate, list, status, metrics and delete+purge on one
/// connection; 256 KiB leaves 4.5x headroom. Debug builds use far bigger frames.
pub const CONN_STACK_SIZE: usize = if cfg!(debug_assertions) { 2 << 20 } else { 256 << 10 };

/// Deadline for creating declarative `keys:` at startup.
pub const STARTUP_KEYS_TIMEOUT: Duration = Duration::from_secs(30);

/// How long startup waits for the key store to answer when `cache.persist` is on, before
/// it serves from the sealed cache instead. Bounds a hanging vault (one that accepts and
/// never answers) as well as a refusing one; the cache keeps probing every 10 s after.
pub const STARTUP_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the TLS certificate and key are re-read from disk, so that rotated
/// certificates (cert-manager, ACME) take effect without a restart (upstream: 15 min).
pub const TLS_RELOAD_PERIOD: Duration = Duration::from_secs(15 * 60);

/// The address `--dev` binds to unless `--addr` says otherwise: loopback only.
pub const DEV_ADDRESS: &str = "127.0.0.1:7373";

/// Version facts of this build.
pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        commit: option_env!("KES_BUILD_COMMIT").unwrap_or("<unknown>"),
    }
}

/// How to run the server.
pub struct Options {
    pub config: Option<PathBuf>,
    pub dev: bool,
    /// `--addr`, overriding the config's `address`.
    pub addr: Option<String>,
    pub mlock: MlockPolicy,
    /// Install the seccomp filter (`--no-seccomp` turns it off; in-process tests must).
    pub seccomp: bool,
    pub max_connections: usize,
    /// Log lines as JSON (journald users want fields); text otherwise.
    pub log_json: bool,
    /// Where audit lines go (stdout in production).
    pub audit_out: Option<SharedWriter>,
    /// Write audit lines in batches by a writer thread (`obs::batch`) rather than one write
    /// per request; [`Server::shutdown`] writes what is queued. The binary sets it.
    pub audit_batched: bool,
    /// Where error-log lines go (stderr in production).
    pub error_out: Option<SharedWriter>,
    /// Inject a key store instead of the configured one (tests, `--dev`).
    pub store: Option<Arc<dyn KeyStore>>,
    /// How often the TLS certificate is re-read ([`TLS_RELOAD_PERIOD`]).
    pub tls_reload_period: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: None,
            dev: false,
            addr: None,
            mlock: MlockPolicy::Try,
            seccomp: true,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            log_json: false,
            audit_out: None,
            audit_batched: false,
            error_out: None,
            store: None,
            tls_reload_period: TLS_RELOAD_PERIOD,
        }
    }
}

/// What the banner shows.
pub struct Banner {
    pub keystore: String,
    pub admin: Identity,
    pub addr: SocketAddr,
    pub error_level: Level,
    pub audit_level: Level,
    pub mlock: bool,
    /// Why memory is not locked, when it is not.
    pub mlock_off: Option<String>,
    pub seccomp: bool,
    /// `--dev`: the admin API key, to print once.
    pub dev_api_key: Option<Zeroizing<String>>,
    /// `--dev`: the server certificate (PEM), so clients can trust it.
    pub dev_cert_pem: Option<String>,
    /// Config warnings (e.g. glob-style policy patterns).
    pub warnings: Vec<String>,
    /// `cache.persist`: what the sealed cache does, one line.
    pub sealed: Option<String>,
}

/// State and TLS config shared by all connections, swapped whole on reload.
pub struct Shared {
    state: RwLock<Arc<State>>,
    /// Bumped after every swap of `state`: a connection keeps its [`StateView`] and takes
    /// the lock only when this moved, instead of once per request.
    generation: AtomicU64,
    tls: RwLock<Arc<rustls::ServerConfig>>,
    registry: admission::Registry,
    /// Admission counters, also in every [`State`] for `/v1/metrics`.
    conns: Arc<ConnStats>,
    stopping: AtomicBool,
}

/// A connection's copy of the current state, refreshed by [`Shared::refresh`].
pub struct StateView {
    generation: u64,
    pub state: Arc<State>,
}

impl Shared {
    pub fn state(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current state, to keep across requests.
    pub fn view(&self) -> StateView {
        let generation = self.generation.load(Ordering::Acquire);
        StateView { generation, state: self.state() }
    }

    /// Brings `view` up to date when a reload swapped the state since it was taken: one
    /// atomic load per request otherwise. A request that starts after a reload finished
    /// sees the new state (the swap happens before the bump).
    pub fn refresh(&self, view: &mut StateView) {
        if self.generation.load(Ordering::Acquire) != view.generation {
            *view = self.view();
        }
    }

    pub fn tls(&self) -> Arc<rustls::ServerConfig> {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connections holding a slot.
    pub fn active_connections(&self) -> usize {
        self.registry.open()
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub banner: Banner,
    shared: Arc<Shared>,
    accept: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The certificate-rotation thread, woken to stop.
    rotation: Option<std::thread::Thread>,
    options: ReloadInputs,
}

/// What a reload needs to rebuild the state.
struct ReloadInputs {
    config: Option<PathBuf>,
    log_json: bool,
    audit_out: Option<SharedWriter>,
    /// The batching writer of `audit_out` (`Options::audit_batched`), shared by every
    /// state so that lines keep their order across reloads.
    audit_batch: Option<Arc<LineBatch>>,
    error_out: Option<SharedWriter>,
    /// `log.audit_file`, opened once and kept across reloads so its chain continues.
    audit_file: Option<Arc<AuditFile>>,
}

/// A startup failure with a message that says what to do.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The policies and the route table (with `api:` overrides) a config gives the server:
/// everything an authorization decision depends on.
pub fn authorization(cfg: &Config) -> (PolicySet, Vec<api::routes::Route>) {
    (policy_set(cfg), api::routes::with_overrides(api::routes::default_routes(), &cfg.api))
}

fn policy_set(cfg: &Config) -> PolicySet {
    let mut set =
        PolicySet { admin: Identity::new(cfg.admin_identity.clone()), ..Default::default() };
    for (name, p) in &cfg.policies {
        set.policies.insert(name.clone(), Policy { allow: p.allow.clone(), deny: p.deny.clone() });
        for id in &p.identities {
            if !AttrIdentity::is_attribute(id) {
                set.assignments.insert(Identity::new(id.clone()), name.clone());
            } else if let Ok(attr) = AttrIdentity::parse(id) {
                // Config validation refused every entry that does not parse.
                set.attributes.push((attr, name.clone()));
            }
        }
    }
    set.anchors = attribute_anchors(&cfg.tls);
    set
}

/// The `tls.ca` certificates attribute identities are verified against: only with
/// `tls.auth: on` (else chains are not verified at all) and `tls.ca` set (the system roots
/// never vouch for an attribute identity). An unreadable `tls.ca` is the TLS loader's error
/// ([`load`]); here it only means no anchors.
fn attribute_anchors(t: &config::TlsConfig) -> Option<Arc<Anchors>> {
    let ca = t.ca.as_deref().filter(|_| t.verify_client_chain)?;
    let anchors = Anchors::new(&tls::load_ca(ca).ok()?);
    (!anchors.is_empty()).then(|| Arc::new(anchors))
}

/// Opens the configured key store.
/// What a reload builds before it swaps anything in: the config and TLS ([`load`]) and
/// the key store. `kes server --signal-reload` runs the same through [`check_reload`].
fn load_for_reload(path: &std::path::Path) -> Result<(Loaded, Arc<dyn KeyStore>), StartError> {
    let loaded = load(path, None)?;
    let store = open_store(&loaded.cfg.keystore)?;
    Ok((loaded, store))
}

/// Whether a running server would accept `path` on reload (`kes server --signal-reload`,
/// the unit's `ExecReload=`): so `systemctl reload` fails with the reason instead of the
/// server refusing the file where only the journal shows it.
pub fn check_reload(path: &std::path::Path) -> Result<(), StartError> {
    load_for_reload(path).map(|_| ())
}

/// One line saying what a reload changed in the admin identity, the policies and which
/// identity holds which policy.
fn policy_changes(old: &PolicySet, new: &PolicySet) -> String {
    let mut out = Vec::new();
    if old.admin != new.admin {
        out.push("admin identity".to_string());
    }
    let names = |m: &std::collections::BTreeMap<String, Policy>,
                 other: &std::collections::BTreeMap<String, Policy>,
                 what: &str| {
        m.keys()
            .filter(|k| !other.contains_key(*k))
            .map(|k| format!("policy '{k}' {what}"))
            .collect::<Vec<_>>()
    };
    out.extend(names(&new.policies, &old.policies, "added"));
    out.extend(names(&old.policies, &new.policies, "removed"));
    for (k, p) in &new.policies {
        if old.policies.get(k).is_some_and(|o| o != p) {
            out.push(format!("policy '{k}' changed"));
        }
    }
    let moved =
        new.assignments.iter().filter(|(id, p)| old.assignments.get(*id) != Some(*p)).count()
            + old.assignments.keys().filter(|id| !new.assignments.contains_key(*id)).count();
    let attributes = |s: &PolicySet| s.attributes.iter().cloned().collect::<BTreeSet<_>>();
    let moved = moved + attributes(new).symmetric_difference(&attributes(old)).count();
    if moved > 0 {
        out.push(format!("{moved} identity assignment(s)"));
    }
    if out.is_empty() {
        "No policy or identity changes; TLS and key store reloaded.".into()
    } else {
        format!("Changed: {}; TLS and key store reloaded.", out.join(", "))
    }
}

pub fn open_store(cfg: &KeyStoreConfig) -> Result<Arc<dyn KeyStore>, StartError> {
    match cfg {
        KeyStoreConfig::Fs { path } => crate::keystore::fs::FsStore::open(path)
            .map(|s| Arc::new(s) as Arc<dyn KeyStore>)
            .map_err(|e| {
                StartError(format!("keystore.fs.path: cannot open '{}': {e}", path.display()))
            }),
        KeyStoreConfig::Azure(azure) => open_azure(azure).map(|s| Arc::new(s) as Arc<dyn KeyStore>),
    }
}

/// Builds the Azure client from the config and the environment, without contacting Azure.
pub fn open_azure(
    azure: &crate::keystore::azure::AzureConfig,
) -> Result<crate::keystore::azure::AzureStore, StartError> {
    crate::keystore::azure::AzureStore::new(azure, crate::keystore::azure::AzureOptions::from_env())
        .map_err(|e| StartError(format!("keystore.azure.keyvault: {e}")))
}

/// Creates each declarative key that does not exist yet; any error but "exists" aborts.
pub fn create_declared_keys(
    store: &dyn KeyStore,
    names: &[String],
    admin: &Identity,
) -> Result<(), StartError> {
    for name in names {
        let key = KeyVersion::generate(
            Algorithm::preferred(),
            admin.as_str(),
            time::OffsetDateTime::now_utc(),
        )
        .map_err(|_| StartError(format!("keys: failed to generate key '{name}'")))?;
        let value = key
            .encode()
            .map_err(|e| StartError(format!("keys: failed to encode key '{name}': {e}")))?;
        match store.create(name, value.as_bytes(), Instant::now() + STARTUP_KEYS_TIMEOUT) {
            Ok(()) | Err(StoreError::Exists) => {}
            Err(e) => return Err(StartError(format!("keys: failed to create key '{name}': {e}"))),
        }
    }
    Ok(())
}

/// The key cache, with sealed copies when `cache.persist` is set: the store is probed
/// (bounded by [`STARTUP_PROBE_TIMEOUT`]); unreachable, the cache starts offline from the
/// sealed copies, otherwise they are re-checked in the background. Also returns the
/// banner's line about it.
fn open_cache(
    cfg: &Config,
    store: Arc<dyn KeyStore>,
    obs: &Arc<Obs>,
) -> Result<(Arc<api::Keys>, Option<String>), StartError> {
    let Some(persist) = &cfg.persist else {
        return Ok((KeyCache::new(store, cfg.cache, api::parse_key), None));
    };
    let sink = Arc::clone(obs);
    let sealed = crate::keystore::sealed::SealedCache::open(
        &persist.path,
        &persist.seal,
        &store.describe(),
        persist.max_age,
        Box::new(move |level, msg| sink.log(level.into(), msg)),
    )
    .map_err(StartError)?;
    let where_ = format!(
        "sealed: {} (max_age {})",
        persist.path.display(),
        crate::gotime::format_duration(persist.max_age)
    );
    let probe = store.status(Instant::now() + STARTUP_PROBE_TIMEOUT);
    let cache = KeyCache::with_sealed(store, cfg.cache, api::parse_key, Arc::new(sealed));
    match probe {
        Ok(_) => {
            cache.recheck_sealed();
            Ok((cache, Some(where_)))
        }
        Err(e) => {
            let served = cache.start_from_sealed();
            let since = cache
                .serving_sealed()
                .map_or_else(String::new, |(_, t)| crate::gotime::format_utc_seconds(t));
            obs.log(
                Level::WARN,
                &format!(
                    "key store unreachable at startup ({e}): serving {served} keys from the sealed cache since {since}"
                ),
            );
            Ok((
                cache,
                Some(format!(
                    "{where_}\nKEY STORE UNREACHABLE: serving {served} keys from the sealed cache since {since}"
                )),
            ))
        }
    }
}

fn build_state(cfg: &Config, keys: Arc<api::Keys>, obs: Arc<Obs>, conns: Arc<ConnStats>) -> State {
    let started = time::OffsetDateTime::now_utc();
    let (policies, routes) = authorization(cfg);
    State {
        build: build_info(),
        policies,
        routes,
        keys,
        started,
        started_at: Instant::now(),
        obs,
        proc: Arc::new(ProcReader::open()),
        cpus: (sys::online_cpus(), sys::usable_cpus()),
        conns,
    }
}

fn tls_config(cfg: &Config) -> Result<Arc<rustls::ServerConfig>, StartError> {
    let password = cfg.tls.password.as_ref().map(|p| p.as_str());
    let identity = tls::load_identity(&cfg.tls.cert, &cfg.tls.key, password).map_err(StartError)?;
    let optional = cfg.api.values().any(|o| o.skip_auth);
    let auth = if cfg.tls.verify_client_chain {
        tls::ClientAuth::Verify {
            roots: tls::load_roots(cfg.tls.ca.as_deref()).map_err(StartError)?,
            optional,
        }
    } else {
        tls::ClientAuth::AnyCertificate { optional, enforce: cfg.tls.enforce_client_validity }
    };
    tls::server_config(identity, &auth).map_err(StartError)
}

fn make_obs(cfg: &Config, inputs: &ReloadInputs) -> Arc<Obs> {
    let obs = Obs::new(
        cfg.log.audit,
        cfg.log.error,
        inputs.log_json,
        inputs.audit_out.clone(),
        inputs.error_out.clone(),
    );
    let obs = match &inputs.audit_batch {
        Some(batch) => obs.with_audit_batch(batch.clone()),
        None => obs,
    };
    match (&inputs.audit_file, &cfg.audit_file) {
        (Some(file), Some(a)) => Arc::new(obs.with_audit_file(file.clone(), a.fail_closed)),
        _ => Arc::new(obs),
    }
}

/// Opens `log.audit_file` when configured.
fn open_audit_file(cfg: &Config) -> Result<Option<Arc<AuditFile>>, StartError> {
    cfg.audit_file
        .as_ref()
        .map(|a| AuditFile::open(&a.path).map(Arc::new).map_err(StartError))
        .transpose()
}

/// The configuration `--dev` runs with: an in-memory store, an ephemeral certificate and a
/// fresh admin API key.
fn dev_setup(
    addr: SocketAddr,
) -> Result<(Config, Arc<rustls::ServerConfig>, Zeroizing<String>, String), StartError> {
    let key = crate::auth::apikey::ApiKey::generate()
        .map_err(|_| StartError("failed to generate an API key".into()))?;
    let mut ips: Vec<IpAddr> =
        vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])];
    if !addr.ip().is_unspecified() && !ips.contains(&addr.ip()) {
        ips.push(addr.ip());
    }
    let (identity, pem) = tls::dev_identity(&ips).map_err(StartError)?;
    let tls = tls::server_config(
        identity,
        &tls::ClientAuth::AnyCertificate { optional: false, enforce: false },
    )
    .map_err(StartError)?;
    let cfg = Config {
        address: None,
        admin_identity: key.identity().to_string(),
        tls: config::TlsConfig {
            key: PathBuf::new(),
            cert: PathBuf::new(),
            password: None,
            verify_client_chain: false,
            ca: None,
            proxy_identities: Vec::new(),
            enforce_client_validity: false,
        },
        policies: Default::default(),
        cache: crate::keystore::cache::CacheConfig::default(),
        // `--dev` never persists keys, sealed or not.
        persist: None,
        api: Default::default(),
        log: config::LogConfig::default(),
        keys: Vec::new(),
        keystore: KeyStoreConfig::Fs { path: PathBuf::new() },
        audit_file: None,
        warnings: Vec::new(),
    };
    Ok((cfg, tls, key.to_string_secret(), pem))
}

/// A config file loaded and validated as `kes server` uses it, before anything is bound or
/// the key store is contacted.
pub struct Loaded {
    pub cfg: Config,
    /// The listen address: `--addr`, else `address`, else [`config::DEFAULT_ADDRESS`].
    pub addr: SocketAddr,
    pub tls: Arc<rustls::ServerConfig>,
}

/// Reads the config file (with `${VAR}` expansion), resolves the listen address and loads
/// the TLS material (files readable, key matching the certificate, client CAs). The one
/// loader behind `kes server` and `kes server --check`.
pub fn load(path: &std::path::Path, addr: Option<&str>) -> Result<Loaded, StartError> {
    let cfg = config::load(path).map_err(|e| StartError(e.to_string()))?;
    let addr = addr
        .map(str::to_string)
        .or_else(|| cfg.address.clone())
        .unwrap_or_else(|| config::DEFAULT_ADDRESS.to_string());
    let addr =
        config::parse_listen_address(&addr).map_err(|e| StartError(format!("address: {e}")))?;
    let tls = tls_config(&cfg)?;
    Ok(Loaded { cfg, addr, tls })
}

/// Loads everything, binds and starts serving in background threads.
pub fn start(opts: Options) -> Result<Server, StartError> {
    sys::one_heap();
    let mut inputs = ReloadInputs {
        config: opts.config.clone(),
        log_json: opts.log_json,
        audit_out: opts.audit_out.clone(),
        audit_batch: None,
        error_out: opts.error_out.clone(),
        audit_file: None,
    };
    if let (true, Some(out)) = (opts.audit_batched, &opts.audit_out) {
        let batch = LineBatch::start(out.clone())
            .map_err(|e| StartError(format!("cannot start the audit writer thread: {e}")))?;
        inputs.audit_batch = Some(batch);
    }
    let (cfg, tls, store, dev_key, dev_pem, addr) = if opts.dev {
        let addr = config::parse_listen_address(opts.addr.as_deref().unwrap_or(DEV_ADDRESS))
            .map_err(StartError)?;
        let (cfg, tls, key, pem) = dev_setup(addr)?;
        let store: Arc<dyn KeyStore> =
            opts.store.clone().unwrap_or_else(|| Arc::new(MemStore::new()));
        (cfg, tls, store, Some(key), Some(pem), addr)
    } else {
        let path = opts.config.as_ref().ok_or_else(|| {
            StartError("no config file specified: use --config FILE, or --dev".into())
        })?;
        let Loaded { cfg, addr, tls } = load(path, opts.addr.as_deref())?;
        let store = match opts.store.clone() {
            Some(s) => s,
            None => open_store(&cfg.keystore)?,
        };
        (cfg, tls, store, None, None, addr)
    };
    create_declared_keys(store.as_ref(), &cfg.keys, &Identity::new(cfg.admin_identity.clone()))?;
    inputs.audit_file = open_audit_file(&cfg)?;
    let obs = make_obs(&cfg, &inputs);
    let keystore_desc = store.describe();
    let conns = Arc::new(ConnStats::default());
    let (keys, sealed_line) = open_cache(&cfg, store, &obs)?;
    let state = build_state(&cfg, keys, obs, conns.clone());

    let listener = TcpListener::bind(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            StartError(format!("cannot listen on {addr}: the address is already in use; stop the other process or choose another port with --addr"))
        } else {
            StartError(format!("cannot listen on {addr}: {e}"))
        }
    })?;
    let addr = listener.local_addr().map_err(|e| StartError(e.to_string()))?;
    let hardened = sys::harden(opts.mlock, opts.seccomp).map_err(StartError)?;

    let banner = Banner {
        keystore: keystore_desc,
        admin: state.policies.admin.clone(),
        addr,
        error_level: cfg.log.error,
        audit_level: cfg.log.audit,
        mlock: hardened.mlock,
        mlock_off: hardened.mlock_off,
        seccomp: hardened.seccomp,
        dev_api_key: dev_key,
        dev_cert_pem: dev_pem,
        warnings: cfg.warnings.clone(),
        sealed: sealed_line,
    };
    let shared = Arc::new(Shared {
        state: RwLock::new(Arc::new(state)),
        generation: AtomicU64::new(0),
        tls: RwLock::new(tls),
        registry: admission::Registry::new(opts.max_connections.max(1)),
        conns,
        stopping: AtomicBool::new(false),
    });
    let accept_shared = shared.clone();
    let accept = std::thread::Builder::new()
        .name("kes-accept".into())
        .stack_size(CONN_STACK_SIZE)
        .spawn(move || accept_loop(listener, accept_shared))
        .map_err(|e| StartError(format!("cannot start the accept thread: {e}")))?;
    let rotation = match &inputs.config {
        Some(path) => {
            Some(spawn_tls_rotation(path.clone(), shared.clone(), opts.tls_reload_period)?)
        }
        None => None,
    };
    sys::notify("READY=1");
    Ok(Server { addr, banner, shared, accept: Mutex::new(Some(accept)), rotation, options: inputs })
}

/// Re-reads the config file every `period` and swaps in a fresh TLS configuration; the
/// rest of the configuration changes only on SIGHUP. Failures keep the old certificate.
fn spawn_tls_rotation(
    path: PathBuf,
    shared: Arc<Shared>,
    period: Duration,
) -> Result<std::thread::Thread, StartError> {
    let handle = std::thread::Builder::new()
        .name("kes-tls-reload".into())
        .stack_size(CONN_STACK_SIZE)
        .spawn(move || {
            let mut next = Instant::now() + period;
            while !shared.stopping.load(Ordering::Acquire) {
                let now = Instant::now();
                if now < next {
                    std::thread::park_timeout(next - now);
                    continue;
                }
                next = Instant::now() + period;
                match config::load(&path)
                    .map_err(|e| StartError(e.to_string()))
                    .and_then(|c| tls_config(&c))
                {
                    Ok(tls) => *shared.tls.write().unwrap_or_else(|e| e.into_inner()) = tls,
                    Err(e) => shared
                        .state()
                        .obs
                        .log(Level::ERROR, &format!("Failed to reload TLS configuration: {e}")),
                }
            }
        })
        .map_err(|e| StartError(format!("cannot start the TLS reload thread: {e}")))?;
    Ok(handle.thread().clone())
}

/// Gives the slot back when a connection thread ends, however it ends.
struct SlotGuard(Arc<Shared>, Arc<admission::Slot>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.registry.release(&self.1);
        self.0.conns.open.store(self.0.registry.open() as u64, Ordering::Relaxed);
    }
}

/// Evictions and refusals since the last admission log line.
#[derive(Default)]
struct AdmissionLog {
    next: Option<Instant>,
    evicted: u64,
    refused: u64,
}

impl AdmissionLog {
    fn record(&mut self, shared: &Shared, outcome: admission::Admit) {
        match outcome {
            admission::Admit::Free => return,
            admission::Admit::Evicted(_) => self.evicted += 1,
            admission::Admit::Refused(_) => self.refused += 1,
        }
        let now = Instant::now();
        if self.next.is_some_and(|t| now < t) {
            return;
        }
        self.next = Some(now + ADMISSION_LOG_PERIOD);
        shared.state().obs.log(
            Level::WARN,
            &format!(
                "http: connection limit reached: evicted {} unproductive connection(s), refused {} (at most one line per {}s; see kes_http_connections_* in /v1/metrics)",
                self.evicted,
                self.refused,
                ADMISSION_LOG_PERIOD.as_secs()
            ),
        );
        self.evicted = 0;
        self.refused = 0;
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut log = AdmissionLog::default();
    let kept = workers::Workers::start(
        workers::KEPT_THREADS.min(shared.registry.cap()),
        CONN_THREAD_NAME,
        CONN_STACK_SIZE,
        serve_admitted,
    );
    loop {
        // `accept` returns the peer's address: no `getpeername` per connection.
        let accepted = listener.accept();
        if shared.stopping.load(Ordering::Acquire) {
            break;
        }
        let Ok((stream, peer)) = accepted else { continue };
        let accepted = Instant::now();
        let (outcome, slot) = shared.registry.admit(stream, peer.ip());
        let counters = &shared.conns;
        match outcome {
            admission::Admit::Free => {}
            admission::Admit::Evicted(phase) => {
                let i = match phase {
                    admission::Phase::Handshake => 0,
                    admission::Phase::Head => 1,
                    admission::Phase::Body => 2,
                    _ => 3,
                };
                counters.evicted[i].fetch_add(1, Ordering::Relaxed);
            }
            admission::Admit::Refused(reason) => {
                let i = admission::Refusal::ALL.iter().position(|r| *r == reason).unwrap_or(0);
                counters.refused[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        log.record(&shared, outcome);
        // A refused stream was dropped (closed) by the registry.
        let Some(slot) = slot else { continue };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        counters.open.store(shared.registry.open() as u64, Ordering::Relaxed);
        let job = (SlotGuard(shared.clone(), slot), accepted);
        let Err(job) = kept.give(job) else { continue };
        if let Err(e) = workers::spawn_one(job, CONN_THREAD_NAME, CONN_STACK_SIZE, serve_admitted) {
            shared
                .state()
                .obs
                .log(Level::ERROR, &format!("http: cannot start a connection thread: {e}"));
        }
    }
    kept.stop();
}

/// The name of every connection thread.
const CONN_THREAD_NAME: &str = "kes-conn";

/// What a connection thread does with an admitted connection; the slot is given back
/// when `job` is dropped.
fn serve_admitted(job: (SlotGuard, Instant)) {
    let (guard, accepted) = job;
    conn::serve(&guard.1, &guard.0, accepted);
}

impl Server {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Re-reads the config file and swaps state and TLS config. The listen address stays.
    /// Returns what changed, in one line; on failure the old configuration keeps serving
    /// and systemd's status line says why.
    pub fn reload(&self) -> Result<String, StartError> {
        let Some(path) = &self.options.config else {
            return Err(StartError(
                "nothing to reload: the server runs without a config file".into(),
            ));
        };
        sys::notify("RELOADING=1");
        let result = self.rebuild(path);
        let status = match &result {
            Ok(changes) => format!("STATUS=Reloaded: {changes}"),
            Err(e) => {
                format!("STATUS=Reload failed, still serving the previous configuration: {e}")
            }
        };
        sys::notify(&format!("READY=1\n{}", status.replace('\n', " ")));
        result
    }

    fn rebuild(&self, path: &std::path::Path) -> Result<String, StartError> {
        let (Loaded { cfg, tls, .. }, store) = load_for_reload(path)?;
        create_declared_keys(
            store.as_ref(),
            &cfg.keys,
            &Identity::new(cfg.admin_identity.clone()),
        )?;
        // The audit file follows logrotate: the path is reopened, the chain continues.
        match (&self.options.audit_file, &cfg.audit_file) {
            (Some(file), Some(a)) => file.reopen(&a.path).map_err(|e| {
                StartError(format!("log.audit_file: cannot reopen '{}': {}", a.path.display(), e.0))
            })?,
            (None, None) => {}
            _ => {
                return Err(StartError(
                    "log.audit_file: adding or removing the audit file takes a restart".into(),
                ));
            }
        }
        let obs = make_obs(&cfg, &self.options);
        let (keys, _) = open_cache(&cfg, store, &obs)?;
        let state = build_state(&cfg, keys, obs, self.shared.conns.clone());
        let changes = policy_changes(&self.shared.state().policies, &state.policies);
        let old = std::mem::replace(
            &mut *self.shared.state.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(state),
        );
        self.shared.generation.fetch_add(1, Ordering::Release);
        *self.shared.tls.write().unwrap_or_else(|e| e.into_inner()) = tls;
        old.keys.shutdown();
        Ok(changes)
    }

    /// Stops accepting; open connections end on their own timeouts.
    pub fn shutdown(&self) {
        sys::notify("STOPPING=1");
        self.shared.stopping.store(true, Ordering::Release);
        if let Some(t) = &self.rotation {
            t.unpark();
        }
        let _ = std::net::TcpStream::connect_timeout(&wake_addr(self.addr), Duration::from_secs(1));
        if let Some(h) = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
        self.shared.state().keys.shutdown();
        // Every queued audit line reaches the disk before the process exits.
        if let Some(file) = &self.options.audit_file {
            file.close();
        }
        // And stdout: what is queued now, later lines (requests still finishing) at once.
        if let Some(batch) = &self.options.audit_batch {
            batch.close();
        }
    }

    /// Blocks until the accept loop ends.
    pub fn wait(&self) {
        let handle = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn wake_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = if addr.is_ipv4() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}
