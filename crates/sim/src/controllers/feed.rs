//! What the controllers of one cluster know between passes, kept from the
//! store's change feed the way an informer keeps its cache and fills its
//! controllers' queues: which Deployments, pods and Jobs changed (a pod's
//! change queues its Deployment too), and every live bound pod indexed by
//! node, owner and label, as kube-scheduler's cache holds them. A pass
//! then looks at what changed, not at every pod of the cluster. When the
//! feed falls behind (its buffer overflowed), it starts again from the
//! store, as an informer relists after its watch expires, and the next
//! pass looks at everything.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::meta;
use crate::store::{Change, ChangeType, Changes, Key, Store};

/// The resources the controllers act on or read.
const WATCHED: [(&str, &str); 5] = [
    ("", "pods"),
    ("apps", "deployments"),
    ("batch", "jobs"),
    ("", "nodes"),
    ("", "events"),
];

/// What changed since the last pass.
#[derive(Debug, Default)]
pub struct Changed {
    /// Everything needs a look: a node changed, or the feed started again.
    pub everything: bool,
    /// Deployments that changed, or whose pods did.
    pub deployments: BTreeSet<Key>,
    pub pods: BTreeSet<Key>,
    /// Namespaces whose Jobs changed.
    pub jobs: BTreeSet<String>,
    /// A pod left a node: pods waiting for room may fit now.
    pub room: bool,
}

/// Every live (not terminating) bound pod, indexed.
#[derive(Debug, Default)]
pub struct Bound {
    /// Each pod and its node.
    pods: HashMap<Key, (Arc<Value>, String)>,
    on_node: HashMap<String, usize>,
    by_owner: HashMap<String, BTreeSet<Key>>,
    /// (namespace, label key, label value) → pods.
    by_label: HashMap<(String, String, String), BTreeSet<Key>>,
}

/// What of a pod the indexes hold: its node, labels and owners.
fn indexed(pod: &Value) -> (&Value, &Value) {
    (
        &pod["metadata"]["labels"],
        &pod["metadata"]["ownerReferences"],
    )
}

impl Bound {
    /// Pods on a node.
    pub fn on_node(&self) -> &HashMap<String, usize> {
        &self.on_node
    }

    /// A bound pod and its node.
    pub fn get(&self, key: &Key) -> Option<&(Arc<Value>, String)> {
        self.pods.get(key)
    }

    /// The pods whose owner references name `uid`.
    pub fn of_owner(&self, uid: &str) -> impl Iterator<Item = &Key> {
        self.by_owner.get(uid).into_iter().flatten()
    }

    /// The pods in `ns` labelled `key=value`.
    pub fn labelled(&self, ns: &str, key: &str, value: &str) -> impl Iterator<Item = &Key> {
        self.by_label
            .get(&(ns.to_string(), key.to_string(), value.to_string()))
            .into_iter()
            .flatten()
    }

    /// Every pod in `ns` (for a selector with no `key=value` to look up).
    pub fn in_namespace<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = &'a Key> {
        self.pods.keys().filter(move |(n, _)| n == ns)
    }

    /// Keeps the indexes in step with one pod; whether a pod left a node.
    /// The pod is held as the store holds it, not copied.
    fn place(&mut self, pod: &Arc<Value>, exists: bool) -> bool {
        let key = (
            meta::namespace(pod).to_string(),
            meta::name(pod).to_string(),
        );
        let node = pod["spec"]["nodeName"]
            .as_str()
            .filter(|_| exists && !meta::is_terminating(pod));
        if let (Some(n), Some((before, on))) = (node, self.pods.get_mut(&key))
            && n == on
            && indexed(before) == indexed(pod)
        {
            // Most changes are to a pod's status: only the copy held changes.
            *before = pod.clone();
            return false;
        }
        let left = self.remove(&key);
        if let Some(n) = node {
            self.add(key, pod.clone(), n.to_string());
        }
        left
    }

    /// Holds a pod the scheduler has just bound, before its change comes
    /// through the feed, as kube-scheduler assumes a pod in its cache once
    /// it has chosen a node: the next pod placed in the same pass counts it.
    pub fn assume(&mut self, pod: &Arc<Value>) {
        self.place(pod, true);
    }

    fn add(&mut self, key: Key, pod: Arc<Value>, node: String) {
        *self.on_node.entry(node.clone()).or_default() += 1;
        for uid in owner_uids(&pod) {
            self.by_owner
                .entry(uid.to_string())
                .or_default()
                .insert(key.clone());
        }
        for (k, v) in labels(&pod) {
            self.by_label
                .entry((key.0.clone(), k.to_string(), v.to_string()))
                .or_default()
                .insert(key.clone());
        }
        self.pods.insert(key, (pod, node));
    }

    fn remove(&mut self, key: &Key) -> bool {
        let Some((pod, node)) = self.pods.remove(key) else {
            return false;
        };
        if let Some(count) = self.on_node.get_mut(&node) {
            *count = count.saturating_sub(1);
        }
        for uid in owner_uids(&pod) {
            if let Some(set) = self.by_owner.get_mut(uid) {
                set.remove(key);
                if set.is_empty() {
                    self.by_owner.remove(uid);
                }
            }
        }
        for (k, v) in labels(&pod) {
            let index = (key.0.clone(), k.to_string(), v.to_string());
            if let Some(set) = self.by_label.get_mut(&index) {
                set.remove(key);
                if set.is_empty() {
                    self.by_label.remove(&index);
                }
            }
        }
        true
    }
}

/// The UIDs of a pod's owners.
pub fn owner_uids(p: &Value) -> impl Iterator<Item = &str> {
    p["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["uid"].as_str())
}

fn labels(p: &Value) -> impl Iterator<Item = (&str, &str)> {
    p["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
}

/// The Deployment that controls a pod, if one does.
fn controlling_deployment(pod: &Value) -> Option<Key> {
    let owner = pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["apiVersion"] == "apps/v1")?;
    Some((
        meta::namespace(pod).to_string(),
        owner["name"].as_str()?.to_string(),
    ))
}

pub struct Feed {
    store: Arc<Store>,
    changes: Changes,
    changed: Changed,
    bound: Bound,
    /// When the first Event written since the last sweep expires.
    events_due: Option<Timestamp>,
}

impl Feed {
    pub fn start(store: Arc<Store>) -> Feed {
        let (initial, changes) = store.subscribe_to(&WATCHED);
        let mut feed = Feed {
            store,
            changes,
            changed: Changed::default(),
            bound: Bound::default(),
            events_due: None,
        };
        feed.load(initial);
        feed
    }

    fn load(&mut self, initial: Vec<(Key, Arc<Value>)>) {
        self.bound = Bound::default();
        for ((group, resource), obj) in initial {
            if group.is_empty() && resource == "pods" {
                self.bound.place(&obj, true);
            }
        }
        self.changed = Changed {
            everything: true,
            room: true,
            ..Changed::default()
        };
    }

    /// Starts again from the store after falling behind.
    fn resync(&mut self) {
        let (initial, changes) = self.store.subscribe_to(&WATCHED);
        self.changes = changes;
        self.load(initial);
    }

    /// Takes in one change; whether a pass should follow.
    fn absorb(&mut self, c: &Change) -> bool {
        let key = || {
            (
                meta::namespace(&c.object).to_string(),
                meta::name(&c.object).to_string(),
            )
        };
        match (c.group.as_str(), c.resource.as_str()) {
            ("", "pods") => {
                if self.bound.place(&c.object, c.change != ChangeType::Deleted) {
                    self.changed.room = true;
                }
                for pod in std::iter::once(&c.object).chain(&c.previous) {
                    if let Some(d) = controlling_deployment(pod) {
                        self.changed.deployments.insert(d);
                    }
                }
                self.changed.pods.insert(key());
                true
            }
            ("apps", "deployments") => {
                self.changed.deployments.insert(key());
                true
            }
            ("batch", "jobs") => {
                self.changed
                    .jobs
                    .insert(meta::namespace(&c.object).to_string());
                true
            }
            ("", "nodes") => {
                self.changed.everything = true;
                true
            }
            ("", "events") => {
                // A new Event expires an hour from now: the sweep that
                // follows some pass will see it; no pass is needed for it.
                if c.change != ChangeType::Deleted
                    && let Some(t) = super::event_expiry(&c.object)
                {
                    self.events_due = Some(self.events_due.map_or(t, |d| d.min(t)));
                }
                false
            }
            _ => false,
        }
    }

    /// Takes in every change already committed.
    pub fn drain(&mut self) {
        loop {
            match self.changes.try_recv() {
                Ok(c) => {
                    self.absorb(&c);
                }
                Err(TryRecvError::Lagged(_)) => self.resync(),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    /// Waits for a change that calls for a pass.
    pub async fn next(&mut self) {
        loop {
            match self.changes.recv().await {
                Ok(c) => {
                    if self.absorb(&c) {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    self.resync();
                    return;
                }
                // The store outlives its controllers; nothing more will come.
                Err(RecvError::Closed) => std::future::pending().await,
            }
        }
    }

    /// Has the next pass look at everything (a change outside the store).
    pub fn everything(&mut self) {
        self.changed.everything = true;
    }

    /// Whether changes already taken in call for a pass.
    pub fn pending(&self) -> bool {
        let c = &self.changed;
        c.everything
            || c.room
            || !c.deployments.is_empty()
            || !c.pods.is_empty()
            || !c.jobs.is_empty()
    }

    /// What changed since the last call.
    pub fn take(&mut self) -> Changed {
        std::mem::take(&mut self.changed)
    }

    /// Every live bound pod, as of the last change taken in.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// The same, for the scheduler to add the pods it binds.
    pub fn bound_mut(&mut self) -> &mut Bound {
        &mut self.bound
    }

    /// When the first Event written since the last sweep expires (taken).
    pub fn take_events_due(&mut self) -> Option<Timestamp> {
        self.events_due.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Target, WriteOptions};
    use cutover_core::clock::{ScaledClock, SharedClock};
    use proptest::prelude::*;
    use serde_json::json;

    fn store() -> Arc<Store> {
        let clock: SharedClock = Arc::new(ScaledClock::new(Timestamp::now(), 1.0));
        let store = Arc::new(Store::new(clock, 16));
        let namespaces = store.kind_of("", "namespaces").unwrap();
        for i in 0..3 {
            store
                .create(
                    &namespaces,
                    "",
                    json!({"metadata": {"name": format!("ns-{i}")}}),
                    Target::Main,
                    &WriteOptions::default(),
                )
                .unwrap();
        }
        store
    }

    /// Live bound pods per node, read from every pod as the controllers once did.
    fn scanned(store: &Store) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for p in store.all("", "pods") {
            if let Some(n) = p["spec"]["nodeName"].as_str()
                && !meta::is_terminating(&p)
            {
                *out.entry(n.to_string()).or_default() += 1;
            }
        }
        out
    }

    /// Each index of the feed holds what a read of every pod finds.
    fn indexes_agree(store: &Store, feed: &Feed) -> Result<(), TestCaseError> {
        let live: Vec<Arc<Value>> = store
            .all("", "pods")
            .into_iter()
            .filter(|p| p["spec"]["nodeName"].is_string() && !meta::is_terminating(p))
            .collect();
        let bound = feed.bound();
        for ns in 0..3 {
            let ns = format!("ns-{ns}");
            for name in 0..4 {
                let name = format!("pod-{name}");
                for tier in ["0", "1"] {
                    let mut want: Vec<Key> = live
                        .iter()
                        .filter(|p| meta::namespace(p) == ns)
                        .filter(|p| p["metadata"]["labels"]["app"] == name.as_str())
                        .filter(|p| p["metadata"]["labels"]["tier"] == tier)
                        .map(|p| (ns.clone(), meta::name(p).to_string()))
                        .collect();
                    want.sort();
                    let mut got: Vec<Key> = bound
                        .labelled(&ns, "app", &name)
                        .filter(|k| bound.labelled(&ns, "tier", tier).any(|t| t == *k))
                        .cloned()
                        .collect();
                    got.sort();
                    prop_assert_eq!(got, want, "{} {} tier {}", ns, name, tier);
                }
            }
        }
        for name in 0..4 {
            let uid = format!("uid-pod-{name}");
            let mut want: Vec<Key> = live
                .iter()
                .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid.as_str())
                .map(|p| (meta::namespace(p).to_string(), meta::name(p).to_string()))
                .collect();
            want.sort();
            let mut got: Vec<Key> = bound.of_owner(&uid).cloned().collect();
            got.sort();
            prop_assert_eq!(got, want, "owned by {}", uid);
        }
        for p in &live {
            let key = (meta::namespace(p).to_string(), meta::name(p).to_string());
            let held = bound
                .get(&key)
                .map(|(held, node)| (held.clone(), node.clone()));
            prop_assert_eq!(
                held,
                Some((
                    p.clone(),
                    p["spec"]["nodeName"].as_str().unwrap().to_string()
                ))
            );
        }
        Ok(())
    }

    fn counted(feed: &Feed) -> HashMap<String, usize> {
        feed.bound()
            .on_node()
            .iter()
            .filter(|(_, c)| **c > 0)
            .map(|(n, c)| (n.clone(), *c))
            .collect()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Create {
            pod: (u8, u8),
            node: Option<u8>,
            finalizer: bool,
        },
        /// `assume`: the binder adds the pod to the feed's index before
        /// its change comes through, as the scheduler does.
        Bind {
            pod: (u8, u8),
            node: u8,
            assume: bool,
        },
        Delete {
            pod: (u8, u8),
        },
        Finish {
            pod: (u8, u8),
        },
        Relabel {
            pod: (u8, u8),
            tier: u8,
        },
        Node,
        Other,
    }

    fn op() -> impl Strategy<Value = Op> {
        let pod = (0..3u8, 0..4u8);
        prop_oneof![
            (pod.clone(), proptest::option::of(0..3u8), any::<bool>()).prop_map(
                |(pod, node, finalizer)| Op::Create {
                    pod,
                    node,
                    finalizer
                }
            ),
            (pod.clone(), 0..3u8, any::<bool>()).prop_map(|(pod, node, assume)| Op::Bind {
                pod,
                node,
                assume
            }),
            pod.clone().prop_map(|pod| Op::Delete { pod }),
            pod.clone().prop_map(|pod| Op::Finish { pod }),
            (pod, 0..2u8).prop_map(|(pod, tier)| Op::Relabel { pod, tier }),
            Just(Op::Node),
            Just(Op::Other),
        ]
    }

    fn pod_of(op: &Op) -> (u8, u8) {
        match op {
            Op::Create { pod, .. }
            | Op::Bind { pod, .. }
            | Op::Delete { pod }
            | Op::Finish { pod }
            | Op::Relabel { pod, .. } => *pod,
            Op::Node | Op::Other => unreachable!("no pod"),
        }
    }

    fn names((ns, name): (u8, u8)) -> (String, String) {
        (format!("ns-{ns}"), format!("pod-{name}"))
    }

    /// Applies one write; the namespace whose pods it may have changed.
    fn apply(store: &Store, feed: &mut Feed, op: &Op) -> Option<String> {
        let pods = store.kind_of("", "pods").unwrap();
        let opts = WriteOptions::default();
        let (ns, name) = match op {
            Op::Create { pod, .. }
            | Op::Bind { pod, .. }
            | Op::Delete { pod }
            | Op::Finish { pod }
            | Op::Relabel { pod, .. } => names(*pod),
            Op::Node => {
                let nodes = store.kind_of("", "nodes").unwrap();
                let _ = store.modify(&nodes, "", "node-0", Target::All, true, &opts, |cur| {
                    let mut n = cur
                        .cloned()
                        .unwrap_or(json!({"metadata": {"name": "node-0"}}));
                    n["metadata"]["labels"]["tick"] = json!(rand::random::<u32>().to_string());
                    Ok(n)
                });
                return None;
            }
            Op::Other => {
                let cms = store.kind_of("", "configmaps").unwrap();
                let _ = store.modify(&cms, "ns-0", "cm", Target::All, true, &opts, |cur| {
                    let mut c = cur
                        .cloned()
                        .unwrap_or(json!({"metadata": {"name": "cm", "namespace": "ns-0"}}));
                    c["data"]["tick"] = json!(rand::random::<u32>().to_string());
                    Ok(c)
                });
                return None;
            }
        };
        let written = match op {
            Op::Create {
                node, finalizer, ..
            } => {
                // Pods of one name share their Deployment wherever they are.
                let mut p = json!({"metadata": {"name": name, "namespace": ns,
                    "labels": {"app": name, "tier": "0"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                        "name": format!("owner-{name}"), "uid": format!("uid-{name}"), "controller": true}]},
                    "spec": {}});
                if let Some(n) = node {
                    p["spec"]["nodeName"] = json!(format!("node-{n}"));
                }
                if *finalizer {
                    p["metadata"]["finalizers"] = json!(["sim.cutover.dev/hold"]);
                }
                store.create(&pods, &ns, p, Target::All, &opts).is_ok()
            }
            Op::Bind { node, assume, .. } => {
                let bound = store.modify(&pods, &ns, &name, Target::All, false, &opts, |cur| {
                    let mut p = cur.cloned().unwrap_or_default();
                    p["spec"]["nodeName"] = json!(format!("node-{node}"));
                    Ok(p)
                });
                if let (Ok(p), true) = (&bound, assume) {
                    feed.bound_mut().assume(p);
                }
                bound.is_ok()
            }
            Op::Delete { .. } => store.delete(&pods, &ns, &name, &Default::default()).is_ok(),
            Op::Finish { .. } => store
                .modify(&pods, &ns, &name, Target::All, false, &opts, |cur| {
                    let mut p = cur.cloned().unwrap_or_default();
                    p["metadata"]["finalizers"] = json!([]);
                    Ok(p)
                })
                .is_ok(),
            Op::Relabel { tier, .. } => store
                .modify(&pods, &ns, &name, Target::All, false, &opts, |cur| {
                    let mut p = cur.cloned().unwrap_or_default();
                    p["metadata"]["labels"]["tier"] = json!(tier.to_string());
                    Ok(p)
                })
                .is_ok(),
            Op::Node | Op::Other => unreachable!("returned above"),
        };
        written.then_some(ns)
    }

    proptest! {
        /// After any sequence of pod writes, the feed counts on each node
        /// what a read of every pod counts, indexes them by label and owner
        /// as that read finds them, and queues each pod written and its
        /// Deployment.
        #[test]
        fn the_feed_counts_what_a_full_read_counts(ops in proptest::collection::vec(op(), 1..60)) {
            let store = store();
            let mut feed = Feed::start(store.clone());
            prop_assert!(feed.take().everything);
            let pods = store.kind_of("", "pods").unwrap();
            for op in &ops {
                let before = scanned(&store);
                let new = match op {
                    Op::Create { pod, .. } => {
                        let (ns, name) = names(*pod);
                        store.get(&pods, &ns, &name).is_err()
                    }
                    _ => false,
                };
                let rv = store.resource_version();
                let ns = apply(&store, &mut feed, op);
                prop_assert!(ns.is_some() || !new, "{:?} was refused", op);
                // A delete of what is already being deleted writes nothing.
                let ns = ns.filter(|_| store.resource_version() != rv);
                feed.drain();
                let after = scanned(&store);
                prop_assert_eq!(counted(&feed), after.clone(), "after {:?}", op);
                indexes_agree(&store, &feed)?;
                let changed = feed.take();
                if let Some(ns) = ns {
                    let (_, name) = names(pod_of(op));
                    let key = (ns.clone(), name.clone());
                    prop_assert!(changed.pods.contains(&key), "{:?} queues its pod", op);
                    let owner = (ns, format!("owner-{name}"));
                    prop_assert!(changed.deployments.contains(&owner), "{:?} queues its Deployment", op);
                }
                prop_assert_eq!(changed.everything, matches!(op, Op::Node));
                if after.values().sum::<usize>() < before.values().sum::<usize>() {
                    prop_assert!(changed.room, "{:?} freed room", op);
                }
                if matches!(op, Op::Other) {
                    prop_assert!(changed.pods.is_empty() && changed.deployments.is_empty());
                }
            }
        }
    }

    /// A feed that falls behind its buffer starts again from the store, as
    /// an informer relists, and has the next pass look at everything.
    #[test]
    fn a_feed_that_falls_behind_starts_again_from_the_store() {
        let store = store();
        let mut feed = Feed::start(store.clone());
        feed.take();
        for i in 0..5000u32 {
            let op = Op::Create {
                pod: ((i % 3) as u8, 0),
                node: Some((i % 3) as u8),
                finalizer: false,
            };
            let pods = store.kind_of("", "pods").unwrap();
            if i >= 3 {
                let (ns, name) = names(((i % 3) as u8, 0));
                store
                    .delete(&pods, &ns, &name, &Default::default())
                    .unwrap();
            }
            apply(&store, &mut feed, &op).unwrap();
        }
        feed.drain();
        assert!(feed.take().everything);
        assert_eq!(counted(&feed), scanned(&store));
        assert_eq!(counted(&feed).values().sum::<usize>(), 3);
    }
}
