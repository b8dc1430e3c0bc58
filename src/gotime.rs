//! Go-compatible text forms of time: RFC 3339 with nanoseconds as Go's `time.RFC3339Nano`
//! prints it, and Go duration strings (`5m0s`, `1h30m`, `720h`) as `time.ParseDuration`
//! reads them. KES clients parse both, so the exact shapes matter (spec kes-api.md §7).

use std::fmt::Write as _;
use std::time::Duration;
use time::{OffsetDateTime, UtcOffset};

/// Formats like Go's `time.RFC3339Nano`: trailing zeros of the fraction are dropped,
/// UTC is written `Z`, other offsets `+hh:mm`.
pub fn format_rfc3339_nano(t: OffsetDateTime) -> String {
    let mut s = String::with_capacity(35);
    push_rfc3339_nano(&mut s, t);
    s
}

/// Appends [`format_rfc3339_nano`]'s text to `s` (no allocation beyond `s` growing: every
/// audit line carries one).
pub fn push_rfc3339_nano(s: &mut String, t: OffsetDateTime) {
    push_date_time(s, t);
    let nanos = t.nanosecond();
    if nanos != 0 {
        s.push('.');
        let mut digits = 9;
        let mut frac = nanos;
        while frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
        push_digits(s, frac, digits);
    }
    push_offset(s, t.offset());
}

/// A system time in UTC to whole seconds, e.g. `2026-12-04T13:50:02Z`.
pub fn format_utc_seconds(t: std::time::SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    format_rfc3339_nano(t.replace_nanosecond(0).unwrap_or(t))
}

/// Formats with millisecond precision, as Go's slog text handler does for `time=`.
pub fn format_rfc3339_millis(t: OffsetDateTime) -> String {
    let mut s = String::with_capacity(29);
    push_rfc3339_millis(&mut s, t);
    s
}

/// Appends [`format_rfc3339_millis`]'s text to `s`.
pub fn push_rfc3339_millis(s: &mut String, t: OffsetDateTime) {
    push_date_time(s, t);
    s.push('.');
    push_digits(s, u32::from(t.millisecond()), 3);
    push_offset(s, t.offset());
}

/// `yyyy-mm-ddThh:mm:ss` (the year as `{:04}` prints it, sign and all, outside 0..=9999).
fn push_date_time(s: &mut String, t: OffsetDateTime) {
    match u32::try_from(t.year()) {
        Ok(year) if year <= 9999 => push_digits(s, year, 4),
        _ => {
            let _ = write!(s, "{:04}", t.year());
        }
    }
    s.push('-');
    push_digits(s, u32::from(u8::from(t.month())), 2);
    s.push('-');
    push_digits(s, u32::from(t.day()), 2);
    s.push('T');
    push_digits(s, u32::from(t.hour()), 2);
    s.push(':');
    push_digits(s, u32::from(t.minute()), 2);
    s.push(':');
    push_digits(s, u32::from(t.second()), 2);
}

/// `v` in decimal, zero-padded to at least `width` digits (what `write!(s, "{v:0width$}")`
/// writes, without the formatter): the digits of times here, and the numbers of audit lines.
pub fn push_decimal(s: &mut String, mut v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    (buf.len()..width).for_each(|_| s.push('0'));
    let start = at.min(buf.len() - width.min(buf.len()));
    buf[start..].iter().for_each(|&b| s.push(char::from(b)));
}

/// The digits of a date, time or fraction: `v` zero-padded to `width` (every caller's `v`
/// has at most `width` digits).
fn push_digits(s: &mut String, v: u32, width: usize) {
    push_decimal(s, u64::from(v), width);
}

fn push_offset(s: &mut String, off: UtcOffset) {
    if off.is_utc() {
        s.push('Z');
    } else {
        let (h, m, _) = off.as_hms();
        s.push(if off.is_negative() { '-' } else { '+' });
        push_digits(s, u32::from(h.unsigned_abs()), 2);
        s.push(':');
        push_digits(s, u32::from(m.unsigned_abs()), 2);
    }
}

/// The zero time as Go prints it; used for legacy keys without `created_at`.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Parses an RFC 3339 timestamp (with or without fraction, any offset).
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// Parses a Go duration string: an optional sign, then one or more decimal numbers with a
/// unit each (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`); `0` alone is allowed. Negative
/// durations are returned as `Err(Negative)` so that callers can report them.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::Invalid);
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits_end =
            rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or(DurationError::Invalid)?;
        if digits_end == 0 {
            return Err(DurationError::Invalid);
        }
        let number = &rest[..digits_end];
        rest = &rest[digits_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(DurationError::Invalid),
        };
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError::Invalid);
        }
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| DurationError::Invalid)?
        };
        let mut value = int.checked_mul(scale).ok_or(DurationError::Invalid)?;
        if !frac_part.is_empty() {
            if !frac_part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DurationError::Invalid);
            }
            let mut div: u128 = 1;
            let mut frac: u128 = 0;
            for b in frac_part.bytes().take(18) {
                frac = frac * 10 + u128::from(b - b'0');
                div *= 10;
            }
            value = value.checked_add(frac * scale / div).ok_or(DurationError::Invalid)?;
        }
        total = total.checked_add(value).ok_or(DurationError::Invalid)?;
    }
    if total > u128::from(u64::MAX) {
        return Err(DurationError::Invalid);
    }
    if neg && total != 0 {
        return Err(DurationError::Negative);
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Invalid)?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| DurationError::Invalid)?;
    Ok(Duration::new(secs, nanos))
}

/// Why a duration string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    Invalid,
    Negative,
}

/// Formats like Go's `Duration.String()`: `1h30m0s`, `5m0s`, `1.5s`, `250ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut s = String::with_capacity(16);
    push_duration(&mut s, d);
    s
}

/// Appends [`format_duration`]'s text to `s` (an audit line's `res.time`, written into the
/// line's reused buffer without a string of its own).
pub fn push_duration(s: &mut String, d: Duration) {
    use std::fmt::Write as _;
    let total = d.as_nanos();
    if total == 0 {
        s.push_str("0s");
        return;
    }
    if total < 1_000_000_000 {
        let (unit, scale) = if total < 1_000 {
            ("ns", 1u128)
        } else if total < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        push_frac(s, total, scale);
        s.push_str(unit);
        return;
    }
    let hours = total / 3_600_000_000_000;
    let rem = total % 3_600_000_000_000;
    let minutes = rem / 60_000_000_000;
    let rem = rem % 60_000_000_000;
    if hours > 0 {
        let _ = write!(s, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(s, "{minutes}m");
    }
    push_frac(s, rem, 1_000_000_000);
    s.push('s');
}

/// `value / scale` with the fraction's significant digits, e.g. `1.5` for 1500 / 1000.
fn push_frac(s: &mut String, value: u128, scale: u128) {
    use std::fmt::Write as _;
    let int = value / scale;
    let frac = value % scale;
    let _ = write!(s, "{int}");
    if frac == 0 {
        return;
    }
    let mut width = scale.ilog10();
    let mut frac = frac;
    while frac.is_multiple_of(10) {
        frac /= 10;
        width -= 1;
    }
    let _ = write!(s, ".{frac:0width$}", width = width as usize);
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn rfc3339_nano_matches_go() {
        assert_eq!(
            format_rfc3339_nano(datetime!(2024-01-12 10:39:20.886816 UTC)),
            "2024-01-12T10:39:20.886816Z"
        );
        assert_eq!(format_rfc3339_nano(datetime!(2009-11-10 23:00:00 UTC)), "2009-11-10T23:00:00Z");
        assert_eq!(
            format_rfc3339_nano(datetime!(2024-01-12 11:39:20.5 +01:00)),
            "2024-01-12T11:39:20.5+01:00"
        );
        assert_eq!(format_rfc3339_nano(datetime!(0001-01-01 00:00:00 UTC)), ZERO_TIME);
        assert_eq!(
            format_rfc3339_nano(datetime!(2026-12-04 19:31:10.000000001 -03:30)),
            "2026-12-04T19:31:10.000000001-03:30"
        );
        assert_eq!(
            format_rfc3339_nano(datetime!(2026-12-04 19:31:10.12345678 UTC)),
            "2026-12-04T19:31:10.12345678Z"
        );
    }

    /// The appenders write what `format!` with the same widths writes, for every field at
    /// its extremes (years outside 0..=9999 keep `{:04}`'s sign and width).
    #[test]
    fn push_decimal_writes_what_the_formatter_writes() {
        let mut values = vec![0, 1, 9, 10, 99, 100, 255, 999, 1000, u64::from(u32::MAX), u64::MAX];
        values.extend((0..20).map(|e| 10u64.pow(e) - 1));
        for v in values {
            for width in [1, 2, 3, 4, 9, 20, 25] {
                let mut s = String::from("x");
                push_decimal(&mut s, v, width);
                assert_eq!(s, format!("x{v:0width$}"), "{v} {width}");
            }
        }
    }

    #[test]
    fn rfc3339_appenders_match_format() {
        let reference = |t: OffsetDateTime, millis: bool| {
            let mut s = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            if millis {
                s.push_str(&format!(".{:03}", t.millisecond()));
            } else if t.nanosecond() != 0 {
                s.push('.');
                s.push_str(format!("{:09}", t.nanosecond()).trim_end_matches('0'));
            }
            let (h, m, _) = t.offset().as_hms();
            if t.offset().is_utc() {
                s.push('Z');
            } else {
                let sign = if t.offset().is_negative() { '-' } else { '+' };
                s.push_str(&format!("{sign}{:02}:{:02}", h.unsigned_abs(), m.unsigned_abs()));
            }
            s
        };
        for t in [
            datetime!(0000-01-01 00:00:00 UTC),
            datetime!(9999-12-31 23:59:59.999999999 +23:59),
            datetime!(-0001-06-15 12:00:00.1 -00:30),
            datetime!(2024-02-29 01:02:03.000100 UTC),
            datetime!(2024-02-29 01:02:03.050 +05:45),
        ] {
            assert_eq!(format_rfc3339_nano(t), reference(t, false), "{t}");
            assert_eq!(format_rfc3339_millis(t), reference(t, true), "{t}");
        }
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("720h"), Ok(Duration::from_secs(720 * 3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("-1s"), Err(DurationError::Negative));
        assert_eq!(parse_duration("30"), Err(DurationError::Invalid));
        assert_eq!(parse_duration("1d"), Err(DurationError::Invalid));
        assert_eq!(parse_duration(""), Err(DurationError::Invalid));
        assert_eq!(parse_duration("s"), Err(DurationError::Invalid));
    }

    #[test]
    fn durations_format_like_go() {
        assert_eq!(format_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_nanos(42)), "42ns");
        assert_eq!(format_duration(Duration::from_micros(1050)), "1.05ms");
        assert_eq!(format_duration(Duration::new(3600, 1)), "1h0m0.000000001s");
        assert_eq!(format_duration(Duration::from_nanos(1_000_001)), "1.000001ms");
        // The same text as the allocating formatter it replaced, over many magnitudes.
        fn frac(value: u128, scale: u128) -> String {
            let (int, frac) = (value / scale, value % scale);
            if frac == 0 {
                return int.to_string();
            }
            let width = scale.ilog10() as usize;
            format!("{int}.{}", format!("{frac:0width$}").trim_end_matches('0'))
        }
        fn old(d: Duration) -> String {
            let total = d.as_nanos();
            if total == 0 {
                return "0s".into();
            }
            if total < 1_000_000_000 {
                let (unit, scale) = match total {
                    t if t < 1_000 => ("ns", 1),
                    t if t < 1_000_000 => ("µs", 1_000),
                    _ => ("ms", 1_000_000),
                };
                return format!("{}{unit}", frac(total, scale));
            }
            let (h, m) = (total / 3_600_000_000_000, total % 3_600_000_000_000 / 60_000_000_000);
            let mut s = String::new();
            if h > 0 {
                s += &format!("{h}h");
            }
            if h > 0 || m > 0 {
                s += &format!("{m}m");
            }
            s + &frac(total % 60_000_000_000, 1_000_000_000) + "s"
        }
        let mut n: u64 = 1;
        while n < u64::MAX / 7 {
            for d in [n, n + 1, n * 3 + 7, n * 10] {
                let d = Duration::from_nanos(d);
                assert_eq!(format_duration(d), old(d), "{d:?}");
            }
            n = n * 7 + 3;
        }
    }
}
