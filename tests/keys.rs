//! Every key route over real mTLS, the stored formats of every upstream era, the spec's
//! ciphertext vectors through the API, name and body validation, an fs store across a
//! restart, single-flight on a cold key, and a scan proving no secret reaches the logs.

mod common;

use base64::Engine as _;
use common::{TempDir, TestServer};
use kes::keystore::{KeyStore, Listing, StoreError, StoredValue};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

const Z32: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const Z16: &str = "AAAAAAAAAAAAAAAAAAAAAA==";
const K2: &str = "dDHbTWgo+Yh3u804SYB5OyVMy6RiLeJYBQth1f6KlEU=";

#[test]
fn create_describe_list_delete() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    let r = c.request("POST", "/v1/key/create/my-key", None);
    assert_eq!((r.status, r.body.len()), (200, 0));
    let r = c.request("POST", "/v1/key/create/my-key", None);
    assert_eq!(r.status, 400);
    assert_eq!(r.body, b"{\"message\":\"key already exists\"\n}");
    let r = c.get("/v1/key/describe/my-key");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["name"], "my-key");
    assert_eq!(v["algorithm"], "AES256");
    assert_eq!(v["created_by"], srv.admin.identity.as_str());
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    // The stored value is upstream's F4: base64 protobuf starting with "Ci".
    let stored = srv.store.get("my-key", Instant::now() + Duration::from_secs(1)).unwrap();
    assert!(stored.starts_with(b"Ci"), "stored value is F4");
    let r = c.get("/v1/key/describe/nope");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (404, b"{\"message\":\"key does not exist\"\n}".as_slice())
    );
    assert_eq!(c.request("POST", "/v1/key/create/my-other", None).status, 200);
    let r = c.get("/v1/key/list/my-*");
    assert_eq!(r.text(), "{\"names\":[\"my-key\",\"my-other\"]}\n");
    let r = c.get("/v1/key/list/x");
    assert_eq!(r.text(), "{\"names\":null}\n");
    let r = c.request("DELETE", "/v1/key/delete/my-key", None);
    assert_eq!(r.status, 200);
    let r = c.request("DELETE", "/v1/key/delete/my-key", None);
    assert_eq!((r.status, r.message()), (404, "key does not exist".into()));
    assert_eq!(c.get("/v1/key/describe/my-key").status, 404);
    // Audit lines for create and delete carry upstream's texts.
    let audit = srv.audit_text();
    assert!(audit.contains("secret key 'my-key' created"), "{audit}");
    assert!(audit.contains("secret key 'my-key' deleted"), "{audit}");
}

#[test]
fn listing_pages_at_1024_with_continue_at() {
    let srv = TestServer::start("");
    let far = Instant::now() + Duration::from_secs(5);
    let value = kes::crypto::KeyVersion::generate(
        kes::crypto::Algorithm::Aes256,
        "",
        time::OffsetDateTime::now_utc(),
    )
    .unwrap()
    .encode()
    .unwrap();
    for i in 0..1030 {
        srv.store.create(&format!("k{i:04}"), value.as_bytes(), far).unwrap();
    }
    let r = srv.admin().get("/v1/key/list/*");
    let v = r.json();
    assert_eq!(v["names"].as_array().unwrap().len(), 1024);
    assert_eq!(v["continue_at"], "k1024");
    assert_eq!(v["names"][0], "k0000");
}

#[test]
fn generate_encrypt_decrypt_with_context() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    assert_eq!(c.request("POST", "/v1/key/create/k", None).status, 200);
    let ctx = b64(br#"{"my-bucket":"my-bucket/my/object"}"#);
    let r = c.post("/v1/key/generate/k", &format!("{{\"context\":\"{ctx}\",\"version\":\"v1\"}}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    // The request's `version` is ignored; the answer names the version that encrypted
    // (the first, "0", for a key never rotated; issue 12).
    assert_eq!(v["version"], "0");
    let plaintext = unb64(v["plaintext"].as_str().unwrap());
    let ciphertext = v["ciphertext"].as_str().unwrap().to_string();
    assert_eq!(plaintext.len(), 32);
    assert_eq!(unb64(&ciphertext).len(), 32 + 44, "raw format: sealed || iv || nonce");
    let r = c.post(
        "/v1/key/decrypt/k",
        &format!("{{\"ciphertext\":\"{ciphertext}\",\"context\":\"{ctx}\"}}"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(unb64(r.json()["plaintext"].as_str().unwrap()), plaintext);
    // Wrong context.
    let r = c.post(
        "/v1/key/decrypt/k",
        &format!("{{\"ciphertext\":\"{ciphertext}\",\"context\":\"{}\"}}", b64(b"x")),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.body, b"{\"message\":\"decryption failed: ciphertext is not authentic\"\n}");
    // Generate without a body (Content-Length 0) works: empty context.
    let r = c.request("PUT", "/v1/key/generate/k", None);
    assert_eq!(r.status, 200);
    let ct = r.json()["ciphertext"].as_str().unwrap().to_string();
    let r = c.post("/v1/key/decrypt/k", &format!("{{\"ciphertext\":\"{ct}\",\"context\":null}}"));
    assert_eq!(r.status, 200);
    // Encrypt/decrypt of arbitrary data; JSON field names are case-insensitive.
    let r = c.post("/v1/key/encrypt/k", &format!("{{\"Plaintext\":\"{}\"}}", b64(b"hello world")));
    assert_eq!(r.status, 200);
    let ct = r.json()["ciphertext"].as_str().unwrap().to_string();
    let r = c.post("/v1/key/decrypt/k", &format!("{{\"ciphertext\":\"{ct}\"}}"));
    assert_eq!(unb64(r.json()["plaintext"].as_str().unwrap()), b"hello world");
    // Missing key.
    let r = c.post("/v1/key/generate/none", "{}");
    assert_eq!((r.status, r.message()), (404, "key does not exist".into()));
}

#[test]
fn bodies_and_names_are_validated() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    assert_eq!(c.request("POST", "/v1/key/create/k", None).status, 200);
    for (path, body) in [
        ("/v1/key/encrypt/k", "not json"),
        ("/v1/key/encrypt/k", "{\"plaintext\":\"not base64!\"}"),
        ("/v1/key/encrypt/k", "{\"plaintext\":\"AQ\"}"),
        ("/v1/key/decrypt/k", "[]"),
        ("/v1/key/generate/k", "{\"context\":5}"),
        ("/v1/key/hmac/k", "{\"message\":\"-_-_\"}"),
    ] {
        let r = c.post(path, body);
        assert_eq!((r.status, r.message()), (400, "invalid request body".into()), "{path} {body}");
    }
    let r = c.post("/v1/key/import/i", "{");
    assert_eq!((r.status, r.message()), (400, "invalid import key request body".into()));
    let long = "a".repeat(81);
    for name in ["a/b", "a..b", "%E2%98%B0", long.as_str(), "-a", "a.b"] {
        let r = c.request("POST", &format!("/v1/key/create/{name}"), None);
        assert_eq!(r.status, 400, "{name}");
        let shown = kes::http::percent_decode(name).unwrap();
        assert_eq!(
            r.message(),
            format!("key name '{shown}' is empty, too long or contains invalid characters")
        );
    }
    let r = c.request("POST", "/v1/key/create/", None);
    assert_eq!(r.message(), "key name '' is empty, too long or contains invalid characters");
    // `..` is cleaned by the router first (Go's mux redirects).
    let r = c.request("POST", "/v1/key/create/../x", None);
    assert_eq!(r.status, 301);
    // Nothing was created by any of that.
    assert_eq!(srv.admin().get("/v1/key/list/").json()["names"], serde_json::json!(["k"]));
    // Oversized body on encrypt: decoding fails as upstream's limited reader makes it fail.
    let big = format!("{{\"plaintext\":\"{}\"}}", "A".repeat(1_000_000));
    let r = srv.admin().post("/v1/key/encrypt/k", &big);
    assert_eq!((r.status, r.message()), (400, "invalid request body".into()));
}

#[test]
fn import_rules() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    let r = c.post("/v1/key/import/a", &format!("{{\"key\":\"{Z32}\",\"cipher\":\"AES256\"}}"));
    assert_eq!(r.status, 200);
    let r = c.post("/v1/key/import/a", &format!("{{\"key\":\"{Z32}\",\"cipher\":\"AES256\"}}"));
    assert_eq!((r.status, r.message()), (400, "key already exists".into()));
    let r = c.post("/v1/key/import/b", &format!("{{\"key\":\"{Z32}\",\"cipher\":\"\"}}"));
    assert_eq!((r.status, r.message()), (406, "algorithm '' is not supported".into()));
    let r = c.post("/v1/key/import/b", &format!("{{\"key\":\"{Z32}\",\"cipher\":\"DES\"}}"));
    assert_eq!((r.status, r.message()), (406, "algorithm 'DES' is not supported".into()));
    let r = c.post("/v1/key/import/b", &format!("{{\"key\":\"{Z16}\",\"cipher\":\"ChaCha20\"}}"));
    assert_eq!((r.status, r.message()), (406, "invalid key size for 'ChaCha20'".into()));
    let r = c.post(
        "/v1/key/import/c",
        &format!("{{\"key\":\"{Z32}\",\"cipher\":\"XCHACHA20-POLY1305\"}}"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(c.get("/v1/key/describe/c").json()["algorithm"], "ChaCha20");
    // Imported keys get a fresh HMAC key.
    let r = c.post("/v1/key/hmac/a", &format!("{{\"message\":\"{}\"}}", b64(b"root access key")));
    assert_eq!(r.status, 200);
    assert_eq!(unb64(r.json()["hmac"].as_str().unwrap()).len(), 32);
}

/// The spec's decryption vectors D0–D7 through the API, on imported keys.
#[test]
fn upstream_ciphertexts_of_every_era_decrypt() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    for (name, key, cipher) in [
        ("za", Z32, "AES256"),
        ("zc", Z32, "ChaCha20"),
        ("ka", K2, "AES256"),
        ("kc", K2, "ChaCha20"),
    ] {
        let r = c.post(
            &format!("/v1/key/import/{name}"),
            &format!("{{\"key\":\"{key}\",\"cipher\":\"{cipher}\"}}"),
        );
        assert_eq!(r.status, 200);
    }
    let d0 = b64(br#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#);
    let d1 = b64(br#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#);
    let d3 = "lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjY2ODdhYWRmODYyYmQ3NzZjOGZjMThiOGU5ZjhlMjDEEExv7LAd4oz0SaHZrX5LBufEDEKME1ow1CDfUFrqv8QgJuy7Sw+jVqz99TK1HV851LT3K4mwwDv46TB2ngWkAJQ=".to_string();
    let d4 = "lbJYQ0hBQ0hBMjAtUE9MWTEzMDXZIDY2Njg3YWFkZjg2MmJkNzc2YzhmYzE4YjhlOWY4ZTIwxBBAr+aptD4x2+qfOhiErbnkxAxYs8RmNC1JJXD1hiHEIJ2KqM0jjkME7ndx8nyVseesN83Np0rM5ejVUun+fNFu".to_string();
    let d5 = "zwdDgHeRlIFRnJ7+DIhs/ka7GFK2CFSfDELqg1VCyTQzZ58o7MAdupMLk3ZjlMo2ZUDwldL2o41nAWDc"
        .to_string();
    let d6 = "s2gmfQHeGdlyL8x1yEWSACUV3GrSoz3t160hugMgzKWgyqesXDVUJ5Dw5Mt076rR1PNiU9X4YjLH14D8a81t2r2xsz4gVZac".to_string();
    let d7 = "gO4woRIswAJdjUjW7z2ApsSQxJlwB24yjLrmH4eI7sB0uh5nfEJfk9ybTPFft5FRFaZCVBmzhx7OJs9n0WWtxH3sySIxecIK".to_string();
    let pt28 = "CLcJoykFCWZDkEIiUq9bJRqwCwW9ZDvdgu8EMA==";
    for (key, ct, ctx, want) in [
        ("za", &d0, None, Z16),
        ("zc", &d1, None, Z16),
        ("za", &d3, None, Z16),
        ("zc", &d4, None, Z16),
        ("za", &d5, None, Z16),
        ("ka", &d6, Some(Z16), pt28),
        ("kc", &d7, Some(Z16), pt28),
    ] {
        let body = match ctx {
            Some(x) => format!("{{\"ciphertext\":\"{ct}\",\"context\":\"{x}\"}}"),
            None => format!("{{\"ciphertext\":\"{ct}\"}}"),
        };
        let r = c.post(&format!("/v1/key/decrypt/{key}"), &body);
        assert_eq!(r.status, 200, "{key} {ct}: {}", r.text());
        assert_eq!(r.json()["plaintext"], want);
        // A flipped bit anywhere fails with upstream's one message.
        let mut bad = unb64(ct);
        let mid = bad.len() / 2;
        bad[mid] ^= 0x01;
        let r = c.post(
            &format!("/v1/key/decrypt/{key}"),
            &format!("{{\"ciphertext\":\"{}\"}}", b64(&bad)),
        );
        assert_eq!(
            (r.status, r.message()),
            (400, "decryption failed: ciphertext is not authentic".into())
        );
    }
    // D8: the pre-v0.6.1 format is refused.
    let d8 = b64(br#"{"aead":"AES-256-GCM","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#);
    let r = c.post("/v1/key/decrypt/za", &format!("{{\"ciphertext\":\"{d8}\"}}"));
    assert_eq!(r.status, 400);
}

/// Upstream key files of every era, dropped into an fs directory, load and work; keys
/// survive a restart.
#[test]
fn fs_store_reads_upstream_files_and_survives_restart() {
    let keys = TempDir::new("fskeys");
    let p5 = "CiQKIMiHG7XrN94FuwblJJor4f7f6rbqAl7DwsLaiIoyz0D2EAESJAognLXl4yqa4cjZTcSbsU6sNnN8kP9ARWkXwa20YQZa9HgQARoMCNithK0GEID67qYDIkAzZWNmY2RmMzhmY2JlMTQxYWUyNmExMDMwZjgxZTk2Yjc1MzM2NWE0Njc2MGFlNmI1Nzg2OThhOTdjNTlmZDIy";
    let files = [
        ("f0", format!("{{\"bytes\":\"{Z32}\"}}")),
        (
            "f1",
            format!(
                "{{\"bytes\":\"{Z32}\",\"algorithm\":\"XCHACHA20-POLY1305\",\"created_at\":\"2022-05-01T10:00:00.123456789Z\",\"created_by\":\"3ecf\"}}"
            ),
        ),
        (
            "f2",
            format!(
                "{{\"version\":\"v1\",\"bytes\":\"{Z32}\",\"algorithm\":\"AES256-GCM_SHA256\",\"created_at\":\"2023-01-01T00:00:00Z\"}}"
            ),
        ),
        (
            "f3",
            format!(
                "{{\"version\":\"v1\",\"bytes\":\"{Z32}\",\"created_at\":\"2023-11-01T00:00:00Z\",\"created_by\":\"\"}}"
            ),
        ),
        ("f4", p5.to_string()),
    ];
    for (name, content) in &files {
        std::fs::write(keys.join(name), content).unwrap();
    }
    let d5 = "zwdDgHeRlIFRnJ7+DIhs/ka7GFK2CFSfDELqg1VCyTQzZ58o7MAdupMLk3ZjlMo2ZUDwldL2o41nAWDc";
    let d1 = b64(br#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#);
    {
        let srv = TestServer::start_fs("", keys.path());
        let mut c = srv.admin();
        let r = c.get("/v1/key/list/f*");
        assert_eq!(r.json()["names"], serde_json::json!(["f0", "f1", "f2", "f3", "f4"]));
        // AES-era keys open the raw D5 vector; the ChaCha F1 key opens D1; the untyped F0
        // key opens ChaCha-era D1 through the declared-algorithm retry.
        for key in ["f0", "f2", "f3"] {
            let r =
                c.post(&format!("/v1/key/decrypt/{key}"), &format!("{{\"ciphertext\":\"{d5}\"}}"));
            assert_eq!(
                (r.status, r.json()["plaintext"].clone()),
                (200, serde_json::json!(Z16)),
                "{key}"
            );
        }
        for key in ["f0", "f1"] {
            let r =
                c.post(&format!("/v1/key/decrypt/{key}"), &format!("{{\"ciphertext\":\"{d1}\"}}"));
            assert_eq!(r.status, 200, "{key}: {}", r.text());
        }
        assert_eq!(c.get("/v1/key/describe/f1").json()["algorithm"], "ChaCha20");
        assert_eq!(
            c.get("/v1/key/describe/f1").json()["created_at"],
            "2022-05-01T10:00:00.123456789Z"
        );
        assert_eq!(c.get("/v1/key/describe/f0").json()["created_at"], "0001-01-01T00:00:00Z");
        let f4 = c.get("/v1/key/describe/f4").json();
        assert_eq!(f4["created_at"], "2024-01-12T10:39:20.886816Z");
        assert_eq!(
            f4["created_by"],
            "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22"
        );
        // HMAC: the F4 key has the §8.4 vector; JSON-era keys cannot HMAC.
        let r = c.post("/v1/key/hmac/f4", &format!("{{\"message\":\"{}\"}}", b64(b"Hello World")));
        assert_eq!(r.json()["hmac"], "yjAJfdVJzrXLR0hzmvEsig3zCdDbx01nkukKVtBu6OA=");
        let r = c.post("/v1/key/hmac/f0", &format!("{{\"message\":\"{}\"}}", b64(b"x")));
        assert_eq!((r.status, r.message()), (409, "key does not support HMAC".into()));
        // A new key, and a ciphertext made with it before the restart.
        assert_eq!(c.request("POST", "/v1/key/create/fresh", None).status, 200);
        let r = c.post("/v1/key/generate/fresh", "{}");
        let v = r.json();
        std::fs::write(keys.join(".probe"), serde_json::to_vec(&v).unwrap()).unwrap();
    }
    // Stored files are never rewritten.
    for (name, content) in &files {
        assert_eq!(&std::fs::read_to_string(keys.join(name)).unwrap(), content);
    }
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(keys.join(".probe")).unwrap()).unwrap();
    let srv = TestServer::start_fs("", keys.path());
    let r = srv.admin().post(
        "/v1/key/decrypt/fresh",
        &format!("{{\"ciphertext\":\"{}\"}}", saved["ciphertext"].as_str().unwrap()),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["plaintext"], saved["plaintext"]);
}

/// A store whose reads are slow and counted.
struct SlowStore {
    inner: kes::keystore::mem::MemStore,
    reads: AtomicU64,
}

impl KeyStore for SlowStore {
    fn describe(&self) -> String {
        "slow".into()
    }
    fn status(&self, d: Instant) -> Result<Duration, StoreError> {
        self.inner.status(d)
    }
    fn create(&self, n: &str, v: &[u8], d: Instant) -> Result<(), StoreError> {
        self.inner.create(n, v, d)
    }
    fn get(&self, n: &str, d: Instant) -> Result<StoredValue, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        self.inner.get(n, d)
    }
    fn delete(&self, n: &str, d: Instant) -> Result<(), StoreError> {
        self.inner.delete(n, d)
    }
    fn list(&self, p: &str, d: Instant) -> Result<Listing, StoreError> {
        self.inner.list(p, d)
    }
}

#[test]
fn two_hundred_concurrent_requests_on_a_cold_key_make_one_backend_read() {
    let store = Arc::new(SlowStore {
        inner: kes::keystore::mem::MemStore::new(),
        reads: AtomicU64::new(0),
    });
    let value = kes::crypto::KeyVersion::generate(
        kes::crypto::Algorithm::Aes256,
        "",
        time::OffsetDateTime::now_utc(),
    )
    .unwrap()
    .encode()
    .unwrap();
    store.create("cold", value.as_bytes(), Instant::now() + Duration::from_secs(1)).unwrap();
    let srv = TestServer::start_store("", store.clone());
    // Connect all 200 first, then release them together.
    let clients: Vec<_> = (0..200).map(|_| srv.admin()).collect();
    let barrier = Arc::new(std::sync::Barrier::new(200));
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                c.post("/v1/key/generate/cold", "{}").status
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert_eq!(store.reads.load(Ordering::SeqCst), 1);
}

/// After every key operation, no key bytes, plaintexts or ciphertexts appear in the audit
/// trail, the error log, the streams or the metrics.
#[test]
fn no_secret_reaches_logs_streams_or_metrics() {
    let srv = TestServer::start("log:\n  error: debug\n");
    let mut audit_sub = srv.admin();
    audit_sub.send_raw(b"GET /v1/log/audit HTTP/1.1\r\nHost: kes\r\n\r\n").unwrap();
    audit_sub.read_head().unwrap();
    let mut c = srv.admin();
    let secret_key = b64(&[7u8; 32]);
    let mut secrets = vec![secret_key.clone()];
    assert_eq!(
        c.post("/v1/key/import/s", &format!("{{\"key\":\"{secret_key}\",\"cipher\":\"AES256\"}}"))
            .status,
        200
    );
    assert_eq!(c.request("POST", "/v1/key/create/t", None).status, 200);
    let g = c.post("/v1/key/generate/t", &format!("{{\"context\":\"{}\"}}", b64(b"ctx")));
    let gv = g.json();
    secrets.push(gv["plaintext"].as_str().unwrap().to_string());
    secrets.push(gv["ciphertext"].as_str().unwrap().to_string());
    let plaintext = b64(b"very secret payload 1234567890");
    secrets.push(plaintext.clone());
    let e = c.post("/v1/key/encrypt/s", &format!("{{\"plaintext\":\"{plaintext}\"}}"));
    let ct = e.json()["ciphertext"].as_str().unwrap().to_string();
    secrets.push(ct.clone());
    assert_eq!(c.post("/v1/key/decrypt/s", &format!("{{\"ciphertext\":\"{ct}\"}}")).status, 200);
    assert_eq!(
        c.post(
            "/v1/key/decrypt/s",
            &format!("{{\"ciphertext\":\"{ct}\",\"context\":\"{}\"}}", b64(b"wrong"))
        )
        .status,
        400
    );
    let h = c.post("/v1/key/hmac/t", &format!("{{\"message\":\"{}\"}}", b64(b"root access key")));
    secrets.push(h.json()["hmac"].as_str().unwrap().to_string());
    let stored = srv.store.get("t", Instant::now() + Duration::from_secs(1)).unwrap();
    secrets.push(String::from_utf8(stored.to_vec()).unwrap());
    let _ = c.post("/v1/key/encrypt/s", "{\"plaintext\":\"bad!\"}");
    assert_eq!(c.request("DELETE", "/v1/key/delete/s", None).status, 200);
    let metrics = c.get("/v1/metrics").text();
    let mut streamed = Vec::new();
    for _ in 0..8 {
        streamed.extend(audit_sub.read_chunk().unwrap());
    }
    let streamed = String::from_utf8_lossy(&streamed).into_owned();
    let outputs = [srv.audit_text(), srv.error_text(), metrics, streamed];
    for secret in &secrets {
        // Also look for a distinctive middle slice, in case of re-encoding.
        let slice = &secret[4..secret.len().min(24)];
        for out in &outputs {
            assert!(
                !out.contains(secret.as_str()) && !out.contains(slice),
                "secret leaked into output:\n{out}"
            );
        }
    }
    assert!(outputs[0].contains("/v1/key/generate/t"), "the audit trail did record the requests");
}

/// A store that panics on reads, to prove a panic ends only its own connection.
struct PanicStore(kes::keystore::mem::MemStore);

impl KeyStore for PanicStore {
    fn describe(&self) -> String {
        "panic".into()
    }
    fn status(&self, d: Instant) -> Result<Duration, StoreError> {
        self.0.status(d)
    }
    fn create(&self, n: &str, v: &[u8], d: Instant) -> Result<(), StoreError> {
        self.0.create(n, v, d)
    }
    fn get(&self, n: &str, _: Instant) -> Result<StoredValue, StoreError> {
        panic!("store exploded reading {n}");
    }
    fn delete(&self, n: &str, d: Instant) -> Result<(), StoreError> {
        self.0.delete(n, d)
    }
    fn list(&self, p: &str, d: Instant) -> Result<Listing, StoreError> {
        self.0.list(p, d)
    }
}

#[test]
fn a_panic_ends_only_its_connection() {
    let srv =
        TestServer::start_store("", Arc::new(PanicStore(kes::keystore::mem::MemStore::new())));
    let mut other = srv.admin();
    assert_eq!(other.get("/version").status, 200);
    let mut victim = srv.admin();
    let r = victim.get("/v1/key/describe/boom");
    assert_eq!((r.status, r.message()), (500, "internal server error".into()));
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(victim.read_reply().is_err(), "the panicking connection is closed");
    // Everyone else is unaffected, including an already open connection.
    assert_eq!(other.get("/version").status, 200);
    assert_eq!(srv.admin().request("POST", "/v1/key/create/fine", None).status, 200);
    let log = srv.error_text();
    assert!(log.contains("panic") && log.contains("store exploded reading boom"), "{log}");
}

/// One rule for JSON field names on every path (issue 11): Go's. A request body and a
/// stored key file both take the last of several keys that name the same field, and both
/// fold the Kelvin sign to `k` and the long s to `s`; anything else non-ASCII matches
/// nothing.
#[test]
fn json_field_names_match_as_go_on_requests_and_stored_keys() {
    let keys = TempDir::new("gofields");
    // D5 opens with the all-zero AES key: `last` must read Z32 (the last key), `first` K2.
    let files = [
        (
            "last",
            format!(
                "{{\"bytes\":\"{K2}\",\"Bytes\":\"{Z32}\",\"algorithm\":\"AES256-GCM_SHA256\"}}"
            ),
        ),
        (
            "first",
            format!(
                "{{\"BYTES\":\"{Z32}\",\"bytes\":\"{K2}\",\"algorithm\":\"AES256-GCM_SHA256\"}}"
            ),
        ),
        ("longs", format!("{{\"byte\u{017f}\":\"{Z32}\",\"algorithm\":\"AES256-GCM_SHA256\"}}")),
        (
            "dotless",
            format!(
                "{{\"byte\u{0131}\":\"{Z32}\",\"bytes\":\"{K2}\",\"algorithm\":\"AES256-GCM_SHA256\"}}"
            ),
        ),
    ];
    for (name, content) in &files {
        std::fs::write(keys.join(name), content).unwrap();
    }
    let d5 = "zwdDgHeRlIFRnJ7+DIhs/ka7GFK2CFSfDELqg1VCyTQzZ58o7MAdupMLk3ZjlMo2ZUDwldL2o41nAWDc";
    let srv = TestServer::start_fs("", keys.path());
    let mut c = srv.admin();
    let not_authentic = b"{\"message\":\"decryption failed: ciphertext is not authentic\"\n}";
    let decrypt = |c: &mut common::Client, key: &str, body: &str| {
        c.post(&format!("/v1/key/decrypt/{key}"), body)
    };
    let d5_body = format!("{{\"ciphertext\":\"{d5}\"}}");
    assert_eq!(decrypt(&mut c, "last", &d5_body).status, 200, "the last duplicate wins");
    let r = decrypt(&mut c, "first", &d5_body);
    assert_eq!((r.status, r.body.as_slice()), (400, &not_authentic[..]), "not the first one");
    assert_eq!(decrypt(&mut c, "longs", &d5_body).status, 200, "the long s is an s");
    let r = decrypt(&mut c, "dotless", &d5_body);
    assert_eq!((r.status, r.body.as_slice()), (400, &not_authentic[..]), "ı is not an i");

    // The request path: the issue's body, in both orders; the Kelvin sign on an import.
    assert_eq!(c.request("POST", "/v1/key/create/k", None).status, 200);
    let r = c.post(
        "/v1/key/encrypt/k",
        &format!("{{\"plaintext\":\"{}\",\"context\":\"AAAA\"}}", b64(b"hi")),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.json()["ciphertext"].as_str().unwrap().to_string();
    let r = decrypt(
        &mut c,
        "k",
        &format!("{{\"ciphertext\":\"{ct}\",\"context\":\"AQID\",\"Context\":\"AAAA\"}}"),
    );
    assert_eq!(r.status, 200, "the last duplicate wins: {}", r.text());
    assert_eq!(unb64(r.json()["plaintext"].as_str().unwrap()), b"hi");
    let r = decrypt(
        &mut c,
        "k",
        &format!("{{\"ciphertext\":\"{ct}\",\"Context\":\"AAAA\",\"context\":\"AQID\"}}"),
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (400, &not_authentic[..]),
        "an exact spelling does not win"
    );
    let r = c.post(
        "/v1/key/import/kelvin",
        &format!("{{\"\u{212a}ey\":\"{Z32}\",\"cipher\":\"AES256\"}}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(decrypt(&mut c, "kelvin", &d5_body).status, 200, "the Kelvin sign is a k");
    let r = c.post(
        "/v1/key/import/dotted",
        &format!("{{\"\u{0130}\":\"x\",\"key\":\"{Z32}\",\"c\u{0130}pher\":\"AES256\"}}"),
    );
    assert_eq!(
        (r.status, r.text()),
        (406, "{\"message\":\"algorithm '' is not supported\"\n}".to_string()),
        "İ is not an i, so the cipher is missing"
    );
}
