//! Workloads: each colour slot of an app is one Deployment (`<app>-blue`,
//! `<app>-green`) and one Service selecting it. A release puts its version in
//! the slot that is not serving. Only Deployments cutover created and
//! labelled are ever deleted; Services are created, never deleted.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};

use super::{ClusterHandle, Error, Result};
use crate::labels;
use crate::spec::ResolvedRelease;

/// A colour slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Colour {
    Blue,
    Green,
}

impl Colour {
    pub const BOTH: [Colour; 2] = [Colour::Blue, Colour::Green];

    pub fn other(self) -> Colour {
        match self {
            Colour::Blue => Colour::Green,
            Colour::Green => Colour::Blue,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Colour::Blue => "blue",
            Colour::Green => "green",
        }
    }

    pub fn parse(s: &str) -> Option<Colour> {
        match s {
            "blue" => Some(Colour::Blue),
            "green" => Some(Colour::Green),
            _ => None,
        }
    }
}

impl fmt::Display for Colour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Name of the Deployment and of the Service of a slot.
pub fn slot_name(app: &str, colour: Colour) -> String {
    format!("{app}-{colour}")
}

/// What is known of one slot's Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotWorkload {
    pub name: String,
    pub uid: Option<String>,
    pub colour: Colour,
    pub version: String,
    pub replicas: u32,
    pub available: u32,
    /// Whether the Deployment carries cutover's ownership label.
    pub managed: bool,
}

impl SlotWorkload {
    pub fn from_deployment(d: &Deployment) -> Option<SlotWorkload> {
        let meta = &d.metadata;
        let l = meta.labels.as_ref()?;
        let colour = Colour::parse(l.get(labels::COLOUR)?)?;
        let spec_replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
        let status = d.status.as_ref();
        let observed = status.and_then(|s| s.observed_generation) >= meta.generation;
        let available = if observed {
            status
                .and_then(|s| s.available_replicas)
                .unwrap_or(0)
                .max(0) as u32
        } else {
            0
        };
        Some(SlotWorkload {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
            colour,
            version: l.get(labels::VERSION).cloned().unwrap_or_default(),
            replicas: spec_replicas,
            available,
            managed: l.get(labels::MANAGED_BY).map(String::as_str)
                == Some(labels::MANAGED_BY_VALUE),
        })
    }
}

/// Which slot holds this release's version (green) and which serves (blue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slots {
    pub green: Colour,
    pub green_workload: Option<SlotWorkload>,
    /// The serving version in the other slot, if any runs there.
    pub blue_workload: Option<SlotWorkload>,
}

/// Decides the slots from the app's Deployments. Green is the slot running
/// this release's version; failing that, the slot that does not serve.
pub fn assign_slots(version: &str, workloads: &[SlotWorkload]) -> Slots {
    let in_slot = |c: Colour| workloads.iter().find(|w| w.colour == c);
    let serving = |c: Colour| in_slot(c).is_some_and(|w| w.replicas > 0 && w.version != version);
    let green = Colour::BOTH
        .into_iter()
        .find(|c| in_slot(*c).is_some_and(|w| w.version == version))
        .unwrap_or(if serving(Colour::Blue) {
            Colour::Green
        } else {
            Colour::Blue
        });
    let blue = green.other();
    Slots {
        green,
        green_workload: in_slot(green).filter(|w| w.version == version).cloned(),
        blue_workload: in_slot(blue)
            .filter(|w| w.replicas > 0 && w.version != version)
            .cloned(),
    }
}

fn slot_labels(rel: &ResolvedRelease, colour: Colour) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::APP.to_string(), rel.app.clone()),
        (labels::VERSION.to_string(), rel.version.clone()),
        (labels::COLOUR.to_string(), colour.to_string()),
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (labels::RELEASE.to_string(), rel.name.clone()),
    ])
}

fn selector(app: &str, colour: Colour) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::APP.to_string(), app.to_string()),
        (labels::COLOUR.to_string(), colour.to_string()),
    ])
}

/// The Deployment of a release's version in `colour`, at `replicas`.
pub fn green_deployment(rel: &ResolvedRelease, colour: Colour, replicas: u32) -> Deployment {
    let mut template = rel.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    let pod_labels = meta.labels.get_or_insert_with(Default::default);
    pod_labels.extend(
        slot_labels(rel, colour)
            .into_iter()
            .filter(|(k, _)| k != labels::RELEASE),
    );
    Deployment {
        metadata: ObjectMeta {
            name: Some(slot_name(&rel.app, colour)),
            namespace: Some(rel.namespace.clone()),
            labels: Some(slot_labels(rel, colour)),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas as i32),
            selector: LabelSelector {
                match_labels: Some(selector(&rel.app, colour)),
                ..Default::default()
            },
            template,
            ..Default::default()
        }),
        status: None,
    }
}

/// The Service of a slot. Its target port is the first container's first port.
pub fn slot_service(rel: &ResolvedRelease, colour: Colour, port: u16) -> Service {
    let target = rel
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.ports.as_ref())
        .and_then(|p| p.first())
        .map(|p| IntOrString::Int(p.container_port))
        .unwrap_or(IntOrString::Int(i32::from(port)));
    let mut labels = selector(&rel.app, colour);
    labels.insert(
        labels::MANAGED_BY.to_string(),
        labels::MANAGED_BY_VALUE.to_string(),
    );
    Service {
        metadata: ObjectMeta {
            name: Some(slot_name(&rel.app, colour)),
            namespace: Some(rel.namespace.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector(&rel.app, colour)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: i32::from(port),
                target_port: Some(target),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The disruption budget of a slot's pods, when the release sets one.
pub fn slot_budget(rel: &ResolvedRelease, colour: Colour) -> Option<PodDisruptionBudget> {
    let b = rel.disruption_budget.as_ref()?;
    Some(PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(slot_name(&rel.app, colour)),
            namespace: Some(rel.namespace.clone()),
            labels: Some(slot_labels(rel, colour)),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            min_available: b.min_available.clone(),
            max_unavailable: b.max_unavailable.clone(),
            selector: Some(LabelSelector {
                match_labels: Some(selector(&rel.app, colour)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    })
}

fn apply_params() -> PatchParams {
    PatchParams::apply(labels::FIELD_MANAGER).force()
}

/// Creates or updates green (server-side apply, one field manager), and makes
/// sure both slot Services exist (created once, never rewritten or deleted).
pub async fn deploy_green(
    c: &ClusterHandle,
    rel: &ResolvedRelease,
    colour: Colour,
    replicas: u32,
    port: u16,
) -> Result<()> {
    let services: Api<Service> = Api::namespaced(c.client.clone(), &rel.namespace);
    for slot in Colour::BOTH {
        let name = slot_name(&rel.app, slot);
        if services
            .get_opt(&name)
            .await
            .map_err(Error::api(&c.name))?
            .is_none()
        {
            services
                .patch(
                    &name,
                    &apply_params(),
                    &Patch::Apply(slot_service(rel, slot, port)),
                )
                .await
                .map_err(Error::api(&c.name))?;
        }
    }
    if let Some(pdb) = slot_budget(rel, colour) {
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(c.client.clone(), &rel.namespace);
        budgets
            .patch(
                &slot_name(&rel.app, colour),
                &apply_params(),
                &Patch::Apply(pdb),
            )
            .await
            .map_err(Error::api(&c.name))?;
    }
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &rel.namespace);
    let d = green_deployment(rel, colour, replicas);
    deployments
        .patch(
            &slot_name(&rel.app, colour),
            &apply_params(),
            &Patch::Apply(d),
        )
        .await
        .map_err(Error::api(&c.name))?;
    Ok(())
}

/// Scales green to zero after a rollback; the Deployment stays for inspection.
pub async fn scale_down(c: &ClusterHandle, namespace: &str, w: &SlotWorkload) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), namespace);
    let patch = serde_json::json!({ "spec": { "replicas": 0 } });
    deployments
        .patch(&w.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(Error::api(&c.name))?;
    Ok(())
}

/// Deletes blue's Deployment: only if cutover created it, and only that object
/// (its UID is a precondition, so a same-named replacement is never deleted).
pub async fn delete_blue(c: &ClusterHandle, namespace: &str, w: &SlotWorkload) -> Result<()> {
    if !w.managed {
        return Err(Error::Refused(format!(
            "{}: Deployment {namespace}/{} was not created by cutover (no {}={} label); it is left alone",
            c.name,
            w.name,
            labels::MANAGED_BY,
            labels::MANAGED_BY_VALUE
        )));
    }
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), namespace);
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: w.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match deployments.delete(&w.name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(Error::api(&c.name)(e)),
    }
    // The colour's disruption budget goes with it, if cutover made one.
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(c.client.clone(), namespace);
    if let Some(pdb) = budgets
        .get_opt(&w.name)
        .await
        .map_err(Error::api(&c.name))?
        && pdb
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::MANAGED_BY))
            .map(String::as_str)
            == Some(labels::MANAGED_BY_VALUE)
    {
        budgets
            .delete(&w.name, &DeleteParams::default())
            .await
            .map_err(Error::api(&c.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(colour: Colour, version: &str, replicas: u32) -> SlotWorkload {
        SlotWorkload {
            name: format!("app-{colour}"),
            uid: None,
            colour,
            version: version.into(),
            replicas,
            available: replicas,
            managed: true,
        }
    }

    #[test]
    fn slots_alternate_between_releases() {
        let cases = [
            // (workloads, release version, green slot, green present, blue version)
            (vec![], "2", Colour::Blue, false, None),
            (
                vec![w(Colour::Blue, "1", 6)],
                "2",
                Colour::Green,
                false,
                Some("1"),
            ),
            (
                vec![w(Colour::Blue, "1", 6), w(Colour::Green, "2", 6)],
                "2",
                Colour::Green,
                true,
                Some("1"),
            ),
            (
                vec![w(Colour::Green, "2", 6)],
                "3",
                Colour::Blue,
                false,
                Some("2"),
            ),
            // After an aborted release: its green is scaled to zero and reused.
            (
                vec![w(Colour::Blue, "1", 6), w(Colour::Green, "2", 0)],
                "3",
                Colour::Green,
                false,
                Some("1"),
            ),
            // After cleanup: only green remains.
            (
                vec![w(Colour::Green, "2", 6)],
                "2",
                Colour::Green,
                true,
                None,
            ),
        ];
        for (ws, version, green, present, blue) in cases {
            let s = assign_slots(version, &ws);
            assert_eq!(s.green, green, "{ws:?} {version}");
            assert_eq!(s.green_workload.is_some(), present, "{ws:?} {version}");
            assert_eq!(
                s.blue_workload.as_ref().map(|b| b.version.as_str()),
                blue,
                "{ws:?} {version}"
            );
        }
    }
}
