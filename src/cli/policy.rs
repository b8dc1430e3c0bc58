//! `kes policy info|show|ls` (`kes-config-cli.md` §4.3; `kes-api.md` §9.15–9.17). Policies
//! are static server config, so there is nothing to create or assign here.

use super::key::{failed, parse};
use super::{CmdResult, Fail, Style, json_text, local_date, out};
use crate::percent::{PATH_SEGMENT, percent_encode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;

const USAGE: &str = "Usage:
    kes policy <command>

Commands:
    info                     Get information about a policy.
    show                     Show the allow and deny rules of a policy.
    ls                       List policies.
    check                    Dry-run: may an identity call an API, and which rule decides?

Options:
    -h, --help               Print command line options.
";

pub fn run(args: Vec<OsString>) -> CmdResult {
    super::dispatch(
        "policy",
        USAGE,
        args,
        &[("info", info), ("show", show), ("ls", ls), ("check", check)],
    )
}

const INFO_USAGE: &str = "Usage:
    kes policy info [options] <name>

Options:
    -k, --insecure           Skip server certificate verification.
        --json               Print the policy's metadata as JSON.
        --color <when>       When to use colors: auto (on a terminal), never or always.
    -e, --enclave <name>     Accepted for compatibility and ignored.

    -h, --help               Print command line options.

Examples:
    $ kes policy info my-policy
";

fn one_name(args: &[String], cmd: &str) -> Result<String, Fail> {
    match args {
        [] => Err(Fail::Error(format!("no policy name specified. See 'kes {cmd} --help'"))),
        [name] => Ok(name.clone()),
        _ => Err(Fail::Error(format!("too many arguments. See 'kes {cmd} --help'"))),
    }
}

fn info(args: Vec<OsString>) -> CmdResult {
    let c = parse(args, "policy info", INFO_USAGE, true)?;
    let name = one_name(&c.args, "policy info")?;
    let client = super::connect(&c.conn)?;
    let reply = client
        .call("GET", &format!("/v1/policy/describe/{}", percent_encode(&name, PATH_SEGMENT)), None)
        .map_err(|e| failed("failed to describe policy", e))?;
    #[derive(Serialize, Deserialize)]
    struct Info {
        name: String,
        #[serde(default)]
        created_at: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        created_by: String,
    }
    let info: Info = serde_json::from_slice(&reply.body)
        .map_err(|e| Fail::Error(format!("failed to describe policy: invalid response: {e}")))?;
    if c.json {
        return out(&json_text(&info, super::stdout_is_tty()));
    }
    let style = Style(c.color.enabled());
    let label = |l: &str| style.bold(&style.faint(&format!("{l:<11}")));
    out(&format!(
        "{} {}\n{} {}\n{} {}\n",
        label("Name"),
        style.blue(&info.name),
        label("Date"),
        local_date(&info.created_at),
        label("Created by"),
        info.created_by
    ))
}

const SHOW_USAGE: &str = "Usage:
    kes policy show [options] <name>

Options:
    -k, --insecure           Skip server certificate verification.
        --json               Print the policy as JSON (the default when not on a terminal).
    -e, --enclave <name>     Accepted for compatibility and ignored.

    -h, --help               Print command line options.

Examples:
    $ kes policy show my-policy
";

/// A policy as kms-go encodes it: rules as maps to empty objects, empty sets omitted.
#[derive(Serialize, Deserialize)]
struct Policy {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    allow: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    deny: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    created_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    created_by: String,
}

fn show(args: Vec<OsString>) -> CmdResult {
    let c = parse(args, "policy show", SHOW_USAGE, true)?;
    let name = one_name(&c.args, "policy show")?;
    let client = super::connect(&c.conn)?;
    let reply = client
        .call("GET", &format!("/v1/policy/read/{}", percent_encode(&name, PATH_SEGMENT)), None)
        .map_err(|e| failed("failed to show policy", e))?;
    let policy: Policy = serde_json::from_slice(&reply.body)
        .map_err(|e| Fail::Error(format!("failed to show policy: invalid response: {e}")))?;
    let tty = super::stdout_is_tty();
    if c.json || !tty {
        return out(&json_text(&policy, tty));
    }
    let style = Style(super::ColorMode::Auto.enabled());
    let mut s = String::new();
    for (title, rules) in [("Allow:", &policy.allow), ("Deny:", &policy.deny)] {
        if rules.is_empty() {
            continue;
        }
        s.push_str(&style.bold(title));
        s.push('\n');
        for pattern in rules.keys() {
            s.push_str(&format!("  · {pattern}\n"));
        }
    }
    if !s.is_empty() {
        s.push('\n');
    }
    s.push_str(&format!("{} {}\n", style.faint("Created at:"), local_date(&policy.created_at)));
    s.push_str(&format!("{} {}\n", style.faint("Created by:"), policy.created_by));
    out(&s)
}

const LS_USAGE: &str = "Usage:
    kes policy ls [options] [<pattern>]

    Deprecated: use 'kes ls -p'.

Options:
    -k, --insecure           Skip server certificate verification.
        --json               Print the policy names as a JSON array.
        --color <when>       When to use colors: auto (on a terminal), never or always.
    -e, --enclave <name>     Accepted for compatibility and ignored.

    -h, --help               Print command line options.

Examples:
    $ kes policy ls
    $ kes policy ls 'my-*'
";

fn ls(args: Vec<OsString>) -> CmdResult {
    let c = parse(args, "policy ls", LS_USAGE, true)?;
    if c.args.len() > 1 {
        return Err(Fail::Error("too many arguments. See 'kes policy ls --help'".into()));
    }
    let pattern = c.args.first().cloned().unwrap_or_else(|| "*".to_string());
    super::ls::list(super::ls::What::Policies, &pattern, &c.conn, c.json, Style(c.color.enabled()))
}

const CHECK_USAGE: &str = "Usage:
    kes policy check [options] <identity|certificate|api-key> <method> <path>

Decides whether a client may call an API, without calling it, and names the rule
that decides: the admin identity, a policy's allow or deny pattern (deny wins), no
matching pattern, or no policy for this identity. With --config the decision is
made on a config file as the server loads it; otherwise the running server makes it
(POST /v1/policy/check; the admin, or a policy that allows that path).

The client is an identity (64 hex characters), a certificate file (PEM, the client's
certificate first, then its intermediates), an API key (kes:v1:...) or an attribute
identity (ca:<hash>/dns:<name>, /uri:<uri> or /cn:<name>), which stands for a client
whose chain verifies through that CA and carries that name. A certificate file is
verified against tls.ca as the server would, so attribute identities match it too.
The path is the decoded API path, e.g. /v1/key/create/my-key.

Options:
        --config <PATH>      Decide on this config file instead of asking a server.
    -k, --insecure           Skip server certificate verification.
        --json               Print the decision as JSON.
    -e, --enclave <name>     Accepted for compatibility and ignored.

    -h, --help               Print command line options.

Examples:
    $ kes policy check --config config.yml client.crt PUT /v1/key/create/my-key
    $ kes policy check 3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22 GET /v1/status
";

/// `kes policy check`: one decision, as `allowed: <rule>` or `denied: <rule>`.
fn check(args: Vec<OsString>) -> CmdResult {
    let mut config: Option<String> = None;
    let c = super::key::parse_with(args, "policy check", CHECK_USAGE, true, &mut |flag, p| {
        if flag == "--config" {
            config = Some(super::flag_value(p, "policy check")?);
            return Ok(true);
        }
        Ok(false)
    })?;
    let [who, method, path] = c.args.as_slice() else {
        return Err(Fail::Error(
            "expected <identity|certificate|api-key> <method> <path>. See 'kes policy check --help'"
                .into(),
        ));
    };
    let (identity, pem) = client_identity(who)?;
    let method = method.to_ascii_uppercase();
    let verdict = match config {
        Some(file) => {
            use crate::api::handlers::policy::{chain_facts, claimed_facts};
            let cfg = crate::config::load(std::path::Path::new(&file))
                .map_err(|e| Fail::Error(e.to_string()))?;
            // The server refuses to start when tls.ca cannot be read; a dry-run on the
            // same file must not quietly decide as if it had no trust anchors.
            if let Some(ca) = cfg.tls.ca.as_deref().filter(|_| cfg.tls.verify_client_chain) {
                crate::server::tls::load_ca(ca).map_err(Fail::Error)?;
            }
            let (policies, routes) = crate::server::authorization(&cfg);
            let facts = match &pem {
                Some(pem) => chain_facts(&policies, identity.as_str(), pem).unwrap_or_default(),
                None => claimed_facts(&policies, who)
                    .map_err(|e| Fail::Error(format!("invalid attribute identity '{who}': {e}")))?,
            };
            let v = crate::api::explain(
                &routes,
                &policies,
                &identity,
                &facts,
                &crate::http::Method::parse(&method),
                path,
            );
            crate::api::handlers::policy::verdict_json(&v)
        }
        None => {
            let client = super::connect(&c.conn)?;
            let mut body = serde_json::json!({
                "identity": identity.as_str(),
                "method": method,
                "path": path,
            });
            if let Some(pem) = &pem {
                body["certificate"] = String::from_utf8_lossy(pem).into();
            }
            let body = body.to_string();
            let reply = client
                .call("POST", "/v1/policy/check", Some(body.as_bytes()))
                .map_err(|e| failed("failed to check policy", e))?;
            serde_json::from_slice(&reply.body).map_err(|e| {
                Fail::Error(format!("failed to check policy: invalid response: {e}"))
            })?
        }
    };
    if c.json {
        return out(&json_text(&verdict, super::stdout_is_tty()));
    }
    let style = Style(c.color.enabled());
    let word = if verdict.allowed { style.green("allowed") } else { style.red("denied") };
    out(&format!("{word}: {}\n", verdict.decision))
}

/// The identity of a policy-check subject: an API key, a certificate file (with its PEM
/// text, whose chain may prove attribute identities), or the identity itself.
fn client_identity(who: &str) -> Result<(crate::auth::Identity, Option<Vec<u8>>), Fail> {
    if who.starts_with("kes:v1:") {
        return crate::auth::apikey::ApiKey::parse(who)
            .map(|k| (k.identity(), None))
            .map_err(|e| Fail::Error(e.to_string()));
    }
    let path = std::path::Path::new(who);
    if path.is_file() {
        let id = super::identity::identity_of_cert_file(who)?;
        let pem = std::fs::read(path).map_err(|e| Fail::Error(format!("open {who}: {e}")))?;
        return Ok((id, Some(pem)));
    }
    Ok((crate::auth::Identity::new(who), None))
}
