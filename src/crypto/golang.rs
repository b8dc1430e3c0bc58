//! Go decoding semantics that the stored-key and legacy-ciphertext formats depend on.
//!
//! Upstream reads these values with Go's `encoding/json` and `encoding/base64`, so a value is
//! readable for us exactly when it is readable for Go:
//! * base64: `StdEncoding` (padding required, `\r`/`\n` skipped anywhere, non-zero trailing
//!   bits accepted);
//! * JSON object keys match struct fields by [`crate::gojson::key_matches`] (the one rule,
//!   shared with the API's request bodies); unknown keys are ignored; each matching key
//!   assigns the field in turn, so the last one wins; `null` resets a byte slice but leaves a
//!   string or a time unchanged;
//! * invalid UTF-8 inside JSON strings is not an error: each bad byte becomes U+FFFD.

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use std::fmt;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Decodes like Go's `base64.StdEncoding.DecodeString` (see [`crate::gojson`]).
pub(crate) fn base64_decode(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    crate::gojson::decode_base64_std(text)
}

/// Runs `f` over `bytes` as text the way Go's JSON decoder sees it: valid UTF-8 is used as it
/// is; otherwise each invalid byte is replaced by U+FFFD in a (wiped) copy.
pub(crate) fn with_go_text<R>(bytes: &[u8], f: impl FnOnce(&str) -> R) -> R {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return f(s);
    }
    let mut text = Zeroizing::new(String::with_capacity(bytes.len() * 3));
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                text.push_str(valid);
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // `valid` is valid UTF-8 by construction of `valid_up_to`.
                text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(after.len());
                for _ in 0..bad {
                    text.push(char::REPLACEMENT_CHARACTER);
                }
                rest = &after[bad..];
            }
        }
    }
    f(&text)
}

/// Deserializes an object key into the index of the matching field name, `None` if unknown.
pub(crate) struct Field(pub &'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Field {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Field {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|name| crate::gojson::key_matches(key, name)))
    }
}

/// A Go `[]byte` field: base64 text, or `null` for nil. The bytes are wiped on drop.
pub(crate) struct Bytes(pub Option<Zeroizing<Vec<u8>>>);

impl<'de> de::Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("base64 text or null")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Bytes, E> {
                base64_decode(s.as_bytes())
                    .map(|b| Bytes(Some(b)))
                    .ok_or_else(|| E::custom("invalid base64"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Bytes, E> {
                Ok(Bytes(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A Go `string` field: `Some` for a string, `None` for `null` (which leaves the field as it was).
pub(crate) struct Text(pub Option<String>);

impl<'de> de::Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text, E> {
                Ok(Text(Some(s.to_owned())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// The instant of Go's zero `time.Time` (0001-01-01T00:00:00Z) as Unix seconds.
pub(crate) const GO_ZERO_UNIX: i64 = -62_135_596_800;

/// A Go `time.Time` field: RFC 3339 text, or `null` (leaves the field as it was). The outer
/// `Option` is "was a value given"; the inner one is `None` for Go's zero time.
pub(crate) struct Time(pub Option<Option<OffsetDateTime>>);

impl<'de> de::Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Time;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time or null")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Time, E> {
                let t = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| E::custom("invalid time"))?;
                let zero = t.unix_timestamp() == GO_ZERO_UNIX && t.nanosecond() == 0;
                Ok(Time(Some(if zero { None } else { Some(t) })))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Time, E> {
                Ok(Time(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_go_std_encoding() {
        assert_eq!(base64_decode(b"AAE=").unwrap().as_slice(), &[0, 1]);
        assert_eq!(base64_decode(b"AA\r\nE=\n").unwrap().as_slice(), &[0, 1]);
        // Go's StdEncoding is not strict: trailing bits in the last quantum are dropped.
        assert_eq!(base64_decode(b"AAF=").unwrap().as_slice(), &[0, 1]);
        assert_eq!(base64_decode(b"").unwrap().as_slice(), &[] as &[u8]);
        // Padding is required, and must be canonical.
        assert!(base64_decode(b"AAE").is_none());
        assert!(base64_decode(b"AAE==").is_none());
        assert!(base64_decode(b"AA E=").is_none());
        // URL alphabet is not StdEncoding.
        assert!(base64_decode(b"-_-_").is_none());
    }

    #[test]
    fn invalid_utf8_becomes_one_replacement_per_byte() {
        let got = with_go_text(b"a\xe2\x82b\xffc", str::to_owned);
        assert_eq!(got, "a\u{fffd}\u{fffd}b\u{fffd}c");
        let got = with_go_text("ok ü".as_bytes(), str::to_owned);
        assert_eq!(got, "ok ü");
        let got = with_go_text(b"tail\xf0\x9f", str::to_owned);
        assert_eq!(got, "tail\u{fffd}\u{fffd}");
    }
}
