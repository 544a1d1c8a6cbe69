//! What the users behind a simulated cluster's gateway met, kept from the
//! store's stream of changes so that no state between two looks is missed:
//! every change after which a route or Service sent requests where no Ready
//! pod could take them (503s for users), every deletion of a Deployment,
//! Service or HTTPRoute with whether requests still reached it, and the
//! largest share of its cluster's traffic each app version ever took.
//!
//! For tests that check invariants over whole rollouts; off unless asked for
//! (`SimFleet::audit`). Owns the record; the gateway decides where requests go.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use super::gateway::{Flow, Routing};
use super::meta;
use super::store::{ChangeType, Key, Store};
use cutover_core::labels::{APP, COLOUR, MANAGED_BY, MANAGED_BY_VALUE};

const ROUTES: (&str, &str) = ("gateway.networking.k8s.io", "httproutes");
const WATCHED: [(&str, &str); 4] = [
    ROUTES,
    ("", "services"),
    ("", "pods"),
    ("apps", "deployments"),
];

/// Incidents kept in full; the counts go on past them.
const KEPT: usize = 50;

/// Requests that found no Ready pod, as of one change.
#[derive(Debug, Clone, PartialEq)]
pub struct Unserved {
    pub cluster: String,
    /// The resourceVersion of the change after which they failed.
    pub rv: u64,
    pub app: String,
    pub version: String,
    pub colour: String,
    pub rps: f64,
    pub at: Timestamp,
}

/// One deletion of a Deployment, Service or HTTPRoute.
#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    pub cluster: String,
    pub resource: String,
    pub namespace: String,
    pub name: String,
    /// Labelled `app.kubernetes.io/managed-by: cutover`.
    pub managed: bool,
    /// Requests reached the pods it selected (or, for a route, its app) when it went.
    pub serving: bool,
    pub rv: u64,
}

#[derive(Debug, Default)]
struct State {
    unserved: Vec<Unserved>,
    unserved_changes: u64,
    deletions: Vec<Deletion>,
    /// (cluster, app, version) → the largest share (0..=1) of the app's requests in the cluster.
    peaks: BTreeMap<(String, String, String), f64>,
    changes: u64,
    lost: u64,
}

/// The record of every audited cluster of a fleet.
#[derive(Debug, Default)]
pub struct Audit {
    state: Mutex<State>,
}

impl Audit {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first incidents of requests finding no Ready pod.
    pub fn unserved(&self) -> Vec<Unserved> {
        self.lock().unserved.clone()
    }

    /// How many changes left requests without a Ready pod.
    pub fn unserved_changes(&self) -> u64 {
        self.lock().unserved_changes
    }

    /// Every deletion seen (the first ones, when there were very many).
    pub fn deletions(&self) -> Vec<Deletion> {
        self.lock().deletions.clone()
    }

    /// The largest share (0..=1) of `app`'s requests in `cluster` that `version` took.
    pub fn peak_share(&self, cluster: &str, app: &str, version: &str) -> f64 {
        self.lock()
            .peaks
            .get(&(cluster.into(), app.into(), version.into()))
            .copied()
            .unwrap_or(0.0)
    }

    /// Changes looked at, over all clusters.
    pub fn changes(&self) -> u64 {
        self.lock().changes
    }

    /// Changes the audit fell too far behind to see (it then read the
    /// clusters afresh); a complete record has none.
    pub fn lost(&self) -> u64 {
        self.lock().lost
    }

    fn observe(&self, cluster: &str, rv: u64, at: Timestamp, flows: &[Flow]) {
        let mut st = self.lock();
        st.changes += 1;
        let mut of_app: HashMap<&str, f64> = HashMap::new();
        let mut of_version: HashMap<(&str, &str), f64> = HashMap::new();
        let mut failed = false;
        for f in flows.iter().filter(|f| f.rps > 0.0) {
            *of_app.entry(&f.app).or_default() += f.rps;
            *of_version.entry((&f.app, &f.version)).or_default() += f.rps;
            if !f.served {
                failed = true;
                if st.unserved.len() < KEPT {
                    st.unserved.push(Unserved {
                        cluster: cluster.to_string(),
                        rv,
                        app: f.app.clone(),
                        version: f.version.clone(),
                        colour: f.colour.clone(),
                        rps: f.rps,
                        at,
                    });
                }
            }
        }
        st.unserved_changes += u64::from(failed);
        for ((app, version), rps) in of_version {
            let share = rps / of_app[app];
            let peak = st
                .peaks
                .entry((cluster.to_string(), app.to_string(), version.to_string()))
                .or_default();
            *peak = peak.max(share);
        }
    }

    fn deleted(&self, d: Deletion) {
        let mut st = self.lock();
        if st.deletions.len() < 10 * KEPT {
            st.deletions.push(d);
        }
    }

    /// Follows one cluster's changes until `stop`.
    pub(crate) async fn follow(
        self: Arc<Self>,
        cluster: String,
        rps: f64,
        store: Arc<Store>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut mirror = Mirror::read(&store);
        let mut flows = mirror.routing.flows(rps);
        self.observe(
            &cluster,
            store.resource_version(),
            store.clock().now(),
            &flows,
        );
        loop {
            let change = tokio::select! {
                c = mirror.live.recv() => c,
                _ = stop.changed() => return,
            };
            let c = match change {
                Ok(c) => c,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lock().lost += n;
                    mirror = Mirror::read(&store);
                    flows = mirror.routing.flows(rps);
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let resource = (c.group.clone(), c.resource.clone());
            let Some(objects) = mirror.objects.get_mut(&resource) else {
                continue;
            };
            let key = (
                meta::namespace(&c.object).to_string(),
                meta::name(&c.object).to_string(),
            );
            if c.change == ChangeType::Deleted {
                if c.resource != "pods" {
                    self.deleted(Deletion {
                        cluster: cluster.clone(),
                        resource: c.resource.clone(),
                        namespace: key.0.clone(),
                        name: key.1.clone(),
                        managed: meta::label(&c.object, MANAGED_BY) == Some(MANAGED_BY_VALUE),
                        serving: reaches(&c.object, &c.resource, &flows),
                        rv: c.rv,
                    });
                }
                objects.remove(&key);
            } else {
                objects.insert(key, c.object.clone());
            }
            if mirror.routing.apply(&c) {
                flows = mirror.routing.flows(rps);
            }
            if c.resource != "deployments" {
                self.observe(&cluster, c.rv, store.clock().now(), &flows);
            }
        }
    }
}

/// Whether requests reach what `obj` stands for: a Deployment's or a
/// Service's pods (by app and colour), or a route's app.
fn reaches(obj: &Value, resource: &str, flows: &[Flow]) -> bool {
    let labels = if resource == "services" {
        &obj["spec"]["selector"]
    } else {
        &obj["metadata"]["labels"]
    };
    let app = labels[APP].as_str();
    let colour = labels[COLOUR].as_str();
    flows.iter().any(|f| {
        f.served
            && f.rps > 0.0
            && app.is_none_or(|a| a == f.app)
            && (resource == ROUTES.1 || colour.is_none_or(|c| c == f.colour))
    })
}

/// A copy of a cluster's routes, Services, pods and Deployments, kept
/// current from its changes, and its routing.
struct Mirror {
    objects: HashMap<Key, BTreeMap<Key, Arc<Value>>>,
    live: broadcast::Receiver<Arc<super::store::Change>>,
    routing: Routing,
}

impl Mirror {
    fn read(store: &Store) -> Mirror {
        let (initial, live) = store.subscribe_to(&WATCHED);
        let mut objects: HashMap<Key, BTreeMap<Key, Arc<Value>>> = WATCHED
            .iter()
            .map(|(g, r)| ((g.to_string(), r.to_string()), BTreeMap::new()))
            .collect();
        // The routing takes in what it reads and passes over the rest.
        let routing = Routing::of_objects(initial.iter().cloned());
        for (resource, obj) in initial {
            let key = (
                meta::namespace(&obj).to_string(),
                meta::name(&obj).to_string(),
            );
            objects.entry(resource).or_default().insert(key, obj);
        }
        Mirror {
            objects,
            live,
            routing,
        }
    }
}
