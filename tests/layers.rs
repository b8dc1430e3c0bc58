//! The layer table of the crate doc (`src/lib.rs`, "Layers"), enforced on every
//! `cargo test`: every `crate::…` path (and every `super::…` that leaves its top-level
//! module) in `src/` must name a module the table lets the file's module import, and every
//! `kes::…` path in `src/main.rs` one that `main` may use. The table is read from the crate
//! doc itself, so the document and the check cannot drift apart. Comments, strings and
//! character literals are skipped; test code counts like any other code; an alias of the
//! crate root (`use crate as x`), which would hide paths from the check, is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One row of the table: the layer's rank and what its modules may import besides lower
/// layers and the leaves.
#[derive(Debug, Clone)]
struct Row {
    rank: u32,
    also: BTreeSet<String>,
}

/// The table: module -> row; leaves (rank 0 in the table's word `leaf`) separately.
#[derive(Debug, Default)]
struct Table {
    rows: BTreeMap<String, Row>,
    leaves: BTreeSet<String>,
    /// What `src/main.rs` may use.
    main: BTreeSet<String>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Names in backticks, in order.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// Reads the table rows `//! | L<n> or leaf or main | modules | also may import |` of the
/// crate doc's "Layers" section.
fn parse_table(lib: &str) -> Table {
    let mut table = Table::default();
    let mut in_section = false;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else { continue };
        let doc = doc.trim();
        if let Some(title) = doc.strip_prefix("## ") {
            in_section = title.starts_with("Layers");
            continue;
        }
        if !in_section || !doc.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = doc.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 3 {
            continue;
        }
        let (layer, modules, also) = (cells[0], ticked(cells[1]), ticked(cells[2]));
        if layer == "leaf" {
            table.leaves.extend(modules);
        } else if layer == "main" {
            table.main.extend(also);
        } else if let Some(rank) = layer.strip_prefix('L').and_then(|n| n.parse().ok()) {
            for m in modules {
                let row = Row { rank, also: also.iter().cloned().collect() };
                assert!(table.rows.insert(m.clone(), row).is_none(), "'{m}' has two rows");
            }
        }
    }
    table
}

impl Table {
    /// Why `from` may not import `to`, or `None` when it may.
    fn forbids(&self, from: &str, to: &str) -> Option<String> {
        if from == to || self.leaves.contains(to) {
            return None;
        }
        if self.leaves.contains(from) {
            return Some(format!("the leaf `{from}` may import only other leaves"));
        }
        let (Some(f), Some(t)) = (self.rows.get(from), self.rows.get(to)) else {
            return Some(format!("`{to}` or `{from}` is not in the layer table"));
        };
        if t.rank < f.rank || f.also.contains(to) {
            return None;
        }
        Some(format!("`{from}` (L{}) may not import `{to}` (L{})", f.rank, t.rank))
    }
}

/// `src` with comments, string and char literals blanked out (newlines kept, so line
/// numbers stay right).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend(bytes.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }));
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0usize, 0);
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if let Some(hashes) = raw_string_start(rest) {
            // r"…", r#"…"#, br#"…"#: ends at `"` followed by the same number of `#`.
            let open = rest.iter().position(|&c| c == b'"').unwrap() + 1;
            let mut close = "\"".to_string();
            close.push_str(&"#".repeat(hashes));
            let len = rest[open..]
                .windows(close.len())
                .position(|w| w == close.as_bytes())
                .map_or(rest.len(), |p| open + p + close.len());
            blank(&mut out, &rest[..len]);
            i += len;
        } else if rest[0] == b'"' || rest.starts_with(b"b\"") {
            let mut j = if rest[0] == b'"' { 1 } else { 2 };
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let len = (j + 1).min(rest.len());
            blank(&mut out, &rest[..len]);
            i += len;
        } else if rest[0] == b'\'' {
            // A char literal ('x', '\n', '\u{1F600}', 'é'), else a lifetime or label.
            let len = if rest.get(1) == Some(&b'\\') {
                rest[2..].iter().position(|&c| c == b'\'').map_or(1, |p| p + 3)
            } else {
                let ch = std::str::from_utf8(&rest[1..rest.len().min(6)])
                    .ok()
                    .or_else(|| {
                        (2..6).rev().find_map(|n| std::str::from_utf8(rest.get(1..n)?).ok())
                    })
                    .and_then(|s| s.chars().next());
                match ch {
                    Some(c) if rest.get(1 + c.len_utf8()) == Some(&b'\'') => 2 + c.len_utf8(),
                    _ => 1,
                }
            };
            blank(&mut out, &rest[..len]);
            i += len;
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Some(number of #)` when `rest` starts a raw string literal.
fn raw_string_start(rest: &[u8]) -> Option<usize> {
    let after = rest.strip_prefix(b"br").or_else(|| rest.strip_prefix(b"r"))?;
    let hashes = after.iter().take_while(|&&c| c == b'#').count();
    (after.get(hashes) == Some(&b'"')).then_some(hashes)
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every top-level module a path in `code` names through `prefix` (`crate::`, `kes::`), with
/// its line: `crate::a::b` gives `a`, `crate::{a, b::c}` gives `a` and `b`.
fn roots_after(code: &str, prefix: &str) -> Vec<(usize, String)> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(p) = code[from..].find(prefix) {
        let at = from + p;
        from = at + prefix.len();
        if at > 0 && (is_ident(b[at - 1]) || b[at - 1] == b'$') {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let rest = code[from..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group, skipping nested `{…}`.
            let (mut depth, mut item, mut items) = (0, String::new(), Vec::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            for item in items {
                let name: String = item.trim().chars().take_while(|&c| is_ident(c as u8)).collect();
                if !name.is_empty() && name != "self" {
                    found.push((line, name));
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c as u8)).collect();
            if !name.is_empty() {
                found.push((line, name));
            }
        }
    }
    found
}

/// The module path of a file under `src/`: `keystore/azure/mod.rs` -> `[keystore, azure]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> =
        rel.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Top-level modules reached by `super::` paths that climb out of the file's own top-level
/// module (`super::super::x` from `a/b.rs` reaches `x`). Inline `mod x { … }` blocks count
/// as one more level each.
fn escaping_supers(code: &str, module: &[String]) -> Vec<(usize, String)> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    // One entry per open brace: whether it opened an inline module.
    let mut braces: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' => {
                braces.push(opens_inline_mod(&code[..i]));
            }
            b'}' => {
                braces.pop();
            }
            _ => {}
        }
        let starts = code[i..].starts_with("super::")
            && (i == 0 || !is_ident(b[i - 1]))
            && !code[..i].trim_end().ends_with("::");
        if !starts {
            i += 1;
            continue;
        }
        let mut depth = 0;
        let mut rest = &code[i..];
        while let Some(r) = rest.trim_start().strip_prefix("super::") {
            depth += 1;
            rest = r;
        }
        let levels = module.len() + braces.iter().filter(|&&m| m).count();
        if depth >= levels {
            let name: String =
                rest.trim_start().chars().take_while(|&c| is_ident(c as u8)).collect();
            let line = code[..i].matches('\n').count() + 1;
            found.push((line, name));
        }
        i = code.len() - rest.len();
    }
    found
}

/// Whether a `{` after `before` opens `mod name { … }`.
fn opens_inline_mod(before: &str) -> bool {
    let before = before.trim_end();
    let rest = before.trim_end_matches(|c: char| is_ident(c as u8));
    if rest.len() == before.len() {
        return false;
    }
    rest.trim_end().strip_suffix("mod").is_some_and(|r| !r.ends_with(|c: char| is_ident(c as u8)))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every import the table forbids, as `src/file.rs:line: reason`.
fn violations(table: &Table) -> (Vec<String>, usize) {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let (mut bad, mut checked) = (Vec::new(), 0);
    for file in files {
        let rel = file.strip_prefix(&src).unwrap().to_path_buf();
        let shown = format!("src/{}", rel.display());
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        if rel == Path::new("lib.rs") {
            continue;
        }
        if rel == Path::new("main.rs") {
            for (line, to) in roots_after(&code, "kes::") {
                checked += 1;
                if !table.main.contains(&to) {
                    bad.push(format!("{shown}:{line}: `main` may not use `kes::{to}`"));
                }
            }
            continue;
        }
        // An alias of the crate root would hide every path behind it from this check.
        for alias in ["crate as ", "extern crate self"] {
            for (i, _) in code.match_indices(alias) {
                let line = code[..i].matches('\n').count() + 1;
                bad.push(format!("{shown}:{line}: `{alias}…` hides imports from tests/layers.rs"));
            }
        }
        let module = module_path(&rel);
        let from = &module[0];
        let mut paths = roots_after(&code, "crate::");
        paths.extend(escaping_supers(&code, &module));
        for (line, to) in paths {
            checked += 1;
            if let Some(why) = table.forbids(from, &to) {
                bad.push(format!("{shown}:{line}: `crate::{to}`: {why}"));
            }
        }
    }
    (bad, checked)
}

fn table() -> Table {
    parse_table(&std::fs::read_to_string(root().join("src/lib.rs")).unwrap())
}

#[test]
fn every_module_is_in_the_table_once() {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let table = table();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    let listed: BTreeSet<String> = table.rows.keys().chain(table.leaves.iter()).cloned().collect();
    assert_eq!(declared, listed, "modules of src/lib.rs vs the layer table's");
    assert!(table.leaves.is_disjoint(&table.rows.keys().cloned().collect()));
    assert!(!table.main.is_empty(), "the table says what main may use");
    for (m, row) in &table.rows {
        for a in &row.also {
            assert!(table.rows.contains_key(a), "'{m}' may import '{a}', which has no row");
        }
    }
}

/// The map has no exceptions below `server`: no L1 or L2 module may import a module of its
/// own layer (what several need is a leaf, such as `pem` for PEM private keys), so the table
/// gives none of them a "may also import".
#[test]
fn no_lower_layer_has_an_exception() {
    let table = table();
    for (m, row) in &table.rows {
        if row.rank <= 2 {
            assert!(row.also.is_empty(), "'{m}' (L{}) may also import {:?}", row.rank, row.also);
        }
    }
    assert_eq!(
        table.forbids("keystore", "crypto").unwrap(),
        "`keystore` (L1) may not import `crypto` (L1)"
    );
    assert_eq!(table.forbids("keystore", "pem"), None);
    assert_eq!(table.forbids("pem", "der"), None);
    assert_eq!(
        table.forbids("pem", "crypto").unwrap(),
        "the leaf `pem` may import only other leaves"
    );
}

#[test]
fn no_import_breaks_the_layer_table() {
    let (bad, checked) = violations(&table());
    assert!(checked > 100, "only {checked} paths found: is the scanner still working?");
    assert!(bad.is_empty(), "imports the layer table in src/lib.rs forbids:\n{}", bad.join("\n"));
}

#[test]
fn the_scanner_sees_code_and_skips_the_rest() {
    let src = r##"
use crate::{api, http::{self, Head}, self};
// crate::server in a comment
/* crate::cli in a /* nested */ block */
let s = "crate::config in a string \" still";
let r = r#"crate::server"#;
let c = '"'; let l: &'static str = x; crate::keystore::cache::KeyCache::new();
fn f<'a>(x: &'a str) { crate::obs::Level::INFO; super::super::auth::x(); }
"##;
    let code = code_only(src);
    let roots: Vec<(usize, String)> = roots_after(&code, "crate::");
    let want = [(2, "api"), (2, "http"), (7, "keystore"), (8, "obs")];
    assert_eq!(roots, want.map(|(l, m)| (l, m.to_string())));
    let module = vec!["keystore".to_string(), "cache".to_string()];
    assert_eq!(escaping_supers(&code, &module), [(8, "auth".to_string())]);
    assert!(escaping_supers("use super::sealed;", &module).is_empty());
    let top = vec!["obs".to_string()];
    assert!(escaping_supers("mod tests {\n use super::*;\n}", &top).is_empty());
    assert_eq!(escaping_supers("fn f() {}\nuse super::api;", &top), [(2, "api".to_string())]);
    assert_eq!(module_path(Path::new("keystore/azure/mod.rs")), ["keystore", "azure"]);

    let t = parse_table(
        "//! ## Layers\n//! | L2 | `api` | |\n//! | L1 | `http`, `auth` | |\n\
         //! | L3 | `server`, `config` | `config` |\n//! | leaf | `der` | |\n//! | main | | `cli` |\n",
    );
    assert_eq!(t.forbids("api", "http"), None);
    assert_eq!(t.forbids("server", "config"), None);
    assert_eq!(t.forbids("api", "der"), None);
    assert_eq!(t.forbids("http", "auth").unwrap(), "`http` (L1) may not import `auth` (L1)");
    assert_eq!(t.forbids("http", "api").unwrap(), "`http` (L1) may not import `api` (L2)");
    assert_eq!(
        t.forbids("config", "server").unwrap(),
        "`config` (L3) may not import `server` (L3)"
    );
    assert!(t.forbids("der", "http").is_some());
    assert!(t.forbids("api", "nowhere").is_some());
}
