//! Who is calling, and may they? Identities (hex SHA-256 of a certificate's SPKI), identities
//! by certificate attributes ([`attr`]), API keys, policies (allow/deny path patterns, deny
//! wins), and the [`Authorized`] proof that handlers require. Spec: `kes-api.md` §5, `kes-config-cli.md` §2 and §3.2, `kes-crypto.md` §7.
//! Must not: know about sockets, TLS sessions or HTTP beyond the request path.

pub mod apikey;
pub mod attr;
pub mod x509;

use attr::{Anchors, AttrIdentity, ChainFacts};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A client identity: 64 lowercase hex characters for certificates; config may also hold
/// placeholders such as `disabled`, which no certificate can ever match. Shared, not
/// copied, when cloned: every authorized request takes the connection's identity.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity(Arc<str>);

impl Identity {
    pub fn new(s: impl Into<String>) -> Identity {
        Identity(Arc::from(s.into()))
    }

    /// Identity of a certificate's DER SubjectPublicKeyInfo.
    pub fn from_spki(spki_der: &[u8]) -> Identity {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
        Identity::new(crate::hex::encode(digest.as_ref()))
    }

    /// SHA-256 over one DER certificate's SPKI, `None` if it does not parse. This is only the
    /// hash: who a client *is* comes from [`ClientCert::from_chain`], which decides which
    /// certificate of a presented chain may be hashed at all.
    pub fn from_cert_der(cert_der: &[u8]) -> Option<Identity> {
        let der = rustls_pki_types::CertificateDer::from(cert_der);
        let cert = webpki::EndEntityCert::try_from(&der).ok()?;
        // rustls-webpki 0.103 returns the whole SPKI SEQUENCE (tag and length included).
        Some(Identity::from_spki(cert.subject_public_key_info().as_ref()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether this looks like a real identity (hex), as the banner shows it.
    pub fn is_hex(&self) -> bool {
        !self.0.is_empty() && self.0.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.0)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who a presented certificate chain identifies (`kes-api.md` §5). Every place that turns
/// certificates into an identity (the server's connections, identify-only routes, the audit
/// record, the CLI's `identity of`) goes through [`ClientCert::from_chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// No usable client certificate: none presented, or the first one is a CA certificate
    /// or does not parse.
    None,
    /// The identity of the first certificate, the one whose key signed the handshake.
    One(Identity),
    /// More than one non-CA certificate.
    TooMany,
}

impl ClientCert {
    /// The identity a chain proves, `chain[0]` being the certificate whose key the TLS
    /// handshake (CertificateVerify, TLS 1.2 and 1.3) proved the client holds.
    ///
    /// Only that first certificate can identify the client. Upstream skips CA certificates and
    /// takes the leaf wherever it sits, so a chain `[own CA:TRUE cert, victim's public cert]`
    /// made its holder the victim; here such a chain has no identity. CA certificates after
    /// the first (intermediates) are allowed and ignored; a second non-CA certificate is
    /// refused as upstream refuses it.
    pub fn from_chain<C: AsRef<[u8]>>(chain: &[C]) -> ClientCert {
        let Some(first) = chain.first() else { return ClientCert::None };
        let first = first.as_ref();
        if chain.iter().filter(|c| !x509::is_ca(c.as_ref())).count() > 1 {
            return ClientCert::TooMany;
        }
        if x509::is_ca(first) {
            return ClientCert::None;
        }
        match Identity::from_cert_der(first) {
            Some(id) => ClientCert::One(id),
            None => ClientCert::None,
        }
    }

    /// The identity, when there is exactly one.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            ClientCert::One(id) => Some(id),
            _ => None,
        }
    }
}

/// Whether one policy pattern matches a decoded URL path (upstream HEAD semantics): a
/// trailing `*` makes a prefix match, anything else must be equal, and `""` never matches.
pub fn pattern_matches(pattern: &str, path: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

/// One named policy: allow and deny patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl Policy {
    /// Deny wins over allow; nothing matching means no.
    pub fn permits(&self, path: &str) -> bool {
        matches!(self.deciding_pattern(path), Some((Effect::Allow, _)))
    }

    /// The pattern that decides `path`: the first matching deny pattern (deny wins), else
    /// the first matching allow pattern, else none (which refuses).
    pub fn deciding_pattern(&self, path: &str) -> Option<(Effect, &str)> {
        if let Some(p) = self.deny.iter().find(|p| pattern_matches(p, path)) {
            return Some((Effect::Deny, p));
        }
        self.allow.iter().find(|p| pattern_matches(p, path)).map(|p| (Effect::Allow, p.as_str()))
    }
}

/// Whether a pattern allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// The rule that decided an authorization: what `kes policy check` and the dry-run route
/// report, and what [`PolicySet::authorize`] acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The admin identity bypasses every policy.
    Admin,
    /// The identity is assigned to no policy.
    NoPolicy,
    /// A pattern of the identity's policy matched. `via` names the attribute identity
    /// (`ca:…/dns:…`) that assigned the policy, `None` for the public-key identity.
    Pattern { policy: String, effect: Effect, pattern: String, via: Option<String> },
    /// No pattern of the identity's policy (of any policy its attributes select) matches.
    NoMatch { policy: String, via: Option<String> },
}

impl Rule {
    pub fn allows(&self) -> bool {
        matches!(self, Rule::Admin | Rule::Pattern { effect: Effect::Allow, .. })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Admin => f.write_str("admin identity (bypasses all policies)"),
            Rule::NoPolicy => f.write_str("no policy for this identity"),
            Rule::Pattern { policy, effect: Effect::Allow, pattern, via } => {
                write!(f, "policy '{policy}' allow pattern '{pattern}'")?;
                write_via(f, via)
            }
            Rule::Pattern { policy, effect: Effect::Deny, pattern, via } => {
                write!(f, "policy '{policy}' deny pattern '{pattern}' (deny wins)")?;
                write_via(f, via)
            }
            Rule::NoMatch { policy, via } => {
                write!(f, "policy '{policy}' has no allow pattern matching the path")?;
                write_via(f, via)
            }
        }
    }
}

/// `, assigned by 'ca:…'` after a rule that an attribute identity selected.
fn write_via(f: &mut fmt::Formatter<'_>, via: &Option<String>) -> fmt::Result {
    match via {
        Some(v) => write!(f, ", assigned by '{v}'"),
        None => Ok(()),
    }
}

/// Policies and their identities, as loaded from config.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub admin: Identity,
    pub policies: BTreeMap<String, Policy>,
    /// identity -> policy name (an identity has at most one policy).
    pub assignments: BTreeMap<Identity, String>,
    /// Attribute identities and their policy, in policy-name order then config order.
    pub attributes: Vec<(AttrIdentity, String)>,
    /// The `tls.ca` anchors attribute identities are verified against: `None` unless
    /// `tls.auth: on` and `tls.ca` is set, and then no attribute identity ever matches.
    pub anchors: Option<Arc<Anchors>>,
}

/// Proof that a request passed the policy check. Only [`PolicySet::authorize`] and
/// [`Authorized::unchecked_for_skip_auth`] make one, so a handler cannot run unchecked by
/// accident.
#[derive(Debug, Clone)]
pub struct Authorized {
    identity: Option<Identity>,
}

impl Authorized {
    /// The caller, when a certificate was presented.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// For routes whose authenticator is "none" or "identify-only" (`/version`,
    /// `/v1/identity/self/describe`, `api.<path>.skip_auth: true`).
    pub fn unchecked_for_skip_auth(identity: Option<Identity>) -> Authorized {
        Authorized { identity }
    }
}

/// Why authorization failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The identity has no policy.
    UnknownIdentity,
    /// The identity's policy does not allow the path (or denies it).
    RejectedByPolicy(String),
}

impl PolicySet {
    /// Admin bypasses policies; otherwise the identity's policy must permit `path`.
    pub fn authorize(
        &self,
        identity: &Identity,
        facts: &ChainFacts,
        path: &str,
    ) -> Result<Authorized, Denied> {
        let rule = self.decide(identity, facts, path);
        if rule.allows() {
            return Ok(Authorized { identity: Some(identity.clone()) });
        }
        Err(match rule {
            Rule::Pattern { policy, .. } | Rule::NoMatch { policy, .. } => {
                Denied::RejectedByPolicy(policy)
            }
            Rule::Admin | Rule::NoPolicy => Denied::UnknownIdentity,
        })
    }

    /// The rule that decides whether `identity` (with what its verified chain proves,
    /// `facts`) may access `path`; the one decision behind [`PolicySet::authorize`] and the
    /// policy dry-run.
    ///
    /// 1. The admin identity (public-key hash only) bypasses every policy.
    /// 2. A public-key identity assigned to a policy: that policy alone decides; attribute
    ///    entries are not consulted (the explicit key is the most specific name).
    /// 3. Otherwise every policy an attribute entry matching `facts` assigns applies as one
    ///    policy: a deny pattern of any of them wins, else an allow pattern of any of them
    ///    allows, else no. Ties are reported in policy-name order.
    /// 4. Nothing matches: no policy for this identity.
    pub fn decide(&self, identity: &Identity, facts: &ChainFacts, path: &str) -> Rule {
        if *identity == self.admin {
            return Rule::Admin;
        }
        let selected = self.selections_of(identity, facts);
        if selected.is_empty() {
            return Rule::NoPolicy;
        }
        let decided: Vec<_> = selected
            .iter()
            .map(|(name, via)| {
                let d = self.policies.get(*name).and_then(|p| p.deciding_pattern(path));
                (*name, via, d)
            })
            .collect();
        let first = |effect: Effect| {
            decided.iter().find_map(|(name, via, d)| match d {
                Some((e, pattern)) if *e == effect => Some(Rule::Pattern {
                    policy: name.to_string(),
                    effect,
                    pattern: pattern.to_string(),
                    via: (*via).clone(),
                }),
                _ => None,
            })
        };
        first(Effect::Deny).or_else(|| first(Effect::Allow)).unwrap_or_else(|| {
            let (name, via) = &selected[0];
            Rule::NoMatch { policy: name.to_string(), via: via.clone() }
        })
    }

    /// The policies a client's attribute entries select, each with the first entry that
    /// selected it; none without verified facts.
    fn matching_attributes(&self, facts: &ChainFacts) -> Vec<(&str, Option<String>)> {
        let mut out: Vec<(&str, Option<String>)> = Vec::new();
        if facts.is_empty() {
            return out;
        }
        for (attr, name) in &self.attributes {
            if attr.matches(facts) && !out.iter().any(|(n, _)| *n == name.as_str()) {
                out.push((name.as_str(), Some(attr.to_string())));
            }
        }
        out
    }

    /// The names of the policies that apply to a client, as [`PolicySet::decide`] selects
    /// them (its public-key policy, else the policies its attributes select).
    pub fn policies_of(&self, identity: &Identity, facts: &ChainFacts) -> Vec<&str> {
        self.selections_of(identity, facts).into_iter().map(|(n, _)| n).collect()
    }

    /// [`PolicySet::policies_of`], each with the attribute entry that selected it (`None`
    /// for a public-key assignment).
    pub fn selections_of(
        &self,
        identity: &Identity,
        facts: &ChainFacts,
    ) -> Vec<(&str, Option<String>)> {
        match self.assignments.get(identity) {
            Some(name) => vec![(name.as_str(), None)],
            None => self.matching_attributes(facts),
        }
    }

    /// What a presented chain (`chain[0]` the client's certificate) proves for attribute
    /// identities: verified against `tls.ca` at `now`, and only computed when some policy
    /// names an attribute identity. Always verified anew (the dry-run).
    pub fn facts_of<C: AsRef<[u8]>>(
        &self,
        chain: &[C],
        now: rustls_pki_types::UnixTime,
    ) -> ChainFacts {
        match &self.anchors {
            Some(anchors) if !self.attributes.is_empty() => anchors.verify(chain, now),
            _ => ChainFacts::default(),
        }
    }

    /// [`PolicySet::facts_of`] for a client connecting now: answered from the anchors'
    /// cache of verified chains when the same chain verified before and is still valid
    /// ([`Anchors::verify_cached`]).
    pub fn facts_of_connection<C: AsRef<[u8]>>(
        &self,
        chain: &[C],
        now: rustls_pki_types::UnixTime,
    ) -> ChainFacts {
        match &self.anchors {
            Some(anchors) if !self.attributes.is_empty() => anchors.verify_cached(chain, now),
            _ => ChainFacts::default(),
        }
    }

    /// What a dry-run of an attribute identity assumes: a client verified through its CA
    /// and carrying its name, when this server verifies chains at all.
    pub fn facts_of_claim(&self, claim: &AttrIdentity) -> ChainFacts {
        match &self.anchors {
            Some(_) => claim.as_facts(),
            None => ChainFacts::default(),
        }
    }

    pub fn is_admin(&self, identity: &Identity) -> bool {
        *identity == self.admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        Policy {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn empty_policy_allows_nothing() {
        let p = policy(&[], &[]);
        assert!(!p.permits("/v1/status"));
        assert!(!p.permits("/v1/key/create/my-key"));
        assert!(!p.permits("/v1/identity/list/a"));
    }

    #[test]
    fn exact_pattern_is_exact() {
        let p = policy(&["/v1/status"], &[]);
        assert!(p.permits("/v1/status"));
        assert!(!p.permits("/v1/status/"));
        assert!(!p.permits("/v1/key/create/my-key"));
        assert!(!p.permits("/v1/identity/list/a"));
    }

    #[test]
    fn spec_vectors_prefix_and_deny_wins() {
        let p = policy(&["/v1/key/create/my*", "/v1/key/create/your*"], &[]);
        assert!(p.permits("/v1/key/create/my-key"));
        assert!(p.permits("/v1/key/create/your-key"));
        assert!(!p.permits("/v1/identity/list/somekey"));
        let p =
            policy(&["/v1/key/create/my*", "/v1/key/create/your*"], &["/v1/key/create/my-key*"]);
        assert!(!p.permits("/v1/key/create/my-key"));
        assert!(!p.permits("/v1/key/create/my-key1"));
        assert!(p.permits("/v1/key/create/my-minio-key"));
        assert!(p.permits("/v1/key/create/your-minio-key"));
    }

    #[test]
    fn star_inside_a_pattern_is_literal_and_empty_never_matches() {
        assert!(!pattern_matches("/v1/key/*/my-key", "/v1/key/create/my-key"));
        assert!(pattern_matches("/v1/key/*/my-key", "/v1/key/*/my-key"));
        assert!(!pattern_matches("", ""));
        assert!(!pattern_matches("", "/v1/status"));
        assert!(pattern_matches("*", "/anything"));
    }

    #[test]
    fn admin_bypasses_and_unknown_is_refused() {
        let mut set = PolicySet { admin: Identity::new("aa"), ..Default::default() };
        set.policies.insert("p".into(), policy(&["/v1/key/*"], &["/v1/key/delete/*"]));
        set.assignments.insert(Identity::new("bb"), "p".into());
        let none = ChainFacts::default();
        assert!(set.authorize(&Identity::new("aa"), &none, "/v1/key/delete/x").is_ok());
        assert!(set.authorize(&Identity::new("bb"), &none, "/v1/key/create/x").is_ok());
        assert_eq!(
            set.authorize(&Identity::new("bb"), &none, "/v1/key/delete/x").unwrap_err(),
            Denied::RejectedByPolicy("p".into())
        );
        assert_eq!(
            set.authorize(&Identity::new("cc"), &none, "/v1/key/create/x").unwrap_err(),
            Denied::UnknownIdentity
        );
    }

    /// The combination rule of [`PolicySet::decide`]: the public-key entry alone when there
    /// is one, else the union of the attribute-selected policies with deny winning.
    #[test]
    fn attribute_policies_combine_with_deny_winning() {
        const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let attr = |s: &str| AttrIdentity::parse(&format!("ca:{H}/{s}")).unwrap();
        let mut set = PolicySet { admin: Identity::new("aa"), ..Default::default() };
        set.policies.insert("a-reader".into(), policy(&["/v1/key/decrypt/*"], &[]));
        set.policies.insert("b-writer".into(), policy(&["/v1/key/*"], &["/v1/key/delete/*"]));
        set.policies.insert("key".into(), policy(&["/v1/status"], &[]));
        set.assignments.insert(Identity::new("bb"), "key".into());
        set.attributes = vec![
            (attr("dns:minio.example.com"), "a-reader".into()),
            (attr("cn:minio"), "b-writer".into()),
        ];
        let mut facts = attr("dns:minio.example.com").as_facts();
        facts.names.cns = vec!["minio".into()];
        let cc = Identity::new("cc");
        let via_dns = Some(format!("ca:{H}/dns:minio.example.com"));
        let via_cn = Some(format!("ca:{H}/cn:minio"));
        // Union: each policy's allow counts...
        let rule = set.decide(&cc, &facts, "/v1/key/decrypt/k");
        assert_eq!(
            rule,
            Rule::Pattern {
                policy: "a-reader".into(),
                effect: Effect::Allow,
                pattern: "/v1/key/decrypt/*".into(),
                via: via_dns.clone()
            }
        );
        assert_eq!(
            rule.to_string(),
            format!(
                "policy 'a-reader' allow pattern '/v1/key/decrypt/*', assigned by 'ca:{H}/dns:minio.example.com'"
            )
        );
        assert!(set.decide(&cc, &facts, "/v1/key/create/k").allows());
        // ...and a deny of any of them wins over an allow of another.
        set.policies.get_mut("a-reader").unwrap().allow.push("/v1/key/delete/*".into());
        assert_eq!(
            set.decide(&cc, &facts, "/v1/key/delete/k"),
            Rule::Pattern {
                policy: "b-writer".into(),
                effect: Effect::Deny,
                pattern: "/v1/key/delete/*".into(),
                via: via_cn.clone()
            }
        );
        assert_eq!(
            set.decide(&cc, &facts, "/v1/status"),
            Rule::NoMatch { policy: "a-reader".into(), via: via_dns }
        );
        assert_eq!(set.policies_of(&cc, &facts), vec!["a-reader", "b-writer"]);
        // A public-key assignment decides alone, whatever the attributes say.
        assert_eq!(
            set.decide(&Identity::new("bb"), &facts, "/v1/key/decrypt/k"),
            Rule::NoMatch { policy: "key".into(), via: None }
        );
        assert!(set.decide(&Identity::new("bb"), &facts, "/v1/status").allows());
        // The admin stays a public-key identity; unverified clients match nothing.
        assert_eq!(set.decide(&Identity::new("aa"), &facts, "/x"), Rule::Admin);
        assert_eq!(set.decide(&cc, &ChainFacts::default(), "/v1/key/decrypt/k"), Rule::NoPolicy);
        // Without anchors a dry-run claim proves nothing either.
        assert!(set.facts_of_claim(&attr("cn:minio")).is_empty());
        assert!(set.facts_of(&[b"x"], rustls_pki_types::UnixTime::now()).is_empty());
    }

    fn cert(ca: bool) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = if ca {
            rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
        } else {
            rcgen::IsCa::ExplicitNoCa
        };
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn only_the_first_certificate_identifies() {
        let (leaf, other, ca) = (cert(false), cert(false), cert(true));
        let id = Identity::from_cert_der(&leaf).unwrap();
        let one = ClientCert::One(id.clone());
        assert_eq!(ClientCert::from_chain(&[&leaf]), one);
        assert_eq!(ClientCert::from_chain(&[&leaf, &ca]), one);
        assert_eq!(ClientCert::from_chain(&[&leaf, &ca, &ca]), one);
        assert_eq!(one.identity(), Some(&id));
        // The attack: an own CA:TRUE certificate first, someone else's public leaf after it.
        assert_eq!(ClientCert::from_chain(&[&ca, &leaf]), ClientCert::None);
        assert_eq!(ClientCert::from_chain(&[&ca, &ca, &leaf]), ClientCert::None);
        assert_eq!(ClientCert::from_chain(&[&ca]), ClientCert::None);
        assert_eq!(ClientCert::from_chain::<&[u8]>(&[]), ClientCert::None);
        assert_eq!(ClientCert::from_chain(&[&b"garbage"[..]]), ClientCert::None);
        assert_eq!(ClientCert::None.identity(), None);
        // Two non-CA certificates stay refused as upstream refuses them, in any position.
        assert_eq!(ClientCert::from_chain(&[&leaf, &other]), ClientCert::TooMany);
        assert_eq!(ClientCert::from_chain(&[&ca, &leaf, &other]), ClientCert::TooMany);
        assert_eq!(ClientCert::from_chain(&[&leaf, &ca, &other]), ClientCert::TooMany);
    }
}
