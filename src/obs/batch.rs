//! Audit lines to stdout in batches: request threads append a line to a shared buffer (no
//! system call, no wait for the reader of the pipe), and one writer thread hands the whole
//! buffer to the writer in one `write` shortly after its first line arrived.
//!
//! Guarantees: lines keep their order; a line is never dropped (when the buffer is full,
//! requests wait for the writer, as they waited for a full pipe before); [`LineBatch::close`]
//! writes everything queued and from then on writes each line at once, so a clean stop
//! loses nothing, not even a line of a request that finishes while the process exits.

use super::SharedWriter;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long the writer waits after the first line of a batch before writing it: long enough
/// for a busy server to gather many lines into one `write`, short enough that a tail of the
/// log (journald, `kes log`) sees each request within a few milliseconds.
pub const FLUSH_DELAY: Duration = Duration::from_millis(2);

/// Most bytes queued before requests wait for the writer: about 4,000 audit lines, so a
/// stalled reader of stdout costs bounded memory and slows requests instead of losing lines.
pub const MAX_PENDING: usize = 1024 * 1024;

/// Stack of the writer thread (it formats nothing; it only writes buffers).
const WRITER_STACK: usize = 64 * 1024;

struct Pending {
    buf: Vec<u8>,
    /// Closed: no writer thread any more; lines are written at once.
    direct: bool,
    /// The writer waits on `wake` for a first line. Only then does a request signal it:
    /// while lines keep coming the writer is sleeping out [`FLUSH_DELAY`] and takes them
    /// when it wakes, so a busy server makes no futex call per batch from request threads.
    idle: bool,
}

/// A line writer that batches (see the module doc).
pub struct LineBatch {
    out: SharedWriter,
    pending: Mutex<Pending>,
    /// Signalled when a batch gets its first line, and on close.
    wake: Condvar,
    /// Signalled when the writer took a batch (room for waiting requests).
    room: Condvar,
    /// Batches handed to the writer (one `write` each, if the writer takes it whole).
    pub batches: AtomicU64,
    /// Lines that could not be written (closed stdout).
    pub failures: AtomicU64,
}

impl LineBatch {
    /// A batch writing into `out`, with its writer thread running.
    pub fn start(out: SharedWriter) -> std::io::Result<Arc<LineBatch>> {
        let batch = Arc::new(LineBatch {
            out,
            pending: Mutex::new(Pending {
                buf: Vec::with_capacity(64 * 1024),
                direct: false,
                idle: false,
            }),
            wake: Condvar::new(),
            room: Condvar::new(),
            batches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let writer = batch.clone();
        std::thread::Builder::new()
            .name("kes-audit-out".into())
            .stack_size(WRITER_STACK)
            .spawn(move || writer.run())?;
        Ok(batch)
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_out(&self) -> MutexGuard<'_, Box<dyn Write + Send>> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `line` and a newline.
    pub fn push(&self, line: &str) {
        let mut p = self.lock();
        while !p.direct && p.buf.len() >= MAX_PENDING {
            p = self.room.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        if p.direct {
            drop(p);
            let mut out = self.lock_out();
            let ok = out
                .write_all(line.as_bytes())
                .and_then(|_| out.write_all(b"\n"))
                .and_then(|_| out.flush());
            if ok.is_err() {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        p.buf.extend_from_slice(line.as_bytes());
        p.buf.push(b'\n');
        let wake = std::mem::take(&mut p.idle);
        drop(p);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Takes what is queued and writes it, under the output lock so that batches keep their
    /// order whoever writes them. False once closed.
    fn write_pending(&self, spare: &mut Vec<u8>, close: bool) -> bool {
        let mut out = self.lock_out();
        let mut p = self.lock();
        let open = !p.direct;
        std::mem::swap(&mut p.buf, spare);
        p.direct |= close;
        drop(p);
        self.room.notify_all();
        if !spare.is_empty() {
            self.batches.fetch_add(1, Ordering::Relaxed);
            if out.write_all(spare).and_then(|_| out.flush()).is_err() {
                let lines = spare.iter().filter(|&&b| b == b'\n').count();
                self.failures.fetch_add(lines as u64, Ordering::Relaxed);
            }
            // Freed pages of the batch are wiped by the allocator; clearing keeps capacity.
            spare.clear();
        }
        open
    }

    /// Waits for a first line, then writes a batch every [`FLUSH_DELAY`] for as long as
    /// lines keep arriving; only a delay that gathered nothing sends it back to waiting.
    fn run(&self) {
        let mut spare = Vec::with_capacity(64 * 1024);
        loop {
            {
                let mut p = self.lock();
                while p.buf.is_empty() && !p.direct {
                    p.idle = true;
                    p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                p.idle = false;
                if p.direct {
                    return;
                }
            }
            loop {
                std::thread::sleep(FLUSH_DELAY);
                if !self.write_pending(&mut spare, false) {
                    return;
                }
                if self.lock().buf.is_empty() {
                    break;
                }
            }
        }
    }

    /// Writes everything queued now (a clean stop); later lines are written one by one.
    pub fn close(&self) {
        let mut spare = Vec::new();
        self.write_pending(&mut spare, true);
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>, Arc<AtomicU64>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn batch() -> (Arc<LineBatch>, Sink) {
        let sink = Sink::default();
        let out: SharedWriter = Arc::new(Mutex::new(Box::new(sink.clone())));
        (LineBatch::start(out).unwrap(), sink)
    }

    fn lines(sink: &Sink) -> Vec<String> {
        String::from_utf8(sink.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits (generously) until `n` lines arrived.
    fn wait_for(sink: &Sink, n: usize) -> Vec<String> {
        for _ in 0..2000 {
            let l = lines(sink);
            if l.len() >= n {
                return l;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        lines(sink)
    }

    #[test]
    fn each_line_arrives_without_a_close() {
        let (b, sink) = batch();
        for i in 0..20 {
            b.push(&format!("line {i}"));
            // A lone line is written by the writer thread, not held for a full batch.
            assert_eq!(wait_for(&sink, i + 1).last().unwrap(), &format!("line {i}"));
        }
        assert_eq!(b.batches.load(Ordering::Relaxed), 20);
        b.close();
    }

    #[test]
    fn many_threads_many_lines_one_write_per_batch_none_lost_in_order() {
        let (b, sink) = batch();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        b.push(&format!("t{t} {i}"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        b.close();
        let all = lines(&sink);
        assert_eq!(all.len(), 16_000, "close wrote every queued line");
        for t in 0..8 {
            let mine: Vec<&String> =
                all.iter().filter(|l| l.starts_with(&format!("t{t} "))).collect();
            let want: Vec<String> = (0..2000).map(|i| format!("t{t} {i}")).collect();
            assert!(mine.iter().map(|s| s.as_str()).eq(want.iter().map(String::as_str)));
        }
        let batches = b.batches.load(Ordering::Relaxed);
        assert_eq!(sink.1.load(Ordering::Relaxed), batches, "one write per batch");
        assert!(batches < 16_000, "lines were batched: {batches} writes");
        // After close, lines go out at once.
        b.push("late");
        assert_eq!(lines(&sink).last().unwrap(), "late");
    }

    #[test]
    fn a_full_buffer_waits_for_the_writer_instead_of_dropping() {
        let (b, sink) = batch();
        let line = "x".repeat(1000);
        for _ in 0..(3 * MAX_PENDING / 1000) {
            b.push(&line);
        }
        b.close();
        assert_eq!(lines(&sink).len(), 3 * MAX_PENDING / 1000);
        assert_eq!(b.failures.load(Ordering::Relaxed), 0);
    }
}
