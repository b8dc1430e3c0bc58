//! Identities by certificate attributes (`ca:<hash>/dns:…`, `/uri:…`, `/cn:…`) against the
//! real binary over real mTLS: a renewed certificate (new key, same name, same CA) keeps
//! its policy; the same name from another CA, a name the CA did not put in the
//! certificate, or any client of a server that does not verify chains against `tls.ca`
//! gets nothing. The dry-run (CLI on the config, CLI against the server, the route) names
//! the attribute entry that decided, and the config refuses malformed entries precisely.

mod common;

use common::{Binary, Client, ClientId, TempDir, kes_in};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// A CA that can issue certificates.
struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn root(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params(name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, issuer: rcgen::Issuer::new(params, key) }
    }

    fn intermediate(&self, name: &str) -> Ca {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params(name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Ca { cert, issuer: rcgen::Issuer::new(params, key) }
    }

    /// A CA:FALSE certificate of `name` under this CA whose key signs as if it were a CA:
    /// what an attacker holding an ordinary client certificate can make.
    fn leaf_as_issuer(&self, name: &str) -> Ca {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = ca_params(name);
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Ca { cert, issuer: rcgen::Issuer::new(params, key) }
    }

    /// `kes identity of --ca`'s hash of this CA.
    fn hash(&self) -> String {
        kes::auth::attr::ca_hash(self.cert.der())
    }

    /// A client certificate with a fresh key, `cn` and `sans`; `chain` is presented after
    /// it (intermediates).
    fn issue(&self, cn: &str, sans: Vec<rcgen::SanType>, chain: &[&Ca]) -> Leaf {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let identity = kes::auth::Identity::from_cert_der(cert.der()).unwrap().to_string();
        let mut pem = cert.pem();
        let mut ders = vec![cert.der().clone()];
        for ca in chain {
            pem.push_str(&ca.cert.pem());
            ders.push(ca.cert.der().clone());
        }
        Leaf {
            chain: ders,
            key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            identity,
            pem,
            key_pem: key.serialize_pem(),
        }
    }
}

fn ca_params(name: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
}

struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    identity: String,
    /// The certificate and the chain after it, as a client's certificate file holds them.
    pem: String,
    key_pem: String,
}

impl Leaf {
    /// As the admin of a server that verifies chains (the admin stays a public-key
    /// identity, but its certificate must still verify against `tls.ca`).
    fn client_id(&self) -> ClientId {
        ClientId {
            cert: self.chain[0].clone(),
            key: self.key.clone_key(),
            identity: self.identity.clone(),
            cert_pem: self.pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

fn dns(name: &str) -> rcgen::SanType {
    rcgen::SanType::DnsName(name.try_into().unwrap())
}

fn uri(u: &str) -> rcgen::SanType {
    rcgen::SanType::URI(u.try_into().unwrap())
}

/// A client presenting `leaf`'s chain.
fn connect(bin: &Binary, leaf: &Leaf) -> Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(bin.server_cert.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(leaf.chain.clone(), leaf.key.clone_key())
        .unwrap();
    Client::with_config(bin.addr, Arc::new(cfg))
}

const DENIED: (u16, &str) = (403, "not authorized: insufficient permissions");

fn status(c: &mut Client, method: &str, path: &str) -> (u16, String) {
    let r = c.request(method, path, None);
    let msg = if r.status == 200 { String::new() } else { r.message() };
    (r.status, msg)
}

/// Two trusted roots (A, B) and an intermediate under A, written into one `tls.ca` file.
struct Pki {
    a: Ca,
    b: Ca,
    inter: Ca,
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let (a, b) = (Ca::root("root A"), Ca::root("root B"));
        let inter = a.intermediate("issuing A1");
        let dir = TempDir::new("attr-pki");
        std::fs::write(dir.join("ca.pem"), format!("{}{}", a.cert.pem(), b.cert.pem())).unwrap();
        Pki { a, b, inter, dir }
    }

    fn ca_file(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    /// The binary with `tls.auth: on`, `tls.ca` = both roots, an admin certified by root B.
    fn verifying_server(&self, policies: &str) -> Binary {
        let admin = self.b.issue("admin", vec![], &[]).client_id();
        Binary::start_as(admin, &format!("  auth: on\n  ca: {}\n", self.ca_file()), policies)
    }

    /// The policies of every test: `minio` by DNS name under root A, `spiffe` by URI under
    /// the intermediate, `batch` by CN under root A (through any intermediate).
    fn policies(&self) -> String {
        format!(
            "policy:\n  minio:\n    allow:\n    - /v1/key/create/app-*\n    - /v1/identity/self/describe\n    identities:\n    - ca:{a}/dns:minio.example.com\n  spiffe:\n    allow:\n    - /v1/key/list/*\n    identities:\n    - ca:{i}/uri:spiffe://example.org/ns/kes/sa/batch\n  batch:\n    allow:\n    - /v1/status\n    deny:\n    - /v1/key/list/secret*\n    identities:\n    - \"ca:{a}/cn:batch job 7\"\n",
            a = self.a.hash(),
            i = self.inter.hash(),
        )
    }
}

#[test]
fn a_renewed_certificate_keeps_its_policy_and_another_ca_does_not() {
    let pki = Pki::new();
    let bin = pki.verifying_server(&pki.policies());

    // The first certificate and its renewal: new key (new public-key identity), same name
    // (in another case: DNS names compare case-insensitively), same CA.
    let first = pki.a.issue("minio", vec![dns("minio.example.com")], &[]);
    let renewed = pki.a.issue("minio", vec![dns("MinIO.Example.COM")], &[]);
    assert_ne!(first.identity, renewed.identity);
    for (leaf, key) in [(&first, "app-1"), (&renewed, "app-2")] {
        let mut c = connect(&bin, leaf);
        assert_eq!(status(&mut c, "PUT", &format!("/v1/key/create/{key}")), (200, "".into()));
        // The policy's other patterns still fence it in.
        assert_eq!(status(&mut c, "PUT", "/v1/key/create/other"), (DENIED.0, DENIED.1.into()));
        // Self-describe keeps the public-key identity and names the policy that applied.
        let d = c.get("/v1/identity/self/describe").json();
        assert_eq!(d["identity"], leaf.identity.as_str());
        assert_eq!(d["policy"], "minio");
        assert_eq!(d["allow"]["/v1/key/create/app-*"], serde_json::json!({}));
        // Ours: which entry selected the policy.
        let entry = format!("ca:{}/dns:minio.example.com", pki.a.hash());
        assert_eq!(d["via"], serde_json::json!([entry]));
    }
    // `kes identity info` with the renewed certificate says the same.
    let (crt, key) = (bin.dir.join("renewed.crt"), bin.dir.join("renewed.key"));
    std::fs::write(&crt, &renewed.pem).unwrap();
    std::fs::write(&key, &renewed.key_pem).unwrap();
    let env = [
        ("KES_SERVER", format!("https://127.0.0.1:{}", bin.addr.port())),
        ("KES_CLIENT_CERT", crt.display().to_string()),
        ("KES_CLIENT_KEY", key.display().to_string()),
        ("SSL_CERT_FILE", bin.dir.join("server.crt").display().to_string()),
    ];
    let (code, out, err) = kes_in(bin.dir.path(), &["identity", "info"], &env);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(
        out.starts_with(&format!(
            "Identity    {}\nPolicy      minio\nVia         ca:{}/dns:minio.example.com\n",
            renewed.identity,
            pki.a.hash()
        )),
        "{out}"
    );
    // A public-key identity's body is upstream's: no `via`.
    let mut admin = bin.client(Some(&bin.admin));
    let pinned = admin.get("/v1/identity/self/describe").json();
    assert_eq!(pinned["admin"], true);
    assert!(pinned.get("via").is_none(), "{pinned}");

    // The same name from the other trusted root, a name root A did not certify, and a
    // certificate carrying the name only as its CN: refused, and nothing created.
    let forged = pki.b.issue("minio", vec![dns("minio.example.com")], &[]);
    let other = pki.a.issue("minio", vec![dns("other.example.com")], &[]);
    let as_cn = pki.a.issue("minio.example.com", vec![], &[]);
    for leaf in [&forged, &other, &as_cn] {
        let mut c = connect(&bin, leaf);
        assert_eq!(status(&mut c, "PUT", "/v1/key/create/app-3"), (DENIED.0, DENIED.1.into()));
    }
    assert_eq!(admin.get("/v1/key/describe/app-1").status, 200);
    assert_eq!(admin.get("/v1/key/describe/app-3").message(), "key does not exist");

    // The audit trail keeps the public-key identity of each request.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !bin.output().contains(&renewed.identity) {
        assert!(std::time::Instant::now() < deadline, "{}", bin.output());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(bin.output().contains(&first.identity));
}

#[test]
fn uri_and_cn_entries_through_an_intermediate_combine_with_deny_winning() {
    let pki = Pki::new();
    let bin = pki.verifying_server(&pki.policies());
    // Issued by the intermediate, presented with it: its URI selects `spiffe` (named by the
    // intermediate's hash) and its CN selects `batch` (named by the root's hash).
    let job = pki.inter.issue(
        "batch job 7",
        vec![uri("spiffe://example.org/ns/kes/sa/batch")],
        &[&pki.inter],
    );
    let mut c = connect(&bin, &job);
    assert_eq!(status(&mut c, "GET", "/v1/status").0, 200);
    assert_eq!(status(&mut c, "GET", "/v1/key/list/*").0, 200);
    // Self-describe names both policies (in name order) and the entry behind each.
    let d = c.get("/v1/identity/self/describe").json();
    assert_eq!(d["policy"], "batch,spiffe");
    assert_eq!(
        d["via"],
        serde_json::json!([
            format!("ca:{}/cn:batch job 7", pki.a.hash()),
            format!("ca:{}/uri:spiffe://example.org/ns/kes/sa/batch", pki.inter.hash())
        ])
    );
    // `spiffe` allows every list, `batch` denies this one: deny wins.
    assert_eq!(status(&mut c, "GET", "/v1/key/list/secret-*"), (DENIED.0, DENIED.1.into()));
    assert_eq!(status(&mut c, "PUT", "/v1/key/create/app-9"), (DENIED.0, DENIED.1.into()));

    // The URI under root A directly (not through the intermediate the entry names) does
    // not select `spiffe`; a CN differing in case is another name.
    let direct = pki.a.issue("Batch Job 7", vec![uri("spiffe://example.org/ns/kes/sa/batch")], &[]);
    let mut c = connect(&bin, &direct);
    assert_eq!(status(&mut c, "GET", "/v1/key/list/*"), (DENIED.0, DENIED.1.into()));
    assert_eq!(status(&mut c, "GET", "/v1/status"), (DENIED.0, DENIED.1.into()));
}

#[test]
fn without_verification_against_tls_ca_nothing_matches() {
    let pki = Pki::new();
    let leaf = pki.a.issue("minio", vec![dns("minio.example.com")], &[]);
    // `tls.ca` set but `tls.auth` off: chains are not verified, so no attribute entry
    // can match; the public-key form still does.
    let policies = format!(
        "{}  pinned:\n    allow: [/v1/status]\n    identities: [{}]\n",
        pki.policies(),
        pki.b.issue("pinned", vec![], &[]).identity
    );
    let bin = Binary::start(&format!("  ca: {}\n", pki.ca_file()), &policies);
    let mut c = connect(&bin, &leaf);
    assert_eq!(status(&mut c, "PUT", "/v1/key/create/app-1"), (DENIED.0, DENIED.1.into()));
    assert_eq!(
        bin.client(Some(&bin.admin)).get("/v1/key/describe/app-1").message(),
        "key does not exist"
    );

    // `--check` says why.
    let config = bin.dir.join("config.yml");
    let (code, out, err) =
        kes_in(bin.dir.path(), &["server", "--check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(
        out.contains(
            "WARNING: policy: 3 attribute identities (ca:…) will never match: they need client \
             chains verified against tls.ca (tls.auth: on and tls.ca set)\n"
        ),
        "{out}"
    );
    assert!(!out.contains("is not a hex identity"), "{out}");
}

#[test]
fn the_dry_run_names_the_attribute_entry_that_decided() {
    let pki = Pki::new();
    let bin = pki.verifying_server(&pki.policies());
    let leaf = pki.a.issue("minio", vec![dns("minio.example.com")], &[]);
    let forged = pki.b.issue("minio", vec![dns("minio.example.com")], &[]);
    let (leaf_file, forged_file) = (bin.dir.join("leaf.crt"), bin.dir.join("forged.crt"));
    std::fs::write(&leaf_file, &leaf.pem).unwrap();
    std::fs::write(&forged_file, &forged.pem).unwrap();
    let (admin_crt, admin_key) = (bin.dir.join("admin.crt"), bin.dir.join("admin.key"));
    std::fs::write(&admin_crt, &bin.admin.cert_pem).unwrap();
    std::fs::write(&admin_key, &bin.admin.key_pem).unwrap();
    let online = [
        ("KES_SERVER", format!("https://127.0.0.1:{}", bin.addr.port())),
        ("KES_CLIENT_CERT", admin_crt.display().to_string()),
        ("KES_CLIENT_KEY", admin_key.display().to_string()),
        ("SSL_CERT_FILE", bin.dir.join("server.crt").display().to_string()),
    ];
    let config = bin.dir.join("config.yml").display().to_string();
    let entry = format!("ca:{}/dns:minio.example.com", pki.a.hash());
    let allowed = format!(
        "allowed: policy 'minio' allow pattern '/v1/key/create/app-*', assigned by '{entry}'\n"
    );
    let claim = format!("ca:{}/dns:MINIO.example.com", pki.a.hash());
    let leaf_path = leaf_file.display().to_string();
    for subject in [leaf_path.as_str(), claim.as_str()] {
        // On the config file, and against the running server (which verifies the chain
        // the CLI sends against its own tls.ca).
        let offline =
            ["policy", "check", "--config", &config, subject, "PUT", "/v1/key/create/app-1"];
        assert_eq!(kes_in(bin.dir.path(), &offline, &[]), (0, allowed.clone(), String::new()));
        let args = ["policy", "check", subject, "PUT", "/v1/key/create/app-1"];
        assert_eq!(kes_in(bin.dir.path(), &args, &online), (0, allowed.clone(), String::new()));
    }
    let forged_path = forged_file.display().to_string();
    let args = ["policy", "check", "--config", &config, &forged_path, "GET", "/v1/status"];
    let denied = "denied: no policy for this identity\n".to_string();
    assert_eq!(kes_in(bin.dir.path(), &args, &[]), (0, denied.clone(), String::new()));
    let args = ["policy", "check", &forged_path, "GET", "/v1/status"];
    assert_eq!(kes_in(bin.dir.path(), &args, &online), (0, denied, String::new()));

    // The route: `via` says which entry selected the policy; a certificate whose identity
    // is not the one given is refused.
    let mut admin = bin.client(Some(&bin.admin));
    let body = serde_json::json!({
        "identity": leaf.identity, "method": "PUT", "path": "/v1/key/create/app-1",
        "certificate": leaf.pem,
    });
    let r = admin.post("/v1/policy/check", &body.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(
        (j["allowed"].as_bool(), j["policy"].as_str(), j["effect"].as_str(), j["via"].as_str()),
        (Some(true), Some("minio"), Some("allow"), Some(entry.as_str()))
    );
    let body = serde_json::json!({
        "identity": forged.identity, "method": "PUT", "path": "/v1/key/create/app-1",
        "certificate": leaf.pem,
    });
    let r = admin.post("/v1/policy/check", &body.to_string());
    assert_eq!(r.status, 400);
    assert_eq!(
        r.message(),
        "invalid policy check: the certificate is not valid PEM or does not have the identity given"
    );
    let body = serde_json::json!({
        "identity": format!("ca:{}/dns:*.example.com", pki.a.hash()), "method": "GET",
        "path": "/v1/status",
    });
    assert_eq!(admin.post("/v1/policy/check", &body.to_string()).status, 400);

    // A config whose tls.ca cannot be read is an error, as it is for the server, not a
    // dry-run that quietly decides without trust anchors.
    let text = std::fs::read_to_string(&config).unwrap();
    let broken = bin.dir.join("broken.yml");
    let missing = bin.dir.join("missing-ca.pem");
    std::fs::write(&broken, text.replace(&pki.ca_file(), &missing.display().to_string())).unwrap();
    let broken = broken.display().to_string();
    let args = ["policy", "check", "--config", &broken, &leaf_path, "PUT", "/v1/key/create/app-1"];
    let (code, out, err) = kes_in(bin.dir.path(), &args, &[]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert_eq!(
        err,
        format!(
            "Error: tls.ca: cannot read '{}': No such file or directory (os error 2)\n",
            missing.display()
        )
    );
}

#[test]
fn kes_identity_of_ca_prints_the_hash_policies_use() {
    let pki = Pki::new();
    let (code, out, err) = kes_in(pki.dir.path(), &["identity", "of", "--ca", "ca.pem"], &[]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(out, format!("{}\n{}\n", pki.a.hash(), pki.b.hash()));
    // sha256sum of the DER, as an operator can check with openssl.
    let digest = ring::digest::digest(&ring::digest::SHA256, pki.a.cert.der());
    assert_eq!(kes::hex::encode(digest.as_ref()), pki.a.hash());
    // The identity forms are unchanged.
    let leaf = pki.a.issue("x", vec![], &[]);
    std::fs::write(pki.dir.join("leaf.crt"), &leaf.pem).unwrap();
    assert_eq!(
        kes_in(pki.dir.path(), &["identity", "of", "leaf.crt"], &[]),
        (0, leaf.identity.clone(), String::new())
    );
}

#[test]
fn malformed_attribute_entries_are_refused_with_the_reason() {
    let dir = TempDir::new("attr-cfg");
    common::server_cert(dir.path());
    let h = "ab".repeat(32);
    let check = |admin: &str, identities: &str| {
        std::fs::write(
            dir.join("config.yml"),
            format!(
                "admin:\n  identity: {admin}\ntls:\n  key: server.key\n  cert: server.crt\npolicy:\n  p:\n    allow: [/v1/status]\n    identities: {identities}\n  q:\n    allow: [/v1/status]\n    identities: [\"ca:{h}/dns:taken.example.com\"]\nkeystore:\n  fs:\n    path: keys\n"
            ),
        )
        .unwrap();
        let (code, _, err) =
            kes_in(dir.path(), &["server", "--check", "--config", "config.yml"], &[]);
        assert_eq!(code, 1, "{err}");
        err.trim().to_string()
    };
    let prefix = "Error: config.yml: policy.p.identities: invalid attribute identity";
    assert_eq!(
        check("disabled", &format!("[\"ca:{}/dns:a.example.com\"]", &h[2..])),
        format!(
            "{prefix} 'ca:{}/dns:a.example.com': the CA hash must be 64 hex characters (SHA-256 of the CA certificate's DER, as 'kes identity of --ca <file>' prints it)",
            &h[2..]
        )
    );
    assert_eq!(
        check("disabled", &format!("[\"ca:{}/dns:a.example.com\"]", h.to_uppercase())),
        format!(
            "{prefix} 'ca:{}/dns:a.example.com': the CA hash must be lowercase hex",
            h.to_uppercase()
        )
    );
    assert_eq!(
        check("disabled", &format!("[\"ca:{h}/dns:*.example.com\"]")),
        format!(
            "{prefix} 'ca:{h}/dns:*.example.com': invalid DNS name '*.example.com': letters, digits, '-' and '.' only, at most 253 bytes, no wildcards"
        )
    );
    assert_eq!(
        check("disabled", &format!("[\"ca:{h}/email:a@example.com\"]")),
        format!(
            "{prefix} 'ca:{h}/email:a@example.com': unknown name kind 'email': expected ca:<sha256 hex of the CA certificate>/dns:<name>, /uri:<uri> or /cn:<name>"
        )
    );
    // The same entry in two policies, spelt in another case: one identity, two policies.
    assert_eq!(
        check("disabled", &format!("[\"ca:{h}/dns:TAKEN.example.com\"]")),
        format!(
            "Error: config.yml: policy.q.identities: cannot assign policy 'q' to 'ca:{h}/dns:taken.example.com': identity already has a policy"
        )
    );
    // The admin stays a public-key identity.
    assert_eq!(
        check(&format!("\"ca:{h}/cn:root\""), "[]"),
        format!(
            "Error: config.yml: admin.identity: 'ca:{h}/cn:root' is an attribute identity; the admin identity must be a public-key hash (kes identity of <certificate>)"
        )
    );
}

/// The attacker holds an ordinary client certificate from the trusted CA (for its own
/// name) and wants the policy of `minio.example.com`.
#[test]
fn forged_chains_prove_nothing() {
    let pki = Pki::new();
    let bin = pki.verifying_server(&pki.policies());
    let own = pki.a.leaf_as_issuer("attacker.example.com");
    let victim = pki.a.issue("minio", vec![dns("minio.example.com")], &[]);

    // 1. It signs a certificate for the victim's name with its own key and presents it
    //    with its real certificate as the "intermediate": no verified path, refused at
    //    the handshake (in TLS 1.3 the refusal arrives with the first read).
    let forged = own.issue("minio", vec![dns("minio.example.com")], &[&own]);
    let mut c = connect(&bin, &forged);
    let sent = c.send_raw(b"PUT /v1/key/create/app-1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(sent.is_err() || c.read_reply().is_err(), "a forged chain was served");

    // 2. It presents its own real certificate followed by the victim's public one: the
    //    names come from the first certificate only, and two client certificates are
    //    refused as upstream refuses them.
    let own_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.subject_alt_names = vec![dns("attacker.example.com")];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let own_cert = p.signed_by(&own_key, &pki.a.issuer).unwrap();
    let mixed = Leaf {
        chain: vec![own_cert.der().clone(), victim.chain[0].clone()],
        key: PrivateKeyDer::try_from(own_key.serialize_der()).unwrap(),
        identity: String::new(),
        pem: String::new(),
        key_pem: String::new(),
    };
    let mut c = connect(&bin, &mixed);
    let r = c.request("PUT", "/v1/key/create/app-1", None);
    assert_eq!(
        (r.status, r.message()),
        (400, "tls: received more than one client certificate".to_string())
    );
    let mut alone = mixed;
    alone.chain.truncate(1);
    let mut c = connect(&bin, &alone);
    assert_eq!(status(&mut c, "PUT", "/v1/key/create/app-1"), (DENIED.0, DENIED.1.into()));
    assert_eq!(
        bin.client(Some(&bin.admin)).get("/v1/key/describe/app-1").message(),
        "key does not exist"
    );
}

/// The `kes_tls_client_chain_cache_*` figures of `/v1/metrics`: (hits, misses, entries).
fn chain_cache(admin: &mut Client) -> (u64, u64, u64) {
    let text = admin.get("/v1/metrics").text();
    let figure = |name: &str| -> u64 {
        let prefix = format!("kes_tls_client_chain_cache_{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix}in {text}"))
            .parse()
            .unwrap()
    };
    (figure("hits"), figure("misses"), figure("entries"))
}

/// Repeated connections with the same chain are answered from the cache of verified
/// chains; the same client certificate with another issuer certificate (its issuing key
/// cross-signed by the other trusted root) is verified anew and proves its own path, not
/// the cached one; a reload with another `tls.ca` starts an empty cache.
#[test]
fn verified_chains_are_cached_per_chain_until_a_reload() {
    let pki = Pki::new();
    let bin = pki.verifying_server(&pki.policies());
    // The admin's own connection is counted too (its chain is verified like any other).
    let mut admin = bin.client(Some(&bin.admin));
    assert_eq!(chain_cache(&mut admin), (0, 1, 1));

    let job = pki.inter.issue(
        "batch job 7",
        vec![uri("spiffe://example.org/ns/kes/sa/batch")],
        &[&pki.inter],
    );
    for _ in 0..5 {
        let mut c = connect(&bin, &job);
        assert_eq!(status(&mut c, "GET", "/v1/key/list/*"), (200, String::new()));
        // Requests on a kept-alive connection verify nothing.
        assert_eq!(status(&mut c, "GET", "/v1/status"), (200, String::new()));
    }
    assert_eq!(chain_cache(&mut admin), (4, 2, 2));

    // The issuing key, cross-signed by root B: the same client certificate now chains to
    // root B through a certificate whose hash the `spiffe` entry does not name.
    let cross_cert =
        ca_params("issuing A1").signed_by(pki.inter.issuer.key(), &pki.b.issuer).unwrap();
    let mut cross = job.client_id();
    let chain = vec![job.chain[0].clone(), cross_cert.der().clone()];
    cross.cert = chain[0].clone();
    let crossed = Leaf {
        chain,
        key: job.key.clone_key(),
        identity: job.identity.clone(),
        pem: String::new(),
        key_pem: String::new(),
    };
    for _ in 0..2 {
        let mut c = connect(&bin, &crossed);
        assert_eq!(status(&mut c, "GET", "/v1/key/list/*"), (DENIED.0, DENIED.1.into()));
        // Its CN still selects `batch`, named by root A: not through root B.
        assert_eq!(status(&mut c, "GET", "/v1/status"), (DENIED.0, DENIED.1.into()));
    }
    // The crossed chain was verified once, then remembered as what it proves; it took the
    // job's slot (one entry per client certificate), so the job's chain is verified again.
    let mut c = connect(&bin, &job);
    assert_eq!(status(&mut c, "GET", "/v1/key/list/*"), (200, String::new()));
    assert_eq!(chain_cache(&mut admin), (5, 4, 2));
    drop(c);

    // Reload with another tls.ca (root B and a new root C, no longer root A).
    let c_root = Ca::root("root C");
    std::fs::write(pki.dir.join("ca.pem"), format!("{}{}", pki.b.cert.pem(), c_root.cert.pem()))
        .unwrap();
    let signal =
        std::process::Command::new("kill").args(["-HUP", &bin.pid().to_string()]).status().unwrap();
    assert!(signal.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !bin.output().contains("Reloading configuration after SIGHUP signal completed") {
        assert!(std::time::Instant::now() < deadline, "{}", bin.output());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut admin = bin.client(Some(&bin.admin));
    assert_eq!(chain_cache(&mut admin), (0, 1, 1));
    // Root A is no longer trusted: the job's chain is refused at the handshake.
    let mut c = connect(&bin, &job);
    let sent = c.send_raw(b"GET /v1/key/list/* HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(sent.is_err() || c.read_reply().is_err(), "a chain under root A was served");
    // A client of the new root C gets its policy through the new anchors.
    let policies = format!(
        "{}  c:\n    allow: [/v1/status]\n    identities: [\"ca:{}/dns:c.example.com\"]\n",
        pki.policies(),
        c_root.hash()
    );
    let text = std::fs::read_to_string(bin.dir.join("config.yml")).unwrap();
    std::fs::write(bin.dir.join("config.yml"), text.replace(&pki.policies(), &policies)).unwrap();
    let before =
        bin.output().matches("Reloading configuration after SIGHUP signal completed").count();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &bin.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
    while bin.output().matches("Reloading configuration after SIGHUP signal completed").count()
        == before
    {
        assert!(std::time::Instant::now() < deadline, "{}", bin.output());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let client_c = c_root.issue("c", vec![dns("c.example.com")], &[]);
    for _ in 0..2 {
        let mut c = connect(&bin, &client_c);
        assert_eq!(status(&mut c, "GET", "/v1/status"), (200, String::new()));
    }
    let mut admin = bin.client(Some(&bin.admin));
    assert_eq!(chain_cache(&mut admin), (1, 2, 2));
}

/// A certificate that expires while its chain is cached is refused from then on (the
/// handshake refuses it, and the cache holds no entry past the earliest notAfter).
#[test]
fn a_cached_chain_is_refused_once_its_certificate_expires() {
    let pki = Pki::new();
    let bin = pki.verifying_server(&pki.policies());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.subject_alt_names = vec![dns("minio.example.com")];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::seconds(3);
    let cert = params.signed_by(&key, &pki.a.issuer).unwrap();
    let leaf = Leaf {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        identity: String::new(),
        pem: String::new(),
        key_pem: String::new(),
    };
    let mut c = connect(&bin, &leaf);
    assert_eq!(status(&mut c, "PUT", "/v1/key/create/app-1"), (200, String::new()));
    let mut c = connect(&bin, &leaf);
    assert_eq!(status(&mut c, "PUT", "/v1/key/create/app-2"), (200, String::new()));
    let mut admin = bin.client(Some(&bin.admin));
    let (hits, _, _) = chain_cache(&mut admin);
    assert_eq!(hits, 1);
    // notAfter is inclusive to the second: wait until it is two seconds behind.
    let expired = now + time::Duration::seconds(5);
    while time::OffsetDateTime::now_utc() < expired {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut c = connect(&bin, &leaf);
    let sent = c.send_raw(b"PUT /v1/key/create/app-3 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(sent.is_err() || c.read_reply().is_err(), "an expired certificate was served");
    assert_eq!(admin.get("/v1/key/describe/app-3").message(), "key does not exist");
    assert_eq!(chain_cache(&mut admin).0, 1, "an expired chain was a hit");
}
