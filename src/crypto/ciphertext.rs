//! Reading every ciphertext format upstream wrote (`kes-crypto.md` §5): raw (current),
//! MessagePack (2022 – Jan 2024) and JSON (≤ v0.19.1). Legacy formats are unpacked into the raw
//! layout `sealed ‖ iv ‖ nonce`; anything that does not parse as a valid legacy ciphertext is
//! treated as raw (§5.4), so a raw ciphertext that happens to start with `0x95` or `{` still
//! opens. Pure functions over bytes; nothing here is secret.

use super::Algorithm;
use super::aead::{IV_LEN, NONCE_LEN};
use super::golang;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// msgpack `fixarray` of 5 elements: the first byte of every msgpack ciphertext.
const MSGPACK_ARRAY5: u8 = 0x95;

/// A ciphertext ready for the AEAD.
pub(crate) struct Unpacked<'a> {
    /// `sealed ‖ iv ‖ nonce`.
    pub raw: Cow<'a, [u8]>,
    /// The algorithm a legacy ciphertext names; `None` for raw ciphertexts.
    pub declared: Option<Algorithm>,
}

/// Classifies and unpacks a ciphertext per §5.4. Never fails: the raw interpretation is the
/// fallback, and the AEAD decides.
pub(crate) fn unpack(ciphertext: &[u8]) -> Unpacked<'_> {
    let legacy = match ciphertext.first() {
        Some(&MSGPACK_ARRAY5) => from_msgpack(ciphertext),
        Some(b'{') => from_json(ciphertext),
        _ => None,
    };
    legacy.unwrap_or(Unpacked { raw: Cow::Borrowed(ciphertext), declared: None })
}

fn join(sealed: &[u8], iv: &[u8], nonce: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(sealed.len() + iv.len() + nonce.len());
    raw.extend_from_slice(sealed);
    raw.extend_from_slice(iv);
    raw.extend_from_slice(nonce);
    raw
}

/// `[algorithm str, key id str, iv bin16, nonce bin12, sealed bin]`, nothing after it.
fn from_msgpack(ciphertext: &[u8]) -> Option<Unpacked<'static>> {
    let (&lead, rest) = ciphertext.split_first()?;
    if lead != MSGPACK_ARRAY5 {
        return None;
    }
    let mut r = MsgReader { rest };
    let algorithm = r.str()?;
    let _key_id = r.str()?; // ignored: the AEAD authenticates the key (§5.4)
    let iv = r.bin()?;
    let nonce = r.bin()?;
    let sealed = r.bin()?;
    if !r.rest.is_empty() || iv.len() != IV_LEN || nonce.len() != NONCE_LEN {
        return None;
    }
    let declared = Algorithm::from_name(std::str::from_utf8(algorithm).ok()?)?;
    Some(Unpacked { raw: Cow::Owned(join(sealed, iv, nonce)), declared: Some(declared) })
}

/// The subset of MessagePack the legacy format uses: `str` and `bin` of every width.
struct MsgReader<'a> {
    rest: &'a [u8],
}

impl<'a> MsgReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// A big-endian length of `width` bytes.
    fn length(&mut self, width: usize) -> Option<usize> {
        let bytes = self.take(width)?;
        let n = bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
        usize::try_from(n).ok()
    }

    fn str(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            lead @ 0xa0..=0xbf => usize::from(lead & 0x1f), // fixstr
            0xd9 => self.length(1)?,
            0xda => self.length(2)?,
            0xdb => self.length(4)?,
            _ => return None,
        };
        self.take(n)
    }

    fn bin(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            0xc4 => self.length(1)?,
            0xc5 => self.length(2)?,
            0xc6 => self.length(4)?,
            _ => return None,
        };
        self.take(n)
    }
}

/// `{"aead":…,"id":…,"iv":…,"nonce":…,"bytes":…}` decoded with Go's rules.
fn from_json(ciphertext: &[u8]) -> Option<Unpacked<'static>> {
    let ct: JsonCiphertext = golang::with_go_text(ciphertext, |s| serde_json::from_str(s).ok())?;
    let declared = match ct.aead.as_str() {
        "AES-256-GCM-HMAC-SHA-256" => Algorithm::Aes256,
        "ChaCha20Poly1305" => Algorithm::ChaCha20,
        // Includes "AES-256-GCM" (≤ v0.6.0, weak key derivation, D8): not supported.
        _ => return None,
    };
    let iv = ct.iv.filter(|iv| iv.len() == IV_LEN)?;
    let nonce = ct.nonce.filter(|n| n.len() == NONCE_LEN)?;
    let sealed = ct.bytes.as_deref().map(Vec::as_slice).unwrap_or_default();
    Some(Unpacked { raw: Cow::Owned(join(sealed, &iv, &nonce)), declared: Some(declared) })
}

#[derive(Default)]
struct JsonCiphertext {
    aead: String,
    iv: Option<zeroize::Zeroizing<Vec<u8>>>,
    nonce: Option<zeroize::Zeroizing<Vec<u8>>>,
    bytes: Option<zeroize::Zeroizing<Vec<u8>>>,
}

impl<'de> de::Deserialize<'de> for JsonCiphertext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(JsonCiphertextVisitor)
    }
}

struct JsonCiphertextVisitor;

impl<'de> Visitor<'de> for JsonCiphertextVisitor {
    type Value = JsonCiphertext;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON ciphertext object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonCiphertext, A::Error> {
        const FIELDS: &[&str] = &["aead", "id", "iv", "nonce", "bytes"];
        let mut ct = JsonCiphertext::default();
        while let Some(field) = map.next_key_seed(golang::Field(FIELDS))? {
            match field {
                Some(0) => {
                    if let Some(s) = map.next_value::<golang::Text>()?.0 {
                        ct.aead = s;
                    }
                }
                Some(1) => {
                    map.next_value::<golang::Text>()?; // must still be a string, as in Go
                }
                Some(2) => ct.iv = map.next_value::<golang::Bytes>()?.0,
                Some(3) => ct.nonce = map.next_value::<golang::Bytes>()?.0,
                Some(4) => ct.bytes = map.next_value::<golang::Bytes>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(ct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgpack(alg: &str, iv_len: usize, nonce_len: usize, sealed: &[u8]) -> Vec<u8> {
        let mut v = vec![MSGPACK_ARRAY5, 0xa0 | alg.len() as u8];
        v.extend_from_slice(alg.as_bytes());
        v.extend_from_slice(&[0xd9, 32]);
        v.extend_from_slice(&[b'0'; 32]);
        v.extend_from_slice(&[0xc4, iv_len as u8]);
        v.extend(std::iter::repeat_n(1u8, iv_len));
        v.extend_from_slice(&[0xc4, nonce_len as u8]);
        v.extend(std::iter::repeat_n(2u8, nonce_len));
        v.extend_from_slice(&[0xc4, sealed.len() as u8]);
        v.extend_from_slice(sealed);
        v
    }

    #[test]
    fn msgpack_unpacks_into_raw_order() {
        let ct = msgpack("XCHACHA20-POLY1305", 16, 12, &[9; 20]);
        let u = unpack(&ct);
        assert_eq!(u.declared, Some(Algorithm::ChaCha20));
        let mut want = vec![9u8; 20];
        want.extend_from_slice(&[1; 16]);
        want.extend_from_slice(&[2; 12]);
        assert_eq!(u.raw.as_ref(), want.as_slice());
    }

    #[test]
    fn msgpack_accepts_every_algorithm_name_and_wider_headers() {
        for (name, alg) in [
            ("AES256", Algorithm::Aes256),
            ("AES256-GCM_SHA256", Algorithm::Aes256),
            ("ChaCha20", Algorithm::ChaCha20),
            ("XCHACHA20-POLY1305", Algorithm::ChaCha20),
        ] {
            assert_eq!(unpack(&msgpack(name, 16, 12, &[0; 17])).declared, Some(alg), "{name}");
        }
        // str8 algorithm, bin16 sealed.
        let mut v = vec![MSGPACK_ARRAY5, 0xd9, 6];
        v.extend_from_slice(b"AES256");
        v.extend_from_slice(&[0xa0, 0xc4, 16]);
        v.extend_from_slice(&[1; 16]);
        v.extend_from_slice(&[0xc4, 12]);
        v.extend_from_slice(&[2; 12]);
        v.extend_from_slice(&[0xc5, 0, 3, 7, 7, 7]);
        let u = unpack(&v);
        assert_eq!(u.declared, Some(Algorithm::Aes256));
        assert_eq!(u.raw.len(), 3 + 28);
    }

    #[test]
    fn invalid_msgpack_falls_back_to_raw() {
        let cases = [
            msgpack("AES-256-GCM", 16, 12, &[0; 20]), // unknown algorithm name
            msgpack("AES256", 15, 12, &[0; 20]),      // iv too short
            msgpack("AES256", 16, 8, &[0; 20]),       // nonce too short
            {
                let mut v = msgpack("AES256", 16, 12, &[0; 20]);
                v.push(0); // trailing byte
                v
            },
            {
                let mut v = msgpack("AES256", 16, 12, &[0; 20]);
                v.truncate(v.len() - 1); // truncated sealed
                v
            },
        ];
        for ct in &cases {
            let u = unpack(ct);
            assert_eq!(u.declared, None);
            assert_eq!(u.raw.as_ref(), ct.as_slice());
        }
    }

    #[test]
    fn json_is_case_insensitive_and_ignores_unknown_keys() {
        let ct = br#"{"AEAD":"ChaCha20Poly1305","Id":"x","extra":[1,{"a":null}],"IV":"AAAAAAAAAAAAAAAAAAAAAA==","Nonce":"AQEBAQEBAQEBAQEB","BYTES":"Ag=="}"#;
        let u = unpack(ct);
        assert_eq!(u.declared, Some(Algorithm::ChaCha20));
        let mut want = vec![2u8];
        want.extend_from_slice(&[0; 16]);
        want.extend_from_slice(&[1; 12]);
        assert_eq!(u.raw.as_ref(), want.as_slice());
    }

    #[test]
    fn json_with_go_base64_line_breaks() {
        let ct = br#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"AAAAAAAA\r\nAAAAAAAAAAAAAA==","nonce":"AQEBAQEBAQEBAQEB","bytes":"Ag==\n"}"#;
        assert_eq!(unpack(ct).declared, Some(Algorithm::Aes256));
    }

    #[test]
    fn invalid_json_falls_back_to_raw() {
        let cases: &[&[u8]] = &[
            br#"{"aead":"AES-256-GCM","iv":"AAAAAAAAAAAAAAAAAAAAAA==","nonce":"AQEBAQEBAQEBAQEB","bytes":"Ag=="}"#,
            br#"{"aead":"ChaCha20Poly1305","iv":"AAAAAAAAAAAAAAAAAAAA","nonce":"AQEBAQEBAQEBAQEB","bytes":"Ag=="}"#,
            br#"{"aead":"ChaCha20Poly1305","iv":"AAAAAAAAAAAAAAAAAAAAAA==","nonce":"AQEBAQEB","bytes":"Ag=="}"#,
            br#"{"aead":"ChaCha20Poly1305","iv":"AAAAAAAAAAAAAAAAAAAAAA==","nonce":"AQEBAQEBAQEBAQEB","bytes":7}"#,
            br#"{"aead":"ChaCha20Poly1305","id":7,"iv":"AAAAAAAAAAAAAAAAAAAAAA==","nonce":"AQEBAQEBAQEBAQEB","bytes":"Ag=="}"#,
            br#"{"aead":"ChaCha20Poly1305","iv":"AAAAAAAAAAAAAAAAAAAAAA==","nonce":"AQEBAQEBAQEBAQEB","bytes":"Ag=="} x"#,
            br#"{"aead":"ChaCha20Poly1305" "iv":"AAAAAAAAAAAAAAAAAAAAAA=="}"#,
        ];
        for ct in cases {
            let u = unpack(ct);
            assert_eq!(u.declared, None, "{}", String::from_utf8_lossy(ct));
            assert_eq!(u.raw.as_ref(), *ct);
        }
    }

    #[test]
    fn json_null_resets_bytes_but_not_strings() {
        // A later `"aead":null` keeps the earlier name, as Go leaves strings alone on null.
        let ct = br#"{"aead":"ChaCha20Poly1305","aead":null,"iv":"AAAAAAAAAAAAAAAAAAAAAA==","nonce":"AQEBAQEBAQEBAQEB","bytes":"Ag==","bytes":null}"#;
        let u = unpack(ct);
        assert_eq!(u.declared, Some(Algorithm::ChaCha20));
        assert_eq!(u.raw.len(), 28);
    }

    #[test]
    fn raw_is_borrowed_untouched() {
        let ct = [0x95u8, 1, 2, 3];
        assert!(matches!(unpack(&ct).raw, Cow::Borrowed(_)));
        assert!(matches!(unpack(b"").raw, Cow::Borrowed(b"")));
    }
}
