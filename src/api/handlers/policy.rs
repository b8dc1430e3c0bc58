//! `/v1/policy/{describe,read,list}` (`kes-api.md` §9.15–9.17). Policies are static config;
//! `created_at` is the server start and `created_by` the admin identity.

use super::json;
use crate::api::error::ApiError;
use crate::api::{Ctx, valid_name, valid_pattern};
use crate::auth::{Authorized, Policy};
use crate::http::Response;
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
