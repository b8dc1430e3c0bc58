//! The glibc settings the server's memory depends on, however it is started.
//!
//! Two of them exist only as tunables, read by glibc from `GLIBC_TUNABLES` when a program
//! starts (no `mallopt` sets them): no cache of ended threads' stacks and no per-thread
//! cache of freed blocks (tcache). Both kept small blocks high in the heap after a burst of
//! connections, and glibc shrinks its heap only from the top, so under `mlockall` a burst's
//! memory stayed resident and locked (README, Performance). The packaged unit sets them;
//! `kes server` started any other way re-executes itself once with them added to the
//! environment ([`plan`]), before it starts a thread, locks memory or confines system
//! calls. The decision is taken from the environment alone: the re-executed server finds
//! them there and goes on. It also finds [`REEXECUTED`], so that even a C library that
//! dropped them on the way could not make it loop. An operator's own `GLIBC_TUNABLES`
//! entries are kept, and one that names either tunable wins over ours.
//!
//! glibc ignores (and erases) these tunables in a program running in secure mode
//! (`AT_SECURE`: set-user-ID, or a binary with file capabilities such as `setcap
//! cap_ipc_lock=+ep`, run by anyone but root). Re-executing would change nothing there,
//! so the server says so once, with the fix.
//!
//! The rest is set from inside ([`heap_settings`]): one malloc arena, no fastbins and a
//! fixed trim threshold.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The tunables `kes server` runs with (the same as `systemd/kes.service`'s), as
/// `name=value`: ended threads' stacks are freed at once (the connection threads are
/// joined, see `server::reaper`), and freed blocks go back to the heap instead of staying
/// in the cache of the thread that freed them (the accept, signal, cache and log threads
/// outlive every burst).
pub const SERVER_TUNABLES: [&str; 2] =
    ["glibc.pthread.stack_cache_size=0", "glibc.malloc.tcache_count=0"];

/// Whether a `GLIBC_TUNABLES` value (`name=value` entries separated by `:`) names `name`.
pub fn names(tunables: &[u8], name: &str) -> bool {
    tunables
        .split(|&b| b == b':')
        .any(|entry| entry.split(|&b| b == b'=').next() == Some(name.as_bytes()))
}

/// `current` with each of [`SERVER_TUNABLES`] it does not name appended, or `None` when it
/// names them all (nothing to do).
pub fn merged(current: Option<&[u8]>) -> Option<Vec<u8>> {
    let current = current.unwrap_or_default();
    let missing: Vec<&str> = SERVER_TUNABLES
        .iter()
        .copied()
        .filter(|t| !names(current, t.split('=').next().unwrap_or(t)))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut out = current.to_vec();
    for t in missing {
        if !out.is_empty() {
            out.push(b':');
        }
        out.extend_from_slice(t.as_bytes());
    }
    Some(out)
}

/// What `kes server` does about its tunables, decided before anything else.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// The environment names both tunables (the unit's, a re-executed server's, the
    /// operator's own choice), or this is not glibc: go on.
    Ready,
    /// Re-execute with this `GLIBC_TUNABLES`.
    Reexec(OsString),
    /// Secure mode: glibc would ignore them. Go on; print this warning.
    Ignored(String),
}

/// The warning for a server in glibc's secure mode.
pub const SECURE_MODE_WARNING: &str = "glibc runs kes in secure mode (the binary has file capabilities, e.g. from 'setcap cap_ipc_lock=+ep', or is set-user-ID) and ignores GLIBC_TUNABLES there, so memory taken by bursts of connections stays with the server (locked, with mlock). \
Remove the file capability ('sudo setcap -r $(readlink -f $(which kes))') and give the server CAP_IPC_LOCK another way: run it as root, under systemd with AmbientCapabilities=CAP_IPC_LOCK (the packaged unit), or with an unlimited memlock limit (ulimit -l unlimited)";

/// Set in the environment of the re-executed server: it never re-executes again.
pub const REEXECUTED: &str = "KES_REEXECUTED";

/// Decides from the environment and the process's secure mode.
pub fn plan() -> Plan {
    if !cfg!(target_env = "gnu") {
        return Plan::Ready;
    }
    let current = std::env::var_os("GLIBC_TUNABLES");
    let Some(merged) = merged(current.as_deref().map(OsStrExt::as_bytes)) else {
        return Plan::Ready;
    };
    if secure_mode() {
        return Plan::Ignored(SECURE_MODE_WARNING.to_string());
    }
    if std::env::var_os(REEXECUTED).is_some() {
        return Plan::Ignored(format!(
            "restarted with GLIBC_TUNABLES={}, yet the C library does not show them; going on without",
            String::from_utf8_lossy(&merged)
        ));
    }
    Plan::Reexec(OsString::from_vec(merged))
}

/// Replaces the process (same PID, so systemd's `Type=notify` and `MAINPID` still hold)
/// with `/proc/self/exe` run with the same arguments and environment plus `tunables` as
/// `GLIBC_TUNABLES` (and [`REEXECUTED`]). Returns only on failure.
pub fn reexec(tunables: &OsStr) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    if let Some(argv0) = args.next() {
        cmd.arg0(argv0);
    }
    cmd.args(args).env("GLIBC_TUNABLES", tunables).env(REEXECUTED, "1").exec()
}

/// Whether glibc runs this process in secure mode (`AT_SECURE`), where it ignores tunables.
#[allow(unsafe_code)]
pub fn secure_mode() -> bool {
    // SAFETY: getauxval reads the process's auxiliary vector; it has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Glibc's static trim threshold (`M_TRIM_THRESHOLD`'s default): free memory at the top of
/// the heap beyond this goes back to the kernel. Set explicitly so that it stays fixed:
/// left alone, glibc raises it to twice the largest block ever freed from its own mapping
/// (one of 1 MiB while starting), and a burst that grew the heap by less than 2 MiB
/// never gave it back.
pub const TRIM_THRESHOLD: i32 = 128 << 10;

/// The allocator settings that make the heap follow use, from inside the process (these
/// work in secure mode too), each unless the environment chose it:
/// * one arena (`M_ARENA_MAX` 1, see [`super::one_heap`]);
/// * no fastbins (`M_MXFAST` 0): a freed small block is merged with its free neighbours at
///   once instead of staying, marked in use, in a fastbin, where blocks freed at the end
///   of a burst held the top of the heap up;
/// * a fixed trim threshold ([`TRIM_THRESHOLD`]).
#[allow(unsafe_code)]
pub fn heap_settings() {
    #[cfg(target_env = "gnu")]
    {
        let env = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
        let chosen = |tunable: &str, alias: &str| {
            names(env.as_bytes(), tunable)
                || (!alias.is_empty() && std::env::var_os(alias).is_some())
        };
        let settings = [
            ("glibc.malloc.arena_max", "MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 1),
            ("glibc.malloc.mxfast", "", libc::M_MXFAST, 0),
            (
                "glibc.malloc.trim_threshold",
                "MALLOC_TRIM_THRESHOLD_",
                libc::M_TRIM_THRESHOLD,
                TRIM_THRESHOLD,
            ),
        ];
        for (tunable, alias, param, value) in settings {
            if !chosen(tunable, alias) {
                // SAFETY: mallopt sets a glibc allocator parameter; it takes the
                // allocator's lock.
                unsafe { libc::mallopt(param, value) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_matches_whole_entry_names_only() {
        let t = b"glibc.malloc.tcache_count=7:glibc.malloc.arena_max=2";
        assert!(names(t, "glibc.malloc.tcache_count"));
        assert!(names(t, "glibc.malloc.arena_max"));
        assert!(!names(t, "glibc.malloc.tcache"));
        assert!(!names(t, "glibc.pthread.stack_cache_size"));
        assert!(!names(b"", "glibc.malloc.tcache_count"));
    }

    #[test]
    fn merged_adds_what_is_missing_and_keeps_the_rest() {
        let ours = SERVER_TUNABLES.join(":");
        assert_eq!(merged(None).unwrap(), ours.as_bytes());
        assert_eq!(merged(Some(b"")).unwrap(), ours.as_bytes());
        assert_eq!(
            merged(Some(b"glibc.malloc.arena_max=2")).unwrap(),
            format!("glibc.malloc.arena_max=2:{ours}").as_bytes()
        );
        // The operator's value for one of ours wins; only the other is added.
        assert_eq!(
            merged(Some(b"glibc.malloc.tcache_count=7")).unwrap(),
            b"glibc.malloc.tcache_count=7:glibc.pthread.stack_cache_size=0"
        );
        // Both named: nothing to do, whatever the values (no loop after a re-exec).
        assert_eq!(merged(Some(ours.as_bytes())), None);
        assert_eq!(
            merged(Some(b"glibc.pthread.stack_cache_size=9:x=1:glibc.malloc.tcache_count=3")),
            None
        );
    }
}
