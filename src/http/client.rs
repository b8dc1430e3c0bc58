//! The client side of HTTP/1.1, next to the server's parser: a response head. Used by the
//! CLI's HTTP client (the Azure client speaks through ureq). Sans-IO like the rest of
//! `http`: the caller reads bytes and asks again while the head is incomplete.

/// Most response headers parsed; the server's limit for requests ([`super::MAX_HEADERS`]),
/// since a KES server sends a handful.
pub const MAX_RESPONSE_HEADERS: usize = super::MAX_HEADERS;

/// What the client needs of a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// `Content-Type`, trimmed; empty when absent.
    pub content_type: String,
    /// `Content-Length`, when sent.
    pub content_length: Option<usize>,
    /// `Transfer-Encoding` names `chunked` (which then frames the body, RFC 9112 §6.3).
    pub chunked: bool,
}

/// Parses a response head from the start of `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some((head, n)))`: the head used `n` bytes. The error text says what was wrong.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let mut head = ResponseHead {
        status: resp.code.unwrap_or(0),
        content_type: String::new(),
        content_length: None,
        chunked: false,
    };
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        if h.name.eq_ignore_ascii_case("content-type") {
            head.content_type = value;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            head.content_length =
                Some(value.parse().map_err(|_| format!("invalid Content-Length '{value}'"))?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    Ok(Some((head, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Type:  application/json \r\nContent-Length: 3\r\n\r\n{}\n";
        let (head, n) = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(n, raw.len() - 3);
        assert_eq!(
            head,
            ResponseHead {
                status: 200,
                content_type: "application/json".into(),
                content_length: Some(3),
                chunked: false
            }
        );
        let (head, _) =
            parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(head.chunked && head.content_length.is_none());
        assert_eq!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").unwrap_err(),
            "invalid Content-Length '-1'"
        );
        assert!(
            parse_response_head(b"HTTQ/1.1 200\r\n\r\n")
                .unwrap_err()
                .starts_with("bad response head: ")
        );
        let many: String = (0..=MAX_RESPONSE_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(
            parse_response_head(raw.as_bytes()).unwrap_err().starts_with("bad response head: ")
        );
    }
}
