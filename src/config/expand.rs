//! `${NAME}` expansion (`kes-config-cli.md` §1.2) and the typing of a field's text that
//! follows it: strings, secrets, bools and Go durations.
//!
//! Only fields the spec marks `E` come through here; `version` and policy patterns are
//! taken verbatim by the caller. Messages name the field and never contain a secret.

use super::raw::{Scalar, SecretText};
use crate::gotime::{DurationError, parse_duration};
use serde_saphyr::Spanned;
use std::time::Duration;
use zeroize::Zeroizing;

/// A Go duration as written; negatives are kept so that validation can report them in
/// upstream's order (step 6/8 of §1.3) rather than at decode time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GoDuration {
    NonNegative(Duration),
    Negative,
}

/// Resolves `${NAME}` references through a caller-supplied environment.
pub(super) struct Expander<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// The variable name if `s` is a reference: the whole trimmed scalar is `${…}`; the name is
/// trimmed too. `foo-${X}` is not a reference (taken literally, as upstream).
pub(super) fn env_reference(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("${")?.strip_suffix('}')?;
    Some(inner.trim())
}

impl Expander<'_> {
    /// The field's text after expansion; an absent field is `""`.
    pub fn text(&self, field: &str, s: Option<&Scalar>) -> Result<String, String> {
        match s {
            None => Ok(String::new()),
            Some(s) => self.expand(field, &s.value, s.referenced.line()),
        }
    }

    /// Like [`Self::text`] for every element of a sequence.
    pub fn texts(&self, field: &str, s: Option<&Vec<Scalar>>) -> Result<Vec<String>, String> {
        s.map_or(&[][..], Vec::as_slice).iter().map(|s| self.text(field, Some(s))).collect()
    }

    fn expand(&self, field: &str, value: &str, line: u64) -> Result<String, String> {
        match env_reference(value) {
            None => Ok(value.to_owned()),
            Some(name) => (self.env)(name).ok_or_else(|| unset_variable(field, name, line)),
        }
    }

    /// A secret field: the value (from the file, the environment, or a `credential:` /
    /// `file:` source) only ever lives in zeroizing memory. An absent field is `""`.
    pub fn secret(
        &self,
        field: &str,
        s: Option<&Spanned<SecretText>>,
    ) -> Result<Zeroizing<String>, String> {
        let Some(s) = s else { return Ok(Zeroizing::new(String::new())) };
        match env_reference(&s.value.0) {
            None => Ok(super::source::resolve(field, &s.value.0, self.env)?
                .unwrap_or_else(|| s.value.0.clone())),
            Some(name) => match (self.env)(name) {
                Some(v) => Ok(Zeroizing::new(v)),
                None => Err(unset_variable(field, name, s.referenced.line())),
            },
        }
    }

    /// A bool field; `None` when absent. Accepts YAML 1.2 `true`/`false` and the YAML 1.1
    /// words upstream's decoder takes for bools (`y`, `yes`, `on`, `n`, `no`, `off`), in
    /// any case: a superset of what upstream accepts from a file and from the environment.
    pub fn boolean(&self, field: &str, s: Option<&Scalar>) -> Result<Option<bool>, String> {
        let Some(s) = s else { return Ok(None) };
        let text = self.text(field, Some(s))?;
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "y" | "yes" | "on" => Ok(Some(true)),
            "false" | "n" | "no" | "off" => Ok(Some(false)),
            _ => Err(format!("{field}: invalid boolean '{text}'")),
        }
    }

    /// A Go duration string (`30s`, `5m`, `1h30m`); `None` when absent. A bare number other
    /// than `0` has no unit and is rejected, as Go's `time.ParseDuration` does.
    pub fn duration(&self, field: &str, s: Option<&Scalar>) -> Result<Option<GoDuration>, String> {
        let Some(s) = s else { return Ok(None) };
        let text = self.text(field, Some(s))?;
        match parse_duration(&text) {
            Ok(d) => Ok(Some(GoDuration::NonNegative(d))),
            Err(DurationError::Negative) => Ok(Some(GoDuration::Negative)),
            Err(DurationError::Invalid) => Err(format!("{field}: invalid duration '{text}'")),
        }
    }
}

fn unset_variable(field: &str, name: &str, line: u64) -> String {
    if line == 0 {
        format!("{field}: referenced env. variable '{name}' not found")
    } else {
        format!("{field}: referenced env. variable '{name}' in line '{line}' not found")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct One<T> {
        v: T,
    }

    /// `value` as a YAML scalar on line `line` (1-based).
    fn at_line<T: for<'de> Deserialize<'de>>(value: &str, line: usize) -> T {
        let yaml = format!("{}v: {value}\n", "\n".repeat(line - 1));
        serde_saphyr::from_str::<One<T>>(&yaml).unwrap().v
    }

    fn scalar(s: &str, line: usize) -> Scalar {
        at_line(s, line)
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            "YES" => Some("Yes".into()),
            "TTL" => Some("90s".into()),
            _ => None,
        }
    }

    #[test]
    fn references_are_whole_trimmed_scalars() {
        assert_eq!(env_reference("${A}"), Some("A"));
        assert_eq!(env_reference("  ${ A }  "), Some("A"));
        assert_eq!(env_reference("${}"), Some(""));
        assert_eq!(env_reference("x-${A}"), None);
        assert_eq!(env_reference("${A}-x"), None);
        assert_eq!(env_reference("$A"), None);
        assert_eq!(env_reference("${"), None);
    }

    #[test]
    fn text_expands_and_reports_the_line() {
        let x = Expander { env: &env };
        assert_eq!(x.text("f", Some(&scalar("${SET}", 2))).unwrap(), "value");
        assert_eq!(x.text("f", Some(&scalar("${EMPTY}", 2))).unwrap(), "");
        assert_eq!(x.text("f", Some(&scalar("pre-${SET}", 2))).unwrap(), "pre-${SET}");
        assert_eq!(x.text("f", None).unwrap(), "");
        assert_eq!(
            x.text("admin.identity", Some(&scalar("${NOPE}", 7))).unwrap_err(),
            "admin.identity: referenced env. variable 'NOPE' in line '7' not found"
        );
    }

    #[test]
    fn booleans_take_yaml_1_1_words_and_true_false() {
        let x = Expander { env: &env };
        for (s, want) in [("true", true), ("TRUE", true), ("y", true), ("On", true)] {
            assert_eq!(x.boolean("f", Some(&scalar(s, 1))).unwrap(), Some(want), "{s}");
        }
        for (s, want) in [("false", false), ("N", false), ("no", false), ("OFF", false)] {
            assert_eq!(x.boolean("f", Some(&scalar(s, 1))).unwrap(), Some(want), "{s}");
        }
        assert_eq!(x.boolean("f", Some(&scalar("${YES}", 1))).unwrap(), Some(true));
        assert_eq!(x.boolean("f", None).unwrap(), None);
        assert_eq!(
            x.boolean("api./v1/ready.skip_auth", Some(&scalar("1", 1))).unwrap_err(),
            "api./v1/ready.skip_auth: invalid boolean '1'"
        );
    }

    #[test]
    fn durations_are_go_strings() {
        let x = Expander { env: &env };
        let d = |s: &str| x.duration("f", Some(&scalar(s, 1)));
        assert_eq!(d("5m").unwrap(), Some(GoDuration::NonNegative(Duration::from_secs(300))));
        assert_eq!(d("${TTL}").unwrap(), Some(GoDuration::NonNegative(Duration::from_secs(90))));
        assert_eq!(d("0").unwrap(), Some(GoDuration::NonNegative(Duration::ZERO)));
        assert_eq!(d("-1s").unwrap(), Some(GoDuration::Negative));
        assert_eq!(d("30").unwrap_err(), "f: invalid duration '30'");
        assert_eq!(d("${EMPTY}").unwrap_err(), "f: invalid duration ''");
        assert_eq!(x.duration("f", None).unwrap(), None);
    }

    #[test]
    fn secrets_expand_without_leaking() {
        let x = Expander { env: &env };
        let lit: Spanned<SecretText> = at_line("s3cr3t", 4);
        assert_eq!(x.secret("f", Some(&lit)).unwrap().as_str(), "s3cr3t");
        let var: Spanned<SecretText> = at_line("${SET}", 4);
        assert_eq!(x.secret("f", Some(&var)).unwrap().as_str(), "value");
        let unset: Spanned<SecretText> = at_line("${GONE}", 4);
        assert_eq!(
            x.secret("tls.password", Some(&unset)).unwrap_err(),
            "tls.password: referenced env. variable 'GONE' in line '4' not found"
        );
        assert_eq!(x.secret("f", None).unwrap().as_str(), "");
    }
}
