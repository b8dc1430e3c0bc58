//! Observability: the audit trail, the leveled error log, their `/v1/log/*` subscribers,
//! Prometheus metrics under upstream's names, and process statistics (`kes-api.md` §9.3,
//! §9.4, §9.21, §10).
//!
//! Owns: fan-out of log events to the configured writer (stdout for audit, stderr for
//! errors), to the optional hash-chained audit file ([`audit_file`]) and to bounded
//! subscriber queues. A slow subscriber never blocks a request: when
//! its queue is full the event is dropped for it and counted.
//! Must not: ever receive key material, request bodies, plaintexts or ciphertexts. Events
//! carry only paths, identities, addresses, statuses and fixed texts.

pub mod audit_file;
pub mod batch;
mod level;

use crate::gotime;
pub use level::Level;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

/// Events a subscriber may fall behind by before events are dropped for it.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// Most concurrent subscribers per stream; more are refused with 503 rather than letting
/// log fan-out cost grow without bound.
pub const MAX_SUBSCRIBERS: usize = 256;

/// Upper bounds (seconds) of the `kes_http_response_time` buckets, as upstream.
pub const RESPONSE_TIME_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 3.0, 5.0, 10.0];

/// A writer shared by log lines (stdout or stderr, or a buffer in tests).
pub type SharedWriter = Arc<Mutex<Box<dyn Write + Send>>>;

/// Fan-out of one stream (audit or error) to subscribers.
#[derive(Default)]
pub struct Hub {
    subscribers: Mutex<Vec<SyncSender<Arc<Vec<u8>>>>>,
    /// `subscribers.len()`, read without the lock: with nobody listening (the common case)
    /// a request neither takes the lock nor builds the event.
    listening: AtomicUsize,
    /// Events written to API subscribers (`kes_log_*_events`).
    pub delivered: AtomicU64,
    /// Events dropped because a subscriber was too slow.
    pub dropped: AtomicU64,
}

/// Too many subscribers already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubFull;

impl Hub {
    /// A new subscription; dropped subscriptions are pruned on the next publish.
    pub fn subscribe(&self) -> Result<Receiver<Arc<Vec<u8>>>, HubFull> {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if subs.len() >= MAX_SUBSCRIBERS {
            return Err(HubFull);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(SUBSCRIBER_QUEUE);
        subs.push(tx);
        self.listening.store(subs.len(), Ordering::Release);
        Ok(rx)
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Sends `line` (one NDJSON line) to every subscriber without blocking.
    pub fn publish(&self, line: Vec<u8>) {
        self.publish_with(|| line);
    }

    /// As [`Hub::publish`], building the line only when somebody subscribes. A subscriber
    /// that joins while an event is being published may miss that one event, as it would
    /// had it joined a moment later.
    pub fn publish_with(&self, line: impl FnOnce() -> Vec<u8>) {
        if self.listening.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if subs.is_empty() {
            return;
        }
        let line = Arc::new(line());
        subs.retain(|tx| match tx.try_send(line.clone()) {
            Ok(()) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
        self.listening.store(subs.len(), Ordering::Release);
    }
}

/// One audited request, borrowing from the request (nothing is copied unless a line is
/// written).
#[derive(Debug, Clone, Copy)]
pub struct AuditEvent<'a> {
    pub time: OffsetDateTime,
    pub method: &'a str,
    pub path: &'a str,
    pub ip: Option<std::net::IpAddr>,
    /// Empty without a client certificate.
    pub identity: &'a str,
    pub status: u16,
    pub latency: Duration,
    /// Upstream's fixed text, e.g. `secret key 'x' created`; `None` for the routes upstream
    /// describes by their request, `METHOD PATH` (written without building that string).
    pub message: Option<&'a str>,
}

impl<'a> AuditEvent<'a> {
    /// The message as up to three pieces to write one after the other: escaping works
    /// character by character, so the pieces escape as their concatenation would.
    fn message_parts(&self) -> [&'a str; 3] {
        match self.message {
            Some(m) => [m, "", ""],
            None => [self.method, " ", self.path],
        }
    }
}

/// The `flaw` labels of `kes_tls_client_cert_flaws`, one per `auth::x509::Flaw` (a server
/// test keeps the two lists equal; obs does not import auth).
pub const CLIENT_CERT_FLAWS: [&str; 4] =
    ["bad_self_signature", "expired", "no_client_auth", "not_yet_valid"];

/// Most identities remembered as already logged for a flawed client certificate. Past it,
/// new ones are counted but not logged, so a client minting certificates cannot grow the
/// set (or the log) without bound.
pub const MAX_CERT_FLAW_IDENTITIES: usize = 10_000;

/// Uses of flawed client certificates that `tls.client_validity: log` let through.
#[derive(Default)]
pub struct CertFlaws {
    counts: [AtomicU64; CLIENT_CERT_FLAWS.len()],
    logged: Mutex<std::collections::HashSet<String>>,
}

impl CertFlaws {
    /// Counts one connection with the flaws `labels`; true the first time `identity` is
    /// seen with a flaw (log it then).
    pub fn record(&self, identity: &str, labels: &[&str]) -> bool {
        for (i, name) in CLIENT_CERT_FLAWS.iter().enumerate() {
            if labels.contains(name) {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.len() >= MAX_CERT_FLAW_IDENTITIES || logged.contains(identity) {
            return false;
        }
        logged.insert(identity.to_string())
    }
}

/// Status codes counted per code: 2xx, 4xx and 5xx, indexed `status - 200`.
const COUNTED_CODES: usize = 400;

/// Request counters and the response-time histogram: atomics only, so that counting a
/// request takes no lock (every request of every connection passes here).
pub struct Metrics {
    /// Counts per status code (index `status - 200`; 3xx unused), split by class when
    /// rendered. Only codes with a count are rendered, in ascending order.
    codes: Box<[AtomicU64; COUNTED_CODES]>,
    active: AtomicI64,
    buckets: [AtomicU64; RESPONSE_TIME_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Keeps `kes_http_request_active` raised while alive.
pub struct ActiveGuard<'a>(&'a Metrics);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            codes: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            active: AtomicI64::new(0),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn begin(&self) -> ActiveGuard<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self)
    }

    /// Records one answered request. Statuses outside 2xx/4xx/5xx are not counted (upstream
    /// cannot count them either).
    pub fn observe(&self, status: u16, latency: Duration) {
        if !matches!(status / 100, 2 | 4 | 5) {
            return;
        }
        self.codes[usize::from(status - 200)].fetch_add(1, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        for (i, bound) in RESPONSE_TIME_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// Connection phases an eviction or a deadline is counted under, in label order.
pub const CONN_PHASES: [&str; 4] = ["handshake", "head", "body", "idle"];
/// Why a connection was refused at the cap, in label order.
pub const REFUSAL_REASONS: [&str; 3] = ["busy", "share", "unwinding"];
/// Phases with an absolute deadline, in label order.
pub const DEADLINE_PHASES: [&str; 4] = ["handshake", "head", "body", "write"];

/// Admission counters, owned by the server for its whole life (reloads keep them).
#[derive(Debug, Default)]
pub struct ConnStats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    /// Per [`CONN_PHASES`].
    pub evicted: [AtomicU64; 4],
    /// Per [`REFUSAL_REASONS`].
    pub refused: [AtomicU64; 3],
    /// Per [`DEADLINE_PHASES`].
    pub deadline: [AtomicU64; 4],
}

/// A copy of [`ConnStats`] for rendering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnFigures {
    pub open: u64,
    pub accepted: u64,
    pub evicted: [u64; 4],
    pub refused: [u64; 3],
    pub deadline: [u64; 4],
}

impl ConnStats {
    pub fn figures(&self) -> ConnFigures {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConnFigures {
            open: load(&self.open),
            accepted: load(&self.accepted),
            evicted: self.evicted.each_ref().map(load),
            refused: self.refused.each_ref().map(load),
            deadline: self.deadline.each_ref().map(load),
        }
    }
}

/// Everything the server reports about itself: audit, error log, metrics.
pub struct Obs {
    pub audit: Hub,
    pub errors: Hub,
    pub metrics: Metrics,
    pub cert_flaws: CertFlaws,
    audit_level: Level,
    error_level: Level,
    json: bool,
    audit_out: Option<SharedWriter>,
    /// Audit lines to `audit_out` in batches (the server's stdout) instead of one write each.
    audit_batch: Option<Arc<batch::LineBatch>>,
    error_out: Option<SharedWriter>,
    /// Lines that could not be written (closed stdout/stderr).
    pub write_failures: AtomicU64,
    /// `log.audit_file`, and whether a request must be refused when its line cannot be
    /// written (`log.audit_fail_closed`).
    audit_file: Option<(Arc<audit_file::AuditFile>, bool)>,
}

/// A fail-closed audit file could not take a request's line: the request must not be
/// served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRefused(pub String);

impl Obs {
    /// `audit_out` gets audit lines when `audit_level` ≤ INFO; `error_out` gets error-log
    /// lines at or above `error_level`. `json` selects JSON lines instead of slog text.
    pub fn new(
        audit_level: Level,
        error_level: Level,
        json: bool,
        audit_out: Option<SharedWriter>,
        error_out: Option<SharedWriter>,
    ) -> Obs {
        Obs {
            audit: Hub::default(),
            errors: Hub::default(),
            metrics: Metrics::default(),
            cert_flaws: CertFlaws::default(),
            audit_level,
            error_level,
            json,
            audit_out,
            audit_batch: None,
            error_out,
            write_failures: AtomicU64::new(0),
            audit_file: None,
        }
    }

    /// Also appends every audit record to `file` (whatever `log.audit` says); with
    /// `fail_closed`, [`Obs::audit`] waits for the line to be synced and reports failure.
    pub fn with_audit_file(mut self, file: Arc<audit_file::AuditFile>, fail_closed: bool) -> Obs {
        self.audit_file = Some((file, fail_closed));
        self
    }

    /// Audit lines go to `batch` (which owns the writer) instead of `audit_out`.
    pub fn with_audit_batch(mut self, batch: Arc<batch::LineBatch>) -> Obs {
        self.audit_batch = Some(batch);
        self
    }

    /// Whether requests must be refused before they run: the audit file is fail-closed and
    /// its last write failed.
    pub fn audit_refusing(&self) -> bool {
        self.audit_file.as_ref().is_some_and(|(f, closed)| *closed && !f.healthy())
    }

    /// An `Obs` that writes nowhere (tests, CLI).
    pub fn silent() -> Obs {
        Obs::new(Level::INFO, Level::INFO, false, None, None)
    }

    /// Whether [`Obs::audit`] would record anything (stdout, subscribers or the audit
    /// file): when not, a request need not build its audit event.
    pub fn records_audit(&self) -> bool {
        self.audit_file.is_some() || self.audit_enabled()
    }

    pub fn audit_enabled(&self) -> bool {
        self.audit_level <= Level::INFO
    }

    pub fn audit_level(&self) -> Level {
        self.audit_level
    }

    pub fn error_level(&self) -> Level {
        self.error_level
    }

    /// Records one request in the audit trail (the audit file, stdout and
    /// `/v1/log/audit`). `Err` only when a fail-closed audit file could not take the line.
    pub fn audit(&self, e: &AuditEvent) -> Result<(), AuditRefused> {
        let mut result = Ok(());
        if let Some((file, fail_closed)) = &self.audit_file {
            let line = audit_json_line(e);
            if *fail_closed {
                result = file.append_synced(line).map_err(|e| AuditRefused(e.0));
            } else {
                file.append(line);
            }
        }
        if !self.audit_enabled() {
            return result;
        }
        if self.audit_batch.is_some() || self.audit_out.is_some() {
            with_line_buffer(|line| {
                write_audit_line(line, e, self.json);
                if let Some(batch) = &self.audit_batch {
                    batch.push(line);
                } else if let Some(out) = &self.audit_out {
                    self.write_line(out, line);
                }
            });
        }
        self.audit.publish_with(|| audit_ndjson(e));
        result
    }

    /// Logs at `level` with request-free fields.
    pub fn log(&self, level: Level, msg: &str) {
        self.log_with(level, msg, &[]);
    }

    /// Logs at `level` with extra `key=value` fields (never secrets).
    pub fn log_with(&self, level: Level, msg: &str, fields: &[(&str, &str)]) {
        if level < self.error_level {
            return;
        }
        let now = OffsetDateTime::now_utc();
        let text = slog_text(now, level, msg, fields);
        if let Some(out) = &self.error_out {
            let line = if self.json { slog_json(now, level, msg, fields) } else { text.clone() };
            self.write_line(out, &line);
        }
        self.errors.publish_with(|| {
            let mut ndjson = String::from("{\"message\":");
            ndjson.push_str(&crate::gojson::go_json_string(&text));
            ndjson.push_str("}\n");
            ndjson.into_bytes()
        });
    }

    fn write_line(&self, out: &SharedWriter, line: &str) {
        let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
        if w.write_all(line.as_bytes())
            .and_then(|_| w.write_all(b"\n"))
            .and_then(|_| w.flush())
            .is_err()
        {
            self.write_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Audit lines longer than this do not keep their buffer's memory after being written (a
/// long path is rare; the usual line is about 300 bytes).
const KEPT_LINE_CAPACITY: usize = 4096;

thread_local! {
    /// The audit line being written by this (request) thread, reused from request to
    /// request: a line costs no allocation. Audit lines hold no secrets.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Runs `f` with this thread's empty line buffer (a fresh one if it is in use).
fn with_line_buffer(f: impl FnOnce(&mut String)) {
    let mut f = Some(f);
    let _ = LINE.try_with(|cell| {
        if let Ok(mut line) = cell.try_borrow_mut() {
            line.clear();
            (f.take().expect("called once"))(&mut line);
            if line.capacity() > KEPT_LINE_CAPACITY {
                *line = String::new();
            }
        }
    });
    if let Some(f) = f {
        f(&mut String::new());
    }
}

/// Whether slog's text handler quotes `v`.
fn needs_quote(v: &str) -> bool {
    v.is_empty() || v.chars().any(|c| c == ' ' || c == '"' || c == '=' || c.is_control())
}

/// Appends the text handler's form of the concatenated `parts`: as is, or quoted as Go's
/// JSON encoder escapes a string but with `<`, `>` and `&` left alone.
fn push_text_value(out: &mut String, parts: &[&str]) {
    let empty = parts.iter().all(|p| p.is_empty());
    if !empty && !parts.iter().any(|p| needs_quote(p) && !p.is_empty()) {
        parts.iter().for_each(|p| out.push_str(p));
    } else if parts.iter().any(|p| p.contains('\\')) {
        // The historical form, kept byte for byte: an escaped backslash followed by `u003c`
        // is turned back as if it were an escaped `<`.
        let v: String = parts.concat();
        let quoted = crate::gojson::go_json_string(&v)
            .replace("\\u003c", "<")
            .replace("\\u003e", ">")
            .replace("\\u0026", "&");
        out.push_str(&quoted);
    } else {
        out.push('"');
        parts.iter().for_each(|p| push_escaped(out, p, Escape::GoText));
        out.push('"');
    }
}

/// Which JSON string escaping [`push_escaped`] applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// serde_json's: `\b`, `\f`, `\n`, `\r`, `\t`, other controls below 0x20 as `\u00xx`.
    Json,
    /// Go's encoder without its HTML escapes (slog's text handler): every control below
    /// 0x20 except `\n`, `\r`, `\t` as `\u00xx`, and U+2028/U+2029 escaped.
    GoText,
}

/// Appends the inside of a JSON string literal for `v` (no quotes).
fn push_escaped(out: &mut String, v: &str, how: Escape) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Most values (identities, paths, methods) need no escape: one pass over the bytes
    // finds that. 0xE2 leads U+2028 and U+2029; `\u{8}` and `\u{c}` are controls.
    if !v.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\' || b == 0xE2) {
        out.push_str(v);
        return;
    }
    let mut plain = 0;
    for (i, c) in v.char_indices() {
        let short = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' if how == Escape::Json => "\\b",
            '\u{c}' if how == Escape::Json => "\\f",
            '\u{2028}' if how == Escape::GoText => "\\u2028",
            '\u{2029}' if how == Escape::GoText => "\\u2029",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&v[plain..i]);
        plain = i + c.len_utf8();
        if short.is_empty() {
            let b = c as u32 as usize;
            out.push_str("\\u00");
            out.push(char::from(HEX[b >> 4]));
            out.push(char::from(HEX[b & 0xf]));
        } else {
            out.push_str(short);
        }
    }
    out.push_str(&v[plain..]);
}

/// Go `slog` text handler shape: `time=… level=… msg=… k=v…`.
fn slog_text(now: OffsetDateTime, level: Level, msg: &str, fields: &[(&str, &str)]) -> String {
    let mut s = String::with_capacity(128);
    s.push_str("time=");
    gotime::push_rfc3339_millis(&mut s, now);
    s.push_str(" level=");
    s.push_str(&level.name());
    s.push_str(" msg=");
    push_text_value(&mut s, &[msg]);
    for (k, v) in fields {
        s.push(' ');
        s.push_str(k);
        s.push('=');
        push_text_value(&mut s, &[v]);
    }
    s
}

fn slog_json(now: OffsetDateTime, level: Level, msg: &str, fields: &[(&str, &str)]) -> String {
    let mut map = serde_json::Map::new();
    map.insert("time".into(), gotime::format_rfc3339_nano(now).into());
    map.insert("level".into(), level.name().into());
    map.insert("msg".into(), msg.into());
    for (k, v) in fields {
        map.insert((*k).into(), (*v).into());
    }
    serde_json::Value::Object(map).to_string()
}

/// Appends `ip` as its `Display` writes it; an IPv4 address without the formatter.
fn push_ip(s: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                gotime::push_decimal(s, u64::from(octet), 1);
            }
        }
        std::net::IpAddr::V6(_) => {
            let _ = write!(s, "{ip}");
        }
    }
}

fn latency_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Appends the stdout audit line of `e` (JSON or slog text, `kes-api.md` §10) to `out`,
/// without its newline, allocating nothing but `out`'s growth.
pub fn write_audit_line(out: &mut String, e: &AuditEvent, json: bool) {
    if json { write_audit_json(out, e) } else { write_audit_text(out, e) }
}

/// The stdout audit line in slog text form.
pub fn audit_text_line(e: &AuditEvent) -> String {
    let mut s = String::with_capacity(256);
    write_audit_text(&mut s, e);
    s
}

fn write_audit_text(s: &mut String, e: &AuditEvent) {
    s.push_str("time=");
    gotime::push_rfc3339_millis(s, e.time);
    s.push_str(" level=INFO msg=");
    push_text_value(s, &e.message_parts());
    s.push_str(" req.method=");
    push_text_value(s, &[e.method]);
    s.push_str(" req.path=");
    push_text_value(s, &[e.path]);
    s.push_str(" req.ip=");
    match e.ip {
        Some(ip) => push_ip(s, ip),
        None => s.push_str("\"\""),
    }
    s.push_str(" req.identity=");
    push_text_value(s, &[e.identity]);
    s.push_str(" res.code=");
    gotime::push_decimal(s, u64::from(e.status), 1);
    s.push_str(" res.time=");
    // A duration's text never needs quotes (digits, a dot, a unit).
    gotime::push_duration(s, e.latency);
}

/// The JSON audit line (`--log-format json`, or stdout not a terminal): keys in sorted
/// order as a JSON object map prints them, strings escaped as serde_json escapes them.
fn audit_json_line(e: &AuditEvent) -> String {
    let mut s = String::with_capacity(256);
    write_audit_json(&mut s, e);
    s
}

fn write_audit_json(s: &mut String, e: &AuditEvent) {
    s.push_str("{\"level\":\"INFO\",\"msg\":\"");
    for part in e.message_parts() {
        push_escaped(s, part, Escape::Json);
    }
    s.push_str("\",\"req\":{\"identity\":\"");
    push_escaped(s, e.identity, Escape::Json);
    s.push_str("\",\"ip\":\"");
    if let Some(ip) = e.ip {
        push_ip(s, ip);
    }
    s.push_str("\",\"method\":\"");
    push_escaped(s, e.method, Escape::Json);
    s.push_str("\",\"path\":\"");
    push_escaped(s, e.path, Escape::Json);
    s.push_str("\"},\"res\":{\"code\":");
    gotime::push_decimal(s, u64::from(e.status), 1);
    s.push_str(",\"time\":");
    gotime::push_decimal(s, latency_ms(e.latency), 1);
    s.push_str("},\"time\":\"");
    gotime::push_rfc3339_nano(s, e.time);
    s.push_str("\"}");
}

/// The `/v1/log/audit` line (`kes-api.md` §9.21): `ip`/`identity` omitted when empty,
/// `response.time` in milliseconds.
pub fn audit_ndjson(e: &AuditEvent) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Request<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
        path: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        identity: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Response {
        code: u16,
        time: u64,
    }
    #[derive(serde::Serialize)]
    struct Event<'a> {
        time: String,
        request: Request<'a>,
        response: Response,
    }
    crate::gojson::to_go_json(&Event {
        time: gotime::format_rfc3339_nano(e.time),
        request: Request { ip: e.ip.map(|i| i.to_string()), path: e.path, identity: e.identity },
        response: Response { code: e.status, time: latency_ms(e.latency) },
    })
}

/// Process figures for `/v1/status` and `kes_system_*`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    pub heap_bytes: u64,
    pub stack_bytes: u64,
    pub threads: u64,
    pub rss_bytes: u64,
}

impl ProcStats {
    /// Parses `/proc/self/status` text.
    pub fn from_status(text: &str) -> ProcStats {
        let kib = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let threads = text
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        ProcStats {
            heap_bytes: kib("RssAnon:") * 1024,
            stack_bytes: kib("VmStk:") * 1024,
            threads,
            rss_bytes: kib("VmRSS:") * 1024,
        }
    }
}

/// Reads `/proc/self/status` through a descriptor opened once at startup, so that no file
/// is opened after the seccomp filter is installed.
pub struct ProcReader {
    file: Option<std::fs::File>,
}

impl ProcReader {
    pub fn open() -> ProcReader {
        ProcReader { file: std::fs::File::open("/proc/self/status").ok() }
    }

    pub fn read(&self) -> ProcStats {
        use std::os::unix::fs::FileExt;
        let Some(f) = &self.file else { return ProcStats::default() };
        let mut buf = vec![0u8; 8192];
        let mut n = 0;
        while n < buf.len() {
            match f.read_at(&mut buf[n..], n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(_) => return ProcStats::default(),
            }
        }
        ProcStats::from_status(&String::from_utf8_lossy(&buf[..n]))
    }
}

/// Everything `render_metrics` needs besides the counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemFigures {
    pub uptime: Duration,
    pub num_cpu: u64,
    pub num_cpu_used: u64,
    pub proc: ProcStats,
    pub conns: ConnFigures,
    pub chains: ChainCacheFigures,
}

/// The cache of verified client chains behind attribute identities (`auth::attr`), since
/// the config was last loaded (a reload starts a new cache).
#[derive(Debug, Clone, Copy, Default)]
pub struct ChainCacheFigures {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
}

/// Extra figures we add under our own names (never upstream's).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreFigures {
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub backend_reads: u64,
    pub backend_read_micros: u64,
    /// Backend requests (retries included), retries, and throttled answers.
    pub store_requests: u64,
    pub store_retries: u64,
    pub store_throttled: u64,
    /// Re-checks of the sealed copies (`cache.persist`): complete passes, passes stopped by
    /// a store failure, copies removed because the key no longer exists.
    pub sealed_rechecks: u64,
    pub sealed_recheck_stopped: u64,
    pub sealed_recheck_removed: u64,
    /// Seals written by the reading request because the writer's queue was full.
    pub sealed_inline: u64,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn fmt_f64(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v}") }
}

/// Prometheus text exposition 0.0.4 with upstream's families, sorted by name, every family
/// with at least one sample (kms-go's parser requires it).
pub fn render_metrics(obs: &Obs, sys: &SystemFigures, store: &StoreFigures) -> String {
    let m = &obs.metrics;
    let codes: Vec<(u16, u64)> = (200u16..)
        .zip(m.codes.iter())
        .map(|(code, n)| (code, n.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let mut out = String::with_capacity(4096);
    let class = |c: u16| codes.iter().filter(move |(k, _)| *k / 100 == c);

    // Our own additions, under names upstream never used.
    family(
        &mut out,
        "kes_cache_backend_reads",
        "counter",
        "Key store reads made by the key cache.",
    );
    let _ = writeln!(out, "kes_cache_backend_reads {}", store.backend_reads);
    family(&mut out, "kes_cache_hits", "counter", "Key lookups answered from the cache.");
    let _ = writeln!(out, "kes_cache_hits {}", store.cache_hits);
    family(&mut out, "kes_cache_misses", "counter", "Key lookups that missed the cache.");
    let _ = writeln!(out, "kes_cache_misses {}", store.cache_misses);
    family(
        &mut out,
        "kes_cache_sealed_inline",
        "counter",
        "Sealed copies written by the reading request because the writer's queue was full.",
    );
    let _ = writeln!(out, "kes_cache_sealed_inline {}", store.sealed_inline);
    family(
        &mut out,
        "kes_cache_sealed_recheck_removed",
        "counter",
        "Sealed copies removed by a re-check because the key store no longer has the key.",
    );
    let _ = writeln!(out, "kes_cache_sealed_recheck_removed {}", store.sealed_recheck_removed);
    family(
        &mut out,
        "kes_cache_sealed_recheck_stopped",
        "counter",
        "Re-checks of the sealed copies stopped by a key store failure.",
    );
    let _ = writeln!(out, "kes_cache_sealed_recheck_stopped {}", store.sealed_recheck_stopped);
    family(
        &mut out,
        "kes_cache_sealed_rechecks",
        "counter",
        "Complete re-checks of the sealed copies against the key store.",
    );
    let _ = writeln!(out, "kes_cache_sealed_rechecks {}", store.sealed_rechecks);

    let c = &sys.conns;
    family(
        &mut out,
        "kes_http_connections_accepted",
        "counter",
        "TCP connections given a slot (and a thread).",
    );
    let _ = writeln!(out, "kes_http_connections_accepted {}", c.accepted);
    // kms-go's parser wants exactly one sample per family, so a breakdown is one family
    // per value (`<name>_<value>`), never a label.
    let mut evicted: Vec<_> = CONN_PHASES.iter().zip(c.evicted).collect();
    evicted.sort_unstable();
    for (phase, n) in evicted {
        let name = format!("kes_http_connections_evicted_{phase}");
        let help = format!(
            "Unproductive connections closed at the cap to admit a newcomer, in the {phase} phase."
        );
        family(&mut out, &name, "counter", &help);
        let _ = writeln!(out, "{name} {n}");
    }
    family(&mut out, "kes_http_connections_open", "gauge", "Connections holding a slot.");
    let _ = writeln!(out, "kes_http_connections_open {}", c.open);
    for (reason, n) in REFUSAL_REASONS.iter().zip(c.refused) {
        let name = format!("kes_http_connections_refused_{reason}");
        let help = format!("Connections closed at once at the cap (reason: {reason}).");
        family(&mut out, &name, "counter", &help);
        let _ = writeln!(out, "{name} {n}");
    }
    let mut deadline: Vec<_> = DEADLINE_PHASES.iter().zip(c.deadline).collect();
    deadline.sort_unstable();
    for (phase, n) in deadline {
        let name = format!("kes_http_deadline_exceeded_{phase}");
        let help = format!("Connections closed because the {phase} phase outlived its deadline.");
        family(&mut out, &name, "counter", &help);
        let _ = writeln!(out, "{name} {n}");
    }

    family(&mut out, "kes_http_request_active", "gauge", "Number of active requests.");
    let _ = writeln!(out, "kes_http_request_active {}", m.active.load(Ordering::Relaxed).max(0));
    if class(4).next().is_some() {
        family(
            &mut out,
            "kes_http_request_error",
            "counter",
            "Number of requests answered with 4xx.",
        );
        for (code, n) in class(4) {
            let _ = writeln!(out, "kes_http_request_error{{code=\"{code}\"}} {n}");
        }
    }
    if class(5).next().is_some() {
        family(
            &mut out,
            "kes_http_request_failure",
            "counter",
            "Number of requests answered with 5xx.",
        );
        for (code, n) in class(5) {
            let _ = writeln!(out, "kes_http_request_failure{{code=\"{code}\"}} {n}");
        }
    }
    if class(2).next().is_some() {
        family(
            &mut out,
            "kes_http_request_success",
            "counter",
            "Number of requests answered with 2xx.",
        );
        for (code, n) in class(2) {
            let _ = writeln!(out, "kes_http_request_success{{code=\"{code}\"}} {n}");
        }
    }
    family(&mut out, "kes_http_response_time", "histogram", "Response time in seconds.");
    for (i, bound) in RESPONSE_TIME_BUCKETS.iter().enumerate() {
        let _ = writeln!(
            out,
            "kes_http_response_time_bucket{{le=\"{}\"}} {}",
            fmt_f64(*bound),
            m.buckets[i].load(Ordering::Relaxed)
        );
    }
    let count = m.count.load(Ordering::Relaxed);
    let _ = writeln!(out, "kes_http_response_time_bucket{{le=\"+Inf\"}} {count}");
    let sum = m.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "kes_http_response_time_sum {}", fmt_f64(sum));
    let _ = writeln!(out, "kes_http_response_time_count {count}");

    family(
        &mut out,
        "kes_keystore_read_seconds",
        "summary",
        "Time the cache spent reading keys from the key store.",
    );
    let _ = writeln!(
        out,
        "kes_keystore_read_seconds_sum {}",
        fmt_f64(store.backend_read_micros as f64 / 1e6)
    );
    let _ = writeln!(out, "kes_keystore_read_seconds_count {}", store.backend_reads);
    family(
        &mut out,
        "kes_keystore_requests",
        "counter",
        "Requests sent to the key store backend, retries included.",
    );
    let _ = writeln!(out, "kes_keystore_requests {}", store.store_requests);
    family(
        &mut out,
        "kes_keystore_retries",
        "counter",
        "Backend requests repeated after a transient failure.",
    );
    let _ = writeln!(out, "kes_keystore_retries {}", store.store_retries);
    family(
        &mut out,
        "kes_keystore_throttled",
        "counter",
        "Backend answers asking to slow down (Azure HTTP 429).",
    );
    let _ = writeln!(out, "kes_keystore_throttled {}", store.store_throttled);

    family(&mut out, "kes_log_audit_events", "counter", "Audit events written to API subscribers.");
    let _ = writeln!(out, "kes_log_audit_events {}", obs.audit.delivered.load(Ordering::Relaxed));
    family(
        &mut out,
        "kes_log_audit_events_dropped",
        "counter",
        "Audit events dropped for slow subscribers.",
    );
    let _ =
        writeln!(out, "kes_log_audit_events_dropped {}", obs.audit.dropped.load(Ordering::Relaxed));
    family(
        &mut out,
        "kes_log_error_events",
        "counter",
        "Error-log events written to API subscribers.",
    );
    let _ = writeln!(out, "kes_log_error_events {}", obs.errors.delivered.load(Ordering::Relaxed));
    family(
        &mut out,
        "kes_log_error_events_dropped",
        "counter",
        "Error-log events dropped for slow subscribers.",
    );
    let _ = writeln!(
        out,
        "kes_log_error_events_dropped {}",
        obs.errors.dropped.load(Ordering::Relaxed)
    );

    family(
        &mut out,
        "kes_system_mem_heap_objects",
        "gauge",
        "Heap objects (not tracked: resident anonymous pages).",
    );
    let _ = writeln!(out, "kes_system_mem_heap_objects {}", sys.proc.heap_bytes / 4096);
    family(
        &mut out,
        "kes_system_mem_heap_used",
        "gauge",
        "Heap memory in bytes (resident anonymous memory).",
    );
    let _ = writeln!(out, "kes_system_mem_heap_used {}", sys.proc.heap_bytes);
    family(&mut out, "kes_system_mem_stack_used", "gauge", "Stack memory in bytes.");
    let _ = writeln!(out, "kes_system_mem_stack_used {}", sys.proc.stack_bytes);
    family(&mut out, "kes_system_num_cpu", "gauge", "Logical CPUs.");
    let _ = writeln!(out, "kes_system_num_cpu {}", sys.num_cpu);
    family(&mut out, "kes_system_num_cpu_used", "gauge", "CPUs the process may use.");
    let _ = writeln!(out, "kes_system_num_cpu_used {}", sys.num_cpu_used);
    family(&mut out, "kes_system_num_threads", "gauge", "Threads of the process.");
    let _ = writeln!(out, "kes_system_num_threads {}", sys.proc.threads);
    family(&mut out, "kes_system_up_time", "gauge", "Seconds since the server started.");
    let up = (sys.uptime.as_millis() / 10) as f64 / 100.0;
    let _ = writeln!(out, "kes_system_up_time {}", fmt_f64(up));
    for (flaw, n) in CLIENT_CERT_FLAWS.iter().zip(&obs.cert_flaws.counts) {
        let n = n.load(Ordering::Relaxed);
        let name = format!("kes_tls_client_cert_flaws_{flaw}");
        let help = format!(
            "Connections accepted with a client certificate flawed as '{flaw}' (tls.client_validity: log)."
        );
        family(&mut out, &name, "counter", &help);
        let _ = writeln!(out, "{name} {n}");
    }
    let ch = &sys.chains;
    family(
        &mut out,
        "kes_tls_client_chain_cache_entries",
        "gauge",
        "Verified client chains held for attribute identities (since the last reload).",
    );
    let _ = writeln!(out, "kes_tls_client_chain_cache_entries {}", ch.entries);
    family(
        &mut out,
        "kes_tls_client_chain_cache_hits",
        "counter",
        "Connections whose chain was not verified again (since the last reload).",
    );
    let _ = writeln!(out, "kes_tls_client_chain_cache_hits {}", ch.hits);
    family(
        &mut out,
        "kes_tls_client_chain_cache_misses",
        "counter",
        "Connections whose chain was verified against tls.ca (since the last reload).",
    );
    let _ = writeln!(out, "kes_tls_client_chain_cache_misses {}", ch.misses);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_subscribers_drop_instead_of_blocking() {
        let hub = Hub::default();
        let rx = hub.subscribe().unwrap();
        for i in 0..(SUBSCRIBER_QUEUE + 10) {
            hub.publish(format!("{i}\n").into_bytes());
        }
        assert_eq!(hub.delivered.load(Ordering::Relaxed), SUBSCRIBER_QUEUE as u64);
        assert_eq!(hub.dropped.load(Ordering::Relaxed), 10);
        assert_eq!(&**rx.recv().unwrap(), b"0\n");
        drop(rx);
        hub.publish(b"x\n".to_vec());
        assert_eq!(hub.subscriber_count(), 0);
    }

    #[test]
    fn audit_ndjson_shape() {
        let e = AuditEvent {
            time: time::macros::datetime!(2024-01-12 10:39:20.5 UTC),
            method: "PUT",
            path: "/v1/key/create/k",
            ip: Some("127.0.0.1".parse().unwrap()),
            identity: "abc",
            status: 200,
            latency: Duration::from_millis(12),
            message: Some("secret key 'k' created"),
        };
        assert_eq!(
            String::from_utf8(audit_ndjson(&e)).unwrap(),
            "{\"time\":\"2024-01-12T10:39:20.5Z\",\"request\":{\"ip\":\"127.0.0.1\",\"path\":\"/v1/key/create/k\",\"identity\":\"abc\"},\"response\":{\"code\":200,\"time\":12}}\n"
        );
        // The JSON line has the bytes of the object-map form it replaced.
        let map = serde_json::json!({
            "time": gotime::format_rfc3339_nano(e.time),
            "level": "INFO",
            "msg": e.message,
            "req": { "method": e.method, "path": e.path, "ip": "127.0.0.1", "identity": e.identity },
            "res": { "code": e.status, "time": 12 },
        })
        .to_string();
        assert_eq!(audit_json_line(&e), map);
        let quoted = AuditEvent { message: Some("a \"b\"\n<c>"), ip: None, ..e };
        let mut map: serde_json::Value = serde_json::from_str(&map).unwrap();
        map["msg"] = "a \"b\"\n<c>".into();
        map["req"]["ip"] = "".into();
        assert_eq!(audit_json_line(&quoted), map.to_string());
        let line = audit_text_line(&e);
        assert_eq!(
            line,
            "time=2024-01-12T10:39:20.500Z level=INFO msg=\"secret key 'k' created\" req.method=PUT req.path=/v1/key/create/k req.ip=127.0.0.1 req.identity=abc res.code=200 res.time=12ms"
        );
    }

    /// The JSON line as the serde struct it replaced wrote it.
    fn reference_json_line(e: &AuditEvent) -> String {
        let message = match e.message {
            Some(m) => m.to_string(),
            None => format!("{} {}", e.method, e.path),
        };
        serde_json::json!({
            "level": "INFO",
            "msg": message,
            "req": {
                "identity": e.identity,
                "ip": e.ip.map(|i| i.to_string()).unwrap_or_default(),
                "method": e.method,
                "path": e.path,
            },
            "res": { "code": e.status, "time": latency_ms(e.latency) },
            "time": gotime::format_rfc3339_nano(e.time),
        })
        .to_string()
    }

    /// The text line as `slog_text` with `quote_if_needed` built it before lines were
    /// written in place.
    fn reference_text_line(e: &AuditEvent) -> String {
        let quote = |v: &str| {
            if v.is_empty() || v.chars().any(|c| c == ' ' || c == '"' || c == '=' || c.is_control())
            {
                crate::gojson::go_json_string(v)
                    .replace("\\u003c", "<")
                    .replace("\\u003e", ">")
                    .replace("\\u0026", "&")
            } else {
                v.to_string()
            }
        };
        let message = match e.message {
            Some(m) => m.to_string(),
            None => format!("{} {}", e.method, e.path),
        };
        format!(
            "time={} level=INFO msg={} req.method={} req.path={} req.ip={} req.identity={} res.code={} res.time={}",
            gotime::format_rfc3339_millis(e.time),
            quote(&message),
            quote(e.method),
            quote(e.path),
            quote(&e.ip.map(|i| i.to_string()).unwrap_or_default()),
            quote(e.identity),
            quote(&e.status.to_string()),
            quote(&gotime::format_duration(e.latency)),
        )
    }

    /// Lines written in place have the bytes of the lines built from owned strings, for
    /// every character class the escaping treats apart: each control character, quotes,
    /// backslashes (with the text form's `\u003c` quirk), HTML characters, U+2028/U+2029,
    /// C1 controls, non-ASCII text, empty fields, IPv6 and no address, both message forms.
    #[test]
    fn audit_lines_written_in_place_match_the_owned_forms() {
        let mut samples: Vec<String> =
            (0u32..0x80).map(|c| format!("/v1/key/x{}y", char::from_u32(c).unwrap())).collect();
        samples.extend(
            [
                "",
                "/",
                "plain",
                "a b",
                "k=v",
                "\\u003c<>&\\",
                "\\",
                "é☰\u{2028}\u{2029}\u{85}\u{9f}\u{a0}",
                "/v1/key/create/\"q\"\r\n",
                "\u{1F600}\u{7f}\u{0}\u{1f}",
            ]
            .map(String::from),
        );
        let base = AuditEvent {
            time: time::macros::datetime!(2026-12-04 19:40:01.000000700 UTC),
            method: "POST",
            path: "/v1/key/generate/k",
            ip: Some("::1".parse().unwrap()),
            identity: "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22",
            status: 200,
            latency: Duration::from_micros(1234),
            message: None,
        };
        let mut events = Vec::new();
        for s in &samples {
            events.push(AuditEvent { path: s, ..base });
            events.push(AuditEvent { message: Some(s), ip: None, status: 403, ..base });
            events.push(AuditEvent { identity: s, method: s, latency: Duration::ZERO, ..base });
        }
        // Addresses and numbers are written without the formatter: every width of both.
        for (ip, status, latency) in [
            ("0.0.0.0", 200, Duration::from_nanos(1)),
            ("127.0.0.1", 404, Duration::from_millis(9)),
            ("10.20.255.7", 500, Duration::from_millis(10)),
            ("255.255.255.255", 503, Duration::from_secs(90_061)),
            ("::ffff:1.2.3.4", 201, Duration::from_millis(999)),
            ("fe80::1:2", 299, Duration::MAX),
        ] {
            events.push(AuditEvent { ip: Some(ip.parse().unwrap()), status, latency, ..base });
        }
        for e in &events {
            assert_eq!(audit_json_line(e), reference_json_line(e), "{e:?}");
            assert_eq!(audit_text_line(e), reference_text_line(e), "{e:?}");
            // Through the reused buffer, as requests write them.
            for json in [true, false] {
                with_line_buffer(|line| {
                    line.push_str("left over from the last request");
                    line.clear();
                    write_audit_line(line, e, json);
                    let want = if json { reference_json_line(e) } else { reference_text_line(e) };
                    assert_eq!(*line, want);
                });
            }
        }
    }

    #[test]
    fn proc_status_parses() {
        let s = ProcStats::from_status(
            "Name:\tkes\nVmRSS:\t  2048 kB\nRssAnon:\t 1024 kB\nVmStk:\t 132 kB\nThreads:\t7\n",
        );
        assert_eq!(s.heap_bytes, 1024 * 1024);
        assert_eq!(s.stack_bytes, 132 * 1024);
        assert_eq!(s.threads, 7);
        assert_eq!(s.rss_bytes, 2048 * 1024);
        assert!(ProcReader::open().read().threads >= 1);
    }

    #[test]
    fn metrics_families_are_sorted_and_complete() {
        let obs = Obs::silent();
        obs.metrics.observe(200, Duration::from_millis(3));
        obs.metrics.observe(200, Duration::from_millis(300));
        obs.metrics.observe(404, Duration::from_millis(3));
        obs.metrics.observe(301, Duration::from_millis(3));
        let text = render_metrics(
            &obs,
            &SystemFigures { num_cpu: 2, num_cpu_used: 2, ..Default::default() },
            &StoreFigures::default(),
        );
        assert!(text.contains("kes_http_request_success{code=\"200\"} 2\n"));
        assert!(text.contains("kes_http_request_error{code=\"404\"} 1\n"));
        assert!(!text.contains("kes_http_request_failure"), "no empty families");
        assert!(text.contains("kes_http_response_time_bucket{le=\"0.01\"} 2\n"));
        assert!(text.contains("kes_http_response_time_bucket{le=\"0.5\"} 3\n"));
        assert!(text.contains("kes_http_response_time_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("kes_http_response_time_count 3\n"));
        // Per-code samples in ascending code order, whatever order they were counted in.
        for code in [503, 404, 500, 400, 404, 599, 204] {
            obs.metrics.observe(code, Duration::from_millis(1));
        }
        let text = render_metrics(
            &obs,
            &SystemFigures { num_cpu: 2, num_cpu_used: 2, ..Default::default() },
            &StoreFigures::default(),
        );
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("kes_http_request_") && l.contains("code"))
            .collect();
        assert_eq!(
            samples,
            [
                "kes_http_request_error{code=\"400\"} 1",
                "kes_http_request_error{code=\"404\"} 3",
                "kes_http_request_failure{code=\"500\"} 1",
                "kes_http_request_failure{code=\"503\"} 1",
                "kes_http_request_failure{code=\"599\"} 1",
                "kes_http_request_success{code=\"200\"} 2",
                "kes_http_request_success{code=\"204\"} 1",
            ]
        );
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }
}
