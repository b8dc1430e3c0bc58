//! `AzureStore` against the in-process fake Key Vault: upstream's semantics
//! (`kes-azure-keystore.md` §3), every injected fault on every operation, bounded retries,
//! token flows (client secret, client certificate, workload identity, IMDS, App Service), the challenge, the
//! proxy, and the cost of a cold key.

#[path = "support/fake_vault.rs"]
mod fake_vault;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use fake_vault::{FakeVault, Fault, Op};
use kes::keystore::azure::{AzureConfig, AzureCredentials};
use kes::keystore::azure::{AzureOptions, AzureStore};
use kes::keystore::{KeyStore, StoreError};
use rustls_pki_types::pem::PemObject;
use zeroize::Zeroizing;

/// Options pointing at the fake, with short backoffs so fault tests run quickly.
fn opts(v: &FakeVault) -> AzureOptions {
    let mut o = AzureOptions::new();
    o.roots = kes::goroots::RootSources::only_file(v.ca_file());
    o.authority_host_override = Some(v.authority());
    o.imds_endpoint_override = Some(v.imds_endpoint());
    o.connect_timeout = Duration::from_secs(2);
    o.read_timeout = Duration::from_secs(5);
    o.retry_base_delay = Duration::from_millis(10);
    o.retry_max_delay = Duration::from_millis(40);
    o.conflict_delay = Duration::from_millis(5);
    o.conflict_jitter = Duration::from_millis(10);
    o
}

fn secret_cfg(v: &FakeVault) -> AzureConfig {
    AzureConfig {
        endpoint: v.url(),
        credentials: AzureCredentials::ClientSecret {
            tenant_id: v.tenant_id(),
            client_id: v.client_id(),
            client_secret: Zeroizing::new(v.client_secret()),
        },
    }
}

fn store(v: &FakeVault) -> AzureStore {
    AzureStore::new(&secret_cfg(v), opts(v)).expect("store")
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(15)
}

/// Learns the challenge and fetches a token, then zeroes the fake's counters.
fn warm(s: &AzureStore, v: &FakeVault) {
    s.list("", soon()).expect("warm-up listing");
    v.reset_counts();
}

fn failed(r: Result<impl std::fmt::Debug, StoreError>) -> String {
    match r {
        Err(StoreError::Failed(m)) => m,
        other => panic!("expected Failed, got {other:?}"),
    }
}

fn get_str(s: &AzureStore, name: &str) -> Result<String, StoreError> {
    s.get(name, soon()).map(|v| String::from_utf8(v.to_vec()).unwrap())
}

// ---------------------------------------------------------------------------------------
// Semantics

#[test]
fn round_trip_create_get_list_delete() {
    let v = FakeVault::start();
    let s = store(&v);
    assert_eq!(s.describe(), format!("Azure KeyVault: {}", v.url()));
    s.create("my-key-1", b"value-1", soon()).unwrap();
    assert_eq!(get_str(&s, "my-key-1").unwrap(), "value-1");
    assert_eq!(s.create("my-key-1", b"other", soon()), Err(StoreError::Exists));
    // Azure names are case-insensitive: another case is the same secret.
    assert_eq!(s.create("MY-KEY-1", b"other", soon()), Err(StoreError::Exists));
    assert_eq!(v.values("my-key-1"), vec!["value-1"], "create never overwrites");
    s.create("my-key-2", b"value-2", soon()).unwrap();
    let l = s.list("my-key", soon()).unwrap();
    assert_eq!(l.names, vec!["my-key-1", "my-key-2"]);
    assert_eq!(l.continue_at, "");
    s.delete("my-key-1", soon()).unwrap();
    assert_eq!(s.get("my-key-1", soon()), Err(StoreError::NotFound));
    assert!(!v.is_deleted("my-key-1"), "delete purges");
    // Idempotent delete (upstream HEAD): a missing key is deleted successfully.
    s.delete("my-key-1", soon()).unwrap();
    s.delete("never-there", soon()).unwrap();
    // The name is free again.
    s.create("my-key-1", b"value-3", soon()).unwrap();
    assert_eq!(get_str(&s, "my-key-1").unwrap(), "value-3");
}

#[test]
fn values_are_stored_verbatim() {
    let v = FakeVault::start();
    let s = store(&v);
    let f4 = "CiIKIHcKGkLtNpH0k9zO7cfu8YpzpKXtB0oT5xJEU3ZxCmvVEAESIgogxw+/=";
    let json = r#"{"version":"v1","bytes":"k9zO7cfu8Ypz+/=","algorithm":"AES256","created_at":"2024-01-01T00:00:00Z","created_by":"\u00e9\"x"}"#;
    s.create("f4", f4.as_bytes(), soon()).unwrap();
    s.create("json", json.as_bytes(), soon()).unwrap();
    assert_eq!(v.values("f4"), vec![f4]);
    assert_eq!(v.values("json"), vec![json]);
    assert_eq!(get_str(&s, "f4").unwrap(), f4);
    assert_eq!(get_str(&s, "json").unwrap(), json);
    let err = failed(s.create("bin", &[0xff, 0xfe], soon()));
    assert!(err.contains("not valid UTF-8"), "{err}");
}

#[test]
fn get_reads_the_oldest_version() {
    let v = FakeVault::start();
    let s = store(&v);
    // The newer version sorts first in the listing (by id), so list order is not enough.
    v.insert_version("k", "old", 1_000, Some("ffffffffffffffffffffffffffffffff"));
    v.insert_version("k", "new", 2_000, Some("00000000000000000000000000000000"));
    warm(&s, &v);
    assert_eq!(get_str(&s, "k").unwrap(), "old");
    assert_eq!(v.count(Op::Versions), 1);
    assert_eq!(v.count(Op::Get), 2, "latest in parallel, then the oldest version");
    // Same created second: the first in list order wins, on every reader.
    v.insert_version("t", "b", 5_000, Some("bbbb0000000000000000000000000000"));
    v.insert_version("t", "a", 5_000, Some("aaaa0000000000000000000000000000"));
    assert_eq!(get_str(&s, "t").unwrap(), "a");
    assert_eq!(get_str(&store(&v), "t").unwrap(), "a");
}

#[test]
fn a_cold_key_with_one_version_costs_one_round_trip() {
    let v = FakeVault::start();
    let s = store(&v);
    s.create("cold", b"v", soon()).unwrap();
    warm(&s, &v);
    s.get("cold", soon()).unwrap(); // opens the second pooled connection
    v.reset_counts();
    v.set_latency(Duration::from_millis(150));
    let t = Instant::now();
    assert_eq!(get_str(&s, "cold").unwrap(), "v");
    let took = t.elapsed();
    assert_eq!((v.count(Op::Versions), v.count(Op::Get), v.count(Op::Token)), (1, 1, 0));
    // One round trip: the two requests were inside the vault's latency at the same time
    // (counted by the fake, not timed, so a loaded machine cannot fail it).
    assert_eq!(v.most_concurrent(), 2, "versions and get overlapped");
    assert!(took >= Duration::from_millis(150), "{took:?}");
}

#[test]
fn concurrent_creates_from_several_stores_converge_on_one_value() {
    let v = Arc::new(FakeVault::start());
    let n = 4;
    let stores: Vec<Arc<AzureStore>> = (0..n).map(|_| Arc::new(store(&v))).collect();
    for s in &stores {
        warm(s, &v);
    }
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (s, b) = (Arc::clone(s), Arc::clone(&barrier));
            thread::spawn(move || {
                b.wait();
                s.create("race", format!("value-{i}").as_bytes(), soon())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results.iter().all(|r| r.is_ok() || *r == Err(StoreError::Exists)), "{results:?}");
    assert!(results.iter().any(|r| r.is_ok()));
    let seen: Vec<String> = stores.iter().map(|s| get_str(s, "race").unwrap()).collect();
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "every store reads the same key: {seen:?}");
    let versions = v.versions("race");
    assert!(versions.iter().any(|x| x.value == seen[0]));
    assert!(versions.len() <= n);
}

#[test]
fn listing_pages_through_next_link_and_filters_by_prefix() {
    let v = FakeVault::start();
    let s = store(&v);
    for i in 0..60 {
        v.insert_version(&format!("key-{i:02}"), "x", 1_000, None);
    }
    v.insert_version("other", "x", 1_000, None);
    warm(&s, &v);
    let all = s.list("", soon()).unwrap();
    assert_eq!(all.names.len(), 61);
    assert_eq!(v.count(Op::List), 3, "25 + 25 + 11");
    let l = s.list("key-1", soon()).unwrap();
    assert_eq!(l.names, (10..20).map(|i| format!("key-{i}")).collect::<Vec<_>>());
    assert!(s.list("nothing", soon()).unwrap().names.is_empty());
}

#[test]
fn unknown_keys_are_not_found_whether_the_listing_is_empty_or_404() {
    let v = FakeVault::start();
    let s = store(&v);
    assert_eq!(s.get("nope", soon()), Err(StoreError::NotFound));
    v.insert_version("k", "x", 1, None);
    v.inject(Op::Versions, Fault::NotFound, 1);
    assert_eq!(s.get("k", soon()), Err(StoreError::NotFound));
    assert_eq!(get_str(&s, "k").unwrap(), "x");
}

#[test]
fn disabled_expired_and_not_yet_valid_secrets_are_errors() {
    let v = FakeVault::start();
    let s = store(&v);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
        as i64;
    v.insert_version("off", "x", 1, None);
    v.set_attributes("off", None, false, None, None);
    warm(&s, &v);
    let e = failed(s.get("off", soon()));
    assert!(e.contains("SecretDisabled"), "{e}");
    assert_eq!(v.count(Op::Get), 1, "one version: the latest's answer is final");
    v.insert_version("exp", "x", 1, None);
    v.set_attributes("exp", None, true, None, Some(now - 60));
    assert!(failed(s.get("exp", soon())).contains("ObjectIsExpired"));
    v.insert_version("nbf", "x", 1, None);
    v.set_attributes("nbf", None, true, Some(now + 3600), None);
    assert!(failed(s.get("nbf", soon())).contains("ObjectMustNotBeUsed"));
    // Upstream: create's existence check fails on such a secret rather than saying "exists".
    assert!(failed(s.create("exp", b"y", soon())).contains("ObjectIsExpired"));
}

#[test]
fn invalid_azure_names_fail_without_renaming() {
    let v = FakeVault::start();
    let s = store(&v);
    let e = failed(s.create("my_key", b"x", soon()));
    assert!(e.contains("invalid name: my_key") && e.contains("BadParameter"), "{e}");
    assert!(v.names().is_empty());
}

// ---------------------------------------------------------------------------------------
// Faults per operation

#[test]
fn unauthorized_once_refreshes_the_token_and_retries() {
    let v = FakeVault::start();
    let s = store(&v);
    s.create("k", b"x", soon()).unwrap();
    warm(&s, &v);
    for op in [Op::Versions, Op::Get] {
        v.inject(op, Fault::Unauthorized, 1);
        assert_eq!(get_str(&s, "k").unwrap(), "x");
    }
    assert_eq!(v.count(Op::Token), 2, "one fresh token per rejected one");
    v.inject(Op::Set, Fault::Unauthorized, 1);
    s.create("k2", b"y", soon()).unwrap();
    v.inject(Op::Delete, Fault::Unauthorized, 1);
    v.inject(Op::Purge, Fault::Unauthorized, 1);
    s.delete("k2", soon()).unwrap();
    v.inject(Op::List, Fault::Unauthorized, 1);
    assert_eq!(s.list("", soon()).unwrap().names, vec!["k"]);
    assert_eq!(v.count(Op::Token), 6);
}

#[test]
fn persistent_unauthorized_fails_after_one_refresh() {
    let v = FakeVault::start();
    let s = store(&v);
    s.create("k", b"x", soon()).unwrap();
    warm(&s, &v);
    v.inject_forever(Op::Versions, Fault::Unauthorized);
    let e = failed(s.get("k", soon()));
    assert!(e.starts_with("azure: failed to get 'k': failed to list versions:"), "{e}");
    assert!(e.contains("(Unauthorized)"), "{e}");
    assert_eq!(v.count(Op::Versions), 2);
    assert_eq!(v.count(Op::Token), 1);
}

#[test]
fn revoked_and_expiring_tokens_are_replaced_mid_run() {
    let v = FakeVault::start();
    v.set_token_lifetime(Duration::from_secs(2));
    let s = store(&v);
    s.create("k", b"x", soon()).unwrap();
    assert_eq!(v.count(Op::Token), 1);
    // Refreshed ahead of expiry (half of a 2 s lifetime), without any 401.
    thread::sleep(Duration::from_millis(1300));
    v.reset_counts();
    assert_eq!(get_str(&s, "k").unwrap(), "x");
    assert_eq!(v.count(Op::Token), 1);
    assert!(v.requests().iter().all(|r| r.status != 401), "refresh happened before expiry");
    // Revoked server-side: 401, one refresh, success.
    v.set_token_lifetime(Duration::from_secs(3600));
    v.revoke_tokens();
    v.reset_counts();
    assert_eq!(get_str(&s, "k").unwrap(), "x");
    assert_eq!(v.count(Op::Token), 1);
}

#[test]
fn parallel_cold_requests_share_one_token_fetch() {
    let v = Arc::new(FakeVault::start());
    v.insert_version("k", "x", 1, None);
    v.set_op_latency(Op::Token, Duration::from_millis(200));
    let s = Arc::new(store(&v));
    s.list("", soon()).unwrap_or_default(); // learn the challenge only
    v.revoke_tokens();
    let s2 = Arc::new(store(&v));
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let s2 = Arc::clone(&s2);
            thread::spawn(move || get_str(&s2, "k"))
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap().unwrap(), "x");
    }
    // One fetch for `s`, one shared by the eight concurrent reads of `s2`.
    assert_eq!(v.count(Op::Token), 2);
}

#[test]
fn forbidden_by_policy_on_every_operation() {
    let v = FakeVault::start();
    let s = store(&v);
    s.create("k", b"x", soon()).unwrap();
    warm(&s, &v);

    v.inject(Op::Get, Fault::ForbiddenByPolicy, 1);
    let e = failed(s.create("new", b"x", soon()));
    assert!(
        e.starts_with(
            "azure: failed to create 'new': insufficient permissions to check whether it exists:"
        ),
        "{e}"
    );
    assert!(e.ends_with("(ForbiddenByPolicy)"), "{e}");
    assert_eq!(v.count(Op::Set), 0);

    v.inject(Op::Set, Fault::ForbiddenByPolicy, 1);
    let e = failed(s.create("new", b"x", soon()));
    assert!(e.starts_with("azure: failed to create 'new': insufficient permissions:"), "{e}");
    assert!(v.values("new").is_empty());

    v.inject(Op::Versions, Fault::ForbiddenByPolicy, 1);
    assert!(failed(s.get("k", soon())).contains("failed to list versions"));

    v.inject(Op::List, Fault::ForbiddenByPolicy, 1);
    assert!(failed(s.list("", soon())).contains("ForbiddenByPolicy"));

    v.inject(Op::Delete, Fault::ForbiddenByPolicy, 1);
    assert!(failed(s.delete("k", soon())).contains("failed to delete secret"));
    assert_eq!(v.values("k"), vec!["x"], "nothing deleted");

    // Purge refused (missing purge permission / purge protection): the soft delete already
    // happened; upstream answers 502 "failed to delete key" (README observed item 8).
    v.inject(Op::Purge, Fault::ForbiddenByPolicy, 1);
    let e = failed(s.delete("k", soon()));
    assert!(e.starts_with("azure: failed to delete 'k': failed to purge secret:"), "{e}");
    assert!(v.is_deleted("k"));
    assert_eq!(s.get("k", soon()), Err(StoreError::NotFound));
    assert_eq!(v.count(Op::Purge), 1, "403 is not retried");
}

#[test]
fn not_found_on_delete_and_purge_is_success() {
    let v = FakeVault::start();
    let s = store(&v);
    s.create("k", b"x", soon()).unwrap();
    v.inject(Op::Delete, Fault::NotFound, 1);
    v.inject(Op::Purge, Fault::NotFound, 1);
    s.delete("k", soon()).unwrap();
    assert_eq!(v.values("k"), vec!["x"], "the fake really answered 404 to both");
}

#[test]
fn create_purges_a_soft_deleted_name_then_sets() {
    let v = FakeVault::start();
    let s = store(&v);
    v.insert_version("old", "legacy", 1, None);
    v.soft_delete("old");
    warm(&s, &v);
    s.create("old", b"fresh", soon()).unwrap();
    assert_eq!(v.values("old"), vec!["fresh"]);
    assert_eq!((v.count(Op::Set), v.count(Op::Purge)), (2, 1));
}

#[test]
fn create_retries_set_while_the_name_is_being_deleted() {
    let v = FakeVault::start();
    let s = store(&v);
    v.insert_version("n", "legacy", 1, None);
    v.soft_delete("n");
    warm(&s, &v);
    // First set: 409 being deleted → purge → three more 409s → success on the fifth set.
    v.inject(Op::Set, Fault::BeingDeleted, 4);
    s.create("n", b"fresh", soon()).unwrap();
    assert_eq!((v.count(Op::Set), v.count(Op::Purge)), (5, 1));
    assert_eq!(v.values("n"), vec!["fresh"]);

    // Never finishing: one set, the purge, then seven sets, then a bounded failure.
    v.reset_counts();
    v.inject_forever(Op::Set, Fault::BeingDeleted);
    let e = failed(s.create("m", b"x", soon()));
    assert!(e.contains("(ObjectIsBeingDeleted)"), "{e}");
    assert_eq!(v.count(Op::Set), 8);
    v.clear_faults();

    // Still recoverable after the purge (someone recovered it meanwhile): upstream's message.
    v.reset_counts();
    v.inject(Op::Set, Fault::DeletedButRecoverable, 2);
    let e = failed(s.create("r", b"x", soon()));
    assert!(
        e.contains(
            "key already exists but is currently marked as deleted. Either restore or purge 'r'"
        ),
        "{e}"
    );
    assert_eq!(v.count(Op::Set), 2);
}

#[test]
fn create_right_after_delete_waits_out_the_deletion_window() {
    let v = FakeVault::start();
    v.set_delete_delay(Duration::from_millis(150));
    let s = store(&v);
    s.create("k", b"one", soon()).unwrap();
    // Delete: purge sees 409 "being deleted" for ~150 ms; ten quick attempts end first and
    // the delete still succeeds (Key Vault finishes on its own, §3.4).
    s.delete("k", soon()).unwrap();
    // On a loaded machine the window can close before the tenth attempt; then the last
    // attempt purged it. Either way the delete stops at ten attempts and succeeds.
    let purges = v.count(Op::Purge);
    assert!((1..=10).contains(&purges), "{purges} purge attempts");
    // Still soft-deleted only after all ten attempts; fewer attempts mean one purged it
    // (the tenth may also be the one that purged, when the window just closed).
    if v.is_deleted("k") {
        assert_eq!(purges, 10, "gave up early while still deleted");
    } else {
        assert_eq!(v.count(Op::Delete), 1);
    }
    // Create: 409 → purge retried until the window ends → set.
    s.create("k", b"two", soon()).unwrap();
    assert_eq!(v.values("k"), vec!["two"]);
    assert_eq!(get_str(&s, "k").unwrap(), "two");
}

#[test]
fn create_fails_when_the_blocking_secret_cannot_be_purged() {
    let v = FakeVault::start();
    let s = store(&v);
    v.insert_version("p", "legacy", 1, None);
    v.soft_delete("p");
    v.inject(Op::Purge, Fault::ForbiddenByPolicy, 1);
    let e = failed(s.create("p", b"x", soon()));
    assert!(e.starts_with("azure: failed to create 'p': failed to purge deleted secret:"), "{e}");
    assert!(v.is_deleted("p"));
}

#[test]
fn delete_keeps_purging_through_being_deleted_and_gives_up_successfully() {
    let v = FakeVault::start();
    let s = store(&v);
    s.create("k", b"x", soon()).unwrap();
    v.inject(Op::Purge, Fault::BeingDeleted, 3);
    s.delete("k", soon()).unwrap();
    assert_eq!(v.count(Op::Purge), 4);
    assert!(!v.is_deleted("k"), "purged on the fourth attempt");
    s.create("k", b"x", soon()).unwrap();
    v.reset_counts();
    v.inject_forever(Op::Purge, Fault::BeingDeleted);
    s.delete("k", soon()).unwrap();
    assert_eq!(v.count(Op::Purge), 10);
}

#[test]
fn throttling_honours_retry_after() {
    let v = FakeVault::start();
    let s = store(&v);
    s.create("k", b"x", soon()).unwrap();
    warm(&s, &v);
    v.inject(Op::Versions, Fault::Throttled { retry_after: Some("1".into()) }, 1);
    let t = Instant::now();
    assert_eq!(get_str(&s, "k").unwrap(), "x");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(950) && took < Duration::from_millis(1800), "{took:?}");
    assert_eq!(v.count(Op::Versions), 2);

    // An HTTP date works too.
    let date = httpdate(std::time::SystemTime::now() + Duration::from_secs(2));
    v.reset_counts();
    v.inject(Op::Get, Fault::Throttled { retry_after: Some(date) }, 1);
    let t = Instant::now();
    assert_eq!(get_str(&s, "k").unwrap(), "x");
    assert!(t.elapsed() >= Duration::from_millis(900), "{:?}", t.elapsed());
    assert_eq!(v.count(Op::Get), 2);
}

#[test]
fn retry_after_beyond_the_limit_or_the_deadline_fails_at_once() {
    let v = FakeVault::start();
    let mut o = opts(&v);
    o.max_retry_after = Duration::from_secs(2);
    let s = AzureStore::new(&secret_cfg(&v), o).unwrap();
    s.create("k", b"x", soon()).unwrap();
    warm(&s, &v);
    v.inject(Op::Versions, Fault::Throttled { retry_after: Some("5".into()) }, 1);
    let t = Instant::now();
    let e = failed(s.get("k", soon()));
    assert!(e.contains("(Throttled)"), "{e}");
    assert!(t.elapsed() < Duration::from_millis(500));
    assert_eq!(v.count(Op::Versions), 1);

    // Within the limit but past the caller's deadline: no sleep either.
    v.reset_counts();
    v.inject(Op::Versions, Fault::Throttled { retry_after: Some("1".into()) }, 1);
    let t = Instant::now();
    let e = failed(s.get("k", Instant::now() + Duration::from_millis(600)));
    assert!(e.contains("Throttled"), "{e}");
    assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
    assert_eq!(v.count(Op::Versions), 1);
}

#[test]
fn throttling_without_retry_after_backs_off_and_is_bounded() {
    let v = FakeVault::start();
    let s = store(&v);
    s.create("k", b"x", soon()).unwrap();
    warm(&s, &v);
    v.inject(Op::Versions, Fault::Throttled { retry_after: None }, 2);
    assert_eq!(get_str(&s, "k").unwrap(), "x");
    assert_eq!(v.count(Op::Versions), 3);

    v.reset_counts();
    v.inject_forever(Op::List, Fault::Throttled { retry_after: None });
    let t = Instant::now();
    let e = failed(s.list("", soon()));
    assert!(e.contains("Request was not processed because too many requests were received"), "{e}");
    assert_eq!(v.count(Op::List), 7, "1 + max_retries (6)");
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn server_errors_are_retried_on_every_operation() {
    let v = FakeVault::start();
    let s = store(&v);
    warm(&s, &v);
    let e503 = Fault::Status { status: 503, retry_after: None };
    for op in [Op::Get, Op::Set] {
        v.inject(op, e503.clone(), 2);
    }
    s.create("k", b"x", soon()).unwrap();
    assert_eq!((v.count(Op::Get), v.count(Op::Set)), (3, 3));
    for op in [Op::Versions, Op::Get] {
        v.inject(op, Fault::Status { status: 500, retry_after: None }, 1);
    }
    assert_eq!(get_str(&s, "k").unwrap(), "x");
    v.inject(Op::List, Fault::Status { status: 502, retry_after: Some("0".into()) }, 2);
    assert_eq!(s.list("", soon()).unwrap().names, vec!["k"]);
    v.inject(Op::Delete, Fault::Status { status: 504, retry_after: None }, 1);
    v.inject(Op::Purge, e503.clone(), 1);
    s.delete("k", soon()).unwrap();
    assert!(v.names().is_empty());
    // The value was set exactly once despite the retried PUTs (503 = not stored).
    v.reset_counts();
    v.inject_forever(Op::Versions, Fault::Status { status: 500, retry_after: None });
    let e = failed(s.get("k", soon()));
    assert!(e.contains("(HTTP 500)") || e.contains("ServiceUnavailable"), "{e}");
    assert_eq!(v.count(Op::Versions), 7);
}

#[test]
fn slow_answers_are_bounded_by_the_deadline() {
    let v = FakeVault::start();
    let s = store(&v);
    s.create("k", b"x", soon()).unwrap();
    warm(&s, &v);
    v.inject(Op::Versions, Fault::Delay(Duration::from_millis(300)), 1);
    assert_eq!(get_str(&s, "k").unwrap(), "x", "slow but within the deadline");
    v.inject_forever(Op::Versions, Fault::Delay(Duration::from_secs(2)));
    let t = Instant::now();
    let r = s.get("k", Instant::now() + Duration::from_millis(400));
    let took = t.elapsed();
    assert!(
        matches!(r, Err(StoreError::Unreachable(ref m)) if m.contains("failed to list versions")),
        "{r:?}"
    );
    assert!(took >= Duration::from_millis(390) && took < Duration::from_millis(900), "{took:?}");
}

#[test]
fn reset_connections_are_retried_and_bounded() {
    let v = FakeVault::start();
    let s = store(&v);
    s.create("k", b"x", soon()).unwrap();
    warm(&s, &v);
    v.inject(Op::Versions, Fault::Reset, 1);
    v.inject(Op::Set, Fault::Reset, 1);
    assert_eq!(get_str(&s, "k").unwrap(), "x");
    assert_eq!(v.count(Op::Versions), 2);
    // A reset PUT is sent again with the same value: never a second, different key.
    s.create("k2", b"only-value", soon()).unwrap();
    assert!(v.values("k2").iter().all(|x| x == "only-value"));
    v.inject_forever(Op::List, Fault::Reset);
    let t = Instant::now();
    let r = s.list("", soon());
    assert!(
        matches!(r, Err(StoreError::Unreachable(ref m)) if m.contains("failed to list secrets")),
        "{r:?}"
    );
    assert_eq!(v.count(Op::List), 7);
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn errors_never_contain_secrets() {
    let v = FakeVault::start();
    let s = store(&v);
    warm(&s, &v);
    let value = "c2VjcmV0LWtleS12YWx1ZS10aGF0LW11c3Qtbm90LWxlYWs=";
    v.inject(
        Op::Set,
        Fault::Raw {
            status: 400,
            content_type: "application/json".into(),
            body: format!(r#"{{"error":{{"code":"BadParameter","message":"bad value {value}"}}}}"#),
        },
        1,
    );
    let e = failed(s.create("k", value.as_bytes(), soon()));
    assert!(!e.contains(value) && e.contains("<redacted>"), "{e}");

    let mut cfg = secret_cfg(&v);
    cfg.credentials = AzureCredentials::ClientSecret {
        tenant_id: v.tenant_id(),
        client_id: v.client_id(),
        client_secret: Zeroizing::new("wrong-secret-value".into()),
    };
    let bad = AzureStore::new(&cfg, opts(&v)).unwrap();
    let e = failed(bad.get("k", soon()));
    assert!(e.contains("invalid_client: AADSTS7000215"), "{e}");
    assert!(!e.contains("wrong-secret-value") && !e.contains("fake."), "{e}");
    assert!(!format!("{bad:?}").contains("wrong-secret-value"));
}

#[test]
fn token_endpoint_faults() {
    let v = FakeVault::start();
    let s = store(&v);
    v.insert_version("k", "x", 1, None);
    v.inject(Op::Token, Fault::Status { status: 503, retry_after: None }, 2);
    assert_eq!(get_str(&s, "k").unwrap(), "x");
    assert_eq!(v.count(Op::Token), 3);
    let s2 = store(&v);
    v.inject(Op::Token, Fault::Unauthorized, 1);
    let e = failed(s2.get("k", soon()));
    assert!(
        e.contains("authentication failed: Entra ID token request: HTTP 401: invalid_client"),
        "{e}"
    );
}

/// A token endpoint that cannot be reached makes the store unreachable (an outage, as
/// for the vault: the sealed cache may answer), not an authentication failure; the
/// message names the authority.
#[test]
fn an_unreachable_token_endpoint_is_an_outage() {
    let v = FakeVault::start();
    v.insert_version("k", "x", 1, None);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for (authority, kind) in [
        (format!("https://{closed}"), "closed port"),
        ("https://login.kes-test.invalid".to_string(), "unresolvable name"),
    ] {
        let mut o = opts(&v);
        o.authority_host_override = Some(authority.clone());
        let s = AzureStore::new(&secret_cfg(&v), o).unwrap();
        match s.get("k", soon()) {
            Err(StoreError::Unreachable(m)) => assert!(
                m.starts_with(&format!(
                    "azure: failed to get 'k': failed to list versions: token endpoint \
                     unreachable: Entra ID token request to {authority}: "
                )),
                "{kind}: {m}"
            ),
            other => panic!("{kind}: expected Unreachable, got {other:?}"),
        }
    }
    assert_eq!(v.count(Op::Token), 0);
}

#[test]
fn a_foreign_next_link_is_refused() {
    let v = FakeVault::start();
    let s = store(&v);
    warm(&s, &v);
    v.inject(
        Op::List,
        Fault::Raw {
            status: 200,
            content_type: "application/json; charset=utf-8".into(),
            body: r#"{"value":[],"nextLink":"https://evil.example.com/secrets?api-version=7.5&$skiptoken=x"}"#.into(),
        },
        1,
    );
    let e = failed(s.list("", soon()));
    assert!(e.contains("nextLink points to another host (https://evil.example.com)"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Credentials

#[test]
fn workload_identity_uses_the_federated_token_file() {
    let v = FakeVault::start();
    let mut o = opts(&v);
    o.env_tenant_id = Some(v.tenant_id());
    o.env_client_id = Some(v.client_id());
    o.federated_token_file = Some(v.federated_token_file().to_path_buf());
    let cfg = AzureConfig { endpoint: v.url(), credentials: AzureCredentials::Default };
    let s = AzureStore::new(&cfg, o.clone()).unwrap();
    assert!(s.credential().starts_with("workload identity"), "{}", s.credential());
    s.create("wi", b"x", soon()).unwrap();
    assert_eq!(get_str(&s, "wi").unwrap(), "x");
    assert_eq!(v.count(Op::Token), 1);

    let wrong = std::env::temp_dir().join(format!("kes-wrong-assertion-{}", std::process::id()));
    std::fs::write(&wrong, "not-the-projected-token").unwrap();
    o.federated_token_file = Some(wrong.clone());
    let e = failed(AzureStore::new(&cfg, o).unwrap().get("wi", soon()));
    std::fs::remove_file(&wrong).unwrap();
    assert!(e.contains("AADSTS70021"), "{e}");
}

/// A temp directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "kes-azcert-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn path(&self, f: &str) -> std::path::PathBuf {
        self.0.join(f)
    }

    fn read(&self, f: &str) -> String {
        std::fs::read_to_string(self.path(f)).unwrap()
    }

    fn openssl(&self, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&self.0)
            .output()
            .expect("the openssl CLI");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An RSA-2048 self-signed certificate and key from the openssl CLI (rcgen cannot make RSA
/// keys with ring): `cert.pem` (PEM certificate), `key.pem` (PKCS#8), `both.pem` (the
/// credential file) and the certificate's DER.
fn openssl_rsa(d: &TempDir) -> Vec<u8> {
    d.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-subj",
        "/CN=kes-azure-client",
        "-days",
        "2",
    ]);
    d.openssl(&["x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der"]);
    std::fs::write(d.path("both.pem"), d.read("cert.pem") + &d.read("key.pem")).unwrap();
    std::fs::read(d.path("cert.der")).unwrap()
}

/// An EC P-256 self-signed certificate and PKCS#8 key from rcgen, written to `both.pem`.
fn rcgen_p256(d: &TempDir) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["kes-azure-client".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(d.path("both.pem"), cert.pem() + &key.serialize_pem()).unwrap();
    cert.der().to_vec()
}

/// Options for the default chain with the fake's tenant and client and a certificate file.
fn cert_opts(v: &FakeVault, path: &std::path::Path) -> AzureOptions {
    let mut o = opts(v);
    o.env_tenant_id = Some(v.tenant_id());
    o.env_client_id = Some(v.client_id());
    o.env_client_certificate_path = Some(path.to_path_buf());
    o
}

fn default_cfg(v: &FakeVault) -> AzureConfig {
    AzureConfig { endpoint: v.url(), credentials: AzureCredentials::Default }
}

#[test]
fn rsa_and_p256_client_certificates_get_tokens_through_the_fake() {
    for (name, make, alg) in [
        ("rsa", openssl_rsa as fn(&TempDir) -> Vec<u8>, "PS256"),
        ("p256", rcgen_p256 as fn(&TempDir) -> Vec<u8>, "ES256"),
    ] {
        let v = FakeVault::start();
        let d = TempDir::new(name);
        let der = make(&d);
        v.register_client_certificate(&der);
        let s = AzureStore::new(&default_cfg(&v), cert_opts(&v, &d.path("both.pem"))).unwrap();
        let c = s.credential();
        assert!(c.starts_with("client certificate (env)"), "{c}");
        assert!(c.contains(&format!("{alg} key")) && c.contains(&v.client_id()), "{c}");
        s.create("cert-key", b"v1", soon()).unwrap();
        assert_eq!(get_str(&s, "cert-key").unwrap(), "v1", "{name}");
        assert_eq!(v.count(Op::Token), 1, "{name}: one token, reused");
        assert_eq!(v.values("cert-key"), vec!["v1"]);

        // With the chain in x5c, too.
        let mut o = cert_opts(&v, &d.path("both.pem"));
        o.env_client_send_certificate_chain = true;
        let s = AzureStore::new(&default_cfg(&v), o).unwrap();
        assert_eq!(get_str(&s, "cert-key").unwrap(), "v1", "{name}");
    }
}

#[test]
fn an_unregistered_certificate_is_refused_without_leaking_the_key() {
    let v = FakeVault::start();
    let d = TempDir::new("unreg");
    openssl_rsa(&d);
    let other = TempDir::new("unreg-other");
    v.register_client_certificate(&rcgen_p256(&other));
    let s = AzureStore::new(&default_cfg(&v), cert_opts(&v, &d.path("both.pem"))).unwrap();
    let e = failed(s.get("k", soon()));
    assert!(e.contains("HTTP 401: invalid_client: AADSTS700027"), "{e}");
    assert!(e.contains("The key was not found"), "{e}");
    // No line of the key file, no assertion (a JWT starts with base64url '{"': eyJ).
    let key = d.read("key.pem");
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!e.contains(line), "{e}");
    }
    assert!(!e.contains("eyJ"), "{e}");
    assert!(!format!("{s:?}").contains("PRIVATE"));
}

#[test]
fn a_certificate_signed_by_another_key_is_refused() {
    // The registered certificate's thumbprint, but a signature by a different key: the
    // fake must verify the signature, not only look the thumbprint up.
    let v = FakeVault::start();
    let d = TempDir::new("forged");
    let der = rcgen_p256(&d);
    v.register_client_certificate(&der);
    let good = std::fs::read_to_string(d.path("both.pem")).unwrap();
    let cert_pem = good.split("-----BEGIN PRIVATE KEY").next().unwrap();
    let other = TempDir::new("forged-other");
    rcgen_p256(&other);
    let other_pem = other.read("both.pem");
    let other_key = &other_pem[other_pem.find("-----BEGIN PRIVATE KEY").unwrap()..];
    // Our loader refuses a key that does not match the certificate, so forge at the JWT
    // level: take an assertion of the other certificate and swap in our thumbprint.
    let sha = ring::digest::digest(&ring::digest::SHA256, &der);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let e = AzureStore::new(&default_cfg(&v), {
        std::fs::write(d.path("mixed.pem"), format!("{cert_pem}{other_key}")).unwrap();
        cert_opts(&v, &d.path("mixed.pem"))
    })
    .unwrap_err();
    assert!(e.contains("does not belong to any certificate"), "{e}");
    let header = format!(r#"{{"alg":"ES256","typ":"JWT","x5t#S256":"{}"}}"#, b64.encode(sha));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let token_url = format!("{}/{}/oauth2/v2.0/token", v.authority(), v.tenant_id());
    let claims = format!(
        r#"{{"aud":"{token_url}","iss":"{c}","sub":"{c}","jti":"x","nbf":{now},"iat":{now},"exp":{}}}"#,
        now + 600,
        c = v.client_id()
    );
    let input = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let other_key_pair = rcgen::KeyPair::from_pem(other_key).unwrap();
    let kp = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &other_key_pair.serialize_der(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let sig = kp.sign(&ring::rand::SystemRandom::new(), input.as_bytes()).unwrap();
    let jwt = format!("{input}.{}", b64.encode(sig.as_ref()));
    let (status, body) = post_token(&v, &jwt);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("AADSTS700027") && body.contains("invalid_client"), "{body}");
    assert!(body.contains("Signature verification failed"), "{body}");
}

/// POSTs a client assertion to the fake's token endpoint; (status, body).
fn post_token(v: &FakeVault, assertion: &str) -> (u16, String) {
    let url = format!("{}/{}/oauth2/v2.0/token", v.authority(), v.tenant_id());
    let ca = rustls_pki_types::CertificateDer::from_pem_slice(v.ca_pem().as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let body = format!(
        "client_id={}&scope=https%3A%2F%2Fvault.azure.net%2F.default&grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}",
        v.client_id()
    );
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(tls), name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", v.https_port())).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    let path = url.splitn(4, '/').nth(3).unwrap();
    write!(
        s,
        "POST /{path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        v.https_port(),
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

#[test]
fn the_fake_checks_audience_issuer_and_time_of_assertions() {
    use kes::keystore::azure::certificate::ClientCertificate;
    let v = FakeVault::start();
    let d = TempDir::new("claims");
    v.register_client_certificate(&rcgen_p256(&d));
    let c = ClientCertificate::load(&d.path("both.pem"), None, false).unwrap();
    let aud = format!("{}/{}/oauth2/v2.0/token", v.authority(), v.tenant_id());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
        as i64;
    let cid = v.client_id();
    let cases = [
        (c.assertion(&cid, &aud, now).unwrap(), 200, ""),
        (
            c.assertion(&cid, "https://login.microsoftonline.com/t/oauth2/v2.0/token", now)
                .unwrap(),
            401,
            "AADSTS50013",
        ),
        (c.assertion("someone-else", &aud, now).unwrap(), 401, "AADSTS700021"),
        (c.assertion(&cid, &aud, now - 3600).unwrap(), 401, "AADSTS700024"),
        (c.assertion(&cid, &aud, now + 3600).unwrap(), 401, "AADSTS700024"),
    ];
    for (jwt, status, code) in cases {
        let (got, body) = post_token(&v, &jwt);
        assert_eq!(got, status, "{body}");
        assert!(body.contains(code), "{body}");
    }
}

#[test]
fn encrypted_certificate_keys_need_the_right_password() {
    let v = FakeVault::start();
    let d = TempDir::new("enc");
    let der = openssl_rsa(&d);
    v.register_client_certificate(&der);
    d.openssl(&[
        "rsa",
        "-in",
        "key.pem",
        "-aes256",
        "-traditional",
        "-passout",
        "pass:s3cret-pw",
        "-out",
        "key.enc.pem",
    ]);
    assert!(d.read("key.enc.pem").contains("DEK-Info: AES-256-CBC"));
    std::fs::write(d.path("enc.pem"), d.read("cert.pem") + &d.read("key.enc.pem")).unwrap();
    let path = d.path("enc.pem");

    let e = AzureStore::new(&default_cfg(&v), cert_opts(&v, &path)).unwrap_err();
    assert!(e.contains("encrypted") && e.contains("AZURE_CLIENT_CERTIFICATE_PASSWORD"), "{e}");

    let mut o = cert_opts(&v, &path);
    o.env_client_certificate_password = Some(Zeroizing::new("wrong-pw-value".into()));
    let e = AzureStore::new(&default_cfg(&v), o).unwrap_err();
    assert!(e.contains("incorrect password") && !e.contains("wrong-pw-value"), "{e}");

    let mut o = cert_opts(&v, &path);
    o.env_client_certificate_password = Some(Zeroizing::new("s3cret-pw".into()));
    assert!(!format!("{o:?}").contains("s3cret-pw"));
    let s = AzureStore::new(&default_cfg(&v), o).unwrap();
    s.create("enc-key", b"v", soon()).unwrap();
    assert_eq!(get_str(&s, "enc-key").unwrap(), "v");
}

#[test]
fn a_pfx_file_gets_the_conversion_command() {
    let v = FakeVault::start();
    let d = TempDir::new("pfx");
    openssl_rsa(&d);
    d.openssl(&[
        "pkcs12",
        "-export",
        "-in",
        "cert.pem",
        "-inkey",
        "key.pem",
        "-out",
        "cert.pfx",
        "-passout",
        "pass:pfx-pw",
    ]);
    let e = AzureStore::new(&default_cfg(&v), cert_opts(&v, &d.path("cert.pfx"))).unwrap_err();
    assert!(e.contains("AZURE_CLIENT_CERTIFICATE_PATH"), "{e}");
    assert!(e.contains("PKCS#12/PFX"), "{e}");
    assert!(e.contains("openssl pkcs12 -in cert.pfx -nodes -out cert.pem"), "{e}");
    let e = AzureStore::new(&default_cfg(&v), cert_opts(&v, &d.path("missing.pem"))).unwrap_err();
    assert!(e.contains("cannot read client certificate"), "{e}");
}

#[test]
fn default_chain_takes_the_certificate_only_without_a_client_secret() {
    let v = FakeVault::start();
    let d = TempDir::new("chain");
    v.register_client_certificate(&rcgen_p256(&d));
    let cfg = default_cfg(&v);
    // Secret and certificate: the secret wins (it comes first in the chain).
    let mut o = cert_opts(&v, &d.path("both.pem"));
    o.env_client_secret = Some(Zeroizing::new(v.client_secret()));
    o.federated_token_file = Some(v.federated_token_file().to_path_buf());
    let s = AzureStore::new(&cfg, o.clone()).unwrap();
    assert!(s.credential().starts_with("client secret"), "{}", s.credential());
    // Without the secret: the certificate, before workload identity.
    o.env_client_secret = None;
    let s = AzureStore::new(&cfg, o.clone()).unwrap();
    assert!(s.credential().starts_with("client certificate"), "{}", s.credential());
    s.create("k", b"x", soon()).unwrap();
    // Without the certificate: workload identity.
    o.env_client_certificate_path = None;
    let s = AzureStore::new(&cfg, o.clone()).unwrap();
    assert!(s.credential().starts_with("workload identity"), "{}", s.credential());
    // A configured credential ignores the environment.
    let mut o = cert_opts(&v, &d.path("missing.pem"));
    o.env_client_secret = None;
    let s = AzureStore::new(&secret_cfg(&v), o).unwrap();
    assert!(s.credential().starts_with("client secret"), "{}", s.credential());
}

#[test]
fn managed_identity_through_imds() {
    let v = FakeVault::start();
    let mi = v.config().managed_identity_client_id;
    let cfg = AzureConfig {
        endpoint: v.url(),
        credentials: AzureCredentials::ManagedIdentity { client_id: mi },
    };
    let s = AzureStore::new(&cfg, opts(&v)).unwrap();
    assert!(s.credential().contains("IMDS"));
    s.create("mi", b"x", soon()).unwrap();
    assert_eq!(get_str(&s, "mi").unwrap(), "x");
    assert_eq!((v.count(Op::Imds), v.count(Op::Token)), (1, 0));
    // IMDS restarting (410) and throttling are retried.
    let s2 = AzureStore::new(&cfg, opts(&v)).unwrap();
    v.inject(
        Op::Imds,
        Fault::Raw { status: 410, content_type: "text/plain".into(), body: "restarting".into() },
        1,
    );
    v.inject(Op::Imds, Fault::Throttled { retry_after: None }, 1);
    assert_eq!(get_str(&s2, "mi").unwrap(), "x");
    assert_eq!(v.count(Op::Imds), 4);
    // An unknown user-assigned identity.
    let cfg = AzureConfig {
        endpoint: v.url(),
        credentials: AzureCredentials::ManagedIdentity { client_id: "unknown".into() },
    };
    let e = failed(AzureStore::new(&cfg, opts(&v)).unwrap().get("mi", soon()));
    assert!(e.contains("IMDS: HTTP 400: invalid_request: Identity not found"), "{e}");
}

#[test]
fn managed_identity_through_app_service() {
    let v = FakeVault::start();
    let mut o = opts(&v);
    o.identity_endpoint = Some(v.app_service_endpoint());
    o.identity_header = Some(Zeroizing::new(v.config().identity_header));
    let cfg = AzureConfig { endpoint: v.url(), credentials: AzureCredentials::Default };
    let s = AzureStore::new(&cfg, o.clone()).unwrap();
    assert!(s.credential().contains("App Service"), "{}", s.credential());
    s.create("as", b"x", soon()).unwrap();
    assert_eq!(get_str(&s, "as").unwrap(), "x");
    assert_eq!((v.count(Op::AppService), v.count(Op::Imds)), (1, 0));
    o.identity_header = Some(Zeroizing::new("wrong-header".into()));
    let e = failed(AzureStore::new(&cfg, o).unwrap().get("as", soon()));
    assert!(
        e.contains("X-IDENTITY-HEADER is missing or invalid") && !e.contains("wrong-header"),
        "{e}"
    );
}

#[test]
fn challenge_resource_is_verified_for_named_hosts() {
    // Through `localhost` (no domain) the challenge is accepted; under another name the
    // resource `https://vault.azure.net` does not cover the host and no token is sent.
    let v = FakeVault::start();
    let cfg = AzureConfig { endpoint: v.localhost_url(), ..secret_cfg(&v) };
    let s = AzureStore::new(&cfg, opts(&v)).unwrap();
    s.create("k", b"x", soon()).unwrap();
    assert_eq!(get_str(&s, "k").unwrap(), "x");

    let proxy = ConnectProxy::start(v.https_port());
    let cfg = AzureConfig {
        endpoint: format!("https://kes.vault.test:{}", v.https_port()),
        ..secret_cfg(&v)
    };
    let mut o = opts(&v);
    o.proxy = Some(proxy.url());
    let s = AzureStore::new(&cfg, o.clone()).unwrap();
    v.reset_counts();
    let e = failed(s.get("k", soon()));
    assert!(e.contains("does not cover host 'kes.vault.test'"), "{e}");
    assert_eq!(v.count(Op::Token), 0, "no token was requested for the foreign host");
}

// ---------------------------------------------------------------------------------------
// Proxy and status

/// A minimal HTTP CONNECT proxy that sends every tunnel to the fake vault.
struct ConnectProxy {
    port: u16,
    tunnels: Arc<AtomicUsize>,
}

impl ConnectProxy {
    fn start(target_port: u16) -> ConnectProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let tunnels = Arc::new(AtomicUsize::new(0));
        let t = Arc::clone(&tunnels);
        thread::spawn(move || {
            for c in l.incoming().flatten() {
                let t = Arc::clone(&t);
                thread::spawn(move || {
                    let mut c = c;
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        if c.read(&mut b).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(b[0]);
                    }
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    if !line.starts_with("CONNECT kes.vault.test:") {
                        let _ = c.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n");
                        return;
                    }
                    let Ok(up) = TcpStream::connect(("127.0.0.1", target_port)) else { return };
                    t.fetch_add(1, Ordering::SeqCst);
                    let _ = c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                    let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                    let mut up = up;
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut c2, &mut up2);
                        let _ = up2.shutdown(std::net::Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut up, &mut c);
                    let _ = c.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        ConnectProxy { port, tunnels }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

#[test]
fn https_proxy_tunnels_vault_traffic_but_not_loopback() {
    let v = FakeVault::start();
    let proxy = ConnectProxy::start(v.https_port());
    let cfg = AzureConfig {
        endpoint: format!("https://kes.vault.test:{}", v.https_port()),
        ..secret_cfg(&v)
    };
    let mut o = opts(&v);
    o.proxy = Some(proxy.url());
    o.no_proxy = Some("example.com".into());
    // kes.vault.test is not an Azure domain: accept the fake's vault.azure.net challenge.
    o.danger_skip_challenge_resource_check = true;
    let s = AzureStore::new(&cfg, o).unwrap();
    assert_eq!(s.proxy().as_deref(), Some(proxy.url().as_str()));
    s.create("via-proxy", b"x", soon()).unwrap();
    assert_eq!(get_str(&s, "via-proxy").unwrap(), "x");
    assert!(proxy.tunnels.load(Ordering::SeqCst) >= 1, "vault traffic went through the proxy");
    // The Entra ID authority is on 127.0.0.1: never proxied (the proxy refuses other targets).
    assert_eq!(v.count(Op::Token), 1);
}

#[test]
fn status_reports_latency_or_unreachable() {
    let v = FakeVault::start();
    let s = store(&v);
    let lat = s.status(soon()).unwrap();
    assert!(lat < Duration::from_secs(2));
    assert_eq!(v.count(Op::Token), 0, "the probe is unauthenticated");
    v.set_latency(Duration::from_millis(100));
    assert!(s.status(soon()).unwrap() >= Duration::from_millis(100));

    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let cfg = AzureConfig { endpoint: format!("https://127.0.0.1:{port}"), ..secret_cfg(&v) };
    let dead = AzureStore::new(&cfg, opts(&v)).unwrap();
    let t = Instant::now();
    assert!(matches!(dead.status(soon()), Err(StoreError::Unreachable(_))));
    assert!(matches!(dead.get("k", soon()), Err(StoreError::Unreachable(_))));
    assert!(t.elapsed() < Duration::from_secs(3));
}

fn httpdate(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let dt = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    dt.format(f).unwrap()
}

/// The Azure client trusts what every Go program trusts (`kes::goroots`, the CLI's rule
/// too): `SSL_CERT_FILE` replaces the system bundle file, `SSL_CERT_DIR` the directories;
/// unlike Go, a named file or directory that cannot be read fails start-up.
#[test]
fn ssl_cert_file_and_dir_follow_gos_rule() {
    let v = FakeVault::start();
    let ca = v.ca_file().display().to_string();
    let with_env = |vars: Vec<(&'static str, String)>| {
        let mut o = AzureOptions::from_lookup(move |k| {
            vars.iter().find(|(name, _)| *name == k).map(|(_, value)| value.clone())
        });
        let base = opts(&v);
        o.authority_host_override = base.authority_host_override;
        o.imds_endpoint_override = base.imds_endpoint_override;
        AzureStore::new(&secret_cfg(&v), o)
    };
    // The named file is the bundle: the fake vault's CA is trusted.
    let s = with_env(vec![("SSL_CERT_FILE", ca.clone())]).unwrap();
    s.create("via-file", b"v", soon()).unwrap();
    assert_eq!(get_str(&s, "via-file").unwrap(), "v");
    // A directory that holds the CA works the same way.
    let dir = std::env::temp_dir().join(format!("kes-goroots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(v.ca_file(), dir.join("vault.pem")).unwrap();
    let s = with_env(vec![
        ("SSL_CERT_FILE", "/nonexistent-bundle-for-test.pem".into()),
        ("SSL_CERT_DIR", dir.display().to_string()),
    ]);
    let err = s.err().unwrap();
    assert!(
        err.starts_with("azure: CA: cannot read /nonexistent-bundle-for-test.pem: "),
        "a named file that cannot be read is an error: {err}"
    );
    let s = with_env(vec![("SSL_CERT_DIR", dir.display().to_string())]).unwrap();
    assert_eq!(get_str(&s, "via-file").unwrap(), "v");
    // A named file without a certificate is refused, with its name.
    std::fs::write(dir.join("empty.pem"), b"not a certificate\n").unwrap();
    let empty = dir.join("empty.pem").display().to_string();
    let err = with_env(vec![("SSL_CERT_FILE", empty.clone())]).err().unwrap();
    assert_eq!(err, format!("azure: CA: {empty} contains no PEM certificate"));
    std::fs::remove_dir_all(&dir).unwrap();
}
