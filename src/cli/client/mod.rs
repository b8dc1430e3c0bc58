//! The client side of every `kes` command that talks to a server: where the server is, who
//! we are, whom we trust (`kes-config-cli.md` §4.1), and a small blocking HTTP/1.1-over-TLS
//! client with upstream's failover rule (`kes-api.md` §6, §11).
//!
//! Why not ureq: the CLI needs its own server verifier for `-k` (one that still checks the
//! handshake signature), the exact rustls error of a failed handshake to tell the user what
//! to do, and a response body that can be an endless NDJSON stream (`kes log`). A request is
//! one connection (`Connection: close`): the CLI makes a handful of requests per run.
//!
//! Layout: `settings.rs` where the server is, who we are and whom we trust; `errors.rs` what
//! a failure says; this file the connections, requests and event streams. The response
//! head parser is `http::client`, next to the server's request parser.
//!
//! Must not: print, exit, or put key material into an error message.

mod errors;
mod settings;

use self::errors::*;
pub use self::errors::{ClientError, Failure, error_message};
pub use self::settings::{
    API_KEY_VARS, AskPassword, CERT_FILE_VARS, ConnFlags, Credentials, Endpoint, Env,
    KEY_FILE_VARS, SERVER_VARS, Settings, load_key_pair, process_env, trusted_roots,
};
use super::apikey;
use super::{Fail, io_msg};
use crate::auth::{ClientCert, Identity};
use crate::http::client::{ResponseHead as Head, parse_response_head};
use crate::http::{BodyFraming, ChunkedDecoder};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Where clients go when nothing is configured.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7373";
/// A dead endpoint must not stall the failover to the next one.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence while sending a request or reading a response (route timeouts are ≤ 15 s
/// on the server; a keystore call behind it may take longer).
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response head we read.
pub const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// Largest response body (a full key listing page is ~100 KB; metrics a few KB).
pub const MAX_RESPONSE_BODY: usize = 16 << 20;
/// Largest single event of a log stream.
pub const MAX_EVENT: usize = 1 << 20;

/// A connected client: endpoints to try in order, and the TLS configuration.
pub struct Client {
    endpoints: Vec<Endpoint>,
    endpoint_source: String,
    tls: Arc<ClientConfig>,
    /// Our identity, as the server computes it from our certificate.
    pub identity: Identity,
}

/// A 2xx answer. The body may hold key material (decrypt, dek), so it is wiped on drop.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Zeroizing<Vec<u8>>,
    /// The endpoint that answered.
    pub endpoint: Endpoint,
}

impl Client {
    /// Resolves the settings into a TLS configuration.
    pub fn new(settings: Settings, env: Env<'_>, ask: AskPassword<'_>) -> Result<Client, Fail> {
        let (chain, key) = match &settings.credentials {
            Credentials::ApiKey(k) => {
                let (cert, pkcs8) = apikey::client_certificate(k)
                    .map_err(|e| Fail::Error(format!("generating certificate: {e}")))?;
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
                (vec![CertificateDer::from(cert)], key)
            }
            Credentials::Files { cert, key } => load_key_pair(cert, key, ask)?,
        };
        // The server's rule; without an identity the server answers 400, never 403, so the
        // 403 text that names it never needs one.
        if Identity::from_cert_der(chain[0].as_ref()).is_none() {
            return Err(Fail::Error("the client certificate cannot be parsed".into()));
        }
        let identity = ClientCert::from_chain(&chain).identity().cloned().unwrap_or_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Fail::Error(format!("tls: {e}")))?;
        let builder = if settings.insecure {
            let verifier: Arc<dyn ServerCertVerifier> =
                Arc::new(danger::NoServerVerification::new(provider));
            builder.dangerous().with_custom_certificate_verifier(verifier)
        } else {
            builder.with_root_certificates(trusted_roots(env))
        };
        let mut config = builder.with_client_auth_cert(chain, key).map_err(|e| {
            Fail::Error(format!("failed to load TLS private key or certificate: {e}"))
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            endpoints: settings.endpoints,
            endpoint_source: settings.endpoint_source,
            tls: Arc::new(config),
            identity,
        })
    }

    /// The first endpoint (the one `kes status` names when all is well).
    pub fn first_endpoint(&self) -> &Endpoint {
        &self.endpoints[0]
    }

    /// Sends one request, trying each endpoint in order until one answers with anything
    /// but a transport failure or a 5xx other than 501. `path` must already be escaped.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Reply, ClientError> {
        let mut failures = Vec::new();
        for ep in &self.endpoints {
            match self.exchange(ep, method, path, body) {
                Ok((status, content_type, body)) if (200..300).contains(&status) => {
                    return Ok(Reply { status, content_type, body, endpoint: ep.clone() });
                }
                Ok((status, content_type, body)) => {
                    let message = error_message(status, &content_type, &body);
                    if status >= 500 && status != 501 {
                        failures.push((ep.clone(), Failure::Server { status, message }));
                        continue;
                    }
                    return Err(self.api_error(status, message, path));
                }
                Err(f) => failures.push((ep.clone(), f)),
            }
        }
        Err(self.give_up(failures, path))
    }

    /// Opens an event stream (`/v1/log/*`): the first endpoint that answers 200 keeps the
    /// connection, and the events are read line by line.
    pub fn stream(&self, path: &str) -> Result<EventStream, ClientError> {
        let mut failures = Vec::new();
        for ep in &self.endpoints {
            let opened = (|| {
                let mut conn = Conn::open(ep, &self.tls)?;
                conn.send(ep, "GET", path, None)?;
                let head = conn.read_head()?;
                Ok::<_, Failure>((conn, head))
            })();
            match opened {
                Ok((mut conn, head)) if head.status == 200 => {
                    conn.stream_mode().map_err(|e| self.give_up(vec![(ep.clone(), e)], path))?;
                    let body = BodyState::for_head(&head, MAX_EVENT);
                    return Ok(EventStream { conn, body, endpoint: ep.clone() });
                }
                Ok((mut conn, head)) => {
                    let body = conn.read_body(&head).unwrap_or_default();
                    let message = error_message(head.status, &head.content_type, &body);
                    if head.status >= 500 && head.status != 501 {
                        failures
                            .push((ep.clone(), Failure::Server { status: head.status, message }));
                        continue;
                    }
                    return Err(self.api_error(head.status, message, path));
                }
                Err(f) => failures.push((ep.clone(), f)),
            }
        }
        Err(self.give_up(failures, path))
    }

    fn api_error(&self, status: u16, message: String, path: &str) -> ClientError {
        let path =
            crate::http::percent_decode(path).map_or_else(|| path.to_string(), |p| p.into_owned());
        ClientError::Api { status, message, path, identity: self.identity.clone() }
    }

    /// All endpoints failed: a 5xx from the last one is passed through as the server's
    /// error; anything else says what went wrong where.
    fn give_up(&self, mut failures: Vec<(Endpoint, Failure)>, path: &str) -> ClientError {
        if let Some((_, Failure::Server { .. })) = failures.last()
            && let Some((_, Failure::Server { status, message })) = failures.pop()
        {
            return self.api_error(status, message, path);
        }
        ClientError::Unavailable { failures, source: self.endpoint_source.clone() }
    }

    fn exchange(
        &self,
        ep: &Endpoint,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, String, Zeroizing<Vec<u8>>), Failure> {
        let mut conn = Conn::open(ep, &self.tls)?;
        conn.send(ep, method, path, body)?;
        let head = conn.read_head()?;
        let body = conn.read_body(&head)?;
        Ok((head.status, head.content_type, body))
    }
}

/// How the body of a response is framed, and what has been decoded.
enum BodyState {
    Chunked(ChunkedDecoder),
    Length(usize),
    UntilClose,
}

impl BodyState {
    /// The state for the head's framing ([`crate::http::framing::body_framing`]).
    fn for_head(head: &Head, limit: usize) -> BodyState {
        match head.framing {
            BodyFraming::None => BodyState::Length(0),
            BodyFraming::Length(n) => BodyState::Length(usize::try_from(n).unwrap_or(usize::MAX)),
            BodyFraming::Chunked => BodyState::Chunked(ChunkedDecoder::new(limit)),
            BodyFraming::UntilClose => BodyState::UntilClose,
        }
    }
}

/// One TLS connection and the bytes read but not yet consumed (wiped on drop: they may be
/// key material).
struct Conn {
    tls: StreamOwned<ClientConnection, TcpStream>,
    buf: Zeroizing<Vec<u8>>,
}

impl Conn {
    fn open(ep: &Endpoint, config: &Arc<ClientConfig>) -> Result<Conn, Failure> {
        let addrs: Vec<_> = (ep.host.as_str(), ep.port)
            .to_socket_addrs()
            .map_err(|e| {
                Failure::Connect(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("cannot resolve '{}': {}", ep.host, io_msg(&e)),
                ))
            })?
            .collect();
        let mut last =
            io::Error::new(io::ErrorKind::NotFound, format!("no address for '{}'", ep.host));
        let mut sock = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let sock = sock.ok_or(Failure::Connect(last))?;
        sock.set_read_timeout(Some(IO_TIMEOUT)).map_err(Failure::Io)?;
        sock.set_write_timeout(Some(IO_TIMEOUT)).map_err(Failure::Io)?;
        let _ = sock.set_nodelay(true);
        let name = match ep.host.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(ep.host.clone()).map_err(|_| {
                Failure::Protocol(format!("'{}' is not a valid server name", ep.host))
            })?,
        };
        let conn = ClientConnection::new(config.clone(), name).map_err(Failure::Tls)?;
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).map_err(io_failure)?;
        }
        Ok(Conn { tls, buf: Zeroizing::new(Vec::new()) })
    }

    fn send(
        &mut self,
        ep: &Endpoint,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(), Failure> {
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kes/{}\r\nAccept: application/json\r\nConnection: close\r\n",
            ep.base,
            ep.authority(),
            env!("CARGO_PKG_VERSION"),
        );
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        } else if method == "POST" || method == "PUT" {
            req.push_str("Content-Length: 0\r\n");
        }
        req.push_str("\r\n");
        let mut bytes = zeroize::Zeroizing::new(req.into_bytes());
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        self.tls.write_all(&bytes).map_err(io_failure)?;
        self.tls.flush().map_err(io_failure)
    }

    /// Reads more bytes into the buffer; `Ok(0)` at the end of the stream.
    fn fill(&mut self) -> Result<usize, Failure> {
        let mut chunk = [0u8; 16 << 10];
        match self.tls.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            // A peer that closes without close_notify still ended the stream.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && tls_error(&e).is_none() => Ok(0),
            Err(e) => Err(io_failure(e)),
        }
    }

    fn read_head(&mut self) -> Result<Head, Failure> {
        loop {
            if let Some((head, n)) = parse_response_head(&self.buf).map_err(Failure::Protocol)? {
                self.buf.drain(..n);
                if (100..200).contains(&head.status) {
                    continue; // interim answer; the real one follows
                }
                return Ok(head);
            }
            if self.buf.len() > MAX_RESPONSE_HEAD {
                return Err(Failure::Protocol("response head too large".into()));
            }
            if self.fill()? == 0 {
                return Err(Failure::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection before answering",
                )));
            }
        }
    }

    fn read_body(&mut self, head: &Head) -> Result<Zeroizing<Vec<u8>>, Failure> {
        match BodyState::for_head(head, MAX_RESPONSE_BODY) {
            BodyState::Length(n) => {
                if n > MAX_RESPONSE_BODY {
                    return Err(Failure::Protocol(format!(
                        "response body of {n} bytes is too large"
                    )));
                }
                while self.buf.len() < n {
                    if self.fill()? == 0 {
                        return Err(Failure::Protocol("response body cut short".into()));
                    }
                }
                Ok(Zeroizing::new(self.buf.drain(..n).collect()))
            }
            BodyState::Chunked(mut dec) => loop {
                let used = dec.feed(&self.buf).map_err(chunk_failure)?;
                self.buf.drain(..used);
                if dec.is_done() {
                    return Ok(Zeroizing::new(std::mem::take(&mut dec.data)));
                }
                if self.fill()? == 0 {
                    return Err(Failure::Protocol("chunked body cut short".into()));
                }
            },
            BodyState::UntilClose => {
                while self.fill()? > 0 {
                    if self.buf.len() > MAX_RESPONSE_BODY {
                        return Err(Failure::Protocol("response body too large".into()));
                    }
                }
                Ok(std::mem::take(&mut self.buf))
            }
        }
    }

    /// Streams wait for events as long as it takes.
    fn stream_mode(&mut self) -> Result<(), Failure> {
        self.tls.sock.set_read_timeout(None).map_err(Failure::Io)
    }
}

/// An open NDJSON event stream.
pub struct EventStream {
    conn: Conn,
    body: BodyState,
    pub endpoint: Endpoint,
}

impl EventStream {
    /// The next line (without its newline); `Ok(None)` when the server ended the stream.
    pub fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        let fail = |ep: &Endpoint, f: Failure| ClientError::Unavailable {
            failures: vec![(ep.clone(), f)],
            source: String::new(),
        };
        loop {
            // Decode what is buffered, then look for a complete line.
            let data: &mut Vec<u8> = match &mut self.body {
                BodyState::Chunked(dec) => {
                    let used = dec
                        .feed(&self.conn.buf)
                        .map_err(|e| fail(&self.endpoint, chunk_failure(e)))?;
                    self.conn.buf.drain(..used);
                    &mut dec.data
                }
                BodyState::Length(_) | BodyState::UntilClose => &mut self.conn.buf,
            };
            if let Some(i) = data.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = data.drain(..=i).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line[..i]).trim_end_matches('\r').to_string(),
                ));
            }
            if data.len() > MAX_EVENT {
                return Err(fail(&self.endpoint, Failure::Protocol("event too large".into())));
            }
            if let BodyState::Chunked(dec) = &self.body
                && dec.is_done()
            {
                return Ok(None);
            }
            match self.conn.fill() {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(f) => return Err(fail(&self.endpoint, f)),
            }
        }
    }
}

/// Server verification that is skipped on purpose (`-k/--insecure`). Named so, as rustls
/// names its own.
mod danger {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, Error, SignatureScheme};
    use std::sync::Arc;

    /// Accepts any server certificate, but still checks the handshake signature, so the
    /// server proves it holds the key of the certificate it sent.
    #[derive(Debug)]
    pub struct NoServerVerification(Arc<CryptoProvider>);

    impl NoServerVerification {
        pub fn new(provider: Arc<CryptoProvider>) -> Self {
            NoServerVerification(provider)
        }
    }

    impl ServerCertVerifier for NoServerVerification {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k: &str| map.get(k).cloned()
    }

    const KEY: &str = "kes:v1:AD9E7FSYWrMD+VjhI6q545cYT9YOyFxZb7UnjEepYDRc";

    fn err(flags: &ConnFlags, pairs: &[(&str, &str)]) -> String {
        match Settings::resolve(flags, &env_of(pairs)) {
            Err(Fail::Error(m)) => m,
            Err(Fail::Usage(m)) => panic!("usage: {m}"),
            Ok(_) => panic!("resolved"),
        }
    }

    fn urls(flags: &ConnFlags, pairs: &[(&str, &str)]) -> Vec<String> {
        let s = Settings::resolve(flags, &env_of(pairs)).unwrap_or_else(|_| panic!("{pairs:?}"));
        s.endpoints.into_iter().map(|e| e.url).collect()
    }

    #[test]
    fn endpoints_are_normalised_like_upstream() {
        let f = ConnFlags::default();
        assert_eq!(urls(&f, &[("KES_API_KEY", KEY)]), ["https://127.0.0.1:7373"]);
        assert_eq!(
            urls(&f, &[("KES_API_KEY", KEY), ("KES_SERVER", " http://a:1 , https://b:2,c:3 ,")]),
            ["https://a:1", "https://b:2", "https://c:3"]
        );
        assert_eq!(
            urls(&f, &[("KES_API_KEY", KEY), ("KES_SERVER", "[::1]:7373,kes.example")]),
            ["https://[::1]:7373", "https://kes.example:443"]
        );
        // Precedence: MINIO_KES_SERVER, KES_SERVER, MINIO_KMS_KES_ENDPOINT; -s beats all.
        let all = [
            ("KES_API_KEY", KEY),
            ("MINIO_KES_SERVER", "m:1"),
            ("KES_SERVER", "k:2"),
            ("MINIO_KMS_KES_ENDPOINT", "e:3"),
        ];
        assert_eq!(urls(&f, &all), ["https://m:1"]);
        assert_eq!(
            urls(&f, &all[..1].iter().chain(&all[2..]).copied().collect::<Vec<_>>()),
            ["https://k:2"]
        );
        assert_eq!(urls(&f, &[all[0], all[3]]), ["https://e:3"]);
        let s = ConnFlags { server: Some("s:4".into()), ..Default::default() };
        assert_eq!(urls(&s, &all), ["https://s:4"]);
    }

    #[test]
    fn the_first_set_variable_wins_even_when_empty() {
        let f = ConnFlags::default();
        assert_eq!(
            err(&f, &[("KES_API_KEY", KEY), ("MINIO_KES_SERVER", ""), ("KES_SERVER", "k:2")]),
            "'MINIO_KES_SERVER' contains no hosts / IPs"
        );
        assert!(err(&f, &[("KES_API_KEY", KEY), ("KES_SERVER", "k:0")]).contains("invalid port"));
    }

    #[test]
    fn credential_combinations_give_upstreams_messages() {
        let f = ConnFlags::default();
        assert_eq!(err(&f, &[]), "no API key specified. Consider setting MINIO_KES_API_KEY");
        assert_eq!(
            err(&f, &[("KES_API_KEY", KEY), ("KES_CLIENT_KEY", "k")]),
            "API key and private key file cannot be used at the same time"
        );
        assert_eq!(
            err(&f, &[("KES_API_KEY", KEY), ("KES_CLIENT_CERT", "c")]),
            "API key and certificate file cannot be used at the same time"
        );
        assert_eq!(
            err(&f, &[("KES_CLIENT_KEY", "k")]),
            "no certificate file specified. Consider setting MINIO_KES_CERT_FILE"
        );
        assert_eq!(
            err(&f, &[("MINIO_KES_CERT_FILE", "c")]),
            "no private key file specified. Consider setting MINIO_KES_KEY_FILE"
        );
        assert_eq!(err(&f, &[("KES_API_KEY", "kes:v1:nope")]), "parsing API key: invalid API key");
        // An empty variable that is set hides the ones after it.
        assert_eq!(
            err(&f, &[("MINIO_KES_API_KEY", ""), ("KES_API_KEY", KEY)]),
            "no API key specified. Consider setting MINIO_KES_API_KEY"
        );
        let a = ConnFlags { api_key: Some(KEY.into()), ..Default::default() };
        assert!(Settings::resolve(&a, &env_of(&[])).is_ok());
        match Settings::resolve(&f, &env_of(&[("KES_CLIENT_KEY", "k"), ("KES_CLIENT_CERT", "c")])) {
            Ok(Settings { credentials: Credentials::Files { cert, key }, .. }) => {
                assert_eq!((cert, key), (PathBuf::from("c"), PathBuf::from("k")));
            }
            _ => panic!("files"),
        }
    }

    #[test]
    fn error_messages_prefer_error_then_message_then_text() {
        let j = "application/json";
        assert_eq!(
            error_message(400, j, br#"{"message":"key already exists"}"#),
            "key already exists"
        );
        assert_eq!(error_message(400, j, br#"{"error":"e","message":"m"}"#), "e");
        assert_eq!(error_message(404, "text/plain", b"404 page not found\n"), "404 page not found");
        assert_eq!(error_message(502, j, b""), "server answered 502 Bad Gateway");
    }

    #[test]
    fn presented_names_are_shown_plainly() {
        assert_eq!(san_text("DnsName(\"localhost\")"), "localhost");
        assert_eq!(san_text("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(san_text("other"), "other");
    }

    #[test]
    fn a_403_names_the_path_and_identity() {
        let e = ClientError::Api {
            status: 403,
            message: "not authorized: insufficient permissions".into(),
            path: "/v1/key/create/other".into(),
            identity: Identity::new("ab12"),
        };
        assert_eq!(
            e.to_string(),
            "not authorized: insufficient permissions (identity ab12 is not allowed to access \
             /v1/key/create/other; its policy on the server must allow it)"
        );
    }
}
