//! The simulated API server refuses what kube-apiserver refuses, with the
//! same code, reason and field path: CRDs whose schema is not structural
//! (apiextensions-apiserver's validation), and Events past their field limits
//! (kube-apiserver's `pkg/apis/core/validation/events.go`).

mod support;

use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
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
