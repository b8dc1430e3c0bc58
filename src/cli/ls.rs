//! `kes ls [PREFIX]`: lists keys, identities (`-i`) or policies (`-p`), following
//! `continue_at` the way kms-go's `ListIter` does (`kes-api.md` §9.9, §9.17, §9.19).

use super::client::ConnFlags;
use super::{CmdResult, ColorMode, Fail, Style, flag_bool, flag_error, flag_value, out, text};
use crate::percent::{PATH_SEGMENT, percent_encode};
use lexopt::prelude::*;
use std::ffi::OsString;

/// A listing never needs more pages than this; a server that keeps answering with a new
/// `continue_at` forever is cut off here.
const MAX_LIST_PAGES: usize = 100_000;

const USAGE: &str = "Usage:
    kes ls [-a KEY] [-k] [--json] [-i] [-p] [-s HOST[:PORT]] [PREFIX]

Options:
    -a, --api-key KEY           API key to authenticate to the KES server.
                                Defaults to $MINIO_KES_API_KEY.
    -s, --server HOST[:PORT]    Use the server HOST[:PORT] instead of
                                $MINIO_KES_SERVER.
        --json                  Print output in JSON format.
    -i, --identity              List identities.
    -p, --policy                List policy names.
    -k, --insecure              Skip server certificate verification.
    -h, --help                  Print command line options.

Examples:
    $ kes ls
    $ kes ls -p
    $ kes ls --json my-
";

/// What to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Keys,
    Identities,
    Policies,
}

impl What {
    /// Route, JSON field, table header, and the plural for messages.
    fn route(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            What::Keys => ("/v1/key/list/", "names", "Key", "keys"),
            What::Identities => ("/v1/identity/list/", "identities", "Identity", "identities"),
            What::Policies => ("/v1/policy/list/", "names", "Policy", "policies"),
        }
    }
}

pub fn run(args: Vec<OsString>) -> CmdResult {
    let mut conn = ConnFlags::default();
    let (mut json, mut identities, mut policies) = (false, false, false);
    let mut rest = Vec::new();
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(|e| flag_error("ls", e))? {
        match arg {
            Short('a') | Long("api-key") => conn.api_key = Some(flag_value(&mut p, "ls")?),
            Short('s') | Long("server") => conn.server = Some(flag_value(&mut p, "ls")?),
            Short('k') => conn.insecure = true,
            Long("insecure") => conn.insecure = flag_bool(&mut p, "--insecure", "ls")?,
            Long("json") => json = flag_bool(&mut p, "--json", "ls")?,
            Short('i') => identities = true,
            Long("identity") => identities = flag_bool(&mut p, "--identity", "ls")?,
            Short('p') => policies = true,
            Long("policy") => policies = flag_bool(&mut p, "--policy", "ls")?,
            Short('h') | Long("help") => return Err(Fail::Usage(USAGE.into())),
            Value(v) => rest.push(text(v)?),
            other => return Err(flag_error("ls", other.unexpected())),
        }
    }
    if rest.len() > 1 {
        return Err(Fail::Error("too many arguments".into()));
    }
    if identities && policies {
        return Err(Fail::Error(
            "'-p / --policy' and '-i / --identity' must not be used at the same time".into(),
        ));
    }
    let what = if identities {
        What::Identities
    } else if policies {
        What::Policies
    } else {
        What::Keys
    };
    let prefix = rest.pop().unwrap_or_default();
    list(what, &prefix, &conn, json, Style(ColorMode::Auto.enabled()))
}

/// Fetches every page of a listing and prints it: a JSON array, or a header and one name
/// per line (nothing at all when the list is empty).
pub fn list(what: What, prefix: &str, conn: &ConnFlags, json: bool, style: Style) -> CmdResult {
    let client = super::connect(conn)?;
    let (route, field, header, plural) = what.route();
    let mut names: Vec<String> = Vec::new();
    let mut next = prefix.to_string();
    for _ in 0..MAX_LIST_PAGES {
        let reply = client
            .call("GET", &format!("{route}{}", percent_encode(&next, PATH_SEGMENT)), None)
            .map_err(|e| Fail::Error(format!("failed to list {plural}: {e}")))?;
        let page: serde_json::Value = serde_json::from_slice(&reply.body)
            .map_err(|e| Fail::Error(format!("invalid listing from the server: {e}")))?;
        let before = names.len();
        if let Some(list) = page.get(field).and_then(|v| v.as_array()) {
            names.extend(list.iter().filter_map(|v| v.as_str()).map(str::to_string));
        }
        // kms-go sends `continue_at` back as the next prefix (kes-api.md §9.9).
        match page.get("continue_at").and_then(|v| v.as_str()) {
            Some(c) if !c.is_empty() && (c != next || names.len() > before) => next = c.to_string(),
            _ => break,
        }
    }
    names.sort();
    names.dedup();
    if json {
        let mut bytes = crate::gojson::to_go_json(&names);
        if bytes.last() != Some(&b'\n') {
            bytes.push(b'\n');
        }
        return out(&String::from_utf8_lossy(&bytes));
    }
    if names.is_empty() {
        return Ok(());
    }
    let mut s = style.underline(header);
    s.push('\n');
    for n in &names {
        s.push_str(n);
        s.push('\n');
    }
    out(&s)
}
