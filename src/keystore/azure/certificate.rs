//! The Entra ID client certificate credential: a PEM file with the certificate (and
//! optionally its chain) and the private key, from which each token request gets a freshly
//! signed JWT client assertion (`azure-rest.md` §9, "Certificate credential").
//!
//! Keys: RSA (PKCS#8 or PKCS#1; signed PS256 with `RSA_PSS_SHA256`) and EC P-256 (PKCS#8 or
//! SEC1; signed ES256 with the fixed-width `r‖s` signature that JWS requires). A legacy
//! AES-encrypted PEM key is decrypted with a password; PKCS#8 `ENCRYPTED PRIVATE KEY` and
//! PKCS#12/PFX are refused with the `openssl` command that converts them.
//!
//! Must not: keep key bytes outside `Zeroizing` buffers (the ring key pair is rebuilt per
//! signature from them and dropped at once); put key material, the password or an
//! assertion into `Debug`, an error or a log line.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use zeroize::Zeroizing;

use crate::der::tlv;
use crate::pem::KeyError;

/// Lifetime of an assertion (`exp - nbf`), as MSAL uses.
pub const ASSERTION_LIFETIME_SECS: i64 = 600;
/// A certificate-plus-key PEM file is a few KiB; a chain of a dozen certificates stays far
/// below this.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// The command that turns a PFX into the PEM this credential reads.
pub const PFX_CONVERSION: &str = "openssl pkcs12 -in cert.pfx -nodes -out cert.pem";

const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// How the private key is held and signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA, PKCS#8 DER: PS256.
    RsaPkcs8,
    /// RSA, PKCS#1 DER: PS256.
    RsaPkcs1,
    /// EC P-256, PKCS#8 DER (SEC1 keys are wrapped on load): ES256.
    EcP256,
}

impl KeyKind {
    /// The JWS `alg`.
    pub fn alg(self) -> &'static str {
        match self {
            KeyKind::RsaPkcs8 | KeyKind::RsaPkcs1 => "PS256",
            KeyKind::EcP256 => "ES256",
        }
    }
}

/// A loaded client certificate: chain (leaf first) and private key.
pub struct ClientCertificate {
    path: PathBuf,
    key: Zeroizing<Vec<u8>>,
    kind: KeyKind,
    chain: Vec<Vec<u8>>,
    /// base64url(SHA-256(leaf DER)): the `x5t#S256` header.
    x5t_s256: String,
    /// Upper-case hex SHA-1 of the leaf, as the Azure portal lists certificates.
    sha1_hex: String,
    send_chain: bool,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("thumbprint", &self.sha1_hex)
            .field("send_chain", &self.send_chain)
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    /// Reads and checks `path`: a PEM file with the certificate and its private key.
    pub fn load(
        path: &Path,
        password: Option<&str>,
        send_chain: bool,
    ) -> Result<ClientCertificate, String> {
        use std::io::Read;
        let shown = path.display();
        let f = std::fs::File::open(path)
            .map_err(|e| format!("cannot read client certificate {shown}: {e}"))?;
        let mut pem = Zeroizing::new(Vec::new());
        f.take(MAX_PEM_BYTES + 1)
            .read_to_end(&mut pem)
            .map_err(|e| format!("cannot read client certificate {shown}: {e}"))?;
        if pem.len() as u64 > MAX_PEM_BYTES {
            return Err(format!("client certificate {shown} is larger than {MAX_PEM_BYTES} bytes"));
        }
        Self::from_pem(path, &pem, password, send_chain)
            .map_err(|e| format!("client certificate {shown}: {e}"))
    }

    /// [`ClientCertificate::load`] on bytes already read; `path` is for messages only.
    pub fn from_pem(
        path: &Path,
        pem: &[u8],
        password: Option<&str>,
        send_chain: bool,
    ) -> Result<ClientCertificate, String> {
        let text = match std::str::from_utf8(pem) {
            Ok(t) if t.contains("-----BEGIN ") => t,
            _ => {
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
                let pfx = pem.first() == Some(&0x30)
                    || ext.eq_ignore_ascii_case("pfx")
                    || ext.eq_ignore_ascii_case("p12");
                return Err(if pfx {
                    format!(
                        "looks like PKCS#12/PFX, which is not supported: convert it to a PEM file holding the certificate and its private key with '{PFX_CONVERSION}'"
                    )
                } else {
                    format!(
                        "is not a PEM file (a PKCS#12/PFX file must be converted with '{PFX_CONVERSION}')"
                    )
                });
            }
        };
        let (label, der) = private_key(text.as_bytes(), password)?;
        let (kind, key) = classify_key(&label, der)?;
        let public = public_key(kind, &key)?;

        let mut certs = crate::pem::certificates(pem)?;
        if certs.is_empty() {
            return Err(
                "no CERTIFICATE found: the file must hold the certificate and its private key"
                    .into(),
            );
        }
        // The leaf is the certificate of the key; the others follow in file order.
        let leaf = certs
            .iter()
            .position(|c| spki_public_key(c).is_some_and(|(_, k)| k == public.as_slice()))
            .ok_or("the private key does not belong to any certificate in the file")?;
        let leaf_der = certs.remove(leaf);
        certs.insert(0, leaf_der);
        let x5t_s256 =
            URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &certs[0]));
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &certs[0]);
        let sha1_hex = crate::hex::encode_upper(sha1.as_ref());
        Ok(ClientCertificate {
            path: path.to_path_buf(),
            key,
            kind,
            chain: certs,
            x5t_s256,
            sha1_hex,
            send_chain,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The `x5t#S256` header value.
    pub fn x5t_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// SHA-1 thumbprint in upper-case hex (what the Azure portal shows), for diagnostics.
    pub fn thumbprint(&self) -> &str {
        &self.sha1_hex
    }

    /// DER of the certificates, leaf first.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// A signed client assertion for `client_id` at the token endpoint `audience`, valid
    /// from `now` (Unix seconds) for [`ASSERTION_LIFETIME_SECS`].
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: i64,
    ) -> Result<Zeroizing<String>, String> {
        let mut header = serde_json::json!({
            "alg": self.kind.alg(),
            "typ": "JWT",
            "x5t#S256": self.x5t_s256,
        });
        if self.send_chain {
            header["x5c"] = self.chain.iter().map(|c| STANDARD.encode(c)).collect();
        }
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid_v4()?,
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let mut jwt = Zeroizing::new(String::with_capacity(2048));
        jwt.push_str(&URL_SAFE_NO_PAD.encode(header.to_string()));
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self.sign(jwt.as_bytes())?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(&sig));
        Ok(jwt)
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        let failed = |_| "signing the client assertion failed".to_string();
        match self.kind {
            KeyKind::RsaPkcs8 | KeyKind::RsaPkcs1 => {
                let kp = rsa_key_pair(self.kind, &self.key)?;
                let mut sig = vec![0u8; kp.public().modulus_len()];
                kp.sign(&signature::RSA_PSS_SHA256, &rng, msg, &mut sig).map_err(failed)?;
                Ok(sig)
            }
            KeyKind::EcP256 => {
                let kp = ec_key_pair(&self.key)?;
                Ok(kp.sign(&rng, msg).map_err(failed)?.as_ref().to_vec())
            }
        }
    }
}

/// A random UUID (version 4) for `jti`.
fn uuid_v4() -> Result<String, String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|_| "no randomness for the assertion id")?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::hex::encode(&b);
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

fn rsa_key_pair(kind: KeyKind, der: &[u8]) -> Result<RsaKeyPair, String> {
    let r = if kind == KeyKind::RsaPkcs1 {
        RsaKeyPair::from_der(der)
    } else {
        RsaKeyPair::from_pkcs8(der)
    };
    r.map_err(|e| format!("unusable RSA private key: {e}"))
}

fn ec_key_pair(pkcs8: &[u8]) -> Result<EcdsaKeyPair, String> {
    EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8,
        &SystemRandom::new(),
    )
    .map_err(|e| format!("unusable EC P-256 private key: {e}"))
}

/// The public key as it appears in a certificate's SPKI bit string.
fn public_key(kind: KeyKind, der: &[u8]) -> Result<Vec<u8>, String> {
    Ok(match kind {
        KeyKind::RsaPkcs8 | KeyKind::RsaPkcs1 => {
            rsa_key_pair(kind, der)?.public_key().as_ref().to_vec()
        }
        KeyKind::EcP256 => ec_key_pair(der)?.public_key().as_ref().to_vec(),
    })
}

/// The first private key of the PEM file as (label, DER), by the program's one loader
/// ([`crate::pem::load_private_key`]), with this credential's hints.
fn private_key(pem: &[u8], password: Option<&str>) -> Result<(String, Zeroizing<Vec<u8>>), String> {
    let key =
        crate::pem::load_private_key(pem, password.map(str::as_bytes)).map_err(|e| match e {
            KeyError::PasswordRequired => {
                "the private key is encrypted: set AZURE_CLIENT_CERTIFICATE_PASSWORD".to_string()
            }
            KeyError::Encrypted(e) => format!("cannot decrypt the private key: {e}"),
            KeyError::NotFound => {
                "no private key found: the file must hold the certificate and its private key"
                    .into()
            }
            e => e.to_string(),
        })?;
    let label = crate::pem::key_label(&key);
    Ok((label.to_string(), Zeroizing::new(key.secret_der().to_vec())))
}

/// The key kind and the DER ring reads (SEC1 is wrapped into PKCS#8).
fn classify_key(
    label: &str,
    der: Zeroizing<Vec<u8>>,
) -> Result<(KeyKind, Zeroizing<Vec<u8>>), String> {
    const UNSUPPORTED: &str = "only RSA and EC P-256 private keys are supported";
    match label {
        "RSA PRIVATE KEY" => Ok((KeyKind::RsaPkcs1, der)),
        "EC PRIVATE KEY" => Ok((KeyKind::EcP256, sec1_to_pkcs8(&der))),
        "PRIVATE KEY" => {
            // PrivateKeyInfo: SEQUENCE { INTEGER version, AlgorithmIdentifier, OCTET STRING }.
            let alg = tlv(&der)
                .filter(|(t, _, _)| *t == 0x30)
                .and_then(|(_, body, _)| tlv(body))
                .and_then(|(_, _, rest)| tlv(rest))
                .filter(|(t, _, _)| *t == 0x30)
                .map(|(_, alg, _)| alg)
                .ok_or("malformed PKCS#8 private key")?;
            match algorithm(alg) {
                Some((OID_RSA_ENCRYPTION, _)) => Ok((KeyKind::RsaPkcs8, der)),
                Some((OID_EC_PUBLIC_KEY, Some(OID_P256))) => Ok((KeyKind::EcP256, der)),
                _ => Err(UNSUPPORTED.into()),
            }
        }
        other => Err(format!("unsupported private key type '{other}': {UNSUPPORTED}")),
    }
}

/// (algorithm OID, named-curve parameter OID if any) of an AlgorithmIdentifier's contents.
fn algorithm(alg: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (tag, oid, rest) = tlv(alg)?;
    if tag != 0x06 {
        return None;
    }
    let param = tlv(rest).filter(|(t, _, _)| *t == 0x06).map(|(_, p, _)| p);
    Some((oid, param))
}

/// `(algorithm OID, subjectPublicKey bits)` of a certificate's SPKI.
fn spki_public_key(cert_der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let cert = rustls_pki_types::CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&cert).ok()?;
    let spki = ee.subject_public_key_info();
    let (_, body, _) = tlv(spki.as_ref()).filter(|(t, _, _)| *t == 0x30)?;
    let (_, alg, rest) = tlv(body).filter(|(t, _, _)| *t == 0x30)?;
    let (oid, _) = algorithm(alg)?;
    let (_, bits, _) = tlv(rest).filter(|(t, _, _)| *t == 0x03)?;
    let (unused, key) = bits.split_first()?;
    (*unused == 0).then(|| (oid.to_vec(), key.to_vec()))
}

/// DER length octets.
fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
}

/// Wraps a SEC1 `ECPrivateKey` as a PKCS#8 P-256 `PrivateKeyInfo` (ring reads only that).
fn sec1_to_pkcs8(sec1: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut alg = vec![0x06, OID_EC_PUBLIC_KEY.len() as u8];
    alg.extend_from_slice(OID_EC_PUBLIC_KEY);
    alg.extend_from_slice(&[0x06, OID_P256.len() as u8]);
    alg.extend_from_slice(OID_P256);
    let mut inner = Zeroizing::new(Vec::with_capacity(sec1.len() + 40));
    inner.extend_from_slice(&[0x02, 0x01, 0x00, 0x30]);
    der_len(alg.len(), &mut inner);
    inner.extend_from_slice(&alg);
    inner.push(0x04);
    der_len(sec1.len(), &mut inner);
    inner.extend_from_slice(sec1);
    let mut out = Zeroizing::new(Vec::with_capacity(inner.len() + 4));
    out.push(0x30);
    der_len(inner.len(), &mut out);
    out.extend_from_slice(&inner);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn decode(part: &str) -> Vec<u8> {
        assert!(!part.contains('=') && !part.contains('+') && !part.contains('/'), "{part}");
        URL_SAFE_NO_PAD.decode(part).unwrap()
    }

    fn p256_pem() -> (String, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["kes-client".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (format!("{}{}", cert.pem(), key.serialize_pem()), cert.der().to_vec())
    }

    /// Splits and checks an assertion; returns (header, claims, signed input, signature).
    fn parts(jwt: &str) -> (Value, Value, String, Vec<u8>) {
        let p: Vec<&str> = jwt.split('.').collect();
        assert_eq!(p.len(), 3);
        let header = serde_json::from_slice(&decode(p[0])).unwrap();
        let claims = serde_json::from_slice(&decode(p[1])).unwrap();
        (header, claims, format!("{}.{}", p[0], p[1]), decode(p[2]))
    }

    #[test]
    fn es256_assertion_verifies_and_carries_the_claims() {
        let (pem, der) = p256_pem();
        let c =
            ClientCertificate::from_pem(Path::new("c.pem"), pem.as_bytes(), None, false).unwrap();
        assert_eq!(c.kind(), KeyKind::EcP256);
        let aud = "https://login.example/tid/oauth2/v2.0/token";
        let jwt = c.assertion("cid", aud, 1_700_000_000).unwrap();
        let (h, cl, input, sig) = parts(&jwt);
        assert_eq!(h["alg"], "ES256");
        assert_eq!(h["typ"], "JWT");
        assert_eq!(
            h["x5t#S256"],
            URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &der))
        );
        assert!(h.get("x5c").is_none());
        assert_eq!(cl["aud"], aud);
        assert_eq!((cl["iss"].as_str(), cl["sub"].as_str()), (Some("cid"), Some("cid")));
        assert_eq!(
            (cl["nbf"].as_i64(), cl["iat"].as_i64()),
            (Some(1_700_000_000), Some(1_700_000_000))
        );
        assert_eq!(cl["exp"].as_i64(), Some(1_700_000_600));
        let jti = cl["jti"].as_str().unwrap();
        assert_eq!(jti.len(), 36);
        assert_eq!(&jti[14..15], "4", "UUID v4: {jti}");
        assert!(matches!(&jti[19..20], "8" | "9" | "a" | "b"), "{jti}");
        assert_eq!(sig.len(), 64, "ES256 is fixed-width r||s");
        let (_, spki) = spki_public_key(&der).unwrap();
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &spki)
            .verify(input.as_bytes(), &sig)
            .unwrap();
        // A fresh jti per assertion.
        let (_, cl2, _, _) = parts(&c.assertion("cid", aud, 1_700_000_000).unwrap());
        assert_ne!(cl2["jti"], cl["jti"]);
        assert!(!format!("{c:?}").contains("PRIVATE"));
    }

    /// `openssl req -x509 -newkey rsa:2048` (PKCS#8 key) and the same key as PKCS#1.
    fn openssl_rsa() -> (String, String, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!(
            "kes-cert-unit-{}-{}",
            std::process::id(),
            uuid_v4().unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl CLI");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
            "-subj",
            "/CN=kes-client",
            "-days",
            "2",
        ]);
        run(&["rsa", "-in", "k.pem", "-traditional", "-out", "k1.pem"]);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let (cert, k8, k1) = (read("c.pem"), read("k.pem"), read("k1.pem"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(k8.contains("BEGIN PRIVATE KEY") && k1.contains("BEGIN RSA PRIVATE KEY"));
        let der = STANDARD
            .decode(cert.lines().filter(|l| !l.starts_with("-----")).collect::<String>().as_bytes())
            .unwrap();
        (format!("{cert}{k8}"), format!("{k1}{cert}"), der)
    }

    #[test]
    fn ps256_assertions_from_pkcs8_and_pkcs1_rsa_keys_verify() {
        let (pkcs8, pkcs1, der) = openssl_rsa();
        let (_, spki) = spki_public_key(&der).unwrap();
        for (pem, kind) in [(pkcs8, KeyKind::RsaPkcs8), (pkcs1, KeyKind::RsaPkcs1)] {
            let c = ClientCertificate::from_pem(Path::new("c.pem"), pem.as_bytes(), None, false)
                .unwrap();
            assert_eq!(c.kind(), kind);
            let (h, cl, input, sig) = parts(&c.assertion("cid", "https://a/t", 7).unwrap());
            assert_eq!((h["alg"].as_str(), h["typ"].as_str()), (Some("PS256"), Some("JWT")));
            assert_eq!(h["x5t#S256"].as_str(), Some(c.x5t_s256()));
            assert_eq!(cl["exp"].as_i64(), Some(607));
            assert_eq!(sig.len(), 256);
            signature::UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, &spki)
                .verify(input.as_bytes(), &sig)
                .unwrap();
            // Not PKCS#1 v1.5: the PSS signature must not verify as RS256.
            assert!(
                signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &spki)
                    .verify(input.as_bytes(), &sig)
                    .is_err()
            );
        }
    }

    #[test]
    fn signing_fits_a_small_thread_stack() {
        // Token fetches run on request threads and on the 256 KiB `azure-get` helper
        // (GET_THREAD_STACK); RSA key parsing and signing must fit well inside that.
        let (pkcs8, _, _) = openssl_rsa();
        let c =
            ClientCertificate::from_pem(Path::new("c.pem"), pkcs8.as_bytes(), None, false).unwrap();
        let c = std::sync::Arc::new(c);
        let h = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || c.assertion("cid", "aud", 0).unwrap().len())
            .unwrap();
        assert!(h.join().unwrap() > 300);
    }

    #[test]
    fn chain_is_sent_when_asked_leaf_first() {
        let (pem, der) = p256_pem();
        let (other, other_der) = p256_pem();
        // Another certificate (without its key) before ours: the key picks the leaf.
        let other_cert = other.split("-----BEGIN PRIVATE KEY").next().unwrap();
        let both = format!("{other_cert}{pem}");
        let c =
            ClientCertificate::from_pem(Path::new("c.pem"), both.as_bytes(), None, true).unwrap();
        let (h, _, _, _) = parts(&c.assertion("cid", "aud", 0).unwrap());
        let x5c: Vec<Vec<u8>> = h["x5c"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| STANDARD.decode(v.as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(x5c, vec![der, other_der]);
    }

    #[test]
    fn sec1_keys_are_wrapped_for_ring() {
        let (pem, _) = p256_pem();
        let key =
            rcgen::KeyPair::from_pem(pem.split("-----END CERTIFICATE-----\n").nth(1).unwrap())
                .unwrap();
        // PKCS#8 → the SEC1 ECPrivateKey inside it (the OCTET STRING of PrivateKeyInfo).
        let pkcs8 = key.serialize_der();
        let (_, body, _) = tlv(&pkcs8).unwrap();
        let (_, _, rest) = tlv(body).unwrap();
        let (_, _, rest) = tlv(rest).unwrap();
        let (_, sec1, _) = tlv(rest).unwrap();
        let cert = pem.split("-----BEGIN PRIVATE KEY").next().unwrap();
        let sec1_pem = format!(
            "{cert}-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
            STANDARD.encode(sec1)
        );
        let c = ClientCertificate::from_pem(Path::new("c.pem"), sec1_pem.as_bytes(), None, false)
            .unwrap();
        assert_eq!(c.kind(), KeyKind::EcP256);
        assert_eq!(parts(&c.assertion("c", "a", 0).unwrap()).3.len(), 64);
    }

    #[test]
    fn wrong_files_are_refused_clearly() {
        let p = Path::new("cert.pfx");
        let e = ClientCertificate::from_pem(p, &[0x30, 0x82, 0x01, 0x00], None, false).unwrap_err();
        assert!(e.contains("PKCS#12/PFX") && e.contains(PFX_CONVERSION), "{e}");
        let (pem, _) = p256_pem();
        let cert_only = pem.split("-----BEGIN PRIVATE KEY").next().unwrap();
        let e = ClientCertificate::from_pem(Path::new("c.pem"), cert_only.as_bytes(), None, false)
            .unwrap_err();
        assert!(e.contains("no private key"), "{e}");
        // A key without its certificate.
        let (pem2, _) = p256_pem();
        let key2 = &pem2[pem2.find("-----BEGIN PRIVATE KEY").unwrap()..];
        let e = ClientCertificate::from_pem(
            Path::new("c.pem"),
            format!("{cert_only}{key2}").as_bytes(),
            None,
            false,
        )
        .unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let e = ClientCertificate::from_pem(
            Path::new("c.pem"),
            format!("{cert_only}{}", ed.serialize_pem()).as_bytes(),
            None,
            false,
        )
        .unwrap_err();
        assert!(e.contains("only RSA and EC P-256"), "{e}");
    }

    #[test]
    fn encrypted_keys_need_the_password() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["c".into()]).unwrap().self_signed(&key).unwrap();
        let enc = crate::pem::encrypt_with_iv("PRIVATE KEY", &key.serialize_der(), b"pw", &[7; 16]);
        let pem = format!("{}{}", cert.pem(), enc.as_str());
        let p = Path::new("c.pem");
        let e = ClientCertificate::from_pem(p, pem.as_bytes(), None, false).unwrap_err();
        assert!(e.contains("AZURE_CLIENT_CERTIFICATE_PASSWORD"), "{e}");
        let e = ClientCertificate::from_pem(p, pem.as_bytes(), Some("nope"), false).unwrap_err();
        assert!(e.contains("incorrect password") && !e.contains("nope"), "{e}");
        ClientCertificate::from_pem(p, pem.as_bytes(), Some("pw"), false).unwrap();
    }
}
