//! packaging/kes.1 documents every command and every flag that `kes ... -h` shows: the
//! test walks the real binary's help from `kes -h` down through every listed command and
//! requires a `.SS "kes <command>"` section naming each of its flags, and no section for a
//! command that does not exist.

use std::collections::BTreeMap;
use std::process::Command;

const KES: &str = env!("CARGO_BIN_EXE_kes");

/// The commands and flags that `kes <path> -h` lists.
fn help(path: &[String]) -> (Vec<String>, Vec<String>) {
    let o = Command::new(KES).args(path).arg("-h").output().unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    let (mut commands, mut flags, mut section) = (Vec::new(), Vec::new(), "");
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line;
            continue;
        }
        // The name column: the first 30 characters of an indented line.
        let name: String = line.chars().take(30).collect();
        match section {
            "Commands:" => {
                if let Some(c) = name.split_whitespace().next() {
                    commands.push(c.to_string());
                }
            }
            "Options:" => {
                for w in name.split([' ', ',']) {
                    let is_flag = w.len() > 1
                        && w.starts_with('-')
                        && w.trim_start_matches('-').starts_with(|c: char| c.is_ascii_alphabetic());
                    if is_flag {
                        flags.push(w.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    (commands, flags)
}

fn walk(path: Vec<String>, out: &mut BTreeMap<String, Vec<String>>) {
    let (commands, flags) = help(&path);
    let name = std::iter::once("kes".to_string()).chain(path.iter().cloned()).collect::<Vec<_>>();
    out.insert(name.join(" "), flags);
    for c in commands {
        let mut p = path.clone();
        p.push(c);
        walk(p, out);
    }
}

/// `.SS "kes ..."` sections of the man page with groff's `\-` turned into `-`.
fn man_sections() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/kes.1"))
        .unwrap()
        .replace("\\-", "-");
    let mut out = BTreeMap::new();
    for part in text.split(".SS \"").skip(1) {
        let (name, body) = part.split_once('"').unwrap();
        let body = body.split("\n.SH ").next().unwrap();
        out.insert(name.to_string(), body.to_string());
    }
    out
}

/// Whether `flag` occurs in `text` as a whole word.
fn names(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + flag.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

#[test]
fn the_man_page_covers_every_command_and_flag_of_the_help() {
    let mut help = BTreeMap::new();
    walk(Vec::new(), &mut help);
    assert!(help.contains_key("kes key create") && help["kes server"].contains(&"--config".into()));
    let man = man_sections();
    let mut missing = Vec::new();
    for (cmd, flags) in &help {
        let Some(body) = man.get(cmd) else {
            missing.push(format!("no section .SS \"{cmd}\""));
            continue;
        };
        for f in flags {
            if !names(body, f) {
                missing.push(format!("{cmd}: {f}"));
            }
        }
    }
    for cmd in man.keys() {
        if !help.contains_key(cmd) {
            missing.push(format!("section for '{cmd}', which -h does not list"));
        }
    }
    assert!(missing.is_empty(), "packaging/kes.1 is out of date:\n{}", missing.join("\n"));
}
