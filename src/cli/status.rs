//! `kes status [-s] [--api] [--json]` (`kes-config-cli.md` §4.3, `kes-api.md` §9.3, §9.5).

use super::key::{failed, parse_with};
use super::{CmdResult, Fail, Style, json_text, out};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::time::{Duration, Instant};

const USAGE: &str = "Usage:
    kes status [options]

Options:
    -k, --insecure           Skip server certificate verification.
    -s, --short              Print only the server's endpoint (and --api table).
        --api                List all server APIs.
        --json               Print status information in JSON format.
        --color <when>       When to use colors: auto (on a terminal), never or always.

    -h, --help               Print command line options.
";

/// `/v1/status` (kms-go's `State`), in the server's field order.
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct State {
    version: String,
    os: String,
    arch: String,
    uptime: u64,
    num_cpu: u64,
    num_cpu_used: u64,
    mem_heap_used: u64,
    mem_stack_used: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    keystore_latency: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    keystore_unreachable: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    keystore_unavailable: bool,
}

/// One entry of `/v1/api`.
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct Api {
    method: String,
    path: String,
    max_body: u64,
    timeout: u64,
}

pub fn run(args: Vec<OsString>) -> CmdResult {
    let (mut short, mut api) = (false, false);
    let c = parse_with(args, "status", USAGE, true, &mut |flag, p| match flag {
        "-s" | "--short" => {
            short = super::flag_bool_if_long(p, flag, "status")?;
            Ok(true)
        }
        "--api" => {
            api = super::flag_bool_if_long(p, flag, "status")?;
            Ok(true)
        }
        _ => Ok(false),
    })?;
    if !c.args.is_empty() {
        return Err(Fail::Error("too many arguments. See 'kes status --help'".into()));
    }
    let client = super::connect(&c.conn)?;
    let start = Instant::now();
    let reply =
        client.call("GET", "/v1/status", None).map_err(|e| failed("failed to get status", e))?;
    let latency = start.elapsed();
    let state: State = serde_json::from_slice(&reply.body)
        .map_err(|e| Fail::Error(format!("failed to get status: invalid response: {e}")))?;
    let mut apis: Vec<Api> = Vec::new();
    if api {
        let reply =
            client.call("GET", "/v1/api", None).map_err(|e| failed("failed to list APIs", e))?;
        apis = serde_json::from_slice(&reply.body)
            .map_err(|e| Fail::Error(format!("failed to list APIs: invalid response: {e}")))?;
        apis.sort_by(|a, b| a.path.cmp(&b.path));
    }
    if c.json {
        let indent = super::stdout_is_tty() && !short;
        return out(&if api { json_text(&apis, indent) } else { json_text(&state, indent) });
    }

    let style = Style(c.color.enabled());
    let label = |l: &str| style.faint(&format!("  {l:<8}"));
    let mut s = format!(
        "{} {}\n",
        style.bold(&style.green("●")),
        style.bold(&style.cyan(reply.endpoint.authority()))
    );
    if !short {
        s.push_str(&format!("{} {}\n", label("Version"), state.version));
        s.push_str(&format!("{} {}\n", label("Uptime"), uptime(state.uptime)));
        s.push_str(&format!("{} {}\n", label("Latency"), round_ms(latency)));
        s.push_str(&format!("{} {}\n", label("OS"), state.os));
        s.push_str(&format!("{} {} {}\n", label("CPUs"), state.num_cpu_used, state.arch));
        s.push_str(&format!("{}\n", style.faint("  Memory")));
        s.push_str(&format!(
            "{} {}\n",
            style.faint(&format!("{:>3} {:<6}", "·", "Heap")),
            memory(state.mem_heap_used)
        ));
        s.push_str(&format!(
            "{} {}\n",
            style.faint(&format!("{:>3} {:<6}", "·", "Stack")),
            memory(state.mem_stack_used)
        ));
    }
    if api {
        s.push('\n');
        s.push_str(&format!(
            "  {} {} {}\n",
            style.underline(&format!("{:<7}", "Method")),
            style.underline(&format!("{:<28}", "API")),
            style.underline("Timeout")
        ));
        for a in &apis {
            let timeout = if a.timeout == 0 {
                "Inf".to_string()
            } else {
                crate::gotime::format_duration(Duration::from_secs(a.timeout))
            };
            s.push_str(&format!(
                "  {:<7} {} {timeout}\n",
                a.method,
                style.blue(&format!("{:<28}", a.path))
            ));
        }
    }
    out(&s)
}

/// `N seconds`, `N minutes`, `N hours`, or `D days H hours`.
fn uptime(secs: u64) -> String {
    match secs {
        s if s > 24 * 3600 => format!("{} days {} hours", s / 86_400, (s % 86_400) / 3600),
        s if s > 3600 => format!("{} hours", (s + 1800) / 3600),
        s if s > 60 => format!("{} minutes", (s + 30) / 60),
        s => format!("{s} seconds"),
    }
}

/// A client-measured latency as Go prints `d.Round(time.Millisecond)`.
fn round_ms(d: Duration) -> String {
    let ms = (d.as_micros() + 500) / 1000;
    crate::gotime::format_duration(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)))
}

/// Decimal units with one fraction digit: `512 B`, `1.2 MB`.
pub(super) fn memory(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_like_upstreams() {
        assert_eq!(uptime(5), "5 seconds");
        assert_eq!(uptime(61), "1 minutes");
        assert_eq!(uptime(7200 + 1), "2 hours");
        assert_eq!(uptime(3 * 86_400 + 5 * 3600 + 10), "3 days 5 hours");
    }

    #[test]
    fn memory_uses_decimal_units() {
        assert_eq!(memory(512), "512 B");
        assert_eq!(memory(1234), "1.2 kB");
        assert_eq!(memory(12_345_678), "12.3 MB");
    }

    #[test]
    fn latency_is_rounded_to_milliseconds() {
        assert_eq!(round_ms(Duration::from_micros(2400)), "2ms");
        assert_eq!(round_ms(Duration::from_micros(200)), "0s");
        assert_eq!(round_ms(Duration::from_millis(1500)), "1.5s");
    }
}
