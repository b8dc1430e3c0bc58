//! Percent-encoding (RFC 3986 §2.1), one encoder for the whole program: the `Location` of
//! a redirect (`api`), the names and patterns the CLI puts into request paths (`cli`), and
//! the secret names, query values and token-request forms of the Azure client
//! (`keystore`). A leaf module (no imports), since `keystore` may not import `http`.
//!
//! The callers differ only in what they leave as it is: each has its own [`Keep`] set,
//! named after the Go function (or the RFC 3986 set) whose output it must match byte for
//! byte. Everything outside the set is written as `%XX` with upper-case hex digits, as Go
//! and RFC 3986 §2.1 ("should use uppercase") do. A space is never written as `+`: no
//! caller encodes an HTML form for Go's `url.QueryEscape` to read back.
//!
//! The decoder of request paths stays in `http` (`http::percent_decode`), its only user.

/// The bytes an encoding leaves unescaped: one bit per byte value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Keep([u64; 4]);

impl Keep {
    /// The bytes of `bytes`, nothing else.
    const fn of(bytes: &[u8]) -> Keep {
        let mut bits = [0u64; 4];
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i] as usize;
            bits[b / 64] |= 1 << (b % 64);
            i += 1;
        }
        Keep(bits)
    }

    /// RFC 3986 §2.3's unreserved characters (`A-Z a-z 0-9 - . _ ~`) and the bytes of
    /// `extra`.
    const fn unreserved_and(extra: &[u8]) -> Keep {
        let mut keep = Keep::of(extra).0;
        let mut b = 0usize;
        while b < 128 {
            let c = b as u8;
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                keep[b / 64] |= 1 << (b % 64);
            }
            b += 1;
        }
        Keep(keep)
    }

    /// Whether `b` stays as it is.
    pub const fn keeps(&self, b: u8) -> bool {
        self.0[(b / 64) as usize] & (1 << (b % 64)) != 0
    }
}

/// RFC 3986's unreserved characters only: what a query value, a form field or a single path
/// segment may carry without any reading of reserved characters. The Azure client's secret
/// names, versions, `resource` and `client_id` query values and token-request forms (Azure
/// reads these with Go's, .NET's and Python's decoders alike).
pub const UNRESERVED: Keep = Keep::unreserved_and(b"");

/// Go's `url.PathEscape`: one path segment, so `/`, `;`, `,` and `?` are escaped while
/// `$&+:=@` stay. The CLI's key, policy and identity names and `ls` patterns, as upstream's
/// CLI (kms-go) escapes them.
pub const PATH_SEGMENT: Keep = Keep::unreserved_and(b"$&+:=@");

/// Go's `url.URL{Path: p}.String()` (`url.URL.EscapedPath`): a whole path, so `/`, `;` and
/// `,` stay too and of the reserved characters only `?` (and `#`) is escaped. The `Location`
/// of a redirect to a cleaned request path, as Go's `http.ServeMux` writes it.
pub const PATH: Keep = Keep::unreserved_and(b"$&+,/:;=@");

/// Visible ASCII (`!` to `~`): an already-encoded part such as a raw query, where `%`
/// must stay. Escapes what Go's `http.Redirect` escapes (bytes outside ASCII) and, beyond
/// Go, every control character and the space, so that no byte of a request's own ends up
/// unescaped in a response header.
pub const RAW: Keep = {
    let mut keep = [0u64; 4];
    let mut b = 0x21usize;
    while b < 0x7f {
        keep[b / 64] |= 1 << (b % 64);
        b += 1;
    }
    Keep(keep)
};

/// `text` with every byte outside `keep` written as `%XX` (upper-case hex).
pub fn percent_encode(text: &str, keep: Keep) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if keep.keeps(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The four encoders this module replaced, kept verbatim as the oracle the new one is
    // proven against: `http::escape_path`, `http::escape_raw`, `cli::client::escape` and
    // `keystore::azure::client::pct_encode`.
    mod old {
        fn push_percent(out: &mut String, b: u8) {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }

        pub fn escape_path(path: &str) -> String {
            let mut out = String::with_capacity(path.len());
            for &b in path.as_bytes() {
                if b.is_ascii_alphanumeric() || b"-._~$&+,/:;=@".contains(&b) {
                    out.push(char::from(b));
                } else {
                    push_percent(&mut out, b);
                }
            }
            out
        }

        pub fn escape_raw(part: &str) -> String {
            let mut out = String::with_capacity(part.len());
            for &b in part.as_bytes() {
                if b > 0x20 && b < 0x7f {
                    out.push(char::from(b));
                } else {
                    push_percent(&mut out, b);
                }
            }
            out
        }

        pub fn cli_escape(segment: &str) -> String {
            let mut out = String::with_capacity(segment.len());
            for b in segment.bytes() {
                if b.is_ascii_alphanumeric() || b"-_.~$&+:=@".contains(&b) {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }

        pub fn pct_encode(s: &str) -> String {
            let mut out = String::with_capacity(s.len());
            for b in s.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }
    }

    type Pair = (&'static str, fn(&str) -> String, Keep);

    const PAIRS: [Pair; 4] = [
        ("http::escape_path", old::escape_path, PATH),
        ("http::escape_raw", old::escape_raw, RAW),
        ("cli::client::escape", old::cli_escape, PATH_SEGMENT),
        ("azure::client::pct_encode", old::pct_encode, UNRESERVED),
    ];

    /// Every char of one and two bytes, and every 97th beyond, alone: so every byte 0..=255
    /// that a `&str` can hold (all of ASCII, every continuation byte and every lead byte)
    /// passes each encoder, in every position of a UTF-8 sequence (checked below).
    #[test]
    fn equals_the_old_encoders_on_every_byte() {
        let mut buf = [0u8; 4];
        let mut seen = [false; 256];
        let chars = (0..0x800u32).chain((0x800..=0x10ffff).step_by(97)).chain([0x10ffff]);
        for c in chars.filter_map(char::from_u32) {
            let s: &str = c.encode_utf8(&mut buf);
            for b in s.bytes() {
                seen[usize::from(b)] = true;
            }
            for (name, old, keep) in PAIRS {
                assert_eq!(percent_encode(s, keep), old(s), "{name} on U+{:04X}", c as u32);
            }
        }
        // The bytes no valid UTF-8 holds (0xC0, 0xC1, 0xF5..=0xFF) are the only ones unseen.
        let unseen: Vec<usize> = (0..256).filter(|&b| !seen[b]).collect();
        let expect: Vec<usize> = [0xc0, 0xc1].into_iter().chain(0xf5..=0xff).collect();
        assert_eq!(unseen, expect);
    }

    #[test]
    fn equals_the_old_encoders_on_edge_cases() {
        let cases = [
            "",
            "my-key_1.~",
            "a/b c",
            "100%",
            "%41%zz",
            "a+b=c&d",
            "my*",
            "?#[]!'()*",
            "/v1/key/list/my-key_1.~$&+,:;=@",
            "/x\r\nX-Injected: yes",
            "a\0b\tc\u{7f}",
            "schlüssel-☰-🔑",
            "名前/キー",
            "\u{feff}\u{a0}\u{2028}",
            " leading and trailing ",
        ];
        for s in cases {
            for (name, old, keep) in PAIRS {
                assert_eq!(percent_encode(s, keep), old(s), "{name} on {s:?}");
            }
        }
    }

    /// The sets byte by byte, as the Go functions they are named after define them.
    #[test]
    fn keep_sets() {
        let kept = |keep: Keep| -> String {
            (0..=255u8).filter(|&b| keep.keeps(b)).map(char::from).collect()
        };
        let unreserved = "-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";
        assert_eq!(kept(UNRESERVED), unreserved);
        assert_eq!(
            kept(PATH_SEGMENT),
            "$&+-.0123456789:=@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
        );
        assert_eq!(
            kept(PATH),
            "$&+,-./0123456789:;=@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
        );
        assert_eq!(kept(RAW).len(), 94);
        assert!(kept(RAW).starts_with("!\"#$%&'()*") && kept(RAW).ends_with("|}~"));
        // No set keeps a byte outside ASCII.
        for keep in [UNRESERVED, PATH_SEGMENT, PATH, RAW] {
            assert!((0x80..=0xff).all(|b| !keep.keeps(b)));
            assert!((0..0x21).all(|b| !keep.keeps(b)));
        }
    }

    #[test]
    fn known_outputs() {
        assert_eq!(percent_encode("a/b c+d", PATH_SEGMENT), "a%2Fb%20c+d");
        assert_eq!(percent_encode("/a b?c", PATH), "/a%20b%3Fc");
        assert_eq!(percent_encode("a=b%0d&c=\u{7f}\x01 é", RAW), "a=b%0d&c=%7F%01%20%C3%A9");
        assert_eq!(
            percent_encode("a-b_c.d~e f/g?h=i&j", UNRESERVED),
            "a-b_c.d~e%20f%2Fg%3Fh%3Di%26j"
        );
        assert_eq!(percent_encode("☰", UNRESERVED), "%E2%98%B0");
        assert_eq!(percent_encode("my*", PATH_SEGMENT), "my%2A");
        assert_eq!(percent_encode("/x\r\nX-Injected: yes", PATH), "/x%0D%0AX-Injected:%20yes");
        assert_eq!(
            percent_encode("/?#%\"<>!*'()[]", PATH),
            "/%3F%23%25%22%3C%3E%21%2A%27%28%29%5B%5D"
        );
    }
}
