//! Key rotation behind the unchanged API (issue 12), through the real server and real mTLS,
//! over the `mem`, `fs` and Azure (fake vault) stores: ciphertexts of every format and of
//! every version keep decrypting across rotations, retiring a version makes its ciphertexts
//! fail with upstream's error until it is re-enabled, HMAC never changes, rewrap re-seals
//! under the newest version, bad input gets precise errors, and two servers sharing a vault
//! that rotate at the same moment converge on one ordered version list.

mod common;
#[path = "support/fake_vault.rs"]
mod fake_vault;
#[path = "support/vault_store.rs"]
mod vault_store;

use base64::Engine as _;
use common::{Client, TempDir, TestServer};
use fake_vault::{FakeVault, Op};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use vault_store::azure_store;

const Z32: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const Z16: &str = "AAAAAAAAAAAAAAAAAAAAAA==";
const NOT_AUTHENTIC: &str = "decryption failed: ciphertext is not authentic";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `kes-crypto.md` §8.1 D0 (JSON), D3 (msgpack) and D5 (raw) under the all-zero AES key.
fn legacy_vectors() -> [(&'static str, String); 3] {
    [
        (
            "json",
            b64(br#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#),
        ),
        (
            "msgpack",
            "lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjY2ODdhYWRmODYyYmQ3NzZjOGZjMThiOGU5ZjhlMjDEEExv7LAd4oz0SaHZrX5LBufEDEKME1ow1CDfUFrqv8QgJuy7Sw+jVqz99TK1HV851LT3K4mwwDv46TB2ngWkAJQ=".into(),
        ),
        (
            "raw",
            "zwdDgHeRlIFRnJ7+DIhs/ka7GFK2CFSfDELqg1VCyTQzZ58o7MAdupMLk3ZjlMo2ZUDwldL2o41nAWDc".into(),
        ),
    ]
}

/// A ciphertext with what it must decrypt to.
struct Sealed {
    what: String,
    ciphertext: String,
    context: Option<String>,
    plaintext: String,
    /// The version the server said it used (`None` for the legacy vectors).
    version: Option<String>,
}

fn decrypt_body(s: &Sealed, hint: Option<&str>) -> String {
    let mut body = format!("{{\"ciphertext\":\"{}\"", s.ciphertext);
    if let Some(c) = &s.context {
        body.push_str(&format!(",\"context\":\"{c}\""));
    }
    if let Some(v) = hint {
        body.push_str(&format!(",\"version\":\"{v}\""));
    }
    body.push('}');
    body
}

fn decrypt(c: &mut Client, key: &str, s: &Sealed, hint: Option<&str>) -> (u16, String) {
    let r = c.post(&format!("/v1/key/decrypt/{key}"), &decrypt_body(s, hint));
    if r.status == 200 {
        (200, r.json()["plaintext"].as_str().unwrap().to_string())
    } else {
        (r.status, r.message())
    }
}

fn assert_all_decrypt(c: &mut Client, key: &str, sealed: &[Sealed]) {
    for s in sealed {
        assert_eq!(decrypt(c, key, s, None), (200, s.plaintext.clone()), "{}", s.what);
        if let Some(v) = &s.version {
            assert_eq!(
                decrypt(c, key, s, Some(v)),
                (200, s.plaintext.clone()),
                "{} hinted",
                s.what
            );
        }
    }
}

/// Generate (kms-go style: POST, `{"context":…}` only) and encrypt, with and without context.
fn seal_some(c: &mut Client, key: &str, tag: &str, sealed: &mut Vec<Sealed>) -> String {
    let ctx = b64(format!("{{\"bucket\":\"{tag}\"}}").as_bytes());
    let r = c.post(&format!("/v1/key/generate/{key}"), &format!("{{\"context\":\"{ctx}\"}}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let g = r.json();
    let version = g["version"].as_str().unwrap().to_string();
    sealed.push(Sealed {
        what: format!("generate {tag}"),
        ciphertext: g["ciphertext"].as_str().unwrap().into(),
        context: Some(ctx),
        plaintext: g["plaintext"].as_str().unwrap().into(),
        version: Some(version.clone()),
    });
    let pt = b64(format!("secret of {tag}").as_bytes());
    let r = c.post(&format!("/v1/key/encrypt/{key}"), &format!("{{\"plaintext\":\"{pt}\"}}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let e = r.json();
    assert_eq!(e["version"], version.as_str(), "generate and encrypt use the same version");
    sealed.push(Sealed {
        what: format!("encrypt {tag}"),
        ciphertext: e["ciphertext"].as_str().unwrap().into(),
        context: None,
        plaintext: pt,
        version: Some(version.clone()),
    });
    version
}

fn rotate(c: &mut Client, key: &str, body: Option<&str>) -> (u16, Value) {
    let r = c.request("PUT", &format!("/v1/key/rotate/{key}"), body.map(str::as_bytes));
    let status = r.status;
    (status, r.json())
}

fn ids(describe: &Value) -> Vec<String> {
    describe["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

fn states(describe: &Value) -> Vec<String> {
    describe["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap().to_string())
        .collect()
}

fn hmac(c: &mut Client, key: &str) -> (u16, String) {
    let r = c.request("PUT", &format!("/v1/key/hmac/{key}"), Some(br#"{"message":"cm9vdA=="}"#));
    (r.status, r.text())
}

/// The whole rotation story on one server; returns the version ids of key `za`.
fn rotation_story(srv: &TestServer) -> Vec<String> {
    let mut c = srv.admin();
    let r = c.post("/v1/key/import/za", &format!("{{\"key\":\"{Z32}\",\"cipher\":\"AES256\"}}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let mut sealed: Vec<Sealed> = legacy_vectors()
        .into_iter()
        .map(|(what, ct)| Sealed {
            what: what.into(),
            ciphertext: ct,
            context: None,
            plaintext: Z16.into(),
            version: None,
        })
        .collect();
    let first = seal_some(&mut c, "za", "before", &mut sealed);
    let d = c.get("/v1/key/describe/za").json();
    assert_eq!(ids(&d), std::slice::from_ref(&first));
    assert_eq!(states(&d), ["live"]);
    assert_eq!(d["algorithm"], "AES256");
    assert_eq!(d["versions"][0]["created_by"], srv.admin.identity.as_str());
    let (status, mac_before) = hmac(&mut c, "za");
    assert_eq!(status, 200);
    assert_all_decrypt(&mut c, "za", &sealed);

    // One rotation: the answer lists both versions, the new one encrypts from now on.
    let (status, d) = rotate(&mut c, "za", None);
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["name"], "za");
    let after_one = ids(&d);
    assert_eq!(after_one.len(), 2);
    assert_eq!(after_one[0], first);
    assert_eq!(states(&d), ["live", "live"]);
    let second = seal_some(&mut c, "za", "after-one", &mut sealed);
    assert_eq!(second, after_one[1]);
    assert_all_decrypt(&mut c, "za", &sealed);
    assert_eq!(hmac(&mut c, "za"), (200, mac_before.clone()), "HMAC never changes");

    // Several rotations, with `{}` as the body too.
    assert_eq!(rotate(&mut c, "za", Some("{}")).0, 200);
    let (status, d) = rotate(&mut c, "za", None);
    assert_eq!(status, 200);
    let all = ids(&d);
    assert_eq!(all.len(), 4);
    assert_eq!(&all[..2], &after_one[..]);
    let newest = seal_some(&mut c, "za", "after-three", &mut sealed);
    assert_eq!(&newest, &all[3]);
    assert_all_decrypt(&mut c, "za", &sealed);
    assert_eq!(hmac(&mut c, "za"), (200, mac_before.clone()));
    // Describe (a fresh connection) shows the same ordered list.
    assert_eq!(ids(&srv.admin().get("/v1/key/describe/za").json()), all);

    // A hint naming another live version of the key fails like a wrong key.
    let s = sealed.iter().find(|s| s.version.as_deref() == Some(first.as_str())).unwrap();
    assert_eq!(decrypt(&mut c, "za", s, Some(&second)), (400, NOT_AUTHENTIC.into()));
    // A hint that names no version is ignored, as upstream ignores the field.
    assert_eq!(decrypt(&mut c, "za", s, Some("v1")), (200, s.plaintext.clone()));

    // Retire the first version: its ciphertexts (every legacy format too) fail with the
    // upstream text, with and without a hint; the others still decrypt.
    let (status, d) = rotate(&mut c, "za", Some(&format!("{{\"retire\":\"{first}\"}}")));
    assert_eq!(status, 200, "{d}");
    assert_eq!(states(&d), ["retired", "live", "live", "live"]);
    for s in &sealed {
        let expect = if s.version.as_deref().is_none_or(|v| v == first) {
            (400, NOT_AUTHENTIC.to_string())
        } else {
            (200, s.plaintext.clone())
        };
        assert_eq!(decrypt(&mut c, "za", s, None), expect, "{}", s.what);
        if let Some(v) = &s.version {
            assert_eq!(decrypt(&mut c, "za", s, Some(v)), expect, "{} hinted", s.what);
        }
    }
    // The HMAC secret belongs to the first version: retired with it.
    let (status, text) = hmac(&mut c, "za");
    assert_eq!((status, text.as_str()), (409, "{\"message\":\"key does not support HMAC\"\n}"));
    // Retiring twice is a no-op; re-enabling brings every ciphertext back.
    assert_eq!(rotate(&mut c, "za", Some(&format!("{{\"retire\":\"{first}\"}}"))).0, 200);
    let (status, d) = rotate(&mut c, "za", Some(&format!("{{\"enable\":\"{first}\"}}")));
    assert_eq!(status, 200);
    assert_eq!(states(&d), ["live", "live", "live", "live"]);
    assert_all_decrypt(&mut c, "za", &sealed);
    assert_eq!(hmac(&mut c, "za"), (200, mac_before));

    // Retiring the newest makes the next newest live version encrypt.
    let (status, _) = rotate(&mut c, "za", Some(&format!("{{\"retire\":\"{newest}\"}}")));
    assert_eq!(status, 200);
    let r = c.post("/v1/key/encrypt/za", "{\"plaintext\":\"AA==\"}");
    assert_eq!(r.json()["version"], all[2].as_str());
    assert_eq!(rotate(&mut c, "za", Some(&format!("{{\"enable\":\"{newest}\"}}"))).0, 200);

    // Rewrap: the first version's ciphertext comes back sealed by the newest, same context.
    let s = sealed.iter().find(|s| s.what == "generate before").unwrap();
    let r = c.request("PUT", "/v1/key/rewrap/za", Some(decrypt_body(s, None).as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    let w = r.json();
    assert_eq!(w["version"], newest.as_str());
    assert_eq!(w.as_object().unwrap().len(), 2, "no plaintext in a rewrap answer: {w}");
    let rewrapped = Sealed {
        what: "rewrapped".into(),
        ciphertext: w["ciphertext"].as_str().unwrap().into(),
        context: s.context.clone(),
        plaintext: s.plaintext.clone(),
        version: Some(newest.clone()),
    };
    assert_ne!(rewrapped.ciphertext, s.ciphertext);
    assert_eq!(decrypt(&mut c, "za", &rewrapped, Some(&newest)), (200, s.plaintext.clone()));
    // Rewrapping with the wrong context fails like a decrypt.
    let wrong = Sealed { context: Some(b64(b"other")), ..rewrapped };
    let r = c.request("PUT", "/v1/key/rewrap/za", Some(decrypt_body(&wrong, None).as_bytes()));
    assert_eq!((r.status, r.message()), (400, NOT_AUTHENTIC.into()));

    // Bad input.
    let (status, v) = rotate(&mut c, "missing", None);
    assert_eq!((status, v["message"].as_str().unwrap()), (404, "key does not exist"));
    let (status, v) = rotate(&mut c, "za", Some("{\"retire\":\"ffff\"}"));
    assert_eq!(
        (status, v["message"].as_str().unwrap()),
        (400, "key version 'ffff' does not exist")
    );
    for bad in ["../x", "", "a/b", &"a".repeat(65)] {
        let (status, v) = rotate(&mut c, "za", Some(&format!("{{\"enable\":\"{bad}\"}}")));
        if bad.is_empty() {
            // An empty field is an absent field: a plain rotation.
            assert_eq!(status, 200);
            continue;
        }
        assert_eq!(
            (status, v["message"].as_str().unwrap()),
            (400, "invalid key version: expected 1 to 64 characters of 0-9, A-Z, a-z and '-'"),
            "{bad}"
        );
    }
    let (status, v) = rotate(&mut c, "za", Some("{\"retire\":\"a\",\"enable\":\"b\"}"));
    assert_eq!(
        (status, v["message"].as_str().unwrap()),
        (400, "invalid rotate request body: give 'retire' or 'enable', not both")
    );
    let (status, v) = rotate(&mut c, "za", Some("{\"retire\":5}"));
    assert_eq!((status, v["message"].as_str().unwrap()), (400, "invalid rotate request body"));
    let (status, v) = rotate(&mut c, "za", Some("[1"));
    assert_eq!((status, v["message"].as_str().unwrap()), (400, "invalid rotate request body"));
    let r = c.post("/v1/key/rotate/bad%2Fname", "");
    assert_eq!(r.status, 400);

    // A key of one version cannot lose it.
    assert_eq!(c.request("POST", "/v1/key/create/single", None).status, 200);
    let only = ids(&c.get("/v1/key/describe/single").json()).remove(0);
    let (status, v) = rotate(&mut c, "single", Some(&format!("{{\"retire\":\"{only}\"}}")));
    assert_eq!(status, 409);
    assert_eq!(
        v["message"].as_str().unwrap(),
        format!(
            "version '{only}' is the only live version of key 'single' and cannot be retired; rotate first"
        )
    );

    // Audit: rotations, retirements and rewraps with their version ids, never material.
    let audit = srv.audit_text();
    for line in [
        format!("secret key 'za' rotated: version '{}' added", all[1]),
        format!("secret key 'za' version '{first}' retired"),
        format!("secret key 'za' version '{first}' enabled"),
        format!(
            "secret key 'za' ciphertext rewrapped from version '{first}' to version '{newest}'"
        ),
    ] {
        assert!(audit.contains(&line), "missing audit line {line:?} in:\n{audit}");
    }
    let d = c.get("/v1/key/describe/za").json();
    ids(&d)
}

#[test]
fn rotation_on_the_memory_store() {
    let srv = TestServer::start("");
    let ids = rotation_story(&srv);
    assert_eq!(ids[0], "0");
    assert!(ids[1..].iter().all(|i| i.len() == 16), "{ids:?}");
}

#[test]
fn rotation_on_the_fs_store_keeps_the_key_file_upstream_readable() {
    let dir = TempDir::new("rot-fs");
    let keys = dir.join("keys");
    let srv = TestServer::start_fs("", &keys);
    let mut c = srv.admin();
    assert_eq!(c.request("POST", "/v1/key/create/plain", None).status, 200);
    let before = std::fs::read(keys.join("plain")).unwrap();
    assert_eq!(rotate(&mut c, "plain", None).0, 200);
    let ids = rotation_story(&srv);
    assert_eq!(ids.len(), 5);
    // Upstream lists every entry of the key directory: only keys are there, and the key
    // file (the first version, what upstream reads) is unchanged by rotation.
    let mut names: Vec<String> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["plain", "single", "za"]);
    assert_eq!(std::fs::read(keys.join("plain")).unwrap(), before);
    let imported =
        kes::crypto::KeyVersion::parse(&std::fs::read(keys.join("za")).unwrap()).unwrap();
    assert_eq!(imported.key.algorithm(), kes::crypto::Algorithm::Aes256);
    // A restarted server (a new process reading the same directory) sees the same versions.
    drop(c);
    drop(srv);
    let srv = TestServer::start_fs("", &keys);
    let d = srv.admin().get("/v1/key/describe/za").json();
    assert_eq!(self::ids(&d), ids);
    // Deleting the key deletes its versions.
    assert_eq!(srv.admin().request("DELETE", "/v1/key/delete/za", None).status, 200);
    assert!(!dir.join("keys.versions").join("za").exists());
}

#[test]
fn rotation_on_azure_tags_versions_and_disables_retired_ones() {
    let vault = FakeVault::start();
    let srv = TestServer::start_store("", azure_store(&vault));
    let ids = rotation_story(&srv);
    // In the vault: the first version untagged, every rotation a tagged new version of the
    // same secret, all enabled again at the end.
    let in_vault = vault.versions("za");
    assert_eq!(in_vault.len(), ids.len());
    assert!(in_vault.iter().all(|v| v.enabled));
    let oldest = in_vault.iter().min_by_key(|v| (v.created, v.id.clone())).unwrap();
    assert_eq!(oldest.id, ids[0]);
    assert!(ids.iter().all(|i| i.len() == 32), "Key Vault version ids: {ids:?}");
}

#[test]
fn a_create_duplicate_is_never_taken_for_a_version() {
    let vault = FakeVault::start();
    let srv = TestServer::start_store("", azure_store(&vault));
    let mut c = srv.admin();
    assert_eq!(c.request("POST", "/v1/key/create/dup", None).status, 200);
    let first = vault.versions("dup").remove(0);
    // A concurrent create's loser: an untagged later version with another key inside.
    let other = kes::crypto::KeyVersion::generate(
        kes::crypto::Algorithm::Aes256,
        "loser",
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    vault.insert_version("dup", &other.encode().unwrap(), first.created + 5, None);
    let (status, d) = rotate(&mut c, "dup", None);
    assert_eq!(status, 200, "{d}");
    let listed = ids(&d);
    assert_eq!(listed.len(), 2, "the duplicate is not a version: {d}");
    assert_eq!(listed[0], first.id);
    assert!(!listed.contains(
        &vault.versions("dup").iter().find(|v| v.created == first.created + 5).unwrap().id
    ));
}

#[test]
fn two_servers_rotating_at_once_converge() {
    let vault = FakeVault::start();
    // Short cache expiry so that each server re-reads the vault while the test polls.
    let extra = "cache:\n  expiry:\n    any: 1s\n";
    let a = TestServer::start_store(extra, azure_store(&vault));
    let b = TestServer::start_store(extra, azure_store(&vault));
    assert_eq!(a.admin().request("POST", "/v1/key/create/shared", None).status, 200);
    let barrier = Arc::new(Barrier::new(2));
    let rotations: Vec<_> = [&a, &b]
        .into_iter()
        .map(|srv| {
            let mut c = srv.admin();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let r = c.request("PUT", "/v1/key/rotate/shared", None);
                (r.status, r.text())
            })
        })
        .collect();
    for h in rotations {
        let (status, text) = h.join().unwrap();
        assert_eq!(status, 200, "{text}");
    }
    // The vault holds three versions: the first, and one rotation from each server.
    let in_vault = vault.versions("shared");
    assert_eq!(in_vault.len(), 3);
    let oldest = in_vault.iter().min_by_key(|v| (v.created, v.id.clone())).unwrap().id.clone();
    let mut vault_ids: Vec<String> = in_vault.iter().map(|v| v.id.clone()).collect();
    vault_ids.sort();
    // Both servers end with the same ordered list of all three (polled: each re-reads the
    // vault when its cached copy expires).
    let deadline = Instant::now() + Duration::from_secs(60);
    let want = loop {
        let got_a = ids(&a.admin().get("/v1/key/describe/shared").json());
        let got_b = ids(&b.admin().get("/v1/key/describe/shared").json());
        let mut sorted = got_a.clone();
        sorted.sort();
        if got_a == got_b && sorted == vault_ids {
            break got_a;
        }
        assert!(Instant::now() < deadline, "never converged: {got_a:?} vs {got_b:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(want[0], oldest, "the first version is the oldest");
    // A ciphertext made on either decrypts on both, with and without the hint.
    let mut made = Vec::new();
    for srv in [&a, &b] {
        let g = srv.admin().post("/v1/key/generate/shared", "{}").json();
        assert_eq!(g["version"], want[2].as_str(), "both encrypt with the same newest version");
        made.push(g);
    }
    for g in &made {
        for srv in [&a, &b] {
            for hint in ["", g["version"].as_str().unwrap()] {
                let body = format!(
                    "{{\"ciphertext\":\"{}\",\"version\":\"{hint}\"}}",
                    g["ciphertext"].as_str().unwrap()
                );
                let r = srv.admin().post("/v1/key/decrypt/shared", &body);
                assert_eq!(r.status, 200, "{}", r.text());
                assert_eq!(r.json()["plaintext"], g["plaintext"]);
            }
        }
    }
}

#[test]
fn a_rotation_on_another_server_is_picked_up_on_the_first_miss() {
    // Default cache expiry (minutes): B learns of A's new version because no cached version
    // opens A's ciphertext, not because its cache expired.
    let vault = FakeVault::start();
    let a = TestServer::start_store("", azure_store(&vault));
    let b = TestServer::start_store("", azure_store(&vault));
    assert_eq!(a.admin().request("POST", "/v1/key/create/k", None).status, 200);
    // B caches the key with its one version.
    assert_eq!(b.admin().post("/v1/key/generate/k", "{}").status, 200);
    assert_eq!(rotate(&mut a.admin(), "k", None).0, 200);
    let g = a.admin().post("/v1/key/generate/k", "{}").json();
    let body = format!("{{\"ciphertext\":\"{}\"}}", g["ciphertext"].as_str().unwrap());
    // The refresh is rate-limited per key (REFRESH_MIN_AGE): poll with a generous bound.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = b.admin().post("/v1/key/decrypt/k", &body);
        if r.status == 200 {
            assert_eq!(r.json()["plaintext"], g["plaintext"]);
            break;
        }
        assert_eq!((r.status, r.message()), (400, NOT_AUTHENTIC.into()));
        assert!(Instant::now() < deadline, "B never picked up A's rotation");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates key `k` and returns a `generate` answer and a decrypt body whose ciphertext no
/// version of `k` opens (the generated one with its first byte flipped).
fn key_and_bad_ciphertext(c: &mut Client) -> (Value, String) {
    assert_eq!(c.request("POST", "/v1/key/create/k", None).status, 200);
    let good = c.post("/v1/key/generate/k", "{}").json();
    let mut bad = base64::engine::general_purpose::STANDARD
        .decode(good["ciphertext"].as_str().unwrap())
        .unwrap();
    bad[0] ^= 1;
    let body = format!("{{\"ciphertext\":\"{}\"}}", b64(&bad));
    (good, body)
}

#[test]
fn a_flood_of_bad_ciphertexts_reads_the_store_at_most_once_a_second() {
    // The attacker: a client allowed to decrypt, sending ciphertexts that no version opens,
    // as fast as one connection can. Each failure may re-read the key (a rotation elsewhere),
    // but REFRESH_MIN_AGE bounds that to one store read per second per key.
    let srv = TestServer::start("");
    let mut c = srv.admin();
    let (good, body) = key_and_bad_ciphertext(&mut c);
    let reads_before = srv.store.reads();
    let started = Instant::now();
    const ATTEMPTS: usize = 300;
    for _ in 0..ATTEMPTS {
        let r = c.post("/v1/key/decrypt/k", &body);
        assert_eq!((r.status, r.message()), (400, NOT_AUTHENTIC.into()));
    }
    let elapsed = started.elapsed().as_secs();
    let reads = srv.store.reads() - reads_before;
    assert!(
        reads <= elapsed + 2,
        "{ATTEMPTS} bad decrypts in {elapsed} s made {reads} store reads"
    );
    // And the key still works.
    let ok = c.post(
        "/v1/key/decrypt/k",
        &format!("{{\"ciphertext\":\"{}\"}}", good["ciphertext"].as_str().unwrap()),
    );
    assert_eq!(ok.status, 200);
}

#[test]
fn a_concurrent_flood_of_bad_ciphertexts_reads_the_store_at_most_once_a_second() {
    // The same attacker on 16 connections at once, against a vault that answers a read in
    // 40 ms as Key Vault does: concurrent failures that each want the key re-read share one
    // read, and what it read stays cached for the next ones.
    const CONNS: usize = 16;
    // Long enough for several refresh periods (REFRESH_MIN_AGE, 1 s).
    const FLOOD: Duration = Duration::from_secs(3);
    let vault = FakeVault::start();
    let srv = TestServer::start_store("", azure_store(&vault));
    let mut c = srv.admin();
    let (good, body) = key_and_bad_ciphertext(&mut c);
    vault.set_op_latency(Op::Versions, Duration::from_millis(40));
    let reads_before = vault.count(Op::Versions);
    let started = Instant::now();
    let sent = &AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..CONNS {
            let (mut c, body) = (srv.admin(), body.as_str());
            s.spawn(move || {
                while started.elapsed() < FLOOD {
                    let r = c.post("/v1/key/decrypt/k", body);
                    assert_eq!((r.status, r.message()), (400, NOT_AUTHENTIC.into()));
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs();
    let reads = (vault.count(Op::Versions) - reads_before) as u64;
    assert!(
        reads <= elapsed + 2,
        "{} bad decrypts on {CONNS} connections in {elapsed} s made {reads} store reads",
        sent.load(Ordering::Relaxed)
    );
    let ok = c.post(
        "/v1/key/decrypt/k",
        &format!("{{\"ciphertext\":\"{}\"}}", good["ciphertext"].as_str().unwrap()),
    );
    assert_eq!(ok.status, 200);
}

#[test]
fn rotation_stops_at_the_live_version_limit() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    assert_eq!(c.request("POST", "/v1/key/create/k", None).status, 200);
    assert_eq!(rotate(&mut c, "k", None).0, 200);
    let second = c.post("/v1/key/generate/k", "{}").json();
    for _ in 2..kes::keystore::MAX_LIVE_VERSIONS {
        assert_eq!(rotate(&mut c, "k", None).0, 200);
    }
    let (status, v) = rotate(&mut c, "k", None);
    assert_eq!(
        (status, v["message"].as_str().unwrap()),
        (409, "key 'k' has 16 live versions, the most a key may have; retire one first")
    );
    // Retiring one makes room; re-enabling it past the limit is refused the same way.
    let d = c.get("/v1/key/describe/k").json();
    let first = ids(&d).remove(0);
    assert_eq!(rotate(&mut c, "k", Some(&format!("{{\"retire\":\"{first}\"}}"))).0, 200);
    assert_eq!(rotate(&mut c, "k", None).0, 200);
    let (status, _) = rotate(&mut c, "k", Some(&format!("{{\"enable\":\"{first}\"}}")));
    assert_eq!(status, 409);
    // Decrypt without a hint still finds the oldest live version among 16.
    let d = c.get("/v1/key/describe/k").json();
    assert_eq!(ids(&d).len(), 17);
    assert_eq!(states(&d).iter().filter(|s| *s == "live").count(), 16);
    assert_eq!(second["version"], ids(&d)[1].as_str(), "the oldest live version");
    let body = format!("{{\"ciphertext\":\"{}\"}}", second["ciphertext"].as_str().unwrap());
    let r = c.post("/v1/key/decrypt/k", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["plaintext"], second["plaintext"]);
}
