//! Live reads for `cutover check --live` and admission: what a cluster holds
//! now (its identity, its nodes, the app's serving workload and pods), read
//! once with plain requests. Must not judge: the tier rules and placement
//! math that weigh these readings live in the core.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams};

use super::observe::{PodView, node_info, pod_info};
use super::workload::SlotWorkload;
use super::{ClusterHandle, Error, Result};
use crate::labels;
use crate::policy::{NodeInfo, PodInfo};
use crate::spec::ResolvedRelease;

/// One cluster as it is now, for the release's app.
pub struct LiveCluster {
    /// The UID of the cluster's `kube-system` namespace: two fleet entries
    /// with the same UID reach one cluster.
    pub uid: String,
    pub nodes: Vec<NodeInfo>,
    /// The workload serving the app (the first of its slots with replicas),
    /// and its pods as placement sees them.
    pub serving: Option<(SlotWorkload, Vec<PodInfo>)>,
}

/// The UID of the cluster's `kube-system` namespace, which names the cluster.
pub async fn cluster_uid(c: &ClusterHandle) -> Result<String> {
    Ok(Api::<Namespace>::all(c.client.clone())
        .get("kube-system")
        .await
        .map_err(Error::api(&c.name))?
        .metadata
        .uid
        .unwrap_or_default())
}

/// The `kube-system` UID of each of `clusters` that answers within
/// `within`; those that do not are left out (they are asked again later).
/// The clusters are asked at once, and only those whose UID `fleet` does not
/// know yet: a hung API server costs `within`, not a request's timeout and
/// its retries, and once known a cluster is never asked again.
pub async fn cluster_uids(
    fleet: &super::FleetClients,
    clusters: &[&str],
    within: std::time::Duration,
) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut ask = Vec::new();
    {
        let known = fleet.known_uids();
        for &name in clusters {
            match known.get(name) {
                Some(uid) => {
                    out.insert(name.to_string(), uid.clone());
                }
                None => ask.extend(fleet.get(name).ok()),
            }
        }
    }
    let answers = futures::future::join_all(
        ask.into_iter()
            .map(|c| async move { (c, tokio::time::timeout(within, cluster_uid(c)).await) }),
    )
    .await;
    let mut known = fleet.known_uids();
    for (c, answer) in answers {
        if let Ok(Ok(uid)) = answer {
            known.insert(c.name.clone(), uid.clone());
            out.insert(c.name.clone(), uid);
        }
    }
    out
}

/// Reads `c` for `rel`'s app.
pub async fn read(c: &ClusterHandle, rel: &ResolvedRelease) -> Result<LiveCluster> {
    let uid = cluster_uid(c).await?;
    let nodes: Vec<NodeInfo> = Api::<Node>::all(c.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::api(&c.name))?
        .items
        .iter()
        .map(node_info)
        .collect();
    let app = ListParams::default().labels(&format!("{}={}", labels::APP, rel.app));
    let deployments = Api::<Deployment>::namespaced(c.client.clone(), &rel.namespace)
        .list(&app)
        .await
        .map_err(Error::api(&c.name))?;
    let serving = deployments
        .items
        .iter()
        .filter_map(SlotWorkload::from_deployment)
        .find(|w| w.replicas > 0);
    let serving = match serving {
        None => None,
        Some(w) => {
            let pods = Api::<Pod>::namespaced(c.client.clone(), &rel.namespace)
                .list(&app)
                .await
                .map_err(Error::api(&c.name))?
                .items
                .iter()
                .map(|p| pod_info(&PodView::of(p), w.colour, &w.version))
                .collect();
            Some((w, pods))
        }
    };
    Ok(LiveCluster {
        uid,
        nodes,
        serving,
    })
}
