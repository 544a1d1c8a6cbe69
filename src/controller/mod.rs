//! `cutover controller`: Release objects in the home cluster carried through
//! the fleet in-cluster, by the same driver as `cutover run`.
//!
//! Several replicas run and share the releases (`shard`): each holds a
//! `coordination.k8s.io` Lease of its own, taken and renewed through
//! `fleet::lease` (the same code that keeps one driver per release), and the
//! Lease of every release it drives is held under it. A replica that cannot
//! renew stops every driver a third of the lease early, before another may
//! take its releases over; each release's Lease still keeps a CLI and the
//! controller from driving it at once. One replica, the leader of a Lease of
//! its own, also announces freezes set with kubectl. Credentials for the other clusters come from
//! kubeconfig Secrets the fleet file names; a change to one restarts the
//! drivers with new clients (every step is safe to repeat).

mod freezes;
pub mod metrics;
mod reconcile;
pub mod server;
mod shard;

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

/// Name of the Lease of the replica that announces freezes (in the controller's namespace).
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
    /// Releases passing at once (see [`crate::driver::Turns`]).
    pub workers: usize,
}

/// Releases passing at once by default.
pub const WORKERS: u64 = 16;

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
    // One set of turns for the process: drivers of a connection dropped
    // (credentials changed) give theirs back as they stop.
    let turns = crate::driver::Turns::counted(
        settings.workers,
        metrics.passes_waiting.clone(),
        metrics.passing.clone(),
    );
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
        let joined = tokio::select! {
            joined = join(&settings, &clients.elections) => joined,
            _ = &mut credentials_changed => {
                tracing::info!("fleet credentials changed; reconnecting");
                continue;
            }
            _ = &mut shutdown => {
                tracing::info!("shutting down: driving nothing");
                return Ok(());
            }
        };
        metrics.replica.set(1);
        tracing::info!(identity = %settings.identity, "driving this replica's share of the releases");
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
            under: Some(joined.as_parent()),
            notifier: notifier.clone(),
            turns: turns.clone(),
            parking: Default::default(),
        };
        // Freezes set or lifted with kubectl are announced by one replica: the leader.
        let (stop_leading, stopped) = tokio::sync::watch::channel(false);
        let mut leading = tokio::spawn(announce_while_leading(
            settings.leader_settings(),
            clients.clone(),
            notifier,
            metrics.clone(),
            stopped,
        ));
        let shard = shard::Shard::new(
            &settings.identity,
            &settings.namespace,
            clients.watches.leases(clients.home()),
            settings.lease_duration,
        );
        let recorder = fleet::state::EventRecorder::new(clients.home(), &settings.identity);
        let reconciler = reconcile::Reconciler::new(driver, metrics.clone(), recorder, shard);
        let work = reconciler.clone().run(settings.watch_namespace.as_deref());
        let mut stopping = false;
        tokio::select! {
            _ = work => tracing::warn!("the Release watch ended; starting over"),
            _ = lost(&joined) => {
                metrics.lease_losses.inc();
                tracing::warn!("{LEASE_LOST}: every driver stopped");
            }
            _ = &mut credentials_changed => tracing::info!("fleet credentials changed; reconnecting"),
            _ = &mut shutdown => {
                tracing::info!("shutting down: stopping every driver and giving up this replica's lease");
                stopping = true;
            }
        }
        // The leader Lease is given back too, so another replica announces at once.
        let _ = stop_leading.send(true);
        if tokio::time::timeout(Duration::from_secs(5), &mut leading)
            .await
            .is_err()
        {
            leading.abort();
        }
        reconciler.stop_all();
        metrics.replica.set(0);
        metrics.leader.set(0);
        // Handing the replica's Lease back frees every release held under
        // it at once: the other replicas take them at their next look.
        joined.release(&clients.elections).await;
        if stopping {
            return Ok(());
        }
    }
}

/// What the controller logs when its replica's Lease lapsed.
pub const LEASE_LOST: &str = "this replica lost its lease";

/// Takes this replica's own Lease, which the Leases of the releases it
/// drives are held under; retried until it is taken.
async fn join(settings: &Settings, home: &ClusterHandle) -> LeaseGuard {
    let held = format!(
        "this replica's lease is held: is another replica running as {}?",
        settings.identity
    );
    take_lease(
        home,
        &settings.namespace,
        &lease::replica_lease(&settings.identity),
        "this controller replica",
        &settings.identity,
        settings.lease_duration,
        &held,
    )
    .await
}

/// Takes the Lease `name` (guarding `what`) for `identity`, trying again
/// every quarter of a lease until it is taken; says once that another holds
/// it (`held`), and each time why it could not be asked.
async fn take_lease(
    home: &ClusterHandle,
    namespace: &str,
    name: &str,
    what: &str,
    identity: &str,
    duration: Duration,
    held: &str,
) -> LeaseGuard {
    let mut told = false;
    loop {
        match lease::acquire_named(home, namespace, name, what, identity, duration).await {
            Ok(g) => return g,
            Err(fleet::Error::LeaseHeld { holder, .. }) => {
                if !told {
                    tracing::info!(%holder, "{held}");
                    told = true;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot take the lease of {what}"),
        }
        tokio::time::sleep(duration / 4).await;
    }
}

/// What the leader election needs, apart from the fleet's clients.
#[derive(Clone)]
struct LeaderSettings {
    namespace: String,
    identity: String,
    lease_duration: Duration,
    clock: SharedClock,
}

impl Settings {
    fn leader_settings(&self) -> LeaderSettings {
        LeaderSettings {
            namespace: self.namespace.clone(),
            identity: self.identity.clone(),
            lease_duration: self.lease_duration,
            clock: self.clock.clone(),
        }
    }
}

/// One replica at a time, the leader, announces freezes set or lifted with
/// kubectl; the others stand by for the leader Lease. Until `stop`, when the
/// Lease is given back.
async fn announce_while_leading(
    settings: LeaderSettings,
    clients: FleetClients,
    notifier: crate::notify::Notifier,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let guard = tokio::select! {
            g = lead(&settings, &clients.elections) => g,
            _ = stop.wait_for(|s| *s) => return,
        };
        metrics.leader.set(1);
        tracing::info!(identity = %settings.identity, "leading: announcing freezes set with kubectl");
        // With no receivers there is nothing to announce: it still leads,
        // so no other replica takes the lease over and over.
        let announcer = async {
            freezes::announce(clients.clone(), notifier.clone(), settings.clock.clone()).await;
            std::future::pending::<()>().await
        };
        let stopping = tokio::select! {
            _ = announcer => false,
            _ = lost(&guard) => {
                tracing::warn!("lost the leader lease: no longer announcing freezes");
                false
            }
            _ = stop.wait_for(|s| *s) => true,
        };
        metrics.leader.set(0);
        guard.release(&clients.elections).await;
        if stopping {
            return;
        }
    }
}

/// Waits to become the leader.
async fn lead(settings: &LeaderSettings, home: &ClusterHandle) -> LeaseGuard {
    take_lease(
        home,
        &settings.namespace,
        LEADER_LEASE,
        "the controller",
        &settings.identity,
        settings.lease_duration,
        "standing by to announce freezes",
    )
    .await
}

/// Resolves once the leader lease may have lapsed.
async fn lost(guard: &LeaseGuard) {
    while guard.is_valid() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
