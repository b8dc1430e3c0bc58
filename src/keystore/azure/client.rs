//! The blocking HTTP layer under the Azure store: one pooled keep-alive ureq agent (rustls
//! with ring, our own root store), a caching DNS resolver, Go-compatible proxy selection,
//! and one retry loop with bounded, jittered exponential backoff that honours `Retry-After`
//! and never sleeps past the caller's deadline.
//!
//! Must not: know Key Vault paths or JSON, hold tokens, or put a header value, request body
//! or response body into an error string. Bodies are returned in zeroizing buffers because
//! they carry secret values and access tokens.
//!
//! Facts: `azure-rest.md` §12 (which statuses the SDKs retry, Retry-After), STACK.md §3.1
//! (ureq spawns one DNS thread per request when timeouts are set) and §9 (ureq defaults to
//! reading proxies from the environment and following redirects; both are turned off here).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ureq::http::{self, Method};
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use ureq::unversioned::transport::DefaultConnector;
use zeroize::Zeroizing;

use crate::goroots::RootSources;
use crate::percent::{UNRESERVED, percent_encode};

use super::dns::{CachingResolver, LookupFailed};
pub use super::dns::{DNS_CACHE_TTL, DNS_MAX_WAIT, DNS_THREAD_STACK};
use super::error::{is_transient_status, parse_retry_after, parse_retry_after_ms};
pub use super::proxy::{NoProxy, ProxySettings};

/// Largest response body we read. A list page of 25 items is ~10 KB and a secret value at
/// most 25 KB (`azure-rest.md` §4.2); anything far bigger is a broken or hostile peer.
pub const MAX_RESPONSE_BYTES: u64 = 1 << 20;
/// Largest response head we accept (Key Vault sends ~1 KB of headers).
pub const MAX_RESPONSE_HEADER_BYTES: usize = 32 << 10;
/// Idle keep-alive connections kept per host: enough for the two parallel reads of a cold
/// key from several request threads at once without re-handshaking.
pub const POOL_IDLE_PER_HOST: usize = 8;
/// Idle connections kept in total (vault, Entra, managed-identity endpoint).
pub const POOL_IDLE_TOTAL: usize = 16;
/// How long an idle pooled connection is reused; below Azure's front-end idle timeout.
pub const POOL_IDLE_AGE: Duration = Duration::from_secs(50);
/// Sent on every request so that vault operators can tell our traffic apart.
pub const USER_AGENT: &str = concat!("kes-rs/", env!("CARGO_PKG_VERSION"), " (azure-keyvault)");
/// Retry schedule for transient failures (`azure-rest.md` §12; upstream: 7 retries, 200 ms
/// base). Every wait is also bounded by the caller's deadline.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubles per retry.
    pub base_delay: Duration,
    /// Backoff cap.
    pub max_delay: Duration,
    /// Longest `Retry-After` we honour; a longer one fails at once (the request would not
    /// finish within any route deadline anyway).
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (1-based): `base·2^(retry-1)` capped at
    /// `max_delay`, drawn uniformly from its upper half so that clients spread out.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let d = exp.min(self.max_delay);
        let half = d / 2;
        half + jitter(d - half)
    }
}

/// A uniformly random duration in `[0, max)`.
pub fn jitter(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Duration::ZERO;
    }
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        return max / 2;
    }
    Duration::from_millis(u64::from_le_bytes(b) % ms)
}

/// One request. The bearer token is kept apart from the other headers so that nothing that
/// prints headers can ever print it.
pub struct Request<'a> {
    pub method: Method,
    pub url: &'a str,
    pub headers: Vec<(&'static str, String)>,
    pub bearer: Option<&'a str>,
    pub body: Option<(&'static str, &'a [u8])>,
    /// Never use a proxy (IMDS and App Service endpoints, `azure-rest.md` §10.1).
    pub direct: bool,
}

impl<'a> Request<'a> {
    pub fn new(method: Method, url: &'a str) -> Request<'a> {
        Request { method, url, headers: Vec::new(), bearer: None, body: None, direct: false }
    }
}

/// A response with the few headers the Azure layer reads. The body is zeroized on drop.
pub struct Response {
    pub status: u16,
    /// From `Retry-After`, `retry-after-ms` or `x-ms-retry-after-ms`.
    pub retry_after: Option<Duration>,
    pub www_authenticate: Option<String>,
    pub request_id: Option<String>,
    pub body: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("request_id", &self.request_id)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Why no response came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Connect, read or name-lookup timeout.
    Timeout,
    /// Refused, reset, closed early: worth retrying.
    Connection,
    /// The host name did not resolve: worth retrying (resolvers recover).
    Dns,
    /// The request went through the HTTPS proxy and failed there (connecting to it,
    /// resolving through it, or its CONNECT answer): worth retrying.
    Proxy,
    /// Certificate or handshake failure: retrying will not help.
    Tls,
    /// The response exceeded [`MAX_RESPONSE_BYTES`] or [`MAX_RESPONSE_HEADER_BYTES`].
    TooLarge,
    /// The caller's deadline passed before an answer.
    Deadline,
    /// A URL or setting we could not use.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    pub kind: TransportKind,
    pub message: String,
}

impl TransportError {
    fn new(kind: TransportKind, message: impl Into<String>) -> TransportError {
        TransportError { kind, message: message.into() }
    }

    pub fn retryable(&self) -> bool {
        matches!(
            self.kind,
            TransportKind::Timeout
                | TransportKind::Connection
                | TransportKind::Dns
                | TransportKind::Proxy
        )
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Maps ureq's error to our kinds; `proxied` says the request went through the HTTPS proxy,
/// so that a connection failure is the proxy's. ureq's messages name the failure, never
/// header values.
fn transport_error(e: ureq::Error, proxied: bool) -> TransportError {
    use ureq::Error as E;
    let lookup_failed = |io: &std::io::Error| io.get_ref().is_some_and(|e| e.is::<LookupFailed>());
    // rustls reports a refused certificate or a failed handshake through the I/O error.
    let tls_failed = |io: &std::io::Error| io.get_ref().is_some_and(|e| e.is::<rustls::Error>());
    let kind = match &e {
        E::ConnectProxyFailed(_) => TransportKind::Proxy,
        E::Tls(_) | E::Rustls(_) | E::TlsRequired | E::Pem(_) => TransportKind::Tls,
        E::Io(io) if tls_failed(io) => TransportKind::Tls,
        E::Timeout(_) | E::Io(_) | E::HostNotFound | E::ConnectionFailed | E::Protocol(_)
            if proxied =>
        {
            TransportKind::Proxy
        }
        E::Timeout(ureq::Timeout::Resolve) | E::HostNotFound => TransportKind::Dns,
        E::Io(io) if lookup_failed(io) => TransportKind::Dns,
        E::Timeout(_) => TransportKind::Timeout,
        E::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => TransportKind::Timeout,
        E::Io(_) | E::ConnectionFailed | E::Protocol(_) | E::BodyStalled => {
            TransportKind::Connection
        }
        E::BodyExceedsLimit(_) | E::LargeResponseHeader(_, _) => TransportKind::TooLarge,
        _ => TransportKind::Invalid,
    };
    TransportError::new(kind, e.to_string())
}

/// The parts of an absolute `http(s)` URL that the client checks (host for proxy and
/// `nextLink` decisions). Not a general URL parser: no userinfo in targets, no fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Lowercase `http` or `https`.
    pub scheme: String,
    /// Host without brackets, as written.
    pub host: String,
    /// Explicit port or the scheme's default.
    pub port: u16,
    /// Path and query, starting with `/` (or empty).
    pub rest: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let (scheme, after) = s.split_once("://").ok_or("not an absolute URL")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        };
        let (authority, rest) = match after.find(['/', '?', '#']) {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        // Userinfo (proxy credentials) is dropped here; callers keep the raw string.
        let authority = authority.rsplit_once('@').map(|(_, a)| a).unwrap_or(authority);
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let (h, after) = inner.split_once(']').ok_or("URL has an invalid IPv6 host")?;
            match after {
                "" => (h, None),
                p => (h, Some(p.strip_prefix(':').ok_or("URL has an invalid port")?)),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains(['/', ' ', '@', '[', ']']) {
            return Err("URL has no valid host".into());
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| "URL has an invalid port")?,
            None => default_port.ok_or("URL has no port")?,
        };
        Ok(Url { scheme, host: host.to_string(), port, rest: rest.to_string() })
    }

    /// `host[:port]` with brackets for IPv6 and without the default port.
    pub fn host_port(&self) -> String {
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default = matches!((self.scheme.as_str(), self.port), ("https", 443) | ("http", 80));
        if default { host } else { format!("{host}:{}", self.port) }
    }

    /// `scheme://host[:port]`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.host_port())
    }

    /// Same scheme, host (case-insensitive) and port (modulo default port).
    pub fn same_origin(&self, other: &Url) -> bool {
        self.scheme == other.scheme
            && self.host.eq_ignore_ascii_case(&other.host)
            && self.port == other.port
    }
}

/// What the HTTP layer needs to be built.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Where the trusted roots come from (Go's rule, [`crate::goroots`]).
    pub roots: RootSources,
    pub proxy: Option<ProxySettings>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub retry: RetryPolicy,
}

/// The one agent and its policies, shared by the vault client and the token sources.
pub struct Http {
    agent: ureq::Agent,
    proxy: Option<ProxySettings>,
    retry: RetryPolicy,
    roots: usize,
    /// Attempts, 429 answers and retries, for `/v1/metrics`.
    pub requests: std::sync::atomic::AtomicU64,
    pub throttled: std::sync::atomic::AtomicU64,
    pub retries: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http").field("proxy", &self.proxy).field("roots", &self.roots).finish()
    }
}

impl Http {
    pub fn new(s: &HttpSettings) -> Result<Http, String> {
        let roots = load_roots(s)?;
        let count = roots.len();
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::new_with_certs(&roots))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            // Proxies are chosen per request (Go's NO_PROXY rules), never from ureq's env.
            .proxy(None)
            .http_status_as_error(false)
            .max_redirects(0)
            .https_only(false)
            .user_agent(USER_AGENT)
            .timeout_connect(Some(s.connect_timeout))
            .timeout_recv_response(Some(s.read_timeout))
            .timeout_recv_body(Some(s.read_timeout))
            .timeout_send_request(Some(s.read_timeout))
            .timeout_send_body(Some(s.read_timeout))
            .max_response_header_size(MAX_RESPONSE_HEADER_BYTES)
            .max_idle_connections(POOL_IDLE_TOTAL)
            .max_idle_connections_per_host(POOL_IDLE_PER_HOST)
            .max_idle_age(POOL_IDLE_AGE)
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            DefaultConnector::default(),
            CachingResolver::default(),
        );
        Ok(Http {
            agent,
            proxy: s.proxy.clone(),
            retry: s.retry.clone(),
            roots: count,
            requests: Default::default(),
            throttled: Default::default(),
            retries: Default::default(),
        })
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    pub fn proxy(&self) -> Option<&ProxySettings> {
        self.proxy.as_ref()
    }

    /// One attempt, bounded by `deadline` as a whole (connect + send + receive).
    pub fn send_once(&self, req: &Request, deadline: Instant) -> Result<Response, TransportError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(TransportError::new(TransportKind::Deadline, "deadline exceeded"));
        }
        let url =
            Url::parse(req.url).map_err(|e| TransportError::new(TransportKind::Invalid, e))?;
        let proxy = match (&self.proxy, req.direct) {
            (Some(p), false) if p.applies_to(&url) => Some(p.proxy.clone()),
            _ => None,
        };
        let proxied = proxy.is_some();
        let mut b = http::Request::builder().method(req.method.clone()).uri(req.url);
        b = b.header("accept", "application/json");
        for (k, v) in &req.headers {
            b = b.header(*k, v.as_str());
        }
        if let Some(token) = req.bearer {
            let value = Zeroizing::new(format!("Bearer {token}"));
            b = b.header("authorization", value.as_str());
        }
        let bad = |_| TransportError::new(TransportKind::Invalid, "invalid request");
        let result = match req.body {
            Some((content_type, body)) => {
                let r = b.header("content-type", content_type).body(body).map_err(bad)?;
                let r = self
                    .agent
                    .configure_request(r)
                    .timeout_global(Some(remaining))
                    .proxy(proxy)
                    .build();
                self.agent.run(r)
            }
            None => {
                let r = b.body(()).map_err(bad)?;
                let r = self
                    .agent
                    .configure_request(r)
                    .timeout_global(Some(remaining))
                    .proxy(proxy)
                    .build();
                self.agent.run(r)
            }
        };
        let resp = result.map_err(|e| transport_error(e, proxied))?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers().get(name).and_then(|v| v.to_str().ok()).map(|s| s.to_string())
        };
        let retry_after = header("retry-after-ms")
            .and_then(|v| parse_retry_after_ms(&v))
            .or_else(|| header("x-ms-retry-after-ms").and_then(|v| parse_retry_after_ms(&v)))
            .or_else(|| {
                header("retry-after").and_then(|v| parse_retry_after(&v, SystemTime::now()))
            });
        let www_authenticate = header("www-authenticate");
        let request_id = header("x-ms-request-id");
        let body = resp
            .into_body()
            .into_with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| transport_error(e, proxied))?;
        Ok(Response {
            status,
            retry_after,
            www_authenticate,
            request_id,
            body: Zeroizing::new(body),
        })
    }

    /// Sends with retries on 408/429/5xx and on connection failures and timeouts. Returns
    /// the last answer (or error) when retries are exhausted, when a `Retry-After` exceeds
    /// the policy's maximum, or when the next wait would end after `deadline`.
    ///
    /// Safe for PUT set-secret too: a retried PUT carries the same value, so at worst Key
    /// Vault keeps one more version with identical content (`azure-rest.md` §12).
    pub fn send(&self, req: &Request, deadline: Instant) -> Result<Response, TransportError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut retry = 0u32;
        loop {
            self.requests.fetch_add(1, Relaxed);
            let result = self.send_once(req, deadline);
            if matches!(&result, Ok(r) if r.status == 429) {
                self.throttled.fetch_add(1, Relaxed);
            }
            let wait = match &result {
                Ok(r) if is_transient_status(r.status) => match r.retry_after {
                    Some(d) if d > self.retry.max_retry_after => return result,
                    Some(d) => d,
                    None => self.retry.backoff(retry + 1),
                },
                Ok(_) => return result,
                // A pooled connection the server already closed fails at once; the first
                // retry of a connection failure goes out without waiting.
                Err(e) if e.kind == TransportKind::Connection && retry == 0 => Duration::ZERO,
                Err(e) if e.retryable() => self.retry.backoff(retry + 1),
                Err(_) => return result,
            };
            if retry >= self.retry.max_retries {
                return result;
            }
            let now = Instant::now();
            if now + wait >= deadline {
                return result;
            }
            if let Err(e) = &result {
                log::debug!("azure: retrying after transport error: {e}");
            }
            std::thread::sleep(wait);
            retry += 1;
            self.retries.fetch_add(1, Relaxed);
        }
    }
}

/// The trusted roots by Go's rule. A file or directory named by `SSL_CERT_FILE` or
/// `SSL_CERT_DIR` that cannot be read (or a named file without a certificate) is an error,
/// where Go would skip it: a typo must not silently leave a private endpoint untrusted.
fn load_roots(s: &HttpSettings) -> Result<Vec<Certificate<'static>>, String> {
    let roots = s.roots.load();
    if let Some(p) = roots.problems.first() {
        return Err(format!("CA: {p}"));
    }
    if roots.certs.is_empty() {
        return Err(format!(
            "no trusted CA certificates: no system CA bundle ({}) and no SSL_CERT_FILE/SSL_CERT_DIR is set",
            crate::goroots::CERT_FILES.join(", ")
        ));
    }
    Ok(roots.certs.iter().map(|c| Certificate::from_der(c.as_ref()).to_owned()).collect())
}

/// `application/x-www-form-urlencoded` body from pairs, in a zeroizing buffer because
/// token requests carry client secrets and assertions.
pub fn form_body(pairs: &[(&str, &str)]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(percent_encode(k, UNRESERVED).as_bytes());
        out.push(b'=');
        out.extend_from_slice(percent_encode(v, UNRESERVED).as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts() {
        let u = Url::parse("https://Kes.Vault.Azure.Net:443/secrets?api-version=7.5").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.rest.as_str()),
            ("Kes.Vault.Azure.Net", 443, "/secrets?api-version=7.5")
        );
        assert_eq!(u.origin(), "https://Kes.Vault.Azure.Net");
        let v = Url::parse("https://kes.vault.azure.net/x").unwrap();
        assert!(u.same_origin(&v));
        assert!(!u.same_origin(&Url::parse("https://kes.vault.azure.net:444/").unwrap()));
        assert!(!u.same_origin(&Url::parse("http://kes.vault.azure.net/").unwrap()));
        let w = Url::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (w.host.as_str(), w.port, w.origin().as_str()),
            ("::1", 8080, "http://[::1]:8080")
        );
        assert!(Url::parse("kes.vault.azure.net").is_err());
        assert!(Url::parse("https://").is_err());
        assert!(Url::parse("https://h:notaport/").is_err());
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy {
            max_retries: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(30),
        };
        for _ in 0..50 {
            let d1 = p.backoff(1);
            assert!(d1 >= Duration::from_millis(100) && d1 < Duration::from_millis(200), "{d1:?}");
            let d3 = p.backoff(3);
            assert!(d3 >= Duration::from_millis(400) && d3 < Duration::from_millis(800), "{d3:?}");
            let d9 = p.backoff(40);
            assert!(d9 >= Duration::from_secs(1) && d9 < Duration::from_secs(2), "{d9:?}");
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn encoding() {
        let b = form_body(&[
            ("scope", "https://vault.azure.net/.default"),
            ("grant_type", "client_credentials"),
        ]);
        assert_eq!(
            &b[..],
            b"scope=https%3A%2F%2Fvault.azure.net%2F.default&grant_type=client_credentials"
        );
    }
}
