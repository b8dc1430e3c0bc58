//! Hex text, one encoder and one decoder for the whole program: identities (the SHA-256 of
//! a public key), digests in the audit file, version ids and file names, the IV of a legacy
//! encrypted PEM key, certificate thumbprints. A leaf module (no imports).

const LOWER: &[u8; 16] = b"0123456789abcdef";
const UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Lower-case hex, as Go's `hex.EncodeToString`.
pub fn encode(bytes: &[u8]) -> String {
    encode_with(bytes, LOWER)
}

/// Upper-case hex (the SHA-1 thumbprint Entra ID shows for a certificate).
pub fn encode_upper(bytes: &[u8]) -> String {
    encode_with(bytes, UPPER)
}

fn encode_with(bytes: &[u8], digits: &[u8; 16]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(digits[usize::from(b >> 4)]));
        s.push(char::from(digits[usize::from(b & 0xf)]));
    }
    s
}

/// The value of one hex digit of either case.
pub fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The bytes of `text`, digits of either case, two per byte; `None` for an odd length or
/// anything that is no hex digit (no prefix, no spaces).
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refusals() {
        assert_eq!(encode(&[0x00, 0xab, 0xff, 0x10]), "00abff10");
        assert_eq!(encode_upper(&[0x00, 0xab, 0xff, 0x10]), "00ABFF10");
        assert_eq!(encode(&[]), "");
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
        assert_eq!(decode(&encode_upper(&all)).unwrap(), all);
        assert_eq!(decode("aBcD").unwrap(), [0xab, 0xcd]);
        assert_eq!(decode("").unwrap(), [] as [u8; 0]);
        for bad in ["a", "abc", "zz", "0x00", " 00", "00 ", "+1", "é0"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
