//! The key routes (`kes-api.md` §9.6–9.14, `kes-crypto.md` §6) and our rotation extension
//! (issue 12): `rotate` adds, retires and re-enables versions; `rewrap` re-encrypts a
//! ciphertext under the newest version without the plaintext leaving the server.
//!
//! Versions behind the unchanged API: generate and encrypt use the newest live version and
//! name it in a `version` field; decrypt uses the request's `version` when given, else
//! tries the live versions newest first; HMAC always uses the first version's secret.

use super::{empty, json};
use crate::api::Ctx;
use crate::api::error::{ApiError, StoreOp};
use crate::api::wire::{Body, JsonField, encode_base64, secret_json};
use crate::auth::Authorized;
use crate::crypto::{
    Algorithm, HmacKey, KEY_LEN, KeyVersion, SecretKey, Version, VersionState, VersionedKey,
};
use crate::http::{BodyFraming, Response};
use crate::keystore::cache::CacheError;
use crate::keystore::{
    MAX_LIVE_VERSIONS, MAX_VERSIONS, StoreError, StoredVersion, valid_version_id,
};
use crate::names::{valid_name, valid_pattern};
use crate::obs::Level;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Length of a generated data encryption key (MinIO uses it as a 256-bit key).
pub const DEK_LEN: usize = 32;

/// A decrypt that no cached version opens reads the key from the store again (the
/// ciphertext may come from a version another server added since), but only when the
/// cached copy is at least this old: failing requests can make this node read the store at
/// most once per this period per key.
pub const REFRESH_MIN_AGE: Duration = Duration::from_secs(1);

/// What the key cache keeps for a key (`keystore::cache::ParseFn`): live versions are
/// decoded from any stored format (a malformed one fails the key, as a malformed value
/// always did); retired ones keep only their facts, and their material when readable.
pub fn parse_key(stored: &[StoredVersion]) -> Result<VersionedKey, &'static str> {
    let mut versions = Vec::with_capacity(stored.len());
    for v in stored {
        let parsed = v.value.as_deref().map(|b| KeyVersion::parse(b));
        versions.push(if v.enabled {
            match parsed {
                Some(Ok(key)) => Version::live(v.id.clone(), key),
                Some(Err(e)) => return Err(e.0),
                None => return Err("live version without value"),
            }
        } else {
            Version::retired(v.id.clone(), parsed.and_then(Result::ok))
        });
    }
    Ok(VersionedKey::new(versions))
}

fn key_name<'a>(ctx: &Ctx<'a>) -> Result<&'a str, ApiError> {
    let name = ctx.resource;
    if valid_name(name) { Ok(name) } else { Err(ApiError::InvalidKeyName(name.to_string())) }
}

fn creator(auth: &Authorized) -> String {
    auth.identity().map(|i| i.to_string()).unwrap_or_default()
}

/// Stores a new key; maps "exists" and logs every other failure.
fn store_new_key(
    ctx: &Ctx<'_>,
    auth: &Authorized,
    name: &str,
    key: &KeyVersion,
) -> Result<(), ApiError> {
    let value = key.encode().map_err(|e| {
        ctx.log_error(
            Level::ERROR,
            &format!("failed to encode key '{name}': {e}"),
            auth.identity(),
        );
        ApiError::KeyStore(StoreOp::Create)
    })?;
    match ctx.state.keys.create(name, value.as_bytes(), ctx.deadline) {
        Ok(()) => {
            *ctx.audit_message.borrow_mut() = Some(format!("secret key '{name}' created"));
            Ok(())
        }
        Err(StoreError::Exists) => Err(ApiError::KeyExists),
        Err(e) => {
            ctx.log_error(
                Level::ERROR,
                &format!("failed to create key '{name}': {e}"),
                auth.identity(),
            );
            Err(ApiError::KeyStore(StoreOp::Create))
        }
    }
}

/// A key through the cache, with upstream's error mapping.
fn fetch(ctx: &Ctx<'_>, auth: &Authorized, name: &str) -> Result<Arc<VersionedKey>, ApiError> {
    let result = ctx.state.keys.get(name, ctx.deadline);
    read_result(ctx, auth, name, result)
}

/// The key as the store holds it now (for decisions a stale copy must not make).
fn fetch_fresh(
    ctx: &Ctx<'_>,
    auth: &Authorized,
    name: &str,
) -> Result<Arc<VersionedKey>, ApiError> {
    ctx.state.keys.forget(name);
    fetch(ctx, auth, name)
}

/// Upstream's mapping of a failed key read; logs what the client is not told.
fn read_result(
    ctx: &Ctx<'_>,
    auth: &Authorized,
    name: &str,
    result: Result<Arc<VersionedKey>, CacheError>,
) -> Result<Arc<VersionedKey>, ApiError> {
    match result {
        Ok(k) => Ok(k),
        Err(CacheError::Store(StoreError::NotFound)) => Err(ApiError::KeyNotFound),
        Err(CacheError::Store(e)) => {
            ctx.log_error(
                Level::ERROR,
                &format!("failed to read key '{name}': {e}"),
                auth.identity(),
            );
            Err(ApiError::KeyStore(StoreOp::Read))
        }
        Err(CacheError::Format(e)) => {
            ctx.log_error(
                Level::ERROR,
                &format!("failed to parse key '{name}': {e}"),
                auth.identity(),
            );
            Err(ApiError::KeyStore(StoreOp::Read))
        }
    }
}

/// Parses the body as a JSON object, or fails with the route's text.
fn body<'a>(ctx: &Ctx<'a>, message: &'static str) -> Result<Body<'a>, ApiError> {
    Body::parse(ctx.body).map_err(|_| ApiError::InvalidBody(message))
}

pub fn handle_create_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    let name = key_name(ctx)?;
    let key =
        KeyVersion::generate(Algorithm::preferred(), &creator(auth), OffsetDateTime::now_utc())
            .map_err(|_| ApiError::Internal("failed to generate encryption key"))?;
    store_new_key(ctx, auth, name, &key)?;
    Ok(empty())
}

pub fn handle_import_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    const BAD_BODY: &str = "invalid import key request body";
    let name = key_name(ctx)?;
    let req = body(ctx, BAD_BODY)?;
    let bytes = req.bytes("key").map_err(|_| ApiError::InvalidBody(BAD_BODY))?;
    let cipher = req.string("cipher").map_err(|_| ApiError::InvalidBody(BAD_BODY))?;
    let algorithm = match cipher.as_str() {
        "AES256" | "AES256-GCM_SHA256" | "ChaCha20" | "XCHACHA20-POLY1305" => {
            Algorithm::from_name(&cipher)
                .ok_or_else(|| ApiError::UnsupportedAlgorithm(cipher.clone()))?
        }
        _ => return Err(ApiError::UnsupportedAlgorithm(cipher)),
    };
    let Ok(raw) = <&[u8; KEY_LEN]>::try_from(bytes.as_slice()) else {
        return Err(ApiError::InvalidKeySize(cipher));
    };
    let key = KeyVersion {
        key: SecretKey::new(algorithm, raw),
        hmac: Some(
            HmacKey::generate()
                .map_err(|_| ApiError::Internal("failed to generate encryption key"))?,
        ),
        created_at: Some(OffsetDateTime::now_utc()),
        created_by: creator(auth),
    };
    store_new_key(ctx, auth, name, &key)?;
    Ok(empty())
}

/// One version as describe and rotate show it (our field, beside upstream's).
#[derive(Serialize)]
struct VersionInfo<'a> {
    id: &'a str,
    state: &'static str,
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
}

/// Upstream's describe fields (from the first version) plus `versions`, oldest first.
#[derive(Serialize)]
struct Describe<'a> {
    name: &'a str,
    algorithm: &'a str,
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
    versions: Vec<VersionInfo<'a>>,
}

fn go_time(t: Option<OffsetDateTime>) -> String {
    t.map(crate::gotime::format_rfc3339_nano)
        .unwrap_or_else(|| crate::gotime::ZERO_TIME.to_string())
}

fn describe<'a>(name: &'a str, key: &'a VersionedKey) -> Describe<'a> {
    let first = key.first();
    // A retired first version keeps no material; the algorithm is then the newest's.
    let algorithm = first
        .and_then(|v| v.key.as_ref())
        .or_else(|| key.newest().map(|(_, k)| k))
        .map_or("", |k| k.key.algorithm().as_str());
    Describe {
        name,
        algorithm,
        created_at: go_time(first.and_then(|v| v.created_at)),
        created_by: first.map_or("", |v| v.created_by.as_str()),
        versions: key
            .versions()
            .iter()
            .map(|v| VersionInfo {
                id: &v.id,
                state: v.state.as_str(),
                created_at: go_time(v.created_at),
                created_by: &v.created_by,
            })
            .collect(),
    }
}

pub fn handle_describe_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    let name = key_name(ctx)?;
    let key = fetch(ctx, auth, name)?;
    Ok(json(&describe(name, &key)))
}

pub fn handle_list_keys(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct List {
        names: Option<Vec<String>>,
        #[serde(skip_serializing_if = "String::is_empty")]
        continue_at: String,
    }
    let pattern = ctx.resource;
    if !valid_pattern(pattern) {
        return Err(ApiError::InvalidPattern(pattern.to_string()));
    }
    // DECISION D3: one trailing `*` is stripped, so `my-key*` lists what the docs promise.
    let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
    match ctx.state.keys.store().list(prefix, ctx.deadline) {
        Ok(l) => Ok(json(&List {
            names: if l.names.is_empty() { None } else { Some(l.names) },
            continue_at: l.continue_at,
        })),
        Err(e) => {
            ctx.log_error(Level::ERROR, &format!("failed to list keys: {e}"), auth.identity());
            Err(ApiError::KeyStore(StoreOp::List))
        }
    }
}

pub fn handle_delete_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    let name = key_name(ctx)?;
    match ctx.state.keys.delete(name, ctx.deadline) {
        Ok(()) => {
            *ctx.audit_message.borrow_mut() = Some(format!("secret key '{name}' deleted"));
            Ok(empty())
        }
        Err(StoreError::NotFound) => Err(ApiError::KeyNotFound),
        Err(e) => {
            ctx.log_error(
                Level::ERROR,
                &format!("failed to delete key '{name}': {e}"),
                auth.identity(),
            );
            Err(ApiError::KeyStore(StoreOp::Delete))
        }
    }
}

/// Generate parses its body only when one was sent (`Content-Length > 0` or chunked).
fn optional_body<'a>(ctx: &Ctx<'a>) -> Result<Body<'a>, ApiError> {
    match ctx.head.framing {
        BodyFraming::None => Ok(Body::empty()),
        _ => body(ctx, "invalid request body"),
    }
}

/// The newest live version, which encrypts.
fn newest<'a>(name: &str, key: &'a VersionedKey) -> Result<(&'a str, &'a KeyVersion), ApiError> {
    key.newest()
        .ok_or_else(|| ApiError::VersionConflict(format!("key '{name}' has no live version")))
}

pub fn handle_generate_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    let name = key_name(ctx)?;
    let req = optional_body(ctx)?;
    let context =
        req.bytes("context").map_err(|_| ApiError::InvalidBody("invalid request body"))?;
    let key = fetch(ctx, auth, name)?;
    let (version, newest) = newest(name, &key)?;
    let mut dek = Zeroizing::new([0u8; DEK_LEN]);
    let ciphertext = newest
        .key
        .seal_fresh(dek.as_mut(), &context)
        .map_err(|_| ApiError::Internal("failed to generate encryption key"))?;
    let out = secret_json(&[
        ("plaintext", JsonField::Base64(dek.as_ref())),
        ("ciphertext", JsonField::Base64(&ciphertext)),
        ("version", JsonField::Str(version)),
    ]);
    Ok(Response::with_secret_body(200, "application/json", out))
}

/// `{"ciphertext","version"}`: what encrypt and rewrap answer.
#[derive(Serialize)]
struct Encrypted<'a> {
    ciphertext: String,
    version: &'a str,
}

pub fn handle_encrypt_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    const BAD: &str = "invalid request body";
    let name = key_name(ctx)?;
    let req = body(ctx, BAD)?;
    let plaintext = req.bytes("plaintext").map_err(|_| ApiError::InvalidBody(BAD))?;
    let context = req.bytes("context").map_err(|_| ApiError::InvalidBody(BAD))?;
    let key = fetch(ctx, auth, name)?;
    let (version, newest) = newest(name, &key)?;
    let ciphertext = newest
        .key
        .encrypt(&plaintext, &context)
        .map_err(|_| ApiError::Internal("failed to encrypt plaintext"))?;
    Ok(json(&Encrypted { ciphertext: encode_base64(&ciphertext), version }))
}

/// A decrypt's outcome: the plaintext, and the key and version that opened it.
struct Opened {
    plaintext: Zeroizing<Vec<u8>>,
    key: Arc<VersionedKey>,
    version: String,
}

/// Opens a decrypt or rewrap body's ciphertext: with the version its `version` field names,
/// else with the live versions newest first (at most [`MAX_LIVE_VERSIONS`]). A `version`
/// that names no version of the key is ignored, as upstream ignores the field, so a client
/// sending some other `version` string keeps working. When the cached key cannot open the
/// ciphertext, the key is read again once (see [`REFRESH_MIN_AGE`]) in case the version was
/// added on another server.
fn open(ctx: &Ctx<'_>, auth: &Authorized, name: &str, req: &Body) -> Result<Opened, ApiError> {
    const BAD: &str = "invalid request body";
    let ciphertext = req.bytes("ciphertext").map_err(|_| ApiError::InvalidBody(BAD))?;
    let context = req.bytes("context").map_err(|_| ApiError::InvalidBody(BAD))?;
    let hint = req.string("version").map_err(|_| ApiError::InvalidBody(BAD))?;
    let attempt = |key: &VersionedKey| -> Result<(Zeroizing<Vec<u8>>, String), ApiError> {
        if key.version(&hint).is_some() {
            let plaintext = key
                .decrypt_with(&hint, &ciphertext, &context)
                .map_err(|_| ApiError::DecryptionFailed)?;
            return Ok((plaintext, hint.clone()));
        }
        let (plaintext, id) = key
            .decrypt_any(&ciphertext, &context, MAX_LIVE_VERSIONS)
            .map_err(|_| ApiError::DecryptionFailed)?;
        Ok((plaintext, id.to_string()))
    };
    let key = fetch(ctx, auth, name)?;
    let first_try = attempt(&key);
    let (key, result) = match first_try {
        Err(ApiError::DecryptionFailed) => {
            let result = ctx.state.keys.refresh(name, &key, REFRESH_MIN_AGE, ctx.deadline);
            let fresh = read_result(ctx, auth, name, result)?;
            if Arc::ptr_eq(&fresh, &key) {
                (key, first_try)
            } else {
                let again = attempt(&fresh);
                (fresh, again)
            }
        }
        other => (key, other),
    };
    let (plaintext, version) = result?;
    Ok(Opened { plaintext, key, version })
}

pub fn handle_decrypt_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    let name = key_name(ctx)?;
    let req = body(ctx, "invalid request body")?;
    let opened = open(ctx, auth, name, &req)?;
    let out = secret_json(&[("plaintext", JsonField::Base64(&opened.plaintext))]);
    Ok(Response::with_secret_body(200, "application/json", out))
}

pub fn handle_hmac_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    const BAD: &str = "invalid request body";
    let name = key_name(ctx)?;
    let req = body(ctx, BAD)?;
    let message = req.bytes("message").map_err(|_| ApiError::InvalidBody(BAD))?;
    let key = fetch(ctx, auth, name)?;
    // Always the first version's HMAC secret: MinIO derives credentials from it.
    let Some(hmac) = key.hmac() else { return Err(ApiError::HmacUnsupported) };
    let tag = Zeroizing::new(hmac.sign(&message));
    let out = secret_json(&[("hmac", JsonField::Base64(tag.as_ref()))]);
    Ok(Response::with_secret_body(200, "application/json", out))
}

/// `PUT /v1/key/rewrap/<name>`: `{"ciphertext","context"?,"version"?}` in, the same
/// plaintext sealed by the newest live version with the same context out, as
/// `{"ciphertext","version"}`. The plaintext is wiped before the handler returns.
pub fn handle_rewrap_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    const BAD: &str = "invalid request body";
    let name = key_name(ctx)?;
    let req = body(ctx, BAD)?;
    let context = req.bytes("context").map_err(|_| ApiError::InvalidBody(BAD))?;
    let opened = open(ctx, auth, name, &req)?;
    let (version, newest) = newest(name, &opened.key)?;
    let ciphertext = newest
        .key
        .encrypt(&opened.plaintext, &context)
        .map_err(|_| ApiError::Internal("failed to encrypt plaintext"))?;
    *ctx.audit_message.borrow_mut() = Some(format!(
        "secret key '{name}' ciphertext rewrapped from version '{}' to version '{version}'",
        opened.version
    ));
    Ok(json(&Encrypted { ciphertext: encode_base64(&ciphertext), version }))
}

/// `PUT /v1/key/rotate/<name>`: without a body (or `{}`) adds a new version, which then
/// encrypts; `{"retire":"<id>"}` retires a version and `{"enable":"<id>"}` re-enables one.
/// Answers like describe, with the versions as the store now holds them.
pub fn handle_rotate_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    const BAD: &str = "invalid rotate request body";
    let name = key_name(ctx)?;
    let req = match ctx.head.framing {
        BodyFraming::None => Body::empty(),
        _ => body(ctx, BAD)?,
    };
    let retire = req.string("retire").map_err(|_| ApiError::InvalidBody(BAD))?;
    let enable = req.string("enable").map_err(|_| ApiError::InvalidBody(BAD))?;
    if !retire.is_empty() && !enable.is_empty() {
        return Err(ApiError::InvalidBody(
            "invalid rotate request body: give 'retire' or 'enable', not both",
        ));
    }
    let key = fetch_fresh(ctx, auth, name)?;
    let message = if !retire.is_empty() {
        set_state(ctx, auth, name, &key, &retire, false)?
    } else if !enable.is_empty() {
        set_state(ctx, auth, name, &key, &enable, true)?
    } else {
        add_version(ctx, auth, name, &key)?
    };
    *ctx.audit_message.borrow_mut() = Some(message);
    // The write made the cache forget the key: this reads the versions as they are now.
    let key = fetch(ctx, auth, name)?;
    Ok(json(&describe(name, &key)))
}

/// Adds a fresh version of the newest live version's algorithm; returns the audit text.
fn add_version(
    ctx: &Ctx<'_>,
    auth: &Authorized,
    name: &str,
    key: &VersionedKey,
) -> Result<String, ApiError> {
    if key.versions().len() >= MAX_VERSIONS {
        return Err(ApiError::VersionConflict(format!(
            "key '{name}' has {MAX_VERSIONS} versions, the most a key may have"
        )));
    }
    if key.live_count() >= MAX_LIVE_VERSIONS {
        return Err(ApiError::VersionConflict(format!(
            "key '{name}' has {MAX_LIVE_VERSIONS} live versions, the most a key may have; retire one first"
        )));
    }
    let algorithm = key.newest().map_or_else(Algorithm::preferred, |(_, k)| k.key.algorithm());
    let fresh = KeyVersion::generate(algorithm, &creator(auth), OffsetDateTime::now_utc())
        .map_err(|_| ApiError::Internal("failed to generate encryption key"))?;
    let value = fresh.encode().map_err(|e| {
        ctx.log_error(
            Level::ERROR,
            &format!("failed to encode key '{name}': {e}"),
            auth.identity(),
        );
        ApiError::KeyStore(StoreOp::Update)
    })?;
    match ctx.state.keys.add_version(name, value.as_bytes(), ctx.deadline) {
        Ok(id) => Ok(format!("secret key '{name}' rotated: version '{id}' added")),
        Err(StoreError::NotFound) => Err(ApiError::KeyNotFound),
        Err(e) => {
            ctx.log_error(
                Level::ERROR,
                &format!("failed to rotate key '{name}': {e}"),
                auth.identity(),
            );
            Err(ApiError::KeyStore(StoreOp::Update))
        }
    }
}

/// Retires or re-enables version `id`; returns the audit text. Retiring an already retired
/// version (or enabling a live one) changes nothing and succeeds.
fn set_state(
    ctx: &Ctx<'_>,
    auth: &Authorized,
    name: &str,
    key: &VersionedKey,
    id: &str,
    enabled: bool,
) -> Result<String, ApiError> {
    if !valid_version_id(id) {
        return Err(ApiError::InvalidVersion);
    }
    let version = key.version(id).ok_or_else(|| ApiError::VersionNotFound(id.to_string()))?;
    let live = version.state == VersionState::Live;
    let verb = if enabled { "enabled" } else { "retired" };
    if live == enabled {
        return Ok(format!("secret key '{name}' version '{id}' already {verb}"));
    }
    if !enabled && key.live_count() <= 1 {
        return Err(ApiError::VersionConflict(format!(
            "version '{id}' is the only live version of key '{name}' and cannot be retired; rotate first"
        )));
    }
    if enabled && key.live_count() >= MAX_LIVE_VERSIONS {
        return Err(ApiError::VersionConflict(format!(
            "key '{name}' has {MAX_LIVE_VERSIONS} live versions, the most a key may have; retire one first"
        )));
    }
    match ctx.state.keys.set_version_enabled(name, id, enabled, ctx.deadline) {
        Ok(()) => Ok(format!("secret key '{name}' version '{id}' {verb}")),
        Err(StoreError::NotFound) => Err(ApiError::VersionNotFound(id.to_string())),
        Err(e) => {
            ctx.log_error(
                Level::ERROR,
                &format!("failed to update version '{id}' of key '{name}': {e}"),
                auth.identity(),
            );
            Err(ApiError::KeyStore(StoreOp::Update))
        }
    }
}
