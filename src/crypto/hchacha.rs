//! HChaCha20 (draft-irtf-cfrg-xchacha §2.2): the ChaCha20 block function without the final
//! feed-forward, keeping words 0–3 and 12–15. KES derives the per-message ChaCha20-Poly1305 key
//! with it (`kes-crypto.md` §4). ring has no HChaCha20, so it is written out here; it is a
//! fixed sequence of 32-bit additions, rotations and XORs, so it runs in constant time.

use zeroize::{Zeroize, Zeroizing};

/// "expand 32-byte k" as four little-endian words.
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// HChaCha20 of a 32-byte key and a 16-byte input; the 32-byte output is itself key material.
pub(crate) fn hchacha20(key: &[u8; 32], input: &[u8; 16]) -> Zeroizing<[u8; 32]> {
    let mut state = [0u32; 16];
    state[..4].copy_from_slice(&SIGMA);
    for (word, chunk) in state[4..12].iter_mut().zip(key.chunks_exact(4)) {
        *word = le_word(chunk);
    }
    for (word, chunk) in state[12..].iter_mut().zip(input.chunks_exact(4)) {
        *word = le_word(chunk);
    }

    for _ in 0..10 {
        // Column round.
        quarter_round(&mut state, 0, 4, 8, 12);
        quarter_round(&mut state, 1, 5, 9, 13);
        quarter_round(&mut state, 2, 6, 10, 14);
        quarter_round(&mut state, 3, 7, 11, 15);
        // Diagonal round.
        quarter_round(&mut state, 0, 5, 10, 15);
        quarter_round(&mut state, 1, 6, 11, 12);
        quarter_round(&mut state, 2, 7, 8, 13);
        quarter_round(&mut state, 3, 4, 9, 14);
    }

    let mut out = Zeroizing::new([0u8; 32]);
    let words = state[..4].iter().chain(&state[12..]);
    for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    state.zeroize();
    out
}

fn le_word(chunk: &[u8]) -> u32 {
    u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])
}

fn quarter_round(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        crate::hex::decode(s).unwrap()
    }

    /// draft-irtf-cfrg-xchacha-03 §2.2.1, quoted in `kes-crypto.md` §8.1 (HChaCha20 self-check).
    #[test]
    fn xchacha_draft_vector() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let input: [u8; 16] = unhex("000000090000004a0000000031415927").try_into().unwrap();
        let out = hchacha20(&key, &input);
        assert_eq!(
            out.as_slice(),
            unhex("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc").as_slice()
        );
    }

    /// RFC 8439 §2.1.1: the quarter-round test vector.
    #[test]
    fn quarter_round_rfc8439() {
        let mut s = [0u32; 16];
        s[0] = 0x1111_1111;
        s[1] = 0x0102_0304;
        s[2] = 0x9b8d_6f43;
        s[3] = 0x0123_4567;
        quarter_round(&mut s, 0, 1, 2, 3);
        assert_eq!(&s[..4], &[0xea2a_92f4, 0xcb1c_f8ce, 0x4581_472e, 0x5881_c4bb]);
    }

    #[test]
    fn every_input_bit_matters() {
        let key = [7u8; 32];
        let input = [9u8; 16];
        let base = hchacha20(&key, &input);
        for i in 0..16 {
            let mut other = input;
            other[i] ^= 0x80;
            assert_ne!(*hchacha20(&key, &other), *base, "input byte {i}");
        }
        for i in 0..32 {
            let mut other = key;
            other[i] ^= 0x01;
            assert_ne!(*hchacha20(&other, &input), *base, "key byte {i}");
        }
    }
}
