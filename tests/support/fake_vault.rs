//! A fake Azure Key Vault (secrets API 7.x), Entra ID token endpoint and managed-identity
//! endpoints (IMDS and App Service), for tests and for running clients against locally.
//!
//! It listens on 127.0.0.1 only: HTTPS (vault + Entra ID, with a test CA generated at start
//! and written to a temp file) and plain HTTP (IMDS + App Service, as on Azure). Answers
//! follow the recorded real service in `tests/fixtures/azure/` (status codes, headers, JSON
//! shapes and field order, error envelopes, the 401 challenge, soft-delete states, paging
//! with `nextLink`), checked by `tests/azure_replay.rs` and by the official Python SDK
//! (`tests/azure_sdk/certify.py`).
//!
//! Faults are injected per operation for the next N requests ([`FakeVault::inject`]), or
//! over HTTP on a standalone instance (`POST /_fake/fault`, see [`control`]). Every request
//! is counted per operation, so tests can assert calls per key and retry counts.
//!
//! Self-contained on purpose: it depends on no code of the `kes` crate, so it can be
//! included with `#[path]` by tests and by `examples/fake_vault.rs`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use serde_json::Value;

/// Key Vault's page size for every listing (`azure-rest.md` §5).
pub const PAGE_SIZE: usize = 25;
/// Key Vault's `recoverableDays` default, as recorded.
const RECOVERABLE_DAYS: i64 = 90;
const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 256;
const MAX_HEAD_BYTES: usize = 64 << 10;
const MAX_BODY_BYTES: usize = 1 << 20;
/// Longer than any client pool's idle age, so clients see closes only when injected.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Key Vault secret values are at most 25 KB (`azure-rest.md` §4.2).
const MAX_VALUE_BYTES: usize = 25 * 1024;
/// Requests kept in the log for inspection.
const MAX_LOGGED: usize = 100_000;

/// The operation a request is counted under and faults are targeted at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `GET /secrets/{name}[/{version}]`.
    Get,
    /// `PUT /secrets/{name}`.
    Set,
    /// `DELETE /secrets/{name}` (soft delete).
    Delete,
    /// `DELETE /deletedsecrets/{name}`.
    Purge,
    /// `GET /secrets`.
    List,
    /// `GET /secrets/{name}/versions`.
    Versions,
    /// `GET /deletedsecrets/{name}`.
    GetDeleted,
    /// `GET /deletedsecrets`.
    ListDeleted,
    /// `POST /deletedsecrets/{name}/recover`.
    Recover,
    /// `PATCH /secrets/{name}/{version}`.
    Update,
    /// `POST /{tenant}/oauth2/v2.0/token`.
    Token,
    /// `GET /metadata/identity/oauth2/token` (plain HTTP listener).
    Imds,
    /// `GET /msi/token` (plain HTTP listener).
    AppService,
    /// OpenID configuration and instance discovery.
    Discovery,
    /// Anything else on the vault listener, e.g. `GET /` (a status probe).
    Probe,
    /// `/_fake/*` control requests.
    Control,
    /// Fault target only: every vault data-plane operation.
    Any,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Purge => "purge",
            Op::List => "list",
            Op::Versions => "versions",
            Op::GetDeleted => "get-deleted",
            Op::ListDeleted => "list-deleted",
            Op::Recover => "recover",
            Op::Update => "update",
            Op::Token => "token",
            Op::Imds => "imds",
            Op::AppService => "app-service",
            Op::Discovery => "discovery",
            Op::Probe => "probe",
            Op::Control => "control",
            Op::Any => "any",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        const ALL: [Op; 17] = [
            Op::Get,
            Op::Set,
            Op::Delete,
            Op::Purge,
            Op::List,
            Op::Versions,
            Op::GetDeleted,
            Op::ListDeleted,
            Op::Recover,
            Op::Update,
            Op::Token,
            Op::Imds,
            Op::AppService,
            Op::Discovery,
            Op::Probe,
            Op::Control,
            Op::Any,
        ];
        ALL.into_iter().find(|o| o.name() == s)
    }

    fn is_vault_data(self) -> bool {
        matches!(
            self,
            Op::Get
                | Op::Set
                | Op::Delete
                | Op::Purge
                | Op::List
                | Op::Versions
                | Op::GetDeleted
                | Op::ListDeleted
                | Op::Recover
                | Op::Update
                | Op::Probe
        )
    }
}

/// What to do instead of (or before) the normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Vault: 401 with the challenge even for a valid token. Token endpoint: 401
    /// `invalid_client`. Managed identity: 400.
    Unauthorized,
    /// 403 `Forbidden` / `ForbiddenByPolicy`.
    ForbiddenByPolicy,
    /// 404 `SecretNotFound`.
    NotFound,
    /// 409 `Conflict` / `ObjectIsDeletedButRecoverable`.
    DeletedButRecoverable,
    /// 409 `Conflict` / `ObjectIsBeingDeleted`.
    BeingDeleted,
    /// 429 `Throttled`, with the given `Retry-After` header value or none.
    Throttled { retry_after: Option<String> },
    /// A 5xx (or any) status with a service error body and optional `Retry-After`.
    Status { status: u16, retry_after: Option<String> },
    /// Answer normally after this extra delay.
    Delay(Duration),
    /// Close the TCP connection with a reset instead of answering.
    Reset,
    /// Any answer, verbatim.
    Raw { status: u16, content_type: String, body: String },
}

/// One logged request.
#[derive(Debug, Clone)]
pub struct Logged {
    pub op: Op,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub authorized: bool,
    pub at: Instant,
}

/// A secret version as the fake holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub id: String,
    pub value: String,
    pub created: i64,
    pub enabled: bool,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
}

/// Start-up settings. [`Config::default`] has fixed test credentials.
#[derive(Debug, Clone)]
pub struct Config {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// The assertion accepted for workload identity (the federated token file's content).
    pub federated_token: String,
    /// DER of the certificates registered on the app: a client assertion signed by the key
    /// of one of them (found by its `x5t#S256` header) is accepted.
    pub client_certificates: Vec<Vec<u8>>,
    /// User-assigned managed identity accepted by IMDS/App Service (`client_id=`).
    pub managed_identity_client_id: String,
    /// Whether requests without `client_id` (system-assigned identity) get tokens.
    pub system_assigned_identity: bool,
    /// The App Service `X-IDENTITY-HEADER` secret.
    pub identity_header: String,
    pub token_lifetime: Duration,
    /// How long a deleted secret stays in the "being deleted" window.
    pub delete_delay: Duration,
    /// How long a recovered secret stays invisible.
    pub recover_delay: Duration,
    /// Added before every answer.
    pub latency: Duration,
    /// The `authorization` URL base in the challenge (the real service names Microsoft's).
    pub challenge_authority: String,
    /// The token resource of the vault.
    pub resource: String,
    /// HTTPS port (0 = any free port).
    pub port: u16,
    /// Plain HTTP port for the managed-identity endpoints (0 = any free port).
    pub http_port: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            client_id: "0e3c0a2f-6d3c-4f55-9c6b-2f0d6b7c1a11".into(),
            client_secret: "fake-client-secret-value".into(),
            federated_token: "eyJhbGciOiJSUzI1NiJ9.fake-service-account-token.sig".into(),
            client_certificates: Vec::new(),
            managed_identity_client_id: "5a8b7c1d-0000-4000-8000-00000000a11d".into(),
            system_assigned_identity: true,
            identity_header: "fake-identity-header-secret".into(),
            token_lifetime: Duration::from_secs(3599),
            delete_delay: Duration::ZERO,
            recover_delay: Duration::ZERO,
            latency: Duration::ZERO,
            challenge_authority: "https://login.microsoftonline.com".into(),
            resource: "https://vault.azure.net".into(),
            port: 0,
            http_port: 0,
        }
    }
}

#[derive(Debug, Clone)]
struct Version {
    id: String,
    value: String,
    created: i64,
    updated: i64,
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
    content_type: Option<String>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy)]
enum EntryState {
    Active,
    BeingDeleted { until: Instant, deleted_date: i64 },
    Deleted { deleted_date: i64 },
    Recovering { until: Instant },
}

#[derive(Debug, Clone)]
struct Entry {
    /// The name as first created (Key Vault keeps the case; lookups ignore it).
    name: String,
    /// In creation order: the last is the latest.
    versions: Vec<Version>,
    state: EntryState,
}

impl Entry {
    fn settle(&mut self, now: Instant) {
        match self.state {
            EntryState::BeingDeleted { until, deleted_date } if now >= until => {
                self.state = EntryState::Deleted { deleted_date }
            }
            EntryState::Recovering { until } if now >= until => self.state = EntryState::Active,
            _ => {}
        }
    }
}

struct TokenInfo {
    resource: String,
    expires: Instant,
}

struct State {
    cfg: Config,
    secrets: BTreeMap<String, Entry>,
    tokens: HashMap<String, TokenInfo>,
    faults: HashMap<Op, VecDeque<(Fault, usize)>>,
    counts: HashMap<Op, usize>,
    log: Vec<Logged>,
    op_latency: HashMap<Op, Duration>,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    active: AtomicUsize,
    /// Requests inside their configured latency right now, and the most seen at once since
    /// the last `reset_counts` (proves requests overlap without timing the client).
    waiting: AtomicUsize,
    most_waiting: AtomicUsize,
    /// Clones of live connections (by id), shut down when the fake is dropped.
    conns: Mutex<HashMap<usize, TcpStream>>,
    next_conn: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake. Dropping it stops the listeners, closes connections and removes the
/// temp directory with the CA file.
pub struct FakeVault {
    shared: Arc<Shared>,
    https_port: u16,
    http_port: u16,
    dir: PathBuf,
    ca_file: PathBuf,
    ca_pem: String,
    federated_token_file: PathBuf,
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loops.
        let _ = TcpStream::connect(("127.0.0.1", self.https_port));
        let _ = TcpStream::connect(("127.0.0.1", self.http_port));
        for (_, c) in self.shared.conns.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static INSTANCE: AtomicUsize = AtomicUsize::new(0);

impl FakeVault {
    pub fn start() -> FakeVault {
        Self::start_with(Config::default())
    }

    pub fn start_with(cfg: Config) -> FakeVault {
        let (ca_pem, server_config) = make_tls();
        let dir = std::env::temp_dir().join(format!(
            "kes-fake-vault-{}-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::SeqCst),
            &random_hex(4)
        ));
        std::fs::create_dir_all(&dir).expect("create fake vault temp dir");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).expect("write CA file");
        let federated_token_file = dir.join("azure-identity-token");
        std::fs::write(&federated_token_file, &cfg.federated_token).expect("write token file");

        let https = TcpListener::bind(("127.0.0.1", cfg.port)).expect("bind fake vault HTTPS port");
        let http =
            TcpListener::bind(("127.0.0.1", cfg.http_port)).expect("bind fake vault HTTP port");
        let https_port = https.local_addr().unwrap().port();
        let http_port = http.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                cfg,
                secrets: BTreeMap::new(),
                tokens: HashMap::new(),
                faults: HashMap::new(),
                counts: HashMap::new(),
                log: Vec::new(),
                op_latency: HashMap::new(),
            }),
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            most_waiting: AtomicUsize::new(0),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicUsize::new(0),
        });
        let tls = Arc::new(server_config);
        for (listener, tls) in [(https, Some(tls)), (http, None)] {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("fake-vault-accept".into())
                .spawn(move || accept_loop(listener, tls, shared))
                .expect("spawn accept loop");
        }
        FakeVault { shared, https_port, http_port, dir, ca_file, ca_pem, federated_token_file }
    }

    /// `https://127.0.0.1:<port>`: the vault endpoint and the Entra ID authority.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.https_port)
    }

    /// The same server under the name `localhost`.
    pub fn localhost_url(&self) -> String {
        format!("https://localhost:{}", self.https_port)
    }

    /// Entra ID authority base (token URL = `<authority>/<tenant>/oauth2/v2.0/token`).
    pub fn authority(&self) -> String {
        self.url()
    }

    /// IMDS base (`http://127.0.0.1:<port>`), as `AZURE_POD_IDENTITY_AUTHORITY_HOST`.
    pub fn imds_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// App Service `IDENTITY_ENDPOINT`.
    pub fn app_service_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/msi/token", self.http_port)
    }

    pub fn https_port(&self) -> u16 {
        self.https_port
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// PEM file with the test CA that signed the server certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// File holding the accepted workload-identity assertion.
    pub fn federated_token_file(&self) -> &Path {
        &self.federated_token_file
    }

    pub fn config(&self) -> Config {
        self.shared.lock().cfg.clone()
    }

    pub fn tenant_id(&self) -> String {
        self.config().tenant_id
    }

    pub fn client_id(&self) -> String {
        self.config().client_id
    }

    pub fn client_secret(&self) -> String {
        self.config().client_secret
    }

    /// Registers a certificate (DER) on the app, as uploading it in the portal does.
    pub fn register_client_certificate(&self, der: &[u8]) {
        self.shared.lock().cfg.client_certificates.push(der.to_vec());
    }

    /// Injects `fault` for the next `times` requests of `op` (`Op::Any`: any vault
    /// data-plane request). Faults queue per operation in injection order.
    pub fn inject(&self, op: Op, fault: Fault, times: usize) {
        self.shared.lock().faults.entry(op).or_default().push_back((fault, times));
    }

    /// Injects `fault` for every request of `op` until [`FakeVault::clear_faults`].
    pub fn inject_forever(&self, op: Op, fault: Fault) {
        self.inject(op, fault, usize::MAX);
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Delay before every answer (the cold-key benchmark uses 40 ms).
    pub fn set_latency(&self, d: Duration) {
        self.shared.lock().cfg.latency = d;
    }

    /// Extra delay before every answer to `op`.
    pub fn set_op_latency(&self, op: Op, d: Duration) {
        self.shared.lock().op_latency.insert(op, d);
    }

    /// Lifetime (`expires_in`) of tokens issued from now on; they also expire here.
    pub fn set_token_lifetime(&self, d: Duration) {
        self.shared.lock().cfg.token_lifetime = d;
    }

    /// Invalidates every issued token (the vault then answers 401 to them).
    pub fn revoke_tokens(&self) {
        self.shared.lock().tokens.clear();
    }

    /// Tokens issued and not yet expired.
    pub fn live_tokens(&self) -> usize {
        let now = Instant::now();
        self.shared.lock().tokens.values().filter(|t| t.expires > now).count()
    }

    pub fn set_delete_delay(&self, d: Duration) {
        self.shared.lock().cfg.delete_delay = d;
    }

    pub fn set_recover_delay(&self, d: Duration) {
        self.shared.lock().cfg.recover_delay = d;
    }

    /// Requests seen for `op` (whatever the answer was).
    pub fn count(&self, op: Op) -> usize {
        self.shared.lock().counts.get(&op).copied().unwrap_or(0)
    }

    pub fn counts(&self) -> BTreeMap<Op, usize> {
        self.shared.lock().counts.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// The most requests that were inside their latency at the same time since the last
    /// [`FakeVault::reset_counts`]: 2 means two requests overlapped on the wire.
    pub fn most_concurrent(&self) -> usize {
        self.shared.most_waiting.load(Ordering::SeqCst)
    }

    pub fn reset_counts(&self) {
        self.shared.most_waiting.store(0, Ordering::SeqCst);
        let mut st = self.shared.lock();
        st.counts.clear();
        st.log.clear();
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.shared.lock().log.clone()
    }

    /// Every version of `name` in creation order (empty when unknown or deleted).
    pub fn versions(&self, name: &str) -> Vec<VersionInfo> {
        let mut st = self.shared.lock();
        let now = Instant::now();
        match st.secrets.get_mut(&name.to_ascii_lowercase()) {
            Some(e) => {
                e.settle(now);
                e.versions
                    .iter()
                    .map(|v| VersionInfo {
                        id: v.id.clone(),
                        value: v.value.clone(),
                        created: v.created,
                        enabled: v.enabled,
                        nbf: v.nbf,
                        exp: v.exp,
                    })
                    .collect()
            }
            None => Vec::new(),
        }
    }

    /// The values of `name` in creation order.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.versions(name).into_iter().map(|v| v.value).collect()
    }

    /// Names of active secrets, sorted case-insensitively as the service lists them.
    pub fn names(&self) -> Vec<String> {
        let now = Instant::now();
        let mut st = self.shared.lock();
        st.secrets
            .values_mut()
            .filter_map(|e| {
                e.settle(now);
                matches!(e.state, EntryState::Active).then(|| e.name.clone())
            })
            .collect()
    }

    /// Whether `name` is soft-deleted (in or after the deletion window, not purged).
    pub fn is_deleted(&self, name: &str) -> bool {
        let now = Instant::now();
        let mut st = self.shared.lock();
        st.secrets.get_mut(&name.to_ascii_lowercase()).is_some_and(|e| {
            e.settle(now);
            matches!(e.state, EntryState::Deleted { .. } | EntryState::BeingDeleted { .. })
        })
    }

    /// Adds a version with a given `created` time (and id, if given) directly, as if set
    /// long ago; returns the version id.
    pub fn insert_version(
        &self,
        name: &str,
        value: &str,
        created: i64,
        id: Option<&str>,
    ) -> String {
        let id = id.map(str::to_string).unwrap_or_else(|| random_hex(16));
        let mut st = self.shared.lock();
        let e = st.secrets.entry(name.to_ascii_lowercase()).or_insert_with(|| Entry {
            name: name.to_string(),
            versions: Vec::new(),
            state: EntryState::Active,
        });
        e.state = EntryState::Active;
        e.versions.push(Version {
            id: id.clone(),
            value: value.to_string(),
            created,
            updated: created,
            enabled: true,
            nbf: None,
            exp: None,
            content_type: None,
            tags: None,
        });
        id
    }

    /// Changes attributes of a version (`None` = the latest).
    pub fn set_attributes(
        &self,
        name: &str,
        version: Option<&str>,
        enabled: bool,
        nbf: Option<i64>,
        exp: Option<i64>,
    ) {
        let mut st = self.shared.lock();
        if let Some(e) = st.secrets.get_mut(&name.to_ascii_lowercase()) {
            let v = match version {
                Some(id) => e.versions.iter_mut().find(|v| v.id == id),
                None => e.versions.last_mut(),
            };
            if let Some(v) = v {
                v.enabled = enabled;
                v.nbf = nbf;
                v.exp = exp;
            }
        }
    }

    /// Puts `name` into the soft-deleted state directly (as an old release would leave it).
    pub fn soft_delete(&self, name: &str) {
        let mut st = self.shared.lock();
        if let Some(e) = st.secrets.get_mut(&name.to_ascii_lowercase()) {
            e.state = EntryState::Deleted { deleted_date: unix_now() };
        }
    }
}

// ---------------------------------------------------------------------------------------
// TLS material

fn make_tls() -> (String, rustls::ServerConfig) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "kes fake vault test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("server key");
    // `kes.vault.test` (a reserved, never-resolving name) lets tests reach the fake through
    // a CONNECT proxy under a non-loopback name.
    let names =
        vec!["127.0.0.1".to_string(), "localhost".to_string(), "kes.vault.test".to_string()];
    let mut p = CertificateParams::new(names).expect("params");
    p.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, &issuer).expect("server cert");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let der_key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone(), ca_cert.der().clone()], der_key)
        .expect("server TLS config");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca_cert.pem(), cfg)
}

// ---------------------------------------------------------------------------------------
// Connections

enum Conn {
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
    Plain(TcpStream),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Tls(s) => &s.sock,
            Conn::Plain(s) => s,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tls(s) => s.read(buf),
            Conn::Plain(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tls(s) => s.write(buf),
            Conn::Plain(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Tls(s) => s.flush(),
            Conn::Plain(s) => s.flush(),
        }
    }
}

fn accept_loop(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if shared.active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            continue;
        }
        let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
        let _ = stream.set_nodelay(true);
        let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
        if let Ok(c) = stream.try_clone() {
            shared.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(id, c);
        }
        let conn = match &tls {
            Some(cfg) => match rustls::ServerConnection::new(Arc::clone(cfg)) {
                Ok(sc) => Conn::Tls(Box::new(rustls::StreamOwned::new(sc, stream))),
                Err(_) => continue,
            },
            None => Conn::Plain(stream),
        };
        let shared2 = Arc::clone(&shared);
        shared.active.fetch_add(1, Ordering::SeqCst);
        let spawned = thread::Builder::new().name("fake-vault-conn".into()).spawn(move || {
            serve(conn, &shared2, id);
            shared2.active.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            shared.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        }
    }
}

/// A parsed request.
pub struct Req {
    pub method: String,
    /// Path without the query, percent-decoded per segment by the router.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A response to write.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

enum Action {
    Answer(Resp),
    Reset,
}

/// Serves one connection; on return the socket closes (its registry clone is dropped
/// first, so the close really reaches the client).
fn serve(conn: Conn, shared: &Shared, id: usize) {
    let reset = serve_requests(conn, shared);
    let clone = shared.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    drop(clone);
    if let Some(conn) = reset {
        // SO_LINGER 0, then close: the kernel answers with RST instead of FIN.
        let _ = nix::sys::socket::setsockopt(
            conn.tcp(),
            nix::sys::socket::sockopt::Linger,
            &nix::libc::linger { l_onoff: 1, l_linger: 0 },
        );
        drop(conn);
    }
}

/// Answers requests until the connection ends; returns the connection when it is to be
/// reset rather than closed.
fn serve_requests(mut conn: Conn, shared: &Shared) -> Option<Conn> {
    let mut buf: Vec<u8> = Vec::new();
    let is_tls = matches!(conn, Conn::Tls(_));
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return None;
        }
        let req = match read_request(&mut conn, &mut buf) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(status) => {
                let _ = write_response(
                    &mut conn,
                    &json_resp(
                        status,
                        r#"{"error":{"code":"BadRequest","message":"Malformed request"}}"#.into(),
                    ),
                    true,
                );
                return None;
            }
        };
        let close = req.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        match handle(shared, &req, is_tls) {
            Action::Reset => return Some(conn),
            Action::Answer(resp) => {
                if write_response(&mut conn, &resp, close).is_err() || close {
                    return None;
                }
            }
        }
    }
}

/// Reads one request; `Ok(None)` on a clean close, `Err(status)` on a malformed one.
fn read_request(conn: &mut Conn, buf: &mut Vec<u8>) -> Result<Option<Req>, u16> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(431);
        }
        let mut chunk = [0u8; 16 << 10];
        match conn.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Ok(None),
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(&buf[..head_end]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(400),
    }
    let method = parsed.method.unwrap_or("").to_string();
    let target = parsed.path.unwrap_or("/").to_string();
    let hdrs: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    let chunked = hdrs
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        buf.drain(..head_end);
        read_chunked(conn, buf)?
    } else {
        let len: usize = match hdrs.iter().find(|(k, _)| k == "content-length") {
            Some((_, v)) => v.trim().parse().map_err(|_| 400u16)?,
            None => 0,
        };
        if len > MAX_BODY_BYTES {
            return Err(413);
        }
        while buf.len() < head_end + len {
            if !fill(conn, buf) {
                return Ok(None);
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        body
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), parse_query(q)),
        None => (target, Vec::new()),
    };
    Ok(Some(Req { method, path, query, headers: hdrs, body }))
}

/// Reads more bytes into `buf`; false on EOF or error.
fn fill(conn: &mut Conn, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 << 10];
    match conn.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Decodes a chunked body at the start of `buf` (RFC 9112 §7.1), trailers ignored.
fn read_chunked(conn: &mut Conn, buf: &mut Vec<u8>) -> Result<Vec<u8>, u16> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            if buf.len() > 1024 || !fill(conn, buf) {
                return Err(400);
            }
        };
        let size_str = std::str::from_utf8(&buf[..line_end]).map_err(|_| 400u16)?;
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| 400u16)?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailer section up to the empty line.
            loop {
                if let Some(i) = find(buf, b"\r\n") {
                    let empty = i == 0;
                    buf.drain(..i + 2);
                    if empty {
                        return Ok(body);
                    }
                } else if buf.len() > MAX_HEAD_BYTES || !fill(conn, buf) {
                    return Err(400);
                }
            }
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(413);
        }
        while buf.len() < size + 2 {
            if !fill(conn, buf) {
                return Err(400);
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn write_response(conn: &mut Conn, r: &Resp, close: bool) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (k, v) in &r.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if r.status != 204 && r.status != 304 {
        out.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    out.push_str(&format!("Date: {}\r\n", http_date(SystemTime::now())));
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&r.body);
    conn.write_all(&bytes)?;
    conn.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

// ---------------------------------------------------------------------------------------
// Routing

fn classify(req: &Req, is_tls: bool) -> Op {
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let m = req.method.as_str();
    if req.path.starts_with("/_fake/") {
        return Op::Control;
    }
    if !is_tls {
        return match req.path.as_str() {
            "/metadata/identity/oauth2/token" => Op::Imds,
            "/msi/token" => Op::AppService,
            _ => Op::Probe,
        };
    }
    match (m, segs.as_slice()) {
        ("POST", [_, "oauth2", "v2.0", "token"]) => Op::Token,
        ("GET", [_, "v2.0", ".well-known", "openid-configuration"])
        | ("GET", ["common", "discovery", "instance"]) => Op::Discovery,
        ("GET", ["secrets"]) | ("GET", ["secrets", ""]) => Op::List,
        ("GET", ["secrets", _, "versions"]) => Op::Versions,
        ("GET", ["secrets", _]) | ("GET", ["secrets", _, _]) => Op::Get,
        ("PUT", ["secrets", _]) => Op::Set,
        ("PATCH", ["secrets", _, _]) | ("PATCH", ["secrets", _]) => Op::Update,
        ("DELETE", ["secrets", _]) => Op::Delete,
        ("GET", ["deletedsecrets"]) => Op::ListDeleted,
        ("GET", ["deletedsecrets", _]) => Op::GetDeleted,
        ("DELETE", ["deletedsecrets", _]) => Op::Purge,
        ("POST", ["deletedsecrets", _, "recover"]) => Op::Recover,
        _ => Op::Probe,
    }
}

fn handle(shared: &Shared, req: &Req, is_tls: bool) -> Action {
    let op = classify(req, is_tls);
    let (fault, latency) = {
        let mut st = shared.lock();
        *st.counts.entry(op).or_insert(0) += 1;
        let mut fault = take_fault(&mut st.faults, op);
        if fault.is_none() && op.is_vault_data() {
            fault = take_fault(&mut st.faults, Op::Any);
        }
        let latency = st.cfg.latency + st.op_latency.get(&op).copied().unwrap_or_default();
        (fault, latency)
    };
    if op != Op::Control && !latency.is_zero() {
        let now = shared.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        shared.most_waiting.fetch_max(now, Ordering::SeqCst);
        thread::sleep(latency);
        shared.waiting.fetch_sub(1, Ordering::SeqCst);
    }
    let host = req.header("host").unwrap_or("127.0.0.1").to_string();
    let base = format!("https://{host}");
    let resp = match fault {
        Some(Fault::Reset) => {
            log_request(shared, op, req, 0, false);
            return Action::Reset;
        }
        Some(Fault::Delay(d)) => {
            thread::sleep(d);
            route(shared, req, op, &base)
        }
        Some(f) => (fault_response(shared, op, &f), false),
        None => route(shared, req, op, &base),
    };
    log_request(shared, op, req, resp.0.status, resp.1);
    Action::Answer(resp.0)
}

fn take_fault(faults: &mut HashMap<Op, VecDeque<(Fault, usize)>>, op: Op) -> Option<Fault> {
    let q = faults.get_mut(&op)?;
    let (f, n) = q.front_mut()?;
    let fault = f.clone();
    if *n != usize::MAX {
        *n -= 1;
    }
    if *n == 0 {
        q.pop_front();
    }
    Some(fault)
}

fn log_request(shared: &Shared, op: Op, req: &Req, status: u16, authorized: bool) {
    let mut st = shared.lock();
    if st.log.len() < MAX_LOGGED {
        st.log.push(Logged {
            op,
            method: req.method.clone(),
            path: req.path.clone(),
            status,
            authorized,
            at: Instant::now(),
        });
    }
}

fn fault_response(shared: &Shared, op: Op, f: &Fault) -> Resp {
    let token_like = matches!(op, Op::Token | Op::Imds | Op::AppService | Op::Discovery);
    let cfg = shared.lock().cfg.clone();
    match f {
        Fault::Unauthorized if op == Op::Token => entra_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
        ),
        Fault::Unauthorized if token_like => json_resp(
            400,
            r#"{"error":"invalid_request","error_description":"Identity not found"}"#.into(),
        ),
        Fault::Unauthorized => {
            challenge(&cfg, "AKV10000: Request is missing a Bearer or PoP token.")
        }
        Fault::ForbiddenByPolicy => kv_error(
            403,
            "Forbidden",
            &format!(
                "The user, group or application 'appid={};oid=4ae3c9b1-0000-4000-8000-000000000000;iss=https://sts.windows.net/{}/' does not have secrets {} permission on key vault 'fakevault;location=westus'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                cfg.client_id,
                cfg.tenant_id,
                op.name()
            ),
            Some("ForbiddenByPolicy"),
        ),
        Fault::NotFound => kv_error(
            404,
            "SecretNotFound",
            "A secret with (name/id) injected was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
            None,
        ),
        Fault::DeletedButRecoverable => kv_error(
            409,
            "Conflict",
            "Secret is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.",
            Some("ObjectIsDeletedButRecoverable"),
        ),
        Fault::BeingDeleted => kv_error(
            409,
            "Conflict",
            "Secret is currently being deleted.",
            Some("ObjectIsBeingDeleted"),
        ),
        Fault::Throttled { retry_after } => {
            let mut r = if token_like {
                json_resp(429, r#"{"error":"temporarily_unavailable","error_description":"AADSTS50196: The server terminated an operation because it encountered a client request loop."}"#.into())
            } else {
                kv_error(
                    429,
                    "Throttled",
                    "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
                    None,
                )
            };
            if let Some(v) = retry_after {
                r.headers.push(("Retry-After".into(), v.clone()));
            }
            r
        }
        Fault::Status { status, retry_after } => {
            let mut r = kv_error(
                *status,
                "ServiceUnavailable",
                "The service is temporarily unavailable. Please retry.",
                None,
            );
            if let Some(v) = retry_after {
                r.headers.push(("Retry-After".into(), v.clone()));
            }
            r
        }
        Fault::Raw { status, content_type, body } => Resp {
            status: *status,
            headers: vec![("Content-Type".into(), content_type.clone())],
            body: body.clone().into_bytes(),
        },
        Fault::Delay(_) | Fault::Reset => unreachable!("handled by the caller"),
    }
}

/// The answer plus whether the request carried a valid token.
fn route(shared: &Shared, req: &Req, op: Op, base: &str) -> (Resp, bool) {
    match op {
        Op::Control => (control(shared, req), false),
        Op::Token => (token_endpoint(shared, req, base), false),
        Op::Discovery => (discovery(req, base), false),
        Op::Imds => (imds(shared, req), false),
        Op::AppService => (app_service(shared, req), false),
        _ => {
            let mut st = shared.lock();
            if let Err(r) = authorize(&mut st, req) {
                return (r, false);
            }
            (vault(&mut st, req, op, base), true)
        }
    }
}

fn authorize(st: &mut State, req: &Req) -> Result<(), Resp> {
    let Some(h) = req.header("authorization") else {
        return Err(challenge(&st.cfg, "AKV10000: Request is missing a Bearer or PoP token."));
    };
    let token = h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")).unwrap_or("");
    let now = Instant::now();
    match st.tokens.get(token) {
        Some(t) if t.expires <= now => Err(challenge(
            &st.cfg,
            "AKV10000: Request is missing a Bearer or PoP token. (token expired)",
        )),
        Some(t) if t.resource.trim_end_matches('/') != st.cfg.resource => {
            Err(challenge(&st.cfg, "AKV10022: Invalid audience."))
        }
        Some(_) => Ok(()),
        None => Err(challenge(&st.cfg, "AKV10032: Invalid issuer.")),
    }
}

fn challenge(cfg: &Config, message: &str) -> Resp {
    let mut r = kv_error(401, "Unauthorized", message, None);
    r.headers.push((
        "WWW-Authenticate".into(),
        format!(
            r#"Bearer authorization="{}/{}", resource="{}""#,
            cfg.challenge_authority, cfg.tenant_id, cfg.resource
        ),
    ));
    r
}

// ---------------------------------------------------------------------------------------
// Key Vault secrets API

fn vault(st: &mut State, req: &Req, op: Op, base: &str) -> Resp {
    if req.query("api-version").is_none_or(str::is_empty) {
        return kv_error(
            400,
            "BadParameter",
            "The request URI does not contain the api-version query parameter.",
            None,
        );
    }
    let segs: Vec<String> = req.path.trim_start_matches('/').split('/').map(pct_decode).collect();
    let name = segs.get(1).cloned().unwrap_or_default();
    if matches!(
        op,
        Op::Get
            | Op::Set
            | Op::Delete
            | Op::Purge
            | Op::Versions
            | Op::GetDeleted
            | Op::Recover
            | Op::Update
    ) && !valid_name(&name)
    {
        return kv_error(
            400,
            "BadParameter",
            &format!("The request URI contains an invalid name: {name}"),
            None,
        );
    }
    let max = match req.query("maxresults") {
        None => PAGE_SIZE,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=PAGE_SIZE).contains(&n) => n,
            _ => {
                return kv_error(400, "BadParameter", "maxresults must be between 1 and 25.", None);
            }
        },
    };
    let now = Instant::now();
    let key = name.to_ascii_lowercase();
    if let Some(e) = st.secrets.get_mut(&key) {
        e.settle(now);
    }
    let cfg = st.cfg.clone();
    match op {
        Op::Set => set_secret(st, req, &name, base),
        Op::Get => {
            let version = segs.get(2).cloned().unwrap_or_default();
            match st.secrets.get(&key) {
                Some(e) if matches!(e.state, EntryState::Active) => {
                    let v = if version.is_empty() {
                        e.versions.last()
                    } else {
                        e.versions.iter().find(|v| v.id.eq_ignore_ascii_case(&version))
                    };
                    match v {
                        Some(v) if !v.enabled => kv_error(
                            403,
                            "Forbidden",
                            "Operation get is not allowed on a disabled secret.",
                            Some("SecretDisabled"),
                        ),
                        Some(v) => ok_json(bundle(base, e, v, true)),
                        None => secret_not_found(&format!("{name}/{version}")),
                    }
                }
                _ => secret_not_found(&name),
            }
        }
        Op::Versions => {
            let items: Vec<(String, String)> = match st.secrets.get(&key) {
                Some(e) if matches!(e.state, EntryState::Active) => {
                    let mut vs: Vec<&Version> = e.versions.iter().collect();
                    vs.sort_by(|a, b| a.id.cmp(&b.id));
                    vs.into_iter()
                        .map(|v| {
                            let mut p = vec![
                                ("id", js(&format!("{base}/secrets/{}/{}", e.name, v.id))),
                                ("attributes", attributes(v)),
                            ];
                            // `SecretItem.tags` (secrets.json 7.5): versions are listed
                            // with their tags, which key rotation relies on.
                            if let Some(t) = tags(v) {
                                p.push(("tags", t));
                            }
                            (v.id.clone(), obj(&p))
                        })
                        .collect()
                }
                _ => Vec::new(),
            };
            paged(items, req, max, &format!("{base}/secrets/{name}/versions"))
        }
        Op::List => {
            let items: Vec<(String, String)> = st
                .secrets
                .iter_mut()
                .filter_map(|(k, e)| {
                    e.settle(now);
                    let v = e.versions.last()?;
                    matches!(e.state, EntryState::Active).then(|| (k.clone(), item(base, e, v)))
                })
                .collect();
            paged(items, req, max, &format!("{base}/secrets"))
        }
        Op::Delete => match st.secrets.get_mut(&key) {
            Some(e) if matches!(e.state, EntryState::Active) => {
                let deleted_date = unix_now();
                e.state = if cfg.delete_delay.is_zero() {
                    EntryState::Deleted { deleted_date }
                } else {
                    EntryState::BeingDeleted { until: now + cfg.delete_delay, deleted_date }
                };
                ok_json(deleted_bundle(base, e, deleted_date, true))
            }
            _ => secret_not_found(&name),
        },
        Op::GetDeleted => match st.secrets.get(&key) {
            Some(e) => match e.state {
                EntryState::Deleted { deleted_date } => {
                    ok_json(deleted_bundle(base, e, deleted_date, true))
                }
                _ => deleted_not_found(&name),
            },
            None => deleted_not_found(&name),
        },
        Op::ListDeleted => {
            let items: Vec<(String, String)> = st
                .secrets
                .iter_mut()
                .filter_map(|(k, e)| {
                    e.settle(now);
                    match e.state {
                        EntryState::Deleted { deleted_date } => {
                            Some((k.clone(), deleted_bundle(base, e, deleted_date, false)))
                        }
                        _ => None,
                    }
                })
                .collect();
            paged(items, req, max, &format!("{base}/deletedsecrets"))
        }
        Op::Purge => match st.secrets.get(&key).map(|e| e.state) {
            Some(EntryState::Deleted { .. }) => {
                st.secrets.remove(&key);
                Resp { status: 204, headers: service_headers(false), body: Vec::new() }
            }
            Some(EntryState::BeingDeleted { .. }) => being_deleted(),
            _ => deleted_not_found(&name),
        },
        Op::Recover => match st.secrets.get_mut(&key) {
            Some(e) => match e.state {
                EntryState::Deleted { .. } => {
                    e.state = if cfg.recover_delay.is_zero() {
                        EntryState::Active
                    } else {
                        EntryState::Recovering { until: now + cfg.recover_delay }
                    };
                    let v = e.versions.last().cloned();
                    match v {
                        Some(v) => ok_json(obj(&[
                            ("id", js(&format!("{base}/secrets/{}/{}", e.name, v.id))),
                            ("attributes", attributes(&v)),
                        ])),
                        None => deleted_not_found(&name),
                    }
                }
                EntryState::BeingDeleted { .. } => being_deleted(),
                _ => deleted_not_found(&name),
            },
            None => deleted_not_found(&name),
        },
        Op::Update => {
            update_secret(st, req, &key, &name, segs.get(2).cloned().unwrap_or_default(), base)
        }
        _ => kv_error(404, "NotFound", "The requested resource was not found.", None),
    }
}

fn set_secret(st: &mut State, req: &Req, name: &str, base: &str) -> Resp {
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return kv_error(400, "BadParameter", "The request body is not valid JSON.", None);
    };
    let Some(value) = body.get("value").and_then(Value::as_str) else {
        return kv_error(400, "BadParameter", "Property value is required.", None);
    };
    if value.len() > MAX_VALUE_BYTES {
        return kv_error(400, "BadParameter", "Secret value exceeds the maximum size.", None);
    }
    let key = name.to_ascii_lowercase();
    let state = st.secrets.get(&key).map(|e| e.state);
    match state {
        Some(EntryState::BeingDeleted { .. }) => {
            return kv_error(
                409,
                "Conflict",
                &format!(
                    "Secret {name} is currently being deleted and cannot be re-created; retry later."
                ),
                Some("ObjectIsBeingDeleted"),
            );
        }
        Some(EntryState::Deleted { .. }) => {
            return kv_error(
                409,
                "Conflict",
                &format!(
                    "Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."
                ),
                Some("ObjectIsDeletedButRecoverable"),
            );
        }
        Some(EntryState::Recovering { .. }) => {
            return kv_error(
                409,
                "Conflict",
                &format!("Secret {name} is currently being recovered."),
                Some("ObjectIsBeingRecovered"),
            );
        }
        _ => {}
    }
    let attrs = body.get("attributes");
    let now = unix_now();
    let v = Version {
        id: random_hex(16),
        value: value.to_string(),
        created: now,
        updated: now,
        enabled: attrs.and_then(|a| a.get("enabled")).and_then(Value::as_bool).unwrap_or(true),
        nbf: attrs.and_then(|a| a.get("nbf")).and_then(Value::as_i64),
        exp: attrs.and_then(|a| a.get("exp")).and_then(Value::as_i64),
        content_type: body.get("contentType").and_then(Value::as_str).map(String::from),
        tags: body.get("tags").and_then(Value::as_object).map(|m| {
            m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()
        }),
    };
    let e = st.secrets.entry(key).or_insert_with(|| Entry {
        name: name.to_string(),
        versions: Vec::new(),
        state: EntryState::Active,
    });
    e.versions.push(v);
    let v = e.versions.last().expect("just pushed");
    ok_json(bundle(base, e, v, true))
}

fn update_secret(
    st: &mut State,
    req: &Req,
    key: &str,
    name: &str,
    version: String,
    base: &str,
) -> Resp {
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return kv_error(400, "BadParameter", "The request body is not valid JSON.", None);
    };
    let Some(e) = st.secrets.get_mut(key).filter(|e| matches!(e.state, EntryState::Active)) else {
        return secret_not_found(name);
    };
    let idx = if version.is_empty() {
        e.versions.len().checked_sub(1)
    } else {
        e.versions.iter().position(|v| v.id.eq_ignore_ascii_case(&version))
    };
    let Some(i) = idx else { return secret_not_found(&format!("{name}/{version}")) };
    let v = &mut e.versions[i];
    if let Some(a) = body.get("attributes") {
        if let Some(b) = a.get("enabled").and_then(Value::as_bool) {
            v.enabled = b;
        }
        if let Some(n) = a.get("nbf") {
            v.nbf = n.as_i64();
        }
        if let Some(x) = a.get("exp") {
            v.exp = x.as_i64();
        }
    }
    if let Some(ct) = body.get("contentType").and_then(Value::as_str) {
        v.content_type = Some(ct.to_string());
    }
    if let Some(t) = body.get("tags").and_then(Value::as_object) {
        v.tags = Some(
            t.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect(),
        );
    }
    v.updated = unix_now();
    let v = e.versions[i].clone();
    let e = &st.secrets[key];
    let mut r = bundle(base, e, &v, false);
    if v.tags.is_none() {
        // PATCH answers carry "tags":{} even when unset, as recorded.
        r.insert(r.len() - 1, ',');
        r.insert_str(r.len() - 1, r#""tags":{}"#);
    }
    ok_json(r)
}

/// `{"value":[…],"nextLink":…}` for items sorted by `key`, resuming after `$skiptoken`.
fn paged(items: Vec<(String, String)>, req: &Req, max: usize, next_base: &str) -> Resp {
    let start = match req.query("$skiptoken") {
        Some(tok) => match decode_skiptoken(tok) {
            Some(marker) => items.iter().position(|(k, _)| *k >= marker).unwrap_or(items.len()),
            None => return kv_error(400, "BadParameter", "The skip token is invalid.", None),
        },
        None => 0,
    };
    let end = (start + max).min(items.len());
    let values: Vec<&str> = items[start..end].iter().map(|(_, v)| v.as_str()).collect();
    let next = if end < items.len() {
        let av = req.query("api-version").unwrap_or("7.5");
        let mut link =
            format!("{next_base}?api-version={av}&$skiptoken={}", encode_skiptoken(&items[end].0));
        if req.query("maxresults").is_some() {
            link.push_str(&format!("&maxresults={max}"));
        }
        js(&link)
    } else {
        "null".to_string()
    };
    ok_json(format!(r#"{{"value":[{}],"nextLink":{next}}}"#, values.join(",")))
}

fn encode_skiptoken(marker: &str) -> String {
    let json = format!(r#"{{"NextMarker":{},"TargetLocation":0}}"#, js(marker));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_skiptoken(tok: &str) -> Option<String> {
    let raw =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tok.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    v.get("NextMarker")?.as_str().map(String::from)
}

fn valid_name(n: &str) -> bool {
    (1..=127).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn attributes(v: &Version) -> String {
    let mut p = vec![("enabled", v.enabled.to_string())];
    if let Some(n) = v.nbf {
        p.push(("nbf", n.to_string()));
    }
    if let Some(x) = v.exp {
        p.push(("exp", x.to_string()));
    }
    p.push(("created", v.created.to_string()));
    p.push(("updated", v.updated.to_string()));
    p.push(("recoveryLevel", js(RECOVERY_LEVEL)));
    p.push(("recoverableDays", RECOVERABLE_DAYS.to_string()));
    obj(&p)
}

fn tags(v: &Version) -> Option<String> {
    v.tags.as_ref().map(|t| serde_json::to_string(t).unwrap_or_else(|_| "{}".into()))
}

/// SecretBundle: `value`, `contentType`, `id`, `attributes`, `tags` (recorded order).
fn bundle(base: &str, e: &Entry, v: &Version, with_value: bool) -> String {
    let mut p = Vec::new();
    if with_value {
        p.push(("value", js(&v.value)));
    }
    if let Some(ct) = &v.content_type {
        p.push(("contentType", js(ct)));
    }
    p.push(("id", js(&format!("{base}/secrets/{}/{}", e.name, v.id))));
    p.push(("attributes", attributes(v)));
    if let Some(t) = tags(v) {
        p.push(("tags", t));
    }
    obj(&p)
}

/// SecretItem of `GET /secrets`: unversioned id, no value.
fn item(base: &str, e: &Entry, v: &Version) -> String {
    let mut p = Vec::new();
    if let Some(ct) = &v.content_type {
        p.push(("contentType", js(ct)));
    }
    p.push(("id", js(&format!("{base}/secrets/{}", e.name))));
    p.push(("attributes", attributes(v)));
    if let Some(t) = tags(v) {
        p.push(("tags", t));
    }
    obj(&p)
}

/// DeletedSecretBundle (versioned id) or DeletedSecretItem (unversioned id).
fn deleted_bundle(base: &str, e: &Entry, deleted_date: i64, versioned: bool) -> String {
    let Some(v) = e.versions.last() else { return "{}".into() };
    let id = if versioned {
        format!("{base}/secrets/{}/{}", e.name, v.id)
    } else {
        format!("{base}/secrets/{}", e.name)
    };
    let mut p = vec![
        ("recoveryId", js(&format!("{base}/deletedsecrets/{}", e.name))),
        ("deletedDate", deleted_date.to_string()),
        ("scheduledPurgeDate", (deleted_date + RECOVERABLE_DAYS * 86_400).to_string()),
    ];
    if let Some(ct) = &v.content_type {
        p.push(("contentType", js(ct)));
    }
    p.push(("id", js(&id)));
    p.push(("attributes", attributes(v)));
    if let Some(t) = tags(v) {
        p.push(("tags", t));
    }
    obj(&p)
}

fn secret_not_found(what: &str) -> Resp {
    kv_error(
        404,
        "SecretNotFound",
        &format!(
            "A secret with (name/id) {what} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
        None,
    )
}

fn deleted_not_found(name: &str) -> Resp {
    kv_error(404, "SecretNotFound", &format!("Deleted Secret not found: {name}"), None)
}

fn being_deleted() -> Resp {
    kv_error(409, "Conflict", "Secret is currently being deleted.", Some("ObjectIsBeingDeleted"))
}

/// The Key Vault error envelope with the service's headers.
fn kv_error(status: u16, code: &str, message: &str, inner: Option<&str>) -> Resp {
    let mut p = vec![("code", js(code)), ("message", js(message))];
    if let Some(i) = inner {
        p.push(("innererror", obj(&[("code", js(i))])));
    }
    let body = obj(&[("error", obj(&p))]);
    Resp { status, headers: service_headers(true), body: body.into_bytes() }
}

fn ok_json(body: String) -> Resp {
    Resp { status: 200, headers: service_headers(true), body: body.into_bytes() }
}

/// The headers every recorded Key Vault answer carries.
fn service_headers(json: bool) -> Vec<(String, String)> {
    let mut h = vec![
        ("Cache-Control".to_string(), "no-cache".to_string()),
        ("Pragma".into(), "no-cache".into()),
    ];
    if json {
        h.push(("Content-Type".into(), "application/json; charset=utf-8".into()));
    }
    h.extend([
        ("Expires".into(), "-1".into()),
        ("Strict-Transport-Security".into(), "max-age=31536000;includeSubDomains".into()),
        ("X-Content-Type-Options".into(), "nosniff".into()),
        (
            "x-ms-keyvault-network-info".into(),
            "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;".into(),
        ),
        ("x-ms-keyvault-region".into(), "westus".into()),
        ("x-ms-keyvault-service-version".into(), "1.9.2103.1".into()),
        ("x-ms-request-id".into(), uuid()),
    ]);
    h
}

fn json_resp(status: u16, body: String) -> Resp {
    Resp {
        status,
        headers: vec![
            ("Cache-Control".into(), "no-store, no-cache".into()),
            ("Content-Type".into(), "application/json; charset=utf-8".into()),
        ],
        body: body.into_bytes(),
    }
}

// ---------------------------------------------------------------------------------------
// Entra ID and managed identity

fn token_endpoint(shared: &Shared, req: &Req, base: &str) -> Resp {
    let tenant = req.path.trim_start_matches('/').split('/').next().unwrap_or_default().to_string();
    let form = parse_query(&String::from_utf8_lossy(&req.body));
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let mut st = shared.lock();
    let cfg = st.cfg.clone();
    if !tenant.eq_ignore_ascii_case(&cfg.tenant_id) {
        return entra_error(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    if get("grant_type") != Some("client_credentials") {
        return entra_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if get("client_id") != Some(cfg.client_id.as_str()) {
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory.",
                get("client_id").unwrap_or_default()
            ),
        );
    }
    match (get("client_secret"), get("client_assertion_type"), get("client_assertion")) {
        (Some(s), _, _) if s == cfg.client_secret => {}
        (Some(_), _, _) => {
            return entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
            );
        }
        (None, Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"), Some(a))
            if a == cfg.federated_token => {}
        (None, Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"), Some(a))
            if certificate_thumbprint(a).is_some() =>
        {
            let audience = format!("{base}{}", req.path);
            if let Err(r) = check_certificate_assertion(&cfg, a, &audience) {
                return r;
            }
        }
        (None, Some(_), Some(_)) => {
            return entra_error(
                400,
                "invalid_client",
                70021,
                "No matching federated identity record found for presented assertion.",
            );
        }
        _ => {
            return entra_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
    }
    let scope = get("scope").unwrap_or_default();
    let Some(resource) = scope.split(' ').find_map(|s| s.strip_suffix("/.default")) else {
        return entra_error(
            400,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
        );
    };
    if resource.trim_end_matches('/') != cfg.resource {
        return entra_error(
            400,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}."
            ),
        );
    }
    let (token, secs) = issue(&mut st, resource);
    json_resp(
        200,
        format!(
            r#"{{"token_type":"Bearer","expires_in":{secs},"ext_expires_in":{secs},"access_token":{}}}"#,
            js(&token)
        ),
    )
}

/// The decoded header and claims of a compact JWS, and the signed input and signature.
fn split_jwt(jwt: &str) -> Option<(Value, Value, &str, Vec<u8>)> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (input, sig) = jwt.rsplit_once('.')?;
    let (h, c) = input.split_once('.')?;
    let header = serde_json::from_slice(&b64.decode(h).ok()?).ok()?;
    let claims = serde_json::from_slice(&b64.decode(c).ok()?).ok()?;
    Some((header, claims, input, b64.decode(sig).ok()?))
}

/// The certificate thumbprint header of an assertion signed with a certificate's key:
/// `x5t#S256` (SHA-256; MSAL's PS256 path) or `x5t` (SHA-1; RS256, which azure-identity's
/// `CertificateCredential` produces). A federated token has neither.
fn certificate_thumbprint(jwt: &str) -> Option<(&'static ring::digest::Algorithm, String)> {
    let header = split_jwt(jwt)?.0;
    // MSAL pads the value with '='; Entra ID takes it either way.
    if let Some(t) = header.get("x5t#S256").and_then(Value::as_str) {
        return Some((&ring::digest::SHA256, t.trim_end_matches('=').to_string()));
    }
    let t = header.get("x5t").and_then(Value::as_str)?;
    Some((&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, t.trim_end_matches('=').to_string()))
}

/// Checks a certificate client assertion as Entra ID does: a registered certificate by
/// thumbprint, a valid signature by its key (PS256, RS256 or ES256), `aud` = the token
/// endpoint, `iss` = `sub` = client id, and `nbf`..`exp` around now (5 min skew). AADSTS
/// codes: 700027 (signature / unknown key) and 700024 (time) as documented; 50013 and
/// 700021 for audience and issuer are this fake's nearest documented matches.
fn check_certificate_assertion(cfg: &Config, jwt: &str, audience: &str) -> Result<(), Resp> {
    use ring::signature;
    let bad_sig = |reason: &str| {
        entra_error(
            401,
            "invalid_client",
            700027,
            &format!("Client assertion contains an invalid signature. [Reason - {reason}]"),
        )
    };
    let (Some((header, claims, input, sig)), Some((digest, x5t))) =
        (split_jwt(jwt), certificate_thumbprint(jwt))
    else {
        return Err(bad_sig("The assertion is not a well-formed JWT."));
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Some(cert) =
        cfg.client_certificates.iter().find(|c| b64.encode(ring::digest::digest(digest, c)) == x5t)
    else {
        return Err(bad_sig(&format!(
            "The key was not found., Thumbprint of key used by client: '{x5t}'"
        )));
    };
    let der = rustls_pki_types::CertificateDer::from(cert.as_slice());
    let spki = webpki::EndEntityCert::try_from(&der)
        .map(|ee| ee.subject_public_key_info().as_ref().to_vec())
        .map_err(|_| bad_sig("The registered certificate cannot be parsed."))?;
    let Some(key) = spki_key_bits(&spki) else {
        return Err(bad_sig("The registered certificate has no usable key."));
    };
    let alg: &dyn signature::VerificationAlgorithm = match header["alg"].as_str() {
        Some("PS256") => &signature::RSA_PSS_2048_8192_SHA256,
        Some("RS256") => &signature::RSA_PKCS1_2048_8192_SHA256,
        Some("ES256") => &signature::ECDSA_P256_SHA256_FIXED,
        other => return Err(bad_sig(&format!("Unsupported algorithm {other:?}."))),
    };
    if signature::UnparsedPublicKey::new(alg, key).verify(input.as_bytes(), &sig).is_err() {
        return Err(bad_sig("Signature verification failed."));
    }
    let aud = claims["aud"].as_str().unwrap_or_default();
    if !aud.trim_end_matches('/').eq_ignore_ascii_case(audience) {
        return Err(entra_error(
            401,
            "invalid_client",
            50013,
            &format!(
                "Assertion audience claim does not match the required value. The audience in the assertion was '{aud}' and the expected audience is '{audience}'."
            ),
        ));
    }
    if claims["iss"].as_str() != Some(cfg.client_id.as_str())
        || claims["sub"].as_str() != Some(cfg.client_id.as_str())
    {
        return Err(entra_error(
            401,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    // NumericDate may be fractional (MSAL sends float seconds) and `nbf` is optional
    // (MSAL omits it; `iat` then bounds the start).
    let now = unix_now() as f64;
    let skew = 300.0;
    let num = |k: &str| claims.get(k).and_then(Value::as_f64);
    let start = num("nbf").or_else(|| num("iat"));
    if !matches!((start, num("exp")), (Some(n), Some(e)) if n <= now + skew && now < e + skew && e > n)
    {
        return Err(entra_error(
            401,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    Ok(())
}

/// The subjectPublicKey bits of a DER SubjectPublicKeyInfo (RSAPublicKey or EC point).
fn spki_key_bits(spki: &[u8]) -> Option<&[u8]> {
    fn tlv(i: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = i.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            (rest[..n].iter().fold(0usize, |l, b| (l << 8) | usize::from(*b)), &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    let (_, body, _) = tlv(spki)?;
    let (_, _, rest) = tlv(body)?;
    let (tag, bits, _) = tlv(rest)?;
    let (unused, key) = bits.split_first()?;
    (tag == 0x03 && *unused == 0).then_some(key)
}

fn issue(st: &mut State, resource: &str) -> (String, u64) {
    let now = Instant::now();
    st.tokens.retain(|_, t| t.expires > now);
    let token = format!("fake.{}.{}", random_hex(16), random_hex(16));
    let life = st.cfg.token_lifetime;
    st.tokens.insert(
        token.clone(),
        TokenInfo { resource: resource.trim_end_matches('/').to_string(), expires: now + life },
    );
    (token, life.as_secs().max(1))
}

fn entra_error(status: u16, error: &str, code: u32, text: &str) -> Resp {
    let trace = uuid();
    let corr = uuid();
    let ts = rfc3339(SystemTime::now());
    let desc =
        format!("AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}");
    json_resp(
        status,
        format!(
            r#"{{"error":{},"error_description":{},"error_codes":[{code}],"timestamp":{},"trace_id":{},"correlation_id":{},"error_uri":{}}}"#,
            js(error),
            js(&desc),
            js(&ts),
            js(&trace),
            js(&corr),
            js(&format!("https://login.microsoftonline.com/error?code={code}"))
        ),
    )
}

fn discovery(req: &Req, base: &str) -> Resp {
    let tenant = req.path.trim_start_matches('/').split('/').next().unwrap_or("common").to_string();
    if tenant == "common" && req.path.contains("discovery/instance") {
        let host = base.trim_start_matches("https://");
        return json_resp(
            200,
            format!(
                r#"{{"tenant_discovery_endpoint":{},"api-version":"1.1","metadata":[{{"preferred_network":{h},"preferred_cache":{h},"aliases":[{h}]}}]}}"#,
                js(&format!("{base}/{{tenant}}/v2.0/.well-known/openid-configuration")),
                h = js(host)
            ),
        );
    }
    let t = format!("{base}/{tenant}");
    json_resp(
        200,
        format!(
            r#"{{"token_endpoint":{},"token_endpoint_auth_methods_supported":["client_secret_post","private_key_jwt","client_secret_basic"],"jwks_uri":{},"response_modes_supported":["query","fragment","form_post"],"subject_types_supported":["pairwise"],"id_token_signing_alg_values_supported":["RS256"],"response_types_supported":["code","id_token","code id_token","id_token token"],"scopes_supported":["openid","profile","email","offline_access"],"issuer":{},"request_uri_parameter_supported":false,"userinfo_endpoint":"https://graph.microsoft.com/oidc/userinfo","authorization_endpoint":{},"device_authorization_endpoint":{},"http_logout_supported":true,"frontchannel_logout_supported":true,"end_session_endpoint":{},"claims_supported":["sub","iss","aud","exp","iat","nonce"],"tenant_region_scope":"NA","cloud_instance_name":"microsoftonline.com","cloud_graph_host_name":"graph.windows.net","msgraph_host":"graph.microsoft.com","rbac_url":"https://pas.windows.net"}}"#,
            js(&format!("{t}/oauth2/v2.0/token")),
            js(&format!("{t}/discovery/v2.0/keys")),
            js(&format!("{t}/v2.0")),
            js(&format!("{t}/oauth2/v2.0/authorize")),
            js(&format!("{t}/oauth2/v2.0/devicecode")),
            js(&format!("{t}/oauth2/v2.0/logout")),
        ),
    )
}

fn managed_identity_checks(st: &State, req: &Req) -> Result<String, Resp> {
    let cfg = &st.cfg;
    let resource = req.query("resource").unwrap_or_default().to_string();
    match req.query("client_id") {
        Some(c) if c != cfg.managed_identity_client_id => {
            return Err(json_resp(
                400,
                r#"{"error":"invalid_request","error_description":"Identity not found"}"#.into(),
            ));
        }
        None if !cfg.system_assigned_identity => {
            return Err(json_resp(
                400,
                r#"{"error":"invalid_request","error_description":"Identity not found"}"#.into(),
            ));
        }
        _ => {}
    }
    if resource.trim_end_matches('/') != cfg.resource {
        return Err(json_resp(
            400,
            format!(
                r#"{{"error":"invalid_resource","error_description":{}}}"#,
                js(&format!(
                    "AADSTS500011: The resource principal named {resource} was not found in the tenant."
                ))
            ),
        ));
    }
    Ok(resource)
}

fn imds(shared: &Shared, req: &Req) -> Resp {
    if req.header("metadata") != Some("true") {
        return json_resp(400, r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#.into());
    }
    if req.query("api-version").is_none() {
        return json_resp(400, r#"{"error":"invalid_request","error_description":"Required query variable 'api-version' is missing"}"#.into());
    }
    let mut st = shared.lock();
    let resource = match managed_identity_checks(&st, req) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let client =
        req.query("client_id").unwrap_or("00000000-0000-4000-8000-00000000aaaa").to_string();
    let (token, secs) = issue(&mut st, &resource);
    let now = unix_now();
    json_resp(
        200,
        format!(
            r#"{{"access_token":{},"client_id":{},"expires_in":"{secs}","expires_on":"{}","ext_expires_in":"{secs}","not_before":"{now}","resource":{},"token_type":"Bearer"}}"#,
            js(&token),
            js(&client),
            now + secs as i64,
            js(&resource)
        ),
    )
}

fn app_service(shared: &Shared, req: &Req) -> Resp {
    let mut st = shared.lock();
    if req.header("x-identity-header") != Some(st.cfg.identity_header.as_str()) {
        return json_resp(
            400,
            r#"{"statusCode":400,"message":"The X-IDENTITY-HEADER is missing or invalid."}"#.into(),
        );
    }
    if req.query("api-version") != Some("2019-08-01") {
        return json_resp(400, r#"{"statusCode":400,"message":"Unsupported api-version."}"#.into());
    }
    let resource = match managed_identity_checks(&st, req) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let client =
        req.query("client_id").unwrap_or("00000000-0000-4000-8000-00000000aaaa").to_string();
    let (token, secs) = issue(&mut st, &resource);
    json_resp(
        200,
        format!(
            r#"{{"access_token":{},"expires_on":"{}","resource":{},"token_type":"Bearer","client_id":{}}}"#,
            js(&token),
            unix_now() + secs as i64,
            js(&resource),
            js(&client)
        ),
    )
}

// ---------------------------------------------------------------------------------------
// Control endpoint for standalone runs

/// `/_fake/*`, for clients in other processes:
/// - `POST /_fake/fault` `{"op":"get","fault":"429","times":2,"retry_after":"1","status":503,"delay_ms":100}`
///   with `fault` one of `401`, `403`, `404`, `409-recoverable`, `409-being-deleted`, `429`,
///   `5xx` (with `status`), `delay` (with `delay_ms`), `reset`; `times` 0 = forever.
/// - `POST /_fake/clear` drops faults; `POST /_fake/reset` drops faults and counts.
/// - `POST /_fake/latency` `{"ms":40}`; `POST /_fake/token-lifetime` `{"secs":5}`;
///   `POST /_fake/delete-delay` `{"ms":500}`; `POST /_fake/revoke-tokens`.
/// - `GET /_fake/counts` → `{"get":3,…}`.
fn control(shared: &Shared, req: &Req) -> Resp {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let num = |k: &str| body.get(k).and_then(Value::as_u64);
    let mut st = shared.lock();
    let ok = || json_resp(200, r#"{"ok":true}"#.into());
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/_fake/counts") => {
            let m: BTreeMap<&str, usize> = st.counts.iter().map(|(k, v)| (k.name(), *v)).collect();
            json_resp(200, serde_json::to_string(&m).unwrap_or_default())
        }
        ("POST", "/_fake/reset") => {
            st.faults.clear();
            st.counts.clear();
            st.log.clear();
            ok()
        }
        ("POST", "/_fake/clear") => {
            st.faults.clear();
            ok()
        }
        ("POST", "/_fake/revoke-tokens") => {
            st.tokens.clear();
            ok()
        }
        ("POST", "/_fake/latency") => {
            st.cfg.latency = Duration::from_millis(num("ms").unwrap_or(0));
            ok()
        }
        ("POST", "/_fake/token-lifetime") => {
            st.cfg.token_lifetime = Duration::from_secs(num("secs").unwrap_or(3599).max(1));
            ok()
        }
        ("POST", "/_fake/delete-delay") => {
            st.cfg.delete_delay = Duration::from_millis(num("ms").unwrap_or(0));
            ok()
        }
        ("POST", "/_fake/fault") => {
            let op = body.get("op").and_then(Value::as_str).and_then(Op::parse);
            let retry_after = body.get("retry_after").map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            let fault = match body.get("fault").and_then(Value::as_str) {
                Some("401") => Some(Fault::Unauthorized),
                Some("403") => Some(Fault::ForbiddenByPolicy),
                Some("404") => Some(Fault::NotFound),
                Some("409-recoverable") => Some(Fault::DeletedButRecoverable),
                Some("409-being-deleted") => Some(Fault::BeingDeleted),
                Some("429") => Some(Fault::Throttled { retry_after }),
                Some("5xx") => Some(Fault::Status {
                    status: num("status").and_then(|s| u16::try_from(s).ok()).unwrap_or(503),
                    retry_after,
                }),
                Some("delay") => {
                    Some(Fault::Delay(Duration::from_millis(num("delay_ms").unwrap_or(1000))))
                }
                Some("reset") => Some(Fault::Reset),
                _ => None,
            };
            match (op, fault) {
                (Some(op), Some(fault)) => {
                    let times = match num("times") {
                        Some(0) => usize::MAX,
                        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
                        None => 1,
                    };
                    st.faults.entry(op).or_default().push_back((fault, times));
                    ok()
                }
                _ => json_resp(400, r#"{"error":"unknown op or fault"}"#.into()),
            }
        }
        _ => json_resp(404, r#"{"error":"unknown control request"}"#.into()),
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers

/// A JSON object from already-serialized values, keeping the given field order.
fn obj(fields: &[(&str, String)]) -> String {
    let inner: Vec<String> = fields.iter().map(|(k, v)| format!("{}:{v}", js(k))).collect();
    format!("{{{}}}", inner.join(","))
}

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (pct_decode(&k.replace('+', " ")), pct_decode(&v.replace('+', " "))),
            None => (pct_decode(p), String::new()),
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::getrandom(&mut b).expect("OS randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn uuid() -> String {
    let h = random_hex(16);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let dt =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    dt.format(f).unwrap_or_default()
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let dt =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    dt.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
