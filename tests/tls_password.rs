//! `tls.password` on the real binary (`kes-config-cli.md` §1.1, §1.3 step 12): a server key
//! encrypted by the openssl CLI in the legacy PEM format (`Proc-Type: 4,ENCRYPTED`) is
//! decrypted with the password from the config (here `${KES_TLS_PASSWORD}` from the
//! server's environment), the server comes up with seccomp on and answers over TLS, and a
//! SIGHUP reload decrypts the replaced key again. A wrong or missing password and PKCS#8
//! encryption stop the startup with exit 1 and a message naming the key file.

mod common;

use common::{TempDir, client_id};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const KES: &str = env!("CARGO_BIN_EXE_kes");
const PASSWORD: &str = "correct horse battery staple";

/// Runs `openssl <args>`; panics with its stderr on failure.
#[track_caller]
fn openssl(args: &[&str]) {
    let o = Command::new("openssl").args(args).output().expect("the openssl CLI is needed");
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A self-signed server certificate with SAN IP:127.0.0.1 and its plain key, by openssl.
fn openssl_cert(dir: &Path, tag: &str, newkey: &[&str]) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join(format!("{tag}.crt")), dir.join(format!("{tag}.plain.key")));
    let mut args = vec!["req", "-x509", "-newkey"];
    args.extend_from_slice(newkey);
    args.extend([
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        // Not a CA, which rustls refuses as a server certificate.
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-keyout",
        s(&key),
        "-out",
        s(&crt),
    ]);
    openssl(&args);
    (crt, key)
}

/// `plain` encrypted in the legacy format with `openssl <tool> -<cipher>`.
fn encrypt(plain: &Path, tool: &str, cipher: &str, password: &str, out: &Path) {
    let pass = format!("pass:{password}");
    let mut args = vec![tool, "-in", s(plain), cipher, "-passout", &pass, "-out", s(out)];
    if tool == "rsa" {
        args.push("-traditional");
    }
    openssl(&args);
    let pem = std::fs::read_to_string(out).unwrap();
    assert!(pem.contains("Proc-Type: 4,ENCRYPTED"), "{pem}");
}

const EC: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

/// The config: the given TLS files, `tls.password: ${KES_TLS_PASSWORD}` and an fs store.
fn write_config(dir: &Path, admin: &str, crt: &Path, key: &Path, password: bool) -> PathBuf {
    let cfg = dir.join("config.yml");
    let password = if password { "  password: ${KES_TLS_PASSWORD}\n" } else { "" };
    std::fs::write(
        &cfg,
        format!(
            "address: 127.0.0.1:0\nadmin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\n{password}keystore:\n  fs:\n    path: {}\n",
            s(key),
            s(crt),
            s(&dir.join("keys"))
        ),
    )
    .unwrap();
    cfg
}

fn command(cfg: &Path, password: Option<&str>) -> Command {
    let mut c = Command::new(KES);
    c.args(["server", "--config", s(cfg), "--no-mlock"]).env_remove("KES_TLS_PASSWORD");
    if let Some(p) = password {
        c.env("KES_TLS_PASSWORD", p);
    }
    c.stdin(Stdio::null());
    c
}

/// A running server whose stdout lines arrive on a channel.
struct Running {
    child: Child,
    lines: Receiver<String>,
    port: u16,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let _ = child.kill();
                let o = child.wait_with_output().unwrap();
                panic!("server did not start: {}", String::from_utf8_lossy(&o.stderr));
            };
            let done = line.contains("=> Server is up and running");
            banner.push(line);
            if done {
                break;
            }
        }
        assert!(
            banner.iter().any(|l| l.starts_with("Seccomp") && l.contains("enabled")),
            "{banner:?}"
        );
        let port = banner
            .iter()
            .find_map(|l| l.split("https://127.0.0.1:").nth(1))
            .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok())
            .expect("port in banner");
        Running { child, lines, port }
    }

    fn wait_line(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no line with {needle:?}"));
            if line.contains(needle) {
                return;
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_cert(crt: &Path) -> rustls::pki_types::CertificateDer<'static> {
    kes::server::tls::parse_certificates(&std::fs::read(crt).unwrap()).unwrap().remove(0)
}

#[test]
fn an_openssl_encrypted_key_decrypts_with_tls_password_at_start_and_on_reload() {
    let dir = TempDir::new("tlspw");
    let admin = client_id();
    let (crt, plain) = openssl_cert(dir.path(), "ec", EC);
    let key = dir.join("server.key");
    encrypt(&plain, "ec", "-aes256", PASSWORD, &key);
    let cfg = write_config(dir.path(), &admin.identity, &crt, &key, true);
    let srv = Running::start(command(&cfg, Some(PASSWORD)));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", srv.port).parse().unwrap();
    let mut c = common::Client::connect(addr, &server_cert(&crt), Some(&admin));
    assert_eq!(c.request("POST", "/v1/key/create/k", None).status, 200);
    assert_eq!(c.get("/v1/status").status, 200);

    // A new RSA key and certificate, AES-128 encrypted under the same password, replace the
    // files; SIGHUP makes the server (seccomp on) read and decrypt them.
    let (crt2, plain2) = openssl_cert(dir.path(), "rsa", &["rsa:2048"]);
    let key2 = dir.join("server2.key");
    encrypt(&plain2, "rsa", "-aes128", PASSWORD, &key2);
    std::fs::rename(&key2, &key).unwrap();
    std::fs::rename(&crt2, &crt).unwrap();
    let hup = Command::new("kill").args(["-HUP", &srv.child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    srv.wait_line("=> Reloading configuration after SIGHUP signal completed.");
    let mut c = common::Client::connect(addr, &server_cert(&crt), Some(&admin));
    assert_eq!(c.get("/v1/key/describe/k").status, 200);
}

/// Startup fails with exit 1 and `Error: <message>` naming the key file.
#[track_caller]
fn fails(cmd: Command, want: &str) {
    let mut cmd = cmd;
    let o = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("Error: ") && stderr.contains(want), "{stderr}");
}

#[test]
fn a_wrong_or_missing_password_or_pkcs8_encryption_stops_the_start() {
    let dir = TempDir::new("tlspw-bad");
    let admin = client_id();
    let (crt, plain) = openssl_cert(dir.path(), "ec", EC);
    let key = dir.join("server.key");
    encrypt(&plain, "ec", "-aes192", PASSWORD, &key);
    let cfg = write_config(dir.path(), &admin.identity, &crt, &key, true);
    fails(
        command(&cfg, Some("wrong")),
        &format!("tls.key: '{}': private key is encrypted: incorrect password", key.display()),
    );
    fails(
        command(&cfg, Some("")),
        &format!("tls.key: '{}': private key is encrypted: password required", key.display()),
    );
    let cfg = write_config(dir.path(), &admin.identity, &crt, &key, false);
    fails(
        command(&cfg, None),
        &format!("tls.key: '{}': private key is encrypted: password required", key.display()),
    );

    // DES-EDE3 (which upstream reads) and PKCS#8 encryption say how to convert the key.
    encrypt(&plain, "ec", "-des3", PASSWORD, &key);
    let cfg = write_config(dir.path(), &admin.identity, &crt, &key, true);
    fails(command(&cfg, Some(PASSWORD)), "unsupported cipher DES-EDE3-CBC");
    let pass = format!("pass:{PASSWORD}");
    openssl(&["pkcs8", "-topk8", "-in", s(&plain), "-passout", &pass, "-out", s(&key)]);
    fails(command(&cfg, Some(PASSWORD)), "PKCS#8 encrypted private keys");
}
