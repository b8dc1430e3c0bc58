//! How a message body ends (RFC 9112 §6.3), decided in one function for both directions:
//! the server reading a request and the CLI reading a response. The headers are passed as
//! `(name, raw value)` pairs, so either side's header representation works.
//!
//! The rules, in the order §6.3 gives them, and where the two directions differ:
//!
//! | headers | request (server) | response (CLI) |
//! |---|---|---|
//! | status 1xx, 204, 304 | — | no body, whatever the headers say (rule 1) |
//! | `Transfer-Encoding` and `Content-Length` | refused, 400: a smuggling vector (rule 3) | chunked; the length is ignored (rule 3) |
//! | `Transfer-Encoding` other than one `chunked` | 501 (rule 4) | error: nothing else can be decoded |
//! | two `Content-Length` fields | refused, 400, even if equal | equal ones are one length; differing ones an error (rule 5) |
//! | `Content-Length` not a decimal number | 400 (rule 5) | error (rule 5) |
//! | neither | no body (rule 6) | the body runs to the end of the connection (rule 7) |
//!
//! The request column is the server's documented behaviour since the first release (Go's
//! net/http answers the same requests with the same statuses); the response column is what
//! Go's client does, which is what upstream's CLI is built on.

use super::{BodyFraming, HeadError};
use std::fmt;

/// Whose message is framed: the rules differ in the places the module table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A request, read by the server.
    Request,
    /// A response with this status, read by a client (to a request other than `HEAD`,
    /// which the CLI never sends).
    Response(u16),
}

/// Why a message's framing headers cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// A `Content-Length` that is not a decimal number that fits 64 bits.
    InvalidLength,
    /// A second `Content-Length` (a request), or one that disagrees with the first (a
    /// response).
    DuplicateLength,
    /// A request with both `Content-Length` and `Transfer-Encoding`.
    Both,
    /// A `Transfer-Encoding` other than a single `chunked`.
    UnsupportedCoding,
}

impl FramingError {
    /// The reason in a few words (the server's `400 Bad Request: <reason>`).
    pub fn reason(self) -> &'static str {
        match self {
            FramingError::InvalidLength => "invalid Content-Length",
            FramingError::DuplicateLength => "duplicate Content-Length",
            FramingError::Both => "both Content-Length and Transfer-Encoding",
            FramingError::UnsupportedCoding => "unsupported Transfer-Encoding",
        }
    }
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// The server's answers: 501 for a coding it cannot decode, 400 with the reason otherwise.
impl From<FramingError> for HeadError {
    fn from(e: FramingError) -> HeadError {
        match e {
            FramingError::UnsupportedCoding => HeadError::UnsupportedCoding,
            e => HeadError::Framing(e.reason()),
        }
    }
}

/// The framing of `message`'s body from its header fields, by RFC 9112 §6.3 (the table in
/// the module doc). Fields are judged in the order they came, so the first bad one decides
/// the error. Values may carry the surrounding spaces and tabs of the field line.
pub fn body_framing<'a>(
    message: Message,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<BodyFraming, FramingError> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for (name, value) in headers {
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() && message == Message::Request {
                return Err(FramingError::DuplicateLength);
            }
            let n = parse_length(value).ok_or(FramingError::InvalidLength)?;
            if length.is_some_and(|first| first != n) {
                return Err(FramingError::DuplicateLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(FramingError::UnsupportedCoding);
            }
            chunked = true;
        }
    }
    match message {
        Message::Request => match (length, chunked) {
            (Some(_), true) => Err(FramingError::Both),
            (Some(0) | None, false) => Ok(BodyFraming::None),
            (Some(n), false) => Ok(BodyFraming::Length(n)),
            (None, true) => Ok(BodyFraming::Chunked),
        },
        Message::Response(status)
            if (100..200).contains(&status) || matches!(status, 204 | 304) =>
        {
            Ok(BodyFraming::None)
        }
        Message::Response(_) => Ok(match (length, chunked) {
            (_, true) => BodyFraming::Chunked,
            (Some(0), false) => BodyFraming::None,
            (Some(n), false) => BodyFraming::Length(n),
            (None, false) => BodyFraming::UntilClose,
        }),
    }
}

/// `1*DIGIT` that fits 64 bits; no sign, no spaces inside, no list.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use BodyFraming::{Chunked, Length, None as Empty, UntilClose};
    use FramingError::*;

    fn frame(message: Message, headers: &[(&str, &str)]) -> Result<BodyFraming, FramingError> {
        body_framing(message, headers.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    type Framed = Result<BodyFraming, FramingError>;
    /// Header fields, what a request with them frames as, what a response does.
    type Case = (&'static [(&'static str, &'static str)], Framed, Framed);

    const CL: &str = "Content-Length";
    const TE: &str = "Transfer-Encoding";

    /// Every case of the module table, both directions side by side.
    #[test]
    fn one_rule_both_directions() {
        let ok = Message::Response(200);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // headers, request, response
            (&[], Ok(Empty), Ok(UntilClose)),
            (&[(CL, "0")], Ok(Empty), Ok(Empty)),
            (&[(CL, "12")], Ok(Length(12)), Ok(Length(12))),
            (&[("content-length", " 12\t")], Ok(Length(12)), Ok(Length(12))),
            (&[(TE, "chunked")], Ok(Chunked), Ok(Chunked)),
            (&[(TE, "Chunked")], Ok(Chunked), Ok(Chunked)),
            // Both: smuggling for a request; chunked wins in a response.
            (&[(CL, "5"), (TE, "chunked")], Err(Both), Ok(Chunked)),
            (&[(TE, "chunked"), (CL, "5")], Err(Both), Ok(Chunked)),
            (&[(TE, "chunked"), (CL, "0")], Err(Both), Ok(Chunked)),
            // Duplicates: any for a request; differing ones for a response.
            (&[(CL, "5"), (CL, "5")], Err(DuplicateLength), Ok(Length(5))),
            (&[(CL, "5"), (CL, "6")], Err(DuplicateLength), Err(DuplicateLength)),
            (&[(CL, "5"), (CL, "x")], Err(DuplicateLength), Err(InvalidLength)),
            (&[(CL, "5"), (CL, "05")], Err(DuplicateLength), Ok(Length(5))),
            // Lengths that are no number.
            (&[(CL, "")], Err(InvalidLength), Err(InvalidLength)),
            (&[(CL, "-1")], Err(InvalidLength), Err(InvalidLength)),
            (&[(CL, "+5")], Err(InvalidLength), Err(InvalidLength)),
            (&[(CL, "5, 5")], Err(InvalidLength), Err(InvalidLength)),
            (&[(CL, "1 2")], Err(InvalidLength), Err(InvalidLength)),
            (&[(CL, "0x10")], Err(InvalidLength), Err(InvalidLength)),
            (&[(CL, "18446744073709551616")], Err(InvalidLength), Err(InvalidLength)),
            (&[(CL, "18446744073709551615")], Ok(Length(u64::MAX)), Ok(Length(u64::MAX))),
            // Codings other than one chunked.
            (&[(TE, "gzip")], Err(UnsupportedCoding), Err(UnsupportedCoding)),
            (&[(TE, "gzip, chunked")], Err(UnsupportedCoding), Err(UnsupportedCoding)),
            (&[(TE, "chunked"), (TE, "chunked")], Err(UnsupportedCoding), Err(UnsupportedCoding)),
            (&[(TE, "")], Err(UnsupportedCoding), Err(UnsupportedCoding)),
            // The first bad field decides.
            (&[(TE, "gzip"), (CL, "x")], Err(UnsupportedCoding), Err(UnsupportedCoding)),
            (&[(CL, "x"), (TE, "gzip")], Err(InvalidLength), Err(InvalidLength)),
            // Other fields do not matter.
            (&[("Content-Type", "x"), ("X-Length", "x")], Ok(Empty), Ok(UntilClose)),
        ];
        for (headers, request, response) in cases {
            assert_eq!(frame(Message::Request, headers), *request, "request {headers:?}");
            assert_eq!(frame(ok, headers), *response, "response {headers:?}");
        }
    }

    /// Statuses that never carry a body, whatever the headers say (bad ones still count).
    #[test]
    fn bodiless_statuses() {
        for status in [100, 101, 103, 199, 204, 304] {
            let m = Message::Response(status);
            assert_eq!(frame(m, &[]), Ok(Empty), "{status}");
            assert_eq!(frame(m, &[(CL, "10")]), Ok(Empty), "{status}");
            assert_eq!(frame(m, &[(TE, "chunked")]), Ok(Empty), "{status}");
            assert_eq!(frame(m, &[(CL, "x")]), Err(InvalidLength), "{status}");
        }
        for status in [200, 201, 205, 299, 301, 400, 404, 500, 503] {
            assert_eq!(frame(Message::Response(status), &[]), Ok(UntilClose), "{status}");
        }
    }

    /// What the server answers for each refusal, as before this function existed.
    #[test]
    fn the_servers_answers() {
        let head = |e: FramingError| HeadError::from(e);
        assert_eq!(head(InvalidLength), HeadError::Framing("invalid Content-Length"));
        assert_eq!(head(DuplicateLength), HeadError::Framing("duplicate Content-Length"));
        assert_eq!(head(Both), HeadError::Framing("both Content-Length and Transfer-Encoding"));
        assert_eq!(head(UnsupportedCoding), HeadError::UnsupportedCoding);
        assert_eq!(UnsupportedCoding.to_string(), "unsupported Transfer-Encoding");
    }

    /// Non-UTF-8 bytes in a framing field are refused, not decoded lossily.
    #[test]
    fn raw_bytes() {
        let bad: &[u8] = b"5\xff";
        for m in [Message::Request, Message::Response(200)] {
            assert_eq!(body_framing(m, [("Content-Length", bad)]), Err(InvalidLength));
            assert_eq!(
                body_framing(m, [("Transfer-Encoding", &b"chunked\xff"[..])]),
                Err(UnsupportedCoding)
            );
        }
    }
}
