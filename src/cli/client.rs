//! The client side of every `kes` command that talks to a server: where the server is, who
//! we are, whom we trust (`kes-config-cli.md` §4.1), and a small blocking HTTP/1.1-over-TLS
//! client with upstream's failover rule (`kes-api.md` §6, §11).
//!
//! Why not ureq: the CLI needs its own server verifier for `-k` (one that still checks the
//! handshake signature), the exact rustls error of a failed handshake to tell the user what
//! to do, and a response body that can be an endless NDJSON stream (`kes log`). A request is
//! one connection (`Connection: close`): the CLI makes a handful of requests per run.
//!
//! Must not: print, exit, or put key material into an error message.

use super::apikey::{self, ApiKey};
use super::{Fail, io_msg};
use crate::auth::{ClientCert, Identity};
use crate::http::{ChunkError, ChunkedDecoder};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Where clients go when nothing is configured.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7373";
/// A dead endpoint must not stall the failover to the next one.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence while sending a request or reading a response (route timeouts are ≤ 15 s
/// on the server; a keystore call behind it may take longer).
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response head we read.
pub const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// Most response headers we parse.
pub const MAX_RESPONSE_HEADERS: usize = 64;
/// Largest response body (a full key listing page is ~100 KB; metrics a few KB).
pub const MAX_RESPONSE_BODY: usize = 16 << 20;
/// Largest single event of a log stream.
pub const MAX_EVENT: usize = 1 << 20;

/// Endpoint variables, first *set* one wins (even when empty).
pub const SERVER_VARS: [&str; 3] = ["MINIO_KES_SERVER", "KES_SERVER", "MINIO_KMS_KES_ENDPOINT"];
pub const API_KEY_VARS: [&str; 3] = ["MINIO_KES_API_KEY", "KES_API_KEY", "MINIO_KMS_KES_API_KEY"];
pub const KEY_FILE_VARS: [&str; 3] =
    ["MINIO_KES_KEY_FILE", "KES_CLIENT_KEY", "MINIO_KES_CLIENT_KEY"];
pub const CERT_FILE_VARS: [&str; 3] =
    ["MINIO_KES_CERT_FILE", "KES_CLIENT_CERT", "MINIO_KES_CLIENT_CERT"];

/// Reads an environment variable; a function so that tests can pass their own.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment (values that are not UTF-8 count as unset).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The first variable of `vars` that is set, with its value.
fn first_set(env: Env<'_>, vars: &[&'static str]) -> Option<(&'static str, String)> {
    vars.iter().find_map(|v| env(v).map(|value| (*v, value)))
}

/// One server: `https://host:port` plus an optional base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://host:port[/base]`, as shown to the user.
    pub url: String,
    /// Host as written (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (usually empty).
    pub base: String,
}

impl Endpoint {
    /// Upstream's normalisation: trim, strip `http://`, add `https://` when missing.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let t = text.trim();
        let t = t.strip_prefix("http://").unwrap_or(t);
        let rest = t.strip_prefix("https://").unwrap_or(t);
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) =
                v6.split_once(']').ok_or_else(|| format!("invalid endpoint '{t}'"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("invalid endpoint '{t}'")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("invalid endpoint '{t}': no host"));
        }
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid endpoint '{t}': invalid port '{p}'"))?,
        };
        let shown_host = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
        Ok(Endpoint {
            url: format!("https://{shown_host}:{port}{base}"),
            host: host.to_string(),
            port,
            base: base.to_string(),
        })
    }

    /// `host:port` as the `Host` header and `kes status` show it.
    pub fn authority(&self) -> &str {
        self.url.trim_start_matches("https://").split('/').next().unwrap_or_default()
    }
}

/// Who we are to the server.
pub enum Credentials {
    ApiKey(ApiKey),
    Files { cert: PathBuf, key: PathBuf },
}

/// Everything needed to reach a server, resolved from flags and environment.
pub struct Settings {
    pub endpoints: Vec<Endpoint>,
    /// Where the endpoints came from, for error messages (`KES_SERVER`, `--server`, …).
    pub endpoint_source: String,
    pub credentials: Credentials,
    pub insecure: bool,
}

/// The connection flags a command took (`-s` and `-a` exist on `kes ls` only).
#[derive(Debug, Default, Clone)]
pub struct ConnFlags {
    pub server: Option<String>,
    pub api_key: Option<String>,
    pub insecure: bool,
}

impl Settings {
    /// `kes-config-cli.md` §4.1, in upstream's order of checks and with its messages.
    pub fn resolve(flags: &ConnFlags, env: Env<'_>) -> Result<Settings, Fail> {
        let (list, source) = match flags.server.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => (s.to_string(), "--server".to_string()),
            None => match first_set(env, &SERVER_VARS) {
                Some((var, value)) => (value, var.to_string()),
                None => (DEFAULT_SERVER.to_string(), format!("the default {DEFAULT_SERVER}")),
            },
        };
        let mut endpoints = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            endpoints
                .push(Endpoint::parse(item).map_err(|e| Fail::Error(format!("{source}: {e}")))?);
        }
        if endpoints.is_empty() {
            return Err(Fail::Error(format!("'{source}' contains no hosts / IPs")));
        }

        let api_key = match flags.api_key.as_deref().filter(|s| !s.is_empty()) {
            Some(k) => Some(k.to_string()),
            None => first_set(env, &API_KEY_VARS).map(|(_, v)| v).filter(|v| !v.is_empty()),
        };
        let key_file = first_set(env, &KEY_FILE_VARS).map(|(_, v)| v).filter(|v| !v.is_empty());
        let cert_file = first_set(env, &CERT_FILE_VARS).map(|(_, v)| v).filter(|v| !v.is_empty());
        let credentials = match (api_key, key_file, cert_file) {
            (None, None, None) => {
                return Err(Fail::Error(
                    "no API key specified. Consider setting MINIO_KES_API_KEY".into(),
                ));
            }
            (Some(_), Some(_), _) => {
                return Err(Fail::Error(
                    "API key and private key file cannot be used at the same time".into(),
                ));
            }
            (Some(_), None, Some(_)) => {
                return Err(Fail::Error(
                    "API key and certificate file cannot be used at the same time".into(),
                ));
            }
            (None, Some(_), None) => {
                return Err(Fail::Error(
                    "no certificate file specified. Consider setting MINIO_KES_CERT_FILE".into(),
                ));
            }
            (None, None, Some(_)) => {
                return Err(Fail::Error(
                    "no private key file specified. Consider setting MINIO_KES_KEY_FILE".into(),
                ));
            }
            (Some(text), None, None) => Credentials::ApiKey(
                ApiKey::parse(text.trim())
                    .map_err(|e| Fail::Error(format!("parsing API key: {e}")))?,
            ),
            (None, Some(key), Some(cert)) => {
                Credentials::Files { cert: PathBuf::from(cert), key: PathBuf::from(key) }
            }
        };
        Ok(Settings { endpoints, endpoint_source: source, credentials, insecure: flags.insecure })
    }
}

/// Asks for the password of an encrypted private key file (a prompt on the terminal in
/// the CLI, [`super::password::for_client_key`]); passed in so that this module stays
/// silent.
pub type AskPassword<'a> = &'a dyn Fn(&Path) -> Result<Zeroizing<Vec<u8>>, Fail>;

/// Loads a client certificate chain and its private key from PEM files with the same
/// parsers the server uses for its own (`server::tls`): the certificate file holds only
/// certificates, the key file one private key, and the two must belong together. A legacy
/// encrypted key (`Proc-Type: 4,ENCRYPTED`) is decrypted with the password `ask` returns,
/// asked only once the key is known to be one that can be decrypted.
pub fn load_key_pair(
    cert: &Path,
    key: &Path,
    ask: AskPassword<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Fail> {
    use crate::crypto::legacy_pem::{self, KeyError, PemError};
    use crate::server::tls::parse_certificates;
    let cert_pem = std::fs::read(cert).map_err(|e| {
        Fail::Error(format!("reading certificate file: open {}: {}", cert.display(), io_msg(&e)))
    })?;
    let chain = parse_certificates(&cert_pem)
        .map_err(|e| Fail::Error(format!("reading certificate file: {}: {e}", cert.display())))?;
    let key_pem = Zeroizing::new(std::fs::read(key).map_err(|e| {
        Fail::Error(format!("reading private key file: open {}: {}", key.display(), io_msg(&e)))
    })?);
    let failed = |e: &dyn fmt::Display| Fail::Error(format!("failed to read TLS private key: {e}"));
    // A key that cannot be decrypted is refused before anyone is asked for a password.
    let password = if legacy_pem::is_encrypted(&key_pem) {
        legacy_pem::parse(&key_pem).map_err(|e| failed(&e))?;
        Some(ask(key)?)
    } else {
        None
    };
    let key_der = legacy_pem::load_private_key(&key_pem, password.as_ref().map(|p| p.as_slice()))
        .map_err(|e| match e {
        KeyError::PasswordRequired | KeyError::Encrypted(PemError::IncorrectPassword) => {
            Fail::Error("incorrect password".into())
        }
        KeyError::Encrypted(e) => failed(&e),
        KeyError::Pkcs8Encrypted => failed(&legacy_pem::PKCS8_UNSUPPORTED),
        e => failed(&e),
    })?;
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| Fail::Error(format!("failed to read TLS private key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signer);
    if certified.keys_match().is_err() {
        return Err(Fail::Error(format!(
            "tls: private key does not match public key ('{}' does not belong to '{}')",
            key.display(),
            cert.display()
        )));
    }
    Ok((chain, key_der))
}

/// Trusted roots by Go's rule, `SSL_CERT_FILE` and `SSL_CERT_DIR` included
/// ([`crate::goroots`]). Unreadable or non-PEM files are skipped, as Go skips them.
pub fn trusted_roots(env: Env<'_>) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in crate::goroots::RootSources::from_lookup(env).load().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// A connected client: endpoints to try in order, and the TLS configuration.
pub struct Client {
    endpoints: Vec<Endpoint>,
    endpoint_source: String,
    tls: Arc<ClientConfig>,
    /// Our identity, as the server computes it from our certificate.
    pub identity: Identity,
}

/// A 2xx answer. The body may hold key material (decrypt, dek), so it is wiped on drop.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Zeroizing<Vec<u8>>,
    /// The endpoint that answered.
    pub endpoint: Endpoint,
}

/// Why one endpoint could not give an answer.
#[derive(Debug)]
pub enum Failure {
    /// Name resolution or TCP connect failed.
    Connect(io::Error),
    /// The TLS handshake failed (or the server rejected us right after it).
    Tls(rustls::Error),
    /// The connection broke while sending or receiving.
    Io(io::Error),
    /// The server spoke something other than HTTP/1.1 as we understand it.
    Protocol(String),
    /// A 5xx other than 501: the next endpoint gets a chance (kms-go's rule).
    Server { status: u16, message: String },
}

/// What a request ended with, if not a 2xx answer.
#[derive(Debug)]
pub enum ClientError {
    /// The server answered with an error status.
    Api { status: u16, message: String, path: String, identity: Identity },
    /// No endpoint gave an answer; one entry per endpoint tried.
    Unavailable { failures: Vec<(Endpoint, Failure)>, source: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Unavailable { .. } => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Api { status: 403, message, path, identity } => write!(
                f,
                "{message} (identity {identity} is not allowed to access {path}; \
                 its policy on the server must allow it)"
            ),
            ClientError::Api { message, .. } => f.write_str(message),
            ClientError::Unavailable { failures, source } => {
                let mut hints: Vec<&str> = Vec::new();
                for (i, (ep, failure)) in failures.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    let (text, hint) = describe(ep, failure, source);
                    f.write_str(&text)?;
                    if let Some(h) = hint
                        && !hints.contains(&h)
                    {
                        hints.push(h);
                    }
                }
                for h in hints {
                    write!(f, " ({h})")?;
                }
                Ok(())
            }
        }
    }
}

const HINT_UNTRUSTED: &str = "to trust the server, set SSL_CERT_FILE to its certificate or to the CA \
     that issued it, e.g. SSL_CERT_FILE=public.crt; to skip verification (insecure), pass -k/--insecure";
const HINT_NAME: &str = "connect with a name or IP the certificate carries, make the certificate \
     with 'kes identity new --ip <IP> --dns <name>', or skip verification (insecure) with -k/--insecure";

/// One endpoint's failure as text, plus a hint to print once.
fn describe(ep: &Endpoint, failure: &Failure, source: &str) -> (String, Option<&'static str>) {
    let url = &ep.url;
    match failure {
        Failure::Connect(e) => (
            format!("cannot connect to {url} (from {source}): {}", io_msg(e)),
            Some("is the KES server running, and is the endpoint right?"),
        ),
        Failure::Tls(e) => describe_tls(ep, e),
        Failure::Io(e)
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
        {
            (format!("no answer from {url} within {}s", IO_TIMEOUT.as_secs()), None)
        }
        Failure::Io(e) => (format!("connection to {url} failed: {}", io_msg(e)), None),
        Failure::Protocol(m) => (format!("invalid response from {url}: {m}"), None),
        Failure::Server { status, message } => {
            (format!("{url} answered {status}: {message}"), None)
        }
    }
}

fn describe_tls(ep: &Endpoint, e: &rustls::Error) -> (String, Option<&'static str>) {
    let url = &ep.url;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName => (
                format!("TLS: the certificate of {url} is not valid for '{}'", ep.host),
                Some(HINT_NAME),
            ),
            CertificateError::NotValidForNameContext { presented, .. } => (
                format!(
                    "TLS: the certificate of {url} is not valid for '{}' (it is valid for {})",
                    ep.host,
                    if presented.is_empty() {
                        "no name at all".into()
                    } else {
                        presented.iter().map(|n| san_text(n)).collect::<Vec<_>>().join(", ")
                    }
                ),
                Some(HINT_NAME),
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                format!("TLS: the certificate of {url} has expired"),
                Some(
                    "renew the server's certificate, or skip verification (insecure) with -k/--insecure",
                ),
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                (format!("TLS: the certificate of {url} is not valid yet (check the clocks)"), None)
            }
            other => (
                format!("TLS: the certificate of {url} is not trusted ({})", cert_problem(other)),
                Some(HINT_UNTRUSTED),
            ),
        },
        rustls::Error::AlertReceived(alert) => (
            format!("TLS: {url} refused the connection (alert: {alert:?})"),
            Some("the server did not accept our client certificate or TLS parameters"),
        ),
        other => (format!("TLS handshake with {url} failed: {other}"), None),
    }
}

/// `DnsName("x")` / `IpAddress(1.2.3.4)` as rustls lists presented names -> `x`, `1.2.3.4`.
fn san_text(name: &str) -> String {
    let inner = match (name.find('('), name.rfind(')')) {
        (Some(a), Some(b)) if a < b => &name[a + 1..b],
        _ => name,
    };
    inner.trim_matches('"').to_string()
}

/// Why a chain did not verify, in words. webpki reports the last candidate issuer it tried,
/// so signature-algorithm mismatches against unrelated roots also mean "unknown issuer".
fn cert_problem(c: &CertificateError) -> String {
    match c {
        CertificateError::Revoked => "it has been revoked".to_string(),
        CertificateError::BadEncoding => "it is malformed".to_string(),
        CertificateError::UnhandledCriticalExtension => {
            "it has an unsupported critical extension".to_string()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "it is not meant for TLS servers (extended key usage)".to_string()
        }
        _ => "signed by an unknown authority, e.g. self-signed".to_string(),
    }
}

/// The rustls error inside an I/O error, if any.
fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

fn io_failure(e: io::Error) -> Failure {
    match tls_error(&e) {
        Some(t) => Failure::Tls(t.clone()),
        None => Failure::Io(e),
    }
}

impl Client {
    /// Resolves the settings into a TLS configuration.
    pub fn new(settings: Settings, env: Env<'_>, ask: AskPassword<'_>) -> Result<Client, Fail> {
        let (chain, key) = match &settings.credentials {
            Credentials::ApiKey(k) => {
                let (cert, pkcs8) = apikey::client_certificate(k)
                    .map_err(|e| Fail::Error(format!("generating certificate: {e}")))?;
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
                (vec![CertificateDer::from(cert)], key)
            }
            Credentials::Files { cert, key } => load_key_pair(cert, key, ask)?,
        };
        // The server's rule; without an identity the server answers 400, never 403, so the
        // 403 text that names it never needs one.
        if Identity::from_cert_der(chain[0].as_ref()).is_none() {
            return Err(Fail::Error("the client certificate cannot be parsed".into()));
        }
        let identity = ClientCert::from_chain(&chain).identity().cloned().unwrap_or_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Fail::Error(format!("tls: {e}")))?;
        let builder = if settings.insecure {
            let verifier: Arc<dyn ServerCertVerifier> =
                Arc::new(danger::NoServerVerification::new(provider));
            builder.dangerous().with_custom_certificate_verifier(verifier)
        } else {
            builder.with_root_certificates(trusted_roots(env))
        };
        let mut config = builder.with_client_auth_cert(chain, key).map_err(|e| {
            Fail::Error(format!("failed to load TLS private key or certificate: {e}"))
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            endpoints: settings.endpoints,
            endpoint_source: settings.endpoint_source,
            tls: Arc::new(config),
            identity,
        })
    }

    /// The first endpoint (the one `kes status` names when all is well).
    pub fn first_endpoint(&self) -> &Endpoint {
        &self.endpoints[0]
    }

    /// Sends one request, trying each endpoint in order until one answers with anything
    /// but a transport failure or a 5xx other than 501. `path` must already be escaped.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Reply, ClientError> {
        let mut failures = Vec::new();
        for ep in &self.endpoints {
            match self.exchange(ep, method, path, body) {
                Ok((status, content_type, body)) if (200..300).contains(&status) => {
                    return Ok(Reply { status, content_type, body, endpoint: ep.clone() });
                }
                Ok((status, content_type, body)) => {
                    let message = error_message(status, &content_type, &body);
                    if status >= 500 && status != 501 {
                        failures.push((ep.clone(), Failure::Server { status, message }));
                        continue;
                    }
                    return Err(self.api_error(status, message, path));
                }
                Err(f) => failures.push((ep.clone(), f)),
            }
        }
        Err(self.give_up(failures, path))
    }

    /// Opens an event stream (`/v1/log/*`): the first endpoint that answers 200 keeps the
    /// connection, and the events are read line by line.
    pub fn stream(&self, path: &str) -> Result<EventStream, ClientError> {
        let mut failures = Vec::new();
        for ep in &self.endpoints {
            let opened = (|| {
                let mut conn = Conn::open(ep, &self.tls)?;
                conn.send(ep, "GET", path, None)?;
                let head = conn.read_head()?;
                Ok::<_, Failure>((conn, head))
            })();
            match opened {
                Ok((mut conn, head)) if head.status == 200 => {
                    conn.stream_mode().map_err(|e| self.give_up(vec![(ep.clone(), e)], path))?;
                    let body = BodyState::for_head(&head, MAX_EVENT);
                    return Ok(EventStream { conn, body, endpoint: ep.clone() });
                }
                Ok((mut conn, head)) => {
                    let body = conn.read_body(&head).unwrap_or_default();
                    let message = error_message(head.status, &head.content_type, &body);
                    if head.status >= 500 && head.status != 501 {
                        failures
                            .push((ep.clone(), Failure::Server { status: head.status, message }));
                        continue;
                    }
                    return Err(self.api_error(head.status, message, path));
                }
                Err(f) => failures.push((ep.clone(), f)),
            }
        }
        Err(self.give_up(failures, path))
    }

    fn api_error(&self, status: u16, message: String, path: &str) -> ClientError {
        let path = crate::http::percent_decode(path).unwrap_or_else(|| path.to_string());
        ClientError::Api { status, message, path, identity: self.identity.clone() }
    }

    /// All endpoints failed: a 5xx from the last one is passed through as the server's
    /// error; anything else says what went wrong where.
    fn give_up(&self, mut failures: Vec<(Endpoint, Failure)>, path: &str) -> ClientError {
        if let Some((_, Failure::Server { .. })) = failures.last()
            && let Some((_, Failure::Server { status, message })) = failures.pop()
        {
            return self.api_error(status, message, path);
        }
        ClientError::Unavailable { failures, source: self.endpoint_source.clone() }
    }

    fn exchange(
        &self,
        ep: &Endpoint,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, String, Zeroizing<Vec<u8>>), Failure> {
        let mut conn = Conn::open(ep, &self.tls)?;
        conn.send(ep, method, path, body)?;
        let head = conn.read_head()?;
        let body = conn.read_body(&head)?;
        Ok((head.status, head.content_type, body))
    }
}

/// The text of an error answer: `error` or else `message` of a JSON body (as kms-go reads
/// it), otherwise the raw body.
pub fn error_message(status: u16, content_type: &str, body: &[u8]) -> String {
    if content_type.starts_with("application/json")
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body)
    {
        for field in ["error", "message"] {
            if let Some(serde_json::Value::String(s)) = map.get(field)
                && !s.is_empty()
            {
                return s.clone();
            }
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    if text.is_empty() {
        format!("server answered {status} {}", crate::http::reason(status))
    } else {
        text
    }
}

/// Go's `url.PathEscape` for one path segment (names, patterns).
pub fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$&+:=@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A parsed response head.
struct Head {
    status: u16,
    content_type: String,
    content_length: Option<usize>,
    chunked: bool,
}

/// How the body of a response is framed, and what has been decoded.
enum BodyState {
    Chunked(ChunkedDecoder),
    Length(usize),
    UntilClose,
}

impl BodyState {
    fn for_head(head: &Head, limit: usize) -> BodyState {
        if head.chunked {
            BodyState::Chunked(ChunkedDecoder::new(limit))
        } else if let Some(n) = head.content_length {
            BodyState::Length(n)
        } else {
            BodyState::UntilClose
        }
    }
}

/// One TLS connection and the bytes read but not yet consumed (wiped on drop: they may be
/// key material).
struct Conn {
    tls: StreamOwned<ClientConnection, TcpStream>,
    buf: Zeroizing<Vec<u8>>,
}

impl Conn {
    fn open(ep: &Endpoint, config: &Arc<ClientConfig>) -> Result<Conn, Failure> {
        let addrs: Vec<_> = (ep.host.as_str(), ep.port)
            .to_socket_addrs()
            .map_err(|e| {
                Failure::Connect(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("cannot resolve '{}': {}", ep.host, io_msg(&e)),
                ))
            })?
            .collect();
        let mut last =
            io::Error::new(io::ErrorKind::NotFound, format!("no address for '{}'", ep.host));
        let mut sock = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let sock = sock.ok_or(Failure::Connect(last))?;
        sock.set_read_timeout(Some(IO_TIMEOUT)).map_err(Failure::Io)?;
        sock.set_write_timeout(Some(IO_TIMEOUT)).map_err(Failure::Io)?;
        let _ = sock.set_nodelay(true);
        let name = match ep.host.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(ep.host.clone()).map_err(|_| {
                Failure::Protocol(format!("'{}' is not a valid server name", ep.host))
            })?,
        };
        let conn = ClientConnection::new(config.clone(), name).map_err(Failure::Tls)?;
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).map_err(io_failure)?;
        }
        Ok(Conn { tls, buf: Zeroizing::new(Vec::new()) })
    }

    fn send(
        &mut self,
        ep: &Endpoint,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(), Failure> {
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kes/{}\r\nAccept: application/json\r\nConnection: close\r\n",
            ep.base,
            ep.authority(),
            env!("CARGO_PKG_VERSION"),
        );
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        } else if method == "POST" || method == "PUT" {
            req.push_str("Content-Length: 0\r\n");
        }
        req.push_str("\r\n");
        let mut bytes = zeroize::Zeroizing::new(req.into_bytes());
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        self.tls.write_all(&bytes).map_err(io_failure)?;
        self.tls.flush().map_err(io_failure)
    }

    /// Reads more bytes into the buffer; `Ok(0)` at the end of the stream.
    fn fill(&mut self) -> Result<usize, Failure> {
        let mut chunk = [0u8; 16 << 10];
        match self.tls.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            // A peer that closes without close_notify still ended the stream.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && tls_error(&e).is_none() => Ok(0),
            Err(e) => Err(io_failure(e)),
        }
    }

    fn read_head(&mut self) -> Result<Head, Failure> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut head = Head {
                        status,
                        content_type: String::new(),
                        content_length: None,
                        chunked: false,
                    };
                    for h in resp.headers.iter() {
                        let value = String::from_utf8_lossy(h.value).trim().to_string();
                        if h.name.eq_ignore_ascii_case("content-type") {
                            head.content_type = value;
                        } else if h.name.eq_ignore_ascii_case("content-length") {
                            head.content_length = Some(value.parse().map_err(|_| {
                                Failure::Protocol(format!("invalid Content-Length '{value}'"))
                            })?);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            head.chunked = value.to_ascii_lowercase().contains("chunked");
                        }
                    }
                    self.buf.drain(..n);
                    if (100..200).contains(&status) {
                        continue; // interim answer; the real one follows
                    }
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(Failure::Protocol(format!("bad response head: {e}"))),
            }
            if self.buf.len() > MAX_RESPONSE_HEAD {
                return Err(Failure::Protocol("response head too large".into()));
            }
            if self.fill()? == 0 {
                return Err(Failure::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection before answering",
                )));
            }
        }
    }

    fn read_body(&mut self, head: &Head) -> Result<Zeroizing<Vec<u8>>, Failure> {
        if head.status == 204 || head.status == 304 {
            return Ok(Zeroizing::new(Vec::new()));
        }
        match BodyState::for_head(head, MAX_RESPONSE_BODY) {
            BodyState::Length(n) => {
                if n > MAX_RESPONSE_BODY {
                    return Err(Failure::Protocol(format!(
                        "response body of {n} bytes is too large"
                    )));
                }
                while self.buf.len() < n {
                    if self.fill()? == 0 {
                        return Err(Failure::Protocol("response body cut short".into()));
                    }
                }
                Ok(Zeroizing::new(self.buf.drain(..n).collect()))
            }
            BodyState::Chunked(mut dec) => loop {
                let used = dec.feed(&self.buf).map_err(chunk_failure)?;
                self.buf.drain(..used);
                if dec.is_done() {
                    return Ok(Zeroizing::new(std::mem::take(&mut dec.data)));
                }
                if self.fill()? == 0 {
                    return Err(Failure::Protocol("chunked body cut short".into()));
                }
            },
            BodyState::UntilClose => {
                while self.fill()? > 0 {
                    if self.buf.len() > MAX_RESPONSE_BODY {
                        return Err(Failure::Protocol("response body too large".into()));
                    }
                }
                Ok(std::mem::take(&mut self.buf))
            }
        }
    }

    /// Streams wait for events as long as it takes.
    fn stream_mode(&mut self) -> Result<(), Failure> {
        self.tls.sock.set_read_timeout(None).map_err(Failure::Io)
    }
}

fn chunk_failure(e: ChunkError) -> Failure {
    match e {
        ChunkError::Malformed => Failure::Protocol("malformed chunked body".into()),
        ChunkError::TooLarge => Failure::Protocol("event too large".into()),
    }
}

/// An open NDJSON event stream.
pub struct EventStream {
    conn: Conn,
    body: BodyState,
    pub endpoint: Endpoint,
}

impl EventStream {
    /// The next line (without its newline); `Ok(None)` when the server ended the stream.
    pub fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        let fail = |ep: &Endpoint, f: Failure| ClientError::Unavailable {
            failures: vec![(ep.clone(), f)],
            source: String::new(),
        };
        loop {
            // Decode what is buffered, then look for a complete line.
            let data: &mut Vec<u8> = match &mut self.body {
                BodyState::Chunked(dec) => {
                    let used = dec
                        .feed(&self.conn.buf)
                        .map_err(|e| fail(&self.endpoint, chunk_failure(e)))?;
                    self.conn.buf.drain(..used);
                    &mut dec.data
                }
                BodyState::Length(_) | BodyState::UntilClose => &mut self.conn.buf,
            };
            if let Some(i) = data.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = data.drain(..=i).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line[..i]).trim_end_matches('\r').to_string(),
                ));
            }
            if data.len() > MAX_EVENT {
                return Err(fail(&self.endpoint, Failure::Protocol("event too large".into())));
            }
            if let BodyState::Chunked(dec) = &self.body
                && dec.is_done()
            {
                return Ok(None);
            }
            match self.conn.fill() {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(f) => return Err(fail(&self.endpoint, f)),
            }
        }
    }
}

/// Server verification that is skipped on purpose (`-k/--insecure`). Named so, as rustls
/// names its own.
mod danger {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, Error, SignatureScheme};
    use std::sync::Arc;

    /// Accepts any server certificate, but still checks the handshake signature, so the
    /// server proves it holds the key of the certificate it sent.
    #[derive(Debug)]
    pub struct NoServerVerification(Arc<CryptoProvider>);

    impl NoServerVerification {
        pub fn new(provider: Arc<CryptoProvider>) -> Self {
            NoServerVerification(provider)
        }
    }

    impl ServerCertVerifier for NoServerVerification {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k: &str| map.get(k).cloned()
    }

    const KEY: &str = "kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc";

    fn err(flags: &ConnFlags, pairs: &[(&str, &str)]) -> String {
        match Settings::resolve(flags, &env_of(pairs)) {
            Err(Fail::Error(m)) => m,
            Err(Fail::Usage(m)) => panic!("usage: {m}"),
            Ok(_) => panic!("resolved"),
        }
    }

    fn urls(flags: &ConnFlags, pairs: &[(&str, &str)]) -> Vec<String> {
        let s = Settings::resolve(flags, &env_of(pairs)).unwrap_or_else(|_| panic!("{pairs:?}"));
        s.endpoints.into_iter().map(|e| e.url).collect()
    }

    #[test]
    fn endpoints_are_normalised_like_upstream() {
        let f = ConnFlags::default();
        assert_eq!(urls(&f, &[("KES_API_KEY", KEY)]), ["https://127.0.0.1:7373"]);
        assert_eq!(
            urls(&f, &[("KES_API_KEY", KEY), ("KES_SERVER", " http://a:1 , https://b:2,c:3 ,")]),
            ["https://a:1", "https://b:2", "https://c:3"]
        );
        assert_eq!(
            urls(&f, &[("KES_API_KEY", KEY), ("KES_SERVER", "[::1]:7373,kes.example")]),
            ["https://[::1]:7373", "https://kes.example:443"]
        );
        // Precedence: MINIO_KES_SERVER, KES_SERVER, MINIO_KMS_KES_ENDPOINT; -s beats all.
        let all = [
            ("KES_API_KEY", KEY),
            ("MINIO_KES_SERVER", "m:1"),
            ("KES_SERVER", "k:2"),
            ("MINIO_KMS_KES_ENDPOINT", "e:3"),
        ];
        assert_eq!(urls(&f, &all), ["https://m:1"]);
        assert_eq!(
            urls(&f, &all[..1].iter().chain(&all[2..]).copied().collect::<Vec<_>>()),
            ["https://k:2"]
        );
        assert_eq!(urls(&f, &[all[0], all[3]]), ["https://e:3"]);
        let s = ConnFlags { server: Some("s:4".into()), ..Default::default() };
        assert_eq!(urls(&s, &all), ["https://s:4"]);
    }

    #[test]
    fn the_first_set_variable_wins_even_when_empty() {
        let f = ConnFlags::default();
        assert_eq!(
            err(&f, &[("KES_API_KEY", KEY), ("MINIO_KES_SERVER", ""), ("KES_SERVER", "k:2")]),
            "'MINIO_KES_SERVER' contains no hosts / IPs"
        );
        assert!(err(&f, &[("KES_API_KEY", KEY), ("KES_SERVER", "k:0")]).contains("invalid port"));
    }

    #[test]
    fn credential_combinations_give_upstreams_messages() {
        let f = ConnFlags::default();
        assert_eq!(err(&f, &[]), "no API key specified. Consider setting MINIO_KES_API_KEY");
        assert_eq!(
            err(&f, &[("KES_API_KEY", KEY), ("KES_CLIENT_KEY", "k")]),
            "API key and private key file cannot be used at the same time"
        );
        assert_eq!(
            err(&f, &[("KES_API_KEY", KEY), ("KES_CLIENT_CERT", "c")]),
            "API key and certificate file cannot be used at the same time"
        );
        assert_eq!(
            err(&f, &[("KES_CLIENT_KEY", "k")]),
            "no certificate file specified. Consider setting MINIO_KES_CERT_FILE"
        );
        assert_eq!(
            err(&f, &[("MINIO_KES_CERT_FILE", "c")]),
            "no private key file specified. Consider setting MINIO_KES_KEY_FILE"
        );
        assert_eq!(err(&f, &[("KES_API_KEY", "kes:v1:nope")]), "parsing API key: invalid API key");
        // An empty variable that is set hides the ones after it.
        assert_eq!(
            err(&f, &[("MINIO_KES_API_KEY", ""), ("KES_API_KEY", KEY)]),
            "no API key specified. Consider setting MINIO_KES_API_KEY"
        );
        let a = ConnFlags { api_key: Some(KEY.into()), ..Default::default() };
        assert!(Settings::resolve(&a, &env_of(&[])).is_ok());
        match Settings::resolve(&f, &env_of(&[("KES_CLIENT_KEY", "k"), ("KES_CLIENT_CERT", "c")])) {
            Ok(Settings { credentials: Credentials::Files { cert, key }, .. }) => {
                assert_eq!((cert, key), (PathBuf::from("c"), PathBuf::from("k")));
            }
            _ => panic!("files"),
        }
    }

    #[test]
    fn path_segments_are_escaped_like_go() {
        assert_eq!(escape("my-key_1"), "my-key_1");
        assert_eq!(escape("my*"), "my%2A");
        assert_eq!(escape("a/b c"), "a%2Fb%20c");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn error_messages_prefer_error_then_message_then_text() {
        let j = "application/json";
        assert_eq!(
            error_message(400, j, br#"{"message":"key already exists"}"#),
            "key already exists"
        );
        assert_eq!(error_message(400, j, br#"{"error":"e","message":"m"}"#), "e");
        assert_eq!(error_message(404, "text/plain", b"404 page not found\n"), "404 page not found");
        assert_eq!(error_message(502, j, b""), "server answered 502 Bad Gateway");
    }

    #[test]
    fn presented_names_are_shown_plainly() {
        assert_eq!(san_text("DnsName(\"localhost\")"), "localhost");
        assert_eq!(san_text("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(san_text("other"), "other");
    }

    #[test]
    fn a_403_names_the_path_and_identity() {
        let e = ClientError::Api {
            status: 403,
            message: "not authorized: insufficient permissions".into(),
            path: "/v1/key/create/other".into(),
            identity: Identity::new("ab12"),
        };
        assert_eq!(
            e.to_string(),
            "not authorized: insufficient permissions (identity ab12 is not allowed to access \
             /v1/key/create/other; its policy on the server must allow it)"
        );
    }
}
