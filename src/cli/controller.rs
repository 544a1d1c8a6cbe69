//! `cutover controller`: drive Release objects in-cluster (see `crate::controller`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::connect::{clock_of, read_fleet};
use super::exit::{CliResult, Exit};
use super::load;
use crate::controller::{self, Settings};
use crate::fleet::ClientLimits;
use crate::spec::Span;

#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// The fleet file.
    #[arg(long, value_name = "FLEET.yaml", env = "CUTOVER_FLEET")]
    pub fleet: PathBuf,
    /// Kubeconfig holding the fleet's contexts; in a Pod, the home cluster is
    /// reached through the service account when this is not set.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// A directory holding tiers.yaml and freezes.yaml; defaults to the built-in tiers.
    #[arg(long, value_name = "DIR", env = "CUTOVER_POLICIES")]
    pub policies: Option<PathBuf>,
    /// The controller's own namespace: its leader Lease and the fleet's kubeconfig Secrets.
    #[arg(
        short = 'n',
        long,
        env = "POD_NAMESPACE",
        default_value = "cutover-system"
    )]
    pub namespace: String,
    /// Drive Releases of this namespace only; all namespaces when unset.
    #[arg(long, value_name = "NS")]
    pub watch_namespace: Option<String>,
    /// This replica's name in Leases and Events; defaults to the Pod's name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a lease (the leader's, and each release's) lasts unrenewed.
    #[arg(long, default_value = "15s", value_parser = Span::parse)]
    pub lease_duration: Span,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Requests per second the controller may send to each cluster (watches
    /// have a budget of their own). Every release in flight makes a few
    /// requests per step: raise it with the number of releases driven at once.
    #[arg(long, default_value_t = ClientLimits::default().qps, value_parser = clap::value_parser!(u64).range(1..))]
    pub qps: u64,
    /// Requests to each cluster awaiting their answer at once (watches not
    /// counted). Over HTTP/1.1 each is a connection of its own, so this
    /// bounds the connections (and their memory) the controller keeps open.
    #[arg(long, default_value_t = ClientLimits::default().in_flight as u64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_in_flight: u64,
    /// Longest one request to a cluster may take before it is given up and
    /// retried (watches excepted), as kubectl's `--request-timeout`. A
    /// release waiting on a hung cluster waits without holding a worker.
    #[arg(
        long,
        default_value_t = Span::from_secs(ClientLimits::default().request_timeout.as_secs()),
        value_parser = Span::parse
    )]
    pub request_timeout: Span,
    /// Releases passing at once (observing, deciding, acting, writing their
    /// status); the others wait their turn holding only their Release,
    /// compressed. Bounds the controller's memory in a burst; raise it when
    /// `cutover_passes_waiting` stays high.
    #[arg(long, default_value_t = controller::WORKERS, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub workers: u64,
    /// Log lines as JSON objects (for log pipelines) or as text.
    #[arg(long, value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

pub async fn run(args: &ControllerArgs) -> CliResult {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUTOVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    let fleet = read_fleet(&args.fleet)?;
    let settings = Settings {
        clock: clock_of(&fleet),
        fleet,
        kubeconfig: args.kubeconfig.clone(),
        policy: load::tier_policy(args.policies.as_deref())?,
        windows: load::windows(args.policies.as_deref())?,
        watch_namespace: args.watch_namespace.clone(),
        namespace: args.namespace.clone(),
        identity: args
            .identity
            .clone()
            .unwrap_or_else(|| crate::driver::identity("controller")),
        lease_duration: args
            .lease_duration
            .as_duration()
            .max(Duration::from_secs(1)),
        listen: args.listen,
        workers: args.workers as usize,
        limits: ClientLimits {
            qps: args.qps,
            in_flight: args.max_in_flight as usize,
            request_timeout: args
                .request_timeout
                .as_duration()
                .max(Duration::from_secs(1)),
            ..ClientLimits::default()
        },
    };
    controller::run(settings).await?;
    Ok(Exit::Ok)
}
