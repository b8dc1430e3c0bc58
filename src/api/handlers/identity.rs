//! `/v1/identity/{describe,list,self/describe}` (`kes-api.md` §9.18–9.20).

use super::json;
use super::policy::{created_at, matching, rule_map};
use crate::api::Ctx;
use crate::api::error::ApiError;
use crate::auth::{Authorized, Identity};
use crate::http::Response;
use crate::names::{valid_name, valid_pattern};
use serde::Serialize;
use std::collections::BTreeMap;

pub fn handle_describe_identity(ctx: &Ctx<'_>, _: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Admin {
        admin: bool,
        created_at: String,
    }
    #[derive(Serialize)]
    struct User<'a> {
        policy: &'a str,
        created_at: String,
        created_by: &'a str,
    }
    let id = ctx.resource;
    if !valid_name(id) {
        return Err(ApiError::InvalidIdentity(id.to_string()));
    }
    let id = Identity::new(id);
    let set = &ctx.state.policies;
    if set.is_admin(&id) {
        return Ok(json(&Admin { admin: true, created_at: created_at(ctx) }));
    }
    let policy = set.assignments.get(&id).ok_or(ApiError::IdentityNotFound)?;
    Ok(json(&User { policy, created_at: created_at(ctx), created_by: set.admin.as_str() }))
}

pub fn handle_list_identities(ctx: &Ctx<'_>, _: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct List {
        identities: Vec<String>,
        continue_at: &'static str,
    }
    let pattern = ctx.resource;
    if !valid_pattern(pattern) {
        return Err(ApiError::InvalidPattern(pattern.to_string()));
    }
    let set = &ctx.state.policies;
    let all =
        std::iter::once(set.admin.as_str()).chain(set.assignments.keys().map(Identity::as_str));
    Ok(json(&List { identities: matching(all, pattern), continue_at: "" }))
}

/// DECISION D2: non-admins get the flat layout kms-go's `DescribeSelf` parses.
pub fn handle_describe_self(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Admin<'a> {
        identity: &'a str,
        admin: bool,
        created_at: String,
    }
    #[derive(Serialize)]
    struct User<'a> {
        identity: &'a str,
        created_at: String,
        created_by: &'a str,
        policy: &'a str,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        allow: BTreeMap<&'a str, serde_json::Map<String, serde_json::Value>>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        deny: BTreeMap<&'a str, serde_json::Map<String, serde_json::Value>>,
        /// Ours: the attribute entries (`ca:…`) that selected the policies, one per policy;
        /// absent for a public-key identity, whose body stays upstream's.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        via: Vec<String>,
    }
    let Some(id) = auth.identity() else { return Err(ApiError::IdentityNotFound) };
    let set = &ctx.state.policies;
    if set.is_admin(id) {
        return Ok(json(&Admin {
            identity: id.as_str(),
            admin: true,
            created_at: created_at(ctx),
        }));
    }
    // A public-key identity has one policy; attribute identities may select several,
    // which apply as one (deny wins): reported as their names joined by ',' and the
    // union of their patterns.
    let selected = set.selections_of(id, ctx.facts);
    let names: Vec<&str> = selected.iter().map(|(n, _)| *n).collect();
    if names.is_empty() {
        return Err(ApiError::IdentityNotFound);
    }
    let (mut allow, mut deny) = (Vec::new(), Vec::new());
    for name in &names {
        let policy = set.policies.get(*name).ok_or(ApiError::IdentityNotFound)?;
        allow.extend(policy.allow.iter().cloned());
        deny.extend(policy.deny.iter().cloned());
    }
    let name = names.join(",");
    Ok(json(&User {
        identity: id.as_str(),
        created_at: created_at(ctx),
        created_by: set.admin.as_str(),
        policy: &name,
        allow: rule_map(&allow),
        deny: rule_map(&deny),
        via: selected.into_iter().filter_map(|(_, via)| via).collect(),
    }))
}
