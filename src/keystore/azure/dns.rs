//! The vault client's name resolution: a small cache in front of the system resolver, one
//! lookup thread per name in flight, stale answers served through a DNS blip.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ureq::http;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a resolved address is reused before asking the system resolver again.
pub const DNS_CACHE_TTL: Duration = Duration::from_secs(60);
/// Stack of the one lookup thread per host name in flight (glibc NSS lookups need more
/// than 64 KiB; STACK.md §3.2 measured 256 KiB as safe and cheap under mlockall).
pub const DNS_THREAD_STACK: usize = 256 << 10;
/// Longest we wait for a name lookup even when the caller's deadline is later.
pub const DNS_MAX_WAIT: Duration = Duration::from_secs(10);

/// A failed name lookup of [`CachingResolver`], carried inside ureq's I/O error so that
/// [`transport_error`] can tell it from other I/O failures by type.
#[derive(Debug)]
pub(super) struct LookupFailed(pub(super) String);

impl fmt::Display for LookupFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LookupFailed {}

/// A resolver that caches answers for [`DNS_CACHE_TTL`] and runs at most one lookup
/// thread per name at a time (ureq's default spawns a 2 MiB-stack thread per request when
/// timeouts are set, STACK.md §3.1). Stale answers are served when a refresh fails or
/// times out, so a DNS blip does not fail requests to a vault whose address is known.
#[derive(Debug, Default)]
pub(super) struct CachingResolver {
    state: Arc<DnsState>,
}

#[derive(Debug, Default)]
struct DnsState {
    map: Mutex<HashMap<String, DnsEntry>>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct DnsEntry {
    addrs: Vec<SocketAddr>,
    fetched: Option<Instant>,
    pending: bool,
    last_error: Option<String>,
    /// Incremented each time a lookup finishes.
    generation: u64,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
        let addrs = if let Ok(ip) = host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else {
            let wait = (*timeout.after).min(DNS_MAX_WAIT);
            self.lookup(&format!("{host}:{port}"), wait)?
        };
        let mut out = self.empty();
        for a in config.ip_family().keep_wanted(addrs.into_iter()).take(16) {
            out.push(a);
        }
        if out.is_empty() { Err(ureq::Error::HostNotFound) } else { Ok(out) }
    }
}

impl CachingResolver {
    fn lookup(&self, key: &str, wait: Duration) -> Result<Vec<SocketAddr>, ureq::Error> {
        let give_up = Instant::now() + wait;
        let st = &self.state;
        let mut map = st.map.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.entry(key.to_string()).or_default();
        if e.fetched.is_some_and(|t| t.elapsed() < DNS_CACHE_TTL) && !e.addrs.is_empty() {
            return Ok(e.addrs.clone());
        }
        // Wait for the next lookup to finish: ours, or the one already in flight.
        let asked_at = e.generation;
        if !e.pending {
            e.pending = true;
            if !spawn_lookup(Arc::clone(&self.state), key.to_string()) {
                // No thread available: resolve inline (blocking, without a timeout).
                drop(map);
                let r = key.to_socket_addrs().map(|i| i.collect::<Vec<_>>());
                finish_lookup(st, key, r);
                map = st.map.lock().unwrap_or_else(|p| p.into_inner());
            }
        }
        loop {
            let e = map.entry(key.to_string()).or_default();
            if e.generation != asked_at {
                // Fresh addresses, or the stale ones when the lookup failed.
                if !e.addrs.is_empty() {
                    return Ok(e.addrs.clone());
                }
                let msg = e.last_error.clone().unwrap_or_else(|| format!("no address for {key}"));
                return Err(ureq::Error::Io(std::io::Error::other(LookupFailed(msg))));
            }
            let now = Instant::now();
            if now >= give_up {
                // Serve a stale answer rather than failing on a slow resolver.
                if !e.addrs.is_empty() {
                    return Ok(e.addrs.clone());
                }
                return Err(ureq::Error::Timeout(ureq::Timeout::Resolve));
            }
            map = st.cond.wait_timeout(map, give_up - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

fn spawn_lookup(state: Arc<DnsState>, key: String) -> bool {
    let k = key.clone();
    let st = Arc::clone(&state);
    std::thread::Builder::new()
        .name("azure-dns".into())
        .stack_size(DNS_THREAD_STACK)
        .spawn(move || {
            let r = k.to_socket_addrs().map(|i| i.collect::<Vec<_>>());
            finish_lookup(&st, &k, r);
        })
        .is_ok()
}

fn finish_lookup(st: &DnsState, key: &str, r: std::io::Result<Vec<SocketAddr>>) {
    let mut map = st.map.lock().unwrap_or_else(|p| p.into_inner());
    let e = map.entry(key.to_string()).or_default();
    e.pending = false;
    e.generation += 1;
    match r {
        Ok(a) if !a.is_empty() => {
            e.addrs = a;
            e.fetched = Some(Instant::now());
            e.last_error = None;
        }
        Ok(_) => e.last_error = Some(format!("no address for {key}")),
        // Keep stale addresses; they are served until a lookup succeeds again.
        Err(err) => e.last_error = Some(format!("lookup of {key} failed: {err}")),
    }
    st.cond.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_serves_ip_literals_and_caches_names() {
        let r = CachingResolver::default();
        let cfg = ureq::config::Config::default();
        let uri: http::Uri = "https://127.0.0.1:8443/x".parse().unwrap();
        let t = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::from_secs(1),
            ..Default::default()
        };
        let a = r.resolve(&uri, &cfg, t).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0], "127.0.0.1:8443".parse().unwrap());
        let uri: http::Uri = "https://localhost:8443/x".parse().unwrap();
        let a = r.resolve(&uri, &cfg, t).unwrap();
        assert!(a.iter().all(|s| s.ip().is_loopback() && s.port() == 8443));
        // The second lookup comes from the cache: no pending lookup, fresh entry.
        {
            let map = r.state.map.lock().unwrap();
            let e = map.get("localhost:8443").unwrap();
            assert!(!e.pending && e.fetched.is_some() && e.generation == 1);
        }
        r.resolve(&uri, &cfg, t).unwrap();
        assert_eq!(r.state.map.lock().unwrap().get("localhost:8443").unwrap().generation, 1);
    }
}
