//! What the controllers of one cluster know between passes, kept from the
//! store's change feed the way an informer keeps its cache: which
//! namespaces changed, which node each live pod is bound to, and when the
//! oldest Event expires. A pass then reads only what changed, not every pod
//! of the cluster. When the feed falls behind (its buffer overflowed), it
//! starts again from the store, as an informer relists after a watch
//! expires, and the next pass looks at everything.

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
    /// Every namespace needs a look: a node changed, or the feed started again.
    pub everything: bool,
    /// Namespaces whose pods, Deployments or Jobs changed.
    pub namespaces: BTreeSet<String>,
    /// A pod left a node: pods waiting for room may fit now.
    pub room: bool,
}

pub struct Feed {
    store: Arc<Store>,
    changes: Changes,
    changed: Changed,
    /// The node of each live (not terminating) bound pod.
    node_of: HashMap<Key, String>,
    /// Live bound pods per node.
    on_node: HashMap<String, usize>,
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
            node_of: HashMap::new(),
            on_node: HashMap::new(),
            events_due: None,
        };
        feed.load(initial);
        feed
    }

    fn load(&mut self, initial: Vec<(Key, Arc<Value>)>) {
        self.node_of.clear();
        self.on_node.clear();
        for ((group, resource), obj) in initial {
            if group.is_empty() && resource == "pods" {
                self.place(&obj, true);
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
        let ns = meta::namespace(&c.object);
        match (c.group.as_str(), c.resource.as_str()) {
            ("", "pods") => {
                self.place(&c.object, c.change != ChangeType::Deleted);
                self.changed.namespaces.insert(ns.to_string());
                true
            }
            ("apps", "deployments") | ("batch", "jobs") => {
                self.changed.namespaces.insert(ns.to_string());
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

    /// Keeps `node_of` and `on_node` in step with one pod.
    fn place(&mut self, pod: &Value, exists: bool) {
        let key = (
            meta::namespace(pod).to_string(),
            meta::name(pod).to_string(),
        );
        let node = pod["spec"]["nodeName"]
            .as_str()
            .filter(|_| exists && !meta::is_terminating(pod));
        let before = match node {
            Some(n) => self.node_of.insert(key, n.to_string()),
            None => self.node_of.remove(&key),
        };
        if before.as_deref() == node {
            return;
        }
        if let Some(b) = before {
            if let Some(count) = self.on_node.get_mut(&b) {
                *count = count.saturating_sub(1);
            }
            self.changed.room = true;
        }
        if let Some(n) = node {
            *self.on_node.entry(n.to_string()).or_default() += 1;
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

    /// What changed since the last call.
    pub fn take(&mut self) -> Changed {
        std::mem::take(&mut self.changed)
    }

    /// Live bound pods per node.
    pub fn on_node(&self) -> &HashMap<String, usize> {
        &self.on_node
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

    fn counted(feed: &Feed) -> HashMap<String, usize> {
        feed.on_node()
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
        Bind {
            pod: (u8, u8),
            node: u8,
        },
        Delete {
            pod: (u8, u8),
        },
        Finish {
            pod: (u8, u8),
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
            (pod.clone(), 0..3u8).prop_map(|(pod, node)| Op::Bind { pod, node }),
            pod.clone().prop_map(|pod| Op::Delete { pod }),
            pod.prop_map(|pod| Op::Finish { pod }),
            Just(Op::Node),
            Just(Op::Other),
        ]
    }

    fn names((ns, name): (u8, u8)) -> (String, String) {
        (format!("ns-{ns}"), format!("pod-{name}"))
    }

    /// Applies one write; the namespace whose pods it may have changed.
    fn apply(store: &Store, op: &Op) -> Option<String> {
        let pods = store.kind_of("", "pods").unwrap();
        let opts = WriteOptions::default();
        let (ns, name) = match op {
            Op::Create { pod, .. }
            | Op::Bind { pod, .. }
            | Op::Delete { pod }
            | Op::Finish { pod } => names(*pod),
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
                let mut p = json!({"metadata": {"name": name, "namespace": ns}, "spec": {}});
                if let Some(n) = node {
                    p["spec"]["nodeName"] = json!(format!("node-{n}"));
                }
                if *finalizer {
                    p["metadata"]["finalizers"] = json!(["sim.cutover.dev/hold"]);
                }
                store.create(&pods, &ns, p, Target::All, &opts).is_ok()
            }
            Op::Bind { node, .. } => store
                .modify(&pods, &ns, &name, Target::All, false, &opts, |cur| {
                    let mut p = cur.cloned().unwrap_or_default();
                    p["spec"]["nodeName"] = json!(format!("node-{node}"));
                    Ok(p)
                })
                .is_ok(),
            Op::Delete { .. } => store.delete(&pods, &ns, &name, &Default::default()).is_ok(),
            Op::Finish { .. } => store
                .modify(&pods, &ns, &name, Target::All, false, &opts, |cur| {
                    let mut p = cur.cloned().unwrap_or_default();
                    p["metadata"]["finalizers"] = json!([]);
                    Ok(p)
                })
                .is_ok(),
            Op::Node | Op::Other => unreachable!("returned above"),
        };
        written.then_some(ns)
    }

    proptest! {
        /// After any sequence of pod writes, the feed counts on each node
        /// what a read of every pod counts, and names each namespace written.
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
                let ns = apply(&store, op);
                prop_assert!(ns.is_some() || !new, "{:?} was refused", op);
                // A delete of what is already being deleted writes nothing.
                let ns = ns.filter(|_| store.resource_version() != rv);
                feed.drain();
                let after = scanned(&store);
                prop_assert_eq!(counted(&feed), after.clone(), "after {:?}", op);
                let changed = feed.take();
                if let Some(ns) = ns {
                    prop_assert!(changed.namespaces.contains(&ns), "{:?} names {}", op, ns);
                }
                prop_assert_eq!(changed.everything, matches!(op, Op::Node));
                if after.values().sum::<usize>() < before.values().sum::<usize>() {
                    prop_assert!(changed.room, "{:?} freed room", op);
                }
                if matches!(op, Op::Other) {
                    prop_assert_eq!(changed.namespaces.len(), 0);
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
            apply(&store, &op).unwrap();
        }
        feed.drain();
        assert!(feed.take().everything);
        assert_eq!(counted(&feed), scanned(&store));
        assert_eq!(counted(&feed).values().sum::<usize>(), 3);
    }
}
