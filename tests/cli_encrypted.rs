//! Encrypted private keys in the `kes` CLI (`kes-config-cli.md` §4.1, §4.3), with a person
//! at a terminal: util-linux `script` gives the command a pseudo-terminal, the test waits
//! for the prompt on it and only then types the password, so the password must not be
//! echoed. Covered: `kes identity new --encrypt` (two prompts, Go's legacy AES-256-CBC
//! `PRIVATE KEY` block that openssl reads), client commands with such a key and with an
//! `openssl ec -aes128` key against a real `kes server`, a wrong password, no terminal at all
//! (`setsid`), and keys that are refused before any prompt.

#[path = "common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "cli/harness.rs"]
mod harness;

use harness::{KES, Server, TempDir, kes};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROMPT: &str = "Enter password for private key: ";
const CONFIRM: &str = "Confirm password for private key: ";
const PASSWORD: &str = "s3cret-Pa55";

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `kes <args>` on a pseudo-terminal, typed into by the test.
struct Terminal {
    child: Child,
    keyboard: Option<ChildStdin>,
    screen: Arc<Mutex<Vec<u8>>>,
    /// How much of the screen `expect` has consumed.
    seen: usize,
    /// Copies the terminal's output until `script` exits.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Terminal {
    fn start(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Terminal {
        let line = std::iter::once(KES)
            .chain(args.iter().copied())
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ");
        Terminal::shell(dir, env, &line)
    }

    /// A shell command line on the terminal.
    fn shell(dir: &Path, env: &[(&str, &str)], line: &str) -> Terminal {
        let mut child = Command::new("script")
            .args(["-qfec", line, "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("util-linux 'script' is needed for the terminal tests");
        let mut out = child.stdout.take().unwrap();
        let screen = Arc::new(Mutex::new(Vec::new()));
        let sink = screen.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal { keyboard: child.stdin.take(), child, screen, seen: 0, reader: Some(reader) }
    }

    /// What the terminal showed, with `\r\n` as `\n` and without colour codes.
    fn screen(&self) -> String {
        let text = String::from_utf8_lossy(&self.screen.lock().unwrap()).replace("\r\n", "\n");
        let mut plain = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                // CSI: ESC [ parameters final-byte.
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        plain
    }

    /// Waits until `text` appears after what was already seen.
    #[track_caller]
    fn expect(&mut self, text: &str) {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if let Some(i) = screen.get(self.seen..).and_then(|rest| rest.find(text)) {
                self.seen += i + text.len();
                return;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("{text:?} did not appear on the terminal: {screen:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn type_line(&mut self, line: &str) {
        let k = self.keyboard.as_mut().unwrap();
        k.write_all(format!("{line}\n").as_bytes()).unwrap();
        k.flush().unwrap();
    }

    /// Waits for the command to end: its exit code and everything the terminal showed.
    fn finish(mut self) -> (i32, String) {
        drop(self.keyboard.take());
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("the command did not end: {:?}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The reader ends once script has exited and its output is drained.
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (status.code().unwrap_or(-1), self.screen())
    }
}

/// `kes <args>` in a new session without a controlling terminal (as under cron or systemd).
fn without_terminal(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let o = Command::new("setsid")
        .arg("-w")
        .arg(KES)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("util-linux 'setsid'");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[track_caller]
fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is needed");
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// `kes identity new --encrypt`, typing `password` and `confirm`.
fn new_encrypted(
    dir: &Path,
    key: &str,
    cert: &str,
    password: &str,
    confirm: &str,
) -> (i32, String) {
    let mut t = Terminal::start(
        dir,
        &[],
        &["identity", "new", "--encrypt", "--key", key, "--cert", cert, "client"],
    );
    t.expect(PROMPT);
    t.type_line(password);
    t.expect(CONFIRM);
    t.type_line(confirm);
    t.finish()
}

#[test]
fn identity_new_encrypt_writes_a_key_that_the_cli_and_openssl_decrypt() {
    let dir = TempDir::new("cli-enc");
    let (code, screen) = new_encrypted(dir.path(), "client.key", "client.crt", PASSWORD, PASSWORD);
    assert_eq!(code, 0, "{screen}");
    assert!(!screen.contains(PASSWORD), "the password was echoed: {screen}");
    assert!(screen.contains("Your API key:"), "{screen}");

    let pem = std::fs::read_to_string(dir.join("client.key")).unwrap();
    let lines: Vec<&str> = pem.lines().collect();
    assert_eq!(lines[0], "-----BEGIN PRIVATE KEY-----");
    assert_eq!(lines[1], "Proc-Type: 4,ENCRYPTED");
    assert!(lines[2].starts_with("DEK-Info: AES-256-CBC,"), "{pem}");
    let mode = std::fs::metadata(dir.join("client.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // OpenSSL (and so Go) reads it: an Ed25519 key.
    let pass = format!("pass:{PASSWORD}");
    openssl(dir.path(), &["pkey", "-in", "client.key", "-passin", &pass, "-out", "plain.key"]);
    let plain = std::fs::read_to_string(dir.join("plain.key")).unwrap();
    assert!(plain.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{plain}");

    // `kes identity FILE` asks for the password and prints the API key of the certificate.
    let id = kes(&["identity", "of", "client.crt"]).dir(dir.path()).run().ok().to_string();
    let mut t = Terminal::start(dir.path(), &[], &["identity", "client.key"]);
    t.expect(PROMPT);
    t.type_line(PASSWORD);
    let (code, screen) = t.finish();
    assert_eq!(code, 0, "{screen}");
    let api_key = screen.split("API key:").nth(1).unwrap().trim().to_string();
    assert_eq!(kes(&["identity", &api_key]).run().ok(), id);
}

#[test]
fn identity_new_encrypt_refuses_mismatched_or_empty_passwords_and_needs_a_terminal() {
    let dir = TempDir::new("cli-enc-new");
    let (code, screen) = new_encrypted(dir.path(), "a.key", "a.crt", PASSWORD, "other");
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains("Error: passwords don't match"), "{screen}");
    let (code, screen) = new_encrypted(dir.path(), "a.key", "a.crt", "", "");
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains("Error: the password is empty"), "{screen}");

    let (code, out, err) = without_terminal(
        dir.path(),
        &[],
        &["identity", "new", "--encrypt", "--key", "a.key", "--cert", "a.crt"],
    );
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            1,
            "",
            "Error: --encrypt needs a terminal to ask for the password, and none is available\n"
        )
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was written");
}

/// A server whose admin is a `kes identity new --encrypt` identity and whose policy lets an
/// openssl-made, `openssl ec -aes128`-encrypted client list keys.
struct Setup {
    dir: TempDir,
    server: Server,
}

impl Setup {
    fn start() -> Setup {
        let dir = TempDir::new("cli-enc-srv");
        let d = dir.path();
        kes(&[
            "identity",
            "new",
            "--key",
            "server.key",
            "--cert",
            "server.crt",
            "--ip",
            "127.0.0.1",
        ])
        .dir(d)
        .run()
        .ok();
        let (code, screen) = new_encrypted(d, "admin.key", "admin.crt", PASSWORD, PASSWORD);
        assert_eq!(code, 0, "{screen}");
        let admin = kes(&["identity", "of", "admin.crt"]).dir(d).run().ok().to_string();

        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=app",
                // Not a CA: the server does not take a CA certificate as a client identity.
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-keyout",
                "app.plain",
                "-out",
                "app.crt",
            ],
        );
        let pass = format!("pass:{PASSWORD}");
        openssl(d, &["ec", "-in", "app.plain", "-aes128", "-passout", &pass, "-out", "app.key"]);
        let app = kes(&["identity", "of", "app.crt"]).dir(d).run().ok().to_string();

        std::fs::write(
            dir.join("config.yml"),
            format!(
                "address: 127.0.0.1:0\nadmin:\n  identity: {admin}\ntls:\n  key: server.key\n  cert: server.crt\npolicy:\n  app:\n    allow:\n    - /v1/key/list/*\n    identities:\n    - {app}\nkeystore:\n  fs:\n    path: keys\n"
            ),
        )
        .unwrap();
        let server = Server::start(d, &["server", "--config", "config.yml", "--no-mlock"]);
        Setup { dir, server }
    }

    fn env<'a>(&'a self, url: &'a str, who: &str) -> Vec<(&'a str, &'a str)> {
        let (key, cert) = match who {
            "admin" => ("admin.key", "admin.crt"),
            _ => ("app.key", "app.crt"),
        };
        vec![
            ("KES_SERVER", url),
            ("SSL_CERT_FILE", "server.crt"),
            ("KES_CLIENT_KEY", key),
            ("KES_CLIENT_CERT", cert),
        ]
    }

    /// `kes <args>` as `who`, typing `password` at the prompt.
    fn run(&self, who: &str, password: &str, args: &[&str]) -> (i32, String) {
        let url = self.server.url();
        let mut t = Terminal::start(self.dir.path(), &self.env(&url, who), args);
        t.expect(PROMPT);
        t.type_line(password);
        t.finish()
    }
}

#[test]
fn client_commands_ask_for_the_password_of_an_encrypted_key() {
    let s = Setup::start();
    let (code, screen) = s.run("admin", PASSWORD, &["key", "create", "my-key"]);
    assert_eq!(code, 0, "{screen}");
    assert!(!screen.contains(PASSWORD), "the password was echoed: {screen}");
    assert!(s.dir.join("keys").join("my-key").exists());

    // The openssl-encrypted key of the app identity (MINIO_KES_KEY_FILE wins over
    // KES_CLIENT_KEY, as upstream).
    let url = s.server.url();
    let mut env = s.env(&url, "app");
    env.push(("MINIO_KES_KEY_FILE", "app.key"));
    env.retain(|(k, _)| *k != "KES_CLIENT_KEY");
    env.push(("KES_CLIENT_KEY", "admin.key"));
    let mut t = Terminal::start(s.dir.path(), &env, &["ls"]);
    t.expect(PROMPT);
    t.type_line(PASSWORD);
    let (code, screen) = t.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("my-key"), "{screen}");

    // With stderr redirected, the prompt still reaches the person at the terminal.
    let line = format!("{} ls 2>err.txt", shell_quote(KES));
    let mut t = Terminal::shell(s.dir.path(), &s.env(&url, "admin"), &line);
    t.expect(PROMPT);
    t.type_line(PASSWORD);
    let (code, screen) = t.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("my-key"), "{screen}");
    assert_eq!(std::fs::read_to_string(s.dir.join("err.txt")).unwrap(), "");

    let (code, screen) = s.run("app", "wrong", &["ls"]);
    assert_eq!(code, 1, "{screen}");
    assert!(screen.ends_with("Error: incorrect password\n"), "{screen:?}");
    let (code, screen) = s.run("admin", "", &["ls"]);
    assert_eq!(code, 1, "{screen}");
    assert!(screen.ends_with("Error: incorrect password\n"), "{screen:?}");
}

#[test]
fn without_a_terminal_or_with_an_unsupported_key_there_is_no_prompt() {
    let s = Setup::start();
    let url = s.server.url();
    let (code, out, err) = without_terminal(s.dir.path(), &s.env(&url, "admin"), &["ls"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            1,
            "",
            "Error: failed to read TLS private key: 'admin.key' is encrypted and no terminal is \
             available to ask for its password\n"
        )
    );

    // DES-EDE3 and PKCS#8 encryption: refused at once, with the openssl command to use.
    let d = s.dir.path();
    let pass = format!("pass:{PASSWORD}");
    for (file, args, want) in [
        (
            "des.key",
            vec!["ec", "-in", "app.plain", "-des3", "-passout", &pass, "-out", "des.key"],
            "Error: failed to read TLS private key: unsupported cipher DES-EDE3-CBC: ",
        ),
        (
            "p8.key",
            vec!["pkcs8", "-topk8", "-in", "app.plain", "-passout", &pass, "-out", "p8.key"],
            "Error: failed to read TLS private key: PKCS#8 encrypted private keys",
        ),
    ] {
        openssl(d, &args);
        let mut env = s.env(&url, "app");
        env.retain(|(k, _)| *k != "KES_CLIENT_KEY");
        env.push(("KES_CLIENT_KEY", file));
        let (code, screen) = Terminal::start(d, &env, &["ls"]).finish();
        assert_eq!(code, 1, "{screen}");
        assert!(screen.starts_with(want), "{screen:?}");
        assert!(!screen.contains(PROMPT), "{screen:?}");
    }
}
