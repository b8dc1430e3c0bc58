//! `kes key create|import|info|ls|rm|encrypt|decrypt|dek` (`kes-config-cli.md` §4.3): the
//! key API of `kes-api.md` §9.6–9.13, with upstream's messages and output shapes; and our
//! `kes key rotate|rewrap` (issue 12) over `/v1/key/rotate` and `/v1/key/rewrap`. `info`
//! shows a key's versions once it has more than one, so a key never rotated prints exactly
//! what upstream's CLI prints.

use super::client::{Client, ClientError, ConnFlags};
use super::{CmdResult, ColorMode, Fail, Style, flag_bool, flag_error, flag_value, out, text};
use crate::api::wire::{decode_base64, encode_base64};
use crate::percent::{PATH_SEGMENT, percent_encode};
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

    rotate                   Add a new version of a key, or retire / re-enable one.
    rewrap                   Re-encrypt a file of ciphertexts under the newest version.

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
            ("rotate", rotate),
            ("rewrap", rewrap),
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
            .call("POST", &format!("/v1/key/create/{}", percent_encode(name, PATH_SEGMENT)), None)
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
        .call(
            "POST",
            &format!("/v1/key/import/{}", percent_encode(name, PATH_SEGMENT)),
            Some(&body),
        )
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
    /// Our field: every version, oldest first (absent from upstream servers).
    #[serde(default)]
    versions: Vec<VersionInfo>,
}

/// One entry of `versions` in a describe or rotate answer.
#[derive(Deserialize, Serialize)]
struct VersionInfo {
    id: String,
    state: String,
    #[serde(default)]
    created_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    created_by: String,
}

/// The `Versions` block of `kes key info` and `kes key rotate`: one line per version, id,
/// state and creation date, oldest first.
fn versions_text(style: &Style, versions: &[VersionInfo]) -> String {
    let width = versions.iter().map(|v| v.id.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (i, v) in versions.iter().enumerate() {
        let label = if i == 0 { "Versions" } else { "" };
        let state = if v.state == "live" { style.green(&v.state) } else { style.red(&v.state) };
        let pad = " ".repeat(7usize.saturating_sub(v.state.len()));
        s.push_str(&format!(
            "\n{} {:<width$}  {state}{pad}  {}",
            style.bold(&style.faint(&format!("{label:<11}"))),
            v.id,
            date_of(&v.created_at),
        ));
    }
    s
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
        .call("GET", &format!("/v1/key/describe/{}", percent_encode(name, PATH_SEGMENT)), None)
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
            #[serde(skip_serializing_if = "Option::is_none")]
            versions: Option<&'a [VersionInfo]>,
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
            versions: (info.versions.len() > 1).then_some(info.versions.as_slice()),
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
    if info.versions.len() > 1 {
        s.push_str(&versions_text(&style, &info.versions));
    }
    // Upstream ends without a newline; a terminal gets one so the prompt starts clean.
    if super::stdout_is_tty() {
        s.push('\n');
    }
    out(&s)
}

/// `YYYY-MM-DD hh:mm:ss` of an RFC 3339 time as received (its own offset).
pub(super) fn date_of(rfc3339: &str) -> String {
    match crate::gotime::parse_rfc3339(rfc3339) {
        Some(t) => super::date_time(t),
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
            .call("DELETE", &format!("/v1/key/delete/{}", percent_encode(name, PATH_SEGMENT)), None)
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
    let reply = client.call(
        "POST",
        &format!("/v1/key/{op}/{}", percent_encode(name, PATH_SEGMENT)),
        Some(&bytes),
    )?;
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

const ROTATE_USAGE: &str = "Usage:
    kes key rotate [options] <name>

    Adds a new version of the key <name>: from now on it encrypts (generate, encrypt),
    while every older live version still decrypts. HMAC keeps using the first version.
    With --retire, the version <id> is put out of use: its ciphertexts fail to decrypt
    until it is re-enabled with --enable. The only live version cannot be retired.

Options:
    --retire <id>            Retire version <id> instead of adding one.
    --enable <id>            Re-enable the retired version <id>.
    --json                   Print the answer as JSON.
    --color <when>           When to use colours: auto, never, always.
    -k, --insecure           Skip server certificate verification.

    -h, --help               Print command line options.

Examples:
    $ kes key rotate my-key
    $ kes key rotate my-key --retire 3f9a0c2d1e4b5a69
";

fn rotate(args: Vec<OsString>) -> CmdResult {
    let (mut retire, mut enable) = (None, None);
    let c = parse_with(args, "key rotate", ROTATE_USAGE, true, &mut |flag, p| {
        match flag {
            "--retire" => retire = Some(flag_value(p, "key rotate")?),
            "--enable" => enable = Some(flag_value(p, "key rotate")?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    match c.args.len() {
        0 => return Err(Fail::Error("no key name specified. See 'kes key rotate --help'".into())),
        1 => {}
        _ => return Err(Fail::Error("too many arguments. See 'kes key rotate --help'".into())),
    }
    let body = match (&retire, &enable) {
        (Some(_), Some(_)) => {
            return Err(Fail::Usage(format!(
                "Error: --retire and --enable cannot be used together\n\n{ROTATE_USAGE}"
            )));
        }
        (Some(id), None) => serde_json::json!({ "retire": id }),
        (None, Some(id)) => serde_json::json!({ "enable": id }),
        (None, None) => serde_json::json!({}),
    };
    let name = &c.args[0];
    let what = match (&retire, &enable) {
        (Some(id), _) => format!("failed to retire version {id:?} of key {name:?}"),
        (_, Some(id)) => format!("failed to enable version {id:?} of key {name:?}"),
        _ => format!("failed to rotate key {name:?}"),
    };
    let client = super::connect(&c.conn)?;
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let reply = client
        .call(
            "PUT",
            &format!("/v1/key/rotate/{}", percent_encode(name, PATH_SEGMENT)),
            Some(&bytes),
        )
        .map_err(|e| failed(&what, e))?;
    let info: KeyInfo = serde_json::from_slice(&reply.body)
        .map_err(|e| Fail::Error(format!("{what}: invalid response: {e}")))?;
    if c.json || !super::stdout_is_tty() {
        #[derive(Serialize)]
        struct Json<'a> {
            name: &'a str,
            versions: &'a [VersionInfo],
        }
        let mut bytes =
            crate::gojson::to_go_json(&Json { name: &info.name, versions: &info.versions });
        if bytes.last() != Some(&b'\n') {
            bytes.push(b'\n');
        }
        return out(&String::from_utf8_lossy(&bytes));
    }
    let style = Style(c.color.enabled());
    let label = |l: &str| style.bold(&style.faint(&format!("{l:<11}")));
    let mut s = format!("{} {}", label("Name"), style.blue(&info.name));
    s.push_str(&versions_text(&style, &info.versions));
    s.push('\n');
    out(&s)
}

const REWRAP_USAGE: &str = "Usage:
    kes key rewrap [options] <name> <file>

    Re-encrypts every ciphertext in <file> (one per line, standard base64, optionally
    followed by a space and its context in standard base64) under the newest version of
    the key <name>, and prints the new ciphertexts one per line, in the same order. The
    plaintexts never leave the server. <file> '-' reads standard input. Empty lines stay
    empty. On a terminal, the progress is shown on standard error.

Options:
    -k, --insecure           Skip server certificate verification.

    -h, --help               Print command line options.

Examples:
    $ kes key rewrap my-key ciphertexts.txt > rewrapped.txt
";

/// Longest line `kes key rewrap` reads: a ciphertext and a context within the server's
/// 1 MB body limit, base64 (4/3) plus the JSON around them.
pub const MAX_REWRAP_LINE: usize = 1_400_000;

fn rewrap(args: Vec<OsString>) -> CmdResult {
    use std::io::{BufRead, IsTerminal, Write};
    let c = parse(args, "key rewrap", REWRAP_USAGE, false)?;
    match c.args.len() {
        0 => return Err(Fail::Error("no key name specified. See 'kes key rewrap --help'".into())),
        1 => return Err(Fail::Error("no file specified. See 'kes key rewrap --help'".into())),
        2 => {}
        _ => return Err(Fail::Error("too many arguments. See 'kes key rewrap --help'".into())),
    }
    let (name, path) = (&c.args[0], &c.args[1]);
    let open_err = |e: std::io::Error| Fail::Error(format!("failed to read {path:?}: {e}"));
    // A first pass counts the lines for the progress display (files only).
    let total = if path == "-" {
        None
    } else {
        let file = std::fs::File::open(path).map_err(open_err)?;
        Some(std::io::BufReader::new(file).split(b'\n').count())
    };
    let input: Box<dyn BufRead> = if path == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(open_err)?))
    };
    let progress = std::io::stderr().is_terminal();
    let client = super::connect(&c.conn)?;
    let mut stdout = std::io::stdout().lock();
    let mut done = 0usize;
    for (i, line) in input.split(b'\n').enumerate() {
        let n = i + 1;
        let line = line.map_err(open_err)?;
        if line.len() > MAX_REWRAP_LINE {
            return Err(Fail::Error(format!(
                "line {n}: longer than {MAX_REWRAP_LINE} bytes, not a ciphertext"
            )));
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches('\r').trim();
        let new = if line.is_empty() {
            String::new()
        } else {
            let mut parts = line.split_whitespace();
            let ct = parts.next().unwrap_or_default();
            let ctx = parts.next();
            if parts.next().is_some() {
                return Err(Fail::Error(format!(
                    "line {n}: expected '<ciphertext> [<context>]', found more fields"
                )));
            }
            let bad = |what: &str| Fail::Error(format!("line {n}: {what} is not standard base64"));
            let ct = decode_base64(ct).ok_or_else(|| bad("the ciphertext"))?;
            let mut body = serde_json::json!({ "ciphertext": encode_base64(&ct) });
            if let Some(ctx) = ctx {
                let ctx = decode_base64(ctx).ok_or_else(|| bad("the context"))?;
                body["context"] = encode_base64(&ctx).into();
            }
            let answer = crypto_call(&client, "rewrap", name, &body)
                .map_err(|e| failed(format_args!("line {n}: failed to rewrap ciphertext"), e))?;
            field(&answer, "ciphertext")
        };
        writeln!(stdout, "{new}")
            .and_then(|()| stdout.flush())
            .map_err(|e| Fail::Error(format!("failed to write output: {e}")))?;
        done += 1;
        if progress {
            let of = total.map(|t| format!("/{t}")).unwrap_or_default();
            eprint!("\r\x1b[KRewrapping with key {name:?}: {done}{of}");
        }
    }
    if progress {
        eprintln!("\r\x1b[KRewrapped {done} lines with key {name:?}");
    }
    Ok(())
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
