//! Application metrics of the simulated fleet, read as a gate would: the
//! `/metrics` text parsed with prometheus-parse, counters growing per
//! version as the HTTPRoute weights say, errors per the scenario.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cutover_sim::{Scenario, SimFleet};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use prometheus_parse::{Scrape, Value};
use serde_json::json;

async fn start(scenario: Scenario) -> (SimFleet, tempfile::TempDir) {
    support::start_sim(scenario, 600.0).await
}

/// A metrics page, served as Prometheus text.
async fn http_get(url: &str) -> String {
    let reply = support::http(http::Method::GET, url, None, String::new()).await;
    assert_eq!(reply.content_type, "text/plain; version=0.0.4");
    reply.body
}

/// `http_requests_total` by (version, colour, code).
type Totals = BTreeMap<(String, String, String), f64>;

async fn scrape(fleet: &SimFleet, cluster: &str) -> (Totals, Scrape) {
    let text = http_get(&format!("{}/metrics", fleet.url(cluster).unwrap())).await;
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let mut out = Totals::new();
    for s in scrape
        .samples
        .iter()
        .filter(|s| s.metric == "http_requests_total")
    {
        let Value::Counter(v) = s.value else {
            panic!("http_requests_total must be a counter")
        };
        let key = (
            s.labels.get("version").unwrap().to_string(),
            s.labels.get("colour").unwrap().to_string(),
            s.labels.get("code").unwrap().to_string(),
        );
        out.insert(key, v);
    }
    (out, scrape)
}

fn delta(before: &Totals, after: &Totals) -> Totals {
    after
        .iter()
        .map(|(k, v)| {
            let was = before.get(k).copied().unwrap_or(0.0);
            assert!(*v >= was, "counter {k:?} went down: {was} -> {v}");
            (k.clone(), v - was)
        })
        .collect()
}

fn sum(t: &Totals, colour: &str, code: Option<&str>) -> f64 {
    t.iter()
        .filter(|((_, c, k), _)| c == colour && code.is_none_or(|code| k == code))
        .map(|(_, v)| v)
        .sum()
}

async fn deploy_colours(client: &Client) {
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    for (colour, version) in [("blue", "v1"), ("green", "v2")] {
        let labels = json!({"app.kubernetes.io/name": "web", "cutover.dev/colour": colour, "cutover.dev/version": version});
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("web-{version}")},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app.kubernetes.io/name": "web", "cutover.dev/colour": colour}},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": format!("web:{version}")}]}}}});
        deploys
            .create(&PostParams::default(), &serde_json::from_value(d).unwrap())
            .await
            .unwrap();
        let s = json!({"metadata": {"name": format!("web-{colour}")},
            "spec": {"selector": {"app.kubernetes.io/name": "web", "cutover.dev/colour": colour}, "ports": [{"port": 80}]}});
        svcs.create(&PostParams::default(), &serde_json::from_value(s).unwrap())
            .await
            .unwrap();
    }
    for _ in 0..1200 {
        let mut ready = 0;
        for v in ["v1", "v2"] {
            let d = deploys.get(&format!("web-{v}")).await.unwrap();
            ready += d.status.and_then(|s| s.available_replicas).unwrap_or(0);
        }
        if ready == 6 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("blue and green never became available");
}

fn routes(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "httproutes"),
    )
}

fn weights(blue: u32, green: u32) -> serde_json::Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
           "spec": {"rules": [{"backendRefs": [{"name": "web-blue", "port": 80, "weight": blue}, {"name": "web-green", "port": 80, "weight": green}]}]}})
}

async fn set_weights(client: &Client, blue: u32, green: u32) {
    routes(client)
        .patch(
            "web",
            &PatchParams::apply("test").force(),
            &Patch::Apply(weights(blue, green)),
        )
        .await
        .unwrap();
}

/// Requests over about `wall` of real time, after letting a route change land.
async fn measure(fleet: &SimFleet, cluster: &str, wall: Duration) -> Totals {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (before, _) = scrape(fleet, cluster).await;
    tokio::time::sleep(wall).await;
    let (after, _) = scrape(fleet, cluster).await;
    delta(&before, &after)
}

#[tokio::test]
async fn counters_grow_per_version_as_route_weights_say() {
    let text = "home: one\nclusters:\n  - {name: one, region: r, zones: [r-a, r-b, r-c], trafficShare: 100%}\ntraffic:\n  requestsPerSecond: 1000\n";
    let (fleet, _dir) = start(Scenario::parse("t.yaml", text).unwrap()).await;
    let client = support::sim_client(&fleet, "one").await;
    deploy_colours(&client).await;
    set_weights(&client, 80, 20).await;
    let d = measure(&fleet, "one", Duration::from_millis(700)).await;
    let (blue, green) = (sum(&d, "blue", None), sum(&d, "green", None));
    let share = green / (blue + green);
    assert!(
        (share - 0.2).abs() < 0.01,
        "green got {share} of {} requests",
        blue + green
    );
    let errors = sum(&d, "blue", Some("500")) / blue;
    assert!(errors < 0.003, "blue's error ratio {errors}");
    // Series from before the pods were up (version "unknown", 503) may be
    // there, but only blue's and green's own grow once both are ready.
    let grew: Vec<_> = d.iter().filter(|(_, n)| **n > 0.0).collect();
    assert!(
        grew.iter()
            .all(|((v, c, _), _)| (v.as_str(), c.as_str()) == ("v1", "blue")
                || (v.as_str(), c.as_str()) == ("v2", "green")),
        "{grew:?}"
    );

    set_weights(&client, 0, 100).await;
    let d = measure(&fleet, "one", Duration::from_millis(500)).await;
    assert!(sum(&d, "green", None) > 0.0);
    assert!(
        sum(&d, "blue", None) <= sum(&d, "green", None) * 0.05,
        "blue should get nothing once at 0: {d:?}"
    );

    // The latency histogram is there, cumulative, per version.
    let (_, scrape) = scrape(&fleet, "one").await;
    let hist = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "http_request_duration_seconds" && s.labels.get("version") == Some("v2")
        })
        .expect("a histogram for v2");
    let Value::Histogram(buckets) = &hist.value else {
        panic!("not a histogram")
    };
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
    assert!(
        buckets.iter().any(|b| b.less_than == 0.005) && buckets.iter().any(|b| b.less_than == 10.0)
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn the_bad_canary_example_turns_green_bad_at_four_percent() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/scenarios/bad-canary.yaml"
    );
    let scenario = Scenario::parse(path, &std::fs::read_to_string(path).unwrap()).unwrap();
    let (fleet, _dir) = start(scenario).await;
    let client = support::sim_client(&fleet, "prod-a").await;
    deploy_colours(&client).await;
    routes(&client)
        .create(
            &PostParams::default(),
            &serde_json::from_value(weights(97, 3)).unwrap(),
        )
        .await
        .unwrap();
    let d = measure(&fleet, "prod-a", Duration::from_millis(700)).await;
    let green = sum(&d, "green", None);
    assert!(green > 0.0);
    assert!(
        sum(&d, "green", Some("500")) / green < 0.01,
        "at 3% green is still healthy: {d:?}"
    );

    set_weights(&client, 96, 4).await;
    let d = measure(&fleet, "prod-a", Duration::from_millis(1500)).await;
    let ratio = sum(&d, "green", Some("500")) / sum(&d, "green", None);
    assert!(
        (ratio - 0.2).abs() < 0.03,
        "green's error ratio at 4% is {ratio}: {d:?}"
    );
    let blue = sum(&d, "blue", Some("500")) / sum(&d, "blue", None);
    assert!(blue < 0.01, "blue stays healthy: {blue}");
    // prod-b has no route: its metrics stay empty.
    let (b, _) = scrape(&fleet, "prod-b").await;
    assert!(b.is_empty(), "{b:?}");
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_backend_without_ready_pods_answers_503() {
    let text =
        "home: one\nclusters:\n  - {name: one, region: r, zones: [r-a], trafficShare: 100%}\n";
    let (fleet, _dir) = start(Scenario::parse("t.yaml", text).unwrap()).await;
    let client = support::sim_client(&fleet, "one").await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let s = json!({"metadata": {"name": "web-green"},
        "spec": {"selector": {"app.kubernetes.io/name": "web", "cutover.dev/colour": "green", "cutover.dev/version": "v9"}, "ports": [{"port": 80}]}});
    svcs.create(&PostParams::default(), &serde_json::from_value(s).unwrap())
        .await
        .unwrap();
    routes(&client)
        .create(
            &PostParams::default(),
            &serde_json::from_value(weights(0, 1)).unwrap(),
        )
        .await
        .unwrap();
    let d = measure(&fleet, "one", Duration::from_millis(500)).await;
    let unavailable = d
        .get(&("v9".to_string(), "green".to_string(), "503".to_string()))
        .copied()
        .unwrap_or(0.0);
    assert!(unavailable > 0.0, "{d:?}");
    assert_eq!(sum(&d, "green", Some("200")), 0.0);
    fleet.shutdown().await;
}

/// Waits (bounded) until the audit has looked at more changes than `seen`.
async fn audited_past(audit: &cutover_sim::audit::Audit, seen: u64) {
    for _ in 0..400 {
        if audit.changes() > seen {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the audit saw no change");
}

#[tokio::test]
async fn the_audit_records_shares_requests_without_a_pod_and_deletions_of_what_serves() {
    let text = "home: one\nclusters:\n  - {name: one, region: r, zones: [r-a, r-b, r-c], trafficShare: 100%}\ntraffic:\n  requestsPerSecond: 1000\n";
    let (mut fleet, _dir) = start(Scenario::parse("t.yaml", text).unwrap()).await;
    let client = support::sim_client(&fleet, "one").await;
    deploy_colours(&client).await;
    set_weights(&client, 100, 0).await;
    let audit = fleet.audit();
    assert_eq!(fleet.unserved_rps("web"), 0.0);

    let seen = audit.changes();
    set_weights(&client, 90, 10).await;
    audited_past(&audit, seen).await;
    assert!((audit.peak_share("one", "web", "v2") - 0.1).abs() < 1e-9);
    assert_eq!(audit.peak_share("one", "web", "v1"), 1.0);
    assert!(audit.unserved().is_empty(), "{:?}", audit.unserved());
    assert_eq!(fleet.shares("web")["one"]["v2"], 0.1);

    // Green goes to zero replicas while it still takes a tenth: its requests find no pod.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .patch(
            "web-v2",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    for _ in 0..400 {
        if audit.unserved_changes() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unserved = audit.unserved();
    assert!(
        unserved.iter().any(|u| u.colour == "green" && u.rps > 0.0),
        "{unserved:?}"
    );
    assert!(fleet.unserved_rps("web") > 0.0);

    // Blue's Deployment deleted while it serves: recorded as such.
    let seen = audit.changes();
    deploys.delete("web-v1", &Default::default()).await.unwrap();
    audited_past(&audit, seen).await;
    let gone = audit
        .deletions()
        .into_iter()
        .find(|d| d.name == "web-v1")
        .expect("the deletion was recorded");
    assert!(gone.serving && !gone.managed, "{gone:?}");
    assert_eq!(gone.resource, "deployments");
    assert_eq!(audit.lost(), 0);
}

#[tokio::test]
async fn a_stalled_metrics_endpoint_sends_headers_then_trickles_until_lifted() {
    let text = "home: one\nclusters:\n  - {name: one, region: r, zones: [r-a, r-b, r-c], trafficShare: 100%}\n";
    let (fleet, _dir) = start(Scenario::parse("t.yaml", text).unwrap()).await;
    let faults = fleet.cluster("one").unwrap().faults.clone();
    faults.stall_metrics(true);
    let url = format!("{}/metrics", fleet.url("one").unwrap());
    let body = tokio::spawn(async move { http_get(&url).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!body.is_finished(), "the body is still coming");
    faults.stall_metrics(false);
    let text = tokio::time::timeout(Duration::from_secs(10), body)
        .await
        .expect("the body ends once the stall is lifted")
        .unwrap();
    assert!(text.starts_with("# stalled\n"), "{text}");
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("still valid exposition text");
}
