//! Reaching the fleet from the command line: the fleet file, the kubeconfig,
//! the namespace, and the clock the fleet runs on.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

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

/// Clients for every cluster, and the fleet's clock.
pub struct Connected {
    pub fleet: Fleet,
    pub clients: FleetClients,
    pub clock: SharedClock,
}

pub fn read_fleet(path: &std::path::Path) -> CliResult<Fleet> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
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

/// Who is acting, for records on the Release.
pub fn user() -> String {
    std::env::var("CUTOVER_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into())
}
