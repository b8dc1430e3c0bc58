//! TEMPORARY stand-in for the parts of `auth::apikey` the CLI uses, with the same names and
//! signatures as that module's final API, until it lands on main. When it does, `cli/mod.rs`
//! switches `use apikey_shim as apikey` to `crate::auth::apikey` and this file goes away.

use crate::auth::Identity;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use std::net::IpAddr;
use std::time::Duration;
use zeroize::Zeroizing;

const PREFIX: &str = "kes:v1:";
const SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiKeyError;

impl std::fmt::Display for ApiKeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid API key")
    }
}

pub struct ApiKey {
    seed: Zeroizing<[u8; 32]>,
}

impl ApiKey {
    pub fn generate() -> Result<ApiKey, ApiKeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut_slice()).map_err(|_| ApiKeyError)?;
        Ok(ApiKey { seed })
    }

    pub fn parse(s: &str) -> Result<ApiKey, ApiKeyError> {
        let text = s.strip_prefix(PREFIX).unwrap_or(s);
        let clean: Zeroizing<String> =
            Zeroizing::new(text.chars().filter(|c| *c != '\r' && *c != '\n').collect());
        let raw = Zeroizing::new(STANDARD.decode(clean.as_bytes()).map_err(|_| ApiKeyError)?);
        match raw.split_first() {
            Some((0, seed)) if seed.len() == 32 => {
                let mut key = ApiKey { seed: Zeroizing::new([0u8; 32]) };
                key.seed.copy_from_slice(seed);
                Ok(key)
            }
            _ => Err(ApiKeyError),
        }
    }

    pub fn to_string_secret(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; 33]);
        raw[1..].copy_from_slice(self.seed.as_slice());
        Zeroizing::new(format!("{PREFIX}{}", STANDARD.encode(raw.as_slice())))
    }

    fn public_key(&self) -> Vec<u8> {
        Ed25519KeyPair::from_seed_unchecked(self.seed.as_slice())
            .map(|p| p.public_key().as_ref().to_vec())
            .unwrap_or_default()
    }

    pub fn identity(&self) -> Identity {
        let mut spki = SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&self.public_key());
        Identity::from_spki(&spki)
    }

    pub fn pkcs8_v1_der(&self) -> Zeroizing<Vec<u8>> {
        let mut der = Zeroizing::new(PKCS8_V1_PREFIX.to_vec());
        der.extend_from_slice(self.seed.as_slice());
        der
    }

    pub fn from_pkcs8_der(der: &[u8]) -> Option<ApiKey> {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).ok()?;
        let at = der.windows(4).position(|w| w == [0x04, 0x22, 0x04, 0x20])? + 4;
        let seed: [u8; 32] = der.get(at..at + 32)?.try_into().ok()?;
        Some(ApiKey { seed: Zeroizing::new(seed) })
    }
}

fn signer(key: &ApiKey) -> Result<rcgen::KeyPair, String> {
    let der = key.pkcs8_v1_der();
    rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_slice()),
        &rcgen::PKCS_ED25519,
    )
    .map_err(|e| e.to_string())
}

fn serial() -> Result<rcgen::SerialNumber, String> {
    let mut s = [0u8; 16];
    getrandom::getrandom(&mut s).map_err(|e| e.to_string())?;
    Ok(rcgen::SerialNumber::from_slice(&s))
}

pub fn client_certificate(key: &ApiKey) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), String> {
    let now = time::OffsetDateTime::now_utc();
    let mut p = rcgen::CertificateParams::default();
    p.serial_number = Some(serial()?);
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, key.identity().as_str());
    p.not_before = now;
    p.not_after = now + time::Duration::days(90);
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = p.self_signed(&signer(key)?).map_err(|e| e.to_string())?;
    Ok((cert.der().to_vec(), key.pkcs8_v1_der()))
}

pub fn self_signed_certificate(
    key: &ApiKey,
    common_name: &str,
    ips: &[IpAddr],
    dns: &[String],
    validity: Duration,
    server_and_client_auth: bool,
) -> Result<String, String> {
    let now = time::OffsetDateTime::now_utc();
    let not_after = time::Duration::try_from(validity)
        .ok()
        .and_then(|v| now.checked_add(v))
        .ok_or_else(|| "certificate validity is too long".to_string())?;
    let mut p = rcgen::CertificateParams::default();
    p.serial_number = Some(serial()?);
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    p.not_before = now;
    p.not_after = not_after;
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = if server_and_client_auth {
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth]
    } else {
        vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth]
    };
    for ip in ips {
        p.subject_alt_names.push(rcgen::SanType::IpAddress(*ip));
    }
    for name in dns {
        let n = name.clone().try_into().map_err(|e| format!("invalid DNS name '{name}': {e}"))?;
        p.subject_alt_names.push(rcgen::SanType::DnsName(n));
    }
    let cert = p.self_signed(&signer(key)?).map_err(|e| e.to_string())?;
    Ok(cert.pem())
}

pub fn pkcs8_pem(der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut pem = Zeroizing::new(String::from("-----BEGIN PRIVATE KEY-----\n"));
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}
