//! Turns the watch caches into the engine's observation: slots, workloads,
//! route weights and green's live placement, cluster by cluster. Reads memory
//! only; no API requests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

use super::cache::{ClusterCache, FleetCache};
use super::replica_ratio;
use super::router::route_view;
use super::workload::{Colour, SlotWorkload, Slots, assign_slots};
use crate::engine::{ClusterView, Observation, PlacementView, WorkloadView};
use crate::labels;
use crate::policy::placement::{self, NodeInfo, PodInfo};
use crate::spec::{ResolvedCluster, ResolvedRelease, RouterKind};

/// An observation of every cluster, and the slot each cluster's green lives in.
pub struct Observed {
    pub observation: Observation,
    pub slots: BTreeMap<String, Slots>,
}

pub fn observe(
    rel: &ResolvedRelease,
    cache: &FleetCache,
    windows: &[crate::freeze::Window],
    now: jiff::Timestamp,
) -> Observed {
    let mut out = Observed {
        observation: Observation::default(),
        slots: BTreeMap::new(),
    };
    // The release's clusters, and the home cluster's record when home is not one of them.
    let sources = rel
        .clusters
        .iter()
        .map(|target| {
            let found = match cache.clusters.get(&target.name) {
                None => Err("no client for this cluster".to_string()),
                Some(cc) => cc.freezes_readable().map(|_| cc.freezes()),
            };
            (target.name.clone(), found)
        })
        .chain(
            cache
                .home_freezes
                .iter()
                .map(|(home, hf)| (home.clone(), hf.readable().map(|_| hf.freezes()))),
        );
    let mut freezes = Vec::new();
    for (cluster, found) in sources {
        match found {
            Ok(found) => freezes.extend(found.iter().map(|f| (**f).clone())),
            Err(why) => {
                out.observation.freezes.unreadable.insert(cluster, why);
            }
        }
    }
    out.observation.freezes.active = crate::freeze::applicable(rel, &freezes, windows, now);
    for target in &rel.clusters {
        let reachable = match cache.clusters.get(&target.name) {
            None => Err("no client for this cluster".to_string()),
            Some(cc) => cc.reachable().map(|_| cc),
        };
        let cc = match reachable {
            Ok(cc) => cc,
            Err(why) => {
                let view = ClusterView {
                    unreachable_because: Some(why),
                    ..ClusterView::default()
                };
                out.observation.clusters.insert(target.name.clone(), view);
                continue;
            }
        };
        let (view, slots) = cluster_view(rel, target, cc);
        out.observation.clusters.insert(target.name.clone(), view);
        out.slots.insert(target.name.clone(), slots);
    }
    out
}

fn cluster_view(
    rel: &ResolvedRelease,
    target: &ResolvedCluster,
    cc: &ClusterCache,
) -> (ClusterView, Slots) {
    let workloads: Vec<SlotWorkload> = cc.deployments().iter().map(|w| (**w).clone()).collect();
    let slots = assign_slots(&rel.version, &workloads);
    let to_view = |w: &SlotWorkload| WorkloadView {
        version: w.version.clone(),
        replicas: w.replicas,
        available: w.available,
    };
    let route = cc.route().map(|v| match target.router.kind {
        RouterKind::GatewayHttpRoute => route_view(&v, &rel.app, slots.green),
        RouterKind::ReplicaRatio => replica_ratio::service_view(&v, &rel.app, &slots),
    });
    // Behind a replica-ratio Service a partial green serves beside blue: the
    // placement that matters is that of every pod the Service selects.
    let serving_both = target.router.kind == RouterKind::ReplicaRatio
        && slots
            .green_workload
            .as_ref()
            .is_some_and(|g| g.replicas < target.replicas);
    let placement = match &slots.green_workload {
        None => PlacementView::Unknown,
        Some(_) => {
            let nodes: Vec<NodeInfo> = cc.nodes().iter().map(|n| node_info(n)).collect();
            let blue_version = slots.blue_workload.as_ref().map(|w| w.version.as_str());
            let pods: Vec<PodInfo> = cc
                .pods()
                .iter()
                .map(|p| {
                    let mut info = pod_info(p, slots.green, &rel.version);
                    if let (true, false, Some(v)) = (serving_both, info.green, blue_version) {
                        info.green = pod_info(p, slots.green.other(), v).green;
                    }
                    info
                })
                .collect();
            let desired = if serving_both {
                replica_ratio::serving_replicas(&slots)
            } else {
                target.replicas
            };
            let pod = rel.template.spec.clone().unwrap_or_default();
            let report = placement::evaluate(
                &rel.tier.placement,
                &target.zones,
                &pod,
                desired,
                &nodes,
                &pods,
            );
            if report.satisfied() {
                PlacementView::Satisfied
            } else {
                PlacementView::Unsatisfied(report.summary())
            }
        }
    };
    let view = ClusterView {
        reachable: true,
        unreachable_because: None,
        green: slots.green_workload.as_ref().map(to_view),
        blue: slots.blue_workload.as_ref().map(to_view),
        route,
        placement,
    };
    (view, slots)
}

pub fn node_info(n: &Node) -> NodeInfo {
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    NodeInfo {
        name: n.name_any(),
        zone: n.labels().get(labels::ZONE).cloned(),
        ready,
        schedulable: !n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        labels: n.labels().clone(),
        taints: n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default(),
    }
}

pub fn pod_info(p: &PodView, green: Colour, version: &str) -> PodInfo {
    PodInfo {
        name: p.name().to_string(),
        green: p.is(green.as_str(), version),
        running: p.running,
        ready: p.ready,
        terminating: p.terminating,
        node: p.node().map(String::from),
    }
}

/// What cutover reads of a pod (`pod_info`, `health::assess`), kept in
/// place of the pod: a k8s-openapi Pod is over 2 KB before any of its
/// strings (its spec's fields are inline), and a replica's cache holds
/// every app's pods. Its four texts (name, colour, version, node) are one
/// allocation, one after another: 32 bytes and one text a pod, where a
/// box each was 80 bytes and four (18,000 pods at 1,000 releases).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    /// The name, then the colour, version and node that are present.
    text: Box<str>,
    /// Where the name, colour and version end in `text`.
    ends: [u16; 3],
    /// Which of colour, version and node it has (`HAS_*`).
    has: u8,
    /// Phase Running.
    pub running: bool,
    /// Its Ready condition is True.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// A container of it waits in CrashLoopBackOff.
    pub crash_looping: bool,
    /// Its PodScheduled condition is False for Unschedulable.
    pub unschedulable: bool,
    /// Its containers' restarts, summed.
    pub restarts: u32,
}

const HAS_COLOUR: u8 = 1;
const HAS_VERSION: u8 = 2;
const HAS_NODE: u8 = 4;

impl PodView {
    pub fn of(p: &Pod) -> PodView {
        let l = p.labels();
        let status = p.status.as_ref();
        let conditions = status
            .and_then(|s| s.conditions.as_ref())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let containers = status
            .and_then(|s| s.container_statuses.as_ref())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
        PodView {
            running: status.and_then(|s| s.phase.as_deref()) == Some("Running"),
            ready: conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            terminating: p.metadata.deletion_timestamp.is_some(),
            restarts: containers
                .iter()
                .map(|c| c.restart_count.max(0) as u32)
                .sum(),
            crash_looping: containers.iter().any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("CrashLoopBackOff")
            }),
            unschedulable: conditions.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            }),
            ..PodView::named(
                &p.name_any(),
                l.get(labels::COLOUR).map(String::as_str),
                l.get(labels::VERSION).map(String::as_str),
                node,
            )
        }
    }

    /// A view of a pod with these texts and nothing else set.
    fn named(
        name: &str,
        colour: Option<&str>,
        version: Option<&str>,
        node: Option<&str>,
    ) -> PodView {
        let mut text = String::with_capacity(
            name.len()
                + colour.map_or(0, str::len)
                + version.map_or(0, str::len)
                + node.map_or(0, str::len),
        );
        let mut ends = [0; 3];
        let mut has = 0;
        for (i, (part, flag)) in [
            (Some(name), 0),
            (colour, HAS_COLOUR),
            (version, HAS_VERSION),
            (node, HAS_NODE),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(part) = part {
                text.push_str(part);
                has |= flag;
            }
            if let Some(end) = ends.get_mut(i) {
                // A pod's name and a node's are at most 253 bytes, a label 63.
                *end = u16::try_from(text.len()).unwrap_or(u16::MAX);
            }
        }
        PodView {
            text: text.into_boxed_str(),
            ends,
            has,
            ..PodView::default()
        }
    }

    /// The `i`th of name, colour, version and node.
    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(self.text.len(), |e| *e as usize);
        self.text.get(start..end).unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.part(0)
    }

    /// Its colour label.
    pub fn colour(&self) -> Option<&str> {
        (self.has & HAS_COLOUR != 0).then(|| self.part(1))
    }

    /// Its version label.
    pub fn version(&self) -> Option<&str> {
        (self.has & HAS_VERSION != 0).then(|| self.part(2))
    }

    /// The node it is bound to.
    pub fn node(&self) -> Option<&str> {
        (self.has & HAS_NODE != 0).then(|| self.part(3))
    }

    /// Whether it carries this colour and version.
    pub fn is(&self, colour: &str, version: &str) -> bool {
        self.colour() == Some(colour) && self.version() == Some(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_view_keeps_what_placement_and_health_read() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-green-1", "labels": {
                "app": "web", "cutover.dev/colour": "green", "cutover.dev/version": "2.0.0"},
                "deletionTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"manager": "kubelet"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "web:2"}]},
            "status": {"phase": "Running",
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
                "containerStatuses": [
                    {"name": "app", "restartCount": 3, "ready": false, "image": "", "imageID": "",
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                    {"name": "proxy", "restartCount": 2, "ready": true, "image": "", "imageID": ""}]}
        }))
        .unwrap();
        let v = PodView::of(&pod);
        assert_eq!(
            (v.name(), v.colour(), v.version(), v.node()),
            ("web-green-1", Some("green"), Some("2.0.0"), Some("n1"))
        );
        assert_eq!(
            v,
            PodView {
                running: true,
                ready: true,
                terminating: true,
                restarts: 5,
                crash_looping: true,
                unschedulable: true,
                ..PodView::named("web-green-1", Some("green"), Some("2.0.0"), Some("n1"))
            }
        );
        assert_eq!(std::mem::size_of::<PodView>(), 32);
        assert!(v.is("green", "2.0.0") && !v.is("blue", "2.0.0") && !v.is("green", "1.0.0"));
        let info = pod_info(&v, Colour::Green, "2.0.0");
        assert!(info.green && info.running && info.ready && info.terminating);
        let pods = [std::sync::Arc::new(v)];
        let h = crate::gates::providers::health::assess(&pods, &[], "green", "2.0.0");
        assert_eq!(
            (h.restarts, h.crash_looping.len(), h.unschedulable.len()),
            (5, 1, 1)
        );
        let other = crate::gates::providers::health::assess(&pods, &[], "blue", "1.0.0");
        assert_eq!((other.restarts, other.crash_looping.len()), (0, 0));
        assert_eq!(other.unschedulable.len(), 1, "any of the app's pods counts");
    }

    #[test]
    fn a_pods_view_gives_back_each_text_it_has_and_none_it_lacks() {
        let some = [
            None,
            Some(""),
            Some("green"),
            Some("a-longer-text-than-the-others"),
        ];
        for colour in some {
            for version in some {
                for node in some {
                    let v = PodView::named("web-1", colour, version, node);
                    assert_eq!(
                        (v.name(), v.colour(), v.version(), v.node()),
                        ("web-1", colour, version, node)
                    );
                }
            }
        }
    }
}
