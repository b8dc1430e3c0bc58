//! Replays every committed fuzz seed (`fuzz/seeds/<target>/*`) and any saved crash
//! (`fuzz/artifacts/<target>/*`) through the same entry points the fuzzers use, so the
//! corpus runs on every `cargo test` without libFuzzer.

#[path = "../fuzz/src/lib.rs"]
mod targets;

fn replay(name: &str, f: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["fuzz/seeds", "fuzz/artifacts"] {
        let Ok(entries) = std::fs::read_dir(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(name),
        ) else {
            continue;
        };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            f(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn every_seed_passes_its_target() {
    let counts = [
        ("http_head", replay("http_head", targets::http_head)),
        ("request", replay("request", targets::request)),
        ("json_body", replay("json_body", targets::json_body)),
        ("ciphertext", replay("ciphertext", targets::ciphertext)),
        ("stored_key", replay("stored_key", targets::stored_key)),
        ("config", replay("config", targets::config)),
        ("policy", replay("policy", targets::policy)),
        ("chunked", replay("chunked", targets::chunked)),
    ];
    for (name, n) in counts {
        assert!(n > 0, "no seeds for fuzz target {name}");
    }
}
