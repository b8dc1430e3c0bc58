//! The seed tutorial (`shared/seed/azure-key-vault-tutorial.txt`, "KES Server Setup" and
//! "KES CLI Access"), word for word, with an `fs` key store in place of Key Vault and the
//! values its rendering lost filled in as `kes-config-cli.md` §6 says.

use crate::harness::{Server, TempDir, json_field, kes};

/// Step 3's config.yml, properly nested, admin disabled, one policy for the client.
fn config(client_identity: &str) -> String {
    format!(
        "address: 127.0.0.1:0   # the tutorial listens on 0.0.0.0:7373; a test takes a free port
admin:
  identity: disabled  # We disable the admin identity since we don't need it in this guide
tls:
  key: private.key    # The KES server TLS private key
  cert: public.crt    # The KES server TLS certificate
policy:
  my-app:
    allow:
    - /v1/key/create/my-key*
    - /v1/key/generate/my-key*
    - /v1/key/decrypt/my-key*
    identities:
    - {client_identity} # Use the identity of your client.crt
keystore:
  fs:
    path: ./keys      # in place of azure.keyvault for this test
"
    )
}

/// Runs the tutorial with `ip` as the value of `--ip` in step 1, and talks to the server
/// at `host` (a name the server certificate carries).
fn tutorial(ip: &str, host: &str) {
    let dir = TempDir::new("tutorial");
    let d = dir.path();

    // 1. $ kes identity new --ip "<ip>" localhost
    let o = kes(&["identity", "new", "--ip", ip, "localhost"]).dir(d).run();
    let server_id = kes(&["identity", "of", "public.crt"]).dir(d).run().ok().to_string();
    assert!(
        o.ok().starts_with(&format!(
            "  Private key:  private.key\n  Certificate:  public.crt\n  Identity:     {server_id}\n"
        )),
        "{}",
        o.stdout
    );

    // 2. $ kes identity new --key=client.key --cert=client.crt MyApp
    let o =
        kes(&["identity", "new", "--key=client.key", "--cert=client.crt", "MyApp"]).dir(d).run();
    let client_id = kes(&["identity", "of", "client.crt"]).dir(d).run().ok().to_string();
    assert!(
        o.ok().starts_with(&format!(
            "  Private key:  client.key\n  Certificate:  client.crt\n  Identity:     {client_id}\n"
        )),
        "{}",
        o.stdout
    );
    //    $ kes identity of client.crt
    let t = kes(&["identity", "of", "client.crt"]).dir(d).tty();
    assert_eq!((t.code, t.stdout), (0, format!("  Identity:  {client_id}\n")));

    // 3. config.yml, 4. $ kes server --config config.yml --auth off
    std::fs::write(dir.join("config.yml"), config(&client_id)).unwrap();
    let server = Server::start(d, &["server", "--config", "config.yml", "--auth", "off"]);
    assert!(
        server.stderr().contains("WARNING: '--auth' is deprecated and ignored"),
        "{}",
        server.stderr()
    );

    // KES CLI Access: export KES_SERVER, KES_CLIENT_CERT, KES_CLIENT_KEY (and trust the
    // self-signed server certificate the way Go programs do).
    let endpoint = format!("https://{host}:{}", server.port);
    let cli = |args: &[&str]| {
        kes(args)
            .dir(d)
            .env("KES_SERVER", &endpoint)
            .env("KES_CLIENT_CERT", "client.crt")
            .env("KES_CLIENT_KEY", "client.key")
            .env("SSL_CERT_FILE", "public.crt")
    };
    // $ kes key create my-key-1
    assert_eq!(cli(&["key", "create", "my-key-1"]).run().ok(), "");
    // $ kes key dek my-key-1
    let dek = cli(&["key", "dek", "my-key-1"]).run();
    let (plaintext, ciphertext) =
        (json_field(dek.ok(), "plaintext"), json_field(&dek.stdout, "ciphertext"));
    assert_eq!(
        cli(&["key", "decrypt", "my-key-1", &ciphertext]).run().ok(),
        format!("{{\"plaintext\":\"{plaintext}\"}}")
    );
    let t = cli(&["key", "dek", "my-key-1"]).tty();
    assert!(
        t.stdout.starts_with("\nplaintext:  ") && t.stdout.contains("\nciphertext: "),
        "{}",
        t.stdout
    );

    // A key outside the policy is refused, naming the path.
    cli(&["key", "create", "other"]).run().fails_with(&format!(
        "failed to create key \"other\": not authorized: insufficient permissions (identity {client_id} \
         is not allowed to access /v1/key/create/other; its policy on the server must allow it)"
    ));
    // Without trusting public.crt the user is told what to do.
    let o = cli(&["key", "create", "my-key-2"]).env("SSL_CERT_FILE", "").run();
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("is not trusted")
            && o.stderr.contains("SSL_CERT_FILE=public.crt")
            && o.stderr.contains("-k/--insecure"),
        "{}",
        o.stderr
    );
    // The server logged the audit events of the keys it created.
    let audit = server.stdout_lines().join("\n");
    assert!(audit.contains("/v1/key/create/my-key-1"), "{audit}");
}

#[test]
fn tutorial_as_written_with_an_empty_ip() {
    // `--ip ""` adds no IP; `localhost` becomes the certificate's DNS name.
    tutorial("", "localhost");
}

#[test]
fn tutorial_with_the_loopback_ip() {
    tutorial("127.0.0.1", "127.0.0.1");
}

#[test]
fn an_empty_ip_certificate_is_not_valid_for_the_loopback_address() {
    let dir = TempDir::new("tut-ip");
    let d = dir.path();
    kes(&["identity", "new", "--ip", "", "localhost"]).dir(d).run().ok();
    kes(&["identity", "new", "--key=client.key", "--cert=client.crt", "MyApp"]).dir(d).run().ok();
    let client_id = kes(&["identity", "of", "client.crt"]).dir(d).run().ok().to_string();
    std::fs::write(dir.join("config.yml"), config(&client_id)).unwrap();
    let server = Server::start(d, &["server", "--config", "config.yml"]);
    let url = server.url();
    kes(&["key", "create", "my-key-1"])
        .dir(d)
        .env("KES_SERVER", &url)
        .env("KES_CLIENT_CERT", "client.crt")
        .env("KES_CLIENT_KEY", "client.key")
        .env("SSL_CERT_FILE", "public.crt")
        .run()
        .fails_with(&format!(
            "failed to create key \"my-key-1\": TLS: the certificate of {url} is not valid for '127.0.0.1' \
             (it is valid for localhost) (connect with a name or IP the certificate carries, make the \
             certificate with 'kes identity new --ip <IP> --dns <name>', or skip verification (insecure) \
             with -k/--insecure)"
        ));
}
