//! Reaching the fleet from the command line: the fleet file, the kubeconfig,
//! the namespace, and the clock the fleet runs on.

use std::path::PathBuf;
use std::sync::Arc;

use super::exit::CliResult;
use crate::clock::{ScaledClock, SharedClock, SystemClock};
use crate::fleet::{ClientLimits, FleetClients};
use crate::spec::Fleet;

/// Where the fleet is and how to reach it.
#[derive(clap::Args, Debug, Clone)]
pub struct FleetArgs {
    /// The fleet file.
    #[arg(long, value_name = "FLEET.yaml", env = "CUTOVER_FLEET")]
    pub fleet: PathBuf,
    /// Kubeconfig holding the fleet's contexts; defaults to $KUBECONFIG or ~/.kube/config.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the Release in the home cluster.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

impl FleetArgs {
    /// Reads the fleet file and connects to every cluster of it.
    pub async fn connect(&self) -> CliResult<Connected> {
        let fleet = read_fleet(&self.fleet)?;
        connect(fleet, self.kubeconfig.as_deref(), &self.namespace).await
    }
}

/// Clients for every cluster, and the fleet's clock.
pub struct Connected {
    pub fleet: Fleet,
    pub clients: FleetClients,
    pub clock: SharedClock,
}

pub fn read_fleet(path: &std::path::Path) -> CliResult<Fleet> {
    let text = super::load::read(path)?;
    Ok(Fleet::parse(&path.display().to_string(), &text)?)
}

pub async fn connect(
    fleet: Fleet,
    kubeconfig: Option<&std::path::Path>,
    namespace: &str,
) -> CliResult<Connected> {
    let clients =
        FleetClients::connect(&fleet, kubeconfig, namespace, ClientLimits::default()).await?;
    let clock = clock_of(&fleet);
    Ok(Connected {
        fleet,
        clients,
        clock,
    })
}

/// The fleet's clock: scaled for a simulated fleet, the system clock otherwise.
pub fn clock_of(fleet: &Fleet) -> SharedClock {
    match &fleet.clock {
        Some(c) => Arc::new(ScaledClock::starting_at(
            c.origin,
            c.starts_at.unwrap_or(c.origin),
            c.time_scale,
        )),
        None => Arc::new(SystemClock),
    }
}

impl Connected {
    /// The fleet's notification receivers, Secrets read from
    /// `cutover-system` of the home cluster.
    pub fn notifier(&self) -> crate::notify::Notifier {
        crate::notify::Notifier::for_fleet(
            &self.fleet,
            &self.clients,
            crate::notify::CLI_SECRETS_NAMESPACE,
            self.clock.clone(),
            Default::default(),
        )
    }

    /// Who is acting, for records on the Release and freezes: the user the
    /// home cluster says the caller is (a SelfSubjectReview), else `user()`.
    pub async fn acting_user(&self) -> String {
        crate::fleet::freezes::caller(self.clients.home())
            .await
            .unwrap_or_else(user)
    }
}

/// Who is acting, when the cluster cannot say: `$CUTOVER_USER`, else `$USER`.
pub fn user() -> String {
    std::env::var("CUTOVER_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into())
}
