//! Benchmark: generate and decrypt requests per second over keep-alive mTLS against the
//! in-memory store. Prints the figures; asserts nothing about speed.
//!
//!     cargo run --release --example bench_keys -- [connections] [seconds]

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

/// The allocator of the `kes` binary (freed blocks are wiped), so the figures are the
/// server's as shipped. Client and server share this process, so the client's frees are
/// wiped too: an upper bound on the cost.
#[global_allocator]
static ALLOCATOR: kes::sys::wipe::WipingAllocator = kes::sys::wipe::WipingAllocator;
