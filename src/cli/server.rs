//! `kes server`: flags, the startup banner (`kes-config-cli.md` §3.7, with our own
//! licence lines), signals (SIGHUP reload, SIGINT/SIGTERM stop).

use super::{CmdResult, Fail, err, out};
use crate::obs::Level;
use crate::server::{self, Options};
use crate::sys::MlockPolicy;
use crate::sys::tunables::Plan;
use lexopt::prelude::*;
use nix::sys::signal::{SigSet, Signal};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};

const USAGE: &str = "Usage:
    kes server [options]

Options:
    --addr <IP:PORT>         The network interface the KES server will listen on.
                             The default is '0.0.0.0:7373' ('127.0.0.1:7373' with --dev).
    --config <PATH>          Path to the KES server config file.
    --dev                    Start a KES server in development mode: in-memory keys,
                             an ephemeral certificate and a printed admin API key.
    --mlock                  Fail unless all memory can be locked (no swapping).
    --no-mlock               Do not lock memory, even when permitted.
    --no-seccomp             Do not confine system calls (for debugging only).
    --no-reexec              Do not restart with the glibc tunables the server needs
                             (GLIBC_TUNABLES, see the README); the environment stays
                             as it is.
    --max-connections <N>    Serve at most N connections (default 1024); at the cap, idle
                             and slow ones are evicted for newcomers.
    --log-format <FMT>       'text' or 'json' (default: json unless stdout is a terminal).
    --signal-reload <PID>    Check the config file as a reload would, then tell the
                             server PID to reload (SIGHUP); a bad file fails here with
                             the reason. The systemd unit's ExecReload= runs this.
    --check                  Load and validate the config as the server would (TLS files,
                             policies, key store settings), print the effective settings
                             and every warning, and exit: 0 if the server would start.
                             Binds nothing and does not contact the key store.
    --keystore               With --check: also probe the key store (Azure: a token and
                             one list call) and say precisely what fails.

    -h, --help               Print command line options.

Examples:
    $ kes server --dev
    $ kes server --config config.yml
    $ kes server --check --keystore --config config.yml
";

fn stdio(w: impl std::io::Write + Send + 'static) -> crate::obs::SharedWriter {
    Arc::new(Mutex::new(Box::new(w)))
}

pub fn run(args: Vec<std::ffi::OsString>) -> CmdResult {
    let mut opts = Options::default();
    let mut parser = lexopt::Parser::from_args(args);
    let mut log_format: Option<String> = None;
    let mut mlock_flag = false;
    let mut no_mlock = false;
    let mut signal_reload: Option<i32> = None;
    let mut check = false;
    let mut probe = false;
    let mut reexec = true;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("config") => opts.config = Some(parser.value()?.into()),
            Long("addr") => opts.addr = Some(parser.value()?.string()?),
            Long("dev") => opts.dev = true,
            Long("mlock") => mlock_flag = true,
            Long("no-mlock") => no_mlock = true,
            Long("no-seccomp") => opts.seccomp = false,
            Long("no-reexec") => reexec = false,
            Long("check") => check = true,
            Long("keystore") => probe = true,
            Long("max-connections") => {
                opts.max_connections = parser.value()?.parse().map_err(|_| {
                    Fail::Error("--max-connections: expected a positive number".into())
                })?
            }
            Long("log-format") => log_format = Some(parser.value()?.string()?),
            Long("signal-reload") => {
                signal_reload =
                    Some(parser.value()?.parse().map_err(|_| {
                        Fail::Error("--signal-reload: expected a process ID".into())
                    })?)
            }
            Long(flag @ ("key" | "cert" | "auth")) => {
                let flag = flag.to_string();
                let _ = parser.value()?;
                err(&format!(
                    "WARNING: '--{flag}' is deprecated and ignored; set it in the config file (tls.{flag}) instead\n"
                ));
            }
            Short('h') | Long("help") => return Err(Fail::Usage(USAGE.into())),
            Value(v) => {
                return Err(Fail::Error(format!(
                    "too many arguments: '{}'. See 'kes server --help'",
                    v.to_string_lossy()
                )));
            }
            other => return Err(other.unexpected().into()),
        }
    }
    if opts.dev && opts.config.is_some() {
        return Err(Fail::Error("'--config' and '--dev' are mutually exclusive".into()));
    }
    if !opts.dev && opts.config.is_none() {
        return Err(Fail::Usage(format!(
            "Error: no config file specified: use --config FILE, or --dev\n\n{USAGE}"
        )));
    }
    if let Some(pid) = signal_reload {
        let path = opts
            .config
            .as_deref()
            .ok_or_else(|| Fail::Error("--signal-reload needs --config FILE".into()))?;
        return signal_reload_after_check(path, pid);
    }
    if probe && !check {
        return Err(Fail::Error("'--keystore' is only valid with '--check'".into()));
    }
    if check {
        if opts.dev {
            return Err(Fail::Error(
                "'--check' validates a config file: use it with --config, not --dev".into(),
            ));
        }
        return run_check(opts.config.as_deref().unwrap_or(Path::new("")), opts.addr, probe);
    }
    if mlock_flag && no_mlock {
        return Err(Fail::Error("'--mlock' and '--no-mlock' are mutually exclusive".into()));
    }
    opts.mlock = if mlock_flag {
        MlockPolicy::Require
    } else if no_mlock {
        MlockPolicy::Skip
    } else {
        MlockPolicy::Try
    };
    opts.log_json = match log_format.as_deref() {
        None => !std::io::stdout().is_terminal(),
        Some("json") => true,
        Some("text") => false,
        Some(other) => {
            return Err(Fail::Error(format!(
                "--log-format: unknown format '{other}' (use 'text' or 'json')"
            )));
        }
    };
    // Said after the start, just before the banner, so that a config error is the only
    // line a failed start prints.
    let tunables_note = if reexec { glibc_tunables() } else { None };
    opts.audit_out = Some(stdio(std::io::stdout()));
    opts.audit_batched = true;
    opts.error_out = Some(stdio(std::io::stderr()));

    // Signals are handled by sigwait on this thread: block them before any thread starts,
    // so that every thread inherits the mask.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGHUP);
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().map_err(|e| Fail::Error(format!("cannot block signals: {e}")))?;

    let srv = server::start(opts).map_err(|e| Fail::Error(e.0))?;
    if let Some(note) = tunables_note {
        out(&note)?;
    }
    out(&banner(&srv.banner))?;
    loop {
        match signals.wait() {
            Ok(Signal::SIGHUP) => match srv.reload() {
                Ok(changes) => {
                    // Upstream's line, then what changed, on one line.
                    out(&format!(
                        "=> Reloading configuration after SIGHUP signal completed. {changes}\n"
                    ))?;
                }
                Err(e) => err(&format!("Failed to reload server config: {e}\n")),
            },
            Ok(_) => {
                out("\n=> Stopping server... Goodbye.\n")?;
                srv.shutdown();
                return Ok(());
            }
            Err(e) => return Err(Fail::Error(format!("waiting for signals failed: {e}"))),
        }
    }
}

/// Restarts the process with the glibc tunables the server needs when its environment
/// lacks them (`sys::tunables`): before any thread, lock or filter. Returns the line to say
/// once the server has started: that it was restarted with them (the restarted process
/// finds the marker), or, in glibc's secure mode where they would be ignored, a warning
/// with the fix. A failed re-exec is a warning too: the server still starts.
fn glibc_tunables() -> Option<String> {
    match crate::sys::tunables::plan() {
        Plan::Ready => {
            let restarted = std::env::var_os(crate::sys::tunables::REEXECUTED).is_some();
            let tunables = std::env::var_os("GLIBC_TUNABLES").filter(|_| restarted)?;
            Some(format!(
                "Restarted with GLIBC_TUNABLES={} so that memory comes back after bursts of connections (--no-reexec: keep the environment as it is)\n",
                tunables.to_string_lossy()
            ))
        }
        Plan::Ignored(warning) => Some(format!("WARNING: {warning}\n")),
        Plan::Reexec(tunables) => {
            let e = crate::sys::tunables::reexec(&tunables);
            Some(format!(
                "WARNING: cannot restart with the glibc tunables: {e}; memory taken by bursts of connections may stay with the server. Set GLIBC_TUNABLES={} yourself\n",
                tunables.to_string_lossy()
            ))
        }
    }
}

/// `--signal-reload PID`: refuse a config file the server would refuse, so the reload
/// fails where the operator sees it (`systemctl reload` exits non-zero and `systemctl
/// status` shows this message), then hand the file to the server.
fn signal_reload_after_check(path: &std::path::Path, pid: i32) -> CmdResult {
    if pid <= 0 {
        return Err(Fail::Error("--signal-reload: expected a process ID".into()));
    }
    server::check_reload(path).map_err(|e| {
        Fail::Error(format!(
            "reload refused, the server keeps its current configuration: {}: {e}",
            path.display()
        ))
    })?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP)
        .map_err(|e| Fail::Error(format!("cannot signal the server (PID {pid}): {e}")))?;
    out(&format!("{}: checked; sent SIGHUP to PID {pid}\n", path.display()))?;
    Ok(())
}

/// The banner's MLock line when memory is not locked: why, and how to fix it (unless it
/// was asked for).
fn mlock_disabled(why: &str) -> String {
    if why == "--no-mlock" {
        return "disabled (--no-mlock)".into();
    }
    format!(
        "disabled: {why}; key material may be swapped to disk. To lock memory, {}",
        crate::sys::MLOCK_FIX
    )
}

/// `kes server --check [--keystore]`: settings and warnings on stdout, exit 1 on the
/// first error (the same message the server would stop with).
fn run_check(config: &Path, addr: Option<String>, probe: bool) -> CmdResult {
    let (report, loaded) =
        server::check::check(config, addr.as_deref()).map_err(|e| Fail::Error(e.0))?;
    out(&check_text(&report))?;
    if probe {
        match server::check::probe(&loaded.cfg.keystore) {
            Ok(what) => out(&row("Probe", &what))?,
            Err(why) => return Err(Fail::Error(format!("key store probe failed: {why}"))),
        }
    }
    out("\n=> Config OK: the server would start with these settings.\n")
}

/// The settings table and warnings of `--check`.
pub fn check_text(r: &server::check::Report) -> String {
    let mut s = String::new();
    for (label, value) in &r.settings {
        s.push_str(&row(label, value));
    }
    for w in &r.warnings {
        s.push_str(&format!("WARNING: {w}\n"));
    }
    s
}

fn row(label: &str, value: &str) -> String {
    format!("{label:<11}{value}\n")
}

/// The startup banner.
pub fn banner(b: &server::Banner) -> String {
    let mut s = String::new();
    for (k, v) in super::version_lines() {
        s.push_str(&row(&k, &v));
    }
    s.push('\n');
    s.push_str(&row("KMS", &b.keystore));
    let port = b.addr.port();
    if b.addr.ip().is_unspecified() {
        s.push_str(&row("API", &format!("· https://127.0.0.1:{port}")));
        s.push_str(&row("", &format!("· https://{}:{port} (all interfaces)", b.addr.ip())));
    } else {
        let host = match b.addr.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        s.push_str(&row("API", &format!("· https://{host}:{port}")));
    }
    s.push('\n');
    s.push_str(&row("Docs", "see README.md"));
    s.push('\n');
    if let Some(key) = &b.dev_api_key {
        s.push_str(&row("API Key", key));
    }
    let admin = if b.admin.is_hex() { b.admin.to_string() } else { "<disabled>".to_string() };
    s.push_str(&row("Admin", &admin));
    s.push_str(&row("Logs", &format!("error=stderr level={}", b.error_level.name())));
    if b.audit_level <= Level::INFO || b.dev_api_key.is_some() {
        s.push_str(&row("", &format!("audit=stdout level={}", b.audit_level.name())));
    }
    if b.mlock {
        s.push_str(&row("MLock", "enabled"));
    } else if let Some(why) = &b.mlock_off {
        s.push_str(&row("MLock", &mlock_disabled(why)));
    }
    if b.seccomp {
        s.push_str(&row("Seccomp", "enabled"));
    }
    for (i, line) in b.sealed.iter().flat_map(|l| l.lines()).enumerate() {
        s.push_str(&row(if i == 0 { "Cache" } else { "" }, line));
    }
    for w in &b.warnings {
        s.push_str(&format!("\nWARNING: {w}\n"));
    }
    if let Some(key) = &b.dev_api_key {
        let host = if b.addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            b.addr.ip().to_string()
        };
        s.push_str("\nClient environment (paste into a shell):\n");
        s.push_str(&format!("    export KES_SERVER=https://{host}:{}\n", b.addr.port()));
        s.push_str(&format!("    export KES_API_KEY={}\n", key.as_str()));
        s.push_str(
            "    # the dev certificate is self-signed: pass -k / --insecure to the kes CLI\n",
        );
    }
    s.push_str("\n=> Server is up and running...\n");
    s
}
