//! Writing a legacy password-encrypted PEM key (`kes identity new --encrypt`): the format,
//! its reader and its writer are the leaf [`crate::pem`]; what belongs here is the one thing
//! `pem` must not do itself, drawing the fresh random IV.

use super::RngError;
use zeroize::Zeroizing;

/// Encrypts `der` as a legacy PEM block labelled `label` with AES-256-CBC, a fresh random IV
/// and the key derived from `password`, byte for byte as Go's `x509.EncryptPEMBlock` with
/// `PEMCipherAES256` and `pem.Encode` write it ([`crate::pem::encrypt_with_iv`]).
pub fn encrypt(label: &str, der: &[u8], password: &[u8]) -> Result<Zeroizing<String>, RngError> {
    let mut iv = [0u8; 16];
    super::fill_random(&mut iv)?;
    Ok(crate::pem::encrypt_with_iv(label, der, password, &iv))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh IV each time, and what is written reads back with the password.
    #[test]
    fn each_key_gets_a_fresh_iv() {
        let der = [0x30, 0x03, 0x02, 0x01, 0x01];
        let a = encrypt("EC PRIVATE KEY", &der, b"pw").unwrap();
        let b = encrypt("EC PRIVATE KEY", &der, b"pw").unwrap();
        assert_ne!(*a, *b);
        let iv = |pem: &str| pem.lines().nth(2).unwrap().to_string();
        assert_ne!(iv(&a), iv(&b));
        for pem in [a, b] {
            let (label, back) = crate::pem::decrypt(pem.as_bytes(), b"pw").unwrap();
            assert_eq!((label.as_str(), back.as_slice()), ("EC PRIVATE KEY", &der[..]));
        }
    }
}
