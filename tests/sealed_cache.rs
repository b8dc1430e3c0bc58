//! The sealed persistent key cache (`cache.persist`) with the real binary, seccomp on,
//! against the project's fake vault behind a TCP relay the test can switch off (the port
//! refuses connections) or hang (the port accepts and never answers): keys read before a
//! restart keep working during an outage, bad sealed files are refused with a log line,
//! the vault's return removes deleted keys, and no key byte reaches the disk in clear.

mod common;
#[path = "support/fake_vault.rs"]
mod fake_vault;

use base64::Engine as _;
use common::{Client, TempDir, client_id, server_cert};
use fake_vault::{FakeVault, Fault, Op};
use kes::crypto::{Algorithm, HmacKey, KeyVersion, SecretKey};
use rustls::pki_types::CertificateDer;
use std::io::{BufRead, BufReader, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Binds `port` on 127.0.0.1, retrying while a listener that was just closed lets go.
fn bind(port: u16) -> TcpListener {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => return l,
            Err(e) if Instant::now() < end => {
                let _ = e;
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot bind 127.0.0.1:{port}: {e}"),
        }
    }
}

/// What the vault's address does: relay to the fake vault, refuse (after `down`), or hang
/// (listening, never accepting: connects complete in the kernel backlog, nothing answers).
struct Relay {
    port: u16,
    stop: Option<Arc<AtomicBool>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    _hang: Option<TcpListener>,
}

impl Relay {
    fn up(port: u16, target: u16) -> Relay {
        let listener = bind(port);
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (stop2, conns2) = (Arc::clone(&stop), Arc::clone(&conns));
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let mut list = conns2.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                drop(list);
                for (mut from, mut to) in
                    [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Relay { port, stop: Some(stop), conns, _hang: None }
    }

    fn hang(port: u16) -> Relay {
        Relay { port, stop: None, conns: Arc::default(), _hang: Some(bind(port)) }
    }

    /// Closes the listener and every relayed connection: the port refuses from now on.
    fn down(&mut self) {
        self._hang = None;
        let Some(stop) = self.stop.take() else { return };
        stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        // The accept thread drops the listener when it sees `stop`.
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < end {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.down();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One test's world: the fake vault, the relay port the server is configured with, the
/// server's certificate, an admin client identity, and the config.
struct World {
    dir: TempDir,
    vault: FakeVault,
    relay_port: u16,
    cert: CertificateDer<'static>,
    admin: common::ClientId,
}

impl World {
    fn new(tag: &str) -> World {
        let dir = TempDir::new(tag);
        let vault = FakeVault::start();
        let (_, _, cert) = server_cert(dir.path());
        let admin = client_id();
        std::fs::write(dir.join("vault-ca.pem"), vault.ca_pem()).unwrap();
        let seal: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        let creds = dir.join("creds");
        std::fs::create_dir(&creds).unwrap();
        write_private(&creds.join("kes-seal"), &format!("{}\n", b64(&seal)));
        write_private(&dir.join("client-secret"), &format!("{}\n", vault.client_secret()));
        let relay_port = free_port();
        let w = World { dir, vault, relay_port, cert, admin };
        w.write_config("credential:kes-seal");
        w
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.relay_port)
    }

    fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    fn write_config(&self, seal: &str) {
        self.write_config_aged(seal, "24h");
    }

    fn write_config_aged(&self, seal: &str, max_age: &str) {
        let d = self.dir.path().display();
        std::fs::write(
            self.dir.join("config.yml"),
            format!(
                "address: 127.0.0.1:0\n\
                 admin:\n  identity: {id}\n\
                 tls:\n  key: {d}/server.key\n  cert: {d}/server.crt\n\
                 cache:\n  persist:\n    path: {d}/cache\n    seal: {seal}\n    max_age: {max_age}\n\
                 keystore:\n  azure:\n    keyvault:\n      endpoint: {url}\n      credentials:\n\
                 \x20       tenant_id: {tenant}\n        client_id: {client}\n\
                 \x20       client_secret: file:{d}/client-secret\n",
                id = self.admin.identity,
                url = self.url(),
                tenant = self.vault.tenant_id(),
                client = self.vault.client_id(),
            ),
        )
        .unwrap();
    }

    fn relay(&self) -> Relay {
        Relay::up(self.relay_port, self.vault.https_port())
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kes"));
        cmd.args(["server", "--config"])
            .arg(self.dir.join("config.yml"))
            .env("SSL_CERT_FILE", self.dir.join("vault-ca.pem"))
            .env("AZURE_AUTHORITY_HOST", self.url())
            .env("CREDENTIALS_DIRECTORY", self.dir.join("creds"))
            .stdin(Stdio::null());
        cmd
    }

    fn start(&self) -> Kes {
        let mut child =
            self.command().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let errors: Arc<Mutex<String>> = Arc::default();
        let mut stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&errors);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut kes = Kes { child, errors, banner: String::new(), addr: None };
        let mut out = BufReader::new(kes.child.stdout.take().unwrap());
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                panic!("server exited: {}{}", kes.banner, kes.errors());
            }
            kes.banner.push_str(&line);
            if let Some(p) = line.strip_prefix("API").and_then(|l| l.split("127.0.0.1:").nth(1)) {
                kes.addr = Some(SocketAddr::from(([127, 0, 0, 1], p.trim().parse().unwrap())));
            }
            if line.starts_with("=> Server is up and running") {
                break;
            }
        }
        // Keep draining stdout (audit lines) so the server never blocks on a full pipe.
        thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        kes
    }

    fn client(&self, kes: &Kes) -> Client {
        Client::connect(kes.addr.unwrap(), &self.cert, Some(&self.admin))
    }

    /// Puts a key with known bytes into the vault directly; returns the key and HMAC bytes.
    fn plant(&self, name: &str, seed: u8) -> ([u8; 32], [u8; 32]) {
        self.plant_at(name, seed, 1_700_000_000)
    }

    /// [`World::plant`] as a version created at `created` (Unix seconds). A key is its
    /// oldest untagged version (upstream's rule), so an older one replaces what it reads.
    fn plant_at(&self, name: &str, seed: u8, created: i64) -> ([u8; 32], [u8; 32]) {
        let key: [u8; 32] = std::array::from_fn(|i| seed ^ (i as u8).wrapping_mul(29));
        let mac: [u8; 32] = std::array::from_fn(|i| seed.wrapping_add(101) ^ (i as u8));
        let kv = KeyVersion {
            key: SecretKey::new(Algorithm::Aes256, &key),
            hmac: Some(HmacKey::new(&mac)),
            created_at: Some(time::OffsetDateTime::now_utc()),
            created_by: self.admin.identity.clone(),
        };
        self.vault.insert_version(name, &kv.encode().unwrap(), created, None);
        (key, mac)
    }
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A running `kes server`, killed when dropped (also when an assertion fails).
struct Kes {
    child: Child,
    errors: Arc<Mutex<String>>,
    banner: String,
    addr: Option<SocketAddr>,
}

impl Kes {
    fn errors(&self) -> String {
        self.errors.lock().unwrap().clone()
    }

    /// Waits (generously) for `needle` in the error log.
    fn wait_log(&self, needle: &str) -> String {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let e = self.errors();
            if e.contains(needle) {
                return e;
            }
            assert!(Instant::now() < end, "no '{needle}' in the log:\n{e}");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Kes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hmac_of(c: &mut Client, name: &str) -> common::Reply {
    c.post(&format!("/v1/key/hmac/{name}"), &format!("{{\"message\":\"{}\"}}", b64(b"sealed")))
}

fn decrypt(c: &mut Client, name: &str, ciphertext: &str) -> common::Reply {
    c.post(&format!("/v1/key/decrypt/{name}"), &format!("{{\"ciphertext\":\"{ciphertext}\"}}"))
}

/// Every file under `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that a request for a key the server never read fails at once with the error
/// an unreachable store gives, and that the log says why.
fn assert_cold_key_fails_fast(c: &mut Client, kes: &Kes) {
    let start = Instant::now();
    let r = c.post("/v1/key/generate/cold", "{}");
    // A read of the store would wait for its 5 s connect / 10 s read timeouts; an offline
    // miss answers from memory. 4 s is far above the latter even on a loaded machine.
    assert!(start.elapsed() < Duration::from_secs(4), "{:?}", start.elapsed());
    assert_eq!((r.status, r.message()), (502, "failed to read key".to_string()));
    kes.wait_log("failed to read key 'cold': key store is not reachable: cache is in offline mode");
}

#[test]
fn a_restart_during_an_outage_serves_sealed_keys_until_the_vault_returns() {
    let w = World::new("sealed-outage");
    let (k1, m1) = w.plant("k1", 1);
    let (k2, m2) = w.plant("k2", 2);
    w.plant("cold", 3);
    let mut relay = w.relay();

    // 1. Vault up: use the keys, so they are read and sealed.
    let kes = w.start();
    assert!(
        kes.banner.contains(&format!(
            "Cache      sealed: {} (max_age 24h0m0s)\n",
            w.cache_dir().display()
        )),
        "{}",
        kes.banner
    );
    assert!(!kes.banner.contains("UNREACHABLE"));
    let mut c = w.client(&kes);
    let dek = c.post("/v1/key/generate/k1", "{}");
    assert_eq!(dek.status, 200, "{}", dek.text());
    let dek = dek.json();
    let plaintext = dek["plaintext"].as_str().unwrap().to_string();
    let ciphertext = dek["ciphertext"].as_str().unwrap().to_string();
    let mac = hmac_of(&mut c, "k2");
    assert_eq!(mac.status, 200);
    let mac = mac.json()["hmac"].as_str().unwrap().to_string();
    // A key deleted through this server loses its sealed copy at once.
    assert_eq!(c.post("/v1/key/create/temp", "").status, 200);
    assert_eq!(c.post("/v1/key/generate/temp", "{}").status, 200);
    assert!(w.cache_dir().join("temp.sealed").exists());
    assert_eq!(c.request("DELETE", "/v1/key/delete/temp", None).status, 200);
    assert!(!w.cache_dir().join("temp.sealed").exists());

    let mut names: Vec<String> = files(&w.cache_dir())
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["k1.sealed", "k2.sealed"]);
    assert_eq!(std::fs::metadata(w.cache_dir()).unwrap().permissions().mode() & 0o777, 0o700);
    // No key material in clear: not the key bytes, not the HMAC key, not the stored value
    // (base64 or decoded).
    for (path, bytes) in files(&w.cache_dir()) {
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        for value in w.vault.values("k1").iter().chain(w.vault.values("k2").iter()) {
            assert!(!contains(&bytes, value.as_bytes()), "{path:?} holds a stored value");
            assert!(!contains(&bytes, &unb64(value)[..24]), "{path:?} holds a decoded value");
        }
        for secret in [&k1, &m1, &k2, &m2] {
            for window in secret.windows(8) {
                assert!(!contains(&bytes, window), "{path:?} holds key bytes");
            }
        }
    }
    drop(c);
    drop(kes);

    // 2. Vault down (connections refused), server restarted.
    relay.down();
    let kes = w.start();
    assert!(
        kes.banner.contains("KEY STORE UNREACHABLE: serving 2 keys from the sealed cache since "),
        "{}",
        kes.banner
    );
    let mut c = w.client(&kes);
    let r = decrypt(&mut c, "k1", &ciphertext);
    assert_eq!((r.status, r.json()["plaintext"].as_str().unwrap()), (200, plaintext.as_str()));
    let r = hmac_of(&mut c, "k2");
    assert_eq!((r.status, r.json()["hmac"].as_str().unwrap()), (200, mac.as_str()));
    let fresh = c.post("/v1/key/generate/k1", "{}").json();
    let r = decrypt(&mut c, "k1", fresh["ciphertext"].as_str().unwrap());
    assert_eq!(r.json()["plaintext"], fresh["plaintext"]);
    assert_cold_key_fails_fast(&mut c, &kes);
    let status = c.get("/v1/status");
    assert_eq!(status.status, 200);
    let status = status.json();
    assert_eq!(status["keystore_unreachable"], true);
    assert_eq!(status["sealed_cache"]["path"], w.cache_dir().display().to_string());
    assert_eq!(status["sealed_cache"]["max_age"], "24h0m0s");
    let since = status["sealed_cache"]["serving_since"].as_str().unwrap();
    assert!(kes.banner.contains(since), "{since} vs {}", kes.banner);
    assert!(status["version"].is_string() && status["uptime"].is_u64());
    drop(c);
    drop(kes);

    // 3. Vault hanging (accepts, never answers), server restarted: startup is bounded.
    let hang = Relay::hang(w.relay_port);
    let kes = w.start();
    assert!(kes.banner.contains("serving 2 keys from the sealed cache"), "{}", kes.banner);
    let mut c = w.client(&kes);
    let r = decrypt(&mut c, "k1", &ciphertext);
    assert_eq!((r.status, r.json()["plaintext"].as_str().unwrap()), (200, plaintext.as_str()));
    assert_eq!(hmac_of(&mut c, "k2").json()["hmac"].as_str().unwrap(), mac);
    assert_cold_key_fails_fast(&mut c, &kes);

    // 4. While it runs from the sealed cache, k2 is deleted in the vault; then the vault
    // comes back. Within one probe period the re-check removes k2 and its copy.
    w.vault.soft_delete("k2");
    drop(hang);
    let mut relay = w.relay();
    kes.wait_log("sealed cache: 'k2' no longer exists in the key store: sealed copy removed");
    kes.wait_log("sealed cache: re-checked 2 keys: 1 current, 1 removed");
    let r = hmac_of(&mut c, "k2");
    assert_eq!((r.status, r.message()), (404, "key does not exist".to_string()));
    assert!(!w.cache_dir().join("k2.sealed").exists());
    let r = decrypt(&mut c, "k1", &ciphertext);
    assert_eq!(r.json()["plaintext"].as_str().unwrap(), plaintext);
    assert_eq!(c.get("/v1/status").json().get("keystore_unreachable"), None);
    assert_eq!(c.get("/v1/status").json()["sealed_cache"].get("serving_since"), None);
    relay.down();
}

#[test]
fn tampered_renamed_truncated_and_foreign_sealed_files_are_refused() {
    let w = World::new("sealed-bad");
    for (i, name) in ["good", "tampered", "renamed", "truncated", "foreign"].iter().enumerate() {
        w.plant(name, 10 + i as u8);
    }
    let mut relay = w.relay();
    let kes = w.start();
    let mut c = w.client(&kes);
    for name in ["good", "tampered", "renamed", "truncated"] {
        assert_eq!(hmac_of(&mut c, name).status, 200);
    }
    let good_mac = hmac_of(&mut c, "good").json()["hmac"].clone();
    drop(c);
    drop(kes);
    relay.down();

    let dir = w.cache_dir();
    let mut bytes = std::fs::read(dir.join("tampered.sealed")).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 0x04;
    std::fs::write(dir.join("tampered.sealed"), bytes).unwrap();
    std::fs::copy(dir.join("good.sealed"), dir.join("renamed.sealed")).unwrap();
    let bytes = std::fs::read(dir.join("truncated.sealed")).unwrap();
    std::fs::write(dir.join("truncated.sealed"), &bytes[..bytes.len() / 2]).unwrap();
    // Sealed by another server with its own sealing key, for the same vault.
    let foreign = kes::keystore::sealed::SealedCache::open(
        &dir,
        &[0x5a; 32],
        &format!("Azure KeyVault: {}", w.url()),
        Duration::from_secs(3600),
        Box::new(|_, _| {}),
    )
    .unwrap();
    foreign.save("foreign", w.vault.values("foreign")[0].as_bytes());

    let kes = w.start();
    assert!(kes.banner.contains("serving 1 keys from the sealed cache"), "{}", kes.banner);
    let d = dir.display();
    for line in [
        format!(
            "sealed cache: refusing '{d}/tampered.sealed': does not authenticate: tampered with, truncated, or another key's file renamed; not served"
        ),
        format!(
            "sealed cache: refusing '{d}/renamed.sealed': does not authenticate: tampered with, truncated, or another key's file renamed; not served"
        ),
        format!("sealed cache: refusing '{d}/truncated.sealed': does not authenticate"),
        format!(
            "sealed cache: refusing '{d}/foreign.sealed': sealed with another sealing key; not served"
        ),
    ] {
        // The refusals are logged on stderr, which a reader thread collects: wait for each
        // rather than read once right after the banner.
        kes.wait_log(&line);
    }
    let mut c = w.client(&kes);
    assert_eq!(hmac_of(&mut c, "good").json()["hmac"], good_mac);
    for name in ["tampered", "renamed", "truncated", "foreign"] {
        let r = hmac_of(&mut c, name);
        assert_eq!((r.status, r.message()), (502, "failed to read key".to_string()), "{name}");
    }
}

#[test]
fn a_missing_or_open_sealing_key_refuses_to_start_and_says_what_to_do() {
    let w = World::new("sealed-key");
    let run = |cmd: &mut Command| {
        let o = cmd.stdout(Stdio::null()).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (code, err) = run(w.command().env_remove("CREDENTIALS_DIRECTORY"));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cache.persist.seal: credential:kes-seal: $CREDENTIALS_DIRECTORY is not set; credentials are handed in by systemd (LoadCredential= or LoadCredentialEncrypted=kes-seal:... in the unit); outside systemd use file:PATH"),
        "{err}"
    );
    w.write_config(&format!("file:{}/missing.key", w.dir.path().display()));
    let (code, err) = run(&mut w.command());
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("cache.persist.seal: file:{0}/missing.key: cannot read '{0}/missing.key': No such file or directory", w.dir.path().display())), "{err}");
    let open = w.dir.join("open.key");
    std::fs::write(&open, format!("{}\n", b64(&[9; 32]))).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    w.write_config(&format!("file:{}", open.display()));
    let (code, err) = run(&mut w.command());
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("is readable by group or others (mode 0644); a secret file must be readable by the service user alone: run chmod 600 '{}'", open.display())), "{err}");
    assert!(!err.contains(&b64(&[9; 32])), "the key leaked into the message");
    // Fixed as told, the server starts.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _relay = w.relay();
    let kes = w.start();
    assert!(kes.banner.contains("Cache      sealed: "), "{}", kes.banner);
}

/// The value of `family` in a Prometheus text page.
fn metric(page: &str, family: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(family)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {family} in:\n{page}"))
}

#[test]
fn a_periodic_recheck_while_the_vault_stays_up_drops_deleted_keys_and_reseals_changed_ones() {
    let w = World::new("sealed-periodic");
    // max_age 60s: a re-check every 15 s while the vault stays up.
    w.write_config_aged("credential:kes-seal", "60s");
    w.plant("k1", 21);
    w.plant("k2", 22);
    w.plant("k3", 23);
    let mut relay = w.relay();
    let kes = w.start();
    let mut c = w.client(&kes);
    let mac1 = hmac_of(&mut c, "k1").json()["hmac"].as_str().unwrap().to_string();
    assert_eq!(hmac_of(&mut c, "k2").status, 200);
    let old3 = hmac_of(&mut c, "k3").json()["hmac"].as_str().unwrap().to_string();
    for k in ["k1", "k2", "k3"] {
        assert!(w.cache_dir().join(format!("{k}.sealed")).exists(), "{k}");
    }

    // Behind this server's back, the vault staying up: k3 changes (a version older than
    // the one it had, which makes it read as another key, as a restore would), then k2 is
    // deleted (the portal). The pass that finds k2 gone reads k3 after it (names in
    // order), so it also finds k3 changed.
    w.plant_at("k3", 33, 1_600_000_000);
    w.vault.soft_delete("k2");
    kes.wait_log("sealed cache: 'k2' no longer exists in the key store: sealed copy removed");
    kes.wait_log("sealed cache: re-checked 3 keys: 2 current, 1 removed");
    assert!(!w.cache_dir().join("k2.sealed").exists());
    let r = hmac_of(&mut c, "k2");
    assert_eq!((r.status, r.message()), (404, "key does not exist".to_string()));
    let new3 = hmac_of(&mut c, "k3").json()["hmac"].as_str().unwrap().to_string();
    assert_ne!(new3, old3, "k3 still answers with its old version");
    assert_eq!(hmac_of(&mut c, "k1").json()["hmac"].as_str().unwrap(), mac1);
    let page = c.get("/v1/metrics").text();
    assert_eq!(metric(&page, "kes_cache_sealed_recheck_removed"), 1);
    assert_eq!(metric(&page, "kes_cache_sealed_recheck_stopped"), 0);
    assert!(metric(&page, "kes_cache_sealed_rechecks") >= 2, "{page}");
    let status = c.get("/v1/status").json();
    assert!(status["sealed_cache"]["last_recheck"].as_str().unwrap().ends_with('Z'), "{status}");

    // Throttled beyond what the client waits for (Retry-After of an hour): the next pass
    // stops at its first read and deletes nothing.
    w.vault.inject_forever(Op::Get, Fault::Throttled { retry_after: Some("3600".into()) });
    kes.wait_log("sealed cache: re-check stopped after 0 keys: ");
    kes.wait_log("; next try in 1m0s");
    assert!(w.cache_dir().join("k1.sealed").exists() && w.cache_dir().join("k3.sealed").exists());
    assert_eq!(metric(&c.get("/v1/metrics").text(), "kes_cache_sealed_recheck_stopped"), 1);
    w.vault.clear_faults();
    drop(c);
    drop(kes);

    // A restart with the vault down serves what the re-checks left: not the deleted key,
    // and k3 as it is now.
    relay.down();
    let kes = w.start();
    assert!(kes.banner.contains("serving 2 keys from the sealed cache"), "{}", kes.banner);
    let mut c = w.client(&kes);
    assert_eq!(hmac_of(&mut c, "k1").json()["hmac"].as_str().unwrap(), mac1);
    assert_eq!(hmac_of(&mut c, "k3").json()["hmac"].as_str().unwrap(), new3);
    let r = hmac_of(&mut c, "k2");
    assert_eq!((r.status, r.message()), (502, "failed to read key".to_string()));
}
