//! The two AEAD constructions (`kes-crypto.md` §4) and the raw ciphertext layout (§5.1):
//! `sealed ‖ iv(16) ‖ nonce(12)`, where `sealed = AEAD(DK, nonce, plaintext, aad)` and the
//! per-message key `DK` is `HMAC-SHA256(K, iv)` for AES-256-GCM or `HChaCha20(K, iv)` for
//! ChaCha20-Poly1305.
//!
//! ring's key objects (`hmac::Key`, `LessSafeKey`) are not wiped on drop; they live only for
//! one call. Every byte buffer that holds a key or plaintext here is `Zeroizing`.

use super::hchacha::hchacha20;
use super::{Algorithm, DecryptError, EncryptError, KEY_LEN, fill_random};
use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

pub(crate) const IV_LEN: usize = 16;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;
/// Bytes after `sealed` in a raw ciphertext.
pub(crate) const TRAILER_LEN: usize = IV_LEN + NONCE_LEN;

/// The per-message key for `iv`.
fn derive_key(algorithm: Algorithm, key: &[u8; KEY_LEN], iv: &[u8; IV_LEN]) -> Zeroizing<[u8; 32]> {
    match algorithm {
        Algorithm::Aes256 => {
            let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
            let tag = ring::hmac::sign(&mac, iv);
            let mut dk = Zeroizing::new([0u8; 32]);
            dk.copy_from_slice(tag.as_ref());
            dk
        }
        Algorithm::ChaCha20 => hchacha20(key, iv),
    }
}

/// `None` only if ring refused a 32-byte key, which both algorithms take.
fn aead_key(algorithm: Algorithm, key: &[u8; KEY_LEN], iv: &[u8; IV_LEN]) -> Option<LessSafeKey> {
    let dk = derive_key(algorithm, key, iv);
    let alg = match algorithm {
        Algorithm::Aes256 => &AES_256_GCM,
        Algorithm::ChaCha20 => &CHACHA20_POLY1305,
    };
    UnboundKey::new(alg, dk.as_slice()).ok().map(LessSafeKey::new)
}

/// Seals `plaintext` into a fresh raw ciphertext (one 28-byte random read: iv, then nonce).
pub(crate) fn seal(
    algorithm: Algorithm,
    key: &[u8; KEY_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, EncryptError> {
    let mut random = [0u8; TRAILER_LEN];
    fill_random(&mut random).map_err(|_| EncryptError)?;
    seal_with(algorithm, key, plaintext, aad, &random)
}

/// Seals `plaintext` with `random` (fresh from the OS generator) as `iv ‖ nonce`: the caller
/// may have read them in one call with other fresh bytes (`SecretKey::seal_fresh`).
pub(crate) fn seal_with(
    algorithm: Algorithm,
    key: &[u8; KEY_LEN],
    plaintext: &[u8],
    aad: &[u8],
    random: &[u8; TRAILER_LEN],
) -> Result<Vec<u8>, EncryptError> {
    let (iv, nonce) = random.split_at(IV_LEN);
    let iv: &[u8; IV_LEN] = iv.try_into().map_err(|_| EncryptError)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| EncryptError)?;

    let len = plaintext.len().checked_add(TAG_LEN + TRAILER_LEN).ok_or(EncryptError)?;
    // The buffer holds plaintext until sealing succeeds, so it is wiped if sealing fails.
    let mut buf = Zeroizing::new(Vec::with_capacity(len));
    buf.extend_from_slice(plaintext);
    aead_key(algorithm, key, iv)
        .ok_or(EncryptError)?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut *buf)
        .map_err(|_| EncryptError)?;
    buf.extend_from_slice(random);
    Ok(std::mem::take(&mut *buf))
}

/// Opens a raw ciphertext. Every failure is the same [`DecryptError`].
pub(crate) fn open(
    algorithm: Algorithm,
    key: &[u8; KEY_LEN],
    raw: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    if raw.len() <= TRAILER_LEN {
        return Err(DecryptError);
    }
    let (sealed, trailer) = raw.split_at(raw.len() - TRAILER_LEN);
    let (iv, nonce) = trailer.split_at(IV_LEN);
    let iv: &[u8; IV_LEN] = iv.try_into().map_err(|_| DecryptError)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| DecryptError)?;

    let mut buf = Zeroizing::new(sealed.to_vec());
    let len = aead_key(algorithm, key, iv)
        .ok_or(DecryptError)?
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf.as_mut_slice())
        .map_err(|_| DecryptError)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    /// `kes-crypto.md` §8.1, "intermediate values for D5": the split and the derived key.
    #[test]
    fn d5_split_and_derived_key() {
        let raw = STANDARD
            .decode(
                "zwdDgHeRlIFRnJ7+DIhs/ka7GFK2CFSfDELqg1VCyTQzZ58o7MAdupMLk3ZjlMo2ZUDwldL2o41nAWDc",
            )
            .unwrap();
        assert_eq!(raw.len(), 60);
        let iv: [u8; 16] = raw[32..48].try_into().unwrap();
        let dk = derive_key(Algorithm::Aes256, &[0; 32], &iv);
        let expected =
            ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[0; 32]), &iv);
        assert_eq!(dk.as_slice(), expected.as_ref());
        assert_eq!(open(Algorithm::Aes256, &[0; 32], &raw, b"").unwrap().as_slice(), &[0u8; 16]);
    }

    #[test]
    fn raw_layout_is_sealed_iv_nonce() {
        let key = [3u8; 32];
        for alg in [Algorithm::Aes256, Algorithm::ChaCha20] {
            let ct = seal(alg, &key, b"hello", b"ctx").unwrap();
            assert_eq!(ct.len(), 5 + 44);
            // Re-seal with the iv and nonce found in the trailer: the same bytes come out.
            let iv: [u8; 16] = ct[21..37].try_into().unwrap();
            let nonce: [u8; 12] = ct[37..].try_into().unwrap();
            let mut again = b"hello".to_vec();
            aead_key(alg, &key, &iv)
                .unwrap()
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(b"ctx"),
                    &mut again,
                )
                .unwrap();
            assert_eq!(again.as_slice(), &ct[..21]);
        }
    }

    #[test]
    fn too_short_is_refused_before_any_crypto() {
        for len in 0..=TRAILER_LEN {
            assert_eq!(
                open(Algorithm::Aes256, &[0; 32], &vec![0; len], b"").unwrap_err(),
                DecryptError
            );
        }
        // Longer than the trailer but shorter than a tag: still only DecryptError.
        assert!(open(Algorithm::ChaCha20, &[0; 32], &[0; TRAILER_LEN + 5], b"").is_err());
    }
}
