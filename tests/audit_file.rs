//! The tamper-evident audit file: a server appends one chained line per request; editing,
//! deleting, reordering or inserting a line makes `kes log verify` fail at that line;
//! rotation (rename + SIGHUP reload) keeps one chain across two files; a restart
//! continues the chain; a clean shutdown loses no line; a fail-closed server whose file
//! cannot be written answers 503 and runs nothing.

mod common;

use common::{TempDir, TestServer, kes_in};
use kes::obs::audit_file::{AuditFile, GENESIS, verify};
use std::path::{Path, PathBuf};

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

/// A file of `n` chained lines written through the library.
fn chained(dir: &TempDir, name: &str, n: usize) -> PathBuf {
    let path = dir.join(name);
    let f = AuditFile::open(&path).unwrap();
    for i in 0..n {
        f.append_synced(format!("{{\"msg\":\"request {i}\"}}")).unwrap();
    }
    f.close();
    path
}

fn verify_cli(files: &[&Path]) -> (i32, String, String) {
    let mut args = vec!["log", "verify"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    kes_in(&std::env::temp_dir(), &args, &[])
}

#[test]
fn lines_are_chained_and_verify() {
    let dir = TempDir::new("audit-chain");
    let path = chained(&dir, "audit.log", 5);
    let l = lines(&path);
    assert_eq!(l.len(), 5);
    assert!(
        l[0].starts_with(&format!(
            "{{\"seq\":1,\"prev\":\"{GENESIS}\",\"msg\":\"request 0\",\"hash\":\""
        )),
        "{}",
        l[0]
    );
    let v = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!((v.lines, v.first_seq, v.last_seq, v.from_genesis), (5, 1, 5, true));
    let (code, out, err) = verify_cli(&[&path]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        format!(
            "OK: 5 lines in 1 files intact (seq 1-5, from the start of the chain)\nHead: {}\n",
            v.head
        )
    );
    // Every line's prev is the hash of the line before.
    for w in l.windows(2) {
        let a: serde_json::Value = serde_json::from_str(&w[0]).unwrap();
        let b: serde_json::Value = serde_json::from_str(&w[1]).unwrap();
        assert_eq!(a["hash"], b["prev"]);
    }
}

#[test]
fn every_tampering_fails_at_its_line() {
    let dir = TempDir::new("audit-tamper");
    let path = chained(&dir, "audit.log", 6);
    let original = lines(&path);
    let name = path.display().to_string();
    let cases: Vec<(&str, Vec<String>, u64, &str)> = vec![
        (
            "edit",
            {
                let mut l = original.clone();
                l[2] = l[2].replace("request 2", "request X");
                l
            },
            3,
            "the line was changed: it does not match its own hash",
        ),
        (
            "delete",
            {
                let mut l = original.clone();
                l.remove(2);
                l
            },
            3,
            "hash chain broken",
        ),
        (
            "reorder",
            {
                let mut l = original.clone();
                l.swap(2, 3);
                l
            },
            3,
            "hash chain broken",
        ),
        (
            "insert",
            {
                let mut l = original.clone();
                l.insert(3, original[1].clone());
                l
            },
            4,
            "hash chain broken",
        ),
        (
            "not a chained line",
            {
                let mut l = original.clone();
                l.insert(1, "{\"msg\":\"forged\"}".into());
                l
            },
            2,
            "not a chained audit line",
        ),
    ];
    for (what, tampered, line, reason) in cases {
        write_lines(&path, &tampered);
        let b = verify(std::slice::from_ref(&path)).unwrap_err();
        assert_eq!((b.file.as_str(), b.line), (name.as_str(), line), "{what}: {b}");
        assert!(b.reason.starts_with(reason), "{what}: {}", b.reason);
        let (code, out, err) = verify_cli(&[&path]);
        assert_eq!((code, out.as_str()), (1, ""), "{what}");
        assert!(
            err.starts_with(&format!("Error: audit chain broken at {name}:{line}: {reason}")),
            "{what}: {err}"
        );
    }
    // A recomputed own hash is caught by the next line.
    let mut l = original.clone();
    let mut v: serde_json::Value = serde_json::from_str(&l[2]).unwrap();
    v["msg"] = "request X".into();
    let prefix = l[2][..l[2].rfind(",\"hash\":\"").unwrap()].replace("request 2", "request X");
    let hash = kes::obs::audit_file::sha256_hex(prefix.as_bytes());
    l[2] = format!("{prefix},\"hash\":\"{hash}\"}}");
    write_lines(&path, &l);
    let b = verify(std::slice::from_ref(&path)).unwrap_err();
    assert_eq!(b.line, 4, "{b}");
    // A torn last line.
    let mut text = original.iter().map(|l| format!("{l}\n")).collect::<String>();
    text.push_str("{\"seq\":7,\"prev\"");
    std::fs::write(&path, text).unwrap();
    let b = verify(std::slice::from_ref(&path)).unwrap_err();
    assert_eq!((b.line, b.reason.as_str()), (7, "incomplete last line (no newline)"));
}

#[test]
fn rotation_and_restart_keep_one_chain() {
    let dir = TempDir::new("audit-rotate");
    let path = dir.join("audit.log");
    let rotated = dir.join("audit.log.1");
    let f = AuditFile::open(&path).unwrap();
    for i in 0..3 {
        f.append_synced(format!("{{\"msg\":\"a{i}\"}}")).unwrap();
    }
    std::fs::rename(&path, &rotated).unwrap();
    f.reopen(&path).unwrap();
    f.append_synced("{\"msg\":\"b0\"}".into()).unwrap();
    f.close();
    // A restart continues the chain at the end of the file.
    let f = AuditFile::open(&path).unwrap();
    f.append("{\"msg\":\"b1\"}".into());
    f.close();
    let v = verify(&[rotated.clone(), path.clone()]).unwrap();
    assert_eq!((v.lines, v.first_seq, v.last_seq, v.from_genesis), (5, 1, 5, true));
    // The newer file alone verifies as a continuation; the wrong order does not.
    let v = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!((v.lines, v.first_seq, v.from_genesis), (2, 4, false));
    let b = verify(&[path.clone(), rotated.clone()]).unwrap_err();
    assert_eq!((b.file, b.line), (rotated.display().to_string(), 1));
    let (code, out, _) = verify_cli(&[&rotated, &path]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("OK: 5 lines in 2 files intact (seq 1-5, from the start of the chain)\n"),
        "{out}"
    );
    // Deleting the first line of the newer file is caught at the joint.
    let mut l = lines(&path);
    l.remove(0);
    write_lines(&path, &l);
    let b = verify(&[rotated, path.clone()]).unwrap_err();
    assert_eq!((b.file, b.line), (path.display().to_string(), 1));
}

#[test]
fn a_server_audits_every_request_across_logrotate_and_shutdown() {
    let dir = TempDir::new("audit-server");
    let path = dir.join("audit.log");
    // The fs store, so that the reload's new store sees the same keys.
    let keys = dir.join("keys");
    let srv = TestServer::start_fs(
        &format!("log:\n  audit: off\n  audit_file: {}\n", path.display()),
        &keys,
    );
    let mut c = srv.admin();
    assert_eq!(c.request("PUT", "/v1/key/create/k1", None).status, 200);
    assert_eq!(c.get("/v1/key/describe/k1").status, 200);
    // logrotate: rename, then SIGHUP (a reload) reopens the path.
    let rotated = dir.join("audit.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    srv.server.reload().unwrap();
    let mut c = srv.admin();
    assert_eq!(c.get("/v1/key/describe/nope").status, 404);
    assert_eq!(c.request("DELETE", "/v1/key/delete/k1", None).status, 200);
    srv.server.shutdown();
    // `log.audit: off` silences stdout, not the file.
    assert_eq!(srv.audit_text(), "");
    let old = lines(&rotated);
    let new = lines(&path);
    assert_eq!((old.len(), new.len()), (2, 2), "{old:?} {new:?}");
    let first: serde_json::Value = serde_json::from_str(&old[0]).unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["msg"], "secret key 'k1' created");
    assert_eq!(first["req"]["path"], "/v1/key/create/k1");
    assert_eq!(first["req"]["identity"], srv.admin.identity.as_str());
    assert_eq!(first["res"]["code"], 200);
    let last: serde_json::Value = serde_json::from_str(&new[1]).unwrap();
    assert_eq!(
        (last["seq"].as_u64(), last["req"]["path"].as_str()),
        (Some(4), Some("/v1/key/delete/k1"))
    );
    let (code, out, err) = verify_cli(&[&rotated, &path]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(
        out.starts_with("OK: 4 lines in 2 files intact (seq 1-4, from the start of the chain)\n"),
        "{out}"
    );
}

#[test]
fn fail_closed_with_an_unwritable_file_serves_nothing() {
    // Every write to /dev/full fails with ENOSPC.
    let srv = TestServer::start("log:\n  audit_file: /dev/full\n  audit_fail_closed: true\n");
    let mut c = srv.admin();
    let r = c.request("PUT", "/v1/key/create/k1", None);
    assert_eq!((r.status, r.message()), (503, "audit log unavailable: request refused".into()));
    // From now on requests are refused before they run.
    for _ in 0..3 {
        let r = c.request("PUT", "/v1/key/create/k2", None);
        assert_eq!((r.status, r.message()), (503, "audit log unavailable: request refused".into()));
    }
    let r = c.post("/v1/key/generate/k1", "{}");
    assert_eq!(r.status, 503);
    assert!(!r.text().contains("plaintext"), "{}", r.text());
    let exists = |name: &str| {
        kes::keystore::KeyStore::get(
            srv.store.as_ref(),
            name,
            std::time::Instant::now() + std::time::Duration::from_secs(5),
        )
        .is_ok()
    };
    assert!(!exists("k2"), "a request refused before it ran created its key");
    // The documented bound: the one request in flight when the write failed ran (its
    // answer withheld), and nothing after it.
    assert!(exists("k1"), "the request whose line failed first did not run");
    assert!(
        srv.error_text()
            .contains("audit: request refused: cannot write the audit file: /dev/full:"),
        "{}",
        srv.error_text()
    );
    // `/version` is never audited and keeps answering.
    assert_eq!(srv.admin().get("/version").status, 200);
}

#[test]
fn fail_closed_needs_a_file() {
    let dir = TempDir::new("audit-cfg");
    common::server_cert(dir.path());
    std::fs::write(
        dir.join("config.yml"),
        "admin:\n  identity: disabled\ntls:\n  key: server.key\n  cert: server.crt\nlog:\n  audit_fail_closed: true\nkeystore:\n  fs:\n    path: keys\n",
    )
    .unwrap();
    let (code, _, err) = kes_in(dir.path(), &["server", "--check", "--config", "config.yml"], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "Error: config.yml: log.audit_fail_closed: needs log.audit_file (the file that must be written)"
    );
}

/// The real binary, seccomp on: requests, logrotate (rename + SIGHUP), more requests,
/// SIGTERM; both files verify and no line is missing.
#[test]
fn the_binary_under_seccomp_reopens_on_sighup_and_flushes_on_sigterm() {
    use std::io::BufRead;
    let dir = TempDir::new("audit-bin");
    let (_, _, server_der) = common::server_cert(dir.path());
    let admin = common::client_id();
    let path = dir.join("audit.log");
    std::fs::write(
        dir.join("config.yml"),
        format!(
            "address: 127.0.0.1:0\nadmin:\n  identity: {}\ntls:\n  key: server.key\n  cert: server.crt\nlog:\n  audit_file: {}\nkeystore:\n  fs:\n    path: keys\n",
            admin.identity,
            path.display()
        ),
    )
    .unwrap();
    let mut child = common::Spawned::server(dir.path());
    let out = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |needle: &str| loop {
        let line = rx.recv_timeout(std::time::Duration::from_secs(30)).expect(needle);
        if line.contains(needle) {
            return line;
        }
    };
    let api = wait_for("https://127.0.0.1:");
    assert!(wait_for("Seccomp").contains("enabled"));
    let port: u16 = api.rsplit(':').next().unwrap().trim().parse().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = common::Client::connect(addr, &server_der, Some(&admin));
    assert_eq!(c.request("PUT", "/v1/key/create/k1", None).status, 200);
    let rotated = dir.join("audit.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    let signal = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &child.0.id().to_string()])
                .status()
                .unwrap()
                .success()
        )
    };
    signal("-HUP");
    wait_for("Reloading configuration after SIGHUP signal completed");
    let mut c = common::Client::connect(addr, &server_der, Some(&admin));
    for _ in 0..3 {
        assert_eq!(c.get("/v1/key/describe/k1").status, 200);
    }
    signal("-TERM");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!((lines(&rotated).len(), lines(&path).len()), (1, 3));
    let v = verify(&[rotated, path]).unwrap();
    assert_eq!((v.lines, v.first_seq, v.last_seq, v.from_genesis), (4, 1, 4, true));
}
