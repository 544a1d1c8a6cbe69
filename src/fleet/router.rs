//! Traffic routers. The default edits the backend weights of a Gateway API
//! HTTPRoute between the two slot Services; the weight cutover set is recorded
//! on the route, so an edit by someone else is seen as drift and never
//! silently overwritten. Weights are written in basis points (sum 10 000).

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

use super::workload::{Colour, slot_name};
use super::{ClusterHandle, Error, Result};
use crate::engine::RouteView;
use crate::labels;
use crate::spec::Percent;

/// The Gateway API HTTPRoute resource (typed here by hand: only backend weights are touched).
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// Backend weights of one colour pair in a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Weights {
    blue: u64,
    green: u64,
}

/// Sums the weights of the app's slot Services over every rule. `colour` is green.
fn backend_weights(route: &Value, app: &str, green: Colour) -> Option<Weights> {
    let (gname, bname) = (slot_name(app, green), slot_name(app, green.other()));
    let mut w = Weights { blue: 0, green: 0 };
    let mut found = false;
    for rule in route.pointer("/spec/rules")?.as_array()? {
        for backend in rule
            .get("backendRefs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = backend
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let weight = backend.get("weight").and_then(Value::as_u64).unwrap_or(1);
            if name == gname {
                w.green += weight;
                found = true;
            } else if name == bname {
                w.blue += weight;
                found = true;
            }
        }
    }
    found.then_some(w)
}

/// Whether the route sends any traffic to `colour`'s slot Service of the app.
pub fn sends_to(route: &Value, app: &str, colour: Colour) -> bool {
    backend_weights(route, app, colour).is_some_and(|w| w.green > 0)
}

fn share(w: Weights) -> Percent {
    let total = w.blue + w.green;
    if total == 0 {
        return Percent::ZERO;
    }
    Percent::from_basis_points(((w.green * 10_000 + total / 2) / total) as u32)
}

/// The weight cutover last set, as `(colour, share of that colour)`.
fn recorded(route: &Value) -> Option<(Colour, Percent)> {
    let raw = route
        .pointer("/metadata/annotations")?
        .get(labels::GREEN_WEIGHT)?
        .as_str()?;
    let (c, p) = raw.split_once('=')?;
    Some((Colour::parse(c)?, Percent::parse(p).ok()?))
}

/// Green's share as cutover last recorded it on `object` (a route or a Service).
pub fn recorded_share(object: &Value, green: Colour) -> Option<Percent> {
    recorded(object).map(|(c, p)| if c == green { p } else { p.rest() })
}

/// What cutover reads of a route (or of a replica-ratio Service), kept in
/// the watch caches in place of the object: its backends' names and
/// weights, its selector, and the weight cutover recorded. Every view
/// (`route_view`, `sends_to`, the replica-ratio router's) reads the same
/// from it as from the whole object; a write reads the object afresh.
/// A route held as a `DynamicObject` is about 5 KB of JSON values, and each
/// replica's cache holds every route of the namespace (the caches keep this
/// reading as its text).
pub fn reading(object: &Value) -> Value {
    let mut out = json!({});
    if let Some(recorded) = object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(labels::GREEN_WEIGHT))
    {
        out["metadata"] = json!({"annotations": { labels::GREEN_WEIGHT: recorded }});
    }
    let mut spec = serde_json::Map::new();
    if let Some(rules) = object.pointer("/spec/rules").and_then(Value::as_array) {
        let rules = rules
            .iter()
            .map(|rule| {
                let backends: Vec<Value> = rule
                    .get("backendRefs")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        let mut kept = serde_json::Map::new();
                        for field in ["name", "weight"] {
                            if let Some(v) = b.get(field) {
                                kept.insert(field.to_string(), v.clone());
                            }
                        }
                        Value::Object(kept)
                    })
                    .collect();
                json!({ "backendRefs": backends })
            })
            .collect();
        spec.insert("rules".into(), Value::Array(rules));
    }
    if let Some(selector) = object.pointer("/spec/selector") {
        spec.insert("selector".into(), selector.clone());
    }
    out["spec"] = Value::Object(spec);
    out
}

/// The resource a router of `kind` reads and writes, and its plural: an
/// HTTPRoute, or the Service of a replica-ratio router.
pub fn resource(kind: crate::spec::RouterKind) -> (ApiResource, &'static str) {
    match kind {
        crate::spec::RouterKind::GatewayHttpRoute => (http_route_resource(), "httproutes"),
        crate::spec::RouterKind::ReplicaRatio => {
            (super::replica_ratio::service_resource(), "services")
        }
    }
}

/// What is read of a release's router in `target` (`reading`), from the API
/// server rather than a watch; `None` when it does not exist.
pub async fn read(
    c: &ClusterHandle,
    namespace: &str,
    target: &crate::spec::ResolvedCluster,
) -> Result<Option<Value>> {
    let (resource, _) = resource(target.router.kind);
    let api: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), namespace, &resource);
    let found = api
        .get_opt(&target.router.route)
        .await
        .map_err(Error::api(&c.name))?;
    found
        .map(|o| serde_json::to_value(&o).map(|v| reading(&v)))
        .transpose()
        .map_err(|e| Error::Refused(format!("reading {}: {e}", target.router.route)))
}

/// What the route says about green's share, against what cutover last set.
pub fn route_view(route: &Value, app: &str, green: Colour) -> RouteView {
    let weights = backend_weights(route, app, green).unwrap_or(Weights { blue: 1, green: 0 });
    let achieved = share(weights);
    let target = recorded_share(route, green);
    let drift = target
        .filter(|t| t.basis_points().abs_diff(achieved.basis_points()) > 1)
        .map(|t| {
            format!(
                "route weights give green {achieved} (blue {}, green {}) but cutover set {t}",
                weights.blue, weights.green
            )
        });
    RouteView {
        green: achieved,
        target,
        drift,
        settled: true,
    }
}

/// JSON patch ops that set green's share to `to` in every rule that routes to
/// the app, add green's backend where only blue's is listed, record the target,
/// and fail if the route changed since it was read.
pub fn weight_patch(
    route: &Value,
    app: &str,
    green: Colour,
    to: Percent,
) -> Result<json_patch::Patch> {
    let (gname, bname) = (slot_name(app, green), slot_name(app, green.other()));
    let g = u64::from(to.basis_points());
    let b = 10_000 - g.min(10_000);
    let mut ops = vec![
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": route.pointer("/metadata/resourceVersion")}),
    ];
    let rules = route
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut touched = false;
    for (i, rule) in rules.iter().enumerate() {
        let backends = rule
            .get("backendRefs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut has_green = false;
        let mut blue_ref = None;
        for (j, backend) in backends.iter().enumerate() {
            let name = backend
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let weight = if name == gname {
                has_green = true;
                g
            } else if name == bname {
                blue_ref = Some(backend.clone());
                b
            } else {
                continue;
            };
            touched = true;
            ops.push(json!({"op": "add", "path": format!("/spec/rules/{i}/backendRefs/{j}/weight"), "value": weight}));
        }
        if let (false, Some(mut blue)) = (has_green, blue_ref) {
            blue["name"] = json!(gname);
            blue["weight"] = json!(g);
            ops.push(json!({"op": "add", "path": format!("/spec/rules/{i}/backendRefs/-"), "value": blue}));
        }
    }
    if !touched {
        return Err(Error::Refused(format!(
            "the route routes to neither {bname} nor {gname}; add a backendRef to {bname} (the serving version) to a rule"
        )));
    }
    if route
        .pointer("/metadata/annotations")
        .is_none_or(Value::is_null)
    {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    let key = labels::GREEN_WEIGHT.replace('~', "~0").replace('/', "~1");
    ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{key}"), "value": format!("{green}={to}")}));
    serde_json::from_value(Value::Array(ops))
        .map_err(|e| Error::Refused(format!("building the route patch: {e}")))
}

/// Sets green's share of `route` (in the release namespace) and reads it back.
pub async fn set_weight(
    c: &ClusterHandle,
    namespace: &str,
    route_name: &str,
    app: &str,
    green: Colour,
    to: Percent,
) -> Result<RouteView> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(c.client.clone(), namespace, &http_route_resource());
    for _ in 0..5 {
        let Some(route) = api.get_opt(route_name).await.map_err(Error::api(&c.name))? else {
            // Either slot will do: cutover sets both weights. Naming only one
            // would be wrong half the time (on a first install the new
            // version takes whichever slot is free).
            return Err(Error::NotFound(format!(
                "{}: HTTPRoute {namespace}/{route_name} not found; create it with a rule whose                  backendRefs name {} or {} (cutover sets their weights)",
                c.name,
                slot_name(app, Colour::Blue),
                slot_name(app, Colour::Green)
            )));
        };
        let value = serde_json::to_value(&route).map_err(|e| Error::Refused(e.to_string()))?;
        let patch = weight_patch(&value, app, green, to)?;
        match api
            .patch(
                route_name,
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await
        {
            Ok(updated) => {
                let v =
                    serde_json::to_value(&updated).map_err(|e| Error::Refused(e.to_string()))?;
                return Ok(route_view(&v, app, green));
            }
            // The route changed between read and write (the `test` op failed): read again.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => continue,
            Err(e) => return Err(Error::api(&c.name)(e)),
        }
    }
    Err(Error::Conflict(format!(
        "{}: HTTPRoute {namespace}/{route_name} kept changing under us",
        c.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(blue: u64, green: Option<u64>, note: Option<&str>) -> Value {
        let mut backends = vec![json!({"name": "checkout-blue", "port": 80, "weight": blue})];
        if let Some(g) = green {
            backends.push(json!({"name": "checkout-green", "port": 80, "weight": g}));
        }
        let mut r = json!({
            "metadata": {"name": "checkout", "resourceVersion": "7"},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"matches": [{"path": {"value": "/"}}], "backendRefs": backends}]}
        });
        if let Some(n) = note {
            r["metadata"]["annotations"] = json!({ labels::GREEN_WEIGHT: n });
        }
        r
    }

    fn apply(r: &Value, p: &json_patch::Patch) -> Value {
        let mut r = r.clone();
        json_patch::patch(&mut r, p).unwrap();
        r
    }

    #[test]
    fn reads_weights_targets_and_drift() {
        let cases = [
            (route(100, None, None), Percent::ZERO, None, false),
            (
                route(9600, Some(400), Some("green=4%")),
                Percent::from_whole(4),
                Some(Percent::from_whole(4)),
                false,
            ),
            (
                route(50, Some(50), Some("green=4%")),
                Percent::from_whole(50),
                Some(Percent::from_whole(4)),
                true,
            ),
            // Recorded for the other colour by the previous release: all on that colour.
            (
                route(0, Some(10_000), Some("blue=0%")),
                Percent::HUNDRED,
                Some(Percent::HUNDRED),
                false,
            ),
        ];
        for (r, green, target, drift) in cases {
            let v = route_view(&r, "checkout", Colour::Green);
            assert_eq!(
                (v.green, v.target, v.drift.is_some()),
                (green, target, drift),
                "{r}"
            );
        }
    }

    #[test]
    fn a_route_kept_as_its_reading_reads_as_the_whole_route() {
        let mut two_rules = route(9000, Some(1000), Some("green=10%"));
        two_rules["spec"]["rules"].as_array_mut().unwrap().push(
            json!({"matches": [{"path": {"value": "/api"}}], "backendRefs": [
                {"name": "checkout-blue", "port": 80},
                {"name": "other", "port": 80, "weight": 5, "kind": "Service"}
            ]}),
        );
        let routes = [
            route(100, None, None),
            route(9600, Some(400), Some("green=4%")),
            route(50, Some(50), Some("green=4%")),
            route(0, Some(10_000), Some("blue=0%")),
            two_rules,
            json!({"metadata": {"name": "checkout"}, "spec": {}}),
        ];
        for r in routes {
            let kept = reading(&r);
            assert!(kept.to_string().len() < r.to_string().len(), "{kept}");
            for green in [Colour::Blue, Colour::Green] {
                assert_eq!(
                    route_view(&kept, "checkout", green),
                    route_view(&r, "checkout", green),
                    "{r}"
                );
                assert_eq!(
                    sends_to(&kept, "checkout", green),
                    sends_to(&r, "checkout", green)
                );
            }
        }
    }

    #[test]
    fn patch_sets_weights_adds_green_and_keeps_everything_else() {
        let r = route(100, None, None);
        let p = weight_patch(&r, "checkout", Colour::Green, Percent::from_whole(4)).unwrap();
        let after = apply(&r, &p);
        assert_eq!(after["spec"]["rules"][0]["backendRefs"][0]["weight"], 9600);
        assert_eq!(
            after["spec"]["rules"][0]["backendRefs"][1],
            json!({"name": "checkout-green", "port": 80, "weight": 400})
        );
        assert_eq!(after["spec"]["parentRefs"], r["spec"]["parentRefs"]);
        assert_eq!(
            after["spec"]["rules"][0]["matches"],
            r["spec"]["rules"][0]["matches"]
        );
        let v = route_view(&after, "checkout", Colour::Green);
        assert_eq!(
            (v.green, v.target, v.drift),
            (Percent::from_whole(4), Some(Percent::from_whole(4)), None)
        );
        // A route changed since it was read is refused by the test op.
        let mut moved = r.clone();
        moved["metadata"]["resourceVersion"] = json!("8");
        assert!(json_patch::patch(&mut moved, &p).is_err());
    }

    #[test]
    fn a_route_without_the_app_is_refused() {
        let r = json!({"metadata": {"resourceVersion": "1"}, "spec": {"rules": [{"backendRefs": [{"name": "other"}]}]}});
        let e = weight_patch(&r, "checkout", Colour::Green, Percent::HUNDRED).unwrap_err();
        assert!(e.to_string().contains("checkout-blue"), "{e}");
    }
}
