//! The level of an error-log line: Go `slog`'s numbers and names, and upstream's syntax
//! for `log.error` / `log.audit` (`kes-config-cli.md` §1.4). `config` maps YAML onto it.

/// A Go `slog` level: DEBUG -4, INFO 0, WARN 4, ERROR 8; `off` is 9 (ERROR+1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Level(pub i32);

impl Level {
    pub const DEBUG: Level = Level(-4);
    pub const INFO: Level = Level(0);
    pub const WARN: Level = Level(4);
    pub const ERROR: Level = Level(8);
    pub const OFF: Level = Level(9);

    /// Go's `slog.Level.String()`: `INFO`, `ERROR+1`, `DEBUG-2`.
    pub fn name(self) -> String {
        let (base, name) = match self.0 {
            i32::MIN..=-1 => (-4, "DEBUG"),
            0..=3 => (0, "INFO"),
            4..=7 => (4, "WARN"),
            _ => (8, "ERROR"),
        };
        let delta = self.0 - base;
        if delta == 0 { name.to_string() } else { format!("{name}{delta:+}") }
    }

    /// Parses upstream's level syntax (`kes-config-cli.md` §1.4).
    pub fn parse(s: &str) -> Option<Level> {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "" | "on" => return Some(Level::INFO),
            "off" => return Some(Level::OFF),
            _ => {}
        }
        if let Ok(n) = lower.parse::<i32>() {
            return Some(Level(n));
        }
        let (name, delta) = match lower.find('+') {
            Some(i) => (&lower[..i], lower[i + 1..].parse::<i32>().ok()?),
            None => (lower.as_str(), 0),
        };
        let base = match name {
            "debug" => -4,
            "info" => 0,
            "warn" => 4,
            "error" => 8,
            _ => return None,
        };
        Some(Level(base + delta))
    }
}

/// The `log` crate's levels, for code below `obs` that reports through a plain callback
/// (the sealed cache): error, warn and info are slog's; debug and trace are DEBUG.
impl From<log::Level> for Level {
    fn from(level: log::Level) -> Level {
        match level {
            log::Level::Error => Level::ERROR,
            log::Level::Warn => Level::WARN,
            log::Level::Info => Level::INFO,
            log::Level::Debug | log::Level::Trace => Level::DEBUG,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_print_like_slog() {
        assert_eq!(Level::parse(""), Some(Level::INFO));
        assert_eq!(Level::parse("on"), Some(Level::INFO));
        assert_eq!(Level::parse("OFF"), Some(Level::OFF));
        assert_eq!(Level::parse("error+2"), Some(Level(10)));
        assert_eq!(Level::parse("-4"), Some(Level::DEBUG));
        assert_eq!(Level::parse("Warn"), Some(Level::WARN));
        assert_eq!(Level::parse("error-1"), None);
        assert_eq!(Level::parse("loud"), None);
        assert_eq!(Level::OFF.name(), "ERROR+1");
        assert_eq!(Level::INFO.name(), "INFO");
        assert_eq!(Level(-6).name(), "DEBUG-2");
    }

    #[test]
    fn log_crate_levels_map_onto_slogs() {
        assert_eq!(Level::from(log::Level::Error), Level::ERROR);
        assert_eq!(Level::from(log::Level::Warn), Level::WARN);
        assert_eq!(Level::from(log::Level::Info), Level::INFO);
        assert_eq!(Level::from(log::Level::Trace), Level::DEBUG);
    }
}
