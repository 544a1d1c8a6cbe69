//! Cluster behaviour of the simulated fleet, seen through the API as a user
//! would see it: Deployments become pods spread over zones that get Ready,
//! pods that cannot be placed stay Pending with an Event, zone outages and
//! failing nodes take pods out of service, and API servers fail and recover
//! as scenarios say.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cutover_sim::{Scenario, SimFleet};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::json;

const ZONES: &str = "[z-a, z-b, z-c]";

fn one_cluster(extra: &str) -> Scenario {
    let text = format!(
        "home: one\nclusters:\n  - name: one\n    region: z\n    zones: {ZONES}\n    trafficShare: 100%\n{extra}"
    );
    Scenario::parse("test.yaml", &text).unwrap_or_else(|e| panic!("{e}"))
}

async fn start(scenario: Scenario, scale: f64) -> (SimFleet, Client, tempfile::TempDir) {
    let (fleet, dir) = support::start_sim(scenario, scale).await;
    let client = support::sim_client(&fleet, "one").await;
    (fleet, client, dir)
}

/// Polls until `check` returns a value (a guard against hanging, not a timing assertion).
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..1200 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting: {what}");
}

fn web(replicas: i32, image: &str, spread: bool) -> Deployment {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "web"}},
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "web", "cutover.dev/version": "v1", "cutover.dev/colour": "blue"}},
                         "spec": {"containers": [{"name": "web", "image": image}]}},
        },
    });
    if spread {
        d["spec"]["template"]["spec"]["topologySpreadConstraints"] = json!([{
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "web"}}, "matchLabelKeys": ["pod-template-hash"],
        }]);
    }
    serde_json::from_value(d).unwrap()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Ready pods per zone, through pods → nodes → zone label.
async fn ready_per_zone(client: &Client) -> BTreeMap<String, usize> {
    let nodes: Api<Node> = Api::all(client.clone());
    let zone_of: BTreeMap<String, String> = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| {
            (
                n.metadata.name.clone().unwrap(),
                n.metadata.labels.unwrap()["topology.kubernetes.io/zone"].clone(),
            )
        })
        .collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut out = BTreeMap::new();
    for p in pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| ready(p))
    {
        let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
        *out.entry(zone_of[&node].clone()).or_insert(0) += 1;
    }
    out
}

fn available(d: &Deployment) -> i32 {
    d.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

#[tokio::test]
async fn six_pods_spread_two_per_zone_become_ready_and_roll() {
    let (fleet, client, _dir) = start(one_cluster(""), 600.0).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = deploys
        .create(&PostParams::default(), &web(6, "web:1", true))
        .await
        .unwrap();
    let uid = d.metadata.uid.clone().unwrap();
    let done = eventually("six available replicas", || async {
        let d = deploys.get("web").await.ok()?;
        (available(&d) == 6).then_some(d)
    })
    .await;
    let st = done.status.unwrap();
    assert_eq!(
        (
            st.replicas,
            st.updated_replicas,
            st.ready_replicas,
            st.observed_generation
        ),
        (Some(6), Some(6), Some(6), Some(1))
    );
    let conds = st.conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
    );
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Progressing"
                && c.reason.as_deref() == Some("NewReplicaSetAvailable"))
    );
    let want: BTreeMap<String, usize> = [("z-a", 2), ("z-b", 2), ("z-c", 2)]
        .map(|(z, n)| (z.to_string(), n))
        .into();
    assert_eq!(ready_per_zone(&client).await, want);

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let all = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=web"))
        .await
        .unwrap()
        .items;
    let hash = all[0].metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    for p in &all {
        let name = p.metadata.name.clone().unwrap();
        assert!(
            name.starts_with(&format!("web-{hash}-"))
                && name.len() == format!("web-{hash}-").len() + 5,
            "{name}"
        );
        assert_eq!(p.metadata.owner_references.as_ref().unwrap()[0].uid, uid);
        let s = p.status.as_ref().unwrap();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert!(s.pod_ip.is_some() && s.host_ip.is_some());
        assert_eq!(s.container_statuses.as_ref().unwrap()[0].restart_count, 0);
    }

    // A new template rolls every pod over, still two per zone.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    eventually("rolled to web:2", || async {
        let d = deploys.get("web").await.ok()?;
        let s = d.status?;
        let listed = pods.list(&ListParams::default()).await.ok()?.items;
        let rolled = listed.len() == 6
            && listed
                .iter()
                .all(|p| p.metadata.labels.as_ref().unwrap()["pod-template-hash"] != hash);
        (s.observed_generation == Some(2)
            && s.updated_replicas == Some(6)
            && s.available_replicas == Some(6)
            && rolled)
            .then_some(())
    })
    .await;
    assert_eq!(ready_per_zone(&client).await, want);

    // Scale through the scale subresource, then delete: the pods go with it.
    deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    eventually("three pods", || async {
        (pods.list(&ListParams::default()).await.ok()?.items.len() == 3).then_some(())
    })
    .await;
    assert_eq!(
        deploys
            .get_scale("web")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(3)
    );
    deploys
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn pods_that_fit_nowhere_stay_pending_with_an_event() {
    let (fleet, client, _dir) = start(one_cluster("").clone_with_pods_per_node(2), 600.0).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(&PostParams::default(), &web(14, "web:1", false))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pending = eventually("two pending pods", || async {
        let all = pods
            .list(&ListParams::default().fields("status.phase=Pending"))
            .await
            .ok()?
            .items;
        let unschedulable: Vec<Pod> = all
            .into_iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "PodScheduled" && c.status == "False")
                    })
            })
            .collect();
        (unschedulable.len() == 2).then_some(unschedulable)
    })
    .await;
    let cond = pending[0]
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap()
        .clone();
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        cond.message.as_deref(),
        Some("0/6 nodes are available: 6 Too many pods.")
    );
    let running = pods
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(running, 12);
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let failed = events.list(&ListParams::default()).await.unwrap().items;
    assert!(
        failed
            .iter()
            .any(|e| e.reason.as_deref() == Some("FailedScheduling")
                && e.involved_object.name == pending[0].metadata.name)
    );
    // Still failing a while later: the same Event, counted again.
    eventually("the event counted again", || async {
        let all = events.list(&ListParams::default()).await.ok()?.items;
        all.iter()
            .any(|e| {
                e.involved_object.name == pending[0].metadata.name && e.count.unwrap_or(0) >= 2
            })
            .then_some(())
    })
    .await;
    fleet.shutdown().await;
}

/// Pods running in a namespace, by phase.
async fn phases(client: &Client, ns: &str) -> BTreeMap<String, usize> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut out = BTreeMap::new();
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
        *out.entry(phase).or_insert(0) += 1;
    }
    out
}

/// kube-scheduler moves pods out of its unschedulable queue when an
/// assigned pod is deleted, wherever it was (its `AssignedPodDelete`
/// cluster event), not only on a timer. Here room is freed in another
/// namespace, at fleet time running as fast as wall time, so the five
/// minutes after which an unschedulable pod is tried again anyway are
/// beyond what this test waits.
#[tokio::test]
async fn pods_waiting_for_room_take_it_when_another_namespace_frees_it() {
    let (fleet, client, _dir) = start(one_cluster("").clone_with_pods_per_node(2), 1.0).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let spare: Namespace = serde_json::from_value(json!({"metadata": {"name": "spare"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &spare)
        .await
        .unwrap();
    let filler: Api<Deployment> = Api::namespaced(client.clone(), "spare");
    filler
        .create(&PostParams::default(), &web(4, "filler:1", false))
        .await
        .unwrap();
    eventually("the filler running", || async {
        (phases(&client, "spare").await.get("Running") == Some(&4)).then_some(())
    })
    .await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(&PostParams::default(), &web(10, "web:1", false))
        .await
        .unwrap();
    let want = BTreeMap::from([("Pending".to_string(), 2), ("Running".to_string(), 8)]);
    eventually("eight running and two pending", || async {
        (phases(&client, "default").await == want).then_some(())
    })
    .await;
    // Once the eight are Ready nothing in `default` changes, so only the
    // room freed elsewhere can move the two.
    eventually("the eight ready and counted", || async {
        let ready = ready_per_zone(&client).await.values().sum::<usize>();
        let web = deploys.get("web").await.ok()?;
        (ready == 8 && available(&web) == 8).then_some(())
    })
    .await;
    let settled = deploys.get("web").await.unwrap().metadata.resource_version;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let web = deploys.get("web").await.unwrap();
    assert_eq!(web.metadata.resource_version, settled, "web settled");
    filler
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let want = BTreeMap::from([("Running".to_string(), 10)]);
    eventually("all ten running once the filler is gone", || async {
        (phases(&client, "default").await == want).then_some(())
    })
    .await;
    fleet.shutdown().await;
}

trait PodsPerNode {
    fn clone_with_pods_per_node(self, n: u32) -> Scenario;
}

impl PodsPerNode for Scenario {
    fn clone_with_pods_per_node(mut self, n: u32) -> Scenario {
        self.clusters.iter_mut().for_each(|c| c.pods_per_node = n);
        self
    }
}

async fn install_release_crd(client: &Client) -> Api<cutover_core::spec::Release> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &cutover_core::spec::Release::crd())
        .await
        .unwrap();
    let rel: cutover_core::spec::Release = serde_json::from_value(json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "Release", "metadata": {"name": "web-v2"},
        "spec": {"app": "web", "tier": "tier-1", "version": "v2", "replicas": 6,
                 "workload": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}},
                 "clusters": [{"name": "one", "role": "production"}]},
    }))
    .unwrap();
    let releases: Api<cutover_core::spec::Release> = Api::namespaced(client.clone(), "default");
    releases.create(&PostParams::default(), &rel).await.unwrap();
    releases
}

#[tokio::test]
async fn a_zone_outage_when_the_release_soaks_takes_that_zone_out() {
    let events = "pods:\n  evictAfter: 24h\nevents:\n  - whenReleaseStep: soak\n    zoneOutage: {cluster: one, zone: z-b}\n";
    let (fleet, client, _dir) = start(one_cluster(events), 600.0).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(&PostParams::default(), &web(6, "web:1", true))
        .await
        .unwrap();
    eventually("six available", || async {
        (available(&deploys.get("web").await.ok()?) == 6).then_some(())
    })
    .await;
    let releases = install_release_crd(&client).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let zone_b = ListParams::default().labels("topology.kubernetes.io/zone=z-b");
    // Not yet: the release is not soaking.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        nodes
            .list(&zone_b)
            .await
            .unwrap()
            .items
            .iter()
            .all(node_ready)
    );
    releases
        .patch_status(
            "web-v2",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Progressing", "stepName": "soak one 30m"}})),
        )
        .await
        .unwrap();
    eventually("zone z-b unreachable", || async {
        let ns = nodes.list(&zone_b).await.ok()?.items;
        ns.iter()
            .all(|n| ready_status(n) == "Unknown")
            .then_some(())
    })
    .await;
    let tainted = nodes.list(&zone_b).await.unwrap().items;
    assert!(tainted.iter().all(|n| {
        n.spec
            .as_ref()
            .unwrap()
            .taints
            .as_ref()
            .unwrap()
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable")
    }));
    eventually("four available, none Ready in z-b", || async {
        let d = deploys.get("web").await.ok()?;
        let zones = ready_per_zone(&client).await;
        (available(&d) == 4 && !zones.contains_key("z-b")).then_some(())
    })
    .await;
    let other = nodes
        .list(&ListParams::default().labels("topology.kubernetes.io/zone!=z-b"))
        .await
        .unwrap()
        .items;
    assert_eq!(other.len(), 4);
    assert!(other.iter().all(node_ready));
    fleet.shutdown().await;
}

#[tokio::test]
async fn an_event_on_a_release_step_is_in_force_before_the_writer_asks_again() {
    // However short the step, the event triggered by the write that enters
    // it is in force when the writer's next request arrives.
    let events =
        "events:\n  - whenReleaseStep: deploy green\n    apiErrors: {cluster: one, code: 503}\n";
    let (fleet, client, _dir) = start(one_cluster(events), 1.0).await;
    let releases = install_release_crd(&client).await;
    let mut config = support::sim_config(&fleet, "one").await;
    config.default_retry = false;
    let nodes: Api<Node> = Api::all(Client::try_from(config).unwrap());
    assert!(nodes.list(&ListParams::default()).await.is_ok());
    releases
        .patch_status(
            "web-v2",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Progressing", "stepName": "deploy green on one"}}),
            ),
        )
        .await
        .unwrap();
    match nodes.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 503),
        other => panic!(
            "the next request was not failed: {:?}",
            other.map(|l| l.items.len())
        ),
    }
    fleet.shutdown().await;
}

fn ready_status(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

fn node_ready(n: &Node) -> bool {
    ready_status(n) == "True"
}

#[tokio::test]
async fn pods_on_a_lost_zone_are_evicted_and_replaced_in_the_others() {
    let events = "pods:\n  evictAfter: 10m\nevents:\n  - whenGreenWeight: {cluster: one, atLeast: 50%}\n    zoneOutage: {cluster: one, zone: z-c}\n";
    let (fleet, client, _dir) = start(one_cluster(events), 600.0).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(&PostParams::default(), &web(6, "web:1", true))
        .await
        .unwrap();
    eventually("six available", || async {
        (available(&deploys.get("web").await.ok()?) == 6).then_some(())
    })
    .await;
    // Sending half the route to green triggers the outage.
    let gvk = kube::core::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let routes: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::core::ApiResource::from_gvk_with_plural(&gvk, "httproutes"),
    );
    let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
        "spec": {"rules": [{"backendRefs": [{"name": "web-blue", "port": 80, "weight": 50}, {"name": "web-green", "port": 80, "weight": 50}]}]}});
    routes
        .create(
            &PostParams::default(),
            &serde_json::from_value(route).unwrap(),
        )
        .await
        .unwrap();
    let want: BTreeMap<String, usize> = [("z-a", 3), ("z-b", 3)]
        .map(|(z, n)| (z.to_string(), n))
        .into();
    eventually("pods rescheduled 3/3 in the zones left", || async {
        let d = deploys.get("web").await.ok()?;
        (available(&d) == 6 && ready_per_zone(&client).await == want).then_some(())
    })
    .await;
    fleet.shutdown().await;
}

#[tokio::test]
async fn nodes_go_not_ready_one_by_one_then_recover() {
    let events = "events:\n  - after: 0s\n    for: 1h\n    nodesNotReady: {cluster: one, count: 2, every: 10m}\n";
    let (fleet, client, _dir) = start(one_cluster(events), 600.0).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let down = eventually("two nodes NotReady", || async {
        let ns = nodes.list(&ListParams::default()).await.ok()?.items;
        let down: Vec<Node> = ns
            .into_iter()
            .filter(|n| ready_status(n) == "False")
            .collect();
        (down.len() == 2).then_some(down)
    })
    .await;
    let since = |n: &Node| {
        let c = n
            .status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .clone();
        assert_eq!(c.reason.as_deref(), Some("KubeletNotReady"));
        c.last_transition_time.unwrap().0
    };
    let gap = since(&down[1]).duration_since(since(&down[0])).abs();
    assert!(
        gap >= jiff::SignedDuration::from_mins(9),
        "nodes failed one by one, {gap:?} apart"
    );
    assert!(down.iter().all(|n| {
        n.spec
            .as_ref()
            .unwrap()
            .taints
            .as_ref()
            .unwrap()
            .iter()
            .any(|t| t.key == "node.kubernetes.io/not-ready")
    }));
    eventually("all nodes Ready again", || async {
        let ns = nodes.list(&ListParams::default()).await.ok()?.items;
        ns.iter().all(node_ready).then_some(())
    })
    .await;
    fleet.shutdown().await;
}

#[tokio::test]
async fn api_servers_throttle_then_vanish_then_recover() {
    let events = "events:\n  - after: 0s\n    for: 30m\n    apiErrors: {cluster: one, code: 429}\n  - after: 30m\n    for: 30m\n    apiUnreachable: {cluster: one}\n";
    let (fleet, _client, _dir) = start(one_cluster(events), 300.0).await;
    // kube retries 429s (honouring Retry-After) by default; turn that off to see them.
    let mut config = support::sim_config(&fleet, "one").await;
    config.default_retry = false;
    let nodes: Api<Node> = Api::all(Client::try_from(config).unwrap());
    // Throttled: a Status with reason TooManyRequests.
    let reason = eventually("a 429", || async {
        match nodes.list(&ListParams::default()).await {
            Err(kube::Error::Api(s)) if s.code == 429 => Some(s.reason.clone()),
            _ => None,
        }
    })
    .await;
    assert_eq!(reason, "TooManyRequests");
    // Unreachable: no HTTP answer at all.
    eventually("connection refused", || async {
        match nodes.list(&ListParams::default()).await {
            Err(kube::Error::Api(_)) | Ok(_) => None,
            Err(_) => Some(()),
        }
    })
    .await;
    let url = fleet.url("one").unwrap();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the port refuses connections"
    );
    let listed = eventually("served again", || async {
        nodes.list(&ListParams::default()).await.ok()
    })
    .await;
    assert_eq!(listed.items.len(), 6);
    fleet.shutdown().await;
}

#[tokio::test]
async fn an_api_server_that_closes_connections_comes_back() {
    let events =
        "events:\n  - after: 0s\n    for: 20m\n    apiUnreachable: {cluster: one, mode: close}\n";
    let (fleet, client, _dir) = start(one_cluster(events), 300.0).await;
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("connections closed", || async {
        match nodes.list(&ListParams::default()).await {
            Err(kube::Error::Api(_)) | Ok(_) => None,
            Err(_) => Some(()),
        }
    })
    .await;
    let listed = eventually("served again", || async {
        nodes.list(&ListParams::default()).await.ok()
    })
    .await;
    assert_eq!(listed.items.len(), 6);
    fleet.shutdown().await;
}
