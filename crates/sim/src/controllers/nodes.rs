//! Simulated nodes: what a node object looks like when the cluster boots
//! (zone and hostname labels, capacity, a Ready condition) and how its
//! health changes when a scenario takes it down or brings it back: the
//! Ready condition and the `not-ready`/`unreachable` taints the node
//! lifecycle controller would set.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::Ctx;
use crate::api_error::ApiResult;
use crate::meta;
use cutover_core::labels::ZONE;

/// Annotation holding the node's pod address range (`10.x.y.0/24`).
pub const POD_CIDR: &str = "sim.cutover.dev/pod-cidr";
const HOSTNAME: &str = "kubernetes.io/hostname";
const REGION: &str = "topology.kubernetes.io/region";

/// How a node is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeHealth {
    Ready,
    /// The kubelet reports NotReady (Ready=False; taint `node.kubernetes.io/not-ready`).
    NotReady,
    /// The node stopped reporting (Ready=Unknown; taint `node.kubernetes.io/unreachable`), as in a zone outage.
    Unreachable,
}

/// Where a node sits in the fleet.
#[derive(Debug, Clone, Copy)]
pub struct NodePlace<'a> {
    pub cluster_index: usize,
    pub region: &'a str,
    pub zone: &'a str,
    pub zone_index: usize,
    /// 1-based number within the zone.
    pub number: usize,
    pub pods: u32,
}

pub fn node_name(cluster: &str, zone: &str, number: usize) -> String {
    format!("{cluster}-{zone}-{number}")
}

/// A Ready node.
pub fn make_node(cluster: &str, place: NodePlace, now: Timestamp) -> Value {
    let name = node_name(cluster, place.zone, place.number);
    let subnet = place.zone_index * 16 + place.number;
    let stamp = meta::time(now);
    let mut node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                ZONE: place.zone,
                REGION: place.region,
                HOSTNAME: name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "sim.large",
            },
            "annotations": {POD_CIDR: format!("10.{}.{subnet}.0/24", 100 + place.cluster_index)},
        },
        "spec": {"podCIDR": format!("10.{}.{subnet}.0/24", 100 + place.cluster_index)},
        "status": {
            "capacity": {"cpu": "4", "memory": "16Gi", "pods": place.pods.to_string()},
            "allocatable": {"cpu": "4", "memory": "16Gi", "pods": place.pods.to_string()},
            "addresses": [
                {"type": "InternalIP", "address": format!("10.{}.{subnet}.1", place.cluster_index)},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": super::super::discovery::SERVER_VERSION,
                "kubeProxyVersion": super::super::discovery::SERVER_VERSION,
                "osImage": "Simulated Linux",
                "kernelVersion": "6.1.0-sim",
                "containerRuntimeVersion": "containerd://1.7.0-sim",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "conditions": [],
        },
    });
    for c in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        meta::set_condition(
            &mut node,
            c,
            "False",
            &format!("KubeletHasNo{c}"),
            "",
            &stamp,
            &["lastHeartbeatTime"],
        );
    }
    set_ready(&mut node, NodeHealth::Ready, &stamp);
    node
}

fn set_ready(node: &mut Value, health: NodeHealth, stamp: &str) {
    let (status, reason, message) = match health {
        NodeHealth::Ready => ("True", "KubeletReady", "kubelet is posting ready status"),
        NodeHealth::NotReady => (
            "False",
            "KubeletNotReady",
            "container runtime network not ready: NetworkReady=false",
        ),
        NodeHealth::Unreachable => (
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
        ),
    };
    meta::set_condition(
        node,
        "Ready",
        status,
        reason,
        message,
        stamp,
        &["lastHeartbeatTime"],
    );
    let taint = match health {
        NodeHealth::Ready => None,
        NodeHealth::NotReady => Some("node.kubernetes.io/not-ready"),
        NodeHealth::Unreachable => Some("node.kubernetes.io/unreachable"),
    };
    let mut taints: Vec<Value> = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| {
            !matches!(
                t["key"].as_str(),
                Some("node.kubernetes.io/not-ready" | "node.kubernetes.io/unreachable")
            )
        })
        .collect();
    if let Some(key) = taint {
        taints.push(json!({"key": key, "effect": "NoSchedule", "timeAdded": stamp}));
        taints.push(json!({"key": key, "effect": "NoExecute", "timeAdded": stamp}));
    }
    if taints.is_empty() {
        if let Some(spec) = node["spec"].as_object_mut() {
            spec.remove("taints");
        }
    } else {
        node["spec"]["taints"] = Value::Array(taints);
    }
}

/// Sets a node's health (condition and taints).
pub fn set_health(ctx: &Ctx, name: &str, health: NodeHealth) -> ApiResult<()> {
    let kind = ctx.kind("", "nodes");
    let node = ctx.store.get(&kind, "", name)?;
    let stamp = meta::time(ctx.now());
    ctx.update(&kind, &node, |n| set_ready(n, health, &stamp))?;
    Ok(())
}

/// The nodes of a zone, by name.
pub fn in_zone(ctx: &Ctx, zone: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = ctx
        .store
        .all("", "nodes")
        .iter()
        .filter(|n| zone.is_none_or(|z| meta::label(n, ZONE) == Some(z)))
        .map(|n| meta::name(n).to_string())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_carry_zone_labels_and_change_health() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let place = NodePlace {
            cluster_index: 1,
            region: "eu-west-1",
            zone: "eu-west-1b",
            zone_index: 1,
            number: 2,
            pods: 110,
        };
        let mut n = make_node("prod-a", place, now);
        assert_eq!(meta::name(&n), "prod-a-eu-west-1b-2");
        assert_eq!(meta::label(&n, ZONE), Some("eu-west-1b"));
        assert!(meta::condition_true(&n, "Ready"));
        set_ready(&mut n, NodeHealth::Unreachable, "later");
        assert_eq!(meta::condition(&n, "Ready").unwrap()["status"], "Unknown");
        assert_eq!(n["spec"]["taints"].as_array().unwrap().len(), 2);
        set_ready(&mut n, NodeHealth::Ready, "later still");
        assert!(meta::condition_true(&n, "Ready"));
        assert!(n["spec"].get("taints").is_none());
    }
}
