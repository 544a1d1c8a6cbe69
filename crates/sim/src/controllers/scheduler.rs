//! The scheduler: places pending pods on Ready, schedulable nodes that fit
//! (nodeSelector, tolerated taints, pod capacity), honouring
//! `topologySpreadConstraints` (maxSkew, DoNotSchedule / ScheduleAnyway,
//! labelSelector and matchLabelKeys; domains are the topology values of the
//! nodes the pod could go to) and otherwise spreading a workload's pods
//! over zones and nodes. A pod that fits nowhere stays Pending with
//! `PodScheduled=False` and a `FailedScheduling` Event.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::feed::Bound;
use super::{Ctx, Pass, Scope, Work, key_of};
use crate::meta;
use crate::selectors::LabelSelector;
use crate::store::Key;
use crate::store::{Target, WriteOptions};
use cutover_core::labels::ZONE;

/// The placed pods in `ns` that `selector` selects, with their nodes:
/// read from the change feed's index of bound pods (by label, as
/// kube-scheduler's cache holds them), not from every pod of the cluster.
fn selected<'a>(
    bound: &'a Bound,
    ns: &'a str,
    selector: &'a LabelSelector,
) -> Box<dyn Iterator<Item = (&'a Value, &'a str)> + 'a> {
    let keys: Box<dyn Iterator<Item = &Key>> = match selector.an_equality() {
        Some((key, value)) => Box::new(bound.labelled(ns, key, value)),
        None => Box::new(bound.in_namespace(ns)),
    };
    Box::new(
        keys.filter_map(|k| bound.get(k))
            .map(|(p, n)| (&**p, n.as_str()))
            .filter(|(p, _)| selector.matches_object(p)),
    )
}

/// The nodes of the placed pods of one owner.
fn of_owner<'a>(bound: &'a Bound, owner: &str) -> impl Iterator<Item = &'a str> {
    bound
        .of_owner(owner)
        .filter_map(|k| bound.get(k))
        .map(|(_, n)| n.as_str())
}

fn on_node(bound: &Bound, node: &str) -> usize {
    bound.on_node().get(node).copied().unwrap_or(0)
}

/// The pod's controlling owner (its Deployment).
fn owner(pod: &Value) -> Option<&str> {
    pod["metadata"]["ownerReferences"][0]["uid"].as_str()
}

/// Places the pending pods in scope, oldest first. `bound` holds every
/// live bound pod of the cluster; each pod bound here is added to it, so
/// the next counts it. A pod that fits nowhere is looked at again when a
/// pod leaves a node, when it changes, or when its report falls due, as
/// kube-scheduler keeps it in its unschedulable queue until a cluster event
/// moves it or `DefaultPodMaxInUnschedulablePodsDuration` (5 minutes,
/// `pkg/scheduler/internal/queue/scheduling_queue.go`) passes.
pub fn reconcile(ctx: &Ctx, scope: &Scope, bound: &mut Bound, pass: &mut Pass) {
    let stored = ctx.store.all("", "nodes");
    let nodes: Vec<Node> = stored.iter().map(|n| Node::read(n)).collect();
    let node_of: BTreeMap<&str, &Value> = nodes.iter().map(|n| (n.name, n.object)).collect();
    let pods = scope.pods(&ctx.store);
    let mut pending: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| p["spec"]["nodeName"].is_null() && !meta::is_terminating(p))
        .filter(|p| {
            p["spec"]["schedulerName"]
                .as_str()
                .is_none_or(|s| s == "default-scheduler")
        })
        .collect();
    pending.sort_by_key(|p| {
        (
            p["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            meta::name(p).to_string(),
        )
    });
    for pod in pending {
        match choose(pod, &nodes, &node_of, bound) {
            Ok(node) => {
                if let Ok(bound_pod) = bind(ctx, pod, &node) {
                    bound.assume(&bound_pod);
                }
            }
            Err(why) => {
                unschedulable(ctx, pod, &why);
                pass.waiting(key_of(pod));
                if let Ok(t) = ctx.now().checked_add(REPORT_EVERY) {
                    pass.due(Work::Pod(key_of(pod)), t);
                }
            }
        }
    }
}

fn node_label<'a>(node: &'a Value, key: &str) -> Option<&'a str> {
    node["metadata"]["labels"][key].as_str()
}

fn tolerates(pod: &Value, taint: &Value) -> bool {
    pod["spec"]["tolerations"].as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            let key_ok = match t["key"].as_str() {
                None | Some("") => t["operator"] == "Exists",
                Some(k) => taint["key"] == k,
            };
            let value_ok = t["operator"] == "Exists"
                || t["value"].as_str().unwrap_or_default()
                    == taint["value"].as_str().unwrap_or_default();
            let effect_ok = t["effect"]
                .as_str()
                .is_none_or(|e| e.is_empty() || taint["effect"] == e);
            key_ok && value_ok && effect_ok
        })
    })
}

/// What filtering reads of a node, read once a pass rather than once for
/// every pod and node (kube-scheduler's snapshot holds its `NodeInfo` the
/// same way): hundreds of nodes a pod, thousands of pods when a fleet rolls.
struct Node<'a> {
    name: &'a str,
    object: &'a Value,
    unschedulable: bool,
    /// Taints that keep pods off (`NoSchedule`, `NoExecute`).
    taints: Vec<&'a Value>,
    ready: bool,
    capacity: usize,
}

impl<'a> Node<'a> {
    fn read(node: &'a Value) -> Node<'a> {
        Node {
            name: meta::name(node),
            object: node,
            unschedulable: node["spec"]["unschedulable"] == true,
            taints: node["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute")))
                .collect(),
            ready: meta::condition_true(node, "Ready"),
            capacity: node["status"]["allocatable"]["pods"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(110usize),
        }
    }

    fn label(&self, key: &str) -> Option<&'a str> {
        node_label(self.object, key)
    }
}

/// Why a node cannot take the pod, in the scheduler's words.
fn node_filter(pod: &Value, node: &Node, on_node: usize) -> Result<(), String> {
    if node.unschedulable {
        return Err("node(s) were unschedulable".into());
    }
    if let Some(t) = node.taints.iter().find(|t| !tolerates(pod, t)) {
        return Err(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t["key"].as_str().unwrap_or_default(),
            t["value"].as_str().unwrap_or_default()
        ));
    }
    if !node.ready {
        return Err("node(s) were not ready".into());
    }
    if let Some(sel) = pod["spec"]["nodeSelector"].as_object()
        && !sel
            .iter()
            .all(|(k, v)| node.object["metadata"]["labels"][k] == *v)
    {
        return Err("node(s) didn't match Pod's node affinity/selector".into());
    }
    if on_node >= node.capacity {
        return Err("Too many pods".into());
    }
    Ok(())
}

struct Constraint {
    key: String,
    max_skew: i64,
    hard: bool,
    selector: LabelSelector,
}

/// A constraint's matching pods per domain, as every node is scored against it.
struct Spread<'a> {
    constraint: Constraint,
    counts: BTreeMap<&'a str, i64>,
    /// The fewest in any domain.
    min: i64,
    /// 1 if the pod itself matches (it counts toward its own domain).
    me: i64,
}

fn constraints(pod: &Value) -> Vec<Constraint> {
    let labels = &pod["metadata"]["labels"];
    pod["spec"]["topologySpreadConstraints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let mut selector = LabelSelector::from_object(&c["labelSelector"]).ok()?;
            if c["labelSelector"].is_null() {
                return None;
            }
            for k in c["matchLabelKeys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if let Some(v) = labels[k].as_str() {
                    selector = selector.and_equals(k, v);
                }
            }
            Some(Constraint {
                key: c["topologyKey"].as_str()?.to_string(),
                max_skew: c["maxSkew"].as_i64().unwrap_or(1).max(1),
                hard: c["whenUnsatisfiable"].as_str().unwrap_or("DoNotSchedule") == "DoNotSchedule",
                selector,
            })
        })
        .collect()
}

/// The node to bind to, or the scheduler's message explaining why there is none.
fn choose(
    pod: &Value,
    nodes: &[Node],
    node_of: &BTreeMap<&str, &Value>,
    bound: &Bound,
) -> Result<String, String> {
    let ns = meta::namespace(pod);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut feasible: Vec<&Node> = Vec::new();
    for n in nodes {
        match node_filter(pod, n, on_node(bound, n.name)) {
            Ok(()) => feasible.push(n),
            Err(r) => *reasons.entry(r).or_default() += 1,
        }
    }
    // Each constraint's matching pods per domain (the topology values of the
    // feasible nodes): the same whichever node is being scored.
    // With the fewest in any domain and whether the pod counts itself.
    let spreads: Vec<Spread> = constraints(pod)
        .into_iter()
        .map(|c| {
            let mut counts: BTreeMap<&str, i64> = feasible
                .iter()
                .filter_map(|f| f.label(&c.key))
                .map(|d| (d, 0))
                .collect();
            for (_, node) in selected(bound, ns, &c.selector) {
                if let Some(d) = node_of.get(node).and_then(|pn| node_label(pn, &c.key))
                    && let Some(slot) = counts.get_mut(d)
                {
                    *slot += 1;
                }
            }
            Spread {
                min: counts.values().copied().min().unwrap_or(0),
                me: i64::from(c.selector.matches_object(pod)),
                constraint: c,
                counts,
            }
        })
        .collect();
    let mut scored: Vec<(i64, usize, usize, &str)> = Vec::new();
    let mut spread_rejects = 0;
    'nodes: for n in &feasible {
        let mut soft_skew = 0;
        for spread in &spreads {
            let c = &spread.constraint;
            let Some(here) = n.label(&c.key) else {
                if c.hard {
                    spread_rejects += 1;
                    continue 'nodes;
                }
                continue;
            };
            let skew = spread.counts.get(here).copied().unwrap_or(0) + spread.me - spread.min;
            if c.hard && skew > c.max_skew {
                spread_rejects += 1;
                continue 'nodes;
            }
            soft_skew += skew;
        }
        let (zone_peers, node_peers) = peers(pod, n, node_of, bound);
        scored.push((
            soft_skew,
            zone_peers * 1000 + node_peers,
            on_node(bound, n.name),
            n.name,
        ));
    }
    if spread_rejects > 0 {
        *reasons
            .entry("node(s) didn't match pod topology spread constraints".into())
            .or_default() += spread_rejects;
    }
    scored.sort();
    match scored.first() {
        Some((.., name)) => Ok(name.to_string()),
        None => {
            let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            Err(format!(
                "0/{} nodes are available: {}.",
                nodes.len(),
                detail.join(", ")
            ))
        }
    }
}

/// Pods of the same owner already in the node's zone and on the node (default spreading).
fn peers(
    pod: &Value,
    node: &Node,
    node_of: &BTreeMap<&str, &Value>,
    bound: &Bound,
) -> (usize, usize) {
    let Some(owner) = owner(pod) else {
        return (0, 0);
    };
    let zone = node.label(ZONE);
    let mut same_zone = 0;
    let mut same_node = 0;
    for on in of_owner(bound, owner) {
        if on == node.name {
            same_node += 1;
        }
        if zone.is_some() && node_of.get(on).and_then(|n| node_label(n, ZONE)) == zone {
            same_zone += 1;
        }
    }
    (same_zone, same_node)
}

/// Binds the pod to the node; the pod as bound.
fn bind(ctx: &Ctx, pod: &Value, node: &str) -> Result<Arc<Value>, crate::api_error::ApiError> {
    let stamp = meta::time(ctx.now());
    ctx.update(&ctx.kind("", "pods"), pod, |p| {
        p["spec"]["nodeName"] = json!(node);
        meta::set_condition(
            p,
            "PodScheduled",
            "True",
            "",
            "",
            &stamp,
            &["lastProbeTime"],
        );
    })
}

/// Fleet time between two reports of the same scheduling failure.
const REPORT_EVERY: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

fn unschedulable(ctx: &Ctx, pod: &Value, why: &str) {
    let now = ctx.now();
    let stamp = meta::time(now);
    let already = meta::condition(pod, "PodScheduled")
        .is_some_and(|c| c["status"] == "False" && c["message"] == why);
    if !already {
        let _ = ctx.update(&ctx.kind("", "pods"), pod, |p| {
            meta::set_condition(
                p,
                "PodScheduled",
                "False",
                "Unschedulable",
                why,
                &stamp,
                &[],
            );
            p["status"]["phase"] = json!("Pending");
        });
    }
    report(ctx, pod, why, now);
}

/// A `FailedScheduling` Event for the pod: created, or counted again every few minutes.
fn report(ctx: &Ctx, pod: &Value, why: &str, now: Timestamp) {
    let kind = ctx.kind("", "events");
    let ns = meta::namespace(pod);
    let name = format!(
        "{}.{}",
        meta::name(pod),
        meta::short_hash(&json!(meta::uid(pod)))
    );
    let stamp = meta::time(now);
    let _ = ctx.store.modify(&kind, ns, &name, Target::All, true, &WriteOptions::default(), |cur| {
        let mut e = match cur {
            Some(e) => e.clone(),
            None => json!({
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": ns, "name": meta::name(pod), "uid": meta::uid(pod)},
                "reason": "FailedScheduling",
                "type": "Warning",
                "source": {"component": "default-scheduler"},
                "reportingComponent": "default-scheduler",
                "firstTimestamp": stamp,
                "count": 0,
            }),
        };
        let last = e["lastTimestamp"].as_str().and_then(meta::parse_time);
        let due = last.is_none_or(|t| t.checked_add(REPORT_EVERY).is_ok_and(|d| d <= now));
        if due || e["message"] != why {
            e["count"] = json!(e["count"].as_i64().unwrap_or(0) + 1);
            e["lastTimestamp"] = json!(stamp);
            e["message"] = json!(why);
        }
        Ok(e)
    });
}
