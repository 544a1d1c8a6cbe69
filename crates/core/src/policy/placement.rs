//! Live placement: where green's pods actually run, zone by zone, against
//! the tier's spread and zone-loss rules. Pure math over a snapshot.
//!
//! A pod counts only if it is green's, Running and Ready, not terminating,
//! and on a Ready node that carries a zone label.

use std::collections::BTreeMap;

use crate::spec::policy::PlacementRules;

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub zone: Option<String>,
    pub ready: bool,
    pub schedulable: bool,
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

/// Evaluates green's live placement in one cluster.
pub fn evaluate(
    rules: &PlacementRules,
    declared_zones: &[String],
    desired: u32,
    nodes: &[NodeInfo],
    pods: &[PodInfo],
) -> PlacementReport {
    let eligible_node = |n: &&NodeInfo| n.ready && n.schedulable && n.zone.is_some();
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
    for p in pods
        .iter()
        .filter(|p| p.green && p.running && p.ready && !p.terminating)
    {
        let Some(zone) = p.node.as_deref().and_then(|n| ready_zone.get(n)) else {
            continue;
        };
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
            "declared zone {} has no ready schedulable node (infrastructure, not the manifest)",
            zones_without_nodes.join(", ")
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
            let r = evaluate(&rules(), &zones3(), desired, &n, &pods(on));
            assert_eq!(r.satisfied(), ok, "{on:?}: {}", r.summary());
        }
    }

    #[test]
    fn only_green_ready_pods_on_ready_zoned_nodes_count() {
        let mut n = nodes(&["a", "b", "c", "c"]);
        n[3].ready = false; // n3 in c went NotReady
        let mut p = pods(&[0, 1, 3]);
        let r = evaluate(&rules(), &zones3(), 3, &n, &p);
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
        let r = evaluate(&rules(), &zones3(), 3, &n, &p);
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
            6,
            &n(&["eu-west-1a", "eu-west-1b", "eu-west-1c"]),
            &pods(&[0, 1, 2, 0, 1, 2]),
        );
        let rb = evaluate(
            &rules(),
            &fb.zones,
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
        let r = evaluate(&rules(), &zones3(), 3, &n, &pods(&[0, 1, 3]));
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
        let r = evaluate(&rules(), &zones3(), 2, &n, &pods(&[0, 1]));
        assert_eq!(r.zones_without_nodes, vec!["c".to_string()]);
        assert!(r.summary().contains("infrastructure"), "{}", r.summary());
    }
}
