//! Process hardening, in one place and in a fixed order (`STACK.md` §3): lock memory so key
//! material never reaches swap, make the process non-dumpable (no core files, no ptrace
//! by other users), then confine the system calls every thread may make (seccomp). Also
//! the allocator that wipes freed memory ([`wipe`]). The only module that may use `unsafe`:
//! the allocator, the stack release, `mallopt` and `getauxval` ([`wipe`], [`tunables`]),
//! and raw system calls in the seccomp tests.

pub mod seccomp;
pub mod tunables;
#[allow(unsafe_code)]
pub mod wipe;

use nix::sys::mman::{MlockAllFlags, mlockall};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use std::sync::atomic::{AtomicU8, Ordering};

/// Whether to lock memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlockPolicy {
    /// Lock when the process can lock without limit; otherwise run without locking.
    Try,
    /// Lock or fail (`--mlock`).
    Require,
    /// Never lock (`--no-mlock`, tests).
    Skip,
}

/// What hardening achieved, for the banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardened {
    pub mlock: bool,
    pub seccomp: bool,
    /// Why memory is not locked, when it is not.
    pub mlock_off: Option<String>,
}

/// How the process's memory is locked, as [`harden`] left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locking {
    None,
    /// `MCL_ONFAULT`: a page is locked when it is first touched.
    OnFault,
    /// `MCL_CURRENT | MCL_FUTURE` without `MCL_ONFAULT`: every mapping resident and locked.
    Full,
}

static LOCKING: AtomicU8 = AtomicU8::new(0);

/// How memory is locked now (read when a connection thread gives back its stack).
pub fn locking() -> Locking {
    match LOCKING.load(Ordering::Relaxed) {
        1 => Locking::OnFault,
        2 => Locking::Full,
        _ => Locking::None,
    }
}

/// Capability bit of CAP_IPC_LOCK in `CapEff`.
const CAP_IPC_LOCK: u32 = 14;

/// Why locking would fail, or `None` when it can succeed. mlockall without CAP_IPC_LOCK
/// "succeeds" at startup and then aborts the process on the first allocation over
/// RLIMIT_MEMLOCK, so this is checked *before* locking.
pub fn mlock_obstacle() -> Option<String> {
    let cap = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0);
    if cap {
        return None;
    }
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) if soft == nix::sys::resource::RLIM_INFINITY => None,
        Ok((soft, _)) => Some(format!(
            "the process lacks CAP_IPC_LOCK and RLIMIT_MEMLOCK is {soft} bytes, not unlimited"
        )),
        Err(e) => Some(format!("cannot read RLIMIT_MEMLOCK: {e}")),
    }
}

/// The fix to print when `--mlock` cannot be honoured. Not a file capability (`setcap`): it
/// puts the binary in glibc's secure mode, where the server's glibc tunables are ignored
/// ([`tunables`]).
pub const MLOCK_FIX: &str = "run it under systemd with AmbientCapabilities=CAP_IPC_LOCK and LimitMEMLOCK=infinity (the packaged unit), \
as root, or with an unlimited memlock limit (e.g. 'sudo prlimit --memlock=unlimited --pid $$' before starting it from that shell)";

/// Locks every page of the process, now and in the future, *as it is touched*
/// (`MCL_ONFAULT`, Linux >= 4.4): nothing that was ever resident can be swapped out, yet an
/// idle connection thread costs the stack pages it used rather than its whole stack.
/// Kernels that refuse the flag (EINVAL) get today's `MCL_CURRENT | MCL_FUTURE`, which
/// faults in and locks every mapping in full.
fn lock_all() -> nix::Result<()> {
    let classic = MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE;
    let mode = match mlockall(classic | MlockAllFlags::from_bits_retain(libc::MCL_ONFAULT)) {
        Err(nix::errno::Errno::EINVAL) => mlockall(classic).map(|()| Locking::Full),
        other => other.map(|()| Locking::OnFault),
    }?;
    LOCKING.store(mode as u8, Ordering::Relaxed);
    Ok(())
}

/// Sets the allocator up so that the heap follows use ([`tunables::heap_settings`]): every
/// thread's allocations in glibc's main heap (`M_ARENA_MAX` 1) unless the environment
/// chose (`MALLOC_ARENA_MAX`). Under `mlockall` the kernel refuses to discard locked pages,
/// so a secondary arena (an mmap'd heap that glibc shrinks with `MADV_DONTNEED`) keeps the
/// high-water mark of a burst of connections resident and locked for ever; the main heap
/// shrinks with `brk`, which the lock does not stop. Runs before the server's first thread
/// (glibc gives each new thread a new arena up to the limit); later calls change nothing.
/// A no-op on other C libraries.
pub fn one_heap() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(tunables::heap_settings);
}

/// Hardens the process. Runs once, before the first accept: mlockall, non-dumpable, no
/// core files, then (when `seccomp`) the system-call filter on every thread.
pub fn harden(policy: MlockPolicy, seccomp: bool) -> Result<Hardened, String> {
    let mut locked = false;
    let mut mlock_off = None;
    if policy == MlockPolicy::Skip {
        mlock_off = Some("--no-mlock".to_string());
    } else {
        match mlock_obstacle() {
            None => match lock_all() {
                Ok(()) => locked = true,
                Err(e) if policy == MlockPolicy::Require => {
                    return Err(format!("failed to lock memory (mlockall): {e}; {MLOCK_FIX}"));
                }
                Err(e) => mlock_off = Some(format!("mlockall failed: {e}")),
            },
            Some(why) if policy == MlockPolicy::Require => {
                return Err(format!("cannot lock memory: {why}; {MLOCK_FIX}"));
            }
            Some(why) => mlock_off = Some(why),
        }
    }
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| format!("failed to set the process non-dumpable: {e}"))?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| format!("failed to disable core dumps: {e}"))?;
    if seccomp {
        self::seccomp::install(seccompiler::SeccompAction::KillProcess)?;
    }
    Ok(Hardened { mlock: locked, seccomp, mlock_off })
}

/// Logical CPUs online (`/sys/devices/system/cpu/online`, e.g. `0-3,6`); read at startup.
pub fn online_cpus() -> u64 {
    let Ok(text) = std::fs::read_to_string("/sys/devices/system/cpu/online") else {
        return usable_cpus();
    };
    let mut n = 0u64;
    for part in text.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
                    n += b.saturating_sub(a) + 1;
                }
            }
            None if !part.is_empty() => n += 1,
            None => {}
        }
    }
    n.max(1)
}

/// CPUs this process may run on.
pub fn usable_cpus() -> u64 {
    std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_counts_are_positive() {
        assert!(online_cpus() >= usable_cpus().min(online_cpus()));
        assert!(usable_cpus() >= 1);
    }
}

/// Tells systemd about our state (`sd_notify(3)`: `READY=1`, `RELOADING=1`, `STOPPING=1`)
/// when started by a `Type=notify` unit; a no-op otherwise. Failures are ignored: the unit
/// times out and says so.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let path = path.to_string_lossy().into_owned();
    let msg = format!("{state}\nMAINPID={}", std::process::id());
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
            let _ = sock.send_to_addr(msg.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(msg.as_bytes(), &path);
    }
}

#[cfg(test)]
mod notify_tests {
    #[test]
    fn notify_sends_the_state_to_the_socket() {
        let dir = std::env::temp_dir().join(format!("kes-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let exe = std::env::current_exe().unwrap();
        // Re-exec so the environment variable is only set in the child.
        if std::env::var_os("KES_NOTIFY_CHILD").is_some() {
            super::notify("READY=1");
            return;
        }
        let status = std::process::Command::new(exe)
            .args(["--exact", "sys::notify_tests::notify_sends_the_state_to_the_socket"])
            .env("KES_NOTIFY_CHILD", "1")
            .env("NOTIFY_SOCKET", &path)
            .output()
            .unwrap();
        assert!(status.status.success());
        let mut buf = [0u8; 128];
        listener.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let n = listener.recv(&mut buf).unwrap();
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(msg.starts_with("READY=1\nMAINPID="), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
