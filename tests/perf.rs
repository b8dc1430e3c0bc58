//! The request path without per-request locks (issue 11) keeps its promises: audit lines
//! batched to stdout reach it while the server runs and none is lost on a clean stop, and a
//! reload reaches connections that were kept alive across it.

mod common;

use common::{Client, TempDir, TestServer};
use std::time::Duration;

/// Audit lines of `/v1/key/describe/k` requests in `out`.
fn describe_lines(out: &str) -> usize {
    out.lines().filter(|l| l.contains(r#""path":"/v1/key/describe/k""#)).count()
}

/// The real binary (seccomp on), stdout into a pipe as under journald (so JSON lines): each
/// audit line shows
/// up while the server runs, one request at a time (the batch writer does not hold lines
/// back for a full batch); then 4 clients send 1,000 requests as fast as they can, SIGTERM
/// follows the last answer at once, and stdout holds every one of the 1,021 lines.
#[test]
fn batched_audit_lines_arrive_while_running_and_none_is_lost_on_sigterm() {
    use std::io::BufRead;
    let dir = TempDir::new("perf-audit");
    let (_, _, server_der) = common::server_cert(dir.path());
    let admin = common::client_id();
    std::fs::write(
        dir.join("config.yml"),
        format!(
            "address: 127.0.0.1:0\nadmin:\n  identity: {}\ntls:\n  key: server.key\n  cert: server.crt\nkeystore:\n  fs:\n    path: keys\n",
            admin.identity
        ),
    )
    .unwrap();
    let mut child = common::Spawned::server(dir.path());
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    // The whole banner.
    let mut banner = String::new();
    let mut port = 0u16;
    while !banner.contains("=> Server is up and running...") {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the server ended: {banner}");
        if let Some(p) = line.split("https://127.0.0.1:").nth(1) {
            port = p.trim().parse().unwrap();
        }
        banner.push_str(&line);
    }
    assert!(banner.lines().any(|l| l.starts_with("Seccomp") && l.ends_with("enabled")), "{banner}");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // Lines are read on a thread from here on, so the pipe never fills.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });

    let mut c = Client::connect(addr, &server_der, Some(&admin));
    assert_eq!(c.request("PUT", "/v1/key/create/k", None).status, 200);
    for i in 1..=20 {
        assert_eq!(c.get("/v1/key/describe/k").status, 200);
        // This request's line arrives without a stop and without more traffic (generous
        // deadline for a loaded machine; counts, not times, are asserted).
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("audit line while running");
        assert!(line.contains(r#""path":"/v1/key/"#), "request {i}: {line}");
        if i == 1 {
            // The create line came first.
            assert!(line.contains(r#""msg":"secret key 'k' created""#), "{line}");
            let next = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            assert_eq!(describe_lines(&next), 1, "{next}");
        }
    }

    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (der, admin) = (server_der.clone(), admin.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, &der, Some(&admin));
                for _ in 0..250 {
                    assert_eq!(c.get("/v1/key/describe/k").status, 200);
                }
            })
        })
        .collect();
    for t in clients {
        t.join().unwrap();
    }
    // Every answer is in; stop at once (lines of the last requests are still queued).
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let all = reader.join().unwrap();
    assert_eq!(describe_lines(&all), 1_020, "every audited request has its line");
    assert!(all.contains("=> Stopping server... Goodbye."));
    for line in all.lines().filter(|l| l.contains(r#""path":"#)) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a whole JSON line");
        assert_eq!(v["res"]["code"], 200, "{line}");
    }
}

/// A reload reaches a connection kept alive across it: the same connection is refused, then
/// allowed after a policy is added, then refused again after it is removed.
#[test]
fn a_reload_reaches_kept_alive_connections() {
    let srv = TestServer::start("");
    let app = common::client_id();
    let cfg = srv.dir.join("config.yml");
    let base = std::fs::read_to_string(&cfg).unwrap();
    let mut c = srv.client(Some(&app));
    let refused = c.get("/v1/status");
    assert_eq!(
        (refused.status, refused.message().as_str()),
        (403, "not authorized: insufficient permissions")
    );
    std::fs::write(
        &cfg,
        format!(
            "{base}policy:\n  app:\n    allow:\n    - /v1/status\n    identities:\n    - {}\n",
            app.identity
        ),
    )
    .unwrap();
    let changes = srv.server.reload().unwrap();
    assert!(changes.contains("policy 'app' added"), "{changes}");
    let allowed = c.get("/v1/status");
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert!(allowed.json()["version"].is_string(), "{}", allowed.text());
    std::fs::write(&cfg, &base).unwrap();
    srv.server.reload().unwrap();
    let again = c.get("/v1/status");
    assert_eq!(
        (again.status, again.message().as_str()),
        (403, "not authorized: insufficient permissions")
    );
    // One connection throughout: the server accepted exactly one for this client.
    let mut admin = srv.admin();
    let metrics = admin.get("/v1/metrics").text();
    assert!(metrics.contains("\nkes_http_connections_accepted 2\n"), "{metrics}");
}
