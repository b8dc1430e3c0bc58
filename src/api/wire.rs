//! The KES JSON wire format, apart from domain types (`kes-api.md` §7): request fields
//! matched case-insensitively as Go's `encoding/json` does, only the first JSON value read,
//! `[]byte` fields as padded standard base64, and responses encoded as Go encodes them
//! (HTML-escaped, trailing newline).

pub use crate::gojson::to_go_json;
use base64::Engine as _;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use zeroize::Zeroize as _;
use zeroize::Zeroizing;

/// Why a body did not decode (the handler turns it into its route's 400 text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyError;

/// A decoded JSON request object: its members in document order, duplicates kept, because
/// Go assigns a field once per matching key and the last one wins. Keys and string values
/// borrow from the request body unless they hold escapes: a body costs one allocation (the
/// member list), not two per member.
pub struct Body<'a> {
    members: Vec<(Text<'a>, Member<'a>)>,
}

impl<'a> Body<'a> {
    /// Decodes the first JSON value of `bytes`, which must be an object (or `null`, which
    /// Go decodes into an empty struct). Trailing bytes after the first value are ignored,
    /// as Go's `json.Decoder` ignores them. Nested values are read in full, not skipped:
    /// a body is refused exactly when it is not a valid `serde_json::Value`.
    pub fn parse(bytes: &'a [u8]) -> Result<Body<'a>, BodyError> {
        let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Members>();
        match stream.next() {
            Some(Ok(Members(members))) => Ok(Body { members }),
            _ => Err(BodyError),
        }
    }

    /// An empty body, as when generate is called without one.
    pub fn empty() -> Body<'a> {
        Body { members: Vec::new() }
    }

    /// The values of every key that Go decodes into the field `name`
    /// ([`crate::gojson::key_matches`]), in document order.
    fn fields<'b>(&'b self, name: &'b str) -> impl Iterator<Item = &'b Member<'a>> + 'b {
        self.members
            .iter()
            .filter(move |(k, _)| crate::gojson::key_matches(&k.0, name))
            .map(|(_, v)| v)
    }

    /// A `[]byte` field: absent or `null` is empty; anything but a padded std base64
    /// string is an error. Each matching key is decoded in turn and the last one wins; a bad
    /// value under any of them fails, as in Go. The decoded bytes are zeroized on drop.
    pub fn bytes(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, BodyError> {
        let mut out = Zeroizing::new(Vec::new());
        for v in self.fields(name) {
            out = match v {
                Member::Null => Zeroizing::new(Vec::new()),
                Member::Str(s) => decode_base64(&s.0).ok_or(BodyError)?,
                Member::Other => return Err(BodyError),
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
                Member::Null => {}
                Member::Str(s) => out = Some(&s.0),
                Member::Other => return Err(BodyError),
            }
        }
        Ok(out.map(|s| s.to_string()).unwrap_or_default())
    }
}

/// A JSON string, borrowed from the body when it has no escapes; a copy (made only for a
/// string with escapes) is wiped on drop, since a `plaintext` field is a secret.
struct Text<'a>(Cow<'a, str>);

impl Drop for Text<'_> {
    fn drop(&mut self) {
        if let Cow::Owned(s) = &mut self.0 {
            s.zeroize();
        }
    }
}

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(v.to_string())))
    }
}

/// A member's value as the fields need it: only strings are kept.
enum Member<'a> {
    Null,
    Str(Text<'a>),
    /// A number, boolean, array or object: read in full, as `serde_json::Value` reads it
    /// (numbers parsed, nesting depth limited), then dropped.
    Other,
}

impl<'de> serde::Deserialize<'de> for Member<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MemberVisitor)
    }
}

struct MemberVisitor;

impl<'de> Visitor<'de> for MemberVisitor {
    type Value = Member<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Member<'de>, E> {
        Ok(Member::Null)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Member<'de>, E> {
        TextVisitor.visit_borrowed_str(v).map(Member::Str)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Member<'de>, E> {
        TextVisitor.visit_str(v).map(Member::Str)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Member<'de>, E> {
        Ok(Member::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Member<'de>, E> {
        Ok(Member::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Member<'de>, E> {
        Ok(Member::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Member<'de>, E> {
        Ok(Member::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Member<'de>, A::Error> {
        while seq.next_element::<Member>()?.is_some() {}
        Ok(Member::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Member<'de>, A::Error> {
        while map.next_entry::<Text, Member>()?.is_some() {}
        Ok(Member::Other)
    }
}

/// A JSON object as its members in order (duplicates kept), or `null` as no members.
struct Members<'a>(Vec<(Text<'a>, Member<'a>)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Members<'de>, E> {
                Ok(Members(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<Text, Member>()? {
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

/// One field of [`secret_json`]: bytes written as base64, or a string written as a JSON
/// string.
pub enum JsonField<'a> {
    Base64(&'a [u8]),
    Str(&'a str),
}

/// The JSON object of `fields`, in order, and a newline as Go ends it: byte for byte what
/// serde_json writes for a struct of the same fields (no HTML escapes: base64 and version
/// ids have none of `<`, `>`, `&` to escape). Written in one buffer sized up
/// front, base64 straight into it, and wiped on drop: the answers of generate, decrypt and
/// hmac hold key material.
pub fn secret_json(fields: &[(&str, JsonField)]) -> Zeroizing<Vec<u8>> {
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut len = 3;
    for (name, value) in fields {
        len += name.len() + 6;
        len += match value {
            JsonField::Base64(b) => b.len().div_ceil(3) * 4,
            // Escaping may need more; the buffer then grows once.
            JsonField::Str(s) => s.len(),
        };
    }
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    out.push(b'{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(&mut out, name);
        out.push(b':');
        match value {
            JsonField::Base64(b) => {
                out.push(b'"');
                let start = out.len();
                out.resize(start + b.len().div_ceil(3) * 4, 0);
                let n = engine.encode_slice(b, &mut out[start..]).unwrap_or(0);
                out.truncate(start + n);
                out.push(b'"');
            }
            JsonField::Str(s) => push_json_str(&mut out, s),
        }
    }
    out.extend_from_slice(b"}\n");
    out
}

/// Appends `s` as serde_json writes a string.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
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

    /// What the body parser accepted when it built `serde_json::Value`s: the first JSON
    /// value must be an object or null.
    fn value_accepts(bytes: &[u8]) -> bool {
        let mut s = serde_json::Deserializer::from_slice(bytes).into_iter::<serde_json::Value>();
        matches!(s.next(), Some(Ok(serde_json::Value::Object(_) | serde_json::Value::Null)))
    }

    #[test]
    fn borrowed_members_accept_what_values_accepted() {
        let bodies: &[&[u8]] = &[
            br#"{"a":1e400}"#,
            br#"{"a":[1,2,{"b":[true,null,-0.5e-3]}]}"#,
            br#"{"a":[1e400]}"#,
            br#"{"a":{"b":1e400}}"#,
            br#"{"a":-}"#,
            br#"{"a":01}"#,
            br#"{"a":"\ud800"}"#,
            br#"{"a":"\u00e9\n"}"#,
            br#"{"a\u0062":"x","a":{"\u0000":[]}}"#,
            br#"{"a":[}"#,
            br#"{"a":tru}"#,
            br#"{"a":"x",}"#,
            br#"{"a":"x"}{"#,
            b"{\"a\":\"\xff\"}",
            b"{\"a\":\"\x01\"}",
            br#"  null  "#,
            br#"{"a":18446744073709551616}"#,
            br#"{"a":-9223372036854775809}"#,
        ];
        for b in bodies {
            assert_eq!(Body::parse(b).is_ok(), value_accepts(b), "{}", String::from_utf8_lossy(b));
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(Body::parse(deep.as_bytes()).is_ok(), value_accepts(deep.as_bytes()));
        assert!(Body::parse(deep.as_bytes()).is_err(), "serde_json's depth limit holds");
    }

    #[test]
    fn escaped_keys_and_values_decode_as_before() {
        let b = Body::parse(br#"{"con\u0074ext":"A\u0051ID","version":"v\u0031"}"#).unwrap();
        assert_eq!(&*b.bytes("context").unwrap(), &[1, 2, 3], "an escaped key still matches");
        assert_eq!(b.string("version").unwrap(), "v1");
        let b = Body::parse(br#"{"context":"AQ\/D"}"#).unwrap();
        assert_eq!(&*b.bytes("context").unwrap(), &[1, 15, 195]);
        // Non-string values under a field fail it; under other keys they are ignored.
        let b = Body::parse(br#"{"other":[1,{"x":2}],"context":"AQID"}"#).unwrap();
        assert_eq!(&*b.bytes("context").unwrap(), &[1, 2, 3]);
        for v in ["[]", "{}", "true", "1", "-1.5"] {
            let text = format!("{{\"context\":{v}}}");
            let b = Body::parse(text.as_bytes()).unwrap();
            assert!(b.bytes("context").is_err(), "{v}");
            assert!(b.string("context").is_err(), "{v}");
        }
    }

    /// How the answers holding secrets were written before [`secret_json`].
    fn serde_and_newline(value: &impl serde::Serialize) -> Vec<u8> {
        let mut out = serde_json::to_vec(value).unwrap();
        out.push(b'\n');
        out
    }

    #[test]
    fn secret_json_writes_what_serde_wrote() {
        #[derive(serde::Serialize)]
        struct Three<'a> {
            plaintext: &'a str,
            ciphertext: String,
            version: &'a str,
        }
        for len in [0usize, 1, 2, 3, 32, 76, 100] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            for version in ["", "v1", "a\"b\\c\u{1}<>&\u{2028}é"] {
                let want = serde_and_newline(&Three {
                    plaintext: &encode_base64(&bytes[..len / 2]),
                    ciphertext: encode_base64(&bytes),
                    version,
                });
                let got = secret_json(&[
                    ("plaintext", JsonField::Base64(&bytes[..len / 2])),
                    ("ciphertext", JsonField::Base64(&bytes)),
                    ("version", JsonField::Str(version)),
                ]);
                assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
            }
        }
        assert_eq!(&*secret_json(&[]), b"{}\n");
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
