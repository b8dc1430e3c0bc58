//! Measures the real binary's memory with N idle keep-alive mTLS connections, with mlockall
//! on (as root or with CAP_IPC_LOCK) or off.
//!
//!     cargo build --release && cargo run --release --example conn_memory -- target/release/kes 200 [--no-mlock]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args.get(1).cloned().unwrap_or_else(|| "target/release/kes".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let extra: Vec<&str> = args.iter().skip(3).map(String::as_str).collect();
    let dir = common::TempDir::new("mem");
    let (cert, key, server_cert) = common::server_cert(dir.path());
    let admin = common::client_id();
    let cfg = dir.join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "address: 127.0.0.1:0\nadmin:\n  identity: {}\ntls:\n  key: {}\n  cert: {}\nlog:\n  audit: off\nkeystore:\n  fs:\n    path: {}\n",
            admin.identity,
            key.display(),
            cert.display(),
            dir.join("keys").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(&bin)
        .args(["server", "--config", cfg.to_str().unwrap()])
        .args(&extra)
        .env("MALLOC_ARENA_MAX", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut port = 0u16;
    let mut mlock = false;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        mlock |= line.starts_with("MLock");
        if let Some(p) = line.strip_prefix("API").and_then(|l| l.split("https://127.0.0.1:").nth(1))
        {
            port = p.trim().parse().unwrap();
        }
        if line.contains("Server is up") {
            break;
        }
    }
    let pid = child.id();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let idle_rss = status_kib(pid, "VmRSS:");
    let mut conns = Vec::new();
    for _ in 0..n {
        let mut c = common::Client::connect(addr, &server_cert, Some(&admin));
        assert_eq!(c.get("/version").status, 200);
        conns.push(c);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    println!(
        "{n} idle keep-alive mTLS connections, mlock {}: RSS {} KiB (idle server {} KiB), VmLck {} KiB, threads {}",
        if mlock { "on" } else { "off" },
        status_kib(pid, "VmRSS:"),
        idle_rss,
        status_kib(pid, "VmLck:"),
        status_kib(pid, "Threads:"),
    );
    drop(conns);
    let _ = child.kill();
    let _ = child.wait();
}
