//! Test harness: a real server on 127.0.0.1:0 (in-process, or the real binary) and a raw
//! mTLS HTTP/1.1 client, so that tests assert exact statuses, headers and bytes.
#![allow(dead_code)]

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let mut rnd = [0u8; 8];
        getrandom::getrandom(&mut rnd).unwrap();
        let p = std::env::temp_dir().join(format!("kes-test-{tag}-{}", kes::hex::encode(&rnd)));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real `kes` binary with `args`, run in `dir` with `env` added and stdin closed.
pub fn kes_command(dir: &Path, args: &[&str], env: &[(&str, String)]) -> std::process::Command {
    // Examples include this file too, and only integration tests know the binary.
    let bin = option_env!("CARGO_BIN_EXE_kes").unwrap_or("kes-binary-known-to-tests-only");
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args).current_dir(dir).stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A `kes server` a test spawned with stdout piped (stderr discarded), in `dir` with
/// `config.yml`, mlock off; killed and reaped on drop.
pub struct Spawned(pub std::process::Child);

impl Spawned {
    pub fn server(dir: &Path) -> Spawned {
        let child = kes_command(dir, &["server", "--config", "config.yml", "--no-mlock"], &[])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Spawned(child)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to completion: (exit code, stdout, stderr).
pub fn output(cmd: &mut std::process::Command) -> (i32, String, String) {
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs the real `kes` binary in `dir` with `env`: (exit code, stdout, stderr).
pub fn kes_in(dir: &Path, args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    output(&mut kes_command(dir, args, env))
}

/// A client identity: an Ed25519 certificate and its key.
pub struct ClientId {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub identity: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Clone for ClientId {
    fn clone(&self) -> Self {
        ClientId {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            identity: self.identity.clone(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

/// A fresh self-signed Ed25519 client certificate (CA=false, as kms-go makes them).
pub fn client_id() -> ClientId {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "test-client");
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).unwrap();
    let der = cert.der().clone();
    let identity = kes::auth::Identity::from_cert_der(&der).unwrap().to_string();
    ClientId {
        cert: der,
        key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        identity,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Writes `dir/config.yml` for a server on 127.0.0.1:0 with a fresh server certificate,
/// `admin`, and an `fs` key store in `dir/keys`; `tls_extra` goes inside `tls:`, `sections`
/// before `keystore:`, `extra` after it. Returns the file and the server certificate.
pub fn write_fs_config(
    dir: &Path,
    admin: &ClientId,
    tls_extra: &str,
    sections: &str,
    extra: &str,
) -> (PathBuf, CertificateDer<'static>) {
    let (cert, key, server_cert) = server_cert(dir);
    let cfg = dir.join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "address: 127.0.0.1:0\nadmin:\n  identity: {}\ntls:\n  key: {}\n  cert: {}\n{tls_extra}{sections}keystore:\n  fs:\n    path: {}\n{extra}",
            admin.identity,
            key.display(),
            cert.display(),
            dir.join("keys").display(),
        ),
    )
    .unwrap();
    (cfg, server_cert)
}

/// Writes a server certificate (SANs 127.0.0.1, localhost) and key into `dir`.
pub fn server_cert(dir: &Path) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k, cert.der().clone())
}

/// A server running in this process.
pub struct TestServer {
    pub server: kes::server::Server,
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub server_cert: CertificateDer<'static>,
    pub admin: ClientId,
    pub store: Arc<kes::keystore::mem::MemStore>,
    pub audit: Arc<std::sync::Mutex<Vec<u8>>>,
    pub errors: Arc<std::sync::Mutex<Vec<u8>>>,
}

/// A writer into a shared buffer, to read what the server logged.
#[derive(Clone)]
pub struct Capture(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl TestServer {
    /// Starts a server with `extra` YAML appended to a config that names the admin and the
    /// TLS files. The key store is in memory.
    pub fn start(extra: &str) -> TestServer {
        Self::start_with(extra, kes::server::DEFAULT_MAX_CONNECTIONS)
    }

    /// A server that re-reads its TLS files every `period`.
    pub fn start_rotating(period: Duration) -> TestServer {
        let store = Arc::new(kes::keystore::mem::MemStore::new());
        Self::start_opts(
            "",
            kes::server::DEFAULT_MAX_CONNECTIONS,
            Some(store.clone() as Arc<dyn kes::keystore::KeyStore>),
            store,
            None,
            period,
        )
    }

    pub fn start_with(extra: &str, max_connections: usize) -> TestServer {
        let store = Arc::new(kes::keystore::mem::MemStore::new());
        Self::start_full(
            extra,
            max_connections,
            Some(store.clone() as Arc<dyn kes::keystore::KeyStore>),
            store,
            None,
        )
    }

    /// A server over the `fs` key store in `keys` (kept by the caller across restarts).
    pub fn start_fs(extra: &str, keys: &Path) -> TestServer {
        let unused = Arc::new(kes::keystore::mem::MemStore::new());
        Self::start_full(extra, kes::server::DEFAULT_MAX_CONNECTIONS, None, unused, Some(keys))
    }

    /// A server with `tls.auth: on` verifying clients against `ca`.
    pub fn start_tls_auth(extra: &str, ca: &Path) -> TestServer {
        let extra = format!("{extra}tls_ca_marker: {}\n", ca.display());
        let store = Arc::new(kes::keystore::mem::MemStore::new());
        Self::start_full(
            &extra,
            kes::server::DEFAULT_MAX_CONNECTIONS,
            Some(store.clone() as Arc<dyn kes::keystore::KeyStore>),
            store,
            None,
        )
    }

    /// A server over any key store with a connection cap.
    pub fn start_store_capped(
        extra: &str,
        store: Arc<dyn kes::keystore::KeyStore>,
        max_connections: usize,
    ) -> TestServer {
        let unused = Arc::new(kes::keystore::mem::MemStore::new());
        Self::start_full(extra, max_connections, Some(store), unused, None)
    }

    /// A server over any key store.
    pub fn start_store(extra: &str, store: Arc<dyn kes::keystore::KeyStore>) -> TestServer {
        let unused = Arc::new(kes::keystore::mem::MemStore::new());
        Self::start_full(extra, kes::server::DEFAULT_MAX_CONNECTIONS, Some(store), unused, None)
    }

    fn start_full(
        extra: &str,
        max_connections: usize,
        inject: Option<Arc<dyn kes::keystore::KeyStore>>,
        store: Arc<kes::keystore::mem::MemStore>,
        fs_dir: Option<&Path>,
    ) -> TestServer {
        Self::start_opts(
            extra,
            max_connections,
            inject,
            store,
            fs_dir,
            kes::server::TLS_RELOAD_PERIOD,
        )
    }

    fn start_opts(
        extra: &str,
        max_connections: usize,
        inject: Option<Arc<dyn kes::keystore::KeyStore>>,
        store: Arc<kes::keystore::mem::MemStore>,
        fs_dir: Option<&Path>,
        tls_reload_period: Duration,
    ) -> TestServer {
        let dir = TempDir::new("srv");
        let (cert, key, server_cert) = server_cert(dir.path());
        let admin = client_id();
        // `tls_ca_marker: PATH` in `extra` turns on chain verification against PATH.
        let (tls_extra, extra) = match extra.split_once("tls_ca_marker: ") {
            Some((before, ca)) => {
                (format!("  auth: on\n  ca: {}\n", ca.trim()), before.to_string())
            }
            None => (String::new(), extra.to_string()),
        };
        let yaml = format!(
            "address: 127.0.0.1:0\nadmin:\n  identity: {}\ntls:\n  key: {}\n  cert: {}\n{tls_extra}keystore:\n  fs:\n    path: {}\n{extra}",
            admin.identity,
            key.display(),
            cert.display(),
            fs_dir.map(Path::to_path_buf).unwrap_or_else(|| dir.join("keys")).display(),
        );
        let cfg = dir.join("config.yml");
        std::fs::write(&cfg, yaml).unwrap();
        let audit = Arc::new(std::sync::Mutex::new(Vec::new()));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let opts = kes::server::Options {
            config: Some(cfg),
            mlock: kes::sys::MlockPolicy::Skip,
            seccomp: false,
            max_connections,
            store: inject,
            tls_reload_period,
            audit_out: Some(Arc::new(std::sync::Mutex::new(Box::new(Capture(audit.clone()))))),
            error_out: Some(Arc::new(std::sync::Mutex::new(Box::new(Capture(errors.clone()))))),
            ..Default::default()
        };
        let server = kes::server::start(opts).unwrap_or_else(|e| panic!("server start: {e}"));
        let addr = server.addr;
        TestServer { server, addr, dir, server_cert, admin, store, audit, errors }
    }

    pub fn client(&self, id: Option<&ClientId>) -> Client {
        Client::connect(self.addr, &self.server_cert, id)
    }

    pub fn admin(&self) -> Client {
        self.client(Some(&self.admin))
    }

    pub fn audit_text(&self) -> String {
        String::from_utf8_lossy(&self.audit.lock().unwrap()).into_owned()
    }

    pub fn error_text(&self) -> String {
        String::from_utf8_lossy(&self.errors.lock().unwrap()).into_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.shutdown();
    }
}

/// Client TLS config trusting `server_cert`, presenting `id` (if any).
pub fn client_config(
    server_cert: &CertificateDer<'static>,
    id: Option<&ClientId>,
) -> Arc<rustls::ClientConfig> {
    client_config_for(server_cert, id, rustls::DEFAULT_VERSIONS)
}

/// As [`client_config`], speaking only the TLS `versions` given.
pub fn client_config_for(
    server_cert: &CertificateDer<'static>,
    id: Option<&ClientId>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_cert.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match id {
        Some(id) => {
            builder.with_client_auth_cert(vec![id.cert.clone()], id.key.clone_key()).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// The `message` of a KES error body.
    pub fn message(&self) -> String {
        self.json()["message"].as_str().unwrap_or_default().to_string()
    }
}

/// One kept-alive mTLS connection speaking raw HTTP/1.1.
pub struct Client {
    pub tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(
        addr: SocketAddr,
        server_cert: &CertificateDer<'static>,
        id: Option<&ClientId>,
    ) -> Client {
        Self::with_config(addr, client_config(server_cert, id))
    }

    /// As [`Client::connect`], speaking only the TLS `versions` given.
    pub fn connect_with(
        addr: SocketAddr,
        server_cert: &CertificateDer<'static>,
        id: Option<&ClientId>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Client {
        Self::with_config(addr, client_config_for(server_cert, id, versions))
    }

    pub fn with_config(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Client {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(cfg, name).unwrap();
        Client { tls: rustls::StreamOwned::new(conn, sock), buf: Vec::new() }
    }

    /// A client over a TLS stream made elsewhere (e.g. from a chosen source address).
    pub fn from_parts(tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> Client {
        Client { tls, buf: Vec::new() }
    }

    /// Completes the TLS handshake now rather than with the first request.
    pub fn handshake(&mut self) -> std::io::Result<()> {
        while self.tls.conn.is_handshaking() {
            self.tls.conn.complete_io(&mut self.tls.sock)?;
        }
        Ok(())
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    pub fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: kes\r\n");
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        self.send_raw(&bytes).expect("send request");
        self.read_reply().expect("read reply")
    }

    pub fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    pub fn post(&mut self, path: &str, body: &str) -> Reply {
        self.request("POST", path, Some(body.as_bytes()))
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.tls.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response (Content-Length framing).
    pub fn read_reply(&mut self) -> std::io::Result<Reply> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    if self.fill()? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                let body = self.buf[end + 4..end + 4 + len].to_vec();
                self.buf.drain(..end + 4 + len);
                return Ok(Reply { status, headers, body });
            }
            if self.fill()? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads a response head only (for streams); returns status and headers.
    pub fn read_head(&mut self) -> std::io::Result<(u16, Vec<(String, String)>)> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                let mut lines = head.split("\r\n");
                let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .collect();
                return Ok((status, headers));
            }
            if self.fill()? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads one chunk of a chunked body.
    pub fn read_chunk(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let size = usize::from_str_radix(
                    std::str::from_utf8(&self.buf[..end]).unwrap().trim(),
                    16,
                )
                .unwrap();
                while self.buf.len() < end + 2 + size + 2 {
                    if self.fill()? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                let data = self.buf[end + 2..end + 2 + size].to_vec();
                self.buf.drain(..end + 2 + size + 2);
                return Ok(data);
            }
            if self.fill()? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// The real `kes` binary (`kes server --config`, no mlock) with a config like
/// [`TestServer::start`]'s; everything it prints is kept for assertions. Killed on drop.
pub struct Binary {
    child: std::process::Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub server_cert: CertificateDer<'static>,
    pub admin: ClientId,
    out: Arc<std::sync::Mutex<String>>,
}

impl Binary {
    /// Starts the binary with `tls_extra` under `tls:` and `extra` at the top level.
    pub fn start(tls_extra: &str, extra: &str) -> Binary {
        Self::start_as(client_id(), tls_extra, extra)
    }

    /// As [`Binary::start`], with `admin` as the admin identity.
    pub fn start_as(admin: ClientId, tls_extra: &str, extra: &str) -> Binary {
        Self::start_full(admin, tls_extra, extra, &[])
    }

    /// As [`Binary::start`], with extra `kes server` flags (e.g. `--max-connections`).
    pub fn start_flags(flags: &[&str]) -> Binary {
        Self::start_full(client_id(), "", "", flags)
    }

    fn start_full(admin: ClientId, tls_extra: &str, extra: &str, flags: &[&str]) -> Binary {
        use std::io::BufRead;
        let dir = TempDir::new("bin");
        let (cfg, server_cert) = write_fs_config(dir.path(), &admin, tls_extra, "", extra);
        let mut child = kes_command(
            dir.path(),
            &["server", "--config", cfg.to_str().unwrap(), "--no-mlock"],
            &[],
        )
        .args(flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        let out = Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<u16>();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (out, tx) = (out.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(port) = line
                        .split("https://127.0.0.1:")
                        .nth(1)
                        .and_then(|p| p.split_whitespace().next())
                        .and_then(|p| p.parse().ok())
                    {
                        let _ = tx.send(port);
                    }
                    let mut out = out.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        let Ok(port) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the binary did not start: {}", out.lock().unwrap());
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Binary { child, addr, dir, server_cert, admin, out }
    }

    pub fn client(&self, id: Option<&ClientId>) -> Client {
        Client::connect(self.addr, &self.server_cert, id)
    }

    /// The server's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the binary printed so far (banner, audit records, error log).
    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `GLIBC_TUNABLES` the packaged unit (systemd/kes.service) starts the server with,
/// read from the unit itself so that what the examples measure is what is shipped.
pub fn unit_glibc_tunables() -> &'static str {
    include_str!("../../systemd/kes.service")
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .flat_map(str::split_whitespace)
        .find_map(|kv| kv.strip_prefix("GLIBC_TUNABLES="))
        .expect("systemd/kes.service sets GLIBC_TUNABLES")
}

/// A real `kes` binary on an `fs` store with [`client_id`] as admin, started as the packaged
/// unit runs it (its `GLIBC_TUNABLES`, audit off): what the memory and attack examples
/// measure. Killed on drop.
pub struct PackagedServer {
    pub child: std::process::Child,
    pub port: u16,
    /// The banner printed an `MLock` line.
    pub mlock: bool,
    pub server_cert: CertificateDer<'static>,
    pub admin: ClientId,
    _dir: TempDir,
}

impl PackagedServer {
    /// Starts `bin` with extra `kes server` flags and waits for its banner.
    pub fn start(bin: &str, tag: &str, flags: &[&str]) -> PackagedServer {
        Self::start_config(bin, tag, flags, client_id(), "", "")
    }

    /// As [`PackagedServer::start`], with `admin`, `tls_extra` under `tls:` and `extra` at
    /// the top level of the config.
    pub fn start_config(
        bin: &str,
        tag: &str,
        flags: &[&str],
        admin: ClientId,
        tls_extra: &str,
        extra: &str,
    ) -> PackagedServer {
        use std::io::BufRead;
        let dir = TempDir::new(tag);
        let (cfg, server_cert) =
            write_fs_config(dir.path(), &admin, tls_extra, "log:\n  audit: off\n", extra);
        let mut child = std::process::Command::new(bin)
            .args(["server", "--config", cfg.to_str().unwrap()])
            .args(flags)
            .env("GLIBC_TUNABLES", unit_glibc_tunables())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let (mut port, mut mlock) = (0u16, false);
        for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            mlock |= line.starts_with("MLock") && line.contains("enabled");
            if let Some(p) = line.split("https://127.0.0.1:").nth(1) {
                port = p.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(0);
            }
            if line.contains("Server is up") {
                break;
            }
        }
        PackagedServer { child, port, mlock, server_cert, admin, _dir: dir }
    }

    /// A `/proc/PID/status` figure in KiB (`VmRSS:`, `Threads:` as a count), 0 when gone.
    pub fn status_kib(&self, field: &str) -> u64 {
        proc_status(self.child.id(), field)
    }
}

impl Drop for PackagedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `/proc/PID/status` figure (`VmRSS:` in KiB, `Threads:`), 0 when unreadable.
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
