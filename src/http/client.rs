//! The client side of HTTP/1.1, next to the server's parser: a response head. Used by the
//! CLI's HTTP client (the Azure client speaks through ureq). Sans-IO like the rest of
//! `http`: the caller reads bytes and asks again while the head is incomplete.

use super::BodyFraming;
use super::framing::{Message, body_framing};

/// Most response headers parsed; the server's limit for requests ([`super::MAX_HEADERS`]),
/// since a KES server sends a handful.
pub const MAX_RESPONSE_HEADERS: usize = super::MAX_HEADERS;

/// What the client needs of a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// `Content-Type`, trimmed; empty when absent.
    pub content_type: String,
    /// How the body ends, by the rule the server applies to requests
    /// ([`super::framing::body_framing`]).
    pub framing: BodyFraming,
}

/// Parses a response head from the start of `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some((head, n)))`: the head used `n` bytes. The error text says what was wrong,
/// framing headers that cannot be trusted included (`invalid framing: duplicate
/// Content-Length`).
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let framing =
        body_framing(Message::Response(status), resp.headers.iter().map(|h| (h.name, h.value)))
            .map_err(|e| format!("invalid framing: {e}"))?;
    let content_type = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
        .unwrap_or_default();
    Ok(Some((ResponseHead { status, content_type, framing }, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<(ResponseHead, usize)>, String> {
        parse_response_head(raw.as_bytes())
    }

    #[test]
    fn response_heads() {
        let raw =
            "HTTP/1.1 200 OK\r\nContent-Type:  application/json \r\nContent-Length: 3\r\n\r\n{}\n";
        let (h, n) = head(raw).unwrap().unwrap();
        assert_eq!(n, raw.len() - 3);
        let want = ResponseHead {
            status: 200,
            content_type: "application/json".into(),
            framing: BodyFraming::Length(3),
        };
        assert_eq!(h, want);
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        assert!(head("HTTQ/1.1 200\r\n\r\n").unwrap_err().starts_with("bad response head: "));
        let many: String = (0..=MAX_RESPONSE_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(head(&raw).unwrap_err().starts_with("bad response head: "));
    }

    /// The response column of `framing`'s table, through the head parser the CLI uses.
    #[test]
    fn response_framing() {
        let framing = |status: u16, fields: &str| {
            head(&format!("HTTP/1.1 {status} X\r\n{fields}\r\n")).map(|h| h.unwrap().0.framing)
        };
        let cases = [
            (200, "Content-Length: 5\r\n", Ok(BodyFraming::Length(5))),
            (200, "Transfer-Encoding: Chunked\r\n", Ok(BodyFraming::Chunked)),
            (200, "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", Ok(BodyFraming::Chunked)),
            (200, "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", Ok(BodyFraming::Chunked)),
            (200, "Content-Length: 5\r\nContent-Length: 5\r\n", Ok(BodyFraming::Length(5))),
            (200, "", Ok(BodyFraming::UntilClose)),
            (200, "Content-Length: 0\r\n", Ok(BodyFraming::None)),
            (204, "Content-Length: 5\r\n", Ok(BodyFraming::None)),
            (304, "Transfer-Encoding: chunked\r\n", Ok(BodyFraming::None)),
            (
                200,
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                Err("invalid framing: duplicate Content-Length"),
            ),
            (200, "Content-Length: -1\r\n", Err("invalid framing: invalid Content-Length")),
            (
                200,
                "Transfer-Encoding: gzip, chunked\r\n",
                Err("invalid framing: unsupported Transfer-Encoding"),
            ),
        ];
        for (status, fields, want) in cases {
            assert_eq!(framing(status, fields), want.map_err(String::from), "{status} {fields:?}");
        }
    }
}
