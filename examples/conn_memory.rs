//! Measures the real binary's memory with N idle keep-alive mTLS connections, with mlockall
//! on (as root or with CAP_IPC_LOCK) or off.
//!
//!     cargo build --release && cargo run --release --example conn_memory -- target/release/kes 200 [--no-mlock]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{PackagedServer, proc_status};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args.get(1).cloned().unwrap_or_else(|| "target/release/kes".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let extra: Vec<&str> = args.iter().skip(3).map(String::as_str).collect();
    let srv = PackagedServer::start(&bin, "mem", &extra);
    let pid = srv.child.id();
    let addr = format!("127.0.0.1:{}", srv.port).parse().unwrap();
    let idle_rss = proc_status(pid, "VmRSS:");
    let mut conns = Vec::new();
    for _ in 0..n {
        let mut c = common::Client::connect(addr, &srv.server_cert, Some(&srv.admin));
        assert_eq!(c.get("/version").status, 200);
        conns.push(c);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    println!(
        "{n} idle keep-alive mTLS connections, mlock {}: RSS {} KiB (idle server {} KiB), VmLck {} KiB, threads {}",
        if srv.mlock { "on" } else { "off" },
        proc_status(pid, "VmRSS:"),
        idle_rss,
        proc_status(pid, "VmLck:"),
        proc_status(pid, "Threads:"),
    );
    drop(conns);
}
