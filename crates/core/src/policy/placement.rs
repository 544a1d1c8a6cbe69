//! Live placement: where green's pods actually run, zone by zone, against
//! the tier's spread and zone-loss rules. Pure math over a snapshot.
//!
//! A pod counts only if it is green's, Running and Ready, not terminating,
//! and on a Ready node in one of the cluster's declared zones. A zone is
//! capacity for green only through nodes green can be scheduled on: Ready,
//! not cordoned, in a declared zone, with every NoSchedule and NoExecute taint
//! tolerated, and matching the template's nodeSelector and required node
//! affinity (`can_host`, the scheduler's own filters).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, PodSpec, Taint};

use crate::spec::policy::PlacementRules;

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct NodeInfo {
    pub name: String,
    pub zone: Option<String>,
    pub ready: bool,
    pub schedulable: bool,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

/// Whether the scheduler could put a pod of `pod` on `node`: not cordoned,
/// its NoSchedule and NoExecute taints tolerated, its labels matching the
/// nodeSelector and one term of the required node affinity
/// (kube-scheduler's NodeUnschedulable, TaintToleration and NodeAffinity filters).
pub fn can_host(pod: &PodSpec, node: &NodeInfo) -> bool {
    if !node.schedulable {
        return false;
    }
    let tolerations = pod.tolerations.as_deref().unwrap_or_default();
    let tolerated = |t: &Taint| {
        tolerations.iter().any(|tol| {
            let effect = tol
                .effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == t.effect);
            let key = match tol.key.as_deref() {
                None | Some("") => tol.operator.as_deref() == Some("Exists"),
                Some(k) => k == t.key,
            };
            let value = match tol.operator.as_deref() {
                Some("Exists") => true,
                _ => {
                    tol.value.as_deref().unwrap_or_default()
                        == t.value.as_deref().unwrap_or_default()
                }
            };
            effect && key && value
        })
    };
    if node
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .any(|t| !tolerated(t))
    {
        return false;
    }
    if let Some(selector) = &pod.node_selector
        && selector.iter().any(|(k, v)| node.labels.get(k) != Some(v))
    {
        return false;
    }
    let required = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(required) = required {
        let term_matches = |term: &k8s_openapi::api::core::v1::NodeSelectorTerm| {
            let exprs = term.match_expressions.as_deref().unwrap_or_default();
            let fields = term.match_fields.as_deref().unwrap_or_default();
            (!exprs.is_empty() || !fields.is_empty())
                && exprs
                    .iter()
                    .all(|r| requirement(r, node.labels.get(&r.key)))
                && fields
                    .iter()
                    .all(|r| r.key == "metadata.name" && requirement(r, Some(&node.name)))
        };
        if !required.node_selector_terms.iter().any(term_matches) {
            return false;
        }
    }
    true
}

fn requirement(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// A pod as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    /// Whether it belongs to the release's green revision.
    pub green: bool,
    pub running: bool,
    pub ready: bool,
    pub terminating: bool,
    pub node: Option<String>,
}

/// Green pods per zone in one cluster, and what the tier makes of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementReport {
    /// Counted pods per eligible zone (zones with a Ready, schedulable node), zeros included.
    pub zones: BTreeMap<String, u32>,
    /// Declared zones with no Ready schedulable node: an infrastructure problem.
    pub zones_without_nodes: Vec<String>,
    pub counted: u32,
    pub desired: u32,
    pub skew: u32,
    /// Pods left if the busiest zone is lost.
    pub left_after_zone_loss: u32,
    /// Every rule that does not hold, in words.
    pub violations: Vec<String>,
}

impl PlacementReport {
    pub fn satisfied(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn summary(&self) -> String {
        let zones: Vec<_> = self.zones.iter().map(|(z, n)| format!("{z}={n}")).collect();
        let mut s = format!(
            "green pods per zone {} ({}/{} counted)",
            zones.join(" "),
            self.counted,
            self.desired
        );
        if !self.violations.is_empty() {
            s.push_str(": ");
            s.push_str(&self.violations.join("; "));
        }
        s
    }
}

/// Evaluates green's live placement in one cluster; `pod` is green's pod
/// spec, whose tolerations, nodeSelector and affinity decide which nodes are
/// capacity for it.
pub fn evaluate(
    rules: &PlacementRules,
    declared_zones: &[String],
    pod: &PodSpec,
    desired: u32,
    nodes: &[NodeInfo],
    pods: &[PodInfo],
) -> PlacementReport {
    // With no zones declared every zone counts; otherwise only declared ones.
    let declared = |z: &str| declared_zones.is_empty() || declared_zones.iter().any(|d| d == z);
    let eligible_node =
        |n: &&NodeInfo| n.ready && n.zone.as_deref().is_some_and(declared) && can_host(pod, n);
    let mut zones: BTreeMap<String, u32> = BTreeMap::new();
    for n in nodes.iter().filter(eligible_node) {
        zones.insert(n.zone.clone().unwrap_or_default(), 0);
    }
    let ready_zone: BTreeMap<&str, &str> = nodes
        .iter()
        .filter(|n| n.ready)
        .filter_map(|n| Some((n.name.as_str(), n.zone.as_deref()?)))
        .collect();
    let mut counted = 0;
    let mut undeclared: BTreeMap<&str, u32> = BTreeMap::new();
    for p in pods
        .iter()
        .filter(|p| p.green && p.running && p.ready && !p.terminating)
    {
        let Some(zone) = p.node.as_deref().and_then(|n| ready_zone.get(n)) else {
            continue;
        };
        if !declared(zone) {
            *undeclared.entry(zone).or_default() += 1;
            continue;
        }
        *zones.entry(zone.to_string()).or_default() += 1;
        counted += 1;
    }
    let zones_without_nodes: Vec<_> = declared_zones
        .iter()
        .filter(|z| !zones.contains_key(*z))
        .cloned()
        .collect();
    let max = zones.values().copied().max().unwrap_or(0);
    let min = zones.values().copied().min().unwrap_or(0);
    let skew = max - min;
    let mut violations = Vec::new();
    if counted < desired {
        violations.push(format!(
            "only {counted} of {desired} green pods run ready on ready nodes in a zone"
        ));
    }
    if skew > rules.zone_spread.max_skew {
        violations.push(format!(
            "zone skew {skew} exceeds {}",
            rules.zone_spread.max_skew
        ));
    }
    let represented = zones.values().filter(|n| **n > 0).count() as u32;
    let should = (zones.len() as u32).min(desired);
    if represented < should {
        let empty: Vec<_> = zones
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(z, _)| z.as_str())
            .collect();
        violations.push(format!("no green pod in zone {}", empty.join(", ")));
    }
    let left = counted - max;
    if let Some(zl) = &rules.zone_loss
        && left < zl.min_replicas_left
    {
        violations.push(format!(
            "losing the busiest zone would leave {left} green pods, fewer than the {} the tier requires",
            zl.min_replicas_left
        ));
    }
    if !zones_without_nodes.is_empty() {
        violations.push(format!(
            "declared zone {} has no ready node green can be scheduled on: its nodes are down, cordoned or tainted (infrastructure), or do not match green's tolerations, nodeSelector or node affinity (the manifest)",
            zones_without_nodes.join(", ")
        ));
    }
    if !undeclared.is_empty() {
        let pods: Vec<String> = undeclared
            .iter()
            .map(|(z, n)| format!("{n} in {z}"))
            .collect();
        violations.push(format!(
            "green pods in zones the fleet file does not declare do not count toward spread: {}",
            pods.join(", ")
        ));
    }
    PlacementReport {
        zones,
        zones_without_nodes,
        counted,
        desired,
        skew,
        left_after_zone_loss: left,
        violations,
    }
}

/// Across clusters: the share of the fleet's counted pods left after losing
/// any one physical zone (zone names mapped through the fleet file, since the
/// same name in two cloud accounts may be different places). Returns the
/// worst physical zone and the share left, or `None` for an empty fleet.
pub fn fleet_zone_loss(
    clusters: &[(&crate::spec::FleetCluster, &PlacementReport)],
) -> Option<(String, crate::spec::Percent)> {
    let total: u32 = clusters.iter().map(|(_, r)| r.counted).sum();
    if total == 0 {
        return None;
    }
    let mut lost: BTreeMap<String, u32> = BTreeMap::new();
    for (fc, r) in clusters {
        for (zone, n) in &r.zones {
            *lost.entry(fc.physical_zone(zone).to_string()).or_default() += n;
        }
    }
    let (zone, worst) = lost.into_iter().max_by_key(|(_, n)| *n)?;
    let left = ((u64::from(total - worst) * 10_000) / u64::from(total)) as u32;
    Some((zone, crate::spec::Percent::from_basis_points(left)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TierPolicyFile;

    fn rules() -> PlacementRules {
        TierPolicyFile::builtin()
            .tier("tier-1")
            .unwrap()
            .placement
            .clone()
    }

    fn nodes(zones: &[&str]) -> Vec<NodeInfo> {
        zones
            .iter()
            .enumerate()
            .map(|(i, z)| NodeInfo {
                name: format!("n{i}"),
                zone: Some(z.to_string()),
                ready: true,
                schedulable: true,
                ..Default::default()
            })
            .collect()
    }

    fn pods(on: &[usize]) -> Vec<PodInfo> {
        on.iter()
            .enumerate()
            .map(|(i, n)| PodInfo {
                name: format!("p{i}"),
                green: true,
                running: true,
                ready: true,
                terminating: false,
                node: Some(format!("n{n}")),
            })
            .collect()
    }

    fn zones3() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn spreads() {
        let n = nodes(&["a", "b", "c"]);
        // (pods on nodes, desired, satisfied)
        let cases: [(&[usize], u32, bool); 5] = [
            (&[0, 1, 2, 0, 1, 2], 6, true),
            (&[0, 0, 1, 2], 4, true),  // [2,1,1]
            (&[0, 0, 1, 1], 4, false), // [2,2,0] with c eligible
            (&[0, 1, 2], 3, true),
            (&[0, 1, 2, 0], 6, false), // two missing
        ];
        for (on, desired, ok) in cases {
            let r = evaluate(
                &rules(),
                &zones3(),
                &PodSpec::default(),
                desired,
                &n,
                &pods(on),
            );
            assert_eq!(r.satisfied(), ok, "{on:?}: {}", r.summary());
        }
    }

    #[test]
    fn only_green_ready_pods_on_ready_zoned_nodes_count() {
        let mut n = nodes(&["a", "b", "c", "c"]);
        n[3].ready = false; // n3 in c went NotReady
        let mut p = pods(&[0, 1, 3]);
        let r = evaluate(&rules(), &zones3(), &PodSpec::default(), 3, &n, &p);
        assert_eq!(
            r.counted, 2,
            "a pod still marked Ready on a NotReady node does not count"
        );
        assert!(
            r.summary().contains("no green pod in zone c"),
            "{}",
            r.summary()
        );
        p.push(PodInfo {
            green: false,
            ..p[0].clone()
        });
        p[2].node = Some("n2".into());
        let r = evaluate(&rules(), &zones3(), &PodSpec::default(), 3, &n, &p);
        assert!(r.satisfied(), "blue pods are not counted: {}", r.summary());
        assert_eq!(r.counted, 3);
    }

    #[test]
    fn fleet_zone_loss_follows_physical_zones() {
        let fleet = crate::spec::Fleet::parse(
            "f",
            include_str!("../../../../examples/checkout/fleet.yaml"),
        )
        .unwrap();
        let (a, b) = (
            fleet.cluster("prod-a").unwrap(),
            fleet.cluster("prod-b").unwrap(),
        );
        let mut fa = a.clone();
        let mut fb = b.clone();
        let n = |zones: &[&str]| nodes(zones);
        let ra = evaluate(
            &rules(),
            &fa.zones,
            &PodSpec::default(),
            6,
            &n(&["eu-west-1a", "eu-west-1b", "eu-west-1c"]),
            &pods(&[0, 1, 2, 0, 1, 2]),
        );
        let rb = evaluate(
            &rules(),
            &fb.zones,
            &PodSpec::default(),
            6,
            &n(&["eu-central-1a", "eu-central-1b", "eu-central-1c"]),
            &pods(&[0, 1, 2, 0, 1, 2]),
        );
        // Distinct places everywhere: losing one zone costs 2 of 12 pods.
        let (_, left) = fleet_zone_loss(&[(&fa, &ra), (&fb, &rb)]).unwrap();
        assert_eq!(left.basis_points(), 8333);
        // Two zone names that are one physical place lose together.
        fa.physical_zones
            .insert("eu-west-1a".into(), "shared-az".into());
        fb.physical_zones
            .insert("eu-central-1a".into(), "shared-az".into());
        let (zone, left) = fleet_zone_loss(&[(&fa, &ra), (&fb, &rb)]).unwrap();
        assert_eq!((zone.as_str(), left.basis_points()), ("shared-az", 6666));
    }

    #[test]
    fn pods_on_a_node_without_a_zone_label_do_not_count() {
        let mut n = nodes(&["a", "b", "c", "c"]);
        n[3].zone = None;
        let r = evaluate(
            &rules(),
            &zones3(),
            &PodSpec::default(),
            3,
            &n,
            &pods(&[0, 1, 3]),
        );
        assert_eq!(r.counted, 2);
        assert_eq!(
            r.zones.get("c"),
            Some(&0),
            "c still has an eligible node, so it counts as empty"
        );
        assert!(!r.satisfied(), "{}", r.summary());
    }

    #[test]
    fn a_declared_zone_without_nodes_is_an_infrastructure_finding() {
        let n = nodes(&["a", "b"]);
        let r = evaluate(
            &rules(),
            &zones3(),
            &PodSpec::default(),
            2,
            &n,
            &pods(&[0, 1]),
        );
        assert_eq!(r.zones_without_nodes, vec!["c".to_string()]);
        assert!(r.summary().contains("infrastructure"), "{}", r.summary());
    }

    #[test]
    fn a_zone_the_fleet_does_not_declare_never_counts_toward_spread() {
        // Pods in a, b and an undeclared d: d is neither capacity nor spread.
        let n = nodes(&["a", "b", "c", "d"]);
        let r = evaluate(
            &rules(),
            &zones3(),
            &PodSpec::default(),
            3,
            &n,
            &pods(&[0, 1, 3]),
        );
        assert_eq!(r.counted, 2);
        assert!(!r.zones.contains_key("d"), "{:?}", r.zones);
        assert!(
            r.summary().contains(
                "zones the fleet file does not declare do not count toward spread: 1 in d"
            ),
            "{}",
            r.summary()
        );
        assert!(!r.satisfied());
    }

    fn spec(yaml: &str) -> PodSpec {
        crate::spec::Source::new("pod.yaml", yaml).decode().unwrap()
    }

    #[test]
    fn tainted_nodes_and_nodes_green_does_not_select_are_no_capacity() {
        let mut n = nodes(&["a", "b", "c"]);
        n[2].taints = vec![Taint {
            key: "dedicated".into(),
            value: Some("batch".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        }];
        let plain = PodSpec::default();
        let r = evaluate(&rules(), &zones3(), &plain, 2, &n, &pods(&[0, 1]));
        assert_eq!(
            r.zones_without_nodes,
            vec!["c".to_string()],
            "{}",
            r.summary()
        );
        let tolerant = spec(
            "containers: []\ntolerations:\n  - key: dedicated\n    operator: Equal\n    value: batch\n    effect: NoSchedule\n",
        );
        let r = evaluate(&rules(), &zones3(), &tolerant, 3, &n, &pods(&[0, 1, 2]));
        assert!(
            r.zones_without_nodes.is_empty() && r.satisfied(),
            "{}",
            r.summary()
        );
        // A PreferNoSchedule taint does not keep pods off.
        n[2].taints[0].effect = "PreferNoSchedule".into();
        assert!(can_host(&plain, &n[2]));
        // nodeSelector and required node affinity.
        for (i, node) in n.iter_mut().enumerate() {
            node.taints.clear();
            node.labels
                .insert("disk".into(), if i == 0 { "hdd" } else { "ssd" }.into());
        }
        let ssd = spec("containers: []\nnodeSelector:\n  disk: ssd\n");
        assert_eq!(
            evaluate(&rules(), &zones3(), &ssd, 2, &n, &pods(&[1, 2])).zones_without_nodes,
            vec!["a".to_string()]
        );
        let affinity = spec(
            "containers: []\naffinity:\n  nodeAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n      nodeSelectorTerms:\n        - matchExpressions:\n            - key: disk\n              operator: NotIn\n              values: [ssd]\n",
        );
        assert!(can_host(&affinity, &n[0]) && !can_host(&affinity, &n[1]));
        let mut cordoned = n[0].clone();
        cordoned.schedulable = false;
        assert!(!can_host(&plain, &cordoned));
    }
}
