//! `cutover sim serve`: runs a simulated fleet in the foreground until
//! Ctrl-C, writes its kubeconfig and fleet file, and says how to use them.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::{CliResult, Exit};
use crate::sim::{Scenario, SimFleet, SimOptions};

#[derive(clap::Args, Debug)]
pub struct SimArgs {
    #[command(subcommand)]
    pub command: SimCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SimCommand {
    /// Run a simulated fleet of Kubernetes API servers on loopback until Ctrl-C.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// A scenario file (see examples/scenarios); the default fleet, healthy, when unset.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// How many times faster than the wall clock fleet time runs.
    #[arg(long, value_name = "N", default_value_t = 60.0)]
    pub time_scale: f64,
    /// Where to write the kubeconfig and fleet.yaml; a new temporary directory when unset.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Also write the kubeconfig here.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// A directory whose `release.yaml` is made ready to run: its namespace,
    /// the serving (blue) version and its route in every cluster of the
    /// release. Default: the example release (examples/checkout).
    #[arg(long, value_name = "DIR", conflicts_with = "no_seed")]
    pub seed: Option<PathBuf>,
    /// Only the CRDs: no namespace, serving version or route.
    #[arg(long)]
    pub no_seed: bool,
}

pub fn run(args: &SimArgs) -> CliResult {
    match &args.command {
        SimCommand::Serve(serve) => run_serve(serve),
    }
}

fn run_serve(args: &ServeArgs) -> CliResult {
    let scenario = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Scenario::parse(&path.display().to_string(), &text)?
        }
        None => Scenario::default_fleet(),
    };
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            let d = std::env::temp_dir().join(format!("cutover-sim-{}", std::process::id()));
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            d
        }
    };
    // kube-apiserver serves each request on its own goroutine, preempted by
    // Go's scheduler: a long list or a large write does not hold up a Lease
    // renewal behind it. Tokio's workers are not preempted, so a fleet of
    // two cores gets several workers per core and the kernel time-slices
    // them: a short request finds a free worker while long ones run.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) * 4;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let fleet = SimFleet::start(SimOptions {
            scenario,
            time_scale: args.time_scale,
            dir,
        })
        .await?;
        if let Some(path) = &args.kubeconfig {
            std::fs::copy(fleet.kubeconfig_path(), path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let kubeconfig = args
            .kubeconfig
            .clone()
            .unwrap_or_else(|| fleet.kubeconfig_path().to_path_buf());
        let seeded = prepare(&fleet, args).await?;
        print_usage(&fleet, &kubeconfig, args.time_scale)?;
        if let Some(release) = seeded {
            let mut out = std::io::stdout().lock();
            writeln!(out)?;
            writeln!(
                out,
                "The CRDs are installed, and {release} is ready to run; what a pipeline runs next:"
            )?;
            writeln!(
                out,
                "  cutover run -f {} --fleet {} --kubeconfig {}",
                fleet.fleet_path().with_file_name("release.yaml").display(),
                fleet.fleet_path().display(),
                fleet.kubeconfig_as("pipeline").display()
            )?;
            out.flush()?;
        }
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        println!("stopping the simulated fleet");
        fleet.shutdown().await;
        Ok(Exit::Ok)
    })
}

/// Makes the fleet ready to use, as `kubectl apply -k deploy/` and a first
/// install would leave it: cutover's CRDs in every cluster and, unless
/// `--no-seed`, the seed release's namespace, serving (blue) version and route
/// in each of its clusters, with the release written beside the fleet file.
/// Returns what the release is, for the next command.
async fn prepare(fleet: &SimFleet, args: &ServeArgs) -> CliResult<Option<String>> {
    use crate::fleet::bootstrap;
    let fleet_file = super::connect::read_fleet(fleet.fleet_path())?;
    let text = match &args.seed {
        Some(dir) => super::load::read(&dir.join("release.yaml"))?,
        None => super::demo::example_release().to_string(),
    };
    let conn =
        super::connect::connect(fleet_file.clone(), Some(fleet.kubeconfig_path()), "default")
            .await?;
    for c in conn.clients.iter() {
        bootstrap::install_crds(c).await?;
    }
    if args.no_seed {
        return Ok(None);
    }
    let release_path = fleet.fleet_path().with_file_name("release.yaml");
    std::fs::write(&release_path, &text)
        .with_context(|| format!("cannot write {}", release_path.display()))?;
    let src = crate::spec::Source::new("release.yaml", &text);
    let doc: crate::spec::release::ReleaseDocument = src
        .decode()
        .map_err(|e| crate::spec::InputErrors(vec![e]))?;
    let policy = crate::spec::TierPolicyFile::builtin();
    let rel = crate::admission::admit(&crate::admission::Request::of(
        &doc,
        &fleet_file,
        &policy,
        None,
    ))
    .admitted(&doc.metadata.name)
    .map_err(|refused| anyhow::anyhow!(refused.message(Some(&src), "")))?;
    for c in &rel.clusters {
        bootstrap::install_serving(conn.clients.get(&c.name)?, &rel, super::demo::BLUE_VERSION)
            .await?;
    }
    Ok(Some(format!(
        "{} {} (serving {} in {})",
        rel.app,
        rel.version,
        super::demo::BLUE_VERSION,
        rel.cluster_names().join(", ")
    )))
}

fn print_usage(fleet: &SimFleet, kubeconfig: &std::path::Path, scale: f64) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Simulated fleet running (fleet time x{scale}); Ctrl-C stops it."
    )?;
    for name in fleet.cluster_names() {
        let api = fleet.api_url(&name).unwrap_or_default();
        let url = fleet.url(&name).unwrap_or_default();
        writeln!(
            out,
            "  {name:<10} context sim-{name:<10} {api}  (metrics: {url}/metrics)"
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Every request is authenticated and authorized by RBAC. This kubeconfig is the"
    )?;
    writeln!(
        out,
        "administrator's (system:masters); cutover's own identities and the people's are beside it:"
    )?;
    writeln!(
        out,
        "  {}  (the controller's ServiceAccount at home, cutover-member elsewhere)",
        fleet.kubeconfig_as("cutover").display()
    )?;
    for person in cutover_sim::auth::bootstrap::PEOPLE {
        writeln!(
            out,
            "  {}  ({}: {})",
            fleet.kubeconfig_as(person.key).display(),
            person.user,
            person
                .everywhere
                .iter()
                .chain(person.at_home)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    writeln!(out)?;
    writeln!(out, "  export KUBECONFIG={}", kubeconfig.display())?;
    writeln!(
        out,
        "  kubectl --context sim-prod-a get nodes -L topology.kubernetes.io/zone"
    )?;
    writeln!(
        out,
        "  cutover plan -f examples/checkout/release.yaml --fleet {}",
        fleet.fleet_path().display()
    )?;
    out.flush()
}
