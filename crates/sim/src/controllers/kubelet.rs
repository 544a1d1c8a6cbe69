//! The kubelets: a scheduled pod starts (Running, with an IP) and becomes
//! Ready after the readiness delay (or its readiness probe's initial delay,
//! if longer); a crash-looping version keeps restarting and never gets
//! Ready; pods on a NotReady node lose Readiness, and are evicted once the
//! node has been NotReady for the eviction timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::nodes::POD_CIDR;
use super::{Ctx, Pass, Scope, Work, key_of};
use crate::faults::Workload;
use crate::meta;
use cutover_core::labels::{APP, COLOUR, VERSION};

/// Fleet time between two restarts of a crash-looping container.
const RESTART_EVERY: Duration = Duration::from_secs(30);

struct NodeState {
    ready: bool,
    /// When the Ready condition last changed.
    since: Option<Timestamp>,
    host_ip: String,
    cidr: String,
}

/// One pass over the pods in scope; leaves when each next needs a look.
pub fn reconcile(ctx: &Ctx, scope: &Scope, pass: &mut Pass) {
    let nodes: BTreeMap<String, NodeState> = ctx
        .store
        .all("", "nodes")
        .iter()
        .map(|n| {
            let since = meta::condition(n, "Ready")
                .and_then(|c| c["lastTransitionTime"].as_str())
                .and_then(meta::parse_time);
            let host_ip = n["status"]["addresses"][0]["address"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let cidr = n["metadata"]["annotations"][POD_CIDR]
                .as_str()
                .unwrap_or("10.250.0.0/24")
                .to_string();
            (
                meta::name(n).to_string(),
                NodeState {
                    ready: meta::condition_true(n, "Ready"),
                    since,
                    host_ip,
                    cidr,
                },
            )
        })
        .collect();
    let now = ctx.now();
    for pod in scope.pods(&ctx.store) {
        if meta::is_terminating(&pod) {
            continue;
        }
        let Some(node) = pod["spec"]["nodeName"].as_str().and_then(|n| nodes.get(n)) else {
            continue;
        };
        if let Some(t) = step(ctx, &pod, node, now) {
            pass.due(Work::Pod(key_of(&pod)), t);
        }
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// Moves one pod along; returns when it next needs attention.
fn step(ctx: &Ctx, pod: &Value, node: &NodeState, now: Timestamp) -> Option<Timestamp> {
    let kind = ctx.kind("", "pods");
    let stamp = meta::time(now);
    if !node.ready {
        let since = node.since.unwrap_or(now);
        let evict_at = add(since, ctx.evict_after);
        if now >= evict_at {
            let _ = ctx.store.delete(
                &kind,
                meta::namespace(pod),
                meta::name(pod),
                &Default::default(),
            );
            return None;
        }
        let _ = ctx.update(&kind, pod, |p| {
            meta::set_condition(
                p,
                "Ready",
                "False",
                "NodeNotReady",
                "the pod's node is not ready",
                &stamp,
                &[],
            );
            meta::set_condition(
                p,
                "ContainersReady",
                "False",
                "NodeNotReady",
                "",
                &stamp,
                &[],
            );
            set_containers(p, |c| c["ready"] = json!(false));
        });
        return Some(evict_at);
    }
    let labels = &pod["metadata"]["labels"];
    let label = |k: &str| labels[k].as_str().unwrap_or_default().to_string();
    let (app, version, colour) = (label(APP), label(VERSION), label(COLOUR));
    let behaviour = ctx.behaviours.of(Workload {
        cluster: &ctx.cluster,
        app: &app,
        version: &version,
        colour: &colour,
    });
    let started = pod["status"]["startTime"]
        .as_str()
        .and_then(meta::parse_time);
    let Some(started) = started else {
        let ip = pod_ip(&node.cidr);
        let host_ip = node.host_ip.clone();
        let _ = ctx.update(&kind, pod, |p| {
            p["status"]["phase"] = json!("Running");
            p["status"]["podIP"] = json!(ip);
            p["status"]["podIPs"] = json!([{"ip": ip}]);
            p["status"]["hostIP"] = json!(host_ip);
            p["status"]["hostIPs"] = json!([{"ip": host_ip}]);
            p["status"]["startTime"] = json!(stamp);
            meta::set_condition(p, "Initialized", "True", "", "", &stamp, &[]);
            meta::set_condition(
                p,
                "Ready",
                "False",
                "ContainersNotReady",
                "containers with unready status",
                &stamp,
                &[],
            );
            meta::set_condition(
                p,
                "ContainersReady",
                "False",
                "ContainersNotReady",
                "containers with unready status",
                &stamp,
                &[],
            );
            p["status"]["containerStatuses"] = Value::Array(
                p["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| container_status(c, &stamp))
                    .collect(),
            );
        });
        return Some(now);
    };
    if behaviour.crash_loop {
        let restarts =
            now.duration_since(started).as_secs_f64().max(0.0) / RESTART_EVERY.as_secs_f64();
        let restarts = restarts.floor() as i64 + 1;
        let _ = ctx.update(&kind, pod, |p| {
            meta::set_condition(p, "Ready", "False", "ContainersNotReady", "containers with unready status", &stamp, &[]);
            meta::set_condition(p, "ContainersReady", "False", "ContainersNotReady", "containers with unready status", &stamp, &[]);
            set_containers(p, |c| {
                c["ready"] = json!(false);
                c["started"] = json!(false);
                c["restartCount"] = json!(restarts);
                c["state"] = json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}});
                c["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
            });
        });
        return Some(add(started, RESTART_EVERY * restarts as u32));
    }
    let crashed = pod["status"]["containerStatuses"]
        .as_array()
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["state"]["waiting"]["reason"] == "CrashLoopBackOff")
        });
    if crashed {
        let _ = ctx.update(&kind, pod, |p| {
            set_containers(p, |c| {
                c["started"] = json!(true);
                c["state"] = json!({"running": {"startedAt": stamp}});
            });
        });
        return Some(now);
    }
    let container_start = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        .as_str()
        .and_then(meta::parse_time);
    let from = [Some(started), node.since, container_start]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(started);
    let ready_at = add(from, readiness_delay(ctx, pod));
    if now < ready_at {
        return Some(ready_at);
    }
    if !meta::condition_true(pod, "Ready") {
        let _ = ctx.update(&kind, pod, |p| {
            meta::set_condition(p, "Ready", "True", "", "", &stamp, &[]);
            meta::set_condition(p, "ContainersReady", "True", "", "", &stamp, &[]);
            set_containers(p, |c| {
                c["ready"] = json!(true);
                c["started"] = json!(true);
            });
        });
    }
    None
}

/// The scenario's delay, or the longest readiness probe initial delay if longer.
fn readiness_delay(ctx: &Ctx, pod: &Value) -> Duration {
    let probe = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["readinessProbe"]["initialDelaySeconds"].as_u64())
        .max()
        .unwrap_or(0);
    ctx.readiness_delay.max(Duration::from_secs(probe))
}

fn container_status(c: &Value, stamp: &str) -> Value {
    let image = c["image"].as_str().unwrap_or_default();
    json!({
        "name": c["name"],
        "image": image,
        "imageID": format!("sim://{image}"),
        "containerID": format!("containerd://{}", meta::random_suffix(16)),
        "ready": false,
        "started": true,
        "restartCount": 0,
        "state": {"running": {"startedAt": stamp}},
    })
}

fn set_containers(p: &mut Value, f: impl Fn(&mut Value)) {
    if let Some(cs) = p["status"]["containerStatuses"].as_array_mut() {
        cs.iter_mut().for_each(f);
    }
}

fn pod_ip(cidr: &str) -> String {
    let base = cidr.split('/').next().unwrap_or("10.250.0.0");
    let prefix = base.rsplit_once('.').map(|(p, _)| p).unwrap_or("10.250.0");
    format!("{prefix}.{}", rand::random_range(2..255))
}
