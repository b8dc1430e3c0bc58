//! `/version`, `/v1/ready`, `/v1/status`, `/v1/metrics`, `/v1/api` (`kes-api.md` §9.1–9.5).

use super::{empty, json};
use crate::api::{Ctx, error::ApiError};
use crate::auth::Authorized;
use crate::http::Response;
use crate::keystore::StoreError;
use crate::obs::Level;
use crate::obs::{StoreFigures, SystemFigures, render_metrics};
use serde::Serialize;

pub fn handle_get_version(ctx: &Ctx<'_>, _: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Version<'a> {
        version: &'a str,
        commit: &'a str,
    }
    Ok(json(&Version { version: ctx.state.build.version, commit: ctx.state.build.commit }))
}

pub fn handle_get_ready(ctx: &Ctx<'_>, _: &Authorized) -> Result<Response, ApiError> {
    match ctx.state.keys.status(ctx.deadline) {
        Ok(_) => Ok(empty()),
        Err(StoreError::Unreachable(m)) => {
            ctx.log_error(Level::WARN, &format!("key store is not reachable: {m}"), None);
            Err(ApiError::StoreUnreachable)
        }
        Err(e) => {
            ctx.log_error(Level::WARN, &format!("key store is unavailable: {e}"), None);
            Err(ApiError::StoreUnavailable)
        }
    }
}

/// The system figures shared by `/v1/status` and `/v1/metrics`.
pub fn system_figures(ctx: &Ctx<'_>) -> SystemFigures {
    SystemFigures {
        uptime: ctx.state.started_at.elapsed(),
        num_cpu: ctx.state.cpus.0,
        num_cpu_used: ctx.state.cpus.1,
        proc: ctx.state.proc.read(),
        conns: ctx.state.conns.figures(),
        chains: chain_cache_figures(&ctx.state.policies),
    }
}

/// The verified-chain cache of the current config's `tls.ca` anchors (zeros without one).
fn chain_cache_figures(policies: &crate::auth::PolicySet) -> crate::obs::ChainCacheFigures {
    let s = policies.anchors.as_ref().map(|a| a.cache_stats()).unwrap_or_default();
    crate::obs::ChainCacheFigures { hits: s.hits, misses: s.misses, entries: s.entries as u64 }
}

pub fn handle_get_status(ctx: &Ctx<'_>, _: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Status<'a> {
        version: &'a str,
        os: &'a str,
        arch: &'a str,
        uptime: u64,
        num_cpu: u64,
        num_cpu_used: u64,
        mem_heap_used: u64,
        mem_stack_used: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        keystore_latency: Option<u64>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        keystore_unreachable: bool,
        /// Ours (`cache.persist`); upstream clients ignore unknown fields.
        #[serde(skip_serializing_if = "Option::is_none")]
        sealed_cache: Option<Sealed>,
    }
    #[derive(Serialize)]
    struct Sealed {
        path: String,
        max_age: String,
        /// Set while the key store is unreachable and keys are served from the sealed
        /// copies: since when (RFC 3339).
        #[serde(skip_serializing_if = "Option::is_none")]
        serving_since: Option<String>,
        /// When the last complete re-check against the key store ended (RFC 3339).
        #[serde(skip_serializing_if = "Option::is_none")]
        last_recheck: Option<String>,
    }
    let sys = system_figures(ctx);
    let (latency, unreachable) = match ctx.state.keys.status(ctx.deadline) {
        Ok(d) => (Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)), false),
        Err(e) => {
            ctx.log_error(Level::WARN, &format!("key store status: {e}"), None);
            (None, true)
        }
    };
    let sealed_cache = ctx.state.keys.sealed_info().map(|info| Sealed {
        path: info.path.display().to_string(),
        max_age: crate::gotime::format_duration(info.max_age),
        serving_since: ctx
            .state
            .keys
            .serving_sealed()
            .map(|(_, since)| crate::gotime::format_utc_seconds(since)),
        last_recheck: ctx.state.keys.stats().recheck.last.map(crate::gotime::format_utc_seconds),
    });
    Ok(json(&Status {
        version: ctx.state.build.version,
        os: std::env::consts::OS,
        arch: go_arch(),
        uptime: sys.uptime.as_secs_f64().round() as u64,
        num_cpu: sys.num_cpu,
        num_cpu_used: sys.num_cpu_used,
        mem_heap_used: sys.proc.heap_bytes.max(1),
        mem_stack_used: sys.proc.stack_bytes.max(1),
        keystore_latency: latency,
        keystore_unreachable: unreachable,
        sealed_cache,
    }))
}

/// Go's `GOARCH` names, which kms-go and the CLI print.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

pub fn handle_get_metrics(ctx: &Ctx<'_>, _: &Authorized) -> Result<Response, ApiError> {
    let stats = ctx.state.keys.stats();
    let backend = ctx.state.keys.store().stats();
    let store = StoreFigures {
        cache_hits: stats.hits,
        cache_misses: stats.misses,
        backend_reads: stats.backend_reads,
        backend_read_micros: stats.backend_read_micros,
        store_requests: backend.requests,
        store_retries: backend.retries,
        store_throttled: backend.throttled,
        sealed_rechecks: stats.recheck.passes,
        sealed_recheck_stopped: stats.recheck.stopped,
        sealed_recheck_removed: stats.recheck.removed,
    };
    let text = render_metrics(&ctx.state.obs, &system_figures(ctx), &store);
    Ok(Response::with_body(200, "text/plain; version=0.0.4; charset=utf-8", text.into_bytes()))
}

pub fn handle_get_api(ctx: &Ctx<'_>, _: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Api<'a> {
        method: &'a str,
        path: &'a str,
        max_body: usize,
        timeout: u64,
    }
    let list: Vec<Api<'_>> = ctx
        .state
        .routes
        .iter()
        .map(|r| Api {
            method: r.method.as_str(),
            path: r.path,
            max_body: r.max_body,
            timeout: r.timeout.as_secs(),
        })
        .collect();
    Ok(json(&list))
}
