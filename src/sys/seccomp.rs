//! The seccomp-bpf filters installed on every thread before the first accept. Anything not
//! listed kills the process (SIGSYS): a compromised request handler cannot exec, ptrace,
//! mount, load modules, open raw or netlink sockets, make memory executable, fork, or make
//! itself dumpable again.
//!
//! Each entry says who needs it. The list covers the server (TLS, HTTP, threads), the key
//! stores (fs: create/link/fsync/list; Azure: outbound TLS, glibc DNS), the cache thread and
//! the signal thread. Where a system call is needed only in some forms, its arguments are
//! checked too ([`arg_rules`]): `prctl`, `socket`, `mmap`, `mprotect`, `mlock2`, `clone`,
//! `ioctl`, `fcntl`.
//!
//! Three filters are stacked, because a filter has one action for a match; the kernel runs
//! them all and the harshest answer wins:
//! 1. the allow-list: every other call, or a listed call with other arguments, kills;
//! 2. `clone3` fails with `ENOSYS`: its flags sit in a struct that seccomp cannot read, and
//!    glibc then falls back to `clone`, whose flags the allow-list checks;
//! 3. an executable file mapping fails with `EPERM` instead of killing: glibc `dlopen`s NSS
//!    modules named in `/etc/nsswitch.conf` (`resolve`, `mdns4_minimal`, `sss`) on the first
//!    Azure DNS lookup, and when that load fails it skips the module and goes on to `dns`.
//!    Anonymous executable memory and `mprotect(PROT_EXEC)` (what injected code needs) kill.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
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
        (libc::SYS_madvise, "allocator; a connection thread releasing its stack"),
        (libc::SYS_brk, "allocator"),
        (libc::SYS_mlock, "allocator under MCL_FUTURE"),
        (libc::SYS_munlock, "allocator; a connection thread releasing its stack"),
        (libc::SYS_mlock2, "re-locking a released stack on fault (see arg_rules)"),
        (libc::SYS_mincore, "a connection thread finding the stack pages it touched"),
        // Threads and synchronisation.
        (libc::SYS_futex, "mutexes, condvars, joins"),
        (libc::SYS_clone, "thread spawn (threads only: see arg_rules)"),
        (libc::SYS_clone3, "glibc tries it first; filter 2 makes it fail with ENOSYS"),
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

/// `clone` flags every thread creation passes (glibc and musl `pthread_create`): a new thread
/// in this address space sharing files and signal handlers. `fork`, `vfork` and new
/// namespaces lack one of these or set one of [`CLONE_FORBIDDEN`].
const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD) as u64;

/// `clone` flags no thread creation sets: new namespaces, `vfork`, ptrace hooks.
const CLONE_FORBIDDEN: u64 = (libc::CLONE_VFORK
    | libc::CLONE_PTRACE
    | libc::CLONE_UNTRACED
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// `prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, ..)`: the libc crate does not name these yet.
const PR_SET_VMA: u64 = 0x5356_4d41;
const PR_SET_VMA_ANON_NAME: u64 = 0;

/// `FIONBIO` is a `c_ulong` on glibc and a `c_int` on musl.
#[allow(clippy::unnecessary_cast)]
fn fionbio() -> u64 {
    libc::FIONBIO as u64
}

/// `argN == value` on the low 32 bits (the argument is a C `int`).
fn eq(arg: u8, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, Len::Dword, Op::Eq, value).expect("valid seccomp condition")
}

/// `argN & mask == value` on the low 32 bits.
fn masked(arg: u8, mask: u64, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, Len::Dword, Op::MaskedEq(mask), value)
        .expect("valid seccomp condition")
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).expect("valid seccomp rule")
}

/// The argument forms allowed for the calls that are not allowed whole; any other form
/// kills. Each rule says who needs it.
pub fn arg_rules() -> Vec<(i64, Vec<SeccompRule>)> {
    let prot_exec = libc::PROT_EXEC as u64;
    let sock_type = |family: i32, ty: i32| {
        // The type argument also carries SOCK_NONBLOCK / SOCK_CLOEXEC: compare the low bits.
        rule(vec![eq(0, family as u64), masked(1, 0xf, ty as u64)])
    };
    vec![
        (
            libc::SYS_prctl,
            vec![
                // std names every thread it spawns (glibc pthread_setname_np on itself).
                rule(vec![eq(0, libc::PR_SET_NAME as u64)]),
                rule(vec![eq(0, libc::PR_GET_NAME as u64)]),
                // Newer glibc labels thread stacks and guard pages (glibc.mem.decorate_maps).
                rule(vec![eq(0, PR_SET_VMA), eq(1, PR_SET_VMA_ANON_NAME)]),
            ],
        ),
        (
            libc::SYS_socket,
            vec![
                // TLS listener peers are accepted, not created; these are outbound:
                // the Azure client (TCP over IPv4/IPv6) and the accept loop's wake-up.
                sock_type(libc::AF_INET, libc::SOCK_STREAM),
                sock_type(libc::AF_INET6, libc::SOCK_STREAM),
                // glibc DNS queries (UDP).
                sock_type(libc::AF_INET, libc::SOCK_DGRAM),
                sock_type(libc::AF_INET6, libc::SOCK_DGRAM),
                // glibc asks nscd first (stream); sd_notify to systemd (datagram).
                sock_type(libc::AF_UNIX, libc::SOCK_STREAM),
                sock_type(libc::AF_UNIX, libc::SOCK_DGRAM),
            ],
        ),
        (
            libc::SYS_mmap,
            vec![
                // The allocator and thread stacks: never executable.
                rule(vec![masked(2, prot_exec, 0)]),
                // An executable *file* mapping passes here and meets filter 3 (EPERM), so
                // an NSS module load fails softly; anonymous executable memory kills.
                rule(vec![masked(3, libc::MAP_ANONYMOUS as u64, 0)]),
            ],
        ),
        (
            libc::SYS_mprotect,
            // Thread guard pages (PROT_NONE) and the allocator; never executable.
            vec![rule(vec![masked(2, prot_exec, 0)])],
        ),
        (
            libc::SYS_mlock2,
            // A connection thread's released stack is locked again page by page as it is
            // touched (sys::wipe::release_stack); never a populating lock.
            vec![rule(vec![eq(2, libc::MLOCK_ONFAULT as u64)])],
        ),
        (
            libc::SYS_clone,
            // pthread_create after clone3 failed with ENOSYS: threads only.
            vec![rule(vec![masked(0, CLONE_THREAD_FLAGS | CLONE_FORBIDDEN, CLONE_THREAD_FLAGS)])],
        ),
        (
            libc::SYS_ioctl,
            // std's set_nonblocking, for the Azure client's connect timeout. Terminal
            // requests (TCGETS, TIOCGWINSZ) are the CLI's, which runs without the filter.
            vec![rule(vec![eq(1, fionbio())])],
        ),
        (
            libc::SYS_fcntl,
            vec![
                // std checks and sets close-on-exec and status flags on its descriptors.
                rule(vec![eq(1, libc::F_GETFD as u64)]),
                rule(vec![eq(1, libc::F_SETFD as u64)]),
                rule(vec![eq(1, libc::F_GETFL as u64)]),
                rule(vec![eq(1, libc::F_SETFL as u64)]),
                // try_clone of a socket or file (a duplicate stays close-on-exec).
                rule(vec![eq(1, libc::F_DUPFD_CLOEXEC as u64)]),
            ],
        ),
    ]
}

/// Compiles the allow-list; `mismatch` is what a forbidden call gets.
pub fn compile(mismatch: SeccompAction) -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        allowed().into_iter().map(|(nr, _)| (nr, Vec::new())).collect();
    for (nr, r) in arg_rules() {
        if rules.insert(nr, r).is_none() {
            return Err(format!(
                "seccomp: argument rules for system call {nr}, which is not allowed"
            ));
        }
    }
    build(rules, mismatch, SeccompAction::Allow)
}

/// Filter 2: `clone3` fails with `ENOSYS`, so glibc falls back to `clone`.
fn compile_clone3() -> Result<BpfProgram, String> {
    let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    build(rules, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32))
}

/// Filter 3: an executable mapping that the allow-list let through (a file mapping) fails
/// with `EPERM`.
fn compile_noexec() -> Result<BpfProgram, String> {
    let exec = vec![rule(vec![masked(2, libc::PROT_EXEC as u64, libc::PROT_EXEC as u64)])];
    let rules = BTreeMap::from([(libc::SYS_mmap, exec)]);
    build(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32))
}

fn build(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, String> {
    let filter =
        SeccompFilter::new(rules, mismatch, matched, ARCH).map_err(|e| format!("seccomp: {e}"))?;
    filter.try_into().map_err(|e: seccompiler::BackendError| format!("seccomp: {e}"))
}

/// Installs the three filters on every thread of the process (TSYNC). The allow-list goes
/// last: it does not allow `seccomp` itself.
pub fn install(mismatch: SeccompAction) -> Result<(), String> {
    let progs = [compile_clone3()?, compile_noexec()?, compile(mismatch)?];
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("seccomp: set no_new_privs: {e}"))?;
    for prog in &progs {
        seccompiler::apply_filter_all_threads(prog).map_err(|e| format!("seccomp: {e}"))?;
    }
    Ok(())
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
        assert!(compile_clone3().is_ok() && compile_noexec().is_ok());
    }

    /// One form of a system call, made in a child that runs under the real filters
    /// (`KillProcess`). Returns normally when the call succeeded; exits with the errno when
    /// it failed softly.
    #[allow(unsafe_code)]
    fn probe(case: &str) {
        use std::os::fd::AsRawFd;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = sock.as_raw_fd();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        install(SeccompAction::KillProcess).unwrap();
        let check = |r: libc::c_long| {
            if r < 0 {
                std::process::exit(std::io::Error::last_os_error().raw_os_error().unwrap_or(1));
            }
        };
        let map = |prot: i32, flags: i32, fd: i32| {
            // SAFETY: a fresh mapping of one page at an address the kernel chooses; it
            // aliases nothing and is never dereferenced.
            let p = unsafe { libc::mmap(std::ptr::null_mut(), 4096, prot, flags, fd, 0) };
            check(if p == libc::MAP_FAILED { -1 } else { 0 });
            p
        };
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY (every block below): a raw system call with plain integer arguments or a
        // pointer to a live local buffer of the size the call expects; nothing it returns is
        // dereferenced except that buffer.
        let r: libc::c_long = match case {
            "prctl-set-name" => unsafe { libc::prctl(libc::PR_SET_NAME, c"probe".as_ptr()) }.into(),
            "prctl-dumpable" => unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1) }.into(),
            "socket-tcp6" => unsafe { libc::socket(libc::AF_INET6, libc::SOCK_STREAM, 0) }.into(),
            "socket-unix-dgram" => {
                unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) }.into()
            }
            "socket-raw" => {
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) }.into()
            }
            "socket-netlink" => {
                unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM, 0) }.into()
            }
            "socket-packet" => unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0) }.into(),
            "mmap-rw" => {
                map(rw, anon, -1);
                0
            }
            "mmap-anon-exec" => {
                map(rw | libc::PROT_EXEC, anon, -1);
                0
            }
            "mmap-file-exec" => {
                map(libc::PROT_READ | libc::PROT_EXEC, libc::MAP_PRIVATE, file.as_raw_fd());
                0
            }
            "mprotect-none" => {
                let p = map(rw, anon, -1);
                unsafe { libc::mprotect(p, 4096, libc::PROT_NONE) }.into()
            }
            "mprotect-exec" => {
                let p = map(rw, anon, -1);
                unsafe { libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC) }.into()
            }
            "mlock2-onfault" | "mlock2-populate" => {
                let p = map(rw, anon, -1);
                let flags = if case == "mlock2-onfault" { libc::MLOCK_ONFAULT } else { 0 };
                unsafe { libc::syscall(libc::SYS_mlock2, p, 4096, flags as libc::c_long) }
            }
            "mincore" => {
                let p = map(rw, anon, -1);
                let mut v = [0u8; 1];
                unsafe { libc::mincore(p, 4096, v.as_mut_ptr()) }.into()
            }
            "thread" => {
                let t = std::thread::Builder::new().name("probe".into()).spawn(|| 7);
                assert_eq!(t.unwrap().join().unwrap(), 7);
                0
            }
            "clone3" => {
                let mut args = [0u64; 11];
                unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 88) }
            }
            "fork" => unsafe { libc::fork() }.into(),
            "ioctl-fionbio" => {
                sock.set_nonblocking(true).unwrap();
                0
            }
            "ioctl-tiocsti" => unsafe { libc::ioctl(0, libc::TIOCSTI, c"x".as_ptr()) }.into(),
            "fcntl-getfd" => unsafe { libc::fcntl(fd, libc::F_GETFD) }.into(),
            "fcntl-dupfd" => {
                sock.try_clone().unwrap();
                0
            }
            "fcntl-setown" => unsafe { libc::fcntl(fd, libc::F_SETOWN, 1) }.into(),
            "fcntl-setlease" => {
                unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) }.into()
            }
            other => panic!("unknown probe {other}"),
        };
        check(r);
    }

    /// Every argument rule, both ways: the allowed form works under the filter, the
    /// forbidden one kills the process with SIGSYS (or, for the two soft rules, fails with
    /// the errno glibc expects).
    #[test]
    fn argument_rules_allow_the_forms_used_and_kill_the_rest() {
        if let Ok(case) = std::env::var("KES_SECCOMP_PROBE") {
            probe(&case);
            std::process::exit(0);
        }
        use std::os::unix::process::ExitStatusExt;
        let exe = std::env::current_exe().unwrap();
        let run = |case: &str| {
            let out = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "sys::seccomp::tests::argument_rules_allow_the_forms_used_and_kill_the_rest",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("KES_SECCOMP_PROBE", case)
                .output()
                .unwrap();
            (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let allowed = [
            "prctl-set-name",
            "socket-tcp6",
            "socket-unix-dgram",
            "mmap-rw",
            "mprotect-none",
            "mlock2-onfault",
            "mincore",
            "thread",
            "ioctl-fionbio",
            "fcntl-getfd",
            "fcntl-dupfd",
        ];
        let killed = [
            "prctl-dumpable",
            "socket-raw",
            "socket-netlink",
            "socket-packet",
            "mmap-anon-exec",
            "mprotect-exec",
            "mlock2-populate",
            "fork",
            "ioctl-tiocsti",
            "fcntl-setown",
            "fcntl-setlease",
        ];
        for case in allowed {
            let (status, err) = run(case);
            assert_eq!(status.code(), Some(0), "{case} was refused: {status:?} {err}");
        }
        for case in killed {
            let (status, err) = run(case);
            assert_eq!(
                status.signal(),
                Some(libc::SIGSYS),
                "{case} was not killed: {status:?} {err}"
            );
        }
        // The soft rules: glibc falls back from clone3 on ENOSYS (the "thread" case above
        // shows it), and an NSS module load fails instead of killing.
        let (status, err) = run("clone3");
        assert_eq!(status.code(), Some(libc::ENOSYS), "{status:?} {err}");
        let (status, err) = run("mmap-file-exec");
        assert_eq!(status.code(), Some(libc::EPERM), "{status:?} {err}");
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
