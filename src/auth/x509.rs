//! The facts about a certificate that webpki does not expose and KES needs: whether it is a
//! CA (BasicConstraints cA: a CA certificate never identifies a client,
//! [`super::ClientCert::from_chain`], `kes-api.md` §5), which subject alternative names it
//! carries (a server certificate without a DNS or IP SAN is refused, `kes-config-cli.md`
//! §1.3 step 12), and the [`Flaw`]s of a client certificate that upstream ignores (validity
//! period, extended key usage, self-signature) for the log, the metric and
//! `tls.client_validity: enforce`.
//!
//! Built on the minimal DER walker in [`crate::der`].

use crate::der::tlv;

const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
const OID_EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
/// anyExtendedKeyUsage, 2.5.29.37.0.
const OID_ANY_PURPOSE: &[u8] = &[0x55, 0x1d, 0x25, 0x00];
/// id-kp-clientAuth, 1.3.6.1.5.5.7.3.2.
const OID_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const OID_RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];

/// Something wrong with a client certificate that the default mode accepts (as upstream
/// does, identities being key hashes) and `tls.client_validity: enforce` refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flaw {
    /// Now is before notBefore.
    NotYetValid,
    /// Now is after notAfter.
    Expired,
    /// An extended key usage extension without clientAuth (or any purpose), e.g. a server
    /// certificate.
    NotForClientAuth,
    /// Self-issued (issuer = subject) but its signature does not verify with its own key.
    BadSelfSignature,
}

impl Flaw {
    pub const ALL: [Flaw; 4] =
        [Flaw::NotYetValid, Flaw::Expired, Flaw::NotForClientAuth, Flaw::BadSelfSignature];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Flaw::NotYetValid => "not_yet_valid",
            Flaw::Expired => "expired",
            Flaw::NotForClientAuth => "no_client_auth",
            Flaw::BadSelfSignature => "bad_self_signature",
        }
    }

    /// For people, in the log.
    pub fn describe(self) -> &'static str {
        match self {
            Flaw::NotYetValid => "is not valid yet (notBefore is in the future)",
            Flaw::Expired => "has expired (notAfter is in the past)",
            Flaw::NotForClientAuth => {
                "is not for client authentication (extended key usage without clientAuth)"
            }
            Flaw::BadSelfSignature => "is self-issued but its signature does not verify",
        }
    }
}

/// The flaws of a client certificate at `now` (Unix seconds). A certificate that does not
/// parse has none here: it never gets an identity anyway.
pub fn flaws(cert_der: &[u8], now: i64) -> Vec<Flaw> {
    let mut out = Vec::new();
    let Some(parts) = Parts::of(cert_der) else { return out };
    if let Some((not_before, not_after)) = validity(parts.validity) {
        if now < not_before {
            out.push(Flaw::NotYetValid);
        }
        if now > not_after {
            out.push(Flaw::Expired);
        }
    }
    if !client_auth_allowed(cert_der) {
        out.push(Flaw::NotForClientAuth);
    }
    if parts.issuer == parts.subject && !self_signature_verifies_cached(cert_der, &parts) {
        out.push(Flaw::BadSelfSignature);
    }
    out
}

/// Most certificates remembered as having a good self-signature. Clients reconnect with the
/// same certificate, and a signature check costs about as much as the TLS handshake's own
/// CertificateVerify check; a hash lookup costs a microsecond. When full, the set starts
/// over, so its memory stays bounded whatever clients present.
pub const MAX_VERIFIED_CERTS: usize = 4096;

static VERIFIED: std::sync::Mutex<Option<std::collections::HashSet<[u8; 32]>>> =
    std::sync::Mutex::new(None);

/// [`self_signature_verifies`], remembering certificates (by SHA-256) that verified. Only
/// good results are kept: a certificate with a broken signature is checked every time.
fn self_signature_verifies_cached(cert_der: &[u8], parts: &Parts<'_>) -> bool {
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref());
    let known = |set: &Option<std::collections::HashSet<[u8; 32]>>| {
        set.as_ref().is_some_and(|s| s.contains(&digest))
    };
    if known(&VERIFIED.lock().unwrap_or_else(|e| e.into_inner())) {
        return true;
    }
    if !self_signature_verifies(cert_der, parts) {
        return false;
    }
    let mut guard = VERIFIED.lock().unwrap_or_else(|e| e.into_inner());
    let set = guard.get_or_insert_with(Default::default);
    if set.len() >= MAX_VERIFIED_CERTS {
        set.clear();
    }
    set.insert(digest);
    true
}

/// The pieces of a certificate the flaws are read from.
struct Parts<'a> {
    /// The whole TBSCertificate TLV, as signed.
    tbs: &'a [u8],
    issuer: &'a [u8],
    validity: &'a [u8],
    subject: &'a [u8],
    signature_alg: &'a [u8],
    signature: &'a [u8],
}

impl<'a> Parts<'a> {
    fn of(cert_der: &'a [u8]) -> Option<Parts<'a>> {
        let (0x30, cert, _) = tlv(cert_der)? else { return None };
        let (0x30, tbs_body, after_tbs) = tlv(cert)? else { return None };
        let tbs = &cert[..cert.len() - after_tbs.len()];
        let (0x30, alg, after_alg) = tlv(after_tbs)? else { return None };
        let (0x06, signature_alg, _) = tlv(alg)? else { return None };
        let (0x03, bits, _) = tlv(after_alg)? else { return None };
        let (&0, signature) = bits.split_first()? else { return None };
        let mut rest = tbs_body;
        if rest.first() == Some(&0xa0) {
            rest = tlv(rest)?.2;
        }
        let (0x02, _, rest) = tlv(rest)? else { return None };
        let (0x30, _, rest) = tlv(rest)? else { return None };
        let (0x30, issuer, rest) = tlv(rest)? else { return None };
        let (0x30, validity, rest) = tlv(rest)? else { return None };
        let (0x30, subject, _) = tlv(rest)? else { return None };
        Some(Parts { tbs, issuer, validity, subject, signature_alg, signature })
    }
}

/// A certificate's notBefore and notAfter as Unix seconds; `None` when it does not parse.
pub fn validity_of(cert_der: &[u8]) -> Option<(i64, i64)> {
    validity(Parts::of(cert_der)?.validity)
}

/// notBefore and notAfter of a Validity SEQUENCE body, as Unix seconds.
fn validity(body: &[u8]) -> Option<(i64, i64)> {
    let (tag, not_before, rest) = tlv(body)?;
    let not_before = x509_time(tag, not_before)?;
    let (tag, not_after, _) = tlv(rest)?;
    Some((not_before, x509_time(tag, not_after)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), the
/// only forms RFC 5280 allows, as Unix seconds.
fn x509_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i32> {
        s.iter().try_fold(0i32, |n, &b| b.is_ascii_digit().then(|| n * 10 + i32::from(b - b'0')))
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]).and_then(|v| u8::try_from(v).ok());
    let month = time::Month::try_from(field(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, field(2)?).ok()?;
    let time = time::Time::from_hms(field(4)?, field(6)?, field(8)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, time).assume_utc().unix_timestamp())
}

/// No extended key usage extension, or one naming clientAuth or any purpose.
fn client_auth_allowed(cert_der: &[u8]) -> bool {
    let mut allowed = true;
    let _ = for_each_extension(cert_der, |oid, value| {
        if oid != OID_EXT_KEY_USAGE {
            return;
        }
        allowed = false;
        let Some((0x30, mut purposes, _)) = tlv(value) else { return };
        while let Some((0x06, purpose, rest)) = tlv(purposes) {
            allowed |= purpose == OID_CLIENT_AUTH || purpose == OID_ANY_PURPOSE;
            purposes = rest;
        }
    });
    allowed
}

/// Whether the certificate's signature verifies with its own public key. Signature
/// algorithms outside the common set (RSA-PSS, ...) are given the benefit of the doubt.
fn self_signature_verifies(cert_der: &[u8], parts: &Parts<'_>) -> bool {
    use webpki::ring as alg;
    let candidates: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] =
        match parts.signature_alg {
            OID_ED25519 => &[alg::ED25519],
            OID_ECDSA_SHA256 => &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
            OID_ECDSA_SHA384 => &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
            OID_RSA_SHA256 => &[alg::RSA_PKCS1_2048_8192_SHA256],
            OID_RSA_SHA384 => &[alg::RSA_PKCS1_2048_8192_SHA384],
            OID_RSA_SHA512 => &[alg::RSA_PKCS1_2048_8192_SHA512],
            _ => return true,
        };
    let der = rustls_pki_types::CertificateDer::from(cert_der);
    let Ok(cert) = webpki::EndEntityCert::try_from(&der) else { return false };
    candidates.iter().any(|a| cert.verify_signature(*a, parts.tbs, parts.signature).is_ok())
}

/// Calls `f(oid, value)` for each extension of the certificate.
fn for_each_extension(cert_der: &[u8], mut f: impl FnMut(&[u8], &[u8])) -> Option<()> {
    let (0x30, cert, _) = tlv(cert_der)? else { return None };
    let (0x30, mut tbs, _) = tlv(cert)? else { return None };
    while !tbs.is_empty() {
        let (tag, body, rest) = tlv(tbs)?;
        tbs = rest;
        if tag != 0xa3 {
            continue;
        }
        let (0x30, mut exts, _) = tlv(body)? else { return None };
        while !exts.is_empty() {
            let (0x30, ext, rest) = tlv(exts)? else { return None };
            exts = rest;
            let (0x06, oid, mut ext) = tlv(ext)? else { return None };
            let (tag, mut value, after) = tlv(ext)?;
            if tag == 0x01 {
                ext = after;
                let (0x04, v, _) = tlv(ext)? else { return None };
                value = v;
            } else if tag != 0x04 {
                return None;
            }
            f(oid, value);
        }
    }
    Some(())
}

/// Whether the certificate says BasicConstraints cA = TRUE.
pub fn is_ca(cert_der: &[u8]) -> bool {
    let mut ca = false;
    let _ = for_each_extension(cert_der, |oid, value| {
        if oid == OID_BASIC_CONSTRAINTS
            && let Some((0x30, seq, _)) = tlv(value)
            && let Some((0x01, b, _)) = tlv(seq)
        {
            ca = b.first().is_some_and(|&v| v != 0);
        }
    });
    ca
}

/// The names a certificate carries, as attribute identities match them
/// ([`super::attr`]): DNS and URI subject alternative names and the subject's common names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// dNSName SANs, lowercased (DNS names compare case-insensitively).
    pub dns: Vec<String>,
    /// uniformResourceIdentifier SANs, as written.
    pub uris: Vec<String>,
    /// Every commonName (2.5.4.3) of the subject, as written.
    pub cns: Vec<String>,
}

const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The DNS and URI SANs and the subject CNs of a certificate. Names that are not valid
/// text (non-UTF-8 bytes, a CN in a string type other than UTF8String, PrintableString,
/// IA5String or BMPString) are left out: they can never equal a configured name.
pub fn names(cert_der: &[u8]) -> Names {
    let mut out = Names::default();
    let _ = for_each_extension(cert_der, |oid, value| {
        if oid != OID_SUBJECT_ALT_NAME {
            return;
        }
        let Some((0x30, mut sans, _)) = tlv(value) else { return };
        while let Some((tag, body, rest)) = tlv(sans) {
            match (tag, std::str::from_utf8(body)) {
                (0x82, Ok(dns)) => out.dns.push(dns.to_ascii_lowercase()),
                (0x86, Ok(uri)) => out.uris.push(uri.to_string()),
                _ => {}
            }
            sans = rest;
        }
    });
    if let Some(parts) = Parts::of(cert_der) {
        let mut rdns = parts.subject;
        while let Some((0x31, mut set, rest)) = tlv(rdns) {
            while let Some((0x30, atv, after)) = tlv(set) {
                if let Some((0x06, OID_COMMON_NAME, value)) = tlv(atv)
                    && let Some((tag, text, _)) = tlv(value)
                    && let Some(cn) = directory_string(tag, text)
                {
                    out.cns.push(cn);
                }
                set = after;
            }
            rdns = rest;
        }
    }
    out
}

/// The text of an X.520 DirectoryString (or IA5String) value.
fn directory_string(tag: u8, bytes: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String.
        0x0c | 0x13 | 0x16 => std::str::from_utf8(bytes).ok().map(str::to_string),
        // BMPString: UCS-2, big endian.
        0x1e if bytes.len().is_multiple_of(2) => {
            let units = bytes.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units).collect::<Result<String, _>>().ok()
        }
        _ => None,
    }
}

/// Number of DNS and IP subject alternative names.
pub fn san_counts(cert_der: &[u8]) -> (usize, usize) {
    let (mut dns, mut ip) = (0, 0);
    let _ = for_each_extension(cert_der, |oid, value| {
        if oid != OID_SUBJECT_ALT_NAME {
            return;
        }
        let Some((0x30, mut names, _)) = tlv(value) else { return };
        while let Some((tag, _, rest)) = tlv(names) {
            match tag {
                0x82 => dns += 1,
                0x87 => ip += 1,
                _ => {}
            }
            names = rest;
        }
    });
    (dns, ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(ca: bool, sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        } else {
            params.is_ca = rcgen::IsCa::ExplicitNoCa;
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn client(
        alg: &'static rcgen::SignatureAlgorithm,
        days: (i64, i64),
        eku: Vec<rcgen::ExtendedKeyUsagePurpose>,
    ) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(days.0);
        params.not_after = now + time::Duration::days(days.1);
        params.extended_key_usages = eku;
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn client_certificate_flaws_are_found() {
        use rcgen::ExtendedKeyUsagePurpose as Eku;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for alg in
            [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384]
        {
            let good = client(alg, (-1, 1), vec![Eku::ClientAuth]);
            assert_eq!(flaws(&good, now), vec![]);
            assert_eq!(flaws(&client(alg, (-1, 1), vec![]), now), vec![]);
            assert_eq!(flaws(&client(alg, (-1, 1), vec![Eku::Any]), now), vec![]);
            assert_eq!(flaws(&client(alg, (-3, -1), vec![]), now), vec![Flaw::Expired]);
            assert_eq!(flaws(&client(alg, (7, 9), vec![]), now), vec![Flaw::NotYetValid]);
            assert_eq!(
                flaws(&client(alg, (-1, 1), vec![Eku::ServerAuth]), now),
                vec![Flaw::NotForClientAuth]
            );
            // The last byte of the signature flipped: still parses, no longer verifies, also
            // after the good one was remembered, and every time.
            let mut broken = good.clone();
            *broken.last_mut().unwrap() ^= 1;
            assert_eq!(flaws(&good, now), vec![]);
            for _ in 0..2 {
                assert_eq!(flaws(&broken, now), vec![Flaw::BadSelfSignature], "{alg:?}");
            }
        }
        assert_eq!(flaws(b"garbage", now), vec![]);
    }

    #[test]
    fn x509_times_parse_both_forms() {
        assert_eq!(x509_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(x509_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(x509_time(0x18, b"20500101000000Z"), Some(2_524_608_000));
        assert_eq!(x509_time(0x18, b"99991231235959Z"), Some(253_402_300_799));
        assert_eq!(x509_time(0x17, b"701301000000Z"), None);
        assert_eq!(x509_time(0x17, b"700101000000+"), None);
        assert_eq!(x509_time(0x17, b"70010100000Z"), None);
        assert_eq!(x509_time(0x04, b"700101000000Z"), None);
    }

    #[test]
    fn ca_flag_is_read() {
        assert!(is_ca(&cert(true, vec![])));
        assert!(!is_ca(&cert(false, vec![])));
        assert!(!is_ca(b"garbage"));
    }

    #[test]
    fn names_are_read() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, "KES Client 1");
        params.subject_alt_names = vec![
            rcgen::SanType::DnsName("MinIO.Example.com".try_into().unwrap()),
            rcgen::SanType::URI("spiffe://example.org/ns/minio/sa/default".try_into().unwrap()),
            rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()),
            rcgen::SanType::DnsName("b.example.com".try_into().unwrap()),
        ];
        let der = params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(
            names(&der),
            Names {
                dns: vec!["minio.example.com".into(), "b.example.com".into()],
                uris: vec!["spiffe://example.org/ns/minio/sa/default".into()],
                cns: vec!["KES Client 1".into()],
            }
        );
        assert_eq!(names(b"garbage"), Names::default());
        assert_eq!(directory_string(0x1e, &[0, b'h', 0, b'i']), Some("hi".into()));
        assert_eq!(directory_string(0x1e, &[0, b'h', 0]), None);
        assert_eq!(directory_string(0x14, b"t61"), None);
    }

    #[test]
    fn sans_are_counted() {
        let c = cert(
            false,
            vec![
                rcgen::SanType::DnsName("localhost".try_into().unwrap()),
                rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()),
                rcgen::SanType::IpAddress("::1".parse().unwrap()),
            ],
        );
        assert_eq!(san_counts(&c), (1, 2));
        assert_eq!(san_counts(&cert(false, vec![])), (0, 0));
    }
}
