//! The CLI reads a response body by the same framing rule the server applies to requests
//! (`kes::http::framing`, RFC 9112 §6.3): a raw TLS stub on 127.0.0.1:0 answers `kes ls`
//! with each framing, byte for byte, and the CLI either lists the keys or names what was
//! wrong with the answer.

use crate::harness::kes;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc";

/// A TLS server on 127.0.0.1:0 that answers every connection with `response`, after the
/// request head arrived, then closes (with close_notify). It stops when the test ends: the
/// thread is detached and blocked in `accept`, and the process exits.
fn stub(response: Vec<u8>) -> u16 {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap().self_signed(&key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { continue };
            let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, &mut sock);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match tls.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let _ = tls.write_all(&response);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    port
}

/// `kes ls -k` against a stub answering `head` + `body`.
fn ls(head: &str, body: &[u8]) -> crate::harness::Out {
    let mut response = head.replace('\n', "\r\n").into_bytes();
    response.extend_from_slice(body);
    let port = stub(response);
    kes(&["ls", "-k"]).env("KES_SERVER", &format!("127.0.0.1:{port}")).env("KES_API_KEY", KEY).run()
}

const PAGE: &str = "{\"names\":[\"a\",\"b\"],\"continue_at\":\"\"}\n";
const LISTED: &str = "Key\na\nb\n";

fn chunked(body: &str) -> Vec<u8> {
    let (one, two) = body.split_at(10);
    format!("{:x}\r\n{one}\r\n{:x}\r\n{two}\r\n0\r\n\r\n", one.len(), two.len()).into_bytes()
}

#[test]
fn each_framing_the_rule_accepts_is_read_whole() {
    let len = PAGE.len();
    let cases: [(String, Vec<u8>); 6] = [
        (format!("HTTP/1.1 200 OK\nContent-Length: {len}\n\n"), PAGE.into()),
        ("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n".into(), chunked(PAGE)),
        // Chunked overrides a Content-Length (here a wrong one) in a response.
        (
            "HTTP/1.1 200 OK\nContent-Length: 3\nTransfer-Encoding: chunked\n\n".into(),
            chunked(PAGE),
        ),
        (
            "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nContent-Length: 999\n\n".into(),
            chunked(PAGE),
        ),
        // Equal duplicates are one length.
        (format!("HTTP/1.1 200 OK\nContent-Length: {len}\nContent-Length: {len}\n\n"), PAGE.into()),
        // Neither: the body runs to the end of the connection.
        ("HTTP/1.1 200 OK\nConnection: close\n\n".into(), PAGE.into()),
    ];
    for (head, body) in cases {
        let out = ls(&head, &body);
        assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (0, LISTED, ""), "{head}");
    }
    // The Content-Length ends the body even if more bytes follow.
    let out = ls(
        &format!("HTTP/1.1 200 OK\nContent-Length: {len}\n\n"),
        format!("{PAGE}garbage").as_bytes(),
    );
    assert_eq!(out.ok(), LISTED);
}

#[test]
fn framing_the_rule_refuses_is_named() {
    let len = PAGE.len();
    for (head, body, why) in [
        (
            format!("HTTP/1.1 200 OK\nContent-Length: {len}\nContent-Length: {}\n\n", len + 1),
            PAGE.as_bytes().to_vec(),
            "invalid framing: duplicate Content-Length",
        ),
        (
            "HTTP/1.1 200 OK\nContent-Length: -1\n\n".into(),
            PAGE.into(),
            "invalid framing: invalid Content-Length",
        ),
        (
            "HTTP/1.1 200 OK\nContent-Length: 5, 5\n\n".into(),
            PAGE.into(),
            "invalid framing: invalid Content-Length",
        ),
        (
            "HTTP/1.1 200 OK\nTransfer-Encoding: gzip, chunked\n\n".into(),
            chunked(PAGE),
            "invalid framing: unsupported Transfer-Encoding",
        ),
        (
            "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n\n".into(),
            chunked(PAGE),
            "invalid framing: unsupported Transfer-Encoding",
        ),
        // A body shorter than its length, and a chunked body without its last chunk.
        (
            format!("HTTP/1.1 200 OK\nContent-Length: {}\n\n", len + 10),
            PAGE.into(),
            "response body cut short",
        ),
        (
            "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n".into(),
            chunked(PAGE)[..20].to_vec(),
            "chunked body cut short",
        ),
    ] {
        let out = ls(&head, &body);
        let url =
            out.stderr.split("invalid response from ").nth(1).and_then(|s| s.split(": ").next());
        let url = url.unwrap_or_else(|| panic!("{head}: {}", out.stderr));
        out.fails_with(&format!("failed to list keys: invalid response from {url}: {why}"));
    }
}

#[test]
fn bodiless_statuses_end_at_the_head() {
    // A 204 with a length and no body: nothing is waited for (the stub keeps nothing
    // back, but a client that read 10 bytes would fail with "cut short").
    let out = ls("HTTP/1.1 204 No Content\nContent-Length: 10\n\n", b"");
    // An empty 2xx body is no listing.
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.starts_with("Error: invalid listing from the server: EOF while parsing"),
        "{out:?}"
    );
    // An interim 100 before the real answer is skipped, whatever its framing headers.
    let head = format!(
        "HTTP/1.1 100 Continue\nContent-Length: 7\n\nHTTP/1.1 200 OK\nContent-Length: {}\n\n",
        PAGE.len()
    );
    assert_eq!(ls(&head, PAGE.as_bytes()).ok(), LISTED);
}
