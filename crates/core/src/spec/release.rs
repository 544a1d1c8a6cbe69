//! The Release: one version of one app to move through the fleet. The same
//! types are the file users write (`kind: Release`) and the CRD
//! `releases.cutover.dev`, whose status is the engine's state.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::policy::LaterClusters;
use super::quantity::{Percent, Span};
use super::status::ReleaseStatus;

/// One version of one app, rolled out blue-green across the fleet.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cutover.dev",
    version = "v1alpha1",
    kind = "Release",
    plural = "releases",
    shortname = "rel",
    namespaced,
    status = "ReleaseStatus",
    printcolumn = r#"{"name":"App","type":"string","jsonPath":".spec.app"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.stepName"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.app == oldSelf.app",
    "fieldPath": ".app",
    "message": "app is immutable: a Release follows one app for its whole life; create another Release for another app",
}]))]
pub struct ReleaseSpec {
    /// The app; names its workloads (`<app>-<version>`), Services and route.
    pub app: String,
    /// The tier in the tier policy (`tier-1`, `tier-2`) whose rules apply.
    pub tier: String,
    /// The version to roll out; labels green's pods `cutover.dev/version`.
    pub version: String,
    /// Replicas of green in every cluster, unless a cluster entry says otherwise.
    pub replicas: u32,
    /// What to run: a pod template or a whole Deployment manifest.
    pub workload: Workload,
    /// Image overrides by container name, applied to the workload's template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// The PodDisruptionBudget cutover keeps for each colour's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<DisruptionBudget>,
    /// The clusters, in rollout order: staging first, then the first production
    /// cluster (canary and ramp), then the others.
    pub clusters: Vec<ClusterTarget>,
    /// How traffic is shifted, unless a cluster entry says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterSpec>,
    /// Timings; anything unset comes from the tier policy.
    #[serde(default)]
    pub plan: PlanSpec,
    /// Metrics every step must satisfy while it waits; a failure rolls back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<super::gates::MetricGate>,
    /// Checks run at fixed points of the steps (after a deploy, before a
    /// traffic step, before cleanup); a failure rolls back like a gate's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<super::hooks::Hook>,
    /// Stop advancing until set back to false; traffic stays where it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Skip the remaining wait of one step (gates must still pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<PromoteRequest>,
    /// Break-glass: go on despite these freezes. Must name every freeze that
    /// applies, with a reason; recorded on the release and as Events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_freezes: Option<FreezeOverride>,
    /// Roll back: traffic to blue everywhere, then green scaled down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortRequest>,
    /// Set by `cutover undo`: this spec brings back an earlier revision whose
    /// version completed. While `version` matches it, the tier's undo timings
    /// (`rollout.undo` in the tier policy) apply; otherwise it is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_of: Option<UndoOf>,
}

/// What to run. Exactly one of the two is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// A pod template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::preserve_unknown_fields")]
    pub template: Option<PodTemplateSpec>,
    /// An `apps/v1` Deployment manifest; its pod template is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::preserve_unknown_fields")]
    pub deployment: Option<Deployment>,
}

/// How many of a colour's pods voluntary disruptions (drains) may take at once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisruptionBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// One cluster of the rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterTarget {
    /// A cluster name from the fleet file.
    pub name: String,
    /// `staging` (verified first, carries no production traffic) or `production`.
    pub role: ClusterRole,
    /// Replicas of green here; defaults to the release's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Share of global traffic this cluster carries; defaults to the fleet file's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_share: Option<Percent>,
    /// How traffic is shifted here; defaults to the release's router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterSpec>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterRole {
    Staging,
    Production,
}

/// How traffic moves between blue and green in a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouterSpec {
    /// `gatewayHTTPRoute` (default): backend weights of a Gateway API HTTPRoute.
    /// `replicaRatio`: one Service over both colours, weight by replica counts.
    #[serde(default)]
    pub kind: RouterKind,
    /// The HTTPRoute to edit; defaults to the app name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The port the colour Services expose; defaults to 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum RouterKind {
    #[default]
    #[serde(rename = "gatewayHTTPRoute")]
    GatewayHttpRoute,
    ReplicaRatio,
}

/// Timings of the rollout. Unset values come from the tier; set values must lie
/// within the tier's bounds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampSpec>,
    /// Stability required on the first production cluster at 100 % before the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<Span>,
    /// How long green is verified on staging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging_verify: Option<Span>,
    /// How later production clusters take traffic: `cutover` or `ramp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub later_clusters: Option<LaterClusters>,
    /// Time with every cluster on green, blue still at full size, before cleanup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<Span>,
    /// Longest a step may wait for pods or placement before the release aborts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<Span>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanarySpec {
    /// Canary weight as a share of the service's **total** traffic (`2%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<Percent>,
    /// How long the canary holds, gating, before the ramp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Span>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RampSpec {
    /// Step as a share of the first production cluster's traffic (`5%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Percent>,
    /// Time between steps (`5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Span>,
}

/// A person's request to skip the rest of one step's wait.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromoteRequest {
    /// Index of the step to promote (`status.step` when the request was made),
    /// so a late request never skips a later step.
    pub step: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The version in flight when it was asked, so a request left on the
    /// Release never acts on a later revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A break-glass override of named freezes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FreezeOverride {
    /// The freezes overridden (`window/<name>` for scheduled windows).
    pub ids: Vec<String>,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A person's request to roll the release back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbortRequest {
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The version in flight when it was asked, so a request left on the
    /// Release never aborts a later revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The earlier revision an undo brings back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UndoOf {
    pub revision: u32,
    pub version: String,
}

/// Whether a person's request made while `asked_of` was in flight applies to
/// the version in flight now.
pub fn request_applies(asked_of: Option<&str>, in_flight: Option<&str>) -> bool {
    asked_of.is_none_or(|v| Some(v) == in_flight)
}

/// A Release as written in a file: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: DocumentMeta,
    pub spec: ReleaseSpec,
}

/// The metadata a Release file may carry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DocumentMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}
