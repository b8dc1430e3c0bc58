//! The tamper-evident audit file (`log.audit_file`, our extension): one JSON line per
//! audited request, appended by one writer thread and fsync'd in batches, each line
//! carrying a sequence number and the SHA-256 of the line before it:
//!
//! ```text
//! {"seq":7,"prev":"<hash of line 6>","time":…,"msg":…,"req":{…},"res":{…},"hash":"<64 hex>"}
//! ```
//!
//! where `hash` is the SHA-256 of the line's bytes before `,"hash":`. An edited line no
//! longer matches its own hash; a line whose hash was recomputed no longer matches the
//! `prev` of the line after it.
//! The first line of a file names the last line of the file before it (after logrotate
//! renamed it and SIGHUP reopened the path), so the chain runs across rotated files; the
//! first line ever has 64 zeros. Editing, deleting, reordering or inserting a line breaks
//! the chain at that line, which [`verify`] (`kes log verify`) reports. A chain without a
//! key cannot stop someone who rewrites *every* line after an edit, nor notice lines cut
//! from the end: keep the files where the server can append but not rewrite
//! (`chattr +a`), or ship them off the host.
//!
//! Owns: the file, the chain state, the queue and the writer thread. Must not: see
//! anything but finished audit lines (which never hold key material).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// Lines waiting for the writer. A full queue makes requests wait (backpressure) rather
/// than dropping audit lines; 4096 lines are about 1.5 MiB.
pub const QUEUE_LINES: usize = 4096;

/// Most lines written between two fsyncs: one fsync covers every line that queued up while
/// the previous one ran (group commit), up to this many.
pub const BATCH_LINES: usize = 512;

/// Stack of the writer thread: it formats nothing, it hashes and writes.
const WRITER_STACK: usize = 128 << 10;

/// The `prev` of the first line of a new chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Bytes read from the end of an existing file to find its last line on startup; an audit
/// line is a few hundred bytes.
const TAIL_BYTES: u64 = 64 << 10;

/// Longest line [`verify`] reads; longer is reported as broken, not loaded whole.
pub const MAX_LINE_BYTES: usize = 64 << 10;

/// The line could not be written and synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailed(pub String);

enum Msg {
    /// A line body (without `seq`/`prev`) and, for fail-closed requests, where to report.
    Line(String, Option<SyncSender<Result<(), WriteFailed>>>),
    /// Reopen the file at this path (SIGHUP, logrotate).
    Reopen(PathBuf, SyncSender<Result<(), WriteFailed>>),
    /// Flush, sync and stop.
    Stop(SyncSender<()>),
}

/// The audit file sink: a handle to the writer thread.
pub struct AuditFile {
    tx: Mutex<Option<SyncSender<Msg>>>,
    /// Whether the last write and sync succeeded.
    healthy: Arc<AtomicBool>,
    /// Lines that could not be written.
    pub failures: Arc<AtomicU64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Writer {
    path: PathBuf,
    file: Option<File>,
    seq: u64,
    prev: String,
}

impl AuditFile {
    /// Opens (or creates, mode 0600) `path` for appending and continues the chain found
    /// at its end, then starts the writer thread.
    pub fn open(path: &Path) -> Result<AuditFile, String> {
        let (file, seq, prev) = open_and_resume(path)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_LINES);
        let healthy = Arc::new(AtomicBool::new(true));
        let failures = Arc::new(AtomicU64::new(0));
        let mut w = Writer { path: path.to_path_buf(), file: Some(file), seq, prev };
        let (h, f) = (healthy.clone(), failures.clone());
        let thread = std::thread::Builder::new()
            .name("kes-audit-file".into())
            .stack_size(WRITER_STACK)
            .spawn(move || w.run(rx, &h, &f))
            .map_err(|e| format!("log.audit_file: cannot start the writer thread: {e}"))?;
        Ok(AuditFile {
            tx: Mutex::new(Some(tx)),
            healthy,
            failures,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn sender(&self) -> Option<SyncSender<Msg>> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the last write succeeded (fail-closed servers refuse requests while not).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Queues `body` (a JSON object's text) without waiting for it to reach the disk.
    pub fn append(&self, body: String) {
        match self.sender() {
            Some(tx) if tx.send(Msg::Line(body, None)).is_ok() => {}
            _ => {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Appends `body` and waits until it is written and synced (fail-closed).
    pub fn append_synced(&self, body: String) -> Result<(), WriteFailed> {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        let Some(tx) = self.sender() else {
            return Err(WriteFailed("the audit file is closed".into()));
        };
        tx.send(Msg::Line(body, Some(ack)))
            .map_err(|_| WriteFailed("the audit writer stopped".into()))?;
        done.recv().unwrap_or_else(|_| Err(WriteFailed("the audit writer stopped".into())))
    }

    /// Closes the current file and opens `path` (the same path after logrotate moved the
    /// old file away, or a new one from a reloaded config). The chain continues.
    pub fn reopen(&self, path: &Path) -> Result<(), WriteFailed> {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        let Some(tx) = self.sender() else {
            return Err(WriteFailed("the audit file is closed".into()));
        };
        tx.send(Msg::Reopen(path.to_path_buf(), ack))
            .map_err(|_| WriteFailed("the audit writer stopped".into()))?;
        done.recv().unwrap_or_else(|_| Err(WriteFailed("the audit writer stopped".into())))
    }

    /// Writes and syncs every queued line, then stops the writer (clean shutdown).
    pub fn close(&self) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            let (ack, done) = std::sync::mpsc::sync_channel(1);
            if tx.send(Msg::Stop(ack)).is_ok() {
                let _ = done.recv();
            }
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for AuditFile {
    fn drop(&mut self) {
        self.close();
    }
}

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>, healthy: &AtomicBool, failures: &AtomicU64) {
        let mut batch: Vec<u8> = Vec::new();
        let mut acks: Vec<SyncSender<Result<(), WriteFailed>>> = Vec::new();
        loop {
            let first = match rx.recv() {
                Ok(m) => m,
                Err(_) => return,
            };
            let mut pending = Some(first);
            let mut lines = 0usize;
            let mut after: Option<Msg> = None;
            while let Some(msg) = pending.take() {
                match msg {
                    Msg::Line(body, ack) => {
                        self.chain(&body, &mut batch);
                        lines += 1;
                        acks.extend(ack);
                    }
                    other => {
                        after = Some(other);
                        break;
                    }
                }
                if lines >= BATCH_LINES {
                    break;
                }
                pending = rx.try_recv().ok();
            }
            if lines > 0 {
                let result = self.flush(&batch);
                batch.clear();
                healthy.store(result.is_ok(), Ordering::Release);
                if result.is_err() {
                    failures.fetch_add(u64::try_from(lines).unwrap_or(u64::MAX), Ordering::Relaxed);
                }
                for ack in acks.drain(..) {
                    let _ = ack.send(result.clone());
                }
            }
            match after {
                Some(Msg::Reopen(path, ack)) => {
                    let r = self.reopen(&path);
                    healthy.store(r.is_ok(), Ordering::Release);
                    let _ = ack.send(r);
                }
                Some(Msg::Stop(ack)) => {
                    if let Some(f) = &self.file {
                        let _ = f.sync_all();
                    }
                    let _ = ack.send(());
                    return;
                }
                _ => {}
            }
        }
    }

    /// Adds `{"seq":N,"prev":"…",<body fields>,"hash":"…"}` + newline to `out` and
    /// advances the chain.
    fn chain(&mut self, body: &str, out: &mut Vec<u8>) {
        self.seq += 1;
        let inner = body.strip_prefix('{').unwrap_or(body);
        let inner = inner.strip_suffix('}').unwrap_or(inner);
        let sep = if inner.is_empty() { "" } else { "," };
        let prefix = format!("{{\"seq\":{},\"prev\":\"{}\"{sep}{inner}", self.seq, self.prev);
        let hash = sha256_hex(prefix.as_bytes());
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(b",\"hash\":\"");
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(b"\"}\n");
        self.prev = hash;
    }

    fn flush(&mut self, bytes: &[u8]) -> Result<(), WriteFailed> {
        if self.file.is_none() {
            // A failed reopen: try again, so that a fixed disk heals the sink.
            let (file, _, _) = open_and_resume(&self.path).map_err(WriteFailed)?;
            self.file = Some(file);
        }
        let Some(f) = self.file.as_mut() else {
            return Err(WriteFailed("the audit file is not open".into()));
        };
        f.write_all(bytes)
            .and_then(|_| f.sync_data())
            .map_err(|e| WriteFailed(format!("{}: {e}", self.path.display())))
    }

    fn reopen(&mut self, path: &Path) -> Result<(), WriteFailed> {
        if let Some(f) = self.file.take() {
            let _ = f.sync_all();
        }
        self.path = path.to_path_buf();
        // The new file's chain starts from ours, whatever an existing file ends with:
        // the chain of record is the one this process has been writing.
        let file = open_append(path).map_err(WriteFailed)?;
        self.file = Some(file);
        Ok(())
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The marker between a line's hashed prefix and its own hash.
const HASH_FIELD: &[u8] = b",\"hash\":\"";

/// A chained line taken apart: `seq`, `prev`, and whether its own `hash` matches its
/// bytes (then `hash` is the value the next line must name).
struct Parsed {
    seq: u64,
    prev: String,
    hash: String,
    intact: bool,
}

fn parse_line(line: &[u8]) -> Option<Parsed> {
    #[derive(serde::Deserialize)]
    struct Head {
        seq: u64,
        prev: String,
        hash: String,
    }
    let h: Head = serde_json::from_slice(line).ok()?;
    let hex64 =
        |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex64(&h.prev) || !hex64(&h.hash) {
        return None;
    }
    // The hash must be the last field, written exactly as the writer writes it.
    let at = line.len().checked_sub(HASH_FIELD.len() + 64 + 2)?;
    let intact = line[at..].starts_with(HASH_FIELD)
        && line.ends_with(b"\"}")
        && sha256_hex(&line[..at]) == h.hash;
    Some(Parsed { seq: h.seq, prev: h.prev, hash: h.hash, intact })
}

fn open_append(path: &Path) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("log.audit_file: cannot open '{}': {e}", path.display()))
}

/// Opens `path` for appending and finds where its chain ends: `(file, last seq, last
/// hash)`; an empty or new file starts a new chain.
fn open_and_resume(path: &Path) -> Result<(File, u64, String), String> {
    let mut file = open_append(path)?;
    let len = file
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("log.audit_file: cannot read '{}': {e}", path.display()))?;
    if len == 0 {
        return Ok((file, 0, GENESIS.to_string()));
    }
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))
        .map_err(|e| format!("log.audit_file: cannot read '{}': {e}", path.display()))?;
    let mut tail = Vec::new();
    (&mut file)
        .take(TAIL_BYTES)
        .read_to_end(&mut tail)
        .map_err(|e| format!("log.audit_file: cannot read '{}': {e}", path.display()))?;
    if tail.last() != Some(&b'\n') {
        // A torn last line (crash mid-write): end it, so the next line starts clean; verify
        // will name the torn line.
        file.write_all(b"\n")
            .map_err(|e| format!("log.audit_file: cannot write '{}': {e}", path.display()))?;
        tail.push(b'\n');
    }
    let body = &tail[..tail.len() - 1];
    let last = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => &body[i + 1..],
        None => body,
    };
    match parse_line(last) {
        Some(p) => Ok((file, p.seq, p.hash)),
        // Not one of ours: chain on from its bytes; verify will flag the joint.
        None => Ok((file, 0, sha256_hex(last))),
    }
}

/// What [`verify`] found in a set of files read in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Lines checked, over all files.
    pub lines: u64,
    /// `seq` of the first and last line.
    pub first_seq: u64,
    pub last_seq: u64,
    /// Whether the first line starts a new chain (GENESIS) rather than continuing a file
    /// that was not given.
    pub from_genesis: bool,
    /// SHA-256 of the last line: compare it with a copy kept elsewhere to detect lines
    /// cut from the end.
    pub head: String,
}

/// The first line that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub file: String,
    /// 1-based line number within `file`.
    pub line: u64,
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.reason)
    }
}

/// Checks the chain through `files`, in the order given (oldest first). Every line must
/// carry the next `seq` and the hash of the line before it, across file boundaries too.
pub fn verify(files: &[PathBuf]) -> Result<Verified, Broken> {
    let mut prev: Option<(u64, String)> = None;
    let mut v =
        Verified { lines: 0, first_seq: 0, last_seq: 0, from_genesis: false, head: String::new() };
    for path in files {
        let name = path.display().to_string();
        let broken = |line: u64, reason: String| Broken { file: name.clone(), line, reason };
        let f = File::open(path).map_err(|e| broken(0, format!("cannot open: {e}")))?;
        let mut reader = std::io::BufReader::new(f);
        let mut n = 0u64;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let read = (&mut reader)
                .take(u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX) + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|e| broken(n + 1, format!("cannot read: {e}")))?;
            if read == 0 {
                break;
            }
            n += 1;
            if buf.last() != Some(&b'\n') {
                let why = if buf.len() > MAX_LINE_BYTES {
                    format!("line longer than {MAX_LINE_BYTES} bytes")
                } else {
                    "incomplete last line (no newline)".to_string()
                };
                return Err(broken(n, why));
            }
            let line = &buf[..buf.len() - 1];
            let Some(p) = parse_line(line) else {
                return Err(broken(n, "not a chained audit line (no seq/prev/hash)".into()));
            };
            if !p.intact {
                return Err(broken(
                    n,
                    "the line was changed: it does not match its own hash".into(),
                ));
            }
            match &prev {
                None => {
                    v.first_seq = p.seq;
                    v.from_genesis = p.prev == GENESIS;
                    if v.from_genesis && p.seq != 1 {
                        return Err(broken(
                            n,
                            format!("a new chain starts at seq {}, not 1", p.seq),
                        ));
                    }
                }
                Some((pseq, phash)) => {
                    if p.prev != *phash {
                        return Err(broken(
                            n,
                            format!(
                                "hash chain broken: this line follows {}, not the line before it \
                                 ({phash}): a line was removed, inserted, reordered or rewritten here",
                                p.prev
                            ),
                        ));
                    }
                    if p.seq != pseq + 1 {
                        return Err(broken(n, format!("seq {} follows seq {pseq}", p.seq)));
                    }
                }
            }
            prev = Some((p.seq, p.hash));
            v.lines += 1;
        }
    }
    if let Some((seq, hash)) = prev {
        v.last_seq = seq;
        v.head = hash;
    }
    Ok(v)
}
