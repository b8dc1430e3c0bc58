//! Load generator for `bench/vs-nginx.sh`: drives any HTTPS server that wants a client
//! certificate (ours, the nginx reference or the Go reference) with the same client, so
//! that they are compared like for like. Prints figures; asserts nothing about speed.
//!
//!     loadgen --addr 127.0.0.1:7373 --ca server.crt --cert client.crt --key client.key \
//!             [--path /v1/key/generate/k] [--body '{...}'] [--method M] [--conns 16] \
//!             [--secs 5] [--warmup 1] [--fresh] [--pid PID]... [--blocking] [--once]
//!
//! * keep-alive (default): `--conns` mTLS connections, each sending the next request as
//!   soon as the answer is read. One thread drives them all with epoll, as an event-loop
//!   client does, so that the load generator costs less per request than the servers it
//!   measures; `--blocking` uses one blocking thread per connection instead (the method of
//!   earlier figures, which pays a context switch per request on the client side too);
//! * `--fresh`: every request on a new TCP connection with a full mTLS handshake (session
//!   resumption off), `Connection: close`;
//! * the server is trusted if it presents exactly a certificate of `--ca` (pinned, as the
//!   script's self-signed one is: no path building), otherwise by the usual chain check;
//!   handshake signatures are always checked;
//! * `--pid`: the server's processes; over the measured window, their CPU time
//!   (utime+stime from `/proc/PID/stat`) per answered request is `cpu_us`, the share of one
//!   core it is `srv_util`, the kernel's part of it (stime) `srv_sys`, and their threads'
//!   context switches per request (`/proc/PID/task/*/status`) `srv_cs`; the same figures
//!   of the load generator itself are `lg_cpu_us`, `lg_util`, `lg_sys` and `lg_cs`;
//! * `--once`: one request, prints the status and the body, exits 1 unless 200 (the script
//!   uses it to wait for a server, create the key and fetch a ciphertext).
//!
//! Output (one line): `rps=… p50_us=… p99_us=… cpu_us=… n=… errors=… body=… tls=…
//! srv_util=… srv_sys=… srv_cs=… lg_cpu_us=… lg_util=… lg_sys=… lg_cs=…`.
//! Only 200 answers count; anything else (or a broken connection) is an error.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Threads warm up, then measure, then stop.
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Linux reports process CPU time in clock ticks of 1/100 s (USER_HZ) on every platform
/// this runs on.
const TICK: Duration = Duration::from_millis(10);

/// Gives up on an answer after this long (a stuck server must not hang the benchmark).
const IO_TIMEOUT: Duration = Duration::from_secs(10);

struct Opts {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    request: Vec<u8>,
    conns: usize,
    secs: f64,
    warmup: f64,
    fresh: bool,
    pids: Vec<u32>,
    once: bool,
    blocking: bool,
}

fn usage(why: &str) -> ! {
    eprintln!("loadgen: {why}");
    eprintln!(
        "usage: loadgen --addr HOST:PORT --ca FILE --cert FILE --key FILE [--path P] [--body B] \
         [--method M] [--conns N] [--secs S] [--warmup S] [--fresh] [--pid PID]... [--blocking] [--once]"
    );
    std::process::exit(2)
}

fn parse() -> Opts {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut ca, mut cert, mut key) = (None, None, None, None);
    let (mut path, mut body, mut method) = ("/version".to_string(), None::<String>, None);
    let (mut conns, mut secs, mut warmup, mut fresh, mut once) = (16, 5.0, 1.0, false, false);
    let mut blocking = false;
    let mut pids = Vec::new();
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--addr" => addr = Some(value().parse().unwrap_or_else(|_| usage("bad --addr"))),
            "--ca" => ca = Some(value()),
            "--cert" => cert = Some(value()),
            "--key" => key = Some(value()),
            "--path" => path = value(),
            "--body" => body = Some(value()),
            "--method" => method = Some(value()),
            "--conns" => conns = value().parse().unwrap_or_else(|_| usage("bad --conns")),
            "--secs" => secs = value().parse().unwrap_or_else(|_| usage("bad --secs")),
            "--warmup" => warmup = value().parse().unwrap_or_else(|_| usage("bad --warmup")),
            "--pid" => pids.push(value().parse().unwrap_or_else(|_| usage("bad --pid"))),
            "--fresh" => fresh = true,
            "--once" => once = true,
            "--blocking" => blocking = true,
            _ => usage(&format!("unknown argument {flag}")),
        }
    }
    let need =
        |v: Option<String>, name: &str| v.unwrap_or_else(|| usage(&format!("{name} missing")));
    let (ca, cert, key) = (need(ca, "--ca"), need(cert, "--cert"), need(key, "--key"));
    let method = method.unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into());
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    if fresh {
        request.push_str("Connection: close\r\n");
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    Opts {
        addr: addr.unwrap_or_else(|| usage("--addr missing")),
        config: client_config(&ca, &cert, &key, fresh),
        request: request.into_bytes(),
        conns,
        secs,
        warmup,
        fresh,
        pids,
        once,
        blocking,
    }
}

fn fail<T>(what: &str, e: impl std::fmt::Display) -> T {
    usage(&format!("{what}: {e}"))
}

fn client_config(ca: &str, cert: &str, key: &str, fresh: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let mut roots_der = Vec::new();
    for c in CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| fail(ca, e)) {
        let c: CertificateDer<'static> = c.unwrap_or_else(|e| fail(ca, e));
        roots.add(c.clone()).unwrap_or_else(|e| fail(ca, e));
        roots_der.push(c);
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap_or_else(|e| fail(cert, e))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| fail(cert, e));
    let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| fail(key, e));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pinned: Vec<CertificateDer<'static>> = roots_der;
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap_or_else(|e| fail(ca, e));
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| fail("tls", e))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pinned, webpki }))
        .with_client_auth_cert(chain, key)
        .unwrap_or_else(|e| fail("client certificate", e));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    if fresh {
        // Every connection pays the full handshake, as a client without a ticket does.
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(cfg)
}

/// Accepts a server that presents exactly one of the `--ca` certificates (pinning, as the
/// benchmark's self-signed server certificate is), and checks any other chain the usual
/// way. Handshake signatures are always checked. A pinned certificate needs no path
/// building and no signature check of the certificate itself, which keeps the load
/// generator's cost of a fresh handshake below the server's.
#[derive(Debug)]
struct Pinned {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if intermediates.is_empty() && self.pinned.iter().any(|p| p == end_entity) {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(o: &Opts) -> std::io::Result<Stream> {
    let sock = TcpStream::connect(o.addr)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))?;
    let name = ServerName::try_from("localhost").expect("static name");
    let conn = rustls::ClientConnection::new(o.config.clone(), name)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// The status, head length and body length of a complete response head in `buf`, or
/// `None` while the head is incomplete (Content-Length framing; none means no body).
fn response_head(buf: &[u8]) -> Option<(u16, usize, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = r.parse(buf) else { return None };
    let len = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(0);
    Some((r.code.unwrap_or(0), head, len))
}

/// Sends the request and reads one answer. Returns the status and the body.
fn exchange(s: &mut Stream, request: &[u8], buf: &mut Vec<u8>) -> std::io::Result<(u16, Vec<u8>)> {
    s.write_all(request)?;
    s.flush()?;
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some((status, head, len)) = response_head(buf) else { continue };
        while buf.len() < head + len {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        return Ok((status, buf[head..head + len].to_vec()));
    }
}

/// What the kernel says processes used: CPU time (utime+stime, whole process, ended
/// threads included), the kernel's part of it (stime), and context switches (voluntary
/// and not, summed over the threads alive when read: a thread that ended inside the
/// window takes its count with it, so the figure is a lower bound where threads come and go).
#[derive(Clone, Copy, Default)]
struct Usage {
    cpu: Duration,
    sys: Duration,
    switches: u64,
}

impl Usage {
    fn of(pids: &[u32]) -> Usage {
        let mut u = Usage::default();
        for pid in pids {
            let Some((user, sys)) = ticks(*pid) else { continue };
            u.cpu += TICK * u32::try_from(user + sys).unwrap_or(u32::MAX);
            u.sys += TICK * u32::try_from(sys).unwrap_or(u32::MAX);
            u.switches += switches(*pid);
        }
        u
    }

    fn since(self, before: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(before.cpu),
            sys: self.sys.saturating_sub(before.sys),
            switches: self.switches.saturating_sub(before.switches),
        }
    }
}

/// utime and stime of a process in clock ticks (fields 14 and 15 of `/proc/PID/stat`).
fn ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ').skip(11);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// Context switches of every thread of a process, from `/proc/PID/task/*/status`.
fn switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    let mut n = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    n
}

fn tls_name(c: &rustls::ClientConnection) -> String {
    let v = c.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
    let c = c.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())).unwrap_or_default();
    format!("{v}/{c}")
}

fn worker(
    o: &Opts,
    phase: &AtomicU8,
    errors: &AtomicU64,
    start: &Barrier,
) -> (Vec<u32>, usize, String) {
    let mut lat = Vec::with_capacity(1 << 16);
    let mut buf = Vec::with_capacity(4096);
    let mut tls = String::new();
    let mut body_len = 0;
    let mut conn: Option<Stream> = None;
    start.wait();
    loop {
        let p = phase.load(Ordering::Relaxed);
        if p == STOP {
            break;
        }
        let t = Instant::now();
        let s = match conn.take() {
            Some(s) => s,
            None => match connect(o) {
                Ok(s) => s,
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let mut s = s;
        match exchange(&mut s, &o.request, &mut buf) {
            Ok((200, body)) => {
                if p == MEASURE {
                    lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
                if tls.is_empty() {
                    tls = tls_name(&s.conn);
                    body_len = body.len();
                }
                if o.fresh {
                    s.conn.send_close_notify();
                    let _ = s.conn.write_tls(&mut s.sock);
                } else {
                    conn = Some(s);
                }
            }
            Ok(_) | Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    (lat, body_len, tls)
}

/// One connection of the event loop: its TLS state, socket, the answer read so far, when
/// its request was sent and whether that was inside the measured window.
struct Slot {
    tls: rustls::ClientConnection,
    sock: TcpStream,
    buf: Vec<u8>,
    sent: Instant,
    measured: bool,
    /// Waiting for the socket to take more TLS bytes (EPOLLOUT armed).
    blocked: bool,
}

/// How often the event loop looks at the phase, stuck answers and connections to reopen
/// when no socket is ready.
const TICK_MS: u16 = 10;

/// All `--conns` connections driven by one thread with epoll, as an event-loop client
/// does: a ready socket is served without a thread switch, so the load generator costs
/// less per request than one blocking thread per connection and is less often the limit.
fn event_loop(
    o: &Opts,
    phase: &AtomicU8,
    errors: &AtomicU64,
    start: &Barrier,
) -> (Vec<u32>, usize, String) {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll");
    let mut slots: Vec<Option<Slot>> = (0..o.conns).map(|_| None).collect();
    let mut lat = Vec::with_capacity(1 << 20);
    let (mut body_len, mut tls) = (0, String::new());
    let mut events = vec![EpollEvent::empty(); o.conns.max(1)];
    let mut chunk = vec![0u8; 16 * 1024];
    let mut last_sweep = Instant::now();
    start.wait();
    // Opens a connection in slot `i` and sends its first request.
    let open = |i: usize, p: u8| -> Option<Slot> {
        let sock = TcpStream::connect(o.addr).ok()?;
        sock.set_nodelay(true).ok()?;
        sock.set_nonblocking(true).ok()?;
        let name = ServerName::try_from("localhost").expect("static name");
        let tls = rustls::ClientConnection::new(o.config.clone(), name).ok()?;
        epoll.add(&sock, EpollEvent::new(EpollFlags::EPOLLIN, i as u64)).ok()?;
        let mut slot = Slot {
            tls,
            sock,
            buf: Vec::with_capacity(4096),
            sent: Instant::now(),
            measured: false,
            blocked: false,
        };
        send(&mut slot, &o.request, p == MEASURE).ok()?;
        flush(&epoll, i, &mut slot).ok()?;
        Some(slot)
    };
    loop {
        let p = phase.load(Ordering::Relaxed);
        if p == STOP {
            break;
        }
        if last_sweep.elapsed() >= Duration::from_millis(TICK_MS.into()) {
            last_sweep = Instant::now();
            for (i, slot) in slots.iter_mut().enumerate() {
                if slot.as_ref().is_some_and(|s| s.sent.elapsed() > IO_TIMEOUT) {
                    errors.fetch_add(1, Ordering::Relaxed);
                    *slot = None;
                }
                if slot.is_none() {
                    *slot = open(i, p);
                    if slot.is_none() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        let ready = match epoll.wait(&mut events, TICK_MS) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => panic!("epoll_wait: {e}"),
        };
        for ev in &events[..ready] {
            let i = usize::try_from(ev.data()).expect("slot index");
            let Some(slot) = slots[i].as_mut() else { continue };
            match serve(&epoll, i, slot, ev.events(), &mut chunk) {
                Ok(None) => {}
                Ok(Some((200, len))) => {
                    if slot.measured {
                        lat.push(
                            u32::try_from(slot.sent.elapsed().as_micros()).unwrap_or(u32::MAX),
                        );
                    }
                    if tls.is_empty() {
                        tls = tls_name(&slot.tls);
                        body_len = len;
                    }
                    let again = if o.fresh {
                        slot.tls.send_close_notify();
                        let _ = slot.tls.write_tls(&mut slot.sock);
                        false
                    } else {
                        send(slot, &o.request, p == MEASURE).is_ok()
                            && flush(&epoll, i, slot).is_ok()
                    };
                    if !again {
                        slots[i] = open(i, p);
                    }
                }
                Ok(Some(_)) | Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    slots[i] = open(i, p);
                }
            }
        }
    }
    (lat, body_len, tls)
}

/// Queues a request on a connection (rustls holds it until the handshake is done).
fn send(slot: &mut Slot, request: &[u8], measured: bool) -> std::io::Result<()> {
    slot.buf.clear();
    slot.sent = Instant::now();
    slot.measured = measured;
    slot.tls.writer().write_all(request)
}

/// Writes what TLS has to send until the socket would block; then waits for EPOLLOUT.
fn flush(epoll: &nix::sys::epoll::Epoll, i: usize, slot: &mut Slot) -> std::io::Result<()> {
    use nix::sys::epoll::{EpollEvent, EpollFlags};
    let mut blocked = false;
    while slot.tls.wants_write() {
        match slot.tls.write_tls(&mut slot.sock) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                blocked = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    if blocked != slot.blocked {
        let flags =
            if blocked { EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT } else { EpollFlags::EPOLLIN };
        epoll.modify(&slot.sock, &mut EpollEvent::new(flags, i as u64))?;
        slot.blocked = blocked;
    }
    Ok(())
}

/// Reads what the socket has, lets TLS answer (handshake), and returns the status and
/// body length once the whole answer is in.
fn serve(
    epoll: &nix::sys::epoll::Epoll,
    i: usize,
    slot: &mut Slot,
    ready: nix::sys::epoll::EpollFlags,
    chunk: &mut [u8],
) -> std::io::Result<Option<(u16, usize)>> {
    use nix::sys::epoll::EpollFlags;
    // The peer closed (after its answer, with `Connection: close`): what came before
    // the end still counts.
    let mut closed = false;
    if ready.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) {
        loop {
            match slot.tls.read_tls(&mut slot.sock) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {
                    slot.tls.process_new_packets().map_err(std::io::Error::other)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        loop {
            match slot.tls.reader().read(chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => slot.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
    let done = response_head(&slot.buf)
        .filter(|&(_, head, len)| slot.buf.len() >= head + len)
        .map(|(status, _, len)| (status, len));
    match done {
        Some(_) => Ok(done),
        None if closed => Err(std::io::ErrorKind::UnexpectedEof.into()),
        None => flush(epoll, i, slot).map(|()| None),
    }
}

fn main() {
    let o = Arc::new(parse());
    if o.once {
        let mut buf = Vec::new();
        let r = connect(&o).and_then(|mut s| exchange(&mut s, &o.request, &mut buf));
        match r {
            Ok((status, body)) => {
                println!("{status} {}", String::from_utf8_lossy(&body));
                std::process::exit(if status == 200 { 0 } else { 1 });
            }
            Err(e) => {
                println!("000 {e}");
                std::process::exit(1);
            }
        }
    }
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let errors = Arc::new(AtomicU64::new(0));
    let threads = if o.blocking { o.conns } else { 1 };
    let start = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (o, phase, errors, start) =
                (o.clone(), phase.clone(), errors.clone(), start.clone());
            let run = if o.blocking { worker } else { event_loop };
            std::thread::spawn(move || run(&o, &phase, &errors, &start))
        })
        .collect();
    start.wait();
    std::thread::sleep(Duration::from_secs_f64(o.warmup));
    let errors_before = errors.load(Ordering::Relaxed);
    let me = [std::process::id()];
    let (server0, self0, t0) = (Usage::of(&o.pids), Usage::of(&me), Instant::now());
    phase.store(MEASURE, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs_f64(o.secs));
    // Read before STOP, while every worker thread (and its switch count) is still alive.
    let (server, own) = (Usage::of(&o.pids).since(server0), Usage::of(&me).since(self0));
    let elapsed = t0.elapsed();
    phase.store(STOP, Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed) - errors_before;
    let mut all = Vec::new();
    let (mut body_len, mut tls) = (0, String::new());
    for h in handles {
        let (lat, b, t) = h.join().expect("worker");
        all.extend(lat);
        if tls.is_empty() {
            (body_len, tls) = (b, t);
        }
    }
    all.sort_unstable();
    let n = all.len();
    let pct = |p: usize| all.get(n * p / 100).copied().unwrap_or(0);
    let rps = n as f64 / elapsed.as_secs_f64();
    let per_request = |x: f64| if n == 0 { 0.0 } else { x / n as f64 };
    let share = |part: Duration, whole: Duration| {
        if whole.is_zero() { 0.0 } else { part.as_secs_f64() / whole.as_secs_f64() }
    };
    let (srv, cpu_us) = (server, per_request(server.cpu.as_secs_f64() * 1e6));
    println!(
        "rps={rps:.0} p50_us={} p99_us={} cpu_us={cpu_us:.1} n={n} errors={errors} body={body_len} \
         tls={tls} srv_util={:.2} srv_sys={:.2} srv_cs={:.2} lg_cpu_us={:.1} lg_util={:.2} \
         lg_sys={:.2} lg_cs={:.2}",
        pct(50),
        pct(99),
        share(srv.cpu, elapsed),
        share(srv.sys, srv.cpu),
        per_request(srv.switches as f64),
        per_request(own.cpu.as_secs_f64() * 1e6),
        share(own.cpu, elapsed),
        share(own.sys, own.cpu),
        per_request(own.switches as f64),
    );
}
