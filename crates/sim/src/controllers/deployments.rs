//! The deployment controller: keeps `spec.replicas` pods of a Deployment's
//! current template (named `<deployment>-<pod-template-hash>-<random>`,
//! owned by the Deployment), rolls templates over honouring maxSurge and
//! maxUnavailable (or Recreate), and writes the Deployment's status.
//!
//! There are no ReplicaSets: pods are owned by the Deployment directly.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{Ctx, Pass, Scope, Work, key_of};
use crate::gateway::is_ready;
use crate::meta;
use crate::store::Key;
use crate::store::{Target, WriteOptions};

pub const TEMPLATE_HASH: &str = "pod-template-hash";

/// What the last pass made of one Deployment: the versions of it and its
/// pods it saw, and when its progress deadline falls due.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    versions: u64,
    due: Option<Timestamp>,
}

/// What the last pass saw, by Deployment: a Deployment whose object and
/// pods have not changed since, and whose deadline is not yet due, would
/// come out the same, so a pass over everything skips it.
#[derive(Debug, Default)]
pub struct Memo(Mutex<HashMap<Key, Seen>>);

/// The versions of a Deployment and its pods, as one number.
fn versions(d: &Value, pods: &[Arc<Value>]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    meta::resource_version(d).hash(&mut h);
    for p in pods {
        meta::uid(p).hash(&mut h);
        meta::resource_version(p).hash(&mut h);
    }
    h.finish()
}

/// One pass over the Deployments in scope; leaves when a progress deadline falls due.
pub fn reconcile(ctx: &Ctx, scope: &Scope, pass: &mut Pass) {
    let now = ctx.now();
    let mut memo = ctx.deployments.0.lock().unwrap_or_else(|p| p.into_inner());
    let (deployments, gone) = scope.deployments(&ctx.store);
    for k in gone {
        memo.remove(&k);
    }
    if *scope == Scope::All {
        let stored: HashSet<Key> = deployments.iter().map(|d| key_of(d)).collect();
        memo.retain(|k, _| stored.contains(k));
    }
    for d in deployments {
        let key = key_of(&d);
        if meta::is_terminating(&d) {
            memo.remove(&key);
            continue;
        }
        let mine = live_pods(ctx, &d);
        let versions = versions(&d, &mine);
        let due = match memo.get(&key) {
            Some(seen) if seen.versions == versions && seen.due.is_none_or(|t| now < t) => seen.due,
            _ => reconcile_one(ctx, &d, &mine),
        };
        // What it wrote comes back as a change and is looked at next pass.
        if let Some(t) = due {
            pass.due(Work::Deployment(key.clone()), t);
        }
        memo.insert(key, Seen { versions, due });
    }
}

/// `maxSurge`/`maxUnavailable`: an absolute number or a percentage of replicas.
fn resolve(v: &Value, replicas: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => {
            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(25.0);
            let exact = replicas as f64 * pct / 100.0;
            (if round_up {
                exact.ceil()
            } else {
                exact.floor()
            }) as i64
        }
        _ => {
            let exact = replicas as f64 * 0.25;
            (if round_up {
                exact.ceil()
            } else {
                exact.floor()
            }) as i64
        }
    }
}

/// Which pods to remove first: unscheduled, then not ready, then the newest.
fn removal_order(pods: &mut [&Value]) {
    pods.sort_by_key(|p| {
        let scheduled = p["spec"]["nodeName"].is_string();
        let ready = is_ready(p);
        let created = std::cmp::Reverse(
            p["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        (scheduled, ready, created, meta::name(p).to_string())
    });
}

/// Brings one Deployment's pods (`owned`: its live pods) to its spec.
fn reconcile_one(ctx: &Ctx, d: &Value, owned: &[Arc<Value>]) -> Option<Timestamp> {
    let ns = meta::namespace(d);
    let template = &d["spec"]["template"];
    let hash = meta::short_hash(template);
    let owned: Vec<&Value> = owned.iter().map(|p| &**p).collect();
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let (mut new, mut old): (Vec<&Value>, Vec<&Value>) = owned
        .iter()
        .copied()
        .partition(|p| meta::label(p, TEMPLATE_HASH) == Some(hash.as_str()));
    let strategy = &d["spec"]["strategy"];
    let recreate = strategy["type"] == "Recreate";
    let mut surge = resolve(&strategy["rollingUpdate"]["maxSurge"], replicas, true);
    let unavailable = if recreate {
        replicas
    } else {
        resolve(
            &strategy["rollingUpdate"]["maxUnavailable"],
            replicas,
            false,
        )
    };
    if surge == 0 && unavailable == 0 {
        surge = 1;
    }
    let pods_kind = ctx.kind("", "pods");
    // Whether a pod was created or deleted: only then are the pods read again for the status.
    let changed = std::cell::Cell::new(false);
    let delete = |p: &Value| {
        changed.set(true);
        let _ = ctx
            .store
            .delete(&pods_kind, ns, meta::name(p), &Default::default());
    };
    if d["spec"]["paused"] != true {
        if recreate && !old.is_empty() {
            old.iter().for_each(|p| delete(p));
            old.clear();
        } else {
            let missing = replicas - new.len() as i64;
            let room = if recreate {
                missing
            } else {
                replicas + surge - (new.len() + old.len()) as i64
            };
            for _ in 0..missing.min(room).max(0) {
                changed.set(true);
                let _ = create_pod(ctx, d, &hash);
            }
            if new.len() as i64 > replicas {
                removal_order(&mut new);
                let extra = new.len() - replicas as usize;
                new.drain(..extra).for_each(&delete);
            }
            if !old.is_empty() {
                let available = owned.iter().filter(|p| is_ready(p)).count() as i64;
                let mut deletable = available - (replicas - unavailable);
                removal_order(&mut old);
                old.retain(|p| {
                    if !is_ready(p) {
                        delete(p);
                        return false;
                    }
                    if deletable > 0 {
                        deletable -= 1;
                        delete(p);
                        return false;
                    }
                    true
                });
            }
        }
    }
    let fresh = changed.get().then(|| live_pods(ctx, d));
    let pods: Vec<&Value> = match &fresh {
        Some(f) => f.iter().map(|p| &**p).collect(),
        None => owned,
    };
    write_status(ctx, d, &pods, &hash, replicas, unavailable)
}

/// The Deployment's pods that are not terminating, read from the store's
/// owner index.
fn live_pods(ctx: &Ctx, d: &Value) -> Vec<Arc<Value>> {
    ctx.store
        .owned_by(meta::uid(d), "", "pods")
        .into_iter()
        .filter(|p| meta::namespace(p) == meta::namespace(d) && !meta::is_terminating(p))
        .collect()
}

fn create_pod(ctx: &Ctx, d: &Value, hash: &str) -> Result<Arc<Value>, crate::api_error::ApiError> {
    let t = &d["spec"]["template"];
    let mut labels = t["metadata"]["labels"].clone();
    labels[TEMPLATE_HASH] = json!(hash);
    let mut md = json!({
        "generateName": format!("{}-{hash}-", meta::name(d)),
        "namespace": meta::namespace(d),
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": meta::name(d), "uid": meta::uid(d),
            "controller": true, "blockOwnerDeletion": true,
        }],
    });
    if t["metadata"]["annotations"].is_object() {
        md["annotations"] = t["metadata"]["annotations"].clone();
    }
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": t["spec"]});
    ctx.store.create(
        &ctx.kind("", "pods"),
        meta::namespace(d),
        pod,
        Target::All,
        &WriteOptions::default(),
    )
}

/// Writes observedGeneration, replica counts and conditions; returns the progress deadline, if pending.
fn write_status(
    ctx: &Ctx,
    d: &Value,
    pods: &[&Value],
    hash: &str,
    replicas: i64,
    max_unavailable: i64,
) -> Option<Timestamp> {
    let total = pods.len() as i64;
    let updated = pods
        .iter()
        .filter(|p| meta::label(p, TEMPLATE_HASH) == Some(hash))
        .count() as i64;
    let ready = pods.iter().filter(|p| is_ready(p)).count() as i64;
    let updated_ready = pods
        .iter()
        .filter(|p| is_ready(p) && meta::label(p, TEMPLATE_HASH) == Some(hash))
        .count() as i64;
    let now = ctx.now();
    let stamp = meta::time(now);
    let rs = format!("{}-{hash}", meta::name(d));
    let complete = updated == replicas && updated_ready == replicas && total == replicas;
    let old = &d["status"];
    let counts = |s: &Value| {
        [
            s["replicas"].as_i64(),
            s["updatedReplicas"].as_i64(),
            s["readyReplicas"].as_i64(),
        ]
    };
    let mut status = json!({"observedGeneration": d["metadata"]["generation"]});
    for (field, v) in [
        ("replicas", total),
        ("updatedReplicas", updated),
        ("readyReplicas", ready),
        ("availableReplicas", ready),
        ("unavailableReplicas", (replicas - ready).max(0)),
    ] {
        if v > 0 {
            status[field] = json!(v);
        }
    }
    let progressed =
        counts(old) != counts(&status) || old["observedGeneration"] != status["observedGeneration"];
    status["conditions"] = old["conditions"].clone();
    // `set_condition` works on an object holding `.status`.
    let mut holder = json!({ "status": status });
    let available = ready >= replicas - max_unavailable;
    let (st, reason, msg) = if available {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".to_string(),
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".to_string(),
        )
    };
    meta::set_condition(
        &mut holder,
        "Available",
        st,
        reason,
        &msg,
        &stamp,
        &["lastUpdateTime"],
    );
    let deadline_secs = d["spec"]["progressDeadlineSeconds"].as_i64().unwrap_or(600);
    let prev = meta::condition(&json!({"status": old}), "Progressing").cloned();
    let last_progress = prev
        .as_ref()
        .filter(|_| !progressed)
        .and_then(|c| c["lastUpdateTime"].as_str().and_then(meta::parse_time))
        .unwrap_or(now);
    let deadline = last_progress
        .checked_add(jiff::SignedDuration::from_secs(deadline_secs))
        .ok();
    let mut due = None;
    let (st, reason, msg) = if complete {
        (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet {rs:?} has successfully progressed."),
        )
    } else if deadline.is_some_and(|t| now >= t) {
        (
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet {rs:?} has timed out progressing."),
        )
    } else {
        due = deadline;
        (
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet {rs:?} is progressing."),
        )
    };
    let update_stamp = if progressed {
        stamp.clone()
    } else {
        meta::time(last_progress)
    };
    meta::set_condition(&mut holder, "Progressing", st, reason, &msg, &stamp, &[]);
    let mut status = holder["status"].take();
    if let Some(conds) = status["conditions"].as_array_mut()
        && let Some(c) = conds.iter_mut().find(|c| c["type"] == "Progressing")
    {
        c["lastUpdateTime"] = json!(update_stamp);
    }
    // Most passes change nothing: compare here rather than have the store
    // copy and compare the whole Deployment.
    if status != d["status"] {
        let _ = ctx.update(&ctx.kind("apps", "deployments"), d, |o| {
            o["status"] = status
        });
    }
    due
}
