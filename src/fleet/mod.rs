//! The only code that talks to clusters: one client per cluster with
//! timeouts, retries and a rate limit; workloads, traffic routers, release
//! state and leases; watch caches that feed the engine's observations.
//!
//! Must not decide anything: what to do comes from `engine` as actions.

pub mod bootstrap;
pub mod cache;
pub mod client;
pub mod freezes;
pub mod lease;
pub mod observe;
pub mod replica_ratio;
pub mod router;
pub mod state;
pub mod workload;

use std::collections::BTreeMap;
use std::path::Path;

use kube::Client;

use crate::spec::Fleet;
pub use client::ClientLimits;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("{cluster}: {source}")]
    Api {
        cluster: String,
        #[source]
        source: kube::Error,
    },
    #[error("cluster {0:?} is not in the fleet")]
    UnknownCluster(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Refused(String),
    #[error(
        "release {release} is driven by {holder}; follow it with `cutover status {release} --watch`"
    )]
    LeaseHeld { release: String, holder: String },
    #[error("lost the lease of release {0}: another driver took over")]
    LeaseLost(String),
}

impl Error {
    /// Short category for metric labels and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kubeconfig(_) => "kubeconfig",
            Error::Api { .. } => "api",
            Error::UnknownCluster(_) => "unknown_cluster",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Refused(_) => "refused",
            Error::LeaseHeld { .. } => "lease_held",
            Error::LeaseLost(_) => "lease_lost",
        }
    }

    pub fn api(cluster: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
        move |source| match &source {
            kube::Error::Api(s) if s.code == 409 => {
                Error::Conflict(format!("{cluster}: {}", s.message))
            }
            _ => Error::Api {
                cluster: cluster.to_string(),
                source,
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A client for one cluster of the fleet.
#[derive(Clone)]
pub struct ClusterHandle {
    pub name: String,
    pub client: Client,
}

/// Clients for every cluster of the fleet.
#[derive(Clone)]
pub struct FleetClients {
    clusters: BTreeMap<String, ClusterHandle>,
    home: String,
}

impl FleetClients {
    /// Builds a client per cluster from the kubeconfig contexts the fleet file names.
    pub async fn connect(
        fleet: &Fleet,
        kubeconfig: Option<&Path>,
        namespace: &str,
        limits: ClientLimits,
    ) -> Result<Self> {
        let mut clusters = BTreeMap::new();
        for c in &fleet.clusters {
            let Some(context) = &c.context else {
                return Err(Error::Kubeconfig(format!(
                    "cluster {} has no kubeconfig `context` in the fleet file",
                    c.name
                )));
            };
            let client = client::connect(kubeconfig, context, namespace, limits).await?;
            clusters.insert(
                c.name.clone(),
                ClusterHandle {
                    name: c.name.clone(),
                    client,
                },
            );
        }
        Ok(FleetClients {
            clusters,
            home: fleet.home.clone(),
        })
    }

    pub fn get(&self, name: &str) -> Result<&ClusterHandle> {
        self.clusters
            .get(name)
            .ok_or_else(|| Error::UnknownCluster(name.to_string()))
    }

    pub fn home(&self) -> &ClusterHandle {
        &self.clusters[&self.home]
    }

    pub fn iter(&self) -> impl Iterator<Item = &ClusterHandle> {
        self.clusters.values()
    }
}
