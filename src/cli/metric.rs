//! `kes metric [--rate <dur>]`: scrapes `/v1/metrics` (Prometheus text, `kes-api.md` §9.4)
//! into kms-go's `Metric` shape. A terminal gets a table redrawn at each scrape; a pipe
//! gets one JSON object per scrape, as upstream prints them.

use super::key::{failed, parse_with};
use super::{CmdResult, ColorMode, Fail, Style, out_more};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::Duration;

const USAGE: &str = "Usage:
    kes metric [options]

Options:
        --rate <duration>    Scrape rate, a Go duration such as 5s or 1m. (default: 5s)
    -k, --insecure           Skip server certificate verification.

    -h, --help               Print command line options.

    On a terminal the metrics are shown as a table that is redrawn at every scrape;
    otherwise one JSON object is printed per scrape. Stop with Ctrl-C.
";

/// Default `--rate`.
const DEFAULT_RATE: Duration = Duration::from_secs(5);
/// Lines the table takes, to redraw it in place.
const TABLE_LINES: usize = 8;

/// kms-go's `Metric`: what `/v1/metrics` says, summed over labels.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Metric {
    pub request_ok: u64,
    pub request_err: u64,
    pub request_fail: u64,
    pub request_active: u64,
    pub audit_events: u64,
    pub error_events: u64,
    /// Bucket upper bound (nanoseconds) -> cumulative count; `None` when not reported.
    pub latency: Option<BTreeMap<u64, u64>>,
    pub uptime_ns: u64,
    pub cpus: u64,
    pub usable_cpus: u64,
    pub threads: u64,
    pub heap_alloc: u64,
    pub heap_objects: u64,
    pub stack_alloc: u64,
}

fn to_u64(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 { v.round().min(u64::MAX as f64) as u64 } else { 0 }
}

impl Metric {
    /// Reads Prometheus text exposition (comments skipped; an optional timestamp after the
    /// value ignored; unknown families ignored).
    pub fn parse(text: &str) -> Metric {
        let mut m = Metric::default();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, labels, rest) = match line.find(['{', ' ', '\t']) {
                Some(i) if line.as_bytes()[i] == b'{' => match line[i..].find('}') {
                    Some(j) => (&line[..i], &line[i + 1..i + j], &line[i + j + 1..]),
                    None => continue,
                },
                Some(i) => (&line[..i], "", &line[i..]),
                None => continue,
            };
            let Some(value) = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok())
            else {
                continue;
            };
            match name {
                "kes_http_request_success" => m.request_ok += to_u64(value),
                "kes_http_request_error" => m.request_err += to_u64(value),
                "kes_http_request_failure" => m.request_fail += to_u64(value),
                "kes_http_request_active" => m.request_active = to_u64(value),
                "kes_log_audit_events" => m.audit_events = to_u64(value),
                "kes_log_error_events" => m.error_events = to_u64(value),
                "kes_http_response_time_bucket" => {
                    let le = labels
                        .split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| k.trim() == "le")
                        .map(|(_, v)| v.trim().trim_matches('"'));
                    if let Some(bound) = le.and_then(|v| v.parse::<f64>().ok())
                        && bound.is_finite()
                    {
                        m.latency
                            .get_or_insert_default()
                            .insert(to_u64(bound * 1e9), to_u64(value));
                    }
                }
                "kes_system_up_time" => m.uptime_ns = to_u64(value * 1e9),
                "kes_system_num_cpu" => m.cpus = to_u64(value),
                "kes_system_num_cpu_used" => m.usable_cpus = to_u64(value),
                "kes_system_num_threads" => m.threads = to_u64(value),
                "kes_system_mem_heap_used" => m.heap_alloc = to_u64(value),
                "kes_system_mem_heap_objects" => m.heap_objects = to_u64(value),
                "kes_system_mem_stack_used" => m.stack_alloc = to_u64(value),
                _ => {}
            }
        }
        m
    }

    pub fn requests(&self) -> u64 {
        self.request_ok + self.request_err + self.request_fail
    }

    /// As Go's `json.Encoder` writes kms-go's `Metric`: struct field order, durations in
    /// nanoseconds, map keys sorted as strings.
    pub fn to_json(&self) -> String {
        let histogram = match &self.latency {
            None => "null".to_string(),
            Some(h) => {
                let mut entries: Vec<(String, u64)> =
                    h.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                entries.sort();
                let body: Vec<String> =
                    entries.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", body.join(","))
            }
        };
        format!(
            "{{\"kes_http_request_success\":{},\"kes_http_request_error\":{},\"kes_http_request_failure\":{},\
             \"kes_http_request_active\":{},\"kes_log_audit_events\":{},\"kes_log_error_events\":{},\
             \"kes_http_response_time\":{histogram},\"kes_system_up_time\":{},\"kes_system_num_cpu\":{},\
             \"kes_system_num_cpu_used\":{},\"kes_system_num_threads\":{},\"kes_system_mem_heap_used\":{},\
             \"kes_system_mem_heap_objects\":{},\"kes_system_mem_stack_used\":{}}}\n",
            self.request_ok,
            self.request_err,
            self.request_fail,
            self.request_active,
            self.audit_events,
            self.error_events,
            self.uptime_ns,
            self.cpus,
            self.usable_cpus,
            self.threads,
            self.heap_alloc,
            self.heap_objects,
            self.stack_alloc,
        )
    }

    /// Mean latency from the cumulative histogram (each bucket's requests at its bound).
    pub fn average_latency(&self) -> Duration {
        let Some(h) = &self.latency else { return Duration::ZERO };
        let total = h.values().copied().max().unwrap_or(0);
        if total == 0 {
            return Duration::ZERO;
        }
        let (mut sum, mut seen) = (0f64, 0u64);
        for (bound, cumulative) in h {
            let n = cumulative.saturating_sub(seen);
            sum += *bound as f64 * n as f64;
            seen = seen.max(*cumulative);
        }
        Duration::from_nanos(to_u64(sum / total as f64))
    }
}

pub fn run(args: Vec<OsString>) -> CmdResult {
    let mut rate = DEFAULT_RATE;
    let c = parse_with(args, "metric", USAGE, false, &mut |flag, p| match flag {
        "--rate" => {
            let v = super::flag_value(p, "metric")?;
            rate = match crate::gotime::parse_duration(&v) {
                Ok(d) if !d.is_zero() => d,
                _ => {
                    return Err(Fail::Error(format!(
                        "invalid argument {v:?} for \"--rate\" flag: time: invalid duration {v:?}. See 'kes metric --help'"
                    )));
                }
            };
            Ok(true)
        }
        _ => Ok(false),
    })?;
    if !c.args.is_empty() {
        return Err(Fail::Error("too many arguments. See 'kes metric --help'".into()));
    }
    let client = super::connect(&c.conn)?;
    let scrape = || -> Result<Metric, Fail> {
        let reply = client
            .call("GET", "/v1/metrics", None)
            .map_err(|e| failed("failed to fetch metrics", e))?;
        Ok(Metric::parse(&String::from_utf8_lossy(&reply.body)))
    };
    let tty = super::stdout_is_tty();
    let style = Style(ColorMode::Auto.enabled());
    let mut previous: Option<u64> = None;
    let mut drawn = false;
    loop {
        let metric = match scrape() {
            Ok(m) => m,
            // On a terminal, a scrape that fails after the first keeps the last table.
            Err(_) if tty && drawn => {
                std::thread::sleep(rate);
                continue;
            }
            Err(e) => return Err(e),
        };
        let more = if tty {
            let per_second = match previous {
                Some(p) => metric.requests().saturating_sub(p) as f64 / rate.as_secs_f64(),
                None => 0.0,
            };
            previous = Some(metric.requests());
            let redraw = if drawn { format!("\x1b[{TABLE_LINES}F\x1b[J") } else { String::new() };
            drawn = true;
            out_more(&format!("{redraw}{}", table(&metric, per_second, style)))?
        } else {
            out_more(&metric.to_json())?
        };
        if !more {
            return Ok(());
        }
        std::thread::sleep(rate);
    }
}

/// The terminal table: requests by class, rate and mean latency; then system figures.
fn table(m: &Metric, per_second: f64, style: Style) -> String {
    let n = m.requests();
    let pct = |x: u64| {
        if n == 0 { "0.00%".to_string() } else { format!("{:.2}%", 100.0 * x as f64 / n as f64) }
    };
    let latency =
        Duration::from_millis(u64::try_from(m.average_latency().as_millis()).unwrap_or(u64::MAX));
    let uptime = Duration::from_secs(m.uptime_ns / 1_000_000_000);
    let mut s = String::from("\n");
    s.push_str(
        &style.bold(&style.faint(
            "Request    OK [2xx]       Err [4xx]       Err [5xx]      Req/s        Latency",
        )),
    );
    s.push('\n');
    s.push_str(&format!(
        "{}{}{}{:>11.2}{:>15}\n",
        style.green(&format!("{:>19}", m.request_ok)),
        style.yellow(&format!("{:>16}", m.request_err)),
        style.red(&format!("{:>16}", m.request_fail)),
        per_second,
        crate::gotime::format_duration(latency),
    ));
    s.push_str(&format!(
        "{}{}{}\n\n",
        style.green(&format!("{:>19}", pct(m.request_ok))),
        style.yellow(&format!("{:>16}", pct(m.request_err))),
        style.red(&format!("{:>16}", pct(m.request_fail))),
    ));
    s.push_str(
        &style.bold(&style.faint(
            "System       UpTime            Heap           Stack       CPUs        Threads",
        )),
    );
    s.push('\n');
    s.push_str(&format!(
        "{:>19}{:>16}{:>16}{:>11}{:>15}\n\n",
        crate::gotime::format_duration(uptime),
        super::status::memory(m.heap_alloc),
        super::status::memory(m.stack_alloc),
        m.usable_cpus,
        m.threads,
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP kes_http_request_success x
# TYPE kes_http_request_success counter
kes_http_request_success{code=\"200\"} 7
kes_http_request_success{code=\"204\"} 1
kes_http_request_error{code=\"400\"} 2
kes_http_request_error{code=\"404\"} 3
kes_http_request_active 1
kes_http_response_time_bucket{le=\"0.01\"} 9
kes_http_response_time_bucket{le=\"0.05\"} 12
kes_http_response_time_bucket{le=\"0.1\"} 13
kes_http_response_time_bucket{le=\"+Inf\"} 13
kes_http_response_time_sum 0.2
kes_http_response_time_count 13
kes_log_audit_events 4
kes_log_error_events 0
kes_system_up_time 300.25
kes_system_num_cpu 4
kes_system_num_cpu_used 2
kes_system_num_threads 9
kes_system_mem_heap_used 1.5e+06
kes_system_mem_heap_objects 100
kes_system_mem_stack_used 65536 1700000000000
";

    #[test]
    fn prometheus_text_becomes_kms_gos_metric() {
        let m = Metric::parse(TEXT);
        assert_eq!((m.request_ok, m.request_err, m.request_fail, m.request_active), (8, 5, 0, 1));
        assert_eq!((m.audit_events, m.error_events), (4, 0));
        assert_eq!(m.uptime_ns, 300_250_000_000);
        assert_eq!((m.cpus, m.usable_cpus, m.threads), (4, 2, 9));
        assert_eq!((m.heap_alloc, m.heap_objects, m.stack_alloc), (1_500_000, 100, 65536));
        assert_eq!(
            m.latency.as_ref().unwrap().iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            [(10_000_000, 9), (50_000_000, 12), (100_000_000, 13)]
        );
    }

    #[test]
    fn json_is_byte_exact_go() {
        assert_eq!(
            Metric::parse(TEXT).to_json(),
            "{\"kes_http_request_success\":8,\"kes_http_request_error\":5,\"kes_http_request_failure\":0,\
             \"kes_http_request_active\":1,\"kes_log_audit_events\":4,\"kes_log_error_events\":0,\
             \"kes_http_response_time\":{\"10000000\":9,\"100000000\":13,\"50000000\":12},\
             \"kes_system_up_time\":300250000000,\"kes_system_num_cpu\":4,\"kes_system_num_cpu_used\":2,\
             \"kes_system_num_threads\":9,\"kes_system_mem_heap_used\":1500000,\
             \"kes_system_mem_heap_objects\":100,\"kes_system_mem_stack_used\":65536}\n"
        );
        assert!(Metric::default().to_json().contains("\"kes_http_response_time\":null"));
    }

    #[test]
    fn average_latency_weights_each_bucket() {
        let m = Metric::parse(TEXT);
        // 9 at 10ms, 3 at 50ms, 1 at 100ms over 13.
        let expected = (9.0 * 10.0 + 3.0 * 50.0 + 100.0) / 13.0;
        let got = m.average_latency().as_secs_f64() * 1000.0;
        assert!((got - expected).abs() < 0.001, "{got}");
        assert_eq!(Metric::default().average_latency(), Duration::ZERO);
    }
}
