//! The config file's shape as serde sees it (`kes-config-cli.md` §1.1), before `${VAR}`
//! expansion, typing and validation.
//!
//! Every leaf is kept as the YAML scalar's text together with its location: upstream
//! expands `${NAME}` on the text first and only then decodes the field's type, so a
//! duration, a bool or a level must not be typed by the YAML parser. Unknown keys are
//! ignored, as upstream's decoder does, so old files with fields of removed features load.
//! A `null` value (`key:` with nothing after it) reads as absent; a `null` list element is
//! an error.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

/// A scalar's text and where it was written (the line goes into `${VAR}` errors).
pub(super) type Scalar = Spanned<String>;

/// A scalar that holds a secret (`tls.password`, `client_secret`): its text goes straight
/// into zeroizing memory and has no `Debug`.
pub(super) struct SecretText(pub(super) Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SecretText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SecretText, E> {
                Ok(SecretText(Zeroizing::new(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<SecretText, E> {
                Ok(SecretText(Zeroizing::new(s)))
            }
        }
        d.deserialize_string(V)
    }
}

#[derive(Deserialize)]
pub(super) struct RawFile {
    pub version: Option<Scalar>,
    pub address: Option<Scalar>,
    pub admin: Option<RawAdmin>,
    pub tls: Option<RawTls>,
    pub policy: Option<BTreeMap<String, Option<RawPolicy>>>,
    pub cache: Option<RawCache>,
    pub api: Option<BTreeMap<String, Option<RawApi>>>,
    pub log: Option<RawLog>,
    pub keys: Option<Vec<RawKey>>,
    pub keystore: Option<RawKeyStore>,
}

#[derive(Deserialize)]
pub(super) struct RawAdmin {
    pub identity: Option<Scalar>,
}

#[derive(Deserialize)]
pub(super) struct RawTls {
    pub key: Option<Scalar>,
    pub cert: Option<Scalar>,
    pub password: Option<Spanned<SecretText>>,
    pub auth: Option<Scalar>,
    pub ca: Option<Scalar>,
    pub proxy: Option<RawProxy>,
    /// Our extension: `log` (default) or `enforce`.
    pub client_validity: Option<Scalar>,
}

#[derive(Deserialize)]
pub(super) struct RawProxy {
    pub identities: Option<Vec<Scalar>>,
    pub header: Option<RawProxyHeader>,
}

#[derive(Deserialize)]
pub(super) struct RawProxyHeader {
    pub cert: Option<Scalar>,
}

#[derive(Deserialize)]
pub(super) struct RawPolicy {
    pub allow: Option<Vec<Scalar>>,
    pub deny: Option<Vec<Scalar>>,
    pub identities: Option<Vec<Scalar>>,
}

#[derive(Deserialize)]
pub(super) struct RawCache {
    pub expiry: Option<RawExpiry>,
    /// Our extension (upstream ignores it): the sealed persistent cache.
    pub persist: Option<RawPersist>,
}

#[derive(Deserialize)]
pub(super) struct RawPersist {
    pub path: Option<Scalar>,
    pub seal: Option<Spanned<SecretText>>,
    pub max_age: Option<Scalar>,
}

#[derive(Deserialize)]
pub(super) struct RawExpiry {
    pub any: Option<Scalar>,
    pub unused: Option<Scalar>,
    pub offline: Option<Scalar>,
}

#[derive(Deserialize)]
pub(super) struct RawApi {
    pub skip_auth: Option<Scalar>,
    pub timeout: Option<Scalar>,
}

#[derive(Deserialize)]
pub(super) struct RawLog {
    pub error: Option<Scalar>,
    pub audit: Option<Scalar>,
}

#[derive(Deserialize)]
pub(super) struct RawKey {
    pub name: Option<Scalar>,
}

/// Backends upstream's `keystore:` section knows (now or in older releases) that this
/// server does not implement. Naming one is a clear "unsupported" error, not a silent skip.
pub(super) const UNSUPPORTED_KEYSTORES: &[&str] =
    &["aws", "entrust", "fortanix", "gcp", "gemalto", "generic", "kes", "vault"];

/// `keystore:`: the two sections we implement, plus the names of the other non-null
/// sections in document order.
#[derive(Default)]
pub(super) struct RawKeyStore {
    pub azure: Option<RawAzure>,
    pub fs: Option<RawFs>,
    /// Non-null sections named in [`UNSUPPORTED_KEYSTORES`].
    pub unsupported: Vec<String>,
    /// Non-null sections nobody knows; ignored unless nothing else selects a keystore.
    pub unknown: Vec<String>,
}

impl<'de> Deserialize<'de> for RawKeyStore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawKeyStore;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of keystore sections")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKeyStore, A::Error> {
                let mut ks = RawKeyStore::default();
                while let Some(name) = map.next_key::<String>()? {
                    match name.as_str() {
                        "azure" => ks.azure = map.next_value()?,
                        "fs" => ks.fs = map.next_value()?,
                        _ => {
                            if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                                if UNSUPPORTED_KEYSTORES.contains(&name.as_str()) {
                                    ks.unsupported.push(name);
                                } else {
                                    ks.unknown.push(name);
                                }
                            }
                        }
                    }
                }
                Ok(ks)
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
pub(super) struct RawFs {
    pub path: Option<Scalar>,
}

#[derive(Deserialize)]
pub(super) struct RawAzure {
    pub keyvault: Option<RawKeyVault>,
}

#[derive(Deserialize)]
pub(super) struct RawKeyVault {
    pub endpoint: Option<Scalar>,
    pub credentials: Option<RawAzureCredentials>,
    pub managed_identity: Option<RawManagedIdentity>,
}

#[derive(Deserialize)]
pub(super) struct RawAzureCredentials {
    pub tenant_id: Option<Scalar>,
    pub client_id: Option<Scalar>,
    pub client_secret: Option<Spanned<SecretText>>,
}

#[derive(Deserialize)]
pub(super) struct RawManagedIdentity {
    pub client_id: Option<Scalar>,
}
