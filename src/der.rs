//! A minimal DER walker shared by the X.509 facts in `auth`, the key parsing of the Azure
//! certificate credential and the key check of `pem`: definite lengths only, every length
//! checked against the input, one length parser. A leaf module (no imports), so all of them
//! can use it without reaching across layers.

/// Most length octets accepted after the `0x8N` marker: 4 (lengths below 4 GiB; nothing
/// this program reads comes near that, and a larger count is refused, not truncated).
const MAX_LENGTH_OCTETS: usize = 4;

/// One TLV: tag byte, contents, and the rest of the input after it. Like Go's and
/// webpki's readers of certificates, a length in a longer form than needed is accepted.
pub fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    tlv_with(input, false)
}

/// [`tlv`] for strict DER: the length must be in its shortest form (no leading zero
/// octet, the long form only from 128 on), as a key's DER must be.
pub fn tlv_strict(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    tlv_with(input, true)
}

fn tlv_with(input: &[u8], minimal: bool) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (len, rest) = length(rest, minimal)?;
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The one parser of DER length octets: the length and the input after them.
fn length(input: &[u8], minimal: bool) -> Option<(usize, &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first < 0x80 {
        return Some((usize::from(first), rest));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > MAX_LENGTH_OCTETS || rest.len() < n || (minimal && rest[0] == 0) {
        return None;
    }
    let mut len = 0usize;
    for &b in &rest[..n] {
        len = len.checked_mul(256)?.checked_add(usize::from(b))?;
    }
    if minimal && len < 0x80 {
        return None;
    }
    Some((len, &rest[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_short_long_and_refused() {
        assert_eq!(tlv(&[0x30, 0x01, 0xaa, 0xbb]), Some((0x30, &[0xaa][..], &[0xbb][..])));
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        assert_eq!(tlv_strict(&long).map(|(_, c, r)| (c.len(), r.len())), Some((0x80, 0)));
        // Non-minimal forms: accepted by `tlv`, refused by `tlv_strict`.
        for bad in [&[0x30, 0x81, 0x01, 0xaa][..], &[0x30, 0x82, 0x00, 0x01, 0xaa][..]] {
            assert_eq!(tlv(bad).map(|(_, c, _)| c), Some(&[0xaa][..]));
            assert_eq!(tlv_strict(bad), None);
        }
        // Indefinite, too many octets, cut short, longer than the input.
        assert_eq!(tlv(&[0x30, 0x80, 0x00, 0x00]), None);
        assert_eq!(tlv(&[0x30, 0x85, 1, 0, 0, 0, 0]), None);
        assert_eq!(tlv(&[0x30, 0x82, 0x01]), None);
        assert_eq!(tlv(&[0x30, 0x02, 0xaa]), None);
        assert_eq!(tlv(&[0x30]), None);
        assert_eq!(tlv(&[]), None);
        assert_eq!(tlv(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
