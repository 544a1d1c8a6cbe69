//! `cutover controller`: Release objects in the home cluster carried through
//! the fleet in-cluster, by the same driver as `cutover run`.
//!
//! Several replicas run; one leads. Leadership is a `coordination.k8s.io`
//! Lease taken and renewed through `fleet::lease` (the same code that keeps
//! one driver per release): the leader stops every driver a third of the
//! lease early when it cannot renew, before a standby may take over, and
//! each release's own Lease still keeps a CLI and the controller from
//! driving it at once. Credentials for the other clusters come from
//! kubeconfig Secrets the fleet file names; a change to one restarts the
//! drivers with new clients (every step is safe to repeat).

mod freezes;
pub mod metrics;
mod reconcile;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::driver::Driver;
use crate::fleet::lease::{self, LeaseGuard};
pub use crate::fleet::state::release_resource;
use crate::fleet::{self, ClientLimits, ClusterHandle, FleetClients};
use crate::spec::{Fleet, TierPolicyFile};
pub use metrics::Metrics;
pub use server::Health;

/// Name of the leader-election Lease (in the controller's namespace).
pub const LEADER_LEASE: &str = "cutover-controller";

/// Everything the controller is started with.
pub struct Settings {
    pub fleet: Fleet,
    pub kubeconfig: Option<PathBuf>,
    pub policy: TierPolicyFile,
    pub windows: Vec<crate::freeze::Window>,
    pub clock: SharedClock,
    /// Namespace whose Releases are driven; all namespaces when `None`.
    pub watch_namespace: Option<String>,
    /// The controller's own namespace: its leader Lease and credential Secrets.
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub listen: SocketAddr,
    pub limits: ClientLimits,
}

/// Runs the controller until the process ends.
pub async fn run(settings: Settings) -> std::io::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    {
        let m = metrics.clone();
        fleet::client::observe_requests(Arc::new(move |cluster, verb| {
            m.api_request(cluster, verb)
        }));
    }
    let bound = server::serve(settings.listen, metrics.clone(), health.clone()).await?;
    tracing::info!(listen = %bound, identity = %settings.identity, "serving /metrics, /healthz and /readyz");
    let mut backoff = Duration::from_secs(1);
    // SIGINT or SIGTERM (a rollout of the controller, a node drained): stop
    // every driver between passes and give the leader Lease back at once, so
    // a standby takes over without waiting out the lease.
    let mut shutdown = std::pin::pin!(crate::driver::stop_signal());
    loop {
        let connected = FleetClients::connect_with_secrets(
            &settings.fleet,
            settings.kubeconfig.as_deref(),
            &settings.namespace,
            settings.limits,
        )
        .await;
        let (clients, versions) = match connected {
            Ok(c) => c,
            Err(e) => {
                health.set_ready(false);
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot reach the fleet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_secs(1);
        health.set_ready(true);
        let credentials_changed =
            fleet::credentials_changed(clients.home(), &settings.namespace, versions);
        tokio::pin!(credentials_changed);
        let led = tokio::select! {
            led = lead(&settings, &clients.elections, &mut credentials_changed) => led,
            _ = &mut shutdown => {
                tracing::info!("shutting down: not leading");
                return Ok(());
            }
        };
        let Some(guard) = led else {
            tracing::info!("fleet credentials changed; reconnecting");
            continue;
        };
        metrics.leader.set(1);
        tracing::info!(identity = %settings.identity, "leading: driving releases");
        let notifier = crate::notify::Notifier::for_fleet(
            &settings.fleet,
            &clients,
            &settings.namespace,
            settings.clock.clone(),
            metrics.notifications.clone(),
        );
        let driver = Driver {
            fleet: clients.clone(),
            fleet_spec: settings.fleet.clone(),
            policy: settings.policy.clone(),
            clock: settings.clock.clone(),
            identity: settings.identity.clone(),
            lease_duration: settings.lease_duration,
            idle: Duration::from_secs(30),
            windows: settings.windows.clone(),
            under: Some(guard.as_parent()),
            notifier: notifier.clone(),
        };
        // Freezes set or lifted with kubectl are announced by the leader.
        let announcer = tokio::spawn(freezes::announce(
            clients.clone(),
            notifier,
            settings.clock.clone(),
        ));
        let recorder = fleet::state::event_recorder(clients.home(), &settings.identity);
        let reconciler = reconcile::Reconciler::new(driver, metrics.clone(), recorder);
        let work = reconciler.clone().run(settings.watch_namespace.as_deref());
        let mut stopping = false;
        tokio::select! {
            _ = work => tracing::warn!("the Release watch ended; starting over"),
            _ = lost(&guard) => tracing::warn!("lost leadership: every driver stopped"),
            _ = &mut credentials_changed => tracing::info!("fleet credentials changed; reconnecting"),
            _ = &mut shutdown => {
                tracing::info!("shutting down: stopping every driver and giving up the leader lease");
                stopping = true;
            }
        }
        announcer.abort();
        reconciler.stop_all();
        metrics.leader.set(0);
        guard.release().await;
        if stopping {
            return Ok(());
        }
    }
}

/// Waits to become the leader; `None` when credentials change first.
async fn lead(
    settings: &Settings,
    home: &ClusterHandle,
    credentials_changed: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Option<LeaseGuard> {
    let mut told = false;
    loop {
        match lease::acquire_named(
            home,
            &settings.namespace,
            LEADER_LEASE,
            "the controller",
            &settings.identity,
            settings.lease_duration,
        )
        .await
        {
            Ok(g) => return Some(g),
            Err(fleet::Error::LeaseHeld { holder, .. }) => {
                if !told {
                    tracing::info!(leader = %holder, "standing by");
                    told = true;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot take the leader lease"),
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.lease_duration / 4) => {}
            _ = &mut *credentials_changed => return None,
        }
    }
}

/// Resolves once the leader lease may have lapsed.
async fn lost(guard: &LeaseGuard) {
    while guard.is_valid() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
