//! Connection threads that outlive their connection. The server is still one thread per
//! connection, blocking sockets and nothing else; what changes is where the thread comes
//! from. Starting a thread for every connection and ending it afterwards costs more system
//! calls than the TLS handshake has socket reads: `clone`, the stack `mmap` and its guard
//! `mprotect`, the name (`prctl`), Rust's signal stack (`mmap`, `mprotect`, `munmap`), and
//! at the end the stack's release (`mincore`, `munlock`, `madvise`, `mlock2`) and `munmap`,
//! plus a page fault for every stack page the new thread touches, each locked one by one
//! under `mlockall`.
//!
//! So a fixed set of [`KEPT_THREADS`] connection threads is started with the server and
//! kept: each serves a connection, zeroes what that connection left on its stack
//! ([`ThreadStack::wipe`], keeping the pages), and waits for the next one. The accept
//! thread hands a new connection to a waiting kept thread, or, when all of them are busy,
//! starts a thread for that one connection as before, which gives its stack back and ends
//! with it. Every connection still has a thread of its own, and everything that bounds
//! connections (the cap, admission and eviction, deadlines) is unchanged: a kept thread
//! holds no slot while it waits.
//!
//! Kept threads are started before the first connection, not kept from a burst: whatever
//! a thread allocates when it starts stays as long as it lives, and blocks allocated in
//! the middle of a burst would sit high in the heap and keep glibc from giving the burst's
//! memory back (the memory tests in `tests/startup.rs` watch exactly that).

use crate::sys::wipe::ThreadStack;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

/// Connection threads started with the server and kept between connections. Enough for
/// the concurrency that clients opening connection after connection produce (the
/// benchmark's 16 clients, each with a fresh mTLS connection per request; MinIO nodes keep
/// a handful of connections each, so their threads are kept anyway); a burst above it gets
/// threads of its own as before. Each waiting kept thread costs the stack pages it
/// touched (zeroed, and under `mlockall` locked: 8-60 KiB) and its kernel task, about
/// 0.5 MiB for all 16 after heavy use.
pub const KEPT_THREADS: usize = 16;

/// One kept thread, as the accept thread sees it while it waits.
struct Seat<J> {
    job: Mutex<Option<J>>,
    thread: Thread,
}

/// The kept threads waiting for a connection. `J` is what a connection thread is given
/// (the admitted connection); `run` serves it.
pub struct Workers<J> {
    waiting: Mutex<Vec<Arc<Seat<J>>>>,
    stopping: AtomicBool,
    run: fn(J),
    stack_size: usize,
}

impl<J: Send + 'static> Workers<J> {
    /// Starts `count` kept threads named `name` with stacks of `stack_size` bytes.
    /// Threads that cannot be started are simply not kept (each connection then gets a
    /// thread of its own, as before).
    pub fn start(count: usize, name: &str, stack_size: usize, run: fn(J)) -> Arc<Workers<J>> {
        let workers = Arc::new(Workers {
            waiting: Mutex::new(Vec::with_capacity(count)),
            stopping: AtomicBool::new(false),
            run,
            stack_size,
        });
        for _ in 0..count {
            let w = workers.clone();
            let _ = std::thread::Builder::new()
                .name(name.into())
                .stack_size(stack_size)
                .spawn(move || w.kept_loop());
        }
        workers
    }

    /// Gives `job` to a waiting kept thread; hands it back when none is waiting.
    pub fn give(&self, job: J) -> Result<(), J> {
        let seat = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let Some(seat) = seat else { return Err(job) };
        *seat.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
        seat.thread.unpark();
        Ok(())
    }

    /// Kept threads waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Ends the kept threads: waiting ones at once, busy ones after their connection.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        for seat in self.waiting.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            seat.thread.unpark();
        }
    }

    fn kept_loop(self: Arc<Self>) {
        let stack = ThreadStack::current(self.stack_size);
        let seat = Arc::new(Seat { job: Mutex::new(None), thread: std::thread::current() });
        loop {
            {
                let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                if self.stopping.load(Ordering::Acquire) {
                    break;
                }
                waiting.push(seat.clone());
            }
            let job = loop {
                if let Some(job) = seat.job.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    break Some(job);
                }
                if self.stopping.load(Ordering::Acquire) {
                    break None;
                }
                std::thread::park();
            };
            let Some(job) = job else { break };
            // A panic that escapes `run` (a bug) ends this connection, not the thread.
            let run = self.run;
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || run(job)));
            stack.wipe();
        }
        stack.release();
    }
}

/// Starts a thread for one connection, which gives its stack back and ends with it.
pub fn spawn_one<J: Send + 'static>(
    job: J,
    name: &str,
    stack_size: usize,
    run: fn(J),
) -> std::io::Result<()> {
    std::thread::Builder::new().name(name.into()).stack_size(stack_size).spawn(move || {
        run(job);
        crate::sys::wipe::release_stack(stack_size);
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    static SENT: Mutex<Option<mpsc::Sender<(u32, std::thread::ThreadId)>>> = Mutex::new(None);

    fn report(n: u32) {
        let tx = SENT.lock().unwrap().clone().unwrap();
        tx.send((n, std::thread::current().id())).unwrap();
    }

    /// Jobs go to the kept threads while one waits, each thread serving one job after
    /// another; with none waiting the job comes back for a thread of its own; after stop
    /// nothing waits.
    #[test]
    fn kept_threads_serve_job_after_job_and_stop() {
        let (tx, rx) = mpsc::channel();
        *SENT.lock().unwrap() = Some(tx);
        let w = Workers::start(2, "kept-test", 256 << 10, report);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while w.waiting() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(w.waiting(), 2);
        let mut threads = std::collections::HashSet::new();
        for n in 0..20 {
            // Wait for a kept thread to be back, then hand it the next job.
            let mut job = n;
            loop {
                match w.give(job) {
                    Ok(()) => break,
                    Err(back) => job = back,
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let (got, id) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            assert_eq!(got, n);
            threads.insert(id);
        }
        assert!(threads.len() <= 2, "{} threads served 20 jobs", threads.len());
        while w.waiting() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        w.stop();
        assert_eq!(w.waiting(), 0);
        assert_eq!(w.give(99), Err(99));
    }
}
