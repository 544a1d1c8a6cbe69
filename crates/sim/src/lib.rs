//! The simulated fleet: in-process Kubernetes API servers on loopback, one
//! per cluster of a scenario, that the real `kube` client and `kubectl`
//! talk to. Behind each: a store with watch, patch and status semantics, a
//! deployment controller, a scheduler and kubelets on a scaled clock, nodes
//! that fail as the scenario says, a gateway splitting traffic by HTTPRoute
//! weights, and Prometheus metrics per app version.
//!
//! `SimFleet::start` boots it and writes kubeconfigs (one context
//! `sim-<cluster>` per cluster: the administrator's, cutover's identities as
//! `deploy/` defines them, and one per simulated person) and a fleet file for
//! cutover to use. Requests are authenticated by bearer token and authorized
//! by RBAC (`auth`). It must not be used for anything but rehearsal and
//! tests: the tokens are written in plain files and served over plain HTTP.

#![forbid(unsafe_code)]

pub mod admission;
pub mod api_error;
pub mod audit;
pub mod auth;
pub mod cel;
pub mod cluster;
pub mod controllers;
pub mod counters;
pub mod discovery;
pub mod faults;
pub mod flowcontrol;
pub mod gateway;
pub mod handlers;
pub mod kinds;
pub mod lists;
pub mod meta;
pub mod metrics;
pub mod patch;
pub mod protobuf;
pub mod request;
pub mod scenario;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod store;
pub mod table;
pub mod timeline;
pub mod tls;
pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::task::JoinHandle;

pub use counters::{RequestCount, RequestCounts, RequestKey};
pub use scenario::Scenario;

use cluster::{Shared, SimCluster};
use cutover_core::clock::{ScaledClock, SharedClock};
use cutover_core::spec::fleet::{Fleet, FleetClock, FleetCluster};
use faults::Behaviours;

/// How to run a simulated fleet.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub scenario: Scenario,
    /// Fleet time runs this many times faster than the wall clock.
    pub time_scale: f64,
    /// Where the kubeconfig and fleet file are written.
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on a loopback port: {0}")]
    Bind(std::io::Error),
    #[error("the time scale must be a number above 0, got {0}")]
    TimeScale(f64),
    #[error("cluster {cluster} failed to boot: {problem}")]
    Boot { cluster: String, problem: String },
    #[error("cannot write the fleet file: {0}")]
    Serialize(String),
}

impl SimError {
    /// A short category for logs and metric labels.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SimError::Write { .. } => "write",
            SimError::Bind(_) => "bind",
            SimError::TimeScale(_) => "time_scale",
            SimError::Boot { .. } => "boot",
            SimError::Serialize(_) => "serialize",
        }
    }
}

/// A running simulated fleet. Dropping it stops everything too; `shutdown` waits for it.
pub struct SimFleet {
    tls: Arc<tls::FleetTls>,
    clusters: Vec<Arc<SimCluster>>,
    clock: Arc<ScaledClock>,
    kubeconfig: PathBuf,
    fleet: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    behaviours: Arc<Behaviours>,
}

impl std::fmt::Debug for SimFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFleet")
            .field("clusters", &self.cluster_names())
            .field("kubeconfig", &self.kubeconfig)
            .finish()
    }
}

impl SimFleet {
    /// Boots every cluster of the scenario and writes the kubeconfig and fleet file.
    pub async fn start(opts: SimOptions) -> Result<SimFleet, SimError> {
        if !(opts.time_scale.is_finite() && opts.time_scale > 0.0) {
            return Err(SimError::TimeScale(opts.time_scale));
        }
        let origin = Timestamp::now();
        let start = opts.scenario.starts_at.unwrap_or(origin);
        let clock = Arc::new(ScaledClock::starting_at(origin, start, opts.time_scale));
        let shared_clock: SharedClock = clock.clone();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let behaviours = Arc::new(Behaviours::new(&opts.scenario.behaviour));
        let tls = Arc::new(tls::FleetTls::new().map_err(|problem| SimError::Boot {
            cluster: "(the fleet's certificates)".to_string(),
            problem,
        })?);
        let shared = Shared {
            tls: tls.clone(),
            scenario: &opts.scenario,
            clock: shared_clock,
            behaviours: behaviours.clone(),
            stop: stop_rx.clone(),
        };
        let mut tasks = Vec::new();
        let mut clusters = Vec::new();
        for (i, spec) in opts.scenario.clusters.iter().enumerate() {
            match SimCluster::start(i, spec, &shared, &mut tasks).await {
                Ok(c) => clusters.push(Arc::new(c)),
                Err(e) => {
                    let _ = stop.send(true);
                    tasks.iter().for_each(JoinHandle::abort);
                    return Err(e);
                }
            }
        }
        let mut fleet = SimFleet {
            tls,
            clusters,
            clock,
            kubeconfig: opts.dir.join("kubeconfig"),
            fleet: opts.dir.join("fleet.yaml"),
            stop,
            tasks,
            behaviours: behaviours.clone(),
        };
        fleet.write_files(&opts)?;
        let by_name: BTreeMap<String, Arc<SimCluster>> = fleet
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.clone()))
            .collect();
        let timeline = timeline::Timeline::new(&opts.scenario, start, by_name, behaviours);
        fleet
            .tasks
            .push(tokio::spawn(Arc::new(timeline).run(stop_rx)));
        tracing::info!(clusters = ?fleet.cluster_names(), kubeconfig = %fleet.kubeconfig.display(), "simulated fleet started");
        Ok(fleet)
    }

    fn write_files(&self, opts: &SimOptions) -> Result<(), SimError> {
        let write = |path: &Path, text: &str| {
            std::fs::create_dir_all(&opts.dir)
                .and_then(|_| std::fs::write(path, text))
                .map_err(|source| SimError::Write {
                    path: path.to_path_buf(),
                    source,
                })
        };
        let home = &opts.scenario.home;
        let admin = format!(
            "client-certificate-data: {}\n    client-key-data: {}",
            tls::base64(self.tls.admin.cert_pem.as_bytes()),
            tls::base64(self.tls.admin.key_pem.as_bytes())
        );
        write(
            &self.kubeconfig,
            &self.kubeconfig_text(home, |_| ("admin", admin.clone())),
        )?;
        let token = |t: &str| format!("token: {t}");
        write(
            &self.kubeconfig_as("cutover"),
            &self.kubeconfig_text(home, |c| ("cutover", token(&c.tokens.cutover))),
        )?;
        for person in auth::bootstrap::PEOPLE {
            write(
                &self.kubeconfig_as(person.key),
                &self.kubeconfig_text(home, |c| {
                    let token = c
                        .tokens
                        .people
                        .iter()
                        .find(|(k, _)| *k == person.key)
                        .map(|(_, t)| token(t))
                        .unwrap_or_default();
                    (person.key, token)
                }),
            )?;
        }
        let fleet = Fleet {
            api_version: cutover_core::spec::API_VERSION.to_string(),
            kind: "Fleet".to_string(),
            home: opts.scenario.home.clone(),
            clusters: opts
                .scenario
                .clusters
                .iter()
                .map(|c| FleetCluster {
                    name: c.name.clone(),
                    context: Some(context_name(&c.name)),
                    kubeconfig_secret: None,
                    region: c.region.clone(),
                    zones: c.zones.clone(),
                    physical_zones: BTreeMap::new(),
                    traffic_share: c.traffic_share,
                    prometheus: None,
                    metrics_url: self.url(&c.name).map(|u| format!("{u}/metrics")),
                })
                .collect(),
            clock: Some(FleetClock {
                origin: self.clock.origin(),
                time_scale: opts.time_scale,
                starts_at: (self.clock.start() != self.clock.origin()).then(|| self.clock.start()),
            }),
            notifications: Vec::new(),
        };
        let yaml =
            serde_saphyr::to_string(&fleet).map_err(|e| SimError::Serialize(e.to_string()))?;
        let header = "# The simulated fleet written by `cutover sim serve`; contexts are in the kubeconfig beside it.\n";
        write(&self.fleet, &format!("{header}{yaml}"))
    }

    /// A kubeconfig with one context per cluster (its API server over TLS,
    /// trusting the fleet's CA), each holding the credentials `who` picks
    /// for that cluster (kubeconfig `user` fields).
    fn kubeconfig_text(
        &self,
        home: &str,
        who: impl Fn(&SimCluster) -> (&'static str, String),
    ) -> String {
        let ca = tls::base64(self.tls.ca_pem.as_bytes());
        let mut clusters = String::new();
        let mut contexts = String::new();
        let mut users = String::new();
        for c in &self.clusters {
            let name = context_name(&c.name);
            let (role, credentials) = who(c);
            let user = format!("{role}@{}", c.name);
            clusters.push_str(&format!(
                "- name: {name}\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n",
                c.api_url()
            ));
            contexts.push_str(&format!("- name: {name}\n  context:\n    cluster: {name}\n    user: {user}\n    namespace: default\n"));
            users.push_str(&format!("- name: {user}\n  user:\n    {credentials}\n"));
        }
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n{clusters}contexts:\n{contexts}current-context: {}\nusers:\n{users}preferences: {{}}\n",
            context_name(home)
        )
    }

    /// The administrator's kubeconfig (`system:masters` in every cluster):
    /// for setting a rehearsal up and for reading it, as a cluster admin would.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kubeconfig of one identity, with the same contexts as the
    /// administrator's: `cutover` (the controller's ServiceAccount in the home
    /// cluster, the member ServiceAccount in the others, as `deploy/` sets
    /// them up) or a person of `auth::bootstrap::PEOPLE` by key.
    pub fn kubeconfig_as(&self, who: &str) -> PathBuf {
        let dir = self.kubeconfig.parent().unwrap_or(Path::new("."));
        dir.join(format!("kubeconfig-{who}"))
    }

    /// `https://127.0.0.1:<port>`: a cluster's API server as kubeconfigs name it.
    pub fn api_url(&self, cluster: &str) -> Option<String> {
        self.cluster(cluster).map(|c| c.api_url())
    }

    /// Every distinct authorization decision each cluster made, by cluster.
    pub fn authorizations(&self) -> Vec<(String, auth::Decided)> {
        self.clusters
            .iter()
            .flat_map(|c| {
                c.api
                    .auth
                    .decisions()
                    .into_iter()
                    .map(|d| (c.name.clone(), d))
            })
            .collect()
    }

    /// A cluster's administrator token, for plain HTTP requests.
    pub fn admin_token(&self, cluster: &str) -> Option<String> {
        self.cluster(cluster).map(|c| c.tokens.admin.clone())
    }

    pub fn fleet_path(&self) -> &Path {
        &self.fleet
    }

    pub fn clock(&self) -> SharedClock {
        self.clock.clone()
    }

    pub fn cluster_names(&self) -> Vec<String> {
        self.clusters.iter().map(|c| c.name.clone()).collect()
    }

    /// `http://127.0.0.1:<port>` of a cluster's API server (which also serves `/metrics`).
    pub fn url(&self, cluster: &str) -> Option<String> {
        self.cluster(cluster).map(|c| c.url())
    }

    /// A snapshot of the API requests every cluster has served.
    pub fn requests(&self) -> RequestCounts {
        let mut all = RequestCounts::default();
        for c in &self.clusters {
            all.extend(c.counter.snapshot());
        }
        all
    }

    pub fn reset_requests(&self) {
        self.clusters.iter().for_each(|c| c.counter.reset());
    }

    /// Starts recording, from every cluster's stream of changes, each moment
    /// requests found no Ready pod, each deletion, and each version's
    /// largest share of traffic (see `audit`). Call once, when the fleet serves.
    pub fn audit(&mut self) -> Arc<audit::Audit> {
        let record = Arc::new(audit::Audit::default());
        for c in &self.clusters {
            self.tasks.push(tokio::spawn(record.clone().follow(
                c.name.clone(),
                c.traffic.rps,
                c.store.clone(),
                self.stop.subscribe(),
            )));
        }
        record
    }

    /// Where `app`'s requests go in each cluster now: version → share (0..=1),
    /// over the requests that find a Ready pod and those that do not.
    pub fn shares(&self, app: &str) -> BTreeMap<String, BTreeMap<String, f64>> {
        let mut out = BTreeMap::new();
        for c in &self.clusters {
            let flows = gateway::flows(&c.store, c.traffic.rps);
            let flows: Vec<_> = flows
                .iter()
                .filter(|f| f.app == app && f.rps > 0.0)
                .collect();
            let total: f64 = flows.iter().map(|f| f.rps).sum();
            let mut by_version: BTreeMap<String, f64> = BTreeMap::new();
            for f in flows {
                *by_version.entry(f.version.clone()).or_default() += f.rps / total;
            }
            out.insert(c.name.clone(), by_version);
        }
        out
    }

    /// Requests per second of `app` that find no Ready pod, over every cluster.
    pub fn unserved_rps(&self, app: &str) -> f64 {
        self.clusters
            .iter()
            .flat_map(|c| gateway::flows(&c.store, c.traffic.rps))
            .filter(|f| f.app == app && !f.served)
            .map(|f| f.rps)
            .sum()
    }

    /// How app versions serve, for tests that change it as a scenario event would.
    pub fn behaviours(&self) -> &Behaviours {
        &self.behaviours
    }

    /// A cluster's internals, for tests that look behind the API.
    pub fn cluster(&self, name: &str) -> Option<&SimCluster> {
        self.clusters.iter().find(|c| c.name == name).map(|c| &**c)
    }

    /// Stops every server, controller and ticker and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), t)
                .await
                .is_err()
            {
                tracing::warn!("a simulated fleet task did not stop in time");
                abort.abort();
            }
        }
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// The kubeconfig context of a simulated cluster.
pub fn context_name(cluster: &str) -> String {
    format!("sim-{cluster}")
}
