//! The TLS record layer of a connection (`server::conn::Tls`, rustls's unbuffered API over
//! the connection's own receive and send buffers), seen from a real mTLS client: alerts on
//! bad records, both ways a client may close, requests cut into many tiny records, responses
//! spanning several records, and key updates.
mod common;

use common::{Client, TestServer, client_config, client_config_for};
use rustls::AlertDescription;
use std::io::{Read, Write};
use std::sync::Arc;

/// Reads what the server sends into the client's TLS state until rustls reports an error or
/// the stream ends; returns the error.
fn alert_after(c: &mut Client) -> Option<rustls::Error> {
    loop {
        match c.tls.conn.read_tls(&mut c.tls.sock) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if let Err(e) = c.tls.conn.process_new_packets() {
            return Some(e);
        }
    }
}

fn connected(srv: &TestServer) -> Client {
    let mut c = srv.admin();
    let r = c.get("/v1/status");
    assert_eq!(r.status, 200, "{}", r.text());
    c
}

#[test]
fn a_forged_record_after_the_handshake_gets_a_bad_record_mac_alert() {
    let srv = TestServer::start("");
    let mut c = connected(&srv);
    // An application-data record of the right shape whose tag cannot verify.
    let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x40];
    forged.extend_from_slice(&[0x41; 0x40]);
    c.tls.sock.write_all(&forged).unwrap();
    assert_eq!(
        alert_after(&mut c),
        Some(rustls::Error::AlertReceived(AlertDescription::BadRecordMac))
    );
    // The server closed this connection only.
    let mut buf = [0u8; 16];
    assert_eq!(c.tls.sock.read(&mut buf).unwrap_or(0), 0);
    assert_eq!(connected(&srv).get("/v1/status").status, 200);
}

#[test]
fn a_record_longer_than_tls_allows_is_refused_from_its_header() {
    let srv = TestServer::start("");
    let mut c = connected(&srv);
    // A header announcing one byte more than a record may carry (16 KiB + 2 KiB): refused
    // from its header alone, without waiting for (or buffering) what it announces.
    c.tls.sock.write_all(&[0x17, 0x03, 0x03, 0x48, 0x01]).unwrap();
    assert_eq!(
        alert_after(&mut c),
        Some(rustls::Error::AlertReceived(AlertDescription::DecodeError))
    );
}

#[test]
fn plaintext_http_after_the_handshake_is_refused_with_an_alert() {
    let srv = TestServer::start("");
    let mut c = connected(&srv);
    c.tls.sock.write_all(b"GET /v1/status HTTP/1.1\r\nHost: kes\r\n\r\n").unwrap();
    let e = alert_after(&mut c).expect("an alert");
    assert!(matches!(e, rustls::Error::AlertReceived(_)), "{e:?}");
    assert_eq!(connected(&srv).get("/v1/status").status, 200);
}

#[test]
fn close_notify_and_a_bare_fin_both_get_the_servers_close_notify() {
    let srv = TestServer::start("");
    // close_notify: the server answers with its own and closes; the client sees a clean end
    // (rustls reads Ok(0) only after a close_notify, a bare FIN is UnexpectedEof).
    let mut c = connected(&srv);
    c.tls.conn.send_close_notify();
    c.tls.flush().unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(c.tls.read(&mut buf).unwrap(), 0);

    // A bare FIN (no close_notify): the server still sends close_notify before its FIN.
    let mut c = connected(&srv);
    c.tls.sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(c.tls.read(&mut buf).unwrap(), 0);

    // A request and close_notify in one flight: the request is answered, then closed.
    let mut c = connected(&srv);
    c.tls.write_all(b"GET /version HTTP/1.1\r\nHost: kes\r\n\r\n").unwrap();
    c.tls.conn.send_close_notify();
    c.tls.flush().unwrap();
    let r = c.read_reply().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("\"version\""), "{}", r.text());
    assert_eq!(c.tls.read(&mut buf).unwrap(), 0);
}

#[test]
fn a_request_cut_into_one_byte_records_is_served() {
    let srv = TestServer::start("");
    let mut c = srv.admin();
    assert_eq!(c.request("POST", "/v1/key/create/tiny", None).status, 200);
    let body = br#"{"context":"dGlueSByZWNvcmRz"}"#;
    let req = format!(
        "POST /v1/key/generate/tiny HTTP/1.1\r\nHost: kes\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    // One record per byte, each in its own TCP segment (nodelay, a flush each).
    c.tls.sock.set_nodelay(true).unwrap();
    for b in &bytes {
        c.tls.write_all(std::slice::from_ref(b)).unwrap();
        c.tls.flush().unwrap();
    }
    let r = c.read_reply().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["plaintext"].as_str().unwrap().len(), 44, "{v}");
    // The ciphertext opens with the same context, on the same connection.
    let dec = format!(
        r#"{{"ciphertext":"{}","context":"dGlueSByZWNvcmRz"}}"#,
        v["ciphertext"].as_str().unwrap()
    );
    let r2 = c.post("/v1/key/decrypt/tiny", &dec);
    assert_eq!(r2.status, 200, "{}", r2.text());
    assert_eq!(r2.json()["plaintext"], v["plaintext"]);
}

#[test]
fn a_request_in_32_byte_records_and_a_response_of_several_records() {
    let srv = TestServer::start("");
    let mut cfg = (*client_config(&srv.server_cert, Some(&srv.admin))).clone();
    // The smallest record size rustls's client allows.
    cfg.max_fragment_size = Some(32);
    let mut c = Client::with_config(srv.addr, Arc::new(cfg));
    // 400 names of 80 bytes: a list answer of about 33 KiB, three records at least.
    let names: Vec<String> = (0..400).map(|i| format!("{i:03}-{}", "n".repeat(76))).collect();
    for n in &names {
        let r = c.request("POST", &format!("/v1/key/create/{n}"), None);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = c.get("/v1/key/list/*");
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 30 * 1024, "{}", r.body.len());
    let listed: Vec<String> = r.json()["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, names);
    // The connection is still in step after it.
    assert_eq!(c.get("/v1/status").status, 200);
}

#[test]
fn client_key_updates_are_answered_and_the_connection_goes_on() {
    let srv = TestServer::start("");
    let mut c = Client::with_config(
        srv.addr,
        client_config_for(&srv.server_cert, Some(&srv.admin), &[&rustls::version::TLS13]),
    );
    assert_eq!(c.request("POST", "/v1/key/create/ku", None).status, 200);
    for round in 0..5 {
        // update_requested: the server must answer with its own key update.
        c.tls.conn.refresh_traffic_keys().unwrap();
        let r = c.post("/v1/key/generate/ku", "{}");
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        assert_eq!(r.json()["plaintext"].as_str().unwrap().len(), 44);
    }
}
