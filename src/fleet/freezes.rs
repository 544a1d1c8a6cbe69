//! Deploy freezes in clusters: written to every cluster of the fleet at once
//! (a freeze is most needed when things are broken, so an unreachable cluster
//! is reported, never waited on), lifted the same way, listed, and recorded
//! as Kubernetes Events.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, ListParams, PostParams};

use super::{ClusterHandle, Error, FleetClients, Result};
use crate::freeze::{DeployFreeze, DeployFreezeSpec, FreezeEvent, Lifted};

/// How long a freeze write may take on one cluster before it counts as not reached.
pub const PER_CLUSTER: Duration = Duration::from_secs(8);

/// Namespace of the Events about freezes (freezes themselves are cluster-wide).
pub const EVENTS_NAMESPACE: &str = "default";

/// What a freeze write found on one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written (or already there, as written).
    Done,
    /// The freeze was lifted before, by whom and when.
    AlreadyLifted { by: String, at: String },
    /// No freeze of that id is on record there.
    Absent,
}

/// What happened on each cluster.
pub type PerCluster = BTreeMap<String, std::result::Result<Outcome, String>>;

async fn bounded<T>(
    what: impl std::future::Future<Output = Result<T>>,
) -> std::result::Result<T, String> {
    match tokio::time::timeout(PER_CLUSTER, what).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {PER_CLUSTER:?}")),
    }
}

/// Writes the freeze `id` to every cluster in parallel; `at` is the fleet's
/// time, which its history records.
pub async fn freeze(
    fleet: &FleetClients,
    id: &str,
    spec: &DeployFreezeSpec,
    at: Timestamp,
) -> PerCluster {
    let tasks = fleet.iter().map(|c| async move {
        let r = bounded(create(c, id, spec, at)).await;
        (c.name.clone(), r)
    });
    join_all(tasks).await.into_iter().collect()
}

async fn create(
    c: &ClusterHandle,
    id: &str,
    spec: &DeployFreezeSpec,
    at: Timestamp,
) -> Result<Outcome> {
    let api: Api<DeployFreeze> = Api::all(c.client.clone());
    let mut f = DeployFreeze::new(id, spec.clone());
    f.metadata.labels = Some(
        [(
            crate::labels::MANAGED_BY.to_string(),
            crate::labels::MANAGED_BY_VALUE.to_string(),
        )]
        .into(),
    );
    match api.create(&PostParams::default(), &f).await {
        Ok(created) => {
            let msg = format!("frozen by {}: {}", spec.author, spec.reason);
            record(c, &created, "Created", &spec.author, &msg, at).await?;
            Ok(Outcome::Done)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::Done),
        Err(e) => Err(Error::api(&c.name)(e)),
    }
}

/// Lifts freeze `id` on every cluster in parallel, saying where it was
/// already lifted and where no such freeze is on record.
pub async fn unfreeze(
    fleet: &FleetClients,
    id: &str,
    by: &str,
    reason: &str,
    at: Timestamp,
) -> PerCluster {
    let tasks = fleet.iter().map(|c| async move {
        let r = bounded(lift(c, id, by, reason, at)).await;
        (c.name.clone(), r)
    });
    join_all(tasks).await.into_iter().collect()
}

async fn lift(
    c: &ClusterHandle,
    id: &str,
    by: &str,
    reason: &str,
    at: Timestamp,
) -> Result<Outcome> {
    let api: Api<DeployFreeze> = Api::all(c.client.clone());
    for _ in 0..5 {
        let Some(mut f) = api.get_opt(id).await.map_err(Error::api(&c.name))? else {
            return Ok(Outcome::Absent);
        };
        if let Some(l) = &f.spec.lifted {
            return Ok(Outcome::AlreadyLifted {
                by: l.by.clone(),
                at: l.at.clone(),
            });
        }
        f.spec.lifted = Some(Lifted {
            by: by.to_string(),
            reason: reason.to_string(),
            at: at.to_string(),
        });
        // `unfreeze` announces its own lifts; the controller announces the rest.
        f.metadata.annotations.get_or_insert_default().insert(
            crate::labels::LIFT_ANNOUNCED.to_string(),
            "true".to_string(),
        );
        match api.replace(id, &PostParams::default(), &f).await {
            Ok(updated) => {
                record(
                    c,
                    &updated,
                    "Lifted",
                    by,
                    &format!("lifted by {by}: {reason}"),
                    at,
                )
                .await?;
                return Ok(Outcome::Done);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(Error::api(&c.name)(e)),
        }
    }
    Err(Error::Conflict(format!(
        "{}: freeze {id} kept changing",
        c.name
    )))
}

/// Every freeze on one cluster.
pub async fn list(c: &ClusterHandle) -> std::result::Result<Vec<DeployFreeze>, String> {
    let api: Api<DeployFreeze> = Api::all(c.client.clone());
    bounded(async {
        api.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(Error::api(&c.name))
    })
    .await
}

/// The freezes that bind a release on `clusters`, and the clusters whose
/// freezes could not be read (with why): what admission weighs before a
/// release starts. Read from each of `clusters` and from the home cluster,
/// whose copy of every freeze is the record (a freeze written while a member
/// was down is at home, not there).
pub async fn read_all(
    fleet: &FleetClients,
    clusters: &[&str],
) -> Result<(Vec<DeployFreeze>, Vec<(String, String)>)> {
    let home = fleet.home().name.as_str();
    let mut all = Vec::new();
    let mut unreadable = Vec::new();
    let home_too = (!clusters.contains(&home)).then_some(home);
    for name in clusters.iter().copied().chain(home_too) {
        match list(fleet.get(name)?).await {
            Ok(found) => all.extend(found),
            Err(why) => unreadable.push((name.to_string(), why)),
        }
    }
    Ok((all, unreadable))
}

/// Records an override on the freeze it overrode, on one cluster; a freeze
/// not on record there is an error, never a silent success.
pub async fn record_override(
    c: &ClusterHandle,
    id: &str,
    by: &str,
    message: &str,
    at: Timestamp,
) -> Result<()> {
    let api: Api<DeployFreeze> = Api::all(c.client.clone());
    match api.get_opt(id).await.map_err(Error::api(&c.name))? {
        Some(f) => record(c, &f, "Overridden", by, message, at).await,
        None => Err(Error::Conflict(format!(
            "{}: no freeze {id} is on record to override",
            c.name
        ))),
    }
}

/// Appends to the freeze's history and emits a Kubernetes Event.
async fn record(
    c: &ClusterHandle,
    f: &DeployFreeze,
    action: &str,
    by: &str,
    message: &str,
    at: Timestamp,
) -> Result<()> {
    let api: Api<DeployFreeze> = Api::all(c.client.clone());
    let name = f.metadata.name.clone().unwrap_or_default();
    let mut with = f.clone();
    let mut status = with.status.clone().unwrap_or_default();
    status.history.push(FreezeEvent {
        at: at.to_string(),
        action: action.into(),
        by: by.into(),
        message: message.into(),
    });
    with.status = Some(status);
    // The history is best kept; a conflicting writer's history wins over ours.
    let _ = api
        .replace_status(&name, &PostParams::default(), &with)
        .await;
    let events: Api<Event> = Api::namespaced(c.client.clone(), EVENTS_NAMESPACE);
    let t = at;
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: Some(EVENTS_NAMESPACE.into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(crate::spec::API_VERSION.into()),
            kind: Some("DeployFreeze".into()),
            name: Some(name.clone()),
            uid: f.metadata.uid.clone(),
            ..Default::default()
        },
        reason: Some(format!("Freeze{action}")),
        // The whole message is in the freeze's history above; the Event takes what fits.
        message: Some(super::state::clip(message, super::state::EVENT_NOTE_LIMIT)),
        type_: Some(if action == "Overridden" {
            "Warning".into()
        } else {
            "Normal".into()
        }),
        source: Some(EventSource {
            component: Some("cutover".into()),
            host: None,
        }),
        first_timestamp: Some(Time(t)),
        last_timestamp: Some(Time(t)),
        event_time: Some(MicroTime(t)),
        reporting_component: Some("cutover".into()),
        reporting_instance: Some(super::state::clip(by, super::state::EVENT_FIELD_LIMIT)),
        action: Some(action.to_string()),
        count: Some(1),
        ..Default::default()
    };
    events
        .create(&PostParams::default(), &event)
        .await
        .map_err(Error::api(&c.name))?;
    Ok(())
}

/// Whether the caller may override freeze `id`: the `override` verb on
/// `deployfreezes.cutover.dev`, asked of the cluster with a SelfSubjectAccessReview.
pub async fn may_override(c: &ClusterHandle, id: &str) -> Result<std::result::Result<(), String>> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(c.client.clone());
    let review = SelfSubjectAccessReview {
        // Reviews are not stored; a generated name keeps strict servers content.
        metadata: ObjectMeta {
            generate_name: Some("cutover-".into()),
            ..Default::default()
        },
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some("cutover.dev".into()),
                resource: Some("deployfreezes".into()),
                verb: Some("override".into()),
                name: Some(id.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(Error::api(&c.name))?;
    let status = answer.status.unwrap_or_default();
    if status.allowed {
        Ok(Ok(()))
    } else {
        let why = status
            .reason
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "no RBAC rule grants it".into());
        Ok(Err(format!(
            "you may not override freeze {id} (verb `override` on deployfreezes.cutover.dev): {why}"
        )))
    }
}

/// Who the cluster says the caller is (a SelfSubjectReview), when it says.
pub async fn caller(c: &ClusterHandle) -> Option<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: Api<SelfSubjectReview> = Api::all(c.client.clone());
    let review = SelfSubjectReview {
        metadata: ObjectMeta {
            generate_name: Some("cutover-".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = tokio::time::timeout(PER_CLUSTER, api.create(&PostParams::default(), &review))
        .await
        .ok()?
        .ok()?;
    answer.status?.user_info?.username.filter(|u| !u.is_empty())
}
