//! One connection: TLS handshake under a deadline, then HTTP/1.1 requests with hard limits,
//! each handed to `api::handle`. Runs on its own named thread; a panic while serving is
//! caught here, logged without secrets, and ends only this connection.
//!
//! Every phase has an *absolute* deadline (handshake, head, body, response write), checked
//! between single socket reads and writes: rustls's unbuffered state machine is driven one
//! socket read or write at a time with the time left as the socket timeout, so a client
//! trickling one byte at a time gains nothing. The connection owns its TLS buffers
//! ([`Tls`]): records are read into one receive buffer, bounded to one record after the
//! handshake and wiped as records are consumed, and each response is encrypted into one
//! send buffer and leaves in one `write`. The phase is published to the connection's
//! admission [`Slot`] at each change, so that the accept thread can evict unproductive
//! connections at the cap (`admission`).

use super::admission::{Phase, Slot};
use super::{Shared, StateView};
use crate::api::{self, ClientCert, Routed};
use crate::auth::attr::ChainFacts;
use crate::auth::{Identity, x509};
use crate::http::{self, Body, BodyFraming, ChunkError, ChunkedDecoder, Method, Response};
use crate::obs::Level;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls_pki_types::UnixTime;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

/// A client must finish the TLS handshake within this, counted from the accept (Go's server
/// uses its ReadHeaderTimeout, 5 s, for the handshake too).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A request head must be complete within this, counted from the end of the handshake for
/// the first request and from the first byte after an idle wait for later ones (as Go's
/// ReadHeaderTimeout, upstream: 5 s).
pub const READ_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A kept-alive connection may wait this long for its next request (upstream: 90 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on reading a body for routes without a timeout.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on writing one response (or one event to a log-stream subscriber) for routes
/// without a timeout; a reader that stalls longer is dropped. Routes with a timeout use it.
pub const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on writing an error answer (400, 408, 431…) or the TLS close_notify before the
/// connection closes: a client that does not read must not keep the thread.
pub const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
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
/// A connection's buffers keep at most this much memory between requests: after a large
/// body they are dropped (and wiped by the allocator) rather than wiped in full after every
/// later request.
const KEPT_BUFFER: usize = 16 * 1024;
/// A socket timeout already set is kept for the next blocking read or write while it ends
/// that call at most this long after the phase's deadline (and is at least half the time
/// left; a call that times out before the deadline is simply made again). A kept-alive
/// connection then sets its timeouts once instead of calling `setsockopt` twice per
/// request, and no deadline stretches by more than this.
const TIMEOUT_OVERSHOOT: Duration = Duration::from_millis(1);

/// Largest TLS record on the wire: 16 KiB of plaintext, the 2 KiB of expansion TLS allows
/// and the 5-byte header (rustls's own bound; a longer record header is refused by rustls).
const MAX_RECORD: usize = 16 * 1024 + 2048 + 5;
/// A connection's receive buffer starts at this size, and one socket read takes at most what
/// fits (rustls's buffered API read 4 KiB at a time too). Large records grow it, up to the
/// limits below, and it shrinks back between requests.
const RECV_INITIAL: usize = 4 * 1024;
/// During the handshake, a handshake message (a client's certificate chain) is joined in
/// place from the records it spans. rustls refuses handshake messages over 64 KiB, so the
/// receive buffer never needs more than that and one record's worth of headers and rest.
const RECV_HANDSHAKE_LIMIT: usize = 0x1_0000 + MAX_RECORD;
/// After the handshake, complete records are consumed as soon as they arrive and at most one
/// incomplete record waits in the receive buffer: a client cannot make it grow past one
/// record, whatever it sends.
const RECV_TRAFFIC_LIMIT: usize = MAX_RECORD;
/// Plaintext encrypted per call into the send buffer: one full record (rustls fragments at
/// 16 KiB).
const SEND_PIECE: usize = 16 * 1024;
/// Room reserved per record for its header, explicit nonce, tag and content type (at most
/// 29 bytes for the suites we offer; a short estimate is corrected by rustls's exact size).
const RECORD_OVERHEAD: usize = 64;
/// The send buffer is written out before it would grow past this (only responses larger
/// than three records reach it: a big key list or a log stream); smaller responses leave
/// in one `write`.
const SEND_LIMIT: usize = 4 * (SEND_PIECE + RECORD_OVERHEAD);

/// The TLS session over the connection's socket, driven by hand through rustls's unbuffered
/// API: the connection owns its two buffers, reads the socket straight into `rx`, where
/// rustls decrypts records in place, and encrypts responses into `tx`, which leaves in one
/// `write` per response. Every socket call is bounded by the phase's deadline (never
/// `complete_io`, whose internal read loop would let a trickle outlive any deadline).
struct Tls<'a> {
    conn: UnbufferedServerConnection,
    sock: &'a TcpStream,
    slot: &'a Slot,
    shared: &'a Shared,
    /// The socket's receive and send timeouts as last set.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// Received TLS bytes not yet consumed: between calls, at most one incomplete record
    /// (ciphertext); consumed records, decrypted in place, are wiped as they go.
    rx: RecvBuf,
    /// Encrypted records waiting for the socket (ciphertext only: rustls encrypts elsewhere
    /// and encodes the record here). Written out before every read and after every response.
    tx: Vec<u8>,
    tx_len: usize,
    /// Plaintext that arrived while the caller was not reading (a request sent right behind
    /// the client's Finished), handed to the next `read_plain`.
    pending: Vec<u8>,
    /// The client's close_notify arrived: no more plaintext will.
    peer_closed: bool,
    /// A TLS error ended the session (its alert is sent): rustls is not run again, as it
    /// would meet the same bad record and queue a second fatal alert.
    failed: bool,
    /// The buffer responses are written into, reused (and wiped) from one to the next.
    out: Vec<u8>,
    /// The `Date` header's text and the second it is for: made again once a second.
    date: (i64, String),
}

/// A connection's receive buffer: `buf[..filled]` holds TLS bytes as read from the socket.
/// `buf` is always initialized (zeroed when it grows), so reads go straight into it.
struct RecvBuf {
    buf: Vec<u8>,
    filled: usize,
}

impl RecvBuf {
    fn new() -> RecvBuf {
        RecvBuf { buf: vec![0; RECV_INITIAL], filled: 0 }
    }

    /// Drops the first `n` bytes (records rustls consumed, decrypted in place) and wipes the
    /// bytes the move left behind: no plaintext stays in the buffer.
    fn discard(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let end = self.filled;
        self.buf.copy_within(n..end, 0);
        self.filled = end - n;
        crate::sys::wipe::wipe(&mut self.buf[self.filled..end]);
    }

    /// Room for the next socket read, growing the buffer (doubling, up to `limit`) when it is
    /// full. `None` when it is full at `limit`: what waits cannot be a record rustls accepts.
    fn spare(&mut self, limit: usize) -> Option<&mut [u8]> {
        if self.filled == self.buf.len() {
            if self.buf.len() >= limit {
                return None;
            }
            let grown = (self.buf.len() * 2).clamp(RECV_INITIAL, limit);
            self.buf.resize(grown, 0);
        }
        Some(&mut self.buf[self.filled..])
    }

    /// Gives back what a large record or a certificate chain made it grow to, once what
    /// waits fits the initial size again (the allocator wipes the old block).
    fn trim(&mut self) {
        if self.buf.len() > KEPT_BUFFER && self.filled <= RECV_INITIAL {
            let mut small = vec![0; RECV_INITIAL];
            small[..self.filled].copy_from_slice(&self.buf[..self.filled]);
            self.buf = small;
        }
    }
}

/// What rustls needs from the caller next.
enum Step {
    /// Plaintext was appended.
    Plain,
    /// The handshake needs more bytes from the client.
    More,
    /// The handshake is done (as far as our side goes) and nothing complete waits: a request
    /// may be read or a response written (what was asked for is in `tx`).
    Open,
    /// The client sent close_notify (reported once).
    PeerClosed,
    /// Both sides sent close_notify.
    Closed,
}

/// Makes sure the next blocking call ends within `left` (plus [`TIMEOUT_OVERSHOOT`]):
/// keeps the timeout `kept` when it fits, else sets `left` with `set`.
fn fit_timeout(
    kept: &mut Option<Duration>,
    left: Duration,
    set: impl FnOnce(Option<Duration>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if kept.is_some_and(|k| k <= left + TIMEOUT_OVERSHOOT && k >= left / 2) {
        return Ok(());
    }
    *kept = None;
    set(Some(left))?;
    *kept = Some(left);
    Ok(())
}

/// Why a deadline-bound read or write stopped.
fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(ErrorKind::TimedOut, format!("{what} deadline exceeded"))
}

fn left(deadline: Instant, what: &str) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() { Err(timed_out(what)) } else { Ok(left) }
}

impl Tls<'_> {
    /// Runs rustls over the received bytes until it needs the caller. Plaintext goes to
    /// `plain` (or to `pending` when the caller is not reading); handshake records and alerts
    /// are encoded into `tx`; once application data may be sent, `send` is encrypted into
    /// `tx` (as much as fits [`SEND_LIMIT`], the slice advancing past it) or, with `close`,
    /// a close_notify. Consumed records are discarded (and wiped) from `rx`.
    fn advance(
        &mut self,
        mut plain: Option<&mut Vec<u8>>,
        send: &mut &[u8],
        close: bool,
    ) -> Result<Step, rustls::Error> {
        if self.failed {
            return Err(rustls::Error::General("TLS session failed".into()));
        }
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.rx.buf[..self.rx.filled]);
            let step = match state {
                Err(e) => {
                    self.rx.discard(discard);
                    return Err(e);
                }
                Ok(ConnectionState::EncodeTlsData(mut record)) => {
                    loop {
                        match record.encode(&mut self.tx[self.tx_len..]) {
                            Ok(n) => self.tx_len += n,
                            Err(EncodeError::InsufficientSize(s)) => {
                                self.tx.resize(self.tx_len + s.required_size, 0);
                                continue;
                            }
                            Err(EncodeError::AlreadyEncoded) => {}
                        }
                        break;
                    }
                    None
                }
                // Sent with the next flush, which comes before any read and after every
                // response, in the order encoded.
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    t.done();
                    None
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    let to = match plain.as_deref_mut() {
                        Some(to) => to,
                        None => &mut self.pending,
                    };
                    while let Some(record) = records.next_record() {
                        let record = record?;
                        discard += record.discard;
                        to.extend_from_slice(record.payload);
                    }
                    Some(Step::Plain)
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Some(Step::PeerClosed)
                }
                // Both sides sent close_notify: nothing more is read or written.
                Ok(ConnectionState::Closed) => {
                    self.peer_closed = true;
                    Some(Step::Closed)
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Step::More),
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    if close {
                        let n = loop {
                            match w.queue_close_notify(&mut self.tx[self.tx_len..]) {
                                Ok(n) => break n,
                                Err(EncryptError::InsufficientSize(s)) => {
                                    self.tx.resize(self.tx_len + s.required_size, 0)
                                }
                                Err(EncryptError::EncryptExhausted) => {
                                    return Err(rustls::Error::EncryptError);
                                }
                            }
                        };
                        self.tx_len += n;
                    }
                    while !send.is_empty() {
                        let piece = &send[..send.len().min(SEND_PIECE)];
                        let room = piece.len() + RECORD_OVERHEAD;
                        if self.tx_len > 0 && self.tx_len + room > SEND_LIMIT {
                            break;
                        }
                        if self.tx.len() < self.tx_len + room {
                            self.tx.resize(self.tx_len + room, 0);
                        }
                        match w.encrypt(piece, &mut self.tx[self.tx_len..]) {
                            Ok(n) => {
                                self.tx_len += n;
                                *send = &send[piece.len()..];
                            }
                            // A key update of ours queued ahead of the record, or a longer
                            // record than estimated: rustls says how much it needs.
                            Err(EncryptError::InsufficientSize(s)) => {
                                self.tx.resize(self.tx_len + s.required_size, 0);
                            }
                            Err(EncryptError::EncryptExhausted) => {
                                return Err(rustls::Error::EncryptError);
                            }
                        }
                    }
                    Some(Step::Open)
                }
                // Early data is off (`max_early_data_size = 0`).
                Ok(_) => return Err(rustls::Error::General("unexpected early data".into())),
            };
            self.rx.discard(discard);
            if let Some(step) = step {
                return Ok(step);
            }
        }
    }

    /// Sends the alert rustls queued for `e`, briefly, and turns `e` into the error that ends
    /// the connection.
    fn fail(&mut self, e: rustls::Error) -> std::io::Error {
        if std::mem::replace(&mut self.failed, true) {
            return std::io::Error::new(ErrorKind::InvalidData, e);
        }
        let status = self.conn.process_tls_records(&mut self.rx.buf[..self.rx.filled]);
        if let Ok(ConnectionState::EncodeTlsData(mut alert)) = status.state {
            let mut encoded = alert.encode(&mut self.tx[self.tx_len..]);
            if let Err(EncodeError::InsufficientSize(s)) = encoded {
                self.tx.resize(self.tx_len + s.required_size, 0);
                encoded = alert.encode(&mut self.tx[self.tx_len..]);
            }
            if let Ok(n) = encoded {
                self.tx_len += n;
            }
        }
        let _ = self.flush(close_deadline());
        std::io::Error::new(ErrorKind::InvalidData, e)
    }

    /// One socket read into the receive buffer before `deadline`. `Ok(0)` at end of stream.
    fn fill(&mut self, deadline: Instant) -> std::io::Result<usize> {
        let limit =
            if self.conn.is_handshaking() { RECV_HANDSHAKE_LIMIT } else { RECV_TRAFFIC_LIMIT };
        loop {
            let sock = self.sock;
            fit_timeout(&mut self.read_timeout, left(deadline, "read")?, |t| {
                sock.set_read_timeout(t)
            })?;
            let Some(room) = self.rx.spare(limit) else {
                return Err(std::io::Error::new(
                    ErrorKind::InvalidData,
                    "TLS record larger than the receive buffer's limit",
                ));
            };
            match (&*sock).read(room) {
                Ok(n) => {
                    self.rx.filled += n;
                    return Ok(n);
                }
                // Nothing read: the deadline, or a kept timeout shorter than the time left.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes the send buffer out, one socket write at a time, before `deadline`.
    /// What was written leaves the buffer even when the deadline cuts the rest: no record is
    /// ever sent twice.
    fn flush(&mut self, deadline: Instant) -> std::io::Result<()> {
        let mut at = 0;
        let result = loop {
            if at == self.tx_len {
                break Ok(());
            }
            let sock = self.sock;
            let timeout = left(deadline, "write").and_then(|l| {
                fit_timeout(&mut self.write_timeout, l, |t| sock.set_write_timeout(t))
            });
            if let Err(e) = timeout {
                break Err(e);
            }
            match (&*sock).write(&self.tx[at..self.tx_len]) {
                Ok(0) => break Err(ErrorKind::WriteZero.into()),
                Ok(n) => at += n,
                // Nothing written: the deadline, or a kept timeout shorter than the time left.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.tx.copy_within(at..self.tx_len, 0);
        self.tx_len -= at;
        result
    }

    /// Completes the handshake before `deadline`.
    fn handshake(&mut self, deadline: Instant) -> std::io::Result<()> {
        loop {
            match self.advance(None, &mut &[][..], false) {
                Ok(Step::Open | Step::PeerClosed) if !self.conn.is_handshaking() => break,
                // A request right behind the client's Finished went to `pending`.
                Ok(Step::Plain) => continue,
                Ok(_) => {}
                Err(e) => return Err(self.fail(e)),
            }
            self.flush(deadline)?;
            if self.fill(deadline)? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
        }
        // The last flight.
        self.flush(deadline)?;
        self.rx.trim();
        Ok(())
    }

    /// Appends the plaintext of every complete record received to `out` (decrypted in place
    /// in the receive buffer, at most a buffer's worth), reading the socket as needed before
    /// `deadline`. `Ok(0)` when the client closed. `on_bytes` runs once when the first bytes
    /// arrive on the wire.
    fn read_plain(
        &mut self,
        out: &mut Vec<u8>,
        deadline: Instant,
        on_bytes: &mut dyn FnMut() -> Option<Instant>,
    ) -> std::io::Result<usize> {
        if !self.pending.is_empty() {
            // Dropped, and so wiped by the allocator, once handed over.
            let pending = std::mem::take(&mut self.pending);
            out.extend_from_slice(&pending);
            return Ok(pending.len());
        }
        let start = out.len();
        let mut deadline = deadline;
        loop {
            loop {
                match self.advance(Some(out), &mut &[][..], false) {
                    Ok(Step::Plain) => {}
                    Ok(_) => break,
                    Err(e) => return Err(self.fail(e)),
                }
            }
            if out.len() > start {
                return Ok(out.len() - start);
            }
            if self.peer_closed {
                return Ok(0);
            }
            // Key update answers rustls wants to send.
            self.flush(deadline)?;
            if self.fill(deadline)? == 0 {
                return Ok(0);
            }
            if let Some(d) = on_bytes() {
                deadline = d;
            }
        }
    }

    /// Encrypts `bytes` and writes them before `deadline`: one `write` when they fit
    /// [`SEND_LIMIT`].
    fn write_all(&mut self, mut bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
        loop {
            match self.advance(None, &mut bytes, false) {
                Ok(Step::Open) => {
                    self.flush(deadline)?;
                    if bytes.is_empty() {
                        return Ok(());
                    }
                }
                Ok(Step::Plain | Step::PeerClosed) => {}
                Ok(Step::More | Step::Closed) => return Err(ErrorKind::NotConnected.into()),
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// Sends close_notify before `deadline`.
    fn close(&mut self, deadline: Instant) -> std::io::Result<()> {
        loop {
            match self.advance(None, &mut &[][..], true) {
                Ok(Step::Open) => return self.flush(deadline),
                Ok(Step::Plain | Step::PeerClosed) => {}
                Ok(_) => return Ok(()),
                Err(e) => return Err(std::io::Error::new(ErrorKind::InvalidData, e)),
            }
        }
    }

    /// Between requests: gives back what a large request or response made the TLS buffers
    /// grow to (the send buffer is empty after every response).
    fn trim(&mut self) {
        self.rx.trim();
        if self.tx.len() > KEPT_BUFFER {
            self.tx = Vec::new();
        }
    }

    /// Counts a deadline that ended the connection.
    fn count_deadline(&self, e: &std::io::Error, phase: usize) {
        if e.kind() == ErrorKind::TimedOut {
            self.shared.conns.deadline[phase].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// [`crate::obs::DEADLINE_PHASES`] indices.
const DL_HANDSHAKE: usize = 0;
const DL_HEAD: usize = 1;
const DL_BODY: usize = 2;
const DL_WRITE: usize = 3;

/// Serves one admitted TCP connection to completion. `accepted` starts the handshake
/// deadline.
pub fn serve(slot: &Slot, shared: &Shared, accepted: Instant) {
    let stream = slot.sock();
    let peer_ip = Some(slot.ip());
    let _ = stream.set_nodelay(true);
    let config = shared.tls();
    let Ok(conn) = UnbufferedServerConnection::new(config) else { return };
    let mut tls = Tls {
        conn,
        sock: stream,
        slot,
        shared,
        read_timeout: None,
        write_timeout: None,
        rx: RecvBuf::new(),
        tx: Vec::new(),
        tx_len: 0,
        pending: Vec::new(),
        peer_closed: false,
        failed: false,
        out: Vec::new(),
        date: (0, String::new()),
    };
    if let Err(e) = tls.handshake(accepted + HANDSHAKE_TIMEOUT) {
        tls.count_deadline(&e, DL_HANDSHAKE);
        if slot.phase() != Phase::Evicted {
            shared.state().obs.log(
                Level::INFO,
                &format!("http: TLS handshake error from {}: {e}", ip_text(peer_ip)),
            );
        }
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
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
        note_flaws(shared, first.as_ref(), id, peer_ip);
    }
    // Attribute identities: what the chain proves against `tls.ca`, once per connection
    // (empty unless a policy names one; a chain verified before comes from the cache).
    let facts = match cert {
        ClientCert::One(_) => shared.state().policies.facts_of_connection(chain, UnixTime::now()),
        _ => ChainFacts::default(),
    };
    // `buf` holds the next request's bytes as they arrive, then its head while it is served
    // (the head borrows it); `rest` takes what followed the head, where the body is read.
    // They change places after each request.
    let mut buf: Vec<u8> = Vec::new();
    let mut rest: Vec<u8> = Vec::new();
    // The first head is due READ_HEADER_TIMEOUT after the handshake, not after its first
    // byte: a client that completes the handshake and then sends nothing gains nothing.
    let mut wait = Wait::Head(Instant::now() + READ_HEADER_TIMEOUT);
    let mut unread = false;
    let mut view = shared.view();
    loop {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            one_request(&mut tls, &mut buf, &mut rest, &mut view, &cert, &facts, peer_ip, wait)
        }));
        let state = &view.state;
        match outcome {
            Ok(Next::KeepAlive) => {
                // What followed the head is the start of the next request.
                std::mem::swap(&mut buf, &mut rest);
                rest.clear();
                // The previous request's bytes past the buffers' lengths go now, not when
                // the connection ends.
                for b in [&mut buf, &mut rest] {
                    if b.capacity() > KEPT_BUFFER {
                        b.shrink_to(b.len().max(RECV_INITIAL));
                    }
                    crate::sys::wipe::wipe_spare(b);
                }
                tls.trim();
                wait = Wait::Idle;
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
                let r = api::error::panicked();
                let _ = write_response(&mut tls, &r, false, 1, Method::Get, close_deadline());
                break;
            }
        }
    }
    if slot.phase() != Phase::Evicted {
        let _ = tls.close(close_deadline());
        // Lingering produces nothing: evictable like a trickling head.
        if unread && slot.enter(Phase::Head) {
            linger(stream);
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn close_deadline() -> Instant {
    Instant::now() + CLOSE_WRITE_TIMEOUT
}

/// Graceful close after an early refusal: end the write side (the client sees the response,
/// close_notify and FIN), then discard what the client still sends, bounded by
/// [`LINGER_TIMEOUT`] and [`LINGER_MAX_BYTES`], so that closing sends no reset.
fn linger(sock: &TcpStream) {
    if sock.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER_TIMEOUT;
    let mut scratch = [0u8; RECV_INITIAL];
    let mut discarded = 0u64;
    while discarded < LINGER_MAX_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*sock).read(&mut scratch) {
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

/// How the next request is awaited.
#[derive(Clone, Copy)]
enum Wait {
    /// The head is due by this instant (first request).
    Head(Instant),
    /// Kept alive: up to [`IDLE_TIMEOUT`] for the first byte, then [`READ_HEADER_TIMEOUT`].
    Idle,
}

enum Next {
    KeepAlive,
    Close,
    /// Close, but the client may still be sending what was not read: [`linger`] first.
    CloseUnread,
}

fn no_change() -> Option<Instant> {
    None
}

#[allow(clippy::too_many_arguments)]
fn one_request(
    tls: &mut Tls<'_>,
    buf: &mut Vec<u8>,
    rest: &mut Vec<u8>,
    view: &mut StateView,
    cert: &ClientCert,
    facts: &ChainFacts,
    peer_ip: Option<IpAddr>,
    wait: Wait,
) -> Next {
    // Idle keep-alive until the first byte arrives on the wire (even a partial TLS record),
    // then the head under its own absolute deadline.
    let slot = tls.slot;
    let mut started = !buf.is_empty() || matches!(wait, Wait::Head(_));
    let mut deadline = match wait {
        Wait::Head(d) => d,
        Wait::Idle if started => Instant::now() + READ_HEADER_TIMEOUT,
        Wait::Idle => Instant::now() + IDLE_TIMEOUT,
    };
    if !slot.enter(if started { Phase::Head } else { Phase::Idle }) {
        return Next::Close;
    }
    let mut evicted = false;
    // Whether any of this request reached us: a head deadline without a single byte ends
    // in a silent close, as Go does; a partial head gets 408.
    let mut got_bytes = !buf.is_empty();
    let used = loop {
        match http::head_len(buf) {
            Ok(Some(used)) => break used,
            Ok(None) => {}
            Err(e) => {
                let response = api::error::head_refused(&e);
                let _ = write_response(tls, &response, false, 1, Method::Get, close_deadline());
                return Next::CloseUnread;
            }
        }
        let mut first_byte = None;
        let mut on_bytes = || {
            got_bytes = true;
            if started {
                return None;
            }
            started = true;
            evicted = !slot.enter(Phase::Head);
            let d = Instant::now() + READ_HEADER_TIMEOUT;
            first_byte = Some(d);
            Some(d)
        };
        let r = tls.read_plain(buf, deadline, &mut on_bytes);
        if evicted {
            return Next::Close;
        }
        if let Some(d) = first_byte {
            deadline = d;
        }
        match r {
            Ok(0) => return Next::Close,
            Ok(_) => {}
            Err(e) => {
                if started {
                    tls.count_deadline(&e, DL_HEAD);
                    if e.kind() == ErrorKind::TimedOut && got_bytes {
                        let _ = write_response(
                            tls,
                            &api::error::head_timeout(),
                            false,
                            1,
                            Method::Get,
                            close_deadline(),
                        );
                    }
                }
                return Next::Close;
            }
        }
    };
    rest.clear();
    rest.extend_from_slice(&buf[used..]);
    buf.truncate(used);
    let head = match http::parse_head(buf) {
        Ok(Some((head, _))) => head,
        refused => {
            let e = refused.err().unwrap_or(http::HeadError::Malformed("malformed request head"));
            let response = api::error::head_refused(&e);
            let _ = write_response(tls, &response, false, 1, Method::Get, close_deadline());
            return Next::CloseUnread;
        }
    };
    let buf = rest;
    // The state as of this request's arrival, not of the wait before it: a reload during
    // a keep-alive idle reaches the next request.
    tls.shared.refresh(view);
    let state = &*view.state;

    let route = match api::lookup(state, &head) {
        Routed::Route(r) => r,
        Routed::Respond(response) => {
            let drained = discard_body(tls, buf, head.framing);
            let keep = head.keep_alive && drained;
            let _ = write_response(
                tls,
                &response,
                keep,
                head.minor_version,
                head.method.clone(),
                close_deadline(),
            );
            return match (keep, drained) {
                (true, _) => Next::KeepAlive,
                (false, true) => Next::Close,
                (false, false) => Next::CloseUnread,
            };
        }
    };

    let body_deadline =
        Instant::now() + if route.timeout.is_zero() { BODY_TIMEOUT } else { route.timeout };
    if head.framing != BodyFraming::None {
        if !slot.enter(Phase::Body) {
            return Next::Close;
        }
        if route.max_body > 0
            && head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            && buf.is_empty()
        {
            let _ = tls.write_all(b"HTTP/1.1 100 Continue\r\n\r\n", body_deadline);
        }
    }
    let (body, complete) = match read_body(tls, buf, head.framing, route.max_body, body_deadline) {
        Ok(b) => b,
        Err(e) => {
            tls.count_deadline(&e, DL_BODY);
            return Next::Close;
        }
    };

    // From here the request is being handled: the accept thread can no longer evict it,
    // and it is answered whatever happens at the cap.
    if !slot.enter(Phase::Busy) {
        return Next::Close;
    }
    let bytes: &[u8] = match &body {
        ReadBody::InBuf(n) => &buf[..*n],
        ReadBody::Owned(v) => v,
    };
    let response = api::handle(state, route, &head, bytes, cert, facts, peer_ip);
    if let ReadBody::InBuf(n) = body {
        // An over-limit body's unread rest cannot be framed: the connection closes.
        if complete {
            buf.drain(..n)
        } else {
            buf.drain(..)
        };
    }
    let write_timeout = if route.timeout.is_zero() { STREAM_WRITE_TIMEOUT } else { route.timeout };
    let keep = head.keep_alive && complete && !matches!(response.body, Body::Stream(_));
    let written = write_response(
        tls,
        &response,
        keep,
        head.minor_version,
        head.method.clone(),
        Instant::now() + write_timeout,
    );
    if let Err(e) = written {
        tls.count_deadline(&e, DL_WRITE);
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

/// A request body: the first bytes of the connection's buffer (a `Content-Length` body is
/// handed to the handler where it was read, not copied out), or decoded chunks.
enum ReadBody {
    InBuf(usize),
    Owned(Vec<u8>),
}

/// Reads a body bounded by `max_body`. Returns the body and whether it was read completely
/// (an over-limit body is truncated, the handler then fails to decode it as upstream's
/// limited reader makes it fail, and the connection is closed afterwards).
fn read_body(
    tls: &mut Tls<'_>,
    buf: &mut Vec<u8>,
    framing: BodyFraming,
    max_body: usize,
    deadline: Instant,
) -> std::io::Result<(ReadBody, bool)> {
    match framing {
        // `UntilClose` frames responses only; a request never has it.
        BodyFraming::None | BodyFraming::UntilClose => Ok((ReadBody::InBuf(0), true)),
        BodyFraming::Length(n) => {
            let want = usize::try_from(n).unwrap_or(usize::MAX);
            let limit = want.min(max_body);
            while buf.len() < limit {
                if tls.read_plain(buf, deadline, &mut no_change)? == 0 {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
            }
            // With `want > limit` the rest is unread: the connection cannot be reused.
            Ok((ReadBody::InBuf(limit), want <= limit))
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
                        return Ok((ReadBody::Owned(dec.data), false));
                    }
                    Err(ChunkError::Malformed) => {
                        buf.clear();
                        return Ok((ReadBody::Owned(Vec::new()), false));
                    }
                }
                if dec.is_done() {
                    return Ok((ReadBody::Owned(dec.data), true));
                }
                if tls.read_plain(buf, deadline, &mut no_change)? == 0 {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }
}

/// Drains a small body of a refused request so the connection can be reused.
fn discard_body(tls: &mut Tls<'_>, buf: &mut Vec<u8>, framing: BodyFraming) -> bool {
    match framing {
        BodyFraming::None => true,
        BodyFraming::Length(n) if n <= DISCARD_LIMIT => {
            if !tls.slot.enter(Phase::Body) {
                return false;
            }
            let deadline = Instant::now() + READ_HEADER_TIMEOUT;
            match read_body(tls, buf, framing, DISCARD_LIMIT as usize, deadline) {
                Ok((ReadBody::InBuf(n), true)) => {
                    buf.drain(..n);
                    true
                }
                _ => false,
            }
        }
        _ => false,
    }
}

fn write_response(
    tls: &mut Tls<'_>,
    r: &Response,
    keep: bool,
    minor: u8,
    method: Method,
    deadline: Instant,
) -> std::io::Result<()> {
    let now = time::OffsetDateTime::now_utc();
    if tls.date.0 != now.unix_timestamp() || tls.date.1.is_empty() {
        tls.date = (now.unix_timestamp(), http::http_date(now));
    }
    let mut out = std::mem::take(&mut tls.out);
    r.write_to(&mut out, keep, minor, &tls.date.1, method != Method::Head);
    let written = tls.write_all(&out, deadline);
    // A response may carry key material (generate, decrypt): wiped before the next one.
    out.clear();
    if out.capacity() > KEPT_BUFFER {
        out = Vec::new();
    }
    crate::sys::wipe::wipe_spare(&mut out);
    tls.out = out;
    written
}

/// Writes streamed events as chunks until the client goes away or stalls.
fn pump(tls: &mut Tls<'_>, mut stream: Box<dyn http::EventStream>) {
    loop {
        match stream.next(STREAM_POLL) {
            Some(event) => {
                let deadline = Instant::now() + STREAM_WRITE_TIMEOUT;
                if tls.write_all(&http::chunk(&event), deadline).is_err() {
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

/// Whether the client closed its side: one read with a tiny timeout returning EOF, a
/// close_notify, or an error other than "nothing yet".
fn client_gone(tls: &mut Tls<'_>) -> bool {
    // What a subscriber sends is not read; it is dropped (and wiped) here.
    let mut scratch = Vec::new();
    match tls.read_plain(&mut scratch, Instant::now() + Duration::from_millis(1), &mut no_change) {
        Ok(n) => n == 0,
        Err(e) => e.kind() != ErrorKind::TimedOut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Puts `bytes` into the receive buffer as a socket read would.
    fn receive(rx: &mut RecvBuf, bytes: &[u8]) {
        let room = rx.spare(RECV_TRAFFIC_LIMIT).unwrap();
        room[..bytes.len()].copy_from_slice(bytes);
        rx.filled += bytes.len();
    }

    #[test]
    fn consumed_records_leave_no_byte_behind_in_the_receive_buffer() {
        let mut rx = RecvBuf::new();
        // A record rustls decrypted in place (its plaintext now in the buffer), then the
        // start of the next one.
        let decrypted = b"\x17\x03\x03\x00\x30{\"plaintext\":\"c2VjcmV0IGtleSBtYXRlcmlhbA==\"}";
        let partial = b"\x17\x03\x03\x01\x00partial";
        receive(&mut rx, decrypted);
        receive(&mut rx, partial);
        rx.discard(decrypted.len());
        assert_eq!(&rx.buf[..rx.filled], partial);
        assert!(rx.buf[rx.filled..].iter().all(|&b| b == 0), "{:?}", &rx.buf[..64]);
        // Everything consumed: the whole buffer is zero again.
        rx.discard(rx.filled);
        assert_eq!(rx.filled, 0);
        assert!(rx.buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn the_receive_buffer_stops_at_its_limit_and_shrinks_between_requests() {
        let mut rx = RecvBuf::new();
        while let Some(room) = rx.spare(RECV_TRAFFIC_LIMIT) {
            let n = room.len();
            room.fill(7);
            rx.filled += n;
        }
        // A client cannot make it hold more than one record after the handshake.
        assert_eq!((rx.buf.len(), rx.filled), (RECV_TRAFFIC_LIMIT, RECV_TRAFFIC_LIMIT));
        assert!(rx.spare(RECV_TRAFFIC_LIMIT).is_none());
        // During the handshake a certificate chain may take it further, to its own limit.
        assert!(rx.spare(RECV_HANDSHAKE_LIMIT).is_some());
        rx.discard(rx.filled - 10);
        rx.trim();
        assert_eq!(rx.buf.len(), RECV_INITIAL);
        assert_eq!(&rx.buf[..rx.filled], &[7; 10]);
        assert!(rx.buf[10..].iter().all(|&b| b == 0));
        // What fits the kept size stays (no reallocation per request).
        receive(&mut rx, &[1; 100]);
        let before = rx.buf.as_ptr();
        rx.trim();
        assert_eq!(rx.buf.as_ptr(), before);
    }
}
