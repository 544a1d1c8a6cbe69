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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::cluster_uids;
    use crate::fleet::{ClientLimits, ClusterHandle, FleetClients};

    /// An API server that answers every request with the `kube-system`
    /// namespace of `uid`, counting the requests.
    async fn answering(uid: &'static str, asked: Arc<AtomicUsize>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let asked = asked.clone();
                tokio::spawn(async move {
                    let mut head = [0u8; 4096];
                    let _ = conn.read(&mut head).await;
                    asked.fetch_add(1, SeqCst);
                    let body = format!(
                        r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"kube-system","uid":"{uid}"}}}}"#
                    );
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}")
    }

    /// An API server that takes connections and requests and answers none.
    async fn hung() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        format!("http://{addr}")
    }

    /// Clients of `clusters` (name, URL) that give a request an hour.
    fn clients(clusters: &[(&str, &str)]) -> FleetClients {
        let limits = ClientLimits {
            request_timeout: Duration::from_secs(3600),
            ..ClientLimits::default()
        };
        let handles: BTreeMap<String, ClusterHandle> = clusters
            .iter()
            .map(|(name, url)| {
                let config = kube::Config::new(url.parse().unwrap());
                let handle = ClusterHandle::build(name, config, limits).unwrap();
                (name.to_string(), handle)
            })
            .collect();
        let home = clusters[0].0.to_string();
        FleetClients {
            elections: handles[&home].clone(),
            clusters: handles,
            home,
            watches: Default::default(),
            uids: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_hung_cluster_costs_the_bound_and_a_known_one_is_not_asked_again() {
        let asked = Arc::new(AtomicUsize::new(0));
        let up = answering("uid-up", asked.clone()).await;
        let fleet = clients(&[("up", &up), ("hung", &hung().await)]);
        // A deadline for the test only: without the bound, the hung
        // cluster's request would wait its hour.
        let ask = || {
            tokio::time::timeout(
                Duration::from_secs(60),
                cluster_uids(&fleet, &["up", "hung"], Duration::from_millis(300)),
            )
        };
        let want = BTreeMap::from([("up".to_string(), "uid-up".to_string())]);
        assert_eq!(ask().await.expect("bounded"), want);
        assert_eq!(asked.load(SeqCst), 1);
        // Asked again: the known cluster answers from memory, the hung one
        // is asked again (and costs the bound again).
        assert_eq!(ask().await.expect("bounded"), want);
        assert_eq!(asked.load(SeqCst), 1, "a known cluster is not asked again");
    }
}
