//! API keys (`kes:v1:` + base64(0x00 ‖ Ed25519 seed)), their identities, and the
//! self-signed Ed25519 client certificates made from them (`kes-config-cli.md` §4.2,
//! `kes-crypto.md` §7 and §8.5).
//!
//! The seed is the only secret here. It lives in a `Zeroizing` array; everything derived from
//! it that we own (the `kes:v1:` text, PKCS#8 DER and PEM) is `Zeroizing` too. ring's and
//! rcgen's key objects keep their own copies for the duration of a call and are not wiped
//! (neither crate offers it).
//!
//! Private keys are written as PKCS#8 **v1** (what Go's `MarshalPKCS8PrivateKey` and OpenSSL
//! write), not ring's v2: OpenSSL 3.0, and so curl, refuse ring's v2 Ed25519 keys.

use super::Identity;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use rustls_pki_types::PrivatePkcs8KeyDer;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// The optional prefix of an API key's text form.
const PREFIX: &str = "kes:v1:";
const SEED_LEN: usize = 32;
/// Decoded API key: a type byte, then the seed.
const RAW_LEN: usize = 1 + SEED_LEN;
/// The only key type byte: Ed25519.
const TYPE_ED25519: u8 = 0x00;
/// `kes:v1:` + 44 base64 characters.
const TEXT_LEN: usize = PREFIX.len() + 44;

/// DER SubjectPublicKeyInfo of an Ed25519 key, up to the 32 key bytes (RFC 8410 §4).
const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// PKCS#8 v1 `PrivateKeyInfo` of an Ed25519 key, up to the 32 seed bytes (RFC 8410 §7).
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The OID 1.3.101.112 (id-Ed25519), DER content bytes.
const OID_ED25519: [u8; 3] = [0x2b, 0x65, 0x70];

/// Validity of the client certificate made from an API key (kms-go: 90 days).
const CLIENT_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// Random serial numbers are 128 bits, as Go's `rand.Int(rand.Reader, 2^128)`.
const SERIAL_LEN: usize = 16;

/// Why an API key could not be made or read. Never contains key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyError {
    /// Not `[kes:v1:]` + std base64 of 33 bytes starting with 0x00.
    Invalid,
    /// The operating system's random generator failed.
    Rng,
}

impl fmt::Display for ApiKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiKeyError::Invalid => "invalid API key",
            ApiKeyError::Rng => "failed to generate random bytes",
        })
    }
}

impl std::error::Error for ApiKeyError {}

/// An Ed25519 private key in its KES API key form. No `Clone`; `Debug` shows only the
/// identity.
pub struct ApiKey {
    seed: Zeroizing<[u8; SEED_LEN]>,
}

impl ApiKey {
    /// A fresh random key.
    pub fn generate() -> Result<ApiKey, ApiKeyError> {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        getrandom::getrandom(seed.as_mut_slice()).map_err(|_| ApiKeyError::Rng)?;
        Ok(ApiKey { seed })
    }

    pub fn from_seed(seed: &[u8; SEED_LEN]) -> ApiKey {
        ApiKey { seed: Zeroizing::new(*seed) }
    }

    /// Reads `kes:v1:<base64>` or the bare base64 (Go's std encoding, as kms-go reads it).
    pub fn parse(s: &str) -> Result<ApiKey, ApiKeyError> {
        let text = s.strip_prefix(PREFIX).unwrap_or(s);
        let raw = crate::gojson::decode_base64_std(text.as_bytes()).ok_or(ApiKeyError::Invalid)?;
        match raw.split_first() {
            Some((&TYPE_ED25519, seed)) if seed.len() == SEED_LEN => {
                let mut key = ApiKey { seed: Zeroizing::new([0u8; SEED_LEN]) };
                key.seed.copy_from_slice(seed);
                Ok(key)
            }
            _ => Err(ApiKeyError::Invalid),
        }
    }

    /// The `kes:v1:…` text (51 characters). It is the secret: print it once, never log it.
    pub fn to_string_secret(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; RAW_LEN]);
        raw[0] = TYPE_ED25519;
        raw[1..].copy_from_slice(self.seed.as_slice());
        let mut text = Zeroizing::new([0u8; TEXT_LEN]);
        text[..PREFIX.len()].copy_from_slice(PREFIX.as_bytes());
        // 33 bytes are always 44 characters, which is exactly the space left.
        let n = STANDARD.encode_slice(raw.as_slice(), &mut text[PREFIX.len()..]).unwrap_or(0);
        let mut out = Zeroizing::new(String::with_capacity(TEXT_LEN));
        out.push_str(std::str::from_utf8(&text[..PREFIX.len() + n]).unwrap_or_default());
        out
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut public = [0u8; 32];
        // Any 32 bytes are a valid seed, so ring cannot refuse it.
        if let Ok(pair) = Ed25519KeyPair::from_seed_unchecked(self.seed.as_slice()) {
            public.copy_from_slice(pair.public_key().as_ref());
        }
        public
    }

    /// hex(SHA-256(SPKI)), the identity a certificate with this key has.
    pub fn identity(&self) -> Identity {
        let mut spki = [0u8; ED25519_SPKI_PREFIX.len() + 32];
        spki[..ED25519_SPKI_PREFIX.len()].copy_from_slice(&ED25519_SPKI_PREFIX);
        spki[ED25519_SPKI_PREFIX.len()..].copy_from_slice(&self.public_key());
        Identity::from_spki(&spki)
    }

    /// PKCS#8 v1 DER, 48 bytes: `302e020100300506032b657004220420` ‖ seed.
    pub fn pkcs8_v1_der(&self) -> Zeroizing<Vec<u8>> {
        let mut der = Zeroizing::new(Vec::with_capacity(PKCS8_V1_PREFIX.len() + SEED_LEN));
        der.extend_from_slice(&PKCS8_V1_PREFIX);
        der.extend_from_slice(self.seed.as_slice());
        der
    }

    /// Reads an Ed25519 PKCS#8 key, v1 (RFC 5208, as Go and OpenSSL write it) or v2
    /// (RFC 5958, as ring writes it). A public key, if present, must match the seed.
    pub fn from_pkcs8_der(der: &[u8]) -> Option<ApiKey> {
        let (info, rest) = der_next(der, TAG_SEQUENCE)?;
        if !rest.is_empty() {
            return None;
        }
        let (version, rest) = der_next(info, TAG_INTEGER)?;
        if version != [0] && version != [1] {
            return None;
        }
        let (algorithm, rest) = der_next(rest, TAG_SEQUENCE)?;
        let (oid, params) = der_next(algorithm, TAG_OID)?;
        if oid != OID_ED25519 || !params.is_empty() {
            return None; // RFC 8410: the parameters MUST be absent
        }
        let (private_key, mut rest) = der_next(rest, TAG_OCTET_STRING)?;
        let (seed, after) = der_next(private_key, TAG_OCTET_STRING)?;
        if seed.len() != SEED_LEN || !after.is_empty() {
            return None;
        }
        let key = ApiKey::from_seed(seed.try_into().ok()?);

        if let Some((_, tail)) = der_next(rest, TAG_ATTRIBUTES) {
            rest = tail;
        }
        if !rest.is_empty() {
            // RFC 5958 says [1] IMPLICIT BIT STRING (0x81, as OpenSSL writes it); ring writes
            // it as a constructed [1] around a BIT STRING (0xa1). Accept both.
            let bits = match der_next(rest, TAG_PUBLIC_KEY_IMPLICIT) {
                Some((bits, [])) => bits,
                _ => {
                    let (wrapped, tail) = der_next(rest, TAG_PUBLIC_KEY_EXPLICIT)?;
                    let (bits, after) = der_next(wrapped, TAG_BIT_STRING)?;
                    if !tail.is_empty() || !after.is_empty() {
                        return None;
                    }
                    bits
                }
            };
            let (&unused_bits, public) = bits.split_first()?;
            if unused_bits != 0 || public != key.public_key() {
                return None;
            }
        }
        Some(key)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey").field("identity", &self.identity()).finish_non_exhaustive()
    }
}

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_ATTRIBUTES: u8 = 0xa0;
const TAG_PUBLIC_KEY_IMPLICIT: u8 = 0x81;
const TAG_PUBLIC_KEY_EXPLICIT: u8 = 0xa1;

/// One DER element with tag `tag` at the start of `der`: its contents and what follows.
fn der_next(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = crate::der::tlv(der)?;
    (t == tag).then_some((body, rest))
}

/// A fresh random 128-bit serial number.
fn random_serial() -> Result<SerialNumber, String> {
    let mut serial = [0u8; SERIAL_LEN];
    getrandom::getrandom(&mut serial).map_err(|_| "failed to generate random bytes".to_string())?;
    Ok(SerialNumber::from_slice(&serial))
}

/// rcgen's signer for `key`, built from PKCS#8 v1.
fn signing_key(key: &ApiKey) -> Result<KeyPair, String> {
    let der = key.pkcs8_v1_der();
    KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(der.as_slice()),
        &rcgen::PKCS_ED25519,
    )
    .map_err(|e| format!("invalid Ed25519 key: {e}"))
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The TLS client certificate kms-go makes from an API key: self-signed Ed25519, random
/// 128-bit serial, CN = identity, valid from now for 90 days, digitalSignature, clientAuth,
/// basic constraints CA=false, no SAN. Returns the certificate DER and the PKCS#8 v1 key DER.
pub fn client_certificate(key: &ApiKey) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), String> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.serial_number = Some(random_serial()?);
    params.distinguished_name = subject(key.identity().as_str());
    params.not_before = now;
    params.not_after = now + CLIENT_CERT_VALIDITY;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.is_ca = IsCa::ExplicitNoCa;
    let cert = params
        .self_signed(&signing_key(key)?)
        .map_err(|e| format!("failed to create certificate: {e}"))?;
    Ok((cert.der().to_vec(), key.pkcs8_v1_der()))
}

/// A self-signed Ed25519 certificate for `kes identity new`: CN `common_name`, SANs from
/// `ips` and `dns`, valid from now for `validity`, digitalSignature, and serverAuth plus
/// clientAuth (or clientAuth only when `server_and_client_auth` is false). Returns PEM.
pub fn self_signed_certificate(
    key: &ApiKey,
    common_name: &str,
    ips: &[IpAddr],
    dns: &[String],
    validity: Duration,
    server_and_client_auth: bool,
) -> Result<String, String> {
    let now = OffsetDateTime::now_utc();
    let not_after = time::Duration::try_from(validity)
        .ok()
        .and_then(|v| now.checked_add(v))
        .ok_or_else(|| "certificate validity is too long".to_string())?;

    let mut params = CertificateParams::default();
    params.serial_number = Some(random_serial()?);
    params.distinguished_name = subject(common_name);
    params.not_before = now;
    params.not_after = not_after;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = if server_and_client_auth {
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    for name in dns {
        let ia5 = name.as_str().try_into().map_err(|_| format!("invalid DNS name {name:?}"))?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    let cert = params
        .self_signed(&signing_key(key)?)
        .map_err(|e| format!("failed to create certificate: {e}"))?;
    Ok(cert.pem())
}

/// `-----BEGIN PRIVATE KEY-----` PEM of a PKCS#8 DER key, 64 characters a line.
pub fn pkcs8_pem(der: &[u8]) -> Zeroizing<String> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----\n";
    const END: &str = "-----END PRIVATE KEY-----\n";
    const LINE: usize = 64;
    let mut b64 = Zeroizing::new(vec![0u8; der.len().div_ceil(3) * 4]);
    let n = STANDARD.encode_slice(der, b64.as_mut_slice()).unwrap_or(0);
    b64.truncate(n);
    let lines = n.div_ceil(LINE);
    let mut pem = Zeroizing::new(String::with_capacity(BEGIN.len() + n + lines + END.len()));
    pem.push_str(BEGIN);
    for line in b64.chunks(LINE) {
        // base64 output is ASCII.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(END);
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

    fn unhex(s: &str) -> Vec<u8> {
        crate::hex::decode(s).unwrap()
    }

    /// `kes-crypto.md` §8.5.
    const VECTORS: [(&str, &str); 5] = [
        (
            "kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc",
            "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22",
        ),
        (
            "kes:v1:AGaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NAs",
            "ea9826089311fe44d7590408ede9150f7c637b6cab0a91ee6fe1aa5d9fb366f6",
        ),
        (
            "kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw",
            "0426fa9a04bc2756b92fbe8a97e1a1e07b53ecf04ed33da22c33e5c9faeb8cbb",
        ),
        (
            "kes:v1:AMxvd2uV1l5dDSRwuKZxSjuM5BDemlr+685+JAHA1TuJ",
            "ab785e3b95d80d72cc9c27cb9fde886a0bf9068a69d40e3bd08a54e68c3f2bf7",
        ),
        (
            "kes:v1:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E",
            "dd4f4ea7208c5bbd56ce43f9b0717100b079d835fd09db329c9d15f8e36ad544",
        ),
    ];

    #[test]
    fn identity_vectors() {
        for (text, identity) in VECTORS {
            let key = ApiKey::parse(text).unwrap();
            assert_eq!(key.identity().as_str(), identity, "{text}");
            assert_eq!(key.to_string_secret().as_str(), text);
            assert_eq!(key.to_string_secret().len(), 51);
            // The bare base64 form is the same key.
            let bare = ApiKey::parse(&text[PREFIX.len()..]).unwrap();
            assert_eq!(bare.identity().as_str(), identity);
        }
    }

    #[test]
    fn test_admin_key_seed_and_public_key() {
        let key = ApiKey::parse(VECTORS[0].0).unwrap();
        assert_eq!(
            key.seed.to_vec(),
            unhex("3f44ec54985ab303f958e123aab9e397184fd60ec85c596fb5278c47a960345c")
        );
        assert_eq!(
            key.public_key().to_vec(),
            unhex("bce7ef7e567e6487fe084ab3ee223d6ce264c9967625abfecaafa9e5be5b04b1")
        );
    }

    #[test]
    fn invalid_keys_must_fail() {
        let bad = [
            "v1:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E",
            "kes:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E",
            "kes:v1:sbDvZFqUPFFwxRS4EkuoEb2nyyInkdKSUEYHXFHeTouW", // type byte 0xb1
            "kes:v1:",
            "",
            "kes:v1:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08", // 43 characters
            "kes:v1:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08EAA==", // 34 bytes
            "kes:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==", // 32 bytes
            "kes:v1:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E ",
            "KES:V1:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E",
            "kes:v1:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E\0",
            "kes:v1:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E=",
        ];
        for text in bad {
            assert_eq!(ApiKey::parse(text).unwrap_err(), ApiKeyError::Invalid, "{text:?}");
        }
        // Go's base64 skips line breaks.
        let wrapped = "kes:v1:AM0F5TP43FYEShMzA42f2drFYGnBOi\r\nNx7UH4DK0nm08E\n";
        assert_eq!(ApiKey::parse(wrapped).unwrap().identity().as_str(), VECTORS[4].1);
    }

    #[test]
    fn debug_shows_the_identity_only() {
        let (text, identity) = VECTORS[0];
        let key = ApiKey::parse(text).unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains(identity), "{debug}");
        assert!(!debug.contains(&text[PREFIX.len()..]), "{debug}");
        assert!(!debug.contains("kes:v1"), "{debug}");
        assert!(!debug.contains("3f44ec54"), "{debug}");
        assert!(!debug.contains("63, 68"), "{debug}"); // the seed as decimal bytes
        assert_eq!(ApiKeyError::Invalid.to_string(), "invalid API key");
    }

    #[test]
    fn generated_keys_are_fresh_and_round_trip() {
        let a = ApiKey::generate().unwrap();
        let b = ApiKey::generate().unwrap();
        assert_ne!(a.identity(), b.identity());
        let text = a.to_string_secret();
        assert!(text.starts_with("kes:v1:A"));
        assert_eq!(text.len(), 51);
        assert_eq!(ApiKey::parse(&text).unwrap().identity(), a.identity());
    }

    #[test]
    fn pkcs8_v1_layout() {
        let key = ApiKey::parse(VECTORS[0].0).unwrap();
        let der = key.pkcs8_v1_der();
        assert_eq!(der.len(), 48);
        assert_eq!(&der[..16], unhex("302e020100300506032b657004220420").as_slice());
        assert_eq!(&der[16..], key.seed.as_slice());
        // ring reads it (its "maybe unchecked" path is the v1 path) and agrees on the key.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap();
        assert_eq!(pair.public_key().as_ref(), key.public_key().as_slice());
        assert_eq!(ApiKey::from_pkcs8_der(&der).unwrap().identity(), key.identity());
    }

    #[test]
    fn pkcs8_v2_from_ring_and_openssl_layouts() {
        let rng = ring::rand::SystemRandom::new();
        let v2 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(v2.as_ref()).unwrap();
        let key = ApiKey::from_pkcs8_der(v2.as_ref()).unwrap();
        assert_eq!(key.public_key().as_slice(), pair.public_key().as_ref());
        assert_eq!(&v2.as_ref()[..5], &[0x30, 0x51, 0x02, 0x01, 0x01]); // v2

        // RFC 5958 form with an IMPLICIT [1] public key, and with attributes before it.
        let seed_key = ApiKey::parse(VECTORS[1].0).unwrap();
        let public = seed_key.public_key();
        let mut body = unhex("020101300506032b657004220420");
        body.extend_from_slice(seed_key.seed.as_slice());
        let mut with_attrs = body.clone();
        with_attrs.extend_from_slice(&[0xa0, 0x00]);
        for mut inner in [body.clone(), with_attrs] {
            inner.extend_from_slice(&[0x81, 0x21, 0x00]);
            inner.extend_from_slice(&public);
            let mut der = vec![0x30, inner.len() as u8];
            der.extend_from_slice(&inner);
            let key = ApiKey::from_pkcs8_der(&der).unwrap();
            assert_eq!(key.identity().as_str(), VECTORS[1].1);
        }

        // A public key that does not belong to the seed is refused.
        let mut inner = body.clone();
        inner.extend_from_slice(&[0x81, 0x21, 0x00]);
        inner.extend_from_slice(&[0u8; 32]);
        let mut der = vec![0x30, inner.len() as u8];
        der.extend_from_slice(&inner);
        assert!(ApiKey::from_pkcs8_der(&der).is_none());
    }

    #[test]
    fn pkcs8_that_is_not_ed25519_is_refused() {
        let good = ApiKey::parse(VECTORS[0].0).unwrap().pkcs8_v1_der();
        let with = |i: usize, b: u8| {
            let mut d = good.to_vec();
            d[i] = b;
            d
        };
        let mut trailing = good.to_vec();
        trailing.push(0);
        let cases = [
            with(4, 2),     // version 2
            with(10, 0x71), // OID 1.3.101.113 (Ed448)
            with(15, 0x1f), // inner octet string of 31 bytes
            with(0, 0x31),  // not a SEQUENCE
            trailing,
            good[..47].to_vec(),
            Vec::new(),
        ];
        for der in &cases {
            assert!(ApiKey::from_pkcs8_der(der).is_none(), "{der:02x?}");
        }
        // An ECDSA P-256 key from ring.
        let rng = ring::rand::SystemRandom::new();
        let ec = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .unwrap();
        assert!(ApiKey::from_pkcs8_der(ec.as_ref()).is_none());
    }

    fn verify_self_signed(
        der: &[u8],
        at: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<(), webpki::Error> {
        let cert = CertificateDer::from(der);
        let anchor = webpki::anchor_from_trusted_cert(&cert)?;
        let ee = webpki::EndEntityCert::try_from(&cert)?;
        ee.verify_for_usage(&[webpki::ring::ED25519], &[anchor], &[], at, usage, None, None)
            .map(drop)
    }

    fn unix_in(days: i64) -> UnixTime {
        let secs = OffsetDateTime::now_utc().unix_timestamp() + days * 86_400;
        UnixTime::since_unix_epoch(Duration::from_secs(secs as u64))
    }

    #[test]
    fn client_certificate_carries_the_api_key_identity() {
        let key = ApiKey::parse(VECTORS[0].0).unwrap();
        let (cert, pkcs8) = client_certificate(&key).unwrap();
        // The server's one rule gives an API key's certificate the API key's identity.
        let presented = crate::auth::ClientCert::from_chain(&[&cert]);
        assert_eq!(presented.identity(), Some(&key.identity()));
        assert_eq!(pkcs8.as_slice(), key.pkcs8_v1_der().as_slice());
        // CN = identity.
        let cn = key.identity();
        assert!(cert.windows(64).any(|w| w == cn.as_str().as_bytes()));
        // Self-signed, Ed25519, clientAuth, valid now and for 90 days, not after.
        verify_self_signed(&cert, unix_in(0), webpki::KeyUsage::client_auth()).unwrap();
        verify_self_signed(&cert, unix_in(89), webpki::KeyUsage::client_auth()).unwrap();
        assert!(verify_self_signed(&cert, unix_in(91), webpki::KeyUsage::client_auth()).is_err());
        assert!(verify_self_signed(&cert, unix_in(-1), webpki::KeyUsage::client_auth()).is_err());
        assert!(verify_self_signed(&cert, unix_in(0), webpki::KeyUsage::server_auth()).is_err());
        // basicConstraints (2.5.29.19), critical, empty SEQUENCE = CA false.
        let bc = unhex("0603551d130101ff04023000");
        assert!(cert.windows(bc.len()).any(|w| w == bc.as_slice()));
        // keyUsage (2.5.29.15), critical, digitalSignature only.
        let ku = unhex("0603551d0f0101ff040403020780");
        assert!(cert.windows(ku.len()).any(|w| w == ku.as_slice()));
    }

    #[test]
    fn client_certificates_get_random_serials() {
        let key = ApiKey::generate().unwrap();
        let (a, _) = client_certificate(&key).unwrap();
        let (b, _) = client_certificate(&key).unwrap();
        assert_ne!(a, b);
        assert_eq!(Identity::from_cert_der(&a), Identity::from_cert_der(&b));
    }

    #[test]
    fn self_signed_certificate_for_identity_new() {
        let key = ApiKey::generate().unwrap();
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let dns = vec!["kes.example.net".to_string()];
        let pem = self_signed_certificate(
            &key,
            "my-kes",
            &ips,
            &dns,
            Duration::from_secs(720 * 3600),
            true,
        )
        .unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let presented = crate::auth::ClientCert::from_chain(&[&der]);
        assert_eq!(presented.identity(), Some(&key.identity()));
        assert!(der.windows(6).any(|w| w == b"my-kes"));

        verify_self_signed(&der, unix_in(0), webpki::KeyUsage::server_auth()).unwrap();
        verify_self_signed(&der, unix_in(29), webpki::KeyUsage::client_auth()).unwrap();
        assert!(verify_self_signed(&der, unix_in(31), webpki::KeyUsage::server_auth()).is_err());

        let ee = webpki::EndEntityCert::try_from(&der).unwrap();
        for name in ["kes.example.net", "127.0.0.1", "::1"] {
            let server = ServerName::try_from(name).unwrap();
            ee.verify_is_valid_for_subject_name(&server).unwrap();
        }
        let other = ServerName::try_from("other.example.net").unwrap();
        assert!(ee.verify_is_valid_for_subject_name(&other).is_err());

        let client_only =
            self_signed_certificate(&key, "c", &[], &[], Duration::from_secs(3600), false).unwrap();
        let der = CertificateDer::from_pem_slice(client_only.as_bytes()).unwrap();
        verify_self_signed(&der, unix_in(0), webpki::KeyUsage::client_auth()).unwrap();
        assert!(verify_self_signed(&der, unix_in(0), webpki::KeyUsage::server_auth()).is_err());
    }

    #[test]
    fn self_signed_certificate_refuses_bad_input() {
        let key = ApiKey::generate().unwrap();
        let bad_dns = vec!["bad\u{e9}name".to_string()];
        assert!(
            self_signed_certificate(&key, "x", &[], &bad_dns, Duration::from_secs(60), true)
                .is_err()
        );
        let forever = Duration::from_secs(u64::MAX);
        assert!(self_signed_certificate(&key, "x", &[], &[], forever, true).is_err());
    }

    #[test]
    fn pkcs8_pem_round_trips() {
        let key = ApiKey::parse(VECTORS[2].0).unwrap();
        let der = key.pkcs8_v1_der();
        let pem = pkcs8_pem(&der);
        assert_eq!(
            pem.as_str(),
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEICQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw\n-----END PRIVATE KEY-----\n"
        );
        let PrivateKeyDer::Pkcs8(back) = PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
        else {
            panic!("not PKCS#8");
        };
        assert_eq!(back.secret_pkcs8_der(), der.as_slice());

        // Longer input wraps at 64 characters.
        let long = pkcs8_pem(&[7u8; 100]);
        let lines: Vec<&str> = long.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3].len(), 8);
    }
}
