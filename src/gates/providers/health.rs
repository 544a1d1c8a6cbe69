//! Cluster health as a metric: green's restarts and crash loops, the app's
//! unschedulable pods, and nodes NotReady or Unknown in the cluster. A cluster
//! losing nodes stops the rollout however good the app's metrics look.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use crate::fleet::observe::PodView;
use crate::gates::verdict::{Class, Measurement};
use crate::spec::gates::ClusterHealthQuery;

/// What health counts in one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub restarts: u32,
    pub crash_looping: Vec<String>,
    pub unschedulable: Vec<String>,
    pub not_ready_nodes: Vec<String>,
}

/// Counts health signals over a cluster's pods (the app's) and nodes.
pub fn assess(
    pods: &[std::sync::Arc<PodView>],
    nodes: &[std::sync::Arc<Node>],
    green: &str,
    version: &str,
) -> Health {
    let mut h = Health::default();
    for p in pods {
        if p.is(green, version) {
            h.restarts += p.restarts;
            if p.crash_looping {
                h.crash_looping.push(p.name().to_string());
            }
        }
        if p.unschedulable {
            h.unschedulable.push(p.name().to_string());
        }
    }
    for n in nodes {
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        if ready != Some("True") {
            let zone = n
                .labels()
                .get(crate::labels::ZONE)
                .map(|z| format!(", zone {z}"))
                .unwrap_or_default();
            h.not_ready_nodes.push(format!(
                "{} ({}{zone})",
                n.name_any(),
                ready.unwrap_or("Unknown")
            ));
        }
    }
    h
}

/// Judges health against the query's limits; restarts count from `baseline`.
pub fn measure(
    q: &ClusterHealthQuery,
    h: &Health,
    baseline_restarts: u32,
    at: Timestamp,
) -> Measurement {
    let restarts = h.restarts.saturating_sub(baseline_restarts);
    let mut problems = Vec::new();
    if restarts > q.max_restarts {
        problems.push(format!(
            "{restarts} green container restarts (max {})",
            q.max_restarts
        ));
    }
    if !h.crash_looping.is_empty() {
        problems.push(format!("crash looping: {}", h.crash_looping.join(", ")));
    }
    if h.unschedulable.len() as u32 > q.max_unschedulable_pods {
        problems.push(format!(
            "{} pods unschedulable (max {}): {}",
            h.unschedulable.len(),
            q.max_unschedulable_pods,
            h.unschedulable.join(", ")
        ));
    }
    if h.not_ready_nodes.len() as u32 > q.max_not_ready_nodes {
        problems.push(format!(
            "{} nodes not ready (max {}): {}",
            h.not_ready_nodes.len(),
            q.max_not_ready_nodes,
            h.not_ready_nodes.join(", ")
        ));
    }
    let value = Some(problems.len() as f64);
    if problems.is_empty() {
        Measurement {
            at,
            class: Class::Pass,
            value,
            detail: "green and its nodes are healthy".into(),
        }
    } else {
        Measurement {
            at,
            class: Class::Fail,
            value,
            detail: problems.join("; "),
        }
    }
}
