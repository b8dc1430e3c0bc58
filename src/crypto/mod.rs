//! Key material and every byte format upstream KES ever wrote (spec `kes-crypto.md`).
//!
//! Owns: secret key types (zeroized on drop, no `Debug`/`Clone`/`Serialize`), the stored-key
//! codecs (JSON eras F0–F3 and the base64 protobuf F4), the ciphertext formats (raw,
//! msgpack, JSON), the two AEAD constructions, and HMAC. API keys and identities live in
//! `auth` (`auth::apikey`).
//! Must not: do I/O, log, or say in an error which step of a decryption failed.
//!
//! Layout: `aead` seals and opens the raw format with the two per-message-key
//! constructions (`hchacha` supplies HChaCha20, which ring lacks); `ciphertext` unpacks the
//! legacy msgpack and JSON ciphertexts; `stored` reads F0–F4 and writes F4; `golang` holds the
//! Go decoding rules (base64, JSON field matching) that decide what upstream could read;
//! `legacy_pem` writes password-encrypted PEM key files with a fresh random IV; the format
//! itself (RFC 1423, as OpenSSL, Go and upstream KES read and write it, the one place that
//! uses the `aes` crate and MD5 instead of ring) is the leaf `crate::pem`.

mod aead;
mod ciphertext;
mod golang;
mod hchacha;
pub mod legacy_pem;
mod stored;

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

    /// The type new keys get: AES256 where the CPU accelerates AES-GCM (x86-64 AES-NI with
    /// PCLMULQDQ, ARMv8 AES with PMULL), else ChaCha20 (`kes-crypto.md` §2.4). Either type is
    /// readable by every upstream release that can read F4.
    pub fn preferred() -> Algorithm {
        if aes_gcm_accelerated() { Algorithm::Aes256 } else { Algorithm::ChaCha20 }
    }
}

#[cfg(target_arch = "x86_64")]
fn aes_gcm_accelerated() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn aes_gcm_accelerated() -> bool {
    // Rust's "aes" feature on aarch64 is FEAT_AES together with FEAT_PMULL.
    std::arch::is_aarch64_feature_detected!("aes")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn aes_gcm_accelerated() -> bool {
    false
}

/// Most bytes [`SecretKey::seal_fresh`] makes and seals at once (a data key is 32).
pub const MAX_FRESH_SECRET: usize = 64;

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

    /// Seals `plaintext` into the raw format `sealed ‖ iv16 ‖ nonce12` with `aad` (the
    /// request context; absent and empty are the same). Output is `plaintext.len() + 44` bytes.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, EncryptError> {
        aead::seal(self.algorithm, &self.bytes, plaintext, aad)
    }

    /// Fills `secret` with fresh random bytes and seals them like [`SecretKey::encrypt`]:
    /// one read of the OS generator gives the secret, the iv and the nonce (a data key for
    /// `generate` costs one `getrandom` call, not two). The bytes of one read are as
    /// independent as those of two, and the ciphertext shows only the iv and nonce.
    /// `secret` is at most [`MAX_FRESH_SECRET`] bytes.
    pub fn seal_fresh(&self, secret: &mut [u8], aad: &[u8]) -> Result<Vec<u8>, EncryptError> {
        let n = secret.len();
        if n > MAX_FRESH_SECRET {
            return Err(EncryptError);
        }
        let mut random = Zeroizing::new([0u8; MAX_FRESH_SECRET + aead::TRAILER_LEN]);
        let random = &mut random[..n + aead::TRAILER_LEN];
        fill_random(random).map_err(|_| EncryptError)?;
        let (fresh, trailer) = random.split_at(n);
        let trailer: &[u8; aead::TRAILER_LEN] = trailer.try_into().map_err(|_| EncryptError)?;
        let sealed = aead::seal_with(self.algorithm, &self.bytes, fresh, aad, trailer)?;
        secret.copy_from_slice(fresh);
        Ok(sealed)
    }

    /// Opens any ciphertext format upstream wrote (§5.4): raw, msgpack or JSON, with the
    /// key's own algorithm first and then, for a legacy ciphertext that names the other
    /// algorithm, with that one (keys stored without a type may have ChaCha20 ciphertexts).
    /// Every failure is the same [`DecryptError`].
    pub fn decrypt(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let unpacked = ciphertext::unpack(ciphertext);
        match aead::open(self.algorithm, &self.bytes, &unpacked.raw, aad) {
            Ok(plaintext) => Ok(plaintext),
            Err(e) => match unpacked.declared {
                Some(declared) if declared != self.algorithm => {
                    aead::open(declared, &self.bytes, &unpacked.raw, aad)
                }
                _ => Err(e),
            },
        }
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

    /// Decodes any stored format F0–F4 (`kes-crypto.md` §2.2): valid JSON is read as one of
    /// the JSON eras (no HMAC key), anything else must be base64 protobuf with both keys.
    pub fn parse(value: &[u8]) -> Result<KeyVersion, FormatError> {
        stored::parse(value)
    }

    /// Encodes as F4 (base64 protobuf), byte-for-byte as upstream writes it. Fails for keys
    /// without an HMAC key: JSON-era keys are never rewritten (§1).
    pub fn encode(&self) -> Result<Zeroizing<String>, FormatError> {
        stored::encode(self)
    }
}

/// Whether a key version may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionState {
    /// Encrypts (when newest) and decrypts.
    Live,
    /// Out of use: its ciphertexts fail like a wrong key's until it is re-enabled.
    Retired,
}

impl VersionState {
    /// The name the API and the CLI show.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Live => "live",
            VersionState::Retired => "retired",
        }
    }
}

/// One version of a key: its facts always, its material only while it is live (a retired
/// version's secret is never kept in memory).
pub struct Version {
    pub id: String,
    pub state: VersionState,
    /// `None` when unknown (legacy keys, or a retired version the store cannot read).
    pub created_at: Option<OffsetDateTime>,
    pub created_by: String,
    /// `Some` exactly when `state` is `Live`.
    pub key: Option<KeyVersion>,
}

impl Version {
    /// A live version holding `key`.
    pub fn live(id: String, key: KeyVersion) -> Version {
        Version {
            id,
            state: VersionState::Live,
            created_at: key.created_at,
            created_by: key.created_by.clone(),
            key: Some(key),
        }
    }

    /// A retired version: `key` (when the store could read it) gives the facts and is then
    /// dropped, so its material is wiped.
    pub fn retired(id: String, key: Option<KeyVersion>) -> Version {
        let (created_at, created_by) =
            key.map(|k| (k.created_at, k.created_by.clone())).unwrap_or((None, String::new()));
        Version { id, state: VersionState::Retired, created_at, created_by, key: None }
    }
}

/// A key with all its versions, the first (what upstream reads) first, newest last.
pub struct VersionedKey {
    versions: Vec<Version>,
}

impl VersionedKey {
    pub fn new(versions: Vec<Version>) -> VersionedKey {
        VersionedKey { versions }
    }

    /// A key of one live version (what every key is before its first rotation).
    pub fn single(id: String, key: KeyVersion) -> VersionedKey {
        VersionedKey { versions: vec![Version::live(id, key)] }
    }

    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// The first version, which holds the key's HMAC secret and its creation facts.
    pub fn first(&self) -> Option<&Version> {
        self.versions.first()
    }

    /// The HMAC key: always the first version's, so HMAC output never changes across
    /// rotations. `None` for JSON-era keys and while the first version is retired.
    pub fn hmac(&self) -> Option<&HmacKey> {
        self.first()?.key.as_ref()?.hmac.as_ref()
    }

    /// The newest live version, which encrypts. `None` when every version is retired.
    pub fn newest(&self) -> Option<(&str, &KeyVersion)> {
        self.versions.iter().rev().find_map(|v| Some((v.id.as_str(), v.key.as_ref()?)))
    }

    /// The version `id`, live or retired.
    pub fn version(&self, id: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.id == id)
    }

    /// How many versions are live.
    pub fn live_count(&self) -> usize {
        self.versions.iter().filter(|v| v.key.is_some()).count()
    }

    /// Opens `ciphertext` with version `id` only; a retired or unknown version fails like a
    /// wrong key.
    pub fn decrypt_with(
        &self,
        id: &str,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let key = self.version(id).and_then(|v| v.key.as_ref()).ok_or(DecryptError)?;
        key.key.decrypt(ciphertext, aad)
    }

    /// Opens `ciphertext` with each live version, newest first, at most `max_tries` of them;
    /// the AEAD tag decides. Returns the plaintext and the id of the version that opened it.
    pub fn decrypt_any(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
        max_tries: usize,
    ) -> Result<(Zeroizing<Vec<u8>>, &str), DecryptError> {
        let live =
            self.versions.iter().rev().filter_map(|v| Some((v.id.as_str(), v.key.as_ref()?)));
        for (id, key) in live.take(max_tries) {
            if let Ok(plaintext) = key.key.decrypt(ciphertext, aad) {
                return Ok((plaintext, id));
            }
        }
        Err(DecryptError)
    }
}

#[cfg(test)]
mod tests {
    //! Known-answer tests for every vector of `kes-crypto.md` §8.1 and §8.4, tamper checks,
    //! and a property test. Stored-key vectors (§8.2, §8.3) are in `stored.rs`.

    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    const Z32: [u8; 32] = [0; 32];
    const K2: &str = "dDHbTWgo+Yh3u804SYB5OyVMy6RiLeJYBQth1f6KlEU=";
    const PT28: &str = "CLcJoykFCWZDkEIiUq9bJRqwCwW9ZDvdgu8EMA==";

    fn b64(s: &str) -> Vec<u8> {
        STANDARD.decode(s).unwrap()
    }

    fn unhex(s: &str) -> Vec<u8> {
        crate::hex::decode(s).unwrap()
    }

    fn key(alg: Algorithm, b64_key: &str) -> SecretKey {
        SecretKey::new(alg, &b64(b64_key).try_into().unwrap())
    }

    fn k2() -> String {
        K2.to_string()
    }

    /// The `id` legacy ciphertexts carry: hex of the first 16 bytes of SHA-256(K).
    fn legacy_key_id(key: &[u8; 32]) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, key);
        crate::hex::encode(&digest.as_ref()[..16])
    }

    /// How a vector's ciphertext is given in the spec.
    enum Ct {
        /// The JSON text itself.
        Json(&'static str),
        /// base64 of the binary ciphertext.
        B64(&'static str),
    }

    impl Ct {
        fn bytes(&self) -> Vec<u8> {
            match self {
                Ct::Json(s) => s.as_bytes().to_vec(),
                Ct::B64(s) => b64(s),
            }
        }
    }

    struct DecryptVector {
        name: &'static str,
        alg: Algorithm,
        key: [u8; 32],
        aad: &'static [u8],
        ct: Ct,
        plaintext: Vec<u8>,
    }

    /// §8.1 D0–D7 (upstream `key_test.go`).
    fn decrypt_vectors() -> Vec<DecryptVector> {
        let k2: [u8; 32] = b64(&k2()).try_into().unwrap();
        vec![
            DecryptVector {
                name: "D0",
                alg: Algorithm::Aes256,
                key: Z32,
                aad: b"",
                ct: Ct::Json(
                    r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
                ),
                plaintext: vec![0; 16],
            },
            DecryptVector {
                name: "D1",
                alg: Algorithm::ChaCha20,
                key: Z32,
                aad: b"",
                ct: Ct::Json(
                    r#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#,
                ),
                plaintext: vec![0; 16],
            },
            DecryptVector {
                name: "D2",
                alg: Algorithm::ChaCha20,
                key: Z32,
                aad: b"",
                ct: Ct::Json(
                    r#"{"aead":"ChaCha20Poly1305","id":"66687aadf862bd776c8fc18b8e9f8e20","iv":"EC0eZp7Pqt+LnkOae5xaAg==","nonce":"X1ejXKmH/ugFZPkk","bytes":"wIGBTDs6aOvsqJfekZ0PYRT/OHyFX2TXqeNwl1SLXOI="}"#,
                ),
                plaintext: vec![0; 16],
            },
            DecryptVector {
                name: "D3",
                alg: Algorithm::Aes256,
                key: Z32,
                aad: b"",
                ct: Ct::B64(
                    "lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjY2ODdhYWRmODYyYmQ3NzZjOGZjMThiOGU5ZjhlMjDEEExv7LAd4oz0SaHZrX5LBufEDEKME1ow1CDfUFrqv8QgJuy7Sw+jVqz99TK1HV851LT3K4mwwDv46TB2ngWkAJQ=",
                ),
                plaintext: vec![0; 16],
            },
            DecryptVector {
                name: "D4",
                alg: Algorithm::ChaCha20,
                key: Z32,
                aad: b"",
                ct: Ct::B64(
                    "lbJYQ0hBQ0hBMjAtUE9MWTEzMDXZIDY2Njg3YWFkZjg2MmJkNzc2YzhmYzE4YjhlOWY4ZTIwxBBAr+aptD4x2+qfOhiErbnkxAxYs8RmNC1JJXD1hiHEIJ2KqM0jjkME7ndx8nyVseesN83Np0rM5ejVUun+fNFu",
                ),
                plaintext: vec![0; 16],
            },
            DecryptVector {
                name: "D5",
                alg: Algorithm::Aes256,
                key: Z32,
                aad: b"",
                ct: Ct::B64(
                    "zwdDgHeRlIFRnJ7+DIhs/ka7GFK2CFSfDELqg1VCyTQzZ58o7MAdupMLk3ZjlMo2ZUDwldL2o41nAWDc",
                ),
                plaintext: vec![0; 16],
            },
            DecryptVector {
                name: "D6",
                alg: Algorithm::Aes256,
                key: k2,
                aad: &[0; 16],
                ct: Ct::B64(
                    "s2gmfQHeGdlyL8x1yEWSACUV3GrSoz3t160hugMgzKWgyqesXDVUJ5Dw5Mt076rR1PNiU9X4YjLH14D8a81t2r2xsz4gVZac",
                ),
                plaintext: b64(PT28),
            },
            DecryptVector {
                name: "D7",
                alg: Algorithm::ChaCha20,
                key: k2,
                aad: &[0; 16],
                ct: Ct::B64(
                    "gO4woRIswAJdjUjW7z2ApsSQxJlwB24yjLrmH4eI7sB0uh5nfEJfk9ybTPFft5FRFaZCVBmzhx7OJs9n0WWtxH3sySIxecIK",
                ),
                plaintext: b64(PT28),
            },
        ]
    }

    #[test]
    fn decrypt_vectors_d0_to_d7() {
        for v in decrypt_vectors() {
            let key = SecretKey::new(v.alg, &v.key);
            let got = key
                .decrypt(&v.ct.bytes(), v.aad)
                .unwrap_or_else(|_| panic!("{} must decrypt", v.name));
            assert_eq!(got.as_slice(), v.plaintext.as_slice(), "{}", v.name);
        }
    }

    #[test]
    fn vector_lengths_match_the_spec() {
        let lens: Vec<usize> = decrypt_vectors()
            .iter()
            .filter(|v| matches!(v.ct, Ct::B64(_)))
            .map(|v| v.ct.bytes().len())
            .collect();
        assert_eq!(lens, [119, 120, 60, 72, 72]); // D3, D4, D5, D6, D7
        assert_eq!(b64(PT28).len(), 28);
    }

    /// §8.1 D8–D14: negative vectors, all with key Z32.
    #[test]
    fn negative_vectors_d8_to_d14_fail() {
        let cases = [
            (
                "D8 unsupported aead name",
                Algorithm::Aes256,
                r#"{"aead":"AES-256-GCM","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            ),
            (
                "D9 iv is 20 bytes",
                Algorithm::Aes256,
                r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"EjOY4JKqjIrPmQ5z1KSR8zlhggY=","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            ),
            (
                "D10 nonce 8 bytes",
                Algorithm::ChaCha20,
                r#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"SXAbms731/c=","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#,
            ),
            (
                "D11 nonce 8 bytes",
                Algorithm::Aes256,
                r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"efY+4kYF9n8=","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            ),
            (
                "D12 tag mismatch",
                Algorithm::Aes256,
                r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"QTza1g5oX3f9cGJMbY1xJwWPj1F7R2VnNl6XpFKYQy0="}"#,
            ),
            (
                "D13 tag mismatch",
                Algorithm::ChaCha20,
                r#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"TTi8pkO+Jh1JWAHvPxZeUk/iVoBPUCE4ZSVGBy3fW2s="}"#,
            ),
            (
                "D14 invalid JSON (missing comma)",
                Algorithm::Aes256,
                r#"{"aead":"AES-256-GCM-HMAC-SHA-256" "iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            ),
        ];
        for (name, alg, ct) in cases {
            for alg in [alg, other(alg)] {
                let key = SecretKey::new(alg, &Z32);
                assert_eq!(
                    key.decrypt(ct.as_bytes(), b"").unwrap_err(),
                    DecryptError,
                    "{name} ({alg:?})"
                );
            }
        }
    }

    fn other(alg: Algorithm) -> Algorithm {
        match alg {
            Algorithm::Aes256 => Algorithm::ChaCha20,
            Algorithm::ChaCha20 => Algorithm::Aes256,
        }
    }

    /// §5.4 REQUIRED: a key stored without a type parses as AES256, but its legacy
    /// ciphertexts may say ChaCha20Poly1305; the declared algorithm is tried second.
    #[test]
    fn legacy_ciphertexts_retry_with_the_declared_algorithm() {
        for v in decrypt_vectors() {
            let key = SecretKey::new(other(v.alg), &v.key);
            let result = key.decrypt(&v.ct.bytes(), v.aad);
            match v.ct {
                Ct::Json(_) => {
                    assert_eq!(result.unwrap().as_slice(), v.plaintext.as_slice(), "{}", v.name)
                }
                Ct::B64(_) if v.name == "D3" || v.name == "D4" => {
                    assert_eq!(result.unwrap().as_slice(), v.plaintext.as_slice(), "{}", v.name)
                }
                // Raw ciphertexts name no algorithm: only the stored type is tried.
                Ct::B64(_) => assert_eq!(result.unwrap_err(), DecryptError, "{}", v.name),
            }
        }
    }

    /// The §5.4 scenario end to end: an F0 key (no type, so AES256) whose ciphertexts were
    /// written by a KES node without AES hardware.
    #[test]
    fn f0_key_opens_chacha_ciphertexts_of_its_era() {
        let kv = KeyVersion::parse(br#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#)
            .unwrap();
        assert_eq!(kv.key.algorithm(), Algorithm::Aes256);
        for v in decrypt_vectors().iter().filter(|v| ["D1", "D2", "D4"].contains(&v.name)) {
            assert_eq!(v.alg, Algorithm::ChaCha20);
            let got = kv.key.decrypt(&v.ct.bytes(), b"").unwrap();
            assert_eq!(got.as_slice(), v.plaintext.as_slice(), "{}", v.name);
        }
        // New ciphertexts from that key are AES (raw); the retry never applies to them.
        let ct = kv.key.encrypt(b"dek", b"").unwrap();
        assert!(SecretKey::new(Algorithm::ChaCha20, &Z32).decrypt(&ct, b"").is_err());
    }

    #[test]
    fn legacy_key_ids_are_sha256_prefixes() {
        assert_eq!(legacy_key_id(&Z32), "66687aadf862bd776c8fc18b8e9f8e20");
        // D2, D3 and D4 carry exactly this id.
        for v in decrypt_vectors().iter().filter(|v| ["D2", "D3", "D4"].contains(&v.name)) {
            let ct = v.ct.bytes();
            let found = ct.windows(32).any(|w| w == legacy_key_id(&v.key).as_bytes());
            assert!(found, "{}", v.name);
        }
    }

    /// Flips bit 0 and bit 7 of every byte of a raw ciphertext.
    fn assert_raw_tamper_fails(key: &SecretKey, raw: &[u8], aad: &[u8], name: &str) {
        for i in 0..raw.len() {
            for bit in [0x01u8, 0x80] {
                let mut t = raw.to_vec();
                t[i] ^= bit;
                assert_eq!(
                    key.decrypt(&t, aad).unwrap_err(),
                    DecryptError,
                    "{name}: byte {i} bit {bit:#x}"
                );
            }
        }
    }

    #[test]
    fn tampered_raw_vectors_fail() {
        for v in decrypt_vectors().iter().filter(|v| ["D5", "D6", "D7"].contains(&v.name)) {
            assert_raw_tamper_fails(&SecretKey::new(v.alg, &v.key), &v.ct.bytes(), v.aad, v.name);
        }
    }

    /// In msgpack, every byte from the iv header on is authenticated or structural; the key
    /// id is not checked (§5.4), so flipping it must not matter.
    #[test]
    fn tampered_msgpack_vectors_fail_except_the_ignored_id() {
        for v in decrypt_vectors().iter().filter(|v| ["D3", "D4"].contains(&v.name)) {
            let key = SecretKey::new(v.alg, &v.key);
            let ct = v.ct.bytes();
            let alg_len = usize::from(ct[1] & 0x1f);
            let id_start = 2 + alg_len + 2;
            let iv_header = id_start + 32;
            assert_eq!(&ct[iv_header..iv_header + 2], &[0xc4, 0x10], "{}", v.name);
            for i in (0..id_start).chain(iv_header..ct.len()) {
                for bit in [0x01u8, 0x80] {
                    let mut t = ct.clone();
                    t[i] ^= bit;
                    assert_eq!(
                        key.decrypt(&t, v.aad).unwrap_err(),
                        DecryptError,
                        "{} byte {i}",
                        v.name
                    );
                }
            }
            for i in id_start..iv_header {
                let mut t = ct.clone();
                t[i] ^= 0x01;
                assert_eq!(key.decrypt(&t, v.aad).unwrap().as_slice(), v.plaintext.as_slice());
            }
        }
    }

    /// In JSON, flip bits of the decoded iv, nonce and bytes (flipping the text may change
    /// nothing: key names are case-insensitive and base64 has ignored trailing bits).
    #[test]
    fn tampered_json_vectors_fail() {
        for v in decrypt_vectors().iter().filter(|v| matches!(v.ct, Ct::Json(_))) {
            let key = SecretKey::new(v.alg, &v.key);
            let doc: serde_json::Value = serde_json::from_slice(&v.ct.bytes()).unwrap();
            for field in ["iv", "nonce", "bytes"] {
                let decoded = b64(doc[field].as_str().unwrap());
                for i in 0..decoded.len() {
                    let mut flipped = decoded.clone();
                    flipped[i] ^= 0x01;
                    let mut t = doc.clone();
                    t[field] = serde_json::Value::String(STANDARD.encode(&flipped));
                    let t = serde_json::to_vec(&t).unwrap();
                    assert_eq!(
                        key.decrypt(&t, v.aad).unwrap_err(),
                        DecryptError,
                        "{} {field}[{i}]",
                        v.name
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_aad_fails() {
        for v in decrypt_vectors() {
            let key = SecretKey::new(v.alg, &v.key);
            let ct = v.ct.bytes();
            let mut wrong = v.aad.to_vec();
            wrong.push(0);
            assert!(key.decrypt(&ct, &wrong).is_err(), "{} with longer AAD", v.name);
            if !v.aad.is_empty() {
                assert!(key.decrypt(&ct, b"").is_err(), "{} without AAD", v.name);
                let mut flipped = v.aad.to_vec();
                flipped[0] ^= 1;
                assert!(key.decrypt(&ct, &flipped).is_err(), "{} with flipped AAD", v.name);
            }
        }
    }

    /// Absent, `null` and empty context are the same empty AAD (§3): the API passes `&[]`
    /// for all three, and a ciphertext made with one opens with the others.
    #[test]
    fn empty_and_absent_aad_are_identical() {
        let absent: Option<Vec<u8>> = None;
        let empty: Vec<u8> = Vec::new();
        for alg in [Algorithm::Aes256, Algorithm::ChaCha20] {
            let key = key(alg, K2);
            let ct = key.encrypt(b"data", absent.as_deref().unwrap_or_default()).unwrap();
            assert_eq!(key.decrypt(&ct, &empty).unwrap().as_slice(), b"data");
            assert_eq!(key.decrypt(&ct, b"").unwrap().as_slice(), b"data");
            assert!(key.decrypt(&ct, b"\0").is_err());
        }
    }

    #[test]
    fn round_trip_vectors_from_upstream() {
        let pt28 = b64(PT28);
        let cases: [(Algorithm, &str, &[u8], &[u8]); 4] = [
            (Algorithm::Aes256, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", &[0; 16], b""),
            (Algorithm::Aes256, K2, &[0; 16], b""),
            (Algorithm::Aes256, K2, &pt28, &[0; 16]),
            (Algorithm::ChaCha20, K2, &pt28, &[0; 16]),
        ];
        for (alg, k, pt, aad) in cases {
            let key = key(alg, k);
            let ct = key.encrypt(pt, aad).unwrap();
            assert_eq!(ct.len(), pt.len() + 44);
            assert_eq!(key.decrypt(&ct, aad).unwrap().as_slice(), pt);
            // Fresh iv and nonce every time.
            assert_ne!(key.encrypt(pt, aad).unwrap(), ct);
        }
    }

    #[test]
    fn a_32_byte_dek_seals_to_76_bytes() {
        let ct = key(Algorithm::Aes256, K2).encrypt(&[7; 32], b"ctx").unwrap();
        assert_eq!(ct.len(), 76);
        assert_eq!(STANDARD.encode(&ct).len(), 104);
    }

    #[test]
    fn keys_of_one_type_do_not_open_the_other() {
        let aes = key(Algorithm::Aes256, K2);
        let chacha = key(Algorithm::ChaCha20, K2);
        assert!(chacha.decrypt(&aes.encrypt(b"x", b"").unwrap(), b"").is_err());
        assert!(aes.decrypt(&chacha.encrypt(b"x", b"").unwrap(), b"").is_err());
    }

    /// §8.4 (derived) HMAC vectors, and upstream's determinism check.
    #[test]
    fn hmac_vectors() {
        let p5_hmac: [u8; 32] =
            b64("nLXl4yqa4cjZTcSbsU6sNnN8kP9ARWkXwa20YQZa9Hg=").try_into().unwrap();
        let mac = HmacKey::new(&p5_hmac).sign(b"Hello World");
        assert_eq!(
            mac.to_vec(),
            unhex("ca30097dd549ceb5cb4748739af12c8a0df309d0dbc74d6792e90a56d06ee8e0")
        );
        assert_eq!(STANDARD.encode(mac), "yjAJfdVJzrXLR0hzmvEsig3zCdDbx01nkukKVtBu6OA=");
        let mac = HmacKey::new(&Z32).sign(b"root access key");
        assert_eq!(
            mac.to_vec(),
            unhex("4db17ed6590726d7ba2c97b25f436f1cb705fc7b084a271824fc3334c0301eef")
        );

        let key = HmacKey::generate().unwrap();
        assert_eq!(key.sign(b"Hello World"), key.sign(b"Hello World"));
        assert_ne!(key.sign(b"Hello World"), key.sign(b"Hello World!"));
    }

    #[test]
    fn algorithm_names() {
        for (name, alg) in [
            ("AES256", Algorithm::Aes256),
            ("AES256-GCM_SHA256", Algorithm::Aes256),
            ("ChaCha20", Algorithm::ChaCha20),
            ("XCHACHA20-POLY1305", Algorithm::ChaCha20),
        ] {
            assert_eq!(Algorithm::from_name(name), Some(alg));
        }
        for name in ["", "aes256", "AES-256-GCM", "AES-256-GCM-HMAC-SHA-256", "ChaCha20Poly1305"] {
            assert_eq!(Algorithm::from_name(name), None, "{name}");
        }
        assert_eq!(Algorithm::Aes256.as_str(), "AES256");
        assert_eq!(Algorithm::ChaCha20.as_str(), "ChaCha20");
    }

    #[test]
    fn preferred_follows_the_cpu() {
        #[cfg(target_arch = "x86_64")]
        let accelerated = std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq");
        #[cfg(target_arch = "aarch64")]
        let accelerated = std::arch::is_aarch64_feature_detected!("aes");
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let accelerated = false;
        let want = if accelerated { Algorithm::Aes256 } else { Algorithm::ChaCha20 };
        assert_eq!(Algorithm::preferred(), want);
    }

    #[test]
    fn generated_keys_differ_and_work() {
        let a = SecretKey::generate(Algorithm::ChaCha20).unwrap();
        let b = SecretKey::generate(Algorithm::ChaCha20).unwrap();
        assert_ne!(*a.bytes, *b.bytes);
        assert_eq!(a.algorithm(), Algorithm::ChaCha20);
        assert!(b.decrypt(&a.encrypt(b"x", b"").unwrap(), b"").is_err());
    }

    fn algorithm() -> impl Strategy<Value = Algorithm> {
        prop_oneof![Just(Algorithm::Aes256), Just(Algorithm::ChaCha20)]
    }

    #[test]
    fn seal_fresh_seals_the_bytes_it_hands_back_from_one_random_read() {
        for alg in [Algorithm::Aes256, Algorithm::ChaCha20] {
            let key = key(alg, K2);
            let mut a = [0u8; 32];
            let ct = key.seal_fresh(&mut a, b"ctx").unwrap();
            assert_eq!(ct.len(), 32 + 44, "the raw format, as encrypt writes it");
            assert_ne!(a, [0u8; 32]);
            assert_eq!(key.decrypt(&ct, b"ctx").unwrap().as_slice(), a.as_slice());
            assert!(key.decrypt(&ct, b"other").is_err());
            let mut b = [0u8; 32];
            let ct2 = key.seal_fresh(&mut b, b"ctx").unwrap();
            assert_ne!(a, b, "a fresh secret per call");
            assert_ne!(ct[32..], ct2[32..], "a fresh iv and nonce per call");
            // The secret is not the iv or nonce the ciphertext shows.
            assert!(!ct.windows(16).any(|w| a.windows(16).any(|s| s == w)));
            let mut empty = [0u8; 0];
            let ct = key.seal_fresh(&mut empty, b"").unwrap();
            assert!(key.decrypt(&ct, b"").unwrap().is_empty());
            let mut long = [0u8; MAX_FRESH_SECRET + 1];
            assert_eq!(key.seal_fresh(&mut long, b""), Err(EncryptError));
            assert_eq!(long, [0u8; MAX_FRESH_SECRET + 1], "nothing written on refusal");
        }
    }

    proptest! {
        #[test]
        fn encrypt_decrypt_round_trip(
            alg in algorithm(),
            key_bytes in any::<[u8; 32]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            plaintext in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let key = SecretKey::new(alg, &key_bytes);
            let ct = key.encrypt(&plaintext, &aad).unwrap();
            prop_assert_eq!(ct.len(), plaintext.len() + 44);
            let opened = key.decrypt(&ct, &aad).unwrap();
            prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
            let mut wrong_aad = aad.clone();
            wrong_aad.push(1);
            prop_assert!(key.decrypt(&ct, &wrong_aad).is_err());
            prop_assert!(SecretKey::new(other(alg), &key_bytes).decrypt(&ct, &aad).is_err());
        }

        #[test]
        fn decrypt_never_panics_on_garbage(
            alg in algorithm(),
            ct in proptest::collection::vec(any::<u8>(), 0..200),
            first in prop_oneof![Just(0x95u8), Just(b'{'), any::<u8>()],
        ) {
            let mut ct = ct;
            ct.insert(0, first);
            prop_assert!(SecretKey::new(alg, &Z32).decrypt(&ct, b"").is_err());
        }
    }
}
