//! `ApiError` -> `(status, {"message"})`: the one place failure statuses are chosen.
//! Texts are upstream's, byte for byte, because kms-go compares errors by status *and*
//! message (`kes-api.md` §6). Details of 5xx failures go to the error log, never to clients.
//!
//! Also the answers to requests that never reach a route ([`head_refused`], [`head_timeout`],
//! [`panicked`]): `server::conn` decides *when* to send them, this module *what* they are.

use crate::gojson::go_json_string;
use crate::http::{HeadError, Response, reason};

/// Which operation a key-store failure interrupted; it picks upstream's 502 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Create,
    Read,
    Delete,
    List,
    /// Adding a version, or retiring / re-enabling one.
    Update,
}

/// Every failure a handler or the pipeline can answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    NotAllowed,
    KeyNotFound,
    KeyExists,
    PolicyNotFound,
    IdentityNotFound,
    DecryptionFailed,
    /// `400 tls: client certificate is required`.
    NoClientCert,
    /// `400 tls: received more than one client certificate`.
    TooManyClientCerts,
    /// A key name in the path failed `validName`.
    InvalidKeyName(String),
    InvalidPolicyName(String),
    InvalidIdentity(String),
    InvalidPattern(String),
    /// A request body that does not decode; the text is route-specific.
    InvalidBody(&'static str),
    MethodNotAllowed {
        received: String,
        expected: &'static str,
    },
    /// 406 for an import `cipher` we do not know.
    UnsupportedAlgorithm(String),
    /// 406 for an import key that is not 32 bytes.
    InvalidKeySize(String),
    /// 409: the key was stored without an HMAC key.
    HmacUnsupported,
    /// 400: a `version` that is not a version id (the input is not echoed: it may be long).
    InvalidVersion,
    /// 400: a well-formed version id the key does not have.
    VersionNotFound(String),
    /// 409: a rotation, retire or re-enable the key's state does not allow.
    VersionConflict(String),
    /// 502 with the operation's message.
    KeyStore(StoreOp),
    /// `/v1/ready`: 504 when the store is unreachable, 502 otherwise.
    StoreUnreachable,
    StoreUnavailable,
    /// 500 with a fixed text (RNG or AEAD failure).
    Internal(&'static str),
    /// 503: `log.audit_fail_closed` and the audit file cannot be written (our extension).
    AuditUnavailable,
}

/// Most bytes of client input an error message repeats. Valid names and patterns are at
/// most 80 bytes, so every message upstream sends for them is unchanged; a megabyte-long
/// path or cipher name is not mirrored back in full (nor into the error log).
pub const MAX_ECHOED_INPUT: usize = 128;

/// `input`, cut to [`MAX_ECHOED_INPUT`] bytes on a character boundary, with `...` when cut.
pub fn echo(input: &str) -> std::borrow::Cow<'_, str> {
    if input.len() <= MAX_ECHOED_INPUT {
        return input.into();
    }
    let mut end = MAX_ECHOED_INPUT;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &input[..end]).into()
}

impl ApiError {
    /// The status and exact message upstream sends.
    pub fn status_and_message(&self) -> (u16, String) {
        match self {
            ApiError::NotAllowed => (403, "not authorized: insufficient permissions".into()),
            ApiError::KeyNotFound => (404, "key does not exist".into()),
            ApiError::KeyExists => (400, "key already exists".into()),
            ApiError::PolicyNotFound => (404, "policy does not exist".into()),
            ApiError::IdentityNotFound => (404, "identity does not exist".into()),
            ApiError::DecryptionFailed => {
                (400, "decryption failed: ciphertext is not authentic".into())
            }
            ApiError::NoClientCert => (400, "tls: client certificate is required".into()),
            ApiError::TooManyClientCerts => {
                (400, "tls: received more than one client certificate".into())
            }
            ApiError::InvalidKeyName(n) => (
                400,
                format!("key name '{}' is empty, too long or contains invalid characters", echo(n)),
            ),
            ApiError::InvalidPolicyName(n) => (
                400,
                format!(
                    "policy name '{}' is empty, too long or contains invalid characters",
                    echo(n)
                ),
            ),
            ApiError::InvalidIdentity(n) => (
                400,
                format!("identity '{}' is empty, too long or contains invalid characters", echo(n)),
            ),
            ApiError::InvalidPattern(p) => {
                (400, format!("listing pattern '{}' is empty, too long or is invalid", echo(p)))
            }
            ApiError::InvalidBody(m) => (400, (*m).into()),
            ApiError::MethodNotAllowed { received, expected } => {
                (405, format!("received method '{}' expected '{expected}'", echo(received)))
            }
            ApiError::UnsupportedAlgorithm(c) => {
                (406, format!("algorithm '{}' is not supported", echo(c)))
            }
            ApiError::InvalidKeySize(c) => (406, format!("invalid key size for '{}'", echo(c))),
            ApiError::HmacUnsupported => (409, "key does not support HMAC".into()),
            ApiError::InvalidVersion => (
                400,
                "invalid key version: expected 1 to 64 characters of 0-9, A-Z, a-z and '-'".into(),
            ),
            ApiError::VersionNotFound(v) => (400, format!("key version '{v}' does not exist")),
            ApiError::VersionConflict(m) => (409, m.clone()),
            ApiError::KeyStore(op) => (
                502,
                match op {
                    StoreOp::Create => "failed to create key",
                    StoreOp::Read => "failed to read key",
                    StoreOp::Delete => "failed to delete key",
                    StoreOp::List => "failed to list keys",
                    StoreOp::Update => "failed to update key",
                }
                .into(),
            ),
            ApiError::StoreUnreachable => (504, "key store is not reachable".into()),
            ApiError::StoreUnavailable => (502, "key store is unavailable".into()),
            ApiError::Internal(m) => (500, (*m).into()),
            ApiError::AuditUnavailable => (503, "audit log unavailable: request refused".into()),
        }
    }

    /// The JSON error response; 405 also names the expected method in `Accept`.
    pub fn to_response(&self) -> Response {
        let (status, message) = self.status_and_message();
        let response = error_response(status, &message);
        match self {
            ApiError::MethodNotAllowed { expected, .. } => response.header("Accept", *expected),
            _ => response,
        }
    }
}

/// `{"message":"…"\n}`: upstream writes the message with Go's JSON encoder (which ends the
/// value with a newline) inside a hand-written object, HTML-escaped as Go escapes.
pub fn error_response(status: u16, message: &str) -> Response {
    let mut body = String::from("{\"message\":");
    body.push_str(&go_json_string(message));
    body.push_str("\n}");
    Response::with_body(status, "application/json", body.into_bytes())
}

/// `"<status> <reason>"` in plain text, as Go's net/http answers a request it refuses
/// before any handler runs (upstream's handlers never see these requests).
fn plain(status: u16) -> Response {
    let text = format!("{status} {}", reason(status));
    Response::with_body(status, "text/plain; charset=utf-8", text.into_bytes())
}

/// The answer to a head that `http::parse_head` refused, with Go's statuses and texts:
/// 431 too large, 505 not HTTP/1.x, 501 an unknown transfer coding, otherwise
/// `400 Bad Request: <why>` (e.g. "missing required Host header").
pub fn head_refused(e: &HeadError) -> Response {
    match e {
        HeadError::TooLarge => plain(431),
        HeadError::Version => plain(505),
        HeadError::UnsupportedCoding => plain(501),
        HeadError::Malformed(why) | HeadError::Framing(why) => {
            let text = format!("400 Bad Request: {why}");
            Response::with_body(400, "text/plain; charset=utf-8", text.into_bytes())
        }
    }
}

/// 408 for a head that began to arrive but was not complete within its deadline.
pub fn head_timeout() -> Response {
    plain(408)
}

/// 500 for a request whose handling panicked (the details go to the error log only).
pub fn panicked() -> Response {
    error_response(500, "internal server error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_before_a_route_are_gos_plain_text() {
        let cases = [
            (head_refused(&HeadError::TooLarge), 431, "431 Request Header Fields Too Large"),
            (head_refused(&HeadError::Version), 505, "505 HTTP Version Not Supported"),
            (head_refused(&HeadError::UnsupportedCoding), 501, "501 Not Implemented"),
            (
                head_refused(&HeadError::Framing("too many transfer encodings")),
                400,
                "400 Bad Request: too many transfer encodings",
            ),
            (
                head_refused(&HeadError::Malformed("missing required Host header")),
                400,
                "400 Bad Request: missing required Host header",
            ),
            (head_timeout(), 408, "408 Request Timeout"),
        ];
        for (r, status, text) in cases {
            assert_eq!(r.status, status, "{text}");
            assert_eq!(r.get_header("Content-Type"), Some("text/plain; charset=utf-8"));
            assert_eq!(r.body_bytes(), text.as_bytes());
        }
        let r = panicked();
        assert_eq!(r.status, 500);
        assert_eq!(r.get_header("Content-Type"), Some("application/json"));
        assert_eq!(r.body_bytes(), b"{\"message\":\"internal server error\"\n}");
    }

    fn pair(e: ApiError) -> (u16, String) {
        e.status_and_message()
    }

    #[test]
    fn every_mapping_is_upstreams() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::NotAllowed, 403, "not authorized: insufficient permissions"),
            (ApiError::KeyNotFound, 404, "key does not exist"),
            (ApiError::KeyExists, 400, "key already exists"),
            (ApiError::PolicyNotFound, 404, "policy does not exist"),
            (ApiError::IdentityNotFound, 404, "identity does not exist"),
            (ApiError::DecryptionFailed, 400, "decryption failed: ciphertext is not authentic"),
            (ApiError::NoClientCert, 400, "tls: client certificate is required"),
            (ApiError::TooManyClientCerts, 400, "tls: received more than one client certificate"),
            (
                ApiError::InvalidKeyName("a.b".into()),
                400,
                "key name 'a.b' is empty, too long or contains invalid characters",
            ),
            (
                ApiError::InvalidPolicyName("".into()),
                400,
                "policy name '' is empty, too long or contains invalid characters",
            ),
            (
                ApiError::InvalidIdentity("x/y".into()),
                400,
                "identity 'x/y' is empty, too long or contains invalid characters",
            ),
            (
                ApiError::InvalidPattern("*-*".into()),
                400,
                "listing pattern '*-*' is empty, too long or is invalid",
            ),
            (ApiError::InvalidBody("invalid request body"), 400, "invalid request body"),
            (
                ApiError::MethodNotAllowed { received: "GET".into(), expected: "PUT" },
                405,
                "received method 'GET' expected 'PUT'",
            ),
            (ApiError::UnsupportedAlgorithm("".into()), 406, "algorithm '' is not supported"),
            (ApiError::InvalidKeySize("AES256".into()), 406, "invalid key size for 'AES256'"),
            (ApiError::HmacUnsupported, 409, "key does not support HMAC"),
            (ApiError::KeyStore(StoreOp::Create), 502, "failed to create key"),
            (ApiError::KeyStore(StoreOp::Read), 502, "failed to read key"),
            (ApiError::KeyStore(StoreOp::Delete), 502, "failed to delete key"),
            (ApiError::KeyStore(StoreOp::List), 502, "failed to list keys"),
            (ApiError::StoreUnreachable, 504, "key store is not reachable"),
            (ApiError::StoreUnavailable, 502, "key store is unavailable"),
            (
                ApiError::Internal("failed to generate encryption key"),
                500,
                "failed to generate encryption key",
            ),
            (ApiError::AuditUnavailable, 503, "audit log unavailable: request refused"),
        ];
        for (err, status, msg) in cases {
            assert_eq!(pair(err.clone()), (status, msg.to_string()), "{err:?}");
        }
    }

    #[test]
    fn echoed_input_is_bounded() {
        let name = "a".repeat(81);
        assert_eq!(
            pair(ApiError::InvalidKeyName(name.clone())).1,
            format!("key name '{name}' is empty, too long or contains invalid characters")
        );
        let long = "ü".repeat(100_000);
        for err in [
            ApiError::InvalidKeyName(long.clone()),
            ApiError::InvalidPolicyName(long.clone()),
            ApiError::InvalidIdentity(long.clone()),
            ApiError::InvalidPattern(long.clone()),
            ApiError::MethodNotAllowed { received: long.clone(), expected: "GET" },
            ApiError::UnsupportedAlgorithm(long.clone()),
            ApiError::InvalidKeySize(long.clone()),
        ] {
            let (_, msg) = pair(err);
            assert!(msg.len() < MAX_ECHOED_INPUT + 80, "{}", msg.len());
            assert!(msg.contains(&format!("'{}...'", "ü".repeat(MAX_ECHOED_INPUT / 2))), "{msg}");
        }
        assert_eq!(echo(&"x".repeat(MAX_ECHOED_INPUT)), "x".repeat(MAX_ECHOED_INPUT));
        assert_eq!(echo(&"x".repeat(MAX_ECHOED_INPUT + 1)), format!("{}...", "x".repeat(128)));
    }

    #[test]
    fn error_bodies_are_gos_bytes() {
        let r = ApiError::KeyNotFound.to_response();
        assert_eq!(r.status, 404);
        assert_eq!(r.get_header("Content-Type"), Some("application/json"));
        assert_eq!(r.body_bytes(), b"{\"message\":\"key does not exist\"\n}");
        let r = ApiError::InvalidKeyName("hel<lo".into()).to_response();
        assert_eq!(
            r.body_bytes(),
            b"{\"message\":\"key name 'hel\\u003clo' is empty, too long or contains invalid characters\"\n}"
                .as_slice()
        );
        let r =
            ApiError::MethodNotAllowed { received: "GET".into(), expected: "PUT" }.to_response();
        assert_eq!(r.get_header("Accept"), Some("PUT"));
    }
}
