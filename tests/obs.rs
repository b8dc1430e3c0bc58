//! Observability over real mTLS: the audit and error streams, metrics in Prometheus text
//! with upstream's names, `/v1/status` with a reachable and an unreachable store, and
//! proof that no key material reaches any of them.

mod common;

use common::TestServer;
use std::time::{Duration, Instant};

fn subscribe(srv: &TestServer, path: &str) -> common::Client {
    let mut c = srv.admin();
    c.send_raw(format!("GET {path} HTTP/1.1\r\nHost: kes\r\n\r\n").as_bytes()).unwrap();
    let (status, headers) = c.read_head().unwrap();
    assert_eq!(status, 200);
    assert!(headers.iter().any(|(n, v)| n == "Content-Type" && v == "application/x-ndjson"));
    assert!(headers.iter().any(|(n, v)| n == "Transfer-Encoding" && v == "chunked"));
    c
}

#[test]
fn audit_stream_delivers_every_request_with_its_fields() {
    let srv = TestServer::start("");
    let mut sub = subscribe(&srv, "/v1/log/audit");
    let mut c = srv.admin();
    assert_eq!(c.get("/v1/status").status, 200);
    assert_eq!(c.get("/v1/key/describe/missing").status, 404);
    // The subscription is itself a request and is audited first.
    let own: serde_json::Value = serde_json::from_slice(&sub.read_chunk().unwrap()).unwrap();
    assert_eq!(own["request"]["path"], "/v1/log/audit");
    let first: serde_json::Value = serde_json::from_slice(&sub.read_chunk().unwrap()).unwrap();
    assert_eq!(first["request"]["path"], "/v1/status");
    assert_eq!(first["request"]["identity"], srv.admin.identity.as_str());
    assert_eq!(first["request"]["ip"], "127.0.0.1");
    assert_eq!(first["response"]["code"], 200);
    assert!(first["response"]["time"].is_u64());
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    let second: serde_json::Value = serde_json::from_slice(&sub.read_chunk().unwrap()).unwrap();
    assert_eq!(second["request"]["path"], "/v1/key/describe/missing");
    assert_eq!(second["response"]["code"], 404);
    // The stdout audit trail has the same requests.
    let audit = srv.audit_text();
    assert!(audit.contains("/v1/key/describe/missing"), "{audit}");
}

#[test]
fn error_stream_delivers_log_lines() {
    let srv = TestServer::start("log:\n  error: debug\n");
    let mut sub = subscribe(&srv, "/v1/log/error");
    // A request by an unknown identity is logged at DEBUG ("access denied").
    let stranger = common::client_id();
    assert_eq!(srv.client(Some(&stranger)).get("/v1/status").status, 403);
    let line: serde_json::Value = serde_json::from_slice(&sub.read_chunk().unwrap()).unwrap();
    let msg = line["message"].as_str().unwrap();
    assert!(msg.contains("level=DEBUG"), "{msg}");
    assert!(msg.contains("access denied: identity not found"), "{msg}");
    assert!(msg.contains(&format!("req.identity={}", stranger.identity)), "{msg}");
}

#[test]
fn fifty_subscribers_and_a_stalled_one_do_not_block_requests() {
    let srv = TestServer::start("");
    let mut readers = Vec::new();
    for _ in 0..49 {
        let mut sub = subscribe(&srv, "/v1/log/audit");
        readers.push(std::thread::spawn(move || {
            let mut n = 0;
            while n < 300 {
                let Ok(event) = sub.read_chunk() else { break };
                let v: serde_json::Value = serde_json::from_slice(&event).unwrap();
                if v["request"]["path"] == "/v1/status" {
                    n += 1;
                }
            }
            n
        }));
    }
    let stalled = subscribe(&srv, "/v1/log/audit");
    let mut c = srv.admin();
    let t = Instant::now();
    for _ in 0..300 {
        assert_eq!(c.get("/v1/status").status, 200);
    }
    let took = t.elapsed();
    for r in readers {
        assert_eq!(r.join().unwrap(), 300, "every reading subscriber gets every event");
    }
    // Generous bound: a blocked fan-out would stall for the 10 s write timeout per event.
    assert!(took < Duration::from_secs(20), "300 requests took {took:?}");
    drop(stalled);
}

#[test]
fn metrics_use_upstreams_names_and_count_exactly() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    for _ in 0..7 {
        assert_eq!(c.get("/v1/key/describe/none").status, 404);
    }
    for _ in 0..3 {
        assert_eq!(c.get("/v1/identity/self/describe").status, 200);
    }
    let r = c.get("/v1/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = r.text();
    assert!(text.contains("kes_http_request_error{code=\"404\"} 7\n"), "{text}");
    assert!(text.contains("kes_http_request_success{code=\"200\"} 3\n"), "{text}");
    assert!(text.contains("kes_http_response_time_count 10\n"), "{text}");
    // Every family of upstream's dashboard is present, each with one TYPE line.
    for name in [
        "kes_http_request_success",
        "kes_http_request_error",
        "kes_http_request_active",
        "kes_http_response_time",
        "kes_log_error_events",
        "kes_log_audit_events",
        "kes_system_up_time",
        "kes_system_num_cpu",
        "kes_system_num_cpu_used",
        "kes_system_num_threads",
        "kes_system_mem_heap_used",
        "kes_system_mem_heap_objects",
        "kes_system_mem_stack_used",
    ] {
        assert_eq!(text.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
    }
    assert_text_format(&text);
    // Threads are real: at least the accept, cache and this connection's thread.
    let threads = text.lines().find_map(|l| l.strip_prefix("kes_system_num_threads ")).unwrap();
    assert!(threads.parse::<u64>().unwrap() >= 3);
}

/// The text-format rules a Prometheus parser enforces: HELP/TYPE before samples, samples
/// of one family contiguous, valid names and label syntax, numeric values, and histogram
/// buckets ending in +Inf with _sum and _count.
fn assert_text_format(text: &str) {
    let mut seen_types = std::collections::HashSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap().to_string();
            let kind = it.next().unwrap();
            assert!(["counter", "gauge", "histogram", "summary"].contains(&kind), "{line}");
            assert!(seen_types.insert(name.clone()), "family {name} declared twice");
            current = Some(name);
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "{line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "{line}");
        let fam = current.as_deref().expect("sample before TYPE");
        assert!(
            name == fam
                || name
                    .strip_prefix(fam)
                    .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s)),
            "{line} outside {fam}"
        );
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1].split(',') {
                let (k, v) = pair.split_once('=').unwrap();
                assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
                assert!(v.starts_with('"') && v.ends_with('"'), "{line}");
            }
        }
    }
    assert!(text.contains("kes_http_response_time_bucket{le=\"+Inf\"}"));
    assert!(text.contains("kes_http_response_time_sum "));
}

#[test]
fn status_reports_an_unreachable_store() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    srv.store.set_unreachable(true);
    let r = c.get("/v1/status");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["keystore_unreachable"], true);
    assert!(v.get("keystore_latency").is_none(), "{}", r.text());
    assert!(v.get("keystore_unavailable").is_none(), "upstream never sends it (D4)");
    let r = c.get("/v1/ready");
    assert_eq!((r.status, r.message()), (504, "key store is not reachable".into()));
    srv.store.set_unreachable(false);
    let r = c.get("/v1/status");
    assert!(r.json()["keystore_latency"].as_u64().unwrap() >= 1);
    assert_eq!(c.get("/v1/ready").status, 200);
}
