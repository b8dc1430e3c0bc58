//! Attacks that worked against earlier releases (and, for the first, against upstream KES),
//! each run against the real `kes` binary over real mTLS so that none can come back:
//!
//! * impersonation with someone else's public certificate behind an own CA:TRUE one;
//! * response header injection through the redirect's `Location`;
//! * client certificates outside their validity, for server use only, or badly signed;
//! * HTTP/1.1 framing details (Host, absolute-form, spaces, bare LF, early refusals).
//!
//! Every case asserts the status, the message and, where the attack was about bytes, the
//! exact bytes on the wire.

mod common;

use common::{Binary, ClientId, client_id};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

const TLS12: &rustls::SupportedProtocolVersion = &rustls::version::TLS12;
const TLS13: &rustls::SupportedProtocolVersion = &rustls::version::TLS13;

/// Presents a fixed chain and key as they are, without checking that they belong together
/// (rustls' own builder would refuse a mismatch; an attacker's client does not).
#[derive(Debug)]
struct Presents(Arc<CertifiedKey>);

impl ResolvesClientCert for Presents {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// A fresh self-signed certificate and its key; `ca` sets BasicConstraints CA:TRUE, as
/// `openssl req -x509` does by default.
fn self_signed(
    alg: &'static rcgen::SignatureAlgorithm,
    ca: bool,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "x");
    params.is_ca = if ca {
        rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
    } else {
        rcgen::IsCa::ExplicitNoCa
    };
    let cert = params.self_signed(&key).unwrap();
    (cert.der().clone(), PrivateKeyDer::try_from(key.serialize_der()).unwrap())
}

/// Sends `request` on a fresh connection that presents `chain` signed for with `key`, and
/// returns everything the server sent, or why the connection failed.
fn over_chain(
    bin: &Binary,
    version: &'static rustls::SupportedProtocolVersion,
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
    request: &str,
) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signer = provider.key_provider.load_private_key(key.clone_key()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(bin.server_cert.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Presents(Arc::new(CertifiedKey::new(chain, signer)))));
    let sock = std::net::TcpStream::connect(bin.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => Ok(String::from_utf8_lossy(&out).into_owned()),
        Err(e) if out.is_empty() => Err(e.to_string()),
        Err(_) => Ok(String::from_utf8_lossy(&out).into_owned()),
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: kes\r\nConnection: close\r\n\r\n")
}

/// Status line and body of a raw `Connection: close` response.
fn status_and_body(raw: &str) -> (&str, &str) {
    let status = raw.split("\r\n").next().unwrap_or_default();
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, body)
}

/// A KES error body as upstream writes it (the newline inside the object is upstream's).
fn error_body(message: &str) -> String {
    format!("{{\"message\":\"{message}\"\n}}")
}

const NO_CERT: &str = "tls: client certificate is required";

/// The attack of issue 9 #1: an own CA:TRUE certificate first (whose key the attacker
/// holds), the admin's public certificate after it. Upstream and earlier releases took the
/// admin's identity from the second certificate. Now, over TLS 1.2 and 1.3, with Ed25519
/// and ECDSA attacker keys: no identity, 400 on every protected route, nothing created, and
/// the audit record does not name the admin.
#[test]
fn a_public_certificate_behind_an_own_ca_certificate_is_nobody() {
    let bin = Binary::start("", "");
    let victim = &bin.admin;
    for alg in [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P256_SHA256] {
        for version in [TLS12, TLS13] {
            let (att, att_key) = self_signed(alg, true);
            let chain = vec![att.clone(), victim.cert.clone()];
            let case = format!("{alg:?} {version:?}");

            let raw = over_chain(
                &bin,
                version,
                chain.clone(),
                &att_key,
                &get("/v1/identity/self/describe"),
            )
            .unwrap();
            let (status, body) = status_and_body(&raw);
            assert_eq!(status, "HTTP/1.1 404 Not Found", "{case}: {raw}");
            assert_eq!(body, error_body("identity does not exist"), "{case}");

            for request in [
                get("/v1/key/list/*"),
                get("/v1/identity/list/*"),
                get("/v1/status"),
                "POST /v1/key/create/stolen HTTP/1.1\r\nHost: kes\r\nConnection: close\r\n\r\n"
                    .to_string(),
            ] {
                let raw = over_chain(&bin, version, chain.clone(), &att_key, &request).unwrap();
                let (status, body) = status_and_body(&raw);
                assert_eq!(status, "HTTP/1.1 400 Bad Request", "{case} {request}: {raw}");
                assert_eq!(body, error_body(NO_CERT), "{case} {request}");
                assert!(!raw.contains(&victim.identity), "{case}: {raw}");
            }

            // The other order: the admin's certificate first, which the attacker cannot
            // sign for. The handshake fails; no response at all.
            let reversed = vec![victim.cert.clone(), att];
            match over_chain(&bin, version, reversed, &att_key, &get("/v1/identity/self/describe"))
            {
                Err(_) => {}
                Ok(raw) => assert_eq!(raw, "", "{case}: a response to a forged handshake"),
            }
        }
    }
    let mut admin = bin.client(Some(victim));
    let r = admin.get("/v1/key/describe/stolen");
    assert_eq!((r.status, r.message()), (404, "key does not exist".to_string()));
    let out = bin.output();
    let audited: Vec<&str> = out.lines().filter(|l| l.contains("/v1/key/create/stolen")).collect();
    assert_eq!(audited.len(), 4, "{out}");
    for line in audited {
        assert!(line.contains("\"identity\":\"\",") && line.contains("\"code\":400"), "{line}");
        assert!(!line.contains(&victim.identity), "the audit names the admin: {line}");
    }
    assert!(out.contains("as its first certificate, which is not a client identity"), "{out}");
}

/// Root CA -> intermediate CA -> leaf. Presenting the leaf first, with or without the
/// CA certificates after it, identifies the leaf, in both TLS versions; two leaves are
/// refused with upstream's message.
#[test]
fn legitimate_chains_keep_working() {
    let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root = rcgen::CertificateParams::default();
    root.distinguished_name.push(rcgen::DnType::CommonName, "root");
    root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root_cert = root.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::new(root, root_key);
    let inter_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut inter = rcgen::CertificateParams::default();
    inter.distinguished_name.push(rcgen::DnType::CommonName, "intermediate");
    inter.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let inter_cert = inter.signed_by(&inter_key, &root_issuer).unwrap();
    let inter_issuer = rcgen::Issuer::new(inter, inter_key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut leaf = rcgen::CertificateParams::default();
    leaf.is_ca = rcgen::IsCa::ExplicitNoCa;
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &inter_issuer).unwrap();
    let leaf_key = PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let leaf_id = kes::auth::Identity::from_cert_der(leaf_cert.der()).unwrap().to_string();

    let bin = Binary::start(
        "",
        &format!(
            "policy:\n  app:\n    allow:\n    - /v1/key/list/*\n    identities:\n    - {leaf_id}\n"
        ),
    );
    let (leaf_der, inter_der, root_der) =
        (leaf_cert.der().clone(), inter_cert.der().clone(), root_cert.der().clone());
    for version in [TLS12, TLS13] {
        for chain in [
            vec![leaf_der.clone()],
            vec![leaf_der.clone(), inter_der.clone()],
            vec![leaf_der.clone(), inter_der.clone(), root_der.clone()],
        ] {
            let n = chain.len();
            let raw = over_chain(&bin, version, chain, &leaf_key, &get("/v1/key/list/*")).unwrap();
            let (status, body) = status_and_body(&raw);
            assert_eq!(status, "HTTP/1.1 200 OK", "{version:?} {n}: {raw}");
            assert_eq!(body, "{\"names\":null}\n", "{version:?} {n}");
            let raw = over_chain(
                &bin,
                version,
                vec![leaf_der.clone()],
                &leaf_key,
                &get("/v1/identity/self/describe"),
            )
            .unwrap();
            assert!(raw.contains(&format!("\"identity\":\"{leaf_id}\"")), "{raw}");
        }
        // The admin's own single certificate.
        let a: &ClientId = &bin.admin;
        let raw = over_chain(
            &bin,
            version,
            vec![a.cert.clone()],
            &a.key,
            &get("/v1/identity/self/describe"),
        )
        .unwrap();
        assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
        assert!(raw.contains(&format!("\"identity\":\"{}\",\"admin\":true", a.identity)), "{raw}");
        // Two non-CA certificates: upstream's refusal, whatever sits in between.
        let other = client_id();
        for chain in [
            vec![leaf_der.clone(), other.cert.clone()],
            vec![leaf_der.clone(), inter_der.clone(), other.cert.clone()],
        ] {
            let raw = over_chain(&bin, version, chain, &leaf_key, &get("/v1/key/list/*")).unwrap();
            let (status, body) = status_and_body(&raw);
            assert_eq!(status, "HTTP/1.1 400 Bad Request", "{raw}");
            assert_eq!(body, error_body("tls: received more than one client certificate"));
        }
    }
}

/// The raw response with its `Date` value replaced by `D`, so whole responses compare.
fn without_date(raw: &str) -> String {
    raw.split("\r\n")
        .map(|l| if l.starts_with("Date: ") { "Date: D" } else { l })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Issue 9 #2: a percent-encoded CR, LF, CRLF, NUL or a whole second response in an unclean
/// path went raw into the redirect's `Location` and so onto the wire as header lines. On
/// every kind of unclean path, with any certificate, the `Location` is now encoded as Go
/// encodes it and the answer is exactly one 301.
#[test]
fn redirects_do_not_reflect_control_characters() {
    let bin = Binary::start("", "");
    let nobody = client_id();
    let payloads = [
        "%0d",
        "%0a",
        "%0d%0a",
        "%00",
        "%0D%0A%0D%0A",
        "%0d%0aContent-Length:%200%0d%0a%0d%0aHTTP/1.1%20200%20OK%0d%0aX-Smuggled:%201%0d%0a%0d%0a",
    ];
    // Unclean path -> the clean prefix the Location starts with.
    let shapes = [
        ("//x", "/x"),
        ("/./x", "/x"),
        ("/v1/../x", "/x"),
        ("/v1//key/list/x", "/v1/key/list/x"),
        ("/v1/key/create/./x", "/v1/key/create/x"),
    ];
    let upper = |s: &str| {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            out.push_str(&rest[i..i + 3].to_ascii_uppercase());
            rest = &rest[i + 3..];
        }
        out + rest
    };
    for (shape, clean) in shapes {
        for payload in payloads {
            for (method, id) in [("GET", &bin.admin), ("POST", &nobody)] {
                let target = format!("{shape}{payload}X-Injected:%20yes");
                let mut c = bin.client(Some(id));
                c.send_raw(
                    format!("{method} {target} HTTP/1.1\r\nHost: kes\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .unwrap();
                let mut raw = Vec::new();
                let _ = c.tls.read_to_end(&mut raw);
                let raw = String::from_utf8(raw).unwrap();
                let location = format!("{clean}{}X-Injected:%20yes", upper(payload));
                assert_eq!(
                    without_date(&raw),
                    format!(
                        "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nDate: D\r\n\
                         Content-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                    "{method} {target}"
                );
            }
        }
    }
    // The raw query is kept as sent (Go keeps RawQuery); it cannot hold a raw CR or LF.
    let mut c = bin.client(Some(&bin.admin));
    c.send_raw(b"GET //x?a=%0d%0aX:%20y&b=1 HTTP/1.1\r\nHost: kes\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = c.tls.read_to_end(&mut raw);
    assert!(
        String::from_utf8(raw).unwrap().contains("\r\nLocation: /x?a=%0d%0aX:%20y&b=1\r\n"),
        "query"
    );
}

/// A self-signed Ed25519 client certificate valid from `days.0` to `days.1` days from now,
/// with `eku` (empty: no extension), its signature broken when `break_signature`.
fn flawed(
    days: (i64, i64),
    eku: Vec<rcgen::ExtendedKeyUsagePurpose>,
    break_signature: bool,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>, String) {
    issued(days, eku, break_signature, None)
}

/// As [`flawed`], issued by `issuer` when given.
fn issued(
    days: (i64, i64),
    eku: Vec<rcgen::ExtendedKeyUsagePurpose>,
    break_signature: bool,
    issuer: Option<&rcgen::Issuer<'_, rcgen::KeyPair>>,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(days.0);
    params.not_after = now + time::Duration::days(days.1);
    params.extended_key_usages = eku;
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer),
        None => params.self_signed(&key),
    };
    let mut der = cert.unwrap().der().to_vec();
    if break_signature {
        *der.last_mut().unwrap() ^= 1;
    }
    let id = kes::auth::Identity::from_cert_der(&der).unwrap().to_string();
    (CertificateDer::from(der), PrivateKeyDer::try_from(key.serialize_der()).unwrap(), id)
}

/// (label, certificate) for each flaw of issue 9 #3, plus a good one.
fn flawed_set() -> Vec<(&'static str, (CertificateDer<'static>, PrivateKeyDer<'static>, String))> {
    use rcgen::ExtendedKeyUsagePurpose as Eku;
    vec![
        ("expired", flawed((-30, -1), vec![Eku::ClientAuth], false)),
        ("not_yet_valid", flawed((7, 30), vec![Eku::ClientAuth], false)),
        ("no_client_auth", flawed((-1, 30), vec![Eku::ServerAuth], false)),
        ("bad_self_signature", flawed((-1, 30), vec![Eku::ClientAuth], true)),
        ("good", flawed((-1, 30), vec![Eku::ClientAuth], false)),
    ]
}

fn policy_for(ids: &[&str]) -> String {
    let mut yaml =
        String::from("policy:\n  app:\n    allow:\n    - /v1/key/list/*\n    identities:\n");
    for id in ids {
        yaml.push_str(&format!("    - {id}\n"));
    }
    yaml
}

/// Issue 9 #3, default mode: flawed client certificates keep working as upstream lets them
/// (identities are key hashes), are logged once per identity, and are counted per flaw in
/// `/v1/metrics`.
#[test]
fn flawed_client_certificates_are_accepted_logged_once_and_counted() {
    let set = flawed_set();
    let ids: Vec<&str> = set.iter().map(|(_, (_, _, id))| id.as_str()).collect();
    let bin = Binary::start("", &policy_for(&ids));
    for round in 0..2 {
        for version in [TLS12, TLS13] {
            for (label, (cert, key, _)) in &set {
                let raw =
                    over_chain(&bin, version, vec![cert.clone()], key, &get("/v1/key/list/*"))
                        .unwrap();
                assert_eq!(
                    status_and_body(&raw),
                    ("HTTP/1.1 200 OK", "{\"names\":null}\n"),
                    "{label} {round}"
                );
            }
        }
    }
    let out = bin.output();
    for (label, (_, _, id)) in &set {
        let lines: Vec<&str> =
            out.lines().filter(|l| l.contains(&format!("identity {id} uses"))).collect();
        if *label == "good" {
            assert!(lines.is_empty(), "{lines:?}");
            continue;
        }
        assert_eq!(lines.len(), 1, "{label}: {out}");
        let what = match *label {
            "expired" => "has expired (notAfter is in the past)",
            "not_yet_valid" => "is not valid yet (notBefore is in the future)",
            "no_client_auth" => {
                "is not for client authentication (extended key usage without clientAuth)"
            }
            _ => "is self-issued but its signature does not verify",
        };
        assert!(
            lines[0].contains(&format!(
                "http: client 127.0.0.1 with identity {id} uses a certificate that {what}; accepted as \
                 upstream accepts it (set tls.client_validity: enforce to refuse such certificates); \
                 logged once per identity"
            )),
            "{}",
            lines[0]
        );
    }
    let mut admin = bin.client(Some(&bin.admin));
    let metrics = admin.get("/v1/metrics").text();
    for label in ["bad_self_signature", "expired", "no_client_auth", "not_yet_valid"] {
        // Two rounds over two TLS versions: four connections each.
        assert!(metrics.contains(&format!("kes_tls_client_cert_flaws_{label} 4\n")), "{metrics}");
    }
    assert!(metrics.contains("# TYPE kes_tls_client_cert_flaws_expired counter\n"), "{metrics}");
    // The metric's labels are exactly the flaws the server finds.
    let labels: Vec<&str> = kes::auth::x509::Flaw::ALL.iter().map(|f| f.label()).collect();
    let mut sorted = labels.clone();
    sorted.sort();
    assert_eq!(sorted, kes::obs::CLIENT_CERT_FLAWS);
}

/// Issue 9 #3, `tls.client_validity: enforce`: each flaw ends the handshake with the TLS
/// alert that names it, the server logs why, and a good certificate still works.
#[test]
fn enforce_refuses_flawed_client_certificates_in_the_handshake() {
    let set = flawed_set();
    let ids: Vec<&str> = set.iter().map(|(_, (_, _, id))| id.as_str()).collect();
    let bin = Binary::start("  client_validity: enforce\n", &policy_for(&ids));
    for version in [TLS12, TLS13] {
        for (label, (cert, key, _)) in &set {
            let got = over_chain(&bin, version, vec![cert.clone()], key, &get("/v1/key/list/*"));
            let alert = match *label {
                "expired" => "received fatal alert: CertificateExpired",
                "not_yet_valid" => "received fatal alert: CertificateExpired",
                "no_client_auth" => "received fatal alert: UnsupportedCertificate",
                "bad_self_signature" => "received fatal alert: DecryptError",
                _ => {
                    let raw = got.unwrap();
                    assert_eq!(status_and_body(&raw), ("HTTP/1.1 200 OK", "{\"names\":null}\n"));
                    continue;
                }
            };
            assert_eq!(got, Err(alert.to_string()), "{label} {version:?}");
        }
    }
    let out = bin.output();
    for (label, text) in [
        ("expired", "invalid peer certificate: Expired"),
        ("not_yet_valid", "invalid peer certificate: NotValidYet"),
        ("no_client_auth", "invalid peer certificate: InvalidPurpose"),
        ("bad_self_signature", "invalid peer certificate: BadSignature"),
    ] {
        assert!(
            out.contains(&format!("http: TLS handshake error from 127.0.0.1: {text}")),
            "{label}: {out}"
        );
    }
}

/// With `tls.auth: on` and `tls.ca`, chain verification already refuses a CA-issued leaf
/// outside its validity or without clientAuth, with no `client_validity` setting.
#[test]
fn chain_verification_enforces_validity_with_tls_auth_on() {
    use rcgen::ExtendedKeyUsagePurpose as Eku;
    let dir = common::TempDir::new("ca");
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name.push(rcgen::DnType::CommonName, "clients");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = |days: (i64, i64), eku: Eku| issued(days, vec![eku], false, Some(&issuer));
    let set = [
        ("good", leaf((-1, 30), Eku::ClientAuth)),
        ("expired", leaf((-30, -1), Eku::ClientAuth)),
        ("not_yet_valid", leaf((7, 30), Eku::ClientAuth)),
        ("no_client_auth", leaf((-1, 30), Eku::ServerAuth)),
    ];
    let ids: Vec<&str> = set.iter().map(|(_, (_, _, id))| id.as_str()).collect();
    let bin = Binary::start(
        &format!("  auth: on\n  ca: {}\n", dir.join("ca.pem").display()),
        &policy_for(&ids),
    );
    for version in [TLS12, TLS13] {
        for (label, (cert, key, _)) in &set {
            let got = over_chain(&bin, version, vec![cert.clone()], key, &get("/v1/key/list/*"));
            match *label {
                "good" => assert_eq!(
                    status_and_body(&got.unwrap()),
                    ("HTTP/1.1 200 OK", "{\"names\":null}\n")
                ),
                "no_client_auth" => assert_eq!(
                    got,
                    Err("received fatal alert: UnsupportedCertificate".into()),
                    "{version:?}"
                ),
                _ => assert_eq!(
                    got,
                    Err("received fatal alert: CertificateExpired".into()),
                    "{label} {version:?}"
                ),
            }
        }
    }
}

/// Sends raw bytes as the admin on a fresh connection and returns everything the server
/// answered until it closed.
fn raw_exchange(bin: &Binary, bytes: &[u8]) -> String {
    let mut c = bin.client(Some(&bin.admin));
    c.send_raw(bytes).unwrap();
    let mut raw = Vec::new();
    let _ = c.tls.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

/// A plain-text 400 as the server writes it (Go's wording after the status).
fn plain_400(why: &str) -> String {
    let body = format!("400 Bad Request: {why}");
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nDate: D\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Request smuggling: every framing a proxy in front of the server could read differently
/// from the server (both headers in either order, two lengths, a list, a coding other than
/// one `chunked`) is refused with its exact answer, the connection is closed, and the second
/// request hidden in the body is never run.
#[test]
fn smuggled_requests_are_refused_and_never_run() {
    let bin = Binary::start("", "");
    let hidden = "POST /v1/key/create/smuggled HTTP/1.1\r\nHost: kes\r\nContent-Length: 0\r\n\r\n";
    let plain_501 = "HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain; charset=utf-8\r\n\
                     Date: D\r\nContent-Length: 19\r\nConnection: close\r\n\r\n501 Not Implemented";
    let head = "POST /v1/key/create/front HTTP/1.1\r\nHost: kes\r\n";
    for (fields, body, want) in [
        (
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            format!("0\r\n\r\n{hidden}"),
            plain_400("both Content-Length and Transfer-Encoding"),
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            format!("0\r\n\r\n{hidden}"),
            plain_400("both Content-Length and Transfer-Encoding"),
        ),
        (
            "Content-Length: 0\r\nContent-Length: 78\r\n",
            hidden.to_string(),
            plain_400("duplicate Content-Length"),
        ),
        (
            "Content-Length: 0\r\nContent-Length: 0\r\n",
            hidden.to_string(),
            plain_400("duplicate Content-Length"),
        ),
        ("Content-Length: 0, 78\r\n", hidden.to_string(), plain_400("invalid Content-Length")),
        ("Content-Length: +0\r\n", hidden.to_string(), plain_400("invalid Content-Length")),
        ("Transfer-Encoding: gzip, chunked\r\n", format!("0\r\n\r\n{hidden}"), plain_501.into()),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            format!("0\r\n\r\n{hidden}"),
            plain_501.into(),
        ),
        ("Transfer-Encoding: identity\r\n", hidden.to_string(), plain_501.into()),
    ] {
        let got = raw_exchange(&bin, format!("{head}{fields}\r\n{body}").as_bytes());
        assert_eq!(without_date(&got), want, "{fields}");
    }
    let mut c = bin.client(Some(&bin.admin));
    for name in ["front", "smuggled"] {
        let r = c.get(&format!("/v1/key/describe/{name}"));
        assert_eq!((r.status, r.message()), (404, "key does not exist".into()), "{name}");
    }
}

/// Issue 9 #4: HTTP/1.1 heads a careful server refuses or accepts, byte for byte.
#[test]
fn http11_heads_are_judged_as_go_judges_them() {
    let bin = Binary::start("", "");
    let no_host = raw_exchange(&bin, b"GET /v1/status HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(without_date(&no_host), plain_400("missing required Host header"));
    let two = raw_exchange(&bin, b"GET /v1/status HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(without_date(&two), plain_400("too many Host headers"));
    let space = raw_exchange(&bin, b"GET /v1/key/list/a b HTTP/1.1\r\nHost: kes\r\n\r\n");
    assert_eq!(without_date(&space), plain_400("malformed HTTP version"));
    let h2 = raw_exchange(&bin, b"GET / HTTP/2.0\r\nHost: kes\r\n\r\n");
    assert!(h2.starts_with("HTTP/1.1 505 HTTP Version Not Supported\r\n"), "{h2}");
    // HTTP/1.0 needs no Host.
    let old = raw_exchange(&bin, b"GET /version HTTP/1.0\r\n\r\n");
    assert!(old.starts_with("HTTP/1.1 200 OK\r\n"), "{old}");
    // Absolute-form targets are served like their path.
    let port = bin.addr.port();
    let abs = raw_exchange(
        &bin,
        format!("GET https://127.0.0.1:{port}/v1/key/list/*?x=1 HTTP/1.1\r\nHost: kes\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(abs.starts_with("HTTP/1.1 200 OK\r\n"), "{abs}");
    assert!(abs.ends_with("\r\n\r\n{\"names\":null}\n"), "{abs}");
    // A chunk-size line ending in a bare LF is read like a header line.
    let mut c = bin.client(Some(&bin.admin));
    assert_eq!(c.post("/v1/key/create/k", "").status, 200);
    let body = b"{\"plaintext\":\"aGk=\"}";
    let mut req = b"POST /v1/key/encrypt/k HTTP/1.1\r\nHost: kes\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    req.extend_from_slice(format!("{:x}\n", body.len()).as_bytes());
    req.extend_from_slice(body);
    req.extend_from_slice(b"\r\n0\n\n");
    let enc = raw_exchange(&bin, &req);
    assert!(enc.starts_with("HTTP/1.1 200 OK\r\n"), "{enc}");
    assert!(enc.contains("{\"ciphertext\":\""), "{enc}");
    // Input echoed in an error message is cut to a bounded length.
    let long = "a".repeat(8000);
    let r = c.get(&format!("/v1/key/describe/{long}"));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.message(),
        format!(
            "key name '{}...' is empty, too long or contains invalid characters",
            &long[..kes::api::error::MAX_ECHOED_INPUT]
        )
    );
}

/// Issue 9 #4: a client that keeps uploading past a route's 1 MB limit, even after the 400
/// arrived (as full-duplex clients do), can finish sending and then sees a clean TLS close,
/// not a reset, with either framing, in both TLS versions: the server shuts down its
/// writing side and drains for a bounded time instead of closing on unread input.
#[test]
fn an_over_limit_upload_reads_its_400_not_a_reset() {
    let bin = Binary::start("", "");
    let mut admin = bin.client(Some(&bin.admin));
    assert_eq!(admin.post("/v1/key/create/k", "").status, 200);
    // 1.3 MB of JSON, as one would encrypt a too-large plaintext.
    let mut body = b"{\"plaintext\":\"".to_vec();
    body.extend(std::iter::repeat_n(b'A', 1_300_000));
    body.extend_from_slice(b"\"}");
    for version in [TLS12, TLS13] {
        for chunked in [true, false] {
            let case = format!("{version:?} chunked={chunked}");
            let mut req = b"PUT /v1/key/encrypt/k HTTP/1.1\r\nHost: kes\r\n".to_vec();
            if chunked {
                req.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for piece in body.chunks(64 * 1024) {
                    req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    req.extend_from_slice(piece);
                    req.extend_from_slice(b"\r\n");
                }
                req.extend_from_slice(b"0\r\n\r\n");
            } else {
                req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                req.extend_from_slice(&body);
            }
            let mut c = common::Client::connect_with(
                bin.addr,
                &bin.server_cert,
                Some(&bin.admin),
                &[version],
            );
            // Past the limit, then wait for the refusal while still owing 200 KB.
            let (first, rest) = req.split_at(1_100_000);
            c.send_raw(first).unwrap();
            let r = c.read_reply().unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!((r.status, r.message()), (400, "invalid request body".into()), "{case}");
            assert_eq!(r.header("Connection"), Some("close"), "{case}");
            for piece in rest.chunks(4096) {
                c.send_raw(piece).unwrap_or_else(|e| panic!("{case}: the rest of the upload: {e}"));
            }
            let mut tail = Vec::new();
            c.tls.read_to_end(&mut tail).unwrap_or_else(|e| panic!("{case}: close: {e}"));
            assert_eq!(tail, b"", "{case}");
        }
    }
}
