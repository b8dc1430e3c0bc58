//! The three slow-client attacks of issue 10 against the real binary, with a healthy client
//! alongside: N hostile connections from several loopback source addresses, every one the
//! server closes re-opened at once, while one healthy mTLS client runs `generate` (a fresh
//! connection for every 5th request, keep-alive otherwise). Prints the healthy client's
//! p50/p99/errors and the server's peak threads/RSS for each phase. Asserts nothing.
//!
//!     cargo build --release
//!     cargo run --release --example attack -- target/release/kes [hostile] [seconds] [sources] [server flags...]
//!
//! Defaults: 2000 hostile connections, 15 s per phase, 20 source addresses (127.0.0.2…);
//! the healthy client comes from 127.0.0.1. Run as root (or with CAP_IPC_LOCK) for mlock.
//! The run is bounded: 5 phases of `seconds` each plus a few seconds of settling.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Client, ClientId};
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a hostile byte waits for the next (the attacker: one byte every 3 s).
const TRICKLE_GAP: Duration = Duration::from_secs(3);
/// How often each hostile thread looks for connections the server closed.
const SWEEP: Duration = Duration::from_millis(50);
/// Hostile threads: each keeps `hostile / HOSTILE_THREADS` connections.
const HOSTILE_THREADS: usize = 4;
/// Bound on any one blocking step of the healthy client or of an attacker's setup.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Attack {
    /// TCP connect, then a real ClientHello one byte every 3 s.
    TrickledHello,
    /// Full mTLS handshake, then a request head one byte every 3 s.
    TrickledHead,
    /// Full mTLS handshake, one `GET /version`, then silence on a kept-alive connection.
    SilentKeepAlive,
}

impl Attack {
    fn label(self) -> &'static str {
        match self {
            Attack::TrickledHello => "trickled ClientHello",
            Attack::TrickledHead => "trickled head after handshake",
            Attack::SilentKeepAlive => "silent kept-alive",
        }
    }
}

struct Target {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    id: ClientId,
}

fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(to) = to else { return Err(std::io::ErrorKind::Unsupported.into()) };
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(from.into(), 0)))?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn tls_client(t: &Target) -> rustls::ClientConnection {
    let name = ServerName::try_from("127.0.0.1").unwrap();
    rustls::ClientConnection::new(common::client_config(&t.cert, Some(&t.id)), name).unwrap()
}

/// One hostile connection.
struct Hostile {
    sock: TcpStream,
    tls: Option<rustls::ClientConnection>,
    sent: usize,
    next: Instant,
}

fn open_hostile(t: &Target, attack: Attack, from: [u8; 4], hello: &[u8]) -> Option<Hostile> {
    let mut sock = connect_from(from, t.addr).ok()?;
    let mut tls = None;
    match attack {
        Attack::TrickledHello => {
            sock.write_all(&hello[..1]).ok()?;
        }
        Attack::TrickledHead | Attack::SilentKeepAlive => {
            let mut conn = tls_client(t);
            while conn.is_handshaking() {
                conn.complete_io(&mut sock).ok()?;
            }
            if attack == Attack::SilentKeepAlive {
                let mut s = rustls::Stream::new(&mut conn, &mut sock);
                s.write_all(b"GET /version HTTP/1.1\r\nHost: kes\r\n\r\n").ok()?;
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).ok()?;
                if !buf[..n].starts_with(b"HTTP/1.1 200") {
                    return None;
                }
            }
            tls = Some(conn);
        }
    }
    sock.set_nonblocking(true).ok()?;
    Some(Hostile { sock, tls, sent: 1, next: Instant::now() + TRICKLE_GAP })
}

/// Whether the server closed (or answered, which it only does when closing) `h`.
fn gone(h: &Hostile) -> bool {
    let mut b = [0u8; 1];
    match h.sock.peek(&mut b) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Sends the next trickled byte; false when the connection is dead.
fn trickle(h: &mut Hostile, attack: Attack, hello: &[u8], head: &[u8]) -> bool {
    match attack {
        Attack::TrickledHello => {
            let b = hello[h.sent % hello.len()];
            h.sent += 1;
            (&h.sock).write(&[b]).is_ok()
        }
        Attack::TrickledHead => {
            let Some(conn) = h.tls.as_mut() else { return false };
            let b = head[h.sent % head.len()];
            h.sent += 1;
            if conn.writer().write_all(&[b]).is_err() {
                return false;
            }
            let mut sock = &h.sock;
            conn.write_tls(&mut sock).is_ok()
        }
        Attack::SilentKeepAlive => true,
    }
}

fn hostile_thread(
    t: Arc<Target>,
    attack: Attack,
    slots: Vec<[u8; 4]>,
    stop: Arc<AtomicBool>,
    reopened: Arc<AtomicU64>,
) {
    let hello = {
        let mut conn = tls_client(&t);
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    };
    let head = format!("GET /version HTTP/1.1\r\nHost: kes\r\nX-Pad: {}\r\n\r\n", "a".repeat(4000));
    let head = head.into_bytes();
    let mut conns: Vec<Option<Hostile>> = slots.iter().map(|_| None).collect();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for (i, c) in conns.iter_mut().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let dead = match c {
                None => true,
                Some(h) if gone(h) => true,
                Some(h) if h.next <= now => {
                    h.next = now + TRICKLE_GAP;
                    !trickle(h, attack, &hello, &head)
                }
                Some(_) => false,
            };
            if dead {
                if c.is_some() {
                    reopened.fetch_add(1, Ordering::Relaxed);
                }
                *c = open_hostile(&t, attack, slots[i], &hello);
            }
        }
        std::thread::sleep(SWEEP);
    }
}

/// The healthy client: `generate` in a loop, a fresh connection for every 5th request.
fn healthy(t: Arc<Target>, stop: Arc<AtomicBool>, out: Arc<Mutex<(Vec<Duration>, u64)>>) {
    let body = "{\"context\":\"eyJidWNrZXQiOiJoZWFsdGh5In0=\"}";
    let req = format!(
        "PUT /v1/key/generate/healthy HTTP/1.1\r\nHost: kes\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut conn: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if n.is_multiple_of(5) {
            conn = None;
        }
        n += 1;
        let result = (|| -> std::io::Result<u16> {
            if conn.is_none() {
                let sock = connect_from([127, 0, 0, 1], t.addr)?;
                // As Go's clients (MinIO, kms-go) do by default: without it, Nagle holds
                // the request behind the handshake's last flight for a delayed ACK (~40 ms).
                sock.set_nodelay(true)?;
                conn = Some(Client::from_parts(rustls::StreamOwned::new(tls_client(&t), sock)));
            }
            let c = conn.as_mut().unwrap();
            c.send_raw(req.as_bytes())?;
            Ok(c.read_reply()?.status)
        })();
        let mut o = out.lock().unwrap();
        match result {
            Ok(200) => o.0.push(started.elapsed()),
            _ => {
                o.1 += 1;
                conn = None;
            }
        }
    }
}

fn metrics(t: &Target) -> String {
    let Ok(sock) = connect_from([127, 0, 0, 1], t.addr) else { return String::new() };
    let mut c = Client::from_parts(rustls::StreamOwned::new(tls_client(t), sock));
    if c.send_raw(b"GET /v1/metrics HTTP/1.1\r\nHost: kes\r\n\r\n").is_err() {
        return String::new();
    }
    c.read_reply().map(|r| r.text()).unwrap_or_default()
}

fn sum_family(text: &str, family: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Runs one phase; returns the printed line.
fn phase(
    t: &Arc<Target>,
    pid: u32,
    attack: Option<Attack>,
    hostile: usize,
    sources: u8,
    secs: u64,
) -> String {
    let stop = Arc::new(AtomicBool::new(false));
    let reopened = Arc::new(AtomicU64::new(0));
    let before = metrics(t);
    let mut threads = Vec::new();
    if let Some(attack) = attack {
        let per = hostile / HOSTILE_THREADS;
        for k in 0..HOSTILE_THREADS {
            let slots: Vec<[u8; 4]> = (0..per)
                .map(|i| [127, 0, 0, 2 + ((k * per + i) % usize::from(sources)) as u8])
                .collect();
            let (t, stop, reopened) = (t.clone(), stop.clone(), reopened.clone());
            threads
                .push(std::thread::spawn(move || hostile_thread(t, attack, slots, stop, reopened)));
        }
        // Let the attack build up before measuring the healthy client.
        std::thread::sleep(Duration::from_secs(3));
    }
    let samples = Arc::new(Mutex::new((Vec::new(), 0u64)));
    let healthy_stop = Arc::new(AtomicBool::new(false));
    let h = {
        let (t, s, o) = (t.clone(), healthy_stop.clone(), samples.clone());
        std::thread::spawn(move || healthy(t, s, o))
    };
    let (mut rss, mut thr) = (0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        rss = rss.max(common::proc_status(pid, "VmRSS:"));
        thr = thr.max(common::proc_status(pid, "Threads:"));
        std::thread::sleep(Duration::from_millis(100));
    }
    healthy_stop.store(true, Ordering::Relaxed);
    let _ = h.join();
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        let _ = th.join();
    }
    let after = metrics(t);
    let evicted = sum_family(&after, "kes_http_connections_evicted")
        .saturating_sub(sum_family(&before, "kes_http_connections_evicted"));
    let refused = sum_family(&after, "kes_http_connections_refused")
        .saturating_sub(sum_family(&before, "kes_http_connections_refused"));
    let mut o = samples.lock().unwrap();
    o.0.sort();
    let pct =
        |p: usize| o.0.get(o.0.len().saturating_sub(1) * p / 100).copied().unwrap_or_default();
    format!(
        "{:<30} healthy: {:>6} ok, {:>4} errors, p50 {:>7.2} ms, p99 {:>7.2} ms | server peak: {:>5} threads, RSS {:>4} MiB | evicted {}, refused {}, attacker re-opens {}",
        attack.map(Attack::label).unwrap_or("no attack"),
        o.0.len(),
        o.1,
        pct(50).as_secs_f64() * 1e3,
        pct(99).as_secs_f64() * 1e3,
        thr,
        rss / 1024,
        evicted,
        refused,
        reopened.load(Ordering::Relaxed),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args.get(1).cloned().unwrap_or_else(|| "target/release/kes".into());
    let hostile: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(15);
    let sources: u8 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(20).clamp(1, 200);
    let flags: Vec<&str> = args.iter().skip(5).map(String::as_str).collect();
    let srv = common::PackagedServer::start(&bin, "attack", &flags);
    let (port, mlock) = (srv.port, srv.mlock);
    let pid = srv.child.id();
    let t = Arc::new(Target {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        cert: srv.server_cert.clone(),
        id: srv.admin.clone(),
    });
    {
        let sock = connect_from([127, 0, 0, 1], t.addr).unwrap();
        let mut c = Client::from_parts(rustls::StreamOwned::new(tls_client(&t), sock));
        assert_eq!(c.request("PUT", "/v1/key/create/healthy", None).status, 200);
    }
    let idle = common::proc_status(pid, "VmRSS:");
    let idle_heap = common::heap_kib(pid);
    println!(
        "server {bin} {}, mlock {}, idle RSS {} MiB, heap {idle_heap} KiB; {hostile} hostile connections from {sources} addresses, {secs} s per phase",
        flags.join(" "),
        if mlock { "on" } else { "off" },
        idle / 1024
    );
    println!("{}", phase(&t, pid, None, 0, sources, secs));
    for attack in [Attack::TrickledHello, Attack::TrickledHead, Attack::SilentKeepAlive] {
        println!("{}", phase(&t, pid, Some(attack), hostile, sources, secs));
    }
    std::thread::sleep(Duration::from_secs(3));
    println!("{}", phase(&t, pid, None, 0, sources, secs));
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "after the attacks: RSS {} MiB (idle was {} MiB), heap {} KiB (idle was {idle_heap} KiB), {} threads",
        common::proc_status(pid, "VmRSS:") / 1024,
        idle / 1024,
        common::heap_kib(pid),
        common::proc_status(pid, "Threads:")
    );
}
