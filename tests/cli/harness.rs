//! Runs the real `kes` binary: as a client (plain pipes, or under a pseudo-terminal via
//! util-linux `script`), and as a server subprocess on 127.0.0.1:0 whose banner tells the
//! port. Every run starts from an empty environment, so nothing of the developer's shell
//! (KES_SERVER, SSL_CERT_FILE, COMP_LINE, …) leaks in.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const KES: &str = env!("CARGO_BIN_EXE_kes");

/// How long a server may take to print its banner.
const STARTUP: Duration = Duration::from_secs(30);

/// The project's temporary directory helper (removed on drop).
pub use crate::common::TempDir;

/// What a finished command left behind.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts success and no stderr; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!((self.code, self.stderr.as_str()), (0, ""), "stdout: {}", self.stdout);
        &self.stdout
    }

    /// Asserts exit code 1, nothing on stdout, and exactly `Error: <msg>\n` on stderr.
    #[track_caller]
    pub fn fails_with(&self, msg: &str) {
        assert_eq!(
            (self.code, self.stdout.as_str(), self.stderr.as_str()),
            (1, "", format!("Error: {msg}\n").as_str())
        );
    }
}

/// A `kes` invocation being built.
#[derive(Clone)]
pub struct Cmd {
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: Option<PathBuf>,
}

pub fn kes(args: &[&str]) -> Cmd {
    Cmd { args: args.iter().map(|s| s.to_string()).collect(), env: Vec::new(), dir: None }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Cmd {
    pub fn env(mut self, k: &str, v: &str) -> Cmd {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    pub fn envs(mut self, pairs: &[(String, String)]) -> Cmd {
        self.env.extend(pairs.iter().cloned());
        self
    }

    pub fn dir(mut self, d: &Path) -> Cmd {
        self.dir = Some(d.to_path_buf());
        self
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env_clear();
        c.env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(d) = &self.dir {
            c.current_dir(d);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs with stdout and stderr as pipes (a script's view).
    pub fn run(&self) -> Out {
        let o = self.command(KES).args(&self.args).output().expect("run kes");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Runs under a pseudo-terminal (a person's view): stdout and stderr are both the
    /// terminal, so `stdout` holds both, with the terminal's `\r\n` turned back into `\n`.
    pub fn tty(&self) -> Out {
        let line = std::iter::once(KES.to_string())
            .chain(self.args.iter().cloned())
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ");
        let o = self
            .command("script")
            .args(["-qec", &line, "/dev/null"])
            .output()
            .expect("util-linux 'script' is needed for the terminal tests");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).replace("\r\n", "\n"),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Starts it in the background with stdout piped (for endless commands).
    pub fn spawn(&self, tty: bool) -> Child {
        let mut c = if tty {
            let line = std::iter::once(KES.to_string())
                .chain(self.args.iter().cloned())
                .map(|a| shell_quote(&a))
                .collect::<Vec<_>>()
                .join(" ");
            let mut c = self.command("script");
            c.args(["-qfec", &line, "/dev/null"]);
            c
        } else {
            let mut c = self.command(KES);
            c.args(&self.args);
            c
        };
        c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn")
    }
}

/// Reads a child's stdout in the background; `wait_for` blocks until a line matches.
pub struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    pub fn follow(child: &mut Child) -> Lines {
        let out = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line.replace('\r', ""));
            }
        });
        Lines { lines }
    }

    /// Waits up to `within` for a line containing `needle`; returns all lines so far.
    #[track_caller]
    pub fn wait_for(&self, needle: &str, within: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            {
                let l = self.lines.lock().unwrap();
                if l.iter().any(|x| x.contains(needle)) {
                    return l.clone();
                }
            }
            if start.elapsed() > within {
                panic!(
                    "no line with {needle:?} within {within:?}: {:?}",
                    self.lines.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until at least `n` lines arrived.
    #[track_caller]
    pub fn wait_for_count(&self, n: usize, within: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let l = self.all();
            if l.len() >= n {
                return l;
            }
            if start.elapsed() > within {
                panic!("fewer than {n} lines within {within:?}: {l:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// A port on which nothing listens (bound, then released).
pub fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A `kes server` subprocess.
pub struct Server {
    child: Child,
    lines: Lines,
    stderr: Arc<Mutex<String>>,
    pub port: u16,
    /// The admin API key `--dev` prints.
    pub dev_api_key: Option<String>,
}

impl Server {
    /// `kes <args>` in `dir`, waiting for the banner.
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        let mut child = kes(args).dir(dir).spawn(false);
        let lines = Lines::follow(&mut child);
        let err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let start = Instant::now();
        loop {
            let all = lines.all();
            if all.iter().any(|l| l.contains("=> Server is up and running")) {
                let port = all
                    .iter()
                    .find_map(|l| l.split("https://127.0.0.1:").nth(1))
                    .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|p| p.parse().ok())
                    .expect("the banner names the port");
                let dev_api_key = all
                    .iter()
                    .find(|l| l.starts_with("API Key"))
                    .and_then(|l| l.split_whitespace().last())
                    .map(str::to_string);
                return Server { child, lines, stderr, port, dev_api_key };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("kes server exited with {status}: {}\n{:?}", stderr.lock().unwrap(), all);
            }
            if start.elapsed() > STARTUP {
                let _ = child.kill();
                panic!("kes server did not start: {}\n{:?}", stderr.lock().unwrap(), all);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kes server --dev --addr 127.0.0.1:0`.
    pub fn dev(dir: &Path) -> Server {
        Server::start(dir, &["server", "--dev", "--addr", "127.0.0.1:0"])
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Kills the server now.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines.all()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server with a config: an admin API key, one user with certificate files and a
/// policy, and a server certificate (made by `kes identity new`) trusted by the clients
/// through SSL_CERT_FILE.
pub struct Fixture {
    pub dir: TempDir,
    pub server: Server,
    pub admin_key: String,
    pub admin_id: String,
    pub user_id: String,
}

/// The policy section of the fixture's config (`{user}` is replaced by its identity).
const POLICIES: &str = "policy:
  app:
    allow:
    - /v1/key/create/app-*
    - /v1/key/generate/app-*
    - /v1/key/encrypt/app-*
    - /v1/key/decrypt/app-*
    - /v1/key/describe/app-*
    - /v1/status
    deny:
    - /v1/key/create/app-denied*
    identities:
    - {user}
  ops:
    allow:
    - /v1/metrics
";

impl Fixture {
    pub fn start() -> Fixture {
        let dir = TempDir::new("fx");
        kes(&[
            "identity",
            "new",
            "--key",
            "server.key",
            "--cert",
            "server.crt",
            "--ip",
            "127.0.0.1",
            "localhost",
        ])
        .dir(dir.path())
        .run()
        .ok();
        kes(&["identity", "new", "--key", "user.key", "--cert", "user.crt", "user"])
            .dir(dir.path())
            .run()
            .ok();
        let user_id = kes(&["identity", "of", "user.crt"]).dir(dir.path()).run().ok().to_string();
        let admin_key = kes(&["identity"]).run().ok().to_string();
        let admin_id = kes(&["identity", &admin_key]).run().ok().to_string();
        let config = format!(
            "address: 127.0.0.1:0\nadmin:\n  identity: {admin_id}\ntls:\n  key: server.key\n  cert: server.crt\n{}keystore:\n  fs:\n    path: keys\n",
            POLICIES.replace("{user}", &user_id)
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let server = Server::start(dir.path(), &["server", "--config", "config.yml"]);
        Fixture { dir, server, admin_key, admin_id, user_id }
    }

    fn base_env(&self) -> Vec<(String, String)> {
        vec![
            ("KES_SERVER".into(), self.server.url()),
            ("SSL_CERT_FILE".into(), self.dir.join("server.crt").display().to_string()),
        ]
    }

    /// `kes <args>` as the admin (API key).
    pub fn admin(&self, args: &[&str]) -> Cmd {
        kes(args).envs(&self.base_env()).env("KES_API_KEY", &self.admin_key).dir(self.dir.path())
    }

    /// `kes <args>` as the user (certificate and key files).
    pub fn user(&self, args: &[&str]) -> Cmd {
        kes(args)
            .envs(&self.base_env())
            .env("KES_CLIENT_CERT", "user.crt")
            .env("KES_CLIENT_KEY", "user.key")
            .dir(self.dir.path())
    }
}

/// A 32-byte key in base64 for `kes key import`.
pub const IMPORT_KEY: &str = "Xlnr/nOgAWE5cA7GAsl3L2goCvmfs6KE0gNgB1T93wE=";

/// Standard base64.
pub fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The string value of `field` in a JSON object text.
#[track_caller]
pub fn json_field(text: &str, field: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    v[field].as_str().unwrap_or_else(|| panic!("no {field} in {text}")).to_string()
}
