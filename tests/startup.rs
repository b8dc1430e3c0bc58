//! The real `kes` binary: startup errors that say what to do, exit codes, the banner,
//! `--dev`, declarative keys, SIGHUP reload, SIGTERM, and a full run of key operations
//! with seccomp and mlock on (the allow-list must be complete).

mod common;

use common::{TempDir, client_id, server_cert};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KES: &str = env!("CARGO_BIN_EXE_kes");

fn kes(args: &[&str]) -> std::process::Output {
    Command::new(KES).args(args).stdin(Stdio::null()).output().unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A config with TLS files in `dir` and an fs store, plus `extra`.
fn write_config(dir: &TempDir, admin: &str, extra: &str) -> std::path::PathBuf {
    let (cert, key, _) = server_cert(dir.path());
    let cfg = dir.join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "address: 127.0.0.1:0\nadmin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\nkeystore:\n  fs:\n    path: {}\n{extra}",
            key.display(),
            cert.display(),
            dir.join("keys").display()
        ),
    )
    .unwrap();
    cfg
}

/// A running binary whose stdout is read line by line.
struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    port: u16,
    banner: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut cmd = Command::new(KES);
        cmd.args(args);
        Running::start_cmd(cmd)
    }

    fn start_cmd(mut cmd: Command) -> Running {
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let o = child.wait_with_output().unwrap();
                panic!("server did not start: {}", String::from_utf8_lossy(&o.stderr));
            };
            let done = line.contains("Server is up and running");
            banner.push(line);
            if done {
                break;
            }
        }
        let port = banner
            .iter()
            .find_map(|l| l.split("https://127.0.0.1:").nth(1))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .expect("port in banner");
        Running { child, lines: rx, port, banner }
    }

    fn wait_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect(needle);
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn signal(&self, sig: &str) {
        assert!(
            Command::new("kill")
                .args([sig, &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn usage_and_unknown_commands() {
    let o = kes(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("Usage:"));
    let o = kes(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "Error: \"frobnicate\" is not a kes command. See 'kes --help'\n");
    let o = kes(&["server"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no config file specified"));
    let o = kes(&["server", "--dev", "--config", "x.yml"]);
    assert_eq!(o.status.code(), Some(1));
    let o = kes(&["update"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not supported"));
}

#[test]
fn startup_errors_name_the_file_and_what_to_do() {
    let dir = TempDir::new("start");
    let o = kes(&["server", "--config", dir.join("missing.yml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.starts_with("Error: ")
            && e.contains("missing.yml")
            && e.contains("cannot read config file"),
        "{e}"
    );

    let cfg = write_config(&dir, "abc", "");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap().replace("admin:\n  identity: abc\n", ""),
    )
    .unwrap();
    let e = stderr(&kes(&["server", "--config", cfg.to_str().unwrap()]));
    assert!(e.contains("config.yml") && e.contains("admin.identity"), "{e}");

    // A key that does not belong to the certificate.
    let cfg = write_config(&dir, "abc", "");
    let other = TempDir::new("other");
    let (_, other_key, _) = server_cert(other.path());
    std::fs::copy(&other_key, dir.join("server.key")).unwrap();
    let o = kes(&["server", "--config", cfg.to_str().unwrap(), "--no-mlock"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not belong to the certificate"), "{}", stderr(&o));

    // A missing key file.
    let cfg = write_config(&dir, "abc", "");
    std::fs::remove_file(dir.join("server.key")).unwrap();
    let e = stderr(&kes(&["server", "--config", cfg.to_str().unwrap()]));
    assert!(e.contains("tls.key") && e.contains("cannot read private key"), "{e}");

    // A certificate without any SAN.
    let cfg = write_config(&dir, "abc", "");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::default().self_signed(&key).unwrap();
    std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    let e = stderr(&kes(&["server", "--config", cfg.to_str().unwrap()]));
    assert!(e.contains("certificate does not contain any DNS or IP address as SAN"), "{e}");

    // A port already in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = write_config(&dir, "abc", "");
    let addr = busy.local_addr().unwrap().to_string();
    let e =
        stderr(&kes(&["server", "--config", cfg.to_str().unwrap(), "--addr", &addr, "--no-mlock"]));
    assert!(e.contains("already in use") && e.contains("--addr"), "{e}");

    // A hostname as listen address.
    let e =
        stderr(&kes(&["server", "--config", cfg.to_str().unwrap(), "--addr", "localhost:7373"]));
    assert!(e.contains("'localhost' is not a valid IP address"), "{e}");
}

#[test]
fn dev_mode_prints_an_api_key_and_stops_on_sigterm() {
    let mut srv = Running::start(&["server", "--dev", "--addr", "127.0.0.1:0", "--no-mlock"]);
    let key_line = srv.banner.iter().find(|l| l.starts_with("API Key")).unwrap().clone();
    let key = key_line.split_whitespace().nth(2).unwrap();
    assert!(key.starts_with("kes:v1:") && key.len() == 51, "{key}");
    assert!(srv.banner.iter().any(|l| l.trim() == format!("export KES_API_KEY={key}")));
    assert!(srv.banner.iter().any(|l| l.contains("export KES_SERVER=https://127.0.0.1:")));
    assert!(srv.banner.iter().any(|l| l.starts_with("KMS") && l.contains("In Memory")));
    assert!(srv.banner.iter().any(|l| l.starts_with("License") && l.contains("Apache-2.0")));
    assert!(!srv.banner.iter().any(|l| l.contains("AGPL") || l.contains("MinIO, Inc")));
    // The printed admin identity is the API key's identity.
    let id = kes::auth::apikey::ApiKey::parse(key).unwrap().identity();
    assert!(srv.banner.iter().any(|l| l.starts_with("Admin") && l.contains(id.as_str())));
    srv.signal("-TERM");
    srv.wait_line("Stopping server... Goodbye.");
    let status = srv.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn declarative_keys_are_created_and_failures_stop_startup() {
    let dir = TempDir::new("decl");
    let admin = client_id();
    let cfg =
        write_config(&dir, &admin.identity, "keys:\n- name: minio-default-key\n- name: second\n");
    {
        let _srv = Running::start(&["server", "--config", cfg.to_str().unwrap(), "--no-mlock"]);
        let stored = std::fs::read_to_string(dir.join("keys").join("minio-default-key")).unwrap();
        assert!(stored.starts_with("Ci"), "F4 value");
        assert!(dir.join("keys").join("second").exists());
    }
    // Existing keys are left alone on the next start.
    let before = std::fs::read(dir.join("keys").join("second")).unwrap();
    drop(Running::start(&["server", "--config", cfg.to_str().unwrap(), "--no-mlock"]));
    assert_eq!(std::fs::read(dir.join("keys").join("second")).unwrap(), before);
    // A key the store refuses stops startup with a clear message.
    let cfg = write_config(&dir, &admin.identity, "keys:\n- name: bad.name\n");
    let o = kes(&["server", "--config", cfg.to_str().unwrap(), "--no-mlock"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("keys: failed to create key 'bad.name'"), "{}", stderr(&o));
}

#[test]
fn sighup_reloads_and_a_bad_config_keeps_the_old_one() {
    let dir = TempDir::new("hup");
    let admin = client_id();
    let cfg = write_config(&dir, &admin.identity, "");
    let srv = Running::start(&["server", "--config", cfg.to_str().unwrap(), "--no-mlock"]);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}keys:\n- name: after-reload\n")).unwrap();
    srv.signal("-HUP");
    assert_eq!(
        srv.wait_line("=> Reloading"),
        "=> Reloading configuration after SIGHUP signal completed. No policy or identity changes; TLS and key store reloaded."
    );
    assert!(dir.join("keys").join("after-reload").exists());
    // A policy change is named in the one reload line, and --signal-reload (the unit's
    // ExecReload=) checks the file before it signals.
    let policy = format!(
        "{text}keys:\n- name: after-reload\npolicy:\n  app:\n    allow:\n    - /v1/key/create/*\n    identities:\n    - {}\n",
        "a".repeat(64)
    );
    std::fs::write(&cfg, &policy).unwrap();
    let pid = srv.child.id().to_string();
    let o = kes(&["server", "--config", cfg.to_str().unwrap(), "--signal-reload", &pid]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("{}: checked; sent SIGHUP to PID {pid}\n", cfg.display())
    );
    assert_eq!(
        srv.wait_line("=> Reloading"),
        "=> Reloading configuration after SIGHUP signal completed. Changed: policy 'app' added, 1 identity assignment(s); TLS and key store reloaded."
    );
    std::fs::write(&cfg, "admin: [").unwrap();
    let o = kes(&["server", "--config", cfg.to_str().unwrap(), "--signal-reload", &pid]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.starts_with(&format!(
            "Error: reload refused, the server keeps its current configuration: {}: ",
            cfg.display()
        )),
        "{e}"
    );
    assert!(o.stdout.is_empty());
    srv.signal("-HUP");
    // Still serving with the old configuration.
    std::thread::sleep(Duration::from_millis(500));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", srv.port).parse().unwrap();
    let pem = std::fs::read(dir.join("server.crt")).unwrap();
    let cert = kes::server::tls::parse_certificates(&pem).unwrap().remove(0);
    let r = common::Client::connect(addr, &cert, Some(&admin)).get("/v1/key/describe/after-reload");
    assert_eq!(r.status, 200);
}

/// Without CAP_IPC_LOCK and with a finite RLIMIT_MEMLOCK the banner says that memory is
/// not locked, why and what to do; a reload then prints one line, not the banner again.
#[test]
fn mlock_disabled_is_said_once_with_the_fix() {
    let dir = TempDir::new("nolock");
    let admin = client_id();
    let cfg = write_config(&dir, &admin.identity, "");
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -l 64 && exec setpriv --bounding-set=-ipc_lock \"$0\" server --config \"$1\"",
        KES,
        cfg.to_str().unwrap(),
    ]);
    let srv = Running::start_cmd(cmd);
    let mlock: Vec<&String> = srv.banner.iter().filter(|l| l.starts_with("MLock")).collect();
    assert_eq!(
        mlock,
        [&format!(
            "MLock      disabled: the process lacks CAP_IPC_LOCK and RLIMIT_MEMLOCK is 65536 bytes, not unlimited; key material may be swapped to disk. To lock memory, {}",
            kes::sys::MLOCK_FIX
        )]
    );
    srv.signal("-HUP");
    let next = srv.lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        next.starts_with("=> Reloading configuration after SIGHUP signal completed. "),
        "{next}"
    );
}

#[test]
fn a_full_run_with_seccomp_and_mlock_keeps_the_server_alive() {
    let dir = TempDir::new("sec");
    let admin = client_id();
    let cfg = write_config(&dir, &admin.identity, "");
    let mut srv = Running::start(&["server", "--config", cfg.to_str().unwrap()]);
    assert!(
        srv.banner.iter().any(|l| l.starts_with("Seccomp") && l.contains("enabled")),
        "{:?}",
        srv.banner
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", srv.port).parse().unwrap();
    let pem = std::fs::read(dir.join("server.crt")).unwrap();
    let cert = kes::server::tls::parse_certificates(&pem).unwrap().remove(0);
    let mut c = common::Client::connect(addr, &cert, Some(&admin));
    assert_eq!(c.request("POST", "/v1/key/create/k", None).status, 200);
    let g = c.post("/v1/key/generate/k", "{}");
    let ct = g.json()["ciphertext"].as_str().unwrap().to_string();
    assert_eq!(c.post("/v1/key/decrypt/k", &format!("{{\"ciphertext\":\"{ct}\"}}")).status, 200);
    assert_eq!(c.get("/v1/key/list/").status, 200);
    assert_eq!(c.get("/v1/status").status, 200);
    assert_eq!(c.get("/v1/metrics").status, 200);
    assert_eq!(c.request("DELETE", "/v1/key/delete/k", None).status, 200);
    // Garbage and a client without a certificate must not kill it either.
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    use std::io::Write;
    let _ = raw.write_all(b"GET / HTTP/1.1\r\nHost: kes\r\n\r\n");
    drop(raw);
    let mut anon = common::Client::connect(addr, &cert, None);
    let _ = anon.send_raw(b"GET /version HTTP/1.1\r\nHost: kes\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(srv.child.try_wait().unwrap(), None, "the server died (SIGSYS?)");
    assert_eq!(common::Client::connect(addr, &cert, Some(&admin)).get("/version").status, 200);
    srv.signal("-TERM");
    assert_eq!(srv.child.wait().unwrap().code(), Some(0));
}

#[test]
fn mlock_flag_locks_or_fails_with_the_fix() {
    let dir = TempDir::new("mlock");
    let cfg = write_config(&dir, &client_id().identity, "");
    if kes::sys::mlock_obstacle().is_none() {
        let srv = Running::start(&["server", "--config", cfg.to_str().unwrap(), "--mlock"]);
        assert!(
            srv.banner.iter().any(|l| l.starts_with("MLock") && l.contains("enabled")),
            "{:?}",
            srv.banner
        );
    } else {
        let o = kes(&["server", "--config", cfg.to_str().unwrap(), "--mlock"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains(kes::sys::MLOCK_FIX), "{}", stderr(&o));
    }
}

/// Every recognisable needle of `text` as the server may have held it: the raw bytes and
/// their standard base64 (as JSON carries them).
fn needles(raw: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    // The base64 of a whole number of 3-byte groups, so padding does not matter.
    let whole = raw.len() / 3 * 4;
    vec![raw.to_vec(), b64.as_bytes()[..whole].to_vec()]
}

/// Which of `needles` occur anywhere in the writable mappings of process `pid`, read
/// through /proc/PID/mem. The server is non-dumpable, so this needs CAP_SYS_PTRACE (root);
/// without it the test fails rather than passing unseen.
fn found_in_memory(pid: u32, needles: &[(&str, Vec<u8>)]) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem"))
        .expect("/proc/PID/mem must be readable for this test (run as root or as the parent)");
    let mut found = std::collections::BTreeSet::new();
    let mut scanned = 0usize;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        if !perms.starts_with("rw") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (start, end) =
            (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
        let mut data = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut data).is_err() {
            continue; // a mapping that went away meanwhile
        }
        scanned += data.len();
        // One pass over the non-zero pages, looking at the bytes a needle can start with.
        let mut first = [false; 256];
        for (_, n) in needles {
            first[n[0] as usize] = true;
        }
        let zero = [0u8; 4096];
        for (p, page) in data.chunks(4096).enumerate() {
            if page == &zero[..page.len()] {
                continue;
            }
            let base = p * 4096;
            for i in base..base + page.len() {
                if !first[data[i] as usize] {
                    continue;
                }
                for (name, n) in needles {
                    if data[i..].starts_with(n) {
                        found.insert(name.to_string());
                    }
                }
            }
        }
    }
    assert!(scanned > 1 << 20, "scanned only {scanned} bytes");
    found.into_iter().collect()
}

/// No plaintext, imported key, data key, HMAC output or HMAC message survives a closed
/// connection anywhere in the server's writable memory (heap, thread stacks, rustls's
/// buffers), while the same scan does find bytes that are still live: an open
/// connection's unfinished request head. Without memory locking, a connection thread's
/// stack is zeroed and discarded as it ends.
#[test]
fn no_plaintext_is_left_in_the_server_memory() {
    no_plaintext_left("mem", &["--no-mlock"]);
}

/// The same with memory locked page by page (`MCL_ONFAULT`), where a thread's stack is
/// unlocked, discarded and locked again on fault as it ends; the banner proves the lock.
#[test]
fn no_plaintext_is_left_in_locked_server_memory() {
    no_plaintext_left("memlock", &[]);
}

fn no_plaintext_left(name: &str, flags: &[&str]) {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let dir = TempDir::new(name);
    let admin = client_id();
    let cfg = write_config(&dir, &admin.identity, "");
    let mut args = vec!["server", "--config", cfg.to_str().unwrap()];
    args.extend_from_slice(flags);
    let srv = Running::start(&args);
    if flags.is_empty() && kes::sys::mlock_obstacle().is_none() {
        assert!(
            srv.banner.iter().any(|l| l.starts_with("MLock") && l.contains("enabled")),
            "{:?}",
            srv.banner
        );
    }
    let pid = srv.child.id();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", srv.port).parse().unwrap();
    let pem = std::fs::read(dir.join("server.crt")).unwrap();
    let cert = kes::server::tls::parse_certificates(&pem).unwrap().remove(0);
    // Unique per run so an earlier run's bytes cannot be confused with this one's.
    let tag = format!("{:012}", std::process::id() as u64 * 7919 % 1_000_000_000_000);
    let plain = format!("KES-MARKER-ENCRYPT-PLAINTEXT-{tag}-012345").into_bytes();
    let hmac_msg = format!("KES-MARKER-HMAC-MESSAGE-{tag}-01234567890").into_bytes();
    let imported = format!("KES-MARKER-IMPORT-{tag}-X").into_bytes();
    assert_eq!((plain.len() % 3, hmac_msg.len() % 3, imported.len()), (0, 0, 32));
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for (what, raw) in
        [("plaintext", &plain), ("hmac message", &hmac_msg), ("imported key", &imported)]
    {
        for (i, n) in needles(raw).into_iter().enumerate() {
            secrets.push((format!("{what} #{i}"), n));
        }
    }
    {
        let mut c = common::Client::connect(addr, &cert, Some(&admin));
        assert_eq!(c.request("POST", "/v1/key/create/k", None).status, 200);
        let e = c.post("/v1/key/encrypt/k", &format!("{{\"plaintext\":\"{}\"}}", b64(&plain)));
        assert_eq!(e.status, 200, "{}", e.text());
        let ct = e.json()["ciphertext"].as_str().unwrap().to_string();
        let d = c.post("/v1/key/decrypt/k", &format!("{{\"ciphertext\":\"{ct}\"}}"));
        assert_eq!(d.json()["plaintext"].as_str().unwrap(), b64(&plain));
        let g = c.post("/v1/key/generate/k", "{}");
        let dek = g.json()["plaintext"].as_str().unwrap().to_string();
        let dek = base64::engine::general_purpose::STANDARD.decode(dek).unwrap();
        for (i, n) in needles(&dek).into_iter().enumerate() {
            secrets.push((format!("data key #{i}"), n));
        }
        let h = c.request(
            "PUT",
            "/v1/key/hmac/k",
            Some(format!("{{\"message\":\"{}\"}}", b64(&hmac_msg)).as_bytes()),
        );
        assert_eq!(h.status, 200, "{}", h.text());
        let mac = h.json()["hmac"].as_str().unwrap().to_string();
        let mac = base64::engine::general_purpose::STANDARD.decode(mac).unwrap();
        for (i, n) in needles(&mac).into_iter().enumerate() {
            secrets.push((format!("hmac #{i}"), n));
        }
        let body = format!("{{\"key\":\"{}\",\"cipher\":\"AES256\"}}", b64(&imported));
        let i = c.post("/v1/key/import/imp", &body);
        assert_eq!(i.status, 200, "{}", i.text());
        let e = c.post("/v1/key/encrypt/imp", &format!("{{\"plaintext\":\"{}\"}}", b64(b"x")));
        assert_eq!(e.status, 200, "{}", e.text());
        assert_eq!(c.request("DELETE", "/v1/key/delete/imp", None).status, 200);
    }
    // The positive control: an unfinished request head on a connection that stays open.
    let live = format!("KES-MARKER-LIVE-HEADER-{tag}");
    let mut open = common::Client::connect(addr, &cert, Some(&admin));
    open.send_raw(format!("GET /version HTTP/1.1\r\nX-Live: {live}\r\n").as_bytes()).unwrap();
    let control = vec![("live header".to_string(), live.into_bytes())];
    let all: Vec<(&str, Vec<u8>)> =
        secrets.iter().chain(&control).map(|(n, b)| (n.as_str(), b.clone())).collect();
    // The closed connection's thread ends shortly after the close, and the open one reads
    // its bytes shortly after they are sent: scan until both have happened (bounded), then
    // require that the secrets are gone and the live bytes are found.
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let found = found_in_memory(pid, &all);
        // Also wait for the server to have read the live bytes off the socket.
        if found == ["live header"] || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(found, vec!["live header".to_string()], "secrets left in the server's memory");
    drop(open);
}

/// A real server with key `k` that has answered one `generate`, idle, for the memory tests:
/// bursts of connections, then waits for their threads to end.
struct Bursted {
    srv: Running,
    _dir: TempDir,
    admin: common::ClientId,
    addr: std::net::SocketAddr,
    cert: rustls::pki_types::CertificateDer<'static>,
    idle_threads: u64,
}

impl Bursted {
    fn start(tag: &str, env: &[(&str, &str)]) -> Bursted {
        let dir = TempDir::new(tag);
        let admin = client_id();
        let cfg = write_config(&dir, &admin.identity, "");
        let mut cmd = Command::new(KES);
        cmd.args(["server", "--config", cfg.to_str().unwrap()])
            .env_remove("GLIBC_TUNABLES")
            .envs(env.iter().copied());
        let srv = Running::start_cmd(cmd);
        let addr = format!("127.0.0.1:{}", srv.port).parse().unwrap();
        let pem = std::fs::read(dir.join("server.crt")).unwrap();
        let cert = kes::server::tls::parse_certificates(&pem).unwrap().remove(0);
        let mut c = common::Client::connect(addr, &cert, Some(&admin));
        assert_eq!(c.request("POST", "/v1/key/create/k", None).status, 200);
        assert_eq!(c.post("/v1/key/generate/k", "{}").status, 200);
        drop(c);
        // The first connection's thread is gone once the count stops falling.
        std::thread::sleep(Duration::from_millis(500));
        let mut b = Bursted { srv, _dir: dir, admin, addr, cert, idle_threads: 0 };
        b.idle_threads = b.threads();
        b.settle();
        b
    }

    fn status(&self, field: &str) -> u64 {
        common::proc_status(self.srv.child.id(), field)
    }

    /// The size of the main heap ([`common::heap_kib`]). Unlike `VmData`, it leaves out
    /// thread stacks, of which glibc may hold the last exited detached thread's.
    fn heap_kib(&self) -> u64 {
        let kib = common::heap_kib(self.srv.child.id());
        assert!(kib > 0, "no [heap] mapping");
        kib
    }

    fn threads(&self) -> u64 {
        self.status("Threads:")
    }

    /// Waits (bounded) until the server is back to its idle thread count.
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.threads() > self.idle_threads && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(self.threads(), self.idle_threads, "connection threads did not end");
    }

    /// Opens `n` connections at once, each answering a `generate`. Each connection is used
    /// as soon as it is opened: the handshake deadline counts from accept, so opening all
    /// of them first would let the last ones time out on a loaded machine before their
    /// first request.
    fn burst(&self, n: usize) -> Vec<common::Client> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let mut c = common::Client::connect(self.addr, &self.cert, Some(&self.admin));
            let g = c.post("/v1/key/generate/k", "{}");
            assert_eq!(g.status, 200, "{}", g.text());
            conns.push(c);
        }
        // The kept connection threads are among the idle ones; the others are new.
        let kept = kes::server::workers::KEPT_THREADS.min(n) as u64;
        assert!(
            self.threads() >= self.idle_threads + n as u64 - kept,
            "{} threads",
            self.threads()
        );
        conns
    }
}

/// Connection threads give their stacks back as they end: after `N` concurrent connections
/// that each ran a `generate` (TLS handshake, key derivation, AES-GCM) have come and gone,
/// the server's RSS is back near its idle figure. When every thread zeroed its whole stack
/// on the way out (the wipe that made glibc's cached stacks fully resident, and under
/// mlockall locked), the 20 stacks glibc keeps cached alone held 40 MiB here (2 MiB debug
/// stacks); now a cached stack keeps only its top pages. Bounded by counts, not time: the
/// figure is read once the server is back to its idle thread count.
#[test]
fn connection_stacks_are_given_back_when_connections_end() {
    const N: usize = 100;
    /// What the N connections may leave behind: allocator fragmentation (a few tens of
    /// KiB per connection) and glibc's cache of up to 20 (debug) stacks, each keeping its
    /// top pages; far below the 40 MiB of fully resident cached stacks.
    const LEFT_BEHIND_KIB: u64 = 16 << 10;
    let b = Bursted::start("stacks", &[]);
    let idle = b.status("VmRSS:");
    drop(b.burst(N));
    b.settle();
    let after = b.status("VmRSS:");
    assert!(
        after <= idle + LEFT_BEHIND_KIB,
        "RSS {after} KiB after {N} connections ended, idle {idle} KiB"
    );
    eprintln!("RSS idle {idle} KiB, after {N} connections came and went {after} KiB");
}

/// Bursts of connections leave nothing behind in the heap: after bursts of concurrent
/// connections (each a TLS handshake and a `generate`) have come and gone, the main heap of
/// a server started by hand, without the unit's `GLIBC_TUNABLES`, is back to its idle size,
/// burst after burst. Under mlockall the heap's pages stay resident and locked, so its
/// high-water mark would be memory the server keeps. It was 3.1 MiB above idle, held up
/// by: the TLS vector (DTV) of the last ended thread's stack, which glibc keeps until the
/// next thread ends and which circulates with that stack (now connection threads are
/// joined, `server::reaper`); small blocks in fastbins and in the tcache of the threads that
/// outlive a burst (now no fastbins, and the server restarts itself with the tcache off,
/// `sys::tunables`); and a trim threshold glibc had raised to 2 MiB (now fixed). The server
/// is started without `GLIBC_TUNABLES`: its `/proc/PID/environ` shows the ones it restarted
/// with. Measured as the `[heap]` mapping, not `VmData` (which also counts thread stacks).
/// Read once the server is back to its idle thread count and, within a generous deadline,
/// once the heap is back (kept threads may still be closing their last connections).
#[test]
fn bursts_of_connections_leave_the_heap_as_idle() {
    const N: usize = 200;
    const ROUNDS: usize = 3;
    /// What the bursts may leave: allocator slack. Measured on the debug binary: 0 KiB
    /// before connection threads were kept (`server::workers`), 20 KiB with them; it was
    /// 3.1 MiB.
    const LEFT_BEHIND_KIB: u64 = 256;
    let b = Bursted::start("heap", &[]);
    assert_eq!(
        environ_tunables(b.srv.child.id()).as_deref(),
        Some(kes::sys::tunables::SERVER_TUNABLES.join(":").as_str())
    );
    let idle = b.heap_kib();
    let mut after_each = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        drop(b.burst(N));
        b.settle();
        // The kept connection threads count as idle ones, yet on a loaded machine they may
        // still be closing their last connections (close_notify, lingering) and holding
        // its buffers, which keeps the top of the heap up for a moment: wait (bounded) for
        // the heap to come back rather than read it once. Memory that stays fails after the
        // deadline.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut heap = b.heap_kib();
        while heap > idle + LEFT_BEHIND_KIB && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            heap = b.heap_kib();
        }
        after_each.push(heap);
    }
    eprintln!("heap idle {idle} KiB, after each of {ROUNDS} bursts of {N}: {after_each:?} KiB");
    assert!(
        after_each.iter().all(|&after| after <= idle + LEFT_BEHIND_KIB),
        "heap after each of {ROUNDS} bursts of {N} connections: {after_each:?} KiB, idle {idle} KiB"
    );
}

/// `GLIBC_TUNABLES` as the process at `pid` sees it, from `/proc/PID/environ`. glibc
/// splits the value in place (`:` becomes NUL) as it parses it, so the entries that follow
/// it are joined back.
fn environ_tunables(pid: u32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let mut entries = env.split(|&b| b == 0).map(|e| String::from_utf8_lossy(e).into_owned());
    let first =
        entries.by_ref().find_map(|e| e.strip_prefix("GLIBC_TUNABLES=").map(str::to_string))?;
    let mut parts = vec![first];
    parts.extend(entries.take_while(|e| e.starts_with("glibc.")));
    Some(parts.join(":"))
}

/// A `--dev` server on 127.0.0.1:0 without memory locking, started with `cmd`'s extra flags
/// and environment (and without the test's own `GLIBC_TUNABLES`).
fn dev_server(flags: &[&str], env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(KES);
    cmd.args(["server", "--dev", "--addr", "127.0.0.1:0", "--no-mlock"])
        .args(flags)
        .env_remove("GLIBC_TUNABLES")
        .env_remove(kes::sys::tunables::REEXECUTED)
        .envs(env.iter().copied());
    Running::start_cmd(cmd)
}

/// Started by hand, `kes server` restarts itself once, in place, with the unit's glibc
/// tunables, and says so in one line before the banner: the same PID, so systemd's
/// `Type=notify` sees `READY=1` from the main PID; an operator's own tunables are kept (and
/// theirs win); the unit's environment needs no restart; `--no-reexec` leaves the
/// environment as it is; a server that finds it was already restarted never restarts again.
#[test]
fn kes_server_restarts_itself_with_the_glibc_tunables() {
    let ours = kes::sys::tunables::SERVER_TUNABLES.join(":");
    let restart = |t: &str| {
        format!(
            "Restarted with GLIBC_TUNABLES={t} so that memory comes back after bursts of connections (--no-reexec: keep the environment as it is)"
        )
    };
    let dir = TempDir::new("notify");
    let sock = dir.join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    listener.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let srv = dev_server(&[], &[("NOTIFY_SOCKET", sock.to_str().unwrap())]);
    assert_eq!(srv.banner[0], restart(&ours));
    assert!(srv.banner[1].starts_with("Version "), "{:?}", srv.banner);
    assert_eq!(srv.banner.iter().filter(|l| l.starts_with("Restarted")).count(), 1);
    assert_eq!(environ_tunables(srv.child.id()), Some(ours.clone()));
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).unwrap();
    assert_eq!(String::from_utf8_lossy(&buf[..n]), format!("READY=1\nMAINPID={}", srv.child.id()));
    drop(srv);

    let own = "glibc.malloc.arena_max=1:glibc.malloc.tcache_count=7";
    let srv = dev_server(&[], &[("GLIBC_TUNABLES", own)]);
    let merged = format!("{own}:glibc.pthread.stack_cache_size=0");
    assert_eq!(srv.banner[0], restart(&merged));
    assert_eq!(environ_tunables(srv.child.id()), Some(merged));
    drop(srv);

    let srv = dev_server(&[], &[("GLIBC_TUNABLES", common::unit_glibc_tunables())]);
    assert!(srv.banner[0].starts_with("Version "), "{:?}", srv.banner);
    assert_eq!(environ_tunables(srv.child.id()).as_deref(), Some(common::unit_glibc_tunables()));
    drop(srv);

    let srv = dev_server(&["--no-reexec"], &[]);
    assert!(srv.banner[0].starts_with("Version "), "{:?}", srv.banner);
    assert_eq!(environ_tunables(srv.child.id()), None);
    let env = std::fs::read(format!("/proc/{}/environ", srv.child.id())).unwrap();
    assert!(!String::from_utf8_lossy(&env).contains(kes::sys::tunables::REEXECUTED));
    drop(srv);

    // Already restarted once, yet the tunables are missing (a C library that dropped
    // them): no second restart, a warning instead.
    let srv = dev_server(&[], &[(kes::sys::tunables::REEXECUTED, "1")]);
    assert_eq!(
        srv.banner[0],
        format!(
            "WARNING: restarted with GLIBC_TUNABLES={ours}, yet the C library does not show them; going on without"
        )
    );
    assert!(srv.banner[1].starts_with("Version "), "{:?}", srv.banner);
    assert_eq!(environ_tunables(srv.child.id()), None);
}

/// A server that restarts itself and then fails on its config file prints the config
/// error alone, exactly as `--no-reexec` does: the restart is said only once the server has
/// started, so it never sits above an error as if it were the cause.
#[test]
fn a_config_error_after_the_restart_is_printed_alone() {
    let dir = TempDir::new("restart-error");
    let config = dir.join("config.yml");
    std::fs::write(&config, "address: 127.0.0.1:0\nadmin:\n  identity: disabled\n").unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(KES)
            .args(["server", "--config", config.to_str().unwrap(), "--no-mlock"])
            .args(extra)
            .env_remove("GLIBC_TUNABLES")
            .env_remove(kes::sys::tunables::REEXECUTED)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let restarted = run(&[]);
    let plain = run(&["--no-reexec"]);
    assert_eq!(restarted.0, Some(1), "{restarted:?}");
    assert_eq!(restarted, plain);
    assert_eq!(restarted.1, "");
    assert_eq!(restarted.2, format!("Error: {}: tls.key: no private key\n", config.display()));
}

/// A binary with a file capability (`setcap cap_ipc_lock=+ep`) run by an ordinary user
/// runs in glibc's secure mode, where glibc erases these tunables from the environment and
/// ignores them: the server does not restart (it could not help, and it would find them
/// missing again), it warns once with the fix, and still starts, with memory locked by
/// the capability.
#[test]
fn a_binary_with_file_capabilities_warns_instead_of_restarting() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("setcap");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("kes");
    std::fs::copy(KES, &bin).unwrap();
    let set = Command::new("setcap").args(["cap_ipc_lock=+ep", bin.to_str().unwrap()]).status();
    if !set.is_ok_and(|s| s.success()) {
        panic!("setcap failed: this test needs root and a file system with extended attributes");
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&bin)
        .args(["server", "--dev", "--addr", "127.0.0.1:0"])
        .env("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
        .env_remove(kes::sys::tunables::REEXECUTED);
    let srv = Running::start_cmd(cmd);
    assert_eq!(
        srv.banner[0],
        format!("WARNING: {}", kes::sys::tunables::SECURE_MODE_WARNING),
        "{:?}",
        srv.banner
    );
    assert!(!srv.banner.iter().any(|l| l.starts_with("Restart")), "{:?}", srv.banner);
    assert_eq!(srv.banner.iter().filter(|l| l.contains("secure mode")).count(), 1);
    assert!(
        srv.banner.iter().any(|l| l.starts_with("MLock") && l.contains("enabled")),
        "{:?}",
        srv.banner
    );
}

/// No TLS session resumption, in either TLS version: a client that caches sessions (rustls's
/// default) gets a full handshake on its second connection too, so every connection
/// proves possession of its key, and no server-side session cache is filled by whoever
/// completes handshakes.
#[test]
fn sessions_are_never_resumed() {
    use rustls::HandshakeKind;
    let dir = TempDir::new("resume");
    let admin = client_id();
    let cfg = write_config(&dir, &admin.identity, "");
    let srv = Running::start(&["server", "--config", cfg.to_str().unwrap(), "--no-mlock"]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", srv.port).parse().unwrap();
    let pem = std::fs::read(dir.join("server.crt")).unwrap();
    let cert = kes::server::tls::parse_certificates(&pem).unwrap().remove(0);
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let config = common::client_config_for(&cert, Some(&admin), versions);
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let sock = std::net::TcpStream::connect(addr).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
            let mut c = common::Client::from_parts(rustls::StreamOwned::new(conn, sock));
            // A whole request and its answer: TLS 1.3 tickets would have arrived by then.
            let r = c.get("/version");
            assert_eq!(r.status, 200, "{}", r.text());
            kinds.push(c.tls.conn.handshake_kind());
        }
        assert_eq!(kinds, [Some(HandshakeKind::Full), Some(HandshakeKind::Full)], "{versions:?}");
    }
}
