//! JSON exactly as Go's `encoding/json` writes it: HTML-safe escaping (`<`, `>`, `&` as
//! `\u003c`…) and the encoder's trailing newline. KES clients compare error texts byte for
//! byte, so the API and the log streams share these two functions. It also holds the one
//! decoder of Go's `base64.StdEncoding`, which `encoding/json` uses for `[]byte` and which
//! the API, the stored-key formats and API keys all need, and the one rule by which Go
//! matches a JSON object key to a struct field ([`key_matches`]).

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

/// Go's `base64.StdEncoding` as a decoder (it is not `Strict()`, so trailing bits are ignored).
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Decodes like Go's `base64.StdEncoding.DecodeString`: padding required, `\r` and `\n`
/// skipped anywhere, non-zero trailing bits accepted, the URL-safe alphabet refused. The text
/// and the result may be key material, so every buffer is wiped.
pub fn decode_base64_std(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut clean = Zeroizing::new(Vec::with_capacity(text.len()));
    clean.extend(text.iter().copied().filter(|&b| b != b'\r' && b != b'\n'));
    let mut out = Zeroizing::new(vec![0u8; base64::decoded_len_estimate(clean.len())]);
    let n = GO_STD.decode_slice(clean.as_slice(), out.as_mut_slice()).ok()?;
    out.truncate(n);
    Some(out)
}

/// Whether Go's `encoding/json` decodes the object key `key` into the struct field whose
/// JSON name is `name` (an ASCII name, as every field name of the KES formats is).
///
/// Go's rule (`encoding/json`, Go 1.21 and later; older releases agree on every key below):
/// a key selects the field whose name it spells exactly, else the field whose name it
/// spells after case folding. Folding maps an ASCII letter to its upper case and any other
/// character to the smallest character of its Unicode simple-fold orbit. The only
/// non-ASCII characters whose orbit holds an ASCII letter are the Kelvin sign (U+212A,
/// orbit `K k K`) and the long s (U+017F, orbit `S s ſ`); so against an ASCII name a key
/// matches exactly when it equals the name ignoring ASCII case, with U+212A counting as
/// `k` and U+017F as `s`. Dotted and dotless i (U+0130, U+0131) fold only to themselves.
///
/// Go assigns the field once per matching key, in document order, so when several keys
/// match the same field the **last** one wins (`{"context":"AQID","Context":"AAAA"}`
/// decodes to `AAAA`), and a value of the wrong type in any of them fails the decode.
/// Callers apply that order; this function only decides whether a key matches. An exact
/// spelling matters only to choose between two fields whose names differ in case alone,
/// which no KES format has.
pub fn key_matches(key: &str, name: &str) -> bool {
    debug_assert!(name.is_ascii(), "field names are ASCII: {name}");
    let mut expected = name.bytes();
    for c in key.chars() {
        let folded = match c {
            '\u{212a}' => b'K',
            '\u{017f}' => b'S',
            c if c.is_ascii() => (c as u8).to_ascii_uppercase(),
            _ => return false,
        };
        match expected.next() {
            Some(e) if e.to_ascii_uppercase() == folded => {}
            _ => return false,
        }
    }
    expected.next().is_none()
}

/// A JSON string literal escaped exactly as Go's `encoding/json` escapes it.
pub fn go_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Encodes a JSON value as Go's `json.Encoder` does: compact, `<`, `>`, `&` escaped, and a
/// trailing newline.
pub fn to_go_json(value: &impl serde::Serialize) -> Vec<u8> {
    let raw = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    let mut out = String::with_capacity(raw.len() + 8);
    for c in raw.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('\n');
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_fields_as_go_folds_them() {
        assert!(key_matches("bytes", "bytes"));
        assert!(key_matches("BYTES", "bytes"));
        assert!(key_matches("Created_By", "created_by"));
        assert!(key_matches("byte\u{017f}", "bytes"), "long s is an s");
        assert!(key_matches("BYTE\u{017f}", "bytes"));
        assert!(key_matches("\u{212a}ey", "key"), "the Kelvin sign is a k");
        assert!(key_matches("\u{212a}EY", "key"));
        assert!(!key_matches("byte", "bytes"));
        assert!(!key_matches("bytess", "bytes"));
        assert!(!key_matches("", "bytes"));
        assert!(!key_matches("bytés", "bytes"));
        assert!(!key_matches("\u{0130}d", "id"), "dotted I folds only to itself");
        assert!(!key_matches("\u{0131}d", "id"), "dotless i folds only to itself");
        assert!(!key_matches("\u{212a}", "s") && !key_matches("\u{017f}", "k"));
        assert!(!key_matches("created-by", "created_by"), "no separator folding (v1)");
    }

    #[test]
    fn go_string_escaping() {
        assert_eq!(
            go_json_string("a\"b\\c\n<>&\u{1}"),
            "\"a\\\"b\\\\c\\n\\u003c\\u003e\\u0026\\u0001\""
        );
        assert_eq!(go_json_string("☰"), "\"☰\"");
    }

    #[test]
    fn go_json_output() {
        let v = serde_json::json!({"name": "a<b", "n": 1});
        assert_eq!(to_go_json(&v), b"{\"n\":1,\"name\":\"a\\u003cb\"}\n");
    }
}
