//! The vault transport: one authenticated Key Vault request (challenge, token, one retry
//! on 401), purge with retry, the version listing, and the error texts of failed calls.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ureq::http::Method;

use super::client::{Http, Request, Response, TransportError, Url, jitter};
use super::credentials::{Source, TokenCache, TokenError};
use super::error::{Class, api_error, classify, parse_challenge, resource_matches_host};
use super::wire::{BadBody, VersionItem, parse_page};
use super::{API_VERSION, MAX_VERSION_PAGES};
use crate::keystore::StoreError;
use crate::percent::{UNRESERVED, percent_encode};

/// The connection to one vault: HTTP, credential, token cache and the resource learned
/// from (or derived for) the vault.
pub(super) struct Vault {
    /// `https://host[:port]`.
    pub(super) base: String,
    pub(super) origin: Url,
    pub(super) host: String,
    /// The endpoint is an IP address or `localhost`: no domain to check a challenge against.
    pub(super) ip_like: bool,
    pub(super) http: Http,
    pub(super) source: Source,
    pub(super) tokens: TokenCache,
    /// The token resource learned from a challenge.
    pub(super) resource: Mutex<Option<String>>,
    /// The resource derived from a known cloud host name.
    pub(super) known_resource: Option<String>,
    pub(super) skip_resource_check: bool,
    pub(super) warned: AtomicBool,
    pub(super) conflict_delay: Duration,
    pub(super) conflict_jitter: Duration,
    pub(super) status_timeout: Duration,
}

/// Why a vault call produced no HTTP answer.
pub(super) enum CallError {
    Transport(TransportError),
    /// The vault's challenge could not be used.
    Auth(String),
    /// No token: the token endpoint could not be reached, or refused the credential.
    Token(TokenError),
}

impl From<TransportError> for CallError {
    fn from(e: TransportError) -> Self {
        CallError::Transport(e)
    }
}

impl CallError {
    pub(super) fn store(self, op: &str, name: &str, what: &str) -> StoreError {
        match self {
            CallError::Transport(e) => {
                StoreError::Unreachable(format!("azure: failed to {op} '{name}': {what}: {e}"))
            }
            // An unreachable token endpoint is an outage like an unreachable vault.
            CallError::Token(e) if e.is_transport() => StoreError::Unreachable(format!(
                "azure: failed to {op} '{name}': {what}: token endpoint unreachable: {e}"
            )),
            CallError::Auth(m) => StoreError::Failed(format!(
                "azure: failed to {op} '{name}': {what}: authentication failed: {m}"
            )),
            CallError::Token(e) => StoreError::Failed(format!(
                "azure: failed to {op} '{name}': {what}: authentication failed: {e}"
            )),
        }
    }
}

pub(super) enum Purge {
    Done,
    /// The last answer when purging stopped without success.
    Stopped(Response),
}

impl Vault {
    pub(super) fn secret_url(&self, name: &str, version: &str) -> String {
        if version.is_empty() {
            format!(
                "{}/secrets/{}?api-version={API_VERSION}",
                self.base,
                percent_encode(name, UNRESERVED)
            )
        } else {
            format!(
                "{}/secrets/{}/{}?api-version={API_VERSION}",
                self.base,
                percent_encode(name, UNRESERVED),
                percent_encode(version, UNRESERVED)
            )
        }
    }

    pub(super) fn resource(&self) -> Option<String> {
        let learned = self.resource.lock().unwrap_or_else(|p| p.into_inner()).clone();
        learned.or_else(|| self.known_resource.clone())
    }

    /// Checks a 401 challenge and remembers its resource (`azure-rest.md` §8).
    pub(super) fn learn(&self, r: &Response) -> Result<String, CallError> {
        let c = r.www_authenticate.as_deref().and_then(parse_challenge).ok_or_else(|| {
            CallError::Auth(format!(
                "vault answered 401 without a usable challenge ({})",
                api_error(r.status, &r.body).describe()
            ))
        })?;
        if !self.ip_like
            && !self.skip_resource_check
            && !resource_matches_host(&c.resource, &self.host)
        {
            return Err(CallError::Auth(format!(
                "the vault's challenge names resource '{}', which does not cover host '{}'; refusing to send a token",
                c.resource, self.host
            )));
        }
        if let Some(t) = self.source.tenant()
            && !c.tenant.is_empty()
            && !c.tenant.eq_ignore_ascii_case(t)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            log::warn!(
                "azure: the vault belongs to tenant {} but the credential is for tenant {t}",
                c.tenant
            );
        }
        *self.resource.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.resource.clone());
        Ok(c.resource)
    }

    /// One authenticated Key Vault request (with the transport's retries). Handles the
    /// challenge: when the resource is not known yet the request first goes out without
    /// credentials and body; a 401 to a request that carried a token drops that token and
    /// retries once with a fresh one. A second 401 is returned to the caller.
    pub(super) fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Response, CallError> {
        let mut resource = match self.resource() {
            Some(r) => r,
            None => {
                let mut probe = Request::new(method.clone(), url);
                if body.is_some() {
                    probe.body = Some(("application/json", &[]));
                }
                let r = self.http.send(&probe, deadline)?;
                if r.status != 401 {
                    if body.is_none() {
                        return Ok(r);
                    }
                    return Err(CallError::Auth(format!(
                        "vault sent no authentication challenge (HTTP {})",
                        r.status
                    )));
                }
                self.learn(&r)?
            }
        };
        let mut retried = false;
        loop {
            let fetch = |res: &str, d: Instant| self.source.fetch(&self.http, res, d);
            let token = self.tokens.get(&resource, deadline, &fetch).map_err(CallError::Token)?;
            let mut req = Request::new(method.clone(), url);
            req.bearer = Some(token.secret());
            if let Some(b) = body {
                req.body = Some(("application/json", b));
            }
            let r = self.http.send(&req, deadline)?;
            if r.status != 401 || retried {
                return Ok(r);
            }
            self.tokens.invalidate(token.generation);
            if r.www_authenticate.is_some() {
                resource = self.learn(&r)?;
            }
            retried = true;
        }
    }

    /// Purge with retry (§3.5): success or 404 → done; 409 `ObjectIsBeingDeleted` → wait
    /// and retry up to `attempts` times; anything else stops with that answer.
    pub(super) fn purge(
        &self,
        name: &str,
        attempts: u32,
        deadline: Instant,
    ) -> Result<Purge, CallError> {
        let url = format!(
            "{}/deletedsecrets/{}?api-version={API_VERSION}",
            self.base,
            percent_encode(name, UNRESERVED)
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = self.call(Method::DELETE, &url, None, deadline)?;
            match classify(r.status, &api_error(r.status, &r.body)) {
                Class::Success | Class::NotFound => return Ok(Purge::Done),
                Class::BeingDeleted if attempt < attempts && self.conflict_pause(deadline) => {
                    continue;
                }
                _ => return Ok(Purge::Stopped(r)),
            }
        }
    }

    /// Sleeps 200 ms + [0, 800) ms (configurable) unless that would pass `deadline`.
    pub(super) fn conflict_pause(&self, deadline: Instant) -> bool {
        let wait = self.conflict_delay + jitter(self.conflict_jitter);
        if Instant::now() + wait >= deadline {
            return false;
        }
        std::thread::sleep(wait);
        true
    }

    /// Every version of `name` in list order (all pages, bounded). An empty listing or a
    /// 404 means the key does not exist (README observed item 7).
    pub(super) fn list_versions(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<Vec<VersionItem>, StoreError> {
        let mut url = format!(
            "{}/secrets/{}/versions?api-version={API_VERSION}",
            self.base,
            percent_encode(name, UNRESERVED)
        );
        let mut out = Vec::new();
        for page_no in 0..MAX_VERSION_PAGES {
            let r = self
                .call(Method::GET, &url, None, deadline)
                .map_err(|e| e.store("get", name, "failed to list versions"))?;
            if r.status == 404 && page_no == 0 {
                return Err(StoreError::NotFound);
            }
            if r.status != 200 {
                return Err(fail_http("get", name, "failed to list versions", &r));
            }
            let page = parse_page(&r.body).map_err(|e| bad("get", name, e))?;
            out.extend(page.version_items());
            match page.next() {
                Some(next) => {
                    url = self.next_url(next).map_err(|m| {
                        StoreError::Failed(format!("azure: failed to get '{name}': {m}"))
                    })?
                }
                None => {
                    return if out.is_empty() { Err(StoreError::NotFound) } else { Ok(out) };
                }
            }
        }
        Err(StoreError::Failed(format!(
            "azure: failed to get '{name}': more than {MAX_VERSION_PAGES} pages of versions"
        )))
    }

    /// Checks a `nextLink` before a token is sent to it: same scheme, host and port as the
    /// vault (`azure-rest.md` §5), with the api-version kept.
    pub(super) fn next_url(&self, next: &str) -> Result<String, String> {
        let u = Url::parse(next).map_err(|e| format!("invalid nextLink: {e}"))?;
        if !u.same_origin(&self.origin) {
            return Err(format!("nextLink points to another host ({})", u.origin()));
        }
        let mut s = format!("{}{}", self.base, u.rest);
        if !u.rest.contains("api-version=") {
            s.push(if u.rest.contains('?') { '&' } else { '?' });
            s.push_str(&format!("api-version={API_VERSION}"));
        }
        Ok(s)
    }
}

/// A 200 answer we could not use.
pub(super) fn bad(op: &str, name: &str, e: BadBody) -> StoreError {
    StoreError::Failed(format!("azure: failed to {op} '{name}': {e}"))
}

/// `azure: failed to <op> '<name>': <what>: <Azure message> (<inner code>)`.
pub(super) fn fail_http(op: &str, name: &str, what: &str, r: &Response) -> StoreError {
    let e = api_error(r.status, &r.body);
    if let Some(id) = &r.request_id {
        log::debug!("azure: {op} '{name}': HTTP {} (x-ms-request-id {id})", r.status);
    }
    StoreError::Failed(format!("azure: failed to {op} '{name}': {what}: {}", e.describe()))
}

/// A non-200 answer to reading a version: 404 means the key is gone (deleted between the
/// listing and the read); everything else is a failure.
pub(super) fn map_get_status(name: &str, what: &str, r: &Response) -> StoreError {
    if r.status == 404 { StoreError::NotFound } else { fail_http("get", name, what, r) }
}
