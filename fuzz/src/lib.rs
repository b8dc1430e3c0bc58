//! Fuzz entry points, one per untrusted input. Each target in `fuzz_targets/` calls one of
//! these; `tests/fuzz_replay.rs` in the main crate replays the committed seeds through the
//! same functions on every `cargo test`, so the corpus is exercised without libFuzzer.
//! Every function asserts round-trip or consistency properties, not just "no panic".

use std::sync::{Arc, OnceLock};

/// The HTTP head parser: never panics; a parsed head re-serializes its path decode
/// consistently and the consumed length is within the input.
pub fn http_head(data: &[u8]) {
    if let Ok(Some((head, used))) = kes::http::parse_head(data) {
        assert!(used <= data.len());
        assert!(used <= kes::http::MAX_HEAD_BYTES);
        assert!(head.path.starts_with('/'));
        assert!(head.headers.len() <= kes::http::MAX_HEADERS);
        let cleaned = kes::http::clean_path(&head.path);
        assert_eq!(kes::http::clean_path(&cleaned), cleaned, "clean_path is idempotent");
    }
}

/// The chunked body decoder: fed in two pieces or whole, the result is the same, and the
/// limit holds.
pub fn chunked(data: &[u8]) {
    let limit = 4096;
    let mut whole = kes::http::ChunkedDecoder::new(limit);
    let r1 = whole.feed(data);
    if let Ok(n) = r1 {
        assert!(n <= data.len());
    }
    assert!(whole.data.len() <= limit);
    let split = data.len() / 2;
    let mut parts = kes::http::ChunkedDecoder::new(limit);
    if let Ok(n) = parts.feed(&data[..split]) {
        let rest: Vec<u8> = data[n..].to_vec();
        let r2 = parts.feed(&rest);
        if r1.is_ok() && r2.is_ok() && whole.is_done() {
            assert!(parts.is_done());
            assert_eq!(parts.data, whole.data);
        }
    }
}

/// JSON request bodies with Go's rules. A body is accepted exactly when its first JSON
/// value is an object or null as `serde_json::Value` reads it (the parser borrows instead).
pub fn json_body(data: &[u8]) {
    let parsed = kes::api::wire::Body::parse(data);
    let mut values = serde_json::Deserializer::from_slice(data).into_iter::<serde_json::Value>();
    let as_value =
        matches!(values.next(), Some(Ok(serde_json::Value::Object(_) | serde_json::Value::Null)));
    assert_eq!(parsed.is_ok(), as_value);
    if let Ok(body) = parsed {
        for field in ["plaintext", "ciphertext", "context", "key", "message"] {
            if let Ok(bytes) = body.bytes(field) {
                let again =
                    kes::api::wire::decode_base64(&kes::api::wire::encode_base64(&bytes)).unwrap();
                assert_eq!(&*again, &*bytes);
            }
        }
        let _ = body.string("cipher");
    }
}

/// Ciphertexts of every format against a fixed key of each type: never panics, and
/// whatever decrypts re-encrypts and decrypts to the same plaintext.
pub fn ciphertext(data: &[u8]) {
    use kes::crypto::{Algorithm, SecretKey};
    for alg in [Algorithm::Aes256, Algorithm::ChaCha20] {
        let key = SecretKey::new(alg, &[0u8; 32]);
        if let Ok(pt) = key.decrypt(data, b"") {
            let ct = key.encrypt(&pt, b"").unwrap();
            assert_eq!(&*key.decrypt(&ct, b"").unwrap(), &*pt);
        }
    }
}

/// Stored key values: whatever parses and has an HMAC key encodes back to an F4 value that
/// parses to the same key.
pub fn stored_key(data: &[u8]) {
    if let Ok(k) = kes::crypto::KeyVersion::parse(data)
        && k.hmac.is_some()
        && let Ok(encoded) = k.encode()
    {
        let again = kes::crypto::KeyVersion::parse(encoded.as_bytes()).unwrap();
        assert_eq!(again.key.algorithm(), k.key.algorithm());
        assert_eq!(again.created_by, k.created_by);
        let ct = k.key.encrypt(b"probe", b"").unwrap();
        assert_eq!(&*again.key.decrypt(&ct, b"").unwrap(), b"probe");
    }
}

/// The YAML config loader with a fixed environment.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = |name: &str| if name == "SET" { Some("value".to_string()) } else { None };
    if let Ok(cfg) = kes::config::parse(text, "fuzz.yml", &env) {
        assert!(!cfg.admin_identity.is_empty());
    }
}

/// Policy patterns and name validation.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pattern, path) = text.split_once('\n').unwrap_or((text, "/v1/key/create/x"));
    let matched = kes::auth::pattern_matches(pattern, path);
    if pattern.is_empty() {
        assert!(!matched);
    }
    if !pattern.ends_with('*') && matched {
        assert_eq!(pattern, path);
    }
    if kes::names::valid_name(pattern) {
        assert!(kes::names::valid_pattern(pattern));
    }
}

struct Fixture {
    state: kes::api::State,
    admin: kes::auth::Identity,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let store = Arc::new(kes::keystore::mem::MemStore::new());
        let far = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let key = kes::crypto::KeyVersion::generate(kes::crypto::Algorithm::Aes256, "", time_now())
            .unwrap();
        use kes::keystore::KeyStore as _;
        store.create("k", key.encode().unwrap().as_bytes(), far).unwrap();
        let admin = kes::auth::Identity::new("a".repeat(64));
        let mut policies = kes::auth::PolicySet { admin: admin.clone(), ..Default::default() };
        policies.policies.insert(
            "p".into(),
            kes::auth::Policy {
                allow: vec!["/v1/key/*".into()],
                deny: vec!["/v1/key/delete/*".into()],
            },
        );
        policies.assignments.insert(kes::auth::Identity::new("b".repeat(64)), "p".into());
        let state = kes::api::State {
            build: kes::server::build_info(),
            policies,
            routes: kes::api::routes::default_routes(),
            keys: kes::keystore::cache::KeyCache::new(
                store,
                kes::keystore::cache::CacheConfig::default(),
                kes::api::parse_key,
            ),
            started: time_now(),
            started_at: std::time::Instant::now(),
            obs: Arc::new(kes::obs::Obs::silent()),
            proc: Arc::new(kes::obs::ProcReader::open()),
            cpus: (1, 1),
            conns: Arc::default(),
        };
        Fixture { state, admin }
    })
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// A whole request through routing, auth and the handlers with an in-memory store. The
/// first byte picks the caller (admin, a policy user, a stranger, none); the rest is the
/// raw request. Responses must have a valid status, and every error body must be JSON
/// with a `message` (or the mux's plain 404).
pub fn request(data: &[u8]) {
    let Some((&who, raw)) = data.split_first() else { return };
    let f = fixture();
    let cert = match who % 4 {
        0 => kes::api::ClientCert::One(f.admin.clone()),
        1 => kes::api::ClientCert::One(kes::auth::Identity::new("b".repeat(64))),
        2 => kes::api::ClientCert::One(kes::auth::Identity::new("c".repeat(64))),
        _ => kes::api::ClientCert::None,
    };
    let Ok(Some((head, used))) = kes::http::parse_head(raw) else { return };
    let body = &raw[used..];
    let response = match kes::api::lookup(&f.state, &head) {
        kes::api::Routed::Respond(r) => r,
        kes::api::Routed::Route(route) => {
            if route.path.starts_with("/v1/log/") {
                return;
            }
            let body = &body[..body.len().min(route.max_body)];
            kes::api::handle(&f.state, route, &head, body, &cert, &Default::default(), None)
        }
    };
    assert!((200..600).contains(&response.status));
    if response.status >= 400 && response.get_header("Content-Type") == Some("application/json") {
        let v: serde_json::Value =
            serde_json::from_slice(response.body_bytes()).expect("error body is JSON");
        assert!(v.get("message").is_some_and(|m| m.is_string()));
    } else if response.status == 404 {
        assert_eq!(response.body_bytes(), b"404 page not found\n");
    }
}
