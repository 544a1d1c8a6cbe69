//! The replica-ratio router, for clusters without Gateway API: one Service
//! (the router's `route`, by default named after the app) selects the app's
//! pods, and green's share of traffic is the share of green pods among the
//! ready pods it selects.
//!
//! - 0 %: the Service selects blue's colour only; green keeps whatever size it has.
//! - between: the Service selects the app (both colours); green is scaled to
//!   the most pods whose share does not exceed the target (at least one), and
//!   at most the cluster's replica count. Blue is never scaled: its full size
//!   stays in place for an instant rollback, so the highest share reachable
//!   before the switch is one half.
//! - 100 %: green is scaled to full size, and once every pod is available the
//!   Service selects green's colour only.
//!
//! The share is reported as achieved (ready pods), not as requested: a
//! 4 % canary over three blue pods is one green pod in four, 25 %. The
//! release check refuses a canary that cannot stay within the tier's bound.
//! The target cutover set is recorded on the Service; a selector that does
//! not match it is drift, and the release holds rather than fighting.

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ApiResource, Patch, PatchParams};
use serde_json::{Value, json};

use super::workload::{self, Colour, SlotWorkload, Slots};
use super::{ClusterHandle, Error, Result};
use crate::engine::RouteView;
use crate::labels;
use crate::spec::quantity::{green_count, share};
use crate::spec::{Percent, ResolvedCluster, ResolvedRelease};

pub fn service_resource() -> ApiResource {
    ApiResource::erase::<Service>(&())
}

/// What a Service selects among the app's pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Selects {
    Colour(Colour),
    Both,
    /// A selector cutover does not write.
    Other,
}

fn selects(svc: &Value, app: &str) -> Selects {
    let Some(sel) = svc.pointer("/spec/selector").and_then(Value::as_object) else {
        return Selects::Other;
    };
    if sel.get(labels::APP).and_then(Value::as_str) != Some(app) {
        return Selects::Other;
    }
    match (sel.len(), sel.get(labels::COLOUR).and_then(Value::as_str)) {
        (1, None) => Selects::Both,
        (2, Some(c)) => Colour::parse(c).map_or(Selects::Other, Selects::Colour),
        _ => Selects::Other,
    }
}

/// Whether the app's Service sends traffic to `colour`'s pods: it selects
/// that colour, or both colours while `colour` runs pods. A selector cutover
/// does not write may select anything: it counts as sending.
pub fn sends_to(svc: &Value, app: &str, colour: Colour, runs_pods: bool) -> bool {
    match selects(svc, app) {
        Selects::Colour(c) => c == colour,
        Selects::Both => runs_pods,
        Selects::Other => true,
    }
}

fn selector_value(app: &str, s: Selects) -> Value {
    match s {
        Selects::Colour(c) => json!({ labels::APP: app, labels::COLOUR: c.as_str() }),
        _ => json!({ labels::APP: app }),
    }
}

/// Green's share through the Service, against what cutover last set.
pub fn service_view(svc: &Value, app: &str, slots: &Slots) -> RouteView {
    let green = slots.green;
    let available = |w: &Option<SlotWorkload>| w.as_ref().map_or(0, |w| w.available);
    let selects = selects(svc, app);
    let achieved = match selects {
        Selects::Colour(c) if c == green => Percent::HUNDRED,
        Selects::Colour(_) | Selects::Other => Percent::ZERO,
        Selects::Both => share(
            available(&slots.green_workload),
            available(&slots.blue_workload),
        ),
    };
    let target = super::router::recorded_share(svc, green);
    let drift = match (target, selects) {
        (_, Selects::Other) => Some(format!(
            "service selector is {} but cutover selects {}={app}, optionally with {}",
            svc.pointer("/spec/selector").unwrap_or(&Value::Null),
            labels::APP,
            labels::COLOUR
        )),
        (Some(t), s) if t == Percent::ZERO && s != Selects::Colour(green.other()) => Some(format!(
            "service selects {s:?} but cutover set it to {}",
            green.other()
        )),
        (Some(t), s) if t > Percent::ZERO && t < Percent::HUNDRED && s != Selects::Both => Some(
            format!("service selects {s:?} but cutover set it to both colours"),
        ),
        _ => None,
    };
    let settled = match (target, selects) {
        (Some(t), Selects::Colour(c)) if t == Percent::HUNDRED => c == green,
        (Some(t), Selects::Both) if t > Percent::ZERO && t < Percent::HUNDRED => slots
            .green_workload
            .as_ref()
            .is_some_and(|w| w.available >= w.replicas),
        (Some(t), _) if t == Percent::HUNDRED => false,
        _ => true,
    };
    RouteView {
        green: achieved,
        target,
        drift,
        settled,
    }
}

/// Moves the Service and green's size towards `to`; returns once written.
/// Repeating it is safe: nothing is written when it already says so.
pub async fn set_weight(
    c: &ClusterHandle,
    rel: &ResolvedRelease,
    target: &ResolvedCluster,
    slots: &Slots,
    to: Percent,
) -> Result<()> {
    let name = &target.router.route;
    let api: Api<Service> = Api::namespaced(c.client.clone(), &rel.namespace);
    let Some(svc) = api.get_opt(name).await.map_err(Error::api(&c.name))? else {
        return Err(Error::NotFound(format!(
            "{}: Service {}/{name} not found; create it with the selector {}: {}",
            c.name,
            rel.namespace,
            labels::APP,
            rel.app
        )));
    };
    let svc = serde_json::to_value(&svc).map_err(|e| Error::Refused(e.to_string()))?;
    let current = selects(&svc, &rel.app);
    let blue_size = slots.blue_workload.as_ref().map_or(0, |w| w.replicas);
    let green = slots.green_workload.as_ref();
    let want = if to == Percent::ZERO {
        Selects::Colour(slots.green.other())
    } else if to < Percent::HUNDRED {
        let n = green_count(to, blue_size, target.replicas);
        if green.is_none_or(|w| w.replicas != n) {
            workload::deploy_green(c, rel, slots.green, n, target.router.port).await?;
        }
        Selects::Both
    } else {
        if green.is_none_or(|w| w.replicas != target.replicas) {
            workload::deploy_green(c, rel, slots.green, target.replicas, target.router.port)
                .await?;
        }
        // Switch only once green can carry everything; until then the
        // Service keeps what it selects.
        match green {
            Some(w) if w.replicas == target.replicas && w.available >= w.replicas => {
                Selects::Colour(slots.green)
            }
            _ if current == Selects::Other => Selects::Colour(slots.green.other()),
            _ => current,
        }
    };
    let note = format!("{}={to}", slots.green);
    let noted = svc
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(labels::GREEN_WEIGHT))
        .and_then(Value::as_str);
    if current == want && noted == Some(note.as_str()) {
        return Ok(());
    }
    let mut patch = json!({
        "metadata": {
            "resourceVersion": svc.pointer("/metadata/resourceVersion"),
            "annotations": { labels::GREEN_WEIGHT: note },
        },
        "spec": { "selector": selector_value(&rel.app, want) },
    });
    // A merge patch merges maps: drop the colour key explicitly when selecting both.
    if want == Selects::Both {
        patch["spec"]["selector"][labels::COLOUR] = Value::Null;
    }
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Conflict(format!(
            "{}: Service {}/{name} changed while cutover was updating it; it will be read again",
            c.name, rel.namespace
        ))),
        Err(e) => Err(Error::api(&c.name)(e)),
    }
}

/// The pods a replica-ratio Service serves while green is partial: both colours.
pub fn serving_replicas(slots: &Slots) -> u32 {
    [&slots.green_workload, &slots.blue_workload]
        .into_iter()
        .flatten()
        .map(|w| w.replicas)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::workload::slot_name;

    fn pct(n: u32) -> Percent {
        Percent::from_whole(n)
    }

    fn slots(green: Option<(u32, u32)>, blue: u32) -> Slots {
        let w = |colour, version: &str, (replicas, available)| SlotWorkload {
            name: slot_name("checkout", colour),
            uid: None,
            colour,
            version: version.into(),
            replicas,
            available,
            managed: true,
        };
        Slots {
            green: Colour::Green,
            green_workload: green.map(|g| w(Colour::Green, "2.14.0", g)),
            blue_workload: Some(w(Colour::Blue, "2.13.0", (blue, blue))),
        }
    }

    fn svc(selector: Value, note: Option<&str>) -> Value {
        let mut v = json!({"metadata": {"name": "checkout", "resourceVersion": "3"}, "spec": {"selector": selector}});
        if let Some(n) = note {
            v["metadata"]["annotations"] = json!({ labels::GREEN_WEIGHT: n });
        }
        v
    }

    #[test]
    fn view_reports_achieved_share_drift_and_settling() {
        let both = json!({ labels::APP: "checkout" });
        let blue = json!({ labels::APP: "checkout", labels::COLOUR: "blue" });
        let green = json!({ labels::APP: "checkout", labels::COLOUR: "green" });
        let other = json!({ "run": "checkout" });
        // (service, slots, achieved, target, drift, settled)
        let cases = [
            (
                svc(blue.clone(), None),
                slots(None, 3),
                pct(0),
                None,
                false,
                true,
            ),
            (
                svc(both.clone(), Some("green=4%")),
                slots(Some((1, 1)), 3),
                pct(25),
                Some(pct(4)),
                false,
                true,
            ),
            (
                svc(both.clone(), Some("green=4%")),
                slots(Some((1, 0)), 3),
                pct(0),
                Some(pct(4)),
                false,
                false,
            ),
            // On the way to 100 %: still both until green is all available.
            (
                svc(both.clone(), Some("green=100%")),
                slots(Some((3, 2)), 3),
                pct(40),
                Some(pct(100)),
                false,
                false,
            ),
            (
                svc(green.clone(), Some("green=100%")),
                slots(Some((3, 3)), 3),
                pct(100),
                Some(pct(100)),
                false,
                true,
            ),
            // Someone pointed the Service back at blue while cutover held it at 4 %.
            (
                svc(blue.clone(), Some("green=4%")),
                slots(Some((1, 1)), 3),
                pct(0),
                Some(pct(4)),
                true,
                true,
            ),
            (
                svc(other, Some("green=0%")),
                slots(None, 3),
                pct(0),
                Some(pct(0)),
                true,
                true,
            ),
            // The previous release's record, read by the next release,
            // whose green is the blue slot: everything on the serving colour.
            (
                svc(green, Some("green=100%")),
                Slots {
                    green: Colour::Blue,
                    green_workload: None,
                    blue_workload: slots(Some((3, 3)), 0).green_workload,
                },
                pct(0),
                Some(pct(0)),
                false,
                true,
            ),
        ];
        for (s, sl, achieved, target, drift, settled) in cases {
            let v = service_view(&s, "checkout", &sl);
            assert_eq!(
                (v.green, v.target, v.drift.is_some(), v.settled),
                (achieved, target, drift, settled),
                "{s}"
            );
            // The caches keep what is read of the Service: it reads the same.
            let kept = super::super::router::reading(&s);
            assert_eq!(service_view(&kept, "checkout", &sl), v, "{kept}");
            for colour in [Colour::Blue, Colour::Green] {
                for runs in [false, true] {
                    assert_eq!(
                        sends_to(&kept, "checkout", colour, runs),
                        sends_to(&s, "checkout", colour, runs)
                    );
                }
            }
        }
    }
}
