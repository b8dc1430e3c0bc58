//! argv -> commands. The only code that prints or chooses exit codes (0 success, 1 error
//! with `Error: …` on stderr, 2 usage; `kes-config-cli.md` §4.5).
//!
//! Flags follow upstream's pflag conventions (`--flag value`, `--flag=value`, combined short
//! flags, flags after arguments) and its error texts (`unknown flag: --x. See 'kes key
//! create --help'`). Output shapes depend on whether *stdout* is a terminal: a human gets
//! aligned text, a pipe gets JSON or bare values (see `client` for the network side).
//!
//! | file | commands |
//! |---|---|
//! | `server.rs` | `kes server` |
//! | `client.rs` | endpoints, credentials, trust, failover, the HTTP/1.1-over-TLS client |
//! | `password.rs` | the terminal prompt for the password of an encrypted private key |
//! | `ls.rs` | `kes ls` (and the deprecated `key ls`, `policy ls`, `identity ls`) |
//! | `key.rs` | `kes key` create, import, info, ls, rm, encrypt, decrypt, dek |
//! | `policy.rs` | `kes policy` info, show, ls |
//! | `identity.rs` | `kes identity [KEY or FILE]`, `identity` new, of, info, ls |
//! | `log.rs`, `status.rs`, `metric.rs` | `kes log`, `kes status`, `kes metric` |
//! | `complete.rs` | shell completion (`COMP_LINE`) and `--auto-completion` |

pub mod client;
pub mod complete;
pub mod identity;
pub mod key;
pub mod log;
pub mod ls;
pub mod metric;
pub mod password;
pub mod policy;
pub mod server;
pub mod status;

use crate::auth::apikey;
use std::ffi::OsString;
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
    if complete::complete(&client::process_env) {
        return ExitCode::SUCCESS;
    }
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
        "--auto-completion" => complete::install(),
        "server" => server::run(rest),
        "ls" => ls::run(rest),
        "key" => key::run(rest),
        "policy" => policy::run(rest),
        "identity" => identity::run(rest),
        "log" => log::run(rest),
        "status" => status::run(rest),
        "metric" => metric::run(rest),
        "update" => Err(Fail::Error(
            "'kes update' is not supported yet: install new versions with your package manager"
                .into(),
        )),
        "migrate" => Err(Fail::Error("'kes migrate' is not supported yet".into())),
        other if other.starts_with('-') => {
            Err(flag_error("", lexopt::Error::UnexpectedOption(other.to_string())))
        }
        other => Err(Fail::Error(format!("{other:?} is not a kes command. See 'kes --help'"))),
    }
}

/// A sub-command's entry point.
pub type SubCommand = fn(Vec<OsString>) -> CmdResult;

/// Dispatches a command group (`kes key <sub>`): a known sub-command runs; nothing or
/// `-h` prints the group's usage (exit 2); anything else is upstream's error.
pub fn dispatch(
    group: &str,
    usage: &str,
    args: Vec<OsString>,
    subs: &[(&str, SubCommand)],
) -> CmdResult {
    let Some(first) = args.first().map(|a| a.to_string_lossy().into_owned()) else {
        return Err(Fail::Usage(usage.to_string()));
    };
    if let Some((_, run)) = subs.iter().find(|(name, _)| *name == first) {
        return run(args[1..].to_vec());
    }
    match first.as_str() {
        "-h" | "--help" => Err(Fail::Usage(usage.to_string())),
        flag if flag.starts_with('-') && flag.len() > 1 => {
            Err(flag_error(group, lexopt::Error::UnexpectedOption(flag.to_string())))
        }
        other => Err(Fail::Error(format!(
            "{other:?} is not a {group} command. See 'kes {group} --help'"
        ))),
    }
}

/// A flag-parsing error in pflag's words, pointing at the command's help.
pub fn flag_error(cmd: &str, e: lexopt::Error) -> Fail {
    let msg = match &e {
        lexopt::Error::UnexpectedOption(o) => match o.strip_prefix("--") {
            Some(long) => format!("unknown flag: --{long}"),
            None => format!("unknown shorthand flag: '{}' in {o}", o.trim_start_matches('-')),
        },
        lexopt::Error::MissingValue { option: Some(o) } if o.starts_with("--") => {
            format!("flag needs an argument: {o}")
        }
        lexopt::Error::MissingValue { option: Some(o) } => {
            format!("flag needs an argument: '{}' in {o}", o.trim_start_matches('-'))
        }
        lexopt::Error::UnexpectedValue { option, value } => {
            format!("invalid argument {:?} for \"{option}\" flag", value.to_string_lossy())
        }
        other => other.to_string(),
    };
    let see = if cmd.is_empty() { "kes".to_string() } else { format!("kes {cmd}") };
    Fail::Error(format!("{msg}. See '{see} --help'"))
}

/// The value of a flag that takes one (`--flag v`, `--flag=v`, `-f v`).
pub fn flag_value(p: &mut lexopt::Parser, cmd: &str) -> Result<String, Fail> {
    let v = p.value().map_err(|e| flag_error(cmd, e))?;
    text(v)
}

/// A boolean long flag, which pflag also accepts as `--flag=false`.
pub fn flag_bool(p: &mut lexopt::Parser, flag: &str, cmd: &str) -> Result<bool, Fail> {
    let Some(v) = p.optional_value() else { return Ok(true) };
    let v = v.to_string_lossy();
    match v.as_ref() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(Fail::Error(format!(
            "invalid argument {v:?} for \"{flag}\" flag: strconv.ParseBool: parsing {v:?}: \
             invalid syntax. See 'kes {cmd} --help'"
        ))),
    }
}

/// A positional argument as text.
pub fn text(v: OsString) -> Result<String, Fail> {
    v.into_string().map_err(|v| Fail::Error(format!("argument {v:?} is not valid UTF-8")))
}

/// An I/O error as Go prints it: `no such file or directory`, not `No such file or
/// directory (os error 2)`.
pub fn io_msg(e: &std::io::Error) -> String {
    let s = e.to_string();
    if e.raw_os_error().is_none() {
        return s;
    }
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Whether stdout is a terminal: decides between text for people and data for pipes.
pub fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

/// `--color auto|never|always`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorMode {
    #[default]
    Auto,
    Never,
    Always,
}

impl ColorMode {
    pub fn parse(v: &str, cmd: &str) -> Result<ColorMode, Fail> {
        match v.to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(ColorMode::Auto),
            "never" => Ok(ColorMode::Never),
            "always" => Ok(ColorMode::Always),
            _ => Err(Fail::Error(format!(
                "invalid argument {v:?} for \"--color\" flag: invalid color option. See 'kes {cmd} --help'"
            ))),
        }
    }

    /// `auto` colours only a terminal, and not when `NO_COLOR` is set.
    pub fn enabled(self) -> bool {
        match self {
            ColorMode::Always => true,
            ColorMode::Never => false,
            ColorMode::Auto => {
                stdout_is_tty() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

/// ANSI styling that is a no-op when colours are off.
#[derive(Debug, Clone, Copy)]
pub struct Style(pub bool);

impl Style {
    fn paint(self, code: &str, s: &str) -> String {
        if self.0 { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
    }
    pub fn bold(self, s: &str) -> String {
        self.paint("1", s)
    }
    pub fn faint(self, s: &str) -> String {
        self.paint("2", s)
    }
    pub fn underline(self, s: &str) -> String {
        self.paint("4", s)
    }
    pub fn red(self, s: &str) -> String {
        self.paint("31", s)
    }
    pub fn green(self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn yellow(self, s: &str) -> String {
        self.paint("33", s)
    }
    pub fn blue(self, s: &str) -> String {
        self.paint("34", s)
    }
    pub fn cyan(self, s: &str) -> String {
        self.paint("36", s)
    }
}

/// Resolves the connection settings (`kes-config-cli.md` §4.1) and builds the client.
pub fn connect(flags: &client::ConnFlags) -> Result<client::Client, Fail> {
    let settings = client::Settings::resolve(flags, &client::process_env)?;
    client::Client::new(settings, &client::process_env, &password::for_client_key)
}

/// JSON as Go's encoder writes it (HTML-safe escapes, trailing newline); indented with two
/// spaces when `indent`, as upstream does for a terminal.
pub fn json_text(value: &impl serde::Serialize, indent: bool) -> String {
    if !indent {
        return String::from_utf8_lossy(&crate::gojson::to_go_json(value)).into_owned();
    }
    let raw = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    // `<`, `>`, `&` and U+2028/9 can only occur inside JSON strings, so escaping them
    // everywhere is exactly Go's HTML-safe escaping.
    let mut s = String::with_capacity(raw.len() + 8);
    for c in raw.chars() {
        match c {
            '<' => s.push_str("\\u003c"),
            '>' => s.push_str("\\u003e"),
            '&' => s.push_str("\\u0026"),
            '\u{2028}' => s.push_str("\\u2028"),
            '\u{2029}' => s.push_str("\\u2029"),
            c => s.push(c),
        }
    }
    s.push('\n');
    s
}

/// `YYYY-MM-DD hh:mm:ss` of an RFC 3339 time in the local time zone (UTC when the zone
/// cannot be determined).
pub fn local_date(rfc3339: &str) -> String {
    let Some(t) = crate::gotime::parse_rfc3339(rfc3339) else { return rfc3339.to_string() };
    let t = match time::UtcOffset::current_local_offset() {
        Ok(off) => t.to_offset(off),
        Err(_) => t.to_offset(time::UtcOffset::UTC),
    };
    date_time(t)
}

/// `YYYY-MM-DD hh:mm:ss` (Go's `time.DateTime` layout) in `t`'s own offset: how every table
/// of the CLI shows a time.
pub fn date_time(t: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A boolean flag given as `-x` (always true) or `--name[=bool]`.
pub fn flag_bool_if_long(p: &mut lexopt::Parser, flag: &str, cmd: &str) -> Result<bool, Fail> {
    if flag.starts_with("--") { flag_bool(p, flag, cmd) } else { Ok(true) }
}

/// Writes to stdout; `Ok(false)` once the reader went away (`kes log | head`), so that
/// endless commands can stop.
pub fn out_more(text: &str) -> Result<bool, Fail> {
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|_| o.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Fail::Error(format!("cannot write to stdout: {e}"))),
    }
}
