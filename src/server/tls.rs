//! rustls server configuration with the ring provider only: TLS 1.2 and 1.3, ALPN
//! `http/1.1`, the server certificate from PEM, and KES's client-certificate policy
//! (`kes-api.md` §1, §5; `kes-config-cli.md` §3.1).
//!
//! By default KES *requires any* client certificate and does not check its chain: the
//! identity is the hash of its public key. Possession of the private key is still proven by
//! the handshake signature, which the verifier in [`danger`] delegates to rustls.

use crate::auth::x509;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// The ring provider, the one crypto provider of the program.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The cipher suites a Go server prefers on a machine with AES hardware (upstream is one;
/// `kes-api.md` §1: Go's default suites), best first: AES-128-GCM, then AES-256-GCM, then
/// ChaCha20-Poly1305, in TLS 1.3 and, with ECDSA before RSA keys, in TLS 1.2.
const GO_SERVER_PREFERENCE: [rustls::CipherSuite; 9] = {
    use rustls::CipherSuite as S;
    [
        S::TLS13_AES_128_GCM_SHA256,
        S::TLS13_AES_256_GCM_SHA384,
        S::TLS13_CHACHA20_POLY1305_SHA256,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
};

/// The ring provider with its suites in [`GO_SERVER_PREFERENCE`] order, for the server,
/// which picks by its own order as a Go server does. rustls follows the client's order
/// otherwise, and a client that lists AES-256-GCM first (rustls, OpenSSL) then paid for a
/// SHA-384 key schedule and transcript on every handshake, which Go would not have chosen:
/// SHA-512 has no hardware help where SHA-256 has (SHA-NI), and it was 8% of the server's
/// CPU per new connection. Go clients (MinIO, kms-go) list AES-128-GCM first anyway.
/// Unlike Go, a client that lists ChaCha20 first (one without AES hardware) still gets
/// AES-128-GCM here, as it would from an OpenSSL server told to prefer its own order.
fn server_provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    let rank = |s: &rustls::SupportedCipherSuite| {
        GO_SERVER_PREFERENCE.iter().position(|g| *g == s.suite()).unwrap_or(usize::MAX)
    };
    p.cipher_suites.sort_by_key(rank);
    Arc::new(p)
}

/// How clients must authenticate at the TLS layer.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// Default: any certificate, chain not checked; `optional` when a route skips auth;
    /// `enforce` (`tls.client_validity: enforce`) refuses certificates with a flaw.
    AnyCertificate { optional: bool, enforce: bool },
    /// `tls.auth: on`: chains verified against these roots.
    Verify { roots: Vec<CertificateDer<'static>>, optional: bool },
}

/// A certificate chain and key loaded from PEM.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Loads `tls.cert` and `tls.key`, refusing what upstream refuses with a message that says
/// what to do.
pub fn load_identity(cert: &Path, key: &Path, password: Option<&str>) -> Result<Identity, String> {
    let cert_pem = std::fs::read(cert)
        .map_err(|e| format!("tls.cert: cannot read certificate '{}': {e}", cert.display()))?;
    let chain = parse_certificates(&cert_pem)
        .map_err(|e| format!("tls.cert: '{}': {e}", cert.display()))?;
    let key_pem = std::fs::read(key)
        .map_err(|e| format!("tls.key: cannot read private key '{}': {e}", key.display()))?;
    let key_der = parse_private_key(&key_pem, password)
        .map_err(|e| format!("tls.key: '{}': {e}", key.display()))?;
    check_server_certificate(&chain[0])
        .map_err(|e| format!("tls.cert: '{}': {e}", cert.display()))?;
    let signer = provider()
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| format!("tls.key: '{}': unsupported private key: {e}", key.display()))?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signer);
    if certified.keys_match().is_err() {
        return Err(format!(
            "tls.key: the private key '{}' does not belong to the certificate '{}'",
            key.display(),
            cert.display()
        ));
    }
    Ok(Identity { chain, key: key_der })
}

/// Every CERTIFICATE block of a PEM file; anything else in it is an error (as upstream).
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("PRIVATE KEY-----") {
        return Err("the certificate file contains a private key".into());
    }
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        chain.push(item.map_err(|e| format!("invalid PEM certificate: {e}"))?);
    }
    if chain.is_empty() {
        return Err("no PEM-encoded CERTIFICATE found".into());
    }
    Ok(chain)
}

/// The first private key of a PEM file, by the program's one loader
/// ([`crate::pem::load_private_key`]): PKCS#8, SEC1 or PKCS#1; a legacy encrypted key is
/// decrypted with `password` (`tls.password`); PKCS#8 `ENCRYPTED PRIVATE KEY` is refused,
/// as upstream refuses it.
pub fn parse_private_key(
    pem: &[u8],
    password: Option<&str>,
) -> Result<PrivateKeyDer<'static>, String> {
    crate::pem::load_private_key(pem, password.map(str::as_bytes)).map_err(|e| e.to_string())
}

/// A server certificate must name at least one DNS name or IP address.
pub fn check_server_certificate(cert: &CertificateDer<'_>) -> Result<(), String> {
    webpki::EndEntityCert::try_from(cert).map_err(|e| format!("invalid certificate: {e:?}"))?;
    let (dns, ip) = x509::san_counts(cert.as_ref());
    if dns + ip == 0 {
        return Err("certificate does not contain any DNS or IP address as SAN".into());
    }
    Ok(())
}

/// Reads `tls.ca`: a PEM file, or every file of a directory (not recursive).
pub fn load_roots(ca: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut roots = Vec::new();
    // The first system bundle Go would read (`tls.auth: on` also trusts the system's CAs).
    for path in crate::goroots::CERT_FILES {
        if let Ok(pem) = std::fs::read(path) {
            roots.extend(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
            break;
        }
    }
    if let Some(ca) = ca {
        roots.extend(load_ca(ca)?);
    }
    Ok(roots)
}

/// The certificates of `tls.ca` alone: a PEM file, or every file of a directory (not
/// recursive). The trust anchors of attribute identities ([`crate::auth::attr`]).
pub fn load_ca(ca: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut roots = Vec::new();
    let files: Vec<std::path::PathBuf> = if ca.is_dir() {
        let mut v: Vec<_> = std::fs::read_dir(ca)
            .map_err(|e| format!("tls.ca: cannot read '{}': {e}", ca.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    } else {
        vec![ca.to_path_buf()]
    };
    for f in files {
        let pem =
            std::fs::read(&f).map_err(|e| format!("tls.ca: cannot read '{}': {e}", f.display()))?;
        roots.extend(
            parse_certificates(&pem).map_err(|e| format!("tls.ca: '{}': {e}", f.display()))?,
        );
    }
    Ok(roots)
}

/// The server configuration for one identity and client-auth mode.
pub fn server_config(identity: Identity, auth: &ClientAuth) -> Result<Arc<ServerConfig>, String> {
    let provider = server_provider();
    let verifier: Arc<dyn ClientCertVerifier> = match auth {
        ClientAuth::AnyCertificate { optional, enforce } => {
            Arc::new(danger::AnyClientCertificate::new(provider.clone(), !optional, *enforce))
        }
        ClientAuth::Verify { roots, optional } => {
            let mut store = rustls::RootCertStore::empty();
            for r in roots {
                let _ = store.add(r.clone());
            }
            if store.is_empty() {
                return Err("tls.ca: no trusted CA certificate to verify clients with".into());
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone());
            let builder = if *optional { builder.allow_unauthenticated() } else { builder };
            builder.build().map_err(|e| format!("tls.ca: {e}"))?
        }
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("tls: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)
        .map_err(|e| format!("tls: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    config.max_early_data_size = 0;
    // No session resumption: every connection proves possession of its key with a full
    // handshake, as MinIO's and kms-go's clients do anyway (they keep no session cache).
    // rustls's default server-side cache held the client's certificate chain for 256
    // sessions, refilled by every handshake an attacker completes; its entries, replaced
    // at random, were scattered over the whole heap and kept glibc from ever giving back
    // the memory of a burst of connections (locked pages cannot be discarded).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Verifiers that skip checks. Named so, as rustls names its own.
pub mod danger {
    use crate::auth::x509::{self, Flaw};
    use rustls::client::danger::HandshakeSignatureValid;
    use rustls::crypto::CryptoProvider;
    use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
    use rustls::{
        CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
    };
    use rustls_pki_types::{CertificateDer, UnixTime};
    use std::sync::Arc;

    /// Accepts any client certificate without checking its chain, as KES does by default.
    /// The handshake signature is still verified, so the client proves it holds the key of
    /// the certificate whose public key becomes its identity. With `enforce`, a first
    /// certificate with a [`Flaw`] is refused with the matching TLS alert.
    #[derive(Debug)]
    pub struct AnyClientCertificate {
        provider: Arc<CryptoProvider>,
        mandatory: bool,
        enforce: bool,
    }

    impl AnyClientCertificate {
        pub fn new(provider: Arc<CryptoProvider>, mandatory: bool, enforce: bool) -> Self {
            AnyClientCertificate { provider, mandatory, enforce }
        }
    }

    /// The rustls error (and so the alert the client reads) for a flaw.
    fn refusal(flaw: Flaw) -> Error {
        Error::InvalidCertificate(match flaw {
            Flaw::NotYetValid => CertificateError::NotValidYet,
            Flaw::Expired => CertificateError::Expired,
            Flaw::NotForClientAuth => CertificateError::InvalidPurpose,
            Flaw::BadSelfSignature => CertificateError::BadSignature,
        })
    }

    impl ClientCertVerifier for AnyClientCertificate {
        fn offer_client_auth(&self) -> bool {
            true
        }

        fn client_auth_mandatory(&self) -> bool {
            self.mandatory
        }

        fn root_hint_subjects(&self) -> &[DistinguishedName] {
            &[]
        }

        fn verify_client_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            now: UnixTime,
        ) -> Result<ClientCertVerified, Error> {
            if self.enforce {
                let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
                if let Some(&flaw) = x509::flaws(end_entity.as_ref(), now).first() {
                    return Err(refusal(flaw));
                }
            }
            Ok(ClientCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// A self-signed ECDSA P-256 server certificate for `--dev`: IP SANs of loopback and the
/// given addresses plus `localhost`, valid 90 days.
pub fn dev_identity(ips: &[std::net::IpAddr]) -> Result<(Identity, String), String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    let mut sans =
        vec![rcgen::SanType::DnsName("localhost".try_into().map_err(|e| format!("{e}"))?)];
    for ip in ips {
        sans.push(rcgen::SanType::IpAddress(*ip));
    }
    params.subject_alt_names = sans;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(90);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let pem = cert.pem();
    let der = cert.der().clone();
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?;
    Ok((Identity { chain: vec![der], key: key_der }, pem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::legacy_pem;
    use crate::pem::private_key_der;

    #[test]
    fn certificates_without_san_are_refused() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::default().self_signed(&key).unwrap();
        assert_eq!(
            check_server_certificate(cert.der()).unwrap_err(),
            "certificate does not contain any DNS or IP address as SAN"
        );
        let (id, pem) = dev_identity(&["127.0.0.1".parse().unwrap()]).unwrap();
        assert!(check_server_certificate(&id.chain[0]).is_ok());
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn key_parsing_errors_say_what_to_do() {
        assert_eq!(
            parse_private_key(b"nothing", None).unwrap_err(),
            "no PEM-encoded private key found"
        );
        let enc = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        for password in [None, Some("")] {
            assert_eq!(
                parse_private_key(enc, password).unwrap_err(),
                "private key is encrypted: password required"
            );
        }
        assert_eq!(
            parse_private_key(enc, Some("pw")).unwrap_err(),
            "private key is encrypted: incorrect IV size in the DEK-Info header"
        );
        let des = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: DES-EDE3-CBC,0011223344556677\n\nAAAAAAAAAAA=\n-----END RSA PRIVATE KEY-----\n";
        let e = parse_private_key(des, Some("pw")).unwrap_err();
        assert!(e.starts_with("private key is encrypted: unsupported cipher DES-EDE3-CBC"), "{e}");
        let p8 =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        for password in [None, Some("pw")] {
            let e = parse_private_key(p8, password).unwrap_err();
            assert!(e.contains("PKCS#8 encrypted private keys"), "{e}");
        }
        assert_eq!(parse_certificates(b"").unwrap_err(), "no PEM-encoded CERTIFICATE found");
    }

    /// A key encrypted by `kes identity new --encrypt` (PKCS#8) and by `openssl ec` (SEC1)
    /// decrypts with the password and loads as a TLS identity; a wrong one says so.
    #[test]
    fn encrypted_keys_decrypt_with_the_password() {
        let (id, _) = dev_identity(&["127.0.0.1".parse().unwrap()]).unwrap();
        let PrivateKeyDer::Pkcs8(pkcs8) = &id.key else { panic!("rcgen writes PKCS#8") };
        let pem = legacy_pem::encrypt("PRIVATE KEY", pkcs8.secret_pkcs8_der(), b"pw").unwrap();
        let key = parse_private_key(pem.as_bytes(), Some("pw")).unwrap();
        assert_eq!(key.secret_der(), pkcs8.secret_pkcs8_der());
        assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
        assert!(provider().key_provider.load_private_key(key).is_ok());
        assert_eq!(
            parse_private_key(pem.as_bytes(), Some("wrong")).unwrap_err(),
            "private key is encrypted: incorrect password"
        );
        assert_eq!(
            parse_private_key(pem.as_bytes(), None).unwrap_err(),
            "private key is encrypted: password required"
        );

        let sec1 = [0x30, 0x03, 0x02, 0x01, 0x01];
        let pem = legacy_pem::encrypt("EC PRIVATE KEY", &sec1, b"pw").unwrap();
        assert!(matches!(
            parse_private_key(pem.as_bytes(), Some("pw")),
            Ok(PrivateKeyDer::Sec1(_))
        ));
        assert_eq!(
            private_key_der("DSA PRIVATE KEY", &sec1).unwrap_err(),
            "unsupported private key type 'DSA PRIVATE KEY'"
        );
    }
}
