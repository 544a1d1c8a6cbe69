//! The simulated API server through the real `kube` client: CRUD, status
//! subresources, the four patch formats, conflicts and Status errors,
//! CRDs and custom resources, finalizers, and request counting. Watches and
//! selectors are in `sim_watch.rs`.

mod support;
use cutover_sim::{Scenario, SimFleet, SimOptions};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config, CustomResourceExt};
use serde_json::json;

async fn start(history: usize) -> (SimFleet, Client, tempfile::TempDir) {
    let (fleet, dir) = support::start_sim(support::one_cluster_with_history(history), 600.0).await;
    let client = support::sim_client(&fleet, "one").await;
    (fleet, client, dir)
}

fn deployment(name: &str, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "main", "image": image}, {"name": "side", "image": "side:1"}]}},
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn crud_conflicts_and_status_errors() {
    let (fleet, client, _dir) = start(1000).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let created = deploys
        .create(&PostParams::default(), &deployment("web", "web:1"))
        .await
        .unwrap();
    let md = &created.metadata;
    assert!(md.uid.is_some() && md.creation_timestamp.is_some());
    assert_eq!(md.generation, Some(1));
    let rv1: u64 = md.resource_version.clone().unwrap().parse().unwrap();

    // POST of an existing name.
    let (code, reason, msg) = support::api_error(
        deploys
            .create(&PostParams::default(), &deployment("web", "web:1"))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(msg, "deployments.apps \"web\" already exists");

    // A PUT from a stale copy after someone else wrote.
    let mut stale = created.clone();
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
    stale.spec.as_mut().unwrap().replicas = Some(3);
    let (code, reason, msg) = support::api_error(
        deploys
            .replace("web", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(msg.contains("the object has been modified"), "{msg}");

    // Missing objects and namespaces.
    let (code, reason, msg) = support::api_error(deploys.get("nope").await.unwrap_err());
    assert_eq!(
        (code, reason.as_str(), msg.as_str()),
        (404, "NotFound", "deployments.apps \"nope\" not found")
    );
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "missing-ns");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    let (code, _, msg) = support::api_error(
        elsewhere
            .create(&PostParams::default(), &cm)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404, "{msg}");

    // Labels don't bump generation; the spec does; resourceVersion only grows.
    let current = deploys.get("web").await.unwrap();
    assert_eq!(current.metadata.generation, Some(1));
    let rv2: u64 = current
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    // The deployment controller writes status concurrently: read, modify and
    // write again on a 409, as every client of a real API server does.
    let mut fresh = current.clone();
    let replaced = loop {
        fresh.spec.as_mut().unwrap().replicas = Some(2);
        match deploys.replace("web", &PostParams::default(), &fresh).await {
            Ok(r) => break r,
            Err(kube::Error::Api(s)) if s.code == 409 => fresh = deploys.get("web").await.unwrap(),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(replaced.metadata.generation, Some(2));

    // Status goes through /status only.
    let st = json!({"status": {"observedGeneration": 99, "replicas": 7}});
    let main = deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(st.clone()))
        .await
        .unwrap();
    assert_ne!(
        main.status.as_ref().and_then(|s| s.observed_generation),
        Some(99)
    );
    let via_status = deploys
        .patch_status("web", &PatchParams::default(), &Patch::Merge(st))
        .await
        .unwrap();
    assert_eq!(
        via_status
            .status
            .as_ref()
            .and_then(|s| s.observed_generation),
        Some(99)
    );
    assert_eq!(via_status.metadata.generation, Some(2));
    assert_eq!(via_status.spec.as_ref().unwrap().replicas, Some(2));

    // Delete, then it is gone.
    deploys
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    assert!(deploys.get_opt("web").await.unwrap().is_none());
    fleet.shutdown().await;
}

#[tokio::test]
async fn four_patch_formats() {
    let (fleet, client, _dir) = start(1000).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(&PostParams::default(), &deployment("web", "web:1"))
        .await
        .unwrap();
    let image = |d: &Deployment, i: usize| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[i]
            .image
            .clone()
            .unwrap()
    };

    let merged = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.spec.as_ref().unwrap().replicas, Some(4));

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "side:2"}
    ]))
    .unwrap();
    let patched = deploys
        .patch("web", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(image(&patched, 1), "side:2");

    // Strategic: containers merge by name, the other container survives.
    let smp = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "web:2"}]}}}});
    let strategic = deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(smp))
        .await
        .unwrap();
    let cs = &strategic
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers;
    assert_eq!(cs.len(), 2);
    assert_eq!(image(&strategic, 0), "web:2");
    assert_eq!(image(&strategic, 1), "side:2");

    // Server-side apply: creates, records the manager, and a repeat is a no-op.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {"a": "1"}}, "data": {"k": "v"}});
    let pp = PatchParams::apply("cutover").force();
    let first = cms
        .patch("cfg", &pp, &Patch::Apply(&applied))
        .await
        .unwrap();
    let mf = first.metadata.managed_fields.clone().unwrap();
    assert!(mf.iter().any(
        |m| m.manager.as_deref() == Some("cutover") && m.operation.as_deref() == Some("Apply")
    ));
    let again = cms
        .patch("cfg", &pp, &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        first.metadata.resource_version
    );
    let less = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"k": "v2"}});
    let third = cms.patch("cfg", &pp, &Patch::Apply(&less)).await.unwrap();
    assert_eq!(third.data.unwrap()["k"], "v2");
    assert!(
        third.metadata.labels.unwrap_or_default().is_empty(),
        "labels the manager stopped applying are removed"
    );
    assert!(
        cms.patch("cfg", &PatchParams::default(), &Patch::Apply(&less))
            .await
            .is_err(),
        "apply needs a field manager"
    );

    // Strategic merge is refused for custom resources, as a real server does.
    let routes = httproutes(&client);
    routes
        .create(&PostParams::default(), &route("web", 100, 0))
        .await
        .unwrap();
    let (code, reason, _) = support::api_error(
        routes
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (415, "UnsupportedMediaType"));
    fleet.shutdown().await;
}

fn httproutes(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "httproutes"),
    )
}

fn route(name: &str, blue: u32, green: u32) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"rules": [{"backendRefs": [
            {"name": format!("{name}-blue"), "port": 80, "weight": blue},
            {"name": format!("{name}-green"), "port": 80, "weight": green},
        ]}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn services_leases_and_routes() {
    let (fleet, client, _dir) = start(1000).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web-blue"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})).unwrap();
    let svc = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let ip = svc.spec.unwrap().cluster_ip.unwrap();
    assert!(ip.starts_with("10.96."), "{ip}");

    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "release-web"}, "spec": {
        "holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2026-01-01T00:00:00.123456Z"}}))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut taken = created.clone();
    taken.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("release-web", &PostParams::default(), &taken)
        .await
        .unwrap();
    let mut late = created.clone();
    late.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let (code, _, _) = support::api_error(
        leases
            .replace("release-web", &PostParams::default(), &late)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409, "a second holder loses the race");
    assert_eq!(
        leases
            .get("release-web")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("b")
    );

    let routes = httproutes(&client);
    routes
        .create(&PostParams::default(), &route("web", 100, 0))
        .await
        .unwrap();
    let weights = json!({"spec": {"rules": [{"backendRefs": [
        {"name": "web-blue", "port": 80, "weight": 96}, {"name": "web-green", "port": 80, "weight": 4}]}]}});
    let patched = routes
        .patch("web", &PatchParams::default(), &Patch::Merge(weights))
        .await
        .unwrap();
    assert_eq!(
        patched.data["spec"]["rules"][0]["backendRefs"][1]["weight"],
        4
    );
    assert_eq!(patched.metadata.generation, Some(2));
    let status = json!({"status": {"parents": [{"parentRef": {"name": "gw"}, "controllerName": "x", "conditions": []}]}});
    let st = routes
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    assert_eq!(st.metadata.generation, Some(2));
    assert_eq!(st.data["status"]["parents"][0]["parentRef"]["name"], "gw");
    fleet.shutdown().await;
}

#[tokio::test]
async fn crds_register_custom_resources() {
    let (fleet, client, _dir) = start(1000).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds
        .create(&PostParams::default(), &cutover_core::spec::Release::crd())
        .await
        .unwrap();
    let conds = crd.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    let releases: Api<cutover_core::spec::Release> = Api::namespaced(client.clone(), "default");
    let rel: cutover_core::spec::Release = serde_json::from_value(json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "Release", "metadata": {"name": "web-v2"},
        "spec": {"app": "web", "tier": "tier-1", "version": "v2", "replicas": 3,
                 "workload": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}},
                 "clusters": [{"name": "one", "role": "production"}]},
    }))
    .unwrap();
    let created = releases.create(&PostParams::default(), &rel).await.unwrap();
    assert_eq!(created.spec.version, "v2");
    let status =
        json!({"status": {"phase": "Progressing", "stepName": "canary one 4%", "step": 2}});
    let st = releases
        .patch_status("web-v2", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    assert_eq!(
        st.status.as_ref().unwrap().step_name.as_deref(),
        Some("canary one 4%")
    );
    assert_eq!(st.metadata.generation, Some(1));
    let listed = releases.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        releases
            .get_status("web-v2")
            .await
            .unwrap()
            .status
            .unwrap()
            .step,
        2
    );

    crds.delete("releases.cutover.dev", &DeleteParams::default())
        .await
        .unwrap();
    let err = releases.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(
        support::api_error(err).0,
        404,
        "the kind is gone with its CRD"
    );
    fleet.shutdown().await;
}

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"v": "1"}}),
    )
    .unwrap()
}

#[tokio::test]
async fn finalizers_hold_deletion_and_namespaces_take_their_objects() {
    let (fleet, client, _dir) = start(1000).await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    let mut held = cm("held", json!({}));
    held.metadata.finalizers = Some(vec!["cutover.dev/cleanup".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = cms.get("held").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("held").await.unwrap().is_none());

    cms.create(&PostParams::default(), &cm("plain", json!({})))
        .await
        .unwrap();
    nss.delete("shop", &DeleteParams::default()).await.unwrap();
    assert!(nss.get_opt("shop").await.unwrap().is_none());
    assert!(cms.get_opt("plain").await.unwrap().is_none());
    fleet.shutdown().await;
}

#[tokio::test]
async fn requests_are_counted_by_verb_resource_and_user_agent() {
    let (fleet, client, _dir) = start(1000).await;
    fleet.reset_requests();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    cms.get("a").await.unwrap();
    cms.list(&ListParams::default()).await.unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let counts = fleet.requests();
    let cm_counts = counts.resource("configmaps");
    assert_eq!(cm_counts.total(), 5);
    assert_eq!(cm_counts.writes(), 3);
    for verb in ["create", "get", "list", "patch", "delete"] {
        assert_eq!(cm_counts.verb(verb).total(), 1, "{verb}");
    }
    assert_eq!(counts.cluster("one").total(), counts.total());
    // kube sends no User-Agent of its own; a client that names itself is told apart.
    assert_eq!(cm_counts.user_agent("unknown").total(), 5);
    let kc = Kubeconfig::read_from(fleet.kubeconfig_path()).unwrap();
    let opts = KubeConfigOptions {
        context: Some("sim-one".into()),
        ..Default::default()
    };
    let mut config = Config::from_custom_kubeconfig(kc, &opts).await.unwrap();
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static("cutover-test/1"),
    ));
    let named: Api<ConfigMap> = Api::namespaced(Client::try_from(config).unwrap(), "default");
    named.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        fleet
            .requests()
            .user_agent("cutover-test")
            .verb("list")
            .resource("configmaps")
            .total(),
        1
    );

    // The same numbers over HTTP.
    let url = format!("{}/sim/requests", fleet.url("one").unwrap());
    let served: cutover_sim::RequestCounts =
        serde_json::from_str(&support::http_get(&url).await).unwrap();
    assert_eq!(served.resource("configmaps").writes(), 3);
    assert_eq!(served.resource("configmaps").total(), 6);
    fleet.reset_requests();
    assert_eq!(fleet.requests().total(), 0);
    fleet.shutdown().await;
}

#[tokio::test]
async fn the_written_fleet_file_and_kubeconfig_describe_the_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SimOptions {
        scenario: Scenario::default_fleet(),
        time_scale: 60.0,
        dir: dir.path().join("out"),
    };
    let fleet = SimFleet::start(opts).await.unwrap();
    assert_eq!(fleet.cluster_names(), ["staging", "prod-a", "prod-b"]);
    let text = std::fs::read_to_string(fleet.fleet_path()).unwrap();
    let parsed = cutover_core::spec::Fleet::parse("fleet.yaml", &text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(parsed.home, "prod-a");
    let a = parsed.cluster("prod-a").unwrap();
    assert_eq!(a.context.as_deref(), Some("sim-prod-a"));
    assert_eq!(a.zones, ["eu-west-1a", "eu-west-1b", "eu-west-1c"]);
    assert_eq!(a.traffic_share.to_string(), "50%");
    assert_eq!(
        a.metrics_url,
        fleet.url("prod-a").map(|u| format!("{u}/metrics"))
    );
    let clock = parsed.clock.unwrap();
    assert_eq!(clock.time_scale, 60.0);
    // Another process with the same origin and scale agrees on fleet time.
    let theirs = cutover_core::clock::ScaledClock::new(clock.origin, clock.time_scale);
    let wall = jiff::Timestamp::now();
    let ours = fleet.clock().now();
    let drift = theirs.at(wall).duration_since(ours).abs();
    assert!(drift < jiff::SignedDuration::from_secs(60), "{drift:?}");

    let kc = Kubeconfig::read_from(fleet.kubeconfig_path()).unwrap();
    assert_eq!(kc.current_context.as_deref(), Some("sim-prod-a"));
    let mut uids = std::collections::BTreeSet::new();
    for name in fleet.cluster_names() {
        let ns: Api<Namespace> = Api::all(support::sim_client(&fleet, &name).await);
        uids.insert(ns.get("kube-system").await.unwrap().metadata.uid.unwrap());
    }
    assert_eq!(uids.len(), 3, "each cluster's kube-system has its own UID");
    fleet.shutdown().await;
}
