//! The static route table (`kes-api.md` §8): method, path, body limit, timeout,
//! authenticator, metrics, and the handler, in one place.

use super::handlers::{identity, key, log, policy, status};
use super::{Ctx, error::ApiError};
use crate::auth::Authorized;
use crate::http::Response;
use std::time::Duration;

/// Largest body a key route reads (upstream's 1 MB, decimal).
pub const MAX_KEY_BODY: usize = 1_000_000;

/// Largest body of a policy dry-run (`{"identity","method","path","certificate"}`): an
/// identity, a method and one API path fit in well under 4 KiB, and a client's PEM chain of
/// up to four RSA-4096 certificates (about 2 KiB of PEM each) in 12 more.
pub const MAX_POLICY_CHECK_BODY: usize = 16 << 10;

/// Route methods; `POST` is accepted wherever `PUT` is the route's method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMethod {
    Get,
    Put,
    Delete,
}

impl RouteMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMethod::Get => "GET",
            RouteMethod::Put => "PUT",
            RouteMethod::Delete => "DELETE",
        }
    }
}

/// How a route authenticates (`kes-api.md` §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No identity computed (`/version`).
    None,
    /// Identity computed when possible, never rejected.
    IdentifyOnly,
    /// Certificate required, then admin or policy.
    Verify,
}

pub type Handler = fn(&Ctx<'_>, &Authorized) -> Result<Response, ApiError>;

/// One route with its effective (config-overridden) limits.
#[derive(Clone)]
pub struct Route {
    pub method: RouteMethod,
    /// Exact path, or a subtree prefix ending in `/`.
    pub path: &'static str,
    pub max_body: usize,
    /// Zero: no deadline (log streams).
    pub timeout: Duration,
    pub auth: Auth,
    /// Counted in `kes_http_request_*`.
    pub metrics: bool,
    pub handler: Handler,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("max_body", &self.max_body)
            .field("timeout", &self.timeout)
            .field("auth", &self.auth)
            .finish()
    }
}

const fn route(
    method: RouteMethod,
    path: &'static str,
    max_body: usize,
    timeout_secs: u64,
    auth: Auth,
    metrics: bool,
    handler: Handler,
) -> Route {
    Route {
        method,
        path,
        max_body,
        timeout: Duration::from_secs(timeout_secs),
        auth,
        metrics,
        handler,
    }
}

/// Upstream's 22 routes with upstream's defaults, plus our extensions: `/v1/policy/check`,
/// and the rotation routes (`rotate`, `rewrap`, issue 12) with the limits of their
/// neighbours.
pub fn default_routes() -> Vec<Route> {
    use Auth::*;
    use RouteMethod::*;
    vec![
        route(Get, "/version", 0, 10, None, false, status::handle_get_version),
        route(Get, "/v1/ready", 0, 15, Verify, false, status::handle_get_ready),
        route(Get, "/v1/status", 0, 15, Verify, false, status::handle_get_status),
        route(Get, "/v1/metrics", 0, 15, Verify, false, status::handle_get_metrics),
        route(Get, "/v1/api", 0, 10, Verify, false, status::handle_get_api),
        route(Put, "/v1/key/create/", 0, 15, Verify, true, key::handle_create_key),
        route(Put, "/v1/key/import/", MAX_KEY_BODY, 15, Verify, true, key::handle_import_key),
        route(Get, "/v1/key/describe/", 0, 15, Verify, true, key::handle_describe_key),
        route(Get, "/v1/key/list/", 0, 15, Verify, true, key::handle_list_keys),
        route(Delete, "/v1/key/delete/", 0, 15, Verify, true, key::handle_delete_key),
        route(Put, "/v1/key/generate/", MAX_KEY_BODY, 15, Verify, true, key::handle_generate_key),
        route(Put, "/v1/key/encrypt/", MAX_KEY_BODY, 15, Verify, true, key::handle_encrypt_key),
        route(Put, "/v1/key/decrypt/", MAX_KEY_BODY, 15, Verify, true, key::handle_decrypt_key),
        route(Put, "/v1/key/hmac/", MAX_KEY_BODY, 15, Verify, true, key::handle_hmac_key),
        route(Put, "/v1/key/rotate/", MAX_KEY_BODY, 15, Verify, true, key::handle_rotate_key),
        route(Put, "/v1/key/rewrap/", MAX_KEY_BODY, 15, Verify, true, key::handle_rewrap_key),
        route(Get, "/v1/policy/describe/", 0, 15, Verify, true, policy::handle_describe_policy),
        route(Get, "/v1/policy/read/", 0, 15, Verify, true, policy::handle_read_policy),
        route(Get, "/v1/policy/list/", 0, 15, Verify, true, policy::handle_list_policies),
        route(
            Put,
            "/v1/policy/check",
            MAX_POLICY_CHECK_BODY,
            15,
            Verify,
            true,
            policy::handle_check_policy,
        ),
        route(
            Get,
            "/v1/identity/describe/",
            0,
            15,
            Verify,
            true,
            identity::handle_describe_identity,
        ),
        route(Get, "/v1/identity/list/", 0, 15, Verify, true, identity::handle_list_identities),
        route(
            Get,
            "/v1/identity/self/describe",
            0,
            15,
            IdentifyOnly,
            true,
            identity::handle_describe_self,
        ),
        route(Get, "/v1/log/error", 0, 0, Verify, false, log::handle_get_error_log),
        route(Get, "/v1/log/audit", 0, 0, Verify, false, log::handle_get_audit_log),
    ]
}

/// `api.<path>` of the config file: an override of one route's authentication and timeout
/// (`config` maps the YAML onto it; [`with_overrides`] applies it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiOverride {
    /// Serve the route to any client: identity computed when possible, never rejected.
    pub skip_auth: bool,
    /// `None` or zero keeps the route's default.
    pub timeout: Option<Duration>,
}

/// Applies `api.<path>.{skip_auth,timeout}` overrides to any listed route; unknown paths
/// are ignored, as upstream ignores them.
pub fn with_overrides(
    mut routes: Vec<Route>,
    overrides: &std::collections::BTreeMap<String, ApiOverride>,
) -> Vec<Route> {
    for r in &mut routes {
        if let Some(o) = overrides.get(r.path) {
            if let Some(t) = o.timeout
                && !t.is_zero()
            {
                r.timeout = t;
            }
            if o.skip_auth && r.auth == Auth::Verify {
                r.auth = Auth::IdentifyOnly;
            }
        }
    }
    routes
}

/// The route for a decoded path, Go `ServeMux` style: exact routes match exactly, subtree
/// routes match their prefix or their root without the slash (served directly instead of
/// upstream's 301, a superset kms-go relies on for `/v1/key/list`).
pub fn find<'a>(routes: &'a [Route], path: &str) -> Option<&'a Route> {
    let mut best: Option<&Route> = None;
    for r in routes {
        let hit = if r.path.ends_with('/') {
            path.starts_with(r.path) || path == &r.path[..r.path.len() - 1]
        } else {
            path == r.path
        };
        if hit && best.is_none_or(|b| r.path.len() > b.path.len()) {
            best = Some(r);
        }
    }
    best
}

/// The path a request is authorized against: a subtree root asked for without its slash
/// (`GET /v1/key/list`, as MinIO's client does) is the route's own path (`/v1/key/list/`),
/// which is where upstream checks the policy after its 301. Every other path is itself.
pub fn canonical_path<'a>(route: &Route, path: &'a str) -> std::borrow::Cow<'a, str> {
    if route.path.ends_with('/') && path.len() + 1 == route.path.len() {
        std::borrow::Cow::Owned(route.path.to_string())
    } else {
        std::borrow::Cow::Borrowed(path)
    }
}

/// The part of `path` after the route prefix (empty for a subtree root without slash).
pub fn resource<'a>(route: &Route, path: &'a str) -> &'a str {
    path.strip_prefix(route.path).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_routes_with_upstreams_limits() {
        let routes = default_routes();
        assert_eq!(routes.len(), 25);
        let rotate = find(&routes, "/v1/key/rotate/k").unwrap();
        assert_eq!(
            (rotate.method, rotate.auth, rotate.timeout.as_secs()),
            (RouteMethod::Put, Auth::Verify, 15)
        );
        assert_eq!(find(&routes, "/v1/key/rewrap/k").unwrap().max_body, MAX_KEY_BODY);
        let import = find(&routes, "/v1/key/import/k").unwrap();
        assert_eq!(
            (import.method, import.max_body, import.timeout.as_secs()),
            (RouteMethod::Put, 1_000_000, 15)
        );
        let v = find(&routes, "/version").unwrap();
        assert_eq!((v.auth, v.timeout.as_secs()), (Auth::None, 10));
        assert_eq!(find(&routes, "/v1/log/audit").unwrap().timeout, Duration::ZERO);
    }

    #[test]
    fn lookup_follows_the_mux() {
        let routes = default_routes();
        assert_eq!(find(&routes, "/v1/key/list").unwrap().path, "/v1/key/list/");
        assert_eq!(find(&routes, "/v1/key/list/a*").unwrap().path, "/v1/key/list/");
        let list = find(&routes, "/v1/key/list").unwrap();
        assert_eq!(canonical_path(list, "/v1/key/list"), "/v1/key/list/");
        assert_eq!(canonical_path(list, "/v1/key/list/a*"), "/v1/key/list/a*");
        let version = find(&routes, "/version").unwrap();
        assert_eq!(canonical_path(version, "/version"), "/version");
        assert_eq!(
            find(&routes, "/v1/identity/self/describe").unwrap().path,
            "/v1/identity/self/describe"
        );
        assert!(find(&routes, "/v1/identity/self/describe/x").is_none());
        assert!(find(&routes, "/version/").is_none());
        assert!(find(&routes, "/v1/key/bulk/decrypt/k").is_none());
        assert!(find(&routes, "/").is_none());
        let r = find(&routes, "/v1/key/create/a/b").unwrap();
        assert_eq!(resource(r, "/v1/key/create/a/b"), "a/b");
        assert_eq!(resource(r, "/v1/key/create"), "");
    }

    #[test]
    fn overrides_apply_to_any_listed_route() {
        let mut o = std::collections::BTreeMap::new();
        o.insert(
            "/v1/ready".to_string(),
            ApiOverride { skip_auth: true, timeout: Some(Duration::from_secs(30)) },
        );
        o.insert(
            "/v1/key/create/".to_string(),
            ApiOverride { skip_auth: false, timeout: Some(Duration::ZERO) },
        );
        o.insert("/nope".to_string(), ApiOverride::default());
        let routes = with_overrides(default_routes(), &o);
        let ready = find(&routes, "/v1/ready").unwrap();
        assert_eq!((ready.auth, ready.timeout.as_secs()), (Auth::IdentifyOnly, 30));
        assert_eq!(find(&routes, "/v1/key/create/x").unwrap().timeout.as_secs(), 15);
    }
}
