//! Watch caches: per cluster, reflectors over the app's Deployments and pods,
//! the nodes and the route, so a waiting step reads memory, not the API. A
//! cluster is reachable while every one of its watches is healthy. Any event
//! wakes the driver.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector::store::Writer};
use kube::{Resource, ResourceExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::FleetClients;
use super::router::http_route_resource;
use crate::labels;
use crate::spec::ResolvedRelease;
use crate::spec::RouterKind;

/// What one cluster's watches hold.
#[derive(Clone)]
pub struct ClusterCache {
    pub deployments: Store<Deployment>,
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    pub routes: Store<DynamicObject>,
    pub freezes: Store<crate::freeze::DeployFreeze>,
    health: Arc<Mutex<BTreeMap<&'static str, WatchState>>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum WatchState {
    Starting,
    Healthy,
    Failing(String),
}

impl ClusterCache {
    /// `Ok` while every watch is healthy; otherwise why not.
    pub fn reachable(&self) -> Result<(), String> {
        let health = self.health.lock().expect("health lock");
        for (kind, state) in health.iter().filter(|(k, _)| **k != FREEZES) {
            match state {
                WatchState::Healthy => {}
                WatchState::Starting => return Err(format!("{kind} not listed yet")),
                WatchState::Failing(e) => return Err(format!("{kind}: {e}")),
            }
        }
        Ok(())
    }
}

const FREEZES: &str = "deployfreezes";

impl ClusterCache {
    /// Whether this cluster's freezes are known (their watch is healthy).
    pub fn freezes_readable(&self) -> Result<(), String> {
        match self.health.lock().expect("health lock").get(FREEZES) {
            Some(WatchState::Healthy) => Ok(()),
            Some(WatchState::Failing(e)) => Err(e.clone()),
            _ => Err("not listed yet".into()),
        }
    }
}

/// The caches of every cluster of one release, and the signal that something changed.
pub struct FleetCache {
    pub clusters: BTreeMap<String, ClusterCache>,
    changed: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FleetCache {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FleetCache {
    /// Starts the watches of every cluster of `rel`.
    pub fn start(fleet: &FleetClients, rel: &ResolvedRelease) -> FleetCache {
        let changed = Arc::new(Notify::new());
        let mut clusters = BTreeMap::new();
        let mut tasks = Vec::new();
        let app = format!("{}={}", labels::APP, rel.app);
        for target in &rel.clusters {
            let Ok(handle) = fleet.get(&target.name) else {
                continue;
            };
            let client = handle.client.clone();
            let ns = rel.namespace.as_str();
            let health = Arc::new(Mutex::new(BTreeMap::new()));
            let strip = |o: &mut Deployment| o.managed_fields_mut().clear();
            let deployments = watch(
                "deployments",
                Api::<Deployment>::namespaced(client.clone(), ns),
                watcher::Config::default().labels(&app),
                Writer::default(),
                strip,
                &health,
                &changed,
                &mut tasks,
            );
            let pods = watch(
                "pods",
                Api::<Pod>::namespaced(client.clone(), ns),
                watcher::Config::default().labels(&app),
                Writer::default(),
                |o: &mut Pod| o.managed_fields_mut().clear(),
                &health,
                &changed,
                &mut tasks,
            );
            let nodes = watch(
                "nodes",
                Api::<Node>::all(client.clone()),
                watcher::Config::default(),
                Writer::default(),
                |o: &mut Node| {
                    o.managed_fields_mut().clear();
                    if let Some(s) = o.status.as_mut() {
                        s.images = None;
                    }
                },
                &health,
                &changed,
                &mut tasks,
            );
            // The traffic router: an HTTPRoute, or the Service of a replica-ratio router.
            let ar = match target.router.kind {
                RouterKind::GatewayHttpRoute => http_route_resource(),
                RouterKind::ReplicaRatio => super::replica_ratio::service_resource(),
            };
            let routes = watch(
                "routes",
                Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
                watcher::Config::default()
                    .fields(&format!("metadata.name={}", target.router.route)),
                Writer::new(ar.clone()),
                |o: &mut DynamicObject| o.managed_fields_mut().clear(),
                &health,
                &changed,
                &mut tasks,
            );
            let freezes = watch(
                FREEZES,
                Api::<crate::freeze::DeployFreeze>::all(client.clone()),
                watcher::Config::default(),
                Writer::default(),
                |o: &mut crate::freeze::DeployFreeze| o.managed_fields_mut().clear(),
                &health,
                &changed,
                &mut tasks,
            );
            tasks.push(tokio::spawn(probe_while_failing(
                client.clone(),
                health.clone(),
                changed.clone(),
            )));
            clusters.insert(
                target.name.clone(),
                ClusterCache {
                    deployments,
                    pods,
                    nodes,
                    routes,
                    freezes,
                    health,
                },
            );
        }
        FleetCache {
            clusters,
            changed,
            tasks,
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

/// A watch that resumes after an outage says nothing until an object
/// changes, so while any watch of a cluster is failing — and only then — the
/// API server is asked for its version; an answer means the watches resume.
async fn probe_while_failing(
    client: kube::Client,
    health: Arc<Mutex<BTreeMap<&'static str, WatchState>>>,
    changed: Arc<Notify>,
) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let failing = health
            .lock()
            .expect("health lock")
            .values()
            .any(|s| matches!(s, WatchState::Failing(_)));
        if !failing || client.apiserver_version().await.is_err() {
            continue;
        }
        let mut h = health.lock().expect("health lock");
        for state in h.values_mut() {
            if matches!(state, WatchState::Failing(_)) {
                *state = WatchState::Healthy;
            }
        }
        drop(h);
        changed.notify_one();
    }
}

#[allow(clippy::too_many_arguments)]
fn watch<K>(
    kind: &'static str,
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    trim: impl Fn(&mut K) + Send + Sync + 'static,
    health: &Arc<Mutex<BTreeMap<&'static str, WatchState>>>,
    changed: &Arc<Notify>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let store = writer.as_reader();
    health
        .lock()
        .expect("health lock")
        .insert(kind, WatchState::Starting);
    let (health, changed) = (health.clone(), changed.clone());
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, config)
            .map(move |ev| ev.map(|e| e.modify(&trim)))
            .default_backoff(),
    );
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let state = match &item {
                Ok(Event::InitDone) | Ok(Event::Apply(_)) | Ok(Event::Delete(_)) => {
                    Some(WatchState::Healthy)
                }
                Ok(Event::Init) | Ok(Event::InitApply(_)) => None,
                Err(e) => Some(WatchState::Failing(e.to_string())),
            };
            if let Some(state) = state {
                let mut h = health.lock().expect("health lock");
                let prev = h.insert(kind, state.clone());
                // A watch that was healthy and stays healthy need only wake on real changes.
                drop(h);
                if prev != Some(state) || matches!(item, Ok(Event::Apply(_)) | Ok(Event::Delete(_)))
                {
                    changed.notify_one();
                }
            }
        }
    }));
    store
}
