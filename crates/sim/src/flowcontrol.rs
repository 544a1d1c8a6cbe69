//! API Priority and Fairness, as kube-apiserver has it
//! (k8s.io/apiserver/pkg/util/flowcontrol): every request but a watch is
//! classified by the first FlowSchema that matches it (lowest
//! `matchingPrecedence`, then name) into a PriorityLevelConfiguration, and
//! waits for one of that level's seats. A level's seats are its nominal
//! share of the server's concurrency limit (`--max-requests-inflight` plus
//! `--max-mutating-requests-inflight`, 600 by default): `ceil(limit × shares
//! / every Limited level's shares)`. A request that finds the level's queues
//! full, or waits longer than the request wait limit (15 s), is refused with
//! 429 and `Retry-After`, and every answer names its FlowSchema and
//! priority level in `X-Kubernetes-PF-FlowSchema-UID` and
//! `X-Kubernetes-PF-PriorityLevel-UID`.
//!
//! The FlowSchemas and PriorityLevelConfigurations are objects in the store
//! (the suggested and mandatory ones from apis/flowcontrol/bootstrap/default.go
//! are created at boot, as the API server's configuration controller does),
//! so one applied with kubectl (deploy/'s `cutover-leases`) takes effect.
//!
//! Simplified: one FIFO queue per level instead of shuffle-sharded queues
//! per flow (so no fairness between flows of one level), no borrowing of
//! seats between levels (`lendablePercent`), and one seat per request
//! whatever its width (no work estimate for lists).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api_error::ApiError;
use crate::auth::UserInfo;
use crate::auth::rbac::Attributes;
use crate::store::Store;

pub const GROUP: &str = "flowcontrol.apiserver.k8s.io";
const FLOW_SCHEMAS: &str = "flowschemas";
const PRIORITY_LEVELS: &str = "prioritylevelconfigurations";

/// kube-apiserver's default `--max-requests-inflight` (400) plus
/// `--max-mutating-requests-inflight` (200).
pub const DEFAULT_CONCURRENCY: usize = 600;

/// How long a request may wait for a seat before it is refused.
const REQUEST_WAIT_LIMIT: Duration = Duration::from_secs(15);

/// The priority levels and flow schemas of one API server.
pub struct FlowControl {
    concurrency: usize,
    config: Mutex<Option<Arc<Config>>>,
}

/// The store's FlowSchemas and priority levels, as of `changed`.
struct Config {
    changed: (u64, u64),
    schemas: Vec<Schema>,
    levels: HashMap<String, Arc<Level>>,
}

struct Schema {
    name: String,
    uid: String,
    precedence: i64,
    level: String,
    rules: Vec<Value>,
}

/// One priority level: its seats and who waits for them.
pub struct Level {
    pub name: String,
    uid: String,
    /// `None`: exempt, never waits.
    seats: Option<Arc<Semaphore>>,
    /// Its seats in all (its nominal concurrency limit).
    pub limit: Option<usize>,
    /// Requests waiting now; refused beyond `queue_limit`.
    waiting: AtomicUsize,
    queue_limit: usize,
    /// Requests that waited for a seat, and those refused.
    queued: AtomicUsize,
    rejected: AtomicUsize,
}

impl Level {
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn rejected(&self) -> usize {
        self.rejected.load(Ordering::Relaxed)
    }
}

/// A request's seat, held while it executes, and the headers its answer carries.
pub struct Seat {
    _permit: Option<OwnedSemaphorePermit>,
    pub flow_schema_uid: String,
    pub priority_level_uid: String,
}

impl FlowControl {
    pub fn new(concurrency: usize) -> FlowControl {
        FlowControl {
            concurrency: concurrency.max(1),
            config: Mutex::new(None),
        }
    }

    fn config(&self, store: &Store) -> Arc<Config> {
        let changed = (
            store.last_change(GROUP, FLOW_SCHEMAS),
            store.last_change(GROUP, PRIORITY_LEVELS),
        );
        let mut current = self.config.lock().expect("flow control lock");
        if let Some(c) = current.as_ref().filter(|c| c.changed == changed) {
            return c.clone();
        }
        let fresh = Arc::new(Config::read(
            store,
            changed,
            self.concurrency,
            current.as_deref(),
        ));
        *current = Some(fresh.clone());
        fresh
    }

    /// The level `name`, as configured now (tests and `/sim` reads).
    pub fn level(&self, store: &Store, name: &str) -> Option<Arc<Level>> {
        self.config(store).levels.get(name).cloned()
    }

    /// Waits for a seat of the request's priority level; a 429 when its
    /// queue is full or the wait is too long. Watches are not limited.
    pub async fn admit(
        &self,
        store: &Store,
        user: &UserInfo,
        attrs: &Attributes,
    ) -> Result<Option<Seat>, ApiError> {
        if attrs.verb == "watch" {
            return Ok(None);
        }
        let config = self.config(store);
        let Some(schema) = config.classify(user, attrs) else {
            return Ok(None);
        };
        let Some(level) = config.levels.get(&schema.level).cloned() else {
            return Ok(None);
        };
        let seat = |permit| Seat {
            _permit: permit,
            flow_schema_uid: schema.uid.clone(),
            priority_level_uid: level.uid.clone(),
        };
        let Some(seats) = &level.seats else {
            return Ok(Some(seat(None)));
        };
        if let Ok(p) = seats.clone().try_acquire_owned() {
            return Ok(Some(seat(Some(p))));
        }
        let refused = || {
            level.rejected.fetch_add(1, Ordering::Relaxed);
            ApiError::too_many_requests("Too many requests, please try again later.")
        };
        if level.waiting.fetch_add(1, Ordering::Relaxed) >= level.queue_limit {
            level.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(refused());
        }
        level.queued.fetch_add(1, Ordering::Relaxed);
        let waited = tokio::time::timeout(REQUEST_WAIT_LIMIT, seats.clone().acquire_owned()).await;
        level.waiting.fetch_sub(1, Ordering::Relaxed);
        match waited {
            Ok(Ok(p)) => Ok(Some(seat(Some(p)))),
            _ => Err(refused()),
        }
    }
}

impl Config {
    /// Reads the store's configuration; a level whose settings did not
    /// change keeps its seats (and whoever holds or waits for them).
    fn read(store: &Store, changed: (u64, u64), total: usize, old: Option<&Config>) -> Config {
        let mut schemas: Vec<Schema> = store
            .all(GROUP, FLOW_SCHEMAS)
            .iter()
            .map(|fs| Schema {
                name: fs["metadata"]["name"].as_str().unwrap_or_default().into(),
                uid: fs["metadata"]["uid"].as_str().unwrap_or_default().into(),
                precedence: fs["spec"]["matchingPrecedence"].as_i64().unwrap_or(1000),
                level: fs["spec"]["priorityLevelConfiguration"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                rules: fs["spec"]["rules"].as_array().cloned().unwrap_or_default(),
            })
            .collect();
        schemas.sort_by(|a, b| (a.precedence, &a.name).cmp(&(b.precedence, &b.name)));
        let plcs = store.all(GROUP, PRIORITY_LEVELS);
        let shares = |p: &Value| {
            p["spec"]["limited"]["nominalConcurrencyShares"]
                .as_u64()
                .unwrap_or(30) as usize
        };
        let limited = |p: &Value| p["spec"]["type"] == "Limited";
        let sum: usize = plcs.iter().filter(|p| limited(p)).map(|p| shares(p)).sum();
        let mut levels = HashMap::new();
        for p in &plcs {
            let name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let uid = p["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let queuing = &p["spec"]["limited"]["limitResponse"];
            let (seats, queue_limit) = if limited(p) {
                let seats = (total * shares(p)).div_ceil(sum.max(1)).max(1);
                let queue_limit = if queuing["type"] == "Queue" {
                    let q = &queuing["queuing"];
                    (q["queues"].as_u64().unwrap_or(64)
                        * q["queueLengthLimit"].as_u64().unwrap_or(50)) as usize
                } else {
                    0
                };
                (Some(seats), queue_limit)
            } else {
                (None, 0)
            };
            let kept = old
                .and_then(|o| o.levels.get(&name))
                .filter(|l| l.uid == uid && l.queue_limit == queue_limit && l.limit == seats)
                .cloned();
            let level = kept.unwrap_or_else(|| {
                Arc::new(Level {
                    name: name.clone(),
                    uid,
                    seats: seats.map(|n| Arc::new(Semaphore::new(n))),
                    limit: seats,
                    waiting: AtomicUsize::new(0),
                    queue_limit,
                    queued: AtomicUsize::new(0),
                    rejected: AtomicUsize::new(0),
                })
            });
            levels.insert(name, level);
        }
        Config {
            changed,
            schemas,
            levels,
        }
    }

    fn classify(&self, user: &UserInfo, attrs: &Attributes) -> Option<&Schema> {
        self.schemas
            .iter()
            .find(|s| s.rules.iter().any(|r| rule_matches(r, user, attrs)))
    }
}

/// A `PolicyRulesWithSubjects`: one of its subjects, and one of its
/// resource rules (a resource request) or non-resource rules.
fn rule_matches(rule: &Value, user: &UserInfo, attrs: &Attributes) -> bool {
    let subjects = rule["subjects"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !subjects.iter().any(|s| subject_matches(s, user)) {
        return false;
    }
    match &attrs.path {
        Some(path) => rule["nonResourceRules"].as_array().is_some_and(|rs| {
            rs.iter()
                .any(|r| non_resource_matches(r, &attrs.verb, path))
        }),
        None => rule["resourceRules"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| resource_matches(r, attrs))),
    }
}

fn listed(list: &Value, what: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v == "*" || v == what))
}

fn subject_matches(s: &Value, user: &UserInfo) -> bool {
    let named = |n: &Value| n == "*" || n.as_str() == Some(user.name.as_str());
    match s["kind"].as_str() {
        Some("User") => named(&s["user"]["name"]),
        Some("Group") => {
            let g = &s["group"]["name"];
            g == "*" || user.groups.iter().any(|x| g.as_str() == Some(x.as_str()))
        }
        Some("ServiceAccount") => {
            let Some(rest) = user.name.strip_prefix("system:serviceaccount:") else {
                return false;
            };
            let Some((ns, name)) = rest.split_once(':') else {
                return false;
            };
            let sa = &s["serviceAccount"];
            (sa["namespace"] == ns) && (sa["name"] == "*" || sa["name"] == name)
        }
        _ => false,
    }
}

fn resource_matches(r: &Value, a: &Attributes) -> bool {
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scoped = if a.namespace.is_empty() {
        r["clusterScope"] == true
    } else {
        listed(&r["namespaces"], &a.namespace)
    };
    listed(&r["verbs"], &a.verb)
        && listed(&r["apiGroups"], &a.group)
        && listed(&r["resources"], &resource)
        && scoped
}

fn non_resource_matches(r: &Value, verb: &str, path: &str) -> bool {
    let urls = r["nonResourceURLs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    listed(&r["verbs"], verb)
        && urls.iter().filter_map(Value::as_str).any(|u| {
            u == "*"
                || u == path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix))
        })
}

/// The mandatory and suggested configuration objects of
/// apis/flowcontrol/bootstrap/default.go (Kubernetes 1.33), created at boot.
pub fn bootstrap_objects() -> Vec<Value> {
    let level = |name: &str, shares: u64, queues: u64, hand: u64, limit: u64| {
        json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": name},
            "spec": {"type": "Limited", "limited": {
                "nominalConcurrencyShares": shares,
                "limitResponse": {"type": "Queue", "queuing": {"queues": queues, "handSize": hand, "queueLengthLimit": limit}}
            }}
        })
    };
    let everything = json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": true, "namespaces": ["*"]}]);
    let all_urls = json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}]);
    let schema = |name: &str, precedence: u64, level: &str, rules: Value| {
        json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": name},
            "spec": {
                "matchingPrecedence": precedence,
                "priorityLevelConfiguration": {"name": level},
                "distinguisherMethod": {"type": "ByUser"},
                "rules": rules,
            }
        })
    };
    let group = |g: &str| json!({"kind": "Group", "group": {"name": g}});
    let user = |u: &str| json!({"kind": "User", "user": {"name": u}});
    let leader_election = json!([
        {"verbs": ["get", "create", "update"], "apiGroups": [""], "resources": ["endpoints", "configmaps"], "namespaces": ["kube-system"]},
        {"verbs": ["get", "create", "update"], "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "namespaces": ["*"]}
    ]);
    vec![
        json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": "exempt"},
            "spec": {"type": "Exempt", "exempt": {}}
        }),
        level("system", 30, 64, 6, 50),
        level("node-high", 40, 64, 6, 50),
        level("leader-election", 10, 16, 4, 50),
        level("workload-high", 40, 128, 6, 50),
        level("workload-low", 100, 128, 6, 50),
        level("global-default", 20, 128, 6, 50),
        json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": "catch-all"},
            "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 5, "limitResponse": {"type": "Reject"}}}
        }),
        schema(
            "exempt",
            1,
            "exempt",
            json!([{"subjects": [group("system:masters")], "resourceRules": everything, "nonResourceRules": all_urls}]),
        ),
        schema(
            "probes",
            2,
            "exempt",
            json!([{"subjects": [group("system:unauthenticated"), group("system:authenticated")],
            "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/readyz", "/livez"]}]}]),
        ),
        schema(
            "system-leader-election",
            100,
            "leader-election",
            json!([{"subjects": [user("system:kube-controller-manager"), user("system:kube-scheduler")], "resourceRules": leader_election}]),
        ),
        schema(
            "workload-leader-election",
            200,
            "leader-election",
            json!([{"subjects": [{"kind": "ServiceAccount", "serviceAccount": {"namespace": "kube-system", "name": "*"}}], "resourceRules": leader_election}]),
        ),
        schema(
            "system-node-high",
            400,
            "node-high",
            json!([{"subjects": [group("system:nodes")],
            "resourceRules": [{"verbs": ["*"], "apiGroups": [""], "resources": ["nodes", "nodes/status"], "clusterScope": true},
                              {"verbs": ["*"], "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "namespaces": ["*"]}]}]),
        ),
        schema(
            "system-nodes",
            500,
            "system",
            json!([{"subjects": [group("system:nodes")], "resourceRules": everything, "nonResourceRules": all_urls}]),
        ),
        schema(
            "kube-controller-manager",
            800,
            "workload-high",
            json!([{"subjects": [user("system:kube-controller-manager")], "resourceRules": everything, "nonResourceRules": all_urls}]),
        ),
        schema(
            "kube-scheduler",
            800,
            "workload-high",
            json!([{"subjects": [user("system:kube-scheduler")], "resourceRules": everything, "nonResourceRules": all_urls}]),
        ),
        schema(
            "kube-system-service-accounts",
            900,
            "workload-high",
            json!([{"subjects": [{"kind": "ServiceAccount", "serviceAccount": {"namespace": "kube-system", "name": "*"}}], "resourceRules": everything, "nonResourceRules": all_urls}]),
        ),
        schema(
            "service-accounts",
            9000,
            "workload-low",
            json!([{"subjects": [group("system:serviceaccounts")], "resourceRules": everything, "nonResourceRules": all_urls}]),
        ),
        schema(
            "global-default",
            9900,
            "global-default",
            json!([{"subjects": [group("system:unauthenticated"), group("system:authenticated")], "resourceRules": everything, "nonResourceRules": all_urls}]),
        ),
        schema(
            "catch-all",
            10000,
            "catch-all",
            json!([{"subjects": [group("system:unauthenticated"), group("system:authenticated")], "resourceRules": everything, "nonResourceRules": all_urls}]),
        ),
    ]
}
