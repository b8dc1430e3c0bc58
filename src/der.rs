//! A minimal DER walker shared by the X.509 facts in `auth` and the key parsing of the Azure
//! certificate credential: definite lengths only, every length checked against the input.
//! A leaf module (no imports), so both can use it without reaching across layers.

/// One DER TLV: tag byte, contents, and the rest of the input after it.
pub fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = len.checked_mul(256)?.checked_add(usize::from(b))?;
        }
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}
