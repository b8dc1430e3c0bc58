//! JSON exactly as Go's `encoding/json` writes it: HTML-safe escaping (`<`, `>`, `&` as
//! `\u003c`…) and the encoder's trailing newline. KES clients compare error texts byte for
//! byte, so the API and the log streams share these two functions. It also holds the one
//! decoder of Go's `base64.StdEncoding`, which `encoding/json` uses for `[]byte` and which
//! the API, the stored-key formats and API keys all need.

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
