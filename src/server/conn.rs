//! One connection: TLS handshake under a deadline, then HTTP/1.1 requests with hard limits,
//! each handed to `api::handle`. Runs on its own named thread; a panic while serving is
//! caught here, logged without secrets, and ends only this connection.

use super::Shared;
use crate::api::{self, ClientCert, Routed};
use crate::auth::{Identity, x509};
use crate::config::Level;
use crate::http::{
    self, Body, BodyFraming, ChunkError, ChunkedDecoder, HeadError, Method, Response,
};
use rustls::{ServerConnection, StreamOwned};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A client must finish the TLS handshake within this (Go's server uses its
/// ReadHeaderTimeout, 5 s, for the handshake too).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Once a request has started, its head must arrive within this (upstream: 5 s).
pub const READ_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A kept-alive connection may wait this long for its next request (upstream: 90 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on reading a body for routes without a timeout.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on one write to a log-stream subscriber; a reader that stalls longer is dropped.
pub const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle log stream checks whether its client went away.
pub const STREAM_POLL: Duration = Duration::from_millis(500);
/// Bodies of refused requests (404, 405) up to this size are drained to keep the
/// connection; larger ones close it.
pub const DISCARD_LIMIT: u64 = 64 * 1024;
/// After refusing a request whose body was not read (over the limit, bad framing, a bad
/// head), the server stops writing and keeps reading and discarding for at most this long
/// before closing. Closing with unread input makes the kernel send a reset, which can
/// destroy the refusal before the client reads it; a client that is still uploading gets
/// to finish (loopback: milliseconds for a few MB) and reads the 4xx instead.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(3);
/// At most this many bytes are discarded while lingering, however fast the client sends.
pub const LINGER_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Read buffer size.
const READ_CHUNK: usize = 8 * 1024;

type Tls = StreamOwned<ServerConnection, TcpStream>;

/// Serves one accepted TCP connection to completion.
pub fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let peer_ip = stream.peer_addr().ok().map(|a| a.ip());
    let _ = stream.set_nodelay(true);
    let config = shared.tls();
    let Ok(conn) = ServerConnection::new(config) else { return };
    let mut tls = StreamOwned::new(conn, stream);
    match handshake(&mut tls) {
        Ok(()) => {}
        Err(e) => {
            shared.state().obs.log(
                Level::INFO,
                &format!("http: TLS handshake error from {}: {e}", ip_text(peer_ip)),
            );
            return;
        }
    }
    let chain = tls.conn.peer_certificates().unwrap_or_default();
    let cert = ClientCert::from_chain(chain);
    if cert == ClientCert::None && chain.first().is_some_and(|c| x509::is_ca(c.as_ref())) {
        // Only the first certificate, whose key signed the handshake, can identify a client,
        // and a CA:TRUE one (openssl req -x509 makes those by default) does not. Say so,
        // once per connection.
        shared.state().obs.log(
            Level::INFO,
            &format!(
                "http: client {} presented a CA certificate (BasicConstraints CA:TRUE) as its first \
                 certificate, which is not a client identity; create the client certificate with \
                 'kes identity new' or with CA:FALSE",
                ip_text(peer_ip)
            ),
        );
    }
    if let (ClientCert::One(id), Some(first)) = (&cert, chain.first()) {
        note_flaws(&shared, first.as_ref(), id, peer_ip);
    }
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut unread = false;
    loop {
        let state = shared.state();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            one_request(&mut tls, &mut buf, &state, &cert, peer_ip)
        }));
        match outcome {
            Ok(Next::KeepAlive) => {
                // The previous request's bytes past the buffer's length go now, not when
                // the connection ends.
                crate::sys::wipe::wipe_spare(&mut buf);
                continue;
            }
            Ok(Next::Close) => break,
            Ok(Next::CloseUnread) => {
                unread = true;
                break;
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                state.obs.log(
                    Level::ERROR,
                    &format!("http: panic serving {}: {what}", ip_text(peer_ip)),
                );
                let r = crate::api::error::error_response(500, "internal server error");
                let _ = write_response(&mut tls, &r, false, 1, Method::Get);
                break;
            }
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.conn.complete_io(&mut tls.sock);
    if unread {
        linger(&mut tls.sock);
    }
    let _ = tls.sock.shutdown(std::net::Shutdown::Both);
}

/// Graceful close after an early refusal: end the write side (the client sees the response,
/// close_notify and FIN), then discard what the client still sends, bounded by
/// [`LINGER_TIMEOUT`] and [`LINGER_MAX_BYTES`], so that closing sends no reset.
fn linger(sock: &mut TcpStream) {
    if sock.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER_TIMEOUT;
    let mut scratch = [0u8; READ_CHUNK];
    let mut discarded = 0u64;
    while discarded < LINGER_MAX_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match sock.read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n as u64,
        }
    }
}

/// Counts a client certificate's flaws (validity, key usage, self-signature) and logs them
/// once per identity. Only reached with `tls.client_validity: log`: `enforce` refused the
/// certificate during the handshake.
fn note_flaws(shared: &Shared, cert_der: &[u8], id: &Identity, peer_ip: Option<IpAddr>) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let flaws = x509::flaws(cert_der, now);
    if flaws.is_empty() {
        return;
    }
    let labels: Vec<&str> = flaws.iter().map(|f| f.label()).collect();
    let state = shared.state();
    if state.obs.cert_flaws.record(id.as_str(), &labels) {
        let what: Vec<&str> = flaws.iter().map(|f| f.describe()).collect();
        state.obs.log(
            Level::WARN,
            &format!(
                "http: client {} with identity {id} uses a certificate that {}; accepted as \
                 upstream accepts it (set tls.client_validity: enforce to refuse such \
                 certificates); logged once per identity",
                ip_text(peer_ip),
                what.join(" and ")
            ),
        );
    }
}

fn ip_text(ip: Option<IpAddr>) -> String {
    ip.map(|i| i.to_string()).unwrap_or_else(|| "unknown".into())
}

fn handshake(tls: &mut Tls) -> std::io::Result<()> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    while tls.conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(ErrorKind::TimedOut, "handshake timed out"));
        }
        tls.sock.set_read_timeout(Some(left))?;
        tls.sock.set_write_timeout(Some(left))?;
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(())
}

enum Next {
    KeepAlive,
    Close,
    /// Close, but the client may still be sending what was not read: [`linger`] first.
    CloseUnread,
}

/// Reads into `buf` until `f(buf)` is satisfied, with a deadline.
fn read_more(tls: &mut Tls, buf: &mut Vec<u8>, deadline: Instant) -> std::io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::Error::new(ErrorKind::TimedOut, "read deadline exceeded"));
    }
    tls.sock.set_read_timeout(Some(left))?;
    let start = buf.len();
    buf.resize(start + READ_CHUNK, 0);
    let r = tls.read(&mut buf[start..]);
    match r {
        Ok(n) => {
            buf.truncate(start + n);
            Ok(n)
        }
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
}

fn plain(status: u16) -> Response {
    let text = format!("{status} {}", http::reason(status));
    Response::with_body(status, "text/plain; charset=utf-8", text.into_bytes())
}

fn one_request(
    tls: &mut Tls,
    buf: &mut Vec<u8>,
    state: &api::State,
    cert: &ClientCert,
    peer_ip: Option<IpAddr>,
) -> Next {
    // Wait for the first byte of the next request (idle keep-alive), then the whole head.
    let mut deadline = Instant::now() + IDLE_TIMEOUT;
    let mut started = !buf.is_empty();
    if started {
        deadline = Instant::now() + READ_HEADER_TIMEOUT;
    }
    let (head, used) = loop {
        match http::parse_head(buf) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(e) => {
                let response = match e {
                    HeadError::TooLarge => plain(431),
                    HeadError::Version => plain(505),
                    HeadError::Framing("unsupported Transfer-Encoding") => plain(501),
                    // As Go's server words them: "400 Bad Request: missing required Host header".
                    HeadError::Malformed(why) | HeadError::Framing(why) => {
                        let text = format!("400 Bad Request: {why}");
                        Response::with_body(400, "text/plain; charset=utf-8", text.into_bytes())
                    }
                };
                let _ = write_response(tls, &response, false, 1, Method::Get);
                return Next::CloseUnread;
            }
        }
        match read_more(tls, buf, deadline) {
            Ok(0) => return Next::Close,
            Ok(_) => {
                if !started {
                    started = true;
                    deadline = Instant::now() + READ_HEADER_TIMEOUT;
                }
            }
            Err(_) => {
                if started {
                    let _ = write_response(tls, &plain(408), false, 1, Method::Get);
                }
                return Next::Close;
            }
        }
    };
    buf.drain(..used);

    let route = match api::lookup(state, &head) {
        Routed::Route(r) => r,
        Routed::Respond(response) => {
            let drained = discard_body(tls, buf, head.framing);
            let keep = head.keep_alive && drained;
            let _ = write_response(tls, &response, keep, head.minor_version, head.method.clone());
            return match (keep, drained) {
                (true, _) => Next::KeepAlive,
                (false, true) => Next::Close,
                (false, false) => Next::CloseUnread,
            };
        }
    };

    let body_deadline =
        Instant::now() + if route.timeout.is_zero() { BODY_TIMEOUT } else { route.timeout };
    if head.framing != BodyFraming::None
        && route.max_body > 0
        && head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        && buf.is_empty()
    {
        let _ = tls.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").and_then(|_| tls.flush());
    }
    let (body, complete) = match read_body(tls, buf, head.framing, route.max_body, body_deadline) {
        Ok(b) => b,
        Err(_) => return Next::Close,
    };

    let write_timeout = if route.timeout.is_zero() { STREAM_WRITE_TIMEOUT } else { route.timeout };
    let _ = tls.sock.set_write_timeout(Some(write_timeout));
    let response = api::handle(state, route, &head, &body, cert, peer_ip);
    let keep = head.keep_alive && complete && !matches!(response.body, Body::Stream(_));
    if write_response(tls, &response, keep, head.minor_version, head.method.clone()).is_err() {
        return Next::Close;
    }
    if let Body::Stream(stream) = response.body {
        pump(tls, stream);
        return Next::Close;
    }
    match (keep, complete) {
        (true, _) => Next::KeepAlive,
        (false, true) => Next::Close,
        (false, false) => Next::CloseUnread,
    }
}

/// Reads a body bounded by `max_body`. Returns the bytes and whether the body was read
/// completely (an over-limit body is truncated, the handler then fails to decode it as
/// upstream's limited reader makes it fail, and the connection is closed afterwards).
fn read_body(
    tls: &mut Tls,
    buf: &mut Vec<u8>,
    framing: BodyFraming,
    max_body: usize,
    deadline: Instant,
) -> std::io::Result<(Vec<u8>, bool)> {
    match framing {
        BodyFraming::None => Ok((Vec::new(), true)),
        BodyFraming::Length(n) => {
            let want = usize::try_from(n).unwrap_or(usize::MAX);
            let limit = want.min(max_body);
            while buf.len() < limit {
                if read_more(tls, buf, deadline)? == 0 {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
            }
            let body: Vec<u8> = buf.drain(..limit).collect();
            if want > limit {
                // Unread rest of an oversized body: the connection cannot be reused.
                buf.clear();
                return Ok((body, false));
            }
            Ok((body, true))
        }
        BodyFraming::Chunked => {
            let mut dec = ChunkedDecoder::new(max_body);
            loop {
                match dec.feed(buf) {
                    Ok(used) => {
                        buf.drain(..used);
                    }
                    Err(ChunkError::TooLarge) => {
                        buf.clear();
                        return Ok((dec.data, false));
                    }
                    Err(ChunkError::Malformed) => {
                        buf.clear();
                        return Ok((Vec::new(), false));
                    }
                }
                if dec.is_done() {
                    return Ok((dec.data, true));
                }
                if read_more(tls, buf, deadline)? == 0 {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }
}

/// Drains a small body of a refused request so the connection can be reused.
fn discard_body(tls: &mut Tls, buf: &mut Vec<u8>, framing: BodyFraming) -> bool {
    match framing {
        BodyFraming::None => true,
        BodyFraming::Length(n) if n <= DISCARD_LIMIT => {
            let deadline = Instant::now() + READ_HEADER_TIMEOUT;
            read_body(tls, buf, framing, DISCARD_LIMIT as usize, deadline)
                .is_ok_and(|(_, complete)| complete)
        }
        _ => false,
    }
}

fn write_response(
    tls: &mut Tls,
    r: &Response,
    keep: bool,
    minor: u8,
    method: Method,
) -> std::io::Result<()> {
    let date = http::http_date(time::OffsetDateTime::now_utc());
    let mut bytes = r.head_bytes(keep, minor, &date);
    if method == Method::Head
        && let Body::Bytes(b) = &r.body
    {
        bytes.truncate(bytes.len() - b.len());
    }
    tls.write_all(&bytes)?;
    tls.flush()
}

/// Writes streamed events as chunks until the client goes away or stalls.
fn pump(tls: &mut Tls, mut stream: Box<dyn http::EventStream>) {
    let _ = tls.sock.set_write_timeout(Some(STREAM_WRITE_TIMEOUT));
    loop {
        match stream.next(STREAM_POLL) {
            Some(event) => {
                if tls.write_all(&http::chunk(&event)).and_then(|_| tls.flush()).is_err() {
                    return;
                }
            }
            None => {
                if client_gone(tls) {
                    return;
                }
            }
        }
    }
}

/// Whether the client closed its side: a read with a tiny timeout returning EOF or an
/// error other than "would block".
fn client_gone(tls: &mut Tls) -> bool {
    if tls.sock.set_read_timeout(Some(Duration::from_millis(1))).is_err() {
        return true;
    }
    let mut scratch = [0u8; 512];
    match tls.read(&mut scratch) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}
