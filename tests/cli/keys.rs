//! `kes key …` and `kes ls` against a real server: byte-exact pipe output, terminal output.

use crate::harness::{Fixture, IMPORT_KEY, b64, json_field};

#[test]
fn create_list_info_and_remove() {
    let fx = Fixture::start();
    assert_eq!(fx.admin(&["key", "create", "alpha", "beta"]).run().ok(), "");
    assert_eq!(fx.admin(&["ls"]).run().ok(), "Key\nalpha\nbeta\n");
    assert_eq!(fx.admin(&["ls", "--json"]).run().ok(), "[\"alpha\",\"beta\"]\n");
    assert_eq!(fx.admin(&["ls", "al"]).run().ok(), "Key\nalpha\n");
    assert_eq!(fx.admin(&["ls", "nothing"]).run().ok(), "");
    assert_eq!(fx.admin(&["ls", "--json", "nothing"]).run().ok(), "[]\n");
    assert_eq!(fx.admin(&["key", "ls", "b*"]).run().ok(), "Key\nbeta\n");
    assert_eq!(fx.admin(&["key", "ls", "--json"]).run().ok(), "[\"alpha\",\"beta\"]\n");

    fx.admin(&["key", "create", "alpha"])
        .run()
        .fails_with("failed to create key \"alpha\": key already exists");

    // --json: kms-go's KeyInfo (no algorithm for AES256), one line.
    let json = fx.admin(&["key", "info", "--json", "alpha"]).run();
    let created = json_field(json.ok(), "created_at");
    let algorithm = kes::crypto::Algorithm::preferred().as_str();
    let alg_field = if algorithm == "ChaCha20" { "\"algorithm\":\"ChaCha20\"," } else { "" };
    assert_eq!(
        json.stdout,
        format!(
            "{{\"name\":\"alpha\",{alg_field}\"created_at\":\"{created}\",\"created_by\":\"{}\"}}\n",
            fx.admin_id
        )
    );
    // Text: four lines, labels padded to 11, no newline after the last (as upstream).
    let date = format!("{} {}", &created[..10], &created[11..19]);
    assert_eq!(
        fx.admin(&["key", "info", "alpha"]).run().ok(),
        format!(
            "Name        alpha\nAlgorithm   {algorithm}\nDate        {date}\nOwner       {}",
            fx.admin_id
        )
    );
    // On a terminal, with colours off, the same lines end with a newline.
    let tty = fx.admin(&["key", "info", "--color", "never", "alpha"]).tty();
    assert_eq!(
        (tty.code, tty.stdout),
        (
            0,
            format!(
                "Name        alpha\nAlgorithm   {algorithm}\nDate        {date}\nOwner       {}\n",
                fx.admin_id
            )
        )
    );
    // --color always colours even a pipe.
    assert!(fx.admin(&["key", "info", "--color=always", "alpha"]).run().ok().contains("\x1b["));

    assert_eq!(fx.admin(&["key", "rm", "alpha", "beta"]).run().ok(), "");
    fx.admin(&["key", "info", "alpha"])
        .run()
        .fails_with("failed to describe keys: key does not exist");
    fx.admin(&["key", "rm", "alpha"])
        .run()
        .fails_with("failed to remove key \"alpha\": key does not exist");
    assert_eq!(fx.admin(&["ls"]).run().ok(), "");
}

#[test]
fn listings_look_like_upstreams_on_a_terminal() {
    let fx = Fixture::start();
    fx.admin(&["key", "create", "k1", "k2"]).run().ok();
    let o = fx.admin(&["ls"]).tty();
    assert_eq!((o.code, o.stdout.as_str()), (0, "\x1b[4mKey\x1b[0m\nk1\nk2\n"));
    let o = fx.admin(&["ls"]).env("NO_COLOR", "1").tty();
    assert_eq!(o.stdout, "Key\nk1\nk2\n");
    let o = fx.admin(&["key", "ls", "--color", "never"]).tty();
    assert_eq!(o.stdout, "Key\nk1\nk2\n");
}

#[test]
fn encrypt_decrypt_and_dek_for_pipes_and_terminals() {
    let fx = Fixture::start();
    fx.admin(&["key", "create", "ek"]).run().ok();

    // Pipes: JSON without a trailing newline.
    let enc = fx.admin(&["key", "encrypt", "ek", "Hello World"]).run();
    let ct = json_field(enc.ok(), "ciphertext");
    assert_eq!(enc.stdout, format!("{{\"ciphertext\":\"{ct}\"}}"));
    let dec = fx.admin(&["key", "decrypt", "ek", &ct]).run();
    assert_eq!(dec.ok(), format!("{{\"plaintext\":\"{}\"}}", b64(b"Hello World")));

    let dek = fx.admin(&["key", "dek", "ek"]).run();
    let (pt, ct) = (json_field(dek.ok(), "plaintext"), json_field(&dek.stdout, "ciphertext"));
    assert_eq!(dek.stdout, format!("{{\"plaintext\":\"{pt}\",\"ciphertext\":\"{ct}\"}}"));
    assert_eq!(pt.len(), 44, "a 32-byte key");
    assert_eq!(
        fx.admin(&["key", "decrypt", "ek", &ct]).run().ok(),
        format!("{{\"plaintext\":\"{pt}\"}}")
    );

    // With a context, the context must match.
    let context = b64(b"my-bucket/my-object");
    let dek = fx.admin(&["key", "dek", "ek", &context]).run();
    let (pt, ct) = (json_field(dek.ok(), "plaintext"), json_field(&dek.stdout, "ciphertext"));
    assert_eq!(
        fx.admin(&["key", "decrypt", "ek", &ct, &context]).run().ok(),
        format!("{{\"plaintext\":\"{pt}\"}}")
    );
    fx.admin(&["key", "decrypt", "ek", &ct])
        .run()
        .fails_with("failed to decrypt ciphertext: decryption failed: ciphertext is not authentic");

    // Terminals: upstream's text shapes.
    let t = fx.admin(&["key", "encrypt", "ek", "hi"]).tty();
    assert!(t.stdout.starts_with("\nciphertext: ") && t.stdout.ends_with("\n"), "{:?}", t.stdout);
    let ct = t.stdout.trim().trim_start_matches("ciphertext: ").to_string();
    let t = fx.admin(&["key", "decrypt", "ek", &ct]).tty();
    assert_eq!((t.code, t.stdout), (0, format!("\nplaintext: {}\n", b64(b"hi"))));
    let t = fx.admin(&["key", "dek", "ek"]).tty();
    let lines: Vec<&str> = t.stdout.split('\n').collect();
    assert_eq!(lines.len(), 4, "{:?}", t.stdout);
    assert_eq!((lines[0], lines[3]), ("", ""));
    assert!(lines[1].starts_with("plaintext:  ") && lines[1].len() == 12 + 44, "{}", lines[1]);
    assert!(lines[2].starts_with("ciphertext: "), "{}", lines[2]);

    fx.admin(&["key", "dek", "missing"])
        .run()
        .fails_with("failed to derive key: key does not exist");
    fx.admin(&["key", "encrypt", "missing", "x"])
        .run()
        .fails_with("failed to encrypt message: key does not exist");
}

#[test]
fn import_takes_a_base64_key_and_checks_its_size() {
    let fx = Fixture::start();
    assert_eq!(fx.admin(&["key", "import", "imported", IMPORT_KEY]).run().ok(), "");
    let enc = fx.admin(&["key", "encrypt", "imported", "x"]).run();
    let ct = json_field(enc.ok(), "ciphertext");
    assert_eq!(
        fx.admin(&["key", "decrypt", "imported", &ct]).run().ok(),
        format!("{{\"plaintext\":\"{}\"}}", b64(b"x"))
    );
    let json = fx.admin(&["key", "info", "--json", "imported"]).run();
    assert!(!json.ok().contains("algorithm"), "AES256 is kms-go's zero value: {}", json.stdout);
    fx.admin(&["key", "import", "short", "AAAA"])
        .run()
        .fails_with("failed to import \"short\": invalid key size for 'AES256'");
    fx.admin(&["key", "import", "imported", IMPORT_KEY])
        .run()
        .fails_with("failed to import \"imported\": key already exists");
}

#[test]
fn listings_follow_continue_at_past_a_full_page() {
    let fx = Fixture::start();
    // Listing reads names only, so key files can be laid down directly: a full page of
    // 1024 `a…` names, then three `b…` names that only the second page can bring.
    let keys = fx.dir.join("keys");
    let mut expected: Vec<String> = (0..1024).map(|i| format!("a{i:04}")).collect();
    expected.extend(["b".to_string(), "b1".to_string(), "b2".to_string()]);
    for name in &expected {
        std::fs::write(keys.join(name), "x").unwrap();
    }
    let json = fx.admin(&["ls", "--json"]).run();
    let names: Vec<String> = serde_json::from_str(json.ok()).unwrap();
    assert_eq!(names, expected);
    let text = fx.admin(&["ls"]).run();
    assert_eq!(text.ok().lines().count(), 1 + expected.len());
    assert!(text.stdout.ends_with("a1023\nb\nb1\nb2\n"));
}

#[test]
fn rotate_retire_enable_rewrap_and_info_with_versions() {
    let fx = Fixture::start();
    fx.admin(&["key", "create", "rot"]).run().ok();
    let dek = fx.admin(&["key", "dek", "rot"]).run();
    let (pt, ct) = (json_field(dek.ok(), "plaintext"), json_field(&dek.stdout, "ciphertext"));
    let context = b64(b"my-bucket/my-object");
    let dek = fx.admin(&["key", "dek", "rot", &context]).run();
    let (pt2, ct2) = (json_field(dek.ok(), "plaintext"), json_field(&dek.stdout, "ciphertext"));

    // Pipe: the answer as one JSON line, the versions oldest first.
    let out = fx.admin(&["key", "rotate", "rot"]).run();
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert!(out.stdout.ends_with("}\n") && out.stdout.lines().count() == 1, "{}", out.stdout);
    assert_eq!(v["name"], "rot");
    let versions = v["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(
        (versions[0]["id"].as_str(), versions[0]["state"].as_str()),
        (Some("0"), Some("live"))
    );
    let new = versions[1]["id"].as_str().unwrap().to_string();
    assert_eq!(versions[1]["created_by"], fx.admin_id.as_str());

    // `kes key info` adds the versions block once there is more than one version.
    let info = fx.admin(&["key", "info", "rot"]).run();
    let date = |i: usize| {
        let c = versions[i]["created_at"].as_str().unwrap();
        format!("{} {}", &c[..10], &c[11..19])
    };
    let tail = format!(
        "\nVersions    {:<16}  live     {}\n            {new}  live     {}",
        "0",
        date(0),
        date(1)
    );
    assert!(info.ok().ends_with(&tail), "{:?}", info.stdout);
    let json = fx.admin(&["key", "info", "--json", "rot"]).run();
    let j: serde_json::Value = serde_json::from_str(json.ok()).unwrap();
    assert_eq!(j["versions"].as_array().unwrap().len(), 2);

    // Rewrap a file: blank lines stay blank, a context follows its ciphertext.
    let file = fx.dir.join("cts.txt");
    std::fs::write(&file, format!("{ct}\n\n{ct2} {context}\n")).unwrap();
    let out = fx.admin(&["key", "rewrap", "rot", file.to_str().unwrap()]).run();
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 3, "{:?}", out.stdout);
    assert_eq!(lines[1], "");
    assert_ne!(lines[0], ct);
    assert_eq!(
        fx.admin(&["key", "decrypt", "rot", lines[0]]).run().ok(),
        format!("{{\"plaintext\":\"{pt}\"}}")
    );
    assert_eq!(
        fx.admin(&["key", "decrypt", "rot", lines[2], &context]).run().ok(),
        format!("{{\"plaintext\":\"{pt2}\"}}")
    );
    // On a terminal the progress is shown; the output lines are the same shape.
    let t = fx.admin(&["key", "rewrap", "rot", file.to_str().unwrap()]).tty();
    assert_eq!(t.code, 0, "{}", t.stdout);
    assert!(t.stdout.contains("Rewrapped 3 lines with key \"rot\"\n"), "{:?}", t.stdout);
    // A bad line names its number.
    std::fs::write(&file, format!("{ct}\nnot-base64!\n")).unwrap();
    let out = fx.admin(&["key", "rewrap", "rot", file.to_str().unwrap()]).run();
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr, "Error: line 2: the ciphertext is not standard base64\n");

    // Retire the first version: its ciphertexts fail; re-enable: they decrypt again.
    let out = fx.admin(&["key", "rotate", "rot", "--retire", "0"]).run();
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(v["versions"][0]["state"], "retired");
    fx.admin(&["key", "decrypt", "rot", &ct])
        .run()
        .fails_with("failed to decrypt ciphertext: decryption failed: ciphertext is not authentic");
    fx.admin(&["key", "rotate", "rot", "--enable", "0"]).run().ok();
    assert_eq!(
        fx.admin(&["key", "decrypt", "rot", &ct]).run().ok(),
        format!("{{\"plaintext\":\"{pt}\"}}")
    );
    // Terminal: the versions table.
    let t = fx.admin(&["key", "rotate", "--color", "never", "rot"]).tty();
    assert_eq!(t.code, 0);
    assert!(t.stdout.starts_with("Name        rot\nVersions    0 "), "{:?}", t.stdout);
    assert_eq!(t.stdout.lines().count(), 4, "{:?}", t.stdout);

    // Errors.
    fx.admin(&["key", "rotate", "missing"])
        .run()
        .fails_with("failed to rotate key \"missing\": key does not exist");
    fx.admin(&["key", "rotate", "rot", "--retire", "ffff"]).run().fails_with(
        "failed to retire version \"ffff\" of key \"rot\": key version 'ffff' does not exist",
    );
    let both = fx.admin(&["key", "rotate", "rot", "--retire", "0", "--enable", "0"]).run();
    assert_eq!(both.code, 2, "{both:?}");
}
