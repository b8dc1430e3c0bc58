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
//!
//! A connection's chain is verified once, when it opens; [`Anchors::verify_cached`]
//! answers a chain these anchors verified before from a bounded table
//! ([`MAX_CACHED_CHAINS`]), within the validity of the certificates of its path. Failures
//! are never remembered, and a reload builds new anchors with an empty table.

use super::x509::{self, Names};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use std::fmt;
use std::sync::Mutex;

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
        write!(f, "{PREFIX}{}/{kind}:{name}", crate::hex::encode(&self.ca))
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

/// Most verified chains one set of [`Anchors`] remembers. Each is a fixed-size record
/// ([`CachedChain`], under 0.3 KiB) in one table allocated with the anchors, so the cache
/// never allocates per connection and its memory is bounded whatever clients present. A
/// KES server's clients are a handful of MinIO deployments and tools, each with one
/// certificate (two during a renewal); 512 covers that many times over. Past it, a new
/// chain takes the slot of an expired one or else of the least recently used one, and a
/// client whose chain is not held pays one verification per connection, as without a cache.
pub const MAX_CACHED_CHAINS: usize = 512;

/// Most CA certificates (intermediates and the anchor) of a verified path a cache entry
/// holds: an issuing intermediate, two more and the root. Real client PKIs are shorter;
/// a longer path is verified on every connection instead of making every entry larger.
pub const MAX_CACHED_PATH: usize = 4;

/// The `tls.ca` certificates attribute identities are verified against, with their
/// hashes. Only `tls.ca`: the system roots the TLS handshake also trusts never vouch for an
/// attribute identity.
///
/// Verifications that succeeded are remembered ([`Anchors::verify_cached`]) for the life of
/// this value: a reload (SIGHUP) builds new anchors, and so a new, empty cache, whatever
/// changed in `tls.ca`.
pub struct Anchors {
    anchors: Vec<TrustAnchor<'static>>,
    /// SHA-256 of each anchor's certificate DER, by index.
    hashes: Vec<[u8; 32]>,
    cache: Mutex<ChainCache>,
}

impl fmt::Debug for Anchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Anchors")
            .field("anchors", &self.anchors.len())
            .field("cache", &self.cache_stats())
            .finish()
    }
}

/// What the verified-chain cache did since its anchors were loaded (`/v1/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Connections whose chain facts came from the cache.
    pub hits: u64,
    /// Connections whose chain was verified (not held, expired, or a different chain).
    pub misses: u64,
    /// Chains held now.
    pub entries: usize,
}

/// One verified chain: what verifying it proved, and until when that holds.
#[derive(Clone, Copy)]
struct CachedChain {
    /// SHA-256 of the client's certificate: one entry per certificate, so a client that
    /// varies the CA certificates it sends after its own replaces its entry, never adds one.
    leaf: [u8; 32],
    /// [`chain_hash`] of everything presented: a hit needs the very same chain.
    chain: [u8; 32],
    /// The latest notBefore and the earliest notAfter of the certificates of the verified
    /// path (client certificate and intermediates; trust anchors carry no validity), Unix
    /// seconds: the result holds only while `now` is within both, as webpki checks.
    not_before: u64,
    not_after: u64,
    cas: [[u8; 32]; MAX_CACHED_PATH],
    n_cas: u8,
    /// [`ChainCache::tick`] at the last use, for least-recently-used replacement.
    used: u64,
}

struct ChainCache {
    /// Allocated once, at [`MAX_CACHED_CHAINS`] capacity.
    entries: Vec<CachedChain>,
    tick: u64,
    hits: u64,
    misses: u64,
}

impl ChainCache {
    fn new() -> ChainCache {
        ChainCache { entries: Vec::with_capacity(MAX_CACHED_CHAINS), tick: 0, hits: 0, misses: 0 }
    }

    /// The CA hashes remembered for exactly this chain, if its validity covers `now`.
    fn lookup(&mut self, leaf: &[u8; 32], chain: &[u8; 32], now: u64) -> Option<Vec<[u8; 32]>> {
        self.tick += 1;
        let tick = self.tick;
        let hit = self.entries.iter_mut().find(|e| {
            e.leaf == *leaf && e.chain == *chain && e.not_before <= now && now <= e.not_after
        });
        match hit {
            Some(e) => {
                e.used = tick;
                self.hits += 1;
                Some(e.cas[..usize::from(e.n_cas)].to_vec())
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Remembers a verified chain: in the slot of its certificate if it has one, else a
    /// free slot, else the slot of an expired entry, else of the least recently used.
    fn insert(&mut self, mut entry: CachedChain, now: u64) {
        self.tick += 1;
        entry.used = self.tick;
        if let Some(e) = self.entries.iter_mut().find(|e| e.leaf == entry.leaf) {
            *e = entry;
        } else if self.entries.len() < MAX_CACHED_CHAINS {
            self.entries.push(entry);
        } else if let Some(e) = self
            .entries
            .iter_mut()
            .min_by_key(|e| (e.not_before <= now && now <= e.not_after, e.used))
        {
            *e = entry;
        }
    }
}

/// SHA-256 over every certificate presented, each preceded by its length, so that no two
/// different chains (cut or joined differently) share a hash.
fn chain_hash<C: AsRef<[u8]>>(chain: &[C]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for c in chain {
        let der = c.as_ref();
        ctx.update(&(der.len() as u64).to_be_bytes());
        ctx.update(der);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
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
        Anchors { anchors, hashes, cache: Mutex::new(ChainCache::new()) }
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Verifies `chain` (leaf first, then intermediates in any order) for client
    /// authentication at `now`, as the TLS handshake does, but against the `tls.ca` anchors
    /// only, and returns what the path proves. `chain[0]` must be the certificate that
    /// identifies the client ([`super::ClientCert::from_chain`]); a chain that does not
    /// verify proves nothing (empty facts). Nothing is remembered: the dry-run uses this.
    pub fn verify<C: AsRef<[u8]>>(&self, chain: &[C], now: UnixTime) -> ChainFacts {
        self.verify_path(chain, now).0
    }

    /// [`Anchors::verify`] for a connection, answered from the cache when these anchors
    /// verified the very same chain before and `now` is still within the validity of every
    /// certificate of its path. Only successes are remembered, each until its earliest
    /// notAfter: a chain that failed is verified again every time, so it is accepted as
    /// soon as it becomes valid, and a remembered one is refused as soon as any
    /// certificate of its path expires.
    pub fn verify_cached<C: AsRef<[u8]>>(&self, chain: &[C], now: UnixTime) -> ChainFacts {
        let Some(leaf) = chain.first() else { return ChainFacts::default() };
        let (leaf_hash, chain_hash) = (sha256(leaf.as_ref()), chain_hash(chain));
        let secs = now.as_secs();
        let cached = self.lock().lookup(&leaf_hash, &chain_hash, secs);
        if let Some(cas) = cached {
            return ChainFacts { cas, names: x509::names(leaf.as_ref()) };
        }
        let (facts, window) = self.verify_path(chain, now);
        if let Some((not_before, not_after)) = window
            && not_before <= secs
            && secs <= not_after
            && facts.cas.len() <= MAX_CACHED_PATH
        {
            let mut entry = CachedChain {
                leaf: leaf_hash,
                chain: chain_hash,
                not_before,
                not_after,
                cas: [[0; 32]; MAX_CACHED_PATH],
                n_cas: facts.cas.len() as u8,
                used: 0,
            };
            entry.cas[..facts.cas.len()].copy_from_slice(&facts.cas);
            self.lock().insert(entry, secs);
        }
        facts
    }

    /// What the cache did so far.
    pub fn cache_stats(&self) -> CacheStats {
        let c = self.lock();
        CacheStats { hits: c.hits, misses: c.misses, entries: c.entries.len() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChainCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The facts a verification proves and, when it succeeded and every certificate of the
    /// path has a readable validity, the window (Unix seconds) within which it holds.
    fn verify_path<C: AsRef<[u8]>>(
        &self,
        chain: &[C],
        now: UnixTime,
    ) -> (ChainFacts, Option<(u64, u64)>) {
        let none = || (ChainFacts::default(), None);
        let Some((leaf, rest)) = chain.split_first() else { return none() };
        let leaf_der = CertificateDer::from(leaf.as_ref());
        let Ok(cert) = webpki::EndEntityCert::try_from(&leaf_der) else {
            return none();
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
            return none();
        };
        let mut window = x509::validity_of(leaf.as_ref());
        let mut cas = Vec::new();
        for c in path.intermediate_certificates() {
            cas.push(sha256(c.der().as_ref()));
            window = match (window, x509::validity_of(c.der().as_ref())) {
                (Some((b, a)), Some((cb, ca))) => Some((b.max(cb), a.min(ca))),
                _ => None,
            };
        }
        if let Some(i) = self.anchors.iter().position(|a| std::ptr::eq(a, path.anchor())) {
            cas.push(self.hashes[i]);
        }
        let window =
            window.and_then(|(b, a)| Some((u64::try_from(b).ok()?, u64::try_from(a).ok()?)));
        (ChainFacts { cas, names: x509::names(leaf.as_ref()) }, window)
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
    crate::hex::encode(&sha256(cert_der))
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

    /// A CA and what it takes to issue under it.
    struct TestCa {
        der: Vec<u8>,
        params: rcgen::CertificateParams,
        key: rcgen::KeyPair,
    }

    fn ca_params(name: &str) -> rcgen::CertificateParams {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p
    }

    fn root(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params(name);
        let der = params.self_signed(&key).unwrap().der().to_vec();
        TestCa { der, params, key }
    }

    /// A client certificate for `dns` under `ca`, valid from `from` to `until` (Unix s).
    fn leaf(ca: &TestCa, dns: &str, from: i64, until: i64) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.subject_alt_names = vec![rcgen::SanType::DnsName(dns.try_into().unwrap())];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(until).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca.params, &ca.key);
        p.signed_by(&key, &issuer).unwrap().der().to_vec()
    }

    fn at(secs: i64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs as u64))
    }

    const T0: i64 = 1_800_000_000;

    #[test]
    fn a_verified_chain_is_remembered_and_gives_the_same_facts() {
        let ca = root("root");
        let anchors = Anchors::new(&[CertificateDer::from(ca.der.clone())]);
        let chain = [leaf(&ca, "minio.example.com", T0 - 10, T0 + 100)];
        let first = anchors.verify_cached(&chain, at(T0));
        assert_eq!(first.cas, vec![sha256(&ca.der)]);
        assert_eq!(first.names.dns, vec!["minio.example.com".to_string()]);
        assert_eq!(anchors.verify_cached(&chain, at(T0 + 50)), first);
        assert_eq!(anchors.cache_stats(), CacheStats { hits: 1, misses: 1, entries: 1 });
        // The dry-run's verification neither reads nor fills the cache.
        assert_eq!(anchors.verify(&chain, at(T0)), first);
        assert_eq!(anchors.cache_stats(), CacheStats { hits: 1, misses: 1, entries: 1 });
    }

    /// Time is checked at every use: a remembered chain is refused once a certificate of
    /// its path expires, and a chain refused as not yet valid is accepted when it becomes
    /// valid (failures are never remembered).
    #[test]
    fn validity_is_checked_at_every_use() {
        let ca = root("root");
        let anchors = Anchors::new(&[CertificateDer::from(ca.der.clone())]);
        let chain = [leaf(&ca, "minio.example.com", T0 - 10, T0 + 100)];
        assert!(!anchors.verify_cached(&chain, at(T0)).is_empty());
        assert!(!anchors.verify_cached(&chain, at(T0 + 100)).is_empty());
        assert_eq!(anchors.cache_stats().hits, 1);
        assert!(anchors.verify_cached(&chain, at(T0 + 101)).is_empty(), "expired but cached");
        assert_eq!(anchors.cache_stats(), CacheStats { hits: 1, misses: 2, entries: 1 });
        // A clock set back before notBefore: refused as well.
        assert!(anchors.verify_cached(&chain, at(T0 - 11)).is_empty());

        let later = [leaf(&ca, "minio.example.com", T0 + 1000, T0 + 2000)];
        assert!(anchors.verify_cached(&later, at(T0)).is_empty());
        assert!(anchors.verify_cached(&later, at(T0)).is_empty());
        assert_eq!(anchors.cache_stats().entries, 1, "a failure was remembered");
        assert!(!anchors.verify_cached(&later, at(T0 + 1000)).is_empty());
        assert_eq!(anchors.cache_stats(), CacheStats { hits: 1, misses: 6, entries: 2 });
    }

    /// An intermediate expiring before the client's certificate ends the entry's life.
    #[test]
    fn the_earliest_not_after_of_the_path_bounds_an_entry() {
        let ca = root("root");
        let anchors = Anchors::new(&[CertificateDer::from(ca.der.clone())]);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = ca_params("issuing");
        p.not_before = time::OffsetDateTime::from_unix_timestamp(T0 - 100).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(T0 + 50).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca.params, &ca.key);
        let der = p.signed_by(&key, &issuer).unwrap().der().to_vec();
        let inter = TestCa { der, params: p, key };
        let chain = [leaf(&inter, "minio.example.com", T0 - 10, T0 + 1000), inter.der.clone()];
        let facts = anchors.verify_cached(&chain, at(T0));
        assert_eq!(facts.cas, vec![sha256(&inter.der), sha256(&ca.der)]);
        assert_eq!(anchors.verify_cached(&chain, at(T0 + 50)), facts);
        assert!(anchors.verify_cached(&chain, at(T0 + 51)).is_empty());
        assert_eq!(anchors.cache_stats(), CacheStats { hits: 1, misses: 2, entries: 1 });
    }

    /// The same client certificate presented with another issuer certificate (the same
    /// issuing key cross-signed by a root that is not trusted) is not a hit: the key covers
    /// the whole chain, and the forged path does not verify.
    #[test]
    fn the_same_leaf_with_another_issuer_is_not_a_hit() {
        let (trusted, other) = (root("root A"), root("root B"));
        let anchors = Anchors::new(&[CertificateDer::from(trusted.der.clone())]);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params("issuing");
        let by = |ca: &TestCa| {
            let issuer = rcgen::Issuer::from_params(&ca.params, &ca.key);
            params.signed_by(&key, &issuer).unwrap().der().to_vec()
        };
        let (good, cross) = (by(&trusted), by(&other));
        let inter = TestCa { der: good.clone(), params: params.clone(), key };
        let client = leaf(&inter, "minio.example.com", T0 - 10, T0 + 100);
        let facts = anchors.verify_cached(&[client.clone(), good.clone()], at(T0));
        assert_eq!(facts.cas, vec![sha256(&good), sha256(&trusted.der)]);
        assert!(anchors.verify_cached(&[client.clone(), cross.clone()], at(T0)).is_empty());
        assert!(anchors.verify_cached(std::slice::from_ref(&client), at(T0)).is_empty());
        assert_eq!(anchors.cache_stats(), CacheStats { hits: 0, misses: 3, entries: 1 });
        // Where both roots are trusted, each chain proves its own path.
        let both = Anchors::new(&[
            CertificateDer::from(trusted.der.clone()),
            CertificateDer::from(other.der.clone()),
        ]);
        let a = both.verify_cached(&[client.clone(), good.clone()], at(T0));
        let b = both.verify_cached(&[client.clone(), cross.clone()], at(T0));
        assert_eq!(b.cas, vec![sha256(&cross), sha256(&other.der)]);
        assert_ne!(a.cas, b.cas);
        assert_eq!(both.verify_cached(&[client, cross], at(T0)), b);
        assert_eq!(both.cache_stats(), CacheStats { hits: 1, misses: 2, entries: 1 });
    }

    fn entry(leaf: u8, chain: u8, not_after: u64) -> CachedChain {
        CachedChain {
            leaf: [leaf; 32],
            chain: [chain; 32],
            not_before: 0,
            not_after,
            cas: [[9; 32]; MAX_CACHED_PATH],
            n_cas: 1,
            used: 0,
        }
    }

    /// The attacker: one certificate presented with ever different extra CA certificates
    /// keeps one entry; many certificates fill the table and no more, evicting expired
    /// entries first and then the least recently used.
    #[test]
    fn the_cache_is_bounded_whatever_is_presented() {
        let mut c = ChainCache::new();
        for junk in 0..=255u8 {
            c.insert(entry(1, junk, 100), 10);
        }
        assert_eq!(c.entries.len(), 1);
        assert!(c.lookup(&[1; 32], &[255; 32], 10).is_some());
        assert!(c.lookup(&[1; 32], &[0; 32], 10).is_none());

        let mut c = ChainCache::new();
        let ptr = c.entries.as_ptr();
        for i in 0..MAX_CACHED_CHAINS + 100 {
            let mut e = entry(0, 0, if i == 7 { 5 } else { 100 });
            e.leaf[..8].copy_from_slice(&(i as u64).to_be_bytes());
            c.insert(e, 10);
            if i == MAX_CACHED_CHAINS - 1 {
                // Entry 1 is used again: the least recently used is now entry 0.
                let mut one = [0u8; 32];
                one[..8].copy_from_slice(&1u64.to_be_bytes());
                assert!(c.lookup(&one, &[0; 32], 10).is_some());
            }
            assert!(c.entries.len() <= MAX_CACHED_CHAINS);
        }
        assert_eq!(c.entries.len(), MAX_CACHED_CHAINS);
        assert_eq!(c.entries.as_ptr(), ptr, "the table was reallocated");
        let held = |i: u64| c.entries.iter().any(|e| e.leaf[..8] == i.to_be_bytes());
        // 100 evictions: the expired entry 7 first, then the least recently used ones
        // (0, 2, …, 6, 8, …, 100); entry 1, used again, and every newer one stay.
        assert!(!held(7) && !held(0) && held(1) && !held(2));
        assert!(!held(100) && held(101) && held(MAX_CACHED_CHAINS as u64 + 99));
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
