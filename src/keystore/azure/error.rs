//! Pure parsers for what Key Vault and Entra ID send back when something is wrong: the
//! error envelope, the `WWW-Authenticate` challenge, `Retry-After`, and the classification
//! the store's algorithms branch on.
//!
//! Everything here is a function over bytes or strings with no I/O, so the replay tests can
//! feed recorded responses straight through it (`tests/azure_replay.rs`).
//!
//! Facts: `azure-rest.md` §7 (envelope, codes), §8 (challenge), §9 (Entra errors), §12
//! (Retry-After); `kes-azure-keystore.md` §2 (decisions key on `innererror.code`).

use serde::Deserialize;
use std::time::{Duration, SystemTime};

/// Longest Azure-supplied text we copy into an error string. Messages are for operators;
/// a hostile or broken server must not be able to flood our logs.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// A Key Vault error answer: `{"error":{"code","message","innererror":{"code"}}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// `error.code`, e.g. `SecretNotFound`, `Forbidden`, `Conflict`.
    pub code: String,
    /// `error.innererror.code` (first level, as upstream reads it), e.g. `ForbiddenByPolicy`.
    pub inner: String,
    /// `error.message`, sanitized and shortened.
    pub message: String,
}

impl ApiError {
    /// The code upstream shows in its log lines: the inner code when there is one.
    pub fn shown_code(&self) -> &str {
        if self.inner.is_empty() { &self.code } else { &self.inner }
    }

    /// `<message> (<code>)`, or a status-only text when the body said nothing.
    pub fn describe(&self) -> String {
        match (self.message.is_empty(), self.shown_code().is_empty()) {
            (true, true) => format!("HTTP {}", self.status),
            (true, false) => format!("HTTP {} ({})", self.status, self.shown_code()),
            (false, true) => format!("{} (HTTP {})", self.message, self.status),
            (false, false) => format!("{} ({})", self.message, self.shown_code()),
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    error: Option<EnvelopeError>,
}

#[derive(Deserialize)]
struct EnvelopeError {
    code: Option<String>,
    message: Option<String>,
    innererror: Option<Inner>,
}

#[derive(Deserialize)]
struct Inner {
    code: Option<String>,
}

/// Parses a Key Vault error body. `None` when the body is not the JSON envelope (an HTML
/// page from a proxy, an empty body): callers then fall back to the status alone.
pub fn parse_api_error(status: u16, body: &[u8]) -> Option<ApiError> {
    let env: Envelope = serde_json::from_slice(body).ok()?;
    let e = env.error?;
    Some(ApiError {
        status,
        code: sanitize(e.code.as_deref().unwrap_or_default(), 64),
        inner: sanitize(e.innererror.and_then(|i| i.code).as_deref().unwrap_or_default(), 64),
        message: sanitize(e.message.as_deref().unwrap_or_default(), MAX_MESSAGE_CHARS),
    })
}

/// Like [`parse_api_error`] but never fails: a non-JSON body yields an error with only
/// the status, which is what every decision in the store needs anyway.
pub fn api_error(status: u16, body: &[u8]) -> ApiError {
    parse_api_error(status, body).unwrap_or(ApiError { status, ..ApiError::default() })
}

/// What an answer means for the store's algorithms (`kes-azure-keystore.md` §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx.
    Success,
    /// 404, whatever the code (`SecretNotFound`, or a deleted entry not present yet).
    NotFound,
    /// 401: token missing, expired or for the wrong resource.
    Unauthorized,
    /// 403 with inner code `ForbiddenByPolicy` (access-policy vaults).
    ForbiddenByPolicy,
    /// Any other 403 (`ForbiddenByRbac`, `ForbiddenByFirewall`, `SecretDisabled`, …).
    Forbidden,
    /// 409 `ObjectIsDeletedButRecoverable`: a soft-deleted secret holds the name.
    DeletedButRecoverable,
    /// 409 `ObjectIsBeingDeleted`: the deletion window; retry shortly.
    BeingDeleted,
    /// 408/429/500/502/503/504: the transport layer retries these.
    Transient,
    /// Anything else (400 `BadParameter`, other 409s, …).
    Other,
}

/// Inner code of a 409 for a soft-deleted name.
pub const DELETED_BUT_RECOVERABLE: &str = "ObjectIsDeletedButRecoverable";
/// Inner code of a 409 during the deletion window.
pub const BEING_DELETED: &str = "ObjectIsBeingDeleted";
/// Inner code of a 403 on access-policy vaults.
pub const FORBIDDEN_BY_POLICY: &str = "ForbiddenByPolicy";

/// Classifies a status plus its (parsed) error. Decisions use the status and the inner
/// code only, never the message text (`azure-rest.md` §7).
pub fn classify(status: u16, err: &ApiError) -> Class {
    match status {
        200..=299 => Class::Success,
        404 => Class::NotFound,
        401 => Class::Unauthorized,
        403 if err.inner == FORBIDDEN_BY_POLICY => Class::ForbiddenByPolicy,
        403 => Class::Forbidden,
        409 if err.inner == DELETED_BUT_RECOVERABLE => Class::DeletedButRecoverable,
        409 if err.inner == BEING_DELETED => Class::BeingDeleted,
        s if is_transient_status(s) => Class::Transient,
        _ => Class::Other,
    }
}

/// Why a probe of the vault (`kes server --check --keystore`) got no listing, in the
/// operator's terms. Decided from the typed transport kind, the call error and the answer's
/// status and inner code ([`classify`]), never from message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeFailure {
    /// 403: the credential works but may not list secrets (or a vault firewall refuses it).
    Permission,
    /// No token (Entra ID refused the credential or could not be asked), or the vault
    /// refused the token (401), or its challenge could not be used.
    Authentication,
    /// The vault's host name does not resolve.
    Dns,
    /// The request went through the HTTPS proxy and failed there.
    Proxy,
    /// The TLS handshake failed: the vault's certificate is not trusted (or TLS is broken).
    Ca,
    /// Refused, reset or timed out without a proxy.
    Network,
    /// An HTTP answer that is none of the above (throttling, 5xx, a malformed page).
    Refused,
}

/// Which endpoint a probe failure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeTarget {
    /// The Key Vault endpoint.
    Vault,
    /// Where tokens come from: Entra ID, or the managed-identity endpoint.
    TokenEndpoint,
}

/// A failed probe: its class, the endpoint it concerns and the store's own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError {
    pub failure: ProbeFailure,
    pub target: ProbeTarget,
    pub message: String,
}

impl ProbeFailure {
    /// The class of a transport failure.
    pub fn of_transport(kind: super::client::TransportKind) -> ProbeFailure {
        use super::client::TransportKind as K;
        match kind {
            K::Tls => ProbeFailure::Ca,
            K::Dns => ProbeFailure::Dns,
            K::Proxy => ProbeFailure::Proxy,
            K::Timeout | K::Connection | K::Deadline => ProbeFailure::Network,
            K::TooLarge | K::Invalid => ProbeFailure::Refused,
        }
    }

    /// The class of a failed token request: the transport kinds of a vault call when the
    /// endpoint gave no answer, else authentication for a refused credential.
    pub fn of_token(failure: super::credentials::TokenFailure) -> ProbeFailure {
        use super::credentials::TokenFailure as T;
        match failure {
            T::Transport(kind) => ProbeFailure::of_transport(kind),
            T::Rejected => ProbeFailure::Authentication,
            T::BadAnswer => ProbeFailure::Refused,
        }
    }

    /// The class of an HTTP answer to the listing that is not a success.
    pub fn of_answer(status: u16, err: &ApiError) -> ProbeFailure {
        match classify(status, err) {
            Class::ForbiddenByPolicy | Class::Forbidden => ProbeFailure::Permission,
            Class::Unauthorized => ProbeFailure::Authentication,
            _ => ProbeFailure::Refused,
        }
    }
}

/// Statuses every Azure SDK retries (`azure-rest.md` §12).
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// The parameters of a Key Vault `WWW-Authenticate: Bearer …` challenge (§8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `authorization` (or `authorization_uri`), e.g. `https://login.microsoftonline.com/<tenant>`.
    pub authorization: String,
    /// The resource to request a token for, without `/.default` and without a trailing slash.
    pub resource: String,
    /// The tenant: the first path segment of the authorization URL.
    pub tenant: String,
}

/// Parses `Bearer authorization="…", resource="…"` (also `authorization_uri`, and `scope`
/// instead of `resource`). `None` for other schemes or when no resource can be derived.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let rest = header.trim();
    let (scheme, params) = rest.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut authorization = String::new();
    let mut resource = String::new();
    let mut scope = String::new();
    for (k, v) in auth_params(params) {
        match k.to_ascii_lowercase().as_str() {
            "authorization" | "authorization_uri" => authorization = v,
            "resource" => resource = v,
            "scope" => scope = v,
            _ => {}
        }
    }
    if resource.is_empty() {
        // A scope is `<resource>/.default`; a bare resource is accepted too.
        resource = scope.strip_suffix("/.default").unwrap_or(&scope).to_string();
    }
    let resource = resource.trim_end_matches('/').to_string();
    if resource.is_empty() {
        return None;
    }
    let tenant = tenant_of(&authorization).unwrap_or_default();
    Some(Challenge { authorization, resource, tenant })
}

/// Splits `k="v", k2=v2` auth-params, honouring quotes and backslash escapes.
fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() && chars.peek().is_none() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        let key = key.trim().to_string();
        if !key.is_empty() {
            out.push((key, value.trim().to_string()));
        }
        if chars.peek().is_none() {
            return out;
        }
    }
}

/// The tenant of an authority URL `https://host/<tenant>[/…]`.
fn tenant_of(url: &str) -> Option<String> {
    let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = after_scheme.split_once('/')?.1;
    let tenant = path.split('/').next()?.trim();
    (!tenant.is_empty()).then(|| tenant.to_string())
}

/// Whether a challenge's resource may receive a token for requests to `vault_host`:
/// the vault host must be the resource host or end with `.` + the resource host, as the
/// SDKs check (`azure-rest.md` §8.5), e.g. `v.vault.azure.net` vs `https://vault.azure.net`.
pub fn resource_matches_host(resource: &str, vault_host: &str) -> bool {
    let r = resource.split_once("://").map(|(_, r)| r).unwrap_or(resource);
    let r_host = r.split(['/', ':']).next().unwrap_or_default().to_ascii_lowercase();
    let host = vault_host.to_ascii_lowercase();
    !r_host.is_empty() && (host == r_host || host.ends_with(&format!(".{r_host}")))
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (IMF-fixdate), relative
/// to `now`. A date in the past is a zero delay. `None` when unparsable.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().ok().map(Duration::from_secs);
    }
    let when = parse_http_date(v)?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses `retry-after-ms` / `x-ms-retry-after-ms` (milliseconds).
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let v = value.trim();
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse::<u64>().ok().map(Duration::from_millis))
        .flatten()
}

/// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 §5.6.7).
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let dt = time::PrimitiveDateTime::parse(s, fmt).ok()?.assume_utc();
    let secs = u64::try_from(dt.unix_timestamp()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// An Entra ID token-endpoint error: `{"error","error_description","error_codes",…}` (§9),
/// or a managed-identity endpoint error (`{"statusCode","message"}` / `{"error",…}`).
/// Returns a short operator text: the error, the AADSTS code and trace id, never the body.
pub fn describe_token_error(status: u16, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct TokenError {
        error: Option<String>,
        error_description: Option<String>,
        trace_id: Option<String>,
        message: Option<String>,
    }
    let Ok(e) = serde_json::from_slice::<TokenError>(body) else {
        return format!("HTTP {status}");
    };
    let mut out = format!("HTTP {status}");
    if let Some(err) = e.error.as_deref().filter(|s| !s.is_empty()) {
        out.push_str(": ");
        out.push_str(&sanitize(err, 64));
    }
    // The description starts with `AADSTSnnnn: text`; the text helps operators most.
    let desc = e.error_description.or(e.message).unwrap_or_default();
    let first_line = desc.lines().next().unwrap_or_default();
    if !first_line.is_empty() {
        out.push_str(": ");
        out.push_str(&sanitize(first_line, 200));
    }
    if let Some(t) = e.trace_id.filter(|t| !t.is_empty()) {
        out.push_str(&format!(" (trace id {})", sanitize(&t, 64)));
    }
    out
}

/// Keeps printable text only and cuts it to `max` characters, so that an Azure-supplied
/// string cannot forge log lines or grow without bound.
pub fn sanitize(s: &str, max: usize) -> String {
    let mut out: String =
        s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// Replaces every occurrence of each non-empty secret in `msg` with `<redacted>`.
/// Used on any text that came back from the network after we sent it a secret.
pub fn redact(msg: &str, secrets: &[&str]) -> String {
    let mut out = msg.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(*s) {
            out = out.replace(*s, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_with_and_without_inner_code() {
        let b = br#"{"error":{"code":"Conflict","message":"Secret is currently being deleted.","innererror":{"code":"ObjectIsBeingDeleted"}}}"#;
        let e = api_error(409, b);
        assert_eq!(e.code, "Conflict");
        assert_eq!(e.inner, "ObjectIsBeingDeleted");
        assert_eq!(classify(409, &e), Class::BeingDeleted);
        assert_eq!(e.describe(), "Secret is currently being deleted. (ObjectIsBeingDeleted)");

        let b = br#"{"error":{"code":"SecretNotFound","message":"Deleted Secret not found: x"}}"#;
        let e = api_error(404, b);
        assert_eq!((e.code.as_str(), e.inner.as_str()), ("SecretNotFound", ""));
        assert_eq!(classify(404, &e), Class::NotFound);
        assert_eq!(e.describe(), "Deleted Secret not found: x (SecretNotFound)");
    }

    #[test]
    fn non_json_bodies_classify_by_status() {
        assert_eq!(parse_api_error(502, b"<html>bad gateway</html>"), None);
        let e = api_error(502, b"<html>");
        assert_eq!(classify(502, &e), Class::Transient);
        assert_eq!(e.describe(), "HTTP 502");
        assert_eq!(classify(403, &api_error(403, b"")), Class::Forbidden);
        assert_eq!(classify(409, &api_error(409, b"{}")), Class::Other);
        assert_eq!(classify(400, &api_error(400, b"")), Class::Other);
        assert_eq!(classify(204, &api_error(204, b"")), Class::Success);
    }

    #[test]
    fn forbidden_by_policy_versus_rbac() {
        let p = br#"{"error":{"code":"Forbidden","message":"no","innererror":{"code":"ForbiddenByPolicy"}}}"#;
        let r = br#"{"error":{"code":"Forbidden","message":"no","innererror":{"code":"ForbiddenByRbac"}}}"#;
        assert_eq!(classify(403, &api_error(403, p)), Class::ForbiddenByPolicy);
        assert_eq!(classify(403, &api_error(403, r)), Class::Forbidden);
    }

    #[test]
    fn challenge_forms() {
        let c = parse_challenge(
            r#"Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net""#,
        )
        .unwrap();
        assert_eq!(c.tenant, "72f988bf-86f1-41af-91ab-2d7cd011db47");
        assert_eq!(c.resource, "https://vault.azure.net");

        let c = parse_challenge(
            r#"Bearer authorization_uri="https://login.windows.net/t1/", scope="https://vault.azure.cn/.default""#,
        )
        .unwrap();
        assert_eq!((c.tenant.as_str(), c.resource.as_str()), ("t1", "https://vault.azure.cn"));

        assert_eq!(parse_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_challenge(r#"Bearer authorization="https://l/t""#), None);
        assert_eq!(parse_challenge(""), None);
        // Unquoted values and odd spacing.
        let c =
            parse_challenge("bearer  resource=https://vault.azure.net/ ,authorization=https://a/t")
                .unwrap();
        assert_eq!((c.tenant.as_str(), c.resource.as_str()), ("t", "https://vault.azure.net"));
    }

    #[test]
    fn challenge_resource_must_cover_the_vault_host() {
        assert!(resource_matches_host("https://vault.azure.net", "kes.vault.azure.net"));
        assert!(resource_matches_host("https://vault.azure.net", "KES.Vault.Azure.Net"));
        assert!(resource_matches_host("https://vault.azure.cn", "x.vault.azure.cn"));
        assert!(!resource_matches_host("https://vault.azure.net", "evil.example.com"));
        assert!(!resource_matches_host("https://vault.azure.net", "kes.vault.azure.net.evil.com"));
        assert!(!resource_matches_host("https://vault.azure.net", "notvault.azure.net"));
        assert!(!resource_matches_host("https://storage.azure.com", "kes.vault.azure.net"));
        assert!(!resource_matches_host("", "kes.vault.azure.net"));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        // A date in the past means "now".
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now), Some(Duration::ZERO));
        for bad in
            ["", "-1", "1.5", "soon", "Sun, 06 Nov 1994 08:49:47 PST", "99999999999999999999999"]
        {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        assert_eq!(parse_retry_after_ms("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_retry_after_ms("x"), None);
    }

    #[test]
    fn token_errors_are_summarized_without_the_body() {
        let b = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1","error_codes":[7000215],"trace_id":"abc"}"#;
        assert_eq!(
            describe_token_error(401, b),
            "HTTP 401: invalid_client: AADSTS7000215: Invalid client secret provided. (trace id abc)"
        );
        assert_eq!(describe_token_error(500, b"oops"), "HTTP 500");
        let b = br#"{"statusCode":400,"message":"Invalid resource"}"#;
        assert_eq!(describe_token_error(400, b), "HTTP 400: Invalid resource");
    }

    #[test]
    fn sanitize_and_redact() {
        assert_eq!(sanitize("a\nb\tc", 10), "a b c");
        assert_eq!(sanitize("abcdef", 3), "abc…");
        assert_eq!(redact("bad value c2VjcmV0 here", &["c2VjcmV0"]), "bad value <redacted> here");
        assert_eq!(redact("short", &["", "ab"]), "short");
    }
}
