//! Identities by certificate attributes (our extension, issue 15): a policy may name a client
//! by the CA that issued its certificate plus a name the certificate carries, so that a
//! renewal with a new key keeps its policy. The syntax, one of:
//!
//! ```text
//! ca:<64 lowercase hex: SHA-256 of the CA certificate's DER>/dns:<DNS SAN>
//! ca:<…>/uri:<URI SAN>
//! ca:<…>/cn:<subject common name>
//! ```
//!
//! Such an entry matches only a client whose chain the server verified against `tls.ca`
//! (`tls.auth: on`): the CA hash must name a certificate of the verified path above the leaf
//! (the issuing intermediate, a higher intermediate, or the `tls.ca` trust anchor), and the
//! leaf must carry the name (DNS names compare ASCII case-insensitively; URIs and CNs
//! exactly). Without verification ([`Anchors`] absent) nothing ever matches. How the
//! policies of several matching entries combine is [`super::PolicySet::decide`]'s rule.

use super::x509::{self, Names};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use std::fmt;

/// What every attribute identity starts with.
pub const PREFIX: &str = "ca:";

/// Longest attribute identity in a policy (and in a dry-run): a 64-hex CA hash, a kind
/// and a DNS name of at most 253 bytes fit with room to spare; longer is a typo.
pub const MAX_LEN: usize = 512;

/// Longest DNS name (RFC 1035, without the trailing dot).
pub const MAX_DNS_LEN: usize = 253;

/// Longest common name: X.520's upper bound (ub-common-name, RFC 5280 appendix A).
pub const MAX_CN_CHARS: usize = 64;

/// The name part of an attribute identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// A DNS SAN, stored lowercase.
    Dns(String),
    /// A URI SAN, exact.
    Uri(String),
    /// A subject common name, exact.
    Cn(String),
}

/// A parsed `ca:<hash>/<kind>:<name>` policy entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttrIdentity {
    /// SHA-256 of the CA certificate's DER.
    pub ca: [u8; 32],
    pub subject: Subject,
}

impl AttrIdentity {
    /// Whether `s` is meant as an attribute identity (and must then parse).
    pub fn is_attribute(s: &str) -> bool {
        s.starts_with(PREFIX)
    }

    /// Parses an entry; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<AttrIdentity, String> {
        const FORMS: &str = "expected ca:<sha256 hex of the CA certificate>/dns:<name>, \
                             /uri:<uri> or /cn:<name>";
        if s.len() > MAX_LEN {
            return Err(format!("longer than {MAX_LEN} bytes"));
        }
        let rest = s.strip_prefix(PREFIX).ok_or(FORMS)?;
        let (hash, subject) = rest.split_once('/').ok_or(FORMS)?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the CA hash must be 64 hex characters (SHA-256 of the CA certificate's \
                        DER, as 'kes identity of --ca <file>' prints it)"
                .into());
        }
        if hash.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("the CA hash must be lowercase hex".into());
        }
        let mut ca = [0u8; 32];
        for (i, byte) in ca.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hash[2 * i..2 * i + 2], 16).map_err(|_| FORMS)?;
        }
        let (kind, name) = subject.split_once(':').ok_or(FORMS)?;
        let subject = match kind {
            "dns" => Subject::Dns(dns_name(name)?),
            "uri" => {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err("the URI must be non-empty printable ASCII without spaces".into());
                }
                Subject::Uri(name.to_string())
            }
            "cn" => {
                let chars = name.chars().count();
                if chars == 0 || chars > MAX_CN_CHARS || name.chars().any(char::is_control) {
                    return Err(format!(
                        "the common name must be 1 to {MAX_CN_CHARS} characters without \
                         control characters"
                    ));
                }
                Subject::Cn(name.to_string())
            }
            other => return Err(format!("unknown name kind '{other}': {FORMS}")),
        };
        Ok(AttrIdentity { ca, subject })
    }

    /// Whether a verified client carries this CA and name.
    pub fn matches(&self, facts: &ChainFacts) -> bool {
        if !facts.cas.contains(&self.ca) {
            return false;
        }
        match &self.subject {
            Subject::Dns(d) => facts.names.dns.iter().any(|n| n == d),
            Subject::Uri(u) => facts.names.uris.iter().any(|n| n == u),
            Subject::Cn(c) => facts.names.cns.iter().any(|n| n == c),
        }
    }

    /// What a dry-run of this entry assumes: a client verified through this CA, carrying
    /// this name.
    pub fn as_facts(&self) -> ChainFacts {
        let mut names = Names::default();
        match &self.subject {
            Subject::Dns(d) => names.dns.push(d.clone()),
            Subject::Uri(u) => names.uris.push(u.clone()),
            Subject::Cn(c) => names.cns.push(c.clone()),
        }
        ChainFacts { cas: vec![self.ca], names }
    }
}

/// The canonical text: the form policies, logs and the dry-run show.
impl fmt::Display for AttrIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, name) = match &self.subject {
            Subject::Dns(n) => ("dns", n),
            Subject::Uri(n) => ("uri", n),
            Subject::Cn(n) => ("cn", n),
        };
        write!(f, "{PREFIX}{}/{kind}:{name}", super::hex(&self.ca))
    }
}

/// A DNS name as an entry may hold it: LDH labels separated by dots, lowercased. Wildcards
/// are refused: names compare exactly, so `*.example.com` would only ever match a
/// certificate carrying that literal SAN.
fn dns_name(name: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "invalid DNS name '{name}': letters, digits, '-' and '.' only, at most \
             {MAX_DNS_LEN} bytes, no wildcards"
        )
    };
    if name.is_empty()
        || name.len() > MAX_DNS_LEN
        || name.split('.').any(|l| l.is_empty() || l.len() > 63)
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(bad());
    }
    Ok(name.to_ascii_lowercase())
}

/// What the server verified about a client's certificate chain: the SHA-256 of every
/// certificate of the verified path above the leaf, and the leaf's names. Empty when the
/// chain was not verified against `tls.ca`, so no attribute identity can match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainFacts {
    pub cas: Vec<[u8; 32]>,
    pub names: Names,
}

impl ChainFacts {
    pub fn is_empty(&self) -> bool {
        self.cas.is_empty()
    }
}

/// The `tls.ca` certificates attribute identities are verified against, with their
/// hashes. Only `tls.ca`: the system roots the TLS handshake also trusts never vouch for an
/// attribute identity.
#[derive(Debug, Clone)]
pub struct Anchors {
    anchors: Vec<TrustAnchor<'static>>,
    /// SHA-256 of each anchor's certificate DER, by index.
    hashes: Vec<[u8; 32]>,
}

impl Anchors {
    /// The anchors among `certs` (certificates that do not parse are left out).
    pub fn new(certs: &[CertificateDer<'_>]) -> Anchors {
        let (mut anchors, mut hashes) = (Vec::new(), Vec::new());
        for c in certs {
            if let Ok(a) = webpki::anchor_from_trusted_cert(c) {
                anchors.push(a.to_owned());
                hashes.push(sha256(c.as_ref()));
            }
        }
        Anchors { anchors, hashes }
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Verifies `chain` (leaf first, then intermediates in any order) for client
    /// authentication at `now`, as the TLS handshake does, but against the `tls.ca` anchors
    /// only, and returns what the path proves. `chain[0]` must be the certificate that
    /// identifies the client ([`super::ClientCert::from_chain`]); a chain that does not
    /// verify proves nothing (empty facts).
    pub fn verify<C: AsRef<[u8]>>(&self, chain: &[C], now: UnixTime) -> ChainFacts {
        let Some((leaf, rest)) = chain.split_first() else { return ChainFacts::default() };
        let leaf_der = CertificateDer::from(leaf.as_ref());
        let Ok(cert) = webpki::EndEntityCert::try_from(&leaf_der) else {
            return ChainFacts::default();
        };
        let intermediates: Vec<CertificateDer<'_>> =
            rest.iter().map(|c| CertificateDer::from(c.as_ref())).collect();
        let Ok(path) = cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        ) else {
            return ChainFacts::default();
        };
        let mut cas: Vec<[u8; 32]> =
            path.intermediate_certificates().map(|c| sha256(c.der().as_ref())).collect();
        if let Some(i) = self.anchors.iter().position(|a| std::ptr::eq(a, path.anchor())) {
            cas.push(self.hashes[i]);
        }
        ChainFacts { cas, names: x509::names(leaf.as_ref()) }
    }
}

fn sha256(der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
    out
}

/// The hash an attribute identity names a CA certificate by: lowercase hex SHA-256 of its
/// DER (what `kes identity of --ca` prints).
pub fn ca_hash(cert_der: &[u8]) -> String {
    super::hex(&sha256(cert_der))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn entries_parse_and_print_canonically() {
        let a = AttrIdentity::parse(&format!("ca:{H}/dns:MinIO.example.com")).unwrap();
        assert_eq!(a.subject, Subject::Dns("minio.example.com".into()));
        assert_eq!(a.to_string(), format!("ca:{H}/dns:minio.example.com"));
        let u = AttrIdentity::parse(&format!("ca:{H}/uri:spiffe://x/ns/a/sa/b")).unwrap();
        assert_eq!(u.subject, Subject::Uri("spiffe://x/ns/a/sa/b".into()));
        let c = AttrIdentity::parse(&format!("ca:{H}/cn:KES Client")).unwrap();
        assert_eq!(c.to_string(), format!("ca:{H}/cn:KES Client"));
        assert_eq!(c.ca[0], 0x01);
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        let e = |s: String| AttrIdentity::parse(&s).unwrap_err();
        assert!(e(format!("ca:{H}")).starts_with("expected ca:<sha256 hex"));
        assert!(e(format!("ca:{}/dns:a", &H[1..])).starts_with("the CA hash must be 64 hex"));
        assert_eq!(
            e(format!("ca:{}/dns:a", H.to_uppercase())),
            "the CA hash must be lowercase hex"
        );
        assert!(e(format!("ca:{H}/ip:127.0.0.1")).starts_with("unknown name kind 'ip'"));
        assert!(e(format!("ca:{H}/dns:*.example.com")).contains("no wildcards"));
        assert!(e(format!("ca:{H}/dns:a..b")).starts_with("invalid DNS name 'a..b'"));
        assert!(e(format!("ca:{H}/dns:")).starts_with("invalid DNS name ''"));
        assert!(e(format!("ca:{H}/uri:a b")).starts_with("the URI must be"));
        assert!(e(format!("ca:{H}/cn:")).starts_with("the common name must be 1 to 64"));
        assert!(e(format!("ca:{H}/cn:{}", "x".repeat(65))).starts_with("the common name"));
        assert!(e(format!("ca:{H}/cn:a\nb")).starts_with("the common name"));
        assert_eq!(e(format!("ca:{H}/uri:{}", "u".repeat(600))), "longer than 512 bytes");
    }

    #[test]
    fn matching_needs_the_ca_and_the_name() {
        let a = AttrIdentity::parse(&format!("ca:{H}/dns:minio.example.com")).unwrap();
        let mut facts = a.as_facts();
        assert!(a.matches(&facts));
        facts.names.dns = vec!["other.example.com".into()];
        assert!(!a.matches(&facts));
        let mut facts = a.as_facts();
        facts.cas = vec![[7; 32]];
        assert!(!a.matches(&facts));
        assert!(!a.matches(&ChainFacts::default()));
        // The same name as a CN or URI is another identity.
        let cn = AttrIdentity::parse(&format!("ca:{H}/cn:minio.example.com")).unwrap();
        assert!(!cn.matches(&a.as_facts()));
    }
}
