//! Start-to-ready time of `kes server` from the sealed cache (`cache.persist`) while the
//! vault refuses connections, and the disk cost per sealed key (issue 13).
//!
//! `cargo build --release && cargo run --release --example sealed_start [-- KEYS RUNS]`
//! (defaults 10000 keys, 5 runs). It seals KEYS generated keys with the library, exactly as
//! the server writes them, then starts the release binary (`target/release/kes`, or
//! `$KES_BIN`) RUNS times against a vault address that refuses connections and times
//! spawn -> "=> Server is up and running" on stdout (every sealed copy read, authenticated
//! and parsed by then). The reference, measured in the same run: the same start with an
//! empty cache directory.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kes::crypto::{Algorithm, KeyVersion};
use kes::keystore::sealed::SealedCache;

const SEAL: [u8; 32] = [0x42; 32];

fn kes_bin() -> PathBuf {
    std::env::var_os("KES_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/kes"))
}

/// Spawns the server and returns (time to the ready line, the banner's cache lines).
fn start(dir: &Path) -> (Duration, String) {
    let started = Instant::now();
    let mut child = Command::new(kes_bin())
        .args(["server", "--config"])
        .arg(dir.join("config.yml"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the kes binary (build it with cargo build --release)");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut cache = String::new();
    let mut in_cache = false;
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
            panic!("server exited before it was ready: {err}");
        }
        if line.starts_with("Cache") || (in_cache && line.starts_with("   ")) {
            in_cache = true;
            cache.push_str(&line);
        } else {
            in_cache = false;
        }
        if line.starts_with("=> Server is up and running") {
            break;
        }
    }
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    (elapsed, cache)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let keys: usize = args.next().map_or(10_000, |a| a.parse().expect("KEYS"));
    let runs: usize = args.next().map_or(5, |a| a.parse().expect("RUNS"));
    let dir = std::env::temp_dir().join(format!("kes-sealed-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ok = Command::new(kes_bin())
        .args(["identity", "new", "--key", "server.key", "--cert", "server.crt", "--ip"])
        .args(["127.0.0.1", "localhost", "--force"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .status()
        .expect("run the kes binary")
        .success();
    assert!(ok, "kes identity new failed");
    // A port nothing listens on: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("https://127.0.0.1:{port}");
    let seal_file = dir.join("seal.key");
    std::fs::write(&seal_file, "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=\n").unwrap();
    std::fs::set_permissions(&seal_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    let config = |cache: &str| {
        format!(
            "address: 127.0.0.1:0\nadmin:\n  identity: disabled\n\
             tls:\n  key: server.key\n  cert: server.crt\n\
             cache:\n  persist:\n    path: {cache}\n    seal: file:{}\n\
             keystore:\n  azure:\n    keyvault:\n      endpoint: {endpoint}\n      credentials:\n\
             \x20       tenant_id: t\n        client_id: c\n        client_secret: s\n",
            seal_file.display()
        )
    };
    let full = dir.join("cache");
    let empty = dir.join("empty");

    // Seal the keys as the server does (same store description, same sealing key).
    let sealed = SealedCache::open(
        &full,
        &SEAL,
        &format!("Azure KeyVault: {endpoint}"),
        Duration::from_secs(3600),
        Box::new(|_, m| eprintln!("{m}")),
    )
    .unwrap();
    let t = Instant::now();
    let now = time::OffsetDateTime::now_utc();
    for i in 0..keys {
        let key = KeyVersion::generate(Algorithm::preferred(), "bench", now).unwrap();
        sealed.save(&format!("minio-key-{i:05}"), key.encode().unwrap().as_bytes());
    }
    let seal_time = t.elapsed();
    let (mut bytes, mut blocks, mut files) = (0u64, 0u64, 0u64);
    for e in std::fs::read_dir(&full).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        bytes += m.len();
        blocks += m.blocks() * 512;
        files += 1;
    }
    assert_eq!(files as usize, keys);

    let mut from_sealed = Vec::new();
    let mut reference = Vec::new();
    let mut banner = String::new();
    for _ in 0..runs {
        std::fs::write(dir.join("config.yml"), config(&full.display().to_string())).unwrap();
        let (d, b) = start(&dir);
        from_sealed.push(d);
        banner = b;
        std::fs::write(dir.join("config.yml"), config(&empty.display().to_string())).unwrap();
        reference.push(start(&dir).0);
    }
    let (s, r) = (median(from_sealed), median(reference));
    println!("{banner}");
    println!(
        "sealing {keys} keys (write + fsync + rename each): {:.2} s, {:.0} us per key",
        seal_time.as_secs_f64(),
        seal_time.as_secs_f64() * 1e6 / keys as f64
    );
    println!(
        "start-to-ready, median of {runs}: {:.0} ms with {keys} sealed keys, {:.0} ms with none \
         (reference), so {:.0} us per sealed key",
        s.as_secs_f64() * 1e3,
        r.as_secs_f64() * 1e3,
        s.saturating_sub(r).as_secs_f64() * 1e6 / keys as f64
    );
    println!(
        "disk: {} bytes per key in the file ({} total), {} bytes per key allocated ({:.1} MiB)",
        bytes / files,
        bytes,
        blocks / files,
        blocks as f64 / (1 << 20) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
