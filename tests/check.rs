//! `kes server --check [--keystore]` with the real binary: a good config prints its
//! effective settings (secrets masked) and exits 0 without binding; each kind of broken
//! config exits 1 with the message the server would stop with; `--keystore` probes the
//! fake vault and names what fails (permission, authentication, DNS, proxy, CA).

mod common;
#[path = "support/fake_vault.rs"]
mod fake_vault;

use common::{TempDir, kes_command, output, server_cert};
use fake_vault::{FakeVault, Fault, Op};
use std::path::Path;

/// Runs `kes server --check ARGS` in `dir` with a clean proxy/CA environment plus `env`.
fn check(dir: &Path, args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let args: Vec<&str> = ["server", "--check"].into_iter().chain(args.iter().copied()).collect();
    let mut cmd = kes_command(dir, &args, env);
    for k in ["HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR"]
    {
        if !env.iter().any(|(set, _)| set == &k) {
            cmd.env_remove(k);
        }
    }
    output(&mut cmd)
}

const ADMIN: &str = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";

fn fs_config(extra: &str) -> String {
    format!(
        "address: 127.0.0.1:7373\nadmin:\n  identity: ${{KES_TEST_ADMIN}}\ntls:\n  key: server.key\n  cert: server.crt\n{extra}keystore:\n  fs:\n    path: keys\n"
    )
}

fn setup() -> TempDir {
    let dir = TempDir::new("check");
    server_cert(dir.path());
    dir
}

fn env() -> Vec<(&'static str, String)> {
    vec![("KES_TEST_ADMIN", ADMIN.to_string())]
}

#[test]
fn a_good_config_prints_its_settings_and_binds_nothing() {
    let dir = setup();
    let extra = "policy:\n  app:\n    allow: [/v1/key/create/app*, /v1/key/*/x]\n    deny: [/v1/key/create/app-x*]\n    identities: [aa11]\napi:\n  /v1/ready: {skip_auth: true, timeout: 20s}\ncache:\n  expiry: {any: 1m}\nlog: {audit: off}\nkeys: [{name: k1}]\n";
    std::fs::write(dir.join("config.yml"), fs_config(extra)).unwrap();
    // The configured address is taken: --check must not try to bind it.
    let _busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = _busy.local_addr().unwrap().to_string();
    let (code, out, err) = check(dir.path(), &["--config", "config.yml", "--addr", &busy], &env());
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let expected = format!(
        "Config     config.yml
Address    {busy}
Admin      {ADMIN}
TLS cert   server.crt
TLS key    server.key
Clients    any certificate; identity = SHA-256 of its public key (tls.auth: off)
Policy     app: allow 2, deny 1, identities 1
Cache      any=1m0s unused=30s offline=0s
API        /v1/ready skip_auth timeout=20s
Logs       error=INFO audit=ERROR+1
Keys       k1 (created at startup when missing)
KeyStore   fs: keys
WARNING: api./v1/ready.skip_auth: the route answers clients without a certificate or policy check
WARNING: keystore.fs.path: 'keys' does not exist yet; the server creates it at startup
WARNING: policy.app.allow: pattern '/v1/key/*/x': only a trailing '*' is a wildcard; other '*', '?' and '[' are literal characters (KES releases before 2023-11 read this pattern as a glob)

=> Config OK: the server would start with these settings.
"
    );
    assert_eq!(out, expected);
    assert!(!dir.join("keys").exists(), "--check created the key directory");
}

#[test]
fn each_broken_config_fails_with_the_servers_message() {
    let dir = setup();
    let other = TempDir::new("check-other");
    let (other_cert, _, _) = server_cert(other.path());
    std::fs::copy(&other_cert, dir.join("other.crt")).unwrap();
    std::fs::write(dir.join("afile"), "x").unwrap();
    let good = fs_config("");
    let cases: Vec<(&str, String, &str)> = vec![
        ("yaml", "admin: [\n".into(), "config.yml: invalid YAML"),
        ("unset variable", good.clone(), "referenced env. variable 'KES_TEST_ADMIN'"),
        (
            "missing certificate",
            good.replace("server.crt", "missing.crt"),
            "Error: tls.cert: cannot read certificate 'missing.crt'",
        ),
        (
            "key of another certificate",
            good.replace("server.crt", "other.crt"),
            "Error: tls.key: the private key 'server.key' does not belong to the certificate 'other.crt'",
        ),
        (
            "bad policy identity",
            fs_config("policy:\n  p:\n    identities: [\"a b\"]\n"),
            "Error: config.yml: policy.p.identities: identity 'a b' is empty, too long or contains invalid characters",
        ),
        (
            "unsupported keystore",
            good.replace("  fs:\n    path: keys\n", "  vault:\n    endpoint: https://v\n"),
            "Error: config.yml: keystore: unsupported keystore 'vault'",
        ),
        (
            "fs path is a file",
            good.replace("path: keys", "path: afile"),
            "Error: keystore.fs.path: 'afile' is not a directory",
        ),
        (
            "address",
            good.replace("127.0.0.1:7373", "localhost:7373"),
            "Error: address: 'localhost' is not a valid IP address",
        ),
        (
            "azure endpoint",
            good.replace(
                "  fs:\n    path: keys\n",
                "  azure:\n    keyvault:\n      endpoint: http://v.vault.azure.net\n",
            ),
            "Error: keystore.azure.keyvault: azure: endpoint 'http://v.vault.azure.net' must use https",
        ),
    ];
    for (what, text, message) in cases {
        std::fs::write(dir.join("config.yml"), &text).unwrap();
        let env = if what == "unset variable" { Vec::new() } else { env() };
        let (code, out, err) = check(dir.path(), &["--config", "config.yml"], &env);
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(err.contains(message), "{what}: {err}");
        assert_eq!(out, "", "{what}");
    }
    // Usage errors.
    let (code, _, err) = check(dir.path(), &["--keystore"], &env());
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = check(dir.path(), &["--dev"], &env());
    assert_eq!(
        (code, err.trim()),
        (1, "Error: '--check' validates a config file: use it with --config, not --dev")
    );
}

fn azure_config(endpoint: &str, secret: &str, v: &FakeVault) -> String {
    format!(
        "admin:\n  identity: {ADMIN}\ntls:\n  key: server.key\n  cert: server.crt\n  password: tls-password-not-shown\nkeystore:\n  azure:\n    keyvault:\n      endpoint: {endpoint}\n      credentials:\n        tenant_id: {}\n        client_id: {}\n        client_secret: {secret}\n",
        v.tenant_id(),
        v.client_id()
    )
}

#[test]
fn keystore_probe_names_what_fails() {
    let vault = FakeVault::start();
    let dir = setup();
    let secret = vault.client_secret();
    let trust = || {
        vec![
            ("SSL_CERT_FILE", vault.ca_file().display().to_string()),
            ("AZURE_AUTHORITY_HOST", vault.authority()),
        ]
    };
    let write = |endpoint: &str, secret: &str| {
        std::fs::write(dir.join("config.yml"), azure_config(endpoint, secret, &vault)).unwrap()
    };
    let args = ["--keystore", "--config", "config.yml"];

    // Healthy: token and one list call.
    write(&vault.url(), &secret);
    vault.reset_counts();
    let (code, out, err) = check(dir.path(), &args, &trust());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("Probe      Azure KeyVault: {}: OK, 0 keys listed in ", vault.url())),
        "{out}"
    );
    assert!(out.contains("Credential client secret"), "{out}");
    assert!(out.contains("           client_secret: <set>\n"), "{out}");
    assert!(out.contains("TLS key    server.key (encrypted; tls.password: <set>)"), "{out}");
    for s in [secret.as_str(), "tls-password-not-shown"] {
        assert!(!out.contains(s) && !err.contains(s), "secret shown: {out}{err}");
    }
    assert_eq!(vault.count(Op::Token), 1);
    // The first list call learns the challenge (401), the second is answered.
    assert_eq!(vault.count(Op::List), 2);
    // Without --keystore nothing is sent.
    vault.reset_counts();
    let (code, _, _) = check(dir.path(), &["--config", "config.yml"], &trust());
    assert_eq!(code, 0);
    assert!(vault.counts().values().all(|&n| n == 0), "{:?}", vault.counts());

    let fails = |env: Vec<(&str, String)>| {
        let (code, out, err) = check(dir.path(), &args, &env);
        assert_eq!(code, 1, "{out}{err}");
        assert!(!err.contains(&secret), "{err}");
        err
    };
    // Permission: the vault answers 403 ForbiddenByPolicy to the listing.
    vault.inject_forever(Op::List, Fault::ForbiddenByPolicy);
    let err = fails(trust());
    assert!(err.starts_with("Error: key store probe failed: Azure KeyVault: "), "{err}");
    assert!(
        err.contains(": permission: the credential is valid but may not list secrets"),
        "{err}"
    );
    vault.clear_faults();
    // Authentication also when the vault refuses a token it was given (401 after the
    // retry with a fresh one).
    vault.inject_forever(Op::List, Fault::Unauthorized);
    let err = fails(trust());
    assert!(err.contains(": authentication: no token for the vault"), "{err}");
    vault.clear_faults();
    // Any other answer: named as the vault's refusal, with its code.
    vault.inject_forever(
        Op::List,
        Fault::Raw {
            status: 400,
            content_type: "application/json".into(),
            body: r#"{"error":{"code":"BadParameter","message":"no"}}"#.into(),
        },
    );
    let err = fails(trust());
    assert!(err.contains(": the vault refused the listing: "), "{err}");
    assert!(err.contains("BadParameter"), "{err}");
    vault.clear_faults();
    // Network: nothing listens at the endpoint (no proxy).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    write(&format!("https://{closed}"), &secret);
    let err = fails(trust());
    assert!(err.contains(": network: the vault cannot be reached"), "{err}");
    write(&vault.url(), &secret);
    // Authentication: a wrong client secret.
    write(&vault.url(), "wrong-secret");
    let err = fails(trust());
    assert!(err.contains(": authentication: no token for the vault"), "{err}");
    write(&vault.url(), &secret);
    // CA: the vault's certificate is not trusted.
    let err = fails(vec![("AZURE_AUTHORITY_HOST", vault.authority())]);
    assert!(err.contains(": CA: the vault's TLS certificate is not trusted"), "{err}");
    // Proxy: the configured proxy does not answer (loopback endpoints bypass proxies, as
    // in Go, so the vault is named by a host that only the proxy could reach).
    write("https://kes-check.invalid", &secret);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut env = trust();
    env.push(("HTTPS_PROXY", format!("http://{closed}")));
    let err = fails(env);
    assert!(
        err.contains(&format!(
            ": proxy: the vault cannot be reached through the HTTPS proxy http://{closed}"
        )),
        "{err}"
    );
    // DNS: a name that cannot resolve (RFC 6761 reserves .invalid).
    let err = fails(trust());
    assert!(err.contains(": DNS: the vault's host name does not resolve"), "{err}");
}

/// A token endpoint that gives no answer is classed like a vault that gives none (DNS,
/// network, proxy, CA), naming the token endpoint and its authority; a refused credential
/// (400/401) stays authentication.
#[test]
fn keystore_probe_names_token_endpoint_failures_by_transport() {
    let vault = FakeVault::start();
    let dir = setup();
    std::fs::write(
        dir.join("config.yml"),
        azure_config(&vault.url(), &vault.client_secret(), &vault),
    )
    .unwrap();
    let args = ["--keystore", "--config", "config.yml"];
    let with_authority = |authority: &str| {
        vec![
            ("SSL_CERT_FILE", vault.ca_file().display().to_string()),
            ("AZURE_AUTHORITY_HOST", authority.to_string()),
        ]
    };
    let fails = |env: Vec<(&str, String)>| {
        let (code, out, err) = check(dir.path(), &args, &env);
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.starts_with("Error: key store probe failed: Azure KeyVault: "), "{err}");
        assert!(!err.contains(&vault.client_secret()), "{err}");
        err
    };
    let prefix = format!("Error: key store probe failed: Azure KeyVault: {}: ", vault.url());

    // Network: nothing listens where the authority points.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = fails(with_authority(&format!("https://{closed}")));
    assert!(
        err.starts_with(&format!(
            "{prefix}network: the token endpoint cannot be reached (check AZURE_AUTHORITY_HOST \
             or the managed identity endpoint, firewall and routes): key store is not reachable: \
             azure: failed to list '': failed to list secrets: token endpoint unreachable: Entra ID token request to \
             https://{closed}: "
        )),
        "{err}"
    );
    // DNS: an authority that cannot resolve (RFC 6761 reserves .invalid).
    let err = fails(with_authority("https://login.kes-check.invalid"));
    assert!(
        err.starts_with(&format!(
            "{prefix}DNS: the token endpoint's host name does not resolve (check \
             AZURE_AUTHORITY_HOST and the resolver): key store is not reachable: azure: failed \
             to list '': failed to list secrets: token endpoint unreachable: Entra ID token request to \
             https://login.kes-check.invalid: "
        )),
        "{err}"
    );
    // Proxy: the vault is reached directly (loopback bypasses proxies, as in Go), the
    // authority only through a proxy that does not answer.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut env = with_authority("https://login.kes-check.invalid");
    env.push(("HTTPS_PROXY", format!("http://{proxy}")));
    let err = fails(env);
    assert!(
        err.starts_with(&format!(
            "{prefix}proxy: the token endpoint cannot be reached through the HTTPS proxy \
             http://{proxy} (check HTTPS_PROXY and NO_PROXY): "
        )),
        "{err}"
    );
    // CA: an authority whose certificate this host does not trust (another fake vault,
    // with its own CA).
    let other = FakeVault::start();
    let err = fails(with_authority(&other.authority()));
    assert!(
        err.starts_with(&format!(
            "{prefix}CA: the token endpoint's TLS certificate is not trusted (add its CA with \
             SSL_CERT_FILE or SSL_CERT_DIR): "
        )),
        "{err}"
    );
    // Authentication: the token endpoint answers 400 or 401.
    for fault in [
        Fault::Unauthorized,
        Fault::Raw {
            status: 400,
            content_type: "application/json".into(),
            body: r#"{"error":"invalid_request","error_description":"AADSTS900144: The request body must contain client_id."}"#.into(),
        },
    ] {
        vault.inject_forever(Op::Token, fault);
        let err = fails(with_authority(&vault.authority()));
        assert!(
            err.starts_with(&format!(
                "{prefix}authentication: no token for the vault (check the tenant, the client \
                 ID and secret, or the managed identity): azure: failed to list '': failed to \
                 list secrets: authentication failed: Entra ID token request: HTTP 40"
            )),
            "{err}"
        );
        vault.clear_faults();
    }
    // Throttled or failing after the retries: the endpoint answered, without a token.
    vault.inject_forever(Op::Token, Fault::Status { status: 503, retry_after: None });
    let err = fails(with_authority(&vault.authority()));
    assert!(
        err.starts_with(&format!(
            "{prefix}the token endpoint answered without a token: azure: failed to list '': \
             failed to list secrets: authentication failed: Entra ID token request: HTTP 503"
        )),
        "{err}"
    );
}
