//! `/v1/policy/{describe,read,list}` (`kes-api.md` §9.15–9.17). Policies are static config;
//! `created_at` is the server start and `created_by` the admin identity.

use super::json;
use crate::api::Ctx;
use crate::api::error::ApiError;
use crate::auth::{Authorized, Policy};
use crate::http::Response;
use crate::names::{valid_name, valid_pattern};
use serde::Serialize;
use std::collections::BTreeMap;

fn policy<'a>(ctx: &Ctx<'a>) -> Result<(&'a str, &'a Policy), ApiError> {
    let name = ctx.resource;
    if !valid_name(name) {
        return Err(ApiError::InvalidPolicyName(name.to_string()));
    }
    let p = ctx.state.policies.policies.get(name).ok_or(ApiError::PolicyNotFound)?;
    Ok((name, p))
}

pub fn created_at(ctx: &Ctx<'_>) -> String {
    crate::gotime::format_rfc3339_nano(ctx.state.started)
}

pub fn handle_describe_policy(ctx: &Ctx<'_>, _: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Describe<'a> {
        name: &'a str,
        created_at: String,
        created_by: &'a str,
    }
    let (name, _) = policy(ctx)?;
    Ok(json(&Describe {
        name,
        created_at: created_at(ctx),
        created_by: ctx.state.policies.admin.as_str(),
    }))
}

/// Allow/deny as upstream shows them: a map from pattern to an empty object.
pub fn rule_map(patterns: &[String]) -> BTreeMap<&str, serde_json::Map<String, serde_json::Value>> {
    patterns.iter().map(|p| (p.as_str(), serde_json::Map::new())).collect()
}

pub fn handle_read_policy(ctx: &Ctx<'_>, _: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Read<'a> {
        name: &'a str,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        allow: BTreeMap<&'a str, serde_json::Map<String, serde_json::Value>>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        deny: BTreeMap<&'a str, serde_json::Map<String, serde_json::Value>>,
        created_at: String,
        created_by: &'a str,
    }
    let (name, p) = policy(ctx)?;
    Ok(json(&Read {
        name,
        allow: rule_map(&p.allow),
        deny: rule_map(&p.deny),
        created_at: created_at(ctx),
        created_by: ctx.state.policies.admin.as_str(),
    }))
}

/// Names matching a list pattern: `""` and `*` match all, else one trailing `*` is
/// stripped and the rest is a prefix.
pub fn matching<'a>(names: impl Iterator<Item = &'a str>, pattern: &str) -> Vec<String> {
    let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
    let mut out: Vec<String> =
        names.filter(|n| n.starts_with(prefix)).map(str::to_string).collect();
    out.sort();
    out.dedup();
    out
}

pub fn handle_list_policies(ctx: &Ctx<'_>, _: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct List {
        names: Vec<String>,
        continue_at: &'static str,
    }
    let pattern = ctx.resource;
    if !valid_pattern(pattern) {
        return Err(ApiError::InvalidPattern(pattern.to_string()));
    }
    let names = matching(ctx.state.policies.policies.keys().map(String::as_str), pattern);
    Ok(json(&List { names, continue_at: "" }))
}
/// `POST /v1/policy/check` (our extension): the policy dry-run on the running server's
/// policies and routes. Body `{"identity","method","path"}` (path decoded, as the server
/// authorizes it); answer `{"allowed","decision"}` plus `policy`, `effect` and `pattern`
/// when a policy decided, and `via` when an attribute identity selected that policy. The
/// identity may be an attribute identity (`ca:…/dns:…`): the decision is then the one for
/// a client whose chain verified through that CA and carries that name.
pub fn handle_check_policy(ctx: &Ctx<'_>, _: &Authorized) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Check {
        identity: String,
        method: String,
        path: String,
        /// The client's certificate chain (PEM, leaf first), for attribute identities.
        #[serde(default)]
        certificate: Option<String>,
    }
    const BAD: &str = "invalid policy check: expected {\"identity\",\"method\",\"path\"}";
    const BAD_CERT: &str = "invalid policy check: the certificate is not valid PEM or does not \
                            have the identity given";
    let c: Check = serde_json::from_slice(ctx.body).map_err(|_| ApiError::InvalidBody(BAD))?;
    if !valid_identity(&c.identity) {
        return Err(ApiError::InvalidIdentity(c.identity));
    }
    let facts = match &c.certificate {
        Some(pem) => chain_facts(&ctx.state.policies, &c.identity, pem.as_bytes())
            .ok_or(ApiError::InvalidBody(BAD_CERT))?,
        None => claimed_facts(&ctx.state.policies, &c.identity)
            .map_err(|_| ApiError::InvalidIdentity(c.identity.clone()))?,
    };
    if !c.path.starts_with('/')
        || c.method.is_empty()
        || !c.method.bytes().all(|b| b.is_ascii_uppercase())
    {
        return Err(ApiError::InvalidBody(BAD));
    }
    let verdict = crate::api::explain(
        &ctx.state.routes,
        &ctx.state.policies,
        &crate::auth::Identity::new(c.identity),
        &facts,
        &crate::http::Method::parse(&c.method),
        &c.path,
    );
    Ok(json(&verdict_json(&verdict)))
}

/// The dry-run answer of the route and of `kes policy check --json`.
#[derive(Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct VerdictJson {
    pub allowed: bool,
    pub decision: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub effect: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pattern: String,
    /// The attribute identity (`ca:…/dns:…`) that selected the policy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub via: String,
}

/// What a dry-run subject given as text proves: an attribute identity is taken as a
/// verified client with that CA and name (on a server that verifies chains); any other
/// text is a public-key identity and proves nothing more.
pub fn claimed_facts(
    set: &crate::auth::PolicySet,
    identity: &str,
) -> Result<crate::auth::attr::ChainFacts, String> {
    use crate::auth::attr::AttrIdentity;
    if !AttrIdentity::is_attribute(identity) {
        return Ok(Default::default());
    }
    Ok(set.facts_of_claim(&AttrIdentity::parse(identity)?))
}

/// What a client presenting the PEM chain `pem` proves, as the server would verify it
/// now; `None` when the chain does not parse or its identity is not `identity`.
pub fn chain_facts(
    set: &crate::auth::PolicySet,
    identity: &str,
    pem: &[u8],
) -> Option<crate::auth::attr::ChainFacts> {
    use rustls_pki_types::pem::PemObject;
    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let id = crate::auth::ClientCert::from_chain(&chain).identity().cloned()?;
    (id.as_str() == identity).then(|| set.facts_of(&chain, rustls_pki_types::UnixTime::now()))
}

pub fn verdict_json(v: &crate::api::Verdict) -> VerdictJson {
    use crate::auth::{Effect, Rule};
    let (policy, effect, pattern, via) = match v {
        crate::api::Verdict::Policy(Rule::Pattern { policy, effect, pattern, via }) => (
            policy.clone(),
            match effect {
                Effect::Allow => "allow",
                Effect::Deny => "deny",
            }
            .to_string(),
            pattern.clone(),
            via.clone().unwrap_or_default(),
        ),
        crate::api::Verdict::Policy(Rule::NoMatch { policy, via }) => {
            (policy.clone(), String::new(), String::new(), via.clone().unwrap_or_default())
        }
        _ => Default::default(),
    };
    VerdictJson { allowed: v.allowed(), decision: v.to_string(), policy, effect, pattern, via }
}

/// Longest identity a dry-run accepts: a SHA-256 hex identity is 64 bytes, and an attribute
/// identity is at most [`crate::auth::attr::MAX_LEN`].
pub const MAX_CHECK_IDENTITY: usize = crate::auth::attr::MAX_LEN;

/// An identity as a policy may name it: printable ASCII without spaces, or an attribute
/// identity (a common name may hold spaces), without control characters.
fn valid_identity(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CHECK_IDENTITY
        && if crate::auth::attr::AttrIdentity::is_attribute(id) {
            !id.chars().any(char::is_control)
        } else {
            id.bytes().all(|b| b.is_ascii_graphic())
        }
}
