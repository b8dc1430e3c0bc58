//! The seccomp-bpf allow-list installed on every thread before the first accept. Anything
//! not listed kills the process (SIGSYS): a compromised request handler cannot exec,
//! ptrace, mount, load modules or open raw sockets.
//!
//! Each entry says who needs it. The list covers the server (TLS, HTTP, threads), the key
//! stores (fs: create/link/fsync/list; Azure: outbound TLS, glibc DNS), the cache thread and
//! the signal thread.

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use std::collections::BTreeMap;

/// System calls allowed on every architecture.
fn common() -> Vec<(i64, &'static str)> {
    vec![
        // I/O on sockets and files.
        (libc::SYS_read, "rustls/std reads"),
        (libc::SYS_write, "responses, logs"),
        (libc::SYS_readv, "std"),
        (libc::SYS_writev, "rustls StreamOwned writes"),
        (libc::SYS_pread64, "/proc/self/status via a pre-opened fd"),
        (libc::SYS_pwrite64, "std"),
        (libc::SYS_close, "sockets, files"),
        (libc::SYS_openat, "fs store, glibc DNS config files"),
        (libc::SYS_newfstatat, "std metadata"),
        (libc::SYS_fstat, "std"),
        (libc::SYS_statx, "std metadata"),
        (libc::SYS_lseek, "std files"),
        (libc::SYS_ioctl, "std FIONBIO"),
        (libc::SYS_fcntl, "std sockets"),
        (libc::SYS_getdents64, "fs store listing"),
        (libc::SYS_linkat, "fs store create (link into place)"),
        (libc::SYS_unlinkat, "fs store delete and temp cleanup"),
        (libc::SYS_mkdirat, "fs store directory"),
        (libc::SYS_renameat, "sealed cache: replace a sealed copy atomically"),
        (libc::SYS_renameat2, "sealed cache: replace a sealed copy atomically"),
        (libc::SYS_fsync, "fs store durability"),
        (libc::SYS_fdatasync, "fs store durability"),
        (libc::SYS_fchmod, "fs store file modes"),
        (libc::SYS_readlinkat, "std current_exe"),
        (libc::SYS_uname, "glibc resolver"),
        // Memory.
        (libc::SYS_mmap, "allocator, thread stacks"),
        (libc::SYS_munmap, "allocator"),
        (libc::SYS_mprotect, "thread guard pages"),
        (libc::SYS_mremap, "allocator"),
        (libc::SYS_madvise, "allocator"),
        (libc::SYS_brk, "allocator"),
        (libc::SYS_mlock, "allocator under MCL_FUTURE"),
        (libc::SYS_munlock, "allocator"),
        // Threads and synchronisation.
        (libc::SYS_futex, "mutexes, condvars, joins"),
        (libc::SYS_clone, "thread spawn (older glibc)"),
        (libc::SYS_clone3, "thread spawn"),
        (libc::SYS_set_robust_list, "new threads"),
        (libc::SYS_rseq, "new threads (glibc 2.35+)"),
        (libc::SYS_sched_getaffinity, "available_parallelism"),
        (libc::SYS_sched_yield, "spin loops"),
        (libc::SYS_gettid, "std"),
        (libc::SYS_getpid, "std"),
        (libc::SYS_prctl, "thread names"),
        (libc::SYS_exit, "thread exit"),
        (libc::SYS_exit_group, "process exit"),
        (libc::SYS_tgkill, "abort"),
        (libc::SYS_prlimit64, "glibc pthread stack sizing"),
        (libc::SYS_membarrier, "glibc"),
        // Signals.
        (libc::SYS_rt_sigprocmask, "thread creation, sigwait"),
        (libc::SYS_rt_sigaction, "std runtime"),
        (libc::SYS_rt_sigreturn, "signal return"),
        (libc::SYS_rt_sigtimedwait, "the signal thread (SIGHUP, SIGTERM)"),
        (libc::SYS_sigaltstack, "std stack overflow handler"),
        (libc::SYS_restart_syscall, "interrupted sleeps"),
        // Time and randomness.
        (libc::SYS_clock_gettime, "vDSO fallback"),
        (libc::SYS_clock_nanosleep, "sleeps, retry backoff"),
        (libc::SYS_nanosleep, "sleeps"),
        (libc::SYS_getrandom, "keys, nonces, TLS"),
        // Networking.
        (libc::SYS_accept4, "the accept loop"),
        (libc::SYS_socket, "Azure client, DNS, waking the accept loop"),
        (libc::SYS_connect, "Azure client, DNS"),
        (libc::SYS_getsockopt, "connect errors"),
        (libc::SYS_setsockopt, "timeouts, nodelay"),
        (libc::SYS_getsockname, "std"),
        (libc::SYS_getpeername, "client addresses"),
        (libc::SYS_shutdown, "closing connections"),
        (libc::SYS_recvfrom, "sockets, DNS"),
        (libc::SYS_sendto, "sockets, DNS"),
        (libc::SYS_recvmsg, "DNS"),
        (libc::SYS_sendmsg, "DNS"),
        (libc::SYS_sendmmsg, "glibc DNS (A and AAAA together)"),
        (libc::SYS_ppoll, "connect timeouts"),
        (libc::SYS_pipe2, "std"),
        (libc::SYS_dup3, "std"),
        (libc::SYS_eventfd2, "std"),
        (libc::SYS_epoll_create1, "std"),
        (libc::SYS_epoll_ctl, "std"),
        (libc::SYS_epoll_pwait, "std"),
    ]
}

#[cfg(target_arch = "x86_64")]
fn arch_specific() -> Vec<(i64, &'static str)> {
    vec![
        (libc::SYS_open, "older std/glibc paths"),
        (libc::SYS_stat, "older glibc"),
        (libc::SYS_lstat, "older glibc"),
        (libc::SYS_poll, "connect timeouts, DNS"),
        (libc::SYS_access, "glibc"),
        (libc::SYS_readlink, "std current_exe"),
        (libc::SYS_getdents, "older glibc"),
        (libc::SYS_link, "older glibc"),
        (libc::SYS_unlink, "older glibc"),
        (libc::SYS_rename, "older glibc (sealed cache)"),
        (libc::SYS_mkdir, "older glibc"),
        (libc::SYS_arch_prctl, "thread-local storage"),
        (libc::SYS_epoll_wait, "std"),
        (libc::SYS_accept, "older glibc"),
    ]
}

#[cfg(target_arch = "aarch64")]
fn arch_specific() -> Vec<(i64, &'static str)> {
    vec![]
}

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// The number and purpose of every allowed system call.
pub fn allowed() -> Vec<(i64, &'static str)> {
    let mut v = common();
    v.extend(arch_specific());
    v
}

/// Compiles the filter; `mismatch` is what a forbidden call gets.
pub fn compile(mismatch: SeccompAction) -> Result<BpfProgram, String> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        allowed().into_iter().map(|(nr, _)| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, ARCH)
        .map_err(|e| format!("seccomp: {e}"))?;
    filter.try_into().map_err(|e: seccompiler::BackendError| format!("seccomp: {e}"))
}

/// Installs the filter on every thread of the process (TSYNC).
pub fn install(mismatch: SeccompAction) -> Result<(), String> {
    let prog = compile(mismatch)?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("seccomp: set no_new_privs: {e}"))?;
    seccompiler::apply_filter_all_threads(&prog).map_err(|e| format!("seccomp: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_and_has_no_duplicates() {
        let list = allowed();
        let mut nrs: Vec<i64> = list.iter().map(|(n, _)| *n).collect();
        nrs.sort();
        let before = nrs.len();
        nrs.dedup();
        assert_eq!(before, nrs.len(), "duplicate syscall in the allow-list");
        assert!(!nrs.contains(&libc::SYS_execve));
        assert!(!nrs.contains(&libc::SYS_ptrace));
        assert!(compile(SeccompAction::KillProcess).is_ok());
    }

    /// Re-executes this test binary; the child installs the filter and makes a forbidden
    /// call. With `Errno(EPERM)` the call fails and the child reports it; with
    /// `KillProcess` the child dies of SIGSYS.
    #[test]
    fn forbidden_calls_are_refused_and_kill() {
        if let Ok(mode) = std::env::var("KES_SECCOMP_CHILD") {
            let action = if mode == "errno" {
                SeccompAction::Errno(libc::EPERM as u32)
            } else {
                SeccompAction::KillProcess
            };
            install(action).unwrap();
            // execve is never allowed.
            let err = std::process::Command::new("/bin/true").status();
            match err {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => std::process::exit(42),
                other => panic!("exec was not refused: {other:?}"),
            }
        }
        let exe = std::env::current_exe().unwrap();
        let run = |mode: &str| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "sys::seccomp::tests::forbidden_calls_are_refused_and_kill",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("KES_SECCOMP_CHILD", mode)
                .output()
                .unwrap()
        };
        let out = run("errno");
        assert_eq!(out.status.code(), Some(42), "{}", String::from_utf8_lossy(&out.stderr));
        use std::os::unix::process::ExitStatusExt;
        let out = run("kill");
        assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{:?}", out.status);
    }
}
