//! `kes log [--audit|--error] [--json]`: follows the server's NDJSON event streams
//! (`kes-api.md` §9.21) until the server or the user ends it.

use super::key::{failed, parse_with};
use super::{CmdResult, ColorMode, Fail, Style, out_more};
use serde::Deserialize;
use std::ffi::OsString;
use std::time::Duration;

const USAGE: &str = "Usage:
    kes log [options]
    kes log verify <file>...

Options:
        --audit              Print audit log events (the default).
        --error              Print error log events.
        --json               Print each event as one line of JSON.
    -k, --insecure           Skip server certificate verification.

    -h, --help               Print command line options.

Examples:
    $ kes log
    $ kes log --error
    $ kes log --json | jq .
";

/// Column widths of the audit table, from its header.
const AUDIT_HEADER: &str = "Time        Status    Identity                IP                 API                               Latency";

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuditEvent {
    time: String,
    request: AuditRequest,
    response: AuditResponse,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuditRequest {
    ip: String,
    path: String,
    identity: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuditResponse {
    code: u16,
    /// Milliseconds (upstream's label says µs; the value is ms, `kes-api.md` §13 D5).
    time: u64,
}

const VERIFY_USAGE: &str = "Usage:
    kes log verify <file>...

Checks the hash chain of audit files written with 'log.audit_file' (oldest first, e.g.
audit.log.2 audit.log.1 audit.log) and names the first line that was changed, removed,
inserted or moved. Exit 0 when the chain is intact, 1 otherwise.

Options:
    -h, --help               Print command line options.

Examples:
    $ kes log verify /var/log/kes/audit.log.1 /var/log/kes/audit.log
";

/// `kes log verify FILE...`: the chain of `log.audit_file` files, checked offline.
fn verify(args: Vec<OsString>) -> CmdResult {
    let mut files = Vec::new();
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(|e| super::flag_error("log verify", e))? {
        match arg {
            lexopt::Arg::Short('h') | lexopt::Arg::Long("help") => {
                return Err(Fail::Usage(VERIFY_USAGE.into()));
            }
            lexopt::Arg::Value(v) => files.push(std::path::PathBuf::from(v)),
            other => return Err(super::flag_error("log verify", other.unexpected())),
        }
    }
    if files.is_empty() {
        return Err(Fail::Error("no audit file specified. See 'kes log verify --help'".into()));
    }
    let v = crate::obs::audit_file::verify(&files)
        .map_err(|b| Fail::Error(format!("audit chain broken at {b}")))?;
    let start = if v.lines == 0 {
        "no lines".to_string()
    } else if v.from_genesis {
        format!("seq {}-{}, from the start of the chain", v.first_seq, v.last_seq)
    } else {
        format!("seq {}-{}, continuing an earlier file that was not given", v.first_seq, v.last_seq)
    };
    super::out(&format!(
        "OK: {} lines in {} files intact ({start})\nHead: {}\n",
        v.lines,
        files.len(),
        v.head
    ))
}

pub fn run(args: Vec<OsString>) -> CmdResult {
    if args.first().is_some_and(|a| a == "verify") {
        return verify(args[1..].to_vec());
    }
    let (mut audit, mut error) = (false, false);
    let c = parse_with(args, "log", USAGE, true, &mut |flag, p| match flag {
        "--audit" => {
            audit = super::flag_bool(p, flag, "log")?;
            Ok(true)
        }
        "--error" => {
            error = super::flag_bool(p, flag, "log")?;
            Ok(true)
        }
        _ => Ok(false),
    })?;
    if !c.args.is_empty() {
        return Err(Fail::Error("too many arguments. See 'kes log --help'".into()));
    }
    if audit && error {
        return Err(Fail::Error(
            "'--audit' and '--error' must not be used at the same time".into(),
        ));
    }
    let client = super::connect(&c.conn)?;
    let path = if error { "/v1/log/error" } else { "/v1/log/audit" };
    let mut stream = client.stream(path).map_err(|e| failed("failed to connect to the log", e))?;
    let style = Style(ColorMode::Auto.enabled());
    if !c.json && !error && !out_more(&format!("{}\n", style.faint(AUDIT_HEADER)))? {
        return Ok(());
    }
    loop {
        let Some(line) =
            stream.next_line().map_err(|e| failed("the log stream ended with an error", e))?
        else {
            // Streams never end on their own: the server stopped or dropped us.
            return Err(Fail::Error(format!("{} closed the log stream", stream.endpoint.url)));
        };
        if line.trim().is_empty() {
            continue;
        }
        let text = if c.json {
            line
        } else if error {
            error_line(&line)
        } else {
            audit_row(&line, style)
        };
        if !out_more(&format!("{text}\n"))? {
            return Ok(());
        }
    }
}

/// The message of one error event (or the line itself if it is not one).
fn error_line(line: &str) -> String {
    #[derive(Deserialize)]
    struct ErrorEvent {
        message: String,
    }
    match serde_json::from_str::<ErrorEvent>(line) {
        Ok(e) => e.message,
        Err(_) => line.to_string(),
    }
}

/// One audit event as a row of the table.
fn audit_row(line: &str, style: Style) -> String {
    let Ok(e) = serde_json::from_str::<AuditEvent>(line) else { return line.to_string() };
    let time = match crate::gotime::parse_rfc3339(&e.time) {
        Some(t) => {
            let t = match time::UtcOffset::current_local_offset() {
                Ok(off) => t.to_offset(off),
                Err(_) => t,
            };
            format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
        }
        None => e.time.clone(),
    };
    let code = format!("{:<10}", e.response.code);
    let code = match e.response.code {
        200..=299 => style.green(&code),
        400..=499 => style.yellow(&code),
        _ => style.red(&code),
    };
    let identity: String = e.request.identity.chars().take(20).collect();
    let latency = crate::gotime::format_duration(Duration::from_millis(e.response.time));
    format!("{time:<12}{code}{identity:<24}{:<19}{:<34}{latency}", e.request.ip, e.request.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_rows_line_up_with_the_header() {
        let line = r#"{"time":"2024-01-12T10:39:20.886816Z","request":{"ip":"127.0.0.1","path":"/v1/key/create/my-key","identity":"3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22"},"response":{"code":200,"time":3}}"#;
        let row = audit_row(line, Style(false));
        assert_eq!(row.find("200"), AUDIT_HEADER.find("Status"));
        assert_eq!(row.find("3ecfcdf38fcbe141ae26 "), AUDIT_HEADER.find("Identity"));
        assert_eq!(row.find("127.0.0.1"), AUDIT_HEADER.find("IP"));
        assert_eq!(row.find("/v1/key"), AUDIT_HEADER.find("API"));
        assert_eq!(row.find("3ms"), AUDIT_HEADER.find("Latency"));
        assert_eq!(audit_row("not json", Style(false)), "not json");
    }

    #[test]
    fn error_events_print_their_message() {
        assert_eq!(
            error_line(r#"{"message":"time=x level=ERROR msg=\"boom\""}"#),
            "time=x level=ERROR msg=\"boom\""
        );
        assert_eq!(error_line("plain"), "plain");
    }
}
