//! The simulated API server refuses what kube-apiserver refuses, with the
//! same code, reason and field path: CRDs whose schema is not structural
//! (apiextensions-apiserver's validation), and Events past their field limits
//! (kube-apiserver's `pkg/apis/core/validation/events.go`).

mod support;

use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn crd(points: Value) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "properties": {"points": points}}},
            }}}],
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn a_crd_with_tuple_items_or_an_untyped_node_is_refused_naming_the_path() {
    let (fleet, _dir) = support::start_sim(support::one_cluster_with_history(100), 600.0).await;
    let client = support::sim_client(&fleet, "one").await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let tuple = json!({"type": "array", "items": [{"type": "integer"}, {"type": "number"}]});
    let (code, reason, message) = support::api_error(
        crds.create(&PostParams::default(), &crd(tuple))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        message.contains(
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[points].items: \
             Forbidden: items must be a schema object and not an array"
        ),
        "{message}"
    );
    let untyped = json!({"description": "no type"});
    let (code, _, message) = support::api_error(
        crds.create(&PostParams::default(), &crd(untyped))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("properties[points].type: Required value"),
        "{message}"
    );
    let broken_rule = json!({"type": "array", "items": {"type": "integer"},
        "x-kubernetes-validations": [{"rule": "self.all(p, p >", "message": "points rise"}]});
    let (code, _, message) = support::api_error(
        crds.create(&PostParams::default(), &crd(broken_rule))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(
        message.contains(
            "properties[points].x-kubernetes-validations[0].rule: Invalid value: \"self.all(p, p >\": compilation failed"
        ),
        "{message}"
    );
    let objects = json!({"type": "array", "items": {"type": "object", "properties": {
        "at": {"type": "integer"}, "value": {"type": "number"}}}});
    crds.create(&PostParams::default(), &crd(objects))
        .await
        .expect("a structural schema is accepted");
}

#[tokio::test]
async fn events_past_their_field_limits_are_refused() {
    let (fleet, _dir) = support::start_sim(support::one_cluster_with_history(100), 600.0).await;
    let client = support::sim_client(&fleet, "one").await;
    let now = "2026-12-03T10:00:00.000000Z";
    let event = |note: &str, instance: &str| -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": "e1", "namespace": "default"},
            "eventTime": now, "reportingController": "cutover", "reportingInstance": instance,
            "action": "Drive", "reason": "Started", "type": "Normal", "note": note,
            "regarding": {"kind": "Namespace", "name": "default"},
        }))
        .unwrap()
    };
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let (code, _, message) = support::api_error(
        events
            .create(&PostParams::default(), &event(&"x".repeat(1025), "ctl"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(message.contains("note: Too long"), "{message}");
    let (code, _, message) = support::api_error(
        events
            .create(&PostParams::default(), &event("ok", &"i".repeat(129)))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(message.contains("reportingInstance: Too long"), "{message}");
    events
        .create(&PostParams::default(), &event(&"x".repeat(1024), "ctl"))
        .await
        .expect("at the limit is fine");

    // core/v1 with eventTime set: the message is limited the same way.
    let core: Api<CoreEvent> = Api::namespaced(client, "default");
    let long: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "e2", "namespace": "default"},
        "eventTime": now, "reportingComponent": "cutover", "reportingInstance": "ctl",
        "action": "Freeze", "reason": "FreezeSet", "type": "Normal", "message": "m".repeat(2000),
        "involvedObject": {"kind": "Namespace", "name": "default"},
    }))
    .unwrap();
    let (code, _, message) = support::api_error(
        core.create(&PostParams::default(), &long)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(message.contains("message: Too long"), "{message}");
}

fn routes(client: &kube::Client) -> Api<kube::api::DynamicObject> {
    let gvk = kube::core::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(
        client.clone(),
        "default",
        &kube::core::ApiResource::from_gvk_with_plural(&gvk, "httproutes"),
    )
}

fn route(name: &str, backends: Value) -> kube::api::DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": backends}]},
    }))
    .unwrap()
}

/// The simulated HTTPRoute CRD follows the Gateway API v1 schema for what
/// cutover touches: weights 0..=1,000,000 and at most 16 backendRefs a rule
/// (both refused with 422 naming the field), defaults for group, kind and weight.
#[tokio::test]
async fn httproutes_are_validated_and_defaulted_as_the_gateway_api_crd_says() {
    let (fleet, _dir) = support::start_sim(support::one_cluster_with_history(100), 600.0).await;
    let client = support::sim_client(&fleet, "one").await;
    let api = routes(&client);
    let heavy = route(
        "heavy",
        json!([{"name": "web-blue", "port": 80, "weight": 1_000_001}]),
    );
    let (code, reason, message) = support::api_error(
        api.create(&PostParams::default(), &heavy)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        message.contains("spec.rules[0].backendRefs[0].weight: Invalid value: 1000001")
            && message.contains("less than or equal to 1000000"),
        "{message}"
    );
    let many: Vec<Value> = (0..17)
        .map(|i| json!({"name": format!("web-{i}"), "port": 80}))
        .collect();
    let (code, _, message) = support::api_error(
        api.create(&PostParams::default(), &route("many", json!(many)))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.rules[0].backendRefs: Too many: 17: must have at most 16 items"),
        "{message}"
    );
    let made = api
        .create(
            &PostParams::default(),
            &route("web", json!([{"name": "web-blue", "port": 80}])),
        )
        .await
        .unwrap();
    let backend = &made.data["spec"]["rules"][0]["backendRefs"][0];
    assert_eq!(
        (&backend["group"], &backend["kind"], &backend["weight"]),
        (&json!(""), &json!("Service"), &json!(1)),
        "defaults applied: {backend}"
    );
}

/// The HTTPRoute CRD's CEL rules (`x-kubernetes-validations`), as the Gateway
/// API v1 CRD declares them, refuse a route with 422 at the rule's node.
#[tokio::test]
async fn httproute_cel_rules_refuse_what_the_gateway_api_crd_refuses() {
    let (fleet, _dir) = support::start_sim(support::one_cluster_with_history(100), 600.0).await;
    let client = support::sim_client(&fleet, "one").await;
    let api = routes(&client);
    let refused = |spec: Value| {
        let api = api.clone();
        async move {
            let obj: kube::api::DynamicObject = serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "bad"}, "spec": spec}))
            .unwrap();
            support::api_error(api.create(&PostParams::default(), &obj).await.unwrap_err())
        }
    };
    let cases = [
        (
            json!({"rules": [{"backendRefs": [{"name": "web-blue", "port": 80}, {"name": "web-green"}]}]}),
            "spec.rules[0].backendRefs[1]: Invalid value: \"object\": Must have port for Service reference",
        ),
        (
            json!({"parentRefs": [{"name": "gw"}, {"name": "gw"}], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
            "spec.parentRefs: Invalid value: \"array\": sectionName must be unique when parentRefs includes 2 or more references to the same parent",
        ),
        (
            json!({"parentRefs": [{"name": "gw", "sectionName": "https"}, {"name": "gw"}]}),
            "spec.parentRefs: Invalid value: \"array\": sectionName must be specified when parentRefs includes 2 or more references to the same parent",
        ),
        (
            json!({"rules": [{"name": "main", "backendRefs": [{"name": "web", "port": 80}]}, {"name": "main"}]}),
            "spec.rules: Invalid value: \"array\": Rule name must be unique within the route",
        ),
        (
            json!({"rules": [{"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}],
                              "backendRefs": [{"name": "web", "port": 80}]}]}),
            "spec.rules[0]: Invalid value: \"object\": RequestRedirect filter must not be used together with backendRefs",
        ),
        (
            json!({"hostnames": ["Shop.Example.com"]}),
            "spec.hostnames[0]: Invalid value: \"Shop.Example.com\": spec.hostnames[0] in body should match",
        ),
    ];
    for (spec, expected) in cases {
        let (code, reason, message) = refused(spec.clone()).await;
        assert_eq!(
            (code, reason.as_str()),
            (422, "Invalid"),
            "{spec}: {message}"
        );
        assert!(message.contains(expected), "{spec}: {message}");
    }
    let fine = json!({"parentRefs": [{"name": "gw", "sectionName": "http"}, {"name": "gw", "sectionName": "https"}],
        "rules": [{"name": "main", "backendRefs": [{"name": "web-blue", "port": 80, "weight": 99},
                                                   {"name": "web-green", "port": 80, "weight": 1}]}]});
    let obj: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web"}, "spec": fine}))
    .unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("a route that keeps the rules is stored");
}

/// Fields a CRD's schema does not declare are pruned with a warning, and
/// refused under fieldValidation=Strict (400, as kube-apiserver's strict decoding).
#[tokio::test]
async fn unknown_fields_are_pruned_with_a_warning_or_refused_when_strict() {
    let (fleet, _dir) = support::start_sim(support::one_cluster_with_history(100), 600.0).await;
    let url = format!(
        "{}/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes",
        fleet.url("one").unwrap()
    );
    let body = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {"rules": [{"backendRefs": [{"name": "web-blue", "port": 80, "colour": "blue"}]}]}});
    let strict = post(&fleet, &format!("{url}?fieldValidation=Strict"), &body).await;
    assert_eq!(strict.0, 400, "{strict:?}");
    assert!(
        strict.2.contains(
            "strict decoding error: unknown field \\\"spec.rules[0].backendRefs[0].colour\\\""
        ),
        "{strict:?}"
    );
    let (code, warnings, text) = post(&fleet, &url, &body).await;
    assert_eq!(code, 201, "{text}");
    assert_eq!(
        warnings,
        ["299 - \"unknown field \\\"spec.rules[0].backendRefs[0].colour\\\"\""]
    );
    let stored: Value = serde_json::from_str(&text).unwrap();
    assert!(
        stored["spec"]["rules"][0]["backendRefs"][0]
            .get("colour")
            .is_none()
    );
}

/// A JSON POST as cluster one's administrator: status, Warning headers, body.
async fn post(
    fleet: &cutover_sim::SimFleet,
    url: &str,
    body: &Value,
) -> (u16, Vec<String>, String) {
    let token = fleet.admin_token("one").unwrap();
    let r = support::http_as(
        Some(&token),
        http::Method::POST,
        url,
        Some("application/json"),
        body.to_string(),
    )
    .await;
    (r.code, r.warnings, r.body)
}

/// `dryRun` may only be `All` (kube-apiserver's `ValidateDryRun`): anything
/// else is a 422 about the request's options, and nothing is written.
#[tokio::test]
async fn a_dry_run_value_other_than_all_is_refused_and_writes_nothing() {
    let (fleet, _dir) = support::start_sim(support::one_cluster_with_history(100), 600.0).await;
    let base = format!(
        "{}/api/v1/namespaces/default/configmaps",
        fleet.url("one").unwrap()
    );
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}});
    let (code, _, text) = post(&fleet, &format!("{base}?dryRun=true"), &cm).await;
    assert_eq!(code, 422, "{text}");
    assert!(
        text.contains(r#"CreateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{\"true\"}: supported values: \"All\""#),
        "{text}"
    );
    let client = support::sim_client(&fleet, "one").await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, "default");
    assert!(
        cms.get_opt("settings").await.unwrap().is_none(),
        "nothing written"
    );
    let (code, _, text) = post(&fleet, &format!("{base}?dryRun=All"), &cm).await;
    assert_eq!(code, 201, "{text}");
    assert!(
        cms.get_opt("settings").await.unwrap().is_none(),
        "a dry run writes nothing"
    );
}

/// Object metadata as kube-apiserver validates it: a Service's name is a
/// DNS-1035 label, label values follow the label syntax.
#[tokio::test]
async fn service_names_and_labels_are_validated_as_kube_apiserver_does() {
    let (fleet, _dir) = support::start_sim(support::one_cluster_with_history(100), 600.0).await;
    let client = support::sim_client(&fleet, "one").await;
    let svcs: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), "default");
    let svc = |name: &str, label: &str| -> k8s_openapi::api::core::v1::Service {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": label}},
            "spec": {"ports": [{"port": 80}]}}))
        .unwrap()
    };
    let (code, _, message) = support::api_error(
        svcs.create(&PostParams::default(), &svc("2web-green", "web"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("metadata.name: Invalid value: \"2web-green\": a DNS-1035 label"),
        "{message}"
    );
    let (code, _, message) = support::api_error(
        svcs.create(&PostParams::default(), &svc("web-green", "not ok!"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("metadata.labels: Invalid value: \"not ok!\": a valid label"),
        "{message}"
    );
    svcs.create(&PostParams::default(), &svc("web-green", "web"))
        .await
        .expect("a valid Service");
}

/// A server-side apply that creates the object answers 201; applying it again, 200.
#[tokio::test]
async fn an_apply_that_creates_answers_201() {
    let (fleet, _dir) = support::start_sim(support::one_cluster_with_history(100), 600.0).await;
    let url = format!(
        "{}/api/v1/namespaces/default/configmaps/settings?fieldManager=test",
        fleet.url("one").unwrap()
    );
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}});
    let mut codes = Vec::new();
    for _ in 0..2 {
        let apply = support::http_as(
            fleet.admin_token("one").as_deref(),
            http::Method::PATCH,
            &url,
            Some("application/apply-patch+yaml"),
            body.to_string(),
        )
        .await;
        codes.push(apply.code);
    }
    assert_eq!(codes, [201, 200]);
}

/// Server-side apply keeps field ownership: a person's apply that changes a
/// field cutover owns is a 409 naming the manager and the field (as
/// apimachinery's managedfields conflict error words it), and changes
/// nothing; `--force-conflicts` takes the field over, and cutover, which
/// always forces, takes it back. Applying the value a field already has is
/// no conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_that_changes_another_managers_field_is_a_409_unless_forced() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};
    let (fleet, dir) = support::start_sim(support::one_cluster_with_history(1000), 600.0).await;
    let client = support::sim_client(&fleet, "one").await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let web = |replicas: u32| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]}}}})
    };
    let cutover = PatchParams::apply("cutover").force();
    deployments
        .patch("web", &cutover, &Patch::Apply(web(3)))
        .await
        .unwrap();

    let kubectl = support::Kubectl {
        bin: support::kubectl_binary().unwrap(),
        kubeconfig: fleet.kubeconfig_path().to_path_buf(),
        cache: dir.path().join("cache"),
        context: cutover_sim::context_name("one"),
    };
    let file = |replicas: u32| {
        let path = dir.path().join(format!("web-{replicas}.json"));
        std::fs::write(&path, web(replicas).to_string()).unwrap();
        path.to_str().unwrap().to_string()
    };
    // The same value: shared, no conflict.
    let same = file(3);
    kubectl.run(&["apply", "--server-side", "-f", &same]).await;
    let five = file(5);
    let (ok, _, err) = kubectl
        .try_run(&["apply", "--server-side", "-f", &five])
        .await;
    assert!(!ok, "{err}");
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "cutover": .spec.replicas"#),
        "{err}"
    );
    let replicas = |d: Deployment| d.spec.unwrap().replicas;
    assert_eq!(replicas(deployments.get("web").await.unwrap()), Some(3));

    kubectl
        .run(&["apply", "--server-side", "--force-conflicts", "-f", &five])
        .await;
    assert_eq!(replicas(deployments.get("web").await.unwrap()), Some(5));
    // Now kubectl owns the field: cutover without force would conflict with it.
    let err = deployments
        .patch("web", &PatchParams::apply("cutover"), &Patch::Apply(web(3)))
        .await
        .unwrap_err();
    let (code, reason, message) = support::api_error(err);
    assert_eq!((code, reason.as_str()), (409, "Conflict"), "{message}");
    assert!(
        message.contains(r#"conflict with "kubectl": .spec.replicas"#),
        "{message}"
    );
    deployments
        .patch("web", &cutover, &Patch::Apply(web(3)))
        .await
        .unwrap();
    assert_eq!(replicas(deployments.get("web").await.unwrap()), Some(3));
}

/// Lease and Event times come back with the precision kube-apiserver keeps:
/// microseconds for `MicroTime` (a Lease's renewTime, an Event's eventTime),
/// whole seconds for `Time`; a value that is no time is a 400.
#[tokio::test]
async fn micro_times_keep_microseconds_and_times_whole_seconds() {
    use k8s_openapi::api::coordination::v1::Lease;
    let (fleet, _dir) = support::start_sim(support::one_cluster_with_history(100), 600.0).await;
    let client = support::sim_client(&fleet, "one").await;
    let leases: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::api::ApiResource::erase::<Lease>(&()),
    );
    let lease = |renew: &str| {
        serde_json::from_value(
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": format!("l{}", renew.len())},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": renew}}),
        )
        .unwrap()
    };
    let stored = leases
        .create(
            &PostParams::default(),
            &lease("2026-12-03T21:15:00.123456789Z"),
        )
        .await
        .unwrap();
    assert_eq!(
        stored.data["spec"]["renewTime"],
        "2026-12-03T21:15:00.123456Z"
    );
    let err = leases
        .create(&PostParams::default(), &lease("yesterday"))
        .await
        .unwrap_err();
    let (code, _, message) = support::api_error(err);
    assert_eq!(code, 400, "{message}");
    // Lease fields as pkg/apis/coordination/validation checks them.
    let zero: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "zero"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 0, "leaseTransitions": -1}}))
    .unwrap();
    let (code, reason, message) = support::api_error(
        leases
            .create(&PostParams::default(), &zero)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        message.contains("spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0")
            && message.contains(
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0"
            ),
        "{message}"
    );

    let events: Api<CoreEvent> = Api::namespaced(client, "default");
    let event: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "e"}, "involvedObject": {"kind": "Lease", "name": "l", "namespace": "default"},
        "reason": "Test", "message": "m", "type": "Normal",
        "firstTimestamp": "2026-12-03T21:15:00.987Z", "lastTimestamp": "2026-12-03T21:15:01.5Z",
        "eventTime": "2026-12-03T21:15:00.987654321Z", "reportingComponent": "t", "reportingInstance": "t",
        "action": "Test"
    }))
    .unwrap();
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        events.into_client(),
        "default",
        &kube::api::ApiResource::erase::<CoreEvent>(&()),
    );
    let stored = raw
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(stored.data["eventTime"], "2026-12-03T21:15:00.987654Z");
    assert_eq!(stored.data["firstTimestamp"], "2026-12-03T21:15:00Z");
    assert_eq!(stored.data["lastTimestamp"], "2026-12-03T21:15:01Z");
}

/// Lists page with `limit` and `continue` as kube-apiserver pages them: every
/// page reads the first page's resourceVersion (so a change made between
/// pages does not show), `remainingItemCount` counts what is left, an Exact
/// read rebuilds an earlier state, a token whose version was compacted gets
/// 410 Expired with a token to go on at the latest state, and kubectl's
/// chunked `get` walks every page.
#[tokio::test]
async fn lists_page_with_limit_and_continue_at_one_resource_version() {
    let (fleet, dir) = support::start_sim(support::one_cluster_with_history(100), 600.0).await;
    let client = support::sim_client(&fleet, "one").await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "default");
    for i in 0..5 {
        let cm = serde_json::from_value(
            json!({"metadata": {"name": format!("cm-{i}")}, "data": {"v": "1"}}),
        )
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    let names = |l: &kube::core::ObjectList<k8s_openapi::api::core::v1::ConfigMap>| -> Vec<String> {
        l.items
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect()
    };
    assert_eq!(names(&first), ["cm-0", "cm-1"]);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let at = first.metadata.resource_version.clone().unwrap();
    // Changed between pages: the next pages still show the state at `at`.
    cms.patch(
        "cm-3",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    cms.delete("cm-4", &DeleteParams::default()).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    let second = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&second), ["cm-2", "cm-3"]);
    assert_eq!(
        second.items[1].data.as_ref().unwrap()["v"],
        "1",
        "read at {at}"
    );
    let third = cms
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(second.metadata.continue_.as_ref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        names(&third),
        ["cm-4"],
        "deleted after the first page, still listed"
    );
    assert!(third.metadata.continue_.is_none() && third.metadata.remaining_item_count.is_none());
    // An Exact read at `at`; NotOlderThan reads the latest.
    let exact = cms
        .list(
            &ListParams::default()
                .at(&at)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap();
    assert_eq!(exact.items.len(), 5);
    let latest = cms
        .list(
            &ListParams::default()
                .at(&at)
                .matching(kube::api::VersionMatch::NotOlderThan),
        )
        .await
        .unwrap();
    assert_eq!(latest.items.len(), 4);
    // Invalid options: 422 on ListOptions.
    let on = &fleet;
    let get = |query: String| async move {
        let path = format!("/api/v1/namespaces/default/configmaps?{query}");
        support::get_as_admin(on, "one", &path).await
    };
    let (code, body) = get("resourceVersionMatch=Exact".into()).await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(
        body["message"],
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
    );
    // 101 more changes take `at` out of the watch cache's 100, but a
    // continue token reads etcd, which has not compacted yet.
    for i in 0..101 {
        cms.patch(
            "cm-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    let (code, body) = get(format!("limit=2&continue={token}")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["items"][1]["data"]["v"], "1", "read at {at}");
    // kubectl get walks the pages.
    let kubectl = support::Kubectl {
        bin: support::kubectl_binary().unwrap(),
        kubeconfig: fleet.kubeconfig_path().to_path_buf(),
        cache: dir.path().join("cache"),
        context: cutover_sim::context_name("one"),
    };
    let out = kubectl
        .run(&[
            "get",
            "configmaps",
            "-n",
            "default",
            "--chunk-size=1",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("configmap/cm-"))
            .count(),
        4,
        "{out}"
    );
}

/// Once etcd has compacted past a continue token's resourceVersion (twice
/// its `--etcd-compaction-interval`, k8s.io/apiserver's etcd3 compactor),
/// the token gets 410 Expired with a token to go on at the latest state.
#[tokio::test]
async fn a_continue_token_expires_once_etcd_compacts_past_it() {
    let mut scenario = support::one_cluster_with_history(100);
    scenario.api_server.etcd_compaction_interval =
        cutover_core::spec::Span(std::time::Duration::from_millis(100));
    let (fleet, _dir) = support::start_sim(scenario, 600.0).await;
    let client = support::sim_client(&fleet, "one").await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, "default");
    for i in 0..3 {
        let cm = serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}")}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let first = cms.list(&ListParams::default().limit(1)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    cms.delete("cm-2", &DeleteParams::default()).await.unwrap();
    // Three intervals: two compactions since the first page.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (code, body) = support::get_as_admin(
        &fleet,
        "one",
        &format!("/api/v1/namespaces/default/configmaps?limit=1&continue={token}"),
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (410, Some("Expired")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("The provided continue parameter is too old")
    );
    let fresh = body["metadata"]["continue"].as_str().unwrap().to_string();
    let rest = cms
        .list(&ListParams::default().limit(10).continue_token(&fresh))
        .await
        .unwrap();
    let names: Vec<_> = rest
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["cm-1"], "the rest, at the latest state");
}
