//! API Priority and Fairness in the simulated API server: the suggested
//! FlowSchemas and priority levels exist as objects kubectl reads; requests
//! wait for their level's seats; deploy/'s `cutover-leases` FlowSchema puts
//! cutover's Lease requests in `leader-election`, so they pass a queue of its
//! other requests; a FlowSchema applied with kubectl takes effect, and a
//! `Reject` level answers 429 with Retry-After.

mod support;

use std::time::Duration;

use cutover_sim::faults::ApiFault;
use cutover_sim::scenario::Scenario;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use support::{Kubectl, api_error, kubectl_binary, start_sim, table};

/// One cluster serving `seats` requests at once.
fn one_cluster(seats: usize) -> Scenario {
    let text = format!(
        "home: one\nclusters:\n  - name: one\n    region: r\n    zones: [r-a, r-b, r-c]\n    trafficShare: 100%\napiServer:\n  maxRequestsInFlight: {seats}\n"
    );
    Scenario::parse("test.yaml", &text).unwrap()
}

fn admin_kubectl(fleet: &cutover_sim::SimFleet, dir: &tempfile::TempDir) -> Kubectl {
    Kubectl {
        bin: kubectl_binary().unwrap(),
        kubeconfig: fleet.kubeconfig_path().to_path_buf(),
        cache: dir.path().join("cache"),
        context: cutover_sim::context_name("one"),
    }
}

/// A client of `who` with kube's own retries off, so a 429 is seen as sent.
async fn client_as(fleet: &cutover_sim::SimFleet, who: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(fleet.kubeconfig_as(who)).unwrap();
    let opts = kube::config::KubeConfigOptions {
        context: Some(cutover_sim::context_name("one")),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn the_suggested_configuration_and_cutovers_flowschema_are_objects_kubectl_lists() {
    let (fleet, dir) = start_sim(one_cluster(600), 1.0).await;
    let kubectl = admin_kubectl(&fleet, &dir);
    let out = kubectl.run(&["get", "flowschemas"]).await;
    let rows = table(&out);
    let names: Vec<&str> = rows.iter().map(|r| r["NAME"].as_str()).collect();
    for name in [
        "exempt",
        "workload-leader-election",
        "service-accounts",
        "global-default",
        "catch-all",
        "cutover-leases",
    ] {
        assert!(names.contains(&name), "{name} in {out}");
    }
    let levels = kubectl
        .run(&["get", "prioritylevelconfigurations", "-o", "name"])
        .await;
    assert!(
        levels.contains("prioritylevelconfiguration.flowcontrol.apiserver.k8s.io/leader-election"),
        "{levels}"
    );
}

/// With 12 seats, `workload-low` has ceil(12 × 100 / 245) = 5 and
/// `leader-election` ceil(12 × 10 / 245) = 1 (apis/flowcontrol/bootstrap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutovers_lease_requests_pass_a_queue_of_its_other_requests() {
    let (fleet, _dir) = start_sim(one_cluster(12), 1.0).await;
    let cluster = fleet.cluster("one").unwrap();
    let flow = &cluster.api.flow;
    let low = flow.level(&cluster.store, "workload-low").unwrap();
    let leases_level = flow.level(&cluster.store, "leader-election").unwrap();
    assert_eq!((low.limit, leases_level.limit), (Some(5), Some(1)));
    let cutover = client_as(&fleet, "cutover").await;
    // Every request takes 300 ms: forty reads of Deployments queue for five seats.
    cluster
        .faults
        .activate(1, ApiFault::Latency(Duration::from_millis(300)));
    let deployments: Api<Deployment> = Api::namespaced(cutover.clone(), "cutover-system");
    let reads: Vec<_> = (0..40)
        .map(|_| {
            let api = deployments.clone();
            tokio::spawn(async move { api.list(&ListParams::default()).await })
        })
        .collect();
    while low.waiting() < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A Lease read by the same identity goes to its own level: answered
    // while the reads still queue.
    let leases: Api<Lease> = Api::namespaced(cutover.clone(), "cutover-system");
    let missing = leases.get_opt("cutover-controller").await.unwrap();
    assert!(missing.is_none());
    assert!(
        low.waiting() > 0,
        "the Lease read was answered while reads still waited"
    );
    assert_eq!(leases_level.queued(), 0);
    for r in reads {
        r.await.unwrap().unwrap();
    }
    assert!(low.queued() >= 20, "{}", low.queued());
    assert_eq!(low.rejected(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flowschema_applied_with_kubectl_sends_requests_to_a_level_that_rejects() {
    let (fleet, dir) = start_sim(one_cluster(600), 1.0).await;
    let kubectl = admin_kubectl(&fleet, &dir);
    // One seat, no queue: a second request at once is refused.
    let path = dir.path().join("tiny.yaml");
    std::fs::write(
        &path,
        "apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata: {name: tiny}
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 1
    limitResponse: {type: Reject}
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: pipeline}
spec:
  matchingPrecedence: 300
  priorityLevelConfiguration: {name: tiny}
  rules:
    - subjects: [{kind: User, user: {name: ci-pipeline}}]
      resourceRules:
        - {apiGroups: [\"*\"], resources: [\"*\"], verbs: [\"*\"], namespaces: [\"*\"], clusterScope: true}
",
    )
    .unwrap();
    kubectl.run(&["apply", "-f", path.to_str().unwrap()]).await;
    let cluster = fleet.cluster("one").unwrap();
    let tiny = cluster.api.flow.level(&cluster.store, "tiny").unwrap();
    // ceil(600 × 1 / 246) = 3 seats.
    assert_eq!(tiny.limit, Some(3));
    cluster
        .faults
        .activate(1, ApiFault::Latency(Duration::from_millis(300)));
    let pipeline = client_as(&fleet, "pipeline").await;
    let api: Api<Lease> = Api::namespaced(pipeline, "shop");
    let tries: Vec<_> = (0..6)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { api.get_opt("x").await })
        })
        .collect();
    let mut refused = Vec::new();
    for t in tries {
        if let Err(e) = t.await.unwrap() {
            refused.push(api_error(e));
        }
    }
    // Three served (the namespace has no such Lease), three refused at once.
    assert_eq!(refused.len(), 3, "{refused:?}");
    for (code, reason, _) in &refused {
        assert_eq!((*code, reason.as_str()), (429, "TooManyRequests"));
    }
    assert_eq!(tiny.rejected(), 3);
}
