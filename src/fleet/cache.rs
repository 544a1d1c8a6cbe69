//! A release's view of the shared watches (`watches`): per cluster, its app's
//! Deployments (as slot workloads) and pods (as `PodView`s: what is read of
//! them, not the objects), the nodes, its route and the deploy freezes, so a
//! waiting step reads memory, not the API. A cluster is reachable while every
//! watch the release reads there is healthy. An event about the release's own
//! objects (or nodes, freezes, a watch failing or recovering) wakes its driver;
//! other releases' events do not.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Pod};
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::Notify;

use super::lease::LeaseView;
use super::observe::PodView;
use super::router::reading;
use super::watches::{self, Registry, SharedWatch};
use super::workload::SlotWorkload;
use super::{ClusterHandle, FleetClients};
use crate::freeze::DeployFreeze;
use crate::labels;
use crate::spec::ResolvedRelease;

/// Every shared watch of a process, by cluster (and namespace).
#[derive(Default)]
pub struct Watches {
    deployments: Registry<(String, String), SlotWorkload>,
    pods: Registry<(String, String), PodView>,
    routes: Registry<(String, String, &'static str), Box<str>>,
    nodes: Registry<String, Node>,
    freezes: Registry<String, DeployFreeze>,
    releases: Registry<(String, String), String>,
    leases: Registry<String, LeaseView>,
}

impl Watches {
    /// The deploy freezes of one cluster (every one under the key `""`),
    /// shared with every release that reads them there.
    pub fn freezes(&self, cluster: &ClusterHandle) -> Arc<SharedWatch<DeployFreeze>> {
        freezes_watch(self, &cluster.name, &cluster.watches)
    }

    /// Every Lease cutover holds in a cluster (its managed-by label), in
    /// every namespace, indexed by `namespace/name`: who drives which
    /// release, and which controller replicas are alive, read from memory.
    pub fn leases(&self, cluster: &ClusterHandle) -> Arc<SharedWatch<LeaseView>> {
        let client = cluster.watches.clone();
        self.leases.obtain(cluster.name.clone(), || {
            let mine = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
            watches::start(
                "leases",
                Api::all(client.clone()),
                watcher::Config::default().labels(&mine),
                lease_index,
                |l: Lease| Some(LeaseView::of(l)),
                client,
            )
        })
    }

    /// The resourceVersion of each Release of `namespace` in the home
    /// cluster, indexed by name. Read untyped: one Release the server
    /// stored but cutover cannot decode (a spec the CRD's schema allows
    /// and its own decoding refuses, such as a gate's `interval: soon`)
    /// would fail every list of the namespace, and with it every driver's
    /// sight of a person's pause or abort.
    pub fn releases(&self, home: &ClusterHandle, namespace: &str) -> Arc<SharedWatch<String>> {
        let client = home.watches.clone();
        self.releases
            .obtain((home.name.clone(), namespace.to_string()), || {
                watches::start(
                    "releases",
                    Api::namespaced_with(
                        client.clone(),
                        namespace,
                        &super::state::release_resource(),
                    ),
                    watcher::Config::default(),
                    |r: &DynamicObject| r.name_any(),
                    // Its version wakes the driver, which reads the whole
                    // Release when someone else changed it: neither spec nor
                    // status is kept for every release of the namespace by
                    // every process.
                    |r: DynamicObject| r.metadata.resource_version,
                    client,
                )
            })
    }
}

/// What is read of a Node (its name, labels, whether it takes pods, its
/// taints and its Ready condition): a node's status (images, addresses,
/// capacity, its system's details) is most of its bytes.
fn trim_node(n: Node) -> Option<Node> {
    let ready = n
        .status
        .and_then(|s| s.conditions)
        .and_then(|cs| cs.into_iter().find(|c| c.type_ == "Ready"));
    Some(Node {
        metadata: kube::api::ObjectMeta {
            name: n.metadata.name,
            labels: n.metadata.labels,
            ..Default::default()
        },
        spec: n.spec.map(|s| NodeSpec {
            unschedulable: s.unschedulable,
            taints: s.taints,
            ..Default::default()
        }),
        status: Some(NodeStatus {
            conditions: ready.map(|c| vec![c]),
            ..Default::default()
        }),
    })
}

/// Index key of a Lease in `Watches::leases`: `namespace/name`, but the
/// controller replicas' Leases of a namespace all under `replicas_key(ns)`.
fn lease_index(l: &Lease) -> String {
    lease_key(&l.namespace().unwrap_or_default(), &l.name_any())
}

/// Key under which `Watches::leases` keeps the Lease `namespace/name`.
pub fn lease_key(namespace: &str, name: &str) -> String {
    if name.starts_with(super::lease::REPLICA_PREFIX) {
        replicas_key(namespace)
    } else {
        format!("{namespace}/{name}")
    }
}

/// Key of the controller replicas' Leases of `namespace` in `Watches::leases`
/// (no Lease's name has a `*`).
pub fn replicas_key(namespace: &str) -> String {
    format!("{namespace}/*replicas")
}

fn by_app<K: Resource>(o: &K) -> String {
    o.labels().get(labels::APP).cloned().unwrap_or_default()
}

fn everything<K>(_: &K) -> String {
    String::new()
}

/// What one cluster's watches hold for one release.
#[derive(Clone)]
pub struct ClusterCache {
    app: String,
    route: String,
    deployments: Arc<SharedWatch<SlotWorkload>>,
    pods: Arc<SharedWatch<PodView>>,
    nodes: Arc<SharedWatch<Node>>,
    routes: Arc<SharedWatch<Box<str>>>,
    freezes: Arc<SharedWatch<DeployFreeze>>,
}

impl ClusterCache {
    /// `Ok` while every watch this release reads is healthy; otherwise why not.
    pub fn reachable(&self) -> Result<(), String> {
        self.deployments.healthy()?;
        self.nodes.healthy()?;
        self.pods.healthy()?;
        self.routes.healthy()
    }

    /// Whether this cluster's freezes are known (their watch is healthy).
    pub fn freezes_readable(&self) -> Result<(), String> {
        freezes_state(&self.freezes)
    }

    /// The app's Deployments that hold a slot (carry a colour), as slot workloads.
    pub fn deployments(&self) -> Vec<Arc<SlotWorkload>> {
        self.deployments.get(&self.app)
    }

    /// The app's pods.
    pub fn pods(&self) -> Vec<Arc<PodView>> {
        self.pods.get(&self.app)
    }

    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.get("")
    }

    /// What is read of the release's route (or replica-ratio Service):
    /// `router::reading`.
    pub fn route(&self) -> Option<serde_json::Value> {
        let text = self.routes.get(&self.route).into_iter().next()?;
        serde_json::from_str(&text).ok()
    }

    pub fn freezes(&self) -> Vec<Arc<DeployFreeze>> {
        self.freezes.get("")
    }

    fn subscribe(&self, notify: &Arc<Notify>) {
        self.deployments.subscribe(&self.app, notify);
        self.pods.subscribe(&self.app, notify);
        self.nodes.subscribe("", notify);
        self.routes.subscribe(&self.route, notify);
        self.freezes.subscribe("", notify);
    }
}

/// The caches of every cluster of one release, and the signal that something changed.
pub struct FleetCache {
    pub clusters: BTreeMap<String, ClusterCache>,
    /// The home cluster's freezes when home is not one of the release's
    /// clusters: its copy of every freeze is the record, so they bind too.
    pub home_freezes: Option<(String, HomeFreezes)>,
    changed: Arc<Notify>,
}

/// The freezes of the home cluster, for a release that does not run there.
#[derive(Clone)]
pub struct HomeFreezes(Arc<SharedWatch<DeployFreeze>>);

impl HomeFreezes {
    pub fn readable(&self) -> Result<(), String> {
        freezes_state(&self.0)
    }

    pub fn freezes(&self) -> Vec<Arc<DeployFreeze>> {
        self.0.get("")
    }
}

fn freezes_state(w: &SharedWatch<DeployFreeze>) -> Result<(), String> {
    match w.state() {
        watches::WatchState::Healthy => Ok(()),
        watches::WatchState::Failing(e) => Err(e),
        watches::WatchState::Starting => Err("not listed yet".into()),
    }
}

fn freezes_watch(
    w: &Watches,
    cluster: &str,
    client: &kube::Client,
) -> Arc<SharedWatch<DeployFreeze>> {
    w.freezes.obtain(cluster.to_string(), || {
        watches::start(
            "deployfreezes",
            Api::all(client.clone()),
            watcher::Config::default(),
            everything,
            |mut o: DeployFreeze| {
                o.managed_fields_mut().clear();
                Some(o)
            },
            client.clone(),
        )
    })
}

impl FleetCache {
    /// A view of no cluster: for tests of what reads no cache.
    #[cfg(test)]
    pub fn empty() -> FleetCache {
        FleetCache {
            clusters: BTreeMap::new(),
            home_freezes: None,
            changed: Arc::new(Notify::new()),
        }
    }

    /// The view of every cluster of `rel`, starting the watches no other release has started.
    pub fn start(fleet: &FleetClients, rel: &ResolvedRelease) -> FleetCache {
        let changed = Arc::new(Notify::new());
        let w = &fleet.watches;
        let mut clusters = BTreeMap::new();
        for target in &rel.clusters {
            let Ok(handle) = fleet.get(&target.name) else {
                continue;
            };
            let client = handle.watches.clone();
            let ns = rel.namespace.as_str();
            let here = (target.name.clone(), ns.to_string());
            // Every workload and pod of an app carries the app label; others are not kept.
            let has_app = || watcher::Config::default().labels(labels::APP);
            let deployments = w.deployments.obtain(here.clone(), || {
                watches::start(
                    "deployments",
                    Api::namespaced(client.clone(), ns),
                    has_app(),
                    by_app,
                    // What the slot assignment reads, not the Deployment:
                    // every app of the namespace is cached.
                    |d: Deployment| SlotWorkload::from_deployment(&d),
                    client.clone(),
                )
            });
            let pods = w.pods.obtain(here.clone(), || {
                watches::start(
                    "pods",
                    Api::namespaced(client.clone(), ns),
                    has_app(),
                    by_app,
                    |p: Pod| Some(PodView::of(&p)),
                    client.clone(),
                )
            });
            let nodes = w.nodes.obtain(target.name.clone(), || {
                watches::start(
                    "nodes",
                    Api::all(client.clone()),
                    watcher::Config::default(),
                    everything,
                    trim_node,
                    client.clone(),
                )
            });
            // The traffic router: an HTTPRoute, or the Service of a replica-ratio router.
            let (ar, kind) = super::router::resource(target.router.kind);
            let routes = w
                .routes
                .obtain((target.name.clone(), ns.to_string(), kind), || {
                    watches::start(
                        "routes",
                        Api::namespaced_with(client.clone(), ns, &ar),
                        watcher::Config::default(),
                        |o: &DynamicObject| o.name_any(),
                        // What the views read, not the object, and as
                        // text: every route of the namespace is cached,
                        // and even that reading is a few KB as JSON
                        // values (each object a map node of its own); a
                        // pass reads one route a cluster.
                        |o: DynamicObject| {
                            let v = serde_json::to_value(&o).ok()?;
                            Some(reading(&v).to_string().into_boxed_str())
                        },
                        client.clone(),
                    )
                });
            let freezes = freezes_watch(w, &target.name, &client);
            let cc = ClusterCache {
                app: rel.app.clone(),
                route: target.router.route.clone(),
                deployments,
                pods,
                nodes,
                routes,
                freezes,
            };
            cc.subscribe(&changed);
            clusters.insert(target.name.clone(), cc);
        }
        let home = fleet.home();
        let home_freezes = (!clusters.contains_key(&home.name)).then(|| {
            let watch = freezes_watch(w, &home.name, &home.watches);
            watch.subscribe("", &changed);
            (home.name.clone(), HomeFreezes(watch))
        });
        FleetCache {
            clusters,
            home_freezes,
            changed,
        }
    }

    /// Resolves when any watched object changed or a watch failed or recovered since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// A handle that wakes waiters, for other sources of change (the Release object, gates).
    pub fn notifier(&self) -> Arc<Notify> {
        self.changed.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::lease::HELD_UNDER;
    use crate::fleet::observe::node_info;
    use crate::gates::providers::health;

    /// A replica reads the same of a kept Lease as of the Lease itself:
    /// its name, holder, times and the Lease it is held under.
    #[test]
    fn a_kept_lease_keeps_what_the_replicas_read() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1",
                "resourceVersion": "42",
                "labels": {"app.kubernetes.io/managed-by": "cutover", "app": "web"},
                "annotations": {HELD_UNDER: "shop/cutover-controller-replica-a", "note": "x"},
                "managedFields": [{"manager": "cutover"}]},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
                "renewTime": "2026-01-01T00:00:00.000000Z"}
        }))
        .unwrap();
        let kept = LeaseView::of(lease.clone());
        assert_eq!(kept.spec, lease.spec);
        assert_eq!(lease_key(&kept.namespace, &kept.name), lease_index(&lease));
        assert_eq!(
            kept.parent_reference(),
            crate::fleet::lease::parent_reference(&lease)
        );
        assert_eq!(
            kept.parent_reference(),
            Some(("shop", "cutover-controller-replica-a"))
        );
        assert_eq!(kept.live_holder(), crate::fleet::lease::live_holder(&lease));
        let unheld = LeaseView::of(Lease::default());
        assert_eq!(
            (unheld.parent_reference(), unheld.live_holder()),
            (None, None)
        );
    }

    /// Placement and the health gate read the same of a kept Node as of
    /// the Node itself; its status's images, addresses and capacity go.
    #[test]
    fn a_kept_node_keeps_what_placement_and_health_read() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "uid": "u-1",
                "labels": {"topology.kubernetes.io/zone": "zone-a", "disk": "ssd"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"unschedulable": true, "podCIDR": "10.0.0.0/24",
                "taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": "False", "reason": "KubeletNotReady"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "capacity": {"cpu": "4"},
                "images": [{"names": ["web:1"], "sizeBytes": 1}]}
        }))
        .unwrap();
        let kept = trim_node(node.clone()).unwrap();
        assert_eq!(node_info(&kept), node_info(&node));
        let (whole, trimmed) = (
            health::assess(&[], &[Arc::new(node)], "green", "2"),
            health::assess(&[], &[Arc::new(kept.clone())], "green", "2"),
        );
        assert_eq!(whole.not_ready_nodes, trimmed.not_ready_nodes);
        assert_eq!(trimmed.not_ready_nodes, ["n1 (False, zone zone-a)"]);
        let status = kept.status.unwrap();
        assert_eq!(status.conditions.map(|c| c.len()), Some(1));
        assert_eq!(
            (status.addresses, status.capacity, status.images),
            (None, None, None)
        );
        assert_eq!(kept.spec.unwrap().pod_cidr, None);
    }
}
