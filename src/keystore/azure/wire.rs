//! Pure parsers for the JSON Key Vault answers with on success: secret bundles and list
//! pages, plus upstream's rules over them (oldest version, client-side attribute checks).
//! Functions over bytes only, so the replay tests feed recorded answers through exactly the
//! code the store runs.
//!
//! Facts: `azure-rest.md` §4 (SecretBundle, SecretItem, paging), `kes-azure-keystore.md`
//! §2 (attribute checks) and §3.3 (oldest version).

use serde::Deserialize;
use std::fmt;
use std::time::SystemTime;
use zeroize::Zeroizing;

/// `attributes` of a bundle or list item; all fields optional as the service omits unset ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Attributes {
    pub enabled: Option<bool>,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub created: Option<i64>,
    pub updated: Option<i64>,
}

/// `(version, created)` of one listed version, as [`oldest_version`] takes them.
pub type VersionEntry = (Option<String>, Option<i64>);

/// One entry of `GET /secrets` or `GET /secrets/{name}/versions`.
#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    pub id: Option<String>,
    pub attributes: Option<Attributes>,
    /// `SecretItem.tags` (OpenAPI `secrets.json`): listed with every version.
    pub tags: Option<std::collections::BTreeMap<String, String>>,
}

/// The tag that marks a secret version as a **rotation** version of a KES key; its value is
/// the id of the key's first version. Versions without it are the key's first version (the
/// oldest) and the duplicates that concurrent creates leave behind, which are never used.
pub const ROTATION_TAG: &str = "kes-rotation-of";

/// The tag that holds a rotation version's sequence number: one more than the highest the
/// rotating server saw. Key Vault's `created` has a resolution of one second, so without it
/// two rotations within a second would be ordered by their random ids; with it, rotations
/// one after the other keep their order, and concurrent ones (same number) are ordered by
/// `(created, id)`, the same on every server.
pub const SEQUENCE_TAG: &str = "kes-rotation-seq";

/// One listed version with what rotation needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionItem {
    pub version: Option<String>,
    pub created: Option<i64>,
    /// `attributes.enabled`; absent means enabled.
    pub enabled: bool,
    /// The [`ROTATION_TAG`] value, when tagged.
    pub rotation_of: Option<String>,
    /// The [`SEQUENCE_TAG`] value; 0 when absent or not a number.
    pub sequence: u64,
}

impl VersionItem {
    /// `(version, created)` for [`oldest_version`].
    pub fn entry(&self) -> VersionEntry {
        (self.version.clone(), self.created)
    }
}

/// The key's versions from a listing: the first version (the oldest untagged one, by
/// [`oldest_version`]'s rule) and the rotation versions tagged with its id, ordered by
/// `(sequence, created, version id)` so every server sees the same order. `None` when no untagged
/// version has an id and a creation time.
pub fn key_versions(items: &[VersionItem]) -> Option<(&VersionItem, Vec<&VersionItem>)> {
    let untagged: Vec<VersionEntry> =
        items.iter().filter(|i| i.rotation_of.is_none()).map(VersionItem::entry).collect();
    let first_id = oldest_version(&untagged);
    if first_id.is_empty() {
        return None;
    }
    let first = items
        .iter()
        .find(|i| i.rotation_of.is_none() && i.version.as_deref() == Some(first_id.as_str()))?;
    let mut rotations: Vec<&VersionItem> = items
        .iter()
        .filter(|i| i.rotation_of.as_deref() == Some(first_id.as_str()) && i.version.is_some())
        .collect();
    rotations.sort_by(|a, b| {
        (a.sequence, a.created, &a.version).cmp(&(b.sequence, b.created, &b.version))
    });
    Some((first, rotations))
}

/// One page of a listing.
#[derive(Debug, Clone, Deserialize)]
pub struct Page {
    #[serde(default)]
    pub value: Vec<Item>,
    #[serde(rename = "nextLink")]
    pub next_link: Option<String>,
}

impl Page {
    /// The `nextLink` when there is another page (null, absent and empty all mean "done").
    pub fn next(&self) -> Option<&str> {
        self.next_link.as_deref().filter(|l| !l.is_empty())
    }

    /// `(version, created)` of each item, in list order (for [`oldest_version`]).
    pub fn versions(&self) -> Vec<VersionEntry> {
        self.value
            .iter()
            .map(|i| {
                let version = i.id.as_deref().and_then(last_segment);
                (version, i.attributes.as_ref().and_then(|a| a.created))
            })
            .collect()
    }

    /// Every listed version with its state and rotation tag, in list order.
    pub fn version_items(&self) -> Vec<VersionItem> {
        self.value
            .iter()
            .map(|i| VersionItem {
                version: i.id.as_deref().and_then(last_segment),
                created: i.attributes.as_ref().and_then(|a| a.created),
                enabled: i.attributes.as_ref().and_then(|a| a.enabled).unwrap_or(true),
                rotation_of: i.tags.as_ref().and_then(|t| t.get(ROTATION_TAG)).cloned(),
                sequence: i
                    .tags
                    .as_ref()
                    .and_then(|t| t.get(SEQUENCE_TAG))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
            })
            .collect()
    }

    /// Secret names (the last path segment of each `id`), in list order.
    pub fn names(&self) -> Vec<String> {
        self.value.iter().filter_map(|i| i.id.as_deref()).filter_map(last_segment).collect()
    }
}

#[derive(Deserialize)]
struct RawBundle {
    value: Option<String>,
    id: Option<String>,
    attributes: Option<Attributes>,
}

/// A secret bundle. The value sits in a zeroizing buffer; `Debug` never shows it.
pub struct Bundle {
    pub value: Zeroizing<Vec<u8>>,
    pub id: String,
    pub attributes: Attributes,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("id", &self.id)
            .field("attributes", &self.attributes)
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// The version id: the last segment of `id`.
    pub fn version(&self) -> String {
        last_segment(&self.id).unwrap_or_default()
    }
}

/// Why a 200 answer could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadBody(pub &'static str);

impl fmt::Display for BadBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Parses a SecretBundle; the value must be present (PATCH/recover answers have none).
pub fn parse_bundle(body: &[u8]) -> Result<Bundle, BadBody> {
    let mut raw: RawBundle =
        serde_json::from_slice(body).map_err(|_| BadBody("secret bundle is not valid JSON"))?;
    let value = raw.value.take().ok_or(BadBody("secret bundle has no value"))?;
    Ok(Bundle {
        value: Zeroizing::new(value.into_bytes()),
        id: raw.id.unwrap_or_default(),
        attributes: raw.attributes.unwrap_or_default(),
    })
}

/// Parses a list page (`SecretListResult`).
pub fn parse_page(body: &[u8]) -> Result<Page, BadBody> {
    serde_json::from_slice(body).map_err(|_| BadBody("listing is not valid JSON"))
}

/// The version with the smallest `created` (ties: first in list order); entries without a
/// version or `created` are skipped; empty when none qualifies (= read the latest), as
/// upstream does (§3.3).
pub fn oldest_version(items: &[VersionEntry]) -> String {
    let mut best: Option<(&str, i64)> = None;
    for (v, c) in items {
        if let (Some(v), Some(c)) = (v, c)
            && best.is_none_or(|(_, bc)| *c < bc)
        {
            best = Some((v, *c));
        }
    }
    best.map(|(v, _)| v.to_string()).unwrap_or_default()
}

/// The last path segment of an item id (`…/secrets/<name>` or `…/secrets/<name>/<version>`).
pub fn last_segment(id: &str) -> Option<String> {
    let path = id.split(['?', '#']).next()?.trim_end_matches('/');
    let seg = path.rsplit('/').next()?;
    (!seg.is_empty()).then(|| seg.to_string())
}

/// Upstream's client-side checks on every read secret (§2): disabled, not yet valid,
/// expired. The error names the pseudo-status code upstream logs.
pub fn check_attributes(a: &Attributes, now: SystemTime) -> Result<(), String> {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    if a.enabled == Some(false) {
        return Err("secret is disabled (ObjectIsDisabled)".into());
    }
    if a.nbf.is_some_and(|nbf| nbf > now) {
        return Err("secret is not valid yet (ObjectMustNotBeUsed)".into());
    }
    if a.exp.is_some_and(|exp| exp < now) {
        return Err("secret has expired (ObjectIsExpired)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn vi(v: &str, created: i64, tag: Option<&str>) -> VersionItem {
        VersionItem {
            version: Some(v.into()),
            created: Some(created),
            enabled: true,
            rotation_of: tag.map(String::from),
            sequence: 0,
        }
    }

    #[test]
    fn key_versions_ignore_create_duplicates_and_order_rotations() {
        let items = vec![
            vi("r2", 20, Some("a")),
            vi("b", 10, None), // duplicate of a concurrent create: never used
            vi("r1b", 15, Some("a")),
            vi("a", 10, None),
            vi("r1a", 15, Some("a")), // same second as r1b: the id decides
            vi("x", 30, Some("zzz")), // tagged for another first version: ignored
        ];
        let (first, rot) = key_versions(&items).unwrap();
        assert_eq!(first.version.as_deref(), Some("b"), "ties: first in list order, as upstream");
        assert!(rot.is_empty());
        let mut items = items;
        items.swap(1, 3);
        let (first, rot) = key_versions(&items).unwrap();
        assert_eq!(first.version.as_deref(), Some("a"));
        let ids: Vec<_> = rot.iter().map(|r| r.version.as_deref().unwrap()).collect();
        assert_eq!(ids, ["r1a", "r1b", "r2"]);
        assert!(key_versions(&[vi("r", 1, Some("a"))]).is_none());
        // The sequence number orders rotations within one second.
        let mut late = vi("r0", 15, Some("a"));
        late.sequence = 2;
        items.push(late);
        let mut early = vi("r9", 15, Some("a"));
        early.sequence = 1;
        items.push(early);
        let (_, rot) = key_versions(&items).unwrap();
        let ids: Vec<_> = rot.iter().map(|r| r.version.as_deref().unwrap()).collect();
        assert_eq!(ids, ["r1a", "r1b", "r2", "r9", "r0"]);
    }

    #[test]
    fn oldest_version_rules() {
        let v = |s: &str, c: i64| (Some(s.to_string()), Some(c));
        assert_eq!(oldest_version(&[v("b", 20), v("a", 10), v("c", 30)]), "a");
        // Ties: first in list order (the recorded service lists versions by id).
        assert_eq!(oldest_version(&[v("9f5f", 1629853070), v("af19", 1629853070)]), "9f5f");
        // Entries without version or created are skipped.
        assert_eq!(oldest_version(&[(None, Some(1)), (Some("x".into()), None), v("y", 5)]), "y");
        assert_eq!(oldest_version(&[(None, None)]), "");
        assert_eq!(oldest_version(&[]), "");
    }

    #[test]
    fn ids_to_names_and_versions() {
        assert_eq!(
            last_segment("https://v.vault.azure.net/secrets/my-key").as_deref(),
            Some("my-key")
        );
        assert_eq!(
            last_segment("https://v.vault.azure.net/secrets/k/af19856a9ff7").as_deref(),
            Some("af19856a9ff7")
        );
        assert_eq!(last_segment("https://v.vault.azure.net/secrets/k/").as_deref(), Some("k"));
        assert_eq!(last_segment(""), None);
    }

    #[test]
    fn attribute_checks() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(check_attributes(&Attributes::default(), now).is_ok());
        let a = Attributes { enabled: Some(false), ..Default::default() };
        assert_eq!(check_attributes(&a, now).unwrap_err(), "secret is disabled (ObjectIsDisabled)");
        let a = Attributes { enabled: Some(true), nbf: Some(1_000_100), ..Default::default() };
        assert!(check_attributes(&a, now).unwrap_err().contains("ObjectMustNotBeUsed"));
        let a = Attributes { exp: Some(999_900), ..Default::default() };
        assert!(check_attributes(&a, now).unwrap_err().contains("ObjectIsExpired"));
        let a = Attributes {
            nbf: Some(999_900),
            exp: Some(1_000_100),
            enabled: Some(true),
            ..Default::default()
        };
        assert!(check_attributes(&a, now).is_ok());
    }

    #[test]
    fn bundles_and_pages() {
        let b = parse_bundle(br#"{"value":"v","id":"https://x/secrets/n/abc","attributes":{"enabled":true,"created":5}}"#).unwrap();
        assert_eq!(
            (&b.value[..], b.version().as_str(), b.attributes.created),
            (&b"v"[..], "abc", Some(5))
        );
        assert!(!format!("{b:?}").contains("\"v\""));
        assert_eq!(
            parse_bundle(br#"{"id":"x"}"#).unwrap_err(),
            BadBody("secret bundle has no value")
        );
        assert!(parse_bundle(b"<html>").is_err());
        let p = parse_page(
            br#"{"value":[{"id":"https://x/secrets/a"},{"attributes":{}}],"nextLink":""}"#,
        )
        .unwrap();
        assert_eq!(p.names(), vec!["a"]);
        assert_eq!(p.next(), None);
        let p = parse_page(br#"{"nextLink":"https://x/secrets?$skiptoken=1"}"#).unwrap();
        assert!(p.value.is_empty());
        assert_eq!(p.next(), Some("https://x/secrets?$skiptoken=1"));
    }
}
