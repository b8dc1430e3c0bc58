//! The KES JSON wire format, apart from domain types (`kes-api.md` §7): request fields
//! matched case-insensitively as Go's `encoding/json` does, only the first JSON value read,
//! `[]byte` fields as padded standard base64, and responses encoded as Go encodes them
//! (HTML-escaped, trailing newline).

pub use crate::gojson::to_go_json;
use base64::Engine as _;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// Why a body did not decode (the handler turns it into its route's 400 text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyError;

/// A decoded JSON request object.
pub struct Body {
    map: Map<String, Value>,
}

impl Body {
    /// Decodes the first JSON value of `bytes`, which must be an object (or `null`, which
    /// Go decodes into an empty struct). Trailing bytes after the first value are ignored,
    /// as Go's `json.Decoder` ignores them.
    pub fn parse(bytes: &[u8]) -> Result<Body, BodyError> {
        let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
        match stream.next() {
            Some(Ok(Value::Object(map))) => Ok(Body { map }),
            Some(Ok(Value::Null)) => Ok(Body { map: Map::new() }),
            _ => Err(BodyError),
        }
    }

    /// An empty body, as when generate is called without one.
    pub fn empty() -> Body {
        Body { map: Map::new() }
    }

    /// Go's field matching: an exact name wins, else any case-insensitive match.
    fn field(&self, name: &str) -> Option<&Value> {
        if let Some(v) = self.map.get(name) {
            return Some(v);
        }
        self.map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// A `[]byte` field: absent or `null` is empty; anything but a padded std base64
    /// string is an error. The decoded bytes are zeroized on drop.
    pub fn bytes(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, BodyError> {
        match self.field(name) {
            None | Some(Value::Null) => Ok(Zeroizing::new(Vec::new())),
            Some(Value::String(s)) => decode_base64(s).ok_or(BodyError),
            Some(_) => Err(BodyError),
        }
    }

    /// A string field: absent or `null` is empty.
    pub fn string(&self, name: &str) -> Result<String, BodyError> {
        match self.field(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(BodyError),
        }
    }
}

/// Go's `base64.StdEncoding` (see [`crate::gojson::decode_base64_std`]).
pub fn decode_base64(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    crate::gojson::decode_base64_std(s.as_bytes())
}

pub fn encode_base64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Like [`to_go_json`] for values holding secrets: the serialized bytes are zeroized.
pub fn to_go_json_secret(value: &impl serde::Serialize) -> Vec<u8> {
    let raw = Zeroizing::new(serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()));
    // Secret payloads are base64 and names; neither can contain `<`, `>` or `&`.
    let mut out = Vec::with_capacity(raw.len() + 1);
    out.extend_from_slice(&raw);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_match_case_insensitively_and_exact_wins() {
        let b = Body::parse(br#"{"Context":"AAAA","context":"AQID"}"#).unwrap();
        assert_eq!(&*b.bytes("context").unwrap(), &[1, 2, 3]);
        let b = Body::parse(br#"{"PLAINTEXT":"AQID"}"#).unwrap();
        assert_eq!(&*b.bytes("plaintext").unwrap(), &[1, 2, 3]);
    }

    #[test]
    fn absent_null_and_empty_are_empty() {
        let b = Body::parse(br#"{"context":null,"version":"v1"}"#).unwrap();
        assert!(b.bytes("context").unwrap().is_empty());
        assert!(b.bytes("missing").unwrap().is_empty());
        assert!(Body::parse(b"null").unwrap().bytes("x").unwrap().is_empty());
    }

    #[test]
    fn base64_follows_gos_std_encoding() {
        assert_eq!(&*decode_base64("AQID").unwrap(), &[1, 2, 3]);
        assert_eq!(&*decode_base64("AQ==").unwrap(), &[1]);
        assert_eq!(&*decode_base64("AQ\r\nID").unwrap(), &[1, 2, 3]);
        assert!(decode_base64("AQ").is_none(), "padding is required");
        assert!(decode_base64("-_-_").is_none(), "URL-safe alphabet is refused");
        assert!(decode_base64("!!!!").is_none());
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert!(Body::parse(b"").is_err());
        assert!(Body::parse(b"[1]").is_err());
        assert!(Body::parse(b"{\"a\":").is_err());
        assert!(Body::parse(br#"{"plaintext":5}"#).unwrap().bytes("plaintext").is_err());
        // Trailing bytes after the first value are ignored, as Go's decoder does.
        assert!(Body::parse(br#"{"a":"b"} trailing"#).is_ok());
    }
}
