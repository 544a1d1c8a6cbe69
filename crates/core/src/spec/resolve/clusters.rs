//! The release's clusters against the fleet: roles, replicas, zones, routers.

use super::*;

pub(super) fn resolve_clusters(
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
        if router.route.is_empty() || crate::spec::check_dns_label(&router.route).is_err() {
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
pub(super) fn check_replica_ratio_canary(
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
    let g = crate::spec::quantity::green_count(wanted, n, n);
    let of_cluster = crate::spec::quantity::share(g, n);
    let of_total = of_cluster.of(first.traffic_share);
    if of_total <= max {
        return;
    }
    // The fewest blue pods that bring one green pod within the bound.
    let needed = (1..=10_000u32)
        .find(|b| crate::spec::quantity::share(1, *b).of(first.traffic_share) <= max)
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
