//! API keys (`kes:v1:` + base64(0x00 ‖ Ed25519 seed)), their identities, and the
//! self-signed Ed25519 client certificates made from them (`kes-config-cli.md` §4.2,
//! `kes-crypto.md` §7 and §8.5). (Minimal version until the full module lands.)

use super::Identity;
use base64::Engine as _;
use zeroize::Zeroizing;

pub struct ApiKey {
    seed: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({})", self.identity())
    }
}

impl ApiKey {
    pub fn generate() -> Result<ApiKey, crate::crypto::RngError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        crate::crypto::fill_random(seed.as_mut())?;
        Ok(ApiKey { seed })
    }

    pub fn to_string_secret(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; 33]);
        raw[1..].copy_from_slice(self.seed.as_ref());
        Zeroizing::new(format!(
            "kes:v1:{}",
            base64::engine::general_purpose::STANDARD.encode(raw.as_ref())
        ))
    }

    pub fn identity(&self) -> Identity {
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(self.seed.as_ref())
            .expect("32-byte seed");
        use ring::signature::KeyPair as _;
        let mut spki = hex_decode("302a300506032b6570032100");
        spki.extend_from_slice(pair.public_key().as_ref());
        Identity::from_spki(&spki)
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0)).collect()
}
