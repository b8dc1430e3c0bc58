//! Slow, idle and flooding clients against the real binary: absolute deadlines per phase,
//! eviction of unproductive connections at the cap, a fair share per source address, and
//! no eviction of a request being handled. Bounded counts, never wall-clock thresholds.

mod common;
#[path = "support/fake_vault.rs"]
mod fake_vault;

use common::{Binary, Client, ClientId, TestServer, client_config};
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

fn start(max_connections: usize) -> Binary {
    Binary::start_flags(&["--max-connections", &max_connections.to_string()])
}

trait Probe {
    fn admin(&self) -> Client;
    /// One sample of `/v1/metrics`, by its `name{labels}`.
    fn metric(&self, series: &str) -> u64;
}

impl Probe for Binary {
    fn admin(&self) -> Client {
        self.client(Some(&self.admin))
    }

    fn metric(&self, series: &str) -> u64 {
        metric(&mut self.admin(), series)
    }
}

fn metric(c: &mut Client, series: &str) -> u64 {
    let text = c.get("/v1/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} not in metrics:\n{text}"))
        .parse()
        .unwrap()
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.x).
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(to) = to else { panic!("IPv4 only") };
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(from.into(), 0))).unwrap();
    connect(fd.as_raw_fd(), &SockaddrIn::from(to)).unwrap();
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// An mTLS client over an existing TCP connection.
fn tls_over(sock: TcpStream, cert: &CertificateDer<'static>, id: &ClientId) -> Client {
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(client_config(cert, Some(id)), name).unwrap();
    Client::from_parts(rustls::StreamOwned::new(conn, sock))
}

/// The bytes of a real ClientHello.
fn client_hello(cert: &CertificateDer<'static>, id: &ClientId) -> Vec<u8> {
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(client_config(cert, Some(id)), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// Whether the server closed `s` (EOF or reset) rather than keeping it open: a probe that
/// returns at once for a closed socket.
fn closed_by_server(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    let r = (&*s).read(&mut b);
    s.set_nonblocking(false).unwrap();
    match r {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Sends `bytes` one at a time every `gap` until the server closes the connection; returns
/// how many were sent before the close was seen.
fn trickle_until_closed(s: &mut TcpStream, bytes: &[u8], gap: Duration) -> usize {
    s.set_read_timeout(Some(gap)).unwrap();
    for (i, b) in bytes.iter().enumerate() {
        if s.write_all(&[*b]).is_err() {
            return i;
        }
        let mut r = [0u8; 256];
        match s.read(&mut r) {
            Ok(0) => return i + 1,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return i + 1,
        }
    }
    panic!("the server never closed a connection trickling {} bytes", bytes.len());
}

#[test]
fn a_trickled_handshake_is_closed_by_its_absolute_deadline() {
    let srv = start(16);
    let hello = client_hello(&srv.server_cert, &srv.admin);
    assert!(hello.len() > 150, "a real ClientHello: {} bytes", hello.len());
    // One byte every 250 ms: a per-read timeout (5 s) never fires, only an absolute
    // deadline does. HANDSHAKE_TIMEOUT (5 s) lets through at most ~20 bytes; a loaded
    // machine sends fewer, never more.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    let sent = trickle_until_closed(&mut s, &hello, Duration::from_millis(250));
    assert!(sent <= 40, "closed after {sent} of {} bytes", hello.len());
    assert_eq!(srv.metric("kes_http_deadline_exceeded_handshake"), 1);
}

#[test]
fn a_head_trickled_or_never_sent_after_the_handshake_is_cut_off() {
    let srv = start(16);
    // Nothing after the handshake: closed silently once the first head is due, not after
    // the 90 s keep-alive idle timeout.
    let mut silent = srv.admin();
    silent.handshake().unwrap();
    let mut b = [0u8; 16];
    let n = silent.tls.read(&mut b).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    // A head trickled one byte per TLS record every 250 ms gets 408 at its deadline.
    let mut c = srv.admin();
    let head = format!("GET /version HTTP/1.1\r\nHost: kes\r\nX-Pad: {}\r\n\r\n", "a".repeat(200));
    c.tls.sock.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
    let mut sent = 0;
    let mut answer = Vec::new();
    for byte in head.as_bytes() {
        if c.send_raw(&[*byte]).is_err() {
            break;
        }
        sent += 1;
        let mut r = [0u8; 512];
        match c.tls.read(&mut r) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&r[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        if !answer.is_empty() {
            break;
        }
    }
    assert!(sent <= 40, "answered after {sent} of {} bytes", head.len());
    assert!(
        answer.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(srv.metric("kes_http_deadline_exceeded_head"), 2);
}

#[test]
fn at_the_cap_unproductive_connections_are_evicted_for_a_healthy_client() {
    const CAP: usize = 8;
    let srv = start(CAP);
    let hello = client_hello(&srv.server_cert, &srv.admin);
    let mut hostile: Vec<TcpStream> = Vec::new();
    // Half-open: TCP only.
    for _ in 0..3 {
        hostile.push(connect_from([127, 0, 0, 2], srv.addr));
    }
    // A handshake stuck after a few bytes of its ClientHello.
    for _ in 0..3 {
        let mut s = connect_from([127, 0, 0, 2], srv.addr);
        s.write_all(&hello[..10]).unwrap();
        hostile.push(s);
    }
    // Kept alive after one request, then silent.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut c = tls_over(connect_from([127, 0, 0, 2], srv.addr), &srv.server_cert, &srv.admin);
        assert_eq!(c.get("/version").status, 200);
        idle.push(c);
    }
    // The cap is full. A healthy client from another address is served on fresh and on
    // kept-alive connections.
    for _ in 0..4 {
        let mut c = tls_over(connect_from([127, 0, 0, 3], srv.addr), &srv.server_cert, &srv.admin);
        let r = c.get("/version");
        assert_eq!(r.status, 200);
        assert!(r.json()["version"].is_string());
        assert_eq!(c.get("/v1/key/list/").status, 200);
    }
    let mut c = tls_over(connect_from([127, 0, 0, 3], srv.addr), &srv.server_cert, &srv.admin);
    let evicted: u64 = ["handshake", "head", "body", "idle"]
        .iter()
        .map(|p| metric(&mut c, &format!("kes_http_connections_evicted_{p}")))
        .sum();
    assert!(evicted >= 1, "evicted {evicted}");
    assert!(metric(&mut c, "kes_http_connections_open") <= CAP as u64);
    assert_eq!(metric(&mut c, "kes_http_connections_refused_busy"), 0);
    let closed = hostile.iter().filter(|s| closed_by_server(s)).count()
        + idle.iter().filter(|c| closed_by_server(&c.tls.sock)).count();
    assert!(
        closed as u64 >= evicted.min(8),
        "{closed} hostile connections closed, {evicted} evictions"
    );
}

#[test]
fn one_source_cannot_take_more_than_its_share() {
    const CAP: usize = 8;
    let srv = start(CAP);
    // Source A takes every slot while it is alone.
    let mut a: Vec<TcpStream> = (0..CAP).map(|_| connect_from([127, 0, 0, 2], srv.addr)).collect();
    // Source B gets its share (CAP / 2 sources) by evicting A's.
    let mut b: Vec<Client> = (0..CAP / 2)
        .map(|_| tls_over(connect_from([127, 0, 0, 3], srv.addr), &srv.server_cert, &srv.admin))
        .collect();
    for c in &mut b {
        assert_eq!(c.get("/version").status, 200);
    }
    // A keeps opening connections: each one costs A one of its own, never one of B's.
    for _ in 0..20 {
        a.push(connect_from([127, 0, 0, 2], srv.addr));
    }
    // Wait until the server has taken all of them from its accept queue.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&mut b[0], "kes_http_connections_accepted") < (CAP + CAP / 2 + 20) as u64 {
        assert!(Instant::now() < deadline, "the flood was never accepted");
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in &mut b {
        assert_eq!(c.get("/version").status, 200, "B's kept-alive connections survive");
    }
    let open_a = a.iter().filter(|s| !closed_by_server(s)).count();
    assert!(open_a <= CAP / 2, "source A holds {open_a} of {CAP} slots");
    let evicted = metric(&mut b[0], "kes_http_connections_evicted_handshake");
    assert!(evicted >= 20, "evicted {evicted}");
    // Said in the log, rate-limited: far fewer lines than evictions.
    let out = srv.output();
    let lines =
        out.lines().filter(|l| l.contains("http: connection limit reached: evicted")).count();
    assert!(
        lines >= 1 && (lines as u64) < evicted / 4,
        "{lines} log lines for {evicted} evictions:\n{out}"
    );
    assert!(
        out.contains(
            "{\"level\":\"WARN\",\"msg\":\"http: connection limit reached: evicted 1 unproductive"
        ),
        "{out}"
    );
}

#[test]
fn a_request_being_handled_is_never_evicted() {
    const CAP: usize = 4;
    let vault = fake_vault::FakeVault::start();
    let store = std::sync::Arc::new(
        kes::keystore::azure::AzureStore::new(
            &kes::keystore::azure::AzureConfig {
                endpoint: vault.url(),
                credentials: kes::keystore::azure::AzureCredentials::ClientSecret {
                    tenant_id: vault.tenant_id(),
                    client_id: vault.client_id(),
                    client_secret: zeroize::Zeroizing::new(vault.client_secret()),
                },
            },
            {
                let mut o = kes::keystore::azure::AzureOptions::new();
                o.system_ca_file = None;
                o.extra_ca_files = vec![vault.ca_file().to_path_buf()];
                o.authority_host_override = Some(vault.authority());
                o
            },
        )
        .unwrap(),
    );
    let srv = TestServer::start_store_capped("", store, CAP);
    let mut slow = srv.admin();
    assert_eq!(slow.get("/version").status, 200);
    // Every vault call now takes 2 s; the create below is handled for at least that long.
    vault.set_latency(Duration::from_secs(2));
    let before = vault.counts().values().sum::<usize>();
    slow.send_raw(b"PUT /v1/key/create/slow HTTP/1.1\r\nHost: kes\r\n\r\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while vault.counts().values().sum::<usize>() == before {
        assert!(Instant::now() < deadline, "the request never reached the vault");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The request is being handled. Flood the cap with idle connections, many times over.
    let flood: Vec<TcpStream> =
        (0..4 * CAP).map(|_| TcpStream::connect(srv.addr).unwrap()).collect();
    let r = slow.read_reply().unwrap();
    assert_eq!((r.status, r.text()), (200, String::new()));
    assert!(vault.names().iter().any(|n| n.contains("slow")), "{:?}", vault.names());
    vault.set_latency(Duration::ZERO);
    let closed = flood.iter().filter(|s| closed_by_server(s)).count();
    assert!(closed >= 3 * CAP - 1, "only {closed} flood connections were evicted");
    drop(flood);
    let text = srv.admin().get("/v1/metrics").text();
    assert!(text.contains("kes_http_connections_refused_busy 0\n"), "{text}");
}

#[test]
fn at_a_cap_of_busy_connections_newcomers_are_refused_at_once() {
    let srv = TestServer::start_with("", 2);
    // Log streams are requests being handled for as long as they last.
    let mut streams: Vec<Client> = (0..2).map(|_| srv.admin()).collect();
    for s in &mut streams {
        s.send_raw(b"GET /v1/log/error HTTP/1.1\r\nHost: kes\r\n\r\n").unwrap();
        assert_eq!(s.read_head().unwrap().0, 200);
    }
    let mut extra = TcpStream::connect(srv.addr).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut b = [0u8; 16];
    assert_eq!(extra.read(&mut b).unwrap_or(0), 0, "refused connection must be closed");
    drop(streams);
    // Capacity comes back once the streams end.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = srv.admin();
        if c.send_raw(b"GET /v1/metrics HTTP/1.1\r\nHost: kes\r\n\r\n").is_ok()
            && let Ok(r) = c.read_reply()
        {
            assert!(r.text().contains("kes_http_connections_refused_busy "), "{}", r.text());
            assert!(!r.text().contains("kes_http_connections_refused_busy 0\n"));
            break;
        }
        assert!(Instant::now() < deadline, "capacity never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}
