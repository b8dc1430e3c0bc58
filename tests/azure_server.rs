//! `kes server` with the Azure Key Vault store against the project's fake vault: the seed
//! tutorial end to end with the real binary (seccomp on), upstream's stored formats F0–F4
//! preloaded as secrets, every fault through the API with the KES error clients expect and
//! no key lost, a token refreshed mid-run, and three servers sharing one vault.

mod common;
#[path = "support/fake_vault.rs"]
mod fake_vault;
#[path = "support/vault_store.rs"]
mod vault_store;

use base64::Engine as _;
use common::{TempDir, TestServer, kes_in};
use fake_vault::{FakeVault, Fault, Op};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vault_store::azure_store;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn server(v: &FakeVault) -> TestServer {
    TestServer::start_store("", azure_store(v))
}

/// The seed tutorial word for word with the real binary and the Azure store: both
/// `kes identity new` calls, `kes identity of`, the config as the tutorial writes it
/// (admin disabled, a policy for the client's identity), `kes server --config config.yml
/// --auth off`, then `kes key create my-key-1` and `kes key dek my-key-1`.
#[test]
fn seed_tutorial_end_to_end_with_the_binary() {
    let vault = FakeVault::start();
    // Short-lived tokens, so a token refresh also runs under the seccomp filter.
    vault.set_token_lifetime(Duration::from_secs(2));
    let dir = TempDir::new("tutorial");
    let d = dir.path();
    let (code, out, err) = kes_in(d, &["identity", "new", "--ip", "127.0.0.1", "localhost"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(
            "  Private key:  private.key\n  Certificate:  public.crt\n  Identity:     "
        ),
        "{out}"
    );
    let (code, out, _) =
        kes_in(d, &["identity", "new", "--key=client.key", "--cert=client.crt", "MyApp"], &[]);
    assert_eq!(code, 0);
    let listed = out.lines().nth(2).unwrap().trim_start_matches("  Identity:").trim().to_string();
    let (code, identity, _) = kes_in(d, &["identity", "of", "client.crt"], &[]);
    assert_eq!((code, identity.trim()), (0, listed.as_str()));
    std::fs::write(
        dir.join("config.yml"),
        format!(
            r#"address: 127.0.0.1:0 # Listen on all network interfaces on port 7373
admin:
  identity: disabled  # We disable the admin identity since we don't need it in this guide
tls:
  key: private.key    # The KES server TLS private key
  cert: public.crt    # The KES server TLS certificate
policy:
  my-app:
    allow:
    - /v1/key/create/my-key*
    - /v1/key/generate/my-key*
    - /v1/key/decrypt/my-key*
    identities:
    - {identity} # Use the identity of your client.crt
keystore:
  azure:
    keyvault:
      endpoint: "{}"    # Use your KeyVault instance endpoint.
      credentials:
        tenant_id: "{}"      # The ID of the tenant the client belongs to
        client_id: "{}"      # The ID of the client
        client_secret: "{}"  # The value of the client secret
"#,
            // A host name, so that name resolution runs under the seccomp filter.
            vault.localhost_url(),
            vault.tenant_id(),
            vault.client_id(),
            vault.client_secret()
        ),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["server", "--config", "config.yml", "--auth", "off"])
        .current_dir(d)
        .env("SSL_CERT_FILE", vault.ca_file())
        .env("AZURE_AUTHORITY_HOST", vault.authority())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut banner = String::new();
    let port: u16 = loop {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut out, &mut line).unwrap() == 0 {
            let _ = child.0.kill();
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("server exited: {banner}{err}");
        }
        banner.push_str(&line);
        if let Some(p) = line.strip_prefix("API").and_then(|l| l.split("https://127.0.0.1:").nth(1))
        {
            break p.trim().parse().unwrap();
        }
    };
    assert!(banner.contains(&format!("Azure KeyVault: {}", vault.localhost_url())), "{banner}");
    let env = [
        ("KES_SERVER", format!("https://127.0.0.1:{port}")),
        ("KES_CLIENT_CERT", "client.crt".to_string()),
        ("KES_CLIENT_KEY", "client.key".to_string()),
        ("SSL_CERT_FILE", "public.crt".to_string()),
    ];
    let (code, _, err) = kes_in(d, &["key", "create", "my-key-1"], &env);
    assert_eq!(code, 0, "{err}");
    let (code, dek, err) = kes_in(d, &["key", "dek", "my-key-1"], &env);
    assert_eq!(code, 0, "{err}");
    let dek: serde_json::Value = serde_json::from_str(&dek).unwrap();
    let plaintext = base64::engine::general_purpose::STANDARD
        .decode(dek["plaintext"].as_str().unwrap())
        .unwrap();
    assert_eq!(plaintext.len(), 32);
    let (code, dec, _) =
        kes_in(d, &["key", "decrypt", "my-key-1", dek["ciphertext"].as_str().unwrap()], &env);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&dec).unwrap()["plaintext"],
        dek["plaintext"]
    );
    // A key outside the policy is refused with upstream's message.
    let (code, _, err) = kes_in(d, &["key", "create", "other"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("not authorized: insufficient permissions"), "{err}");
    // The vault holds upstream's F4 format, exactly one version, created by the client.
    let values = vault.values("my-key-1");
    assert_eq!(values.len(), 1);
    assert!(values[0].starts_with("Ci"), "{}", values[0]);
    let parsed = kes::crypto::KeyVersion::parse(values[0].as_bytes()).unwrap();
    assert_eq!(parsed.created_by, identity.trim());
    assert!(parsed.hmac.is_some());
    // Past the first token's lifetime: the server fetches a new one.
    let tokens = vault.count(Op::Token);
    std::thread::sleep(Duration::from_secs(3));
    let (code, _, err) = kes_in(d, &["key", "create", "my-key-2"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(vault.count(Op::Token) > tokens, "no token refresh: {}", vault.count(Op::Token));
    assert_eq!(
        child.0.try_wait().unwrap(),
        None,
        "server still running (seccomp allowed the Azure path, DNS and a token refresh)"
    );
}

/// Kills the server when the test ends, also when an assertion fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn secrets_in_every_upstream_format_are_served() {
    let vault = FakeVault::start();
    let z32 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let p5 = "CiQKIMiHG7XrN94FuwblJJor4f7f6rbqAl7DwsLaiIoyz0D2EAESJAognLXl4yqa4cjZTcSbsU6sNnN8kP9ARWkXwa20YQZa9HgQARoMCNithK0GEID67qYDIkAzZWNmY2RmMzhmY2JlMTQxYWUyNmExMDMwZjgxZTk2Yjc1MzM2NWE0Njc2MGFlNmI1Nzg2OThhOTdjNTlmZDIy";
    let preload = [
        ("f0", format!("{{\"bytes\":\"{z32}\"}}")),
        (
            "f1",
            format!(
                "{{\"bytes\":\"{z32}\",\"algorithm\":\"AES256-GCM_SHA256\",\"created_at\":\"2022-05-01T10:00:00Z\"}}"
            ),
        ),
        (
            "f2",
            format!(
                "{{\"version\":\"v1\",\"bytes\":\"{z32}\",\"algorithm\":\"XCHACHA20-POLY1305\",\"created_at\":\"2023-01-01T00:00:00Z\"}}"
            ),
        ),
        (
            "f3",
            format!(
                "{{\"version\":\"v1\",\"bytes\":\"{z32}\",\"created_at\":\"2023-11-01T00:00:00Z\",\"created_by\":\"\"}}"
            ),
        ),
        ("f4", p5.to_string()),
    ];
    for (name, value) in &preload {
        vault.insert_version(name, value, 1_600_000_000, None);
    }
    let srv = server(&vault);
    let mut c = srv.admin();
    let d5 = "zwdDgHeRlIFRnJ7+DIhs/ka7GFK2CFSfDELqg1VCyTQzZ58o7MAdupMLk3ZjlMo2ZUDwldL2o41nAWDc";
    let d1 = b64(br#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#);
    for (key, ct) in [("f0", d5), ("f1", d5), ("f3", d5), ("f2", d1.as_str()), ("f0", d1.as_str())]
    {
        let r = c.post(&format!("/v1/key/decrypt/{key}"), &format!("{{\"ciphertext\":\"{ct}\"}}"));
        assert_eq!(r.status, 200, "{key}: {}", r.text());
        assert_eq!(r.json()["plaintext"], "AAAAAAAAAAAAAAAAAAAAAA==");
    }
    let r = c.post("/v1/key/hmac/f4", &format!("{{\"message\":\"{}\"}}", b64(b"Hello World")));
    assert_eq!(r.json()["hmac"], "yjAJfdVJzrXLR0hzmvEsig3zCdDbx01nkukKVtBu6OA=");
    assert_eq!(c.get("/v1/key/describe/f2").json()["algorithm"], "ChaCha20");
    // Nothing was rewritten.
    for (name, value) in &preload {
        assert_eq!(&vault.values(name), &vec![value.clone()], "{name}");
    }
    let r = c.get("/v1/key/list/f*");
    assert_eq!(r.json()["names"], serde_json::json!(["f0", "f1", "f2", "f3", "f4"]));
}

/// Each fault on each operation gives the KES error clients expect, retries stay bounded,
/// and no key is lost or overwritten.
#[test]
fn faults_map_to_kes_errors_and_lose_nothing() {
    let vault = FakeVault::start();
    let srv = server(&vault);
    let mut c = srv.admin();
    assert_eq!(c.request("POST", "/v1/key/create/keep", None).status, 200);
    let original = vault.values("keep");
    let g = c.post("/v1/key/generate/keep", "{}").json();
    let ct = g["ciphertext"].as_str().unwrap().to_string();

    // Create: 403 on the existence check and on set; 5xx forever; 409 recoverable → purge.
    vault.inject(Op::Get, Fault::ForbiddenByPolicy, 1);
    let r = c.request("POST", "/v1/key/create/new1", None);
    assert_eq!((r.status, r.message()), (502, "failed to create key".into()));
    vault.inject(Op::Set, Fault::ForbiddenByPolicy, 1);
    let r = c.request("POST", "/v1/key/create/new1", None);
    assert_eq!((r.status, r.message()), (502, "failed to create key".into()));
    assert!(vault.values("new1").is_empty());
    vault.inject_forever(Op::Set, Fault::Status { status: 503, retry_after: None });
    let t = Instant::now();
    let r = c.request("POST", "/v1/key/create/new1", None);
    assert_eq!((r.status, r.message()), (502, "failed to create key".into()));
    assert!(t.elapsed() < Duration::from_secs(15), "retries bounded in time: {:?}", t.elapsed());
    vault.clear_faults();
    // Creating an existing key never overwrites it, whatever faults came before.
    let r = c.request("POST", "/v1/key/create/keep", None);
    assert_eq!((r.status, r.message()), (400, "key already exists".into()));
    assert_eq!(vault.values("keep"), original);
    // A soft-deleted name is purged and re-created.
    vault.insert_version(
        "ghost",
        "{\"bytes\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}",
        1_600_000_000,
        None,
    );
    vault.soft_delete("ghost");
    let r = c.request("POST", "/v1/key/create/ghost", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(vault.values("ghost")[0].starts_with("Ci"));

    // Read: throttling with and without Retry-After succeeds after retries; 5xx forever and
    // resets fail with 502 after a bounded number of attempts; 404 is "does not exist".
    srv.server.shared().state().keys.forget("keep");
    vault.inject(Op::Versions, Fault::Throttled { retry_after: Some("1".into()) }, 1);
    let r = c.post("/v1/key/decrypt/keep", &format!("{{\"ciphertext\":\"{ct}\"}}"));
    assert_eq!(r.status, 200, "{}", r.text());
    srv.server.shared().state().keys.forget("keep");
    vault.inject(Op::Versions, Fault::Throttled { retry_after: None }, 2);
    assert_eq!(c.get("/v1/key/describe/keep").status, 200);
    srv.server.shared().state().keys.forget("keep");
    vault.inject(Op::Versions, Fault::Reset, 1);
    assert_eq!(c.get("/v1/key/describe/keep").status, 200);
    srv.server.shared().state().keys.forget("keep");
    vault.reset_counts();
    vault.inject_forever(Op::Versions, Fault::Status { status: 500, retry_after: None });
    let r = c.get("/v1/key/describe/keep");
    assert_eq!((r.status, r.message()), (502, "failed to read key".into()));
    let attempts = vault.count(Op::Versions);
    assert!((2..=8).contains(&attempts), "bounded retries, got {attempts}");
    vault.clear_faults();
    vault.inject(Op::Versions, Fault::NotFound, 1);
    let r = c.get("/v1/key/describe/keep");
    assert_eq!((r.status, r.message()), (404, "key does not exist".into()));
    assert_eq!(c.get("/v1/key/describe/keep").status, 200, "the key is still there");

    // List and delete.
    vault.inject_forever(Op::List, Fault::Status { status: 502, retry_after: None });
    let r = c.get("/v1/key/list/");
    assert_eq!((r.status, r.message()), (502, "failed to list keys".into()));
    vault.clear_faults();
    // The connection stays usable after a listing failure (upstream's D6 defect).
    assert_eq!(c.get("/v1/key/list/").status, 200);
    vault.inject(Op::Purge, Fault::ForbiddenByPolicy, 1);
    let r = c.request("DELETE", "/v1/key/delete/ghost", None);
    assert_eq!((r.status, r.message()), (502, "failed to delete key".into()));
    vault.inject(Op::Delete, Fault::Status { status: 500, retry_after: None }, 1);
    assert_eq!(
        c.request("DELETE", "/v1/key/delete/new-missing", None).status,
        200,
        "idempotent delete"
    );
    // The untouched key survived everything and still decrypts its old ciphertext.
    assert_eq!(vault.values("keep"), original);
    srv.server.shared().state().keys.forget("keep");
    let r = c.post("/v1/key/decrypt/keep", &format!("{{\"ciphertext\":\"{ct}\"}}"));
    assert_eq!(r.json()["plaintext"], g["plaintext"]);
    // An unauthenticated vault (401 every time) is a 502, not a hang.
    vault.inject_forever(Op::Any, Fault::Unauthorized);
    srv.server.shared().state().keys.forget("keep");
    let r = c.get("/v1/key/describe/keep");
    assert_eq!(r.status, 502);
    vault.clear_faults();
}

#[test]
fn an_expiring_token_is_refreshed_mid_run() {
    let vault = FakeVault::start();
    vault.set_token_lifetime(Duration::from_secs(2));
    let srv = server(&vault);
    let mut c = srv.admin();
    for i in 0..4 {
        assert_eq!(c.request("POST", &format!("/v1/key/create/t{i}"), None).status, 200);
        std::thread::sleep(Duration::from_millis(900));
    }
    assert!(vault.count(Op::Token) >= 2, "tokens fetched: {}", vault.count(Op::Token));
    assert_eq!(c.get("/v1/key/list/t*").json()["names"].as_array().unwrap().len(), 4);
}

#[test]
fn three_servers_share_one_vault() {
    let vault = FakeVault::start();
    let servers: Vec<TestServer> = (0..3).map(|_| server(&vault)).collect();
    // A key created on one is usable on the others.
    let mut a = servers[0].admin();
    assert_eq!(a.request("POST", "/v1/key/create/shared", None).status, 200);
    let g = a.post("/v1/key/generate/shared", "{}").json();
    for s in &servers[1..] {
        let r = s.admin().post(
            "/v1/key/decrypt/shared",
            &format!("{{\"ciphertext\":\"{}\"}}", g["ciphertext"].as_str().unwrap()),
        );
        assert_eq!(r.json()["plaintext"], g["plaintext"]);
    }
    // Concurrent creates of one name converge on one key that every server uses.
    let barrier = Arc::new(std::sync::Barrier::new(3));
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let hs: Vec<_> = servers
            .iter()
            .map(|s| {
                let b = barrier.clone();
                let mut c = s.admin();
                scope.spawn(move || {
                    b.wait();
                    c.request("POST", "/v1/key/create/race", None).status
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 200 || *s == 400), "{statuses:?}");
    assert!(statuses.contains(&200));
    let cts: Vec<(String, String)> = servers
        .iter()
        .map(|s| {
            let v = s.admin().post("/v1/key/generate/race", "{}").json();
            (
                v["plaintext"].as_str().unwrap().to_string(),
                v["ciphertext"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (pt, ct) in &cts {
        for s in &servers {
            let r = s.admin().post("/v1/key/decrypt/race", &format!("{{\"ciphertext\":\"{ct}\"}}"));
            assert_eq!(r.status, 200, "every server uses the same key");
            assert_eq!(r.json()["plaintext"].as_str().unwrap(), pt);
        }
    }
}

#[test]
fn metrics_report_store_latency_and_azure_throttling() {
    let vault = FakeVault::start();
    let srv = server(&vault);
    let mut c = srv.admin();
    assert_eq!(c.request("POST", "/v1/key/create/m", None).status, 200);
    vault.inject(Op::Versions, Fault::Throttled { retry_after: Some("0".into()) }, 2);
    assert_eq!(c.get("/v1/key/describe/m").status, 200);
    let text = c.get("/v1/metrics").text();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}:\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("kes_keystore_throttled"), 2.0);
    assert!(value("kes_keystore_retries") >= 2.0);
    assert_eq!(value("kes_keystore_read_seconds_count"), 1.0);
    assert!(value("kes_keystore_read_seconds_sum") > 0.0);
    assert!(value("kes_keystore_requests") >= 5.0);
}
