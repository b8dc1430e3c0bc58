//! Which requests go through the HTTPS proxy, with the rules of Go's `httpproxy`
//! (`HTTPS_PROXY`, `NO_PROXY`).

use std::fmt;
use std::net::IpAddr;

use super::client::Url;

/// HTTPS proxy settings with Go's `httpproxy` semantics (`kes` README facts, observed item 9).
#[derive(Clone)]
pub struct ProxySettings {
    pub(super) proxy: ureq::Proxy,
    /// The proxy URL without credentials, for messages.
    shown: String,
    no_proxy: NoProxy,
}

impl fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySettings").field("proxy", &self.shown).finish()
    }
}

impl ProxySettings {
    /// `proxy` as in `HTTPS_PROXY` (a missing scheme means `http://`); `no_proxy` as in
    /// `NO_PROXY`. Only HTTP CONNECT proxies (`http://`, `https://`) are supported.
    pub fn parse(proxy: &str, no_proxy: &str) -> Result<ProxySettings, String> {
        let p = proxy.trim();
        let with_scheme = if p.contains("://") { p.to_string() } else { format!("http://{p}") };
        let url = Url::parse(&with_scheme).map_err(|e| format!("invalid HTTPS_PROXY: {e}"))?;
        if url.scheme != "http" && url.scheme != "https" {
            return Err(format!(
                "unsupported proxy scheme '{}': only http:// and https:// (CONNECT) proxies are supported",
                url.scheme
            ));
        }
        let proxy = ureq::Proxy::new(&with_scheme)
            .map_err(|_| format!("invalid HTTPS_PROXY: {}://{}", url.scheme, url.host_port()))?;
        Ok(ProxySettings {
            proxy,
            shown: format!("{}://{}", url.scheme, url.host_port()),
            no_proxy: NoProxy::parse(no_proxy),
        })
    }

    /// Whether a request to `url` goes through the proxy. Like Go, loopback and `localhost`
    /// are never proxied, and only `https` targets use `HTTPS_PROXY`.
    pub fn applies_to(&self, url: &Url) -> bool {
        if url.scheme != "https" {
            return false;
        }
        let host = url.host.to_ascii_lowercase();
        if host == "localhost" {
            return false;
        }
        if let Ok(ip) = host.parse::<IpAddr>()
            && ip.is_loopback()
        {
            return false;
        }
        !self.no_proxy.bypass(&host, url.port)
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// A parsed `NO_PROXY` list (Go `golang.org/x/net/http/httpproxy` rules): `*` matches
/// everything; `1.2.3.4` and `[::1]` match that IP; `10.0.0.0/8` matches the range;
/// `example.com` matches it and its subdomains; `.example.com` and `*.example.com` match
/// subdomains only; an entry may end in `:port` to match that port only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    entries: Vec<NoProxyEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxyEntry {
    Ip(IpAddr, Option<u16>),
    Cidr(IpAddr, u8),
    /// `suffix` starts with '.'; `match_host` also matches the suffix without the dot.
    Domain {
        suffix: String,
        match_host: bool,
        port: Option<u16>,
    },
}

impl NoProxy {
    pub fn parse(s: &str) -> NoProxy {
        let mut out = NoProxy::default();
        for raw in s.split(',') {
            let p = raw.trim().to_ascii_lowercase();
            if p.is_empty() {
                continue;
            }
            if p == "*" {
                out.all = true;
                continue;
            }
            if let Some((ip, len)) = p.split_once('/') {
                if let (Ok(ip), Ok(len)) = (ip.parse::<IpAddr>(), len.parse::<u8>()) {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    if len <= max {
                        out.entries.push(NoProxyEntry::Cidr(ip, len));
                    }
                }
                continue;
            }
            let (host, port) = split_host_port(&p);
            if let Ok(ip) = host.parse::<IpAddr>() {
                out.entries.push(NoProxyEntry::Ip(ip, port));
                continue;
            }
            let host = host.strip_prefix('*').unwrap_or(host);
            let (suffix, match_host) = if host.starts_with('.') {
                (host.to_string(), false)
            } else {
                (format!(".{host}"), true)
            };
            if suffix.len() > 1 {
                out.entries.push(NoProxyEntry::Domain { suffix, match_host, port });
            }
        }
        out
    }

    /// Whether `host` (lowercase, no brackets) on `port` bypasses the proxy.
    pub fn bypass(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let ip = host.parse::<IpAddr>().ok();
        self.entries.iter().any(|e| match (e, ip) {
            (NoProxyEntry::Ip(want, p), Some(ip)) => *want == ip && p.is_none_or(|p| p == port),
            (NoProxyEntry::Cidr(net, len), Some(ip)) => cidr_contains(*net, *len, ip),
            (NoProxyEntry::Domain { suffix, match_host, port: p }, None) => {
                (host.ends_with(suffix.as_str()) || (*match_host && host == &suffix[1..]))
                    && p.is_none_or(|p| p == port)
            }
            _ => false,
        })
    }
}

/// `host:port`, `[v6]:port`, `[v6]` or `host` → (host without brackets, port).
fn split_host_port(s: &str) -> (&str, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (h, port);
        }
        return (s, None);
    }
    match s.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (s, None),
        },
        _ => (s, None),
    }
}

fn cidr_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_follows_go_rules() {
        let np = NoProxy::parse(
            " example.com, .internal.net ,*.corp.io,10.0.0.0/8,192.168.1.5,[::1]:8443,svc:8080,*x,",
        );
        assert!(np.bypass("example.com", 443));
        assert!(np.bypass("a.example.com", 443));
        assert!(!np.bypass("notexample.com", 443));
        assert!(!np.bypass("internal.net", 443));
        assert!(np.bypass("v.internal.net", 443));
        assert!(!np.bypass("corp.io", 443));
        assert!(np.bypass("a.corp.io", 443));
        assert!(np.bypass("10.1.2.3", 443));
        assert!(!np.bypass("11.1.2.3", 443));
        assert!(np.bypass("192.168.1.5", 1));
        assert!(np.bypass("::1", 8443));
        assert!(!np.bypass("::1", 443));
        assert!(np.bypass("svc", 8080));
        assert!(!np.bypass("svc", 443));
        // `*x` is a suffix match like Go's leading-`*` handling of `*.x`.
        assert!(np.bypass("x", 443));
        assert!(NoProxy::parse("*").bypass("anything.example", 1));
        assert!(!NoProxy::parse("").bypass("example.com", 443));
        assert!(NoProxy::parse("fd00::/8").bypass("fd12::1", 443));
        assert!(!NoProxy::parse("fd00::/8").bypass("fe80::1", 443));
        assert!(NoProxy::parse("0.0.0.0/0").bypass("8.8.8.8", 443));
    }

    #[test]
    fn proxy_selection() {
        let p = ProxySettings::parse("proxy.corp:3128", "vault.azure.net,.example.com").unwrap();
        assert_eq!(p.shown(), "http://proxy.corp:3128");
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(p.applies_to(&url("https://kes.vault.azure.cn/secrets")));
        assert!(!p.applies_to(&url("https://kes.vault.azure.net/secrets")));
        assert!(!p.applies_to(&url("https://a.example.com")));
        // Loopback and localhost are never proxied; plain http targets neither.
        assert!(!p.applies_to(&url("https://127.0.0.1:8443")));
        assert!(!p.applies_to(&url("https://localhost:8443")));
        assert!(!p.applies_to(&url("https://[::1]:8443")));
        assert!(!p.applies_to(&url("http://169.254.169.254/metadata")));

        let p = ProxySettings::parse("https://user:secret@p.example:8443", "").unwrap();
        assert_eq!(p.shown(), "https://p.example:8443");
        assert!(!format!("{p:?}").contains("secret"));
        assert!(ProxySettings::parse("socks5://p:1080", "").unwrap_err().contains("socks5"));
    }
}
