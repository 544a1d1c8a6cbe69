//! The events of a scenario: what triggers each (fleet time, a route's
//! green weight, a Release's step), what it does (behaviour change, zone
//! outage, failing nodes, API faults), and the checks that tie them to the
//! scenario's clusters and zones.

use serde::{Deserialize, Serialize};

use super::{ClusterSpec, Scenario};
use cutover_core::spec::{Percent, Span};

/// Something that happens: exactly one trigger and one effect, optionally clearing after `for`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSpec {
    /// A label for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Fleet time after the scenario starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Span>,
    /// When green's share of a cluster's route reaches a weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_green_weight: Option<GreenWeightTrigger>,
    /// When a Release in the home cluster reaches a step whose name starts
    /// with this. In force before the API server answers the write that
    /// entered the step, so even a step shorter than a poll is caught.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_release_step: Option<String>,
    /// How long the effect lasts; forever when unset.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub lasts: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviour: Option<BehaviourChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_outage: Option<ZoneOutage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_not_ready: Option<NodesNotReady>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_errors: Option<ApiErrors>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_latency: Option<ApiLatency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_unreachable: Option<ApiUnreachable>,
    /// A person on call freezes every deploy (a DeployFreeze in every cluster);
    /// lifted when the event clears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_freeze: Option<DeployFreezeEvent>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployFreezeEvent {
    pub reason: String,
    pub author: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GreenWeightTrigger {
    pub cluster: String,
    pub at_least: Percent,
    /// Only this app's route; any route when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

/// A change in how matching app versions serve.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BehaviourChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colour: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Span>,
    /// Containers crash on start: pods never become Ready and keep restarting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_loop: Option<bool>,
}

/// Every node of a zone stops reporting (NotReady), and its pods with it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneOutage {
    pub cluster: String,
    pub zone: String,
}

/// Nodes go NotReady one by one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodesNotReady {
    pub cluster: String,
    pub count: u32,
    /// Fleet time between two nodes failing.
    #[serde(default = "default_every")]
    pub every: Span,
    /// Only nodes of this zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

fn default_every() -> Span {
    Span::from_mins(1)
}

/// The API server answers a share of requests with an error status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiErrors {
    pub cluster: String,
    /// 500, 503, 504 or 429 (with Retry-After).
    pub code: u16,
    #[serde(default = "all")]
    pub ratio: Percent,
}

fn all() -> Percent {
    Percent::HUNDRED
}

/// The API server answers slowly (wall-clock latency added to every request).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiLatency {
    pub cluster: String,
    pub latency: Span,
}

/// The API server cannot be reached.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiUnreachable {
    pub cluster: String,
    /// `refuse` (connections refused) or `close` (accepted, then closed).
    #[serde(default)]
    pub mode: UnreachableMode,
    /// The API server comes back restarted, its watch history gone: every
    /// watch resuming from before the outage gets 410 Expired and relists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarts: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum UnreachableMode {
    #[default]
    Refuse,
    Close,
}

impl Scenario {
    pub(super) fn check_event(&self, e: &EventSpec) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let triggers = [
            e.after.is_some(),
            e.when_green_weight.is_some(),
            e.when_release_step.is_some(),
        ];
        if triggers.iter().filter(|t| **t).count() != 1 {
            out.push((
                String::new(),
                "give exactly one of `after`, `whenGreenWeight`, `whenReleaseStep`".into(),
            ));
        }
        let effects = [
            e.behaviour.is_some(),
            e.zone_outage.is_some(),
            e.nodes_not_ready.is_some(),
            e.api_errors.is_some(),
            e.api_latency.is_some(),
            e.api_unreachable.is_some(),
            e.deploy_freeze.is_some(),
        ];
        if effects.iter().filter(|t| **t).count() != 1 {
            out.push((
                String::new(),
                "give exactly one of `behaviour`, `zoneOutage`, `nodesNotReady`, `apiErrors`, `apiLatency`, `apiUnreachable`, `deployFreeze`".into(),
            ));
        }
        if let Some(t) = &e.when_green_weight {
            self.known(&mut out, "whenGreenWeight", &t.cluster);
        }
        if let Some(c) = e.behaviour.as_ref().and_then(|b| b.cluster.as_ref()) {
            self.known(&mut out, "behaviour", c);
        }
        if let Some(z) = &e.zone_outage
            && let Some(c) = self.known(&mut out, "zoneOutage", &z.cluster)
        {
            check_zone(c, &z.zone, ".zoneOutage.zone", &mut out);
        }
        if let Some(n) = &e.nodes_not_ready
            && let Some(c) = self.known(&mut out, "nodesNotReady", &n.cluster)
            && let Some(zone) = &n.zone
        {
            check_zone(c, zone, ".nodesNotReady.zone", &mut out);
        }
        if let Some(a) = &e.api_errors {
            self.known(&mut out, "apiErrors", &a.cluster);
            if !matches!(a.code, 429 | 500 | 502 | 503 | 504) {
                out.push((
                    ".apiErrors.code".into(),
                    format!("{} is not one of 429, 500, 502, 503, 504", a.code),
                ));
            }
        }
        if let Some(a) = &e.api_latency {
            self.known(&mut out, "apiLatency", &a.cluster);
        }
        if let Some(a) = &e.api_unreachable {
            self.known(&mut out, "apiUnreachable", &a.cluster);
        }
        out
    }

    /// The cluster an event names, or an error saying it is not in the fleet.
    fn known(
        &self,
        out: &mut Vec<(String, String)>,
        field: &str,
        name: &str,
    ) -> Option<&ClusterSpec> {
        let c = self.cluster(name);
        if c.is_none() {
            out.push((
                format!(".{field}.cluster"),
                format!("cluster {name:?} is not one of the scenario's clusters"),
            ));
        }
        c
    }
}

fn check_zone(c: &ClusterSpec, zone: &str, field: &str, out: &mut Vec<(String, String)>) {
    if !c.zones.iter().any(|z| z == zone) {
        out.push((
            field.into(),
            format!(
                "zone {zone:?} is not one of {}'s zones ({})",
                c.name,
                c.zones.join(", ")
            ),
        ));
    }
}
