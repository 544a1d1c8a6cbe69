//! Resolving a Release against its fleet and tier: every default filled in from
//! the tier, every override checked against the tier's bounds, every cluster
//! name checked against the fleet. The result is what the engine runs on.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::fleet::Fleet;
use super::policy::{LaterClusters, Tier, TierPolicyFile};
use super::quantity::{Percent, Span};
use super::release::{
    AbortRequest, ClusterRole, PromoteRequest, ReleaseSpec, RouterKind, RouterSpec,
};
use super::source::{InputError, Source};

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
    pub gates: Vec<super::gates::MetricGate>,
    pub disruption_budget: Option<super::release::DisruptionBudget>,
    pub paused: bool,
    pub override_freezes: Option<super::release::FreezeOverride>,
    pub promote: Option<PromoteRequest>,
    pub abort: Option<AbortRequest>,
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
        if let Err(e) = super::check_dns_label(name) {
            out.push(Finding::input("metadata.name", e));
        }
        if let Err(e) = super::check_dns_label(&spec.app) {
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
                disruption_budget: spec.disruption_budget.clone(),
                paused: spec.paused,
                override_freezes: spec.override_freezes.clone(),
                promote: spec.promote.clone(),
                abort: spec.abort.clone(),
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

    /// The canary weight on the first production cluster: the canary's share of
    /// total traffic divided by that cluster's share.
    pub fn canary_weight_on_first(&self) -> Percent {
        self.timings
            .canary_weight
            .within(self.first_production().traffic_share)
            .expect("resolution guarantees a non-zero traffic share")
    }
}

fn check_label_value(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} cannot be a label value: use 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn resolve_template(spec: &ReleaseSpec, out: &mut Vec<Finding>) -> Option<PodTemplateSpec> {
    let w = &spec.workload;
    let (mut template, at) = match (&w.template, &w.deployment) {
        (Some(t), None) => (t.clone(), "spec.workload.template"),
        (None, Some(d)) => match d.spec.as_ref().map(|s| s.template.clone()) {
            Some(t) => (t, "spec.workload.deployment.spec.template"),
            None => {
                out.push(Finding::input(
                    "spec.workload.deployment",
                    "the Deployment has no `spec.template`",
                ));
                return None;
            }
        },
        (Some(_), Some(_)) => {
            out.push(Finding::input(
                "spec.workload",
                "set either `template` or `deployment`, not both",
            ));
            return None;
        }
        (None, None) => {
            out.push(Finding::input(
                "spec.workload",
                "say what to run: set `template` (a pod template) or `deployment` (a Deployment manifest)",
            ));
            return None;
        }
    };
    let Some(pod) = template.spec.as_mut() else {
        out.push(Finding::input(at, "the pod template has no `spec`"));
        return None;
    };
    if pod.containers.is_empty() {
        out.push(Finding::input(
            format!("{at}.spec.containers"),
            "at least one container is required",
        ));
        return None;
    }
    let mut known = BTreeSet::new();
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        known.insert(c.name.clone());
    }
    for (name, image) in &spec.images {
        if !known.contains(name) {
            let list: Vec<_> = known.iter().map(String::as_str).collect();
            out.push(Finding::input(
                format!("spec.images.{name}"),
                format!(
                    "no container named {name:?} in the workload; containers are {}",
                    list.join(", ")
                ),
            ));
            continue;
        }
        if image.trim().is_empty() {
            out.push(Finding::input(
                format!("spec.images.{name}"),
                "the image must not be empty",
            ));
        }
        for c in pod
            .containers
            .iter_mut()
            .chain(pod.init_containers.iter_mut().flatten())
        {
            if &c.name == name {
                c.image = Some(image.clone());
            }
        }
    }
    for (i, c) in pod.containers.iter().enumerate() {
        if c.image.as_deref().is_none_or(|s| s.trim().is_empty()) {
            out.push(Finding::input(
                format!("{at}.spec.containers[{i}].image"),
                format!(
                    "container {:?} has no image; set it here or in `spec.images`",
                    c.name
                ),
            ));
        }
    }
    Some(template)
}

fn resolve_clusters(
    spec: &ReleaseSpec,
    fleet: &Fleet,
    out: &mut Vec<Finding>,
) -> Vec<ResolvedCluster> {
    let mut clusters = Vec::new();
    let mut seen = BTreeSet::new();
    let mut seen_production = false;
    if spec.clusters.is_empty() {
        out.push(Finding::input(
            "spec.clusters",
            "list the clusters to roll out to, in order",
        ));
    }
    for (i, target) in spec.clusters.iter().enumerate() {
        let at = format!("spec.clusters[{i}]");
        if !seen.insert(target.name.as_str()) {
            out.push(Finding::input(
                format!("{at}.name"),
                format!("cluster {:?} is listed twice", target.name),
            ));
            continue;
        }
        let Some(fc) = fleet.cluster(&target.name) else {
            let known: Vec<_> = fleet.clusters.iter().map(|c| c.name.as_str()).collect();
            out.push(Finding::input(
                format!("{at}.name"),
                format!(
                    "cluster {:?} is not in the fleet; the fleet has {}",
                    target.name,
                    known.join(", ")
                ),
            ));
            continue;
        };
        match target.role {
            ClusterRole::Production => seen_production = true,
            ClusterRole::Staging if seen_production => out.push(Finding::input(
                format!("{at}.role"),
                "staging clusters must come before every production cluster",
            )),
            ClusterRole::Staging => {}
        }
        let replicas = target.replicas.unwrap_or(spec.replicas);
        if replicas == 0 {
            out.push(Finding::input(
                format!("{at}.replicas"),
                "must be at least 1",
            ));
        }
        let traffic_share = target.traffic_share.unwrap_or(fc.traffic_share);
        if traffic_share > Percent::HUNDRED {
            out.push(Finding::input(
                format!("{at}.trafficShare"),
                "must be at most 100%",
            ));
        }
        let router_spec = target.router.as_ref().or(spec.router.as_ref());
        let router = resolve_router(router_spec, &spec.app);
        if router.route.is_empty() || super::check_dns_label(&router.route).is_err() {
            let field = if target.router.is_some() {
                format!("{at}.router.route")
            } else {
                "spec.router.route".into()
            };
            out.push(Finding::input(
                field,
                format!("{:?} is not a valid route name", router.route),
            ));
        }
        clusters.push(ResolvedCluster {
            name: target.name.clone(),
            role: target.role,
            replicas,
            traffic_share,
            router,
            zones: fc.zones.clone(),
            context: fc.context.clone(),
        });
    }
    if !spec.clusters.is_empty() && !seen_production {
        out.push(Finding::input(
            "spec.clusters",
            "at least one cluster must have `role: production`",
        ));
    }
    clusters
}

/// A replica-ratio router moves whole pods: on the canary cluster one green
/// pod beside its blue pods must stay within the tier's canary bound.
fn check_replica_ratio_canary(
    spec: &ReleaseSpec,
    tier: &Tier,
    timings: &Timings,
    clusters: &[ResolvedCluster],
    out: &mut Vec<Finding>,
) {
    let Some((i, first)) = clusters
        .iter()
        .enumerate()
        .find(|(_, c)| c.role == ClusterRole::Production)
    else {
        return;
    };
    if first.router.kind != RouterKind::ReplicaRatio {
        return;
    }
    let Some(max) = tier.rollout.canary.weight.max else {
        return;
    };
    let Some(wanted) = timings.canary_weight.within(first.traffic_share) else {
        return;
    };
    let n = first.replicas;
    let g = super::quantity::green_count(wanted, n, n);
    let of_cluster = super::quantity::share(g, n);
    let of_total = of_cluster.of(first.traffic_share);
    if of_total <= max {
        return;
    }
    // The fewest blue pods that bring one green pod within the bound.
    let needed = (1..=10_000u32)
        .find(|b| super::quantity::share(1, *b).of(first.traffic_share) <= max)
        .unwrap_or(10_000);
    let field = if spec.clusters.get(i).is_some_and(|c| c.router.is_some()) {
        format!("spec.clusters[{i}].router.kind")
    } else {
        "spec.router.kind".to_string()
    };
    out.push(Finding::policy(
        field,
        format!(
            "with replicaRatio the smallest canary on {0} is {g} green pod beside {n} blue ones: \
             {of_cluster} of {0}'s traffic, {of_total} of all traffic, above the {1} canary limit of {max}; \
             give {0} at least {needed} replicas, or use gatewayHTTPRoute",
            first.name, spec.tier
        ),
    ));
}

fn resolve_router(spec: Option<&RouterSpec>, app: &str) -> ResolvedRouter {
    ResolvedRouter {
        kind: spec.map(|r| r.kind).unwrap_or_default(),
        route: spec
            .and_then(|r| r.route.clone())
            .unwrap_or_else(|| app.to_string()),
        port: spec.and_then(|r| r.port).unwrap_or(80),
    }
}

fn resolve_timings(
    spec: &ReleaseSpec,
    tier: &Tier,
    clusters: &[ResolvedCluster],
    out: &mut Vec<Finding>,
) -> Option<Timings> {
    let r = &tier.rollout;
    let p = &spec.plan;
    let before = out.len();
    let tier_name = &spec.tier;
    let mut pick_span = |b: &super::policy::Bounded<Span>, v: Option<Span>, field: &str| {
        b.pick(v).unwrap_or_else(|e| {
            out.push(Finding::policy(
                field,
                format!(
                    "{e} for {tier_name}; raise it or remove it to get the tier's default of {}",
                    b.default
                ),
            ));
            b.default
        })
    };
    let canary = p.canary.clone().unwrap_or_default();
    let ramp = p.ramp.clone().unwrap_or_default();
    let canary_duration = pick_span(
        &r.canary.duration,
        canary.duration,
        "spec.plan.canary.duration",
    );
    let ramp_interval = pick_span(&r.ramp.interval, ramp.interval, "spec.plan.ramp.interval");
    let soak = pick_span(&r.soak, p.soak, "spec.plan.soak");
    let staging_verify = pick_span(
        &r.staging_verify,
        p.staging_verify,
        "spec.plan.stagingVerify",
    );
    let bake = pick_span(&r.bake, p.bake, "spec.plan.bake");
    let progress_deadline = pick_span(
        &r.progress_deadline,
        p.progress_deadline,
        "spec.plan.progressDeadline",
    );
    let mut pick_weight =
        |b: &super::policy::Bounded<Percent>, v: Option<Percent>, field: &str, what: &str| {
            if v.is_some_and(|w| w == Percent::ZERO || w > Percent::HUNDRED) {
                out.push(Finding::input(
                    field,
                    format!("{what} must be above 0% and at most 100%"),
                ));
                return b.default;
            }
            b.pick(v).unwrap_or_else(|e| {
                out.push(Finding::policy(
                    field,
                    format!("{what} of {e} for {tier_name}"),
                ));
                b.default
            })
        };
    let canary_weight = pick_weight(
        &r.canary.weight,
        canary.weight,
        "spec.plan.canary.weight",
        "a canary (share of total traffic)",
    );
    let ramp_step = pick_weight(
        &r.ramp.step,
        ramp.step,
        "spec.plan.ramp.step",
        "a ramp step",
    );
    if let Some(first) = clusters.iter().find(|c| c.role == ClusterRole::Production) {
        match canary_weight.within(first.traffic_share) {
            None => out.push(Finding::input(
                "spec.clusters",
                format!("{} is the first production cluster but carries 0% of traffic; the canary needs traffic", first.name),
            )),
            Some(w) if w > Percent::HUNDRED => out.push(Finding::input(
                "spec.plan.canary.weight",
                format!(
                    "a canary of {canary_weight} of total traffic is more than {} carries ({}); lower the canary or start with a larger cluster",
                    first.name, first.traffic_share
                ),
            )),
            Some(_) => {}
        }
    }
    if out.len() != before {
        return None;
    }
    Some(Timings {
        canary_weight,
        canary_duration,
        ramp_step,
        ramp_interval,
        soak,
        staging_verify,
        bake,
        progress_deadline,
        later_clusters: p.later_clusters.unwrap_or(r.later_clusters),
    })
}

fn check_gates(gates: &[super::gates::MetricGate], out: &mut Vec<Finding>) {
    let mut names = BTreeSet::new();
    for (i, g) in gates.iter().enumerate() {
        let at = format!("spec.gates[{i}]");
        if !names.insert(g.name.as_str()) {
            out.push(Finding::input(
                format!("{at}.name"),
                format!("gate {:?} is listed twice", g.name),
            ));
        }
        let p = &g.provider;
        let n = [
            p.prometheus.is_some(),
            p.scrape.is_some(),
            p.cluster_health.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n != 1 {
            out.push(Finding::input(
                format!("{at}.provider"),
                "set exactly one of `prometheus`, `scrape` or `clusterHealth`",
            ));
        }
        if p.cluster_health.is_none() && g.max.is_none() && g.min.is_none() {
            out.push(Finding::input(
                at.clone(),
                "a metric needs a threshold: set `max`, `min` or both",
            ));
        }
        if let (Some(lo), Some(hi)) = (g.min, g.max)
            && lo > hi
        {
            out.push(Finding::input(
                format!("{at}.min"),
                format!("min {lo} is above max {hi}"),
            ));
        }
        if g.interval.as_duration().is_zero() {
            out.push(Finding::input(
                format!("{at}.interval"),
                "must be above zero",
            ));
        }
        if let Some(w) = g.window
            && (w.failures == 0 || w.failures > w.of)
        {
            out.push(Finding::input(
                format!("{at}.window"),
                "`failures` must be between 1 and `of`",
            ));
        }
        if let Some(s) = &p.scrape
            && s.measure == super::gates::ScrapeMeasure::Quantile
            && !s.quantile.is_some_and(|q| q > 0.0 && q < 1.0)
        {
            out.push(Finding::input(
                format!("{at}.provider.scrape.quantile"),
                "set a quantile between 0 and 1, e.g. 0.99",
            ));
        }
        if let Some(q) = &p.prometheus
            && q.query.trim().is_empty()
        {
            out.push(Finding::input(
                format!("{at}.provider.prometheus.query"),
                "the query is empty",
            ));
        }
    }
}
