//! The only code that talks to clusters: one client per cluster with
//! timeouts, retries and a rate limit; workloads, traffic routers, release
//! state and leases; watch caches that feed the engine's observations.
//!
//! Must not decide anything: what to do comes from `engine` as actions.

pub mod bootstrap;
pub mod cache;
pub mod client;
pub mod freezes;
pub mod guard;
pub mod lease;
pub mod live;
pub mod observe;
pub mod replica_ratio;
pub mod router;
pub mod state;
pub mod watches;
pub mod workload;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::runtime::{WatchStreamExt, watcher};

use crate::spec::Fleet;
pub use client::ClientLimits;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// Said once, in words: the API server's message, reason and code (the
    /// kube error is kept for its kind, not printed as a chain).
    #[error("{cluster}: {}", in_words(source))]
    Api {
        cluster: String,
        #[source]
        source: ApiFailure,
    },
    #[error("cluster {0:?} is not in the fleet")]
    UnknownCluster(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Refused(String),
    /// The applier's own guard refused an action that would take capacity
    /// from a workload that serves: a defect, never carried out.
    #[error("refused as unsafe: {0}")]
    Unsafe(String),
    #[error(
        "release {release} is driven by {holder}; follow it with `cutover status {release} --watch`"
    )]
    LeaseHeld { release: String, holder: String },
    #[error(
        "lost the lease of release {0}: it could not be renewed in time (the home cluster did not answer), or another driver took it"
    )]
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
            Error::Unsafe(_) => "unsafe",
            Error::LeaseHeld { .. } => "lease_held",
            Error::LeaseLost(_) => "lease_lost",
        }
    }

    /// Whether the cluster's API server failed to serve (no connection, a
    /// timeout, 5xx or 429 after the client's retries), as opposed to refusing
    /// the request itself.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Api { source, .. } => match &source.0 {
                kube::Error::Api(s) => s.code >= 500 || s.code == 429,
                kube::Error::HyperError(_) | kube::Error::Service(_) => true,
                _ => false,
            },
            _ => false,
        }
    }

    pub fn api(cluster: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
        move |source| match &source {
            kube::Error::Api(s) if s.code == 409 => {
                Error::Conflict(format!("{cluster}: {}", s.message))
            }
            _ => Error::Api {
                cluster: cluster.to_string(),
                source: ApiFailure(source),
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A kube error that shows nothing of itself when printed as a cause: the
/// `Error::Api` message has already said it in words.
#[derive(Debug)]
pub struct ApiFailure(pub kube::Error);

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

impl std::ops::Deref for ApiFailure {
    type Target = kube::Error;
    fn deref(&self) -> &kube::Error {
        &self.0
    }
}

/// A kube error in words: the API server's message, its reason and code, or
/// why the server could not be reached; never a Debug dump.
pub fn in_words(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let reason = if s.reason.is_empty() {
                "no reason"
            } else {
                s.reason.as_str()
            };
            format!("{} ({reason}, HTTP {})", s.message, s.code)
        }
        kube::Error::HyperError(e) => format!("cannot reach the API server: {e}"),
        kube::Error::Service(e) => {
            let mut text = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            format!("cannot reach the API server: {text}")
        }
        other => other.to_string(),
    }
}

/// Whether the API server behind `client` answers (its version) within `within`.
pub async fn answers(client: &Client, within: std::time::Duration) -> bool {
    tokio::time::timeout(within, client.apiserver_version())
        .await
        .is_ok_and(|r| r.is_ok())
}

/// Clients for one cluster of the fleet.
#[derive(Clone)]
pub struct ClusterHandle {
    pub name: String,
    /// Every read and write a driver makes, within the cluster's request budget.
    pub client: Client,
    /// The shared watches' lists, watches and probes, on a budget of their
    /// own: a relist must never queue behind a thousand drivers' writes
    /// (behind them it comes back to a history that has moved on, 410, and
    /// lists again), and there are only a few watches per cluster.
    pub watches: Client,
}

impl ClusterHandle {
    /// Whether the cluster's API server answers (its version) within `within`.
    pub async fn answers(&self, within: std::time::Duration) -> bool {
        answers(&self.client, within).await
    }

    /// Both clients of a cluster from one config.
    pub fn build(name: &str, config: kube::Config, limits: ClientLimits) -> Result<ClusterHandle> {
        Ok(ClusterHandle {
            name: name.to_string(),
            client: client::build(name, config.clone(), limits)?,
            watches: client::build(
                name,
                config,
                ClientLimits {
                    qps: limits.qps.max(WATCH_QPS),
                    ..limits
                },
            )?,
        })
    }
}

/// Requests per second the watches of one cluster may make: a handful of
/// watches that relist rarely; the bound only stops a relist storm.
const WATCH_QPS: u64 = 200;

/// Clients for every cluster of the fleet, and the watches every driver
/// using them shares.
#[derive(Clone)]
pub struct FleetClients {
    clusters: BTreeMap<String, ClusterHandle>,
    home: String,
    /// For the controller's leader lease, a client of the home cluster of its
    /// own (its own rate limit): its renewals must never queue behind the
    /// requests of a thousand drivers. Elsewhere, holding no leader lease, the
    /// home cluster's client itself.
    pub elections: ClusterHandle,
    pub watches: Arc<cache::Watches>,
    /// Each cluster's `kube-system` UID once read (see `live::cluster_uids`):
    /// a cluster keeps its identity, so it is asked once, not by every
    /// driver, and a cluster that stops answering later is not asked at all.
    uids: Arc<std::sync::Mutex<BTreeMap<String, String>>>,
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
            let config = client::config(kubeconfig, context, namespace, limits).await?;
            clusters.insert(
                c.name.clone(),
                ClusterHandle::build(&c.name, config, limits)?,
            );
        }
        let elections = clusters
            .get(&fleet.home)
            .cloned()
            .ok_or_else(|| Error::UnknownCluster(fleet.home.clone()))?;
        Ok(FleetClients {
            clusters,
            home: fleet.home.clone(),
            elections,
            watches: Arc::default(),
            uids: Arc::default(),
        })
    }

    /// Clients for a controller: the home cluster through its context when a
    /// kubeconfig has it, else in-cluster (the Pod's service account); every
    /// other cluster through its context, or the kubeconfig held in the Secret
    /// the fleet file names (in `secrets_namespace` of the home cluster).
    /// Returns the clients and the resource version of each Secret read, so a
    /// change can be noticed. Secret contents never reach an error or a log.
    pub async fn connect_with_secrets(
        fleet: &Fleet,
        kubeconfig: Option<&Path>,
        secrets_namespace: &str,
        limits: ClientLimits,
    ) -> Result<(Self, BTreeMap<String, String>)> {
        let home_spec = fleet
            .cluster(&fleet.home)
            .ok_or_else(|| Error::UnknownCluster(fleet.home.clone()))?;
        let home_config = match &home_spec.context {
            Some(ctx) if kubeconfig.is_some() || std::env::var_os("KUBECONFIG").is_some() => {
                client::config(kubeconfig, ctx, "default", limits).await?
            }
            _ => {
                let mut config = kube::Config::infer().await.map_err(|e| {
                    Error::Kubeconfig(format!(
                        "home cluster {}: no kubeconfig context and no in-cluster service account: {e}",
                        fleet.home
                    ))
                })?;
                config.connect_timeout = Some(limits.connect_timeout);
                config
            }
        };
        let home_handle = ClusterHandle::build(&fleet.home, home_config.clone(), limits)?;
        let home = home_handle.client.clone();
        let elections = ClusterHandle::build(&fleet.home, home_config, limits)?;
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(home.clone(), secrets_namespace);
        let mut clusters = BTreeMap::new();
        let mut versions = BTreeMap::new();
        clusters.insert(fleet.home.clone(), home_handle);
        for c in fleet.clusters.iter().filter(|c| c.name != fleet.home) {
            let config = match (&c.kubeconfig_secret, &c.context) {
                (Some(r), _) => {
                    let where_ = format!(
                        "cluster {}: Secret {secrets_namespace}/{} key {:?}",
                        c.name, r.name, r.key
                    );
                    let secret = secrets
                        .get_opt(&r.name)
                        .await
                        .map_err(Error::api(&fleet.home))?
                        .ok_or_else(|| {
                            Error::Kubeconfig(format!(
                                "{where_} not found; create it with the cluster's kubeconfig"
                            ))
                        })?;
                    versions.insert(
                        r.name.clone(),
                        secret.metadata.resource_version.clone().unwrap_or_default(),
                    );
                    let bytes = secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(&r.key))
                        .map(|b| b.0.clone())
                        .ok_or_else(|| Error::Kubeconfig(format!("{where_} is missing")))?;
                    let text = String::from_utf8(bytes)
                        .map_err(|_| Error::Kubeconfig(format!("{where_} is not UTF-8 text")))?;
                    // The parser's message may quote the content: say only where.
                    let kc = kube::config::Kubeconfig::from_yaml(&text).map_err(|_| {
                        Error::Kubeconfig(format!("{where_} does not hold a valid kubeconfig"))
                    })?;
                    let mut config = kube::Config::from_custom_kubeconfig(
                        kc,
                        &kube::config::KubeConfigOptions::default(),
                    )
                    .await
                    .map_err(|_| {
                        Error::Kubeconfig(format!("{where_}: its current context cannot be used"))
                    })?;
                    config.connect_timeout = Some(limits.connect_timeout);
                    config
                }
                (None, Some(ctx)) => client::config(kubeconfig, ctx, "default", limits).await?,
                (None, None) => {
                    return Err(Error::Kubeconfig(format!(
                        "cluster {} has neither `context` nor `kubeconfigSecret`",
                        c.name
                    )));
                }
            };
            clusters.insert(
                c.name.clone(),
                ClusterHandle::build(&c.name, config, limits)?,
            );
        }
        Ok((
            FleetClients {
                clusters,
                home: fleet.home.clone(),
                elections,
                watches: Arc::default(),
                uids: Arc::default(),
            },
            versions,
        ))
    }

    pub fn get(&self, name: &str) -> Result<&ClusterHandle> {
        self.clusters
            .get(name)
            .ok_or_else(|| Error::UnknownCluster(name.to_string()))
    }

    pub fn home(&self) -> &ClusterHandle {
        &self.clusters[&self.home]
    }

    fn known_uids(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.uids.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn iter(&self) -> impl Iterator<Item = &ClusterHandle> {
        self.clusters.values()
    }
}

/// Resolves when one of the Secrets read changes or goes away. Watches each
/// by name only: the controller needs no right to list other Secrets.
pub async fn credentials_changed(
    home: &ClusterHandle,
    namespace: &str,
    versions: BTreeMap<String, String>,
) {
    if versions.is_empty() {
        return std::future::pending().await;
    }
    let api: kube::Api<Secret> = kube::Api::namespaced(home.client.clone(), namespace);
    let watches = versions.into_iter().map(|(name, version)| {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        watcher::watcher(api.clone(), config)
            .default_backoff()
            .filter_map(move |e| {
                let changed = match e {
                    Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                        s.metadata.resource_version.as_deref() != Some(version.as_str())
                    }
                    Ok(watcher::Event::Delete(_)) => true,
                    _ => false,
                };
                let name = name.clone();
                async move { changed.then_some(name) }
            })
            .boxed()
    });
    let mut all = futures::stream::select_all(watches);
    if let Some(name) = all.next().await {
        tracing::info!(secret = %name, "credentials Secret changed");
    }
}
