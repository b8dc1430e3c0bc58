//! The KES JSON wire format, apart from domain types (`kes-api.md` §7): request fields
//! matched case-insensitively as Go's `encoding/json` does, only the first JSON value read,
//! `[]byte` fields as padded standard base64, and responses encoded as Go encodes them
//! (HTML-escaped, trailing newline).

pub use crate::gojson::to_go_json;
use base64::Engine as _;
use serde_json::Value;
use zeroize::Zeroizing;

/// Why a body did not decode (the handler turns it into its route's 400 text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyError;

/// A decoded JSON request object: its members in document order, duplicates kept, because
/// Go assigns a field once per matching key and the last one wins.
pub struct Body {
    members: Vec<(String, Value)>,
}

impl Body {
    /// Decodes the first JSON value of `bytes`, which must be an object (or `null`, which
    /// Go decodes into an empty struct). Trailing bytes after the first value are ignored,
    /// as Go's `json.Decoder` ignores them.
    pub fn parse(bytes: &[u8]) -> Result<Body, BodyError> {
        let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Members>();
        match stream.next() {
            Some(Ok(Members(members))) => Ok(Body { members }),
            _ => Err(BodyError),
        }
    }

    /// An empty body, as when generate is called without one.
    pub fn empty() -> Body {
        Body { members: Vec::new() }
    }

    /// The values of every key that Go decodes into the field `name`
    /// ([`crate::gojson::key_matches`]), in document order.
    fn fields<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.members
            .iter()
            .filter(move |(k, _)| crate::gojson::key_matches(k, name))
            .map(|(_, v)| v)
    }

    /// A `[]byte` field: absent or `null` is empty; anything but a padded std base64
    /// string is an error. Each matching key is decoded in turn and the last one wins; a bad
    /// value under any of them fails, as in Go. The decoded bytes are zeroized on drop.
    pub fn bytes(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, BodyError> {
        let mut out = Zeroizing::new(Vec::new());
        for v in self.fields(name) {
            out = match v {
                Value::Null => Zeroizing::new(Vec::new()),
                Value::String(s) => decode_base64(s).ok_or(BodyError)?,
                _ => return Err(BodyError),
            };
        }
        Ok(out)
    }

    /// A string field: absent is empty; `null` leaves it as it was (Go's rule for a string);
    /// the last matching key wins; a non-string value under any of them is an error.
    pub fn string(&self, name: &str) -> Result<String, BodyError> {
        let mut out = None;
        for v in self.fields(name) {
            match v {
                Value::Null => {}
                Value::String(s) => out = Some(s),
                _ => return Err(BodyError),
            }
        }
        Ok(out.cloned().unwrap_or_default())
    }
}

/// A JSON object as its members in order (duplicates kept), or `null` as no members.
struct Members(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object or null")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Members, E> {
                Ok(Members(Vec::new()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_any(V)
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
    fn fields_match_as_go_matches_them_and_the_last_key_wins() {
        let b = Body::parse(br#"{"Context":"AAAA","context":"AQID"}"#).unwrap();
        assert_eq!(&*b.bytes("context").unwrap(), &[1, 2, 3]);
        let b = Body::parse(br#"{"context":"AQID","Context":"AAAA"}"#).unwrap();
        assert_eq!(&*b.bytes("context").unwrap(), &[0, 0, 0], "last key wins, as in Go");
        let b = Body::parse(br#"{"PLAINTEXT":"AQID"}"#).unwrap();
        assert_eq!(&*b.bytes("plaintext").unwrap(), &[1, 2, 3]);
        let b =
            Body::parse("{\"\u{212a}ey\":\"AQID\",\"cipher\u{017f}\":\"x\"}".as_bytes()).unwrap();
        assert_eq!(&*b.bytes("key").unwrap(), &[1, 2, 3], "the Kelvin sign is a k");
        assert!(b.string("ciphers").unwrap() == "x", "the long s is an s");
        let b = Body::parse(br#"{"version":"v1","Version":null}"#).unwrap();
        assert_eq!(b.string("version").unwrap(), "v1", "null leaves a string as it was");
        let b = Body::parse(br#"{"context":"AQID","CONTEXT":null}"#).unwrap();
        assert!(b.bytes("context").unwrap().is_empty(), "null resets a []byte");
        let b = Body::parse(br#"{"context":5,"context":"AQID"}"#).unwrap();
        assert!(b.bytes("context").is_err(), "a bad value under any key fails, as in Go");
        let b = Body::parse(br#"{"version":5,"version":"v1"}"#).unwrap();
        assert!(b.string("version").is_err());
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
