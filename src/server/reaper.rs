//! Joins the connection threads started for one connection (those beyond the kept ones of
//! [`super::workers`]) as they end, so that what glibc keeps for a thread goes with it. A
//! detached thread cannot free its own stack (it is running on it): glibc frees the stack
//! of the last detached thread to end only when the next one ends, and a thread's stack
//! carries a small heap block, its TLS vector (DTV, `calloc`ed by `pthread_create`). In a
//! burst of connections that block is allocated near the top of the heap, the stack that
//! owns it circulates (each new thread takes the stack the previous one left), and once
//! the burst is over it stays: one 304-byte block keeps the megabytes below it in the heap,
//! which under `mlockall` stay resident and locked. A joined thread's stack and DTV are
//! freed by the join (with `glibc.pthread.stack_cache_size=0`, which `kes server` sees to,
//! see [`crate::sys::tunables`]), so nothing of a connection outlives it.
//!
//! The accept thread hands each such thread's [`JoinHandle`] to the [`Reaper`]; the thread
//! says it is done as its last act ([`DoneGuard`]); the reaper thread joins it (the join
//! waits the few microseconds until the thread has really exited). Tables are sized up
//! front, so the reaper allocates nothing per connection that could itself end up high in
//! the heap.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{JoinHandle, ThreadId};

/// Stack of the reaper thread: it only locks, waits and joins.
const REAPER_STACK: usize = 64 << 10;

/// At most this many entries are allocated up front; a larger `--max-connections` grows
/// the tables as connections come (the same bound as the admission registry's slots).
const PREALLOCATED: usize = 1 << 16;

/// Connection threads that have not been joined yet.
pub struct Reaper {
    state: Mutex<State>,
    /// Signalled when a thread is done or a handle arrives for one that already is.
    wake: Condvar,
}

struct State {
    running: HashMap<ThreadId, JoinHandle<()>>,
    /// Threads that said they are done, not yet joined.
    done: Vec<ThreadId>,
    stopping: bool,
}

impl Reaper {
    /// Starts the reaper thread, with room for `threads` concurrent connection threads.
    pub fn start(threads: usize) -> std::io::Result<Arc<Reaper>> {
        let room = threads.min(PREALLOCATED);
        let reaper = Arc::new(Reaper {
            state: Mutex::new(State {
                running: HashMap::with_capacity(room),
                done: Vec::with_capacity(room),
                stopping: false,
            }),
            wake: Condvar::new(),
        });
        let r = reaper.clone();
        std::thread::Builder::new()
            .name("kes-reaper".into())
            .stack_size(REAPER_STACK)
            .spawn(move || r.run(room))?;
        Ok(reaper)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the handle of a connection thread just spawned.
    pub fn track(&self, handle: JoinHandle<()>) {
        let mut st = self.lock();
        st.running.insert(handle.thread().id(), handle);
        // The thread may have ended before its handle got here.
        if !st.done.is_empty() {
            self.wake.notify_one();
        }
    }

    /// A guard to move into a connection thread: [`DoneGuard::arm`] it as the thread's
    /// first local, so that it drops last, however the thread ends. Dropped unarmed (the
    /// thread could not be started), it says nothing.
    pub fn done_guard(self: &Arc<Self>) -> DoneGuard {
        DoneGuard { reaper: self.clone(), armed: false }
    }

    /// Ends the reaper thread; threads not joined by then are left detached.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_one();
    }

    fn run(&self, room: usize) {
        let mut joinable = Vec::with_capacity(room);
        let mut st = self.lock();
        loop {
            while !st.stopping && !st.done.iter().any(|id| st.running.contains_key(id)) {
                st = self.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            if st.stopping {
                return;
            }
            let State { running, done, .. } = &mut *st;
            done.retain(|id| match running.remove(id) {
                Some(handle) => {
                    joinable.push(handle);
                    false
                }
                None => true,
            });
            drop(st);
            for handle in joinable.drain(..) {
                let _ = handle.join();
            }
            st = self.lock();
        }
    }
}

/// Tells the [`Reaper`] that the current thread is done, when dropped armed.
pub struct DoneGuard {
    reaper: Arc<Reaper>,
    armed: bool,
}

impl DoneGuard {
    /// Called by the connection thread itself, first thing.
    pub fn arm(mut self) -> DoneGuard {
        self.armed = true;
        self
    }
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let id = std::thread::current().id();
        let mut st = self.reaper.lock();
        st.done.push(id);
        if st.running.contains_key(&id) {
            self.reaper.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Every tracked thread is joined once it says it is done, including one that is done
    /// before its handle is tracked, and the tables end empty.
    #[test]
    fn every_done_thread_is_joined() {
        let reaper = Reaper::start(8).unwrap();
        // Unarmed (a thread that never started): not reported.
        drop(reaper.done_guard());
        assert!(reaper.lock().done.is_empty());
        let (tx, rx) = std::sync::mpsc::channel();
        let mut handles = Vec::new();
        for i in 0..8 {
            let guard = reaper.done_guard();
            let tx = tx.clone();
            handles.push(std::thread::spawn(move || {
                let _guard = guard.arm();
                tx.send(i).unwrap();
            }));
        }
        // All eight are done (or about to be) before any handle is tracked.
        for _ in 0..8 {
            rx.recv().unwrap();
        }
        for h in handles {
            reaper.track(h);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = reaper.lock();
            if st.running.is_empty() && st.done.is_empty() {
                break;
            }
            drop(st);
            assert!(Instant::now() < deadline, "threads were not joined");
            std::thread::sleep(Duration::from_millis(10));
        }
        reaper.stop();
    }
}
