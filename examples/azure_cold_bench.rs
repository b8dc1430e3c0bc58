//! Cold-key fetch latency of the Azure store against the fake vault with injected latency
//! (issue 4: "a cold key should cost one round trip").
//!
//! `cargo run --example azure_cold_bench [-- KEYS LATENCY_MS]` (defaults 200 keys, 40 ms).
//! Every `get` is cold for the store (it has no cache of its own; the server's key cache
//! sits above it). The token and the two pooled connections are warmed first, so the
//! numbers are the steady state of a server that meets a key for the first time.

#[path = "../tests/support/fake_vault.rs"]
mod fake_vault;
#[path = "../tests/support/vault_store.rs"]
mod vault_store;

use std::time::{Duration, Instant};

use fake_vault::{FakeVault, Op};
use kes::keystore::KeyStore;
use kes::keystore::azure::AzureStore;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn run(store: &AzureStore, v: &FakeVault, names: &[String], latency: Duration, label: &str) {
    v.set_latency(Duration::ZERO);
    v.reset_counts();
    v.set_latency(latency);
    let mut lat = Vec::with_capacity(names.len());
    for n in names {
        let t = Instant::now();
        let value = store.get(n, Instant::now() + Duration::from_secs(15)).expect("get");
        lat.push(t.elapsed());
        assert_eq!(&value[..], b"value-1");
    }
    v.set_latency(Duration::ZERO);
    lat.sort();
    let calls = v.count(Op::Versions) + v.count(Op::Get);
    let mean = lat.iter().sum::<Duration>() / lat.len() as u32;
    println!(
        "{label}: {} keys, p50 {}, p99 {}, max {}, mean {} = {:.2} round trips of {}; \
         calls per cold key {:.2} (versions {}, get {}), token fetches {}",
        names.len(),
        ms(pct(&lat, 0.50)),
        ms(pct(&lat, 0.99)),
        ms(*lat.last().unwrap()),
        ms(mean),
        mean.as_secs_f64() / latency.as_secs_f64(),
        ms(latency),
        calls as f64 / names.len() as f64,
        v.count(Op::Versions),
        v.count(Op::Get),
        v.count(Op::Token),
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let keys: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let latency = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(40));
    let v = FakeVault::start();
    // The tests' store: only its retry and conflict pauses are shortened, and nothing
    // here fails, so nothing is retried.
    let store = vault_store::azure_store(&v);

    let one: Vec<String> = (0..keys).map(|i| format!("cold-{i:04}")).collect();
    for n in &one {
        v.insert_version(n, "value-1", 1_000, None);
    }
    let two: Vec<String> = (0..keys.min(50)).map(|i| format!("twice-{i:04}")).collect();
    for n in &two {
        v.insert_version(n, "value-1", 1_000, None);
        v.insert_version(n, "value-2", 2_000, None);
    }
    // Warm the challenge, the token and both pooled connections.
    store.list("", Instant::now() + Duration::from_secs(15)).expect("list");
    store.get(&one[0], Instant::now() + Duration::from_secs(15)).expect("get");

    println!("fake vault with {} injected latency per request", ms(latency));
    run(&store, &v, &one, latency, "one version (the normal KES key)");
    run(&store, &v, &two, latency, "two versions (concurrent creates)");
}
