//! Deploy freezes: `DeployFreeze` objects people set and lift during
//! incidents, and scheduled windows from policy. Owns their schema and the
//! pure question "which freezes apply to this release now"; reading and
//! writing them in clusters belongs to `fleet::freezes`.

pub mod window;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::FreezeNotice;
use crate::spec::ResolvedRelease;
pub use window::Window;

/// A recorded decision that no release may advance.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cutover.dev",
    version = "v1alpha1",
    kind = "DeployFreeze",
    plural = "deployfreezes",
    shortname = "freeze",
    status = "FreezeStatus",
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".spec.reason"}"#,
    printcolumn = r#"{"name":"Author","type":"string","jsonPath":".spec.author"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".spec.expiresAt"}"#,
    printcolumn = r#"{"name":"Lifted","type":"string","jsonPath":".spec.lifted.at"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(oldSelf.lifted) || has(self.lifted)",
        "fieldPath": ".lifted",
        "reason": "FieldValueForbidden",
        "message": "a lifted freeze stays lifted: it is the record of the freeze; create a new DeployFreeze to freeze again",
    },
    {
        "rule": "self.reason == oldSelf.reason && self.author == oldSelf.author",
        "message": "reason and author are immutable: they record who froze deploys and why",
    },
]))]
pub struct DeployFreezeSpec {
    /// Why deploys are frozen. Required.
    pub reason: String,
    /// Who froze them. Required.
    pub author: String,
    /// The incident or change ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// What is frozen; empty lists freeze everything.
    #[serde(default)]
    pub scope: Scope,
    /// When the freeze ends by itself (RFC 3339); none: until lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Set when someone lifts the freeze; the object stays as the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifted: Option<Lifted>,
}

/// Which releases a freeze or window applies to. Empty lists match everything.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
}

impl Scope {
    pub fn applies_to(&self, rel: &ResolvedRelease) -> bool {
        let app = self.apps.is_empty() || self.apps.contains(&rel.app);
        let tier = self.tiers.is_empty() || self.tiers.contains(&rel.tier_name);
        let cluster = self.clusters.is_empty()
            || rel.clusters.iter().any(|c| self.clusters.contains(&c.name));
        app && tier && cluster
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (what, list) in [
            ("apps", &self.apps),
            ("tiers", &self.tiers),
            ("clusters", &self.clusters),
        ] {
            if !list.is_empty() {
                parts.push(format!("{what} {}", list.join(",")));
            }
        }
        if parts.is_empty() {
            "everything".into()
        } else {
            parts.join("; ")
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lifted {
    pub by: String,
    pub reason: String,
    pub at: String,
}

/// The freeze's history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct FreezeStatus {
    #[serde(default)]
    pub history: Vec<FreezeEvent>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FreezeEvent {
    pub at: String,
    /// `Created`, `Extended`, `Lifted` or `Overridden`.
    pub action: String,
    pub by: String,
    pub message: String,
}

impl DeployFreeze {
    /// Whether it freezes at `now`: not lifted and not expired.
    pub fn is_active(&self, now: jiff::Timestamp) -> bool {
        if self.spec.lifted.is_some() {
            return false;
        }
        match self
            .spec
            .expires_at
            .as_deref()
            .map(str::parse::<jiff::Timestamp>)
        {
            Some(Ok(t)) => now < t,
            // An unreadable expiry never ends a freeze: fail closed.
            _ => true,
        }
    }

    pub fn notice(&self) -> FreezeNotice {
        let id = self.metadata.name.clone().unwrap_or_default();
        let ticket = self
            .spec
            .ticket
            .as_deref()
            .map(|t| format!(" [{t}]"))
            .unwrap_or_default();
        let until = self
            .spec
            .expires_at
            .as_deref()
            .map(|t| format!(" until {t}"))
            .unwrap_or_default();
        FreezeNotice {
            id,
            message: format!(
                "{} by {}{ticket}{until} (scope: {})",
                self.spec.reason,
                self.spec.author,
                self.spec.scope.describe()
            ),
        }
    }
}

/// The freezes and windows that apply to `rel` at `now`, by id (windows as `window/<name>`).
pub fn applicable(
    rel: &ResolvedRelease,
    freezes: &[DeployFreeze],
    windows: &[Window],
    now: jiff::Timestamp,
) -> Vec<FreezeNotice> {
    let mut out: Vec<FreezeNotice> = freezes
        .iter()
        .filter(|f| f.is_active(now) && f.spec.scope.applies_to(rel))
        .map(DeployFreeze::notice)
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out.dedup_by(|a, b| a.id == b.id);
    for w in windows
        .iter()
        .filter(|w| w.scope.applies_to(rel) && w.contains(now))
    {
        out.push(FreezeNotice {
            id: format!("window/{}", w.name),
            message: w.describe(),
        });
    }
    out
}

/// The active freezes that still stop a release under its break-glass override.
#[derive(Debug, PartialEq, Eq)]
pub struct Blocking<'a> {
    /// Active freezes the override does not name; empty when nothing blocks.
    pub unnamed: Vec<&'a FreezeNotice>,
    /// The override names some active freezes but not all of them.
    pub partial: bool,
}

impl Blocking<'_> {
    /// Whether an override named every active freeze (and at least one was active).
    pub fn overridden(&self, active: &[FreezeNotice]) -> bool {
        !active.is_empty() && self.unnamed.is_empty()
    }
}

/// The one freeze rule: an override counts only when it names every active
/// freeze; naming some leaves every unnamed one blocking. Used by admission
/// (before a release starts) and by the engine (while it runs).
pub fn blocking<'a>(
    active: &'a [FreezeNotice],
    over: Option<&crate::spec::release::FreezeOverride>,
) -> Blocking<'a> {
    let named = |id: &str| over.is_some_and(|o| o.ids.iter().any(|n| n == id));
    let unnamed: Vec<&FreezeNotice> = active.iter().filter(|f| !named(&f.id)).collect();
    let partial = !unnamed.is_empty() && active.iter().any(|f| named(&f.id));
    Blocking { unnamed, partial }
}
