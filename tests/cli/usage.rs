//! Usage, help, unknown commands and flags, version, completion: no server needed.

use crate::harness::{TempDir, kes};

#[test]
fn kes_alone_and_help_print_usage_to_stderr_with_exit_2() {
    for args in [&[][..], &["-h"], &["--help"]] {
        let o = kes(args).run();
        assert_eq!(o.code, 2, "{args:?}");
        assert_eq!(o.stdout, "");
        assert!(o.stderr.starts_with("Usage:\n    kes [options] <command>\n"), "{}", o.stderr);
        for word in [
            "server",
            "ls",
            "key",
            "policy",
            "identity",
            "log",
            "status",
            "metric",
            "migrate",
            "update",
            "--version",
            "--auto-completion",
            "--help",
        ] {
            assert!(o.stderr.contains(word), "{word} missing from {}", o.stderr);
        }
    }
}

#[test]
fn every_help_lists_every_flag() {
    let table: &[(&[&str], &[&str])] = &[
        (
            &["ls", "-h"],
            &[
                "--api-key",
                "--server",
                "--json",
                "--identity",
                "--policy",
                "--insecure",
                "-a,",
                "-s,",
                "-i,",
                "-p,",
                "-k,",
            ],
        ),
        (
            &["key"],
            &["create", "import", "info", "ls", "rm", "encrypt", "decrypt", "dek", "--help"],
        ),
        (&["key", "create", "--help"], &["--insecure", "--enclave", "--help"]),
        (&["key", "import", "-h"], &["--insecure", "--enclave"]),
        (&["key", "info", "-h"], &["--insecure", "--json", "--color", "--enclave"]),
        (&["key", "ls", "-h"], &["--insecure", "--json", "--color", "--enclave"]),
        (&["key", "rm", "-h"], &["--insecure", "--enclave"]),
        (&["key", "encrypt", "-h"], &["--insecure", "--enclave"]),
        (&["key", "decrypt", "-h"], &["--insecure", "--enclave"]),
        (&["key", "dek", "-h"], &["--insecure", "--enclave"]),
        (&["policy"], &["info", "show", "ls"]),
        (&["policy", "info", "-h"], &["--insecure", "--json", "--color", "--enclave"]),
        (&["policy", "show", "-h"], &["--insecure", "--json", "--enclave"]),
        (&["policy", "ls", "-h"], &["--insecure", "--json", "--color", "--enclave"]),
        (&["identity", "-h"], &["new", "of", "info", "ls"]),
        (
            &["identity", "new", "-h"],
            &["--key", "--cert", "--ip", "--dns", "--expiry", "--encrypt", "--force", "-f,"],
        ),
        (&["identity", "of", "-h"], &["<certificate file>"]),
        (&["identity", "info", "-h"], &["--insecure", "--json", "--color", "--enclave"]),
        (&["identity", "ls", "-h"], &["--insecure", "--json", "--color", "--enclave"]),
        (&["log", "-h"], &["--audit", "--error", "--json", "--insecure"]),
        (&["status", "-h"], &["--insecure", "--short", "--api", "--json", "--color", "-s,"]),
        (&["metric", "-h"], &["--rate", "--insecure"]),
        (&["server", "-h"], &["--config", "--addr", "--dev"]),
    ];
    for (args, flags) in table {
        let o = kes(args).run();
        assert_eq!((o.code, o.stdout.as_str()), (2, ""), "{args:?}");
        assert!(o.stderr.starts_with("Usage:\n"), "{args:?}: {}", o.stderr);
        for f in *flags {
            assert!(o.stderr.contains(f), "{args:?}: {f} missing from\n{}", o.stderr);
        }
    }
}

#[test]
fn unknown_commands_and_flags_get_upstreams_messages() {
    kes(&["foo"]).run().fails_with("\"foo\" is not a kes command. See 'kes --help'");
    kes(&["--foo"]).run().fails_with("unknown flag: --foo. See 'kes --help'");
    kes(&["key", "foo"]).run().fails_with("\"foo\" is not a key command. See 'kes key --help'");
    kes(&["policy", "bar"])
        .run()
        .fails_with("\"bar\" is not a policy command. See 'kes policy --help'");
    kes(&["key", "--nope"]).run().fails_with("unknown flag: --nope. See 'kes key --help'");
    kes(&["key", "create", "--foo", "x"])
        .run()
        .fails_with("unknown flag: --foo. See 'kes key create --help'");
    kes(&["key", "create", "-x", "k"])
        .run()
        .fails_with("unknown shorthand flag: 'x' in -x. See 'kes key create --help'");
    kes(&["key", "info", "x", "--color"])
        .run()
        .fails_with("flag needs an argument: --color. See 'kes key info --help'");
    kes(&["key", "info", "--color=blue", "x"]).run().fails_with(
        "invalid argument \"blue\" for \"--color\" flag: invalid color option. See 'kes key info --help'",
    );
    kes(&["status", "--json=maybe"]).run().fails_with(
        "invalid argument \"maybe\" for \"--json\" flag: strconv.ParseBool: parsing \"maybe\": invalid syntax. See 'kes status --help'",
    );
    kes(&["metric", "--rate", "soon"]).run().fails_with(
        "invalid argument \"soon\" for \"--rate\" flag: time: invalid duration \"soon\". See 'kes metric --help'",
    );
}

#[test]
fn missing_arguments_are_named_before_anything_connects() {
    kes(&["key", "create"]).run().fails_with("no key name specified. See 'kes key create --help'");
    kes(&["key", "rm"]).run().fails_with("no key name specified. See 'kes key rm --help'");
    kes(&["key", "info"]).run().fails_with("no key name specified. See 'kes key info --help'");
    kes(&["key", "info", "a", "b"])
        .run()
        .fails_with("too many arguments. See 'kes key info --help'");
    kes(&["key", "import", "k"])
        .run()
        .fails_with("no crypto key specified. See 'kes key import --help'");
    kes(&["key", "import", "k", "!!!!"]).run().fails_with(
        "invalid key: illegal base64 data at input byte 0. See 'kes key import --help'",
    );
    kes(&["key", "encrypt", "k"])
        .run()
        .fails_with("no message specified. See 'kes key encrypt --help'");
    kes(&["key", "decrypt", "k"])
        .run()
        .fails_with("no ciphertext specified. See 'kes key decrypt --help'");
    kes(&["key", "decrypt", "k", "AAAA", "a*"]).run().fails_with(
        "invalid context: illegal base64 data at input byte 1. See 'kes key decrypt --help'",
    );
    kes(&["key", "dek"]).run().fails_with("no key name specified. See 'kes key dek --help'");
    kes(&["key", "dek", "a", "b", "c"])
        .run()
        .fails_with("too many arguments. See 'kes key dek --help'");
    kes(&["ls", "a", "b"]).run().fails_with("too many arguments");
    kes(&["ls", "-i", "-p"])
        .run()
        .fails_with("'-p / --policy' and '-i / --identity' must not be used at the same time");
    kes(&["log", "--audit", "--error"])
        .run()
        .fails_with("'--audit' and '--error' must not be used at the same time");
    kes(&["status", "extra"]).run().fails_with("too many arguments. See 'kes status --help'");
    kes(&["policy", "info"])
        .run()
        .fails_with("no policy name specified. See 'kes policy info --help'");
}

#[test]
fn update_and_migrate_say_they_are_not_supported() {
    kes(&["update"]).run().fails_with(
        "'kes update' is not supported yet: install new versions with your package manager",
    );
    kes(&["migrate", "--from", "a.yml"]).run().fails_with("'kes migrate' is not supported yet");
}

#[test]
fn version_prints_four_aligned_lines() {
    for flag in ["-v", "--version"] {
        let o = kes(&[flag]).run();
        let out = o.ok();
        let labels: Vec<&str> = out.lines().map(|l| l[..11].trim_end()).collect();
        assert_eq!(labels, ["Version", "Runtime", "License", "Copyright"], "{out}");
        assert!(out.starts_with(&format!("Version    {}", env!("CARGO_PKG_VERSION"))), "{out}");
    }
}

#[test]
fn completion_candidates_when_the_shell_asks() {
    let ask =
        |line: &str, shell: &str| kes(&["key"]).env("COMP_LINE", line).env("SHELL", shell).run();
    assert_eq!(ask("kes ke", "/bin/bash").ok(), "key\n");
    assert_eq!(
        ask("kes key ", "/usr/bin/zsh").ok(),
        "create\nimport\ninfo\nls\nrm\nencrypt\ndecrypt\ndek\n"
    );
    assert_eq!(ask("kes key create my-key --", "/bin/bash").ok(), "--insecure\n--enclave\n");
    assert_eq!(ask("kes status --j", "/bin/bash").ok(), "--json\n");
    assert_eq!(
        ask("kes identity new --key k --", "/bin/bash").ok(),
        "--key\n--cert\n--force\n--ip\n--dns\n--expiry\n--encrypt\n"
    );
    // Not bash or zsh: the command runs as usual (here: `kes key` prints its usage).
    assert_eq!(ask("kes ke", "/usr/bin/fish").code, 2);
}

#[test]
fn auto_completion_installs_the_hook_once() {
    let home = TempDir::new("home");
    let h = home.path().display().to_string();
    let o = kes(&["--auto-completion"]).env("HOME", &h).env("SHELL", "/bin/bash").run();
    let text = o.ok();
    let rc = std::fs::read_to_string(home.join(".bashrc")).unwrap();
    let hook = format!("complete -o default -C {} kes", crate::harness::KES);
    assert_eq!(rc, format!("{hook}\n"));
    assert!(text.starts_with(&format!("Added completion to '{h}/.bashrc'\n")), "{text}");
    let again = kes(&["--auto-completion"]).env("HOME", &h).env("SHELL", "/bin/bash").run();
    assert_eq!(again.ok(), "Completion is already installed.\n");
    kes(&["--auto-completion"])
        .env("HOME", &h)
        .env("SHELL", "/bin/fish")
        .run()
        .fails_with("auto-completion for '/bin/fish' is not available");
}
