//! §4.1: endpoints, credentials, trust, failover, and the errors a person can act on.

use crate::harness::{Fixture, TempDir, dead_port, kes};

const KEY: &str = "kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc";

#[test]
fn missing_and_conflicting_credentials_give_upstreams_messages() {
    let create = || kes(&["key", "create", "k"]);
    create().run().fails_with("no API key specified. Consider setting MINIO_KES_API_KEY");
    create()
        .env("KES_API_KEY", KEY)
        .env("KES_CLIENT_KEY", "c.key")
        .run()
        .fails_with("API key and private key file cannot be used at the same time");
    create()
        .env("MINIO_KMS_KES_API_KEY", KEY)
        .env("MINIO_KES_CLIENT_CERT", "c.crt")
        .run()
        .fails_with("API key and certificate file cannot be used at the same time");
    create()
        .env("MINIO_KES_KEY_FILE", "c.key")
        .run()
        .fails_with("no certificate file specified. Consider setting MINIO_KES_CERT_FILE");
    create()
        .env("KES_CLIENT_CERT", "c.crt")
        .run()
        .fails_with("no private key file specified. Consider setting MINIO_KES_KEY_FILE");
    create()
        .env("KES_API_KEY", "kes:v1:bogus")
        .run()
        .fails_with("parsing API key: invalid API key");
    create()
        .env("MINIO_KES_SERVER", "")
        .env("KES_SERVER", "127.0.0.1:7373")
        .env("KES_API_KEY", KEY)
        .run()
        .fails_with("'MINIO_KES_SERVER' contains no hosts / IPs");
    create()
        .env("KES_CLIENT_CERT", "missing.crt")
        .env("KES_CLIENT_KEY", "missing.key")
        .run()
        .fails_with("reading certificate file: open missing.crt: no such file or directory");
}

#[test]
fn an_unreachable_server_is_named_with_where_it_came_from() {
    let port = dead_port();
    kes(&["key", "create", "k"])
        .env("KES_SERVER", &format!("127.0.0.1:{port}"))
        .env("KES_API_KEY", KEY)
        .run()
        .fails_with(&format!(
            "failed to create key \"k\": cannot connect to https://127.0.0.1:{port} (from KES_SERVER): \
             connection refused (is the KES server running, and is the endpoint right?)"
        ));
    kes(&["ls", "-s", &format!("http://127.0.0.1:{port}"), "-a", KEY]).run().fails_with(&format!(
        "failed to list keys: cannot connect to https://127.0.0.1:{port} (from --server): \
         connection refused (is the KES server running, and is the endpoint right?)"
    ));
}

#[test]
fn api_key_and_certificate_authentication_both_work() {
    let fx = Fixture::start();
    assert_eq!(fx.admin(&["key", "create", "by-api-key"]).run().ok(), "");
    assert_eq!(fx.user(&["key", "create", "app-by-cert"]).run().ok(), "");
    let info = fx.admin(&["key", "info", "--json", "app-by-cert"]).run();
    assert!(info.ok().contains(&format!("\"created_by\":\"{}\"", fx.user_id)), "{}", info.stdout);
    let info = fx.admin(&["key", "info", "--json", "by-api-key"]).run();
    assert!(info.ok().contains(&format!("\"created_by\":\"{}\"", fx.admin_id)), "{}", info.stdout);
    // `-a` on `kes ls` beats the environment.
    let o = fx
        .user(&["ls", "-a", &fx.admin_key])
        .env("KES_CLIENT_CERT", "")
        .env("KES_CLIENT_KEY", "")
        .run();
    assert_eq!(o.ok(), "Key\napp-by-cert\nby-api-key\n");
}

#[test]
fn a_403_names_the_path_and_the_identity() {
    let fx = Fixture::start();
    fx.user(&["key", "create", "other"]).run().fails_with(&format!(
        "failed to create key \"other\": not authorized: insufficient permissions (identity {} is not \
         allowed to access /v1/key/create/other; its policy on the server must allow it)",
        fx.user_id
    ));
    // Deny beats allow.
    let o = fx.user(&["key", "create", "app-denied-1"]).run();
    assert!(o.stderr.contains("/v1/key/create/app-denied-1;"), "{}", o.stderr);
    assert_eq!(o.code, 1);
}

#[test]
fn an_untrusted_server_certificate_says_how_to_trust_it_or_skip_verification() {
    let fx = Fixture::start();
    let url = fx.server.url();
    let hint = "(to trust the server, set SSL_CERT_FILE to its certificate or to the CA that issued it, \
                e.g. SSL_CERT_FILE=public.crt; to skip verification (insecure), pass -k/--insecure)";
    fx.admin(&["key", "create", "k1"]).env("SSL_CERT_FILE", "").run().fails_with(&format!(
        "failed to create key \"k1\": TLS: the certificate of {url} is not trusted (signed by an unknown \
         authority, e.g. self-signed) {hint}"
    ));
    // -k skips verification; SSL_CERT_DIR trusts a directory, as in Go.
    assert_eq!(fx.admin(&["key", "create", "-k", "k2"]).env("SSL_CERT_FILE", "").run().ok(), "");
    let certs = TempDir::new("certs");
    std::fs::copy(fx.dir.join("server.crt"), certs.join("kes.pem")).unwrap();
    let dir = certs.path().display().to_string();
    let o =
        fx.admin(&["key", "create", "k3"]).env("SSL_CERT_FILE", "").env("SSL_CERT_DIR", &dir).run();
    assert_eq!(o.ok(), "");
    // Go's rule (one implementation with the Azure client, `kes::goroots`): SSL_CERT_FILE
    // replaces the bundle file but leaves the directories, and an unreadable file is skipped.
    let missing = certs.join("missing.pem").display().to_string();
    let o =
        fx.admin(&["key", "create", "k4"]).env("SSL_CERT_FILE", &missing).env("SSL_CERT_DIR", &dir);
    assert_eq!(o.run().ok(), "");
    let o = fx.admin(&["key", "create", "k5"]).env("SSL_CERT_FILE", &missing);
    o.run().fails_with(&format!(
        "failed to create key \"k5\": TLS: the certificate of {url} is not trusted (signed by an unknown \
         authority, e.g. self-signed) {hint}"
    ));
}

#[test]
fn a_certificate_for_another_name_is_explained() {
    let fx = Fixture::start();
    // The fixture's certificate carries 127.0.0.1 only.
    let url = format!("https://localhost:{}", fx.server.port);
    fx.admin(&["key", "create", "k"]).env("KES_SERVER", &url).run().fails_with(&format!(
        "failed to create key \"k\": TLS: the certificate of {url} is not valid for 'localhost' (it is \
         valid for 127.0.0.1) (connect with a name or IP the certificate carries, make the certificate \
         with 'kes identity new --ip <IP> --dns <name>', or skip verification (insecure) with -k/--insecure)"
    ));
}

#[test]
fn failover_skips_a_dead_first_endpoint() {
    let fx = Fixture::start();
    let dead = dead_port();
    let list = format!(" https://127.0.0.1:{dead} , {} ", fx.server.url());
    assert_eq!(fx.admin(&["key", "create", "fo-1"]).env("KES_SERVER", &list).run().ok(), "");
    assert_eq!(fx.admin(&["ls"]).env("KES_SERVER", &list).run().ok(), "Key\nfo-1\n");
    // Every endpoint dead: each one is named.
    let d2 = dead_port();
    let o = fx
        .admin(&["key", "create", "fo-2"])
        .env("KES_SERVER", &format!("127.0.0.1:{dead},127.0.0.1:{d2}"))
        .run();
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains(&format!("https://127.0.0.1:{dead} (from KES_SERVER): connection refused; cannot connect to https://127.0.0.1:{d2}")),
        "{}",
        o.stderr
    );
}

#[test]
fn endpoint_variables_follow_upstreams_precedence() {
    let fx = Fixture::start();
    let dead = format!("https://127.0.0.1:{}", dead_port());
    let live = fx.server.url();
    // MINIO_KES_SERVER beats KES_SERVER, which beats MINIO_KMS_KES_ENDPOINT.
    let o = fx.admin(&["ls"]).env("MINIO_KES_SERVER", &dead).env("KES_SERVER", &live).run();
    assert!(o.stderr.contains("(from MINIO_KES_SERVER)"), "{}", o.stderr);
    let o = fx.admin(&["ls"]).env("KES_SERVER", &live).env("MINIO_KMS_KES_ENDPOINT", &dead).run();
    assert_eq!(o.ok(), "");
    let o = fx
        .admin(&["ls"])
        .env("MINIO_KES_SERVER", &dead)
        .env("KES_SERVER", "")
        .env("MINIO_KMS_KES_ENDPOINT", &dead)
        .run();
    assert!(o.stderr.contains("(from MINIO_KES_SERVER)"), "{}", o.stderr);
    // -s beats them all; http:// becomes https://.
    let http = live.replace("https://", "http://");
    assert_eq!(fx.admin(&["ls", "-s", &http]).env("MINIO_KES_SERVER", &dead).run().ok(), "");
    // API keys: MINIO_KES_API_KEY beats KES_API_KEY.
    let o = fx.admin(&["ls"]).env("MINIO_KES_API_KEY", KEY).run();
    assert!(o.stderr.contains("not authorized"), "{}", o.stderr);
}

/// A broken encrypted key is refused before any password prompt (the prompt itself is
/// tested in tests/cli_encrypted.rs).
#[test]
fn a_broken_encrypted_private_key_is_refused_without_a_prompt() {
    let dir = TempDir::new("enc");
    let crt =
        kes(&["identity", "new", "--key", "k.key", "--cert", "c.crt", "x"]).dir(dir.path()).run();
    crt.ok();
    std::fs::write(
        dir.join("k.key"),
        "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00000000000000000000000000000000\n\nAAAA\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    kes(&["key", "create", "x"])
        .env("KES_CLIENT_CERT", "c.crt")
        .env("KES_CLIENT_KEY", "k.key")
        .dir(dir.path())
        .run()
        .fails_with(
            "failed to read TLS private key: encrypted PEM data is not a multiple of the block size",
        );
    // A key that does not belong to the certificate.
    kes(&["identity", "new", "--key", "other.key", "--cert", "other.crt", "y"])
        .dir(dir.path())
        .run()
        .ok();
    kes(&["key", "create", "x"])
        .env("KES_CLIENT_CERT", "c.crt")
        .env("KES_CLIENT_KEY", "other.key")
        .dir(dir.path())
        .run()
        .fails_with(
            "tls: private key does not match public key ('other.key' does not belong to 'c.crt')",
        );
}

#[test]
fn the_dev_servers_printed_environment_is_enough_with_insecure() {
    let dir = TempDir::new("dev");
    let server = crate::harness::Server::dev(dir.path());
    let key = server.dev_api_key.clone().expect("--dev prints an API key");
    let printed = server.stdout_lines().join("\n");
    assert!(printed.contains(&format!("export KES_SERVER={}", server.url())), "{printed}");
    assert!(printed.contains(&format!("export KES_API_KEY={key}")), "{printed}");
    let cli = |args: &[&str]| kes(args).env("KES_SERVER", &server.url()).env("KES_API_KEY", &key);
    assert_eq!(cli(&["key", "create", "-k", "dev-key"]).run().ok(), "");
    assert_eq!(cli(&["ls", "-k"]).run().ok(), "Key\ndev-key\n");
    let me = cli(&["identity", "info", "-k"]).run();
    assert!(me.ok().ends_with("Role        Admin\n"), "{}", me.stdout);
}

#[test]
fn a_5xx_moves_on_to_the_next_endpoint_and_is_passed_through_at_the_end() {
    let fx = Fixture::start();
    // A second server with the same config and certificate, and its own key directory.
    let other = TempDir::new("second");
    for f in ["config.yml", "server.crt", "server.key"] {
        std::fs::copy(fx.dir.join(f), other.join(f)).unwrap();
    }
    let second = crate::harness::Server::start(other.path(), &["server", "--config", "config.yml"]);
    // Break the first server's key store: creating keys there now fails with 502.
    let keys = fx.dir.join("keys");
    std::fs::remove_dir_all(&keys).unwrap();
    std::fs::write(&keys, "not a directory").unwrap();
    fx.admin(&["key", "create", "k"])
        .run()
        .fails_with("failed to create key \"k\": failed to create key");

    let both = format!("{},{}", fx.server.url(), second.url());
    assert_eq!(fx.admin(&["key", "create", "k"]).env("KES_SERVER", &both).run().ok(), "");
    let on_second = fx.admin(&["ls"]).env("KES_SERVER", &second.url()).run();
    assert_eq!(on_second.ok(), "Key\nk\n");
    // A 4xx is an answer, not a failure: no failover to the broken server (whose answer
    // would be a 502).
    let reversed = format!("{},{}", second.url(), fx.server.url());
    fx.admin(&["key", "info", "nope"])
        .env("KES_SERVER", &reversed)
        .run()
        .fails_with("failed to describe keys: key does not exist");
}
