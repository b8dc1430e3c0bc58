//! The server foundation over real mTLS: routes, statuses, headers and bodies; auth and
//! policies; routing quirks; limits and slow clients; the connection cap.

mod common;

use common::{Client, TestServer, client_id};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const POLICY: &str = "
policy:
  app:
    allow:
    - /v1/key/create/app-*
    - /v1/key/generate/app-*
    - /v1/key/describe/*
    - /v1/status
    - /v1/identity/self/describe
    deny:
    - /v1/key/create/app-secret*
    identities:
    - ${APP_IDENTITY}
";

fn with_app() -> (TestServer, common::ClientId) {
    let app = client_id();
    let srv = TestServer::start(&POLICY.replace("${APP_IDENTITY}", &app.identity));
    (srv, app)
}

#[test]
fn version_needs_a_certificate_at_tls_but_no_policy() {
    let (srv, app) = with_app();
    let r = srv.client(Some(&app)).get("/version");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["commit"].is_string());
    assert!(r.body.ends_with(b"\n"));
    // No certificate: the handshake itself is refused (require-any).
    let mut c = srv.client(None);
    assert!(
        c.send_raw(b"GET /version HTTP/1.1\r\nHost: kes\r\n\r\n").is_err()
            || c.read_reply().is_err()
    );
}

#[test]
fn status_has_kms_go_fields() {
    let srv = TestServer::start("");
    let r = srv.admin().get("/v1/status");
    assert_eq!(r.status, 200);
    let v = r.json();
    for f in [
        "version",
        "os",
        "arch",
        "uptime",
        "num_cpu",
        "num_cpu_used",
        "mem_heap_used",
        "mem_stack_used",
        "keystore_latency",
    ] {
        assert!(!v[f].is_null(), "missing {f}: {}", r.text());
    }
    assert_eq!(v["os"], "linux");
    assert!(v["mem_heap_used"].as_u64().unwrap() > 0);
    assert!(v["keystore_latency"].as_u64().unwrap() >= 1);
    assert!(v.get("keystore_unreachable").is_none());
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 9, "{keys:?}");
}

#[test]
fn ready_and_api() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    let r = c.get("/v1/ready");
    assert_eq!((r.status, r.body.len()), (200, 0));
    let r = c.get("/v1/api");
    assert_eq!(r.status, 200);
    let list = r.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 25);
    assert!(list.iter().any(|e| e["method"] == "PUT"
        && e["path"] == "/v1/policy/check"
        && e["max_body"] == kes::api::routes::MAX_POLICY_CHECK_BODY
        && e["timeout"] == 15));
    assert!(list.iter().any(|e| e["method"] == "PUT" && e["path"] == "/v1/key/rotate/"));
    assert!(list.iter().any(|e| e["method"] == "PUT" && e["path"] == "/v1/key/rewrap/"));
    assert!(list.iter().any(|e| e["method"] == "PUT"
        && e["path"] == "/v1/key/import/"
        && e["max_body"] == 1_000_000
        && e["timeout"] == 15));
    assert!(list.iter().any(|e| e["path"] == "/v1/log/audit" && e["timeout"] == 0));
}

#[test]
fn unknown_paths_get_text_404_and_wrong_methods_405_with_accept() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    let r = c.get("/v1/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(r.body, b"404 page not found\n");
    let r = c.get("/v1/key/bulk/decrypt/k");
    assert_eq!(r.status, 404);
    let r = c.get("/v1/key/create/k");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Accept"), Some("PUT"));
    assert_eq!(r.body, b"{\"message\":\"received method 'GET' expected 'PUT'\"\n}");
    let r = c.request("DELETE", "/v1/status", None);
    assert_eq!((r.status, r.header("Accept")), (405, Some("GET")));
    c.send_raw(b"HEAD /version HTTP/1.1\r\nHost: kes\r\n\r\n").unwrap();
    let (status, headers) = c.read_head().unwrap();
    assert_eq!(status, 405);
    assert!(
        headers.iter().any(|(n, v)| n == "Content-Length" && v != "0"),
        "HEAD keeps the length, sends no body"
    );
    // The connection is still usable after all of that.
    assert_eq!(c.get("/version").status, 200);
}

#[test]
fn post_is_accepted_where_put_is_the_method_and_list_works_without_slash() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    assert_eq!(c.request("PUT", "/v1/key/create/k1", None).status, 200);
    assert_eq!(c.request("POST", "/v1/key/create/k2", None).status, 200);
    let r = c.get("/v1/key/list");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["names"], serde_json::json!(["k1", "k2"]));
    let r = c.get("/v1//key/list/");
    assert_eq!((r.status, r.header("Location")), (301, Some("/v1/key/list/")));
}

#[test]
fn list_without_slash_is_authorized_against_the_routes_own_path() {
    // MinIO's client (kms-go `ListKeys("")`) asks for `GET /v1/key/list`; upstream redirects to
    // `/v1/key/list/` and checks the policy there, so `/v1/key/list/*` must allow it.
    let lister = client_id();
    let srv = TestServer::start(&format!(
        "policy:\n  lister:\n    allow:\n    - /v1/key/list/*\n    identities:\n    - {}\n",
        lister.identity
    ));
    assert_eq!(srv.admin().request("PUT", "/v1/key/create/k1", None).status, 200);
    let mut c = srv.client(Some(&lister));
    let r = c.get("/v1/key/list");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["names"], serde_json::json!(["k1"]));
    assert_eq!(c.get("/v1/key/list/k*").json()["names"], serde_json::json!(["k1"]));
    // A policy naming only the slash-less path allows neither form, as upstream.
    let exact = client_id();
    let srv = TestServer::start(&format!(
        "policy:\n  exact:\n    allow:\n    - /v1/key/list\n    identities:\n    - {}\n",
        exact.identity
    ));
    let r = srv.client(Some(&exact)).get("/v1/key/list");
    assert_eq!((r.status, r.message()), (403, "not authorized: insufficient permissions".into()));
}

#[test]
fn policies_allow_deny_and_admin_bypass() {
    let (srv, app) = with_app();
    let mut c = srv.client(Some(&app));
    assert_eq!(c.request("PUT", "/v1/key/create/app-one", None).status, 200);
    let r = c.request("PUT", "/v1/key/create/app-secret-1", None);
    assert_eq!((r.status, r.message()), (403, "not authorized: insufficient permissions".into()));
    let r = c.request("PUT", "/v1/key/create/other", None);
    assert_eq!(r.status, 403);
    let r = c.request("DELETE", "/v1/key/delete/app-one", None);
    assert_eq!(r.status, 403);
    // Auth runs before name validation: an invalid name outside the policy is a 403.
    let r = c.request("PUT", "/v1/key/create/bad.name", None);
    assert_eq!(r.status, 403);
    assert_eq!(c.get("/v1/status").status, 200);
    // Admin bypasses every policy.
    let mut a = srv.admin();
    assert_eq!(a.request("PUT", "/v1/key/create/app-secret-1", None).status, 200);
    assert_eq!(a.request("DELETE", "/v1/key/delete/app-one", None).status, 200);
    // An identity without any policy.
    let stranger = client_id();
    let r = srv.client(Some(&stranger)).get("/v1/status");
    assert_eq!((r.status, r.message()), (403, "not authorized: insufficient permissions".into()));
}

#[test]
fn policy_and_identity_routes() {
    let (srv, app) = with_app();
    let mut a = srv.admin();
    let r = a.get("/v1/policy/describe/app");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["name"], "app");
    assert_eq!(v["created_by"], srv.admin.identity.as_str());
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    let r = a.get("/v1/policy/read/app");
    let v = r.json();
    assert_eq!(v["allow"]["/v1/key/create/app-*"], serde_json::json!({}));
    assert_eq!(v["deny"]["/v1/key/create/app-secret*"], serde_json::json!({}));
    let r = a.get("/v1/policy/read/nope");
    assert_eq!((r.status, r.message()), (404, "policy does not exist".into()));
    let r = a.get("/v1/policy/read/bad.name");
    assert_eq!(
        (r.status, r.message()),
        (400, "policy name 'bad.name' is empty, too long or contains invalid characters".into())
    );
    let r = a.get("/v1/policy/list/*");
    assert_eq!(r.text(), "{\"names\":[\"app\"],\"continue_at\":\"\"}\n");
    let r = a.get("/v1/policy/list/x*");
    assert_eq!(r.text(), "{\"names\":[],\"continue_at\":\"\"}\n");
    let r = a.get(&format!("/v1/identity/describe/{}", app.identity));
    assert_eq!(r.json()["policy"], "app");
    let r = a.get(&format!("/v1/identity/describe/{}", srv.admin.identity));
    assert_eq!(r.json()["admin"], true);
    let r = a.get("/v1/identity/describe/ffff");
    assert_eq!((r.status, r.message()), (404, "identity does not exist".into()));
    let r = a.get("/v1/identity/list/");
    let ids = r.json()["identities"].clone();
    assert_eq!(ids.as_array().unwrap().len(), 2);
    let r = a.get("/v1/identity/list/*-*");
    assert_eq!(
        (r.status, r.message()),
        (400, "listing pattern '*-*' is empty, too long or is invalid".into())
    );
    // Self-describe: admin and the flat layout for others (DECISION D2).
    let r = a.get("/v1/identity/self/describe");
    assert_eq!(r.json()["admin"], true);
    let r = srv.client(Some(&app)).get("/v1/identity/self/describe");
    let v = r.json();
    assert_eq!(
        (v["identity"].as_str().unwrap(), v["policy"].as_str().unwrap()),
        (app.identity.as_str(), "app")
    );
    assert_eq!(v["allow"]["/v1/status"], serde_json::json!({}));
    let r = srv.client(Some(&client_id())).get("/v1/identity/self/describe");
    assert_eq!((r.status, r.message()), (404, "identity does not exist".into()));
}

#[test]
fn http_1_0_keep_alive_is_echoed() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    c.send_raw(b"GET /version HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    let r = c.read_reply().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Connection"), Some("keep-alive"));
    assert_eq!(c.get("/version").status, 200);
}

#[test]
fn oversized_and_malformed_heads_are_refused() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    let mut req = b"GET /version HTTP/1.1\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 20_000));
    req.extend_from_slice(b"\r\n\r\n");
    c.send_raw(&req).unwrap();
    let r = c.read_reply().unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(r.header("Connection"), Some("close"));
    let mut c = srv.admin();
    c.send_raw(b"BLAH\r\n\r\n").unwrap();
    assert_eq!(c.read_reply().unwrap().status, 400);
    let mut c = srv.admin();
    c.send_raw(
        b"PUT /v1/key/import/k HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    assert_eq!(c.read_reply().unwrap().status, 400);
}

#[test]
fn oversized_bodies_fail_to_decode_as_upstream() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    let big = format!("{{\"key\":\"{}\"}}", "A".repeat(1_000_100));
    let r = c.request("PUT", "/v1/key/import/big", Some(big.as_bytes()));
    assert_eq!((r.status, r.message()), (400, "invalid import key request body".into()));
    assert_eq!(r.header("Connection"), Some("close"));
}

#[test]
fn a_stalled_client_is_cut_off_while_others_are_served() {
    let srv = TestServer::start("");
    let mut stalled = srv.admin();
    stalled.send_raw(b"GET /version HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t = Instant::now();
    // Others are served meanwhile.
    for _ in 0..5 {
        assert_eq!(srv.admin().get("/version").status, 200);
    }
    // The stalled one gets 408 after the header timeout, and the connection ends.
    let r = stalled.read_reply().unwrap();
    assert_eq!(r.status, 408);
    let waited = t.elapsed();
    assert!(waited >= Duration::from_secs(4) && waited < Duration::from_secs(10), "{waited:?}");
}

#[test]
fn many_idle_connections_do_not_block_a_new_client() {
    let srv = TestServer::start("");
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(std::net::TcpStream::connect(srv.addr).unwrap());
    }
    let t = Instant::now();
    let r = srv.admin().get("/version");
    assert_eq!(r.status, 200);
    // Served long before the 1,000 idle sockets' deadlines would free anything (generous
    // for a loaded 2-core machine; the point is "not blocked", not a latency figure).
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    drop(idle);
}

#[test]
fn the_connection_cap_refuses_extra_connections_at_once() {
    let srv = TestServer::start_with("", 3);
    let mut held: Vec<Client> = (0..3).map(|_| srv.admin()).collect();
    for c in &mut held {
        assert_eq!(c.get("/version").status, 200);
    }
    // The fourth takes the slot of an idle one (tests/admission.rs covers eviction); its
    // garbage handshake is closed at once rather than hanging.
    let t = Instant::now();
    let mut extra = std::net::TcpStream::connect(srv.addr).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = extra.write_all(b"\x16\x03\x01\x00\x05hello");
    let mut b = [0u8; 16];
    let n = extra.read(&mut b).unwrap_or(0);
    assert_eq!(n, 0, "refused connection must be closed");
    assert!(t.elapsed() < Duration::from_secs(2));
    drop(held);
    // Capacity comes back once connections close.
    let t = Instant::now();
    loop {
        let mut c = srv.admin();
        if c.send_raw(b"GET /version HTTP/1.1\r\nHost: kes\r\n\r\n").is_ok()
            && let Ok(r) = c.read_reply()
        {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ed25519_api_key_clients_authenticate() {
    let srv = TestServer::start("");
    let key = kes::auth::apikey::ApiKey::generate().unwrap();
    let id = key.identity();
    assert_eq!(id.as_str().len(), 64);
    let app = client_id();
    let r = srv.client(Some(&app)).get("/v1/identity/self/describe");
    assert_eq!(r.status, 404);
}

#[test]
fn skip_auth_relaxes_tls_and_the_route_check() {
    let srv = TestServer::start("api:\n  /v1/ready:\n    skip_auth: true\n    timeout: 30s\n");
    // No client certificate at all: the handshake is now allowed.
    let mut anon = srv.client(None);
    let r = anon.get("/v1/ready");
    assert_eq!((r.status, r.body.len()), (200, 0));
    // Other routes still need a certificate, now answered at the HTTP level.
    let r = anon.get("/v1/status");
    assert_eq!((r.status, r.message()), (400, "tls: client certificate is required".into()));
    let api = srv.admin().get("/v1/api").json();
    let ready = api.as_array().unwrap().iter().find(|e| e["path"] == "/v1/ready").unwrap().clone();
    assert_eq!(ready["timeout"], 30);
}
