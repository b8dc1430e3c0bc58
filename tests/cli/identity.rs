//! `kes identity` in all its forms, without a server.

use crate::harness::{TempDir, kes};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const KEY: &str = "kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc";
const ID: &str = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";

#[test]
fn a_new_api_key_is_bare_for_pipes_and_framed_for_people() {
    let o = kes(&["identity"]).run();
    let key = o.ok();
    assert!(key.starts_with("kes:v1:A") && key.len() == 51 && !key.contains('\n'), "{key:?}");
    let id = kes(&["identity", key]).run();
    assert_eq!(id.ok().len(), 64);

    let t = kes(&["identity"]).tty();
    let lines: Vec<&str> = t.stdout.lines().collect();
    assert_eq!(t.code, 0);
    assert_eq!(lines[0], "Your API key:");
    assert!(lines[2].starts_with("   \x1b[1mkes:v1:"), "{}", lines[2]);
    assert!(lines.contains(&"Your Identity:"), "{}", t.stdout);
}

#[test]
fn identity_of_an_api_key_or_a_file() {
    assert_eq!(kes(&["identity", KEY]).run().ok(), ID);
    assert_eq!(kes(&["identity", "of", KEY]).run().ok(), ID);
    // A bare base64 key (no kes:v1:) is an API key too.
    assert_eq!(kes(&["identity", &KEY[7..]]).run().ok(), ID);
    let t = kes(&["identity", "of", KEY]).tty();
    assert_eq!((t.code, t.stdout.as_str()), (0, format!("  Identity:  {ID}\n").as_str()));

    let dir = TempDir::new("id");
    kes(&["identity", "new", "--key", "k.pem", "--cert", "c.pem", "me"]).dir(dir.path()).run().ok();
    let cert_id = kes(&["identity", "of", "c.pem"]).dir(dir.path()).run().ok().to_string();
    assert_eq!(kes(&["identity", "c.pem"]).dir(dir.path()).run().ok(), cert_id);
    // The private key file gives back the API key, whose identity is the certificate's.
    let key = kes(&["identity", "k.pem"]).dir(dir.path()).run().ok().to_string();
    assert!(key.starts_with("kes:v1:"), "{key}");
    assert_eq!(kes(&["identity", &key]).run().ok(), cert_id);
    let t = kes(&["identity", "k.pem"]).dir(dir.path()).tty();
    assert_eq!(t.stdout, format!("  API key:  {key}\n"));

    kes(&["identity", "of", "missing.crt"])
        .run()
        .fails_with("open missing.crt: no such file or directory");
    kes(&["identity", "of", "k.pem"])
        .dir(dir.path())
        .run()
        .fails_with("'k.pem' contains no PEM-encoded certificate");
    kes(&["identity", "kes:v1:nope"]).run().fails_with("invalid API key");
    kes(&["identity", "of"])
        .run()
        .fails_with("no API key or certificate specified. See 'kes identity of --help'");
    kes(&["identity", "a", "b"]).run().fails_with("too many arguments. See 'kes identity --help'");
}

#[test]
fn identity_new_without_flags_writes_nothing() {
    let dir = TempDir::new("new");
    let o = kes(&["identity", "new"]).dir(dir.path()).run();
    let text = o.ok();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Your API key:");
    let key = lines[2].trim();
    let i = lines.iter().position(|l| *l == "Your Identity:").unwrap();
    assert_eq!(lines[i + 2].trim(), kes(&["identity", key]).run().ok());
    assert!(text.ends_with(&format!("    kes identity of {key}\n")), "{text}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

fn verify_at(pem: &str, at_secs_from_now: i64, name: &str) -> Result<(), String> {
    let cert = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let anchor = webpki::anchor_from_trusted_cert(&cert).map_err(|e| format!("{e:?}"))?;
    let ee = webpki::EndEntityCert::try_from(&cert).map_err(|e| format!("{e:?}"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
        as i64;
    let at = UnixTime::since_unix_epoch(Duration::from_secs((now + at_secs_from_now) as u64));
    ee.verify_for_usage(
        &[webpki::ring::ED25519],
        &[anchor],
        &[],
        at,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| format!("{e:?}"))?;
    ee.verify_is_valid_for_subject_name(&ServerName::try_from(name).unwrap())
        .map_err(|e| format!("{e:?}"))
}

#[test]
fn identity_new_writes_a_key_and_certificate_pair() {
    let dir = TempDir::new("pair");
    let o = kes(&[
        "identity",
        "new",
        "--key=k.key",
        "--cert",
        "c.crt",
        "--ip",
        "10.1.2.3",
        "--dns",
        "kes.example.net",
        "--expiry",
        "1h",
        "my-kes",
    ])
    .dir(dir.path())
    .run();
    let text = o.ok();
    let id = kes(&["identity", "of", "c.crt"]).dir(dir.path()).run().ok().to_string();
    assert!(
        text.starts_with(&format!(
            "  Private key:  k.key\n  Certificate:  c.crt\n  Identity:     {id}\n\nYour API key:\n"
        )),
        "{text}"
    );
    assert!(text.contains("The generated TLS private key is stored at: k.key\n"));
    assert!(text.ends_with("    kes identity of c.crt\n"), "{text}");

    let key = std::fs::read_to_string(dir.join("k.key")).unwrap();
    assert!(
        key.starts_with("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI"),
        "PKCS#8 v1 Ed25519: {key}"
    );
    assert_eq!(std::fs::metadata(dir.join("k.key")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(dir.join("c.crt")).unwrap().permissions().mode() & 0o777, 0o644);
    let cert = std::fs::read_to_string(dir.join("c.crt")).unwrap();
    verify_at(&cert, 0, "10.1.2.3").unwrap();
    verify_at(&cert, 0, "kes.example.net").unwrap();
    assert!(verify_at(&cert, 0, "my-kes").is_err(), "the subject is no SAN when SANs were given");
    assert!(verify_at(&cert, 2 * 3600, "10.1.2.3").is_err(), "--expiry 1h");

    kes(&["identity", "new", "--key=k.key", "--cert", "other.crt"])
        .dir(dir.path())
        .run()
        .fails_with("private key already exists. Use --force to overwrite it");
    kes(&["identity", "new", "--key=other.key", "--cert", "c.crt"])
        .dir(dir.path())
        .run()
        .fails_with("certificate already exists. Use --force to overwrite it");
    let again = kes(&["identity", "new", "--key=k.key", "--cert", "c.crt", "--force"])
        .dir(dir.path())
        .run();
    again.ok();
    assert_ne!(
        kes(&["identity", "of", "c.crt"]).dir(dir.path()).run().ok(),
        id,
        "--force made a new pair"
    );
}

#[test]
fn identity_new_flag_errors() {
    let dir = TempDir::new("bad");
    let new = |args: &[&str]| {
        let mut a = vec!["identity", "new"];
        a.extend_from_slice(args);
        kes(&a).dir(dir.path()).run()
    };
    new(&["--ip", "not-an-ip", "x"]).fails_with("invalid --ip \"not-an-ip\": not an IP address");
    new(&["--dns", "bad name", "x"]).fails_with("invalid --dns \"bad name\": not a DNS name");
    new(&["--expiry", "30d", "x"])
        .fails_with("invalid --expiry \"30d\": expected a positive duration such as 720h or 8760h");
    new(&["--key", "same", "--cert", "same"])
        .fails_with("--key and --cert must name two different files");
    new(&["a", "b"]).fails_with("too many arguments. See 'kes identity new --help'");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was written");
}

#[test]
fn identity_new_defaults_to_private_key_and_public_crt_for_720h() {
    let dir = TempDir::new("defaults");
    let t = kes(&["identity", "new", "--ip", "", "localhost"]).dir(dir.path()).tty();
    let id = kes(&["identity", "of", "public.crt"]).dir(dir.path()).run().ok().to_string();
    assert_eq!(t.code, 0);
    assert!(
        t.stdout.starts_with(&format!(
            "  Private key:  private.key\n  Certificate:  public.crt\n  Identity:     {id}\n"
        )),
        "{}",
        t.stdout
    );
    let cert = std::fs::read_to_string(dir.join("public.crt")).unwrap();
    verify_at(&cert, 0, "localhost").unwrap();
    assert!(verify_at(&cert, 0, "127.0.0.1").is_err(), "--ip \"\" adds no IP");
    verify_at(&cert, 29 * 86_400, "localhost").unwrap();
    assert!(verify_at(&cert, 31 * 86_400, "localhost").is_err(), "valid for 720h");
    // A subject that is not a DNS name gives no SAN; the CN is the identity without one.
    kes(&["identity", "new", "--key", "c.key", "--cert", "c.crt"]).dir(dir.path()).run().ok();
    let cert = std::fs::read_to_string(dir.join("c.crt")).unwrap();
    assert!(verify_at(&cert, 0, "localhost").is_err());
}

/// `kes identity of` reads a chain by the server's own rule (issue 9): only the first
/// certificate identifies, never a CA:TRUE one, and two non-CA certificates are refused.
#[test]
fn identity_of_a_chain_follows_the_servers_rule() {
    let dir = TempDir::new("chain");
    let pem = |ca: bool| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = if ca {
            rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
        } else {
            rcgen::IsCa::ExplicitNoCa
        };
        params.self_signed(&key).unwrap().pem()
    };
    let (leaf, other, ca) = (pem(false), pem(false), pem(true));
    std::fs::write(dir.path().join("leaf.pem"), &leaf).unwrap();
    let id = kes(&["identity", "of", "leaf.pem"]).dir(dir.path()).run().ok().to_string();
    for (name, content) in
        [("leaf-ca.pem", format!("{leaf}{ca}")), ("ca-leaf.pem", format!("{ca}{leaf}"))]
    {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    std::fs::write(dir.path().join("two.pem"), format!("{leaf}{other}")).unwrap();
    for form in [&["identity", "of"][..], &["identity"][..]] {
        let args = |file: &'static str| [form, &[file]].concat();
        assert_eq!(kes(&args("leaf-ca.pem")).dir(dir.path()).run().ok(), id);
        kes(&args("ca-leaf.pem")).dir(dir.path()).run().fails_with(
            "'ca-leaf.pem': the first certificate is a CA certificate (BasicConstraints CA:TRUE), \
             which is no client identity; create client certificates with 'kes identity new'",
        );
        kes(&args("two.pem")).dir(dir.path()).run().fails_with(
            "'two.pem' holds more than one non-CA certificate; a server refuses such a chain",
        );
    }
}
