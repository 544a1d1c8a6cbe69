//! Resolving a Release against its fleet and tier: every default filled in from
//! the tier, every override checked against the tier's bounds, every cluster
//! name checked against the fleet. The result is what the engine runs on.

mod clusters;
mod template;
mod timings;

use clusters::{check_replica_ratio_canary, resolve_clusters};
use template::{check_label_value, resolve_template};
use timings::{check_gates, resolve_timings};

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::fleet::Fleet;
use super::release::{
    AbortRequest, ClusterRole, PromoteRequest, ReleaseSpec, RouterKind, RouterSpec,
};
use super::source::{InputError, Source};
use crate::spec::policy::{LaterClusters, Tier, TierPolicyFile};
use crate::spec::quantity::{Percent, Span};

/// A release with every value decided.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedRelease {
    pub name: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    pub tier_name: String,
    pub tier: Tier,
    pub clusters: Vec<ResolvedCluster>,
    pub timings: Timings,
    /// The pod template with image overrides applied.
    pub template: PodTemplateSpec,
    pub gates: Vec<crate::spec::gates::MetricGate>,
    pub hooks: Vec<crate::spec::hooks::Hook>,
    pub disruption_budget: Option<super::release::DisruptionBudget>,
    pub paused: bool,
    pub override_freezes: Option<super::release::FreezeOverride>,
    pub promote: Option<PromoteRequest>,
    pub abort: Option<AbortRequest>,
    /// The earlier revision this release brings back (an undo of this version).
    pub undo_of: Option<crate::spec::release::UndoOf>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedCluster {
    pub name: String,
    pub role: ClusterRole,
    pub replicas: u32,
    /// Share of global traffic this cluster carries.
    pub traffic_share: Percent,
    pub router: ResolvedRouter,
    pub zones: Vec<String>,
    pub context: Option<String>,
}

impl ResolvedCluster {
    /// Green's size before it takes traffic: full size behind a route; none
    /// behind a replica-ratio Service, where its size is its traffic.
    pub fn deploy_replicas(&self) -> u32 {
        match self.router.kind {
            RouterKind::GatewayHttpRoute => self.replicas,
            RouterKind::ReplicaRatio => 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedRouter {
    pub kind: RouterKind,
    pub route: String,
    pub port: u16,
}

/// The rollout's timings, from the tier's defaults and the release's choices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timings {
    /// Canary weight as a share of total traffic.
    pub canary_weight: Percent,
    pub canary_duration: Span,
    /// Ramp step as a share of the first production cluster's traffic.
    pub ramp_step: Percent,
    pub ramp_interval: Span,
    pub soak: Span,
    pub staging_verify: Span,
    pub bake: Span,
    pub progress_deadline: Span,
    pub later_clusters: LaterClusters,
}

/// What is wrong with a release, and whether it breaks the tier's rules
/// (a policy refusal) or is simply malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Field path from the document root, e.g. `spec.plan.soak`.
    pub field: String,
    pub problem: String,
    pub breaks_policy: bool,
}

impl Finding {
    fn input(field: impl Into<String>, problem: impl Into<String>) -> Finding {
        Finding {
            field: field.into(),
            problem: problem.into(),
            breaks_policy: false,
        }
    }
    fn policy(field: impl Into<String>, problem: impl Into<String>) -> Finding {
        Finding {
            field: field.into(),
            problem: problem.into(),
            breaks_policy: true,
        }
    }

    /// The finding placed in the document it came from.
    pub fn locate(&self, src: &Source) -> InputError {
        src.error_at(&self.field, &self.problem)
    }
}

impl ResolvedRelease {
    /// The image each container runs, by container name.
    pub fn images(&self) -> std::collections::BTreeMap<String, String> {
        self.template
            .spec
            .iter()
            .flat_map(|p| p.containers.iter())
            .filter_map(|c| Some((c.name.clone(), c.image.clone()?)))
            .collect()
    }

    /// Resolves `spec` (named `name` in `namespace`) against the fleet and tier policy.
    /// Returns every problem found, not only the first.
    pub fn resolve(
        name: &str,
        namespace: Option<&str>,
        spec: &ReleaseSpec,
        fleet: &Fleet,
        policy: &TierPolicyFile,
    ) -> Result<ResolvedRelease, Vec<Finding>> {
        let mut out = Vec::new();
        if let Err(e) = crate::spec::check_dns_label(name) {
            out.push(Finding::input("metadata.name", e));
        }
        if let Err(e) = crate::spec::check_dns_label(&spec.app)
            .and_then(|()| crate::spec::check_slot_names(&spec.app))
        {
            out.push(Finding::input("spec.app", e));
        }
        if let Err(e) = check_label_value(&spec.version) {
            out.push(Finding::input("spec.version", e));
        }
        if spec.replicas == 0 {
            out.push(Finding::input("spec.replicas", "must be at least 1"));
        }
        let tier = match policy.tier(&spec.tier) {
            Ok(t) => Some(t),
            Err(e) => {
                out.push(Finding::input("spec.tier", e));
                None
            }
        };
        let template = resolve_template(spec, &mut out);
        let clusters = resolve_clusters(spec, fleet, &mut out);
        let timings = tier.and_then(|t| resolve_timings(spec, t, &clusters, &mut out));
        check_gates(&spec.gates, &mut out);
        let names: Vec<&str> = spec.clusters.iter().map(|c| c.name.as_str()).collect();
        for (field, problem) in crate::spec::hooks::check(&spec.hooks, &names) {
            out.push(Finding::input(field, problem));
        }
        if let (Some(tier), Some(timings)) = (tier, timings.as_ref()) {
            check_replica_ratio_canary(spec, tier, timings, &clusters, &mut out);
        }
        match (tier, template, timings) {
            (Some(tier), Some(template), Some(timings)) if out.is_empty() => Ok(ResolvedRelease {
                name: name.to_string(),
                namespace: namespace.unwrap_or("default").to_string(),
                app: spec.app.clone(),
                version: spec.version.clone(),
                tier_name: spec.tier.clone(),
                tier: tier.clone(),
                clusters,
                timings,
                template,
                gates: spec.gates.clone(),
                hooks: spec.hooks.clone(),
                disruption_budget: spec.disruption_budget.clone(),
                paused: spec.paused,
                override_freezes: spec.override_freezes.clone(),
                promote: spec.promote.clone(),
                abort: spec.abort.clone(),
                undo_of: spec.undo_of.clone().filter(|u| u.version == spec.version),
            }),
            _ => Err(out),
        }
    }

    /// The first production cluster: where the canary and the ramp happen.
    pub fn first_production(&self) -> &ResolvedCluster {
        self.clusters
            .iter()
            .find(|c| c.role == ClusterRole::Production)
            .expect("resolution guarantees a production cluster")
    }

    pub fn cluster(&self, name: &str) -> Option<&ResolvedCluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The names of the release's clusters, in plan order.
    pub fn cluster_names(&self) -> Vec<&str> {
        self.clusters.iter().map(|c| c.name.as_str()).collect()
    }

    /// The canary weight on the first production cluster: the canary's share of
    /// total traffic divided by that cluster's share.
    pub fn canary_weight_on_first(&self) -> Percent {
        self.timings
            .canary_weight
            .within(self.first_production().traffic_share)
            .expect("resolution guarantees a non-zero traffic share")
    }
}
