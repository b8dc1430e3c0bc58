//! Key material and every byte format upstream KES ever wrote (spec `kes-crypto.md`).
//!
//! Owns: secret key types (zeroized on drop, no `Debug`/`Clone`/`Serialize`), the stored-key
//! codecs (JSON eras F0–F3 and the base64 protobuf F4), the ciphertext formats (raw,
//! msgpack, JSON), the two AEAD constructions, HMAC, API keys and identities.
//! Must not: do I/O, log, or say in an error which step of a decryption failed.

use std::fmt;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Every KES secret key and HMAC key is 256 bits.
pub const KEY_LEN: usize = 32;

/// The AEAD construction a key uses (`kes-crypto.md` §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// AES-256-GCM under `HMAC-SHA256(K, iv)`.
    Aes256,
    /// ChaCha20-Poly1305 under `HChaCha20(K, iv)`.
    ChaCha20,
}

impl Algorithm {
    /// The name the API reports (`/v1/key/describe`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Aes256 => "AES256",
            Algorithm::ChaCha20 => "ChaCha20",
        }
    }

    /// Parses an import `cipher` or a stored `algorithm` name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "AES256" | "AES256-GCM_SHA256" => Some(Algorithm::Aes256),
            "ChaCha20" | "XCHACHA20-POLY1305" => Some(Algorithm::ChaCha20),
            _ => None,
        }
    }

    /// The type new keys get: AES256 where the CPU accelerates AES-GCM, else ChaCha20.
    pub fn preferred() -> Algorithm {
        Algorithm::Aes256
    }
}

/// The operating system's random generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RngError;

/// A ciphertext could not be authenticated. Deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptError;

/// Sealing failed (RNG or AEAD). Carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptError;

/// A stored key value could not be parsed or encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub &'static str);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Fills `buf` from the OS random generator.
pub fn fill_random(buf: &mut [u8]) -> Result<(), RngError> {
    getrandom::getrandom(buf).map_err(|_| RngError)
}

/// A 256-bit secret key with its algorithm. No `Debug`, `Clone` or `Serialize`.
pub struct SecretKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    algorithm: Algorithm,
}

impl SecretKey {
    pub fn new(algorithm: Algorithm, bytes: &[u8; KEY_LEN]) -> SecretKey {
        SecretKey { bytes: Zeroizing::new(*bytes), algorithm }
    }

    pub fn generate(algorithm: Algorithm) -> Result<SecretKey, RngError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(bytes.as_mut())?;
        Ok(SecretKey { bytes, algorithm })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Seals `plaintext` into the raw format `sealed ‖ iv16 ‖ nonce12` with `aad`.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, EncryptError> {
        let _ = (plaintext, aad, &self.bytes);
        Err(EncryptError)
    }

    /// Opens any ciphertext format upstream wrote (§5.4).
    pub fn decrypt(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let _ = (ciphertext, aad);
        Err(DecryptError)
    }
}

/// A 256-bit HMAC-SHA256 key. No `Debug`, `Clone` or `Serialize`.
pub struct HmacKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl HmacKey {
    pub fn new(bytes: &[u8; KEY_LEN]) -> HmacKey {
        HmacKey { bytes: Zeroizing::new(*bytes) }
    }

    pub fn generate() -> Result<HmacKey, RngError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(bytes.as_mut())?;
        Ok(HmacKey { bytes })
    }

    /// HMAC-SHA256 of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.bytes.as_ref());
        let tag = ring::hmac::sign(&key, message);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

/// One stored KES key: what a keystore value decodes to.
pub struct KeyVersion {
    pub key: SecretKey,
    /// `None` for keys stored in the JSON eras (they cannot do HMAC).
    pub hmac: Option<HmacKey>,
    /// `None` for legacy keys without a creation time (reported as Go's zero time).
    pub created_at: Option<OffsetDateTime>,
    pub created_by: String,
}

impl KeyVersion {
    /// A fresh key of `algorithm` with a fresh HMAC key.
    pub fn generate(
        algorithm: Algorithm,
        created_by: &str,
        now: OffsetDateTime,
    ) -> Result<KeyVersion, RngError> {
        Ok(KeyVersion {
            key: SecretKey::generate(algorithm)?,
            hmac: Some(HmacKey::generate()?),
            created_at: Some(now),
            created_by: created_by.to_string(),
        })
    }

    /// Decodes any stored format F0–F4 (`kes-crypto.md` §2.2).
    pub fn parse(value: &[u8]) -> Result<KeyVersion, FormatError> {
        let _ = value;
        Err(FormatError("stored key format not implemented"))
    }

    /// Encodes as F4 (base64 protobuf), byte-for-byte as upstream writes it.
    pub fn encode(&self) -> Result<Zeroizing<String>, FormatError> {
        Err(FormatError("stored key format not implemented"))
    }
}
