//! Benchmark: generate and decrypt requests per second over keep-alive mTLS against the
//! in-memory store. Prints the figures; asserts nothing about speed.
//!
//!     cargo run --release --example bench_keys -- [connections] [seconds]
//!     cargo run --release --example bench_keys -- [connections] [seconds] rotation
//!
//! `rotation` measures decrypt on a key with 10 versions instead (issue 12): a ciphertext
//! of the newest version, one of the oldest without a `version` hint (ten AEAD attempts),
//! and the same with the hint, against a key never rotated as the same-run reference; then
//! the same three cases in process, without HTTP, to isolate the cost of the attempts.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn run(
    srv: &common::TestServer,
    conns: usize,
    secs: u64,
    path: &str,
    body: Arc<String>,
) -> (f64, Duration, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..conns {
        let mut c = srv.admin();
        let stop = stop.clone();
        let body = body.clone();
        let path = path.to_string();
        handles.push(std::thread::spawn(move || {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = c.post(&path, &body);
                assert_eq!(r.status, 200, "{}", r.text());
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    all.sort();
    let rps = all.len() as f64 / secs as f64;
    let p50 = all[all.len() / 2];
    let p99 = all[all.len() * 99 / 100];
    (rps, p50, p99)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let conns: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let srv = common::TestServer::start("log:\n  audit: off\n");
    if args.get(3).map(String::as_str) == Some("rotation") {
        return rotation(&srv, conns, secs);
    }
    let mut c = srv.admin();
    assert_eq!(c.request("POST", "/v1/key/create/bench", None).status, 200);
    let ctx = "eyJteS1idWNrZXQiOiJteS1idWNrZXQvbXkvb2JqZWN0In0=";
    let g = c.post("/v1/key/generate/bench", &format!("{{\"context\":\"{ctx}\"}}"));
    let ct = g.json()["ciphertext"].as_str().unwrap().to_string();
    let (rps, p50, p99) = run(
        &srv,
        conns,
        secs,
        "/v1/key/generate/bench",
        Arc::new(format!("{{\"context\":\"{ctx}\"}}")),
    );
    println!(
        "generate: {rps:.0} req/s  p50 {p50:?}  p99 {p99:?}  ({conns} keep-alive mTLS connections, {secs} s, in-memory store)"
    );
    let body = Arc::new(format!("{{\"ciphertext\":\"{ct}\",\"context\":\"{ctx}\"}}"));
    let (rps, p50, p99) = run(&srv, conns, secs, "/v1/key/decrypt/bench", body);
    println!(
        "decrypt:  {rps:.0} req/s  p50 {p50:?}  p99 {p99:?}  ({conns} keep-alive mTLS connections, {secs} s, in-memory store)"
    );
}

/// Decrypt throughput on a key with 10 versions (see the module doc).
fn rotation(srv: &common::TestServer, conns: usize, secs: u64) {
    const VERSIONS: usize = 10;
    let mut c = srv.admin();
    let seal = |c: &mut common::Client, key: &str| {
        let g = c.post(&format!("/v1/key/generate/{key}"), "{}").json();
        (g["ciphertext"].as_str().unwrap().to_string(), g["version"].as_str().unwrap().to_string())
    };
    assert_eq!(c.request("POST", "/v1/key/create/plain", None).status, 200);
    assert_eq!(c.request("POST", "/v1/key/create/rot", None).status, 200);
    let (reference, _) = seal(&mut c, "plain");
    let (oldest, oldest_version) = seal(&mut c, "rot");
    for _ in 1..VERSIONS {
        assert_eq!(c.request("PUT", "/v1/key/rotate/rot", None).status, 200);
    }
    let (newest, _) = seal(&mut c, "rot");
    let cases = [
        ("never-rotated key (reference)", "plain", format!("{{\"ciphertext\":\"{reference}\"}}")),
        ("newest of 10, no hint", "rot", format!("{{\"ciphertext\":\"{newest}\"}}")),
        ("oldest of 10, no hint", "rot", format!("{{\"ciphertext\":\"{oldest}\"}}")),
        (
            "oldest of 10, with hint",
            "rot",
            format!("{{\"ciphertext\":\"{oldest}\",\"version\":\"{oldest_version}\"}}"),
        ),
    ];
    let mut base = 0.0;
    for (what, key, body) in cases {
        let path = format!("/v1/key/decrypt/{key}");
        let (rps, p50, p99) = run(srv, conns, secs, &path, Arc::new(body));
        if base == 0.0 {
            base = rps;
        }
        println!(
            "decrypt {what:<30} {rps:>8.0} req/s ({:.2} of reference)  p50 {p50:?}  p99 {p99:?}",
            rps / base
        );
    }
    // In process: the crypto alone, one thread.
    use kes::crypto::{Algorithm, KeyVersion, Version, VersionedKey};
    let now = time::OffsetDateTime::now_utc();
    let versions: Vec<Version> = (0..VERSIONS)
        .map(|i| {
            let k = KeyVersion::generate(Algorithm::preferred(), "bench", now).unwrap();
            Version::live(i.to_string(), k)
        })
        .collect();
    let key = VersionedKey::new(versions);
    let seal_with =
        |i: usize| key.versions()[i].key.as_ref().unwrap().key.encrypt(&[7; 32], b"ctx").unwrap();
    let (ct_old, ct_new) = (seal_with(0), seal_with(VERSIONS - 1));
    let time = |f: &dyn Fn()| {
        let n = 200_000u32;
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed() / n
    };
    let newest_cost = time(&|| {
        key.decrypt_any(&ct_new, b"ctx", VERSIONS).unwrap();
    });
    let oldest_cost = time(&|| {
        key.decrypt_any(&ct_old, b"ctx", VERSIONS).unwrap();
    });
    let hinted_cost = time(&|| {
        key.decrypt_with("0", &ct_old, b"ctx").unwrap();
    });
    println!(
        "in process: newest {newest_cost:?}, oldest of 10 without hint {oldest_cost:?}, with hint {hinted_cost:?} per decrypt ({:?} per failed attempt)",
        oldest_cost.saturating_sub(newest_cost) / (VERSIONS as u32 - 1)
    );
}

/// The allocator of the `kes` binary (freed blocks are wiped), so the figures are the
/// server's as shipped. Client and server share this process, so the client's frees are
/// wiped too: an upper bound on the cost.
#[global_allocator]
static ALLOCATOR: kes::sys::wipe::WipingAllocator = kes::sys::wipe::WipingAllocator;
