//! The KES API: pure `(Request, Identity, &State) -> Response`. Never touches a socket or a
//! TLS type: the connection loop hands it a parsed head, a bounded body and what the TLS
//! layer learned about the client's certificates.
//!
//! Pipeline per request (order decides which error wins, `kes-api.md` §3): clean path ->
//! route -> method -> (body read by the caller, bounded by the route) -> authenticate ->
//! authorize -> handler -> one audit record and the metrics.

pub mod error;
pub mod handlers;
pub mod routes;
pub mod wire;

use crate::auth::attr::ChainFacts;
use crate::auth::{Authorized, Denied, Identity, PolicySet, Rule};
use crate::http::{Head, Method, Response};
use crate::keystore::cache::KeyCache;
use crate::obs::Level;
use crate::obs::{AuditEvent, Obs, ProcReader};
use crate::percent::{self, percent_encode};
use error::ApiError;
use routes::{Auth, Route, RouteMethod};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

pub use handlers::key::parse_key;

/// The key cache as the handlers use it: every version of a key, decoded by [`parse_key`].
pub type Keys = KeyCache<crate::crypto::VersionedKey>;

/// Version facts reported by `/version`, `/v1/status` and the banner.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub version: &'static str,
    pub commit: &'static str,
}

/// An immutable snapshot of everything a request needs. Swapped whole on reload.
pub struct State {
    pub build: BuildInfo,
    pub policies: PolicySet,
    pub routes: Vec<Route>,
    pub keys: Arc<Keys>,
    /// Server start, in the local zone (reported as policy/identity `created_at`).
    pub started: OffsetDateTime,
    pub started_at: Instant,
    pub obs: Arc<Obs>,
    pub proc: Arc<ProcReader>,
    /// Logical CPUs and CPUs this process may use.
    pub cpus: (u64, u64),
    /// Admission counters, shared by every state the server swaps in.
    pub conns: Arc<crate::obs::ConnStats>,
}

pub use crate::auth::ClientCert;

/// Per-request inputs handed to a handler.
pub struct Ctx<'a> {
    pub state: &'a State,
    pub head: &'a Head<'a>,
    pub body: &'a [u8],
    /// The path after the route prefix (decoded).
    pub resource: &'a str,
    /// When the route's timeout expires; key stores stop retrying by then.
    pub deadline: Instant,
    pub peer_ip: Option<IpAddr>,
    /// What the client's verified chain proves for attribute identities.
    pub facts: &'a ChainFacts,
    /// Set by handlers that upstream audits (key create/import/delete).
    pub audit_message: std::cell::RefCell<Option<String>>,
}

impl Ctx<'_> {
    /// Logs an error with the request's fields (never a body or key material).
    pub fn log_error(&self, level: Level, msg: &str, identity: Option<&Identity>) {
        let ip = self.peer_ip.map(|i| i.to_string()).unwrap_or_default();
        let id = identity.map(|i| i.as_str()).unwrap_or("");
        self.state.obs.log_with(
            level,
            msg,
            &[
                ("req.method", self.head.method.as_str()),
                ("req.path", &self.head.path),
                ("req.ip", &ip),
                ("req.identity", id),
            ],
        );
    }
}

/// What the connection loop should do with a request head before reading its body.
pub enum Routed<'a> {
    /// Read at most `route.max_body` bytes, then call [`handle`].
    Route(&'a Route),
    /// Answer at once (404, 405, 301) without reading a body.
    Respond(Response),
}

/// `404 page not found`, as Go's mux answers unknown paths.
pub fn not_found() -> Response {
    Response::with_body(404, "text/plain; charset=utf-8", b"404 page not found\n".to_vec())
        .header("X-Content-Type-Options", "nosniff")
}

/// Why a method and path reach no route.
#[derive(Debug, Clone)]
pub enum Miss<'a> {
    /// The path is not in canonical form: redirected (301) to the cleaned path.
    Unclean(String),
    /// No route: 404.
    NotFound,
    /// The route takes another method: 405.
    WrongMethod(&'a Route),
}

/// The route for a method and decoded path: unclean paths are redirected, unknown paths
/// get 404, wrong methods 405 (POST passes where PUT is expected).
pub fn route_for<'a>(
    routes: &'a [Route],
    method: &Method,
    path: &str,
) -> Result<&'a Route, Miss<'a>> {
    if !crate::http::is_clean(path) {
        return Err(Miss::Unclean(crate::http::clean_path(path)));
    }
    let route = routes::find(routes, path).ok_or(Miss::NotFound)?;
    let ok = matches!(
        (route.method, method),
        (RouteMethod::Get, Method::Get)
            | (RouteMethod::Put, Method::Put | Method::Post)
            | (RouteMethod::Delete, Method::Delete)
    );
    if ok { Ok(route) } else { Err(Miss::WrongMethod(route)) }
}

/// Finds the route for a head, or the answer to give without reading a body.
pub fn lookup<'a>(state: &'a State, head: &Head) -> Routed<'a> {
    match route_for(&state.routes, &head.method, &head.path) {
        Ok(route) => Routed::Route(route),
        Err(Miss::Unclean(cleaned)) => {
            // Encoded as Go encodes it: the decoded path may hold any byte the client escaped,
            // CR and LF included, and must not reach the header line raw.
            let mut location = percent_encode(&cleaned, percent::PATH);
            if !head.query.is_empty() {
                location.push('?');
                location.push_str(&percent_encode(head.query, percent::RAW));
            }
            Routed::Respond(Response::new(301).header("Location", location))
        }
        Err(Miss::NotFound) => Routed::Respond(not_found()),
        Err(Miss::WrongMethod(route)) => {
            let err = ApiError::MethodNotAllowed {
                received: head.method.as_str().to_string(),
                expected: route.method.as_str(),
            };
            let response = err.to_response();
            if route.metrics {
                state.obs.metrics.observe(response.status, Duration::ZERO);
            }
            Routed::Respond(response)
        }
    }
}

/// What the server would do with a request, and which rule decided: the policy dry-run
/// (`kes policy check`, `POST /v1/policy/check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The path is not canonical: the server answers 301 to this path.
    Redirect(String),
    /// No such route: 404.
    NotFound,
    /// The route takes another method: 405.
    WrongMethod { expected: &'static str },
    /// The route checks no policy (`/version`, `/v1/identity/self/describe`, or
    /// `api.<path>.skip_auth: true`).
    NoCheck { route: &'static str },
    /// The policy decision.
    Policy(Rule),
}

impl Verdict {
    /// Whether the request would reach its handler.
    pub fn allowed(&self) -> bool {
        match self {
            Verdict::NoCheck { .. } => true,
            Verdict::Policy(rule) => rule.allows(),
            _ => false,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Redirect(to) => {
                write!(f, "the path is not canonical; the server redirects to '{to}'")
            }
            Verdict::NotFound => f.write_str("no such API (404)"),
            Verdict::WrongMethod { expected } => {
                write!(f, "method not allowed (405); the API expects {expected}")
            }
            Verdict::NoCheck { route } => {
                write!(f, "route '{route}' checks no policy (authentication off for it)")
            }
            Verdict::Policy(rule) => rule.fmt(f),
        }
    }
}

/// The dry-run of one request: the same route lookup as [`lookup`] and the same decision
/// as [`handle`] (`PolicySet::decide`, behind `PolicySet::authorize`).
pub fn explain(
    routes: &[Route],
    policies: &PolicySet,
    identity: &Identity,
    facts: &ChainFacts,
    method: &Method,
    path: &str,
) -> Verdict {
    let route = match route_for(routes, method, path) {
        Ok(route) => route,
        Err(Miss::Unclean(to)) => return Verdict::Redirect(to),
        Err(Miss::NotFound) => return Verdict::NotFound,
        Err(Miss::WrongMethod(r)) => return Verdict::WrongMethod { expected: r.method.as_str() },
    };
    match route.auth {
        Auth::None | Auth::IdentifyOnly => Verdict::NoCheck { route: route.path },
        Auth::Verify => {
            Verdict::Policy(policies.decide(identity, facts, &routes::canonical_path(route, path)))
        }
    }
}

/// Runs one routed request: authenticate, authorize, handle, then audit and count.
pub fn handle(
    state: &State,
    route: &Route,
    head: &Head,
    body: &[u8],
    cert: &ClientCert,
    facts: &ChainFacts,
    peer_ip: Option<IpAddr>,
) -> Response {
    let started = Instant::now();
    let _active = route.metrics.then(|| state.obs.metrics.begin());
    let deadline = if route.timeout.is_zero() {
        started + Duration::from_secs(24 * 3600)
    } else {
        started + route.timeout
    };
    let ctx = Ctx {
        state,
        head,
        body,
        resource: routes::resource(route, &head.path),
        deadline,
        peer_ip,
        facts,
        audit_message: std::cell::RefCell::new(None),
    };
    let identity = cert.identity();
    let audited = route.auth != Auth::None;
    // A fail-closed audit file that cannot be written refuses before anything runs.
    let result = if audited && state.obs.audit_refusing() {
        Err(ApiError::AuditUnavailable)
    } else {
        authorize(state, route, &routes::canonical_path(route, &head.path), cert, &ctx)
            .and_then(|auth| (route.handler)(&ctx, &auth))
    };
    let mut response = match result {
        Ok(r) => r,
        Err(e) => e.to_response(),
    };
    let latency = started.elapsed();
    if audited && state.obs.records_audit() {
        let message = ctx.audit_message.borrow_mut().take();
        let refused = state.obs.audit(&AuditEvent {
            time: OffsetDateTime::now_utc(),
            method: head.method.as_str(),
            path: &head.path,
            ip: peer_ip,
            identity: identity.map(|i| i.as_str()).unwrap_or_default(),
            status: response.status,
            latency,
            message: message.as_deref(),
        });
        if let Err(e) = refused {
            // Fail-closed: not served unaudited (the answer is dropped unsent).
            ctx.log_error(
                Level::ERROR,
                &format!("audit: request refused: cannot write the audit file: {}", e.0),
                identity,
            );
            response = ApiError::AuditUnavailable.to_response();
        }
    }
    if route.metrics {
        state.obs.metrics.observe(response.status, latency);
    }
    response
}

fn authorize(
    state: &State,
    route: &Route,
    path: &str,
    cert: &ClientCert,
    ctx: &Ctx<'_>,
) -> Result<Authorized, ApiError> {
    match route.auth {
        Auth::None => Ok(Authorized::unchecked_for_skip_auth(None)),
        Auth::IdentifyOnly => Ok(Authorized::unchecked_for_skip_auth(cert.identity().cloned())),
        Auth::Verify => {
            let id = match cert {
                ClientCert::None => return Err(ApiError::NoClientCert),
                ClientCert::TooMany => return Err(ApiError::TooManyClientCerts),
                ClientCert::One(id) => id,
            };
            state.policies.authorize(id, ctx.facts, path).map_err(|denied| {
                let msg = match &denied {
                    Denied::UnknownIdentity => "access denied: identity not found".to_string(),
                    Denied::RejectedByPolicy(p) => {
                        format!("access denied: rejected by policy '{p}'")
                    }
                };
                ctx.log_error(Level::DEBUG, &msg, Some(id));
                ApiError::NotAllowed
            })
        }
    }
}
