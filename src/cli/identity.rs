//! `kes identity` in all its forms (`kes-config-cli.md` §4.3, §4.4 and §6):
//!
//! * `kes identity` — a new API key;
//! * `kes identity <API key | FILE>` — the identity of a key or certificate, or the API key
//!   of an Ed25519 private key file;
//! * `kes identity new [<subject>]` — a new API key, and with any file flag (or a subject)
//!   a private key and a self-signed certificate, `./private.key` and `./public.crt` unless
//!   `--key/--cert` say otherwise (the seed tutorial's form);
//! * `kes identity of`, `info`, `ls`.
//!
//! The identity is the hex SHA-256 of a certificate's SubjectPublicKeyInfo; an API key is
//! the Ed25519 seed behind such a certificate, so both name the same identity.

use super::apikey::{self, ApiKey};
use super::key::{failed, parse};
use super::{
    CmdResult, Fail, Style, flag_bool, flag_error, flag_value, io_msg, json_text, local_date, out,
    text,
};
use crate::auth::{ClientCert, Identity, x509};
use crate::crypto::legacy_pem;
use crate::percent::{PATH_SEGMENT, percent_encode};
use lexopt::prelude::*;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, DnsName};
use std::ffi::OsString;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `--expiry` default: 30 days, as upstream.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(720 * 3600);
/// Where `identity new` writes when a file flag is given without `--key/--cert`.
const DEFAULT_KEY_FILE: &str = "private.key";
const DEFAULT_CERT_FILE: &str = "public.crt";

const USAGE: &str = "Usage:
    kes identity [<API key> | <file>]
    kes identity <command>

    Without arguments, generates a new API key. With an API key, prints its identity;
    with a certificate file, the certificate's identity; with an Ed25519 private key
    file, the equivalent API key.

Commands:
    new                      Create a new KES identity (API key, and key/certificate files).
    of                       Compute the identity of an API key or certificate.
    info                     Get information about a KES identity.
    ls                       List KES identities.

Options:
    -h, --help               Print command line options.

Examples:
    $ kes identity
    $ kes identity kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw
    $ kes identity client.crt
";

pub fn run(args: Vec<OsString>) -> CmdResult {
    let Some(first) = args.first().map(|a| a.to_string_lossy().into_owned()) else {
        return generate();
    };
    match first.as_str() {
        "new" => new(args[1..].to_vec()),
        "of" => of(args[1..].to_vec()),
        "info" => info(args[1..].to_vec()),
        "ls" => ls(args[1..].to_vec()),
        "-h" | "--help" => Err(Fail::Usage(USAGE.into())),
        flag if flag.starts_with('-') && flag.len() > 1 => {
            Err(flag_error("identity", lexopt::Error::UnexpectedOption(flag.to_string())))
        }
        _ if args.len() > 1 => {
            Err(Fail::Error("too many arguments. See 'kes identity --help'".into()))
        }
        _ => describe_argument(&text(args[0].clone())?),
    }
}

/// The block `identity new` (and `kes identity` on a terminal) prints (§4.4): scripts read
/// the line after `Your API key:` and `Your Identity:`.
fn api_key_block(key: &ApiKey, files: Option<(&str, &str)>, style: Style) -> String {
    let secret = key.to_string_secret();
    let id = key.identity();
    let mut s = String::new();
    s.push_str("Your API key:\n\n");
    s.push_str(&format!("   {}\n\n", style.bold(&secret)));
    s.push_str("This is the only time it is shown. Keep it secret and store it safely.\n\n");
    s.push_str("Your Identity:\n\n");
    s.push_str(&format!("   {}\n\n", style.bold(id.as_str())));
    s.push_str("The identity is not a secret: share it with the server's admin.\n");
    s.push_str("The server uses it to recognise clients that present the API key.\n");
    if let Some((key_path, cert_path)) = files {
        s.push('\n');
        s.push_str(&format!("The generated TLS private key is stored at: {key_path}\n"));
        s.push_str(&format!("The generated TLS certificate is stored at: {cert_path}\n"));
    }
    s.push_str("\nThe identity can be computed again via:\n\n");
    s.push_str(&format!("    kes identity of {}\n", secret.as_str()));
    if let Some((_, cert_path)) = files {
        s.push_str(&format!("    kes identity of {cert_path}\n"));
    }
    s
}

/// `kes identity`: a new API key; a pipe gets only the key, without a newline.
fn generate() -> CmdResult {
    let key =
        ApiKey::generate().map_err(|e| Fail::Error(format!("failed to generate API key: {e}")))?;
    if super::stdout_is_tty() {
        out(&api_key_block(&key, None, Style(super::ColorMode::Auto.enabled())))
    } else {
        out(&key.to_string_secret())
    }
}

/// Prints a value: bare for pipes, labelled for people.
fn print_value(label: &str, value: &str) -> CmdResult {
    if super::stdout_is_tty() { out(&format!("  {label}  {value}\n")) } else { out(value) }
}

/// `kes identity <API key | FILE>`.
fn describe_argument(arg: &str) -> CmdResult {
    if arg.starts_with("kes:v1:") {
        let key = ApiKey::parse(arg).map_err(|e| Fail::Error(e.to_string()))?;
        return print_value("Identity:", key.identity().as_str());
    }
    let path = Path::new(arg);
    if !path.exists()
        && let Ok(key) = ApiKey::parse(arg)
    {
        return print_value("Identity:", key.identity().as_str());
    }
    let pem =
        std::fs::read(path).map_err(|e| Fail::Error(format!("open {arg}: {}", io_msg(&e))))?;
    if crate::pem::is_encrypted(&pem) || crate::pem::is_pkcs8_encrypted(&pem) {
        return describe_encrypted_key(arg, &pem);
    }
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&pem) {
        let (kind, der) =
            section.map_err(|e| Fail::Error(format!("'{arg}' is not a valid PEM file: {e}")))?;
        match kind {
            SectionKind::Certificate => {
                let id = chain_identity(arg, &pem)?;
                return print_value("Identity:", id.as_str());
            }
            SectionKind::PrivateKey => {
                let der = zeroize::Zeroizing::new(der);
                let key = ApiKey::from_pkcs8_der(&der).ok_or_else(|| {
                    Fail::Error(format!("'{arg}': the private key is not an Ed25519 key"))
                })?;
                return print_value("API key:", &key.to_string_secret());
            }
            SectionKind::EcPrivateKey | SectionKind::RsaPrivateKey => {
                return Err(Fail::Error(format!("'{arg}': the private key is not an Ed25519 key")));
            }
            _ => {}
        }
    }
    Err(Fail::Error(format!("'{arg}' contains no PEM-encoded certificate or private key")))
}

/// The identity a server gives a client presenting the certificates of the PEM file `arg`,
/// by the server's own rule ([`ClientCert::from_chain`]): only the first certificate counts,
/// and it must not be a CA certificate.
fn chain_identity(arg: &str, pem: &[u8]) -> Result<Identity, Fail> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Fail::Error(format!("'{arg}' is not a valid PEM file: {e}")))?;
    match ClientCert::from_chain(&chain) {
        ClientCert::One(id) => Ok(id),
        ClientCert::TooMany => Err(Fail::Error(format!(
            "'{arg}' holds more than one non-CA certificate; a server refuses such a chain"
        ))),
        ClientCert::None => match chain.first() {
            None => Err(Fail::Error(format!("'{arg}' contains no PEM-encoded certificate"))),
            Some(first) if x509::is_ca(first.as_ref()) => Err(Fail::Error(format!(
                "'{arg}': the first certificate is a CA certificate (BasicConstraints CA:TRUE), \
                 which is no client identity; create client certificates with 'kes identity new'"
            ))),
            Some(_) => Err(Fail::Error(format!("'{arg}': invalid certificate"))),
        },
    }
}

/// `kes identity <FILE>` for an encrypted private key (as `identity new --encrypt` writes):
/// asks for the password, then prints the API key as for a plain key.
fn describe_encrypted_key(arg: &str, pem: &[u8]) -> CmdResult {
    let encrypted = crate::pem::parse(pem).map_err(|e| Fail::Error(format!("'{arg}': {e}")))?;
    if encrypted.label() != "PRIVATE KEY" {
        return Err(Fail::Error(format!("'{arg}': the private key is not an Ed25519 key")));
    }
    let password = super::password::for_client_key(Path::new(arg))?;
    let der = encrypted.decrypt(&password).map_err(|e| match e {
        crate::pem::PemError::IncorrectPassword => Fail::Error("incorrect password".into()),
        e => Fail::Error(format!("'{arg}': {e}")),
    })?;
    let key = ApiKey::from_pkcs8_der(&der)
        .ok_or_else(|| Fail::Error(format!("'{arg}': the private key is not an Ed25519 key")))?;
    print_value("API key:", &key.to_string_secret())
}

const OF_USAGE: &str = "Usage:
    kes identity of <API key> | <certificate file>
    kes identity of --ca <CA certificate file>

    Prints the identity of an API key or of the public key of a certificate.

    With --ca, prints the hash that names a CA in an attribute identity
    (ca:<hash>/dns:<name>): the SHA-256 of the certificate's DER, one line per
    certificate of the file.

Options:
        --ca                 Print the CA hash of each certificate of the file.
    -h, --help               Print command line options.

Examples:
    $ kes identity of kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw
    $ kes identity of client.crt
    $ kes identity of --ca ca.crt
";

fn of(args: Vec<OsString>) -> CmdResult {
    let mut rest = Vec::new();
    let mut ca = false;
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(|e| flag_error("identity of", e))? {
        match arg {
            Short('h') | Long("help") => return Err(Fail::Usage(OF_USAGE.into())),
            Long("ca") => ca = true,
            Value(v) => rest.push(text(v)?),
            other => return Err(flag_error("identity of", other.unexpected())),
        }
    }
    let arg = match rest.as_slice() {
        [] => {
            return Err(Fail::Error(
                "no API key or certificate specified. See 'kes identity of --help'".into(),
            ));
        }
        [one] => one,
        _ => return Err(Fail::Error("too many arguments. See 'kes identity of --help'".into())),
    };
    if ca {
        return ca_hashes(arg);
    }
    let id = if arg.starts_with("kes:v1:") {
        ApiKey::parse(arg).map_err(|e| Fail::Error(e.to_string()))?.identity()
    } else {
        identity_of_cert_file(arg)?
    };
    // The seed tutorial's shape on a terminal; the bare identity for scripts.
    print_value("Identity:", id.as_str())
}

/// `kes identity of --ca FILE`: the attribute-identity hash of every certificate in FILE.
fn ca_hashes(arg: &str) -> CmdResult {
    let pem = std::fs::read(arg).map_err(|e| Fail::Error(format!("open {arg}: {}", io_msg(&e))))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Fail::Error(format!("'{arg}' is not a valid PEM file: {e}")))?;
    if chain.is_empty() {
        return Err(Fail::Error(format!("'{arg}' contains no PEM-encoded certificate")));
    }
    let mut out = String::new();
    for cert in &chain {
        out.push_str(&crate::auth::attr::ca_hash(cert.as_ref()));
        out.push('\n');
    }
    super::out(&out)
}

const NEW_USAGE: &str = "Usage:
    kes identity new [options] [<subject>]

    Creates a new API key. With --key/--cert, or with any other option below or a
    <subject>, also writes its Ed25519 private key and a self-signed certificate
    (./private.key and ./public.crt unless --key/--cert say otherwise), usable as a
    KES client or server certificate.

Options:
        --key <path>         Write the private key (PKCS#8 PEM, mode 0600) to <path>.
        --cert <path>        Write the certificate (PEM) to <path>.
        --ip <IP>            Add an IP address SAN (repeatable; '' adds none).
        --dns <name>         Add a DNS name SAN (repeatable).
        --expiry <duration>  Certificate lifetime as a Go duration. (default: 720h)
        --encrypt            Encrypt the private key with a password (asked twice).
    -f, --force              Overwrite existing files.

    -h, --help               Print command line options.

    With no --ip and --dns, a <subject> that is a valid DNS name (such as localhost)
    becomes the certificate's DNS name, so that 'kes server' accepts it.

Examples:
    $ kes identity new
    $ kes identity new --ip \"127.0.0.1\" localhost
    $ kes identity new --key=client.key --cert=client.crt MyApp
";

/// Splits repeated, comma-separated flag values the way pflag's string slices do.
fn push_list(list: &mut Vec<String>, value: &str) {
    list.extend(value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string));
}

fn new(args: Vec<OsString>) -> CmdResult {
    const CMD: &str = "identity new";
    let (mut key, mut cert, mut expiry) = (None, None, None);
    let (mut ips, mut dns) = (Vec::<String>::new(), Vec::<String>::new());
    let (mut ip_flag, mut encrypt, mut force) = (false, false, false);
    let mut rest = Vec::new();
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(|e| flag_error(CMD, e))? {
        match arg {
            Long("key") => key = Some(flag_value(&mut p, CMD)?),
            Long("cert") => cert = Some(flag_value(&mut p, CMD)?),
            Long("ip") => {
                ip_flag = true;
                push_list(&mut ips, &flag_value(&mut p, CMD)?);
            }
            Long("dns") => push_list(&mut dns, &flag_value(&mut p, CMD)?),
            Long("expiry") => expiry = Some(flag_value(&mut p, CMD)?),
            Long("encrypt") => encrypt = flag_bool(&mut p, "--encrypt", CMD)?,
            Short('f') => force = true,
            Long("force") => force = flag_bool(&mut p, "--force", CMD)?,
            Short('h') | Long("help") => return Err(Fail::Usage(NEW_USAGE.into())),
            Value(v) => rest.push(text(v)?),
            other => return Err(flag_error(CMD, other.unexpected())),
        }
    }
    if rest.len() > 1 {
        return Err(Fail::Error("too many arguments. See 'kes identity new --help'".into()));
    }
    let subject = rest.pop();
    let write_files = key.is_some()
        || cert.is_some()
        || ip_flag
        || !dns.is_empty()
        || expiry.is_some()
        || encrypt
        || force
        || subject.is_some();
    let expiry = match &expiry {
        None => DEFAULT_EXPIRY,
        Some(v) => match crate::gotime::parse_duration(v) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                return Err(Fail::Error(format!(
                    "invalid --expiry {v:?}: expected a positive duration such as 720h or 8760h"
                )));
            }
        },
    };
    let ips: Vec<IpAddr> = ips
        .iter()
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| Fail::Error(format!("invalid --ip {s:?}: not an IP address")))
        })
        .collect::<Result<_, _>>()?;
    for name in &dns {
        DnsName::try_from(name.as_str())
            .map_err(|_| Fail::Error(format!("invalid --dns {name:?}: not a DNS name")))?;
    }

    let api_key =
        ApiKey::generate().map_err(|e| Fail::Error(format!("failed to generate API key: {e}")))?;
    let style = Style(super::ColorMode::Auto.enabled());
    if !write_files {
        return out(&api_key_block(&api_key, None, style));
    }

    let key_path = key.unwrap_or_else(|| DEFAULT_KEY_FILE.to_string());
    let cert_path = cert.unwrap_or_else(|| DEFAULT_CERT_FILE.to_string());
    if Path::new(&key_path) == Path::new(&cert_path) {
        return Err(Fail::Error("--key and --cert must name two different files".into()));
    }
    if !force {
        if Path::new(&key_path).exists() {
            return Err(Fail::Error(
                "private key already exists. Use --force to overwrite it".into(),
            ));
        }
        if Path::new(&cert_path).exists() {
            return Err(Fail::Error(
                "certificate already exists. Use --force to overwrite it".into(),
            ));
        }
    }
    // A certificate without any SAN is refused by `kes server` (and by every TLS client):
    // a subject that is a DNS name, such as the tutorial's `localhost`, becomes one.
    if ips.is_empty()
        && dns.is_empty()
        && let Some(s) = &subject
        && s.parse::<IpAddr>().is_err()
        && DnsName::try_from(s.as_str()).is_ok()
    {
        dns.push(s.clone());
    }
    let identity = api_key.identity();
    let common_name = subject.clone().unwrap_or_else(|| identity.to_string());
    let cert_pem =
        apikey::self_signed_certificate(&api_key, &common_name, &ips, &dns, expiry, true)
            .map_err(|e| Fail::Error(format!("failed to create certificate: {e}")))?;
    // As upstream: the PKCS#8 key in a legacy AES-256-CBC encrypted `PRIVATE KEY` block
    // (x509.EncryptPEMBlock), after the password was typed twice.
    let key_pem = if encrypt {
        let password = super::password::new_for_key()?;
        legacy_pem::encrypt("PRIVATE KEY", &api_key.pkcs8_v1_der(), &password)
            .map_err(|_| Fail::Error("failed to encrypt private key: no randomness".into()))?
    } else {
        apikey::pkcs8_pem(&api_key.pkcs8_v1_der())
    };
    write_file(Path::new(&key_path), key_pem.as_bytes(), 0o600, force)
        .map_err(|e| Fail::Error(format!("failed to write private key '{key_path}': {e}")))?;
    write_file(Path::new(&cert_path), cert_pem.as_bytes(), 0o644, force)
        .map_err(|e| Fail::Error(format!("failed to write certificate '{cert_path}': {e}")))?;

    let mut s = String::new();
    s.push_str(&format!("  Private key:  {key_path}\n"));
    s.push_str(&format!("  Certificate:  {cert_path}\n"));
    s.push_str(&format!("  Identity:     {}\n", identity.as_str()));
    s.push('\n');
    s.push_str(&api_key_block(&api_key, Some((&key_path, &cert_path)), style));
    out(&s)
}

/// Writes `data` to `path` with `mode`, all or nothing: a temporary file in the same
/// directory, flushed to disk, then linked into place (never replacing an existing file
/// unless `replace`).
fn write_file(path: &Path, data: &[u8], mode: u32, replace: bool) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| "not a file name".to_string())?;
    let mut rnd = [0u8; 8];
    getrandom::getrandom(&mut rnd).map_err(|e| e.to_string())?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), crate::hex::encode(&rnd)));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| io_msg(&e))?;
        // The umask may have narrowed the mode; a key must never end up wider than asked.
        f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| io_msg(&e))?;
        f.write_all(data).map_err(|e| io_msg(&e))?;
        f.sync_all().map_err(|e| io_msg(&e))?;
        if replace {
            std::fs::rename(&tmp, path).map_err(|e| io_msg(&e))
        } else {
            std::fs::hard_link(&tmp, path).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => "the file already exists".to_string(),
                _ => io_msg(&e),
            })
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

const INFO_USAGE: &str = "Usage:
    kes identity info [options] [<identity>]

    Without an argument, describes the identity of this client (from its API key or
    certificate); with one, describes that identity.

Options:
    -k, --insecure           Skip server certificate verification.
        --json               Print the server's answer as JSON.
        --color <when>       When to use colors: auto (on a terminal), never or always.
    -e, --enclave <name>     Accepted for compatibility and ignored.

    -h, --help               Print command line options.

Examples:
    $ kes identity info
    $ kes identity info 3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22
";

fn info(args: Vec<OsString>) -> CmdResult {
    let c = parse(args, "identity info", INFO_USAGE, true)?;
    if c.args.len() > 1 {
        return Err(Fail::Error("too many arguments. See 'kes identity info --help'".into()));
    }
    let client = super::connect(&c.conn)?;
    let (path, subject) = match c.args.first() {
        None => ("/v1/identity/self/describe".to_string(), None),
        Some(id) => (
            format!("/v1/identity/describe/{}", percent_encode(id, PATH_SEGMENT)),
            Some(id.clone()),
        ),
    };
    let reply =
        client.call("GET", &path, None).map_err(|e| failed("failed to describe identity", e))?;
    let v: serde_json::Value = serde_json::from_slice(&reply.body)
        .map_err(|e| Fail::Error(format!("failed to describe identity: invalid response: {e}")))?;
    if c.json {
        return out(&json_text(&v, super::stdout_is_tty()));
    }
    let str_of = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string();
    let admin = v.get("admin").and_then(|x| x.as_bool()).unwrap_or(false);
    let identity = subject.unwrap_or_else(|| str_of("identity"));
    let style = Style(c.color.enabled());
    let label = |l: &str| style.bold(&style.faint(&format!("{l:<11}")));
    let mut s = format!("{} {}\n", label("Identity"), style.blue(&identity));
    let policy = str_of("policy");
    if !policy.is_empty() {
        s.push_str(&format!("{} {policy}\n", label("Policy")));
    }
    // Ours: the attribute entries that selected the policies (a `ca:…` identity).
    for entry in v.get("via").and_then(|x| x.as_array()).into_iter().flatten() {
        s.push_str(&format!("{} {}\n", label("Via"), entry.as_str().unwrap_or_default()));
    }
    s.push_str(&format!("{} {}\n", label("Created At"), local_date(&str_of("created_at"))));
    s.push_str(&format!("{} {}\n", label("Role"), if admin { "Admin" } else { "User" }));
    let created_by = str_of("created_by");
    if !created_by.is_empty() {
        s.push_str(&format!("{} {created_by}\n", label("Created By")));
    }
    let mut rules = String::new();
    for (title, field) in [("Allow:", "allow"), ("Deny:", "deny")] {
        if let Some(map) = v.get(field).and_then(|x| x.as_object())
            && !map.is_empty()
        {
            rules.push_str(&style.bold(title));
            rules.push('\n');
            for pattern in map.keys() {
                rules.push_str(&format!("  · {pattern}\n"));
            }
        }
    }
    if !rules.is_empty() {
        s.push('\n');
        s.push_str(&rules);
    }
    out(&s)
}

const LS_USAGE: &str = "Usage:
    kes identity ls [options] [<pattern>]

    Deprecated: use 'kes ls -i'.

Options:
    -k, --insecure           Skip server certificate verification.
        --json               Print the identities as a JSON array.
        --color <when>       When to use colors: auto (on a terminal), never or always.
    -e, --enclave <name>     Accepted for compatibility and ignored.

    -h, --help               Print command line options.

Examples:
    $ kes identity ls
";

fn ls(args: Vec<OsString>) -> CmdResult {
    let c = parse(args, "identity ls", LS_USAGE, true)?;
    if c.args.len() > 1 {
        return Err(Fail::Error("too many arguments. See 'kes identity ls --help'".into()));
    }
    let pattern = c.args.first().cloned().unwrap_or_else(|| "*".to_string());
    super::ls::list(
        super::ls::What::Identities,
        &pattern,
        &c.conn,
        c.json,
        Style(c.color.enabled()),
    )
}

/// The identity a server gives a client presenting the certificates of the PEM file `arg`.
pub fn identity_of_cert_file(arg: &str) -> Result<Identity, Fail> {
    let pem = std::fs::read(arg).map_err(|e| Fail::Error(format!("open {arg}: {}", io_msg(&e))))?;
    chain_identity(arg, &pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_flags_split_like_pflag_string_slices() {
        let mut v = Vec::new();
        push_list(&mut v, "");
        push_list(&mut v, "127.0.0.1, ::1");
        push_list(&mut v, "10.0.0.1");
        assert_eq!(v, ["127.0.0.1", "::1", "10.0.0.1"]);
    }

    #[test]
    fn the_api_key_block_keeps_upstreams_layout() {
        let key = ApiKey::parse("kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc").unwrap();
        let s = api_key_block(&key, Some(("k.key", "c.crt")), Style(false));
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "Your API key:");
        assert_eq!(lines[2], "   kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc");
        let i = lines.iter().position(|l| *l == "Your Identity:").unwrap();
        assert_eq!(
            lines[i + 2],
            "   3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22"
        );
        assert!(s.contains("The generated TLS private key is stored at: k.key\n"));
        assert!(s.ends_with("    kes identity of c.crt\n"));
    }

    #[test]
    fn files_are_written_whole_with_their_mode_and_not_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("kes-cli-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k.pem");
        let _ = std::fs::remove_file(&p);
        write_file(&p, b"one", 0o600, false).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(write_file(&p, b"two", 0o600, false).unwrap_err(), "the file already exists");
        write_file(&p, b"two", 0o644, true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file is left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
