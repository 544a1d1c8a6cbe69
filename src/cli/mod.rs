//! The command line: clap commands, output formats and exit codes. `anyhow`
//! lives here and in `main`; everything below returns typed errors.

mod check;
mod connect;
mod control;
mod controller;
#[cfg(feature = "rehearsal")]
pub mod demo;
#[cfg(not(feature = "rehearsal"))]
mod demo_absent;
pub mod exit;
mod freeze;
mod history;
pub mod load;
mod plan;
mod report;
mod run;
#[cfg(feature = "rehearsal")]
mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
#[cfg(not(feature = "rehearsal"))]
use demo_absent as demo;

pub use exit::{CliError, CliResult, Exit};

/// Multi-cluster blue-green rollouts for Kubernetes, gated on metrics, tier
/// policy and deploy freezes.
#[derive(Parser, Debug)]
#[command(name = "cutover", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the timeline a release will follow, step by step.
    Plan(plan::PlanArgs),
    /// Check a release against its tier's rules (and, with --live, the clusters).
    Check(check::CheckArgs),
    /// Create or resume a release and drive it through the fleet.
    Run(run::RunArgs),
    /// Show where a release stands.
    Status(control::StatusArgs),
    /// List the revisions a release has run: version, outcome, when, why.
    History(history::HistoryArgs),
    /// Release an earlier revision again, through the whole lifecycle and its gates.
    Undo(history::UndoArgs),
    /// Skip the rest of the current step's wait (its gates must still pass).
    Promote(control::NameArgs),
    /// Roll a release back: traffic to blue everywhere, then green down.
    Abort(control::AbortArgs),
    /// Stop a release advancing; traffic stays where it is.
    Pause(control::NameArgs),
    /// Let a paused release go on.
    Resume(control::NameArgs),
    /// Freeze deploys across the fleet (`freeze status` lists what is frozen).
    Freeze(freeze::FreezeArgs),
    /// Lift a freeze everywhere it can.
    Unfreeze(freeze::UnfreezeArgs),
    /// Rehearse the example release on a simulated fleet, start to finish.
    Demo(demo::DemoArgs),
    /// Drive Release objects in-cluster: leader election, /metrics, Events.
    Controller(controller::ControllerArgs),
    /// Print the CustomResourceDefinitions cutover uses (as in deploy/common/crds.yaml).
    Crd,
    /// Run a simulated fleet to rehearse on.
    #[cfg(feature = "rehearsal")]
    Sim(sim::SimArgs),
}

/// How a command reports.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Output {
    /// For people.
    #[default]
    Text,
    /// One JSON document (or JSON lines for streams).
    Json,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            return ExitCode::from(code.code());
        }
    };
    let output = cli.command.output();
    let result = match cli.command {
        Command::Plan(args) => plan::run(&args),
        Command::Crd => crd(),
        #[cfg(feature = "rehearsal")]
        Command::Sim(args) => sim::run(&args),
        other => run_async(other),
    };
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            e.report(output);
            ExitCode::from(e.exit.code())
        }
    }
}

impl Command {
    /// How the command was asked to report (its `-o`), errors included.
    fn output(&self) -> Output {
        match self {
            Command::Plan(a) => a.output,
            Command::Check(a) => a.output,
            Command::Run(a) => a.output,
            Command::Status(a) => a.output,
            Command::History(a) => a.output,
            Command::Undo(a) => a.output,
            #[cfg(feature = "rehearsal")]
            Command::Demo(a) => a.output,
            Command::Freeze(a) => match &a.status {
                Some(freeze::FreezeSub::Status(s)) => s.output,
                None => Output::Text,
            },
            _ => Output::Text,
        }
    }
}

fn run_async(command: Command) -> CliResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Check(args) => check::run(&args).await,
            Command::Run(args) => run::run(&args).await,
            Command::Status(args) => control::status(&args).await,
            Command::History(args) => history::history(&args).await,
            Command::Undo(args) => history::undo(&args).await,
            Command::Promote(args) => control::promote(&args).await,
            Command::Abort(args) => control::abort(&args).await,
            Command::Pause(args) => control::pause(&args, true).await,
            Command::Resume(args) => control::pause(&args, false).await,
            Command::Demo(args) => demo::run(&args).await,
            Command::Controller(args) => controller::run(&args).await,
            Command::Freeze(args) => freeze::freeze(&args).await,
            Command::Unfreeze(args) => freeze::unfreeze(&args).await,
            Command::Plan(_) | Command::Crd => unreachable!("handled without a runtime"),
            #[cfg(feature = "rehearsal")]
            Command::Sim(_) => unreachable!("handled without a runtime"),
        }
    })
}

fn crd() -> CliResult {
    print!("{}", crds_yaml()?);
    Ok(Exit::Ok)
}

/// Every CRD cutover owns, as one multi-document YAML (what `deploy/common/crds.yaml` holds).
pub fn crds_yaml() -> anyhow::Result<String> {
    let mut out = String::new();
    for crd in crate::fleet::bootstrap::crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}
