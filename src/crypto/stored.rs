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

    let mut out = Zeroizing::new(String::with_capacity(pb.len().div_ceil(3) * 4));
    STANDARD.encode_string(pb.as_slice(), &mut out);
    Ok(out)
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
