//! The dependency policy, enforced on every `cargo test`: no async runtime, no OpenSSL or
//! aws-lc, no archived YAML or PEM crates anywhere in the lock file, and a one-line reason
//! above every direct dependency in Cargo.toml.

const BANNED: &[&str] = &[
    "tokio",
    "hyper",
    "async-std",
    "mio",
    "openssl",
    "openssl-sys",
    "aws-lc-rs",
    "aws-lc-sys",
    "serde_yaml",
    "serde_yml",
    "rustls-pemfile",
];

fn read(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

#[test]
fn no_banned_crate_is_locked() {
    let lock = read("Cargo.lock");
    let names: Vec<&str> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert!(names.contains(&"ring") && names.contains(&"rustls"), "lock file parsed");
    for banned in BANNED {
        assert!(!names.contains(banned), "Cargo.lock contains banned crate '{banned}'");
    }
}

#[test]
fn every_direct_dependency_says_why() {
    let manifest = read("Cargo.toml");
    let mut section = "";
    let mut previous = "";
    let mut checked = 0;
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t;
        } else if section == "[dependencies]" && !t.is_empty() && !t.starts_with('#') {
            let name = t.split(['=', ' ']).next().unwrap();
            assert!(
                previous.starts_with('#'),
                "dependency '{name}' has no reason comment above it"
            );
            checked += 1;
        }
        if !t.is_empty() {
            previous = t;
        }
    }
    assert!(checked >= 15, "checked {checked} dependencies");
}
