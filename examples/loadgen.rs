//! Load generator for `bench/vs-nginx.sh`: drives any HTTPS server that wants a client
//! certificate (ours or the nginx reference) with the same client, so that the two are
//! compared like for like. Prints figures; asserts nothing about speed.
//!
//!     loadgen --addr 127.0.0.1:7373 --ca server.crt --cert client.crt --key client.key \
//!             [--path /v1/key/generate/k] [--body '{...}'] [--method POST] \
//!             [--conns 16] [--secs 5] [--warmup 1] [--fresh] [--pid PID]... [--once]
//!
//! * keep-alive (default): `--conns` threads, each with one mTLS connection, sending the
//!   next request as soon as the answer is read;
//! * `--fresh`: every request on a new TCP connection with a full mTLS handshake (session
//!   resumption off), `Connection: close`;
//! * `--pid`: the server's processes; their CPU time (utime+stime from `/proc/PID/stat`)
//!   over the measured window, divided by the requests answered, is printed as `cpu_us`;
//! * `--once`: one request, prints the status and the body, exits 1 unless 200 (the script
//!   uses it to wait for a server, create the key and fetch a ciphertext).
//!
//! Output (one line): `rps=… p50_us=… p99_us=… cpu_us=… n=… errors=… body=… tls=…`.
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
}

fn usage(why: &str) -> ! {
    eprintln!("loadgen: {why}");
    eprintln!(
        "usage: loadgen --addr HOST:PORT --ca FILE --cert FILE --key FILE [--path P] [--body B] \
         [--method M] [--conns N] [--secs S] [--warmup S] [--fresh] [--pid PID]... [--once]"
    );
    std::process::exit(2)
}

fn parse() -> Opts {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut ca, mut cert, mut key) = (None, None, None, None);
    let (mut path, mut body, mut method) = ("/version".to_string(), None::<String>, None);
    let (mut conns, mut secs, mut warmup, mut fresh, mut once) = (16, 5.0, 1.0, false, false);
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
    }
}

fn fail<T>(what: &str, e: impl std::fmt::Display) -> T {
    usage(&format!("{what}: {e}"))
}

fn client_config(ca: &str, cert: &str, key: &str, fresh: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| fail(ca, e)) {
        let c: CertificateDer<'static> = c.unwrap_or_else(|e| fail(ca, e));
        roots.add(c).unwrap_or_else(|e| fail(ca, e));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap_or_else(|e| fail(cert, e))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| fail(cert, e));
    let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| fail(key, e));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| fail("tls", e))
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap_or_else(|e| fail("client certificate", e));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    if fresh {
        // Every connection pays the full handshake, as a client without a ticket does.
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(cfg)
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

/// Sends the request and reads one answer (Content-Length framing). Returns the status
/// and the body.
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
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = r.parse(buf) else { continue };
        let status = r.code.unwrap_or(0);
        let len = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
            .unwrap_or(0);
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

/// utime+stime of the processes, summed.
fn cpu(pids: &[u32]) -> Duration {
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    TICK * u32::try_from(ticks).unwrap_or(u32::MAX)
}

fn tls_name(s: &Stream) -> String {
    let v = s.conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
    let c =
        s.conn.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())).unwrap_or_default();
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
                    tls = tls_name(&s);
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
    let start = Arc::new(Barrier::new(o.conns + 1));
    let handles: Vec<_> = (0..o.conns)
        .map(|_| {
            let (o, phase, errors, start) =
                (o.clone(), phase.clone(), errors.clone(), start.clone());
            std::thread::spawn(move || worker(&o, &phase, &errors, &start))
        })
        .collect();
    start.wait();
    std::thread::sleep(Duration::from_secs_f64(o.warmup));
    let errors_before = errors.load(Ordering::Relaxed);
    let (cpu0, t0) = (cpu(&o.pids), Instant::now());
    phase.store(MEASURE, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs_f64(o.secs));
    phase.store(STOP, Ordering::Relaxed);
    let (cpu1, elapsed) = (cpu(&o.pids), t0.elapsed());
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
    let cpu_us = if n == 0 || o.pids.is_empty() {
        0.0
    } else {
        (cpu1 - cpu0).as_secs_f64() * 1e6 / n as f64
    };
    println!(
        "rps={rps:.0} p50_us={} p99_us={} cpu_us={cpu_us:.1} n={n} errors={errors} body={body_len} tls={tls}",
        pct(50),
        pct(99)
    );
}
