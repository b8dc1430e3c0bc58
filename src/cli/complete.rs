//! Shell completion: with `complete -C kes kes` installed (`kes --auto-completion`), bash
//! and zsh run `kes` with `COMP_LINE` set, and the candidates are printed one per line
//! instead of running a command (`kes-config-cli.md` §4.3).

use super::client::Env;
use super::{CmdResult, Fail, io_msg, out};
use std::io::Write;

/// Command path (after the binary name) -> what may follow it.
const TABLE: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "server", "ls", "key", "policy", "identity", "log", "status", "metric", "migrate",
            "update",
        ],
    ),
    (
        "server",
        &[
            "--config",
            "--addr",
            "--dev",
            "--mlock",
            "--no-mlock",
            "--no-seccomp",
            "--no-reexec",
            "--max-connections",
            "--log-format",
            "--signal-reload",
            "--auth",
            "--key",
            "--cert",
        ],
    ),
    ("ls", &["--api-key", "--server", "--json", "--identity", "--policy", "--insecure"]),
    ("key", &["create", "import", "info", "ls", "rm", "encrypt", "decrypt", "dek"]),
    ("key create", &["--insecure", "--enclave"]),
    ("key import", &["--insecure", "--enclave"]),
    ("key info", &["--insecure", "--json", "--color", "--enclave"]),
    ("key ls", &["--insecure", "--json", "--color", "--enclave"]),
    ("key rm", &["--insecure", "--enclave"]),
    ("key encrypt", &["--insecure", "--enclave"]),
    ("key decrypt", &["--insecure", "--enclave"]),
    ("key dek", &["--insecure", "--enclave"]),
    ("policy", &["info", "show", "ls"]),
    ("policy info", &["--insecure", "--json", "--color", "--enclave"]),
    ("policy show", &["--insecure", "--json", "--enclave"]),
    ("policy ls", &["--insecure", "--json", "--color", "--enclave"]),
    ("identity", &["new", "of", "info", "ls"]),
    ("identity new", &["--key", "--cert", "--force", "--ip", "--dns", "--expiry", "--encrypt"]),
    ("identity of", &[]),
    ("identity info", &["--insecure", "--json", "--color", "--enclave"]),
    ("identity ls", &["--insecure", "--json", "--color", "--enclave"]),
    ("log", &["--audit", "--error", "--json", "--insecure"]),
    ("status", &["--short", "--api", "--json", "--color", "--insecure"]),
    ("metric", &["--rate", "--insecure"]),
    ("migrate", &[]),
    ("update", &[]),
];

/// The candidates for a command line: the deepest known command the line starts with
/// decides what may follow; the word being typed filters them.
pub fn candidates(line: &str) -> Vec<&'static str> {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let partial = if line.ends_with(char::is_whitespace) || words.len() < 2 {
        ""
    } else {
        words.pop().unwrap_or_default()
    };
    // Skip the binary name and every flag; keep sub-command words and arguments.
    let path: Vec<&str> = words.iter().skip(1).filter(|w| !w.starts_with('-')).copied().collect();
    let mut best: Option<&(&str, &[&str])> = None;
    for entry in TABLE {
        let depth = if entry.0.is_empty() { 0 } else { entry.0.split(' ').count() };
        let matches = depth <= path.len() && path[..depth].join(" ") == entry.0;
        if matches && best.is_none_or(|b| b.0.len() < entry.0.len()) {
            best = Some(entry);
        }
    }
    let Some((_, list)) = best else { return Vec::new() };
    list.iter().copied().filter(|c| c.starts_with(partial)).collect()
}

/// Prints completion candidates when the shell asks for them (`$SHELL` ends with bash or
/// zsh and `COMP_LINE` is set). Returns whether it did.
pub fn complete(env: Env<'_>) -> bool {
    let Some(shell) = env("SHELL") else { return false };
    if !shell.ends_with("bash") && !shell.ends_with("zsh") {
        return false;
    }
    let Some(line) = env("COMP_LINE") else { return false };
    let mut s = String::new();
    for c in candidates(&line) {
        s.push_str(c);
        s.push('\n');
    }
    let _ = out(&s);
    true
}

/// `kes --auto-completion`: adds the completion hook to `~/.bashrc` or `~/.zshrc`.
pub fn install() -> CmdResult {
    let shell = std::env::var("SHELL").map_err(|_| {
        Fail::Error("failed to detect shell. The env variable $SHELL is not defined".into())
    })?;
    let (rc, zsh) = if shell.ends_with("zsh") {
        (".zshrc", true)
    } else if shell.ends_with("bash") {
        (".bashrc", false)
    } else {
        return Err(Fail::Error(format!("auto-completion for '{shell}' is not available")));
    };
    let home = std::env::var("HOME")
        .map_err(|_| Fail::Error("failed to detect home directory: $HOME is not set".into()))?;
    let path = std::path::Path::new(&home).join(rc);
    let binary = std::env::current_exe()
        .map_err(|e| Fail::Error(format!("failed to detect binary path: {}", io_msg(&e))))?;
    let name = std::env::args().next().unwrap_or_else(|| "kes".into());
    let name = std::path::Path::new(&name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or("kes".into());
    let autoload = "autoload -U +X bashcompinit && bashcompinit";
    let hook = format!("complete -o default -C {} {name}", binary.display());
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let has = |l: &str| existing.lines().any(|x| x.starts_with(l));
    let mut wanted: Vec<&str> = Vec::new();
    if zsh && !has(autoload) {
        wanted.push(autoload);
    }
    if !has(&hook) {
        wanted.push(&hook);
    }
    if wanted.is_empty() {
        return out("Completion is already installed.\n");
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Fail::Error(format!("open {}: {}", path.display(), io_msg(&e))))?;
    for line in &wanted {
        writeln!(file, "{line}").map_err(|e| {
            Fail::Error(format!("failed to add '{line}' to '{}': {}", path.display(), io_msg(&e)))
        })?;
    }
    let mut s = format!("Added completion to '{}'\n\n", path.display());
    s.push_str(&format!(
        "To uninstall completion remove the following lines from '{}':\n",
        path.display()
    ));
    for line in wanted {
        s.push_str(&format!("   {line}\n"));
    }
    out(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_the_command_path() {
        assert_eq!(candidates("kes ke"), ["key"]);
        assert_eq!(candidates("kes "), TABLE[0].1);
        assert_eq!(
            candidates("kes key "),
            ["create", "import", "info", "ls", "rm", "encrypt", "decrypt", "dek"]
        );
        assert_eq!(candidates("kes key create --"), ["--insecure", "--enclave"]);
        assert_eq!(candidates("kes key create my-key --e"), ["--enclave"]);
        assert_eq!(candidates("kes identity new --key k.pem --c"), ["--cert"]);
        assert_eq!(
            candidates("kes status -k --"),
            ["--short", "--api", "--json", "--color", "--insecure"]
        );
        assert!(candidates("kes nothing ").is_empty() || candidates("kes nothing ") == TABLE[0].1);
    }

    #[test]
    fn completion_needs_bash_or_zsh_and_comp_line() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert!(!complete(&env(&[("COMP_LINE", "kes ")])));
        assert!(!complete(&env(&[("SHELL", "/bin/fish"), ("COMP_LINE", "kes ")])));
        assert!(!complete(&env(&[("SHELL", "/bin/bash")])));
    }
}
