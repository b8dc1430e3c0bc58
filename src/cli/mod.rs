//! argv -> commands. The only code that prints or chooses exit codes (0 success, 1 error
//! with `Error: …` on stderr, 2 usage; `kes-config-cli.md` §4.5).

pub mod server;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// A command's failure: a message for `Error: …` and an exit code.
#[derive(Debug)]
pub enum Fail {
    /// Exit 1 with `Error: <msg>`.
    Error(String),
    /// Exit 2 with the text on stderr (usage, help).
    Usage(String),
}

impl From<lexopt::Error> for Fail {
    fn from(e: lexopt::Error) -> Fail {
        Fail::Usage(format!("Error: {e}"))
    }
}

pub type CmdResult = Result<(), Fail>;

const USAGE: &str = "Usage:
    kes [options] <command>

Commands:
    server                   Start a KES server.

    ls                       List keys, policies and identities.
    key                      Manage cryptographic keys.
    policy                   Manage KES policies.
    identity                 Manage KES identities.

    log                      Print error and audit log events.
    status                   Print server status.
    metric                   Print server metrics.

    migrate                  Migrate KMS data.
    update                   Update KES binary.

Options:
    -v, --version            Print version information.
        --auto-completion    Install auto-completion for this shell.
    -h, --help               Print command line options.
";

/// Entry point of the `kes` binary.
pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Error(msg)) => {
            let red = std::io::stderr().is_terminal();
            let label = if red { "\x1b[31mError:\x1b[0m" } else { "Error:" };
            let _ = writeln!(std::io::stderr(), "{label} {msg}");
            ExitCode::from(1)
        }
        Err(Fail::Usage(text)) => {
            let _ = write!(std::io::stderr(), "{text}");
            if !text.ends_with('\n') {
                let _ = writeln!(std::io::stderr());
            }
            ExitCode::from(2)
        }
    }
}

/// The version lines of `kes --version` and the banner.
pub fn version_lines() -> Vec<(String, String)> {
    let info = crate::server::build_info();
    vec![
        ("Version".into(), format!("{:<22} commit={}", info.version, info.commit)),
        (
            "Runtime".into(),
            format!(
                "{:<22} compiler=rustc",
                format!(
                    "rust {}/{}",
                    std::env::consts::OS,
                    crate::api::handlers::status::go_arch()
                )
            ),
        ),
        (
            "License".into(),
            format!("{:<22} {}", "Apache-2.0", "https://www.apache.org/licenses/LICENSE-2.0"),
        ),
        ("Copyright".into(), format!("{:<22} {}", "The kes authors", "see the README")),
    ]
}

/// Writes to stdout; a closed pipe (`kes … | head`) ends quietly instead of panicking.
pub fn out(text: &str) -> CmdResult {
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Fail::Error(format!("cannot write to stdout: {e}"))),
    }
}

/// Writes to stderr, ignoring failures (there is nowhere else to report them).
pub fn err(text: &str) {
    let _ = std::io::stderr().write_all(text.as_bytes());
}

fn run(args: Vec<std::ffi::OsString>) -> CmdResult {
    let Some(first) = args.first().and_then(|a| a.to_str()).map(str::to_string) else {
        return Err(Fail::Usage(USAGE.to_string()));
    };
    let rest = args[1..].to_vec();
    match first.as_str() {
        "-h" | "--help" => Err(Fail::Usage(USAGE.to_string())),
        "-v" | "--version" => {
            let mut s = String::new();
            for (k, v) in version_lines() {
                s.push_str(&format!("{k:<11}{v}\n"));
            }
            out(&s)
        }
        "server" => server::run(rest),
        "update" => Err(Fail::Error(
            "'kes update' is not supported yet: install new versions with your package manager"
                .into(),
        )),
        "migrate" => Err(Fail::Error("'kes migrate' is not supported yet".into())),
        other if other.starts_with('-') => {
            Err(Fail::Usage(format!("Error: unknown flag: {other}\n\n{USAGE}")))
        }
        other => Err(Fail::Error(format!("\"{other}\" is not a kes command. See 'kes --help'"))),
    }
}
