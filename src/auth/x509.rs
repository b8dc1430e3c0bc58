//! The two facts about a certificate that webpki does not expose and KES needs: whether it
//! is a CA (BasicConstraints cA: a CA certificate never identifies a client,
//! [`super::ClientCert::from_chain`], `kes-api.md` §5) and which subject alternative names it carries (a server certificate
//! without a DNS or IP SAN is refused, `kes-config-cli.md` §1.3 step 12).
//!
//! Built on the minimal DER walker in [`crate::der`].

use crate::der::tlv;

const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

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

    #[test]
    fn ca_flag_is_read() {
        assert!(is_ca(&cert(true, vec![])));
        assert!(!is_ca(&cert(false, vec![])));
        assert!(!is_ca(b"garbage"));
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
