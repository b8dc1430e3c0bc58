//! `kes status`, `kes metric`, `kes log`.

use crate::harness::{Fixture, Lines};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn status_for_pipes_terminals_and_json() {
    let fx = Fixture::start();
    let host = format!("127.0.0.1:{}", fx.server.port);
    let o = fx.admin(&["status"]).run();
    let lines: Vec<&str> = o.ok().lines().collect();
    assert_eq!(lines[0], format!("● {host}"));
    let labels: Vec<&str> =
        lines[1..].iter().map(|l| l.get(..10).unwrap_or(l).trim_end()).collect();
    assert_eq!(
        labels,
        [
            "  Version",
            "  Uptime",
            "  Latency",
            "  OS",
            "  CPUs",
            "  Memory",
            "  · Heap",
            "  · Stack"
        ]
    );
    assert_eq!(lines[1], format!("  Version  {}", env!("CARGO_PKG_VERSION")));
    assert!(lines[2].ends_with(" seconds"), "{}", lines[2]);
    assert_eq!(lines[4], format!("  OS       {}", std::env::consts::OS));
    assert!(
        lines[5].starts_with("  CPUs     ") && lines[5].ends_with(" amd64")
            || !cfg!(target_arch = "x86_64")
    );
    assert!(lines[7].ends_with("B"), "{}", lines[7]);

    assert_eq!(fx.admin(&["status", "-s"]).run().ok(), format!("● {host}\n"));

    let json = fx.admin(&["status", "--json"]).run();
    let text = json.ok();
    assert!(
        text.starts_with(&format!("{{\"version\":\"{}\",\"os\":\"", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.ends_with("}\n") && text.lines().count() == 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    for field in
        ["uptime", "num_cpu", "num_cpu_used", "mem_heap_used", "mem_stack_used", "keystore_latency"]
    {
        assert!(v[field].is_u64(), "{field} in {text}");
    }

    let api = fx.admin(&["status", "--api", "--json"]).run();
    let list: Vec<serde_json::Value> = serde_json::from_str(api.ok()).unwrap();
    // Upstream's 22, our /v1/policy/check, and rotate, rewrap.
    assert_eq!(list.len(), 25);
    let table = fx.admin(&["status", "-s", "--api"]).run();
    let lines: Vec<&str> = table.ok().lines().collect();
    assert_eq!(lines[1], "");
    assert_eq!(lines[2], "  Method  API                          Timeout");
    assert!(lines.contains(&"  GET     /v1/log/audit                Inf"), "{}", table.stdout);
    assert!(lines.contains(&"  PUT     /v1/key/create/              15s"), "{}", table.stdout);
    assert!(lines.contains(&"  PUT     /v1/policy/check             15s"), "{}", table.stdout);

    // A terminal: colours by default, none with --color never; JSON indented.
    let t = fx.admin(&["status", "--color", "never"]).tty();
    assert!(t.stdout.starts_with(&format!("● {host}\n  Version  ")), "{:?}", t.stdout);
    let t = fx.admin(&["status"]).tty();
    assert!(t.stdout.contains("\x1b["), "{:?}", t.stdout);
    let t = fx.admin(&["status", "--json"]).tty();
    assert!(t.stdout.starts_with("{\n  \"version\": "), "{:?}", t.stdout);

    // The user's policy allows /v1/status only.
    assert_eq!(fx.user(&["status", "-s"]).run().ok(), format!("● {host}\n"));
    let o = fx.user(&["status", "--api"]).run();
    assert!(
        o.stderr
            .starts_with("Error: failed to list APIs: not authorized: insufficient permissions"),
        "{}",
        o.stderr
    );
}

#[test]
fn metric_prints_one_json_object_per_scrape_to_a_pipe() {
    let fx = Fixture::start();
    fx.admin(&["key", "create", "m1"]).run().ok();
    let mut child = fx.admin(&["metric", "--rate", "200ms"]).spawn(false);
    let lines = Lines::follow(&mut child);
    let got = lines.wait_for("kes_system_mem_stack_used", WAIT);
    let _ = lines.wait_for_count(2, WAIT);
    let _ = child.kill();
    let _ = child.wait();
    let first = &got[0];
    // One JSON object per line, its fields in kms-go's struct order.
    let order = [
        "kes_http_request_success",
        "kes_http_request_error",
        "kes_http_request_failure",
        "kes_http_request_active",
        "kes_log_audit_events",
        "kes_log_error_events",
        "kes_http_response_time",
        "kes_system_up_time",
        "kes_system_num_cpu",
        "kes_system_num_cpu_used",
        "kes_system_num_threads",
        "kes_system_mem_heap_used",
        "kes_system_mem_heap_objects",
        "kes_system_mem_stack_used",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|k| first.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k}: {first}")))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{first}");
    assert!(first.starts_with("{\"kes_http_request_success\":") && first.ends_with('}'), "{first}");
    let v: serde_json::Value = serde_json::from_str(first).unwrap();
    assert!(v["kes_http_request_success"].as_u64().unwrap() >= 1, "{first}");
    assert!(v["kes_http_response_time"]["10000000"].is_u64(), "{first}");
}

#[test]
fn metric_draws_a_table_on_a_terminal() {
    let fx = Fixture::start();
    let mut child = fx.admin(&["metric", "--rate", "200ms"]).spawn(true);
    let lines = Lines::follow(&mut child);
    let got = lines.wait_for("System", WAIT);
    let _ = child.kill();
    let _ = child.wait();
    let text = got.join("\n");
    assert!(
        text.contains(
            "Request    OK [2xx]       Err [4xx]       Err [5xx]      Req/s        Latency"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "System       UpTime            Heap           Stack       CPUs        Threads"
        ),
        "{text}"
    );
}

#[test]
fn log_streams_audit_events_as_a_table_or_json() {
    let fx = Fixture::start();
    let mut table = fx.admin(&["log"]).spawn(false);
    let table_lines = Lines::follow(&mut table);
    let mut json = fx.admin(&["log", "--json"]).spawn(false);
    let json_lines = Lines::follow(&mut json);
    table_lines.wait_for("Latency", WAIT);
    // A subscriber only sees events after it subscribed: create keys until both streams
    // have shown one.
    let start = std::time::Instant::now();
    let (rows, events) = loop {
        let n = start.elapsed().as_millis();
        fx.admin(&["key", "create", &format!("logged-{n}")]).run().ok();
        std::thread::sleep(Duration::from_millis(100));
        let (rows, events) = (table_lines.all(), json_lines.all());
        let seen = |l: &Vec<String>| l.iter().any(|x| x.contains("/v1/key/create/logged-"));
        if seen(&rows) && seen(&events) {
            break (rows, events);
        }
        assert!(start.elapsed() < WAIT, "no audit events: {rows:?} {events:?}");
    };
    for c in [&mut table, &mut json] {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert_eq!(
        rows[0],
        "Time        Status    Identity                IP                 API                               Latency"
    );
    let row = rows.iter().find(|r| r.contains("/v1/key/create/logged-")).unwrap();
    assert_eq!(&row[12..15], "200", "{row}");
    assert_eq!(&row[22..42], &fx.admin_id[..20], "{row}");
    assert_eq!(&row[46..55], "127.0.0.1", "{row}");
    let event = events.iter().find(|e| e.contains("/v1/key/create/logged-")).unwrap();
    let v: serde_json::Value = serde_json::from_str(event).unwrap();
    assert_eq!(v["request"]["identity"], fx.admin_id.as_str());
    assert_eq!(v["response"]["code"], 200);
}

#[test]
fn log_streams_error_events() {
    let fx = Fixture::start();
    let mut child = fx.admin(&["log", "--error"]).spawn(false);
    let lines = Lines::follow(&mut child);
    // Make the key store fail: its directory becomes a file.
    let keys = fx.dir.join("keys");
    let _ = std::fs::remove_dir_all(&keys);
    std::fs::write(&keys, "not a directory").unwrap();
    let start = std::time::Instant::now();
    let got = loop {
        let o = fx.admin(&["key", "create", "doomed"]).run();
        assert_eq!(o.code, 1, "{o:?}");
        std::thread::sleep(Duration::from_millis(100));
        let got = lines.all();
        if got.iter().any(|l| l.contains("doomed")) {
            break got;
        }
        assert!(start.elapsed() < WAIT, "no error events: {got:?}");
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = got.iter().find(|l| l.contains("doomed")).unwrap();
    assert!(line.contains("level=ERROR"), "{line}");
    assert!(!line.starts_with('{'), "the message, not the JSON event: {line}");
}

#[test]
fn log_on_a_terminal_shows_the_header() {
    let fx = Fixture::start();
    let mut child = fx.admin(&["log"]).spawn(true);
    let lines = Lines::follow(&mut child);
    let got = lines.wait_for("Latency", WAIT);
    let _ = child.kill();
    let _ = child.wait();
    assert!(got.iter().any(|l| l.contains("Time        Status    Identity")), "{got:?}");
}

#[test]
fn log_says_when_the_server_goes_away() {
    use std::io::Read;
    let mut fx = Fixture::start();
    let mut child = fx.admin(&["log"]).spawn(false);
    let lines = Lines::follow(&mut child);
    lines.wait_for("Latency", WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let url = fx.server.url();
    fx.server.stop();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("Error: ") && stderr.contains(&url), "{stderr}");
}
