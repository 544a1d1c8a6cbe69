//! Setting a cluster up for cutover: its CRDs, and (for demos, rehearsals and
//! tests) a version already serving in the blue slot behind the app's route.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::json;

use super::router::http_route_resource;
use super::workload::{Colour, green_deployment, slot_name, slot_service};
use super::{ClusterHandle, Error, Result};
use crate::labels;
use crate::spec::{Release, ResolvedRelease, RouterKind};

/// The CRDs cutover owns.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Release::crd(), crate::freeze::DeployFreeze::crd()]
        .into_iter()
        .map(bounded)
        .collect()
}

/// `crd` with every unsigned integer of fewer than 64 bits bounded above by
/// its type's largest value. A schema's `format` of `uint32` says only what
/// cutover reads: the API server validates string formats alone, so a
/// `minMeasurements: 5000000000` would be stored for cutover to refuse
/// (apiextensions-apiserver, `JSONSchemaProps.Format`: "Unknown formats
/// are ignored"). `maximum` is validated on every write, naming the field.
fn bounded(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(node: &mut serde_json::Value) {
        match node {
            serde_json::Value::Object(map) => {
                let max = match map.get("format").and_then(|f| f.as_str()) {
                    Some("uint8") => Some(u64::from(u8::MAX)),
                    Some("uint16") => Some(u64::from(u16::MAX)),
                    Some("uint32") => Some(u64::from(u32::MAX)),
                    _ => None,
                };
                if let Some(max) = max
                    && map.get("type").and_then(|t| t.as_str()) == Some("integer")
                {
                    map.entry("maximum").or_insert(json!(max as f64));
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    walk(&mut value);
    serde_json::from_value(value).expect("a CRD with bounds reads back")
}

fn apply() -> PatchParams {
    PatchParams::apply(labels::FIELD_MANAGER).force()
}

/// Installs (or updates) cutover's CRDs.
pub async fn install_crds(c: &ClusterHandle) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    for crd in crds() {
        api.patch(&crd.name_any(), &apply(), &Patch::Apply(&crd))
            .await
            .map_err(Error::api(&c.name))?;
    }
    Ok(())
}

/// Makes `version` of the release's app serve from the blue slot of one
/// cluster: namespace, both slot Services, blue's Deployment at full size, and
/// an HTTPRoute sending everything to blue (or, for a replica-ratio router,
/// the app's Service selecting blue).
pub async fn install_serving(
    c: &ClusterHandle,
    rel: &ResolvedRelease,
    version: &str,
) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": rel.namespace}});
    namespaces
        .patch(&rel.namespace, &apply(), &Patch::Apply(&ns))
        .await
        .map_err(Error::api(&c.name))?;
    let mut serving = rel.clone();
    serving.version = version.to_string();
    let target = rel
        .cluster(&c.name)
        .ok_or_else(|| Error::UnknownCluster(c.name.clone()))?;
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(c.client.clone(), &rel.namespace);
    for colour in Colour::BOTH {
        let svc = slot_service(rel, colour, target.router.port);
        services
            .patch(&slot_name(&rel.app, colour), &apply(), &Patch::Apply(&svc))
            .await
            .map_err(Error::api(&c.name))?;
    }
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(c.client.clone(), &rel.namespace);
    let blue = green_deployment(&serving, Colour::Blue, target.replicas);
    deployments
        .patch(
            &slot_name(&rel.app, Colour::Blue),
            &apply(),
            &Patch::Apply(&blue),
        )
        .await
        .map_err(Error::api(&c.name))?;
    if target.router.kind == RouterKind::ReplicaRatio {
        // The app's own Service, selecting the serving colour.
        let svc = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": target.router.route, "namespace": rel.namespace},
            "spec": {
                "selector": {labels::APP: rel.app, labels::COLOUR: Colour::Blue.as_str()},
                "ports": [{"name": "http", "port": target.router.port}]
            }
        });
        services
            .patch(
                &target.router.route,
                &PatchParams::apply("platform").force(),
                &Patch::Apply(&svc),
            )
            .await
            .map_err(Error::api(&c.name))?;
        return Ok(());
    }
    let routes: Api<DynamicObject> =
        Api::namespaced_with(c.client.clone(), &rel.namespace, &http_route_resource());
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": target.router.route, "namespace": rel.namespace},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "gateway"}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": slot_name(&rel.app, Colour::Blue), "port": target.router.port, "weight": 100}]
            }]
        }
    });
    routes
        .patch(
            &target.router.route,
            &PatchParams::apply("platform").force(),
            &Patch::Apply(&route),
        )
        .await
        .map_err(Error::api(&c.name))?;
    Ok(())
}

/// Creates or updates one object of any kind the cluster serves (server-side
/// apply as `platform`), in `namespace` unless it names its own. The plural is
/// the kind in lower case plus `s` (Service, ConfigMap, PersistentVolumeClaim, Secret).
/// Returns the object's UID.
pub async fn install_object(
    c: &ClusterHandle,
    namespace: &str,
    object: &serde_json::Value,
) -> Result<String> {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    if kind.is_empty() || name.is_empty() {
        return Err(Error::Refused(format!(
            "{}: an object needs `kind` and `metadata.name`: {object}",
            c.name
        )));
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(group, version, kind),
        &format!("{}s", kind.to_lowercase()),
    );
    let ns = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or(namespace);
    let api: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), ns, &ar);
    let mut obj = object.clone();
    obj["metadata"]["namespace"] = json!(ns);
    let created = api
        .patch(
            name,
            &PatchParams::apply("platform").force(),
            &Patch::Apply(&obj),
        )
        .await
        .map_err(Error::api(&c.name))?;
    Ok(created.metadata.uid.unwrap_or_default())
}
