//! The key routes (`kes-api.md` §9.6–9.14, `kes-crypto.md` §6).

use super::{empty, json};
use crate::api::error::{ApiError, StoreOp};
use crate::api::wire::{Body, encode_base64, to_go_json_secret};
use crate::api::{Ctx, valid_name, valid_pattern};
use crate::auth::Authorized;
use crate::config::Level;
use crate::crypto::{Algorithm, HmacKey, KEY_LEN, KeyVersion, SecretKey, fill_random};
use crate::http::{BodyFraming, Response};
use crate::keystore::StoreError;
use crate::keystore::cache::CacheError;
use serde::Serialize;
use std::sync::Arc;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Length of a generated data encryption key (MinIO uses it as a 256-bit key).
pub const DEK_LEN: usize = 32;

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
    match ctx.state.keys.store().create(name, value.as_bytes(), ctx.deadline) {
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
fn fetch(ctx: &Ctx<'_>, auth: &Authorized, name: &str) -> Result<Arc<KeyVersion>, ApiError> {
    match ctx.state.keys.get(name, ctx.deadline) {
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
fn body(ctx: &Ctx<'_>, message: &'static str) -> Result<Body, ApiError> {
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

pub fn handle_describe_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Describe<'a> {
        name: &'a str,
        algorithm: &'a str,
        created_at: String,
        #[serde(skip_serializing_if = "str::is_empty")]
        created_by: &'a str,
    }
    let name = key_name(ctx)?;
    let key = fetch(ctx, auth, name)?;
    Ok(json(&Describe {
        name,
        algorithm: key.key.algorithm().as_str(),
        created_at: key
            .created_at
            .map(crate::gotime::format_rfc3339_nano)
            .unwrap_or_else(|| crate::gotime::ZERO_TIME.to_string()),
        created_by: &key.created_by,
    }))
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
    match ctx.state.keys.store().delete(name, ctx.deadline) {
        Ok(()) => {
            ctx.state.keys.remove(name);
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
fn optional_body(ctx: &Ctx<'_>) -> Result<Body, ApiError> {
    match ctx.head.framing {
        BodyFraming::None => Ok(Body::empty()),
        _ => body(ctx, "invalid request body"),
    }
}

pub fn handle_generate_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Generated<'a> {
        plaintext: &'a str,
        ciphertext: String,
    }
    let name = key_name(ctx)?;
    let req = optional_body(ctx)?;
    let context =
        req.bytes("context").map_err(|_| ApiError::InvalidBody("invalid request body"))?;
    let key = fetch(ctx, auth, name)?;
    let mut dek = Zeroizing::new([0u8; DEK_LEN]);
    fill_random(dek.as_mut())
        .map_err(|_| ApiError::Internal("failed to generate encryption key"))?;
    let ciphertext = key
        .key
        .encrypt(dek.as_ref(), &context)
        .map_err(|_| ApiError::Internal("failed to generate encryption key"))?;
    let plaintext = Zeroizing::new(encode_base64(dek.as_ref()));
    let out = Generated { plaintext: &plaintext, ciphertext: encode_base64(&ciphertext) };
    Ok(Response::with_body(200, "application/json", to_go_json_secret(&out)))
}

pub fn handle_encrypt_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Encrypted {
        ciphertext: String,
    }
    const BAD: &str = "invalid request body";
    let name = key_name(ctx)?;
    let req = body(ctx, BAD)?;
    let plaintext = req.bytes("plaintext").map_err(|_| ApiError::InvalidBody(BAD))?;
    let context = req.bytes("context").map_err(|_| ApiError::InvalidBody(BAD))?;
    let key = fetch(ctx, auth, name)?;
    let ciphertext = key
        .key
        .encrypt(&plaintext, &context)
        .map_err(|_| ApiError::Internal("failed to encrypt plaintext"))?;
    Ok(json(&Encrypted { ciphertext: encode_base64(&ciphertext) }))
}

pub fn handle_decrypt_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Decrypted<'a> {
        plaintext: &'a str,
    }
    const BAD: &str = "invalid request body";
    let name = key_name(ctx)?;
    let req = body(ctx, BAD)?;
    let ciphertext = req.bytes("ciphertext").map_err(|_| ApiError::InvalidBody(BAD))?;
    let context = req.bytes("context").map_err(|_| ApiError::InvalidBody(BAD))?;
    let key = fetch(ctx, auth, name)?;
    let plaintext =
        key.key.decrypt(&ciphertext, &context).map_err(|_| ApiError::DecryptionFailed)?;
    let encoded = Zeroizing::new(encode_base64(&plaintext));
    let out = Decrypted { plaintext: &encoded };
    Ok(Response::with_body(200, "application/json", to_go_json_secret(&out)))
}

pub fn handle_hmac_key(ctx: &Ctx<'_>, auth: &Authorized) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Mac<'a> {
        hmac: &'a str,
    }
    const BAD: &str = "invalid request body";
    let name = key_name(ctx)?;
    let req = body(ctx, BAD)?;
    let message = req.bytes("message").map_err(|_| ApiError::InvalidBody(BAD))?;
    let key = fetch(ctx, auth, name)?;
    let Some(hmac) = &key.hmac else { return Err(ApiError::HmacUnsupported) };
    let tag = Zeroizing::new(hmac.sign(&message));
    let encoded = Zeroizing::new(encode_base64(tag.as_ref()));
    Ok(Response::with_body(200, "application/json", to_go_json_secret(&Mac { hmac: &encoded })))
}
