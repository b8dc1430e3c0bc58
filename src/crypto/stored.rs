//! Stored key values (`kes-crypto.md` §2): the JSON eras F0–F3 and the current F4,
//! `base64std(protobuf KeyVersion)`, with a hand-written protobuf codec (§2.3).
//!
//! The reader accepts what Go's `encoding/json` and protobuf-go accept: any field order,
//! repeated fields (last scalar wins, messages merge), unknown fields of every wire type
//! (including groups), and known field numbers with an unexpected wire type, which protobuf-go
//! also treats as unknown. The writer emits exactly upstream's bytes.

use super::golang::{self, GO_ZERO_UNIX};
use super::{Algorithm, FormatError, HmacKey, KEY_LEN, KeyVersion, SecretKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// protobuf `SecretKey.Type` values.
const TYPE_AES256: u32 = 1;
const TYPE_CHACHA20: u32 = 2;
/// protobuf `HMACKey.Hash` value for SHA-256, the only one.
const HASH_SHA256: u32 = 1;

/// Nesting of unknown protobuf groups we are willing to skip (protobuf-go allows 10 000;
/// nothing KES ever wrote has any).
const MAX_GROUP_DEPTH: usize = 64;

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_START_GROUP: u8 = 3;
const WIRE_END_GROUP: u8 = 4;
const WIRE_FIXED32: u8 = 5;

/// protobuf's largest field number (2^29 - 1).
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

fn err(what: &'static str) -> FormatError {
    FormatError(what)
}

/// §2.2: valid JSON takes the JSON path, anything else must be base64 protobuf.
pub(crate) fn parse(value: &[u8]) -> Result<KeyVersion, FormatError> {
    golang::with_go_text(value, |text| {
        if serde_json::from_str::<IgnoredAny>(text).is_ok() {
            parse_json(text)
        } else {
            let bytes =
                golang::base64_decode(value).ok_or(err("stored key is neither JSON nor base64"))?;
            parse_protobuf(&bytes)
        }
    })
}

fn parse_json(text: &str) -> Result<KeyVersion, FormatError> {
    let key: JsonKey = serde_json::from_str(text).map_err(|_| err("invalid JSON stored key"))?;
    let bytes = key.bytes.as_deref().map(Vec::as_slice).unwrap_or_default();
    let bytes: &[u8; KEY_LEN] = bytes.try_into().map_err(|_| err("stored key is not 256 bits"))?;
    let algorithm = match key.algorithm.as_str() {
        "" => Algorithm::Aes256, // F0 and imported "generic" keys
        name => Algorithm::from_name(name).ok_or(err("unknown stored key algorithm"))?,
    };
    Ok(KeyVersion {
        key: SecretKey::new(algorithm, bytes),
        hmac: None,
        created_at: key.created_at,
        created_by: key.created_by,
    })
}

/// The JSON eras' fields; `version` and anything else is ignored.
#[derive(Default)]
struct JsonKey {
    bytes: Option<Zeroizing<Vec<u8>>>,
    algorithm: String,
    created_at: Option<OffsetDateTime>,
    created_by: String,
}

impl<'de> de::Deserialize<'de> for JsonKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(JsonKeyVisitor)
    }
}

struct JsonKeyVisitor;

impl<'de> Visitor<'de> for JsonKeyVisitor {
    type Value = JsonKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON stored key object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonKey, A::Error> {
        const FIELDS: &[&str] = &["bytes", "algorithm", "created_at", "created_by"];
        let mut key = JsonKey::default();
        while let Some(field) = map.next_key_seed(golang::Field(FIELDS))? {
            match field {
                Some(0) => key.bytes = map.next_value::<golang::Bytes>()?.0,
                Some(1) => {
                    if let Some(s) = map.next_value::<golang::Text>()?.0 {
                        key.algorithm = s;
                    }
                }
                Some(2) => {
                    if let Some(t) = map.next_value::<golang::Time>()?.0 {
                        key.created_at = t;
                    }
                }
                Some(3) => {
                    if let Some(s) = map.next_value::<golang::Text>()?.0 {
                        key.created_by = s;
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(key)
    }
}

/// Fields of one message as they accumulate; sub-messages merge as protobuf requires.
#[derive(Default)]
struct PbKeyVersion<'a> {
    key: Option<PbKey<'a>>,
    hmac: Option<PbKey<'a>>,
    created_at: Option<(i64, i32)>,
    created_by: &'a [u8],
}

/// `SecretKey {Key, Type}` and `HMACKey {Key, Hash}` share one shape.
#[derive(Default)]
struct PbKey<'a> {
    bytes: &'a [u8],
    kind: u32,
}

fn parse_protobuf(buf: &[u8]) -> Result<KeyVersion, FormatError> {
    let mut pb = PbKeyVersion::default();
    let mut r = PbReader { rest: buf };
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            (1, WIRE_LEN) => read_key(r.len_delimited()?, pb.key.get_or_insert_default())?,
            (2, WIRE_LEN) => read_key(r.len_delimited()?, pb.hmac.get_or_insert_default())?,
            (3, WIRE_LEN) => {
                read_timestamp(r.len_delimited()?, pb.created_at.get_or_insert_default())?
            }
            (4, WIRE_LEN) => {
                // proto3 strings must be UTF-8; protobuf-go checks every occurrence.
                let s = r.len_delimited()?;
                std::str::from_utf8(s).map_err(|_| err("stored created_by is not UTF-8"))?;
                pb.created_by = s;
            }
            _ => r.skip(field, wire, 0)?,
        }
    }

    let key = pb.key.ok_or(err("stored key has no secret key"))?;
    let algorithm = match key.kind {
        TYPE_AES256 => Algorithm::Aes256,
        TYPE_CHACHA20 => Algorithm::ChaCha20,
        _ => return Err(err("unknown stored key type")),
    };
    let key_bytes: &[u8; KEY_LEN] =
        key.bytes.try_into().map_err(|_| err("stored key is not 256 bits"))?;
    let hmac = pb.hmac.ok_or(err("stored key has no HMAC key"))?;
    if hmac.kind != HASH_SHA256 {
        return Err(err("unknown stored HMAC hash"));
    }
    let hmac_bytes: &[u8; KEY_LEN] =
        hmac.bytes.try_into().map_err(|_| err("stored HMAC key is not 256 bits"))?;
    let created_by =
        std::str::from_utf8(pb.created_by).map_err(|_| err("stored created_by is not UTF-8"))?;

    Ok(KeyVersion {
        key: SecretKey::new(algorithm, key_bytes),
        hmac: Some(HmacKey::new(hmac_bytes)),
        // protobuf-go's `AsTime` of an absent Timestamp is the Unix epoch, not Go's zero time.
        created_at: go_unix_time(pb.created_at.unwrap_or_default()),
        created_by: created_by.to_owned(),
    })
}

fn read_key<'a>(buf: &'a [u8], key: &mut PbKey<'a>) -> Result<(), FormatError> {
    let mut r = PbReader { rest: buf };
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            (1, WIRE_LEN) => key.bytes = r.len_delimited()?,
            // uint32: protobuf-go keeps the low 32 bits of the varint.
            (2, WIRE_VARINT) => key.kind = r.varint()? as u32,
            _ => r.skip(field, wire, 0)?,
        }
    }
    Ok(())
}

/// `google.protobuf.Timestamp {int64 seconds = 1; int32 nanos = 2}`.
fn read_timestamp(buf: &[u8], ts: &mut (i64, i32)) -> Result<(), FormatError> {
    let mut r = PbReader { rest: buf };
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            // int64/int32 are two's complement varints; int32 keeps the low 32 bits.
            (1, WIRE_VARINT) => ts.0 = r.varint()? as i64,
            (2, WIRE_VARINT) => ts.1 = r.varint()? as i32,
            _ => r.skip(field, wire, 0)?,
        }
    }
    Ok(())
}

/// Go's `time.Unix(seconds, nanos)` (nanos normalised into the seconds), as our `created_at`:
/// `None` for Go's zero time, and for instants outside what `time` can represent (the key
/// stays usable; only its creation date is lost).
fn go_unix_time((seconds, nanos): (i64, i32)) -> Option<OffsetDateTime> {
    let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    if total == i128::from(GO_ZERO_UNIX) * 1_000_000_000 {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(total).ok()
}

/// A protobuf wire-format reader over one message.
struct PbReader<'a> {
    rest: &'a [u8],
}

impl<'a> PbReader<'a> {
    /// A varint of at most 10 bytes whose value fits in 64 bits.
    fn varint(&mut self) -> Result<u64, FormatError> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&b, tail) = self.rest.split_first().ok_or(err("truncated protobuf varint"))?;
            self.rest = tail;
            if i == 9 && b > 1 {
                return Err(err("protobuf varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(err("protobuf varint overflows 64 bits"))
    }

    /// The next field's number and wire type, `None` at the end of the message.
    fn tag(&mut self) -> Result<Option<(u64, u8)>, FormatError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = tag >> 3;
        if field == 0 || field > MAX_FIELD_NUMBER {
            return Err(err("invalid protobuf field number"));
        }
        Ok(Some((field, (tag & 7) as u8)))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], FormatError> {
        let n = usize::try_from(n).map_err(|_| err("truncated protobuf field"))?;
        if n > self.rest.len() {
            return Err(err("truncated protobuf field"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.varint()?;
        self.take(n)
    }

    /// Skips the value of an unknown field (a group up to its matching end marker).
    fn skip(&mut self, field: u64, wire: u8, depth: usize) -> Result<(), FormatError> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_FIXED64 => self.take(8).map(drop),
            WIRE_LEN => self.len_delimited().map(drop),
            WIRE_FIXED32 => self.take(4).map(drop),
            WIRE_START_GROUP => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err(err("protobuf groups nested too deep"));
                }
                loop {
                    let (inner, inner_wire) =
                        self.tag()?.ok_or(err("unterminated protobuf group"))?;
                    if inner_wire == WIRE_END_GROUP {
                        return if inner == field {
                            Ok(())
                        } else {
                            Err(err("mismatched protobuf group end"))
                        };
                    }
                    self.skip(inner, inner_wire, depth + 1)?;
                }
            }
            _ => Err(err("invalid protobuf wire type")), // a stray end-group, 6 or 7
        }
    }
}

/// F4 exactly as upstream writes it (§2.3): fields ascending, proto3 zero values omitted.
pub(crate) fn encode(kv: &KeyVersion) -> Result<Zeroizing<String>, FormatError> {
    let hmac = kv.hmac.as_ref().ok_or(err("a key without HMAC key cannot be stored"))?;
    let kind = match kv.key.algorithm {
        Algorithm::Aes256 => TYPE_AES256,
        Algorithm::ChaCha20 => TYPE_CHACHA20,
    };
    // Go's zero time is written as its (negative) Unix seconds, as timestamppb.New does.
    let (seconds, nanos) = match kv.created_at {
        Some(t) => (t.unix_timestamp(), t.nanosecond()),
        None => (GO_ZERO_UNIX, 0),
    };

    let mut timestamp = Vec::with_capacity(2 + 10 + 1 + 5);
    if seconds != 0 {
        timestamp.push(field_tag(1, WIRE_VARINT));
        put_varint(&mut timestamp, seconds as u64); // two's complement, as int64 is encoded
    }
    if nanos != 0 {
        timestamp.push(field_tag(2, WIRE_VARINT));
        put_varint(&mut timestamp, u64::from(nanos));
    }

    let created_by = kv.created_by.as_bytes();
    let mut pb = Zeroizing::new(Vec::with_capacity(
        2 * (4 + KEY_LEN + 2) + 2 + timestamp.len() + 11 + created_by.len(),
    ));
    put_key(&mut pb, 1, &kv.key.bytes, kind);
    put_key(&mut pb, 2, &hmac.bytes, HASH_SHA256);
    put_len_delimited(&mut pb, 3, &timestamp);
    if !created_by.is_empty() {
        put_len_delimited(&mut pb, 4, created_by);
    }

    // `encode_slice` writes straight into our buffer; `encode_string` would stage the text in
    // an unwiped stack buffer.
    let mut text = Zeroizing::new(vec![0u8; pb.len().div_ceil(3) * 4]);
    let n = STANDARD.encode_slice(pb.as_slice(), text.as_mut_slice()).map_err(|_| err("base64"))?;
    text.truncate(n);
    let text = String::from_utf8(std::mem::take(&mut *text)).map_err(|_| err("base64"))?;
    Ok(Zeroizing::new(text))
}

fn field_tag(field: u8, wire: u8) -> u8 {
    (field << 3) | wire
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len_delimited(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(field_tag(field, WIRE_LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `{bytes Key = 1; uint32 Type/Hash = 2}` as field `field`; `kind` is never 0 here.
fn put_key(out: &mut Vec<u8>, field: u8, key: &[u8; KEY_LEN], kind: u32) {
    out.push(field_tag(field, WIRE_LEN));
    out.push(2 + KEY_LEN as u8 + 1 + 1); // 0a 20 <key> 10 <kind>; kind < 128
    out.push(field_tag(1, WIRE_LEN));
    out.push(KEY_LEN as u8);
    out.extend_from_slice(key);
    out.push(field_tag(2, WIRE_VARINT));
    put_varint(out, u64::from(kind));
}

#[cfg(test)]
mod tests {
    //! `kes-crypto.md` §8.2 (P0–P9) and §8.3, plus the protobuf and Go-JSON corners.

    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    const Z32_B64: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const ADMIN: &str = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";
    const P5: &str = "CiQKIMiHG7XrN94FuwblJJor4f7f6rbqAl7DwsLaiIoyz0D2EAESJAognLXl4yqa4cjZTcSbsU6sNnN8kP9ARWkXwa20YQZa9HgQARoMCNithK0GEID67qYDIkAzZWNmY2RmMzhmY2JlMTQxYWUyNmExMDMwZjgxZTk2Yjc1MzM2NWE0Njc2MGFlNmI1Nzg2OThhOTdjNTlmZDIy";

    fn b64(s: &str) -> Vec<u8> {
        STANDARD.decode(s).unwrap()
    }

    fn unhex(s: &str) -> Vec<u8> {
        crate::hex::decode(s).unwrap()
    }

    fn key_bytes(kv: &KeyVersion) -> Vec<u8> {
        kv.key.bytes.to_vec()
    }

    fn hmac_bytes(kv: &KeyVersion) -> Option<Vec<u8>> {
        kv.hmac.as_ref().map(|h| h.bytes.to_vec())
    }

    fn parse_str(s: &str) -> Result<KeyVersion, FormatError> {
        KeyVersion::parse(s.as_bytes())
    }

    #[test]
    fn p0_p1_p2_json_eras_without_algorithm() {
        let mut one = vec![0u8; 32];
        one[31] = 1;
        let cases = [
            (r#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#, vec![0u8; 32]),
            (r#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE="}"#, one),
            (
                r#"{"bytes":"J8qmOyEV2ce2yoAC+5t0Y7CSP/hTMppL7XHpAnyc+0E="}"#,
                unhex("27caa63b2115d9c7b6ca8002fb9b7463b0923ff853329a4bed71e9027c9cfb41"),
            ),
        ];
        for (value, want) in cases {
            let kv = parse_str(value).unwrap();
            assert_eq!(kv.key.algorithm(), Algorithm::Aes256, "{value}");
            assert_eq!(key_bytes(&kv), want, "{value}");
            assert!(kv.hmac.is_none());
            assert_eq!(kv.created_at, None);
            assert_eq!(kv.created_by, "");
        }
    }

    #[test]
    fn p3_p4_json_with_algorithm_and_creator() {
        let kv = parse_str(r#"{"bytes":"J8qmOyEV2ce2yoAC+5t0Y7CSP/hTMppL7XHpAnyc+0E=","algorithm":"AES256-GCM_SHA256","created_at":"2009-11-10T23:00:00Z","created_by":"40235905b7b83e0537a002db523cd019d6709b899adc249c957860cd00fa9f78"}"#).unwrap();
        assert_eq!(kv.key.algorithm(), Algorithm::Aes256);
        assert_eq!(
            key_bytes(&kv),
            unhex("27caa63b2115d9c7b6ca8002fb9b7463b0923ff853329a4bed71e9027c9cfb41")
        );
        assert_eq!(kv.created_at, Some(datetime!(2009-11-10 23:00:00 UTC)));
        assert_eq!(
            kv.created_by,
            "40235905b7b83e0537a002db523cd019d6709b899adc249c957860cd00fa9f78"
        );
        assert!(kv.hmac.is_none());

        let kv = parse_str(r#"{"bytes":"9ew6BCae3+13sniOUwttEJ62amg98YXc0OW0WBhNiCY=","algorithm":"XCHACHA20-POLY1305","created_at":"2009-11-10T23:00:00Z","created_by":"189d9de5331e3ee8abe9e4bd40d474ad621d79ccf83a711f6ac68050eb15a52a"}"#).unwrap();
        assert_eq!(kv.key.algorithm(), Algorithm::ChaCha20);
        assert_eq!(
            key_bytes(&kv),
            unhex("f5ec3a04269edfed77b2788e530b6d109eb66a683df185dcd0e5b458184d8826")
        );
        assert_eq!(kv.created_at, Some(datetime!(2009-11-10 23:00:00 UTC)));
        assert_eq!(
            kv.created_by,
            "189d9de5331e3ee8abe9e4bd40d474ad621d79ccf83a711f6ac68050eb15a52a"
        );
    }

    #[test]
    fn p5_protobuf() {
        let kv = parse_str(P5).unwrap();
        assert_eq!(kv.key.algorithm(), Algorithm::Aes256);
        assert_eq!(key_bytes(&kv), b64("yIcbtes33gW7BuUkmivh/t/qtuoCXsPCwtqIijLPQPY="));
        assert_eq!(hmac_bytes(&kv), Some(b64("nLXl4yqa4cjZTcSbsU6sNnN8kP9ARWkXwa20YQZa9Hg=")));
        let t = kv.created_at.unwrap();
        assert_eq!(t, datetime!(2024-01-12 10:39:20.886816 UTC));
        assert_eq!((t.unix_timestamp(), t.nanosecond()), (1_705_055_960, 886_816_000));
        assert_eq!(kv.created_by, ADMIN);
    }

    #[test]
    fn p5_decoded_bytes_are_as_documented() {
        let want = [
            "0a240a20c8871bb5eb37de05bb06e5249a2be1fedfeab6ea025ec3c2c2da888a32cf40f61001",
            "12240a209cb5e5e32a9ae1c8d94dc49bb14eac36737c90ff40456917c1adb461065af4781001",
            "1a0c08d8ad84ad061080faeea603",
            "2240",
        ]
        .concat();
        let mut want = unhex(&want);
        want.extend_from_slice(ADMIN.as_bytes());
        assert_eq!(b64(P5), want);
    }

    #[test]
    fn p5_encodes_back_byte_for_byte() {
        let kv = parse_str(P5).unwrap();
        assert_eq!(kv.encode().unwrap().as_str(), P5);
    }

    #[test]
    fn p6_to_p9_must_fail() {
        for value in [
            format!(r#""bytes":"{Z32_B64}"}}"#),
            format!(r#"{{bytes":"{Z32_B64}"}}"#),
            format!(r#"{{"bytes""{Z32_B64}"}}"#),
            format!(r#""bytes":"{Z32_B64}""#),
        ] {
            assert!(parse_str(&value).is_err(), "{value}");
        }
    }

    /// §8.3 derived exact bytes.
    #[test]
    fn encode_vectors() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_705_055_960_886_816_000).unwrap();
        let kv = KeyVersion {
            key: SecretKey::new(Algorithm::Aes256, &[0; 32]),
            hmac: Some(HmacKey::new(&[0; 32])),
            created_at: Some(t),
            created_by: ADMIN.into(),
        };
        assert_eq!(
            kv.encode().unwrap().as_str(),
            "CiQKIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEAESJAogAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQARoMCNithK0GEID67qYDIkAzZWNmY2RmMzhmY2JlMTQxYWUyNmExMDMwZjgxZTk2Yjc1MzM2NWE0Njc2MGFlNmI1Nzg2OThhOTdjNTlmZDIy"
        );
        let kv = KeyVersion {
            key: SecretKey::new(Algorithm::ChaCha20, &[0; 32]),
            hmac: Some(HmacKey::new(&[0; 32])),
            created_at: Some(t),
            created_by: String::new(),
        };
        let encoded = kv.encode().unwrap();
        assert_eq!(
            encoded.as_str(),
            "CiQKIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEAISJAogAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQARoMCNithK0GEID67qYD"
        );
        assert!(encoded.starts_with("Ci"));
    }

    /// Upstream's round trip: a local-offset time is stored as UTC and reads back equal.
    #[test]
    fn encode_parse_round_trip_with_offset_time() {
        let t = datetime!(2024-01-12 11:39:20.886816 +01:00);
        let kv = KeyVersion {
            key: SecretKey::new(Algorithm::Aes256, &[0; 32]),
            hmac: Some(HmacKey::new(&[0; 32])),
            created_at: Some(t),
            created_by: ADMIN.into(),
        };
        let back = KeyVersion::parse(kv.encode().unwrap().as_bytes()).unwrap();
        assert_eq!(back.created_at, Some(t));
        assert_eq!(back.created_at.unwrap().offset(), time::UtcOffset::UTC);
        assert_eq!(back.created_by, ADMIN);
        assert_eq!(key_bytes(&back), vec![0; 32]);
        assert_eq!(hmac_bytes(&back), Some(vec![0; 32]));
    }

    #[test]
    fn keys_without_hmac_are_never_written() {
        let kv = parse_str(&format!(r#"{{"bytes":"{Z32_B64}"}}"#)).unwrap();
        assert!(kv.encode().is_err());
    }

    #[test]
    fn zero_time_is_written_as_go_does_and_reads_back_as_none() {
        let kv = KeyVersion {
            key: SecretKey::new(Algorithm::Aes256, &[0; 32]),
            hmac: Some(HmacKey::new(&[0; 32])),
            created_at: None,
            created_by: String::new(),
        };
        let pb = b64(&kv.encode().unwrap());
        // timestamppb.New(time.Time{}) = {seconds: -62135596800}: a 10-byte varint.
        let mut ts = vec![0x1a, 11, 0x08];
        put_varint(&mut ts, GO_ZERO_UNIX as u64);
        assert_eq!(&pb[76..], ts.as_slice());
        assert_eq!(KeyVersion::parse(kv.encode().unwrap().as_bytes()).unwrap().created_at, None);
    }

    // ---- Go JSON semantics --------------------------------------------------------------

    #[test]
    fn json_f2_f3_shapes() {
        // F2: version first, classic algorithm name.
        let kv = parse_str(&format!(r#"{{"version":"v1","bytes":"{Z32_B64}","algorithm":"XCHACHA20-POLY1305","created_at":"2022-05-01T10:00:00.123456789Z","created_by":"{ADMIN}"}}"#)).unwrap();
        assert_eq!(kv.key.algorithm(), Algorithm::ChaCha20);
        assert_eq!(kv.created_at, Some(datetime!(2022-05-01 10:00:00.123456789 UTC)));
        // F3: AES keys have no algorithm, ChaCha keys say "ChaCha20", zero time.
        let kv = parse_str(&format!(r#"{{"version":"v1","bytes":"{Z32_B64}","created_at":"0001-01-01T00:00:00Z","created_by":""}}"#)).unwrap();
        assert_eq!(kv.key.algorithm(), Algorithm::Aes256);
        assert_eq!(kv.created_at, None);
        let kv = parse_str(&format!(r#"{{"version":"v1","bytes":"{Z32_B64}","algorithm":"ChaCha20","created_at":"2023-10-03T00:48:37+02:00"}}"#)).unwrap();
        assert_eq!(kv.key.algorithm(), Algorithm::ChaCha20);
        assert_eq!(kv.created_at, Some(datetime!(2023-10-03 00:48:37 +02:00)));
        let kv = parse_str(&format!(r#"{{"bytes":"{Z32_B64}","algorithm":"AES256"}}"#)).unwrap();
        assert_eq!(kv.key.algorithm(), Algorithm::Aes256);
    }

    #[test]
    fn json_keys_match_case_insensitively_and_whitespace_is_allowed() {
        let kv = parse_str(&format!(
            " \n{{ \"BYTES\" : \"{Z32_B64}\", \"Algorithm\":\"ChaCha20\", \"Created_By\":\"me\", \"CREATED_AT\":null }}\r\n"
        ))
        .unwrap();
        assert_eq!(kv.key.algorithm(), Algorithm::ChaCha20);
        assert_eq!(kv.created_by, "me");
        assert_eq!(kv.created_at, None);
    }

    #[test]
    fn json_duplicates_last_wins_and_null_keeps_strings() {
        let kv = parse_str(&format!(
            r#"{{"bytes":"AAE=","bytes":"{Z32_B64}","algorithm":"ChaCha20","algorithm":null,"created_by":"a","created_by":null}}"#
        ))
        .unwrap();
        assert_eq!(key_bytes(&kv), vec![0; 32]);
        assert_eq!(kv.key.algorithm(), Algorithm::ChaCha20);
        assert_eq!(kv.created_by, "a");
        // null resets a byte slice to nil: then the key is empty.
        assert!(parse_str(&format!(r#"{{"bytes":"{Z32_B64}","bytes":null}}"#)).is_err());
    }

    #[test]
    fn json_base64_follows_go() {
        let wrapped = format!(r#"{{"bytes":"{}\r\n{}"}}"#, &Z32_B64[..20], &Z32_B64[20..]);
        assert_eq!(key_bytes(&parse_str(&wrapped).unwrap()), vec![0; 32]);
        let escaped = r#"{"bytes":"J8qmOyEV2ce2yoAC+5t0Y7CSP\/hTMppL7XHpAnyc+0E="}"#;
        assert_eq!(
            key_bytes(&parse_str(escaped).unwrap()),
            unhex("27caa63b2115d9c7b6ca8002fb9b7463b0923ff853329a4bed71e9027c9cfb41")
        );
        let unpadded = format!(r#"{{"bytes":"{}"}}"#, Z32_B64.trim_end_matches('='));
        assert!(parse_str(&unpadded).is_err());
    }

    #[test]
    fn json_errors() {
        let bad = [
            r#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="}"#.to_string(), // 31 bytes
            r#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="}"#.to_string(), // 34 bytes
            format!(r#"{{"bytes":"{Z32_B64}","algorithm":"AES-256-GCM"}}"#),
            format!(r#"{{"bytes":"{Z32_B64}","algorithm":"aes256"}}"#),
            format!(r#"{{"bytes":"{Z32_B64}","created_at":"yesterday"}}"#),
            format!(r#"{{"bytes":"{Z32_B64}","created_at":0}}"#),
            format!(r#"{{"bytes":"{Z32_B64}","created_by":7}}"#),
            r#"{"bytes":7}"#.to_string(),
            "{}".to_string(),
            "null".to_string(),
            format!(r#"["{Z32_B64}"]"#),
            format!(r#""{Z32_B64}""#),
            "1234".to_string(), // valid JSON (a number), so never tried as base64
            String::new(),
        ];
        for value in &bad {
            assert!(parse_str(value).is_err(), "{value:?}");
        }
    }

    #[test]
    fn json_invalid_utf8_in_strings_is_replaced_as_go_does() {
        let mut value = format!(r#"{{"bytes":"{Z32_B64}","created_by":"a"#).into_bytes();
        value.push(0xff);
        value.extend_from_slice(b"b\"}");
        assert_eq!(KeyVersion::parse(&value).unwrap().created_by, "a\u{fffd}b");
    }

    // ---- protobuf reader ------------------------------------------------------------------

    fn pb_field(field: u8, wire: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![field_tag(field, wire)];
        if wire == WIRE_LEN {
            put_varint(&mut v, payload.len() as u64);
        }
        v.extend_from_slice(payload);
        v
    }

    fn pb_key(key: &[u8], kind: u64) -> Vec<u8> {
        let mut v = pb_field(1, WIRE_LEN, key);
        v.push(field_tag(2, WIRE_VARINT));
        put_varint(&mut v, kind);
        v
    }

    fn pb_parse(pb: &[u8]) -> Result<KeyVersion, FormatError> {
        KeyVersion::parse(STANDARD.encode(pb).as_bytes())
    }

    fn minimal(key: &[u8], kind: u64, hmac: &[u8], hash: u64) -> Vec<u8> {
        let mut v = pb_field(1, WIRE_LEN, &pb_key(key, kind));
        v.extend(pb_field(2, WIRE_LEN, &pb_key(hmac, hash)));
        v
    }

    #[test]
    fn protobuf_without_timestamp_or_creator() {
        let kv = pb_parse(&minimal(&[1; 32], 2, &[2; 32], 1)).unwrap();
        assert_eq!(kv.key.algorithm(), Algorithm::ChaCha20);
        assert_eq!(key_bytes(&kv), vec![1; 32]);
        assert_eq!(hmac_bytes(&kv), Some(vec![2; 32]));
        // protobuf-go's AsTime() of a missing Timestamp is the Unix epoch.
        assert_eq!(kv.created_at, Some(OffsetDateTime::UNIX_EPOCH));
        assert_eq!(kv.created_by, "");
    }

    #[test]
    fn protobuf_any_field_order_and_unknown_fields() {
        let mut v = pb_field(4, WIRE_LEN, b"me");
        v.extend(pb_field(9, WIRE_VARINT, &[0x96, 0x01]));
        v.extend(pb_field(2, WIRE_LEN, &pb_key(&[2; 32], 1)));
        v.extend(pb_field(10, WIRE_FIXED64, &[0; 8]));
        v.extend(pb_field(11, WIRE_FIXED32, &[0; 4]));
        v.extend(pb_field(12, WIRE_LEN, b"whatever"));
        // A group with a nested group inside, field 13.
        v.extend([field_tag(13, WIRE_START_GROUP), field_tag(1, WIRE_VARINT), 5]);
        v.extend([field_tag(14, WIRE_START_GROUP), field_tag(14, WIRE_END_GROUP)]);
        v.push(field_tag(13, WIRE_END_GROUP));
        // Known field numbers with an unexpected wire type are unknown fields to protobuf-go.
        v.extend(pb_field(1, WIRE_VARINT, &[1]));
        v.extend(pb_field(3, WIRE_FIXED32, &[0; 4]));
        v.extend(pb_field(1, WIRE_LEN, &pb_key(&[1; 32], 1)));
        // A large field number and a two-byte tag.
        v.extend([0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00]); // field 2^29-1, varint 0
        let kv = pb_parse(&v).unwrap();
        assert_eq!(key_bytes(&kv), vec![1; 32]);
        assert_eq!(hmac_bytes(&kv), Some(vec![2; 32]));
        assert_eq!(kv.created_by, "me");
    }

    #[test]
    fn protobuf_repeated_messages_merge_and_scalars_last_wins() {
        let mut v = pb_field(1, WIRE_LEN, &pb_key(&[1; 32], 2));
        v.extend(pb_field(1, WIRE_LEN, &pb_field(1, WIRE_LEN, &[7; 32]))); // only Key: Type stays 2
        v.extend(pb_field(2, WIRE_LEN, &pb_key(&[2; 32], 1)));
        v.extend(pb_field(3, WIRE_LEN, &[0x08, 0x01]));
        v.extend(pb_field(3, WIRE_LEN, &[0x10, 0x02])); // nanos merges into seconds=1
        v.extend(pb_field(4, WIRE_LEN, b"first"));
        v.extend(pb_field(4, WIRE_LEN, b"second"));
        let kv = pb_parse(&v).unwrap();
        assert_eq!(kv.key.algorithm(), Algorithm::ChaCha20);
        assert_eq!(key_bytes(&kv), vec![7; 32]);
        assert_eq!(kv.created_at, OffsetDateTime::from_unix_timestamp_nanos(1_000_000_002).ok());
        assert_eq!(kv.created_by, "second");
    }

    #[test]
    fn protobuf_uint32_keeps_the_low_bits_and_nanos_normalise() {
        // Type = 2^32 + 1 reads as 1 (AES256), as uint32(v) in Go.
        let kv = pb_parse(&minimal(&[1; 32], (1 << 32) + 1, &[2; 32], 1)).unwrap();
        assert_eq!(kv.key.algorithm(), Algorithm::Aes256);
        // seconds = 10, nanos = -1 (sign-extended int32) → 9.999999999 s after the epoch.
        let mut v = minimal(&[1; 32], 1, &[2; 32], 1);
        let mut ts = vec![0x08, 10, 0x10];
        put_varint(&mut ts, -1i64 as u64);
        v.extend(pb_field(3, WIRE_LEN, &ts));
        let kv = pb_parse(&v).unwrap();
        assert_eq!(kv.created_at, OffsetDateTime::from_unix_timestamp_nanos(9_999_999_999).ok());
    }

    #[test]
    fn protobuf_semantic_errors() {
        let cases = [
            ("AES key of 31 bytes", minimal(&[1; 31], 1, &[2; 32], 1)),
            ("key of 33 bytes", minimal(&[1; 33], 1, &[2; 32], 1)),
            ("type 0", minimal(&[1; 32], 0, &[2; 32], 1)),
            ("type 3", minimal(&[1; 32], 3, &[2; 32], 1)),
            ("hmac of 16 bytes", minimal(&[1; 32], 1, &[2; 16], 1)),
            ("hash 0", minimal(&[1; 32], 1, &[2; 32], 0)),
            ("hash 2", minimal(&[1; 32], 1, &[2; 32], 2)),
            ("no hmac", pb_field(1, WIRE_LEN, &pb_key(&[1; 32], 1))),
            ("no key", pb_field(2, WIRE_LEN, &pb_key(&[2; 32], 1))),
            ("empty", Vec::new()),
            ("created_by not UTF-8", {
                let mut v = minimal(&[1; 32], 1, &[2; 32], 1);
                v.extend(pb_field(4, WIRE_LEN, &[0xff]));
                v.extend(pb_field(4, WIRE_LEN, b"ok")); // a later valid one does not help
                v
            }),
        ];
        for (name, pb) in cases {
            assert!(pb_parse(&pb).is_err(), "{name}");
        }
    }

    #[test]
    fn protobuf_wire_errors() {
        let good = minimal(&[1; 32], 1, &[2; 32], 1);
        let with = |tail: &[u8]| {
            let mut v = good.clone();
            v.extend_from_slice(tail);
            v
        };
        let cases = [
            ("truncated message", good[..good.len() - 1].to_vec()),
            ("field number 0", with(&[0x00, 0x00])),
            ("field number 2^29", with(&[0x80, 0x80, 0x80, 0x80, 0x10, 0x00])),
            ("wire type 6", with(&[field_tag(9, 6)])),
            ("wire type 7", with(&[field_tag(9, 7)])),
            ("stray end group", with(&[field_tag(9, WIRE_END_GROUP)])),
            ("unterminated group", with(&[field_tag(9, WIRE_START_GROUP)])),
            (
                "mismatched group end",
                with(&[field_tag(9, WIRE_START_GROUP), field_tag(8, WIRE_END_GROUP)]),
            ),
            ("length past the end", with(&[field_tag(9, WIRE_LEN), 5, 0])),
            ("truncated fixed64", with(&[field_tag(9, WIRE_FIXED64), 0, 0])),
            (
                "11-byte varint",
                with(&[
                    field_tag(9, WIRE_VARINT),
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0x00,
                ]),
            ),
            (
                "10th varint byte > 1",
                with(&[
                    field_tag(9, WIRE_VARINT),
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0x02,
                ]),
            ),
            ("truncated varint", with(&[field_tag(9, WIRE_VARINT), 0x80])),
            ("groups nested too deep", {
                let mut v = good.clone();
                v.extend(std::iter::repeat_n(field_tag(9, WIRE_START_GROUP), MAX_GROUP_DEPTH + 2));
                v.extend(std::iter::repeat_n(field_tag(9, WIRE_END_GROUP), MAX_GROUP_DEPTH + 2));
                v
            }),
        ];
        assert!(pb_parse(&good).is_ok());
        for (name, pb) in cases {
            assert!(pb_parse(&pb).is_err(), "{name}");
        }
        // A 10-byte varint whose last byte is 1 is still valid.
        let max = with(&[
            field_tag(9, WIRE_VARINT),
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x01,
        ]);
        assert!(pb_parse(&max).is_ok());
    }

    #[test]
    fn protobuf_base64_follows_go() {
        let wrapped = format!("{}\r\n{}\n", &P5[..76], &P5[76..]);
        assert_eq!(parse_str(&wrapped).unwrap().created_by, ADMIN);
        // P5 is 208 characters without padding; dropping a character breaks it.
        assert!(parse_str(&P5[..P5.len() - 1]).is_err());
        assert!(parse_str(&format!(" {P5}")).is_err());
    }

    fn algorithm() -> impl Strategy<Value = Algorithm> {
        prop_oneof![Just(Algorithm::Aes256), Just(Algorithm::ChaCha20)]
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(
            alg in algorithm(),
            key in any::<[u8; 32]>(),
            hmac in any::<[u8; 32]>(),
            // Years 1..=9999, as RFC 3339 and the `time` crate allow.
            nanos in -62_135_596_800_000_000_000i128..253_402_300_799_999_999_999,
            created_by in "\\PC{0,80}",
        ) {
            let created_at = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            let kv = KeyVersion {
                key: SecretKey::new(alg, &key),
                hmac: Some(HmacKey::new(&hmac)),
                created_at: Some(created_at),
                created_by: created_by.clone(),
            };
            let encoded = kv.encode().unwrap();
            let back = KeyVersion::parse(encoded.as_bytes()).unwrap();
            prop_assert_eq!(back.key.algorithm(), alg);
            prop_assert_eq!(*back.key.bytes, key);
            prop_assert_eq!(hmac_bytes(&back), Some(hmac.to_vec()));
            let zero = nanos == i128::from(GO_ZERO_UNIX) * 1_000_000_000;
            prop_assert_eq!(back.created_at, if zero { None } else { Some(created_at) });
            prop_assert_eq!(&back.created_by, &created_by);
            let again = back.encode().unwrap();
            prop_assert_eq!(again.as_str(), encoded.as_str());
        }

        #[test]
        fn parse_never_panics(value in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = KeyVersion::parse(&value);
            let text = STANDARD.encode(&value);
            let _ = KeyVersion::parse(text.as_bytes());
        }
    }
}
