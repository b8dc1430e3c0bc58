//! Asking a person for the password of an encrypted private key (`kes-config-cli.md` §4.1,
//! §4.3): the prompt goes to stderr, as upstream's (to the terminal when stderr is
//! redirected), and the answer is read from the
//! controlling terminal (`/dev/tty`) with echo turned off, so that it works when stdin and
//! stdout are pipes and never reads a password from a pipe or a file. Without a
//! controlling terminal (cron, systemd, CI) the command fails and says so instead of
//! waiting.
//!
//! Echo is turned off before the prompt is shown and restored before returning, also on
//! errors. Like Go's `term.ReadPassword`, line editing and Ctrl-C stay on: a Ctrl-C ends the
//! program with echo still off, which a shell prompt (or `stty sane`) undoes.

use super::Fail;
use nix::sys::termios::{self, InputFlags, LocalFlags, SetArg, Termios};
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use zeroize::Zeroizing;

/// Upstream's prompts.
pub const PROMPT: &str = "Enter password for private key: ";
pub const CONFIRM: &str = "Confirm password for private key: ";

/// Longest password read (bytes); longer input is refused rather than cut.
const MAX_PASSWORD: usize = 1024;

/// Why no password was read.
#[derive(Debug)]
pub enum AskError {
    /// No controlling terminal to ask on.
    NoTerminal,
    /// The terminal failed, or the input ended before a line.
    Read(String),
}

/// Restores the terminal's settings on drop.
struct EchoOff<'a> {
    tty: &'a File,
    saved: Termios,
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.tty, SetArg::TCSANOW, &self.saved);
    }
}

/// Shows `prompt` on stderr and reads one line from the terminal without echo. The line end
/// is not part of the password; a `\r` is dropped, as Go does.
pub fn ask(prompt: &str) -> Result<Zeroizing<Vec<u8>>, AskError> {
    let tty = File::options()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| AskError::NoTerminal)?;
    let saved = termios::tcgetattr(&tty).map_err(|_| AskError::NoTerminal)?;
    let mut silent = saved.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    silent.local_flags.insert(LocalFlags::ICANON | LocalFlags::ISIG);
    silent.input_flags.insert(InputFlags::ICRNL);
    termios::tcsetattr(&tty, SetArg::TCSANOW, &silent)
        .map_err(|e| AskError::Read(format!("cannot turn off echo: {}", e.desc())))?;
    let guard = EchoOff { tty: &tty, saved };

    // Upstream prompts on stderr; when stderr is redirected the person at the terminal
    // would see nothing, so the prompt then goes to the terminal itself.
    let stderr = std::io::stderr();
    let mut out: Box<dyn Write> =
        if stderr.is_terminal() { Box::new(stderr.lock()) } else { Box::new(&tty) };
    let _ = out.write_all(prompt.as_bytes());
    let _ = out.flush();
    let result = read_line(&tty);
    drop(guard);
    // The Enter key was not echoed.
    let _ = out.write_all(b"\n");
    let _ = out.flush();
    result
}

fn read_line(mut tty: &File) -> Result<Zeroizing<Vec<u8>>, AskError> {
    // Never reallocated, so no copy of the password is left behind.
    let mut password = Zeroizing::new(Vec::with_capacity(MAX_PASSWORD));
    let mut byte = Zeroizing::new([0u8; 1]);
    loop {
        match tty.read(byte.as_mut_slice()) {
            Ok(0) if password.is_empty() => {
                return Err(AskError::Read("no password entered".into()));
            }
            Ok(0) => return Ok(password),
            Ok(_) => match byte[0] {
                b'\n' => return Ok(password),
                b'\r' => {}
                _ if password.len() == MAX_PASSWORD => {
                    return Err(AskError::Read(format!(
                        "the password is longer than {MAX_PASSWORD} bytes"
                    )));
                }
                b => password.push(b),
            },
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(AskError::Read(super::io_msg(&e))),
        }
    }
}

/// The password of the encrypted client key `key` (`KES_CLIENT_KEY` and friends).
pub fn for_client_key(key: &Path) -> Result<Zeroizing<Vec<u8>>, Fail> {
    ask(PROMPT).map_err(|e| match e {
        AskError::NoTerminal => Fail::Error(format!(
            "failed to read TLS private key: '{}' is encrypted and no terminal is available to \
             ask for its password",
            key.display()
        )),
        AskError::Read(e) => Fail::Error(format!("failed to read password: {e}")),
    })
}

/// A new password for `identity new --encrypt`, asked twice.
pub fn new_for_key() -> Result<Zeroizing<Vec<u8>>, Fail> {
    let fail = |e| match e {
        AskError::NoTerminal => Fail::Error(
            "--encrypt needs a terminal to ask for the password, and none is available".into(),
        ),
        AskError::Read(e) => Fail::Error(format!("failed to read password: {e}")),
    };
    let password = ask(PROMPT).map_err(fail)?;
    let confirm = ask(CONFIRM).map_err(fail)?;
    if password != confirm {
        return Err(Fail::Error("passwords don't match".into()));
    }
    if password.is_empty() {
        return Err(Fail::Error("the password is empty: an encrypted key needs a password".into()));
    }
    Ok(password)
}
