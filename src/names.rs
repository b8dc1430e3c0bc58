//! The name rule of keys, policies and identities, and of listing patterns
//! (`kes-api.md` §4). A leaf: the API checks request paths with it, `config` the names in
//! the file, and the `fs` store every name before it becomes a file name, one rule for all.

/// Longest key, policy or identity name the API accepts (`kes-api.md` §4).
pub const MAX_NAME_LEN: usize = 80;

/// `validName` of `kes-api.md` §4: 1..=80 bytes of `[0-9A-Za-z_-]`, no leading or trailing
/// `-`, and not `_` alone.
pub fn valid_name(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_NAME_LEN || s == "_" {
        return false;
    }
    if s.starts_with('-') || s.ends_with('-') {
        return false;
    }
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `validPattern` of `kes-api.md` §4: `""` and `*` are valid; otherwise a valid name that
/// may end in one `*`; `-` may not be first or last.
pub fn valid_pattern(s: &str) -> bool {
    if s.is_empty() || s == "*" {
        return true;
    }
    if s.len() > MAX_NAME_LEN {
        return false;
    }
    let body = s.strip_suffix('*').unwrap_or(s);
    if s.starts_with('-') || s.ends_with('-') || s == "_" {
        return false;
    }
    body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn names_from_the_spec() {
        for ok in ["my-key", "abc123", "0", "123ABC321", "_-___---_", "_0", "0-Z", "my_key-0"] {
            assert!(valid_name(ok), "{ok} should be valid");
        }
        let long = "a".repeat(81);
        for bad in ["", "my.key", "key/", "☰", "hel<lo", "Εmacs", long.as_str(), "_", "-a", "a-"]
        {
            assert!(!valid_name(bad), "{bad} should be invalid");
        }
        assert!(valid_name(&"a".repeat(80)));
    }

    #[test]
    fn patterns_from_the_spec() {
        for ok in ["my*", "_-*", "*", "", "my-*", "abc"] {
            assert!(valid_pattern(ok), "{ok} should be valid");
        }
        for bad in ["*-*", "my.key", "key/", "my-", "**", "a*b"] {
            assert!(!valid_pattern(bad), "{bad} should be invalid");
        }
    }
}
