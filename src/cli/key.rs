//! `kes key create|import|info|ls|rm|encrypt|decrypt|dek` (`kes-config-cli.md` §4.3): the
//! key API of `kes-api.md` §9.6–9.13, with upstream's messages and output shapes.

use super::client::{Client, ClientError, ConnFlags, escape};
use super::{CmdResult, ColorMode, Fail, Style, flag_bool, flag_error, flag_value, out, text};
use crate::api::wire::{decode_base64, encode_base64};
use lexopt::prelude::*;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;

const USAGE: &str = "Usage:
    kes key <command>

Commands:
    create                   Create a new crypto key.
    import                   Import a crypto key.
    info                     Get information about a crypto key.
    ls                       List crypto keys.
    rm                       Delete a crypto key.

    encrypt                  Encrypt a message.
    decrypt                  Decrypt an encrypted message.
    dek                      Generate a new data encryption key.

Options:
    -h, --help               Print command line options.
";

pub fn run(args: Vec<OsString>) -> CmdResult {
    super::dispatch(
        "key",
        USAGE,
        args,
        &[
            ("create", create),
            ("import", import),
            ("info", info),
            ("ls", ls),
            ("rm", rm),
            ("encrypt", encrypt),
            ("decrypt", decrypt),
            ("dek", dek),
        ],
    )
}

/// The flags every key command takes, plus its positional arguments.
#[derive(Default)]
pub(super) struct Common {
    pub conn: ConnFlags,
    pub json: bool,
    pub color: ColorMode,
    pub args: Vec<String>,
}

/// Parses `-k/--insecure`, `-e/--enclave` (accepted and ignored: enclaves do not exist in
/// stateless KES), `-h`, and, where `with_output` says so, `--json` and `--color`.
pub(super) fn parse(
    args: Vec<OsString>,
    cmd: &str,
    usage: &str,
    with_output: bool,
) -> Result<Common, Fail> {
    parse_with(args, cmd, usage, with_output, &mut |_, _| Ok(false))
}

/// Like [`parse`], with `extra` offered every other flag first (as `-x` or `--name`); it
/// returns whether it took the flag.
pub(super) fn parse_with(
    args: Vec<OsString>,
    cmd: &str,
    usage: &str,
    with_output: bool,
    extra: &mut dyn FnMut(&str, &mut lexopt::Parser) -> Result<bool, Fail>,
) -> Result<Common, Fail> {
    let mut c = Common::default();
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(|e| flag_error(cmd, e))? {
        let flag = match arg {
            Value(v) => {
                c.args.push(text(v)?);
                continue;
            }
            Short(ch) => format!("-{ch}"),
            Long(name) => format!("--{name}"),
        };
        match flag.as_str() {
            "-k" => c.conn.insecure = true,
            "--insecure" => c.conn.insecure = flag_bool(&mut p, "--insecure", cmd)?,
            "-e" | "--enclave" => {
                flag_value(&mut p, cmd)?;
            }
            "--json" if with_output => c.json = flag_bool(&mut p, "--json", cmd)?,
            "--color" if with_output => {
                c.color = ColorMode::parse(&flag_value(&mut p, cmd)?, cmd)?;
            }
            "-h" | "--help" => return Err(Fail::Usage(usage.to_string())),
            other => {
                if !extra(other, &mut p)? {
                    return Err(flag_error(
                        cmd,
                        lexopt::Error::UnexpectedOption(other.to_string()),
                    ));
                }
            }
        }
    }
    Ok(c)
}

/// `<context>: <error>` as a one-line failure.
pub(super) fn failed(context: impl std::fmt::Display, e: ClientError) -> Fail {
    Fail::Error(format!("{context}: {e}"))
}

const CREATE_USAGE: &str = "Usage:
    kes key create [options] <name>...

Options:
    -k, --insecure           Skip server certificate verification.
    -e, --enclave <name>     Accepted for compatibility and ignored.

    -h, --help               Print command line options.

Examples:
    $ kes key create my-key
    $ kes key create my-key1 my-key2
";

fn create(args: Vec<OsString>) -> CmdResult {
    let c = parse(args, "key create", CREATE_USAGE, false)?;
    if c.args.is_empty() {
        return Err(Fail::Error("no key name specified. See 'kes key create --help'".into()));
    }
    let client = super::connect(&c.conn)?;
    for name in &c.args {
        client
            .call("POST", &format!("/v1/key/create/{}", escape(name)), None)
            .map_err(|e| failed(format_args!("failed to create key {name:?}"), e))?;
    }
    Ok(())
}

const IMPORT_USAGE: &str = "Usage:
    kes key import [options] <name> <key>

    <key> is the 32-byte key in standard base64. It is imported as an AES256 key.

Options:
    -k, --insecure           Skip server certificate verification.
    -e, --enclave <name>     Accepted for compatibility and ignored.

    -h, --help               Print command line options.

Examples:
    $ kes key import my-key-2 Xlnr/nOgAWE5cA7GAsl3L2goCvmfs6KE0gNgB1T93wE=
";

fn import(args: Vec<OsString>) -> CmdResult {
    let c = parse(args, "key import", IMPORT_USAGE, false)?;
    match c.args.len() {
        0 => return Err(Fail::Error("no key name specified. See 'kes key import --help'".into())),
        1 => {
            return Err(Fail::Error("no crypto key specified. See 'kes key import --help'".into()));
        }
        2 => {}
        _ => return Err(Fail::Error("too many arguments. See 'kes key import --help'".into())),
    }
    let (name, key) = (&c.args[0], &c.args[1]);
    let bytes = decode_arg(key, "key", "key import")?;
    #[derive(Serialize)]
    struct Import<'a> {
        key: &'a str,
        cipher: &'a str,
    }
    let encoded = zeroize::Zeroizing::new(encode_base64(&bytes));
    let body = zeroize::Zeroizing::new(
        serde_json::to_vec(&Import { key: &encoded, cipher: "AES256" }).unwrap_or_default(),
    );
    let client = super::connect(&c.conn)?;
    client
        .call("POST", &format!("/v1/key/import/{}", escape(name)), Some(&body))
        .map_err(|e| failed(format_args!("failed to import {name:?}"), e))?;
    Ok(())
}

/// Decodes a base64 argument the way Go's std decoder does, with Go's error text.
fn decode_arg(value: &str, what: &str, cmd: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, Fail> {
    decode_base64(value).ok_or_else(|| {
        let at = first_invalid_base64(value);
        Fail::Error(format!(
            "invalid {what}: illegal base64 data at input byte {at}. See 'kes {cmd} --help'"
        ))
    })
}

/// Where Go's decoder would report the error: the first byte outside the alphabet, or the
/// end of the input when only the padding is wrong.
fn first_invalid_base64(s: &str) -> usize {
    let body = s.trim_end_matches('=');
    body.bytes()
        .position(|b| {
            !(b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'\r' || b == b'\n')
        })
        .unwrap_or(s.len())
}

const INFO_USAGE: &str = "Usage:
    kes key info [options] <name>

Options:
    -k, --insecure           Skip server certificate verification.
        --json               Print the key's metadata as JSON.
        --color <when>       When to use colors: auto (on a terminal), never or always.
    -e, --enclave <name>     Accepted for compatibility and ignored.

    -h, --help               Print command line options.

Examples:
    $ kes key info my-key
";

/// `/v1/key/describe` as the server sends it.
#[derive(Deserialize)]
struct KeyInfo {
    name: String,
    #[serde(default)]
    algorithm: String,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    created_by: String,
}

fn info(args: Vec<OsString>) -> CmdResult {
    let c = parse(args, "key info", INFO_USAGE, true)?;
    match c.args.len() {
        0 => return Err(Fail::Error("no key name specified. See 'kes key info --help'".into())),
        1 => {}
        _ => return Err(Fail::Error("too many arguments. See 'kes key info --help'".into())),
    }
    let client = super::connect(&c.conn)?;
    let name = &c.args[0];
    let reply = client
        .call("GET", &format!("/v1/key/describe/{}", escape(name)), None)
        .map_err(|e| failed("failed to describe keys", e))?;
    let info: KeyInfo = serde_json::from_slice(&reply.body)
        .map_err(|e| Fail::Error(format!("failed to describe keys: invalid response: {e}")))?;
    if c.json {
        // kms-go's KeyInfo: the algorithm enum is omitted for AES256 (its zero value).
        #[derive(Serialize)]
        struct Json<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            algorithm: Option<&'a str>,
            created_at: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            created_by: &'a str,
        }
        let chacha = matches!(info.algorithm.as_str(), "ChaCha20" | "XCHACHA20-POLY1305");
        let json = Json {
            name: &info.name,
            algorithm: chacha.then_some("ChaCha20"),
            created_at: if info.created_at.is_empty() {
                crate::gotime::ZERO_TIME
            } else {
                &info.created_at
            },
            created_by: &info.created_by,
        };
        let mut bytes = crate::gojson::to_go_json(&json);
        if bytes.last() != Some(&b'\n') {
            bytes.push(b'\n');
        }
        return out(&String::from_utf8_lossy(&bytes));
    }
    let style = Style(c.color.enabled());
    let label = |l: &str| style.bold(&style.faint(&format!("{l:<11}")));
    let algorithm = match info.algorithm.as_str() {
        "" | "AES256" | "AES256-GCM_SHA256" => "AES256",
        "ChaCha20" | "XCHACHA20-POLY1305" => "ChaCha20",
        other => other,
    };
    let mut s = format!("{} {}\n", label("Name"), style.blue(&info.name));
    s.push_str(&format!("{} {algorithm}\n", label("Algorithm")));
    s.push_str(&format!("{} {}\n", label("Date"), date_of(&info.created_at)));
    s.push_str(&format!("{} {}", label("Owner"), info.created_by));
    // Upstream ends without a newline; a terminal gets one so the prompt starts clean.
    if super::stdout_is_tty() {
        s.push('\n');
    }
    out(&s)
}

/// `YYYY-MM-DD hh:mm:ss` of an RFC 3339 time as received (its own offset).
pub(super) fn date_of(rfc3339: &str) -> String {
    match crate::gotime::parse_rfc3339(rfc3339) {
        Some(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        None if rfc3339.is_empty() => "0001-01-01 00:00:00".to_string(),
        None => rfc3339.to_string(),
    }
}

const LS_USAGE: &str = "Usage:
    kes key ls [options] [<pattern>]

    Deprecated: use 'kes ls'.

Options:
    -k, --insecure           Skip server certificate verification.
        --json               Print the key names as a JSON array.
        --color <when>       When to use colors: auto (on a terminal), never or always.
    -e, --enclave <name>     Accepted for compatibility and ignored.

    -h, --help               Print command line options.

Examples:
    $ kes key ls
    $ kes key ls 'my-key*'
";

fn ls(args: Vec<OsString>) -> CmdResult {
    let c = parse(args, "key ls", LS_USAGE, true)?;
    if c.args.len() > 1 {
        return Err(Fail::Error("too many arguments. See 'kes key ls --help'".into()));
    }
    let pattern = c.args.first().cloned().unwrap_or_else(|| "*".to_string());
    super::ls::list(super::ls::What::Keys, &pattern, &c.conn, c.json, Style(c.color.enabled()))
}

const RM_USAGE: &str = "Usage:
    kes key rm [options] <name>...

Options:
    -k, --insecure           Skip server certificate verification.
    -e, --enclave <name>     Accepted for compatibility and ignored.

    -h, --help               Print command line options.

Examples:
    $ kes key rm my-key
    $ kes key rm my-key1 my-key2
";

fn rm(args: Vec<OsString>) -> CmdResult {
    let c = parse(args, "key rm", RM_USAGE, false)?;
    if c.args.is_empty() {
        return Err(Fail::Error("no key name specified. See 'kes key rm --help'".into()));
    }
    let client = super::connect(&c.conn)?;
    for name in &c.args {
        client
            .call("DELETE", &format!("/v1/key/delete/{}", escape(name)), None)
            .map_err(|e| failed(format_args!("failed to remove key {name:?}"), e))?;
    }
    Ok(())
}

const ENCRYPT_USAGE: &str = "Usage:
    kes key encrypt [options] <name> <message>

Options:
    -k, --insecure           Skip server certificate verification.
    -e, --enclave <name>     Accepted for compatibility and ignored.

    -h, --help               Print command line options.

    On a terminal the ciphertext is printed as text; otherwise as JSON
    {\"ciphertext\":\"<base64>\"} without a trailing newline.

Examples:
    $ kes key encrypt my-key \"Hello World\"
";

/// Sends `body` to `/v1/key/<op>/<name>` and returns the decoded JSON answer.
fn crypto_call(
    client: &Client,
    op: &str,
    name: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, ClientError> {
    let bytes = zeroize::Zeroizing::new(serde_json::to_vec(body).unwrap_or_default());
    let reply = client.call("POST", &format!("/v1/key/{op}/{}", escape(name)), Some(&bytes))?;
    Ok(serde_json::from_slice(&reply.body).unwrap_or_default())
}

fn field(map: &serde_json::Map<String, serde_json::Value>, name: &str) -> String {
    map.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_string()
}

fn encrypt(args: Vec<OsString>) -> CmdResult {
    let c = parse(args, "key encrypt", ENCRYPT_USAGE, false)?;
    match c.args.len() {
        0 => return Err(Fail::Error("no key name specified. See 'kes key encrypt --help'".into())),
        1 => return Err(Fail::Error("no message specified. See 'kes key encrypt --help'".into())),
        2 => {}
        _ => return Err(Fail::Error("too many arguments. See 'kes key encrypt --help'".into())),
    }
    let client = super::connect(&c.conn)?;
    let body = serde_json::json!({ "plaintext": encode_base64(c.args[1].as_bytes()) });
    let answer = crypto_call(&client, "encrypt", &c.args[0], &body)
        .map_err(|e| failed("failed to encrypt message", e))?;
    let ciphertext = field(&answer, "ciphertext");
    if super::stdout_is_tty() {
        out(&format!("\nciphertext: {ciphertext}\n"))
    } else {
        out(&format!("{{\"ciphertext\":\"{ciphertext}\"}}"))
    }
}

const DECRYPT_USAGE: &str = "Usage:
    kes key decrypt [options] <name> <ciphertext> [<context>]

    <ciphertext> and <context> are standard base64.

Options:
    -k, --insecure           Skip server certificate verification.
    -e, --enclave <name>     Accepted for compatibility and ignored.

    -h, --help               Print command line options.

    On a terminal the plaintext is printed as text; otherwise as JSON
    {\"plaintext\":\"<base64>\"} without a trailing newline.

Examples:
    $ CIPHERTEXT=$(kes key dek my-key | jq -r .ciphertext)
    $ kes key decrypt my-key \"$CIPHERTEXT\"
";

fn decrypt(args: Vec<OsString>) -> CmdResult {
    let c = parse(args, "key decrypt", DECRYPT_USAGE, false)?;
    match c.args.len() {
        0 => return Err(Fail::Error("no key name specified. See 'kes key decrypt --help'".into())),
        1 => {
            return Err(Fail::Error(
                "no ciphertext specified. See 'kes key decrypt --help'".into(),
            ));
        }
        2 | 3 => {}
        _ => return Err(Fail::Error("too many arguments. See 'kes key decrypt --help'".into())),
    }
    let ciphertext = decode_arg(&c.args[1], "ciphertext", "key decrypt")?;
    let mut body = serde_json::json!({ "ciphertext": encode_base64(&ciphertext) });
    if let Some(context) = c.args.get(2) {
        let context = decode_arg(context, "context", "key decrypt")?;
        body["context"] = encode_base64(&context).into();
    }
    let client = super::connect(&c.conn)?;
    let answer = crypto_call(&client, "decrypt", &c.args[0], &body)
        .map_err(|e| failed("failed to decrypt ciphertext", e))?;
    let plaintext = zeroize::Zeroizing::new(field(&answer, "plaintext"));
    if super::stdout_is_tty() {
        out(&format!("\nplaintext: {}\n", plaintext.as_str()))
    } else {
        out(&format!("{{\"plaintext\":\"{}\"}}", plaintext.as_str()))
    }
}

const DEK_USAGE: &str = "Usage:
    kes key dek [options] <name> [<context>]

    Generates a new 256-bit data encryption key, returned in plain and encrypted with
    the key <name>. <context> (standard base64) is bound to the ciphertext.

Options:
    -k, --insecure           Skip server certificate verification.
    -e, --enclave <name>     Accepted for compatibility and ignored.

    -h, --help               Print command line options.

    On a terminal both values are printed as text; otherwise as JSON
    {\"plaintext\":\"<base64>\",\"ciphertext\":\"<base64>\"} without a trailing newline.

Examples:
    $ kes key dek my-key
";

fn dek(args: Vec<OsString>) -> CmdResult {
    let c = parse(args, "key dek", DEK_USAGE, false)?;
    match c.args.len() {
        0 => return Err(Fail::Error("no key name specified. See 'kes key dek --help'".into())),
        1 | 2 => {}
        _ => return Err(Fail::Error("too many arguments. See 'kes key dek --help'".into())),
    }
    let mut body = serde_json::json!({});
    if let Some(context) = c.args.get(1) {
        let context = decode_arg(context, "context", "key dek")?;
        body["context"] = encode_base64(&context).into();
    }
    let client = super::connect(&c.conn)?;
    let answer = crypto_call(&client, "generate", &c.args[0], &body)
        .map_err(|e| failed("failed to derive key", e))?;
    let plaintext = zeroize::Zeroizing::new(field(&answer, "plaintext"));
    let ciphertext = field(&answer, "ciphertext");
    if super::stdout_is_tty() {
        out(&format!("\nplaintext:  {}\nciphertext: {ciphertext}\n", plaintext.as_str()))
    } else {
        out(&format!(
            "{{\"plaintext\":\"{}\",\"ciphertext\":\"{ciphertext}\"}}",
            plaintext.as_str()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_printed_as_received() {
        assert_eq!(date_of("2024-01-12T10:39:20.886816Z"), "2024-01-12 10:39:20");
        assert_eq!(date_of("2024-01-12T11:39:20+01:00"), "2024-01-12 11:39:20");
        assert_eq!(date_of(""), "0001-01-01 00:00:00");
    }

    #[test]
    fn base64_errors_name_the_offending_byte() {
        assert_eq!(first_invalid_base64("AAA!"), 3);
        assert_eq!(first_invalid_base64("AAA"), 3);
        assert_eq!(first_invalid_base64("-_AA"), 0);
    }
}
