//! Sans-IO HTTP/1.1 (RFC 9112): a pure head parser with caller-supplied limits, the request
//! and response types, body framing rules and response serialization. The connection loop
//! in `server::conn` is a thin I/O shell around these functions.
//!
//! Must not: see JSON, know routes, or touch a socket.

pub mod client;
pub mod framing;

use std::borrow::Cow;
use zeroize::Zeroizing;

/// Most bytes a request head may have. kms-go and MinIO send well under 1 KiB; 16 KiB leaves
/// room for proxies while keeping a slow-loris buffer small.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most header fields in one request head.
pub const MAX_HEADERS: usize = 64;

/// Request methods the KES API knows; anything else is kept as text for the 405 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Post,
    Delete,
    Head,
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Other(s) => s,
        }
    }
}

/// How a message body is framed ([`framing::body_framing`], RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    Length(u64),
    Chunked,
    /// Responses only: neither header, the body ends when the connection does. A request
    /// never gets this framing (without either header it has no body).
    UntilClose,
}

/// A parsed request head, borrowing its text from the bytes it was parsed from (the
/// connection's read buffer): nothing is copied except a path with `%` escapes, which is
/// decoded into its own string.
#[derive(Debug, Clone)]
pub struct Head<'a> {
    pub method: Method,
    /// The raw request target as sent.
    pub target: &'a str,
    /// Percent-decoded path (Go's `URL.Path`).
    pub path: Cow<'a, str>,
    /// The raw query without `?`.
    pub query: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Names as sent, values without surrounding whitespace.
    pub headers: Vec<(&'a str, &'a str)>,
    pub framing: BodyFraming,
    /// Whether the client wants the connection kept open after this request.
    pub keep_alive: bool,
}

impl Head<'_> {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }
}

/// Why a head was refused; each maps to one status in `api::error::head_refused`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Syntax error (400).
    Malformed(&'static str),
    /// More than [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`] (431).
    TooLarge,
    /// Not HTTP/1.x (505).
    Version,
    /// Both or conflicting framing headers (400).
    Framing(&'static str),
    /// A transfer coding other than `chunked` (501).
    UnsupportedCoding,
}

/// Where the head at the start of `buf` ends: `Ok(None)` while incomplete (read more),
/// `Err` as soon as what arrived cannot become a head, without building the [`Head`].
pub fn head_len(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    head_status(&mut req, buf)
}

fn head_status<'h, 'b>(
    req: &mut httparse::Request<'h, 'b>,
    buf: &'b [u8],
) -> Result<Option<usize>, HeadError> {
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(request_line_error(buf)),
    };
    match status {
        httparse::Status::Complete(n) if n > MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        httparse::Status::Complete(n) => Ok(Some(n)),
        httparse::Status::Partial if buf.len() > MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        httparse::Status::Partial => Ok(None),
    }
}

/// Trims what Go's HTTP parser trims around header values, header list tokens and chunk
/// sizes: ASCII space, tab, CR and LF, and nothing else. `str::trim` would also drop
/// Unicode spaces (U+00A0, U+3000, ...), so `Content-Length: 5` followed by a no-break space
/// would frame a body Go refuses to frame: a disagreement a smuggling attack needs.
fn go_trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\r', '\n'])
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some((head, n)))`: the head used `n` bytes, and borrows them.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head<'_>, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let Some(n) = head_status(&mut req, buf)? else { return Ok(None) };
    let method = Method::parse(req.method.unwrap_or_default());
    let target = req.path.unwrap_or_default();
    let minor_version = req.version.unwrap_or(1);
    let mut list = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HeadError::Malformed("header value is not valid UTF-8"))?;
        list.push((h.name, go_trim(value)));
    }
    let (raw_path, query) =
        origin_form(target).split_once('?').unwrap_or((origin_form(target), ""));
    if !raw_path.starts_with('/') {
        return Err(HeadError::Malformed("request target must be an absolute path"));
    }
    let path = percent_decode(raw_path).ok_or(HeadError::Malformed("invalid URL escape"))?;
    let framing = framing::body_framing(
        framing::Message::Request,
        list.iter().map(|(n, v)| (*n, v.as_bytes())),
    )?;
    // After framing, as Go checks it.
    if minor_version == 1 {
        match list.iter().filter(|(n, _)| n.eq_ignore_ascii_case("host")).count() {
            0 => return Err(HeadError::Malformed("missing required Host header")),
            1 => {}
            _ => return Err(HeadError::Malformed("too many Host headers")),
        }
    }
    let keep_alive = keep_alive(&list, minor_version);
    let head =
        Head { method, target, path, query, minor_version, headers: list, framing, keep_alive };
    Ok(Some((head, n)))
}

/// The origin-form part of a request target: an absolute-form target
/// (`https://host:7373/v1/status?x`, RFC 9112 §3.2.2, which servers must accept) loses its
/// scheme and authority; an absolute-form target without a path means `/`.
fn origin_form(target: &str) -> &str {
    let Some((scheme, rest)) = target.split_once("://") else { return target };
    if scheme.is_empty()
        || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return target;
    }
    match rest.find(['/', '?']) {
        // `http://host?q` has no path: what is left starts with `?` and is refused.
        Some(i) => &rest[i..],
        None => "/",
    }
}

/// Names an httparse error as Go would: a well-formed `HTTP/x.y` that is not 1.x is `505`; a
/// request line that is not `METHOD SP target SP HTTP/x.y`, e.g. with a space inside the
/// target, is `400 malformed HTTP version`; anything else is a malformed head (`400`).
fn request_line_error(buf: &[u8]) -> HeadError {
    let Some(line_end) = buf.iter().position(|&b| b == b'\n') else {
        return HeadError::Malformed("malformed request head");
    };
    let line = buf[..line_end].strip_suffix(b"\r").unwrap_or(&buf[..line_end]);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let Some(proto) = parts.nth(2) else {
        return HeadError::Malformed("malformed request head");
    };
    let well_formed = proto.len() == 8
        && proto.starts_with(b"HTTP/")
        && proto[5].is_ascii_digit()
        && proto[6] == b'.'
        && proto[7].is_ascii_digit();
    match (well_formed, proto.get(5)) {
        (true, Some(b'1')) => HeadError::Malformed("malformed request head"),
        (true, _) => HeadError::Version,
        (false, _) => HeadError::Malformed("malformed HTTP version"),
    }
}

/// HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 closes unless it asks
/// for `keep-alive`.
fn keep_alive(headers: &[(&str, &str)], minor_version: u8) -> bool {
    let mut close = false;
    let mut keep = false;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                let t = go_trim(token);
                close |= t.eq_ignore_ascii_case("close");
                keep |= t.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    if close {
        return false;
    }
    minor_version >= 1 || keep
}

/// Percent-decodes a URL path as Go's `url.PathUnescape` does; `None` on a bad escape or a
/// result that is not UTF-8. A path without `%` is returned as it is, not copied.
pub fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = crate::hex::digit(*bytes.get(i + 1)?)?;
            let lo = crate::hex::digit(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Go's `path.Clean` for the mux's redirect of unclean paths (`//`, `/./`, `/../`). A
/// trailing slash is kept, as the mux keeps it.
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = String::from("/");
    out.push_str(&parts.join("/"));
    if p.ends_with('/') && out != "/" {
        out.push('/');
    }
    out
}

/// Whether `clean_path(p) == p`, without building the cleaned path (every request asks):
/// an absolute path with no empty, `.` or `..` segment except an empty last one (a
/// trailing slash, or `/` itself).
pub fn is_clean(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('/') else { return false };
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg == "." || seg == ".." || (seg.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// Incremental decoder for a chunked body (RFC 9112 §7.1), bounded by `limit` data bytes.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    limit: usize,
    /// Decoded data so far.
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailer,
    Done,
}

/// A chunked body that cannot be decoded, or that exceeds its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    Malformed,
    TooLarge,
}

/// Longest chunk-size line or trailer line we accept.
const MAX_CHUNK_LINE: usize = 1024;

impl ChunkedDecoder {
    pub fn new(limit: usize) -> ChunkedDecoder {
        ChunkedDecoder { state: ChunkState::Size, limit, data: Vec::new() }
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes as much of `buf` as possible; returns how many bytes were used.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, ChunkError> {
        let mut pos = 0;
        loop {
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size | ChunkState::Trailer => {
                    // Lines end in LF with an optional CR before it, as header lines do
                    // (httparse) and as Go reads chunk lines.
                    let Some(end) = buf[pos..].iter().position(|&b| b == b'\n') else {
                        if buf.len() - pos > MAX_CHUNK_LINE {
                            return Err(ChunkError::Malformed);
                        }
                        return Ok(pos);
                    };
                    if end > MAX_CHUNK_LINE {
                        return Err(ChunkError::Malformed);
                    }
                    let line = &buf[pos..pos + end];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    pos += end + 1;
                    if self.state == ChunkState::Trailer {
                        if line.is_empty() {
                            self.state = ChunkState::Done;
                        }
                        continue;
                    }
                    let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
                    let size_text =
                        go_trim(std::str::from_utf8(size_text).map_err(|_| ChunkError::Malformed)?);
                    if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(ChunkError::Malformed);
                    }
                    let size =
                        usize::from_str_radix(size_text, 16).map_err(|_| ChunkError::Malformed)?;
                    if size == 0 {
                        self.state = ChunkState::Trailer;
                    } else {
                        if self.data.len().saturating_add(size) > self.limit {
                            return Err(ChunkError::TooLarge);
                        }
                        self.state = ChunkState::Data(size);
                    }
                }
                ChunkState::Data(left) => {
                    if pos == buf.len() {
                        return Ok(pos);
                    }
                    let take = left.min(buf.len() - pos);
                    self.data.extend_from_slice(&buf[pos..pos + take]);
                    pos += take;
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    if buf.len() - pos < 2 {
                        return Ok(pos);
                    }
                    if &buf[pos..pos + 2] != b"\r\n" {
                        return Err(ChunkError::Malformed);
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
            }
        }
    }
}

/// A response body: bytes, or a stream of events (the `/v1/log/*` routes) that the
/// connection loop writes chunk by chunk until the client goes away.
pub enum Body {
    Bytes(Vec<u8>),
    /// Bytes that hold key material (a generated or decrypted data key, an HMAC): wiped
    /// when the response is dropped.
    Secret(Zeroizing<Vec<u8>>),
    Stream(Box<dyn EventStream>),
}

impl Body {
    /// The bytes of a byte body; `None` for a stream.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Body::Bytes(b) => Some(b),
            Body::Secret(b) => Some(b),
            Body::Stream(_) => None,
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Body::Secret(b) => write!(f, "Secret({} bytes)", b.len()),
            Body::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// A source of streamed events. `next` waits at most `wait` and returns `Ok(None)` when
/// nothing arrived (the loop then checks that the client is still there).
pub trait EventStream: Send {
    fn next(&mut self, wait: std::time::Duration) -> Option<Vec<u8>>;
}

/// A response to write. Its headers are private and every way in checks them
/// ([`header_is_safe`]), so no response can carry a header that ends its line early: a
/// request byte reflected into a header (the redirect once did) cannot add headers or a
/// second, smuggled response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: Body,
    /// Set when an unsafe header replaced this response by a `500`; it then stays one.
    refused: bool,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: Body::Bytes(Vec::new()), refused: false }
    }

    pub fn with_body(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response::new(status).header("Content-Type", content_type).body(Body::Bytes(body))
    }

    /// Like [`Response::with_body`] for a body that holds key material: it is wiped when
    /// the response is dropped (the connection wipes its own copy after writing it).
    pub fn with_secret_body(
        status: u16,
        content_type: &'static str,
        body: Zeroizing<Vec<u8>>,
    ) -> Response {
        Response::new(status).header("Content-Type", content_type).body(Body::Secret(body))
    }

    /// A streamed `200` (`/v1/log/*`).
    pub fn stream(content_type: &'static str, stream: Box<dyn EventStream>) -> Response {
        Response::new(200).header("Content-Type", content_type).body(Body::Stream(stream))
    }

    fn body(mut self, body: Body) -> Response {
        if !self.refused {
            self.body = body;
        }
        self
    }

    /// Adds a header. A name or value that could end the header line (CR, LF, NUL or any
    /// other control character, or a name that is not an RFC 9110 token) turns the whole
    /// response into a plain `500` that later headers and bodies leave alone: a server
    /// bug must not become header injection.
    pub fn header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Response {
        if self.refused {
            return self;
        }
        let value = value.into();
        if !header_is_safe(name, &value) {
            return Response {
                status: 500,
                headers: vec![("Content-Type", Cow::Borrowed("text/plain; charset=utf-8"))],
                body: Body::Bytes(b"500 Internal Server Error\n".to_vec()),
                refused: true,
            };
        }
        self.headers.push((name, value));
        self
    }

    /// The headers set so far, in order.
    pub fn headers(&self) -> &[(&'static str, Cow<'static, str>)] {
        &self.headers
    }

    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
    }

    pub fn body_bytes(&self) -> &[u8] {
        self.body.bytes().unwrap_or_default()
    }

    /// Serializes the status line and headers (and a byte body). Stream bodies are sent
    /// with `Transfer-Encoding: chunked`.
    pub fn head_bytes(&self, keep_alive: bool, minor_version: u8, date: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_to(&mut out, keep_alive, minor_version, date, true);
        out
    }

    /// Appends what [`Response::head_bytes`] returns to `out`, the byte body only when
    /// `with_body` (not for `HEAD`): a connection reuses one buffer for its responses.
    pub fn write_to(
        &self,
        out: &mut Vec<u8>,
        keep_alive: bool,
        minor_version: u8,
        date: &str,
        with_body: bool,
    ) {
        use std::io::Write as _;
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            for part in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
                out.extend_from_slice(part);
            }
        }
        for part in [b"Date: ", date.as_bytes(), b"\r\n"] {
            out.extend_from_slice(part);
        }
        match self.body.bytes() {
            Some(b) => {
                let _ = write!(out, "Content-Length: {}\r\n", b.len());
            }
            None => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if minor_version == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if let (Some(b), true) = (self.body.bytes(), with_body) {
            out.extend_from_slice(b);
        }
    }
}

/// Whether a header line `name: value` is safe to send: the name an RFC 9110 token, the
/// value free of control characters other than horizontal tab (so no CR, LF or NUL).
pub fn header_is_safe(name: &str, value: &str) -> bool {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    !name.is_empty()
        && name.bytes().all(tchar)
        && value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// One chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Reason phrases for the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Request Entity Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// An HTTP date (RFC 9110 §5.6.7) for the `Date` header.
pub fn http_date(t: time::OffsetDateTime) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[usize::from(t.weekday().number_days_from_monday())],
        t.day(),
        MONTHS[usize::from(u8::from(t.month()) - 1)],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `s`, adding a `Host` header to HTTP/1.1 requests that have none.
    fn parse(s: &str) -> Head<'static> {
        let s = match s.split_once("\r\n") {
            Some((line, rest)) if line.ends_with("1.1") && !s.contains("Host:") => {
                format!("{line}\r\nHost: kes\r\n{rest}")
            }
            _ => s.to_string(),
        };
        // Leaked: a test's head borrows its bytes for the rest of the test.
        parse_head(Box::leak(s.into_boxed_str()).as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn parses_a_kms_go_request() {
        let raw = "POST /v1/key/generate/my-key HTTP/1.1\r\nHost: kes:7373\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}";
        let (head, n) = parse_head(raw.as_bytes()).unwrap().unwrap();
        assert_eq!(n, raw.len() - 2);
        assert_eq!(head.method, Method::Post);
        assert_eq!(head.path, "/v1/key/generate/my-key");
        assert_eq!(head.framing, BodyFraming::Length(2));
        assert!(head.keep_alive);
        assert_eq!(head.header("content-type"), Some("application/json"));
    }

    #[test]
    fn partial_heads_ask_for_more_and_oversized_ones_fail() {
        assert!(parse_head(b"GET /version HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let mut big = b"GET /version HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES + 1));
        assert_eq!(parse_head(&big).unwrap_err(), HeadError::TooLarge);
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(parse_head(many.as_bytes()).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn rejects_garbage_and_wrong_versions() {
        assert!(matches!(parse_head(b"\x16\x03\x01garbage\r\n\r\n"), Err(HeadError::Malformed(_))));
        assert_eq!(parse_head(b"GET / HTTP/2.0\r\n\r\n").unwrap_err(), HeadError::Version);
        assert!(matches!(
            parse_head(b"GET x/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HeadError::Malformed("request target must be an absolute path"))
        ));
        assert!(matches!(parse_head(b"GET /a%zz HTTP/1.1\r\n\r\n"), Err(HeadError::Malformed(_))));
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        let err = |req: &[u8]| parse_head(req).unwrap_err();
        assert_eq!(
            err(b"GET /version HTTP/1.1\r\n\r\n"),
            HeadError::Malformed("missing required Host header")
        );
        assert_eq!(
            err(b"GET /version HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            HeadError::Malformed("too many Host headers")
        );
        assert!(parse_head(b"GET /version HTTP/1.0\r\n\r\n").unwrap().is_some());
        assert!(parse_head(b"GET /version HTTP/1.1\r\nHost:\r\n\r\n").unwrap().is_some());
    }

    #[test]
    fn absolute_form_targets_are_accepted() {
        let p = |t: &str| {
            let req = format!("GET {t} HTTP/1.1\r\nHost: kes\r\n\r\n");
            parse_head(req.as_bytes())
                .map(|h| h.map(|(h, _)| (h.path.into_owned(), h.query.to_string())))
        };
        let ok = |path: &str, q: &str| Ok(Some((path.to_string(), q.to_string())));
        assert_eq!(p("https://kes:7373/v1/status"), ok("/v1/status", ""));
        assert_eq!(p("http://127.0.0.1/v1/key/list/a%2A?x=1"), ok("/v1/key/list/a*", "x=1"));
        assert_eq!(p("HTTPS://kes"), ok("/", ""));
        assert!(matches!(p("https://kes?x"), Err(HeadError::Malformed(_))));
        assert!(matches!(p("://kes/v1/status"), Err(HeadError::Malformed(_))));
    }

    #[test]
    fn a_space_in_the_target_is_a_bad_request_not_a_version() {
        assert_eq!(
            parse_head(b"GET /v1/key/list/a b HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err(),
            HeadError::Malformed("malformed HTTP version")
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1x\r\nHost: x\r\n\r\n").unwrap_err(),
            HeadError::Malformed("malformed HTTP version")
        );
        assert_eq!(parse_head(b"GET / HTTP/3.0\r\n\r\n").unwrap_err(), HeadError::Version);
    }

    #[test]
    fn chunk_lines_may_end_in_bare_lf() {
        let mut dec = ChunkedDecoder::new(100);
        let body = b"3\nabc\r\n2;ext=1\r\nde\r\n0\nTrailer: x\n\n";
        assert_eq!(dec.feed(body), Ok(body.len()));
        assert!(dec.is_done());
        assert_eq!(dec.data, b"abcde");
        for bad in [&b"+3\r\nabc\r\n"[..], b"-3\r\n", b"\r\n", b"3\r\nabcX\n"] {
            assert_eq!(ChunkedDecoder::new(100).feed(bad), Err(ChunkError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn framing_rules() {
        let both = "PUT / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse_head(both.as_bytes()), Err(HeadError::Framing(_))));
        let dup = "PUT / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert!(matches!(parse_head(dup.as_bytes()), Err(HeadError::Framing(_))));
        let neg = "PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert!(matches!(parse_head(neg.as_bytes()), Err(HeadError::Framing(_))));
        let gz = "PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert!(matches!(parse_head(gz.as_bytes()), Err(HeadError::UnsupportedCoding)));
        assert_eq!(
            parse("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").framing,
            BodyFraming::Chunked
        );
        assert_eq!(parse("GET / HTTP/1.1\r\n\r\n").framing, BodyFraming::None);
    }

    #[test]
    fn keep_alive_rules() {
        assert!(parse("GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn decodes_paths_like_go() {
        assert_eq!(parse("GET /v1/key/list/%2A HTTP/1.1\r\n\r\n").path, "/v1/key/list/*");
        assert_eq!(parse("GET /a?b=c HTTP/1.1\r\n\r\n").query, "b=c");
        assert_eq!(percent_decode("%E2%98%B0").as_deref(), Some("☰"));
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%4"), None);
    }

    /// A head borrows the bytes it was parsed from; only a path with escapes is copied.
    #[test]
    fn heads_borrow_their_bytes_and_decode_only_escaped_paths() {
        let raw = b"POST /v1/key/generate/k?a=%41 HTTP/1.1\r\nHost: kes\r\nX-Pad:  v w \r\n\r\n";
        let (head, n) = parse_head(raw).unwrap().unwrap();
        assert_eq!(n, raw.len());
        assert!(matches!(head.path, Cow::Borrowed("/v1/key/generate/k")));
        assert_eq!((head.target, head.query), ("/v1/key/generate/k?a=%41", "a=%41"));
        assert_eq!(head.headers, [("Host", "kes"), ("X-Pad", "v w")]);
        let within = |s: &str| raw.as_ptr_range().contains(&s.as_ptr());
        assert!(within(head.target) && within(head.query) && within(&head.path));
        assert!(head.headers.iter().all(|(n, v)| within(n) && within(v)));
        let escaped = parse("GET /v1/key/list/a%2Ab HTTP/1.1\r\n\r\n");
        assert!(matches!(escaped.path, Cow::Owned(ref p) if p == "/v1/key/list/a*b"));
    }

    /// Only ASCII whitespace is trimmed, as Go does: a length or chunk size followed by a
    /// Unicode space is refused, not read as the number before it.
    #[test]
    fn only_ascii_whitespace_is_trimmed() {
        let head = |h: &str| {
            let raw = format!("POST /v1/key/create/k HTTP/1.1\r\nHost: a\r\n{h}\r\n\r\n");
            parse_head(Box::leak(raw.into_bytes().into_boxed_slice()))
                .map(|r| r.map(|(h, _)| h.framing))
        };
        assert_eq!(
            head("Content-Length: 5\u{a0}"),
            Err(HeadError::Framing("invalid Content-Length"))
        );
        assert_eq!(
            head("Content-Length: \u{3000}5"),
            Err(HeadError::Framing("invalid Content-Length"))
        );
        assert_eq!(head("Content-Length: 5 \t"), Ok(Some(BodyFraming::Length(5))));
        assert_eq!(go_trim("\t close \r\n"), "close");
        assert_eq!(go_trim("\u{a0}close\u{85}"), "\u{a0}close\u{85}");
        let mut chunks = ChunkedDecoder::new(64);
        assert_eq!(chunks.feed(b"5\xc2\xa0\r\nhello\r\n0\r\n\r\n"), Err(ChunkError::Malformed));
        let mut chunks = ChunkedDecoder::new(64);
        assert!(chunks.feed(b"5 \t\r\nhello\r\n0\r\n\r\n").is_ok());
    }

    #[test]
    fn percent_decoding_edge_cases() {
        let decode = |s: &str| percent_decode(s).map(Cow::into_owned);
        assert!(matches!(percent_decode("/plain/path"), Some(Cow::Borrowed("/plain/path"))));
        assert_eq!(decode(""), Some(String::new()));
        assert_eq!(decode("%25"), Some("%".into()));
        assert_eq!(decode("%2f%2F"), Some("//".into()));
        assert_eq!(decode("a%20b%00c"), Some("a b\0c".into()));
        assert_eq!(decode("%E2%98%b0x"), Some("☰x".into()));
        for bad in ["%", "%2", "x%", "%zz", "%g0", "%0g", "%%41", "%E2%98", "%C0%AF", "%80"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        // A head with a bad escape or an escape that is not UTF-8 is refused, not decoded.
        for target in ["/a%", "/a%2", "/%ff", "/%E2%98"] {
            let req = format!("GET {target} HTTP/1.1\r\nHost: kes\r\n\r\n");
            assert_eq!(
                parse_head(req.as_bytes()).unwrap_err(),
                HeadError::Malformed("invalid URL escape"),
                "{target:?}"
            );
        }
    }

    /// `head_len` sees a head end where `parse_head` does, for every prefix of a set of
    /// heads (bare LF lines, leading empty lines, pipelined bytes after it), and refuses
    /// what `parse_head`'s httparse pass refuses, at the same byte.
    #[test]
    fn head_len_agrees_with_parse_head_on_every_prefix() {
        let heads: [&[u8]; 7] = [
            b"GET /version HTTP/1.1\r\nHost: kes\r\n\r\nGET /next",
            b"POST /v1/key/decrypt/k HTTP/1.1\nHost: kes\nContent-Length: 2\n\n{}",
            b"\r\nGET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: kes\r\nBad Header: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
        ];
        for raw in heads {
            for end in 0..=raw.len() {
                let prefix = &raw[..end];
                let full = parse_head(prefix).map(|h| h.map(|(_, n)| n));
                match (head_len(prefix), full) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{prefix:?}"),
                    // parse_head also judges what httparse accepted (Host, framing, ...).
                    (Ok(Some(_)), Err(_)) => {}
                    (a, b) => assert_eq!(a, b, "{prefix:?}"),
                }
            }
        }
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 2, b'a');
        assert_eq!(head_len(&big), Err(HeadError::TooLarge));
    }

    #[test]
    fn no_response_can_carry_a_control_character_in_a_header() {
        for bad in ["/x\r\nX-Injected: yes", "/x\n", "/x\r", "/x\0", "\x7f", "a\x1bb"] {
            let r = Response::new(301).header("Location", bad).header("X-After", "1");
            assert_eq!(r.status, 500, "{bad:?}");
            let bytes = String::from_utf8(r.head_bytes(false, 1, "D")).unwrap();
            assert_eq!(
                bytes,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Date: D\r\nContent-Length: 26\r\nConnection: close\r\n\r\n500 Internal Server Error\n"
            );
            let r = Response::with_body(200, bad, b"body".to_vec());
            assert_eq!((r.status, r.body_bytes()), (500, &b"500 Internal Server Error\n"[..]));
        }
        let r = Response::new(200).header("Bad Name", "v");
        assert_eq!(r.status, 500);
        // A tab is allowed in a value (RFC 9110 field-content), as is any visible byte.
        let r = Response::new(200).header("X-Ok", "a\tb ~ é");
        assert_eq!((r.status, r.get_header("x-ok")), (200, Some("a\tb ~ é")));
        assert!(header_is_safe("Content-Type", "text/plain"));
        assert!(!header_is_safe("", "v"));
        assert!(!header_is_safe("X:Y", "v"));
    }

    #[test]
    fn cleans_paths_like_go() {
        assert_eq!(clean_path("/v1//key/list/"), "/v1/key/list/");
        assert_eq!(clean_path("/v1/./status"), "/v1/status");
        assert_eq!(clean_path("/v1/key/../status"), "/v1/status");
        assert_eq!(clean_path("/../.."), "/");
        assert_eq!(clean_path("/version"), "/version");
    }

    /// `is_clean` answers exactly `clean_path(p) == p`, for every string of up to 7
    /// characters over `/`, `.` and `a`.
    #[test]
    fn is_clean_agrees_with_clean_path() {
        let mut all = vec![String::new()];
        for _ in 0..7 {
            let next: Vec<String> =
                all.iter().flat_map(|s| ['/', '.', 'a'].map(|c| format!("{s}{c}"))).collect();
            for p in &next {
                assert_eq!(is_clean(p), clean_path(p) == *p, "{p:?}");
            }
            all = next;
        }
        assert!(is_clean("/") && is_clean("/v1/key/list/") && !is_clean("/v1//x"));
    }

    #[test]
    fn chunked_bodies_decode_in_pieces_and_respect_limits() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\n";
        let mut d = ChunkedDecoder::new(100);
        let mut used = 0;
        for end in 1..=body.len() {
            used += d.feed(&body[used..end]).unwrap();
        }
        assert!(d.is_done());
        assert_eq!(used, body.len());
        assert_eq!(d.data, b"Wikipedia");
        let mut small = ChunkedDecoder::new(4);
        assert_eq!(small.feed(b"5\r\nhello\r\n0\r\n\r\n"), Err(ChunkError::TooLarge));
        let mut bad = ChunkedDecoder::new(100);
        assert_eq!(bad.feed(b"zz\r\n"), Err(ChunkError::Malformed));
        let mut bad = ChunkedDecoder::new(100);
        assert_eq!(bad.feed(b"1\r\nab\r\n"), Err(ChunkError::Malformed));
    }

    #[test]
    fn a_secret_body_is_written_as_a_byte_body_and_never_shown() {
        let plain =
            Response::with_body(200, "application/json", b"{\"k\":\"c2VjcmV0\"}\n".to_vec());
        let secret = Response::with_secret_body(
            200,
            "application/json",
            Zeroizing::new(b"{\"k\":\"c2VjcmV0\"}\n".to_vec()),
        );
        for (keep, minor, with_body) in [(true, 1, true), (false, 0, true), (true, 1, false)] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            plain.write_to(&mut a, keep, minor, "Fri, 04 Dec 2026 22:00:00 GMT", with_body);
            secret.write_to(&mut b, keep, minor, "Fri, 04 Dec 2026 22:00:00 GMT", with_body);
            assert_eq!(a, b);
        }
        assert_eq!(secret.body_bytes(), plain.body_bytes());
        let shown = format!("{:?}", secret.body);
        assert_eq!(shown, "Secret(17 bytes)");
    }

    #[test]
    fn responses_serialize_with_length_and_connection() {
        let r = Response::with_body(200, "application/json", b"{}\n".to_vec());
        let bytes = r.head_bytes(true, 1, "Fri, 27 Nov 2026 20:00:00 GMT");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: Fri, 27 Nov 2026 20:00:00 GMT\r\nContent-Length: 3\r\n\r\n{}\n"
        );
        let r = Response::new(200);
        let s = String::from_utf8(r.head_bytes(true, 0, "d")).unwrap();
        assert!(s.contains("Connection: keep-alive\r\n"));
        let s = String::from_utf8(Response::new(400).head_bytes(false, 1, "d")).unwrap();
        assert!(s.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(s.contains("Connection: close\r\n"));
        assert_eq!(chunk(b"abc"), b"3\r\nabc\r\n");
    }

    #[test]
    fn http_dates() {
        let t = time::macros::datetime!(2026-11-27 20:37:41 UTC);
        assert_eq!(http_date(t), "Fri, 27 Nov 2026 20:37:41 GMT");
    }
}
