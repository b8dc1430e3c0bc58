//! What the CLI says when a request fails: per-endpoint failures, the hint to print once,
//! the text of an error answer.

use super::super::io_msg;
use super::IO_TIMEOUT;
use super::settings::Endpoint;
use crate::auth::Identity;
use crate::http::ChunkError;
use rustls::CertificateError;
use std::fmt;
use std::io;

/// Why one endpoint could not give an answer.
#[derive(Debug)]
pub enum Failure {
    /// Name resolution or TCP connect failed.
    Connect(io::Error),
    /// The TLS handshake failed (or the server rejected us right after it).
    Tls(rustls::Error),
    /// The connection broke while sending or receiving.
    Io(io::Error),
    /// The server spoke something other than HTTP/1.1 as we understand it.
    Protocol(String),
    /// A 5xx other than 501: the next endpoint gets a chance (kms-go's rule).
    Server { status: u16, message: String },
}

/// What a request ended with, if not a 2xx answer.
#[derive(Debug)]
pub enum ClientError {
    /// The server answered with an error status.
    Api { status: u16, message: String, path: String, identity: Identity },
    /// No endpoint gave an answer; one entry per endpoint tried.
    Unavailable { failures: Vec<(Endpoint, Failure)>, source: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Unavailable { .. } => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Api { status: 403, message, path, identity } => write!(
                f,
                "{message} (identity {identity} is not allowed to access {path}; \
                 its policy on the server must allow it)"
            ),
            ClientError::Api { message, .. } => f.write_str(message),
            ClientError::Unavailable { failures, source } => {
                let mut hints: Vec<&str> = Vec::new();
                for (i, (ep, failure)) in failures.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    let (text, hint) = describe(ep, failure, source);
                    f.write_str(&text)?;
                    if let Some(h) = hint
                        && !hints.contains(&h)
                    {
                        hints.push(h);
                    }
                }
                for h in hints {
                    write!(f, " ({h})")?;
                }
                Ok(())
            }
        }
    }
}

pub(super) const HINT_UNTRUSTED: &str = "to trust the server, set SSL_CERT_FILE to its certificate or to the CA \
     that issued it, e.g. SSL_CERT_FILE=public.crt; to skip verification (insecure), pass -k/--insecure";
pub(super) const HINT_NAME: &str = "connect with a name or IP the certificate carries, make the certificate \
     with 'kes identity new --ip <IP> --dns <name>', or skip verification (insecure) with -k/--insecure";

/// One endpoint's failure as text, plus a hint to print once.
pub(super) fn describe(
    ep: &Endpoint,
    failure: &Failure,
    source: &str,
) -> (String, Option<&'static str>) {
    let url = &ep.url;
    match failure {
        Failure::Connect(e) => (
            format!("cannot connect to {url} (from {source}): {}", io_msg(e)),
            Some("is the KES server running, and is the endpoint right?"),
        ),
        Failure::Tls(e) => describe_tls(ep, e),
        Failure::Io(e)
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
        {
            (format!("no answer from {url} within {}s", IO_TIMEOUT.as_secs()), None)
        }
        Failure::Io(e) => (format!("connection to {url} failed: {}", io_msg(e)), None),
        Failure::Protocol(m) => (format!("invalid response from {url}: {m}"), None),
        Failure::Server { status, message } => {
            (format!("{url} answered {status}: {message}"), None)
        }
    }
}

pub(super) fn describe_tls(ep: &Endpoint, e: &rustls::Error) -> (String, Option<&'static str>) {
    let url = &ep.url;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName => (
                format!("TLS: the certificate of {url} is not valid for '{}'", ep.host),
                Some(HINT_NAME),
            ),
            CertificateError::NotValidForNameContext { presented, .. } => (
                format!(
                    "TLS: the certificate of {url} is not valid for '{}' (it is valid for {})",
                    ep.host,
                    if presented.is_empty() {
                        "no name at all".into()
                    } else {
                        presented.iter().map(|n| san_text(n)).collect::<Vec<_>>().join(", ")
                    }
                ),
                Some(HINT_NAME),
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                format!("TLS: the certificate of {url} has expired"),
                Some(
                    "renew the server's certificate, or skip verification (insecure) with -k/--insecure",
                ),
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                (format!("TLS: the certificate of {url} is not valid yet (check the clocks)"), None)
            }
            other => (
                format!("TLS: the certificate of {url} is not trusted ({})", cert_problem(other)),
                Some(HINT_UNTRUSTED),
            ),
        },
        rustls::Error::AlertReceived(alert) => (
            format!("TLS: {url} refused the connection (alert: {alert:?})"),
            Some("the server did not accept our client certificate or TLS parameters"),
        ),
        other => (format!("TLS handshake with {url} failed: {other}"), None),
    }
}

/// `DnsName("x")` / `IpAddress(1.2.3.4)` as rustls lists presented names -> `x`, `1.2.3.4`.
pub(super) fn san_text(name: &str) -> String {
    let inner = match (name.find('('), name.rfind(')')) {
        (Some(a), Some(b)) if a < b => &name[a + 1..b],
        _ => name,
    };
    inner.trim_matches('"').to_string()
}

/// Why a chain did not verify, in words. webpki reports the last candidate issuer it tried,
/// so signature-algorithm mismatches against unrelated roots also mean "unknown issuer".
pub(super) fn cert_problem(c: &CertificateError) -> String {
    match c {
        CertificateError::Revoked => "it has been revoked".to_string(),
        CertificateError::BadEncoding => "it is malformed".to_string(),
        CertificateError::UnhandledCriticalExtension => {
            "it has an unsupported critical extension".to_string()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "it is not meant for TLS servers (extended key usage)".to_string()
        }
        _ => "signed by an unknown authority, e.g. self-signed".to_string(),
    }
}

/// The rustls error inside an I/O error, if any.
pub(super) fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

pub(super) fn io_failure(e: io::Error) -> Failure {
    match tls_error(&e) {
        Some(t) => Failure::Tls(t.clone()),
        None => Failure::Io(e),
    }
}

/// The text of an error answer: `error` or else `message` of a JSON body (as kms-go reads
/// it), otherwise the raw body.
pub fn error_message(status: u16, content_type: &str, body: &[u8]) -> String {
    if content_type.starts_with("application/json")
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body)
    {
        for field in ["error", "message"] {
            if let Some(serde_json::Value::String(s)) = map.get(field)
                && !s.is_empty()
            {
                return s.clone();
            }
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    if text.is_empty() {
        format!("server answered {status} {}", crate::http::reason(status))
    } else {
        text
    }
}

pub(super) fn chunk_failure(e: ChunkError) -> Failure {
    match e {
        ChunkError::Malformed => Failure::Protocol("malformed chunked body".into()),
        ChunkError::TooLarge => Failure::Protocol("event too large".into()),
    }
}
